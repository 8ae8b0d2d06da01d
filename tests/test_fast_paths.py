"""The fast training paths (the ones GPU throughput depends on), all exercised on CPU: the fused, chunked
linear + cross-entropy, the loss inside one compiled graph, the compiled AdamW step, and the training-loop
fixes for CUDA and DDP runs (resume, MFU, Ctrl-C agreement)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")

from bpe_lm import optim  # noqa: E402
from bpe_lm import train as train_module  # noqa: E402
from bpe_lm.config import ConfigError, build_config, to_toml  # noqa: E402
from bpe_lm.metrics import read_metrics  # noqa: E402
from bpe_lm.model import ModelConfig, TransformerLM, cross_entropy, linear_cross_entropy  # noqa: E402
from bpe_lm.runtime import model_flops_utilization  # noqa: E402
from bpe_lm.train import Trainer  # noqa: E402


def tiny(tie: bool = False, **kw) -> ModelConfig:
    return ModelConfig(
        vocab_size=97, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=64, tie_embeddings=tie, **kw
    )


def batch(config: ModelConfig, size: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, config.vocab_size, (size, config.context_length + 1), generator=g)
    return ids[:, :-1], ids[:, 1:]


# ---------------------------------------------------------------------------------------------------- fused loss


@pytest.mark.parametrize("chunk_rows", [None, 7, 64, 1000])
def test_linear_cross_entropy_equals_reference_fp32(chunk_rows):
    g = torch.Generator().manual_seed(0)
    hidden = (torch.randn(50, 24, generator=g) * 3).requires_grad_()
    weight = torch.randn(301, 24, generator=g).requires_grad_()
    targets = torch.randint(0, 301, (50,), generator=g)
    ref = cross_entropy(hidden @ weight.T, targets)
    ref_grads = torch.autograd.grad(ref * 2.5, (hidden, weight))  # a non-unit upstream gradient
    ours = linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows)
    grads = torch.autograd.grad(ours * 2.5, (hidden, weight))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    with torch.no_grad():  # the no-grad path (evaluation) gives the same value
        torch.testing.assert_close(
            linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows), ref.detach(), atol=1e-5, rtol=1e-5
        )


def test_linear_cross_entropy_gradcheck_fp64():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(9, 5, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(11, 5, dtype=torch.float64, generator=g, requires_grad=True)
    targets = torch.randint(0, 11, (9,), generator=g)
    assert torch.autograd.gradcheck(lambda h, w: linear_cross_entropy(h, w, targets, chunk_rows=4), (hidden, weight))


def test_cross_entropy_gradcheck_fp64():
    g = torch.Generator().manual_seed(2)
    logits = (torch.randn(6, 13, dtype=torch.float64, generator=g) * 4).requires_grad_()
    targets = torch.randint(0, 13, (6,), generator=g)
    # `cross_entropy` reduces in float32 by design; check the hand-written backward itself in float64.
    from bpe_lm.model import _CrossEntropy

    assert torch.autograd.gradcheck(lambda x: _CrossEntropy.apply(x, targets), (logits,))


def test_linear_cross_entropy_bf16_autocast_within_tolerance():
    """Under bf16 autocast the chunks' GEMMs run in bf16 and the reductions in fp32. Stated tolerance
    against the fp32 reference: loss within 2e-2 (relative), gradients within 5e-2 of their norm."""
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(64, 48, generator=g).requires_grad_()
    weight = (torch.randn(500, 48, generator=g) * 0.2).requires_grad_()
    targets = torch.randint(0, 500, (64,), generator=g)
    ref = cross_entropy(hidden @ weight.T, targets)
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = linear_cross_entropy(hidden, weight, targets, chunk_rows=16)
    grads = torch.autograd.grad(ours, (hidden, weight))
    assert ours.dtype == torch.float32
    assert abs(ours.item() - ref.item()) <= 2e-2 * ref.item()
    for a, b in zip(grads, ref_grads):
        assert a.dtype == b.dtype == torch.float32
        assert (a - b).norm() <= 5e-2 * b.norm()


@pytest.mark.parametrize("tie", [False, True])
def test_model_loss_equals_loss_of_logits(tie):
    """forward(ids, targets) (fused head + loss) against cross_entropy(forward(ids)): value and every
    parameter's gradient, tied and untied heads."""
    torch.manual_seed(0)
    model = TransformerLM(tiny(tie))
    x, y = batch(model.config)
    ref = cross_entropy(model(x), y)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    ours = model(x, targets=y)
    grads = torch.autograd.grad(ours, list(model.parameters()))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    for (name, _), a, b in zip(model.named_parameters(), grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_fused_loss_never_holds_the_full_logits():
    """The largest float tensor the fused loss allocates is one chunk of logits, not (N, V)."""
    g = torch.Generator().manual_seed(4)
    n, d, v, rows = 512, 16, 1000, 64
    hidden = torch.randn(n, d, generator=g, requires_grad=True)
    weight = torch.randn(v, d, generator=g, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=g)
    sizes = []

    class Watch(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    sizes.append(t.numel())
            return out

    with Watch():
        linear_cross_entropy(hidden, weight, targets, chunk_rows=rows).backward()
    assert max(sizes) <= max(rows * v, v * d, n * d) < n * v


# ---------------------------------------------------------------------------------------------------- one graph


def test_training_step_compiles_to_one_graph():
    """Forward with the loss, and its backward, without a graph break (fullgraph=True raises on one)."""
    torch.manual_seed(0)
    model = TransformerLM(tiny())
    x, y = batch(model.config)
    explanation = torch._dynamo.explain(model)(x, targets=y)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss = compiled(x, targets=y)
    loss.backward()
    eager = TransformerLM(tiny())
    eager.load_state_dict(model.state_dict())
    ref = eager(x, targets=y)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    for (name, p), q in zip(model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_training_step_compiles_to_one_graph_under_autocast():
    torch.manual_seed(0)
    model = TransformerLM(tiny(tie=True))
    x, y = batch(model.config)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = compiled(x, targets=y)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_fused_projections_keep_the_state_dict():
    """q/k/v and w1/w3 run as one GEMM each, yet the parameters and their keys are the CS336 ones."""
    model = TransformerLM(tiny())
    keys = set(model.state_dict())
    for name in ("q_proj", "k_proj", "v_proj", "output_proj"):
        assert f"layers.0.attn.{name}.weight" in keys
    for name in ("w1", "w2", "w3"):
        assert f"layers.1.ffn.{name}.weight" in keys
    assert not any("qkv" in k or "w13" in k or "rope" in k for k in keys)


# ---------------------------------------------------------------------------------------------------- optimizer


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(7, 5), (5,), (3, 4, 2)]]


def test_compiled_adamw_matches_reference_and_torch_without_recompiling():
    """100 steps with a new learning rate every step: the compiled update equals our reference loop and
    torch.optim.AdamW, and compiles once (lr and step are tensors, so no value is baked in)."""
    torch._dynamo.reset()
    optim._compiled_adamw_update = None
    compiled_p, loop_p, torch_p = _params(), _params(), _params()
    kw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    compiled = optim.AdamW(compiled_p, compiled=True, **kw)
    loop = optim.AdamW(loop_p, foreach=False, **kw)
    ref = torch.optim.AdamW(torch_p, **kw)
    g = torch.Generator().manual_seed(1)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for i in range(100):
            grads = [torch.randn(p.shape, generator=g) for p in compiled_p]
            for params, opt in ((compiled_p, compiled), (loop_p, loop), (torch_p, ref)):
                for p, grad in zip(params, grads):
                    p.grad = grad.clone()
                for group in opt.param_groups:
                    group["lr"] = optim.cosine_lr(i, 1e-2, 1e-3, 10, 100)
                opt.step()
    for a, b, c in zip(compiled_p, loop_p, torch_p):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-6)
    # Its state is the reference path's: a checkpoint of one resumes the other.
    again = optim.AdamW(_params(), foreach=False, **kw)
    again.load_state_dict(compiled.state_dict())
    for p, q in zip(compiled_p, loop_p):
        torch.testing.assert_close(compiled.state[p]["exp_avg_sq"], loop.state[q]["exp_avg_sq"], atol=1e-7, rtol=1e-6)
    assert again.state_dict()["state"][0]["step"] == 100


# ---------------------------------------------------------------------------------------------------- training loop


@pytest.fixture()
def token_files(tmp_path):
    rng = np.random.default_rng(0)
    data = np.tile(np.arange(60, dtype=np.uint16), 300)
    data = np.where(rng.random(data.size) < 0.1, rng.integers(0, 97, data.size), data).astype(np.uint16)
    train, valid = tmp_path / "train.npy", tmp_path / "valid.npy"
    np.save(train, data[:15000])
    np.save(valid, data[15000:])
    return train, valid


def run_raw(tmp_path, token_files, out="run", **training) -> dict:
    return {
        "model": tiny().to_dict(),
        "optimizer": {"lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 2},
        "data": {"train": str(token_files[0]), "valid": str(token_files[1])},
        "training": {"batch_size": 8, "max_iters": 6, "eval_interval": 3, "eval_iters": 2, "log_interval": 1,
                     "checkpoint_interval": 3, "out_dir": str(tmp_path / out), "device": "cpu", **training},
    }  # fmt: skip


def train_losses(run_dir) -> list[float]:
    return [r["train_loss"] for r in read_metrics(run_dir) if "train_loss" in r]


def test_compiled_training_matches_eager(tmp_path, token_files):
    """The whole compiled path (model with its loss, compiled AdamW, CUDA-graph setting, which is a no-op
    on CPU) trains like the eager one."""
    eager = build_config(run_raw(tmp_path, token_files, "eager"))
    compiled = build_config(run_raw(tmp_path, token_files, "compiled", compile=True, cuda_graphs=True))
    Trainer(eager, progress=False).run()
    summary = Trainer(compiled, progress=False).run()
    assert summary["compiled"] is True
    np.testing.assert_allclose(
        train_losses(tmp_path / "compiled"), train_losses(tmp_path / "eager"), rtol=2e-4, atol=2e-4
    )


def test_cuda_graphs_need_compile(tmp_path, token_files):
    with pytest.raises(ConfigError, match="training.cuda_graphs needs training.compile"):
        build_config(run_raw(tmp_path, token_files, cuda_graphs=True))


def test_mfu_divides_by_every_device():
    # 4 devices together process 4e5 tokens/s at 6e8 FLOPs per token = 2.4e14 FLOP/s of 4 × 1e15 peak.
    assert model_flops_utilization(4e5, 6e8, 1e15, world_size=4) == pytest.approx(0.06)
    assert model_flops_utilization(4e5, 6e8, 1e15) == pytest.approx(0.24)
    assert model_flops_utilization(4e5, 6e8, None, world_size=4) is None


def test_resume_reads_the_checkpoint_onto_the_cpu(tmp_path, token_files, monkeypatch):
    """RNG states must be CPU tensors (torch.set_rng_state and Generator.set_state reject CUDA ones), so
    the checkpoint is read onto the CPU whatever the training device; load_state_dict moves the rest."""
    cfg = build_config(run_raw(tmp_path, token_files))
    Trainer(cfg, progress=False).run()
    seen = []
    real = train_module.read_checkpoint

    def spy(path, map_location="cpu"):
        seen.append(map_location)
        return real(path, map_location=map_location)

    monkeypatch.setattr(train_module, "read_checkpoint", spy)
    more = build_config(run_raw(tmp_path, token_files, max_iters=9))
    Trainer(more, resume=True, progress=False).run()
    assert seen == ["cpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
    reason="torch.distributed with gloo is not available",
)
def test_ctrl_c_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, token_files):
    """Under DDP a Ctrl-C reaches one process (here: only rank 1). Both must stop at the same step and
    save, instead of rank 0 waiting forever in all_reduce for a rank that has left."""
    raw = run_raw(
        tmp_path, token_files, max_iters=100_000, log_interval=2, eval_interval=1000, checkpoint_interval=1000
    )
    config = tmp_path / "ddp.toml"
    config.write_text(to_toml(raw))
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-m", "bpe_lm", "train", "--config", str(config), "--quiet"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))  # fmt: skip
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not metrics.is_file() or metrics.read_text().count("train_loss") < 3):
            assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-2000:]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGINT)
        outputs = [p.communicate(timeout=90) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [130, 130], [o[1][-2000:] for o in outputs]
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["iteration"] % 2 == 0  # stopped at an agreement step, after the signal
    assert state["iteration"] == max(r["step"] for r in read_metrics(tmp_path / "run"))
