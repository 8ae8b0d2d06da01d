"""Byte-level BPE: training (`train_bpe`, from text or from count files of shards) and encoding and
decoding (`Tokenizer`).

The byte work runs in the Rust core (`bpe_lm._core`) with the GIL released; this module holds the policy:
argument checks and special-token rules. File formats are in `formats` (tokenizer directories) and
`interop` (HF tokenizers, tiktoken); progress bars in `progress`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpe_lm import _core
from bpe_lm._io import atomic_output
from bpe_lm.errors import ArgumentError, PatternError, UnknownTokenError, VocabularyError
from bpe_lm.formats import (
    CONFIG_FILE,
    MERGES_FILE,
    VOCAB_FILE,
    _read_gpt2_merges_with_lines,
    read_gpt2_vocab,
    read_tokenizer_config,
    save_tokenizer_dir,
)
from bpe_lm.ingest import count_units, encode_units, encode_units_each, whole_units
from bpe_lm.progress import progress_callback
from bpe_lm.readers import DEFAULT_TEXT_FIELD, END_OF_TEXT, Stats, Unit

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where arrays are made, not here: training a tokenizer never needs it, and its
# import alone costs ~15 MB of resident memory.

GPT2_PATTERN: str = _core.GPT2_PATTERN
# Spellings of the two id types of token files, by numpy's names for them (`Tokenizer._file_dtype`).
_FILE_DTYPE_NAMES = {
    "uint16": "uint16",
    "u2": "uint16",
    "<u2": "uint16",
    "uint32": "uint32",
    "u4": "uint32",
    "<u4": "uint32",
}
DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = (END_OF_TEXT,)

PathLike = str | os.PathLike[str]


THREADS_ENV = "BPE_LM_NUM_THREADS"


STRS_IN_PLACE_ENV = "BPE_LM_STRS_IN_PLACE"


def strs_in_place() -> bool | None:
    """Whether `encode`, `encode_ordinary` and `encode_to_numpy` read a large str (4,096 characters or more,
    not ASCII, not mostly of three-byte characters) in place, as CPython holds it, making its UTF-8 a part at
    a time instead of having CPython make (and keep) a UTF-8 copy of the whole: $BPE_LM_STRS_IN_PLACE 1 or
    0; unset (None), where the CPU makes UTF-8 of many characters at a time (AVX2 or AVX-512), which makes a
    first call on 20 MB of English or Russian 1.4-1.7x as fast and later calls on the same str about as
    fast."""
    env = os.environ.get(STRS_IN_PLACE_ENV)
    if not env:
        return None
    if env not in ("0", "1"):
        raise ValueError(f"${STRS_IN_PLACE_ENV}={env!r}: expected 1 (read large strs in place) or 0 (never)")
    return env == "1"


def default_num_threads(num_threads: int | None = None) -> int | None:
    """Threads for the core's parallel work when the caller does not say: $BPE_LM_NUM_THREADS if set; one in
    a worker process of a pool (multiprocessing, `datasets.map(num_proc=N)`'s multiprocess, a Ray task), so
    N workers do not run N x cores threads; else None, all cores."""
    if num_threads is not None:
        return num_threads
    env = os.environ.get(THREADS_ENV)
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ValueError(f"${THREADS_ENV}={env!r}: expected a positive integer") from None
        if value < 1:
            raise ValueError(f"${THREADS_ENV}={env!r}: expected a positive integer")
        return value
    for name in ("multiprocessing", "multiprocess"):
        mp = sys.modules.get(name)
        if mp is not None and getattr(mp, "parent_process", lambda: None)() is not None:
            return 1
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            if ray.get_runtime_context().worker.mode == ray.WORKER_MODE:
                return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))  # Ray sets it to the task's CPUs
        except Exception:  # an older Ray without these attributes: fall through to all cores
            pass
    return None


# ----------------------------------------------------------------------------------------------------
# Training


def _check_special_tokens(special_tokens: Iterable[str] | None) -> list[str]:
    if special_tokens is None:
        return []
    if isinstance(special_tokens, str):
        raise TypeError("special_tokens must be a list of strings, not a single string")
    out: list[str] = []
    for tok in special_tokens:
        if not isinstance(tok, str):
            raise TypeError(f"special token {tok!r} is not a string")
        if not tok:
            raise ValueError("special tokens must not be empty strings")
        if tok not in out:
            out.append(tok)
    return out


def check_vocab_size(vocab_size: int, num_special_tokens: int) -> None:
    """ValueError when the vocabulary cannot hold the 256 bytes and the special tokens (the core's rule)."""
    _core.check_vocab_size(vocab_size, num_special_tokens)


def count_pretokens(
    input_paths: Sequence[PathLike],
    output_path: PathLike,
    special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
    *,
    byte_ranges: Sequence[tuple[int, int] | None] | None = None,
    num_threads: int | None = None,
    progress: bool | Callable[[str, int, int], None] = False,
    errors: str = "strict",
    text_field: str = DEFAULT_TEXT_FIELD,
) -> int:
    """Counts the pre-tokens of corpus files (any format of `bpe_lm.readers`; or byte ranges of plain ones,
    see `bpe_lm.shards`) into a count file, written atomically; returns the number of distinct pre-tokens.
    `train_from_count_files` on the count files of all shards gives the merges of `train_bpe` on the whole."""
    from bpe_lm.readers import resolve, with_range

    specials = _check_special_tokens(special_tokens)
    _check_errors(errors)
    units = whole_units(resolve(_input_paths(input_paths)))
    if byte_ranges is not None:
        if len(byte_ranges) != len(units):
            raise ValueError("byte_ranges must have one entry per input")
        units = [u if r is None else with_range(u, r) for u, r in zip(units, byte_ranges)]
    counter = _core.PretokenCounter(specials, None)
    return write_counts(counter, units, output_path, progress=progress, num_threads=default_num_threads(num_threads), errors=errors,
                        text_field=text_field)  # fmt: skip


def write_counts(
    counter: _core.PretokenCounter,
    units: Sequence[Unit],
    output_path: PathLike,
    *,
    progress: bool | Callable[[str, int, int], None] = False,
    num_threads: int | None = None,
    errors: str = "strict",
    text_field: str = DEFAULT_TEXT_FIELD,
) -> int:
    """Counts `units` into `counter` and writes the counts to `output_path` atomically."""
    with progress_callback(progress) as callback:
        count_units(counter, units, text_field=text_field, num_threads=num_threads, errors=errors, progress=callback)
    with atomic_output(output_path) as tmp:
        return counter.write(os.fspath(tmp))


def train_from_count_files(
    count_paths: Sequence[PathLike], vocab_size: int, *, progress: bool | Callable[[str, int, int], None] = False
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]], list[str], str, int]:
    """Sums count files (made with the same special tokens and pattern) and trains on the sum, in the
    core. Returns (vocab, merges, special tokens, pattern, distinct pre-tokens)."""
    with progress_callback(progress) as callback:
        vocab_list, merge_ids, specials, pattern, distinct = _core.train_from_count_files(
            _input_paths(count_paths), vocab_size, callback
        )
    vocab, merges = _vocab_and_merges(vocab_list, merge_ids)
    return vocab, merges, specials, pattern, distinct


def _vocab_and_merges(
    vocab_list: list[bytes], merge_ids: list[tuple[int, int]]
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """The core's (bytes by id, merges as id pairs) as the public (id -> bytes, merges as byte pairs)."""
    return dict(enumerate(vocab_list)), [(vocab_list[a], vocab_list[b]) for a, b in merge_ids]


def _check_errors(errors: str) -> None:
    if errors not in ("strict", "replace"):
        raise ValueError(f"errors must be 'strict' or 'replace', not {errors!r}")


def _input_paths(input_path: PathLike | Sequence[PathLike]) -> list[str]:
    if isinstance(input_path, (str, os.PathLike)):
        return [os.fspath(input_path)]
    paths = [os.fspath(p) for p in input_path]
    if not paths:
        raise ValueError("no input files given")
    return paths


def train_bpe(
    input_path: PathLike | Sequence[PathLike],
    vocab_size: int,
    special_tokens: Sequence[str] = DEFAULT_SPECIAL_TOKENS,
    *,
    num_threads: int | None = None,
    progress: bool | Callable[[str, int, int], None] = False,
    pattern: str | None = None,
    errors: str = "strict",
    text_field: str = DEFAULT_TEXT_FIELD,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Trains a byte-level BPE tokenizer on corpus files with CS336 semantics: text (plain, gzip or zstd),
    JSON lines, parquet or Arrow (`bpe_lm.readers`; globs allowed), the order given.

    The vocabulary starts with the special tokens (ids 0..k-1, in the order given), then the 256 bytes;
    each merge appends a token, until `vocab_size` tokens or no pair is left. Text is split on the special
    tokens (longest match first; they never take part in merges), then pre-tokenized with the GPT-2 pattern
    (or `pattern`). Each step merges the most frequent pair; ties go to the lexicographically greater
    (left bytes, right bytes). Each record of a record format is a document of its own, all text (its
    special-token strings too): no pre-token crosses two records. The result does not depend on
    `num_threads` (default: all cores; one in a pool worker, see `default_num_threads`).
    Invalid UTF-8 is an error naming its byte offset, or with `errors="replace"` becomes U+FFFD.

    Returns (vocab: id -> bytes, merges in creation order).
    """
    from bpe_lm.readers import resolve

    specials = check_training_special_tokens(special_tokens)
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool):
        raise TypeError(f"vocab_size must be an int, not {type(vocab_size).__name__}")
    if num_threads is not None and num_threads < 1:
        raise ValueError(f"num_threads must be at least 1, not {num_threads}")
    _check_errors(errors)
    check_vocab_size(vocab_size, len(specials))
    units = whole_units(resolve(_input_paths(input_path)))
    counter = _core.PretokenCounter(specials, pattern)
    return train_on_units(counter, units, vocab_size, num_threads=default_num_threads(num_threads), progress=progress, errors=errors,
                          text_field=text_field)  # fmt: skip


def check_training_special_tokens(special_tokens: Iterable[str] | None) -> list[str]:
    specials = _check_special_tokens(special_tokens)
    for tok in specials:
        if len(tok.encode("utf-8")) == 1:
            raise ValueError(
                f"special token {tok!r} is a single byte, already one of the 256 byte tokens; a special token needs two or more bytes"
            )
    return specials


def train_on_units(
    counter: _core.PretokenCounter,
    units: Sequence[Unit],
    vocab_size: int,
    *,
    num_threads: int | None = None,
    progress: bool | Callable[[str, int, int], None] = False,
    errors: str = "strict",
    text_field: str = DEFAULT_TEXT_FIELD,
    stats: Stats | None = None,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Counts `units` into `counter` (what was read is added to `stats`), then trains on the counts (in
    the core)."""
    with progress_callback(progress) as callback:
        read = count_units(
            counter, units, text_field=text_field, num_threads=num_threads, errors=errors, progress=callback
        )
        if stats is not None:
            stats.add(read)
        vocab_list, merge_ids = counter.train(vocab_size, callback)
    return _vocab_and_merges(vocab_list, merge_ids)


# ----------------------------------------------------------------------------------------------------
# Tokenizer


class Tokenizer:
    """Encodes text to token ids and back, byte for byte as CS336 §2.6 defines (and as tiktoken does for
    the GPT-2 vocabulary).

    Special tokens given here are added to the vocabulary when absent and always encode to one id; where
    they overlap, the longest match wins.
    """

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] | None = None,
        *,
        pattern: str | None = None,
    ) -> None:
        ids = sorted(vocab)
        if ids != list(range(len(ids))):
            missing = next(i for i, v in enumerate(ids) if i != v) if ids and ids[-1] >= len(ids) else None
            raise VocabularyError(
                f"vocab ids must be 0..{len(ids) - 1} without gaps"
                + (f" (id {missing} is missing)" if missing is not None else "")
            )
        self.special_tokens: list[str] = _check_special_tokens(special_tokens)
        self.pattern: str = pattern or GPT2_PATTERN
        tokens = [bytes(vocab[i]) for i in ids]
        merge_list = [(bytes(a), bytes(b)) for a, b in merges]
        self._core = _core.Encoder(
            tokens, merge_list, self.special_tokens, None if self.pattern == GPT2_PATTERN else self.pattern
        )
        # Specials missing from `vocab` were appended by the core, in order: mirror that here.
        known = set(tokens)
        for tok in self.special_tokens:
            if tok.encode("utf-8") not in known:
                tokens.append(tok.encode("utf-8"))
                known.add(tokens[-1])
        assert len(tokens) == self._core.vocab_size
        self._core_vocab_size = len(vocab)  # the tokens given; specials appended after them are rebuilt
        self._tokens = tokens
        self._merges = merge_list
        self._ids: dict[bytes, int] | None = None

    # -- construction from files

    @classmethod
    def from_files(
        cls,
        vocab_filepath: PathLike,
        merges_filepath: PathLike,
        special_tokens: Sequence[str] | None = None,
        *,
        pattern: str | None = None,
    ) -> Tokenizer:
        """Loads GPT-2 format `vocab.json` and `merges.txt` (as `train-tokenizer` writes them)."""
        merges, lines = _read_gpt2_merges_with_lines(merges_filepath)
        try:
            return cls(read_gpt2_vocab(vocab_filepath), merges, special_tokens, pattern=pattern)
        except VocabularyError as e:
            # The core says which merge is at fault, if one is: name its file and line; else the vocabulary.
            rank = e.merge_rank
            where = (
                f"{os.fspath(merges_filepath)}: line {lines[rank]}"
                if rank is not None and rank < len(lines)
                else os.fspath(vocab_filepath)
            )
            raise VocabularyError(f"{where}: {e}", merge_rank=rank) from None
        except ArgumentError as e:
            raise ArgumentError(f"{os.fspath(vocab_filepath)} with {os.fspath(merges_filepath)}: {e}") from None

    @classmethod
    def load(cls, directory: PathLike) -> Tokenizer:
        """Loads a tokenizer directory written by `bpe-lm train-tokenizer` or `save`."""
        d = Path(directory)
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: tokenizer directory not found")
        for name in (VOCAB_FILE, MERGES_FILE):
            if not (d / name).is_file():
                raise FileNotFoundError(
                    f"{d}: no {name} (is this a tokenizer directory from `bpe-lm train-tokenizer`?)"
                )
        specials, pattern, recorded_size = read_tokenizer_config(d / CONFIG_FILE)
        try:
            tokenizer = cls.from_files(d / VOCAB_FILE, d / MERGES_FILE, specials, pattern=pattern)
        except PatternError as e:
            raise PatternError(f"{d / CONFIG_FILE}: {e}") from None
        if recorded_size is not None and recorded_size != tokenizer.vocab_size:
            # The three files were written together; a size that disagrees means one was replaced since.
            raise VocabularyError(
                f"{d / CONFIG_FILE}: says vocab_size {recorded_size:,}, but {VOCAB_FILE} with its special tokens "
                f"makes {tokenizer.vocab_size:,}: the files are not of one tokenizer"
            )
        return tokenizer

    @classmethod
    def from_hf(cls, path: PathLike) -> Tokenizer:
        """Loads an HF tokenizers `tokenizer.json` of byte-level BPE type (others are refused)."""
        from bpe_lm.interop import read_hf

        vocab, merges, specials, pattern = read_hf(path)
        return cls(vocab, merges, specials, pattern=pattern)

    @classmethod
    def from_tiktoken(
        cls, path: PathLike, special_tokens: dict[str, int] | None = None, *, pattern: str = GPT2_PATTERN
    ) -> Tokenizer:
        """Loads a tiktoken rank file (`base64(token) rank` lines), with special tokens at the given ids."""
        from bpe_lm.interop import read_tiktoken

        vocab, merges, specials, pattern = read_tiktoken(path, special_tokens, pattern=pattern)
        return cls(vocab, merges, specials, pattern=pattern)

    def save(self, directory: PathLike, *, force: bool = False) -> None:
        """Writes vocab.json, merges.txt and tokenizer_config.json, atomically."""
        save_tokenizer_dir(directory, self.vocab, self._merges, self.special_tokens, self.pattern, force=force)

    # -- vocabulary

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    @property
    def vocab(self) -> dict[int, bytes]:
        return dict(enumerate(self._tokens))

    @property
    def merges(self) -> list[tuple[bytes, bytes]]:
        return list(self._merges)

    def id_to_token(self, token_id: int) -> bytes:
        if not 0 <= token_id < len(self._tokens):
            raise self._unknown_id(token_id)
        return self._tokens[token_id]

    def token_to_id(self, token: bytes | str) -> int:
        if self._ids is None:
            ids: dict[bytes, int] = {}
            for i, t in enumerate(self._tokens):
                ids.setdefault(t, i)
            self._ids = ids
        key = token.encode("utf-8") if isinstance(token, str) else bytes(token)
        try:
            return self._ids[key]
        except KeyError:
            raise KeyError(f"{token!r} is not a token of this vocabulary") from None

    @property
    def fast_pretokenizer(self) -> bool:
        """Whether the pattern runs on the built-in GPT-2 scanner (the GPT-2 pattern, or one of its other
        spellings in use: GPT-2's encoder.py, HF ByteLevel, tiktoken's r50k_base); any other pattern runs on
        the general regex engine, which is slower."""
        return bool(self._core.gpt2_scanner)

    @property
    def special_token_ids(self) -> dict[str, int]:
        return dict(zip(self.special_tokens, self._core.special_ids))

    def default_dtype(self) -> np.dtype:
        """uint16 when every id fits, else uint32 (the rule is the core's)."""
        import numpy as np

        return np.dtype(f"<u{self._core.default_width()}")

    def _file_dtype(self, dtype: Any) -> tuple[str, int]:
        """(name, width in bytes) of the ids of a token file written with `dtype` (None: the narrowest that
        holds every id; `_resolve_dtype`'s rules). The usual names resolve without numpy, so writing token
        files does not import it; a numpy type, or another spelling, through numpy."""
        if dtype is None:
            width = self._core.default_width()
            return f"uint{8 * width}", width
        name = _FILE_DTYPE_NAMES.get(dtype) if isinstance(dtype, str) else None
        if name is None:
            dt = self._resolve_dtype(dtype)
            return str(dt), dt.itemsize
        width = int(name[4:]) // 8
        self._core.check_width(width)
        return name, width

    def _resolve_dtype(self, dtype: Any) -> np.dtype:
        import numpy as np

        dt = self.default_dtype() if dtype is None else np.dtype(dtype)
        if dt not in (np.dtype(np.uint16), np.dtype(np.uint32)):
            raise ValueError(f"dtype must be uint16 or uint32, not {dt}")
        self._core.check_width(dt.itemsize)
        return dt

    # -- encoding

    def encode(self, text: str | bytes) -> list[int]:
        """Encodes `text`, special-token strings as their ids. `text` may be UTF-8 bytes (a file read in
        binary mode, say: the same ids as its str, without decoding it to a str and back; bytes that are
        not UTF-8 raise `TextEncodingError` with the offset of the first bad byte)."""
        return self._core.encode(text, strs_in_place())

    def encode_ordinary(self, text: str | bytes) -> list[int]:
        """Encodes with special-token strings treated as plain text (`text` a str or UTF-8 bytes)."""
        return self._core.encode_ordinary(text, strs_in_place())

    def encode_batch(self, texts: Sequence[str | bytes], *, num_threads: int | None = None) -> list[list[int]]:
        """Encodes many texts in parallel (default: all cores); each a str or UTF-8 bytes, as for `encode`
        (bytes that are not UTF-8 raise `TextEncodingError` naming the text's index, `item`)."""
        return self._core.encode_batch(list(texts), default_num_threads(num_threads))

    def encode_to_numpy(self, text: str | bytes, dtype: Any = None, *, num_threads: int | None = None) -> np.ndarray:
        """Encodes straight into a numpy array (no Python list); large texts encode in parallel. `text` may
        be UTF-8 bytes, as for `encode`: the fast way to encode a file, `open(path, "rb").read()`."""
        import numpy as np

        dt = self._resolve_dtype(dtype)
        ids = self._core.encode_to_buffer(text, dt.itemsize, default_num_threads(num_threads), strs_in_place())
        return np.asarray(ids).astype(dt, copy=False)

    def encode_batch_to_numpy(
        self, texts: Sequence[str | bytes], dtype: Any = None, *, num_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encodes many texts in parallel into one flat array: `(ids, offsets)`, where text `i`'s ids are
        `ids[offsets[i]:offsets[i + 1]]` (`offsets` is uint64, `len(texts) + 1` long). No Python object per
        id or per text, so it is the fast way to tokenize a batch of documents for training. Texts may be
        str or UTF-8 bytes, as for `encode_batch`."""
        import numpy as np

        dt = self._resolve_dtype(dtype)
        ids, offsets = self._core.encode_batch_to_buffers(list(texts), dt.itemsize, default_num_threads(num_threads))
        return np.asarray(ids).astype(dt, copy=False), np.asarray(offsets).astype(np.uint64, copy=False)

    def encode_iterable(
        self, iterable: Iterable[str], *, flush_chars: int = 1 << 16, max_chars: int = 1 << 24
    ) -> Iterator[int]:
        """Lazily encodes a stream of strings (e.g. a file's lines) in bounded memory and linear time. The
        ids equal `encode` of the concatenation, even where a pre-token or special token spans two strings.

        Text is held until at least `flush_chars` characters are pending, then encoded up to the last point
        where cutting cannot change the ids. Where no such point exists (text without white space), more is
        read and the search repeats only when the pending text has doubled, so the work stays linear. The
        pending text never exceeds `max_chars` (16M characters by default): a stretch that long without any
        safe point is cut there, with a warning, and only ids around that cut can differ from `encode`."""
        pending: list[str] = []
        size = 0
        next_try = flush_chars  # pending size at which to look for a safe cut again
        for piece in iterable:
            if not isinstance(piece, str):
                kind = type(piece).__name__
                hint = (
                    ": open the file in text mode, e.g. open(path, encoding='utf-8')"
                    if isinstance(piece, (bytes, bytearray))
                    else ""
                )
                raise TypeError(f"encode_iterable needs str pieces, got {kind}{hint}")
            pending.append(piece)
            size += len(piece)
            if size < next_try:
                continue
            text = "".join(pending)
            cut = self._core.safe_prefix_bytes(text)
            if cut == 0 and len(text) < max_chars:
                pending, size = [text], len(text)
                next_try = min(2 * len(text), max_chars)
                continue
            if cut == 0:
                import warnings

                warnings.warn(
                    f"encode_iterable: no safe cut in {len(text):,} characters; cutting there, ids near the cut may differ from encode()",
                    stacklevel=2,
                )
                head, tail = text[:max_chars], text[max_chars:]
            else:
                raw = text.encode("utf-8")
                head, tail = raw[:cut].decode("utf-8"), raw[cut:].decode("utf-8")
            yield from self._core.encode(head)
            pending, size = [tail], len(tail)
            next_try = min(max(flush_chars, 2 * size), max_chars)
        if pending:
            yield from self._core.encode("".join(pending))

    def encode_file(
        self,
        input_path: PathLike,
        output_path: PathLike,
        *,
        dtype: Any = None,
        num_threads: int | None = None,
        errors: str = "strict",
        progress: bool | Callable[[str, int, int], None] = False,
        byte_range: tuple[int, int] | None = None,
        text_field: str = DEFAULT_TEXT_FIELD,
    ) -> int:
        """Streams one corpus file (text, JSON lines, parquet or Arrow: `bpe_lm.readers`) into a `.npy` array
        of ids, written to a temporary file and renamed, so a failed or interrupted run never leaves a
        partial output. Returns the token count. `byte_range` (start, end) encodes only that part of a plain
        text or JSON-lines file (see `bpe_lm.shards`)."""
        from bpe_lm.readers import detect, with_range

        unit = whole_units([detect(input_path)])[0]
        if byte_range is not None:
            unit = with_range(unit, byte_range)
        return self.encode_units([unit], output_path, dtype=dtype, num_threads=num_threads, errors=errors,
                                 progress=progress, text_field=text_field).tokens  # fmt: skip

    def encode_files(
        self,
        inputs: PathLike | Sequence[PathLike],
        output_path: PathLike,
        *,
        dtype: Any = None,
        num_threads: int | None = None,
        errors: str = "strict",
        progress: bool | Callable[[str, int, int], None] = False,
        text_field: str = DEFAULT_TEXT_FIELD,
    ) -> Stats:
        """Encodes corpus files (paths or globs, any format of `bpe_lm.readers`) into one `.npy` array, their
        ids concatenated in the order given; written atomically. Returns what was read and written."""
        from bpe_lm.readers import resolve

        units = whole_units(resolve(_input_paths(inputs)))
        return self.encode_units(units, output_path, dtype=dtype, num_threads=num_threads, errors=errors,
                                 progress=progress, text_field=text_field)  # fmt: skip

    def encode_units(
        self,
        units: Sequence[Unit],
        output_path: PathLike,
        *,
        dtype: Any = None,
        num_threads: int | None = None,
        errors: str = "strict",
        progress: bool | Callable[[str, int, int], None] = False,
        text_field: str = DEFAULT_TEXT_FIELD,
    ) -> Stats:
        _check_errors(errors)
        with progress_callback(progress, {"read": "encoding"}) as callback:
            return encode_units(self, units, output_path, dtype=dtype, text_field=text_field,
                                num_threads=default_num_threads(num_threads), errors=errors, progress=callback)  # fmt: skip

    def encode_units_each(
        self,
        units: Sequence[Unit],
        output_paths: Sequence[PathLike],
        *,
        dtype: Any = None,
        num_threads: int | None = None,
        errors: str = "strict",
        progress: bool | Callable[[str, int, int], None] = False,
        text_field: str = DEFAULT_TEXT_FIELD,
    ) -> list[Stats]:
        """Encodes each unit into its own `.npy` array (`output_paths[i]` for `units[i]`), as `encode_units`
        of that unit alone would, many small inputs side by side; all written atomically. Returns each
        unit's stats."""
        _check_errors(errors)
        with progress_callback(progress, {"read": "encoding"}) as callback:
            return encode_units_each(self, units, output_paths, dtype=dtype, text_field=text_field,
                                     num_threads=default_num_threads(num_threads), errors=errors,
                                     progress=callback)  # fmt: skip

    def count_file(
        self,
        input_path: PathLike,
        *,
        num_threads: int | None = None,
        text_field: str = DEFAULT_TEXT_FIELD,
        errors: str = "strict",
    ) -> Stats:
        """What `encode_file` would write for a corpus file: its tokens, documents and bytes of text
        (`errors` as for `encode_file`)."""
        import tempfile

        from bpe_lm.readers import resolve

        with tempfile.TemporaryDirectory(prefix="bpe-lm-count-") as tmp:
            units = whole_units(resolve(_input_paths(input_path)))
            return self.encode_units(units, Path(tmp) / "ids.npy", dtype="uint32", num_threads=num_threads,
                                     text_field=text_field, errors=errors)  # fmt: skip

    def fingerprint(self) -> str:
        """SHA-256 of what decides the ids (vocabulary, merges, special tokens, pattern): equal fingerprints,
        equal encodings. Recorded in manifests to tell whether an output is current."""
        import hashlib

        h = hashlib.sha256()
        for token in self._tokens:
            h.update(len(token).to_bytes(4, "little") + token)
        for a, b in self._merges:
            h.update(len(a).to_bytes(4, "little") + a + len(b).to_bytes(4, "little") + b)
        h.update(repr((self.special_tokens, self.pattern)).encode("utf-8"))
        return h.hexdigest()

    # -- pickling: by value (vocabulary, merges, special tokens, pattern); the core is rebuilt on load

    def __getstate__(self) -> dict[str, Any]:
        return {
            "vocab": self._tokens[: self._core_vocab_size],
            "merges": self._merges,
            "special_tokens": self.special_tokens,
            "pattern": self.pattern,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        rebuilt = Tokenizer(
            dict(enumerate(state["vocab"])), state["merges"], state["special_tokens"], pattern=state["pattern"]
        )
        self.__dict__.update(rebuilt.__dict__)

    # -- decoding

    def decode_bytes(self, ids: Iterable[int] | np.ndarray) -> bytes:
        np = sys.modules.get("numpy")  # without numpy loaded, ids cannot be an array
        if np is not None and isinstance(ids, np.ndarray):
            if ids.dtype.kind not in "iu":
                raise ValueError(f"token ids must be integers, not {ids.dtype}")
            flat = ids.reshape(-1)
            if flat.size and (flat.min() < 0 or flat.max() >= self.vocab_size):
                bad = int(flat[(flat < 0) | (flat >= self.vocab_size)][0])
                raise self._unknown_id(bad)
            return self._core.decode_buffer(flat.astype("<u4").tobytes(), 4)
        id_list = ids if isinstance(ids, list) else list(ids)
        try:
            return self._core.decode_bytes(id_list)
        except (OverflowError, TypeError):
            for i in id_list:
                if not hasattr(i, "__index__") or isinstance(i, bool):
                    raise TypeError(f"token ids must be integers, got {i!r}") from None
                if i < 0:
                    raise self._unknown_id(int(i)) from None
            raise
        except UnknownTokenError as e:
            raise self._unknown_id(e.token_id) from None

    def _unknown_id(self, token_id: int | None) -> UnknownTokenError:
        message = f"unknown token id {token_id} (vocabulary has {self.vocab_size} tokens)"
        return UnknownTokenError(message, token_id=token_id)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """Decodes ids to text; bytes that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self._merges)}, special_tokens={self.special_tokens!r})"
