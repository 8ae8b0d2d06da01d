"""Documents in training (issue 25, items 3-4): windows that start at document starts (`data.align =
"document"`), and attention that stops at document boundaries (`model.document_mask`)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")

from bpe_lm.config import ConfigError, ModelConfig, build_config  # noqa: E402
from bpe_lm.data import WindowSampler  # noqa: E402
from bpe_lm.export import llama_incompatibility  # noqa: E402
from bpe_lm.metrics import read_metrics  # noqa: E402
from bpe_lm.model import KVCache, TransformerLM  # noqa: E402
from bpe_lm.sources import document_starts, index_path  # noqa: E402
from bpe_lm.train import Trainer  # noqa: E402

from conftest import run_keeping_checkpoint  # noqa: E402

EOT = 63
CTX = 16


def documents_file(path, n_docs: int = 300, seed: int = 0) -> np.ndarray:
    """Documents of 5..40 ids below EOT, each ended by EOT."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(n_docs):
        parts += [rng.integers(0, EOT, rng.integers(5, 40)), [EOT]]
    ids = np.concatenate(parts).astype(np.uint16)
    np.save(path, ids)
    return ids


def model_config(**kw) -> ModelConfig:
    return ModelConfig(
        **{**dict(vocab_size=64, context_length=CTX, d_model=32, num_layers=2, num_heads=4, d_ff=64), **kw}
    )


# ---------------------------------------------------------------------------------------------------- alignment


def test_document_starts_are_found_once_and_kept_beside_the_file(tmp_path):
    ids = documents_file(tmp_path / "t.npy")
    tokens = np.load(tmp_path / "t.npy", mmap_mode="r")
    expected = np.concatenate([[0], np.flatnonzero(ids == EOT) + 1])
    expected = expected[expected < len(ids)]
    starts = document_starts(tokens, tmp_path / "t.npy", EOT)
    assert np.array_equal(starts, expected)
    cache = index_path(tmp_path / "t.npy", EOT)
    assert cache.is_file() and not cache.name.endswith(".npy")  # a glob of token files never picks it up
    cache.write_bytes(cache.read_bytes()[:32] + np.array([5, 6], dtype="<i8").tobytes())  # read back as it is
    assert np.array_equal(document_starts(tokens, tmp_path / "t.npy", EOT), [5, 6])
    ids[:3] = EOT  # the file changes: its index is rebuilt
    np.save(tmp_path / "t.npy", ids)
    tokens = np.load(tmp_path / "t.npy", mmap_mode="r")
    assert list(document_starts(tokens, tmp_path / "t.npy", EOT)[:4]) == [0, 1, 2, 3]
    # A file of someone else's by the index's name is never written over; the starts are computed anyway.
    other = index_path(tmp_path / "t.npy", 7)
    other.write_bytes(b"not ours")
    document_starts(tokens, tmp_path / "t.npy", 7)
    assert other.read_bytes() == b"not ours"


def test_aligned_windows_start_at_document_starts(tmp_path):
    ids = documents_file(tmp_path / "t.npy")
    starts = document_starts(np.load(tmp_path / "t.npy", mmap_mode="r"), tmp_path / "t.npy", EOT)
    sampler = WindowSampler([[ids]], CTX, starts=[starts])
    x, y, _ = sampler.draw(2000, "cpu", torch.Generator().manual_seed(0))
    valid = {int(s) for s in starts if s < len(ids) - CTX}
    found = set()
    for row in x.numpy():
        # Each window is a slice of the file beginning at a document start.
        hits = [s for s in valid if np.array_equal(ids[s : s + CTX], row)]
        assert hits, row
        found.update(hits)
    assert len(found) > 0.5 * len(valid)  # drawn across the documents, not from a few


def test_document_alignment_needs_an_end_of_text_id(tmp_path):
    documents_file(tmp_path / "t.npy")
    raw = {
        "model": model_config().to_dict(),
        "data": {"train": str(tmp_path / "t.npy"), "valid": str(tmp_path / "t.npy"), "align": "document"},
        "training": {"max_iters": 2, "out_dir": str(tmp_path / "run"), "device": "cpu"},
    }
    with pytest.raises(ConfigError, match=r'data.align = "document" finds documents by their end-of-text id'):
        build_config(raw)
    raw["data"]["end_of_text_id"] = 64
    with pytest.raises(ConfigError, match=r"data.end_of_text_id \(64\) must be below model.vocab_size"):
        build_config(raw)
    raw["data"]["end_of_text_id"] = EOT
    assert build_config(raw).data.end_of_text_id == EOT


# ---------------------------------------------------------------------------------------------------- masking


def test_attention_stops_at_document_boundaries():
    torch.manual_seed(0)
    masked = TransformerLM(model_config(document_mask=True, end_of_text_id=EOT, attention="reference")).eval()
    later = torch.randint(0, EOT, (1, 7))
    with torch.no_grad():
        alone = masked(later)
        for first in (torch.randint(0, EOT, (1, 8)), torch.randint(0, EOT, (1, 8))):
            window = torch.cat([first, torch.tensor([[EOT]]), later], dim=1)  # 8 + EOT + 7 = 16
            logits = masked(window)
            # The later document sees nothing of the earlier one: as if run alone (RoPE is relative).
            assert torch.allclose(logits[:, 9:], alone, atol=1e-6, rtol=0)
        # The fused kernel with the mask gives the same.
        fused = TransformerLM(model_config(document_mask=True, end_of_text_id=EOT, attention="fused")).eval()
        fused.load_state_dict(masked.state_dict())
        assert torch.allclose(fused(window), logits, atol=1e-5)
        # Off, or on a window without an end of text, the model is the causal one.
        plain = TransformerLM(model_config(attention="reference")).eval()
        plain.load_state_dict(masked.state_dict())
        no_eot = torch.randint(0, EOT, (2, CTX))
        assert torch.allclose(plain(no_eot), masked(no_eot), atol=1e-6, rtol=0)
        assert not torch.allclose(plain(window)[:, 9:], logits[:, 9:], atol=1e-3)
    # The loss in forward (the fused linear + cross-entropy) masks the same way.
    targets = torch.randint(0, 64, (1, CTX))
    loss = masked(window, targets=targets)
    ref = torch.nn.functional.cross_entropy(masked(window).flatten(0, 1), targets.flatten())
    assert torch.allclose(loss, ref, atol=1e-5)


def test_the_kv_cache_keeps_the_documents():
    torch.manual_seed(1)
    model = TransformerLM(model_config(document_mask=True, end_of_text_id=EOT)).eval()
    ids = torch.tensor([[5, 9, 2, EOT, 7, 7, 3, EOT, EOT, 1, 4, 8]])
    with torch.no_grad():
        full = model(ids)
        cache = KVCache(model.config.num_layers)
        steps = [model(ids[:, :5], kv_cache=cache)] + [model(ids[:, i : i + 1], kv_cache=cache) for i in range(5, 12)]
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_document_mask_compiles_without_graph_breaks():
    model = TransformerLM(model_config(document_mask=True, end_of_text_id=EOT))
    compiled = torch.compile(model, fullgraph=True)  # fullgraph: a graph break is an error
    ids = torch.randint(0, 64, (2, CTX))
    ids[:, 5] = EOT
    assert torch.allclose(compiled(ids, targets=ids), model(ids, targets=ids), atol=1e-5)


def test_export_refuses_the_document_mask_only():
    assert llama_incompatibility(model_config(end_of_text_id=EOT)) is None
    assert "model.document_mask = True" in llama_incompatibility(model_config(document_mask=True, end_of_text_id=EOT))


def test_training_with_alignment_and_masking_resumes_exactly(tmp_path):
    documents_file(tmp_path / "train.npy", 400, seed=1)
    documents_file(tmp_path / "valid.npy", 60, seed=2)
    raw = {
        "model": {**model_config().to_dict(), "document_mask": True},
        "optimizer": {"lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 2},
        "data": {"train": str(tmp_path / "train.npy"), "valid": str(tmp_path / "valid.npy"), "align": "document",
                 "end_of_text_id": EOT},
        "training": {"batch_size": 8, "max_iters": 12, "eval_interval": 6, "eval_iters": 2, "log_interval": 1,
                     "checkpoint_interval": 6, "out_dir": str(tmp_path / "full"), "device": "cpu"},
    }  # fmt: skip
    cfg = build_config(raw)
    assert cfg.model.end_of_text_id == EOT
    run_keeping_checkpoint(cfg, 6, tmp_path / "resumed")
    raw["training"]["out_dir"] = str(tmp_path / "resumed")
    Trainer(build_config(raw), resume=True, progress=False).run()
    loss = lambda d: {r["step"]: r["train_loss"] for r in read_metrics(d) if "train_loss" in r}  # noqa: E731
    a, b = loss(tmp_path / "full"), loss(tmp_path / "resumed")
    assert [a[s] for s in range(7, 13)] == [b[s] for s in range(7, 13)]


def _flex_and_dense(device: str):
    torch.manual_seed(2)
    dense = TransformerLM(model_config(document_mask=True, end_of_text_id=EOT, attention="reference"), device=device)
    flex = TransformerLM(model_config(document_mask=True, end_of_text_id=EOT, attention="flex"), device=device)
    flex.load_state_dict(dense.state_dict())
    ids = torch.randint(0, EOT, (2, CTX), device=device)
    ids[0, 4], ids[0, 11], ids[1, 7] = EOT, EOT, EOT
    return flex, dense, ids, torch.randint(0, 64, (2, CTX), device=device)


def test_flex_attention_block_mask_equals_the_dense_mask():
    """FlexAttention with the block mask (what `auto` takes on CUDA) = the dense mask: the forward pass here
    on CPU (torch has no FlexAttention backward on CPU; the GPU test below checks the gradients)."""
    pytest.importorskip("torch.nn.attention.flex_attention")
    flex, dense, ids, targets = _flex_and_dense("cpu")
    with torch.no_grad():
        assert torch.allclose(flex(ids), dense(ids), atol=1e-5)
        assert torch.allclose(flex(ids, targets=targets), dense(ids, targets=targets), atol=1e-5)
    with pytest.raises(ValueError, match='model.attention = "flex" computes the document mask'):
        model_config(attention="flex")


@pytest.mark.gpu
def test_flex_attention_gradients_on_cuda():
    flex, dense, ids, targets = _flex_and_dense("cuda")
    a, b = flex(ids, targets=targets), dense(ids, targets=targets)
    a.backward()
    b.backward()
    assert torch.allclose(a, b, atol=1e-4)
    assert all(torch.allclose(p.grad, q.grad, atol=1e-4) for p, q in zip(flex.parameters(), dense.parameters()))
