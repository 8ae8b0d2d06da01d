"""Accounting formulas against the built model: parameter counts and FlopCounterMode."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bpe_lm.accounting import PRESETS, account  # noqa: E402
from bpe_lm.cli import main  # noqa: E402
from bpe_lm.model import ModelConfig, TransformerLM  # noqa: E402

CONFIGS = [
    dict(vocab_size=101, context_length=24, d_model=32, num_layers=2, num_heads=4, d_ff=80),
    dict(vocab_size=77, context_length=16, d_model=48, num_layers=3, num_heads=3, ffn="silu"),
    dict(vocab_size=64, context_length=32, d_model=16, num_layers=1, num_heads=2, norm="none", tie_embeddings=True),
    dict(vocab_size=50, context_length=8, d_model=24, num_layers=2, num_heads=2, norm="post", position="none"),
]


@pytest.mark.parametrize("dims", CONFIGS)
def test_parameters_match_the_model(dims):
    config = ModelConfig(**dims)
    assert account(config).total_parameters == sum(p.numel() for p in TransformerLM(config).parameters())


@pytest.mark.parametrize("dims", CONFIGS)
def test_forward_flops_match_flop_counter(dims):
    config = ModelConfig(**dims, attention="reference")
    model = TransformerLM(config)
    ids = torch.zeros(1, config.context_length, dtype=torch.long)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(ids)
    expected = account(config).total_forward_flops
    assert abs(counter.get_total_flops() - expected) <= 0.01 * expected


def test_tinystories_preset_counts_exactly():
    config = ModelConfig(**PRESETS["tinystories-17m"], attention="reference")
    with torch.device("meta"):
        model = TransformerLM(config)
    assert account(config).total_parameters == sum(p.numel() for p in model.parameters())


def test_gpt2_xl_known_figures():
    acc = account(ModelConfig(**PRESETS["gpt2-xl"]))
    assert 2.0e9 < acc.total_parameters < 2.2e9
    assert 4.4e12 < acc.total_forward_flops < 4.6e12
    long = account(ModelConfig(**{**PRESETS["gpt2-xl"], "context_length": 16384}))
    assert 32 < long.total_forward_flops / acc.total_forward_flops < 34


def test_memory_grows_with_batch_only_in_activations():
    config = ModelConfig(**PRESETS["gpt2-small"])
    one, eight = account(config, 1).memory_bytes(), account(config, 8).memory_bytes()
    assert one["parameters"] == eight["parameters"] == 4 * account(config).total_parameters
    assert eight["activations"] == 8 * one["activations"]


def test_cli_table_and_json(capsys):
    assert main(["accounting", "--preset", "gpt2-xl"]) == 0
    out = capsys.readouterr().out
    assert "2,127,057,600" in out and "FFN w3" in out and "LM head" in out
    assert main(["accounting", "--preset", "tinystories-17m", "--d-model", "256", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["config"]["d_model"] == 256 and data["training_time"]["seconds"] > 0


def test_cli_errors(capsys):
    assert main(["accounting", "--d-model", "64"]) == 1
    assert "give --preset or all of" in capsys.readouterr().err
    assert main(["accounting", "--preset", "gpt2-small", "--peak", "fast"]) == 1
    assert "--peak 'fast'" in capsys.readouterr().err
