"""Where and how a run computes: the device, the autocast dtype, peak FLOP/s and MFU, and the DDP process
group under torchrun."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from bpe_lm.accounting import PEAK_FLOPS
from bpe_lm.config import ConfigError


def resolve_device(name: str, setting: str = "training.device") -> torch.device:
    """The torch device for a device name (auto: cuda > mps > cpu). `setting` is how the user gave it
    (training.device, --device), for the messages."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{setting} {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{setting} {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting} {name!r}: CUDA is not available here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"{setting} {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ConfigError(f"{setting} {name!r}: MPS is not available here")
    return device


def resolve_autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32."""
    if name == "float32" or (name == "auto" and device.type != "cuda"):
        return None
    if name == "bfloat16" or device.type == "cuda":
        return torch.bfloat16
    return None


def model_flops_utilization(
    tokens_per_s: float, flops_per_token: float, peak_per_device: float | None, world_size: int = 1
) -> float | None:
    """MFU of a run whose `tokens_per_s` counts the tokens of all `world_size` devices."""
    if not peak_per_device:
        return None
    return tokens_per_s * flops_per_token / (peak_per_device * world_size)


def peak_flops(device: torch.device, autocast_dtype: torch.dtype | None) -> float | None:
    """Dense peak FLOP/s of one known accelerator for the precision in use; None where unknown (no MFU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).upper()
    precision = "bf16" if autocast_dtype == torch.bfloat16 else "tf32"
    for card in ("H200", "H100", "A100"):
        if card in name:
            return PEAK_FLOPS.get(f"{card.lower()}-{precision}")
    return None


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> tuple[Dist, str]:
    """Joins the process group torchrun describes (NCCL on GPUs, gloo on CPU); one process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_name
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto",) or device_name.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local)
        device_name = f"cuda:{local}"
    elif device_name == "auto":
        device_name = "cpu"
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, world), device_name


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
