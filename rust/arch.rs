//! The core's only unsafe code: CPU instructions that std reaches only through `core::arch`, and the
//! system calls std has no wrapper for (`mmap`, `madvise`). Each instruction is chosen at run time from
//! what the CPU reports, with a safe portable path beside it (blocks.rs); the unit tests in blocks.rs and
//! pretokenize.rs check both give the same masks and pieces, and the fuzz target
//! `block_scanner_matches_fancy_regex` (tests/fuzz.rs) checks the pieces against the regex engine.
//! Prefetch hints (`prefetch`) change no value, only when memory arrives in the cache; `TableMemory` is
//! memory from the kernel (mmap) for the piece cache's table, aligned and advised for huge pages, and
//! `advise_huge_pages` gives the same advice for a large output about to be written; `start_writeback`
//! sends a file's written pages to disk ahead of its final sync;
//! `append_lanes` appends ids written into a Vec's spare capacity (its length set past them);
//! `utf8_string` makes a String of bytes the SIMD UTF-8 check (`utf8_str`) has just passed;
//! `json_string_stop` finds where a JSON string's text stops, 16 bytes at a time (SSE2, which every
//! x86-64 CPU has; checked against its byte-by-byte path in the tests, and through the JSON scanner
//! against serde_json by the fuzz target `json_line_scanner_answers_like_serde_json`);
//! `utf8_of_units` makes the UTF-8 of a str's code units many at a time (AVX-512, or
//! AVX2 with shuffle tables; checked against std in the tests here and in code_units.rs, and by the fuzz
//! target `text_as_code_units_encodes_as_its_utf8`).
#![allow(unsafe_code)]

use crate::blocks::portable_masks;
use crate::pretokenize::{for_each_gpt2_range, PieceSink};

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

/// `bytes` as a str where they are UTF-8, else the length of their longest UTF-8 prefix (what std's
/// `Utf8Error::valid_up_to` says). Checked with SIMD by the simdutf8 crate (AVX2 or SSE4.2, chosen at run
/// time; a scalar check elsewhere), which accepts exactly what std accepts: std's check goes about a byte
/// at a time through text that is not ASCII (measured on the development machine: 621 MB/s on the shared
/// Russian stories, 984 MB/s on the Chinese poems, against 7.4 and 14 GB/s; both run at memory speed on
/// English), a third of the time of encoding Russian bytes on one thread.
pub(crate) fn utf8_str(bytes: &[u8]) -> Result<&str, usize> {
    simdutf8::compat::from_utf8(bytes).map_err(|e| e.valid_up_to())
}

/// `bytes` as a String where they are UTF-8 (`utf8_str`'s check), else the bytes back with the length
/// of their longest UTF-8 prefix.
pub(crate) fn utf8_string(bytes: Vec<u8>) -> Result<String, (Vec<u8>, usize)> {
    match utf8_str(&bytes) {
        // SAFETY: `utf8_str` has just found all of `bytes` to be UTF-8 (`String::from_utf8` would check
        // them again, a byte at a time, undoing what the SIMD check saved).
        Ok(_) => Ok(unsafe { String::from_utf8_unchecked(bytes) }),
        Err(valid) => Err((bytes, valid)),
    }
}

/// Where a JSON string's text stops (json_line.rs): the index of the first quote, backslash or control
/// character (below 0x20) in `bytes`. On x86-64, SSE2 (part of every x86-64 CPU, so nothing to detect)
/// tests 16 bytes at a time into a mask whose lowest bit is the answer; elsewhere, and for the last
/// bytes, byte by byte (`json_string_stop_from`). (`memchr2` for the quote and backslash and a second
/// pass for control characters took 14.9 ms to find the text fields of 40.8 MB of JSON lines.)
#[inline]
pub(crate) fn json_string_stop(bytes: &[u8]) -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    // SAFETY: the build targets SSE2 (the cfg), which every x86-64 CPU has.
    return unsafe { sse2::json_string_stop(bytes) };
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    json_string_stop_from(bytes, 0)
}

/// `json_string_stop`, byte by byte from `at`.
#[inline]
fn json_string_stop_from(bytes: &[u8], at: usize) -> Option<usize> {
    bytes[at..]
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|i| at + i)
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
mod sse2 {
    use core::arch::x86_64::*;

    #[target_feature(enable = "sse2")]
    #[inline]
    pub(super) fn json_string_stop(bytes: &[u8]) -> Option<usize> {
        let quote = _mm_set1_epi8(b'"' as i8);
        let backslash = _mm_set1_epi8(b'\\' as i8);
        let control_max = _mm_set1_epi8(0x1F);
        let mut at = 0;
        for block in bytes.chunks_exact(16) {
            // SAFETY: an unaligned load of the 16 bytes of `block`, all inside the slice.
            let v = unsafe { _mm_loadu_si128(block.as_ptr() as *const __m128i) };
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, control_max), v); // v <= 0x1F, unsigned
            let stops = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                control,
            );
            let mask = _mm_movemask_epi8(stops) as u32;
            if mask != 0 {
                return Some(at + mask.trailing_zeros() as usize);
            }
            at += 16;
        }
        super::json_string_stop_from(bytes, at)
    }
}

/// The UTF-8 of the leading units of `units` (a str's Latin-1, UCS-2 or UCS-4 units) written from the start
/// of `dst`: (units taken, bytes written). Blocks of 32 units all below U+0800 become 32 16-bit words, a lead
/// byte and a second byte (the unit itself where it is ASCII, whose lead is then zero); blocks of 16 others,
/// 16 32-bit words of up to three bytes; one byte compress then drops the bytes a unit does not use (a block
/// all ASCII is narrowed instead). It stops at a block with a surrogate or a character past U+FFFF, with
/// fewer than 16 units or 64 bytes of `dst` left, and takes none where the CPU has neither AVX-512 (BW and
/// VBMI2: Ice Lake, Zen 4 and later) nor AVX2 (which packs with shuffle tables instead of the compress);
/// the caller goes on a unit at a time (code_units.rs, whose tests compare the two on every kind of text).
/// Measured (`encode_to_numpy` of a 20 MB str of Russian stories, one pinned core, later calls): made a unit
/// at a time, UTF-8 took 22% of the call.
pub(crate) fn utf8_of_units<U: SimdUnit>(units: &[U], dst: &mut [u8]) -> (usize, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_utf8::available() {
            // SAFETY: the CPU has the features the function is compiled for (checked just above).
            return unsafe { (U::AVX512)(units, dst) };
        }
        if avx2_utf8::available() {
            // SAFETY: as above, for AVX2.
            return unsafe { (U::AVX2)(units, dst) };
        }
    }
    let _ = (units, dst);
    (0, 0)
}

/// A code unit `utf8_of_units` takes: u8 (Latin-1), u16 (UCS-2) or u32 (UCS-4), with its paths for each
/// instruction set (functions compiled for those features, so unsafe to call without them).
pub(crate) trait SimdUnit: Sized {
    #[cfg(target_arch = "x86_64")]
    const AVX512: unsafe fn(&[Self], &mut [u8]) -> (usize, usize);
    #[cfg(target_arch = "x86_64")]
    const AVX2: unsafe fn(&[Self], &mut [u8]) -> (usize, usize);
}

impl SimdUnit for u8 {
    #[cfg(target_arch = "x86_64")]
    const AVX512: unsafe fn(&[u8], &mut [u8]) -> (usize, usize) = avx512_utf8::units_u8;
    #[cfg(target_arch = "x86_64")]
    const AVX2: unsafe fn(&[u8], &mut [u8]) -> (usize, usize) = avx2_utf8::units_u8;
}

impl SimdUnit for u16 {
    #[cfg(target_arch = "x86_64")]
    const AVX512: unsafe fn(&[u16], &mut [u8]) -> (usize, usize) = avx512_utf8::units_u16;
    #[cfg(target_arch = "x86_64")]
    const AVX2: unsafe fn(&[u16], &mut [u8]) -> (usize, usize) = avx2_utf8::units_u16;
}

impl SimdUnit for u32 {
    #[cfg(target_arch = "x86_64")]
    const AVX512: unsafe fn(&[u32], &mut [u8]) -> (usize, usize) = avx512_utf8::units_u32;
    #[cfg(target_arch = "x86_64")]
    const AVX2: unsafe fn(&[u32], &mut [u8]) -> (usize, usize) = avx2_utf8::units_u32;
}

/// Whether `utf8_of_units` takes blocks at all on this CPU (AVX-512 BW and VBMI2, or AVX2).
pub(crate) fn utf8_of_units_in_blocks() -> bool {
    #[cfg(target_arch = "x86_64")]
    return avx512_utf8::available() || avx2_utf8::available();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[cfg(target_arch = "x86_64")]
mod avx512_utf8 {
    use core::arch::x86_64::*;

    /// The bytes of `dst` each block's one store writes (its UTF-8 takes up to that many).
    const STORE: usize = 64;

    #[inline(always)]
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vbmi2")
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
    pub(super) fn units_u16(units: &[u16], dst: &mut [u8]) -> (usize, usize) {
        let (mut i, mut n) = (0, 0);
        while units.len() - i >= 16 && dst.len() - n >= STORE {
            // SAFETY (all reads and the store): 32 (or 16) units from `i` lie within `units`, as the
            // conditions say, and 64 bytes from `n` within `dst`.
            let out = unsafe { dst.as_mut_ptr().add(n) as *mut __m512i };
            if units.len() - i >= 32 {
                let v = unsafe { _mm512_loadu_si512(units.as_ptr().add(i) as *const __m512i) };
                if let Some((packed, len)) = two_byte_block(v) {
                    unsafe { _mm512_storeu_si512(out, packed) };
                    (i, n) = (i + 32, n + len);
                    continue;
                }
            }
            let v = unsafe { _mm256_loadu_si256(units.as_ptr().add(i) as *const __m256i) };
            match three_byte_block(_mm512_cvtepu16_epi32(v)) {
                Some((packed, len)) => {
                    unsafe { _mm512_storeu_si512(out, packed) };
                    (i, n) = (i + 16, n + len);
                }
                None => break,
            }
        }
        (i, n)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
    pub(super) fn units_u8(units: &[u8], dst: &mut [u8]) -> (usize, usize) {
        let (mut i, mut n) = (0, 0);
        while units.len() - i >= 32 && dst.len() - n >= STORE {
            // SAFETY: the 32 bytes from `i` lie within `units` (the loop's condition).
            let bytes = unsafe { _mm256_loadu_si256(units.as_ptr().add(i) as *const __m256i) };
            let Some((packed, len)) = two_byte_block(_mm512_cvtepu8_epi16(bytes)) else {
                break; // not reached: every Latin-1 unit is below U+0800
            };
            // SAFETY: the 64 bytes from `n` lie within `dst` (the loop's condition).
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().add(n) as *mut __m512i, packed) };
            (i, n) = (i + 32, n + len);
        }
        (i, n)
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
    pub(super) fn units_u32(units: &[u32], dst: &mut [u8]) -> (usize, usize) {
        let (mut i, mut n) = (0, 0);
        while units.len() - i >= 16 && dst.len() - n >= STORE {
            // SAFETY: the 16 units from `i` lie within `units` (the loop's condition).
            let v = unsafe { _mm512_loadu_si512(units.as_ptr().add(i) as *const __m512i) };
            let Some((packed, len)) = three_byte_block(v) else {
                break;
            };
            // SAFETY: the 64 bytes from `n` lie within `dst` (the loop's condition).
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().add(n) as *mut __m512i, packed) };
            (i, n) = (i + 16, n + len);
        }
        (i, n)
    }

    /// The UTF-8 of 32 units (16-bit lanes of `v`) in the low bytes of the result, and how many bytes it
    /// is; None where a unit is U+0800 or more.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
    #[inline]
    fn two_byte_block(v: __m512i) -> Option<(__m512i, usize)> {
        if _mm512_cmplt_epu16_mask(v, _mm512_set1_epi16(0x800)) != u32::MAX {
            return None;
        }
        let ascii = _mm512_cmplt_epu16_mask(v, _mm512_set1_epi16(0x80));
        if ascii == u32::MAX {
            // All ASCII (most blocks of English): each unit narrowed to its byte, with no compress.
            return Some((_mm512_castsi256_si512(_mm512_cvtepi16_epi8(v)), 32));
        }
        // Below U+0800, c >> 6 is below 0x20: the lead byte 0xC0 | c >> 6 (0xC2..=0xDF), never zero.
        let lead = _mm512_or_si512(_mm512_srli_epi16::<6>(v), _mm512_set1_epi16(0xC0));
        let lead = _mm512_maskz_mov_epi16(!ascii, lead);
        let trail = _mm512_or_si512(_mm512_and_si512(v, _mm512_set1_epi16(0x3F)), _mm512_set1_epi16(0x80));
        let second = _mm512_mask_mov_epi16(trail, ascii, v);
        let words = _mm512_or_si512(lead, _mm512_slli_epi16::<8>(second));
        // Every second byte (a trail byte, or the ASCII unit itself, NUL included), and the leads that are set.
        let keep = _mm512_test_epi8_mask(words, words) | 0xAAAA_AAAA_AAAA_AAAA;
        Some((_mm512_maskz_compress_epi8(keep, words), keep.count_ones() as usize))
    }

    /// The UTF-8 of 16 units (32-bit lanes of `v`) in the low bytes of the result, and how many bytes it
    /// is; None where a unit is a surrogate or past U+FFFF. Each lane becomes three bytes: a first lead
    /// (0xE0 | c >> 12), a second (0xC0 | c >> 6 for two-byte characters, else a trail), and the last (a
    /// trail, or the unit itself where it is ASCII); the leads a unit does not use are zero, and dropped.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi2")]
    #[inline]
    fn three_byte_block(v: __m512i) -> Option<(__m512i, usize)> {
        let beyond = _mm512_cmpge_epu32_mask(v, _mm512_set1_epi32(0x10000));
        let surrogate = _mm512_cmpeq_epi32_mask(
            _mm512_and_si512(v, _mm512_set1_epi32(0xF800)),
            _mm512_set1_epi32(0xD800),
        );
        if beyond | surrogate != 0 {
            return None;
        }
        let ascii = _mm512_cmplt_epu32_mask(v, _mm512_set1_epi32(0x80));
        let three = _mm512_cmpge_epu32_mask(v, _mm512_set1_epi32(0x800));
        let low6 = |x: __m512i| _mm512_or_si512(_mm512_and_si512(x, _mm512_set1_epi32(0x3F)), _mm512_set1_epi32(0x80));
        let first = _mm512_maskz_mov_epi32(
            three,
            _mm512_or_si512(_mm512_srli_epi32::<12>(v), _mm512_set1_epi32(0xE0)),
        );
        let shifted = _mm512_srli_epi32::<6>(v);
        let second = _mm512_mask_mov_epi32(_mm512_or_si512(shifted, _mm512_set1_epi32(0xC0)), three, low6(shifted));
        let second = _mm512_maskz_mov_epi32(!ascii, second);
        let last = _mm512_mask_mov_epi32(low6(v), ascii, v);
        let words = _mm512_or_si512(
            _mm512_or_si512(first, _mm512_slli_epi32::<8>(second)),
            _mm512_slli_epi32::<16>(last),
        );
        // The last byte of every lane (NUL included), and the leads that are set; never the fourth.
        let keep = _mm512_test_epi8_mask(words, words) | 0x4444_4444_4444_4444;
        Some((_mm512_maskz_compress_epi8(keep, words), keep.count_ones() as usize))
    }
}

/// `utf8_of_units` where the CPU has AVX2 but not AVX-512 (most x86-64 CPUs since
/// 2013): no byte compress there, so each 16-byte half is packed by a byte shuffle from a table indexed by
/// which of its units take fewer bytes (`TWO_BYTE_SHUFFLES`, `THREE_BYTE_SHUFFLES`).
#[cfg(target_arch = "x86_64")]
mod avx2_utf8 {
    use core::arch::x86_64::*;

    /// The bytes of `dst` one step may write (two 16-byte stores, the second where the first's bytes end).
    const ROOM: usize = 32;

    #[inline(always)]
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
    }

    /// For 8 units as 16-bit words [lead, second] (`two_byte_words`), indexed by which are ASCII (bit j:
    /// unit j, whose lead is dropped): the shuffle that packs their bytes to the front, and their count.
    static TWO_BYTE_SHUFFLES: [([u8; 16], u8); 256] = two_byte_shuffles();
    /// For 4 units as 32-bit words [first, second, last, 0] (`three_byte_words`), indexed by bit j (unit j
    /// takes two bytes or more) and bit 4 + j (three): the shuffle that packs their bytes, and their count.
    static THREE_BYTE_SHUFFLES: [([u8; 16], u8); 256] = three_byte_shuffles();

    const fn two_byte_shuffles() -> [([u8; 16], u8); 256] {
        let mut table = [([0x80u8; 16], 0u8); 256];
        let mut mask = 0;
        while mask < 256 {
            let (mut n, mut j) = (0, 0);
            while j < 8 {
                if mask >> j & 1 == 0 {
                    table[mask].0[n] = 2 * j as u8;
                    n += 1;
                }
                table[mask].0[n] = 2 * j as u8 + 1;
                n += 1;
                j += 1;
            }
            table[mask].1 = n as u8;
            mask += 1;
        }
        table
    }

    const fn three_byte_shuffles() -> [([u8; 16], u8); 256] {
        let mut table = [([0x80u8; 16], 0u8); 256];
        let mut mask = 0;
        while mask < 256 {
            let (mut n, mut j) = (0, 0);
            while j < 4 {
                let (two, three) = (mask >> j & 1 == 1, mask >> (4 + j) & 1 == 1);
                if three {
                    table[mask].0[n] = 4 * j as u8;
                    n += 1;
                }
                if two || three {
                    table[mask].0[n] = 4 * j as u8 + 1;
                    n += 1;
                }
                table[mask].0[n] = 4 * j as u8 + 2;
                n += 1;
                j += 1;
            }
            table[mask].1 = n as u8;
            mask += 1;
        }
        table
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn units_u16(units: &[u16], dst: &mut [u8]) -> (usize, usize) {
        let (mut i, mut n) = (0, 0);
        while units.len() - i >= 8 && dst.len() - n >= ROOM {
            if units.len() - i >= 16 {
                // SAFETY: the 16 units from `i` lie within `units` (the condition above).
                let v = unsafe { _mm256_loadu_si256(units.as_ptr().add(i) as *const __m256i) };
                if let Some(len) = two_byte_step(v, &mut dst[n..]) {
                    (i, n) = (i + 16, n + len);
                    continue;
                }
            }
            // SAFETY: the 8 units from `i` lie within `units` (the loop's condition).
            let v = unsafe { _mm_loadu_si128(units.as_ptr().add(i) as *const __m128i) };
            match three_byte_step(_mm256_cvtepu16_epi32(v), &mut dst[n..]) {
                Some(len) => (i, n) = (i + 8, n + len),
                None => break,
            }
        }
        (i, n)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn units_u8(units: &[u8], dst: &mut [u8]) -> (usize, usize) {
        let (mut i, mut n) = (0, 0);
        while units.len() - i >= 16 && dst.len() - n >= ROOM {
            // SAFETY: the 16 bytes from `i` lie within `units` (the loop's condition).
            let v = unsafe { _mm_loadu_si128(units.as_ptr().add(i) as *const __m128i) };
            let Some(len) = two_byte_step(_mm256_cvtepu8_epi16(v), &mut dst[n..]) else {
                break; // not reached: every Latin-1 unit is below U+0800
            };
            (i, n) = (i + 16, n + len);
        }
        (i, n)
    }

    #[target_feature(enable = "avx2")]
    pub(super) fn units_u32(units: &[u32], dst: &mut [u8]) -> (usize, usize) {
        let (mut i, mut n) = (0, 0);
        while units.len() - i >= 8 && dst.len() - n >= ROOM {
            // SAFETY: the 8 units from `i` lie within `units` (the loop's condition).
            let v = unsafe { _mm256_loadu_si256(units.as_ptr().add(i) as *const __m256i) };
            let Some(len) = three_byte_step(v, &mut dst[n..]) else {
                break;
            };
            (i, n) = (i + 8, n + len);
        }
        (i, n)
    }

    /// Writes two 16-byte halves packed by `shuffles`: `lo`'s at the start of `dst`, `hi`'s where its bytes
    /// end; returns how many bytes the two are.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn put_halves(
        lo: __m128i,
        hi: __m128i,
        masks: (usize, usize),
        shuffles: &[([u8; 16], u8); 256],
        dst: &mut [u8],
    ) -> usize {
        let (lo_shuffle, lo_len) = &shuffles[masks.0 & 0xFF];
        let (hi_shuffle, hi_len) = &shuffles[masks.1 & 0xFF];
        let (lo_len, hi_len) = (*lo_len as usize, *hi_len as usize);
        assert!(dst.len() >= lo_len + 16);
        // SAFETY: each shuffle is a 16-byte array; the stores write 16 bytes at 0 and at `lo_len`, both within
        // `dst` (checked just above).
        unsafe {
            let lo = _mm_shuffle_epi8(lo, _mm_loadu_si128(lo_shuffle.as_ptr() as *const __m128i));
            let hi = _mm_shuffle_epi8(hi, _mm_loadu_si128(hi_shuffle.as_ptr() as *const __m128i));
            _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, lo);
            _mm_storeu_si128(dst.as_mut_ptr().add(lo_len) as *mut __m128i, hi);
        }
        lo_len + hi_len
    }

    /// The UTF-8 of 16 units (16-bit lanes of `v`) written at the start of `dst`; how many bytes it is, or
    /// None (nothing written) where a unit is U+0800 or more.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn two_byte_step(v: __m256i, dst: &mut [u8]) -> Option<usize> {
        let below = |limit: i16| _mm256_cmpeq_epi16(_mm256_min_epu16(v, _mm256_set1_epi16(limit)), v);
        if _mm256_movemask_epi8(below(0x7FF)) != -1 {
            return None;
        }
        let ascii = below(0x7F);
        if _mm256_movemask_epi8(ascii) == -1 {
            // All ASCII: each unit narrowed to its byte (the pack works within 128-bit lanes).
            let bytes = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi16(v, v));
            assert!(dst.len() >= 16);
            // SAFETY: 16 bytes written at the start of `dst` (checked just above).
            unsafe { _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, _mm256_castsi256_si128(bytes)) };
            return Some(16);
        }
        // As in the AVX-512 block: a lead byte (zero for ASCII units) and a second byte, per unit.
        let lead = _mm256_andnot_si256(
            ascii,
            _mm256_or_si256(_mm256_srli_epi16::<6>(v), _mm256_set1_epi16(0xC0)),
        );
        let trail = _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi16(0x3F)), _mm256_set1_epi16(0x80));
        let words = _mm256_or_si256(lead, _mm256_slli_epi16::<8>(_mm256_blendv_epi8(trail, v, ascii)));
        // One bit a unit: each 128-bit lane's 8 units, then the same again.
        let mask = _mm256_movemask_epi8(_mm256_packs_epi16(ascii, ascii)) as u32 as usize;
        let (lo, hi) = (_mm256_castsi256_si128(words), _mm256_extracti128_si256::<1>(words));
        Some(put_halves(lo, hi, (mask, mask >> 16), &TWO_BYTE_SHUFFLES, dst))
    }

    /// The UTF-8 of 8 units (32-bit lanes of `v`) written at the start of `dst`; how many bytes it is, or
    /// None (nothing written) where a unit is a surrogate or past U+FFFF.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn three_byte_step(v: __m256i, dst: &mut [u8]) -> Option<usize> {
        // Lanes of at least `limit` (all ones), and one bit a lane.
        let at_least = |limit: i32| _mm256_cmpeq_epi32(_mm256_max_epu32(v, _mm256_set1_epi32(limit)), v);
        let bits = |lanes: __m256i| _mm256_movemask_ps(_mm256_castsi256_ps(lanes)) as usize;
        let surrogate = _mm256_cmpeq_epi32(
            _mm256_and_si256(v, _mm256_set1_epi32(0xF800)),
            _mm256_set1_epi32(0xD800),
        );
        if bits(at_least(0x10000)) != 0 || _mm256_movemask_epi8(surrogate) != 0 {
            return None;
        }
        let (two_lanes, three_lanes) = (at_least(0x80), at_least(0x800));
        let (two, three) = (bits(two_lanes), bits(three_lanes));
        let low6 = |x: __m256i| _mm256_or_si256(_mm256_and_si256(x, _mm256_set1_epi32(0x3F)), _mm256_set1_epi32(0x80));
        let first = _mm256_and_si256(
            three_lanes,
            _mm256_or_si256(_mm256_srli_epi32::<12>(v), _mm256_set1_epi32(0xE0)),
        );
        let shifted = _mm256_srli_epi32::<6>(v);
        let second = _mm256_blendv_epi8(
            _mm256_or_si256(shifted, _mm256_set1_epi32(0xC0)),
            low6(shifted),
            three_lanes,
        );
        let last = _mm256_blendv_epi8(v, low6(v), two_lanes);
        let words = _mm256_or_si256(
            _mm256_or_si256(first, _mm256_slli_epi32::<8>(second)),
            _mm256_slli_epi32::<16>(last),
        );
        let (lo, hi) = (_mm256_castsi256_si128(words), _mm256_extracti128_si256::<1>(words));
        let masks = ((two & 0xF) | (three & 0xF) << 4, (two >> 4) | (three >> 4) << 4);
        Some(put_halves(lo, hi, masks, &THREE_BYTE_SHUFFLES, dst))
    }
}

/// Types whose value may be all zero bytes (`TableMemory` hands out memory zeroed).
///
/// # Safety
/// All-zero bytes must be a valid value of the type: integers, arrays and structs of them.
pub(crate) unsafe trait Zeroable: Copy {}

// SAFETY: integers and arrays of them: any bytes are a valid value.
unsafe impl Zeroable for u32 {}
unsafe impl Zeroable for u128 {}
unsafe impl<T: Zeroable, const N: usize> Zeroable for [T; N] {}
unsafe impl<A: Zeroable, B: Zeroable> Zeroable for (A, B) {}
// SAFETY: structs of the integer types above (their own comments say so).
unsafe impl<K: Zeroable, V: Zeroable> Zeroable for crate::keys::Pair<K, V> {}
unsafe impl Zeroable for crate::cache::CachedIds {}

/// The bytes of a huge page (x86-64's and most arm64 kernels' transparent huge pages).
const HUGE_PAGE: usize = 2 << 20;
/// The bytes of a page.
const PAGE: usize = 4096;

/// `len` zeroed values of `T`, for a table that is read at random. From `HUGE_PAGE` bytes up, on Linux,
/// the memory comes straight from the kernel (mmap, untouched until used, so zeroed for free and
/// cleared by mapping it anew), aligned to a huge page and advised to be backed by huge pages
/// (`MADV_HUGEPAGE`: Linux's transparent huge pages in their default `madvise` mode give them only to
/// memory advised so): a table of megabytes then costs a few TLB entries, where in 4 KB pages nearly
/// every probe would miss the TLB. Smaller tables, and other systems, use the global allocator.
pub(crate) struct TableMemory<T: Zeroable> {
    ptr: std::ptr::NonNull<T>,
    len: usize,
    /// Mapped by `map_huge` (and so unmapped on drop), else from the global allocator.
    mapped: bool,
}

// SAFETY: a TableMemory owns its values alone, as a Box<[T]> does.
unsafe impl<T: Zeroable + Send> Send for TableMemory<T> {}
unsafe impl<T: Zeroable + Sync> Sync for TableMemory<T> {}

impl<T: Zeroable> TableMemory<T> {
    pub(crate) fn zeroed(len: usize) -> Self {
        let bytes = len.checked_mul(std::mem::size_of::<T>()).expect("table size overflows");
        if bytes == 0 {
            return TableMemory {
                ptr: std::ptr::NonNull::dangling(),
                len,
                mapped: false,
            };
        }
        if let Some(ptr) = map_huge(bytes) {
            return TableMemory {
                ptr: ptr.cast(),
                len,
                mapped: true,
            };
        }
        let layout = Self::layout(bytes);
        // SAFETY: the layout's size is not zero (checked above).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = std::ptr::NonNull::new(raw.cast()).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        TableMemory {
            ptr,
            len,
            mapped: false,
        }
    }

    fn layout(bytes: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(bytes, std::mem::align_of::<T>()).expect("table layout")
    }
}

impl<T: Zeroable> std::ops::Deref for TableMemory<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` holds `len` initialised values (zero bytes, a valid T by `Zeroable`, until written
        // through `deref_mut`), owned by self and aligned for T (mmap's pages, or the allocator's layout).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> std::ops::DerefMut for TableMemory<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Zeroable> Drop for TableMemory<T> {
    fn drop(&mut self) {
        let bytes = self.len * std::mem::size_of::<T>();
        if bytes == 0 {
            return;
        }
        if self.mapped {
            unmap(self.ptr.cast(), bytes);
        } else {
            // SAFETY: allocated in `zeroed` with this layout (the same `len`, so the same size).
            unsafe { std::alloc::dealloc(self.ptr.as_ptr().cast(), Self::layout(bytes)) };
        }
    }
}

/// `bytes` (at least HUGE_PAGE) of fresh zeroed memory starting at a huge-page boundary and advised to be
/// backed by huge pages; None where the system cannot (not Linux, too small, or mmap refused).
fn map_huge(bytes: usize) -> Option<std::ptr::NonNull<u8>> {
    #[cfg(target_os = "linux")]
    {
        if bytes < HUGE_PAGE {
            return None;
        }
        let size = bytes.next_multiple_of(PAGE);
        // Room to slide the start to a huge-page boundary; what lies before and after it is unmapped.
        let room = size.checked_add(HUGE_PAGE)?;
        // SAFETY: a new private anonymous mapping at an address the kernel picks: no existing memory is
        // touched. Its pages read as zero until written.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                room,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(HUGE_PAGE);
        // SAFETY: both ranges lie inside the mapping just made ([start, start + room)), are page-aligned
        // (mmap's start, `aligned`, `aligned + size` are multiples of PAGE) and nothing refers to them.
        // The advice changes no contents; a kernel without huge pages refuses it, which changes nothing.
        unsafe {
            if aligned > start {
                libc::munmap(raw, aligned - start);
            }
            let tail = start + room - (aligned + size);
            if tail > 0 {
                libc::munmap((aligned + size) as *mut libc::c_void, tail);
            }
            libc::madvise(aligned as *mut libc::c_void, size, libc::MADV_HUGEPAGE);
        }
        std::ptr::NonNull::new(aligned as *mut u8)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = bytes;
        None
    }
}

/// Advises the kernel to back `memory` with huge pages where whole ones fit in it (Linux's `MADV_HUGEPAGE`),
/// for a large output about to be written from its start: its first touch then costs a fault a huge page,
/// where in 4 KB pages it cost one each (on the development machine, faulting in 9 MB of new 4 KB pages
/// took 16 ms, longer than encoding a tenth of the text whose ids fill them). Below two huge pages, and
/// elsewhere than Linux, nothing is done. Pages already touched stay as they are.
pub(crate) fn advise_huge_pages<T>(memory: &mut [T]) {
    #[cfg(target_os = "linux")]
    {
        let start = memory.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(memory);
        let (first, last) = (start.next_multiple_of(HUGE_PAGE), end / HUGE_PAGE * HUGE_PAGE);
        if last < first + 2 * HUGE_PAGE {
            return;
        }
        // SAFETY: [first, last) lies inside `memory`, which the caller holds uniquely, and starts at a page
        // boundary. The advice changes no contents and frees nothing; a kernel without transparent huge
        // pages refuses it, which changes nothing either.
        unsafe {
            libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_HUGEPAGE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = memory;
}

/// Asks the kernel to start writing bytes `[offset, offset + len)` of `file` to disk, without waiting for
/// it (Linux's `sync_file_range` with `SYNC_FILE_RANGE_WRITE`): a later sync of the file then waits only
/// for what was written after. A hint for speed only: an error (a file system that does not support it,
/// another system) changes nothing, and durability still comes from that sync.
pub(crate) fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: a system call on a file descriptor `file` keeps open for the call's length; it reads and
        // writes no memory of this process.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Unmaps memory `map_huge` made for `bytes`.
fn unmap(ptr: std::ptr::NonNull<u8>, bytes: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: `ptr` and the rounded size are exactly what `map_huge` kept mapped, and the TableMemory that
    // owned it is being dropped, so nothing refers to it any more.
    unsafe {
        libc::munmap(ptr.as_ptr().cast(), bytes.next_multiple_of(PAGE));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, bytes);
}

/// Fixed-size writes of ids into a Vec's spare capacity (`append_lanes`): each stores a whole block of
/// lanes at the write position and moves it on by the block's count of ids, so ids are appended with no
/// branch on their count and without zeroing the memory first (the lanes past the count are written over
/// by the next write, or left beyond the Vec's length).
pub(crate) struct LaneRun<'v> {
    spare: &'v mut [std::mem::MaybeUninit<u32>],
    /// Every lane before this one has been written (the invariant `append_lanes` relies on).
    written: usize,
}

impl LaneRun<'_> {
    /// Writes `lanes` at the write position and moves it on by `len` (at most N). Panics where fewer
    /// than N lanes of room are left (the caller asked `append_lanes` for room enough).
    #[inline(always)]
    pub(crate) fn put<const N: usize>(&mut self, lanes: &[u32; N], len: usize) {
        let at = self.written;
        self.spare[at..at + N].copy_from_slice(&lanes.map(std::mem::MaybeUninit::new));
        self.written = at + len.min(N);
    }
}

/// Runs `f` with a `LaneRun` over the spare capacity of `out` (first grown to `room` lanes at least), then
/// appends the ids it wrote to `out`.
#[inline(always)]
pub(crate) fn append_lanes<R>(out: &mut Vec<u32>, room: usize, f: impl FnOnce(&mut LaneRun<'_>) -> R) -> R {
    out.reserve(room);
    let mut run = LaneRun {
        spare: out.spare_capacity_mut(),
        written: 0,
    };
    let result = f(&mut run);
    let written = run.written;
    // SAFETY: `written` ≤ the spare capacity's length (`put` writes each lane it moves past, in bounds),
    // and every lane before it has been written by `put`, so the Vec's new elements are initialised.
    unsafe { out.set_len(out.len() + written) };
    result
}

/// Runs the GPT-2 scanner (`pretokenize::for_each_gpt2_range`) over `text`, into `f`: where the CPU has
/// AVX2, BMI1, BMI2 and LZCNT (every x86-64 CPU since 2013 that has one has all four), a copy of the whole
/// scanning loop compiled for them, the sink's `piece` included, with the class masks computed in registers
/// by AVX2; elsewhere the same loop compiled for the baseline, with the portable masks.
#[inline(always)]
pub(crate) fn scan_gpt2(text: &str, f: &mut impl PieceSink) {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::available() {
            // SAFETY: the CPU has just reported every feature `scan` is compiled for.
            return unsafe { avx2::scan(text, f) };
        }
    }
    for_each_gpt2_range(text, portable_masks, f)
}

/// Class masks of a block of `BLOCK` bytes with AVX2, or None where the CPU lacks it (for tests: the
/// scanner gets its masks inside `scan_gpt2`).
#[cfg(test)]
pub(crate) fn avx2_block_masks(block: &[u8; crate::blocks::BLOCK]) -> Option<crate::blocks::BlockMasks> {
    #[cfg(target_arch = "x86_64")]
    {
        if avx2::available() {
            // SAFETY: the CPU has just reported every feature `masks_avx2` is compiled for.
            return Some(unsafe { avx2::masks_avx2(block, crate::blocks::lead_tables()) });
        }
    }
    let _ = block;
    None
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::*;

    use crate::blocks::{lead_tables, BlockMasks, LeadTables, BLOCK, LEAD2_BITS, LEAD3_BITS};
    use crate::pretokenize::{for_each_gpt2_range, PieceSink};

    /// Whether the CPU has the features `scan` and `masks_avx2` are compiled for (std caches the answer).
    #[inline(always)]
    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("bmi1")
            && std::arch::is_x86_feature_detected!("bmi2")
            && std::arch::is_x86_feature_detected!("lzcnt")
    }

    /// The scanning loop and everything it inlines (the sink's `piece`, the masks) compiled for these
    /// features: the masks stay in registers, and bit scans and variable shifts take one instruction each.
    #[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt")]
    pub(super) fn scan(text: &str, f: &mut impl PieceSink) {
        let leads = lead_tables();
        for_each_gpt2_range(text, |block| masks_avx2(block, leads), f)
    }

    /// Bit k of each mask describes `block[k]`: two 32-byte halves, each compared lane by lane and
    /// collapsed with `movemask`. Reads exactly the 64 bytes of `block` (unaligned loads of a
    /// `&[u8; 64]`, so every byte read is inside the array).
    #[target_feature(enable = "avx2,bmi1,bmi2,lzcnt,popcnt")]
    #[inline]
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
            space_tail: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_checks_answer_as_std_does() {
        // Text with every width of character, cut anywhere, with one of the sequences UTF-8 forbids
        // (overlong forms, surrogates, code points past U+10FFFF, stray continuation and lead bytes)
        // spliced in anywhere: up to 500 bytes, several of the blocks the SIMD check takes at once.
        let chars = "aé€𝄞 z\n\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}";
        let bad: [&[u8]; 9] = [
            b"\xc0\xaf",
            b"\xe0\x80\xaf",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xf8\x88\x80\x80\x80",
            b"\x80",
            b"\xc3",
            b"\xe2\x82",
            b"\xff",
        ];
        let mut rng = 7u64;
        let mut next = |n: usize| {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) as usize % n
        };
        for case in 0..3000 {
            let mut bytes: Vec<u8> = chars.repeat(1 + next(12)).into_bytes();
            bytes.truncate(next(bytes.len() + 1));
            if case % 3 != 0 {
                let at = next(bytes.len() + 1);
                bytes.splice(at..at, bad[next(bad.len())].iter().copied());
            }
            let std = std::str::from_utf8(&bytes).map_err(|e| e.valid_up_to());
            assert_eq!(utf8_str(&bytes), std, "{bytes:?}");
            let string = utf8_string(bytes.clone()).map_err(|(back, valid)| (back == bytes, valid));
            assert_eq!(
                string,
                std.map(str::to_string).map_err(|valid| (true, valid)),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn json_string_stops_are_found_as_byte_by_byte() {
        // Text of every length up to several blocks, with a stop (or none) at every place, among bytes
        // on both sides of each class (0x1F and 0x20, the quote's and backslash's neighbours, bytes with the
        // top bit set, which a signed comparison would take for control characters).
        let plain = b" !#[]^~\x7f\x80\xe9\xffazAZ09";
        let stops = b"\"\\\x00\x1f\n\t";
        let mut rng = 11u64;
        let mut next = |n: usize| {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) as usize % n
        };
        for len in 0..80 {
            for place in 0..=len {
                let mut bytes: Vec<u8> = (0..len).map(|_| plain[next(plain.len())]).collect();
                if place < len {
                    bytes[place] = stops[next(stops.len())];
                }
                let want = (place < len).then_some(place);
                assert_eq!(json_string_stop(&bytes), want, "{bytes:?}");
                assert_eq!(json_string_stop_from(&bytes, 0), want, "{bytes:?}");
            }
        }
    }

    #[test]
    fn table_memory_is_zeroed_and_keeps_what_is_written() {
        // Sizes below a huge page (the allocator's memory), at one, and past it (mapped, advised).
        for len in [
            0,
            1,
            3,
            4095,
            HUGE_PAGE / 16 - 1,
            HUGE_PAGE / 16,
            3 * HUGE_PAGE / 16 + 5,
        ] {
            let mut memory = TableMemory::<u128>::zeroed(len);
            assert_eq!(memory.len(), len);
            assert!(memory.iter().all(|&v| v == 0), "{len}");
            let mut rng = len as u128 + 1;
            let mut model = vec![0u128; len];
            for _ in 0..1000.min(len) {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let at = (rng >> 64) as usize % len;
                memory[at] = rng;
                model[at] = rng;
            }
            assert!(memory.iter().eq(model.iter()), "{len}");
            if len * 16 >= HUGE_PAGE && cfg!(target_os = "linux") {
                assert!(memory.mapped);
                assert_eq!(
                    memory.as_ptr() as usize % HUGE_PAGE,
                    0,
                    "{len}: not on a huge-page boundary"
                );
            }
        }
    }

    #[test]
    fn appended_lanes_are_the_counted_ids_in_order() {
        // Blocks of 4 and 16 lanes with every count, into a Vec that already holds ids and has to grow.
        let mut out = vec![7u32, 8];
        let mut model = out.clone();
        let mut next = 100u32;
        for round in 0..300usize {
            let count4 = round % 5;
            let count16 = round % 17;
            let four: [u32; 4] = std::array::from_fn(|k| next + k as u32);
            let sixteen: [u32; 16] = std::array::from_fn(|k| next + 1000 + k as u32);
            append_lanes(&mut out, 4 + 16, |run| {
                run.put(&four, count4);
                run.put(&sixteen, count16);
            });
            model.extend_from_slice(&four[..count4]);
            model.extend_from_slice(&sixteen[..count16]);
            next += 17;
        }
        assert_eq!(out, model);
        // A run that writes nothing appends nothing.
        append_lanes(&mut out, 16, |_| {});
        assert_eq!(out, model);
    }

    #[test]
    fn table_memory_comes_and_goes_many_times() {
        // Mapping and unmapping in turn, with tables alive at once: every table keeps its own values.
        let mut alive: Vec<TableMemory<u32>> = Vec::new();
        for round in 0..40usize {
            let mut memory = TableMemory::<u32>::zeroed((round % 5 + 1) * HUGE_PAGE / 4 + round);
            let last = memory.len() - 1;
            memory[0] = round as u32;
            memory[last] = round as u32 + 1;
            alive.push(memory);
            if round % 3 == 0 {
                alive.remove(0);
            }
            for table in &alive {
                let first = table[0];
                assert_eq!(table[table.len() - 1], first + 1);
                assert!(table[1..table.len() - 1].iter().all(|&v| v == 0));
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn every_simd_path_makes_the_utf8_of_a_prefix() {
        // Each path this CPU has (AVX-512, AVX2), called directly for each unit size: what it writes is the
        // UTF-8 of the units it took, and it takes all but the last few unless a surrogate or a character
        // past U+FFFF stops it (the caller then goes on a unit at a time).
        let mixes = [
            "plain ASCII text with nothing else in it at all, long enough for many blocks of units",
            "café crème, déjà vu, naïve façade, über år; ÀÉÎÕÜ àéîõü ÿ",
            "Жил-был кот, Ελληνικά, עברית, العربية ‹quoted› — 中文字符和English混合 text 123",
            "\u{0}\u{7f}\u{80}\u{7ff}\u{800}\u{fff}\u{d7ff}\u{e000}\u{ffff}\u{1}\u{100}",
            // The edges of one and two bytes, with no wider character beside them.
            "\u{0}\u{7f}\u{80}\u{ff}\u{100}\u{7ff} a\u{7f}b\u{80}\u{7fe}",
            "emoji 🙂👍🏽 𝄞 𐍈 beyond the BMP between words",
        ];
        for mix in mixes {
            for repeat in [1, 3, 17] {
                let text = mix.repeat(repeat);
                let wide: Vec<u32> = text.chars().map(|c| c as u32).collect();
                let bmp = wide.iter().all(|&c| c < 0x10000);
                let narrow: Vec<u16> = wide.iter().map(|&c| c as u16).collect();
                let latin1: Vec<u8> = wide.iter().map(|&c| c as u8).collect();
                let check = |name: &str, took: usize, wrote: usize, dst: &[u8], may_stop: bool| {
                    let want: String = text.chars().take(took).collect();
                    assert_eq!(&dst[..wrote], want.as_bytes(), "{name}: {mix:?} x{repeat}");
                    assert!(
                        may_stop || took + 32 > wide.len(),
                        "{name} stopped at {took} of {}",
                        wide.len()
                    );
                };
                let mut dst = vec![0u8; 4 * wide.len() + 64];
                // Each path the CPU has: its name, and whether it is AVX-512's (else AVX2's).
                let paths = [
                    ("avx512", true, avx512_utf8::available()),
                    ("avx2", false, avx2_utf8::available()),
                ];
                for (path, avx512, _) in paths.into_iter().filter(|p| p.2) {
                    fn run<U: SimdUnit>(avx512: bool, units: &[U], dst: &mut [u8]) -> (usize, usize) {
                        let f = if avx512 { U::AVX512 } else { U::AVX2 };
                        // SAFETY: called only for a path the CPU has (the filter above).
                        unsafe { f(units, dst) }
                    }
                    let (took, wrote) = run(avx512, &wide, &mut dst);
                    check(path, took, wrote, &dst, !bmp);
                    if bmp {
                        let (took, wrote) = run(avx512, &narrow, &mut dst);
                        check(path, took, wrote, &dst, false);
                    }
                    if wide.iter().all(|&c| c < 0x100) {
                        let (took, wrote) = run(avx512, &latin1, &mut dst);
                        check(path, took, wrote, &dst, false);
                    }
                    // A lone surrogate stops both forms before it, the units before it written.
                    let at = wide.len() / 2;
                    let (mut wide, mut narrow) = (wide.clone(), narrow.clone());
                    wide.insert(at, 0xDC00);
                    narrow.insert(at, 0xDC00);
                    let (took, wrote) = run(avx512, &wide, &mut dst);
                    assert!(took <= at, "{path}: took {took} past the surrogate at {at}");
                    check(path, took, wrote, &dst, true);
                    if bmp {
                        let (took, wrote) = run(avx512, &narrow, &mut dst);
                        assert!(took <= at, "{path}: took {took} past the surrogate at {at}");
                        check(path, took, wrote, &dst, true);
                    }
                }
            }
        }
    }
}
