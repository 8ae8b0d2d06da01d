//! Writing one-dimensional `.npy` files whose length is known only at the end.

use std::io::{Seek, SeekFrom, Write};

use crate::encode::OutputId;

/// Header size: room for any 64-bit length, and a multiple of 64 so the data stays aligned.
pub const HEADER_BYTES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    U16,
    U32,
}

impl Dtype {
    /// The narrowest id type for a vocabulary: uint16 holds the ids of up to 65,536 tokens.
    pub fn for_vocab(vocab_size: usize) -> Dtype {
        if vocab_size <= 1 << 16 {
            Dtype::U16
        } else {
            Dtype::U32
        }
    }

    /// The one definition of which vocabularies an id type can hold.
    pub fn check_holds(self, vocab_size: usize) -> crate::Result<()> {
        if self == Dtype::U16 && Dtype::for_vocab(vocab_size) != Dtype::U16 {
            return Err(crate::Error::InvalidArgument(format!(
                "uint16 cannot hold ids of a vocabulary of {vocab_size} tokens; use uint32"
            )));
        }
        Ok(())
    }

    pub fn width(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }

    fn descr(self) -> &'static str {
        match self {
            Dtype::U16 => "<u2",
            Dtype::U32 => "<u4",
        }
    }
}

/// The `.npy` version 1.0 header for a 1-D little-endian array of `len` elements.
pub fn header(dtype: Dtype, len: u64) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': ({len},), }}",
        dtype.descr()
    );
    let mut out = Vec::with_capacity(HEADER_BYTES);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&((HEADER_BYTES - 10) as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(HEADER_BYTES - 1, b' ');
    out.push(b'\n');
    out
}

/// Appends ids in `dtype` (the caller has checked that every id fits): a copy, where the ids come in the
/// type `dtype` names (the encoders write `u16` ids narrow from the start: `Encoder::encode_as`).
pub fn write_ids<I: OutputId>(
    out: &mut impl Write,
    ids: &[I],
    dtype: Dtype,
    scratch: &mut Vec<u8>,
) -> std::io::Result<()> {
    scratch.clear();
    match dtype {
        Dtype::U16 => scratch.extend(ids.iter().flat_map(|&i| (i.widen() as u16).to_le_bytes())),
        Dtype::U32 => scratch.extend(ids.iter().flat_map(|&i| i.widen().to_le_bytes())),
    }
    out.write_all(scratch)
}

/// Bytes written to a file between requests to the kernel to start writing them to disk
/// (`arch::start_writeback`).
const WRITEBACK_BYTES: u64 = 4 << 20;

/// Writes ids to a new `.npy` file as they come, from any number of inputs; `finish` writes the length
/// into the header and syncs the file. Every id must fit `dtype` (checked against the vocabulary by the
/// caller). The file's pages are sent to disk as they are written, WRITEBACK_BYTES at a time: the sync
/// at the end, which the caller waits for, then has only the last of them left. Without that it waited
/// for the whole file (on the development machine, 15 ms of a 110 ms `encode_files` of 40 MB of text;
/// 4.7 ms with the pages sent 8 MB at a time).
pub struct IdWriter {
    out: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
    dtype: Dtype,
    count: u64,
    scratch: Vec<u8>,
    /// Bytes of the file before which writing to disk has been started.
    sent: u64,
}

impl IdWriter {
    pub fn create(path: &std::path::Path, dtype: Dtype) -> crate::Result<Self> {
        let err = |e| crate::Error::io(Some(path.to_path_buf()), e);
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(path).map_err(err)?);
        out.write_all(&header(dtype, 0)).map_err(err)?;
        Ok(IdWriter {
            out,
            path: path.to_path_buf(),
            dtype,
            count: 0,
            scratch: Vec::new(),
            sent: 0,
        })
    }

    /// Starts writing to disk what has reached the file since the last time, once that is
    /// WRITEBACK_BYTES or more (what is still in the buffer has not reached it).
    fn send_written(&mut self) {
        let in_file = (HEADER_BYTES as u64 + self.count * self.dtype.width() as u64)
            .saturating_sub(self.out.buffer().len() as u64);
        if in_file >= self.sent + WRITEBACK_BYTES {
            crate::arch::start_writeback(self.out.get_ref(), self.sent, in_file - self.sent);
            self.sent = in_file;
        }
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Ids written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn write<I: OutputId>(&mut self, ids: &[I]) -> crate::Result<()> {
        write_ids(&mut self.out, ids, self.dtype, &mut self.scratch)
            .map_err(|e| crate::Error::io(Some(self.path.clone()), e))?;
        self.count += ids.len() as u64;
        self.send_written();
        Ok(())
    }

    /// Appends ids already encoded as this file holds them (little-endian, of its dtype's width), as they are.
    pub fn write_encoded(&mut self, ids: &[u8]) -> crate::Result<()> {
        let width = self.dtype.width();
        if !ids.len().is_multiple_of(width) {
            return Err(crate::Error::InvalidArgument(format!(
                "{} bytes are not a whole number of {width}-byte ids",
                ids.len()
            )));
        }
        self.out
            .write_all(ids)
            .map_err(|e| crate::Error::io(Some(self.path.clone()), e))?;
        self.count += (ids.len() / width) as u64;
        self.send_written();
        Ok(())
    }

    /// Appends the next `len` bytes of `from` (ids encoded as this file holds them, written by a `Spill`),
    /// copied file to file by the kernel where it can (`copy_file_range`), not through this process.
    fn append_from(&mut self, from: &std::fs::File, len: u64) -> crate::Result<()> {
        let err = |e| crate::Error::io(Some(self.path.clone()), e);
        self.out.flush().map_err(err)?;
        let copied = std::io::copy(&mut std::io::Read::take(from, len), self.out.get_mut()).map_err(err)?;
        if copied != len {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{copied} of {len} bytes of ids read back from a spill file"),
            )));
        }
        self.count += len / self.dtype.width() as u64;
        self.send_written();
        Ok(())
    }

    /// Writes the final length into the header and syncs the file to disk; returns the ids written.
    pub fn finish(self) -> crate::Result<u64> {
        let path = self.path.clone();
        let (count, file) = self.complete()?;
        file.sync_all().map_err(|e| crate::Error::io(Some(path), e))?;
        Ok(count)
    }

    /// Writes the final length into the header and starts writing the rest of the file to disk, without
    /// waiting for it; returns the ids written and the file, which the caller syncs.
    fn complete(self) -> crate::Result<(u64, std::fs::File)> {
        let path = self.path;
        let err = |e| crate::Error::io(Some(path.clone()), e);
        let mut file = self.out.into_inner().map_err(|e| err(e.into_error()))?;
        finish(&mut file, self.dtype, self.count).map_err(err)?;
        let end = HEADER_BYTES as u64 + self.count * self.dtype.width() as u64;
        crate::arch::start_writeback(&file, self.sent, end - self.sent);
        crate::arch::start_writeback(&file, 0, HEADER_BYTES as u64);
        Ok((self.count, file))
    }
}

/// Where the ids of one call's inputs go: all of them, in order, to one file, or each input's to a file
/// of its own (`bpe-lm encode IN... -o DIR/`, where a corpus of many small files encoded one call a file
/// ran on one thread, paying a call, a thread hop and a sync a file: 400 files of 100 KB at 75 MB/s
/// against 352 as one output).
pub enum IdOutputs {
    Joined(IdWriter),
    PerInput(PerInputFiles),
}

impl IdOutputs {
    pub fn dtype(&self) -> Dtype {
        match self {
            IdOutputs::Joined(w) => w.dtype(),
            IdOutputs::PerInput(f) => f.dtype,
        }
    }

    /// Ids written so far, to every file.
    pub fn count(&self) -> u64 {
        match self {
            IdOutputs::Joined(w) => w.count(),
            IdOutputs::PerInput(f) => f.count + f.open.as_ref().map_or(0, |(_, w)| w.count()),
        }
    }

    /// Appends ids of the call's input `input` (its index among the call's inputs; the inputs' ids come
    /// in input order).
    pub fn write<I: OutputId>(&mut self, input: usize, ids: &[I]) -> crate::Result<()> {
        match self {
            IdOutputs::Joined(w) => w.write(ids),
            IdOutputs::PerInput(f) => f.writer_for(input)?.write(ids),
        }
    }

    /// Appends ids already encoded as the file holds them (`IdWriter::write_encoded`): to a joined output
    /// only, which has no inputs to tell apart.
    pub fn write_encoded(&mut self, ids: &[u8]) -> crate::Result<()> {
        match self {
            IdOutputs::Joined(w) => w.write_encoded(ids),
            IdOutputs::PerInput(_) => Err(crate::Error::InvalidArgument(
                "a file per input takes ids from the encoding methods only".into(),
            )),
        }
    }

    /// Appends the next `len` bytes of `from` (`IdWriter::append_from`) to the ids of input `input`.
    fn append_from(&mut self, input: usize, from: &std::fs::File, len: u64) -> crate::Result<()> {
        match self {
            IdOutputs::Joined(w) => w.append_from(from, len),
            IdOutputs::PerInput(f) => f.writer_for(input)?.append_from(from, len),
        }
    }

    /// The name for a spill file (`Spill`) beside the outputs (on their file system, which has room for
    /// it): the first output's name with `suffix` added. Outputs are temporaries named for the file
    /// they become and their writer's pid (`bpe_lm._io.atomic_output`), so a spill file left by a kill
    /// between its making and its unlinking is one too, which the next run removes.
    fn spill_path(&self, suffix: &str) -> std::path::PathBuf {
        let first = match self {
            IdOutputs::Joined(w) => w.path.as_path(),
            IdOutputs::PerInput(f) => f.paths.first().map_or(std::path::Path::new("ids"), |p| p.as_path()),
        };
        let mut name = first.as_os_str().to_owned();
        name.push(suffix);
        std::path::PathBuf::from(name)
    }

    /// Whether a call may write the ids of `inputs` inputs, of a vocabulary of `vocab_size`, here: every
    /// id must fit the dtype, and a file per input needs as many files as inputs.
    pub fn check_takes(&self, vocab_size: usize, inputs: usize) -> crate::Result<()> {
        self.dtype().check_holds(vocab_size)?;
        match self {
            IdOutputs::PerInput(f) if f.paths.len() != inputs => Err(crate::Error::InvalidArgument(format!(
                "{} output files for {inputs} inputs",
                f.paths.len()
            ))),
            _ => Ok(()),
        }
    }

    /// Finishes every file (an input without ids gets an empty array) and syncs it; returns the ids
    /// written in all.
    pub fn finish(self) -> crate::Result<u64> {
        match self {
            IdOutputs::Joined(w) => w.finish(),
            IdOutputs::PerInput(f) => f.finish(),
        }
    }
}

/// Threads that sync the files of `PerInputFiles` at its end.
const SYNC_THREADS: usize = 16;

/// One `.npy` file per input, in input order: a file is created when its input's first ids come (or a
/// later input's do), completed when the next input's come, and synced at the end, when the kernel has
/// had the time to write most of it (a sync a file, waited for before the next input's ids could be
/// written, took about 0.37 ms here, as long as one thread takes to encode 100 KB). At most one file is
/// open at a time.
pub struct PerInputFiles {
    paths: Vec<std::path::PathBuf>,
    dtype: Dtype,
    /// The input whose file is being written, and its writer.
    open: Option<(usize, IdWriter)>,
    /// Inputs whose files exist: 0..created.
    created: usize,
    /// Ids in the completed files.
    count: u64,
}

impl PerInputFiles {
    pub fn new(paths: Vec<std::path::PathBuf>, dtype: Dtype) -> Self {
        PerInputFiles {
            paths,
            dtype,
            open: None,
            created: 0,
            count: 0,
        }
    }

    fn writer_for(&mut self, input: usize) -> crate::Result<&mut IdWriter> {
        if self.open.as_ref().is_none_or(|(open, _)| *open != input) {
            if input < self.created {
                return Err(crate::Error::InvalidArgument(format!(
                    "ids of input {input} came after those of a later input"
                )));
            }
            if input >= self.paths.len() {
                return Err(crate::Error::InvalidArgument(format!(
                    "ids of input {input}, with files for {} inputs",
                    self.paths.len()
                )));
            }
            self.complete_until(input)?;
            self.open = Some((input, IdWriter::create(&self.paths[input], self.dtype)?));
            self.created = input + 1;
        }
        Ok(&mut self.open.as_mut().expect("opened above").1)
    }

    /// Completes the open file, and creates the empty arrays of the inputs before `input` that had no ids.
    fn complete_until(&mut self, input: usize) -> crate::Result<()> {
        if let Some((_, w)) = self.open.take() {
            self.count += w.complete()?.0;
        }
        while self.created < input {
            IdWriter::create(&self.paths[self.created], self.dtype)?.complete()?;
            self.created += 1;
        }
        Ok(())
    }

    /// Completes the files and syncs them, from several threads at once: the file system commits
    /// syncs that wait together as one (ext4 here: 100 new files of 200 KB synced one after another in
    /// 25–28 ms, from 16 threads in 15–16 ms), and a corpus of thousands of small files waited for each.
    fn finish(mut self) -> crate::Result<u64> {
        self.complete_until(self.paths.len())?;
        let sync = |path: &std::path::PathBuf| {
            let err = |e| crate::Error::io(Some(path.clone()), e);
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|file| file.sync_all())
                .map_err(err)
        };
        let (paths, sync) = (&self.paths, &sync);
        let threads = paths.len().min(SYNC_THREADS);
        let stripes: Vec<crate::Result<()>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|t| scope.spawn(move || paths.iter().skip(t).step_by(threads).try_for_each(sync)))
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        stripes.into_iter().collect::<crate::Result<()>>()?;
        Ok(self.count)
    }
}

/// Ids of a call's inputs encoded in streams side by side (each stream a run of consecutive inputs, its ids
/// coming in order), written to outputs that take them in input order (`IdOutputs`): the ids of the first
/// stream that has not ended go to the outputs as they come; a later stream's wait in a spill file of its
/// own, copied to the outputs once the streams before it have ended. So streams are read at once (a
/// gzip or zstd stream inflates on one thread only: a corpus of such shards read one after another ran at
/// one thread's inflating on any number of cores) with memory bounded however far ahead one runs.
pub struct StreamOrder<'w> {
    out: &'w mut IdOutputs,
    /// The first stream that has not ended.
    head: usize,
    /// Streams after `head` that have ended.
    ended: std::collections::BTreeSet<usize>,
    spills: std::collections::HashMap<usize, Spill>,
    scratch: Vec<u8>,
}

impl<'w> StreamOrder<'w> {
    pub fn new(out: &'w mut IdOutputs) -> Self {
        StreamOrder {
            out,
            head: 0,
            ended: Default::default(),
            spills: Default::default(),
            scratch: Vec::new(),
        }
    }

    /// Writes ids of `input`, from `stream` (after the ids of the stream's earlier inputs and its own
    /// earlier ids).
    pub fn write<I: OutputId>(&mut self, stream: usize, input: usize, ids: &[I]) -> crate::Result<()> {
        if stream == self.head {
            return self.out.write(input, ids);
        }
        if stream < self.head || self.ended.contains(&stream) {
            return Err(crate::Error::InvalidArgument(format!(
                "ids of stream {stream} came after it ended"
            )));
        }
        let spill = match self.spills.entry(stream) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(Spill::create(self.out)?),
        };
        spill.write(input, ids, self.out.dtype(), &mut self.scratch)
    }

    /// Checks that every stream's ids have been written out (every stream ended).
    pub fn finish(self) -> crate::Result<()> {
        match self.spills.keys().min() {
            Some(stream) => Err(crate::Error::InvalidArgument(format!(
                "the ids of stream {stream} wait for stream {} to end",
                self.head
            ))),
            None => Ok(()),
        }
    }

    /// Notes that `stream` has no more ids; once the streams before it have ended too, the spills of the
    /// streams after it are written out in order, up to the next stream that has not ended (whose ids
    /// then go to the outputs as they come).
    pub fn end(&mut self, stream: usize) -> crate::Result<()> {
        self.ended.insert(stream);
        while self.ended.remove(&self.head) {
            self.head += 1;
            if let Some(spill) = self.spills.remove(&self.head) {
                spill.copy_to(self.out)?;
            }
        }
        Ok(())
    }
}

/// Bytes a `Spill` buffers before writing to its file.
const SPILL_BUFFER_BYTES: usize = 1 << 16;

/// The ids of a stream encoded ahead of its turn (`StreamOrder`), in a file of their own beside the
/// outputs (`IdOutputs::spill_path`). The file is unlinked as soon as it is made (it lives while open), so
/// none is left behind; where the system cannot unlink an open file, it is removed when dropped.
struct Spill {
    file: std::io::BufWriter<std::fs::File>,
    /// Runs of ids in the file, in order: the input they are of, and their bytes.
    runs: Vec<(usize, u64)>,
    /// The name the file was made with (for messages), and whether it still has it.
    path: std::path::PathBuf,
    named: bool,
}

impl Spill {
    fn create(beside: &IdOutputs) -> crate::Result<Self> {
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        loop {
            let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = beside.spill_path(&format!(".spill-{n}"));
            let opened = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path);
            match opened {
                Ok(file) => {
                    let named = std::fs::remove_file(&path).is_err();
                    return Ok(Spill {
                        file: std::io::BufWriter::with_capacity(SPILL_BUFFER_BYTES, file),
                        runs: Vec::new(),
                        path,
                        named,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(crate::Error::io(Some(path), e)),
            }
        }
    }

    fn write<I: OutputId>(
        &mut self,
        input: usize,
        ids: &[I],
        dtype: Dtype,
        scratch: &mut Vec<u8>,
    ) -> crate::Result<()> {
        write_ids(&mut self.file, ids, dtype, scratch).map_err(|e| self.error(e))?;
        let bytes = (ids.len() * dtype.width()) as u64;
        match self.runs.last_mut() {
            Some((last, run)) if *last == input => *run += bytes,
            _ => self.runs.push((input, bytes)),
        }
        Ok(())
    }

    /// Writes the spilled ids to `out`, each run to its input.
    fn copy_to(mut self, out: &mut IdOutputs) -> crate::Result<()> {
        self.file.flush().map_err(|e| self.error(e))?;
        let mut file: &std::fs::File = self.file.get_ref();
        file.seek(SeekFrom::Start(0)).map_err(|e| self.error(e))?;
        for &(input, bytes) in &self.runs {
            out.append_from(input, self.file.get_ref(), bytes)?;
        }
        Ok(())
    }

    fn error(&self, e: std::io::Error) -> crate::Error {
        crate::Error::io(Some(self.path.clone()), e)
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        if self.named {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Rewrites the header of a finished file with its final length.
pub fn finish<W: Write + Seek>(out: &mut W, dtype: Dtype, len: u64) -> std::io::Result<()> {
    out.seek(SeekFrom::Start(0))?;
    out.write_all(&header(dtype, len))?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_ids_are_written_as_they_are_in_whole_ids() {
        let dir = std::env::temp_dir().join(format!("bpe-lm-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ids.npy");
        let mut w = IdWriter::create(&path, Dtype::U16).unwrap();
        w.write(&[1u32, 2]).unwrap();
        w.write_encoded(&[3, 0, 4, 1]).unwrap();
        let err = w.write_encoded(&[5, 0, 6]).unwrap_err().to_string();
        assert!(err.contains("3 bytes are not a whole number of 2-byte ids"), "{err}");
        assert_eq!(w.finish().unwrap(), 4);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes[HEADER_BYTES..], [1, 0, 2, 0, 3, 0, 4, 1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_per_input_takes_inputs_in_order_and_gives_those_without_ids_empty_arrays() {
        let dir = std::env::temp_dir().join(format!("bpe-lm-npy-each-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths: Vec<_> = (0..3).map(|i| dir.join(format!("{i}.npy"))).collect();
        let mut out = IdOutputs::PerInput(PerInputFiles::new(paths.clone(), Dtype::U16));
        out.check_takes(100, 3).unwrap();
        let err = out.check_takes(100, 2).unwrap_err().to_string();
        assert!(err.contains("3 output files for 2 inputs"), "{err}");
        out.write(1, &[5u32, 6]).unwrap();
        out.write(1, &[7u16]).unwrap();
        let err = out.write(0, &[1u32]).unwrap_err().to_string();
        assert!(
            err.contains("ids of input 0 came after those of a later input"),
            "{err}"
        );
        let err = out.write(3, &[1u32]).unwrap_err().to_string();
        assert!(err.contains("with files for 3 inputs"), "{err}");
        assert!(out.write_encoded(&[1, 0]).is_err());
        assert_eq!(out.count(), 3);
        assert_eq!(out.finish().unwrap(), 3);
        let bodies: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert_eq!(bodies[0], header(Dtype::U16, 0));
        assert_eq!(bodies[1][..HEADER_BYTES], header(Dtype::U16, 3));
        assert_eq!(bodies[1][HEADER_BYTES..], [5, 0, 6, 0, 7, 0]);
        assert_eq!(bodies[2], header(Dtype::U16, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn streams_written_out_of_order_reach_the_outputs_in_input_order_and_leave_no_spill_file() {
        let dir = std::env::temp_dir().join(format!("bpe-lm-npy-streams-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Streams 0: input 0; 1: inputs 1 and 2; 2: input 3 (no ids); 3: input 4.
        let writes: [(usize, usize, &[u32]); 7] = [
            (3, 4, &[40, 41]),
            (1, 1, &[10]),
            (0, 0, &[1, 2]),
            (1, 2, &[20, 21]),
            (3, 4, &[42]),
            (1, 2, &[22]),
            (0, 0, &[3]),
        ];
        let ends = [(2, 2), (3, 5), (1, 6)]; // (stream, after how many writes); stream 0 ends last
        let joined = dir.join("all.npy");
        let paths: Vec<_> = (0..5).map(|i| dir.join(format!("{i}.npy"))).collect();
        for mut out in [
            IdOutputs::Joined(IdWriter::create(&joined, Dtype::U16).unwrap()),
            IdOutputs::PerInput(PerInputFiles::new(paths.clone(), Dtype::U16)),
        ] {
            let mut order = StreamOrder::new(&mut out);
            for (n, &(stream, input, ids)) in writes.iter().enumerate() {
                for &(s, _) in ends.iter().filter(|e| e.1 == n) {
                    order.end(s).unwrap();
                }
                order.write(stream, input, ids).unwrap();
            }
            let err = order.write(1, 2, &[99u32]).unwrap_err().to_string();
            assert!(err.contains("ids of stream 1 came after it ended"), "{err}");
            // Streams 1 to 3 wait for stream 0 in spill files, which have no names.
            let names: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(
                names.iter().all(|n| !n.to_string_lossy().contains("spill")),
                "{names:?}"
            );
            order.end(0).unwrap();
            order.finish().unwrap();
            assert_eq!(out.finish().unwrap(), 10);
        }
        let ids = |p: &std::path::Path| std::fs::read(p).unwrap()[HEADER_BYTES..].to_vec();
        assert_eq!(
            ids(&joined),
            [1, 0, 2, 0, 3, 0, 10, 0, 20, 0, 21, 0, 22, 0, 40, 0, 41, 0, 42, 0]
        );
        let each: Vec<_> = paths.iter().map(|p| ids(p)).collect();
        assert_eq!(
            each,
            [
                vec![1, 0, 2, 0, 3, 0],
                vec![10, 0],
                vec![20, 0, 21, 0, 22, 0],
                vec![],
                vec![40, 0, 41, 0, 42, 0]
            ]
        );
        // A stream that never ends is an error, not ids left out.
        let mut out = IdOutputs::Joined(IdWriter::create(&joined, Dtype::U16).unwrap());
        let mut order = StreamOrder::new(&mut out);
        order.write(1, 1, &[5u32]).unwrap();
        let err = order.finish().unwrap_err().to_string();
        assert!(err.contains("the ids of stream 1 wait for stream 0 to end"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn header_is_aligned_and_parsable_shape() {
        let h = header(Dtype::U16, u64::MAX);
        assert_eq!(h.len(), HEADER_BYTES);
        let text = String::from_utf8_lossy(&h[10..]);
        assert!(text.contains("'shape': (18446744073709551615,)"));
        assert!(text.ends_with('\n'));
    }
}
