"""Progress bars for the core's long calls: the core reports (phase, done, total); one tqdm bar per phase,
in decimal units like every summary line."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class ProgressBars:
    """Turns the core's (phase, done, total) callbacks into one tqdm bar per phase."""

    UNITS = {
        "read": ("pre-tokenizing", "B", True),
        "merge": ("merging", "merge", False),
        "encode": ("encoding", "B", True),
    }

    def __init__(self, enabled: bool, names: dict[str, str] | None = None) -> None:
        self.enabled = enabled
        self.names = names or {}  # phase -> bar description, where a caller's work calls a phase otherwise
        self.bar: Any = None
        self.phase: str | None = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        if phase != self.phase:
            self.close()
            desc, unit, scale = self.UNITS.get(phase, (phase, "it", False))
            # Decimal units (MB, not MiB), as in every summary line.
            self.bar = tqdm(
                total=total or None,
                desc=self.names.get(phase, desc),
                unit=unit,
                unit_scale=scale,
                unit_divisor=1000,
                leave=True,
            )
            self.phase = phase
        if total and self.bar.total != total:
            self.bar.total = total
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def progress_callback(
    progress: bool | Callable[[str, int, int], None], names: dict[str, str] | None = None
) -> Iterator[Callable[[str, int, int], None] | None]:
    """The callback for a call's `progress` argument: a callable as it is, True a `ProgressBars` (closed when
    the block ends, however it ends), False none."""
    if callable(progress):
        yield progress
        return
    with ProgressBars(bool(progress), names) as bar:
        yield bar if progress else None
