"""`bpe_lm.Tokenizer`: CS336 §2.6 semantics against the reference, byte-exact GPT-2 parity with tiktoken,
streaming, numpy output and error handling."""

from __future__ import annotations

import gc
import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bpe_lm
import bpe_lm.formats
from bpe_lm import Tokenizer

import reference_bpe as ref
from conftest import SHARED_DATA, SHARED_TEXT_FILES, generated_corpus, needs_shared_data

EOT = "<|endoftext|>"
GPT2_DIR = SHARED_DATA / "gpt2"
needs_gpt2 = pytest.mark.skipif(
    not (GPT2_DIR / "vocab.json").is_file(), reason=f"GPT-2 vocab/merges not found in {GPT2_DIR}"
)

text_with_specials = st.lists(
    st.one_of(
        st.text(alphabet=st.characters(exclude_categories=("Cs", "Cn")), max_size=20),
        st.sampled_from(
            [EOT, EOT + EOT, "<|end", "oftext|>", " ", "  ", "\n\n", "'ll", "'S", "123", "👩‍👩‍👧", "\u00a0"]
        ),
    ),
    max_size=25,
).map("".join)


@pytest.fixture(scope="module")
def small_tokenizer() -> tuple[Tokenizer, dict[int, bytes], list[tuple[bytes, bytes]]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        path.write_text(generated_corpus(400) + "ünïcödé 中文字 🙂🙂 ЖЖЖ 1234567 \t\t x\n" * 20, encoding="utf-8")
        vocab, merges = bpe_lm.train_bpe(path, 600, [EOT])
    return Tokenizer(vocab, merges, [EOT]), vocab, merges


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return Tokenizer.from_files(GPT2_DIR / "vocab.json", GPT2_DIR / "merges.txt", [EOT])


@pytest.fixture(scope="module")
def tiktoken_gpt2():
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken not installed")
    tiktoken_load = pytest.importorskip("tiktoken.load", reason="tiktoken not installed")

    with tempfile.TemporaryDirectory() as tmp:
        bpe_file = Path(tmp) / "vocab.bpe"
        bpe_file.write_text("#version: 0.2\n" + (GPT2_DIR / "merges.txt").read_text(encoding="utf-8"), encoding="utf-8")
        ranks = tiktoken_load.data_gym_to_mergeable_bpe_ranks(
            vocab_bpe_file=str(bpe_file), encoder_json_file=str(GPT2_DIR / "vocab.json")
        )
    return tiktoken.Encoding(
        "gpt2-local", pat_str=bpe_lm.GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256}
    )


# ---------------------------------------------------------------------------------------------------- semantics


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_with_specials)
def test_matches_reference_encoder(small_tokenizer, text):
    tok, vocab, merges = small_tokenizer
    assert tok.encode(text) == ref.encode(text, vocab, merges, [EOT])
    assert tok.decode(tok.encode(text)) == text


def test_long_pieces_match_reference(small_tokenizer):
    tok, vocab, merges = small_tokenizer
    for text in ["a" * 500, "the" * 200, "1" * 333 + "23" * 100, " " * 300 + "x", "ЖЖЖ" * 100]:
        assert tok.encode(text) == ref.encode(text, vocab, merges, [EOT])


def test_overlapping_special_tokens_longest_wins(small_tokenizer):
    _, vocab, merges = small_tokenizer
    tok = Tokenizer(vocab, merges, [EOT, EOT + EOT])
    double = tok.token_to_id(EOT + EOT)
    single = tok.token_to_id(EOT)
    assert double == len(vocab) and single == 0  # the new special is appended
    assert tok.encode(EOT * 3) == [double, single]
    assert tok.decode(tok.encode(f"a{EOT * 2}b")) == f"a{EOT * 2}b"


def test_special_tokens_added_when_absent(small_tokenizer):
    _, vocab, merges = small_tokenizer
    tok = Tokenizer(vocab, merges, ["<|pad|>"])
    assert tok.vocab_size == len(vocab) + 1
    assert tok.encode("x<|pad|>")[-1] == len(vocab)
    assert tok.id_to_token(len(vocab)) == b"<|pad|>"
    # Without being registered, a special token's text is plain text.
    assert Tokenizer(vocab, merges).encode(EOT) != [0]


def test_encode_batch_and_numpy(small_tokenizer):
    tok, _, _ = small_tokenizer
    texts = [generated_corpus(5, seed=s) for s in range(20)]
    assert tok.encode_batch(texts, num_threads=2) == [tok.encode(t) for t in texts]
    big = generated_corpus(3000, seed=1)  # > 1 MB, so it encodes in parallel parts
    arr = tok.encode_to_numpy(big, num_threads=2)
    assert arr.dtype == np.uint16 and arr.flags.writeable
    assert arr.tolist() == tok.encode(big)
    assert tok.encode_to_numpy("hello", dtype=np.uint32).dtype == np.uint32
    # One part of uint32 ids is handed over without a copy: the array keeps the core's memory alive.
    wide = tok.encode_to_numpy(big, dtype=np.uint32, num_threads=1)
    gc.collect()
    assert wide.base is not None and wide.flags.writeable and wide.tolist() == arr.tolist()
    wide[:3] = 7
    assert wide[:4].tolist() == [7, 7, 7, arr[3]]
    with pytest.raises(ValueError, match="dtype must be uint16 or uint32"):
        tok.encode_to_numpy("x", dtype=np.int64)


def test_id_lists_hold_one_reference_per_id(small_tokenizer):
    # The lists share one int per id: each use holds a reference, all given back when the list goes.
    # (Ids above 256: CPython's small ints are immortal from 3.12, with a reference count that stays.)
    import sys

    tok, _, _ = small_tokenizer
    text = generated_corpus(50, seed=9)
    ids = tok.encode(text)
    assert ids == tok.encode_to_numpy(text, dtype=np.uint32).tolist()
    # Keyed by name, so the bookkeeping itself holds the same references at every count.
    ints = {str(i): ids[ids.index(i)] for i in set(ids) if i > 256}
    uses = {name: ids.count(int(name)) for name in ints}
    assert len(ints) > 20 and max(uses.values()) > 5

    def references() -> dict[str, int]:
        return {name: sys.getrefcount(value) for name, value in ints.items()}

    before = references()
    again = [tok.encode(text), tok.encode(text)] + tok.encode_batch([text, text], num_threads=2)
    assert references() == {name: before[name] + 4 * uses[name] for name in ints}
    # Lists shorter than the vocabulary take their references id by id, the others counted first.
    assert len(ids) >= tok.vocab_size > 100
    short_texts = [tok.decode(ids[:100])] * 3 + [tok.decode(ids[:1])]
    extra = {name: 3 * ids[:100].count(int(name)) + ids[:1].count(int(name)) for name in ints}
    pieces = [tok.encode(t) for t in short_texts]
    assert pieces[0] == ids[:100] and pieces[3] == ids[:1]
    del again
    gc.collect()
    assert references() == {name: before[name] + extra[name] for name in ints}
    del pieces
    gc.collect()
    assert references() == before


def test_lists_come_right_from_a_reused_buffer_and_from_threads_at_once(small_tokenizer):
    # encode and encode_ordinary write into the buffer the call before used (long then short texts,
    # both calls in turn), and into buffers of their own when Python threads call at once.
    from concurrent.futures import ThreadPoolExecutor

    tok, _, _ = small_tokenizer
    texts = [generated_corpus(n, seed=n) for n in (400, 3, 0, 60, 400, 1)] + ["x" + EOT + "y"]
    expected = [(tok.encode_to_numpy(t).tolist(), tok.encode_batch([t])[0]) for t in texts]
    assert [(tok.encode(t), tok.encode_ordinary(t) if EOT not in t else tok.encode(t)) for t in texts] == expected
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda t: (tok.encode(t), tok.encode_batch([t])[0]), texts * 6))
    assert got == expected * 6


def test_utf8_bytes_encode_as_their_text(small_tokenizer):
    tok, _, _ = small_tokenizer
    big = generated_corpus(3000, seed=4)  # > 1 MB: encode_to_numpy's parallel parts
    for text in ("", "héllo wörld ’quoted’ 🎉" + EOT + "tail", big):
        for data in (text.encode(), bytearray(text.encode())):
            assert tok.encode(data) == tok.encode(text)
            assert tok.encode_ordinary(data) == tok.encode_ordinary(text)
            assert tok.encode_to_numpy(data, num_threads=2).tolist() == tok.encode(text)
    # Bytes that are not UTF-8 are named by the offset of the first bad byte, whichever call gets them.
    for call in (tok.encode, tok.encode_ordinary, tok.encode_to_numpy):
        with pytest.raises(bpe_lm.errors.TextEncodingError, match="byte offset 3") as caught:
            call(b"abc\xff" + big.encode())
        assert caught.value.offset == 3
    with pytest.raises(bpe_lm.errors.TextEncodingError, match="byte offset 2"):
        tok.encode("é".encode() + "é".encode()[:1])  # cut inside a character
    # Batches take str and bytes mixed; a bad text is named by its index.
    texts = [generated_corpus(3, seed=s) for s in range(12)] + ["ünï " + EOT, ""]
    mixed = [t.encode() if i % 2 else t for i, t in enumerate(texts)]
    assert tok.encode_batch(mixed, num_threads=2) == tok.encode_batch(texts, num_threads=2)
    flat, offsets = tok.encode_batch_to_numpy(mixed, num_threads=2)
    assert (flat.tolist(), offsets.tolist()) == tuple(x.tolist() for x in tok.encode_batch_to_numpy(texts))
    for call in (tok.encode_batch, tok.encode_batch_to_numpy):
        with pytest.raises(bpe_lm.errors.TextEncodingError, match=r"texts\[3\]: invalid UTF-8 at byte offset 1") as bad:
            call(mixed[:3] + [b"a\xc3("] + mixed[3:])
        assert (bad.value.item, bad.value.offset, bad.value.path) == (3, 1, None)
    with pytest.raises(TypeError, match="text must be str or bytes, not int"):
        tok.encode(7)
    with pytest.raises(UnicodeEncodeError):
        tok.encode("lone \udc80 surrogate")


def large_strs() -> dict[str, str]:
    """Strs long enough to be read as their code units (4,096 characters or more, not ASCII, their UTF-8 not
    yet made) in each of CPython's forms, with special-token strings, white space runs and a run with no
    cut at all, several parts of 65,536 units long."""
    words = "Once upon a time  there was <|endoftext|>! a tale,\n\n told\tagain " * 40
    return {
        "Latin-1": ("café crème, déjà vu " + words + "naïve façade ") * 90 + "é" * 70_000,
        "UCS-2": ("Жил-был кот “quoted” 中文字 " + words) * 90 + "Ж" * 70_000 + " end",
        "UCS-4": ("emoji 🙂👍🏽 𝄞 " + words) * 90 + " 🙂" * 40_000,
    }


@pytest.fixture
def strs_in_place(monkeypatch):
    """Large strs read in place on any CPU (by default only where it makes their UTF-8 with AVX2 or AVX-512)."""
    monkeypatch.setenv(bpe_lm.tokenizer.STRS_IN_PLACE_ENV, "1")


@pytest.mark.parametrize("form", ["Latin-1", "UCS-2", "UCS-4"])
def test_a_large_str_encodes_as_its_utf8_bytes(small_tokenizer, strs_in_place, form):
    # A large str is made UTF-8 a part at a time (never whole, on one thread), each part encoded up to its
    # last safe cut: the ids are those of its bytes, with special tokens as ids or as text, on 1 and 2
    # threads, also where a special-token string lies across a part's end (at character 65,536), and for a
    # pattern with no cuts but after special tokens.
    tok, vocab, merges = small_tokenizer
    text = large_strs()[form]
    assert bpe_lm._core.reads_str_in_place(text, True)  # CPython 3.10 on, 64-bit: the path tested here
    straddling = ["é" + "x" * (65_536 - 1 - k) + EOT + "!" + text[:5000] for k in range(0, len(EOT) + 2)]
    custom = Tokenizer(vocab, merges, [EOT], pattern=r"\S+|\s+")
    for t in [text, *straddling]:
        data = t.encode()
        assert tok.encode(t) == tok.encode(data)
        assert tok.encode_ordinary(t) == tok.encode_ordinary(data)
        for threads in (1, 2):
            assert (tok.encode_to_numpy(t, num_threads=threads) == tok.encode_to_numpy(data, num_threads=1)).all()
    for t in (text, text.replace(EOT, "")):
        assert custom.encode(t) == custom.encode(t.encode())
        assert custom.encode_ordinary(t) == custom.encode_ordinary(t.encode())


def test_a_large_str_with_a_lone_surrogate_raises_cpythons_error(small_tokenizer, strs_in_place):
    # Found in a later part, after ids were made for the parts before: the error CPython gives for the str.
    tok, _, _ = small_tokenizer
    text = large_strs()["UCS-2"]
    bad = text[:100_000] + "\udc80" + text[100_000:]
    for call in (tok.encode, tok.encode_ordinary, lambda t: tok.encode_to_numpy(t, num_threads=1),
                 lambda t: tok.encode_to_numpy(t, num_threads=2)):  # fmt: skip
        with pytest.raises(UnicodeEncodeError, match="position 100000: surrogates not allowed"):
            call(bad)


def test_strs_read_otherwise_encode_the_same(small_tokenizer, strs_in_place, monkeypatch):
    # A subclass of str, a str whose UTF-8 CPython has made already, a short one, one mostly of Chinese
    # and Japanese, and any str where $BPE_LM_STRS_IN_PLACE is 0 are made UTF-8 by CPython; their ids equal those of the text read as code
    # units. A value of the variable other than 0 or 1 is refused, naming it.
    tok, _, _ = small_tokenizer
    text = large_strs()["UCS-2"]
    ids = tok.encode_to_numpy(text, num_threads=1)
    monkeypatch.setenv(bpe_lm.tokenizer.STRS_IN_PLACE_ENV, "0")
    assert not bpe_lm._core.reads_str_in_place(text, False)
    assert (tok.encode_to_numpy(text, num_threads=1) == ids).all()
    monkeypatch.setenv(bpe_lm.tokenizer.STRS_IN_PLACE_ENV, "yes")
    with pytest.raises(ValueError, match=r"\$BPE_LM_STRS_IN_PLACE='yes': expected 1"):
        tok.encode(text)
    monkeypatch.setenv(bpe_lm.tokenizer.STRS_IN_PLACE_ENV, "1")

    class Text(str):
        pass

    made = "".join(text)  # a str of its own
    tok.encode_batch([made])  # a batch makes each str UTF-8 through CPython, which keeps it with the str
    want = tok.encode(text.encode())
    chinese = "中文字符和日本語の文章 " * 2000  # mostly characters of three bytes: CPython's copy
    assert not any(
        bpe_lm._core.reads_str_in_place(t, True) for t in (Text(text), made, text[:3000], text.encode(), chinese)
    )
    assert tok.encode(chinese) == tok.encode(chinese.encode())
    assert tok.encode(Text(text)) == tok.encode(made) == tok.encode(text) == want
    assert tok.encode(text[:3000]) == tok.encode(text[:3000].encode())


def test_a_batch_taken_while_it_encodes_equals_each_text_encoded(small_tokenizer):
    # Texts are taken from the list (each str made UTF-8) while the threads encode those taken so far, in
    # runs of up to 256 KB: a batch of many runs, of str (ASCII and not) and bytes, at several thread counts.
    tok, _, _ = small_tokenizer
    texts = [generated_corpus(8, seed=s) + (" Grüße, 你好 " * (s % 7)) for s in range(1500)]
    texts = [t.encode() if i % 5 == 0 else t for i, t in enumerate(texts)]
    assert sum(len(t) for t in texts) > 1 << 20  # 1.7 MB: runs of about 210 KB at 2 threads, 140 KB at 3
    want = [tok.encode(t) for t in texts]
    for threads in (1, 2, 3):
        assert tok.encode_batch(texts, num_threads=threads) == want
        ids, offsets = tok.encode_batch_to_numpy(texts, num_threads=threads)
        assert [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])] == want
    # Runs and shares are sized by a guess from up to 1024 texts spread over the list: one long text among
    # thousands of short ones, in a sampled place (the guess far too large) and not (far too small).
    for at in (0, 1):
        skewed = ["a few words here " * (i % 3 + 1) for i in range(3000)]
        skewed[1500 + at] = generated_corpus(40, seed=9) * 100
        ids, offsets = tok.encode_batch_to_numpy(skewed, num_threads=2)
        assert [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])] == [tok.encode(t) for t in skewed]
    # Python threads calling at once share the pools' threads: each call's runs wait for them, none for
    # another call's texts.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as calls:
        for got in calls.map(lambda k: tok.encode_batch(texts[k * 100 :], num_threads=2), range(8)):
            assert got == want[len(want) - len(got) :]
    # An item that is no text is the error, even after a text that fails its UTF-8 check (as when every
    # item was taken before the encoding began).
    with pytest.raises(TypeError, match="text must be str or bytes, not float"):
        tok.encode_batch_to_numpy([*texts[:10], b"\xff", *texts[10:1200], 1.5, *texts[1200:]], num_threads=2)
    with pytest.raises(bpe_lm.errors.TextEncodingError, match=r"texts\[1100\]"):
        tok.encode_batch([*texts[:1100], b"\xff", *texts[1100:], b"\xfe"], num_threads=2)


def test_encode_batch_to_numpy_is_the_batch_flattened(small_tokenizer):
    tok, _, _ = small_tokenizer
    texts = [generated_corpus(3, seed=s) for s in range(30)] + ["", EOT, "x" * 70_000]
    ids, offsets = tok.encode_batch_to_numpy(texts, num_threads=2)
    assert ids.dtype == np.uint16 and offsets.dtype == np.uint64 and len(offsets) == len(texts) + 1
    assert [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])] == tok.encode_batch(texts)
    wide, _ = tok.encode_batch_to_numpy(texts[:2], dtype=np.uint32)
    assert wide.dtype == np.uint32 and wide.tolist() == ids[: int(offsets[2])].tolist()
    empty, at = tok.encode_batch_to_numpy([])
    assert empty.size == 0 and at.tolist() == [0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_with_specials, cuts=st.lists(st.integers(0, 400), max_size=8), flush=st.integers(1, 40))
def test_encode_iterable_equals_encode(small_tokenizer, text, cuts, flush):
    tok, _, _ = small_tokenizer
    points = sorted({c for c in cuts if c <= len(text)})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]
    assert list(tok.encode_iterable(pieces, flush_chars=flush)) == tok.encode(text)


def test_encode_iterable_is_lazy_over_a_file(tmp_path, small_tokenizer):
    tok, _, _ = small_tokenizer
    text = generated_corpus(3000, seed=2)
    path = tmp_path / "big.txt"
    path.write_text(text, encoding="utf-8")
    lines_read = 0

    def lines():
        nonlocal lines_read
        with open(path, encoding="utf-8") as f:
            for line in f:
                lines_read += 1
                yield line

    stream = tok.encode_iterable(lines())
    first = next(stream)  # available before the file has been read to the end
    assert lines_read < text.count("\n") / 2
    assert [first, *stream] == tok.encode(text)


def test_decode_replaces_invalid_utf8(small_tokenizer):
    tok, _, _ = small_tokenizer
    first_byte_of_e_acute = tok.token_to_id(b"\xc3")
    assert tok.decode([first_byte_of_e_acute]) == "\ufffd"
    assert tok.decode_bytes([first_byte_of_e_acute]) == b"\xc3"


def test_unknown_ids_are_value_errors(small_tokenizer):
    tok, _, _ = small_tokenizer
    for bad in ([10**6], [-1], np.array([1, 70000], dtype=np.uint32), np.array([-3], dtype=np.int64)):
        with pytest.raises(ValueError, match="unknown token id"):
            tok.decode(bad)
    with pytest.raises(ValueError, match="unknown token id 99999"):
        tok.id_to_token(99999)
    with pytest.raises(KeyError):
        tok.token_to_id(b"\xff\xfe\xfd not a token")


def test_save_load_round_trip(tmp_path, small_tokenizer):
    tok, _, _ = small_tokenizer
    tok.save(tmp_path / "t")
    again = Tokenizer.load(tmp_path / "t")
    assert again.vocab == tok.vocab and again.merges == tok.merges and again.special_tokens == tok.special_tokens
    text = generated_corpus(20)
    assert again.encode(text) == tok.encode(text)


def test_bad_vocabularies(small_tokenizer):
    _, vocab, merges = small_tokenizer
    with pytest.raises(ValueError, match="without gaps"):
        Tokenizer({0: b"a", 2: b"b"}, [])
    with pytest.raises(ValueError, match="single byte"):
        Tokenizer({i: bytes([i]) for i in range(255)}, [])
    with pytest.raises(ValueError, match="not in the vocabulary"):
        Tokenizer(vocab, [*merges, (b"zz", b"qq")])


def test_custom_pattern(small_tokenizer):
    _, vocab, merges = small_tokenizer
    tok = Tokenizer(vocab, merges, [EOT], pattern=r"\S+|\s+")
    text = "hello world, again"
    assert tok.decode(tok.encode(text)) == text


GPT2_SPELLINGS = [
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",  # encoder.py, HF ByteLevel
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s",  # tiktoken r50k_base
]


@pytest.mark.parametrize("spelling", GPT2_SPELLINGS)
def test_other_spellings_of_the_gpt2_pattern_keep_the_scanner(small_tokenizer, spelling):
    tok, vocab, merges = small_tokenizer
    same = Tokenizer(vocab, merges, [EOT], pattern=spelling)
    assert tok.fast_pretokenizer and same.fast_pretokenizer
    text = generated_corpus(50, seed=3) + " a  b\t\n\n c's   \n x"
    assert same.encode(text) == tok.encode(text)
    # One alternative more (meaning the same, spelled differently again): the regex engine, same ids.
    other = Tokenizer(vocab, merges, [EOT], pattern=bpe_lm.GPT2_PATTERN.replace("|re)", "|re|re)"))
    assert not other.fast_pretokenizer and other.encode(text) == tok.encode(text)


def test_loading_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer directory not found"):
        Tokenizer.load(tmp_path / "missing")
    (tmp_path / "vocab.json").write_text('{"a": "zero"}', encoding="utf-8")
    with pytest.raises(ValueError, match="vocab.json: token 'a' has id 'zero'"):
        bpe_lm.formats.read_gpt2_vocab(tmp_path / "vocab.json")
    (tmp_path / "vocab.json").write_text('{"a\\u0000": 3}', encoding="utf-8")
    with pytest.raises(ValueError, match="not a GPT-2 byte character"):
        bpe_lm.formats.read_gpt2_vocab(tmp_path / "vocab.json")


@settings(max_examples=500, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(sorted(bpe_lm.formats.unicode_to_bytes())) | st.characters(), max_size=12))
def test_gpt2_characters_map_to_their_bytes_and_nothing_else_passes(text):
    # The C-level translation against the per-character table it replaces: equal bytes, or an error
    # exactly where some character is not one of GPT-2's 256.
    table = bpe_lm.formats.unicode_to_bytes()
    if all(c in table for c in text):
        assert bpe_lm.formats.text_to_token(text) == bytes(table[c] for c in text)
    else:
        with pytest.raises(ValueError, match="not a GPT-2 byte character"):
            bpe_lm.formats.text_to_token(text)


def test_a_bad_character_in_merges_names_its_line(tmp_path):
    path = tmp_path / "merges.txt"
    path.write_text("#version: 0.2\nĠ t\nĠ a\u0000\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"merges.txt: line 3: token 'a\\x00' holds"):
        bpe_lm.formats.read_gpt2_merges(path)


# ---------------------------------------------------------------------------------------------------- GPT-2 parity


@needs_gpt2
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=text_with_specials)
def test_gpt2_matches_tiktoken_on_generated_text(gpt2, tiktoken_gpt2, text):
    assert gpt2.encode(text) == tiktoken_gpt2.encode(text, allowed_special="all")
    assert gpt2.encode_ordinary(text) == tiktoken_gpt2.encode_ordinary(text)
    assert gpt2.decode(gpt2.encode(text)) == text


@needs_gpt2
@needs_shared_data
@pytest.mark.parametrize("name", SHARED_TEXT_FILES)
def test_gpt2_matches_tiktoken_on_shared_files(gpt2, tiktoken_gpt2, name):
    with gzip.open(SHARED_DATA / name, "rt", encoding="utf-8") as f:
        text = f.read()
    ours = gpt2.encode_to_numpy(text, num_threads=2)
    theirs = tiktoken_gpt2.encode(text, allowed_special="all")
    assert ours.tolist() == theirs
    assert gpt2.decode(ours) == text


@needs_gpt2
def test_gpt2_known_ids(gpt2):
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(EOT) == [50256]
    assert gpt2.vocab_size == 50257
