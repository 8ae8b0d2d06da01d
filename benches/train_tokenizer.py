"""Tokenizer-training throughput: bpe-lm vs HF tokenizers' BpeTrainer vs rustbpe, side by side.

Each trainer runs in a fresh subprocess (so peak RSS is its own) with the same thread count, on the same
decompressed text, to the same vocabulary size with the same special token. Prints a Markdown table.

    python benches/train_tokenizer.py                       # fairytales -> 10K, imdb -> 32K, 2 threads
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
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bpe_lm.pipeline import shared_data_dir

SHARED = shared_data_dir()
SPECIAL = "<|endoftext|>"


def worker(name: str, path: str, vocab: int, threads: int) -> dict:
    start = time.perf_counter()
    if name == "bpe-lm":
        import bpe_lm

        vocab_out, merges = bpe_lm.train_bpe(path, vocab, [SPECIAL], num_threads=threads)
        size = len(vocab_out)
    elif name == "hf-tokenizers":
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=[SPECIAL],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train([path], trainer)
        size = tok.get_vocab_size()
    elif name == "rustbpe":
        import rustbpe

        def documents():
            with open(path, encoding="utf-8") as f:
                doc: list[str] = []
                for line in f:
                    if line.strip() == SPECIAL:
                        yield "".join(doc)
                        doc = []
                    else:
                        doc.append(line)
                if doc:
                    yield "".join(doc)

        tok = rustbpe.Tokenizer()
        tok.train_from_iterator(documents(), vocab - 1)  # rustbpe has no special tokens
        size = tok.vocab_size + 1
    else:
        raise SystemExit(f"unknown trainer {name}")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "vocab": size}


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
    if scale_mb:
        target = int(scale_mb * 1e6)
        data = out.read_bytes()
        with open(out, "wb") as g:
            written = 0
            while written < target:
                g.write(data)
                written += len(data)
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
    ap.add_argument("--trainers", default="bpe-lm,hf-tokenizers,rustbpe")
    args = ap.parse_args()
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
    print(f"\nthreads: {args.threads}, best of {args.repeat}\n")
    print("| corpus | MB | vocab | trainer | seconds | MB/s | peak RSS MB | bpe-lm speedup |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mb, vocab, results in rows:
        ours = results.get("bpe-lm")
        for trainer, r in results.items():
            ratio = f"{r['seconds'] / ours['seconds']:.1f}×" if ours and trainer != "bpe-lm" else "—"
            print(
                f"| {name} | {mb:.0f} | {vocab} | {trainer} | {r['seconds']:.2f} | {mb / r['seconds']:.1f} | {r['peak_rss_mb']:.0f} | {ratio} |"
            )


if __name__ == "__main__":
    main()
