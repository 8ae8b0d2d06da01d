"""Type stubs for the Rust extension (rust/py.rs). Heavy calls release the GIL."""

from collections.abc import Callable, Sequence
from os import PathLike
from typing import Any

GPT2_PATTERN: str
NPY_HEADER_BYTES: int
MAX_THREADS_PER_CORE: int
SMALL_INPUT_BYTES: int
COMPRESSION_MAGIC_BYTES: int
ERRORS_HINT: str

def is_small_input(path: str | PathLike[str]) -> bool: ...
def compression_of(head: bytes) -> str: ...

ProgressCallback = Callable[[str, int, int], object]
# ("jsonl", path, byte range or None, None) or ("parquet", path, None, row groups or None).
RecordInput = tuple[str, str | PathLike[str], tuple[int, int] | None, Sequence[int] | None]

def pretokenize(text: str, pattern: str | None = None, reference: bool = False) -> list[str]: ...
def check_vocab_size(vocab_size: int, num_special_tokens: int) -> None: ...
def reads_str_in_place(text: object, in_place: bool | None = None) -> bool: ...
def train_from_count_files(
    paths: Sequence[str | PathLike[str]],
    vocab_size: int,
    progress: ProgressCallback | None = None,
) -> tuple[list[bytes], list[tuple[int, int]], list[str], str, int]: ...
def train_from_counts(
    counts: Sequence[tuple[bytes, int]],
    vocab_size: int,
    special_tokens: Sequence[str],
    progress: ProgressCallback | None = None,
) -> tuple[list[bytes], list[tuple[int, int]]]: ...

class IdArray:
    """Ids made by the core, for `numpy.asarray` (read in place through `__array_interface__`)."""

    @property
    def __array_interface__(self) -> dict[str, Any]: ...
    def __len__(self) -> int: ...

class Encoder:
    def __init__(
        self,
        vocab: Sequence[bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str],
        pattern: str | None = None,
    ) -> None: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def special_ids(self) -> list[int]: ...
    @property
    def gpt2_scanner(self) -> bool: ...
    def encode(self, text: str | bytes | bytearray, in_place: bool | None = None) -> list[int]: ...
    def encode_ordinary(self, text: str | bytes | bytearray, in_place: bool | None = None) -> list[int]: ...
    def encode_batch(self, texts: list[str | bytes | bytearray], num_threads: int | None = None) -> list[list[int]]: ...
    def encode_to_buffer(
        self, text: str | bytes | bytearray, width: int, num_threads: int | None = None, in_place: bool | None = None
    ) -> IdArray: ...
    def encode_batch_to_buffers(
        self, texts: list[str | bytes | bytearray], width: int, num_threads: int | None = None
    ) -> tuple[IdArray, IdArray]: ...
    def safe_prefix_bytes(self, text: str) -> int: ...
    def decode_bytes(self, ids: Sequence[int]) -> bytes: ...
    def decode_buffer(self, buffer: bytes, width: int) -> bytes: ...
    def default_width(self) -> int: ...
    def check_width(self, width: int) -> None: ...
    def encode_text_into(
        self,
        inputs: Sequence[tuple[str | PathLike[str], tuple[int, int] | None]],
        writer: TokenWriter,
        num_threads: int | None = None,
        errors_replace: bool = False,
        progress: ProgressCallback | None = None,
    ) -> list[tuple[int, int]]: ...
    def encode_texts_into(
        self,
        inputs: list[str | PathLike[str]],
        writer: TokenWriter,
        num_threads: int | None = None,
        errors_replace: bool = False,
        progress: ProgressCallback | None = None,
    ) -> list[tuple[int, int]]: ...
    def encode_records_into(
        self,
        inputs: Sequence[RecordInput],
        field: str,
        end_id: int | None,
        writer: TokenWriter,
        num_threads: int | None = None,
        progress: ProgressCallback | None = None,
        errors_replace: bool = False,
    ) -> list[tuple[int, int, int, int]]: ...
    def encode_documents_into(
        self,
        columns: Sequence[tuple[bytes, bytes, int]],
        end_id: int | None,
        writer: TokenWriter,
        num_threads: int | None = None,
        row0: int = 0,
        path: str | PathLike[str] | None = None,
        errors_replace: bool = False,
    ) -> tuple[int, int, int, int]: ...

class TokenWriter:
    def __init__(self, path: str | PathLike[str], width: int) -> None: ...
    @staticmethod
    def per_input(paths: Sequence[str | PathLike[str]], width: int) -> TokenWriter: ...
    def append(self, ids: bytes) -> None: ...
    @property
    def count(self) -> int: ...
    def finish(self) -> int: ...

class PretokenCounter:
    def __init__(self, special_tokens: Sequence[str], pattern: str | None = None) -> None: ...
    @property
    def distinct(self) -> int: ...
    def add_text(
        self,
        paths: Sequence[str | PathLike[str]],
        ranges: Sequence[tuple[int, int] | None] | None = None,
        num_threads: int | None = None,
        errors_replace: bool = False,
        progress: ProgressCallback | None = None,
    ) -> int: ...
    def add_records(
        self,
        inputs: Sequence[RecordInput],
        field: str,
        num_threads: int | None = None,
        progress: ProgressCallback | None = None,
        errors_replace: bool = False,
    ) -> list[tuple[int, int, int]]: ...
    def add_documents(
        self,
        columns: Sequence[tuple[bytes, bytes, int]],
        num_threads: int | None = None,
        row0: int = 0,
        path: str | PathLike[str] | None = None,
        errors_replace: bool = False,
    ) -> tuple[int, int, int]: ...
    def add_count_file(self, path: str | PathLike[str]) -> None: ...
    def write(self, path: str | PathLike[str]) -> int: ...
    def train(
        self, vocab_size: int, progress: ProgressCallback | None = None
    ) -> tuple[list[bytes], list[tuple[int, int]]]: ...

class DecompressedReader:
    def __init__(self, path: str | PathLike[str], buffer_bytes: int | None = None) -> None: ...
    def read(self, size: int) -> bytes: ...

class ParquetTexts:
    def __init__(self, path: str | PathLike[str], field: str, errors_replace: bool = False) -> None: ...
    def __iter__(self) -> ParquetTexts: ...
    def __next__(self) -> list[str]: ...

def parquet_row_groups(path: str | PathLike[str]) -> list[int]: ...
def check_parquet_column(path: str | PathLike[str], field: str) -> None: ...
