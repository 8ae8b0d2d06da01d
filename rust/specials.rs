//! Special tokens: found in text (leftmost, longest first), never split or merged.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::error::{Error, Result};

/// A piece of text between special tokens, or the index of the special token found.
pub enum Segment<'t> {
    Text(&'t str),
    Special(usize),
}

/// Special tokens `SpecialMatcher::for_each_segment` finds before it hands on the text between them.
const SPANS_AT_ONCE: usize = 64;

/// Finds special tokens: leftmost match first, the longest where several start at one place.
#[derive(Clone)]
pub struct SpecialMatcher {
    tokens: Vec<String>,
    automaton: Option<AhoCorasick>,
    /// The bytes the tokens begin with, where they are three at most (`absent_from`); else empty.
    first_bytes: Vec<u8>,
    max_len: usize,
}

impl SpecialMatcher {
    pub fn new(tokens: &[String]) -> Result<Self> {
        if tokens.iter().any(|t| t.is_empty()) {
            return Err(Error::InvalidArgument("special tokens must not be empty".into()));
        }
        let automaton = if tokens.is_empty() {
            None
        } else {
            let ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostLongest)
                .build(tokens)
                .map_err(|e| Error::InvalidArgument(format!("special tokens: {e}")))?;
            Some(ac)
        };
        let mut first_bytes: Vec<u8> = tokens.iter().map(|t| t.as_bytes()[0]).collect();
        first_bytes.sort_unstable();
        first_bytes.dedup();
        if first_bytes.len() > 3 {
            first_bytes.clear();
        }
        Ok(SpecialMatcher {
            tokens: tokens.to_vec(),
            automaton,
            first_bytes,
            max_len: tokens.iter().map(|t| t.len()).max().unwrap_or(0),
        })
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Whether no token can be in `bytes`, told by a search for the bytes the tokens begin with alone
    /// (`memchr`), where they are few: a short text without them (a sentence of a batch) costs the search
    /// a few nanoseconds instead of a search by the automaton (100-byte texts: 4% of their encoding).
    #[inline]
    fn absent_from(&self, bytes: &[u8]) -> bool {
        match *self.first_bytes.as_slice() {
            [a] => memchr::memchr(a, bytes).is_none(),
            [a, b] => memchr::memchr2(a, b, bytes).is_none(),
            [a, b, c] => memchr::memchr3(a, b, c, bytes).is_none(),
            _ => false,
        }
    }

    /// Calls `f` with the text segments and special tokens of `text`, in order (empty text skipped).
    #[inline]
    pub fn for_each_segment<'t>(&self, text: &'t str, mut f: impl FnMut(Segment<'t>) -> Result<()>) -> Result<()> {
        let ac = match &self.automaton {
            Some(ac) if !self.absent_from(text.as_bytes()) => ac,
            _ => {
                return if text.is_empty() {
                    Ok(())
                } else {
                    f(Segment::Text(text))
                }
            }
        };
        // The matches are found SPANS_AT_ONCE at a time, then their segments handed on: finding one, then
        // encoding up to it, then finding the next cost the search its pace (web text with a separator
        // every 1.3 KB: 5.7% of a warm call in the search, 2.0% so).
        let mut last = 0;
        let mut found = ac.find_iter(text);
        let mut spans = [(0, 0, 0); SPANS_AT_ONCE];
        loop {
            let mut n = 0;
            for (span, m) in spans.iter_mut().zip(found.by_ref()) {
                *span = (m.start(), m.end(), m.pattern().as_usize());
                n += 1;
            }
            for &(start, end, special) in &spans[..n] {
                if start > last {
                    f(Segment::Text(&text[last..start]))?;
                }
                f(Segment::Special(special))?;
                last = end;
            }
            if n < SPANS_AT_ONCE {
                break;
            }
        }
        if last < text.len() {
            f(Segment::Text(&text[last..]))?;
        }
        Ok(())
    }

    /// (start, end) of every special token in `bytes`.
    pub(crate) fn spans(&self, bytes: &[u8]) -> Vec<(usize, usize)> {
        match &self.automaton {
            Some(ac) if !self.absent_from(bytes) => ac.find_iter(bytes).map(|m| (m.start(), m.end())).collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Segments by the definition: at each place, the longest special token that starts there, else one
    /// character of text.
    fn reference(tokens: &[String], text: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        let mut i = 0;
        while i < text.len() {
            let longest = tokens
                .iter()
                .enumerate()
                .filter(|(_, t)| text[i..].starts_with(t.as_str()))
                .max_by_key(|(k, t)| (t.len(), std::cmp::Reverse(*k)));
            match longest {
                Some((k, t)) => {
                    out.push((true, k.to_string()));
                    i += t.len();
                }
                None => {
                    let c = text[i..].chars().next().expect("a character");
                    match out.last_mut() {
                        Some((false, s)) => s.push(c),
                        _ => out.push((false, c.to_string())),
                    }
                    i += c.len_utf8();
                }
            }
        }
        out
    }

    #[test]
    fn segments_are_the_longest_specials_leftmost_however_many() {
        // Tokens beginning with two bytes (the texts without either are passed whole by `absent_from`),
        // and with four (the automaton alone).
        let sets: [&[&str]; 2] = [
            &["<|e|>", "<|e|><|x|>", "<|x|>", "é"],
            &["<|e|>", "[x]", "{y}", "(z)", "[x]]"],
        ];
        let parts = [
            "<|e|>",
            "<|x|>",
            "<|",
            "|>",
            "a",
            " b",
            "é",
            "\n",
            "<|e|><|x|>",
            "<|e|<|x|>",
            "[x]]",
            "{y",
            "(z)",
        ];
        for set in sets {
            let tokens: Vec<String> = set.iter().map(|t| t.to_string()).collect();
            let matcher = SpecialMatcher::new(&tokens).unwrap();
            let mut rng = 3u64;
            for round in 0..400 {
                // Up to a few hundred parts: texts with more special tokens than are found at once; some
                // of plain text and one of the tokens only.
                let count = (round * 7) % 600;
                let plain = round % 5 == 0;
                let text: String = (0..count)
                    .map(|_| {
                        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        if plain {
                            ["a", " b", "\n", "é", "(z)"][(rng >> 33) as usize % 5]
                        } else {
                            parts[(rng >> 33) as usize % parts.len()]
                        }
                    })
                    .collect();
                let mut got: Vec<(bool, String)> = Vec::new();
                matcher
                    .for_each_segment(&text, |segment| {
                        got.push(match segment {
                            Segment::Text(t) => (false, t.to_string()),
                            Segment::Special(k) => (true, k.to_string()),
                        });
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(got, reference(&tokens, &text), "{text:?}");
                let spans: Vec<(usize, usize)> = matcher.spans(text.as_bytes());
                assert_eq!(
                    spans.len(),
                    got.iter().filter(|(special, _)| *special).count(),
                    "{text:?}"
                );
            }
        }
    }
}
