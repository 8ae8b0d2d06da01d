"""The files of a tokenizer directory, as `bpe-lm train-tokenizer` and `Tokenizer.save` write it:
``vocab.json`` and ``merges.txt`` in the GPT-2 format (tokens as byte-to-unicode mapped strings) and
``tokenizer_config.json`` with the special tokens and the pre-tokenization pattern; and the token files
(`.npy` arrays of ids) that `bpe-lm encode` writes. Errors name the file (and the line, for merges.txt)."""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bpe_lm._core import GPT2_PATTERN
from bpe_lm._io import atomic_directory

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
CONFIG_FILE = "tokenizer_config.json"
CONFIG_FORMAT = "bpe-lm/byte-level-bpe"
MERGES_HEADER = "#version: 0.2"

PathLike = str | os.PathLike[str]


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable characters (so files hold no raw bytes)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_text(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


@lru_cache(maxsize=1)
def _translation() -> dict[int, int]:
    """`str.translate`'s table from GPT-2's byte characters to the latin-1 characters of their bytes; every
    other latin-1 character goes to U+FFFF, which latin-1 cannot encode (so no character passes unchecked)."""
    table = {ord(c): b for c, b in unicode_to_bytes().items()}
    return {**{x: 0xFFFF for x in range(256)}, **table}


def text_to_token(text: str, *, where: str = "") -> bytes:
    try:
        return _token_of(text)
    except UnicodeEncodeError:
        table = unicode_to_bytes()
        bad = next(c for c in text if c not in table)
        raise ValueError(f"{where}{text!r} holds {bad!r}, which is not a GPT-2 byte character") from None


def _token_of(text: str) -> bytes:
    """`text_to_token` in C, not a Python loop a character (loading GPT-2's 50K tokens and merges took 0.2 s
    that way); UnicodeEncodeError for a character that is not a GPT-2 byte character."""
    return text.translate(_translation()).encode("latin-1")


def write_gpt2_files(
    vocab: dict[int, bytes], merges: Sequence[tuple[bytes, bytes]], vocab_path: PathLike, merges_path: PathLike
) -> None:
    """Writes `vocab.json` ({mapped token: id}) and `merges.txt` (a header line, then `left right`)."""
    mapped: dict[str, int] = {}
    for i in sorted(vocab):
        key = token_to_text(vocab[i])
        if key in mapped:
            raise ValueError(
                f"tokens {mapped[key]} and {i} have the same bytes {vocab[i]!r}; the GPT-2 vocab.json format cannot hold both"
            )
        mapped[key] = i
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(mapped, f, ensure_ascii=False, indent=0)
        f.write("\n")
    with open(merges_path, "w", encoding="utf-8") as f:
        f.write(MERGES_HEADER + "\n")
        for left, right in merges:
            f.write(f"{token_to_text(left)} {token_to_text(right)}\n")


def read_json_object(path: PathLike) -> dict[str, Any]:
    """A JSON file holding an object; errors name the file (and the line)."""
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not UTF-8 (byte offset {e.start})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object")
    return data


def read_gpt2_vocab(vocab_path: PathLike) -> dict[int, bytes]:
    path = os.fspath(vocab_path)
    raw = read_json_object(path)
    vocab: dict[int, bytes] = {}
    for text, idx in raw.items():
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
            raise ValueError(f"{path}: token {text!r} has id {idx!r}, expected a non-negative integer")
        if idx in vocab:
            raise ValueError(f"{path}: id {idx} is used twice")
        vocab[idx] = text_to_token(text, where=f"{path}: token ")
    return vocab


def read_gpt2_merges(merges_path: PathLike) -> list[tuple[bytes, bytes]]:
    return _read_gpt2_merges_with_lines(merges_path)[0]


def _read_gpt2_merges_with_lines(merges_path: PathLike) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """The merges and the line number of each, for messages about a merge."""
    path = os.fspath(merges_path)
    merges: list[tuple[bytes, bytes]] = []
    lines: list[int] = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line or (lineno == 1 and line.startswith("#version")):
                    continue
                parts = line.split(" ")
                if len(parts) != 2 or not parts[0] or not parts[1]:
                    raise ValueError(f"{path}: line {lineno}: expected two tokens separated by one space, got {line!r}")
                try:
                    merges.append((_token_of(parts[0]), _token_of(parts[1])))
                except UnicodeEncodeError:  # worded by the checked path, with the line
                    where = f"{path}: line {lineno}: token "
                    merges.append((text_to_token(parts[0], where=where), text_to_token(parts[1], where=where)))
                lines.append(lineno)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 (byte offset {e.start})") from None
    return merges, lines


def save_tokenizer_dir(
    out_dir: PathLike,
    vocab: dict[int, bytes],
    merges: Sequence[tuple[bytes, bytes]],
    special_tokens: Sequence[str],
    pattern: str = GPT2_PATTERN,
    *,
    force: bool = False,
    extra: dict[str, Any] | None = None,
) -> None:
    """Writes a tokenizer directory atomically; with `force`, an existing directory keeps its other files
    and gets these three replaced."""

    def build(tmp: Path) -> list[str]:
        write_gpt2_files(vocab, merges, tmp / VOCAB_FILE, tmp / MERGES_FILE)
        config = {
            "format": CONFIG_FORMAT,
            "version": 1,
            "vocab_size": len(vocab),
            "num_merges": len(merges),
            "special_tokens": list(special_tokens),
            "pattern": pattern,
            **(extra or {}),
        }
        with open(tmp / CONFIG_FILE, "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=2)
            f.write("\n")
        return [VOCAB_FILE, MERGES_FILE, CONFIG_FILE]

    atomic_directory(out_dir, build, force=force)


def read_tokenizer_config(config_path: Path) -> tuple[list[str], str | None, int | None]:
    """The special tokens, pattern and recorded vocabulary size (None when absent) of a
    tokenizer_config.json, checked; its absence is an error, since without it "<|endoftext|>" in text would
    silently encode as plain bytes."""
    if not config_path.is_file():
        # Without it the special tokens are unknown, and "<|endoftext|>" would encode as plain bytes.
        raise FileNotFoundError(
            f"{config_path}: not found; it lists the special tokens (for a tokenizer without any, write "
            '{"special_tokens": []} to it)'
        )
    config = read_json_object(config_path)
    specials = config.get("special_tokens", [])
    if not isinstance(specials, list) or not all(isinstance(t, str) and t for t in specials):
        raise ValueError(
            f"{config_path}: special_tokens must be a list of non-empty strings, not {json.dumps(specials)[:100]}"
        )
    pattern = config.get("pattern")
    if pattern is not None and (not isinstance(pattern, str) or not pattern):
        raise ValueError(f"{config_path}: pattern must be a non-empty string (a regular expression)")
    vocab_size = config.get("vocab_size")
    if vocab_size is not None and (not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1):
        raise ValueError(f"{config_path}: vocab_size must be a positive integer, not {json.dumps(vocab_size)[:40]}")
    return specials, pattern, vocab_size


TOKEN_DTYPES = (np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.int32), np.dtype(np.int64))


def load_tokens(path: PathLike) -> np.ndarray:
    """Opens a `.npy` token array as a read-only memmap, with errors that name the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: token file not found (make one with `bpe-lm encode`)")
    try:
        arr = np.load(p, mmap_mode="r")
    except OSError as e:
        if str(p) in str(e):
            raise
        raise OSError(f"{p}: cannot read ({e})") from None
    except Exception as e:  # a damaged header fails inside numpy's parser with one of many types
        raise ValueError(f"{p}: not a .npy array ({type(e).__name__}: {e})") from None
    if arr.ndim != 1 or arr.dtype not in TOKEN_DTYPES:
        raise ValueError(
            f"{p}: expected a 1-D array of uint16/uint32 token ids, got shape {arr.shape} dtype {arr.dtype}"
        )
    return arr


class _FileReader:
    """Reads windows of a file with `pread` instead of through a memory mapping: pages read through a
    mapping stay in the process's resident set, so random batches over a large file would make RSS climb
    for the whole run. Copies made by `pread` are freed with each batch. One open file per path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY)
        self.pid = os.getpid()

    def read(self, offset: int, dtype: np.dtype, start: int, count: int) -> np.ndarray:
        size = count * dtype.itemsize
        data = os.pread(self.fd, size, offset + start * dtype.itemsize)
        if len(data) != size:
            raise OSError(f"{self.path}: file shorter than its header says")
        return np.frombuffer(data, dtype=dtype)

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


_readers: dict[str, _FileReader] = {}


def _file_offset(arr: np.memmap) -> int:
    """Where `arr`'s first element lies in its file. (`arr.offset` is not it for a slice of a memmap:
    numpy copies the parent's offset attribute to the slice.)"""
    base = np.frombuffer(arr._mmap, dtype=np.uint8).ctypes.data  # type: ignore[attr-defined]
    map_start = arr.offset - arr.offset % mmap.ALLOCATIONGRANULARITY
    return arr.ctypes.data - base + map_start


def window_reader(dataset: np.ndarray):
    """A function (start, count) -> array for `dataset`, via pread when it is a file-backed memmap. The
    file is found from the array itself on every call, so a reader can never serve another array's data
    (an earlier cache keyed on id(dataset) did, once a freed memmap's id was reused)."""
    if (
        isinstance(dataset, np.memmap)
        and getattr(dataset, "_mmap", None) is not None
        and dataset.filename
        and dataset.flags.c_contiguous
    ):
        path = os.fspath(dataset.filename)
        reader = _readers.get(path)
        if reader is None or reader.pid != os.getpid():
            if len(_readers) >= 8:
                _readers.clear()  # a few files (train, valid) is the common case; never let this grow
            reader = _readers[path] = _FileReader(path)
        offset, dtype = _file_offset(dataset), dataset.dtype
        return lambda start, count: reader.read(offset, dtype, start, count)
    return lambda start, count: dataset[start : start + count]


# Token files already checked in this process, with the vocabulary they were checked against: a file is
# checked once before torch is imported and not again by the trainer. Keyed on the file's identity and
# modification time, so a file rewritten since is checked again.
_checked_files: set[tuple] = set()


def _checked_key(tokens: np.ndarray, vocab_size: int) -> tuple | None:
    if not isinstance(tokens, np.memmap) or not tokens.filename:
        return None
    st = os.stat(tokens.filename)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, tokens.offset, len(tokens), tokens.dtype.str, vocab_size)


def check_token_file(
    tokens: np.ndarray,
    path: PathLike,
    vocab_size: int,
    context_length: int | None = None,
    chunk: int = 1 << 24,
    *,
    vocabulary: str | None = None,
) -> None:
    """Before any compute: enough tokens for one context (when `context_length` is given) and every id of
    the file in [0, vocab_size), read in chunks (a few hundred MB/s, memory bounded by one chunk). The error
    names the file, the first bad id and its position, and `vocabulary` (default: the model's)."""
    vocabulary = vocabulary or f"the model's vocabulary 0..{vocab_size - 1} (model.vocab_size = {vocab_size})"
    if context_length is not None and len(tokens) <= context_length + 1:
        raise ValueError(f"{path}: {len(tokens):,} tokens, fewer than model.context_length + 1 = {context_length + 1}")
    key = _checked_key(tokens, vocab_size)
    if key is not None and key in _checked_files:
        return
    read = window_reader(tokens)
    signed = tokens.dtype.kind == "i"
    for start in range(0, len(tokens), chunk):
        part = np.asarray(read(start, min(chunk, len(tokens) - start)))
        if part.max() >= vocab_size or (signed and part.min() < 0):
            where = int(np.flatnonzero((part >= vocab_size) | (part < 0))[0])
            raise ValueError(
                f"{path}: token id {int(part[where])} at position {start + where:,} is outside {vocabulary}; "
                "was the file encoded with another tokenizer?"
            )
    if key is not None:
        _checked_files.add(key)
