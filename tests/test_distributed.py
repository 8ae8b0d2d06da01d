"""DDP under torchrun on CPU (gloo, 2 processes): the same global batch gives the same loss trajectory as
one process."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")
import torch.distributed as dist  # noqa: E402

from bpe_lm.config import to_toml  # noqa: E402
from bpe_lm.metrics import read_metrics  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)


def write_config(tmp_path, out: str, **training) -> str:
    rng = np.random.default_rng(0)
    data = np.tile(np.arange(40, dtype=np.uint16), 400)
    data = np.where(rng.random(data.size) < 0.1, rng.integers(0, 64, data.size), data).astype(np.uint16)
    np.save(tmp_path / "train.npy", data[:14000])
    np.save(tmp_path / "valid.npy", data[14000:])
    config = {
        "model": dict(vocab_size=64, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=64),
        "optimizer": dict(lr=3e-3, min_lr=3e-4, warmup_iters=3),
        "data": dict(train=str(tmp_path / "train.npy"), valid=str(tmp_path / "valid.npy")),
        "training": dict(batch_size=8, max_iters=12, eval_interval=6, eval_iters=2, log_interval=1, checkpoint_interval=6,
                         out_dir=str(tmp_path / out), device="cpu", **training),
    }  # fmt: skip
    path = tmp_path / f"{out}.toml"
    path.write_text(to_toml(config))
    return str(path)


def losses(run_dir) -> list[float]:
    return [r["train_loss"] for r in read_metrics(run_dir) if "train_loss" in r]


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_two_processes_match_one(tmp_path, grad_accum):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = write_config(tmp_path, "single", grad_accum=grad_accum)
    subprocess.run(
        [sys.executable, "-m", "bpe_lm", "train", "--config", single, "--quiet"], check=True, env=env, timeout=300
    )
    double = write_config(tmp_path, "double", grad_accum=grad_accum)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "bpe_lm", "train", "--config", double, "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = losses(tmp_path / "single"), losses(tmp_path / "double")
    assert len(a) == len(b) == 12
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "double" / "checkpoint.pt").is_file()
