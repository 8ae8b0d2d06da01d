"""Configuration, without PyTorch: the model's shape and switches (`ModelConfig`, also what checkpoints
record), and the run configuration: one TOML file (stdlib `tomllib`), `--set section.key=value` overrides,
validation with messages that name the setting, and a TOML writer for the resolved config saved in the run
directory.
"""

from __future__ import annotations

import math
import os
import re
import sys
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bpe_lm.errors import BpeLmError

if TYPE_CHECKING:
    from bpe_lm.tokenizer import Tokenizer

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def ranged(
    default: Any, *, at_least: float | None = None, above: float | None = None, below: float | None = None
) -> Any:
    """A numeric setting's default and its range, kept in the field's metadata: the one definition that the
    file, --set and the tests read (`_typed`). For a tuple, the range is of each element."""
    return field(default=default, metadata={"at_least": at_least, "above": above, "below": below})


@dataclass
class ModelConfig:
    """The model's shape and ablation switches; `bpe_lm.model.TransformerLM` builds from it."""

    vocab_size: int = field(metadata={"at_least": 1})
    context_length: int = field(metadata={"at_least": 1})
    d_model: int = field(metadata={"at_least": 1})
    num_layers: int = field(metadata={"at_least": 1})
    num_heads: int = field(metadata={"at_least": 1})
    d_ff: int | None = ranged(
        None, at_least=1
    )  # None: 8/3·d_model rounded up to a multiple of 64 (SwiGLU), 4·d_model (SiLU)
    rope_theta: float = ranged(10000.0, above=0)
    # Ablation switches (CS336 §7.3):
    norm: Literal["pre", "post", "none"] = "pre"
    position: Literal["rope", "none"] = "rope"
    ffn: Literal["swiglu", "silu", "relu2"] = "swiglu"
    tie_embeddings: bool = False
    # Beyond the CS336 baseline (all off by default; `recipe = "modern"` in [model] turns them on):
    qk_norm: bool = False  # RMSNorm on each head's queries and keys, before RoPE
    zero_init_output: bool = False  # attention output_proj and feed-forward w2 start at zero
    logit_softcap: float = ranged(0.0, at_least=0)  # logits -> c·tanh(logits / c) with c = this; 0 = off
    # "fused": torch's scaled_dot_product_attention; "reference": the from-scratch one in bpe_lm.model;
    # "flex": FlexAttention with a block mask (only with document_mask, where it skips the masked blocks);
    # "auto": fused, or with document_mask on CUDA flex (all agree within tolerance).
    attention: Literal["auto", "fused", "reference", "flex"] = "auto"
    # Attention stops at document boundaries: a token attends only to earlier tokens of its own document,
    # the documents of a window told apart by end_of_text_id (an end-of-text token ends its document).
    document_mask: bool = False
    end_of_text_id: int | None = ranged(None, at_least=0)  # with document_mask: data.end_of_text_id

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "d_model", "num_layers", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, not {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by model.num_heads ({self.num_heads})")
        checks = {
            "norm": ("pre", "post", "none"),
            "position": ("rope", "none"),
            "ffn": ("swiglu", "silu", "relu2"),
            "attention": ("auto", "fused", "reference", "flex"),
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"model.{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if self.attention == "flex" and not self.document_mask:
            raise ValueError('model.attention = "flex" computes the document mask: it needs model.document_mask = true')
        if self.position == "rope" and (self.d_model // self.num_heads) % 2:
            raise ValueError(
                f"RoPE needs an even head dimension; d_model / num_heads = {self.d_model // self.num_heads}"
            )
        if self.d_ff is None:  # two matrices (silu, relu2): 4·d_model; three (swiglu): 8/3·d_model, to 64
            self.d_ff = 4 * self.d_model if self.ffn != "swiglu" else 64 * math.ceil(8 * self.d_model / 3 / 64)
        if not (isinstance(self.logit_softcap, (int, float)) and self.logit_softcap >= 0):
            raise ValueError(f"model.logit_softcap must be 0 (off) or positive, not {self.logit_softcap!r}")
        if self.d_ff < 1:
            raise ValueError(f"model.d_ff must be positive, not {self.d_ff}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model setting(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**d)


class ConfigError(BpeLmError, ValueError):
    """A problem with the run configuration, named by its setting."""


@dataclass
class OptimizerConfig:
    lr: float = ranged(1e-3, above=0)  # peak learning rate
    min_lr: float = ranged(1e-4, at_least=0)
    # Warm-up: linear from 0 to lr over warmup_iters steps, or over warmup_fraction of the budget in the
    # budget's own unit (steps, tokens or minutes); one of the two. Unset: 100 steps under a step or token
    # budget, 2% of the time under training.max_minutes (where the number of steps is not known in advance).
    warmup_iters: int | None = ranged(None, at_least=0)
    warmup_fraction: float | None = ranged(None, at_least=0, below=1)
    betas: tuple[float, float] = ranged((0.9, 0.95), at_least=0, below=1)
    eps: float = ranged(1e-8, above=0)
    weight_decay: float = ranged(0.1, at_least=0)
    grad_clip: float = ranged(1.0, at_least=0)  # 0 disables clipping
    name: str = "adamw"  # "muon": Muon for the hidden 2-D matrices, AdamW (lr) for embeddings, head and gains
    muon_lr: float = ranged(0.02, above=0)  # peak learning rate of the Muon groups (the schedule scales it like lr)
    muon_momentum: float = ranged(0.95, at_least=0, below=1)
    head_lr: float = ranged(0.0, at_least=0)  # an untied LM head's own peak learning rate; 0: lr


@dataclass
class DataConfig:
    # Each: a .npy from `bpe-lm encode`, a glob of them, a directory `encode -o DIR/` wrote (its manifest),
    # or a list of these; every entry is a source. Windows never straddle two files.
    train: str | list[str] = ""
    valid: str | list[str] = ""
    # One weight per train entry, normalised: the share of windows drawn from it. Unset: every file in
    # proportion to its tokens (uniform over all windows).
    train_weights: list[float] | None = None
    # "random": windows start anywhere (CS336); "document": every window starts at a document start (the
    # file's start or the position after an end-of-text id), found once per file and kept beside it.
    align: Literal["random", "document"] = "random"
    # The end-of-text id that separates documents; unset: data.tokenizer's <|endoftext|>.
    end_of_text_id: int | None = ranged(None, at_least=0)
    # The tokenizer directory the token files were encoded with. When set, model.vocab_size comes from it
    # (or must equal it), the run keeps a copy (RUN/tokenizer) and the commands that read the run use it.
    tokenizer: str = ""
    # That tokenizer's fingerprint (`Tokenizer.fingerprint`): filled in from it, and when given, checked
    # against it; the run's config.toml records it, so a run is tied to exactly one tokenizer.
    tokenizer_sha256: str = ""


@dataclass
class TrainingConfig:
    batch_size: int = ranged(32, at_least=1)  # sequences per optimizer step, over all processes and micro-steps
    grad_accum: int = ranged(1, at_least=1)
    # The budget: exactly one of these is non-zero. The learning-rate schedule ends at it.
    max_iters: int = ranged(0, at_least=0)
    max_tokens: int = ranged(0, at_least=0)
    max_minutes: float = ranged(0.0, at_least=0)
    # Validation: every eval_interval steps, or `evals` times over the budget, evenly in its unit; one of the
    # two. Unset: every 100 steps under a step or token budget, 20 times under max_minutes.
    eval_interval: int | None = ranged(None, at_least=1)
    evals: int | None = ranged(None, at_least=1)
    eval_iters: int = ranged(20, at_least=1)
    log_interval: int = ranged(10, at_least=1)
    checkpoint_interval: int = ranged(500, at_least=1)
    out_dir: str = "runs/run"
    seed: int = ranged(0, at_least=0)
    device: str = "auto"  # auto: cuda > mps > cpu
    dtype: str = "auto"  # auto: bfloat16 autocast on CUDA, float32 elsewhere
    compile: bool = False  # torch.compile the model (loss included) and the optimizer step
    cuda_graphs: bool = (
        False  # with compile on CUDA: replay each step as CUDA graphs (mode "reduce-overhead"); best for small models
    )
    # The layers' projections (attention, feed-forward) multiply in float8 with per-tensor dynamic scales
    # (bpe_lm.float8): on CUDA it needs compute capability 8.9+ (float8 tensor cores); on CPU it runs,
    # slowly (for tests). Its GPU speed has not been measured yet (scripts/gpu_check.sh).
    float8: bool = False


@dataclass
class LoggingConfig:
    wandb_project: str = ""  # log to Weights & Biases when set and wandb is installed
    tensorboard: bool = False  # write TensorBoard events to out_dir/tb when tensorboard is installed


@dataclass
class RunConfig:
    model: ModelConfig
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    # The config file these settings were read from (None when built in code): never to be written over.
    source: str | None = field(default=None, compare=False)
    # data.train and data.valid entries as written in the config (before relative paths were resolved):
    # the names of the sources in metrics and summaries.
    written: dict[str, list[str]] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            "model": self.model.to_dict(),
            "optimizer": asdict(self.optimizer),
            "data": asdict(self.data),
            "training": asdict(self.training),
            "logging": asdict(self.logging),
        }


SECTIONS = {"optimizer": OptimizerConfig, "data": DataConfig, "training": TrainingConfig, "logging": LoggingConfig}


def parse_value(text: str) -> Any:
    """A TOML value (number, bool, string, array); a bare word is taken as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: the key must be section.key, e.g. training.batch_size")
        section = raw.setdefault(parts[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"--set {item!r}: [{parts[0]}] in the config file is not a table of settings")
        section[parts[1]] = parse_value(value.strip())
    return raw


_TOML_SPELLING = {"True": "true", "False": "false", "None": "(leave the setting out)", "yes": "true", "no": "false"}


def _in_range(setting: str, value: float, meta: Any) -> None:
    at_least, above, below = meta.get("at_least"), meta.get("above"), meta.get("below")
    if at_least is not None and value < at_least:
        raise ConfigError(f"{setting} must be at least {at_least:g}, not {value!r}")
    if above is not None and value <= above:
        raise ConfigError(f"{setting} must be above {above:g}, not {value!r}")
    if below is not None and value >= below:
        raise ConfigError(f"{setting} must be below {below:g}, not {value!r}")


def _kind_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {_kind_name(typing.get_args(hint)[0]).removeprefix('a ').removeprefix('an ')}s"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _typed(setting: str, hint: Any, value: Any, meta: Any = None) -> Any:
    """`value` as the type the setting's dataclass field declares, or a ConfigError naming the setting: the
    one table of types (derived from the dataclasses) for the config file and for --set alike."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _typed(setting, options[0], value, meta)
        for option in options:  # the first kind the value is (str | list[str]: a path, or a list of them)
            try:
                return _typed(setting, option, value, meta)
            except ConfigError:
                continue
        raise ConfigError(f"{setting} must be {' or '.join(_kind_name(o) for o in options)}, not {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{setting} must be {_kind_name(hint)}, not {value!r}")
        return [_typed(setting, args[0], v, meta) for v in value]
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{setting} must be one of {', '.join(map(str, args))}, not {value!r}")
        return value
    hint_name = _kind_name(hint)
    if hint is bool and not isinstance(value, bool) or hint is str and not isinstance(value, str):
        spelled = ""
        if hint is bool and isinstance(value, str) and value in _TOML_SPELLING:
            spelled = f" (TOML spells it {_TOML_SPELLING[value]})"
        elif hint is bool and isinstance(value, str) and value.lower() in ("true", "false"):
            spelled = f" (TOML spells it {value.lower()}, without quotes)"
        raise ConfigError(f"{setting} must be {hint_name}, not {value!r}{spelled}")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{setting} must be {hint_name}, not {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{setting} must be a finite number, not {value!r}")
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{setting} must be an integer, not {value!r}")
            value = int(value)
        else:
            value = float(value)
        _in_range(setting, value, meta or {})
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or (args and args[-1] is not Ellipsis and len(value) != len(args)):
            raise ConfigError(f"{setting} must be a list of {len(args)} numbers, not {value!r}")
        kinds = [args[0]] * len(value) if args and args[-1] is Ellipsis else list(args)
        return tuple(_typed(setting, k, v, meta) for k, v in zip(kinds, value))
    return value


def _build_section(cls, name: str, values: Any):
    if not isinstance(values, dict):
        raise ConfigError(f"[{name}] must be a table of settings, not {values!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"[{name}]: unknown setting(s) {', '.join(unknown)} (known: {', '.join(known)})")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _typed(f"{name}.{key}", hints[key], value, known[key].metadata) for key, value in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        message = str(e)
        missing = re.search(r"missing \d+ required positional arguments?: (.*)", message)
        if missing:
            message = f"missing setting(s) {missing.group(1).replace(chr(39), '')}"
            if name == "model" and "vocab_size" in message:
                message += " (or set data.tokenizer: the vocabulary size is then the tokenizer's)"
        raise ConfigError(message if message.startswith(f"{name}.") else f"[{name}]: {message}") from None


# Shorthands for [model] and [optimizer]: `recipe = "modern"` stands for these settings (any of them given
# explicitly wins). The resolved config.toml of a run holds the expanded settings, not the shorthand.
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "model": {"modern": {"qk_norm": True, "ffn": "relu2", "zero_init_output": True, "logit_softcap": 15.0}},
    "optimizer": {"modern": {"name": "muon"}},
}


def expand_recipe(section: str, values: Any) -> Any:
    if not isinstance(values, dict):
        return values  # refused, naming the section, by _build_section
    values = dict(values)
    recipe = values.pop("recipe", None)
    if recipe is None:
        return values
    known = RECIPES.get(section, {})
    if recipe not in known:
        raise ConfigError(f"{section}.recipe must be one of {', '.join(known) or '(none)'}, not {recipe!r}")
    return {**known[recipe], **values}


def build_config(raw: dict[str, Any], base_dir: str | os.PathLike[str] | None = None) -> RunConfig:
    unknown = sorted(set(raw) - {"model", *SECTIONS})
    if unknown:
        raise ConfigError(f"unknown section(s) [{'], ['.join(unknown)}] (known: model, {', '.join(SECTIONS)})")
    if "model" not in raw:
        raise ConfigError("the config has no [model] section")

    def section(name: str) -> Any:
        built = _build_section(SECTIONS[name], name, expand_recipe(name, raw.get(name, {})))
        if name == "data":
            _check_data_entries(built)
            written.update(train=data_entries(built.train), valid=data_entries(built.valid))
        if base_dir is not None:  # relative paths are relative to the config file, as the README says
            for key in PATH_SETTINGS.get(name, ()):
                value = getattr(built, key)
                if isinstance(value, list):
                    setattr(built, key, [v if os.path.isabs(v) else str(Path(base_dir) / v) for v in value])
                elif value and not os.path.isabs(value):
                    setattr(built, key, str(Path(base_dir) / value))
        return built

    written: dict[str, list[str]] = {}
    # [data] first: its tokenizer gives [model] its vocabulary size.
    data = section("data")
    model_values = expand_recipe("model", raw["model"])
    tokenizer = _load_data_tokenizer(data) if data.tokenizer else None  # loaded once, for every use here
    if tokenizer is not None:
        model_values = _vocabulary_from_tokenizer(model_values, data, tokenizer)
    model = _build_section(ModelConfig, "model", model_values)
    sections = {name: data if name == "data" else section(name) for name in SECTIONS}
    cfg = RunConfig(model=model, **sections, written=written)
    if not cfg.training.out_dir.strip():
        raise ConfigError(
            'training.out_dir must name a directory, not "" (the run would write into the working directory)'
        )
    validate(cfg, tokenizer)
    return cfg


def data_entries(value: str | list[str]) -> list[str]:
    """data.train or data.valid as a list of entries (one path, glob or directory each)."""
    return [value] if isinstance(value, str) else list(value)


def _check_data_entries(data: DataConfig) -> None:
    for key in ("train", "valid"):
        value = getattr(data, key)
        if value == "":
            continue  # not set: `validate` says so
        entries = data_entries(value) if isinstance(value, (str, list)) else None
        if (
            entries is None
            or not all(isinstance(e, str) and e for e in entries)
            or (isinstance(value, list) and not value)
        ):
            raise ConfigError(
                f"data.{key} must be a path, a glob, or a list of them (non-empty strings), not {value!r}"
            )
    weights = data.train_weights
    if weights is not None:
        if not isinstance(value := data.train, list) or len(weights) != len(value):
            count = len(data_entries(data.train))
            raise ConfigError(
                f"data.train_weights has {len(weights)} weights for {count} data.train entr{'y' if count == 1 else 'ies'}: give one per entry"
            )
        if (
            not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights
            )
            or not sum(weights) > 0
        ):
            raise ConfigError(f"data.train_weights must be non-negative finite numbers, not all zero, not {weights!r}")
        data.train_weights = [float(w) for w in weights]


PATH_SETTINGS = {"data": ("train", "valid", "tokenizer"), "training": ("out_dir",)}


def _load_data_tokenizer(data: DataConfig) -> Tokenizer:
    from bpe_lm.tokenizer import Tokenizer

    if not Path(data.tokenizer).is_dir():
        raise ConfigError(
            f"data.tokenizer {data.tokenizer}: tokenizer directory not found (train one with `bpe-lm train-tokenizer`)"
        )
    return Tokenizer.load(data.tokenizer)


def _vocabulary_from_tokenizer(model_values: Any, data: DataConfig, tokenizer: Tokenizer) -> Any:
    """[model] with vocab_size taken from data.tokenizer when it is absent, and refused when it differs;
    data.tokenizer_sha256 filled in from the tokenizer, or checked against it. Before any compute: a
    mismatch found here costs nothing, one found at the first batch costs the import of torch and a model."""
    fingerprint = tokenizer.fingerprint()
    if data.tokenizer_sha256 and data.tokenizer_sha256 != fingerprint:
        raise ConfigError(
            f"data.tokenizer {data.tokenizer}: its fingerprint is {fingerprint[:16]}…, but data.tokenizer_sha256 "
            f"says {data.tokenizer_sha256[:16]}…: not the tokenizer this config was written for"
        )
    data.tokenizer_sha256 = fingerprint
    if not isinstance(model_values, dict):
        return model_values  # refused, naming the section, by _build_section
    given = model_values.get("vocab_size")
    if given is None:
        return {**model_values, "vocab_size": tokenizer.vocab_size}
    if given != tokenizer.vocab_size:
        raise ConfigError(
            f"model.vocab_size = {given!r}, but data.tokenizer {data.tokenizer} has {tokenizer.vocab_size:,} tokens: "
            "leave model.vocab_size out to take the tokenizer's, or give the tokenizer the token files came from"
        )
    return model_values


# What an unset warm-up and evaluation schedule means, by the kind of budget (see OptimizerConfig and
# TrainingConfig): counted in steps where the budget fixes the number of steps, in fractions of the budget
# where it does not (a time budget on a slow machine makes few steps, and must still warm up and evaluate).
DEFAULT_WARMUP_ITERS = 100
DEFAULT_EVAL_INTERVAL = 100
TIME_BUDGET_WARMUP_FRACTION = 0.02
TIME_BUDGET_EVALS = 20


def _resolve_schedule(t: TrainingConfig, o: OptimizerConfig) -> None:
    """Fills in the unset one of each pair (warm-up, evaluation), or refuses a pair set twice, or a count of
    steps under a time budget."""
    for section, by_steps, by_budget in (
        ("optimizer", "warmup_iters", "warmup_fraction"),
        ("training", "eval_interval", "evals"),
    ):
        owner = o if section == "optimizer" else t
        if getattr(owner, by_steps) is not None and getattr(owner, by_budget) is not None:
            raise ConfigError(f"set {section}.{by_steps} or {section}.{by_budget}, not both")
        if t.max_minutes and getattr(owner, by_steps) is not None:
            raise ConfigError(
                f"{section}.{by_steps} counts steps, but under training.max_minutes the number of steps depends on the "
                f"machine (a slow one may never reach it); set {section}.{by_budget} instead, a share of the time"
            )  # fmt: skip
    if o.warmup_iters is None and o.warmup_fraction is None:
        if t.max_minutes:
            o.warmup_fraction = TIME_BUDGET_WARMUP_FRACTION
        else:
            o.warmup_iters = DEFAULT_WARMUP_ITERS
    if t.eval_interval is None and t.evals is None:
        if t.max_minutes:
            t.evals = TIME_BUDGET_EVALS
        else:
            t.eval_interval = DEFAULT_EVAL_INTERVAL


def validate(cfg: RunConfig, tokenizer: Tokenizer | None = None) -> None:
    """The rules between settings; `tokenizer` is data.tokenizer's, loaded (None without one)."""
    t, o = cfg.training, cfg.optimizer
    budgets = [name for name in ("max_iters", "max_tokens", "max_minutes") if getattr(t, name)]
    if len(budgets) != 1:
        raise ConfigError(
            f"set exactly one budget of training.max_iters, training.max_tokens, training.max_minutes (got {', '.join(budgets) or 'none'})"
        )
    _resolve_schedule(t, o)
    if t.batch_size % t.grad_accum:
        raise ConfigError(
            f"training.batch_size ({t.batch_size}) must be divisible by training.grad_accum ({t.grad_accum})"
        )
    if t.device not in ("auto", "cpu", "mps") and not t.device.startswith("cuda"):
        raise ConfigError(f"training.device must be auto, cpu, mps or cuda[:N], not {t.device!r}")
    if t.cuda_graphs and not t.compile:
        raise ConfigError(
            "training.cuda_graphs needs training.compile = true (the graphs are recorded by torch.compile)"
        )
    if t.dtype not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"training.dtype must be auto, float32 or bfloat16, not {t.dtype!r}")
    # Each setting's own type and range are checked as it is read (`_typed`, from the fields' metadata);
    # here, the rules between settings.
    if o.min_lr > o.lr:
        raise ConfigError(f"optimizer.min_lr ({o.min_lr}) must not exceed optimizer.lr ({o.lr})")
    if o.name not in ("adamw", "muon"):
        raise ConfigError(f"optimizer.name must be adamw or muon, not {o.name!r}")
    if o.head_lr and cfg.model.tie_embeddings:
        raise ConfigError("optimizer.head_lr needs an untied head (model.tie_embeddings = false)")
    if cfg.data.align == "document" or cfg.model.document_mask:
        _resolve_end_of_text(cfg, tokenizer)
    for key in ("train", "valid"):
        if not getattr(cfg.data, key):
            raise ConfigError(f"data.{key} is not set (a .npy file from `bpe-lm encode`)")


def _resolve_end_of_text(cfg: RunConfig, tokenizer: Tokenizer | None) -> None:
    """The end-of-text id that data.align = "document" and model.document_mask find documents by: the one
    given (data.end_of_text_id, or model.end_of_text_id: they must agree), else data.tokenizer's
    <|endoftext|>. Both settings hold it afterwards (the model's goes into checkpoints)."""
    d, m = cfg.data, cfg.model
    needs = 'data.align = "document"' if d.align == "document" else "model.document_mask"
    if d.end_of_text_id is not None and m.end_of_text_id is not None and d.end_of_text_id != m.end_of_text_id:
        raise ConfigError(
            f"data.end_of_text_id ({d.end_of_text_id}) and model.end_of_text_id ({m.end_of_text_id}) differ"
        )
    eot = d.end_of_text_id if d.end_of_text_id is not None else m.end_of_text_id
    if eot is None:
        if tokenizer is None:
            raise ConfigError(
                f"{needs} finds documents by their end-of-text id: set data.tokenizer (or data.end_of_text_id)"
            )
        from bpe_lm.readers import END_OF_TEXT

        ids = tokenizer.special_token_ids
        if END_OF_TEXT not in ids:
            raise ConfigError(
                f"{needs}: data.tokenizer {d.tokenizer} has no {END_OF_TEXT} token; set data.end_of_text_id"
            )
        eot = ids[END_OF_TEXT]
    if eot >= m.vocab_size:
        raise ConfigError(f"data.end_of_text_id ({eot}) must be below model.vocab_size ({m.vocab_size})")
    d.end_of_text_id = eot
    if m.document_mask:
        m.end_of_text_id = eot


def load_config(path: str | os.PathLike[str], overrides: list[str] | None = None) -> RunConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML ({e})") from None
    cfg = build_config(apply_overrides(raw, overrides or []), base_dir=p.parent)
    cfg.source = os.fspath(p)
    return cfg


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        raise ValueError("TOML has no null")
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(data: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml_value(v)}" for key, v in values.items() if v is not None)
        lines.append("")
    return "\n".join(lines)
