"""The package's layers, checked: cli -> training -> model, cli -> tokenizer -> Rust core; no import cycles;
no library module imports the CLI; the tokenizer side, the configuration, metrics and accounting import
without PyTorch, and so do `bpe-lm accounting` and `bpe-lm plot`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import bpe_lm

from conftest import NO_TORCH

PACKAGE = Path(bpe_lm.__file__).resolve().parent
TORCH_FREE = ["bpe_lm", "bpe_lm.config", "bpe_lm.metrics", "bpe_lm.accounting", "bpe_lm.tokenizer", "bpe_lm.formats", "bpe_lm.interop",
              "bpe_lm.progress", "bpe_lm.shards", "bpe_lm.stats", "bpe_lm.corpus", "bpe_lm.download", "bpe_lm.pipeline", "bpe_lm.units",
              "bpe_lm.plot", "bpe_lm.cli", "bpe_lm.readers", "bpe_lm.ingest", "bpe_lm.manifest", "bpe_lm.run_files", "bpe_lm.sources", "bpe_lm.token_files"]  # fmt: skip


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in the file, also inside functions)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and node.module
                and node.module.startswith("bpe_lm")
            ):
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("bpe_lm")]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not (name.startswith(target + ".")):
                    graph[name].add(target)
    return graph


def test_no_library_module_imports_the_cli():
    graph = import_graph()
    offenders = [
        m
        for m, deps in graph.items()
        if not m.startswith("bpe_lm.cli") and m != "bpe_lm.__main__" and any(d.startswith("bpe_lm.cli") for d in deps)
    ]
    assert offenders == []


def test_no_import_cycles():
    graph = import_graph()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            if nxt in path:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif len(path) < 20:
                visit(nxt, path + [nxt])

    for start in graph:
        visit(start, [start])
    assert cycles == []


def test_the_model_knows_no_text_and_the_tokenizer_no_model():
    graph = import_graph()
    text_side = {"bpe_lm.tokenizer", "bpe_lm.formats", "bpe_lm.interop", "bpe_lm.shards", "bpe_lm.progress",
                 "bpe_lm.readers", "bpe_lm.ingest", "bpe_lm.manifest", "bpe_lm.ray_engine"}  # fmt: skip
    model_side = {
        "bpe_lm.model",
        "bpe_lm.float8",
        "bpe_lm.baseline",
        "bpe_lm.optim",
        "bpe_lm.data",
        "bpe_lm.train",
        "bpe_lm.runtime",
        "bpe_lm.evaluation",
    }
    assert not (graph["bpe_lm.model"] & text_side) and not (graph["bpe_lm.float8"] & text_side)
    for m in text_side:
        assert not (graph[m] & model_side), m


@pytest.mark.parametrize("module", TORCH_FREE)
def test_imports_without_torch(module):
    proc = subprocess.run([sys.executable, "-c", NO_TORCH + f"import {module}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_training_a_tokenizer_and_encoding_files_never_import_numpy(tmp_path):
    # numpy's import costs resident memory and, with OpenBLAS, a thread that spins for about 0.1 s of
    # CPU beside the encoders: the tokenizer side imports it only where it makes arrays.
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat <|endoftext|> a dog ran " * 200, encoding="utf-8")
    code = (
        "import sys; sys.modules['numpy'] = None; import bpe_lm; from bpe_lm.cli import main; "
        f"assert main(['train-tokenizer', {str(corpus)!r}, '--vocab', '300', '-o', {str(tmp_path / 'tok')!r}, "
        "'--quiet']) == 0; "
        f"tok = bpe_lm.Tokenizer.load({str(tmp_path / 'tok')!r}); "
        "assert tok.decode(tok.encode('the cat sat')) == 'the cat sat'; "
        f"assert main(['count-pretokens', {str(corpus)!r}, '-o', {str(tmp_path / 'c.bin')!r}, '--quiet']) == 0; "
        f"assert main(['encode', {str(corpus)!r}, '--tokenizer', {str(tmp_path / 'tok')!r}, "
        f"'-o', {str(tmp_path / 'ids.npy')!r}, '--quiet']) == 0; "
        f"assert main(['encode', {str(corpus)!r}, '--tokenizer', {str(tmp_path / 'tok')!r}, "
        f"'-o', {str(tmp_path / 'each')!r} + '/', '--dtype', 'uint32', '--quiet']) == 0"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import numpy as np

    ids = np.load(tmp_path / "ids.npy")
    assert ids.dtype == np.uint16 and len(ids) > 0
    assert np.array_equal(np.load(next((tmp_path / "each").glob("*.npy"))), ids.astype(np.uint32))


def test_accounting_and_plot_commands_run_without_torch(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 0, "tokens": 0, "time": 0.0, "valid_loss": 5.0}\n{"step": 10, "tokens": 100, "time": 1.0, "train_loss": 4.0}\n'
                                       '{"step": 10, "tokens": 100, "time": 1.0, "valid_loss": 4.5}\n')  # fmt: skip
    for argv in (["accounting", "--preset", "gpt2-small"], ["plot", str(run), "-o", str(tmp_path / "c.png")]):
        code = NO_TORCH + f"from bpe_lm.cli import main; sys.exit(main({argv!r}))"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "c.png").stat().st_size > 1000
    # A command that needs torch checks its files first, then says what to install.
    (run / "checkpoint.pt").write_bytes(b"PK")
    import numpy as np

    np.save(tmp_path / "valid.npy", np.zeros(10, dtype=np.uint16))
    for data, expected in (
        (tmp_path / "absent.npy", "token file not found"),
        (tmp_path / "valid.npy", "needs PyTorch"),
    ):
        argv = ["eval", "--run", str(run), "--data", str(data)]
        proc = subprocess.run([sys.executable, "-c", NO_TORCH + f"from bpe_lm.cli import main; sys.exit(main({argv!r}))"],
                              capture_output=True, text=True)  # fmt: skip
        assert proc.returncode == 1 and expected in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
