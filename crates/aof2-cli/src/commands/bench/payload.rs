//! Benchmark payloads: deterministic, self-describing and moderately compressible.
//!
//! Contract: the payload of record `id` with `size` bytes is a pure function of `(id, size)`.
//! When `size >= 8` its first 8 bytes are `id` (little endian), so a reader can recompute the
//! expected content from the payload alone, whatever order concurrent writers appended in. After
//! the id, the first three quarters repeat a fixed text and the last quarter is xorshift noise
//! seeded by the id. Building a payload reuses one buffer: no allocation per record.

/// Bytes of the id header.
pub const ID_BYTES: usize = 8;

const PATTERN: &[u8] = b"aof2 bench payload: three quarters of it repeat this text. ";

/// Builds payloads of one size into a reusable buffer.
#[derive(Debug)]
pub struct PayloadBuilder {
    buf: Vec<u8>,
    /// Start of the pseudo-random tail.
    noise_from: usize,
}

impl PayloadBuilder {
    /// A builder for payloads of `size` bytes.
    pub fn new(size: usize) -> Self {
        let buf: Vec<u8> = PATTERN.iter().copied().cycle().take(size).collect();
        let noise_from = (size - size / 4).max(ID_BYTES).min(size);
        PayloadBuilder { buf, noise_from }
    }

    /// Payload size.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// The payload of record `id` (valid until the next call).
    pub fn build(&mut self, id: u64) -> &[u8] {
        if self.buf.len() >= ID_BYTES {
            self.buf[..ID_BYTES].copy_from_slice(&id.to_le_bytes());
        }
        let mut state = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        for chunk in self.buf[self.noise_from..].chunks_mut(8) {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        &self.buf
    }

    /// Check a payload read back; returns its id (`None` when payloads are too short to carry
    /// one, in which case only the length is checked).
    pub fn check(&mut self, payload: &[u8]) -> Result<Option<u64>, String> {
        if payload.len() != self.size() {
            return Err(format!(
                "payload has {} bytes, expected {}",
                payload.len(),
                self.size()
            ));
        }
        if payload.len() < ID_BYTES {
            return Ok(None);
        }
        let mut raw = [0u8; ID_BYTES];
        raw.copy_from_slice(&payload[..ID_BYTES]);
        let id = u64::from_le_bytes(raw);
        if self.build(id) != payload {
            return Err(format!(
                "payload of record id {id} differs from what was written"
            ));
        }
        Ok(Some(id))
    }
}

/// One bit per id, to check that every id is read back exactly once.
#[derive(Debug)]
pub struct IdSet {
    words: Vec<u64>,
}

impl IdSet {
    /// A set able to hold ids `0..capacity`.
    pub fn new(capacity: u64) -> Self {
        IdSet {
            words: vec![0; capacity.div_ceil(64) as usize],
        }
    }

    /// Insert `id`; false if it was already present or out of range.
    pub fn insert(&mut self, id: u64) -> bool {
        let Some(word) = self.words.get_mut((id / 64) as usize) else {
            return false;
        };
        let bit = 1u64 << (id % 64);
        let fresh = *word & bit == 0;
        *word |= bit;
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_self_describing() {
        for size in [0usize, 1, 7, 8, 9, 31, 1024, 1031] {
            let mut a = PayloadBuilder::new(size);
            let mut b = PayloadBuilder::new(size);
            let p = a.build(42).to_vec();
            assert_eq!(p.len(), size);
            assert_eq!(b.check(&p), Ok((size >= 8).then_some(42)));
            if size > 8 {
                let mut q = p.clone();
                q[size - 1] ^= 1;
                assert!(b.check(&q).is_err());
                assert_ne!(a.build(43), &p[..]);
            }
            assert!(b.check(&[0u8; 3000]).is_err());
        }
    }

    #[test]
    fn mostly_pattern() {
        let mut b = PayloadBuilder::new(1024);
        let p = b.build(7).to_vec();
        assert_eq!(
            &p[8..64],
            &PATTERN.iter().copied().cycle().take(64).collect::<Vec<_>>()[8..]
        );
        assert_eq!(b.noise_from, 768);
    }

    #[test]
    fn id_set() {
        let mut s = IdSet::new(130);
        assert!(s.insert(0));
        assert!(s.insert(129));
        assert!(!s.insert(129));
        assert!(!s.insert(192));
    }
}
