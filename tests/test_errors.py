"""The error classes: one base for everything bpe-lm raises on purpose, and the core's errors typed by what
went wrong (with their details as attributes), never told apart by their messages."""

from __future__ import annotations

import importlib
import json

import pytest

import bpe_lm
from bpe_lm import errors
from bpe_lm.errors import (
    ArgumentError,
    BpeLmError,
    InputError,
    PatternError,
    RecordError,
    TextEncodingError,
    UnknownTokenError,
    VocabularyError,
)
from bpe_lm.tokenizer import Tokenizer

CORE_CLASSES = [
    ArgumentError,
    InputError,
    PatternError,
    RecordError,
    TextEncodingError,
    UnknownTokenError,
    VocabularyError,
]
PACKAGE_CLASSES = [
    ("bpe_lm._io", "OutputExistsError", FileExistsError),
    ("bpe_lm.config", "ConfigError", ValueError),
    ("bpe_lm.download", "DownloadError", OSError),
    ("bpe_lm.export", "ExportError", ValueError),
    ("bpe_lm.manifest", "ManifestError", ValueError),
    ("bpe_lm.train", "TrainingError", RuntimeError),
    ("bpe_lm.cli.common", "UserError", Exception),
]


def test_every_error_class_shares_the_base_and_keeps_its_builtin():
    assert bpe_lm.BpeLmError is BpeLmError
    for cls in CORE_CLASSES:
        assert issubclass(cls, BpeLmError) and issubclass(cls, ValueError), cls
    for module, name, builtin in PACKAGE_CLASSES:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, BpeLmError) and issubclass(cls, builtin), name
    # Nothing in bpe_lm.errors is left out of the checks above.
    defined = {v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, BaseException)}
    assert defined == {BpeLmError, *CORE_CLASSES}


def small_parts():
    vocab = {i: bytes([i]) for i in range(256)}
    vocab[256] = b"ab"
    return vocab, [(b"a", b"b")]


def test_core_errors_arrive_typed_with_their_details(tmp_path):
    vocab, merges = small_parts()
    with pytest.raises(PatternError, match="pre-tokenization pattern"):
        Tokenizer(vocab, merges, pattern="(unclosed")
    tok = Tokenizer(vocab, merges, ["<|endoftext|>"])
    with pytest.raises(UnknownTokenError) as unknown:
        tok.decode([10**6])
    assert unknown.value.token_id == 10**6
    without_byte = {i: t for i, t in vocab.items() if i != 7}
    with pytest.raises(VocabularyError, match="single byte 0x07") as missing:
        Tokenizer(dict(enumerate(without_byte.values())), [])
    assert missing.value.merge_rank is None
    with pytest.raises(VocabularyError) as bad_merge:
        Tokenizer(vocab, [(b"a", b"b"), (b"x", b"yz")])
    assert bad_merge.value.merge_rank == 1
    with pytest.raises(ArgumentError):
        tok.encode_to_numpy("x", num_threads=0)

    broken = tmp_path / "broken.txt"
    broken.write_bytes(b"fine text\n" * 10 + b"\xff\xfe")
    with pytest.raises(TextEncodingError) as utf8:
        tok.encode_file(broken, tmp_path / "out.npy")
    assert utf8.value.offset == 100 and utf8.value.path == str(broken)
    records = tmp_path / "docs.jsonl"
    records.write_text(json.dumps({"text": "one"}) + "\n" + '{"text": 3}\n', encoding="utf-8")
    with pytest.raises(RecordError) as record:
        tok.encode_file(records, tmp_path / "out2.npy")
    assert record.value.position == "line 2" and record.value.path == str(records)
    damaged = tmp_path / "cut.parquet"
    damaged.write_bytes(b"PAR1" + b"\0" * 64)
    with pytest.raises(InputError, match="not a readable parquet file") as unreadable:
        tok.encode_file(damaged, tmp_path / "out3.npy")
    assert unreadable.value.path == str(damaged)
    assert not any((tmp_path / f"out{n}.npy").exists() for n in ("", "2", "3"))


def test_files_at_fault_are_named_from_the_error_type(tmp_path):
    vocab, merges = small_parts()
    d = tmp_path / "tok"
    Tokenizer(vocab, merges, ["<|endoftext|>"]).save(d)
    # A merge whose parts are not tokens: the merges file and its line (from the error's merge_rank).
    lines = (d / "merges.txt").read_text(encoding="utf-8").splitlines()
    (d / "merges.txt").write_text("\n".join([*lines, "Ġq Ġz"]) + "\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match=rf"merges.txt: line {len(lines) + 1}: merge 1 ") as e:
        Tokenizer.load(d)
    assert e.value.merge_rank == 1
    (d / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # A pattern that does not compile: tokenizer_config.json, as a PatternError.
    config = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["pattern"] = "(unclosed"
    (d / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(PatternError, match=r"tokenizer_config.json: pre-tokenization pattern"):
        bpe_lm.Tokenizer.load(d)
