//! Byte-level BPE training with CS336 semantics.
//!
//! Phase 1 counts pre-tokens in parallel over safely cut chunks (memory grows with the number of
//! distinct pre-tokens, not with the input). Phase 2 merges: pair counts are updated incrementally
//! from the words that hold the merged pair, and a max-heap with lazy re-validation orders pairs by
//! (count, left bytes, right bytes), greatest first.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::cuts::Cutter;
use crate::error::{Error, Result};
use crate::keys::{pair_key, split_key};
use crate::pretokenize::Pretokenizer;
use crate::progress::{Phase, Progress};
use crate::records::{self, AnyChunk, RecordChunk, RecordInput, RecordSource, RecordSpec, RecordStats};
use crate::specials::{Segment, SpecialMatcher};
use crate::stream::{small_file_groups, Chunk, ChunkReader, TextSource, DEFAULT_CHUNK_BYTES};

/// Distinct pre-tokens (as bytes) and how often each occurs.
pub type PretokenCounts = FxHashMap<Box<[u8]>, u64>;

/// Adds the pre-tokens of `text` (special tokens removed, never counted) to `counts`.
pub fn count_text(
    text: &str,
    specials: &SpecialMatcher,
    pretokenizer: &Pretokenizer,
    counts: &mut PretokenCounts,
) -> Result<()> {
    specials.for_each_segment(text, |segment| {
        if let Segment::Text(t) = segment {
            pretokenizer.for_each_piece(t, |piece| {
                let key = piece.as_bytes();
                match counts.get_mut(key) {
                    Some(c) => *c += 1,
                    None => {
                        counts.insert(key.into(), 1);
                    }
                }
            })?;
        }
        Ok(())
    })
}

/// Adds two tables counted in this process (no sum can overflow: each count is at most the bytes read).
fn merge_counts(mut a: PretokenCounts, mut b: PretokenCounts) -> PretokenCounts {
    if a.len() < b.len() {
        std::mem::swap(&mut a, &mut b);
    }
    for (k, v) in b {
        *a.entry(k).or_insert(0) += v;
    }
    a
}

/// Counts the pre-tokens of text files (plain, gzip or zstd), in parallel on `pool`; returns the counts
/// and the bytes of text read (decompressed). Each file is its own stream: no pre-token spans two files.
/// Progress reports bytes read from disk. Invalid UTF-8 is an error naming its byte offset, or with `lossy`
/// becomes U+FFFD.
pub fn count_files(
    sources: &[TextSource],
    specials: &SpecialMatcher,
    pretokenizer: &Pretokenizer,
    pool: &rayon::ThreadPool,
    progress: &dyn Progress,
    lossy: bool,
) -> Result<(PretokenCounts, u64)> {
    count_files_in_chunks(
        sources,
        specials,
        pretokenizer,
        pool,
        progress,
        DEFAULT_CHUNK_BYTES,
        lossy,
    )
}

/// `count_files` with a chosen chunk size; the counts do not depend on it.
pub fn count_files_in_chunks(
    sources: &[TextSource],
    specials: &SpecialMatcher,
    pretokenizer: &Pretokenizer,
    pool: &rayon::ThreadPool,
    progress: &dyn Progress,
    chunk_bytes: usize,
    lossy: bool,
) -> Result<(PretokenCounts, u64)> {
    let text_bytes = AtomicU64::new(0);
    let sizes = sources
        .iter()
        .map(TextSource::disk_bytes)
        .collect::<Result<Vec<u64>>>()?;
    let total = sizes.iter().sum();
    let read = Arc::new(AtomicU64::new(0));
    let cutter = Cutter::new(specials.clone(), pretokenizer);
    let open = |index: usize| -> Result<_> {
        let s = &sources[index];
        let chunks = ChunkReader::new(s.open(read.clone())?, Some(s.path.clone()), &cutter, chunk_bytes);
        Ok((chunks.starting_at(s.start()).lossy(lossy), ()))
    };
    let count_chunk = |_: usize, _: &(), mut counts: PretokenCounts, chunk: Result<Chunk>| {
        let chunk = chunk?;
        text_bytes.fetch_add(chunk.text.len() as u64, Ordering::Relaxed);
        count_text(&chunk.text, specials, pretokenizer, &mut counts)?;
        progress.report(Phase::Read, read.load(Ordering::Relaxed), total)?;
        Ok(counts)
    };
    let counts = count_inputs(&sizes, pool, open, count_chunk)?;
    Ok((counts, text_bytes.into_inner()))
}

/// Counts inputs (of `sizes` bytes on disk) on `pool`: input `i`'s chunks, from `open(i)` with what
/// `count` needs to know of it, each added by `count(i, known, counts, chunk)`. Inputs are read in
/// parallel, each by its own serial reader (a gzip stream can only be inflated in order) whose chunks are
/// counted in parallel: with many files, reading and inflating are not one thread's work. Small inputs
/// go in runs (`small_file_groups`), a run read and counted on one thread, where a hand-off an input had
/// cost more than the counting (5,000 text files of a review each, 2 threads: medians about 100 → 61 ms,
/// against 20–35 ms as one file; 5,000 JSON-lines files: 121.6 → 101.2 ms). An input is opened when a
/// thread takes it up (thousands of files open at once would run out of file descriptors).
fn count_inputs<It, Known>(
    sizes: &[u64],
    pool: &rayon::ThreadPool,
    open: impl Fn(usize) -> Result<(It, Known)> + Sync,
    count: impl Fn(usize, &Known, PretokenCounts, It::Item) -> Result<PretokenCounts> + Sync,
) -> Result<PretokenCounts>
where
    It: Iterator + Send,
    It::Item: Send,
    Known: Sync,
{
    let groups = small_file_groups(sizes).collect::<Result<Vec<_>>>()?;
    pool.install(|| {
        groups
            .par_iter()
            .map(|inputs| {
                if inputs.len() == 1 {
                    let (chunks, known) = open(inputs.start)?;
                    return chunks
                        .par_bridge()
                        .try_fold(PretokenCounts::default, |counts, chunk| {
                            count(inputs.start, &known, counts, chunk)
                        })
                        .try_reduce(PretokenCounts::default, |a, b| Ok(merge_counts(a, b)));
                }
                inputs.clone().try_fold(PretokenCounts::default(), |counts, index| {
                    let (mut chunks, known) = open(index)?;
                    chunks.try_fold(counts, |counts, chunk| count(index, &known, counts, chunk))
                })
            })
            .try_reduce(PretokenCounts::default, |a, b| Ok(merge_counts(a, b)))
    })
}

/// Adds the pre-tokens of one document of a record corpus: all of it is text (special-token strings too).
fn count_document(text: &str, pretokenizer: &Pretokenizer, counts: &mut PretokenCounts) -> Result<()> {
    pretokenizer.for_each_piece(text, |piece| {
        let key = piece.as_bytes();
        match counts.get_mut(key) {
            Some(c) => *c += 1,
            None => {
                counts.insert(key.into(), 1);
            }
        }
    })
}

/// Counts the pre-tokens of documents in parallel on `pool`; no pre-token crosses two documents.
pub fn count_documents(docs: &[&str], pretokenizer: &Pretokenizer, pool: &rayon::ThreadPool) -> Result<PretokenCounts> {
    let total = docs.iter().map(|d| d.len()).sum();
    let runs = records::runs(docs, crate::encode::run_bytes(total, pool.current_num_threads()));
    pool.install(|| {
        runs.par_iter()
            .try_fold(PretokenCounts::default, |mut counts, run| {
                for d in run.iter() {
                    count_document(d, pretokenizer, &mut counts)?;
                }
                Ok(counts)
            })
            .try_reduce(PretokenCounts::default, |a, b| Ok(merge_counts(a, b)))
    })
}

/// Counts the pre-tokens of the records of `sources` (JSON-lines files, parquet files' row groups), one
/// document per record (the field or column `field`), in parallel on `pool`; returns the counts and each
/// source's stats. As for text files (`count_files_in_chunks`), inputs are read in parallel, each by its
/// own reader (gzip and zstd inflate in order) whose chunks are counted in parallel, and an input is
/// opened when a thread takes it up.
pub fn count_records(
    sources: &[RecordSource],
    field: &str,
    pretokenizer: &Pretokenizer,
    pool: &rayon::ThreadPool,
    lossy: bool,
    progress: &dyn Progress,
) -> Result<(PretokenCounts, Vec<RecordStats>)> {
    let sizes = sources
        .iter()
        .map(RecordSource::disk_bytes)
        .collect::<Result<Vec<u64>>>()?;
    let total = sizes.iter().sum();
    let read = Arc::new(AtomicU64::new(0));
    let stats = std::sync::Mutex::new(vec![RecordStats::default(); sources.len()]);
    let open = |index: usize| -> Result<(records::AnyChunks, RecordSpec)> {
        let RecordInput { chunks, spec, .. } = sources[index].open(field, lossy, read.clone())?;
        Ok((chunks, spec))
    };
    let count_chunk = |index: usize, spec: &RecordSpec, mut counts: PretokenCounts, chunk: Result<AnyChunk>| {
        let chunk = chunk?;
        let docs = chunk.documents(spec)?;
        for t in &docs.texts {
            count_document(t, pretokenizer, &mut counts)?;
        }
        let texts: Vec<&str> = docs.texts.iter().map(|t| t.as_ref()).collect();
        let counted = RecordStats::of(&texts, docs.skipped);
        stats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[index].add(counted);
        progress.report(Phase::Read, read.load(Ordering::Relaxed), total)?;
        Ok(counts)
    };
    let counts = count_inputs(&sizes, pool, open, count_chunk)?;
    Ok((
        counts,
        stats.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner),
    ))
}

/// Adds `more` into `total` (counts made in this process: no sum can overflow, each count being at most
/// the bytes read).
pub fn add_counts(total: &mut PretokenCounts, more: PretokenCounts) {
    let merged = merge_counts(std::mem::take(total), more);
    *total = merged;
}

/// A trained tokenizer: `vocab[id]` is the token's bytes, `merges[i]` the ids merged at step i.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bpe {
    pub vocab: Vec<Vec<u8>>,
    pub merges: Vec<(u32, u32)>,
}

/// Candidate pairs, most frequent first, ties to the lexicographically greater (left bytes, right bytes),
/// then to the greater key (equal bytes under different ids: possible, rare; decided so runs repeat). Each
/// entry is (count, pair key), valid while `count` equals the pair's current count. A binary max-heap of
/// 16-byte entries whose comparison reads the tokens' bytes only where counts tie: a `BinaryHeap` of
/// entries carrying both tokens' bytes (48 bytes each) missed the cache at every level it sifted through.
/// Measured (`train_bpe`, 2 threads, 5 rounds, medians): 7.5 MB of German and Chinese → 10K 0.436 → 0.392 s,
/// 20 MB of Russian 0.155 → 0.144 s, of English 0.245 → 0.220 s, the merges identical; peak RSS imdb → 32K
/// 79 → 77 MB, German and Chinese 104 → 97 MB.
struct PairHeap {
    entries: Vec<(u64, u64)>,
}

impl PairHeap {
    /// A heap of `entries`, in any order.
    fn new(entries: Vec<(u64, u64)>, vocab: &[Vec<u8>]) -> Self {
        let mut heap = PairHeap { entries };
        for i in (0..heap.entries.len() / 2).rev() {
            heap.sift_down(i, vocab);
        }
        heap
    }

    /// Whether entry `x` comes out before entry `y`.
    fn before(x: (u64, u64), y: (u64, u64), vocab: &[Vec<u8>]) -> bool {
        let ordering = x.0.cmp(&y.0).then_with(|| {
            let ((xa, xb), (ya, yb)) = (split_key(x.1), split_key(y.1));
            vocab[xa as usize]
                .cmp(&vocab[ya as usize])
                .then_with(|| vocab[xb as usize].cmp(&vocab[yb as usize]))
                .then_with(|| x.1.cmp(&y.1))
        });
        ordering == CmpOrdering::Greater
    }

    fn push(&mut self, entry: (u64, u64), vocab: &[Vec<u8>]) {
        self.entries.push(entry);
        let mut i = self.entries.len() - 1;
        while i > 0 {
            let parent = (i - 1) / 2;
            if !Self::before(self.entries[i], self.entries[parent], vocab) {
                break;
            }
            self.entries.swap(i, parent);
            i = parent;
        }
    }

    fn pop(&mut self, vocab: &[Vec<u8>]) -> Option<(u64, u64)> {
        if self.entries.is_empty() {
            return None;
        }
        let top = self.entries.swap_remove(0);
        self.sift_down(0, vocab);
        Some(top)
    }

    fn sift_down(&mut self, mut i: usize, vocab: &[Vec<u8>]) {
        let n = self.entries.len();
        loop {
            let left = 2 * i + 1;
            if left >= n {
                break;
            }
            let right = left + 1;
            let child = if right < n && Self::before(self.entries[right], self.entries[left], vocab) {
                right
            } else {
                left
            };
            if !Self::before(self.entries[child], self.entries[i], vocab) {
                break;
            }
            self.entries.swap(i, child);
            i = child;
        }
    }
}

/// The one definition of the smallest vocabulary: the special tokens and the 256 bytes.
pub fn check_vocab_size(vocab_size: usize, num_special_tokens: usize) -> Result<()> {
    let base = num_special_tokens + 256;
    if vocab_size < base {
        return Err(Error::InvalidArgument(format!(
            "vocabulary size {vocab_size} is smaller than 256 bytes + {num_special_tokens} special tokens = {base}"
        )));
    }
    Ok(())
}

/// The words that held a pair when it was added (`train_from_counts`' `pair_words`): up to two inline, so the
/// many pairs that only one or two words hold (most of those a merge makes in text of long words, such as
/// Chinese) cost no allocation each. Measured (`train_bpe`, 2 threads, 5 rounds, medians): 7.5 MB of German
/// and Chinese → 10K 0.581 → 0.529 s, 20 MB of Russian 0.174 → 0.167 s, of English 0.293 → 0.282 s; peak
/// RSS unchanged (imdb → 32K: 82–83 MB).
#[derive(Default)]
enum Holders {
    #[default]
    Empty,
    Few([u32; 2], u8),
    Many(Vec<u32>),
}

impl Holders {
    fn push(&mut self, word: u32) {
        match self {
            Holders::Empty => *self = Holders::Few([word, 0], 1),
            Holders::Few(words, len @ 1) => {
                words[1] = word;
                *len = 2;
            }
            Holders::Few(words, _) => *self = Holders::Many(vec![words[0], words[1], word]),
            Holders::Many(words) => words.push(word),
        }
    }

    fn words(&self) -> &[u32] {
        match self {
            Holders::Empty => &[],
            Holders::Few(words, len) => &words[..*len as usize],
            Holders::Many(words) => words,
        }
    }
}

/// Trains from pre-token counts. The vocabulary starts with the special tokens (ids 0..k-1), then the
/// 256 bytes; each merge appends one token, until `vocab_size` or no pair is left.
pub fn train_from_counts(
    counts: PretokenCounts,
    vocab_size: usize,
    special_tokens: &[String],
    progress: &dyn Progress,
) -> Result<Bpe> {
    check_vocab_size(vocab_size, special_tokens.len())?;
    let base = special_tokens.len() + 256;
    let mut vocab: Vec<Vec<u8>> = special_tokens.iter().map(|s| s.as_bytes().to_vec()).collect();
    vocab.extend((0..=255u8).map(|b| vec![b]));
    let first_byte_id = special_tokens.len() as u32;

    // Words of one token have no pairs and never change: leave them out. The others' symbols lie end to
    // end in one array (word `w` is `symbols[spans[w].0..][..spans[w].1]`), where a merge rewrites a word
    // in place (words only shrink): no allocation per word, and no pointer to follow to reach one.
    // Measured (`train_bpe`, 2 threads, 5 rounds, medians), against a Vec per word: 7.5 MB of German and
    // Chinese → 10K 0.548 → 0.483 s, 20 MB of Russian 0.176 → 0.168 s, of English 0.287 → 0.262 s; peak
    // RSS imdb → 32K 82 → 80 MB, German and Chinese 110 → 105 MB.
    let mut symbols: Vec<u32> = Vec::new();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut freqs: Vec<u64> = Vec::new();
    // Every pair count, and every change to one, is at most the number of pair occurrences in all (merges
    // only lower it). Counts come from Python or count files and can be anything: if that total fits in an
    // i64, so does all the arithmetic below, which can then use plain `+`, `-` and `as i64`.
    let mut occurrences: u64 = 0;
    for (piece, count) in counts {
        if piece.len() > 1 {
            occurrences = (piece.len() as u64 - 1)
                .checked_mul(count)
                .and_then(|n| occurrences.checked_add(n))
                .filter(|&n| n <= i64::MAX as u64)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "pre-token counts too large: the pairs they hold occur more than {} times in all",
                        i64::MAX
                    ))
                })?;
            spans.push((symbols.len(), piece.len()));
            symbols.extend(piece.iter().map(|&b| first_byte_id + b as u32));
            freqs.push(count);
        }
    }
    if spans.len() > u32::MAX as usize {
        return Err(Error::InvalidArgument(format!(
            "{} distinct pre-tokens of two bytes or more: at most {} are supported",
            spans.len(),
            u32::MAX
        )));
    }

    let mut pair_counts: FxHashMap<u64, u64> = FxHashMap::default();
    // Words that held the pair when it was added (some may no longer hold it; checked on use).
    let mut pair_words: FxHashMap<u64, Holders> = FxHashMap::default();
    let mut seen: Vec<u64> = Vec::new();
    for (w, &(start, len)) in spans.iter().enumerate() {
        let word = &symbols[start..start + len];
        seen.clear();
        for pair in word.windows(2) {
            let key = pair_key(pair[0], pair[1]);
            *pair_counts.entry(key).or_insert(0) += freqs[w];
            seen.push(key);
        }
        seen.sort_unstable();
        seen.dedup();
        for &key in &seen {
            pair_words.entry(key).or_default().push(w as u32);
        }
    }

    let mut heap = PairHeap::new(pair_counts.iter().map(|(&key, &count)| (count, key)).collect(), &vocab);

    let total_merges = (vocab_size - base) as u64;
    let mut merges = Vec::new();
    let mut deltas: FxHashMap<u64, i64> = FxHashMap::default();
    let mut merged = Vec::new();
    // Which symbols of the word being rewritten were merged: one buffer for every word, where one was
    // allocated per word and merge (`train_bpe` → 10K, 2 threads, 5 rounds, medians: 7.5 MB of German and
    // Chinese 0.603 → 0.565 s, 20 MB of Russian 0.183 → 0.173 s, of English 0.301 → 0.293 s).
    let mut touched_old: Vec<bool> = Vec::new();
    while vocab.len() < vocab_size {
        let Some((top_count, top_key)) = heap.pop(&vocab) else {
            break;
        };
        // Entries hold an upper bound of their pair's count: counts only fall after a pair is pushed
        // (a pair that gains occurrences is new, and pushed then). An entry above the current count
        // goes back in with the true count; the first exact entry on top is the best pair.
        match pair_counts.get(&top_key) {
            None => continue,
            Some(&count) if count != top_count => {
                heap.push((count, top_key), &vocab);
                continue;
            }
            Some(_) => {}
        }
        let (a, b) = split_key(top_key);
        let new_id = vocab.len() as u32;
        let mut bytes = vocab[a as usize].clone();
        bytes.extend_from_slice(&vocab[b as usize]);
        vocab.push(bytes);
        merges.push((a, b));
        pair_counts.remove(&top_key);

        deltas.clear();
        for &w in pair_words.remove(&top_key).unwrap_or_default().words() {
            let (start, len) = spans[w as usize];
            let word = &mut symbols[start..start + len];
            if !word.windows(2).any(|p| p[0] == a && p[1] == b) {
                continue;
            }
            let freq = freqs[w as usize] as i64; // ≤ occurrences ≤ i64::MAX (checked above)
            merged.clear();
            touched_old.clear();
            touched_old.resize(word.len(), false);
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == a && word[i + 1] == b {
                    merged.push(new_id);
                    touched_old[i] = true;
                    touched_old[i + 1] = true;
                    i += 2;
                } else {
                    merged.push(word[i]);
                    i += 1;
                }
            }
            // Pairs next to a merged occurrence disappear; pairs next to the new token appear.
            for j in 0..word.len() - 1 {
                if touched_old[j] || touched_old[j + 1] {
                    *deltas.entry(pair_key(word[j], word[j + 1])).or_insert(0) -= freq;
                }
            }
            seen.clear();
            for j in 0..merged.len().saturating_sub(1) {
                if merged[j] == new_id || merged[j + 1] == new_id {
                    let key = pair_key(merged[j], merged[j + 1]);
                    *deltas.entry(key).or_insert(0) += freq;
                    seen.push(key);
                }
            }
            seen.sort_unstable();
            seen.dedup();
            for &key in &seen {
                pair_words.entry(key).or_default().push(w);
            }
            word[..merged.len()].copy_from_slice(&merged);
            spans[w as usize].1 = merged.len();
        }
        for (&key, &delta) in &deltas {
            if delta == 0 || key == top_key {
                continue;
            }
            let count = pair_counts.entry(key).or_insert(0);
            *count = (*count as i64 + delta) as u64; // stays within [0, occurrences] (checked above)
            if *count == 0 {
                pair_counts.remove(&key);
            } else if delta > 0 {
                heap.push((*count, key), &vocab);
            }
        }
        let done = merges.len() as u64;
        if done.is_multiple_of(64) || vocab.len() == vocab_size {
            progress.report(Phase::Merge, done, total_merges)?;
        }
    }
    progress.update(Phase::Merge, total_merges, total_merges);
    Ok(Bpe { vocab, merges })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    #[test]
    fn pair_heap_pops_in_the_order_of_a_sort() {
        // Few counts and tokens, so counts tie often and bytes tie too (ids 2 and 3 are both "ab"); entries
        // in a scrambled order, some given at once and the rest pushed one by one.
        let vocab: Vec<Vec<u8>> = [&b"a"[..], b"b", b"ab", b"ab", b"c"].map(|t| t.to_vec()).to_vec();
        let mut rng = 7u64;
        let entries: Vec<(u64, u64)> = (0..300)
            .map(|_| {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let (a, b) = ((rng >> 33) % 5, (rng >> 41) % 5);
                ((rng >> 49) % 4, pair_key(a as u32, b as u32))
            })
            .collect();
        let mut heap = PairHeap::new(entries[..100].to_vec(), &vocab);
        for &entry in &entries[100..] {
            heap.push(entry, &vocab);
        }
        let got: Vec<(u64, u64)> = std::iter::from_fn(|| heap.pop(&vocab)).collect();
        let mut expected = entries.clone();
        expected.sort_by(|x, y| {
            let ((xa, xb), (ya, yb)) = (split_key(x.1), split_key(y.1));
            (y.0, &vocab[ya as usize], &vocab[yb as usize], y.1).cmp(&(
                x.0,
                &vocab[xa as usize],
                &vocab[xb as usize],
                x.1,
            ))
        });
        assert_eq!(got, expected);
    }

    #[test]
    fn holders_keep_every_word_in_order() {
        let mut holders = Holders::default();
        assert!(holders.words().is_empty());
        for n in 1..=6u32 {
            holders.push(10 * n);
            assert_eq!(holders.words(), (1..=n).map(|k| 10 * k).collect::<Vec<_>>());
        }
    }

    fn counts_of(text: &str, specials: &[String]) -> PretokenCounts {
        let mut counts = PretokenCounts::default();
        count_text(
            text,
            &SpecialMatcher::new(specials).unwrap(),
            &Pretokenizer::Gpt2,
            &mut counts,
        )
        .unwrap();
        counts
    }

    fn merge_strings(bpe: &Bpe) -> Vec<String> {
        bpe.merges
            .iter()
            .map(|&(a, b)| {
                let s = |id: u32| String::from_utf8_lossy(&bpe.vocab[id as usize]).into_owned();
                format!("{} {}", s(a), s(b))
            })
            .collect()
    }

    /// The worked example of CS336 §2.4, pre-tokenized on white space there; here the words are given
    /// as counts directly so the example's numbers carry over.
    #[test]
    fn handout_example() {
        let mut counts = PretokenCounts::default();
        for (w, c) in [("low", 5), ("lower", 2), ("widest", 3), ("newest", 6)] {
            counts.insert(w.as_bytes().into(), c);
        }
        let bpe = train_from_counts(counts, 256 + 1 + 6, &["<|endoftext|>".into()], &NoProgress).unwrap();
        assert_eq!(merge_strings(&bpe), ["s t", "e st", "o w", "l ow", "w est", "n e"]);
        assert_eq!(bpe.vocab[0], b"<|endoftext|>");
        assert_eq!(bpe.vocab[1], [0u8]);
        assert_eq!(bpe.vocab[257], b"st");
    }

    #[test]
    fn ties_go_to_the_greater_pair() {
        // "ab" and "cd" both occur twice: ("c", "d") > ("a", "b").
        let bpe = train_from_counts(counts_of("ab ab cd cd", &[]), 257, &[], &NoProgress).unwrap();
        assert_eq!(merge_strings(&bpe), ["c d"]);
        // Equal left bytes: the greater right byte wins.
        // ("a", "c") > ("a", "b") > (" ", "a"), all once.
        let bpe = train_from_counts(counts_of("ab ac", &[]), 257, &[], &NoProgress).unwrap();
        assert_eq!(merge_strings(&bpe), ["a c"]);
        let bpe = train_from_counts(counts_of("xab xac", &[]), 258, &[], &NoProgress).unwrap();
        assert_eq!(merge_strings(&bpe), ["x a", "xa c"]);
    }

    #[test]
    fn overlapping_pairs_in_one_word() {
        // "aaaa" holds (a, a) three times but only two merge; then (aa, aa).
        let bpe = train_from_counts(counts_of("aaaa", &[]), 258, &[], &NoProgress).unwrap();
        assert_eq!(merge_strings(&bpe), ["a a", "aa aa"]);
        let bpe = train_from_counts(counts_of("aaa", &[]), 258, &[], &NoProgress).unwrap();
        assert_eq!(merge_strings(&bpe), ["a a", "aa a"]);
    }

    #[test]
    fn stops_when_no_pair_is_left() {
        let bpe = train_from_counts(counts_of("ab", &[]), 1000, &[], &NoProgress).unwrap();
        assert_eq!(bpe.vocab.len(), 257);
    }

    #[test]
    fn special_tokens_are_never_merged() {
        let specials = vec!["<|endoftext|>".to_string()];
        let counts = counts_of("hi<|endoftext|>hi<|endoftext|>", &specials);
        assert!(!counts.keys().any(|k| k.windows(2).any(|w| w == b"<|")));
        let bpe = train_from_counts(counts, 300, &specials, &NoProgress).unwrap();
        assert_eq!(merge_strings(&bpe), ["h i"]);
    }

    #[test]
    fn counts_beyond_32_bits() {
        let mut counts = PretokenCounts::default();
        // Wrapped to 32 bits, ("a", "b") would count 5_032_704 and lose to ("c", "d").
        counts.insert(b"ab".as_slice().into(), 4_300_000_000);
        counts.insert(b"cd".as_slice().into(), 4_000_000_000);
        let bpe = train_from_counts(counts, 257, &[], &NoProgress).unwrap();
        assert_eq!(merge_strings(&bpe), ["a b"]);
    }

    #[test]
    fn counts_do_not_depend_on_chunks_or_threads() {
        let scratch = crate::scratch::Scratch::new("counts-in-chunks");
        let path = scratch.path("text.txt");
        let text =
            "Once upon a time, there was a cat.\nIt's   here!<|endoftext|>\n\nZweite Geschichte: 123 äöü\n 中文 \t\n"
                .repeat(300);
        std::fs::write(&path, &text).unwrap();
        let specials = SpecialMatcher::new(&["<|endoftext|>".to_string()]).unwrap();
        let mut expected = PretokenCounts::default();
        count_text(&text, &specials, &Pretokenizer::Gpt2, &mut expected).unwrap();
        for threads in [1, 2, 3] {
            let pool = crate::threads::pool(Some(threads)).unwrap();
            for chunk in [1, 5, 64, 1000, 1 << 20] {
                let counts = count_files_in_chunks(
                    &[TextSource::whole(&path)],
                    &specials,
                    &Pretokenizer::Gpt2,
                    &pool,
                    &NoProgress,
                    chunk,
                    false,
                )
                .unwrap();
                assert_eq!(
                    counts,
                    (expected.clone(), text.len() as u64),
                    "threads {threads}, chunk {chunk}"
                );
            }
            // Several files, read in parallel: the sum of their counts (no pre-token spans two files).
            let other = scratch.path("other.txt");
            std::fs::write(&other, "tail without newline").unwrap();
            let mut both = expected.clone();
            count_text("tail without newline", &specials, &Pretokenizer::Gpt2, &mut both).unwrap();
            let sources = [
                TextSource::whole(&path),
                TextSource::whole(&other),
                TextSource::whole(&path),
            ];
            let counts =
                count_files_in_chunks(&sources, &specials, &Pretokenizer::Gpt2, &pool, &NoProgress, 64, false).unwrap();
            let mut thrice = both.clone();
            count_text(&text, &specials, &Pretokenizer::Gpt2, &mut thrice).unwrap();
            let bytes = (2 * text.len() + "tail without newline".len()) as u64;
            assert_eq!(counts, (thrice, bytes), "threads {threads}, three files");
        }
    }

    #[test]
    fn counts_too_large_for_the_arithmetic_are_an_error() {
        // Each count alone fits in a u64, but the pairs they hold occur more than i64::MAX times in all:
        // in wrapping arithmetic this trained on garbage counts.
        let mut counts = PretokenCounts::default();
        counts.insert(b"abc".as_slice().into(), u64::MAX / 3);
        counts.insert(b"cd".as_slice().into(), 7);
        let err = train_from_counts(counts, 260, &[], &NoProgress);
        assert!(
            matches!(err, Err(Error::InvalidArgument(ref m)) if m.contains("too large")),
            "{err:?}"
        );
        let mut counts = PretokenCounts::default();
        counts.insert(b"ab".as_slice().into(), i64::MAX as u64);
        assert_eq!(
            merge_strings(&train_from_counts(counts, 257, &[], &NoProgress).unwrap()),
            ["a b"]
        );
    }

    #[test]
    fn vocab_too_small_is_an_error() {
        let err = train_from_counts(PretokenCounts::default(), 256, &["x".into()], &NoProgress);
        assert!(matches!(err, Err(Error::InvalidArgument(_))));
    }
}
