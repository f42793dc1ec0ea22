//! Golden byte files pin the on-disk format (`docs/format.md`). An intentional format change
//! must bump the format version and regenerate them with `AOF2_BLESS=1 cargo test --test golden`.

use std::path::PathBuf;

use aof2::format::manifest::{
    Edit, SealedInfo, encode_snapshot, encode_wal_header, encode_wal_record,
};
use aof2::format::root::RootFile;
use aof2::format::segment::{
    FrameHeader, IndexEntry, SegmentFooter, SegmentHeader, encode_frame, encode_index,
};

fn check(name: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(name);
    if std::env::var_os("AOF2_BLESS").is_some() {
        std::fs::write(&path, bytes).unwrap();
    }
    let golden = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with AOF2_BLESS=1)", path.display()));
    assert_eq!(
        golden, bytes,
        "{name} differs from its golden file: the on-disk format changed"
    );
}

#[test]
fn golden_encodings() {
    check(
        "root-v1.bin",
        &RootFile {
            root_id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            created_ms: 1_700_000_000_000,
        }
        .encode(),
    );
    let header = SegmentHeader {
        log_id: 0xfeed_beef,
        segment_id: 3,
        base_seq: 1000,
        created_ms: 1_700_000_000_001,
        capacity: 1 << 20,
        recycled: false,
    };
    check("segment-header-v1.bin", &header.encode());
    let payload = b"hello, aof2";
    let mut frame = vec![0u8; 32 + payload.len()];
    encode_frame(
        &mut frame,
        &FrameHeader {
            len: payload.len() as u32,
            seq: 1000,
            timestamp_ms: 1_700_000_000_002,
            batch_remaining: 1,
            epoch: 2,
        },
        payload,
    );
    check("frame-v1.bin", &frame);
    let mut empty = vec![0u8; 32];
    encode_frame(
        &mut empty,
        &FrameHeader {
            len: 0,
            seq: 1001,
            timestamp_ms: 1_700_000_000_002,
            batch_remaining: 0,
            epoch: 2,
        },
        b"",
    );
    check("frame-empty-v1.bin", &empty);
    let index = encode_index(&[IndexEntry {
        seq: 1000,
        offset: 128,
        timestamp_ms: 1_700_000_000_002,
    }]);
    check("index-v1.bin", &index);
    let footer = SegmentFooter {
        index_entries: 1,
        log_id: 0xfeed_beef,
        segment_id: 3,
        base_seq: 1000,
        record_count: 2,
        records_end: 128 + 43 + 32,
        first_timestamp_ms: 1_700_000_000_002,
        last_timestamp_ms: 1_700_000_000_002,
        sealed_ms: 1_700_000_000_003,
        index_crc: aof2::format::crc32c(&index),
    };
    check("segment-footer-v1.bin", &footer.encode());
    let edits = vec![
        Edit::LogCreated {
            log_id: 0xfeed_beef,
            created_ms: 1_700_000_000_000,
            name: "orders".into(),
        },
        Edit::LogOpened { epoch: 2 },
        Edit::SegmentPrepared {
            segment_id: 3,
            capacity: 1 << 20,
        },
        Edit::SegmentSealed(SealedInfo {
            segment_id: 3,
            base_seq: 1000,
            record_count: 2,
            file_len: footer.file_len(),
            first_timestamp_ms: 1_700_000_000_002,
            last_timestamp_ms: 1_700_000_000_002,
            footer_crc: 0x1234_5678,
        }),
        Edit::SegmentDropped { segment_id: 4 },
        Edit::SegmentQuarantined {
            segment_id: 3,
            reason: "footer checksum".into(),
        },
    ];
    let mut wal = encode_wal_header(7).to_vec();
    for e in &edits {
        wal.extend_from_slice(&encode_wal_record(e));
    }
    check("manifest-wal-v1.bin", &wal);
    check("manifest-snapshot-v1.bin", &encode_snapshot(8, &edits));
}

#[test]
fn golden_tier2_encodings() {
    use aof2::format::catalog::{Catalog, CatalogSegment, Claim};
    use aof2::format::manifest::{Tier1Info, Tier2Info};
    let tier1 = Tier1Info {
        segment_id: 3,
        file_len: 4242,
        footer_crc: 0x0bad_cafe,
        frames: 2,
        uncompressed_bytes: 9000,
        level: 3,
    };
    let footer = SegmentFooter {
        log_id: 0xfeed_beef,
        segment_id: 3,
        base_seq: 1000,
        record_count: 50,
        records_end: 128 + 9000,
        last_timestamp_ms: 1_700_000_000_003,
        index_entries: 1,
        index_crc: 0x1234_5678,
        first_timestamp_ms: 1_700_000_000_002,
        sealed_ms: 1_700_000_000_004,
    };
    let tier2 = Tier2Info {
        tier1,
        object_crc: 0xdead_beef,
        segment_footer: footer.encode(),
    };
    let sealed = SealedInfo {
        segment_id: 3,
        base_seq: 1000,
        record_count: 50,
        file_len: 128 + 9000 + 24 + 96,
        first_timestamp_ms: 1_700_000_000_002,
        last_timestamp_ms: 1_700_000_000_003,
        footer_crc: SegmentFooter::stored_crc(&footer.encode()),
    };
    let mut edits = Vec::new();
    for edit in [
        Edit::SegmentRetired { segment_id: 2 },
        Edit::Tier2Uploaded(tier2),
        Edit::Tier1Evicted { segment_id: 3 },
        Edit::Tier1Fetched { segment_id: 3 },
        Edit::RetiredBelow {
            seq: 1000,
            last_timestamp_ms: 1_700_000_000_001,
        },
    ] {
        edits.extend_from_slice(&encode_wal_record(&edit));
    }
    check("manifest-tier2-edits-v1.bin", &edits);
    check(
        "catalog-v1.bin",
        &Catalog {
            epoch: 4,
            generation: 9,
            log_id: 0xfeed_beef,
            name: "orders".into(),
            created_ms: 1_700_000_000_000,
            next_seq: 1050,
            last_timestamp_ms: 1_700_000_000_003,
            segments: vec![CatalogSegment { sealed, tier2 }],
        }
        .encode(),
    );
    check(
        "claim-v1.bin",
        &Claim {
            epoch: 4,
            root_id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            log_id: 0xfeed_beef,
            claimed_ms: 1_700_000_000_005,
        }
        .encode(),
    );
}
