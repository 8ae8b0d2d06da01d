//! Encoding text to token ids, with CS336 §2.6 semantics: within each pre-token, merges apply in
//! merge-rank order (equivalently, the lowest-ranked adjacent pair first, leftmost on ties).
//!
//! Fast paths, each exact: ASCII text pre-tokenizes 64 bytes at a time (blocks.rs); each pre-token of up
//! to 15 bytes is packed into one integer in one load and looked up in a per-thread cache (cache.rs) of
//! the pieces already encoded, with their ids inline, by one probe, a batch of pieces at a time with their
//! cache lines prefetched a few dozen pieces ahead (`BatchSink`); only a piece new to the thread goes
//! on to the table of pre-tokens that BPE leaves as one token (keys.rs), and then to the merges; long
//! pieces merge through rank buckets (merge.rs, O(n log n), never quadratic); big inputs split at safe
//! cuts and encode in parallel.
//! Whole files stream to `.npy` in encode_file.rs; ids go back to bytes in decode.rs.

use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::cache::{
    cache_for, outgrows_first_table, CachedIds, Lanes, ThreadCache, BLOCK_IDS, CACHED_PIECE_BYTES, THREAD_CACHES,
};
use crate::code_units::CodeUnits;
use crate::cuts::{split_at_safe_cuts, Cutter};
use crate::error::{Error, Result};
use crate::keys::{pack_short_in, pair_key, PieceMap, TokenMap, UNPACKED};
use crate::npy::Dtype;
use crate::pretokenize::{PieceSink, Pretokenizer};
use crate::specials::{Segment, SpecialMatcher};
use crate::train::Bpe;

/// The ids of `parts` joined into one Vec, the parts copied in parallel on `pool`: a single-threaded copy
/// of the whole output would otherwise be a tenth of a batch's time. The output starts as zero pages from
/// the kernel, so it is written only once.
pub fn join_parts<T: Copy + Default + Send + Sync>(parts: &[Vec<T>], pool: &rayon::ThreadPool) -> Vec<T> {
    let mut out = vec![T::default(); parts.iter().map(Vec::len).sum()];
    crate::arch::advise_huge_pages(&mut out);
    let mut chunks = Vec::with_capacity(parts.len());
    let mut rest = out.as_mut_slice();
    for part in parts {
        let (chunk, tail) = rest.split_at_mut(part.len());
        chunks.push(chunk);
        rest = tail;
    }
    pool.install(|| {
        chunks
            .into_par_iter()
            .zip(parts)
            .for_each(|(chunk, part)| chunk.copy_from_slice(part))
    });
    out
}

/// An id as an output holds it: `u32`, or `u16` where every id of the vocabulary fits (half the memory
/// of an array of them, and of a training set).
pub trait OutputId: Copy + Default + Send + Sync + 'static {
    /// The output, by its type of id.
    fn target(out: &mut Vec<Self>) -> IdTarget<'_>;

    fn widen(self) -> u32;
}

/// An output of ids, by type (`OutputId::target`).
pub enum IdTarget<'a> {
    U32(&'a mut Vec<u32>),
    U16(&'a mut Vec<u16>),
}

impl OutputId for u32 {
    fn target(out: &mut Vec<Self>) -> IdTarget<'_> {
        IdTarget::U32(out)
    }

    fn widen(self) -> u32 {
        self
    }
}

impl OutputId for u16 {
    fn target(out: &mut Vec<Self>) -> IdTarget<'_> {
        IdTarget::U16(out)
    }

    fn widen(self) -> u32 {
        self as u32
    }
}

/// Inputs larger than this are split and encoded in parallel.
pub const PARALLEL_CHUNK_BYTES: usize = 1 << 20;

/// Appends ids to a Vec, each piece's through one fixed-size write of its block of lanes
/// (`arch::append_lanes`): a cached piece's lanes (`cache::Lanes`) are stored at the end whatever its
/// count of ids, and the end moves on by the count. For an output of `u16` ids, the lanes go to a small
/// buffer of `u32` that `settle` empties into it after each batch of pieces, narrowing them while they are
/// in L1: a pass over all the ids afterwards cost a tenth of a warm call (and its `u32` copy of them).
struct IdWriter<'a> {
    /// The output, or for `u16` ids the buffer on their way to it.
    out: &'a mut Vec<u32>,
    narrow: Option<&'a mut Vec<u16>>,
}

impl<'a> IdWriter<'a> {
    /// A writer to `target` for the ids of `text_bytes` bytes of text that begins with `sample`, with room
    /// reserved now for as many as `expected_ids` foresees, so that the output is not grown, and its ids
    /// moved, halfway; `staging` is the buffer for `u16` ids.
    fn new(target: IdTarget<'a>, staging: &'a mut Vec<u32>, text_bytes: usize, sample: &[u8]) -> Self {
        let room = expected_ids(text_bytes, sample) + BLOCK_IDS;
        match target {
            IdTarget::U32(out) => {
                out.reserve(room);
                crate::arch::advise_huge_pages(out.spare_capacity_mut());
                IdWriter { out, narrow: None }
            }
            IdTarget::U16(narrow) => {
                narrow.reserve(room);
                crate::arch::advise_huge_pages(narrow.spare_capacity_mut());
                IdWriter {
                    out: staging,
                    narrow: Some(narrow),
                }
            }
        }
    }

    /// Ids written so far (after those the output held already).
    fn written(&self) -> usize {
        self.out.len() + self.narrow.as_ref().map_or(0, |n| n.len())
    }

    /// Moves the ids waiting in the `u16` buffer to the output (`Encoder::with_sink` checked that they fit).
    #[inline(always)]
    fn settle(&mut self) {
        if let Some(narrow) = self.narrow.as_deref_mut() {
            narrow.extend(self.out.iter().map(|&id| id as u16));
            self.out.clear();
        }
    }

    /// Appends `lanes[..len]` (len ≤ N).
    #[inline(always)]
    fn put<const N: usize>(&mut self, lanes: &[u32; N], len: usize) {
        crate::arch::append_lanes(self.out, N, |run| run.put(lanes, len));
    }

    /// Appends the ids of a cached piece.
    #[inline(always)]
    fn put_lanes(&mut self, lanes: Lanes) {
        match lanes {
            Lanes::Inline(lanes, len) => self.put(&lanes, len),
            Lanes::Block(lanes, len) => self.put(lanes, len),
            Lanes::Slice(ids) => self.put_slice(ids),
        }
    }

    /// Appends `ids`, of any length.
    #[inline(always)]
    fn put_slice(&mut self, ids: &[u32]) {
        self.out.extend_from_slice(ids);
    }
}

/// Bytes at the start of a text whose share of non-ASCII bytes `expected_ids` reads.
const ID_SAMPLE_BYTES: usize = 64 << 10;

/// About how many ids (at most a few more than) `text_bytes` bytes of text beginning with `sample` encode
/// to: a third of the bytes, plus 0.4 an id for each byte in the share of the sample that is not ASCII.
/// GPT-2's vocabulary gives English books 0.27 ids a byte and reviews 0.23, but Russian stories 0.60 and
/// Chinese poems 0.57 (their letters are two and three bytes, and few are whole tokens), for which a third
/// of the bytes left the Vec to grow, its ids copied, halfway. Measured (`encode_to_numpy`, one pinned
/// core, fresh processes, 5 rounds, medians; later calls: the best of 11): 4 MB of Chinese 62 → 67 MB/s on
/// the first call, 223 → 237 on later ones; 20 MB of Russian 128 → 133 and 258 → 258; English unchanged.
/// Room reserved but never written costs no memory (its pages are never touched).
pub(crate) fn expected_ids(text_bytes: usize, sample: &[u8]) -> usize {
    let sample = &sample[..sample.len().min(ID_SAMPLE_BYTES)];
    let non_ascii = sample.iter().filter(|&&b| !b.is_ascii()).count();
    let share = non_ascii as f64 / sample.len().max(1) as f64;
    (text_bytes as f64 * (1.0 / 3.0 + 0.4 * share)) as usize
}

/// Pieces scanned before their ids are looked up and written (`Encoder::emit_batch`): enough that the
/// cache lines of the first ones have arrived when their probes come, few enough that all their lines
/// (16 KB) stay in L1 until then. A block of text adds up to 64 at once: the batch is emptied before a
/// block when fewer than that are free.
const PIECE_BATCH: usize = 256;

/// How many pieces ahead of its probe a piece's home pair starts loading.
const PREFETCH_AHEAD: usize = 32;

/// Scanned pieces awaiting their ids: where each ends (it starts where the one before ended, the first
/// at `first_start`), and, while `emit_batch` runs, their packed keys (`UNPACKED`: not packed) and home
/// pairs.
struct PieceBatch {
    ends: [usize; PIECE_BATCH],
    keys: [u128; PIECE_BATCH],
    /// Each key's home pair in the thread's cache (`PairTable::prefetch_home`).
    homes: [usize; PIECE_BATCH],
    first_start: usize,
    len: usize,
}

impl PieceBatch {
    fn new() -> Self {
        PieceBatch {
            ends: [0; PIECE_BATCH],
            keys: [0; PIECE_BATCH],
            homes: [0; PIECE_BATCH],
            first_start: 0,
            len: 0,
        }
    }

    /// Packs piece `i` (starting at `start`) into its key and starts loading its home pair in `pieces`
    /// (for an unpacked piece, where `pieces` will look for it); returns where the piece ends.
    #[inline(always)]
    fn key_piece(&mut self, i: usize, start: usize, bytes: &[u8], pieces: &PieceMap<CachedIds>) -> usize {
        let end = self.ends[i];
        let key = pack_short_in(bytes, start, end).unwrap_or(UNPACKED);
        self.keys[i] = key;
        self.homes[i] = pieces.short.prefetch_home(key);
        if key == UNPACKED {
            pieces.prefetch_unpacked(&bytes[start..end]);
        }
        end
    }

    /// The byte range of piece `i`.
    #[inline(always)]
    fn span(&self, i: usize) -> (usize, usize) {
        let start = if i == 0 { self.first_start } else { self.ends[i - 1] };
        (start, self.ends[i])
    }
}

/// Where the scanner's pieces go while encoding (`Encoder::with_sink`): their ends are gathered into a
/// batch, a block's at a time, and each full batch goes to `Encoder::emit_batch`, which packs each piece
/// of at most 15 bytes into a key and starts loading its home pair of the thread's cache
/// (`PairTable::prefetch_home`) PREFETCH_AHEAD pieces before probing it, so the pair is mostly in L1 by
/// then. Probing piece by piece as scanned, the loop would wait on each load in turn (the write position
/// depends on the ids read).
///
/// One sink serves any number of texts in turn (`text`, with ids of their own between them: `id`), with
/// one borrow of the thread's cache, one batch and one output: a corpus of short documents then encodes
/// at the speed of one long text, where a sink per document cost about half a microsecond each. A text is
/// borrowed only while it is scanned (`TextScan`), so the texts may be parts of a buffer that is refilled
/// between them (`Encoder::encode_units_into`).
pub(crate) struct BatchSink<'e, 'o> {
    encoder: &'e Encoder,
    batch: PieceBatch,
    cache: &'e mut ThreadCache,
    ids: IdWriter<'o>,
    scratch: Vec<u32>,
}

/// A sink scanning one text: the batch's pieces are ranges of `bytes`.
struct TextScan<'s, 'e, 'o, 't> {
    sink: &'s mut BatchSink<'e, 'o>,
    bytes: &'t [u8],
}

impl PieceSink for TextScan<'_, '_, '_, '_> {
    #[inline(always)]
    fn piece_to(&mut self, end: usize) {
        let batch = &mut self.sink.batch;
        batch.ends[batch.len] = end;
        batch.len += 1;
        if batch.len == PIECE_BATCH {
            self.sink.flush(self.bytes);
        }
    }

    #[inline(always)]
    fn pieces_to(&mut self, base: usize, mut ends: u64) {
        if self.sink.batch.len > PIECE_BATCH - 64 {
            self.sink.flush(self.bytes);
        }
        let batch = &mut self.sink.batch;
        let len = batch.len;
        let free: &mut [usize; 64] = (&mut batch.ends[len..len + 64]).try_into().expect("64 free");
        // Eight ends at a time, each group written whole: the slots past the count get `base + 64`, beyond
        // the batch's length (or written over by the next block). The loop then ends on the count in
        // eights, which varies far less from block to block than the count itself: a loop that stopped at
        // the last set bit mispredicted its exit at nearly every block.
        let count = ends.count_ones() as usize;
        let mut n = 0;
        loop {
            for slot in &mut free[n..n + 8] {
                *slot = base + ends.trailing_zeros() as usize;
                ends &= ends.wrapping_sub(1);
            }
            n += 8;
            if n >= count {
                break;
            }
        }
        batch.len = len + count;
    }
}

impl BatchSink<'_, '_> {
    /// Writes the ids of the pre-tokens of `text` (no special tokens in it).
    #[inline(always)]
    pub(crate) fn text(&mut self, text: &str) -> Result<()> {
        let encoder = self.encoder;
        self.batch.first_start = 0;
        let bytes = text.as_bytes();
        let scanned = encoder
            .pretokenizer
            .for_each_range_into(text, &mut TextScan { sink: self, bytes });
        // The batch's pieces belong to this text: their ids are written before the next text comes.
        self.flush(bytes);
        scanned
    }

    /// Writes the ids of `text`, special-token strings as their ids.
    pub(crate) fn text_with_specials(&mut self, text: &str) -> Result<()> {
        let encoder = self.encoder;
        encoder.specials.for_each_segment(text, |segment| match segment {
            Segment::Special(i) => {
                self.id(encoder.special_ids[i]);
                Ok(())
            }
            Segment::Text(t) => self.text(t),
        })
    }

    /// Writes one id (between texts: the batch is empty then).
    pub(crate) fn id(&mut self, id: u32) {
        self.ids.put(&[id], 1);
    }

    /// Ids written so far (by this sink, after those the output held already).
    pub(crate) fn written(&self) -> usize {
        self.ids.written()
    }

    /// Writes the ids of the batch's pieces, ranges of `bytes`, and empties it (`Encoder::emit_batch`).
    fn flush(&mut self, bytes: &[u8]) {
        self.encoder
            .emit_batch(&mut self.batch, bytes, self.cache, &mut self.ids, &mut self.scratch);
        self.ids.settle();
    }
}

/// Identifies encoders so a thread's cache is never used with another encoder's vocabulary.
static NEXT_ENCODER_ID: AtomicU64 = AtomicU64::new(1);

pub struct Encoder {
    id: u64,
    /// id → bytes, flattened: token `i` is `bytes[offsets[i]..offsets[i + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    pub(crate) byte_ids: [u32; 256],
    /// (left id, right id) → (rank, merged id).
    pub(crate) merges: FxHashMap<u64, (u32, u32)>,
    /// The merge of every pair of bytes (`merge::packed_rank`, at `merge::byte_pair_index`), for the first
    /// ranks of a piece: most of the pairs looked up in Chinese and Cyrillic text, whose letters are
    /// several bytes each (512 KB, which stays in cache where a hash map's buckets would be scattered).
    /// Measured (`encode_to_numpy`, one pinned core, fresh processes, 5 rounds, medians, first call): 4 MB
    /// of Chinese 70 → 78 MB/s, 20 MB of Russian 128 → 137, of English books 145 → 149 (a second run:
    /// Chinese 66 → 73, Russian 120 → 127, reviews 150 → 149).
    pub(crate) byte_pairs: Vec<u64>,
    /// Pre-tokens that encode to exactly one token.
    whole: TokenMap,
    specials: SpecialMatcher,
    special_ids: Vec<u32>,
    pretokenizer: Pretokenizer,
    cutter: Cutter,
    /// Safe cuts of text whose special-token strings are text (`encode_ordinary`): after such a string is
    /// no cut there (`<|endoftext|>!` ends in one pre-token `|>!`).
    ordinary_cutter: Cutter,
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
            return Err(Error::Vocabulary {
                merge_rank: None,
                message: "vocabulary too large".into(),
            });
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
            byte_ids[b as usize] = *ids.get([b].as_slice()).ok_or_else(|| Error::Vocabulary {
                merge_rank: None,
                message: format!("vocabulary has no token for the single byte {b:#04x}"),
            })?;
        }
        let mut merge_map: FxHashMap<u64, (u32, u32)> = FxHashMap::default();
        let mut joined = Vec::new();
        for (rank, (left, right)) in merges.iter().enumerate() {
            let lookup = |t: &[u8]| {
                ids.get(t).copied().ok_or_else(|| Error::Vocabulary {
                    merge_rank: Some(rank),
                    message: format!(
                        "merge {rank} ({:?} {:?}): {:?} is not in the vocabulary",
                        String::from_utf8_lossy(left),
                        String::from_utf8_lossy(right),
                        String::from_utf8_lossy(t)
                    ),
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
        let mut byte_pairs = vec![crate::merge::NO_MERGE; 1 << 16];
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let merge = merge_map.get(&pair_key(byte_ids[a as usize], byte_ids[b as usize]));
                byte_pairs[crate::merge::byte_pair_index(a, b)] = crate::merge::packed_rank(merge.copied());
            }
        }

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
        let ordinary_cutter = Cutter::new(SpecialMatcher::new(&[])?, &pretokenizer);
        let mut encoder = Encoder {
            id: NEXT_ENCODER_ID.fetch_add(1, Ordering::Relaxed),
            bytes,
            offsets,
            byte_ids,
            merges: merge_map,
            byte_pairs,
            whole: TokenMap::default(),
            specials,
            special_ids,
            pretokenizer,
            cutter,
            ordinary_cutter,
        };
        encoder.whole = encoder.single_token_pieces();
        Ok(encoder)
    }

    /// Tokens that BPE turns back into themselves, so a pre-token equal to one needs no merging.
    fn single_token_pieces(&self) -> TokenMap {
        let mut whole = TokenMap::default();
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

    /// The encoder of a tokenizer as the trainer returns it (merges as pairs of ids).
    pub fn from_bpe(bpe: Bpe, special_tokens: &[String], pattern: Option<&str>) -> Result<Self> {
        let merges: Vec<(Vec<u8>, Vec<u8>)> = bpe
            .merges
            .iter()
            .map(|&(a, b)| (bpe.vocab[a as usize].clone(), bpe.vocab[b as usize].clone()))
            .collect();
        Encoder::new(bpe.vocab, &merges, special_tokens, pattern)
    }

    /// Whether pre-tokenization runs on the built-in GPT-2 scanner (else on the general regex engine).
    pub fn uses_gpt2_scanner(&self) -> bool {
        self.pretokenizer.is_gpt2()
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
    pub(crate) fn rank(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.merges.get(&pair_key(a, b)).copied()
    }

    /// The ids of a piece `emit_batch` did not find in its home pair (or could not pack: `key` UNPACKED):
    /// the rest of the thread's cache, else (a piece new to the thread) the single-token table or the
    /// merges, cached now. None only for a piece too long to cache, whose ids are then in `scratch`.
    #[inline(always)]
    fn find_or_encode(
        &self,
        piece: &[u8],
        key: u128,
        cache: &mut ThreadCache,
        scratch: &mut Vec<u32>,
    ) -> Option<CachedIds> {
        // Longer pieces are rare in text, and each would cost the cache its own length twice over (key
        // and ids): they are merged afresh every time, so the cache's memory stays bounded on any input.
        let cacheable = piece.len() <= CACHED_PIECE_BYTES;
        let cached = match key {
            UNPACKED if cacheable => cache.pieces.get_unpacked(piece),
            UNPACKED => None,
            _ => cache.pieces.short.get(key),
        };
        if cached.is_some() {
            return cached;
        }
        scratch.clear();
        let single = match key {
            UNPACKED => self.whole.long.get(piece).copied(),
            _ => self.whole.get_packed(key),
        };
        match single {
            Some(id) => scratch.push(id),
            None => self.merge_piece(piece, scratch),
        }
        cacheable.then(|| cache.insert(piece, scratch))
    }

    /// Runs `f` with a sink that appends ids to `out` (`BatchSink`), on this thread's cache; `text_bytes`
    /// is about how much text `f` will encode, and `sample` how it begins (they size the output).
    #[inline(always)]
    fn with_sink<I: OutputId, T>(
        &self,
        out: &mut Vec<I>,
        text_bytes: usize,
        sample: &[u8],
        f: impl FnOnce(&mut BatchSink<'_, '_>) -> Result<T>,
    ) -> Result<T> {
        let target = I::target(out);
        if let IdTarget::U16(_) = target {
            Dtype::U16.check_holds(self.vocab_size())?;
        }
        let mut staging = Vec::new();
        self.with_cache(|cache| {
            cache.expect(text_bytes);
            let mut sink = BatchSink {
                encoder: self,
                batch: PieceBatch::new(),
                cache,
                ids: IdWriter::new(target, &mut staging, text_bytes, sample),
                scratch: Vec::new(),
            };
            let result = f(&mut sink);
            sink.ids.settle();
            result
        })
    }

    /// Writes the ids of the batch's pieces and empties it. For each piece, the INLINE_IDS lanes of the
    /// entry in its home pair are written at the write position, which then moves on by the entry's
    /// inline count if the piece was found there, else not at all: no branch on the count or on which
    /// slot held the piece. An entry with its ids in the arena has a block of BLOCK_IDS of them copied the
    /// same way; pieces not found so, or with more ids, go out of line (`emit_other`).
    #[inline(never)]
    fn emit_batch(
        &self,
        batch: &mut PieceBatch,
        bytes: &[u8],
        cache: &mut ThreadCache,
        ids: &mut IdWriter,
        scratch: &mut Vec<u32>,
    ) {
        // A batch never holds more (the min tells the compiler, so the indexes below need no checks).
        let n = batch.len.min(PIECE_BATCH);
        // Pieces are keyed and their pairs start loading PREFETCH_AHEAD pieces before they are probed.
        let mut keyed = 0;
        let mut key_start = batch.first_start;
        while keyed < n.min(PREFETCH_AHEAD) {
            key_start = batch.key_piece(keyed, key_start, bytes, &cache.pieces);
            keyed += 1;
        }
        let mut i = 0;
        while i < n {
            // Runs of pieces found in their home pairs, with the table and the output borrowed for the whole
            // run (so their addresses stay in registers); the piece that ends a run goes to `emit_other`.
            // Room for BLOCK_IDS lanes per piece: a run moves the write position on by at most that many a
            // piece.
            let stop = crate::arch::append_lanes(ids.out, (n - i) * BLOCK_IDS, |run| {
                let table = &cache.pieces.short;
                while i < n {
                    if keyed < n {
                        key_start = batch.key_piece(keyed, key_start, bytes, &cache.pieces);
                        keyed += 1;
                    }
                    let key = batch.keys[i];
                    let (found, cached) = table.probe_at(batch.homes[i], key);
                    let count = if found { cached.inline_count() } else { 0 };
                    run.put(&cached.inline_lanes(), count);
                    i += 1;
                    if count == 0 {
                        // Ids in the arena: a block of them copied here too, unless there are more.
                        match cache.arena_block(&cached) {
                            Some((block, len)) if found => run.put(block, len),
                            _ => return Some((key, found.then_some(cached))),
                        }
                    }
                }
                None
            });
            if let Some((key, cached)) = stop {
                let (start, end) = batch.span(i - 1);
                self.emit_other(&bytes[start..end], key, cached, cache, ids, scratch);
            }
        }
        if n > 0 {
            batch.first_start = batch.ends[n - 1];
        }
        batch.len = 0;
    }

    /// Writes the ids of a piece `emit_batch` did not find in its home pair (`cached` None) or found with
    /// its ids in the arena.
    #[inline(never)]
    fn emit_other(
        &self,
        piece: &[u8],
        key: u128,
        cached: Option<CachedIds>,
        cache: &mut ThreadCache,
        ids: &mut IdWriter,
        scratch: &mut Vec<u32>,
    ) {
        match cached.or_else(|| self.find_or_encode(piece, key, cache, scratch)) {
            Some(cached) => ids.put_lanes(cache.lanes(&cached)),
            None => ids.put_slice(scratch),
        }
    }

    /// Sizes each of `pool`'s threads' caches for its share of `text_bytes` of text about to be encoded
    /// there in pieces (`ThreadCache::expect`): a file reaches the encoders chunk by chunk, a batch or
    /// documents run by run, a long text part by part, each too small for the sizing to see how much text
    /// the thread will meet. Measured (`encode_files` of 40 MB of documents, fresh processes, 9 rounds,
    /// medians, 2 threads): `.txt` 143 → 134 ms, `.jsonl.zst` 183 → 172, parquet 161 → 158; 1 thread (5
    /// rounds): `.txt` 198 → 183, `.jsonl.zst` 211 → 201. `encode_batch_to_numpy` of 20 MB of English in
    /// 4 KB documents, first call (fresh processes, 5 rounds, medians): 2 threads 183 → 220 MB/s (a second
    /// A/B: 210 → 225), 1 thread 145 → 166.
    pub(crate) fn expect_text(&self, text_bytes: u64, pool: &rayon::ThreadPool) {
        let share = usize::try_from(text_bytes).unwrap_or(usize::MAX) / pool.current_num_threads().max(1);
        if outgrows_first_table(share) {
            pool.broadcast(|_| self.with_cache(|cache| cache.expect(share)));
        }
    }

    /// Runs `f` with this thread's cache for this encoder.
    fn with_cache<T>(&self, f: impl FnOnce(&mut ThreadCache) -> T) -> T {
        THREAD_CACHES.with(|cell| match cell.try_borrow_mut() {
            Ok(mut caches) => f(cache_for(&mut caches, self.id)),
            // Only re-entrancy could get here; a private cache keeps it correct.
            Err(_) => f(&mut ThreadCache::new(self.id)),
        })
    }

    /// Encodes `text` on the calling thread, appending ids to `out`.
    pub fn encode_into<I: OutputId>(&self, text: &str, out: &mut Vec<I>) -> Result<()> {
        self.with_sink(out, text.len(), text.as_bytes(), |sink| sink.text_with_specials(text))
    }

    /// Encodes ordinary text only: special-token strings are treated as text.
    pub fn encode_ordinary_into<I: OutputId>(&self, text: &str, out: &mut Vec<I>) -> Result<()> {
        self.with_sink(out, text.len(), text.as_bytes(), |sink| sink.text(text))
    }

    /// `encode_into` (`specials`) or `encode_ordinary_into` of a text given as code units: the units are
    /// made UTF-8 `part_units` at a time (UNITS_AT_ONCE: a part that stays in L2), and the text so far is
    /// encoded up to its last safe cut (the `Cutter`'s, for text with or without special tokens), the
    /// rest carried over. The ids are those of the whole text's UTF-8, which is never held: a large str's
    /// (of Latin-1, UCS-2 or UCS-4 units) would be as large again in fresh memory, which CPython fills
    /// twice over. A unit that is no character is `Error::NotUnicode`.
    pub fn encode_units_into<I: OutputId>(
        &self,
        units: CodeUnits<'_>,
        specials: bool,
        part_units: usize,
        out: &mut Vec<I>,
    ) -> Result<()> {
        let part_units = part_units.max(1);
        let not_unicode = |index| Error::NotUnicode { index };
        let cutter = if specials { &self.cutter } else { &self.ordinary_cutter };
        let total = units.len();
        let mut text = Vec::with_capacity(2 * part_units);
        let mut from = total.min(part_units);
        units.append_utf8(0, from, &mut text).map_err(not_unicode)?;
        // The text's UTF-8 size, guessed from its first part (it sizes the output and the cache).
        let text_bytes = (text.len() as f64 * total as f64 / from.max(1) as f64) as usize;
        let sample = text[..text.len().min(ID_SAMPLE_BYTES)].to_vec();
        self.with_sink(out, text_bytes, &sample, |sink| {
            let put = |sink: &mut BatchSink<'_, '_>, part: &[u8]| {
                // Whole characters only: the units were made UTF-8 and the cuts fall between characters.
                let part = crate::arch::utf8_str(part).expect("UTF-8 made from characters, cut between them");
                if specials {
                    sink.text_with_specials(part)
                } else {
                    sink.text(part)
                }
            };
            // A cut is looked for once the text held reaches `look_at` bytes; where there is none, not
            // again before it has doubled (a text with no cut at all is then looked at O(n) in all).
            let mut look_at = part_units;
            while from < total {
                if text.len() >= look_at {
                    match cutter.cut(&text) {
                        Some(cut) => {
                            put(sink, &text[..cut])?;
                            text.drain(..cut);
                            look_at = part_units;
                        }
                        None => look_at = 2 * text.len(),
                    }
                }
                let to = (from + part_units).min(total);
                units.append_utf8(from, to, &mut text).map_err(not_unicode)?;
                from = to;
            }
            put(sink, &text)
        })
    }

    /// Encodes documents on the calling thread, appending to `out` per document `encode_ordinary` and
    /// then `end_id` (when there is one).
    pub fn encode_documents_into<I: OutputId>(
        &self,
        docs: &[&str],
        end_id: Option<u32>,
        out: &mut Vec<I>,
    ) -> Result<()> {
        let text_bytes = docs.iter().map(|d| d.len()).sum();
        let sample = docs.first().map_or(&[][..], |d| d.as_bytes());
        self.with_sink(out, text_bytes, sample, |sink| {
            for doc in docs {
                sink.text(doc)?;
                if let Some(id) = end_id {
                    sink.id(id);
                }
            }
            Ok(())
        })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_as(text)
    }

    /// `encode`, the ids as `I`.
    pub fn encode_as<I: OutputId>(&self, text: &str) -> Result<Vec<I>> {
        let mut out = Vec::new();
        self.encode_into(text, &mut out)?;
        Ok(out)
    }

    /// Encodes a large text in parallel on `pool`; the result equals `encode`. Ids come back per part,
    /// in order, so the caller can write them anywhere without another copy.
    pub fn encode_parts<I: OutputId>(&self, text: &str, pool: &rayon::ThreadPool) -> Result<Vec<Vec<I>>> {
        if text.len() <= PARALLEL_CHUNK_BYTES || pool.current_num_threads() == 1 {
            return Ok(vec![self.encode_as(text)?]);
        }
        let parts = split_at_safe_cuts(text, &self.cutter, PARALLEL_CHUNK_BYTES);
        self.expect_text(text.len() as u64, pool);
        crate::threads::map_sticky(pool, &parts, |p| self.encode_as(p))
            .into_iter()
            .collect()
    }

    /// Encodes many texts in parallel on `pool`, special-token strings as their ids: each text's ids equal
    /// `encode`'s. Runs of consecutive texts are encoded by one sink each (`BatchSink`), so a batch of
    /// short texts costs what their concatenation would.
    pub fn encode_batch<S: AsRef<str> + Sync, I: OutputId>(
        &self,
        texts: &[S],
        pool: &rayon::ThreadPool,
    ) -> Result<BatchIds<I>> {
        let total = texts.iter().map(|t| t.as_ref().len()).sum();
        self.expect_text(total as u64, pool);
        let runs = crate::records::runs(texts, run_bytes(total, pool.current_num_threads()));
        let encoded = crate::threads::map_sticky(pool, &runs, |run| {
            let bytes = run.iter().map(|t| t.as_ref().len()).sum();
            self.encode_run(run.len(), bytes, |i| Ok(run[i].as_ref()))
        })
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        Ok(BatchIds::of_runs(encoded, texts.len()))
    }

    /// The ids of `count` texts of `bytes` in all (`text(i)`, each encoded as `encode` does) in one sink
    /// (`BatchSink`), and where each text's ids end. Each text is asked for once (a text given as bytes
    /// is checked to be UTF-8 then), one text ahead, so that its first bytes start loading
    /// (`prefetch_start`) while the one before is encoded; its error, if any, comes in its turn.
    pub(crate) fn encode_run<'t, I: OutputId>(
        &self,
        count: usize,
        bytes: usize,
        text: impl Fn(usize) -> Result<&'t str>,
    ) -> Result<RunIds<I>> {
        let mut ids = Vec::new();
        let mut ends = Vec::with_capacity(count);
        let first = if count > 0 { Some(text(0)?) } else { None };
        let sample = first.map_or(&[][..], str::as_bytes);
        self.with_sink(&mut ids, bytes, sample, |sink| {
            let mut next = first.map(Ok);
            for i in 0..count {
                let current = next.take().unwrap_or_else(|| text(i));
                if i + 1 < count {
                    let upcoming = text(i + 1);
                    if let Ok(upcoming) = upcoming {
                        prefetch_start(upcoming);
                    }
                    next = Some(upcoming);
                }
                sink.text_with_specials(current?)?;
                ends.push(sink.written() as u64);
            }
            Ok(())
        })?;
        Ok((ids, ends))
    }
}

/// Bytes at the start of the next text of a batch that start loading while the one before is encoded.
const NEXT_TEXT_PREFETCH_BYTES: usize = 256;

/// Starts loading the first NEXT_TEXT_PREFETCH_BYTES of `text` into the CPU's cache (`arch::prefetch`).
/// The texts of a batch from Python are objects of their own, each somewhere else in memory, so the
/// scanner's first read of each waited on memory: for short texts (sentences), as long as encoding them.
#[inline(always)]
fn prefetch_start(text: &str) {
    let bytes = text.as_bytes();
    for at in (0..bytes.len().min(NEXT_TEXT_PREFETCH_BYTES)).step_by(64) {
        crate::arch::prefetch(&bytes[at]);
    }
}

/// Bytes of text per unit of parallel work over many texts (`Encoder::encode_batch`, documents, counting):
/// enough that a unit's setup costs nothing next to it, few enough that every thread gets several units.
pub(crate) fn run_bytes(total: usize, threads: usize) -> usize {
    (total / (4 * threads.max(1))).clamp(16 << 10, 256 << 10)
}

/// The ids of a run of texts (`Encoder::encode_run`), and where each text's ids end.
pub(crate) type RunIds<I> = (Vec<I>, Vec<u64>);

/// The ids of a batch of texts (`Encoder::encode_batch`): `parts` hold the ids of all the texts in
/// order, and text `i`'s ids are those from `ends[i - 1]` (0 for the first) to `ends[i]` of the parts
/// joined.
pub struct BatchIds<I = u32> {
    pub parts: Vec<Vec<I>>,
    pub ends: Vec<u64>,
}

impl<I> BatchIds<I> {
    /// The batch of runs of texts encoded in order (`Encoder::encode_run`), `texts` in all.
    pub(crate) fn of_runs(runs: impl IntoIterator<Item = RunIds<I>>, texts: usize) -> Self {
        let mut batch = BatchIds {
            parts: Vec::new(),
            ends: Vec::with_capacity(texts),
        };
        let mut before = 0u64;
        for (ids, ends) in runs {
            batch.ends.extend(ends.iter().map(|end| before + end));
            before += ids.len() as u64;
            batch.parts.push(ids);
        }
        batch
    }

    /// The ids of each text, in order (each lies within one part).
    pub fn texts(&self) -> impl Iterator<Item = &[I]> + '_ {
        let (mut part, mut part_start, mut start) = (0, 0u64, 0u64);
        self.ends.iter().map(move |&end| {
            while end > part_start + self.parts[part].len() as u64 {
                part_start += self.parts[part].len() as u64;
                part += 1;
            }
            let ids = &self.parts[part][(start - part_start) as usize..(end - part_start) as usize];
            start = end;
            ids
        })
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
        count_text(
            text,
            &SpecialMatcher::new(&specials).unwrap(),
            &Pretokenizer::Gpt2,
            &mut counts,
        )
        .unwrap();
        let bpe = train_from_counts(counts, vocab_size, &specials, &NoProgress).unwrap();
        Encoder::from_bpe(bpe, &specials, None).unwrap()
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
        for piece in [
            "the",
            " mats",
            "aaaaaaa",
            "aaaaaaaaaaaaaaaaaaaaaaa",
            "thethethe",
            "zz",
            " the",
        ] {
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
    fn merges_agree_with_the_definition_on_random_pieces() {
        let enc = trained(&"abab aab abba baab aaaa bbbb ab ba ".repeat(20), 300);
        let mut rng = 99u64;
        for _ in 0..300 {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let len = 1 + (rng >> 40) as usize % 400;
            let piece: Vec<u8> = (0..len)
                .map(|k| {
                    if (rng >> (k % 61)) & 1 == 1 || k % 7 == 3 {
                        b'a'
                    } else {
                        b'b'
                    }
                })
                .collect();
            let mut long: Vec<u32> = piece.iter().map(|&b| enc.byte_ids[b as usize]).collect();
            let mut wide = long.clone(); // the 64-bit positions used for pieces of 4 GiB and more
            enc.merge_long(&mut long, 0);
            enc.merge_long_with::<u64>(&mut wide, 0);
            assert_eq!(
                long,
                reference_piece(&enc, &piece),
                "{}",
                String::from_utf8_lossy(&piece)
            );
            assert_eq!(wide, long);
            // The short merger too, where the piece is short enough for it.
            let mut short = vec![7];
            enc.merge_piece(&piece, &mut short);
            assert_eq!(short[1..], long, "{}", String::from_utf8_lossy(&piece));
        }
    }

    #[test]
    fn round_trip_and_specials() {
        let enc = trained(&TEXT.repeat(3), 320);
        let text = "the cat<|endoftext|><|endoftext|> héllo 😀 wörld\n\n";
        let ids = enc.encode(text).unwrap();
        assert_eq!(ids.iter().filter(|&&i| i == 0).count(), 2);
        assert_eq!(
            enc.decode_bytes(ids.iter().map(|&i| i as u64)).unwrap(),
            text.as_bytes()
        );
        assert!(matches!(enc.decode_bytes([99_999]), Err(Error::UnknownTokenId(99_999))));
    }

    #[test]
    fn each_thread_is_sized_for_its_share_of_a_large_input_only() {
        let enc = trained(&TEXT.repeat(3), 320);
        let pool = crate::threads::pool(Some(2)).unwrap();
        let table_bytes = |enc: &Encoder| pool.broadcast(|_| enc.with_cache(|c| c.pieces.short.memory_bytes()));
        let first = table_bytes(&enc);
        enc.expect_text(100_000, &pool); // small: nothing to size
        assert_eq!(table_bytes(&enc), first);
        enc.expect_text(40_000_000, &pool);
        let sized = table_bytes(&enc);
        assert!(sized.iter().zip(&first).all(|(s, f)| s > f), "{sized:?} {first:?}");
        // The ids are those of an unsized cache.
        let big = TEXT.repeat(3_000);
        let ids = pool.install(|| enc.encode(&big).unwrap());
        assert_eq!(ids, trained(&TEXT.repeat(3), 320).encode(&big).unwrap());
    }

    #[test]
    fn parallel_calls_size_their_threads_for_the_whole_input() {
        // A large text in parts, a batch and documents: each thread meets runs or parts too small for the
        // sizing to see, so the call sizes every thread's cache for its share first. (The text repeats,
        // so its pieces alone would never grow the table.)
        let pool = crate::threads::pool(Some(2)).unwrap();
        let big = TEXT.repeat(6_000_000 / TEXT.len());
        let docs: Vec<&str> = big
            .as_bytes()
            .chunks(4096)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let calls: [&dyn Fn(&Encoder); 3] = [
            &|enc| drop(enc.encode_parts::<u32>(&big, &pool).unwrap()),
            &|enc| drop(enc.encode_batch::<_, u32>(&docs, &pool).unwrap()),
            &|enc| drop(enc.encode_documents::<u32>(&docs, None, &pool).unwrap()),
        ];
        for (k, call) in calls.iter().enumerate() {
            let enc = trained(&TEXT.repeat(3), 320);
            let table_bytes = || pool.broadcast(|_| enc.with_cache(|c| c.pieces.short.memory_bytes()));
            let first = table_bytes();
            call(&enc);
            let after = table_bytes();
            assert!(
                after.iter().zip(&first).all(|(a, f)| a > f),
                "call {k}: {after:?} {first:?}"
            );
        }
    }

    #[test]
    fn parallel_parts_equal_serial() {
        let enc = trained(&TEXT.repeat(3), 320);
        let big = TEXT.repeat(30_000);
        let pool = crate::threads::pool(Some(2)).unwrap();
        let parts = enc.encode_parts::<u32>(&big, &pool).unwrap();
        assert!(parts.len() > 1);
        assert_eq!(parts.concat(), enc.encode(&big).unwrap());
    }

    #[test]
    fn narrow_ids_are_the_wide_ones() {
        // Ids written as u16 (narrowed batch by batch on their way out) equal the u32 ones, in every way of
        // encoding: a text with special tokens and pieces of many ids, in parts, in a batch, as documents.
        let enc = trained(&TEXT.repeat(3), 320);
        let text = format!("{}<|endoftext|>{}", TEXT.repeat(30_000), "x".repeat(10_000));
        let wide = enc.encode(&text).unwrap();
        let narrow = |ids: &[u32]| ids.iter().map(|&id| id as u16).collect::<Vec<u16>>();
        assert_eq!(enc.encode_as::<u16>(&text).unwrap(), narrow(&wide));
        let pool = crate::threads::pool(Some(2)).unwrap();
        let parts = enc.encode_parts::<u16>(&text, &pool).unwrap();
        assert!(parts.len() > 1);
        assert_eq!(parts.concat(), narrow(&wide));
        let texts: Vec<&str> = text
            .as_bytes()
            .chunks(999)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let batch = enc.encode_batch::<_, u16>(&texts, &pool).unwrap();
        let wide_batch = enc.encode_batch::<_, u32>(&texts, &pool).unwrap();
        assert_eq!(batch.ends, wide_batch.ends);
        assert_eq!(batch.parts.concat(), narrow(&wide_batch.parts.concat()));
        let (mut ids, mut wide_ids) = (vec![7u16], vec![7u32]);
        enc.encode_documents_into(&texts, Some(3), &mut ids).unwrap();
        enc.encode_documents_into(&texts, Some(3), &mut wide_ids).unwrap();
        assert_eq!(ids, narrow(&wide_ids));
    }

    #[test]
    fn narrow_ids_are_refused_for_a_vocabulary_they_cannot_hold() {
        let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        vocab.extend((0..(1u32 << 16)).map(|i| format!("<t{i}>").into_bytes()));
        let enc = Encoder::new(vocab, &[], &[], None).unwrap();
        let err = enc.encode_as::<u16>("hello").unwrap_err().to_string();
        assert!(
            err.contains("uint16 cannot hold ids of a vocabulary of 65792 tokens"),
            "{err}"
        );
        assert_eq!(enc.encode_as::<u32>("hi").unwrap(), enc.encode("hi").unwrap());
    }

    #[test]
    fn a_batch_and_documents_give_each_text_its_own_ids() {
        let enc = trained(&TEXT.repeat(3), 320);
        // Empty texts (at the start, in runs, at the end), special tokens, and enough text for many runs.
        let mut texts: Vec<String> = vec![String::new(), "the cat<|endoftext|>sat".into(), String::new()];
        for i in 0..3000 {
            texts.push(TEXT[i % 40..].repeat(1 + i % 13));
            if i % 500 == 0 {
                texts.push(String::new());
            }
        }
        texts.push(String::new());
        let pool = crate::threads::pool(Some(2)).unwrap();
        let batch = enc.encode_batch::<_, u32>(&texts, &pool).unwrap();
        assert!(batch.parts.len() > 4, "{} runs", batch.parts.len());
        assert_eq!(batch.ends.len(), texts.len());
        let each: Vec<Vec<u32>> = texts.iter().map(|t| enc.encode(t).unwrap()).collect();
        assert_eq!(batch.texts().map(<[u32]>::to_vec).collect::<Vec<_>>(), each);
        assert_eq!(batch.parts.concat(), each.concat());

        let docs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut ids = vec![5];
        enc.encode_documents_into(&docs, Some(0), &mut ids).unwrap();
        let mut expected = vec![5];
        for d in &docs {
            enc.encode_ordinary_into(d, &mut expected).unwrap();
            expected.push(0);
        }
        assert_eq!(ids, expected);
        assert_eq!(
            enc.encode_documents::<u32>(&docs, Some(0), &pool).unwrap().concat(),
            expected[1..]
        );
    }

    #[test]
    fn joined_parts_are_the_parts_in_order() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        let parts: Vec<Vec<u32>> = (0..40u32)
            .map(|p| (0..(p * 37) % 50).map(|i| p * 1000 + i).collect())
            .collect();
        let joined: Vec<u32> = join_parts(&parts, &pool);
        assert_eq!(joined, parts.concat());
        assert!(join_parts::<u32>(&[], &pool).is_empty());
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
