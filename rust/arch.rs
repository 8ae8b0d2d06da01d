//! The core's only unsafe code: CPU instructions that std reaches only through `core::arch`. Each is
//! chosen at run time from what the CPU reports, with a safe portable path beside it (blocks.rs); the unit
//! tests in blocks.rs and pretokenize.rs check both give the same masks and pieces, and the fuzz target
//! `block_scanner_matches_fancy_regex` (tests/fuzz.rs) checks the pieces against the regex engine.
//! Prefetch hints (`prefetch`) change no value, only when memory arrives in the cache.
#![allow(unsafe_code)]

use crate::blocks::{BlockMasks, LeadTables, BLOCK};

/// Asks the CPU to start loading the cache line that holds `value` into L1, so a read of it a little
/// later does not wait on memory. A hint only: nothing is read into a register, nothing can fault, and
/// where the target has no such instruction it does nothing.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 (SSE, part of every x86-64 CPU) has no architectural effect: it loads no
    // register, writes nothing and raises no fault, whatever the address; here the address is that of a
    // live reference besides.
    unsafe {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(value as *const T as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Class masks of a block of `BLOCK` bytes with AVX2, or None where the CPU lacks it.
#[inline(always)]
pub(crate) fn block_masks(block: &[u8; BLOCK], leads: &LeadTables) -> Option<BlockMasks> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has just reported AVX2, the only feature `masks_avx2` is compiled for.
            return Some(unsafe { avx2::masks_avx2(block, leads) });
        }
    }
    let _ = (block, leads);
    None
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    use crate::blocks::{BlockMasks, LeadTables, BLOCK, LEAD2_BITS, LEAD3_BITS};

    /// Bit k of each mask describes `block[k]`: two 32-byte halves, each compared lane by lane and
    /// collapsed with `movemask`. Reads exactly the 64 bytes of `block` (unaligned loads of a
    /// `&[u8; 64]`, so every byte read is inside the array).
    #[target_feature(enable = "avx2")]
    pub(super) fn masks_avx2(block: &[u8; BLOCK], leads: &LeadTables) -> BlockMasks {
        // SAFETY: each table is 16 bytes, read whole by an unaligned 16-byte load.
        let by_low = unsafe { _mm_loadu_si128(leads.by_low.as_ptr() as *const __m128i) };
        let by_high = unsafe { _mm_loadu_si128(leads.by_high.as_ptr() as *const __m128i) };
        let (by_low, by_high) = (
            _mm256_broadcastsi128_si256(by_low),
            _mm256_broadcastsi128_si256(by_high),
        );
        let half = |offset: usize| -> [u32; 8] {
            // SAFETY: `offset` is 0 or 32, so the 32 bytes read lie within the 64-byte array.
            let v = unsafe { _mm256_loadu_si256(block.as_ptr().add(offset) as *const __m256i) };
            let in_range = |v: __m256i, lo: u8, hi: u8| {
                let lo = _mm256_set1_epi8(lo as i8);
                let hi = _mm256_set1_epi8(hi as i8);
                // lo <= v <= hi as unsigned bytes: max(v, lo) == v and min(v, hi) == v.
                _mm256_and_si256(
                    _mm256_cmpeq_epi8(_mm256_max_epu8(v, lo), v),
                    _mm256_cmpeq_epi8(_mm256_min_epu8(v, hi), v),
                )
            };
            let folded = _mm256_or_si256(v, _mm256_set1_epi8(0x20)); // 'A'..='Z' onto 'a'..='z'
            let letter = in_range(folded, b'a', b'z');
            let digit = in_range(v, b'0', b'9');
            let blank = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b' ' as i8));
            let space = _mm256_or_si256(blank, in_range(v, 0x09, 0x0D));
            let quote = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\'' as i8));
            // LeadTables::flags of every byte: the two nibbles looked up in 16-byte tables (a shuffle
            // reads the low four bits of each index byte; bytes below 0x80 find 0 in `by_high`).
            let nibble = _mm256_set1_epi8(0x0F);
            let low = _mm256_and_si256(v, nibble);
            let high = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
            let flags = _mm256_and_si256(_mm256_shuffle_epi8(by_low, low), _mm256_shuffle_epi8(by_high, high));
            let has = |bits: u8| {
                let zero = _mm256_setzero_si256();
                let none = _mm256_cmpeq_epi8(_mm256_and_si256(flags, _mm256_set1_epi8(bits as i8)), zero);
                _mm256_xor_si256(none, _mm256_set1_epi8(-1))
            };
            let (lead2, lead3) = (has(LEAD2_BITS), has(LEAD3_BITS));
            let bits = |m: __m256i| _mm256_movemask_epi8(m) as u32;
            [
                bits(letter),
                bits(digit),
                bits(space),
                bits(blank),
                bits(quote),
                bits(v),
                bits(lead2),
                bits(lead3),
            ]
        };
        let (lo, hi) = (half(0), half(32));
        let join = |k: usize| lo[k] as u64 | (hi[k] as u64) << 32;
        BlockMasks {
            letter: join(0),
            digit: join(1),
            space: join(2),
            blank: join(3),
            quote: join(4),
            non_ascii: join(5),
            letter_lead2: join(6),
            letter_lead3: join(7),
        }
    }
}
