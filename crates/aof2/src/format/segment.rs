//! Segment header, record frames, sparse index entries and footer.

use super::{
    FORMAT_VERSION, FormatError, FormatResult, check_fixed, crc32c, le_u32, le_u64, seal_fixed,
};
use crate::limits::{
    FRAME_HEADER_BYTES, INDEX_ENTRY_BYTES, SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES,
};

pub const SEGMENT_MAGIC: &[u8; 8] = b"AOF2SEG\0";
pub const FOOTER_MAGIC: &[u8; 8] = b"AOF2FTR\0";

const HEADER: usize = SEGMENT_HEADER_BYTES as usize;
const FOOTER: usize = SEGMENT_FOOTER_BYTES as usize;
const FRAME: usize = FRAME_HEADER_BYTES as usize;
const ENTRY: usize = INDEX_ENTRY_BYTES as usize;

/// Header flag: the file was reused from an older segment of the same log, so the bytes after
/// the last frame may be left-over frames of that segment (lower sequence numbers) rather than
/// zeros. See `docs/format.md`.
pub const HEADER_FLAG_RECYCLED: u32 = 1;

/// Segment header (128 bytes at offset 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub log_id: u128,
    pub segment_id: u64,
    pub base_seq: u64,
    pub created_ms: u64,
    pub capacity: u64,
    /// [`HEADER_FLAG_RECYCLED`].
    pub recycled: bool,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[..8].copy_from_slice(SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(HEADER as u16).to_le_bytes());
        let flags = if self.recycled {
            HEADER_FLAG_RECYCLED
        } else {
            0
        };
        b[12..16].copy_from_slice(&flags.to_le_bytes());
        b[16..32].copy_from_slice(&self.log_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.segment_id.to_le_bytes());
        b[40..48].copy_from_slice(&self.base_seq.to_le_bytes());
        b[48..56].copy_from_slice(&self.created_ms.to_le_bytes());
        b[56..64].copy_from_slice(&self.capacity.to_le_bytes());
        seal_fixed(&mut b);
        b
    }

    pub fn decode(bytes: &[u8]) -> FormatResult<Self> {
        check_fixed(bytes, HEADER, SEGMENT_MAGIC)?;
        let flags = le_u32(bytes, 12);
        if u16::from_le_bytes([bytes[10], bytes[11]]) as usize != HEADER
            || flags & !HEADER_FLAG_RECYCLED != 0
        {
            return Err(FormatError::Invalid(
                "segment header length or flags".into(),
            ));
        }
        Ok(SegmentHeader {
            log_id: u128::from_le_bytes(bytes[16..32].try_into().expect("16 bytes")),
            segment_id: le_u64(bytes, 32),
            base_seq: le_u64(bytes, 40),
            created_ms: le_u64(bytes, 48),
            capacity: le_u64(bytes, 56),
            recycled: flags & HEADER_FLAG_RECYCLED != 0,
        })
    }

    /// A prepared, never activated segment has an all-zero header.
    pub fn is_blank(bytes: &[u8]) -> bool {
        bytes.len() >= HEADER && bytes[..HEADER].iter().all(|&b| b == 0)
    }
}

/// The fixed fields of a record frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub seq: u64,
    pub timestamp_ms: u64,
    pub batch_remaining: u32,
    /// Open epoch of the writer (see `docs/format.md`): never decreases within a segment.
    pub epoch: u32,
}

/// Write a frame (header + payload) into `out`, which must be exactly `32 + payload.len()` bytes.
/// The CRC covers the header fields after it and the payload.
#[inline]
pub fn encode_frame(out: &mut [u8], header: &FrameHeader, payload: &[u8]) {
    debug_assert_eq!(out.len(), FRAME + payload.len());
    out[4..8].copy_from_slice(&header.len.to_le_bytes());
    out[8..16].copy_from_slice(&header.seq.to_le_bytes());
    out[16..24].copy_from_slice(&header.timestamp_ms.to_le_bytes());
    out[24..28].copy_from_slice(&header.batch_remaining.to_le_bytes());
    out[28..32].copy_from_slice(&header.epoch.to_le_bytes());
    out[FRAME..].copy_from_slice(payload);
    let crc = crc32c(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
}

/// Why a frame at some offset is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer than 32 bytes, or the payload runs past the end of the records area.
    Truncated,
    /// Header and payload do not match the stored CRC.
    Checksum,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameError::Truncated => "truncated frame",
            FrameError::Checksum => "frame checksum mismatch",
        })
    }
}

/// Decode the frame starting at `bytes[0]`; `bytes` ends at the end of the records area.
/// Returns the header and the payload range `32..32+len` (relative to `bytes`).
#[inline]
pub fn decode_frame(bytes: &[u8]) -> Result<FrameHeader, FrameError> {
    if bytes.len() < FRAME {
        return Err(FrameError::Truncated);
    }
    let len = le_u32(bytes, 4);
    let end = FRAME as u64 + len as u64;
    if end > bytes.len() as u64 {
        return Err(FrameError::Truncated);
    }
    let stored = le_u32(bytes, 0);
    if crc32c(&bytes[4..end as usize]) != stored {
        return Err(FrameError::Checksum);
    }
    Ok(FrameHeader {
        len,
        seq: le_u64(bytes, 8),
        timestamp_ms: le_u64(bytes, 16),
        batch_remaining: le_u32(bytes, 24),
        epoch: le_u32(bytes, 28),
    })
}

/// Decode only the header fields of a frame already known to be valid (no CRC check).
#[inline]
pub fn peek_frame(bytes: &[u8]) -> FrameHeader {
    FrameHeader {
        len: le_u32(bytes, 4),
        seq: le_u64(bytes, 8),
        timestamp_ms: le_u64(bytes, 16),
        batch_remaining: le_u32(bytes, 24),
        epoch: le_u32(bytes, 28),
    }
}

/// One sparse index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub seq: u64,
    pub offset: u64,
    pub timestamp_ms: u64,
}

pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY);
    for e in entries {
        out.extend_from_slice(&e.seq.to_le_bytes());
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.timestamp_ms.to_le_bytes());
    }
    out
}

pub fn decode_index(bytes: &[u8]) -> FormatResult<Vec<IndexEntry>> {
    if !bytes.len().is_multiple_of(ENTRY) {
        return Err(FormatError::Invalid(
            "index length not a multiple of 24".into(),
        ));
    }
    let entries: Vec<IndexEntry> = bytes
        .chunks_exact(ENTRY)
        .map(|c| IndexEntry {
            seq: le_u64(c, 0),
            offset: le_u64(c, 8),
            timestamp_ms: le_u64(c, 16),
        })
        .collect();
    if entries
        .windows(2)
        .any(|w| w[1].seq <= w[0].seq || w[1].offset <= w[0].offset)
    {
        return Err(FormatError::Invalid("index entries not ascending".into()));
    }
    Ok(entries)
}

/// Segment footer (the last 96 bytes of a sealed segment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentFooter {
    pub index_entries: u32,
    /// The log's identity, as in the segment header: a footer copied into Tier 1 or Tier 2
    /// names the log it belongs to on its own.
    pub log_id: u128,
    pub segment_id: u64,
    pub base_seq: u64,
    pub record_count: u64,
    pub records_end: u64,
    pub first_timestamp_ms: u64,
    pub last_timestamp_ms: u64,
    pub sealed_ms: u64,
    pub index_crc: u32,
}

impl SegmentFooter {
    pub fn encode(&self) -> [u8; FOOTER] {
        let mut b = [0u8; FOOTER];
        b[..8].copy_from_slice(FOOTER_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(FOOTER as u16).to_le_bytes());
        b[12..16].copy_from_slice(&self.index_entries.to_le_bytes());
        b[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        b[24..32].copy_from_slice(&self.base_seq.to_le_bytes());
        b[32..40].copy_from_slice(&self.record_count.to_le_bytes());
        b[40..48].copy_from_slice(&self.records_end.to_le_bytes());
        b[48..56].copy_from_slice(&self.first_timestamp_ms.to_le_bytes());
        b[56..64].copy_from_slice(&self.last_timestamp_ms.to_le_bytes());
        b[64..72].copy_from_slice(&self.sealed_ms.to_le_bytes());
        b[72..76].copy_from_slice(&self.index_crc.to_le_bytes());
        b[76..92].copy_from_slice(&self.log_id.to_le_bytes());
        seal_fixed(&mut b);
        b
    }

    pub fn decode(bytes: &[u8]) -> FormatResult<Self> {
        check_fixed(bytes, FOOTER, FOOTER_MAGIC)?;
        if u16::from_le_bytes([bytes[10], bytes[11]]) as usize != FOOTER {
            return Err(FormatError::Invalid("footer length".into()));
        }
        let footer = SegmentFooter {
            index_entries: le_u32(bytes, 12),
            segment_id: le_u64(bytes, 16),
            base_seq: le_u64(bytes, 24),
            record_count: le_u64(bytes, 32),
            records_end: le_u64(bytes, 40),
            first_timestamp_ms: le_u64(bytes, 48),
            last_timestamp_ms: le_u64(bytes, 56),
            sealed_ms: le_u64(bytes, 64),
            index_crc: le_u32(bytes, 72),
            log_id: u128::from_le_bytes(bytes[76..92].try_into().expect("16 bytes")),
        };
        // Every reader computes the end of the footer's sequence range.
        if footer.base_seq.checked_add(footer.record_count).is_none() {
            return Err(FormatError::Invalid(
                "footer sequence range past u64::MAX".into(),
            ));
        }
        Ok(footer)
    }

    /// File length of a sealed segment with this footer (saturating: a footer from disk may
    /// hold anything, and callers compare this with the real length).
    pub fn file_len(&self) -> u64 {
        self.records_end
            .saturating_add(self.index_entries as u64 * INDEX_ENTRY_BYTES)
            .saturating_add(SEGMENT_FOOTER_BYTES)
    }

    /// The CRC stored in an encoded footer (used as the footer's identity in the manifest).
    pub fn stored_crc(encoded: &[u8; FOOTER]) -> u32 {
        le_u32(encoded, FOOTER - 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_file_len_of_any_footer_does_not_overflow() {
        let footer = SegmentFooter {
            index_entries: u32::MAX,
            log_id: 0,
            segment_id: 0,
            base_seq: 0,
            record_count: 0,
            records_end: u64::MAX - 1,
            first_timestamp_ms: 0,
            last_timestamp_ms: 0,
            sealed_ms: 0,
            index_crc: 0,
        };
        assert_eq!(footer.file_len(), u64::MAX);
    }

    #[test]
    fn frame_roundtrip_and_corruption() {
        let payload = b"hello world";
        let h = FrameHeader {
            len: payload.len() as u32,
            seq: 7,
            timestamp_ms: 99,
            batch_remaining: 2,
            epoch: 3,
        };
        let mut buf = vec![0u8; FRAME + payload.len()];
        encode_frame(&mut buf, &h, payload);
        assert_eq!(decode_frame(&buf).unwrap(), h);
        assert_eq!(&buf[FRAME..], payload);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(decode_frame(&bad).is_err(), "flip at {i} undetected");
        }
        assert_eq!(
            decode_frame(&buf[..buf.len() - 1]),
            Err(FrameError::Truncated)
        );
        assert!(decode_frame(&[0u8; 64]).is_err(), "zeros are not a frame");
    }

    #[test]
    fn header_footer_roundtrip() {
        let h = SegmentHeader {
            log_id: 1 << 100 | 5,
            segment_id: 3,
            base_seq: 1000,
            created_ms: 12,
            capacity: 1 << 20,
            recycled: false,
        };
        assert_eq!(SegmentHeader::decode(&h.encode()).unwrap(), h);
        let r = SegmentHeader {
            recycled: true,
            ..h
        };
        assert_eq!(r.encode()[12..16], HEADER_FLAG_RECYCLED.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&r.encode()).unwrap(), r);
        let mut unknown = h.encode();
        unknown[12] = 2;
        seal_fixed(&mut unknown);
        assert!(
            SegmentHeader::decode(&unknown).is_err(),
            "an unknown header flag is refused"
        );
        let f = SegmentFooter {
            index_entries: 2,
            log_id: 1 << 100 | 5,
            segment_id: 3,
            base_seq: 1000,
            record_count: 10,
            records_end: 4096,
            first_timestamp_ms: 1,
            last_timestamp_ms: 2,
            sealed_ms: 3,
            index_crc: 4,
        };
        assert_eq!(SegmentFooter::decode(&f.encode()).unwrap(), f);
        let mut bad = f.encode();
        bad[20] ^= 1;
        assert!(matches!(
            SegmentFooter::decode(&bad),
            Err(FormatError::Checksum { .. })
        ));
        let mut newer = h.encode();
        newer[8] = 9;
        seal_fixed(&mut newer);
        assert_eq!(
            SegmentHeader::decode(&newer),
            Err(FormatError::UnsupportedVersion(9))
        );
    }
}
