//! Each thread's memory of pieces it has encoded, per encoder.

use crate::keys::{PieceMap, WIDE_PIECE_BYTES};

/// Cached pieces per thread before the cache is cleared (bounds memory on diverse text).
pub(crate) const CACHE_LIMIT: usize = 1 << 17;
/// The longest piece the cache keeps (longer ones are rare in text and are merged afresh each time).
pub(crate) const CACHED_PIECE_BYTES: usize = 4096;
/// Bytes of the cache per thread and encoder (its tables' memory, the keys of long pieces, the arena's ids)
/// before it is cleared: with CACHE_LIMIT, what bounds its memory on any text (2^17 long pieces would
/// otherwise take gigabytes).
pub(crate) const CACHE_BYTES: usize = 32 << 20;
/// Slots of a new cache's table: what a few megabytes of text fill, so a first call does not rehash
/// it many times over (1 MB; untouched pages cost nothing).
const FIRST_SLOTS: usize = 1 << 15;

/// The distinct pieces a cache is sized for when `text_bytes` of text are about to be encoded
/// (`ThreadCache::expect`): ~16K × √MB, below what English and web text reach, at most CACHE_LIMIT.
pub(crate) fn expected_pieces(text_bytes: usize) -> usize {
    ((16_000.0 * (text_bytes as f64 / 1e6).sqrt()) as usize).min(CACHE_LIMIT)
}

/// Whether `text_bytes` of text are expected to fill more than a new cache's table holds.
pub(crate) fn outgrows_first_table(text_bytes: usize) -> bool {
    expected_pieces(text_bytes) > FIRST_SLOTS / 2
}

/// Ids a cache entry holds in its own slot (when the first is below 2^24, as in every real vocabulary);
/// pieces of more tokens keep theirs in the arena.
pub(crate) const INLINE_IDS: usize = 4;
/// Pieces of up to this many tokens are copied out of the arena as one fixed-size block (then cut to
/// length), not by a call to memmove per piece: most of GPT-2's pieces of Cyrillic or Greek.
pub(crate) const BLOCK_IDS: usize = 16;

/// The ids of a cached piece, in 16 bytes. Inline (up to INLINE_IDS ids, a fourth one below 2^24): the
/// ids in the lanes from the first, the count in the top byte of the last lane; the lanes go to the output
/// as they are, that byte masked off, with no second memory access and no shifting of lanes. Otherwise the
/// count byte is 0 and the first two lanes hold the span of the arena (start, count). With its key, an
/// entry fills half a cache line. Integers only: zero bytes are an empty entry (`arch::Zeroable`).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CachedIds {
    lanes: [u32; INLINE_IDS],
}

/// Where `CachedIds` keeps the inline count: the top byte of its last lane.
const COUNT_SHIFT: u32 = 24;

impl CachedIds {
    /// How many ids the entry holds inline: 0 when they are in the arena.
    #[inline(always)]
    pub(crate) fn inline_count(&self) -> usize {
        (self.lanes[INLINE_IDS - 1] >> COUNT_SHIFT) as usize
    }

    /// The INLINE_IDS lanes of an inline entry (those past `inline_count` are zeros).
    #[inline(always)]
    pub(crate) fn inline_lanes(&self) -> [u32; INLINE_IDS] {
        let mut lanes = self.lanes;
        lanes[INLINE_IDS - 1] &= (1 << COUNT_SHIFT) - 1;
        lanes
    }
}

/// What one thread remembers between calls for one encoder: the ids of every piece it has encoded,
/// single tokens included, keyed by the piece. Text repeats its pieces (Zipf), so nearly every piece is
/// answered by one probe of this table, whose entries hold the ids themselves.
pub(crate) struct ThreadCache {
    pub(crate) owner: u64,
    pub(crate) pieces: PieceMap<CachedIds>,
    arena: Vec<u32>,
    /// Bytes of the cached pieces' keys held outside the tables (pieces of more than 31 bytes: shorter
    /// ones are packed into them).
    key_bytes: usize,
}

/// The ids of a cached piece (`ThreadCache::lanes`): the first `len` lanes of a block, or a slice.
pub(crate) enum Lanes<'c> {
    Inline([u32; INLINE_IDS], usize),
    Block(&'c [u32; BLOCK_IDS], usize),
    Slice(&'c [u32]),
}

// Two entries with their keys fill one cache line (keys::Pair).
const _: () = assert!(std::mem::size_of::<(u128, CachedIds)>() == 32);

impl ThreadCache {
    pub(crate) fn new(owner: u64) -> Self {
        ThreadCache {
            owner,
            pieces: PieceMap::with_slots(FIRST_SLOTS),
            arena: Vec::new(),
            key_bytes: 0,
        }
    }

    /// Sizes an empty cache for encoding `text_bytes` of text at once: its table is made at about the
    /// size the text's distinct pieces will need (`expected_pieces`), not grown to it through every
    /// doubling, each a rebuild into fresh zeroed memory. On English and web text (20 MB of books has 96K
    /// distinct pieces) the table ends no larger than growing would have made it; on text of fewer
    /// distinct pieces it is larger (at most CACHE_LIMIT's, 8 MB), of which only the pages written become
    /// memory. A cache in use is left as it is. Measured (`encode_to_numpy` on one pinned core, fresh
    /// processes, 7 rounds, medians): first call on 20 MB of English books 146 → 154 MB/s, of reviews
    /// 158 → 161; 4 MB of Chinese (nearly every piece new) unchanged.
    pub(crate) fn expect(&mut self, text_bytes: usize) {
        if self.pieces.len() == 0 && outgrows_first_table(text_bytes) {
            self.pieces.short.reserve(expected_pieces(text_bytes));
        }
    }

    /// Where the ids of a cached piece are, as fixed-size blocks of lanes where they fit in one.
    #[inline(always)]
    pub(crate) fn lanes(&self, cached: &CachedIds) -> Lanes<'_> {
        if cached.inline_count() != 0 {
            return Lanes::Inline(cached.inline_lanes(), cached.inline_count());
        }
        match self.arena_block(cached) {
            Some((block, len)) => Lanes::Block(block, len),
            None => {
                let (start, len) = (cached.lanes[0] as usize, cached.lanes[1] as usize);
                Lanes::Slice(&self.arena[start..start + len])
            }
        }
    }

    /// The ids of an entry that keeps them in the arena, as a block of BLOCK_IDS lanes (the first `len`
    /// its ids) where they fit in one; None for more ids or an inline entry. (The arena ends in BLOCK_IDS
    /// zeros, so every span's block is there.)
    #[inline(always)]
    pub(crate) fn arena_block(&self, cached: &CachedIds) -> Option<(&[u32; BLOCK_IDS], usize)> {
        let (start, len) = (cached.lanes[0] as usize, cached.lanes[1] as usize);
        if cached.inline_count() != 0 || len > BLOCK_IDS {
            return None;
        }
        let block = self.arena.get(start..start + BLOCK_IDS)?;
        Some((block.try_into().expect("BLOCK_IDS ids"), len))
    }

    /// Remembers the ids of a merged piece, first clearing the cache if it is full; returns the entry.
    pub(crate) fn insert(&mut self, piece: &[u8], ids: &[u32]) -> CachedIds {
        let bytes = self.key_bytes + piece.len() + 4 * (self.arena.len() + ids.len()) + self.pieces.memory_bytes();
        if self.pieces.len() >= CACHE_LIMIT || bytes > CACHE_BYTES {
            self.pieces.clear(2 * CACHE_LIMIT);
            self.arena.clear();
            self.arena.shrink_to(CACHE_BYTES / 16);
            self.key_bytes = 0;
        }
        if piece.len() > WIDE_PIECE_BYTES {
            self.key_bytes += piece.len();
        }
        let inline = match ids.len() {
            1..INLINE_IDS => true,
            INLINE_IDS => ids[INLINE_IDS - 1] < 1 << COUNT_SHIFT,
            _ => false,
        };
        let cached = if inline {
            let mut lanes = [0; INLINE_IDS];
            lanes[..ids.len()].copy_from_slice(ids);
            lanes[INLINE_IDS - 1] |= (ids.len() as u32) << COUNT_SHIFT;
            CachedIds { lanes }
        } else {
            // The arena's last BLOCK_IDS lanes are zeros (`arena_block`): the ids go in their place.
            self.arena.truncate(self.arena.len().saturating_sub(BLOCK_IDS));
            let start = self.arena.len() as u32;
            self.arena.extend_from_slice(ids);
            self.arena.resize(self.arena.len() + BLOCK_IDS, 0);
            CachedIds {
                lanes: [start, ids.len() as u32, 0, 0],
            }
        };
        self.pieces.insert_if_absent(piece, cached);
        cached
    }
}

/// Encoders a thread keeps caches for at once: two tokenizers used in turn (comparing them, say) each keep
/// their cache instead of clearing the other's on every call. The least recently used one goes first.
pub(crate) const CACHES_PER_THREAD: usize = 4;

thread_local! {
    /// This thread's caches, most recently used first.
    pub(crate) static THREAD_CACHES: std::cell::RefCell<Vec<ThreadCache>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Moves `owner`'s cache to the front of `caches` (making it if there is none, dropping the least
/// recently used one beyond `CACHES_PER_THREAD`) and returns it.
pub(crate) fn cache_for(caches: &mut Vec<ThreadCache>, owner: u64) -> &mut ThreadCache {
    match caches.iter().position(|c| c.owner == owner) {
        Some(0) => {}
        Some(i) => {
            let cache = caches.remove(i);
            caches.insert(0, cache);
        }
        None => {
            caches.truncate(CACHES_PER_THREAD - 1);
            caches.insert(0, ThreadCache::new(owner));
        }
    }
    &mut caches[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_ids_come_back_exactly_at_every_length() {
        // Lengths inline, copied as a block, and past a block; the last entries end the arena, where the
        // block copy would read past it and the plain copy is used.
        let mut cache = ThreadCache::new(1);
        let pieces: Vec<(Vec<u8>, Vec<u32>)> = (1..=20u32)
            .chain(1..=9)
            .enumerate()
            .map(|(i, n)| {
                (
                    format!("piece {i}").into_bytes(),
                    // Ids of every size: a first id of 2^24 or more is kept in the arena.
                    (0..n).map(|k| (1000 * i as u32 + k) << (i % 3 * 6)).collect(),
                )
            })
            .collect();
        let entries: Vec<CachedIds> = pieces.iter().map(|(p, ids)| cache.insert(p, ids)).collect();
        for ((_, ids), entry) in pieces.iter().zip(&entries) {
            let got = match cache.lanes(entry) {
                Lanes::Inline(lanes, len) => lanes[..len].to_vec(),
                Lanes::Block(lanes, len) => lanes[..len].to_vec(),
                Lanes::Slice(ids) => ids.to_vec(),
            };
            assert_eq!(got, *ids);
        }
    }

    #[test]
    fn an_empty_cache_is_sized_for_the_text_and_a_cache_in_use_is_not() {
        let mut cache = ThreadCache::new(1);
        let first = cache.pieces.short.memory_bytes();
        cache.expect(1_000); // a short text: the first table is enough
        assert_eq!(cache.pieces.short.memory_bytes(), first);
        cache.expect(20_000_000); // 20 MB: room for ~72K pieces, at most CACHE_LIMIT
        let sized = cache.pieces.short.memory_bytes();
        assert!(sized > first && sized <= 2 * CACHE_LIMIT * std::mem::size_of::<(u128, CachedIds)>());
        cache.insert(b"ab", &[7]);
        let mut used = ThreadCache::new(2);
        used.insert(b"ab", &[7]);
        used.expect(20_000_000);
        assert_eq!(used.pieces.short.memory_bytes(), first);
        assert_eq!(
            cache
                .pieces
                .short
                .get(crate::keys::pack_short(b"ab").unwrap())
                .map(|c| c.inline_count()),
            Some(1)
        );
    }

    #[test]
    fn caches_of_alternating_encoders_survive() {
        let mut caches = Vec::new();
        cache_for(&mut caches, 1).insert(b"ab", &[7]);
        cache_for(&mut caches, 2).insert(b"cd", &[8, 9, 10, 11]);
        for _ in 0..3 {
            assert_eq!(cache_for(&mut caches, 1).pieces.len(), 1);
            assert_eq!(cache_for(&mut caches, 2).pieces.len(), 1);
        }
        for owner in 3..=5 {
            cache_for(&mut caches, owner);
        }
        assert_eq!(caches.iter().map(|c| c.owner).collect::<Vec<_>>(), [5, 4, 3, 2]);
    }
}
