"""Encoding throughput by input format, and against what users do today (HF `datasets.map`).

The same documents (real reviews and stories from ../shared/data) are written as .txt (joined by
<|endoftext|>), .parquet (row groups of 1,000 rows), .jsonl.zst, .jsonl.gz (as C4 and Dolma ship), .csv
(one column) and a `datasets` `save_to_disk` directory (Arrow); `bpe-lm`'s encoder reads each at 1 and 2
threads. The peers do the same work the usual way: `datasets.load_dataset("parquet")` then `.map(batched=True,
num_proc=P)` with tiktoken's GPT-2 (`encode_ordinary_batch` + end of text) and with HF tokenizers'
GPT-2 (`encode_batch`), cache off. Every run is a fresh process, timed after its imports, cold (first
use of the tokenizer in that process); MB/s counts the UTF-8 bytes of the documents; peak RSS is the
process's own high-water mark (VmHWM). Configurations run in interleaved rounds (`--repeat`), and each
reports its median, so a load that comes and goes hits all alike. The ids of every record path are
checked equal to tiktoken's.
Then the documents as many small files (`--files`: one .txt each) and as shards (`--shards`: .jsonl.gz,
.jsonl.zst and parquet files of a few hundred kilobytes of text each) against the same text as one file,
each into one .npy and into a .npy per input (`bpe-lm encode IN... -o DIR/`, its manifest included), at
the thread counts of `--shard-threads` (`--shards-only`: nothing else; the many-core figure of
scripts/many_core.sh, where compressed shards are read side by side and one compressed file cannot be).
Last, a >= 1 GB parquet file (the documents repeated, so its speed is not quoted) for peak memory.

    pip install ".[bench,test]" && python benches/formats.py            # about 4 min, peak < 2 GB, on 2 cores
    python benches/formats.py --quick                                     # about 1 min
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SHARED = Path(os.environ.get("BPE_LM_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
EOT = "<|endoftext|>"
FORMATS = ("txt", "parquet", "jsonl.zst", "jsonl.gz", "csv", "datasets")
SHARD_FORMATS = ("jsonl.gz", "jsonl.zst", "parquet")

RUNNER = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    kind, path, out, threads, procs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    shared = sys.argv[6]
    def hwm():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    if kind.startswith("bpe-lm"):
        import pyarrow.parquet  # an import, like the peers' `datasets`: before the clock
        from bpe_lm.tokenizer import Tokenizer
        from bpe_lm.manifest import encode_to_directory
        from bpe_lm.readers import resolve
        tok = Tokenizer.from_files(f"{shared}/gpt2/vocab.json", f"{shared}/gpt2/merges.txt", ["<|endoftext|>"])
        t0 = time.perf_counter()
        if kind == "bpe-lm-dir":  # `bpe-lm encode IN... -o DIR/`: a .npy per input and the manifest
            encode_to_directory(tok, resolve([path]), out, text_field="text", force=True,
                                encode_many=lambda units, outs, _: tok.encode_units_each(units, outs, num_threads=threads))
        else:
            tok.encode_files(path, out, num_threads=threads)
        elapsed = time.perf_counter() - t0
    else:
        import datasets
        datasets.disable_caching()
        if kind == "tiktoken":
            import tiktoken, tiktoken.load, tempfile
            from bpe_lm import GPT2_PATTERN
            with tempfile.TemporaryDirectory() as tmp:
                bpe = os.path.join(tmp, "vocab.bpe")
                open(bpe, "w").write("#version: 0.2\\n" + open(f"{shared}/gpt2/merges.txt").read())
                ranks = tiktoken.load.data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=bpe, encoder_json_file=f"{shared}/gpt2/vocab.json")
            enc = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
            def f(batch):
                return {"ids": [ids + [50256] for ids in enc.encode_ordinary_batch(batch["text"], num_threads=1)]}
        else:
            from tokenizers import Tokenizer as HF, models, pre_tokenizers, decoders
            hf = HF(models.BPE.from_file(f"{shared}/gpt2/vocab.json", f"{shared}/gpt2/merges.txt"))
            hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            hf.decoder = decoders.ByteLevel()
            def f(batch):
                return {"ids": [e.ids + [50256] for e in hf.encode_batch(batch["text"], add_special_tokens=False)]}
        t0 = time.perf_counter()
        ds = datasets.load_dataset("parquet", data_files=path, split="train")
        ds = ds.map(f, batched=True, num_proc=procs if procs > 1 else None, remove_columns=["text"])
        elapsed = time.perf_counter() - t0
        ids = np.concatenate([np.asarray(x, dtype=np.uint16) for x in ds["ids"]])
        np.save(out, ids)
    print(json.dumps({"seconds": elapsed, "rss_mb": hwm()}))
    """
)


def documents(mb: float) -> list[str]:
    docs: list[str] = []
    size = 0
    for name in ("imdb.txt.gz", "fairytales.txt.gz"):
        with gzip.open(SHARED / name, "rt", encoding="utf-8") as f:
            for d in f.read().split(EOT):
                d = d.strip("\n")
                if d:
                    docs.append(d)
                    size += len(d.encode("utf-8"))
                if size >= mb * 1e6:
                    return docs
    return docs


def write_inputs(docs: list[str], directory: Path, formats: tuple[str, ...] = FORMATS) -> dict[str, Path]:
    """The documents in each of `formats` (the shards-only run needs only the compressed and parquet ones:
    a machine lent for it may have no `datasets`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    names = {"txt": "c.txt", "parquet": "c.parquet", "jsonl.zst": "c.jsonl.zst", "jsonl.gz": "c.jsonl.gz"}
    paths = {fmt: directory / names.get(fmt, "saved" if fmt == "datasets" else "c.csv") for fmt in formats}
    lines = "".join(json.dumps({"text": d}) + "\n" for d in docs).encode("utf-8")
    for fmt, path in paths.items():
        if fmt == "txt":
            path.write_text(f"\n{EOT}\n".join(docs) + "\n", encoding="utf-8")
        elif fmt == "parquet":
            pq.write_table(pa.table({"text": docs}), path, row_group_size=1000)
        elif fmt == "jsonl.zst":
            path.write_bytes(zstandard.ZstdCompressor(level=3).compress(lines))
        elif fmt == "jsonl.gz":
            path.write_bytes(gzip.compress(lines, compresslevel=6, mtime=0))
        elif fmt == "csv":
            path.write_bytes(b"text\n" + csv_rows(docs))
        else:
            import datasets  # a `save_to_disk` directory, as users keep what they load from the Hub

            datasets.disable_progress_bars()
            datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(path))
    return paths


def csv_rows(docs: list[str]) -> bytes:
    """The documents as the rows of a one-column CSV file (quoted where they must be)."""
    import csv
    import io

    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([d] for d in docs)
    return out.getvalue().encode("utf-8")


def check_each(directory: Path, reference: object) -> None:
    """The .npy files of `-o DIR/`, in name order, must hold the one output's ids."""
    import numpy as np

    joined = np.concatenate([np.load(p) for p in sorted(directory.glob("*.npy"))])
    if not np.array_equal(joined, reference):
        raise SystemExit(f"{directory}: the outputs per input differ from the one output's ids")


def run(kind: str, path: Path, out: Path, threads: int = 1, procs: int = 1) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", RUNNER, kind, str(path), str(out), str(threads), str(procs), str(SHARED)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if r.returncode != 0:
        raise SystemExit(f"{kind} on {path.name} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--mb", type=float, default=40.0, help="MB of document text")
    ap.add_argument(
        "--big-gb", type=float, default=1.0, help="size of the parquet file for the peak-memory run (0: skip)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds; each figure is the median")
    ap.add_argument(
        "--files", type=int, default=5000, help="documents written one file each, for the many-files run (0: skip)"
    )
    ap.add_argument(
        "--shards", type=int, default=100, help="the documents also as this many .jsonl.gz and parquet files (0: skip)"
    )
    ap.add_argument(
        "--shard-threads", default="2", help="thread counts for the shards (comma-separated: 1,2,4,8,16 on many cores)"
    )
    ap.add_argument(
        "--shards-only", action="store_true", help="only the shards against the one file (the many-core figure)"
    )
    ap.add_argument("--quick", action="store_true", help="--mb 8 --big-gb 0.25 --repeat 1 --files 500 --shards 20")
    args = ap.parse_args()
    if args.quick:
        args.mb, args.big_gb, args.repeat, args.files, args.shards = 8.0, 0.25, 1, 500, 20
    if args.shards_only:
        args.files, args.big_gb = 0, 0.0
    shard_threads = [int(t) for t in args.shard_threads.split(",")]
    import numpy as np

    docs = documents(args.mb)
    text_mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    print(f"{len(docs):,} documents, {text_mb:.1f} MB of text; {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bpe-lm-bench-formats-") as tmp:
        d = Path(tmp)
        paths = write_inputs(docs, d, SHARD_FORMATS if args.shards_only else FORMATS)
        configs = [
            (f"datasets.map + {'tiktoken' if kind == 'tiktoken' else 'HF tokenizers'}", kind, "parquet", procs, 1)
            for kind, procs in (("tiktoken", 1), ("tiktoken", 2), ("hf", 1), ("hf", 2))
        ] + [("bpe-lm", "bpe-lm", fmt, 1, threads) for fmt in FORMATS for threads in (1, 2)]
        if args.shards_only:
            configs = []
            run("bpe-lm", paths["jsonl.gz"], d / "reference.npy")
        runs: dict[int, list[dict]] = {i: [] for i in range(len(configs))}
        same: dict[int, object] = {}
        reference = np.load(d / "reference.npy") if args.shards_only else None
        for _ in range(args.repeat if configs else 0):
            for i, (_who, kind, fmt, procs, threads) in enumerate(configs):
                out = d / f"{i}.npy"
                runs[i].append(run(kind, paths[fmt], out, threads=threads, procs=procs))
                ids = np.load(out)
                reference = ids if reference is None else reference
                equal = bool(np.array_equal(ids, reference)) and same.get(i, True) is True
                same[i] = "n/a (separators)" if fmt == "txt" else equal
        if configs:
            rows = []
            for i, (who, _kind, fmt, procs, threads) in enumerate(configs):
                secs = sorted(r["seconds"] for r in runs[i])
                got = {"seconds": secs[len(secs) // 2], "rss_mb": max(r["rss_mb"] for r in runs[i])}
                rows.append((who, fmt, f"{threads} thread" if who == "bpe-lm" else f"{procs} proc", got, same[i]))
            print("\n| encoder | input | parallel | MB/s | peak RSS MB | ids = tiktoken's |\n|---|---|---|---|---|---|")
            for who, fmt, par, got, equal in rows:
                print(f"| {who} | {fmt} | {par} | {text_mb / got['seconds']:.1f} | {got['rss_mb']:.0f} | {equal} |")
            speed = {(r[0], r[1], r[2].split()[0]): text_mb / r[3]["seconds"] for r in rows}
            tik = {n: speed[("datasets.map + tiktoken", "parquet", n)] for n in ("1", "2")}
            ours = {n: speed[("bpe-lm", "parquet", n)] for n in ("1", "2")}
            print("\nparquet, bpe-lm (threads) vs datasets.map + tiktoken (processes): "
                  + ", ".join(f"{n}: {ours[n] / tik[n]:.1f}x" for n in ("1", "2")))  # fmt: skip
            for fmt in FORMATS[1:]:
                ratios = ", ".join(
                    f"{n} thread: {speed[('bpe-lm', fmt, n)] / speed[('bpe-lm', 'txt', n)]:.2f}x" for n in ("1", "2")
                )
                print(f"bpe-lm {fmt} vs the same text as .txt: {ratios}")
        if args.files > 0:
            # A corpus as many small files (one document each, as users often keep their own text) against
            # the same documents in one file: what each file costs beyond its text.
            small = d / "small"
            small.mkdir()
            some = docs[: args.files]
            for i, doc in enumerate(some):
                (small / f"{i:06d}.txt").write_text(doc, encoding="utf-8")
            (d / "joined.txt").write_text("".join(some), encoding="utf-8")
            some_mb = sum(len(t.encode("utf-8")) for t in some) / 1e6
            many, each, one = (
                statistics.median(run(kind, src, d / out, threads=2)["seconds"] for _ in range(args.repeat))
                for kind, src, out in (
                    ("bpe-lm", small / "*.txt", "many.npy"),
                    ("bpe-lm-dir", small / "*.txt", "each"),
                    ("bpe-lm", d / "joined.txt", "one.npy"),
                )
            )
            check_each(d / "each", np.load(d / "many.npy"))
            print(f"\n{len(some):,} documents as {len(some):,} .txt files ({some_mb:.1f} MB), 2 threads: {some_mb / many:.1f} MB/s "
                  f"({(many - one) / len(some) * 1e6:.0f} µs a file beyond the text), against {some_mb / one:.1f} MB/s as one file; "
                  f"a .npy per file (-o DIR/): {some_mb / each:.1f} MB/s (ids equal)")  # fmt: skip
        if args.shards > 0:
            # The documents as many shards of a corpus (a few hundred kilobytes of text each), against the
            # same records as one file: the ids must be the one file's, and the time close to it.
            import pyarrow as pa
            import pyarrow.parquet as pq
            import zstandard

            per = -(-len(docs) // args.shards)
            parts = [docs[i : i + per] for i in range(0, len(docs), per)]
            for fmt in SHARD_FORMATS:
                shard_dir = d / f"shards-{fmt}"
                shard_dir.mkdir()
                for i, part in enumerate(parts):
                    shard = shard_dir / f"{i:05d}.{fmt}"
                    if fmt == "parquet":
                        pq.write_table(pa.table({"text": part}), shard)
                        continue
                    lines = "".join(json.dumps({"text": t}) + "\n" for t in part).encode("utf-8")
                    if fmt == "jsonl.gz":
                        shard.write_bytes(gzip.compress(lines, compresslevel=6, mtime=0))
                    else:
                        shard.write_bytes(zstandard.ZstdCompressor(level=3).compress(lines))
                for threads in shard_threads:
                    kinds = (
                        ("bpe-lm", shard_dir / f"*.{fmt}", d / "shards.npy"),
                        ("bpe-lm-dir", shard_dir / f"*.{fmt}", d / f"each-{fmt}"),
                        ("bpe-lm", paths[fmt], d / "one.npy"),
                    )
                    took: list[list[float]] = [[], [], []]
                    rss = [0.0, 0.0, 0.0]
                    for _ in range(args.repeat):
                        for k, (kind, src, out) in enumerate(kinds):
                            got = run(kind, src, out, threads=threads)
                            took[k].append(got["seconds"])
                            rss[k] = max(rss[k], got["rss_mb"])
                    if not np.array_equal(np.load(d / "shards.npy"), reference):
                        raise SystemExit(f"{fmt} shards: ids differ from the one file's")
                    check_each(d / f"each-{fmt}", reference)
                    many, each, one = (statistics.median(t) for t in took)
                    print(f"{len(parts)} .{fmt} shards ({text_mb / len(parts):.2f} MB of text each), {threads} threads: "
                          f"{text_mb / many:.1f} MB/s into one .npy, {text_mb / each:.1f} MB/s into a .npy each (-o DIR/), "
                          f"against {text_mb / one:.1f} MB/s as one file (ids equal); peak RSS "
                          f"{rss[0]:.0f} / {rss[1]:.0f} / {rss[2]:.0f} MB")  # fmt: skip
        if args.big_gb > 0:
            import pyarrow as pa
            import pyarrow.parquet as pq
            import zstandard

            for p in paths.values():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            repeats = max(1, round(args.big_gb * 1e3 / text_mb))
            big = d / "big.parquet"
            table = pa.table({"text": docs})
            with pq.ParquetWriter(big, table.schema) as w:
                for _ in range(repeats):
                    w.write_table(table, row_group_size=1000)
            got = run("bpe-lm", big, d / "big.npy", threads=2)
            print(f"\n{repeats * text_mb / 1e3:.2f} GB of text (the documents {repeats} times; repeated text, so no speed "
                  f"figure), 2 threads, peak RSS:\n- parquet ({big.stat().st_size / 1e9:.2f} GB on disk): {got['rss_mb']:.0f} MB")  # fmt: skip
            big.unlink()
            (d / "big.npy").unlink()
            big = d / "big.jsonl.zst"
            lines = "".join(json.dumps({"text": t}) + "\n" for t in docs).encode("utf-8")
            with open(big, "wb") as f, zstandard.ZstdCompressor(level=1).stream_writer(f) as z:
                for _ in range(repeats):
                    z.write(lines)
            got = run("bpe-lm", big, d / "big.npy", threads=2)
            print(f"- jsonl.zst ({big.stat().st_size / 1e9:.2f} GB on disk): {got['rss_mb']:.0f} MB")
            big.unlink()
            (d / "big.npy").unlink()
            big = d / "big.csv"
            rows = csv_rows(docs)
            with open(big, "wb") as f:
                f.write(b"text\n")
                for _ in range(repeats):
                    f.write(rows)
            got = run("bpe-lm", big, d / "big.npy", threads=2)
            print(f"- csv ({big.stat().st_size / 1e9:.2f} GB on disk): {got['rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
