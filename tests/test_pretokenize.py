"""The hand-written GPT-2 scanner against fancy-regex (the same Unicode tables) and Python's `regex`."""

from __future__ import annotations

import unicodedata

import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from bpe_lm import _core

from reference_bpe import GPT2_PATTERN

TRICKY = " \t\n\r\x0b\x0c\x85\xa0\u2000\u3000\u2028'sdmtlvreSDMTLVRE0123456789.,!?-_\"éÀ中文Ж٣Ⅻ½😀\u200d\u0301\ufe0f"

any_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=60)
tricky_text = st.text(alphabet=st.sampled_from(TRICKY), max_size=60)
mixed_text = st.lists(st.one_of(any_text, tricky_text), max_size=4).map("".join)


def assigned_in_this_python(text: str) -> bool:
    """Characters unassigned in this Python's Unicode tables may be classed differently by `regex`."""
    return all(unicodedata.category(c) != "Cn" for c in text)


def test_pattern_constant_is_gpt2():
    assert _core.GPT2_PATTERN == GPT2_PATTERN


def test_examples():
    assert _core.pretokenize("Hello, world! I'll  go\n\n") == [
        "Hello",
        ",",
        " world",
        "!",
        " I",
        "'ll",
        " ",
        " go",
        "\n\n",
    ]
    assert _core.pretokenize("'S 's  123abc") == ["'", "S", " '", "s", " ", " 123", "abc"]


@settings(max_examples=400, deadline=None)
@given(mixed_text)
def test_scanner_equals_fancy_regex(text):
    assert _core.pretokenize(text) == _core.pretokenize(text, reference=True)


@settings(max_examples=300, deadline=None)
@given(mixed_text.filter(assigned_in_this_python))
def test_scanner_equals_python_regex(text):
    assert _core.pretokenize(text) == regex.findall(GPT2_PATTERN, text)


def test_pieces_cover_the_text():
    text = "Mixed: ÄÖÜ äöü ß, 中文字符, emoji 👩‍👩‍👧 and   spaces\t\ttabs\n"
    assert "".join(_core.pretokenize(text)) == text


def test_custom_pattern_falls_back_to_regex():
    assert _core.pretokenize("ab cd", pattern=r"\S+|\s+") == ["ab", " ", "cd"]
