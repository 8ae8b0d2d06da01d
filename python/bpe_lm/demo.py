"""`bpe-lm demo`: the whole pipeline in one command, offline, on a laptop CPU in under ten minutes.

Corpus (built-in: the standard library's docstrings, or --data) -> train/valid split -> BPE tokenizer ->
encoded .npy splits -> a small Transformer trained for a fixed time -> samples, a learning-curve PNG and
a report (report.md) in a fresh run directory.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

PROMPTS = ("Return the", "This module", "If the")


def _log(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def run_demo(
    out: Path,
    data: Path | None,
    minutes: float,
    vocab_size: int,
    threads: int | None,
    max_mb: float,
    seed: int,
    *,
    plot: bool = True,
    errors: str = "strict",
) -> dict[str, Any]:
    import torch

    from bpe_lm.config import build_config, to_toml
    from bpe_lm.corpus import write_default_corpus
    from bpe_lm.generate import generate
    from bpe_lm.metrics import read_metrics
    from bpe_lm.pipeline import EOT, prepare_data, read_text, split_train_valid
    from bpe_lm.train import Trainer

    if threads:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=False)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    corpus = out / "corpus.txt"
    if data is None:
        docs, size = write_default_corpus(corpus)
        source = (
            f"Python {sys.version_info.major}.{sys.version_info.minor} standard-library docstrings ({docs:,} documents)"
        )
        text = corpus.read_text(encoding="utf-8")
        corpus.unlink()
    else:
        text = read_text(data, int(max_mb * 1e6), errors=errors)
        source = f"{data} (first {max_mb:g} MB at most)"
    train_text, valid_text = split_train_valid(text)
    times["corpus"] = time.perf_counter() - t0
    _log(
        f"corpus: {source}; train {len(train_text.encode()) / 1e6:.2f} MB, valid {len(valid_text.encode()) / 1e6:.2f} MB"
    )

    prepared = prepare_data(train_text, valid_text, out, vocab_size, num_threads=threads)
    tok = prepared.tokenizer
    times["tokenizer"], times["encode"] = prepared.tokenizer_seconds, prepared.encode_seconds
    counts = {"train": prepared.train_tokens, "valid": prepared.valid_tokens}
    _log(f"tokenizer: {tok.vocab_size} tokens in {times['tokenizer']:.1f} s")
    ratio = len(train_text.encode()) / max(counts["train"], 1)
    _log(
        f"encoded: {counts['train']:,} train and {counts['valid']:,} valid tokens ({ratio:.2f} bytes/token) in {times['encode']:.1f} s"
    )

    context = 128 if counts["valid"] > 2 * 128 + 1 else max(8, counts["valid"] // 4)
    raw: dict[str, dict[str, Any]] = {
        "model": dict(context_length=context, d_model=128, num_layers=4, num_heads=4, d_ff=344),
        "optimizer": dict(lr=3e-3, min_lr=3e-4, warmup_fraction=0.05, weight_decay=0.1, grad_clip=1.0),
        "data": dict(train=str((out / "train.npy").resolve()), valid=str((out / "valid.npy").resolve()),
                     tokenizer=str(prepared.tokenizer_dir.resolve())),
        "training": dict(batch_size=32, max_minutes=minutes, evals=20, eval_iters=10, log_interval=10,
                         checkpoint_interval=500, out_dir=str((out / "run").resolve()), seed=seed, device="cpu"),
    }  # fmt: skip
    (out / "run.toml").write_text(to_toml(raw), encoding="utf-8")
    cfg = build_config(raw)
    from bpe_lm.model import TransformerLM

    params = sum(p.numel() for p in TransformerLM(cfg.model).parameters())
    _log(
        f"training a {params / 1e6:.2f}M-parameter model for {minutes:g} min on CPU ({torch.get_num_threads()} threads)"
    )
    t0 = time.perf_counter()
    summary = Trainer(cfg, progress=True).run()
    times["train"] = time.perf_counter() - t0

    metrics = read_metrics(out / "run")
    valid_rows = [r for r in metrics if "valid_loss" in r]
    if plot:
        from bpe_lm.plot import plot_runs

        plot_runs(
            [out / "run"],
            out / "curves.png",
            labels=["demo"],
            title=f"bpe-lm demo: {params / 1e6:.2f}M parameters, {minutes:g} min on CPU",
        )

    from bpe_lm.checkpoint import load_model
    from bpe_lm.evaluation import bits_per_byte
    from bpe_lm.run_files import tokenizer_for_model

    tok, _ = tokenizer_for_model(out / "run", None)  # the run's own copy, as `bpe-lm generate --run` uses it
    model, _ = load_model(out / "run")
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for prompt in PROMPTS:
        ids = generate(
            model,
            tok.encode(prompt),
            60,
            temperature=0.8,
            top_p=0.9,
            eos_id=tok.special_token_ids[EOT],
            generator=generator,
        )
        samples.append(prompt + tok.decode([i for i in ids if i != tok.special_token_ids[EOT]]))

    first_valid = valid_rows[0]["valid_loss"] if valid_rows else float("nan")
    final_valid = valid_rows[-1]["valid_loss"] if valid_rows else float("nan")
    report = {
        "corpus": source,
        "train_bytes": len(train_text.encode()),
        "valid_bytes": len(valid_text.encode()),
        "vocab_size": tok.vocab_size,
        "train_tokens": counts["train"],
        "valid_tokens": counts["valid"],
        "parameters": params,
        "steps": summary["steps"],
        "tokens_seen": summary["tokens"],
        "tokens_per_s": summary.get("tokens_per_s"),
        "first_valid_loss": first_valid,
        "final_valid_loss": final_valid,
        "final_valid_bits_per_byte": bits_per_byte(final_valid, counts["valid"], max(len(valid_text.encode()), 1)),
        "seconds": times,
        "samples": samples,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    lines = [
        "# bpe-lm demo report",
        "",
        f"- corpus: {source}",
        f"- text: {report['train_bytes'] / 1e6:.2f} MB train, {report['valid_bytes'] / 1e6:.2f} MB valid",
        f"- tokenizer: {tok.vocab_size} tokens, trained in {times['tokenizer']:.1f} s; {ratio:.2f} bytes per token",
        f"- tokens: {counts['train']:,} train, {counts['valid']:,} valid (encoded in {times['encode']:.1f} s)",
        f"- model: {params:,} parameters (d_model 128, 4 layers, 4 heads, context {context})",
        f"- training: {summary['steps']} steps, {summary['tokens']:,} tokens in {times['train'] / 60:.1f} min"
        + (f" ({summary['tokens_per_s']:,.0f} tokens/s)" if summary.get("tokens_per_s") else ""),
        f"- validation loss: {first_valid:.3f} at the first evaluation -> {final_valid:.3f} at the end "
        f"({report['final_valid_bits_per_byte']:.3f} bits per byte)",
        "",
        "## Samples",
        "",
        *[f"```\n{s}\n```\n" for s in samples],
        "![learning curve](curves.png)"
        if plot
        else "(no learning-curve plot: matplotlib is not installed; `bpe-lm plot run` draws it later)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return report


def default_out_dir() -> Path:
    return Path("runs") / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
