"""The files of a run directory, named once: `bpe-lm train` writes them (train.py, checkpoint.py,
metrics.py) and the commands that read a run find them here. Torch-free, so a command can check a run
directory before it imports PyTorch."""

from __future__ import annotations

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.toml"
METRICS_NAME = "metrics.jsonl"
