//! Text held as code units, one a character: how CPython keeps a str (Latin-1, UCS-2 or UCS-4, whichever
//! its widest character needs), made UTF-8 a part at a time. A large str is then encoded from a buffer
//! that stays in cache, and its whole UTF-8 form (which CPython builds in an over-allocated buffer and then
//! copies: twice the text's size in fresh memory) is never made.

/// Code units made UTF-8 at a time when a text given so is encoded (`Encoder::encode_units_into`): a part
/// that stays in L2.
pub const UNITS_AT_ONCE: usize = 1 << 16;

/// Units `CodeUnits::mostly_three_byte` looks at, at most.
const SAMPLED_UNITS: usize = 256;

/// A text's code units, each a character (CPython's UCS-2 form holds characters below U+10000 only, so
/// there are no surrogate pairs: a surrogate unit is a lone surrogate, which UTF-8 cannot hold).
#[derive(Clone, Copy, Debug)]
pub enum CodeUnits<'a> {
    Latin1(&'a [u8]),
    Ucs2(&'a [u16]),
    Ucs4(&'a [u32]),
}

/// Units made UTF-8 together where the CPU has no wider way (`arch::utf8_of_units`), or past where
/// it stopped: a block whose units are all ASCII, or all below U+0800 (one or two bytes each), or all in
/// the BMP and none a surrogate (one to three bytes each), is written with no branch per unit on its size
/// (the bytes of the largest form written each time, the position moved on by the size).
const BLOCK: usize = 16;

trait Unit: Copy + crate::arch::SimdUnit {
    /// The most bytes of UTF-8 a unit of this size can take.
    const MAX_UTF8: usize;
    fn value(self) -> u32;
}

impl Unit for u8 {
    const MAX_UTF8: usize = 2;
    #[inline(always)]
    fn value(self) -> u32 {
        self as u32
    }
}

impl Unit for u16 {
    const MAX_UTF8: usize = 3;
    #[inline(always)]
    fn value(self) -> u32 {
        self as u32
    }
}

impl Unit for u32 {
    const MAX_UTF8: usize = 4;
    #[inline(always)]
    fn value(self) -> u32 {
        self
    }
}

impl CodeUnits<'_> {
    /// Whether this CPU makes UTF-8 of code units many at a time (`arch::utf8_of_units`: AVX2 or
    /// AVX-512), at about memory speed; else one block of 16 at a time in plain code, several times slower
    /// on text that is not mostly ASCII.
    pub fn utf8_in_blocks() -> bool {
        crate::arch::utf8_of_units_in_blocks()
    }

    /// Whether most of the text's characters take three UTF-8 bytes or more (Chinese, Japanese, Korean),
    /// judged by up to SAMPLED_UNITS units spread evenly over it.
    pub fn mostly_three_byte(&self) -> bool {
        let len = self.len();
        let step = len.div_ceil(SAMPLED_UNITS).max(1);
        let (mut seen, mut wide) = (0, 0);
        for i in (0..len).step_by(step) {
            let unit = match self {
                CodeUnits::Latin1(u) => u[i] as u32,
                CodeUnits::Ucs2(u) => u[i] as u32,
                CodeUnits::Ucs4(u) => u[i],
            };
            seen += 1;
            wide += (unit >= 0x800) as usize;
        }
        2 * wide > seen
    }

    pub fn len(&self) -> usize {
        match self {
            CodeUnits::Latin1(u) => u.len(),
            CodeUnits::Ucs2(u) => u.len(),
            CodeUnits::Ucs4(u) => u.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the UTF-8 form of units `from..to` to `out`. Err(index) of the first unit that is no
    /// character (a surrogate, or past U+10FFFF); `out` then holds the UTF-8 of the units before it.
    pub fn append_utf8(&self, from: usize, to: usize, out: &mut Vec<u8>) -> Result<(), usize> {
        match self {
            CodeUnits::Latin1(u) => append(&u[from..to], from, out),
            CodeUnits::Ucs2(u) => append(&u[from..to], from, out),
            CodeUnits::Ucs4(u) => append(&u[from..to], from, out),
        }
    }
}

/// `CodeUnits::append_utf8` of `units`, the first of which is unit `base` of the text: UNITS_AT_ONCE at a
/// time, so that the room made for the largest forms (zeroed, then cut back to what was written) stays in
/// cache, also when a whole text is made UTF-8 at once.
fn append<U: Unit>(units: &[U], base: usize, out: &mut Vec<u8>) -> Result<(), usize> {
    for (k, part) in units.chunks(UNITS_AT_ONCE).enumerate() {
        append_part(part, base + k * UNITS_AT_ONCE, out)?;
    }
    Ok(())
}

/// `append` of at most UNITS_AT_ONCE units.
fn append_part<U: Unit>(units: &[U], base: usize, out: &mut Vec<u8>) -> Result<(), usize> {
    let start = out.len();
    // Room for the largest form of every unit (each block writes within its own units' share).
    out.resize(start + units.len() * U::MAX_UTF8, 0);
    let dst = &mut out[start..];
    let (mut i, mut n) = (0, 0);
    let mut failed = None;
    while i < units.len() {
        let (took, wrote) = crate::arch::utf8_of_units(&units[i..], &mut dst[n..]);
        (i, n) = (i + took, n + wrote);
        let block = &units[i..units.len().min(i + BLOCK)];
        match put_block(block, dst, n) {
            Ok(end) => (i, n) = (i + block.len(), end),
            Err((at, end)) => {
                (n, failed) = (end, Some(base + i + at));
                break;
            }
        }
    }
    out.truncate(start + n);
    failed.map_or(Ok(()), Err)
}

/// Writes the UTF-8 of `block` (at most BLOCK units) into `dst` from `n`: Ok(where it ends), or Err((index
/// within `block` of the first unit that is no character, where the UTF-8 of the units before it ends)).
fn put_block<U: Unit>(block: &[U], dst: &mut [u8], mut n: usize) -> Result<usize, (usize, usize)> {
    let seen = block.iter().fold(0, |seen, u| seen | u.value());
    if block.len() < BLOCK {
        // The last units: one character at a time.
    } else if seen < 0x80 {
        for (d, u) in dst[n..n + BLOCK].iter_mut().zip(block) {
            *d = u.value() as u8;
        }
        return Ok(n + BLOCK);
    } else if seen < 0x800 {
        for u in block {
            let c = u.value();
            let two = c >= 0x80;
            dst[n] = if two { 0xC0 | (c >> 6) as u8 } else { c as u8 };
            dst[n + 1] = 0x80 | (c & 0x3F) as u8;
            n += 1 + two as usize;
        }
        return Ok(n);
    } else if seen < 0x10000 && !block.iter().any(|u| u.value() & 0xF800 == 0xD800) {
        for u in block {
            let c = u.value();
            let size = 1 + (c >= 0x80) as usize + (c >= 0x800) as usize;
            let bytes = match size {
                1 => [c as u8, 0, 0],
                2 => [0xC0 | (c >> 6) as u8, 0x80 | (c & 0x3F) as u8, 0],
                _ => [
                    0xE0 | (c >> 12) as u8,
                    0x80 | (c >> 6 & 0x3F) as u8,
                    0x80 | (c & 0x3F) as u8,
                ],
            };
            dst[n..n + 3].copy_from_slice(&bytes);
            n += size;
        }
        return Ok(n);
    }
    for (i, u) in block.iter().enumerate() {
        let c = char::from_u32(u.value()).ok_or((i, n))?;
        n += c.encode_utf8(&mut dst[n..]).len();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text's code units in the narrowest form that holds them, as CPython keeps it.
    fn units_of(text: &str) -> (Vec<u8>, Vec<u16>, Vec<u32>) {
        let wide: Vec<u32> = text.chars().map(|c| c as u32).collect();
        let max = wide.iter().copied().max().unwrap_or(0);
        let latin1 = if max < 0x100 {
            wide.iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        let ucs2 = if max < 0x10000 {
            wide.iter().map(|&c| c as u16).collect()
        } else {
            Vec::new()
        };
        (latin1, ucs2, wide)
    }

    #[test]
    fn every_form_gives_the_texts_utf8_in_any_parts() {
        let texts = [
            String::new(),
            "plain ASCII, longer than one run of sixteen units".repeat(3),
            "café crème brûlée — déjà vu, naïve façade".repeat(5),
            "Привет, мир! Это текст на русском языке.".repeat(4),
            "中文字符和English混合 text 123".repeat(6),
            "emoji 🙂👍🏽 and 𝄞 beyond the BMP".repeat(3),
            "\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}".into(),
            // Every character below U+0800, NUL included, in an order that mixes one- and two-byte ones.
            (0..0x800u32).map(|c| char::from_u32(c * 7 % 0x800).unwrap()).collect(),
            (0..0x100u32)
                .rev()
                .map(|c| char::from_u32(c).unwrap())
                .collect::<String>()
                .repeat(3),
        ];
        for text in &texts {
            let (latin1, ucs2, ucs4) = units_of(text);
            let n = ucs4.len();
            let mut forms = vec![CodeUnits::Ucs4(&ucs4)];
            if !ucs2.is_empty() || n == 0 {
                forms.push(CodeUnits::Ucs2(&ucs2));
            }
            if !latin1.is_empty() || n == 0 {
                forms.push(CodeUnits::Latin1(&latin1));
            }
            for units in forms {
                for step in [1, 7, 16, 17, 1000] {
                    let mut out = Vec::new();
                    let mut from = 0;
                    while from < n {
                        let to = (from + step).min(n);
                        units.append_utf8(from, to, &mut out).unwrap();
                        from = to;
                    }
                    assert_eq!(out, text.as_bytes(), "{units:?} in parts of {step}");
                }
            }
        }
    }

    #[test]
    fn a_lone_surrogate_or_a_unit_past_unicode_is_refused_at_its_index() {
        let mut ucs2: Vec<u16> = "abcdefghijklmnopqrstuvwxyz".encode_utf16().collect();
        ucs2[20] = 0xD800;
        let mut out = Vec::new();
        assert_eq!(CodeUnits::Ucs2(&ucs2).append_utf8(3, 26, &mut out), Err(20));
        assert_eq!(out, b"defghijklmnopqrst");
        // Anywhere in a long text, inside the blocks the SIMD path takes as well: the units before it written.
        let text: String = "Жил-был кот, 中文 and plain words. ".repeat(8);
        for at in [0, 1, 31, 32, 33, 47, 64, 100, 200] {
            for bad in [0xD800u32, 0xDBFF, 0xDC00, 0xDFFF] {
                let mut wide: Vec<u32> = text.chars().map(|c| c as u32).collect();
                wide.insert(at, bad);
                let narrow: Vec<u16> = wide.iter().map(|&c| c as u16).collect();
                let before: String = text.chars().take(at).collect();
                for units in [CodeUnits::Ucs2(&narrow), CodeUnits::Ucs4(&wide)] {
                    let mut out = b"kept".to_vec();
                    assert_eq!(units.append_utf8(0, units.len(), &mut out), Err(at), "{units:?}");
                    assert_eq!(out, [b"kept", before.as_bytes()].concat());
                }
            }
        }
        let ucs4 = [0x61, 0xDFFF, 0x62];
        assert_eq!(CodeUnits::Ucs4(&ucs4).append_utf8(0, 3, &mut Vec::new()), Err(1));
        let ucs4 = [0x61, 0x11_0000];
        assert_eq!(CodeUnits::Ucs4(&ucs4).append_utf8(0, 2, &mut Vec::new()), Err(1));
    }
}
