//! Unicode code points to UTF-8. The bindings read a str that is not all ASCII as code points (CPython
//! stores such a str as 1, 2 or 4 bytes a character, and its stable ABI hands them out widened to 4:
//! `PyUnicode_AsUCS4`) and make its UTF-8 here, because CPython's own UTF-8 form of a str goes a
//! character at a time with a branch each, and is the largest single cost of a first call on such text
//! (py.rs says how much).

/// Code points the writer of text that is not all ASCII takes at a time (`encode_stretch`), between two
/// tries of the ASCII path.
const STRETCH: usize = 32;

/// Appends the UTF-8 of `points` to `out`. Err(i): `points[i]` is not a Unicode scalar value (a
/// surrogate, U+D800..U+DFFF, which a str may hold and UTF-8 may not, or above U+10FFFF); `out` then
/// holds the UTF-8 of `points[..i]`, up to a stretch of it. Where the CPU has AVX2, most points go
/// through `arch::push_utf8_points` (32 ASCII at a time, else 8 of up to 3 bytes each); the rest, and all
/// of them elsewhere, through `encode_stretch`.
pub fn push_utf8(points: &[u32], out: &mut Vec<u8>) -> Result<(), usize> {
    push_utf8_with(points, out, crate::arch::push_utf8_points)
}

/// `push_utf8` on the portable path alone, as on a CPU without AVX2 (for the tests and fuzz targets).
pub fn push_utf8_portable(points: &[u32], out: &mut Vec<u8>) -> Result<(), usize> {
    push_utf8_with(points, out, |_, _| 0)
}

/// `push_utf8` with `vector` for the leading points it can take (`arch::push_utf8_points`' contract).
fn push_utf8_with(
    points: &[u32],
    out: &mut Vec<u8>,
    vector: impl Fn(&[u32], &mut Vec<u8>) -> usize,
) -> Result<(), usize> {
    out.reserve(points.len());
    let mut bytes = [0u8; 4 * STRETCH];
    let mut at = 0;
    while at < points.len() {
        at += vector(&points[at..], out);
        let stretch = &points[at..points.len().min(at + STRETCH)];
        let len = encode_stretch(stretch, &mut bytes).map_err(|i| at + i)?;
        out.extend_from_slice(&bytes[..len]);
        at += stretch.len();
    }
    Ok(())
}

/// Writes the UTF-8 of up to `STRETCH` points into `bytes` and returns its length; Err(i) as `push_utf8`.
/// A point at a time, without a branch: each is written as a 4-byte word of its 1 to 4 bytes, and the
/// next is written over the bytes it does not use.
fn encode_stretch(points: &[u32], bytes: &mut [u8; 4 * STRETCH]) -> Result<usize, usize> {
    let mut len = 0;
    let mut invalid = false;
    for &p in &points[..points.len().min(STRETCH)] {
        let c0 = 0x80 | (p & 0x3F);
        let c6 = 0x80 | ((p >> 6) & 0x3F);
        let c12 = 0x80 | ((p >> 12) & 0x3F);
        use std::hint::select_unpredictable as pick;
        let four = (0xF0 | (p >> 18)) | c12 << 8 | c6 << 16 | c0 << 24;
        let three = (0xE0 | (p >> 12)) | c6 << 8 | c0 << 16;
        let two = (0xC0 | (p >> 6)) | c0 << 8;
        let word = pick(p < 0x80, p, pick(p < 0x800, two, pick(p < 0x1_0000, three, four)));
        let n = 1 + usize::from(p >= 0x80) + usize::from(p >= 0x800) + usize::from(p >= 0x1_0000);
        invalid |= (p & !0x7FF) == 0xD800 || p > 0x10_FFFF;
        // At most STRETCH points of at most 4 bytes: `len` <= 4 * STRETCH - 4 here (the `min` says so to
        // the compiler, which then checks no bound).
        let at = len.min(4 * STRETCH - 4);
        bytes[at..at + 4].copy_from_slice(&word.to_le_bytes());
        len += n;
    }
    if invalid {
        return Err(points.iter().position(|&p| char::from_u32(p).is_none()).unwrap_or(0));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code point, as the blocks' fast and slow paths meet it: alone, among ASCII at every offset
    /// of a block, and in runs that cross blocks; std's `encode_utf8` is the reference.
    #[test]
    fn every_scalar_value_is_std_utf8_and_every_surrogate_is_refused_at_its_index() {
        let mut expected = String::new();
        let mut points = Vec::new();
        for (n, c) in (0..=0x10FFFF_u32).filter_map(char::from_u32).enumerate() {
            points.push(c as u32);
            expected.push(c);
            if n % 7 == 0 {
                points.extend([b'a' as u32; 5]);
                expected.push_str("aaaaa");
            }
        }
        for push in [push_utf8, push_utf8_portable] {
            let mut out = Vec::new();
            assert_eq!(push(&points, &mut out), Ok(()));
            assert_eq!(out, expected.as_bytes());
            for offset in 0..2 * STRETCH + 3 {
                for bad in [0xD800, 0xDBFF, 0xDC00, 0xDFFF, 0x110000, u32::MAX] {
                    let mut points = vec![u32::from(b'x'); 3 * STRETCH];
                    points[offset] = bad;
                    let mut out = Vec::new();
                    assert_eq!(push(&points, &mut out), Err(offset));
                    assert!(out.len() <= offset && out.iter().all(|&b| b == b'x'));
                }
            }
            for len in 0..3 * STRETCH {
                let text: String = "é".repeat(len % 3) + &"y".repeat(len) + &"中".repeat(len % 9);
                let points: Vec<u32> = text.chars().map(u32::from).collect();
                let mut out = b"kept".to_vec();
                assert_eq!(push(&points, &mut out), Ok(()));
                assert_eq!(out, [b"kept", text.as_bytes()].concat());
            }
        }
    }
}
