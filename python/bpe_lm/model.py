"""A Transformer language model written from scratch (CS336 assignment 1, §3).

The reference path uses only `nn.Parameter`, container modules and plain tensor ops: no `nn.Linear`,
`nn.Embedding`, no `torch.nn.functional` softmax, attention or cross-entropy. Two fast paths stand beside
it: attention through torch's fused `scaled_dot_product_attention` (`attention="fused"`, the default), which
equals the reference within floating-point tolerance (tested), and, for training only, the layers'
projections multiplied in float8 (`TransformerLM.enable_float8`, `training.float8`; off by default).

Read top to bottom: building blocks (Linear, Embedding, RMSNorm, feed-forward, RoPE), functions (softmax,
silu, attention, cross-entropy), multi-head self-attention, the block, the model. Shapes use
B = batch (any leading dims), T = sequence, D = d_model, H = heads, K = d_model / H, F = d_ff, V = vocab.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from bpe_lm.config import ModelConfig
from bpe_lm.float8 import DIMENSION_MULTIPLE, float8_matmul

# ----------------------------------------------------------------------------------------------------
# Building blocks


def _trunc_normal_(t: Tensor, std: float) -> Tensor:
    return nn.init.trunc_normal_(t, mean=0.0, std=std, a=-3 * std, b=3 * std)


def project(x: Tensor, weight: Tensor, float8: bool = False) -> Tensor:
    """x Wᵀ: every projection's matrix multiply, in float8 when its module was switched to it
    (`training.float8`, see bpe_lm.float8)."""
    if float8:
        return float8_matmul(x, weight)
    return x @ weight.T


class Linear(nn.Module):
    """y = x Wᵀ, no bias; W ~ N(0, 2 / (in + out)) truncated at ±3σ (§3.4.1)."""

    float8 = False  # this projection's GEMMs in float8 (set by TransformerLM.enable_float8, for training)

    def __init__(self, in_features: int, out_features: int, device=None, dtype=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))  # (out, in)
        _trunc_normal_(self.weight, math.sqrt(2.0 / (in_features + out_features)))

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        return project(x, self.weight, self.float8)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Embedding(nn.Module):
    """A lookup table of `num_embeddings` vectors; init N(0, 1) truncated at ±3."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))  # (V, D)
        _trunc_normal_(self.weight, 1.0)

    def forward(self, token_ids: Tensor) -> Tensor:  # (...) int -> (..., D)
        return self.weight[token_ids]


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · g, computed in float32 and cast back to the input dtype."""

    def __init__(self, d_model: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))  # (D,)

    def forward(self, x: Tensor) -> Tensor:  # (..., D) -> (..., D)
        in_dtype = x.dtype
        x = x.to(torch.float32)
        inv_rms = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        return (x * inv_rms * self.weight).to(in_dtype)


def silu(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) ⊙ w3 x)."""

    def __init__(self, d_model: int, d_ff: int, device=None, dtype=None) -> None:
        super().__init__()
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)  # (F, D)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)  # (D, F)
        self.w3 = Linear(d_model, d_ff, device=device, dtype=dtype)  # (F, D)

    def forward(self, x: Tensor) -> Tensor:  # (..., D) -> (..., D)
        # w1 x and w3 x as one GEMM over the stacked weights: one kernel instead of two, same parameters.
        stacked = torch.cat((self.w1.weight, self.w3.weight))  # (2F, D)
        gate, up = project(x, stacked, self.w1.float8).chunk(2, dim=-1)  # (..., F) each
        return self.w2(silu(gate) * up)


class SiLUFeedForward(nn.Module):
    """w2(silu(w1 x)): the ablation of SwiGLU's gate (two matrices; match parameters via d_ff)."""

    def __init__(self, d_model: int, d_ff: int, device=None, dtype=None) -> None:
        super().__init__()
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)  # (F, D)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)  # (D, F)

    def forward(self, x: Tensor) -> Tensor:  # (..., D) -> (..., D)
        return self.w2(silu(self.w1(x)))


class ReLUSquaredFeedForward(SiLUFeedForward):
    """w2(relu(w1 x)²): the feed-forward of the modded-nanogpt speedrun (SiLU's two matrices, ReLU²)."""

    def forward(self, x: Tensor) -> Tensor:  # (..., D) -> (..., D)
        return self.w2(torch.relu(self.w1(x)).square())


class RotaryEmbedding(nn.Module):
    """RoPE: rotates each adjacent pair (x[2i], x[2i+1]) by angle pos · θ^(−2i/d_k)."""

    cos: Tensor  # (T_max, K): cos of each pair's angle, at both of its positions; a buffer
    sin: Tensor  # (T_max, K): its sin, negated at the pair's first position

    def __init__(self, theta: float, d_k: int, max_seq_len: int, device=None) -> None:
        super().__init__()
        if d_k % 2:
            raise ValueError(f"RoPE needs an even dimension, not {d_k}")
        inv_freq = theta ** (-torch.arange(0, d_k, 2, device=device, dtype=torch.float32) / d_k)  # (K/2,)
        angles = torch.arange(max_seq_len, device=device, dtype=torch.float32)[:, None] * inv_freq  # (T_max, K/2)
        # Laid out per coordinate, so a rotation is two products and a sum over whole rows (see `rotate`).
        # Recomputable from the config, so not saved in checkpoints.
        self.register_buffer("cos", torch.cos(angles).repeat_interleave(2, dim=-1), persistent=False)
        sin = torch.sin(angles)
        self.register_buffer("sin", torch.stack((-sin, sin), dim=-1).flatten(-2), persistent=False)

    def tables(self, token_positions: Tensor, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """cos and signed sin at these positions, (..., T, K) each. The model gathers them once per forward
        and hands them to every layer, instead of each layer gathering them twice (for q and for k)."""
        cos, sin = self.cos[token_positions], self.sin[token_positions]
        return (cos, sin) if dtype is None else (cos.to(dtype), sin.to(dtype))

    @staticmethod
    def rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:  # x (..., T, K), cos/sin broadcastable to it
        """(x[2i]·cos − x[2i+1]·sin, x[2i+1]·cos + x[2i]·sin) for every pair, computed as x·cos + swapped·sin,
        where `swapped` exchanges each pair's two values and `sin` carries the minus: the same products and
        sums, so the same bits, in three passes over x where slicing pairs apart and stacking them back takes
        seven."""
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)  # (..., T, K): x[2i+1], x[2i], ...
        return x * cos + swapped * sin

    def forward(self, x: Tensor, token_positions: Tensor) -> Tensor:  # x (..., T, K), positions (..., T)
        return self.rotate(x, *self.tables(token_positions))


# ----------------------------------------------------------------------------------------------------
# Functions


def softmax(x: Tensor, dim: int) -> Tensor:
    """Numerically stable: the max is subtracted first, so large inputs never overflow. (Softmax does not
    change under a shift, so no gradient flows through the max.)"""
    shifted = x - x.amax(dim=dim, keepdim=True).detach()
    exp = torch.exp(shifted)
    return exp / exp.sum(dim=dim, keepdim=True)


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax(q kᵀ / √d_k) v. q (..., Tq, K), k (..., Tk, K), v (..., Tk, Kv); mask (Tq, Tk) bool, True =
    may attend. A query whose keys are all masked gets zeros."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., Tq, Tk)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = softmax(scores, dim=-1)
    if mask is not None:
        weights = torch.nan_to_num(weights, nan=0.0)  # rows with every key masked
    return weights @ v  # (..., Tq, Kv)


class _CrossEntropy(torch.autograd.Function):
    """Mean of −log softmax(logits)[target] over rows, with the gradient written out by hand
    (softmax − one-hot) so the (rows × vocab) tensor is walked a few times, not once per autograd node."""

    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:  # (N, V) float32, (N,) int
        shifted = logits - logits.amax(dim=-1, keepdim=True)  # (N, V); the max keeps exp() finite
        log_sum_exp = torch.exp(shifted).sum(dim=-1, keepdim=True).log()  # (N, 1)
        target = shifted.gather(-1, targets.unsqueeze(-1))  # (N, 1)
        ctx.save_for_backward(shifted, log_sum_exp, targets)
        return (log_sum_exp - target).mean()

    @staticmethod
    def backward(ctx, grad: Tensor):
        shifted, log_sum_exp, targets = ctx.saved_tensors
        probs = (shifted - log_sum_exp).exp_()  # softmax; `shifted` stays intact for a repeated backward
        probs.scatter_add_(-1, targets.unsqueeze(-1), torch.full_like(log_sum_exp, -1.0))
        return probs.mul_(grad / probs.shape[0]), None


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean over all leading dims of −log softmax(logits)[target]; stable for large logits (computed in
    float32 after subtracting each row's max)."""
    vocab = logits.shape[-1]
    return _CrossEntropy.apply(logits.float().reshape(-1, vocab), targets.reshape(-1))


# Rows of logits per chunk in `linear_cross_entropy`: about this many bytes of float32 logits at a time. On a
# GPU large chunks keep the kernels few and long; on a CPU a chunk that stays in the last-level cache while
# the softmax walks it a dozen times is faster (measured at N = V = 4096, D = 128: 15-17% less time than 64 MB
# chunks), as long as it has at least 2·D rows: every chunk adds a (V × D) product into the weight's
# gradient, which fewer rows would not amortise (at V = 50257, D = 768: 64 rows 34% slower than 1280).
LOSS_CHUNK_BYTES = {"cuda": 256 << 20, "cpu": 8 << 20}


def _loss_chunk_rows(vocab: int, dim: int, device_type: str) -> int:
    rows = LOSS_CHUNK_BYTES.get(device_type, LOSS_CHUNK_BYTES["cuda"]) // (4 * vocab)
    if device_type == "cpu":
        rows = max(rows, 2 * dim)
    return max(64, rows // 64 * 64)


def _reduction_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision matmuls, and float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def _chunk_softmax_loss(logits: Tensor, targets: Tensor, softcap: float = 0.0) -> tuple[Tensor, Tensor]:
    """For a chunk of float32 logits (n, V), overwritten in place with the gradient of the summed loss with
    respect to them: softmax − one-hot, times the soft-cap's derivative 1 − tanh²(z/c) when capped.
    Returns (that gradient, summed loss)."""
    tanh = None
    if softcap:
        tanh = logits.div_(softcap).tanh_()  # (n, V)
        logits = tanh * softcap  # the capped logits, c·tanh(z/c)
    logits.sub_(logits.amax(dim=-1, keepdim=True))  # the max keeps exp() finite
    target = logits.gather(-1, targets.unsqueeze(-1))  # (n, 1)
    exp = logits.exp_()
    total = exp.sum(dim=-1, keepdim=True)  # (n, 1)
    loss = (total.log() - target).sum()
    probs = exp.div_(total)
    probs.scatter_add_(-1, targets.unsqueeze(-1), torch.full_like(total, -1.0))
    if tanh is not None:
        probs.addcmul_(probs, tanh.square_(), value=-1.0)  # probs · (1 − tanh²), in place
    return probs, loss


class _LinearCrossEntropy(torch.autograd.Function):
    """mean(−log softmax(h Wᵀ)[target]) over rows, in row chunks. Each chunk's logits exist only while
    that chunk is processed, and the gradients for h and W are computed in the same pass (the loss ends
    the graph, so its upstream gradient is one scalar, applied in `backward`): three GEMMs per chunk as in
    an unfused head, and no (N × V) tensor in any dtype. Liger-Kernel's fused linear cross-entropy works
    the same way."""

    @staticmethod
    def forward(
        ctx, hidden: Tensor, weight: Tensor, targets: Tensor, chunk_rows: int, softcap: float
    ) -> Tensor:  # (N, D), (V, D), (N,)
        n = hidden.shape[0]
        acc = _reduction_dtype(hidden.dtype)
        grad_hidden = torch.empty_like(hidden)  # (N, D)
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)  # (V, D), summed over chunks
        loss = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, n, chunk_rows):
            h = hidden[start : start + chunk_rows]  # (n_c, D)
            grad_logits, chunk_loss = _chunk_softmax_loss(
                (h @ weight.T).to(acc), targets[start : start + chunk_rows], softcap
            )
            grad_logits = grad_logits.to(h.dtype)  # (n_c, V)
            grad_hidden[start : start + chunk_rows] = grad_logits @ weight
            if h.dtype == acc:  # the product added into the sum by the GEMM itself: no (V × D) temporary
                grad_weight.addmm_(grad_logits.T, h)
            else:
                grad_weight += (grad_logits.T @ h).to(acc)
            loss += chunk_loss
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return loss / n

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        scale = grad / grad_hidden.shape[0]
        return grad_hidden * scale.to(grad_hidden.dtype), (grad_weight * scale).to(ctx.weight_dtype), None, None, None


def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, targets: Tensor, chunk_rows: int | None = None, softcap: float = 0.0
) -> Tensor:
    """cross_entropy(hidden @ weightᵀ, targets) without materialising the (N × V) logits: hidden (N, D),
    weight (V, D), targets (N,). Each chunk's logits are computed in the matmul dtype (the autocast dtype
    under autocast) and reduced in float32 (float64 for float64 inputs), `chunk_rows` rows at a time
    (default: ~256 MB of float32 on a GPU, ~8 MB on a CPU). With `softcap` c > 0 the logits z are first
    capped to c·tanh(z/c)."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        # What autocast does for a matmul, made explicit, so the chunks' GEMMs run in that dtype.
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    elif weight.dtype != hidden.dtype:
        weight = weight.to(hidden.dtype)
    rows = chunk_rows or _loss_chunk_rows(weight.shape[0], weight.shape[1], device_type)
    if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(hidden, weight, targets, rows, softcap)
    acc = _reduction_dtype(hidden.dtype)
    loss = torch.zeros((), dtype=acc, device=hidden.device)
    for start in range(0, hidden.shape[0], rows):
        logits = (hidden[start : start + rows] @ weight.T).to(acc)
        loss += _chunk_softmax_loss(logits, targets[start : start + rows], softcap)[1]
    return loss / hidden.shape[0]


# ----------------------------------------------------------------------------------------------------
# Attention


class KVCache:
    """Keys and values of the tokens seen so far, per layer, so each new token costs one position of
    attention instead of a full forward pass."""

    def __init__(self, num_layers: int) -> None:
        self.keys: list[Tensor | None] = [None] * num_layers
        self.values: list[Tensor | None] = [None] * num_layers
        # With document_mask: the document of each cached position (B, past), and end-of-text ids seen (B,).
        self.documents: Tensor | None = None
        self.ends_seen: Tensor | None = None

    @property
    def length(self) -> int:
        """Positions cached (by the last layer, which is filled last in a forward pass)."""
        return self.layer_length(len(self.keys) - 1)

    def layer_length(self, layer: int) -> int:
        k = self.keys[layer]
        return 0 if k is None else k.shape[-2]

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:  # (B, H, T_new, K) each
        past_k, past_v = self.keys[layer], self.values[layer]
        if past_k is not None and past_v is not None:
            k = torch.cat((past_k, k), dim=-2)
            v = torch.cat((past_v, v), dim=-2)
        self.keys[layer], self.values[layer] = k, v
        return k, v  # (B, H, T_past + T_new, K)


_FLEX: Any = None


def _flex_attention() -> Any:
    """FlexAttention, compiled once (eager it materialises the whole score matrix and warns)."""
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


class MultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention with optional RoPE on queries and keys."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        rope: RotaryEmbedding | None = None,
        device=None,
        dtype=None,
        attention: str = "auto",
        layer_index: int = 0,
        qk_norm: bool = False,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.rope = rope
        self.attention = attention
        self.layer_index = layer_index
        self.q_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.k_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.v_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.output_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        if qk_norm:  # one gain per head dimension, shared by the heads; keys exist only when on
            self.q_norm = RMSNorm(d_model // num_heads, device=device, dtype=dtype)
            self.k_norm = RMSNorm(d_model // num_heads, device=device, dtype=dtype)
        self.qk_norm = qk_norm

    def _heads(self, x: Tensor) -> Tensor:  # (..., T, D) -> (..., H, T, K)
        return x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)

    def forward(
        self,
        x: Tensor,
        token_positions: Tensor | None = None,
        kv_cache: KVCache | None = None,
        rope_tables: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:  # (..., T, D) -> (..., T, D); rope_tables: (cos, sin) at these positions, from RotaryEmbedding.tables
        """`mask` (B, 1, T, past + T) bool, True = may attend: replaces the causal mask (document_mask)."""
        T = x.shape[-2]
        past = kv_cache.layer_length(self.layer_index) if kv_cache is not None else 0
        # q, k and v as one GEMM over the stacked weights (the saved parameters stay q_proj/k_proj/v_proj).
        w_qkv = torch.cat((self.q_proj.weight, self.k_proj.weight, self.v_proj.weight))  # (3D, D)
        q, k, v = (
            self._heads(t) for t in project(x, w_qkv, self.q_proj.float8).chunk(3, dim=-1)
        )  # (..., H, T, K) each
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            if rope_tables is None:
                if token_positions is None:
                    token_positions = torch.arange(past, past + T, device=x.device)
                rope_tables = self.rope.tables(token_positions)
            cos, sin = (t.unsqueeze(-3) for t in rope_tables)  # (..., 1, T, K): the same for every head
            q, k = RotaryEmbedding.rotate(q, cos, sin), RotaryEmbedding.rotate(k, cos, sin)
        if kv_cache is not None:
            k, v = kv_cache.append(self.layer_index, k, v)  # (..., H, past + T, K)
        out = self._attend(q, k, v, past) if mask is None else self._attend_masked(q, k, v, mask)  # (..., H, T, K)
        return self.output_proj(out.transpose(-3, -2).flatten(-2))  # (..., T, D)

    def _attend_masked(self, q: Tensor, k: Tensor, v: Tensor, mask: Any) -> Tensor:
        if not isinstance(mask, Tensor):  # a FlexAttention BlockMask (document_mask, see TransformerLM)
            return _flex_attention()(q, k, v, block_mask=mask)
        if self.attention in ("auto", "fused", "flex"):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return scaled_dot_product_attention(q, k, v, mask)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, past: int) -> Tensor:
        T, total = q.shape[-2], k.shape[-2]
        fused = self.attention in ("auto", "fused")
        if past == 0:
            if fused:
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
            causal = torch.ones(T, total, dtype=torch.bool, device=q.device).tril()
            return scaled_dot_product_attention(q, k, v, causal)
        # With cached keys, query i sits at position past + i and sees keys 0..past + i.
        mask = torch.ones(T, total, dtype=torch.bool, device=q.device).tril(diagonal=past)
        if fused:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return scaled_dot_product_attention(q, k, v, mask)


# ----------------------------------------------------------------------------------------------------
# The model


class TransformerBlock(nn.Module):
    """Pre-norm by default: x + attn(ln1(x)), then + ffn(ln2(x)). Post-norm: ln(x + sublayer(x)).
    No norm: x + sublayer(x)."""

    def __init__(
        self, config: ModelConfig, rope: RotaryEmbedding | None = None, layer_index: int = 0, device=None, dtype=None
    ) -> None:
        super().__init__()
        self.norm = config.norm
        d, f = config.d_model, config.d_ff
        assert f is not None
        self.attn = MultiHeadSelfAttention(
            d,
            config.num_heads,
            rope,
            device=device,
            dtype=dtype,
            attention=config.attention,
            layer_index=layer_index,
            qk_norm=config.qk_norm,
        )
        make_norm = (lambda: RMSNorm(d, device=device, dtype=dtype)) if config.norm != "none" else nn.Identity
        self.ln1 = make_norm()
        self.ffn: SwiGLU | SiLUFeedForward | ReLUSquaredFeedForward
        if config.ffn == "swiglu":
            self.ffn = SwiGLU(d, f, device=device, dtype=dtype)
        elif config.ffn == "silu":
            self.ffn = SiLUFeedForward(d, f, device=device, dtype=dtype)
        else:
            self.ffn = ReLUSquaredFeedForward(d, f, device=device, dtype=dtype)
        self.ln2 = make_norm()
        if config.zero_init_output:  # each block starts as the identity on the residual stream
            with torch.no_grad():
                self.attn.output_proj.weight.zero_()
                self.ffn.w2.weight.zero_()

    def forward(
        self,
        x: Tensor,
        token_positions: Tensor | None = None,
        kv_cache: KVCache | None = None,
        rope_tables: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:  # (B, T, D)
        if self.norm == "post":
            x = self.ln1(x + self.attn(x, token_positions, kv_cache, rope_tables, mask))
            return self.ln2(x + self.ffn(x))
        x = x + self.attn(self.ln1(x), token_positions, kv_cache, rope_tables, mask)
        return x + self.ffn(self.ln2(x))


class TransformerLM(nn.Module):
    def __init__(self, config: ModelConfig, device=None, dtype=None) -> None:
        super().__init__()
        if config.document_mask and config.end_of_text_id is None:
            raise ValueError("model.document_mask needs model.end_of_text_id (the id that ends a document)")
        self.config = config
        self.token_embeddings = Embedding(config.vocab_size, config.d_model, device=device, dtype=dtype)
        # One RoPE table shared by every layer (its buffers are not parameters).
        rope = (
            RotaryEmbedding(config.rope_theta, config.d_head, config.context_length, device=device)
            if config.position == "rope"
            else None
        )
        self.rope = rope  # its buffers are not persistent: no state-dict key
        self.layers = nn.ModuleList(
            TransformerBlock(config, rope, i, device=device, dtype=dtype) for i in range(config.num_layers)
        )
        self.ln_final = RMSNorm(config.d_model, device=device, dtype=dtype) if config.norm != "none" else nn.Identity()
        self.lm_head = Linear(config.d_model, config.vocab_size, device=device, dtype=dtype)  # (V, D)
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embeddings.weight

    def enable_float8(self, device: torch.device) -> list[str]:
        """Switches the projections inside the layers (attention q/k/v/output, the feed-forward's matrices)
        to float8 GEMMs for training (bpe_lm.float8) and returns their names. The embeddings and the head stay
        as they are (the head's GEMMs live in the fused loss, and large vocabularies are rarely a multiple of
        16). On CUDA a projection whose dimensions are not multiples of 16 stays in its dtype."""
        switched = []
        for name, module in self.layers.named_modules(prefix="layers"):
            if not isinstance(module, Linear):
                continue
            fits = module.in_features % DIMENSION_MULTIPLE == 0 and module.out_features % DIMENSION_MULTIPLE == 0
            if device.type == "cuda" and not fits:
                continue
            module.float8 = True
            switched.append(name)
        return switched

    def forward(self, token_ids: Tensor, targets: Tensor | None = None, *, kv_cache: KVCache | None = None) -> Tensor:
        """(B, T) ids -> (B, T, V) logits; with targets (B, T), the mean cross-entropy loss instead, computed
        by `linear_cross_entropy` so the training step never holds the (B·T × V) logits."""
        T = token_ids.shape[-1]
        past = kv_cache.length if kv_cache is not None else 0
        if past + T > self.config.context_length and self.config.position == "rope":
            raise ValueError(
                f"sequence of {past + T} tokens is longer than the context length {self.config.context_length}"
            )
        positions = torch.arange(past, past + T, device=token_ids.device)  # (T,)
        rope_tables = (
            self.rope.tables(positions) if self.rope is not None else None
        )  # (T, K) each, shared by every layer
        mask: Any = None
        if self.config.document_mask:
            flex = self.config.attention == "flex" or (self.config.attention == "auto" and token_ids.is_cuda)
            mask = (
                self._document_block_mask(token_ids)
                if flex and kv_cache is None
                else self._document_mask(token_ids, kv_cache)
            )
        x = self.token_embeddings(token_ids)  # (B, T, D)
        for layer in self.layers:
            x = layer(x, positions, kv_cache, rope_tables, mask)
        x = self.ln_final(x)
        cap = self.config.logit_softcap
        if targets is None:
            logits = self.lm_head(x)  # (B, T, V)
            return cap * torch.tanh(logits / cap) if cap else logits
        return linear_cross_entropy(x.flatten(0, -2), self.lm_head.weight, targets.flatten(), softcap=cap)  # scalar

    def _ends(self, token_ids: Tensor) -> Tensor:
        assert self.config.end_of_text_id is not None  # checked in __init__
        return token_ids.eq(self.config.end_of_text_id)

    def _document_block_mask(self, token_ids: Tensor) -> Any:
        """The document mask as FlexAttention's BlockMask: blocks wholly masked are skipped, not computed."""
        from torch.nn.attention.flex_attention import create_block_mask

        ends = self._ends(token_ids)
        documents = torch.cumsum(ends.long(), dim=-1) - ends.long()  # (B, T): an end belongs to its document

        def same_document(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            return (q >= k) & (documents[b, q] == documents[b, k])

        B, T = token_ids.shape
        return create_block_mask(same_document, B, None, T, T, device=token_ids.device)

    def _document_mask(self, token_ids: Tensor, kv_cache: KVCache | None) -> Tensor:
        """(B, 1, T, past + T) bool: query i may attend key j when j is not after it and both are of one
        document. An end-of-text token ends its document (it belongs to the text before it), so the token
        after it starts a new one. With a KV cache, the documents of the cached positions are kept in it."""
        ends = self._ends(token_ids)  # (B, T)
        count = torch.cumsum(ends.long(), dim=-1)
        seen = kv_cache.ends_seen if kv_cache is not None and kv_cache.ends_seen is not None else None
        documents = count - ends.long() + (seen.unsqueeze(-1) if seen is not None else 0)  # (B, T)
        keys = documents
        past = 0
        if kv_cache is not None:
            if kv_cache.documents is not None:
                past = kv_cache.documents.shape[-1]
                keys = torch.cat((kv_cache.documents, documents), dim=-1)
            kv_cache.documents = keys
            kv_cache.ends_seen = documents[..., -1] + ends[..., -1].long()
        T = token_ids.shape[-1]
        causal = torch.ones(T, past + T, dtype=torch.bool, device=token_ids.device).tril(diagonal=past)
        return (causal & (documents.unsqueeze(-1) == keys.unsqueeze(-2))).unsqueeze(-3)

    def num_parameters(self) -> int:
        """Distinct parameters (a tied embedding counts once)."""
        return sum(p.numel() for p in self.parameters())
