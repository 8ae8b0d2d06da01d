"""Parameters, FLOPs and memory of a `ModelConfig`, computed from the formulas (no model is built).

Conventions: a matrix multiply of (m × k) by (k × n) costs 2·m·k·n FLOPs; a training step costs three
forward passes (forward, and backward at twice the forward); memory is for fp32 training with AdamW
(parameters, gradients and two moments: 16 bytes a parameter) plus the activations saved for backward.
Tests check the parameter count against `sum(p.numel())` and the forward FLOPs against
`torch.utils.flop_counter.FlopCounterMode` on the built model.
"""

from __future__ import annotations

from dataclasses import dataclass

from bpe_lm.config import ModelConfig
from bpe_lm.units import format_duration, format_quantity

PRESETS: dict[str, dict[str, int]] = {
    # GPT-2 sizes as CS336 §3.6 uses them (d_ff = 4·d_model, three-matrix SwiGLU).
    "gpt2-small": dict(vocab_size=50257, context_length=1024, num_layers=12, d_model=768, num_heads=12, d_ff=3072),
    "gpt2-medium": dict(vocab_size=50257, context_length=1024, num_layers=24, d_model=1024, num_heads=16, d_ff=4096),
    "gpt2-large": dict(vocab_size=50257, context_length=1024, num_layers=36, d_model=1280, num_heads=20, d_ff=5120),
    "gpt2-xl": dict(vocab_size=50257, context_length=1024, num_layers=48, d_model=1600, num_heads=25, d_ff=6400),
    # CS336's TinyStories run.
    "tinystories-17m": dict(vocab_size=10000, context_length=256, num_layers=4, d_model=512, num_heads=16, d_ff=1344),
}

# Dense peak throughput, FLOP/s, by name.
PEAK_FLOPS: dict[str, float] = {
    "h100-bf16": 989e12,
    "h100-tf32": 494.5e12,
    "h200-bf16": 989e12,
    "a100-bf16": 312e12,
    "a100-tf32": 156e12,
}

FLOAT_BYTES = 4


@dataclass
class Accounting:
    config: ModelConfig
    parameters: dict[str, int]
    forward_flops: dict[str, int]  # one sequence of context_length tokens
    batch_size: int

    @property
    def total_parameters(self) -> int:
        return sum(self.parameters.values())

    @property
    def total_forward_flops(self) -> int:
        return sum(self.forward_flops.values())

    @property
    def forward_flops_per_token(self) -> float:
        return self.total_forward_flops / self.config.context_length

    @property
    def training_flops_per_token(self) -> float:
        return 3 * self.forward_flops_per_token

    @property
    def training_flops_per_step(self) -> float:
        return 3 * self.total_forward_flops * self.batch_size

    def memory_bytes(self) -> dict[str, int]:
        p = self.total_parameters
        return {
            "parameters": p * FLOAT_BYTES,
            "gradients": p * FLOAT_BYTES,
            "AdamW first moments": p * FLOAT_BYTES,
            "AdamW second moments": p * FLOAT_BYTES,
            "activations": activation_elements(self.config, self.batch_size) * FLOAT_BYTES,
        }

    def training_seconds(self, tokens: float, peak_flops: float, mfu: float) -> float:
        return tokens * self.training_flops_per_token / (peak_flops * mfu)

    def to_dict(self, tokens: float | None = None, peak_flops: float | None = None, mfu: float | None = None) -> dict:
        out = {
            "config": self.config.to_dict(),
            "batch_size": self.batch_size,
            "parameters": self.parameters,
            "total_parameters": self.total_parameters,
            "forward_flops_per_sequence": self.forward_flops,
            "total_forward_flops_per_sequence": self.total_forward_flops,
            "training_flops_per_token": self.training_flops_per_token,
            "training_flops_per_step": self.training_flops_per_step,
            "memory_bytes": self.memory_bytes(),
            "total_memory_bytes": sum(self.memory_bytes().values()),
        }
        if tokens is not None and peak_flops is not None and mfu is not None:
            out["training_time"] = {
                "tokens": tokens,
                "peak_flops": peak_flops,
                "mfu": mfu,
                "seconds": self.training_seconds(tokens, peak_flops, mfu),
            }
        return out


def parameter_counts(c: ModelConfig) -> dict[str, int]:
    d, f, L, V = c.d_model, c.d_ff, c.num_layers, c.vocab_size
    assert f is not None
    ffn_matrices = 3 if c.ffn == "swiglu" else 2
    norms = c.norm != "none"
    counts = {
        "token embeddings": V * d,
        "attention (Q, K, V, output)": L * 4 * d * d,
        f"feed-forward ({'w1, w2, w3' if ffn_matrices == 3 else 'w1, w2'})": L * ffn_matrices * d * f,
        "RMSNorm gains": (L * 2 * d + d) if norms else 0,
        "LM head": 0 if c.tie_embeddings else V * d,
    }
    if c.qk_norm:  # one gain per head dimension for queries and one for keys, per layer
        counts["QK-norm gains"] = L * 2 * c.d_head
    return counts


def forward_flops(c: ModelConfig) -> dict[str, int]:
    """FLOPs of the matrix multiplies of one forward pass over a full context (batch 1), plus the
    element-wise work of QK-norm and the logit soft-cap when they are on."""
    T, d, f, L, V = c.context_length, c.d_model, c.d_ff, c.num_layers, c.vocab_size
    assert f is not None
    flops = {
        "Q projection": L * 2 * T * d * d,
        "K projection": L * 2 * T * d * d,
        "V projection": L * 2 * T * d * d,
        "scores Q·Kᵀ": L * 2 * T * T * d,
        "weighted sum of V": L * 2 * T * T * d,
        "output projection": L * 2 * T * d * d,
        "FFN w1": L * 2 * T * d * f,
        "FFN w2": L * 2 * T * f * d,
    }
    if c.ffn == "swiglu":
        flops["FFN w3"] = L * 2 * T * d * f
    flops["LM head"] = 2 * T * d * V
    # The switches beyond CS336 add element-wise work (not matrix multiplies; counted so MFU stays honest):
    if c.qk_norm:  # square, mean, scale and gain: ~4 FLOPs per query and key value
        flops["QK-norm (element-wise)"] = L * 2 * 4 * T * d
    if c.logit_softcap:  # divide, tanh, multiply: ~3 FLOPs per logit
        flops["logit soft-cap (element-wise)"] = 3 * T * V
    return flops


def activation_elements(c: ModelConfig, batch_size: int) -> int:
    """Elements saved for backward in one training step (CS336 §4.4's list), for `batch_size` sequences:
    per layer the norms' inputs, Q, K, V, attention scores and softmax, the weighted sum, the output
    projection, the FFN's matrix outputs, SiLU and gate; then the final norm, logits and softmax."""
    B, T, d, f, H, L, V = batch_size, c.context_length, c.d_model, c.d_ff, c.num_heads, c.num_layers, c.vocab_size
    assert f is not None
    norms = 2 * B * T * d if c.norm != "none" else 0
    attention = 3 * B * T * d + 2 * B * H * T * T + 2 * B * T * d
    ffn = (4 if c.ffn == "swiglu" else 2) * B * T * f + B * T * d
    final = (B * T * d if c.norm != "none" else 0) + 2 * B * T * V
    return L * (norms + attention + ffn) + final


def account(config: ModelConfig, batch_size: int = 1) -> Accounting:
    return Accounting(config, parameter_counts(config), forward_flops(config), batch_size)


def render(acc: Accounting, tokens: float, peak_name: str, peak_flops: float, mfu: float) -> str:
    c = acc.config
    lines = [
        f"model: vocab {c.vocab_size}, context {c.context_length}, {c.num_layers} layers, d_model {c.d_model}, "
        f"{c.num_heads} heads, d_ff {c.d_ff}, {c.ffn}, norm {c.norm}, position {c.position}"
        + (", tied embeddings" if c.tie_embeddings else ""),
        "",
        "Parameters",
    ]
    total = acc.total_parameters
    for name, n in acc.parameters.items():
        lines.append(f"  {name:<32} {n:>16,}  {100 * n / total:5.1f}%")
    lines.append(f"  {'total':<32} {total:>16,}  ({format_quantity(total)})")
    lines += ["", f"Forward FLOPs, one sequence of {c.context_length} tokens"]
    fwd = acc.total_forward_flops
    for name, n in acc.forward_flops.items():
        lines.append(f"  {name:<32} {format_quantity(n, 'FLOP'):>16}  {100 * n / fwd:5.1f}%")
    lines.append(
        f"  {'total':<32} {format_quantity(fwd, 'FLOP'):>16}  ({format_quantity(acc.forward_flops_per_token, 'FLOP')} per token)"
    )
    lines += ["", f"Training memory, fp32 AdamW, batch {acc.batch_size}"]
    mem = acc.memory_bytes()
    for name, n in mem.items():
        lines.append(f"  {name:<32} {n / 2**30:>13.2f} GiB")
    per_seq = activation_elements(c, 1) * FLOAT_BYTES
    lines.append(
        f"  {'total':<32} {sum(mem.values()) / 2**30:>13.2f} GiB  (activations: {per_seq / 2**30:.3f} GiB per sequence in the batch)"
    )
    seconds = acc.training_seconds(tokens, peak_flops, mfu)
    lines += [
        "",
        "Training compute",
        f"  FLOPs per step (batch {acc.batch_size})     {format_quantity(acc.training_flops_per_step, 'FLOP')}",
        f"  FLOPs per token                  {format_quantity(acc.training_flops_per_token, 'FLOP')}",
        f"  {format_quantity(tokens)} tokens at {mfu:.0%} MFU of {peak_name} ({format_quantity(peak_flops, 'FLOP/s')}): {format_duration(seconds)}",
    ]
    return "\n".join(lines)
