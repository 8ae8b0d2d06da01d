"""`--engine ray`: the same counting and encoding as one process, as tasks on a Ray cluster.

The cluster is the one at $RAY_ADDRESS (as `ray job submit` sets it), else a local Ray started here. Inputs
are split into units (`readers.plan_units`: byte ranges of plain text at document boundaries and of plain
JSON lines at line ends, parquet row groups, Arrow files, whole compressed files), one task each, each on
one CPU with one encoding thread. Counting: each task returns its units' counts as a count file, which the
driver adds up in the core (sums checked for overflow), so the merges equal one machine's exactly.
Encoding: each task writes its unit's ids as a part file, `OUT.npy.parts/part-NNNNNN.npy` beside the output
(a local path or a URL: s3://, gs://...), and returns only what it read; the driver records each finished
part in `OUT.npy.parts/manifest.json` and at the end joins the parts in unit order into OUT.npy, so the
output equals one process's id for id, and then removes the parts. Ids never travel through the object
store; a run that fails or is killed leaves its finished parts listed, and a rerun encodes only the others
(a part is reused when its unit is the same piece of the same, unchanged input, and the tokenizer, id type
and text field are the same; the units depend on the inputs' sizes and the cluster's CPUs). Input and
output paths must be reachable from every worker (a shared file system or an object store on a cluster).

Ray is optional (`pip install 'bpe-lm[ray]'`) and imported only here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bpe_lm import _core
from bpe_lm.locations import Location
from bpe_lm.manifest import ThrottledSaves
from bpe_lm.readers import DEFAULT_TEXT_FIELD, Input, InputError, Stats, Unit, plan_units

# Units are cut to about this many bytes of input at most, so a task's output stays a few tens of MB.
MAX_UNIT_BYTES = 64 << 20
# Bytes of ids read from a part at a time when the parts are joined.
JOIN_BLOCK_BYTES = 8 << 20


def ray_module() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'bpe-lm[ray]'") from None
    if not ray.is_initialized():
        # With address=None Ray connects to $RAY_ADDRESS when it is set, else starts a local cluster.
        ray.init(ignore_reinit_error=True, log_to_driver=False, include_dashboard=False)
    return ray


def cluster_cpus(ray: Any) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _parts(inputs: Sequence[Input], cpus: int) -> int:
    total = sum(i.disk_bytes() for i in inputs)
    return max(4 * cpus, -(-total // MAX_UNIT_BYTES))


def _count_task(
    unit: Unit, special_tokens: list[str], pattern: str | None, text_field: str, errors: str
) -> tuple[bytes, Stats]:
    from bpe_lm.ingest import count_unit

    counter = _core.PretokenCounter(special_tokens, pattern)
    stats = count_unit(counter, unit, text_field=text_field, num_threads=1, errors=errors)
    with tempfile.TemporaryDirectory(prefix="bpe-lm-ray-") as tmp:
        path = Path(tmp) / "counts.bin"
        counter.write(os.fspath(path))
        return path.read_bytes(), stats


def _encode_task(tok: Any, unit: Unit, part: str, dtype: Any, text_field: str, errors: str) -> Stats:
    return tok.encode_units([unit], part, dtype=dtype, num_threads=1, errors=errors, text_field=text_field)


PARTS_MANIFEST = "manifest.json"
PARTS_VERSION = 1


class _Parts:
    """`OUTPUT.parts/`: the part files of one Ray encoding and the manifest that lists the finished ones,
    on the local file system or at a URL (`locations.Location`). Only files it names itself are ever
    written or removed there."""

    def __init__(self, output: str) -> None:
        self.dir = Location(output.rstrip("/") + ".parts")

    @staticmethod
    def _name(index: int) -> str:
        return f"part-{index:06d}.npy"

    def part(self, index: int) -> str:
        return os.fspath(self.dir.child(self._name(index)))

    def finished(self, index: int, tokens: int, width: int) -> bool:
        return self.dir.size(self._name(index)) == _core.NPY_HEADER_BYTES + tokens * width

    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest of an earlier run, or None where there is none; refuses a directory there that is
        not one of ours."""
        if self.dir.size(PARTS_MANIFEST) is None:
            if self.dir.exists():
                raise InputError(
                    f"{self.dir.where}: exists and is not the parts directory of a `bpe-lm encode --engine ray` "
                    "(no manifest.json); move it away"
                )
            return None
        try:
            data = json.loads(self.dir.read_bytes(PARTS_MANIFEST))
            if not isinstance(data, dict) or data.get("version") != PARTS_VERSION:
                raise ValueError("not this version's")
        except ValueError as e:
            raise InputError(
                f"{self.dir.child(PARTS_MANIFEST)}: not a parts manifest of `bpe-lm encode --engine ray` ({e}); "
                "move it away"
            ) from None
        return data

    def write_manifest(self, data: dict[str, Any]) -> None:
        self.dir.mkdir()
        self.dir.write(PARTS_MANIFEST, (json.dumps(data, indent=2) + "\n").encode("utf-8"))

    def open_part(self, index: int) -> Any:
        return self.dir.open(self._name(index))

    def remove(self, count: int) -> None:
        """Removes the parts 0..count and the manifest, then the directory if nothing else is in it."""
        self.dir.remove([self._name(i) for i in range(count)] + [PARTS_MANIFEST])


def _unit_identity(unit: Unit) -> dict[str, Any]:
    """What a unit is, to tell whether a part made from it is still current."""
    from bpe_lm.manifest import _identity

    return {
        **_identity(unit.input),
        "byte_range": list(unit.byte_range) if unit.byte_range is not None else None,
        "row_groups": list(unit.row_groups) if unit.row_groups is not None else None,
        "files": [os.fspath(f) for f in unit.files] if unit.files is not None else None,
    }


def _in_order(ray: Any, refs: Iterator[Any], window: int) -> Iterator[Any]:
    """Results of tasks in submission order, at most `window` in flight (bounds the driver's memory)."""
    pending: list[Any] = []
    for ref in refs:
        pending.append(ref)
        if len(pending) >= window:
            yield ray.get(pending.pop(0))
    while pending:
        yield ray.get(pending.pop(0))


def _bar(enabled: bool, total: int, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1000, disable=not enabled)


def count_on_ray(
    counter: Any,
    special_tokens: list[str],
    inputs: Sequence[Input],
    *,
    pattern: str | None = None,
    text_field: str = DEFAULT_TEXT_FIELD,
    errors: str = "strict",
    progress: bool = False,
) -> Stats:
    """Counts the pre-tokens of `inputs` on Ray tasks into `counter` (made with the same special tokens and
    pattern); returns what was read."""
    ray = ray_module()
    units = plan_units(inputs, _parts(inputs, cluster_cpus(ray)), [s.encode("utf-8") for s in special_tokens])
    task = ray.remote(num_cpus=1)(_count_task)
    refs = [task.remote(u, special_tokens, pattern, text_field, errors) for u in units]
    stats = Stats()
    with (
        _bar(progress, sum(u.size for u in units), "counting on Ray") as bar,
        tempfile.TemporaryDirectory(prefix="bpe-lm-ray-") as tmp,
    ):
        path = Path(tmp) / "part.bin"
        for unit, (data, part) in zip(units, _in_order(ray, iter(refs), len(refs))):
            path.write_bytes(data)
            counter.add_count_file(os.fspath(path))
            stats.add(part)
            bar.update(unit.size)
    stats.inputs = list(dict.fromkeys(stats.inputs))
    return stats


def encode_on_ray(
    tok: Any,
    units: Sequence[Unit],
    output: str | os.PathLike[str],
    *,
    dtype: Any = None,
    text_field: str = DEFAULT_TEXT_FIELD,
    errors: str = "strict",
    progress: bool = False,
) -> Stats:
    """Encodes `units` on Ray tasks into one `.npy` at `output` (atomically), in unit order."""
    from bpe_lm.ingest import check_units, output_file

    check_units(units, text_field)
    ray = ray_module()
    dtype_name, width = tok._file_dtype(dtype)
    cpus = cluster_cpus(ray)
    # Whole inputs are split further; units given already (a shard) are kept as they are.
    whole = [u.input for u in units if u.byte_range is None and u.row_groups is None and u.files is None]
    if len(whole) == len(units):
        units = plan_units(whole, _parts(whole, cpus), [s.encode("utf-8") for s in tok.special_tokens])
    parts = _Parts(os.fspath(output))
    run = {"version": PARTS_VERSION, "tokenizer": tok.fingerprint(), "dtype": dtype_name, "text_field": text_field}
    previous = parts.read_manifest()
    done: dict[int, dict[str, Any]] = {}
    if previous is not None and all(previous.get(k) == v for k, v in run.items()):
        for entry in previous.get("parts", []):
            i, tokens = entry.get("index"), entry.get("tokens")
            if (
                isinstance(i, int)
                and 0 <= i < len(units)
                and isinstance(tokens, int)
                and entry.get("unit") == _unit_identity(units[i])
                and parts.finished(i, tokens, width)
            ):
                done[i] = entry

    # Rewritten as parts finish, at most MANIFEST_TIME_SHARE of the time (a part finished but not listed
    # when the driver dies is encoded again by the rerun, its file replaced).
    save = ThrottledSaves(lambda: parts.write_manifest({**run, "parts": [done[i] for i in sorted(done)]}))
    save(now=True)
    task = ray.remote(num_cpus=1)(_encode_task)
    tok_ref = ray.put(tok)
    refs = {
        task.remote(tok_ref, u, parts.part(i), dtype_name, text_field, errors): i
        for i, u in enumerate(units)
        if i not in done
    }
    with _bar(progress, sum(u.size for u in units), "encoding on Ray") as bar:
        bar.update(sum(units[i].size for i in done))
        pending, failure = list(refs), None
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            i = refs[ready[0]]
            try:
                part: Stats = ray.get(ready[0])
            except Exception as e:  # the first failure is raised once the other tasks are in, and listed
                failure = failure or e
                continue
            done[i] = {"index": i, "unit": _unit_identity(units[i]), **part.as_dict(), "inputs": part.inputs}
            save()
            bar.update(units[i].size)
    save(now=True)
    if failure is not None:
        raise failure
    stats = Stats()
    with output_file(output) as tmp:
        writer = _core.TokenWriter(os.fspath(tmp), width)
        for i in range(len(units)):
            entry = done[i]
            if not parts.finished(i, entry["tokens"], width):
                raise InputError(f"{parts.part(i)}: not the {entry['tokens']:,} ids its task wrote (changed since?)")
            with parts.open_part(i) as f:
                f.seek(_core.NPY_HEADER_BYTES)
                while block := f.read(JOIN_BLOCK_BYTES):
                    writer.append(block)
            stats.add(Stats(**{k: entry[k] for k in ("documents", "skipped", "text_bytes", "tokens", "inputs")}))
        writer.finish()
    parts.remove(len(units))
    stats.inputs = list(dict.fromkeys(stats.inputs))
    return stats
