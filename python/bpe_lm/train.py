"""The trainer behind `bpe-lm train`: budgeted cosine schedule, gradient accumulation, bf16 autocast,
optional torch.compile and CUDA graphs, per-step metrics without per-step host syncs, fixed-subset
evaluation, atomic checkpoints with exact resume, Ctrl-C that saves, and DDP under torchrun
(`torchrun --nproc_per_node 4 -m bpe_lm train --config run.toml`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bpe_lm._io import atomic_write
from bpe_lm.accounting import account
from bpe_lm.checkpoint import read_checkpoint, restore_rng_states, save_checkpoint
from bpe_lm.config import ConfigError, RunConfig, to_toml
from bpe_lm.data import WindowSampler
from bpe_lm.errors import BpeLmError
from bpe_lm.evaluation import evaluate
from bpe_lm.metrics import MetricsLog
from bpe_lm.model import TransformerLM
from bpe_lm.optim import AdamW, Muon, clip_grad_norm, cosine_lr, param_groups_for
from bpe_lm.run_files import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    RUN_CONFIG_HEADER,
    check_resumed_tokenizer,
    check_run_dir,
    copy_tokenizer,
    drop_set_aside,
    lock_run_dir,
    restore_set_aside,
    set_aside,
)
from bpe_lm.runtime import (
    Dist,
    autocast,
    init_distributed,
    model_flops_utilization,
    peak_flops,
    resolve_autocast_dtype,
    resolve_device,
)
from bpe_lm.sources import Source, document_starts, open_run_sources

EVAL_SEED_OFFSET = 1_000_003  # the validation subset's sampler seed, apart from the training sampler's


class TrainingError(BpeLmError, RuntimeError):
    """Training cannot go on (non-finite loss, out of memory, bad data): the message says what to do."""


# ----------------------------------------------------------------------------------------------------
# The trainer


# The signals that ask a run to stop: Ctrl-C, and what `kill`, `timeout`, Slurm pre-emption, `docker stop`
# (SIGTERM) and a closed terminal or SSH session (SIGHUP) send.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class _StopFlag:
    """The first stop signal asks the loop to stop after the current step (and save); a second one
    interrupts at once. `signum` is the first one received."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading_main():
            for s in STOP_SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint (send it again to abort without saving)",
            file=sys.stderr,
        )

    def __exit__(self, *exc: object) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)


def threading_main() -> bool:
    return threading.current_thread() is threading.main_thread()


class Trainer:
    def __init__(self, cfg: RunConfig, *, resume: bool = False, force: bool = False, progress: bool = True) -> None:
        self.cfg = cfg
        self.resume = resume
        self.force = force
        # Seconds on a monotonic clock: what time budgets, throughput and `elapsed` are measured with. Tests
        # replace it to run a budget on simulated time, whatever the machine's load.
        self.clock: Callable[[], float] = time.perf_counter
        self._lock_fd: int | None = None  # the run directory's lock, held while running
        self._set_aside: list[tuple[Path, Path]] = []  # (earlier run's file, where it waits) under --force
        self._saved = False  # whether this run has saved a checkpoint
        self.show_progress = progress
        self.dist, device_name = init_distributed(cfg.training.device)
        self.device = resolve_device(device_name)
        self.autocast_dtype = resolve_autocast_dtype(cfg.training.dtype, self.device)
        self.run_dir = Path(cfg.training.out_dir)
        self.checkpoint_path = self.run_dir / CHECKPOINT_NAME
        t = cfg.training
        if t.batch_size % (self.dist.world_size * t.grad_accum):
            raise ConfigError(
                f"training.batch_size ({t.batch_size}) must be divisible by processes × grad_accum ({self.dist.world_size} × {t.grad_accum})"
            )
        self.micro_batch = t.batch_size // (self.dist.world_size * t.grad_accum)
        # Under a time budget: seconds kept free at the end for the final evaluation and checkpoint, as long
        # as the latest ones took (on rank 0's clock, agreed by all ranks), so the budget covers them.
        self.reserve = 0.0
        self.tokens_per_step = t.batch_size * cfg.model.context_length

    # -- setup

    def _load_data(self) -> None:
        self.train_sources, self.valid_sources = open_run_sources(self.cfg)
        ctx = self.cfg.model.context_length
        d = self.cfg.data

        def starts(sources: list[Source]) -> list[np.ndarray] | None:
            if d.align != "document":
                return None
            assert d.end_of_text_id is not None  # config.validate fills it in
            return [document_starts(a, p, d.end_of_text_id) for s in sources for a, p in zip(s.arrays, s.paths)]

        self.train_sampler = WindowSampler(
            [s.arrays for s in self.train_sources], ctx, d.train_weights, starts(self.train_sources)
        )
        self.valid_samplers = [WindowSampler([s.arrays], ctx, starts=starts([s])) for s in self.valid_sources]
        # Tokens drawn from each train source so far (all processes' rows: each draws the whole batch).
        self.tokens_by_source = [0] * len(self.train_sources)

    def total_iters(self) -> int | None:
        t = self.cfg.training
        if t.max_iters:
            return t.max_iters
        if t.max_tokens:
            return math.ceil(t.max_tokens / self.tokens_per_step)
        return None  # a wall-clock budget

    def progress(self, it: int, elapsed: float) -> float:
        """The share of the budget used, in the budget's own unit: steps (tokens are whole steps), or seconds
        of the time left for training once the final evaluation and checkpoint are set aside."""
        total = self.total_iters()
        if total is not None:
            return min(it / total, 1.0)
        usable = max(self.cfg.training.max_minutes * 60 - self.reserve, 1e-9)
        return min(max(elapsed / usable, 0.0), 1.0)

    def lr_at(self, it: int, elapsed: float) -> float:
        """Linear warm-up, then cosine to min_lr exactly at the budget: counted in steps (warmup_iters), or
        in the budget's own unit (warmup_fraction), so a time budget keeps its shape however few steps a
        slow machine makes."""
        o = self.cfg.optimizer
        if o.warmup_fraction is not None:
            return cosine_lr(self.progress(it, elapsed), o.lr, o.min_lr, o.warmup_fraction, 1.0)
        total = self.total_iters()
        assert total is not None and o.warmup_iters is not None  # config.validate: steps only with a step budget
        return cosine_lr(it, o.lr, o.min_lr, o.warmup_iters, total)

    def budget_reached(self, it: int, elapsed: float) -> bool:
        total = self.total_iters()
        if total is not None:
            return it >= total
        return elapsed + self.reserve >= self.cfg.training.max_minutes * 60

    def evaluation_due(self, it: int, elapsed: float, done_before: int) -> bool:
        """Whether step `it` evaluates: every eval_interval steps, or at each new 1/evals of the budget.
        `done_before` is the 1/evals share of the budget reached at the last evaluation (`evals_reached`)."""
        t = self.cfg.training
        if t.evals is None:
            assert t.eval_interval is not None
            return it % t.eval_interval == 0
        return self.evals_reached(it, elapsed) > done_before

    def evals_reached(self, it: int, elapsed: float) -> int:
        evals = self.cfg.training.evals or 1
        return min(math.floor(self.progress(it, elapsed) * evals + 1e-9), evals)

    def _build(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.training.seed)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.model = TransformerLM(cfg.model, device=self.device)
        if cfg.training.float8:
            from bpe_lm.float8 import float8_unsupported

            why = float8_unsupported(self.device)
            if why is not None:
                raise ConfigError(f"training.float8: {why}; set training.float8 = false")
            self.model.enable_float8(self.device)
        o = cfg.optimizer
        t = cfg.training
        adamw: dict[str, Any] = dict(betas=o.betas, eps=o.eps, weight_decay=o.weight_decay, compiled=t.compile)
        if o.name == "muon":
            groups = param_groups_for(self.model, o.lr, o.muon_lr, o.head_lr)
            self.optimizer: AdamW = Muon(groups, lr=o.lr, momentum=o.muon_momentum, **adamw)
        elif o.head_lr:
            groups = [g for g in param_groups_for(self.model, o.lr, o.lr, o.head_lr) if g["params"]]
            self.optimizer = AdamW(groups, lr=o.lr, **adamw)
        else:
            self.optimizer = AdamW(self.model.parameters(), lr=o.lr, **adamw)
        # Every process draws the same global batch starts and reads its own rows.
        self.generator = torch.Generator().manual_seed(t.seed)
        self.iteration = 0
        self.tokens_seen = 0
        self.elapsed_before = 0.0
        self.train_seconds_before = 0.0
        if self.resume:
            self._restore()
        self.step_model: Any = self.model  # the module as called: maybe wrapped by DDP and torch.compile
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.step_model = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.compiled = t.compile
        self._compile_checked = False
        # CUDA graphs only exist on CUDA; elsewhere "reduce-overhead" would compile the same kernels.
        self.cuda_graphs = t.cuda_graphs and self.device.type == "cuda"
        if t.compile:
            # Compilation itself happens at the first step; `_train_step` falls back to eager if it fails.
            self.step_model = torch.compile(self.step_model, mode="reduce-overhead" if self.cuda_graphs else None)

    def _restore(self) -> None:
        if not self.checkpoint_path.is_file():
            raise ConfigError(f"--resume: no checkpoint at {self.checkpoint_path}")
        # Read onto the CPU: the RNG states must be CPU tensors, and load_state_dict copies the weights and the
        # optimizer state to the parameters' device.
        state = read_checkpoint(self.checkpoint_path, map_location="cpu")
        saved = state.get("config")
        if saved is not None and saved != self.cfg.model.to_dict():
            diff = [k for k in saved if saved.get(k) != self.cfg.model.to_dict().get(k)]
            raise ConfigError(f"--resume: the checkpoint's model differs from the config in {', '.join(diff)}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration = int(state["iteration"])
        self.tokens_seen = int(state.get("tokens_seen", 0))
        drawn = state.get("tokens_by_source")
        names = [s.name for s in self.train_sources]
        if isinstance(drawn, dict) and sorted(drawn) == sorted(names):
            self.tokens_by_source = [int(drawn[n]) for n in names]
        elif isinstance(drawn, dict) and len(drawn) == len(names) == 1:  # one source, spelt otherwise now
            self.tokens_by_source = [int(next(iter(drawn.values())))]
        elif drawn is not None or len(names) > 1:
            raise ConfigError(
                f"--resume: the checkpoint drew from the train sources {sorted(drawn or {}) or '(one file)'}, the config "
                f"names {names}: continue with the data.train the run started with"
            )
        else:
            self.tokens_by_source = [self.tokens_seen]
        self.elapsed_before = float(state.get("elapsed", 0.0))
        # Checkpoints from before train_seconds existed: their elapsed time, evaluations included.
        self.train_seconds_before = float(state.get("train_seconds", self.elapsed_before))
        self.generator.set_state(state["data_generator"])
        restore_rng_states(state.get("rng", {}))

    def _save(self, generator_state: torch.Tensor, elapsed: float, train_seconds: float) -> None:
        if not self.dist.is_main:
            return
        save_checkpoint(
            self.model,
            self.optimizer,
            self.iteration,
            self.checkpoint_path,
            tokens_seen=self.tokens_seen,
            tokens_by_source=self._drawn(),
            elapsed=elapsed,
            train_seconds=train_seconds,
            data_generator=generator_state,
            run_config=json.dumps(self.cfg.to_dict()),
        )
        self._saved = True
        drop_set_aside(self._set_aside)
        self._set_aside = []

    def _drawn(self) -> dict[str, int]:
        return {s.name: n for s, n in zip(self.train_sources, self.tokens_by_source)}

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This process's rows of the next global micro-batch."""
        x, y, source = self.train_sampler.draw(self.micro_batch * self.dist.world_size, "cpu", self.generator)
        ctx = self.cfg.model.context_length
        for i, rows_drawn in enumerate(torch.bincount(source, minlength=len(self.tokens_by_source)).tolist()):
            self.tokens_by_source[i] += rows_drawn * ctx
        rows = slice(self.dist.rank * self.micro_batch, (self.dist.rank + 1) * self.micro_batch)
        x, y = x[rows], y[rows]
        if self.device.type == "cuda":
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    # -- the loop

    def _check_run_dir(self) -> None:
        data = self.cfg.data
        check_run_dir(
            self.run_dir, resume=self.resume, force=self.force, source=self.cfg.source, tokenizer=data.tokenizer
        )
        if self.resume:
            check_resumed_tokenizer(self.run_dir, data.tokenizer_sha256, data.tokenizer)

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            self._restore_set_aside()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = None

    def _restore_set_aside(self) -> None:
        if self._saved or not self._set_aside:
            return
        restore_set_aside(self._set_aside)
        self._set_aside = []
        print(
            f"the earlier run's files in {self.run_dir} are back in place (this run saved no checkpoint)",
            file=sys.stderr,
        )

    def _lock_run_dir(self) -> None:
        if self.dist.is_main and self._lock_fd is None:
            self._lock_fd = lock_run_dir(self.run_dir)

    def _run(self) -> dict[str, Any]:
        cfg, t = self.cfg, self.cfg.training
        if self.run_dir.is_dir():  # a directory of its own is made only once the inputs have been checked
            self._lock_run_dir()
        self._check_run_dir()
        self._load_data()
        with out_of_memory_named(
            f"out of {self.device.type.upper()} memory building the model and optimizer "
            f"({account(cfg.model).total_parameters / 1e6:,.0f}M parameters): lower model.vocab_size, d_model or num_layers"
        ):
            self._build()
        if self.dist.is_main:
            self._lock_run_dir()
            self._check_run_dir()  # again, under the lock: another run may have started meanwhile
            atomic_write(self.run_dir / CONFIG_NAME, RUN_CONFIG_HEADER + to_toml(cfg.to_dict()))
        if self.force and self.dist.is_main:
            self._set_aside = set_aside(self.run_dir)
        if self.dist.is_main and cfg.data.tokenizer:
            copy_tokenizer(cfg.data.tokenizer, self.run_dir)
        log = MetricsLog(self.run_dir, cfg, self.dist.is_main, self.resume, self.iteration)
        peak = peak_flops(self.device, self.autocast_dtype)
        flops_per_token = account(cfg.model).training_flops_per_token
        total = self.total_iters()
        bar = None
        if self.show_progress and self.dist.is_main:
            from tqdm.auto import tqdm

            if total is not None:
                bar = tqdm(total=total, initial=self.iteration, unit="step", desc="training", dynamic_ncols=True)
            else:  # a wall-clock budget: minutes of training done out of the budget, and the time left
                bar = tqdm(total=round(t.max_minutes, 2), initial=round(self.elapsed_before / 60, 2), desc="training", dynamic_ncols=True,
                           bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} min [{remaining} left{postfix}]")  # fmt: skip
        pending: list[tuple[int, int, float, torch.Tensor, float, torch.Tensor]] = []
        drawn_at: dict[int, dict[str, int]] = {}  # tokens_by_source after each pending step
        last_flush = (self.clock(), self.tokens_seen)
        start = self.clock()
        generator_state = self.generator.get_state()
        last_good = (self.iteration, generator_state, self.elapsed_before)
        summary: dict[str, Any] = {}
        throughput = [0, 0.0]  # tokens trained and seconds spent in training steps (not evaluating or saving)
        params = [p for p in self.model.parameters()]
        interrupted = False

        def flush() -> None:
            """Reads the pending per-step values (one host sync) and writes their rows."""
            nonlocal last_flush
            if not pending:
                return
            losses = torch.stack([p[3] for p in pending])
            norms = torch.stack([p[5] for p in pending])
            if self.dist.enabled:
                import torch.distributed as dist

                dist.all_reduce(losses)  # SUM: gloo has no AVG
                losses /= self.dist.world_size
            losses_l, norms_l = losses.float().tolist(), norms.float().tolist()
            now = self.clock()
            tokens_per_s = (pending[-1][1] - last_flush[1]) / max(now - last_flush[0], 1e-9)
            throughput[0] += pending[-1][1] - last_flush[1]
            throughput[1] += now - last_flush[0]
            rows = []
            for (step, tokens, wall, _, lr, _), loss, norm in zip(pending, losses_l, norms_l):
                if not math.isfinite(loss):
                    where = (
                        f"the last good checkpoint is {self.checkpoint_path} (step {last_good[0]})"
                        if self._saved or self.checkpoint_path.exists() and not self._set_aside
                        else "this run saved no checkpoint"
                    )
                    raise TrainingError(
                        f"loss became {loss} at step {step}; {where}. Try a lower optimizer.lr, or a smaller optimizer.grad_clip."
                    )
                mfu = model_flops_utilization(tokens_per_s, flops_per_token, peak, self.dist.world_size)
                rows.append(
                    {
                        "step": step,
                        "tokens": tokens,
                        "time": round(wall, 3),
                        "train_loss": loss,
                        "lr": lr,
                        "grad_norm": norm,
                        "tokens_per_s": round(tokens_per_s, 1),
                        "mfu": round(mfu, 4) if mfu is not None else None,
                        "tokens_by_source": drawn_at.get(step, {}),
                    }
                )
            log.write(rows)
            summary["train_loss"] = losses_l[-1]
            summary["tokens_per_s"] = throughput[0] / max(throughput[1], 1e-9)  # the run's average, steps only
            if bar is not None:
                bar.set_postfix(loss=f"{losses_l[-1]:.3f}", tok_s=f"{tokens_per_s:,.0f}")
            pending.clear()
            drawn_at.clear()
            last_flush = (now, self.tokens_seen)

        def run_eval(elapsed: float) -> None:
            # The eager module: evaluation is rare, and needs neither compilation for eval mode nor DDP.
            losses = [
                evaluate(
                    self.model,
                    sampler,
                    cfg.model,
                    max(self.micro_batch, 1),
                    t.eval_iters,
                    self.device,
                    self.autocast_dtype,
                    t.seed + EVAL_SEED_OFFSET,
                )
                for sampler in self.valid_samplers
            ]
            sizes = [s.tokens for s in self.valid_sources]
            loss = sum(x * n for x, n in zip(losses, sizes)) / sum(sizes)  # token-weighted over the sources
            row: dict[str, Any] = {
                "step": self.iteration,
                "tokens": self.tokens_seen,
                "time": round(elapsed, 3),
                # Seconds spent in training steps (compilation included; evaluations and saves not): the
                # clock of time-to-loss comparisons, as speedruns keep it.
                "train_seconds": round(self.train_seconds_before + throughput[1], 3),
                "valid_loss": loss,
                "valid_perplexity": math.exp(min(loss, 50)),
            }
            if len(losses) > 1:
                row["valid_loss_by_source"] = {s.name: x for s, x in zip(self.valid_sources, losses)}
                summary["valid_loss_by_source"] = row["valid_loss_by_source"]
            log.write([row])
            summary["valid_loss"] = loss
            if bar is not None:
                shown = {"loss": f"{summary['train_loss']:.3f}"} if "train_loss" in summary else {}
                bar.set_postfix(**shown, valid=f"{loss:.3f}")

        stop_signal: int | None = None
        step_advice = (
            f"out of {self.device.type.upper()} memory with {self.micro_batch} sequences of {cfg.model.context_length} tokens per micro-step: lower "
            f"training.batch_size, or raise training.grad_accum (same tokens per step, less memory), or lower model.context_length"
        )
        try:
            with _StopFlag() as stop, out_of_memory_named(step_advice):
                timed = t.max_minutes > 0
                # The longest evaluation and checkpoint so far, kept for the final ones: the reserve only
                # grows, so the share of a time budget used (and past warm-up the learning rate's fall)
                # never turns back when a later evaluation happens to be quicker than the first.
                eval_seconds = save_seconds = 0.0
                if self.iteration == 0:
                    began = self.clock()
                    run_eval(0.0)  # the starting point of the validation curve
                    eval_seconds = self.clock() - began
                    last_flush = (self.clock(), self.tokens_seen)
                self.step_model.train()
                clock = _RunClock(
                    self.dist, self.device, start, self.elapsed_before, agree_every=t.log_interval, clock=self.clock
                )
                elapsed = self.elapsed_before
                evals_done = self.evals_reached(self.iteration, elapsed)
                while not self.budget_reached(self.iteration, elapsed):
                    lr = self.lr_at(self.iteration, elapsed)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr * group.get("lr_scale", 1.0)
                    step_loss, norm = self._train_step(params)
                    self.iteration += 1
                    self.tokens_seen += self.tokens_per_step
                    # The ranks of a DDP run agree on the time, the reserve and a Ctrl-C every log_interval steps.
                    elapsed, stopping, reserve = clock.read(
                        self.iteration, stop.requested, eval_seconds + save_seconds if timed else 0.0
                    )
                    self.reserve = reserve
                    pending.append((self.iteration, self.tokens_seen, elapsed, step_loss, lr, norm))
                    drawn_at[self.iteration] = self._drawn()
                    if bar is not None:
                        bar.update(
                            1 if total is not None else max(round(min(elapsed / 60, t.max_minutes), 2) - bar.n, 0)
                        )
                    done = self.budget_reached(self.iteration, elapsed) or stopping
                    if self.iteration % t.log_interval == 0 or done:
                        flush()
                    if self.evaluation_due(self.iteration, elapsed, evals_done) or done:
                        flush()
                        began = self.clock()
                        run_eval(elapsed)
                        eval_seconds = max(eval_seconds, self.clock() - began)
                        evals_done = self.evals_reached(self.iteration, elapsed)
                    if self.iteration % t.checkpoint_interval == 0 or done:
                        flush()
                        generator_state = self.generator.get_state()
                        began = self.clock()
                        self._save(generator_state, elapsed, self.train_seconds_before + throughput[1])
                        save_seconds = max(save_seconds, self.clock() - began)
                        last_good = (self.iteration, generator_state, elapsed)
                    if last_flush[1] == self.tokens_seen:
                        # Throughput is measured over training steps only, not evaluation or saving.
                        last_flush = (self.clock(), self.tokens_seen)
                    if stopping:
                        interrupted = True
                        stop_signal = stop.signum
                        break
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            if bar is not None:
                bar.close()
            log.close()
            if self.dist.enabled:
                # Not after an exception: a barrier would wait for ranks that may never arrive.
                self._leave_process_group(together=sys.exc_info()[0] is None)
        summary.update(
            steps=self.iteration,
            tokens=self.tokens_seen,
            tokens_by_source=self._drawn(),
            seconds=self.elapsed_before + self.clock() - start,
            session_seconds=self.clock() - start,  # this process's part (a resumed run's earlier part excluded)
            interrupted=interrupted,
            signal=stop_signal,
            checkpoint=str(self.checkpoint_path),
            compiled=self.compiled,
            device=str(self.device),
        )
        return summary

    def _leave_process_group(self, together: bool) -> None:
        """Tears the process group down while the interpreter is whole. DDP's reducer holds the group (and
        gloo's worker threads) past `destroy_process_group`, which only drops the registry's reference; left
        to interpreter exit, a rank can abort ("terminate called without an active exception", SIGABRT)
        depending on which rank finishes first. So: wait for every rank (rank 0 may still be saving), drop
        the DDP wrapper and collect it, then destroy the group."""
        import gc

        import torch.distributed as dist

        if together:
            dist.barrier()
        self.step_model = self.model
        gc.collect()
        dist.destroy_process_group()

    def _train_step(self, params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; returns (mean loss, gradient norm before clipping) as tensors, not read, so
        the host never waits for the device inside a step."""
        if self.compiled and not self._compile_checked:
            # Compilation runs at the first step. If it fails (no C compiler, an unsupported op...), redo
            # that step eagerly on the same batch; any later error, or a non-compilation one, is raised.
            sampler, drawn = self.generator.get_state(), list(self.tokens_by_source)
            try:
                result = self._step_once(params)
            except torch._dynamo.exc.TorchDynamoException as e:
                warnings.warn(
                    f"torch.compile failed at the first step ({type(e).__name__}: {e}); training without compilation",
                    stacklevel=2,
                )
                self.compiled = self.cuda_graphs = False
                self.step_model = getattr(self.step_model, "_orig_mod", self.step_model)
                self.optimizer.compiled = False
                self.optimizer.zero_grad(set_to_none=True)
                self.generator.set_state(sampler)
                self.tokens_by_source = drawn  # the step is drawn again
                result = self._step_once(params)
            self._compile_checked = True
            return result
        return self._step_once(params)

    def _step_once(self, params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        loss = self._forward_backward(self.cfg.training.grad_accum)
        clip = self.cfg.optimizer.grad_clip
        norm = clip_grad_norm(params, clip) if clip > 0 else _grad_norm(params)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, norm

    def _forward_backward(self, accum: int) -> torch.Tensor:
        """Forward and backward over `accum` micro-batches; returns the mean loss (a tensor, not read)."""
        total = torch.zeros((), device=self.device)
        for micro in range(accum):
            x, y = self._batch()
            sync = (
                contextlib.nullcontext() if (not self.dist.enabled or micro == accum - 1) else self.step_model.no_sync()
            )
            with sync:
                if self.cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()  # each micro-step is a new replay of the graphs
                with autocast(self.device, self.autocast_dtype):
                    loss = self.step_model(x, targets=y)  # the loss is computed inside the (compiled) model
                (loss / accum).backward()
            total += loss.detach().float()  # read before the next replay can reuse the graph's output memory
        return total / accum


class _RunClock:
    """Seconds of training so far, and whether a Ctrl-C asks to stop.

    One process reads its own clock and flag at every step. Under DDP, each rank's clock and Ctrl-C are its
    own, yet all ranks must use the same learning rate and stop at the same step (a rank that stops alone
    leaves the others waiting in all_reduce forever). So every `agree_every` steps the ranks exchange
    [stop requested anywhere, rank 0's clock] in one all_reduce (one host sync, where metrics are read
    anyway); between agreements elapsed time is extrapolated from the agreed seconds per step, the same
    arithmetic on every rank, and a Ctrl-C waits for the next agreement."""

    def __init__(
        self,
        dist_info: Dist,
        device: torch.device,
        start: float,
        elapsed_before: float,
        agree_every: int,
        clock: Callable[[], float],
    ) -> None:
        self.dist, self.start, self.elapsed_before, self.every = dist_info, start, elapsed_before, max(agree_every, 1)
        self.clock = clock
        self.device = (
            device if device.type == "cuda" else torch.device("cpu")
        )  # NCCL reduces CUDA tensors, gloo CPU ones
        self.agreed: tuple[int, float] | None = None  # (iteration, elapsed) at the last agreement
        self.seconds_per_step = 0.0
        self.agreed_reserve = 0.0

    def local(self) -> float:
        return self.elapsed_before + self.clock() - self.start

    def read(self, iteration: int, stop_requested: bool, reserve: float = 0.0) -> tuple[float, bool, float]:
        """(elapsed seconds, whether to stop, the reserve), the same on every rank: rank 0's clock and
        reserve, any rank's stop request."""
        if not self.dist.enabled:
            return self.local(), stop_requested, reserve
        if self.agreed is None or iteration % self.every == 0:
            import torch.distributed as dist

            main = self.dist.is_main
            agreed = torch.tensor(
                [float(stop_requested), self.local() if main else 0.0, reserve if main else 0.0],
                dtype=torch.float64,
                device=self.device,
            )
            dist.all_reduce(agreed)  # SUM: the stop flags add up; only rank 0 contributes a clock and reserve
            stop, elapsed, self.agreed_reserve = (
                bool(agreed[0].item() > 0),
                float(agreed[1].item()),
                float(agreed[2].item()),
            )
            if self.agreed is not None and iteration > self.agreed[0]:
                self.seconds_per_step = (elapsed - self.agreed[1]) / (iteration - self.agreed[0])
            self.agreed = (iteration, elapsed)
            return elapsed, stop, self.agreed_reserve
        return self.agreed[1] + (iteration - self.agreed[0]) * self.seconds_per_step, False, self.agreed_reserve


def _grad_norm(params: Sequence[torch.Tensor]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))) if grads else torch.tensor(0.0)


@contextlib.contextmanager
def out_of_memory_named(advice: str):
    """A failed allocation inside (on any device) becomes a TrainingError saying `advice`; other errors pass."""
    try:
        yield
    except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        raise TrainingError(advice) from None


def is_out_of_memory(e: BaseException) -> bool:
    """A failed allocation: CUDA's OutOfMemoryError, Python's MemoryError, or the RuntimeError in which
    torch's CPU allocator reports one."""
    if isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(e, RuntimeError) and ("can't allocate memory" in str(e) or "not enough memory" in str(e))


def train(cfg: RunConfig, *, resume: bool = False, force: bool = False, progress: bool = True) -> dict[str, Any]:
    return Trainer(cfg, resume=resume, force=force, progress=progress).run()


if __name__ == "__main__":  # `python -m bpe_lm.train`, the old torchrun form: say how it runs now
    print(
        "bpe_lm.train is a library module; train with `bpe-lm train --config run.toml`, or on N GPUs with "
        "`torchrun --nproc_per_node N -m bpe_lm train --config run.toml`",
        file=sys.stderr,
    )
    sys.exit(1)
