"""End-to-end proof on CPU: tokenizer -> encoded splits -> a ~2M-parameter LM trained for a fixed time,
side by side with a plain-PyTorch reference of the same model on the same tokens.

Both models start from the same weights and see the same batches with the same learning rate at every
step; their steps alternate in chunks, so machine noise hits both alike. Reports tokens/s of each, their
validation curves against the unigram entropy of the data, a sample, and writes two run directories
(metrics.jsonl each) and a plot.

    python scripts/cpu_proof.py --minutes 10 --out runs/cpu-proof
    python scripts/cpu_proof.py --corpus my.txt --minutes 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import bpe_lm
from bpe_lm.baseline import PlainTransformerLM
from bpe_lm.data import get_batch, load_tokens
from bpe_lm.generate import generate
from bpe_lm.model import ModelConfig, TransformerLM
from bpe_lm.optim import AdamW, clip_grad_norm, cosine_lr
from bpe_lm.pipeline import prepare_data, read_text, shared_data_dir, split_train_valid
from bpe_lm.plot import plot_runs

SHARED = shared_data_dir()


def prepare(corpus: Path, out: Path, mb: float, vocab: int) -> tuple[bpe_lm.Tokenizer, Path, Path]:
    data = prepare_data(*split_train_valid(read_text(corpus, int(mb * 1e6))), out, vocab)
    print(
        f"tokenizer ({vocab} tokens) and encoding: {data.tokenizer_seconds + data.encode_seconds:.1f} s",
        file=sys.stderr,
    )
    return data.tokenizer, data.train, data.valid


def unigram_entropy(tokens: np.ndarray, vocab: int) -> float:
    counts = np.bincount(np.asarray(tokens), minlength=vocab).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


@torch.no_grad()
def eval_loss(model, valid, batch: int, ctx: int, iters: int) -> float:
    model.eval()
    g = torch.Generator().manual_seed(12345)
    total = 0.0
    for _ in range(iters):
        x, y = get_batch(valid, batch, ctx, "cpu", g)
        total += model(x, targets=y).item()
    model.train()
    return total / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=SHARED / "fairytales.txt.gz")
    ap.add_argument("--mb", type=float, default=12.0, help="MB of the corpus to use")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="training time for bpe-lm's model (the reference runs the same steps)",
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out", type=Path, default=Path("runs/cpu-proof"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tok, train_path, valid_path = prepare(args.corpus, args.out, args.mb, args.vocab)
    train, valid = load_tokens(train_path), load_tokens(valid_path)
    entropy = unigram_entropy(train, tok.vocab_size)
    config = ModelConfig(
        vocab_size=tok.vocab_size, context_length=args.context, d_model=128, num_layers=4, num_heads=4, d_ff=344
    )
    torch.manual_seed(0)
    ours = TransformerLM(config)
    plain = PlainTransformerLM(config).load_from(ours)
    ours_opt = AdamW(ours.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, foreach=True)

    impls = {
        "bpe-lm": (ours, ours_opt, clip_grad_norm),
        "plain-pytorch": (plain, plain_opt, torch.nn.utils.clip_grad_norm_),
    }
    # Calibrate the step count to the time budget with a few of our steps (on copies, then discarded).
    probe = TransformerLM(config)
    probe_opt = AdamW(probe.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(99)
    start = time.perf_counter()
    for _ in range(10):
        x, y = get_batch(train, args.batch_size, args.context, "cpu", g)
        probe(x, targets=y).backward()
        probe_opt.step()
        probe_opt.zero_grad()
    per_step = (time.perf_counter() - start) / 10
    total_steps = max(50, int(args.minutes * 60 / per_step))
    warmup = max(1, total_steps // 50)
    eval_every = max(1, total_steps // 20)
    chunk = 10
    print(
        f"model: {ours.num_parameters():,} parameters; {total_steps} steps of {args.batch_size}×{args.context} tokens; "
        f"unigram entropy of the data {entropy:.3f} nats",
        file=sys.stderr,
    )

    gens = {name: torch.Generator().manual_seed(0) for name in impls}  # the same batch sequence for both
    seconds = {name: 0.0 for name in impls}
    chunk_seconds: dict[str, list[float]] = {name: [] for name in impls}
    logs: dict[str, list[dict]] = {name: [] for name in impls}
    step = 0
    while step < total_steps:
        steps_now = range(step, min(step + chunk, total_steps))
        for name, (model, opt, clip) in impls.items():
            t0 = time.perf_counter()
            rows = []
            for it in steps_now:
                lr = cosine_lr(it, args.lr, args.lr / 10, warmup, total_steps)
                for group in opt.param_groups:
                    group["lr"] = lr
                x, y = get_batch(train, args.batch_size, args.context, "cpu", gens[name])
                loss = model(x, targets=y)  # the loss is computed in forward on both sides
                loss.backward()
                clip(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
                rows.append((it + 1, loss.detach(), lr))
            seconds[name] += time.perf_counter() - t0
            if len(steps_now) == chunk:
                chunk_seconds[name].append(time.perf_counter() - t0)
            for it, loss, lr in rows:
                logs[name].append(
                    {
                        "step": it,
                        "tokens": it * args.batch_size * args.context,
                        "time": seconds[name],
                        "train_loss": loss.item(),
                        "lr": lr,
                    }
                )
        step = steps_now[-1] + 1
        if step % eval_every < chunk or step == total_steps:
            for name, (model, _, _) in impls.items():
                v = eval_loss(model, valid, args.batch_size, args.context, 10)
                logs[name].append(
                    {
                        "step": step,
                        "tokens": step * args.batch_size * args.context,
                        "time": seconds[name],
                        "valid_loss": v,
                    }
                )
            print(
                f"step {step}/{total_steps}: valid bpe-lm {logs['bpe-lm'][-1]['valid_loss']:.3f}, plain {logs['plain-pytorch'][-1]['valid_loss']:.3f}",
                file=sys.stderr,
            )

    for name in impls:
        run = args.out / name
        run.mkdir(exist_ok=True)
        with open(run / "metrics.jsonl", "w", encoding="utf-8") as f:
            for row in logs[name]:
                f.write(json.dumps(row) + "\n")
    plot_runs(
        [args.out / n for n in impls],
        args.out / "curves.png",
        title=f"{ours.num_parameters() / 1e6:.1f}M-parameter LM on CPU",
    )
    tokens = total_steps * args.batch_size * args.context
    final = {n: [r for r in logs[n] if "valid_loss" in r][-1]["valid_loss"] for n in impls}
    sample_ids = generate(
        ours.eval(),
        tok.encode("Once upon a time"),
        60,
        temperature=0.8,
        top_p=0.9,
        eos_id=tok.special_token_ids["<|endoftext|>"],
        generator=torch.Generator().manual_seed(0),
    )
    report = {
        "parameters": ours.num_parameters(),
        "steps": total_steps,
        "tokens": tokens,
        "unigram_entropy_nats": entropy,
        "tokens_per_s": {n: tokens / seconds[n] for n in impls},
        "throughput_ratio": seconds["plain-pytorch"] / seconds["bpe-lm"],
        # Robust to bursts of load from other processes: the median over chunks of 10 steps.
        "median_chunk_tokens_per_s": {
            n: chunk * args.batch_size * args.context / statistics.median(chunk_seconds[n]) for n in impls
        },
        "median_chunk_throughput_ratio": statistics.median(chunk_seconds["plain-pytorch"])
        / statistics.median(chunk_seconds["bpe-lm"]),
        "final_valid_loss": final,
        "valid_loss_gap": final["bpe-lm"] - final["plain-pytorch"],
        "sample": "Once upon a time" + tok.decode(sample_ids),
        "torch_threads": torch.get_num_threads(),
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
