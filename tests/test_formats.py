"""Real corpora in: JSON lines (plain, gzip, zstd), parquet, Arrow files and `datasets` directories, many
inputs and globs, one document per record, manifests that let a rerun skip finished inputs, a tokenizer
that pickles into worker processes, and the Ray engine."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

import bpe_lm
from bpe_lm import _core, _io, ingest
from bpe_lm.errors import RecordError, TextEncodingError
from bpe_lm.readers import (
    InputError,
    detect,
    expand_inputs,
    iter_documents,
    plan_units,
    prefetch,
    resolve,
    shard_units,
)
from bpe_lm.tokenizer import Tokenizer, default_num_threads

import reference_bpe as ref
from conftest import SHARED_DATA, generated_corpus, shared_slice

EOT = "<|endoftext|>"
GPT2_DIR = SHARED_DATA / "gpt2"


def bpe_lm_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bpe_lm", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=600
    )


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return Tokenizer.from_files(GPT2_DIR / "vocab.json", GPT2_DIR / "merges.txt", [EOT])


@pytest.fixture(scope="module")
def documents() -> list[str]:
    """About 1 MB of real reviews as documents, with the cases that matter: a literal special-token string
    inside a record, non-ASCII text, an empty record (skipped) and one of only white space."""
    text = shared_slice("imdb.txt.gz", 1_000_000)
    docs = [d.strip("\n") for d in text.split(EOT) if d.strip()]
    docs[3:3] = [f"a paper about LMs: documents end with {EOT} in GPT-2's data", "", "ünïcödé 中文 🙂\r\n", "   \n"]
    return docs


def reference_ids(tok: Tokenizer, docs: list[str]) -> np.ndarray:
    """The definition: per non-empty record, encode_ordinary(text) + [end of text]."""
    out: list[int] = []
    for d in docs:
        if d:
            out += tok.encode_ordinary(d) + [tok.special_token_ids[EOT]]
    return np.array(out, dtype=np.uint16)


def pzstd(parts: list[bytes]) -> bytes:
    """`parts` compressed as pzstd does: a zstd frame each, after a skippable frame that holds its size."""
    out = b""
    for part in parts:
        frame = zstandard.ZstdCompressor().compress(part)
        out += (0x184D2A50).to_bytes(4, "little") + (4).to_bytes(4, "little") + len(frame).to_bytes(4, "little")
        out += frame
    return out


def write_formats(directory: Path, docs: list[str]) -> dict[str, Path]:
    """The same records as every format we read."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"id": i, "text": d, "meta": {"n": [i]}}) + "\n" for i, d in enumerate(docs))
    paths = {
        "jsonl": directory / "c.jsonl",
        "jsonl.gz": directory / "c.jsonl.gz",
        "jsonl.zst": directory / "c.jsonl.zst",
        "parquet": directory / "c.parquet",
        "arrow": directory / "c.arrow",
        "datasets": directory / "saved",
    }
    paths["jsonl"].write_text(lines, encoding="utf-8")
    # Two gzip members, with zero bytes after each (the padding to a block's end that some writers leave,
    # which GNU gzip and Python's gzip pass over), cut inside a line.
    half = len(lines) // 2
    b = lines.encode("utf-8")
    paths["jsonl.gz"].write_bytes(gzip.compress(b[:half]) + bytes(37) + gzip.compress(b[half:]) + bytes(512))
    # Two zstd frames, each after a skippable frame, as pzstd writes them: readers must take a file that
    # starts with a skippable frame for zstd, and go on after the first frame.
    cut = lines.index("\n", half) + 1
    paths["jsonl.zst"].write_bytes(pzstd([lines[:cut].encode(), lines[cut:].encode()]))
    table = pa.table({"id": list(range(len(docs))), "text": docs})
    pq.write_table(table, paths["parquet"], row_group_size=97)  # many row groups
    with pa.ipc.new_stream(paths["arrow"], table.schema) as w:
        for batch in table.to_batches(max_chunksize=250):
            w.write_batch(batch)
    datasets = pytest.importorskip("datasets", reason="datasets not installed (pip install '.[test]')")
    datasets.Dataset.from_dict({"text": docs, "id": list(range(len(docs)))}).save_to_disk(
        str(paths["datasets"]), max_shard_size="200KB"
    )
    return paths


@pytest.fixture(scope="module")
def formats(tmp_path_factory, documents) -> dict[str, Path]:
    return write_formats(tmp_path_factory.mktemp("formats"), documents)


# ---------------------------------------------------------------------------------------------------- detection


def test_formats_are_told_by_content_and_name(formats, tmp_path):
    assert {k: detect(p).format for k, p in formats.items()} == {
        "jsonl": "jsonl",
        "jsonl.gz": "jsonl",
        "jsonl.zst": "jsonl",
        "parquet": "parquet",
        "arrow": "arrow",
        "datasets": "arrow",
    }
    assert detect(formats["jsonl.zst"]).compression == "zstd"
    assert len(detect(formats["datasets"]).files) > 1
    misnamed = tmp_path / "shard.bin"
    misnamed.write_bytes(formats["parquet"].read_bytes())
    assert detect(misnamed).format == "parquet"
    text_zst = tmp_path / "c.txt.zst"
    text_zst.write_bytes(zstandard.ZstdCompressor().compress(b"hello"))
    assert (detect(text_zst).format, detect(text_zst).compression) == ("text", "zstd")


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("c.txt.bz2", b"BZh91AY&SY", "is a bzip2 file, which bpe-lm does not read"),
        ("c.parquet", b"not parquet at all", "lacks the PAR1 magic"),
        ("c.jsonl.zst", b'{"text": "a"}\n', "named .zst but not zstd-compressed"),
        ("c.json", b'[{"text": "a"}]', "holds a JSON array"),
        ("bom.json", b'\xef\xbb\xbf [{"text": "a"}]', "holds a JSON array"),
        ("ids.npy", b"\x93NUMPY\x01\x00", "a numpy .npy file"),
        # Windows PowerShell's `>` writes UTF-16: never ids of its bytes as if they were UTF-8.
        ("ps.txt", "hello world\n".encode("utf-16"), "is UTF-16LE text .* bpe-lm reads UTF-8"),
        ("be.jsonl", '{"text": "a"}'.encode("utf-16-be").join([b"\xfe\xff", b""]), "is UTF-16BE text"),
        ("wide.jsonl", '{"text": "a"}'.encode("utf-32"), "is UTF-32LE text"),
        ("wide.txt", "no mark, four bytes a letter".encode("utf-32-be"), "without a byte-order mark"),
        (
            "nobom.txt",
            "plain words, no byte-order mark".encode("utf-16-le"),
            "UTF-16 or UTF-32 text without a byte-order mark",
        ),
    ],
)
def test_unknown_or_misnamed_formats_are_named(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=message):
        detect(path)


def test_globs_expand_sorted_in_the_order_given(tmp_path):
    for name in ["b.jsonl", "a.jsonl", "c.txt"]:
        (tmp_path / name).write_text("x")
    got = expand_inputs([tmp_path / "c.txt", str(tmp_path / "*.jsonl")])
    assert [p.name for p in got] == ["c.txt", "a.jsonl", "b.jsonl"]
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.parquet")])


# ---------------------------------------------------------------------------------------------------- encoding


def test_every_format_encodes_to_the_per_record_reference(gpt2, formats, documents, tmp_path):
    want = reference_ids(gpt2, documents)
    for name, path in formats.items():
        out = tmp_path / f"{name}.npy"
        stats = gpt2.encode_files(path, out)
        got = np.load(out)
        assert got.dtype == np.uint16
        assert np.array_equal(got, want), name
        assert (stats.documents, stats.skipped, stats.tokens) == (len(documents) - 1, 1, len(want)), name
        assert stats.text_bytes == sum(len(d.encode()) for d in documents)


@pytest.mark.parametrize(
    "how",
    [{"compression": codec} for codec in ("none", "gzip", "zstd", "lz4", "brotli")]
    + [
        {"data_page_version": "2.0", "compression": "zstd"},
        {"use_dictionary": False, "column_encoding": {"text": "DELTA_BYTE_ARRAY"}},
        {"use_dictionary": False, "column_encoding": {"text": "DELTA_LENGTH_BYTE_ARRAY"}},
        {"data_page_size": 2048, "write_page_checksum": True, "write_page_index": True},
        {"dictionary_pagesize_limit": 2048, "data_page_size": 2048},  # dictionary pages, then plain ones
        {"large_string": True},
    ],
    ids=lambda how: ",".join(f"{k}={v}" for k, v in how.items()),
)
def test_parquet_from_any_writer_setting_encodes_to_the_reference(gpt2, documents, tmp_path, how):
    """Hub and pipeline shards come from many writers (pyarrow, Spark, polars, DuckDB): every codec and
    page layout of the format reads to the same ids (snappy, the default, is in `formats`)."""
    how = dict(how)
    kind = pa.large_string() if how.pop("large_string", False) else pa.string()
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": pa.array(documents, kind)}), path, row_group_size=300, **how)
    gpt2.encode_files(path, tmp_path / "out.npy")
    assert np.array_equal(np.load(tmp_path / "out.npy"), reference_ids(gpt2, documents))


def test_csv_and_tsv_files_read_one_document_per_row(gpt2, documents, tmp_path):
    """Spreadsheet and Kaggle corpora: a header row, the text column among others, values quoted with commas,
    quotes and newlines inside; plain and compressed; the same ids as the per-record reference, for
    encoding, counting and documents as strings."""
    import csv
    import io

    def table(delimiter: str) -> bytes:
        out = io.StringIO()
        w = csv.writer(out, delimiter=delimiter, lineterminator="\n")
        w.writerow(["id", "text", "label"])
        for i, d in enumerate(documents):
            w.writerow([i, d, "pos" if i % 2 else "neg"])
        return out.getvalue().encode("utf-8")

    files = {
        "c.csv": table(","),
        "c.tsv": table("\t"),
        "c.csv.gz": gzip.compress(table(",")),
        "c.csv.zst": zstandard.ZstdCompressor().compress(table(",")),
    }
    want = reference_ids(gpt2, documents)
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert detect(path).format == "csv", name
        stats = gpt2.encode_files(path, tmp_path / "out.npy")
        assert np.array_equal(np.load(tmp_path / "out.npy"), want), name
        assert (stats.documents, stats.skipped) == (len(documents) - 1, 1), name
        assert list(iter_documents(detect(path))) == [d for d in documents if d], name
    # A value longer than the reader's block (pyarrow refuses one that straddles two) is read on, from where it
    # stood, with larger blocks: every document, in order.
    long_docs = ["short one", "a long value, " * 250_000, "after it", "x" * 5_000_000, "last"]
    (tmp_path / "long.csv").write_text("text\n" + "".join(f'"{d}"\n' for d in long_docs), encoding="utf-8")
    gpt2.encode_files(tmp_path / "long.csv", tmp_path / "out.npy")
    assert np.array_equal(np.load(tmp_path / "out.npy"), reference_ids(gpt2, long_docs))
    # Training counts each row on its own, as for the other record formats.
    assert bpe_lm.train_bpe(tmp_path / "c.csv", 300, [EOT]) == bpe_lm.train_bpe(tmp_path / "c.tsv", 300, [EOT])
    # A missing column is named with the columns there are, before any work.
    r = bpe_lm_cli("encode", tmp_path / "c.csv", "-o", tmp_path / "x.npy", "--tokenizer",
                   _tokenizer_dir(gpt2, tmp_path), "--text-field", "body", "--quiet")  # fmt: skip
    assert r.returncode == 1 and "c.csv: has no column 'body' (its columns: id, text, label)" in r.stderr, r.stderr
    # A value that is not UTF-8: its row named, or read as U+FFFD with errors="replace".
    (tmp_path / "bad.csv").write_bytes(b"text\nfine\ncaf\xe9\n")
    with pytest.raises(ValueError, match="bad.csv: row 1: is not valid UTF-8"):
        gpt2.encode_files(tmp_path / "bad.csv", tmp_path / "x.npy")
    gpt2.encode_files(tmp_path / "bad.csv", tmp_path / "x.npy", errors="replace")
    assert np.array_equal(np.load(tmp_path / "x.npy"), reference_ids(gpt2, ["fine", "caf\ufffd"]))


def test_binary_text_columns_read_as_text_each_value_checked(gpt2, documents, tmp_path):
    """Hive, Impala and older Spark wrote strings as plain binary: such a column reads as the same text, in
    parquet and in Arrow; a value that is not UTF-8 is named by its row."""
    table = pa.table({"text": pa.array([d.encode() for d in documents], pa.binary())})
    pq.write_table(table, tmp_path / "b.parquet", row_group_size=300)
    with pa.ipc.new_file(tmp_path / "b.arrow", table.schema) as w:
        w.write_table(table)
    want = reference_ids(gpt2, documents)
    for name in ("b.parquet", "b.arrow"):
        gpt2.encode_files(tmp_path / name, tmp_path / "out.npy")
        assert np.array_equal(np.load(tmp_path / "out.npy"), want), name
        # And as strings, for statistics and the demo.
        assert list(iter_documents(detect(tmp_path / name))) == [d for d in documents if d], name
    bad = [d.encode() for d in documents[:10]]
    bad[6] = b"caf\xe9 au lait"
    pq.write_table(pa.table({"text": pa.array(bad, pa.binary())}), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="bad.parquet: row 6: is not valid UTF-8"):
        gpt2.encode_files(tmp_path / "bad.parquet", tmp_path / "out.npy")


def test_errors_replace_reads_records_that_are_no_unicode(gpt2, tmp_path):
    """Scraped corpora hold the odd byte that is not UTF-8, and Python's json writes half a surrogate pair
    as an escape: strict names the line and the way out, `--errors replace` reads them as U+FFFD, in JSON
    lines (plain and compressed), parquet and Arrow, for encoding and for training alike."""
    lines = b'{"text": "fine"}\n{"text": "caf\xe9 \\ud800 ok \\ud83d\\ude00"}\n'
    (tmp_path / "c.jsonl").write_bytes(lines)
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    column = pa.array([b"fine", b"caf\xe9 \xed\xa0\x80 ok \xf0\x9f\x98\x80"], pa.binary())
    pq.write_table(pa.table({"text": column}), tmp_path / "c.parquet")
    with pa.ipc.new_file(tmp_path / "c.arrow", pa.schema([("text", pa.binary())])) as w:
        w.write_table(pa.table({"text": column}))
    want = {
        "jsonl": reference_ids(gpt2, ["fine", "caf\ufffd \ufffd ok \U0001f600"]),
        # The bytes of an encoded surrogate are three bytes that are not UTF-8: three U+FFFD.
        "binary": reference_ids(gpt2, ["fine", "caf\ufffd \ufffd\ufffd\ufffd ok \U0001f600"]),
    }
    tok_dir = _tokenizer_dir(gpt2, tmp_path)
    for name, kind, message in [
        ("c.jsonl", "jsonl", "c.jsonl: line 2: is not valid UTF-8 (at byte 13 of the line); --errors replace"),
        ("c.jsonl.zst", "jsonl", "line 2: is not valid UTF-8"),
        ("c.parquet", "binary", "c.parquet: row 1: is not valid UTF-8 (at byte 3 of the text); --errors replace"),
        ("c.arrow", "binary", "c.arrow: row 1: is not valid UTF-8"),
    ]:
        out = tmp_path / "out.npy"
        r = bpe_lm_cli("encode", tmp_path / name, "-o", out, "--tokenizer", tok_dir, "--quiet")
        assert r.returncode == 1 and message in r.stderr and not out.exists(), r.stderr
        r = bpe_lm_cli("encode", tmp_path / name, "-o", out, "--tokenizer", tok_dir, "--quiet", "--errors", "replace")
        assert r.returncode == 0, r.stderr
        assert np.array_equal(np.load(out), want[kind]), name
        out.unlink()
        r = bpe_lm_cli("train-tokenizer", tmp_path / name, "-o", tmp_path / "t", "--vocab", "260", "--quiet",
                       "--errors", "replace", "--force")  # fmt: skip
        assert r.returncode == 0, r.stderr
    # Half a pair alone (the bytes are UTF-8): named as such.
    (tmp_path / "s.jsonl").write_bytes(b'{"text": "a \\udc00"}\n')
    r = bpe_lm_cli("encode", tmp_path / "s.jsonl", "-o", tmp_path / "s.npy", "--tokenizer", tok_dir, "--quiet")
    assert r.returncode == 1 and "line 1: holds \\udc00 (at byte 12), half a UTF-16 surrogate pair" in r.stderr
    # Documents as strings (statistics, the demo) name them the same way.
    with pytest.raises(RecordError, match="c.jsonl: line 2: is not valid UTF-8 .at byte 13 of the line.") as bad:
        list(iter_documents(detect(tmp_path / "c.jsonl")))
    assert (bad.value.path, bad.value.position) == (str(tmp_path / "c.jsonl"), "line 2")
    with pytest.raises(RecordError, match="s.jsonl: line 1: field 'text' holds half a UTF-16 surrogate pair"):
        list(iter_documents(detect(tmp_path / "s.jsonl")))
    with pytest.raises(RecordError, match="c.arrow: row 1: is not valid UTF-8") as bad:
        list(iter_documents(detect(tmp_path / "c.arrow")))
    assert bad.value.position == "row 1"
    # ... and with errors="replace" read what the encoder reads.
    texts = {
        "jsonl": ["fine", "caf\ufffd \ufffd ok \U0001f600"],
        "binary": ["fine", "caf\ufffd \ufffd\ufffd\ufffd ok \U0001f600"],
    }
    for name, kind in [("c.jsonl", "jsonl"), ("c.jsonl.zst", "jsonl"), ("c.parquet", "binary"), ("c.arrow", "binary")]:
        assert list(iter_documents(detect(tmp_path / name), errors="replace")) == texts[kind], name
    assert list(iter_documents(detect(tmp_path / "s.jsonl"), errors="replace")) == ["a \ufffd"]


def test_text_read_as_strings_names_the_byte_that_is_not_utf8_or_replaces_it(gpt2, tmp_path):
    """tokenizer-stats and the demo read text files in Python: a byte that is not UTF-8 is named with its
    file and its offset in the text (also past the first block, and behind a character cut by the block
    edge, and in a compressed file), as the encoder names it, or read as U+FFFD with --errors replace."""
    from bpe_lm.pipeline import read_text

    head = "a" * ((1 << 20) - 1) + "é"  # the é's two bytes straddle the first 1 MB block's edge
    data = head.encode() + b" ok \xff tail" + EOT.encode() + b"second"
    offset = len(head.encode()) + 4
    (tmp_path / "c.txt").write_bytes(data)
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(data))
    tok_dir = _tokenizer_dir(gpt2, tmp_path)
    for name in ("c.txt", "c.txt.gz"):
        path = tmp_path / name
        message = f"{name}: invalid UTF-8 at byte offset {offset}; --errors replace reads it with U+FFFD"
        with pytest.raises(TextEncodingError, match=re.escape(message)) as bad:
            list(iter_documents(detect(path)))
        assert (bad.value.path, bad.value.offset) == (str(path), offset)
        with pytest.raises(TextEncodingError, match=re.escape(message)):
            read_text(path)
        assert list(iter_documents(detect(path), errors="replace")) == [head + " ok \ufffd tail", "second"]
        assert read_text(path, errors="replace") == head + " ok \ufffd tail" + EOT + "second"
        r = bpe_lm_cli("encode", path, "-o", tmp_path / "o.npy", "--tokenizer", tok_dir, "--quiet")
        assert r.returncode == 1 and f"{name}: invalid UTF-8 at byte offset {offset}" in r.stderr, r.stderr
    r = bpe_lm_cli("tokenizer-stats", tmp_path / "c.txt", "--tokenizer", tok_dir, "--docs", "5", "--threads", "1")
    assert r.returncode == 1 and message.replace(".gz", "") in r.stderr, r.stderr
    r = bpe_lm_cli("tokenizer-stats", tmp_path / "c.txt", "--tokenizer", tok_dir, "--docs", "5", "--threads", "1",
                   "--errors", "replace", "--json")  # fmt: skip
    assert r.returncode == 0 and json.loads(r.stdout)["pairs"][0]["corpus"].endswith("c.txt"), r.stderr


def test_a_byte_order_mark_before_the_first_json_line_is_no_part_of_it(gpt2, tmp_path):
    lines = b'{"text": "first"}\r\n{"text": "second"}\n'
    for name, data in [
        ("bom.jsonl", b"\xef\xbb\xbf" + lines),
        ("bom.jsonl.gz", gzip.compress(b"\xef\xbb\xbf" + lines)),
        ("bom.jsonl.zst", zstandard.ZstdCompressor().compress(b"\xef\xbb\xbf" + lines)),
    ]:
        (tmp_path / name).write_bytes(data)
        gpt2.encode_files(tmp_path / name, tmp_path / "out.npy")
        assert np.array_equal(np.load(tmp_path / "out.npy"), reference_ids(gpt2, ["first", "second"])), name
        assert list(iter_documents(detect(tmp_path / name))) == ["first", "second"], name
    # Only at the start of the file: one later in a line is a line that is not JSON.
    (tmp_path / "late.jsonl").write_bytes(lines + b"\xef\xbb\xbf" + lines)
    with pytest.raises(ValueError, match="line 3: is not valid JSON"):
        gpt2.encode_files(tmp_path / "late.jsonl", tmp_path / "out.npy")


def test_small_inputs_encode_on_one_thread_to_the_same_ids(gpt2, documents, tmp_path):
    # Inputs of at most 256 KB skip the pipeline (read and encoded on one thread, no helper thread); the
    # fixture's ~1 MB inputs take it. Both must give the per-record reference.
    few = documents[:60]
    small = write_formats(tmp_path / "small", few)
    for name, path in small.items():
        if path.is_file():
            assert path.stat().st_size <= 256 << 10, name
        out = tmp_path / f"{name}.npy"
        stats = gpt2.encode_files(path, out, num_threads=2)
        assert np.array_equal(np.load(out), reference_ids(gpt2, few)), name
        assert stats.documents == sum(1 for d in few if d), name
    text = tmp_path / "small.txt"
    text.write_text(EOT.join(few), encoding="utf-8")
    gpt2.encode_files(text, tmp_path / "text.npy", num_threads=2)
    assert np.array_equal(np.load(tmp_path / "text.npy"), gpt2.encode(EOT.join(few)))


def test_runs_of_small_text_files_encode_and_count_as_file_by_file(gpt2, documents, tmp_path):
    # Consecutive small text files go to the core in one call (read and encoded side by side); a larger
    # file, a record file or a compressed file (however small: it may inflate to any size) in between
    # cuts the run. Ids, counts and stats must be those of the files one by one.
    d = tmp_path / "many"
    d.mkdir()
    files = []
    for i, doc in enumerate(documents[:40]):
        path = d / f"{i:03d}.txt"
        path.write_text(doc + (EOT + "tail" if i % 7 == 0 else ""), encoding="utf-8")
        files.append(path)
    files[5].write_text("", encoding="utf-8")  # an empty file: no ids
    files[9] = d / "009.txt.gz"
    files[9].write_bytes(gzip.compress(documents[9].encode()))
    files[20] = d / "020.txt"
    files[20].write_text(EOT.join(documents[:300]), encoding="utf-8")  # over 256 KB: a unit of its own
    assert files[20].stat().st_size > _core.SMALL_INPUT_BYTES
    files[30] = d / "030.jsonl"
    files[30].write_text(json.dumps({"text": documents[30]}) + "\n", encoding="utf-8")
    runs = [len(r) for _, r in ingest._in_runs(ingest.whole_units(resolve(files)))]
    assert runs == [9, 1, 10, 1, 9, 1, 9], runs  # the gzip, large and JSON lines files stand alone
    out = tmp_path / "many.npy"
    stats = gpt2.encode_files(files, out, num_threads=2)
    assert np.array_equal(np.load(out), _file_by_file(gpt2, files, tmp_path))
    assert stats.tokens == len(np.load(out)) and stats.inputs == [str(f) for f in files]
    trained = bpe_lm.train_bpe(files, 300, [EOT], num_threads=2)
    assert trained == ref.train_documents([t for f in files for t in _documents_of(f)], 300, [EOT])
    # A bad file inside a run is named, and nothing is written.
    files[3].write_bytes(b"good text \xff bad")
    (tmp_path / "bad.npy").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="003.txt"):
        gpt2.encode_files(files, tmp_path / "bad.npy", num_threads=2)
    assert not (tmp_path / "bad.npy").exists()
    gpt2.encode_files(files, tmp_path / "lossy.npy", num_threads=2, errors="replace")
    assert len(np.load(tmp_path / "lossy.npy")) > 0


def test_runs_of_shards_and_of_text_files_encode_and_count_as_file_by_file(gpt2, documents, tmp_path):
    # Consecutive local JSON-lines and parquet files go to the core in one call, one pipeline through them
    # all (a shard of one chunk no longer runs on one thread); a text file cuts the run. Ids, per-input
    # stats and merges are those of the files one by one; a damaged shard inside a run is named and
    # nothing is written.
    d = tmp_path / "shards"
    d.mkdir()
    files, records = [], []
    for i in range(12):
        part = documents[i * 20 : (i + 1) * 20]
        lines = "".join(json.dumps({"text": t}) + "\n" for t in part).encode()
        path = d / (f"{i:02d}" + (".parquet", ".jsonl.gz", ".jsonl")[i % 3])
        if i % 3 == 0:
            pq.write_table(pa.table({"text": part}), path, row_group_size=7)
        else:
            path.write_bytes(gzip.compress(lines) if i % 3 == 1 else lines)
        files.append(path)
        records.append(part)
    # Text files between (compressed, and larger than small): a run of their own, read as one stream.
    text, gz = d / "between.txt", d / "between.txt.gz"
    text.write_text(EOT.join(documents[300:320] * 20), encoding="utf-8")
    gz.write_bytes(gzip.compress(EOT.join(documents[320:340]).encode()))
    assert text.stat().st_size > _core.SMALL_INPUT_BYTES
    files[6:6] = [gz, text]
    runs = [(kind, len(r)) for kind, r in ingest._in_runs(ingest.whole_units(resolve(files)))]
    assert runs == [("records", 6), ("text", 2), ("records", 6)], runs
    out = tmp_path / "all.npy"
    stats = gpt2.encode_files(files, out, num_threads=2)
    assert np.array_equal(np.load(out), _file_by_file(gpt2, files, tmp_path))
    shard_docs = [t for part in records for t in part if t]
    assert stats.documents == len(shard_docs) and stats.inputs == [str(f) for f in files]
    assert stats.tokens == len(np.load(out))
    trained = bpe_lm.train_bpe(files, 300, [EOT], num_threads=2)
    text_docs = gzip.decompress(gz.read_bytes()).decode().split(EOT) + text.read_text(encoding="utf-8").split(EOT)
    assert trained == ref.train_documents([t for part in records[:6] for t in part] + text_docs
                                          + [t for part in records[6:] for t in part], 300, [EOT])  # fmt: skip
    # A cut gzip file inside a run, of either kind: named, nothing written.
    for cut in (files[4], gz):
        good = cut.read_bytes()
        cut.write_bytes(good[:-30])
        with pytest.raises(
            OSError, match=rf"{cut.name}: the gzip stream ends inside a member \(is the file cut short\?\)"
        ):
            gpt2.encode_files(files, tmp_path / "bad.npy", num_threads=2)
        assert not (tmp_path / "bad.npy").exists()
        cut.write_bytes(good)


def test_compressed_shards_read_side_by_side_give_the_ids_of_one_after_another(gpt2, documents, tmp_path):
    # Several gzip or zstd inputs are read side by side, each by one thread at a time (a large input, or a
    # run of small ones, is a stream): the ids, the stats and the outputs per input must be those of the
    # inputs one by one, no spill file may be left, and of two damaged shards the first is named, always.
    d = tmp_path / "shards"
    d.mkdir()
    sixth, quarter = -(-len(documents) // 6), -(-len(documents) // 4)
    records, texts = [], []
    for i in range(6):  # stored gzip: each over half the size of a run of small inputs, so a stream each
        part = documents[i * sixth : (i + 1) * sixth]
        records.append(d / f"{i}.jsonl.gz")
        records[-1].write_bytes(gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in part).encode(), 0))
    for i in range(4):  # small zstd text files: two streams of two files
        texts.append(d / f"{i}.txt.zst")
        part = EOT.join(documents[i * quarter : (i + 1) * quarter]).encode()
        texts[-1].write_bytes(zstandard.ZstdCompressor(level=1).compress(part))
    assert min(p.stat().st_size for p in records) > _core.SMALL_INPUT_BYTES // 2
    assert max(p.stat().st_size for p in texts) < _core.SMALL_INPUT_BYTES // 2
    for files in (records, texts, [*records[:3], *texts, *records[3:]]):
        want = _file_by_file(gpt2, files, tmp_path)
        alone = [gpt2.encode_files(f, tmp_path / "one.npy", num_threads=1) for f in files]
        for threads in (2, 3):
            stats = gpt2.encode_files(files, tmp_path / "all.npy", num_threads=threads)
            assert np.array_equal(np.load(tmp_path / "all.npy"), want)
            assert stats.tokens == len(want) and stats.documents == sum(a.documents for a in alone)
            outs = [tmp_path / "each" / f"{i}.npy" for i in range(len(files))]
            each = gpt2.encode_units_each(ingest.whole_units(resolve(files)), outs, num_threads=threads)
            assert [(s.tokens, s.documents, s.text_bytes) for s in each] == [
                (a.tokens, a.documents, a.text_bytes) for a in alone
            ]
            assert np.array_equal(np.concatenate([np.load(o) for o in outs]), want)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.npy", "each", "one.npy", "shards"]
    good = [p.read_bytes() for p in records]
    records[1].write_bytes(gzip.compress(b'{"text": "fine"}\n{"text": 5}\n', 0))
    records[4].write_bytes(good[4][: len(good[4]) // 2])
    for _ in range(3):
        with pytest.raises(RecordError, match=r'/1\.jsonl\.gz: line 2: field "text" is a number'):
            gpt2.encode_files(records, tmp_path / "bad.npy", num_threads=2)
        assert not (tmp_path / "bad.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.npy", "each", "one.npy", "shards"]


def test_many_outputs_into_one_directory_sweep_it_once(gpt2, tmp_path, monkeypatch):
    # Stale temporaries of the outputs are removed in one listing of their directory, not one listing per
    # output (2,000 outputs into one directory spent 5.5 s listing it); a sweep inside another of the same
    # directory leaves the outer one in force.
    texts = [tmp_path / f"in{i}.txt" for i in range(30)]
    for i, t in enumerate(texts):
        t.write_text(f"text number {i} " * 20, encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = out / f".3.npy.{gone.pid}.x1y2.tmp"
    stale.write_bytes(b"left by a killed run")
    listed: list[str] = []
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda p=".": listed.append(os.path.abspath(p)) or real_listdir(p))
    outputs = [out / f"{i}.npy" for i in range(30)]
    with pytest.warns(UserWarning, match=r"3\.npy left by an interrupted run"):
        with _io.sweeping(out, [o.name for o in outputs[:10]]):
            gpt2.encode_units_each(ingest.whole_units(resolve(texts[:10])), outputs[:10], num_threads=2)
            assert os.path.abspath(out) in _io._SWEPT
        gpt2.encode_units_each(ingest.whole_units(resolve(texts[10:])), outputs[10:], num_threads=2)
    assert listed.count(os.path.abspath(out)) == 2 and not stale.exists()
    for t, o in zip(texts, outputs):
        assert np.load(o).tolist() == gpt2.encode(t.read_text(encoding="utf-8"))


def _file_by_file(tok: Tokenizer, files: list[Path], tmp_path: Path) -> np.ndarray:
    """The ids of `files` encoded one call each, concatenated."""
    one_by_one = []
    for f in files:
        tok.encode_files(f, tmp_path / "one.npy", num_threads=2)
        one_by_one.append(np.load(tmp_path / "one.npy"))
    return np.concatenate(one_by_one)


def _documents_of(path: Path) -> list[str]:
    """The documents the reference trainer sees in one input: a text file split on EOT, or its records."""
    if path.suffix == ".jsonl":
        return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode("utf-8").split(EOT)


def test_records_match_tiktoken_gpt2(gpt2, formats, documents, tmp_path):
    tiktoken = pytest.importorskip("tiktoken", reason="tiktoken not installed")
    tiktoken_load = pytest.importorskip("tiktoken.load", reason="tiktoken not installed")

    bpe_file = tmp_path / "vocab.bpe"
    bpe_file.write_text("#version: 0.2\n" + (GPT2_DIR / "merges.txt").read_text(encoding="utf-8"), encoding="utf-8")
    ranks = tiktoken_load.data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(bpe_file), encoder_json_file=str(GPT2_DIR / "vocab.json")
    )
    enc = tiktoken.Encoding(
        "gpt2-local", pat_str=bpe_lm.GPT2_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256}
    )
    want = [i for d in documents if d for i in enc.encode_ordinary(d) + [enc.eot_token]]
    gpt2.encode_files(formats["parquet"], tmp_path / "p.npy")
    assert np.load(tmp_path / "p.npy").tolist() == want


def test_a_special_token_string_inside_a_record_is_text(gpt2, tmp_path):
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps({"text": f"before {EOT} after"}) + "\n")
    gpt2.encode_files(path, tmp_path / "one.npy")
    ids = np.load(tmp_path / "one.npy").tolist()
    assert ids.count(50256) == 1 and ids[-1] == 50256  # only the id that ends the record
    assert gpt2.decode(ids[:-1]) == f"before {EOT} after"


def test_many_inputs_concatenate_in_order_and_a_directory_holds_the_same(gpt2, formats, tmp_path):
    inputs = [formats["parquet"], formats["jsonl.zst"], formats["datasets"]]
    gpt2.encode_files(inputs, tmp_path / "all.npy")
    whole = np.load(tmp_path / "all.npy")
    one = np.load(tmp_path / "one.npy") if (tmp_path / "one.npy").exists() else None
    assert one is None
    parts = []
    for i, p in enumerate(inputs):
        gpt2.encode_files(p, tmp_path / f"{i}.npy")
        parts.append(np.load(tmp_path / f"{i}.npy"))
    assert np.array_equal(whole, np.concatenate(parts))

    out = tmp_path / "dir"
    r = bpe_lm_cli("encode", *inputs, "-o", f"{out}/", "--tokenizer", _tokenizer_dir(gpt2, tmp_path), "--quiet")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["input"] for e in manifest["outputs"]] == [str(p) for p in inputs]
    assert manifest["tokenizer"] == gpt2.fingerprint()
    names = sorted(p.name for p in out.glob("*.npy"))
    assert np.array_equal(np.concatenate([np.load(out / n) for n in names]), whole)
    assert [e["tokens"] for e in manifest["outputs"]] == [len(p) for p in parts]
    again = bpe_lm_cli("encode", *inputs, "-o", f"{out}/", "--tokenizer", tmp_path / "tok")
    assert again.returncode == 0 and "3 complete and current, kept" in again.stderr, again.stderr


def test_a_directory_of_small_and_large_inputs_holds_each_input_as_encoded_alone(gpt2, formats, tmp_path):
    # `-o DIR/` gives the core many inputs in one call, each to its own file (small text files side by
    # side, large ones and record files each as one stream): every output must be its input's ids alone,
    # an input with no text an empty array, and a later batch must start at its own first input.
    text = generated_corpus(600)
    small = []
    for i in range(5):
        p = tmp_path / f"small{i}.txt"
        p.write_text("x" if i == 2 else text[i * 997 : (i + 1) * 997 + i], encoding="utf-8")
        small.append(p)
    large = tmp_path / "large.txt"
    large.write_text(text * (600_000 // len(text) + 1), encoding="utf-8")  # above the small-input size: in chunks
    assert not _core.is_small_input(str(large))
    empty_records = tmp_path / "none.jsonl"  # no ids: its one record is empty, and skipped
    empty_records.write_text(json.dumps({"text": ""}) + "\n")
    inputs = [*small[:3], large, small[3], formats["jsonl.zst"], empty_records, formats["parquet"], small[4]]
    inputs += [formats["datasets"], formats["jsonl"]]
    alone = []
    for i, p in enumerate(inputs):
        gpt2.encode_files(p, tmp_path / f"alone{i}.npy")
        alone.append(np.load(tmp_path / f"alone{i}.npy"))
    assert len(alone[6]) == 0 and all(len(a) > 0 for i, a in enumerate(alone) if i != 6)
    tokdir = _tokenizer_dir(gpt2, tmp_path)
    for batch_inputs in ("1024", "2"):  # all in one batch; batches of two, cutting through the runs
        out = tmp_path / f"out{batch_inputs}"
        code = (
            "import sys; from bpe_lm import manifest; manifest.BATCH_INPUTS = int(sys.argv[1]); "
            "from bpe_lm.cli import main; sys.exit(main(sys.argv[2:]))"
        )
        args = ["encode", *map(str, inputs), "-o", f"{out}/", "--tokenizer", str(tokdir), "--quiet"]
        r = subprocess.run([sys.executable, "-c", code, batch_inputs, *args], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        entries = json.loads((out / "manifest.json").read_text())["outputs"]
        assert [e["input"] for e in entries] == [str(p) for p in inputs]
        for entry, want in zip(entries, alone):
            got = np.load(out / entry["output"])
            assert got.dtype == np.uint16 and np.array_equal(got, want), entry["input"]
            assert entry["tokens"] == len(want)
        assert not list(out.glob(".*"))  # no temporaries left


def test_a_writer_of_a_file_per_input_takes_exactly_its_inputs(gpt2, tmp_path):
    paths = [tmp_path / f"{i}.npy" for i in range(3)]
    texts = [tmp_path / f"t{i}.txt" for i in range(2)]
    for t in texts:
        t.write_text("a few words", encoding="utf-8")
    writer = _core.TokenWriter.per_input(paths, 2)
    with pytest.raises(ValueError, match="3 output files for 2 inputs"):
        gpt2._core.encode_texts_into(texts, writer)
    with pytest.raises(ValueError, match="encoding methods only"):
        writer.append(b"\x01\x00")
    gpt2._core.encode_texts_into(texts + [texts[0]], writer)
    assert writer.finish() == 3 * len(gpt2.encode("a few words"))
    assert [np.load(p).tolist() for p in paths] == [gpt2.encode("a few words")] * 3


def _tokenizer_dir(tok: Tokenizer, tmp_path: Path) -> Path:
    d = tmp_path / "tok"
    if not d.exists():
        tok.save(d)
    return d


def test_text_inputs_keep_the_separator_convention(gpt2, tmp_path):
    text = generated_corpus(50)
    plain = tmp_path / "c.txt"
    plain.write_text(text)
    zst = tmp_path / "c.txt.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    cut = len(text.encode()) // 3  # inside a document, maybe inside a character: frames cut bytes, not text
    pzst = tmp_path / "p.txt.zst"
    pzst.write_bytes(pzstd([text.encode()[:cut], text.encode()[cut:]]))
    for p in (plain, zst, pzst):
        gpt2.encode_files(p, tmp_path / "t.npy")
        assert np.load(tmp_path / "t.npy").tolist() == gpt2.encode(text)


# ---------------------------------------------------------------------------------------------------- training


def test_training_on_records_equals_the_reference_per_document(formats, documents, tmp_path):
    want_vocab, want_merges = ref.train_documents(documents, 400, [EOT])
    for name in ("jsonl", "jsonl.zst", "parquet", "datasets"):
        vocab, merges = bpe_lm.train_bpe(formats[name], 400, [EOT])
        assert merges == want_merges, name
        assert vocab == want_vocab, name


def test_counts_of_shards_sum_to_the_whole(formats, tmp_path):
    inputs = [detect(formats["jsonl"]), detect(formats["parquet"]), detect(formats["datasets"])]
    units = plan_units(inputs, 7, [EOT.encode()])
    assert len(units) >= 5
    paths = []
    for i in range(3):
        counter = _core.PretokenCounter([EOT], None)
        paths.append(tmp_path / f"{i}.counts")
        bpe_lm.tokenizer.write_counts(counter, shard_units(units, i, 3), paths[-1])
    whole = bpe_lm.train_bpe([formats["jsonl"], formats["parquet"], formats["datasets"]], 350, [EOT])
    vocab, merges, *_ = bpe_lm.tokenizer.train_from_count_files(paths, 350)
    assert (vocab, merges) == whole


def test_encode_shards_concatenate_to_the_whole(gpt2, formats, tmp_path):
    tokdir = _tokenizer_dir(gpt2, tmp_path)
    text = tmp_path / "c.txt"
    text.write_text(generated_corpus(300))
    inputs = [formats["jsonl"], formats["parquet"], text]
    r = bpe_lm_cli("encode", *inputs, "-o", tmp_path / "whole.npy", "--tokenizer", tokdir, "--quiet")
    assert r.returncode == 0, r.stderr
    parts = []
    for i in range(4):
        r = bpe_lm_cli(
            "encode", *inputs, "-o", tmp_path / f"s{i}.npy", "--tokenizer", tokdir, "--shard", f"{i}/4", "--quiet"
        )
        assert r.returncode == 0, r.stderr
        parts.append(np.load(tmp_path / f"s{i}.npy"))
    assert sum(len(p) > 0 for p in parts) >= 3
    assert np.array_equal(np.concatenate(parts), np.load(tmp_path / "whole.npy"))


# ---------------------------------------------------------------------------------------------------- damage


@pytest.mark.parametrize(
    "name, make, message",
    [
        (
            "bad.jsonl",
            lambda p: p.write_text('{"text": "ok"}\n{"text": "cut\n'),
            "bad.jsonl: line 2: is not valid JSON",
        ),
        (
            "pretty.json",
            lambda p: p.write_text(json.dumps({"data": [{"text": "a"}]}, indent=2)),
            "pretty.json: line 1: is not valid JSON (EOF while parsing an object at line 1 column 1): one JSON "
            "document over several lines?",
        ),
        (
            "type.jsonl",
            lambda p: p.write_text('{"text": "ok"}\n\n{"text": ["a"]}\n'),
            'type.jsonl: line 3: field "text" is a list, not a string',
        ),
        (
            "field.jsonl.gz",
            lambda p: p.write_bytes(gzip.compress(b'{"body": "x"}\n')),
            'field.jsonl.gz: line 1: has no field "text"',
        ),
        (
            "appended.jsonl.gz",
            lambda p: p.write_bytes(gzip.compress(b'{"text": "ok"}\n') + bytes(3) + b"not gzip"),
            "appended.jsonl.gz: after gzip member 1 come bytes that are not one",
        ),
        (
            "cut.jsonl.zst",
            lambda p: p.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "abc"}\n' * 5000)[:-40]),
            "cut.jsonl.zst",
        ),
        ("cut.parquet", lambda p: p.write_bytes(_parquet_bytes()[:-100]), "cut.parquet: not a readable parquet file"),
        (
            "col.parquet",
            lambda p: pq.write_table(pa.table({"text": [1, 2]}), p),
            "col.parquet: column 'text' holds int64, not strings",
        ),
        (
            "nocol.parquet",
            lambda p: pq.write_table(pa.table({"body": ["a"]}), p),
            "has no column 'text' (its columns: body)",
        ),
    ],
)
def test_damaged_inputs_are_refused_naming_file_and_place(gpt2, tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    out = tmp_path / "out.npy"
    r = bpe_lm_cli("encode", path, "-o", out, "--tokenizer", _tokenizer_dir(gpt2, tmp_path), "--quiet")
    assert r.returncode == 1, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.npy.*"))
    r = bpe_lm_cli("train-tokenizer", path, "-o", tmp_path / "t", "--vocab", "300", "--quiet")
    assert r.returncode == 1 and message in r.stderr, r.stderr


def _parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": [f"document {i} " * 20 for i in range(2000)]}), sink, row_group_size=500)
    return sink.getvalue().to_pybytes()


def test_text_field_chooses_the_column(gpt2, tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"content": ["hello world", None, "bye"], "text": [None, None, None]}), path)
    stats = gpt2.encode_files(path, tmp_path / "a.npy", text_field="content")
    assert (stats.documents, stats.skipped) == (2, 1)
    assert np.load(tmp_path / "a.npy").tolist() == gpt2.encode("hello world") + [50256] + gpt2.encode("bye") + [50256]


# ---------------------------------------------------------------------------------------------------- travelling


def test_tokenizer_pickles_by_value(gpt2):
    text = f"Hello {EOT} wörld 🙂 " * 30
    back = pickle.loads(pickle.dumps(gpt2))
    assert back.encode(text) == gpt2.encode(text)
    assert back.fingerprint() == gpt2.fingerprint()
    assert len(pickle.dumps(gpt2)) < 3_000_000


def _encode_in_worker(args):
    tok, text = args
    return tok.encode(text), default_num_threads()


def test_tokenizer_works_in_a_spawn_pool_with_one_thread_per_worker(gpt2):
    texts = [f"document {i}: once upon a time {EOT}" for i in range(4)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_encode_in_worker, [(gpt2, t) for t in texts])
    assert [r[0] for r in results] == [gpt2.encode(t) for t in texts]
    assert {r[1] for r in results} == {1}
    assert default_num_threads() is None  # the parent keeps all cores


def test_threads_from_the_environment(monkeypatch):
    monkeypatch.setenv("BPE_LM_NUM_THREADS", "3")
    assert default_num_threads() == 3
    monkeypatch.setenv("BPE_LM_NUM_THREADS", "zero")
    with pytest.raises(ValueError, match="BPE_LM_NUM_THREADS"):
        default_num_threads()


def test_a_dataset_dict_directory_asks_for_a_split(gpt2, tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets not installed")
    splits = {"train": ["train one", "train two"], "test": ["test one"]}
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": v}) for k, v in splits.items()}).save_to_disk(
        str(tmp_path / "dd")
    )
    with pytest.raises(
        InputError,
        match=r"dd: is a `datasets` DatasetDict of splits train, test; give a split's directory, e\.g\. .*dd/train",
    ):
        detect(tmp_path / "dd")
    gpt2.encode_files(tmp_path / "dd" / "train", tmp_path / "t.npy")
    assert np.load(tmp_path / "t.npy").tolist() == [i for t in splits["train"] for i in gpt2.encode(t) + [50256]]


def test_datasets_map_fingerprint_is_stable_and_cached(gpt2, tmp_path):
    datasets = pytest.importorskip("datasets", reason="datasets not installed")
    from datasets.fingerprint import Hasher

    assert Hasher.hash(gpt2) == Hasher.hash(pickle.loads(pickle.dumps(gpt2)))
    ds = datasets.Dataset.from_dict({"text": [f"story {i} about a cat" for i in range(40)]})
    path = tmp_path / "ds"
    ds.save_to_disk(str(path))
    ds = datasets.load_from_disk(str(path))

    def encode(batch):
        return {"ids": gpt2.encode_batch(batch["text"])}

    first = ds.map(encode, batched=True, num_proc=2)
    second = ds.map(encode, batched=True, num_proc=2)
    assert first["ids"] == [gpt2.encode(t) for t in ds["text"]]
    assert second.cache_files == first.cache_files  # served from the cache: same fingerprint


# ---------------------------------------------------------------------------------------------------- resuming


def test_killed_many_file_encode_reruns_only_the_unfinished(gpt2, tmp_path):
    inputs = []
    for i in range(8):
        p = tmp_path / f"part{i}.jsonl"
        p.write_text("".join(json.dumps({"text": f"record {i}.{j} " * 200}) + "\n" for j in range(3000)))
        inputs.append(p)
    tokdir = _tokenizer_dir(gpt2, tmp_path)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bpe_lm",
            "encode",
            *map(str, inputs),
            "-o",
            f"{out}/",
            "--tokenizer",
            str(tokdir),
            "--threads",
            "1",
            "--quiet",
        ],  # fmt: skip
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once some but not all outputs are finished
        manifest = out / "manifest.json"
        if manifest.exists() and 1 <= len(json.loads(manifest.read_text())["outputs"]) < len(inputs):
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = json.loads((out / "manifest.json").read_text())["outputs"]
    assert 1 <= len(finished) < len(inputs)
    r = bpe_lm_cli("encode", *inputs, "-o", f"{out}/", "--tokenizer", tokdir)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("complete and current, skipped") == len(finished)
    final = json.loads((out / "manifest.json").read_text())["outputs"]
    assert len(final) == len(inputs)
    gpt2.encode_files(inputs, tmp_path / "whole.npy")
    names = sorted(e["output"] for e in final)
    assert np.array_equal(np.concatenate([np.load(out / n) for n in names]), np.load(tmp_path / "whole.npy"))
    # An input changed since: its output is made again.
    inputs[0].write_text(json.dumps({"text": "changed"}) + "\n")
    r = bpe_lm_cli("encode", *inputs, "-o", f"{out}/", "--tokenizer", tokdir)
    assert r.stderr.count("complete and current, skipped") == len(inputs) - 1, r.stderr


def test_an_output_written_but_not_yet_listed_is_rewritten_by_a_rerun(gpt2, tmp_path, monkeypatch):
    # The manifest is rewritten only now and then (its cost bounded, not once per output), but names every
    # output the run will write as pending first: one finished after the last rewrite, when the run was
    # killed, is the run's own, and a rerun writes it again instead of refusing it as someone else's.
    from bpe_lm import manifest as manifests
    from bpe_lm.manifest import encode_to_directory
    from bpe_lm.readers import resolve

    monkeypatch.setattr(manifests, "MANIFEST_TIME_SHARE", float("inf"))  # listed after every output here
    monkeypatch.setattr(manifests, "BATCH_INPUTS", 1)  # and each output a batch of its own

    inputs = []
    for i in range(6):
        p = tmp_path / f"doc{i}.txt"
        p.write_text(f"document {i} " * 50, encoding="utf-8")
        inputs.append(p)
    out = tmp_path / "out"
    calls = []

    def killed_after_three(units, targets, progress):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run stops here, as a kill would
        calls.append(targets)
        return gpt2.encode_units_each(units, targets)

    with pytest.raises(KeyboardInterrupt):
        encode_to_directory(gpt2, resolve(inputs), out, text_field="text", force=False, encode_many=killed_after_three)
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["pending"]) == 6
    listed = {e["output"] for e in manifest["outputs"]}
    written = {p.name for p in out.glob("*.npy")}
    assert len(written) == 3 and listed == written
    # As if the kill came before the manifest listed the last of them:
    manifest["outputs"] = [e for e in manifest["outputs"] if e["output"] != sorted(written)[-1]]
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / ".00005-doc5.npy.999999999.x.tmp").write_bytes(b"left by a writer that is gone")
    with pytest.warns(UserWarning, match="00005-doc5.npy left by an interrupted run"):
        stats, reused = encode_to_directory(
            gpt2,
            resolve(inputs),
            out,
            text_field="text",
            force=False,
            encode_many=lambda units, targets, _: gpt2.encode_units_each(units, targets),
        )
    assert reused == 2 and len(stats.inputs) == 4
    final = json.loads((out / "manifest.json").read_text())
    assert "pending" not in final and len(final["outputs"]) == 6
    assert not list(out.glob(".*.tmp"))  # swept once, at the start
    gpt2.encode_files(inputs, tmp_path / "whole.npy")
    names = sorted(p.name for p in out.glob("*.npy"))
    assert np.array_equal(np.concatenate([np.load(out / n) for n in names]), np.load(tmp_path / "whole.npy"))


def test_directory_output_never_replaces_files_it_did_not_write(gpt2, tmp_path, formats):
    out = tmp_path / "out"
    out.mkdir()
    (out / "00000-c.npy").write_bytes(b"mine")
    r = bpe_lm_cli("encode", formats["jsonl"], "-o", f"{out}/", "--tokenizer", _tokenizer_dir(gpt2, tmp_path))
    assert r.returncode == 1 and "not listed in" in r.stderr, r.stderr
    assert (out / "00000-c.npy").read_bytes() == b"mine"


def test_output_that_is_an_input_is_refused_even_with_force(gpt2, tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": "x"}) + "\n")
    r = bpe_lm_cli("encode", path, "-o", path, "--tokenizer", _tokenizer_dir(gpt2, tmp_path), "--force")
    assert r.returncode == 1 and "is an input of this command" in r.stderr, r.stderr
    assert json.loads(path.read_text()) == {"text": "x"}


# ---------------------------------------------------------------------------------------------------- Ray


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="ray not installed (pip install '.[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


def test_ray_engine_gives_the_single_process_ids_and_merges(local_ray, gpt2, formats, tmp_path):
    from bpe_lm.ingest import whole_units
    from bpe_lm.ray_engine import count_on_ray, encode_on_ray

    text = tmp_path / "c.txt"
    text.write_text(generated_corpus(400))
    # One input as a URL: Ray workers read it through a local copy of their own.
    url = f"file://{formats['jsonl.zst']}"
    inputs = [detect(p) for p in (formats["parquet"], formats["jsonl.gz"], text, formats["datasets"], url)]
    stats = encode_on_ray(gpt2, whole_units(inputs), tmp_path / "ray.npy")
    gpt2.encode_files([i.path for i in inputs[:-1]] + [formats["jsonl.zst"]], tmp_path / "local.npy")
    assert np.array_equal(np.load(tmp_path / "ray.npy"), np.load(tmp_path / "local.npy"))
    assert stats.tokens == len(np.load(tmp_path / "local.npy"))

    counter = _core.PretokenCounter([EOT], None)
    count_on_ray(counter, [EOT], inputs)
    vocab, merges = bpe_lm.tokenizer.train_on_units(counter, [], 420)
    assert (vocab, merges) == bpe_lm.train_bpe([i.path for i in inputs[:-1]] + [formats["jsonl.zst"]], 420, [EOT])


def test_ray_tasks_write_parts_and_a_rerun_encodes_only_the_unfinished(local_ray, gpt2, tmp_path, monkeypatch):
    from bpe_lm import ray_engine
    from bpe_lm.ingest import whole_units

    lines = [json.dumps({"text": f"document {i}: " + "the cat sat on the mat. " * (i % 7 + 1)}) for i in range(3000)]
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text("\n".join(lines) + "\n")
    broken = lines[:2500] + ['{"text": "cut short"'] + lines[2501:]
    bad.write_text("\n".join(broken) + "\n")
    out = tmp_path / "out.npy"
    with pytest.raises(Exception, match="bad.jsonl"):
        ray_engine.encode_on_ray(gpt2, whole_units([detect(good), detect(bad)]), out)
    assert not out.exists()
    parts = tmp_path / "out.npy.parts"
    listed = json.loads((parts / "manifest.json").read_text())["parts"]
    from_good = {
        e["index"]: (parts / f"part-{e['index']:06d}.npy").stat().st_mtime_ns
        for e in listed
        if "good" in e["unit"]["input"]
    }
    assert from_good and all(e["tokens"] > 0 for e in listed)

    bad.write_text("\n".join(lines) + "\n")  # mended: its units are encoded again, the good file's reused
    monkeypatch.setattr(ray_engine._Parts, "remove", lambda self, count: None)  # keep the parts to look at
    stats = ray_engine.encode_on_ray(gpt2, whole_units([detect(good), detect(bad)]), out)
    gpt2.encode_files([good, bad], tmp_path / "local.npy")
    assert np.array_equal(np.load(out), np.load(tmp_path / "local.npy"))
    assert stats.tokens == len(np.load(out)) and stats.documents == 6000
    for i, mtime in from_good.items():
        assert (parts / f"part-{i:06d}.npy").stat().st_mtime_ns == mtime, f"part {i} was written again"

    monkeypatch.undo()
    ray_engine.encode_on_ray(gpt2, whole_units([detect(good), detect(bad)]), tmp_path / "again.npy")
    assert np.array_equal(np.load(tmp_path / "again.npy"), np.load(out))
    assert not (tmp_path / "again.npy.parts").exists()  # joined, then removed


def test_one_thread_inside_ray_tasks(local_ray, gpt2):
    @local_ray.remote(num_cpus=1)
    def threads_and_ids(tok):
        return default_num_threads(), tok.encode("hello world")

    assert local_ray.get(threads_and_ids.remote(gpt2)) == (1, gpt2.encode("hello world"))


def test_cli_ray_engine_encodes(gpt2, formats, tmp_path):
    pytest.importorskip("ray", reason="ray not installed (pip install '.[ray]')")
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    tokdir = _tokenizer_dir(gpt2, tmp_path)
    r = bpe_lm_cli(
        "encode",
        formats["jsonl"],
        "-o",
        tmp_path / "r.npy",
        "--tokenizer",
        tokdir,
        "--engine",
        "ray",
        "--quiet",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    gpt2.encode_files(formats["jsonl"], tmp_path / "l.npy")
    assert np.array_equal(np.load(tmp_path / "r.npy"), np.load(tmp_path / "l.npy"))


# ---------------------------------------------------------------------------------------------------- URLs


def test_urls_globs_and_remote_outputs_through_fsspec(gpt2, formats, tmp_path):
    """Any fsspec URL works as an input (and `-o URL.npy` as an output): here fsspec's in-memory file system
    stands in for s3:// or gs://, read through the same local-copy path."""
    fsspec = pytest.importorskip("fsspec", reason="fsspec not installed")
    fs = fsspec.filesystem("memory")
    fs.pipe("/bucket/c.parquet", formats["parquet"].read_bytes())
    fs.pipe("/bucket/c.jsonl.zst", formats["jsonl.zst"].read_bytes())
    fs.pipe("/bucket/bad.jsonl", b'{"text": "fine"}\n{"text": 7}\n')
    got = expand_inputs(["memory://bucket/c.*"])
    assert got == [fs.unstrip_protocol("/bucket/c.jsonl.zst"), fs.unstrip_protocol("/bucket/c.parquet")]  # sorted
    stats = gpt2.encode_files(["memory://bucket/c.parquet", "memory://bucket/c.jsonl.zst"], tmp_path / "remote.npy")
    gpt2.encode_files([formats["parquet"], formats["jsonl.zst"]], tmp_path / "local.npy")
    assert np.array_equal(np.load(tmp_path / "remote.npy"), np.load(tmp_path / "local.npy"))
    assert stats.inputs == ["memory://bucket/c.parquet", "memory://bucket/c.jsonl.zst"]
    assert bpe_lm.train_bpe("memory://bucket/c.parquet", 300, [EOT]) == bpe_lm.train_bpe(formats["parquet"], 300, [EOT])
    gpt2.encode_files("memory://bucket/c.parquet", "memory://out/ids.npy")
    gpt2.encode_files(formats["parquet"], tmp_path / "parquet.npy")
    with fs.open("/out/ids.npy", "rb") as f:
        assert np.array_equal(np.load(f), np.load(tmp_path / "parquet.npy"))
    # Errors name the URL, not the local copy.
    with pytest.raises(ValueError, match=r"memory://bucket/bad.jsonl: line 2: field \"text\" is a number"):
        gpt2.encode_files("memory://bucket/bad.jsonl", tmp_path / "bad.npy")
    with pytest.raises(InputError, match="memory://bucket/nope.parquet: no such file"):
        detect("memory://bucket/nope.parquet")
    with pytest.raises(InputError, match="no file matches"):
        expand_inputs(["memory://bucket/*.arrow"])
    fs.rm("/bucket", recursive=True)
    fs.rm("/out", recursive=True)


def test_cli_reads_and_writes_urls(gpt2, formats, tmp_path):
    tokdir = _tokenizer_dir(gpt2, tmp_path)
    out = tmp_path / "u.npy"
    r = bpe_lm_cli("encode", f"file://{formats['parquet']}", "-o", f"file://{out}", "--tokenizer", tokdir, "--quiet")
    assert r.returncode == 0, r.stderr
    gpt2.encode_files(formats["parquet"], tmp_path / "l.npy")
    assert np.array_equal(np.load(out), np.load(tmp_path / "l.npy"))
    again = bpe_lm_cli("encode", f"file://{formats['parquet']}", "-o", f"file://{out}", "--tokenizer", tokdir)
    assert again.returncode == 1 and "already exists" in again.stderr, again.stderr
    # -o URL/: one .npy per input and the manifest, written at the URL; a rerun skips what is complete.
    inputs = [f"file://{formats['parquet']}", f"file://{formats['jsonl.zst']}"]
    r = bpe_lm_cli("encode", *inputs, "-o", f"file://{tmp_path}/d/", "--tokenizer", tokdir, "--quiet")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    names = [e["output"] for e in manifest["outputs"]]
    assert names == ["00000-c.npy", "00001-c.npy"]
    gpt2.encode_files(formats["jsonl.zst"], tmp_path / "z.npy")
    for name, local in zip(names, ("l.npy", "z.npy")):
        assert np.array_equal(np.load(tmp_path / "d" / name), np.load(tmp_path / local))
    again = bpe_lm_cli("encode", *inputs, "-o", f"file://{tmp_path}/d/", "--tokenizer", tokdir)
    assert again.returncode == 0 and again.stderr.count("complete and current, skipped") == 2, again.stderr
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "00000-c.npy").write_bytes(b"someone else's")
    clash = bpe_lm_cli("encode", *inputs, "-o", f"file://{tmp_path}/e/", "--tokenizer", tokdir, "--quiet")
    assert clash.returncode == 1 and "is not listed in" in clash.stderr, clash.stderr
    assert (tmp_path / "e" / "00000-c.npy").read_bytes() == b"someone else's"
    (tmp_path / "e" / "00000-c.npy").unlink()
    (tmp_path / "e" / "00000-c.npy").mkdir()  # a directory in the way, too
    clash = bpe_lm_cli("encode", *inputs, "-o", f"file://{tmp_path}/e/", "--tokenizer", tokdir, "--quiet")
    assert clash.returncode == 1 and "is not listed in" in clash.stderr, clash.stderr


# ---------------------------------------------------------------------------------------------------- other readers


def test_tokenizer_stats_and_demo_text_read_records(gpt2, formats, documents, tmp_path, capsys):
    from bpe_lm.cli import main
    from bpe_lm.pipeline import read_text

    tokdir = _tokenizer_dir(gpt2, tmp_path)
    assert (
        main(
            [
                "tokenizer-stats",
                "--tokenizer",
                str(tokdir),
                str(formats["parquet"]),
                str(formats["jsonl.zst"]),
                "--docs",
                "50",
                "--json",
            ]
        )
        == 0
    )
    rows = json.loads(capsys.readouterr().out)["pairs"]
    assert {r["documents"] for r in rows} == {50}
    text = read_text(formats["datasets"], 10_000)
    assert text.startswith(documents[0]) and len(text) == 10_000


def test_eval_raw_text_takes_records(gpt2, formats, documents, tmp_path, capsys):
    torch = pytest.importorskip("torch", reason="the lm extra is not installed")
    from bpe_lm.checkpoint import save_checkpoint
    from bpe_lm.cli import main
    from bpe_lm.model import ModelConfig, TransformerLM

    tokdir = _tokenizer_dir(gpt2, tmp_path)
    gpt2.encode_files(formats["jsonl"], tmp_path / "valid.npy")
    torch.manual_seed(0)
    model = TransformerLM(
        ModelConfig(vocab_size=gpt2.vocab_size, context_length=32, d_model=32, num_layers=1, num_heads=4)
    )
    save_checkpoint(model, None, 0, tmp_path / "m.pt")
    base = ["eval", "--checkpoint", str(tmp_path / "m.pt"), "--data", str(tmp_path / "valid.npy"), "--device", "cpu",
            "--json", "--max-batches", "2", "--tokenizer", str(tokdir)]  # fmt: skip
    assert main([*base, "--raw-text", str(formats["parquet"])]) == 0
    result = json.loads(capsys.readouterr().out)
    tokens = len(np.load(tmp_path / "valid.npy"))
    text_bytes = sum(len(d.encode("utf-8")) for d in documents)
    assert result["bits_per_byte"] == pytest.approx(result["loss"] * tokens / text_bytes / np.log(2))
    # Tokens of text with bytes that are not UTF-8, encoded with errors="replace": eval offers the same way.
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 au lait, " * 64)
    gpt2.encode_files(tmp_path / "bad.txt", tmp_path / "bad.npy", errors="replace")
    bad = [*base[:4], str(tmp_path / "bad.npy"), *base[5:], "--raw-text", str(tmp_path / "bad.txt")]
    assert main(bad) == 1
    assert "bad.txt: invalid UTF-8 at byte offset 3" in capsys.readouterr().err
    assert main([*bad, "--errors", "replace"]) == 0
    assert json.loads(capsys.readouterr().out)["bits_per_byte"] > 0


def test_text_documents_split_like_str_split_in_linear_time(tmp_path):
    """The streaming splitter of text corpora (tokenizer-stats, the demo) against str.split, with documents
    around the 1 MB read size and separators across block edges, whole and cut to `max_chars`."""
    import random

    from bpe_lm.readers import iter_documents

    rng = random.Random(1)
    path = tmp_path / "c.txt"
    for _ in range(25):
        sizes = [rng.choice([0, 5, 300, (1 << 20) - 3, (1 << 20) + 7, 3 << 20]) for _ in range(rng.randint(0, 5))]
        parts = ["".join(rng.choice("ab \n<|>") for _ in range(n)) for n in sizes]
        text = EOT.join(parts)
        path.write_text(text, encoding="utf-8")
        for cap in (None, 1000, 1 << 20):
            want = [d.strip("\n")[:cap] for d in text.split(EOT) if d.strip()]
            assert list(iter_documents(detect(path), max_chars=cap)) == want


def test_the_batch_reader_thread_is_stopped_and_joined_however_its_consumer_leaves():
    """Arrow and CSV batches are read on a thread ahead of the encoder. A consumer that stops early (an
    encoding error) must not leave that thread inside pyarrow: at interpreter exit that aborted the process
    after the error message (exit -6 for 1, "terminate called without an active exception")."""
    closed_on: list[str] = []

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed_on.append(threading.current_thread().name)

    def readers_alive() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "bpe-lm-reader"]

    with pytest.raises(RuntimeError, match="the consumer fails"):
        with prefetch(endless(), depth=2) as items:
            assert [next(items), next(items)] == [0, 1]
            raise RuntimeError("the consumer fails")
    assert closed_on == ["bpe-lm-reader"] and not readers_alive()

    def failing():
        yield "first"
        raise ValueError("the reader fails")

    got = []
    with pytest.raises(ValueError, match="the reader fails"):
        with prefetch(failing()) as items:
            got.extend(items)
    assert got == ["first"] and not readers_alive()
    with prefetch(iter(range(5))) as items:
        assert list(items) == [0, 1, 2, 3, 4]
    assert not readers_alive()


def test_an_encoding_error_in_an_arrow_file_exits_1_every_time(gpt2, tmp_path):
    """The abort above was a race: run the failing command several times."""
    column = pa.array([b"fine", b"caf\xe9"], pa.binary())
    with pa.ipc.new_file(tmp_path / "c.arrow", pa.schema([("text", pa.binary())])) as w:
        w.write_table(pa.table({"text": column}))
    tok_dir = _tokenizer_dir(gpt2, tmp_path)
    codes = [
        bpe_lm_cli("encode", tmp_path / "c.arrow", "-o", tmp_path / "o.npy", "--tokenizer", tok_dir, "--quiet")
        .returncode for _ in range(8)
    ]  # fmt: skip
    assert codes == [1] * 8
