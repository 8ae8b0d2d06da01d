"""Encoding throughput against the fastest peers: bpe-lm vs gigatoken, fastokens and tiktoken, GPT-2 vocabulary.

Every run is a fresh process pinned to the first N cores (os.sched_setaffinity before any import) with
RAYON_NUM_THREADS=N, so "cold" really is a first call in a new process (empty caches, first-touch page
faults, the str's UTF-8 form not yet made); "warm" is the best of the following calls on the same text in
that process. The clock starts after imports and after the tokenizer is loaded. Each run's ids are hashed
and compared with tiktoken's `gpt2` ids for the same input (tiktoken itself runs as a peer too); peak RSS is
the process's VmHWM. Ratios are peer ÷ bpe-lm (above 1: the peer is faster), taken from runs interleaved
round by round so machine load hits all encoders alike.

Cases: 1 thread with a Python list out (bpe-lm `encode_ordinary`, gigatoken `encode(...).tolist()`,
fastokens `encode_ordinary(...).ids`, tiktoken `encode_ordinary`), 1 thread with an array out (bpe-lm
`encode_to_numpy`, gigatoken `encode`, fastokens `encode_batch_flat` of the one text), the same from the
file's UTF-8 bytes (bpe-lm and gigatoken take bytes; the others str only), and N threads over documents of about
4 KB (cut before a space) with one flat array out (bpe-lm `encode_batch_to_numpy`, gigatoken `encode_batch`
flattened, fastokens `encode_batch_flat`, tiktoken `encode_ordinary_batch` joined); the same over short texts
of about 128 characters (cut before white space: the size of sentences and chat turns, where each text's own
costs count).

    pip install ".[bench]"                     # tiktoken, gigatoken, fastokens
    python benches/peers.py                    # 4 corpora x 5 cases, 1 round: about 2 min 10 s, < 1 GB
    python benches/peers.py --quick            # 10 MB of English only: about 20 s
    python benches/peers.py --rounds 3 --calls 3 --threads 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bpe_lm.pipeline import shared_data_dir

SHARED = shared_data_dir()
EOT = "<|endoftext|>"
CORPORA = {
    "English books": ("fairytales.txt.gz", 20.0),
    "web reviews": ("imdb.txt.gz", 20.0),
    "Russian": ("multilingual/stories_ru.txt.gz", 20.0),
    "Chinese": ("multilingual/poems_zh.txt.gz", 4.0),
}
ENCODERS = ("bpe-lm", "gigatoken", "fastokens", "tiktoken")
# The case only some encoders have (fastokens and tiktoken take str only): their rows are left out.
BYTES_CASE = "1 thread, array, UTF-8 bytes in"
TAKE_BYTES = ("bpe-lm", "gigatoken")
CASES = (
    "1 thread, list",
    "1 thread, array",
    BYTES_CASE,
    "N threads, 4 KB documents, flat array",
    "N threads, 128-character texts, flat array",
)
DOC_BYTES = 4096

# One run: load the encoder, then time `calls` calls of one case on one text; print a JSON line.
WORKER = r"""
import hashlib, json, os, sys, time
threads, enc_name, case, text_path, tok_json, gpt2_dir, calls = sys.argv[1:8]
threads, calls = int(threads), int(calls)
text = open(text_path, encoding="utf-8").read()
data = open(text_path, "rb").read()  # the same text as UTF-8 bytes, for the bytes case
import numpy as np

def cut_before(text, size, stop):
    # Pieces of `text` of at least `size` characters, each cut where the pattern `stop` next matches.
    import re
    stop, out, at = re.compile(stop), [], 0
    while at < len(text):
        found = stop.search(text, at + size)
        cut = found.start() if found else len(text)
        out.append(text[at:cut])
        at = cut
    return out

if case.startswith("N threads"):
    # 4 KB documents cut before a space; short texts before any white space.
    docs = cut_before(text, 128, r"\s") if "128" in case else cut_before(text, int(sys.argv[8]), " ")
else:
    docs = None
if enc_name == "bpe-lm":
    import bpe_lm
    tok = bpe_lm.Tokenizer.from_hf(tok_json)  # the very file the peers load
    run = {
        "1 thread, list": lambda: tok.encode_ordinary(text),
        "1 thread, array": lambda: tok.encode_to_numpy(text, np.uint32, num_threads=1),
        "1 thread, array, UTF-8 bytes in": lambda: tok.encode_to_numpy(data, np.uint32, num_threads=1),
        "batch": lambda: tok.encode_batch_to_numpy(docs, np.uint32, num_threads=threads)[0],
    }
elif enc_name == "gigatoken":
    import awkward, gigatoken
    tok = gigatoken.Tokenizer(tok_json)
    run = {
        "1 thread, list": lambda: tok.encode(text).tolist(),
        "1 thread, array": lambda: tok.encode(text),
        "1 thread, array, UTF-8 bytes in": lambda: tok.encode(data),
        "batch": lambda: np.asarray(awkward.flatten(tok.encode_batch(docs)), np.uint32),
    }
elif enc_name == "fastokens":
    import fastokens
    tok = fastokens.Tokenizer.from_file(tok_json)
    run = {
        "1 thread, list": lambda: tok.encode_ordinary(text).ids,
        "1 thread, array": lambda: np.frombuffer(tok.encode_batch_flat([text])[0], np.uint32),
        "batch": lambda: np.frombuffer(tok.encode_batch_flat(docs)[0], np.uint32),
    }
else:
    import tiktoken, tiktoken.load, tempfile, pathlib
    with tempfile.TemporaryDirectory() as tmp:
        bpe = pathlib.Path(tmp) / "vocab.bpe"
        bpe.write_text("#version: 0.2\n" + open(f"{gpt2_dir}/merges.txt", encoding="utf-8").read(), encoding="utf-8")
        ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(bpe), encoder_json_file=f"{gpt2_dir}/vocab.json")
    import bpe_lm
    tok = tiktoken.Encoding("gpt2", pat_str=bpe_lm.GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
    run = {
        "1 thread, list": lambda: tok.encode_ordinary(text),
        "1 thread, array": lambda: np.asarray(tok.encode_ordinary(text), np.uint32),
        "batch": lambda: np.asarray([i for d in tok.encode_ordinary_batch(docs, num_threads=threads) for i in d], np.uint32),
    }
fn = run["batch" if case.startswith("N threads") else case]
times, ids = [], None
for _ in range(calls):
    start = time.perf_counter()
    ids = fn()
    times.append(time.perf_counter() - start)
digest = hashlib.sha256(np.asarray(ids, np.uint32).tobytes()).hexdigest()[:16]
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({"cold": times[0], "warm": min(times[1:] or times), "ids": digest, "n": len(ids), "rss_mb": rss}))
"""


def gpt2_tokenizer_json(path: Path) -> None:
    """GPT-2's vocabulary as an HF tokenizer.json, the format gigatoken and fastokens load."""
    import bpe_lm
    from bpe_lm.interop import export_hf

    gpt2 = SHARED / "gpt2"
    export_hf(bpe_lm.Tokenizer.from_files(gpt2 / "vocab.json", gpt2 / "merges.txt", [EOT]), path)


def one_run(threads: int, encoder: str, case: str, text: Path, tok_json: Path, calls: int) -> dict:
    cores = sorted(os.sched_getaffinity(0))[:threads]
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), BPE_LM_NUM_THREADS=str(threads))
    argv = [sys.executable, "-c", WORKER, str(threads), encoder, case, str(text), str(tok_json)]
    argv += [str(SHARED / "gpt2"), str(calls), str(DOC_BYTES)]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, preexec_fn=lambda: os.sched_setaffinity(0, cores), check=False
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="threads of the batch case (default: 2)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians reported (default: 1)")
    ap.add_argument(
        "--calls", type=int, default=3, help="calls per run: 1 cold + the rest warm, the best of them (default: 3)"
    )
    ap.add_argument("--mb", type=float, default=None, help="MB of each corpus (default: 20, Chinese 4)")
    ap.add_argument("--quick", action="store_true", help="English books only, one round, 10 MB")
    args = ap.parse_args()
    corpora = {"English books": CORPORA["English books"]} if args.quick else CORPORA
    rounds = 1 if args.quick else args.rounds
    results: dict[tuple[str, str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        tok_json = tmp / "gpt2-tokenizer.json"
        gpt2_tokenizer_json(tok_json)
        texts = {}
        for name, (file, mb) in corpora.items():
            size = 10.0 if args.quick else (args.mb or mb)
            with gzip.open(SHARED / file, "rt", encoding="utf-8") as f:
                text = f.read(int(size * 1e6)).replace(EOT, "\n")  # ordinary text: no special tokens
            texts[name] = tmp / f"{name.replace(' ', '_')}.txt"
            texts[name].write_text(text, encoding="utf-8")
        for r in range(rounds):
            for name, path in texts.items():
                for case in CASES:
                    for encoder in ENCODERS:
                        if case == BYTES_CASE and encoder not in TAKE_BYTES:
                            continue
                        res = one_run(
                            args.threads if case.startswith("N") else 1, encoder, case, path, tok_json, args.calls
                        )
                        res["mb"] = path.stat().st_size / 1e6
                        results.setdefault((name, case, encoder), []).append(res)
                        shown = (
                            res.get("error")
                            or f"cold {res['mb'] / res['cold']:.1f} MB/s warm {res['mb'] / res['warm']:.1f}"
                        )
                        print(f"  round {r + 1}: {name} | {case} | {encoder}: {shown}", file=sys.stderr)

    def speed(runs: list[dict], key: str) -> float | None:
        ok = [x["mb"] / x[key] for x in runs if "error" not in x]
        return statistics.median(ok) if ok else None

    print(f"\n## Encoding vs peers (MB/s, median of {rounds} round(s); N = {args.threads}; GPT-2 vocabulary)\n")
    print(
        "| corpus | case | encoder | cold MB/s | warm MB/s | cold ÷ bpe-lm | warm ÷ bpe-lm | peak RSS MB | ids = tiktoken |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in texts:
        for case in CASES:
            ours = results[(name, case, "bpe-lm")]
            # The bytes case has no tiktoken run: its ids are those of the same text as a str.
            same_text = "1 thread, array" if case == BYTES_CASE else case
            reference = {x.get("ids") for x in results[(name, same_text, "tiktoken")] if "error" not in x}
            for encoder in ENCODERS:
                if (name, case, encoder) not in results:
                    continue
                runs = results[(name, case, encoder)]
                cold, warm = speed(runs, "cold"), speed(runs, "warm")
                if cold is None or warm is None:
                    print(f"| {name} | {case} | {encoder} | failed: {runs[0]['error']} | | | | | |")
                    continue
                ours_cold, ours_warm = speed(ours, "cold"), speed(ours, "warm")
                ratio = lambda a, b: f"{a / b:.2f}×" if b else "—"  # noqa: E731
                same = "yes" if {x["ids"] for x in runs} <= reference and reference else "NO"
                rss = max(x["rss_mb"] for x in runs)
                print(
                    f"| {name} | {case} | {encoder} | {cold:.1f} | {warm:.1f} | {ratio(cold, ours_cold)} |"
                    f" {ratio(warm, ours_warm)} | {rss:.0f} | {same} |"
                )


if __name__ == "__main__":
    main()
