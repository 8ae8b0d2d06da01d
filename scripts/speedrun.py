"""Time to loss: how long each trainer takes, in seconds of training, to reach the validation loss that the
CS336 baseline recipe in plain PyTorch reaches at a fixed budget.

Three arms, the same data, tokenizer, model shape, batch and evaluation, `--seeds` seeds each, each run a
fresh process:

- plain PyTorch: `bpe_lm.baseline.PlainTransformerLM` (nn.Linear, F.scaled_dot_product_attention,
  F.cross_entropy), `torch.optim.AdamW` (fused where torch has the kernel), linear warm-up then cosine,
  `clip_grad_norm_`, `torch.compile` (`--plain-compile off` to run it eager), random windows drawn with
  numpy: the CS336 baseline as a user writes it;
- bpe-lm with the CS336 recipe: `bpe-lm train`, AdamW, the same learning rates and schedule;
- bpe-lm `recipe = "modern"`: Muon, QK-norm, ReLU², zero-initialised projections, logit soft-cap, at the
  rates the `modern` experiment (scripts/experiments.py) found best.

The target is the plain arm's final validation loss, averaged over its seeds. Every run is evaluated at the
same steps on the same fixed windows of the validation file (bpe-lm's evaluation subset, drawn with the
same seed). The clock is the one speedruns keep: seconds spent training (drawing batches, the steps, and
the first step's compilation), stopped while evaluating, read from each validation row's `train_seconds`.
Seconds to the target are read where the mean curve over seeds (and each seed's curve) first reaches it,
interpolated linearly between evaluations; each run's whole wall-clock time is reported beside it. Plain
PyTorch starts from the same weights as bpe-lm (copied from the same seeded initialisation), so the step-0
losses are a check that the two measure the same thing. Writes speedrun.json and speedrun.png (loss against seconds) under --out.

    python scripts/speedrun.py                                   # cpu preset on ../shared/data's fairy tales: ~15 min
    python scripts/speedrun.py --max-iters 60 --seeds 1          # a quick look: ~3 min
    python scripts/speedrun.py --preset tinystories --max-iters 2000   # a GPU: CS336's 17M model, fairy tales
    python scripts/speedrun.py --preset tinystories --train data/train.npy --valid data/valid.npy
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiments import PRESETS, prepare_cpu_data, run_variant  # noqa: E402  (scripts/ is not a package)

from bpe_lm.metrics import read_metrics  # noqa: E402

# The budget, evaluation and rates of each preset's speedrun. The CS336 arms' lr is the baseline's best in
# the `modern` experiment's grid (README), Muon's rate the modern recipe's best there.
SPEEDRUN = {
    "cpu": dict(max_iters=300, evals=20, eval_iters=10, lr=0.02, min_lr=0.002, muon_lr=0.04, corpus_chars=12_000_000),
    "tinystories": dict(max_iters=5000, evals=20, eval_iters=20, lr=3e-3, min_lr=3e-4, muon_lr=0.04, corpus_chars=None),
}
ARMS = ("plain PyTorch", "bpe-lm CS336", "bpe-lm modern")


# ----------------------------------------------------------------------------------------------------
# The plain-PyTorch arm, run as `speedrun.py plain RUN_DIR` in its own process.


def plain_run(run_dir: Path) -> None:
    import numpy as np
    import torch

    from bpe_lm.baseline import PlainTransformerLM
    from bpe_lm.config import OptimizerConfig
    from bpe_lm.evaluation import evaluate
    from bpe_lm.model import ModelConfig, TransformerLM
    from bpe_lm.optim import cosine_lr
    from bpe_lm.runtime import autocast, resolve_autocast_dtype, resolve_device
    from bpe_lm.train import EVAL_SEED_OFFSET

    spec = json.loads((run_dir / "plain.json").read_text(encoding="utf-8"))
    m, o, t = spec["model"], spec["optimizer"], spec["training"]
    device = resolve_device(t.get("device", "auto"))
    dtype = resolve_autocast_dtype(t.get("dtype", "auto"), device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    config = ModelConfig(**m)
    torch.manual_seed(t["seed"])  # bpe-lm's initialisation, made as its trainer makes it, copied across
    initial = TransformerLM(config, device=device)
    model = PlainTransformerLM(config).to(device).load_from(initial)
    del initial
    # bpe-lm's defaults for what the preset leaves unset (torch's own betas are (0.9, 0.999)).
    defaults = OptimizerConfig()
    hyper = dict(lr=o["lr"], betas=tuple(o.get("betas", defaults.betas)), eps=o.get("eps", defaults.eps),
                 weight_decay=o.get("weight_decay", defaults.weight_decay))  # fmt: skip
    try:
        opt = torch.optim.AdamW(model.parameters(), **hyper, fused=True)
    except RuntimeError:
        opt = torch.optim.AdamW(model.parameters(), **hyper, foreach=True)
    step_model = torch.compile(model) if spec["compile"] else model
    train = np.load(spec["train"], mmap_mode="r")
    valid = np.load(spec["valid"], mmap_mode="r")
    rng = np.random.default_rng(t["seed"])
    batch, context, steps = t["batch_size"], config.context_length, t["max_iters"]

    def draw() -> tuple[torch.Tensor, torch.Tensor]:
        starts = rng.integers(0, len(train) - context, batch)
        rows = torch.from_numpy(np.stack([train[s : s + context + 1] for s in starts]).astype(np.int64))
        return rows[:, :-1].to(device), rows[:, 1:].to(device)

    rows: list[dict] = []
    every = max(1, steps // t["evals"])
    start = time.perf_counter()
    training = [0.0, start]  # seconds trained before the last evaluation, and when training resumed after it

    def validate(step: int) -> None:
        now = time.perf_counter()
        training[0] += now - training[1]
        loss = evaluate(model, valid, config, batch, t["eval_iters"], device, dtype, t["seed"] + EVAL_SEED_OFFSET)
        rows.append({"step": step, "tokens": step * batch * context, "time": round(now - start, 3),
                     "train_seconds": round(training[0], 3), "valid_loss": loss})  # fmt: skip
        training[1] = time.perf_counter()

    params = list(model.parameters())
    validate(0)
    first_step = 0.0
    for it in range(steps):
        for group in opt.param_groups:
            group["lr"] = cosine_lr(it, o["lr"], o["min_lr"], o["warmup_iters"], steps)  # the schedule bpe-lm uses
        x, y = draw()
        began = time.perf_counter()
        with autocast(device, dtype):
            loss = step_model(x, targets=y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, o["grad_clip"], foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if it == 0:
            loss.item()  # the first step compiles: timed to its end
            first_step = time.perf_counter() - began
        done = it + 1
        if done % t["log_interval"] == 0 or done == steps:
            rows.append({"step": done, "tokens": done * batch * context, "time": round(time.perf_counter() - start, 3), "train_loss": loss.item()})  # fmt: skip
        if done % every == 0 or done == steps:
            validate(done)
    with open(run_dir / "metrics.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    (run_dir / "plain-summary.json").write_text(json.dumps({"first_step_seconds": first_step}), encoding="utf-8")


# ----------------------------------------------------------------------------------------------------
# The driver.


def seconds_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """Seconds at which a (seconds, loss) curve first reaches `target`, interpolated between its points."""
    for i, (t, loss) in enumerate(curve):
        if loss <= target:
            if i == 0:
                return t
            t0, l0 = curve[i - 1]
            return t0 + (t - t0) * (l0 - target) / (l0 - loss)
    return None


def valid_curve(run_dir: str) -> list[tuple[float, float]]:
    return [(r["train_seconds"], r["valid_loss"]) for r in read_metrics(run_dir) if "valid_loss" in r]


def wall_seconds(run_dir: str) -> float:
    return max(r["time"] for r in read_metrics(run_dir))


def mean_curve(curves: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    n = min(len(c) for c in curves)
    return [(sum(c[i][0] for c in curves) / len(curves), sum(c[i][1] for c in curves) / len(curves)) for i in range(n)]


def run_plain(out: Path, name: str, preset: dict, train: Path, valid: Path, training: dict, compiled: bool) -> dict:
    run_dir = out / name
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "model": preset["model"],
        "optimizer": preset["optimizer"],
        "training": {**preset["training"], **training},
        "train": str(train.resolve()),
        "valid": str(valid.resolve()),
        "compile": compiled,
    }
    (run_dir / "plain.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    print(f"== {name}", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, __file__, "plain", str(run_dir)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    first = json.loads((run_dir / "plain-summary.json").read_text(encoding="utf-8"))["first_step_seconds"]
    return {"run_dir": str(run_dir), "first_step_seconds": first}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "plain":
        plain_run(Path(sys.argv[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(SPEEDRUN), default="cpu")
    ap.add_argument("--train", type=Path, help="train.npy (default: the shared fairy tales, encoded once)")
    ap.add_argument("--valid", type=Path, help="valid.npy")
    ap.add_argument("--out", type=Path, default=Path("runs/speedrun"))
    ap.add_argument("--seeds", type=int, default=2, help="seeds per arm (default 2)")
    ap.add_argument("--max-iters", type=int, default=None, help="the budget in steps (default: the preset's)")
    ap.add_argument(
        "--plain-compile", choices=["on", "off"], default="on", help="torch.compile the plain arm (default on)"
    )
    args = ap.parse_args()
    if args.seeds < 1:
        ap.error("--seeds must be at least 1")
    preset = {k: dict(v) if isinstance(v, dict) else v for k, v in PRESETS[args.preset].items()}
    run = dict(SPEEDRUN[args.preset])
    steps = args.max_iters or run["max_iters"]
    out = args.out / args.preset
    out.mkdir(parents=True, exist_ok=True)
    if args.train or args.valid:
        if not (args.train and args.valid):
            ap.error("--train and --valid go together")
        train, valid = args.train, args.valid
    else:
        train, valid = prepare_cpu_data(
            args.out, vocab_size=preset["model"]["vocab_size"], max_chars=run["corpus_chars"]
        )
    training = {k: v for k, v in preset["training"].items() if k not in ("max_tokens", "eval_interval")}
    training.update(max_iters=steps, evals=run["evals"], eval_iters=run["eval_iters"], checkpoint_interval=10 * steps)
    preset["optimizer"].update(lr=run["lr"], min_lr=run["min_lr"])
    preset["training"] = training
    bpe_compile = bool(preset["training"].get("compile", False))

    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for seed in range(args.seeds):
        seeded = {"seed": seed}
        runs["plain PyTorch"].append(
            run_plain(out, f"plain-s{seed}", preset, train, valid, seeded, args.plain_compile == "on")
        )
        for arm, model, optimizer in (
            ("bpe-lm CS336", {}, {}),
            ("bpe-lm modern", {"recipe": "modern"}, {"recipe": "modern", "muon_lr": run["muon_lr"]}),
        ):
            r = run_variant(out, f"{arm.split()[1].lower()}-s{seed}", preset, train, valid, model=model, optimizer=optimizer, training=seeded)  # fmt: skip
            if r["diverged"] or not r["steps"]:
                raise SystemExit(f"{arm}, seed {seed}: the run failed or diverged ({r['run_dir']})")
            runs[arm].append(r)

    curves = {arm: [valid_curve(r["run_dir"]) for r in rs] for arm, rs in runs.items()}
    target = sum(c[-1][1] for c in curves["plain PyTorch"]) / args.seeds
    results = {}
    for arm in ARMS:
        mean = mean_curve(curves[arm])
        results[arm] = {
            "compiled": args.plain_compile == "on" if arm == "plain PyTorch" else bpe_compile,
            "step0_valid_loss": [c[0][1] for c in curves[arm]],
            "final_valid_loss": [c[-1][1] for c in curves[arm]],
            "seconds_per_seed": [seconds_to(c, target) for c in curves[arm]],
            "train_seconds": [c[-1][0] for c in curves[arm]],
            "wall_seconds": [wall_seconds(r["run_dir"]) for r in runs[arm]],
            "seconds_to_target": seconds_to(mean, target),
            "first_step_seconds": [r["first_step_seconds"] for r in runs[arm]] if arm == "plain PyTorch" else None,
            "run_dirs": [r["run_dir"] for r in runs[arm]],
        }
    plain_seconds = results["plain PyTorch"]["seconds_to_target"]
    summary = {"preset": args.preset, "steps": steps, "seeds": args.seeds, "target_valid_loss": target, "arms": results}
    (out / "speedrun.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    _plot(out / "speedrun.png", curves, target, args.preset, steps)

    def fmt(x: float | None) -> str:
        return "not reached" if x is None else f"{x:.1f}"

    print(
        f"\ntarget: {target:.4f} (plain PyTorch's final validation loss at {steps} steps, mean of {args.seeds} seeds)"
    )
    print(
        "\n| arm | compiled | step-0 loss | final valid loss | seconds to target, per seed | mean curve: seconds to target | vs plain | training s | wall-clock s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, r in results.items():
        ratio = (
            f"{r['seconds_to_target'] / plain_seconds:.2f}×"
            if r["seconds_to_target"] is not None and plain_seconds
            else "—"
        )
        print(f"| {arm} | {'yes' if r['compiled'] else 'no'} | {' / '.join(f'{x:.3f}' for x in r['step0_valid_loss'])} | "
              f"{' / '.join(f'{x:.3f}' for x in r['final_valid_loss'])} | {' / '.join(fmt(x) for x in r['seconds_per_seed'])} | "
              f"{fmt(r['seconds_to_target'])} | {ratio} | {' / '.join(f'{x:.1f}' for x in r['train_seconds'])} | "
              f"{' / '.join(f'{x:.1f}' for x in r['wall_seconds'])} |")  # fmt: skip
    first = results["plain PyTorch"]["first_step_seconds"]
    print(f"\nplain PyTorch's first step (compilation included): {' / '.join(f'{x:.1f}' for x in first)} s")
    print(f"plot: {out / 'speedrun.png'}; data: {out / 'speedrun.json'}")


def _plot(
    path: Path, curves: dict[str, list[list[tuple[float, float]]]], target: float, preset: str, steps: int
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (arm, runs) in enumerate(curves.items()):
        for k, curve in enumerate(runs):
            ax.plot([t for t, _ in curve], [loss for _, loss in curve], color=f"C{i}", marker="o", markersize=2,
                    alpha=0.8, label=arm if k == 0 else None)  # fmt: skip
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.3f}")
    ax.set_xlabel("seconds of training (compilation included, evaluation not)")
    ax.set_ylabel("validation loss")
    ax.set_title(f"time to loss, {preset} preset, {steps} steps, each seed a line")
    ax.set_ylim(target - 0.6, target + 2.0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
