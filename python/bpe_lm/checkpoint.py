"""Checkpoints that resume a run exactly: model, optimizer, iteration, config, RNG states and whatever the
trainer adds (data sampler state, tokens seen, elapsed time). Written atomically; loaded with
`weights_only=True`, so loading a checkpoint never runs code from it."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from bpe_lm._io import atomic_output
from bpe_lm.run_files import CHECKPOINT_NAME

COMPILED_PREFIX = "_orig_mod."


def _unwrap(model: nn.Module) -> nn.Module:
    """The module itself, under torch.compile's and DDP's wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _strip_prefixes(state: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state.items():
        while key.startswith(COMPILED_PREFIX) or key.startswith("module."):
            key = key[len(COMPILED_PREFIX) :] if key.startswith(COMPILED_PREFIX) else key[len("module.") :]
        out[key] = value
    return out


def rng_states() -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    iteration: int,
    out: str | os.PathLike[str] | BinaryIO,
    **extra: Any,
) -> None:
    """Saves everything needed to resume. `out` is a path (written to a temporary file, then renamed) or
    a binary file object."""
    inner = _unwrap(model)
    config = getattr(inner, "config", None)
    state = {
        "model": _strip_prefixes(inner.state_dict()),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "iteration": int(iteration),
        "config": config.to_dict() if config is not None and hasattr(config, "to_dict") else None,
        "rng": rng_states(),
        **extra,
    }
    if not isinstance(out, (str, os.PathLike)):
        torch.save(state, out)
        return
    with atomic_output(out) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def read_checkpoint(src: str | os.PathLike[str] | BinaryIO, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's contents, loaded safely (`weights_only=True`)."""
    if isinstance(src, (str, os.PathLike)) and not Path(src).is_file():
        raise FileNotFoundError(f"{src}: checkpoint not found")
    where = src if isinstance(src, (str, os.PathLike)) else "checkpoint"
    if isinstance(src, (str, os.PathLike)):
        with open(src, "rb") as f:
            magic = f.read(4)
        # torch.save writes a zip archive (PK..); files of torch before 1.6 are a pickle (protocol byte 0x80).
        if magic[:2] != b"PK" and magic[:1] != b"\x80":
            raise ValueError(
                f"{where}: not a bpe-lm checkpoint (not a PyTorch file at all{': it is empty' if not magic else ''})"
            )
    try:
        state = torch.load(src, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to parse the file is a problem with the file
        raise ValueError(f"{where}: not a readable bpe-lm checkpoint ({_why_unreadable(e)})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{where}: not a bpe-lm checkpoint (no model state in it)")
    return state


def _why_unreadable(e: BaseException) -> str:
    """A short reason in place of torch's text, which can run to paragraphs and suggests
    `weights_only=False` (loading with it would run code from the file: never done here)."""
    text = str(e)
    if isinstance(e, pickle.UnpicklingError) and "weights_only" in text:
        return "it holds objects a safe load refuses; bpe-lm checkpoints hold only tensors and plain values"
    if (
        isinstance(e, (EOFError, OSError))
        or "zip archive" in text
        or "central directory" in text
        or "file_offset" in text
    ):
        return "truncated or damaged: the file ends early or its archive index is broken"
    return "not a PyTorch file"


def load_checkpoint(
    src: str | os.PathLike[str] | BinaryIO, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> int:
    """Restores the model (and optimizer, when given) from `src`; returns the saved iteration. Works
    whether the model, or the one saved, was wrapped by torch.compile or DDP."""
    inner = _unwrap(model)
    device = next(inner.parameters()).device
    state = read_checkpoint(src, map_location=device)
    inner.load_state_dict(_strip_prefixes(state["model"]))
    if optimizer is not None:
        if state.get("optimizer") is None:
            raise ValueError("checkpoint has no optimizer state")
        optimizer.load_state_dict(state["optimizer"])
    return int(state["iteration"])


# ----------------------------------------------------------------------------------------------------
# Models for inference (eval, generate, export, the demo)


def load_model(source: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[Any, dict]:
    """A model from a run directory (its checkpoint.pt) or a checkpoint file, in eval mode, plus the
    checkpoint's contents. The checkpoint is checked against its own config before any memory is given to
    the model: every weight there with the shape the config implies, nothing missing or extra, all finite."""
    from bpe_lm.model import ModelConfig, TransformerLM

    path = Path(source)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{source}: no {CHECKPOINT_NAME} in this run directory (has `bpe-lm train` saved one yet?)"
            )
    state = read_checkpoint(path, map_location="cpu")
    if not isinstance(state.get("config"), dict) or not state["config"]:
        raise ValueError(f"{path}: the checkpoint has no model config")
    try:
        config = ModelConfig.from_dict(state["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: its model config is not one bpe-lm can build ({e})") from None
    weights = _strip_prefixes(state["model"])
    with torch.device("meta"):  # shapes only: a config that asks for terabytes costs nothing here
        expected = {k: v.shape for k, v in TransformerLM(config).state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        what = (
            f"lacks {', '.join(missing[:3])}"
            if missing
            else f"has weights its config has no place for ({', '.join(extra[:3])})"
        )
        raise ValueError(f"{path}: not a checkpoint of the model its config describes: it {what}")
    for name, shape in expected.items():
        tensor = weights[name]
        if not isinstance(tensor, torch.Tensor) or tensor.shape != shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise ValueError(f"{path}: weight {name} is {got}, but its config makes it {tuple(shape)}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{path}: weight {name} holds NaN or infinite values (a run that diverged?)")
    model = TransformerLM(config, device=device)
    model.load_state_dict(weights)
    model.eval()
    return model, state
