"""Learning curves of one or more runs (metrics.jsonl), against steps and against wall-clock time."""

from __future__ import annotations

import os
from pathlib import Path

from bpe_lm._io import atomic_output
from bpe_lm.metrics import read_metrics


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_runs(
    runs: list[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    labels: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """Writes a PNG with validation (solid) and smoothed training (faint) loss per run, against steps
    (left) and wall-clock minutes (right). The file is written to a temporary name and renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for i, run in enumerate(runs):
        rows = read_metrics(run)
        label = labels[i] if labels else Path(run).name
        color = f"C{i % 10}"
        train = [r for r in rows if "train_loss" in r]
        valid = [r for r in rows if "valid_loss" in r]
        if train:
            smooth = _smooth([r["train_loss"] for r in train], max(1, len(train) // 50))
            by_step.plot([r["step"] for r in train], smooth, color=color, alpha=0.35, linewidth=1)
            by_time.plot([r["time"] / 60 for r in train], smooth, color=color, alpha=0.35, linewidth=1)
        if valid:
            by_step.plot(
                [r["step"] for r in valid],
                [r["valid_loss"] for r in valid],
                color=color,
                marker="o",
                markersize=3,
                label=label,
            )
            by_time.plot(
                [r["time"] / 60 for r in valid],
                [r["valid_loss"] for r in valid],
                color=color,
                marker="o",
                markersize=3,
                label=label,
            )
    by_step.set_xlabel("step")
    by_time.set_xlabel("wall-clock (minutes)")
    by_step.set_ylabel("loss (valid: points; train: faint)")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
    by_time.legend(loc="upper right", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(output)
    try:
        with atomic_output(out) as tmp:
            fig.savefig(tmp, dpi=110, format=out.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return out
