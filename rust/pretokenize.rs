//! Pre-tokenization: splitting text (between special tokens, see specials.rs) into pre-tokens.
//!
//! The GPT-2 pattern runs through a hand-written scanner (no backtracking, an ASCII class table and one
//! Unicode table built from the same data the regex engine uses); any other pattern falls back to
//! fancy-regex. Tests prove the scanner equal to fancy-regex on arbitrary Unicode.

use std::sync::OnceLock;

use crate::blocks::{block_starts, with_multibyte_classes, with_multibyte_letters, BlockMasks, BLOCK, TRUSTED};
use crate::error::{Error, Result};

/// The GPT-2 pre-tokenization pattern (also CS336's).
pub const GPT2_PATTERN: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Other spellings of the GPT-2 pattern in use, equal to it in meaning, so a tokenizer read from elsewhere
/// keeps the scanner (the tests run each through fancy-regex against the scanner): GPT-2's encoder.py and
/// HF tokenizers' ByteLevel (contractions as separate alternatives), and tiktoken's r50k_base today
/// (possessive quantifiers, which change nothing here as nothing follows them, and `\s++$|...|\s`, which
/// splits white space as `\s+(?!\S)|\s+` does).
pub const GPT2_EQUIVALENT_PATTERNS: [&str; 2] = [
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s",
];

pub(crate) const OTHER: u8 = 0;
pub(crate) const LETTER: u8 = 1;
pub(crate) const NUMBER: u8 = 2;
pub(crate) const SPACE: u8 = 3;

/// Class of every code point: letter (`\p{L}`), number (`\p{N}`), white space (`\s`) or other.
pub(crate) struct ClassTable {
    classes: Vec<u8>,
}

pub(crate) fn class_table() -> &'static ClassTable {
    static TABLE: OnceLock<ClassTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut classes = vec![OTHER; 0x11_0000];
        // Built from regex-syntax, the crate fancy-regex compiles its classes with, so both agree on
        // the Unicode version and on what `\s` means.
        for (pattern, class) in [(r"\p{L}", LETTER), (r"\p{N}", NUMBER), (r"\s", SPACE)] {
            let hir = regex_syntax::Parser::new()
                .parse(pattern)
                .expect("static class pattern");
            let regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(set)) = hir.kind() else {
                unreachable!("{pattern} parses to a Unicode class")
            };
            for range in set.ranges() {
                classes[range.start() as usize..=range.end() as usize].fill(class);
            }
        }
        ClassTable { classes }
    })
}

impl ClassTable {
    /// Class of the code point `cp` (at most 0x10FFFF).
    pub(crate) fn class_of(&self, cp: u32) -> u8 {
        self.classes[cp as usize]
    }

    /// Class and UTF-8 length of the character starting at `bytes[i]` (`bytes` is valid UTF-8).
    #[inline(always)]
    pub(crate) fn at(&self, bytes: &[u8], i: usize) -> (u8, usize) {
        let b0 = bytes[i] as u32;
        let (cp, len) = if b0 < 0x80 {
            (b0, 1)
        } else if b0 < 0xE0 {
            (((b0 & 0x1F) << 6) | (bytes[i + 1] as u32 & 0x3F), 2)
        } else if b0 < 0xF0 {
            let cp = ((b0 & 0x0F) << 12) | ((bytes[i + 1] as u32 & 0x3F) << 6) | (bytes[i + 2] as u32 & 0x3F);
            (cp, 3)
        } else {
            let cp = ((b0 & 0x07) << 18)
                | ((bytes[i + 1] as u32 & 0x3F) << 12)
                | ((bytes[i + 2] as u32 & 0x3F) << 6)
                | (bytes[i + 3] as u32 & 0x3F);
            (cp, 4)
        };
        (self.classes[cp as usize], len)
    }

    /// End of the run of characters of class `class` starting at `i`.
    #[inline(always)]
    fn run_end(&self, bytes: &[u8], mut i: usize, class: u8) -> usize {
        while i < bytes.len() {
            let (c, len) = self.at(bytes, i);
            if c != class {
                break;
            }
            i += len;
        }
        i
    }

    /// Class of the whole character at `bytes[i..]`, or None where the bytes there are not one
    /// complete UTF-8 character (the cut finder runs before validation, on buffers that end anywhere).
    pub(crate) fn checked_at(&self, bytes: &[u8], i: usize) -> Option<u8> {
        let len = utf8_len(bytes[i])?;
        let ch = std::str::from_utf8(bytes.get(i..i + len)?).ok()?.chars().next()?;
        Some(self.classes[ch as usize])
    }
}

/// Bytes in the UTF-8 character that `lead` begins, or None for a byte that begins none (a continuation
/// byte, or one UTF-8 never uses).
#[inline(always)]
pub(crate) fn utf8_len(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7F => Some(1),
        0xC0..=0xDF => Some(2),
        0xE0..=0xEF => Some(3),
        0xF0..=0xF7 => Some(4),
        _ => None,
    }
}

/// Length of a contraction (`'s 'd 'm 't 'll 've 're`) at `bytes[i]`, which holds an apostrophe.
#[inline(always)]
pub(crate) fn contraction_len(bytes: &[u8], i: usize) -> Option<usize> {
    match bytes.get(i + 1)? {
        b's' | b'd' | b'm' | b't' => Some(2),
        b'l' if bytes.get(i + 2) == Some(&b'l') => Some(3),
        b'v' | b'r' if bytes.get(i + 2) == Some(&b'e') => Some(3),
        _ => None,
    }
}

/// End of the GPT-2 pre-token that starts at `i` (`i < bytes.len()`), exactly as the regex would match.
#[inline(always)]
pub(crate) fn gpt2_piece_end(table: &ClassTable, bytes: &[u8], i: usize) -> usize {
    let b0 = bytes[i];
    if b0 == b'\'' {
        if let Some(len) = contraction_len(bytes, i) {
            return i + len;
        }
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: a single ASCII space joins the run after it.
    if b0 == b' ' && i + 1 < bytes.len() {
        let (class, len) = table.at(bytes, i + 1);
        if class != SPACE {
            return table.run_end(bytes, i + 1 + len, class);
        }
    }
    let (class, len) = table.at(bytes, i);
    if class != SPACE {
        return table.run_end(bytes, i + len, class);
    }
    // `\s+(?!\S)|\s+`: a white-space run followed by text gives its last character to the next
    // pre-token, unless the run is a single character.
    let mut last_start = i;
    let mut j = i + len;
    while j < bytes.len() {
        let (class, len) = table.at(bytes, j);
        if class != SPACE {
            return if last_start > i { last_start } else { j };
        }
        last_start = j;
        j += len;
    }
    j
}

/// Splits text (between special tokens) into pre-tokens.
pub enum Pretokenizer {
    Gpt2,
    Regex(Box<fancy_regex::Regex>),
}

/// The longest pre-token: a longer match (a run of one letter, of NUL bytes, of spaces, megabytes long)
/// is taken as consecutive slices of at most this many bytes, each cut at the last character boundary
/// before `start + MAX_PIECE_BYTES`. Each slice boundary depends only on the one before it, so text cut at
/// a slice boundary (`Cutter::forced_cut`) pre-tokenizes as it would whole; memory and the merger's work
/// stay bounded on any input. Only such pathological pieces get other ids than an uncapped encoder's.
pub const MAX_PIECE_BYTES: usize = 1 << 20;

/// The end of the slice of a long piece that starts at `start` (`end`: the piece's end).
#[inline]
pub fn slice_end(text: &str, start: usize, end: usize) -> usize {
    if end - start <= MAX_PIECE_BYTES {
        return end;
    }
    let mut cut = start + MAX_PIECE_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

/// Gives `f` the piece `text[start..end]` (`start`: where the last one ended) in slices of at most
/// MAX_PIECE_BYTES.
#[inline]
fn emit_sliced(text: &str, mut start: usize, end: usize, f: &mut impl PieceSink) {
    while start < end {
        let cut = slice_end(text, start, end);
        f.piece_to(cut);
        start = cut;
    }
}

/// What receives the scanner's pre-tokens. Pre-tokens cover the text one after another, so a piece is
/// told by where it ends alone (it starts where the one before it ended, the first at the text's start);
/// a block of ASCII text passes all its pieces at once, as a mask. A sink type's methods are
/// `#[inline(always)]`, so they are compiled into the scanner's loop (`Ranges` makes a sink of a closure).
pub trait PieceSink {
    /// The next piece ends at `end`.
    fn piece_to(&mut self, end: usize);

    /// The next pieces end at `base + k`, for each set bit k of `ends` in turn.
    #[inline(always)]
    fn pieces_to(&mut self, base: usize, mut ends: u64) {
        while ends != 0 {
            self.piece_to(base + ends.trailing_zeros() as usize);
            ends &= ends - 1;
        }
    }
}

/// A sink that calls a closure on each piece's byte range.
pub(crate) struct Ranges<F> {
    start: usize,
    f: F,
}

impl<F: FnMut(usize, usize)> Ranges<F> {
    pub(crate) fn new(f: F) -> Self {
        Ranges { start: 0, f }
    }
}

impl<F: FnMut(usize, usize)> PieceSink for Ranges<F> {
    #[inline(always)]
    fn piece_to(&mut self, end: usize) {
        (self.f)(self.start, end);
        self.start = end;
    }
}

/// The GPT-2 scanner over all of `text`: ASCII blocks through blocks.rs (their class masks from `masks`),
/// the rest a pre-token at a time. Run through `arch::scan_gpt2`, which picks the masks and the
/// instructions this loop is compiled for.
#[inline(always)]
pub(crate) fn for_each_gpt2_range(text: &str, masks: impl Fn(&[u8; BLOCK]) -> BlockMasks, f: &mut impl PieceSink) {
    let table = class_table();
    let bytes = text.as_bytes();
    let mut i = 0;
    // Blocks are not tried again before this position: the last block seen had other bytes up to here, or
    // blocks have not paid lately (text with other bytes everywhere: each failed try doubles the distance
    // to the next, up to 16 blocks; a block that finds pre-tokens resets it).
    let mut bytewise_until = 0;
    let mut backoff = 1;
    while i < bytes.len() {
        if i >= bytewise_until {
            // The text's last bytes (fewer than a block) are a block too, padded with spaces: white space
            // after the end changes no pre-token before it (see `tail_block`).
            let rest = bytes.len() - i;
            let padded;
            let block: &[u8; BLOCK] = match bytes.get(i..i + BLOCK) {
                Some(whole) => whole.try_into().expect("a block's length"),
                None => {
                    padded = tail_block(&bytes[i..]);
                    &padded
                }
            };
            let m = with_multibyte_classes(block, with_multibyte_letters(masks(block)), table);
            let limit = if m.non_ascii == 0 {
                TRUSTED
            } else {
                bytewise_until = i + BLOCK - m.non_ascii.leading_zeros() as usize;
                m.non_ascii.trailing_zeros().saturating_sub(2).min(TRUSTED)
            };
            // Where a piece starts, the one before it ends (bit 0: where the last block's pieces ended).
            let mut ends = block_starts(bytes, i, &m, limit) & !1;
            if rest < BLOCK {
                // Starts at the padding are not the text's; where every start in the text is exact, the
                // last piece ends at the text's end.
                ends &= (1u64 << rest) - 1;
                if limit as usize + 1 >= rest {
                    f.pieces_to(i, ends | 1 << rest);
                    return;
                }
            }
            if ends != 0 {
                f.pieces_to(i, ends);
                i += 63 - ends.leading_zeros() as usize;
                backoff = 1;
                continue;
            }
            bytewise_until = bytewise_until.max(i + backoff * BLOCK);
            backoff = (2 * backoff).min(16);
        }
        i = bytewise_run(table, text, i, bytewise_until, f);
    }
}

/// The last `rest.len()` (< BLOCK) bytes of a text followed by spaces, as a block the scanner reads as it
/// reads any other. The pre-token starts in the text are those of the text alone: a start at k depends on
/// bytes up to k + 1 only (`blocks`' module comment), and there white space stands for the text's end —
/// a run of white space at the end stays one pre-token whether more white space or nothing follows it
/// (`\s+(?!\S)` gives its last character away only to text), and no other rule looks past a character.
/// Contractions are read from the text itself (`block_starts`). Each text of a batch, each record and
/// each stretch between special tokens ends in such a piece of a block, which the byte scanner took a
/// pre-token at a time.
#[inline(always)]
fn tail_block(rest: &[u8]) -> [u8; BLOCK] {
    let mut block = [b' '; BLOCK];
    block[..rest.len()].copy_from_slice(rest);
    block
}

/// Pre-tokens a character at a time from `i` (a pre-token start): at least one, then on up to `until`
/// (where blocks are worth trying again) or the end; returns where it stopped.
#[inline(always)]
fn bytewise_run(table: &ClassTable, text: &str, mut i: usize, until: usize, f: &mut impl PieceSink) -> usize {
    let bytes = text.as_bytes();
    loop {
        let end = gpt2_piece_end(table, bytes, i);
        if end - i <= MAX_PIECE_BYTES {
            f.piece_to(end);
        } else {
            emit_sliced(text, i, end, f);
        }
        i = end;
        if i >= until || i >= bytes.len() {
            return i;
        }
    }
}

/// Text every custom pattern must cover when it is loaded.
const COVERAGE_PROBE: &str = "Hello World 123! It's 3.14, isn't it?\n\t  ünïcödé Жж 中文字 🙂👍🏽 <|x|> a_b-c\r\n";

fn gap(text: &str, at: usize) -> Error {
    let rest: String = text[at..].chars().take(20).collect();
    Error::Pattern(format!(
        "its matches do not cover the text: nothing matches at byte {at} of a text ({rest:?}), which would be lost; \
         use a pattern whose alternatives match every character (GPT-2's does)"
    ))
}

impl Pretokenizer {
    /// `None` or the GPT-2 pattern select the scanner; anything else compiles with fancy-regex, and must
    /// cover a probe text of letters, digits, punctuation, white space and non-Latin scripts: a pattern
    /// whose matches leave text out would lose it (encoding checks every text as well, see `for_each_piece`).
    pub fn new(pattern: Option<&str>) -> Result<Self> {
        match pattern {
            None => Ok(Pretokenizer::Gpt2),
            Some(p) if p == GPT2_PATTERN || GPT2_EQUIVALENT_PATTERNS.contains(&p) => Ok(Pretokenizer::Gpt2),
            Some(p) => {
                let pre = Pretokenizer::regex(p)?;
                pre.for_each_piece(COVERAGE_PROBE, |_| {})?;
                Ok(pre)
            }
        }
    }

    /// The fancy-regex reference for a pattern, whatever it is (used by tests and benchmarks).
    pub fn regex(pattern: &str) -> Result<Self> {
        fancy_regex::Regex::new(pattern)
            .map(|re| Pretokenizer::Regex(Box::new(re)))
            .map_err(|e| Error::Pattern(e.to_string()))
    }

    pub fn is_gpt2(&self) -> bool {
        matches!(self, Pretokenizer::Gpt2)
    }

    /// Calls `f` on each pre-token of `text`, in order. Pre-tokens cover `text` where the pattern does.
    #[inline]
    pub fn for_each_piece<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) -> Result<()> {
        self.for_each_range(text, |start, end| f(&text[start..end]))
    }

    /// `for_each_piece` as byte ranges of `text`, each on character boundaries.
    #[inline]
    pub fn for_each_range(&self, text: &str, f: impl FnMut(usize, usize)) -> Result<()> {
        self.for_each_range_into(text, &mut Ranges::new(f))
    }

    /// `for_each_range` into a `PieceSink` (as ends: the first piece starts at 0).
    #[inline]
    pub fn for_each_range_into(&self, text: &str, f: &mut impl PieceSink) -> Result<()> {
        match self {
            Pretokenizer::Gpt2 => {
                crate::arch::scan_gpt2(text, f);
                Ok(())
            }
            Pretokenizer::Regex(re) => {
                // The matches must cover the text: a gap would be text that no token stands for.
                let mut covered = 0;
                for m in re.find_iter(text) {
                    let m = m.map_err(|e| Error::Pattern(e.to_string()))?;
                    if m.start() != covered {
                        return Err(gap(text, covered));
                    }
                    emit_sliced(text, m.start(), m.end(), f);
                    covered = m.end();
                }
                if covered != text.len() {
                    return Err(gap(text, covered));
                }
                Ok(())
            }
        }
    }

    pub fn pieces<'t>(&self, text: &'t str) -> Result<Vec<&'t str>> {
        let mut out = Vec::new();
        self.for_each_piece(text, |p| out.push(p))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cuts::Cutter;
    use crate::specials::{Segment, SpecialMatcher};

    fn scanner(text: &str) -> Vec<&str> {
        Pretokenizer::Gpt2.pieces(text).unwrap()
    }

    fn reference(text: &str) -> Vec<&str> {
        static REGEX: OnceLock<Pretokenizer> = OnceLock::new();
        REGEX
            .get_or_init(|| Pretokenizer::regex(GPT2_PATTERN).unwrap())
            .pieces(text)
            .unwrap()
    }

    /// Random text over an alphabet of the pattern's edge cases, with any scalar value now and then.
    fn random_texts(seed: u64, count: usize) -> Vec<String> {
        let alphabet: Vec<char> =
            " \t\n\r\u{a0}\u{3000}\u{2028}\u{85}'sdmtlvreSDX0123456789.,!?-_\"é中文Ж٣Ⅻ½😀\u{200d}\u{301}\u{1f}"
                .chars()
                .collect();
        let mut rng = Lcg(seed);
        (0..count)
            .map(|_| {
                let len = (rng.next() % 24) as usize;
                (0..len)
                    .map(|_| {
                        if rng.next().is_multiple_of(8) {
                            // Any scalar value, to reach classes the alphabet misses.
                            char::from_u32((rng.next() % 0x11_0000) as u32).unwrap_or('x')
                        } else {
                            alphabet[(rng.next() as usize) % alphabet.len()]
                        }
                    })
                    .collect()
            })
            .collect()
    }

    /// A tiny deterministic generator, so the property test needs no extra crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    #[test]
    fn scanner_matches_examples() {
        assert_eq!(scanner("Hello, world!"), ["Hello", ",", " world", "!"]);
        assert_eq!(scanner("I'll can't 'S"), ["I", "'ll", " can", "'t", " '", "S"]);
        assert_eq!(scanner("a   b\n\n c  "), ["a", "  ", " b", "\n\n", " c", "  "]);
        assert_eq!(scanner(" 123 4x"), [" 123", " 4", "x"]);
        assert_eq!(scanner("\t\ta"), ["\t", "\t", "a"]);
        assert_eq!(scanner("?'s"), ["?'", "s"]);
    }

    #[test]
    fn scanner_equals_regex_on_random_unicode() {
        for text in random_texts(42, 20_000) {
            assert_eq!(scanner(&text), reference(&text), "text {text:?}");
        }
    }

    /// Characters of every class the scanners tell apart, ASCII and not: letters the block path takes by
    /// their lead byte, the rest one by one, white space of one byte and of several, contractions' parts.
    const MIXED_CHARACTERS: &str = "  \t\n\r\x0b\x0c\x1f'''sdmtlvreSLVRDaxQ09.,!?-_\"éЖ中\u{a0}\u{3000}😀жяЀѿ\u{482}\u{483}Ґ«的是人你한국ąłʃ×÷˂\u{4dc0}、不了，。《─│０٣\u{301}कि𝐀あ・\u{2028}\u{85}\u{1680}\u{2009}\u{202f}";

    /// A text of at least `len` bytes of MIXED_CHARACTERS, one character in sixteen repeated `run` times.
    fn text_with_runs(rng: &mut Lcg, len: usize, run: usize) -> String {
        let alphabet: Vec<char> = MIXED_CHARACTERS.chars().collect();
        let mut text = String::new();
        while text.len() < len {
            let c = alphabet[(rng.next() as usize) % alphabet.len()];
            let times = if rng.next().is_multiple_of(16) { run } else { 1 };
            text.extend(std::iter::repeat_n(c, times));
        }
        text
    }

    /// The scanner's pieces of `text`, with the CPU's class masks and with the portable ones (which CPUs
    /// without AVX2 use), are the regex's.
    fn assert_scanners_match_the_regex(text: &str) {
        let want = reference(text);
        assert_eq!(scanner(text), want, "text {text:?}");
        let mut portable = Vec::new();
        for_each_gpt2_range(
            text,
            crate::blocks::portable_masks,
            &mut Ranges::new(|s, e| portable.push(&text[s..e])),
        );
        assert_eq!(portable, want, "text {text:?}");
    }

    /// Long texts of ASCII and of characters of other scripts, which the 64-byte block path (blocks.rs)
    /// takes (letters by their lead; the rest one by one, white space only before a known byte), so it
    /// runs, meets block edges at every offset, and hands over to the byte scanner around long runs and
    /// characters cut by a block's end.
    #[test]
    fn block_scanner_equals_regex_on_long_texts() {
        let mut rng = Lcg(99);
        for round in 0..4000 {
            let len = 60 + (rng.next() % 300) as usize;
            // Long runs of one character now and then (across blocks).
            assert_scanners_match_the_regex(&text_with_runs(&mut rng, len, 1 + (round % 5) * 20));
        }
    }

    /// Every prefix of varied texts: the text ends at every offset of a block, so its last bytes go
    /// through the padded tail block (`tail_block`) after runs of every class, with both kinds of masks.
    #[test]
    fn texts_ending_anywhere_pre_tokenize_as_the_regex_does() {
        let mut rng = Lcg(7);
        for round in 0..300 {
            let text = text_with_runs(&mut rng, 140, 1 + round % 70);
            for end in (0..=text.len()).filter(|&end| text.is_char_boundary(end)) {
                assert_scanners_match_the_regex(&text[..end]);
            }
        }
    }

    #[test]
    fn other_spellings_of_the_gpt2_pattern_mean_the_same_and_use_the_scanner() {
        for spelling in GPT2_EQUIVALENT_PATTERNS {
            assert!(Pretokenizer::new(Some(spelling)).unwrap().is_gpt2(), "{spelling}");
            let regex = Pretokenizer::regex(spelling).unwrap();
            for text in random_texts(7, 20_000)
                .iter()
                .chain(["a  b  \n\n", "x \t\n y's", "  "].map(String::from).iter())
            {
                assert_eq!(regex.pieces(text).unwrap(), scanner(text), "{spelling} on {text:?}");
            }
        }
        // A different pattern keeps the regex engine.
        assert!(!Pretokenizer::new(Some(r"\p{L}+|\s+|.")).unwrap().is_gpt2());
    }

    #[test]
    fn special_tokens_longest_match_wins() {
        let m = SpecialMatcher::new(&["<|e|>".into(), "<|e|><|e|>".into()]).unwrap();
        let mut seen = Vec::new();
        m.for_each_segment("a<|e|><|e|><|e|>b", |s| {
            seen.push(match s {
                Segment::Text(t) => t.to_string(),
                Segment::Special(i) => format!("#{i}"),
            });
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, ["a", "#1", "#0", "b"]);
    }

    #[test]
    fn cuts_never_change_pretokens() {
        let text = "One line.\nTwo  lines\n\nthree\n four<|e|>five\nsix's\n";
        let specials = SpecialMatcher::new(&["<|e|>".into()]).unwrap();
        let cutter = Cutter::new(specials.clone(), &Pretokenizer::Gpt2);
        assert_cuts_preserve_pieces(&cutter, &specials, text);
    }

    /// Every cut the cutter offers on every prefix of `text` splits it into parts whose pre-tokens
    /// (and special tokens) concatenate to those of the whole.
    fn assert_cuts_preserve_pieces(cutter: &Cutter, specials: &SpecialMatcher, text: &str) {
        let whole = pieces_with_specials(text, specials);
        for end in 1..=text.len() {
            if !text.is_char_boundary(end) {
                continue;
            }
            if let Some(p) = cutter.last_safe_cut(&text.as_bytes()[..end]) {
                let mut parts = pieces_with_specials(&text[..p], specials);
                parts.extend(pieces_with_specials(&text[p..], specials));
                assert_eq!(parts, whole, "text {text:?} cut at {p}");
            }
        }
    }

    #[test]
    fn cuts_never_change_pretokens_on_random_text() {
        let alphabet: Vec<char> = " \t\n\r\u{a0}\u{3000}a'sbZ9.!é中😀<|e>".chars().collect();
        let specials = SpecialMatcher::new(&["<|e|>".into(), "<|".into()]).unwrap();
        let cutter = Cutter::new(specials.clone(), &Pretokenizer::Gpt2);
        let mut rng = Lcg(7);
        for _ in 0..3000 {
            let len = (rng.next() % 30) as usize;
            let text: String = (0..len)
                .map(|_| alphabet[(rng.next() as usize) % alphabet.len()])
                .collect();
            assert_cuts_preserve_pieces(&cutter, &specials, &text);
        }
    }

    fn pieces_with_specials(text: &str, specials: &SpecialMatcher) -> Vec<String> {
        let mut out = Vec::new();
        specials
            .for_each_segment(text, |s| {
                match s {
                    Segment::Text(t) => Pretokenizer::Gpt2.for_each_piece(t, |p| out.push(p.to_string()))?,
                    Segment::Special(i) => out.push(format!("#{i}")),
                }
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn patterns_that_lose_text_are_refused() {
        for bad in ["[a-z]+", "\\w+", "(a+)+$", "\\S+"] {
            let err = Pretokenizer::new(Some(bad))
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(err.to_string().contains("do not cover the text"), "{bad}: {err}");
        }
        // Loaded without the probe (the reference constructor), a gap is still an error while encoding.
        let lossy = Pretokenizer::regex("[a-z]+").unwrap();
        let err = lossy.pieces("hello World").err().unwrap().to_string();
        assert!(err.contains("byte 5") && err.contains("\" World\""), "{err}");
        assert!(lossy.pieces("hello").is_ok());
        let covering = Pretokenizer::new(Some("\\S+|\\s+")).unwrap();
        assert_eq!(covering.pieces("ab  cd").unwrap(), vec!["ab", "  ", "cd"]);
    }
}
