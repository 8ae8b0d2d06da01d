"""`--engine ray`: the same counting and encoding as one process, as tasks on a Ray cluster.

The cluster is the one at $RAY_ADDRESS (as `ray job submit` sets it), else a local Ray started here. Inputs
are split into units (`readers.plan_units`: byte ranges of plain text at document boundaries and of plain
JSON lines at line ends, parquet row groups, Arrow files, whole compressed files), one task each, each on
one CPU with one encoding thread. Counting: each task returns its units' counts as a count file, which the
driver adds up in the core (sums checked for overflow), so the merges equal one machine's exactly.
Encoding: each task returns its unit's ids; the driver writes them in unit order, so the output equals one
process's id for id. Input paths must be readable by every worker (a shared file system on a cluster).

Ray is optional (`pip install 'bpe-lm[ray]'`) and imported only here.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bpe_lm import _core
from bpe_lm.readers import DEFAULT_TEXT_FIELD, Input, InputError, Stats, Unit, plan_units

# Units are cut to about this many bytes of input at most, so a task's output stays a few tens of MB.
MAX_UNIT_BYTES = 64 << 20


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


def _encode_task(tok: Any, unit: Unit, dtype: Any, text_field: str, errors: str) -> tuple[Any, Stats]:
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="bpe-lm-ray-") as tmp:
        path = Path(tmp) / "ids.npy"
        stats = tok.encode_units([unit], path, dtype=dtype, num_threads=1, errors=errors, text_field=text_field)
        return np.load(path), stats


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
    dt = tok._resolve_dtype(dtype)
    cpus = cluster_cpus(ray)
    # Whole inputs are split further; units given already (a shard) are kept as they are.
    whole = [u.input for u in units if u.byte_range is None and u.row_groups is None and u.files is None]
    if len(whole) == len(units):
        units = plan_units(whole, _parts(whole, cpus), [s.encode("utf-8") for s in tok.special_tokens])
    task = ray.remote(num_cpus=1)(_encode_task)
    tok_ref = ray.put(tok)
    refs = (task.remote(tok_ref, u, str(dt), text_field, errors) for u in units)
    stats = Stats()
    with _bar(progress, sum(u.size for u in units), "encoding on Ray") as bar, output_file(output) as tmp:
        writer = _core.TokenWriter(os.fspath(tmp), dt.itemsize)
        for unit, (ids, part) in zip(units, _in_order(ray, refs, min(2 * cpus, 32))):
            writer.append(ids.astype(dt.newbyteorder("<"), copy=False).tobytes())
            stats.add(part)
            bar.update(unit.size)
        writer.finish()
    stats.inputs = list(dict.fromkeys(stats.inputs))
    return stats
