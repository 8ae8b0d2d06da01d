//! Token ids back to bytes.

use crate::encode::Encoder;
use crate::error::{Error, Result};

impl Encoder {
    /// The bytes of `ids`, concatenated. Unknown ids are an error naming the id.
    pub fn decode_bytes(&self, ids: impl IntoIterator<Item = u64>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for id in ids {
            if id >= self.vocab_size() as u64 {
                return Err(Error::UnknownTokenId(id));
            }
            out.extend_from_slice(self.token(id as u32));
        }
        Ok(out)
    }
}
