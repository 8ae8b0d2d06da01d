"""Writing outputs so that a failure or an interruption never leaves a half-written file behind, and an
existing output is replaced only when the caller says so."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bpe_lm.errors import BpeLmError


class OutputExistsError(BpeLmError, FileExistsError):
    """An output that is already there and was not to be replaced."""


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def compression_of(path: str | os.PathLike[str]) -> str:
    """How a file is compressed by its first bytes, not its name: "gzip", "zstd" or "none" (the core's one
    rule, `stream::Compression`)."""
    from bpe_lm import _core  # here, not above: the training side writes its files through this module too

    with open(path, "rb") as f:
        return _core.compression_of(f.read(_core.COMPRESSION_MAGIC_BYTES))


def check_new_output(path: str | os.PathLike[str], force: bool) -> None:
    """The one policy of every command that writes a file: an existing output is replaced only with
    --force (missing parent directories are created when writing)."""
    out = Path(path)
    if out.is_dir():
        raise IsADirectoryError(f"{out}: is a directory, expected a file name")
    if out.exists() and not force:
        raise OutputExistsError(f"{out}: already exists (use --force to replace it)")


def check_new_directory(path: str | os.PathLike[str], force: bool) -> bool:
    """The same policy for an output directory: a non-empty one only with --force, and then only the
    output's own files are replaced. Returns whether the directory holds files already."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: exists and is not a directory")
    occupied = out.is_dir() and any(out.iterdir())
    if occupied and not force:
        raise OutputExistsError(f"{out}: already exists and is not empty (use --force to replace its files)")
    return occupied


def _temp_prefix(out: Path) -> str:
    # The writer's pid in the name tells a later run whether the file is an orphan of a killed process.
    return f".{out.name}.{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Deletes temporary files of `path` left by a writer that no longer runs (killed with -9, say), and
    warns about each. Temporaries of a writer still running are left alone. Inside `sweeping(directory)`
    this was done for the whole directory once, and is not done again."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    if os.path.abspath(parent) in _SWEPT:
        return []
    return _remove_stale(parent, {out.name})


# Directories swept once for a run of many writes into them (`sweeping`).
_SWEPT: set[str] = set()


@contextmanager
def sweeping(directory: str | os.PathLike[str], names: Iterable[str]) -> Iterator[None]:
    """For a run of many outputs written into `directory` (the files `names`): their stale temporaries are
    removed now, in one listing of the directory, and not again at each write in the block (2,000 outputs
    written into one directory had it listed 4,000 times)."""
    where = os.path.abspath(directory)
    if where in _SWEPT:  # inside a sweep of the same directory, which swept its names and ends it
        yield
        return
    _remove_stale(Path(where), set(names))
    _SWEPT.add(where)
    try:
        yield
    finally:
        _SWEPT.discard(where)


def _remove_stale(parent: Path, targets: set[str]) -> list[Path]:
    """`remove_stale_temporaries` of the files `targets` in `parent`, in one listing of it."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for name in os.listdir(parent):
        if not (name.startswith(".") and (name.endswith(".tmp") or ".tmp-" in name)):
            continue
        target, pid_text = _temporary_of(name, targets)
        if target is None or _pid_alive(int(pid_text)):
            continue
        entry = parent / name
        out = parent / target
        try:
            size = (
                sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
                if entry.is_dir()
                else entry.stat().st_size
            )
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        except OSError:
            continue
        removed.append(entry)
        warnings.warn(
            f"removed {entry} ({size / 1e6:.1f} MB), a temporary file of {out} left by an interrupted run", stacklevel=4
        )
    return removed


def _temporary_of(name: str, targets: set[str]) -> tuple[str | None, str]:
    """(the file of `targets` whose temporary `name` is, its writer's pid), or (None, "") for none of them.
    A temporary is named `.{target}.{pid}.…` (`_temp_prefix`), and a target may hold dots itself."""
    parts = name[1:].split(".")
    for i in range(1, len(parts)):
        target = ".".join(parts[:i])
        if target in targets and parts[i].isdigit():
            return target, parts[i]
    return None, ""


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Renames `src` to `dst` only if `dst` does not exist, in one step: a hard link (which fails on an
    existing name) then unlinking `src`; where the file system has no hard links, Linux renameat2 with
    RENAME_NOREPLACE; where neither exists, a plain rename."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:
        import ctypes
        import errno
        import sys

        if sys.platform.startswith("linux"):
            try:
                renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
                renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                at_fdcwd, rename_noreplace = -100, 1
                if renameat2(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
                    return
                if ctypes.get_errno() == errno.EEXIST:
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(dst)) from None
            except AttributeError:
                pass
        os.replace(src, dst)
        return
    os.unlink(src)


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path beside `path`; on success it is renamed to `path` (with ordinary
    permissions), on any exception it is removed. Temporaries of `path` orphaned by a killed run are
    removed first. An output that did not exist when writing began is put in place only if it still does
    not exist (of two writers of one new output exactly one wins; the other is refused and its work
    discarded); one that existed (the caller's --force) is replaced."""
    out = Path(path)
    parent = out.parent if str(out.parent) else Path(".")
    existed = out.exists() or out.is_symlink()
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(out), suffix=".tmp", dir=parent)
    except OSError as e:
        raise type(e)(e.errno, f"{out}: cannot write here ({e.strerror})") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes it private; the result is an ordinary file
    try:
        yield Path(tmp)
        if existed:
            os.replace(tmp, out)
        else:
            try:
                _rename_noreplace(Path(tmp), out)
            except FileExistsError:
                raise OutputExistsError(
                    f"{out}: was created by another process while this one was writing it; that one is kept, and this output discarded"
                ) from None
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        # Named by the output the user asked for, not by our temporary (or its spill files, named after it).
        if isinstance(e.filename, str) and e.filename.startswith(tmp) and e.errno is not None:
            raise type(e)(e.errno, e.strerror, os.fspath(out)) from None
        raise
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike[str], data: str | bytes) -> None:
    with atomic_output(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def _exchange(a: Path, b: Path) -> bool:
    """Swaps two directories in one atomic step (Linux renameat2 with RENAME_EXCHANGE); False where the
    system or the file system cannot."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def atomic_directory(out_dir: str | os.PathLike[str], build: Callable[[Path], list[str]], *, force: bool) -> None:
    """Writes a directory of files: `build(tmp)` writes them into a temporary sibling and returns their
    names. A new (or empty) `out_dir` then appears whole, by one rename. An existing one is refused unless
    `force`. With `force`, a directory that holds only files being replaced is swapped with the new one in
    one atomic step where the system allows (Linux), so an interruption leaves the old files or the new,
    never a mix. Otherwise only the built files are replaced, each by a rename: whatever else the directory
    holds is left alone, and `out_dir` itself is never moved (so `-o .` works)."""
    out = Path(out_dir)
    occupied = check_new_directory(out, force)
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out.resolve())
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.resolve().name}.{os.getpid()}.tmp-", dir=parent))
    except OSError as e:
        raise type(e)(e.errno, f"{out}: cannot write here ({e.strerror})") from None
    try:
        names = build(tmp)
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it private; the result is an ordinary directory
        for name in names:
            os.chmod(tmp / name, 0o666 & ~umask())
        resolved = out.resolve()
        only_ours = occupied and {e.name for e in out.iterdir()} <= set(names)
        in_use = resolved == Path.cwd() or resolved in Path.cwd().parents  # swapping would move our own cwd
        if only_ours and not in_use and _exchange(tmp, resolved):
            shutil.rmtree(tmp, ignore_errors=True)  # now the old files; a kill here leaves a stale temporary
        elif occupied:
            for name in names:
                os.replace(tmp / name, out / name)
        else:
            if out.is_dir():
                out.rmdir()
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
