"""Training batches from token arrays (`.npy` from `bpe-lm encode`, usually opened as a memmap)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# The token files' reader and checks live with the other file formats (torch-free, so `bpe-lm decode` and the
# checks made before torch is imported use them); re-exported here.
from bpe_lm.formats import TOKEN_DTYPES, check_token_file, load_tokens, window_reader  # noqa: F401


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
    read = window_reader(dataset)
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
    read = window_reader(dataset)
    n_windows = (len(dataset) - 1) // context_length
    if max_batches is not None:
        n_windows = min(n_windows, max_batches * batch_size)
    for first in range(0, n_windows, batch_size):
        rows = range(first, min(first + batch_size, n_windows))
        windows = np.stack([np.asarray(read(r * context_length, context_length + 1), dtype=np.int64) for r in rows])
        tokens = torch.from_numpy(windows).to(device)
        yield tokens[:, :-1], tokens[:, 1:]
