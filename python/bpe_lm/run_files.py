"""Run directories, in one place and torch-free, so that every command can check one before it imports
PyTorch: the names of a run's files, the run's copies of its settings (config.toml) and of its tokenizer
(tokenizer/), which files of an earlier run a new one must not overwrite unasked, and which tokenizer goes
with a model from a run. `bpe-lm train` writes the files (train.py, checkpoint.py, metrics.py); the commands
that read a run (eval, generate, export, the demo) find them here. checkpoint.py reads the checkpoint itself.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bpe_lm.errors import BpeLmError

if TYPE_CHECKING:
    from bpe_lm.config import RunConfig
    from bpe_lm.tokenizer import Tokenizer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.toml"
METRICS_NAME = "metrics.jsonl"
LOCK_NAME = "train.lock"
TOKENIZER_DIR = "tokenizer"
# The files an earlier run leaves that a new run in the same directory would overwrite: continued with
# --resume, set aside and replaced with --force, never overwritten unasked.
EARLIER_RUN_FILES = (CHECKPOINT_NAME, METRICS_NAME, TOKENIZER_DIR)
# The first line of the run's copy of its settings: what tells it from a file of the user's by that name.
RUN_CONFIG_HEADER = (
    "# Written by `bpe-lm train`: the settings this run used. Edit your own config file, not this copy.\n"
)
# The key in the run's copy of its tokenizer (tokenizer/tokenizer_config.json) that says it is that copy,
# and where it was copied from: what tells it from a tokenizer directory of the user's by that name.
RUN_COPY_KEY = "copied_by_bpe_lm_train_from"


class RunDirectoryError(BpeLmError, ValueError):
    """A run directory that cannot be used as asked: a tokenizer that is not the run's own, a run without
    the files a command needs, or files of an earlier run in the way."""


# ----------------------------------------------------------------------------------------------------
# Tokenizers of runs


def read_tokenizer(directory: str | os.PathLike[str], what: str) -> Tokenizer:
    """The tokenizer in `directory`; `what` names where the directory was given (a setting, an option),
    for the message when it is not one."""
    from bpe_lm.tokenizer import Tokenizer

    path = Path(directory)
    if not path.is_dir():
        raise RunDirectoryError(
            f"{what} {directory}: tokenizer directory not found (train one with `bpe-lm train-tokenizer`)"
        )
    return Tokenizer.load(path)


def is_run_copy(directory: Path) -> bool:
    """Whether `directory` is the copy of its tokenizer that `bpe-lm train` wrote into a run."""
    from bpe_lm.formats import CONFIG_FILE

    try:
        with open(directory / CONFIG_FILE, encoding="utf-8") as f:
            return RUN_COPY_KEY in json.load(f)
    except (OSError, ValueError):
        return False


def _same_directory(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def copy_tokenizer(source: str, run_dir: Path) -> None:
    """Writes the run's copy of its tokenizer, RUN/tokenizer (atomically): vocab.json and merges.txt byte for
    byte, tokenizer_config.json with a key saying where it came from; unless `source` is that directory
    itself. Called once the run directory is locked and an earlier run's copy has been set aside."""
    from bpe_lm._io import atomic_directory
    from bpe_lm.formats import CONFIG_FILE, MERGES_FILE, VOCAB_FILE, read_json_object

    target, origin = run_dir / TOKENIZER_DIR, Path(source)
    if _same_directory(target, origin):
        return

    def build(tmp: Path) -> list[str]:
        for name in (VOCAB_FILE, MERGES_FILE):
            shutil.copyfile(origin / name, tmp / name)
        config = {**read_json_object(origin / CONFIG_FILE), RUN_COPY_KEY: str(origin.resolve())}
        (tmp / CONFIG_FILE).write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return [VOCAB_FILE, MERGES_FILE, CONFIG_FILE]

    atomic_directory(target, build, force=True)


def saved_settings(run_dir: Path) -> dict[str, Any] | None:
    """The settings a run recorded (its config.toml, when `bpe-lm train` wrote it), else None."""
    path = run_dir / CONFIG_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.startswith(RUN_CONFIG_HEADER):
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RunDirectoryError(f"{path}: the run's copy of its settings is damaged ({e})") from None


def run_directory_of(source: str | os.PathLike[str]) -> Path:
    """The run directory of a model source: the directory itself, or the one a checkpoint file lies in."""
    path = Path(source)
    return path if path.is_dir() else path.parent


def tokenizer_for_model(
    source: str | os.PathLike[str], given: str | None, *, option: str = "--tokenizer"
) -> tuple[Tokenizer, str]:
    """The tokenizer of the model at `source` (a run directory or a checkpoint in one), and its name for
    messages: the run's own copy when `given` is None, else `given`, checked to be the one the run was trained
    with (same fingerprint, same vocabulary size) where the run recorded it. Torch-free, so a wrong tokenizer
    is refused before the model is loaded; the checkpoint's own record is checked once it is
    (`check_model_tokenizer`)."""
    tokenizer, name = _tokenizer_for_model(source, given, option)
    vocab_size = recorded_vocab_size(source)
    if vocab_size is not None:
        check_vocabularies_match(tokenizer.vocab_size, vocab_size, name)
    return tokenizer, name


def _tokenizer_for_model(source: str | os.PathLike[str], given: str | None, option: str) -> tuple[Tokenizer, str]:
    run_dir = run_directory_of(source)
    recorded = recorded_fingerprint(saved_settings(run_dir))
    if given is None:
        copy = run_dir / TOKENIZER_DIR
        if not copy.is_dir():
            raise RunDirectoryError(
                f"{source}: the run has no copy of its tokenizer ({copy} is missing: trained without "
                f"data.tokenizer, or by an older bpe-lm); give {option} DIR, the tokenizer it was trained with"
            )
        tokenizer = read_tokenizer(copy, "the run's tokenizer")
        if recorded and tokenizer.fingerprint() != recorded:
            raise RunDirectoryError(
                f"{copy}: is not the tokenizer {run_dir / CONFIG_NAME} records (fingerprints differ): the copy was "
                f"changed after training; give {option} DIR, the tokenizer it was trained with"
            )
        return tokenizer, str(copy)
    tokenizer = read_tokenizer(given, option)
    if recorded:
        check_same_tokenizer(tokenizer.fingerprint(), recorded, f"{option} {given}", str(source))
    return tokenizer, given


def check_model_tokenizer(state: dict[str, Any], vocab_size: int, tokenizer: Tokenizer, name: str, source: str) -> None:
    """Once the checkpoint is loaded (`state`, its contents): the tokenizer has the model's vocabulary size,
    and the fingerprint the checkpoint recorded, if it recorded one (a checkpoint moved out of its run
    still knows its tokenizer)."""
    check_vocabularies_match(tokenizer.vocab_size, vocab_size, name)
    try:
        settings = json.loads(state.get("run_config") or "{}")
    except (TypeError, ValueError):
        settings = {}
    check_same_tokenizer(tokenizer.fingerprint(), recorded_fingerprint(settings), name, source)


def recorded_fingerprint(settings: dict[str, Any] | None) -> str:
    """The tokenizer fingerprint in a run's recorded settings ("" when it has none)."""
    data = (settings or {}).get("data")
    value = data.get("tokenizer_sha256", "") if isinstance(data, dict) else ""
    return value if isinstance(value, str) else ""


def check_same_tokenizer(fingerprint: str, recorded: str, given: str, source: str) -> None:
    if recorded and fingerprint != recorded:
        raise RunDirectoryError(
            f"{given}: is not the tokenizer {source} was trained with (its fingerprint is {fingerprint[:16]}…, "
            f"the run's {recorded[:16]}…); leave the option out to use the run's own copy"
        )


def check_vocabularies_match(tokenizer_size: int, vocab_size: int, tokenizer_name: str = "the tokenizer") -> None:
    """A model samples ids below its vocab_size and a tokenizer decodes ids below its own size: they must
    be equal, or sampling prints wrong text or stops on an unknown id."""
    if tokenizer_size != vocab_size:
        raise RunDirectoryError(
            f"{tokenizer_name} has {tokenizer_size:,} tokens but the model's vocabulary has {vocab_size:,}: "
            "not the tokenizer it was trained with"
        )


def recorded_vocab_size(source: str | os.PathLike[str]) -> int | None:
    """model.vocab_size as the run recorded it in config.toml (None when it did not): lets a command refuse a
    mismatched tokenizer before it imports torch and loads the checkpoint."""
    model = (saved_settings(run_directory_of(source)) or {}).get("model")
    size = model.get("vocab_size") if isinstance(model, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) else None


# ----------------------------------------------------------------------------------------------------
# Starting a run where another one was


def check_run_dir(run_dir: Path, *, resume: bool, force: bool, source: str | None, tokenizer: str) -> None:
    """An earlier run's files are continued (--resume) or replaced (--force), never overwritten unasked; a
    config.toml there that is not the run's own copy (a file of the user's, a link), or a tokenizer/ that is
    not the run's own copy, is never replaced unasked, and the config file this run was started from never
    (it is written by replacing the name, so a link's target is never written through). `source` is the
    config file, `tokenizer` data.tokenizer."""
    if resume and force:
        raise RunDirectoryError("--resume and --force contradict each other (continue the run, or start it over)")
    copy = run_dir / CONFIG_NAME
    if copy.is_symlink() or copy.exists():
        if source is not None and copy.exists() and os.path.samefile(copy, source):
            raise RunDirectoryError(
                f"{copy}: is the config file this run was started from, and the run writes its own copy of its "
                "settings there; keep your config file outside training.out_dir (or name it otherwise)"
            )
        ours = copy.is_file() and not copy.is_symlink() and _starts_with(copy, RUN_CONFIG_HEADER)
        if not ours and not force:
            raise RunDirectoryError(
                f"{copy}: is not the copy of its settings that `bpe-lm train` writes ({'a link' if copy.is_symlink() else 'a file of yours'}); "
                "move it away, or use --force to replace it"
            )
    tokenizer_copy = run_dir / TOKENIZER_DIR
    users_own = tokenizer_copy.exists() and not (tokenizer_copy.is_dir() and is_run_copy(tokenizer_copy))
    if users_own and tokenizer and not _same_directory(tokenizer_copy, Path(tokenizer)):
        raise RunDirectoryError(
            f"{tokenizer_copy}: is not the copy of its tokenizer that `bpe-lm train` writes there (a "
            f"{'directory' if tokenizer_copy.is_dir() else 'file'} of yours); move it away or set another training.out_dir"
        )
    earlier = [
        name for name in EARLIER_RUN_FILES if (run_dir / name).exists() and not (name == TOKENIZER_DIR and users_own)
    ]
    if earlier and not resume and not force:
        raise RunDirectoryError(
            f"{run_dir}: holds an earlier run ({', '.join(earlier)}); continue it with --resume, start it over with "
            f"--force (replaces those files), or set another training.out_dir"
        )


def check_resumed_tokenizer(run_dir: Path, fingerprint: str, tokenizer: str) -> None:
    """--resume: the run goes on with the tokenizer it recorded, or is refused naming both."""
    recorded = recorded_fingerprint(saved_settings(run_dir))
    if recorded and fingerprint and recorded != fingerprint:
        raise RunDirectoryError(
            f"--resume: {run_dir} was trained with another tokenizer (fingerprint {recorded[:16]}…) than "
            f"data.tokenizer {tokenizer} ({fingerprint[:16]}…); its token ids would mean other text"
        )


def lock_run_dir(run_dir: Path) -> int | None:
    """Takes an exclusive lock (flock on RUN/train.lock) held for the run's life, so a second trainer or a
    --resume of the same directory is refused instead of interleaving steps and replacing files; returns the
    lock's descriptor (closing it releases the lock), None where the system has no flock. The lock goes with
    the process (a kill -9 releases it); the file stays, of no meaning once unlocked. Creates the run
    directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = _try_lock(run_dir, os.O_CREAT)
    if fd is not None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _try_lock(run_dir: Path, flags: int) -> int | None:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): no lock
        return None
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_NOFOLLOW | flags, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "another process"
        os.close(fd)
        raise RunDirectoryError(
            f"{run_dir}: another `bpe-lm train` is using this run directory (pid {holder}); wait for it to "
            "finish or stop it (Ctrl-C saves), or set another training.out_dir"
        ) from None
    return fd


def check_before_training(cfg: RunConfig, *, resume: bool, force: bool) -> None:
    """What `bpe-lm train` checks before it imports torch, so that a wrong file or run directory costs a
    second, not the import and a model: the run directory (as `check_run_dir`, and the tokenizer of a resumed
    run) and the token files (length, dtype, every id below model.vocab_size, checked once per process; the
    trainer finds them checked)."""
    from bpe_lm.sources import open_run_sources

    run_dir, data = Path(cfg.training.out_dir), cfg.data
    if (run_dir / LOCK_NAME).is_file():  # a run going on there is the first thing to say
        fd = _try_lock(run_dir, 0)
        if fd is not None:
            os.close(fd)
    check_run_dir(run_dir, resume=resume, force=force, source=cfg.source, tokenizer=data.tokenizer)
    if resume:
        if not (run_dir / CHECKPOINT_NAME).is_file():
            raise RunDirectoryError(f"--resume: no checkpoint at {run_dir / CHECKPOINT_NAME}")
        check_resumed_tokenizer(run_dir, data.tokenizer_sha256, data.tokenizer)
    open_run_sources(cfg)


def set_aside(run_dir: Path, names: tuple[str, ...] = EARLIER_RUN_FILES) -> list[tuple[Path, Path]]:
    """--force: renames the earlier run's files aside (NAME.replaced), to be removed once the new run has
    saved its first checkpoint (`drop_set_aside`) or put back if it dies before (`restore_set_aside`). A
    tokenizer/ of the user's (not the run's copy) is never moved."""
    moved = []
    for name in names:
        path = run_dir / name
        if not path.exists() or (name == TOKENIZER_DIR and not is_run_copy(path)):
            continue
        aside = run_dir / f"{name}.replaced"
        _remove(aside)  # a stale one, from a run that died between its first checkpoint and the removal
        os.replace(path, aside)
        moved.append((path, aside))
    return moved


def drop_set_aside(moved: list[tuple[Path, Path]]) -> None:
    for _, aside in moved:
        _remove(aside)


def restore_set_aside(moved: list[tuple[Path, Path]]) -> None:
    for path, aside in moved:
        if aside.exists():
            _remove(path)  # this run's partial metrics or its tokenizer copy, if any
            os.replace(aside, path)


def _starts_with(path: Path, prefix: str) -> bool:
    with open(path, "rb") as f:
        return f.read(len(prefix.encode("utf-8"))) == prefix.encode("utf-8")


def _remove(path: Path) -> None:
    """Removes a file or a directory of the run's own (never one of the user's: callers check)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
