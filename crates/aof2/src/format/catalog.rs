//! Objects aof2 keeps in Tier 2 besides segment copies: a log's catalog (what a reader or a
//! restore needs to read the log from Tier 2 alone) and a writer's claim of the log.
//!
//! A catalog is an 80-byte header and a body of WAL-framed manifest edits: `LogCreated`, then
//! `SegmentSealed` and `Tier2Uploaded` for every segment in Tier 2, oldest first. Reusing the edit
//! encoding keeps one definition of each field and lets a restore replay the body into a new
//! manifest. The header says where the log ends (its next sequence and newest timestamp), which
//! the segments cannot say once retention removed all of them: a restore continues there.

use super::manifest::{Edit, SealedInfo, Tier2Info, WalRead, decode_wal_record, encode_wal_record};
use super::{
    FORMAT_VERSION, FormatError, FormatResult, check_fixed, crc32c, le_u32, le_u64, seal_fixed,
};

pub const CATALOG_MAGIC: &[u8; 8] = b"AOF2CTLG";
pub const CLAIM_MAGIC: &[u8; 8] = b"AOF2CLAM";
pub const CATALOG_HEADER_BYTES: usize = 80;
pub const CLAIM_BYTES: usize = 96;

fn le_u128(bytes: &[u8], at: usize) -> u128 {
    u128::from_le_bytes(bytes[at..at + 16].try_into().expect("16 bytes"))
}

/// One segment as the catalog describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogSegment {
    pub sealed: SealedInfo,
    pub tier2: Tier2Info,
}

/// A log's catalog in Tier 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    /// Writer epoch that published it (see [`Claim`]).
    pub epoch: u64,
    /// Publications by this epoch, from 1.
    pub generation: u64,
    pub log_id: u128,
    pub name: String,
    pub created_ms: u64,
    /// One past the last record in Tier 2: the end of the last segment, or where the log
    /// continues when it lists none (retention removed every segment below it).
    pub next_seq: u64,
    /// Newest append timestamp of the records below `next_seq`, ms (0 if none): a log restored
    /// from the catalog stamps later records no earlier.
    pub last_timestamp_ms: u64,
    /// Oldest first, contiguous in sequence.
    pub segments: Vec<CatalogSegment>,
}

impl Catalog {
    /// One past the last sequence the catalog holds (its first sequence if it holds none).
    pub fn end_seq(&self) -> u64 {
        self.next_seq
    }

    /// First sequence the catalog holds (its end if it holds none).
    pub fn first_seq(&self) -> u64 {
        self.segments
            .first()
            .map_or(self.next_seq, |s| s.sealed.base_seq)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut body = encode_wal_record(&Edit::LogCreated {
            log_id: self.log_id,
            created_ms: self.created_ms,
            name: self.name.clone(),
        });
        for s in &self.segments {
            body.extend_from_slice(&encode_wal_record(&Edit::SegmentSealed(s.sealed)));
            body.extend_from_slice(&encode_wal_record(&Edit::Tier2Uploaded(s.tier2)));
        }
        let mut header = [0u8; CATALOG_HEADER_BYTES];
        header[..8].copy_from_slice(CATALOG_MAGIC);
        header[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        header[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        header[24..40].copy_from_slice(&self.log_id.to_le_bytes());
        header[40..48].copy_from_slice(&self.generation.to_le_bytes());
        header[48..56].copy_from_slice(&(body.len() as u64).to_le_bytes());
        header[56..64].copy_from_slice(&self.next_seq.to_le_bytes());
        header[64..72].copy_from_slice(&self.last_timestamp_ms.to_le_bytes());
        header[72..76].copy_from_slice(&crc32c(&body).to_le_bytes());
        seal_fixed(&mut header);
        let mut out = header.to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// Decode and check a whole catalog object: header CRC, body CRC and length, that the
    /// segments are sealed, in Tier 2, in order and contiguous, and that the log's end and newest
    /// timestamp agree with them.
    pub fn decode(bytes: &[u8]) -> FormatResult<Catalog> {
        check_fixed(bytes, CATALOG_HEADER_BYTES, CATALOG_MAGIC)?;
        let epoch = le_u64(bytes, 16);
        let log_id = le_u128(bytes, 24);
        let generation = le_u64(bytes, 40);
        let body_len = le_u64(bytes, 48);
        let next_seq = le_u64(bytes, 56);
        let last_timestamp_ms = le_u64(bytes, 64);
        let body = &bytes[CATALOG_HEADER_BYTES..];
        if body.len() as u64 != body_len {
            return Err(FormatError::Truncated {
                needed: (CATALOG_HEADER_BYTES as u64).saturating_add(body_len) as usize,
                available: bytes.len(),
            });
        }
        let stored = le_u32(bytes, 72);
        let computed = crc32c(body);
        if stored != computed {
            return Err(FormatError::Checksum { stored, computed });
        }
        let mut edits = Vec::new();
        let mut at = 0;
        loop {
            match decode_wal_record(&body[at..])? {
                WalRead::Edit(edit, used) => {
                    edits.push(edit);
                    at += used;
                }
                WalRead::End => break,
                WalRead::Torn => return Err(FormatError::Invalid("catalog edit cut short".into())),
            }
        }
        let mut edits = edits.into_iter();
        let (name, created_ms) = match edits.next() {
            Some(Edit::LogCreated {
                log_id: id,
                created_ms,
                name,
            }) if id == log_id => (name, created_ms),
            _ => {
                return Err(FormatError::Invalid(
                    "catalog does not start with its log's LogCreated".into(),
                ));
            }
        };
        let mut segments: Vec<CatalogSegment> = Vec::new();
        while let Some(edit) = edits.next() {
            let (Edit::SegmentSealed(sealed), Some(Edit::Tier2Uploaded(tier2))) =
                (edit, edits.next())
            else {
                return Err(FormatError::Invalid(
                    "catalog segment is not a SegmentSealed and Tier2Uploaded pair".into(),
                ));
            };
            if tier2.tier1.segment_id != sealed.segment_id {
                return Err(FormatError::Invalid(format!(
                    "catalog pairs segment {} with the object of segment {}",
                    sealed.segment_id, tier2.tier1.segment_id
                )));
            }
            if sealed.base_seq.checked_add(sealed.record_count).is_none() {
                return Err(FormatError::Invalid(format!(
                    "catalog segment {} runs past the sequence space",
                    sealed.segment_id
                )));
            }
            // Every listed segment passed the check above: the sum below cannot overflow.
            if let Some(prev) = segments.last()
                && (prev.sealed.segment_id >= sealed.segment_id
                    || prev.sealed.base_seq + prev.sealed.record_count != sealed.base_seq)
            {
                return Err(FormatError::Invalid(format!(
                    "catalog segment {} does not follow segment {}",
                    sealed.segment_id, prev.sealed.segment_id
                )));
            }
            if sealed.last_timestamp_ms > last_timestamp_ms {
                return Err(FormatError::Invalid(format!(
                    "catalog segment {} holds a record stamped {} ms, after the log's newest \
                     timestamp {last_timestamp_ms}",
                    sealed.segment_id, sealed.last_timestamp_ms
                )));
            }
            segments.push(CatalogSegment { sealed, tier2 });
        }
        if let Some(last) = segments.last()
            && last.sealed.base_seq + last.sealed.record_count != next_seq
        {
            return Err(FormatError::Invalid(format!(
                "catalog says the log ends at seq {next_seq}, its last segment {} ends at {}",
                last.sealed.segment_id,
                last.sealed.base_seq + last.sealed.record_count
            )));
        }
        Ok(Catalog {
            epoch,
            generation,
            log_id,
            name,
            created_ms,
            next_seq,
            last_timestamp_ms,
            segments,
        })
    }
}

/// A writer's claim of a log in Tier 2 (one object per epoch, created only if absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub epoch: u64,
    /// Identity of the root (`aof2.root`) that holds the claim.
    pub root_id: u128,
    pub log_id: u128,
    pub claimed_ms: u64,
}

impl Claim {
    pub fn encode(&self) -> [u8; CLAIM_BYTES] {
        let mut b = [0u8; CLAIM_BYTES];
        b[..8].copy_from_slice(CLAIM_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.epoch.to_le_bytes());
        b[24..40].copy_from_slice(&self.root_id.to_le_bytes());
        b[40..56].copy_from_slice(&self.log_id.to_le_bytes());
        b[56..64].copy_from_slice(&self.claimed_ms.to_le_bytes());
        seal_fixed(&mut b);
        b
    }

    pub fn decode(bytes: &[u8]) -> FormatResult<Claim> {
        check_fixed(bytes, CLAIM_BYTES, CLAIM_MAGIC)?;
        if bytes.len() != CLAIM_BYTES {
            return Err(FormatError::Invalid(format!(
                "claim of {} bytes (expected {CLAIM_BYTES})",
                bytes.len()
            )));
        }
        Ok(Claim {
            epoch: le_u64(bytes, 16),
            root_id: le_u128(bytes, 24),
            log_id: le_u128(bytes, 40),
            claimed_ms: le_u64(bytes, 56),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::Tier1Info;

    fn catalog(segments: u64) -> Catalog {
        Catalog {
            epoch: 7,
            generation: 3,
            log_id: 0xfeed_beef,
            name: "orders".into(),
            created_ms: 1_700_000_000_000,
            // Retention removed records 0..50: the log continues at 50 when nothing is listed.
            next_seq: 50 + segments * 10,
            last_timestamp_ms: 2,
            segments: (0..segments)
                .map(|i| CatalogSegment {
                    sealed: SealedInfo {
                        segment_id: i + 2,
                        base_seq: 50 + i * 10,
                        record_count: 10,
                        file_len: 4096,
                        first_timestamp_ms: 1,
                        last_timestamp_ms: 2,
                        footer_crc: 0x1234,
                    },
                    tier2: Tier2Info {
                        tier1: Tier1Info {
                            segment_id: i + 2,
                            file_len: 1000 + i,
                            footer_crc: 0x55,
                            frames: 2,
                            uncompressed_bytes: 3000,
                            level: 3,
                        },
                        object_crc: 0x99,
                        segment_footer: [i as u8; 96],
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn catalog_round_trips_and_every_flipped_byte_is_refused() {
        for n in [0, 1, 3] {
            let c = catalog(n);
            let bytes = c.encode();
            assert_eq!(Catalog::decode(&bytes).unwrap(), c);
            assert_eq!((c.first_seq(), c.end_seq()), (50, 50 + n * 10));
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x20;
                assert!(
                    Catalog::decode(&bad).is_err(),
                    "byte {i} of {n}-segment catalog"
                );
            }
            assert!(Catalog::decode(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    #[test]
    fn catalog_refuses_gaps() {
        let mut c = catalog(2);
        c.segments[1].sealed.base_seq += 1;
        assert!(Catalog::decode(&c.encode()).is_err());
    }

    #[test]
    fn catalog_end_and_newest_timestamp_agree_with_its_segments() {
        let mut c = catalog(2);
        c.next_seq += 1;
        assert!(
            Catalog::decode(&c.encode()).is_err(),
            "end past the last segment"
        );
        let mut c = catalog(2);
        c.last_timestamp_ms = 1;
        assert!(
            Catalog::decode(&c.encode()).is_err(),
            "a segment newer than the log"
        );
        // Without segments the header alone says where the log continues.
        let mut c = catalog(0);
        c.next_seq = 1 << 40;
        c.last_timestamp_ms = 1_700_000_000_000;
        let back = Catalog::decode(&c.encode()).unwrap();
        assert_eq!((back.first_seq(), back.end_seq()), (1 << 40, 1 << 40));
        assert_eq!(back.last_timestamp_ms, 1_700_000_000_000);
    }

    #[test]
    fn claim_round_trips() {
        let claim = Claim {
            epoch: 5,
            root_id: u128::MAX - 3,
            log_id: 42,
            claimed_ms: 99,
        };
        let bytes = claim.encode();
        assert_eq!(Claim::decode(&bytes).unwrap(), claim);
        for i in 0..bytes.len() {
            let mut bad = bytes;
            bad[i] ^= 1;
            assert!(Claim::decode(&bad).is_err(), "byte {i}");
        }
    }
}
