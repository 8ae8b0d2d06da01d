"""Text to training data in one call: read a corpus, split it into train and valid at a document boundary,
train a tokenizer on the train part, encode both parts to .npy. Used by `bpe-lm demo`, the experiment
scripts and the benchmarks, so they all prepare data the same way. No PyTorch needed."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from bpe_lm.corpus import DOCUMENT_JOINER
from bpe_lm.readers import END_OF_TEXT as EOT
from bpe_lm.tokenizer import Tokenizer, save_tokenizer_dir, train_bpe

# The text corpora of the shared data directory (besides gpt2/, the GPT-2 vocabulary and merges).
SHARED_TEXT_FILES = [
    "fairytales.txt.gz",
    "imdb.txt.gz",
    "multilingual/stories_ru.txt.gz",
    "multilingual/poems_zh.txt.gz",
    "multilingual/quotes_de.txt.gz",
    "multilingual/sentences_mixed_en.txt.gz",
    "multilingual/emoji_test.txt.gz",
]


def shared_data_dir() -> Path:
    """The project's shared real-text corpora: $BPE_LM_SHARED_DATA, else ../shared/data from the working
    directory (the repository root, where scripts and benchmarks run)."""
    return Path(os.environ.get("BPE_LM_SHARED_DATA") or Path.cwd().parent / "shared" / "data")


def read_text(
    path: str | os.PathLike[str], max_chars: int | None = None, text_field: str = "text", errors: str = "strict"
) -> str:
    """The text of a corpus file, at most `max_chars` characters: a text file as it is (plain, gzip or zstd);
    the records of JSON lines, parquet or Arrow joined by the document separator. `errors` as for
    `readers.iter_documents`."""
    from bpe_lm.readers import decoded_blocks, detect, iter_documents

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file")
    inp = detect(p)
    if inp.format == "text":
        blocks: list[str] = []
        size = 0
        for block in decoded_blocks(p, errors):
            blocks.append(block)
            size += len(block)
            if max_chars is not None and size >= max_chars:
                break
        text = "".join(blocks)[:max_chars]
    else:
        parts: list[str] = []
        size = 0
        for doc in iter_documents(inp, text_field, errors=errors):
            parts.append(doc)
            size += len(doc) + len(DOCUMENT_JOINER)
            if max_chars is not None and size >= max_chars:
                break
        text = DOCUMENT_JOINER.join(parts)[:max_chars]
    if not text.strip():
        raise ValueError(f"{p}: is empty")
    return text


def split_train_valid(text: str, valid_fraction: float = 0.05, separator: str = EOT) -> tuple[str, str]:
    """Train and valid parts, cut at the last document separator (else line break) before the valid part,
    so no document is in both."""
    target = int(len(text) * (1 - valid_fraction))
    cut = text.rfind(separator, 0, target)
    if cut <= 0:
        cut = text.rfind("\n", 0, target)
    if cut <= 0:
        cut = target
    return text[:cut], text[cut:]


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    tokenizer_dir: Path
    train: Path  # .npy of token ids
    valid: Path
    train_tokens: int
    valid_tokens: int
    tokenizer_seconds: float
    encode_seconds: float


def prepare_data(
    train_text: str,
    valid_text: str,
    out_dir: str | os.PathLike[str],
    vocab_size: int,
    special_tokens: tuple[str, ...] = (EOT,),
    *,
    num_threads: int | None = None,
) -> PreparedData:
    """Writes out_dir/{train,valid}.txt, a tokenizer trained on the train part (out_dir/tokenizer), and
    out_dir/{train,valid}.npy."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.txt").write_text(train_text, encoding="utf-8")
    (out / "valid.txt").write_text(valid_text, encoding="utf-8")
    start = time.perf_counter()
    vocab, merges = train_bpe(out / "train.txt", vocab_size, list(special_tokens), num_threads=num_threads)
    save_tokenizer_dir(out / "tokenizer", vocab, merges, list(special_tokens), force=True)
    tok = Tokenizer.load(out / "tokenizer")
    trained = time.perf_counter()
    counts = {
        split: tok.encode_file(out / f"{split}.txt", out / f"{split}.npy", num_threads=num_threads)
        for split in ("train", "valid")
    }
    return PreparedData(
        tok,
        out / "tokenizer",
        out / "train.npy",
        out / "valid.npy",
        counts["train"],
        counts["valid"],
        trained - start,
        time.perf_counter() - trained,
    )
