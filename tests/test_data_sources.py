"""Training data as users hold it (issue 25): data.train / valid as a path, a list, a glob or an `encode -o
DIR/` directory; weights; windows that never straddle files; tokens drawn per source in the metrics;
validation per source; exact resume with a mixture."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")

from bpe_lm.config import ConfigError, build_config  # noqa: E402
from bpe_lm.data import WindowSampler, get_batch  # noqa: E402
from bpe_lm.metrics import read_metrics  # noqa: E402
from bpe_lm.sources import DataSourceError  # noqa: E402
from bpe_lm.train import Trainer  # noqa: E402

from conftest import run_keeping_checkpoint  # noqa: E402

CTX = 16


def write_file(path, low: int, n: int, seed: int = 0) -> np.ndarray:
    """A token file whose ids all lie in [low, low + 16): the file a window came from shows in its ids."""
    rng = np.random.default_rng(seed)
    pattern = np.tile(np.arange(16), n // 16 + 1)[:n]
    ids = np.where(rng.random(n) < 0.1, rng.integers(0, 16, n), pattern) + low
    np.save(path, ids.astype(np.uint16))
    return ids


def raw_config(tmp_path, train, valid, **data) -> dict:
    return {
        "model": dict(vocab_size=64, context_length=CTX, d_model=32, num_layers=2, num_heads=4, d_ff=64),
        "optimizer": {"lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 2},
        "data": {"train": train, "valid": valid, **data},
        "training": {"batch_size": 8, "max_iters": 20, "eval_interval": 10, "eval_iters": 2, "log_interval": 1,
                     "checkpoint_interval": 10, "out_dir": str(tmp_path / "run"), "device": "cpu"},
    }  # fmt: skip


@pytest.fixture
def files(tmp_path):
    """web/ (two shards, ids 0..15 and 16..31), stories.npy (ids 32..47), two valid files."""
    (tmp_path / "web").mkdir()
    write_file(tmp_path / "web" / "a.npy", 0, 3000, 1)
    write_file(tmp_path / "web" / "b.npy", 16, 1000, 2)
    write_file(tmp_path / "stories.npy", 32, 2000, 3)
    write_file(tmp_path / "valid_web.npy", 0, 600, 4)
    write_file(tmp_path / "valid_stories.npy", 32, 300, 5)
    return tmp_path


# ---------------------------------------------------------------------------------------------------- sampler


def test_one_file_draws_exactly_as_get_batch():
    data = np.arange(5000, dtype=np.uint16) % 64
    for seed in range(3):
        a = get_batch(data, 8, CTX, "cpu", torch.Generator().manual_seed(seed))
        x, y, source = WindowSampler([[data]], CTX).draw(8, "cpu", torch.Generator().manual_seed(seed))
        assert torch.equal(a[0], x) and torch.equal(a[1], y) and (source == 0).all()


def test_windows_never_straddle_files_and_follow_the_weights():
    files = [np.arange(low, low + n, dtype=np.int64) for low, n in ((0, 300), (10_000, 40), (20_000, 500))]
    generator = torch.Generator().manual_seed(0)
    # Without weights: every window of every file equally likely (each file by its windows).
    sampler = WindowSampler([[files[0], files[1]], [files[2]]], CTX)
    x, y, source = sampler.draw(40_000, "cpu", generator)
    rows = torch.cat([x, y[:, -1:]], 1)
    assert ((rows[:, 1:] - rows[:, :-1]) == 1).all()  # consecutive ids: one file, no jump
    file_of_row = rows[:, 0] // 10_000
    windows = np.array([300 - CTX, 40 - CTX, 500 - CTX])
    shares = np.bincount(file_of_row.numpy(), minlength=3) / len(rows)
    assert np.allclose(shares, windows / windows.sum(), atol=0.01)
    assert torch.equal(source, (file_of_row == 2).long())
    # With weights 1:3 for the sources: a row picks its source first, then a window in it uniformly.
    weighted = WindowSampler([[files[0], files[1]], [files[2]]], CTX, [1.0, 3.0])
    x, y, source = weighted.draw(40_000, "cpu", generator)
    assert abs(float(source.float().mean()) - 0.75) < 0.01
    first = x[source == 0, 0] // 10_000
    assert abs(float((first == 1).float().mean()) - windows[1] / windows[:2].sum()) < 0.01
    assert (x[source == 1, 0] >= 20_000).all() and (x[:, -1] < x[:, 0] + CTX).all()


# ---------------------------------------------------------------------------------------------------- config


def test_entries_globs_lists_and_their_errors(files):
    cfg = build_config(raw_config(files, ["web/*.npy", "stories.npy"], "valid_web.npy", train_weights=[0.8, 0.2]), base_dir=files)  # fmt: skip
    trainer = Trainer(cfg, progress=False)
    trainer._load_data()
    assert [s.name for s in trainer.train_sources] == ["web/*.npy", "stories.npy"]
    assert [p.name for p in trainer.train_sources[0].paths] == ["a.npy", "b.npy"]  # glob matches sorted
    assert trainer.train_sources[0].tokens == 4000

    def refused(match, **overrides):
        raw = raw_config(files, ["web/*.npy", "stories.npy"], "valid_web.npy")
        raw["data"].update(overrides)
        with pytest.raises((ConfigError, DataSourceError, ValueError), match=match):
            Trainer(build_config(raw, base_dir=files), progress=False)._load_data()

    refused(r"data.train_weights has 1 weights for 2 data.train entries", train_weights=[1.0])
    refused(r"data.train_weights must be non-negative", train_weights=[1.0, -1.0])
    refused(r"data.train .*/nothing/\*.npy: the pattern matches no file", train=["nothing/*.npy"])
    refused(r"data.train .*/web: a directory without manifest.json", train=["web"])
    refused(r"data.train: .*a.npy is in two entries \('web/\*.npy' and 'web/a.npy'\)", train=["web/*.npy", "web/a.npy"])
    refused(r"data.train must be a string or a list of strings", train=[1, 2])
    np.save(files / "web" / "b.npy", np.array([1, 2, 99] * 20, dtype=np.uint16))
    refused(r"b.npy: token id 99 at position 2 is outside the model's vocabulary", train=["web/*.npy"])


def test_a_directory_encode_wrote_is_one_source(tmp_path):
    from bpe_lm.cli import main
    from bpe_lm.tokenizer import Tokenizer

    from conftest import generated_corpus

    for i in range(3):
        (tmp_path / f"part{i}.txt").write_text(generated_corpus(150, seed=i), encoding="utf-8")
    corpus = tmp_path / "all.txt"
    corpus.write_text("".join((tmp_path / f"part{i}.txt").read_text() for i in range(3)), encoding="utf-8")
    assert main(["train-tokenizer", str(corpus), "--vocab", "300", "-o", str(tmp_path / "tok"), "--quiet"]) == 0
    parts = [str(tmp_path / f"part{i}.txt") for i in range(3)]
    assert (
        main(["encode", *parts, "-o", str(tmp_path / "ids") + "/", "--tokenizer", str(tmp_path / "tok"), "--quiet"])
        == 0
    )
    Tokenizer.load(tmp_path / "tok").encode_file(tmp_path / "part0.txt", tmp_path / "valid.npy")
    raw = raw_config(tmp_path, "ids", "valid.npy", tokenizer="tok")
    del raw["model"]["vocab_size"]
    trainer = Trainer(build_config(raw, base_dir=tmp_path), progress=False)
    trainer._load_data()
    (source,) = trainer.train_sources
    listed = json.loads((tmp_path / "ids" / "manifest.json").read_text())["outputs"]
    assert [p.name for p in source.paths] == [e["output"] for e in listed]
    assert source.tokens == sum(e["tokens"] for e in listed)
    # A manifest of another tokenizer is refused naming the directory.
    assert main(["train-tokenizer", str(corpus), "--vocab", "290", "-o", str(tmp_path / "tok2"), "--quiet"]) == 0
    raw["data"]["tokenizer"] = "tok2"
    with pytest.raises(
        DataSourceError, match="data.train .*/ids: manifest.json says its files were encoded with another tokenizer"
    ):
        Trainer(build_config(raw, base_dir=tmp_path), progress=False)._load_data()


# ---------------------------------------------------------------------------------------------------- training


def test_a_mixture_trains_reports_its_sources_and_resumes_exactly(files):
    train = ["web/a.npy", "web/b.npy", "stories.npy"]
    valid = ["valid_web.npy", "valid_stories.npy"]
    raw = raw_config(files, train, valid, train_weights=[0.5, 0.25, 0.25])
    raw["training"]["out_dir"] = str(files / "full")
    summary = run_keeping_checkpoint(build_config(raw, base_dir=files), 10, files / "resumed")
    rows = read_metrics(files / "full")
    train_rows = [r for r in rows if "train_loss" in r]
    for r in train_rows:
        assert sorted(r["tokens_by_source"]) == sorted(train) and sum(r["tokens_by_source"].values()) == r["tokens"]
    drawn = summary["tokens_by_source"]
    assert drawn == train_rows[-1]["tokens_by_source"] and all(drawn[name] > 0 for name in train)
    # Rows draw their file by weight: in each window, the ids say which file it came from.
    assert drawn["web/a.npy"] > drawn["web/b.npy"] and drawn["web/a.npy"] > drawn["stories.npy"]
    # Validation: each source's loss, and their mean weighted by tokens (600 and 300).
    valid_rows = [r for r in rows if "valid_loss" in r]
    for r in valid_rows:
        by = r["valid_loss_by_source"]
        assert sorted(by) == sorted(valid)
        assert r["valid_loss"] == pytest.approx((600 * by["valid_web.npy"] + 300 * by["valid_stories.npy"]) / 900)

    raw["training"]["out_dir"] = str(files / "resumed")
    Trainer(build_config(raw, base_dir=files), resume=True, progress=False).run()
    resumed = {r["step"]: r for r in read_metrics(files / "resumed") if "train_loss" in r}
    full = {r["step"]: r for r in train_rows}
    assert sorted(resumed) == list(range(11, 21))
    for step in range(11, 21):
        assert resumed[step]["train_loss"] == full[step]["train_loss"]
        assert resumed[step]["tokens_by_source"] == full[step]["tokens_by_source"]
    # Resuming with other sources is refused, naming both.
    raw["data"]["train"], raw["data"]["train_weights"] = train[:2], [0.5, 0.5]
    with pytest.raises(ConfigError, match=r"--resume: the checkpoint drew from the train sources"):
        Trainer(build_config(raw, base_dir=files), resume=True, progress=False).run()
