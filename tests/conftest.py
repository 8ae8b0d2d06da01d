from __future__ import annotations

import gzip
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # for reference_bpe

from bpe_lm.pipeline import shared_data_dir  # noqa: E402

SHARED_DATA = shared_data_dir()
SHARED_TEXT_FILES = [
    "fairytales.txt.gz",
    "imdb.txt.gz",
    "multilingual/stories_ru.txt.gz",
    "multilingual/poems_zh.txt.gz",
    "multilingual/quotes_de.txt.gz",
    "multilingual/sentences_mixed_en.txt.gz",
    "multilingual/emoji_test.txt.gz",
]

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"shared corpus not found at {SHARED_DATA} (set BPE_LM_SHARED_DATA)"
)


def shared_slice(name: str, chars: int, start_chars: int = 0) -> str:
    """The first `chars` characters (after skipping `start_chars`) of a shared corpus file."""
    with gzip.open(SHARED_DATA / name, "rt", encoding="utf-8") as f:
        if start_chars:
            f.read(start_chars)
        return f.read(chars)


STORY_WORDS = (
    "once upon a time there was little girl who lived in village near forest whenever she went out "
    "the wore red riding hood so everybody called her grandmother wolf said I'll you're can't don't "
    "42 1999 3.14 hello, world! what? yes... Tom's cat isn't here"
).split()


def generated_corpus(n_docs: int = 200, seed: int = 0) -> str:
    """Deterministic story-like text with document separators, for tests that must run without data."""
    import random

    rng = random.Random(seed)
    docs = []
    for _ in range(n_docs):
        lines = []
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(STORY_WORDS) for _ in range(rng.randint(3, 15))]
            words[0] = words[0].capitalize()
            lines.append(" ".join(words) + rng.choice([".", "!", "?", ""]))
        docs.append("\n".join(lines))
    return "\n<|endoftext|>\n".join(docs) + "\n"


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(generated_corpus(), encoding="utf-8")
    return path


def write_token_files(directory: Path, vocab_size: int) -> tuple[Path, Path]:
    """train.npy (16,000 ids) and valid.npy (2,000): a repeating pattern of 40 ids with 10% noise below
    `vocab_size`, learnable in a few steps."""
    import numpy as np

    rng = np.random.default_rng(0)
    noisy = rng.random(18000) < 0.1
    data = np.where(noisy, rng.integers(0, vocab_size, 18000), np.tile(np.arange(40), 450)).astype(np.uint16)
    np.save(directory / "train.npy", data[:16000])
    np.save(directory / "valid.npy", data[16000:])
    return directory / "train.npy", directory / "valid.npy"
