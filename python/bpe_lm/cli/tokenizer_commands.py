"""Tokenizer commands: train-tokenizer, count-pretokens, encode, decode, tokenizer-stats, export-tokenizer,
import-tokenizer. They need no PyTorch."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import BinaryIO

from bpe_lm.cli.common import (
    INPUT_HELP,
    HelpFormatter,
    UserError,
    add_errors_argument,
    add_text_field_argument,
    check_inputs,
    check_output_file,
    check_writable_directory,
    load_tokenizer,
    peak_rss_mb,
    positive_int,
    thread_count,
)
from bpe_lm.readers import END_OF_TEXT
from bpe_lm.units import format_duration, shown_token

DECODE_CHUNK_IDS = 1 << 20  # ids decoded at a time by `bpe-lm decode`: a few MB of text


def add_train_tokenizer(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-tokenizer",
        help="train a byte-level BPE tokenizer on text files",
        description="Train a byte-level BPE tokenizer (CS336 semantics) on corpus files and write "
        "DIR/vocab.json, DIR/merges.txt (GPT-2 format) and DIR/tokenizer_config.json. Each record of JSON lines, "
        "parquet or Arrow is a document of its own (its special-token strings are text); text files are split "
        "on the special tokens.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help=INPUT_HELP)
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
    add_text_field_argument(p)
    p.add_argument("--threads", type=thread_count, default=None, help="worker threads (default: all cores)")
    add_engine_argument(p)
    add_errors_argument(p)
    p.add_argument(
        "--force",
        action="store_true",
        help="write into an existing DIR, replacing the tokenizer's three files (other files are kept)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train_tokenizer)


def add_engine_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: this process; ray: tasks on a Ray cluster ($RAY_ADDRESS, as `ray job submit` sets it; a "
        "local Ray when unset), same output (pip install 'bpe-lm[ray]')",
    )


def _separators(specials: list[str]) -> list[bytes]:
    return [s.encode("utf-8") for s in specials]


def _summary(stats, n_inputs: int) -> str:
    """'12.3 MB of text from 3 inputs (4,011 documents, 1 empty or null record skipped)'."""
    docs = ""
    if stats.documents or stats.skipped:
        skipped = f", {_counted(stats.skipped, 'empty or null record')} skipped" if stats.skipped else ""
        docs = f" ({_counted(stats.documents, 'document')}{skipped})"
    return f"{stats.text_bytes / 1e6:.1f} MB of text from {_counted(n_inputs, 'input')}{docs}"


def _rate(stats, elapsed: float) -> str:
    return f"{format_duration(elapsed)} ({stats.text_bytes / 1e6 / max(elapsed, 1e-9):.1f} MB/s)"


def _counted(n: int, noun: str) -> str:
    """'1 input', '3 inputs', '4,011 documents'."""
    return f"{n:,} {noun}{'s' if n != 1 else ''}"


def run_train_tokenizer(args: argparse.Namespace) -> None:
    from bpe_lm._io import check_new_directory
    from bpe_lm.ingest import whole_units
    from bpe_lm.readers import Stats
    from bpe_lm.tokenizer import (
        GPT2_PATTERN,
        _core,
        check_vocab_size,
        default_num_threads,
        save_tokenizer_dir,
        train_on_units,
    )

    if bool(args.inputs) == bool(args.from_counts):
        raise UserError("give text INPUT files or --from-counts files (one of the two)")
    if args.from_counts:
        return train_tokenizer_from_counts(args)
    if args.no_special_tokens and args.special_tokens:
        raise UserError("--no-special-tokens and --special-token contradict each other")
    specials = [] if args.no_special_tokens else (args.special_tokens or [END_OF_TEXT])
    if any(not s for s in specials):
        raise UserError("--special-token: must not be empty")
    specials = list(dict.fromkeys(specials))
    try:
        check_vocab_size(args.vocab, len(specials))
    except ValueError as e:
        raise UserError(f"--vocab: {e}") from None
    inputs = check_inputs(args.inputs)
    for token in specials:
        if len(token.encode("utf-8")) == 1:
            raise UserError(
                f"--special-token {token!r}: a single byte is already one of the 256 byte tokens; a special token needs two or more bytes"
            )
    out = Path(args.output)
    check_new_directory(out, args.force)
    check_writable_directory(out)

    start = time.perf_counter()
    counter = _core.PretokenCounter(specials, None)
    if args.engine == "ray":
        from bpe_lm.ray_engine import count_on_ray

        stats = count_on_ray(counter, specials, inputs, text_field=args.text_field,
                             errors=args.errors, progress=not args.quiet)  # fmt: skip
        vocab, merges = train_on_units(counter, [], args.vocab, progress=not args.quiet)
    else:
        stats = Stats()
        vocab, merges = train_on_units(counter, whole_units(inputs), args.vocab, num_threads=default_num_threads(args.threads),
                                       progress=not args.quiet, errors=args.errors, text_field=args.text_field, stats=stats)  # fmt: skip
    elapsed = time.perf_counter() - start
    save_tokenizer_dir(
        out,
        vocab,
        merges,
        specials,
        GPT2_PATTERN,
        force=args.force,
        extra={"trained_on": [os.path.basename(os.path.normpath(i.path)) for i in inputs]},
    )

    longest = max(vocab.values(), key=len)
    print(
        f"trained {len(vocab)} tokens ({len(merges)} merges) on {_summary(stats, len(inputs))} in {_rate(stats, elapsed)}",
        file=sys.stderr,
    )
    print(
        f"peak memory {peak_rss_mb():.0f} MB; longest token ({len(longest)} bytes): {shown_token(longest)}",
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
        help="count pre-tokens of corpus files (or one shard of them) for distributed tokenizer training",
        description="Write the pre-token counts of the INPUTs (or of shard I of N of them) to a count file; "
        "`bpe-lm train-tokenizer --from-counts` on all shards' files gives the same merges as training on all of it.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=INPUT_HELP)
    p.add_argument("-o", "--output", required=True, metavar="COUNTS", help="count file to write")
    p.add_argument("--shard", metavar="I/N", help=SHARD_HELP)
    p.add_argument(
        "--special-token",
        action="append",
        dest="special_tokens",
        metavar="TOK",
        help="special token (repeatable); default: <|endoftext|>",
    )
    add_text_field_argument(p)
    p.add_argument("--threads", type=thread_count, default=None, help="worker threads (default: all cores)")
    add_engine_argument(p)
    add_errors_argument(p)
    p.add_argument("--force", action="store_true", help="replace COUNTS if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_count_pretokens)


SHARD_HELP = (
    "only shard I (from 0) of N: a run of whole units (byte ranges of plain text cut at document boundaries, "
    "of plain JSON lines cut at line ends, parquet row groups, Arrow files, whole compressed files) of about "
    "1/N of the bytes; the N shards' outputs, in order, make the whole"
)


def _units(inputs, shard: str | None, separators: list[bytes]):
    """The units to work on: the whole inputs, or shard I of N of them."""
    from bpe_lm.ingest import whole_units
    from bpe_lm.readers import InputError, plan_units, shard_units

    if not shard:
        return whole_units(inputs)
    from bpe_lm.shards import parse_shard

    try:
        index, count = parse_shard(shard)
        if any(i.format == "text" and i.compression == "none" for i in inputs):
            from bpe_lm.shards import check_separators

            check_separators([s.decode("utf-8") for s in separators])
        return shard_units(plan_units(inputs, count, separators), index, count)
    except (InputError, ValueError) as e:
        raise UserError(str(e)) from None


def run_count_pretokens(args: argparse.Namespace) -> None:
    from bpe_lm.tokenizer import _core, default_num_threads, write_counts

    specials = list(dict.fromkeys(args.special_tokens or [END_OF_TEXT]))
    inputs = check_inputs(args.inputs)
    check_output_file(args.output, args.force)
    _refuse_output_among_inputs(args.output, inputs)
    start = time.perf_counter()
    counter = _core.PretokenCounter(specials, None)
    if args.engine == "ray":
        from bpe_lm._io import atomic_output
        from bpe_lm.ray_engine import count_on_ray

        if args.shard:
            raise UserError("--shard and --engine ray: Ray splits the work itself; give one or the other")
        count_on_ray(counter, specials, inputs, text_field=args.text_field, errors=args.errors,
                     progress=not args.quiet)  # fmt: skip
        with atomic_output(args.output) as tmp:
            distinct = counter.write(os.fspath(tmp))
    else:
        units = _units(inputs, args.shard, _separators(specials))
        distinct = write_counts(counter, units, args.output, progress=not args.quiet, num_threads=default_num_threads(args.threads),
                                errors=args.errors, text_field=args.text_field)  # fmt: skip
    print(
        f"wrote {args.output}: {distinct:,} distinct pre-tokens in {format_duration(time.perf_counter() - start)}",
        file=sys.stderr,
    )


def _refuse_output_among_inputs(output: str | os.PathLike[str], inputs) -> None:
    """An output that is one of the inputs would destroy it: refused, even with --force."""
    from bpe_lm.readers import is_url

    out = Path(output)
    if is_url(os.fspath(output)) or not out.exists():
        return
    for inp in inputs:
        for f in inp.files:
            if os.path.samefile(f, out):
                raise UserError(f"{output}: is an input of this command ({f}); write the output elsewhere")


def add_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="encode corpus files to a .npy array of token ids (or one per input)",
        description="Stream corpus files through the tokenizer into one .npy array, their ids concatenated in the "
        "order given (-o OUT.npy), or into one .npy per input plus a manifest.json (-o DIR/; a rerun skips inputs "
        "whose output is complete and current). Text files keep their separators (special-token strings become "
        "their ids); each record of JSON lines, parquet or Arrow becomes encode_ordinary(text) + [<|endoftext|>]. "
        "Outputs are written to a temporary file and renamed, so a failed run leaves nothing half-written.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=INPUT_HELP)
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT.npy|DIR/", help="output .npy file, or a directory (ending in /)"
    )
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory from train-tokenizer")
    add_text_field_argument(p)
    p.add_argument("--threads", type=thread_count, default=None, help="worker threads (default: all cores)")
    add_engine_argument(p)
    p.add_argument(
        "--dtype",
        choices=["auto", "uint16", "uint32"],
        default="auto",
        help="id type; auto is uint16 when the vocabulary fits",
    )
    add_errors_argument(p)
    p.add_argument("--shard", metavar="I/N", help=SHARD_HELP)
    p.add_argument("--force", action="store_true", help="replace OUT.npy (or DIR's outputs) if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_encode)


def run_encode(args: argparse.Namespace) -> None:
    from bpe_lm.ingest import end_of_text_id
    from bpe_lm.readers import InputError, is_url
    from bpe_lm.tokenizer import default_num_threads

    inputs = check_inputs(args.inputs)
    remote_out = is_url(args.output)
    to_dir = args.output.endswith(("/", os.sep)) or (not remote_out and Path(args.output).is_dir())
    out: Path | str = args.output if remote_out else Path(args.output)
    if to_dir and args.shard:
        raise UserError("--shard writes one file: give -o OUT.npy (the shards' files, in order, make the whole)")
    if args.shard and args.engine == "ray":
        raise UserError("--shard and --engine ray: Ray splits the work itself; give one or the other")
    if remote_out:
        from bpe_lm.readers import InputError, _fsspec

        try:
            fs, path = _fsspec(args.output)
        except InputError as e:
            raise UserError(str(e)) from None
        if not to_dir and fs.exists(path) and not args.force:
            raise UserError(f"{args.output}: already exists (use --force to replace it)")
    elif not to_dir:
        check_output_file(out, args.force)
        _refuse_output_among_inputs(out, inputs)
    else:
        check_writable_directory(out)
    tok = load_tokenizer(args.tokenizer)
    if any(i.is_record_format for i in inputs):
        try:
            end_of_text_id(tok)
        except InputError as e:
            raise UserError(str(e)) from None
    dtype = None if args.dtype == "auto" else args.dtype
    if not tok.fast_pretokenizer:
        print(
            f"note: {args.tokenizer}'s pattern is not GPT-2's (nor a known spelling of it), so it runs on the "
            "general regex engine, several times slower than the built-in scanner",
            file=sys.stderr,
        )
    threads = default_num_threads(args.threads)
    common = {"dtype": dtype, "text_field": args.text_field, "errors": args.errors, "progress": not args.quiet}
    start = time.perf_counter()
    if args.engine == "ray":
        from bpe_lm.ray_engine import encode_on_ray

        def encode_one(units, target):
            return encode_on_ray(tok, units, target, **common)
    else:

        def encode_one(units, target):
            return tok.encode_units(units, target, num_threads=threads, **common)

    if to_dir:
        from bpe_lm.manifest import MANIFEST_FILE, encode_to_directory
        from bpe_lm.progress import ProgressBars

        if args.engine == "ray":

            def encode_many(units, targets, progress):
                return [encode_one([unit], target) for unit, target in zip(units, targets)]
        else:

            def encode_many(units, targets, progress):
                return tok.encode_units_each(
                    units, targets, num_threads=threads, **{**common, "progress": progress or False}
                )

        with ProgressBars(not args.quiet, {"read": "encoding"}) as bars:
            stats, reused = encode_to_directory(
                tok, inputs, out, dtype=dtype, text_field=args.text_field, force=args.force, encode_many=encode_many,
                progress=None if args.engine == "ray" or args.quiet else bars,
                say=lambda line: print(line, file=sys.stderr) if not args.quiet else None,
            )  # fmt: skip
        wrote = f"wrote {len(inputs) - reused} of {len(inputs)} outputs and {str(out).rstrip('/')}/{MANIFEST_FILE}" + (
            f" ({reused} complete and current, kept)" if reused else ""
        )
    else:
        units = _units(inputs, args.shard, _separators(tok.special_tokens))
        stats = encode_one(units, out)
        wrote = f"wrote {out}"
    elapsed = time.perf_counter() - start
    if stats.inputs:
        print(
            f"encoded {_summary(stats, len(stats.inputs))} into {_counted(stats.tokens, 'token')} in {_rate(stats, elapsed)}; peak memory {peak_rss_mb():.0f} MB",
            file=sys.stderr,
        )
    else:
        print(f"nothing to encode: every output in {out} is complete and current", file=sys.stderr)
    print(f"{wrote} ({tok._file_dtype(dtype)[0]})", file=sys.stderr)


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

    from bpe_lm.token_files import check_token_file, load_tokens, window_reader

    if not Path(args.input).is_file():
        raise UserError(f"{args.input}: no such file")
    if args.output != "-":
        check_output_file(args.output, args.force)
        if Path(args.output).exists() and os.path.samefile(args.output, args.input):
            raise UserError(f"{args.output}: is the input of this command; write the text elsewhere")
    tok = load_tokenizer(args.tokenizer)
    try:
        ids = load_tokens(args.input)
        # Every id checked first (one streamed pass), so a bad one stops the command before any text is out.
        check_token_file(
            ids, args.input, tok.vocab_size, vocabulary=f"the vocabulary of {args.tokenizer} (0..{tok.vocab_size - 1})"
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    # Streamed in chunks of ids read with pread (not through the memory map), so memory stays bounded by a
    # chunk whatever the file's size; a token's bytes never straddle chunks, so the text is the same.
    read = window_reader(ids)

    def write_text(out: BinaryIO) -> int:
        written = 0
        for start in range(0, len(ids), DECODE_CHUNK_IDS):
            data = tok.decode_bytes(np.asarray(read(start, min(DECODE_CHUNK_IDS, len(ids) - start))))
            out.write(data)
            written += len(data)
        return written

    if args.output == "-":
        write_text(sys.stdout.buffer)
        sys.stdout.flush()
        return
    from bpe_lm._io import atomic_output

    with atomic_output(args.output) as tmp, open(tmp, "wb") as f:
        size = write_text(f)
    print(f"wrote {args.output}: {len(ids):,} ids -> {size:,} bytes of text", file=sys.stderr)


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
    p.add_argument("corpora", nargs="+", metavar="CORPUS", help=INPUT_HELP)
    add_text_field_argument(p)
    p.add_argument(
        "--tokenizer", action="append", required=True, metavar="DIR", help="tokenizer directory (repeatable)"
    )
    p.add_argument("--docs", type=positive_int, default=1000, help="documents sampled per corpus")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--project", default="825GB", help="corpus size for the projected encoding time (825GB: the Pile)")
    p.add_argument("--threads", type=thread_count, default=None, help="encoding threads (default: all cores)")
    add_errors_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_tokenizer_stats)


def run_tokenizer_stats(args: argparse.Namespace) -> None:
    import json

    from bpe_lm.stats import compare, parse_size, render

    try:
        project = parse_size(args.project)
    except ValueError as e:
        raise UserError(f"--project: {e}") from None
    corpora = [i.where for i in check_inputs(args.corpora)]
    tokenizers = {}
    for d in args.tokenizer:
        name = Path(d).name or d
        if name in tokenizers:
            name = d
        tokenizers[name] = load_tokenizer(d)
    results = compare(tokenizers, corpora, args.docs, args.seed, project, args.threads, args.text_field, args.errors)
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
