//! Encoding whole inputs to `.npy` arrays in bounded memory: chunks are read on one thread and encoded
//! in parallel while the next ones are read. Text files keep the separator convention (special-token
//! strings become their ids); record corpora give `encode_ordinary(text) + [end of text]` per record.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rayon::prelude::*;

use crate::encode::Encoder;
use crate::error::{Error, Result};
use crate::npy::{Dtype, IdWriter};
use crate::parquet_input::parquet_input;
use crate::progress::{Phase, Progress};
use crate::records::{self, RecordChunk, RecordInput, RecordStats};
use crate::stream::{ChunkReader, TextSource};

/// Chunk size when streaming a file: small enough that chunks in flight stay well under 100 MB.
const FILE_CHUNK_BYTES: usize = 2 << 20;

/// Chunks being encoded or waiting to be written at once: one per thread, and one more so that a thread
/// finishing its chunk finds the next one ready while the oldest is written.
fn in_flight(pool: &rayon::ThreadPool) -> usize {
    pool.current_num_threads() + 1
}

/// Bytes of documents per unit of parallel work when encoding a batch of records.
const DOCUMENT_RUN_BYTES: usize = 256 << 10;

/// Reads items on a thread of its own and processes each with `work` on `pool` as soon as it is read, at
/// most `in_flight` at a time, while this thread hands the results to `sink` in the items' order. No
/// thread waits for a batch's slowest item or for the sink: a worker that finishes takes the next item,
/// and the sink (writing the ids) runs beside the workers. At most `in_flight` items are held being
/// processed or waiting for their turn at the sink, and as many more read ahead.
fn pipelined<I, O>(
    items: impl Iterator<Item = Result<I>> + Send,
    in_flight: usize,
    pool: &rayon::ThreadPool,
    work: impl Fn(&I) -> Result<O> + Sync,
    mut sink: impl FnMut(O) -> Result<()>,
) -> Result<()>
where
    I: Send,
    O: Send,
{
    let in_flight = in_flight.max(1);
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<I>>(in_flight);
        scope.spawn(move || {
            for item in items {
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
        let work = &work;
        let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Result<O>)>();
        // The scope waits for every spawned item, also when an error ends the loop early.
        pool.in_place_scope(|tasks| -> Result<()> {
            let mut waiting = std::collections::BTreeMap::new(); // done, not yet their turn at the sink
            let (mut started, mut sunk, mut read_all) = (0usize, 0usize, false);
            loop {
                while !read_all && started - sunk < in_flight {
                    match rx.recv() {
                        Ok(item) => {
                            let item = item?;
                            let done_tx = done_tx.clone();
                            let index = started;
                            tasks.spawn(move |_| {
                                let _ = done_tx.send((index, work(&item)));
                            });
                            started += 1;
                        }
                        Err(_) => read_all = true,
                    }
                }
                if sunk == started {
                    return Ok(());
                }
                let (index, result) = done_rx.recv().expect("a spawned item always reports");
                waiting.insert(index, result);
                while let Some(result) = waiting.remove(&sunk) {
                    sink(result?)?;
                    sunk += 1;
                }
            }
        })
    })
}

impl Encoder {
    /// Streams a text file (plain, gzip or zstd) into `.npy` ids at `output`; returns the number of
    /// tokens. The ids equal `encode` of the whole text.
    pub fn encode_file(
        &self,
        input: &TextSource,
        output: &Path,
        dtype: Dtype,
        pool: &rayon::ThreadPool,
        lossy: bool,
        progress: &dyn Progress,
    ) -> Result<u64> {
        dtype.check_holds(self.vocab_size())?;
        let mut writer = IdWriter::create(output, dtype)?;
        self.encode_text_into(input, &mut writer, pool, lossy, progress)?;
        writer.finish()
    }

    /// Appends the ids of a text file to `writer`; returns (ids written, bytes of text read).
    pub fn encode_text_into(
        &self,
        input: &TextSource,
        writer: &mut IdWriter,
        pool: &rayon::ThreadPool,
        lossy: bool,
        progress: &dyn Progress,
    ) -> Result<(u64, u64)> {
        writer.dtype().check_holds(self.vocab_size())?;
        let total = input.disk_bytes()?;
        let read = Arc::new(AtomicU64::new(0));
        let source = input.open(read.clone())?;
        let reader = ChunkReader::new(source, Some(input.path.clone()), self.cutter(), FILE_CHUNK_BYTES)
            .lossy(lossy)
            .starting_at(input.start());
        let before = writer.count();
        let mut text_bytes = 0u64;
        let work = |c: &crate::stream::Chunk| Ok((self.encode(&c.text)?, c.text.len() as u64));
        pipelined(reader, in_flight(pool), pool, work, |(ids, len)| {
            writer.write(&ids)?;
            text_bytes += len;
            if !progress.update(Phase::Read, read.load(Ordering::Relaxed), total) {
                return Err(Error::Interrupted);
            }
            Ok(())
        })?;
        Ok((writer.count() - before, text_bytes))
    }

    /// Appends the ids of a JSON-lines file (plain, gzip or zstd; or a byte range of a plain one that
    /// starts at a line) to `writer`: per record, `encode_ordinary` of its `field` and then `end_id`.
    pub fn encode_jsonl_into(
        &self,
        input: &TextSource,
        field: &str,
        end_id: Option<u32>,
        writer: &mut IdWriter,
        pool: &rayon::ThreadPool,
        progress: &dyn Progress,
    ) -> Result<RecordStats> {
        self.encode_records_into(records::jsonl_input(input, field)?, end_id, writer, pool, progress)
    }

    /// Appends the ids of a parquet file's string column `field` (of the row groups `row_groups`, all
    /// when None) to `writer`: per row, `encode_ordinary` of its text and then `end_id`.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_parquet_into(
        &self,
        path: &Path,
        field: &str,
        row_groups: Option<&[usize]>,
        end_id: Option<u32>,
        writer: &mut IdWriter,
        pool: &rayon::ThreadPool,
        progress: &dyn Progress,
    ) -> Result<RecordStats> {
        let input = parquet_input(path, field, row_groups)?;
        self.encode_records_into(input, end_id, writer, pool, progress)
    }

    /// The record pipeline of every record reader: chunks read on one thread, their documents found and
    /// encoded on `pool` (per record `encode_ordinary`, then `end_id`), the ids written in order beside
    /// the workers.
    fn encode_records_into<C: RecordChunk>(
        &self,
        input: RecordInput<impl Iterator<Item = Result<C>> + Send>,
        end_id: Option<u32>,
        writer: &mut IdWriter,
        pool: &rayon::ThreadPool,
        progress: &dyn Progress,
    ) -> Result<RecordStats> {
        writer.dtype().check_holds(self.vocab_size())?;
        let RecordInput {
            chunks,
            spec,
            read,
            total,
        } = input;
        let mut stats = RecordStats::default();
        pipelined(
            chunks,
            in_flight(pool),
            pool,
            |chunk| {
                let docs = chunk.documents(&spec)?;
                let texts: Vec<&str> = docs.texts.iter().map(|t| t.as_ref()).collect();
                let mut ids = Vec::with_capacity(texts.iter().map(|t| t.len()).sum::<usize>() / 4 + texts.len());
                for t in &texts {
                    self.encode_document_into(t, end_id, &mut ids)?;
                }
                Ok((ids, RecordStats::of(&texts, docs.skipped)))
            },
            |(ids, s)| {
                writer.write(&ids)?;
                stats.add(s);
                if !progress.update(Phase::Read, read.load(Ordering::Relaxed), total) {
                    return Err(Error::Interrupted);
                }
                Ok(())
            },
        )?;
        Ok(stats)
    }

    /// One record: its text as ordinary text, then the end-of-document id (when there is one).
    fn encode_document_into(&self, text: &str, end_id: Option<u32>, out: &mut Vec<u32>) -> Result<()> {
        self.encode_ordinary_into(text, out)?;
        out.extend(end_id);
        Ok(())
    }

    /// Encodes documents in parallel on `pool`: per document `encode_ordinary` then `end_id`, in order.
    /// Ids come back in parts (one per run of documents) so the caller can write them without a copy.
    pub fn encode_documents(
        &self,
        docs: &[&str],
        end_id: Option<u32>,
        pool: &rayon::ThreadPool,
    ) -> Result<Vec<Vec<u32>>> {
        let runs = records::runs(docs, DOCUMENT_RUN_BYTES);
        pool.install(|| {
            runs.par_iter()
                .map(|run| {
                    let mut ids = Vec::with_capacity(run.iter().map(|d| d.len()).sum::<usize>() / 4 + run.len());
                    for d in run.iter() {
                        self.encode_document_into(d, end_id, &mut ids)?;
                    }
                    Ok(ids)
                })
                .collect()
        })
    }
}
