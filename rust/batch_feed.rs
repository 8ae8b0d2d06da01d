//! A batch of texts encoded while the caller is still handing them over (`Encoder::encode_batch_fed`).
//!
//! Python's strings reach the core one by one, each made UTF-8 on the calling thread with the interpreter
//! held (a str that is not ASCII has no UTF-8 form until asked for one: 20 MB of English books in 4 KB
//! documents take about 14 ms). Made all before the encoding began, that was a serial step before the
//! parallel one, with every other core idle; here the threads encode runs of texts as soon as each run
//! has been handed over, so the two overlap. The ids come back run by run, in order, on the calling
//! thread: Python lists of them (the other serial step, longer than a warm batch's encoding on two
//! threads) are made for each run as soon as it is encoded, while the threads encode the runs after.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, PoisonError};

use crate::encode::{run_bytes, Encoder, OutputId, RunIds};
use crate::error::Result;

/// A text of a fed batch, as the caller holds it.
pub trait FedText: Send + Sync {
    /// Its length in bytes, as cheap to tell as can be (it sizes the runs).
    fn byte_len(&self) -> usize;

    /// The text, checked where it has to be (UTF-8 bytes), on a worker thread; `index` is its place in
    /// the batch, for an error to name.
    fn text(&self, index: usize) -> Result<&str>;
}

impl FedText for String {
    fn byte_len(&self) -> usize {
        self.len()
    }

    fn text(&self, _: usize) -> Result<&str> {
        Ok(self)
    }
}

/// A run of consecutive texts: the index of its first in the batch, and the texts.
struct Run<T> {
    first: usize,
    texts: Vec<T>,
}

/// What the feeding thread and the workers share.
struct Shared<T, I> {
    /// Runs handed over and not yet taken by a worker, by run index.
    waiting: BTreeMap<usize, Run<T>>,
    /// Runs encoded (or failed), by run index, each with its texts (handed back to the caller).
    encoded: BTreeMap<usize, (Vec<T>, Result<RunIds<I>>)>,
    /// Every run has been handed over (or the feeding has stopped).
    fed_all: bool,
    /// Runs from this index on are not encoded: the first run that failed (the runs before it still are,
    /// so that the error of the batch's first failing text is the one returned), 0 when the feeding was
    /// given up or a thread panicked.
    stop_at: usize,
    /// Runs taken by a worker and not yet encoded.
    in_flight: usize,
    /// The run the calling thread waits for (`usize::MAX`: every run handed over to be encoded).
    wanted: usize,
}

impl<T, I> Shared<T, I> {
    /// Whether the calling thread, waiting, should be woken: the run it waits for is encoded, or every
    /// run is, or the work has stopped (it then looks again at what it waits for).
    fn caller_may_go_on(&self) -> bool {
        self.encoded.contains_key(&self.wanted)
            || (self.fed_all && self.waiting.is_empty() && self.in_flight == 0)
            || self.stop_at != usize::MAX
    }
}

impl Encoder {
    /// Encodes a batch of texts that `feed` hands over one by one, on the calling thread (it gets a
    /// function to call with each text, and returns false if it gave up before the last: then nothing more
    /// is encoded or sunk, and Ok comes back, the caller having an error of its own). `expected_bytes`
    /// tells about how many bytes the texts are, before they come: it sizes the runs and the threads'
    /// caches, and is asked only where there are threads to share the runs (one thread takes every text
    /// first, and needs no guess). Each run's texts
    /// and ids go to `sink`, in order, on the calling thread: with `eager`, as soon as the run and every
    /// run before it are encoded (while texts are still being handed over, too), so that a caller making
    /// Python lists of the ids makes them while the threads encode the runs after; without, once all
    /// are (the calling thread sleeps meanwhile: woken for each run, it took the cores from the encoders
    /// some 80 times a call). The ids equal `encode_batch`'s. The first error in the texts' order (a
    /// text's own, or the sink's) is returned.
    ///
    /// Each thread of `pool` takes the runs of its own share of the expected runs (thread t of T the t-th
    /// of T equal parts, as `threads::map_sticky` gives them, so that a batch encoded again finds its
    /// pieces in the same thread's cache) as they come, and once every run has been handed over, helps
    /// with the others' from their far end.
    pub fn encode_batch_fed<T: FedText, I: OutputId>(
        &self,
        pool: &rayon::ThreadPool,
        expected_bytes: impl FnOnce() -> usize,
        feed: impl FnOnce(&mut dyn FnMut(T)) -> bool,
        eager: bool,
        mut sink: impl FnMut(Vec<T>, RunIds<I>) -> Result<()>,
    ) -> Result<()> {
        let threads = pool.current_num_threads();
        if threads == 1 {
            // Nothing to overlap: the one thread would take turns with this one, handing over each run (on
            // one pinned core, 4% slower than taking all the texts first).
            let mut texts = Vec::new();
            if !feed(&mut |text| texts.push(text)) {
                return Ok(());
            }
            let run = pool.install(|| self.encode_fed_run(&texts, 0))?;
            return sink(texts, run);
        }
        let expected_bytes = expected_bytes();
        self.expect_text(expected_bytes as u64, pool);
        let target = run_bytes(expected_bytes, threads);
        let expected_runs = expected_bytes.div_ceil(target).max(1);
        // Thread t's share of the run indices (the last thread's reaches past the expected runs).
        let share_start = |t: usize| (t * expected_runs).div_ceil(threads);
        let share = |t: usize| {
            share_start(t)..if t + 1 == threads {
                usize::MAX
            } else {
                share_start(t + 1)
            }
        };
        let shared = Mutex::new(Shared {
            waiting: BTreeMap::new(),
            encoded: BTreeMap::new(),
            fed_all: false,
            stop_at: usize::MAX,
            in_flight: 0,
            wanted: usize::MAX,
        });
        // Workers wait on `ready` for runs; the calling thread waits on `done` for encoded ones.
        let (ready, done) = (Condvar::new(), Condvar::new());
        let lock = || shared.lock().unwrap_or_else(PoisonError::into_inner);
        let stop = |at: usize| {
            let mut state = lock();
            state.stop_at = state.stop_at.min(at);
            ready.notify_all();
            done.notify_all();
        };
        let worker = |me: usize| {
            // A panic here (a bug) stops the others, and the calling thread, instead of leaving them to wait.
            let _stop = crate::threads::StopOnPanic(|| stop(0));
            loop {
                let (index, run) = {
                    let mut state = lock();
                    loop {
                        let (mine, before_stop) = (share(me), ..state.stop_at);
                        let own = mine.start.min(state.stop_at)..mine.end.min(state.stop_at);
                        let own = state.waiting.range(own).next().map(|(&i, _)| i);
                        // Another's runs only once all are handed over, from the far end, as
                        // `threads::map_sticky` helps: taken from the frontier while the texts came, they
                        // put pieces in the wrong thread's cache for the next call on the batch (Chinese,
                        // second call, in `benches/peers.py`: 338 MB/s, where the tenth session read 523).
                        let other = || match state.fed_all {
                            true => state.waiting.range(before_stop).next_back().map(|(&i, _)| i),
                            false => None,
                        };
                        if let Some(i) = own.or_else(other) {
                            state.in_flight += 1;
                            break (i, state.waiting.remove(&i).expect("a waiting run"));
                        }
                        if state.fed_all || state.stop_at != usize::MAX {
                            return;
                        }
                        state = ready.wait(state).unwrap_or_else(PoisonError::into_inner);
                    }
                };
                let result = self.encode_fed_run(&run.texts, run.first);
                let mut state = lock();
                if result.is_err() {
                    state.stop_at = state.stop_at.min(index);
                    ready.notify_all();
                }
                state.encoded.insert(index, (run.texts, result));
                state.in_flight -= 1;
                if state.caller_may_go_on() {
                    done.notify_one();
                }
            }
        };
        // The calling thread's side: runs handed over, runs sunk, and the first error.
        let (mut handed, mut sunk, mut failed) = (0usize, 0usize, None);
        // Sinks the runs encoded next in order; with `wait`, until every run handed over is sunk. Stops at
        // an error (or where the runs stop being encoded: given up, or a thread panicked).
        let mut drain = |handed: usize, wait: bool, failed: &mut Option<crate::Error>| {
            while failed.is_none() && sunk < handed {
                let next = {
                    let mut state = lock();
                    loop {
                        if let Some(done) = state.encoded.remove(&sunk) {
                            break Some(done);
                        }
                        if !wait || sunk >= state.stop_at {
                            break None;
                        }
                        // Run `sunk` is waiting or being encoded: sleep until it is (eager) or all are.
                        state.wanted = if eager { sunk } else { usize::MAX };
                        state = done.wait(state).unwrap_or_else(PoisonError::into_inner);
                    }
                };
                let Some((texts, result)) = next else { return };
                sunk += 1;
                if let Err(e) = result.and_then(|run| sink(texts, run)) {
                    *failed = Some(e);
                    stop(0);
                }
            }
        };
        pool.in_place_scope(|scope| {
            scope.spawn_broadcast(|_, ctx| worker(ctx.index()));
            let (mut run, mut run_bytes, mut texts_fed) = (Vec::new(), 0, 0);
            let mut hand_over = |run: Vec<T>, first: usize, failed: &mut Option<crate::Error>| {
                let mut state = lock();
                // After a failure, runs are only counted (their texts dropped), never encoded.
                if handed < state.stop_at {
                    state.waiting.insert(handed, Run { first, texts: run });
                    ready.notify_all();
                }
                drop(state);
                handed += 1;
                if eager {
                    drain(handed, false, failed);
                }
            };
            let completed = feed(&mut |text: T| {
                run_bytes += text.byte_len();
                run.push(text);
                texts_fed += 1;
                if run_bytes >= target {
                    run_bytes = 0;
                    let first = texts_fed - run.len();
                    hand_over(std::mem::take(&mut run), first, &mut failed);
                }
            });
            if !completed {
                stop(0);
                lock().fed_all = true;
                return;
            }
            if !run.is_empty() {
                let first = texts_fed - run.len();
                hand_over(run, first, &mut failed);
            }
            {
                let mut state = lock();
                state.fed_all = true;
                ready.notify_all();
            }
            drain(handed, true, &mut failed);
        });
        failed.map_or(Ok(()), Err)
    }

    /// The ids of `texts`, the batch's texts from index `first` on, in one sink (`Encoder::encode_run`).
    fn encode_fed_run<T: FedText, I: OutputId>(&self, texts: &[T], first: usize) -> Result<RunIds<I>> {
        let bytes = texts.iter().map(T::byte_len).sum();
        self.encode_run(texts.len(), bytes, |i| texts[i].text(first + i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::BatchIds;
    use crate::error::Error;

    fn encoder() -> Encoder {
        let vocab: Vec<Vec<u8>> = (0..=255u8)
            .map(|b| vec![b])
            .chain([b"th".to_vec(), b"the".to_vec()])
            .collect();
        let merges = [(b"t".to_vec(), b"h".to_vec()), (b"th".to_vec(), b"e".to_vec())];
        Encoder::new(vocab, &merges, &["<|endoftext|>".to_string()], None).unwrap()
    }

    /// The batch of `texts` fed one by one (`expected` bytes foretold), and the texts as the sink got them.
    fn fed<T: FedText + Clone>(
        enc: &Encoder,
        pool: &rayon::ThreadPool,
        texts: &[T],
        expected: usize,
        eager: bool,
    ) -> Result<(BatchIds<u32>, Vec<T>)> {
        let (mut runs, mut back) = (Vec::new(), Vec::new());
        let total = texts.len();
        enc.encode_batch_fed::<T, u32>(
            pool,
            || expected,
            |push| {
                texts.iter().for_each(|t| push(t.clone()));
                true
            },
            eager,
            |run_texts, run| {
                back.extend(run_texts);
                runs.push(run);
                Ok(())
            },
        )?;
        Ok((BatchIds::of_runs(runs, total), back))
    }

    /// A text whose check fails where it is marked bad.
    #[derive(Clone)]
    struct Checked(String, bool);

    impl FedText for Checked {
        fn byte_len(&self) -> usize {
            self.0.len()
        }

        fn text(&self, index: usize) -> Result<&str> {
            match self.1 {
                true => Err(Error::InvalidArgument(format!("text {index} is bad"))),
                false => Ok(&self.0),
            }
        }
    }

    #[test]
    fn fed_batches_equal_the_batch_at_every_size_and_thread_count() {
        let enc = encoder();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for n in [0, 1, 2, 7, 300, 3000] {
                let texts: Vec<String> = (0..n)
                    .map(|i| format!("the {i} other<|endoftext|>{}", "x".repeat(i % 50)))
                    .collect();
                let want = enc.encode_batch::<_, u32>(&texts, &pool).unwrap();
                // Expected sizes far below, at and far above the truth (a guess from a sample of the texts, see
                // py.rs): the runs and shares differ, the ids do not.
                let bytes: usize = texts.iter().map(String::len).sum();
                for (expected, eager) in [
                    (0, true),
                    (bytes / 3, false),
                    (bytes, true),
                    (5 * bytes, false),
                    (100 * bytes, true),
                ] {
                    let (got, back) = fed(&enc, &pool, &texts, expected, eager).unwrap();
                    assert_eq!(back, texts);
                    assert_eq!(
                        got.texts().collect::<Vec<_>>(),
                        want.texts().collect::<Vec<_>>(),
                        "{threads} {n}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_first_failing_text_or_sink_is_the_error_and_a_given_up_feed_returns() {
        let enc = encoder();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for bad in [vec![0], vec![5], vec![2999], vec![5, 2999], vec![2000, 2001, 2999]] {
            let texts: Vec<Checked> = (0..3000)
                .map(|i| Checked(format!("text number {i} "), bad.contains(&i)))
                .collect();
            let result = fed(&enc, &pool, &texts, 3000 * 20, bad[0] % 2 == 0);
            assert!(matches!(result, Err(Error::InvalidArgument(m)) if m == format!("text {} is bad", bad[0])));
        }
        // The sink's own error ends the call after the runs before it, and before a text's later error.
        let texts: Vec<Checked> = (0..3000)
            .map(|i| Checked(format!("text number {i} "), i == 2900))
            .collect();
        let mut sunk = 0;
        let result = enc.encode_batch_fed::<Checked, u16>(
            &pool,
            || 3000 * 20,
            |push| {
                texts.iter().for_each(|t| push(t.clone()));
                true
            },
            true,
            |_, _| {
                sunk += 1;
                match sunk {
                    2 => Err(Error::InvalidArgument("sink".into())),
                    _ => Ok(()),
                }
            },
        );
        assert!(matches!(result, Err(Error::InvalidArgument(m)) if m == "sink"));
        assert_eq!(sunk, 2);
        // A feed that stops halfway (its caller has an error of its own to raise) ends the call too.
        let result = enc.encode_batch_fed::<String, u16>(
            &pool,
            || 1000,
            |push| {
                for i in 0..100 {
                    push(format!("t{i} "));
                }
                false
            },
            false,
            |_, _| Ok(()),
        );
        assert!(result.is_ok());
    }
}
