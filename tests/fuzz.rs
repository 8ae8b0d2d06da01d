//! The fuzz harness of the core: property tests on generated inputs (proptest, stable Rust), each run for a
//! time budget rather than a fixed number of cases, shrinking any failure to a smallest input.
//!
//! `cargo test --release --test fuzz` runs every target for `BPE_LM_FUZZ_SECONDS` seconds (default 1: the
//! slice CI runs); `python benches/fuzz.py --minutes N` runs longer and tabulates the report lines
//! ("fuzz TARGET: N executions, F failures"). A panic inside a target counts as a failure: the properties
//! call the same functions the Python bindings call, so a panic here is one that `guarded` would have had
//! to turn into an "internal error" in Python.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use _core::code_units::CodeUnits;
use _core::counts::{add_count_file, write_count_file, CountHeader};
use _core::cuts::{split_at_safe_cuts, Cutter};
use _core::encode::Encoder;
use _core::npy::{Dtype, IdOutputs, IdWriter, PerInputFiles};
use _core::pretokenize::{Pretokenizer, GPT2_PATTERN};
use _core::progress::NoProgress;
use _core::records::RecordSource;
use _core::specials::SpecialMatcher;
use _core::stream::TextSource;
use _core::train::{count_files_in_chunks, count_records, count_text, train_from_counts, PretokenCounts};
use _core::Error;

const SPECIALS: [&str; 2] = ["<|endoftext|>", "<|endoftext|><|endoftext|>"];

fn budget() -> Duration {
    let seconds = std::env::var("BPE_LM_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(seconds)
}

/// Runs `property` on values of `strategy` in batches of fresh random cases until the budget is spent, then
/// prints the report line; panics with the shrunk input on the first failure.
fn fuzz<S: Strategy>(target: &str, strategy: S, property: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    const BATCH: u32 = 64;
    let start = Instant::now();
    let executions = AtomicU64::new(0); // calls of `property`, shrinking steps included
    let counted = |value: S::Value| {
        executions.fetch_add(1, Ordering::Relaxed);
        property(value)
    };
    let mut seed = 0u64;
    let mut failure = None;
    while start.elapsed() < budget() || executions.load(Ordering::Relaxed) == 0 {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        bytes[8..16].copy_from_slice(&(target.len() as u64).to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        let config = Config {
            cases: BATCH,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner = TestRunner::new_with_rng(config, rng);
        match runner.run(&strategy, counted) {
            Ok(()) => {}
            Err(TestError::Fail(reason, value)) => {
                failure = Some(format!("{reason}\nsmallest failing input: {value:?}"));
                break;
            }
            Err(TestError::Abort(reason)) => {
                failure = Some(format!("aborted: {reason}"));
                break;
            }
        }
        seed += 1;
    }
    let failures = failure.is_some() as u32;
    let executions = executions.load(Ordering::Relaxed);
    println!(
        "fuzz {target}: {executions} executions, {failures} failures, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    if let Some(f) = failure {
        panic!("fuzz {target} failed: {f}");
    }
}

/// Text that reaches the pattern's and the scanner's edge cases often, and any scalar value now and then.
fn text(max_chars: usize) -> impl Strategy<Value = String> {
    let edge: Vec<char> = " \t\n\r\u{a0}\u{3000}\u{2028}\u{85}\u{b}\u{c}'sdmtlvreSDX0123456789.,!?-_\"é中文Ж٣Ⅻ½😀\u{200d}\u{301}\u{1f}<|>"
        .chars()
        .collect();
    proptest::collection::vec(
        prop_oneof![4 => proptest::sample::select(edge), 1 => any::<char>()],
        0..max_chars,
    )
    .prop_map(String::from_iter)
}

/// One small encoder for every target: trained on varied text, with two overlapping special tokens.
fn encoder() -> &'static Encoder {
    static ENCODER: OnceLock<Encoder> = OnceLock::new();
    ENCODER.get_or_init(|| {
        let specials: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        let corpus = "Once upon a time, there was a cat. It's   here!\n\nZweite Geschichte: 123 äöü 中文文 😀😀\t\n\
                      aaaa aaaaaaaa the the then there 3.14159 it'll we've they're"
            .repeat(20);
        let mut counts = PretokenCounts::default();
        count_text(
            &corpus,
            &SpecialMatcher::new(&specials).unwrap(),
            &Pretokenizer::Gpt2,
            &mut counts,
        )
        .unwrap();
        Encoder::from_bpe(
            train_from_counts(counts, 400, &specials, &NoProgress).unwrap(),
            &specials,
            None,
        )
        .unwrap()
    })
}

/// A directory of its own for one target's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(target: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("bpe-lm-fuzz-{}-{target}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        self.0.join(format!("{}-{name}", NEXT.fetch_add(1, Ordering::Relaxed)))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn pretokenizer_matches_fancy_regex() {
    let regex = Pretokenizer::regex(GPT2_PATTERN).unwrap();
    fuzz("pretokenizer_matches_fancy_regex", text(64), |t| {
        prop_assert_eq!(Pretokenizer::Gpt2.pieces(&t).unwrap(), regex.pieces(&t).unwrap());
        Ok(())
    });
}

/// Long, mostly ASCII text with runs of one character, so the scanner's 64-byte block path (and its
/// CPU-specific class masks, arch.rs) meets every block offset and hands over at other bytes and long runs;
/// with the characters of other scripts that the block path takes too (letters of Cyrillic, CJK, Hangul,
/// extended Latin by their lead, blocks::LeadTables; the rest one by one, `with_multibyte_classes`: letters
/// whose leads are shared, numbers, punctuation, symbols, marks, white space).
fn ascii_text() -> impl Strategy<Value = String> {
    let edge: Vec<char> = "  \t\n\r\u{b}\u{c}\u{1f}\u{7f}'sdmtlvreSLVDXaz09.,!?-_\"@[`{~ЖжяЀѿ\u{482}\u{483}Ґ«—中的是人你한국ąłʃ×÷˂\u{4dc0}、不了，。《─│０٣\u{a0}\u{3000}\u{2028}\u{85}\u{1680}\u{202f}\u{301}कि𝐀あ・😀"
        .chars()
        .collect();
    let unit = prop_oneof![
        20 => proptest::sample::select(edge.clone()).prop_map(String::from),
        2 => (proptest::sample::select(edge), 2..90usize).prop_map(|(c, n)| String::from(c).repeat(n)),
        1 => any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(unit, 0..400).prop_map(|units| units.concat())
}

#[test]
fn block_scanner_matches_fancy_regex() {
    let regex = Pretokenizer::regex(GPT2_PATTERN).unwrap();
    fuzz("block_scanner_matches_fancy_regex", ascii_text(), |t| {
        prop_assert_eq!(Pretokenizer::Gpt2.pieces(&t).unwrap(), regex.pieces(&t).unwrap());
        let enc = encoder();
        prop_assert_eq!(
            enc.decode_bytes(enc.encode(&t).unwrap().iter().map(|&i| i as u64))
                .unwrap(),
            t.as_bytes()
        );
        Ok(())
    });
}

#[test]
fn encode_decode_round_trip() {
    let enc = encoder();
    fuzz("encode_decode_round_trip", text(200), |t| {
        let ids = enc.encode(&t).unwrap();
        prop_assert_eq!(enc.decode_bytes(ids.iter().map(|&i| i as u64)).unwrap(), t.as_bytes());
        let mut ordinary = Vec::<u32>::new();
        enc.encode_ordinary_into(&t, &mut ordinary).unwrap();
        prop_assert_eq!(
            enc.decode_bytes(ordinary.iter().map(|&i| i as u64)).unwrap(),
            t.as_bytes()
        );
        Ok(())
    });
}

#[test]
fn special_tokens_split_the_text() {
    // Non-empty text pieces without '<' (so no special token appears by chance), each followed by a special
    // token: the ids are each piece's ordinary ids with the special's id after it. Two specials in a row
    // would make the longer one; the non-empty pieces keep them apart, and the longer one is tested alone.
    let enc = encoder();
    let piece = text(30).prop_map(|t| t.replace('<', "(") + "x");
    let parts = proptest::collection::vec((piece, 0usize..2), 0..6);
    fuzz("special_tokens_split_the_text", parts, |parts| {
        let mut whole = String::new();
        let mut expected = Vec::new();
        for (text, special) in &parts {
            whole.push_str(text);
            enc.encode_ordinary_into(text, &mut expected).unwrap();
            whole.push_str(SPECIALS[*special]);
            expected.push(enc.special_ids()[*special]);
        }
        prop_assert_eq!(enc.encode(&whole).unwrap(), expected);
        Ok(())
    });
    let two = enc.encode(&SPECIALS[0].repeat(3)).unwrap();
    assert_eq!(
        two,
        [enc.special_ids()[1], enc.special_ids()[0]],
        "the longest special token wins, left to right"
    );
}

#[test]
fn chunk_boundaries_change_nothing() {
    // Encoding and counting text cut at the cutter's safe places, at any target size, equal doing it whole.
    let enc = encoder();
    let specials = SpecialMatcher::new(&SPECIALS.map(String::from)).unwrap();
    let cutter = Cutter::new(specials.clone(), &Pretokenizer::Gpt2);
    let dir = TempDir::new("chunks");
    let with_specials = (text(300), proptest::collection::vec(0usize..300, 0..4)).prop_map(|(mut t, at)| {
        for a in at {
            let mut a = a.min(t.len());
            while !t.is_char_boundary(a) {
                a -= 1;
            }
            t.insert_str(a, SPECIALS[0]);
        }
        t
    });
    fuzz(
        "chunk_boundaries_change_nothing",
        (with_specials, 1usize..64),
        |(t, target)| {
            let parts = split_at_safe_cuts(&t, &cutter, target);
            prop_assert_eq!(parts.concat(), t.clone());
            let mut joined = Vec::<u32>::new();
            for p in &parts {
                enc.encode_into(p, &mut joined).unwrap();
            }
            prop_assert_eq!(joined, enc.encode(&t).unwrap());
            let mut whole = PretokenCounts::default();
            count_text(&t, &specials, &Pretokenizer::Gpt2, &mut whole).unwrap();
            let mut summed = PretokenCounts::default();
            for p in &parts {
                count_text(p, &specials, &Pretokenizer::Gpt2, &mut summed).unwrap();
            }
            prop_assert_eq!(&summed, &whole);
            // The file reader cuts chunks the same way, at any chunk size.
            let path = dir.path("chunks.txt");
            std::fs::write(&path, &t).unwrap();
            let pool = _core::threads::pool(Some(2)).unwrap();
            let counted = count_files_in_chunks(
                &[TextSource::whole(&path)],
                &specials,
                &Pretokenizer::Gpt2,
                &pool,
                &NoProgress,
                target,
                false,
            );
            std::fs::remove_file(&path).unwrap();
            prop_assert_eq!(counted.unwrap(), (whole, t.len() as u64));
            Ok(())
        },
    );
}

#[test]
fn count_file_reader_on_corrupted_bytes() {
    // A valid count file with bytes changed, removed or appended: read back, or refused with the error that
    // names the file, never a panic, never counts that silently differ when the damage is in the records.
    let mut counts = PretokenCounts::default();
    count_text(
        "the cat sat on the mat, the end 123 héllo",
        &SpecialMatcher::new(&[]).unwrap(),
        &Pretokenizer::Gpt2,
        &mut counts,
    )
    .unwrap();
    let header = CountHeader {
        special_tokens: vec!["<|endoftext|>".into()],
        pattern: GPT2_PATTERN.into(),
    };
    let dir = TempDir::new("counts");
    let valid_path = dir.path("valid.cnt");
    write_count_file(&valid_path, &counts, &header).unwrap();
    let valid = std::fs::read(&valid_path).unwrap();
    std::fs::remove_file(&valid_path).unwrap();
    let n = valid.len();
    let edits = proptest::collection::vec((0..n + 8, any::<u8>(), 0u8..3), 1..6);
    fuzz("count_file_reader_on_corrupted_bytes", edits, |edits| {
        let mut bytes = valid.clone();
        for (at, byte, kind) in edits {
            match kind {
                0 if at < bytes.len() => bytes[at] ^= byte.max(1),
                1 => bytes.truncate(at.min(bytes.len())),
                _ => bytes.insert(at.min(bytes.len()), byte),
            }
        }
        let path = dir.path("corrupt.cnt");
        std::fs::File::create(&path).unwrap().write_all(&bytes).unwrap();
        let mut total = PretokenCounts::default();
        let read = add_count_file(&path, &mut total);
        std::fs::remove_file(&path).unwrap();
        match read {
            Ok(_) => {}
            Err(Error::InvalidArgument(m)) => prop_assert!(m.contains("corrupt.cnt"), "{}", m),
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error kind: {e:?}"))),
        }
        Ok(())
    });
}

#[test]
fn text_reader_on_arbitrary_bytes() {
    // Any bytes as a text file, plain or behind a gzip magic number: counted, or refused with an error
    // (invalid UTF-8 at an offset, a broken gzip stream); with errors="replace", plain files always count.
    let specials = SpecialMatcher::new(&SPECIALS.map(String::from)).unwrap();
    let pool = _core::threads::pool(Some(2)).unwrap();
    let dir = TempDir::new("bytes");
    let bytes = (
        proptest::collection::vec(any::<u8>(), 0..400),
        any::<bool>(),
        1usize..64,
    );
    fuzz(
        "text_reader_on_arbitrary_bytes",
        bytes,
        |(mut bytes, gzip_magic, chunk)| {
            if gzip_magic {
                bytes.splice(0..0, [0x1f, 0x8b, 0x08, 0x00]);
            }
            let path = dir.path("bytes.txt");
            std::fs::write(&path, &bytes).unwrap();
            let count = |lossy| {
                count_files_in_chunks(
                    &[TextSource::whole(&path)],
                    &specials,
                    &Pretokenizer::Gpt2,
                    &pool,
                    &NoProgress,
                    chunk,
                    lossy,
                )
            };
            let strict = count(false);
            let lossy = count(true);
            std::fs::remove_file(&path).unwrap();
            if let Ok(text) = std::str::from_utf8(&bytes) {
                if !gzip_magic {
                    let mut expected = PretokenCounts::default();
                    count_text(text, &specials, &Pretokenizer::Gpt2, &mut expected).unwrap();
                    prop_assert_eq!(strict.unwrap(), (expected, text.len() as u64));
                }
            } else if !gzip_magic {
                // Named at the first byte that is not UTF-8, wherever the chunks were cut.
                let valid = std::str::from_utf8(&bytes).unwrap_err().valid_up_to() as u64;
                prop_assert!(
                    matches!(strict, Err(Error::InvalidUtf8 { offset, .. }) if offset == valid),
                    "{:?}, expected offset {valid}",
                    strict.err()
                );
            }
            if !gzip_magic {
                let mut expected = PretokenCounts::default();
                let text = String::from_utf8_lossy(&bytes);
                count_text(&text, &specials, &Pretokenizer::Gpt2, &mut expected).unwrap();
                prop_assert_eq!(lossy.unwrap(), (expected, text.len() as u64));
            }
            Ok(())
        },
    );
}

#[test]
fn decode_of_arbitrary_ids() {
    let enc = encoder();
    let size = enc.vocab_size() as u64;
    let ids = proptest::collection::vec(prop_oneof![4 => 0..size, 1 => any::<u64>()], 0..50);
    fuzz("decode_of_arbitrary_ids", ids, |ids| {
        match enc.decode_bytes(ids.iter().copied()) {
            Ok(bytes) => {
                prop_assert!(ids.iter().all(|&i| i < size));
                let expected: Vec<u8> = ids.iter().flat_map(|&i| enc.token(i as u32).to_vec()).collect();
                prop_assert_eq!(bytes, expected);
            }
            Err(Error::UnknownTokenId(id)) => prop_assert!(id >= size && ids.contains(&id)),
            Err(e) => return Err(TestCaseError::fail(format!("unexpected error: {e:?}"))),
        }
        Ok(())
    });
}

#[test]
fn jsonl_reader_on_arbitrary_bytes() {
    // Any bytes as a JSON-lines file, plain or behind a zstd or gzip magic number: counted, or refused with an
    // error naming the file (a bad line, a missing field, a broken stream); never a panic.
    let pool = _core::threads::pool(Some(2)).unwrap();
    let dir = TempDir::new("jsonl-bytes");
    let lines = proptest::collection::vec(
        prop_oneof![
            text(40).prop_map(|t| serde_json::json!({ "text": t }).to_string()),
            Just("{\"text\": null}".to_string()),
            Just("{\"text\": 5}".to_string()),
            Just("{\"other\": \"x\"}".to_string()),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ],
        0..12,
    );
    fuzz("jsonl_reader_on_arbitrary_bytes", (lines, 0u8..3), |(lines, magic)| {
        let mut bytes = lines.join("\n").into_bytes();
        if magic == 1 {
            bytes.splice(0..0, [0x28, 0xb5, 0x2f, 0xfd]);
        } else if magic == 2 {
            bytes.splice(0..0, [0x1f, 0x8b, 0x08, 0x00]);
        }
        let path = dir.path("c.jsonl");
        std::fs::write(&path, &bytes).unwrap();
        // Both ways of taking text that is not UTF-8 (or half a surrogate pair): refused, and replaced.
        let lossy = bytes.len() % 2 == 0;
        let got = count_records(
            &[RecordSource::Jsonl(TextSource::whole(&path))],
            "text",
            &Pretokenizer::Gpt2,
            &pool,
            lossy,
            &NoProgress,
        );
        std::fs::remove_file(&path).unwrap();
        if let Err(e) = &got {
            prop_assert!(e.to_string().contains("c.jsonl"), "{e}");
        }
        if magic == 0 {
            // Plain: the counts are those of each good record's text, counted on its own.
            let mut expected = PretokenCounts::default();
            let mut all_good = true;
            for line in lines.iter().filter(|l| !l.bytes().all(|b| b.is_ascii_whitespace())) {
                match serde_json::from_str::<serde_json::Value>(line) {
                    Ok(serde_json::Value::Object(m)) => match m.get("text") {
                        Some(serde_json::Value::String(t)) => count_text(
                            t,
                            &SpecialMatcher::new(&[]).unwrap(),
                            &Pretokenizer::Gpt2,
                            &mut expected,
                        )
                        .unwrap(),
                        Some(serde_json::Value::Null) => {}
                        _ => all_good = false,
                    },
                    _ => all_good = false,
                }
            }
            if lines.iter().all(|l| !l.contains('\n')) {
                match all_good {
                    true => prop_assert_eq!(got.unwrap().0, expected),
                    false => prop_assert!(got.is_err()),
                }
            }
        }
        Ok(())
    });
}

#[test]
fn zstd_stream_on_damaged_frames() {
    // zstd files of one to three frames, damaged or not, read through `open` in steps of any size (appended to
    // a buffer, as the chunkers read, and by plain reads): the bytes of the zstd crate's own reader
    // (`decode_all`) whenever it decodes them, an error naming the file whenever it does not; never a panic.
    let dir = TempDir::new("zstd-frames");
    let frames = proptest::collection::vec((text(300), 1usize..4, 1i32..6), 1..4);
    let edits = proptest::collection::vec((4usize..4096, any::<u8>(), 0u8..4), 0..3);
    let steps = proptest::collection::vec(1usize..70_000, 1..5);
    fuzz(
        "zstd_stream_on_damaged_frames",
        (frames, edits, steps),
        |(frames, edits, steps)| {
            let mut bytes = Vec::new();
            for (text, repeat, level) in &frames {
                bytes.extend(zstd::encode_all(text.repeat(*repeat).as_bytes(), *level).unwrap());
            }
            for (at, byte, kind) in edits {
                let at = at.min(bytes.len());
                match kind {
                    0 if at < bytes.len() => bytes[at] ^= byte.max(1),
                    1 => bytes.truncate(at),
                    2 => bytes.insert(at, byte),
                    _ => {}
                }
            }
            let path = dir.path("c.zst");
            std::fs::write(&path, &bytes).unwrap();
            let expected = zstd::decode_all(&bytes[..]).ok();
            let source = TextSource::whole(&path);
            let counter = std::sync::Arc::new(AtomicU64::new(0));
            // Appended in steps, as `fill_buffer` asks (fewer bytes than asked: the end).
            let mut appended = Vec::new();
            let by_append = source
                .open(counter.clone())
                .map_err(|e| e.to_string())
                .and_then(|mut s| {
                    for step in steps.iter().cycle() {
                        let n = s.append(&mut appended, *step).map_err(|e| e.to_string())?;
                        if n < *step {
                            return Ok(appended);
                        }
                    }
                    unreachable!()
                });
            // Read into a buffer of the first step's size.
            let mut read = Vec::new();
            let by_read = source.open(counter).map_err(|e| e.to_string()).and_then(|mut s| {
                let mut buf = vec![0u8; steps[0]];
                loop {
                    match std::io::Read::read(&mut s, &mut buf) {
                        Ok(0) => return Ok(read),
                        Ok(n) => read.extend_from_slice(&buf[..n]),
                        Err(e) => return Err(e.to_string()),
                    }
                }
            });
            std::fs::remove_file(&path).unwrap();
            for got in [by_append, by_read] {
                match (&expected, got) {
                    (Some(want), Ok(got)) => {
                        prop_assert!(*want == got, "{} bytes, not the {} expected", got.len(), want.len())
                    }
                    (Some(_), Err(e)) => {
                        return Err(TestCaseError::fail(format!("refused a stream zstd decodes: {e}")))
                    }
                    (None, Ok(got)) => {
                        return Err(TestCaseError::fail(format!("decoded {} bytes zstd refuses", got.len())))
                    }
                    (None, Err(_)) => {}
                }
            }
            Ok(())
        },
    );
}

/// JSON values of every kind, a few levels deep, with keys that include the target field's.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        text(30).prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((prop_oneof![Just("text".to_string()), text(6)], inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// `json` with every non-ASCII character as a \uXXXX escape (surrogate pairs beyond the BMP), as Python's
/// `json.dumps` writes by default.
fn ascii_escaped(json: &str) -> String {
    let mut out = String::new();
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            for unit in c.encode_utf16(&mut [0; 2]) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

#[test]
fn json_line_scanner_answers_like_serde_json() {
    // The JSON-lines reader's fast scanner against serde_json, its reference: on valid lines (written by
    // serde_json, or with non-ASCII escaped as Python writes it) it must answer, and answer the same; on
    // lines damaged by edits of JSON's own bytes, whenever it answers, serde_json reads the line alike.
    use _core::json_line::{text_field, Scan};
    use _core::records::{serde_field, FieldValue};
    let object = proptest::collection::vec((prop_oneof![Just("text".to_string()), text(6)], json_value()), 0..5)
        .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect()));
    let edits = proptest::collection::vec(
        (
            any::<usize>(),
            0u8..3,
            proptest::sample::select(b"\"\\u{}[],:0-.eE tnx\x01\xffd8".to_vec()),
        ),
        0..4,
    );
    fuzz(
        "json_line_scanner_answers_like_serde_json",
        (object, any::<bool>(), edits),
        |(object, escaped, edits)| {
            let written = object.to_string();
            let line = if escaped { ascii_escaped(&written) } else { written };
            let mut bytes = line.into_bytes();
            for &(at, kind, byte) in &edits {
                let at = if bytes.is_empty() { 0 } else { at % bytes.len() };
                match kind {
                    0 => bytes.insert(at, byte),
                    1 if !bytes.is_empty() => drop(bytes.remove(at)),
                    _ if !bytes.is_empty() => bytes[at] = byte,
                    _ => {}
                }
            }
            let reference = serde_field(&bytes, "text");
            let target_is_text = matches!(
                object.get("text"),
                None | Some(serde_json::Value::String(_) | serde_json::Value::Null)
            );
            match text_field(&bytes, "text") {
                Scan::Unsure => prop_assert!(
                    !edits.is_empty() || !target_is_text,
                    "valid line left to serde: {:?}",
                    String::from_utf8_lossy(&bytes)
                ),
                Scan::Field(text) => {
                    let expected = text.map_or(FieldValue::Null, FieldValue::Text);
                    prop_assert_eq!(
                        reference.ok(),
                        Some(Some(expected)),
                        "{:?}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
                Scan::NoField => prop_assert!(matches!(reference, Ok(None)), "{:?}", String::from_utf8_lossy(&bytes)),
            }
            Ok(())
        },
    );
}

#[test]
fn records_encode_as_documents_in_any_grouping() {
    // Documents encoded as a batch (in runs over threads) equal each one's encode_ordinary + end id.
    let enc = encoder();
    let pool = _core::threads::pool(Some(2)).unwrap();
    fuzz(
        "records_encode_as_documents_in_any_grouping",
        proptest::collection::vec(text(60), 0..20),
        |docs| {
            let refs: Vec<&str> = docs.iter().map(String::as_str).collect();
            let parts = enc.encode_documents::<u32>(&refs, Some(7), &pool).unwrap();
            let mut expected = Vec::<u32>::new();
            for d in &docs {
                enc.encode_ordinary_into(d, &mut expected).unwrap();
                expected.push(7);
            }
            // Ids written as u16 from the encoder on are the same ids.
            let narrow = enc.encode_documents::<u16>(&refs, Some(7), &pool).unwrap();
            let widened: Vec<u32> = narrow.concat().iter().map(|&i| i as u32).collect();
            prop_assert_eq!(&widened, &expected);
            prop_assert_eq!(parts.concat(), expected);
            Ok(())
        },
    );
}

#[test]
fn batches_fed_while_encoding_equal_each_text_encoded() {
    // Texts handed over one by one while the pool encodes the runs handed over so far, in runs of at least
    // 16 KB (texts repeated to make several), with a guess of their size that may be far off either way;
    // the runs' ids taken as each is ready (eager) or at the end.
    let enc = encoder();
    let pools = [
        _core::threads::pool(Some(2)).unwrap(),
        _core::threads::pool(Some(3)).unwrap(),
    ];
    let doc = (text(40), 1..900usize).prop_map(|(t, times)| t.repeat(times));
    fuzz(
        "batches_fed_while_encoding_equal_each_text_encoded",
        (
            proptest::collection::vec(doc, 0..12),
            0..4usize,
            0..2usize,
            any::<bool>(),
        ),
        |(docs, guess, p, eager)| {
            let bytes: usize = docs.iter().map(String::len).sum();
            let expected = [0, bytes / 4, bytes, 4 * bytes][guess];
            let (mut back, mut got) = (Vec::new(), Vec::<Vec<u32>>::new());
            let feed = |push: &mut dyn FnMut(String)| {
                docs.iter().for_each(|d| push(d.clone()));
                true
            };
            let sink = |texts: Vec<String>, (ids, ends): (Vec<u16>, Vec<u64>)| {
                back.extend(texts);
                let mut start = 0;
                for end in ends {
                    got.push(ids[start..end as usize].iter().map(|&i| i as u32).collect());
                    start = end as usize;
                }
                Ok(())
            };
            enc.encode_batch_fed::<String, u16>(&pools[p], || expected, feed, eager, sink)
                .unwrap();
            prop_assert_eq!(&back, &docs);
            let want: Vec<Vec<u32>> = docs.iter().map(|d| enc.encode(d).unwrap()).collect();
            prop_assert_eq!(got, want);
            Ok(())
        },
    );
}

#[test]
fn text_as_code_units_encodes_as_its_utf8() {
    // A text given as code units (a str's Latin-1, UCS-2 or UCS-4 form, each where it holds the text), made
    // UTF-8 a few units at a time and encoded up to each safe cut, gives the ids of its UTF-8, with special
    // tokens as ids or as text; 64 or more units of one kind take the SIMD blocks of arch.rs. A surrogate
    // spliced in is refused at its index, as is a unit past U+10FFFF.
    let enc = encoder();
    let repeated = (text(60), 1..40usize).prop_map(|(t, times)| t.repeat(times));
    let with_specials =
        (repeated, proptest::collection::vec((0usize..2000, 0..2usize), 0..6)).prop_map(|(mut t, at)| {
            for (a, which) in at {
                let mut a = a.min(t.len());
                while !t.is_char_boundary(a) {
                    a -= 1;
                }
                t.insert_str(a, SPECIALS[which]);
            }
            t
        });
    fuzz(
        "text_as_code_units_encodes_as_its_utf8",
        (
            with_specials,
            1usize..200,
            0..3usize,
            proptest::option::of((0usize..4000, 0xD800u32..0x11_0100)),
        ),
        |(t, part_units, form, bad)| {
            let chars: Vec<u32> = t.chars().map(|c| c as u32).collect();
            let widest = chars.iter().copied().max().unwrap_or(0);
            let form = if widest > 0xFFFF {
                2
            } else if widest > 0xFF {
                form.max(1)
            } else {
                form
            };
            let mut units32 = chars.clone();
            let bad =
                bad.filter(|&(_, u)| form > 0 && !(0xE000..=0x10_FFFF).contains(&u) && (form == 2 || u <= 0xFFFF));
            if let Some((at, unit)) = bad {
                units32.insert(at.min(chars.len()), unit);
            }
            let latin1: Vec<u8> = units32.iter().map(|&c| c as u8).collect();
            let ucs2: Vec<u16> = units32.iter().map(|&c| c as u16).collect();
            let units = match form {
                0 => CodeUnits::Latin1(&latin1),
                1 => CodeUnits::Ucs2(&ucs2),
                _ => CodeUnits::Ucs4(&units32),
            };
            for specials in [true, false] {
                let mut got = Vec::<u32>::new();
                let result = enc.encode_units_into(units, specials, part_units, &mut got);
                match bad {
                    Some((at, _)) => {
                        let index = at.min(chars.len());
                        prop_assert!(
                            matches!(result, Err(Error::NotUnicode { index: i }) if i == index),
                            "{result:?}"
                        );
                    }
                    None => {
                        result.unwrap();
                        let mut want = Vec::<u32>::new();
                        if specials {
                            enc.encode_into(&t, &mut want).unwrap();
                        } else {
                            enc.encode_ordinary_into(&t, &mut want).unwrap();
                        }
                        prop_assert_eq!(got, want);
                    }
                }
            }
            if bad.is_none() {
                let mut utf8 = Vec::new();
                let mut from = 0;
                while from < units.len() {
                    let to = (from + part_units).min(units.len());
                    units.append_utf8(from, to, &mut utf8).unwrap();
                    from = to;
                }
                prop_assert_eq!(utf8, t.as_bytes());
            }
            Ok(())
        },
    );
}

/// A parquet file of `docs` (None: null) in row groups of `group_rows`, the text column among others, as
/// writers of real corpora lay it out (an id column beside it, snappy pages).
fn parquet_file(path: &std::path::Path, docs: &[Option<String>], group_rows: usize) {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    let schema = parse_message_type("message m { required int64 id; optional binary text (UTF8); }").unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_data_page_row_count_limit(7)
        .build();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, schema.into(), props.into()).unwrap();
    for (g, group) in docs.chunks(group_rows.max(1)).enumerate() {
        let mut rows = writer.next_row_group().unwrap();
        let ids: Vec<i64> = (0..group.len() as i64).map(|i| (g * group_rows) as i64 + i).collect();
        let mut col = rows.next_column().unwrap().unwrap();
        col.typed::<Int64Type>().write_batch(&ids, None, None).unwrap();
        col.close().unwrap();
        let values: Vec<ByteArray> = group.iter().flatten().map(|d| ByteArray::from(d.as_str())).collect();
        let levels: Vec<i16> = group.iter().map(|d| d.is_some() as i16).collect();
        let mut col = rows.next_column().unwrap().unwrap();
        col.typed::<ByteArrayType>()
            .write_batch(&values, Some(&levels), None)
            .unwrap();
        col.close().unwrap();
        rows.close().unwrap();
    }
    writer.close().unwrap();
}

#[test]
fn parquet_reader_on_damaged_files() {
    // Parquet files of random documents and row groups: read whole, each row is one document (ids =
    // encode_ordinary + end id, nulls and empty texts skipped); the same file with bytes changed or cut
    // off: read, or refused with an error naming the file; never a panic.
    let enc = encoder();
    let pool = _core::threads::pool(Some(2)).unwrap();
    let dir = TempDir::new("parquet");
    let docs = proptest::collection::vec(proptest::option::weighted(0.9, text(40)), 0..40);
    let edits = proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3);
    fuzz(
        "parquet_reader_on_damaged_files",
        (docs, 1usize..12, edits, any::<bool>(), any::<usize>()),
        |(docs, group_rows, edits, cut, cut_at)| {
            let path = dir.path("c.parquet");
            parquet_file(&path, &docs, group_rows);
            let out = dir.path("ids.npy");
            let encode = |path: &std::path::Path| -> _core::Result<Vec<u32>> {
                let mut writer = IdOutputs::Joined(IdWriter::create(&out, Dtype::U32)?);
                let source = RecordSource::Parquet {
                    path: path.to_path_buf(),
                    row_groups: None,
                };
                enc.encode_records_into(&[source], "text", Some(7), &mut writer, &pool, false, &NoProgress)?;
                writer.finish()?;
                let bytes = std::fs::read(&out).unwrap();
                let body = &bytes[_core::npy::HEADER_BYTES..];
                Ok(body
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                    .collect())
            };
            let mut expected = Vec::new();
            for d in docs.iter().flatten().filter(|d| !d.is_empty()) {
                enc.encode_ordinary_into(d, &mut expected).unwrap();
                expected.push(7);
            }
            prop_assert_eq!(encode(&path).unwrap(), expected);
            let mut bytes = std::fs::read(&path).unwrap();
            for &(at, byte) in &edits {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            if cut {
                bytes.truncate(cut_at % bytes.len());
            }
            std::fs::write(&path, &bytes).unwrap();
            if let Err(e) = encode(&path) {
                prop_assert!(e.to_string().contains("c.parquet"), "{e}");
            }
            std::fs::remove_file(&path).unwrap();
            Ok(())
        },
    );
}

/// Inputs of documents (None: a null record), each with a kind below `kinds` that says how it is stored.
fn documents_of_inputs(
    docs: std::ops::Range<usize>,
    kinds: u8,
    inputs: std::ops::Range<usize>,
) -> impl Strategy<Value = Vec<(Vec<Option<String>>, u8)>> {
    let documents = proptest::collection::vec(proptest::option::weighted(0.9, text(30)), docs);
    proptest::collection::vec((documents, 0..kinds), inputs)
}

/// Documents as JSON lines of a `text` field.
fn jsonl_lines(docs: &[Option<String>]) -> String {
    docs.iter()
        .map(|d| serde_json::json!({ "text": d }).to_string() + "\n")
        .collect()
}

fn gzip(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), level);
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// The ids of a `.npy` file, as its bytes.
fn npy_body(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()[_core::npy::HEADER_BYTES..].to_vec()
}

#[test]
fn many_record_inputs_read_as_one_stream_equal_each_read_alone() {
    // Documents spread over JSON-lines files (plain and gzip) and parquet files, encoded and counted in
    // one call (one pipeline through them all): the ids are each input's ids in turn, and each input's
    // stats and the counts are those of the inputs read one by one.
    let enc = encoder();
    let pool = _core::threads::pool(Some(2)).unwrap();
    let dir = TempDir::new("many-records");
    let inputs = documents_of_inputs(0..12, 3, 1..6);
    fuzz(
        "many_record_inputs_read_as_one_stream_equal_each_read_alone",
        inputs,
        |inputs| {
            let mut sources = Vec::new();
            for (i, (docs, kind)) in inputs.iter().enumerate() {
                let path = dir.path(&format!("in{i}"));
                let source = if *kind == 2 {
                    parquet_file(&path, docs, 5);
                    RecordSource::Parquet { path, row_groups: None }
                } else {
                    let lines = jsonl_lines(docs);
                    let bytes = match kind {
                        1 => gzip(lines.as_bytes(), flate2::Compression::fast()),
                        _ => lines.into_bytes(),
                    };
                    std::fs::write(&path, bytes).unwrap();
                    RecordSource::Jsonl(TextSource::whole(&path))
                };
                sources.push(source);
            }
            let out = dir.path("ids.npy");
            let encode_to = |sources: &[RecordSource], mut writer: IdOutputs| {
                let stats = enc
                    .encode_records_into(sources, "text", Some(7), &mut writer, &pool, false, &NoProgress)
                    .unwrap();
                writer.finish().unwrap();
                stats
            };
            let encode = |sources: &[RecordSource]| {
                let stats = encode_to(sources, IdOutputs::Joined(IdWriter::create(&out, Dtype::U32).unwrap()));
                (npy_body(&out), stats)
            };
            let count = |sources: &[RecordSource]| {
                count_records(sources, "text", &Pretokenizer::Gpt2, &pool, false, &NoProgress).unwrap()
            };
            let (ids, stats) = encode(&sources);
            let (counts, count_stats) = count(&sources);
            let (mut ids_alone, mut stats_alone, mut counts_alone) =
                (Vec::new(), Vec::new(), PretokenCounts::default());
            for source in &sources {
                let (i, s) = encode(std::slice::from_ref(source));
                ids_alone.extend(i);
                stats_alone.extend(s);
                let (c, _) = count(std::slice::from_ref(source));
                for (k, v) in c {
                    *counts_alone.entry(k).or_default() += v;
                }
            }
            prop_assert_eq!(&ids, &ids_alone);
            prop_assert_eq!(&stats, &stats_alone);
            prop_assert_eq!(count_stats, stats.iter().map(|s| s.0).collect::<Vec<_>>());
            // A file per input (`encode IN... -o DIR/`): each holds its input's ids (an input of no
            // records an empty array), and the files in turn are the one stream's ids.
            let paths: Vec<_> = (0..sources.len()).map(|i| dir.path(&format!("out{i}.npy"))).collect();
            let per_input = encode_to(
                &sources,
                IdOutputs::PerInput(PerInputFiles::new(paths.clone(), Dtype::U32)),
            );
            prop_assert_eq!(&per_input, &stats_alone);
            let mut joined = Vec::new();
            for (path, (_, tokens)) in paths.iter().zip(&stats_alone) {
                let ids = npy_body(path);
                prop_assert_eq!(ids.len() as u64, tokens * 4);
                joined.extend(ids);
            }
            prop_assert_eq!(joined, ids);
            prop_assert_eq!(counts, counts_alone);
            Ok(())
        },
    );
}

#[test]
fn compressed_inputs_read_side_by_side_equal_each_read_alone() {
    // Inputs of which the first is compressed are read side by side on two or three threads, each large
    // input a stream and each run of small ones another (`pipelined_streams`, the ids of a stream ahead of
    // the first unfinished one waiting in a spill file): as records and as text, into one output and into
    // a file per input, the ids and stats must be those of the inputs read one by one. A large input is a
    // stored gzip file whose first document is a filler longer than half a run of small inputs.
    let enc = encoder();
    let pools = [2, 3].map(|n| _core::threads::pool(Some(n)).unwrap());
    let dir = TempDir::new("side-by-side");
    let filler = "Once upon a time, there was a cat: 3.14159 äöü. ".repeat(3000);
    assert!(filler.len() as u64 > _core::stream::SMALL_INPUT_BYTES / 2);
    // (documents, kind): 0 large stored gzip, 1 small gzip, 2 small zstd, 3 small plain.
    let inputs = documents_of_inputs(0..8, 4, 2..7);
    fuzz(
        "compressed_inputs_read_side_by_side_equal_each_read_alone",
        inputs,
        |mut inputs| {
            inputs[0].1 = 0;
            let (mut records, mut texts) = (Vec::new(), Vec::new());
            for (i, (docs, kind)) in inputs.iter_mut().enumerate() {
                if *kind == 0 {
                    docs.insert(0, Some(filler.clone()));
                }
                let lines = jsonl_lines(docs);
                let text = docs.iter().flatten().cloned().collect::<Vec<_>>().join(SPECIALS[0]);
                for (bytes, sources, name) in [(lines, &mut records, "jsonl"), (text, &mut texts, "txt")] {
                    let bytes = match kind {
                        0 => gzip(bytes.as_bytes(), flate2::Compression::none()),
                        1 => gzip(bytes.as_bytes(), flate2::Compression::fast()),
                        2 => zstd::encode_all(bytes.as_bytes(), 1).unwrap(),
                        _ => bytes.into_bytes(),
                    };
                    let path = dir.path(&format!("in{i}.{name}"));
                    std::fs::write(&path, bytes).unwrap();
                    sources.push(TextSource::whole(path));
                }
            }
            let records: Vec<RecordSource> = records.into_iter().map(RecordSource::Jsonl).collect();
            let out = dir.path("ids.npy");
            let paths: Vec<_> = (0..inputs.len()).map(|i| dir.path(&format!("out{i}.npy"))).collect();
            for pool in &pools {
                // Each input alone, then all of them into one output and into a file each.
                let encode = |writer: &mut IdOutputs, records_or_texts: Result<&[RecordSource], &[TextSource]>| {
                    match records_or_texts {
                        Ok(r) => enc
                            .encode_records_into(r, "text", Some(7), writer, pool, false, &NoProgress)
                            .map(|s| s.iter().map(|(_, tokens)| *tokens).collect::<Vec<_>>()),
                        Err(t) => enc
                            .encode_streams_into(t, writer, pool, false, &NoProgress)
                            .map(|s| s.iter().map(|(tokens, _)| *tokens).collect::<Vec<_>>()),
                    }
                    .unwrap()
                };
                for kind in [Ok(&records[..]), Err(&texts[..])] {
                    let n = inputs.len();
                    let (mut alone_ids, mut alone_tokens) = (Vec::new(), Vec::new());
                    for i in 0..n {
                        let mut w = IdOutputs::Joined(IdWriter::create(&out, Dtype::U32).unwrap());
                        let one = kind.map(|r| &r[i..=i]).map_err(|t| &t[i..=i]);
                        alone_tokens.extend(encode(&mut w, one));
                        w.finish().unwrap();
                        alone_ids.push(npy_body(&out));
                    }
                    let mut w = IdOutputs::Joined(IdWriter::create(&out, Dtype::U32).unwrap());
                    prop_assert_eq!(&encode(&mut w, kind), &alone_tokens);
                    w.finish().unwrap();
                    prop_assert_eq!(npy_body(&out), alone_ids.concat());
                    let mut w = IdOutputs::PerInput(PerInputFiles::new(paths.clone(), Dtype::U32));
                    prop_assert_eq!(&encode(&mut w, kind), &alone_tokens);
                    w.finish().unwrap();
                    for (path, alone) in paths.iter().zip(&alone_ids) {
                        prop_assert_eq!(&npy_body(path), alone);
                    }
                }
            }
            Ok(())
        },
    );
}
