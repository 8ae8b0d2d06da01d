//! The fast path of the JSON-lines reader: one line's text field found by a scanner that jumps from quote
//! to backslash (a vector search, `arch::json_string_stop`) instead of reading a JSON value byte by byte
//! through serde.
//!
//! It is only ever a shortcut. Whenever it answers, serde_json (the reader's reference, `records.rs`) would
//! give the same answer for the line; anything it is not sure of (a line that is not valid JSON, a lone
//! surrogate, a target field that is neither a string nor null, a repeated target key, deep nesting) it
//! leaves to serde_json, which then also words the error. `tests/fuzz.rs` checks the two agree.

use std::borrow::Cow;

/// What the scanner found: the target field's text (None when it is null), no target field, or a line it
/// leaves to serde_json.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan<'a> {
    Field(Option<Cow<'a, str>>),
    NoField,
    Unsure,
}

/// Nesting beyond this is left to serde_json (whose own limit is 128).
const MAX_DEPTH: usize = 100;

/// The value of the string field `name` of the JSON object on `line` (its line end removed).
pub fn text_field<'a>(line: &'a [u8], name: &str) -> Scan<'a> {
    match (Scanner { bytes: line, at: 0 }).object_field(name.as_bytes()) {
        Some(Some(found)) => Scan::Field(found),
        Some(None) => Scan::NoField,
        None => Scan::Unsure,
    }
}

/// A position in a line. Every method returns None where it is not sure the JSON is valid.
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn white(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek() == Some(byte)).then(|| self.at += 1)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.bytes[self.at..].starts_with(word).then(|| self.at += word.len())
    }

    /// The top-level object, keeping the value of key `name`: Some(found) when the line is a valid object.
    fn object_field(&mut self, name: &[u8]) -> Option<Option<Option<Cow<'a, str>>>> {
        self.white();
        let mut found = None;
        self.members(|scanner, key| {
            if key.as_bytes() != name {
                return scanner.value(1);
            }
            if found.is_some() {
                return None; // serde_json keeps the last; not worth a second rule here
            }
            found = Some(match scanner.peek()? {
                b'"' => Some(scanner.string()?),
                b'n' => scanner.literal(b"null").map(|()| None)?,
                _ => return None, // a wrong type: serde_json words the error
            });
            Some(())
        })?;
        self.white();
        (self.at == self.bytes.len()).then_some(found)
    }

    /// An object (the scanner is at its `{`): each member's key handed to `member` with the scanner at
    /// the member's value, which `member` reads.
    fn members(&mut self, mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.white();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            self.white();
            let key = self.string()?;
            self.white();
            self.eat(b':')?;
            self.white();
            member(self, key)?;
            self.white();
            if self.eat(b',').is_none() {
                return self.eat(b'}');
            }
        }
    }

    /// Skips any value (the scanner is at its first byte).
    fn value(&mut self, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.members(|scanner, _| scanner.value(depth + 1)),
            b'[' => {
                self.at += 1;
                self.white();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.white();
                    self.value(depth + 1)?;
                    self.white();
                    if self.eat(b',').is_none() {
                        return self.eat(b']');
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    /// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.bytes.get(at..at + 4)?;
        digits
            .iter()
            .try_fold(0u32, |acc, &d| Some(acc * 16 + (d as char).to_digit(16)?))
    }

    /// A string (the scanner is at its opening quote), borrowed from the line when it holds no escapes.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let mut unescaped: Option<Vec<u8>> = None;
        let mut run = self.at; // start of the text since the last escape
        loop {
            let stop = self.at + crate::arch::json_string_stop(&self.bytes[self.at..])?;
            let raw = &self.bytes[run..stop];
            if self.bytes[stop] < 0x20 {
                return None; // control characters must be escaped
            }
            if self.bytes[stop] == b'"' {
                self.at = stop + 1;
                return match unescaped {
                    None => crate::arch::utf8_str(raw).ok().map(Cow::Borrowed),
                    Some(mut text) => {
                        text.extend_from_slice(raw);
                        crate::arch::utf8_string(text).ok().map(Cow::Owned)
                    }
                };
            }
            // The unescaped text is never longer than what is left of the line.
            let text = unescaped.get_or_insert_with(|| Vec::with_capacity(self.bytes.len() - run));
            text.extend_from_slice(raw);
            let (byte, len) = match *self.bytes.get(stop + 1)? {
                b'"' => (b'"', 2),
                b'\\' => (b'\\', 2),
                b'/' => (b'/', 2),
                b'b' => (0x08, 2),
                b'f' => (0x0c, 2),
                b'n' => (b'\n', 2),
                b'r' => (b'\r', 2),
                b't' => (b'\t', 2),
                b'u' => {
                    let (c, len) = self.unicode_escape(stop)?;
                    text.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    self.at = stop + len;
                    run = self.at;
                    continue;
                }
                _ => return None,
            };
            text.push(byte);
            self.at = stop + len;
            run = self.at;
        }
    }

    /// The character of a `\uXXXX` escape at `at` (a surrogate pair: two escapes), and the bytes it took.
    fn unicode_escape(&self, at: usize) -> Option<(char, usize)> {
        let first = self.hex4(at + 2)?;
        match first {
            0xD800..=0xDBFF => {
                if self.bytes.get(at + 6..at + 8)? != b"\\u" {
                    return None;
                }
                let second = self.hex4(at + 8)?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return None;
                }
                let c = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
                Some((char::from_u32(c)?, 12))
            }
            0xDC00..=0xDFFF => None,
            _ => Some((char::from_u32(first)?, 6)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(line: &str) -> Scan<'_> {
        text_field(line.as_bytes(), "text")
    }

    #[test]
    fn finds_the_field_among_others() {
        let got = text(r#" {"id": -1.5e3, "meta": {"a": [1, "x", {"b": null}], "t": true}, "text": "hi"} "#);
        assert_eq!(got, Scan::Field(Some(Cow::Borrowed("hi"))));
        assert_eq!(text(r#"{"text": null}"#), Scan::Field(None));
        assert_eq!(text(r#"{"body": "x"}"#), Scan::NoField);
        assert_eq!(text("{}"), Scan::NoField);
    }

    #[test]
    fn unescapes_like_json() {
        let got = text(r#"{"text": "a\"b\\c\/d\n\t\u00e9\ud83d\ude00\u4e2d"}"#);
        assert_eq!(got, Scan::Field(Some(Cow::Owned("a\"b\\c/d\n\té😀中".to_string()))));
        assert_eq!(text(r#"{"te\u0078t": "k"}"#), Scan::Field(Some(Cow::Borrowed("k"))));
    }

    #[test]
    fn leaves_what_it_is_not_sure_of_to_serde() {
        for line in [
            r#"{"text": 3}"#,
            r#"{"text": "a", "text": "b"}"#,
            r#"{"text": "\ud800"}"#,
            r#"{"text": "\udc00x"}"#,
            r#"{"text": "a" "#,
            r#"{"text": "a",}"#,
            r#"{"n": 01, "text": "a"}"#,
            r#"{"n": 1., "text": "a"}"#,
            r#"{"text": "tab	inside"}"#,
            r#"{"text": "a"} x"#,
            r#"["text"]"#,
            r#"{"text": "\x"}"#,
        ] {
            assert_eq!(text(line), Scan::Unsure, "{line}");
        }
        assert_eq!(text_field(b"{\"text\": \"\xff\"}", "text"), Scan::Unsure);
        let deep = format!("{{\"a\": {}1{}, \"text\": \"x\"}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(text(&deep), Scan::Unsure);
    }
}
