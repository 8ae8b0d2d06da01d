"""The batch sampler's share of a CPU training step: drawing a batch from 3 weighted sources (5 token files on
disk, read with pread; windows anywhere, and at document starts) against one file (`get_batch`), both against a whole training step (forward, backward,
AdamW) of the `cpu-small` model on the same batch size. Clock after the imports; each figure is the median of
`--repeat` timings.

    pip install ".[lm]"
    python benches/sampler.py            # batch 16 x 128, 200 draws, 10 steps: about 20 s, < 1 GB
    python benches/sampler.py --quick    # 50 draws, 3 steps
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bpe_lm.data import WindowSampler, get_batch, load_tokens
from bpe_lm.model import ModelConfig, TransformerLM
from bpe_lm.optim import AdamW

CONFIG = dict(vocab_size=4096, context_length=128, num_layers=4, d_model=128, num_heads=4, d_ff=344)


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="--draws 50 --steps 3")
    args = ap.parse_args()
    if args.quick:
        args.draws, args.steps = 50, 3
    ctx, rng = CONFIG["context_length"], np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, n in enumerate((4_000_000, 1_000_000, 2_000_000, 500_000, 3_000_000)):
            paths.append(Path(tmp) / f"{i}.npy")
            np.save(paths[-1], rng.integers(0, CONFIG["vocab_size"], n, dtype=np.uint16))
        files = [load_tokens(p) for p in paths]
        mixture = WindowSampler([files[:2], files[2:4], files[4:]], ctx, [0.5, 0.3, 0.2])
        # Aligned: documents of about 300 tokens (their starts as data.align = "document" finds them).
        starts = [np.unique(np.concatenate([[0], rng.integers(1, len(f), len(f) // 300)])) for f in files]
        aligned = WindowSampler([files[:2], files[2:4], files[4:]], ctx, [0.5, 0.3, 0.2], starts)
        generator = torch.Generator().manual_seed(0)
        one = median_seconds(lambda: get_batch(files[0], args.batch_size, ctx, "cpu", generator), args.draws)
        mixed = median_seconds(lambda: mixture.draw(args.batch_size, "cpu", generator), args.draws)
        mixed_aligned = median_seconds(lambda: aligned.draw(args.batch_size, "cpu", generator), args.draws)

        model = TransformerLM(ModelConfig(**CONFIG))
        optimizer = AdamW(model.parameters(), lr=1e-3)
        x, y, _ = mixture.draw(args.batch_size, "cpu", generator)

        def step() -> None:
            loss = model(x, targets=y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        step()  # first-touch costs out of the timing
        train_step = median_seconds(step, args.steps)
    print(f"batch {args.batch_size} x {ctx}, {torch.get_num_threads()} threads")
    print("| | ms | share of a training step |")
    print("|---|---|---|")
    print(f"| training step (cpu-small) | {train_step * 1e3:.1f} | 100% |")
    print(f"| get_batch, one file | {one * 1e3:.3f} | {100 * one / train_step:.2f}% |")
    print(f"| WindowSampler, 3 weighted sources, 5 files | {mixed * 1e3:.3f} | {100 * mixed / train_step:.2f}% |")
    print(
        f"| the same, windows at document starts | {mixed_aligned * 1e3:.3f} | {100 * mixed_aligned / train_step:.2f}% |"
    )


if __name__ == "__main__":
    main()
