"""The built-in default corpus: the docstrings of the Python standard library installed on this machine.

It exists on any machine with Python, needs no download, and is real English prose about programming
(about 1.5-2 MB, some 6,000 documents, depending on the Python version). The repository ships no
third-party text. Docstrings are read with `ast` from the source files: no module is imported, so nothing
runs. Documents are separated by <|endoftext|>, in a fixed order, so a given Python gives the same corpus.
"""

from __future__ import annotations

import ast
import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from bpe_lm.readers import END_OF_TEXT

DOCUMENT_JOINER = "\n<|endoftext|>\n"  # between documents, as in TinyStories and OpenWebText dumps
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__", "lib2to3", "turtledemo"}
MIN_CHARS = 40


def stdlib_docstrings(root: str | os.PathLike[str] | None = None) -> Iterator[str]:
    base = Path(root or sysconfig.get_paths()["stdlib"])
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            try:
                tree = ast.parse(Path(dirpath, name).read_text(encoding="utf-8"))
            except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node)
                    if doc and len(doc) >= MIN_CHARS and END_OF_TEXT not in doc:
                        yield doc


def write_default_corpus(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Writes the corpus to `path`; returns (documents, bytes)."""
    docs = list(stdlib_docstrings())
    if not docs:
        raise OSError(f"no Python standard library sources found under {sysconfig.get_paths()['stdlib']}")
    text = DOCUMENT_JOINER.join(docs) + "\n"
    Path(path).write_text(text, encoding="utf-8")
    return len(docs), len(text.encode("utf-8"))
