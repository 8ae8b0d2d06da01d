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
use std::sync::Arc;

use parquet::basic::{ConvertedType, LogicalType, Repetition, Type as PhysicalType};
use parquet::column::reader::{ColumnReader, ColumnReaderImpl};
use parquet::data_type::{ByteArray, ByteArrayType};
use parquet::file::metadata::RowGroupMetaData;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::schema::types::Type;

use crate::error::{panic_message, Error, Result};
use crate::records::{document_text, Documents, RecordChunk, RecordInput, RecordSpec, RECORD_CHUNK_BYTES};

/// Rows asked of the column reader at a time while a chunk fills up to its target size.
const ROWS_PER_READ: usize = 256;

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
/// per row.
pub fn parquet_input(
    path: &Path,
    field: &str,
    row_groups: Option<&[usize]>,
    lossy: bool,
) -> Result<RecordInput<ColumnChunks>> {
    let file = ParquetFile::open(path, field)?;
    let total = file.stored_bytes(row_groups)?;
    let text_bytes = file.text_bytes(row_groups)?;
    let read = Arc::new(AtomicU64::new(0));
    let chunks = file.chunks(row_groups, RECORD_CHUNK_BYTES, read.clone())?;
    let spec = RecordSpec {
        path: path.to_path_buf(),
        field: field.to_string(),
        whole_file: true,
        lossy,
    };
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
        Ok(ColumnChunks {
            file: self,
            first_rows,
            groups,
            next_group: 0,
            current: None,
            target: target.max(1),
            read,
            failed: false,
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

/// Some consecutive rows of the text column: the values (views of the decoded pages) and, for a column
/// that may hold nulls, each row's definition level (below `max_def`: null).
pub struct ColumnChunk {
    values: Vec<ByteArray>,
    levels: Vec<i16>,
    max_def: i16,
    /// Row number (in the whole file, from 0) of the chunk's first row.
    first_row: u64,
}

impl ColumnChunk {
    fn rows(&self) -> usize {
        if self.max_def > 0 {
            self.levels.len()
        } else {
            self.values.len()
        }
    }
}

impl RecordChunk for ColumnChunk {
    fn documents(&self, spec: &RecordSpec) -> Result<Documents<'_>> {
        let mut docs = Documents::default();
        let mut values = self.values.iter();
        for i in 0..self.rows() {
            if self.max_def > 0 && self.levels[i] < self.max_def {
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

struct GroupCursor {
    reader: ColumnReaderImpl<ByteArrayType>,
    rows_left: u64,
    next_row: u64,
    rows: u64,
    stored: u64,
    reported: u64,
}

/// The chunks of a parquet file's text column (see `ParquetFile::chunks`).
pub struct ColumnChunks {
    file: ParquetFile,
    /// Row number (in the whole file) of each row group's first row.
    first_rows: Vec<u64>,
    groups: Vec<usize>,
    next_group: usize,
    current: Option<GroupCursor>,
    target: usize,
    read: Arc<AtomicU64>,
    failed: bool,
}

impl ColumnChunks {
    fn open_group(&mut self, g: usize) -> Result<GroupCursor> {
        let meta = self.file.reader.metadata();
        let first_row = self.first_rows[g];
        let rows = meta.row_group(g).num_rows().max(0) as u64;
        let stored = meta.row_group(g).compressed_size().max(0) as u64;
        let (reader, column, path) = (&self.file.reader, self.file.column, &self.file.path);
        let column_reader = guarded(path, || reader.get_row_group(g)?.get_column_reader(column))?;
        let ColumnReader::ByteArrayColumnReader(reader) = column_reader else {
            return Err(unreadable(path, "the text column is not stored as byte arrays"));
        };
        Ok(GroupCursor {
            reader,
            rows_left: rows,
            next_row: first_row,
            rows,
            stored,
            reported: 0,
        })
    }

    fn next_chunk(&mut self) -> Result<Option<ColumnChunk>> {
        let max_def = self.file.max_def;
        let mut chunk = ColumnChunk {
            values: Vec::new(),
            levels: Vec::new(),
            max_def,
            first_row: 0,
        };
        let mut bytes = 0usize;
        loop {
            if self.current.is_none() {
                let Some(&g) = self.groups.get(self.next_group) else {
                    break;
                };
                self.next_group += 1;
                let cursor = self.open_group(g)?;
                // Small row groups share a chunk, but a chunk holds consecutive rows (a unit's row
                // groups need not be): a group that does not follow on starts the next chunk.
                let follows = cursor.next_row == chunk.first_row + chunk.rows() as u64;
                self.current = Some(cursor);
                if chunk.rows() > 0 && !follows {
                    break;
                }
            }
            let cursor = self.current.as_mut().expect("set above");
            if chunk.rows() == 0 {
                chunk.first_row = cursor.next_row;
            }
            let want = (cursor.rows_left as usize).min(ROWS_PER_READ);
            let values_before = chunk.values.len();
            let path = &self.file.path;
            let (records, _, _) = if want == 0 {
                (0, 0, 0)
            } else {
                let levels = if max_def > 0 { Some(&mut chunk.levels) } else { None };
                guarded(path, || {
                    cursor.reader.read_records(want, levels, None, &mut chunk.values)
                })?
            };
            bytes += chunk.values[values_before..].iter().map(|v| v.len()).sum::<usize>();
            cursor.rows_left = cursor.rows_left.saturating_sub(records as u64);
            cursor.next_row += records as u64;
            let done = cursor.rows - cursor.rows_left;
            let share = cursor.stored * done / cursor.rows.max(1);
            self.read.fetch_add(share - cursor.reported, Ordering::Relaxed);
            cursor.reported = share;
            if records == 0 || cursor.rows_left == 0 {
                if records == 0 && cursor.rows_left > 0 {
                    return Err(unreadable(
                        path,
                        format!(
                            "a row group ends {} rows before the {} its metadata gives",
                            cursor.rows_left, cursor.rows
                        ),
                    ));
                }
                self.read.fetch_add(cursor.stored - cursor.reported, Ordering::Relaxed);
                self.current = None;
            }
            if bytes >= self.target {
                break;
            }
        }
        Ok((chunk.rows() > 0).then_some(chunk))
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
