"""The `bpe-lm` command: argument parsing and printing only; the work is the library's. Each subcommand
checks its inputs before any heavy work, reports a user error as one line naming the file or argument
(exit status 1), shows the traceback of a bug (exit status 2), and never leaves a half-written output."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import traceback
import typing
import warnings
from collections.abc import Callable, Sequence

from bpe_lm import __version__
from bpe_lm.cli.model_commands import add_accounting, add_eval, add_export, add_generate, add_plot, add_train
from bpe_lm.cli.pipeline_commands import add_demo, add_download
from bpe_lm.cli.tokenizer_commands import (
    add_count_pretokens,
    add_decode,
    add_encode,
    add_export_tokenizer,
    add_import_tokenizer,
    add_tokenizer_stats,
    add_train_tokenizer,
)
from bpe_lm.errors import BpeLmError

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_demo,
    add_download,
    add_train_tokenizer,
    add_count_pretokens,
    add_encode,
    add_decode,
    add_tokenizer_stats,
    add_export_tokenizer,
    add_import_tokenizer,
    add_accounting,
    add_train,
    add_eval,
    add_generate,
    add_export,
    add_plot,
]


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a bad argument reported like every other bad input: usage, one line, exit status 1
    (argparse's own 2 is this command's status for an internal error)."""

    def error(self, message: str) -> typing.NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="bpe-lm",
        description="Raw text to a trained language model: BPE tokenizer training and encoding, and a Transformer LM.",
    )
    parser.add_argument("--version", action="version", version=f"bpe-lm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of every error (also: BPE_LM_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def describe_error(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def user_error_types() -> tuple[type[BaseException], ...]:
    """Errors that are about the user's input, files or settings: one line, exit status 1. `BpeLmError`
    (bpe_lm.errors) is the base of every error bpe-lm raises on purpose, the CLI's `UserError` included;
    ValueError and OSError from elsewhere (numpy reading a file, the OS) are the user's too. Anything else
    (KeyError, a RuntimeError from inside torch or the core, ...) is a bug and shows its traceback."""
    types: list[type[BaseException]] = [BpeLmError, ValueError, OSError]
    if "bpe_lm.train" in sys.modules:
        types.append(sys.modules["bpe_lm.train"].TrainingError)
    return tuple(types)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001 - warnings.showwarning's signature
    print(f"bpe-lm: warning: {message}", file=file or sys.stderr)


class Terminated(BaseException):
    """SIGTERM or SIGHUP (`kill`, `timeout`, Slurm, `docker stop`, a closed terminal): raised in the main
    thread like KeyboardInterrupt, so every temporary output is removed on the way out. `bpe-lm train`
    catches these signals itself while training, to save a checkpoint first."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def _termination_raises():
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    names = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    previous = {name: signal.signal(getattr(signal, name), _terminate) for name in names}
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version (0) or a bad argument (1)
        return int(exit_.code or 0)
    debug = args.debug or os.environ.get("BPE_LM_DEBUG", "") not in ("", "0")
    if not debug:
        warnings.showwarning = _one_line_warning
    try:
        with _termination_raises():
            args.func(args)
        sys.stdout.flush()
    except KeyboardInterrupt:
        print(f"bpe-lm {args.command}: interrupted", file=sys.stderr)
        return 130
    except Terminated as stop:
        print(
            f"bpe-lm {args.command}: stopped by {signal.Signals(stop.signum).name}; nothing half-written is left",
            file=sys.stderr,
        )
        return 128 + stop.signum
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except BrokenPipeError:
        # The reader went away (`bpe-lm accounting --json | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as err:  # noqa: BLE001 - sorted into user errors and bugs below
        if debug or not isinstance(err, user_error_types()):
            traceback.print_exc()
            if not isinstance(err, user_error_types()):
                print(
                    f"bpe-lm {args.command}: internal error ({type(err).__name__}); this is a bug, please report it with the traceback above",
                    file=sys.stderr,
                )
                return 2
        print(f"bpe-lm {args.command}: error: {describe_error(err)}", file=sys.stderr)
        return 1
    return 0
