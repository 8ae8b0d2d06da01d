"""Input corpora as users hold them: which format a path holds, the documents in it, and the units of work
it splits into.

Formats, told by content first and by name where content cannot tell:
- text: `.txt` and anything else that is not one of the below, plain, gzip or zstd (detected by magic
  bytes). Documents are separated by special tokens, as in TinyStories' and OpenWebText's text dumps.
- JSON lines: `.jsonl`, `.json`, `.ndjson` (plain, `.gz` or `.zst`), one record per line; the document is
  the record's text field.
- parquet: detected by its `PAR1` magic; the document is the text column's value in each row.
- Arrow: a `.arrow` file (IPC stream or file) or a directory written by `datasets.Dataset.save_to_disk`.
- CSV: `.csv` and `.tsv` (plain, `.gz` or `.zst`) with a header row; the document is the text column's
  value in each row (quoted values may hold commas and newlines).

In record formats (JSON lines, parquet, Arrow, CSV) each record is one document and its text is text: a
special-token string inside it stays ordinary bytes. Null and empty texts are skipped and counted.
Arrow and CSV files are read by pyarrow (`pip install 'bpe-lm[parquet]'`); everything else, parquet included,
by the core.
"""

from __future__ import annotations

import codecs
import errno
import glob
import io
import json
import os
import queue
import re
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bpe_lm import _core
from bpe_lm.errors import InputError, RecordError, TextEncodingError

DEFAULT_TEXT_FIELD = "text"
# The end-of-text special token: the document separator of text corpora, and the id after each record.
END_OF_TEXT = "<|endoftext|>"
RECORD_FORMATS = ("jsonl", "parquet", "arrow", "csv")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
# CSV files by name, and the delimiter each name means.
CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
COMPRESSED_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
# Text per batch handed to the core from Arrow files: large enough that the serial steps between
# batches (decoding the next one overlaps, writing ids does not) are a small share, small enough that the
# two batches in flight stay a few tens of MB.
ARROW_BATCH_BYTES = 8 << 20


# The first batch is smaller, and each next one twice the last up to ARROW_BATCH_BYTES: encoding starts
# after a short read, not after a whole batch's.
FIRST_BATCH_BYTES = 1 << 20


def _rows_per_batch(text_bytes: int, rows: int, target: int) -> int:
    return max(1, min(1 << 20, target * max(rows, 1) // max(text_bytes, 1)))


class _Ramp:
    def __init__(self) -> None:
        self.target = FIRST_BATCH_BYTES

    def sliced(self, column: Any) -> Iterator[list[Any]]:
        """A string array in batches (lists of one slice) of about `target` bytes of text, the target
        growing as it goes."""
        start = 0
        while start < len(column):
            rows = _rows_per_batch(column.nbytes, len(column), self.target)
            yield [column.slice(start, rows)]
            start += rows
            self.target = min(2 * self.target, ARROW_BATCH_BYTES)


_MAGIC_FORMATS_WE_DO_NOT_READ = [
    (b"BZh", "a bzip2 file"),
    (b"\xfd7zXZ\x00", "an xz file"),
    (b"PK\x03\x04", "a zip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x04\x22\x4d\x18", "an lz4 file"),
    (b"\x89HDF", "an HDF5 file"),
    (b"\x93NUMPY", "a numpy .npy file (token ids? those are for `bpe-lm train` and `bpe-lm decode`)"),
    (b"BPELMCNT", "a pre-token count file (give it to `bpe-lm train-tokenizer --from-counts`)"),
]
SUPPORTED = (
    "plain, gzip or zstd text; JSON lines (.jsonl, .jsonl.gz, .jsonl.zst); parquet; Arrow / `datasets` directories; "
    "CSV / TSV (.csv, .tsv, also .gz or .zst)"
)
# Text in another encoding than UTF-8, told by its byte-order mark (UTF-32's first: it begins like UTF-16's).
# Windows PowerShell's `>` writes UTF-16: read as UTF-8 it is garbage, or (ASCII text) every other byte a NUL.
_OTHER_ENCODING_MARKS = [
    (b"\xff\xfe\x00\x00", "UTF-32LE"),
    (b"\x00\x00\xfe\xff", "UTF-32BE"),
    (b"\xff\xfe", "UTF-16LE"),
    (b"\xfe\xff", "UTF-16BE"),
]
_UNREAD_MAGICS = tuple(magic for magic, _ in _MAGIC_FORMATS_WE_DO_NOT_READ)
_OTHER_MARKS = tuple(mark for mark, _ in _OTHER_ENCODING_MARKS)
UTF8_BOM = b"\xef\xbb\xbf"
# A code point of half a UTF-16 surrogate pair: JSON may escape one (`\ud800`), but it is no character.
_SURROGATE = re.compile("[\ud800-\udfff]")
# Bytes of a file's start looked at for its format.
HEAD_BYTES = 4096


class MissingInputError(InputError, FileNotFoundError):
    """An input path that does not exist."""


@dataclass(frozen=True)
class Input:
    """One input of a corpus: a file, or a `datasets` directory (its Arrow files, in order)."""

    path: Path
    format: str  # "text" | "jsonl" | "parquet" | "arrow" | "csv"
    compression: str = "none"  # "none" | "gzip" | "zstd" (text, JSON lines, CSV)
    files: tuple[Path, ...] = ()  # the Arrow files of a directory; else (path,)
    # A remote input (any fsspec URL: s3://, gs://, hf://, file://...): read through a local copy that is
    # made when its unit is worked on (`staged`), so `path` is only its name.
    url: str | None = None
    remote_size: int = 0
    remote_version: str = ""  # what the store says about its version (ETag, mtime), for manifests

    @property
    def is_record_format(self) -> bool:
        return self.format in RECORD_FORMATS

    @property
    def where(self) -> str:
        """The input as the user named it, for messages."""
        return self.url or os.fspath(self.path)

    def disk_bytes(self) -> int:
        if self.url is not None:
            return self.remote_size
        return sum(f.stat().st_size for f in self.files)


@dataclass(frozen=True)
class Unit:
    """A piece of an input that can be read on its own, in a process of its own: a byte range of a plain
    text or JSON-lines file, some row groups of a parquet file, some files of an Arrow directory, or a
    whole file. Concatenating the units' outputs in order gives the output of the whole input."""

    input: Input
    byte_range: tuple[int, int] | None = None
    row_groups: tuple[int, ...] | None = None
    files: tuple[Path, ...] | None = None
    size: int = 0  # bytes on disk, for balancing


@dataclass
class Stats:
    """What was read: documents and skipped (null or empty) records of record inputs, UTF-8 bytes of text
    (of record inputs' documents; of text inputs where it was counted), tokens written, and the inputs."""

    documents: int = 0
    skipped: int = 0
    text_bytes: int = 0
    tokens: int = 0
    inputs: list[str] = field(default_factory=list)

    def add(self, other: Stats) -> None:
        self.documents += other.documents
        self.skipped += other.skipped
        self.text_bytes += other.text_bytes
        self.tokens += other.tokens
        self.inputs.extend(other.inputs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "skipped": self.skipped,
            "text_bytes": self.text_bytes,
            "tokens": self.tokens,
        }


# ----------------------------------------------------------------------------------------------------
# Which inputs, in which format


def is_url(text: str) -> bool:
    """A URL of a file system fsspec knows (s3://, gs://, hf://, file://...), not a local path."""
    return bool(_URL.match(text))


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _fsspec(url: str) -> tuple[Any, str]:
    """(file system, path in it) for a URL."""
    try:
        import fsspec
    except ImportError:
        raise InputError(
            f"{url}: reading URLs needs fsspec (and its package for the protocol, e.g. s3fs): pip install fsspec"
        ) from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise InputError(f"{url}: {e}") from None


def expand_inputs(patterns: Iterable[str | os.PathLike[str]]) -> list[Path | str]:
    """Paths, URLs and shell-style globs ('shards/*.parquet', '**' for any depth; 's3://bucket/*.parquet') to
    inputs, in the order given, each glob's matches sorted. A glob that matches nothing is an error (a typo
    must not read less). URLs stay strings."""
    out: list[Path | str] = []
    for pattern in patterns:
        text = os.fspath(pattern)
        if is_url(text):
            if glob.has_magic(text):
                fs, path = _fsspec(text)
                found = sorted(fs.glob(path))
                if not found:
                    raise InputError(f"{text}: no file matches this pattern")
                out.extend(fs.unstrip_protocol(f) for f in found)
            else:
                out.append(text)
        elif glob.has_magic(text) and not os.path.exists(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise InputError(f"{text}: no file matches this pattern")
            out.extend(Path(m) for m in matches)
        else:
            out.append(Path(text))
    if not out:
        raise InputError("no input files given")
    return out


def _head(path: Path, n: int = HEAD_BYTES) -> bytes:
    # A file descriptor, not a Python file object: a corpus of many small files is detected file by file.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        return os.read(fd, n)
    finally:
        os.close(fd)


def _suffixes(name: str) -> tuple[str, str]:
    """(compression suffix or '', the suffix before it) of a file name, lower-cased."""
    stem, ext = os.path.splitext(name.lower())
    if ext in COMPRESSED_SUFFIXES:
        return ext, os.path.splitext(stem)[1]
    return "", ext


def _arrow_directory(path: Path) -> tuple[Path, ...]:
    """The Arrow files of a `datasets.save_to_disk` directory, in the order its state.json lists them."""
    state = path / "state.json"
    if state.is_file():
        try:
            listed = [path / f["filename"] for f in json.loads(state.read_text(encoding="utf-8"))["_data_files"]]
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{state}: not a `datasets` state file ({e})") from None
        missing = [f for f in listed if not f.is_file()]
        if missing:
            raise InputError(f"{path}: {missing[0].name}, listed in state.json, is missing")
        return tuple(listed)
    files = tuple(sorted(path.glob("*.arrow")))
    if not files and (path / "dataset_dict.json").is_file():
        # `DatasetDict.save_to_disk` (what `load_dataset(...).save_to_disk` writes): one directory per split.
        # Reading them all would mix the splits (a test split in the training ids), so the user chooses.
        try:
            splits = [str(s) for s in json.loads((path / "dataset_dict.json").read_text(encoding="utf-8"))["splits"]]
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path / 'dataset_dict.json'}: not a `datasets` DatasetDict file ({e})") from None
        raise InputError(
            f"{path}: is a `datasets` DatasetDict of splits {', '.join(splits)}; give a split's directory, "
            f"e.g. {path / (splits[0] if splits else 'train')}"
        )
    if not files:
        hint = f"; to read its parquet files give them, e.g. '{path}/*.parquet'" if any(path.glob("*.parquet")) else ""
        raise InputError(
            f"{path}: is a directory, and not one written by `datasets` save_to_disk (no state.json or .arrow files){hint}"
        )
    return files


def detect(path: str | os.PathLike[str]) -> Input:
    """The format of one input, told by its content (magic bytes) and, where content cannot tell (text or
    JSON lines), by its name. A URL is looked at through fsspec (its first bytes, its size)."""
    if isinstance(path, str) and is_url(path):
        return _detect_remote(path)
    # One stat for what pathlib's exists(), is_dir() and stat() would ask in turn: a corpus of many small files is
    # detected file by file, and this is a share of each file's cost.
    p = path if isinstance(path, Path) else Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EBADF):  # as Path.exists() has it
            raise
        raise MissingInputError(f"{p}: no such file") from None
    if stat.S_ISDIR(st.st_mode):
        files = _arrow_directory(p)
        for f in files:
            if detect(f).format != "arrow":
                raise InputError(f"{f}: not an Arrow file, though its directory holds a `datasets` dataset")
        return Input(p, "arrow", files=files)
    try:
        head = _head(p)
    except PermissionError:
        raise InputError(f"{p}: permission denied") from None
    fmt, compression = _classify(os.fspath(p), p.name, head)
    if fmt == "jsonl" and st.st_size:
        first = _first_non_space(p)
        if first == b"[":
            raise InputError(
                f"{p}: holds a JSON array; bpe-lm reads JSON lines (one object per line), e.g. from "
                "`jq -c '.[]' FILE > FILE.jsonl` or `datasets.Dataset.to_json(path, lines=True)`"
            )
    return Input(p, fmt, compression, files=(p,))


def _detect_remote(url: str) -> Input:
    fs, path = _fsspec(url)
    try:
        if fs.isdir(path):
            raise InputError(f"{url}: is a directory; give its files (e.g. '{url.rstrip('/')}/*.parquet')")
        info = fs.info(path)
        with fs.open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise MissingInputError(f"{url}: no such file") from None
    except OSError as e:
        raise InputError(f"{url}: cannot be read ({e})") from None
    name = path.rstrip("/").rsplit("/", 1)[-1]
    fmt, compression = _classify(url, name, head)
    version = str(
        info.get("ETag")
        or info.get("etag")
        or info.get("mtime")
        or info.get("LastModified")
        or info.get("created")
        or ""
    )
    return Input(
        Path(name), fmt, compression, files=(), url=url, remote_size=int(info.get("size") or 0), remote_version=version
    )


def _classify(where: str, name: str, head: bytes) -> tuple[str, str]:
    """(format, compression) from a file's name and first bytes."""
    suffix = os.path.splitext(name.lower())[1]
    if not head:  # an empty file holds no documents, in any format: read as (empty) text or JSON lines
        return _by_name(_suffixes(name)[1]), "none"
    if head.startswith(b"PAR1"):
        return "parquet", "none"
    if head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff"):
        return "arrow", "none"
    if head.startswith(_UNREAD_MAGICS):  # one test for all (a corpus of small files is detected file by file)
        what = next(what for magic, what in _MAGIC_FORMATS_WE_DO_NOT_READ if head.startswith(magic))
        raise InputError(f"{where}: is {what}, which bpe-lm does not read as a corpus; it reads {SUPPORTED}")
    compressed, ext = _suffixes(name)
    if suffix == ".parquet":
        raise InputError(
            f"{where}: named .parquet but not a parquet file (it lacks the PAR1 magic: damaged or misnamed)"
        )
    if suffix == ".arrow":
        raise InputError(f"{where}: named .arrow but not an Arrow IPC file (damaged or misnamed)")
    compression = _core.compression_of(head)
    if compression == "none":
        if compressed:
            raise InputError(
                f"{where}: named {compressed} but not {COMPRESSED_SUFFIXES[compressed]}-compressed (damaged or misnamed)"
            )
        _refuse_other_encodings(where, head)
    return _by_name(ext), compression


def _by_name(ext: str) -> str:
    """The format of a file that content cannot tell from text, by its suffix (before any compression's)."""
    if ext in JSONL_SUFFIXES:
        return "jsonl"
    return "csv" if ext in CSV_DELIMITERS else "text"


def _refuse_other_encodings(where: str, head: bytes) -> None:
    """Text that is not UTF-8 (a UTF-16 or UTF-32 byte-order mark, or every other byte NUL) is an error that
    says so, never ids of garbage."""
    if not head.startswith(_OTHER_MARKS) and b"\x00" not in head:
        return  # the usual case, told in two tests: no byte-order mark of another encoding, no NUL at all
    for mark, encoding in _OTHER_ENCODING_MARKS:
        if head.startswith(mark):
            raise InputError(
                f"{where}: is {encoding} text (it begins with a {encoding} byte-order mark); bpe-lm reads UTF-8: "
                f"convert it first, e.g. `iconv -f {encoding.rstrip('LBE')} -t UTF-8 FILE > FILE.utf8`"
            )
    if _wide_text_without_mark(head):
        raise InputError(
            f"{where}: is not UTF-8 but UTF-16 or UTF-32 text without a byte-order mark (every other byte of "
            "its start is NUL); convert it first, e.g. `iconv -f UTF-16LE -t UTF-8 FILE > FILE.utf8`"
        )


def _wide_text_without_mark(head: bytes) -> bool:
    """UTF-16 or UTF-32 text of mostly Latin letters: the bytes at one parity of position (nearly) all NUL,
    those at the other mostly not (UTF-16: none NUL; UTF-32: half). Text has no run of NULs at every other
    byte; a file of nothing but NULs, at both parities, is left to be read (as text)."""
    if len(head) < 8:
        return False
    share = [part.count(0) / len(part) for part in (head[0::2], head[1::2])]
    return max(share) >= 0.9 and min(share) <= 0.6


def _first_non_space(path: Path) -> bytes:
    # Small reads: a corpus of many small shards is detected file by file before any encoding, and
    # inflating a megabyte of each only to see its first byte cost about half a millisecond a file.
    with open_decompressed(path, buffer_size=1 << 12) as f:
        start = True
        while block := f.read(1 << 12):
            if start:  # a byte-order mark before the first line is no part of it (as the core reads it)
                block, start = block.removeprefix(UTF8_BOM), False
            stripped = block.lstrip()
            if stripped:
                return stripped[:1]
    return b""


@contextmanager
def staged(inp: Input) -> Iterator[Input]:
    """A remote input as a local one: copied (streamed, in blocks) into a temporary directory for as long as
    the block runs, then removed. A local input as it is."""
    if inp.url is None:
        yield inp
        return
    fs, path = _fsspec(inp.url)
    with tempfile.TemporaryDirectory(prefix="bpe-lm-input-") as tmp:
        local = Path(tmp) / (inp.path.name or "input")
        try:
            fs.get_file(path, os.fspath(local))
        except OSError as e:
            raise InputError(f"{inp.url}: cannot be read ({e})") from None
        try:
            yield detect(local)
        except ValueError as e:  # the core's and the readers' errors name the copy: name the URL instead
            raise type(e)(str(e).replace(os.fspath(local), inp.url)) from None


def resolve(patterns: Iterable[str | os.PathLike[str]]) -> list[Input]:
    """Globs expanded and each input's format detected, before any heavy work."""
    return [detect(p) for p in expand_inputs(patterns)]


class _CoreRaw(io.RawIOBase):
    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._reader.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def open_decompressed(path: str | os.PathLike[str], buffer_size: int = 1 << 20) -> io.BufferedReader:
    """A binary file object over a file's bytes, decompressed when it is gzip or zstd (by content), through
    the same reader the core uses for every input."""
    reader = _core.DecompressedReader(os.fspath(path), buffer_size)  # the core's buffers at most its usual
    return io.BufferedReader(_CoreRaw(reader), buffer_size=buffer_size)


ERRORS_HINT: str = _core.ERRORS_HINT
"""What a message about text that is not UTF-8 adds where the command offers a way out (the core's words)."""


def _record_error(path: Path, position: str, what: str) -> RecordError:
    """A record that cannot be read as a document, worded as the core words it: `FILE: POSITION: WHAT`."""
    return RecordError(f"{path}: {position}: {what}", path=str(path), position=position)


def decoded_blocks(path: str | os.PathLike[str], errors: str = "strict", block_bytes: int = 1 << 20) -> Iterator[str]:
    """The text of a file (plain, gzip or zstd) in blocks of about `block_bytes`. Bytes that are not UTF-8
    stop it with a TextEncodingError naming the file and their offset in the (decompressed) text, or with
    `errors="replace"` read as U+FFFD, as the core reads them."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    offset = 0  # bytes given to the decoder so far
    with open_decompressed(path) as f:
        while True:
            raw = f.read(block_bytes)
            held = len(decoder.getstate()[0])  # the end of a character the last block left undecoded
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                at = offset - held + e.start
                raise TextEncodingError(
                    f"{path}: invalid UTF-8 at byte offset {at}; {ERRORS_HINT}", path=os.fspath(path), offset=at
                ) from None
            offset += len(raw)
            if text:
                yield text
            if not raw:
                return


# ----------------------------------------------------------------------------------------------------
# Parquet (through the core), Arrow and CSV (through pyarrow)


def _pyarrow(what: str = "Arrow") -> Any:
    try:
        import pyarrow
        import pyarrow.csv  # noqa: F401
        import pyarrow.ipc  # noqa: F401
    except ImportError:
        raise InputError(f"reading {what} files needs pyarrow: pip install 'bpe-lm[parquet]'") from None
    return pyarrow


# Bytes of a CSV file parsed at a time. pyarrow's reader holds a few blocks and its memory pool keeps what
# they took: 400 MB of documents as CSV, 2 threads, peaked at 363 MB of RSS with 4 MB blocks, 259 MB with 2 MB,
# 204 MB with 1 MB (1.90, 1.58 and 1.49 s). A value longer than a block is no error: the file is read on from
# where it stood with blocks four times the size (`_csv_batches`), up to CSV_MAX_BLOCK_BYTES.
CSV_BLOCK_BYTES = 1 << 20
CSV_MAX_BLOCK_BYTES = 1 << 30


def _csv_reader(path: Path, compression: str, column: str | None, block: int = CSV_BLOCK_BYTES, skip: int = 0) -> Any:
    """pyarrow's streaming reader of a CSV file (its header row names the columns) in blocks of `block`
    bytes, from its row `skip` on, of the column `column` only (read as bytes, so that the core checks, or with
    `errors="replace"` mends, its UTF-8 per row), or of all columns when None. Quoted values may hold
    delimiters and newlines."""
    pa = _pyarrow("CSV")
    stream = pa.input_stream(os.fspath(path), compression=None if compression == "none" else compression)
    delimiter = CSV_DELIMITERS[_suffixes(path.name)[1]]
    convert = (
        pa.csv.ConvertOptions(include_columns=[column], column_types={column: pa.binary()})
        if column is not None
        else pa.csv.ConvertOptions()
    )
    return pa.csv.open_csv(
        stream,
        read_options=pa.csv.ReadOptions(block_size=block, skip_rows_after_names=skip),
        parse_options=pa.csv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=convert,
    )


def _longer_than_a_block(e: Exception, block: int) -> bool:
    """pyarrow's error for a value that does not fit in one block, where a larger block is still allowed."""
    return "straddl" in str(e) and block < CSV_MAX_BLOCK_BYTES


def _csv_schema(path: Path, compression: str) -> Any:
    block = CSV_BLOCK_BYTES
    while True:
        try:
            return _csv_reader(path, compression, None, block).schema
        except Exception as e:
            if not _longer_than_a_block(e, block):
                raise
            block *= 4


def _csv_batches(path: Path, compression: str, text_field: str) -> Iterator[Any]:
    block, rows = CSV_BLOCK_BYTES, 0  # rows: those handed on whole, where a larger block starts again
    ramp = _Ramp()
    while True:
        try:
            for batch in _csv_reader(path, compression, text_field, block, rows):
                yield from ramp.sliced(batch.column(0))
                rows += batch.num_rows
            return
        except InputError:
            raise
        except Exception as e:
            if _longer_than_a_block(e, block):
                block *= 4
                continue
            raise InputError(f"{path}: not a readable CSV file ({type(e).__name__}: {e})") from None


def _holds_text(pa: Any, kind: Any) -> bool:
    """Whether an Arrow column of type `kind` is read as text: strings, or binary (each value checked to be
    UTF-8), as the parquet reader takes them."""
    t = pa.types
    kinds = (t.is_string, t.is_large_string, t.is_string_view, t.is_binary, t.is_large_binary, t.is_binary_view)
    return any(is_kind(kind) for is_kind in kinds)


def _check_column(schema: Any, text_field: str, where: Path) -> None:
    pa = _pyarrow()
    if schema.get_field_index(text_field) < 0:
        names = ", ".join(schema.names[:20])
        raise InputError(f"{where}: has no column {text_field!r} (its columns: {names}); choose one with --text-field")
    kind = schema.field(text_field).type
    if not _holds_text(pa, kind):
        raise InputError(f"{where}: column {text_field!r} holds {kind}, not strings")


def check_columns(inp: Input, text_field: str) -> None:
    """Before heavy work: every file of a parquet, Arrow or CSV input opens and has a string column
    `text_field` (and for Arrow and CSV, pyarrow is installed)."""
    for f in inp.files:
        if inp.format == "parquet":
            _core.check_parquet_column(os.fspath(f), text_field)
            continue
        try:
            schema = _csv_schema(f, inp.compression) if inp.format == "csv" else _open_arrow(f)[0]
        except InputError:
            raise
        except Exception as e:
            kind = "CSV" if inp.format == "csv" else "Arrow"
            raise InputError(f"{f}: not a readable {kind} file ({type(e).__name__}: {e})") from None
        if inp.format == "csv" and schema.get_field_index(text_field) >= 0:
            continue  # any column of a CSV file is read as text
        _check_column(schema, text_field, f)


def parquet_row_groups(path: Path) -> list[int]:
    """Bytes of each row group of a parquet file (compressed, as stored)."""
    return list(_core.parquet_row_groups(os.fspath(path)))


def _open_arrow(path: Path) -> tuple[Any, Iterator[Any]]:
    """(schema, record batches) of an Arrow IPC file or stream (`datasets` writes streams), memory-mapped:
    the OS pages the file in and out, so memory stays bounded."""
    pa = _pyarrow()
    source = pa.memory_map(os.fspath(path))
    try:
        reader = pa.ipc.open_file(source)
        return reader.schema, (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        source.seek(0)
        stream = pa.ipc.open_stream(source)
        return stream.schema, iter(stream)


def _arrow_batches(path: Path, text_field: str) -> Iterator[Any]:
    try:
        schema, batches = _open_arrow(path)
        _check_column(schema, text_field, path)
        ramp = _Ramp()
        for batch in batches:
            yield from ramp.sliced(batch.column(batch.schema.get_field_index(text_field)))
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: not a readable Arrow file ({type(e).__name__}: {e})") from None


def arrow_buffers(array: Any) -> tuple[bytes, bytes, int, int]:
    """A string array as the core takes documents, without numpy: (UTF-8 bytes of all values, Arrow's
    len + 1 little-endian offsets, their width in bytes, number of nulls dropped)."""
    pa = _pyarrow()
    nulls = array.null_count
    if nulls:
        array = array.drop_null()
    if pa.types.is_string_view(array.type):
        array = array.cast(pa.large_string())
    if pa.types.is_binary_view(array.type):
        array = array.cast(pa.large_binary())
    width = 8 if pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type) else 4
    _, offsets_buf, data_buf = array.buffers()
    raw = memoryview(offsets_buf)[array.offset * width : (array.offset + len(array) + 1) * width]
    start = int.from_bytes(raw[:width], "little", signed=True)
    end = int.from_bytes(raw[-width:], "little", signed=True)
    data = data_buf[start:end].to_pybytes() if data_buf is not None and end > start else b""
    return data, raw.tobytes(), width, nulls


def record_batches(unit: Unit, text_field: str) -> Iterator[Any]:
    """The text column of an Arrow or CSV unit, in batches (lists of string or binary arrays) of about
    ARROW_BATCH_BYTES of text."""
    files = unit.files if unit.files is not None else unit.input.files

    def chained() -> Iterator[Any]:
        for f in files:
            if unit.input.format == "csv":
                yield from _csv_batches(f, unit.input.compression, text_field)
            else:
                yield from _arrow_batches(f, text_field)

    return chained()


@contextmanager
def prefetch(items: Iterator[Any], depth: int = 2) -> Iterator[Iterator[Any]]:
    """`items`, read on a thread of its own `depth` items ahead (pyarrow decodes without the GIL, so reading
    the next batch overlaps encoding this one). Exceptions reach the consumer. Leaving the block, however
    it is left, stops the reader and waits for it: a reader left inside pyarrow while the interpreter shuts
    down aborts the process ("terminate called without an active exception") after an error was printed."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(kind: str, value: Any) -> bool:
        """Puts (kind, value) on the queue unless the consumer left first; whether it was put."""
        while not stop.is_set():
            try:
                q.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not offer("item", item):
                    return
            offer("end", None)
        except BaseException as e:  # handed to the consumer
            offer("error", e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # the thread that ran a generator closes it: its files close here, not at exit

    def received() -> Iterator[Any]:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    thread = threading.Thread(target=run, daemon=True, name="bpe-lm-reader")
    thread.start()
    try:
        yield received()
    finally:
        stop.set()
        thread.join()


# ----------------------------------------------------------------------------------------------------
# Units of work (shards, Ray tasks)


def units_of(inp: Input, parts: int, separators: Sequence[bytes]) -> list[Unit]:
    """An input split into at most `parts` units of about equal size where its format allows: plain text at
    separators, plain JSON lines at line ends, parquet by row group, Arrow directories by file; a
    compressed file is one unit (a compressed stream is read from its start), and so is a remote file (it
    is read through a local copy)."""
    size = inp.disk_bytes()
    if parts <= 1 or inp.url is not None:
        return [Unit(inp, size=size)]
    if inp.format == "parquet":
        groups = parquet_row_groups(inp.path)
        return [
            Unit(inp, row_groups=tuple(idx), size=sum(groups[i] for i in idx))
            for idx in _balanced(list(range(len(groups))), groups, parts)
        ]
    if inp.format == "arrow":
        sizes = [f.stat().st_size for f in inp.files]
        return [
            Unit(inp, files=tuple(inp.files[i] for i in idx), size=sum(sizes[i] for i in idx))
            for idx in _balanced(list(range(len(inp.files))), sizes, parts)
        ]
    if inp.compression != "none" or inp.format == "csv":  # a CSV value may hold newlines: no cut is safe
        return [Unit(inp, size=size)]
    if inp.format == "jsonl":
        separators = [b"\n"]
    elif not separators:
        return [Unit(inp, size=size)]
    from bpe_lm.shards import cut_points

    cuts = cut_points(inp.path, parts, separators)
    return [Unit(inp, byte_range=(a, b), size=b - a) for a, b in zip(cuts, cuts[1:]) if b > a]


def _balanced(items: list[int], sizes: list[int], parts: int) -> list[list[int]]:
    """Consecutive groups of `items` (at most `parts`), cut where the running size crosses each 1/parts."""
    total = sum(sizes) or 1
    groups: list[list[int]] = [[] for _ in range(parts)]
    running = 0
    for i, s in zip(items, sizes):
        groups[min(parts - 1, running * parts // total)].append(i)
        running += s
    return [g for g in groups if g]


def plan_units(inputs: Sequence[Input], parts: int, separators: Sequence[bytes]) -> list[Unit]:
    """All inputs as units, in input order, each input split in proportion to its share of the bytes, so
    there are about `parts` units in all."""
    total = sum(i.disk_bytes() for i in inputs) or 1
    out: list[Unit] = []
    for inp in inputs:
        share = max(1, round(parts * inp.disk_bytes() / total))
        out.extend(units_of(inp, share, separators))
    return out


def shard_units(units: Sequence[Unit], index: int, count: int) -> list[Unit]:
    """Shard `index` of `count`: a run of consecutive units of about 1/count of the bytes (so the shards'
    outputs, concatenated in order, are the whole)."""
    groups = _balanced(list(range(len(units))), [u.size for u in units], count)
    groups += [[] for _ in range(count - len(groups))]
    return [units[i] for i in groups[index]]


def with_range(unit: Unit, byte_range: tuple[int, int]) -> Unit:
    return replace(unit, byte_range=byte_range, size=byte_range[1] - byte_range[0])


# ----------------------------------------------------------------------------------------------------
# Documents as Python strings (sampling for statistics, the demo): small amounts of text


def iter_documents(
    inp: Input,
    text_field: str = DEFAULT_TEXT_FIELD,
    separator: str = END_OF_TEXT,
    max_chars: int | None = None,
    errors: str = "strict",
) -> Iterator[str]:
    """The documents of an input as strings, streamed: records' texts (null and empty ones skipped), or
    text split on `separator` (stripped of surrounding newlines, empty ones skipped). With `max_chars`,
    each document is cut to its first `max_chars` characters, and a longer one is never held whole.
    `errors="replace"` reads text that is not UTF-8 (and, in JSON, escapes of half a surrogate pair) as
    U+FFFD, as the core does when it encodes; strict, such text stops it with the error the core raises
    (TextEncodingError for a text file, RecordError for a record), naming the file and the place."""
    if inp.url is not None:
        with staged(inp) as local:
            yield from iter_documents(local, text_field, separator, max_chars, errors)
        return
    cap = max_chars if max_chars is not None else -1
    replace = errors == "replace"
    if inp.format == "text":
        # The document being read, in pieces: a separator is looked for in each new block only (and
        # where it meets the last), so a long document costs linear time, not a re-scan per block.
        pending: list[str] = []
        held = 0  # characters in `pending`
        tail = ""  # the last len(separator) - 1 characters read, where a separator may begin
        keep = len(separator) - 1
        for block in decoded_blocks(inp.path, errors):
            if separator not in tail + block:
                if cap < 0 or held < cap + keep:  # past the cap, only the tail is kept
                    pending.append(block)
                    held += len(block)
                tail = (tail + block)[-keep:] if keep else ""
                continue
            parts = ("".join(pending) + (block if cap < 0 or held < cap + keep else tail + block)).split(separator)
            last = parts.pop()
            pending, held = [last], len(last)
            tail = last[-keep:] if keep else ""
            yield from (d.strip("\n")[: cap if cap >= 0 else None] for d in parts if d.strip())
        rest = "".join(pending)
        if rest.strip():
            yield rest.strip("\n")[: cap if cap >= 0 else None]
    elif inp.format == "jsonl":
        with open_decompressed(inp.path) as f:
            for n, line in enumerate(f, 1):
                if n == 1:  # a byte-order mark is no part of the first line (as the core reads it)
                    line = line.removeprefix(UTF8_BOM)
                if not line.strip():
                    continue
                try:
                    text = line.decode("utf-8", errors)
                except UnicodeDecodeError as e:
                    raise _record_error(
                        inp.path, f"line {n}", f"is not valid UTF-8 (at byte {e.start} of the line); {ERRORS_HINT}"
                    ) from None
                try:
                    record = json.loads(text)
                except ValueError as e:
                    raise _record_error(inp.path, f"line {n}", f"is not valid JSON ({e})") from None
                if not isinstance(record, dict):
                    raise _record_error(inp.path, f"line {n}", "is not a JSON object")
                if text_field not in record:
                    raise _record_error(inp.path, f"line {n}", f"has no field {text_field!r}")
                value = record[text_field]
                if value is None or value == "":
                    continue
                if not isinstance(value, str):
                    raise _record_error(
                        inp.path, f"line {n}", f"field {text_field!r} is {type(value).__name__}, not a string"
                    )
                if not value.isascii() and _SURROGATE.search(value):
                    if replace:
                        value = _SURROGATE.sub("\ufffd", value)
                    else:
                        raise _record_error(
                            inp.path,
                            f"line {n}",
                            f"field {text_field!r} holds half a UTF-16 surrogate pair (an escape such as \\ud800), "
                            f"which is no character; {ERRORS_HINT}",
                        )
                yield value[: cap if cap >= 0 else None]
    elif inp.format == "parquet":
        for texts in _core.ParquetTexts(os.fspath(inp.path), text_field, replace):
            yield from (t[: cap if cap >= 0 else None] for t in texts)
    else:
        row = 0
        for batch in record_batches(Unit(inp), text_field):
            for column in batch:
                for value in column.to_pylist():
                    if isinstance(value, bytes):  # a binary column: its values must be UTF-8 text
                        try:
                            value = value.decode("utf-8", errors)
                        except UnicodeDecodeError as e:
                            raise _record_error(
                                inp.path,
                                f"row {row}",
                                f"is not valid UTF-8 (at byte {e.start} of the text); {ERRORS_HINT}",
                            ) from None
                    row += 1
                    if value:
                        yield value[: cap if cap >= 0 else None]
