"""Optimizer, schedule, batches, checkpoints, the training loop, sampling and their commands."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")

from bpe_lm import optim  # noqa: E402
from bpe_lm.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint  # noqa: E402
from bpe_lm.cli import main  # noqa: E402
from bpe_lm.config import ConfigError, build_config, load_config, to_toml  # noqa: E402
from bpe_lm.data import get_batch, load_tokens  # noqa: E402
from bpe_lm.generate import generate, sample_next  # noqa: E402
from bpe_lm.metrics import read_metrics  # noqa: E402
from bpe_lm.model import ModelConfig, TransformerLM, cross_entropy  # noqa: E402
from bpe_lm.train import Trainer, TrainingError  # noqa: E402

from conftest import run_keeping_checkpoint  # noqa: E402

# ---------------------------------------------------------------------------------------------------- optim


def _params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(7, 5), (5,), (3, 4, 2)]]


@pytest.mark.parametrize("foreach", [None, False])
def test_adamw_matches_torch(foreach):
    ours_p, ref_p = _params(), _params()
    groups = lambda ps: [{"params": ps[:2]}, {"params": ps[2:], "weight_decay": 0.0, "lr": 3e-3}]  # noqa: E731
    ours = optim.AdamW(groups(ours_p), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=foreach)
    ref = torch.optim.AdamW(groups(ref_p), lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(100):
        grads = [torch.randn(p.shape, generator=g) for p in ours_p]
        for p, q, grad in zip(ours_p, ref_p, grads):
            p.grad, q.grad = grad.clone(), grad.clone()
        ours.step()
        ref.step()
    for p, q in zip(ours_p, ref_p):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)


def test_adamw_state_round_trip():
    """A reloaded optimizer holds the same moments and step count, and continues exactly as the original."""
    params = _params()
    opt = optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    again = optim.AdamW(copies, lr=1e-2, weight_decay=0.1)
    saved = io.BytesIO()  # through bytes, as a checkpoint does (load_state_dict alone may share the tensors)
    torch.save(opt.state_dict(), saved)
    saved.seek(0)
    again.load_state_dict(torch.load(saved, weights_only=True))
    for i, p in enumerate(params):
        mine, theirs = opt.state[p], again.state[copies[i]]
        assert int(theirs["step"]) == 3
        assert torch.equal(theirs["exp_avg"], mine["exp_avg"]) and torch.equal(theirs["exp_avg_sq"], mine["exp_avg_sq"])
        assert mine["exp_avg"].abs().sum() > 0
    for _ in range(2):
        grads = [torch.randn(p.shape, generator=g) for p in params]
        for p, c, grad in zip(params, copies, grads):
            p.grad, c.grad = grad.clone(), grad.clone()
        opt.step()
        again.step()
    for p, c in zip(params, copies):
        assert torch.equal(p, c)


def test_adamw_rejects_bad_hyperparameters():
    with pytest.raises(ValueError, match="learning rate"):
        optim.AdamW(_params(), lr=-1)
    with pytest.raises(ValueError, match="betas"):
        optim.AdamW(_params(), betas=(0.9, 1.0))


def test_cosine_schedule():
    # The CS336 reference values: max 1, min 0.1, 7 warmup, cosine to 21.
    expected = [0, 0.14285714285714285, 0.2857142857142857, 0.42857142857142855, 0.5714285714285714, 0.7142857142857143,
                0.8571428571428571, 1.0, 0.9887175604818206, 0.9554359905560885, 0.9018241671106134, 0.8305704108364301,
                0.7452476826029011, 0.6501344202803414, 0.55, 0.44986557971965857, 0.3547523173970989, 0.26942958916356996,
                0.19817583288938662, 0.14456400944391146, 0.11128243951817937, 0.1, 0.1, 0.1, 0.1]  # fmt: skip
    got = [optim.cosine_lr(it, 1.0, 0.1, 7, 21) for it in range(25)]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert optim.cosine_lr(0, 1.0, 0.1, 0, 10) == 1.0


def test_clip_grad_norm_matches_torch():
    ours_p, ref_p = _params(), _params()
    g = torch.Generator().manual_seed(2)
    for p, q in zip(ours_p, ref_p):
        grad = torch.randn(p.shape, generator=g) * 10
        p.grad, q.grad = grad.clone(), grad.clone()
    norm = optim.clip_grad_norm(ours_p, 1.0)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref_p, 1.0)
    torch.testing.assert_close(norm, ref_norm)
    for p, q in zip(ours_p, ref_p):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5)
    # Below the limit nothing changes.
    small = _params()
    for p in small:
        p.grad = torch.full_like(p, 1e-3)
    before = [p.grad.clone() for p in small]
    optim.clip_grad_norm(small, 100.0)
    assert all(torch.equal(p.grad, b) for p, b in zip(small, before))


# ---------------------------------------------------------------------------------------------------- data


def test_get_batch_windows_and_coverage():
    data = np.arange(100, dtype=np.uint16)
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(500):
        x, y = get_batch(data, 8, 10, "cpu", gen)
        assert x.shape == y.shape == (8, 10) and x.dtype == torch.int64
        assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
        seen.update(x[:, 0].tolist())
    assert seen == set(range(90))  # every valid start, and only those
    with pytest.raises(ValueError, match="needs at least"):
        get_batch(data[:10], 1, 10, "cpu")


def test_get_batch_from_memmap_equals_array(tmp_path):
    data = (np.arange(5000) % 60000).astype(np.uint32)
    np.save(tmp_path / "t.npy", data)
    mm = load_tokens(tmp_path / "t.npy")
    for source in (mm, mm[1000:]):
        expected_source = data if source is mm else data[1000:]
        a = get_batch(source, 4, 16, "cpu", torch.Generator().manual_seed(5))
        b = get_batch(expected_source, 4, 16, "cpu", torch.Generator().manual_seed(5))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc to read RSS")
def test_memmap_batches_keep_rss_flat(tmp_path):
    path = tmp_path / "big.npy"
    n = 512 * 2**20  # 1 GiB of uint16
    header = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(n,))
    del header  # a sparse file: reading it costs no disk
    mm = load_tokens(path)
    gen = torch.Generator().manual_seed(0)
    for _ in range(500):
        get_batch(mm, 32, 256, "cpu", gen)
    start = _rss_mb()
    for _ in range(10_000):
        get_batch(mm, 32, 256, "cpu", gen)
    assert _rss_mb() - start < 30


# ---------------------------------------------------------------------------------------------------- checkpoints


def tiny_config(**kw) -> ModelConfig:
    return ModelConfig(
        **{**dict(vocab_size=64, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=64), **kw}
    )


def test_checkpoint_round_trip_and_compiled_prefix(tmp_path):
    model = TransformerLM(tiny_config())
    opt = optim.AdamW(model.parameters())
    x = torch.randint(0, 64, (2, 16))
    cross_entropy(model(x), x).backward()
    opt.step()
    save_checkpoint(model, opt, 7, tmp_path / "c.pt", note="hello")
    fresh = TransformerLM(tiny_config())
    fresh_opt = optim.AdamW(fresh.parameters())
    assert load_checkpoint(tmp_path / "c.pt", fresh, fresh_opt) == 7
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert read_checkpoint(tmp_path / "c.pt")["note"] == "hello"
    # A state dict saved from a compiled model loads into a plain one.
    state = read_checkpoint(tmp_path / "c.pt")
    state["model"] = {"_orig_mod." + k: v for k, v in state["model"].items()}
    torch.save(state, tmp_path / "compiled.pt")
    assert load_checkpoint(tmp_path / "compiled.pt", TransformerLM(tiny_config())) == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "compiled.pt"]


def test_checkpoint_never_runs_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    torch.save({"model": {}, "iteration": 1, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a readable bpe-lm checkpoint"):
        read_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------------- training loop


@pytest.fixture
def token_files(tmp_path):
    rng = np.random.default_rng(0)
    # A learnable sequence: mostly a repeating pattern, some noise.
    pattern = np.tile(np.arange(40, dtype=np.uint16), 500)
    noise = rng.integers(0, 64, size=pattern.size).astype(np.uint16)
    data = np.where(rng.random(pattern.size) < 0.1, noise, pattern)
    np.save(tmp_path / "train.npy", data[:18000])
    np.save(tmp_path / "valid.npy", data[18000:])
    return tmp_path / "train.npy", tmp_path / "valid.npy"


def run_config(tmp_path, token_files, **training):
    raw = {
        "model": tiny_config().to_dict(),
        "optimizer": {"lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 5},
        "data": {"train": str(token_files[0]), "valid": str(token_files[1])},
        "training": {"batch_size": 8, "max_iters": 20, "eval_interval": 10, "eval_iters": 2, "log_interval": 5,
                     "checkpoint_interval": 10, "out_dir": str(tmp_path / "run"), "device": "cpu", **training},
    }  # fmt: skip
    return build_config(raw)


def test_resume_is_bit_identical(tmp_path, token_files):
    resumed_dir = tmp_path / "resumed"
    full = run_keeping_checkpoint(
        run_config(tmp_path, token_files, log_interval=1, out_dir=str(tmp_path / "full")), 10, resumed_dir
    )
    assert full["steps"] == 20
    saved_seconds = read_checkpoint(resumed_dir / "checkpoint.pt")["train_seconds"]
    Trainer(
        run_config(tmp_path, token_files, log_interval=1, out_dir=str(resumed_dir)), resume=True, progress=False
    ).run()
    # The training-step clock carries on from the checkpoint's.
    assert all(r["train_seconds"] > saved_seconds > 0 for r in read_metrics(resumed_dir) if "valid_loss" in r)
    losses = lambda run: {r["step"]: r["train_loss"] for r in read_metrics(run) if "train_loss" in r}  # noqa: E731
    a, b = losses(tmp_path / "full"), losses(resumed_dir)
    assert sorted(b) == list(range(11, 21))
    assert [a[s] for s in range(11, 21)] == [b[s] for s in range(11, 21)]


def test_grad_accumulation_matches_one_big_batch(tmp_path, token_files):
    one = Trainer(
        run_config(tmp_path, token_files, max_iters=3, log_interval=1, out_dir=str(tmp_path / "a")), progress=False
    ).run()
    two = Trainer(
        run_config(tmp_path, token_files, max_iters=3, log_interval=1, grad_accum=2, out_dir=str(tmp_path / "b")),
        progress=False,
    ).run()
    la = [r["train_loss"] for r in read_metrics(tmp_path / "a") if "train_loss" in r]
    lb = [r["train_loss"] for r in read_metrics(tmp_path / "b") if "train_loss" in r]
    np.testing.assert_allclose(la, lb, rtol=1e-4)
    assert one["steps"] == two["steps"] == 3


def test_metrics_every_step_and_budget_in_tokens(tmp_path, token_files):
    cfg = run_config(tmp_path, token_files, max_iters=0, max_tokens=8 * 16 * 12 - 5)
    summary = Trainer(cfg, progress=False).run()
    assert summary["steps"] == 12
    rows = read_metrics(cfg.training.out_dir)
    train_rows = [r for r in rows if "train_loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 13))
    assert {"tokens", "time", "lr", "grad_norm", "tokens_per_s", "mfu"} <= set(train_rows[0])
    assert train_rows[-1]["lr"] < train_rows[6]["lr"]  # decaying toward min_lr at the budget
    assert any("valid_loss" in r and "valid_perplexity" in r for r in rows)
    # Seconds in training steps: none before the first step, then growing, never past the wall clock.
    spent = [(r["train_seconds"], r["time"]) for r in rows if "valid_loss" in r]
    assert spent[0][0] == 0.0 and all(0 < t <= wall for t, wall in spent[1:])
    assert [t for t, _ in spent] == sorted(t for t, _ in spent)
    written = load_config(Path(cfg.training.out_dir) / "config.toml")
    assert written.to_dict() == cfg.to_dict()


def time_budget_config(tmp_path, token_files, minutes: float, optimizer: dict | None = None, **training):
    """run_config under a time budget: warm-up and evaluation in shares of the budget, not in steps."""
    raw = {
        "model": tiny_config().to_dict(),
        "optimizer": {"lr": 3e-3, "min_lr": 3e-4, **(optimizer or {})},
        "data": {"train": str(token_files[0]), "valid": str(token_files[1])},
        "training": {"batch_size": 8, "max_minutes": minutes, "eval_iters": 2, "log_interval": 5,
                     "checkpoint_interval": 1000, "out_dir": str(tmp_path / "run"), "device": "cpu", **training},
    }  # fmt: skip
    return build_config(raw)


def test_wall_clock_budget(tmp_path, token_files):
    cfg = time_budget_config(tmp_path, token_files, 0.02)
    start = time.perf_counter()
    summary = Trainer(cfg, progress=False).run()
    assert summary["steps"] > 0 and time.perf_counter() - start < 20
    rows = [r for r in read_metrics(cfg.training.out_dir) if "train_loss" in r]
    peak = max(range(len(rows)), key=lambda i: rows[i]["lr"])
    decay = [r["lr"] for r in rows[peak:]]
    # Past warm-up the rate only falls (how far it gets depends on this machine's speed: the tests below
    # check the schedule itself, on simulated time).
    assert all(b <= a for a, b in zip(decay, decay[1:]))


def test_step_counts_are_refused_under_a_time_budget(tmp_path, token_files):
    for section, key, replacement in (
        ("optimizer", "warmup_iters", "warmup_fraction"),
        ("training", "eval_interval", "evals"),
    ):
        with pytest.raises(ConfigError, match=f"{section}.{key} counts steps.*set {section}.{replacement} instead"):
            time_budget_config(
                tmp_path, token_files, 1.0, **({"optimizer": {key: 10}} if section == "optimizer" else {key: 10})
            )
    with pytest.raises(ConfigError, match="set optimizer.warmup_iters or optimizer.warmup_fraction, not both"):
        build_config({**_raw(tmp_path, token_files), "optimizer": {"warmup_iters": 5, "warmup_fraction": 0.1}})
    cfg = time_budget_config(tmp_path, token_files, 1.0)
    assert (cfg.optimizer.warmup_iters, cfg.optimizer.warmup_fraction) == (None, 0.02)
    assert (cfg.training.eval_interval, cfg.training.evals) == (None, 20)
    cfg = run_config(tmp_path, token_files)
    assert cfg.optimizer.warmup_fraction is None and cfg.training.evals is None


def _raw(tmp_path, token_files) -> dict:
    return {
        "model": tiny_config().to_dict(),
        "data": {"train": str(token_files[0]), "valid": str(token_files[1])},
        "training": {"max_iters": 20, "out_dir": str(tmp_path / "run"), "device": "cpu"},
    }


def test_wall_clock_budget_schedule_on_simulated_time(tmp_path, token_files):
    # Every step takes exactly 0.05 s of simulated time, however loaded the machine: a 1.2 s budget is 24
    # steps; warm-up is the first quarter of the time, then the cosine runs to min_lr with the clock.
    cfg = time_budget_config(tmp_path, token_files, 0.02, optimizer={"warmup_fraction": 0.25}, log_interval=1, evals=6)
    trainer = Trainer(cfg, progress=False)
    trainer.clock = lambda: 0.05 * trainer.iteration
    summary = trainer.run()
    assert summary["steps"] == 24
    rows = read_metrics(cfg.training.out_dir)
    o = cfg.optimizer
    lrs = {r["step"]: r["lr"] for r in rows if "train_loss" in r}
    assert sorted(lrs) == list(range(1, 25))
    for step, lr in lrs.items():
        progress = 0.05 * (step - 1) / 1.2  # the row of step s reports the rate its update used: iteration s - 1
        if progress < 0.25:
            assert lr == pytest.approx(o.lr * progress / 0.25)
        else:
            cosine = (progress - 0.25) / 0.75
            assert lr == pytest.approx(o.min_lr + 0.5 * (1 + math.cos(math.pi * cosine)) * (o.lr - o.min_lr))
    # Six evaluations over the budget, evenly in time (every 4 steps), besides the one at the start.
    assert [r["step"] for r in rows if "valid_loss" in r] == [0, 4, 8, 12, 16, 20, 24]


def test_the_rate_never_turns_back_up_when_later_evaluations_are_quicker(tmp_path, token_files, monkeypatch):
    """Simulated time: a step takes 0.05 s, the first two evaluations 0.3 s each, later ones nothing (the
    first ones pay for warming up). The time kept for the final evaluation is the longest seen, so the
    share of the budget used only grows and, past its peak, the rate only falls."""
    import bpe_lm.train as train_module

    spent = [0.0]
    real_evaluate = train_module.evaluate

    def evaluate_quicker_each_time(*args, **kwargs):
        spent[0] += 0.3 if spent[0] < 0.6 else 0.0
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", evaluate_quicker_each_time)
    cfg = time_budget_config(tmp_path, token_files, 0.05, log_interval=1, evals=10)
    trainer = Trainer(cfg, progress=False)
    trainer.clock = lambda: 0.05 * trainer.iteration + spent[0]
    trainer.run()
    lrs = [r["lr"] for r in read_metrics(cfg.training.out_dir) if "train_loss" in r]
    peak = lrs.index(max(lrs))
    assert len(lrs) > peak + 10
    assert all(b <= a for a, b in zip(lrs[peak:], lrs[peak + 1 :])), lrs


def test_a_slow_machine_keeps_the_schedule_and_the_budget_covers_evaluation(tmp_path, token_files, monkeypatch):
    """A 5-minute budget on a machine where a step takes 20 s and an evaluation 30 s (simulated): the rate
    leaves warm-up and decays to near min_lr, the run evaluates along the way, and the final evaluation
    and checkpoint fit in the budget (time is kept free for them), give or take one step."""
    import bpe_lm.train as train_module

    evaluations = [0]
    real_evaluate = train_module.evaluate

    def slow_evaluate(*args, **kwargs):
        evaluations[0] += 1
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_module, "evaluate", slow_evaluate)
    cfg = time_budget_config(tmp_path, token_files, 5.0, log_interval=1, evals=4)
    trainer = Trainer(cfg, progress=False)
    trainer.clock = lambda: 20.0 * trainer.iteration + 30.0 * evaluations[0]
    summary = trainer.run()
    rows = read_metrics(cfg.training.out_dir)
    lrs = [r["lr"] for r in rows if "train_loss" in r]
    o = cfg.optimizer
    assert 5 <= summary["steps"] <= 12
    assert max(lrs) > 0.8 * o.lr  # warm-up ended (2% of the time: within the first step)
    assert lrs[-1] < o.min_lr + 0.15 * (o.lr - o.min_lr)  # and the cosine ran nearly to its end
    valid_steps = [r["step"] for r in rows if "valid_loss" in r]
    assert len(valid_steps) >= 4 and valid_steps[-1] == summary["steps"]
    assert 300 - 20 <= summary["seconds"] < 300 + 20


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, token_files):
    class Poisoned(Trainer):
        def _forward_backward(self, accum):
            if self.iteration == 12:
                with torch.no_grad():
                    self.model.lm_head.weight.fill_(float("nan"))
            return super()._forward_backward(accum)

    cfg = run_config(tmp_path, token_files, log_interval=1)
    with pytest.raises(TrainingError, match=r"loss became nan at step 13.*step 10"):
        Poisoned(cfg, progress=False).run()
    assert read_checkpoint(Path(cfg.training.out_dir) / "checkpoint.pt")["iteration"] == 10


def test_compile_failure_falls_back_to_eager(tmp_path, token_files, monkeypatch):
    def broken_compile(model, *args, **kwargs):
        def call(*a, **k):
            raise torch._dynamo.exc.TorchDynamoException("no compiler here")

        wrapper = torch.nn.Module()
        wrapper._orig_mod = model
        wrapper.forward = call
        return wrapper

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = run_config(tmp_path, token_files, compile=True, max_iters=4)
    with pytest.warns(UserWarning, match="torch.compile failed at the first step"):
        summary = Trainer(cfg, progress=False).run()
    assert summary["steps"] == 4 and summary["compiled"] is False
    # The eager redo of the first step used the same batch: the run equals one that never compiled.
    eager = run_config(tmp_path / "eager", token_files, max_iters=4)
    Trainer(eager, progress=False).run()
    compiled_losses = [r["train_loss"] for r in read_metrics(cfg.training.out_dir) if "train_loss" in r]
    eager_losses = [r["train_loss"] for r in read_metrics(eager.training.out_dir) if "train_loss" in r]
    assert compiled_losses == eager_losses


def test_compiled_run_raises_errors_that_are_not_compilation_failures(tmp_path, token_files, monkeypatch):
    """Only a compilation error at the first step falls back to eager; a later error is the user's to see."""

    def compile_that_fails_later(model, *args, **kwargs):
        calls = []

        def call(*a, **k):
            calls.append(1)
            if len(calls) == 3:
                raise ValueError("a bug at the third step")
            return model(*a, **k)

        wrapper = torch.nn.Module()
        wrapper._orig_mod = model
        wrapper.forward = call
        return wrapper

    monkeypatch.setattr(torch, "compile", compile_that_fails_later)
    monkeypatch.setattr(optim, "_compiled_adamw_update", optim._adamw_update)  # the optimizer's update, uncompiled
    cfg = run_config(tmp_path, token_files, compile=True, max_iters=6)
    with pytest.raises(ValueError, match="third step"):
        Trainer(cfg, progress=False).run()


def test_data_errors_before_training(tmp_path, token_files):
    with pytest.raises(FileNotFoundError, match="missing.npy: token file not found"):
        Trainer(run_config(tmp_path, (tmp_path / "missing.npy", token_files[1])), progress=False).run()
    np.save(tmp_path / "short.npy", np.arange(10, dtype=np.uint16))
    with pytest.raises(ValueError, match="fewer than model.context_length"):
        Trainer(run_config(tmp_path, (tmp_path / "short.npy", token_files[1])), progress=False).run()
    np.save(tmp_path / "wide.npy", np.full(1000, 64, dtype=np.uint16))
    with pytest.raises(ValueError, match=r"token id 64 at position 0 is outside the model.s vocabulary 0..63"):
        Trainer(run_config(tmp_path, (tmp_path / "wide.npy", token_files[1])), progress=False).run()
    assert not (tmp_path / "run").exists()


def test_config_errors(tmp_path, token_files):
    with pytest.raises(ConfigError, match=r"\[training\]: unknown setting\(s\) batchsize"):
        run_config(tmp_path, token_files, batchsize=3)
    with pytest.raises(ConfigError, match="exactly one budget"):
        run_config(tmp_path, token_files, max_tokens=100)
    with pytest.raises(ConfigError, match="training.batch_size must be an integer"):
        run_config(tmp_path, token_files, batch_size="big")
    path = tmp_path / "run.toml"
    path.write_text(to_toml(run_config(tmp_path, token_files).to_dict()))
    cfg = load_config(path, ["training.batch_size=4", "model.norm=post", "optimizer.betas=[0.8, 0.9]"])
    assert cfg.training.batch_size == 4 and cfg.model.norm == "post" and cfg.optimizer.betas == (0.8, 0.9)
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(path, ["nonsense"])


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = TransformerLM(ModelConfig(vocab_size=50, context_length=32, d_model=64, num_layers=2, num_heads=4))
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    x = torch.randint(0, 50, (4, 33))
    for _ in range(200):
        loss = cross_entropy(model(x[:, :-1]), x[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


# ---------------------------------------------------------------------------------------------------- sampling


def test_cached_and_uncached_greedy_decoding_agree():
    torch.manual_seed(0)
    model = TransformerLM(tiny_config(context_length=24)).eval()
    prompt = [1, 2, 3, 4, 5]
    cached = generate(model, prompt, 40, temperature=0, use_cache=True)  # runs past the context length too
    uncached = generate(model, prompt, 40, temperature=0, use_cache=False)
    assert cached == uncached and len(cached) == 40


def test_sampling_filters_and_eos():
    logits = torch.tensor([[0.0, 5.0, 4.9, -10.0]])
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, 0.0, None, None, g).item() == 1
    draws = {sample_next(logits, 1.0, 2, None, g).item() for _ in range(200)}
    assert draws == {1, 2}
    draws = {sample_next(logits, 1.0, None, 0.5, g).item() for _ in range(200)}
    assert draws == {1}
    model = TransformerLM(tiny_config()).eval()
    first = generate(model, [1], 1, temperature=0)[0]
    assert generate(model, [1], 50, temperature=0, eos_id=first) == [first]


# ---------------------------------------------------------------------------------------------------- commands


def test_train_eval_generate_plot_commands(tmp_path, token_files, capsys, corpus_file):
    assert main(["train-tokenizer", str(corpus_file), "--vocab", "300", "-o", str(tmp_path / "tok"), "--quiet"]) == 0
    from bpe_lm import Tokenizer

    tok = Tokenizer.load(tmp_path / "tok")
    ids = np.array(tok.encode(corpus_file.read_text()), dtype=np.uint16)
    np.save(tmp_path / "t.npy", ids[: len(ids) * 9 // 10])
    np.save(tmp_path / "v.npy", ids[len(ids) * 9 // 10 :])
    config = run_config(tmp_path, (tmp_path / "t.npy", tmp_path / "v.npy")).to_dict()
    config["model"]["vocab_size"] = tok.vocab_size
    (tmp_path / "run.toml").write_text(to_toml(config))
    assert main(["train", "--config", str(tmp_path / "run.toml"), "--set", "training.max_iters=8", "--quiet"]) == 0
    run = config["training"]["out_dir"]
    assert main(["eval", "--run", run, "--data", str(tmp_path / "v.npy"), "--text-bytes", "1000", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # The loss recomputed here without bpe-lm's evaluation code: plain cross-entropy of the logits over every
    # whole non-overlapping window of the file; bits per byte = nats per token × tokens / bytes / ln 2.
    from bpe_lm.checkpoint import load_model

    model, _ = load_model(Path(run) / "checkpoint.pt")
    valid = np.load(tmp_path / "v.npy").astype(np.int64)
    T = model.config.context_length
    n = (len(valid) - 1) // T
    windows = torch.from_numpy(np.stack([valid[i * T : i * T + T + 1] for i in range(n)]))
    with torch.no_grad():
        logits = model(windows[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)).item()
    assert result["loss"] == pytest.approx(loss, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(loss * len(valid) / 1000 / math.log(2), rel=1e-5)
    assert (
        main(
            [
                "generate",
                "--run",
                run,
                "--tokenizer",
                str(tmp_path / "tok"),
                "--prompt",
                "Once upon",
                "--max-tokens",
                "10",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("Once upon")
    assert main(["plot", run, "-o", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert main(["train", "--config", str(tmp_path / "nope.toml")]) == 1
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["INT", "TERM", "HUP"]
)
def test_a_stop_signal_saves_a_checkpoint(tmp_path, token_files, sig, code):
    """Ctrl-C, and what `kill`, `timeout`, Slurm pre-emption, `docker stop` (SIGTERM) and a closed SSH session
    (SIGHUP) send: the step finishes, a checkpoint is saved, and the exit status says which signal it was."""
    cfg = run_config(tmp_path, token_files, max_iters=100_000, checkpoint_interval=100_000, log_interval=1).to_dict()
    (tmp_path / "run.toml").write_text(to_toml(cfg))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bpe_lm", "train", "--config", str(tmp_path / "run.toml"), "--quiet"],
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = Path(cfg["training"]["out_dir"]) / "metrics.jsonl"
    deadline = time.time() + 60
    while not (metrics.exists() and metrics.stat().st_size > 0) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"interrupted by {signal.Signals(sig).name}; saved" in err
    assert read_checkpoint(Path(cfg["training"]["out_dir"]) / "checkpoint.pt")["iteration"] > 0


def test_the_old_module_form_says_how_to_train():
    r = subprocess.run([sys.executable, "-m", "bpe_lm.train", "--config", "x.toml"], capture_output=True, text=True)
    assert r.returncode == 1 and "bpe-lm train --config" in r.stderr and "torchrun" in r.stderr, r.stderr
