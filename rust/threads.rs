//! Rayon pools, one per thread count, rebuilt after a fork: a forked child (a DataLoader worker, say)
//! inherits the pool's bookkeeping but not its threads, and would wait forever on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};

struct Pools {
    pid: u32,
    by_threads: HashMap<usize, Arc<rayon::ThreadPool>>,
}

/// Number of threads to use when the caller does not say: all available cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// More threads than this many per core only add overhead (here 4,096 threads took 60 times as long as 64):
/// asking for more gets this many.
pub const MAX_THREADS_PER_CORE: usize = 4;

/// The pool for `threads` threads (`None`: all cores; at most MAX_THREADS_PER_CORE per core), created on
/// first use in this process.
pub fn pool(threads: Option<usize>) -> Result<Arc<rayon::ThreadPool>> {
    let n = threads.unwrap_or_else(default_threads);
    if n == 0 {
        return Err(Error::InvalidArgument("number of threads must be at least 1".into()));
    }
    let n = n.min(MAX_THREADS_PER_CORE * default_threads());
    static POOLS: OnceLock<Mutex<Pools>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        Mutex::new(Pools {
            pid: std::process::id(),
            by_threads: HashMap::new(),
        })
    });
    let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
    if pools.pid != std::process::id() {
        // Forked: the old pools' threads do not exist here. Forget them without running their drop,
        // which would try to talk to those threads.
        for (_, p) in pools.by_threads.drain() {
            std::mem::forget(p);
        }
        pools.pid = std::process::id();
    }
    if let Some(p) = pools.by_threads.get(&n) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("bpe-lm-{i}"))
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {n} threads: {e}")))?;
    let p = Arc::new(p);
    pools.by_threads.insert(n, p.clone());
    Ok(p)
}
