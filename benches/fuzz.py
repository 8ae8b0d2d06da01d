"""Runs the core's fuzz harness (tests/fuzz.rs: property tests on generated inputs, shrunk on failure) for a
time budget and tabulates executions and failures per target.

    pip install ".[test]"                        # a Rust toolchain builds the harness
    python benches/fuzz.py                       # 5 minutes in all, shared between the targets
    python benches/fuzz.py --quick               # 30 s
    python benches/fuzz.py --minutes 10          # 10 minutes in all
    python benches/fuzz.py --minutes 1 --target encode_decode_round_trip

CI runs the same targets for one second each (`cargo test --release`, part of .ci/run). Exits non-zero when a
target fails; its smallest failing input is printed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = [
    "pretokenizer_matches_fancy_regex",
    "encode_decode_round_trip",
    "special_tokens_split_the_text",
    "chunk_boundaries_change_nothing",
    "count_file_reader_on_corrupted_bytes",
    "text_reader_on_arbitrary_bytes",
    "decode_of_arbitrary_ids",
]
REPORT = re.compile(r"fuzz (\w+): (\d+) executions, (\d+) failures, ([\d.]+) s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="total time, shared equally between the targets")
    ap.add_argument("--target", action="append", choices=TARGETS, help="run only this target (repeatable)")
    ap.add_argument("--quick", action="store_true", help="--minutes 0.5")
    args = ap.parse_args()
    if args.quick:
        args.minutes = 0.5
    targets = args.target or TARGETS
    seconds = args.minutes * 60 / len(targets)
    # Build first, so compilation is not taken from the budget.
    subprocess.run(["cargo", "test", "--release", "--test", "fuzz", "--no-run", "--quiet"], cwd=ROOT, check=True)
    env = dict(os.environ, BPE_LM_FUZZ_SECONDS=str(seconds))
    rows, failed = [], False
    for target in targets:
        proc = subprocess.run(
            ["cargo", "test", "--release", "--quiet", "--test", "fuzz", target, "--", "--exact", "--nocapture"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        match = REPORT.search(proc.stdout)
        if match is None:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            rows.append((target, "—", "did not report", "—"))
            failed = True
            continue
        executions, failures, elapsed = int(match[2]), int(match[3]), float(match[4])
        rows.append((target, f"{executions:,}", str(failures), f"{elapsed:.0f}"))
        if proc.returncode != 0 or failures:
            failed = True
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    print(f"\n{seconds:.0f} s per target\n")
    print("| target | executions | failures | seconds |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
