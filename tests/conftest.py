from __future__ import annotations

import gzip
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # for reference_bpe

from bpe_lm.pipeline import SHARED_TEXT_FILES, shared_data_dir  # noqa: E402, F401  (SHARED_TEXT_FILES: for the tests)

SHARED_DATA = shared_data_dir()

# ---------------------------------------------------------------------------------------------------- CI policy
# Under CI (the `CI` variable set, as by .ci/run's callers) nothing may skip: a parity test that skips because
# tiktoken is missing, or a shared-data test that skips because ../shared/data is not there, would let CI go
# green without checking what it claims. Tests that need a CUDA device carry the `gpu` mark instead: they are
# deselected (not skipped) where there is no device, and run by the plain test command where there is one.
# The llama.cpp cross-check carries the `llama` mark: llama-cpp-python builds from source for many minutes,
# so it is an opt-in extra (`bash scripts/llama_check.sh`), deselected where it is not installed.

STRICT = bool(os.environ.get("CI"))


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device; deselected where there is none")
    config.addinivalue_line(
        "markers", "llama: needs llama-cpp-python (the `llama` extra); deselected where it is not installed"
    )


def _has_llama_cpp() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for mark, available in (("gpu", _has_cuda), ("llama", _has_llama_cpp)):
        marked = [item for item in items if item.get_closest_marker(mark)]
        if marked and not available():
            config.hook.pytest_deselected(items=marked)
            items[:] = [item for item in items if not item.get_closest_marker(mark)]


def _fail_skip(report) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped under CI, which must run every test: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped:
        _fail_skip(report)


needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"shared corpus not found at {SHARED_DATA} (set BPE_LM_SHARED_DATA)"
)


def shared_slice(name: str, chars: int, start_chars: int = 0) -> str:
    """The first `chars` characters (after skipping `start_chars`) of a shared corpus file."""
    with gzip.open(SHARED_DATA / name, "rt", encoding="utf-8") as f:
        if start_chars:
            f.read(start_chars)
        return f.read(chars)


STORY_WORDS = (
    "once upon a time there was little girl who lived in village near forest whenever she went out "
    "the wore red riding hood so everybody called her grandmother wolf said I'll you're can't don't "
    "42 1999 3.14 hello, world! what? yes... Tom's cat isn't here"
).split()


def generated_corpus(n_docs: int = 200, seed: int = 0) -> str:
    """Deterministic story-like text with document separators, for tests that must run without data."""
    import random

    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        lines = []
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(STORY_WORDS) for _ in range(rng.randint(3, 15))]
            words[0] = words[0].capitalize()
            lines.append(" ".join(words) + rng.choice([".", "!", "?", ""]))
        docs.append("\n".join(lines))
    return "\n<|endoftext|>\n".join(docs) + "\n"


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(generated_corpus(), encoding="utf-8")
    return path


def write_token_files(directory: Path, vocab_size: int) -> tuple[Path, Path]:
    """train.npy (16,000 ids) and valid.npy (2,000): a repeating pattern of 40 ids with 10% noise below
    `vocab_size`, learnable in a few steps."""
    import numpy as np

    rng = np.random.default_rng(0)
    noisy = rng.random(18000) < 0.1
    data = np.where(noisy, rng.integers(0, vocab_size, 18000), np.tile(np.arange(40), 450)).astype(np.uint16)
    np.save(directory / "train.npy", data[:16000])
    np.save(directory / "valid.npy", data[16000:])
    return directory / "train.npy", directory / "valid.npy"


def one_line_error(capsys, *needles: str) -> str:
    """The command's stderr is one error line (warnings aside), with no traceback, holding each needle."""
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith("bpe-lm: warning:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# Prefix of a `python -c` program that runs with `torch` made unimportable, as without the `lm` extra.
NO_TORCH = "import sys; sys.modules['torch'] = None; "


def run_keeping_checkpoint(cfg, step: int, resume_dir: Path) -> dict:
    """Trains `cfg` to its end, copying the checkpoint saved at `step` to `resume_dir`/checkpoint.pt, where
    a run resumed from that step can go on; returns the run's summary."""
    import shutil

    from bpe_lm.run_files import CHECKPOINT_NAME
    from bpe_lm.train import Trainer

    resume_dir.mkdir(parents=True, exist_ok=True)

    class KeepCheckpoint(Trainer):
        def _save(self, *args):
            super()._save(*args)
            if self.iteration == step:
                shutil.copy(self.checkpoint_path, resume_dir / CHECKPOINT_NAME)

    return KeepCheckpoint(cfg, progress=False).run()
