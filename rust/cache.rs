//! Each thread's memory of pieces it has encoded, per encoder.

use crate::keys::PieceMap;

/// Cached multi-token pieces per thread before the cache is cleared (bounds memory on diverse text).
pub(crate) const CACHE_LIMIT: usize = 1 << 17;
/// The longest piece the cache keeps (longer ones are rare in text and are merged afresh each time).
pub(crate) const CACHED_PIECE_BYTES: usize = 4096;
/// Bytes of cached keys and ids per thread and encoder before the cache is cleared: with CACHE_LIMIT,
/// what bounds its memory on any text (2^17 long pieces would otherwise take gigabytes).
pub(crate) const CACHE_BYTES: usize = 32 << 20;
/// Slots of the direct-mapped cache of recent pieces (a power of two; 32 bytes each, 1 MB a thread and encoder).
/// One probe with no control bytes, for single- and multi-token pieces alike; measured on English text
/// with the GPT-2 vocabulary, 2^15 beat both 2^14 and 2^16 by 10-15%.
pub(crate) const HOT_SLOTS: usize = 1 << 15;
/// Marks a hot-cache value that is a single token id rather than a span of the arena.
pub(crate) const SINGLE: u64 = 1 << 63;

/// What one thread remembers between calls for one encoder: a direct-mapped cache of recent short
/// pieces (hit in a single probe, mostly from L1/L2), and the ids of pieces already merged, stored as
/// (start, len) spans of one arena so an entry costs no allocation of its own.
pub(crate) struct ThreadCache {
    pub(crate) owner: u64,
    pub(crate) hot: Vec<(u128, u64)>,
    pub(crate) spans: PieceMap<(u32, u32)>,
    arena: Vec<u32>,
    /// Bytes of the cached pieces' keys held outside the arena (long pieces only: short ones are packed).
    key_bytes: usize,
}

impl ThreadCache {
    pub(crate) fn new(owner: u64) -> Self {
        ThreadCache {
            owner,
            hot: vec![(0, 0); HOT_SLOTS],
            spans: PieceMap::default(),
            arena: Vec::new(),
            key_bytes: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn hot_slot(key: u128) -> usize {
        let mixed = ((key as u64) ^ ((key >> 64) as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> (64 - HOT_SLOTS.trailing_zeros())) as usize
    }

    #[inline(always)]
    pub(crate) fn span(&self, span: (u32, u32)) -> &[u32] {
        &self.arena[span.0 as usize..(span.0 + span.1) as usize]
    }

    /// Stores the ids of a merged piece; returns its span. Clearing the arena also clears the hot
    /// slots, which may point into it.
    pub(crate) fn insert(&mut self, piece: &[u8], ids: &[u32]) -> (u32, u32) {
        let bytes = self.key_bytes + piece.len() + 4 * (self.arena.len() + ids.len());
        if self.spans.len() >= CACHE_LIMIT || bytes > CACHE_BYTES {
            self.spans.clear();
            self.arena.clear();
            self.arena.shrink_to(CACHE_BYTES / 16);
            self.key_bytes = 0;
            self.hot.fill((0, 0));
        }
        if piece.len() > 15 {
            self.key_bytes += piece.len();
        }
        let span = (self.arena.len() as u32, ids.len() as u32);
        self.spans.insert_if_absent(piece, span);
        self.arena.extend_from_slice(ids);
        span
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
    fn caches_of_alternating_encoders_survive() {
        let mut caches = Vec::new();
        cache_for(&mut caches, 1).insert(b"ab", &[7]);
        cache_for(&mut caches, 2).insert(b"cd", &[8]);
        for _ in 0..3 {
            assert_eq!(cache_for(&mut caches, 1).spans.len(), 1);
            assert_eq!(cache_for(&mut caches, 2).spans.len(), 1);
        }
        for owner in 3..=5 {
            cache_for(&mut caches, owner);
        }
        assert_eq!(caches.iter().map(|c| c.owner).collect::<Vec<_>>(), [5, 4, 3, 2]);
    }
}
