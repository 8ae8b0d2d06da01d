"""The files of a tokenizer directory, as `bpe-lm train-tokenizer` and `Tokenizer.save` write it:
``vocab.json`` and ``merges.txt`` in the GPT-2 format (tokens as byte-to-unicode mapped strings) and
``tokenizer_config.json`` with the special tokens and the pre-tokenization pattern. Errors name the file
(and the line, for merges.txt). The token files `bpe-lm encode` writes are read by `token_files`: numpy is
not imported here, so loading and training a tokenizer never imports it."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from bpe_lm._core import GPT2_PATTERN
from bpe_lm._io import atomic_directory

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
CONFIG_FILE = "tokenizer_config.json"
CONFIG_FORMAT = "bpe-lm/byte-level-bpe"
MERGES_HEADER = "#version: 0.2"

PathLike = str | os.PathLike[str]


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 bytes to printable characters (so files hold no raw bytes)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


@lru_cache(maxsize=1)
def unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in bytes_to_unicode().items()}


def token_to_text(token: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


@lru_cache(maxsize=1)
def _translation() -> dict[int, int]:
    """`str.translate`'s table from GPT-2's byte characters to the latin-1 characters of their bytes; every
    other latin-1 character goes to U+FFFF, which latin-1 cannot encode (so no character passes unchecked)."""
    table = {ord(c): b for c, b in unicode_to_bytes().items()}
    return {**{x: 0xFFFF for x in range(256)}, **table}


def text_to_token(text: str, *, where: str = "") -> bytes:
    try:
        return _token_of(text)
    except UnicodeEncodeError:
        table = unicode_to_bytes()
        bad = next(c for c in text if c not in table)
        raise ValueError(f"{where}{text!r} holds {bad!r}, which is not a GPT-2 byte character") from None


def _token_of(text: str) -> bytes:
    """`text_to_token` in C, not a Python loop a character (loading GPT-2's 50K tokens and merges took 0.2 s
    that way); UnicodeEncodeError for a character that is not a GPT-2 byte character."""
    return text.translate(_translation()).encode("latin-1")


def write_gpt2_files(
    vocab: dict[int, bytes], merges: Sequence[tuple[bytes, bytes]], vocab_path: PathLike, merges_path: PathLike
) -> None:
    """Writes `vocab.json` ({mapped token: id}) and `merges.txt` (a header line, then `left right`)."""
    mapped: dict[str, int] = {}
    for i in sorted(vocab):
        key = token_to_text(vocab[i])
        if key in mapped:
            raise ValueError(
                f"tokens {mapped[key]} and {i} have the same bytes {vocab[i]!r}; the GPT-2 vocab.json format cannot hold both"
            )
        mapped[key] = i
    with open(vocab_path, "w", encoding="utf-8") as f:
        json.dump(mapped, f, ensure_ascii=False, indent=0)
        f.write("\n")
    with open(merges_path, "w", encoding="utf-8") as f:
        f.write(MERGES_HEADER + "\n")
        for left, right in merges:
            f.write(f"{token_to_text(left)} {token_to_text(right)}\n")


def read_json_object(path: PathLike) -> dict[str, Any]:
    """A JSON file holding an object; errors name the file (and the line)."""
    where = os.fspath(path)
    try:
        with open(where, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: not UTF-8 (byte offset {e.start})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object")
    return data


def read_gpt2_vocab(vocab_path: PathLike) -> dict[int, bytes]:
    path = os.fspath(vocab_path)
    raw = read_json_object(path)
    vocab: dict[int, bytes] = {}
    for text, idx in raw.items():
        if not isinstance(idx, int) or isinstance(idx, bool) or idx < 0:
            raise ValueError(f"{path}: token {text!r} has id {idx!r}, expected a non-negative integer")
        if idx in vocab:
            raise ValueError(f"{path}: id {idx} is used twice")
        vocab[idx] = text_to_token(text, where=f"{path}: token ")
    return vocab


def read_gpt2_merges(merges_path: PathLike) -> list[tuple[bytes, bytes]]:
    return _read_gpt2_merges_with_lines(merges_path)[0]


def _read_gpt2_merges_with_lines(merges_path: PathLike) -> tuple[list[tuple[bytes, bytes]], list[int]]:
    """The merges and the line number of each, for messages about a merge."""
    path = os.fspath(merges_path)
    merges: list[tuple[bytes, bytes]] = []
    lines: list[int] = []
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line or (lineno == 1 and line.startswith("#version")):
                    continue
                parts = line.split(" ")
                if len(parts) != 2 or not parts[0] or not parts[1]:
                    raise ValueError(f"{path}: line {lineno}: expected two tokens separated by one space, got {line!r}")
                try:
                    merges.append((_token_of(parts[0]), _token_of(parts[1])))
                except UnicodeEncodeError:  # worded by the checked path, with the line
                    where = f"{path}: line {lineno}: token "
                    merges.append((text_to_token(parts[0], where=where), text_to_token(parts[1], where=where)))
                lines.append(lineno)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 (byte offset {e.start})") from None
    return merges, lines


def save_tokenizer_dir(
    out_dir: PathLike,
    vocab: dict[int, bytes],
    merges: Sequence[tuple[bytes, bytes]],
    special_tokens: Sequence[str],
    pattern: str = GPT2_PATTERN,
    *,
    force: bool = False,
    extra: dict[str, Any] | None = None,
) -> None:
    """Writes a tokenizer directory atomically; with `force`, an existing directory keeps its other files
    and gets these three replaced."""

    def build(tmp: Path) -> list[str]:
        write_gpt2_files(vocab, merges, tmp / VOCAB_FILE, tmp / MERGES_FILE)
        config = {
            "format": CONFIG_FORMAT,
            "version": 1,
            "vocab_size": len(vocab),
            "num_merges": len(merges),
            "special_tokens": list(special_tokens),
            "pattern": pattern,
            **(extra or {}),
        }
        with open(tmp / CONFIG_FILE, "w", encoding="utf-8") as f:
            json.dump(config, f, ensure_ascii=False, indent=2)
            f.write("\n")
        return [VOCAB_FILE, MERGES_FILE, CONFIG_FILE]

    atomic_directory(out_dir, build, force=force)


def read_tokenizer_config(config_path: Path) -> tuple[list[str], str | None, int | None]:
    """The special tokens, pattern and recorded vocabulary size (None when absent) of a
    tokenizer_config.json, checked; its absence is an error, since without it "<|endoftext|>" in text would
    silently encode as plain bytes."""
    if not config_path.is_file():
        # Without it the special tokens are unknown, and "<|endoftext|>" would encode as plain bytes.
        raise FileNotFoundError(
            f"{config_path}: not found; it lists the special tokens (for a tokenizer without any, write "
            '{"special_tokens": []} to it)'
        )
    config = read_json_object(config_path)
    specials = config.get("special_tokens", [])
    if not isinstance(specials, list) or not all(isinstance(t, str) and t for t in specials):
        raise ValueError(
            f"{config_path}: special_tokens must be a list of non-empty strings, not {json.dumps(specials)[:100]}"
        )
    pattern = config.get("pattern")
    if pattern is not None and (not isinstance(pattern, str) or not pattern):
        raise ValueError(f"{config_path}: pattern must be a non-empty string (a regular expression)")
    vocab_size = config.get("vocab_size")
    if vocab_size is not None and (not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 1):
        raise ValueError(f"{config_path}: vocab_size must be a positive integer, not {json.dumps(vocab_size)[:40]}")
    return specials, pattern, vocab_size
