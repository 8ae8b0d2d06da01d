"""`bpe-lm export --format hf` and `bpe_lm.export`: transformers loads the result with the same logits, the
same greedy continuation and the same token ids; from_hf(to_hf(m)) is m bit for bit."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch not installed (pip install '.[lm]')")
transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install '.[test]')")

from safetensors.torch import load_file  # noqa: E402

import bpe_lm  # noqa: E402
from bpe_lm.checkpoint import save_checkpoint  # noqa: E402
from bpe_lm.cli import main  # noqa: E402
from bpe_lm.export import ExportError, from_hf, halves_to_pairs, pairs_to_halves, to_hf  # noqa: E402
from bpe_lm.model import ModelConfig, TransformerLM  # noqa: E402
from bpe_lm.tokenizer import Tokenizer  # noqa: E402

from conftest import SHARED_DATA, SHARED_TEXT_FILES, generated_corpus, needs_shared_data, shared_slice  # noqa: E402

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.txt"
        path.write_text(generated_corpus(400) + "ünïcödé 中文 🙂 ЖЖ\n" * 20, encoding="utf-8")
        vocab, merges = bpe_lm.train_bpe(path, 600, [EOT])
    return Tokenizer(vocab, merges, [EOT])


def tiny_model(vocab_size: int, tie: bool = False, seed: int = 0, **kw) -> TransformerLM:
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=vocab_size, context_length=48, d_model=64, num_layers=2, num_heads=4, tie_embeddings=tie, **kw
    )
    return TransformerLM(config).eval()


def export_command(tmp_path: Path, model: TransformerLM, tok: Tokenizer, *extra: str | Path) -> list[str]:
    """Saves `model` and `tok` under tmp_path (m.pt, tok/) and returns `bpe-lm export` of them, then `extra`."""
    save_checkpoint(model, None, 0, tmp_path / "m.pt")
    tok.save(tmp_path / "tok")
    return ["export", "--checkpoint", str(tmp_path / "m.pt"), "--tokenizer", str(tmp_path / "tok"), *map(str, extra)]


def load_hf(out: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()


def test_rope_permutation_round_trips_and_matches_rotate_half():
    w = torch.randn(4 * 8, 5)
    assert torch.equal(halves_to_pairs(pairs_to_halves(w, 4), 4), w)
    # Pair i of a head (rows 2i, 2i+1) becomes rows i and i + K/2 of that head.
    halves = pairs_to_halves(w, 4)
    for head in range(4):
        for i in range(4):
            assert torch.equal(halves[head * 8 + i], w[head * 8 + 2 * i])
            assert torch.equal(halves[head * 8 + 4 + i], w[head * 8 + 2 * i + 1])


@pytest.mark.parametrize("tie", [False, True])
def test_transformers_logits_equal_ours(tmp_path, tok, tie):
    model = tiny_model(tok.vocab_size, tie)
    to_hf(model, tok, tmp_path / "hf")
    hf = load_hf(tmp_path / "hf")
    assert type(hf).__name__ == "LlamaForCausalLM" and hf.config.tie_word_embeddings == tie
    ids = torch.randint(0, tok.vocab_size, (3, model.config.context_length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["eos_token_id"] == tok.special_token_ids[EOT] and config["max_position_embeddings"] == 48
    assert ("lm_head.weight" in load_file(tmp_path / "hf" / "model.safetensors")) == (not tie)


@pytest.mark.parametrize("tie", [False, True])
def test_round_trip_is_bit_identical(tmp_path, tok, tie):
    model = tiny_model(tok.vocab_size, tie, seed=3)
    back = from_hf(to_hf(model, tok, tmp_path / "hf"))
    assert back.config == model.config
    ours, theirs = model.state_dict(), back.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_greedy_generation_equals_bpe_lm_generate(tmp_path, tok, capsys):
    model = tiny_model(tok.vocab_size, seed=5)
    ckpt = tmp_path / "model.pt"
    save_checkpoint(model, None, 0, ckpt)
    tok.save(tmp_path / "tok")
    assert (
        main(["export", "--checkpoint", str(ckpt), "--tokenizer", str(tmp_path / "tok"), "-o", str(tmp_path / "hf")])
        == 0
    )
    prompt = "Once upon a time there was"
    assert main(["generate", "--checkpoint", str(ckpt), "--tokenizer", str(tmp_path / "tok"), "--prompt", prompt,
                 "--temperature", "0", "--max-tokens", "40", "--device", "cpu"]) == 0  # fmt: skip
    ours = capsys.readouterr().out  # exactly the text: no newline of bpe-lm's when stdout is not a terminal
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    hf = load_hf(tmp_path / "hf")
    ids = hf_tok(prompt, return_tensors="pt")["input_ids"]
    assert ids[0].tolist() == tok.encode(prompt)
    out = hf.generate(ids, max_new_tokens=40, do_sample=False, pad_token_id=tok.special_token_ids[EOT])
    new = out[0, ids.shape[1] :].tolist()
    assert len(new) >= 10
    eos = tok.special_token_ids[EOT]
    if eos in new:
        new = new[: new.index(eos)]
    assert prompt + hf_tok.decode(new) == ours
    # And the pipeline a user reaches for first.
    pipe = transformers.pipeline("text-generation", model=hf, tokenizer=hf_tok, device="cpu")
    assert pipe(prompt, max_new_tokens=40, do_sample=False)[0]["generated_text"] == ours


def test_autotokenizer_ids_equal_ours(tmp_path, tok):
    to_hf(tiny_model(tok.vocab_size), tok, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = generated_corpus(50, seed=9) + f" ünïcödé 中文 🙂 {EOT}{EOT} tail  \n\n x'S 123"
    assert hf_tok(text)["input_ids"] == tok.encode(text)
    assert hf_tok.decode(tok.encode(text)) == text
    assert hf_tok.eos_token == EOT and hf_tok.eos_token_id == tok.special_token_ids[EOT]


@needs_shared_data
def test_autotokenizer_ids_equal_ours_on_shared_files(tmp_path):
    """GPT-2's vocabulary and merges with <|endoftext|>, 1 MB of every shared text file (their documents are
    separated by <|endoftext|>, so special tokens are in the text)."""
    gpt2 = Tokenizer.from_files(SHARED_DATA / "gpt2" / "vocab.json", SHARED_DATA / "gpt2" / "merges.txt", [EOT])
    torch.manual_seed(0)
    small = TransformerLM(
        ModelConfig(vocab_size=gpt2.vocab_size, context_length=16, d_model=8, num_layers=1, num_heads=2)
    )
    to_hf(small, gpt2, tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    separators = 0
    for name in SHARED_TEXT_FILES:
        text = shared_slice(name, 1_000_000)
        separators += text.count(EOT)
        assert hf_tok(text)["input_ids"] == gpt2.encode(text), name
    assert separators > 100


def test_every_model_setting_is_examined_by_export():
    from dataclasses import fields

    from bpe_lm.config import ModelConfig
    from bpe_lm.export import CARRIED_SETTINGS, LLAMA_SETTINGS, SAME_FUNCTION_SETTINGS

    tables = [set(CARRIED_SETTINGS), set(LLAMA_SETTINGS), set(SAME_FUNCTION_SETTINGS)]
    assert set().union(*tables) == {f.name for f in fields(ModelConfig)}, "classify the new model setting in export.py"
    assert sum(len(t) for t in tables) == len(set().union(*tables)), "a setting in two tables"


def other_values(name: str) -> list:
    """Every value of a Llama-constrained setting but Llama's (Literal options, the other bool, a cap)."""
    import typing

    from bpe_lm.config import ModelConfig
    from bpe_lm.export import LLAMA_SETTINGS

    llama_value = LLAMA_SETTINGS[name][0]
    if isinstance(llama_value, bool):
        return [not llama_value]
    if isinstance(llama_value, float):
        return [5.0]
    options = typing.get_args(typing.get_type_hints(ModelConfig)[name])  # the setting's Literal choices
    assert options, f"model.{name}: no Literal choices to test"
    return [v for v in options if v != llama_value]


# Settings a refused value needs beside it to make a model at all.
NEEDED_WITH = {"document_mask": {"end_of_text_id": 0}}


def _refused_settings():
    from bpe_lm.export import LLAMA_SETTINGS

    return [
        ({name: v, **NEEDED_WITH.get(name, {})}, f"model.{name} = {v!r}")
        for name in LLAMA_SETTINGS
        for v in other_values(name)
    ]


@pytest.mark.parametrize("setting, message", _refused_settings())
def test_models_llama_cannot_express_are_refused(tmp_path, tok, capsys, setting, message):
    model = tiny_model(tok.vocab_size, **setting)
    with pytest.raises(ExportError, match=message):
        to_hf(model, tok, tmp_path / "hf")
    assert main(export_command(tmp_path, model, tok, "-o", tmp_path / "hf")) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "hf").exists()


def test_export_never_clobbers(tmp_path, tok, capsys):
    out = tmp_path / "hf"
    args = export_command(tmp_path, tiny_model(tok.vocab_size), tok, "-o", out)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main([*args, "--force"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.tmp")]
    # A tokenizer bigger than the model's vocabulary is not the one it was trained with.
    big = tiny_model(tok.vocab_size - 10)
    with pytest.raises(ExportError, match="not the tokenizer it was trained with"):
        to_hf(big, tok, tmp_path / "other")


def test_from_hf_refuses_what_it_cannot_express(tmp_path, tok):
    to_hf(tiny_model(tok.vocab_size), tok, tmp_path / "hf")
    config_path = tmp_path / "hf" / "config.json"
    config = json.loads(config_path.read_text())
    for key, value, message in [
        ("num_key_value_heads", 2, "grouped-query"),
        ("rms_norm_eps", 1e-6, "rms_norm_eps"),
        ("model_type", "gpt2", "Llama checkpoints only"),
    ]:
        config_path.write_text(json.dumps({**config, key: value}))
        with pytest.raises(ExportError, match=message):
            from_hf(tmp_path / "hf")
    with pytest.raises(ExportError, match="config.json: not found"):
        from_hf(tmp_path)


# ---------------------------------------------------------------------------------------------------- GGUF


def gguf_forward(path: Path, ids: list[int]) -> np.ndarray:
    """An independent Llama forward pass in numpy over the tensors and settings of a GGUF file, as llama.cpp
    reads them: RMSNorm, RoPE on adjacent pairs, causal attention, SwiGLU, tied or separate output matrix."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(name: str):
        f = reader.fields[name]
        return f.parts[f.data[0]][0]

    weights = {
        t.name: np.asarray(t.data, dtype=np.float64).reshape([int(d) for d in reversed(t.shape)])
        for t in reader.tensors
    }
    heads, layers = int(field("llama.attention.head_count")), int(field("llama.block_count"))
    theta, eps = float(field("llama.rope.freq_base")), float(field("llama.attention.layer_norm_rms_epsilon"))

    def norm(x, g):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g

    x = weights["token_embd.weight"][ids]
    t, d = x.shape
    dh = d // heads
    angle = np.arange(t)[:, None] * theta ** (-np.arange(0, dh, 2) / dh)  # (T, dh/2)
    cos, sin = np.cos(angle)[:, None], np.sin(angle)[:, None]

    def rope(v):  # (T, H, dh): rotate pairs (2i, 2i+1)
        a, b = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    causal = np.triu(np.full((t, t), -np.inf), 1)
    for i in range(layers):
        w = lambda n, i=i: weights[f"blk.{i}.{n}.weight"]
        h = norm(x, w("attn_norm"))
        q, k, v = (rope((h @ w(n).T).reshape(t, heads, dh)) if n != "attn_v" else (h @ w(n).T).reshape(t, heads, dh)
                   for n in ("attn_q", "attn_k", "attn_v"))  # fmt: skip
        scores = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(dh) + causal
        p = np.exp(scores - scores.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        x = x + np.einsum("hqk,khd->qhd", p, v).reshape(t, d) @ w("attn_output").T
        h = norm(x, w("ffn_norm"))
        gate = h @ w("ffn_gate").T
        x = x + (gate / (1 + np.exp(-gate)) * (h @ w("ffn_up").T)) @ w("ffn_down").T
    out = weights.get("output.weight", weights["token_embd.weight"])
    return norm(x, weights["output_norm.weight"]) @ out.T


@pytest.mark.parametrize("tie", [False, True])
def test_gguf_tensors_give_our_logits_in_an_independent_forward(tmp_path, tok, tie):
    model = tiny_model(tok.vocab_size, tie, seed=2)
    out = tmp_path / "m.gguf"
    args = export_command(tmp_path, model, tok, "--format", "gguf")
    assert main([*args, "-o", str(out)]) == 0
    ids = torch.randint(
        0, tok.vocab_size, (model.config.context_length,), generator=torch.Generator().manual_seed(4)
    ).tolist()
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0].double().numpy()
    theirs = gguf_forward(out, ids)
    np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-4)
    # The check has teeth: a model one weight away gives other logits.
    with torch.no_grad():
        model.layers[0].attn.q_proj.weight[0, 0] += 0.5
        assert np.abs(model(torch.tensor([ids]))[0].double().numpy() - theirs).max() > 1e-3


@pytest.mark.llama
@pytest.mark.parametrize("tie", [False, True])
def test_gguf_logits_and_ids_equal_ours_in_llama_cpp(tmp_path, tok, tie, capsys):
    import llama_cpp

    model = tiny_model(tok.vocab_size, tie, seed=2)
    out = tmp_path / "m.gguf"
    args = export_command(tmp_path, model, tok, "--format", "gguf", "-o", out)
    assert main(args) == 0
    assert main(args) == 1 and "already exists" in capsys.readouterr().err  # never replaced unasked
    ctx = model.config.context_length
    # float32 key/value cache (llama.cpp's default is float16), so the comparison is of float32 arithmetic.
    llm = llama_cpp.Llama(str(out), n_ctx=ctx, logits_all=True, verbose=False, n_threads=2, type_k=0, type_v=0)
    ids = torch.randint(0, tok.vocab_size, (ctx,), generator=torch.Generator().manual_seed(4)).tolist()
    llm.eval(ids)
    theirs = torch.tensor(llm.scores[:ctx])
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0]
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    text = generated_corpus(40, seed=3) + f" ünïcödé 中文 🙂 {EOT}{EOT} tail  \n\n x'S 123"
    assert llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) == tok.encode(text)
    assert llm.token_eos() == tok.special_token_ids[EOT]


def test_a_full_disk_while_writing_weights_is_an_io_error(tmp_path, tok, monkeypatch, capsys):
    import safetensors.torch
    from safetensors import SafetensorError

    def full_disk(*args, **kwargs):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    args = export_command(tmp_path, tiny_model(tok.vocab_size), tok, "-o", tmp_path / "hf", "--force")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("mine")
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "model.safetensors could not be written" in err and "No space left" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["keep.txt"]
