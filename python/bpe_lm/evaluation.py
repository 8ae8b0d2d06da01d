"""Evaluation: the mean loss over a fixed subset of windows (during training), over a whole token file
(`bpe-lm eval`), and bits per byte of the text those tokens came from."""

from __future__ import annotations

import math

import numpy as np
import torch

from bpe_lm.config import ModelConfig
from bpe_lm.data import WindowSampler, sequential_batches
from bpe_lm.model import TransformerLM
from bpe_lm.runtime import autocast


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    tokens: np.ndarray | WindowSampler,
    config: ModelConfig,
    batch_size: int,
    iters: int,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    seed: int,
) -> float:
    """Mean loss over a fixed subset of windows (the same `iters` batches every time) of a token array or
    of the files of a source (`WindowSampler`)."""
    sampler = tokens if isinstance(tokens, WindowSampler) else WindowSampler([[tokens]], config.context_length)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    total = torch.zeros((), device=device)
    for _ in range(iters):
        x, y, _ = sampler.draw(batch_size, device, generator)
        with autocast(device, autocast_dtype):
            total += model(x, targets=y).float()
    model.train(was_training)
    return (total / iters).item()


@torch.no_grad()
def file_loss(
    model: TransformerLM, tokens: np.ndarray, batch_size: int, device: torch.device, max_batches: int | None = None
) -> tuple[float, int]:
    """Mean loss per predicted token over consecutive non-overlapping windows from the file's start, and
    the number of tokens predicted."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in sequential_batches(tokens, batch_size, model.config.context_length, device, max_batches):
        total += model(x, targets=y).item() * y.numel()
        count += y.numel()
    model.train(was_training)
    return total / count, count


def bits_per_byte(loss_per_token: float, tokens: int, text_bytes: int) -> float:
    """Bits per byte of a text: its mean loss (nats per token) times its tokens per byte, in bits."""
    return loss_per_token * tokens / text_bytes / math.log(2)
