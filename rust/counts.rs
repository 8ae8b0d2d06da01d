//! Pre-token count files: the counts of one shard of a corpus, written by `bpe-lm count-pretokens` and
//! summed by `train-tokenizer --from-counts`, which trains exactly as on the whole corpus.
//!
//! Layout (little-endian): the magic `BPELMCNT`, a u32 header length, a JSON header
//! `{"version": 1, "special_tokens": [...], "pattern": "...", "entries": N}`, then N records of
//! (u32 length, the pre-token's bytes, u64 count).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::train::PretokenCounts;

const MAGIC: &[u8; 8] = b"BPELMCNT";
const VERSION: u64 = 1;

/// What a count file was counted with: files merge only when these agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountHeader {
    pub special_tokens: Vec<String>,
    pub pattern: String,
}

fn corrupt(path: &Path, what: &str) -> Error {
    Error::InvalidArgument(format!(
        "{}: not a valid count file from `bpe-lm count-pretokens` ({what})",
        path.display()
    ))
}

/// Writes `counts` to `path` (the caller makes it atomic by writing to a temporary path and renaming).
pub fn write_count_file(path: &Path, counts: &PretokenCounts, header: &CountHeader) -> Result<()> {
    let io = |e| Error::io(Some(path.to_path_buf()), e);
    let json = serde_json::json!({
        "version": VERSION,
        "special_tokens": header.special_tokens,
        "pattern": header.pattern,
        "entries": counts.len(),
    })
    .to_string();
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    out.write_all(MAGIC).map_err(io)?;
    out.write_all(&(json.len() as u32).to_le_bytes()).map_err(io)?;
    out.write_all(json.as_bytes()).map_err(io)?;
    for (piece, count) in counts {
        let len =
            u32::try_from(piece.len()).map_err(|_| Error::InvalidArgument("a pre-token of 4 GiB or more".into()))?;
        out.write_all(&len.to_le_bytes()).map_err(io)?;
        out.write_all(piece).map_err(io)?;
        out.write_all(&count.to_le_bytes()).map_err(io)?;
    }
    out.flush().map_err(io)
}

fn read_exact_or(r: &mut impl Read, buf: &mut [u8], path: &Path, what: &str) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => corrupt(path, what),
        _ => Error::io(Some(path.to_path_buf()), e),
    })
}

/// Adds the counts of the file at `path` into `total` (with overflow checked) and returns its header.
pub fn add_count_file(path: &Path, total: &mut PretokenCounts) -> Result<CountHeader> {
    let file = File::open(path).map_err(|e| Error::io(Some(path.to_path_buf()), e))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; 8];
    read_exact_or(&mut r, &mut magic, path, "shorter than its magic")?;
    if &magic != MAGIC {
        return Err(corrupt(path, "wrong magic"));
    }
    let mut word = [0u8; 4];
    read_exact_or(&mut r, &mut word, path, "truncated header")?;
    let header_len = u32::from_le_bytes(word) as u64;
    if header_len > size {
        return Err(corrupt(path, "header longer than the file"));
    }
    let mut json = vec![0u8; header_len as usize];
    read_exact_or(&mut r, &mut json, path, "truncated header")?;
    let value: serde_json::Value = serde_json::from_slice(&json).map_err(|_| corrupt(path, "header is not JSON"))?;
    if value.get("version").and_then(|v| v.as_u64()) != Some(VERSION) {
        return Err(corrupt(path, "unknown version"));
    }
    let special_tokens = value
        .get("special_tokens")
        .and_then(|v| v.as_array())
        .and_then(|a| {
            a.iter()
                .map(|s| s.as_str().map(String::from))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| corrupt(path, "special_tokens is not a list of strings"))?;
    let pattern = value
        .get("pattern")
        .and_then(|v| v.as_str())
        .ok_or_else(|| corrupt(path, "no pattern"))?
        .to_string();
    let entries = value
        .get("entries")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| corrupt(path, "no entry count"))?;
    let mut piece = Vec::new();
    let mut count = [0u8; 8];
    for _ in 0..entries {
        read_exact_or(&mut r, &mut word, path, "truncated record")?;
        let len = u32::from_le_bytes(word) as u64;
        if len > size {
            return Err(corrupt(path, "record longer than the file"));
        }
        piece.resize(len as usize, 0);
        read_exact_or(&mut r, &mut piece, path, "truncated record")?;
        read_exact_or(&mut r, &mut count, path, "truncated record")?;
        let n = u64::from_le_bytes(count);
        match total.get_mut(piece.as_slice()) {
            Some(c) => {
                *c = c
                    .checked_add(n)
                    .ok_or_else(|| Error::InvalidArgument(format!("{}: counts add up past 2^64", path.display())))?
            }
            None => {
                total.insert(piece.as_slice().into(), n);
            }
        }
    }
    if r.read(&mut word).map_err(|e| Error::io(Some(path.to_path_buf()), e))? != 0 {
        return Err(corrupt(path, "bytes after the last record"));
    }
    Ok(CountHeader {
        special_tokens,
        pattern,
    })
}

/// Sums count files counted with the same special tokens and pattern.
pub fn merge_count_files(paths: &[PathBuf]) -> Result<(PretokenCounts, CountHeader)> {
    let mut total = PretokenCounts::default();
    let mut first: Option<CountHeader> = None;
    for path in paths {
        let header = add_count_file(path, &mut total)?;
        match &first {
            None => first = Some(header),
            Some(h) if *h != header => {
                return Err(Error::InvalidArgument(format!(
                    "{}: counted with other special tokens or another pattern than {}",
                    path.display(),
                    paths[0].display()
                )))
            }
            Some(_) => {}
        }
    }
    let header = first.ok_or_else(|| Error::InvalidArgument("no count files given".into()))?;
    Ok((total, header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;

    #[test]
    fn round_trip_and_merge() {
        let header = CountHeader {
            special_tokens: vec!["<|endoftext|>".into()],
            pattern: "p".into(),
        };
        let mut a = PretokenCounts::default();
        a.insert(b" the".as_slice().into(), 5);
        a.insert(b"\xff\x00".as_slice().into(), u64::MAX - 10);
        let scratch = Scratch::new("counts-round-trip");
        let path = scratch.path("c.bin");
        write_count_file(&path, &a, &header).unwrap();
        let (twice, h) = merge_count_files(std::slice::from_ref(&path)).unwrap();
        assert_eq!((twice, h), (a.clone(), header.clone()));
        let err = merge_count_files(&[path.clone(), path.clone()]).unwrap_err();
        assert!(err.to_string().contains("past 2^64"), "{err}");
    }

    #[test]
    fn corrupted_files_are_errors_never_panics() {
        let header = CountHeader {
            special_tokens: vec![],
            pattern: "p".into(),
        };
        let mut a = PretokenCounts::default();
        for i in 0..50u32 {
            a.insert(i.to_le_bytes().as_slice().into(), i as u64 + 1);
        }
        let scratch = Scratch::new("counts-corrupt");
        let path = scratch.path("c.bin");
        write_count_file(&path, &a, &header).unwrap();
        let good = std::fs::read(&path).unwrap();
        let mut seed = 0x9e3779b97f4a7c15u64;
        for trial in 0..400 {
            let mut bytes = good.clone();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            match trial % 3 {
                0 => bytes.truncate((seed as usize) % good.len()),
                1 => {
                    let at = (seed as usize) % bytes.len();
                    bytes[at] ^= 1 + (seed >> 32) as u8 % 255;
                }
                _ => bytes.extend_from_slice(&seed.to_le_bytes()),
            }
            std::fs::write(&path, &bytes).unwrap();
            // Either a clean error or (a flipped count byte) other counts: never a panic.
            let _ = merge_count_files(std::slice::from_ref(&path));
        }
    }
}
