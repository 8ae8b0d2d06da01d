"""Encoding and counting corpora of many inputs in any format (see `bpe_lm.readers`): the one loop that
`bpe-lm encode`, `train-tokenizer`, `count-pretokens`, their `--shard` and the Ray engine all run.

Text inputs keep the separator convention (special-token strings become their ids, and separate
documents). Each record of a record format is one document: `encode_ordinary(text) + [end of text]`,
and tokenizer training counts it as text of its own (no pre-token crosses two records).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bpe_lm import _core
from bpe_lm._io import atomic_output, sweeping
from bpe_lm.readers import (
    DEFAULT_TEXT_FIELD,
    END_OF_TEXT,
    Input,
    InputError,
    Stats,
    Unit,
    arrow_buffers,
    is_url,
    prefetch,
    record_batches,
    staged,
)

Callback = Callable[[str, int, int], None]
# `tok` below is a `bpe_lm.tokenizer.Tokenizer`; this module sits beneath it (the tokenizer's methods call
# these functions), so it names the type only in words.
Tokenizer = Any


def end_of_text_id(tok: Tokenizer) -> int:
    """The id put after each record: `<|endoftext|>`'s, else the tokenizer's first special token's."""
    ids = tok.special_token_ids
    if END_OF_TEXT in ids:
        return ids[END_OF_TEXT]
    if ids:
        return next(iter(ids.values()))
    raise InputError(
        "record inputs (JSON lines, parquet, Arrow, CSV) get an end-of-text id after each document, and this "
        "tokenizer has no special token; train one with --special-token '<|endoftext|>'"
    )


class UnitProgress:
    """One progress callback across many units: each unit's (phase, done, total) in its own bytes becomes
    progress through the bytes of all units."""

    def __init__(self, callback: Callback | None, total: int) -> None:
        self.callback = callback
        self.total = total
        self.base = 0

    def for_units(self, units: Sequence[Unit]) -> Callback | None:
        """The callback for work on `units` (consecutive), reporting in their bytes together."""
        if self.callback is None:
            return None
        base, size, cb = self.base, sum(u.size for u in units), self.callback

        def report(phase: str, done: int, total: int) -> None:
            cb("read", base + min(done, size), self.total)

        return report

    def finish_units(self, units: Sequence[Unit]) -> None:
        self.base += sum(u.size for u in units)
        if self.callback is not None:
            self.callback("read", self.base, self.total)


def _is_small_text(unit: Unit) -> bool:
    """A whole local uncompressed text file that the core deems small (`_core.is_small_input`: a regular
    file of at most SMALL_INPUT_BYTES): such files are read and encoded many in one call (`_in_runs`), each
    file's ids held whole until its turn to be written. A compressed file is not one of them, however small:
    256 KB of gzip can inflate to gigabytes, which the streaming path takes in chunks."""
    inp = unit.input
    if inp.format != "text" or inp.compression != "none" or inp.url is not None or unit.byte_range is not None:
        return False
    return _core.is_small_input(os.fspath(inp.path))


def _is_core_record(unit: Unit) -> bool:
    """A local JSON-lines or parquet unit: read by the core, which reads any number of them as one stream."""
    return unit.input.format in ("jsonl", "parquet") and unit.input.url is None


def _run_kind(unit: Unit) -> str | None:
    """Which units go to the core together (`_in_runs`): small text files ("small text"), other local text
    files ("text"), local JSON-lines and parquet units ("records"); None: a unit alone (Arrow, CSV, URLs)."""
    if _is_small_text(unit):
        return "small text"
    if unit.input.url is not None:
        return None
    if unit.input.format == "text":
        return "text"
    return "records" if _is_core_record(unit) else None


def _in_runs(units: Sequence[Unit]) -> Iterator[tuple[str | None, list[Unit]]]:
    """The units in order, in runs of one kind (`_run_kind`), each with its kind: a run is one call into the
    core. Small text files are read and encoded side by side, a file an item (a corpus of a document a file
    costs a call a run, not a call a file); other text files, and JSON-lines and parquet files, are read
    through as one stream, one pipeline through them all with no pause between files (a shard of a few
    hundred kilobytes is one chunk, which a call of its own encoded on one thread)."""
    run: list[Unit] = []
    run_kind: str | None = None
    for unit in units:
        kind = _run_kind(unit)
        if run and kind is not None and kind == run_kind:
            run.append(unit)
            continue
        if run:
            yield run_kind, run
        run, run_kind = [unit], kind
    if run:
        yield run_kind, run


def _record_inputs(units: Sequence[Unit]) -> list[tuple[str, str, tuple[int, int] | None, list[int] | None]]:
    """JSON-lines and parquet units as the core's `encode_records_into` and `add_records` take them."""
    return [
        (u.input.format, os.fspath(u.input.path), u.byte_range, None)
        if u.input.format == "jsonl"
        else ("parquet", os.fspath(u.input.path), None, _row_groups(u))
        for u in units
    ]


def _record_loop(unit: Unit, text_field: str, add: Callable[[list[tuple[bytes, bytes, int]], int], tuple[int, ...]],
                 report: Callback | None) -> Stats:  # fmt: skip
    """Feeds an Arrow unit's text column to `add(columns, row0)` in batches (each column as
    (data, offsets, offset width)), the next batch read while this one is processed."""
    stats = Stats()
    rows = 0
    with prefetch(record_batches(unit, text_field)) as batches:
        for batch in batches:
            columns, nulls = [], 0
            for array in batch:
                data, offsets, width, dropped = arrow_buffers(array)
                columns.append((data, offsets, width))
                nulls += dropped
            got = add(columns, rows)
            rows += sum(len(a) for a in batch)
            stats.add(Stats(
                documents=got[0], skipped=got[1] + nulls, text_bytes=got[2], tokens=got[3] if len(got) > 3 else 0
            ))  # fmt: skip
            if report is not None:
                # Arrow stores text as is: the text read tracks the bytes of the unit.
                report("read", min(unit.size, stats.text_bytes), unit.size)
    return stats


def _row_groups(unit: Unit) -> list[int] | None:
    return None if unit.row_groups is None else list(unit.row_groups)


@contextmanager
def _read_locally(unit: Unit) -> Iterator[Unit]:
    """The unit, or for a URL's input the same unit of a local copy, removed afterwards."""
    if unit.input.url is None:
        yield unit
        return
    with staged(unit.input) as local:
        yield Unit(local, size=unit.size)


def encode_unit(
    tok: Tokenizer,
    unit: Unit,
    writer: Any,
    *,
    text_field: str = DEFAULT_TEXT_FIELD,
    num_threads: int | None = None,
    errors: str = "strict",
    progress: Callback | None = None,
) -> Stats:
    """Appends the ids of one unit to `writer` (a `_core.TokenWriter`). `errors="replace"` reads text that
    is not UTF-8 (and, in JSON, escapes of half a surrogate pair) as U+FFFD, in every format."""
    replace = errors == "replace"
    with _read_locally(unit) as here:
        inp = here.input
        path = os.fspath(inp.path)
        if inp.format == "text":
            [(tokens, text_bytes)] = tok._core.encode_text_into([(path, here.byte_range)], writer, num_threads, replace,
                                                                progress)  # fmt: skip
            stats = Stats(text_bytes=text_bytes, tokens=tokens)
        elif inp.format in ("jsonl", "parquet"):
            stats = Stats(*tok._core.encode_records_into(
                _record_inputs([here]), text_field, end_of_text_id(tok), writer, num_threads, progress, replace
            )[0])  # fmt: skip
        else:
            eot = end_of_text_id(tok)

            def add(columns: list[tuple[bytes, bytes, int]], row0: int) -> tuple[int, ...]:
                return tok._core.encode_documents_into(columns, eot, writer, num_threads, row0, path, replace)

            stats = _record_loop(here, text_field, add, progress)
    stats.inputs = [unit.input.where]
    return stats


def count_unit(
    counter: Any,
    unit: Unit,
    *,
    text_field: str = DEFAULT_TEXT_FIELD,
    num_threads: int | None = None,
    errors: str = "strict",
    progress: Callback | None = None,
) -> Stats:
    """Adds the pre-tokens of one unit to `counter` (a `_core.PretokenCounter`); `errors` as for
    `encode_unit`."""
    replace = errors == "replace"
    with _read_locally(unit) as here:
        inp = here.input
        path = os.fspath(inp.path)
        if inp.format == "text":
            text_bytes = counter.add_text([path], [here.byte_range], num_threads, replace, progress)
            stats = Stats(text_bytes=text_bytes)
        elif inp.format in ("jsonl", "parquet"):
            stats = Stats(*counter.add_records(_record_inputs([here]), text_field, num_threads, progress, replace)[0])
        else:

            def add(columns: list[tuple[bytes, bytes, int]], row0: int) -> tuple[int, ...]:
                return counter.add_documents(columns, num_threads, row0, path, replace)

            stats = _record_loop(here, text_field, add, progress)
    stats.inputs = [unit.input.where]
    return stats


def check_units(units: Sequence[Unit], text_field: str) -> None:
    """Before heavy work: every parquet/Arrow/CSV unit has a string column `text_field` (and for Arrow and
    CSV, pyarrow is there)."""
    from bpe_lm.readers import check_columns

    seen: set[Path] = set()
    for u in units:
        if u.input.format in ("parquet", "arrow", "csv") and u.input.url is None and u.input.path not in seen:
            seen.add(u.input.path)
            check_columns(u.input, text_field)


def encode_units(
    tok: Tokenizer,
    units: Sequence[Unit],
    output: str | os.PathLike[str],
    *,
    dtype: Any = None,
    text_field: str = DEFAULT_TEXT_FIELD,
    num_threads: int | None = None,
    errors: str = "strict",
    progress: Callback | None = None,
) -> Stats:
    """Writes the ids of `units`, concatenated in order, to one `.npy` file (atomically: a failure leaves
    no output)."""
    check_units(units, text_field)
    _, width = tok._file_dtype(dtype)
    stats = Stats()
    bars = UnitProgress(progress, sum(u.size for u in units))
    with output_file(output) as tmp:
        writer = _core.TokenWriter(os.fspath(tmp), width)
        for kind, run in _in_runs(units):
            for unit_stats in _encode_run(tok, kind, run, writer, text_field, num_threads, errors, bars.for_units(run)):
                stats.add(unit_stats)
            bars.finish_units(run)
        writer.finish()
    return stats


def encode_units_each(
    tok: Tokenizer,
    units: Sequence[Unit],
    outputs: Sequence[str | os.PathLike[str]],
    *,
    dtype: Any = None,
    text_field: str = DEFAULT_TEXT_FIELD,
    num_threads: int | None = None,
    errors: str = "strict",
    progress: Callback | None = None,
) -> list[Stats]:
    """Writes the ids of each unit to its own `.npy` file (`outputs[i]` those of `units[i]`), each what
    `encode_units` of that unit alone writes, all of them put in place at the end (a failure leaves none);
    returns each unit's stats. The units go to the core in the runs `encode_units` makes, so a corpus of
    many small files is read and encoded side by side, not a call a file on one thread."""
    if len(outputs) != len(units):
        raise ValueError(f"{len(outputs)} outputs for {len(units)} inputs")
    check_units(units, text_field)
    _, width = tok._file_dtype(dtype)
    stats: list[Stats] = []
    bars = UnitProgress(progress, sum(u.size for u in units))
    with output_files(outputs) as tmps:
        for kind, run in _in_runs(units):
            paths = [os.fspath(t) for t in tmps[len(stats) : len(stats) + len(run)]]
            writer = _core.TokenWriter.per_input(paths, width)
            stats += _encode_run(tok, kind, run, writer, text_field, num_threads, errors, bars.for_units(run))
            writer.finish()
            bars.finish_units(run)
    return stats


def _encode_run(
    tok: Tokenizer,
    kind: str | None,
    run: Sequence[Unit],
    writer: Any,
    text_field: str,
    num_threads: int | None,
    errors: str,
    report: Callback | None,
) -> list[Stats]:
    """Appends the ids of one run of units (`_in_runs`) to `writer` (a `_core.TokenWriter`), in one call
    into the core; returns each unit's stats."""
    replace = errors == "replace"
    if len(run) == 1 and kind != "records":
        return [encode_unit(tok, run[0], writer, text_field=text_field, num_threads=num_threads, errors=errors,
                            progress=report)]  # fmt: skip
    if kind == "records":
        got = tok._core.encode_records_into(
            _record_inputs(run), text_field, end_of_text_id(tok), writer, num_threads, report, replace
        )
        return [Stats(documents, skipped, text_bytes, tokens, [unit.input.where])
                for unit, (documents, skipped, text_bytes, tokens) in zip(run, got)]  # fmt: skip
    if kind == "small text":
        paths = [os.fspath(u.input.path) for u in run]
        counts = tok._core.encode_texts_into(paths, writer, num_threads, replace, report)
    else:
        texts = [(os.fspath(u.input.path), u.byte_range) for u in run]
        counts = tok._core.encode_text_into(texts, writer, num_threads, replace, report)
    return [Stats(text_bytes=text_bytes, tokens=tokens, inputs=[unit.input.where])
            for unit, (tokens, text_bytes) in zip(run, counts)]  # fmt: skip


def count_units(
    counter: Any,
    units: Sequence[Unit],
    *,
    text_field: str = DEFAULT_TEXT_FIELD,
    num_threads: int | None = None,
    errors: str = "strict",
    progress: Callback | None = None,
) -> Stats:
    """Adds the pre-tokens of `units` to `counter`."""
    check_units(units, text_field)
    stats = Stats()
    bars = UnitProgress(progress, sum(u.size for u in units))
    for kind, run in _in_runs(units):
        replace, report = errors == "replace", bars.for_units(run)
        if len(run) == 1 and kind != "records":
            stats.add(count_unit(counter, run[0], text_field=text_field, num_threads=num_threads, errors=errors,
                                 progress=report))  # fmt: skip
        elif kind == "records":
            got = counter.add_records(_record_inputs(run), text_field, num_threads, report, replace)
            for unit, (documents, skipped, text_bytes) in zip(run, got):
                stats.add(Stats(documents, skipped, text_bytes, inputs=[unit.input.where]))
        else:
            # Text files of any size: read in parallel, each its own stream (`add_text`).
            paths = [os.fspath(u.input.path) for u in run]
            text_bytes = counter.add_text(paths, [u.byte_range for u in run], num_threads, replace, report)
            stats.add(Stats(text_bytes=text_bytes, inputs=[u.input.where for u in run]))
        bars.finish_units(run)
    return stats


@contextmanager
def output_file(output: str | os.PathLike[str]) -> Iterator[Path]:
    """Where to write an output: a temporary file renamed into place (`atomic_output`), or for a URL
    (s3://...) a local temporary file uploaded when complete (an object store's put is all or nothing)."""
    text = os.fspath(output)
    if not is_url(text):
        with atomic_output(output) as tmp:
            yield tmp
        return
    from bpe_lm.readers import _fsspec

    fs, path = _fsspec(text)
    with tempfile.TemporaryDirectory(prefix="bpe-lm-output-") as tmp:
        local = Path(tmp) / "output"
        yield local
        fs.put_file(os.fspath(local), path)


@contextmanager
def output_files(outputs: Sequence[str | os.PathLike[str]]) -> Iterator[list[Path]]:
    """`output_file` for many outputs: each is put in place when the block ends well, none on a failure.
    Each local directory is swept for stale temporaries once (`sweeping`), not at every output: 2,000
    outputs into one directory took 5.5 s of listings (`encode_units_each`, against 0.07 s of encoding)."""
    directories: dict[str, list[str]] = {}
    for output in outputs:
        if not is_url(os.fspath(output)):
            path = Path(output)
            directories.setdefault(os.fspath(path.parent), []).append(path.name)
    with ExitStack() as stack:
        for directory, names in directories.items():
            stack.enter_context(sweeping(directory, names))
        yield [stack.enter_context(output_file(output)) for output in outputs]


def whole_units(inputs: Sequence[Input]) -> list[Unit]:
    return [Unit(i, size=i.disk_bytes()) for i in inputs]
