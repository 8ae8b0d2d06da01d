//! The only PyO3 file: converts Python inputs, releases the GIL for every heavy call, and maps the
//! core's `Error` to Python exceptions in one place. Policy (defaults, file formats, messages) lives in
//! the Python package.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::{
    PyFileNotFoundError, PyIsADirectoryError, PyKeyboardInterrupt, PyOSError, PyPermissionError, PyRuntimeError,
    PyTypeError, PyUnicodeError, PyValueError,
};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::pybacked::{PyBackedBytes, PyBackedStr};
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::batch_feed::FedText;
use crate::code_units::{CodeUnits, UNITS_AT_ONCE};
use crate::counts;
use crate::encode::{BatchIds, Encoder as CoreEncoder, OutputId, RunIds, PARALLEL_CHUNK_BYTES};
use crate::error::{panic_message, Error};
use crate::npy::{Dtype, IdOutputs, IdWriter, PerInputFiles};
use crate::parquet_input::{parquet_input, ParquetFile};
use crate::pretokenize::{Pretokenizer, GPT2_PATTERN};
use crate::progress::{NoProgress, Phase, Progress};
use crate::records::{self, RecordChunk, RecordSource, RecordSpec};
use crate::specials::SpecialMatcher;
use crate::stream::is_small_input;
use crate::stream::TextSource;
use crate::threads;
use crate::train::{self, PretokenCounts};

fn to_pyerr(err: Error) -> PyErr {
    let msg = err.to_string();
    match err {
        Error::Io { path, source } => match source.raw_os_error() {
            // OSError(errno, strerror, filename) picks the matching subclass (FileNotFoundError, ...).
            Some(code) => {
                let strerror = std::io::Error::from_raw_os_error(code).to_string();
                let strerror = strerror.split(" (os error").next().unwrap_or(&strerror).to_string();
                let filename = path.map(|p| p.display().to_string());
                PyOSError::new_err((code, strerror, filename))
            }
            None => match source.kind() {
                std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
                std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
                std::io::ErrorKind::IsADirectory => PyIsADirectoryError::new_err(msg),
                _ => PyOSError::new_err(msg),
            },
        },
        Error::InvalidUtf8 { path, item, offset } => typed_error("TextEncodingError", msg, |d| {
            d.set_item("path", path.map(|p| p.display().to_string()))?;
            d.set_item("item", item)?;
            d.set_item("offset", offset)
        }),
        Error::InvalidRecord { path, position, .. } => typed_error("RecordError", msg, |d| {
            d.set_item("path", path.display().to_string())?;
            d.set_item("position", position)
        }),
        Error::InvalidInput { path, .. } => {
            typed_error("InputError", msg, |d| d.set_item("path", path.display().to_string()))
        }
        Error::InvalidArgument(_) => typed_error("ArgumentError", msg, |_| Ok(())),
        Error::Vocabulary { merge_rank, .. } => {
            typed_error("VocabularyError", msg, |d| d.set_item("merge_rank", merge_rank))
        }
        Error::Pattern(_) => typed_error("PatternError", msg, |_| Ok(())),
        Error::UnknownTokenId(id) => typed_error("UnknownTokenError", msg, |d| d.set_item("token_id", id)),
        Error::Interrupted => PyKeyboardInterrupt::new_err(msg),
        Error::NotUnicode { .. } => PyUnicodeError::new_err(msg),
    }
}

/// An instance of `bpe_lm.errors.<class_name>` (each a `BpeLmError` and a `ValueError`) made from `message`
/// and the keyword arguments `details` puts in a dict (the class keeps them as attributes). The classes live
/// in Python, so that the package's own errors share their base; taking the interpreter here is safe from
/// inside `detach` as well.
fn typed_error(class_name: &str, message: String, details: impl FnOnce(&Bound<'_, PyDict>) -> PyResult<()>) -> PyErr {
    Python::attach(|py| {
        let kwargs = PyDict::new(py);
        let made = details(&kwargs).and_then(|()| {
            py.import("bpe_lm.errors")?
                .getattr(class_name)?
                .call((message.as_str(),), Some(&kwargs))
        });
        match made {
            Ok(instance) => PyErr::from_value(instance),
            Err(failure) => failure, // the errors module itself could not be used: say why, not something else
        }
    })
}

/// Runs core work and turns a panic into a Python RuntimeError instead of letting it cross over.
fn guarded<T>(work: impl FnOnce() -> crate::Result<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(result) => result.map_err(to_pyerr),
        Err(panic) => Err(PyRuntimeError::new_err(format!(
            "bpe_lm internal error: {}",
            panic_message(&*panic)
        ))),
    }
}

/// Progress shared between the worker thread (writes) and the Python thread (reads, calls back).
#[derive(Default)]
struct SharedProgress {
    phase: AtomicU8,
    done: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
}

const PHASES: [Phase; 3] = [Phase::Read, Phase::Merge, Phase::Encode];

impl Progress for SharedProgress {
    fn update(&self, phase: Phase, done: u64, total: u64) -> bool {
        self.phase.store(
            PHASES.iter().position(|&p| p == phase).unwrap_or(0) as u8,
            Ordering::Relaxed,
        );
        self.total.store(total, Ordering::Relaxed);
        self.done.store(done, Ordering::Relaxed);
        !self.cancelled.load(Ordering::Relaxed)
    }
}

/// Runs long work on a worker thread while the calling (Python) thread waits without the GIL, wakes
/// ten times a second to check for Ctrl-C and to call `callback(phase, done, total)`. A signal or a
/// callback error cancels the work and is raised once it has stopped.
fn run_long<T: Send>(
    py: Python<'_>,
    callback: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(&dyn Progress) -> crate::Result<T> + Send,
) -> PyResult<T> {
    let state = SharedProgress::default();
    let mut pending: Option<PyErr> = None;
    let result = std::thread::scope(|scope| {
        let (tx, mut rx) = std::sync::mpsc::channel();
        let state_ref = &state;
        scope.spawn(move || {
            let _ = tx.send(guarded(|| work(state_ref)));
        });
        loop {
            // The receiver travels into the GIL-free wait and back (it is Send but not Sync).
            let (back, received) = py.detach(move || {
                let r = rx.recv_timeout(Duration::from_millis(100));
                (rx, r)
            });
            rx = back;
            match received {
                Ok(result) => return result,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(PyRuntimeError::new_err("bpe_lm internal error: worker vanished"))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if pending.is_some() {
                continue; // cancelled: wait for the worker to stop
            }
            let outcome = py.check_signals().and_then(|()| match callback {
                Some(cb) => {
                    let phase = PHASES[state.phase.load(Ordering::Relaxed) as usize].name();
                    let done = state.done.load(Ordering::Relaxed);
                    let total = state.total.load(Ordering::Relaxed);
                    cb.call1((phase, done, total)).map(|_| ())
                }
                None => Ok(()),
            });
            if let Err(e) = outcome {
                state.cancelled.store(true, Ordering::Relaxed);
                pending = Some(e);
            }
        }
    });
    match pending {
        Some(err) => Err(err),
        None => {
            if let Some(cb) = callback {
                let phase = PHASES[state.phase.load(Ordering::Relaxed) as usize].name();
                cb.call1((
                    phase,
                    state.done.load(Ordering::Relaxed),
                    state.total.load(Ordering::Relaxed),
                ))?;
            }
            result
        }
    }
}

/// `run_long`, except for a small input (`stream::is_small_input`), which runs right here with the GIL
/// released: it takes a few milliseconds at most, so Ctrl-C waits no longer than that, while a helper
/// thread and the hand-offs to and from it cost more than the work (a file of 1 KB: about 120 µs a call).
/// Its progress is not reported (the caller knows when it is done).
fn run_sized<T: Send>(
    py: Python<'_>,
    callback: Option<&Bound<'_, PyAny>>,
    small: bool,
    work: impl FnOnce(&dyn Progress) -> crate::Result<T> + Send,
) -> PyResult<T> {
    if small {
        py.detach(|| guarded(|| work(&NoProgress)))
    } else {
        run_long(py, callback, work)
    }
}

/// A record input as Python gives it: (kind, path, byte range, row groups) (see `record_sources`).
type RecordInputArg = (String, PathBuf, Option<(u64, u64)>, Option<Vec<usize>>);

/// The record inputs: ("jsonl", path, byte range or None, None) or ("parquet", path, None, row groups or
/// None).
fn record_sources(inputs: Vec<RecordInputArg>) -> PyResult<Vec<RecordSource>> {
    inputs
        .into_iter()
        .map(|(kind, path, range, row_groups)| match kind.as_str() {
            "jsonl" => Ok(RecordSource::Jsonl(TextSource { path, range })),
            "parquet" => Ok(RecordSource::Parquet { path, row_groups }),
            other => Err(PyValueError::new_err(format!(
                "a record input is 'jsonl' or 'parquet', not {other:?}"
            ))),
        })
        .collect()
}

fn bpe_to_py<'py>(py: Python<'py>, bpe: train::Bpe) -> (Vec<Bound<'py, PyBytes>>, Vec<(u32, u32)>) {
    (bpe.vocab.iter().map(|t| PyBytes::new(py, t)).collect(), bpe.merges)
}

/// Whether the file at `path` is a small input (`stream::is_small_input`): a regular file of at most
/// SMALL_INPUT_BYTES. The one rule, for Python's choice of the files it encodes many in one call.
#[pyfunction(name = "is_small_input")]
fn py_is_small_input(path: PathBuf) -> bool {
    is_small_input(&path, None)
}

/// How a file whose first bytes are `head` is compressed: "gzip", "zstd" or "none" (`stream::Compression`,
/// the one rule, for Python's classification of its inputs).
#[pyfunction]
fn compression_of(head: &[u8]) -> &'static str {
    crate::stream::Compression::of(head).name()
}

/// Pre-tokens of `text` (no special-token handling). `reference=True` runs fancy-regex even for the
/// GPT-2 pattern, to check the scanner against it.
#[pyfunction]
#[pyo3(signature = (text, pattern=None, reference=false))]
fn pretokenize(py: Python<'_>, text: &str, pattern: Option<&str>, reference: bool) -> PyResult<Vec<String>> {
    py.detach(|| {
        guarded(|| {
            let p = match (reference, pattern) {
                (true, p) => Pretokenizer::regex(p.unwrap_or(GPT2_PATTERN))?,
                (false, p) => Pretokenizer::new(p)?,
            };
            Ok(p.pieces(text)?.into_iter().map(String::from).collect())
        })
    })
}

/// Trains from pre-token counts, e.g. merged from shards: same result as `train_bpe` on the text.
#[pyfunction]
#[pyo3(signature = (counts, vocab_size, special_tokens, progress=None))]
#[allow(clippy::type_complexity)]
fn train_from_counts<'py>(
    py: Python<'py>,
    counts: Vec<(Bound<'py, PyBytes>, u64)>,
    vocab_size: usize,
    special_tokens: Vec<String>,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<(Vec<Bound<'py, PyBytes>>, Vec<(u32, u32)>)> {
    let mut table = PretokenCounts::default();
    for (k, v) in &counts {
        let count = table.entry(k.as_bytes().into()).or_insert(0);
        *count = count.checked_add(*v).ok_or_else(|| {
            PyValueError::new_err(format!(
                "count of pre-token {:?} overflows 64 bits when repeated entries are added",
                k.as_bytes()
            ))
        })?;
    }
    drop(counts);
    let bpe = run_long(py, progress.as_ref(), |p| {
        train::train_from_counts(table, vocab_size, &special_tokens, p)
    })?;
    Ok(bpe_to_py(py, bpe))
}

/// Raises ValueError when a vocabulary of `vocab_size` cannot hold the 256 bytes and the special tokens.
#[pyfunction]
fn check_vocab_size(vocab_size: usize, num_special_tokens: usize) -> PyResult<()> {
    guarded(|| train::check_vocab_size(vocab_size, num_special_tokens))
}

/// Sums count files (same special tokens and pattern) and trains on the sum: (vocab, merges, special
/// tokens, pattern, distinct pre-tokens).
#[pyfunction]
#[pyo3(signature = (paths, vocab_size, progress=None))]
#[allow(clippy::type_complexity)]
fn train_from_count_files<'py>(
    py: Python<'py>,
    paths: Vec<PathBuf>,
    vocab_size: usize,
    progress: Option<Bound<'py, PyAny>>,
) -> PyResult<(Vec<Bound<'py, PyBytes>>, Vec<(u32, u32)>, Vec<String>, String, usize)> {
    let (bpe, header, distinct) = run_long(py, progress.as_ref(), |p| {
        let (counts, header) = counts::merge_count_files(&paths)?;
        let distinct = counts.len();
        let names = || {
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        // The header's pattern goes into the tokenizer: one that would lose text is refused here already.
        Pretokenizer::new(Some(&header.pattern)).map_err(|e| Error::InvalidArgument(format!("{}: {e}", names())))?;
        train::check_vocab_size(vocab_size, header.special_tokens.len())?;
        // What is wrong now is in the files' counts (e.g. too large to add up): name the files.
        let bpe = train::train_from_counts(counts, vocab_size, &header.special_tokens, p).map_err(|e| match e {
            Error::InvalidArgument(msg) => Error::InvalidArgument(format!("{}: {msg}", names())),
            other => other,
        })?;
        Ok((bpe, header, distinct))
    })?;
    let (vocab, merges) = bpe_to_py(py, bpe);
    Ok((vocab, merges, header.special_tokens, header.pattern, distinct))
}

fn text_sources(paths: Vec<PathBuf>, ranges: Option<Vec<Option<(u64, u64)>>>) -> PyResult<Vec<TextSource>> {
    match ranges {
        None => Ok(paths.into_iter().map(TextSource::whole).collect()),
        Some(r) if r.len() == paths.len() => Ok(paths
            .into_iter()
            .zip(r)
            .map(|(path, range)| TextSource { path, range })
            .collect()),
        Some(_) => Err(PyValueError::new_err("ranges must have one entry per path")),
    }
}

fn dtype_of_width(width: usize) -> crate::Result<Dtype> {
    match width {
        2 => Ok(Dtype::U16),
        4 => Ok(Dtype::U32),
        _ => Err(Error::InvalidArgument(format!(
            "id width must be 2 or 4 bytes, not {width}"
        ))),
    }
}

fn dtype_of(width: usize) -> PyResult<Dtype> {
    dtype_of_width(width).map_err(to_pyerr)
}

/// A text to encode as the bindings take it: a str, or bytes (or a bytearray) of UTF-8, such as a file
/// read in binary mode. Bytes skip the UTF-8 form CPython makes of a str the first time one is asked of
/// it, about a third of a first call on text that is not all ASCII (a str of English books with curly
/// quotes holds two bytes a character): of the first `encode_to_numpy` of 20 MB of them, 37 ms of 131
/// (gigatoken's first `encode`: 49 of 138).
enum Text {
    Str(PyBackedStr),
    Bytes(PyBackedBytes),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Text {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        // A str that cannot be UTF-8 (a lone surrogate) raises CPython's own UnicodeEncodeError.
        if obj.is_instance_of::<PyString>() {
            return Ok(Text::Str(obj.extract()?));
        }
        obj.extract::<PyBackedBytes>().map(Text::Bytes).map_err(|_| {
            let kind = obj.get_type().name().map_or_else(|_| "?".into(), |n| n.to_string());
            PyTypeError::new_err(format!("text must be str or bytes, not {kind}"))
        })
    }
}

impl Text {
    /// The text, bytes checked to be UTF-8 (an error names the first byte that is not, and `item`, the
    /// text's index in a batch); for a call with the GIL released.
    fn utf8_at(&self, item: Option<usize>) -> Result<&str, Error> {
        match self {
            Text::Str(text) => Ok(text),
            Text::Bytes(bytes) => crate::arch::utf8_str(bytes).map_err(|valid| Error::InvalidUtf8 {
                path: None,
                item,
                offset: valid as u64,
            }),
        }
    }

    fn utf8(&self) -> Result<&str, Error> {
        self.utf8_at(None)
    }
}

impl FedText for Text {
    fn byte_len(&self) -> usize {
        match self {
            Text::Str(text) => text.len(),
            Text::Bytes(bytes) => bytes.len(),
        }
    }

    fn text(&self, index: usize) -> Result<&str, Error> {
        self.utf8_at(Some(index))
    }
}

/// A text argument of the one-text calls (`encode`, `encode_ordinary`, `encode_to_buffer`): a `Text`, or
/// a large str read in place as its code units (`StrUnits`), never made UTF-8 whole.
enum OneText {
    Text(Text),
    Units(StrUnits),
}

impl OneText {
    /// `obj` as a text to encode: a large str read in place where `in_place` says (`StrUnits::chosen`).
    fn of(obj: &Bound<'_, PyAny>, in_place: Option<bool>) -> PyResult<Self> {
        match StrUnits::chosen(obj, in_place) {
            Some(units) => Ok(OneText::Units(units)),
            None => obj.extract().map(OneText::Text),
        }
    }

    /// `encode_into` (`specials`) or `encode_ordinary_into` of the text; for a call with the GIL released.
    fn encode_into<I: OutputId>(&self, encoder: &CoreEncoder, specials: bool, ids: &mut Vec<I>) -> crate::Result<()> {
        match self {
            OneText::Text(text) if specials => encoder.encode_into(text.utf8()?, ids),
            OneText::Text(text) => encoder.encode_ordinary_into(text.utf8()?, ids),
            OneText::Units(units) => encoder.encode_units_into(units.units(), specials, UNITS_AT_ONCE, ids),
        }
    }

    /// The text as `pool`'s threads take it: a large str read as code units is made UTF-8 by CPython where
    /// the threads are to share it (`Encoder::encode_parts`), as its parts are cut from the whole. (Made
    /// in one pass of our own, later calls lost more than the first gained: 20 MB of English books at 2
    /// threads, 3 rounds, medians: first calls 262 → 282 MB/s, later ones 1100 → 864, which find CPython's.)
    fn for_pool(self, py: Python<'_>, pool: &rayon::ThreadPool) -> PyResult<Self> {
        match self {
            OneText::Units(units) if pool.current_num_threads() > 1 && units.len > PARALLEL_CHUNK_BYTES / 4 => {
                Ok(OneText::Text(Text::Str(units.string.bind(py).extract()?)))
            }
            _ => Ok(self),
        }
    }

    /// `err` as the caller should see it: for a str read as code units that holds a lone surrogate
    /// (`Error::NotUnicode`, a `UnicodeError`), CPython's own UnicodeEncodeError for it, as a str made
    /// UTF-8 by CPython raises.
    fn explain(&self, py: Python<'_>, err: PyErr) -> PyErr {
        match self {
            OneText::Units(units) if err.is_instance_of::<PyUnicodeError>(py) => {
                units.string.bind(py).extract::<PyBackedStr>().err().unwrap_or(err)
            }
            _ => err,
        }
    }
}

/// Whether large strs are read in place as their code units (`StrUnits`): as `in_place` says (the caller's
/// choice, `$BPE_LM_STRS_IN_PLACE` in Python), else where this CPU makes UTF-8 of them many units at a time
/// (`CodeUnits::utf8_in_blocks`: AVX2 or AVX-512). Without that, UTF-8 made a block of 16 at a time cost
/// more on later calls than CPython's copy saved on the first: 20 MB of Russian stories, one pinned core, 3
/// rounds, medians, first calls 192 → 280 MB/s, later ones 467 → 351.
fn strs_in_place(in_place: Option<bool>) -> bool {
    in_place.unwrap_or_else(CodeUnits::utf8_in_blocks)
}

/// Whether `text` would be read in place as its code units (`StrUnits`) by the one-text calls given
/// `in_place` (`strs_in_place`): for tests and diagnostics (a large str that is not ASCII, nor mostly of
/// three-byte characters, is, on the CPython builds `str_layout` knows).
#[pyfunction]
#[pyo3(signature = (text, in_place=None))]
fn reads_str_in_place(text: Bound<'_, PyAny>, in_place: Option<bool>) -> bool {
    StrUnits::chosen(&text, in_place).is_some()
}

/// Strs below this many characters are made UTF-8 by CPython (`Text`): its copy costs little at that size,
/// and is kept with the str for the next call.
const UNITS_MIN: usize = 1 << 12;

/// A str's code units, read in place: a compact str (one allocation, its units right after its header)
/// that is not ASCII (an ASCII str is its own UTF-8: CPython hands that over without a copy) and whose
/// UTF-8 CPython has not made yet. The str is held, so its units stay where they are, unchanged (a str is
/// immutable), while the GIL is released.
struct StrUnits {
    string: Py<PyString>,
    /// Bytes a unit: 1 (Latin-1), 2 (UCS-2) or 4 (UCS-4).
    kind: usize,
    /// The address of the first unit (an address, not a pointer, so that the value may cross threads).
    at: usize,
    len: usize,
}

impl StrUnits {
    /// The units of `obj` where large strs are read in place (`strs_in_place`) and it is one (`of`).
    fn chosen(obj: &Bound<'_, PyAny>, in_place: Option<bool>) -> Option<Self> {
        strs_in_place(in_place).then(|| Self::of(obj.as_borrowed())).flatten()
    }

    /// The units of `obj` where it is such a str of at least UNITS_MIN characters and this interpreter
    /// lays strs out as `str_layout` found, else None.
    fn of(obj: Borrowed<'_, '_, PyAny>) -> Option<Self> {
        let layout = str_layout(obj.py())?;
        // SAFETY: attached to the interpreter (`obj` is borrowed under it); the type check reads only the
        // object's type.
        if unsafe { ffi::PyUnicode_CheckExact(obj.as_ptr()) } == 0 {
            return None; // a subclass of str is laid out otherwise
        }
        // SAFETY: `obj` is an exact str, whose header holds the fields `StrShape::of` reads.
        let shape = unsafe { StrShape::of(obj.as_ptr()) };
        if !shape.compact || shape.ascii || !matches!(shape.kind, 1 | 2 | 4) || shape.len < UNITS_MIN {
            return None;
        }
        // SAFETY: a compact str that is not ASCII: its object holds the whole compact header.
        if unsafe { utf8_pointer(obj.as_ptr(), layout) } != 0 {
            return None; // CPython hands over the UTF-8 it keeps, at no cost
        }
        let units = StrUnits {
            string: obj.cast::<PyString>().ok()?.to_owned().unbind(),
            kind: shape.kind,
            at: obj.as_ptr() as usize + layout.units_at,
            len: shape.len,
        };
        // Text mostly of three-byte characters gains nothing on a first call (its encoding, not the copy,
        // takes the time) and its UTF-8 costs later calls more: 4 MB of Chinese poems, one pinned core, 3
        // rounds, medians, first calls 131 → 127 MB/s, later ones 463 → 414 (AVX-512; AVX2 alike).
        (!units.units().mostly_three_byte()).then_some(units)
    }

    fn units(&self) -> CodeUnits<'_> {
        // SAFETY: `at` is the start of `len` units of `kind` bytes of the str `string`, which is held
        // (`self`), so alive, and immutable; CPython aligns a compact str's units for their kind (they
        // follow a header of whole machine words). The slices live no longer than `self`.
        unsafe {
            match self.kind {
                1 => CodeUnits::Latin1(std::slice::from_raw_parts(self.at as *const u8, self.len)),
                2 => CodeUnits::Ucs2(std::slice::from_raw_parts(self.at as *const u16, self.len)),
                _ => CodeUnits::Ucs4(std::slice::from_raw_parts(self.at as *const u32, self.len)),
            }
        }
    }
}

/// Where a compact str keeps its units and the pointer to its UTF-8 (null until made): the layouts CPython's
/// `PyCompactUnicodeObject` has had on 64-bit builds (3.10 and 3.11, with the `wstr` fields; 3.12 on).
#[derive(Clone, Copy, Debug)]
struct StrLayout {
    units_at: usize,
    utf8_at: usize,
}

const STR_LAYOUTS: [StrLayout; 2] = [
    StrLayout {
        units_at: 72,
        utf8_at: 56,
    },
    StrLayout {
        units_at: 56,
        utf8_at: 48,
    },
];

/// The header fields of a str that decide how to read it, which every str has (all CPython versions agree
/// on them: `length` after the object header, then `hash`, then the `state` bit field).
struct StrShape {
    len: usize,
    kind: usize,
    compact: bool,
    ascii: bool,
}

impl StrShape {
    /// # Safety
    /// `string` is a live exact str.
    unsafe fn of(string: *mut ffi::PyObject) -> Self {
        const LENGTH_AT: usize = std::mem::size_of::<ffi::PyObject>();
        const STATE_AT: usize = LENGTH_AT + 16;
        let base = string.cast::<u8>();
        let state = base.add(STATE_AT).cast::<u32>().read();
        StrShape {
            len: base.add(LENGTH_AT).cast::<usize>().read(),
            kind: (state >> 2 & 7) as usize,
            compact: state >> 5 & 1 == 1,
            ascii: state >> 6 & 1 == 1,
        }
    }
}

/// The pointer to the UTF-8 of `string` CPython has made and keeps (0: not made), where `layout` places it.
///
/// # Safety
/// `string` is a live compact str that is not ASCII (an ASCII one's header is shorter), so its object
/// holds the compact header of either layout.
unsafe fn utf8_pointer(string: *mut ffi::PyObject, layout: StrLayout) -> usize {
    string.cast::<u8>().add(layout.utf8_at).cast::<usize>().read()
}

/// How this interpreter lays out compact strs (one of STR_LAYOUTS), else None: checked once per process on
/// three strs of known characters, one of each unit size, which must read as their length, kind, units and,
/// once CPython has made it, UTF-8 say. An interpreter built another way (a debug build's extra header
/// fields, a future layout) fails the check, and its strs are made UTF-8 by CPython as before.
fn str_layout(py: Python<'_>) -> Option<StrLayout> {
    static LAYOUT: std::sync::OnceLock<Option<StrLayout>> = std::sync::OnceLock::new();
    *LAYOUT.get_or_init(|| {
        // The layouts are CPython's on 64-bit builds; other interpreters keep strs otherwise.
        let cpython = py
            .import("sys")
            .and_then(|sys| sys.getattr("implementation")?.getattr("name")?.extract::<String>())
            .is_ok_and(|name| name == "cpython");
        if !cpython || cfg!(not(target_pointer_width = "64")) {
            return None;
        }
        // 40 characters each (the units compared stop 16 bytes short of the end: a candidate's offset may
        // lie past the real one by that much), of 1, 2 and 4 bytes a unit.
        let probe_chars = |text: &str| -> Vec<char> { text.chars().cycle().take(40).collect() };
        let probes = [
            (1, probe_chars("été à la plage, café crème; über år, naïve ")),
            (2, probe_chars("Жил-был кот — 中文 (ĀĒĪ) ünï ₤€ ok!")),
            (4, probe_chars("emoji 🙂 and 𝄞 clef; 𐍈 gothic, plain 123")),
        ];
        STR_LAYOUTS.into_iter().find(|&layout| {
            probes.iter().all(|(kind, chars)| {
                let text: String = chars.iter().collect();
                let probe = PyString::new(py, &text);
                let string = probe.as_ptr();
                // SAFETY: `probe` is a live exact str of 40 characters of `kind` bytes: its object is at
                // least a compact header (56 bytes or more) plus 41 units, so every offset read here (the
                // header fields, and units up to 16 bytes short of the end of the larger candidate's data)
                // lies within it. The UTF-8 pointer is only compared.
                unsafe {
                    let shape = StrShape::of(string);
                    let units = string.cast::<u8>().add(layout.units_at);
                    let unit = |i: usize| match kind {
                        1 => units.add(i).read() as u32,
                        2 => units.cast::<u16>().add(i).read() as u32,
                        _ => units.cast::<u32>().add(i).read(),
                    };
                    let checked = chars.len() - 16 / kind;
                    let header = shape.len == chars.len() && shape.kind == *kind && shape.compact && !shape.ascii;
                    if !header || !(0..checked).all(|i| unit(i) == chars[i] as u32) {
                        return false;
                    }
                    let mut size = 0;
                    let utf8 = ffi::PyUnicode_AsUTF8AndSize(string, &mut size);
                    if utf8.is_null() {
                        ffi::PyErr_Clear();
                        return false;
                    }
                    utf8_pointer(string, layout) == utf8 as usize
                }
            })
        })
    })
}

/// Texts of a batch `expected_bytes` measures, at most.
const SAMPLE_TEXTS: usize = 1024;

/// About how many bytes the texts of `list` are as UTF-8 (what sizes a fed batch's runs and the threads'
/// caches, before its texts are taken): the mean of up to SAMPLE_TEXTS texts spread evenly over the list
/// (made UTF-8 here, as they would be anyway), times their number. Items that are neither str nor bytes
/// count nothing here; their error comes when they are taken. Measuring every text (the characters of
/// each) touched every object once more before any encoding: for 136,884 sentences of 143 bytes, that
/// pass was a serial step of several milliseconds. A wrong guess costs balance, not ids: the runs are
/// cut from what the texts are, and threads that finish their share help with the others'.
fn expected_bytes(list: &Bound<'_, PyList>) -> usize {
    let count = list.len();
    let step = count.div_ceil(SAMPLE_TEXTS).max(1);
    let (mut sampled, mut bytes) = (0usize, 0usize);
    for at in (0..count).step_by(step) {
        if let Ok(text) = list.get_item(at).and_then(|item| item.extract::<Text>()) {
            bytes += text.byte_len();
        }
        sampled += 1;
    }
    (bytes as f64 * count as f64 / sampled.max(1) as f64) as usize
}

/// Ids the core made, handed to numpy without a copy: `numpy.asarray` reads them in place through
/// `__array_interface__` (shape, little-endian type, address) and keeps this object as the array's base,
/// so they live as long as the array. (The stable ABI this module is built for has no buffer protocol
/// for classes before Python 3.11; a bytearray would cost a zeroed allocation and a copy of every id.)
#[pyclass(frozen, module = "bpe_lm._core")]
struct IdArray {
    ids: Ids,
}

enum Ids {
    U16(Vec<u16>),
    U32(Vec<u32>),
    /// Offsets into a batch's ids.
    U64(Vec<u64>),
}

impl Ids {
    /// (count, numpy's little-endian type string, address of the first).
    fn layout(&self) -> (usize, &'static str, usize) {
        match self {
            Ids::U16(ids) => (ids.len(), "<u2", ids.as_ptr() as usize),
            Ids::U32(ids) => (ids.len(), "<u4", ids.as_ptr() as usize),
            Ids::U64(ids) => (ids.len(), "<u8", ids.as_ptr() as usize),
        }
    }
}

/// An id type the core writes (`OutputId`) as the arrays hold it.
trait ArrayId: OutputId {
    fn ids(ids: Vec<Self>) -> Ids;
}

impl ArrayId for u32 {
    fn ids(ids: Vec<Self>) -> Ids {
        Ids::U32(ids)
    }
}

impl ArrayId for u16 {
    fn ids(ids: Vec<Self>) -> Ids {
        Ids::U16(ids)
    }
}

impl IdArray {
    /// The ids of `parts`, in order (one part taken as it is, more joined on `pool`: `encode::join_parts`).
    fn of_parts<I: ArrayId>(mut parts: Vec<Vec<I>>, pool: &rayon::ThreadPool) -> Self {
        let ids = match parts.len() {
            1 => parts.pop().unwrap_or_default(),
            _ => crate::encode::join_parts(&parts, pool),
        };
        IdArray { ids: I::ids(ids) }
    }

    /// The ids of `text`, encoded on `pool` (`Encoder::encode_parts`).
    fn of_text<I: ArrayId>(encoder: &CoreEncoder, text: &OneText, pool: &rayon::ThreadPool) -> crate::Result<Self> {
        let parts = match text {
            OneText::Text(text) => encoder.encode_parts::<I>(text.utf8()?, pool)?,
            OneText::Units(_) => {
                let mut ids = Vec::new();
                text.encode_into(encoder, true, &mut ids)?;
                vec![ids]
            }
        };
        Ok(Self::of_parts(parts, pool))
    }

    /// The ids of a batch (joined on `pool`), and the `len(texts) + 1` offsets of each text's ids.
    fn of_batch<I: ArrayId>(batch: BatchIds<I>, pool: &rayon::ThreadPool) -> (Self, Self) {
        let mut offsets = Vec::with_capacity(batch.ends.len() + 1);
        offsets.push(0);
        offsets.extend_from_slice(&batch.ends);
        (Self::of_parts(batch.parts, pool), IdArray { ids: Ids::U64(offsets) })
    }
}

#[pymethods]
impl IdArray {
    #[getter]
    fn __array_interface__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let (len, typestr, address) = self.ids.layout();
        let interface = PyDict::new(py);
        interface.set_item("version", 3)?;
        interface.set_item("shape", (len,))?;
        interface.set_item("typestr", typestr)?;
        // Writable, as an array of a bytearray was: the ids are this object's alone, and the core never
        // reads them again.
        interface.set_item("data", (address, false))?;
        Ok(interface)
    }

    fn __len__(&self) -> usize {
        self.ids.layout().0
    }
}

/// The encoding engine behind `bpe_lm.Tokenizer`.
#[pyclass(frozen, module = "bpe_lm._core")]
struct Encoder {
    inner: CoreEncoder,
    /// One Python int per token id, made on first use: a list of ids then costs a reference count per
    /// element instead of allocating an int for each (most ids are beyond CPython's small-int cache).
    /// A `PyOnceLock`, not `std::sync::OnceLock`: it is filled while attached to the interpreter, and a thread
    /// blocked on a plain `OnceLock` there could hold what the filling thread needs (PyO3's deadlock warning).
    ints: PyOnceLock<Vec<Py<PyAny>>>,
    /// The ids of the last text `encode` or `encode_ordinary` turned into a list, kept for the next one to
    /// write into (`list_of`): a fresh buffer is fresh memory from the kernel, faulted in page by
    /// page, for ids that are only copied into the list. Kept up to SPARE_IDS ids (64 MB), half what the
    /// list made of them takes. Measured: 20 MB of English books, `encode_ordinary` on one thread, fresh
    /// processes, two runs of 5 rounds: later calls 147–149 → 162–167 MB/s (20 MB of reviews, fewer ids,
    /// whose buffer the allocator already reused: 188 → 191–196); first calls unchanged.
    spare_ids: Mutex<Vec<u32>>,
}

/// The most ids `Encoder::spare_ids` keeps room for.
const SPARE_IDS: usize = 16 << 20;

impl Encoder {
    /// The list of the ids `encode` appends to a buffer (run with the interpreter released), the buffer
    /// being the one the last call used where no other call has it now.
    fn list_of<'py>(
        &self,
        py: Python<'py>,
        encode: impl FnOnce(&mut Vec<u32>) -> crate::Result<()> + Send,
    ) -> PyResult<Bound<'py, PyList>> {
        let spare = std::mem::take(&mut *self.spare_ids.lock().unwrap_or_else(|e| e.into_inner()));
        let ids = py.detach(|| {
            guarded(|| {
                let mut ids = spare;
                ids.clear();
                encode(&mut ids)?;
                Ok(ids)
            })
        })?;
        let list = self.to_list(py, &ids);
        if ids.capacity() <= SPARE_IDS {
            *self.spare_ids.lock().unwrap_or_else(|e| e.into_inner()) = ids;
        }
        list
    }

    /// The list of the ids of one text (`OneText::of`), special-token strings as ids (`specials`, `encode`)
    /// or as text (`encode_ordinary`).
    fn list_of_text<'py>(
        &self,
        py: Python<'py>,
        text: &Bound<'py, PyAny>,
        in_place: Option<bool>,
        specials: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let text = OneText::of(text, in_place)?;
        self.list_of(py, |ids| text.encode_into(&self.inner, specials, ids))
            .map_err(|e| text.explain(py, e))
    }

    /// The ids of the texts of `list` as one array, and the offsets of each text's (`encode_fed`).
    fn batch_arrays<I: ArrayId>(
        &self,
        py: Python<'_>,
        list: &Bound<'_, PyList>,
        pool: &rayon::ThreadPool,
    ) -> PyResult<(IdArray, IdArray)> {
        let (mut runs, mut texts) = (Vec::new(), Vec::with_capacity(list.len()));
        self.encode_fed::<I>(py, list, pool, false, |run_texts, run| {
            texts.extend(run_texts); // released below, where the interpreter is held
            runs.push(run);
            Ok(())
        })?;
        let batch = BatchIds::of_runs(runs, texts.len());
        Ok(py.detach(|| IdArray::of_batch(batch, pool)))
    }

    /// Encodes the texts of `list` (str or UTF-8 bytes each) on `pool` while they are taken from the list
    /// (`Encoder::encode_batch_fed`): this thread holds the interpreter while it takes them, each str made
    /// UTF-8 as it is taken, and the pool's threads encode the texts taken so far meanwhile. Each run's
    /// texts and ids go to `sink` in order (`eager`: as soon as they can), on this thread, without the
    /// interpreter (`Python::attach` to make objects; a Python error it meets is the caller's to keep,
    /// with an error returned to stop). An item that is neither str nor bytes, or a str that cannot be
    /// UTF-8, raises its error first.
    fn encode_fed<I: OutputId>(
        &self,
        py: Python<'_>,
        list: &Bound<'_, PyList>,
        pool: &rayon::ThreadPool,
        eager: bool,
        sink: impl FnMut(Vec<Text>, RunIds<I>) -> Result<(), Error> + Send,
    ) -> PyResult<()> {
        let list = list.clone().unbind();
        let mut unreadable = None;
        let encoded = py.detach(|| {
            guarded(|| {
                let expected = || Python::attach(|py| expected_bytes(list.bind(py)));
                let feed = |push: &mut dyn FnMut(Text)| {
                    Python::attach(|py| {
                        for item in list.bind(py).iter() {
                            // Every item is taken even after a text has failed: an item's own error
                            // comes first, as when all were taken before the encoding began.
                            match item.extract::<Text>() {
                                Ok(text) => push(text),
                                Err(e) => {
                                    unreadable = Some(e);
                                    return false;
                                }
                            }
                        }
                        true
                    })
                };
                self.inner
                    .encode_batch_fed::<Text, I>(pool, expected, feed, eager, sink)
            })
        });
        match unreadable {
            Some(e) => Err(e),
            None => encoded,
        }
    }

    /// `ids` as a list of the shared ints (`ints`), made through the C API. For a list of at least as many
    /// ids as the vocabulary has tokens, each int is given all the references its uses in the list need
    /// in one run of calls (the uses counted first), so its memory is touched once a call rather than once
    /// an id, at scattered places, as PyO3's `PyList::new` did (a reference taken, then the slot set, id by
    /// id). Measured: 20 MB of English books and of reviews, `encode_ordinary` on one thread, fresh
    /// processes, medians of 5 rounds: first call 95 → 98 and 115 → 119 MB/s, later calls 148 → 159 and
    /// 191 → 203 MB/s. A shorter list takes its references id by id: counting over the whole vocabulary
    /// made a call on a 200-byte text 2.5 → 23 µs. The slots are then written straight into the list's
    /// array where the interpreter's layout allows (`list_items`), not by `PyList_SetItem` per id:
    /// measured the same way (5 rounds, one pinned core), English 100 → 114 first call, 171 → 216 later;
    /// reviews 120 → 136 and 206 → 255. The array is advised to be backed by huge pages before it is filled
    /// (`arch::advise_huge_pages`, as the arrays of `encode_to_numpy` are): a list of millions of ids is
    /// fresh memory on every call, faulted in 4 KB pages a few at a time. Measured (`encode_ordinary` of 20 MB,
    /// one pinned core, fresh processes, medians of 5 rounds, 2026-12-08): English books 217 → 263 MB/s
    /// first call, 330 → 426 later; Russian stories 165 → 232 and 191 → 284.
    fn to_list<'py>(&self, py: Python<'py>, ids: &[u32]) -> PyResult<Bound<'py, PyList>> {
        let ints = self.ints.get_or_init(py, || {
            (0..self.inner.vocab_size() as u32)
                .map(|i| i.into_pyobject(py).unwrap().into_any().unbind())
                .collect()
        });
        let len = ffi::Py_ssize_t::try_from(ids.len()).map_err(|_| PyValueError::new_err("too many ids for a list"))?;
        // SAFETY: attached to the interpreter (`py`); PyList_New returns a new reference, or null with the
        // exception set.
        let list = unsafe { ffi::PyList_New(len) };
        if list.is_null() {
            return Err(PyErr::fetch(py));
        }
        // SAFETY: `list` is the new reference just made; owned from here, it is released on any return.
        let list = unsafe { Bound::from_owned_ptr(py, list) };
        let items = list_items(py, list.as_ptr());
        if let Some(items) = items {
            // SAFETY: `items` is the new list's array of `len` slots (`list_items`), which nothing else can
            // see yet; the slice lives only for the advice.
            crate::arch::advise_huge_pages(unsafe { std::slice::from_raw_parts_mut(items, ids.len()) });
        }
        let counted = ids.len() >= ints.len();
        if counted {
            let mut uses = vec![0u32; ints.len()];
            for &id in ids {
                uses[id as usize] += 1;
            }
            for (int, &n) in ints.iter().zip(&uses) {
                for _ in 0..n {
                    // SAFETY: `int` is alive (`ints` holds it); one reference for each of its uses below.
                    unsafe { ffi::Py_IncRef(int.as_ptr()) };
                }
            }
        }
        for (at, &id) in ids.iter().enumerate() {
            let int = ints[id as usize].as_ptr();
            if !counted {
                // SAFETY: `int` is alive (`ints` holds it); the reference is the one its slot takes below.
                unsafe { ffi::Py_IncRef(int) };
            }
            // Each slot takes over one reference given to its int above (so each int ends with one per use).
            match items {
                // SAFETY: `items` is the new list's array of `len` slots (`list_items`), all empty, which
                // nothing else can see yet, and `at < len`.
                Some(items) => unsafe { *items.add(at) = int },
                // SAFETY: `list` is a list of `len` empty slots and `at < len`.
                None => {
                    if unsafe { ffi::PyList_SetItem(list.as_ptr(), at as ffi::Py_ssize_t, int) } != 0 {
                        return Err(PyErr::fetch(py));
                    }
                }
            }
        }
        Ok(list.cast_into::<PyList>()?)
    }
}

/// The array of a list's item pointers where this interpreter lays lists out as CPython always has
/// (`PyListObject`: the header of a variable-size object, then `ob_item`), else None. The limited API
/// that an abi3 module is built against hides the layout and offers `PyList_SetItem`, a call with its
/// checks per element: a fifth of a later call's time in `encode_ordinary` of 20 MB. Whether the
/// layout holds is checked once per process, on a list of two known items: an interpreter built another
/// way (a debug build's extra header fields) fails the check and gets `PyList_SetItem`.
fn list_items(py: Python<'_>, list: *mut ffi::PyObject) -> Option<*mut *mut ffi::PyObject> {
    static LAYOUT_HOLDS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    /// Where `ob_item` lies in a list: right after the variable-size object's header.
    const ITEMS_AT: usize = std::mem::size_of::<ffi::PyVarObject>();
    // SAFETY: `list` is a list object, at least as large as the header and one pointer in any CPython
    // (the check below reads nothing beyond that); the pointer read there is only compared, never
    // followed, until the check has passed.
    let items =
        |list: *mut ffi::PyObject| unsafe { list.cast::<u8>().add(ITEMS_AT).cast::<*mut *mut ffi::PyObject>().read() };
    let holds = *LAYOUT_HOLDS.get_or_init(|| {
        let probe = [py.None(), py.Ellipsis()];
        // SAFETY: attached to the interpreter; a new list of two slots, each given a new reference to its
        // item, and released at the end.
        unsafe {
            let list = ffi::PyList_New(2);
            if list.is_null() {
                ffi::PyErr_Clear();
                return false;
            }
            for (at, item) in probe.iter().enumerate() {
                ffi::Py_IncRef(item.as_ptr());
                ffi::PyList_SetItem(list, at as ffi::Py_ssize_t, item.as_ptr());
            }
            // The header first (type, then size, as the API reports them), so the items pointer is
            // followed only where it is one.
            let word = |at: usize| list.cast::<u8>().add(at).cast::<usize>().read();
            let ty = ffi::PyObject_Type(list);
            let header = word(std::mem::offset_of!(ffi::PyObject, ob_type)) == ty as usize
                && word(std::mem::offset_of!(ffi::PyVarObject, ob_size)) == ffi::PyList_Size(list) as usize;
            ffi::Py_DecRef(ty);
            let array = items(list);
            let holds = header && !array.is_null() && *array == probe[0].as_ptr() && *array.add(1) == probe[1].as_ptr();
            ffi::Py_DecRef(list);
            holds
        }
    });
    holds.then(|| items(list)).filter(|array| !array.is_null())
}

#[pymethods]
impl Encoder {
    #[new]
    #[pyo3(signature = (vocab, merges, special_tokens, pattern=None))]
    fn new(
        py: Python<'_>,
        vocab: Vec<Bound<'_, PyBytes>>,
        merges: Vec<(Bound<'_, PyBytes>, Bound<'_, PyBytes>)>,
        special_tokens: Vec<String>,
        pattern: Option<String>,
    ) -> PyResult<Self> {
        let vocab: Vec<Vec<u8>> = vocab.iter().map(|b| b.as_bytes().to_vec()).collect();
        let merges: Vec<(Vec<u8>, Vec<u8>)> = merges
            .iter()
            .map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec()))
            .collect();
        let inner = py.detach(|| guarded(|| CoreEncoder::new(vocab, &merges, &special_tokens, pattern.as_deref())))?;
        Ok(Encoder {
            inner,
            ints: PyOnceLock::new(),
            spare_ids: Mutex::new(Vec::new()),
        })
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    /// True when pre-tokenization runs on the GPT-2 scanner (the GPT-2 pattern or a spelling of it).
    #[getter]
    fn gpt2_scanner(&self) -> bool {
        self.inner.uses_gpt2_scanner()
    }

    #[getter]
    fn special_ids(&self) -> Vec<u32> {
        self.inner.special_ids().to_vec()
    }

    #[pyo3(signature = (text, in_place=None))]
    fn encode<'py>(
        &self,
        py: Python<'py>,
        text: Bound<'py, PyAny>,
        in_place: Option<bool>,
    ) -> PyResult<Bound<'py, PyList>> {
        self.list_of_text(py, &text, in_place, true)
    }

    #[pyo3(signature = (text, in_place=None))]
    fn encode_ordinary<'py>(
        &self,
        py: Python<'py>,
        text: Bound<'py, PyAny>,
        in_place: Option<bool>,
    ) -> PyResult<Bound<'py, PyList>> {
        self.list_of_text(py, &text, in_place, false)
    }

    #[pyo3(signature = (texts, num_threads=None))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Bound<'py, PyList>,
        num_threads: Option<usize>,
    ) -> PyResult<Vec<Bound<'py, PyList>>> {
        let pool = guarded(|| threads::pool(num_threads))?;
        // Each run's lists are made as soon as it is encoded, while the threads encode the runs after.
        let (mut lists, mut raised) = (Vec::with_capacity(texts.len()), None);
        let sink = |run_texts: Vec<Text>, (ids, ends): RunIds<u32>| {
            Python::attach(|py| {
                let mut start = 0;
                for &end in &ends {
                    match self.to_list(py, &ids[start..end as usize]) {
                        Ok(list) => lists.push(list.unbind()),
                        Err(e) => {
                            raised = Some(e);
                            return Err(Error::InvalidArgument("a list could not be made".into()));
                        }
                    }
                    start = end as usize;
                }
                drop(run_texts); // where the interpreter is held: they hold references to its objects
                Ok(())
            })
        };
        let encoded = self.encode_fed::<u32>(py, &texts, &pool, true, sink);
        if let (Err(_), Some(e)) = (&encoded, raised) {
            return Err(e); // the sink's own error, not the one it returned to stop
        }
        encoded?;
        Ok(lists.into_iter().map(|list| list.into_bound(py)).collect())
    }

    /// Encodes `text` (in parallel when large) into an array of ids of `width` bytes (an `IdArray`, for
    /// `numpy.asarray`), without a Python list.
    #[pyo3(signature = (text, width, num_threads=None, in_place=None))]
    fn encode_to_buffer(
        &self,
        py: Python<'_>,
        text: Bound<'_, PyAny>,
        width: usize,
        num_threads: Option<usize>,
        in_place: Option<bool>,
    ) -> PyResult<IdArray> {
        let dtype = dtype_of(width)?;
        guarded(|| dtype.check_holds(self.inner.vocab_size()))?;
        let pool = guarded(|| threads::pool(num_threads))?;
        let text = OneText::of(&text, in_place)?.for_pool(py, &pool)?;
        py.detach(|| {
            guarded(|| match dtype {
                Dtype::U32 => IdArray::of_text::<u32>(&self.inner, &text, &pool),
                Dtype::U16 => IdArray::of_text::<u16>(&self.inner, &text, &pool),
            })
        })
        .map_err(|e| text.explain(py, e))
    }

    /// Encodes many texts in parallel into one flat array of ids of `width` bytes, and an array of
    /// `len(texts) + 1` uint64 offsets: text `i`'s ids are the ids from `offsets[i]` to `offsets[i + 1]`.
    /// No Python object per id or per text (`IdArray`s, for `numpy.asarray`).
    #[pyo3(signature = (texts, width, num_threads=None))]
    fn encode_batch_to_buffers(
        &self,
        py: Python<'_>,
        texts: Bound<'_, PyList>,
        width: usize,
        num_threads: Option<usize>,
    ) -> PyResult<(IdArray, IdArray)> {
        let dtype = dtype_of(width)?;
        guarded(|| dtype.check_holds(self.inner.vocab_size()))?;
        let pool = guarded(|| threads::pool(num_threads))?;
        match dtype {
            Dtype::U32 => self.batch_arrays::<u32>(py, &texts, &pool),
            Dtype::U16 => self.batch_arrays::<u16>(py, &texts, &pool),
        }
    }

    /// Byte offset in `text` (UTF-8) up to which it can be encoded now without knowing what follows,
    /// given that `text` starts at such a place: 0 when no safe place is known yet.
    fn safe_prefix_bytes(&self, text: &str) -> usize {
        self.inner.cutter().last_safe_cut(text.as_bytes()).unwrap_or(0)
    }

    fn decode_bytes<'py>(&self, py: Python<'py>, ids: Vec<u64>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py.detach(|| guarded(|| self.inner.decode_bytes(ids)))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Decodes little-endian ids of `width` bytes (e.g. a numpy array's buffer).
    fn decode_buffer<'py>(&self, py: Python<'py>, buffer: &[u8], width: usize) -> PyResult<Bound<'py, PyBytes>> {
        let dtype = dtype_of(width)?;
        if !buffer.len().is_multiple_of(width) {
            return Err(PyValueError::new_err("buffer length is not a multiple of the id width"));
        }
        let bytes = py.detach(|| {
            guarded(|| match dtype {
                Dtype::U16 => self
                    .inner
                    .decode_bytes(buffer.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u64)),
                Dtype::U32 => self.inner.decode_bytes(
                    buffer
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64),
                ),
            })
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Bytes per id of the narrowest id type for this vocabulary (2: uint16, 4: uint32).
    fn default_width(&self) -> usize {
        Dtype::for_vocab(self.inner.vocab_size()).width()
    }

    /// Raises ValueError when ids of `width` bytes cannot hold this vocabulary.
    fn check_width(&self, width: usize) -> PyResult<()> {
        guarded(|| dtype_of_width(width)?.check_holds(self.inner.vocab_size()))
    }

    /// Appends the ids of text files (plain, gzip or zstd; each with a byte range of a plain one, or None)
    /// to `writer`, in order, read through as one stream; returns (ids written, bytes of text read) per
    /// file.
    #[pyo3(signature = (inputs, writer, num_threads=None, errors_replace=false, progress=None))]
    fn encode_text_into(
        &self,
        py: Python<'_>,
        inputs: Vec<(PathBuf, Option<(u64, u64)>)>,
        writer: &TokenWriter,
        num_threads: Option<usize>,
        errors_replace: bool,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Vec<(u64, u64)>> {
        let sources: Vec<TextSource> = inputs
            .into_iter()
            .map(|(path, range)| TextSource { path, range })
            .collect();
        let small = matches!(sources.as_slice(), [one] if one.is_small());
        run_sized(py, progress.as_ref(), small, |p| {
            let pool = threads::pool(num_threads)?;
            writer.with(|w| self.inner.encode_streams_into(&sources, w, &pool, errors_replace, p))
        })
    }

    /// Appends the ids of whole text files to `writer`, in order, read and encoded side by side (for many
    /// small files: one call, not one each); returns (ids written, bytes of text read) per file.
    #[pyo3(signature = (inputs, writer, num_threads=None, errors_replace=false, progress=None))]
    fn encode_texts_into(
        &self,
        py: Python<'_>,
        inputs: Vec<PathBuf>,
        writer: &TokenWriter,
        num_threads: Option<usize>,
        errors_replace: bool,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Vec<(u64, u64)>> {
        let sources: Vec<TextSource> = inputs.into_iter().map(TextSource::whole).collect();
        run_long(py, progress.as_ref(), |p| {
            let pool = threads::pool(num_threads)?;
            writer.with(|w| self.inner.encode_texts_into(&sources, w, &pool, errors_replace, p))
        })
    }

    /// Appends the ids of the records of `inputs`, in order, to `writer` (per record: `encode_ordinary` of
    /// `field`, then `end_id`): each input ("jsonl", path, byte range or None, None) or ("parquet", path,
    /// None, row groups or None), all read through as one stream. Returns (documents, skipped records,
    /// text bytes, tokens) per input.
    #[pyo3(signature = (inputs, field, end_id, writer, num_threads=None, progress=None, errors_replace=false))]
    #[allow(clippy::too_many_arguments)]
    fn encode_records_into(
        &self,
        py: Python<'_>,
        inputs: Vec<RecordInputArg>,
        field: String,
        end_id: Option<u32>,
        writer: &TokenWriter,
        num_threads: Option<usize>,
        progress: Option<Bound<'_, PyAny>>,
        errors_replace: bool,
    ) -> PyResult<Vec<(u64, u64, u64, u64)>> {
        let sources = record_sources(inputs)?;
        let small = matches!(sources.as_slice(), [one] if one.is_small());
        run_sized(py, progress.as_ref(), small, |p| {
            let pool = threads::pool(num_threads)?;
            let counts = writer.with(|w| {
                self.inner
                    .encode_records_into(&sources, &field, end_id, w, &pool, errors_replace, p)
            })?;
            Ok(counts
                .into_iter()
                .map(|(s, tokens)| (s.documents, s.skipped, s.text_bytes, tokens))
                .collect())
        })
    }

    /// Appends the ids of a batch of documents to `writer`: per document `encode_ordinary`, then `end_id`.
    /// The documents come as Arrow holds string columns, one or more (see `documents_of_columns`), encoded
    /// together in parallel. Returns (documents, skipped empty ones, text bytes, tokens).
    #[pyo3(signature = (columns, end_id, writer, num_threads=None, row0=0, path=None, errors_replace=false))]
    #[allow(clippy::too_many_arguments)]
    fn encode_documents_into(
        &self,
        py: Python<'_>,
        columns: Vec<(PyBackedBytes, PyBackedBytes, usize)>,
        end_id: Option<u32>,
        writer: &TokenWriter,
        num_threads: Option<usize>,
        row0: u64,
        path: Option<PathBuf>,
        errors_replace: bool,
    ) -> PyResult<(u64, u64, u64, u64)> {
        py.detach(|| {
            guarded(|| {
                let (docs, skipped) = documents_of_columns(&columns, path.as_deref(), row0, errors_replace)?;
                let docs: Vec<&str> = docs.iter().map(|d| d.as_ref()).collect();
                let dtype = writer.dtype_for_one(self.inner.vocab_size())?;
                let pool = threads::pool(num_threads)?;
                let stats = records::RecordStats::of(&docs, skipped);
                let tokens = match dtype {
                    Dtype::U16 => writer.write_all(&self.inner.encode_documents::<u16>(&docs, end_id, &pool)?),
                    Dtype::U32 => writer.write_all(&self.inner.encode_documents::<u32>(&docs, end_id, &pool)?),
                }?;
                Ok((stats.documents, stats.skipped, stats.text_bytes, tokens))
            })
        })
    }
}

/// The documents of string columns given as (data, offsets, offset width): `data` the UTF-8 bytes from
/// the column's first document on, `offsets` Arrow's `len + 1` little-endian offsets (int32, or int64 for
/// large strings) counted from anywhere before it. Rows are numbered from `row0` on, across the columns.
fn documents_of_columns<'a>(
    columns: &'a [(PyBackedBytes, PyBackedBytes, usize)],
    path: Option<&std::path::Path>,
    row0: u64,
    lossy: bool,
) -> crate::Result<(Vec<std::borrow::Cow<'a, str>>, u64)> {
    let mut docs = Vec::new();
    let mut skipped = 0;
    let mut row = row0;
    for (data, offsets, width) in columns {
        let offsets = arrow_offsets(offsets, *width)?;
        let (mut d, s) = records::documents_of_buffer(data, &offsets, path, row, lossy)?;
        row += offsets.len().saturating_sub(1) as u64;
        docs.append(&mut d);
        skipped += s;
    }
    Ok((docs, skipped))
}

/// Arrow's offsets of a string column (little-endian int32, or int64 for large strings), made relative to
/// the first: `data` then starts at the first document.
fn arrow_offsets(bytes: &[u8], width: usize) -> crate::Result<Vec<i64>> {
    let offsets: Vec<i64> = match width {
        4 if bytes.len().is_multiple_of(4) => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect(),
        8 if bytes.len().is_multiple_of(8) => bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "document offsets must be whole little-endian ints of 4 or 8 bytes (got {} bytes of width {width})",
                bytes.len()
            )))
        }
    };
    let first = *offsets
        .first()
        .ok_or_else(|| Error::InvalidArgument("document offsets must hold at least one offset".into()))?;
    Ok(offsets.into_iter().map(|o| o - first).collect())
}

/// A `.npy` file of ids being written (`bpe_lm._io`'s temporary output), filled by the encoding methods
/// from any number of inputs; or (`per_input`) one file for each input of one encoding call. `finish`
/// writes the lengths and syncs the files.
#[pyclass(frozen, module = "bpe_lm._core")]
struct TokenWriter {
    inner: Mutex<Option<IdOutputs>>,
}

impl TokenWriter {
    fn with<T>(&self, f: impl FnOnce(&mut IdOutputs) -> crate::Result<T>) -> crate::Result<T> {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(w) => f(w),
            None => Err(Error::InvalidArgument("this token file is finished already".into())),
        }
    }

    /// The dtype of this output, checked to take the ids of one input of a vocabulary of `vocab_size`.
    fn dtype_for_one(&self, vocab_size: usize) -> crate::Result<Dtype> {
        self.with(|w| w.check_takes(vocab_size, 1).map(|()| w.dtype()))
    }

    /// Appends the ids of one input's `parts`, in order; returns how many.
    fn write_all<I: OutputId>(&self, parts: &[Vec<I>]) -> crate::Result<u64> {
        self.with(|w| {
            let before = w.count();
            for ids in parts {
                w.write(0, ids)?;
            }
            Ok(w.count() - before)
        })
    }
}

#[pymethods]
impl TokenWriter {
    #[new]
    fn new(py: Python<'_>, path: PathBuf, width: usize) -> PyResult<Self> {
        let dtype = dtype_of(width)?;
        let w = py.detach(|| guarded(|| IdWriter::create(&path, dtype)))?;
        Ok(TokenWriter {
            inner: Mutex::new(Some(IdOutputs::Joined(w))),
        })
    }

    /// A writer of one file per input: the ids of the i-th input of the one encoding call it is given
    /// to go to `paths[i]` (each created when its input's turn comes; an input without ids gets an
    /// empty array).
    #[staticmethod]
    fn per_input(paths: Vec<PathBuf>, width: usize) -> PyResult<Self> {
        let files = PerInputFiles::new(paths, dtype_of(width)?);
        Ok(TokenWriter {
            inner: Mutex::new(Some(IdOutputs::PerInput(files))),
        })
    }

    /// Appends ids already encoded (little-endian, of this file's width), e.g. from another process.
    fn append(&self, py: Python<'_>, ids: &[u8]) -> PyResult<()> {
        py.detach(|| guarded(|| self.with(|w| w.write_encoded(ids))))
    }

    /// Ids written so far.
    #[getter]
    fn count(&self) -> PyResult<u64> {
        guarded(|| self.with(|w| Ok(w.count())))
    }

    /// Writes the lengths into the headers and syncs the files; returns the number of ids.
    fn finish(&self, py: Python<'_>) -> PyResult<u64> {
        let w = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        match w {
            Some(w) => py.detach(|| guarded(|| w.finish())),
            None => Err(PyValueError::new_err("this token file is finished already")),
        }
    }
}

/// Pre-token counts gathered from any mix of inputs (text files, JSON-lines files, batches of
/// documents, count files), then written to a count file or trained on. Counts stay in the core.
#[pyclass(frozen, module = "bpe_lm._core")]
struct PretokenCounter {
    special_tokens: Vec<String>,
    pattern: Option<String>,
    specials: SpecialMatcher,
    pretokenizer: Pretokenizer,
    counts: Mutex<PretokenCounts>,
}

impl PretokenCounter {
    fn add(&self, more: PretokenCounts) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        train::add_counts(&mut counts, more);
    }

    fn header(&self) -> counts::CountHeader {
        counts::CountHeader {
            special_tokens: self.special_tokens.clone(),
            pattern: self.pattern.clone().unwrap_or_else(|| GPT2_PATTERN.to_string()),
        }
    }
}

#[pymethods]
impl PretokenCounter {
    #[new]
    #[pyo3(signature = (special_tokens, pattern=None))]
    fn new(special_tokens: Vec<String>, pattern: Option<String>) -> PyResult<Self> {
        let specials = guarded(|| SpecialMatcher::new(&special_tokens))?;
        let pretokenizer = guarded(|| Pretokenizer::new(pattern.as_deref()))?;
        Ok(PretokenCounter {
            special_tokens,
            pattern,
            specials,
            pretokenizer,
            counts: Mutex::new(PretokenCounts::default()),
        })
    }

    /// Distinct pre-tokens counted so far.
    #[getter]
    fn distinct(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Counts text files (split on the special tokens, which are never counted); `ranges`: one byte
    /// range (or None) per path. Returns the bytes of text read.
    #[pyo3(signature = (paths, ranges=None, num_threads=None, errors_replace=false, progress=None))]
    fn add_text(
        &self,
        py: Python<'_>,
        paths: Vec<PathBuf>,
        ranges: Option<Vec<Option<(u64, u64)>>>,
        num_threads: Option<usize>,
        errors_replace: bool,
        progress: Option<Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let sources = text_sources(paths, ranges)?;
        let (counted, text_bytes) = run_long(py, progress.as_ref(), |p| {
            let pool = threads::pool(num_threads)?;
            train::count_files(&sources, &self.specials, &self.pretokenizer, &pool, p, errors_replace)
        })?;
        py.detach(|| self.add(counted));
        Ok(text_bytes)
    }

    /// Counts the records of `inputs` (as `Encoder.encode_records_into` takes them), one document
    /// each; returns (documents, skipped, text bytes) per input.
    #[pyo3(signature = (inputs, field, num_threads=None, progress=None, errors_replace=false))]
    fn add_records(
        &self,
        py: Python<'_>,
        inputs: Vec<RecordInputArg>,
        field: String,
        num_threads: Option<usize>,
        progress: Option<Bound<'_, PyAny>>,
        errors_replace: bool,
    ) -> PyResult<Vec<(u64, u64, u64)>> {
        let sources = record_sources(inputs)?;
        let (counted, stats) = run_long(py, progress.as_ref(), |p| {
            let pool = threads::pool(num_threads)?;
            train::count_records(&sources, &field, &self.pretokenizer, &pool, errors_replace, p)
        })?;
        py.detach(|| self.add(counted));
        Ok(stats
            .into_iter()
            .map(|s| (s.documents, s.skipped, s.text_bytes))
            .collect())
    }

    /// Counts a batch of documents held as Arrow holds string columns (see
    /// `Encoder.encode_documents_into`); returns (documents, skipped empty ones, text bytes).
    #[pyo3(signature = (columns, num_threads=None, row0=0, path=None, errors_replace=false))]
    fn add_documents(
        &self,
        py: Python<'_>,
        columns: Vec<(PyBackedBytes, PyBackedBytes, usize)>,
        num_threads: Option<usize>,
        row0: u64,
        path: Option<PathBuf>,
        errors_replace: bool,
    ) -> PyResult<(u64, u64, u64)> {
        py.detach(|| {
            guarded(|| {
                let (docs, skipped) = documents_of_columns(&columns, path.as_deref(), row0, errors_replace)?;
                let docs: Vec<&str> = docs.iter().map(|d| d.as_ref()).collect();
                let counted = train::count_documents(&docs, &self.pretokenizer, &*threads::pool(num_threads)?)?;
                self.add(counted);
                let s = records::RecordStats::of(&docs, skipped);
                Ok((s.documents, s.skipped, s.text_bytes))
            })
        })
    }

    /// Adds a count file made with the same special tokens and pattern (sums checked for overflow).
    fn add_count_file(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| {
            guarded(|| {
                let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
                let header = counts::add_count_file(&path, &mut counts)?;
                if header != self.header() {
                    return Err(Error::InvalidArgument(format!(
                        "{}: counted with other special tokens or another pattern than this count",
                        path.display()
                    )));
                }
                Ok(())
            })
        })
    }

    /// Writes the counts to a count file at `path`; returns the number of distinct pre-tokens.
    fn write(&self, py: Python<'_>, path: PathBuf) -> PyResult<usize> {
        py.detach(|| {
            guarded(|| {
                let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
                counts::write_count_file(&path, &counts, &self.header())?;
                Ok(counts.len())
            })
        })
    }

    /// Trains on the counts (which are used up: the counter is empty afterwards); returns (vocab as bytes
    /// by id, merges as id pairs).
    #[pyo3(signature = (vocab_size, progress=None))]
    #[allow(clippy::type_complexity)]
    fn train<'py>(
        &self,
        py: Python<'py>,
        vocab_size: usize,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Vec<Bound<'py, PyBytes>>, Vec<(u32, u32)>)> {
        guarded(|| train::check_vocab_size(vocab_size, self.special_tokens.len()))?;
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|e| e.into_inner()));
        let bpe = run_long(py, progress.as_ref(), |p| {
            train::train_from_counts(counts, vocab_size, &self.special_tokens, p)
        })?;
        Ok(bpe_to_py(py, bpe))
    }
}

/// A file's bytes, decompressed when it is gzip or zstd (by its magic bytes): the reader every input
/// goes through, for Python code that reads small amounts of a corpus itself.
#[pyclass(frozen, module = "bpe_lm._core")]
struct DecompressedReader {
    inner: Mutex<Box<dyn crate::stream::Source>>,
    path: PathBuf,
}

#[pymethods]
impl DecompressedReader {
    /// `buffer_bytes`: the size of its buffers, at most the core's usual (small for a look at the first
    /// bytes only); None, the usual.
    #[new]
    #[pyo3(signature = (path, buffer_bytes=None))]
    fn new(path: PathBuf, buffer_bytes: Option<usize>) -> PyResult<Self> {
        let source = TextSource::whole(&path);
        let counter = std::sync::Arc::new(AtomicU64::new(0));
        let inner = guarded(|| match buffer_bytes {
            Some(bytes) => source.open_buffered(counter, bytes),
            None => source.open(counter),
        })?;
        Ok(DecompressedReader {
            inner: Mutex::new(inner),
            path,
        })
    }

    /// Up to `size` bytes (fewer only at the end of the stream; empty there).
    fn read<'py>(&self, py: Python<'py>, size: usize) -> PyResult<Bound<'py, PyBytes>> {
        let data = py.detach(|| {
            guarded(|| {
                let mut reader = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                let mut buf = vec![0u8; size];
                let mut n = 0;
                while n < size {
                    match reader.read(&mut buf[n..]) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(Error::io(Some(self.path.clone()), e)),
                    }
                }
                buf.truncate(n);
                Ok(buf)
            })
        })?;
        Ok(PyBytes::new(py, &data))
    }
}

/// Bytes of each row group of a parquet file (compressed, as stored); a damaged file raises InputError.
#[pyfunction]
fn parquet_row_groups(py: Python<'_>, path: PathBuf) -> PyResult<Vec<u64>> {
    py.detach(|| guarded(|| ParquetFile::row_group_sizes(&path)))
}

/// Raises InputError unless `path` is a readable parquet file with a top-level string column `field`.
#[pyfunction]
fn check_parquet_column(py: Python<'_>, path: PathBuf, field: String) -> PyResult<()> {
    py.detach(|| guarded(|| ParquetFile::open(&path, &field).map(|_| ())))
}

/// The documents of a parquet file's string column, in lists of about 2 MB of text (null and empty
/// values left out): for Python code that reads small amounts of a corpus itself.
#[pyclass(frozen, module = "bpe_lm._core")]
struct ParquetTexts {
    chunks: Mutex<crate::parquet_input::ColumnChunks>,
    spec: RecordSpec,
}

#[pymethods]
impl ParquetTexts {
    /// `errors_replace`: text that is not UTF-8 read as U+FFFD (else an error naming its row).
    #[new]
    #[pyo3(signature = (path, field, errors_replace = false))]
    fn new(py: Python<'_>, path: PathBuf, field: String, errors_replace: bool) -> PyResult<Self> {
        let read = std::sync::Arc::new(AtomicU64::new(0));
        let input = py.detach(|| guarded(|| parquet_input(&path, &field, None, errors_replace, read)))?;
        Ok(ParquetTexts {
            chunks: Mutex::new(input.chunks),
            spec: input.spec,
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Vec<String>>> {
        py.detach(|| {
            guarded(|| {
                let mut chunks = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
                match chunks.next() {
                    None => Ok(None),
                    Some(chunk) => {
                        let chunk = chunk?;
                        let docs = chunk.documents(&self.spec)?;
                        Ok(Some(docs.texts.into_iter().map(|t| t.into_owned()).collect()))
                    }
                }
            })
        })
    }
}

#[pymodule]
#[pyo3(name = "_core")]
fn core_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("GPT2_PATTERN", GPT2_PATTERN)?;
    m.add("NPY_HEADER_BYTES", crate::npy::HEADER_BYTES)?;
    m.add("MAX_THREADS_PER_CORE", threads::MAX_THREADS_PER_CORE)?;
    m.add("SMALL_INPUT_BYTES", crate::stream::SMALL_INPUT_BYTES)?;
    m.add("COMPRESSION_MAGIC_BYTES", crate::stream::MAGIC_BYTES)?;
    m.add("ERRORS_HINT", records::ERRORS_HINT)?;
    m.add_function(wrap_pyfunction!(reads_str_in_place, m)?)?;
    m.add_function(wrap_pyfunction!(py_is_small_input, m)?)?;
    m.add_function(wrap_pyfunction!(compression_of, m)?)?;
    m.add_function(wrap_pyfunction!(pretokenize, m)?)?;
    m.add_function(wrap_pyfunction!(train_from_counts, m)?)?;
    m.add_function(wrap_pyfunction!(check_vocab_size, m)?)?;
    m.add_function(wrap_pyfunction!(train_from_count_files, m)?)?;
    m.add_class::<Encoder>()?;
    m.add_class::<IdArray>()?;
    m.add_class::<TokenWriter>()?;
    m.add_class::<PretokenCounter>()?;
    m.add_class::<DecompressedReader>()?;
    m.add_class::<ParquetTexts>()?;
    m.add_function(wrap_pyfunction!(parquet_row_groups, m)?)?;
    m.add_function(wrap_pyfunction!(check_parquet_column, m)?)?;
    Ok(())
}
