"""A trained model as a Hugging Face Llama checkpoint (and back), with its tokenizer.

The default architecture (pre-norm RMSNorm, RoPE, SwiGLU, no biases, optionally tied embeddings) is
Llama's up to one detail: bpe-lm rotates adjacent pairs (x[2i], x[2i+1]) as Meta's original Llama code
did, while transformers' Llama rotates halves (x[i], x[i + K/2]). Attention scores are the same when the
rows of the query and key projections are permuted within each head so that pair i's two rows become rows
i and i + K/2 — the permutation transformers' own Llama conversion script applies. Everything else maps
one to one:

    token_embeddings            -> model.embed_tokens
    layers.i.attn.q_proj/k_proj -> model.layers.i.self_attn.q_proj/k_proj (rows permuted per head)
    layers.i.attn.v_proj        -> model.layers.i.self_attn.v_proj
    layers.i.attn.output_proj   -> model.layers.i.self_attn.o_proj
    layers.i.ffn.w1 / w3 / w2   -> model.layers.i.mlp.gate_proj / up_proj / down_proj
    layers.i.ln1 / ln2          -> model.layers.i.input_layernorm / post_attention_layernorm
    ln_final                    -> model.norm
    lm_head                     -> lm_head (absent when tied: HF ties it to embed_tokens)

Needs `safetensors` (in the `lm` extra); loading the result needs `transformers`, which bpe-lm does not.

`to_gguf` writes the same model as one GGUF file for llama.cpp (and the tools built on it: Ollama, LM
Studio, llama-cpp-python). llama.cpp's Llama rotates adjacent pairs, as we do, so q and k go unpermuted;
the tokenizer goes in as llama.cpp's "gpt2" byte-level BPE with the GPT-2 pre-tokenizer. Needs the `gguf`
package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from bpe_lm._io import atomic_directory
from bpe_lm.errors import BpeLmError
from bpe_lm.formats import read_json_object
from bpe_lm.model import ModelConfig, RMSNorm, TransformerLM
from bpe_lm.readers import END_OF_TEXT as EOT
from bpe_lm.run_files import check_vocabularies_match

if TYPE_CHECKING:
    from bpe_lm.tokenizer import Tokenizer

PathLike = str | os.PathLike[str]
WEIGHTS_NAME = "model.safetensors"
HF_FILES = (
    "config.json",
    "generation_config.json",
    WEIGHTS_NAME,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
RMS_NORM_EPS = RMSNorm(1).eps  # the eps every RMSNorm of TransformerLM uses


class ExportError(BpeLmError, ValueError):
    """The model or the files cannot be converted: the message names the setting or the file."""


# How each ModelConfig setting reaches the exported Llama. Every field is in exactly one of the three
# (tests/test_export.py holds them to ModelConfig's fields), so a new setting cannot export unexamined.
# Written into config.json or carried by the weights' shapes:
CARRIED_SETTINGS = (
    "vocab_size",
    "context_length",
    "d_model",
    "num_layers",
    "num_heads",
    "d_ff",
    "rope_theta",
    "tie_embeddings",
)
# How weights start or which kernel computes attention: the function the trained model computes is the same.
SAME_FUNCTION_SETTINGS = ("zero_init_output", "attention", "end_of_text_id")  # the id: only with document_mask
# The only value a Llama can compute, and why, for every other setting.
LLAMA_SETTINGS: dict[str, tuple[Any, str]] = {
    "norm": ("pre", "Llama is pre-norm (RMSNorm before each sublayer), so only norm = 'pre' exports"),
    "position": ("rope", "Llama uses RoPE, so a model without position encoding (NoPE) does not export"),
    "ffn": ("swiglu", "Llama's feed-forward is SwiGLU (gate, up, down), so only ffn = 'swiglu' exports"),
    "qk_norm": (False, "Llama has no RMSNorm on queries and keys, so its logits would differ from this model's"),
    "logit_softcap": (0.0, "Llama does not cap its logits (c·tanh(logits / c)), so its outputs would differ"),
    "document_mask": (
        False,
        "Llama attends across end-of-text tokens, so wherever a sequence holds one its logits would differ",
    ),
}


def llama_incompatibility(config: ModelConfig) -> str | None:
    """Why a model with this config has no Llama equivalent (the first setting that has none), or None."""
    for name, (llama_value, why) in LLAMA_SETTINGS.items():
        value = getattr(config, name)
        if value != llama_value:
            return f"model.{name} = {value!r}: {why}"
    return None


def check_exportable(model: TransformerLM, tokenizer: Tokenizer) -> None:
    """A Llama can express the model, and the tokenizer is the one it was trained with."""
    problem = llama_incompatibility(model.config)
    if problem:
        raise ExportError(problem)
    try:
        check_vocabularies_match(tokenizer.vocab_size, model.config.vocab_size)
    except ValueError as e:
        raise ExportError(str(e)) from None


# ---------------------------------------------------------------------------------------------------- RoPE layout


def pairs_to_halves(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Rows of a q/k projection (H·K, D) reordered within each head from the adjacent-pair RoPE layout to
    the rotate-half layout: HF row i ← our row 2i, HF row i + K/2 ← our row 2i + 1."""
    out_features, in_features = weight.shape
    k = out_features // num_heads
    return weight.reshape(num_heads, k // 2, 2, in_features).transpose(1, 2).reshape(out_features, in_features)


def halves_to_pairs(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The inverse of `pairs_to_halves`."""
    out_features, in_features = weight.shape
    k = out_features // num_heads
    return weight.reshape(num_heads, 2, k // 2, in_features).transpose(1, 2).reshape(out_features, in_features)


# ---------------------------------------------------------------------------------------------------- to HF


def hf_state_dict(model: TransformerLM, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The model's weights under transformers' LlamaForCausalLM names (contiguous, unshared tensors)."""
    c = model.config
    problem = llama_incompatibility(c)
    if problem:
        raise ExportError(problem)

    def t(x: torch.Tensor) -> torch.Tensor:
        return x.detach().to(device="cpu", dtype=dtype).contiguous().clone()

    out = {"model.embed_tokens.weight": t(model.token_embeddings.weight), "model.norm.weight": t(model.ln_final.weight)}
    for i, layer in enumerate(model.layers):
        p = f"model.layers.{i}."
        out[p + "self_attn.q_proj.weight"] = t(pairs_to_halves(layer.attn.q_proj.weight, c.num_heads))
        out[p + "self_attn.k_proj.weight"] = t(pairs_to_halves(layer.attn.k_proj.weight, c.num_heads))
        out[p + "self_attn.v_proj.weight"] = t(layer.attn.v_proj.weight)
        out[p + "self_attn.o_proj.weight"] = t(layer.attn.output_proj.weight)
        out[p + "mlp.gate_proj.weight"] = t(layer.ffn.w1.weight)
        out[p + "mlp.up_proj.weight"] = t(layer.ffn.w3.weight)
        out[p + "mlp.down_proj.weight"] = t(layer.ffn.w2.weight)
        out[p + "input_layernorm.weight"] = t(layer.ln1.weight)
        out[p + "post_attention_layernorm.weight"] = t(layer.ln2.weight)
    if not c.tie_embeddings:
        out["lm_head.weight"] = t(model.lm_head.weight)
    return out


def eos_token(tokenizer: Tokenizer) -> str | None:
    """The end-of-sequence token: <|endoftext|> when the tokenizer has it, else its first special token."""
    specials = tokenizer.special_token_ids
    if EOT in specials:
        return EOT
    return next(iter(specials), None)


def hf_config(config: ModelConfig, eos_id: int | None, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    dtype_name = str(dtype).removeprefix("torch.")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_heads,
        "head_dim": config.d_head,
        "hidden_act": "silu",
        "max_position_embeddings": config.context_length,
        "rms_norm_eps": RMS_NORM_EPS,
        # Both spellings: transformers 5 reads rope_parameters, transformers 4 and llama.cpp's converter rope_theta.
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": eos_id,  # as GPT-2: one <|endoftext|> separates documents; nothing is prepended
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "use_cache": True,
        "torch_dtype": dtype_name,
        "dtype": dtype_name,
    }


def hf_tokenizer_files(tokenizer: Tokenizer, context_length: int) -> dict[str, Any]:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json: `AutoTokenizer` gives our ids."""
    from bpe_lm.interop import to_hf_json

    eos = eos_token(tokenizer)
    others = [s for s in tokenizer.special_token_ids if s != eos]
    added = {
        str(i): {
            "content": s,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "single_word": False,
            "special": True,
        }
        for s, i in tokenizer.special_token_ids.items()
    }
    specials_map: dict[str, Any] = {"bos_token": eos, "eos_token": eos} if eos else {}
    if others:
        specials_map["additional_special_tokens"] = others
    tokenizer_config = {
        # The generic fast tokenizer: LlamaTokenizerFast would prepend a BOS token and handle spaces its own way.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context_length,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        **specials_map,
    }
    return {
        "tokenizer.json": to_hf_json(tokenizer),
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": specials_map,
    }


def to_hf(
    model: TransformerLM,
    tokenizer: Tokenizer,
    out: PathLike,
    *,
    force: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Writes `out/` for `transformers`: config.json, generation_config.json, model.safetensors and the
    tokenizer files. All files are written in a temporary directory first; a new `out` appears whole. With
    `force`, an existing `out` keeps its other files and gets each of ours replaced atomically."""
    out = Path(out)
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise ExportError(
            "exporting needs the safetensors package: pip install safetensors (or pip install 'bpe-lm[lm]')"
        ) from None
    c = model.config
    check_exportable(model, tokenizer)
    eos = eos_token(tokenizer)
    eos_id = tokenizer.special_token_ids[eos] if eos else None

    def build(tmp: Path) -> list[str]:
        from safetensors import SafetensorError

        try:
            save_file(hf_state_dict(model, dtype), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        except SafetensorError as e:  # e.g. a full disk: an I/O failure, said as one
            raise OSError(f"{out}: {WEIGHTS_NAME} could not be written ({e})") from None
        files = {
            "config.json": hf_config(c, eos_id, dtype),
            "generation_config.json": {"bos_token_id": eos_id, "eos_token_id": eos_id},
        }
        files.update(hf_tokenizer_files(tokenizer, c.context_length))
        for name, data in files.items():
            (tmp / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return list(HF_FILES)

    try:
        atomic_directory(out, build, force=force)
    except (FileExistsError, NotADirectoryError) as e:
        raise ExportError(str(e)) from None
    return out


# ---------------------------------------------------------------------------------------------------- GGUF


def to_gguf(
    model: TransformerLM,
    tokenizer: Tokenizer,
    out: PathLike,
    *,
    force: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Writes one GGUF file (architecture "llama") with the weights and the tokenizer, atomically."""
    try:
        import gguf
    except ImportError:
        raise ExportError("--format gguf needs the gguf package: pip install gguf") from None
    from bpe_lm._io import atomic_output, check_new_output
    from bpe_lm.formats import GPT2_PATTERN, token_to_text

    c = model.config
    check_exportable(model, tokenizer)
    if tokenizer.pattern != GPT2_PATTERN:
        raise ExportError(
            "the tokenizer's pre-tokenization pattern is not GPT-2's; llama.cpp's gpt2 tokenizer would split text differently"
        )
    file_types = {
        torch.float32: (gguf.LlamaFileType.ALL_F32, "float32"),
        torch.float16: (gguf.LlamaFileType.MOSTLY_F16, "float16"),
    }
    if dtype not in file_types:
        raise ExportError(f"GGUF export writes float32 or float16 weights, not {str(dtype).removeprefix('torch.')}")
    file_type, np_dtype = file_types[dtype]
    out = Path(out)
    try:
        check_new_output(out, force)
    except FileExistsError as e:
        raise ExportError(str(e)) from None
    eos = eos_token(tokenizer)
    specials = set(tokenizer.special_token_ids.values())

    def array(t: torch.Tensor, keep_fp32: bool = False):
        # Norm gains stay float32 in every llama.cpp file type.
        return t.detach().to("cpu", torch.float32).numpy().astype("float32" if keep_fp32 else np_dtype)

    with atomic_output(out) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch="llama")
        w.add_name(out.stem)
        w.add_context_length(c.context_length)
        w.add_embedding_length(c.d_model)
        w.add_block_count(c.num_layers)
        w.add_feed_forward_length(c.d_ff)
        w.add_head_count(c.num_heads)
        w.add_head_count_kv(c.num_heads)
        w.add_rope_dimension_count(c.d_head)
        w.add_rope_freq_base(c.rope_theta)
        w.add_layer_norm_rms_eps(RMS_NORM_EPS)
        w.add_vocab_size(c.vocab_size)
        w.add_file_type(file_type)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(
            [
                tokenizer.id_to_token(i).decode("utf-8") if i in specials else token_to_text(tokenizer.id_to_token(i))
                for i in range(tokenizer.vocab_size)
            ]
        )
        w.add_token_types(
            [gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL for i in range(tokenizer.vocab_size)]
        )
        w.add_token_merges([f"{token_to_text(a)} {token_to_text(b)}" for a, b in tokenizer.merges])
        if eos is not None:
            w.add_bos_token_id(tokenizer.special_token_ids[eos])
            w.add_eos_token_id(tokenizer.special_token_ids[eos])
        w.add_add_bos_token(False)
        w.add_tensor("token_embd.weight", array(model.token_embeddings.weight))
        for i, layer in enumerate(model.layers):
            b = f"blk.{i}."
            w.add_tensor(b + "attn_norm.weight", array(layer.ln1.weight, True))
            w.add_tensor(b + "attn_q.weight", array(layer.attn.q_proj.weight))  # adjacent pairs: llama.cpp's own layout
            w.add_tensor(b + "attn_k.weight", array(layer.attn.k_proj.weight))
            w.add_tensor(b + "attn_v.weight", array(layer.attn.v_proj.weight))
            w.add_tensor(b + "attn_output.weight", array(layer.attn.output_proj.weight))
            w.add_tensor(b + "ffn_norm.weight", array(layer.ln2.weight, True))
            w.add_tensor(b + "ffn_gate.weight", array(layer.ffn.w1.weight))
            w.add_tensor(b + "ffn_up.weight", array(layer.ffn.w3.weight))
            w.add_tensor(b + "ffn_down.weight", array(layer.ffn.w2.weight))
        w.add_tensor("output_norm.weight", array(model.ln_final.weight, True))
        if not c.tie_embeddings:  # without it llama.cpp uses token_embd, as a tied head does
            w.add_tensor("output.weight", array(model.lm_head.weight))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return out


# ---------------------------------------------------------------------------------------------------- from HF


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ExportError(f"{path}: not found (is {path.parent} a Hugging Face model directory?)")
    try:
        return read_json_object(path)
    except ValueError as e:
        raise ExportError(str(e)) from None


def config_from_hf(hf: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """The ModelConfig of a Llama config.json that bpe-lm's TransformerLM can express exactly."""
    if hf.get("model_type") != "llama":
        raise ExportError(f"{where}: model_type {hf.get('model_type')!r}; bpe-lm reads Llama checkpoints only")
    try:
        heads = int(hf["num_attention_heads"])
        d_model = int(hf["hidden_size"])
        needs = {
            "num_key_value_heads": (
                hf.get("num_key_value_heads", heads),
                heads,
                "grouped-query attention is not supported",
            ),
            "head_dim": (
                hf.get("head_dim") or d_model // heads,
                d_model // heads,
                "head_dim must be hidden_size / num_attention_heads",
            ),
            "hidden_act": (hf.get("hidden_act", "silu"), "silu", "the feed-forward must be SwiGLU"),
            "attention_bias": (bool(hf.get("attention_bias", False)), False, "projections have no bias"),
            "mlp_bias": (bool(hf.get("mlp_bias", False)), False, "projections have no bias"),
            "rms_norm_eps": (
                float(hf.get("rms_norm_eps", RMS_NORM_EPS)),
                RMS_NORM_EPS,
                "bpe-lm's RMSNorm uses this eps",
            ),
        }
        for key, (value, expected, why) in needs.items():
            if value != expected:
                raise ExportError(f"{where}: {key} = {value!r}, expected {expected!r} ({why})")
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ExportError(f"{where}: RoPE scaling {rope.get('rope_type', rope.get('type'))!r} is not supported")
        theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
        return ModelConfig(
            vocab_size=int(hf["vocab_size"]), context_length=int(hf["max_position_embeddings"]), d_model=d_model,
            num_layers=int(hf["num_hidden_layers"]), num_heads=heads, d_ff=int(hf["intermediate_size"]), rope_theta=theta,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        )  # fmt: skip
    except KeyError as e:
        raise ExportError(f"{where}: missing {e.args[0]!r}") from None


def from_hf(directory: PathLike, device: str | torch.device = "cpu") -> TransformerLM:
    """A TransformerLM from a Llama checkpoint directory (config.json + model.safetensors) of this shape,
    e.g. one written by `to_hf`: `from_hf(to_hf(m, tok, d))` equals `m` bit for bit. Its tokenizer loads
    with `Tokenizer.from_hf(directory / "tokenizer.json")`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = Path(directory)
    config = config_from_hf(_read_json(d / "config.json"), str(d / "config.json"))
    weights_path = d / WEIGHTS_NAME
    if not weights_path.is_file():
        sharded = " (sharded checkpoints are not supported)" if (d / f"{WEIGHTS_NAME}.index.json").is_file() else ""
        raise ExportError(f"{weights_path}: not found{sharded}")
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError) as e:
        raise ExportError(f"{weights_path}: not a readable safetensors file ({e})") from None
    model = TransformerLM(config)
    dtype = model.token_embeddings.weight.dtype
    taken: set[str] = set()

    def w(name: str) -> torch.Tensor:
        if name not in weights:
            raise ExportError(f"{weights_path}: no tensor {name!r}")
        taken.add(name)
        return weights[name].to(dtype)

    state = {"token_embeddings.weight": w("model.embed_tokens.weight"), "ln_final.weight": w("model.norm.weight")}
    for i in range(config.num_layers):
        p, q = f"model.layers.{i}.", f"layers.{i}."
        state[q + "attn.q_proj.weight"] = halves_to_pairs(w(p + "self_attn.q_proj.weight"), config.num_heads)
        state[q + "attn.k_proj.weight"] = halves_to_pairs(w(p + "self_attn.k_proj.weight"), config.num_heads)
        state[q + "attn.v_proj.weight"] = w(p + "self_attn.v_proj.weight")
        state[q + "attn.output_proj.weight"] = w(p + "self_attn.o_proj.weight")
        state[q + "ffn.w1.weight"] = w(p + "mlp.gate_proj.weight")
        state[q + "ffn.w3.weight"] = w(p + "mlp.up_proj.weight")
        state[q + "ffn.w2.weight"] = w(p + "mlp.down_proj.weight")
        state[q + "ln1.weight"] = w(p + "input_layernorm.weight")
        state[q + "ln2.weight"] = w(p + "post_attention_layernorm.weight")
    state["lm_head.weight"] = state["token_embeddings.weight"] if config.tie_embeddings else w("lm_head.weight")
    unused = sorted(set(weights) - taken)
    if unused:
        raise ExportError(
            f"{weights_path}: tensors bpe-lm's model has no place for: {', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ExportError(
            f"{weights_path}: shapes do not match config.json ({str(e).splitlines()[-1].strip()})"
        ) from None
    return model.to(device).eval()
