"""Peak memory and time of the LM head + loss, forward and backward, on CPU: the fused chunked
`linear_cross_entropy` against the unfused path (logits = h Wᵀ, then `cross_entropy`, the (N × V) float32
logits and their gradient in memory), and torch's F.linear + F.cross_entropy for reference.

Each method runs in a fresh process, so its peak resident memory is its own; the figure reported is the
peak above the process's resident memory after the inputs are made. Loss and gradients are cross-checked.

    pip install ".[lm]"
    python benches/linear_cross_entropy.py                     # N = 1024 rows, V = 50257 (GPT-2), D = 768
    python benches/linear_cross_entropy.py --quick             # N = 512, V = 10000, D = 256
    python benches/linear_cross_entropy.py --rows 32768 --vocab 10000 --dim 512
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

METHODS = ["fused", "unfused", "torch"]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(method: str, rows: int, vocab: int, dim: int, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    from bpe_lm.model import cross_entropy, linear_cross_entropy

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, dim, generator=g).requires_grad_()
    weight = (torch.randn(vocab, dim, generator=g) * dim**-0.5).requires_grad_()
    targets = torch.randint(0, vocab, (rows,), generator=g)
    # Warm the allocator and the kernels on a tiny problem, so the baseline holds the libraries' memory.
    linear_cross_entropy(hidden[:8], weight[:64], targets[:8] % 64).backward()
    cross_entropy(hidden[:8] @ weight[:64].T, targets[:8] % 64).backward()
    hidden.grad = weight.grad = None
    before = rss_mb()
    start = time.perf_counter()
    if method == "fused":
        loss = linear_cross_entropy(hidden, weight, targets)
    elif method == "unfused":
        loss = cross_entropy(hidden @ weight.T, targets)
    else:
        loss = F.cross_entropy(F.linear(hidden, weight), targets)
    loss.backward()
    seconds = time.perf_counter() - start
    return {"method": method, "loss": loss.item(), "seconds": seconds, "peak_mb": rss_mb() - before,
            "grad_hidden_sum": hidden.grad.double().abs().sum().item(), "grad_weight_sum": weight.grad.double().abs().sum().item()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1024, help="N: tokens in the batch")
    ap.add_argument("--vocab", type=int, default=50257, help="V")
    ap.add_argument("--dim", type=int, default=768, help="D: the model width")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="--rows 512 --vocab 10000 --dim 256")
    ap.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.vocab, args.dim = 512, 10000, 256
    if args.one:
        print(json.dumps(measure(args.one, args.rows, args.vocab, args.dim, args.threads)))
        return
    results = []
    for method in METHODS:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            method,
            "--rows",
            str(args.rows),
            "--vocab",
            str(args.vocab),
            "--dim",
            str(args.dim),
            "--threads",
            str(args.threads),
        ]
        results.append(json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout))
    ref = results[-1]
    for r in results:
        for key in ("loss", "grad_hidden_sum", "grad_weight_sum"):
            if abs(r[key] - ref[key]) > 1e-4 * abs(ref[key]):
                raise SystemExit(f"{r['method']}: {key} {r[key]} differs from torch's {ref[key]}")
    logits_mb = args.rows * args.vocab * 4 / 1e6
    print(
        f"\nN = {args.rows}, V = {args.vocab}, D = {args.dim}, float32, {args.threads} threads; one (N × V) float32 tensor is {logits_mb:,.0f} MB"
    )
    print("losses and gradient sums agree to 1e-4 across methods\n")
    print("| method | peak memory above inputs (MB) | forward + backward (s) |")
    print("|---|---|---|")
    names = {
        "fused": "bpe-lm linear_cross_entropy (fused, chunked)",
        "unfused": "bpe-lm h Wᵀ + cross_entropy",
        "torch": "torch F.linear + F.cross_entropy",
    }
    for r in results:
        print(f"| {names[r['method']]} | {r['peak_mb']:,.0f} | {r['seconds']:.2f} |")


if __name__ == "__main__":
    main()
