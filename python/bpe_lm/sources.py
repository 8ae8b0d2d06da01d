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
from bpe_lm.formats import check_token_file, load_tokens

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
