"""The same architecture in plain PyTorch (nn.Linear, nn.Embedding, F.rms_norm, F.silu, F.relu,
F.scaled_dot_product_attention, complex-number RoPE, torch.tanh soft-capping, F.cross_entropy).

It is the independent implementation that `bpe_lm.model` is tested against (weights copied across with
`load_from`), and the reference that the training benchmarks time ours against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bpe_lm.model import ModelConfig, TransformerLM


def rope_complex(x: Tensor, positions: Tensor, theta: float) -> Tensor:
    """RoPE as a complex rotation of (x[2i] + i·x[2i+1]) by e^{i·pos·θ^(−2i/d)}."""
    d = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = positions.to(torch.float32)[..., None] * freqs  # (..., T, d/2)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], d // 2, 2).contiguous())
    return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)).flatten(-2).to(x.dtype)


class PlainBlock(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.c = c
        d, f = c.d_model, c.d_ff
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.norm1 = nn.Parameter(torch.ones(d))
        self.norm2 = nn.Parameter(torch.ones(d))
        self.w1 = nn.Linear(d, f, bias=False)
        self.w2 = nn.Linear(f, d, bias=False)
        self.w3 = nn.Linear(d, f, bias=False) if c.ffn == "swiglu" else None
        if c.qk_norm:
            self.q_gain = nn.Parameter(torch.ones(d // c.num_heads))
            self.k_gain = nn.Parameter(torch.ones(d // c.num_heads))

    def _norm(self, x: Tensor, weight: Tensor) -> Tensor:
        if self.c.norm == "none":
            return x
        return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps=1e-5).to(x.dtype)

    def _attn(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        H = self.c.num_heads
        q, k, v = (proj(x).view(B, T, H, D // H).transpose(1, 2) for proj in (self.q, self.k, self.v))
        if self.c.qk_norm:
            q = F.rms_norm(q.float(), (D // H,), self.q_gain.float(), eps=1e-5).to(q.dtype)
            k = F.rms_norm(k.float(), (D // H,), self.k_gain.float(), eps=1e-5).to(k.dtype)
        if self.c.position == "rope":
            pos = torch.arange(T, device=x.device)
            q, k = rope_complex(q, pos, self.c.rope_theta), rope_complex(k, pos, self.c.rope_theta)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(B, T, D))

    def _ffn(self, x: Tensor) -> Tensor:
        if self.c.ffn == "relu2":
            return self.w2(F.relu(self.w1(x)) ** 2)
        h = F.silu(self.w1(x))
        return self.w2(h * self.w3(x) if self.w3 is not None else h)

    def forward(self, x: Tensor) -> Tensor:
        if self.c.norm == "post":
            x = self._norm(x + self._attn(x), self.norm1)
            return self._norm(x + self._ffn(x), self.norm2)
        x = x + self._attn(self._norm(x, self.norm1))
        return x + self._ffn(self._norm(x, self.norm2))


class PlainTransformerLM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(PlainBlock(config) for _ in range(config.num_layers))
        self.norm = nn.Parameter(torch.ones(config.d_model))
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight

    def forward(self, token_ids: Tensor, targets: Tensor | None = None) -> Tensor:  # (B, T) -> (B, T, V), or the loss
        x = self.embed(token_ids)
        for block in self.blocks:
            x = block(x)
        if self.config.norm != "none":
            x = F.rms_norm(x.float(), (x.shape[-1],), self.norm.float(), eps=1e-5).to(x.dtype)
        logits = self.head(x)
        if self.config.logit_softcap:
            logits = self.config.logit_softcap * torch.tanh(logits / self.config.logit_softcap)
        return logits if targets is None else plain_loss(logits, targets)

    @torch.no_grad()
    def load_from(self, model: TransformerLM) -> PlainTransformerLM:
        """Copies the weights of a `bpe_lm.model.TransformerLM` with the same config."""
        self.embed.weight.copy_(model.token_embeddings.weight)
        for plain, ours in zip(self.blocks, model.layers):
            plain.q.weight.copy_(ours.attn.q_proj.weight)
            plain.k.weight.copy_(ours.attn.k_proj.weight)
            plain.v.weight.copy_(ours.attn.v_proj.weight)
            plain.o.weight.copy_(ours.attn.output_proj.weight)
            plain.w1.weight.copy_(ours.ffn.w1.weight)
            plain.w2.weight.copy_(ours.ffn.w2.weight)
            if plain.w3 is not None:
                plain.w3.weight.copy_(ours.ffn.w3.weight)
            if self.config.qk_norm:
                plain.q_gain.copy_(ours.attn.q_norm.weight)
                plain.k_gain.copy_(ours.attn.k_norm.weight)
            if self.config.norm != "none":
                plain.norm1.copy_(ours.ln1.weight)
                plain.norm2.copy_(ours.ln2.weight)
        if self.config.norm != "none":
            self.norm.copy_(model.ln_final.weight)
        if not self.config.tie_embeddings:
            self.head.weight.copy_(model.lm_head.weight)
        return self


def plain_loss(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
