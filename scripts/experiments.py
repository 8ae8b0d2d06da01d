"""Experiment drivers: learning-rate sweep (with divergence detection), batch-size sweep at equal tokens,
and the CS336 ablations (no RMSNorm, post-norm, NoPE, SiLU FFN vs SwiGLU at matched parameters).

Each writes one config per variant, runs `bpe-lm train` on it, plots the runs with `bpe-lm plot` and prints
a table of final validation losses.

    python scripts/experiments.py lr-sweep   --preset cpu      # minutes on ../shared/data/fairytales.txt.gz
    python scripts/experiments.py batch-sweep --preset cpu
    python scripts/experiments.py ablations  --preset cpu
    python scripts/experiments.py documents  --preset cpu      # random vs document-aligned vs aligned + masked
    python scripts/experiments.py ablations  --preset tinystories --train data/train.npy --valid data/valid.npy

Presets: `cpu` prepares its own data (tokenizer 4096 + encoded fairytales slice) and trains a 1.8M-parameter
model for a few hundred steps per run; `tinystories` is CS336's 17M configuration (d_model 512, d_ff 1344,
4 layers, 16 heads, context 256, vocab 10K) for 327.68M tokens per run, for a GPU, on data you encoded.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from bpe_lm.config import to_toml
from bpe_lm.metrics import read_metrics
from bpe_lm.pipeline import prepare_data, read_text, shared_data_dir, split_train_valid

SHARED = shared_data_dir()

PRESETS = {
    "cpu": {
        "model": dict(vocab_size=4096, context_length=128, d_model=128, num_layers=4, num_heads=4, d_ff=344),
        "optimizer": dict(lr=3e-3, min_lr=3e-4, warmup_iters=20, weight_decay=0.1, grad_clip=1.0),
        "training": dict(
            batch_size=32,
            max_iters=250,
            eval_interval=50,
            eval_iters=10,
            log_interval=10,
            checkpoint_interval=1000,
            device="auto",
        ),
        "lrs": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
        "batch_sizes": [8, 16, 32, 64],
    },
    "tinystories": {
        "model": dict(vocab_size=10000, context_length=256, d_model=512, num_layers=4, num_heads=16, d_ff=1344),
        "optimizer": dict(lr=1e-3, min_lr=1e-4, warmup_iters=200, weight_decay=0.1, grad_clip=1.0),
        "training": dict(
            batch_size=128,
            max_tokens=327_680_000,
            eval_interval=500,
            eval_iters=50,
            log_interval=50,
            checkpoint_interval=2000,
            device="auto",
            compile=True,
        ),
        "lrs": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
        "batch_sizes": [32, 64, 128, 256, 512],
    },
}


def prepare_cpu_data(
    out: Path, corpus: str = "fairytales.txt.gz", vocab_size: int = 4096, max_chars: int | None = 12_000_000
) -> tuple[Path, Path]:
    """A tokenizer of `vocab_size` and encoded splits of the first `max_chars` characters of a shared corpus
    (None: all of it), made once and reused: in out/data for the fairy tales, out/data-NAME for another
    corpus, with -VOCAB after either for another vocabulary size than the cpu preset's 4096."""
    directory = out / ("data" if corpus == "fairytales.txt.gz" else f"data-{corpus.split('.')[0]}")
    if vocab_size != 4096:
        directory = directory.with_name(f"{directory.name}-{vocab_size}")
    train, valid = directory / "train.npy", directory / "valid.npy"
    if train.exists() and valid.exists():
        return train, valid
    directory.mkdir(parents=True, exist_ok=True)
    source = SHARED / corpus
    if not source.exists():
        raise SystemExit(f"{source}: not found; the presets' own data come from the shared corpora")
    data = prepare_data(*split_train_valid(read_text(source, max_chars)), directory, vocab_size)
    return data.train, data.valid


def run_variant(
    out: Path,
    name: str,
    preset: dict,
    train: Path,
    valid: Path,
    model: dict | None = None,
    optimizer: dict | None = None,
    training: dict | None = None,
    data: dict | None = None,
) -> dict:
    run_dir = out / name
    config = {
        "model": {**preset["model"], **(model or {})},
        "optimizer": {**preset["optimizer"], **(optimizer or {})},
        "data": {"train": str(train.resolve()), "valid": str(valid.resolve()), **(data or {})},
        "training": {**preset["training"], **(training or {}), "out_dir": str(run_dir.resolve())},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.toml").write_text(to_toml(config), encoding="utf-8")
    print(f"== {name}", file=sys.stderr, flush=True)
    proc = subprocess.run(
        [sys.executable, "-m", "bpe_lm", "train", "--config", str(run_dir / "run.toml"), "--quiet", "--force"],
        capture_output=True,
        text=True,
    )
    rows = read_metrics(run_dir) if (run_dir / "metrics.jsonl").exists() else []
    valid_losses = [r["valid_loss"] for r in rows if "valid_loss" in r]
    train_losses = [r["train_loss"] for r in rows if "train_loss" in r]
    diverged = proc.returncode != 0 and "loss became" in proc.stderr
    # Divergence also shows as a run that ends above where it started.
    if valid_losses and (not math.isfinite(valid_losses[-1]) or valid_losses[-1] > valid_losses[0]):
        diverged = True
    if proc.returncode != 0 and not diverged:
        print(proc.stderr[-2000:], file=sys.stderr)
    return {
        "name": name,
        "final_valid_loss": valid_losses[-1] if valid_losses and not diverged else None,
        "best_valid_loss": min(valid_losses) if valid_losses else None,
        "final_train_loss": train_losses[-1] if train_losses else None,
        "diverged": diverged,
        "steps": max((r["step"] for r in rows), default=0),
        "seconds": max((r.get("time", 0) for r in rows), default=0),
        "run_dir": str(run_dir),
    }


def report(out: Path, title: str, results: list[dict]) -> None:
    from bpe_lm.plot import plot_runs

    finished = [r for r in results if r["steps"]]
    if finished:
        plot_runs(
            [r["run_dir"] for r in finished], out / f"{title}.png", labels=[r["name"] for r in finished], title=title
        )
    (out / f"{title}.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(f"\n{title}\n\n| variant | final valid loss | best valid loss | steps | minutes |\n|---|---|---|---|---|")
    for r in results:
        final = (
            "diverged"
            if r["diverged"]
            else (f"{r['final_valid_loss']:.3f}" if r["final_valid_loss"] is not None else "—")
        )
        best = (
            f"{r['best_valid_loss']:.3f}"
            if r["best_valid_loss"] is not None and math.isfinite(r["best_valid_loss"])
            else "—"
        )
        print(f"| {r['name']} | {final} | {best} | {r['steps']} | {r['seconds'] / 60:.1f} |")
    print(f"\nplot: {out / (title + '.png')}")


# The `modern` experiment: the CS336 baseline, each switch beyond it alone, and all of them (the recipe), at
# equal tokens. Every arm's learning rate is tuned on seed 0 over a small grid (for Muon arms, Muon's own
# rate, with AdamW's part at the baseline's best), then the best rate runs again on the other seeds.
MODERN_ARMS: list[tuple[str, dict, dict]] = [
    ("baseline", {}, {}),
    ("Muon", {}, {"name": "muon"}),
    ("QK-norm", {"qk_norm": True}, {}),
    ("ReLU²", {"ffn": "relu2"}, {}),
    ("zero-init projections", {"zero_init_output": True}, {}),
    ("logit soft-cap 15", {"logit_softcap": 15.0}, {}),
    ("head lr = lr/3", {}, {"head_lr": "lr/3"}),
    ("modern (all)", {"recipe": "modern"}, {"recipe": "modern"}),
]
LR_GRID = {"adamw": [3e-3, 1e-2, 2e-2], "muon": [0.01, 0.02, 0.04]}


def _arm_optimizer(optimizer: dict, lr: float, adam_lr: float) -> dict:
    """The [optimizer] settings of an arm at grid rate `lr` (Muon's own rate for Muon arms)."""
    muon = optimizer.get("name") == "muon" or optimizer.get("recipe") == "modern"
    base = adam_lr if muon else lr
    out = {k: v for k, v in optimizer.items() if k != "head_lr"}
    out.update(lr=base, min_lr=base / 10)
    if muon:
        out["muon_lr"] = lr
    if optimizer.get("head_lr") == "lr/3":
        out["head_lr"] = base / 3
    return out


def modern(out: Path, preset: dict, train: Path, valid: Path, seeds: int) -> None:
    out = out / "modern"
    results: dict[str, dict] = {}
    adam_lr = None
    t = preset["training"]
    evals = {"eval_interval": max(1, (t.get("max_iters") or 1000) // 10)}  # ten points per validation curve
    for name, model, optimizer in MODERN_ARMS:
        muon = optimizer.get("name") == "muon" or optimizer.get("recipe") == "modern"
        slug = name.split(" (")[0].replace(" ", "_").replace("/", "-").replace("²", "2").replace("=", "")
        sweep = []
        for lr in LR_GRID["muon" if muon else "adamw"]:
            r = run_variant(out, f"{slug}-lr{lr:g}-s0", preset, train, valid, model=model,
                            optimizer=_arm_optimizer(optimizer, lr, adam_lr or lr), training={"seed": 0, **evals})  # fmt: skip
            sweep.append((lr, r))
        finished = [(lr, r) for lr, r in sweep if r["final_valid_loss"] is not None]
        best_lr, best = min(finished, key=lambda x: x[1]["final_valid_loss"])
        if name == "baseline":
            adam_lr = best_lr
        runs = [best]
        for seed in range(1, seeds):
            runs.append(run_variant(out, f"{slug}-lr{best_lr:g}-s{seed}", preset, train, valid, model=model,
                                    optimizer=_arm_optimizer(optimizer, best_lr, adam_lr), training={"seed": seed, **evals}))  # fmt: skip
        losses = [r["final_valid_loss"] for r in runs if r["final_valid_loss"] is not None]
        results[name] = {"best_lr": best_lr, "sweep": {f"{lr:g}": r["final_valid_loss"] for lr, r in sweep},
                         "final_valid_losses": losses, "mean": sum(losses) / len(losses), "run_dirs": [r["run_dir"] for r in runs]}  # fmt: skip
    (out / "modern.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    _plot_modern(out / "modern.png", results, preset)
    base = results["baseline"]["mean"]
    print("\n| arm | lr grid (final valid loss, seed 0) | best lr | final valid loss, per seed | mean | vs baseline |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        grid = ", ".join(f"{lr}: {v:.3f}" if v is not None else f"{lr}: diverged" for lr, v in r["sweep"].items())
        seeds_text = " / ".join(f"{v:.3f}" for v in r["final_valid_losses"])
        print(f"| {name} | {grid} | {r['best_lr']:g} | {seeds_text} | {r['mean']:.3f} | {r['mean'] - base:+.3f} |")
    print(f"\nplot: {out / 'modern.png'}; data: {out / 'modern.json'}")


def _plot_modern(path: Path, results: dict[str, dict], preset: dict) -> None:
    """Validation loss against tokens, the mean over seeds of each arm at its best learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, r) in enumerate(results.items()):
        curves = [
            [(row["tokens"], row["valid_loss"]) for row in read_metrics(d) if "valid_loss" in row]
            for d in r["run_dirs"]
        ]
        n = min(len(c) for c in curves)
        tokens = [curves[0][k][0] / 1e6 for k in range(n)]
        mean = [sum(c[k][1] for c in curves) / len(curves) for k in range(n)]
        ax.plot(tokens, mean, marker="o", markersize=3, color=f"C{i % 10}", label=f"{name} ({r['mean']:.3f})")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel(f"validation loss (mean of {len(next(iter(results.values()))['run_dirs'])} seeds)")
    ax.set_title("modern switches at equal tokens, each at its best learning rate")
    ax.set_ylim(top=min(ax.get_ylim()[1], 8.5))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


# The `documents` experiment: CS336's random windows, windows at document starts, and those with attention
# kept within documents, at equal tokens and learning rate, `seeds` seeds each.
DOCUMENT_ARMS: list[tuple[str, dict, dict]] = [
    ("random windows", {}, {"align": "random"}),
    ("document-aligned", {}, {"align": "document"}),
    ("aligned + masked", {"document_mask": True}, {"align": "document"}),
]


def documents(out: Path, preset: dict, train: Path, valid: Path, seeds: int, eot: dict) -> None:
    out = out / "documents"
    t = preset["training"]
    evals = {"eval_interval": max(1, (t.get("max_iters") or 1000) // 10)}
    # Each arm's own validation draws windows as it trains (aligned or not); the whole valid file read in
    # consecutive windows (`bpe-lm eval`) is the same measure for every arm.
    print(
        "\n| arm | final valid loss (its own windows), per seed | mean | whole valid file (`bpe-lm eval`), per seed | mean |"
    )
    print("|---|---|---|---|---|")
    rows = {}
    for name, model, data in DOCUMENT_ARMS:
        slug = name.replace(" + ", "-").replace(" ", "-")
        runs = [run_variant(out, f"{slug}-s{seed}", preset, train, valid, model=model, data={**data, **eot},
                            training={"seed": seed, **evals}) for seed in range(seeds)]  # fmt: skip
        own = [r["final_valid_loss"] for r in runs if r["final_valid_loss"] is not None]
        whole = [_file_loss(r["run_dir"], valid) for r in runs]
        rows[name] = {"own_windows": own, "whole_file": whole}
        mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
        print(f"| {name} | {' / '.join(f'{v:.4f}' for v in own)} | {mean(own):.4f} | "
              f"{' / '.join(f'{v:.4f}' for v in whole)} | {mean(whole):.4f} |", flush=True)  # fmt: skip
    (out / "documents.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")


def _file_loss(run_dir: str, valid: Path) -> float:
    proc = subprocess.run(
        [sys.executable, "-m", "bpe_lm", "eval", "--run", run_dir, "--data", str(valid), "--device", "cpu", "--json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout)["loss"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", choices=["lr-sweep", "batch-sweep", "ablations", "modern", "documents"])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--train", type=Path, help="train.npy (required for presets other than cpu)")
    ap.add_argument("--valid", type=Path, help="valid.npy")
    ap.add_argument("--out", type=Path, default=Path("runs/experiments"))
    ap.add_argument("--max-iters", type=int, default=None, help="override the preset's budget (quick checks)")
    ap.add_argument("--seeds", type=int, default=2, help="modern, documents: seeds per arm")
    ap.add_argument("--end-of-text-id", type=int, default=None, help="documents: the id that ends a document "
                    "(default: the cpu preset's tokenizer's <|endoftext|>)")  # fmt: skip
    args = ap.parse_args()
    preset = PRESETS[args.preset]
    if args.max_iters:
        preset["training"] = {
            **{k: v for k, v in preset["training"].items() if k not in ("max_tokens",)},
            "max_iters": args.max_iters,
            "eval_interval": max(1, args.max_iters // 2),
        }
    out = args.out / args.preset
    out.mkdir(parents=True, exist_ok=True)
    if args.preset == "cpu":
        # The fairy tales are 31 books of ~100K tokens: document-aligned windows would see 31 distinct
        # windows. The documents experiment trains on the reviews (short documents) instead.
        corpus = "imdb.txt.gz" if args.experiment == "documents" else "fairytales.txt.gz"
        train, valid = prepare_cpu_data(out, corpus)
    elif args.train and args.valid:
        train, valid = args.train, args.valid
    else:
        raise SystemExit("--train and --valid (.npy from `bpe-lm encode`) are required for this preset")
    results = []
    if args.experiment == "modern":
        modern(out, preset, train, valid, args.seeds)
        return
    if args.experiment == "documents":
        if args.end_of_text_id is not None:
            eot = {"end_of_text_id": args.end_of_text_id}
        elif args.preset == "cpu":
            eot = {"tokenizer": str((train.parent / "tokenizer").resolve())}
        else:
            raise SystemExit("documents: give --end-of-text-id, the id that ends each document in your data")
        documents(out, preset, train, valid, args.seeds, eot)
        return
    if args.experiment == "lr-sweep":
        for lr in preset["lrs"]:
            results.append(
                run_variant(out / "lr", f"lr={lr:g}", preset, train, valid, optimizer={"lr": lr, "min_lr": lr / 10})
            )
        report(out, "lr-sweep", results)
    elif args.experiment == "batch-sweep":
        # Equal tokens: the base budget's tokens, spread over fewer or more steps.
        t = preset["training"]
        tokens = t.get("max_tokens") or t["max_iters"] * t["batch_size"] * preset["model"]["context_length"]
        for b in preset["batch_sizes"]:
            # A common heuristic: learning rate grows with the square root of the batch size.
            lr = preset["optimizer"]["lr"] * math.sqrt(b / t["batch_size"])
            results.append(run_variant(out / "batch", f"batch={b}", preset, train, valid, optimizer={"lr": lr, "min_lr": lr / 10},
                                       training={"batch_size": b, "max_iters": 0, "max_tokens": tokens}))  # fmt: skip
        report(out, "batch-sweep", results)
    else:
        d_ff = preset["model"]["d_ff"]
        variants = [
            ("baseline (pre-norm, RoPE, SwiGLU)", {}, {}),
            ("no RMSNorm", {"norm": "none"}, {}),
            (
                "no RMSNorm, lr/3",
                {"norm": "none"},
                {"lr": preset["optimizer"]["lr"] / 3, "min_lr": preset["optimizer"]["min_lr"] / 3},
            ),
            ("post-norm", {"norm": "post"}, {}),
            ("NoPE", {"position": "none"}, {}),
            # Three d_ff-wide matrices vs two: d_ff × 3/2 matches the parameter count.
            ("SiLU FFN (matched params)", {"ffn": "silu", "d_ff": d_ff * 3 // 2}, {}),
        ]
        for name, model, optimizer in variants:
            results.append(
                run_variant(
                    out / "ablations",
                    name.replace(" ", "_").replace("/", "-").replace(",", ""),
                    preset,
                    train,
                    valid,
                    model=model,
                    optimizer=optimizer,
                )
            )
            results[-1]["name"] = name
        report(out, "ablations", results)


if __name__ == "__main__":
    main()
