"""How the package writes durations and sizes for people: one definition each."""

from __future__ import annotations


def format_duration(seconds: float | None) -> str:
    """'42.0 s', '7.5 min', '3.2 h', '4.0 days' (— when unknown)."""
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def format_quantity(n: float, unit: str = "") -> str:
    """'1.23 G' with SI prefixes (K, M, G, T, P), then the unit."""
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def shown_token(token: bytes, limit: int = 40) -> str:
    """A token for a summary line: its text (invalid UTF-8 replaced), cut to `limit` characters with its
    length said, so a megabyte-long token (text without white space) costs one short line."""
    text = token.decode("utf-8", errors="replace")
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(token):,} bytes)"
