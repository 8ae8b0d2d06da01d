"""Attention within documents (`model.document_mask`): the dense boolean mask through SDPA against
FlexAttention's block mask, and the causal model without a mask, on the same batch (documents of about
`--doc-len` tokens). Forward + backward per step on CUDA; forward only on CPU (torch has no FlexAttention
backward there). Outputs are cross-checked before anything is timed; median of `--steps` steps after warm-up.

    pip install ".[lm]"
    python benches/document_mask.py                  # CUDA: tinystories-17m shape, batch 32 x 256
    python benches/document_mask.py --quick          # a small model, a few steps (what a CPU always runs)
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bpe_lm.accounting import PRESETS
from bpe_lm.model import ModelConfig, TransformerLM

EOT = 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--doc-len", type=int, default=64, help="mean document length in tokens")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="a 2-layer model of width 128, batch 8, 5 steps")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dims = dict(PRESETS["tinystories-17m"])
    if args.quick or device.type == "cpu":  # the full shape is a GPU's work: on CPU the quick one
        dims.update(d_model=128, num_layers=2, num_heads=4, d_ff=344, context_length=128)
        args.batch_size, args.steps = 8, 5
    T = dims["context_length"]
    ids = torch.randint(1, dims["vocab_size"], (args.batch_size, T), device=device)
    ids[torch.rand(ids.shape, device=device) < 1 / args.doc_len] = EOT
    train = device.type == "cuda"
    arms = {"causal (no mask)": {}, "dense mask (SDPA)": {"document_mask": True, "attention": "fused"},
            "FlexAttention block mask": {"document_mask": True, "attention": "flex"}}  # fmt: skip
    models = {}
    for name, extra in arms.items():
        torch.manual_seed(0)
        models[name] = TransformerLM(ModelConfig(**dims, end_of_text_id=EOT, **extra), device=device)
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=train):
        dense, flex = (
            models["dense mask (SDPA)"](ids, targets=ids),
            models["FlexAttention block mask"](ids, targets=ids),
        )
    assert torch.allclose(dense.float(), flex.float(), atol=2e-2), (dense, flex)

    def step(model: TransformerLM) -> None:
        with torch.autocast(device.type, torch.bfloat16, enabled=train):
            loss = model(ids, targets=ids)
        if train:
            loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    print(f"{device}, batch {args.batch_size} x {T}, documents of ~{args.doc_len} tokens, "
          f"{'forward + backward' if train else 'forward only'}")  # fmt: skip
    print("| attention | ms per step |\n|---|---|")
    for name, model in models.items():
        with torch.enable_grad() if train else torch.no_grad():
            for _ in range(3):
                step(model)
            times = []
            for _ in range(args.steps):
                start = time.perf_counter()
                step(model)
                times.append(time.perf_counter() - start)
        print(f"| {name} | {1e3 * statistics.median(times):.2f} |")


if __name__ == "__main__":
    main()
