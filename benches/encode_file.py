"""Whole-file encoding to a uint16 .npy on disk: `bpe-lm encode` vs a tiktoken streaming loop and gigatoken.

The input is every shared corpus file decompressed and concatenated once (about 117 MB of distinct text in
seven languages and styles; generated text when they are absent): no repetition that a memo would turn into
cache hits. Each encoder runs in its own process; reported: the process's wall time (start-up and vocabulary
loading included, for both), MB/s and its peak RSS
(from wait4), and the two outputs are compared id for id. bpe-lm also runs on the first quarter of the
input, to show its memory does not grow with the file.

The tiktoken loop does only what streaming needs: read 8 MB blocks, cut each after a newline with text on
both sides (so no pre-token is split), cut the block into 4 × threads slices the same way, encode them with
`encode_batch` on the threads, write the ids.

gigatoken (`pip install ".[bench]"`) encodes the file with `encode_files` (one document, ids held in memory,
then saved): its peak RSS grows with the file, bpe-lm's does not. fastokens, which has no file API, reads the
file into a str, cuts it into 1 MB slices where no pre-token is split (the tiktoken loop's cut) and encodes
them with `encode_batch_flat` on its threads (RAYON_NUM_THREADS, as for gigatoken).

`--threads 1,2,4,8,16 --scale-mb 1024` is the many-core figure: every encoder at each thread count on one file
of at least 1 GB (the input repeated, so more of its pieces are cache hits than in 1 GB of distinct text:
compare encoders within a thread count).

    pip install ".[bench]"                        # tiktoken, gigatoken, fastokens
    python benches/encode_file.py                 # 2 threads
    python benches/encode_file.py --quick         # the first quarter of the input only
    python benches/encode_file.py --threads 1 --skip-tiktoken
    python benches/encode_file.py --threads 1,2,4,8,16 --scale-mb 1024 --skip-tiktoken   # a many-core machine
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

import numpy as np

from bpe_lm.pipeline import SHARED_TEXT_FILES, shared_data_dir

SHARED = shared_data_dir()
EOT = "<|endoftext|>"

# Where the Python peers cut text into parts: no pre-token spans such a place, so the parts' ids joined are
# the whole text's.
CUT = r"""
def cut(text, end):
    # The last place before `end` just after a lone newline, between two non-space characters: no pre-token
    # spans it (white space next to it would be split differently at the end of a part).
    i = text.rfind("\n", 0, end)
    while i >= 0 and (i == 0 or i + 1 >= len(text) or text[i - 1].isspace() or text[i + 1].isspace()):
        i = text.rfind("\n", 0, i)
    return i + 1 if i >= 0 else 0

def slices(text, step):
    # `text` in parts of about `step` characters, each ending at a `cut` (the rest whole where none is found).
    parts, start = [], 0
    while start < len(text):
        stop = len(text) if len(text) - start <= step else cut(text, start + step)
        if stop <= start:
            stop = len(text)
        parts.append(text[start:stop])
        start = stop
    return parts
"""

TIKTOKEN_WORKER = (
    CUT
    + r"""
import sys, pathlib, tempfile, numpy as np, tiktoken, tiktoken.load, bpe_lm
path, out, gpt2_dir, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with tempfile.TemporaryDirectory() as tmp:
    bpe = pathlib.Path(tmp) / "vocab.bpe"
    bpe.write_text("#version: 0.2\n" + (pathlib.Path(gpt2_dir) / "merges.txt").read_text(encoding="utf-8"), encoding="utf-8")
    ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=str(bpe), encoder_json_file=str(pathlib.Path(gpt2_dir) / "vocab.json"))
enc = tiktoken.Encoding("gpt2", pat_str=bpe_lm.GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})

with open(path, encoding="utf-8") as f, open(out, "wb") as g:
    rest = ""
    while True:
        block = f.read(8 << 20)
        text = rest + block
        if not text:
            break
        end = len(text) if not block else cut(text, len(text))
        if end == 0:
            end = len(text)
        rest = text[end:]
        body = text[:end]
        parts = slices(body, max(1, len(body) // (4 * threads)))
        for ids in enc.encode_batch(parts, num_threads=threads, allowed_special="all"):
            g.write(np.asarray(ids, dtype=np.uint16).tobytes())
        if not block:
            break
"""
)


# gigatoken's whole-file path: `encode_files` of the file as one document (special tokens recognised, as
# `bpe-lm encode` does), its ids written to a uint16 .npy, so the work ends where bpe-lm's does.
GIGATOKEN_WORKER = r"""
import sys, numpy as np, awkward, gigatoken
path, out, tokenizer_json = sys.argv[1], sys.argv[2], sys.argv[3]
tok = gigatoken.Tokenizer(tokenizer_json)
np.save(out, awkward.flatten(tok.encode_files(path)).to_numpy().astype(np.uint16))
"""

# fastokens has no file path: the file read whole, cut into 1 MB slices where no pre-token is split, encoded
# with `encode_batch_flat` (special tokens recognised, as tokenizer.json declares them), saved as uint16.
FASTOKENS_WORKER = (
    CUT
    + r"""
import sys, numpy as np, fastokens
path, out, tokenizer_json = sys.argv[1], sys.argv[2], sys.argv[3]
tok = fastokens.Tokenizer.from_file(tokenizer_json)
parts = slices(open(path, encoding="utf-8").read(), 1 << 20)
np.save(out, np.frombuffer(tok.encode_batch_flat(parts)[0], np.uint32).astype(np.uint16))
"""
)

# The peers that run beside bpe-lm on the whole file: worker and the API it times.
PEER_WORKERS = {
    "gigatoken": (GIGATOKEN_WORKER, "encode_files"),
    "fastokens": (FASTOKENS_WORKER, "encode_batch_flat of 1 MB slices"),
}


# Peak RSS as the child reports it at exit (`peak_rss_mb`: its own high-water mark); wait4's ru_maxrss would
# also count the memory this parent process had when it started the child.
HWM_HOOK = """
import atexit, os
def _report_peak():  # imported at exit, so the import adds nothing to the peak
    from bpe_lm.cli.common import peak_rss_mb
    with open(os.environ["BENCH_HWM_FILE"], "w") as f:
        f.write(str(peak_rss_mb()))
atexit.register(_report_peak)
"""
BPE_LM_MAIN = "import runpy; runpy.run_module('bpe_lm', run_name='__main__', alter_sys=True)"


def run_measured(
    code: str, args: list[str], tmp: Path, env_extra: dict[str, str] | None = None
) -> tuple[float, float, int]:
    """Runs `python -c code args...`; returns (wall seconds, peak RSS in MB, exit status)."""
    hwm = tmp / "hwm.txt"
    hwm.unlink(missing_ok=True)
    env = dict(os.environ, BENCH_HWM_FILE=str(hwm), **(env_extra or {}))
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", HWM_HOOK + code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    exit_code = os.waitstatus_to_exitcode(status)
    if exit_code != 0:
        print(err, file=sys.stderr)
    rss = float(hwm.read_text()) if hwm.exists() else usage.ru_maxrss / 1024
    return seconds, rss, exit_code


def build_input(path: Path) -> None:
    """Every shared corpus file once, documents separated by <|endoftext|> (generated text without them).
    Streamed, so this process stays small."""
    import shutil

    sources = [SHARED / name for name in SHARED_TEXT_FILES]
    with open(path, "wb") as f:
        if all(s.exists() for s in sources):
            for s in sources:
                with gzip.open(s, "rb") as g:
                    shutil.copyfileobj(g, f, 1 << 22)
                f.write(f"\n{EOT}\n".encode())
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from conftest import generated_corpus

            for seed in range(20):
                f.write(generated_corpus(20000, seed=seed).encode())


def prefix_file(src: Path, dst: Path, fraction: float) -> None:
    """The first `fraction` of `src`, ending after a newline (so it stays valid UTF-8), streamed."""
    target = int(src.stat().st_size * fraction)
    with open(src, "rb") as f, open(dst, "wb") as g:
        copied = 0
        while copied < target:
            line = f.readline()
            if not line:
                break
            g.write(line)
            copied += len(line)


def repeat_file(path: Path, megabytes: float) -> None:
    """`path` repeated (each copy after a newline) until it holds at least `megabytes` MB, streamed."""
    import shutil

    once = path.stat().st_size
    copies = max(1, -(-int(megabytes * 1e6) // once))
    if copies == 1:
        return
    whole = path.with_suffix(".repeated")
    with open(whole, "wb") as f:
        for _ in range(copies):
            with open(path, "rb") as g:
                shutil.copyfileobj(g, f, 1 << 22)
            f.write(b"\n")
    os.replace(whole, path)


def thread_counts(value: str) -> list[int]:
    """`--threads`: one count or several, comma-separated."""
    try:
        counts = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--threads takes counts like 2 or 1,2,4, not {value!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--threads takes counts of at least 1, not {value!r}")
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--threads", type=thread_counts, default=[2], help="thread count(s), e.g. 2 or 1,2,4,8,16 (default: 2)"
    )
    ap.add_argument(
        "--scale-mb", type=float, default=0, help="repeat the input to at least this many MB (default: once)"
    )
    ap.add_argument("--skip-tiktoken", action="store_true")
    ap.add_argument("--skip-gigatoken", action="store_true")
    ap.add_argument("--skip-fastokens", action="store_true")
    ap.add_argument("--quick", action="store_true", help="encode the first quarter of the input only (about 29 MB)")
    args = ap.parse_args()
    import bpe_lm

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmpdir:
        tmp = Path(tmpdir)
        text = tmp / "all.txt"
        build_input(text)
        quarter = tmp / "quarter.txt"
        prefix_file(text, quarter, 0.25)
        if args.quick:  # the quarter is the whole input: every encoder runs on it once
            os.replace(quarter, text)
        if args.scale_mb:
            repeat_file(text, args.scale_mb)
        mb = text.stat().st_size / 1e6
        gpt2 = SHARED / "gpt2"
        tok_dir = tmp / "tok"
        if (gpt2 / "vocab.json").exists():
            bpe_lm.Tokenizer.from_files(gpt2 / "vocab.json", gpt2 / "merges.txt", [EOT]).save(tok_dir)
            vocab_name = "gpt2"
        else:
            bpe_lm.Tokenizer(*bpe_lm.train_bpe(quarter, 32000, [EOT]), [EOT]).save(tok_dir)
            vocab_name = "bpe-lm 32K"
        peers = {}
        for name, skip in (("gigatoken", args.skip_gigatoken), ("fastokens", args.skip_fastokens)):
            if skip:
                continue
            try:
                __import__(name)
            except ImportError:
                print(f"{name} is not installed (pip install '.[bench]'): its rows are skipped", file=sys.stderr)
                continue
            peers[name] = PEER_WORKERS[name]
        if peers:
            from bpe_lm.interop import export_hf

            export_hf(bpe_lm.Tokenizer.load(tok_dir), tmp / "tokenizer.json")
        run_tiktoken = not args.skip_tiktoken and vocab_name == "gpt2"
        if run_tiktoken:
            try:
                import tiktoken  # noqa: F401
            except ImportError:
                print("tiktoken is not installed: its rows are skipped", file=sys.stderr)
                run_tiktoken = False
        rows = []
        ours = None
        for threads in args.threads:
            sources = (text,) if args.quick or args.scale_mb or threads != args.threads[0] else (quarter, text)
            for src in sources:
                out = tmp / f"{src.stem}.npy"
                cli = ["encode", str(src), "-o", str(out), "--tokenizer", str(tok_dir), "--threads", str(threads)]
                seconds, rss, code = run_measured(BPE_LM_MAIN, [*cli, "--quiet"], tmp)
                same = "—"
                if src == text and ours is None:
                    ours = np.load(out)
                elif src == text:  # another thread count: the ids must not change
                    same = "yes" if code == 0 and np.array_equal(np.load(out), ours) else "NO"
                rows.append(
                    (f"bpe-lm encode ({src.stem})", threads, src.stat().st_size / 1e6, seconds, rss, code, same)
                )
            (tmp / "all.npy").unlink(missing_ok=True)
            if run_tiktoken:
                worker_args = [str(text), str(tmp / "tk.bin"), str(gpt2), str(threads)]
                seconds, rss, code = run_measured(TIKTOKEN_WORKER, worker_args, tmp)
                theirs = np.fromfile(tmp / "tk.bin", dtype=np.uint16) if code == 0 else None
                same = "yes" if theirs is not None and np.array_equal(theirs, ours) else "NO"
                rows.append(("tiktoken encode_batch loop (all)", threads, mb, seconds, rss, code, same))
                (tmp / "tk.bin").unlink(missing_ok=True)
            for name, (worker, api) in peers.items():
                worker_args = [str(text), str(tmp / f"{name}.npy"), str(tmp / "tokenizer.json")]
                seconds, rss, code = run_measured(worker, worker_args, tmp, {"RAYON_NUM_THREADS": str(threads)})
                theirs = np.load(tmp / f"{name}.npy") if code == 0 else None
                same = "yes" if theirs is not None and np.array_equal(theirs, ours) else "NO"
                rows.append((f"{name} {api} (all)", threads, mb, seconds, rss, code, same))
                (tmp / f"{name}.npy").unlink(missing_ok=True)
    scaled = f", the input repeated to {mb:.0f} MB" if args.scale_mb else ""
    print(f"\nvocab {vocab_name}, {len(ours):,} tokens in all{scaled}\n")
    print("| encoder (input) | threads | MB | seconds | MB/s | peak RSS MB | ids equal bpe-lm's first |")
    print("|---|---|---|---|---|---|---|")
    for name, threads, size, seconds, rss, code, same in rows:
        status = "" if code == 0 else f" (exit {code})"
        print(
            f"| {name}{status} | {threads} | {size:.0f} | {seconds:.1f} | {size / seconds:.1f} | {rss:.0f} | {same} |"
        )


if __name__ == "__main__":
    main()
