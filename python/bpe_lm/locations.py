"""A directory of outputs on the local file system or at a URL that fsspec knows (s3://, gs://, file://...):
the few things `encode -o DIR/` and the Ray engine's parts need of either, so both work the same on both.

Files are written whole: locally through a temporary file renamed into place (`_io.atomic_write`), at a
URL by one put (an object store's put is all or nothing). Only files named by the caller are ever removed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from bpe_lm._io import atomic_write
from bpe_lm.readers import _fsspec, is_url


class Location:
    def __init__(self, where: str | os.PathLike[str]) -> None:
        text = os.fspath(where)
        self.where = text.rstrip("/") or text
        self.fs: Any = None
        self.path = self.where
        if is_url(self.where):
            self.fs, self.path = _fsspec(self.where)

    @property
    def remote(self) -> bool:
        return self.fs is not None

    def child(self, name: str) -> Path | str:
        """The path (local) or URL of the file `name` here, as the writers of outputs take it."""
        return f"{self.where}/{name}" if self.remote else Path(self.where) / name

    def is_file(self) -> bool:
        """Whether the location itself is a file (so no directory can be made there)."""
        return self.fs.isfile(self.path) if self.remote else Path(self.where).is_file()

    def exists(self) -> bool:
        return self.fs.exists(self.path) if self.remote else Path(self.where).exists()

    def mkdir(self) -> None:
        if self.remote:
            self.fs.makedirs(self.path, exist_ok=True)
        else:
            Path(self.where).mkdir(parents=True, exist_ok=True)

    def has(self, name: str) -> bool:
        """Whether anything is at `name` here: a file, a directory, a link (even a dangling one)."""
        if self.remote:
            return bool(self.fs.exists(f"{self.path}/{name}"))
        local = Path(self.where) / name
        return local.exists() or local.is_symlink()

    def size(self, name: str) -> int | None:
        """Bytes of the file `name` here, or None where there is no such file."""
        if self.remote:
            target = f"{self.path}/{name}"
            return int(self.fs.info(target)["size"]) if self.fs.isfile(target) else None
        local = Path(self.where) / name
        return local.stat().st_size if local.is_file() else None

    def read_bytes(self, name: str) -> bytes:
        return self.fs.cat_file(f"{self.path}/{name}") if self.remote else (Path(self.where) / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        if self.remote:
            self.fs.pipe_file(f"{self.path}/{name}", data)
        else:
            atomic_write(Path(self.where) / name, data)

    def open(self, name: str) -> IO[bytes]:
        return self.fs.open(f"{self.path}/{name}", "rb") if self.remote else open(Path(self.where) / name, "rb")

    def remove(self, names: list[str]) -> None:
        """Removes these files (those that are there), then the directory if nothing else is left in it."""
        for name in names:
            if self.remote:
                if self.fs.isfile(f"{self.path}/{name}"):
                    self.fs.rm_file(f"{self.path}/{name}")
            else:
                (Path(self.where) / name).unlink(missing_ok=True)
        if not self.remote:
            try:
                Path(self.where).rmdir()
            except OSError:
                pass  # someone else's files are there too: left alone
