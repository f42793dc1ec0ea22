//! Tier 1 ("warm") file: a sealed segment compressed with zstd in independently decodable
//! frames, exactly as `docs/format.md` ("Tier 1 file") specifies.
//!
//! ```text
//! [Tier1Header 64][segment header copy 128][zstd frames ...][frame index 32 x n]
//! [segment sparse index + segment footer copy][Tier1Footer 64]
//! ```
//!
//! Every zstd frame holds whole record frames (32-byte header + payload) of the original segment,
//! so one record is read by decompressing one frame. The raw copies of the segment header and
//! tail let the original segment be rebuilt byte for byte.
//!
//! Pure bytes <-> types: no I/O; decoders never panic and check every field they can check
//! without the rest of the file (the I/O layer cross-checks header, footer and index).

use super::{
    FORMAT_VERSION, FormatError, FormatResult, check_fixed, crc32c, le_u32, le_u64, seal_fixed,
};
use crate::limits::{
    FRAME_HEADER_BYTES, INDEX_ENTRY_BYTES, SEGMENT_FOOTER_BYTES, SEGMENT_HEADER_BYTES,
    TIER1_FOOTER_BYTES, TIER1_FRAME_ENTRY_BYTES, TIER1_HEADER_BYTES,
};

pub const TIER1_HEADER_MAGIC: &[u8; 8] = b"AOF2T1HD";
pub const TIER1_FOOTER_MAGIC: &[u8; 8] = b"AOF2T1FT";

const HEADER: usize = TIER1_HEADER_BYTES as usize;
const FOOTER: usize = TIER1_FOOTER_BYTES as usize;
const ENTRY: usize = TIER1_FRAME_ENTRY_BYTES as usize;

/// Offset of the first zstd frame: after the Tier 1 header and the segment header copy.
pub const TIER1_FRAMES_OFFSET: u64 = TIER1_HEADER_BYTES + SEGMENT_HEADER_BYTES;

/// Tier 1 header (64 bytes at offset 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier1Header {
    pub log_id: u128,
    pub segment_id: u64,
    pub base_seq: u64,
    pub record_count: u64,
    /// The zstd level the frames were compressed with (negative: zstd's fast levels).
    pub level: i32,
    /// Uncompressed bytes the writer aimed for per frame (a frame is never split inside a
    /// record, so one record larger than this is a frame of its own).
    pub frame_target_bytes: u32,
}

impl Tier1Header {
    pub fn encode(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[..8].copy_from_slice(TIER1_HEADER_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(HEADER as u16).to_le_bytes());
        b[12..16].copy_from_slice(&self.level.to_le_bytes());
        b[16..32].copy_from_slice(&self.log_id.to_le_bytes());
        b[32..40].copy_from_slice(&self.segment_id.to_le_bytes());
        b[40..48].copy_from_slice(&self.base_seq.to_le_bytes());
        b[48..56].copy_from_slice(&self.record_count.to_le_bytes());
        b[56..60].copy_from_slice(&self.frame_target_bytes.to_le_bytes());
        seal_fixed(&mut b);
        b
    }

    pub fn decode(bytes: &[u8]) -> FormatResult<Self> {
        check_fixed(bytes, HEADER, TIER1_HEADER_MAGIC)?;
        if u16::from_le_bytes([bytes[10], bytes[11]]) as usize != HEADER {
            return Err(FormatError::Invalid("tier 1 header length".into()));
        }
        Ok(Tier1Header {
            level: le_u32(bytes, 12) as i32,
            log_id: u128::from_le_bytes(bytes[16..32].try_into().expect("16 bytes")),
            segment_id: le_u64(bytes, 32),
            base_seq: le_u64(bytes, 40),
            record_count: le_u64(bytes, 48),
            frame_target_bytes: le_u32(bytes, 56),
        })
    }
}

/// One entry of the frame index: where a zstd frame is and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    /// Sequence of the first record in the frame.
    pub base_seq: u64,
    /// Byte offset of the compressed frame from the start of the Tier 1 file.
    pub compressed_offset: u64,
    /// Records in the frame (at least one).
    pub record_count: u32,
    pub compressed_len: u32,
    /// Length of the decompressed bytes: whole record frames, back to back.
    pub uncompressed_len: u32,
    /// CRC-32C of the decompressed bytes.
    pub uncompressed_crc: u32,
}

impl FrameEntry {
    /// One past the last sequence in the frame.
    pub fn end_seq(&self) -> u64 {
        self.base_seq + self.record_count as u64
    }
}

/// Encode the frame index (32 bytes per entry).
pub fn encode_frame_index(entries: &[FrameEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY);
    for e in entries {
        out.extend_from_slice(&e.base_seq.to_le_bytes());
        out.extend_from_slice(&e.compressed_offset.to_le_bytes());
        out.extend_from_slice(&e.record_count.to_le_bytes());
        out.extend_from_slice(&e.compressed_len.to_le_bytes());
        out.extend_from_slice(&e.uncompressed_len.to_le_bytes());
        out.extend_from_slice(&e.uncompressed_crc.to_le_bytes());
    }
    out
}

/// Decode and check the frame index described by `footer`: its CRC, that the frames are packed
/// back to back from [`TIER1_FRAMES_OFFSET`] up to the index, that sequences are dense from the
/// footer's base sequence, and that record counts and uncompressed lengths add up to the
/// footer's totals.
pub fn decode_frame_index(bytes: &[u8], footer: &Tier1Footer) -> FormatResult<Vec<FrameEntry>> {
    let expected_len = footer.frame_count as u64 * TIER1_FRAME_ENTRY_BYTES;
    if bytes.len() as u64 != expected_len {
        return Err(FormatError::Truncated {
            needed: expected_len.min(usize::MAX as u64) as usize,
            available: bytes.len(),
        });
    }
    let computed = crc32c(bytes);
    if computed != footer.index_crc {
        return Err(FormatError::Checksum {
            stored: footer.index_crc,
            computed,
        });
    }
    let entries: Vec<FrameEntry> = bytes
        .chunks_exact(ENTRY)
        .map(|c| FrameEntry {
            base_seq: le_u64(c, 0),
            compressed_offset: le_u64(c, 8),
            record_count: le_u32(c, 16),
            compressed_len: le_u32(c, 20),
            uncompressed_len: le_u32(c, 24),
            uncompressed_crc: le_u32(c, 28),
        })
        .collect();
    let mut offset = TIER1_FRAMES_OFFSET;
    let mut seq = footer.base_seq;
    let mut uncompressed = 0u64;
    for (i, e) in entries.iter().enumerate() {
        if e.compressed_offset != offset || e.compressed_len == 0 {
            return Err(FormatError::Invalid(format!(
                "frame {i} at offset {} ({} bytes), expected offset {offset}",
                e.compressed_offset, e.compressed_len
            )));
        }
        if e.base_seq != seq || e.record_count == 0 {
            return Err(FormatError::Invalid(format!(
                "frame {i} holds {} records from seq {}, expected records from seq {seq}",
                e.record_count, e.base_seq
            )));
        }
        if (e.uncompressed_len as u64) < e.record_count as u64 * FRAME_HEADER_BYTES {
            return Err(FormatError::Invalid(format!(
                "frame {i}: {} records cannot fit in {} bytes",
                e.record_count, e.uncompressed_len
            )));
        }
        let (Some(next_offset), Some(next_seq), Some(next_uncompressed)) = (
            offset.checked_add(e.compressed_len as u64),
            seq.checked_add(e.record_count as u64),
            uncompressed.checked_add(e.uncompressed_len as u64),
        ) else {
            return Err(FormatError::Invalid(format!("frame {i} overflows")));
        };
        offset = next_offset;
        seq = next_seq;
        uncompressed = next_uncompressed;
    }
    if offset != footer.index_offset() {
        return Err(FormatError::Invalid(format!(
            "frames end at {offset}, index starts at {}",
            footer.index_offset()
        )));
    }
    if seq - footer.base_seq != footer.record_count {
        return Err(FormatError::Invalid(format!(
            "frames hold {} records, footer says {}",
            seq - footer.base_seq,
            footer.record_count
        )));
    }
    if uncompressed != footer.uncompressed_records_bytes {
        return Err(FormatError::Invalid(format!(
            "frames hold {uncompressed} bytes, footer says {}",
            footer.uncompressed_records_bytes
        )));
    }
    Ok(entries)
}

/// Tier 1 footer (the last 64 bytes of a Tier 1 file).
///
/// The frame index starts at [`Tier1Footer::index_offset`] (it ends where the segment tail copy
/// begins); the footer stores where the tail copy is and how long it is, so it describes the
/// length of the whole file ([`Tier1Footer::file_len`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier1Footer {
    pub frame_count: u32,
    /// Offset of the copy of the original segment's sparse index and footer.
    pub seg_tail_offset: u64,
    /// Its length: index entries x 24 + 96.
    pub seg_tail_len: u32,
    /// CRC-32C of the frame index bytes.
    pub index_crc: u32,
    /// Record frame bytes of the original segment (`records_end - 128`).
    pub uncompressed_records_bytes: u64,
    pub base_seq: u64,
    pub record_count: u64,
}

impl Tier1Footer {
    pub fn encode(&self) -> [u8; FOOTER] {
        let mut b = [0u8; FOOTER];
        b[..8].copy_from_slice(TIER1_FOOTER_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(FOOTER as u16).to_le_bytes());
        b[12..16].copy_from_slice(&self.frame_count.to_le_bytes());
        b[16..24].copy_from_slice(&self.seg_tail_offset.to_le_bytes());
        b[24..28].copy_from_slice(&self.seg_tail_len.to_le_bytes());
        b[28..32].copy_from_slice(&self.index_crc.to_le_bytes());
        b[32..40].copy_from_slice(&self.uncompressed_records_bytes.to_le_bytes());
        b[40..48].copy_from_slice(&self.base_seq.to_le_bytes());
        b[48..56].copy_from_slice(&self.record_count.to_le_bytes());
        seal_fixed(&mut b);
        b
    }

    /// Decode and check what the footer alone can show: lengths and offsets that fit together,
    /// counts that are possible.
    pub fn decode(bytes: &[u8]) -> FormatResult<Self> {
        check_fixed(bytes, FOOTER, TIER1_FOOTER_MAGIC)?;
        if u16::from_le_bytes([bytes[10], bytes[11]]) as usize != FOOTER || le_u32(bytes, 56) != 0 {
            return Err(FormatError::Invalid(
                "tier 1 footer length or reserved bytes".into(),
            ));
        }
        let footer = Tier1Footer {
            frame_count: le_u32(bytes, 12),
            seg_tail_offset: le_u64(bytes, 16),
            seg_tail_len: le_u32(bytes, 24),
            index_crc: le_u32(bytes, 28),
            uncompressed_records_bytes: le_u64(bytes, 32),
            base_seq: le_u64(bytes, 40),
            record_count: le_u64(bytes, 48),
        };
        let index_bytes = footer.frame_count as u64 * TIER1_FRAME_ENTRY_BYTES;
        let index_room = footer.seg_tail_offset.checked_sub(TIER1_FRAMES_OFFSET);
        if index_room.is_none_or(|room| room < index_bytes) {
            return Err(FormatError::Invalid(format!(
                "segment tail at {} leaves no room for {} frame index entries",
                footer.seg_tail_offset, footer.frame_count
            )));
        }
        let tail = footer.seg_tail_len as u64;
        if tail < SEGMENT_FOOTER_BYTES
            || !(tail - SEGMENT_FOOTER_BYTES).is_multiple_of(INDEX_ENTRY_BYTES)
        {
            return Err(FormatError::Invalid(format!(
                "segment tail of {tail} bytes is not a sparse index and a footer"
            )));
        }
        if footer
            .seg_tail_offset
            .checked_add(tail + TIER1_FOOTER_BYTES)
            .is_none()
            || footer.base_seq.checked_add(footer.record_count).is_none()
        {
            return Err(FormatError::Invalid("offsets or sequences overflow".into()));
        }
        // Every frame holds at least one record, every record at least a 32-byte frame header.
        let records_ok = (footer.record_count == 0) == (footer.frame_count == 0)
            && footer.record_count >= footer.frame_count as u64
            && footer
                .record_count
                .checked_mul(FRAME_HEADER_BYTES)
                .is_some_and(|min| min <= footer.uncompressed_records_bytes)
            && (footer.record_count > 0 || footer.uncompressed_records_bytes == 0);
        if !records_ok {
            return Err(FormatError::Invalid(format!(
                "{} records in {} frames of {} bytes",
                footer.record_count, footer.frame_count, footer.uncompressed_records_bytes
            )));
        }
        Ok(footer)
    }

    /// Offset of the frame index (it ends where the segment tail copy begins).
    pub fn index_offset(&self) -> u64 {
        self.seg_tail_offset.saturating_sub(self.index_len())
    }

    /// Length of the frame index in bytes.
    pub fn index_len(&self) -> u64 {
        self.frame_count as u64 * TIER1_FRAME_ENTRY_BYTES
    }

    /// Length of the Tier 1 file this footer ends.
    pub fn file_len(&self) -> u64 {
        // Saturating: a footer from disk may hold anything; callers compare with the real length.
        self.seg_tail_offset
            .saturating_add(self.seg_tail_len as u64)
            .saturating_add(TIER1_FOOTER_BYTES)
    }

    /// Check that a header belongs with this footer.
    pub fn check_header(&self, header: &Tier1Header) -> FormatResult<()> {
        if header.base_seq != self.base_seq || header.record_count != self.record_count {
            return Err(FormatError::Invalid(format!(
                "header holds {} records from seq {}, footer {} from seq {}",
                header.record_count, header.base_seq, self.record_count, self.base_seq
            )));
        }
        Ok(())
    }

    /// The CRC stored in an encoded footer (the file's identity in the manifest).
    pub fn stored_crc(encoded: &[u8; FOOTER]) -> u32 {
        le_u32(encoded, FOOTER - 4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Tier1Footer, Vec<FrameEntry>) {
        let entries = vec![
            FrameEntry {
                base_seq: 100,
                compressed_offset: TIER1_FRAMES_OFFSET,
                record_count: 3,
                compressed_len: 50,
                uncompressed_len: 200,
                uncompressed_crc: 7,
            },
            FrameEntry {
                base_seq: 103,
                compressed_offset: TIER1_FRAMES_OFFSET + 50,
                record_count: 1,
                compressed_len: 20,
                uncompressed_len: 32,
                uncompressed_crc: 8,
            },
        ];
        let index = encode_frame_index(&entries);
        let footer = Tier1Footer {
            frame_count: 2,
            seg_tail_offset: TIER1_FRAMES_OFFSET + 70 + index.len() as u64,
            seg_tail_len: 24 + 96,
            index_crc: crc32c(&index),
            uncompressed_records_bytes: 232,
            base_seq: 100,
            record_count: 4,
        };
        (footer, entries)
    }

    #[test]
    fn tier1_header_footer_roundtrip_and_corruption() {
        let h = Tier1Header {
            log_id: 1 << 100 | 9,
            segment_id: 4,
            base_seq: 100,
            record_count: 4,
            level: -5,
            frame_target_bytes: 256 << 10,
        };
        let enc = h.encode();
        assert_eq!(Tier1Header::decode(&enc).unwrap(), h);
        for i in 0..enc.len() {
            let mut bad = enc;
            bad[i] ^= 0x10;
            assert!(Tier1Header::decode(&bad).is_err(), "flip at {i} undetected");
        }
        let (f, _) = sample();
        let enc = f.encode();
        assert_eq!(Tier1Footer::decode(&enc).unwrap(), f);
        assert_eq!(Tier1Footer::stored_crc(&enc), le_u32(&enc, 60));
        assert_eq!(f.file_len(), f.seg_tail_offset + 120 + 64);
        f.check_header(&h).unwrap();
        for i in 0..enc.len() {
            let mut bad = enc;
            bad[i] ^= 0x10;
            assert!(Tier1Footer::decode(&bad).is_err(), "flip at {i} undetected");
        }
        let mut newer = enc;
        newer[8] = 2;
        seal_fixed(&mut newer);
        assert_eq!(
            Tier1Footer::decode(&newer),
            Err(FormatError::UnsupportedVersion(2))
        );
        assert_eq!(Tier1Header::decode(&[0u8; 64]), Err(FormatError::BadMagic));
    }

    #[test]
    fn tier1_footer_rejects_impossible_layouts() {
        let (f, _) = sample();
        let bad = [
            Tier1Footer {
                seg_tail_offset: TIER1_FRAMES_OFFSET,
                ..f
            },
            Tier1Footer {
                seg_tail_len: 100,
                ..f
            },
            Tier1Footer {
                record_count: 1,
                ..f
            },
            Tier1Footer {
                uncompressed_records_bytes: 4 * 32 - 1,
                ..f
            },
            Tier1Footer {
                frame_count: 0,
                ..f
            },
            Tier1Footer {
                seg_tail_offset: u64::MAX - 10,
                ..f
            },
            Tier1Footer {
                base_seq: u64::MAX,
                ..f
            },
        ];
        for b in bad {
            assert!(
                matches!(
                    Tier1Footer::decode(&b.encode()),
                    Err(FormatError::Invalid(_))
                ),
                "{b:?} accepted"
            );
        }
        let empty = Tier1Footer {
            frame_count: 0,
            seg_tail_offset: TIER1_FRAMES_OFFSET,
            seg_tail_len: 96,
            index_crc: crc32c(&[]),
            uncompressed_records_bytes: 0,
            base_seq: 5,
            record_count: 0,
        };
        assert_eq!(Tier1Footer::decode(&empty.encode()).unwrap(), empty);
        assert!(decode_frame_index(&[], &empty).unwrap().is_empty());
    }

    /// Decoders never panic: random structures with valid magic, version and CRC (so they get
    /// past the first checks) and random frame indexes.
    #[test]
    fn tier1_decoders_never_panic() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut decoded = 0;
        for _ in 0..20_000 {
            let mut b = [0u8; 64];
            for chunk in b.chunks_mut(8) {
                chunk.copy_from_slice(&next().to_le_bytes());
            }
            // Small values in the count and length fields reach the deeper checks more often.
            if next() % 2 == 0 {
                b[12..16].copy_from_slice(&((next() % 4) as u32).to_le_bytes());
                b[24..28].copy_from_slice(&((next() % 3 * 24 + 96) as u32).to_le_bytes());
                b[16..24].copy_from_slice(&(next() % 512).to_le_bytes());
                b[32..40].copy_from_slice(&(next() % 1024).to_le_bytes());
                b[40..48].copy_from_slice(&(next() % 1024).to_le_bytes());
                b[48..56].copy_from_slice(&(next() % 5).to_le_bytes());
                b[56..60].fill(0);
            }
            for magic in [TIER1_HEADER_MAGIC, TIER1_FOOTER_MAGIC] {
                b[..8].copy_from_slice(magic);
                b[8..12].copy_from_slice(&[1, 0, 64, 0]);
                seal_fixed(&mut b);
                let _ = Tier1Header::decode(&b);
                if let Ok(footer) = Tier1Footer::decode(&b) {
                    decoded += 1;
                    let _ = (footer.file_len(), footer.index_offset());
                    let mut index = vec![0u8; (footer.index_len() as usize).min(256)];
                    for byte in index.iter_mut() {
                        *byte = next() as u8;
                    }
                    let footer = Tier1Footer {
                        index_crc: crc32c(&index),
                        ..footer
                    };
                    let _ = decode_frame_index(&index, &footer);
                }
            }
            let _ = Tier1Footer::decode(&b[..(next() % 64) as usize]);
        }
        assert!(decoded > 1000, "only {decoded} footers got past the checks");
    }

    #[test]
    fn frame_index_roundtrip_and_consistency() {
        let (f, entries) = sample();
        let index = encode_frame_index(&entries);
        assert_eq!(decode_frame_index(&index, &f).unwrap(), entries);
        assert!(matches!(
            decode_frame_index(&index[..32], &f),
            Err(FormatError::Truncated { .. })
        ));
        let mut flipped = index.clone();
        flipped[40] ^= 1;
        assert!(matches!(
            decode_frame_index(&flipped, &f),
            Err(FormatError::Checksum { .. })
        ));
        // Entries that are well-formed and checksummed but do not fit the footer.
        let edits: [fn(&mut Vec<FrameEntry>); 5] = [
            |e| e[1].compressed_offset += 1,
            |e| e[1].base_seq += 1,
            |e| e[1].record_count = 0,
            |e| e[0].uncompressed_len = 95,
            |e| e[1].uncompressed_len += 1,
        ];
        for edit in edits {
            let mut bad = entries.clone();
            edit(&mut bad);
            let bytes = encode_frame_index(&bad);
            let footer = Tier1Footer {
                index_crc: crc32c(&bytes),
                ..f
            };
            assert!(
                matches!(
                    decode_frame_index(&bytes, &footer),
                    Err(FormatError::Invalid(_))
                ),
                "{bad:?} accepted"
            );
        }
    }
}
