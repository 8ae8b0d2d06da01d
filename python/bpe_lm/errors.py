"""The exceptions bpe-lm raises about its inputs, files and settings, under one base class.

`BpeLmError` is the base of every error that is the user's to fix (a damaged file, a bad setting, text that
is not UTF-8); anything else that escapes bpe-lm is a bug. Each class also derives from the built-in
exception code written before it caught (`ValueError`, `OSError`, ...), so `except ValueError` keeps working.
The Rust core raises the classes below by name (rust/py.rs), one per variant of its error enum, with the
details as keyword arguments kept as attributes, so callers never parse messages.
"""

from __future__ import annotations


class BpeLmError(Exception):
    """Base of every error bpe-lm raises about its inputs, files or settings."""


class PatternError(BpeLmError, ValueError):
    """A pre-tokenization pattern that does not compile, fails to run, or leaves text uncovered."""


class VocabularyError(BpeLmError, ValueError):
    """A vocabulary and merges that do not make a tokenizer. `merge_rank` is the rank (0-based) of the
    merge at fault, or None when the vocabulary itself is."""

    def __init__(self, message: str, *, merge_rank: int | None = None) -> None:
        super().__init__(message)
        self.merge_rank = merge_rank


class InputError(BpeLmError, ValueError):
    """An input that cannot be read as a corpus (damaged, of a format bpe-lm does not read, lacking the text
    column): the message names the file (`path`, when known) and what is wrong."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class RecordError(BpeLmError, ValueError):
    """A record of a record corpus (a JSON line, an Arrow row) that cannot be read as a document.
    `path` and `position` ("line 7", "row 12") say where."""

    def __init__(self, message: str, *, path: str | None = None, position: str | None = None) -> None:
        super().__init__(message)
        self.path, self.position = path, position


class TextEncodingError(BpeLmError, ValueError):
    """Text that is not UTF-8: `offset` counts bytes of (decompressed) text from the start of `path`, or of
    the bytes given to an encode call (`item`: their index in a batch)."""

    def __init__(
        self, message: str, *, path: str | None = None, item: int | None = None, offset: int | None = None
    ) -> None:
        super().__init__(message)
        self.path, self.item, self.offset = path, item, offset


class UnknownTokenError(BpeLmError, ValueError):
    """A token id outside the vocabulary (`token_id`)."""

    def __init__(self, message: str, *, token_id: int | None = None) -> None:
        super().__init__(message)
        self.token_id = token_id


class ArgumentError(BpeLmError, ValueError):
    """An argument the core cannot use (a bad thread count, dtype, special token, ...)."""
