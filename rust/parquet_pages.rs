//! The pages of a parquet column chunk, found by their headers alone: where each page lies, how many
//! rows it holds and whether it needs the dictionary, with nothing inflated or decoded. One thread
//! walks a file this way (`parquet_input::ColumnChunks`, under the pipeline's lock) and the workers
//! inflate and decode the pages they are handed, in parallel: inflating (snappy, zstd) was most of
//! the reading and, done where the pages were walked, one thread's speed capped the whole pipeline.
//!
//! A page header is parquet.thrift's `PageHeader` in Thrift's compact protocol. This reads the fields
//! the walk needs and skips every other field of any type (statistics, CRCs, fields added by later
//! versions of the format); damaged bytes give an error, never a panic, and nesting is bounded.

/// What a page is, as far as the walk needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageKind {
    /// The row group's dictionary (before its data pages).
    Dictionary,
    /// Values of `rows` rows (v1 pages: their count of values, one per row in a column that does not
    /// repeat), dictionary-encoded or not.
    Data { rows: u64, dictionary_encoded: bool },
    /// An index page or a kind unknown to this reader: skipped, as the `parquet` crate skips it.
    Other,
}

/// A page's header: its length, the page's bytes after it (as stored), once inflated, and its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageHeader {
    pub header_len: usize,
    pub stored: u64,
    pub inflated: u64,
    pub kind: PageKind,
}

/// What `page_header` made of some bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    Header(PageHeader),
    /// The header goes on past the bytes given.
    NeedMore,
    /// Not a page header: why.
    Damaged(String),
}

// parquet.thrift's page types and the encodings that refer to a dictionary.
const DATA_PAGE: i64 = 0;
const DICTIONARY_PAGE: i64 = 2;
const DATA_PAGE_V2: i64 = 3;
const PLAIN_DICTIONARY: i64 = 2;
const RLE_DICTIONARY: i64 = 8;

/// Structs, lists and maps nested deeper than this are taken for damage (a page header nests three).
const MAX_DEPTH: u32 = 16;

enum Fault {
    End,
    Damaged(&'static str),
}

type Step<T> = std::result::Result<T, Fault>;

/// Thrift compact protocol types.
mod ty {
    pub const TRUE: u8 = 1;
    pub const FALSE: u8 = 2;
    pub const BYTE: u8 = 3;
    pub const I16: u8 = 4;
    pub const I32: u8 = 5;
    pub const I64: u8 = 6;
    pub const DOUBLE: u8 = 7;
    pub const BINARY: u8 = 8;
    pub const LIST: u8 = 9;
    pub const SET: u8 = 10;
    pub const MAP: u8 = 11;
    pub const STRUCT: u8 = 12;
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Step<u8> {
        let b = *self.bytes.get(self.at).ok_or(Fault::End)?;
        self.at += 1;
        Ok(b)
    }

    fn skip(&mut self, n: u64) -> Step<()> {
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return Err(Fault::End);
        }
        self.at += n as usize;
        Ok(())
    }

    fn varint(&mut self) -> Step<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Fault::Damaged("a number runs past ten bytes"))
    }

    fn zigzag(&mut self) -> Step<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// The next field's (id, type) after the one with id `last`; None at the struct's end.
    fn field(&mut self, last: i64) -> Step<Option<(i64, u8)>> {
        let b = self.byte()?;
        if b == 0 {
            return Ok(None);
        }
        let (delta, kind) = (i64::from(b >> 4), b & 0x0f);
        let id = if delta == 0 { self.zigzag()? } else { last + delta };
        Ok(Some((id, kind)))
    }

    /// Skips a value of type `kind` (a field's, or a list's element).
    fn skip_value(&mut self, kind: u8, depth: u32) -> Step<()> {
        if depth > MAX_DEPTH {
            return Err(Fault::Damaged("nested too deep"));
        }
        match kind {
            ty::TRUE | ty::FALSE => Ok(()),
            ty::BYTE => self.skip(1),
            ty::I16 | ty::I32 | ty::I64 => self.varint().map(drop),
            ty::DOUBLE => self.skip(8),
            ty::BINARY => {
                let n = self.varint()?;
                self.skip(n)
            }
            ty::LIST | ty::SET => {
                let b = self.byte()?;
                let (mut n, element) = (u64::from(b >> 4), b & 0x0f);
                if n == 15 {
                    n = self.varint()?;
                }
                // Booleans in a list take a byte each (not folded into a type as fields are).
                let element = if element == ty::TRUE || element == ty::FALSE {
                    ty::BYTE
                } else {
                    element
                };
                for _ in 0..n {
                    self.skip_value(element, depth + 1)?;
                }
                Ok(())
            }
            ty::MAP => {
                let n = self.varint()?;
                if n > 0 {
                    let b = self.byte()?;
                    for _ in 0..n {
                        self.skip_value(b >> 4, depth + 1)?;
                        self.skip_value(b & 0x0f, depth + 1)?;
                    }
                }
                Ok(())
            }
            ty::STRUCT => self.fields(depth + 1, |_, _, _| Ok(false)),
            _ => Err(Fault::Damaged("a field of an unknown type")),
        }
    }

    /// Reads a struct's fields, handing each to `take(cursor, id, type)`, which reads it and says so
    /// (true) or leaves it to be skipped (false).
    fn fields(&mut self, depth: u32, mut take: impl FnMut(&mut Self, i64, u8) -> Step<bool>) -> Step<()> {
        let mut last = 0;
        while let Some((id, kind)) = self.field(last)? {
            if !take(self, id, kind)? {
                self.skip_value(kind, depth)?;
            }
            last = id;
        }
        Ok(())
    }

    /// An i32 field's value, or an error if the field has another type.
    fn int(&mut self, kind: u8) -> Step<i64> {
        if kind != ty::I32 {
            return Err(Fault::Damaged("a field that should be a 32-bit integer is not"));
        }
        let v = self.zigzag()?;
        i32::try_from(v).map_err(|_| Fault::Damaged("a 32-bit integer out of range"))?;
        Ok(v)
    }
}

/// The fields of a data page's or dictionary page's own header that the walk reads.
#[derive(Default)]
struct Inner {
    values: Option<i64>,
    rows: Option<i64>,
    encoding: Option<i64>,
}

/// Reads the inner header of a v1 data page (`values` 1, `encoding` 2), a dictionary page (1, 2) or a
/// v2 data page (`values` 1, `rows` 3, `encoding` 4).
fn inner(c: &mut Cursor<'_>, kind: u8, v2: bool) -> Step<Inner> {
    if kind != ty::STRUCT {
        return Err(Fault::Damaged("a page's own header is not a struct"));
    }
    let mut found = Inner::default();
    c.fields(1, |c, id, kind| {
        match (id, v2) {
            (1, _) => found.values = Some(c.int(kind)?),
            (2, false) | (4, true) => found.encoding = Some(c.int(kind)?),
            (3, true) => found.rows = Some(c.int(kind)?),
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(found)
}

/// The page header at the start of `bytes`.
pub(crate) fn page_header(bytes: &[u8]) -> Parsed {
    let mut c = Cursor { bytes, at: 0 };
    let (mut page_type, mut inflated, mut stored) = (None, None, None);
    let (mut v1, mut dictionary, mut v2) = (None, None, None);
    let read = c.fields(0, |c, id, kind| {
        match id {
            1 => page_type = Some(c.int(kind)?),
            2 => inflated = Some(c.int(kind)?),
            3 => stored = Some(c.int(kind)?),
            5 => v1 = Some(inner(c, kind, false)?),
            7 => dictionary = Some(inner(c, kind, false)?),
            8 => v2 = Some(inner(c, kind, true)?),
            _ => return Ok(false),
        }
        Ok(true)
    });
    match read {
        Ok(()) => {}
        Err(Fault::End) => return Parsed::NeedMore,
        Err(Fault::Damaged(why)) => return Parsed::Damaged(format!("a page header is damaged: {why}")),
    }
    let damaged = |why: &str| Parsed::Damaged(format!("a page header {why}"));
    let (Some(page_type), Some(inflated), Some(stored)) = (page_type, inflated, stored) else {
        return damaged("lacks its type or sizes");
    };
    if inflated < 0 || stored < 0 {
        return damaged("gives a negative size");
    }
    let count = |n: Option<i64>| n.filter(|&n| n >= 0).map(|n| n as u64);
    let dictionary_encoded = |inner: &Inner| matches!(inner.encoding, Some(PLAIN_DICTIONARY | RLE_DICTIONARY));
    let kind = match page_type {
        DATA_PAGE | DATA_PAGE_V2 => {
            // A v1 page's rows are its count of values (`PageKind::Data`), a v2 page's its count of rows.
            let (header, rows, counted) = match page_type {
                DATA_PAGE => (&v1, v1.as_ref().and_then(|h| h.values), "values"),
                _ => (&v2, v2.as_ref().and_then(|h| h.rows), "rows"),
            };
            let Some(h) = header else {
                return damaged("of a data page lacks the data page's header");
            };
            let Some(rows) = count(rows) else {
                return damaged(&format!("of a data page lacks its count of {counted}"));
            };
            PageKind::Data {
                rows,
                dictionary_encoded: dictionary_encoded(h),
            }
        }
        DICTIONARY_PAGE if dictionary.is_some() => PageKind::Dictionary,
        DICTIONARY_PAGE => return damaged("of a dictionary page lacks the dictionary's header"),
        _ => PageKind::Other,
    };
    Parsed::Header(PageHeader {
        header_len: c.at,
        stored: stored as u64,
        inflated: inflated as u64,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact-protocol writer for the tests' headers.
    struct W(Vec<u8>, i64);

    impl W {
        fn field(&mut self, id: i64, kind: u8) {
            if (1..=15).contains(&(id - self.1)) {
                self.0.push(((id - self.1) as u8) << 4 | kind);
            } else {
                self.0.push(kind);
                self.varint(((id << 1) ^ (id >> 63)) as u64);
            }
            self.1 = id;
        }
        fn varint(&mut self, mut v: u64) {
            while v >= 0x80 {
                self.0.push(v as u8 | 0x80);
                v >>= 7;
            }
            self.0.push(v as u8);
        }
        fn int(&mut self, id: i64, v: i64) {
            self.field(id, ty::I32);
            self.varint(((v << 1) ^ (v >> 63)) as u64);
        }
        fn begin(&mut self, id: i64) -> i64 {
            self.field(id, ty::STRUCT);
            std::mem::replace(&mut self.1, 0)
        }
        fn end(&mut self, last: i64) {
            self.0.push(0);
            self.1 = last;
        }
    }

    fn header(page_type: i64, inner_id: i64, inner: &[(i64, i64)], extra: impl FnOnce(&mut W)) -> Vec<u8> {
        let mut w = W(Vec::new(), 0);
        w.int(1, page_type);
        w.int(2, 1000);
        w.int(3, 400);
        extra(&mut w);
        let last = w.begin(inner_id);
        for &(id, v) in inner {
            w.int(id, v);
        }
        // Statistics with a long binary value, skipped.
        let outer = w.begin(5.max(inner.len() as i64 + 1));
        w.field(1, ty::BINARY);
        w.varint(300);
        w.0.extend(std::iter::repeat_n(b'x', 300));
        w.end(outer);
        w.end(last);
        w.0.push(0);
        w.0
    }

    #[test]
    fn reads_v1_v2_and_dictionary_headers_and_skips_the_rest() {
        let v1 = header(0, 5, &[(1, 7), (2, 8)], |_| {});
        let expect = |kind| {
            Parsed::Header(PageHeader {
                header_len: 0,
                stored: 400,
                inflated: 1000,
                kind,
            })
        };
        let strip = |p: Parsed| match p {
            Parsed::Header(h) => Parsed::Header(PageHeader { header_len: 0, ..h }),
            other => other,
        };
        assert_eq!(
            strip(page_header(&v1)),
            expect(PageKind::Data {
                rows: 7,
                dictionary_encoded: true
            })
        );
        let Parsed::Header(h) = page_header(&v1) else {
            unreachable!()
        };
        assert_eq!(h.header_len, v1.len());
        // A v2 page's rows are its field 3 (not its values, field 1); PLAIN is not dictionary-encoded.
        let v2 = header(3, 8, &[(1, 9), (2, 2), (3, 5), (4, 0)], |w| {
            w.field(4, ty::I32);
            w.varint(12345);
        });
        assert_eq!(
            strip(page_header(&v2)),
            expect(PageKind::Data {
                rows: 5,
                dictionary_encoded: false
            })
        );
        let dict = header(2, 7, &[(1, 3), (2, 0)], |_| {});
        assert_eq!(strip(page_header(&dict)), expect(PageKind::Dictionary));
        let index = header(1, 6, &[], |_| {});
        assert_eq!(strip(page_header(&index)), expect(PageKind::Other));
        // Cut anywhere: more is needed; never a panic.
        for cut in 0..v1.len() {
            assert_eq!(page_header(&v1[..cut]), Parsed::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn damaged_headers_are_named_never_a_panic() {
        let no_inner = {
            let mut w = W(Vec::new(), 0);
            w.int(1, 0);
            w.int(2, 10);
            w.int(3, 10);
            w.0.push(0);
            w.0
        };
        assert!(matches!(page_header(&no_inner), Parsed::Damaged(m) if m.contains("lacks")));
        let negative = header(0, 5, &[(1, -1), (2, 0)], |_| {});
        assert!(matches!(page_header(&negative), Parsed::Damaged(_)));
        // Field 9 (skipped) a struct of a struct of ...
        let deep: Vec<u8> = std::iter::once(0x9c_u8)
            .chain(std::iter::repeat_n(0x1c_u8, 100))
            .collect();
        assert!(matches!(page_header(&deep), Parsed::Damaged(m) if m.contains("deep")));
        let unknown = [0x1d_u8, 0];
        assert!(matches!(page_header(&unknown), Parsed::Damaged(_)));
        // Every byte string of up to two bytes, and bytes changed in a real header: an answer, no panic.
        let v1 = header(0, 5, &[(1, 7), (2, 8)], |_| {});
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let _ = page_header(&[a, b]);
            }
            for at in 0..v1.len() {
                let mut bytes = v1.clone();
                bytes[at] = a;
                let _ = page_header(&bytes);
            }
        }
    }
}
