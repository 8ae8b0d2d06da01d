//! Special tokens: found in text (leftmost, longest first), never split or merged.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::error::{Error, Result};

/// A piece of text between special tokens, or the index of the special token found.
pub enum Segment<'t> {
    Text(&'t str),
    Special(usize),
}

/// Finds special tokens: leftmost match first, the longest where several start at one place.
#[derive(Clone)]
pub struct SpecialMatcher {
    tokens: Vec<String>,
    automaton: Option<AhoCorasick>,
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
        Ok(SpecialMatcher {
            tokens: tokens.to_vec(),
            automaton,
            max_len: tokens.iter().map(|t| t.len()).max().unwrap_or(0),
        })
    }

    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Calls `f` with the text segments and special tokens of `text`, in order (empty text skipped).
    #[inline]
    pub fn for_each_segment<'t>(&self, text: &'t str, mut f: impl FnMut(Segment<'t>) -> Result<()>) -> Result<()> {
        let Some(ac) = &self.automaton else {
            return if text.is_empty() {
                Ok(())
            } else {
                f(Segment::Text(text))
            };
        };
        let mut last = 0;
        for m in ac.find_iter(text) {
            if m.start() > last {
                f(Segment::Text(&text[last..m.start()]))?;
            }
            f(Segment::Special(m.pattern().as_usize()))?;
            last = m.end();
        }
        if last < text.len() {
            f(Segment::Text(&text[last..]))?;
        }
        Ok(())
    }

    /// (start, end) of every special token in `bytes`.
    pub(crate) fn spans(&self, bytes: &[u8]) -> Vec<(usize, usize)> {
        match &self.automaton {
            None => Vec::new(),
            Some(ac) => ac.find_iter(bytes).map(|m| (m.start(), m.end())).collect(),
        }
    }
}
