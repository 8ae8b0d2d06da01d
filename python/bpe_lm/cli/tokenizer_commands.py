"""Tokenizer commands: train-tokenizer, count-pretokens, encode, decode, tokenizer-stats, export-tokenizer,
import-tokenizer. They need no PyTorch."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bpe_lm.cli.common import (
    HelpFormatter,
    UserError,
    add_errors_argument,
    check_output_file,
    check_text_input,
    check_writable_directory,
    load_tokenizer,
    peak_rss_mb,
    positive_int,
)
from bpe_lm.units import format_duration


def add_train_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-tokenizer",
        help="train a byte-level BPE tokenizer on text files",
        description="Train a byte-level BPE tokenizer (CS336 semantics) on .txt or .txt.gz files and write "
        "DIR/vocab.json, DIR/merges.txt (GPT-2 format) and DIR/tokenizer_config.json.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="text files (.txt or .txt.gz)")
    p.add_argument(
        "--from-counts",
        nargs="+",
        metavar="COUNTS",
        help="train from count files of `bpe-lm count-pretokens` (e.g. one per shard) instead of text",
    )
    p.add_argument(
        "--vocab",
        type=positive_int,
        default=10000,
        help="vocabulary size, counting the 256 bytes and the special tokens",
    )
    p.add_argument(
        "--special-token",
        action="append",
        dest="special_tokens",
        metavar="TOK",
        help="special token (repeatable); default: <|endoftext|>",
    )
    p.add_argument("--no-special-tokens", action="store_true", help="train without any special token")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    p.add_argument("--threads", type=positive_int, default=None, help="worker threads (default: all cores)")
    add_errors_argument(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="write into an existing DIR, replacing the tokenizer's three files (other files are kept)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train_tokenizer)


def run_train_tokenizer(args: argparse.Namespace) -> None:
    from bpe_lm._io import check_new_directory, text_size
    from bpe_lm.tokenizer import GPT2_PATTERN, check_vocab_size, save_tokenizer_dir, train_bpe

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
    try:
        check_vocab_size(args.vocab, len(specials))
    except ValueError as e:
        raise UserError(f"--vocab: {e}") from None
    for path in args.inputs:
        check_text_input(path)
    for token in specials:
        if len(token.encode("utf-8")) == 1:
            raise UserError(
                f"--special-token {token!r}: a single byte is already one of the 256 byte tokens; a special token needs two or more bytes"
            )
    out = Path(args.output)
    check_new_directory(out, args.force)
    check_writable_directory(out)

    start = time.perf_counter()
    vocab, merges = train_bpe(
        args.inputs, args.vocab, specials, num_threads=args.threads, progress=not args.quiet, errors=args.errors
    )
    elapsed = time.perf_counter() - start
    input_bytes = sum(text_size(p) for p in args.inputs)
    save_tokenizer_dir(
        out,
        vocab,
        merges,
        specials,
        GPT2_PATTERN,
        force=args.force,
        extra={"trained_on": [os.path.basename(p) for p in args.inputs]},
    )

    longest = max(vocab.values(), key=len)
    files = f"{len(args.inputs)} file{'s' if len(args.inputs) > 1 else ''}"
    print(f"trained {len(vocab)} tokens ({len(merges)} merges) on {files} ({input_bytes / 1e6:.1f} MB of text, {input_bytes / 1e6 / max(elapsed, 1e-9):.1f} MB/s) "
          f"in {format_duration(elapsed)}", file=sys.stderr)  # fmt: skip
    print(
        f"peak memory {peak_rss_mb():.0f} MB; longest token ({len(longest)} bytes): {longest.decode('utf-8', errors='replace')!r}",
        file=sys.stderr,
    )
    if len(vocab) < args.vocab:
        print(f"note: stopped at {len(vocab)} tokens: no pair of tokens was left to merge", file=sys.stderr)
    print(f"wrote {out}/vocab.json, merges.txt, tokenizer_config.json", file=sys.stderr)


def train_tokenizer_from_counts(args: argparse.Namespace) -> None:
    from bpe_lm._io import check_new_directory
    from bpe_lm.tokenizer import save_tokenizer_dir, train_from_count_files

    if args.special_tokens or args.no_special_tokens:
        raise UserError("with --from-counts, the special tokens are the ones the counts were made with")
    for path in args.from_counts:
        if not Path(path).is_file():
            raise UserError(f"{path}: no such file")
    out = Path(args.output)
    check_new_directory(out, args.force)
    check_writable_directory(out)
    start = time.perf_counter()
    vocab, merges, specials, pattern, distinct = train_from_count_files(
        args.from_counts, args.vocab, progress=not args.quiet
    )
    save_tokenizer_dir(
        out,
        vocab,
        merges,
        specials,
        pattern,
        force=args.force,
        extra={"trained_on": [os.path.basename(p) for p in args.from_counts]},
    )
    print(
        f"trained {len(vocab)} tokens ({len(merges)} merges) from {distinct:,} distinct pre-tokens in {format_duration(time.perf_counter() - start)}; wrote {out}",
        file=sys.stderr,
    )


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
    p.add_argument(
        "--special-token",
        action="append",
        dest="special_tokens",
        metavar="TOK",
        help="special token (repeatable); default: <|endoftext|>",
    )
    p.add_argument("--threads", type=positive_int, default=None, help="worker threads (default: all cores)")
    add_errors_argument(p)
    p.add_argument("--force", action="store_true", help="replace COUNTS if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_count_pretokens)


def run_count_pretokens(args: argparse.Namespace) -> None:
    from bpe_lm.shards import parse_shard, shard_range
    from bpe_lm.tokenizer import count_pretokens

    specials = list(dict.fromkeys(args.special_tokens or ["<|endoftext|>"]))
    for path in args.inputs:
        check_text_input(path)
    check_output_file(args.output, args.force)
    ranges = None
    if args.shard:
        if len(args.inputs) != 1:
            raise UserError("--shard takes a single INPUT")
        ranges = [shard_range(args.inputs[0], *parse_shard(args.shard), specials)]
    distinct = count_pretokens(
        args.inputs,
        args.output,
        specials,
        byte_ranges=ranges,
        num_threads=args.threads,
        progress=not args.quiet,
        errors=args.errors,
    )
    print(f"wrote {args.output}: {distinct:,} distinct pre-tokens", file=sys.stderr)


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
    p.add_argument(
        "--dtype",
        choices=["auto", "uint16", "uint32"],
        default="auto",
        help="id type; auto is uint16 when the vocabulary fits",
    )
    add_errors_argument(p)
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="encode only shard I (from 0) of N, cut at document boundaries; the N outputs concatenate to the whole",
    )
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
    if not tok.fast_pretokenizer:
        print(
            f"note: {args.tokenizer}'s pattern is not GPT-2's (nor a known spelling of it), so it runs on the "
            "general regex engine, several times slower than the built-in scanner",
            file=sys.stderr,
        )
    start = time.perf_counter()
    count = tok.encode_file(
        args.input,
        out,
        dtype=dtype,
        num_threads=args.threads,
        errors=args.errors,
        progress=not args.quiet,
        byte_range=byte_range,
    )
    elapsed = time.perf_counter() - start
    size = byte_range[1] - byte_range[0] if byte_range else text_size(args.input)  # text, decompressed
    print(
        f"encoded {size / 1e6:.1f} MB of text into {count:,} tokens in {format_duration(elapsed)} ({size / 1e6 / max(elapsed, 1e-9):.1f} MB/s); peak memory {peak_rss_mb():.0f} MB",
        file=sys.stderr,
    )
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

    from bpe_lm.formats import load_tokens

    if not Path(args.input).is_file():
        raise UserError(f"{args.input}: no such file")
    if args.output != "-":
        check_output_file(args.output, args.force)
    tok = load_tokenizer(args.tokenizer)
    try:
        ids = load_tokens(args.input)
    except ValueError as e:
        raise UserError(str(e)) from None
    try:
        data = tok.decode_bytes(np.asarray(ids))
    except ValueError as e:  # an id beyond the vocabulary: say which file holds it
        raise UserError(f"{args.input}: {e}") from None
    if args.output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    from bpe_lm._io import atomic_write

    atomic_write(args.output, data)


def add_tokenizer_stats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenizer-stats",
        help="compare tokenizers on corpora: compression, throughput, vocabulary use and overlap",
        description="For every tokenizer × corpus, on a seeded random sample of documents (split on <|endoftext|>): "
        "bytes per token, tokens per document, share of the vocabulary used, encoding MB/s and the projected time "
        "for --project bytes; longest tokens, id dtype, and pairwise vocabulary overlap. Speed is measured warm, "
        "on text not seen before: the 4 MB that follow the corpus's first 1 MB (the warm-up).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("corpora", nargs="+", metavar="CORPUS", help="text files (.txt or .txt.gz)")
    p.add_argument(
        "--tokenizer", action="append", required=True, metavar="DIR", help="tokenizer directory (repeatable)"
    )
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
    p = sub.add_parser(
        "export-tokenizer", help="write a tokenizer for HF tokenizers or tiktoken", formatter_class=HelpFormatter
    )
    p.add_argument("tokenizer", metavar="DIR", help="tokenizer directory")
    p.add_argument(
        "--format", required=True, choices=["hf", "tiktoken"], help="hf: tokenizer.json; tiktoken: a base64 rank file"
    )
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
    p = sub.add_parser(
        "import-tokenizer",
        help="read an HF tokenizer.json or a tiktoken rank file into a tokenizer directory",
        formatter_class=HelpFormatter,
    )
    p.add_argument("input", metavar="FILE")
    p.add_argument("--format", required=True, choices=["hf", "tiktoken"])
    p.add_argument(
        "--special-token",
        action="append",
        default=[],
        metavar="TOK=ID",
        help="tiktoken only: a special token and its id (repeatable)",
    )
    p.add_argument("--pattern", default=None, help="tiktoken only: the pre-tokenization regex (default: GPT-2's)")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument(
        "--force",
        action="store_true",
        help="write into an existing DIR, replacing the tokenizer's three files (other files are kept)",
    )
    p.set_defaults(func=run_import_tokenizer)


def run_import_tokenizer(args: argparse.Namespace) -> None:
    from bpe_lm._io import check_new_directory
    from bpe_lm.tokenizer import GPT2_PATTERN, Tokenizer

    if not Path(args.input).is_file():
        raise UserError(f"{args.input}: no such file")
    check_new_directory(args.output, args.force)
    if args.format == "hf":
        if args.special_token or args.pattern:
            raise UserError("--special-token and --pattern are for --format tiktoken (tokenizer.json holds both)")
        tok = Tokenizer.from_hf(args.input)
    else:
        specials = {}
        for item in args.special_token:
            name, sep, value = item.rpartition("=")
            if not sep or not name or not value.isdigit():
                raise UserError(f"--special-token {item!r}: expected TOKEN=ID, e.g. '<|endoftext|>=50256'")
            specials[name] = int(value)
        tok = Tokenizer.from_tiktoken(args.input, specials, pattern=args.pattern or GPT2_PATTERN)
    tok.save(args.output, force=args.force)
    print(f"wrote {args.output} ({tok.vocab_size} tokens, {len(tok.merges)} merges)", file=sys.stderr)
