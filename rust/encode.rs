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
use crate::stream::{open_text, Chunk, ChunkReader};

/// Pieces up to this many bytes merge with the simple quadratic scan, which is faster when short.
const SHORT_PIECE: usize = 96;
/// Cached pieces per call before the cache is cleared (bounds memory on long, diverse inputs).
const CACHE_LIMIT: usize = 1 << 16;
/// Inputs larger than this are split and encoded in parallel.
pub const PARALLEL_CHUNK_BYTES: usize = 1 << 20;
/// Chunk size when streaming a file: small enough that chunks in flight stay well under 100 MB.
const FILE_CHUNK_BYTES: usize = 2 << 20;

#[inline]
fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

pub struct Encoder {
    /// id → bytes, flattened: token `i` is `bytes[offsets[i]..offsets[i + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    byte_ids: [u32; 256],
    /// (left id, right id) → (rank, merged id).
    merges: FxHashMap<u64, (u32, u32)>,
    /// Pre-tokens that encode to exactly one token.
    whole: FxHashMap<Box<[u8]>, u32>,
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
            bytes,
            offsets,
            byte_ids,
            merges: merge_map,
            whole: FxHashMap::default(),
            specials,
            special_ids,
            pretokenizer,
            cutter,
        };
        encoder.whole = encoder.single_token_pieces();
        Ok(encoder)
    }

    /// Tokens that BPE turns back into themselves, so a pre-token equal to one needs no merging.
    fn single_token_pieces(&self) -> FxHashMap<Box<[u8]>, u32> {
        let mut whole = FxHashMap::default();
        let mut out = Vec::new();
        for b in 0..=255u8 {
            whole.insert(Box::from([b].as_slice()), self.byte_ids[b as usize]);
        }
        let mut merged_ids: Vec<u32> = self.merges.values().map(|&(_, id)| id).collect();
        merged_ids.sort_unstable();
        merged_ids.dedup();
        for id in merged_ids {
            let token = self.token(id);
            out.clear();
            self.merge_piece(token, &mut out);
            if out.len() == 1 && out[0] == id {
                whole.entry(Box::from(token)).or_insert(id);
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

    /// Repeatedly merges the lowest-ranked pair (leftmost on ties) of `ids[start..]`.
    fn merge_short(&self, ids: &mut Vec<u32>, start: usize) {
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in start..ids.len().saturating_sub(1) {
                if let Some((rank, merged)) = self.rank(ids[i], ids[i + 1]) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, merged));
                    }
                }
            }
            let Some((_, i, merged)) = best else { return };
            ids[i] = merged;
            ids.remove(i + 1);
        }
    }

    /// The same merges in O(n log n): a linked list of symbols and a heap of (rank, position).
    fn merge_long(&self, ids: &mut Vec<u32>, start: usize) {
        const NONE: u32 = u32::MAX;
        let n = ids.len() - start;
        let mut sym: Vec<u32> = ids[start..].to_vec();
        let mut next: Vec<u32> = (1..=n as u32).map(|i| if i as usize == n { NONE } else { i }).collect();
        let mut prev: Vec<u32> = (0..n as u32).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
        let mut alive = vec![true; n];
        // Entries pack (rank, position) so the heap pops the lowest rank, then the leftmost position.
        let mut heap: BinaryHeap<Reverse<u64>> = BinaryHeap::with_capacity(n);
        let push = |heap: &mut BinaryHeap<Reverse<u64>>, sym: &[u32], next: &[u32], i: u32| {
            let j = next[i as usize];
            if j != NONE {
                if let Some((rank, _)) = self.rank(sym[i as usize], sym[j as usize]) {
                    heap.push(Reverse(((rank as u64) << 32) | i as u64));
                }
            }
        };
        for i in 0..n as u32 {
            push(&mut heap, &sym, &next, i);
        }
        while let Some(Reverse(entry)) = heap.pop() {
            let (rank, i) = ((entry >> 32) as u32, entry as u32 as usize);
            let j = next[i];
            if !alive[i] || j == NONE {
                continue;
            }
            // Stale unless the pair at i still has this rank (ranks identify pairs).
            match self.rank(sym[i], sym[j as usize]) {
                Some((r, merged)) if r == rank => {
                    sym[i] = merged;
                    alive[j as usize] = false;
                    let after = next[j as usize];
                    next[i] = after;
                    if after != NONE {
                        prev[after as usize] = i as u32;
                    }
                    if prev[i] != NONE {
                        push(&mut heap, &sym, &next, prev[i]);
                    }
                    push(&mut heap, &sym, &next, i as u32);
                }
                _ => continue,
            }
        }
        ids.truncate(start);
        let mut i = 0u32;
        while i != NONE {
            ids.push(sym[i as usize]);
            i = next[i as usize];
        }
    }

    /// Encodes one pre-token, through the single-token table and the cache.
    #[inline]
    fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>, cache: &mut FxHashMap<Box<[u8]>, Box<[u32]>>) {
        if let Some(&id) = self.whole.get(piece) {
            out.push(id);
            return;
        }
        if let Some(ids) = cache.get(piece) {
            out.extend_from_slice(ids);
            return;
        }
        let start = out.len();
        self.merge_piece(piece, out);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(piece.into(), out[start..].into());
    }

    /// Encodes `text` on the calling thread, appending ids to `out`.
    pub fn encode_into(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut cache = FxHashMap::default();
        self.specials.for_each_segment(text, |segment| {
            match segment {
                Segment::Special(i) => out.push(self.special_ids[i]),
                Segment::Text(t) => self
                    .pretokenizer
                    .for_each_piece(t, |piece| self.encode_piece(piece.as_bytes(), out, &mut cache))?,
            }
            Ok(())
        })
    }

    /// Encodes ordinary text only: special-token strings are treated as text.
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut cache = FxHashMap::default();
        self.pretokenizer.for_each_piece(text, |piece| self.encode_piece(piece.as_bytes(), out, &mut cache))
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
        input: &Path,
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
        let in_err = |e| Error::io(Some(input.to_path_buf()), e);
        let out_err = |e| Error::io(Some(output.to_path_buf()), e);
        let total = std::fs::metadata(input).map_err(in_err)?.len();
        let read = Arc::new(AtomicU64::new(0));
        let source = open_text(input, read.clone())?;
        let reader =
            ChunkReader::new(source, Some(input.to_path_buf()), &self.cutter, FILE_CHUNK_BYTES).lossy(lossy);
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
    fn missing_special_is_appended() {
        let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        vocab.push(b"ab".to_vec());
        let enc = Encoder::new(vocab, &[(b"a".to_vec(), b"b".to_vec())], &["<s>".into()], None).unwrap();
        assert_eq!(enc.vocab_size(), 258);
        assert_eq!(enc.encode("ab<s>").unwrap(), [256, 257]);
    }
}
