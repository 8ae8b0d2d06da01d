//! Applying the merges to one pre-token: a scan for short pieces, rank buckets for long ones. Both give
//! exactly CS336 §2.6's result (the lowest-ranked adjacent pair first, leftmost on ties).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

use crate::encode::Encoder;

/// Pieces up to this many bytes merge with the simple quadratic scan, which is faster when short.
pub(crate) const SHORT_PIECE: usize = 96;

/// A pair that does not merge, as `packed_rank` has it: above every pair that does.
pub(crate) const NO_MERGE: u64 = u64::MAX;

/// A pair's merge as one integer that orders pairs as the merges go (lowest rank first): rank << 32 |
/// merged id, or NO_MERGE.
#[inline(always)]
pub(crate) fn packed_rank(merge: Option<(u32, u32)>) -> u64 {
    match merge {
        Some((rank, merged)) => (rank as u64) << 32 | merged as u64,
        None => NO_MERGE,
    }
}

/// Where the pair of bytes `a`, `b` lies in `Encoder::byte_pairs`.
#[inline(always)]
pub(crate) fn byte_pair_index(a: u8, b: u8) -> usize {
    (a as usize) << 8 | b as usize
}

/// A symbol's index within one pre-token: `u32` (half the memory) unless the piece has 2^32 − 1 bytes or more.
trait Position: Copy + Eq + Ord + std::hash::Hash {
    const NONE: Self;
    fn at(i: usize) -> Self;
    fn index(self) -> usize;
}

impl Position for u32 {
    const NONE: Self = u32::MAX;
    #[inline(always)]
    fn at(i: usize) -> Self {
        debug_assert!(i < u32::MAX as usize);
        i as u32
    }
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
}

impl Position for u64 {
    const NONE: Self = u64::MAX;
    #[inline(always)]
    fn at(i: usize) -> Self {
        i as u64
    }
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
}

/// Positions of pending pairs, one bucket per merge rank, taken lowest rank first.
struct RankBuckets<P> {
    positions: FxHashMap<u32, Vec<P>>,
    ranks: BinaryHeap<Reverse<u32>>,
}

impl<P: Position> RankBuckets<P> {
    fn new() -> Self {
        RankBuckets {
            positions: FxHashMap::default(),
            ranks: BinaryHeap::new(),
        }
    }

    #[inline]
    fn push(&mut self, rank: u32, position: P) {
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
    fn pop(&mut self) -> Option<(u32, Vec<P>)> {
        let Reverse(rank) = self.ranks.pop()?;
        let mut positions = self.positions.remove(&rank).unwrap_or_default();
        if !positions.is_sorted() {
            positions.sort_unstable();
        }
        Some((rank, positions))
    }
}

impl Encoder {
    /// Applies the merges to one pre-token, appending its ids to `out`.
    pub(crate) fn merge_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        let start = out.len();
        out.extend(piece.iter().map(|&b| self.byte_ids[b as usize]));
        if piece.len() <= SHORT_PIECE {
            self.merge_short(out, start, piece);
        } else {
            self.merge_long(out, start);
        }
    }

    /// Repeatedly merges the lowest-ranked pair (leftmost on ties) of `ids[start..]`, the ids of the bytes
    /// of `piece`. Pair ranks are looked up once each and refreshed only next to a merge; those of the
    /// pairs of bytes it starts with come from `Encoder::byte_pairs`, a direct index, not the hash map.
    pub(crate) fn merge_short(&self, ids: &mut Vec<u32>, start: usize, piece: &[u8]) {
        let n = ids.len() - start;
        if n < 2 {
            return;
        }
        // ranks[i]: the pair at i, `packed_rank`.
        let mut ranks = [NO_MERGE; SHORT_PIECE];
        let pair_rank = |a: u32, b: u32| packed_rank(self.rank(a, b));
        for i in 0..n - 1 {
            ranks[i] = self.byte_pairs[byte_pair_index(piece[i], piece[i + 1])];
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

    /// The same merges for long pieces, in O(n log n) time on real and pathological input alike (a heap
    /// orders the distinct pending ranks; never quadratic). Symbols form a linked list; pending pairs wait in one bucket per rank. Ranks are
    /// processed in increasing order, which is safe because a merge only creates pairs containing the
    /// new token, and those rank after the merge that made it. Within a rank, positions are processed
    /// left to right, each re-checked first, which is exactly "merge every occurrence, leftmost first".
    /// Positions arrive nearly sorted and memory is touched in order, unlike with one big heap.
    pub(crate) fn merge_long(&self, ids: &mut Vec<u32>, start: usize) {
        if ids.len() - start < u32::MAX as usize {
            self.merge_long_with::<u32>(ids, start)
        } else {
            self.merge_long_with::<u64>(ids, start) // a single pre-token of 4 GiB or more
        }
    }

    #[allow(private_bounds)]
    pub(crate) fn merge_long_with<P: Position>(&self, ids: &mut Vec<u32>, start: usize) {
        let n = ids.len() - start;
        if n < 2 {
            return;
        }
        let mut sym: Vec<u32> = ids[start..].to_vec();
        let mut next: Vec<P> = (1..=n).map(|i| if i == n { P::NONE } else { P::at(i) }).collect();
        let mut prev: Vec<P> = (0..n).map(|i| if i == 0 { P::NONE } else { P::at(i - 1) }).collect();
        let mut buckets = RankBuckets::<P>::new();
        let push = |buckets: &mut RankBuckets<P>, sym: &[u32], next: &[P], i: P| {
            let j = next[i.index()];
            if j != P::NONE {
                if let Some((rank, _)) = self.rank(sym[i.index()], sym[j.index()]) {
                    buckets.push(rank, i);
                }
            }
        };
        for i in 0..n - 1 {
            push(&mut buckets, &sym, &next, P::at(i));
        }
        let mut alive = vec![true; n];
        while let Some((rank, positions)) = buckets.pop() {
            for &i in &positions {
                let j = next[i.index()];
                if !alive[i.index()] || j == P::NONE {
                    continue;
                }
                match self.rank(sym[i.index()], sym[j.index()]) {
                    Some((r, merged)) if r == rank => {
                        sym[i.index()] = merged;
                        alive[j.index()] = false;
                        let after = next[j.index()];
                        next[i.index()] = after;
                        if after != P::NONE {
                            prev[after.index()] = i;
                        }
                        let before = prev[i.index()];
                        if before != P::NONE {
                            push(&mut buckets, &sym, &next, before);
                        }
                        push(&mut buckets, &sym, &next, i);
                    }
                    _ => {}
                }
            }
        }
        ids.truncate(start);
        let mut i = P::at(0);
        while i != P::NONE {
            ids.push(sym[i.index()]);
            i = next[i.index()];
        }
    }
}
