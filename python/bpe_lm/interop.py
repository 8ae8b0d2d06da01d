"""Other tokenizer libraries' file formats: export to and import from HF `tokenizer.json` (byte-level BPE)
and tiktoken rank files (`base64(token) rank` lines). Exports are checked id for id by the tests.

Only byte-level BPE reads back: other model types (WordPiece, Unigram, WordLevel) and pipeline parts we do
not implement (normalizers, prefix spaces, byte fallback, subword prefixes) are refused with an error
rather than loaded into a tokenizer that would give wrong ids.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from bpe_lm._core import GPT2_PATTERN
from bpe_lm._io import atomic_write
from bpe_lm.formats import text_to_token, token_to_text

PathLike = str | os.PathLike[str]


class Vocabulary(Protocol):
    """What an export reads of a tokenizer (`bpe_lm.Tokenizer` has it); this module never builds one, so
    the tokenizer module can depend on it and not the other way round."""

    @property
    def vocab(self) -> dict[int, bytes]: ...
    @property
    def merges(self) -> list[tuple[bytes, bytes]]: ...
    @property
    def special_token_ids(self) -> dict[str, int]: ...

    pattern: str


class TokenizerParts(NamedTuple):
    """What a file in another library's format holds: `Tokenizer(*parts[:3], pattern=parts.pattern)`."""

    vocab: dict[int, bytes]
    merges: list[tuple[bytes, bytes]]
    special_tokens: list[str]
    pattern: str


def _mergeable_tokens(tok: Vocabulary) -> dict[int, bytes]:
    """Every id except special tokens', checked for duplicate bytes (no format can hold two ids for one
    byte string)."""
    specials = set(tok.special_token_ids.values())
    seen: dict[bytes, int] = {}
    out = {}
    for i, token in tok.vocab.items():
        if i in specials:
            continue
        if token in seen:
            raise ValueError(f"tokens {seen[token]} and {i} have the same bytes {token!r}; the format cannot hold both")
        seen[token] = i
        out[i] = token
    return out


# ---------------------------------------------------------------------------------------------------- HF


def to_hf_json(tok: Vocabulary) -> dict[str, Any]:
    """An HF `tokenizers` tokenizer.json that encodes exactly as `tok` does."""
    tokens = _mergeable_tokens(tok)
    vocab = {token_to_text(t): i for i, t in tokens.items()}
    # HF keeps an added token's id only when the model vocabulary holds its content at that id; otherwise
    # it renumbers it after the vocabulary. So special tokens go in both, under their plain text.
    for special, i in tok.special_token_ids.items():
        if special in vocab:
            raise ValueError(
                f"special token {special!r} reads like the byte-level form of token {vocab[special]}; tokenizer.json cannot hold both"
            )
        vocab[special] = i
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for s, i in tok.special_token_ids.items()
        ],
        "normalizer": None,
        "pre_tokenizer": _hf_pre_tokenizer(tok.pattern),
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[token_to_text(a), token_to_text(b)] for a, b in tok.merges],
        },
    }


def _hf_pre_tokenizer(pattern: str) -> dict[str, Any]:
    """The GPT-2 pattern as ByteLevel's own regex (its spelling of the same pattern, proven equal by the
    core's tests), which HF tokenizers and the encoders that load tokenizer.json recognise and run on their
    fast paths; any other pattern as a Split before ByteLevel."""
    if pattern == GPT2_PATTERN:
        return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    }


def export_hf(tok: Vocabulary, path: PathLike) -> None:
    atomic_write(path, json.dumps(to_hf_json(tok), ensure_ascii=False))


def _hf_pattern(pre: dict[str, Any] | None, where: str) -> str:
    """The pre-tokenization pattern an HF pre_tokenizer amounts to, if it is one we implement."""
    if pre is None:
        raise ValueError(f"{where}: no pre_tokenizer; bpe-lm reads byte-level BPE (ByteLevel pre-tokenizer) only")
    kind = pre.get("type")
    if kind == "ByteLevel":
        if pre.get("add_prefix_space"):
            raise ValueError(f"{where}: ByteLevel add_prefix_space=true is not supported")
        if not pre.get("use_regex", True):
            raise ValueError(f"{where}: ByteLevel without its regex and without a Split before it is not supported")
        return GPT2_PATTERN
    if kind == "Sequence":
        steps = pre.get("pretokenizers", [])
        if len(steps) == 2 and steps[0].get("type") == "Split" and steps[1].get("type") == "ByteLevel":
            split, byte_level = steps
            pattern = split.get("pattern", {})
            if "Regex" not in pattern or split.get("behavior") != "Isolated" or split.get("invert"):
                raise ValueError(f"{where}: only Split(Regex, behavior=Isolated) before ByteLevel is supported")
            if byte_level.get("use_regex") or byte_level.get("add_prefix_space"):
                raise ValueError(
                    f"{where}: after a Split, ByteLevel must have use_regex=false and add_prefix_space=false"
                )
            return pattern["Regex"]
        if len(steps) == 1:
            return _hf_pattern(steps[0], where)
    raise ValueError(f"{where}: pre_tokenizer {kind!r} is not supported (bpe-lm reads byte-level BPE only)")


def read_hf(path: PathLike) -> TokenizerParts:
    """Reads an HF tokenizer.json of byte-level BPE type."""
    where = os.fspath(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON (line {e.lineno}: {e.msg})") from None
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(
            f"{where}: model type {model.get('type')!r} is not supported (bpe-lm reads byte-level BPE only)"
        )
    if data.get("normalizer") is not None:
        raise ValueError(f"{where}: normalizer {data['normalizer'].get('type')!r} is not supported; ids would differ")
    for key in ("byte_fallback", "continuing_subword_prefix", "end_of_word_suffix", "dropout", "ignore_merges"):
        if model.get(key):
            raise ValueError(f"{where}: BPE option {key}={model[key]!r} is not supported")
    pattern = _hf_pattern(data.get("pre_tokenizer"), where)
    added_ids = {int(a["id"]) for a in data.get("added_tokens", [])}
    vocab = {
        int(i): text_to_token(t, where=f"{where}: vocab token ")
        for t, i in model["vocab"].items()
        if int(i) not in added_ids
    }
    merges = []
    for k, m in enumerate(model.get("merges", [])):
        left, right = m if isinstance(m, list) else m.split(" ")
        merges.append(
            (text_to_token(left, where=f"{where}: merge {k}: "), text_to_token(right, where=f"{where}: merge {k}: "))
        )
    specials = []
    for added in data.get("added_tokens", []):
        if not added.get("special"):
            raise ValueError(f"{where}: non-special added token {added.get('content')!r} is not supported")
        vocab[int(added["id"])] = added["content"].encode("utf-8")
        specials.append(added["content"])
    return TokenizerParts(vocab, merges, specials, pattern)


# ---------------------------------------------------------------------------------------------------- tiktoken


def export_tiktoken(tok: Vocabulary, path: PathLike) -> str:
    """Writes the rank file; returns the Python that builds the matching `tiktoken.Encoding`."""
    tokens = _mergeable_tokens(tok)
    atomic_write(path, "".join(f"{base64.b64encode(t).decode('ascii')} {i}\n" for i, t in sorted(tokens.items())))
    name = Path(path).stem
    return (
        "import tiktoken, tiktoken.load\n"
        f"enc = tiktoken.Encoding({name!r}, pat_str={tok.pattern!r},\n"
        f"    mergeable_ranks=tiktoken.load.load_tiktoken_bpe({os.fspath(path)!r}),\n"
        f"    special_tokens={tok.special_token_ids!r})"
    )


def read_tiktoken(
    path: PathLike, special_tokens: dict[str, int] | None = None, *, pattern: str = GPT2_PATTERN
) -> TokenizerParts:
    """Reads a tiktoken rank file. The merges are recovered from the ranks: each token's merge is the pair
    that tiktoken's own procedure (lowest-ranked concatenation first, among lower ranks) leaves it as."""
    where = os.fspath(path)
    ranks: dict[bytes, int] = {}
    try:
        lines = Path(path).read_text(encoding="ascii").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file") from None
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not a tiktoken rank file (non-ASCII content)") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
        except (ValueError, IndexError):
            raise ValueError(f"{where}: line {lineno}: expected 'base64-token rank', got {line[:60]!r}") from None
        ranks[token] = rank
    vocab = {rank: token for token, rank in ranks.items()}
    for s, i in (special_tokens or {}).items():
        if i in vocab:
            raise ValueError(f"{where}: special token {s!r} has id {i}, which a mergeable token already uses")
        vocab[i] = s.encode("utf-8")
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        pieces = [bytes([b]) for b in token]
        while len(pieces) > 2:
            best = None
            for k in range(len(pieces) - 1):
                r = ranks.get(pieces[k] + pieces[k + 1])
                if r is not None and r < rank and (best is None or r < best[0]):
                    best = (r, k)
            if best is None:
                break
            k = best[1]
            pieces[k : k + 2] = [pieces[k] + pieces[k + 1]]
        if len(pieces) != 2 or pieces[0] not in ranks or pieces[1] not in ranks:
            raise ValueError(f"{where}: token {token!r} (rank {rank}) cannot be built from lower-ranked tokens")
        merges.append((pieces[0], pieces[1]))
    return TokenizerParts(vocab, merges, list((special_tokens or {}).keys()), pattern)
