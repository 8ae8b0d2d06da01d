"""Damaged inputs through the Python API: token files (.npy), count files, tokenizer files and arbitrary ids.
Each is read back or refused with an ordinary error that names the file (ValueError / OSError); never a
RuntimeError (a panic of the core, turned into "internal error" by the bindings) or a stray exception type
from a parser underneath."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpe_lm
from bpe_lm import Tokenizer
from bpe_lm.data import load_tokens
from bpe_lm.tokenizer import count_pretokens, train_from_count_files

from conftest import generated_corpus

EDITS = st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255), st.sampled_from(["flip", "cut", "insert"])), min_size=1, max_size=6)  # fmt: skip
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def damaged(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for at, byte, kind in edits:
        if kind == "flip" and at < len(out):
            out[at] ^= byte or 1
        elif kind == "cut":
            del out[min(at, len(out)) :]
        else:
            out.insert(min(at, len(out)), byte)
    return bytes(out)


@pytest.fixture(scope="module")
def npy_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("npy") / "ok.npy"
    np.save(path, np.arange(50, dtype=np.uint16))
    return path.read_bytes()


@SETTINGS
@given(edits=EDITS)
def test_damaged_token_file_is_read_or_refused_by_name(tmp_path, npy_bytes, edits):
    path = tmp_path / "tokens.npy"
    path.write_bytes(damaged(npy_bytes, edits))
    try:
        tokens = load_tokens(path)
    except (ValueError, OSError) as e:
        assert "tokens.npy" in str(e), e
        return
    assert tokens.ndim == 1 and tokens.dtype in (np.uint16, np.uint32)
    np.asarray(tokens[:])  # the ids it claims are there can be read


@pytest.fixture(scope="module")
def count_file_bytes(tmp_path_factory) -> bytes:
    d = tmp_path_factory.mktemp("counts")
    (d / "c.txt").write_text(generated_corpus(20), encoding="utf-8")
    count_pretokens([d / "c.txt"], d / "c.cnt")
    return (d / "c.cnt").read_bytes()


@SETTINGS
@given(edits=EDITS)
def test_damaged_count_file_is_read_or_refused_by_name(tmp_path, count_file_bytes, edits):
    path = tmp_path / "shard.cnt"
    path.write_bytes(damaged(count_file_bytes, edits))
    try:
        vocab, merges, *_ = train_from_count_files([path], 300)
    except ValueError as e:
        assert "shard.cnt" in str(e), e
        return
    assert len(vocab) <= 300 and len(merges) == len(vocab) - 257


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "c.txt").write_text(generated_corpus(100), encoding="utf-8")
        return Tokenizer(*bpe_lm.train_bpe(Path(d) / "c.txt", 300, ["<|endoftext|>"]), ["<|endoftext|>"])


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(st.one_of(st.integers(0, 300), st.integers(-(2**70), 2**70)), max_size=30))
def test_decoding_any_ids_returns_text_or_a_value_error(tok, ids):
    try:
        text = tok.decode(ids)
    except (ValueError, OverflowError) as e:
        assert any(not 0 <= i < tok.vocab_size for i in ids), e
        return
    assert all(0 <= i < tok.vocab_size for i in ids) and isinstance(text, str)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=EDITS, which=st.sampled_from(["vocab.json", "merges.txt", "tokenizer_config.json"]))
def test_damaged_tokenizer_files_load_or_are_refused_by_name(tmp_path, tok, edits, which):
    out = tmp_path / "tok"
    if not out.exists():
        tok.save(out)
    original = (out / which).read_bytes()
    try:
        (out / which).write_bytes(damaged(original, edits))
        try:
            again = Tokenizer.load(out)
        except (ValueError, OSError) as e:
            assert which in str(e), e  # the damaged file is named (the directory is always in the path)
            return
        again.decode(again.encode("Once upon a time"))
    finally:
        (out / which).write_bytes(original)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=EDITS)
def test_decode_command_on_a_damaged_token_file(tmp_path, tok, npy_bytes, edits, capsys):
    from bpe_lm.cli import main

    if not (tmp_path / "tok").exists():
        tok.save(tmp_path / "tok")
    path = tmp_path / "ids.npy"
    path.write_bytes(damaged(npy_bytes, edits))
    code = main(["decode", str(path), "--tokenizer", str(tmp_path / "tok"), "-o", str(tmp_path / "out.txt"), "--force"])
    err = capsys.readouterr().err
    assert code in (0, 1), err  # 2 would be a bug
    if code == 1:
        assert "ids.npy" in err and "Traceback" not in err, err
