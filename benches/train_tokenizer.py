"""Tokenizer-training throughput: bpe-lm vs gigatoken vs HF tokenizers' BpeTrainer vs rustbpe, side by side.

Equal work: each trainer runs in a fresh subprocess (so peak RSS is its own), with the same thread count, on
the same decompressed text, split into the same documents (at every "<|endoftext|>", which is never counted),
pre-tokenized with the same GPT-2 pattern (HF: ByteLevel's regex, which is GPT-2's; rustbpe: given the pattern,
as its default is GPT-4's), to the same vocabulary size. bpe-lm reads the file itself; HF tokenizers and rustbpe
get the documents from one streaming Python splitter (their iterator APIs); gigatoken reads the file and splits
it at the special token itself. HF tokenizers also runs once on
the file itself ("hf-tokenizers-files", its fastest path, which reads every line as a sequence and counts
"<|endoftext|>" as text: close to, not exactly, the same work). The clock starts after the imports.
Prints a Markdown table, and checks that the three vocabularies share most of their tokens (ties are broken
differently: only bpe-lm follows CS336's rule, so they are not identical).

    pip install ".[bench]"                                  # gigatoken, HF tokenizers, rustbpe
    python benches/train_tokenizer.py                       # fairytales -> 10K, imdb -> 32K, 2 threads
    python benches/train_tokenizer.py --quick               # fairytales -> 10K, bpe-lm and gigatoken only
    python benches/train_tokenizer.py --threads 1 --repeat 3
    python benches/train_tokenizer.py --corpus big.txt:32000 --scale-mb 300

`--scale-mb` concatenates the corpus with itself up to that size: a throughput and memory check that
underestimates the distinct pre-tokens of real text of that size.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bpe_lm.cli.common import peak_rss_mb  # the process's own peak (VmHWM), not its parent's
from bpe_lm.pipeline import shared_data_dir

SHARED = shared_data_dir()
SPECIAL = "<|endoftext|>"


def documents(path: str, block_chars: int = 1 << 20):
    """The documents of a text file, split at every special token (removed), streamed in blocks."""
    with open(path, encoding="utf-8") as f:
        rest = ""
        while block := f.read(block_chars):
            parts = (rest + block).split(SPECIAL)
            rest = parts.pop()
            yield from parts
        yield rest


def worker(name: str, path: str, vocab: int, threads: int) -> dict:
    if name == "bpe-lm":
        import bpe_lm

        start = time.perf_counter()
        vocab_out, _ = bpe_lm.train_bpe(path, vocab, [SPECIAL], num_threads=threads)
        tokens = [t for t in vocab_out.values() if t != SPECIAL.encode()]
    elif name in ("hf-tokenizers", "hf-tokenizers-files"):
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        from bpe_lm.formats import bytes_to_unicode

        start = time.perf_counter()
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=[SPECIAL],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        if name == "hf-tokenizers":
            tok.train_from_iterator(documents(path), trainer)
        else:  # its own file reader, faster: every line a sequence, "<|endoftext|>" counted as text
            tok.train([path], trainer)
        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        tokens = [bytes(byte_of[c] for c in t) for t in tok.get_vocab() if t != SPECIAL]
    elif name == "gigatoken":
        import gigatoken

        start = time.perf_counter()
        vocab_out, _ = gigatoken.train_bpe(path, vocab, [SPECIAL], separator=SPECIAL.encode())
        tokens = [t for t in vocab_out.values() if t != SPECIAL.encode()]
    elif name == "rustbpe":
        import rustbpe

        import bpe_lm

        start = time.perf_counter()
        tok = rustbpe.Tokenizer()
        tok.train_from_iterator(documents(path), vocab - 1, pattern=bpe_lm.GPT2_PATTERN)  # no special tokens
        tokens = [t for t, _ in tok.get_mergeable_ranks()]
    else:
        raise SystemExit(f"unknown trainer {name}")
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_rss_mb(),
        "vocab": len(tokens) + 1,
        "tokens": [t.hex() for t in tokens],
    }


def run_one(name: str, path: str, vocab: int, threads: int) -> dict | None:
    env = dict(
        os.environ, RAYON_NUM_THREADS=str(threads), RAYON_RS_NUM_CPUS=str(threads), TOKENIZERS_PARALLELISM="true"
    )
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", name, path, str(vocab), str(threads)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {name}: failed ({last})", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def prepare(corpus: str, scale_mb: float | None, tmp: Path) -> Path:
    src = Path(corpus)
    if not src.exists():
        src = SHARED / corpus
    if not src.exists():
        raise SystemExit(f"{corpus}: not found (looked in . and {SHARED})")
    out = tmp / (src.name.removesuffix(".gz"))
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rb") as f, open(out, "wb") as g:
        shutil.copyfileobj(f, g)
    if scale_mb:  # repeated by streaming copies, so this process stays small
        target = int(scale_mb * 1e6)
        single = out.with_suffix(".once")
        out.rename(single)
        with open(out, "wb") as g:
            while g.tell() < target:
                with open(single, "rb") as f:
                    shutil.copyfileobj(f, g, 1 << 22)
        single.unlink()
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        name, path, vocab, threads = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        print(json.dumps(worker(name, path, vocab, threads)))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--corpus",
        action="append",
        metavar="FILE:VOCAB",
        help="corpus and vocab size (repeatable); default fairytales.txt.gz:10000 and imdb.txt.gz:32000",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="runs per trainer; the best time is reported")
    ap.add_argument("--scale-mb", type=float, default=None, help="repeat the corpus up to this many MB")
    ap.add_argument(
        "--trainers",
        default="bpe-lm,gigatoken,hf-tokenizers,hf-tokenizers-files,rustbpe",
        help="hf-tokenizers-files: HF training from the file itself (per-line sequences; not the same split)",
    )
    ap.add_argument("--quick", action="store_true", help="fairytales -> 10K with bpe-lm and gigatoken only")
    args = ap.parse_args()
    if args.quick:
        args.corpus, args.trainers = args.corpus or ["fairytales.txt.gz:10000"], "bpe-lm,gigatoken"
    corpora = args.corpus or ["fairytales.txt.gz:10000", "imdb.txt.gz:32000"]
    trainers = args.trainers.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for spec in corpora:
            corpus, vocab = spec.rsplit(":", 1)
            path = prepare(corpus, args.scale_mb, Path(tmpdir))
            mb = path.stat().st_size / 1e6
            results = {}
            for name in trainers:
                runs = [
                    r for r in (run_one(name, str(path), int(vocab), args.threads) for _ in range(args.repeat)) if r
                ]
                if runs:
                    results[name] = min(runs, key=lambda r: r["seconds"])
                    r = results[name]
                    print(
                        f"  {path.name} -> {vocab}: {name} {r['seconds']:.2f} s, {r['peak_rss_mb']:.0f} MB",
                        file=sys.stderr,
                    )
            rows.append((path.name, mb, vocab, results))
            path.unlink()
            # Same work, checked: the vocabularies agree but for tie-breaking near the end.
            ours = set(results.get("bpe-lm", {}).get("tokens", []))
            for trainer, r in results.items():
                if trainer != "bpe-lm" and ours:
                    shared = len(ours & set(r["tokens"])) / len(ours)
                    print(
                        f"  {trainer}: {100 * shared:.1f}% of bpe-lm's tokens also in its vocabulary", file=sys.stderr
                    )
                    if shared < 0.9:
                        raise SystemExit(
                            f"{trainer} learned a different vocabulary ({100 * shared:.1f}% shared): not the same work"
                        )
                    r["shared"] = shared
    print(f"\nthreads: {args.threads}, best of {args.repeat}\n")
    print(
        "| corpus | MB | vocab | trainer | seconds | MB/s | peak RSS MB | bpe-lm speedup | tokens shared with bpe-lm |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, mb, vocab, results in rows:
        ours = results.get("bpe-lm")
        for trainer, r in results.items():
            ratio = f"{r['seconds'] / ours['seconds']:.1f}×" if ours and trainer != "bpe-lm" else "—"
            shared = f"{100 * r['shared']:.1f}%" if "shared" in r else "—"
            print(
                f"| {name} | {mb:.0f} | {vocab} | {trainer} | {r['seconds']:.2f} | {mb / r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {ratio} | {shared} |"
            )


if __name__ == "__main__":
    main()
