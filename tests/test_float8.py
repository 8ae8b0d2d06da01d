"""training.float8: float8 GEMMs for the layers' projections (bpe_lm.float8), numerics checked on CPU, where
torch._scaled_mm computes the same float8 products as a GPU's tensor cores, only slowly."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from bpe_lm import float8  # noqa: E402
from bpe_lm.config import ConfigError, build_config  # noqa: E402
from bpe_lm.metrics import read_metrics  # noqa: E402
from bpe_lm.model import ModelConfig, TransformerLM  # noqa: E402
from bpe_lm.train import Trainer  # noqa: E402

from conftest import write_token_files  # noqa: E402


@pytest.fixture()
def token_files(tmp_path):
    return write_token_files(tmp_path, 96)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def test_float8_casts_keep_the_format_precision_and_handle_zeros():
    t = torch.randn(64, 48) * 30
    for dtype, mantissa_bits in ((float8.FORWARD_DTYPE, 3), (float8.BACKWARD_DTYPE, 2)):
        scaled, inverse = float8.to_float8(t, dtype)
        assert scaled.dtype == dtype
        back = scaled.float() * inverse
        # Round to nearest: at most half a unit in the last place, relative, for values in the normal range.
        big = t.abs() > t.abs().max() / 100
        assert ((back - t).abs()[big] / t.abs()[big]).max() <= 2.0 ** -(mantissa_bits + 1) + 1e-6
        assert scaled.float().abs().max() == torch.finfo(dtype).max  # the largest value uses the whole range
    zeros, inverse = float8.to_float8(torch.zeros(4, 4), float8.FORWARD_DTYPE)
    assert inverse.item() == 1.0 and not zeros.float().any()


def test_float8_matmul_is_close_to_float32_in_value_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(3, 32, 64, requires_grad=True)
    w = (torch.randn(48, 64) * 0.1).requires_grad_()
    grad = torch.randn(3, 32, 48)
    out = float8.float8_matmul(x, w)
    out.backward(grad)
    x_ref, w_ref = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = x_ref @ w_ref.T
    ref.backward(grad)
    assert out.shape == ref.shape and out.dtype == torch.float32
    # e4m3 keeps 3 mantissa bits (e5m2, the gradient's, 2): a few percent per product, less over a sum.
    assert relative_error(out, ref) < 0.05
    assert relative_error(x.grad, x_ref.grad) < 0.1
    assert relative_error(w.grad, w_ref.grad) < 0.1
    assert w.grad.dtype == w.dtype
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert float8.float8_matmul(x, w).dtype == torch.bfloat16


def tiny() -> ModelConfig:
    return ModelConfig(vocab_size=96, context_length=16, d_model=32, num_layers=2, num_heads=2, d_ff=64)


def test_enable_float8_switches_the_layers_projections_only():
    model = TransformerLM(tiny())
    switched = model.enable_float8(torch.device("cpu"))
    assert switched and all(name.startswith("layers.") for name in switched)
    assert {"layers.0.attn.q_proj", "layers.1.ffn.w2"} <= set(switched)
    assert not model.lm_head.float8
    # On CUDA a dimension that is not a multiple of 16 keeps its projection out (the device is only named).
    odd = TransformerLM(ModelConfig(vocab_size=96, context_length=16, d_model=32, num_layers=1, num_heads=2, d_ff=40))
    names = odd.enable_float8(torch.device("cuda"))
    assert "layers.0.attn.q_proj" in names and not any(".ffn." in n for n in names)
    assert float8.float8_unsupported(torch.device("cpu")) is None
    assert "not on mps" in float8.float8_unsupported(torch.device("mps"))


def test_float8_model_loss_and_gradients_track_the_full_precision_model():
    torch.manual_seed(0)
    model = TransformerLM(tiny())
    reference = TransformerLM(tiny())
    reference.load_state_dict(model.state_dict())
    model.enable_float8(torch.device("cpu"))
    x, y = torch.randint(0, 96, (4, 16)), torch.randint(0, 96, (4, 16))
    loss, ref_loss = model(x, targets=y), reference(x, targets=y)
    assert abs(loss.item() - ref_loss.item()) < 0.01 * ref_loss.item()
    loss.backward()
    ref_loss.backward()
    # The gradient flowing back is rounded to e5m2's 2 mantissa bits (up to 12.5% per element), unbiased:
    # each parameter's gradient keeps its direction, off by about that much in norm.
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        assert relative_error(p.grad, q.grad) < 0.25, name
        assert torch.nn.functional.cosine_similarity(p.grad.flatten(), q.grad.flatten(), dim=0) > 0.97, name
    # Nothing saved changes: the state dict is the model's, keys and dtypes alike.
    assert {k: v.dtype for k, v in model.state_dict().items()} == {
        k: v.dtype for k, v in reference.state_dict().items()
    }


def test_training_with_float8_follows_the_full_precision_run(tmp_path, token_files):
    def run(name: str, on: bool) -> list[float]:
        raw = {
            "model": tiny().to_dict(),
            "optimizer": {"lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 5},
            "data": {"train": str(token_files[0]), "valid": str(token_files[1])},
            "training": {"batch_size": 8, "max_iters": 40, "eval_interval": 20, "eval_iters": 2, "log_interval": 1,
                         "out_dir": str(tmp_path / name), "device": "cpu", "float8": on},
        }  # fmt: skip
        Trainer(build_config(raw), progress=False).run()
        return [r["train_loss"] for r in read_metrics(tmp_path / name) if "train_loss" in r]

    full, low = run("full", False), run("float8", True)
    assert low[-1] < low[0] - 0.5  # it learns
    # Within a few percent of the full-precision run, step by step, over the whole run.
    assert max(abs(a - b) / a for a, b in zip(full, low)) < 0.03


def test_float8_on_a_device_without_it_is_refused_by_name(tmp_path, token_files, monkeypatch):
    # What a GPU without float8 tensor cores is told (the device's answers stood in for).
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    assert float8.float8_unsupported(torch.device("cuda")) == (
        "NVIDIA A100-SXM4-80GB (compute capability 8.0) has no float8 tensor cores; float8 needs 8.9 or newer "
        "(Ada, Hopper, Blackwell)"
    )
    monkeypatch.setattr(float8, "float8_unsupported", lambda device: "this GPU has no float8 tensor cores")
    raw = {
        "model": tiny().to_dict(),
        "data": {"train": str(token_files[0]), "valid": str(token_files[1])},
        "training": {"max_iters": 2, "out_dir": str(tmp_path / "run"), "device": "cpu", "float8": True},
    }
    with pytest.raises(ConfigError, match=r"training\.float8: this GPU has no float8 tensor cores"):
        Trainer(build_config(raw), progress=False).run()
