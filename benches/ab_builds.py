"""Two or more builds of the core, side by side in one process: which encodes faster, on the same texts.

On a shared machine whose speed drifts by 20% from one minute to the next, separate runs of two builds
cannot tell a 5% change from noise. Here every build's `_core` extension is loaded into the same process
under its own name and the builds' encoders take turns, call by call, on the same text (one pinned core,
one thread each), so a slow spell hits them all alike. Each build keeps its own per-thread caches. Reported
per text: the first call (cold: empty caches) and the best of the rest (warm), MB/s, and whether every build
gave the same ids.

In one process only the first text's first calls are truly cold (later texts find the caches and the memory
of the earlier ones), so `--fresh N` measures cold another way: N rounds, each build in a fresh process per
text (pinned to one core, the text read and its UTF-8 form made before the clock), its first call cold and the
best of three more warm; medians over the rounds.

    cargo build --release --features python && cp target/release/lib_core.so /tmp/new.so
    git stash && cargo build --release --features python && cp target/release/lib_core.so /tmp/old.so && git stash pop
    python benches/ab_builds.py /tmp/old.so /tmp/new.so                 # English books, web reviews
    python benches/ab_builds.py /tmp/old.so /tmp/new.so --rounds 30 --texts multilingual/stories_ru.txt.gz
    python benches/ab_builds.py /tmp/old.so /tmp/new.so --fresh 5      # cold in fresh processes
"""

from __future__ import annotations

import argparse
import gzip
import importlib.machinery
import importlib.util
import os
import time
from pathlib import Path

import numpy as np

from bpe_lm.pipeline import shared_data_dir


def load_core(path: Path):
    """The `_core` extension at `path`, as a module of its own (its statics, caches included, are its own)."""
    loader = importlib.machinery.ExtensionFileLoader("bpe_lm._core", str(path))
    spec = importlib.util.spec_from_file_location("bpe_lm._core", str(path), loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="+", type=Path, help="paths of built _core extensions (lib_core.so)")
    ap.add_argument("--texts", default="fairytales.txt.gz,imdb.txt.gz", help="shared files, comma-separated")
    ap.add_argument("--mb", type=float, default=10.0, help="millions of characters of each text (default: 10)")
    ap.add_argument("--rounds", type=int, default=20, help="calls per build and text (default: 20)")
    ap.add_argument("--fresh", type=int, default=0, help="rounds of fresh processes instead (cold figures)")
    args = ap.parse_args()
    if args.fresh:
        fresh_processes(args)
        return
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    import bpe_lm

    gpt2 = shared_data_dir() / "gpt2"
    tok = bpe_lm.Tokenizer.from_files(gpt2 / "vocab.json", gpt2 / "merges.txt", ["<|endoftext|>"])
    vocab, merges = tok._tokens[: tok._core_vocab_size], tok._merges
    names = [f"{i} ({p})" for i, p in enumerate(args.builds)]
    encoders = [load_core(p).Encoder(vocab, merges, tok.special_tokens, None) for p in args.builds]
    for name in args.texts.split(","):
        with gzip.open(shared_data_dir() / name, "rt", encoding="utf-8") as f:
            text = f.read(int(args.mb * 1e6))
        size = len(text.encode("utf-8"))
        # The str's UTF-8 form is made on its first use and kept: made here, so no build's cold call pays it.
        encoders[0].safe_prefix_bytes(text)
        cold, warm, ids = [0.0] * len(encoders), [float("inf")] * len(encoders), [b""] * len(encoders)
        for r in range(args.rounds):
            for k, enc in enumerate(encoders):
                start = time.perf_counter()
                out = enc.encode_to_buffer(text, 4, 1)
                seconds = time.perf_counter() - start
                if r == 0:
                    cold[k], ids[k] = seconds, np.asarray(out).tobytes()
                else:
                    warm[k] = min(warm[k], seconds)
        same = "ids equal" if len(set(ids)) == 1 else "IDS DIFFER"
        figures = "  ".join(
            f"{n}: cold {size / c / 1e6:.0f} warm {size / w / 1e6:.0f} MB/s" for n, c, w in zip(names, cold, warm)
        )
        print(f"{name} ({size / 1e6:.0f} MB, {same}): {figures}")


# One fresh process: one build, one text; prints cold and warm MB/s.
FRESH = """
import gzip, os, sys, time
sys.path.insert(0, sys.argv[4])
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
from ab_builds import load_core
import bpe_lm
from bpe_lm.pipeline import shared_data_dir
gpt2 = shared_data_dir() / "gpt2"
tok = bpe_lm.Tokenizer.from_files(gpt2 / "vocab.json", gpt2 / "merges.txt", ["<|endoftext|>"])
enc = load_core(sys.argv[1]).Encoder(tok._tokens[: tok._core_vocab_size], tok._merges, tok.special_tokens, None)
with gzip.open(shared_data_dir() / sys.argv[2], "rt", encoding="utf-8") as f:
    text = f.read(int(float(sys.argv[3]) * 1e6))
enc.safe_prefix_bytes(text)
size = len(text.encode("utf-8"))
seconds = []
for _ in range(4):
    start = time.perf_counter()
    enc.encode_to_buffer(text, 4, 1)
    seconds.append(time.perf_counter() - start)
print(size / seconds[0] / 1e6, size / min(seconds[1:]) / 1e6)
"""


def fresh_processes(args: argparse.Namespace) -> None:
    import statistics
    import subprocess
    import sys

    here = str(Path(__file__).resolve().parent)
    got: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for _ in range(args.fresh):
        for name in args.texts.split(","):
            for k, build in enumerate(args.builds):
                argv = [sys.executable, "-c", FRESH, str(build), name, str(args.mb), here]
                out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
                got.setdefault((name, k), []).append((float(out[0]), float(out[1])))
    for name in args.texts.split(","):
        figures = "  ".join(
            f"{k} ({build}): cold {statistics.median(c for c, _ in got[name, k]):.0f} "
            f"warm {statistics.median(w for _, w in got[name, k]):.0f} MB/s"
            for k, build in enumerate(args.builds)
        )
        print(f"{name} (fresh processes, medians of {args.fresh}): {figures}")


if __name__ == "__main__":
    main()
