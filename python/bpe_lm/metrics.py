"""metrics.jsonl: the per-step record of a training run (written by the trainer, read by `plot`, the demo
and the experiment scripts), plus TensorBoard / W&B when asked for and installed. No PyTorch needed to
read it."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from bpe_lm._io import atomic_write
from bpe_lm.config import RunConfig
from bpe_lm.run_files import METRICS_NAME

# Fields of a row that readers (plot, resume, the demo's report) compute with: numbers when present.
NUMERIC_FIELDS = ("step", "tokens", "time", "train_loss", "valid_loss", "lr", "grad_norm", "tokens_per_s", "mfu")


class MetricsLog:
    """metrics.jsonl in the run directory, plus TensorBoard / W&B when asked for and installed."""

    def __init__(self, run_dir: Path, cfg: RunConfig, enabled: bool, resume: bool, resumed_at: int = 0) -> None:
        self.enabled = enabled
        self.path = run_dir / METRICS_NAME
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        if not resume and self.path.exists():
            self.path.unlink()
        if resume and self.path.exists():
            self._drop_rows_after(resumed_at)
        if cfg.logging.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:
                warnings.warn("logging.tensorboard is set but tensorboard is not installed; skipping it", stacklevel=2)
        if cfg.logging.wandb_project:
            try:
                import wandb

                self.wandb = wandb.init(
                    project=cfg.logging.wandb_project, config=cfg.to_dict(), dir=str(run_dir), resume="allow"
                )
            except ImportError:
                warnings.warn("logging.wandb_project is set but wandb is not installed; skipping it", stacklevel=2)

    def _drop_rows_after(self, step: int) -> None:
        """A run killed after its last checkpoint logged steps that the resumed run will log again: keep
        the rows up to the checkpoint's step only (the file is rewritten atomically)."""
        rows = read_metrics(self.path.parent)
        kept = [row for row in rows if row.get("step", 0) <= step]
        if len(kept) != len(rows) or not _ends_whole(self.path):  # also drops a cut last line
            atomic_write(self.path, "".join(json.dumps(row) + "\n" for row in kept))

    def write(self, rows: list[dict[str, Any]]) -> None:
        if not self.enabled or not rows:
            return
        # One write of whole lines, appended: a row is in the file whole, or (cut by a kill or a full disk)
        # its last line is partial, which `read_metrics` drops.
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(row) + "\n" for row in rows))
        for row in rows:
            step = row["step"]
            scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step" and v is not None}
            if self.tb is not None:
                for k, v in scalars.items():
                    self.tb.add_scalar(k, v, step)
            if self.wandb is not None:
                self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _ends_whole(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_metrics(run_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a run's metrics.jsonl. A last line cut short (a kill or a full disk while it was being
    written) is dropped with a warning; any other line that is not a JSON object is an error naming it."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {METRICS_NAME} (is this a run directory from `bpe-lm train`?)")
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            for name in NUMERIC_FIELDS:
                value = row.get(name)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise ValueError(f"{name} is {value!r}, not a number")
        except ValueError as e:
            if number == len(lines):  # the last line, without its newline: cut while it was written
                warnings.warn(
                    f"{path}: line {number} is cut short (the run was stopped while writing it); dropped", stacklevel=2
                )
                break
            raise ValueError(f"{path}: line {number}: not a row of metrics ({e})") from None
        rows.append(row)
    return rows
