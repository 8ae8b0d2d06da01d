//! The GPT-2 scanner's fast path for ASCII text (and Cyrillic letters, see `with_cyrillic_letters`): 64
//! bytes at a time, the bytes are classified into bit
//! masks (AVX2 in arch.rs where the CPU has it, else the portable loop here) and every pre-token start of
//! the block is found with a few shifts and ands, instead of one byte and one branch at a time. Text
//! with other bytes, and the rare piece longer than a block, go through the byte scanner
//! (`pretokenize::gpt2_piece_end`); the tests prove both give the same pieces.
//!
//! The rules, for ASCII and with a block that starts at a pre-token start (bit k = byte k):
//! 1. a pre-token starts where the class (letter, digit, white space, other) changes;
//! 2. where white space meets text at k: byte k − 1 starts a pre-token (a white-space run gives its last
//!    character away), and k does not if byte k − 1 is a plain space (` ?\p{L}+` takes it);
//! 3. an apostrophe that starts a pre-token and begins a contraction (`'s 'd 'm 't 'll 've 're`) makes a
//!    pre-token of its own: nothing starts inside it, and one starts right after it.
//!
//! A start at k depends on bytes k − 3 ..= k + 1 at most, so starts at 0 ..= TRUSTED are exact from the
//! 64 bytes alone; the last start found is where the next block begins.

use crate::pretokenize::{class_table, contraction_len, LETTER, NUMBER, SPACE};

pub(crate) const BLOCK: usize = 64;
/// The last position of a block whose start bit is exact (see the module comment).
pub(crate) const TRUSTED: u32 = 62;

/// Bit k of each mask says what `block[k]` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockMasks {
    pub(crate) letter: u64,
    pub(crate) digit: u64,
    /// `\s`: tab, line feed, vertical tab, form feed, carriage return, space.
    pub(crate) space: u64,
    /// The plain space, 0x20.
    pub(crate) blank: u64,
    pub(crate) quote: u64,
    pub(crate) non_ascii: u64,
    /// 0xD0 or 0xD1: the lead byte of a character in U+0400..=U+047F, all of them letters (Cyrillic).
    pub(crate) cyrillic_lead: u64,
}

/// The masks with the two-byte letters that lead bytes 0xD0 and 0xD1 begin taken as letters, so Russian,
/// Ukrainian or Bulgarian words pre-tokenize 64 bytes at a time like ASCII ones. Valid UTF-8 (a `str`)
/// puts a continuation byte after each such lead, so the lead and the byte after it are one letter. A
/// block starts at a pre-token start, never inside a character; a lead in its last byte leaves its
/// continuation to the next block, past the starts the block trusts (TRUSTED).
#[inline(always)]
pub(crate) fn with_cyrillic_letters(mut m: BlockMasks) -> BlockMasks {
    let letter = m.cyrillic_lead | (m.cyrillic_lead << 1);
    m.letter |= letter;
    m.non_ascii &= !letter;
    m
}

/// Class bits of each byte: what the masks hold, from the same table the byte scanner uses.
fn byte_bits() -> &'static [u8; 256] {
    static BITS: std::sync::OnceLock<[u8; 256]> = std::sync::OnceLock::new();
    BITS.get_or_init(|| {
        let table = class_table();
        let mut bits = [0u8; 256];
        for (b, out) in bits.iter_mut().enumerate() {
            *out = if b >= 0x80 {
                1 << 5 | ((b == 0xD0 || b == 0xD1) as u8) << 6
            } else {
                let class = table.class_of(b as u32);
                (class == LETTER) as u8
                    | ((class == NUMBER) as u8) << 1
                    | ((class == SPACE) as u8) << 2
                    | ((b == b' ' as usize) as u8) << 3
                    | ((b == b'\'' as usize) as u8) << 4
            };
        }
        bits
    })
}

/// The masks without CPU-specific instructions.
pub(crate) fn portable_masks(block: &[u8; BLOCK]) -> BlockMasks {
    let bits = byte_bits();
    let mut m = [0u64; 7];
    for (k, &b) in block.iter().enumerate() {
        let c = bits[b as usize] as u64;
        for (j, mask) in m.iter_mut().enumerate() {
            *mask |= ((c >> j) & 1) << k;
        }
    }
    BlockMasks {
        letter: m[0],
        digit: m[1],
        space: m[2],
        blank: m[3],
        quote: m[4],
        non_ascii: m[5],
        cyrillic_lead: m[6],
    }
}

#[inline(always)]
pub(crate) fn block_masks(block: &[u8; BLOCK]) -> BlockMasks {
    crate::arch::block_masks(block).unwrap_or_else(|| portable_masks(block))
}

/// Pre-token starts of the block `bytes[at..at + 64]`, whose first byte starts a pre-token, as bits;
/// exact at 0 ..= `limit` (≤ TRUSTED), where every byte up to `limit + 1` must be ASCII.
#[inline(always)]
pub(crate) fn block_starts(bytes: &[u8], at: usize, m: &BlockMasks, limit: u32) -> u64 {
    let changes = |mask: u64| mask ^ (mask << 1);
    // Rule 1 (the class "other" changes only where one of the three others does).
    let mut starts = changes(m.letter) | changes(m.digit) | changes(m.space) | 1;
    // Rule 2.
    let space_to_text = (m.space << 1) & !m.space;
    starts |= space_to_text >> 1;
    starts &= !(space_to_text & (m.blank << 1));
    // Rule 3, for the apostrophes that start pre-tokens (a few in a hundred bytes of English).
    let mut quotes = m.quote & starts & ((2u64 << limit) - 1);
    while quotes != 0 {
        let k = quotes.trailing_zeros();
        quotes &= quotes - 1;
        if let Some(len) = contraction_len(bytes, at + k as usize) {
            let len = len as u32;
            let inside = ((1u64 << (len - 1)) - 1) << (k + 1);
            starts &= !inside;
            if k + len < 64 {
                starts |= 1 << (k + len);
            }
        }
    }
    starts & ((2u64 << limit) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_equal_portable_and_classes_agree() {
        let mut rng = 0x1234_5678u64;
        for round in 0..5000 {
            let mut block = [0u8; BLOCK];
            for b in block.iter_mut() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                // Mostly ASCII, all 256 values reachable.
                *b = if round % 3 == 0 {
                    (rng >> 56) as u8
                } else {
                    ((rng >> 57) as u8) & 0x7F
                };
            }
            let portable = portable_masks(&block);
            if let Some(fast) = crate::arch::block_masks(&block) {
                assert_eq!(fast, portable, "{block:?}");
            }
        }
        // Every ASCII byte, as the byte scanner classifies it.
        let table = class_table();
        let all: Vec<u8> = (0..=255u8).collect();
        for chunk in all.chunks(BLOCK) {
            let block: [u8; BLOCK] = chunk.try_into().unwrap();
            let m = block_masks(&block);
            for (k, &b) in block.iter().enumerate() {
                let bit = |mask: u64| mask >> k & 1 == 1;
                assert_eq!(bit(m.non_ascii), b >= 0x80, "{b:#x}");
                assert_eq!(bit(m.cyrillic_lead), b == 0xD0 || b == 0xD1, "{b:#x}");
                if b < 0x80 {
                    let class = table.class_of(b as u32);
                    assert_eq!(bit(m.letter), class == LETTER, "{b:#x}");
                    assert_eq!(bit(m.digit), class == NUMBER, "{b:#x}");
                    assert_eq!(bit(m.space), class == SPACE, "{b:#x}");
                }
            }
        }
    }
}
