"""The switches beyond the CS336 baseline (QK-norm, ReLU², zero-initialised output projections, logit
soft-capping, Muon, an untied head's own learning rate, `recipe = "modern"`), each against an independent
plain-PyTorch formulation, and off by default so the CS336 model is unchanged."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")

from bpe_lm import optim  # noqa: E402
from bpe_lm.accounting import account  # noqa: E402
from bpe_lm.baseline import PlainTransformerLM  # noqa: E402
from bpe_lm.checkpoint import read_checkpoint  # noqa: E402
from bpe_lm.config import ConfigError, ModelConfig, build_config, to_toml  # noqa: E402
from bpe_lm.metrics import read_metrics  # noqa: E402
from bpe_lm.model import TransformerLM, cross_entropy, linear_cross_entropy  # noqa: E402
from bpe_lm.train import Trainer  # noqa: E402

from conftest import write_token_files  # noqa: E402

SWITCHES = [
    dict(qk_norm=True),
    dict(ffn="relu2"),
    dict(zero_init_output=True),
    dict(logit_softcap=5.0),
    dict(qk_norm=True, ffn="relu2", zero_init_output=True, logit_softcap=5.0, tie_embeddings=True),
]


def config(**kw) -> ModelConfig:
    return ModelConfig(vocab_size=97, context_length=16, d_model=32, num_layers=2, num_heads=4, **kw)


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_switches_match_plain_pytorch_in_values_and_gradients(switches):
    torch.manual_seed(0)
    ours = TransformerLM(config(**switches))
    if switches.get("zero_init_output"):
        with torch.no_grad():  # zero projections would make the comparison trivial: give them values
            for layer in ours.layers:
                layer.attn.output_proj.weight.normal_(0, 0.1)
                layer.ffn.w2.weight.normal_(0, 0.1)
    plain = PlainTransformerLM(ours.config).load_from(ours)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (3, 17), generator=g)
    x, y = ids[:, :-1], ids[:, 1:]
    torch.testing.assert_close(ours(x), plain(x), atol=1e-4, rtol=1e-4)
    loss, ref = ours(x, targets=y), plain(x, targets=y)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    loss.backward()
    ref.backward()
    for name, a, b in plain.parameter_pairs(ours):  # every parameter, gains included
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_switches_are_off_by_default_and_keys_appear_only_when_on():
    base = TransformerLM(config())
    assert not any("q_norm" in k or "k_norm" in k for k in base.state_dict())
    assert base.layers[0].attn.output_proj.weight.abs().sum() > 0
    on = TransformerLM(config(qk_norm=True, zero_init_output=True))
    assert "layers.1.attn.q_norm.weight" in on.state_dict() and "layers.1.attn.k_norm.weight" in on.state_dict()
    for layer in on.layers:
        assert layer.attn.output_proj.weight.abs().sum() == 0 and layer.ffn.w2.weight.abs().sum() == 0
    assert config(ffn="relu2").d_ff == 4 * 32  # two matrices, like SiLU's
    with pytest.raises(ValueError, match="logit_softcap"):
        config(logit_softcap=-1.0)


def test_softcapped_fused_loss_equals_reference():
    g = torch.Generator().manual_seed(2)
    hidden = (torch.randn(40, 12, generator=g) * 3).requires_grad_()
    weight = torch.randn(53, 12, generator=g).requires_grad_()
    targets = torch.randint(0, 53, (40,), generator=g)
    cap = 4.0
    ref = cross_entropy(cap * torch.tanh(hidden @ weight.T / cap), targets)
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    ours = linear_cross_entropy(hidden, weight, targets, chunk_rows=7, softcap=cap)
    grads = torch.autograd.grad(ours, (hidden, weight))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    h64, w64 = hidden.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda h, w: linear_cross_entropy(h, w, targets, chunk_rows=9, softcap=cap), (h64, w64)
    )


# ---------------------------------------------------------------------------------------------------- Muon


def plain_newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The iteration written out independently: on the matrix as given, transposing inside the formula."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (torch.linalg.matrix_norm(g) + 1e-7)
    wide = g.shape[0] <= g.shape[1]
    for _ in range(steps):
        if wide:
            s = x @ x.mT
            x = a * x + b * s @ x + c * s @ s @ x
        else:
            s = x.mT @ x
            x = a * x + b * x @ s + c * x @ s @ s
    return x


@pytest.mark.parametrize("shape", [(8, 8), (6, 20), (30, 7)])
def test_newton_schulz_matches_an_independent_formulation_and_orthogonalises(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    ours = optim.newton_schulz(g)
    torch.testing.assert_close(ours, plain_newton_schulz(g), atol=1e-5, rtol=1e-4)
    singular = torch.linalg.svdvals(ours)
    assert singular.min() > 0.5 and singular.max() < 1.3  # near 1: close to U Vᵀ
    # A stack (how the optimizer orthogonalises matrices of one shape) gives each matrix its own result.
    stack = torch.stack([g, 3 * g.flip(0), torch.randn(*shape, generator=torch.Generator().manual_seed(5))])
    for got, one in zip(optim.newton_schulz(stack), stack):
        torch.testing.assert_close(got, optim.newton_schulz(one), atol=1e-6, rtol=1e-5)


def test_muon_step_matches_the_definition():
    g = torch.Generator().manual_seed(4)
    w = torch.nn.Parameter(torch.randn(12, 5, generator=g))
    gain = torch.nn.Parameter(torch.ones(5))
    ref_w, buf = w.detach().clone(), torch.zeros(12, 5)
    opt = optim.Muon(
        [{"params": [w], "kind": "muon", "lr": 0.05}, {"params": [gain], "kind": "adamw", "lr": 1e-3}],
        lr=1e-3,
        momentum=0.9,
        weight_decay=0.1,
    )
    for _ in range(5):
        grad = torch.randn(12, 5, generator=g)
        w.grad, gain.grad = grad.clone(), torch.randn(5, generator=g)
        opt.step()
        buf = 0.9 * buf + grad
        update = plain_newton_schulz(grad + 0.9 * buf)
        ref_w = ref_w * (1 - 0.05 * 0.1) - 0.05 * (12 / 5) ** 0.5 * update
    torch.testing.assert_close(w.detach(), ref_w, atol=1e-5, rtol=1e-5)


def test_param_groups_by_shape_and_name():
    model = TransformerLM(config(qk_norm=True))
    groups = optim.param_groups_for(model, lr=1e-3, muon_lr=0.02, head_lr=0.004)
    names = {id(p): n for n, p in model.named_parameters()}
    by_kind = {(g["kind"], g["lr"]): sorted(names[id(p)] for p in g["params"]) for g in groups}
    muon = by_kind[("muon", 0.02)]
    assert all(n.startswith("layers.") and n.endswith("proj.weight") or ".ffn.w" in n for n in muon)
    assert "token_embeddings.weight" in by_kind[("adamw", 1e-3)] and "ln_final.weight" in by_kind[("adamw", 1e-3)]
    assert by_kind[("adamw", 0.004)] == ["lm_head.weight"]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert [g["lr_scale"] for g in groups] == [20.0, 1.0, 4.0]


# ---------------------------------------------------------------------------------------------------- runs


@pytest.fixture
def token_files(tmp_path):
    return write_token_files(tmp_path, 97)


def raw(tmp_path, token_files, out="run", **training) -> dict:
    return {
        "model": {"vocab_size": 97, "context_length": 16, "d_model": 32, "num_layers": 2, "num_heads": 4, "recipe": "modern"},
        "optimizer": {"lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 2, "recipe": "modern", "head_lr": 6e-3},
        "data": {"train": str(token_files[0]), "valid": str(token_files[1])},
        "training": {"batch_size": 8, "max_iters": 20, "eval_interval": 10, "eval_iters": 2, "log_interval": 1,
                     "checkpoint_interval": 10, "out_dir": str(tmp_path / out), "device": "cpu", **training},
    }  # fmt: skip


def test_modern_recipe_expands_into_the_resolved_config(tmp_path, token_files):
    cfg = build_config(raw(tmp_path, token_files))
    m, o = cfg.model, cfg.optimizer
    assert (m.qk_norm, m.ffn, m.zero_init_output, m.logit_softcap) == (True, "relu2", True, 15.0)
    assert o.name == "muon" and o.head_lr == 6e-3
    text = to_toml(cfg.to_dict())
    assert "recipe =" not in text and "qk_norm = true" in text and 'name = "muon"' in text
    explicit = raw(tmp_path, token_files)
    explicit["model"]["logit_softcap"] = 30.0  # a setting given explicitly wins over the recipe's
    assert build_config(explicit).model.logit_softcap == 30.0
    explicit["model"]["recipe"] = "ancient"
    with pytest.raises(ConfigError, match="model.recipe must be one of modern"):
        build_config(explicit)


def test_accounting_counts_the_extra_parameters_and_flops():
    for switches in SWITCHES:
        c = config(**switches)
        assert account(c).total_parameters == TransformerLM(c).num_parameters(), switches
    plain, modern = account(config()), account(config(qk_norm=True, logit_softcap=15.0))
    assert modern.training_flops_per_token > plain.training_flops_per_token


def test_muon_run_resumes_bit_identically(tmp_path, token_files):
    """A Muon + AdamW run resumed from its step-10 checkpoint ends exactly like the uninterrupted run."""
    saved = {}

    class KeepTen(Trainer):
        def _save(self, *args):
            super()._save(*args)
            if self.iteration == 10:
                saved["ten"] = (self.run_dir / "checkpoint.pt").read_bytes()

    KeepTen(build_config(raw(tmp_path, token_files, "full")), progress=False).run()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "checkpoint.pt").write_bytes(saved["ten"])
    Trainer(build_config(raw(tmp_path, token_files, "half")), resume=True, progress=False).run()
    a, b = read_checkpoint(tmp_path / "full" / "checkpoint.pt"), read_checkpoint(tmp_path / "half" / "checkpoint.pt")
    assert a["iteration"] == b["iteration"] == 20
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    full = [r["train_loss"] for r in read_metrics(tmp_path / "full") if "train_loss" in r and r["step"] > 10]
    resumed = [r["train_loss"] for r in read_metrics(tmp_path / "half") if "train_loss" in r]
    assert full == resumed and len(resumed) == 10
    assert [g["kind"] for g in a["optimizer"]["param_groups"]] == ["muon", "adamw", "adamw"]
