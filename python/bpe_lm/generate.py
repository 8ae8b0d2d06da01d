"""Sampling from a trained model: temperature, top-k, nucleus (top-p), stop at <|endoftext|>, with a KV
cache so each new token costs one position of attention rather than a full forward pass."""

from __future__ import annotations

import torch
from torch import Tensor

from bpe_lm.model import KVCache, TransformerLM, softmax


def sample_next(
    logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None
) -> Tensor:
    """One token id per row of `logits` (B, V). Temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = softmax(logits, dim=-1)  # (B, V)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the token that crosses it included).
        before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(
    model: TransformerLM,
    prompt: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> list[int]:
    """Continues `prompt` (token ids) by up to `max_new_tokens`, stopping after `eos_id`. Returns the new
    ids. Past the context length, the window slides and every step is a full forward over it (with RoPE,
    cached keys hold absolute positions that a sliding window would change)."""
    if not prompt:
        raise ValueError("the prompt must hold at least one token")
    device = next(model.parameters()).device
    ctx = model.config.context_length
    tokens = list(prompt)
    out: list[int] = []
    cache = KVCache(model.config.num_layers) if use_cache else None
    fed = 0  # tokens already in the cache
    for _ in range(max_new_tokens):
        if cache is not None and len(tokens) <= ctx:
            logits = model(torch.tensor([tokens[fed:]], device=device), kv_cache=cache)[:, -1]
            fed = len(tokens)
        else:
            logits = model(torch.tensor([tokens[-ctx:]], device=device))[:, -1]
        next_id = int(sample_next(logits, temperature, top_k, top_p, generator).item())
        tokens.append(next_id)
        out.append(next_id)
        if eos_id is not None and next_id == eos_id:
            break
    return out
