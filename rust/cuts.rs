//! Safe cut points: where text may be split so that encoding the pieces separately gives exactly the
//! ids of the whole. Files are read, and large texts encoded in parallel, in pieces cut here.

use crate::pretokenize::{class_table, gpt2_piece_end, slice_end, Pretokenizer, MAX_PIECE_BYTES, SPACE};
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
        Cutter {
            specials,
            space_cuts: pretokenizer.is_gpt2(),
        }
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
                if matches!(table.checked_at(bytes, p + 1), Some(c) if c != SPACE)
                    && !special_follows
                    && !inside_special(p)
                {
                    before_space = Some(p);
                    break;
                }
            }
        }
        after_special.max(before_space)
    }
}

/// Text held without a safe cut before a forced cut is looked for: a few of the longest pre-tokens.
pub const FORCED_CUT_AFTER: usize = 4 * MAX_PIECE_BYTES;

impl Cutter {
    /// For text with no safe cut (`bytes`, starting at a safe cut, ends inside one pre-token megabytes
    /// long: a run of one letter, of NUL bytes, of white space), the last boundary of that pre-token's
    /// slices (see `pretokenize::MAX_PIECE_BYTES`) at least a few bytes before the end. Pre-tokenizing the
    /// rest from there gives the same slices, so the cut changes no id. GPT-2 scanner only.
    pub fn forced_cut(&self, bytes: &[u8]) -> Option<usize> {
        if !self.space_cuts {
            return None;
        }
        // No cut past the start of a special token, nor within reach of one that may come at the end.
        let end = bytes.len().checked_sub(self.specials.max_len().max(4))?;
        let end = self.specials.spans(bytes).first().map_or(end, |s| s.0.min(end));
        let text = match std::str::from_utf8(&bytes[..end]) {
            Ok(t) => t,
            // `end` may fall inside a character (or invalid bytes follow): the valid text before it.
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()?,
        };
        let end = text.len();
        let table = class_table();
        let (mut start, mut piece_end) = (0, 0);
        while piece_end < end {
            start = piece_end;
            piece_end = gpt2_piece_end(table, text.as_bytes(), start);
        }
        let (mut cut, mut best) = (start, None);
        while piece_end - cut > MAX_PIECE_BYTES {
            cut = slice_end(text, cut, piece_end);
            if cut < end {
                best = Some(cut);
            }
        }
        best.filter(|&c| c > 0)
    }
}

impl Cutter {
    /// Where text that may still grow (`bytes`, starting at a safe cut) can be cut now: its last safe cut
    /// (`last_safe_cut`), else, once FORCED_CUT_AFTER bytes are held without one, a boundary of the
    /// pre-token they end in (`forced_cut`), so that memory stays bounded.
    pub fn cut(&self, bytes: &[u8]) -> Option<usize> {
        self.last_safe_cut(bytes).or_else(|| {
            (bytes.len() >= FORCED_CUT_AFTER)
                .then(|| self.forced_cut(bytes))
                .flatten()
        })
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
            match cutter.cut(&rest.as_bytes()[..window]) {
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
