"""`bpe-lm demo`: the whole pipeline in one command, offline, on a laptop CPU in under ten minutes.

Corpus (built-in: the standard library's docstrings, or --data) -> train/valid split -> BPE tokenizer ->
encoded .npy splits -> a small Transformer trained for a fixed time -> samples, a learning-curve PNG and
a report (report.md) in a fresh run directory.
"""

from __future__ import annotations

import gzip
import json
import math
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

SEPARATOR = "<|endoftext|>"
PROMPTS = ("Return the", "This module", "If the")


def _log(message: str) -> None:
    print(f"[demo] {message}", file=sys.stderr, flush=True)


def split_text(text: str, valid_fraction: float = 0.05) -> tuple[str, str]:
    """Train and valid parts, cut at a document separator (or a line) near the end."""
    target = int(len(text) * (1 - valid_fraction))
    cut = text.rfind(SEPARATOR, 0, target)
    if cut <= 0:
        cut = text.rfind("\n", 0, target)
    if cut <= 0:
        cut = target
    return text[:cut], text[cut:]


def read_user_text(path: Path, max_mb: float) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            text = f.read(int(max_mb * 1e6))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start} of the part read)") from None
    if len(text.strip()) == 0:
        raise ValueError(f"{path}: is empty")
    return text


def run_demo(out: Path, data: Path | None, minutes: float, vocab_size: int, threads: int | None, max_mb: float, seed: int, *, plot: bool = True) -> dict[str, Any]:
    import torch

    from bpe_lm.config import build_config, to_toml
    from bpe_lm.corpus import write_default_corpus
    from bpe_lm.generate import generate
    from bpe_lm.tokenizer import Tokenizer, save_tokenizer_dir, train_bpe
    from bpe_lm.train import Trainer, read_metrics

    if threads:
        torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=False)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    corpus = out / "corpus.txt"
    if data is None:
        docs, size = write_default_corpus(corpus)
        source = f"Python {sys.version_info.major}.{sys.version_info.minor} standard-library docstrings ({docs:,} documents)"
        text = corpus.read_text(encoding="utf-8")
    else:
        text = read_user_text(data, max_mb)
        source = f"{data} (first {max_mb:g} MB at most)"
    train_text, valid_text = split_text(text)
    (out / "train.txt").write_text(train_text, encoding="utf-8")
    (out / "valid.txt").write_text(valid_text, encoding="utf-8")
    corpus.unlink(missing_ok=True)
    times["corpus"] = time.perf_counter() - t0
    _log(f"corpus: {source}; train {len(train_text.encode()) / 1e6:.2f} MB, valid {len(valid_text.encode()) / 1e6:.2f} MB")

    t0 = time.perf_counter()
    vocab, merges = train_bpe(out / "train.txt", vocab_size, [SEPARATOR], num_threads=threads)
    save_tokenizer_dir(out / "tokenizer", vocab, merges, [SEPARATOR])
    times["tokenizer"] = time.perf_counter() - t0
    tok = Tokenizer.load(out / "tokenizer")
    _log(f"tokenizer: {tok.vocab_size} tokens in {times['tokenizer']:.1f} s")

    t0 = time.perf_counter()
    counts = {split: tok.encode_file(out / f"{split}.txt", out / f"{split}.npy", num_threads=threads) for split in ("train", "valid")}
    times["encode"] = time.perf_counter() - t0
    ratio = len(train_text.encode()) / max(counts["train"], 1)
    _log(f"encoded: {counts['train']:,} train and {counts['valid']:,} valid tokens ({ratio:.2f} bytes/token) in {times['encode']:.1f} s")

    context = 128 if counts["valid"] > 2 * 128 + 1 else max(8, counts["valid"] // 4)
    raw = {
        "model": dict(vocab_size=tok.vocab_size, context_length=context, d_model=128, num_layers=4, num_heads=4, d_ff=344),
        "optimizer": dict(lr=3e-3, min_lr=3e-4, warmup_iters=50, weight_decay=0.1, grad_clip=1.0),
        "data": dict(train=str((out / "train.npy").resolve()), valid=str((out / "valid.npy").resolve())),
        "training": dict(batch_size=32, max_minutes=minutes, eval_interval=100, eval_iters=10, log_interval=10,
                         checkpoint_interval=500, out_dir=str((out / "run").resolve()), seed=seed, device="cpu"),
    }  # fmt: skip
    (out / "run.toml").write_text(to_toml(raw), encoding="utf-8")
    cfg = build_config(raw)
    from bpe_lm.model import TransformerLM

    params = sum(p.numel() for p in TransformerLM(cfg.model).parameters())
    _log(f"training a {params / 1e6:.2f}M-parameter model for {minutes:g} min on CPU ({torch.get_num_threads()} threads)")
    t0 = time.perf_counter()
    summary = Trainer(cfg, progress=True).run()
    times["train"] = time.perf_counter() - t0

    metrics = read_metrics(out / "run")
    valid_rows = [r for r in metrics if "valid_loss" in r]
    if plot:
        from bpe_lm.plot import plot_runs

        plot_runs([out / "run"], out / "curves.png", labels=["demo"], title=f"bpe-lm demo: {params / 1e6:.2f}M parameters, {minutes:g} min on CPU")

    from bpe_lm.generate import load_model

    model, _ = load_model(out / "run")
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for prompt in PROMPTS:
        ids = generate(model, tok.encode(prompt), 60, temperature=0.8, top_p=0.9, eos_id=tok.special_token_ids[SEPARATOR], generator=generator)
        samples.append(prompt + tok.decode([i for i in ids if i != tok.special_token_ids[SEPARATOR]]))

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
        "final_valid_bits_per_byte": final_valid * counts["valid"] / max(len(valid_text.encode()), 1) / math.log(2),
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
        "![learning curve](curves.png)" if plot else "(no learning-curve plot: matplotlib is not installed; `bpe-lm plot run` draws it later)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return report


def default_out_dir() -> Path:
    return Path("runs") / f"demo-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
