"""Encoding throughput: bpe-lm vs tiktoken vs HF tokenizers, side by side in one run.

For each corpus and each vocabulary (GPT-2's, and a 32K vocabulary trained by bpe-lm on the corpus):
  * one thread:  bpe-lm `encode` (list) and `encode_to_numpy`, tiktoken `encode_ordinary`
  * N threads:   bpe-lm `encode_batch` and `encode_to_numpy`, tiktoken `encode_ordinary_batch`,
                 HF tokenizers `encode_batch` (documents split on <|endoftext|>)
Every competitor's ids are checked against ours. Then pathological inputs (one letter, one line of
digits, spaces) at growing sizes, to show encoding time stays linear.

    python benches/encode.py                      # both corpora, 2 threads, best of 3
    python benches/encode.py --mb 20 --repeat 5
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

from bpe_lm.pipeline import shared_data_dir

THREADS_DEFAULT = 2
SHARED = shared_data_dir()
EOT = "<|endoftext|>"


def best_time(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def gpt2_tokenizers(tmp: Path):
    import tiktoken
    import tiktoken.load

    import bpe_lm

    merges = SHARED / "gpt2" / "merges.txt"
    vocab = SHARED / "gpt2" / "vocab.json"
    with_header = tmp / "vocab.bpe"
    with_header.write_text("#version: 0.2\n" + merges.read_text(encoding="utf-8"), encoding="utf-8")
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(with_header), encoder_json_file=str(vocab))
    tk = tiktoken.Encoding("gpt2", pat_str=bpe_lm.GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})
    ours = bpe_lm.Tokenizer.from_files(vocab, merges, [EOT])
    return ours, tk, hf_from_files(vocab, merges)


def hf_from_files(vocab: Path, merges: Path):
    try:
        from tokenizers import Tokenizer, models, pre_tokenizers
    except ImportError:
        return None
    hf = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    return hf


def trained_tokenizers(corpus: Path, tmp: Path, vocab_size: int):
    import tiktoken

    import bpe_lm

    start = time.perf_counter()
    vocab, merges = bpe_lm.train_bpe(corpus, vocab_size, [EOT])
    print(f"  trained {vocab_size} tokens on {corpus.name} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    ours = bpe_lm.Tokenizer(vocab, merges, [EOT])
    out = tmp / f"tok-{corpus.stem}"
    ours.save(out, force=True)
    ranks = {token: i for i, token in vocab.items() if i != 0}
    tk = tiktoken.Encoding(
        f"bpe-lm-{vocab_size}", pat_str=bpe_lm.GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 0}
    )
    return ours, tk, hf_from_files(out / "vocab.json", out / "merges.txt")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--corpus",
        action="append",
        help="corpus files (default: imdb.txt.gz and fairytales.txt.gz from ../shared/data)",
    )
    ap.add_argument("--mb", type=float, default=None, help="use only the first MB of each corpus")
    ap.add_argument("--threads", type=int, default=THREADS_DEFAULT)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--vocab", type=int, default=32000, help="size of the vocabulary trained by bpe-lm")
    ap.add_argument("--pathological-mb", type=float, default=10.0)
    args = ap.parse_args()
    os.environ.setdefault("RAYON_RS_NUM_CPUS", str(args.threads))  # HF tokenizers' thread count
    corpora = [Path(c) for c in (args.corpus or [SHARED / "imdb.txt.gz", SHARED / "fairytales.txt.gz"])]
    rows: list[tuple[str, str, str, str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for corpus in corpora:
            with (
                gzip.open(corpus, "rt", encoding="utf-8") if corpus.suffix == ".gz" else open(corpus, encoding="utf-8")
            ) as f:
                text = f.read(int(args.mb * 1e6)) if args.mb else f.read()
            plain = tmp / corpus.name.removesuffix(".gz")
            plain.write_text(text, encoding="utf-8")
            mb = len(text.encode("utf-8")) / 1e6
            docs = [d for d in text.split(EOT)]
            ordinary_text = "".join(docs)  # tiktoken's encode_ordinary does not split on specials
            for vocab_name, (ours, tk, hf) in (
                ("gpt2", gpt2_tokenizers(tmp)),
                (f"ours-{args.vocab // 1000}K", trained_tokenizers(plain, tmp, args.vocab)),
            ):
                name = corpus.name.removesuffix(".txt.gz")

                def add(mode: str, impl: str, seconds: float, same: bool | None) -> None:
                    check = "—" if same is None else ("yes" if same else "NO")
                    rows.append((name, vocab_name, mode, impl, mb / seconds, check))
                    print(
                        f"  {name} {vocab_name} {mode} {impl}: {mb / seconds:.1f} MB/s (same ids: {check})",
                        file=sys.stderr,
                    )

                t, ref = best_time(lambda: ours.encode(ordinary_text), args.repeat)
                add("1 thread", "bpe-lm encode", t, None)
                t, arr = best_time(lambda: ours.encode_to_numpy(ordinary_text, num_threads=1), args.repeat)
                add("1 thread", "bpe-lm encode_to_numpy", t, arr.tolist() == ref)
                t, ids = best_time(lambda: tk.encode_ordinary(ordinary_text), args.repeat)
                add("1 thread", "tiktoken encode_ordinary", t, ids == ref)

                t, batch = best_time(lambda: ours.encode_batch(docs, num_threads=args.threads), args.repeat)
                flat_ref = [i for d in batch for i in d]
                add(f"{args.threads} threads", "bpe-lm encode_batch", t, None)
                t, arr = best_time(lambda: ours.encode_to_numpy(ordinary_text, num_threads=args.threads), args.repeat)
                add(f"{args.threads} threads", "bpe-lm encode_to_numpy", t, arr.tolist() == ref)
                t, batch = best_time(lambda: tk.encode_ordinary_batch(docs, num_threads=args.threads), args.repeat)
                add(
                    f"{args.threads} threads",
                    "tiktoken encode_ordinary_batch",
                    t,
                    [i for d in batch for i in d] == flat_ref,
                )
                if hf is not None:
                    t, enc = best_time(lambda: hf.encode_batch(docs, add_special_tokens=False), args.repeat)
                    add(
                        f"{args.threads} threads",
                        "HF tokenizers encode_batch",
                        t,
                        [i for e in enc for i in e.ids] == flat_ref,
                    )

        print(f"\n## Throughput (MB/s of UTF-8 text, best of {args.repeat})\n")
        print("| corpus | vocab | threads | encoder | MB/s | ids equal bpe-lm |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.1f} | {r[5]} |")

        print("\n## Pathological inputs (GPT-2 vocab, bpe-lm encode_to_numpy, 1 thread)\n")
        ours = gpt2_tokenizers(tmp)[0]
        print("| input | MB | seconds | µs per KB |")
        print("|---|---|---|---|")
        full = args.pathological_mb
        for label, unit in (("one letter", "a"), ("one line of digits", "1234567890"), ("spaces", " ")):
            for frac in (0.25, 0.5, 1.0):
                size = int(full * frac * 1e6)
                text = (unit * (size // len(unit) + 1))[:size]
                t, _ = best_time(lambda: ours.encode_to_numpy(text, num_threads=1), 1)
                print(f"| {label} | {size / 1e6:.1f} | {t:.2f} | {t * 1e6 / (size / 1e3):.2f} |")


if __name__ == "__main__":
    main()
