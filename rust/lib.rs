//! bpe-lm's core: byte-level BPE training and encoding. Pure Rust; the PyO3 bindings live in `py.rs`
//! behind the `python` feature.

// The core's only unsafe code is arch.rs (CPU instructions; its invariants are written there). The PyO3
// bindings' macros expand to some as well, so the rule stops at them.
#![cfg_attr(not(feature = "python"), deny(unsafe_code))]

mod arch;
mod batch_feed;
mod blocks;
mod cache;
pub mod code_units;
pub mod counts;
pub mod cuts;
mod decode;
pub mod encode;
mod encode_file;
pub mod error;
pub mod json_line;
mod keys;
mod merge;
pub mod npy;
pub mod parquet_input;
mod parquet_pages;
pub mod pretokenize;
pub mod progress;
pub mod records;
#[cfg(test)]
mod scratch;
pub mod specials;
pub mod stream;
pub mod threads;
pub mod train;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
