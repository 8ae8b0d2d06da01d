"""Training batches from token arrays (`.npy` from `bpe-lm encode`, usually opened as a memmap)."""

from __future__ import annotations

import mmap
import os

import numpy as np
import torch
from torch import Tensor

from bpe_lm.config import ModelConfig

# The token files' reader lives with the other file formats (torch-free, for `bpe-lm decode`); re-exported here.
from bpe_lm.formats import TOKEN_DTYPES, load_tokens  # noqa: F401


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


def _window_reader(dataset: np.ndarray):
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


def check_token_ids(tokens: np.ndarray, path: str | os.PathLike[str], vocab_size: int, chunk: int = 1 << 24) -> None:
    """Every id of the file in [0, vocab_size), checked in chunks before any compute (a few hundred MB/s,
    memory bounded by one chunk). The error names the file, the first bad id and its position."""
    read = _window_reader(tokens)
    signed = tokens.dtype.kind == "i"
    for start in range(0, len(tokens), chunk):
        part = np.asarray(read(start, min(chunk, len(tokens) - start)))
        if part.max() >= vocab_size or (signed and part.min() < 0):
            where = int(np.flatnonzero((part >= vocab_size) | (part < 0))[0])
            raise ValueError(
                f"{path}: token id {int(part[where])} at position {start + where:,} is outside the model's vocabulary "
                f"0..{vocab_size - 1} (model.vocab_size = {vocab_size}); was the file encoded with another tokenizer?"
            )


def get_batch(
    dataset: np.ndarray,
    batch_size: int,
    context_length: int,
    device: str | torch.device,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """`batch_size` windows at starts drawn uniformly from every valid start: x = tokens[s : s + T],
    y = tokens[s + 1 : s + T + 1], as int64 tensors of shape (batch_size, context_length) on `device`
    (pinned and copied without blocking on CUDA)."""
    n = len(dataset)
    if n <= context_length:
        raise ValueError(f"dataset has {n} tokens; a context of {context_length} needs at least {context_length + 1}")
    starts = torch.randint(0, n - context_length, (batch_size,), generator=generator).tolist()
    read = _window_reader(dataset)
    windows = np.empty((batch_size, context_length + 1), dtype=np.int64)
    for row, start in enumerate(starts):
        windows[row] = read(start, context_length + 1)
    tokens = torch.from_numpy(windows)
    device = torch.device(device)
    if device.type == "cuda":
        tokens = tokens.pin_memory().to(device, non_blocking=True)
    elif device.type != "cpu":
        tokens = tokens.to(device)
    return tokens[:, :-1], tokens[:, 1:]


def sequential_batches(
    dataset: np.ndarray,
    batch_size: int,
    context_length: int,
    device: str | torch.device,
    max_batches: int | None = None,
):
    """Non-overlapping windows from the start of `dataset`, for evaluation over a whole file."""
    read = _window_reader(dataset)
    n_windows = (len(dataset) - 1) // context_length
    if max_batches is not None:
        n_windows = min(n_windows, max_batches * batch_size)
    for first in range(0, n_windows, batch_size):
        rows = range(first, min(first + batch_size, n_windows))
        windows = np.stack([np.asarray(read(r * context_length, context_length + 1), dtype=np.int64) for r in rows])
        tokens = torch.from_numpy(windows).to(device)
        yield tokens[:, :-1], tokens[:, 1:]


def check_data(tokens: np.ndarray, path: str | os.PathLike[str], config: ModelConfig) -> None:
    """Before any compute: enough tokens for one context, and every id of the file in [0, vocab_size)."""
    if len(tokens) <= config.context_length + 1:
        raise ValueError(
            f"{path}: {len(tokens):,} tokens, fewer than model.context_length + 1 = {config.context_length + 1}"
        )
    check_token_ids(tokens, path, config.vocab_size)
