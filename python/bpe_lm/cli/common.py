"""What every command shares: the user-error type, argument types, checks of inputs and outputs made
before any heavy work, and loading a tokenizer directory."""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path

from bpe_lm.errors import BpeLmError


class UserError(BpeLmError):
    """A problem with the user's input: printed as one line, exit status 1."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows real defaults only: not for flags, nor where the help text already explains the default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "default:" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action) or ""


def peak_rss_mb() -> float:
    """Peak resident memory of this process, in MB: its own high-water mark (VmHWM) where /proc has it, since
    Linux's ru_maxrss also counts the memory the parent held when it started this process; else ru_maxrss
    (Linux reports KiB, macOS bytes)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def check_inputs(patterns: list[str] | str):
    """Before heavy work: paths and globs expanded, each input's format detected (`bpe_lm.readers`), and
    each readable and not empty (after decompression, too). Returns the inputs (`readers.Input`)."""
    from bpe_lm.readers import InputError, open_decompressed, resolve

    try:
        inputs = resolve([patterns] if isinstance(patterns, str) else patterns)
    except InputError as e:
        raise UserError(str(e)) from None
    for inp in inputs:
        if inp.disk_bytes() == 0:
            raise UserError(f"{inp.where}: is empty")
        if inp.url is not None:
            continue  # read through a local copy when its turn comes
        if inp.compression != "none":
            try:
                with open_decompressed(inp.path) as f:
                    empty = f.read(1) == b""
            except (OSError, ValueError) as e:
                reason = str(e).removeprefix(f"{inp.path}: ")  # the core's errors name the file already
                raise UserError(f"{inp.path}: not a valid {inp.compression} file ({reason})") from None
            if empty:
                raise UserError(f"{inp.path}: is empty (after decompression)")
    return inputs


def add_text_field_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--text-field",
        default="text",
        metavar="NAME",
        help="the field (JSON lines) or column (parquet, Arrow) that holds each record's text",
    )


INPUT_HELP = (
    "corpus files or shell-style globs (quote them: 'shards/*.parquet'), read in the order given: text "
    "(.txt, .gz, .zst; documents separated by special tokens), JSON lines (.jsonl/.json, .gz, .zst), "
    "parquet, Arrow files or `datasets` save_to_disk directories, CSV/TSV with a header row (.csv/.tsv, .gz, "
    ".zst) (one document per record)"
)


def check_output_file(path: str | os.PathLike[str], force: bool) -> None:
    from bpe_lm._io import check_new_output

    check_new_output(path, force)
    check_writable_directory(Path(path).parent)


def check_writable_directory(path: str | os.PathLike[str]) -> None:
    """Before heavy work: the nearest existing ancestor of `path` is a directory we may create files in
    (missing directories are created when writing)."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise UserError(f"{p}: is not a directory, so {path} cannot be created")
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{p}: permission denied (cannot write {path})")


def number(minimum: float | None = None, *, above: bool = False, maximum: float | None = None):
    """An argparse type for a finite number in a range: `minimum` (exclusive when `above`), `maximum`
    (inclusive). NaN and infinities are refused, whatever the range."""

    def parse(text: str) -> float:
        import math

        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if minimum is not None and (value <= minimum if above else value < minimum):
            raise argparse.ArgumentTypeError(
                f"expected a number {'above' if above else 'of at least'} {minimum:g}, got {text!r}"
            )
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"expected a number of at most {maximum:g}, got {text!r}")
        return value

    return parse


def thread_count(text: str) -> int:
    """--threads: a positive integer; more than the core's cap per core (`_core.MAX_THREADS_PER_CORE`, which
    the core applies to every call) is said in a note."""
    from bpe_lm import _core

    value = positive_int(text)
    cap = _core.MAX_THREADS_PER_CORE * len(
        os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    )
    if value > cap:
        print(
            f"bpe-lm: note: --threads {value} is more than {_core.MAX_THREADS_PER_CORE} per core; using {cap}",
            file=sys.stderr,
        )
        return cap
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def load_tokenizer(directory: str):
    from bpe_lm.tokenizer import Tokenizer

    if not Path(directory).is_dir():
        raise UserError(f"{directory}: tokenizer directory not found (train one with `bpe-lm train-tokenizer`)")
    return Tokenizer.load(directory)


def require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("this command needs PyTorch: pip install 'bpe-lm[lm]' (or pip install torch)") from None


def add_model_source(p: argparse.ArgumentParser) -> None:
    """--run RUN | --checkpoint CKPT, one of them required."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN", help="run directory (uses its checkpoint.pt)")
    src.add_argument("--checkpoint", metavar="CKPT", help="checkpoint file")


def add_tokenizer_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--tokenizer",
        metavar="DIR",
        help=f"{what} (default: the run's own copy, RUN/tokenizer; when given, it must be the one the run recorded)",
    )


def check_model_source(source: str) -> None:
    """Before torch is imported: the run directory has a checkpoint, or the checkpoint file exists."""
    from bpe_lm.run_files import CHECKPOINT_NAME

    path = Path(source)
    if path.is_dir():
        if not (path / CHECKPOINT_NAME).is_file():
            raise UserError(f"{source}: no {CHECKPOINT_NAME} in this run directory (has `bpe-lm train` saved one yet?)")
    elif not path.is_file():
        raise UserError(f"{source}: no such run directory or checkpoint file")


def add_errors_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--errors",
        choices=["strict", "replace"],
        default="strict",
        help="text that is not UTF-8, in any format (and in JSON lines, escapes of half a surrogate pair): "
        "fail naming its file and place, or read it as U+FFFD",
    )
