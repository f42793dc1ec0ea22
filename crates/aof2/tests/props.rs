//! Property tests: (a) random operation sequences against a model, across close/reopen, with
//! small segments and every durability mode; (b) the on-disk decoders never panic, whatever bytes
//! they are given, and round-trip what the encoders produce.

use std::time::Duration;

use aof2::format::manifest::{
    Edit, SNAPSHOT_HEADER_BYTES, SealedInfo, WAL_HEADER_BYTES, WAL_RECORD_OVERHEAD, WalRead,
    decode_snapshot, decode_wal_header, decode_wal_record, encode_snapshot, encode_wal_header,
    encode_wal_record,
};
use aof2::format::root::RootFile;
use aof2::format::segment::{
    FrameHeader, IndexEntry, SegmentFooter, SegmentHeader, decode_frame, decode_index,
    encode_frame, encode_index,
};
use aof2::format::{FormatError, crc32c, crc32c_pair};
use aof2::{AofManager, Durability, ErrorKind, LogConfig, ManagerConfig, ReadVisibility};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

// ================================================================== (a) model-based

#[derive(Debug, Clone, Copy)]
enum Mode {
    Always,
    None,
    Interval(u64),
}

impl Mode {
    fn durability(self) -> Durability {
        match self {
            Mode::Always => Durability::Always,
            Mode::None => Durability::None,
            Mode::Interval(ms) => Durability::Interval(Duration::from_millis(ms)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Setup {
    mode: Mode,
    segment_bytes: u64,
}

impl Setup {
    fn config(self) -> LogConfig {
        LogConfig {
            durability: self.mode.durability(),
            ..LogConfig::default().with_segment_bytes(self.segment_bytes)
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Append(usize),
    Batch(Vec<usize>),
    /// A record `n` bytes below the largest the current configuration accepts.
    Big(u64),
    Flush,
    Reopen(Setup),
    ReadFrom(u32),
    Read(u32),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(0usize),
        2 => 1..8usize,
        2 => (0..625usize).prop_map(|k| k * 8),
        6 => 0..5000usize,
        1 => Just(4999usize),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    let mode = prop_oneof![
        Just(Mode::Always),
        Just(Mode::None),
        (1..20u64).prop_map(Mode::Interval),
    ];
    let segment = prop_oneof![
        Just(64 * 1024u64),
        (16..=64u64).prop_map(|pages| pages * 4096),
        (64 * 1024..=256 * 1024u64),
    ];
    (mode, segment).prop_map(|(mode, segment_bytes)| Setup {
        mode,
        segment_bytes,
    })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => size().prop_map(Op::Append),
        5 => vec(size(), 1..8).prop_map(Op::Batch),
        1 => (0..64u64).prop_map(Op::Big),
        2 => Just(Op::Flush),
        2 => setup().prop_map(Op::Reopen),
        2 => any::<u32>().prop_map(Op::ReadFrom),
        2 => any::<u32>().prop_map(Op::Read),
    ]
}

/// Payload of the record at `seq` with `len` bytes: depends on both, so a record read from the
/// wrong place or with the wrong length cannot match.
fn payload(seq: usize, len: usize) -> Vec<u8> {
    let mut x = (seq as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ len as u64;
    (0..len)
        .map(|i| {
            if i % 8 == 0 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
            }
            (x >> ((i % 8) * 8)) as u8
        })
        .collect()
}

fn check_suffix(
    log: &aof2::Aof,
    model: &[Vec<u8>],
    from: usize,
    visibility: ReadVisibility,
) -> Result<(), TestCaseError> {
    let mut n = from;
    for record in log.reader_with(from as u64, visibility) {
        let record = record.map_err(|e| TestCaseError::fail(format!("read {n}: {e}")))?;
        prop_assert_eq!(record.seq(), n as u64);
        prop_assert!(n < model.len(), "reader yields seq {} beyond the model", n);
        prop_assert!(
            record.payload() == model[n].as_slice(),
            "seq {} differs: {} bytes read, {} expected",
            n,
            record.len(),
            model[n].len()
        );
        n += 1;
    }
    prop_assert_eq!(n, model.len(), "reader from {} stopped early", from);
    Ok(())
}

fn err(e: aof2::Error) -> TestCaseError {
    TestCaseError::fail(format!("{e} ({:?})", e.kind()))
}

fn run_ops(first: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = first;
    let mut manager = AofManager::open(ManagerConfig::new(dir.path())).map_err(err)?;
    let mut log = manager.open_log("prop", setup.config()).map_err(err)?;
    let mut model: Vec<Vec<u8>> = Vec::new();

    let reopen = |manager: AofManager,
                  log: aof2::Aof,
                  setup: Setup,
                  model: &[Vec<u8>]|
     -> Result<(AofManager, aof2::Aof), TestCaseError> {
        manager.close().map_err(err)?;
        // The root lock is held until the last handle is gone (see `close_releases_root_lock`).
        drop(log);
        drop(manager);
        let m = AofManager::open(ManagerConfig::new(dir.path())).map_err(err)?;
        let log = m.open_log("prop", setup.config()).map_err(err)?;
        prop_assert_eq!(log.next_seq(), model.len() as u64, "next_seq after reopen");
        prop_assert_eq!(log.durable_watermark(), model.len() as u64);
        check_suffix(&log, model, 0, ReadVisibility::Durable)?;
        let report = m.verify_log(&log);
        prop_assert!(report.is_clean(), "verify after reopen: {:?}", report);
        prop_assert_eq!(report.records, model.len() as u64);
        Ok((m, log))
    };

    for op in ops {
        match op {
            Op::Append(len) => {
                let p = payload(model.len(), len);
                let seq = log.append(&p).map_err(err)?;
                prop_assert_eq!(seq, model.len() as u64);
                model.push(p);
            }
            Op::Batch(sizes) => {
                let ps: Vec<Vec<u8>> = sizes
                    .iter()
                    .enumerate()
                    .map(|(i, &len)| payload(model.len() + i, len))
                    .collect();
                let first = log.append_batch(&ps).map_err(err)?;
                prop_assert_eq!(first, model.len() as u64);
                model.extend(ps);
            }
            Op::Big(below) => {
                let len = (setup.config().max_record_bytes - below) as usize;
                let p = payload(model.len(), len);
                let seq = log.append(&p).map_err(err)?;
                prop_assert_eq!(seq, model.len() as u64);
                model.push(p);
                // One byte more than the maximum is refused and writes nothing.
                let too_big = vec![1u8; setup.config().max_record_bytes as usize + 1];
                let e = log.append(&too_big).unwrap_err();
                prop_assert_eq!(e.kind(), ErrorKind::InvalidInput);
                prop_assert_eq!(log.next_seq(), model.len() as u64);
            }
            Op::Flush => {
                log.flush().map_err(err)?;
                prop_assert!(log.durable_watermark() >= model.len() as u64);
            }
            Op::Reopen(next) => {
                // AOF2_PROPS_KEEP_SEGMENT_BYTES=1 keeps the segment size of a case fixed across
                // reopens (isolates `larger_segment_bytes_after_reopen_...` while it fails).
                setup = if std::env::var_os("AOF2_PROPS_KEEP_SEGMENT_BYTES").is_some() {
                    Setup {
                        segment_bytes: setup.segment_bytes,
                        ..next
                    }
                } else {
                    next
                };
                (manager, log) = reopen(manager, log, setup, &model)?;
            }
            Op::ReadFrom(k) => {
                let from = k as usize % (model.len() + 1);
                check_suffix(&log, &model, from, ReadVisibility::Written)?;
            }
            Op::Read(k) => {
                if model.is_empty() {
                    prop_assert_eq!(log.read(0).unwrap_err().kind(), ErrorKind::NotFound);
                    continue;
                }
                let seq = k as usize % model.len();
                let durable = log.durable_watermark();
                match log.read(seq as u64) {
                    Ok(r) => prop_assert!(r.payload() == model[seq].as_slice(), "read {}", seq),
                    Err(e) => {
                        // Only a not-yet-durable record may be invisible to a durable read.
                        prop_assert!(
                            e.kind() == ErrorKind::NotFound
                                && seq as u64 >= durable
                                && !matches!(setup.mode, Mode::None),
                            "read {seq}: {e}"
                        );
                    }
                }
                prop_assert_eq!(log.next_seq(), model.len() as u64);
            }
        }
    }

    // Everything written is readable; after a flush everything is durable and visible.
    check_suffix(&log, &model, 0, ReadVisibility::Written)?;
    log.flush().map_err(err)?;
    prop_assert_eq!(log.durable_watermark(), model.len() as u64);
    check_suffix(&log, &model, 0, ReadVisibility::Durable)?;
    let (manager, log) = reopen(manager, log, setup, &model)?;
    // Appends still work after the final reopen.
    let p = payload(model.len(), 3);
    prop_assert_eq!(log.append(&p).map_err(err)?, model.len() as u64);
    manager.close().map_err(err)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn operations_match_model(first in setup(), ops in vec(op(), 1..60)) {
        run_ops(first, ops)?;
    }
}

// ================================================================== (b) decoders

/// Write the CRC-32C of everything but the last four bytes into the last four bytes.
fn seal(bytes: &mut [u8]) {
    let n = bytes.len();
    let crc = crc32c(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._-]{1,128}",
        any::<String>().prop_map(|s| s.chars().take(200).collect()),
    ]
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<u128>(), any::<u64>(), arb_string()).prop_map(|(log_id, created_ms, name)| {
            Edit::LogCreated {
                log_id,
                created_ms,
                name,
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(segment_id, capacity)| Edit::SegmentPrepared {
            segment_id,
            capacity
        }),
        any::<[u64; 7]>().prop_map(|v| Edit::SegmentSealed(SealedInfo {
            segment_id: v[0],
            base_seq: v[1],
            record_count: v[2],
            file_len: v[3],
            first_timestamp_ms: v[4],
            last_timestamp_ms: v[5],
            footer_crc: v[6] as u32,
        })),
        any::<u64>().prop_map(|segment_id| Edit::SegmentDropped { segment_id }),
        (any::<u64>(), arb_string())
            .prop_map(|(segment_id, reason)| Edit::SegmentQuarantined { segment_id, reason }),
        any::<u32>().prop_map(|epoch| Edit::LogOpened { epoch }),
    ]
}

/// Bytes that start like a real structure often enough to get past the magic check.
fn with_prefix(magic: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (any::<bool>(), vec(any::<u8>(), 0..400)).prop_map(move |(use_magic, mut bytes)| {
        if use_magic {
            for (i, &b) in magic.iter().enumerate() {
                if i < bytes.len() {
                    bytes[i] = b;
                }
            }
        }
        bytes
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decode_frame_never_panics(bytes in vec(any::<u8>(), 0..300)) {
        let _ = decode_frame(&bytes);
    }

    #[test]
    fn frame_with_valid_crc_decodes_its_fields(
        payload in vec(any::<u8>(), 0..300),
        seq: u64,
        timestamp_ms: u64,
        batch_remaining: u32,
        epoch: u32,
        slack in vec(any::<u8>(), 0..40),
    ) {
        let header = FrameHeader { len: payload.len() as u32, seq, timestamp_ms, batch_remaining, epoch };
        let mut buf = vec![0u8; 32 + payload.len()];
        encode_frame(&mut buf, &header, &payload);
        prop_assert_eq!(decode_frame(&buf), Ok(header));
        // Bytes after the frame (the rest of the records area) do not matter.
        let mut longer = buf.clone();
        longer.extend_from_slice(&slack);
        prop_assert_eq!(decode_frame(&longer), Ok(header));
        // Any change to any single byte is detected; a cut frame is truncated.
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x5a;
            prop_assert!(decode_frame(&bad).is_err(), "flip at {} undetected", i);
        }
        prop_assert!(decode_frame(&buf[..buf.len() - 1]).is_err());
    }

    #[test]
    fn segment_header_decode_never_panics(mut bytes in with_prefix(b"AOF2SEG\0"), fix: bool) {
        let _ = SegmentHeader::decode(&bytes);
        if fix && bytes.len() >= 128 {
            seal(&mut bytes[..128]);
            let _ = SegmentHeader::decode(&bytes);
        }
        let _ = SegmentHeader::is_blank(&bytes);
    }

    #[test]
    fn segment_header_roundtrip(log_id: u128, segment_id: u64, base_seq: u64, created_ms: u64, capacity: u64, recycled: bool) {
        let h = SegmentHeader { log_id, segment_id, base_seq, created_ms, capacity, recycled };
        let encoded = h.encode();
        prop_assert_eq!(SegmentHeader::decode(&encoded), Ok(h));
        prop_assert!(!SegmentHeader::is_blank(&encoded));
    }

    #[test]
    fn segment_footer_decode_never_panics(mut bytes in with_prefix(b"AOF2FTR\0"), fix: bool) {
        let _ = SegmentFooter::decode(&bytes);
        if fix && bytes.len() >= 96 {
            seal(&mut bytes[..96]);
            if let Ok(f) = SegmentFooter::decode(&bytes) {
                let _ = f.file_len();
            }
        }
    }

    #[test]
    fn segment_footer_roundtrip(v: [u64; 7], index_entries: u32, index_crc: u32, log_id: u128) {
        let f = SegmentFooter {
            index_entries,
            log_id,
            segment_id: v[0],
            base_seq: v[1],
            // A footer's sequence range must fit in u64 (decode refuses one that does not).
            record_count: v[2] % (u64::MAX - v[1]).max(1),
            records_end: v[3] >> 8,
            first_timestamp_ms: v[4],
            last_timestamp_ms: v[5],
            sealed_ms: v[6],
            index_crc,
        };
        let encoded = f.encode();
        prop_assert_eq!(SegmentFooter::decode(&encoded), Ok(f));
        prop_assert_eq!(SegmentFooter::stored_crc(&encoded), crc32c(&encoded[..92]));
        let past_the_end = SegmentFooter { base_seq: u64::MAX, record_count: 1, ..f };
        prop_assert!(SegmentFooter::decode(&past_the_end.encode()).is_err());
        for i in 0..encoded.len() {
            let mut bad = encoded;
            bad[i] ^= 1;
            prop_assert!(SegmentFooter::decode(&bad).is_err(), "flip at {} undetected", i);
        }
    }

    #[test]
    fn decode_index_never_panics(bytes in vec(any::<u8>(), 0..500)) {
        let _ = decode_index(&bytes);
    }

    #[test]
    fn index_roundtrip(mut raw in vec((any::<u64>(), any::<u64>(), any::<u64>()), 0..20)) {
        raw.sort_by_key(|e| e.0);
        raw.dedup_by_key(|e| e.0);
        let mut offsets: Vec<u64> = raw.iter().map(|e| e.1).collect();
        offsets.sort_unstable();
        offsets.dedup();
        let entries: Vec<IndexEntry> = raw
            .iter()
            .zip(offsets)
            .map(|(e, offset)| IndexEntry { seq: e.0, offset, timestamp_ms: e.2 })
            .collect();
        let bytes = encode_index(&entries);
        prop_assert_eq!(bytes.len(), entries.len() * 24);
        prop_assert_eq!(decode_index(&bytes), Ok(entries));
    }

    #[test]
    fn edit_decode_never_panics(bytes in vec(any::<u8>(), 0..200), tag in 0u8..8) {
        let _ = Edit::decode(&bytes);
        let mut tagged = bytes;
        tagged.insert(0, tag);
        let _ = Edit::decode(&tagged);
    }

    #[test]
    fn edit_roundtrip(edit in arb_edit()) {
        let body = edit.encode();
        prop_assert_eq!(Edit::decode(&body), Ok(edit.clone()));
        let record = encode_wal_record(&edit);
        prop_assert_eq!(record.len(), WAL_RECORD_OVERHEAD + body.len());
        prop_assert_eq!(decode_wal_record(&record), Ok(WalRead::Edit(edit.clone(), record.len())));
        // Followed by more records: still decodes exactly one.
        let mut two = record.clone();
        two.extend_from_slice(&record);
        prop_assert_eq!(decode_wal_record(&two), Ok(WalRead::Edit(edit, record.len())));
        // Cut anywhere: torn, never a different edit.
        for cut in 0..record.len() {
            let r = decode_wal_record(&record[..cut]);
            prop_assert!(
                matches!(r, Ok(WalRead::Torn) | Ok(WalRead::End)),
                "cut at {} of {}: {:?}", cut, record.len(), r
            );
        }
    }

    #[test]
    fn decode_wal_record_never_panics(bytes in vec(any::<u8>(), 0..300)) {
        let _ = decode_wal_record(&bytes);
    }

    #[test]
    fn wal_record_with_valid_crc_never_panics(body in vec(any::<u8>(), 0..200), tag in 0u8..8, tail in vec(any::<u8>(), 0..50)) {
        let mut body = body;
        body.insert(0, tag);
        let len = (body.len() as u32).to_le_bytes();
        let crc = crc32c_pair(&len, &body);
        let mut record = crc.to_le_bytes().to_vec();
        record.extend_from_slice(&len);
        record.extend_from_slice(&body);
        record.extend_from_slice(&tail);
        if let Ok(WalRead::Edit(edit, n)) = decode_wal_record(&record) {
            prop_assert_eq!(n, WAL_RECORD_OVERHEAD + body.len());
            prop_assert_eq!(edit.encode(), body);
        }
    }

    #[test]
    fn wal_header_decode_never_panics(mut bytes in with_prefix(b"AOF2MWAL"), fix: bool, generation: u64) {
        let _ = decode_wal_header(&bytes);
        if fix && bytes.len() >= WAL_HEADER_BYTES {
            seal(&mut bytes[..WAL_HEADER_BYTES]);
            let _ = decode_wal_header(&bytes);
        }
        prop_assert_eq!(decode_wal_header(&encode_wal_header(generation)), Ok(generation));
    }

    #[test]
    fn decode_snapshot_never_panics(bytes in with_prefix(b"AOF2MSNP")) {
        let _ = decode_snapshot(&bytes);
    }

    #[test]
    fn snapshot_with_valid_crc_never_panics(body in vec(any::<u8>(), 0..300), body_len_delta in -4i64..4, version in 0u16..3, generation: u64) {
        let body_len = (body.len() as i64 + body_len_delta).max(0) as u32;
        let mut out = vec![0u8; SNAPSHOT_HEADER_BYTES];
        out[..8].copy_from_slice(b"AOF2MSNP");
        out[8..10].copy_from_slice(&version.to_le_bytes());
        out[16..24].copy_from_slice(&generation.to_le_bytes());
        out[24..28].copy_from_slice(&body_len.to_le_bytes());
        let covered = &body[..(body_len as usize).min(body.len())];
        let crc = crc32c_pair(&out[..28], covered);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&body);
        let _ = decode_snapshot(&out);
    }

    #[test]
    fn snapshot_roundtrip(edits in vec(arb_edit(), 0..12), generation: u64) {
        let bytes = encode_snapshot(generation, &edits);
        prop_assert_eq!(decode_snapshot(&bytes), Ok((generation, edits)));
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            prop_assert!(decode_snapshot(&bad).is_err(), "flip at {} undetected", i);
        }
    }

    #[test]
    fn root_file_decode_never_panics(mut bytes in with_prefix(b"AOF2ROOT"), fix: bool) {
        let _ = RootFile::decode(&bytes);
        if fix && bytes.len() >= 64 {
            seal(&mut bytes[..64]);
            let _ = RootFile::decode(&bytes);
        }
    }

    #[test]
    fn root_file_roundtrip(root_id: u128, created_ms: u64, version in 2u16..) {
        let r = RootFile { root_id, created_ms };
        let encoded = r.encode();
        prop_assert_eq!(RootFile::decode(&encoded), Ok(r));
        let mut newer = encoded;
        newer[8..10].copy_from_slice(&version.to_le_bytes());
        seal(&mut newer);
        prop_assert_eq!(RootFile::decode(&newer), Err(FormatError::UnsupportedVersion(version)));
    }
}

// ================================================================== regressions found by (a)

/// Reopening a log with a larger `segment_bytes` and then appending a record that only fits the
/// new size. Recovery hands blank segments prepared by the earlier run (with the old, smaller
/// capacity) to the new run for reuse, but `write_batch` assumes every freshly prepared segment
/// holds a batch of the current configuration's limit: the append panics in
/// `ActiveRegion::region_mut` ("region 128+N beyond mapping 65536") instead of succeeding.
#[test]
fn larger_segment_bytes_after_reopen_accepts_records_that_fit_the_new_size() {
    let dir = tempfile::tempdir().unwrap();
    let small = LogConfig::default().with_segment_bytes(64 * 1024);
    let large = LogConfig::default().with_segment_bytes(128 * 1024);
    {
        let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
        let log = m.open_log("grow", small).unwrap();
        log.append(b"first").unwrap();
        m.close().unwrap();
    }
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let log = m.open_log("grow", large.clone()).unwrap();
    let big = vec![7u8; large.max_record_bytes as usize];
    let seq = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| log.append(&big)))
        .unwrap_or_else(|p| {
            panic!(
                "append of a record that fits the new segment size panicked: {:?}",
                p.downcast_ref::<String>()
            )
        })
        .unwrap();
    assert_eq!(seq, 1);
    assert_eq!(log.read(1).unwrap().payload(), big.as_slice());
    m.close().unwrap();
}

/// `AofManager::close` stops every log and thread, but the root stays locked until the last clone
/// of the manager is dropped: opening the root again while a closed handle is still around fails
/// with `Locked`, although no manager is using it.
#[test]
fn close_releases_root_lock() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let log = m.open_log("l", LogConfig::default()).unwrap();
    log.append(b"x").unwrap();
    m.close().unwrap();
    let again = AofManager::open(ManagerConfig::new(dir.path()));
    assert!(
        again.is_ok(),
        "reopening a closed root failed: {}",
        again.unwrap_err()
    );
    drop(m);
}
