"""Model commands: accounting (no PyTorch), train, eval, generate, export, plot."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bpe_lm.cli.common import (
    HelpFormatter,
    UserError,
    add_errors_argument,
    add_model_source,
    add_tokenizer_option,
    check_inputs,
    check_model_source,
    check_output_file,
    number,
    positive_int,
    require_torch,
)
from bpe_lm.run_files import check_model_tokenizer, recorded_vocab_size, tokenizer_for_model
from bpe_lm.units import format_duration


def add_accounting(sub: argparse._SubParsersAction) -> None:
    from bpe_lm.accounting import PEAK_FLOPS, PRESETS

    p = sub.add_parser(
        "accounting",
        help="parameters, FLOPs, memory and training time of a model configuration",
        description="Print parameters by component, forward FLOPs by matrix multiply, AdamW training memory and "
        "training time for a token budget. Give a --preset, explicit dimensions, or both (dimensions override).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(PRESETS), help="a known configuration")
    for name in ("vocab-size", "context-length", "num-layers", "d-model", "num-heads", "d-ff"):
        p.add_argument(f"--{name}", type=positive_int, help=f"{name.replace('-', ' ')} (overrides the preset)")
    p.add_argument("--ffn", choices=["swiglu", "silu", "relu2"], default="swiglu", help="feed-forward type")
    p.add_argument("--qk-norm", action="store_true", help="RMSNorm on queries and keys per head")
    p.add_argument("--logit-softcap", type=number(0), default=0.0, help="tanh soft-cap of the logits (0: off)")
    p.add_argument("--norm", choices=["pre", "post", "none"], default="pre")
    p.add_argument("--tie-embeddings", action="store_true")
    p.add_argument(
        "--batch-size", type=positive_int, default=1, help="sequences per step, for memory and FLOPs per step"
    )
    p.add_argument(
        "--tokens", type=number(0, above=True), default=327.68e6, help="training token budget for the time estimate"
    )
    p.add_argument(
        "--mfu",
        type=number(0, above=True, maximum=1),
        default=0.4,
        help="model FLOPs utilisation for the time estimate",
    )
    p.add_argument("--peak", default="h100-bf16", help=f"peak FLOP/s: one of {', '.join(PEAK_FLOPS)}, or a number")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_accounting)


def run_accounting(args: argparse.Namespace) -> None:
    import json

    from bpe_lm.accounting import PEAK_FLOPS, PRESETS, account, render
    from bpe_lm.config import ModelConfig

    dims: dict[str, Any] = dict(PRESETS[args.preset]) if args.preset else {}
    for name in ("vocab_size", "context_length", "num_layers", "d_model", "num_heads", "d_ff"):
        if getattr(args, name) is not None:
            dims[name] = getattr(args, name)
    missing = [n for n in ("vocab_size", "context_length", "num_layers", "d_model", "num_heads") if n not in dims]
    if missing:
        raise UserError(f"give --preset or all of: {', '.join('--' + n.replace('_', '-') for n in missing)}")
    if args.peak in PEAK_FLOPS:
        peak_name, peak = args.peak, PEAK_FLOPS[args.peak]
    else:
        try:
            peak = number(0, above=True)(args.peak)
            peak_name = f"{peak:g} FLOP/s"
        except argparse.ArgumentTypeError:
            raise UserError(
                f"--peak {args.peak!r}: expected one of {', '.join(PEAK_FLOPS)} or a number of FLOP/s"
            ) from None
    if not 0 < args.mfu <= 1:
        raise UserError(f"--mfu {args.mfu}: expected a fraction in (0, 1]")
    config = ModelConfig(
        **dims,
        ffn=args.ffn,
        norm=args.norm,
        tie_embeddings=args.tie_embeddings,
        qk_norm=args.qk_norm,
        logit_softcap=args.logit_softcap,
    )
    acc = account(config, args.batch_size)
    if args.json:
        print(json.dumps(acc.to_dict(args.tokens, peak, args.mfu), indent=2))
    else:
        print(render(acc, args.tokens, peak_name, peak, args.mfu))


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a Transformer LM from a TOML config",
        description="Train the Transformer LM described by a TOML config on .npy token files from `bpe-lm encode`. "
        "Writes config.toml, metrics.jsonl and checkpoint.pt to training.out_dir. Ctrl-C saves a checkpoint; --resume continues.",
        formatter_class=HelpFormatter,
    )
    add_train_arguments(p)
    p.set_defaults(func=run_train)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `bpe-lm train` (also under torchrun: `torchrun ... -m bpe_lm train ...`)."""
    p.add_argument(
        "--config", required=True, metavar="RUN.toml", help="run configuration (see the README's Training section)"
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a setting (repeatable), e.g. training.batch_size=64",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/checkpoint.pt")
    p.add_argument(
        "--force",
        action="store_true",
        help="start over in an OUT_DIR that holds an earlier run (replaces its checkpoint and metrics)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_train(args: argparse.Namespace) -> None:
    import time

    from bpe_lm.config import load_config
    from bpe_lm.run_files import check_before_training

    began = time.perf_counter()
    cfg = load_config(args.config, args.set)
    check_before_training(cfg, resume=args.resume, force=args.force)  # before torch: a bad input costs a second
    require_torch()
    from bpe_lm.train import train

    summary = train(cfg, resume=args.resume, force=args.force, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:
        parts = [f"{summary['steps']} steps", f"{summary['tokens']:,} tokens", format_duration(summary["seconds"])]
        if "tokens_per_s" in summary:
            parts.append(f"{summary['tokens_per_s']:,.0f} tokens/s")
        if "valid_loss" in summary:
            parts.append(f"valid loss {summary['valid_loss']:.4f}")
        by = f" by {signal.Signals(summary['signal']).name}" if summary.get("signal") else ""
        state = f"interrupted{by}; saved" if summary["interrupted"] else "done;"
        print(f"{state} {', '.join(parts)}; checkpoint {summary['checkpoint']}", file=sys.stderr)
        drawn = summary.get("tokens_by_source") or {}
        if len(drawn) > 1:  # the mixture actually drawn, against the one asked for
            total = max(sum(drawn.values()), 1)
            print("drawn: " + ", ".join(f"{name} {100 * n / total:.1f}%" for name, n in drawn.items()), file=sys.stderr)
        if cfg.training.max_minutes:
            # The budget covers the steps, the evaluations and the final checkpoint (time is kept free for the
            # last two); what came before the first step, and any overrun, is said.
            budget = cfg.training.max_minutes * 60
            note = f"the {format_duration(budget)} budget covered {format_duration(summary['seconds'])} of steps, evaluations and checkpoints"
            if summary["seconds"] > budget + 1 and not summary["interrupted"]:
                note += f" ({format_duration(summary['seconds'] - budget)} past it: the final evaluation and checkpoint took longer than the earlier ones)"
            before = time.perf_counter() - began - summary["session_seconds"]
            print(f"{note}; before the first step: {format_duration(before)} (importing PyTorch, checks, building the model)", file=sys.stderr)  # fmt: skip
    if summary["interrupted"]:
        # 128 + the signal, as a shell reports a command a signal stopped (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
        raise SystemExit(128 + (summary.get("signal") or signal.SIGINT))


def add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="loss, perplexity and bits per byte of a model on a token file", formatter_class=HelpFormatter
    )
    add_model_source(p)
    p.add_argument("--data", required=True, metavar="valid.npy", help="token ids from `bpe-lm encode`")
    p.add_argument("--batch-size", type=positive_int, default=16, help="sequences per batch")
    p.add_argument(
        "--max-batches",
        type=positive_int,
        default=None,
        help="evaluate at most this many batches (default: the whole file)",
    )
    p.add_argument(
        "--raw-text",
        metavar="FILE",
        help="the corpus file the tokens came from (text, JSON lines, parquet, Arrow, CSV), to report bits per byte; checked against the tokens",
    )
    p.add_argument(
        "--text-field",
        default="text",
        metavar="NAME",
        help="with --raw-text in a record format: the field or column that holds each record's text",
    )
    add_tokenizer_option(p, "with --raw-text: the tokenizer the tokens came from")
    add_errors_argument(p)
    p.add_argument(
        "--text-bytes", type=positive_int, default=None, help="UTF-8 size of that text, instead of --raw-text"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> None:
    import json
    import math

    from bpe_lm.token_files import check_token_file, load_tokens

    source = args.run or args.checkpoint
    if args.raw_text and args.text_bytes:
        raise UserError("give --raw-text or --text-bytes, not both")
    check_model_source(source)
    if args.raw_text:
        check_inputs(args.raw_text)
    tokens = load_tokens(args.data)
    vocab_size = recorded_vocab_size(source)
    if vocab_size is not None:  # the run's recorded model; the checkpoint itself is checked once loaded
        check_token_file(tokens, args.data, vocab_size)
    text_bytes = args.text_bytes
    tok = None
    if args.raw_text:
        # A wrong text file would give a wrong bits per byte without any sign: check it encodes to these tokens.
        tok, tok_name = tokenizer_for_model(source, args.tokenizer)
        read = tok.count_file(args.raw_text, text_field=args.text_field, errors=args.errors)
        encoded = read.tokens
        if encoded != len(tokens):
            raise UserError(f"--raw-text {args.raw_text}: encodes to {encoded:,} tokens with {tok_name}, but {args.data} holds {len(tokens):,}; "
                            "give the text these tokens were encoded from (and its tokenizer)")  # fmt: skip
        text_bytes = read.text_bytes
    require_torch()
    from bpe_lm.checkpoint import load_model
    from bpe_lm.evaluation import bits_per_byte, file_loss
    from bpe_lm.runtime import resolve_device

    device = resolve_device(args.device, "--device")
    model, state = load_model(source, device)
    if tok is not None:
        check_model_tokenizer(state, model.config.vocab_size, tok, tok_name, source)
    check_token_file(tokens, args.data, model.config.vocab_size, model.config.context_length)
    loss, count = file_loss(model, tokens, args.batch_size, device, args.max_batches)
    result = {"loss": loss, "perplexity": math.exp(min(loss, 50)), "tokens_evaluated": count}
    if text_bytes:
        # Of the whole file: the mean loss per token times the file's tokens per byte.
        result["bits_per_byte"] = bits_per_byte(loss, len(tokens), text_bytes)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"loss {loss:.4f}  perplexity {result['perplexity']:.2f}"
            + (f"  bits/byte {result['bits_per_byte']:.4f}" if "bits_per_byte" in result else "")
            + f"  ({count:,} tokens)"
        )


def add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="sample text from a trained model", formatter_class=HelpFormatter)
    add_model_source(p)
    add_tokenizer_option(p, "the tokenizer the model was trained with")
    p.add_argument("--prompt", default="Once upon a time", help="text to continue")
    p.add_argument("--max-tokens", type=positive_int, default=256, help="most tokens to generate")
    p.add_argument("--temperature", type=number(0), default=0.8, help="0 = greedy")
    p.add_argument(
        "--top-p", type=number(0, above=True, maximum=1), default=0.9, help="nucleus sampling mass (1 = off)"
    )
    p.add_argument("--top-k", type=positive_int, default=None, help="sample among the K most likely tokens")
    p.add_argument("--seed", type=int, default=None, help="random seed, for repeatable samples")
    p.add_argument("--num-samples", type=positive_int, default=1)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context for every token")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> None:
    from bpe_lm.readers import END_OF_TEXT as EOT

    source = args.run or args.checkpoint
    if args.temperature < 0:
        raise UserError(f"--temperature {args.temperature}: must not be negative")
    if not 0 < args.top_p <= 1:
        raise UserError(f"--top-p {args.top_p}: must be in (0, 1]")
    check_model_source(source)
    tok, tok_name = tokenizer_for_model(source, args.tokenizer)
    if not args.prompt and EOT not in tok.special_token_ids:
        raise UserError(f"--prompt is empty and {tok_name} has no {EOT} token to start from; give a prompt")
    require_torch()
    import torch

    from bpe_lm.checkpoint import load_model
    from bpe_lm.generate import generate
    from bpe_lm.runtime import resolve_device

    device = resolve_device(args.device, "--device")
    model, state = load_model(source, device)
    check_model_tokenizer(state, model.config.vocab_size, tok, tok_name, source)
    prompt = tok.encode(args.prompt) if args.prompt else [tok.token_to_id(EOT)]
    eos = tok.special_token_ids.get(EOT)
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed if args.seed is not None else torch.seed())
    for i in range(args.num_samples):
        ids = generate(
            model,
            prompt,
            args.max_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            eos_id=eos,
            generator=generator,
            use_cache=not args.no_cache,
        )
        if ids and ids[-1] == eos:
            ids = ids[:-1]
        text = args.prompt + tok.decode(ids)
        if i:
            sys.stdout.write("\n" + "-" * 40 + "\n")
        # Exactly what the model wrote, no newline of ours: piped output is the text itself. A terminal gets
        # one, so the shell prompt does not land on the last line.
        sys.stdout.write(text + ("\n" if sys.stdout.isatty() and not text.endswith("\n") else ""))
        sys.stdout.flush()


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a trained model and its tokenizer as a Hugging Face Llama checkpoint",
        description="Write OUT/config.json, generation_config.json, model.safetensors, tokenizer.json, tokenizer_config.json and "
        "special_tokens_map.json, loadable with transformers' AutoModelForCausalLM and AutoTokenizer (same logits, same ids). "
        "Models that Llama cannot express (post-norm, no norm, NoPE, SiLU feed-forward) are refused.",
        formatter_class=HelpFormatter,
    )
    add_model_source(p)
    add_tokenizer_option(p, "the tokenizer the model was trained with")
    p.add_argument("--format", choices=["hf", "gguf"], default="hf",
                   help="hf: a directory in transformers' LlamaForCausalLM layout with safetensors weights; gguf: one file for llama.cpp")  # fmt: skip
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output directory (hf) or file (gguf)")
    p.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        default="float32",
        help="dtype of the saved weights (gguf: float32 or float16)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace the export's files in an existing OUT (other files are kept)"
    )
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> None:
    from bpe_lm._io import check_new_directory

    source = args.run or args.checkpoint
    out = Path(args.output)
    if args.format == "gguf":
        if args.dtype == "bfloat16":
            raise UserError("--dtype bfloat16: GGUF export writes float32 or float16")
        check_output_file(out, args.force)
    else:
        check_new_directory(out, args.force)
    check_model_source(source)
    tok, tok_name = tokenizer_for_model(source, args.tokenizer)
    require_torch()
    from bpe_lm.checkpoint import load_model
    from bpe_lm.export import DTYPES, llama_incompatibility, to_gguf, to_hf

    model, state = load_model(source, "cpu")
    check_model_tokenizer(state, model.config.vocab_size, tok, tok_name, source)
    problem = llama_incompatibility(model.config)
    if problem:
        raise UserError(f"{source}: {problem}")
    if args.format == "gguf":
        to_gguf(model, tok, out, force=args.force, dtype=DTYPES[args.dtype])
        print(
            f"wrote {out}; run it with llama.cpp (llama-cli -m {out}) or llama_cpp.Llama({str(out)!r})", file=sys.stderr
        )
        return
    to_hf(model, tok, out, force=args.force, dtype=DTYPES[args.dtype])
    print(
        f"wrote {out}/ (config.json, model.safetensors, tokenizer files); load it with "
        f"AutoModelForCausalLM.from_pretrained({str(out)!r}) and AutoTokenizer.from_pretrained({str(out)!r})",
        file=sys.stderr,
    )


def add_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot learning curves of runs", formatter_class=HelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (with metrics.jsonl)")
    p.add_argument("-o", "--output", default="curves.png", help="output PNG")
    p.add_argument("--title", default=None)
    p.add_argument("--force", action="store_true", help="replace the output PNG if it exists")
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> None:
    from bpe_lm.plot import plot_runs
    from bpe_lm.run_files import METRICS_NAME

    check_output_file(args.output, args.force)
    for run in args.runs:
        if not (Path(run) / METRICS_NAME).is_file():
            raise UserError(f"{run}: no {METRICS_NAME} (is this a run directory from `bpe-lm train`?)")
    out = plot_runs(args.runs, args.output, title=args.title)
    print(f"wrote {out}", file=sys.stderr)
