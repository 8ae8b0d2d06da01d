"""What only a CUDA device can show: the training loop's device paths (resume with CUDA RNG states, the
compiled step with CUDA graphs, bf16 autocast) and the fused loss on the device. Marked `gpu`: deselected
where there is no device (see conftest.py), run by the plain test command where there is one, and by
scripts/gpu_check.sh on a lent GPU machine."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")

from test_fast_paths import run_raw, tiny, train_losses  # noqa: E402

from bpe_lm.config import build_config  # noqa: E402
from bpe_lm.model import TransformerLM, cross_entropy, linear_cross_entropy  # noqa: E402
from bpe_lm.train import Trainer  # noqa: E402

from conftest import write_token_files  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture()
def token_files(tmp_path):
    return write_token_files(tmp_path, tiny().vocab_size)


@pytest.fixture()
def exact_fp32():
    """TF32 off for comparisons at fp32 tolerances (a training run on CUDA turns it on for the process)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_resume_on_cuda(tmp_path, token_files):
    cfg = build_config(run_raw(tmp_path, token_files, device="cuda"))
    Trainer(cfg, progress=False).run()
    more = build_config(run_raw(tmp_path, token_files, device="cuda", max_iters=9))
    assert Trainer(more, resume=True, progress=False).run()["steps"] == 9


def test_compiled_cuda_graph_training_matches_eager_on_cuda(tmp_path, token_files):
    common = dict(device="cuda", dtype="float32")
    eager = build_config(run_raw(tmp_path, token_files, "eager", **common))
    graphs = build_config(run_raw(tmp_path, token_files, "graphs", compile=True, cuda_graphs=True, **common))
    Trainer(eager, progress=False).run()
    assert Trainer(graphs, progress=False).run()["compiled"] is True
    np.testing.assert_allclose(
        train_losses(tmp_path / "graphs"), train_losses(tmp_path / "eager"), rtol=1e-3, atol=1e-3
    )


def test_bf16_training_on_cuda_learns(tmp_path, token_files):
    cfg = build_config(run_raw(tmp_path, token_files, device="cuda", dtype="bfloat16", max_iters=30))
    Trainer(cfg, progress=False).run()
    losses = train_losses(tmp_path / "run")
    assert np.isfinite(losses).all() and np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5


def test_fused_loss_on_cuda_equals_reference(exact_fp32):
    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(4096, 256, device="cuda", generator=g).requires_grad_()
    weight = (torch.randn(10000, 256, device="cuda", generator=g) * 0.05).requires_grad_()
    targets = torch.randint(0, 10000, (4096,), device="cuda", generator=g)
    ref = cross_entropy(hidden @ weight.T, targets)
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    ours = linear_cross_entropy(hidden, weight, targets, chunk_rows=1000)
    grads = torch.autograd.grad(ours, (hidden, weight))
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)


def test_model_on_cuda_equals_model_on_cpu(exact_fp32):
    torch.manual_seed(0)
    model = TransformerLM(tiny())
    ids = torch.randint(0, 97, (3, 16))
    with torch.no_grad():
        cpu = model(ids)
        cuda = model.to("cuda")(ids.to("cuda")).cpu()
    torch.testing.assert_close(cuda, cpu, atol=1e-4, rtol=1e-4)


def test_float8_training_on_cuda_follows_bf16(tmp_path, token_files):
    """training.float8 on the device (float8 tensor cores, compiled): within a few percent of the bf16 run."""
    common = dict(device="cuda", dtype="bfloat16", max_iters=40, compile=True)
    Trainer(build_config(run_raw(tmp_path, token_files, "bf16", **common)), progress=False).run()
    Trainer(build_config(run_raw(tmp_path, token_files, "float8", float8=True, **common)), progress=False).run()
    bf16, low = train_losses(tmp_path / "bf16"), train_losses(tmp_path / "float8")
    assert np.mean(low[-5:]) < np.mean(low[:5]) - 0.5
    np.testing.assert_allclose(low, bf16, rtol=0.05)
