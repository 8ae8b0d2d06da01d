"""The `bpe-lm` command. Each subcommand checks its inputs before any heavy work, reports errors as one
line naming the file or argument (exit status 1), and never leaves a half-written output behind."""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import shutil
import sys
import time
import traceback
import warnings
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


def check_output_file(path: str | os.PathLike[str], force: bool) -> None:
    from bpe_lm._io import check_new_output

    check_new_output(path, force)
    check_writable_directory(Path(path).parent)


def check_writable_directory(path: str | os.PathLike[str]) -> None:
    """Before heavy work: the nearest existing ancestor of `path` is a directory we may create files in
    (missing directories are created when writing)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise UserError(f"{p}: is not a directory, so {path} cannot be created")
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{p}: permission denied (cannot write {path})")


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
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="text files (.txt or .txt.gz)")
    p.add_argument("--from-counts", nargs="+", metavar="COUNTS", help="train from count files of `bpe-lm count-pretokens` (e.g. one per shard) instead of text")
    p.add_argument("--vocab", type=positive_int, default=10000, help="vocabulary size, counting the 256 bytes and the special tokens")
    p.add_argument("--special-token", action="append", dest="special_tokens", metavar="TOK", help="special token (repeatable); default: <|endoftext|>")
    p.add_argument("--no-special-tokens", action="store_true", help="train without any special token")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.add_argument("--threads", type=positive_int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--errors", choices=["strict", "replace"], default="strict", help="invalid UTF-8: fail with its byte offset, or replace with U+FFFD")
    p.add_argument("--force", action="store_true", help="write into an existing DIR, replacing the tokenizer's three files (other files are kept)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train_tokenizer)


def run_train_tokenizer(args: argparse.Namespace) -> None:
    from bpe_lm._io import check_new_directory, text_size
    from bpe_lm.tokenizer import GPT2_PATTERN, save_tokenizer_dir, train_bpe

    if bool(args.inputs) == bool(args.from_counts):
        raise UserError("give text INPUT files or --from-counts files (one of the two)")
    if args.from_counts:
        return train_tokenizer_from_counts(args)
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
    for token in specials:
        if len(token.encode("utf-8")) == 1:
            raise UserError(f"--special-token {token!r}: a single byte is already one of the 256 byte tokens; a special token needs two or more bytes")
    out = Path(args.output)
    check_new_directory(out, args.force)
    check_writable_directory(out)

    start = time.perf_counter()
    vocab, merges = train_bpe(args.inputs, args.vocab, specials, num_threads=args.threads, progress=not args.quiet, errors=args.errors)
    elapsed = time.perf_counter() - start
    input_bytes = sum(text_size(p) for p in args.inputs)
    save_tokenizer_dir(out, vocab, merges, specials, GPT2_PATTERN, force=args.force, extra={"trained_on": [os.path.basename(p) for p in args.inputs]})

    longest = max(vocab.values(), key=len)
    files = f"{len(args.inputs)} file{'s' if len(args.inputs) > 1 else ''}"
    print(f"trained {len(vocab)} tokens ({len(merges)} merges) on {files} ({input_bytes / 1e6:.1f} MB of text, {input_bytes / 1e6 / max(elapsed, 1e-9):.1f} MB/s) "
          f"in {format_seconds(elapsed)}", file=sys.stderr)  # fmt: skip
    print(f"peak memory {peak_rss_mb():.0f} MB; longest token ({len(longest)} bytes): {longest.decode('utf-8', errors='replace')!r}", file=sys.stderr)
    if len(vocab) < args.vocab:
        print(f"note: stopped at {len(vocab)} tokens: no pair of tokens was left to merge", file=sys.stderr)
    print(f"wrote {out}/vocab.json, merges.txt, tokenizer_config.json", file=sys.stderr)


def train_tokenizer_from_counts(args: argparse.Namespace) -> None:
    from bpe_lm import _core
    from bpe_lm._io import check_new_directory
    from bpe_lm.shards import merge_count_files
    from bpe_lm.tokenizer import ProgressBars, save_tokenizer_dir

    if args.special_tokens or args.no_special_tokens:
        raise UserError("with --from-counts, the special tokens are the ones the counts were made with")
    for path in args.from_counts:
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file")
    out = Path(args.output)
    check_new_directory(out, args.force)
    check_writable_directory(out)
    counts, specials, pattern = merge_count_files(args.from_counts)
    if args.vocab < 256 + len(specials):
        raise UserError(f"--vocab {args.vocab} is smaller than 256 bytes + {len(specials)} special tokens = {256 + len(specials)}")
    start = time.perf_counter()
    with ProgressBars(not args.quiet) as bar:
        vocab_list, merge_ids = _core.train_from_counts(counts, args.vocab, specials, bar if not args.quiet else None)
    vocab = dict(enumerate(vocab_list))
    merges = [(vocab_list[a], vocab_list[b]) for a, b in merge_ids]
    save_tokenizer_dir(out, vocab, merges, specials, pattern, force=args.force, extra={"trained_on": [os.path.basename(p) for p in args.from_counts]})
    print(f"trained {len(vocab)} tokens ({len(merges)} merges) from {len(counts):,} distinct pre-tokens in {format_seconds(time.perf_counter() - start)}; wrote {out}", file=sys.stderr)


def add_count_pretokens(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "count-pretokens",
        help="count pre-tokens of a text file (or one shard of it) for distributed tokenizer training",
        description="Write the pre-token counts of INPUT (or of shard I of N) to a count file; "
        "`bpe-lm train-tokenizer --from-counts` on all shards' files gives the same merges as training on the whole file.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="text files (.txt or .txt.gz; plain text for --shard)")
    p.add_argument("-o", "--output", required=True, metavar="COUNTS", help="count file to write")
    p.add_argument("--shard", metavar="I/N", help="count only shard I (from 0) of N of a single INPUT")
    p.add_argument("--special-token", action="append", dest="special_tokens", metavar="TOK", help="special token (repeatable); default: <|endoftext|>")
    p.add_argument("--threads", type=positive_int, default=None, help="worker threads (default: all cores)")
    p.add_argument("--errors", choices=["strict", "replace"], default="strict", help="invalid UTF-8: fail with its byte offset, or replace with U+FFFD")
    p.add_argument("--force", action="store_true", help="replace COUNTS if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_count_pretokens)


def run_count_pretokens(args: argparse.Namespace) -> None:
    from bpe_lm import _core
    from bpe_lm.shards import parse_shard, shard_range, write_counts
    from bpe_lm.tokenizer import GPT2_PATTERN, ProgressBars

    specials = list(dict.fromkeys(args.special_tokens or ["<|endoftext|>"]))
    for path in args.inputs:
        check_text_input(path)
    check_output_file(args.output, args.force)
    ranges = None
    if args.shard:
        if len(args.inputs) != 1:
            raise UserError("--shard takes a single INPUT")
        ranges = [shard_range(args.inputs[0], *parse_shard(args.shard), specials)]
    with ProgressBars(not args.quiet) as bar:
        counts = _core.count_pretokens(args.inputs, specials, None, args.threads, bar if not args.quiet else None, ranges, args.errors == "replace")
    write_counts(args.output, counts, specials, GPT2_PATTERN)
    print(f"wrote {args.output}: {len(counts):,} distinct pre-tokens", file=sys.stderr)


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
    p.add_argument("--shard", metavar="I/N", help="encode only shard I (from 0) of N, cut at document boundaries; the N outputs concatenate to the whole")
    p.add_argument("--force", action="store_true", help="replace OUT.npy if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_encode)


def run_encode(args: argparse.Namespace) -> None:
    from bpe_lm._io import text_size

    check_text_input(args.input)
    out = Path(args.output)
    check_output_file(out, args.force)
    tok = load_tokenizer(args.tokenizer)
    dtype = None if args.dtype == "auto" else args.dtype
    byte_range = None
    if args.shard:
        from bpe_lm.shards import parse_shard, shard_range

        byte_range = shard_range(args.input, *parse_shard(args.shard), tok.special_tokens)
    start = time.perf_counter()
    count = tok.encode_file(args.input, out, dtype=dtype, num_threads=args.threads, errors=args.errors, progress=not args.quiet, byte_range=byte_range)
    elapsed = time.perf_counter() - start
    size = byte_range[1] - byte_range[0] if byte_range else text_size(args.input)  # text, decompressed
    print(f"encoded {size / 1e6:.1f} MB of text into {count:,} tokens in {format_seconds(elapsed)} ({size / 1e6 / max(elapsed, 1e-9):.1f} MB/s); peak memory {peak_rss_mb():.0f} MB", file=sys.stderr)
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
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=run_decode)


def run_decode(args: argparse.Namespace) -> None:
    import numpy as np

    if not Path(args.input).is_file():
        raise UserError(f"{args.input}: no such file")
    if args.output != "-":
        check_output_file(args.output, args.force)
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
    from bpe_lm._io import atomic_write

    atomic_write(args.output, data)


# ----------------------------------------------------------------------------------------------------
# tokenizer-stats / export-tokenizer / import-tokenizer


def add_tokenizer_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenizer-stats",
        help="compare tokenizers on corpora: compression, throughput, vocabulary use and overlap",
        description="For every tokenizer × corpus, on a seeded random sample of documents (split on <|endoftext|>): "
        "bytes per token, tokens per document, share of the vocabulary used, encoding MB/s and the projected time "
        "for --project bytes; longest tokens, id dtype, and pairwise vocabulary overlap.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("corpora", nargs="+", metavar="CORPUS", help="text files (.txt or .txt.gz)")
    p.add_argument("--tokenizer", action="append", required=True, metavar="DIR", help="tokenizer directory (repeatable)")
    p.add_argument("--docs", type=positive_int, default=1000, help="documents sampled per corpus")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default="825GB", help="corpus size for the projected encoding time (825GB: the Pile)")
    p.add_argument("--threads", type=positive_int, default=None, help="encoding threads (default: all cores)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_tokenizer_stats)


def run_tokenizer_stats(args: argparse.Namespace) -> None:
    import json

    from bpe_lm.stats import compare, parse_size, render

    try:
        project = parse_size(args.project)
    except ValueError as e:
        raise UserError(f"--project: {e}") from None
    for c in args.corpora:
        check_text_input(c)
    tokenizers = {}
    for d in args.tokenizer:
        name = Path(d).name or d
        if name in tokenizers:
            name = d
        tokenizers[name] = load_tokenizer(d)
    results = compare(tokenizers, args.corpora, args.docs, args.seed, project, args.threads)
    print(json.dumps(results, indent=2) if args.json else render(results))


def add_export_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export-tokenizer", help="write a tokenizer for HF tokenizers or tiktoken", formatter_class=HelpFormatter)
    p.add_argument("tokenizer", metavar="DIR", help="tokenizer directory")
    p.add_argument("--format", required=True, choices=["hf", "tiktoken"], help="hf: tokenizer.json; tiktoken: a base64 rank file")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(func=run_export_tokenizer)


def run_export_tokenizer(args: argparse.Namespace) -> None:
    from bpe_lm.interop import export_hf, export_tiktoken

    check_output_file(args.output, args.force)
    tok = load_tokenizer(args.tokenizer)
    if args.format == "hf":
        export_hf(tok, args.output)
        print(f"wrote {args.output}; load it with tokenizers.Tokenizer.from_file({args.output!r})", file=sys.stderr)
    else:
        snippet = export_tiktoken(tok, args.output)
        print(f"wrote {args.output}; load it with:\n{snippet}", file=sys.stderr)


def add_import_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import-tokenizer", help="read an HF tokenizer.json or a tiktoken rank file into a tokenizer directory", formatter_class=HelpFormatter)
    p.add_argument("input", metavar="FILE")
    p.add_argument("--format", required=True, choices=["hf", "tiktoken"])
    p.add_argument("--special-token", action="append", default=[], metavar="TOK=ID", help="tiktoken only: a special token and its id (repeatable)")
    p.add_argument("--pattern", default=None, help="tiktoken only: the pre-tokenization regex (default: GPT-2's)")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--force", action="store_true", help="write into an existing DIR, replacing the tokenizer's three files (other files are kept)")
    p.set_defaults(func=run_import_tokenizer)


def run_import_tokenizer(args: argparse.Namespace) -> None:
    from bpe_lm._io import check_new_directory
    from bpe_lm.interop import from_hf, from_tiktoken
    from bpe_lm.tokenizer import GPT2_PATTERN

    if not Path(args.input).is_file():
        raise UserError(f"{args.input}: no such file")
    check_new_directory(args.output, args.force)
    if args.format == "hf":
        if args.special_token or args.pattern:
            raise UserError("--special-token and --pattern are for --format tiktoken (tokenizer.json holds both)")
        tok = from_hf(args.input)
    else:
        specials = {}
        for item in args.special_token:
            name, sep, value = item.rpartition("=")
            if not sep or not name or not value.isdigit():
                raise UserError(f"--special-token {item!r}: expected TOKEN=ID, e.g. '<|endoftext|>=50256'")
            specials[name] = int(value)
        tok = from_tiktoken(args.input, specials, pattern=args.pattern or GPT2_PATTERN)
    tok.save(args.output, force=args.force)
    print(f"wrote {args.output} ({tok.vocab_size} tokens, {len(tok.merges)} merges)", file=sys.stderr)


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
# train / eval / generate / plot (need PyTorch)


def require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("this command needs PyTorch: pip install 'bpe-lm[lm]' (or pip install torch)") from None


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a Transformer LM from a TOML config",
        description="Train the Transformer LM described by a TOML config on .npy token files from `bpe-lm encode`. "
        "Writes config.toml, metrics.jsonl and checkpoint.pt to training.out_dir. Ctrl-C saves a checkpoint; --resume continues.",
        formatter_class=HelpFormatter,
    )
    add_train_arguments(p)
    p.set_defaults(func=run_train)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Shared by `bpe-lm train` and `python -m bpe_lm.train` (torchrun)."""
    p.add_argument("--config", required=True, metavar="RUN.toml", help="run configuration (see the README's Training section)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a setting (repeatable), e.g. training.batch_size=64")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint.pt")
    p.add_argument("--force", action="store_true", help="start over in an OUT_DIR that holds an earlier run (replaces its checkpoint and metrics)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> None:
    require_torch()
    from bpe_lm.train import run_from_args

    summary = run_from_args(args)
    if summary["interrupted"]:
        raise SystemExit(130)


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="loss, perplexity and bits per byte of a model on a token file", formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN", help="run directory (uses its checkpoint.pt)")
    src.add_argument("--checkpoint", metavar="CKPT", help="checkpoint file")
    p.add_argument("--data", required=True, metavar="valid.npy", help="token ids from `bpe-lm encode`")
    p.add_argument("--batch-size", type=positive_int, default=16, help="sequences per batch")
    p.add_argument("--max-batches", type=positive_int, default=None, help="evaluate at most this many batches (default: the whole file)")
    p.add_argument("--raw-text", metavar="FILE", help="the text (.txt or .txt.gz) the tokens came from, to report bits per byte; checked against the tokens")
    p.add_argument("--tokenizer", metavar="DIR", help="the tokenizer the tokens came from (needed with --raw-text)")
    p.add_argument("--text-bytes", type=positive_int, default=None, help="UTF-8 size of that text, instead of --raw-text")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> None:
    require_torch()
    import json
    import math

    import torch

    from bpe_lm._io import text_size
    from bpe_lm.data import load_tokens, sequential_batches
    from bpe_lm.generate import load_model
    from bpe_lm.train import check_data, resolve_device

    if args.raw_text and args.text_bytes:
        raise UserError("give --raw-text or --text-bytes, not both")
    if args.raw_text and not args.tokenizer:
        raise UserError("--raw-text needs --tokenizer DIR: the text is encoded to check that the tokens came from it")
    if args.raw_text:
        check_text_input(args.raw_text)
    device = resolve_device(args.device, "--device")
    tokens = load_tokens(args.data)
    text_bytes = args.text_bytes
    if args.raw_text:
        # A wrong text file would give a wrong bits per byte without any sign: check it encodes to these tokens.
        tok = load_tokenizer(args.tokenizer)
        encoded = tok.count_file(args.raw_text)
        if encoded != len(tokens):
            raise UserError(f"--raw-text {args.raw_text}: encodes to {encoded:,} tokens with {args.tokenizer}, but {args.data} holds {len(tokens):,}; "
                            "give the text these tokens were encoded from (and its tokenizer)")  # fmt: skip
        text_bytes = text_size(args.raw_text)
    model, _ = load_model(args.run or args.checkpoint, device)
    check_data(tokens, args.data, model.config)
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in sequential_batches(tokens, args.batch_size, model.config.context_length, device, args.max_batches):
            total += model(x, targets=y).item() * y.numel()
            count += y.numel()
    loss = total / count
    result = {"loss": loss, "perplexity": math.exp(min(loss, 50)), "tokens_evaluated": count}
    if text_bytes:
        # Bits per byte of the whole file, from the mean loss per token and the file's tokens per byte.
        result["bits_per_byte"] = loss * len(tokens) / text_bytes / math.log(2)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"loss {loss:.4f}  perplexity {result['perplexity']:.2f}" + (f"  bits/byte {result['bits_per_byte']:.4f}" if "bits_per_byte" in result else "") + f"  ({count:,} tokens)")


def add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="sample text from a trained model", formatter_class=HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN", help="run directory (uses its checkpoint.pt)")
    src.add_argument("--checkpoint", metavar="CKPT", help="checkpoint file")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory the model was trained with")
    p.add_argument("--prompt", default="Once upon a time", help="text to continue")
    p.add_argument("--max-tokens", type=positive_int, default=256, help="most tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (1 = off)")
    p.add_argument("--top-k", type=positive_int, default=None, help="sample among the K most likely tokens")
    p.add_argument("--seed", type=int, default=None, help="random seed, for repeatable samples")
    p.add_argument("--num-samples", type=positive_int, default=1)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context for every token")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> None:
    require_torch()
    import torch

    from bpe_lm.generate import EOT, check_vocabularies_match, generate, load_model
    from bpe_lm.train import resolve_device

    if args.temperature < 0:
        raise UserError(f"--temperature {args.temperature}: must not be negative")
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top-p {args.top_p}: must be in (0, 1]")
    tok = load_tokenizer(args.tokenizer)
    if not args.prompt and EOT not in tok.special_token_ids:
        raise UserError(f"--prompt is empty and {args.tokenizer} has no {EOT} token to start from; give a prompt")
    device = resolve_device(args.device, "--device")
    model, _ = load_model(args.run or args.checkpoint, device)
    check_vocabularies_match(tok.vocab_size, model.config, args.tokenizer)
    prompt = tok.encode(args.prompt) if args.prompt else [tok.token_to_id(EOT)]
    eos = tok.special_token_ids.get(EOT)
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed if args.seed is not None else torch.seed())
    for i in range(args.num_samples):
        ids = generate(model, prompt, args.max_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                       eos_id=eos, generator=generator, use_cache=not args.no_cache)
        if ids and ids[-1] == eos:
            ids = ids[:-1]
        if i:
            print("\n" + "-" * 40)
        print(args.prompt + tok.decode(ids))


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained model and its tokenizer as a Hugging Face Llama checkpoint",
        description="Write OUT/config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json and "
        "special_tokens_map.json, loadable with transformers' AutoModelForCausalLM and AutoTokenizer (same logits, same ids). "
        "Models that Llama cannot express (post-norm, no norm, NoPE, SiLU feed-forward) are refused.",
        formatter_class=HelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN", help="run directory (uses its checkpoint.pt)")
    src.add_argument("--checkpoint", metavar="CKPT", help="checkpoint file")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory the model was trained with")
    p.add_argument("--format", choices=["hf", "gguf"], default="hf",
                   help="hf: a directory in transformers' LlamaForCausalLM layout with safetensors weights; gguf: one file for llama.cpp")  # fmt: skip
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output directory (hf) or file (gguf)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="dtype of the saved weights (gguf: float32 or float16)")
    p.add_argument("--force", action="store_true", help="replace the export's files in an existing OUT (other files are kept)")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> None:
    require_torch()
    from bpe_lm.export import DTYPES, llama_incompatibility, to_gguf, to_hf
    from bpe_lm.generate import load_model

    from bpe_lm._io import check_new_directory

    tok = load_tokenizer(args.tokenizer)
    out = Path(args.output)
    if args.format == "gguf":
        if args.dtype == "bfloat16":
            raise UserError("--dtype bfloat16: GGUF export writes float32 or float16")
        check_output_file(out, args.force)
    else:
        check_new_directory(out, args.force)
    model, _ = load_model(args.run or args.checkpoint, "cpu")
    problem = llama_incompatibility(model.config)
    if problem:
        raise UserError(f"{args.run or args.checkpoint}: {problem}")
    if args.format == "gguf":
        to_gguf(model, tok, out, force=args.force, dtype=DTYPES[args.dtype])
        print(f"wrote {out}; run it with llama.cpp (llama-cli -m {out}) or llama_cpp.Llama({str(out)!r})", file=sys.stderr)
        return
    to_hf(model, tok, out, force=args.force, dtype=DTYPES[args.dtype])
    print(f"wrote {out}/ (config.json, model.safetensors, tokenizer files); load it with "
          f"AutoModelForCausalLM.from_pretrained({str(out)!r}) and AutoTokenizer.from_pretrained({str(out)!r})", file=sys.stderr)


def add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot learning curves of runs", formatter_class=HelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (with metrics.jsonl)")
    p.add_argument("-o", "--output", default="curves.png", help="output PNG")
    p.add_argument("--title", default=None)
    p.add_argument("--force", action="store_true", help="replace the output PNG if it exists")
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> None:
    from bpe_lm.plot import plot_runs

    check_output_file(args.output, args.force)
    for run in args.runs:
        if not (Path(run) / "metrics.jsonl").is_file():
            raise UserError(f"{run}: no metrics.jsonl (is this a run directory from `bpe-lm train`?)")
    out = plot_runs(args.runs, args.output, title=args.title)
    print(f"wrote {out}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------
# download


def add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch TinyStories (V2-GPT4) or the OpenWebText sample", formatter_class=HelpFormatter)
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


# ----------------------------------------------------------------------------------------------------
# demo


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole pipeline on a built-in corpus: tokenizer, encoding, a small LM, samples, a plot",
        description="Train a tokenizer, encode, train a small Transformer for a fixed time on CPU, print samples, and write "
        "a learning-curve PNG and a report to a fresh run directory. The built-in corpus is the docstrings of this "
        "machine's Python standard library (no download); --data runs the same pipeline on your text.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--data", metavar="PATH", help="your text (.txt or .txt.gz) instead of the built-in corpus")
    p.add_argument("--minutes", type=float, default=5.0, help="training time")
    p.add_argument("--vocab", type=positive_int, default=2048, help="tokenizer vocabulary size")
    p.add_argument("--max-mb", type=float, default=50.0, help="read at most this much of --data")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", metavar="DIR", help="run directory to create (default: runs/demo-DATE-TIME)")
    p.set_defaults(func=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> None:
    require_torch()
    from bpe_lm.demo import default_out_dir, run_demo

    if args.minutes <= 0:
        raise UserError(f"--minutes {args.minutes}: must be positive")
    if args.vocab < 257:
        raise UserError(f"--vocab {args.vocab}: must be at least 257 (256 bytes + <|endoftext|>)")
    if args.data:
        check_text_input(args.data)
    out = Path(args.output) if args.output else default_out_dir()
    if out.exists():
        raise UserError(f"{out}: already exists; choose another --output")
    check_writable_directory(out)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        plot = False
        print("bpe-lm demo: note: matplotlib is not installed, so the demo skips its plot (pip install matplotlib)", file=sys.stderr)
    else:
        plot = True
    try:
        report = run_demo(out, Path(args.data) if args.data else None, args.minutes, args.vocab, args.threads, args.max_mb, args.seed, plot=plot)
    except BaseException:
        # Everything in `out` is this run's (it did not exist before): leave nothing half-made behind.
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
            print(f"bpe-lm demo: removed the unfinished run directory {out}", file=sys.stderr)
        raise
    print("\n".join(["", *[f"sample: {s!r}" for s in report["samples"]], ""]))
    curve = f"curve {out / 'curves.png'}, " if plot else ""
    print(f"validation loss {report['first_valid_loss']:.3f} -> {report['final_valid_loss']:.3f}; "
          f"report {out / 'report.md'}, {curve}checkpoint {out / 'run' / 'checkpoint.pt'}")


# ----------------------------------------------------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_demo, add_download, add_train_tokenizer, add_count_pretokens, add_encode, add_decode, add_tokenizer_stats, add_export_tokenizer, add_import_tokenizer,
    add_accounting, add_train, add_eval, add_generate, add_export, add_plot,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bpe-lm", description="Raw text to a trained language model: BPE tokenizer training and encoding, and a Transformer LM.")
    parser.add_argument("--version", action="version", version=f"bpe-lm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error (also: BPE_LM_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def describe_error(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that are about the user's input, files or settings: one line, exit status 1. Anything else
    (KeyError, a RuntimeError from inside torch or the core, ...) is a bug and shows its traceback."""
    types: list[type[BaseException]] = [UserError, ValueError, OSError]
    if "bpe_lm.train" in sys.modules:
        types.append(sys.modules["bpe_lm.train"].TrainingError)
    return tuple(types)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings.showwarning's signature
    print(f"bpe-lm: warning: {message}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("BPE_LM_DEBUG", "") not in ("", "0")
    if not debug:
        warnings.showwarning = _one_line_warning
    try:
        args.func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        print(f"bpe-lm {args.command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except BrokenPipeError:
        # The reader went away (`bpe-lm accounting --json | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs below
        if debug or not isinstance(err, user_error_types()):
            traceback.print_exc()
            if not isinstance(err, user_error_types()):
                print(f"bpe-lm {args.command}: internal error ({type(err).__name__}); this is a bug, please report it with the traceback above", file=sys.stderr)
                return 2
        print(f"bpe-lm {args.command}: error: {describe_error(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
