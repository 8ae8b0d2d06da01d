"""Fault injection: `kill -9` at random moments of `bpe-lm encode` (of text, JSON lines and parquet),
`bpe-lm train-tokenizer` and checkpoint saving, 24 times each, half of them over a previous output being
replaced with --force. After every kill the output is either absent (when there was none), the previous one
byte for byte, or complete and equal to an uninterrupted run's; nothing else is left but temporaries named
with the dead writer's pid, which the next run removes.

Each trial forks this process (the work starts at once, without an interpreter start-up) and the parent
sends SIGKILL after a random delay of up to 1.3 times an uninterrupted run's duration."""

from __future__ import annotations

import os
import random
import re
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bpe_lm import Tokenizer
from bpe_lm.cli import main

TRIALS = 24
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def run_in_child(work: Callable[[], object]) -> int:
    """Forks; the child runs `work` with its output silenced and exits (0 on success). Returns the pid."""
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            result = work()
            code = 0 if result in (None, 0) else 1
        finally:
            os._exit(code)
    return pid


def timed_child(work: Callable[[], object], limit: float = 120.0) -> float:
    """Seconds an uninterrupted run takes in a forked child (which must succeed within `limit`)."""
    start = time.perf_counter()
    pid = run_in_child(work)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() - start > limit:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the uninterrupted run in a forked child did not finish in {limit:.0f} s")
        time.sleep(0.002)
    assert os.waitstatus_to_exitcode(status) == 0
    return time.perf_counter() - start


def kill_at(work: Callable[[], object], delay: float) -> int:
    pid = run_in_child(work)
    time.sleep(delay)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    return pid


def leftovers(directory: Path, output: str, keep: set[str]) -> list[str]:
    """Entries of `directory` other than `output` and `keep`; each must be a temporary of `output`."""
    return [e for e in os.listdir(directory) if e != output and e not in keep]


def assert_only_dead_temporaries(names: list[str], output: str) -> None:
    pattern = re.compile(rf"^\.{re.escape(output)}\.(\d+)\..*tmp")
    for name in names:
        m = pattern.match(name)
        assert m, f"unexpected file left behind: {name}"
        with pytest.raises(ProcessLookupError):
            os.kill(int(m.group(1)), 0)


def run_trials(
    work_for: Callable[[bool], Callable[[], object]],
    duration: float,
    reset: Callable[[bool], None],
    check: Callable[[bool], str],
    seed: int,
) -> dict[str, int]:
    """TRIALS kills at random delays; `reset(with_previous)` prepares the directory, `check(with_previous)`
    asserts the state after the kill and names it."""
    rng = random.Random(seed)
    outcomes: dict[str, int] = {}
    for trial in range(TRIALS):
        with_previous = trial % 2 == 1
        reset(with_previous)
        kill_at(work_for(with_previous), rng.uniform(0.0, 1.3 * duration))  # some runs finish first
        state = check(with_previous)
        outcomes[state] = outcomes.get(state, 0) + 1
    return outcomes


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """About 2 MB of documents over 20,000 made-up words, so encoding and training take a while (a few
    tenths of a second) for the kills to land in."""
    rng = random.Random(5)
    words = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyzäöü") for _ in range(rng.randint(2, 11))) for _ in range(20000)
    ]
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 200))) + "." for _ in range(3000)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n<|endoftext|>\n".join(docs), encoding="utf-8")
    return path


def as_records(corpus: Path, fmt: str, directory: Path) -> tuple[Path, list[str]]:
    """The corpus's documents as records of a JSON-lines (zstd) or parquet file, or of four gzip JSON-lines
    shards (their glob)."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    docs = corpus.read_text(encoding="utf-8").split("\n<|endoftext|>\n")
    if fmt == "jsonl.gz shards":  # read side by side, the later ones' ids held in spill files
        import gzip

        shards = directory / "shards"
        shards.mkdir()
        quarter = -(-len(docs) // 4)
        for i in range(4):
            lines = "".join(json.dumps({"text": d}) + "\n" for d in docs[i * quarter : (i + 1) * quarter])
            (shards / f"{i}.jsonl.gz").write_bytes(gzip.compress(lines.encode("utf-8"), 1))
        return shards / "*.jsonl.gz", docs
    if fmt == "jsonl.zst":
        path = directory / "corpus.jsonl.zst"
        lines = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode("utf-8")
        path.write_bytes(zstandard.ZstdCompressor().compress(lines))
    else:
        path = directory / "corpus.parquet"
        pq.write_table(pa.table({"text": docs}), path, row_group_size=200)
    return path, docs


@pytest.mark.parametrize("fmt", ["txt", "jsonl.zst", "parquet", "jsonl.gz shards"])
def test_kill_during_encode(tmp_path, corpus, fmt):
    tok_dir = tmp_path / "tok"
    assert main(["train-tokenizer", str(corpus), "--vocab", "1000", "-o", str(tok_dir), "--quiet"]) == 0
    tok = Tokenizer.load(tok_dir)
    if fmt == "txt":
        expected = np.array(tok.encode(corpus.read_text(encoding="utf-8")), dtype=np.uint16)
    else:
        corpus, docs = as_records(corpus, fmt, tmp_path)
        eot = tok.special_token_ids["<|endoftext|>"]
        expected = np.array([i for d in docs for i in tok.encode_ordinary(d) + [eot]], dtype=np.uint16)
    out_dir = tmp_path / "out"
    out = out_dir / "tokens.npy"
    previous = np.arange(100, dtype=np.uint16)

    def work_for(force: bool):
        return lambda: main(
            ["encode", str(corpus), "--tokenizer", str(tok_dir), "-o", str(out), "--quiet"] + ["--force"] * force
        )

    def reset(with_previous: bool) -> None:
        out_dir.mkdir(exist_ok=True)
        for e in out_dir.iterdir():
            e.unlink()
        if with_previous:
            np.save(out, previous)

    def check(with_previous: bool) -> str:
        assert_only_dead_temporaries(leftovers(out_dir, out.name, set()), out.name)
        if not out.exists():
            assert not with_previous, "the previous output was removed"
            return "absent"
        ids = np.load(out)
        if with_previous and np.array_equal(ids, previous):
            return "previous"
        np.testing.assert_array_equal(ids, expected)
        return "complete"

    reset(False)
    duration = timed_child(work_for(False))
    outcomes = run_trials(work_for, duration, reset, check, seed=1)
    print(f"{duration:.3f} s", outcomes)
    assert outcomes.get("complete", 0) + outcomes.get("previous", 0) + outcomes.get("absent", 0) == TRIALS
    assert outcomes.get("absent", 0) + outcomes.get("previous", 0) > 0, outcomes  # some kills hit the work
    # The next run removes the dead writers' temporaries (with a warning) and writes the output.
    reset(True)
    kill_at(work_for(True), duration / 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert work_for(True)() == 0
    assert os.listdir(out_dir) == [out.name]
    np.testing.assert_array_equal(np.load(out), expected)


def test_kill_during_train_tokenizer(tmp_path, corpus):
    out = tmp_path / "tok"
    reference_dir = tmp_path / "reference"
    assert main(["train-tokenizer", str(corpus), "--vocab", "2000", "-o", str(reference_dir), "--quiet"]) == 0
    previous_dir = tmp_path / "previous"
    assert main(["train-tokenizer", str(corpus), "--vocab", "600", "-o", str(previous_dir), "--quiet"]) == 0
    names = sorted(p.name for p in reference_dir.iterdir())
    reference = {n: (reference_dir / n).read_bytes() for n in names}
    previous = {n: (previous_dir / n).read_bytes() for n in names}
    keep = {"reference", "previous"}

    def work_for(force: bool):
        return lambda: main(
            ["train-tokenizer", str(corpus), "--vocab", "2000", "-o", str(out), "--quiet"] + ["--force"] * force
        )

    def reset(with_previous: bool) -> None:
        if out.exists():
            for e in out.iterdir():
                e.unlink()
            out.rmdir()
        if with_previous:
            out.mkdir()
            for n, data in previous.items():
                (out / n).write_bytes(data)

    def check(with_previous: bool) -> str:
        for name in leftovers(tmp_path, out.name, keep):
            assert_only_dead_temporaries([name], out.name)
        if not out.exists() or not any(out.iterdir()):
            assert not with_previous, "the previous tokenizer was removed"
            return "absent"
        files = {p.name: p.read_bytes() for p in out.iterdir()}
        if with_previous and files == previous:
            return "previous"
        assert files == reference, "a mix of files, or files unlike an uninterrupted run's"
        assert Tokenizer.load(out).vocab_size == Tokenizer.load(reference_dir).vocab_size
        return "complete"

    reset(False)
    duration = timed_child(work_for(False))
    outcomes = run_trials(work_for, duration, reset, check, seed=2)
    print(f"{duration:.3f} s", outcomes)
    assert outcomes.get("absent", 0) + outcomes.get("previous", 0) > 0, outcomes
    # The next run clears the temporaries of killed runs.
    reset(True)
    kill_at(work_for(True), duration / 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert work_for(True)() == 0
    assert sorted(os.listdir(tmp_path)) == sorted(keep | {"tok"})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == reference


def test_force_swaps_a_directory_of_only_its_own_files_but_keeps_other_files(tmp_path, corpus):
    out = tmp_path / "tok"
    assert main(["train-tokenizer", str(corpus), "--vocab", "300", "-o", str(out), "--quiet"]) == 0
    before = out.stat().st_ino
    assert main(["train-tokenizer", str(corpus), "--vocab", "320", "-o", str(out), "--quiet", "--force"]) == 0
    assert Tokenizer.load(out).vocab_size == 320
    if os.uname().sysname == "Linux":
        assert out.stat().st_ino != before  # replaced in one step, by swapping the directories
    (out / "notes.txt").write_text("mine")
    before = out.stat().st_ino
    assert main(["train-tokenizer", str(corpus), "--vocab", "330", "-o", str(out), "--quiet", "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and out.stat().st_ino == before
    assert Tokenizer.load(out).vocab_size == 330


def test_kill_during_checkpoint_save(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")
    from bpe_lm.checkpoint import read_checkpoint, save_checkpoint
    from bpe_lm.model import ModelConfig, TransformerLM
    from bpe_lm.optim import AdamW

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=4000, context_length=64, d_model=192, num_layers=3, num_heads=4)
    model = TransformerLM(config)
    opt = AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    path = tmp_path / "checkpoint.pt"
    previous_weights = model.token_embeddings.weight.detach().clone() + 1

    def work_for(_: bool):
        return lambda: save_checkpoint(model, opt, 2, path)

    def reset(with_previous: bool) -> None:
        for e in tmp_path.iterdir():
            e.unlink()
        if with_previous:
            with torch.no_grad():
                model.token_embeddings.weight.add_(1)
            save_checkpoint(model, opt, 1, path)
            with torch.no_grad():
                model.token_embeddings.weight.sub_(1)

    def check(with_previous: bool) -> str:
        assert_only_dead_temporaries(leftovers(tmp_path, path.name, set()), path.name)
        if not path.exists():
            assert not with_previous, "the previous checkpoint was removed"
            return "absent"
        state = read_checkpoint(path)
        weights = state["model"]["token_embeddings.weight"]
        if with_previous and state["iteration"] == 1:
            assert torch.equal(weights, previous_weights)
            return "previous"
        assert state["iteration"] == 2 and torch.equal(weights, model.token_embeddings.weight.detach())
        assert state["optimizer"]["state"][0]["exp_avg"].shape == model.token_embeddings.weight.shape
        return "complete"

    reset(False)
    duration = timed_child(work_for(False))
    outcomes = run_trials(work_for, duration, reset, check, seed=3)
    print(f"{duration:.3f} s", outcomes)
    assert outcomes.get("absent", 0) + outcomes.get("previous", 0) > 0, outcomes
