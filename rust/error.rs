//! The one error type of the core. `py.rs` maps each variant to one Python exception class.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// Reading or writing a file failed.
    Io {
        path: Option<PathBuf>,
        source: std::io::Error,
    },
    /// Input text is not UTF-8; `offset` counts bytes of (decompressed) text from the start of the file,
    /// or of the text at index `item` of a batch.
    InvalidUtf8 {
        path: Option<PathBuf>,
        item: Option<usize>,
        offset: u64,
    },
    /// Text given as code units (`CodeUnits`) holds one that is no character: `index` is its position
    /// (a lone surrogate, which UTF-8 cannot hold).
    NotUnicode { index: usize },
    /// A record of a record corpus (a JSON line, an Arrow row) that cannot be read as a document:
    /// `position` says where ("line 7", "row 12"), `message` what is wrong.
    InvalidRecord {
        path: PathBuf,
        position: String,
        message: String,
    },
    /// An input that cannot be read as a corpus at all (a damaged parquet file, a missing column).
    InvalidInput { path: PathBuf, message: String },
    /// A caller passed an argument the core cannot use.
    InvalidArgument(String),
    /// A vocabulary and merges that do not make a tokenizer; `merge_rank` names the merge at fault, if one is.
    Vocabulary { merge_rank: Option<usize>, message: String },
    /// A user-supplied pre-tokenization pattern failed to compile or to run.
    Pattern(String),
    /// A token id outside the vocabulary.
    UnknownTokenId(u64),
    /// The caller asked to stop (Ctrl-C) through the progress callback.
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a caught panic said (its payload is a `&str` or a `String` when it came from `panic!`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

impl Error {
    pub fn io(path: Option<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path: Some(p), source } => write!(f, "{}: {}", p.display(), source),
            Error::Io { path: None, source } => write!(f, "{source}"),
            Error::InvalidUtf8 { path, item, offset } => {
                let name = path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default();
                let item = item.map(|i| format!("texts[{i}]: ")).unwrap_or_default();
                write!(f, "{name}{item}invalid UTF-8 at byte offset {offset}")
            }
            Error::InvalidRecord {
                path,
                position,
                message,
            } if path.as_os_str().is_empty() => {
                write!(f, "{position}: {message}")
            }
            Error::InvalidRecord {
                path,
                position,
                message,
            } => write!(f, "{}: {position}: {message}", path.display()),
            Error::InvalidInput { path, message } => write!(f, "{}: {message}", path.display()),
            Error::InvalidArgument(msg) => write!(f, "{msg}"),
            Error::Vocabulary { message, .. } => write!(f, "{message}"),
            Error::Pattern(msg) => write!(f, "pre-tokenization pattern: {msg}"),
            Error::UnknownTokenId(id) => write!(f, "unknown token id {id}"),
            Error::Interrupted => write!(f, "interrupted"),
            Error::NotUnicode { index } => write!(
                f,
                "the character at index {index} is a lone surrogate, which UTF-8 cannot hold"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
