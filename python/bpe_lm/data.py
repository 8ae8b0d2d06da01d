"""Training batches from token arrays (`.npy` from `bpe-lm encode`, usually opened as a memmap)."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

TOKEN_DTYPES = (np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.int32), np.dtype(np.int64))


def load_tokens(path: str | os.PathLike[str]) -> np.ndarray:
    """Opens a `.npy` token array as a read-only memmap, with errors that name the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: token file not found (make one with `bpe-lm encode`)")
    try:
        arr = np.load(p, mmap_mode="r")
    except ValueError as e:
        raise ValueError(f"{p}: not a .npy array ({e})") from None
    if arr.ndim != 1 or arr.dtype not in TOKEN_DTYPES:
        raise ValueError(f"{p}: expected a 1-D array of uint16/uint32 token ids, got shape {arr.shape} dtype {arr.dtype}")
    return arr


class _FileReader:
    """Reads windows of a file-backed memmap with `pread` instead of through the mapping: pages read
    through a mapping stay in the process's resident set, so random batches over a large file would make
    RSS climb for the whole run. Copies made by `pread` are freed with each batch."""

    def __init__(self, arr: np.memmap) -> None:
        base = np.frombuffer(arr._mmap, dtype=np.uint8).ctypes.data  # type: ignore[attr-defined]
        map_start = arr.offset - arr.offset % mmap.ALLOCATIONGRANULARITY
        self.data_offset = arr.ctypes.data - base + map_start
        self.dtype = arr.dtype
        self.path = arr.filename
        self.fd = os.open(arr.filename, os.O_RDONLY)
        self.pid = os.getpid()

    def read(self, start: int, count: int) -> np.ndarray:
        size = count * self.dtype.itemsize
        data = os.pread(self.fd, size, self.data_offset + start * self.dtype.itemsize)
        if len(data) != size:
            raise OSError(f"{self.path}: file shorter than its header says")
        return np.frombuffer(data, dtype=self.dtype)

    def __del__(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


_readers: dict[int, _FileReader] = {}


def _window_reader(dataset: np.ndarray):
    """A function (start, count) -> array for `dataset`, via pread when it is a file-backed memmap."""
    if isinstance(dataset, np.memmap) and getattr(dataset, "_mmap", None) is not None and dataset.filename and dataset.flags.c_contiguous:
        key = id(dataset)
        reader = _readers.get(key)
        if reader is None or reader.pid != os.getpid() or reader.path != dataset.filename:
            if len(_readers) >= 8:
                _readers.clear()  # a few memmaps (train, valid) is the common case; never let this grow
            reader = _readers[key] = _FileReader(dataset)
        return reader.read
    return lambda start, count: dataset[start : start + count]


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


def sequential_batches(dataset: np.ndarray, batch_size: int, context_length: int, device: str | torch.device, max_batches: int | None = None):
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
