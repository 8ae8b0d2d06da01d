"""The token files `bpe-lm encode` writes (`.npy` arrays of ids): opened with errors that name the file,
read in windows without growing the resident set, and checked against a vocabulary before any compute.
Torch-free; numpy is imported here, not by the tokenizer side (`formats`)."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from bpe_lm.formats import PathLike

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
