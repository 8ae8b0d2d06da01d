"""Training-step throughput as a 2 × 2 ablation: (bpe-lm's model | a plain-PyTorch model of the same
architecture) × (bpe-lm's AdamW | torch.optim.AdamW, fused where torch has the kernel), so every ratio can
be attributed to the model side or the optimizer side.

Equal work in every arm: the same initial weights, the same batches, dtype and compile setting; the loss is
computed inside the model's forward on both sides (ours: the fused chunked linear + cross-entropy; plain:
nn.Linear head + F.cross_entropy), so with --compile it sits inside the compiled graph on both sides. Each
arm's first-step loss is cross-checked against the others before anything is timed. Prints tokens/s, MFU
(where the device's peak is known), peak device memory, and each arm's speed relative to plain + torch.

    pip install ".[lm]"
    python benches/train_throughput.py                                   # CPU: the small config, eager
    python benches/train_throughput.py --quick                           # 3 timed steps, one round
    python benches/train_throughput.py --compile                         # CUDA: tinystories-17m:128, gpt2-small:32
    python benches/train_throughput.py --compile --cuda-graphs --check-sync --config tinystories-17m:128
    python benches/train_throughput.py --compile --profile gpu-profile.md   # + where each step's time goes

`--profile FILE` then runs 5 more steps of bpe-lm and of plain + torch under torch.profiler, with the models
already compiled, and writes per config a Markdown table of the kernels by device time per step (CUDA; the
CPU's operators elsewhere) and their share by kind (matrix multiplies, attention, compiled fused kernels,
optimizer, copies, other), to FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

import torch

from bpe_lm.accounting import PRESETS, account
from bpe_lm.baseline import PlainTransformerLM
from bpe_lm.float8 import float8_unsupported
from bpe_lm.model import ModelConfig, TransformerLM
from bpe_lm.optim import AdamW, clip_grad_norm
from bpe_lm.runtime import model_flops_utilization, peak_flops, resolve_autocast_dtype, resolve_device

CONFIGS = {
    "cpu-small": dict(vocab_size=4096, context_length=128, num_layers=4, d_model=128, num_heads=4, d_ff=344),
    **PRESETS,
}
ARMS = [("bpe-lm", "bpe-lm"), ("bpe-lm", "torch"), ("plain", "bpe-lm"), ("plain", "torch")]


def parse_config(text: str) -> tuple[str, int | None]:
    name, _, batch = text.partition(":")
    if name not in CONFIGS:
        raise argparse.ArgumentTypeError(f"unknown config {name!r} (known: {', '.join(sorted(CONFIGS))})")
    return name, int(batch) if batch else None


def make_optimizer(kind: str, model: torch.nn.Module, compiled: bool, on_cuda: bool):
    """(optimizer, clip function) of one arm; the same hyperparameters on both sides."""
    if kind == "bpe-lm":
        return AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, compiled=compiled), clip_grad_norm
    try:  # torch's fused kernel: CUDA always, CPU in recent releases
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
    except RuntimeError:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1, foreach=True)
    return opt, lambda params, limit: torch.nn.utils.clip_grad_norm_(params, limit, foreach=True)


def make_step(model, optimizer, clip_fn, autocast_dtype, device, cuda_graphs: bool):
    params = [p for p in model.parameters()]

    def step(x, y):
        if cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        with ctx:
            loss = model(x, targets=y)
        loss.backward()
        clip_fn(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach().clone()

    return step


def time_steps(step, batches, warmup: int, device, check_sync: bool) -> tuple[float, float, float]:
    """Seconds for the timed steps (after `warmup` untimed ones), the first step's loss, and that first step's
    seconds (where compilation happens, if the arm has anything left to compile)."""
    began = time.perf_counter()
    first = step(*batches[0]).item()
    first_seconds = time.perf_counter() - began
    for x, y in batches[1:warmup]:
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
        if check_sync:
            torch.cuda.set_sync_debug_mode("error")  # any host sync inside a step raises
    start = time.perf_counter()
    for x, y in batches[warmup:]:
        last = step(x, y)
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("default")
    last.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, first, first_seconds


# What a kernel is, from its name (first match wins): the profile's summary by kind.
KERNEL_KINDS = [
    ("attention", ("flash", "fmha", "attention", "attn")),
    ("optimizer", ("adam", "foreach", "multi_tensor", "muon", "newton")),
    (
        "matrix multiply",
        ("gemm", "matmul", "aten::mm", "aten::bmm", "addmm", "cutlass", "sm90_", "sm80_", "nvjet", "cublas"),
    ),
    ("compiled fused kernels", ("triton_", "cpp_fused", "compiledfxgraph")),
    ("copies and casts", ("copy", "memcpy", "memset", "cast", "fill")),
]


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, marks in KERNEL_KINDS if any(m in low for m in marks)), "other")


def profile_markdown(title: str, step, batches, device, steps: int = 5, top: int = 15) -> str:
    """Markdown: `steps` profiled steps (after 3 more warm-up ones) of `step`, the time per step by kind
    and the `top` kernels by device time (self time of CPU operators where there is no CUDA)."""
    from torch.profiler import ProfilerActivity, profile

    on_cuda = device.type == "cuda"
    batches = [batches[i % len(batches)] for i in range(3 + steps)]  # the timing's batches, reused
    for x, y in batches[:3]:
        step(x, y)
    if on_cuda:
        torch.cuda.synchronize()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities) as prof:
        for x, y in batches[3 : 3 + steps]:
            step(x, y)
        if on_cuda:
            torch.cuda.synchronize()
    events = prof.key_averages()
    if on_cuda:
        kernels = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
        us = lambda e: e.self_device_time_total  # noqa: E731
    else:
        kernels = [e for e in events if e.key.startswith(("aten::", "## Call CompiledFxGraph", "cpp_fused"))]
        us = lambda e: e.self_cpu_time_total  # noqa: E731
    kernels = [e for e in kernels if us(e) > 0]
    total = sum(us(e) for e in kernels) or 1.0
    by_kind: dict[str, float] = {}
    for e in kernels:
        by_kind[kernel_kind(e.key)] = by_kind.get(kernel_kind(e.key), 0.0) + us(e)
    lines = [f"#### {title}", "", f"{'GPU kernel' if on_cuda else 'CPU operator'} time per step: "
             f"{total / steps / 1e3:.2f} ms, {sum(e.count for e in kernels) / steps:.0f} {'launches' if on_cuda else 'operator calls'} per step", "",
             "| kind | ms per step | share |", "|---|---|---|"]  # fmt: skip
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {kind} | {t / steps / 1e3:.2f} | {100 * t / total:.1f}% |")
    lines += ["", "| kernel | kind | calls per step | ms per step | share |", "|---|---|---|---|---|"]
    for e in sorted(kernels, key=us, reverse=True)[:top]:
        name = e.key.replace("|", "\\|")
        name = name if len(name) <= 90 else name[:87] + "..."
        lines.append(f"| `{name}` | {kernel_kind(e.key)} | {e.count / steps:g} | {us(e) / steps / 1e3:.3f} | {100 * us(e) / total:.1f}% |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", type=parse_config, metavar="NAME[:BATCH]",
                    help=f"one of {', '.join(sorted(CONFIGS))}, optionally with its batch size; "
                    "default: cpu-small:16 (CPU) or tinystories-17m:128 and gpt2-small:32 (CUDA)")  # fmt: skip
    ap.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="batch size for configs given without one (default: 16 CPU, 64 CUDA)",
    )
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 CPU, 50 CUDA)")
    ap.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first, compilation included (default: 3 CPU, 15 CUDA)"
    )
    ap.add_argument("--repeat", type=int, default=2, help="alternating rounds over the arms; the best is kept")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--compile", action="store_true", help="torch.compile both models (and bpe-lm's AdamW update)")
    ap.add_argument(
        "--cuda-graphs", action="store_true", help="with --compile: mode reduce-overhead (CUDA graphs) for both models"
    )
    ap.add_argument("--float8", action="store_true", help="bpe-lm's layers' projections in float8 (training.float8)")
    ap.add_argument("--check-sync", action="store_true", help="CUDA: fail if a timed step synchronises with the host")
    ap.add_argument("--quick", action="store_true", help="3 timed steps after 1 untimed, one round")
    ap.add_argument("--profile", type=Path, default=None, metavar="FILE",
                    help="then profile bpe-lm and plain + torch, kernels per step, to this Markdown file")  # fmt: skip
    args = ap.parse_args()
    if args.quick:
        args.steps, args.warmup, args.repeat = args.steps or 3, args.warmup or 1, 1
    if args.cuda_graphs and not args.compile:
        ap.error("--cuda-graphs needs --compile")
    device = resolve_device(args.device)
    if args.float8 and (why := float8_unsupported(device)):
        ap.error(f"--float8: {why}")
    on_cuda = device.type == "cuda"
    autocast_dtype = resolve_autocast_dtype(args.dtype, device)
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    configs = args.config or ([("tinystories-17m", 128), ("gpt2-small", 32)] if on_cuda else [("cpu-small", 16)])
    steps = args.steps or (50 if on_cuda else 10)
    warmup = max(args.warmup or (15 if on_cuda else 3), 1)
    peak = peak_flops(device, autocast_dtype)
    device_name = torch.cuda.get_device_name(device) if on_cuda else f"CPU ({torch.get_num_threads()} threads)"
    mode = "reduce-overhead" if args.cuda_graphs else None
    rows = []
    profiles = []
    for name, batch_size in configs:
        batch = batch_size or args.batch_size or (64 if on_cuda else 16)
        config = ModelConfig(**CONFIGS[name])
        torch.manual_seed(0)
        ours = TransformerLM(config, device=device)
        plain = PlainTransformerLM(config).to(device).load_from(ours)
        if args.float8:  # after the copy: the plain model's weights are the same, its GEMMs stay in their dtype
            ours.enable_float8(device)
        models = {"bpe-lm": ours, "plain": plain}
        initial = {k: {n: t.detach().clone() for n, t in m.state_dict().items()} for k, m in models.items()}
        runners = {k: torch.compile(m, mode=mode) if args.compile else m for k, m in models.items()}
        g = torch.Generator().manual_seed(1)
        batches = []
        for _ in range(warmup + steps):
            ids = torch.randint(0, config.vocab_size, (batch, config.context_length + 1), generator=g).to(device)
            batches.append((ids[:, :-1], ids[:, 1:]))
        best = {arm: float("inf") for arm in ARMS}
        first_loss, memory, first_seconds = {}, {}, {}
        for round_ in range(args.repeat):
            for arm in ARMS:
                model_kind, opt_kind = arm
                models[model_kind].load_state_dict(initial[model_kind])  # in place: compiled code stays valid
                opt, clip = make_optimizer(opt_kind, models[model_kind], args.compile, on_cuda)
                step = make_step(runners[model_kind], opt, clip, autocast_dtype, device, args.cuda_graphs)
                if on_cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                seconds, loss, first = time_steps(step, batches, warmup, device, args.check_sync)
                best[arm] = min(best[arm], seconds)
                if round_ == 0:
                    first_loss[arm], first_seconds[arm] = loss, first
                    memory[arm] = torch.cuda.max_memory_allocated(device) / 2**30 if on_cuda else None
                del opt, step
        # Same weights and batch: every arm's first loss must agree (bf16 or float8 arithmetic differs in rounding only).
        reference = first_loss[("plain", "torch")]
        tolerance = 2e-2 if autocast_dtype is not None or args.float8 else 1e-4
        for arm, loss in first_loss.items():
            if abs(loss - reference) > tolerance * max(abs(reference), 1.0):
                raise SystemExit(
                    f"{name}: first-step loss of {arm} is {loss:.6f}, plain + torch gives {reference:.6f}: not the same work"
                )
        if args.profile:
            for arm in (("bpe-lm", "bpe-lm"), ("plain", "torch")):
                model_kind, opt_kind = arm
                opt, clip = make_optimizer(opt_kind, models[model_kind], args.compile, on_cuda)
                step = make_step(runners[model_kind], opt, clip, autocast_dtype, device, args.cuda_graphs)
                title = f"{name}, batch {batch}: {model_kind} model + {opt_kind} AdamW"
                profiles.append(profile_markdown(title, step, batches, device))
                del opt, step
        acc = account(config)
        tokens = steps * batch * config.context_length
        for arm in ARMS:
            tps = tokens / best[arm]
            mfu = model_flops_utilization(tps, acc.training_flops_per_token, peak)
            rows.append((name, batch, f"{acc.total_parameters / 1e6:.1f}M", *arm, tps, f"{100 * mfu:.1f}%" if mfu else "—",
                         f"{memory[arm]:.2f}" if memory[arm] is not None else "—", best[("plain", "torch")] / best[arm], first_loss[arm], first_seconds[arm]))  # fmt: skip
        del ours, plain, models, runners, initial, batches
        if on_cuda:
            torch.cuda.empty_cache()
    setting = (f"device: {device_name}; dtype: {autocast_dtype or torch.float32}; compile: {args.compile}"
               f"{' (CUDA graphs)' if args.cuda_graphs else ''}{'; bpe-lm projections in float8' if args.float8 else ''}; torch {torch.__version__}")  # fmt: skip
    print(f"\n{setting}; {steps} timed steps after {warmup} warm-up steps, best of {args.repeat}\n")
    # The first step of an arm compiles what no earlier arm compiled: the model at its model's first arm,
    # bpe-lm's AdamW update at its first use.
    print(
        "| config | batch | params | model | optimizer | tokens/s | MFU | peak GiB | vs plain + torch | first loss | first step s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:,.0f} | {r[6]} | {r[7]} | {r[8]:.2f} | {r[9]:.4f} | {r[10]:.1f} |"
        )
    if args.profile:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        text = f"# Where a training step's time goes\n\n{when}; {setting}.\n\n" + "\n".join(profiles)
        tmp = args.profile.with_name(args.profile.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(args.profile)
        print(f"\nprofile: {args.profile}")


if __name__ == "__main__":
    main()
