//! Safe cut points: where text may be split so that encoding the pieces separately gives exactly the
//! ids of the whole. Files are read, and large texts encoded in parallel, in pieces cut here.

use crate::pretokenize::{class_table, Pretokenizer, SPACE};
use crate::specials::SpecialMatcher;

/// Where text may be cut so that pre-tokenizing (and encoding) the pieces separately gives exactly
/// the pre-tokens of the whole: after a special token, and, for the GPT-2 pattern, before the last
/// character (a space, newline or tab) of a white-space run that text follows.
pub struct Cutter {
    specials: SpecialMatcher,
    space_cuts: bool,
}

impl Cutter {
    pub fn new(specials: SpecialMatcher, pretokenizer: &Pretokenizer) -> Self {
        Cutter { specials, space_cuts: pretokenizer.is_gpt2() }
    }

    pub fn specials(&self) -> &SpecialMatcher {
        &self.specials
    }

    /// The largest safe cut `p` with `0 < p < bytes.len()`, where `bytes` starts at a safe cut of a
    /// longer text and `bytes[p..]` may still grow: no special token that could reach past the end of
    /// `bytes` is looked at.
    pub fn last_safe_cut(&self, bytes: &[u8]) -> Option<usize> {
        let limit = bytes.len().checked_sub(self.specials.max_len().max(1))?;
        let spans = self.specials.spans(bytes);
        let after_special = spans.iter().rev().map(|s| s.1).find(|&e| e > 0 && e <= limit);
        let inside_special = |p: usize| {
            // First span ending after p; p is inside it when it starts before p.
            let k = spans.partition_point(|s| s.1 <= p);
            k < spans.len() && spans[k].0 < p
        };
        let mut before_space = None;
        if self.space_cuts {
            let table = class_table();
            let floor = after_special.unwrap_or(0);
            // Cut before the last character of a white-space run that is followed by text (not by a
            // special token): whether the text goes on or not, the rest of the run is one pre-token,
            // and that last character starts the next one (joined to the word for a space, alone
            // otherwise).
            for p in memchr::memrchr3_iter(b' ', b'\n', b'\t', &bytes[..limit]) {
                if p <= floor {
                    break;
                }
                // The text after the run must not be a special token: then the run ends its segment.
                let special_follows = spans.binary_search_by_key(&(p + 1), |s| s.0).is_ok();
                if matches!(table.checked_at(bytes, p + 1), Some(c) if c != SPACE) && !special_follows && !inside_special(p) {
                    before_space = Some(p);
                    break;
                }
            }
        }
        after_special.max(before_space)
    }
}

/// Cuts an in-memory text into chunks of about `target` bytes at safe places.
pub fn split_at_safe_cuts<'t>(text: &'t str, cutter: &Cutter, target: usize) -> Vec<&'t str> {
    let mut out = Vec::new();
    let mut rest = text;
    while rest.len() > target {
        // Look for a cut at or before `target`, else at the first one past it.
        let mut window = target;
        let cut = loop {
            match cutter.last_safe_cut(&rest.as_bytes()[..window]) {
                Some(c) => break Some(c),
                None if window >= rest.len() => break None,
                None => window = (window * 2).min(rest.len()),
            }
        };
        match cut {
            Some(c) => {
                out.push(&rest[..c]);
                rest = &rest[c..];
            }
            None => break,
        }
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}
