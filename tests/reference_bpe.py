"""A small, obviously-correct BPE trainer and encoder, written straight from CS336 §2.4–2.6, that the
fast Rust core must match exactly. Slow on purpose: no incremental bookkeeping to get wrong."""

from __future__ import annotations

from collections import Counter

import regex

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def split_on_specials(text: str, special_tokens: list[str]) -> list[str]:
    """Text between special tokens; at each place the longest special token matches."""
    if not special_tokens:
        return [text]
    alternation = "|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True))
    return regex.split(alternation, text)


def pretoken_counts(text: str, special_tokens: list[str]) -> Counter[bytes]:
    counts: Counter[bytes] = Counter()
    for segment in split_on_specials(text, special_tokens):
        for m in regex.finditer(GPT2_PATTERN, segment):
            counts[m.group().encode("utf-8")] += 1
    return counts


def train(text: str, vocab_size: int, special_tokens: list[str]) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    return train_on_counts(pretoken_counts(text, special_tokens), vocab_size, special_tokens)


def train_documents(
    documents: list[str], vocab_size: int, special_tokens: list[str]
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Records as documents: each pre-tokenized on its own, all of it text (special-token strings too)."""
    counts: Counter[bytes] = Counter()
    for doc in documents:
        counts.update(pretoken_counts(doc, []))
    return train_on_counts(counts, vocab_size, special_tokens)


def train_on_counts(
    counts: Counter[bytes], vocab_size: int, special_tokens: list[str]
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    vocab: dict[int, bytes] = {i: s.encode("utf-8") for i, s in enumerate(special_tokens)}
    for b in range(256):
        vocab[len(vocab)] = bytes([b])
    words: Counter[tuple[bytes, ...]] = Counter()
    for piece, count in counts.items():
        words[tuple(bytes([b]) for b in piece)] += count
    merges: list[tuple[bytes, bytes]] = []
    while len(vocab) < vocab_size:
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab[len(vocab)] = best[0] + best[1]
        merged: Counter[tuple[bytes, ...]] = Counter()
        for word, count in words.items():
            merged[merge_word(word, best)] += count
        words = merged
    return vocab, merges


def merge_word(word: tuple[bytes, ...], pair: tuple[bytes, bytes]) -> tuple[bytes, ...]:
    out: list[bytes] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(pair[0] + pair[1])
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def encode(
    text: str, vocab: dict[int, bytes], merges: list[tuple[bytes, bytes]], special_tokens: list[str]
) -> list[int]:
    """CS336 §2.6: split on specials (kept), pre-tokenize, apply each merge in order to each pre-token."""
    ids = {b: i for i, b in sorted(vocab.items(), reverse=True)}  # lowest id wins for equal bytes
    out: list[int] = []
    if special_tokens:
        alternation = "|".join(regex.escape(s) for s in sorted(special_tokens, key=len, reverse=True))
        parts = regex.split(f"({alternation})", text)
    else:
        parts = [text]
    for k, part in enumerate(parts):
        if k % 2 == 1:
            out.append(ids[part.encode("utf-8")])
            continue
        for m in regex.finditer(GPT2_PATTERN, part):
            word = tuple(bytes([b]) for b in m.group().encode("utf-8"))
            for pair in merges:
                if len(word) == 1:
                    break
                word = merge_word(word, pair)
            out.extend(ids[t] for t in word)
    return out
