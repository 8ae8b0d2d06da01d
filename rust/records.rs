//! Record corpora: JSON lines (plain, gzip or zstd) read as one document per record, the chunks of
//! every record reader (these, and parquet's in `parquet_input.rs`) as the pipelines take them, and
//! batches of documents handed over by readers in Python (Arrow columns, read by pyarrow).
//!
//! A record's text is text: special-token strings inside it are ordinary bytes. Null and empty texts
//! are skipped and counted; a line that is not a JSON object, or whose field is missing or not a
//! string, is an error naming the file, the line and the field.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::error::{Error, Result};
use crate::json_line::{self, Scan};
use crate::parquet_input::{parquet_input, ColumnChunk};
use crate::stream::{fill_buffer, take_front, Chained, Source, TextSource};

/// Target size of one chunk of lines: large enough to amortise the hand-off between threads.
pub const RECORD_CHUNK_BYTES: usize = 2 << 20;

/// Whole lines of a JSON-lines stream, and where they start.
pub struct LineChunk {
    pub bytes: Vec<u8>,
    /// 1-based number of the chunk's first line, counted from where the stream starts.
    pub first_line: u64,
    /// Byte offset of the chunk in its (decompressed) file.
    pub offset: u64,
}

/// Cuts a stream into chunks of whole lines of about `target` bytes (a longer line makes a longer chunk).
pub struct LineChunker {
    source: Box<dyn Source>,
    path: PathBuf,
    buf: Vec<u8>,
    target: usize,
    offset: u64,
    line: u64,
    eof: bool,
}

impl LineChunker {
    pub fn new(source: Box<dyn Source>, path: PathBuf, start_offset: u64, target: usize) -> Self {
        LineChunker {
            source,
            path,
            buf: Vec::new(),
            target: target.max(1),
            offset: start_offset,
            line: 1,
            eof: false,
        }
    }

    fn fill(&mut self, want: usize) -> Result<()> {
        fill_buffer(&mut *self.source, &mut self.buf, want, &mut self.eof)
            .map_err(|e| Error::io(Some(self.path.clone()), e))
    }

    fn next_chunk(&mut self) -> Result<Option<LineChunk>> {
        let mut want = self.target;
        loop {
            self.fill(want)?;
            let cut = if self.eof {
                Some(self.buf.len())
            } else {
                memchr::memrchr(b'\n', &self.buf).map(|i| i + 1)
            };
            match cut {
                Some(0) => return Ok(None),
                Some(len) => {
                    let bytes = take_front(&mut self.buf, len);
                    let chunk = LineChunk {
                        first_line: self.line,
                        offset: self.offset,
                        bytes,
                    };
                    self.line += memchr::memchr_iter(b'\n', &chunk.bytes).count() as u64;
                    self.offset += len as u64;
                    return Ok(Some(chunk));
                }
                None => want = self.buf.len() * 2,
            }
        }
    }
}

impl Iterator for LineChunker {
    type Item = Result<LineChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_chunk() {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => None,
            Err(e) => {
                self.eof = true;
                self.buf.clear();
                Some(Err(e))
            }
        }
    }
}

/// Where a chunk of records comes from, for its documents and for errors.
pub struct RecordSpec {
    pub path: PathBuf,
    /// The field (JSON lines) holding each record's text.
    pub field: String,
    /// The chunks are the whole file's (lines are then numbered; else placed by byte offset).
    pub whole_file: bool,
    /// Text that is not UTF-8, and JSON escapes of half a surrogate pair, read as U+FFFD (`--errors
    /// replace`), not refused.
    pub lossy: bool,
}

/// An opened record input as the pipelines take it: its chunks (read on one thread), where they come
/// from, and for progress the bytes read so far (`read`, grown by the reader) of `total`.
pub struct RecordInput<I> {
    pub chunks: I,
    pub spec: RecordSpec,
    pub read: Arc<AtomicU64>,
    pub total: u64,
    /// About how many bytes of text the records hold, for sizing the piece caches.
    pub text_bytes: u64,
}

/// A JSON-lines file (plain, gzip or zstd; or a byte range of a plain one that starts at a line), its
/// records' text in the field `field`; the bytes read are added to `read`.
pub fn jsonl_input(
    source: &TextSource,
    field: &str,
    lossy: bool,
    read: Arc<AtomicU64>,
) -> Result<RecordInput<LineChunker>> {
    let total = source.disk_bytes()?;
    let stream = source.open(read.clone())?;
    // The lines' text fields: a little less than the lines.
    let text_bytes = stream.expected_bytes(total);
    let chunks = LineChunker::new(stream, source.path.clone(), source.start(), RECORD_CHUNK_BYTES);
    Ok(RecordInput {
        chunks,
        spec: RecordSource::Jsonl(source.clone()).spec(field, lossy),
        read,
        total,
        text_bytes,
    })
}

/// A record input to read: a JSON-lines file (or a byte range of a plain one that starts at a line), or
/// row groups of a parquet file (all when None).
#[derive(Clone, Debug)]
pub enum RecordSource {
    Jsonl(TextSource),
    Parquet {
        path: PathBuf,
        row_groups: Option<Vec<usize>>,
    },
}

/// The chunks of an opened record input of either kind.
pub type AnyChunks = Box<dyn Iterator<Item = Result<AnyChunk>> + Send>;

impl RecordSource {
    /// Whether this is a small input (`stream::is_small_input`).
    pub fn is_small(&self) -> bool {
        match self {
            RecordSource::Jsonl(source) => source.is_small(),
            RecordSource::Parquet { path, .. } => crate::stream::is_small_input(path, None),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            RecordSource::Jsonl(source) => &source.path,
            RecordSource::Parquet { path, .. } => path,
        }
    }

    /// Whether the input is read on one thread at a time: a compressed JSON-lines file (`TextSource::
    /// is_compressed`; a parquet file's pages inflate on the workers).
    pub fn is_compressed(&self) -> bool {
        match self {
            RecordSource::Jsonl(source) => source.is_compressed(),
            RecordSource::Parquet { .. } => false,
        }
    }

    /// Where its chunks come from, for their documents and for errors.
    pub fn spec(&self, field: &str, lossy: bool) -> RecordSpec {
        RecordSpec {
            path: self.path().to_path_buf(),
            field: field.to_string(),
            whole_file: match self {
                RecordSource::Jsonl(source) => source.range.is_none(),
                RecordSource::Parquet { .. } => true,
            },
            lossy,
        }
    }

    /// Bytes of the file on disk (or of the range), for progress before it is opened.
    pub fn disk_bytes(&self) -> Result<u64> {
        match self {
            RecordSource::Jsonl(source) => source.disk_bytes(),
            RecordSource::Parquet { path, .. } => TextSource::whole(path.clone()).disk_bytes(),
        }
    }

    /// Opens the input, the bytes it reads added to `read`.
    pub fn open(&self, field: &str, lossy: bool, read: Arc<AtomicU64>) -> Result<RecordInput<AnyChunks>> {
        fn boxed<C: Into<AnyChunk>>(
            input: RecordInput<impl Iterator<Item = Result<C>> + Send + 'static>,
        ) -> RecordInput<AnyChunks> {
            RecordInput {
                chunks: Box::new(input.chunks.map(|c| c.map(Into::into))),
                spec: input.spec,
                read: input.read,
                total: input.total,
                text_bytes: input.text_bytes,
            }
        }
        Ok(match self {
            RecordSource::Jsonl(source) => boxed(jsonl_input(source, field, lossy, read)?),
            RecordSource::Parquet { path, row_groups } => {
                boxed(parquet_input(path, field, row_groups.as_deref(), lossy, read)?)
            }
        })
    }
}

/// A chunk of either record reader.
pub enum AnyChunk {
    Lines(LineChunk),
    Column(ColumnChunk),
}

impl From<LineChunk> for AnyChunk {
    fn from(chunk: LineChunk) -> Self {
        AnyChunk::Lines(chunk)
    }
}

impl From<ColumnChunk> for AnyChunk {
    fn from(chunk: ColumnChunk) -> Self {
        AnyChunk::Column(chunk)
    }
}

impl RecordChunk for AnyChunk {
    fn documents(&self, spec: &RecordSpec) -> Result<Documents<'_>> {
        match self {
            AnyChunk::Lines(c) => c.documents(spec),
            AnyChunk::Column(c) => c.documents(spec),
        }
    }

    fn prepare(&self) {
        match self {
            AnyChunk::Lines(c) => c.prepare(),
            AnyChunk::Column(c) => c.prepare(),
        }
    }

    fn text_bytes(&self) -> usize {
        match self {
            AnyChunk::Lines(c) => c.text_bytes(),
            AnyChunk::Column(c) => c.text_bytes(),
        }
    }
}

/// The chunks of several record inputs as one stream (`Chained`), each with the index of its input.
pub type ManyRecords<'s> = Chained<AnyChunks, Box<dyn FnMut(usize) -> Result<AnyChunks> + Send + 's>>;

/// The chunks of `sources` as one stream (the bytes read added to `read`), and about how many bytes of
/// text each byte on disk holds, as the first input has it (for sizing caches). The first input is opened
/// here: an error in opening it is given now.
pub fn many_records<'s>(
    sources: &'s [RecordSource],
    field: &str,
    lossy: bool,
    read: Arc<AtomicU64>,
) -> Result<(ManyRecords<'s>, f64)> {
    let field = field.to_string();
    let (first, text_per_disk_byte) = match sources.first() {
        Some(source) => {
            let input = source.open(&field, lossy, read.clone())?;
            let ratio = input.text_bytes as f64 / input.total.max(1) as f64;
            (Some(input.chunks), ratio)
        }
        None => (None, 1.0),
    };
    let open = move |i: usize| Ok(sources[i].open(&field, lossy, read.clone())?.chunks);
    Ok((Chained::new(sources.len(), first, Box::new(open)), text_per_disk_byte))
}

/// A chunk of records, read on the reader thread; its documents are found on a worker.
pub trait RecordChunk: Send {
    /// The chunk's documents (borrowed from it where possible) and the records skipped.
    fn documents(&self, spec: &RecordSpec) -> Result<Documents<'_>>;

    /// Does ahead of `documents`, on any thread, what of its work the chunk keeps (parquet: its pages
    /// inflated and decoded); an error here is left for `documents` to give.
    fn prepare(&self) {}

    /// About how many bytes of text the chunk holds (for handing small chunks over together:
    /// `stream::grouped`).
    fn text_bytes(&self) -> usize;
}

impl RecordChunk for LineChunk {
    fn documents(&self, spec: &RecordSpec) -> Result<Documents<'_>> {
        parse_jsonl(self, spec)
    }

    fn text_bytes(&self) -> usize {
        self.bytes.len()
    }
}

/// What a message about text that is not UTF-8 ends with: the way out (Python's readers add the same,
/// as `_core.ERRORS_HINT`).
pub(crate) const ERRORS_HINT: &str = "--errors replace reads it with U+FFFD";

/// A record's text as a document: it must be UTF-8 (`row` numbers the record, for the error), unless
/// `lossy`, where what is not becomes U+FFFD.
pub fn document_text<'a>(bytes: &'a [u8], path: &std::path::Path, row: u64, lossy: bool) -> Result<Cow<'a, str>> {
    match crate::arch::utf8_str(bytes) {
        Ok(text) => Ok(Cow::Borrowed(text)),
        Err(_) if lossy => Ok(String::from_utf8_lossy(bytes)),
        Err(valid) => Err(Error::InvalidRecord {
            path: path.to_path_buf(),
            position: format!("row {row}"),
            message: format!("is not valid UTF-8 (at byte {valid} of the text); {ERRORS_HINT}"),
        }),
    }
}

/// The documents of some records (borrowed from the chunk where the JSON string holds no escapes), and
/// how many records were skipped as null or empty.
#[derive(Debug, Default)]
pub struct Documents<'a> {
    pub texts: Vec<Cow<'a, str>>,
    pub skipped: u64,
}

/// Documents and records seen, summed over a whole input.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordStats {
    pub documents: u64,
    pub skipped: u64,
    /// UTF-8 bytes of the documents' text.
    pub text_bytes: u64,
}

impl RecordStats {
    pub fn add(&mut self, other: RecordStats) {
        self.documents += other.documents;
        self.skipped += other.skipped;
        self.text_bytes += other.text_bytes;
    }

    pub fn of(docs: &[&str], skipped: u64) -> Self {
        RecordStats {
            documents: docs.len() as u64,
            skipped,
            text_bytes: docs.iter().map(|d| d.len() as u64).sum(),
        }
    }
}

/// What a record's field held.
#[derive(Debug, PartialEq, Eq)]
pub enum FieldValue<'a> {
    Text(Cow<'a, str>),
    Null,
    Other(&'static str),
}

impl FieldValue<'_> {
    fn into_owned(self) -> FieldValue<'static> {
        match self {
            FieldValue::Text(t) => FieldValue::Text(Cow::Owned(t.into_owned())),
            FieldValue::Null => FieldValue::Null,
            FieldValue::Other(kind) => FieldValue::Other(kind),
        }
    }
}

/// Deserializes one JSON object, keeping only the value of `name` (others are skipped unparsed).
struct FieldOf<'n> {
    name: &'n str,
}

impl<'de> DeserializeSeed<'de> for FieldOf<'_> {
    type Value = Option<FieldValue<'de>>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldOf<'_> {
    type Value = Option<FieldValue<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == self.name {
                found = Some(map.next_value::<ValueKind<'de>>()?.0);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

struct ValueKind<'a>(FieldValue<'a>);

impl<'de> de::Deserialize<'de> for ValueKind<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Kind;
        impl<'de> Visitor<'de> for Kind {
            type Value = ValueKind<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            // A string without escapes is borrowed from the line; one with escapes is unescaped into a copy.
            fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<ValueKind<'de>, E> {
                Ok(ValueKind(FieldValue::Text(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> std::result::Result<ValueKind<'de>, E> {
                Ok(ValueKind(FieldValue::Text(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> std::result::Result<ValueKind<'de>, E> {
                Ok(ValueKind(FieldValue::Text(Cow::Owned(v))))
            }
            fn visit_unit<E>(self) -> std::result::Result<ValueKind<'de>, E> {
                Ok(ValueKind(FieldValue::Null))
            }
            fn visit_none<E>(self) -> std::result::Result<ValueKind<'de>, E> {
                Ok(ValueKind(FieldValue::Null))
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<ValueKind<'de>, E> {
                Ok(ValueKind(FieldValue::Other("a boolean")))
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<ValueKind<'de>, E> {
                Ok(ValueKind(FieldValue::Other("a number")))
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<ValueKind<'de>, E> {
                Ok(ValueKind(FieldValue::Other("a number")))
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<ValueKind<'de>, E> {
                Ok(ValueKind(FieldValue::Other("a number")))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<ValueKind<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ValueKind(FieldValue::Other("a list")))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<ValueKind<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ValueKind(FieldValue::Other("an object")))
            }
        }
        d.deserialize_any(Kind)
    }
}

/// The field `field` of the JSON object on `line`, read by serde_json: the reference the fast scanner
/// (`json_line`) answers like, and the reader of every line that scanner leaves to it.
pub fn serde_field<'a>(line: &'a [u8], field: &str) -> serde_json::Result<Option<FieldValue<'a>>> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let value = FieldOf { name: field }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// The UTF-8 byte-order mark.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses the JSON lines of `chunk`, keeping the string field `spec.field` of each record. Blank lines are
/// skipped (they hold no record), and so is a byte-order mark at the start of the file.
pub fn parse_jsonl<'a>(chunk: &'a LineChunk, spec: &RecordSpec) -> Result<Documents<'a>> {
    let (field, path) = (spec.field.as_str(), spec.path.as_path());
    let mut docs = Documents::default();
    let mut offset = chunk.offset;
    let mut start = 0;
    let line_ends = memchr::memchr_iter(b'\n', &chunk.bytes).map(|i| i + 1);
    let ends = line_ends.chain((chunk.bytes.last() != Some(&b'\n')).then_some(chunk.bytes.len()));
    for (line_no, end) in (chunk.first_line..).zip(ends) {
        let raw = &chunk.bytes[start..end];
        start = end;
        let line = raw.strip_suffix(b"\n").unwrap_or(raw);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // A byte-order mark that Windows tools (Notepad, PowerShell) put before a file's first line is no
        // part of any record (RFC 8259 lets a parser ignore it).
        let line = match offset {
            0 => line.strip_prefix(UTF8_BOM).unwrap_or(line),
            _ => line,
        };
        let here = || {
            if spec.whole_file {
                format!("line {line_no}")
            } else {
                format!("the line at byte {offset}")
            }
        };
        let bad = |message: String| Error::InvalidRecord {
            path: path.to_path_buf(),
            position: here(),
            message,
        };
        if !line.iter().all(u8::is_ascii_whitespace) {
            let value = match json_line::text_field(line, field) {
                Scan::Field(Some(t)) => Some(FieldValue::Text(t)),
                Scan::Field(None) => Some(FieldValue::Null),
                Scan::NoField => None,
                Scan::Unsure => serde_value(line, spec, line_no == 1).map_err(&bad)?,
            };
            match value {
                Some(FieldValue::Text(t)) if t.is_empty() => docs.skipped += 1,
                Some(FieldValue::Text(t)) => docs.texts.push(t),
                Some(FieldValue::Null) => docs.skipped += 1,
                Some(FieldValue::Other(kind)) => {
                    return Err(bad(format!("field {field:?} is {kind}, not a string")));
                }
                None => return Err(bad(format!("has no field {field:?}"))),
            }
        }
        offset += raw.len() as u64;
    }
    Ok(docs)
}

/// The field of a line the fast scanner left to serde_json, or what is wrong with the line (the message of
/// its error). A line serde refuses for its text alone (`text_fault`) has that text named, or with
/// `spec.lossy` read as U+FFFD.
fn serde_value<'a>(
    line: &'a [u8],
    spec: &RecordSpec,
    first_line: bool,
) -> std::result::Result<Option<FieldValue<'a>>, String> {
    let e = match serde_field(line, &spec.field) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    Err(match text_fault(line) {
        Some(_) if spec.lossy => {
            return serde_field(&repaired(line), &spec.field)
                .map(|v| v.map(FieldValue::into_owned))
                .map_err(|e| format!("is not valid JSON ({e})"));
        }
        Some(TextFault::NotUtf8(at)) => {
            format!("is not valid UTF-8 (at byte {at} of the line); {ERRORS_HINT}")
        }
        Some(TextFault::LoneSurrogate(at)) => format!(
            "holds {} (at byte {at}), half a UTF-16 surrogate pair, which is no character; --errors replace \
             reads it as U+FFFD",
            String::from_utf8_lossy(&line[at..at + 6])
        ),
        None => match e.classify() {
            serde_json::error::Category::Data => format!("is not a JSON object ({e})"),
            // A pretty-printed document: its first line opens what later lines close.
            serde_json::error::Category::Eof if first_line && spec.whole_file => format!(
                "is not valid JSON ({e}): one JSON document over several lines? JSON lines hold one object a \
                 line (`jq -c` writes them so)"
            ),
            _ => format!("is not valid JSON ({e})"),
        },
    })
}

/// What keeps a line that is JSON in every other way from being read: bytes that are not UTF-8, or a
/// `\uXXXX` escape of half a surrogate pair with no other half (Python's `json.dumps` writes one for a str
/// that holds one, as text decoded with `surrogateescape` does); each at its byte in the line.
#[derive(Debug, PartialEq, Eq)]
enum TextFault {
    NotUtf8(usize),
    LoneSurrogate(usize),
}

fn text_fault(line: &[u8]) -> Option<TextFault> {
    if let Err(e) = std::str::from_utf8(line) {
        return Some(TextFault::NotUtf8(e.valid_up_to()));
    }
    lone_surrogates(line).next().map(TextFault::LoneSurrogate)
}

/// The value of the `\uXXXX` escape at `at`, if there is one.
fn unicode_escape(line: &[u8], at: usize) -> Option<u32> {
    let hex = line.get(at..at + 6)?.strip_prefix(b"\\u")?;
    u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Where the escapes of half a surrogate pair (unpaired) begin. Backslashes occur in JSON only in strings,
/// as escapes, so the line is read escape by escape without following its structure.
fn lone_surrogates(line: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        while let Some(i) = memchr::memchr(b'\\', &line[at.min(line.len())..]).map(|i| at + i) {
            let Some(unit) = unicode_escape(line, i) else {
                at = i + 2; // another escape: the backslash and the character it escapes
                continue;
            };
            at = i + 6;
            if (0xD800..0xDC00).contains(&unit) {
                if unicode_escape(line, i + 6).is_some_and(|low| (0xDC00..0xE000).contains(&low)) {
                    at = i + 12; // a whole pair
                    continue;
                }
                return Some(i);
            }
            if (0xDC00..0xE000).contains(&unit) {
                return Some(i);
            }
        }
        None
    })
}

/// The line with what `text_fault` finds made readable: bytes that are not UTF-8 and unpaired surrogate
/// escapes become U+FFFD.
fn repaired(line: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(line).into_owned().into_bytes();
    let lone: Vec<usize> = lone_surrogates(&text).collect();
    let mut out = Vec::with_capacity(text.len());
    let mut from = 0;
    for at in lone {
        out.extend_from_slice(&text[from..at]);
        out.extend_from_slice(b"\\ufffd");
        from = at + 6;
    }
    out.extend_from_slice(&text[from..]);
    out
}

/// A batch of documents as Arrow holds a string column: the UTF-8 bytes of all of them, and `len + 1`
/// offsets into those bytes. Each document is checked to be UTF-8 (`row0` numbers the first one, for
/// errors); empty ones are skipped and counted.
pub fn documents_of_buffer<'a>(
    data: &'a [u8],
    offsets: &[i64],
    path: Option<&std::path::Path>,
    row0: u64,
    lossy: bool,
) -> Result<(Vec<Cow<'a, str>>, u64)> {
    let mut docs = Vec::with_capacity(offsets.len().saturating_sub(1));
    let mut skipped = 0;
    let path = path.unwrap_or(std::path::Path::new(""));
    for (i, w) in offsets.windows(2).enumerate() {
        let (start, end) = (w[0], w[1]);
        if start < 0 || end < start || end as usize > data.len() {
            return Err(Error::InvalidArgument(format!(
                "document offsets {start}..{end} do not lie within {} bytes of text",
                data.len()
            )));
        }
        let bytes = &data[start as usize..end as usize];
        if bytes.is_empty() {
            skipped += 1;
            continue;
        }
        docs.push(document_text(bytes, path, row0 + i as u64, lossy)?);
    }
    Ok((docs, skipped))
}

/// Groups documents into runs of about `target` bytes, the units of parallel work (so that many
/// small documents do not each cost a task, and one long one does not hold up a whole run).
pub fn runs<S: AsRef<str>>(docs: &[S], target: usize) -> Vec<&[S]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, d) in docs.iter().enumerate() {
        size += d.as_ref().len();
        if size >= target {
            out.push(&docs[start..=i]);
            start = i + 1;
            size = 0;
        }
    }
    if start < docs.len() {
        out.push(&docs[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Documents<'static>> {
        parse_bytes(text.as_bytes(), false)
    }

    fn parse_bytes(bytes: &[u8], lossy: bool) -> Result<Documents<'static>> {
        let chunk = Box::leak(Box::new(LineChunk {
            bytes: bytes.to_vec(),
            first_line: 1,
            offset: 0,
        }));
        let spec = RecordSpec {
            path: "x.jsonl".into(),
            field: "text".into(),
            whole_file: true,
            lossy,
        };
        parse_jsonl(chunk, &spec)
    }

    #[test]
    fn text_that_is_no_unicode_is_named_or_replaced() {
        // Half a surrogate pair (high or low, at the end or mid-string), bytes that are not UTF-8: named in
        // strict mode, U+FFFD when replacing; a whole pair and an escaped backslash before "u" are text.
        let cases: [(&[u8], &str, &str); 5] = [
            (
                br#"{"text": "a \ud800 b"}"#,
                "holds \\ud800 (at byte 12), half a UTF-16 surrogate pair",
                "a \u{FFFD} b",
            ),
            (br#"{"id": 1, "text": "x\udc00"}"#, "holds \\udc00", "x\u{FFFD}"),
            (
                br#"{"text": "\ud83d\ud83d\ude00"}"#,
                "holds \\ud83d (at byte 10)",
                "\u{FFFD}\u{1F600}",
            ),
            (
                b"{\"text\": \"caf\xe9\"}",
                "is not valid UTF-8 (at byte 13 of the line)",
                "caf\u{FFFD}",
            ),
            (br#"{"text": "ok \\ud800 \ud83d\ude00"}"#, "", "ok \\ud800 \u{1F600}"),
        ];
        for (line, error, text) in cases {
            let shown = String::from_utf8_lossy(line);
            match parse_bytes(line, false) {
                Ok(docs) => assert!(error.is_empty() && docs.texts == [text], "{shown}: {docs:?}"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(
                        !error.is_empty() && e.contains(error) && e.contains("--errors replace"),
                        "{shown}: {e}"
                    );
                }
            }
            assert_eq!(parse_bytes(line, true).unwrap().texts, [text], "{shown}");
        }
    }

    #[test]
    fn keeps_the_field_and_skips_null_and_empty() {
        let docs = parse(
            "{\"id\": 1, \"text\": \"a <|endoftext|> b\", \"meta\": {\"x\": [1, 2]}}\n\n{\"text\": null}\r\n{\"text\": \"\"}\n{\"text\":\"\\u00e9\\n\"}",
        )
        .unwrap();
        assert_eq!(docs.texts, vec!["a <|endoftext|> b", "é\n"]);
        assert!(matches!(docs.texts[0], Cow::Borrowed(_)) && matches!(docs.texts[1], Cow::Owned(_)));
        assert_eq!(docs.skipped, 2);
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let cases = [
            (
                "{\"text\": \"a\"}\n{\"text\": 5}\n",
                "line 2: field \"text\" is a number, not a string",
            ),
            (
                "{\"text\": \"a\"}\n\n{\"body\": \"b\"}\n",
                "line 3: has no field \"text\"",
            ),
            ("{\"text\": \"a\"\n", "line 1: is not valid JSON"),
            ("[1, 2]\n", "line 1: is not a JSON object"),
            ("{\"text\": \"a\"} x\n", "line 1: is not valid JSON"),
        ];
        for (text, want) in cases {
            let err = parse(text).err().unwrap().to_string();
            assert!(err.contains(want), "{err} lacks {want}");
            assert!(err.starts_with("x.jsonl: "), "{err}");
        }
    }

    #[test]
    fn line_chunks_cover_the_stream_in_whole_lines() {
        let text: String = (0..500).map(|i| format!("{{\"text\": \"line {i}\"}}\n")).collect();
        for target in [1, 10, 100, 100_000] {
            let chunks: Vec<LineChunk> = LineChunker::new(
                Box::new(std::io::Cursor::new(text.clone().into_bytes())),
                "x".into(),
                0,
                target,
            )
            .collect::<Result<_>>()
            .unwrap();
            let mut line = 1;
            let mut joined = Vec::new();
            for c in &chunks {
                assert_eq!(c.first_line, line);
                assert_eq!(c.offset as usize, joined.len());
                assert!(c.bytes.ends_with(b"\n"));
                line += c.bytes.iter().filter(|&&b| b == b'\n').count() as u64;
                joined.extend_from_slice(&c.bytes);
            }
            assert_eq!(joined, text.as_bytes());
        }
    }

    #[test]
    fn buffers_split_into_documents() {
        let data = b"onetwo\xffthree";
        let (docs, skipped) = documents_of_buffer(data, &[0, 3, 3, 6], None, 0, false).unwrap();
        assert_eq!((docs, skipped), (vec!["one".into(), "two".into()], 1));
        let err = documents_of_buffer(data, &[0, 3, 7], None, 10, false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("row 11"), "{err}");
        // Replaced, where asked.
        let (docs, _) = documents_of_buffer(data, &[0, 3, 7], None, 10, true).unwrap();
        assert_eq!(docs, ["one", "two\u{FFFD}"]);
        assert!(documents_of_buffer(data, &[0, 99], None, 0, false).is_err());
    }

    #[test]
    fn runs_cover_the_documents() {
        let docs = vec!["aaaa", "b", "cc", "dddddd", "e"];
        for target in [1, 3, 5, 100] {
            let r = runs(&docs, target);
            assert_eq!(r.concat(), docs);
        }
    }
}
