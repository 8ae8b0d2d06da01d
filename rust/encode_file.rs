//! Encoding whole inputs to `.npy` arrays in bounded memory: chunks are read on one thread and encoded
//! in parallel while the next ones are read. Text files keep the separator convention (special-token
//! strings become their ids); record corpora give `encode_ordinary(text) + [end of text]` per record.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rayon::prelude::*;

use crate::encode::{run_bytes, Encoder, OutputId};
use crate::error::Result;
use crate::npy::{Dtype, IdOutputs, IdWriter, StreamOrder};
use crate::progress::{Phase, Progress};
use crate::records::{self, AnyChunk, RecordChunk, RecordSource, RecordSpec, RecordStats};
use crate::stream::{grouped, small_file_groups, Chained, Chunk, ChunkReader, TextSource, GROUP_BYTES};
use crate::threads::StopOnPanic;

/// Chunk size when streaming a file: small enough that chunks in flight stay well under 100 MB.
const FILE_CHUNK_BYTES: usize = 2 << 20;

/// Chunks being encoded or waiting to be written at once: one per thread, and one more so that a thread
/// finishing its chunk finds the next one ready while the oldest is written.
fn in_flight(pool: &rayon::ThreadPool) -> usize {
    pool.current_num_threads() + 1
}

/// Where a pipeline reads its items (`pipelined`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// On a thread of its own, which hands each item to the pool as soon as it is read.
    Beside,
    /// On the pool's threads, in turns: a thread reads an item, processes it and comes back for another.
    InTurns,
    /// On one thread of the pool, which also processes each item and sinks it, one after another.
    Here,
}

impl Reading {
    /// How to read one input: a `small` one (`TextSource::is_small`, `RecordSource::is_small`) on one
    /// thread, anything larger as `for_pool` says.
    fn for_input(pool: &rayon::ThreadPool, small: bool) -> Self {
        if small {
            Reading::Here
        } else {
            Reading::for_pool(pool)
        }
    }

    /// A reader thread of its own where the machine has a core the pool leaves free (reading then costs
    /// the encoders nothing: `.txt.zst` at one thread ran at the speed of `.txt`); turns where it has none,
    /// so that reading (inflating zstd or gzip, decoding parquet pages) does not take cores from the
    /// encoders in time slices, with their caches. Measured on 2 cores, 2 threads, 40 MB of documents
    /// (`benches/formats.py`' inputs, 5 interleaved rounds, medians, against `.txt`): parquet 0.78× beside,
    /// 0.82× in turns; `.jsonl.zst` 0.67× and 0.72×; `.txt.zst` 0.76× and 0.79×.
    fn for_pool(pool: &rayon::ThreadPool) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if pool.current_num_threads() < cores {
            Reading::Beside
        } else {
            Reading::InTurns
        }
    }
}

/// Processes `items` with `work` on `pool` and hands the results to `sink` in the items' order, on this
/// thread. No thread waits for a batch's slowest item or for the sink: a thread that finishes takes the
/// next item, and the sink (writing the ids) runs beside the workers. At most `in_flight` items are
/// held being processed or waiting for their turn at the sink, so memory stays bounded. The items are
/// read as `reading` says (`Reading::for_pool`; the tests run both ways on any machine).
///
/// `prepare` does the part of an item's work that may run before the rest, on the reader's thread or
/// not (parquet: inflating and decoding its pages; the work then finds that done). A reader of its own
/// prepares an item itself when the workers have items waiting (it has time to spare: a parquet file at
/// one thread on two cores reads as fast as `.txt`), and hands it on unprepared when they have none (it
/// cannot keep up, and the workers prepare their items in parallel).
fn pipelined<I, O>(
    reading: Reading,
    items: impl Iterator<Item = Result<I>> + Send,
    in_flight: usize,
    pool: &rayon::ThreadPool,
    prepare: impl Fn(&I) + Sync,
    work: impl Fn(&I) -> Result<O> + Sync,
    mut sink: impl FnMut(O) -> Result<()>,
) -> Result<()>
where
    I: Send,
    O: Send,
{
    use std::sync::atomic::AtomicBool;
    use std::sync::{Condvar, Mutex, PoisonError};

    let reader_of_its_own = match reading {
        Reading::Here => {
            // The work on one of the pool's threads, whose piece caches are warm from earlier inputs (the
            // calling thread may be new for every input: the bindings run some calls on a thread of their
            // own).
            let work = &work;
            for item in items {
                let item = item?;
                sink(pool.install(move || work(&item))?)?;
            }
            return Ok(());
        }
        Reading::Beside => true,
        Reading::InTurns => false,
    };
    // Items read and not yet at the sink, at most: a reader of its own keeps as many again read ahead.
    let window = if reader_of_its_own { 2 } else { 1 } * in_flight.max(1);
    // The items (None once all are read or one failed) and the index of the next one.
    let source = Mutex::new((Some(items), 0usize));
    // How many results the sink has taken: item i is read only once i < taken + window.
    let taken = Mutex::new(0usize);
    let taken_moved = Condvar::new();
    let stop = AtomicBool::new(false);
    // Items handed to the pool and not yet taken up by a worker.
    let waiting = std::sync::atomic::AtomicUsize::new(0);
    // The next item, read under the lock (so items are read one at a time and in order); None when
    // there is none to read, or the sink failed.
    let next_item = || {
        let mut source = source.lock().unwrap_or_else(PoisonError::into_inner);
        let index = source.1;
        let mut sunk = taken.lock().unwrap_or_else(PoisonError::into_inner);
        while index >= *sunk + window && !stop.load(Ordering::Relaxed) {
            sunk = taken_moved.wait(sunk).unwrap_or_else(PoisonError::into_inner);
        }
        drop(sunk);
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        let item = source.0.as_mut()?.next();
        if !matches!(item, Some(Ok(_))) {
            source.0 = None; // the end, or an error: nothing more is read
        }
        source.1 += 1;
        Some((index, item?))
    };
    // Ends the pipeline: a reader waiting for room wakes up and stops; the others stop at their next item.
    let halt = || {
        stop.store(true, Ordering::Relaxed);
        let _sunk = taken.lock().unwrap_or_else(PoisonError::into_inner);
        taken_moved.notify_all();
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Result<O>)>();
    let (work, halt) = (&work, &halt);
    // Both scopes wait for every thread and task, also when an error ends the sink early.
    pool.in_place_scope(|tasks| {
        std::thread::scope(|threads| {
            if reader_of_its_own {
                let (done_tx, next_item, waiting, prepare) = (done_tx.clone(), &next_item, &waiting, &prepare);
                threads.spawn(move || {
                    let _stop = StopOnPanic(halt);
                    while let Some((index, item)) = next_item() {
                        if waiting.load(Ordering::Relaxed) > 0 {
                            if let Ok(item) = &item {
                                prepare(item);
                            }
                        }
                        waiting.fetch_add(1, Ordering::Relaxed);
                        let done_tx = done_tx.clone();
                        tasks.spawn(move |_| {
                            let _stop = StopOnPanic(halt);
                            waiting.fetch_sub(1, Ordering::Relaxed);
                            let _ = done_tx.send((index, item.and_then(|item| work(&item))));
                        });
                    }
                });
            } else {
                for _ in 0..pool.current_num_threads() {
                    let (done_tx, next_item) = (done_tx.clone(), &next_item);
                    tasks.spawn(move |_| {
                        let _stop = StopOnPanic(halt);
                        while let Some((index, item)) = next_item() {
                            let _ = done_tx.send((index, item.and_then(|item| work(&item))));
                        }
                    });
                }
            }
            drop(done_tx);
            let outcome = sink_in_order(done_rx, sink, |n| {
                *taken.lock().unwrap_or_else(PoisonError::into_inner) = n;
                taken_moved.notify_all();
            });
            if outcome.is_err() {
                halt();
            }
            outcome
        })
    })
}

/// The streams to read `inputs` of `sizes` bytes on disk in side by side (`pipelined_streams`): each large
/// input one, runs of consecutive small ones one each (`small_file_groups`). None where one stream after
/// another reads as fast: on one thread, for fewer than two streams, or for inputs that are not
/// `compressed` (only the first is looked at), which read faster than a thread encodes.
fn side_by_side(
    pool: &rayon::ThreadPool,
    sizes: &[u64],
    compressed: impl FnOnce() -> bool,
) -> Result<Option<Vec<std::ops::Range<usize>>>> {
    if pool.current_num_threads() < 2 || sizes.len() < 2 || !compressed() {
        return Ok(None);
    }
    let streams = small_file_groups(sizes).collect::<Result<Vec<_>>>()?;
    Ok((streams.len() > 1).then_some(streams))
}

/// Encodes inputs read side by side (`pipelined_streams`), a stream per range of `streams`: its inputs'
/// items (`open_input(i)`, each tagged with its input) chained, in groups of about GROUP_BYTES (`bytes`
/// of each). `work` encodes a group into (input, ids, what else it counted of the input); `tally` gets
/// that with the ids written, and the ids go to `writer` in input order (`StreamOrder`). `report` runs
/// after each group and end.
#[allow(clippy::too_many_arguments)]
fn encode_side_by_side<C, It, X>(
    streams: &[std::ops::Range<usize>],
    open_input: impl Fn(usize) -> Result<It> + Sync,
    bytes: impl Fn(&C) -> usize + Sync,
    work: impl Fn(&Vec<(usize, C)>) -> Result<Vec<(usize, ChunkIds, X)>> + Sync,
    writer: &mut IdOutputs,
    pool: &rayon::ThreadPool,
    mut tally: impl FnMut(usize, u64, X),
    mut report: impl FnMut() -> Result<()>,
) -> Result<()>
where
    C: Send,
    It: Iterator<Item = Result<C>> + Send,
    X: Send,
{
    let (open_input, bytes) = (&open_input, &bytes);
    let open = |s: usize| {
        let start = streams[s].start;
        let chunks = Chained::new(streams[s].len(), None, move |i| open_input(start + i));
        let tagged = chunks.map(move |c| c.map(|(i, c)| (start + i, c)));
        Ok(grouped(tagged, GROUP_BYTES, move |(_, c): &(usize, C)| bytes(c)))
    };
    let mut order = StreamOrder::new(writer);
    pipelined_streams(streams.len(), open, in_flight(pool), pool, work, |stream, encoded| {
        match encoded {
            Some(encoded) => {
                for (index, ids, counted) in encoded {
                    let tokens = ids.write_in(&mut order, stream, index)?;
                    tally(index, tokens, counted);
                }
            }
            None => order.end(stream)?,
        }
        report()
    })?;
    order.finish()
}

/// How many streams per thread `pipelined_streams` opens past the first that has not ended.
const STREAMS_AHEAD_PER_THREAD: usize = 4;

/// What a worker of `pipelined_streams` hands its sink for one turn at a stream: an item's result, or
/// that the stream has ended.
enum Turn<O> {
    Item(Result<O>),
    End,
}

/// `pipelined` for the items of several streams (stream `s`: the items of `open(s)`, in order), read side
/// by side where `pipelined` reads one stream: a worker takes a turn at the first stream that no other is
/// reading (opening the next one when every open stream is being read, up to one per thread), reads one
/// item, and processes it. The sink gets each stream's results in order (`Some`), then its end (`None`),
/// the streams interleaved (`StreamOrder` puts them in order). At most twice `in_flight` items are held
/// read and not yet sunk, so memory stays bounded. After an error nothing past its stream is read; the
/// streams before it are read to their end, and the error of the first stream that has one is returned
/// (so which error a call gives does not depend on timing). For streams that only one thread can read at
/// a time (gzip and zstd inflate in order): `pipelined`, through them one after another, runs at one
/// thread's inflating on any number of cores.
fn pipelined_streams<S, I, O>(
    streams: usize,
    open: impl Fn(usize) -> Result<S> + Sync,
    in_flight: usize,
    pool: &rayon::ThreadPool,
    work: impl Fn(&I) -> Result<O> + Sync,
    mut sink: impl FnMut(usize, Option<O>) -> Result<()>,
) -> Result<()>
where
    S: Iterator<Item = Result<I>> + Send,
    I: Send,
    O: Send,
{
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

    struct Readers<S> {
        /// Open streams, in stream order: index, reader (None while a worker reads it), next item's number.
        open: Vec<(usize, Option<S>, usize)>,
        /// The next stream to open.
        next: usize,
        /// Turns taken whose results the sink has not taken yet.
        outstanding: usize,
        /// Which streams the sink has seen end, and the first it has not.
        ended: Vec<bool>,
        head: usize,
        /// Set when the sink failed: every worker stops.
        stop: bool,
    }
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }
    let threads = pool.current_num_threads();
    let window = 2 * in_flight.max(1);
    // Streams opened at most this far past the first that has not ended: the sink holds the ids of each
    // stream past it (a spill file each), so a stream far longer than the others cannot have every later
    // one read ahead of it.
    let ahead = STREAMS_AHEAD_PER_THREAD * threads;
    let readers = Mutex::new(Readers::<S> {
        open: Vec::new(),
        next: 0,
        outstanding: 0,
        ended: vec![false; streams],
        head: 0,
        stop: false,
    });
    let moved = Condvar::new();
    // The first stream that has had an error: none after it is read on.
    let failed = AtomicUsize::new(usize::MAX);
    // A turn: a stream, the number of its item to read, and its reader (None: the stream is to be opened).
    let take_turn = || -> Option<(usize, usize, Option<S>)> {
        let mut r = lock(&readers);
        loop {
            if r.stop {
                return None;
            }
            let failed_at = failed.load(Ordering::Relaxed);
            r.open.retain(|(s, reader, _)| *s <= failed_at || reader.is_none());
            if r.outstanding < window {
                if let Some((stream, reader, next)) = r.open.iter_mut().find(|(_, reader, _)| reader.is_some()) {
                    let turn = (*stream, *next, reader.take());
                    *next += 1;
                    r.outstanding += 1;
                    return Some(turn);
                }
                let openable = r.open.len() < threads && r.next < r.head + ahead;
                if openable && r.next < streams.min(failed_at.saturating_add(1)) {
                    let stream = r.next;
                    r.next += 1;
                    r.open.push((stream, None, 1));
                    r.outstanding += 1;
                    return Some((stream, 0, None));
                }
            }
            if r.open.is_empty() && r.next >= streams.min(failed_at.saturating_add(1)) {
                return None;
            }
            r = moved.wait(r).unwrap_or_else(PoisonError::into_inner);
        }
    };
    // Puts a stream's reader back after a turn (None: the stream ended, or failed).
    let give_back = |stream: usize, reader: Option<S>| {
        let mut r = lock(&readers);
        if let Some(k) = r.open.iter().position(|(s, _, _)| *s == stream) {
            match reader {
                Some(reader) if stream <= failed.load(Ordering::Relaxed) => r.open[k].1 = Some(reader),
                _ => {
                    r.open.remove(k);
                }
            }
        }
        moved.notify_all();
    };
    let halt = || {
        lock(&readers).stop = true;
        moved.notify_all();
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, usize, Turn<O>)>();
    let (work, open, take_turn, give_back, halt) = (&work, &open, &take_turn, &give_back, &halt);
    pool.in_place_scope(|tasks| {
        for _ in 0..threads {
            let (done_tx, failed) = (done_tx.clone(), &failed);
            tasks.spawn(move |_| {
                let _stop = StopOnPanic(halt);
                while let Some((stream, number, reader)) = take_turn() {
                    let item = match reader.map_or_else(|| open(stream), Ok) {
                        Ok(mut reader) => match reader.next() {
                            Some(Ok(item)) => {
                                give_back(stream, Some(reader));
                                Turn::Item(work(&item))
                            }
                            Some(Err(e)) => Turn::Item(Err(e)),
                            None => Turn::End,
                        },
                        Err(e) => Turn::Item(Err(e)),
                    };
                    if matches!(item, Turn::Item(Err(_))) {
                        failed.fetch_min(stream, Ordering::Relaxed);
                    }
                    if !matches!(item, Turn::Item(Ok(_))) {
                        give_back(stream, None);
                    }
                    if done_tx.send((stream, number, item)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        // Each stream's turns in order; an error is kept until the streams before its own have ended.
        let mut waiting = std::collections::BTreeMap::new();
        let mut next_of = std::collections::HashMap::new();
        let mut first_error: Option<(usize, crate::Error)> = None;
        let mut sink_turns = || -> Result<()> {
            for (stream, number, turn) in done_rx.iter() {
                waiting.insert((stream, number), turn);
                let next = next_of.entry(stream).or_insert(0usize);
                while let Some(turn) = waiting.remove(&(stream, *next)) {
                    *next += 1;
                    let end = matches!(turn, Turn::End);
                    if first_error.as_ref().is_none_or(|(s, _)| stream < *s) {
                        match turn {
                            Turn::Item(Ok(result)) => sink(stream, Some(result))?,
                            Turn::Item(Err(e)) => first_error = Some((stream, e)),
                            Turn::End => sink(stream, None)?,
                        }
                    }
                    let mut r = lock(&readers);
                    r.outstanding -= 1;
                    if end {
                        r.ended[stream] = true;
                        while r.ended.get(r.head) == Some(&true) {
                            r.head += 1;
                        }
                    }
                    drop(r);
                    moved.notify_all();
                }
            }
            Ok(())
        };
        let outcome = sink_turns();
        if outcome.is_err() {
            halt();
        }
        outcome?;
        first_error.map_or(Ok(()), |(_, e)| Err(e))
    })
}

/// Hands results to `sink` in the order of their indices as they arrive from `done`, telling `taken` the
/// count after each; returns once every sender is gone, or at the first error (an item's or the sink's).
fn sink_in_order<O>(
    done: std::sync::mpsc::Receiver<(usize, Result<O>)>,
    mut sink: impl FnMut(O) -> Result<()>,
    mut taken: impl FnMut(usize),
) -> Result<()> {
    let mut waiting = std::collections::BTreeMap::new(); // done, not yet their turn at the sink
    let mut next = 0usize;
    for (index, result) in done.iter() {
        waiting.insert(index, result);
        while let Some(result) = waiting.remove(&next) {
            sink(result?)?;
            next += 1;
            taken(next);
        }
    }
    Ok(())
}

/// A chunk's ids in the type of the output file: the encoders write `u16` ids narrow from the start
/// (`Encoder::encode_as`), half the memory of the chunks in flight and of their writing. Measured
/// (`encode_files` of 40 MB of documents, fresh processes, medians; against ids written as `u32` and
/// narrowed by the writer): `.txt` at 2 threads 103.8 → 99.3 ms (7 rounds; page faults 5,244 → 3,515),
/// 1 thread 150.5 → 146.3 ms (5 rounds).
enum ChunkIds {
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl ChunkIds {
    fn new(dtype: Dtype) -> Self {
        match dtype {
            Dtype::U16 => ChunkIds::U16(Vec::new()),
            Dtype::U32 => ChunkIds::U32(Vec::new()),
        }
    }

    /// Appends the ids of `text`, special-token strings as their ids (`Encoder::encode_into`).
    fn text(&mut self, encoder: &Encoder, text: &str) -> Result<()> {
        match self {
            ChunkIds::U16(ids) => encoder.encode_into(text, ids),
            ChunkIds::U32(ids) => encoder.encode_into(text, ids),
        }
    }

    /// Appends per document `encode_ordinary`, then `end_id` (`Encoder::encode_documents_into`).
    fn documents(&mut self, encoder: &Encoder, docs: &[&str], end_id: Option<u32>) -> Result<()> {
        match self {
            ChunkIds::U16(ids) => encoder.encode_documents_into(docs, end_id, ids),
            ChunkIds::U32(ids) => encoder.encode_documents_into(docs, end_id, ids),
        }
    }

    /// Appends the ids to `writer` as input `input`'s; returns how many.
    fn write_to(&self, writer: &mut IdOutputs, input: usize) -> Result<u64> {
        match self {
            ChunkIds::U16(ids) => writer.write(input, ids).map(|()| ids.len() as u64),
            ChunkIds::U32(ids) => writer.write(input, ids).map(|()| ids.len() as u64),
        }
    }

    /// `write_to`, for ids of `input` from `stream` of streams encoded side by side.
    fn write_in(&self, order: &mut StreamOrder, stream: usize, input: usize) -> Result<u64> {
        match self {
            ChunkIds::U16(ids) => order.write(stream, input, ids).map(|()| ids.len() as u64),
            ChunkIds::U32(ids) => order.write(stream, input, ids).map(|()| ids.len() as u64),
        }
    }
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
        let mut writer = IdOutputs::Joined(IdWriter::create(output, dtype)?);
        self.encode_text_into(input, &mut writer, pool, lossy, progress)?;
        writer.finish()
    }

    /// Appends the ids of a text file to `writer`; returns (ids written, bytes of text read).
    pub fn encode_text_into(
        &self,
        input: &TextSource,
        writer: &mut IdOutputs,
        pool: &rayon::ThreadPool,
        lossy: bool,
        progress: &dyn Progress,
    ) -> Result<(u64, u64)> {
        let counts = self.encode_streams_into(std::slice::from_ref(input), writer, pool, lossy, progress)?;
        Ok(counts[0])
    }

    /// Appends the ids of text files (plain, gzip or zstd; or byte ranges of plain ones) to `writer`, in
    /// order, each file's ids those of the file alone (a file is its own stream: no piece spans two);
    /// returns (ids written, bytes of text read) per file. One pipeline runs through all of them
    /// (`Chained`): chunks read on one thread (or in turns), encoded on `pool`, the ids written in order
    /// beside the workers.
    pub fn encode_streams_into(
        &self,
        inputs: &[TextSource],
        writer: &mut IdOutputs,
        pool: &rayon::ThreadPool,
        lossy: bool,
        progress: &dyn Progress,
    ) -> Result<Vec<(u64, u64)>> {
        writer.check_takes(self.vocab_size(), inputs.len())?;
        let sizes = inputs
            .iter()
            .map(TextSource::disk_bytes)
            .collect::<Result<Vec<u64>>>()?;
        let total: u64 = sizes.iter().sum();
        let read = Arc::new(AtomicU64::new(0));
        let chunks_of = |input: &TextSource, source| {
            ChunkReader::new(source, Some(input.path.clone()), self.cutter(), FILE_CHUNK_BYTES)
                .lossy(lossy)
                .starting_at(input.start())
        };
        // The first input is opened here (its errors given now), and the caches are sized for the text
        // of all the inputs as its text is to its size.
        let first = match inputs.first() {
            Some(input) => {
                let source = input.open(read.clone())?;
                let per_disk_byte = source.expected_bytes(sizes[0]) as f64 / sizes[0].max(1) as f64;
                self.expect_text((per_disk_byte * total as f64) as u64, pool);
                Some(chunks_of(input, source))
            }
            None => None,
        };
        let dtype = writer.dtype();
        let work = |group: &Vec<(usize, Chunk)>| {
            let encode = |(index, c): &(usize, Chunk)| {
                let mut ids = ChunkIds::new(dtype);
                ids.text(self, &c.text)?;
                Ok((*index, ids, c.text.len() as u64))
            };
            group.iter().map(encode).collect::<Result<Vec<_>>>()
        };
        let mut counts = vec![(0u64, 0u64); inputs.len()];
        if let Some(streams) = side_by_side(pool, &sizes, || inputs[0].is_compressed())? {
            drop(first);
            encode_side_by_side(
                &streams,
                |i| Ok(chunks_of(&inputs[i], inputs[i].open(read.clone())?)),
                |c: &Chunk| c.text.len(),
                work,
                writer,
                pool,
                |index, tokens, len| {
                    counts[index].0 += tokens;
                    counts[index].1 += len;
                },
                || progress.report(Phase::Read, read.load(Ordering::Relaxed), total),
            )?;
            return Ok(counts);
        }
        let open = |i: usize| Ok(chunks_of(&inputs[i], inputs[i].open(read.clone())?));
        let chunks = Chained::new(inputs.len(), first, open);
        let reading = match inputs {
            [one] => Reading::for_input(pool, one.is_small()),
            _ => Reading::for_pool(pool),
        };
        pipelined(
            reading,
            grouped(chunks, GROUP_BYTES, |(_, c)| c.text.len()),
            in_flight(pool),
            pool,
            |_| {},
            work,
            |encoded| {
                for (index, ids, len) in encoded {
                    counts[index].0 += ids.write_to(writer, index)?;
                    counts[index].1 += len;
                }
                progress.report(Phase::Read, read.load(Ordering::Relaxed), total)
            },
        )?;
        Ok(counts)
    }

    /// Appends the ids of text files to `writer`, in order, each file's ids those `encode_text_into` gives
    /// it; returns (ids written, bytes of text read) per file. The items of one pipeline are runs of
    /// consecutive files (`small_file_groups`): each run is opened, read and encoded by whichever thread
    /// is free, and written in turn, so its ids are held whole until then: for small files
    /// (`is_small_input`, uncompressed; the caller chooses them), not for a stream of any size. A corpus
    /// of many small files (a document a file) cost a call each, with a hop to the pool and back: about
    /// 80 µs a file of a kilobyte, ten times the work of encoding it.
    pub fn encode_texts_into(
        &self,
        inputs: &[TextSource],
        writer: &mut IdOutputs,
        pool: &rayon::ThreadPool,
        lossy: bool,
        progress: &dyn Progress,
    ) -> Result<Vec<(u64, u64)>> {
        writer.check_takes(self.vocab_size(), inputs.len())?;
        let dtype = writer.dtype();
        let sizes = inputs
            .iter()
            .map(TextSource::disk_bytes)
            .collect::<Result<Vec<u64>>>()?;
        let total = sizes.iter().sum();
        self.expect_text(total, pool);
        let mut done = 0u64;
        let mut counts = Vec::with_capacity(inputs.len());
        let encode_one = |input: &TextSource| {
            let source = input.open(Arc::new(AtomicU64::new(0)))?;
            let reader = ChunkReader::new(source, Some(input.path.clone()), self.cutter(), FILE_CHUNK_BYTES)
                .lossy(lossy)
                .starting_at(input.start());
            let mut ids = ChunkIds::new(dtype);
            let mut text_bytes = 0u64;
            for chunk in reader {
                let chunk = chunk?;
                ids.text(self, &chunk.text)?;
                text_bytes += chunk.text.len() as u64;
            }
            Ok((ids, text_bytes))
        };
        let items = small_file_groups(&sizes);
        pipelined(
            Reading::for_pool(pool),
            items,
            in_flight(pool),
            pool,
            |_| {},
            |files: &std::ops::Range<usize>| {
                let encoded = inputs[files.clone()]
                    .iter()
                    .map(encode_one)
                    .collect::<Result<Vec<_>>>()?;
                Ok((encoded, sizes[files.clone()].iter().sum::<u64>()))
            },
            |(encoded, disk)| {
                for (ids, text_bytes) in encoded {
                    counts.push((ids.write_to(writer, counts.len())?, text_bytes));
                }
                done += disk;
                progress.report(Phase::Read, done, total)?;
                Ok(())
            },
        )?;
        Ok(counts)
    }

    /// Appends the ids of the records of `sources` (JSON-lines files, parquet files' row groups), in
    /// order, to `writer`: per record `encode_ordinary` of its text (the field or column `field`), then
    /// `end_id`; returns each source's stats and ids written. One pipeline runs through all of them
    /// (`ManyRecords`): chunks read on one thread (or in turns), their documents found and encoded on
    /// `pool`, the ids written in order beside the workers.
    #[allow(clippy::too_many_arguments)]
    pub fn encode_records_into(
        &self,
        sources: &[RecordSource],
        field: &str,
        end_id: Option<u32>,
        writer: &mut IdOutputs,
        pool: &rayon::ThreadPool,
        lossy: bool,
        progress: &dyn Progress,
    ) -> Result<Vec<(RecordStats, u64)>> {
        writer.check_takes(self.vocab_size(), sources.len())?;
        let specs: Vec<RecordSpec> = sources.iter().map(|s| s.spec(field, lossy)).collect();
        let sizes = sources
            .iter()
            .map(RecordSource::disk_bytes)
            .collect::<Result<Vec<u64>>>()?;
        let total = sizes.iter().sum();
        let read = Arc::new(AtomicU64::new(0));
        let (chunks, text_per_disk_byte) = records::many_records(sources, field, lossy, read.clone())?;
        // The caches are sized for the text of all the inputs, as the first one's text is to its size.
        self.expect_text((text_per_disk_byte * total as f64) as u64, pool);
        let dtype = writer.dtype();
        let work = |group: &Vec<(usize, AnyChunk)>| {
            let encode = |(index, chunk): &(usize, AnyChunk)| {
                let docs = chunk.documents(&specs[*index])?;
                let texts: Vec<&str> = docs.texts.iter().map(|t| t.as_ref()).collect();
                let mut ids = ChunkIds::new(dtype);
                ids.documents(self, &texts, end_id)?;
                Ok((*index, ids, RecordStats::of(&texts, docs.skipped)))
            };
            group.iter().map(encode).collect::<Result<Vec<_>>>()
        };
        let mut counts = vec![(RecordStats::default(), 0u64); sources.len()];
        if let Some(streams) = side_by_side(pool, &sizes, || sources[0].is_compressed())? {
            drop(chunks);
            encode_side_by_side(
                &streams,
                |i| Ok(sources[i].open(field, lossy, read.clone())?.chunks),
                |chunk: &AnyChunk| chunk.text_bytes(),
                work,
                writer,
                pool,
                |index, tokens, s| {
                    counts[index].0.add(s);
                    counts[index].1 += tokens;
                },
                || progress.report(Phase::Read, read.load(Ordering::Relaxed), total),
            )?;
            return Ok(counts);
        }
        let reading = match sources {
            [one] => Reading::for_input(pool, one.is_small()),
            _ => Reading::for_pool(pool),
        };
        pipelined(
            reading,
            grouped(chunks, GROUP_BYTES, |(_, chunk)| chunk.text_bytes()),
            in_flight(pool),
            pool,
            |group| group.iter().for_each(|(_, chunk)| chunk.prepare()),
            work,
            |encoded| {
                for (index, ids, s) in encoded {
                    counts[index].0.add(s);
                    counts[index].1 += ids.write_to(writer, index)?;
                }
                progress.report(Phase::Read, read.load(Ordering::Relaxed), total)
            },
        )?;
        Ok(counts)
    }

    /// Encodes documents in parallel on `pool`: per document `encode_ordinary` then `end_id`, in order.
    /// Ids come back in parts (one per run of documents) so the caller can write them without a copy.
    pub fn encode_documents<I: OutputId>(
        &self,
        docs: &[&str],
        end_id: Option<u32>,
        pool: &rayon::ThreadPool,
    ) -> Result<Vec<Vec<I>>> {
        let total = docs.iter().map(|d| d.len()).sum();
        self.expect_text(total as u64, pool);
        let runs = records::runs(docs, run_bytes(total, pool.current_num_threads()));
        pool.install(|| {
            runs.par_iter()
                .map(|run| {
                    let mut ids = Vec::new();
                    self.encode_documents_into(run, end_id, &mut ids)?;
                    Ok(ids)
                })
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::sync::atomic::AtomicUsize;

    const READINGS: [Reading; 3] = [Reading::Beside, Reading::InTurns, Reading::Here];

    /// Items 0..n, each taking a while to process that varies out of step with the index.
    fn run(
        reading: Reading,
        n: usize,
        fail_item: Option<usize>,
        fail_sink: Option<usize>,
    ) -> (Result<()>, Vec<usize>, usize) {
        let pool = crate::threads::pool(Some(3)).unwrap();
        let (read, sunk_count, most_ahead) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
        let items = (0..n).map(|i| {
            let ahead = read.fetch_add(1, Ordering::SeqCst) + 1 - sunk_count.load(Ordering::SeqCst);
            most_ahead.fetch_max(ahead, Ordering::SeqCst);
            if Some(i) == fail_item {
                Err(Error::InvalidArgument(format!("item {i}")))
            } else {
                Ok(i)
            }
        });
        let mut sunk = Vec::new();
        let outcome = pipelined(
            reading,
            items,
            2,
            &pool,
            |_| {},
            |&i| {
                std::thread::sleep(std::time::Duration::from_micros((i * 37 % 11) as u64 * 100));
                Ok(i * 10)
            },
            |x| {
                if Some(sunk.len()) == fail_sink {
                    return Err(Error::Interrupted);
                }
                sunk.push(x);
                sunk_count.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        );
        (outcome, sunk, most_ahead.load(Ordering::SeqCst))
    }

    #[test]
    fn results_come_in_order_and_reading_stays_within_the_window() {
        for reading in READINGS {
            let (outcome, sunk, most_ahead) = run(reading, 60, None, None);
            assert!(outcome.is_ok(), "{reading:?}");
            assert_eq!(sunk, (0..60).map(|i| i * 10).collect::<Vec<_>>(), "{reading:?}");
            let window = match reading {
                Reading::Beside => 4,
                Reading::InTurns => 2,
                Reading::Here => 1, // each item is sunk before the next is read
            };
            assert!(
                most_ahead <= window,
                "{reading:?}: {most_ahead} items read ahead of the sink"
            );
        }
    }

    #[test]
    fn a_reader_of_its_own_prepares_items_while_the_workers_are_busy_and_no_item_twice() {
        // One worker, slow; items that remember which thread prepared them.
        let pool = crate::threads::pool(Some(1)).unwrap();
        let reader_thread = std::sync::Mutex::new(None);
        let items = (0..40).map(|i| Ok((i, std::sync::OnceLock::new())));
        let prepare = |item: &(usize, std::sync::OnceLock<std::thread::ThreadId>)| {
            *reader_thread.lock().unwrap() = Some(std::thread::current().id());
            item.1.set(std::thread::current().id()).expect("prepared once");
        };
        let mut sunk = Vec::new();
        let outcome = pipelined(
            Reading::Beside,
            items,
            2,
            &pool,
            prepare,
            |(i, prepared)| {
                std::thread::sleep(std::time::Duration::from_micros(300));
                // What the reader did not prepare, the worker does (here: notes that it did).
                let by_reader = prepared.get().is_some();
                Ok((*i, by_reader))
            },
            |x| {
                sunk.push(x);
                Ok(())
            },
        );
        assert!(outcome.is_ok());
        assert_eq!(
            sunk.iter().map(|x| x.0).collect::<Vec<_>>(),
            (0..40).collect::<Vec<_>>()
        );
        let prepared = sunk.iter().filter(|x| x.1).count();
        // The worker is the bottleneck: the reader, waiting on it, prepares nearly every item.
        assert!(prepared >= 20, "{prepared} of 40 prepared by the reader");
        assert_ne!(*reader_thread.lock().unwrap(), None);
    }

    #[test]
    fn an_item_error_or_a_sink_error_ends_it_after_the_items_before() {
        for reading in READINGS {
            let (outcome, sunk, _) = run(reading, 60, Some(25), None);
            assert!(
                matches!(outcome, Err(Error::InvalidArgument(m)) if m == "item 25"),
                "{reading:?}"
            );
            assert_eq!(sunk, (0..25).map(|i| i * 10).collect::<Vec<_>>(), "{reading:?}");
            let (outcome, sunk, _) = run(reading, 60, None, Some(7));
            assert!(matches!(outcome, Err(Error::Interrupted)), "{reading:?}");
            assert_eq!(sunk.len(), 7, "{reading:?}");
        }
    }

    /// Streams of `lengths[s]` items (s, i), each read and processed in times that vary; `fail` makes
    /// item i of stream s an error (i == usize::MAX: the stream does not open), `fail_sink` the sink's
    /// n-th call. Returns the outcome, what the sink got (Some((s, i)) an item, None ends s), the most
    /// turns taken and not yet sunk at once, and the most streams read at the same time.
    #[allow(clippy::type_complexity)]
    fn run_streams(
        lengths: &[usize],
        fail: &[(usize, usize)],
        fail_sink: Option<usize>,
    ) -> (Result<()>, Vec<(usize, Option<usize>)>, usize, usize) {
        let pool = crate::threads::pool(Some(3)).unwrap();
        let (taken, sunk_count, most_ahead) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
        let (reading, most_reading) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let busy: Vec<std::sync::atomic::AtomicBool> = lengths.iter().map(|_| Default::default()).collect();
        // The first stream the sink has not seen end: no stream is opened STREAMS_AHEAD_PER_THREAD × 3
        // or more past it.
        let (ended, head) = (std::sync::Mutex::new(vec![false; lengths.len()]), AtomicUsize::new(0));
        let open = |s: usize| {
            let head = head.load(Ordering::SeqCst);
            assert!(
                s < head + STREAMS_AHEAD_PER_THREAD * 3,
                "stream {s} opened while {head} had not ended"
            );
            if fail.contains(&(s, usize::MAX)) {
                return Err(Error::InvalidArgument(format!("stream {s} does not open")));
            }
            let (taken, sunk_count, most_ahead, reading, most_reading, busy) =
                (&taken, &sunk_count, &most_ahead, &reading, &most_reading, &busy);
            Ok((0..=lengths[s]).map_while(move |i| {
                assert!(
                    !busy[s].swap(true, Ordering::SeqCst),
                    "stream {s} read by two threads at once"
                );
                let now = reading.fetch_add(1, Ordering::SeqCst) + 1;
                most_reading.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_micros(
                    ((s * 7 + i * 13) % 5) as u64 * 200 + 200,
                ));
                reading.fetch_sub(1, Ordering::SeqCst);
                busy[s].store(false, Ordering::SeqCst);
                let ahead = taken.fetch_add(1, Ordering::SeqCst) + 1 - sunk_count.load(Ordering::SeqCst);
                most_ahead.fetch_max(ahead, Ordering::SeqCst);
                if i == lengths[s] {
                    return None;
                }
                Some(if fail.contains(&(s, i)) {
                    Err(Error::InvalidArgument(format!("stream {s} item {i}")))
                } else {
                    Ok((s, i))
                })
            }))
        };
        let mut sunk = Vec::new();
        let outcome = pipelined_streams(
            lengths.len(),
            open,
            2,
            &pool,
            |&(s, i)| {
                std::thread::sleep(std::time::Duration::from_micros((i * 37 % 11) as u64 * 50));
                Ok((s, i))
            },
            |s, item| {
                if Some(sunk.len()) == fail_sink {
                    return Err(Error::Interrupted);
                }
                if item.is_none() {
                    let mut ended = ended.lock().unwrap();
                    ended[s] = true;
                    head.store(ended.iter().position(|e| !e).unwrap_or(ended.len()), Ordering::SeqCst);
                }
                sunk.push((s, item.map(|(_, i)| i)));
                sunk_count.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
        );
        let (ahead, most_reading) = (most_ahead.load(Ordering::SeqCst), most_reading.load(Ordering::SeqCst));
        (outcome, sunk, ahead, most_reading)
    }

    /// What the sink must get of stream `s`, of `n` items: all in order, then its end.
    fn stream_of(sunk: &[(usize, Option<usize>)], s: usize) -> Vec<Option<usize>> {
        sunk.iter().filter(|x| x.0 == s).map(|x| x.1).collect()
    }

    fn whole(n: usize) -> Vec<Option<usize>> {
        (0..n).map(Some).chain([None]).collect()
    }

    #[test]
    fn streams_read_side_by_side_each_in_order_one_reader_at_a_time_within_the_window() {
        let lengths = [9, 0, 14, 3, 11, 1, 7, 12];
        let (outcome, sunk, most_ahead, most_reading) = run_streams(&lengths, &[], None);
        assert!(outcome.is_ok());
        for (s, &n) in lengths.iter().enumerate() {
            assert_eq!(stream_of(&sunk, s), whole(n), "stream {s}");
        }
        // Turns taken (an item read, or the end found) ahead of the sink: at most twice `in_flight`.
        assert!(most_ahead <= 4, "{most_ahead} turns ahead of the sink");
        // Three threads, reads slower than the work: several streams were read at the same time.
        assert!(most_reading >= 2, "at most {most_reading} stream read at a time");
    }

    #[test]
    fn a_long_first_stream_is_not_left_behind_by_every_later_one() {
        let lengths: Vec<usize> = [60].into_iter().chain([1; 40]).collect();
        let (outcome, sunk, _, _) = run_streams(&lengths, &[], None);
        assert!(outcome.is_ok());
        for (s, &n) in lengths.iter().enumerate() {
            assert_eq!(stream_of(&sunk, s), whole(n), "stream {s}");
        }
    }

    #[test]
    fn the_first_streams_error_is_given_after_the_streams_before_it_end() {
        // Errors in streams 5 and 2 (and one that does not open, 6): stream 2's is given, whichever
        // came first, with every item of streams 0 and 1 sunk; nothing of stream 2 after its error.
        let lengths = [6, 8, 9, 4, 7, 10, 5];
        for _ in 0..5 {
            let (outcome, sunk, _, _) = run_streams(&lengths, &[(5, 0), (2, 6), (6, usize::MAX)], None);
            assert!(
                matches!(&outcome, Err(Error::InvalidArgument(m)) if m == "stream 2 item 6"),
                "{outcome:?}"
            );
            assert_eq!(stream_of(&sunk, 0), whole(6));
            assert_eq!(stream_of(&sunk, 1), whole(8));
            assert_eq!(stream_of(&sunk, 2), (0..6).map(Some).collect::<Vec<_>>());
        }
        let (outcome, _, _, _) = run_streams(&lengths, &[(3, usize::MAX)], None);
        assert!(matches!(&outcome, Err(Error::InvalidArgument(m)) if m == "stream 3 does not open"));
        let (outcome, sunk, _, _) = run_streams(&lengths, &[], Some(10));
        assert!(matches!(outcome, Err(Error::Interrupted)));
        assert_eq!(sunk.len(), 10);
        let (outcome, sunk, _, _) = run_streams(&[], &[], None);
        assert!(outcome.is_ok() && sunk.is_empty());
    }

    /// Runs `f` on a thread of its own; whether it panicked, or None if it did not end within 30 s.
    fn panicked_in_time(f: impl FnOnce() + Send + 'static) -> Option<bool> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = tx.send(outcome.is_err());
        });
        rx.recv_timeout(std::time::Duration::from_secs(30)).ok()
    }

    #[test]
    fn a_panic_in_the_work_reaches_the_caller_and_stops_the_other_threads() {
        for reading in READINGS {
            let outcome = panicked_in_time(move || {
                let pool = crate::threads::pool(Some(2)).unwrap();
                let items = (0..200).map(Ok);
                let work = |&i: &usize| {
                    assert!(i != 25, "a bug at item 25");
                    std::thread::sleep(std::time::Duration::from_micros(200));
                    Ok(i)
                };
                let _ = pipelined(reading, items, 2, &pool, |_| {}, work, |_| Ok(()));
            });
            assert_eq!(outcome, Some(true), "{reading:?}");
        }
        let outcome = panicked_in_time(|| {
            let pool = crate::threads::pool(Some(3)).unwrap();
            let open = |s: usize| Ok((0..40).map(move |i| Ok((s, i))));
            let work = |&(s, i): &(usize, usize)| {
                assert!((s, i) != (2, 5), "a bug at stream 2, item 5");
                std::thread::sleep(std::time::Duration::from_micros(200));
                Ok(i)
            };
            let _ = pipelined_streams(6, open, 2, &pool, work, |_, _| Ok(()));
        });
        assert_eq!(outcome, Some(true));
    }

    #[test]
    fn nothing_to_read_is_no_error() {
        for reading in READINGS {
            let (outcome, sunk, _) = run(reading, 0, None, None);
            assert!(outcome.is_ok() && sunk.is_empty(), "{reading:?}");
        }
    }
}
