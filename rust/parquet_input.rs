//! Parquet corpora: one string column, read page by page by the `parquet` crate (no Arrow arrays are
//! built, no copy of the text is made), in chunks of about `RECORD_CHUNK_BYTES` of text that the
//! workers turn into documents (one per row; null and empty values skipped and counted).
//!
//! A damaged file is an error naming the file, never a panic: the `parquet` crate's own panics on
//! malformed input are caught here and reported like its errors.

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use parquet::basic::{Compression, ConvertedType, LogicalType, Repetition, Type as PhysicalType};
use parquet::column::reader::ColumnReaderImpl;
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::metadata::{ColumnChunkMetaData, RowGroupMetaData};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::serialized_reader::SerializedPageReader;
use parquet::schema::types::{ColumnDescPtr, Type};

use crate::error::{panic_message, Error, Result};
use crate::parquet_pages::{page_header, PageHeader, PageKind, Parsed};
use crate::records::{
    document_text, Documents, RecordChunk, RecordInput, RecordSource, RecordSpec, RECORD_CHUNK_BYTES,
};

fn unreadable(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::InvalidInput {
        path: path.to_path_buf(),
        message: format!("not a readable parquet file ({why})"),
    }
}

/// Runs a step of the `parquet` crate, its errors as `unreadable`.
fn guarded<T>(path: &Path, step: impl FnOnce() -> parquet::errors::Result<T>) -> Result<T> {
    step().map_err(|e| unreadable(path, e))
}

thread_local! {
    /// Set while this thread runs `shielded` work: a panic there is reported as an error, not printed.
    static SHIELDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs work that calls into the `parquet` crate, whose accessors and decoders panic on some malformed
/// files (out-of-range indices, unwraps in its metadata): a panic becomes `unreadable`, and the panic
/// hook (wrapped once, the previous one kept for every other panic) stays silent about it.
fn shielded<T>(path: &Path, work: impl FnOnce() -> Result<T>) -> Result<T> {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !SHIELDED.with(|s| s.get()) {
                previous(info);
            }
        }));
    });
    let was = SHIELDED.with(|s| s.replace(true));
    let result = catch_unwind(AssertUnwindSafe(work));
    SHIELDED.with(|s| s.set(was));
    match result {
        Ok(r) => r,
        Err(panic) => Err(unreadable(path, format!("damaged: {}", panic_message(&*panic)))),
    }
}

/// What a column holds, in the words pyarrow users know.
fn kind_of(field: &Type) -> String {
    let info = field.get_basic_info();
    if field.is_group() {
        return match info.logical_type_ref() {
            Some(&LogicalType::List) => "lists".into(),
            Some(&LogicalType::Map) => "maps".into(),
            _ => "structs".into(),
        };
    }
    if info.repetition() == Repetition::REPEATED {
        return "lists".into();
    }
    match field.get_physical_type() {
        PhysicalType::BOOLEAN => "bool".into(),
        PhysicalType::INT32 => "int32".into(),
        PhysicalType::INT64 => "int64".into(),
        PhysicalType::INT96 => "timestamps (int96)".into(),
        PhysicalType::FLOAT => "float".into(),
        PhysicalType::DOUBLE => "double".into(),
        PhysicalType::BYTE_ARRAY => "binary".into(),
        PhysicalType::FIXED_LEN_BYTE_ARRAY => "fixed-size binary".into(),
    }
}

/// A column of strings: annotated as such, or plain binary with no annotation at all, as Hive, Impala and
/// older Spark wrote strings (Spark reads them back as text with `binaryAsString`); each value is checked
/// to be UTF-8 as it is read (`document_text`), so a column of other bytes is named at its first row.
fn is_text(field: &Type) -> bool {
    let info = field.get_basic_info();
    let plain_binary = info.logical_type_ref().is_none() && info.converted_type() == ConvertedType::NONE;
    field.is_primitive()
        && info.repetition() != Repetition::REPEATED
        && field.get_physical_type() == PhysicalType::BYTE_ARRAY
        && (matches!(info.logical_type_ref(), Some(&LogicalType::String))
            || info.converted_type() == ConvertedType::UTF8
            || plain_binary)
}

/// A parquet file's string column `field`, of the row groups `row_groups` (all when None), one record
/// per row; the bytes read (as stored) are added to `read`.
pub fn parquet_input(
    path: &Path,
    field: &str,
    row_groups: Option<&[usize]>,
    lossy: bool,
    read: Arc<AtomicU64>,
) -> Result<RecordInput<ColumnChunks>> {
    let file = ParquetFile::open(path, field)?;
    let total = file.stored_bytes(row_groups)?;
    let text_bytes = file.text_bytes(row_groups)?;
    let chunks = file.chunks(row_groups, RECORD_CHUNK_BYTES, read.clone())?;
    let spec = RecordSource::Parquet {
        path: path.to_path_buf(),
        row_groups: None,
    }
    .spec(field, lossy);
    Ok(RecordInput {
        chunks,
        spec,
        read,
        total,
        text_bytes,
    })
}

/// A parquet file opened for its text column `field` (a top-level string column).
pub struct ParquetFile {
    path: PathBuf,
    reader: SerializedFileReader<File>,
    column: usize,
    max_def: i16,
}

impl ParquetFile {
    fn open_reader(path: &Path) -> Result<SerializedFileReader<File>> {
        let file = File::open(path).map_err(|e| Error::io(Some(path.to_path_buf()), e))?;
        guarded(path, || SerializedFileReader::new(file))
    }

    /// Opens `path` and finds its column `field`; a missing column, or one that does not hold strings,
    /// is an error naming the file and what the column holds.
    pub fn open(path: &Path, field: &str) -> Result<Self> {
        shielded(path, || Self::open_unshielded(path, field))
    }

    fn open_unshielded(path: &Path, field: &str) -> Result<Self> {
        let reader = Self::open_reader(path)?;
        let schema = reader.metadata().file_metadata().schema_descr_ptr();
        let fields = schema.root_schema().get_fields();
        let Some(top) = fields.iter().find(|f| f.name() == field) else {
            let names: Vec<&str> = fields.iter().take(20).map(|f| f.name()).collect();
            return Err(Error::InvalidInput {
                path: path.to_path_buf(),
                message: format!(
                    "has no column {field:?} (its columns: {}); choose one with --text-field",
                    names.join(", ")
                )
                .replace('"', "'"),
            });
        };
        if !is_text(top) {
            return Err(Error::InvalidInput {
                path: path.to_path_buf(),
                message: format!("column '{field}' holds {}, not strings", kind_of(top)),
            });
        }
        let column = schema
            .columns()
            .iter()
            .position(|c| c.path().parts() == [field.to_string()])
            .ok_or_else(|| unreadable(path, format!("its schema lists column '{field}' but no data for it")))?;
        let max_def = schema.column(column).max_def_level();
        Ok(ParquetFile {
            path: path.to_path_buf(),
            reader,
            column,
            max_def,
        })
    }

    /// Bytes of each row group (compressed, as stored), for splitting a file into units of work.
    pub fn row_group_sizes(path: &Path) -> Result<Vec<u64>> {
        shielded(path, || {
            let reader = Self::open_reader(path)?;
            Ok(reader
                .metadata()
                .row_groups()
                .iter()
                .map(|g| g.compressed_size().max(0) as u64)
                .collect())
        })
    }

    /// The chunks of the row groups `row_groups` (all when None), in order; `read` grows by each row
    /// group's stored bytes as it is read.
    pub fn chunks(self, row_groups: Option<&[usize]>, target: usize, read: Arc<AtomicU64>) -> Result<ColumnChunks> {
        let count = self.reader.metadata().num_row_groups();
        let groups: Vec<usize> = match row_groups {
            Some(g) => g.to_vec(),
            None => (0..count).collect(),
        };
        if let Some(&bad) = groups.iter().find(|&&g| g >= count) {
            return Err(Error::InvalidArgument(format!(
                "{}: has {count} row groups, not a row group {bad}",
                self.path.display()
            )));
        }
        let meta = self.reader.metadata();
        let first_rows = (0..count)
            .scan(0u64, |rows, g| {
                let first = *rows;
                *rows = rows.saturating_add(meta.row_group(g).num_rows().max(0) as u64);
                Some(first)
            })
            .collect();
        let file = File::open(&self.path).map_err(|e| Error::io(Some(self.path.clone()), e))?;
        let file_bytes = file
            .metadata()
            .map_err(|e| Error::io(Some(self.path.clone()), e))?
            .len();
        let source = Arc::new(ColumnSource {
            file,
            path: self.path.clone(),
            descr: meta.file_metadata().schema_descr().column(self.column),
            buffers: Mutex::new(Vec::new()),
        });
        Ok(ColumnChunks {
            file: self,
            source,
            file_bytes,
            first_rows,
            groups,
            next_group: 0,
            current: None,
            target: target.max(1),
            read,
            failed: false,
            header: Vec::new(),
        })
    }

    /// Bytes (compressed, as stored) of the row groups `row_groups` (all when None).
    pub fn stored_bytes(&self, row_groups: Option<&[usize]>) -> Result<u64> {
        self.sum_over(row_groups, |g| g.compressed_size())
    }

    /// Bytes of the text column's pages once decompressed, in the row groups `row_groups` (all when
    /// None): its strings and their length prefixes.
    pub fn text_bytes(&self, row_groups: Option<&[usize]>) -> Result<u64> {
        self.sum_over(row_groups, |g| g.column(self.column).uncompressed_size())
    }

    /// The sum of `size` (negative: 0) over the row groups `row_groups` (all when None; those past the
    /// file's are left out, for `chunks` to name).
    fn sum_over(&self, row_groups: Option<&[usize]>, size: impl Fn(&RowGroupMetaData) -> i64) -> Result<u64> {
        shielded(&self.path, || {
            let meta = self.reader.metadata();
            let size = |g: usize| size(meta.row_group(g)).max(0) as u64;
            Ok(match row_groups {
                Some(gs) => gs
                    .iter()
                    .filter(|&&g| g < meta.num_row_groups())
                    .map(|&g| size(g))
                    .sum(),
                None => (0..meta.num_row_groups()).map(size).sum(),
            })
        })
    }
}

/// Some consecutive rows of the text column, as runs of pages not yet read: the walk of the file hands
/// these out (`ColumnChunks`), and the worker that takes one reads, inflates and decodes its pages the
/// first time its documents are asked for.
pub struct ColumnChunk {
    source: Arc<ColumnSource>,
    runs: Vec<PageRun>,
    max_def: i16,
    /// Row number (in the whole file, from 0) of the chunk's first row.
    first_row: u64,
    /// Bytes of its pages, uncompressed: about its text.
    text_bytes: usize,
    decoded: OnceLock<Decoded>,
}

/// A chunk's rows once decoded: the values (views of the inflated pages) and, for a column that may hold
/// nulls, each row's definition level (below `max_def`: null).
struct Decoded {
    values: Vec<ByteArray>,
    levels: Vec<i16>,
}

/// Bytes of a file: where they start and how many.
#[derive(Clone, Copy, Debug)]
struct Span {
    offset: u64,
    len: u64,
}

/// Consecutive pages of one row group's text column (index pages among them are skipped by the
/// decoder), with the row group's dictionary page when one of them refers to it.
struct PageRun {
    dictionary: Option<Span>,
    pages: Span,
    rows: u64,
    compression: Compression,
}

/// What every chunk of one input is read from: the file (read at offsets, by any thread) and the
/// column's description; and the input's page buffers kept for reuse.
struct ColumnSource {
    file: File,
    path: PathBuf,
    descr: ColumnDescPtr,
    buffers: Mutex<Vec<Vec<u8>>>,
}

impl ColumnSource {
    /// Appends the bytes of `span` to `into`.
    fn read_span(&self, span: Span, into: &mut Vec<u8>) -> Result<()> {
        let start = into.len();
        // Spans lie within the file: `ColumnChunks::open_group` checks a column chunk against the file's
        // length, and `walk_run` each page against its column chunk.
        into.resize(start + span.len as usize, 0);
        read_at(&self.file, &mut into[start..], span.offset).map_err(|e| Error::io(Some(self.path.clone()), e))
    }

    /// Decodes the rows of `run` onto `out`: its pages (the dictionary first, where it has one) read into
    /// memory as a column chunk of their own, which the `parquet` crate inflates and decodes.
    fn decode_run(self: &Arc<Self>, run: &PageRun, max_def: i16, out: &mut Decoded) -> Result<()> {
        let path = &self.path;
        let kept = self.buffers.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut bytes = kept.unwrap_or_default();
        if let Some(dictionary) = run.dictionary {
            self.read_span(dictionary, &mut bytes)?;
        }
        let data_offset = bytes.len() as i64;
        self.read_span(run.pages, &mut bytes)?;
        let stored = bytes.len() as i64;
        let meta = guarded(path, || {
            ColumnChunkMetaData::builder(self.descr.clone())
                .set_compression(run.compression)
                .set_dictionary_page_offset(run.dictionary.map(|_| 0))
                .set_data_page_offset(data_offset)
                .set_total_compressed_size(stored)
                .set_num_values(run.rows as i64)
                .build()
        })?;
        let bytes = Bytes::from_owner(PageBuffer {
            bytes,
            source: self.clone(),
        });
        let pages = guarded(path, || {
            SerializedPageReader::new(Arc::new(bytes), &meta, run.rows as usize, None)
        })?;
        let mut reader = ColumnReaderImpl::<ByteArrayType>::new(self.descr.clone(), Box::new(pages));
        let mut left = run.rows;
        while left > 0 {
            let levels = if max_def > 0 { Some(&mut out.levels) } else { None };
            let want = usize::try_from(left).unwrap_or(usize::MAX);
            let (records, _, _) = guarded(path, || reader.read_records(want, levels, None, &mut out.values))?;
            if records == 0 {
                return Err(unreadable(
                    path,
                    format!("its pages end {left} rows before the {} their headers give", run.rows),
                ));
            }
            left = left.saturating_sub(records as u64);
        }
        Ok(())
    }
}

/// Pages as read from a file, before inflating: the buffer goes back to its input's `ColumnSource` when
/// the last view of it is dropped (uncompressed pages' values are views of it), for the next run to read
/// into, where a fresh buffer of a megabyte or two faulted in its memory every time (`encode_files` of
/// `benches/formats.py`' parquet file, fresh processes, 2 threads, 7 interleaved rounds, medians: 6,123 →
/// 5,114 page faults, as many as when the pages were read on one thread (4,996); 124.8 → 119.8 ms).
struct PageBuffer {
    bytes: Vec<u8>,
    source: Arc<ColumnSource>,
}

impl AsRef<[u8]> for PageBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for PageBuffer {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.bytes);
        // A run is about RECORD_CHUNK_BYTES of text, and rarely much more: larger buffers are not kept.
        if bytes.capacity() <= 2 * RECORD_CHUNK_BYTES {
            bytes.clear();
            let mut kept = self.source.buffers.lock().unwrap_or_else(PoisonError::into_inner);
            if kept.len() < KEPT_PAGE_BUFFERS {
                kept.push(bytes);
            }
        }
    }
}

/// Page buffers an input keeps for reuse (`PageBuffer`; freed with the input): about as many as a large
/// machine has runs in flight.
const KEPT_PAGE_BUFFERS: usize = 32;

/// Reads `buf.len()` bytes of `file` from `offset`, leaving the file's position alone (so threads can
/// share the file).
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut done, mut buf) = (0u64, buf);
        while !buf.is_empty() {
            match std::os::windows::fs::FileExt::seek_read(file, buf, offset + done) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    done += n as u64;
                    buf = &mut buf[n..];
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl ColumnChunk {
    fn decoded(&self) -> Result<&Decoded> {
        if let Some(decoded) = self.decoded.get() {
            return Ok(decoded);
        }
        let decoded = shielded(&self.source.path, || {
            let mut decoded = Decoded {
                values: Vec::new(),
                levels: Vec::new(),
            };
            for run in &self.runs {
                self.source.decode_run(run, self.max_def, &mut decoded)?;
            }
            Ok(decoded)
        })?;
        Ok(self.decoded.get_or_init(|| decoded))
    }
}

impl RecordChunk for ColumnChunk {
    fn prepare(&self) {
        let _ = self.decoded();
    }

    fn text_bytes(&self) -> usize {
        self.text_bytes
    }

    fn documents(&self, spec: &RecordSpec) -> Result<Documents<'_>> {
        let decoded = self.decoded()?;
        let rows = if self.max_def > 0 {
            decoded.levels.len()
        } else {
            decoded.values.len()
        };
        let mut docs = Documents::default();
        let mut values = decoded.values.iter();
        for i in 0..rows {
            if self.max_def > 0 && decoded.levels[i] < self.max_def {
                docs.skipped += 1;
                continue;
            }
            let row = self.first_row + i as u64;
            let value = values
                .next()
                .ok_or_else(|| unreadable(&spec.path, format!("row {row} lacks its value")))?;
            let bytes: &[u8] = value.as_ref();
            if bytes.is_empty() {
                docs.skipped += 1;
                continue;
            }
            docs.texts.push(document_text(bytes, &spec.path, row, spec.lossy)?);
        }
        Ok(docs)
    }
}

/// Where the walk is in one row group's text column.
struct GroupWalk {
    /// Where the column chunk starts and ends, and the next page header's offset.
    start: u64,
    end: u64,
    offset: u64,
    /// The group's dictionary page and its bytes once inflated.
    dictionary: Option<(Span, u64)>,
    compression: Compression,
    /// Rows the metadata gives the row group, and rows of the pages walked so far.
    rows: u64,
    rows_walked: u64,
    /// Row number (in the whole file) of the walk's next row.
    next_row: u64,
    stored: u64,
    reported: u64,
}

/// The chunks of a parquet file's text column (see `ParquetFile::chunks`), found by walking its page
/// headers (`parquet_pages`); the pages are read and decoded by whoever takes the chunk.
pub struct ColumnChunks {
    file: ParquetFile,
    source: Arc<ColumnSource>,
    /// The file's length: no page may run past it.
    file_bytes: u64,
    /// Row number (in the whole file) of each row group's first row.
    first_rows: Vec<u64>,
    groups: Vec<usize>,
    next_group: usize,
    current: Option<GroupWalk>,
    target: usize,
    read: Arc<AtomicU64>,
    failed: bool,
    /// Bytes read for a page header (reused).
    header: Vec<u8>,
}

/// Bytes read for a page header at first (headers with statistics of long strings reach a few KB);
/// more are read when it goes on.
const HEADER_WINDOW: u64 = 16 << 10;

impl ColumnChunks {
    fn open_group(&mut self, g: usize) -> Result<GroupWalk> {
        let path = &self.file.path;
        let meta = self.file.reader.metadata();
        let group = meta.row_group(g);
        let column = group.column(self.file.column);
        let (offset, len) = column.byte_range();
        let end = offset.saturating_add(len);
        if end > self.file_bytes {
            return Err(unreadable(
                path,
                format!("row group {g}'s text column runs past the end of the file"),
            ));
        }
        Ok(GroupWalk {
            start: offset,
            end,
            offset,
            dictionary: None,
            compression: column.compression(),
            rows: group.num_rows().max(0) as u64,
            rows_walked: 0,
            next_row: self.first_rows[g],
            stored: group.compressed_size().max(0) as u64,
            reported: 0,
        })
    }

    /// The header of the page at `offset`, of a column chunk that ends at `end`.
    fn page_header(&mut self, offset: u64, end: u64) -> Result<PageHeader> {
        let mut window = HEADER_WINDOW.min(end - offset);
        loop {
            self.header.clear();
            self.source.read_span(Span { offset, len: window }, &mut self.header)?;
            match page_header(&self.header) {
                Parsed::Header(h) => return Ok(h),
                Parsed::NeedMore if window < end - offset => window = (window * 4).min(end - offset),
                Parsed::NeedMore => {
                    return Err(unreadable(&self.file.path, "a page header runs past its column chunk"));
                }
                Parsed::Damaged(why) => return Err(unreadable(&self.file.path, why)),
            }
        }
    }

    /// Walks the current row group's pages from where the walk stands, up to `bytes` reaching `target`
    /// (bytes of pages once inflated) or the group's end: the run of pages passed (None if none).
    fn walk_run(&mut self, bytes: &mut usize) -> Result<Option<PageRun>> {
        let mut run: Option<PageRun> = None;
        let mut needs_dictionary = false;
        loop {
            let walk = self.current.as_ref().expect("a group is open");
            let (offset, end) = (walk.offset, walk.end);
            if offset >= end || *bytes >= self.target {
                break;
            }
            let header = self.page_header(offset, end)?;
            let page_end = (offset + header.header_len as u64)
                .checked_add(header.stored)
                .filter(|&e| e <= end)
                .ok_or_else(|| unreadable(&self.file.path, "a page runs past its column chunk"))?;
            let walk = self.current.as_mut().expect("a group is open");
            match header.kind {
                PageKind::Dictionary if run.is_some() => break, // a run is contiguous pages
                PageKind::Dictionary => {
                    let span = Span {
                        offset,
                        len: page_end - offset,
                    };
                    walk.dictionary = Some((span, header.inflated));
                }
                kind => {
                    let rows = match kind {
                        PageKind::Data {
                            rows,
                            dictionary_encoded,
                        } => {
                            walk.rows_walked = walk.rows_walked.saturating_add(rows);
                            *bytes = bytes.saturating_add(header.inflated as usize);
                            if dictionary_encoded && !needs_dictionary {
                                // The run's values are in the dictionary (its pages hold their indices):
                                // its bytes count towards the chunk's, as decoding it is part of the work.
                                needs_dictionary = true;
                                let inflated = walk.dictionary.map_or(0, |(_, inflated)| inflated);
                                *bytes = bytes.saturating_add(inflated as usize);
                            }
                            rows
                        }
                        _ => 0, // an index page: skipped by the decoder, no rows
                    };
                    let run = run.get_or_insert(PageRun {
                        dictionary: None,
                        pages: Span { offset, len: 0 },
                        rows: 0,
                        compression: walk.compression,
                    });
                    run.pages.len = page_end - run.pages.offset;
                    run.rows = run.rows.saturating_add(rows);
                }
            }
            walk.offset = page_end;
        }
        let walk = self.current.as_ref().expect("a group is open");
        if let Some(run) = run.as_mut() {
            if needs_dictionary {
                run.dictionary = walk.dictionary.map(|(span, _)| span);
            }
        }
        Ok(run)
    }

    fn next_chunk(&mut self) -> Result<Option<ColumnChunk>> {
        let mut chunk = ColumnChunk {
            source: self.source.clone(),
            runs: Vec::new(),
            max_def: self.file.max_def,
            first_row: 0,
            text_bytes: 0,
            decoded: OnceLock::new(),
        };
        let mut rows = 0u64;
        let mut bytes = 0usize;
        loop {
            if self.current.is_none() {
                let Some(&g) = self.groups.get(self.next_group) else {
                    break;
                };
                self.next_group += 1;
                let walk = self.open_group(g)?;
                // Small row groups share a chunk, but a chunk holds consecutive rows (a unit's row
                // groups need not be): a group that does not follow on starts the next chunk.
                let follows = walk.next_row == chunk.first_row + rows;
                self.current = Some(walk);
                if rows > 0 && !follows {
                    break;
                }
            }
            if rows == 0 {
                chunk.first_row = self.current.as_ref().expect("set above").next_row;
            }
            if let Some(run) = self.walk_run(&mut bytes)? {
                rows += run.rows;
                self.current.as_mut().expect("set above").next_row += run.rows;
                chunk.runs.push(run);
            }
            let walk = self.current.as_mut().expect("set above");
            let done = walk.offset >= walk.end;
            // Progress in the group's stored bytes, by how far through its text column the walk is.
            let share = if done {
                walk.stored
            } else {
                let through = u128::from(walk.offset - walk.start) * u128::from(walk.stored);
                (through / u128::from((walk.end - walk.start).max(1))) as u64
            };
            self.read
                .fetch_add(share.saturating_sub(walk.reported), Ordering::Relaxed);
            walk.reported = walk.reported.max(share);
            if done {
                if walk.rows_walked != walk.rows {
                    let (walked, rows) = (walk.rows_walked, walk.rows);
                    return Err(unreadable(
                        &self.file.path,
                        if walked < rows {
                            format!(
                                "a row group ends {} rows before the {rows} its metadata gives",
                                rows - walked
                            )
                        } else {
                            format!("a row group's pages hold {walked} rows, {rows} by its metadata")
                        },
                    ));
                }
                self.current = None;
            }
            if bytes >= self.target {
                break;
            }
        }
        chunk.text_bytes = bytes;
        Ok((!chunk.runs.is_empty()).then_some(chunk))
    }
}

impl Iterator for ColumnChunks {
    type Item = Result<ColumnChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let path = self.file.path.clone();
        match shielded(&path, || self.next_chunk()) {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::basic::Compression;
    use parquet::data_type::ByteArray;
    use parquet::file::properties::{WriterProperties, WriterVersion};
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    /// Rows of text (None: null) written in row groups of `group_rows`, pages of a few rows, a
    /// dictionary that fills after a few hundred bytes (its pages then plain), v1 or v2 pages.
    fn write(path: &Path, rows: &[Option<String>], group_rows: usize, v2: bool, dictionary: bool) {
        let schema = parse_message_type("message m { optional binary text (UTF8); }").unwrap();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_writer_version(if v2 {
                WriterVersion::PARQUET_2_0
            } else {
                WriterVersion::PARQUET_1_0
            })
            .set_dictionary_enabled(dictionary)
            .set_dictionary_page_size_limit(300)
            .set_data_page_row_count_limit(5)
            .set_write_batch_size(5)
            .build();
        let mut writer = SerializedFileWriter::new(File::create(path).unwrap(), schema.into(), props.into()).unwrap();
        for group in rows.chunks(group_rows) {
            let mut rg = writer.next_row_group().unwrap();
            let mut col = rg.next_column().unwrap().unwrap();
            let values: Vec<ByteArray> = group.iter().flatten().map(|t| ByteArray::from(t.as_str())).collect();
            let levels: Vec<i16> = group.iter().map(|t| t.is_some() as i16).collect();
            col.typed::<ByteArrayType>()
                .write_batch(&values, Some(&levels), None)
                .unwrap();
            col.close().unwrap();
            rg.close().unwrap();
        }
        writer.close().unwrap();
    }

    /// The documents of the row groups `groups` in chunks of about `target` bytes, each with the row of
    /// the file it comes from (from the chunk's first row and its nulls), and the chunks' count.
    fn read(path: &Path, groups: Option<&[usize]>, target: usize) -> (Vec<(u64, String)>, usize, [usize; 2]) {
        let chunks = ParquetFile::open(path, "text")
            .unwrap()
            .chunks(groups, target, Arc::new(AtomicU64::new(0)))
            .unwrap();
        let spec = RecordSpec {
            path: path.to_path_buf(),
            field: "text".into(),
            whole_file: true,
            lossy: false,
        };
        let (mut docs, mut count, mut runs) = (Vec::new(), 0, [0, 0]);
        for chunk in chunks {
            let chunk = chunk.unwrap();
            count += 1;
            for run in &chunk.runs {
                runs[run.dictionary.is_some() as usize] += 1;
            }
            if count % 2 == 0 {
                chunk.prepare(); // decoded ahead, as a reader of its own does
            }
            let decoded = chunk.decoded().unwrap();
            let mut texts = chunk.documents(&spec).unwrap().texts.into_iter();
            for (i, &level) in decoded.levels.iter().enumerate() {
                let text = if level == 1 {
                    texts.next().unwrap().into_owned()
                } else {
                    String::new()
                };
                if !text.is_empty() {
                    docs.push((chunk.first_row + i as u64, text));
                }
            }
        }
        (docs, count, runs)
    }

    #[test]
    fn chunks_of_any_size_cut_between_pages_read_every_row_once_in_order() {
        let scratch = crate::scratch::Scratch::new("parquet-chunks");
        let rows: Vec<Option<String>> = (0..230)
            .map(|i| (i % 17 != 3).then(|| format!("row {i} {}", "x".repeat(i % 40))))
            .collect();
        let expected: Vec<(u64, String)> = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.clone().filter(|t| !t.is_empty()).map(|t| (i as u64, t)))
            .collect();
        for (v2, dictionary) in [(false, true), (true, true), (false, false), (true, false)] {
            let path = scratch.path(&format!("t-{v2}-{dictionary}.parquet"));
            write(&path, &rows, 60, v2, dictionary);
            let mut counts = Vec::new();
            for target in [1, 200, 3_000, usize::MAX] {
                let (docs, count, runs) = read(&path, None, target);
                assert_eq!(docs, expected, "v2 {v2}, dictionary {dictionary}, target {target}");
                counts.push(count);
                if target == 1 {
                    // Runs of dictionary-encoded pages (given the dictionary) and, once it filled, of plain
                    // ones (not given it).
                    assert!(runs[0] > 0 && (runs[1] > 0) == dictionary, "{runs:?}");
                }
            }
            // Small targets cut the row groups between pages; the largest keeps the file in one chunk.
            assert!(counts[0] > 4 * 4 && counts[3] == 1, "{counts:?}");
            // Row groups out of order and apart: each starts a chunk, rows numbered in the file.
            let (docs, _, _) = read(&path, Some(&[3, 1]), 3_000);
            let want: Vec<_> = expected
                .iter()
                .filter(|(r, _)| (180..230).contains(r))
                .chain(expected.iter().filter(|(r, _)| (60..120).contains(r)))
                .cloned()
                .collect();
            assert_eq!(docs, want);
        }
    }
}
