"""The run owns its tokenizer (issue 23, item 1): `[data] tokenizer` gives model.vocab_size and is
fingerprinted in the run's config.toml; the run keeps a copy; eval, generate and export use that copy when
--tokenizer is not given and refuse one that is not the run's; and the checks come before torch is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")

from bpe_lm.cli import main  # noqa: E402
from bpe_lm.config import ConfigError, build_config, load_config, to_toml  # noqa: E402
from bpe_lm.formats import CONFIG_FILE  # noqa: E402
from bpe_lm.run_files import RUN_COPY_KEY, TOKENIZER_DIR, recorded_fingerprint, saved_settings  # noqa: E402
from bpe_lm.tokenizer import Tokenizer  # noqa: E402

from conftest import NO_TORCH, generated_corpus, one_line_error  # noqa: E402


def train_tokenizer(tmp_path: Path, name: str, seed: int, vocab: int = 300) -> Path:
    corpus = tmp_path / f"{name}.txt"
    corpus.write_text(generated_corpus(300, seed=seed), encoding="utf-8")
    out = tmp_path / name
    assert main(["train-tokenizer", str(corpus), "--vocab", str(vocab), "-o", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def tok_dir(tmp_path) -> Path:
    return train_tokenizer(tmp_path, "tok", seed=0)


@pytest.fixture
def other_tok(tmp_path) -> Path:
    """Another tokenizer of the same size: only the fingerprint tells it apart."""
    return train_tokenizer(tmp_path, "other", seed=11)


@pytest.fixture
def token_files(tmp_path, tok_dir):
    tok = Tokenizer.load(tok_dir)
    (tmp_path / "text.txt").write_text(generated_corpus(400, seed=3), encoding="utf-8")
    (tmp_path / "valid.txt").write_text(generated_corpus(60, seed=4), encoding="utf-8")
    tok.encode_file(tmp_path / "text.txt", tmp_path / "train.npy")
    tok.encode_file(tmp_path / "valid.txt", tmp_path / "valid.npy")
    return tmp_path / "train.npy", tmp_path / "valid.npy"


def raw_config(tmp_path: Path, tokenizer: str | None, out: str = "run", **model) -> dict:
    return {
        "model": dict(context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=64, **model),
        "optimizer": {"lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 2},
        "data": {"train": "train.npy", "valid": "valid.npy", **({"tokenizer": tokenizer} if tokenizer else {})},
        "training": {"batch_size": 8, "max_iters": 4, "eval_interval": 2, "eval_iters": 2, "log_interval": 2,
                     "checkpoint_interval": 2, "out_dir": out, "device": "cpu"},
    }  # fmt: skip


def write_config(tmp_path: Path, tokenizer: str | None = "tok", name: str = "run.toml", **kw) -> Path:
    path = tmp_path / name
    path.write_text(to_toml(raw_config(tmp_path, tokenizer, **kw)))
    return path


# ---------------------------------------------------------------------------------------------------- config


def test_vocab_size_comes_from_the_tokenizer_and_a_different_one_is_refused(tmp_path, tok_dir):
    tok = Tokenizer.load(tok_dir)
    cfg = load_config(write_config(tmp_path))  # "tok" is relative to the config file
    assert cfg.model.vocab_size == tok.vocab_size == 300
    assert cfg.data.tokenizer == str(tmp_path / "tok")
    assert cfg.data.tokenizer_sha256 == tok.fingerprint()
    assert load_config(write_config(tmp_path, vocab_size=300)).model.vocab_size == 300
    with pytest.raises(ConfigError, match=r"model.vocab_size = 512, but data.tokenizer .*tok has 300 tokens"):
        load_config(write_config(tmp_path, vocab_size=512))
    with pytest.raises(ConfigError, match="data.tokenizer .*absent: tokenizer directory not found"):
        load_config(write_config(tmp_path, tokenizer="absent"))
    raw = raw_config(tmp_path, str(tok_dir))
    raw["data"]["tokenizer_sha256"] = "0" * 64
    with pytest.raises(ConfigError, match="not the tokenizer this config was written for"):
        build_config(raw)
    without = raw_config(tmp_path, None)
    with pytest.raises(ConfigError, match=r"missing setting\(s\) vocab_size \(or set data.tokenizer"):
        build_config(without)


# ---------------------------------------------------------------------------------------------------- the run's copy


def test_the_run_keeps_a_copy_and_the_commands_use_it(tmp_path, tok_dir, other_tok, token_files, capsys):
    assert main(["train", "--config", str(write_config(tmp_path)), "--quiet"]) == 0
    run = tmp_path / "run"
    copy = run / TOKENIZER_DIR
    tok = Tokenizer.load(tok_dir)
    assert Tokenizer.load(copy).fingerprint() == tok.fingerprint()
    assert json.loads((copy / CONFIG_FILE).read_text())[RUN_COPY_KEY] == str(tok_dir.resolve())
    assert recorded_fingerprint(saved_settings(run)) == tok.fingerprint()
    capsys.readouterr()

    # generate: the run's copy by default, the same tokenizer given explicitly, never another one.
    greedy = ["generate", "--run", str(run), "--prompt", "the", "--temperature", "0", "--max-tokens", "5"]
    assert main(greedy) == 0
    by_default = capsys.readouterr().out
    assert main([*greedy, "--tokenizer", str(tok_dir)]) == 0
    assert capsys.readouterr().out == by_default
    assert main([*greedy, "--tokenizer", str(other_tok)]) == 1
    one_line_error(capsys, f"--tokenizer {other_tok}", "is not the tokenizer", "trained with")

    # eval --raw-text: the run's tokenizer encodes the text to check it is the tokens' text.
    base = ["eval", "--run", str(run), "--data", str(token_files[1]), "--device", "cpu", "--json"]
    assert main([*base, "--raw-text", str(tmp_path / "valid.txt")]) == 0
    assert "bits_per_byte" in json.loads(capsys.readouterr().out)
    assert main([*base, "--raw-text", str(tmp_path / "valid.txt"), "--tokenizer", str(other_tok)]) == 1
    one_line_error(capsys, "is not the tokenizer")

    # export: the run's copy goes into the export.
    assert main(["export", "--run", str(run), "-o", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    capsys.readouterr()
    assert main(["export", "--run", str(run), "-o", str(tmp_path / "hf2"), "--tokenizer", str(other_tok)]) == 1
    one_line_error(capsys, "is not the tokenizer")
    assert not (tmp_path / "hf2").exists()

    # A checkpoint moved out of its run still knows its tokenizer.
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    (alone / "model.pt").write_bytes((run / "checkpoint.pt").read_bytes())
    moved = ["generate", "--checkpoint", str(alone / "model.pt"), "--prompt", "the", "--max-tokens", "2"]
    assert main(moved) == 1
    one_line_error(capsys, "the run has no copy of its tokenizer", "give --tokenizer DIR")
    assert main([*moved, "--tokenizer", str(other_tok)]) == 1
    one_line_error(capsys, "is not the tokenizer")
    assert main([*moved, "--tokenizer", str(tok_dir)]) == 0
    capsys.readouterr()

    # A copy changed after training is not taken for the run's.
    (copy / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    assert main(greedy) == 1
    one_line_error(capsys, f"{copy}: is not the tokenizer", "changed after training")


def test_resume_and_force_with_tokenizers(tmp_path, tok_dir, other_tok, token_files, capsys):
    config = write_config(tmp_path)
    assert main(["train", "--config", str(config), "--quiet"]) == 0
    run = tmp_path / "run"
    capsys.readouterr()
    # Another tokenizer of the same size: --resume is refused naming both; the run's files stay.
    other = write_config(tmp_path, tokenizer="other", name="other.toml")
    before = (run / "checkpoint.pt").read_bytes()
    assert main(["train", "--config", str(other), "--quiet", "--resume", "--set", "training.max_iters=6"]) == 1
    one_line_error(capsys, "--resume", "trained with another tokenizer", f"data.tokenizer {other_tok}")
    assert (run / "checkpoint.pt").read_bytes() == before
    # Without --resume or --force the copy counts as a file of the earlier run.
    assert main(["train", "--config", str(other), "--quiet"]) == 1
    one_line_error(capsys, "holds an earlier run", "tokenizer")
    # --force: the new run's tokenizer replaces the copy.
    assert main(["train", "--config", str(other), "--quiet", "--force"]) == 0
    assert Tokenizer.load(run / TOKENIZER_DIR).fingerprint() == Tokenizer.load(other_tok).fingerprint()
    assert not (run / f"{TOKENIZER_DIR}.replaced").exists()


def test_a_tokenizer_directory_of_the_users_in_the_run_directory_is_never_moved(tmp_path, tok_dir, other_tok, token_files, capsys):  # fmt: skip
    # The user's own tokenizer lives at RUN/tokenizer and is the run's tokenizer: used in place, kept.
    run = tmp_path / "run"
    run.mkdir()
    own = run / TOKENIZER_DIR
    own.mkdir()
    for name in ("vocab.json", "merges.txt", CONFIG_FILE):
        (own / name).write_bytes((tok_dir / name).read_bytes())
    before = {p.name: p.read_bytes() for p in own.iterdir()}
    config = write_config(tmp_path, tokenizer="run/tokenizer")
    assert main(["train", "--config", str(config), "--quiet"]) == 0
    assert main(["train", "--config", str(config), "--quiet", "--force"]) == 0
    assert {p.name: p.read_bytes() for p in own.iterdir()} == before
    capsys.readouterr()
    # A run with another tokenizer would have to write its copy there: refused, even with --force.
    other = write_config(tmp_path, tokenizer="other", name="other.toml")
    for extra in ([], ["--force"]):
        assert main(["train", "--config", str(other), "--quiet", *extra]) == 1
        one_line_error(capsys, f"{own}: is not the copy of its tokenizer", "a directory of yours")
    assert {p.name: p.read_bytes() for p in own.iterdir()} == before


def test_tokenizer_config_vocab_size_is_read_back(tmp_path, tok_dir):
    config = json.loads((tok_dir / CONFIG_FILE).read_text())
    config["vocab_size"] = 299
    (tok_dir / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tokenizer_config.json: says vocab_size 299, but vocab.json .* makes 300"):
        Tokenizer.load(tok_dir)


# ---------------------------------------------------------------------------------------------------- before torch


@pytest.mark.parametrize("case", ["bad ids", "earlier run", "tokenizer mismatch"])
def test_train_checks_its_inputs_before_importing_torch(tmp_path, tok_dir, token_files, case):
    """With torch made unimportable, each bad input is still named: the checks ran before the import."""
    config = write_config(tmp_path)
    if case == "bad ids":
        np.save(token_files[1], np.array([1, 2, 3000] * 20, dtype=np.uint16))
        expected = "token id 3000 at position 2 is outside the model's vocabulary"
    elif case == "earlier run":
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "metrics.jsonl").write_text("")
        expected = "holds an earlier run"
    else:
        config = write_config(tmp_path, vocab_size=512)
        expected = "model.vocab_size = 512"
    code = NO_TORCH + f"from bpe_lm.cli import main; sys.exit(main(['train', '--config', {str(config)!r}]))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_generate_refuses_a_mismatched_tokenizer_before_importing_torch(tmp_path, tok_dir, token_files):
    assert main(["train", "--config", str(write_config(tmp_path)), "--quiet"]) == 0
    small = train_tokenizer(tmp_path, "small", seed=5, vocab=280)
    argv = ["generate", "--run", str(tmp_path / "run"), "--tokenizer", str(small)]
    code = NO_TORCH + f"from bpe_lm.cli import main; sys.exit(main({argv!r}))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1 and "is not the tokenizer" in proc.stderr and "Traceback" not in proc.stderr, (
        proc.stderr
    )
