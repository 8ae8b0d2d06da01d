"""Corpus-scale tokenization in shards, for any scheduler (Slurm arrays, Kubernetes jobs, a shell loop).

Shard I of N is a byte range of a plain-text corpus whose ends sit just after a special token (a document
boundary), found deterministically from the file alone: every job computes the same ranges. Encoding the
shards and concatenating the arrays gives exactly the single-machine output; counting pre-tokens per shard
(`bpe_lm.tokenizer.count_pretokens`) and training on all count files (`train_from_count_files`, summed in
the Rust core) gives exactly the single-machine merges.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bpe_lm._io import compression_of


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (I counts from 0) -> (I, N)."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 3/16") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 3/16")
    return index, count


def check_separators(special_tokens: Sequence[str]) -> list[bytes]:
    seps = [s.encode("utf-8") for s in special_tokens]
    if not seps:
        raise ValueError("sharding cuts after special tokens (document separators), and this tokenizer has none")
    for a in seps:
        for b in seps:
            if a is b:
                continue
            overlapping = a in b or any(a.endswith(b[:k]) for k in range(1, min(len(a), len(b))))
            if overlapping:
                raise ValueError(
                    f"special tokens {a!r} and {b!r} overlap, so their occurrences are not unambiguous shard boundaries"
                )
    return seps


def boundary_after(f, offset: int, size: int, seps: list[bytes], block: int = 1 << 20) -> int:
    """End of the first separator that starts at or after `offset` (the file's end if none)."""
    longest = max(len(s) for s in seps)
    pos = offset
    while pos < size:
        f.seek(pos)
        data = f.read(block + longest - 1)
        hits = [i for i in (data.find(s) for s in seps) if i != -1 and i < block]
        if hits:
            first = min(hits)
            length = max(len(s) for s in seps if data.startswith(s, first))
            return pos + first + length
        pos += block
    return size


def shard_range(path: str | os.PathLike[str], index: int, count: int, special_tokens: Sequence[str]) -> tuple[int, int]:
    """The byte range [start, end) of shard `index` of `count`."""
    p = Path(path)
    compression = compression_of(p)
    if compression != "none":
        raise ValueError(
            f"{p}: {compression} files cannot be sharded (a compressed stream is read from its start); "
            "decompress it first"
        )
    cuts = cut_points(p, count, check_separators(special_tokens))
    return cuts[index], cuts[index + 1]


def cut_points(path: str | os.PathLike[str], parts: int, separators: Sequence[bytes]) -> list[int]:
    """`parts + 1` offsets of a plain file, 0 first and its size last, the others just after the first
    separator at or past each `size * i / parts`: ranges between them hold whole documents (some may be
    empty)."""
    size = Path(path).stat().st_size
    with open(path, "rb") as f:
        inner = [boundary_after(f, size * i // parts, size, list(separators)) for i in range(1, parts)]
    return [0, *inner, size]
