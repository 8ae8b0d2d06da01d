"""`bpe-lm encode IN... -o DIR/`: one `.npy` per input and a `manifest.json` that says what each holds, in a
local directory or at a URL (`locations.Location`).

Each output is written atomically, and the manifest (rewritten atomically) lists the finished ones, so
after a `kill -9` a rerun finds them and skips them: an entry is reused when its input has the same path,
size and modification time, the tokenizer, id type and text field are the same, and the output file is
there with the size its token count implies. Before any output is written the manifest names every output
the run will write as `pending`, and it is rewritten after an output only while rewriting it has taken at
most a twentieth of the run's time (a manifest of thousands of entries rewritten after each of thousands of
small inputs made the run quadratic: 2,000 one-kilobyte files took 17 s): an output finished but not yet
listed is then one of the last run's pending ones, and a rerun writes it again instead of refusing it as
someone else's file. Output names keep the input order (`00000-name.npy`, `00001-...`), so the outputs
concatenated in name order equal `encode IN... -o OUT.npy`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpe_lm import _core
from bpe_lm._io import sweeping
from bpe_lm.errors import BpeLmError
from bpe_lm.ingest import Callback, UnitProgress
from bpe_lm.locations import Location
from bpe_lm.readers import Input, Stats, Unit

if TYPE_CHECKING:
    from bpe_lm.tokenizer import Tokenizer

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
# At most this share of a run's time goes to rewriting its manifest (see the module's docstring).
MANIFEST_TIME_SHARE = 0.05
# Inputs are encoded in batches of up to this many bytes on disk or inputs (one call into the core, each
# input to its own file: small inputs are then read and encoded side by side, where a call each ran one
# at a time on one thread), and their outputs listed when the batch is done: a kill loses at most one
# batch, a fraction of a second of work. 8 MB and 64 MB batches ran alike (400 files of 100 KB, 100
# parquet shards of 0.4 MB: within this machine's noise); an input larger than this is a batch alone.
BATCH_BYTES = 16 << 20
BATCH_INPUTS = 1024

EncodeMany = Callable[[list[Unit], "list[Path | str]", "Callback | None"], list[Stats]]


class ManifestError(BpeLmError, ValueError):
    """An output directory that cannot be written as asked (files of someone else's in the way)."""


def output_name(index: int, inp: Input) -> str:
    name = inp.path.name or "input"
    for suffix in (".gz", ".zst", ".zstd"):
        name = name.removesuffix(suffix)
    for suffix in (".jsonl", ".json", ".ndjson", ".parquet", ".arrow", ".txt"):
        name = name.removesuffix(suffix)
    return f"{index:05d}-{name}.npy"


def _identity(inp: Input) -> dict[str, Any]:
    """What an input was, to tell whether an output made from it is still current."""
    if inp.url is not None:
        return {"input": inp.url, "format": inp.format, "size": inp.remote_size, "version": inp.remote_version}
    stats = [f.stat() for f in inp.files]
    return {
        "input": os.fspath(inp.path),
        "format": inp.format,
        "size": sum(s.st_size for s in stats),
        "mtime_ns": max(s.st_mtime_ns for s in stats),
    }


def read_manifest(directory: str | os.PathLike[str] | Location) -> dict[str, Any] | None:
    """The manifest in `directory` (a path, a URL or a Location), or None where there is none."""
    where = directory if isinstance(directory, Location) else Location(directory)
    if where.size(MANIFEST_FILE) is None:
        return None
    try:
        data = json.loads(where.read_bytes(MANIFEST_FILE))
        if not isinstance(data, dict) or not isinstance(data.get("outputs"), list):
            raise ValueError("no list of outputs")
    except ValueError as e:
        raise ManifestError(
            f"{where.child(MANIFEST_FILE)}: not a manifest written by `bpe-lm encode` ({e}); move it away or use --force"
        ) from None
    return data


def encode_to_directory(
    tok: Tokenizer,
    inputs: Sequence[Input],
    directory: str | os.PathLike[str],
    *,
    dtype: Any = None,
    text_field: str,
    force: bool,
    encode_many: EncodeMany,
    progress: Callback | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> tuple[Stats, int]:
    """Encodes each input to its own file in `directory` (a local path or a URL) with `encode_many(units,
    outputs, progress)` (each unit's ids to its output; each unit's stats back), in batches (BATCH_BYTES,
    BATCH_INPUTS), skipping inputs whose finished output is still current (unless `force`); `progress`
    hears of the work as one stretch of bytes. Returns (what was encoded now, outputs reused)."""
    out = Location(directory)
    if out.is_file():
        raise ManifestError(f"{out.where}: exists and is not a directory")
    out.mkdir()
    dtype_name, width = tok._file_dtype(dtype)
    common = {"tokenizer": tok.fingerprint(), "dtype": dtype_name, "text_field": text_field}
    previous = None if force else read_manifest(out)
    reusable: dict[str, dict[str, Any]] = {}
    if previous is not None and all(previous.get(k) == v for k, v in common.items()):
        reusable = {str(e.get("output")): e for e in previous["outputs"] if isinstance(e, dict)}
    # The last run's outputs, finished or announced (a kill may have come between writing one and listing it).
    listed = {e.get("output") for e in previous["outputs"] if isinstance(e, dict)} if previous else set()
    listed |= {n for n in previous.get("pending", []) if isinstance(n, str)} if previous else set()
    names = [output_name(i, inp) for i, inp in enumerate(inputs)]
    if not force:
        for name in names:
            if out.has(name) and name not in listed:
                raise ManifestError(
                    f"{out.child(name)}: already exists and is not listed in {out.child(MANIFEST_FILE)} (use --force to replace it)"
                )
    entries: dict[int, dict[str, Any]] = {}  # by input index: the manifest lists them in input order
    done_now, reused = Stats(), 0
    idents = [_identity(inp) for inp in inputs]
    current = [
        (old := reusable.get(name)) is not None
        and all(old.get(k) == v for k, v in ident.items())
        and _complete(out, name, old, width)
        for name, ident in zip(names, idents)
    ]
    pending = [name for name, keep in zip(names, current) if not keep]

    def write() -> None:
        manifest = {"version": MANIFEST_VERSION, **common, "outputs": [entries[i] for i in sorted(entries)]}
        if pending:
            manifest["pending"] = pending
        out.write(MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))

    for i, (inp, keep) in enumerate(zip(inputs, current)):
        if keep:
            entries[i] = reusable[names[i]]
            reused += 1
            say(f"{inp.path}: {out.child(names[i])} is complete and current, skipped")
    todo = [i for i, keep in enumerate(current) if not keep]
    units = {i: Unit(inputs[i], size=idents[i]["size"]) for i in todo}
    bars = UnitProgress(progress, sum(u.size for u in units.values()))
    save = ThrottledSaves(write)
    save(now=True)  # the outputs about to be written, named before any is
    with sweeping_outputs(out, [*names, MANIFEST_FILE]):
        for batch in _batches(todo, units):
            run = [units[i] for i in batch]
            got = encode_many(run, [out.child(names[i]) for i in batch], bars.for_units(run))
            bars.finish_units(run)
            for i, stats in zip(batch, got):
                done_now.add(stats)
                entries[i] = {**idents[i], "output": names[i], **stats.as_dict()}
            save()
    pending = []
    save(now=True)
    return done_now, reused


def _batches(todo: list[int], units: dict[int, Unit]) -> Iterator[list[int]]:
    """`todo` (input indices) in order, in batches of at most BATCH_INPUTS inputs and BATCH_BYTES (an input
    larger than that alone)."""
    batch: list[int] = []
    size = 0
    for i in todo:
        if batch and (size + units[i].size > BATCH_BYTES or len(batch) == BATCH_INPUTS):
            yield batch
            batch, size = [], 0
        batch.append(i)
        size += units[i].size
    if batch:
        yield batch


class ThrottledSaves:
    """Calls `write` (a rewrite of a whole manifest) when asked, unless the writes so far have taken more
    than MANIFEST_TIME_SHARE of the time since the first: a manifest rewritten after each of thousands of
    small outputs grows with them, and the run becomes quadratic. `now`: write whatever the time."""

    def __init__(self, write: Callable[[], None]) -> None:
        self.write = write
        self.started = time.perf_counter()
        self.writing = 0.0

    def __call__(self, now: bool = False) -> None:
        if now or self.writing <= MANIFEST_TIME_SHARE * (time.perf_counter() - self.started):
            begun = time.perf_counter()
            self.write()
            self.writing += time.perf_counter() - begun


def sweeping_outputs(out: Location, names: list[str]) -> Any:
    """`_io.sweeping` for a local directory (a remote one has no temporaries of ours)."""
    if out.remote:
        return nullcontext()
    return sweeping(out.where, names)


def _complete(out: Location, name: str, entry: dict[str, Any], width: int) -> bool:
    tokens = entry.get("tokens")
    return isinstance(tokens, int) and out.size(name) == _core.NPY_HEADER_BYTES + tokens * width
