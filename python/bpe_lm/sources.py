"""Training data as users hold it, torch-free: each entry of `[data] train` / `valid` (a `.npy` file, a glob
of them, or a directory `bpe-lm encode -o DIR/` wrote) is a source of one or more token files. Every file is
opened as a memmap and checked before any compute (dtype, length against the context, every id below the
vocabulary), the error naming the file; a manifest's tokenizer must be the run's. `bpe_lm.data` draws
windows from them."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bpe_lm.errors import BpeLmError
from bpe_lm.token_files import check_token_file, load_tokens

if TYPE_CHECKING:
    from bpe_lm.config import RunConfig


class DataSourceError(BpeLmError, ValueError):
    """A data entry that names no token files, or files that cannot be trained on as given."""


@dataclass
class Source:
    """One entry of data.train or data.valid: its name as written in the config and its token files."""

    name: str
    paths: list[Path]
    arrays: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def tokens(self) -> int:
        return sum(len(a) for a in self.arrays)


_GLOB_CHARS = set("*?[")


def _files_of(entry: str, setting: str, tokenizer_sha256: str) -> list[Path]:
    path = Path(entry)
    if path.is_dir():
        from bpe_lm.manifest import MANIFEST_FILE, read_manifest

        manifest = read_manifest(path)
        if manifest is None:
            raise DataSourceError(
                f"{setting} {entry}: a directory without {MANIFEST_FILE}; give the .npy files (a glob such as "
                f"'{entry.rstrip('/')}/*.npy'), or a directory `bpe-lm encode -o DIR/` wrote"
            )
        if tokenizer_sha256 and manifest.get("tokenizer") not in (None, tokenizer_sha256):
            raise DataSourceError(
                f"{setting} {entry}: {MANIFEST_FILE} says its files were encoded with another tokenizer than "
                "data.tokenizer (their fingerprints differ)"
            )
        names = [e.get("output") for e in manifest["outputs"] if isinstance(e, dict)]
        if not names or not all(isinstance(n, str) and n for n in names):
            raise DataSourceError(f"{setting} {entry}: {MANIFEST_FILE} lists no outputs")
        return [path / str(n) for n in names]
    if _GLOB_CHARS & set(entry):
        matches = sorted(glob.glob(entry))
        if not matches:
            raise DataSourceError(f"{setting} {entry}: the pattern matches no file")
        return [Path(m) for m in matches]
    return [path]


def open_sources(
    entries: list[str],
    names: list[str] | None,
    setting: str,
    vocab_size: int,
    context_length: int,
    tokenizer_sha256: str = "",
) -> list[Source]:
    """The sources of data.train or data.valid (`setting`), every file opened and checked. `names` are the
    entries as written in the config (default: the entries)."""
    sources = []
    seen: dict[str, str] = {}
    for entry, name in zip(entries, names or entries):
        source = Source(name, _files_of(entry, setting, tokenizer_sha256))
        for path in source.paths:
            key = os.path.realpath(path)
            if key in seen:
                raise DataSourceError(
                    f"{setting}: {path} is in two entries ({seen[key]!r} and {name!r}); each file belongs to one source"
                )
            seen[key] = name
            tokens = load_tokens(path)
            check_token_file(tokens, path, vocab_size, context_length)
            source.arrays.append(tokens)
        sources.append(source)
    return sources


def open_run_sources(cfg: RunConfig) -> tuple[list[Source], list[Source]]:
    """The train and valid sources of a run configuration, every file checked (once per process)."""
    from bpe_lm.config import data_entries

    m, d = cfg.model, cfg.data
    return tuple(  # type: ignore[return-value]
        open_sources(
            data_entries(getattr(d, key)),
            cfg.written.get(key),
            f"data.{key}",
            m.vocab_size,
            m.context_length,
            d.tokenizer_sha256,
        )  # fmt: skip
        for key in ("train", "valid")
    )


# ----------------------------------------------------------------------------------------------------
# Document starts, for data.align = "document"

_INDEX_MAGIC = 0x7374726174736F64  # b"docstart", little-endian: what tells our index from another file
_INDEX_CHUNK = 1 << 24  # ids scanned at a time: memory bounded by one chunk, whatever the file's size


def index_path(path: Path, end_of_text_id: int) -> Path:
    """Where the document starts of a token file are kept: a hidden file beside it (no .npy suffix, so a
    glob of token files never picks it up)."""
    return path.with_name(f".{path.name}.docstarts-{end_of_text_id}")


def document_starts(tokens: np.ndarray, path: Path, end_of_text_id: int) -> np.ndarray:
    """Every document start of a token file (0 and each position after an end-of-text id that is not the
    file's end), as int64, found in one pass of bounded memory and kept beside the file for the next run
    (recomputed when the file's size or modification time changed; held in memory only when the directory is
    not writable). The number of documents, not of tokens, sets its size."""
    from bpe_lm._io import atomic_write
    from bpe_lm.token_files import window_reader

    stat = os.stat(path)
    identity = np.array([_INDEX_MAGIC, stat.st_size, stat.st_mtime_ns, end_of_text_id], dtype="<i8")
    cache = index_path(path, end_of_text_id)
    try:
        stored = np.fromfile(cache, dtype="<i8")
        if len(stored) >= 4 and np.array_equal(stored[:4], identity):
            return stored[4:].astype(np.int64)
    except OSError:
        pass
    read = window_reader(tokens)
    found = [np.zeros(1, dtype=np.int64)]
    for start in range(0, len(tokens), _INDEX_CHUNK):
        part = np.asarray(read(start, min(_INDEX_CHUNK, len(tokens) - start)))
        found.append(np.flatnonzero(part == end_of_text_id).astype(np.int64) + start + 1)
    starts = np.concatenate(found)
    starts = starts[starts < len(tokens)]
    try:
        if not cache.exists() or _is_index(cache):  # never over a file of someone else's by that name
            atomic_write(cache, np.concatenate([identity, starts.astype("<i8")]).tobytes())
    except OSError:
        pass  # a read-only directory: the starts live in memory for this run
    return starts


def _is_index(path: Path) -> bool:
    try:
        head = np.fromfile(path, dtype="<i8", count=1)
    except OSError:
        return False
    return len(head) == 1 and int(head[0]) == _INDEX_MAGIC
