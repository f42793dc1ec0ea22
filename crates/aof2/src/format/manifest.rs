//! Manifest edits, the WAL file header and record framing, and the snapshot file.

use super::{
    Cursor, FORMAT_VERSION, FormatError, FormatResult, check_fixed, crc32c, crc32c_pair, le_u32,
    le_u64, seal_fixed,
};
use crate::limits::MAX_MANIFEST_EDIT_BYTES;

pub const WAL_MAGIC: &[u8; 8] = b"AOF2MWAL";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"AOF2MSNP";
pub const WAL_HEADER_BYTES: usize = 32;
pub const SNAPSHOT_HEADER_BYTES: usize = 32;
/// Per-record framing in the WAL: CRC (4) + body length (4).
pub const WAL_RECORD_OVERHEAD: usize = 8;

/// One metadata change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    LogCreated {
        log_id: u128,
        created_ms: u64,
        name: String,
    },
    SegmentPrepared {
        segment_id: u64,
        capacity: u64,
    },
    SegmentSealed(SealedInfo),
    /// The log was opened for writing in a new epoch (see the frame `epoch` field).
    LogOpened {
        epoch: u32,
    },
    SegmentDropped {
        segment_id: u64,
    },
    SegmentQuarantined {
        segment_id: u64,
        reason: String,
    },
    /// The TieredCoordinator starts compressing a sealed segment into Tier 1 (recorded before
    /// the Tier 1 file is created, so a crash leaves no unknown file).
    CompressStarted {
        segment_id: u64,
        level: i32,
    },
    /// The Tier 1 file is complete and durable.
    CompressDone(Tier1Info),
    /// Compression failed; the segment stays in Tier 0 only.
    CompressFailed {
        segment_id: u64,
        reason: String,
    },
    /// The Tier 0 copy was released (unmapped and deleted); Tier 1 holds the segment.
    Tier0Evicted {
        segment_id: u64,
    },
    /// The segment was rebuilt into Tier 0 from Tier 1.
    Hydrated {
        segment_id: u64,
    },
    /// The Tier 1 copy was given up (found damaged or missing while Tier 0 still holds the
    /// segment); a new compression may follow.
    Tier1Dropped {
        segment_id: u64,
    },
    /// Retention removed the log's oldest segment from every tier (its records are gone).
    SegmentRetired {
        segment_id: u64,
    },
    /// The segment's Tier 1 file is stored in Tier 2 (the PUT was acknowledged).
    Tier2Uploaded(Tier2Info),
    /// The local Tier 1 copy was released (recorded before the unlink); Tier 2 holds the
    /// segment.
    Tier1Evicted {
        segment_id: u64,
    },
    /// The Tier 1 file was downloaded back from Tier 2 (restore), checked and made durable.
    Tier1Fetched {
        segment_id: u64,
    },
    /// The log's records below `seq` are gone (retention removed them, or a restore started the
    /// log there), the newest of them stamped `last_timestamp_ms` (0: none, or unknown). Only
    /// before any segment: a restore writes it into a new manifest, a snapshot carries what the
    /// `SegmentRetired` edits it replaces said.
    RetiredBelow {
        seq: u64,
        last_timestamp_ms: u64,
    },
}

/// What the manifest knows about a segment's object in Tier 2: the Tier 1 file it is a copy of,
/// the CRC-32C of the whole object, and the original segment footer (so a segment held only in
/// Tier 2 can be described without a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier2Info {
    pub tier1: Tier1Info,
    pub object_crc: u32,
    pub segment_footer: [u8; SEGMENT_FOOTER_LEN],
}

/// Encoded length of a segment footer (`limits::SEGMENT_FOOTER_BYTES`).
pub const SEGMENT_FOOTER_LEN: usize = crate::limits::SEGMENT_FOOTER_BYTES as usize;

fn put_tier1_info(out: &mut Vec<u8>, t: &Tier1Info) {
    out.extend_from_slice(&t.segment_id.to_le_bytes());
    out.extend_from_slice(&t.file_len.to_le_bytes());
    out.extend_from_slice(&t.footer_crc.to_le_bytes());
    out.extend_from_slice(&t.frames.to_le_bytes());
    out.extend_from_slice(&t.uncompressed_bytes.to_le_bytes());
    out.extend_from_slice(&t.level.to_le_bytes());
}

fn get_tier1_info(c: &mut Cursor<'_>) -> FormatResult<Tier1Info> {
    Ok(Tier1Info {
        segment_id: c.u64()?,
        file_len: c.u64()?,
        footer_crc: c.u32()?,
        frames: c.u32()?,
        uncompressed_bytes: c.u64()?,
        level: c.u32()? as i32,
    })
}

/// What the manifest knows about a segment's Tier 1 file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier1Info {
    pub segment_id: u64,
    pub file_len: u64,
    pub footer_crc: u32,
    pub frames: u32,
    pub uncompressed_bytes: u64,
    pub level: i32,
}

/// What the manifest knows about a sealed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedInfo {
    pub segment_id: u64,
    pub base_seq: u64,
    pub record_count: u64,
    pub file_len: u64,
    pub first_timestamp_ms: u64,
    pub last_timestamp_ms: u64,
    pub footer_crc: u32,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let bytes = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn get_str(c: &mut Cursor<'_>) -> FormatResult<String> {
    let len = c.u16()? as usize;
    String::from_utf8(c.take(len)?.to_vec())
        .map_err(|_| FormatError::Invalid("string not UTF-8".into()))
}

impl Edit {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Edit::LogCreated {
                log_id,
                created_ms,
                name,
            } => {
                out.push(1);
                out.extend_from_slice(&log_id.to_le_bytes());
                out.extend_from_slice(&created_ms.to_le_bytes());
                put_str(&mut out, name);
            }
            Edit::SegmentPrepared {
                segment_id,
                capacity,
            } => {
                out.push(2);
                out.extend_from_slice(&segment_id.to_le_bytes());
                out.extend_from_slice(&capacity.to_le_bytes());
            }
            Edit::SegmentSealed(s) => {
                out.push(3);
                for v in [
                    s.segment_id,
                    s.base_seq,
                    s.record_count,
                    s.file_len,
                    s.first_timestamp_ms,
                    s.last_timestamp_ms,
                ] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                out.extend_from_slice(&s.footer_crc.to_le_bytes());
            }
            Edit::SegmentDropped { segment_id } => {
                out.push(4);
                out.extend_from_slice(&segment_id.to_le_bytes());
            }
            Edit::SegmentQuarantined { segment_id, reason } => {
                out.push(5);
                out.extend_from_slice(&segment_id.to_le_bytes());
                put_str(&mut out, reason);
            }
            Edit::LogOpened { epoch } => {
                out.push(6);
                out.extend_from_slice(&epoch.to_le_bytes());
            }
            Edit::CompressStarted { segment_id, level } => {
                out.push(7);
                out.extend_from_slice(&segment_id.to_le_bytes());
                out.extend_from_slice(&level.to_le_bytes());
            }
            Edit::CompressDone(t) => {
                out.push(8);
                put_tier1_info(&mut out, t);
            }
            Edit::CompressFailed { segment_id, reason } => {
                out.push(9);
                out.extend_from_slice(&segment_id.to_le_bytes());
                put_str(&mut out, reason);
            }
            Edit::Tier0Evicted { segment_id } => {
                out.push(10);
                out.extend_from_slice(&segment_id.to_le_bytes());
            }
            Edit::Hydrated { segment_id } => {
                out.push(11);
                out.extend_from_slice(&segment_id.to_le_bytes());
            }
            Edit::Tier1Dropped { segment_id } => {
                out.push(12);
                out.extend_from_slice(&segment_id.to_le_bytes());
            }
            Edit::SegmentRetired { segment_id } => {
                out.push(13);
                out.extend_from_slice(&segment_id.to_le_bytes());
            }
            Edit::Tier2Uploaded(t) => {
                out.push(14);
                put_tier1_info(&mut out, &t.tier1);
                out.extend_from_slice(&t.object_crc.to_le_bytes());
                out.extend_from_slice(&t.segment_footer);
            }
            Edit::Tier1Evicted { segment_id } => {
                out.push(15);
                out.extend_from_slice(&segment_id.to_le_bytes());
            }
            Edit::Tier1Fetched { segment_id } => {
                out.push(16);
                out.extend_from_slice(&segment_id.to_le_bytes());
            }
            Edit::RetiredBelow {
                seq,
                last_timestamp_ms,
            } => {
                out.push(17);
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&last_timestamp_ms.to_le_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> FormatResult<Self> {
        let mut c = Cursor::new(bytes);
        let edit = match c.u8()? {
            1 => Edit::LogCreated {
                log_id: c.u128()?,
                created_ms: c.u64()?,
                name: get_str(&mut c)?,
            },
            2 => Edit::SegmentPrepared {
                segment_id: c.u64()?,
                capacity: c.u64()?,
            },
            3 => Edit::SegmentSealed(SealedInfo {
                segment_id: c.u64()?,
                base_seq: c.u64()?,
                record_count: c.u64()?,
                file_len: c.u64()?,
                first_timestamp_ms: c.u64()?,
                last_timestamp_ms: c.u64()?,
                footer_crc: c.u32()?,
            }),
            4 => Edit::SegmentDropped {
                segment_id: c.u64()?,
            },
            5 => Edit::SegmentQuarantined {
                segment_id: c.u64()?,
                reason: get_str(&mut c)?,
            },
            6 => Edit::LogOpened { epoch: c.u32()? },
            7 => Edit::CompressStarted {
                segment_id: c.u64()?,
                level: c.u32()? as i32,
            },
            8 => Edit::CompressDone(get_tier1_info(&mut c)?),
            9 => Edit::CompressFailed {
                segment_id: c.u64()?,
                reason: get_str(&mut c)?,
            },
            10 => Edit::Tier0Evicted {
                segment_id: c.u64()?,
            },
            11 => Edit::Hydrated {
                segment_id: c.u64()?,
            },
            12 => Edit::Tier1Dropped {
                segment_id: c.u64()?,
            },
            13 => Edit::SegmentRetired {
                segment_id: c.u64()?,
            },
            14 => Edit::Tier2Uploaded(Tier2Info {
                tier1: get_tier1_info(&mut c)?,
                object_crc: c.u32()?,
                segment_footer: c
                    .take(SEGMENT_FOOTER_LEN)?
                    .try_into()
                    .expect("footer length"),
            }),
            15 => Edit::Tier1Evicted {
                segment_id: c.u64()?,
            },
            16 => Edit::Tier1Fetched {
                segment_id: c.u64()?,
            },
            17 => Edit::RetiredBelow {
                seq: c.u64()?,
                last_timestamp_ms: c.u64()?,
            },
            tag => return Err(FormatError::Invalid(format!("unknown edit tag {tag}"))),
        };
        if c.remaining() != 0 {
            return Err(FormatError::Invalid("trailing bytes after edit".into()));
        }
        Ok(edit)
    }
}

/// Frame an edit for the WAL: CRC(len ‖ body), len, body.
pub fn encode_wal_record(edit: &Edit) -> Vec<u8> {
    let body = edit.encode();
    let len = (body.len() as u32).to_le_bytes();
    let crc = crc32c_pair(&len, &body);
    let mut out = Vec::with_capacity(WAL_RECORD_OVERHEAD + body.len());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&len);
    out.extend_from_slice(&body);
    out
}

/// Result of reading one WAL record.
#[derive(Debug, PartialEq, Eq)]
pub enum WalRead {
    /// A valid edit and the bytes it occupied.
    Edit(Edit, usize),
    /// No bytes left.
    End,
    /// The record is cut short by the end of the file (a torn write).
    Torn,
}

/// Read the WAL record at the start of `bytes`.
pub fn decode_wal_record(bytes: &[u8]) -> FormatResult<WalRead> {
    if bytes.is_empty() {
        return Ok(WalRead::End);
    }
    if bytes.len() < WAL_RECORD_OVERHEAD {
        return Ok(WalRead::Torn);
    }
    let len = le_u32(bytes, 4);
    let end = WAL_RECORD_OVERHEAD as u64 + len as u64;
    // Edits are appended one at a time and each is synced before the next is written, so only
    // the final record can be torn: a damaged record is torn when nothing but zeros follows it.
    let only_zeros_after = |end: usize| {
        bytes
            .get(end..)
            .is_none_or(|rest| rest.iter().all(|&b| b == 0))
    };
    if len > MAX_MANIFEST_EDIT_BYTES || end > bytes.len() as u64 {
        // A record running past the end of the file is torn only if nothing was written after
        // it: a damaged length field in front of later records looks the same otherwise.
        return if only_zeros_after(WAL_RECORD_OVERHEAD)
            || end > bytes.len() as u64
                && len <= MAX_MANIFEST_EDIT_BYTES
                && !holds_record(&bytes[WAL_RECORD_OVERHEAD..])
        {
            Ok(WalRead::Torn)
        } else {
            Err(FormatError::Invalid(format!(
                "manifest record length {len}"
            )))
        };
    }
    let end = end as usize;
    let stored = le_u32(bytes, 0);
    let computed = crc32c(&bytes[4..end]);
    if stored != computed {
        return if only_zeros_after(end) {
            Ok(WalRead::Torn)
        } else {
            Err(FormatError::Checksum { stored, computed })
        };
    }
    Ok(WalRead::Edit(
        Edit::decode(&bytes[WAL_RECORD_OVERHEAD..end])?,
        end,
    ))
}

/// Whether a complete record with a matching CRC starts anywhere in `bytes` (checked only
/// behind a record that claims to run past the end of the WAL, so at most one record's bytes).
fn holds_record(bytes: &[u8]) -> bool {
    (0..bytes.len().saturating_sub(WAL_RECORD_OVERHEAD - 1)).any(|at| {
        let candidate = &bytes[at..];
        let len = le_u32(candidate, 4) as usize;
        len <= MAX_MANIFEST_EDIT_BYTES as usize
            && WAL_RECORD_OVERHEAD + len <= candidate.len()
            && le_u32(candidate, 0) == crc32c(&candidate[4..WAL_RECORD_OVERHEAD + len])
    })
}

pub fn encode_wal_header(generation: u64) -> [u8; WAL_HEADER_BYTES] {
    let mut b = [0u8; WAL_HEADER_BYTES];
    b[..8].copy_from_slice(WAL_MAGIC);
    b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&generation.to_le_bytes());
    seal_fixed(&mut b);
    b
}

pub fn decode_wal_header(bytes: &[u8]) -> FormatResult<u64> {
    check_fixed(bytes, WAL_HEADER_BYTES, WAL_MAGIC)?;
    Ok(le_u64(bytes, 16))
}

/// Encode a snapshot: the edits that recreate a state, replaying WAL from `next_generation`.
pub fn encode_snapshot(next_generation: u64, edits: &[Edit]) -> Vec<u8> {
    let mut body = Vec::new();
    for edit in edits {
        let e = edit.encode();
        body.extend_from_slice(&(e.len() as u32).to_le_bytes());
        body.extend_from_slice(&e);
    }
    let mut out = vec![0u8; SNAPSHOT_HEADER_BYTES];
    out[..8].copy_from_slice(SNAPSHOT_MAGIC);
    out[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[16..24].copy_from_slice(&next_generation.to_le_bytes());
    out[24..28].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let crc = crc32c_pair(&out[..28], &body);
    out[28..32].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decode a snapshot into (next WAL generation, edits).
pub fn decode_snapshot(bytes: &[u8]) -> FormatResult<(u64, Vec<Edit>)> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err(FormatError::Truncated {
            needed: SNAPSHOT_HEADER_BYTES,
            available: bytes.len(),
        });
    }
    if &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    let body_len = le_u32(bytes, 24) as usize;
    let body = bytes
        .get(SNAPSHOT_HEADER_BYTES..SNAPSHOT_HEADER_BYTES + body_len)
        .ok_or(FormatError::Truncated {
            needed: SNAPSHOT_HEADER_BYTES + body_len,
            available: bytes.len(),
        })?;
    let stored = le_u32(bytes, 28);
    let computed = crc32c_pair(&bytes[..28], body);
    if stored != computed {
        return Err(FormatError::Checksum { stored, computed });
    }
    if version > FORMAT_VERSION || version == 0 {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let mut c = Cursor::new(body);
    let mut edits = Vec::new();
    while c.remaining() > 0 {
        let len = c.u32()? as usize;
        edits.push(Edit::decode(c.take(len)?)?);
    }
    Ok((le_u64(bytes, 16), edits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Edit> {
        vec![
            Edit::LogCreated {
                log_id: 42,
                created_ms: 7,
                name: "orders".into(),
            },
            Edit::SegmentPrepared {
                segment_id: 0,
                capacity: 1 << 26,
            },
            Edit::SegmentSealed(SealedInfo {
                segment_id: 0,
                base_seq: 0,
                record_count: 10,
                file_len: 5000,
                first_timestamp_ms: 1,
                last_timestamp_ms: 2,
                footer_crc: 0xdead_beef,
            }),
            Edit::SegmentDropped { segment_id: 1 },
            Edit::SegmentQuarantined {
                segment_id: 0,
                reason: "footer checksum".into(),
            },
            Edit::LogOpened { epoch: 9 },
            Edit::CompressStarted {
                segment_id: 0,
                level: -3,
            },
            Edit::CompressDone(Tier1Info {
                segment_id: 0,
                file_len: 900,
                footer_crc: 5,
                frames: 2,
                uncompressed_bytes: 4000,
                level: -3,
            }),
            Edit::CompressFailed {
                segment_id: 0,
                reason: "disk full".into(),
            },
            Edit::Tier0Evicted { segment_id: 0 },
            Edit::Hydrated { segment_id: 0 },
            Edit::Tier1Dropped { segment_id: 0 },
            Edit::SegmentRetired { segment_id: 0 },
            Edit::RetiredBelow {
                seq: 1 << 40,
                last_timestamp_ms: 1_700_000_000_000,
            },
        ]
    }

    #[test]
    fn edits_roundtrip() {
        for e in samples() {
            assert_eq!(Edit::decode(&e.encode()).unwrap(), e);
            let rec = encode_wal_record(&e);
            assert_eq!(
                decode_wal_record(&rec).unwrap(),
                WalRead::Edit(e.clone(), rec.len())
            );
            assert_eq!(
                decode_wal_record(&rec[..rec.len() - 1]).unwrap(),
                WalRead::Torn
            );
        }
        let snap = encode_snapshot(3, &samples());
        assert_eq!(decode_snapshot(&snap).unwrap(), (3, samples()));
        let mut bad = snap.clone();
        bad[40] ^= 1;
        assert!(decode_snapshot(&bad).is_err());
        assert_eq!(decode_wal_header(&encode_wal_header(9)).unwrap(), 9);
    }
}
