//! Streaming text files in bounded, safely cut, UTF-8-validated chunks.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::cuts::Cutter;
use crate::error::{Error, Result};

/// Default chunk size: large enough to amortise per-chunk work, small enough that
/// `threads × chunk` stays a few tens of MB.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// Bytes of each buffer between a file and its reader (the file's bytes, and what they inflate to).
const READ_BUFFER_BYTES: usize = 256 << 10;

/// Inputs of at most this many bytes on disk are small (`is_small_input`).
pub const SMALL_INPUT_BYTES: u64 = 256 << 10;

/// Whether the input at `path` is small: a regular file (a pipe's or a device's size says nothing of what
/// it holds) of at most SMALL_INPUT_BYTES, or of which at most that many are read (`bytes`; None: all of
/// it). A small input is one chunk of text or a few, with nothing to share between threads: it is read and
/// encoded on one thread (`Reading::Here`), and the bindings run it without a helper thread (a document of
/// 1 KB per file took about 160 µs a file through the pool, most of it waiting on threads).
pub fn is_small_input(path: &Path, bytes: Option<u64>) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && bytes.unwrap_or(m.len()) <= SMALL_INPUT_BYTES)
}

/// Small inputs, and chunks of their text, go to the threads in groups of about this many bytes
/// (`small_file_groups`, `grouped`): one small input's worth.
pub const GROUP_BYTES: usize = SMALL_INPUT_BYTES as usize;

/// Consecutive files of `sizes` (bytes on disk) in runs of about GROUP_BYTES (`grouped`, by size), the
/// items of `Encoder::encode_texts_into` and of the counting of many files (`train::count_inputs`): a
/// file an item (a kilobyte each) made the threads hand over and wait for each other more than they
/// worked (two context switches a file: 29% of an encoding's samples under `perf`).
pub(crate) fn small_file_groups(sizes: &[u64]) -> impl Iterator<Item = Result<std::ops::Range<usize>>> + '_ {
    let files = (0..sizes.len()).map(Ok);
    let bytes = |&i: &usize| usize::try_from(sizes[i]).unwrap_or(usize::MAX);
    grouped(files, GROUP_BYTES, bytes).map(|group| group.map(|g| g[0]..g[g.len() - 1] + 1))
}

/// Counts bytes read from the underlying file (compressed bytes for .gz and .zst), for progress.
struct CountingReader<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A text file, or a byte range of a plain (uncompressed) one, e.g. one shard of a corpus.
#[derive(Debug, Clone)]
pub struct TextSource {
    pub path: PathBuf,
    pub range: Option<(u64, u64)>,
}

impl TextSource {
    pub fn whole(path: impl Into<PathBuf>) -> Self {
        TextSource {
            path: path.into(),
            range: None,
        }
    }

    /// Bytes this source covers on disk (for progress).
    pub fn disk_bytes(&self) -> Result<u64> {
        match self.range_bytes() {
            Some(bytes) => Ok(bytes),
            None => Ok(std::fs::metadata(&self.path)
                .map_err(|e| Error::io(Some(self.path.clone()), e))?
                .len()),
        }
    }

    /// Bytes of the range, when the source is one.
    pub(crate) fn range_bytes(&self) -> Option<u64> {
        self.range.map(|(start, end)| end.saturating_sub(start))
    }

    /// Whether this is a small input (`is_small_input`: of the bytes it reads).
    pub fn is_small(&self) -> bool {
        is_small_input(&self.path, self.range_bytes())
    }

    /// Opens the source, transparently decompressing gzip and zstd (detected by their magic bytes, not
    /// the name). Bytes read from disk are added to `counter`. A range must be of an uncompressed file: a
    /// compressed stream cannot be entered in the middle.
    pub fn open(&self, counter: Arc<AtomicU64>) -> Result<Box<dyn Source>> {
        self.open_buffered(counter, READ_BUFFER_BYTES)
    }

    /// `open`, with buffers of `buffer_bytes` (at least 1, at most `open`'s own). A look at a file's first
    /// bytes wants small ones: a buffer is filled whole, so a first read of a zstd file inflates as much as
    /// its buffer holds.
    pub fn open_buffered(&self, counter: Arc<AtomicU64>, buffer_bytes: usize) -> Result<Box<dyn Source>> {
        let buffer_bytes = buffer_bytes.clamp(1, READ_BUFFER_BYTES);
        let path = &self.path;
        let io_err = |e| Error::io(Some(path.clone()), e);
        let mut file = File::open(path).map_err(io_err)?;
        let metadata = file.metadata().map_err(io_err)?;
        if metadata.is_dir() {
            return Err(Error::io(
                Some(path.clone()),
                std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"),
            ));
        }
        // A buffer is made ready (zeroed) whole on first use: no bigger than the bytes on disk (a corpus
        // of many small files would otherwise pay for 256 KB a file).
        let on_disk = self.range_bytes().unwrap_or(metadata.len());
        let disk_buffer_bytes = buffer_bytes.min(usize::try_from(on_disk).unwrap_or(usize::MAX).max(1 << 12));
        let mut magic = [0u8; MAGIC_BYTES];
        let n = read_up_to(&mut file, &mut magic).map_err(io_err)?;
        let compression = Compression::of(&magic[..n]);
        if let Some((start, _)) = self.range {
            if compression != Compression::None {
                return Err(Error::InvalidArgument(format!(
                    "{}: a byte range (shard) of a compressed file cannot be read; decompress it first",
                    path.display()
                )));
            }
            file.seek(SeekFrom::Start(start)).map_err(io_err)?;
            let counted = CountingReader {
                inner: file.take(on_disk),
                counter,
            };
            return Ok(Box::new(BufReader::with_capacity(disk_buffer_bytes, counted)));
        }
        let head = std::io::Cursor::new(magic[..n].to_vec());
        let counted = CountingReader {
            inner: head.chain(file),
            counter,
        };
        let raw = BufReader::with_capacity(disk_buffer_bytes, counted);
        Ok(match compression {
            Compression::None => Box::new(raw),
            Compression::Gzip => Box::new(Inflated(BufReader::with_capacity(buffer_bytes, GzipStream::new(raw)))),
            Compression::Zstd => Box::new(Inflated(ZstdStream::new(raw).map_err(io_err)?)),
        })
    }

    /// Whether the file is compressed (gzip or zstd, by its first bytes; false where they cannot be read,
    /// for `open` to say why): such a stream is read on one thread at a time.
    pub fn is_compressed(&self) -> bool {
        let mut magic = [0u8; MAGIC_BYTES];
        File::open(&self.path)
            .and_then(|mut f| read_up_to(&mut f, &mut magic))
            .is_ok_and(|n| Compression::of(&magic[..n]) != Compression::None)
    }

    /// Where the source starts in its file, for error offsets.
    pub fn start(&self) -> u64 {
        self.range.map_or(0, |r| r.0)
    }
}

/// How a file is compressed, told by its first bytes: the one test every reader uses (the Python side
/// asks it too, `py::compression_of`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Bytes of a file's start that `Compression::of` reads.
pub const MAGIC_BYTES: usize = 4;
/// The first bytes of a gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl Compression {
    /// A zstd file may begin with a skippable frame (magic 0x184D2A50..=0x184D2A5F, little-endian) as well
    /// as a compressed one: pzstd puts one before each frame (its size, for parallel decompression), and
    /// the decoder passes over them.
    pub fn of(magic: &[u8]) -> Self {
        if magic.starts_with(&GZIP_MAGIC) {
            Compression::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
            || (magic.len() >= MAGIC_BYTES && magic[0] & 0xf0 == 0x50 && magic[1..MAGIC_BYTES] == [0x2a, 0x4d, 0x18])
        {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A file's bytes as the chunkers read them: a `Read` that may also append to a buffer without copying
/// through a buffer of its own.
pub trait Source: Read + Send {
    /// Appends to `buf` until `at_least` more bytes have come or the stream ends (then fewer come); a
    /// source may append more, up to `buf`'s capacity. Returns how many bytes came.
    fn append(&mut self, buf: &mut Vec<u8>, at_least: usize) -> std::io::Result<usize> {
        // Retries interrupted reads; std's own readers (a BufReader) copy into `buf` without zeroing it.
        (&mut *self).take(at_least as u64).read_to_end(buf)
    }

    /// About how many bytes the source yields from a file of `disk_bytes`: what the piece caches are sized
    /// for before the text is read (`Encoder::expect_text`).
    fn expected_bytes(&self, disk_bytes: u64) -> u64 {
        disk_bytes
    }
}

/// Bytes of text per byte on disk that gzip and zstd typically make of prose and web text (2.5–4×). It only
/// sizes the piece caches, whose size follows its square root: a ratio off by 2× sizes them 1.4× off, where
/// taking the compressed size for the text's (as before) left a 40 MB `.jsonl.zst` file's caches to grow
/// on the way (`encode_files`, 2 threads, fresh processes, 11 interleaved rounds, medians: 188 → 166 ms,
/// 306 → 273 CPU-ms; a first A/B with the factor on the record path alone: 169 → 160 ms).
const TYPICAL_INFLATION: u64 = 3;

/// A gzip file, every member in turn, as GNU gzip and Python's `gzip` read it: zero bytes after a member
/// (the padding some writers leave to a block's end) are passed over. A stream cut short is named as such,
/// as a zstd one is (flate2 says "incomplete deflate stream"), and so are bytes after a member that are no
/// gzip member (flate2 says "invalid gzip header").
struct GzipStream<R: BufRead> {
    /// The member being read; None once the file has ended.
    member: Option<flate2::bufread::GzDecoder<R>>,
    /// Members read to their end.
    ended: u64,
}

impl<R: BufRead> GzipStream<R> {
    fn new(raw: R) -> Self {
        GzipStream {
            member: Some(flate2::bufread::GzDecoder::new(raw)),
            ended: 0,
        }
    }
}

impl<R: BufRead> Read for GzipStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(member) = self.member.as_mut() else {
                return Ok(0);
            };
            let n = member.read(buf).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the gzip stream ends inside a member (is the file cut short?)",
                ),
                _ => e,
            })?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // The member has ended: the file ends too where nothing but zero bytes follow.
            let mut raw = self.member.take().expect("read above").into_inner();
            self.ended += 1;
            loop {
                let rest = raw.fill_buf()?;
                if rest.is_empty() {
                    return Ok(0);
                }
                let zeros = rest.iter().take_while(|&&b| b == 0).count();
                let next = &rest[zeros..];
                // A member begins with GZIP_MAGIC (where the buffer holds only its first byte, flate2 judges).
                if next.iter().zip(GZIP_MAGIC).any(|(&b, m)| b != m) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "after gzip member {} come bytes that are not one (something appended to the file, \
                             or damage)",
                            self.ended
                        ),
                    ));
                }
                let more = !next.is_empty();
                raw.consume(zeros);
                if more {
                    break;
                }
            }
            self.member = Some(flate2::bufread::GzDecoder::new(raw));
        }
    }
}

/// A source inflated from a compressed file (gzip, zstd): it yields more than the file holds.
struct Inflated<S>(S);

impl<S: Source> Read for Inflated<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<S: Source> Source for Inflated<S> {
    fn append(&mut self, buf: &mut Vec<u8>, at_least: usize) -> std::io::Result<usize> {
        self.0.append(buf, at_least)
    }

    fn expected_bytes(&self, disk_bytes: u64) -> u64 {
        disk_bytes.saturating_mul(TYPICAL_INFLATION)
    }
}

impl<R: Read + Send> Source for BufReader<R> {}
impl<T: AsRef<[u8]> + Send> Source for std::io::Cursor<T> {}

/// A zstd file, every frame in turn, inflated straight into the caller's buffer. (The zstd crate's
/// `Decoder` reads through a `Read` slice, so a chunk took a BufReader of its own and one more copy of
/// every byte: 2.5% of the work of encoding a `.jsonl.zst` file.)
struct ZstdStream<R> {
    input: R,
    dctx: zstd::zstd_safe::DCtx<'static>,
    /// A frame has begun and not ended: the input may not end here.
    in_frame: bool,
}

impl<R: BufRead + Send> ZstdStream<R> {
    fn new(input: R) -> std::io::Result<Self> {
        let dctx = zstd::zstd_safe::DCtx::try_create()
            .ok_or_else(|| std::io::Error::other("zstd: no memory for a decompression context"))?;
        Ok(ZstdStream {
            input,
            dctx,
            in_frame: false,
        })
    }

    /// Inflates into `out` until it is full or the input ends.
    fn inflate<C: zstd::zstd_safe::WriteBuf + ?Sized>(
        &mut self,
        out: &mut zstd::zstd_safe::OutBuffer<'_, C>,
    ) -> std::io::Result<()> {
        while out.pos() < out.capacity() {
            let compressed = self.input.fill_buf()?;
            if compressed.is_empty() {
                if self.in_frame {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the zstd stream ends inside a frame (is the file cut short?)",
                    ));
                }
                return Ok(());
            }
            let mut input = zstd::zstd_safe::InBuffer::around(compressed);
            let hint = self.dctx.decompress_stream(out, &mut input).map_err(|code| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("zstd: {}", zstd::zstd_safe::get_error_name(code)),
                )
            })?;
            let used = input.pos();
            self.input.consume(used);
            // 0: a frame has ended and all of it has been handed out.
            self.in_frame = hint != 0;
        }
        Ok(())
    }
}

impl<R: BufRead + Send> Read for ZstdStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut out = zstd::zstd_safe::OutBuffer::around(buf);
        self.inflate(&mut out)?;
        Ok(out.pos())
    }
}

impl<R: BufRead + Send> Source for ZstdStream<R> {
    fn append(&mut self, buf: &mut Vec<u8>, at_least: usize) -> std::io::Result<usize> {
        let start = buf.len();
        buf.reserve(at_least);
        // Into the spare capacity (no zeroing); `buf`'s length follows what is written.
        let mut out = zstd::zstd_safe::OutBuffer::around_pos(buf, start);
        self.inflate(&mut out)?;
        let end = out.pos();
        Ok(end - start)
    }
}

/// Reads from `source` until `buf` holds at least `want` bytes, or to the end (then sets `eof`): the
/// buffer both chunkers cut from (text at safe cuts, JSON lines at line ends). Asked for in steps of at
/// most READ_STEP_BYTES, each appended through the source's buffer (a chunk's worth of room, 2 MB, zeroed
/// before each read, as it was, cost a third of a millisecond a file, most of the time of a corpus of
/// many small files), or by a source that writes straight into `buf` (zstd's) up to its room.
pub(crate) fn fill_buffer(
    source: &mut (dyn Source + '_),
    buf: &mut Vec<u8>,
    want: usize,
    eof: &mut bool,
) -> std::io::Result<()> {
    while !*eof && buf.len() < want {
        let step = (want - buf.len()).min(READ_STEP_BYTES);
        let n = source.append(buf, step)?;
        *eof = n < step;
        if !*eof {
            // More is coming: room for all of it at once (growing step by step doubles the buffer
            // several times, each a copy of what it holds).
            buf.reserve_exact(want.saturating_sub(buf.len()));
        }
    }
    Ok(())
}

/// The most `fill_buffer` asks of its source at a time: less than `open`'s buffers (READ_BUFFER_BYTES), so
/// each read is copied out of the buffer; where the buffer is smaller (a small file), a read that passes it
/// by has at most this much of the chunk zeroed first.
const READ_STEP_BYTES: usize = 64 << 10;

/// The first `len` bytes of `buf`, taken out of it (the rest stays, at the front).
pub(crate) fn take_front(buf: &mut Vec<u8>, len: usize) -> Vec<u8> {
    let rest = buf[len..].to_vec();
    let mut front = std::mem::replace(buf, rest);
    front.truncate(len);
    front
}

/// One piece of a text stream: valid UTF-8, cut where pre-tokenization is unaffected.
pub struct Chunk {
    pub text: String,
    /// Byte offset of the chunk in its (decompressed) stream.
    pub offset: u64,
}

/// Consecutive items in groups of about `target` bytes (`bytes` of each; an item of `target` or more
/// alone), each group one item of a pipeline: the chunks of many small inputs (a file or a shard of a
/// few kilobytes is one chunk) then reach the threads a group at a time, where one hand-off a chunk had
/// the threads wait on each other more than they worked (5,000 JSON-lines files of a review each encoded
/// 9× slower than the same lines as one file). An error comes after the group of the items before it.
pub fn grouped<T>(
    mut items: impl Iterator<Item = Result<T>>,
    target: usize,
    bytes: impl Fn(&T) -> usize,
) -> impl Iterator<Item = Result<Vec<T>>> {
    let mut held: Option<Result<T>> = None;
    std::iter::from_fn(move || {
        let mut group = Vec::new();
        let mut size = 0;
        while let Some(item) = held.take().or_else(|| items.next()) {
            match item {
                Ok(item) => {
                    let more = bytes(&item);
                    if !group.is_empty() && size + more > target {
                        held = Some(Ok(item));
                        break;
                    }
                    size += more;
                    group.push(item);
                    if size >= target {
                        break;
                    }
                }
                Err(e) if group.is_empty() => return Some(Err(e)),
                Err(e) => {
                    held = Some(Err(e));
                    break;
                }
            }
        }
        (!group.is_empty()).then_some(Ok(group))
    })
}

/// The items of several inputs as one stream, each with the index of its input: input `i` is opened
/// (`open(i)`) when the one before it has been read through, so one pipeline runs through a corpus of
/// many files with no pause between them (a pipeline per file had its threads wait for the last chunk of
/// every file, and a file of one chunk ran on one thread), and no more than one file is open at a time.
/// After an error (an item's, or an input's that would not open) nothing more is read.
pub struct Chained<It, F> {
    open: F,
    count: usize,
    next: usize,
    current: Option<(usize, It)>,
    failed: bool,
}

impl<T, It: Iterator<Item = Result<T>>, F: FnMut(usize) -> Result<It>> Chained<It, F> {
    /// The items of inputs 0..count; `first`, when given, is input 0 already opened.
    pub fn new(count: usize, first: Option<It>, open: F) -> Self {
        Chained {
            next: usize::from(first.is_some()),
            current: first.map(|items| (0, items)),
            open,
            count,
            failed: false,
        }
    }
}

impl<T, It: Iterator<Item = Result<T>>, F: FnMut(usize) -> Result<It>> Iterator for Chained<It, F> {
    type Item = Result<(usize, T)>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            if let Some((index, items)) = &mut self.current {
                match items.next() {
                    Some(Ok(item)) => return Some(Ok((*index, item))),
                    Some(Err(e)) => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                    None => self.current = None,
                }
            }
            if self.next >= self.count {
                return None;
            }
            match (self.open)(self.next) {
                Ok(items) => self.current = Some((self.next, items)),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
            self.next += 1;
        }
        None
    }
}

/// Yields the chunks of one stream, in order. Memory stays near `target` bytes, except when a stream
/// has no safe cut for a long stretch (then the chunk grows until one is found).
pub struct ChunkReader<'c> {
    source: Box<dyn Source + 'c>,
    path: Option<PathBuf>,
    cutter: &'c Cutter,
    buf: Vec<u8>,
    offset: u64,
    target: usize,
    eof: bool,
    lossy: bool,
}

impl<'c> ChunkReader<'c> {
    pub fn new(source: Box<dyn Source + 'c>, path: Option<PathBuf>, cutter: &'c Cutter, target: usize) -> Self {
        ChunkReader {
            source,
            path,
            cutter,
            buf: Vec::new(),
            offset: 0,
            target: target.max(1),
            eof: false,
            lossy: false,
        }
    }

    /// Byte offsets (in errors and chunks) count from `offset`: where this stream starts in its file.
    pub fn starting_at(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// Replace invalid UTF-8 with U+FFFD instead of failing.
    pub fn lossy(mut self, lossy: bool) -> Self {
        self.lossy = lossy;
        self
    }

    /// Reads until `buf` holds at least `want` bytes or the stream ends.
    fn fill(&mut self, want: usize) -> Result<()> {
        fill_buffer(&mut *self.source, &mut self.buf, want, &mut self.eof).map_err(|e| Error::io(self.path.clone(), e))
    }

    fn emit(&mut self, len: usize) -> Result<Chunk> {
        let bytes = take_front(&mut self.buf, len);
        let offset = self.offset;
        self.offset += len as u64;
        if self.lossy {
            let text = match crate::arch::utf8_string(bytes) {
                Ok(t) => t,
                Err((bytes, _)) => String::from_utf8_lossy(&bytes).into_owned(),
            };
            return Ok(Chunk { text, offset });
        }
        let text = crate::arch::utf8_string(bytes).map_err(|(_, valid)| Error::InvalidUtf8 {
            path: self.path.clone(),
            item: None,
            offset: offset + valid as u64,
        })?;
        Ok(Chunk { text, offset })
    }

    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let mut want = self.target;
        loop {
            self.fill(want)?;
            if self.eof {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    self.emit(self.buf.len()).map(Some)
                };
            }
            // A safe cut, or in a pre-token megabytes long one of its slice boundaries (bounded memory).
            if let Some(cut) = self.cutter.cut(&self.buf) {
                return self.emit(cut).map(Some);
            }
            want = self.buf.len() * 2;
        }
    }
}

impl Iterator for ChunkReader<'_> {
    type Item = Result<Chunk>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_chunk() {
            Ok(Some(c)) => Some(Ok(c)),
            Ok(None) => None,
            Err(e) => {
                // After an error the stream is finished: no later chunk may be taken for valid text.
                self.eof = true;
                self.buf.clear();
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cuts::split_at_safe_cuts;
    use crate::pretokenize::Pretokenizer;
    use crate::specials::SpecialMatcher;

    #[test]
    fn compression_is_told_by_the_first_bytes_skippable_zstd_frames_included() {
        assert_eq!(Compression::of(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(Compression::of(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::Zstd);
        for low in 0..16u8 {
            assert_eq!(Compression::of(&[0x50 | low, 0x2a, 0x4d, 0x18]), Compression::Zstd);
        }
        for head in [&[0x60, 0x2a, 0x4d, 0x18][..], &[0x50, 0x2a, 0x4d], b"P*M", b"text", b""] {
            assert_eq!(Compression::of(head), Compression::None, "{head:x?}");
        }
    }

    fn cutter() -> Cutter {
        Cutter::new(
            SpecialMatcher::new(&["<|endoftext|>".into()]).unwrap(),
            &Pretokenizer::Gpt2,
        )
    }

    #[test]
    fn chunks_reassemble_the_stream() {
        let text = "Once upon a time.\nThere was a cat.<|endoftext|>\nThe end.\n".repeat(50);
        let cutter = cutter();
        for target in [1, 7, 64, 1000] {
            let reader = ChunkReader::new(Box::new(std::io::Cursor::new(text.clone())), None, &cutter, target);
            let chunks: Vec<Chunk> = reader.collect::<Result<_>>().unwrap();
            let joined: String = chunks.iter().map(|c| c.text.as_str()).collect();
            assert_eq!(joined, text);
            let mut offset = 0;
            for c in &chunks {
                assert_eq!(c.offset, offset);
                offset += c.text.len() as u64;
            }
        }
    }

    /// Gives a few bytes a read, and is interrupted now and then, as pipes and slow devices do.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        reads: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            if self.reads.is_multiple_of(5) {
                return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "try again"));
            }
            let n = (self.reads % 7 * 1000 + 1)
                .min(buf.len())
                .min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Source for Trickle {}

    #[test]
    fn zstd_frames_inflate_in_turn_and_a_cut_frame_is_named() {
        let text = b"Once upon a time, a cat sat on the mat.\n".repeat(3000);
        let mut bytes = zstd::encode_all(&text[..], 3).unwrap();
        bytes.extend(zstd::encode_all(&b"the end\n"[..], 1).unwrap());
        let inflate = |bytes: &[u8], step: usize| {
            // A small input buffer: frames and blocks arrive in pieces.
            let mut stream = ZstdStream::new(BufReader::with_capacity(7, bytes)).unwrap();
            let mut out = Vec::new();
            while stream.append(&mut out, step)? >= step {}
            Ok::<_, std::io::Error>(out)
        };
        for step in [1, 100, 1 << 16, 1 << 20] {
            let got = inflate(&bytes, step).unwrap();
            assert!(
                got == [&text[..], b"the end\n"].concat(),
                "step {step}: {} bytes",
                got.len()
            );
        }
        let err = inflate(&bytes[..bytes.len() / 2], 1 << 16).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(err.to_string().contains("cut short"), "{err}");
        let err = inflate(&[&bytes[..], b"junk"].concat(), 1 << 16).unwrap_err();
        assert!(err.to_string().starts_with("zstd: "), "{err}");
    }

    #[test]
    fn compressed_files_are_expected_to_inflate() {
        // What the piece caches are sized for: a compressed file's text is not its size on disk.
        let scratch = crate::scratch::Scratch::new("inflate");
        let text = b"Once upon a time, a cat sat on the mat.\n".repeat(3000);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &text).unwrap();
        let files = [
            ("plain.txt", text.clone()),
            ("text.gz", gz.finish().unwrap()),
            ("text.zst", zstd::encode_all(&text[..], 3).unwrap()),
        ];
        let mut expected = Vec::new();
        for (name, bytes) in &files {
            let source = TextSource::whole(scratch.path(name));
            std::fs::write(&source.path, bytes).unwrap();
            let disk = source.disk_bytes().unwrap();
            let stream = source.open(Arc::new(AtomicU64::new(0))).unwrap();
            expected.push((disk, stream.expected_bytes(disk)));
        }
        assert_eq!(expected[0], (text.len() as u64, text.len() as u64));
        for (disk, text_bytes) in &expected[1..] {
            assert_eq!(*text_bytes, disk * TYPICAL_INFLATION);
        }
    }

    #[test]
    fn short_and_interrupted_reads_fill_chunks_past_a_read_step() {
        // Chunks of more than READ_STEP_BYTES, read a few bytes at a time: every byte arrives, once.
        let text = "Once upon a time, a cat sat.<|endoftext|>\n".repeat(12_000);
        let cutter = cutter();
        for target in [3 * READ_STEP_BYTES / 2, text.len() + 1] {
            let source = Trickle {
                bytes: text.clone().into_bytes(),
                at: 0,
                reads: 0,
            };
            let reader = ChunkReader::new(Box::new(source), None, &cutter, target);
            let chunks: Vec<Chunk> = reader.collect::<Result<_>>().unwrap();
            assert!(chunks.len() > 1 || target > text.len(), "{} chunks", chunks.len());
            assert_eq!(chunks.iter().map(|c| c.text.as_str()).collect::<String>(), text);
        }
    }

    #[test]
    fn invalid_utf8_reports_the_offset() {
        let mut bytes = b"good text\nmore good text\n".repeat(10);
        bytes.insert(137, 0xff);
        let cutter = cutter();
        let reader = ChunkReader::new(Box::new(std::io::Cursor::new(bytes)), None, &cutter, 16);
        let err = reader.collect::<Result<Vec<_>>>().err().unwrap();
        assert!(matches!(err, Error::InvalidUtf8 { offset: 137, .. }), "{err}");
    }

    #[test]
    fn long_pieces_are_cut_where_nothing_changes() {
        // Megabytes without a safe cut: runs of one letter (1 and 2 bytes), of NUL bytes, of spaces, digits.
        let texts = [
            format!("x {} y", "a".repeat(9 << 20)),
            format!("{}\n", "é".repeat(5 << 20)),
            "\0".repeat(6 << 20),
            format!("a{}b c", " ".repeat(7 << 20)),
            format!(" {}", "7".repeat(5 << 20)),
        ];
        let cutter = cutter();
        for text in &texts {
            let whole = Pretokenizer::Gpt2.pieces(text).unwrap();
            assert!(whole.iter().all(|p| p.len() <= crate::pretokenize::MAX_PIECE_BYTES));
            assert_eq!(whole.concat(), *text);
            let reader = ChunkReader::new(Box::new(std::io::Cursor::new(text.clone())), None, &cutter, 1 << 16);
            let chunks: Vec<Chunk> = reader.collect::<Result<_>>().unwrap();
            assert!(chunks.len() > 1, "no forced cut");
            assert!(chunks.iter().all(|c| c.text.len() <= 2 * crate::cuts::FORCED_CUT_AFTER));
            let pieces: Vec<&str> = chunks
                .iter()
                .flat_map(|c| Pretokenizer::Gpt2.pieces(&c.text).unwrap())
                .collect();
            assert_eq!(pieces, whole);
            let parts = split_at_safe_cuts(text, &cutter, 1 << 16);
            let pieces: Vec<&str> = parts
                .iter()
                .flat_map(|p| Pretokenizer::Gpt2.pieces(p).unwrap())
                .collect();
            assert_eq!(pieces, whole);
        }
    }

    #[test]
    fn split_at_safe_cuts_covers_the_text() {
        let text = "ab\ncd\n\nef gh\nij".repeat(100);
        let parts = split_at_safe_cuts(&text, &cutter(), 10);
        assert!(parts.len() > 10);
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn small_files_are_grouped_in_order_each_once_a_large_one_alone() {
        let s = GROUP_BYTES as u64;
        let sizes = [1, s - 1, 1, 0, s, 3, s + 9, 2, 2];
        let groups: Vec<_> = small_file_groups(&sizes).map(Result::unwrap).collect();
        assert_eq!(groups, [0..2, 2..4, 4..5, 5..6, 6..7, 7..9]);
        assert_eq!(small_file_groups(&[]).count(), 0);
        let many = vec![1u64; 3 * s as usize / 2];
        let groups: Vec<_> = small_file_groups(&many).map(Result::unwrap).collect();
        assert_eq!(groups, [0..s as usize, s as usize..many.len()]);
    }

    #[test]
    fn items_are_grouped_in_order_each_once_and_an_error_after_the_group_before_it() {
        let items = [3, 2, 5, 1, 9, 1, 1].map(Ok::<usize, Error>);
        let groups: Vec<Vec<usize>> = grouped(items.into_iter(), 5, |&n| n).map(|g| g.unwrap()).collect();
        assert_eq!(groups, [vec![3, 2], vec![5], vec![1], vec![9], vec![1, 1]]);
        assert_eq!(grouped(std::iter::empty::<Result<usize>>(), 5, |&n| n).count(), 0);
        let failing = [Ok(1), Ok(1), Err(Error::InvalidArgument("bad".into())), Ok(1)];
        let got: Vec<_> = grouped(failing.into_iter(), 5, |&n: &usize| n).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap(), &[1, 1]);
        assert!(got[1].as_ref().is_err());
        assert_eq!(got[2].as_ref().unwrap(), &[1]); // the pipeline stops at the error before this one
    }
}
