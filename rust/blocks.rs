//! The GPT-2 scanner's fast path for ASCII text (and the characters of other scripts,
//! `with_multibyte_letters` and `with_multibyte_classes`): 64 bytes at a time, the bytes are classified into
//! bit masks (AVX2 in arch.rs where the CPU has it, else the portable loop here) and every pre-token start
//! of the block is found with a few shifts and ands, instead of one byte and one branch at a time. Text
//! around a character the block cannot classify, and the rare piece longer than a block, go through the
//! byte scanner (`pretokenize::gpt2_piece_end`); the tests prove both give the same pieces.
//!
//! The rules, for ASCII and with a block that starts at a pre-token start (bit k = byte k):
//! 1. a pre-token starts where the class (letter, digit, white space, other) changes;
//! 2. where white space meets text at k: the character before k starts a pre-token (a white-space run
//!    gives its last character away), and k does not if byte k − 1 is a plain space (` ?\p{L}+` takes it);
//! 3. an apostrophe that starts a pre-token and begins a contraction (`'s 'd 'm 't 'll 've 're`) makes a
//!    pre-token of its own: nothing starts inside it, and one starts right after it.
//!
//! A start at k depends on bytes k − 3 ..= k + 1 at most (k + 3 for the first byte of a white-space
//! character of several bytes, which `with_multibyte_classes` takes only where that byte is in the block),
//! so starts at 0 ..= TRUSTED are exact from the 64 bytes alone; the last start found is where the next
//! block begins.

use crate::pretokenize::{class_table, contraction_len, utf8_len, ClassTable, LETTER, NUMBER, OTHER, SPACE};

pub(crate) const BLOCK: usize = 64;
/// The last position of a block whose start bit is exact (see the module comment).
pub(crate) const TRUSTED: u32 = 62;

/// Bit k of each mask says what `block[k]` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockMasks {
    pub(crate) letter: u64,
    pub(crate) digit: u64,
    /// `\s`: tab, line feed, vertical tab, form feed, carriage return, space (and the bytes of white space
    /// of more than one byte, `with_multibyte_classes`).
    pub(crate) space: u64,
    /// The bytes after the first of each white-space character of more than one byte.
    pub(crate) space_tail: u64,
    /// The plain space, 0x20.
    pub(crate) blank: u64,
    pub(crate) quote: u64,
    pub(crate) non_ascii: u64,
    /// Lead bytes of two-byte characters that are all letters (`LeadTables`).
    pub(crate) letter_lead2: u64,
    /// Lead bytes of three-byte characters that are all letters (`LeadTables`).
    pub(crate) letter_lead3: u64,
}

/// Which UTF-8 lead bytes begin nothing but letters, found once from the class table (so from the same
/// Unicode data as the regex engine): 0xC4..=0xCA (Latin Extended, IPA), 0xD0 and 0xD1 (Cyrillic),
/// 0xE5..=0xE9 (CJK ideographs), 0xEB and 0xEC (Hangul) in today's data. Each lead's bit k comes from
/// two 16-entry tables, by its low and its high nibble (`flags`), the form a byte shuffle looks up: the
/// high nibble picks one bit (0xC_ and 0xD_ leads begin two-byte characters, 0xE_ three-byte ones), and
/// the low-nibble table holds, in that bit, whether the lead qualifies.
pub(crate) struct LeadTables {
    pub(crate) by_low: [u8; 16],
    pub(crate) by_high: [u8; 16],
}

/// Bits of `LeadTables::flags`.
pub(crate) const LEAD2_BITS: u8 = 0b011;
pub(crate) const LEAD3_BITS: u8 = 0b100;

impl LeadTables {
    /// The flag bits of byte `b`: LEAD2_BITS or LEAD3_BITS where it leads letters only, else 0.
    pub(crate) fn flags(&self, b: u8) -> u8 {
        self.by_low[(b & 0x0F) as usize] & self.by_high[(b >> 4) as usize]
    }
}

pub(crate) fn lead_tables() -> &'static LeadTables {
    static TABLES: std::sync::OnceLock<LeadTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| {
        let table = class_table();
        let all_letters = |first: u32, last: u32| {
            (first..=last)
                .filter(|cp| !(0xD800..0xE000).contains(cp)) // surrogates are not characters
                .all(|cp| table.class_of(cp) == LETTER)
        };
        let mut tables = LeadTables {
            by_low: [0; 16],
            by_high: [0; 16],
        };
        tables.by_high[0xC] = 0b001;
        tables.by_high[0xD] = 0b010;
        tables.by_high[0xE] = 0b100;
        for b in 0xC2..=0xEFu32 {
            let (first, last) = if b < 0xE0 {
                ((b & 0x1F) << 6, ((b & 0x1F) << 6) | 0x3F)
            } else {
                (((b & 0x0F) << 12).max(0x800), ((b & 0x0F) << 12) | 0xFFF)
            };
            if all_letters(first, last) {
                tables.by_low[(b & 0x0F) as usize] |= tables.by_high[(b >> 4) as usize];
            }
        }
        tables
    })
}

/// The masks with the characters that `LeadTables`' lead bytes begin taken as letters, so words of
/// Cyrillic, Chinese, Korean or extended Latin letters pre-tokenize 64 bytes at a time like ASCII ones.
/// Valid UTF-8 (a `str`) puts the continuation bytes after each lead, so the lead and the one or two bytes
/// after it are one letter. A block starts at a pre-token start, never inside a character; a character
/// cut by the block's end leaves its last bytes to the next block, past the starts it trusts (TRUSTED).
#[inline(always)]
pub(crate) fn with_multibyte_letters(mut m: BlockMasks) -> BlockMasks {
    let letter =
        m.letter_lead2 | (m.letter_lead2 << 1) | m.letter_lead3 | (m.letter_lead3 << 1) | (m.letter_lead3 << 2);
    m.letter |= letter;
    m.non_ascii &= !letter;
    m
}

/// The masks with the other characters of more than one byte that lie wholly in the block classified one
/// by one (`ClassTable::at`): letters join `letter`, numbers (`\p{N}`: fullwidth, Arabic-Indic, Roman, ½)
/// `digit`, white space (no-break, ideographic, line separator) `space` and `space_tail`, and characters of
/// the class "other" (punctuation, symbols, marks: `[^\s\p{L}\p{N}]`) leave `non_ascii` with no bit set,
/// as ASCII punctuation has none. The lead tables cannot take them, as their leads begin characters of
/// several classes: the ideographs U+4E00..U+4FFF (不 中 为 了 人 他) share 0xE4 with the Yijing hexagrams,
/// CJK punctuation (，。《》) and box drawing (─ │) share their leads with letters, digits and spaces.
///
/// What stays for the byte scanner (`non_ascii`): a character cut by the block's end (the next block sees
/// it whole), and white space not followed in the block by a byte of known class. A run of white space
/// gives its last character away (`\s+(?!\S)`), so where that character has several bytes the pre-token
/// start at its first byte depends on the byte after it, up to 3 bytes on: white space is taken last, from
/// the block's end back, each character only where the byte after it is in the block and known by then.
///
/// Valid UTF-8 puts a character's continuation bytes right after its lead, and a block starts at a
/// pre-token start, so at a character's first byte. Measured (pre-tokenizing only, one pinned core, best
/// of 10, two runs), with white space left to the byte scanner: German quotes 866 → 1712 MB/s (umlauts
/// share 0xC3 with × and ÷), English books 1372 → 1729 (curly quotes), Chinese poems 659 → 784; Russian
/// and reviews unchanged. `encode_to_numpy` (5 rounds, fresh processes, later calls best of 11): German
/// 251 → 306 MB/s, English books 404 → 428, Chinese 246 → 263. Taking white space too (no-break spaces
/// in the Chinese poems and German quotes): pre-tokenizing Chinese 795 → 845 MB/s, German 1505 → 1655.
#[inline(always)]
pub(crate) fn with_multibyte_classes(block: &[u8; BLOCK], mut m: BlockMasks, table: &ClassTable) -> BlockMasks {
    let mut unknown = m.non_ascii;
    // First bytes of the white-space characters, taken after the rest.
    let mut spaces = 0u64;
    while unknown != 0 {
        let k = unknown.trailing_zeros() as usize;
        // Only a character cut by the block's end stops this (no other byte can be first: see above).
        let Some(len) = utf8_len(block[k]).filter(|&len| len >= 2 && k + len <= BLOCK) else {
            break;
        };
        let bits = ((1u64 << len) - 1) << k;
        match table.at(block, k).0 {
            LETTER => {
                m.letter |= bits;
                m.non_ascii &= !bits;
            }
            NUMBER => {
                m.digit |= bits;
                m.non_ascii &= !bits;
            }
            OTHER => m.non_ascii &= !bits,
            _ => spaces |= 1 << k,
        }
        unknown &= !bits;
    }
    while spaces != 0 {
        let k = 63 - spaces.leading_zeros() as usize;
        spaces &= !(1 << k);
        // The first loop took only whole characters of two bytes or more into `spaces`.
        let after = k + utf8_len(block[k]).unwrap_or(1);
        if after < BLOCK && (m.non_ascii >> after) & 1 == 0 {
            let bits = ((1u64 << (after - k)) - 1) << k;
            m.space |= bits;
            m.space_tail |= bits & !(1 << k);
            m.non_ascii &= !bits;
        }
    }
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
                let flags = lead_tables().flags(b as u8);
                1 << 5 | ((flags & LEAD2_BITS != 0) as u8) << 6 | ((flags & LEAD3_BITS != 0) as u8) << 7
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
    let mut m = [0u64; 8];
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
        letter_lead2: m[6],
        letter_lead3: m[7],
        space_tail: 0,
    }
}

/// Pre-token starts of the block `bytes[at..at + 64]`, whose first byte starts a pre-token, as bits;
/// exact at 0 ..= `limit` (≤ TRUSTED), where every byte up to `limit + 1` must be ASCII.
#[inline(always)]
pub(crate) fn block_starts(bytes: &[u8], at: usize, m: &BlockMasks, limit: u32) -> u64 {
    let changes = |mask: u64| mask ^ (mask << 1);
    // Rule 1 (the class "other" changes only where one of the three others does).
    let mut starts = changes(m.letter) | changes(m.digit) | changes(m.space) | 1;
    // Rule 2: the last character of the run starts a pre-token, from its first byte.
    let space_to_text = (m.space << 1) & !m.space;
    let mut given = space_to_text >> 1;
    while given & m.space_tail != 0 {
        let tail = given & m.space_tail;
        given = (given & !tail) | (tail >> 1);
    }
    starts |= given;
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
    fn lead_bytes_of_letters_only_are_found() {
        let leads: Vec<u8> = (0x80..=0xFFu8).filter(|&b| lead_tables().flags(b) != 0).collect();
        // Cyrillic, CJK ideographs from U+5000 and Hangul syllables, Latin Extended-A and -B and IPA...
        for b in [0xD0, 0xD1, 0xE5, 0xE9, 0xEB, 0xEC, 0xC4, 0xC5] {
            assert!(leads.contains(&b), "{b:#x} in {leads:x?}");
        }
        // ...but not where a sign or a mark is among the letters: × ÷ (0xC3), ҂ and combining marks
        // (0xD2), the Yijing hexagrams before U+4E00 (0xE4), CJK punctuation (0xE3); nor continuation bytes.
        for b in [0xC3, 0xD2, 0xE4, 0xE3, 0x80, 0xBF, 0xF0] {
            assert!(!leads.contains(&b), "{b:#x} in {leads:x?}");
        }
        let table = class_table();
        for b in leads {
            let flags = lead_tables().flags(b);
            // A lead of two-byte characters has a two-byte flag, of three-byte ones a three-byte flag.
            assert_eq!(flags & LEAD2_BITS != 0, b < 0xE0, "{b:#x}");
            let step = if b < 0xE0 { 1 << 6 } else { 1 << 12 };
            let first = if b < 0xE0 {
                (b as u32 & 0x1F) << 6
            } else {
                (b as u32 & 0x0F) << 12
            };
            assert!((first..first + step).all(|cp| table.class_of(cp) == LETTER), "{b:#x}");
        }
    }

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
            if let Some(fast) = crate::arch::avx2_block_masks(&block) {
                assert_eq!(fast, portable, "{block:?}");
            }
        }
        // Every ASCII byte, as the byte scanner classifies it.
        let table = class_table();
        let all: Vec<u8> = (0..=255u8).collect();
        for chunk in all.chunks(BLOCK) {
            let block: [u8; BLOCK] = chunk.try_into().unwrap();
            let m = crate::arch::avx2_block_masks(&block).unwrap_or_else(|| portable_masks(&block));
            for (k, &b) in block.iter().enumerate() {
                let bit = |mask: u64| mask >> k & 1 == 1;
                assert_eq!(bit(m.non_ascii), b >= 0x80, "{b:#x}");
                let flags = lead_tables().flags(b);
                assert_eq!(bit(m.letter_lead2), flags & LEAD2_BITS != 0, "{b:#x}");
                assert_eq!(bit(m.letter_lead3), flags & LEAD3_BITS != 0, "{b:#x}");
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
