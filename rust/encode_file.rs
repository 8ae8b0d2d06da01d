//! Encoding a whole text file to a `.npy` array in bounded memory: chunks are read on one thread and
//! encoded in parallel while the next ones are read.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rayon::prelude::*;

use crate::encode::Encoder;
use crate::error::{Error, Result};
use crate::npy::{self, Dtype};
use crate::progress::{Phase, Progress};
use crate::stream::{Chunk, ChunkReader, TextSource};

/// Chunk size when streaming a file: small enough that chunks in flight stay well under 100 MB.
const FILE_CHUNK_BYTES: usize = 2 << 20;

impl Encoder {
    /// Streams a text file (.txt or gzip) into a `.npy` array of ids at `output`, encoding chunks in
    /// parallel while the next ones are read. Returns the number of tokens. The ids equal `encode` of
    /// the whole text.
    pub fn encode_file(
        &self,
        input: &TextSource,
        output: &Path,
        dtype: Dtype,
        pool: &rayon::ThreadPool,
        lossy: bool,
        progress: &dyn Progress,
    ) -> Result<u64> {
        dtype.check_holds(self.vocab_size())?;
        let out_err = |e| Error::io(Some(output.to_path_buf()), e);
        let total = input.disk_bytes()?;
        let read = Arc::new(AtomicU64::new(0));
        let source = input.open(read.clone())?;
        let reader = ChunkReader::new(source, Some(input.path.clone()), self.cutter(), FILE_CHUNK_BYTES)
            .lossy(lossy)
            .starting_at(input.start());
        let mut out = BufWriter::with_capacity(1 << 20, File::create(output).map_err(out_err)?);
        out.write_all(&npy::header(dtype, 0)).map_err(out_err)?;
        let batch = pool.current_num_threads().max(1);
        let mut count = 0u64;
        let mut scratch = Vec::new();
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Chunk>>(batch);
            scope.spawn(move || {
                for chunk in reader {
                    let failed = chunk.is_err();
                    if tx.send(chunk).is_err() || failed {
                        break;
                    }
                }
            });
            loop {
                let mut chunks = Vec::with_capacity(batch);
                while chunks.len() < batch {
                    match rx.recv() {
                        Ok(chunk) => chunks.push(chunk?),
                        Err(_) => break,
                    }
                }
                if chunks.is_empty() {
                    return Ok(());
                }
                let encoded: Vec<Vec<u32>> =
                    pool.install(|| chunks.par_iter().map(|c| self.encode(&c.text)).collect::<Result<_>>())?;
                drop(chunks);
                for ids in &encoded {
                    npy::write_ids(&mut out, ids, dtype, &mut scratch).map_err(out_err)?;
                    count += ids.len() as u64;
                }
                if !progress.update(Phase::Read, read.load(Ordering::Relaxed), total) {
                    return Err(Error::Interrupted);
                }
            }
        })?;
        let mut file = out.into_inner().map_err(|e| out_err(e.into_error()))?;
        npy::finish(&mut file, dtype, count).map_err(out_err)?;
        file.sync_all().map_err(out_err)?;
        Ok(count)
    }

}
