//! Keys for hash maps of token pairs and of short byte strings.

use rustc_hash::FxHashMap;

/// A pair of token ids as one integer (left id in the high half): the key of the merge table and of
/// the trainer's pair counts.
#[inline]
pub(crate) fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// The (left, right) ids of a `pair_key`.
#[inline]
pub(crate) fn split_key(key: u64) -> (u32, u32) {
    ((key >> 32) as u32, key as u32)
}

/// Pieces of up to 15 bytes (nearly all of them) are keyed by their bytes and length packed into one
/// integer: hashing and comparing it is far cheaper than hashing and `memcmp`-ing a byte slice. Bytes
/// are read with whole-word loads (the tail through an overlapping load, shifted), not one by one:
/// bits 0..64 hold bytes 0..8, bits 64..120 bytes 8..15, bits 120..128 the length.
#[inline(always)]
pub(crate) fn pack_short(piece: &[u8]) -> Option<u128> {
    let n = piece.len();
    if n > 15 {
        return None;
    }
    let (lo, hi) = if n >= 8 {
        let lo = u64::from_le_bytes(piece[..8].try_into().unwrap());
        let hi = if n == 8 {
            0
        } else {
            u64::from_le_bytes(piece[n - 8..].try_into().unwrap()) >> (8 * (16 - n))
        };
        (lo, hi)
    } else if n >= 4 {
        let first = u32::from_le_bytes(piece[..4].try_into().unwrap()) as u64;
        let rest = if n == 4 {
            0
        } else {
            (u32::from_le_bytes(piece[n - 4..].try_into().unwrap()) >> (8 * (8 - n))) as u64
        };
        (first | rest << 32, 0)
    } else {
        (
            piece
                .iter()
                .enumerate()
                .fold(0u64, |acc, (i, &b)| acc | (b as u64) << (8 * i)),
            0,
        )
    };
    Some(((n as u128) << 120) | (hi as u128) << 64 | lo as u128)
}

/// Byte string → value, with the packed fast path for short keys.
pub(crate) struct PieceMap<V> {
    pub(crate) short: FxHashMap<u128, V>,
    pub(crate) long: FxHashMap<Box<[u8]>, V>,
}

impl<V> Default for PieceMap<V> {
    fn default() -> Self {
        PieceMap {
            short: FxHashMap::default(),
            long: FxHashMap::default(),
        }
    }
}

impl<V> PieceMap<V> {
    pub(crate) fn insert_if_absent(&mut self, piece: &[u8], value: V) {
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

    pub(crate) fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    pub(crate) fn clear(&mut self) {
        self.short.clear();
        self.long.clear();
    }
}
