"""Export to / import from HF tokenizers and tiktoken (id for id), and `bpe-lm tokenizer-stats`."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pytest

import bpe_lm
from bpe_lm import Tokenizer
from bpe_lm.cli import main
from bpe_lm.interop import export_hf, export_tiktoken, to_hf_json
from bpe_lm.stats import compare, documents, parse_size, sample_documents, timing_documents

from conftest import SHARED_DATA, SHARED_TEXT_FILES, generated_corpus, needs_shared_data

EOT = "<|endoftext|>"
TEXT = generated_corpus(60, seed=4) + f" ünïcödé 中文 🙂 {EOT}{EOT} tail  \n\n x'S 123"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.txt"
        path.write_text(generated_corpus(500) + "ünïcödé 中文 🙂 ЖЖ\n" * 30, encoding="utf-8")
        vocab, merges = bpe_lm.train_bpe(path, 700, [EOT])
    return Tokenizer(vocab, merges, [EOT, "<|pad|>"])


@pytest.fixture(scope="module")
def shared_tok() -> Tokenizer:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared corpus not found at {SHARED_DATA}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mix.txt"
        with open(path, "w", encoding="utf-8") as f:
            for name in SHARED_TEXT_FILES:
                with gzip.open(SHARED_DATA / name, "rt", encoding="utf-8") as g:
                    f.write(g.read(300_000))
        vocab, merges = bpe_lm.train_bpe(path, 3000, [EOT])
    return Tokenizer(vocab, merges, [EOT])


def shared_texts() -> list[str]:
    out = []
    for name in SHARED_TEXT_FILES:
        with gzip.open(SHARED_DATA / name, "rt", encoding="utf-8") as f:
            out.append(f.read(1_000_000))
    return out


# ---------------------------------------------------------------------------------------------------- HF


def test_hf_export_gives_identical_ids(tmp_path, tok):
    tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizers not installed")
    export_hf(tok, tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.encode(TEXT, add_special_tokens=False).ids == tok.encode(TEXT)
    assert hf.decode(tok.encode(TEXT), skip_special_tokens=False) == TEXT


@needs_shared_data
def test_hf_export_on_shared_files(tmp_path, shared_tok):
    tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizers not installed")
    export_hf(shared_tok, tmp_path / "tokenizer.json")
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in shared_texts():
        assert hf.encode(text, add_special_tokens=False).ids == shared_tok.encode(text)


def test_hf_round_trip(tmp_path, tok):
    export_hf(tok, tmp_path / "tokenizer.json")
    back = Tokenizer.from_hf(tmp_path / "tokenizer.json")
    assert back.vocab == tok.vocab and back.merges == tok.merges and back.special_tokens == tok.special_tokens
    assert back.encode(TEXT) == tok.encode(TEXT)


def test_hf_export_writes_the_gpt2_pattern_as_byte_level_and_others_as_split(tmp_path, tok):
    # GPT-2's pattern goes out as ByteLevel's own regex (what HF tokenizers and the encoders that load
    # tokenizer.json run fastest), and reads back as the same pattern.
    assert to_hf_json(tok)["pre_tokenizer"] == {
        "type": "ByteLevel",
        "add_prefix_space": False,
        "trim_offsets": True,
        "use_regex": True,
    }
    other = Tokenizer(tok.vocab, tok.merges, tok.special_tokens, pattern=r"\p{L}+| ?[^\s\p{L}]+|\s+")
    data = to_hf_json(other)
    assert [step["type"] for step in data["pre_tokenizer"]["pretokenizers"]] == ["Split", "ByteLevel"]
    (tmp_path / "t.json").write_text(json.dumps(data))
    back = Tokenizer.from_hf(tmp_path / "t.json")
    assert back.pattern == other.pattern and back.encode(TEXT) == other.encode(TEXT)
    tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizers not installed")
    assert tokenizers.Tokenizer.from_file(str(tmp_path / "t.json")).encode(TEXT).ids == other.encode(TEXT)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["model"].update(type="WordPiece"), "model type 'WordPiece' is not supported"),
        (lambda d: d["model"].update(type="Unigram"), "model type 'Unigram' is not supported"),
        (lambda d: d.update(normalizer={"type": "NFC"}), "normalizer 'NFC' is not supported"),
        (lambda d: d["model"].update(byte_fallback=True), "byte_fallback"),
        (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), "pre_tokenizer 'Whitespace' is not supported"),
        (lambda d: d.update(pre_tokenizer={"type": "ByteLevel", "add_prefix_space": True}), "add_prefix_space"),
    ],
)
def test_hf_unsupported_types_are_refused(tmp_path, tok, change, message):
    data = to_hf_json(tok)
    change(data)
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_hf(tmp_path / "t.json")


# ---------------------------------------------------------------------------------------------------- tiktoken


def test_tiktoken_export_gives_identical_ids(tmp_path, tok):
    tiktoken_load = pytest.importorskip("tiktoken.load", reason="tiktoken not installed")
    import tiktoken

    export_tiktoken(tok, tmp_path / "ours.tiktoken")
    enc = tiktoken.Encoding(
        "ours",
        pat_str=tok.pattern,
        mergeable_ranks=tiktoken_load.load_tiktoken_bpe(str(tmp_path / "ours.tiktoken")),
        special_tokens=tok.special_token_ids,
    )
    assert enc.encode(TEXT, allowed_special="all") == tok.encode(TEXT)


@needs_shared_data
def test_tiktoken_export_on_shared_files(tmp_path, shared_tok):
    tiktoken_load = pytest.importorskip("tiktoken.load", reason="tiktoken not installed")
    import tiktoken

    export_tiktoken(shared_tok, tmp_path / "ours.tiktoken")
    enc = tiktoken.Encoding(
        "ours",
        pat_str=shared_tok.pattern,
        mergeable_ranks=tiktoken_load.load_tiktoken_bpe(str(tmp_path / "ours.tiktoken")),
        special_tokens=shared_tok.special_token_ids,
    )
    for text in shared_texts():
        assert enc.encode(text, allowed_special="all") == shared_tok.encode(text)


def test_tiktoken_round_trip(tmp_path, tok):
    export_tiktoken(tok, tmp_path / "ours.tiktoken")
    back = Tokenizer.from_tiktoken(tmp_path / "ours.tiktoken", tok.special_token_ids)
    assert back.vocab == tok.vocab and back.merges == tok.merges
    assert back.encode(TEXT) == tok.encode(TEXT)


@needs_shared_data
def test_gpt2_from_tiktoken_ranks_equals_gpt2_files(tmp_path):
    gpt2 = Tokenizer.from_files(SHARED_DATA / "gpt2" / "vocab.json", SHARED_DATA / "gpt2" / "merges.txt", [EOT])
    export_tiktoken(gpt2, tmp_path / "gpt2.tiktoken")
    back = Tokenizer.from_tiktoken(tmp_path / "gpt2.tiktoken", {EOT: 50256})
    assert back.merges == gpt2.merges
    assert back.encode(TEXT) == gpt2.encode(TEXT)


def test_tiktoken_bad_file(tmp_path):
    (tmp_path / "bad.tiktoken").write_text("not-base64!! x\n")
    with pytest.raises(ValueError, match="line 1: expected 'base64-token rank'"):
        Tokenizer.from_tiktoken(tmp_path / "bad.tiktoken")


# ---------------------------------------------------------------------------------------------------- CLI and stats


def test_export_import_commands(tmp_path, tok, capsys):
    tok.save(tmp_path / "tok")
    assert main(["export-tokenizer", str(tmp_path / "tok"), "--format", "hf", "-o", str(tmp_path / "t.json")]) == 0
    assert (
        main(["export-tokenizer", str(tmp_path / "tok"), "--format", "tiktoken", "-o", str(tmp_path / "t.tiktoken")])
        == 0
    )
    assert "load_tiktoken_bpe" in capsys.readouterr().err
    assert main(["import-tokenizer", str(tmp_path / "t.json"), "--format", "hf", "-o", str(tmp_path / "from_hf")]) == 0
    assert main(["import-tokenizer", str(tmp_path / "t.tiktoken"), "--format", "tiktoken", "--special-token", f"{EOT}=0",
                 "--special-token", f"<|pad|>={tok.vocab_size - 1}", "-o", str(tmp_path / "from_tt")]) == 0  # fmt: skip
    for d in ("from_hf", "from_tt"):
        assert Tokenizer.load(tmp_path / d).encode(TEXT) == tok.encode(TEXT)
    assert main(["import-tokenizer", str(tmp_path / "t.json"), "--format", "hf", "-o", str(tmp_path / "from_hf")]) == 1
    assert "already exists" in capsys.readouterr().err


def test_stats_compare(tmp_path, tok, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text(generated_corpus(300, seed=9), encoding="utf-8")
    docs = sample_documents(corpus, 50, seed=1)
    assert len(docs) == 50 and docs == sample_documents(corpus, 50, seed=1)
    # A second tokenizer trained on different text: the vocabularies share the 256 bytes, the special token
    # and some merges, but not all.
    other_text = tmp_path / "other.txt"
    other_text.write_text("the quick brown fox jumps over the lazy dog, again and again\n" * 300, encoding="utf-8")
    other = Tokenizer(*bpe_lm.train_bpe(other_text, 300, [EOT]), [EOT])
    results = compare({"a": tok, "b": other}, [str(corpus)], 50, 1, parse_size("825GB"))
    pair = results["pairs"][0]
    assert pair["bytes_per_token"] == pytest.approx(
        sum(len(d.encode()) for d in docs) / sum(len(tok.encode(d)) for d in docs)
    )
    used = {i for d in docs for i in tok.encode(d)}
    assert pair["vocab_used"] == pytest.approx(len(used) / tok.vocab_size)
    # Speed: timed on documents other than the warm-up's; a corpus this small is split a fifth / four fifths.
    warm, timed = timing_documents(corpus)
    all_docs = list(documents(corpus))
    assert warm + timed == all_docs and warm and timed
    assert len("".join(warm).encode()) == pytest.approx(len("".join(all_docs).encode()) / 5, rel=0.05)
    assert pair["timed_bytes"] == len(EOT.join(timed).encode())
    assert pair["projected_seconds"] == pytest.approx(825e9 / (pair["mb_per_s"] * 1e6))
    a, b = set(tok.vocab.values()), set(other.vocab.values())
    overlap = results["overlap"][0]
    assert overlap["shared_tokens"] == len(a & b) and 257 <= len(a & b) < len(b)
    assert overlap["jaccard"] == pytest.approx(len(a & b) / len(a | b)) and overlap["jaccard"] < 1
    assert results["tokenizers"]["a"]["dtype"] == "uint16"
    tok.save(tmp_path / "tok")
    assert main(["tokenizer-stats", "--tokenizer", str(tmp_path / "tok"), str(corpus), "--docs", "20"]) == 0
    assert "bytes/token" in capsys.readouterr().out
    assert main(["tokenizer-stats", "--tokenizer", str(tmp_path / "tok"), str(corpus), "--project", "lots"]) == 1
    assert parse_size("1.5 TB") == 1.5e12
