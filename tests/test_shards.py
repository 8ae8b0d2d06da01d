"""Sharded encoding and counting reproduce the single-machine results exactly."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import zstandard

import bpe_lm
from bpe_lm.cli import main
from bpe_lm.shards import parse_shard, shard_range

from conftest import generated_corpus

EOT = "<|endoftext|>"


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(generated_corpus(1500, seed=5) + "ünïcödé 中文 🙂\n" * 20, encoding="utf-8")
    return path


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64])
def test_shard_ranges_tile_the_file(corpus, n):
    ranges = [shard_range(corpus, i, n, [EOT]) for i in range(n)]
    assert ranges[0][0] == 0 and ranges[-1][1] == corpus.stat().st_size
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    data = corpus.read_bytes()
    for start, _ in ranges[1:]:
        assert start == len(data) or data[:start].endswith(EOT.encode())


def test_sharded_encoding_concatenates_to_the_whole(tmp_path, corpus, capsys):
    assert main(["train-tokenizer", str(corpus), "--vocab", "400", "-o", str(tmp_path / "tok"), "--quiet"]) == 0
    assert (
        main(["encode", str(corpus), "-o", str(tmp_path / "all.npy"), "--tokenizer", str(tmp_path / "tok"), "--quiet"])
        == 0
    )
    parts = []
    for i in range(5):
        out = tmp_path / f"part{i}.npy"
        assert (
            main(
                [
                    "encode",
                    str(corpus),
                    "-o",
                    str(out),
                    "--tokenizer",
                    str(tmp_path / "tok"),
                    "--shard",
                    f"{i}/5",
                    "--quiet",
                ]
            )
            == 0
        )
        parts.append(np.load(out))
    assert np.array_equal(np.concatenate(parts), np.load(tmp_path / "all.npy"))


def test_sharded_counts_train_the_same_merges(tmp_path, corpus):
    for i in range(4):
        assert (
            main(["count-pretokens", str(corpus), "--shard", f"{i}/4", "-o", str(tmp_path / f"c{i}.bin"), "--quiet"])
            == 0
        )
    files = [str(tmp_path / f"c{i}.bin") for i in range(4)]
    assert (
        main(["train-tokenizer", "--from-counts", *files, "--vocab", "500", "-o", str(tmp_path / "sharded"), "--quiet"])
        == 0
    )
    assert main(["train-tokenizer", str(corpus), "--vocab", "500", "-o", str(tmp_path / "whole"), "--quiet"]) == 0
    a, b = bpe_lm.Tokenizer.load(tmp_path / "sharded"), bpe_lm.Tokenizer.load(tmp_path / "whole")
    assert a.vocab == b.vocab and a.merges == b.merges and a.special_tokens == b.special_tokens


def test_shard_errors(tmp_path, corpus, capsys):
    packed = tmp_path / "c.txt.gz"
    with gzip.open(packed, "wb") as f:
        f.write(corpus.read_bytes())
    with pytest.raises(ValueError, match="gzip files cannot be sharded"):
        shard_range(packed, 0, 2, [EOT])
    zst = tmp_path / "c.txt.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(corpus.read_bytes()))
    with pytest.raises(ValueError, match="zstd files cannot be sharded"):
        shard_range(zst, 0, 2, [EOT])
    with pytest.raises(ValueError, match="expected I/N"):
        parse_shard("3/3")
    with pytest.raises(ValueError, match="overlap"):
        shard_range(corpus, 0, 2, [EOT, EOT + EOT])
    # Several inputs shard too (by units of about equal bytes), a compressed one as a whole unit.
    for i in range(2):
        assert (
            main(
                [
                    "count-pretokens",
                    str(corpus),
                    str(packed),
                    "--shard",
                    f"{i}/2",
                    "-o",
                    str(tmp_path / f"{i}.bin"),
                    "--quiet",
                ]
            )
            == 0
        )
    assert (
        main(
            [
                "train-tokenizer",
                "--from-counts",
                str(tmp_path / "0.bin"),
                str(tmp_path / "1.bin"),
                "--vocab",
                "300",
                "-o",
                str(tmp_path / "t"),
            ]
        )
        == 0
    )
    assert main(["train-tokenizer", str(corpus), str(packed), "--vocab", "300", "-o", str(tmp_path / "whole")]) == 0
    assert (tmp_path / "t" / "merges.txt").read_bytes() == (tmp_path / "whole" / "merges.txt").read_bytes()
