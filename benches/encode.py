"""Encoding throughput: bpe-lm vs tiktoken, HF tokenizers, gigatoken and fastokens, side by side in one run.

For each corpus and each vocabulary (GPT-2's, and a 32K vocabulary trained by bpe-lm on the corpus):
  * one thread:  bpe-lm `encode` (list) and `encode_to_numpy`, tiktoken `encode_ordinary`
  * N threads:   bpe-lm `encode_batch` and `encode_to_numpy`, tiktoken `encode_ordinary_batch`,
                 HF tokenizers `encode_batch` (documents split on <|endoftext|>)
Every competitor's ids are checked against ours. gigatoken and fastokens (the fastest peers) run as
`benches/peers.py` runs them, for both vocabularies: each case in a fresh process pinned to its cores, the
tokenizer loaded from one tokenizer.json (bpe-lm's too), 1 thread with a list and with an array out, N threads
over 4 KB documents into one flat array; peak RSS from VmHWM. Then pathological inputs (one letter, one line
of digits, spaces) at growing sizes, to show encoding time stays linear.

Cold and warm are reported apart. bpe-lm remembers the pieces each thread has encoded, per tokenizer, across
calls: "cold" is the first call of a freshly built Tokenizer (what encoding a new corpus once costs), "warm"
the best of the following calls on the same text (what re-encoding it costs, memo included). The other
encoders keep nothing between calls; their cold and warm differ by noise and first-touch costs only.

    pip install ".[bench]"                        # tiktoken, HF tokenizers, gigatoken, fastokens
    python benches/encode.py                      # 8 MB of both corpora, 2 threads, 1 cold + 1 warm run
    python benches/encode.py --quick              # 2 MB of one corpus, pathological inputs to 1 MB
    python benches/encode.py --mb 20 --repeat 5   # larger: HF tokenizers' batch holds every encoding (GBs)
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


def cold_and_warm(make, run, repeat: int) -> tuple[float, float, object]:
    """(seconds of the first run on a fresh `make()`, best seconds of `repeat - 1` more runs on it, result)."""
    target = make()
    start = time.perf_counter()
    result = run(target)
    cold = time.perf_counter() - start
    warm, _ = best_time(lambda: run(target), max(repeat - 1, 1))
    return cold, warm, result


def fresh(tok):
    """A new bpe-lm Tokenizer with the same vocabulary: its per-thread caches start empty."""
    import bpe_lm

    return bpe_lm.Tokenizer(tok.vocab, tok.merges, tok.special_tokens, pattern=tok.pattern)


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


def fastest_peers(ours, text: str, label: str, tmp: Path, args) -> list[str]:
    """Table rows: bpe-lm, gigatoken and fastokens on `text` with `ours`' vocabulary, as `benches/peers.py`
    runs them (a fresh pinned process per case and encoder, all loading one tokenizer.json)."""
    import peers

    from bpe_lm.interop import export_hf

    tok_json = tmp / "peer-tokenizer.json"
    export_hf(ours, tok_json)
    path = tmp / "peer-text.txt"
    path.write_text(text, encoding="utf-8")
    mb = path.stat().st_size / 1e6
    rows = []
    for case in peers.CASES:
        threads = args.threads if case.startswith("N") else 1
        # The bytes case only for the encoders that take bytes (fastokens takes str only).
        encoders = [enc for enc in PEERS if case != peers.BYTES_CASE or enc in peers.TAKE_BYTES]
        runs = {enc: peers.one_run(threads, enc, case, path, tok_json, max(args.repeat, 2)) for enc in encoders}
        ours_run = runs["bpe-lm"]
        for enc, run in runs.items():
            if "error" in run:
                rows.append(f"| {label} | {case} | {enc} | failed: {run['error']} | | | | |")
                continue
            ratio = f"{ours_run['warm'] / run['warm']:.2f}×" if "error" not in ours_run else "—"
            same = "—" if enc == "bpe-lm" else ("yes" if run["ids"] == ours_run.get("ids") else "NO")
            rows.append(
                f"| {label} | {case} | {enc} | {mb / run['cold']:.1f} | {mb / run['warm']:.1f} | {ratio} |"
                f" {run['rss_mb']:.0f} | {same} |"
            )
            print(f"  {label} {case} {enc}: warm {mb / run['warm']:.1f} MB/s", file=sys.stderr)
    return rows


PEERS = ("bpe-lm", "gigatoken", "fastokens")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--corpus",
        action="append",
        help="corpus files (default: imdb.txt.gz and fairytales.txt.gz from ../shared/data)",
    )
    ap.add_argument("--mb", type=float, default=8.0, help="use only the first MB of each corpus (0: all of it)")
    ap.add_argument("--threads", type=int, default=THREADS_DEFAULT)
    ap.add_argument("--repeat", type=int, default=2, help="runs per encoder: 1 cold, the rest warm")
    ap.add_argument("--vocab", type=int, default=32000, help="size of the vocabulary trained by bpe-lm")
    ap.add_argument("--pathological-mb", type=float, default=4.0)
    ap.add_argument("--quick", action="store_true", help="--mb 2 --pathological-mb 1, the first corpus only")
    args = ap.parse_args()
    if args.quick:
        args.mb, args.pathological_mb = 2.0, 1.0
        args.corpus = (args.corpus or [str(SHARED / "imdb.txt.gz")])[:1]
    os.environ.setdefault("RAYON_RS_NUM_CPUS", str(args.threads))  # HF tokenizers' thread count
    corpora = [Path(c) for c in (args.corpus or [SHARED / "imdb.txt.gz", SHARED / "fairytales.txt.gz"])]
    rows: list[tuple[str, str, str, str, float, float, str]] = []
    peer_rows: list[str] = []
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

                def add(mode: str, impl: str, cold: float, warm: float, same: bool | None) -> None:
                    check = "—" if same is None else ("yes" if same else "NO")
                    rows.append((name, vocab_name, mode, impl, mb / cold, mb / warm, check))
                    print(
                        f"  {name} {vocab_name} {mode} {impl}: cold {mb / cold:.1f} MB/s, warm {mb / warm:.1f} MB/s"
                        f" (same ids: {check})",
                        file=sys.stderr,
                    )

                n, one = args.threads, "1 thread"
                many = f"{n} threads"
                cold, warm, ref = cold_and_warm(lambda: fresh(ours), lambda t: t.encode(ordinary_text), args.repeat)
                add(one, "bpe-lm encode", cold, warm, None)
                cold, warm, arr = cold_and_warm(
                    lambda: fresh(ours), lambda t: t.encode_to_numpy(ordinary_text, num_threads=1), args.repeat
                )
                add(one, "bpe-lm encode_to_numpy", cold, warm, arr.tolist() == ref)
                cold, warm, ids = cold_and_warm(lambda: tk, lambda t: t.encode_ordinary(ordinary_text), args.repeat)
                add(one, "tiktoken encode_ordinary", cold, warm, ids == ref)

                cold, warm, batch = cold_and_warm(
                    lambda: fresh(ours), lambda t: t.encode_batch(docs, num_threads=n), args.repeat
                )
                flat_ref = [i for d in batch for i in d]
                add(many, "bpe-lm encode_batch", cold, warm, None)
                cold, warm, arr = cold_and_warm(
                    lambda: fresh(ours), lambda t: t.encode_to_numpy(ordinary_text, num_threads=n), args.repeat
                )
                add(many, "bpe-lm encode_to_numpy", cold, warm, arr.tolist() == ref)
                cold, warm, batch = cold_and_warm(
                    lambda: tk, lambda t: t.encode_ordinary_batch(docs, num_threads=n), args.repeat
                )
                add(many, "tiktoken encode_ordinary_batch", cold, warm, [i for d in batch for i in d] == flat_ref)
                if hf is not None:
                    cold, warm, enc = cold_and_warm(
                        lambda: hf, lambda t: t.encode_batch(docs, add_special_tokens=False), args.repeat
                    )
                    add(many, "HF tokenizers encode_batch", cold, warm, [i for e in enc for i in e.ids] == flat_ref)
                peer_rows += fastest_peers(ours, ordinary_text, f"{name} | {vocab_name}", tmp, args)

        print(f"\n## Throughput (MB/s of UTF-8 text; cold: first run, warm: best of {max(args.repeat - 1, 1)} more)\n")
        print("| corpus | vocab | threads | encoder | cold MB/s | warm MB/s | ids equal bpe-lm |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.1f} | {r[5]:.1f} | {r[6]} |")

        print(
            f"\n## The fastest peers (MB/s; each run a fresh pinned process: cold = its first call, warm = best of"
            f" {max(args.repeat - 1, 1)} more; N = {args.threads})\n"
        )
        print(
            "| corpus | vocab | case | encoder | cold MB/s | warm MB/s | warm ÷ bpe-lm | peak RSS MB | ids equal bpe-lm |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(peer_rows))

        print("\n## Pathological inputs (GPT-2 vocab, bpe-lm encode_to_numpy, 1 thread)\n")
        ours = gpt2_tokenizers(tmp)[0]
        print("| input | MB | seconds | µs per KB |")
        print("|---|---|---|---|")
        full = args.pathological_mb
        for label, unit in (("one letter", "a"), ("one line of digits", "1234567890"), ("spaces", " ")):
            for frac in (0.25, 0.5, 1.0):
                size = int(full * frac * 1e6)
                text = (unit * (size // len(unit) + 1))[:size]
                new = fresh(ours)  # cold: no piece of this text seen before
                t, _ = best_time(lambda: new.encode_to_numpy(text, num_threads=1), 1)
                print(f"| {label} | {size / 1e6:.1f} | {t:.2f} | {t * 1e6 / (size / 1e3):.2f} |")


if __name__ == "__main__":
    main()
