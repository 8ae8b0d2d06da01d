"""`bpe_lm.model` against independent implementations on torch built-ins, plus the model's properties."""

from __future__ import annotations

import itertools

import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")
import torch.nn.functional as F  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bpe_lm import model as m  # noqa: E402
from bpe_lm.baseline import PlainTransformerLM, plain_loss, rope_complex  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small_config(**kw) -> m.ModelConfig:
    base = dict(vocab_size=97, context_length=32, d_model=32, num_layers=2, num_heads=4, d_ff=48)
    base.update(kw)
    return m.ModelConfig(**base)


def test_linear_and_embedding():
    lin = m.Linear(7, 5)
    x = torch.randn(2, 3, 7)
    assert lin.weight.shape == (5, 7)
    torch.testing.assert_close(lin(x), F.linear(x, lin.weight), **TOL)
    emb = m.Embedding(11, 4)
    ids = torch.randint(0, 11, (2, 6))
    torch.testing.assert_close(emb(ids), F.embedding(ids, emb.weight))


def test_initialisation_is_truncated_normal():
    lin = m.Linear(300, 200)
    std = (2 / 500) ** 0.5
    assert lin.weight.abs().max() <= 3 * std + 1e-6
    assert abs(lin.weight.std().item() - std) < 0.1 * std
    assert m.Embedding(1000, 64).weight.abs().max() <= 3.0
    assert torch.equal(m.RMSNorm(8).weight, torch.ones(8))


def test_rmsnorm_computes_in_float32():
    norm = m.RMSNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(norm(x), F.rms_norm(x, (16,), norm.weight, eps=1e-5), **TOL)
    # bf16 in and out, float32 inside: exactly the float32 result rounded once to bf16 ...
    half = (torch.randn(64, 16) * 50).to(torch.bfloat16)
    norm = norm.to(torch.bfloat16)
    out = norm(half)
    assert out.dtype == torch.bfloat16
    in_fp32 = F.rms_norm(half.float(), (16,), norm.weight.float(), eps=1e-5).to(torch.bfloat16)
    assert torch.equal(out, in_fp32)
    # ... which bf16 arithmetic would not give (so the test can tell the two apart).
    in_bf16 = half * torch.rsqrt(half.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    assert not torch.equal(in_bf16, in_fp32)


def test_feed_forwards():
    ffn = m.SwiGLU(8, 24)
    x = torch.randn(4, 8)
    expected = F.linear(F.silu(F.linear(x, ffn.w1.weight)) * F.linear(x, ffn.w3.weight), ffn.w2.weight)
    torch.testing.assert_close(ffn(x), expected, **TOL)
    plain = m.SiLUFeedForward(8, 32)
    torch.testing.assert_close(plain(x), F.linear(F.silu(F.linear(x, plain.w1.weight)), plain.w2.weight), **TOL)
    torch.testing.assert_close(m.silu(x), F.silu(x), **TOL)


def test_softmax_and_cross_entropy_are_stable():
    x = torch.randn(4, 10) * 1000
    torch.testing.assert_close(m.softmax(x, dim=-1), torch.softmax(x, dim=-1), **TOL)
    torch.testing.assert_close(m.softmax(x, dim=0), torch.softmax(x, dim=0), **TOL)
    logits = torch.randn(2, 3, 50) * 100
    targets = torch.randint(0, 50, (2, 3))
    loss = m.cross_entropy(logits, targets)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, F.cross_entropy(logits.reshape(-1, 50), targets.reshape(-1)), **TOL)


def test_attention_function_with_mask():
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 6)
    mask = torch.rand(5, 7) > 0.3
    mask[:, 0] = True
    torch.testing.assert_close(
        m.scaled_dot_product_attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **TOL
    )
    torch.testing.assert_close(m.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v), **TOL)


def test_rope_matches_complex_rotation_and_is_relative():
    rope = m.RotaryEmbedding(10000.0, 16, 64)
    x = torch.randn(2, 10, 16)
    pos = torch.arange(3, 13)
    torch.testing.assert_close(rope(x, pos), rope_complex(x, pos, 10000.0), **TOL)
    # ⟨rope(q, i), rope(k, j)⟩ depends only on i − j.
    q, k = torch.randn(16), torch.randn(16)

    def dot(i: int, j: int) -> torch.Tensor:
        return rope(q[None], torch.tensor([i])) @ rope(k[None], torch.tensor([j])).T

    torch.testing.assert_close(dot(5, 2), dot(40, 37), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dot(0, 0), (q @ k)[None, None], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("rope", [True, False])
def test_multihead_attention_matches_plain_torch(rope):
    d, h, T = 32, 4, 9
    r = m.RotaryEmbedding(10000.0, d // h, 16) if rope else None
    attn = m.MultiHeadSelfAttention(d, h, r, attention="reference")
    x = torch.randn(2, T, d)
    q, k, v = (
        F.linear(x, w).view(2, T, h, d // h).transpose(1, 2)
        for w in (attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight)
    )
    if rope:
        q, k = rope_complex(q, torch.arange(T), 10000.0), rope_complex(k, torch.arange(T), 10000.0)
    expected = F.linear(
        F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, T, d),
        attn.output_proj.weight,
    )
    torch.testing.assert_close(attn(x), expected, **TOL)
    attn.attention = "fused"
    torch.testing.assert_close(attn(x), expected, **TOL)


ABLATIONS = [
    dict(norm=n, position=p, ffn=f, tie_embeddings=t)
    for n, p, f, t in itertools.product(
        ["pre", "post", "none"], ["rope", "none"], ["swiglu", "silu", "relu2"], [False, True]
    )
]


@pytest.mark.parametrize("variant", ABLATIONS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_model_matches_plain_pytorch(variant):
    """Logits, loss and the gradient of every parameter equal an independent plain-PyTorch model's, with both
    attention implementations, for every combination of the ablation switches."""
    config = small_config(**variant, d_ff=None)
    torch.manual_seed(0)
    ours = m.TransformerLM(config)
    plain = PlainTransformerLM(config).load_from(ours)
    pairs = plain.parameter_pairs(ours)
    assert sorted(name for name, _, _ in pairs) == sorted(name for name, _ in ours.named_parameters())
    ids = torch.randint(0, config.vocab_size, (3, 21), generator=torch.Generator().manual_seed(1))
    x, y = ids[:, :-1], ids[:, 1:]
    for attention in ("reference", "fused"):
        for layer in ours.layers:
            layer.attn.attention = attention
        ours.zero_grad(set_to_none=True)
        plain.zero_grad(set_to_none=True)
        torch.testing.assert_close(ours(x), plain(x), atol=1e-4, rtol=1e-4)
        loss, ref = ours(x, targets=y), plain(x, targets=y)
        torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
        loss.backward()
        ref.backward()
        for name, a, b in pairs:
            assert a.grad is not None and b.grad is not None, name
            assert a.grad.abs().sum() > 0, name
            torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("variant", ABLATIONS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_every_variant_trains_a_step(variant):
    config = small_config(**variant, d_ff=None)
    model = m.TransformerLM(config)
    ids = torch.randint(0, config.vocab_size, (4, 17))
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    for _ in range(2):
        loss = m.cross_entropy(model(ids[:, :-1]), ids[:, 1:])
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        opt.step()


def test_state_dict_keys():
    keys = set(m.TransformerLM(small_config(num_layers=1)).state_dict())
    expected = {
        "token_embeddings.weight", "ln_final.weight", "lm_head.weight",
        "layers.0.attn.q_proj.weight", "layers.0.attn.k_proj.weight", "layers.0.attn.v_proj.weight",
        "layers.0.attn.output_proj.weight", "layers.0.ln1.weight", "layers.0.ln2.weight",
        "layers.0.ffn.w1.weight", "layers.0.ffn.w2.weight", "layers.0.ffn.w3.weight",
    }  # fmt: skip
    assert keys == expected


def test_causality():
    model = m.TransformerLM(small_config())
    ids = torch.randint(0, 97, (2, 16))
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 97
    with torch.no_grad():
        a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :10], b[:, :10], **TOL)
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_kv_cache_equals_full_forward():
    model = m.TransformerLM(small_config()).eval()
    ids = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        full = model(ids)
        cache = m.KVCache(model.config.num_layers)
        parts = [model(ids[:, :5], kv_cache=cache)] + [model(ids[:, i : i + 1], kv_cache=cache) for i in range(5, 12)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_extra_leading_batch_dims():
    attn = m.MultiHeadSelfAttention(16, 2, m.RotaryEmbedding(10000.0, 8, 8))
    x = torch.randn(2, 3, 5, 16)
    out = attn(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out[1, 2], attn(x[1, 2]), **TOL)
    assert m.RMSNorm(16)(x).shape == x.shape


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 3),
    seq=st.integers(1, 12),
    heads=st.sampled_from([1, 2, 4]),
    head_dim=st.sampled_from([2, 4, 8]),
)
def test_shapes(batch, seq, heads, head_dim):
    config = m.ModelConfig(vocab_size=31, context_length=12, d_model=heads * head_dim, num_layers=1, num_heads=heads)
    model = m.TransformerLM(config)
    ids = torch.randint(0, 31, (batch, seq))
    logits = model(ids)
    assert logits.shape == (batch, seq, 31)
    loss = m.cross_entropy(logits, ids)
    torch.testing.assert_close(loss, plain_loss(logits, ids), **TOL)


def test_config_errors():
    with pytest.raises(ValueError, match="divisible"):
        small_config(d_model=30)
    with pytest.raises(ValueError, match="model.norm must be one of"):
        small_config(norm="layer")
    with pytest.raises(ValueError, match="unknown model setting"):
        m.ModelConfig.from_dict({**small_config().to_dict(), "dropout": 0.1})
    assert small_config(d_ff=None).d_ff == 128  # 8/3 · 32 → multiple of 64
    assert small_config(d_ff=None, ffn="silu").d_ff == 128
    with pytest.raises(ValueError, match="longer than the context length"):
        m.TransformerLM(small_config())(torch.zeros(1, 33, dtype=torch.long))
