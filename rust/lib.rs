//! bpe-lm's core: byte-level BPE training and encoding. Pure Rust; the PyO3 bindings live in `py.rs`
//! behind the `python` feature.

pub mod encode;
pub mod error;
pub mod npy;
pub mod pretokenize;
pub mod progress;
pub mod stream;
pub mod threads;
pub mod train;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
