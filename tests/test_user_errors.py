"""Bad inputs a new user gives, one test per case of docs/errors.md: nothing of theirs is lost or silently
wrong, and each problem is one line naming the file or setting (exit status 1), before any heavy work."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")

import bpe_lm  # noqa: E402
from bpe_lm.checkpoint import read_checkpoint, save_checkpoint  # noqa: E402
from bpe_lm.cli import main  # noqa: E402
from bpe_lm.config import build_config  # noqa: E402
from bpe_lm.data import get_batch  # noqa: E402
from bpe_lm.metrics import read_metrics  # noqa: E402
from bpe_lm.model import ModelConfig, TransformerLM  # noqa: E402
from bpe_lm.progress import ProgressBars  # noqa: E402
from bpe_lm.tokenizer import Tokenizer  # noqa: E402
from bpe_lm.train import Trainer  # noqa: E402

from conftest import generated_corpus, one_line_error, write_token_files  # noqa: E402

EOT = "<|endoftext|>"


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(generated_corpus(300), encoding="utf-8")
    return path


@pytest.fixture
def tok_dir(tmp_path, corpus) -> Path:
    out = tmp_path / "tok"
    assert main(["train-tokenizer", str(corpus), "--vocab", "300", "-o", str(out), "--quiet"]) == 0
    return out


@pytest.fixture
def token_files(tmp_path):
    return write_token_files(tmp_path, 64)


def raw_config(tmp_path, train, valid, **training) -> dict:
    return {
        "model": dict(vocab_size=64, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=64),
        "optimizer": {"lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 2},
        "data": {"train": str(train), "valid": str(valid)},
        "training": {"batch_size": 8, "max_iters": 20, "eval_interval": 10, "eval_iters": 2, "log_interval": 5,
                     "checkpoint_interval": 10, "out_dir": str(tmp_path / "run"), "device": "cpu", **training},
    }  # fmt: skip


def write_config(tmp_path, train, valid, **training) -> Path:
    from bpe_lm.config import to_toml

    path = tmp_path / "run.toml"
    path.write_text(to_toml(raw_config(tmp_path, train, valid, **training)))
    return path


# ---------------------------------------------------------------------------------------------------- 1. runs


def test_train_never_replaces_an_earlier_run_unasked(tmp_path, token_files, capsys):
    config = write_config(tmp_path, *token_files)
    assert main(["train", "--config", str(config), "--quiet"]) == 0
    capsys.readouterr()
    run = tmp_path / "run"
    before = {name: (run / name).read_bytes() for name in ("checkpoint.pt", "metrics.jsonl")}
    assert main(["train", "--config", str(config), "--quiet", "--set", "training.max_iters=5"]) == 1
    one_line_error(capsys, str(run), "--resume", "--force")
    assert {name: (run / name).read_bytes() for name in before} == before
    assert main(["train", "--config", str(config), "--quiet", "--set", "training.max_iters=5", "--force"]) == 0
    assert read_checkpoint(run / "checkpoint.pt")["iteration"] == 5
    assert max(r["step"] for r in read_metrics(run)) == 5


def test_train_never_writes_a_config_toml_it_did_not_write(tmp_path, token_files, capsys):
    """The run's copy of its settings replaces only itself: not a file of the user's by that name, not the
    target of a link placed there (a file outside the run), and never the config file the run came from."""
    config = write_config(tmp_path, *token_files, max_iters=2)
    run = tmp_path / "run"
    run.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (run / "config.toml").symlink_to(outside)
    assert main(["train", "--config", str(config), "--quiet"]) == 1
    one_line_error(capsys, "config.toml", "a link", "--force")
    assert outside.read_text() == "precious"
    assert main(["train", "--config", str(config), "--quiet", "--force"]) == 0
    assert outside.read_text() == "precious" and not (run / "config.toml").is_symlink()
    assert (run / "config.toml").read_text().startswith("# Written by `bpe-lm train`")
    # Its own copy it replaces on --force or --resume without a word.
    assert main(["train", "--config", str(config), "--quiet", "--resume", "--set", "training.max_iters=3"]) == 0
    capsys.readouterr()
    (run / "config.toml").write_text("# my notes\n[model]\n")
    (run / "checkpoint.pt").unlink()
    (run / "metrics.jsonl").unlink()
    assert main(["train", "--config", str(config), "--quiet"]) == 1
    one_line_error(capsys, "config.toml", "a file of yours")
    assert (run / "config.toml").read_text() == "# my notes\n[model]\n"
    # The config the run is started from, inside out_dir under that name: refused even with --force.
    own = run / "config.toml"
    own.write_text(config.read_text())
    assert main(["train", "--config", str(own), "--quiet", "--force"]) == 1
    one_line_error(capsys, "is the config file this run was started from")
    assert own.read_text() == config.read_text()


# ---------------------------------------------------------------------------------------------------- 2. tokenizer dirs


def test_train_tokenizer_force_replaces_only_its_own_files(tmp_path, corpus, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "important.txt").write_text("keep me")
    args = ["train-tokenizer", str(corpus), "--vocab", "300", "-o", str(out), "--quiet"]
    assert main(args) == 1
    one_line_error(capsys, str(out), "--force")
    assert main([*args, "--force"]) == 0
    assert (out / "important.txt").read_text() == "keep me"
    assert Tokenizer.load(out).vocab_size == 300
    # `-o .` from inside the directory works and leaves no temporary behind.
    cwd = os.getcwd()
    try:
        os.chdir(out)
        assert main(["train-tokenizer", str(corpus), "--vocab", "280", "-o", ".", "--quiet", "--force"]) == 0
    finally:
        os.chdir(cwd)
    assert Tokenizer.load(out).vocab_size == 280 and (out / "important.txt").is_file()
    assert sorted(p.name for p in out.iterdir()) == [
        "important.txt",
        "merges.txt",
        "tokenizer_config.json",
        "vocab.json",
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_tokenizer_without_its_config_is_an_error(tok_dir, capsys):
    (tok_dir / "tokenizer_config.json").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"tokenizer_config.json: not found; it lists the special tokens .*\"special_tokens\": \[\]",
    ):
        Tokenizer.load(tok_dir)
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({"special_tokens": []}))
    assert Tokenizer.load(tok_dir).special_tokens == []  # no special tokens, on purpose
    for bad in ("<|endoftext|>", [1, 2], [""], {"a": 1}):
        (tok_dir / "tokenizer_config.json").write_text(json.dumps({"special_tokens": bad}))
        assert (
            main(["encode", str(tok_dir / "vocab.json"), "-o", str(tok_dir / "x.npy"), "--tokenizer", str(tok_dir)])
            == 1
        )
        one_line_error(capsys, "tokenizer_config.json", "special_tokens must be a list of non-empty strings")


# ---------------------------------------------------------------------------------------------------- 4. token ids


@pytest.mark.parametrize("values", [[-1], [-7] * 5])
def test_out_of_range_ids_anywhere_in_the_file_are_refused_before_training(tmp_path, token_files, values, capsys):
    data = np.load(token_files[0]).astype(np.int64)
    data[len(data) // 2 : len(data) // 2 + len(values)] = values  # far from the ends a sample would see
    np.save(tmp_path / "bad.npy", data)
    config = write_config(tmp_path, tmp_path / "bad.npy", token_files[1])
    assert main(["train", "--config", str(config), "--quiet"]) == 1
    one_line_error(capsys, "bad.npy", f"token id {values[0]} at position {len(data) // 2:,}", "model.vocab_size = 64")
    assert not (tmp_path / "run").exists()
    big = np.load(token_files[0]).copy()
    big[12345] = 64
    np.save(tmp_path / "big.npy", big)
    with pytest.raises(ValueError, match="token id 64 at position 12,345"):
        Trainer(build_config(raw_config(tmp_path, tmp_path / "big.npy", token_files[1])), progress=False).run()


def test_eval_checks_the_whole_file(tmp_path, token_files, capsys):
    model = TransformerLM(ModelConfig(vocab_size=64, context_length=16, d_model=32, num_layers=1, num_heads=4))
    save_checkpoint(model, None, 0, tmp_path / "m.pt")
    data = np.load(token_files[1]).astype(np.int32)
    data[-3] = -1
    np.save(tmp_path / "v.npy", data)
    assert (
        main(["eval", "--checkpoint", str(tmp_path / "m.pt"), "--data", str(tmp_path / "v.npy"), "--device", "cpu"])
        == 1
    )
    one_line_error(capsys, "v.npy", "token id -1")


# ---------------------------------------------------------------------------------------------------- 5, 6. generate, eval


def test_generate_refuses_a_tokenizer_of_another_size(tmp_path, tok_dir, capsys):
    tok = Tokenizer.load(tok_dir)
    for vocab in (tok.vocab_size + 10, tok.vocab_size - 10):
        model = TransformerLM(ModelConfig(vocab_size=vocab, context_length=16, d_model=16, num_layers=1, num_heads=2))
        save_checkpoint(model, None, 0, tmp_path / "m.pt")
        assert (
            main(["generate", "--checkpoint", str(tmp_path / "m.pt"), "--tokenizer", str(tok_dir), "--device", "cpu"])
            == 1
        )
        one_line_error(
            capsys, str(tok_dir), f"{tok.vocab_size:,} tokens", f"{vocab:,}", "not the tokenizer it was trained with"
        )


def test_eval_raw_text_must_be_the_text_of_the_tokens(tmp_path, tok_dir, corpus, capsys):
    tok = Tokenizer.load(tok_dir)
    tok.encode_file(corpus, tmp_path / "valid.npy")
    torch.manual_seed(0)
    model = TransformerLM(
        ModelConfig(vocab_size=tok.vocab_size, context_length=32, d_model=32, num_layers=1, num_heads=4)
    )
    save_checkpoint(model, None, 0, tmp_path / "m.pt")
    other = tmp_path / "other.txt"
    other.write_text(generated_corpus(100, seed=7), encoding="utf-8")
    base = [
        "eval",
        "--checkpoint",
        str(tmp_path / "m.pt"),
        "--data",
        str(tmp_path / "valid.npy"),
        "--device",
        "cpu",
        "--json",
    ]
    assert main([*base, "--raw-text", str(other), "--tokenizer", str(tok_dir)]) == 1
    one_line_error(capsys, "--raw-text", "other.txt", "encodes to")
    assert main([*base, "--raw-text", str(corpus)]) == 1
    one_line_error(capsys, "the run has no copy of its tokenizer", "give --tokenizer DIR")
    # The right text, gzip-compressed: bits per byte from the decompressed size, computed here independently.
    gz = tmp_path / "corpus.txt.gz"
    gz.write_bytes(gzip.compress(corpus.read_bytes()))
    assert main([*base, "--raw-text", str(gz), "--tokenizer", str(tok_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    tokens = np.load(tmp_path / "valid.npy")
    expected = result["loss"] * len(tokens) / len(corpus.read_bytes()) / np.log(2)
    assert result["bits_per_byte"] == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------------------------------------------- 7. metrics on resume


def test_resume_drops_metrics_rows_past_the_checkpoint(tmp_path, token_files):
    cfg = build_config(raw_config(tmp_path, *token_files, log_interval=1))
    saved = {}

    class KeepTen(Trainer):
        def _save(self, *args):
            super()._save(*args)
            if self.iteration == 10:
                saved["ten"] = (self.run_dir / "checkpoint.pt").read_bytes()

    KeepTen(cfg, progress=False).run()
    # As if killed with -9 after step 20 was logged but before its checkpoint: the file holds step 10's.
    (tmp_path / "run" / "checkpoint.pt").write_bytes(saved["ten"])
    Trainer(cfg, resume=True, progress=False).run()
    steps = [r["step"] for r in read_metrics(tmp_path / "run") if "train_loss" in r]
    assert steps == list(range(1, 21))


def test_a_cut_last_metrics_line_neither_blocks_resume_nor_plot(tmp_path, token_files, capsys):
    config = write_config(tmp_path, *token_files, max_iters=10, log_interval=1)
    assert main(["train", "--config", str(config), "--quiet"]) == 0
    metrics = tmp_path / "run" / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text + text.splitlines()[-1][:17])  # a kill or a full disk in the middle of a row
    with pytest.warns(UserWarning, match="line .* is cut short"):
        assert len(read_metrics(tmp_path / "run")) == len(text.splitlines())
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "run"), "-o", str(tmp_path / "c.png")]) == 0
    assert "cut short" in capsys.readouterr().err
    assert main(["train", "--config", str(config), "--quiet", "--resume", "--set", "training.max_iters=12"]) == 0
    rows = read_metrics(tmp_path / "run")  # whole again: no warning
    assert [r["step"] for r in rows if "train_loss" in r] == list(range(1, 13))
    # A damaged line that is not the last is an error naming the file and the line.
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl: line 2: not a row of metrics"):
        read_metrics(tmp_path / "run")


# ---------------------------------------------------------------------------------------------------- 8. temporaries


def test_stale_temporaries_of_a_killed_encode_are_removed(tmp_path, tok_dir, corpus, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".big.npy.{dead.pid}.abc123.tmp"
    stale.write_bytes(b"\0" * 1000)
    live = tmp_path / f".big.npy.{os.getpid()}.def456.tmp"  # a writer still running (this process): kept
    live.write_bytes(b"\0" * 10)
    assert main(["encode", str(corpus), "-o", str(tmp_path / "big.npy"), "--tokenizer", str(tok_dir), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert not stale.exists() and live.exists()
    assert f"bpe-lm: warning: removed {stale}" in err and "interrupted run" in err
    assert len(np.load(tmp_path / "big.npy")) > 0


# ---------------------------------------------------------------------------------------------------- 9. batches


def test_batches_from_temporary_memmap_slices_are_right(tmp_path):
    data = np.arange(5000, dtype=np.uint16)
    np.save(tmp_path / "d.npy", data)
    wrong = 0
    for k in range(50):
        window = np.load(tmp_path / "d.npy", mmap_mode="r")[k * 7 :]  # a fresh temporary slice each time
        x, y = get_batch(window, 4, 16, "cpu", torch.Generator().manual_seed(k))
        ref_x, ref_y = get_batch(np.asarray(window), 4, 16, "cpu", torch.Generator().manual_seed(k))
        wrong += int(not (torch.equal(x, ref_x) and torch.equal(y, ref_y)))
        del window
    assert wrong == 0


# ---------------------------------------------------------------------------------------------------- 10. encode_iterable


class CountingCore:
    """Wraps the core encoder to count the characters `encode_iterable` scans for safe cuts."""

    def __init__(self, core) -> None:
        self.core, self.scanned, self.longest = core, 0, 0

    def safe_prefix_bytes(self, text: str) -> int:
        self.scanned += len(text)
        self.longest = max(self.longest, len(text))
        return self.core.safe_prefix_bytes(text)

    def __getattr__(self, name):
        return getattr(self.core, name)


def test_encode_iterable_is_linear_and_bounded_without_white_space(tok_dir):
    tok = Tokenizer.load(tok_dir)
    text = "abcdefghij" * 50_000  # 500K characters, no safe cut anywhere
    pieces = [text[i : i + 1000] for i in range(0, len(text), 1000)]
    tok._core = counting = CountingCore(tok._core)
    assert list(tok.encode_iterable(pieces, flush_chars=4096)) == tok.encode(text)
    assert counting.scanned <= 4 * len(text)  # the old code re-scanned everything: ~60M characters here
    counting.scanned = counting.longest = 0
    with pytest.warns(UserWarning, match="no safe cut in"):
        ids = list(tok.encode_iterable(pieces, flush_chars=4096, max_chars=100_000))
    assert counting.longest <= 100_000 + 1000
    assert tok.decode(ids) == text  # cut, but no text lost


def test_encode_iterable_over_bytes_says_open_in_text_mode(tok_dir):
    tok = Tokenizer.load(tok_dir)
    with pytest.raises(TypeError, match="open the file in text mode"):
        list(tok.encode_iterable(io.BytesIO(b"hello\nworld\n")))


# ---------------------------------------------------------------------------------------------------- messages


def test_bad_checkpoints_are_one_line_and_never_advise_unsafe_loading(tmp_path, token_files, capsys):
    model = TransformerLM(ModelConfig(vocab_size=64, context_length=16, d_model=32, num_layers=1, num_heads=4))
    save_checkpoint(model, None, 0, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.pt").write_text("this is a text file\n")

    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({"model": Evil()}, tmp_path / "evil.pt")
    for name in ("truncated.pt", "text.pt", "evil.pt"):
        assert (
            main(["eval", "--checkpoint", str(tmp_path / name), "--data", str(token_files[1]), "--device", "cpu"]) == 1
        )
        line = one_line_error(capsys, name, "bpe-lm checkpoint")
        assert "weights_only" not in line


def test_merges_errors_name_the_file_and_line(tok_dir):
    vocab = json.loads((tok_dir / "vocab.json").read_text(encoding="utf-8"))
    merges = (tok_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    left, right = merges[4].split(" ")
    del vocab[left + right]  # the 4th merge's result is missing from the vocabulary
    vocab = {t: i for i, (t, _) in enumerate(sorted(vocab.items(), key=lambda kv: kv[1]))}
    (tok_dir / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt: line 5: merge 3 "):
        Tokenizer.load(tok_dir)


def test_device_messages_name_the_option(tmp_path, tok_dir, capsys):
    tok = Tokenizer.load(tok_dir)
    save_checkpoint(
        TransformerLM(ModelConfig(vocab_size=tok.vocab_size, context_length=16, d_model=16, num_layers=1, num_heads=2)),
        None,
        0,
        tmp_path / "m.pt",
    )
    base = ["generate", "--checkpoint", str(tmp_path / "m.pt"), "--tokenizer", str(tok_dir)]
    assert main([*base, "--device", "tpu"]) == 1
    one_line_error(capsys, "--device 'tpu'", "expected auto, cpu, cuda")
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 1
        line = one_line_error(capsys, "--device 'cuda'", "CUDA is not available")
        assert "training.device" not in line


def test_outputs_are_checked_before_heavy_work(tmp_path, corpus, capsys, monkeypatch):
    import bpe_lm.tokenizer as tokenizer_module

    def never(*a, **k):
        raise AssertionError("trained before checking its output")

    monkeypatch.setattr(tokenizer_module, "train_bpe", never)
    (tmp_path / "file").write_text("x")
    assert main(["train-tokenizer", str(corpus), "--vocab", "300", "-o", str(tmp_path / "file" / "tok")]) == 1
    one_line_error(capsys, "is not a directory")
    assert (
        main(["train-tokenizer", str(corpus), "--vocab", "300", "-o", str(tmp_path / "t"), "--special-token", "e"]) == 1
    )
    one_line_error(capsys, "--special-token 'e'", "single byte")
    monkeypatch.undo()
    with pytest.raises(ValueError, match="single byte"):  # the library refuses it too, before reading any text
        bpe_lm.train_bpe(tmp_path / "no-such-file.txt", 300, ["e"])


def test_one_policy_for_outputs(tmp_path, tok_dir, corpus, capsys):
    out = tmp_path / "ids.npy"
    args = ["encode", str(corpus), "-o", str(out), "--tokenizer", str(tok_dir), "--quiet"]
    assert main(args) == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert main(args) == 1
    one_line_error(capsys, str(out), "already exists", "--force")
    assert out.read_bytes() == before
    assert main([*args, "--force"]) == 0
    # Missing parent directories are created, as train-tokenizer does.
    assert (
        main(
            [
                "encode",
                str(corpus),
                "-o",
                str(tmp_path / "new" / "dir" / "ids.npy"),
                "--tokenizer",
                str(tok_dir),
                "--quiet",
            ]
        )
        == 0
    )
    decoded = tmp_path / "back.txt"
    assert main(["decode", str(out), "--tokenizer", str(tok_dir), "-o", str(decoded)]) == 0
    capsys.readouterr()
    assert main(["decode", str(out), "--tokenizer", str(tok_dir), "-o", str(decoded)]) == 1
    one_line_error(capsys, "back.txt", "already exists")
    assert main(["export-tokenizer", str(tok_dir), "--format", "hf", "-o", str(decoded)]) == 1
    one_line_error(capsys, "back.txt", "already exists")


def test_train_tokenizer_errors_replace(tmp_path, corpus, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(corpus.read_bytes()[:500] + b"\xff\xfe broken \xc3" + corpus.read_bytes()[500:])
    assert main(["train-tokenizer", str(bad), "--vocab", "300", "-o", str(tmp_path / "a"), "--quiet"]) == 1
    one_line_error(capsys, "bad.txt", "UTF-8")
    assert (
        main(
            ["train-tokenizer", str(bad), "--vocab", "300", "-o", str(tmp_path / "b"), "--quiet", "--errors", "replace"]
        )
        == 0
    )


def test_failed_demo_leaves_nothing_and_missing_matplotlib_only_skips_the_plot(tmp_path, corpus, capsys, monkeypatch):
    import bpe_lm.pipeline as pipeline_module

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device", str(tmp_path / "demo"))

    out = tmp_path / "demo"
    with monkeypatch.context() as m:
        m.setattr(pipeline_module, "train_bpe", disk_full)
        assert main(["demo", "--data", str(corpus), "--minutes", "0.02", "-o", str(out)]) == 1
    assert not out.exists()
    assert "removed the unfinished run directory" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert main(["demo", "--data", str(corpus), "--minutes", "0.02", "--vocab", "300", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "matplotlib is not installed, so the demo skips its plot" in err
    assert not (out / "curves.png").exists() and "no learning-curve plot" in (out / "report.md").read_text()


def test_broken_pipe_is_quiet(tmp_path):
    # The reader is gone before the first write (as `| head` is once it has its lines): writing fails with EPIPE.
    proc = subprocess.Popen(
        [sys.executable, "-m", "bpe_lm", "accounting", "--preset", "gpt2-small", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert err == "" and proc.returncode == 141


def test_bugs_show_a_traceback_and_user_errors_one_line(monkeypatch, capsys, tmp_path):
    import bpe_lm.cli as cli

    def buggy(args):
        return {}["missing"]

    parser = cli.build_parser

    def patched():
        p = parser()
        for action in p._subparsers._group_actions[0].choices.values():
            if action.prog.endswith(" decode"):
                action.set_defaults(func=buggy)
        return p

    monkeypatch.setattr(cli, "build_parser", patched)
    assert main(["decode", "x.npy", "--tokenizer", "t"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and "this is a bug" in err
    monkeypatch.undo()
    assert main(["--debug", "decode", str(tmp_path / "missing.npy"), "--tokenizer", "t"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].endswith("missing.npy: no such file")
    monkeypatch.setenv("BPE_LM_DEBUG", "1")
    assert main(["decode", str(tmp_path / "missing.npy"), "--tokenizer", "t"]) == 1
    assert "Traceback" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- figures


def test_encode_summary_counts_decompressed_text(tmp_path, tok_dir, corpus, capsys):
    gz = tmp_path / "c.txt.gz"
    gz.write_bytes(gzip.compress(corpus.read_bytes() * 3))
    assert main(["encode", str(gz), "-o", str(tmp_path / "ids.npy"), "--tokenizer", str(tok_dir), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"encoded {len(corpus.read_bytes()) * 3 / 1e6:.1f} MB of text" in err


def test_a_cut_compressed_input_is_named_once_and_said_to_be_cut(tmp_path, tok_dir, corpus, capsys):
    # Checked before any work: the file named once, what is wrong in words (gzip as zstd says it), exit 1.
    gz = tmp_path / "c.txt.gz"
    gz.write_bytes(gzip.compress(corpus.read_bytes())[:-40])
    assert main(["encode", str(gz), "-o", str(tmp_path / "ids.npy"), "--tokenizer", str(tok_dir), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{gz}: not a valid gzip file (the gzip stream ends inside a member (is the file cut short?))" in err
    assert err.count(str(gz)) == 1 and not (tmp_path / "ids.npy").exists()


def test_progress_bars_use_decimal_units_and_say_encoding(capsys):
    with ProgressBars(True, {"read": "encoding"}) as bar:
        bar("read", 5_000_000, 10_000_000)
    err = capsys.readouterr().err
    # 10,000,000 bytes read as 10.0M (decimal, like the summaries), not 9.54M (binary).
    assert "encoding" in err and "/10.0M" in err and "9.54M" not in err and "pre-tokenizing" not in err


def test_time_budget_bar_shows_minutes_and_summary_averages_the_run(tmp_path, token_files, capsys):
    # Steps are refused under a time budget; one evaluation (at the end) keeps every flush at a log step.
    raw = raw_config(tmp_path, *token_files, max_iters=0, max_minutes=0.01, log_interval=2, evals=1)
    del raw["optimizer"]["warmup_iters"], raw["training"]["eval_interval"]
    cfg = build_config(raw)
    summary = Trainer(cfg, progress=True).run()
    err = capsys.readouterr().err
    assert " min [" in err and "s/s" not in err and "loss=None" not in err
    rows = [r for r in read_metrics(tmp_path / "run") if "train_loss" in r]
    intervals, previous = [], 0
    for r in rows:
        if r["tokens"] != previous and (r is rows[-1] or r["step"] % 2 == 0):
            intervals.append((r["tokens"] - previous) / r["tokens_per_s"])
            previous = r["tokens"]
    assert summary["tokens_per_s"] == pytest.approx(summary["tokens"] / sum(intervals), rel=1e-3)


@pytest.mark.parametrize("pattern", [r"[a-z]+", r"\w+", r"(a+)+$"])
def test_a_pattern_that_would_lose_text_is_refused_wherever_it_comes_from(tmp_path, tok_dir, corpus, capsys, pattern):
    """A pre-tokenizer whose matches leave text out would drop that text from the ids without a word: it is
    refused when loaded (from tokenizer_config.json, import-tokenizer --pattern, a count file's header or the
    API), naming where it came from."""
    tok = Tokenizer.load(tok_dir)
    with pytest.raises(ValueError, match="do not cover the text"):
        Tokenizer(tok.vocab, tok.merges, tok.special_tokens, pattern=pattern)
    config = tok_dir / "tokenizer_config.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, "pattern": pattern}))
    assert main(["encode", str(corpus), "-o", str(tmp_path / "ids.npy"), "--tokenizer", str(tok_dir)]) == 1
    one_line_error(capsys, "tokenizer_config.json", "do not cover the text")
    assert not (tmp_path / "ids.npy").exists()
    tok.save(tmp_path / "good")
    assert (
        main(["export-tokenizer", str(tmp_path / "good"), "--format", "tiktoken", "-o", str(tmp_path / "t.tiktoken")])
        == 0
    )
    capsys.readouterr()
    args = ["import-tokenizer", str(tmp_path / "t.tiktoken"), "--format", "tiktoken", "--special-token", f"{EOT}=0"]
    assert main([*args, "--pattern", pattern, "-o", str(tmp_path / "imported")]) == 1
    one_line_error(capsys, "do not cover the text")
    with pytest.raises(ValueError, match="do not cover the text"):
        bpe_lm.train_bpe(corpus, 300, [EOT], pattern=pattern)
    # A count file whose header names such a pattern (written by hand: count-pretokens writes GPT-2's).
    from bpe_lm import _core

    counter = _core.PretokenCounter([EOT], None)
    counter.add_text([str(corpus)])
    counter.write(str(tmp_path / "c.bin"))
    data = (tmp_path / "c.bin").read_bytes()
    length = int.from_bytes(data[8:12], "little")
    header = json.loads(data[12 : 12 + length])
    new_header = json.dumps({**header, "pattern": pattern}).encode()
    (tmp_path / "c.bin").write_bytes(
        data[:8] + len(new_header).to_bytes(4, "little") + new_header + data[12 + length :]
    )
    assert (
        main(
            [
                "train-tokenizer",
                "--from-counts",
                str(tmp_path / "c.bin"),
                "--vocab",
                "300",
                "-o",
                str(tmp_path / "fc"),
                "--quiet",
            ]
        )
        == 1
    )
    one_line_error(capsys, "c.bin", "do not cover the text")
    assert not (tmp_path / "fc").exists()


def test_of_two_writers_of_one_new_output_exactly_one_wins(tmp_path):
    from bpe_lm._io import OutputExistsError, atomic_output

    out = tmp_path / "ids.npy"
    with pytest.raises(OutputExistsError, match="created by another process while this one was writing it"):
        with atomic_output(out) as tmp:
            tmp.write_bytes(b"second")
            out.write_bytes(b"first")  # the other writer finishes first
    assert out.read_bytes() == b"first" and os.listdir(tmp_path) == ["ids.npy"]
    with atomic_output(out) as tmp:  # an output that existed at the start (the caller's --force) is replaced
        tmp.write_bytes(b"forced")
    assert out.read_bytes() == b"forced"


def test_a_write_error_names_the_output_not_its_temporary(tmp_path):
    # The core writes to a temporary beside the output, and its spill files are named after that
    # temporary: a disk that fills up is reported at the output the user named.
    import errno

    from bpe_lm._io import atomic_output

    out = tmp_path / "ids.npy"
    for suffix in ("", ".spill-0"):
        with pytest.raises(OSError) as caught:
            with atomic_output(out) as tmp:
                raise OSError(errno.ENOSPC, "No space left on device", f"{tmp}{suffix}")
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(out)
    with pytest.raises(FileNotFoundError) as missing:  # another file's error keeps its name
        with atomic_output(out):
            open(tmp_path / "absent.txt")
    assert missing.value.filename == str(tmp_path / "absent.txt")
    assert os.listdir(tmp_path) == []


def test_decode_onto_its_own_input_is_refused_even_with_force(tmp_path, tok_dir, corpus, capsys):
    ids = tmp_path / "ids.npy"
    Tokenizer.load(tok_dir).encode_file(corpus, ids)
    before = ids.read_bytes()
    assert main(["decode", str(ids), "--tokenizer", str(tok_dir), "-o", str(ids), "--force"]) == 1
    one_line_error(capsys, "is the input of this command")
    assert ids.read_bytes() == before


def test_a_second_trainer_on_one_run_directory_is_refused(tmp_path, token_files, capsys):
    import fcntl

    config = write_config(tmp_path, *token_files, max_iters=4)
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "train.lock", "w") as held:  # as a trainer running in another process holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        for extra in ([], ["--resume"], ["--force"]):
            assert main(["train", "--config", str(config), "--quiet", *extra]) == 1
            one_line_error(capsys, str(run), "another `bpe-lm train` is using this run directory (pid 4242)")
        assert sorted(os.listdir(run)) == ["train.lock"]
    assert main(["train", "--config", str(config), "--quiet"]) == 0  # released: the run goes ahead


def _wrong_values(hint) -> list:
    """Values of the wrong type for a setting of type `hint` (as TOML or --set can give them)."""
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return ["surely-not-a-choice", 5]
    options = [a for a in args if a is not type(None)] if origin in (typing.Union, types.UnionType) else [hint]
    if len(options) > 1:  # wrong for every option: str | list[str]
        return [5, 1.5, {"a": 1}, [1], ["a", 2]]
    hint = options[0]
    if typing.get_origin(hint) is list:
        return ["x", 0.9, [True], [["a"]]] if typing.get_args(hint)[0] in (int, float) else [5, "x", [1], [True]]
    return {
        bool: ["False", "yes", "false", 1, 0.0],
        int: ["ten", 1.5, [1], True, {"a": 1}],
        float: ["abc", True, [0.5], float("nan"), float("inf")],
        str: [5, 1.5, True, ["a"], {"a": 1}],
    }.get(hint, [0.9, "x", [1]])


def test_every_setting_refuses_wrong_types_naming_the_setting(tmp_path, token_files):
    import dataclasses
    import random
    import typing

    from bpe_lm.config import SECTIONS, ConfigError, ModelConfig

    rng = random.Random(0)
    checked = 0
    for section, cls in {"model": ModelConfig, **SECTIONS}.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            for value in rng.sample(_wrong_values(hints[f.name]), 2):
                raw = raw_config(tmp_path, *token_files)
                raw.setdefault(section, {})[f.name] = value
                with pytest.raises(ConfigError, match=rf"{section}\.{f.name}\b"):
                    build_config(raw)
                checked += 1
    assert checked >= 2 * 40


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "model.tie_embeddings=False",
            "model.tie_embeddings must be true or false, not 'False' (TOML spells it false)",
        ),
        ('model.qk_norm="false"', "TOML spells it false, without quotes"),
        ("optimizer.grad_clip=nan", "optimizer.grad_clip must be a finite number"),
        ("optimizer.betas=0.9", "optimizer.betas must be a list of 2 numbers"),
        ("model=5", "the key must be section.key"),
    ],
)
def test_set_values_are_typed_like_the_file(tmp_path, token_files, capsys, override, message):
    config = write_config(tmp_path, *token_files, max_iters=2)
    assert main(["train", "--config", str(config), "--quiet", "--set", override]) == 1
    one_line_error(capsys, message)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_section_that_is_not_a_table_is_named(tmp_path, token_files, capsys):
    config = tmp_path / "bad.toml"
    config.write_text(
        write_config(tmp_path, *token_files).read_text().replace("[logging]", "[logging_]") + "\nlogging = 5\n"
    )
    text = config.read_text()
    config.write_text("model = 5\n" + text[text.index("[optimizer]") :])
    assert main(["train", "--config", str(config), "--quiet"]) == 1
    one_line_error(capsys, "[model] must be a table of settings, not 5")


def test_force_keeps_the_earlier_run_until_the_new_one_has_a_checkpoint(tmp_path, token_files, capsys):
    cfg = build_config(raw_config(tmp_path, *token_files, max_iters=4, checkpoint_interval=2))
    run = tmp_path / "run"
    Trainer(cfg, progress=False).run()
    before = {name: (run / name).read_bytes() for name in ("checkpoint.pt", "metrics.jsonl")}

    class DiesAtStepOne(Trainer):
        def _train_step(self, params):
            raise RuntimeError("the machine went away")

    with pytest.raises(RuntimeError, match="went away"):
        DiesAtStepOne(cfg, force=True, progress=False).run()
    assert "are back in place" in capsys.readouterr().err
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not list(run.glob("*.replaced"))
    # A new run that saves: the earlier files are replaced, nothing is left aside.
    Trainer(build_config(raw_config(tmp_path, *token_files, max_iters=2)), force=True, progress=False).run()
    assert read_checkpoint(run / "checkpoint.pt")["iteration"] == 2
    assert not list(run.glob("*.replaced"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["generate", "--run", "r", "--tokenizer", "t", "--prompt", "x", "--temperature", "nan"],
            "--temperature: expected a finite number",
        ),
        (
            ["generate", "--run", "r", "--tokenizer", "t", "--prompt", "x", "--top-p", "0"],
            "--top-p: expected a number above 0",
        ),
        (["accounting", "--preset", "gpt2-small", "--peak", "0"], "--peak '0'"),
        (["accounting", "--preset", "gpt2-small", "--peak", "-1"], "--peak '-1'"),
        (["accounting", "--preset", "gpt2-small", "--mfu", "inf"], "--mfu: expected a finite number"),
        (["demo", "--minutes", "-5"], "--minutes: expected a number above 0"),
        (["encode", "x", "-o", "y", "--tokenizer", "t", "--threads", "0"], "--threads: expected a positive integer"),
    ],
)
def test_nan_zero_and_negative_numbers_are_refused(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_a_thread_count_beyond_four_per_core_is_capped_with_a_note(tmp_path, tok_dir, corpus, capsys):
    out = tmp_path / "ids.npy"
    assert (
        main(["encode", str(corpus), "-o", str(out), "--tokenizer", str(tok_dir), "--threads", "100000", "--quiet"])
        == 0
    )
    assert "is more than 4 per core; using" in capsys.readouterr().err
    assert np.array_equal(np.load(out), Tokenizer.load(tok_dir).encode_to_numpy(corpus.read_text(encoding="utf-8")))


def test_relative_out_dir_is_relative_to_the_config_file(tmp_path, token_files, capsys, monkeypatch):
    raw = raw_config(tmp_path, *token_files, max_iters=2)
    raw["training"]["out_dir"] = "runs/rel"
    (tmp_path / "conf").mkdir()
    from bpe_lm.config import to_toml

    (tmp_path / "conf" / "run.toml").write_text(to_toml(raw))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--config", str(tmp_path / "conf" / "run.toml"), "--quiet"]) == 0
    assert (tmp_path / "conf" / "runs" / "rel" / "checkpoint.pt").is_file() and not any(elsewhere.iterdir())
    capsys.readouterr()
    assert (
        main(["train", "--config", str(tmp_path / "conf" / "run.toml"), "--quiet", "--set", 'training.out_dir=""']) == 1
    )
    one_line_error(capsys, "training.out_dir must name a directory")


def test_cpu_out_of_memory_is_named_like_cuda_out_of_memory(tmp_path, token_files):
    from bpe_lm.train import TrainingError

    cfg = build_config(raw_config(tmp_path, *token_files, max_iters=2))
    cpu_oom = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory: you tried to allocate 4000000000000 bytes"
    )

    class BuildFails(Trainer):
        def _build(self):
            raise cpu_oom

    class StepFails(Trainer):
        def _train_step(self, params):
            raise cpu_oom

    with pytest.raises(
        TrainingError,
        match=r"out of CPU memory building the model and optimizer \(\d+M parameters\): lower model.vocab_size",
    ):
        BuildFails(cfg, progress=False).run()
    with pytest.raises(
        TrainingError, match="out of CPU memory with 8 sequences of 16 tokens per micro-step: lower training.batch_size"
    ):
        StepFails(cfg, force=True, progress=False).run()

    class OtherBug(Trainer):
        def _train_step(self, params):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):  # not every RuntimeError is memory
        OtherBug(cfg, force=True, progress=False).run()


def test_plot_of_metrics_with_strings_where_numbers_belong_names_the_line(tmp_path, token_files, capsys):
    config = write_config(tmp_path, *token_files, max_iters=4, log_interval=1)
    assert main(["train", "--config", str(config), "--quiet"]) == 0
    metrics = tmp_path / "run" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    row = json.loads(lines[1])
    row["train_loss"] = "low"
    metrics.write_text("\n".join([lines[0], json.dumps(row), *lines[2:]]) + "\n")
    capsys.readouterr()
    assert main(["plot", str(tmp_path / "run"), "-o", str(tmp_path / "c.png")]) == 1
    one_line_error(capsys, "metrics.jsonl: line 2: not a row of metrics (train_loss is 'low', not a number)")


@pytest.mark.parametrize("damage", ["shape", "missing", "nan", "huge_config"])
def test_damaged_checkpoints_are_refused_before_the_model_is_built(tmp_path, damage, capsys):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, context_length=16, d_model=32, num_layers=2, num_heads=4)
    save_checkpoint(TransformerLM(config), None, 0, tmp_path / "m.pt")
    state = read_checkpoint(tmp_path / "m.pt")
    if damage == "shape":
        state["model"]["token_embeddings.weight"] = torch.zeros(65, 32)
        message = "weight token_embeddings.weight is (65, 32), but its config makes it (64, 32)"
    elif damage == "missing":
        del state["model"]["layers.1.ffn.w2.weight"]
        message = "it lacks layers.1.ffn.w2.weight"
    elif damage == "nan":
        state["model"]["layers.0.attn.q_proj.weight"][0, 0] = float("nan")
        message = "weight layers.0.attn.q_proj.weight holds NaN or infinite values"
    else:  # a config that would take terabytes, with the small weights still in the file
        state["config"] = {**state["config"], "vocab_size": 10**12}
        message = "weight token_embeddings.weight is (64, 32), but its config makes it (1000000000000, 32)"
    torch.save(state, tmp_path / "m.pt")
    (tmp_path / "ids.npy").write_bytes(b"")
    np.save(tmp_path / "ids.npy", np.zeros(100, dtype=np.uint16))
    assert (
        main(["eval", "--checkpoint", str(tmp_path / "m.pt"), "--data", str(tmp_path / "ids.npy"), "--device", "cpu"])
        == 1
    )
    one_line_error(capsys, "m.pt", message)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["TERM", "HUP"])
def test_sigterm_during_encode_leaves_no_temporary(tmp_path, tok_dir, sig, code):
    import time

    big = tmp_path / "big.txt"
    big.write_text(generated_corpus(40_000, seed=3) * 3, encoding="utf-8")  # some 60 MB: seconds of work
    out = tmp_path / "out" / "ids.npy"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bpe_lm", "encode", str(big), "-o", str(out), "--tokenizer", str(tok_dir), "--threads", "1", "--quiet"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out.parent.is_dir() and any(out.parent.iterdir())):
        time.sleep(0.01)  # until its temporary output exists
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"stopped by {signal.Signals(sig).name}" in err
    assert list(out.parent.iterdir()) == []


def test_text_without_white_space_costs_bounded_memory(tmp_path, tok_dir):
    """Megabytes of one letter, of NUL bytes, and a gzip bomb (100 MB of one letter from 100 KB) encode with
    the memory of ordinary text: pre-tokens are capped (`pretokenize::MAX_PIECE_BYTES`) and the reader cuts
    such text at the cap's slice boundaries. Training on it writes small files and a short summary."""
    import gzip as gz
    import re

    letters = tmp_path / "a.txt"
    letters.write_bytes(b"a" * (60 << 20))
    nul = tmp_path / "nul.txt"
    nul.write_bytes(b"\0" * (30 << 20))
    bomb = tmp_path / "bomb.txt.gz"
    bomb.write_bytes(gz.compress(b"a" * (100 << 20), compresslevel=9))
    assert bomb.stat().st_size < 200_000
    for path in (letters, nul, bomb):
        out = tmp_path / f"{path.name}.npy"
        r = subprocess.run(
            [sys.executable, "-m", "bpe_lm", "encode", str(path), "-o", str(out), "--tokenizer", str(tok_dir), "--quiet"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        peak = float(re.search(r"peak memory (\d+) MB", r.stderr).group(1))
        assert peak < 300, r.stderr
        assert np.load(out, mmap_mode="r").shape[0] > 0
    r = subprocess.run(
        [sys.executable, "-m", "bpe_lm", "train-tokenizer", str(letters), "--vocab", "400", "-o", str(tmp_path / "t")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert max(len(line) for line in r.stderr.splitlines()) < 300, "a summary line holds a huge token"
    assert "bytes)" in r.stderr  # the longest token is shown cut, with its length
    assert sum(f.stat().st_size for f in (tmp_path / "t").iterdir()) < 20 << 20


def test_every_numeric_setting_has_a_range_and_refuses_values_outside_it(tmp_path, token_files):
    """Ranges live in the dataclass fields' metadata (`config.ranged`): a new numeric setting without one
    fails here, and every declared range is enforced, in the file and through --set alike."""
    import dataclasses
    import typing

    from bpe_lm.config import SECTIONS, ConfigError, ModelConfig

    checked = 0
    for section, cls in {"model": ModelConfig, **SECTIONS}.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            kinds = {a for a in typing.get_args(hint) if a is not type(None)} | {hint}
            numeric = bool(kinds & {int, float}) or typing.get_origin(hint) is tuple
            if not numeric or f.type == "bool":
                continue
            meta = f.metadata
            assert any(meta.get(k) is not None for k in ("at_least", "above", "below")), (
                f"{section}.{f.name} has no range"
            )
            outside = []
            if meta.get("at_least") is not None:
                outside.append(meta["at_least"] - 1)
            if meta.get("above") is not None:
                outside.append(meta["above"])
            if meta.get("below") is not None:
                outside.append(meta["below"])
            for value in outside:
                value = [value, value] if typing.get_origin(hint) is tuple else value
                raw = raw_config(tmp_path, *token_files)
                raw.setdefault(section, {})[f.name] = value
                with pytest.raises(ConfigError, match=rf"{section}\.{f.name} must be (at least|above|below)"):
                    build_config(raw)
                checked += 1
    assert checked >= 25
