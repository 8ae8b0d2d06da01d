//! Keys for hash maps of token pairs and of short byte strings.

use rustc_hash::FxHashMap;

use crate::arch::{TableMemory, Zeroable};

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

/// The longest piece a table keeps packed (`pack_wide`); longer ones keep their bytes outside.
pub(crate) const WIDE_PIECE_BYTES: usize = 31;

/// A piece of 16 to 31 bytes packed into two integers: bytes 0..16 in the first; bytes 16.. in the
/// second's low bytes (read with one load that ends at the piece's end, shifted), the length in its top
/// byte.
#[inline]
pub(crate) fn pack_wide(piece: &[u8]) -> Option<WideKey> {
    let n = piece.len();
    if !(16..=WIDE_PIECE_BYTES).contains(&n) {
        return None;
    }
    let first = u128::from_le_bytes(piece[..16].try_into().expect("16 bytes"));
    let last = u128::from_le_bytes(piece[n - 16..].try_into().expect("16 bytes"));
    // The last load's top n - 16 bytes are the piece's bytes 16..n (none when n is 16).
    let rest = last.checked_shr(8 * (32 - n as u32)).unwrap_or(0);
    Some([first, rest | (n as u128) << 120])
}

/// `LOW_BYTES[n]` keeps the low `n` bytes of a u128 (one load, where a shift by a variable count of a
/// 128-bit integer takes a handful of instructions and a conditional move).
const LOW_BYTES: [u128; 16] = {
    let mut masks = [0u128; 16];
    let mut n = 1;
    while n < 16 {
        masks[n] = (1u128 << (8 * n)) - 1;
        n += 1;
    }
    masks
};

/// The key the encoder gives a piece `pack_short` does not pack (`pack_short_in`): not zero (an empty
/// slot), and its length byte (0xFF) is no packed piece's, so no table holds it and probing for it finds
/// nothing, with no test of its own.
pub(crate) const UNPACKED: u128 = u128::MAX;

/// `pack_short(&text[start..end])` without branching on the length, where 16 bytes of `text` follow
/// `start` (one whole load, the bytes past the piece masked off); else out of line (`pack_short_near_end`).
#[inline(always)]
pub(crate) fn pack_short_in(text: &[u8], start: usize, end: usize) -> Option<u128> {
    let n = end - start;
    match text.get(start..start + 16) {
        Some(window) if n <= 15 => {
            let word = u128::from_le_bytes(window.try_into().expect("16 bytes"));
            Some((word & LOW_BYTES[n]) | (n as u128) << 120)
        }
        _ => pack_short_near_end(text, start, end),
    }
}

/// `pack_short_in` for a piece in a text's last 16 bytes: one load of the 16 bytes that end where the
/// piece does, shifted down (each text of a batch and each record of a corpus ends in such pieces: a
/// fifth of the pieces of 100-byte texts); `pack_short` for a longer piece or a text shorter than a load.
/// Out of line, so the encoder's loop stays as small as it is.
#[cold]
#[inline(never)]
fn pack_short_near_end(text: &[u8], start: usize, end: usize) -> Option<u128> {
    let n = end - start;
    match end.checked_sub(16).and_then(|from| text.get(from..end)) {
        Some(window) if n <= 15 => {
            let word = u128::from_le_bytes(window.try_into().expect("16 bytes"));
            // The piece's bytes are the window's last n (none for an empty piece: a shift by 128 bits).
            Some(word.checked_shr(8 * (16 - n as u32)).unwrap_or(0) | (n as u128) << 120)
        }
        _ => pack_short(&text[start..end]),
    }
}

/// The slot of a packed piece in a table of `slots` slots (a power of two): its two halves mixed by one
/// multiplication, the top bits taken.
#[inline(always)]
pub(crate) fn slot_of(key: u128, slots: usize) -> usize {
    let mixed = ((key as u64) ^ ((key >> 64) as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> (64 - slots.trailing_zeros())) as usize
}

/// Pieces of up to this many bytes (nearly all pre-tokens of text) have their own 16-byte slots in a
/// `TokenMap`.
const SMALL_PIECE: u32 = 11;

/// One slot of the small-piece table: bytes 0..8 of the piece in `lo`, bytes 8..11 and the length (top
/// byte) in `hi`, and the token id. Sixteen bytes, four to a cache line: GPT-2's pieces of up to 11 bytes
/// take 2 MB at half load, where 32-byte slots would take 4 MB, more than a core's L2 cache.
#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
struct SmallSlot {
    lo: u64,
    hi: u32,
    id: u32,
}

/// Pre-token → token id, for the pieces that are one token: small pieces in `SmallSlot`s, other
/// packed pieces in a `PairTable`, longer ones in a hash map. Built once; only read while encoding.
pub(crate) struct TokenMap {
    /// One bit per hash of a packed piece: clear where no token hashes there, so most pieces that are
    /// not tokens (nearly every piece of Cyrillic text in GPT-2's vocabulary) are turned away by one
    /// access to 32 KB, which stays in L1, instead of a probe into the tables.
    filter: Vec<u64>,
    small: Vec<SmallSlot>,
    small_len: usize,
    short: PairTable<u32>,
    pub(crate) long: FxHashMap<Box<[u8]>, u32>,
}

impl Default for TokenMap {
    fn default() -> Self {
        TokenMap {
            filter: vec![0; FILTER_BITS / 64],
            small: vec![SmallSlot::default(); 16],
            small_len: 0,
            short: PairTable::default(),
            long: FxHashMap::default(),
        }
    }
}

/// Bits of a `TokenMap`'s filter (a power of two).
const FILTER_BITS: usize = 1 << 18;

impl TokenMap {
    /// The filter bit of a packed key.
    #[inline(always)]
    fn filter_bit(key: u128) -> usize {
        let mixed = ((key as u64).rotate_left(17) ^ (key >> 64) as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        (mixed >> (64 - FILTER_BITS.trailing_zeros())) as usize
    }

    /// The small-table form of a packed key of at most SMALL_PIECE bytes.
    #[inline(always)]
    fn small_key(key: u128) -> (u64, u32) {
        let len = (key >> 120) as u32;
        (key as u64, ((key >> 64) as u32 & 0x00FF_FFFF) | len << 24)
    }

    /// The first slot probed for a small key.
    #[inline(always)]
    fn small_home(&self, lo: u64, hi: u32) -> usize {
        let mixed = (lo ^ (hi as u64).rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> (64 - self.small.len().trailing_zeros())) as usize
    }

    /// The id of the packed piece `key` (`pack_short`), if it is a token.
    #[inline(always)]
    pub(crate) fn get_packed(&self, key: u128) -> Option<u32> {
        let bit = Self::filter_bit(key);
        if self.filter[bit / 64] >> (bit % 64) & 1 == 0 {
            return None;
        }
        if (key >> 120) as u32 > SMALL_PIECE {
            return self.short.get(key);
        }
        let (lo, hi) = Self::small_key(key);
        let mask = self.small.len() - 1;
        let mut i = self.small_home(lo, hi);
        loop {
            let slot = self.small[i];
            if slot.lo == lo && slot.hi == hi {
                return Some(slot.id);
            }
            if slot.hi == 0 {
                return None; // an empty slot: a real key's length makes `hi` non-zero
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `piece` → `id` unless `piece` is there already.
    pub(crate) fn insert_if_absent(&mut self, piece: &[u8], id: u32) {
        let Some(key) = pack_short(piece) else {
            self.long.entry(piece.into()).or_insert(id);
            return;
        };
        let bit = Self::filter_bit(key);
        self.filter[bit / 64] |= 1 << (bit % 64);
        if piece.len() as u32 > SMALL_PIECE {
            self.short.insert_if_absent(key, id);
            return;
        }
        if self.get_packed(key).is_some() {
            return;
        }
        if 2 * (self.small_len + 1) > self.small.len() {
            // At most half full: a probe that misses (most pieces of non-Latin text) ends within a slot or two.
            let grown = vec![SmallSlot::default(); 2 * self.small.len()];
            let old = std::mem::replace(&mut self.small, grown);
            for slot in old.into_iter().filter(|s| s.hi != 0) {
                self.put_small(slot);
            }
        }
        let (lo, hi) = Self::small_key(key);
        self.put_small(SmallSlot { lo, hi, id });
        self.small_len += 1;
    }

    fn put_small(&mut self, slot: SmallSlot) {
        let mask = self.small.len() - 1;
        let mut i = self.small_home(slot.lo, slot.hi);
        while self.small[i].hi != 0 {
            i = (i + 1) & mask;
        }
        self.small[i] = slot;
    }
}

/// Two slots of a `PairTable`, on one cache line (for slots of up to 32 bytes). Integers only, so zero
/// bytes are a pair of empty slots (`arch::Zeroable`).
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub(crate) struct Pair<K, V> {
    slots: [(K, V); 2],
}

/// A `PairTable`'s key: a piece packed into integers (`pack_short`, `pack_wide`), never all zeros (its
/// length is in it), so zero bytes mark an empty slot.
pub(crate) trait PackedKey: Copy + Eq + Default + Zeroable {
    /// The key's home pair in a table of `pairs` pairs (a power of two).
    fn home(self, pairs: usize) -> usize;
}

impl PackedKey for u128 {
    #[inline(always)]
    fn home(self, pairs: usize) -> usize {
        slot_of(self, pairs)
    }
}

/// A piece of 16 to 31 bytes packed into two integers (`pack_wide`).
pub(crate) type WideKey = [u128; 2];

impl PackedKey for WideKey {
    #[inline(always)]
    fn home(self, pairs: usize) -> usize {
        slot_of(self[0] ^ self[1].rotate_left(77), pairs)
    }
}

/// Packed short pieces (`pack_short`) → value, by open addressing: the key and its value sit side by
/// side in one slot, so a probe that finds its key reads one cache line, where a general hash map reads
/// a control group and then the entry. Slots come in pairs on one cache line and a key's walk starts at
/// its home pair: `probe` answers the common case (the key in its home pair) with one line read and no
/// branch on which slot holds it, so the encoder's loop runs without mispredicted jumps; `get` walks on
/// past full pairs for the rest. Key 0 marks an empty slot (a packed piece holds its non-zero length in
/// the top byte); at most half the slots are used, so nearly every key lies in its home pair.
pub(crate) struct PairTable<V: Zeroable, K: PackedKey = u128> {
    /// Zeroed memory (`arch::TableMemory`) is a table of empty pairs: key 0 marks an empty slot.
    pairs: TableMemory<Pair<K, V>>,
    len: usize,
}

impl<V: Zeroable + Default, K: PackedKey> Default for PairTable<V, K> {
    fn default() -> Self {
        PairTable::with_slots(16)
    }
}

impl<V: Zeroable + Default, K: PackedKey> PairTable<V, K> {
    /// An empty table of at least `slots` slots (a power of two), which grows as it fills.
    pub(crate) fn with_slots(slots: usize) -> Self {
        PairTable {
            pairs: TableMemory::zeroed((slots.next_power_of_two() / 2).max(8)),
            len: 0,
        }
    }

    #[inline(always)]
    fn home(&self, key: K) -> usize {
        key.home(self.pairs.len())
    }

    /// The index of `key`'s home pair, whose loading into the CPU's cache starts now (`arch::prefetch`),
    /// for a `probe_at` soon after.
    #[inline(always)]
    pub(crate) fn prefetch_home(&self, key: K) -> usize {
        let home = self.home(key);
        crate::arch::prefetch(&self.pairs[home]);
        home
    }

    /// `key`'s value if it is in pair `home`: (true, value); else (false, a value to ignore). `key` is a
    /// packed key or `UNPACKED`, never zero (which empty slots hold). `home` is `key`'s home pair from
    /// `prefetch_home`; where the table has grown or been cleared since, the key is just not found there.
    #[inline(always)]
    pub(crate) fn probe_at(&self, home: usize, key: K) -> (bool, V) {
        debug_assert!(key != K::default());
        let Some(Pair { slots: pair }) = self.pairs.get(home) else {
            return (false, V::default());
        };
        let (first, second) = (pair[0].0 == key, pair[1].0 == key);
        // Both values read, one kept without a jump (which slot holds a key is a coin toss to a predictor)
        // and without picking an address to load from, which would add a load's latency.
        let value = std::hint::select_unpredictable(second, pair[1].1, pair[0].1);
        (first | second, value)
    }

    /// `key`'s value (`key` non-zero).
    #[inline]
    pub(crate) fn get(&self, key: K) -> Option<V> {
        let mask = self.pairs.len() - 1;
        let mut i = self.home(key);
        loop {
            for &(k, v) in &self.pairs[i].slots {
                if k == key {
                    return Some(v);
                }
                if k == K::default() {
                    return None;
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Inserts `key` (non-zero) unless present.
    pub(crate) fn insert_if_absent(&mut self, key: K, value: V) {
        debug_assert!(key != K::default());
        if self.len + 1 > self.pairs.len() {
            self.rebuild(2 * self.pairs.len());
        }
        let mask = self.pairs.len() - 1;
        let mut i = self.home(key);
        loop {
            for slot in &mut self.pairs[i].slots {
                if slot.0 == key {
                    return;
                }
                if slot.0 == K::default() {
                    *slot = (key, value);
                    self.len += 1;
                    return;
                }
            }
            i = (i + 1) & mask;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Makes room for `entries` keys in all without growing (the table grows once, to the size it would
    /// reach by doubling, instead of being rebuilt at every doubling on the way).
    pub(crate) fn reserve(&mut self, entries: usize) {
        let mut pairs = self.pairs.len();
        while entries > pairs {
            pairs *= 2;
        }
        if pairs > self.pairs.len() {
            self.rebuild(pairs);
        }
    }

    /// Moves every key into fresh memory of `pairs` pairs (at least as many as it holds).
    fn rebuild(&mut self, pairs: usize) {
        let old = std::mem::replace(&mut self.pairs, TableMemory::zeroed(pairs));
        self.len = 0;
        for (k, v) in old.iter().flat_map(|pair| pair.slots) {
            if k != K::default() {
                self.insert_if_absent(k, v);
            }
        }
    }

    /// Bytes of the table's memory.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.pairs.len() * std::mem::size_of::<Pair<K, V>>()
    }

    /// Empties the table, keeping at most `slots` slots of its memory.
    pub(crate) fn clear(&mut self, slots: usize) {
        let pairs = (slots.next_power_of_two() / 2).max(8);
        if self.pairs.len() > pairs {
            self.pairs = TableMemory::zeroed(pairs);
        } else {
            self.pairs.fill(Pair::default());
        }
        self.len = 0;
    }
}

/// Byte string → value, with the packed fast paths: pieces of up to 15 bytes (`pack_short`) in `short`,
/// of 16 to 31 bytes (`pack_wide`: many words of Cyrillic or Greek, with their leading space) in `wide`,
/// the rare longer ones in a general hash map.
pub(crate) struct PieceMap<V: Zeroable> {
    pub(crate) short: PairTable<V>,
    wide: PairTable<V, WideKey>,
    long: FxHashMap<Box<[u8]>, V>,
}

impl<V: Zeroable + Default> PieceMap<V> {
    /// An empty map whose short-piece table starts with `slots` slots.
    pub(crate) fn with_slots(slots: usize) -> Self {
        PieceMap {
            short: PairTable::with_slots(slots),
            wide: PairTable::default(),
            long: FxHashMap::default(),
        }
    }

    /// The value of a piece `pack_short` does not pack (more than 15 bytes).
    #[inline]
    pub(crate) fn get_unpacked(&self, piece: &[u8]) -> Option<V> {
        match pack_wide(piece) {
            Some(key) => self.wide.get(key),
            None => self.long.get(piece).copied(),
        }
    }

    /// Starts loading where `get_unpacked(piece)` will look, for a piece of 16 to 31 bytes (out of the
    /// encoder's loop: most pieces are packed).
    #[inline(never)]
    pub(crate) fn prefetch_unpacked(&self, piece: &[u8]) {
        if let Some(key) = pack_wide(piece) {
            self.wide.prefetch_home(key);
        }
    }

    pub(crate) fn insert_if_absent(&mut self, piece: &[u8], value: V) {
        if let Some(key) = pack_short(piece) {
            self.short.insert_if_absent(key, value);
        } else if let Some(key) = pack_wide(piece) {
            self.wide.insert_if_absent(key, value);
        } else if !self.long.contains_key(piece) {
            self.long.insert(piece.into(), value);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.short.len() + self.wide.len() + self.long.len()
    }

    /// Bytes of the tables' memory (the long pieces' own bytes not included).
    pub(crate) fn memory_bytes(&self) -> usize {
        let long_entry = std::mem::size_of::<(Box<[u8]>, V)>() + 1; // and a control byte
        self.short.memory_bytes() + self.wide.memory_bytes() + self.long.capacity() * long_entry
    }

    /// Empties the map, keeping at most `slots` slots of each table's memory.
    pub(crate) fn clear(&mut self, slots: usize) {
        self.short.clear(slots);
        self.wide.clear(slots);
        self.long.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // The branch-free packing inside a text equals it, near the text's end as well, and in texts
        // shorter than a load.
        for len in [0u32, 1, 7, 15, 16, 17, 31, 64] {
            let text: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8 | 1).collect();
            for start in 0..text.len() {
                for end in start..=text.len() {
                    assert_eq!(
                        pack_short_in(&text, start, end),
                        pack_short(&text[start..end]),
                        "{len}: {start}..{end}"
                    );
                }
            }
        }
    }

    #[test]
    fn wide_keys_hold_every_byte_and_piece_maps_find_every_length() {
        let mut rng = 99u64;
        let mut next = || {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 60) as u8 // few byte values: many pieces share prefixes and suffixes
        };
        let pieces: Vec<Vec<u8>> = (0..30_000).map(|i| (0..1 + i % 40).map(|_| next()).collect()).collect();
        let mut map = PieceMap::<u32>::with_slots(16);
        let mut first: std::collections::HashMap<&[u8], u32> = Default::default();
        for (i, piece) in pieces.iter().enumerate() {
            let wide = pack_wide(piece);
            assert_eq!(wide.is_some(), (16..=31).contains(&piece.len()), "{piece:?}");
            if let Some([lo, hi]) = wide {
                let (lo, hi) = (lo.to_le_bytes(), hi.to_le_bytes());
                let n = piece.len();
                assert_eq!(&lo[..], &piece[..16]);
                assert_eq!(&hi[..n - 16], &piece[16..]);
                assert!(hi[n - 16..15].iter().all(|&b| b == 0));
                assert_eq!(hi[15] as usize, n);
            }
            map.insert_if_absent(piece, i as u32);
            first.entry(piece).or_insert(i as u32);
        }
        assert_eq!(map.len(), first.len());
        for piece in &pieces {
            let found = match pack_short(piece) {
                Some(key) => map.short.get(key),
                None => map.get_unpacked(piece),
            };
            assert_eq!(found, Some(first[piece.as_slice()]), "{piece:?}");
        }
        assert_eq!(map.get_unpacked(&[0xff; 20]), None);
        assert_eq!(map.get_unpacked(&[0xff; 40]), None);
        map.clear(16);
        assert_eq!((map.len(), map.get_unpacked(&pieces[20])), (0, None));
    }

    #[test]
    fn token_map_finds_pieces_of_every_length() {
        let mut map = TokenMap::default();
        let mut rng = 7u64;
        let pieces: Vec<Vec<u8>> = (0..20_000)
            .map(|i| {
                let len = 1 + i % 20; // small, packed and long pieces alike
                (0..len)
                    .map(|_| {
                        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        (rng >> 60) as u8 // few byte values: many pieces share prefixes
                    })
                    .collect()
            })
            .collect();
        let mut first: std::collections::HashMap<&[u8], u32> = Default::default();
        for (id, piece) in pieces.iter().enumerate() {
            map.insert_if_absent(piece, id as u32);
            first.entry(piece).or_insert(id as u32);
        }
        for piece in &pieces {
            let found = match pack_short(piece) {
                Some(key) => map.get_packed(key),
                None => map.long.get(piece.as_slice()).copied(),
            };
            assert_eq!(found, Some(first[piece.as_slice()]), "{piece:?}");
        }
        for absent in [
            &b"\xff\xff"[..],
            b"\xff\xfe\xfd\xfc\xfb\xfa\xf9\xf8\xf7\xf6",
            b"\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
        ] {
            assert_eq!(map.get_packed(pack_short(absent).unwrap()), None);
        }
    }

    #[test]
    fn pair_table_finds_what_it_holds_through_growth() {
        // Enough keys that the table grows from the allocator's memory to huge-page memory (arch.rs).
        let keys: Vec<u128> = (1..70_000u128)
            .map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1 << 120)
            .collect();
        let mut pairs = PairTable::<u32>::default();
        for (i, &k) in keys.iter().enumerate() {
            for value in [i as u32, 0] {
                // A second insert keeps the first value.
                pairs.insert_if_absent(k, value);
            }
        }
        assert_eq!(pairs.len(), keys.len());
        let mut in_home_pair = 0;
        for (i, &k) in keys.iter().enumerate() {
            assert_eq!(pairs.get(k), Some(i as u32));
            if let (true, value) = pairs.probe_at(pairs.prefetch_home(k), k) {
                assert_eq!(value, i as u32);
                in_home_pair += 1;
            }
        }
        // At most half full: nearly every key is in its home pair.
        assert!(in_home_pair * 10 > keys.len() * 9, "{in_home_pair} of {}", keys.len());
        let absent = 7 << 120;
        let probe = |pairs: &PairTable<u32>, k| pairs.probe_at(pairs.prefetch_home(k), k).0;
        assert_eq!((pairs.get(absent), probe(&pairs, absent)), (None, false));
        assert!(!probe(&pairs, UNPACKED), "no piece is packed as UNPACKED");
        // Home pairs found before the table grew: a key probed there is found with its own value or
        // not found, never mistaken for another.
        let mut small = PairTable::<u32>::default();
        small.insert_if_absent(keys[0], 0);
        let stale: Vec<usize> = keys.iter().map(|&k| small.prefetch_home(k)).collect();
        for (i, &k) in keys.iter().enumerate() {
            small.insert_if_absent(k, i as u32);
        }
        for (i, (&k, &home)) in keys.iter().zip(&stale).enumerate() {
            let (found, value) = small.probe_at(home, k);
            assert!(!found || value == i as u32, "key {i}");
        }
        // Room made ahead: the keys held stay found, and the table does not grow until that many are in.
        let mut reserved = PairTable::<u32>::default();
        for (i, &k) in keys[..100].iter().enumerate() {
            reserved.insert_if_absent(k, i as u32);
        }
        reserved.reserve(40_000);
        let memory = reserved.memory_bytes();
        assert!(memory >= 40_000 * 2 * std::mem::size_of::<(u128, u32)>());
        for (i, &k) in keys[..40_000].iter().enumerate() {
            reserved.insert_if_absent(k, i as u32);
        }
        assert_eq!((reserved.len(), reserved.memory_bytes()), (40_000, memory));
        assert!(keys[..40_000]
            .iter()
            .enumerate()
            .all(|(i, &k)| reserved.get(k) == Some(i as u32)));
        reserved.reserve(10); // never shrinks
        assert_eq!(reserved.memory_bytes(), memory);
        for slots in [64, 1 << 20] {
            // Cleared to fresh memory (fewer slots) or in place.
            pairs.clear(slots);
            assert_eq!(
                (pairs.len(), pairs.get(keys[0]), probe(&pairs, keys[0])),
                (0, None, false)
            );
            pairs.insert_if_absent(keys[1], 5);
            assert_eq!(
                (pairs.len(), pairs.get(keys[1]), pairs.get(keys[0])),
                (1, Some(5), None)
            );
        }
    }
}
