//! Benchmark payloads: deterministic and self-describing.
//!
//! Contract: a payload of `size >= 8` bytes starts with its record id (u64 little endian), so a
//! reader can recompute the whole expected payload from the payload alone. The rest is either
//! repeated text ([`PayloadKind::Text`], compressible) or pseudo-random bytes
//! ([`PayloadKind::Random`], incompressible; one of [`RANDOM_BODIES`] bodies chosen by id, built
//! once so that building a payload stays as cheap as for text). Bytes `8..16` may be overwritten
//! with a send timestamp ([`PayloadBuilder::build_stamped`]); [`PayloadBuilder::check`] ignores
//! them for stamped payloads. Building reuses one buffer per body: no allocation per record.

use crate::systems::Result;

/// Bytes of the id header.
pub const ID_BYTES: usize = 8;
/// Bytes of the id header plus the send timestamp of stamped payloads.
pub const STAMP_END: usize = 16;
/// Distinct random bodies.
pub const RANDOM_BODIES: usize = 16;

const TEXT: &[u8] = b"aof2-bench payload: repeated text compresses well, like many log records. ";

/// What fills a payload after its id.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// Repeated text.
    Text,
    /// Pseudo-random bytes.
    Random,
    /// Log lines (timestamps, levels, services, ids, numbers): compresses like real logs, 3–5x
    /// at zstd level 1. One of [`LOG_BODIES`] bodies chosen by id; together they exceed zstd's
    /// window, so the ratio comes from the text, not from repeated bodies.
    Logs,
}

/// Distinct log-line bodies.
pub const LOG_BODIES: usize = 8192;

fn log_body(index: u64, size: usize) -> Vec<u8> {
    const LEVELS: [&str; 6] = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
    const SERVICES: [&str; 8] = [
        "orders",
        "payments",
        "gateway",
        "inventory",
        "auth",
        "search",
        "billing",
        "shipping",
    ];
    const MESSAGES: [&str; 12] = [
        "request completed",
        "order accepted",
        "payment authorized",
        "cache miss, loading from store",
        "retrying upstream call",
        "user session refreshed",
        "rate limit close to threshold",
        "inventory reserved",
        "shipment label created",
        "slow query detected",
        "token validated",
        "connection pool resized",
    ];
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA076_1D64_78BD_642F;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = String::with_capacity(size + 256);
    while out.len() < size {
        let r = next();
        let ms = 1_700_000_000_000 + (index * 997 + (r & 0xffff)) % 86_400_000;
        out.push_str(&format!(
            "ts={ms} level={} svc={}-{} host=node-{:02} user=u{:06} req={:016x} latency_ms={} status={} msg=\"{}\"\n",
            LEVELS[(r % 6) as usize],
            SERVICES[((r >> 8) % 8) as usize],
            (r >> 12) % 4,
            (r >> 16) % 24,
            (r >> 24) % 1_000_000,
            next(),
            (r >> 44) % 900,
            [200, 200, 200, 201, 404, 500][((r >> 54) % 6) as usize],
            MESSAGES[((r >> 58) % 12) as usize],
        ));
    }
    let mut bytes = out.into_bytes();
    bytes.truncate(size);
    bytes
}

/// Builds payloads of one size into reusable buffers.
#[derive(Debug)]
pub struct PayloadBuilder {
    bodies: Vec<Vec<u8>>,
    stamped: bool,
}

impl PayloadBuilder {
    /// A builder for payloads of `size` bytes.
    pub fn new(size: usize, kind: PayloadKind) -> Self {
        let bodies = match kind {
            PayloadKind::Text => vec![TEXT.iter().copied().cycle().take(size).collect()],
            PayloadKind::Random => (0..RANDOM_BODIES as u64)
                .map(|b| {
                    let mut state = b.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
                    (0..size)
                        .map(|_| {
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            state as u8
                        })
                        .collect()
                })
                .collect(),
            PayloadKind::Logs => (0..LOG_BODIES as u64).map(|b| log_body(b, size)).collect(),
        };
        PayloadBuilder {
            bodies,
            stamped: false,
        }
    }

    /// A builder whose [`PayloadBuilder::check`] ignores the stamp bytes (for checking payloads
    /// built with [`PayloadBuilder::build_stamped`] elsewhere).
    pub fn stamped(mut self) -> Self {
        self.stamped = true;
        self
    }

    /// Payload size.
    pub fn size(&self) -> usize {
        self.bodies[0].len()
    }

    fn body(&mut self, id: u64) -> &mut Vec<u8> {
        let n = self.bodies.len() as u64;
        &mut self.bodies[(id % n) as usize]
    }

    /// The payload of record `id` (valid until the next call).
    pub fn build(&mut self, id: u64) -> &[u8] {
        let body = self.body(id);
        if body.len() >= ID_BYTES {
            body[..ID_BYTES].copy_from_slice(&id.to_le_bytes());
        }
        body
    }

    /// The payload of record `id` carrying `stamp` (e.g. a send time) in bytes 8..16. Needs
    /// payloads of at least [`STAMP_END`] bytes; after the first call, [`PayloadBuilder::check`]
    /// ignores those bytes.
    pub fn build_stamped(&mut self, id: u64, stamp: u64) -> &[u8] {
        self.stamped = true;
        let body = self.body(id);
        assert!(body.len() >= STAMP_END, "stamped payloads need 16 bytes");
        body[..ID_BYTES].copy_from_slice(&id.to_le_bytes());
        body[ID_BYTES..STAMP_END].copy_from_slice(&stamp.to_le_bytes());
        body
    }

    /// Check a payload read back; returns its id (0 for payloads too short to carry one, of
    /// which only the length is checked).
    pub fn check(&mut self, payload: &[u8]) -> Result<u64> {
        if payload.len() != self.size() {
            return Err(format!(
                "payload has {} bytes, expected {}",
                payload.len(),
                self.size()
            )
            .into());
        }
        if payload.len() < ID_BYTES {
            return Ok(0);
        }
        let id = read_u64(payload, 0);
        let skip = if self.stamped { STAMP_END } else { ID_BYTES };
        let expected = self.build(id);
        if expected[skip..] != payload[skip..] {
            return Err(format!("payload of record id {id} differs from what was written").into());
        }
        Ok(id)
    }
}

/// The little-endian u64 at `at` (e.g. the id at 0, a stamp at 8).
pub fn read_u64(payload: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&payload[at..at + 8]);
    u64::from_le_bytes(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_describing() {
        for kind in [PayloadKind::Text, PayloadKind::Random] {
            for size in [1usize, 8, 64, 1024] {
                let mut a = PayloadBuilder::new(size, kind);
                let mut b = PayloadBuilder::new(size, kind);
                let p = a.build(42).to_vec();
                assert_eq!(p.len(), size);
                assert_eq!(b.check(&p).unwrap(), if size >= 8 { 42 } else { 0 });
                if size > 8 {
                    let mut q = p.clone();
                    q[size - 1] ^= 1;
                    assert!(b.check(&q).is_err());
                }
                assert!(b.check(&[0u8; 3000]).is_err());
            }
        }
        let mut s = PayloadBuilder::new(64, PayloadKind::Random);
        let p = s.build_stamped(7, 123_456).to_vec();
        assert_eq!(read_u64(&p, 8), 123_456);
        assert_eq!(s.check(&p).unwrap(), 7);
    }
}
