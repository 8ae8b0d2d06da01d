"""Training-step throughput: bpe-lm's model, AdamW and loss vs a plain-PyTorch reference of the same model
(nn.Linear, F.scaled_dot_product_attention, F.cross_entropy, torch.optim.AdamW — fused on CUDA), side by
side in one run, with the same weights, batches, dtype and compile setting.

Reports tokens/s per implementation, the ratio, and MFU where the device's peak is known.

    python benches/train_throughput.py                              # CPU: the small config
    python benches/train_throughput.py --config tinystories-17m --config gpt2-small --compile --batch-size 64
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F

from bpe_lm.accounting import PRESETS, account
from bpe_lm.baseline import PlainTransformerLM
from bpe_lm.model import ModelConfig, TransformerLM, cross_entropy
from bpe_lm.optim import AdamW, clip_grad_norm
from bpe_lm.train import peak_flops, resolve_autocast_dtype, resolve_device

CONFIGS = {
    "cpu-small": dict(vocab_size=4096, context_length=128, num_layers=4, d_model=128, num_heads=4, d_ff=344),
    **PRESETS,
}


def make_step(model, optimizer, loss_fn, clip_fn, autocast_dtype, device):
    def step(x, y):
        ctx = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        with ctx:
            loss = loss_fn(model(x), y)
        loss.backward()
        clip_fn(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step


def time_steps(step, batches, warmup: int, device) -> float:
    for x, y in batches[:warmup]:
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for x, y in batches[warmup:]:
        last = step(x, y)
    last.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", choices=sorted(CONFIGS), help="default: cpu-small (CPU) or tinystories-17m and gpt2-small (CUDA)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 16 on CPU, 64 on CUDA")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 CPU, 50 CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 3 CPU, 15 CUDA)")
    ap.add_argument("--repeat", type=int, default=2, help="alternating rounds; the best is kept")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    ap.add_argument("--compile", action="store_true", help="torch.compile both models")
    args = ap.parse_args()
    device = resolve_device(args.device)
    on_cuda = device.type == "cuda"
    autocast_dtype = resolve_autocast_dtype(args.dtype, device)
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    names = args.config or (["tinystories-17m", "gpt2-small"] if on_cuda else ["cpu-small"])
    batch = args.batch_size or (64 if on_cuda else 16)
    steps = args.steps or (50 if on_cuda else 10)
    warmup = args.warmup or (15 if on_cuda else 3)
    peak = peak_flops(device, autocast_dtype)
    device_name = torch.cuda.get_device_name(device) if on_cuda else f"CPU ({torch.get_num_threads()} threads)"
    rows = []
    for name in names:
        config = ModelConfig(**CONFIGS[name])
        torch.manual_seed(0)
        ours = TransformerLM(config, device=device)
        plain = PlainTransformerLM(config).to(device).load_from(ours)
        ours_opt = AdamW(ours.parameters(), lr=1e-4, weight_decay=0.1)
        plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-4, weight_decay=0.1, fused=on_cuda, foreach=None if on_cuda else True)
        if args.compile:
            ours_run, plain_run = torch.compile(ours), torch.compile(plain)
        else:
            ours_run, plain_run = ours, plain
        ours_step = make_step(ours_run, ours_opt, cross_entropy, clip_grad_norm, autocast_dtype, device)
        plain_step = make_step(plain_run, plain_opt, lambda logits, y: F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()),
                               torch.nn.utils.clip_grad_norm_, autocast_dtype, device)
        g = torch.Generator().manual_seed(1)
        batches = []
        for _ in range(warmup + steps):
            ids = torch.randint(0, config.vocab_size, (batch, config.context_length + 1), generator=g).to(device)
            batches.append((ids[:, :-1], ids[:, 1:]))
        best = {"bpe-lm": float("inf"), "plain PyTorch": float("inf")}
        for _ in range(args.repeat):
            best["bpe-lm"] = min(best["bpe-lm"], time_steps(ours_step, batches, warmup, device))
            best["plain PyTorch"] = min(best["plain PyTorch"], time_steps(plain_step, batches, warmup, device))
        tokens = steps * batch * config.context_length
        flops_per_token = account(config).training_flops_per_token
        params = account(config).total_parameters
        for impl, seconds in best.items():
            tps = tokens / seconds
            mfu = f"{100 * tps * flops_per_token / peak:.1f}%" if peak else "—"
            ratio = best["plain PyTorch"] / best["bpe-lm"]
            rows.append((name, f"{params / 1e6:.1f}M", impl, tps, mfu, f"{ratio:.2f}" if impl == "bpe-lm" else "—"))
        del ours, plain, ours_opt, plain_opt, batches
        if on_cuda:
            torch.cuda.empty_cache()
    print(f"\ndevice: {device_name}; dtype: {autocast_dtype or torch.float32}; compile: {args.compile}; batch {batch}; {steps} timed steps, best of {args.repeat}\n")
    print("| config | params | implementation | tokens/s | MFU | bpe-lm / plain |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:,.0f} | {r[4]} | {r[5]} |")


if __name__ == "__main__":
    main()
