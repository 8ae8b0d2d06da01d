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

    def parameter_pairs(self, model: TransformerLM) -> list[tuple[str, Tensor, Tensor]]:
        """(name in `model`, its parameter, the matching parameter here) for every parameter of a
        `bpe_lm.model.TransformerLM` with the same config: the one map between the two implementations, used
        to copy weights across and to compare gradients."""
        c = self.config
        named: list[tuple[str, Tensor]] = [("token_embeddings.weight", self.embed.weight)]
        blocks: list[PlainBlock] = list(self.blocks)  # typed, so the attributes below are known
        for i, block in enumerate(blocks):
            layer: list[tuple[str, Tensor]] = [
                ("attn.q_proj.weight", block.q.weight),
                ("attn.k_proj.weight", block.k.weight),
                ("attn.v_proj.weight", block.v.weight),
                ("attn.output_proj.weight", block.o.weight),
                ("ffn.w1.weight", block.w1.weight),
                ("ffn.w2.weight", block.w2.weight),
            ]
            if block.w3 is not None:
                layer.append(("ffn.w3.weight", block.w3.weight))
            if c.qk_norm:
                layer += [("attn.q_norm.weight", block.q_gain), ("attn.k_norm.weight", block.k_gain)]
            if c.norm != "none":
                layer += [("ln1.weight", block.norm1), ("ln2.weight", block.norm2)]
            named += [(f"layers.{i}.{name}", p) for name, p in layer]
        if c.norm != "none":
            named.append(("ln_final.weight", self.norm))
        if not c.tie_embeddings:
            named.append(("lm_head.weight", self.head.weight))
        return [(name, model.get_parameter(name), p) for name, p in named]

    @torch.no_grad()
    def load_from(self, model: TransformerLM) -> PlainTransformerLM:
        """Copies the weights of a `bpe_lm.model.TransformerLM` with the same config."""
        for _, ours, plain in self.parameter_pairs(model):
            plain.copy_(ours)
        return self


def plain_loss(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
