"""`bpe-lm train-tokenizer`, `encode` and `decode`: results and every error case."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import bpe_lm
from bpe_lm.cli import main

EOT = "<|endoftext|>"


def run(capsys, *argv: str) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.fixture
def tokenizer_dir(tmp_path, corpus_file, capsys):
    out = tmp_path / "tok"
    code, err = run(capsys, "train-tokenizer", corpus_file, "--vocab", "400", "-o", out, "--quiet")
    assert code == 0, err
    return out


def test_train_tokenizer_writes_directory(tmp_path, corpus_file, capsys):
    out = tmp_path / "tok"
    code, err = run(capsys, "train-tokenizer", corpus_file, "--vocab", "400", "-o", out, "--threads", "2", "--quiet")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["merges.txt", "tokenizer_config.json", "vocab.json"]
    assert "peak memory" in err and "longest token" in err
    tok = bpe_lm.Tokenizer.load(out)
    assert (tok.vocab, tok.merges) == bpe_lm.train_bpe(corpus_file, 400)
    assert tok.special_tokens == [EOT]


def test_custom_special_tokens(tmp_path, corpus_file, capsys):
    out = tmp_path / "tok"
    code, err = run(
        capsys,
        "train-tokenizer",
        corpus_file,
        "--vocab",
        "400",
        "-o",
        out,
        "--special-token",
        "<s>",
        "--special-token",
        "</s>",
        "--quiet",
    )
    assert code == 0, err
    assert bpe_lm.Tokenizer.load(out).special_tokens == ["<s>", "</s>"]


def expect_error(capsys, tmp_path, argv, message):
    code, err = run(capsys, *argv)
    assert code == 1
    assert message in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dirs left


def test_missing_input(tmp_path, capsys):
    expect_error(
        capsys,
        tmp_path,
        ["train-tokenizer", tmp_path / "missing.txt", "-o", tmp_path / "out"],
        "missing.txt: no such file",
    )


def test_directory_input(tmp_path, capsys):
    expect_error(capsys, tmp_path, ["train-tokenizer", tmp_path, "-o", tmp_path / "out"], "is a directory")


def _drop_root_file_access() -> None:
    """In a child process run by root: give up the capabilities that let root read any file (dac_override,
    dac_read_search), so file permissions apply to it as to anyone."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unreadable_input(tmp_path, corpus_file, capsys):
    corpus_file.chmod(0)
    argv = ["train-tokenizer", corpus_file, "-o", tmp_path / "out"]
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        expect_error(capsys, tmp_path, argv, "permission denied")
        return
    # Root reads any file: run the command in a child process without that power (Linux capabilities).
    proc = subprocess.run(
        [sys.executable, "-m", "bpe_lm", *map(str, argv)],
        capture_output=True,
        text=True,
        preexec_fn=_drop_root_file_access,
    )
    assert proc.returncode == 1 and "permission denied" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_vocab_too_small(tmp_path, corpus_file, capsys):
    expect_error(
        capsys,
        tmp_path,
        ["train-tokenizer", corpus_file, "--vocab", "256", "-o", tmp_path / "out"],
        "--vocab: vocabulary size 256 is smaller than 256 bytes + 1 special tokens = 257",
    )


def test_invalid_utf8_names_offset(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good line\n" * 5000 + b"caf\xe9\n")
    expect_error(
        capsys,
        tmp_path,
        ["train-tokenizer", bad, "-o", tmp_path / "out", "--quiet"],
        "bad.txt: invalid UTF-8 at byte offset 50003",
    )


def test_empty_input(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    expect_error(capsys, tmp_path, ["train-tokenizer", empty, "-o", tmp_path / "out"], "empty.txt: is empty")
    empty_gz = tmp_path / "empty.txt.gz"
    with gzip.open(empty_gz, "wb"):
        pass
    expect_error(
        capsys, tmp_path, ["train-tokenizer", empty_gz, "-o", tmp_path / "out"], "is empty (after decompression)"
    )


def test_existing_output_needs_force(tmp_path, corpus_file, capsys):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    code, err = run(capsys, "train-tokenizer", corpus_file, "--vocab", "300", "-o", out, "--quiet")
    assert code == 1 and "already exists and is not empty (use --force" in err
    assert (out / "keep.txt").exists()
    code, err = run(capsys, "train-tokenizer", corpus_file, "--vocab", "300", "-o", out, "--quiet", "--force")
    assert code == 0, err
    # --force replaces the tokenizer's own files only: a user's file beside them stays.
    assert (out / "keep.txt").read_text() == "old" and (out / "vocab.json").exists()


def test_console_script_help():
    proc = subprocess.run([sys.executable, "-m", "bpe_lm", "train-tokenizer", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "--vocab" in proc.stdout and "default: 10000" in proc.stdout


# ---------------------------------------------------------------------------------------------------- encode


def test_encode_decode_round_trip(tmp_path, tokenizer_dir, corpus_file, capsys):
    out = tmp_path / "ids.npy"
    code, err = run(capsys, "encode", corpus_file, "-o", out, "--tokenizer", tokenizer_dir, "--threads", "2", "--quiet")
    assert code == 0, err
    ids = np.load(out, mmap_mode="r")
    assert ids.dtype == np.uint16
    tok = bpe_lm.Tokenizer.load(tokenizer_dir)
    text = corpus_file.read_text(encoding="utf-8")
    assert ids.tolist() == tok.encode(text)
    back = tmp_path / "back.txt"
    code, err = run(capsys, "decode", out, "--tokenizer", tokenizer_dir, "-o", back)
    assert code == 0, err
    assert back.read_text(encoding="utf-8") == text
    # It says what it wrote, as every command that writes a file does.
    assert f"wrote {back}: {len(ids):,} ids -> {len(text.encode()):,} bytes of text" in err


def test_encode_gzip_and_uint32(tmp_path, tokenizer_dir, corpus_file, capsys):
    packed = tmp_path / "c.txt.gz"
    with gzip.open(packed, "wb") as f:
        f.write(corpus_file.read_bytes())
    out = tmp_path / "ids.npy"
    code, err = run(capsys, "encode", packed, "-o", out, "--tokenizer", tokenizer_dir, "--dtype", "uint32", "--quiet")
    assert code == 0, err
    ids = np.load(out)
    assert ids.dtype == np.uint32
    assert ids.tolist() == bpe_lm.Tokenizer.load(tokenizer_dir).encode(corpus_file.read_text(encoding="utf-8"))


def test_encode_invalid_utf8(tmp_path, tokenizer_dir, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n" * 100 + b"\xff\n")
    out = tmp_path / "ids.npy"
    code, err = run(capsys, "encode", bad, "-o", out, "--tokenizer", tokenizer_dir, "--quiet")
    assert code == 1 and "invalid UTF-8 at byte offset 500" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".ids")]
    code, err = run(capsys, "encode", bad, "-o", out, "--tokenizer", tokenizer_dir, "--errors", "replace", "--quiet")
    assert code == 0, err
    assert "\ufffd" in bpe_lm.Tokenizer.load(tokenizer_dir).decode(np.load(out))


def test_encode_missing_tokenizer(tmp_path, corpus_file, capsys):
    code, err = run(capsys, "encode", corpus_file, "-o", tmp_path / "x.npy", "--tokenizer", tmp_path / "nope")
    assert code == 1 and "nope: tokenizer directory not found" in err


def test_encode_malformed_merges(tmp_path, tokenizer_dir, corpus_file, capsys):
    merges = tokenizer_dir / "merges.txt"
    lines = merges.read_text(encoding="utf-8").splitlines()
    lines[5] = "onlyonetoken"
    merges.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, err = run(capsys, "encode", corpus_file, "-o", tmp_path / "x.npy", "--tokenizer", tokenizer_dir)
    assert code == 1 and "merges.txt: line 6: expected two tokens" in err


def test_encode_malformed_vocab(tmp_path, tokenizer_dir, corpus_file, capsys):
    (tokenizer_dir / "vocab.json").write_text('{"a": 0,\n "b": }', encoding="utf-8")
    code, err = run(capsys, "encode", corpus_file, "-o", tmp_path / "x.npy", "--tokenizer", tokenizer_dir)
    assert code == 1 and "vocab.json: not valid JSON (line 2" in err


def test_decode_unknown_id(tmp_path, tokenizer_dir, capsys):
    np.save(tmp_path / "ids.npy", np.array([1, 2, 60000], dtype=np.uint16))
    code, err = run(capsys, "decode", tmp_path / "ids.npy", "--tokenizer", tokenizer_dir)
    assert code == 1 and "token id 60000 at position 2 is outside the vocabulary of" in err


def test_decode_streams_in_bounded_memory(tmp_path, tokenizer_dir):
    """Text many times larger than the decoder's chunk: the peak RSS of `bpe-lm decode` stays near that of
    decoding a tiny file (a decoder that held the whole text would add its 80 MB), and the text is exact."""
    from bpe_lm.tokenizer import Tokenizer

    tok = Tokenizer.load(tokenizer_dir)
    longest = max(range(256, tok.vocab_size), key=lambda i: len(tok.id_to_token(i)))
    pattern = np.array([longest, 40, longest, 100], dtype=np.uint16)  # long tokens and two single bytes
    piece = tok.decode_bytes(pattern)
    repeats = -(-80_000_000 // len(piece))
    np.save(tmp_path / "big.npy", np.tile(pattern, repeats))
    np.save(tmp_path / "tiny.npy", pattern)

    def peak_mb(name: str) -> float:
        code = (
            "import resource, sys; from bpe_lm.cli import main; rc = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(rc)"
        )
        argv = [
            "decode",
            str(tmp_path / f"{name}.npy"),
            "--tokenizer",
            str(tokenizer_dir),
            "-o",
            str(tmp_path / f"{name}.txt"),
        ]
        proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
        return float(proc.stdout.split()[-1])

    tiny, big = peak_mb("tiny"), peak_mb("big")
    size = (tmp_path / "big.txt").stat().st_size
    assert size == repeats * len(piece) >= 80_000_000
    with open(tmp_path / "big.txt", "rb") as f:
        assert f.read(len(piece) * 3) == piece * 3
    assert big < tiny + 40, (tiny, big)


def test_encode_notes_a_pattern_that_runs_on_the_regex_engine(tmp_path, corpus_file, capsys):
    out = tmp_path / "tok"
    code, err = run(capsys, "train-tokenizer", corpus_file, "--vocab", "300", "-o", out, "--quiet")
    assert code == 0, err
    code, err = run(capsys, "encode", corpus_file, "--tokenizer", out, "-o", tmp_path / "a.npy", "--quiet")
    assert code == 0 and "regex engine" not in err
    config = json.loads((out / "tokenizer_config.json").read_text())
    config["pattern"] = r"\p{L}+|\p{N}+|\s+|[^\s\p{L}\p{N}]+"
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    code, err = run(capsys, "encode", corpus_file, "--tokenizer", out, "-o", tmp_path / "b.npy", "--quiet")
    assert code == 0 and "general regex engine" in err and "tok" in err


def test_the_summary_counts_in_words():
    """'1 input (1 document, 1 empty or null record skipped)', not '1 documents'."""
    from bpe_lm.cli.tokenizer_commands import _summary
    from bpe_lm.readers import Stats

    one = _summary(Stats(documents=1, skipped=1, text_bytes=2_000_000), 1)
    assert one == "2.0 MB of text from 1 input (1 document, 1 empty or null record skipped)"
    many = _summary(Stats(documents=4011, skipped=2, text_bytes=12_300_000), 3)
    assert many == "12.3 MB of text from 3 inputs (4,011 documents, 2 empty or null records skipped)"
    assert _summary(Stats(text_bytes=0), 2) == "0.0 MB of text from 2 inputs"
