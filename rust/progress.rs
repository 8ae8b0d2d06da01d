//! Progress reporting from the core, without any Python types: `py.rs` implements `Progress` with a
//! Python callback, tests use `NoProgress`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Bytes read from input files (compressed bytes for gzip).
    Read,
    /// Merges done during training.
    Merge,
    /// Bytes of text encoded.
    Encode,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Read => "read",
            Phase::Merge => "merge",
            Phase::Encode => "encode",
        }
    }
}

/// Receives progress; returning false asks the caller to stop with `Error::Interrupted`.
/// Called from worker threads, so it must be cheap and thread-safe.
pub trait Progress: Sync {
    fn update(&self, phase: Phase, done: u64, total: u64) -> bool;

    /// `update` as work that can stop takes it: Err(Interrupted) where the receiver asks to stop.
    fn report(&self, phase: Phase, done: u64, total: u64) -> crate::Result<()> {
        match self.update(phase, done, total) {
            true => Ok(()),
            false => Err(crate::Error::Interrupted),
        }
    }
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _: Phase, _: u64, _: u64) -> bool {
        true
    }
}
