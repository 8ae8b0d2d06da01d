//! Encoding text to token ids and back, with CS336 §2.6 semantics: within each pre-token, merges apply
//! in merge-rank order (equivalently, the lowest-ranked adjacent pair first, leftmost on ties).
//!
//! Fast paths, each exact: a whole pre-token that is a token BPE leaves intact maps straight to its id;
//! a per-call cache holds multi-token pieces; long pieces merge with a heap (O(n log n), never
//! quadratic); big inputs split at safe cuts and encode in parallel.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::error::{Error, Result};
use crate::npy::{self, Dtype};
use crate::pretokenize::{Cutter, Pretokenizer, Segment, SpecialMatcher};
use crate::progress::{Phase, Progress};
use crate::stream::{Chunk, ChunkReader, TextSource};

/// Pieces up to this many bytes merge with the simple quadratic scan, which is faster when short.
const SHORT_PIECE: usize = 96;
/// Cached multi-token pieces per thread before the cache is cleared (bounds memory on diverse text).
const CACHE_LIMIT: usize = 1 << 17;
/// Slots of the direct-mapped cache of recent pieces (a power of two; 32 bytes each, 1 MB a thread).
/// One probe with no control bytes, for single- and multi-token pieces alike; measured on English text
/// with the GPT-2 vocabulary, 2^15 beat both 2^14 and 2^16 by 10-15%.
const HOT_SLOTS: usize = 1 << 15;
/// Marks a hot-cache value that is a single token id rather than a span of the arena.
const SINGLE: u64 = 1 << 63;
/// Inputs larger than this are split and encoded in parallel.
pub const PARALLEL_CHUNK_BYTES: usize = 1 << 20;
/// Chunk size when streaming a file: small enough that chunks in flight stay well under 100 MB.
const FILE_CHUNK_BYTES: usize = 2 << 20;

#[inline]
fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// Pieces of up to 15 bytes (nearly all of them) are keyed by their bytes and length packed into one
/// integer: hashing and comparing it is far cheaper than hashing and `memcmp`-ing a byte slice. Bytes
/// are read with whole-word loads (the tail through an overlapping load, shifted), not one by one:
/// bits 0..64 hold bytes 0..8, bits 64..120 bytes 8..15, bits 120..128 the length.
#[inline(always)]
fn pack_short(piece: &[u8]) -> Option<u128> {
    let n = piece.len();
    if n > 15 {
        return None;
    }
    let (lo, hi) = if n >= 8 {
        let lo = u64::from_le_bytes(piece[..8].try_into().unwrap());
        let hi = if n == 8 { 0 } else { u64::from_le_bytes(piece[n - 8..].try_into().unwrap()) >> (8 * (16 - n)) };
        (lo, hi)
    } else if n >= 4 {
        let first = u32::from_le_bytes(piece[..4].try_into().unwrap()) as u64;
        let rest = if n == 4 { 0 } else { (u32::from_le_bytes(piece[n - 4..].try_into().unwrap()) >> (8 * (8 - n))) as u64 };
        (first | rest << 32, 0)
    } else {
        (piece.iter().enumerate().fold(0u64, |acc, (i, &b)| acc | (b as u64) << (8 * i)), 0)
    };
    Some(((n as u128) << 120) | (hi as u128) << 64 | lo as u128)
}

/// Byte string → value, with the packed fast path for short keys.
struct PieceMap<V> {
    short: FxHashMap<u128, V>,
    long: FxHashMap<Box<[u8]>, V>,
}

impl<V> Default for PieceMap<V> {
    fn default() -> Self {
        PieceMap { short: FxHashMap::default(), long: FxHashMap::default() }
    }
}

impl<V> PieceMap<V> {
    fn insert_if_absent(&mut self, piece: &[u8], value: V) {
        match pack_short(piece) {
            Some(key) => {
                self.short.entry(key).or_insert(value);
            }
            None => {
                if !self.long.contains_key(piece) {
                    self.long.insert(piece.into(), value);
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    fn clear(&mut self) {
        self.short.clear();
        self.long.clear();
    }
}

/// What one thread remembers between calls for one encoder: a direct-mapped cache of recent short
/// pieces (hit in a single probe, mostly from L1/L2), and the ids of pieces already merged, stored as
/// (start, len) spans of one arena so an entry costs no allocation of its own.
struct ThreadCache {
    owner: u64,
    hot: Vec<(u128, u64)>,
    spans: PieceMap<(u32, u32)>,
    arena: Vec<u32>,
}

impl ThreadCache {
    fn new(owner: u64) -> Self {
        ThreadCache { owner, hot: vec![(0, 0); HOT_SLOTS], spans: PieceMap::default(), arena: Vec::new() }
    }

    #[inline(always)]
    fn hot_slot(key: u128) -> usize {
        let mixed = ((key as u64) ^ ((key >> 64) as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> (64 - HOT_SLOTS.trailing_zeros())) as usize
    }

    #[inline(always)]
    fn span(&self, span: (u32, u32)) -> &[u32] {
        &self.arena[span.0 as usize..(span.0 + span.1) as usize]
    }

    /// Stores the ids of a merged piece; returns its span. Clearing the arena also clears the hot
    /// slots, which may point into it.
    fn insert(&mut self, piece: &[u8], ids: &[u32]) -> (u32, u32) {
        if self.spans.len() >= CACHE_LIMIT || self.arena.len() + ids.len() > u32::MAX as usize {
            self.spans.clear();
            self.arena.clear();
            self.hot.fill((0, 0));
        }
        let span = (self.arena.len() as u32, ids.len() as u32);
        self.spans.insert_if_absent(piece, span);
        self.arena.extend_from_slice(ids);
        span
    }
}

thread_local! {
    static THREAD_CACHE: std::cell::RefCell<Option<ThreadCache>> = const { std::cell::RefCell::new(None) };
}

/// Positions of pending pairs, one bucket per merge rank, taken lowest rank first.
#[derive(Default)]
struct RankBuckets {
    positions: FxHashMap<u32, Vec<u32>>,
    ranks: BinaryHeap<Reverse<u32>>,
}

impl RankBuckets {
    #[inline]
    fn push(&mut self, rank: u32, position: u32) {
        let ranks = &mut self.ranks;
        self.positions
            .entry(rank)
            .or_insert_with(|| {
                ranks.push(Reverse(rank));
                Vec::new()
            })
            .push(position);
    }

    /// The lowest rank and its positions, sorted.
    fn pop(&mut self) -> Option<(u32, Vec<u32>)> {
        let Reverse(rank) = self.ranks.pop()?;
        let mut positions = self.positions.remove(&rank).unwrap_or_default();
        if !positions.is_sorted() {
            positions.sort_unstable();
        }
        Some((rank, positions))
    }
}

/// Identifies encoders so a thread's cache is never used with another encoder's vocabulary.
static NEXT_ENCODER_ID: AtomicU64 = AtomicU64::new(1);

pub struct Encoder {
    id: u64,
    /// id → bytes, flattened: token `i` is `bytes[offsets[i]..offsets[i + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    byte_ids: [u32; 256],
    /// (left id, right id) → (rank, merged id).
    merges: FxHashMap<u64, (u32, u32)>,
    /// Pre-tokens that encode to exactly one token.
    whole: PieceMap<u32>,
    specials: SpecialMatcher,
    special_ids: Vec<u32>,
    pretokenizer: Pretokenizer,
    cutter: Cutter,
}

impl Encoder {
    /// `vocab[id]` are token bytes; `merges` are byte pairs in rank order. Special tokens absent from
    /// the vocabulary are appended to it. Where several ids share bytes, the lowest id is used.
    pub fn new(
        mut vocab: Vec<Vec<u8>>,
        merges: &[(Vec<u8>, Vec<u8>)],
        special_tokens: &[String],
        pattern: Option<&str>,
    ) -> Result<Self> {
        if vocab.len() >= u32::MAX as usize {
            return Err(Error::InvalidArgument("vocabulary too large".into()));
        }
        let mut ids: FxHashMap<&[u8], u32> = FxHashMap::default();
        for (id, token) in vocab.iter().enumerate() {
            ids.entry(token.as_slice()).or_insert(id as u32);
        }
        let mut special_ids = Vec::with_capacity(special_tokens.len());
        let mut appended: Vec<Vec<u8>> = Vec::new();
        for s in special_tokens {
            match ids.get(s.as_bytes()) {
                Some(&id) => special_ids.push(id),
                None => {
                    let id = (vocab.len() + appended.len()) as u32;
                    if let Some(k) = appended.iter().position(|t| t == s.as_bytes()) {
                        special_ids.push((vocab.len() + k) as u32);
                    } else {
                        appended.push(s.as_bytes().to_vec());
                        special_ids.push(id);
                    }
                }
            }
        }
        let mut byte_ids = [0u32; 256];
        for b in 0..=255u8 {
            byte_ids[b as usize] = *ids.get([b].as_slice()).ok_or_else(|| {
                Error::InvalidArgument(format!("vocabulary has no token for the single byte {b:#04x}"))
            })?;
        }
        let mut merge_map: FxHashMap<u64, (u32, u32)> = FxHashMap::default();
        let mut joined = Vec::new();
        for (rank, (left, right)) in merges.iter().enumerate() {
            let lookup = |t: &[u8]| {
                ids.get(t).copied().ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "merge {rank} ({:?} {:?}): {:?} is not in the vocabulary",
                        String::from_utf8_lossy(left),
                        String::from_utf8_lossy(right),
                        String::from_utf8_lossy(t)
                    ))
                })
            };
            joined.clear();
            joined.extend_from_slice(left);
            joined.extend_from_slice(right);
            let key = pair_key(lookup(left)?, lookup(right)?);
            let merged = lookup(&joined)?;
            // A repeated pair keeps its first (lowest) rank.
            merge_map.entry(key).or_insert((rank as u32, merged));
        }
        drop(ids);
        vocab.extend(appended);

        let mut bytes = Vec::with_capacity(vocab.iter().map(|v| v.len()).sum());
        let mut offsets = Vec::with_capacity(vocab.len() + 1);
        offsets.push(0);
        for v in &vocab {
            bytes.extend_from_slice(v);
            offsets.push(bytes.len());
        }
        let specials = SpecialMatcher::new(special_tokens)?;
        let pretokenizer = Pretokenizer::new(pattern)?;
        let cutter = Cutter::new(specials.clone(), &pretokenizer);
        let mut encoder = Encoder {
            id: NEXT_ENCODER_ID.fetch_add(1, Ordering::Relaxed),
            bytes,
            offsets,
            byte_ids,
            merges: merge_map,
            whole: PieceMap::default(),
            specials,
            special_ids,
            pretokenizer,
            cutter,
        };
        encoder.whole = encoder.single_token_pieces();
        Ok(encoder)
    }

    /// Tokens that BPE turns back into themselves, so a pre-token equal to one needs no merging.
    fn single_token_pieces(&self) -> PieceMap<u32> {
        let mut whole = PieceMap::default();
        let mut out = Vec::new();
        for b in 0..=255u8 {
            whole.insert_if_absent(&[b], self.byte_ids[b as usize]);
        }
        let mut merged_ids: Vec<u32> = self.merges.values().map(|&(_, id)| id).collect();
        merged_ids.sort_unstable();
        merged_ids.dedup();
        for id in merged_ids {
            let token = self.token(id);
            out.clear();
            self.merge_piece(token, &mut out);
            if out.len() == 1 && out[0] == id {
                whole.insert_if_absent(token, id);
            }
        }
        whole
    }

    pub fn vocab_size(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn special_ids(&self) -> &[u32] {
        &self.special_ids
    }

    pub fn cutter(&self) -> &Cutter {
        &self.cutter
    }

    #[inline]
    pub fn token(&self, id: u32) -> &[u8] {
        &self.bytes[self.offsets[id as usize]..self.offsets[id as usize + 1]]
    }

    #[inline]
    fn rank(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.merges.get(&pair_key(a, b)).copied()
    }

    /// Applies the merges to one pre-token, appending its ids to `out`.
    fn merge_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        let start = out.len();
        out.extend(piece.iter().map(|&b| self.byte_ids[b as usize]));
        if piece.len() <= SHORT_PIECE {
            self.merge_short(out, start);
        } else {
            self.merge_long(out, start);
        }
    }

    /// Repeatedly merges the lowest-ranked pair (leftmost on ties) of `ids[start..]`. Pair ranks are
    /// looked up once each and refreshed only next to a merge.
    fn merge_short(&self, ids: &mut Vec<u32>, start: usize) {
        const NO_MERGE: u64 = u64::MAX;
        let n = ids.len() - start;
        if n < 2 {
            return;
        }
        // ranks[i]: (rank << 32 | merged id) of the pair at i, or NO_MERGE.
        let mut ranks = [NO_MERGE; SHORT_PIECE];
        let pair_rank = |a: u32, b: u32| match self.rank(a, b) {
            Some((rank, merged)) => (rank as u64) << 32 | merged as u64,
            None => NO_MERGE,
        };
        for i in 0..n - 1 {
            ranks[i] = pair_rank(ids[start + i], ids[start + i + 1]);
        }
        let mut len = n;
        loop {
            let mut best = 0;
            for i in 1..len - 1 {
                if ranks[i] < ranks[best] {
                    best = i;
                }
            }
            if ranks[best] == NO_MERGE {
                break;
            }
            ids[start + best] = ranks[best] as u32;
            ids.remove(start + best + 1);
            ranks.copy_within(best + 1..len - 1, best);
            len -= 1;
            if len < 2 {
                break;
            }
            if best + 1 < len {
                ranks[best] = pair_rank(ids[start + best], ids[start + best + 1]);
            }
            if best > 0 {
                ranks[best - 1] = pair_rank(ids[start + best - 1], ids[start + best]);
            }
        }
    }

    /// The same merges for long pieces, in time that grows linearly on real and pathological input
    /// alike. Symbols form a linked list; pending pairs wait in one bucket per rank. Ranks are
    /// processed in increasing order, which is safe because a merge only creates pairs containing the
    /// new token, and those rank after the merge that made it. Within a rank, positions are processed
    /// left to right, each re-checked first, which is exactly "merge every occurrence, leftmost first".
    /// Positions arrive nearly sorted and memory is touched in order, unlike with one big heap.
    fn merge_long(&self, ids: &mut Vec<u32>, start: usize) {
        const NONE: u32 = u32::MAX;
        let n = ids.len() - start;
        let mut sym: Vec<u32> = ids[start..].to_vec();
        let mut next: Vec<u32> = (1..=n as u32).map(|i| if i as usize == n { NONE } else { i }).collect();
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        prev[0] = NONE;
        let mut buckets = RankBuckets::default();
        let push = |buckets: &mut RankBuckets, sym: &[u32], next: &[u32], i: u32| {
            let j = next[i as usize];
            if j != NONE {
                if let Some((rank, _)) = self.rank(sym[i as usize], sym[j as usize]) {
                    buckets.push(rank, i);
                }
            }
        };
        for i in 0..n as u32 - 1 {
            push(&mut buckets, &sym, &next, i);
        }
        let mut alive = vec![true; n];
        while let Some((rank, positions)) = buckets.pop() {
            for &i in &positions {
                let j = next[i as usize];
                if !alive[i as usize] || j == NONE {
                    continue;
                }
                match self.rank(sym[i as usize], sym[j as usize]) {
                    Some((r, merged)) if r == rank => {
                        sym[i as usize] = merged;
                        alive[j as usize] = false;
                        let after = next[j as usize];
                        next[i as usize] = after;
                        if after != NONE {
                            prev[after as usize] = i;
                        }
                        let before = prev[i as usize];
                        if before != NONE {
                            push(&mut buckets, &sym, &next, before);
                        }
                        push(&mut buckets, &sym, &next, i);
                    }
                    _ => {}
                }
            }
        }
        ids.truncate(start);
        let mut i = 0u32;
        while i != NONE {
            ids.push(sym[i as usize]);
            i = next[i as usize];
        }
    }

    /// Encodes one pre-token: the hot slot, then the single-token table, then merged pieces, and only
    /// then the merges themselves.
    #[inline(always)]
    fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>, cache: &mut ThreadCache) {
        let Some(key) = pack_short(piece) else {
            if let Some(&id) = self.whole.long.get(piece) {
                out.push(id);
            } else if let Some(&span) = cache.spans.long.get(piece) {
                out.extend_from_slice(cache.span(span));
            } else {
                let start = out.len();
                self.merge_piece(piece, out);
                cache.insert(piece, &out[start..]);
            }
            return;
        };
        let slot = ThreadCache::hot_slot(key);
        let (hot_key, value) = cache.hot[slot];
        let value = if hot_key == key {
            value
        } else if let Some(&id) = self.whole.short.get(&key) {
            SINGLE | id as u64
        } else if let Some(&(start, len)) = cache.spans.short.get(&key) {
            (start as u64) << 32 | len as u64
        } else {
            let start = out.len();
            self.merge_piece(piece, out);
            let (arena_start, len) = cache.insert(piece, &out[start..]);
            cache.hot[slot] = (key, (arena_start as u64) << 32 | len as u64);
            return;
        };
        cache.hot[slot] = (key, value);
        if value & SINGLE != 0 {
            out.push(value as u32);
        } else {
            out.extend_from_slice(cache.span(((value >> 32) as u32, value as u32)));
        }
    }

    /// Runs `f` with this thread's cache for this encoder.
    fn with_cache<T>(&self, f: impl FnOnce(&mut ThreadCache) -> T) -> T {
        THREAD_CACHE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut slot) => {
                if slot.as_ref().is_none_or(|c| c.owner != self.id) {
                    *slot = Some(ThreadCache::new(self.id));
                }
                f(slot.as_mut().unwrap())
            }
            // Only re-entrancy could get here; a private cache keeps it correct.
            Err(_) => f(&mut ThreadCache::new(self.id)),
        })
    }

    /// Encodes `text` on the calling thread, appending ids to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        self.with_cache(|cache| {
            self.specials.for_each_segment(text, |segment| {
                match segment {
                    Segment::Special(i) => out.push(self.special_ids[i]),
                    Segment::Text(t) => self
                        .pretokenizer
                        .for_each_piece(t, |piece| self.encode_piece(piece.as_bytes(), out, cache))?,
                }
                Ok(())
            })
        })
    }

    /// Encodes ordinary text only: special-token strings are treated as text.
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        self.with_cache(|cache| {
            self.pretokenizer.for_each_piece(text, |piece| self.encode_piece(piece.as_bytes(), out, cache))
        })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        self.encode_into(text, &mut out)?;
        Ok(out)
    }

    /// Encodes a large text in parallel on `pool`; the result equals `encode`. Ids come back per part,
    /// in order, so the caller can write them anywhere without another copy.
    pub fn encode_parts(&self, text: &str, pool: &rayon::ThreadPool) -> Result<Vec<Vec<u32>>> {
        if text.len() <= PARALLEL_CHUNK_BYTES || pool.current_num_threads() == 1 {
            return Ok(vec![self.encode(text)?]);
        }
        let parts = crate::stream::split_text(text, &self.cutter, PARALLEL_CHUNK_BYTES);
        pool.install(|| parts.par_iter().map(|p| self.encode(p)).collect())
    }

    pub fn encode_batch(&self, texts: &[String], pool: &rayon::ThreadPool) -> Result<Vec<Vec<u32>>> {
        pool.install(|| texts.par_iter().map(|t| self.encode(t)).collect())
    }

    /// Streams a text file (.txt or gzip) into a `.npy` array of ids at `output`, encoding chunks in
    /// parallel while the next ones are read. Returns the number of tokens. The ids equal `encode` of
    /// the whole text.
    pub fn encode_file(
        &self,
        input: &TextSource,
        output: &Path,
        dtype: Dtype,
        pool: &rayon::ThreadPool,
        lossy: bool,
        progress: &dyn Progress,
    ) -> Result<u64> {
        if dtype == Dtype::U16 && self.vocab_size() > 1 << 16 {
            return Err(Error::InvalidArgument(format!(
                "uint16 cannot hold ids of a vocabulary of {} tokens; use uint32",
                self.vocab_size()
            )));
        }
        let out_err = |e| Error::io(Some(output.to_path_buf()), e);
        let total = input.disk_bytes()?;
        let read = Arc::new(AtomicU64::new(0));
        let source = input.open(read.clone())?;
        let reader = ChunkReader::new(source, Some(input.path.clone()), &self.cutter, FILE_CHUNK_BYTES)
            .lossy(lossy)
            .starting_at(input.start());
        let mut out = BufWriter::with_capacity(1 << 20, File::create(output).map_err(out_err)?);
        out.write_all(&npy::header(dtype, 0)).map_err(out_err)?;
        let batch = pool.current_num_threads().max(1);
        let mut count = 0u64;
        let mut scratch = Vec::new();
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Chunk>>(batch);
            scope.spawn(move || {
                for chunk in reader {
                    let failed = chunk.is_err();
                    if tx.send(chunk).is_err() || failed {
                        break;
                    }
                }
            });
            loop {
                let mut chunks = Vec::with_capacity(batch);
                while chunks.len() < batch {
                    match rx.recv() {
                        Ok(chunk) => chunks.push(chunk?),
                        Err(_) => break,
                    }
                }
                if chunks.is_empty() {
                    return Ok(());
                }
                let encoded: Vec<Vec<u32>> =
                    pool.install(|| chunks.par_iter().map(|c| self.encode(&c.text)).collect::<Result<_>>())?;
                drop(chunks);
                for ids in &encoded {
                    npy::write_ids(&mut out, ids, dtype, &mut scratch).map_err(out_err)?;
                    count += ids.len() as u64;
                }
                if !progress.update(Phase::Read, read.load(Ordering::Relaxed), total) {
                    return Err(Error::Interrupted);
                }
            }
        })?;
        let mut file = out.into_inner().map_err(|e| out_err(e.into_error()))?;
        npy::finish(&mut file, dtype, count).map_err(out_err)?;
        file.sync_all().map_err(out_err)?;
        Ok(count)
    }

    /// The bytes of `ids`, concatenated. Unknown ids are an error naming the id.
    pub fn decode_bytes(&self, ids: impl IntoIterator<Item = u64>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for id in ids {
            if id >= self.vocab_size() as u64 {
                return Err(Error::UnknownTokenId(id));
            }
            out.extend_from_slice(self.token(id as u32));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::train::{count_text, train_from_counts, PretokenCounts};

    fn trained(text: &str, vocab_size: usize) -> Encoder {
        let specials = vec!["<|endoftext|>".to_string()];
        let mut counts = PretokenCounts::default();
        count_text(text, &SpecialMatcher::new(&specials).unwrap(), &Pretokenizer::Gpt2, &mut counts).unwrap();
        let bpe = train_from_counts(counts, vocab_size, &specials, &NoProgress).unwrap();
        let merges: Vec<(Vec<u8>, Vec<u8>)> = bpe
            .merges
            .iter()
            .map(|&(a, b)| (bpe.vocab[a as usize].clone(), bpe.vocab[b as usize].clone()))
            .collect();
        Encoder::new(bpe.vocab, &merges, &specials, None).unwrap()
    }

    /// Sequential merging straight from the definition: for each merge in order, replace every
    /// occurrence left to right.
    fn reference_piece(enc: &Encoder, piece: &[u8]) -> Vec<u32> {
        let mut ids: Vec<u32> = piece.iter().map(|&b| enc.byte_ids[b as usize]).collect();
        let mut by_rank: Vec<(u32, u64, u32)> = enc.merges.iter().map(|(&k, &(r, m))| (r, k, m)).collect();
        by_rank.sort_unstable();
        for (_, key, merged) in by_rank {
            let (a, b) = ((key >> 32) as u32, key as u32);
            let mut out = Vec::with_capacity(ids.len());
            let mut i = 0;
            while i < ids.len() {
                if i + 1 < ids.len() && ids[i] == a && ids[i + 1] == b {
                    out.push(merged);
                    i += 2;
                } else {
                    out.push(ids[i]);
                    i += 1;
                }
            }
            ids = out;
        }
        ids
    }

    const TEXT: &str = "the cat sat on the mat. the cats sat on the mats!\n aaaa aaaaaaa bbb 1234 12 \
                        <|endoftext|> the end, the end.\n";

    #[test]
    fn short_and_long_merges_agree_with_the_definition() {
        let enc = trained(&TEXT.repeat(3), 300);
        for piece in ["the", " mats", "aaaaaaa", "aaaaaaaaaaaaaaaaaaaaaaa", "thethethe", "zz", " the"] {
            let mut short = Vec::new();
            enc.merge_piece(piece.as_bytes(), &mut short);
            let mut long = piece.as_bytes().iter().map(|&b| enc.byte_ids[b as usize]).collect();
            enc.merge_long(&mut long, 0);
            assert_eq!(short, reference_piece(&enc, piece.as_bytes()), "{piece}");
            assert_eq!(long, short, "{piece}");
        }
        let long_piece = "ab".repeat(500) + &"a".repeat(333);
        let mut ids = Vec::new();
        enc.merge_piece(long_piece.as_bytes(), &mut ids);
        assert_eq!(ids, reference_piece(&enc, long_piece.as_bytes()));
    }

    #[test]
    fn long_merges_agree_with_the_definition_on_random_pieces() {
        let enc = trained(&"abab aab abba baab aaaa bbbb ab ba ".repeat(20), 300);
        let mut rng = 99u64;
        for _ in 0..300 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = 1 + (rng >> 40) as usize % 400;
            let piece: Vec<u8> = (0..len)
                .map(|k| if (rng >> (k % 61)) & 1 == 1 || k % 7 == 3 { b'a' } else { b'b' })
                .collect();
            let mut long: Vec<u32> = piece.iter().map(|&b| enc.byte_ids[b as usize]).collect();
            enc.merge_long(&mut long, 0);
            assert_eq!(long, reference_piece(&enc, &piece), "{}", String::from_utf8_lossy(&piece));
        }
    }

    #[test]
    fn round_trip_and_specials() {
        let enc = trained(&TEXT.repeat(3), 320);
        let text = "the cat<|endoftext|><|endoftext|> héllo 😀 wörld\n\n";
        let ids = enc.encode(text).unwrap();
        assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 2);
        assert_eq!(enc.decode_bytes(ids.iter().map(|&i| i as u64)).unwrap(), text.as_bytes());
        assert!(matches!(enc.decode_bytes([99_999]), Err(Error::UnknownTokenId(99_999))));
    }

    #[test]
    fn parallel_parts_equal_serial() {
        let enc = trained(&TEXT.repeat(3), 320);
        let big = TEXT.repeat(30_000);
        let pool = crate::threads::pool(Some(2)).unwrap();
        let parts = enc.encode_parts(&big, &pool).unwrap();
        assert!(parts.len() > 1);
        assert_eq!(parts.concat(), enc.encode(&big).unwrap());
    }

    #[test]
    fn packed_keys_hold_every_byte() {
        let mut rng = 12345u64;
        for n in 0..=15usize {
            for _ in 0..200 {
                let piece: Vec<u8> = (0..n)
                    .map(|_| {
                        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1);
                        (rng >> 56) as u8
                    })
                    .collect();
                let key = pack_short(&piece).unwrap();
                let bytes = key.to_le_bytes();
                assert_eq!(bytes[15] as usize, n);
                assert_eq!(&bytes[..n], piece.as_slice());
                assert!(bytes[n..15].iter().all(|&b| b == 0));
            }
        }
        assert_eq!(pack_short(&[0u8; 16]), None);
    }

    #[test]
    fn missing_special_is_appended() {
        let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        vocab.push(b"ab".to_vec());
        let enc = Encoder::new(vocab, &[(b"a".to_vec(), b"b".to_vec())], &["<s>".into()], None).unwrap();
        assert_eq!(enc.vocab_size(), 258);
        assert_eq!(enc.encode("ab<s>").unwrap(), [256, 257]);
    }
}
