"""Whole-pipeline commands: download (data sets) and demo (text to samples in one run)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from bpe_lm.cli.common import (
    HelpFormatter,
    UserError,
    add_errors_argument,
    check_inputs,
    check_writable_directory,
    number,
    positive_int,
    require_torch,
    thread_count,
)


def add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download", help="fetch TinyStories (V2-GPT4) or the OpenWebText sample", formatter_class=HelpFormatter
    )
    p.add_argument("dataset", choices=["tinystories", "owt"])
    p.add_argument("-o", "--output", default="data", metavar="DIR", help="directory for the files")
    p.add_argument("--split", choices=["train", "valid", "all"], default="all")
    p.add_argument("--base-url", default=None, help="a mirror to fetch from instead of huggingface.co (same paths)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> None:
    from bpe_lm.download import HF, download

    splits = ["train", "valid"] if args.split == "all" else [args.split]
    for path in download(args.dataset, args.output, splits, base_url=args.base_url or HF, progress=not args.quiet):
        print(f"{path} ({path.stat().st_size / 1e6:.1f} MB; sha256 in {path.name}.sha256)", file=sys.stderr)


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole pipeline on a built-in corpus: tokenizer, encoding, a small LM, samples, a plot",
        description="Train a tokenizer, encode, train a small Transformer for a fixed time on CPU, print samples, and write "
        "a learning-curve PNG and a report to a fresh run directory. The built-in corpus is the docstrings of this "
        "machine's Python standard library (no download); --data runs the same pipeline on your text.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="your corpus (text, JSON lines, parquet, Arrow; records joined by <|endoftext|>) instead of the built-in one",
    )
    p.add_argument("--minutes", type=number(0, above=True), default=5.0, help="training time")
    p.add_argument("--vocab", type=positive_int, default=2048, help="tokenizer vocabulary size")
    p.add_argument("--max-mb", type=number(0, above=True), default=50.0, help="read at most this much of --data")
    add_errors_argument(p)
    p.add_argument("--threads", type=thread_count, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", metavar="DIR", help="run directory to create (default: runs/demo-DATE-TIME)")
    p.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> None:
    from bpe_lm.demo import default_out_dir, run_demo  # torch-free until run_demo runs
    from bpe_lm.run_files import CHECKPOINT_NAME
    from bpe_lm.tokenizer import check_vocab_size

    if args.minutes <= 0:
        raise UserError(f"--minutes {args.minutes}: must be positive")
    try:
        check_vocab_size(args.vocab, 1)  # the demo's one special token, <|endoftext|>
    except ValueError as e:
        raise UserError(f"--vocab: {e}") from None
    if args.data:
        check_inputs(args.data)
    out = Path(args.output) if args.output else default_out_dir()
    if out.exists():
        raise UserError(f"{out}: already exists; choose another --output")
    check_writable_directory(out)
    require_torch()  # after the checks: a bad argument costs no import of PyTorch
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        plot = False
        print(
            "bpe-lm demo: note: matplotlib is not installed, so the demo skips its plot (pip install matplotlib)",
            file=sys.stderr,
        )
    else:
        plot = True
    try:
        report = run_demo(
            out,
            Path(args.data) if args.data else None,
            args.minutes,
            args.vocab,
            args.threads,
            args.max_mb,
            args.seed,
            plot=plot,
            errors=args.errors,
        )
    except BaseException:
        # Everything in `out` is this run's (it did not exist before): leave nothing half-made behind.
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
            print(f"bpe-lm demo: removed the unfinished run directory {out}", file=sys.stderr)
        raise
    print("\n".join(["", *[f"sample: {s!r}" for s in report["samples"]], ""]))
    curve = f"curve {out / 'curves.png'}, " if plot else ""
    print(
        f"validation loss {report['first_valid_loss']:.3f} -> {report['final_valid_loss']:.3f}; "
        f"report {out / 'report.md'}, {curve}checkpoint {out / 'run' / CHECKPOINT_NAME}"
    )
