"""The `bpe-lm` command. Each subcommand checks its inputs before any heavy work, reports errors as one
line naming the file or argument (exit status 1), and never leaves a half-written output behind."""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from bpe_lm import __version__


class UserError(Exception):
    """A problem with the user's input: printed as one line, exit status 1."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows real defaults only: not for flags, nor where the help text already explains the default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------------------------------
# Helpers shared by subcommands


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def check_text_input(path: str) -> None:
    """A readable, non-empty text file (.txt, or gzip whose content is not empty)."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: no such file")
    if p.is_dir():
        raise UserError(f"{path}: is a directory, expected a text file")
    if not os.access(p, os.R_OK):
        raise UserError(f"{path}: permission denied")
    if p.stat().st_size == 0:
        raise UserError(f"{path}: is empty")
    with open(p, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    if gz:
        try:
            with gzip.open(p, "rb") as f:
                empty = f.read(1) == b""
        except (OSError, EOFError) as e:
            raise UserError(f"{path}: not a valid gzip file ({e})") from None
        if empty:
            raise UserError(f"{path}: is empty (after decompression)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes} min {sec} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def load_tokenizer(directory: str):
    from bpe_lm.tokenizer import Tokenizer

    if not Path(directory).is_dir():
        raise UserError(f"{directory}: tokenizer directory not found (train one with `bpe-lm train-tokenizer`)")
    return Tokenizer.load(directory)


# ----------------------------------------------------------------------------------------------------
# train-tokenizer


def add_train_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-tokenizer",
        help="train a byte-level BPE tokenizer on text files",
        description="Train a byte-level BPE tokenizer (CS336 semantics) on .txt or .txt.gz files and write "
        "DIR/vocab.json, DIR/merges.txt (GPT-2 format) and DIR/tokenizer_config.json.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="text files (.txt or .txt.gz)")
    p.add_argument("--vocab", type=positive_int, default=10000, help="vocabulary size, counting the 256 bytes and the special tokens")
    p.add_argument("--special-token", action="append", dest="special_tokens", metavar="TOK", help="special token (repeatable); default: <|endoftext|>")
    p.add_argument("--no-special-tokens", action="store_true", help="train without any special token")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.add_argument("--threads", type=positive_int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train_tokenizer)


def run_train_tokenizer(args: argparse.Namespace) -> None:
    from bpe_lm.tokenizer import GPT2_PATTERN, save_tokenizer_dir, train_bpe

    if args.no_special_tokens and args.special_tokens:
        raise UserError("--no-special-tokens and --special-token contradict each other")
    specials = [] if args.no_special_tokens else (args.special_tokens or ["<|endoftext|>"])
    if any(not s for s in specials):
        raise UserError("--special-token: must not be empty")
    specials = list(dict.fromkeys(specials))
    minimum = 256 + len(specials)
    if args.vocab < minimum:
        raise UserError(f"--vocab {args.vocab} is smaller than 256 bytes + {len(specials)} special tokens = {minimum}")
    for path in args.inputs:
        check_text_input(path)
    out = Path(args.output)
    if out.exists() and not args.force:
        raise UserError(f"{out}: already exists (use --force to replace it)")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")

    start = time.perf_counter()
    vocab, merges = train_bpe(args.inputs, args.vocab, specials, num_threads=args.threads, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    input_bytes = sum(os.path.getsize(p) for p in args.inputs)
    save_tokenizer_dir(out, vocab, merges, specials, GPT2_PATTERN, force=args.force, extra={"trained_on": [os.path.basename(p) for p in args.inputs]})

    longest = max(vocab.values(), key=len)
    files = f"{len(args.inputs)} file{'s' if len(args.inputs) > 1 else ''}"
    print(f"trained {len(vocab)} tokens ({len(merges)} merges) on {files} ({input_bytes / 1e6:.1f} MB on disk) in {format_seconds(elapsed)}", file=sys.stderr)
    print(f"peak memory {peak_rss_mb():.0f} MB; longest token ({len(longest)} bytes): {longest.decode('utf-8', errors='replace')!r}", file=sys.stderr)
    if len(vocab) < args.vocab:
        print(f"note: stopped at {len(vocab)} tokens: no pair of tokens was left to merge", file=sys.stderr)
    print(f"wrote {out}/vocab.json, merges.txt, tokenizer_config.json", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------
# encode / decode


def add_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="encode a text file to a .npy array of token ids",
        description="Stream a .txt or .txt.gz file through the tokenizer into a .npy array (written to a "
        "temporary file and renamed, so a failed run leaves nothing behind).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="text file (.txt or .txt.gz)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.npy", help="output .npy file")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory from train-tokenizer")
    p.add_argument("--threads", type=positive_int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--dtype", choices=["auto", "uint16", "uint32"], default="auto", help="id type; auto is uint16 when the vocabulary fits")
    p.add_argument("--errors", choices=["strict", "replace"], default="strict", help="invalid UTF-8: fail with its byte offset, or replace with U+FFFD")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_encode)


def run_encode(args: argparse.Namespace) -> None:
    check_text_input(args.input)
    out = Path(args.output)
    if out.is_dir():
        raise UserError(f"{out}: is a directory, expected a .npy file name")
    if not out.parent.exists() and str(out.parent):
        raise UserError(f"{out.parent}: output directory does not exist")
    tok = load_tokenizer(args.tokenizer)
    dtype = None if args.dtype == "auto" else args.dtype
    if dtype == "uint16" and tok.vocab_size > 1 << 16:
        raise UserError(f"--dtype uint16 cannot hold ids of a vocabulary of {tok.vocab_size} tokens; use uint32 or auto")
    start = time.perf_counter()
    count = tok.encode_file(args.input, out, dtype=dtype, num_threads=args.threads, errors=args.errors, progress=not args.quiet)
    elapsed = time.perf_counter() - start
    size = os.path.getsize(args.input)
    print(f"encoded {size / 1e6:.1f} MB into {count:,} tokens in {format_seconds(elapsed)} ({size / 1e6 / max(elapsed, 1e-9):.1f} MB/s); peak memory {peak_rss_mb():.0f} MB", file=sys.stderr)
    print(f"wrote {out} ({tok.default_dtype() if dtype is None else dtype})", file=sys.stderr)


def add_decode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decode",
        help="decode a .npy array of token ids back to text",
        formatter_class=HelpFormatter,
    )
    p.add_argument("input", metavar="INPUT.npy", help="token ids (.npy)")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory")
    p.add_argument("-o", "--output", default="-", metavar="OUT", help="output text file, - for stdout")
    p.set_defaults(func=run_decode)


def run_decode(args: argparse.Namespace) -> None:
    import numpy as np

    if not Path(args.input).is_file():
        raise UserError(f"{args.input}: no such file")
    tok = load_tokenizer(args.tokenizer)
    try:
        ids = np.load(args.input, mmap_mode="r")
    except ValueError as e:
        raise UserError(f"{args.input}: not a .npy array of token ids ({e})") from None
    data = tok.decode_bytes(np.asarray(ids))
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    out = Path(args.output)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------------------------------
# accounting


def add_accounting(sub: argparse._SubParsersAction) -> None:
    from bpe_lm.accounting import PEAK_FLOPS, PRESETS

    p = sub.add_parser(
        "accounting",
        help="parameters, FLOPs, memory and training time of a model configuration",
        description="Print parameters by component, forward FLOPs by matrix multiply, AdamW training memory and "
        "training time for a token budget. Give a --preset, explicit dimensions, or both (dimensions override).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="a known configuration")
    for name in ("vocab-size", "context-length", "num-layers", "d-model", "num-heads", "d-ff"):
        p.add_argument(f"--{name}", type=positive_int, help=f"{name.replace('-', ' ')} (overrides the preset)")
    p.add_argument("--ffn", choices=["swiglu", "silu"], default="swiglu", help="feed-forward type")
    p.add_argument("--norm", choices=["pre", "post", "none"], default="pre")
    p.add_argument("--tie-embeddings", action="store_true")
    p.add_argument("--batch-size", type=positive_int, default=1, help="sequences per step, for memory and FLOPs per step")
    p.add_argument("--tokens", type=float, default=327.68e6, help="training token budget for the time estimate")
    p.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation for the time estimate")
    p.add_argument("--peak", default="h100-bf16", help=f"peak FLOP/s: one of {', '.join(PEAK_FLOPS)}, or a number")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_accounting)


def run_accounting(args: argparse.Namespace) -> None:
    import json

    from bpe_lm.accounting import PEAK_FLOPS, PRESETS, account, render
    from bpe_lm.model import ModelConfig

    dims = dict(PRESETS[args.preset]) if args.preset else {}
    for name in ("vocab_size", "context_length", "num_layers", "d_model", "num_heads", "d_ff"):
        if getattr(args, name) is not None:
            dims[name] = getattr(args, name)
    missing = [n for n in ("vocab_size", "context_length", "num_layers", "d_model", "num_heads") if n not in dims]
    if missing:
        raise UserError(f"give --preset or all of: {', '.join('--' + n.replace('_', '-') for n in missing)}")
    if args.peak in PEAK_FLOPS:
        peak_name, peak = args.peak, PEAK_FLOPS[args.peak]
    else:
        try:
            peak_name, peak = f"{float(args.peak):g} FLOP/s", float(args.peak)
        except ValueError:
            raise UserError(f"--peak {args.peak!r}: expected one of {', '.join(PEAK_FLOPS)} or a number of FLOP/s") from None
    if not 0 < args.mfu <= 1:
        raise UserError(f"--mfu {args.mfu}: expected a fraction in (0, 1]")
    config = ModelConfig(**dims, ffn=args.ffn, norm=args.norm, tie_embeddings=args.tie_embeddings)
    acc = account(config, args.batch_size)
    if args.json:
        print(json.dumps(acc.to_dict(args.tokens, peak, args.mfu), indent=2))
    else:
        print(render(acc, args.tokens, peak_name, peak, args.mfu))


# ----------------------------------------------------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_train_tokenizer, add_encode, add_decode, add_accounting]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bpe-lm", description="Raw text to a trained language model: BPE tokenizer training and encoding, and a Transformer LM.")
    parser.add_argument("--version", action="version", version=f"bpe-lm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def describe_error(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    return str(err)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        print(f"bpe-lm {args.command}: interrupted; nothing was written", file=sys.stderr)
        return 130
    except (UserError, ValueError, OSError, KeyError) as err:
        print(f"bpe-lm {args.command}: error: {describe_error(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
