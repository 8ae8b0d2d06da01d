"""`bpe-lm encode IN... -o DIR/`: one `.npy` per input and a `manifest.json` that says what each holds.

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
from bpe_lm._io import atomic_write
from bpe_lm.errors import BpeLmError
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


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("outputs"), list):
            raise ValueError("no list of outputs")
    except ValueError as e:
        raise ManifestError(
            f"{path}: not a manifest written by `bpe-lm encode` ({e}); move it away or use --force"
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
    encode_one: Callable[[Unit, Path], Stats],
    say: Callable[[str], None] = lambda _: None,
) -> tuple[Stats, int]:
    """Encodes each input to its own file in `directory` with `encode_one(unit, output)`, skipping those whose
    finished output is still current (unless `force`). Returns (what was encoded now, outputs reused)."""
    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ManifestError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
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
            if (out / name).exists() and name not in listed:
                raise ManifestError(
                    f"{out / name}: already exists and is not listed in {out / MANIFEST_FILE} (use --force to replace it)"
                )
    entries: list[dict[str, Any]] = []
    done_now, reused = Stats(), 0

    def save() -> None:
        atomic_write(
            out / MANIFEST_FILE,
            json.dumps({"version": MANIFEST_VERSION, **common, "outputs": entries}, indent=2) + "\n",
        )

    for name, inp in zip(names, inputs):
        ident = _identity(inp)
        old = reusable.get(name)
        target = out / name
        if old is not None and all(old.get(k) == v for k, v in ident.items()) and _complete(target, old, dt.itemsize):
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


def _complete(path: Path, entry: dict[str, Any], width: int) -> bool:
    tokens = entry.get("tokens")
    return isinstance(tokens, int) and path.is_file() and path.stat().st_size == _core.NPY_HEADER_BYTES + tokens * width
