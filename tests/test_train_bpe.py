"""The Rust trainer against the pure-Python reference, merge for merge, plus its guarantees."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpe_lm
from bpe_lm import _core
from bpe_lm.formats import read_gpt2_merges, read_gpt2_vocab, save_tokenizer_dir

import reference_bpe as ref
from conftest import SHARED_DATA, SHARED_TEXT_FILES, generated_corpus, needs_shared_data, shared_slice

EOT = "<|endoftext|>"


def train_text(tmp_path: Path, text: str, vocab_size: int, specials: list[str], **kw):
    path = tmp_path / "input.txt"
    path.write_bytes(text.encode("utf-8"))
    return bpe_lm.train_bpe(path, vocab_size, specials, **kw)


def test_handout_example_matches_reference(tmp_path):
    text = "low low low low low lower lower widest widest widest newest newest newest newest newest newest"
    vocab, merges = train_text(tmp_path, text, 256 + 1 + 6, [EOT])
    assert (vocab, merges) == ref.train(text, 256 + 1 + 6, [EOT])
    assert vocab[0] == EOT.encode() and vocab[1] == b"\x00" and len(vocab) == 263


def test_generated_corpus_matches_reference(tmp_path):
    text = generated_corpus(300)
    assert train_text(tmp_path, text, 600, [EOT]) == ref.train(text, 600, [EOT])


unicode_words = st.text(alphabet=st.characters(exclude_categories=("Cs", "Cn")), min_size=0, max_size=12)
sprinkled = st.lists(
    st.one_of(unicode_words, st.sampled_from([EOT, "<|pad|>", " ", "\n", "  ", "'s", "ab", "ba"])), max_size=40
).map("".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=sprinkled, extra=st.integers(0, 40), specials=st.sampled_from([[], [EOT], [EOT, "<|pad|>"], ["<|pad|>", EOT]])
)
def test_random_unicode_matches_reference(tmp_path, text, extra, specials):
    vocab_size = 256 + len(specials) + extra
    assert train_text(tmp_path, text, vocab_size, specials) == ref.train(text, vocab_size, specials)


@needs_shared_data
@pytest.mark.parametrize("name", SHARED_TEXT_FILES)
def test_shared_corpus_slices_match_reference(tmp_path, name):
    text = shared_slice(name, 60_000, start_chars=10_000)
    assert train_text(tmp_path, text, 257 + 120, [EOT]) == ref.train(text, 257 + 120, [EOT])


def test_identical_for_any_thread_count(tmp_path):
    text = generated_corpus(2000, seed=3) + "ünïcödé 中文 🙂\n" * 50
    results = [train_text(tmp_path, text, 700, [EOT], num_threads=n) for n in (1, 2, 3)]
    assert results[0] == results[1] == results[2]


def test_gzip_and_several_files(tmp_path):
    text = generated_corpus(300)
    plain = tmp_path / "a.txt"
    plain.write_text(text, encoding="utf-8")
    packed = tmp_path / "a.txt.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write(text)
    assert bpe_lm.train_bpe(plain, 500) == bpe_lm.train_bpe(packed, 500)
    # Two files count as one corpus whose files never share a pre-token.
    half = len(text) // 2
    cut = text.index(EOT, half)
    (tmp_path / "b1.txt").write_text(text[:cut], encoding="utf-8")
    (tmp_path / "b2.txt").write_text(text[cut:], encoding="utf-8")
    assert bpe_lm.train_bpe([tmp_path / "b1.txt", tmp_path / "b2.txt"], 500) == bpe_lm.train_bpe(plain, 500)


def test_special_tokens_never_merged(tmp_path):
    text = f"a story{EOT}another story{EOT}{EOT}<|pad|>more<|pad|>" * 50
    vocab, merges = train_text(tmp_path, text, 400, [EOT, "<|pad|>"])
    assert vocab[0] == EOT.encode() and vocab[1] == b"<|pad|>"
    for token in list(vocab.values())[2:]:
        assert b"<|" not in token and b"|>" not in token
    assert all(b"<|" not in a + b for a, b in merges)


def test_longest_special_token_wins(tmp_path):
    text = f"x{EOT}{EOT}y{EOT}z" * 20
    specials = [EOT, EOT + EOT]
    assert train_text(tmp_path, text, 300, specials) == ref.train(text, 300, specials)


def test_stops_early_without_error(tmp_path):
    vocab, merges = train_text(tmp_path, "ab ab", 1000, [EOT])
    assert len(vocab) == 257 + len(merges) and len(vocab) < 1000


def test_counts_beyond_32_bits():
    # Wrapped to 32 bits, ("a", "b") would count 5_032_704 and lose to ("c", "d").
    vocab, merges = _core.train_from_counts([(b"ab", 4_300_000_000), (b"cd", 4_000_000_000)], 257, [])
    assert [(vocab[a], vocab[b]) for a, b in merges] == [(b"a", b"b")]


def test_train_from_count_files_equals_train_bpe(tmp_path, corpus_file):
    from bpe_lm.tokenizer import count_pretokens, train_from_count_files

    distinct = count_pretokens([corpus_file], tmp_path / "c.bin", [EOT])
    from_counts, merges_from_counts, specials, pattern, distinct_again = train_from_count_files(
        [tmp_path / "c.bin"], 500
    )
    vocab, merges = bpe_lm.train_bpe(corpus_file, 500, [EOT])
    assert (from_counts, merges_from_counts, specials, pattern) == (vocab, merges, [EOT], bpe_lm.GPT2_PATTERN)
    assert distinct == distinct_again > 0
    with pytest.raises(ValueError, match="not a valid count file"):
        (tmp_path / "bad.bin").write_bytes((tmp_path / "c.bin").read_bytes()[:-3])
        train_from_count_files([tmp_path / "bad.bin"], 500)


def test_progress_reports_reading_and_merging(corpus_file):
    seen = []
    bpe_lm.train_bpe(corpus_file, 400, progress=lambda phase, done, total: seen.append((phase, done, total)))
    assert seen[-1] == ("merge", 400 - 257, 400 - 257)


def test_progress_error_stops_training(corpus_file):
    def boom(phase, done, total):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        bpe_lm.train_bpe(corpus_file, 400, progress=boom)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"vocab_size": 100}, ValueError, "smaller than 256"),
        ({"vocab_size": 300, "special_tokens": [""]}, ValueError, "empty"),
        ({"vocab_size": 300, "special_tokens": "<|endoftext|>"}, TypeError, "list of strings"),
        ({"vocab_size": 300, "num_threads": 0}, ValueError, "num_threads"),
    ],
)
def test_bad_arguments(corpus_file, kwargs, error, match):
    with pytest.raises(error, match=match):
        bpe_lm.train_bpe(corpus_file, **kwargs)


def test_missing_file_and_invalid_utf8(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        bpe_lm.train_bpe(tmp_path / "nope.txt", 300)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine text\n" * 1000 + b"\xff\xfe broken")
    with pytest.raises(ValueError, match=r"bad.txt: invalid UTF-8 at byte offset 10000"):
        bpe_lm.train_bpe(bad, 300)


def test_on_disk_format_round_trip(tmp_path, corpus_file):
    vocab, merges = bpe_lm.train_bpe(corpus_file, 500, [EOT])
    save_tokenizer_dir(tmp_path / "tok", vocab, merges, [EOT])
    assert read_gpt2_vocab(tmp_path / "tok" / "vocab.json") == vocab
    assert read_gpt2_merges(tmp_path / "tok" / "merges.txt") == merges
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    assert config["special_tokens"] == [EOT] and config["pattern"] == bpe_lm.GPT2_PATTERN
    with pytest.raises(FileExistsError):
        save_tokenizer_dir(tmp_path / "tok", vocab, merges, [EOT])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "tok"]  # no temp dirs left


def test_hf_tokenizers_loads_our_files(tmp_path, corpus_file):
    tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizers not installed")
    vocab, merges = bpe_lm.train_bpe(corpus_file, 500, [EOT])
    save_tokenizer_dir(tmp_path / "tok", vocab, merges, [EOT])
    model = tokenizers.models.BPE.from_file(str(tmp_path / "tok" / "vocab.json"), str(tmp_path / "tok" / "merges.txt"))
    hf = tokenizers.Tokenizer(model)
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    ours = bpe_lm.Tokenizer(vocab, merges, [EOT])
    text = corpus_file.read_text(encoding="utf-8").replace(EOT, "")[:5000]
    assert hf.encode(text).ids == ours.encode(text)


def test_tiktoken_data_gym_loader_reads_our_files(tmp_path, corpus_file):
    tiktoken_load = pytest.importorskip("tiktoken.load", reason="tiktoken not installed")
    # tiktoken's loader numbers merges from 256, so it applies to vocabularies without special tokens.
    vocab, merges = bpe_lm.train_bpe(corpus_file, 500, [])
    save_tokenizer_dir(tmp_path / "tok", vocab, merges, [])
    ranks = tiktoken_load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(tmp_path / "tok" / "merges.txt"),
        encoder_json_file=str(tmp_path / "tok" / "vocab.json"),
        clobber_one_byte_tokens=True,
    )
    assert ranks == {token: i for i, token in vocab.items()}


@needs_shared_data
def test_large_vocab_on_real_text_is_deterministic():
    path = SHARED_DATA / "fairytales.txt.gz"
    a = bpe_lm.train_bpe(path, 2000, num_threads=1)
    b = bpe_lm.train_bpe(path, 2000, num_threads=2)
    assert a == b
