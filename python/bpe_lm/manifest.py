"""`bpe-lm encode IN... -o DIR/`: one `.npy` per input and a `manifest.json` that says what each holds, in a
local directory or at a URL (`locations.Location`).

Each output is written atomically and the manifest is rewritten (atomically) after each one, so after a
`kill -9` a rerun finds the finished outputs listed and skips them: an entry is reused when its input
has the same path, size and modification time, the tokenizer, id type and text field are the same, and
the output file is there with the size its token count implies. Output names keep the input order
(`00000-name.npy`, `00001-...`), so the outputs concatenated in name order equal `encode IN... -o OUT.npy`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpe_lm import _core
from bpe_lm.errors import BpeLmError
from bpe_lm.locations import Location
from bpe_lm.readers import Input, Stats, Unit

if TYPE_CHECKING:
    from bpe_lm.tokenizer import Tokenizer

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1


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
    encode_one: Callable[[Unit, Path | str], Stats],
    say: Callable[[str], None] = lambda _: None,
) -> tuple[Stats, int]:
    """Encodes each input to its own file in `directory` (a local path or a URL) with `encode_one(unit,
    output)`, skipping those whose finished output is still current (unless `force`). Returns (what was
    encoded now, outputs reused)."""
    out = Location(directory)
    if out.is_file():
        raise ManifestError(f"{out.where}: exists and is not a directory")
    out.mkdir()
    dt = tok._resolve_dtype(dtype)
    common = {"tokenizer": tok.fingerprint(), "dtype": str(dt), "text_field": text_field}
    previous = None if force else read_manifest(out)
    reusable: dict[str, dict[str, Any]] = {}
    if previous is not None and all(previous.get(k) == v for k, v in common.items()):
        reusable = {str(e.get("output")): e for e in previous["outputs"] if isinstance(e, dict)}
    listed = {e.get("output") for e in previous["outputs"]} if previous else set()
    names = [output_name(i, inp) for i, inp in enumerate(inputs)]
    if not force:
        for name in names:
            if out.has(name) and name not in listed:
                raise ManifestError(
                    f"{out.child(name)}: already exists and is not listed in {out.child(MANIFEST_FILE)} (use --force to replace it)"
                )
    entries: list[dict[str, Any]] = []
    done_now, reused = Stats(), 0

    def save() -> None:
        text = json.dumps({"version": MANIFEST_VERSION, **common, "outputs": entries}, indent=2) + "\n"
        out.write(MANIFEST_FILE, text.encode("utf-8"))

    for name, inp in zip(names, inputs):
        ident = _identity(inp)
        old = reusable.get(name)
        target = out.child(name)
        if (
            old is not None
            and all(old.get(k) == v for k, v in ident.items())
            and _complete(out, name, old, dt.itemsize)
        ):
            entries.append(old)
            reused += 1
            say(f"{inp.path}: {target} is complete and current, skipped")
            continue
        stats = encode_one(Unit(inp, size=inp.disk_bytes()), target)
        done_now.add(stats)
        entries.append({**ident, "output": name, **stats.as_dict()})
        save()
    save()
    return done_now, reused


def _complete(out: Location, name: str, entry: dict[str, Any], width: int) -> bool:
    tokens = entry.get("tokens")
    return isinstance(tokens, int) and out.size(name) == _core.NPY_HEADER_BYTES + tokens * width
