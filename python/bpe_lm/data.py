"""Training batches from token arrays (`.npy` from `bpe-lm encode`, usually opened as a memmap)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

# The token files' reader and checks live with the other file formats (torch-free, so `bpe-lm decode` and the
# checks made before torch is imported use them); re-exported here.
from bpe_lm.token_files import TOKEN_DTYPES, check_token_file, load_tokens, window_reader  # noqa: F401


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
    return _to_batch([read(start, context_length + 1) for start in starts], context_length, device)


def _to_batch(windows: list[np.ndarray], context_length: int, device: str | torch.device) -> tuple[Tensor, Tensor]:
    rows = np.empty((len(windows), context_length + 1), dtype=np.int64)
    for row, window in enumerate(windows):
        rows[row] = window
    tokens = torch.from_numpy(rows)
    device = torch.device(device)
    if device.type == "cuda":
        tokens = tokens.pin_memory().to(device, non_blocking=True)
    elif device.type != "cpu":
        tokens = tokens.to(device)
    return tokens[:, :-1], tokens[:, 1:]


class WindowSampler:
    """Windows of `context_length + 1` tokens drawn from the token files of one or more sources (a list of
    lists of arrays, one list per source), never across two files. Without `weights`, every valid window
    of every file is equally likely (each file in proportion to its tokens); with them, a row first picks
    its source by weight, then a window uniformly within that source. One file without weights draws
    exactly as `get_batch` does, from the same generator state. With `starts` (one array per file, in the
    order of the files: its document starts), windows start only there, each start equally likely."""

    def __init__(
        self,
        sources: list[list[np.ndarray]],
        context_length: int,
        weights: list[float] | None = None,
        starts: list[np.ndarray] | None = None,
    ):
        self.files = [f for files in sources for f in files]
        self.context_length = context_length
        # Where windows may start: every position with a whole window after it, or those of `starts`.
        self.starts = None if starts is None else [s[s < len(f) - context_length] for s, f in zip(starts, self.files)]
        counts = [len(f) - context_length for f in self.files] if self.starts is None else [len(s) for s in self.starts]
        if not self.files or min(counts) < 1:
            raise ValueError(f"every token file needs at least {context_length + 1} tokens")
        self.ends = torch.tensor(counts, dtype=torch.int64).cumsum(0)  # global window index where each file ends
        self.begins = self.ends - torch.tensor(counts, dtype=torch.int64)
        self.file_source = torch.tensor([i for i, files in enumerate(sources) for _ in files], dtype=torch.int64)
        per_source = torch.zeros(len(sources), dtype=torch.int64).index_add_(0, self.file_source, torch.tensor(counts))
        self.source_end = per_source.cumsum(0)
        self.source_begin = self.source_end - per_source
        self.weights = None if weights is None else torch.tensor(weights, dtype=torch.float64) / sum(weights)
        self.readers = [window_reader(f) for f in self.files]

    def draw(
        self, batch_size: int, device: str | torch.device, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(x, y, the source of each row)."""
        if self.weights is None:  # one file: the very draw get_batch makes
            index = torch.randint(0, int(self.ends[-1]), (batch_size,), generator=generator)
        else:
            source = torch.multinomial(self.weights, batch_size, replacement=True, generator=generator)
            within = torch.rand(batch_size, generator=generator, dtype=torch.float64)
            size = (self.source_end - self.source_begin)[source]
            index = self.source_begin[source] + torch.minimum((within * size).long(), size - 1)
        file = torch.searchsorted(self.ends, index, right=True)
        offset = index - self.begins[file]
        pairs = zip(file.tolist(), offset.tolist())
        if self.starts is not None:
            pairs = ((f, int(self.starts[f][o])) for f, o in pairs)  # type: ignore[assignment]
        windows = [self.readers[f](o, self.context_length + 1) for f, o in pairs]
        x, y = _to_batch(windows, self.context_length, device)
        return x, y, self.file_source[file]


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
