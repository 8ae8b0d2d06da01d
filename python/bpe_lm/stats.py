"""`bpe-lm tokenizer-stats`: compare tokenizers on corpora — compression, throughput, vocabulary use,
longest tokens, vocabulary overlap and id dtype — on a seeded random sample of documents."""

from __future__ import annotations

import math
import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bpe_lm.readers import DEFAULT_TEXT_FIELD, detect, iter_documents
from bpe_lm.readers import END_OF_TEXT as EOT
from bpe_lm.tokenizer import Tokenizer
from bpe_lm.units import format_duration, shown_token

_SIZE = re.compile(r"^\s*([0-9.]+)\s*([KMGTP]?)B?\s*$", re.IGNORECASE)


def parse_size(text: str) -> float:
    """'825GB' -> bytes (decimal units, as dataset sizes are quoted)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"size {text!r}: expected a number with an optional K/M/G/T/P unit, e.g. 825GB")
    return float(m.group(1)) * 1000 ** " KMGTP".index(m.group(2).upper() or " ")


# Documents are cut to this many characters for the statistics, so one enormous document (a file without
# separators) costs memory near this, not its size.
MAX_DOCUMENT_CHARS = 1 << 20


def documents(
    path: str | os.PathLike[str], text_field: str = DEFAULT_TEXT_FIELD, errors: str = "strict"
) -> Iterator[str]:
    """The documents of a corpus file, streamed: records' texts, or text split on <|endoftext|>; each cut
    to MAX_DOCUMENT_CHARS. `errors` as for `readers.iter_documents`."""
    return iter_documents(detect(path), text_field, EOT, MAX_DOCUMENT_CHARS, errors)


def sample_documents(
    path: str | os.PathLike[str], k: int, seed: int, text_field: str = DEFAULT_TEXT_FIELD, errors: str = "strict"
) -> list[str]:
    """A uniform sample of k documents (reservoir sampling: one pass, memory for k documents)."""
    rng = random.Random(seed)
    sample: list[str] = []
    for n, doc in enumerate(documents(path, text_field, errors)):
        if n < k:
            sample.append(doc)
        else:
            j = rng.randrange(n + 1)
            if j < k:
                sample[j] = doc
    return sample


# Throughput is measured the way a long `bpe-lm encode` runs: warm (thread pool started, per-thread piece caches
# filled by WARM_BYTES of text) and on text it has not seen (the next TIMED_BYTES), never on the sample used for
# compression, which a warm cache would have memorised.
WARM_BYTES = 1_000_000
TIMED_BYTES = 4_000_000


def timing_documents(
    path: str | os.PathLike[str],
    warm_bytes: int = WARM_BYTES,
    timed_bytes: int = TIMED_BYTES,
    text_field: str = DEFAULT_TEXT_FIELD,
    errors: str = "strict",
) -> tuple[list[str], list[str]]:
    """The corpus's first documents: about `warm_bytes` of them to warm up on, then about `timed_bytes` to
    time. A smaller corpus is split in the same proportion (a fifth to warm up on, by default)."""
    docs: list[str] = []
    sizes: list[int] = []
    total = 0
    for doc in documents(path, text_field, errors):
        docs.append(doc)
        sizes.append(len(doc.encode("utf-8")))
        total += sizes[-1]
        if total >= warm_bytes + timed_bytes:
            break
    warm_share = min(warm_bytes, total * warm_bytes // (warm_bytes + timed_bytes))
    split, size = 0, 0
    while split < len(docs) - 1 and size < warm_share:
        size += sizes[split]
        split += 1
    return docs[:split], docs[split:]


def encoding_speed(
    tok: Tokenizer, warm: list[str], timed: list[str], num_threads: int | None = None
) -> tuple[float, int]:
    """(MB/s, bytes timed): encodes `warm` untimed, then times `timed`, each joined as in the corpus file and
    encoded the way `bpe-lm encode` does (cut at safe places, the parts in parallel)."""
    if warm:
        tok.encode_to_numpy(EOT.join(warm), num_threads=num_threads)
    text = EOT.join(timed)
    n_bytes = len(text.encode("utf-8"))
    start = time.perf_counter()
    tok.encode_to_numpy(text, num_threads=num_threads)
    seconds = time.perf_counter() - start
    return (n_bytes / 1e6 / seconds if seconds > 0 else math.inf), n_bytes


def tokenizer_corpus_stats(
    tok: Tokenizer,
    docs: list[str],
    timing: tuple[list[str], list[str]],
    project_bytes: float,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Compression and vocabulary use on the sampled `docs`; speed on `timing` (warm-up, timed documents,
    from `timing_documents`), measured first, so the sample's pieces are not in the caches yet."""
    import numpy as np

    mb_s, timed_bytes = encoding_speed(tok, *timing, num_threads=num_threads)
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    # One array of ids at a time (4 bytes a token, not a Python list's 8 and more): memory stays near the
    # largest document, however many tokens the sample holds.
    seen = np.zeros(tok.vocab_size, dtype=bool)
    n_tokens = 0
    for doc in docs:
        ids = tok.encode_to_numpy(doc, dtype="uint32", num_threads=num_threads)
        seen[ids] = True
        n_tokens += len(ids)
    used = np.flatnonzero(seen)
    return {
        "documents": len(docs),
        "bytes": n_bytes,
        "tokens": n_tokens,
        "bytes_per_token": n_bytes / n_tokens if n_tokens else math.nan,
        "tokens_per_document": n_tokens / len(docs) if docs else math.nan,
        "mb_per_s": mb_s,
        "timed_bytes": timed_bytes,
        "projected_seconds": project_bytes / (mb_s * 1e6) if project_bytes and mb_s > 0 else None,
        "vocab_used": len(used) / tok.vocab_size,
    }


def tokenizer_summary(tok: Tokenizer, top: int = 5) -> dict[str, Any]:
    specials = set(tok.special_token_ids.values())
    longest = sorted((t for i, t in tok.vocab.items() if i not in specials), key=len, reverse=True)[:top]
    return {
        "vocab_size": tok.vocab_size,
        "dtype": "uint16" if tok.vocab_size <= 1 << 16 else "uint32",
        "longest_tokens": [t.decode("utf-8", errors="replace") for t in longest],
    }


def vocab_overlap(a: Tokenizer, b: Tokenizer) -> dict[str, float]:
    ta, tb = set(a.vocab.values()), set(b.vocab.values())
    shared = len(ta & tb)
    return {
        "shared_tokens": shared,
        "jaccard": shared / len(ta | tb),
        "share_of_first": shared / len(ta),
        "share_of_second": shared / len(tb),
    }


def compare(
    tokenizers: dict[str, Tokenizer],
    corpora: list[str],
    docs: int,
    seed: int,
    project_bytes: float,
    num_threads: int | None = None,
    text_field: str = DEFAULT_TEXT_FIELD,
    errors: str = "strict",
) -> dict[str, Any]:
    samples = {c: sample_documents(c, docs, seed, text_field, errors) for c in corpora}
    for c, s in samples.items():
        if not s:
            raise ValueError(f"{c}: no documents")
    timing = {c: timing_documents(c, text_field=text_field, errors=errors) for c in corpora}
    results: dict[str, Any] = {
        "tokenizers": {name: tokenizer_summary(tok) for name, tok in tokenizers.items()},
        "pairs": [
            {
                "tokenizer": name,
                "corpus": c,
                **tokenizer_corpus_stats(tok, samples[c], timing[c], project_bytes, num_threads),
            }
            for name, tok in tokenizers.items()
            for c in corpora
        ],
        "overlap": [],
        "docs": docs,
        "seed": seed,
        "project_bytes": project_bytes,
    }
    names = list(tokenizers)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            results["overlap"].append(
                {"first": names[i], "second": names[j], **vocab_overlap(tokenizers[names[i]], tokenizers[names[j]])}
            )
    return results


def render(results: dict[str, Any]) -> str:
    proj = results["project_bytes"]
    sizes = sorted({round(r["timed_bytes"] / 1e6, 1) for r in results["pairs"]})
    timed = f"{sizes[0]:g}" if len(sizes) == 1 else f"{sizes[0]:g}–{sizes[-1]:g}"
    lines = [
        f"sample: {results['docs']} documents per corpus (seed {results['seed']}); MB/s: warm, timed on {timed} MB of "
        f"each corpus that follow its first {WARM_BYTES / 1e6:g} MB (the warm-up); documents cut at {MAX_DOCUMENT_CHARS:,} characters",
        "",
        f"| tokenizer | corpus | bytes/token | tokens/doc | vocab used | MB/s | time for {proj / 1e9:g} GB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["pairs"]:
        lines.append(
            f"| {r['tokenizer']} | {Path(r['corpus']).name} | {r['bytes_per_token']:.2f} | {r['tokens_per_document']:.0f} | "
            f"{100 * r['vocab_used']:.1f}% | {r['mb_per_s']:.1f} | {format_duration(r['projected_seconds'])} |"
        )
    lines += ["", "| tokenizer | vocab | ids fit | longest tokens |", "|---|---|---|---|"]
    for name, t in results["tokenizers"].items():
        longest = ", ".join(shown_token(s.encode("utf-8")) for s in t["longest_tokens"][:3])
        lines.append(f"| {name} | {t['vocab_size']} | {t['dtype']} | {longest} |")
    if results["overlap"]:
        lines += ["", "| first | second | shared tokens | Jaccard |", "|---|---|---|---|"]
        for o in results["overlap"]:
            lines.append(f"| {o['first']} | {o['second']} | {o['shared_tokens']} | {o['jaccard']:.3f} |")
    return "\n".join(lines)
