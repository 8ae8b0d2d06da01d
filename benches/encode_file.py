"""Whole-file encoding to a uint16 .npy on disk: `bpe-lm encode` vs a tiktoken streaming loop.

Builds a large text file (default 2 GB, the shared corpora repeated; generated text when they are
absent), then runs each encoder in its own process and reports wall time, MB/s and that process's peak
RSS (from wait4). bpe-lm's memory must stay bounded (≤ 300 MB) whatever the file size.

    python benches/encode_file.py                 # 2 GB, 2 threads
    python benches/encode_file.py --gb 0.3 --threads 2
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bpe_lm.pipeline import shared_data_dir

SHARED = shared_data_dir()
EOT = "<|endoftext|>"

TIKTOKEN_WORKER = r"""
import sys, numpy as np, tiktoken, tiktoken.load, bpe_lm
path, out, gpt2_dir, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
import tempfile, pathlib
tmp = pathlib.Path(tempfile.mkdtemp()) / "vocab.bpe"
tmp.write_text("#version: 0.2\n" + (pathlib.Path(gpt2_dir) / "merges.txt").read_text(encoding="utf-8"), encoding="utf-8")
ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(tmp), encoder_json_file=str(pathlib.Path(gpt2_dir) / "vocab.json"))
enc = tiktoken.Encoding("gpt2", pat_str=bpe_lm.GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
with open(path, encoding="utf-8") as f, open(out, "wb") as g:
    while True:
        lines = f.readlines(8 << 20)
        if not lines:
            break
        # one batch item per thread-sized slice of lines
        step = max(1, len(lines) // (4 * threads))
        batch = ["".join(lines[i:i + step]) for i in range(0, len(lines), step)]
        for ids in enc.encode_batch(batch, num_threads=threads, allowed_special="all"):
            g.write(np.asarray(ids, dtype=np.uint16).tobytes())
"""


def run_measured(cmd: list[str]) -> tuple[float, float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(err, file=sys.stderr)
    return seconds, usage.ru_maxrss / 1024, code


def build_input(path: Path, gb: float) -> None:
    sources = [SHARED / "fairytales.txt.gz", SHARED / "imdb.txt.gz"]
    if all(s.exists() for s in sources):
        parts = [gzip.open(s, "rt", encoding="utf-8").read() for s in sources]
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from conftest import generated_corpus

        parts = [generated_corpus(20000, seed=s) for s in range(2)]
    target = int(gb * 1e9)
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < target:
            for p in parts:
                f.write(p)
                f.write(f"\n{EOT}\n")
                written += len(p.encode("utf-8"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-tiktoken", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmpdir:
        tmp = Path(tmpdir)
        text = tmp / "big.txt"
        build_input(text, args.gb)
        size_mb = text.stat().st_size / 1e6
        gpt2 = SHARED / "gpt2"
        tok_dir = tmp / "tok"
        import bpe_lm

        if (gpt2 / "vocab.json").exists():
            bpe_lm.Tokenizer.from_files(gpt2 / "vocab.json", gpt2 / "merges.txt", [EOT]).save(tok_dir)
            vocab_name = "gpt2"
        else:
            sample = tmp / "sample.txt"
            with open(text, encoding="utf-8") as f:
                sample.write_text(f.read(20_000_000), encoding="utf-8")
            bpe_lm.Tokenizer(*bpe_lm.train_bpe(sample, 32000), [EOT]).save(tok_dir)
            vocab_name = "bpe-lm 32K"
        rows = []
        out = tmp / "ids.npy"
        cmd = [
            sys.executable,
            "-m",
            "bpe_lm",
            "encode",
            str(text),
            "-o",
            str(out),
            "--tokenizer",
            str(tok_dir),
            "--threads",
            str(args.threads),
            "--quiet",
        ]
        seconds, rss, code = run_measured(cmd)
        rows.append(("bpe-lm encode", seconds, rss, code))
        out.unlink(missing_ok=True)
        if not args.skip_tiktoken and vocab_name == "gpt2":
            try:
                import tiktoken  # noqa: F401

                cmd = [
                    sys.executable,
                    "-c",
                    TIKTOKEN_WORKER,
                    str(text),
                    str(tmp / "tk.bin"),
                    str(gpt2),
                    str(args.threads),
                ]
                seconds, rss, code = run_measured(cmd)
                rows.append(("tiktoken encode_batch loop", seconds, rss, code))
            except ImportError:
                pass
    print(f"\n{size_mb / 1000:.2f} GB of text, vocab {vocab_name}, {args.threads} threads\n")
    print("| encoder | seconds | MB/s | peak RSS MB |")
    print("|---|---|---|---|")
    for name, seconds, rss, code in rows:
        status = "" if code == 0 else f" (exit {code})"
        print(f"| {name}{status} | {seconds:.1f} | {size_mb / seconds:.1f} | {rss:.0f} |")


if __name__ == "__main__":
    main()
