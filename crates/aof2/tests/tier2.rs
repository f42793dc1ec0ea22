//! Tier 2 against a real S3 server on loopback (in-process s3s-fs; `.ci/run` also runs the tests
//! not named `fault_*` against moto): uploads, reads of segments held only in Tier 2, restore
//! onto an empty root, remote readers, writer fencing, and faults (503 storms, outages, hung and
//! dropped connections, missing objects).

mod support;

use std::time::{Duration, Instant};

use aof2::{
    AofManager, Durability, ErrorKind, LogConfig, ManagerConfig, RemoteReader, Tier2Config,
};
use support::incompressible;
use support::s3::{S3Server, Tier2Target, unique_bucket};

const SEGMENT: u64 = 64 << 10;
const WAIT: Duration = Duration::from_secs(60);

fn tier2_config(target: &Tier2Target) -> Tier2Config {
    let mut c = Tier2Config::new(&target.url);
    c.options = target.options.clone();
    c.request_timeout = Duration::from_secs(5);
    c.backoff_base = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(200);
    c.breaker_open_for = Duration::from_millis(200);
    c
}

/// A fresh bucket named after `stem` on the test's S3 server, and Tier 2 on it (`tier2_config`).
fn bucket(stem: &str) -> (S3Server, Tier2Target, Tier2Config) {
    with_bucket(S3Server::start(), stem)
}

/// [`bucket`] on the in-process server, whose faults a test sets; `None` against an external
/// server (moto in CI), which has none: such a test is skipped there.
fn fault_bucket(stem: &str) -> Option<(S3Server, Tier2Target, Tier2Config)> {
    let server = S3Server::start();
    (!server.external()).then(|| with_bucket(server, stem))
}

fn with_bucket(server: S3Server, stem: &str) -> (S3Server, Tier2Target, Tier2Config) {
    let target = server.bucket(&unique_bucket(stem));
    let t2 = tier2_config(&target);
    (server, target, t2)
}

fn manager(root: &std::path::Path, t2: Tier2Config) -> AofManager {
    let mut config = ManagerConfig::new(root);
    config.tier0_max_bytes = 16 * SEGMENT;
    config.tier1_frame_bytes = 16 << 10;
    config.compress_threads = 1;
    config.tier2 = Some(t2);
    AofManager::open(config).unwrap()
}

fn log_config() -> LogConfig {
    LogConfig {
        durability: Durability::Always,
        ..LogConfig::default().with_segment_bytes(SEGMENT)
    }
}

/// Deterministic, compressible, varied payloads.
fn payload(i: u64) -> Vec<u8> {
    let len = (i * 37 % 900) as usize;
    let mut p = format!("record {i} ").into_bytes();
    p.extend((0..len).map(|j| b"abcdefghij"[(i as usize + j / 7) % 10]));
    p
}

fn append_all(log: &aof2::Aof, range: std::ops::Range<u64>) {
    let payloads: Vec<Vec<u8>> = range.clone().map(payload).collect();
    for chunk in payloads.chunks(50) {
        log.append_batch(chunk).unwrap();
    }
    assert_eq!(log.next_seq(), range.end);
}

/// Append, wait for Tier 2, seal what is active by reopening, and drop local copies.
/// The log's segments other than the active one.
fn sealed_segments(m: &AofManager, log: &aof2::Aof) -> Vec<aof2::SegmentInfo> {
    m.log_info(log)
        .segments
        .into_iter()
        .filter(|s| s.state != aof2::SegmentState::Active)
        .collect()
}

fn write_log(root: &std::path::Path, t2: &Tier2Config, name: &str, records: u64) {
    let m = manager(root, t2.clone());
    let log = m.open_log(name, log_config()).unwrap();
    append_all(&log, 0..records);
    assert!(m.wait_for_tier2(&log, WAIT), "uploads finish");
    log.close().unwrap();
}

#[test]
fn segments_are_uploaded_evicted_and_read_back_from_tier2() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("upload"));
    let dir = tempfile::tempdir().unwrap();
    let t2 = tier2_config(&target.with_prefix("team/a"));
    let m = manager(dir.path(), t2);
    let log = m.open_log("orders", log_config()).unwrap();
    append_all(&log, 0..3000);
    assert!(m.wait_for_tier2(&log, WAIT));
    let sealed = sealed_segments(&m, &log).len();
    assert!(sealed >= 10, "{sealed} sealed segments");
    let stats = m.tier_stats().tier2.unwrap();
    assert!(stats.segments_uploaded >= sealed as u64, "{stats:?}");
    assert_eq!(stats.breaker, "closed");

    // Objects under the prefix, named by log identity; a catalog and a writer claim.
    let keys = server.list_keys(target.bucket_name(), "team/a/aof2/logs/orders/");
    let log_id = format!("{:032x}", m.log_info(&log).log_id);
    let segments = keys.iter().filter(|k| k.contains(&log_id)).count();
    assert_eq!(segments, sealed, "{keys:?}");
    assert!(keys.iter().any(|k| k.contains("/catalog/")));
    assert!(keys.iter().any(|k| k.contains("/writer/")));

    // Only Tier 2 left for sealed segments: every record still reads back, byte for byte.
    m.evict_tier0(&log).unwrap();
    assert!(m.evict_tier1(&log).unwrap() > 0);
    if !server.external() {
        server.faults().reset_counters();
    }
    for seq in (0..3000).step_by(7) {
        assert_eq!(log.read(seq).unwrap().payload(), payload(seq), "seq {seq}");
    }
    if !server.external() {
        // One pass of point reads: ranged GETs of frames (and frame indexes), no whole objects.
        assert!(server.faults().ranged_gets() > 0);
        assert_eq!(
            server.faults().requests_with_method("GET"),
            server.faults().ranged_gets(),
            "reads fetch ranges, never whole objects"
        );
    }
    let all: Vec<Vec<u8>> = log
        .reader(0)
        .map(|r| r.unwrap().payload().to_vec())
        .collect();
    assert_eq!(all.len(), 3000);
    for (i, p) in all.iter().enumerate() {
        assert_eq!(p, &payload(i as u64));
    }
    drop(log);
    drop(m);

    // Reopen: Tier-2-only segments come back from the manifest without a request to open.
    let m = manager(dir.path(), tier2_config(&target.with_prefix("team/a")));
    let log = m.open_log("orders", log_config()).unwrap();
    assert_eq!(log.read(1234).unwrap().payload(), payload(1234));
    let verify = m.verify_log(&log);
    assert!(verify.problems.is_empty(), "{:?}", verify.problems);
}

#[test]
fn large_segments_go_up_in_parts_with_their_checksum_in_metadata() {
    let (server, target, mut t2) = bucket("multipart");
    t2.multipart_threshold = 5 << 20;
    t2.part_bytes = 5 << 20;
    let dir = tempfile::tempdir().unwrap();
    let mut config = ManagerConfig::new(dir.path());
    config.tier2 = Some(t2);
    config.compression = aof2::Compression::Fixed(1);
    let m = AofManager::open(config).unwrap();
    let log = m
        .open_log(
            "big",
            LogConfig {
                durability: Durability::None,
                ..LogConfig::default().with_segment_bytes(16 << 20)
            },
        )
        .unwrap();
    // Incompressible payloads: the Tier 1 file is about as large as the segment.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let payloads: Vec<Vec<u8>> = (0..400).map(|_| random(64 << 10)).collect();
    for p in &payloads {
        log.append(p).unwrap();
    }
    log.flush().unwrap();
    assert!(m.wait_for_tier2(&log, WAIT));
    let stats = m.tier_stats().tier2.unwrap();
    assert!(stats.upload_bytes > 10 << 20, "{stats:?}");
    if !server.external() {
        // CreateMultipartUpload and CompleteMultipartUpload are POSTs.
        assert!(server.faults().requests_with_method("POST") >= 2);
    }
    // The checksum is stored with each object and matches its bytes.
    let (store, _) = target.store();
    let keys: Vec<String> = server
        .list_keys(target.bucket_name(), "aof2/logs/big/")
        .into_iter()
        .filter(|k| k.ends_with(".t1"))
        .collect();
    assert!(!keys.is_empty());
    for key in &keys {
        let bytes = server.object_bytes(target.bucket_name(), key).unwrap();
        let got = futures_lite_block_on(store.get_opts(
            &object_store::path::Path::from(key.as_str()),
            object_store::GetOptions {
                head: true,
                ..Default::default()
            },
        ));
        let attrs = got.unwrap().attributes;
        let stored = attrs
            .get(&object_store::Attribute::Metadata("aof2-crc32c".into()))
            .expect("checksum metadata");
        assert_eq!(
            stored.as_ref(),
            format!("{:08x}", aof2::format::crc32c(&bytes)),
            "{key}"
        );
    }
    m.evict_tier0(&log).unwrap();
    m.evict_tier1(&log).unwrap();
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payload_ref(&payloads, i), "seq {i}");
    }
}

fn payload_ref(payloads: &[Vec<u8>], i: usize) -> &[u8] {
    &payloads[i]
}

/// Run a future to completion on a small runtime of its own.
fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn segments_read_repeatedly_from_tier2_come_back_to_tier1() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("fetch"));
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), tier2_config(&target));
    let log = m.open_log("hot", log_config()).unwrap();
    append_all(&log, 0..1500);
    assert!(m.wait_for_tier2(&log, WAIT));
    m.evict_tier0(&log).unwrap();
    m.evict_tier1(&log).unwrap();
    let tier1_only = |m: &AofManager| {
        m.log_info(&log)
            .segments
            .iter()
            .filter(|s| s.tier1_bytes > 0)
            .count()
    };
    assert_eq!(tier1_only(&m), 0);
    let deadline = Instant::now() + WAIT;
    while m.tier_stats().tier2.unwrap().fetches == 0 && Instant::now() < deadline {
        for (i, r) in log.reader(0).enumerate() {
            assert_eq!(r.unwrap().payload(), payload(i as u64));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(m.tier_stats().tier2.unwrap().fetches > 0);
    assert!(tier1_only(&m) > 0);
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payload(i as u64));
    }
    drop(log);
    drop(m);
    // The fetched copies are recorded: they are Tier 1 copies after a reopen too.
    let m = manager(dir.path(), tier2_config(&target));
    let log = m.open_log("hot", log_config()).unwrap();
    assert!(m.log_info(&log).segments.iter().any(|s| s.tier1_bytes > 0));
    assert!(m.verify_log(&log).problems.is_empty());
}

#[test]
fn seal_puts_every_record_in_tier2() {
    let (_server, _, t2) = bucket("seal");
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), t2.clone());
    let log = m.open_log("tail", log_config()).unwrap();
    append_all(&log, 0..777);
    assert!(log.seal().unwrap());
    assert!(!log.seal().unwrap(), "nothing left to seal");
    assert!(m.wait_for_tier2(&log, WAIT));
    let reader = RemoteReader::open(t2, "tail").unwrap();
    assert_eq!(reader.end_seq(), 777);
    for (i, r) in reader.iter_from(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payload(i as u64));
    }
    append_all(&log, 777..800);
    assert_eq!(log.read(799).unwrap().payload(), payload(799));
}

#[test]
fn restore_onto_an_empty_root_and_continue_appending() {
    let (_server, _, t2) = bucket("restore");
    let a = tempfile::tempdir().unwrap();
    write_log(a.path(), &t2, "events", 2500);
    // What Tier 2 holds: the sealed segments (the active one is not uploaded).
    let uploaded_end = {
        let m = manager(a.path(), t2.clone());
        let log = m.open_log_read_only("events").unwrap();
        let info = m.log_info(&log);
        info.segments
            .iter()
            .filter(|s| s.state != aof2::SegmentState::Active)
            .map(|s| s.end_seq)
            .max()
            .unwrap()
    };

    let b = tempfile::tempdir().unwrap();
    // What a crash during a first open of the log there left: no log, nothing to keep.
    for sub in ["segments", "manifest"] {
        std::fs::create_dir_all(b.path().join("logs").join("events").join(sub)).unwrap();
    }
    let mut take_over = t2.clone();
    take_over.take_over = true;
    let m = manager(b.path(), take_over);
    let mut calls = 0;
    let report = m
        .restore_log("events", &mut |_| {
            calls += 1;
        })
        .unwrap();
    assert_eq!(report.first_seq, 0);
    assert_eq!(report.end_seq, uploaded_end);
    assert_eq!(report.segments, report.segments_downloaded);
    assert!(calls as u64 > report.segments);
    let log = m.open_log("events", log_config()).unwrap();
    assert_eq!(log.next_seq(), uploaded_end);
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payload(i as u64), "seq {i}");
    }
    append_all(&log, uploaded_end..uploaded_end + 700);
    assert_eq!(
        log.read(uploaded_end + 5).unwrap().payload(),
        payload(uploaded_end + 5)
    );
    assert!(m.verify_log(&log).problems.is_empty());
    // A second restore of a log that exists is refused.
    assert_eq!(
        m.restore_log("events", &mut |_| {}).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
}

#[test]
fn remote_reader_reads_and_follows_a_running_writer() {
    let (_server, _, t2) = bucket("remote");
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), t2.clone());
    let log = m.open_log("clicks", log_config()).unwrap();
    append_all(&log, 0..1500);
    assert!(m.wait_for_tier2(&log, WAIT));

    let reader = RemoteReader::open(t2.clone(), "clicks").unwrap();
    let end = reader.end_seq();
    assert!(end > 0 && end <= 1500);
    let mut n = 0;
    for (i, r) in reader.iter_from(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payload(i as u64));
        n += 1;
    }
    assert_eq!(n, end);
    assert_eq!(reader.read(end / 2).unwrap().payload(), payload(end / 2));
    assert_eq!(reader.read(end).unwrap_err().kind(), ErrorKind::NotFound);

    // Follow: records appended (and sealed, and uploaded) later arrive.
    let mut follow = reader.iter_from(end);
    let writer = std::thread::spawn(move || {
        append_all(&log, 1500..4000);
        assert!(m.wait_for_tier2(&log, WAIT));
        (m, log)
    });
    let deadline = Instant::now() + WAIT;
    while follow.next_seq() < 3500 && Instant::now() < deadline {
        if let Some(r) = follow
            .next_timeout(Duration::from_secs(1), Duration::from_millis(50))
            .unwrap()
        {
            assert_eq!(r.payload(), payload(r.seq()));
        }
    }
    assert!(
        follow.next_seq() >= 3500,
        "followed to {}",
        follow.next_seq()
    );
    let _ = writer.join().unwrap();
}

#[test]
fn a_second_writer_is_fenced_and_a_stale_writer_stops() {
    let (_server, _, t2) = bucket("fence");
    let a = tempfile::tempdir().unwrap();
    let ma = manager(a.path(), t2.clone());
    let la = ma.open_log("ledger", log_config()).unwrap();
    append_all(&la, 0..1200);
    assert!(ma.wait_for_tier2(&la, WAIT));

    // Another root with the same log (restored) is refused while root A holds the claim.
    let b = tempfile::tempdir().unwrap();
    let mb = manager(b.path(), t2.clone());
    mb.restore_log("ledger", &mut |_| {}).unwrap();
    let err = mb.open_log("ledger", log_config()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
    assert!(err.to_string().contains("holds the writer claim"), "{err}");
    // A different log under the same name is refused too.
    let c = tempfile::tempdir().unwrap();
    let mc = manager(c.path(), t2.clone());
    let err = mc.open_log("ledger", log_config()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
    drop(mb);

    // Root B takes over; root A is fenced at its next catalog publication.
    let mut take_over = t2.clone();
    take_over.take_over = true;
    let mb = manager(b.path(), take_over);
    let lb = mb.open_log("ledger", log_config()).unwrap();
    let before = RemoteReader::open(t2.clone(), "ledger").unwrap().epoch();
    let deadline = Instant::now() + WAIT;
    let mut fenced = None;
    let mut seq = 1200;
    while fenced.is_none() && Instant::now() < deadline {
        match la.append(&payload(seq)) {
            Ok(_) => seq += 1,
            Err(e) => fenced = Some(e),
        }
    }
    let e = fenced.expect("the stale writer is fenced");
    assert_eq!(e.kind(), ErrorKind::Fenced, "{e}");
    // Readers follow the new writer's catalog, not the stale one.
    append_all(&lb, lb.next_seq()..lb.next_seq() + 1500);
    assert!(mb.wait_for_tier2(&lb, WAIT));
    let reader = RemoteReader::open(t2, "ledger").unwrap();
    assert!(reader.epoch() >= before);
    assert!(reader.end_seq() > 1200);
    for (i, r) in reader.iter_from(0).take(1200).enumerate() {
        assert_eq!(r.unwrap().payload(), payload(i as u64));
    }
}

#[test]
fn retention_removes_objects_after_the_catalog_drops_them() {
    let (server, target, t2) = bucket("retain");
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), t2.clone());
    let log = m.open_log("logs", log_config()).unwrap();
    append_all(&log, 0..2000);
    assert!(m.wait_for_tier2(&log, WAIT));
    let objects = |server: &S3Server| {
        server
            .list_keys(target.bucket_name(), "aof2/logs/logs/")
            .into_iter()
            .filter(|k| k.ends_with(".t1"))
            .count()
    };
    let before = objects(&server);
    let first = log.truncate_before(1000).unwrap();
    assert!(first > 0 && first <= 1000);
    let deadline = Instant::now() + WAIT;
    while objects(&server) >= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(objects(&server) < before);
    let reader = RemoteReader::open(t2, "logs").unwrap();
    assert_eq!(reader.first_seq(), first);
    assert_eq!(reader.read(first).unwrap().payload(), payload(first));
}

#[test]
fn fault_slowdown_storm_and_dropped_connections_lose_nothing() {
    let Some((server, _, mut t2)) = fault_bucket("storm") else {
        return;
    };
    t2.breaker_failures = 1000; // retries only: this test is about them
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), t2);
    let log = m.open_log("storm", log_config()).unwrap();
    server.faults().slow_down(0.3);
    server.faults().drop_connections(0.1);
    server.faults().latency(Duration::from_millis(3));
    append_all(&log, 0..2500);
    assert!(m.wait_for_tier2(&log, WAIT));
    assert!(server.faults().injected() > 0);
    server.faults().clear();
    let stats = m.tier_stats().tier2.unwrap();
    assert!(stats.retries > 0, "{stats:?}");
    m.evict_tier0(&log).unwrap();
    m.evict_tier1(&log).unwrap();
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payload(i as u64));
    }
}

#[test]
fn fault_outage_opens_the_breaker_and_the_backlog_drains_after() {
    let Some((server, _, t2)) = fault_bucket("outage") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), t2);
    let log = m.open_log("outage", log_config()).unwrap();
    append_all(&log, 0..800);
    assert!(m.wait_for_tier2(&log, WAIT));
    m.evict_tier0(&log).unwrap();
    m.evict_tier1(&log).unwrap();

    // A 30-second outage: appends go on, Tier-2-only reads fail fast, uploads wait.
    server.faults().outage(true);
    let outage_started = Instant::now();
    let mut appended = 800;
    let mut fast_read = None;
    while outage_started.elapsed() < Duration::from_secs(30) {
        append_all(&log, appended..appended + 100);
        appended += 100;
        if m.tier_stats().tier2.unwrap().breaker == "open" && fast_read.is_none() {
            let t = Instant::now();
            let e = log.read(3).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            assert!(e.to_string().contains("circuit breaker"), "{e}");
            fast_read = Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = m.tier_stats().tier2.unwrap();
    assert!(stats.breaker_opened > 0, "{stats:?}");
    assert!(stats.upload_backlog > 0, "{stats:?}");
    assert!(
        fast_read.expect("read while open") < Duration::from_millis(100),
        "{fast_read:?}"
    );
    // Local tiers keep serving the records not yet uploaded.
    assert_eq!(
        log.read(appended - 1).unwrap().payload(),
        payload(appended - 1)
    );

    server.faults().outage(false);
    assert!(m.wait_for_tier2(&log, WAIT), "backlog drains");
    let deadline = Instant::now() + WAIT;
    while m.tier_stats().tier2.unwrap().upload_backlog > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = m.tier_stats().tier2.unwrap();
    assert_eq!(stats.breaker, "closed");
    assert_eq!(stats.upload_backlog, 0, "{stats:?}");
    m.evict_tier0(&log).unwrap();
    m.evict_tier1(&log).unwrap();
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payload(i as u64));
    }
}

#[test]
fn fault_hung_requests_time_out_and_missing_objects_are_reported() {
    let Some((server, target, mut t2)) = fault_bucket("hang") else {
        return;
    };
    t2.request_timeout = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), t2);
    let log = m.open_log("hang", log_config()).unwrap();
    server.faults().hang(true);
    append_all(&log, 0..600);
    std::thread::sleep(Duration::from_secs(1));
    let stats = m.tier_stats().tier2.unwrap();
    assert!(stats.request_failures > 0, "{stats:?}");
    server.faults().hang(false);
    assert!(
        m.wait_for_tier2(&log, WAIT),
        "uploads resume after the hang"
    );

    // An object deleted behind aof2's back: a clear error naming it, other segments unharmed.
    m.evict_tier0(&log).unwrap();
    m.evict_tier1(&log).unwrap();
    let keys: Vec<String> = server
        .list_keys(target.bucket_name(), "aof2/logs/hang/")
        .into_iter()
        .filter(|k| k.ends_with(".t1"))
        .collect();
    server.delete_object(target.bucket_name(), &keys[0]);
    let e = log.read(0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains(&keys[0]), "{e}");
    let last_sealed = sealed_segments(&m, &log)
        .iter()
        .map(|s| s.end_seq)
        .max()
        .unwrap();
    assert_eq!(
        log.read(last_sealed - 1).unwrap().payload(),
        payload(last_sealed - 1)
    );
}

#[test]
fn fault_retention_interrupted_by_an_outage_is_finished_at_the_next_open() {
    let Some((server, target, t2)) = fault_bucket("sweep") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let objects = || {
        server
            .list_keys(target.bucket_name(), "aof2/logs/swept/")
            .into_iter()
            .filter(|k| k.ends_with(".t1"))
            .count()
    };
    let m = manager(dir.path(), t2.clone());
    let log = m.open_log("swept", log_config()).unwrap();
    append_all(&log, 0..2000);
    assert!(m.wait_for_tier2(&log, WAIT));
    let before = objects();
    server.faults().outage(true);
    let first = log.truncate_before(1500).unwrap();
    assert!(first > 0);
    log.close().unwrap();
    drop(log);
    drop(m);
    server.faults().outage(false);
    assert_eq!(objects(), before, "the outage kept every object");

    let m = manager(dir.path(), t2.clone());
    let log = m.open_log("swept", log_config()).unwrap();
    let deadline = Instant::now() + WAIT;
    while objects() >= before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        objects() < before,
        "retired objects deleted after the reopen"
    );
    assert_eq!(log.read(first).unwrap().payload(), payload(first));
    let reader = RemoteReader::open(t2, "swept").unwrap();
    assert_eq!(reader.first_seq(), first);
}

#[test]
fn a_damaged_tier0_copy_is_replaced_by_the_tier2_copy() {
    let (_server, _, t2) = bucket("damaged");
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), t2.clone());
    let log = m.open_log("hurt", log_config()).unwrap();
    append_all(&log, 0..3000);
    assert!(m.wait_for_tier2(&log, WAIT));
    // Tier 1 released: these segments are in Tier 0 and Tier 2 only.
    m.evict_tier1(&log).unwrap();
    let both: Vec<aof2::SegmentInfo> = m
        .log_info(&log)
        .segments
        .into_iter()
        .filter(|s| s.tiers() == "0+2")
        .collect();
    assert!(both.len() >= 2, "{both:?}");
    log.close().unwrap();
    drop(log);
    drop(m);
    let flip = |path: &std::path::Path, at: fn(usize) -> usize| {
        let mut bytes = std::fs::read(path).unwrap();
        let i = at(bytes.len());
        bytes[i] ^= 0xff;
        std::fs::write(path, bytes).unwrap();
    };
    // A damaged footer is found at open; a damaged record when it is read.
    flip(&both[0].path, |len| len - 1);
    flip(&both[1].path, |len| len / 2);

    let m = manager(dir.path(), t2);
    let log = m.open_log("hurt", log_config()).unwrap();
    let report = m.recovery_report("hurt").unwrap();
    assert!(report.quarantined.is_empty(), "{report:?}");
    assert_eq!(report.tier0_dropped.len(), 1, "{report:?}");
    let now = m.log_info(&log).segments;
    assert_eq!(
        now.iter().find(|s| s.id == both[0].id).unwrap().tiers(),
        "2"
    );
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payload(i as u64));
    }
    let seq = both[1].base_seq + (both[1].end_seq - both[1].base_seq) / 2;
    assert_eq!(log.read(seq).unwrap().payload(), payload(seq));
}

// ------------------------------------------------------------------ opens without the store

fn file_tier2(dir: &std::path::Path) -> Tier2Config {
    let mut c = Tier2Config::new(format!("file://{}", dir.display()));
    c.request_timeout = Duration::from_secs(5);
    c.backoff_base = Duration::from_millis(10);
    c.backoff_max = Duration::from_millis(200);
    c
}

/// A segment held in Tier 1 and Tier 2 (not Tier 0) whose Tier 1 file is damaged, opened once
/// without the Tier 2 store configured (a tool run without `--tier2`): the open fails with
/// `InvalidConfig` and changes nothing, as for a segment held only in Tier 2. It used to
/// quarantine the segment for good, although Tier 2 holds a verified copy.
#[test]
fn open_without_the_store_does_not_quarantine_a_segment_tier2_holds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let t2 = file_tier2(&dir.path().join("store"));
    {
        let m = manager(&root, t2.clone());
        let log = m.open_log("orders", log_config()).unwrap();
        append_all(&log, 0..600);
        log.seal().unwrap();
        assert!(m.wait_for_tier2(&log, WAIT), "uploads finish");
        m.evict_tier0(&log).unwrap();
        log.close().unwrap();
        m.close().unwrap();
    }
    // Damage the Tier 1 copy of segment 0 (its footer).
    let t1 = root.join("logs/orders/tier1/0000000000000000.t1");
    let mut bytes = std::fs::read(&t1).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x41;
    std::fs::write(&t1, bytes).unwrap();
    {
        let mut config = ManagerConfig::new(&root);
        config.tier0_max_bytes = 16 * SEGMENT;
        config.compress_threads = 1;
        let m = AofManager::open(config).unwrap();
        let err = m
            .open_log("orders", log_config())
            .expect_err("the open needs the Tier 2 store");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("Tier 2"), "{err}");
        m.close().unwrap();
    }
    let m = manager(&root, t2);
    let log = m.open_log("orders", log_config()).unwrap();
    for seq in [0u64, 1, 50] {
        match log.read(seq) {
            Ok(r) => assert_eq!(r.payload(), payload(seq)),
            Err(e) => panic!("seq {seq} unreadable although Tier 2 holds it: {e}"),
        }
    }
    m.close().unwrap();
}

/// aof2 has async APIs and is used from tokio tasks: a `RemoteReader` whose open fails, or a
/// manager with Tier 2, dropped inside a task must not panic (tokio refuses to drop a runtime
/// there, and each holds one for its requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_reader_dropped_in_an_async_context_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let t2 = file_tier2(&dir.path().join("store"));
    let opened = RemoteReader::open(t2, "orders");
    assert_eq!(opened.unwrap_err().kind(), ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_with_tier2_dropped_in_an_async_context_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let t2 = file_tier2(&dir.path().join("store"));
    let m = manager(&dir.path().join("root"), t2);
    let log = m.open_log("orders", log_config()).unwrap();
    log.append(b"x").unwrap();
    m.close().unwrap();
    drop(log);
    drop(m);
}

/// A segment object cut short in the bucket (a bad copy, an operator's mistake): reading it is
/// `Corruption` naming the object, the store is not taken for down (no retries, the breaker stays
/// closed) and the other segments read on.
#[test]
fn a_truncated_object_is_corruption_not_an_outage() {
    let (server, target, mut t2) = bucket("truncated");
    t2.breaker_failures = 2;
    t2.breaker_open_for = Duration::from_secs(3600);
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), t2.clone());
    let log = m.open_log("cut", log_config()).unwrap();
    append_all(&log, 0..1500);
    assert!(m.wait_for_tier2(&log, WAIT));
    m.evict_tier0(&log).unwrap();
    assert!(m.evict_tier1(&log).unwrap() > 0);
    let keys: Vec<String> = server
        .list_keys(target.bucket_name(), "aof2/logs/cut/")
        .into_iter()
        .filter(|k| k.ends_with(".t1"))
        .collect();
    let bytes = server.object_bytes(target.bucket_name(), &keys[0]).unwrap();
    server.put_object(
        target.bucket_name(),
        &keys[0],
        bytes[..bytes.len() / 2].to_vec(),
    );

    let before = m.tier_stats().tier2.unwrap();
    let e = log.read(0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(e.to_string().contains(&keys[0]), "{e}");
    let after = m.tier_stats().tier2.unwrap();
    assert_eq!(after.breaker, "closed", "{after:?}");
    assert_eq!(after.request_failures, before.request_failures, "{after:?}");
    let reader = RemoteReader::open(t2, "cut").unwrap();
    let e = reader.read(0).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    let last = reader.end_seq() - 1;
    assert_eq!(reader.read(last).unwrap().payload(), payload(last));
    assert_eq!(log.read(last).unwrap().payload(), payload(last));
}

/// A log reopened with another Tier 2 prefix (a typo, a changed `--tier2`): the open fails with
/// `InvalidConfig`, and nothing is claimed or published there. It used to claim the log in the
/// new place and publish a catalog listing segments whose objects are all in the old one, so a
/// restore or a remote reader of that catalog found nothing to read, and later uploads went to
/// a second place.
#[test]
fn a_log_reopened_with_another_prefix_is_refused() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("prefix"));
    let dir = tempfile::tempdir().unwrap();
    write_log(
        dir.path(),
        &tier2_config(&target.with_prefix("a")),
        "moved",
        1500,
    );

    let m = manager(dir.path(), tier2_config(&target.with_prefix("b")));
    let err = m.open_log("moved", log_config()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("another store or prefix"), "{err}");
    assert_eq!(
        server.list_keys(target.bucket_name(), "b/"),
        Vec::<String>::new()
    );
    drop(m);

    // With the store it was written to, the log opens and reads as before.
    let m = manager(dir.path(), tier2_config(&target.with_prefix("a")));
    let log = m.open_log("moved", log_config()).unwrap();
    assert_eq!(log.read(0).unwrap().payload(), payload(0));
}

/// A claim object that is not a claim (garbage under `writer/`) fails the open with
/// `Corruption` naming it; it used to be taken for an outage ("claim deferred"), and the log then
/// never uploaded anything.
#[test]
fn a_damaged_writer_claim_fails_the_open() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("garbage-claim"));
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &tier2_config(&target), "claimed", 500);
    let claims: Vec<String> = server
        .list_keys(target.bucket_name(), "")
        .into_iter()
        .filter(|k| k.contains("/writer/"))
        .collect();
    let newest = claims.iter().max().expect("a writer claim").clone();
    server.put_object(target.bucket_name(), &newest, b"not a claim".to_vec());

    let m = manager(dir.path(), tier2_config(&target));
    let err = m.open_log("claimed", log_config()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(err.to_string().contains("writer claim"), "{err}");
}

/// A segment object cut short behind aof2's back (a bad copy, a damaged disk under a `file://`
/// store), read while Tier 2 is its only copy: a typed `Corruption` naming the object, as for a
/// flipped byte in it. The store answers such a read at once (a range past the end of an object
/// is refused, HTTP 416), which used to be taken for an outage: every read retried five times,
/// failed with `Unavailable` (`aof2 cat` exit 4, "retry later"), and opened the circuit breaker,
/// so one damaged object stopped every upload and Tier 2 read for a while.
#[test]
fn a_truncated_tier2_object_is_corruption_not_an_outage() {
    let server = S3Server::start();
    let s3 = server.bucket(&unique_bucket("cut"));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Half the object: its header reads, its footer lies past the end.
    let truncate_file = |key: &str| {
        let path = store.join(key);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    };
    let truncate_object = |key: &str| {
        let mut bytes = server.object_bytes(s3.bucket_name(), key).unwrap();
        bytes.truncate(bytes.len() / 2);
        server.put_object(s3.bucket_name(), key, bytes);
    };
    type Truncate<'a> = &'a dyn Fn(&str);
    let stores: [(&str, Tier2Config, Truncate); 2] = [
        ("file", file_tier2(&store), &truncate_file),
        ("s3", tier2_config(&s3), &truncate_object),
    ];
    for (kind, t2, truncate) in stores {
        let root = dir.path().join(kind);
        let m = manager(&root, t2);
        let log = m.open_log("cut", log_config()).unwrap();
        append_all(&log, 0..600);
        log.seal().unwrap();
        assert!(m.wait_for_tier2(&log, WAIT), "{kind}: uploads finish");
        m.evict_tier0(&log).unwrap();
        m.evict_tier1(&log).unwrap();
        let segments = sealed_segments(&m, &log);
        assert!(segments.len() >= 2, "{kind}: {segments:?}");
        assert!(
            segments.iter().all(|s| s.tiers() == "2"),
            "{kind}: {segments:?}"
        );
        let key = format!(
            "aof2/logs/cut/{:032x}/{:016x}-",
            m.log_info(&log).log_id,
            segments[0].id
        );
        let key = match kind {
            "file" => walk_keys(&store)
                .into_iter()
                .find(|k| k.starts_with(&key))
                .unwrap(),
            _ => server
                .list_keys(s3.bucket_name(), &key)
                .into_iter()
                .next()
                .unwrap(),
        };
        truncate(&key);

        let e = log.read(0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption, "{kind}: {e}");
        assert!(e.to_string().contains(&key), "{kind}: {e}");
        let stats = m.tier_stats().tier2.unwrap();
        assert_eq!(stats.breaker, "closed", "{kind}: {stats:?}");
        let last = segments.last().unwrap();
        assert_eq!(
            log.read(last.base_seq).unwrap().payload(),
            payload(last.base_seq),
            "{kind}: other segments read on"
        );
        m.close().unwrap();
    }
}

/// Every file under `dir`, as a `/`-separated path relative to it.
fn walk_keys(dir: &std::path::Path) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap();
                keys.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    keys
}

/// A segment held in Tier 1 and Tier 2 whose local Tier 1 file is damaged inside a frame
/// (damage the open's header, footer and index checks cannot see): reads of that frame come
/// from the Tier 2 copy, as reads of a damaged Tier 0 copy come from Tier 1; `verify` still
/// reports the damaged file. They used to fail with `Corruption` (`aof2 cat` stopped there with
/// exit 3), at every open, although Tier 2 held a verified copy.
#[test]
fn a_damaged_tier1_frame_is_read_from_tier2() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let t2 = file_tier2(&dir.path().join("store"));
    let segments = {
        let m = manager(&root, t2.clone());
        let log = m.open_log("frames", log_config()).unwrap();
        append_all(&log, 0..600);
        log.seal().unwrap();
        assert!(m.wait_for_tier2(&log, WAIT), "uploads finish");
        m.evict_tier0(&log).unwrap();
        let segments = sealed_segments(&m, &log);
        assert!(segments.iter().all(|s| s.tiers() == "1+2"), "{segments:?}");
        m.close().unwrap();
        segments
    };
    // A byte inside the first zstd frame of segment 0's Tier 1 file (frames start at 192).
    let t1 = root.join(format!("logs/frames/tier1/{:016x}.t1", segments[0].id));
    let mut bytes = std::fs::read(&t1).unwrap();
    bytes[192 + 40] ^= 0x10;
    std::fs::write(&t1, &bytes).unwrap();

    let m = manager(&root, t2);
    let log = m.open_log("frames", log_config()).unwrap();
    match log.read(3) {
        Ok(r) => assert_eq!(r.payload(), payload(3)),
        Err(e) => panic!("seq 3 unreadable although Tier 2 holds it: {e}"),
    }
    let mut n = 0;
    for (i, r) in log.reader(0).enumerate() {
        match r {
            Ok(r) => assert_eq!(r.payload(), payload(i as u64), "seq {i}"),
            Err(e) => panic!("seq {i} unreadable although Tier 2 holds it: {e}"),
        }
        n += 1;
    }
    assert_eq!(n, 600);
    let verify = m.verify_log(&log);
    assert!(
        verify
            .problems
            .iter()
            .any(|p| p.segment_id == segments[0].id),
        "verify still names the damaged Tier 1 file: {:?}",
        verify.problems
    );
    m.close().unwrap();
}

/// An open refused by its Tier 2 claim (here a damaged claim object) counted none of the log's
/// Tier 1 files, so it must not take them off the manager's Tier 1 count either: it used to, and
/// the count of the logs still open fell below what their files hold (a Tier 1 budget then
/// overrun without a word).
#[test]
fn a_refused_open_leaves_the_tier1_count_of_other_logs() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("refused-count"));
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &tier2_config(&target), "kept", 1500);
    write_log(dir.path(), &tier2_config(&target), "refused", 1500);
    let claim = server
        .list_keys(target.bucket_name(), "")
        .into_iter()
        .filter(|k| k.contains("/logs/refused/") && k.contains("/writer/"))
        .max()
        .expect("a writer claim");
    server.put_object(target.bucket_name(), &claim, b"not a claim".to_vec());

    let m = manager(dir.path(), tier2_config(&target));
    let kept = m.open_log("kept", log_config()).unwrap();
    let counted = m.tier_stats().tier1_used_bytes;
    assert!(counted > 0, "the kept log has Tier 1 files");
    let err = m.open_log("refused", log_config()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert_eq!(m.tier_stats().tier1_used_bytes, counted);
    kept.close().unwrap();
    assert_eq!(m.tier_stats().tier1_used_bytes, 0);
}

/// Opens of different logs run side by side: while one log's open waits on its Tier 2 writer
/// claim (the store took the request and never answers), other logs of the same manager open
/// (writable, with their own claims, and read-only), take appends and close. The manager used
/// to hold its map of open logs through a whole open, claim included, so every other open (and
/// a reopen or upgrade) waited out the stuck one: up to 5 s per slow log, one after another.
#[test]
fn fault_a_stuck_claim_holds_up_no_other_log() {
    let Some((server, _, mut t2)) = fault_bucket("stuck-open") else {
        return;
    };
    // The claim's requests hang past the open's wait for them (5 s).
    t2.request_timeout = Duration::from_secs(120);
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &t2, "other", 300);
    let m = manager(dir.path(), t2);
    let early = m.open_log("early", log_config()).unwrap();
    early.append(b"before the hang").unwrap();

    let stuck = open_stuck_on_its_claim(&server, &m);

    // The stuck open holds its claim request now: everything else goes on.
    let fresh = m.open_log("fresh", log_config()).unwrap();
    assert_eq!(fresh.append(b"while another open is stuck").unwrap(), 0);
    let other = m.open_log_read_only("other").unwrap();
    assert_eq!(other.next_seq(), 300);
    assert_eq!(other.read(299).unwrap().payload(), payload(299));
    early.close().unwrap();
    let early = m.open_log("early", log_config()).unwrap();
    assert_eq!(early.append(b"after a reopen").unwrap(), 1);
    fresh.close().unwrap();
    let others_went_first = !stuck.is_finished();

    server.faults().hang(false);
    let stuck = stuck.join().unwrap().unwrap();
    assert_eq!(stuck.append(b"once the store answers").unwrap(), 0);
    assert!(
        others_went_first,
        "other logs' opens and closes waited for the open stuck on its Tier 2 claim"
    );
    m.close().unwrap();
}

/// Open log "stuck-claim" on a thread of its own while the store hangs every request naming it
/// (its claim LISTs `.../logs/stuck-claim/writer/`); returns once the claim hangs.
fn open_stuck_on_its_claim(
    server: &S3Server,
    m: &AofManager,
) -> std::thread::JoinHandle<aof2::Result<aof2::Aof>> {
    server.faults().only_uris_containing("stuck-claim");
    server.faults().hang(true);
    let stuck = {
        let m = m.clone();
        std::thread::spawn(move || m.open_log("stuck-claim", log_config()))
    };
    let deadline = Instant::now() + WAIT;
    while server.faults().injected() == 0 {
        assert!(
            !stuck.is_finished(),
            "the open finished without asking the store"
        );
        assert!(
            Instant::now() < deadline,
            "the stuck log's claim never reached the store"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stuck
}

/// The manager closed while an open waits on its Tier 2 claim: the close waits for that open
/// (which then closes what it opened instead of publishing it), so no log is left half-open
/// with its threads stopped, and the root can be opened again at once.
#[test]
fn fault_manager_close_during_a_stuck_claim() {
    let Some((server, _, mut t2)) = fault_bucket("stuck-close") else {
        return;
    };
    t2.request_timeout = Duration::from_secs(120);
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &t2, "stuck-claim", 300);
    let m = manager(dir.path(), t2.clone());
    let open = m.open_log("open", log_config()).unwrap();
    open.append(b"kept").unwrap();

    let stuck = open_stuck_on_its_claim(&server, &m);
    m.close().unwrap();
    match stuck.join().unwrap() {
        // Published before the close drained the logs: the close closed it.
        Ok(log) => assert_eq!(log.append(b"x").unwrap_err().kind(), ErrorKind::Closed),
        Err(e) => assert_eq!(e.kind(), ErrorKind::Closed, "{e}"),
    }
    assert_eq!(open.append(b"x").unwrap_err().kind(), ErrorKind::Closed);
    let stats = m.tier_stats();
    assert_eq!(
        (stats.tier0_used_bytes, stats.tier1_used_bytes),
        (0, 0),
        "{stats:?}"
    );
    drop(m);

    server.faults().hang(false);
    let m = manager(dir.path(), t2);
    let log = m.open_log("stuck-claim", log_config()).unwrap();
    assert_eq!(log.next_seq(), 300);
    assert_eq!(log.append(b"after").unwrap(), 300);
    let log = m.open_log("open", log_config()).unwrap();
    assert_eq!(log.read(0).unwrap().payload(), b"kept");
    m.close().unwrap();
}

/// `verify_log` checks a Tier 2 copy only where it is the segment's only copy, so damage to the
/// object of a segment still held locally went unnoticed until a restore needed it;
/// `VerifyOptions::tier2_copies` checks every uploaded object.
#[test]
fn verify_checks_every_tier2_copy_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let m = manager(&dir.path().join("root"), file_tier2(&store));
    let log = m.open_log("copies", log_config()).unwrap();
    append_all(&log, 0..600);
    log.seal().unwrap();
    assert!(m.wait_for_tier2(&log, WAIT), "uploads finish");
    let segments = sealed_segments(&m, &log);
    assert!(segments.len() >= 2, "{segments:?}");
    let report = m.verify_log(&log);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.tier2_copies, 0, "local copies stand: {report:?}");

    // A byte inside the first zstd frame of segment 0's object (frames start at 192).
    let prefix = format!(
        "aof2/logs/copies/{:032x}/{:016x}-",
        m.log_info(&log).log_id,
        segments[0].id
    );
    let key = walk_keys(&store)
        .into_iter()
        .find(|k| k.starts_with(&prefix))
        .unwrap();
    let mut bytes = std::fs::read(store.join(&key)).unwrap();
    bytes[192 + 40] ^= 0x10;
    std::fs::write(store.join(&key), &bytes).unwrap();

    let report = m.verify_log(&log);
    assert!(report.is_clean(), "the local copies are sound: {report:?}");
    let options = aof2::VerifyOptions::default().with_tier2_copies(true);
    let report = m.verify_log_with(&log, options);
    assert_eq!(report.tier2_copies, segments.len(), "{report:?}");
    assert!(report.unchecked.is_empty(), "{report:?}");
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(report.problems[0].segment_id, segments[0].id);
    assert!(report.problems[0].location.contains(&key), "{report:?}");
    m.close().unwrap();
}

/// A segment that only Tier 2 holds, verified while the store is down, is not checked: it used
/// to be reported as a problem, as if the object were damaged (`aof2 verify` exit 3).
#[test]
fn fault_verify_during_an_outage_is_unchecked_not_damage() {
    let Some((server, _, mut t2)) = fault_bucket("vdown") else {
        return;
    };
    t2.request_timeout = Duration::from_millis(500);
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), t2);
    let log = m.open_log("vdown", log_config()).unwrap();
    append_all(&log, 0..600);
    log.seal().unwrap();
    assert!(m.wait_for_tier2(&log, WAIT), "uploads finish");
    m.evict_tier0(&log).unwrap();
    m.evict_tier1(&log).unwrap();
    let segments = sealed_segments(&m, &log);
    assert!(segments.iter().all(|s| s.tiers() == "2"), "{segments:?}");

    server.faults().outage(true);
    let report = m.verify_log(&log);
    server.faults().outage(false);
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(report.unchecked.len(), segments.len(), "{report:?}");
    assert!(!report.is_clean());

    // Once the store answers again (and the breaker lets requests through), all of it checks.
    let deadline = Instant::now() + WAIT;
    let report = loop {
        let report = m.verify_log(&log);
        if report.is_clean() || Instant::now() > deadline {
            break report;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, 600);
    m.close().unwrap();
}

/// A restore downloads into Tier 1 only what the Tier 1 budget has room for next to the logs
/// already open in the manager (it used to plan with the whole budget, so the two together
/// overran it by what the open logs held).
#[test]
fn restore_leaves_the_tier1_room_other_logs_hold() {
    let (_server, _, t2) = bucket("restore-budget");
    let a = tempfile::tempdir().unwrap();
    write_log(a.path(), &t2, "events", 2500);
    let catalog_bytes: u64 = {
        let m = manager(a.path(), t2.clone());
        let log = m.open_log_read_only("events").unwrap();
        sealed_segments(&m, &log)
            .iter()
            .map(|s| s.tier1_bytes)
            .sum()
    };
    assert!(catalog_bytes > 0);

    let b = tempfile::tempdir().unwrap();
    let mut config = ManagerConfig::new(b.path());
    config.tier0_max_bytes = 16 * SEGMENT;
    config.tier1_frame_bytes = 16 << 10;
    config.compress_threads = 1;
    config.tier1_max_bytes = catalog_bytes;
    config.tier2 = Some(t2);
    let m = AofManager::open(config).unwrap();
    let local = m.open_log("local", log_config()).unwrap();
    append_all(&local, 0..600);
    local.seal().unwrap();
    assert!(m.wait_for_tier1(&local, WAIT));
    let held = m.tier_stats().tier1_used_bytes;
    assert!(
        held > 0 && held < catalog_bytes,
        "{held} of {catalog_bytes}"
    );
    let report = m.restore_log("events", &mut |_| {}).unwrap();
    assert!(
        held + report.bytes_downloaded <= catalog_bytes,
        "{held} bytes held by the open log and {} downloaded: over the budget of {catalog_bytes}",
        report.bytes_downloaded
    );
    assert!(report.segments_downloaded < report.segments, "{report:?}");
    // The segments left in Tier 2 are read from there.
    let log = m.open_log_read_only("events").unwrap();
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payload(i as u64), "seq {i}");
    }
}

// ------------------------------------------------------------------ where a log continues

/// Appends `0..records`, seals them, puts one more record in the active segment and waits until
/// every sealed segment is in Tier 2; then retention removes every sealed segment (the active one
/// holds a later record, so the newest sealed one may go too) and the test waits until the
/// store holds no segment object. Returns (the log's first sequence, the timestamp of the last
/// record retention removed).
fn retire_every_uploaded_segment(
    m: &AofManager,
    log: &aof2::Aof,
    store: &std::path::Path,
) -> (u64, u64) {
    let records = log.next_seq() + 1200;
    append_all(log, log.next_seq()..records);
    log.seal().unwrap();
    append_all(log, records..records + 1);
    assert!(m.wait_for_tier2(log, WAIT), "uploads finish");
    let newest_ms = log.read(records - 1).unwrap().timestamp_ms();
    let first = log.truncate_before(records + 1).unwrap();
    assert_eq!(first, records, "retention keeps only the active segment");
    assert!(sealed_segments(m, log).is_empty());
    let deadline = Instant::now() + WAIT;
    while walk_keys(store).iter().any(|k| k.ends_with(".t1")) {
        assert!(Instant::now() < deadline, "retired objects are deleted");
        std::thread::sleep(Duration::from_millis(20));
    }
    (first, newest_ms)
}

/// A log whose Tier 2 segments retention removed, all of them: its catalog lists no segment.
/// Tier 2 still knows where the log ends: a remote reader reports the log's first and next
/// sequence as the end of the removed records, a restore onto an empty root continues the
/// sequence there (and the timestamps after the removed records'), and a local reopen agrees.
/// The catalog had no field for it: the restored log started again at sequence 0, so a
/// consumer that had read records 0.. saw different records under the same sequences.
#[test]
fn a_restore_after_retention_removed_every_segment_continues_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let t2 = file_tier2(&store);
    let root_a = dir.path().join("a");
    let (first, newest_ms) = {
        let m = manager(&root_a, t2.clone());
        let log = m.open_log("cdc", log_config()).unwrap();
        let retired = retire_every_uploaded_segment(&m, &log, &store);
        log.close().unwrap();
        m.close().unwrap();
        retired
    };

    let reader = RemoteReader::open(t2.clone(), "cdc").unwrap();
    assert_eq!(
        (reader.first_seq(), reader.end_seq()),
        (first, first),
        "a remote reader's first and next sequence"
    );
    assert_eq!(reader.iter_from(first).count(), 0);
    assert_eq!(reader.read(0).unwrap_err().kind(), ErrorKind::NotFound);

    // The writer's root: the log still ends where it did.
    {
        let m = manager(&root_a, t2.clone());
        let log = m.open_log("cdc", log_config()).unwrap();
        assert_eq!((log.first_seq(), log.next_seq()), (first, first + 1));
        log.close().unwrap();
        m.close().unwrap();
    }

    let root_b = dir.path().join("b");
    let mut take_over = t2.clone();
    take_over.take_over = true;
    let m = manager(&root_b, take_over);
    let report = m.restore_log("cdc", &mut |_| {}).unwrap();
    assert_eq!(report.segments, 0);
    assert_eq!((report.first_seq, report.end_seq), (first, first));
    let log = m.open_log("cdc", log_config()).unwrap();
    assert_eq!((log.first_seq(), log.next_seq()), (first, first));
    let seq = log.append(b"after the restore").unwrap();
    assert_eq!(seq, first, "the restored log continues where Tier 2 ends");
    let record = log.read(seq).unwrap();
    assert_eq!(record.payload(), b"after the restore");
    assert!(record.timestamp_ms() >= newest_ms);
    assert_eq!(log.read(first - 1).unwrap_err().kind(), ErrorKind::NotFound);
    // Closed and opened again, the restored log still ends there.
    log.close().unwrap();
    let log = m.open_log("cdc", log_config()).unwrap();
    assert_eq!((log.first_seq(), log.next_seq()), (first, first + 1));
    m.close().unwrap();
}

/// A catalog that lists no segment (retention removed them) carries the newest timestamp of the
/// removed records: a log restored from it stamps new records no earlier, even when the
/// restoring machine's clock is behind the old writer's (here: the old records are stamped an
/// hour ahead). Timestamps never decrease within a log (`docs/format.md`).
#[test]
fn a_log_restored_from_a_catalog_without_segments_keeps_its_timestamps_rising() {
    use aof2::format::catalog::Catalog;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let ahead_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 3_600_000;
    let catalog = Catalog {
        epoch: 1,
        generation: 1,
        log_id: 0x5eed,
        name: "audit".into(),
        created_ms: ahead_ms - 1000,
        next_seq: 777,
        last_timestamp_ms: ahead_ms,
        segments: Vec::new(),
    };
    let key = store.join("aof2/logs/audit/catalog/00000000000000000001-00000000000000000001");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, catalog.encode()).unwrap();

    let m = manager(&dir.path().join("root"), file_tier2(&store));
    let report = m.restore_log("audit", &mut |_| {}).unwrap();
    assert_eq!((report.first_seq, report.end_seq), (777, 777));
    let log = m.open_log("audit", log_config()).unwrap();
    assert_eq!(log.append(b"first after the restore").unwrap(), 777);
    let stamped = log.read(777).unwrap().timestamp_ms();
    assert!(
        stamped >= ahead_ms,
        "stamped {stamped}, the log's newest is {ahead_ms}"
    );
    log.close().unwrap();
    // A reopen into a new segment keeps them rising too.
    let log = m.open_log("audit", log_config()).unwrap();
    log.seal().unwrap();
    let seq = log.append(b"after a reopen").unwrap();
    assert_eq!(seq, 778);
    assert!(log.read(seq).unwrap().timestamp_ms() >= stamped);
    m.close().unwrap();
}

/// Wait until the store's newest catalog of `name` shows `(first_seq, end_seq)`.
/// (`wait_for_tier2` can return while the catalog's PUT is still in flight.)
fn wait_for_catalog(t2: &Tier2Config, name: &str, want: (u64, u64)) {
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = RemoteReader::open(t2.clone(), name)
            .ok()
            .map(|r| (r.first_seq(), r.end_seq()));
        if seen == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "catalog of {name}: {seen:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A log restored onto another root while its writer kept uploading: the store's catalog lists
/// records (here: a segment sealed after the restore) the restored log does not have. Taking the
/// log over from there would continue it at the restored end and publish different records
/// under sequences readers of the old catalog have seen. The open is refused with `Fenced`
/// (restore again), and the old writer is not fenced. It used to take the log over.
#[test]
fn taking_over_a_log_restored_before_the_writer_uploaded_more_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let t2 = file_tier2(&store);
    let ma = manager(&dir.path().join("a"), t2.clone());
    let la = ma.open_log("orders", log_config()).unwrap();
    append_all(&la, 0..800);
    la.seal().unwrap();
    assert!(ma.wait_for_tier2(&la, WAIT));
    wait_for_catalog(&t2, "orders", (0, 800));

    let root_b = dir.path().join("b");
    let restored_end = {
        let mb = manager(&root_b, t2.clone());
        let report = mb.restore_log("orders", &mut |_| {}).unwrap();
        mb.close().unwrap();
        report.end_seq
    };
    assert_eq!(restored_end, 800);
    // The writer goes on: more records reach Tier 2.
    append_all(&la, 800..1600);
    la.seal().unwrap();
    assert!(ma.wait_for_tier2(&la, WAIT));
    wait_for_catalog(&t2, "orders", (0, 1600));

    let mut take_over = t2.clone();
    take_over.take_over = true;
    let mb = manager(&root_b, take_over);
    let err = mb.open_log("orders", log_config()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fenced, "{err}");
    assert!(err.to_string().contains("restore"), "{err}");
    mb.close().unwrap();
    // The writer was not taken over.
    append_all(&la, 1600..1700);
    la.seal().unwrap();
    assert!(ma.wait_for_tier2(&la, WAIT));
    wait_for_catalog(&t2, "orders", (0, 1700));
    let reader = RemoteReader::open(t2, "orders").unwrap();
    assert_eq!(reader.read(900).unwrap().payload(), payload(900));
    ma.close().unwrap();
}

/// Retention removed some of the log's segments from Tier 2: a restore starts the log at the
/// first record Tier 2 still holds (records below it are `NotFound`, as retention says), and
/// continues it at the end.
#[test]
fn a_restore_after_retention_removed_some_segments_starts_at_the_first_kept_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let t2 = file_tier2(&store);
    let first = {
        let m = manager(&dir.path().join("a"), t2.clone());
        let log = m.open_log("trades", log_config()).unwrap();
        append_all(&log, 0..2000);
        log.seal().unwrap();
        assert!(m.wait_for_tier2(&log, WAIT));
        let first = log.truncate_before(1000).unwrap();
        assert!(first > 0 && first <= 1000, "{first}");
        wait_for_catalog(&t2, "trades", (first, 2000));
        log.close().unwrap();
        m.close().unwrap();
        first
    };
    let mut take_over = t2.clone();
    take_over.take_over = true;
    let m = manager(&dir.path().join("b"), take_over);
    let report = m.restore_log("trades", &mut |_| {}).unwrap();
    assert_eq!((report.first_seq, report.end_seq), (first, 2000));
    let log = m.open_log("trades", log_config()).unwrap();
    assert_eq!((log.first_seq(), log.next_seq()), (first, 2000));
    assert_eq!(log.read(first - 1).unwrap_err().kind(), ErrorKind::NotFound);
    for (i, r) in log.reader(first).enumerate() {
        assert_eq!(r.unwrap().payload(), payload(first + i as u64));
    }
    assert_eq!(log.append(&payload(2000)).unwrap(), 2000);
    m.close().unwrap();
}

/// The end of the log's sealed segments (what a published catalog covers once uploads are done).
fn sealed_end(m: &AofManager, log: &aof2::Aof) -> u64 {
    sealed_segments(m, log)
        .iter()
        .map(|s| s.end_seq)
        .max()
        .unwrap()
}

/// A catalog PUT that reached the store but answered after the client's time limit (so the
/// writer retried it and went on publishing) lands after newer catalogs. It used to overwrite
/// them (one key per epoch): readers and restores went back to an older list of segments, and
/// could be sent to objects retention had deleted since.
#[test]
fn fault_a_catalog_put_landing_late_does_not_replace_a_newer_catalog() {
    let Some((server, _, mut t2)) = fault_bucket("late-catalog") else {
        return;
    };
    t2.request_timeout = Duration::from_millis(500);
    t2.breaker_failures = 1000; // the retry of the held request goes out at once
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), t2.clone());
    let log = m.open_log("late", log_config()).unwrap();
    append_all(&log, 0..600);
    assert!(m.wait_for_tier2(&log, WAIT));

    // The next catalog PUT is held by the server past the client's time limit; its retry lands.
    server.faults().only_methods(&["PUT"]);
    server.faults().only_paths_containing("/catalog/");
    server.faults().hold_next(1);
    append_all(&log, 600..1200);
    assert!(m.wait_for_tier2(&log, WAIT));
    assert_eq!(server.faults().held_requests(), 1);
    // Newer publications, then the held PUT lands.
    append_all(&log, 1200..2000);
    assert!(m.wait_for_tier2(&log, WAIT));
    let end = sealed_end(&m, &log);
    assert_eq!(
        RemoteReader::open(t2.clone(), "late").unwrap().end_seq(),
        end
    );
    assert_eq!(server.faults().release_held(), 1);

    let reader = RemoteReader::open(t2.clone(), "late").unwrap();
    assert_eq!(
        reader.end_seq(),
        end,
        "readers see the newest catalog, not the one that landed last"
    );
    // A restore elsewhere gets every uploaded record too.
    let b = tempfile::tempdir().unwrap();
    let mb = manager(b.path(), t2);
    assert_eq!(mb.restore_log("late", &mut |_| {}).unwrap().end_seq, end);
}

/// A manager with `t2` and a log "parts" whose 16 MiB segments go up in parts (buffered, zstd
/// level 1, so incompressible payloads keep the objects large).
fn multipart_log(root: &std::path::Path, t2: Tier2Config) -> (AofManager, aof2::Aof) {
    let mut config = ManagerConfig::new(root);
    config.tier2 = Some(t2);
    config.compression = aof2::Compression::Fixed(1);
    let m = AofManager::open(config).unwrap();
    let log = m
        .open_log(
            "parts",
            LogConfig {
                durability: Durability::None,
                ..LogConfig::default().with_segment_bytes(16 << 20)
            },
        )
        .unwrap();
    (m, log)
}

/// A multipart upload whose requests each answer within the request time limit, but which
/// together take longer than the upload's time limit (a slow store): the attempt is cut off. The
/// abandoned upload used to stay incomplete in the bucket (parts S3 keeps and bills until someone
/// aborts the upload); it is aborted now (or, given the time, finished).
#[test]
fn fault_a_multipart_upload_cut_off_by_its_time_limit_is_aborted() {
    let Some((server, _, mut t2)) = fault_bucket("multipart-abort") else {
        return;
    };
    // Two parts (8 MiB and 4.8 MiB): the upload's time limit was two requests' worth.
    t2.multipart_threshold = 8 << 20;
    t2.part_bytes = 8 << 20;
    t2.request_timeout = Duration::from_secs(4);
    t2.breaker_failures = 1000;
    let dir = tempfile::tempdir().unwrap();
    let (m, log) = multipart_log(dir.path(), t2);
    // Every request of the upload answers after 3 s: create, the two parts side by side,
    // complete take 9 s, each within its 4 s.
    server.faults().only_paths_containing(".t1");
    server.faults().latency(Duration::from_secs(3));
    let payloads = incompressible(200, 64 << 10);
    for p in &payloads {
        log.append(p).unwrap();
    }
    assert!(log.seal().unwrap());
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = m.tier_stats().tier2.unwrap();
        if stats.request_failures > 0 || stats.segments_uploaded > 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    server.faults().clear();
    assert!(m.wait_for_tier2(&log, WAIT));
    assert_eq!(
        server.incomplete_multipart_uploads(),
        0,
        "an upload cut off by its time limit was left incomplete"
    );

    m.evict_tier0(&log).unwrap();
    assert!(m.evict_tier1(&log).unwrap() > 0);
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payloads[i].as_slice(), "seq {i}");
    }
}

/// A part held by the server past the request time limit fails the attempt: the upload is
/// aborted, the retry uploads the object, and the held part landing late adds nothing.
#[test]
fn fault_a_multipart_upload_with_a_part_that_timed_out_is_aborted() {
    let Some((server, _, mut t2)) = fault_bucket("multipart-held") else {
        return;
    };
    t2.multipart_threshold = 5 << 20;
    t2.part_bytes = 5 << 20;
    t2.request_timeout = Duration::from_secs(2);
    t2.breaker_failures = 1000;
    let dir = tempfile::tempdir().unwrap();
    let (m, log) = multipart_log(dir.path(), t2);
    server.faults().only_methods(&["PUT"]);
    server.faults().only_paths_containing(".t1");
    server.faults().hold_next(1);
    let payloads = incompressible(200, 64 << 10);
    for p in &payloads {
        log.append(p).unwrap();
    }
    assert!(log.seal().unwrap());
    assert!(m.wait_for_tier2(&log, WAIT));
    assert_eq!(server.faults().held_requests(), 1);
    let stats = m.tier_stats().tier2.unwrap();
    assert!(stats.request_failures >= 1, "{stats:?}");
    assert_eq!(server.incomplete_multipart_uploads(), 0);
    assert_eq!(server.faults().release_held(), 1);
    assert_eq!(server.incomplete_multipart_uploads(), 0);
    m.evict_tier0(&log).unwrap();
    assert!(m.evict_tier1(&log).unwrap() > 0);
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payloads[i].as_slice(), "seq {i}");
    }
}

/// Segment objects of log `name` whose segment id is below `first_live`.
fn objects_below(server: &S3Server, bucket: &str, name: &str, first_live: u64) -> Vec<String> {
    server
        .list_keys(bucket, &format!("aof2/logs/{name}/"))
        .into_iter()
        .filter(|k| k.ends_with(".t1"))
        .filter(|k| {
            let id = k.rsplit('/').next().and_then(|n| n.get(..16)).unwrap();
            u64::from_str_radix(id, 16).unwrap() < first_live
        })
        .collect()
}

/// Retention removes a segment whose upload is in flight: the upload finishes, finds the segment
/// gone and records nothing. Its object used to stay in the store until the log's next open
/// (for a process that runs for months, months of storage no catalog lists); it is deleted at
/// once now.
#[test]
fn fault_an_upload_that_finishes_after_retention_removed_its_segment_deletes_its_object() {
    let Some((server, target, mut t2)) = fault_bucket("retire-race") else {
        return;
    };
    t2.breaker_failures = 1000;
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), t2);
    let log = m.open_log("race", log_config()).unwrap();
    // Segment uploads reach the server and get no answer until released.
    server.faults().only_methods(&["PUT"]);
    server.faults().only_paths_containing(".t1");
    server.faults().hang(true);
    append_all(&log, 0..800);
    let deadline = Instant::now() + WAIT;
    while server.faults().injected() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(server.faults().injected() > 0, "an upload is in flight");
    let first = log.truncate_before(sealed_end(&m, &log)).unwrap();
    assert!(first > 0, "retention removed the segment being uploaded");
    let first_live = m.log_info(&log).segments[0].id;
    server.faults().hang(false);

    assert!(m.wait_for_tier2(&log, WAIT));
    let deadline = Instant::now() + WAIT;
    while m.tier_stats().tier2.unwrap().upload_backlog > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(m.tier_stats().tier2.unwrap().upload_backlog, 0);
    assert_eq!(
        objects_below(&server, target.bucket_name(), "race", first_live),
        Vec::<String>::new(),
        "objects of retired segments"
    );
    assert_eq!(log.read(first).unwrap().payload(), payload(first));
}

/// A restore downloads segments into Tier 1 while its budget has room and leaves the others in
/// Tier 2 only. Those were not looked at: a restore reported success for a log whose newest
/// segment's object was gone (its reads failed later with `NotFound`). Each one is checked now
/// (one HEAD: there, with its recorded length and, where the store keeps it, checksum).
#[test]
fn restore_checks_the_objects_it_leaves_in_tier2() {
    let (server, target, t2) = bucket("restore-check");
    let a = tempfile::tempdir().unwrap();
    write_log(a.path(), &t2, "audit", 2500);
    let keys: Vec<String> = server
        .list_keys(target.bucket_name(), "aof2/logs/audit/")
        .into_iter()
        .filter(|k| k.ends_with(".t1"))
        .collect();
    assert!(keys.len() >= 3, "{keys:?}");
    let restore_into = |root: &std::path::Path| {
        let mut config = ManagerConfig::new(root);
        config.tier0_max_bytes = 16 * SEGMENT;
        config.tier1_max_bytes = 0; // nothing is downloaded: every object stays in Tier 2 only
        config.tier2 = Some(t2.clone());
        AofManager::open(config)
            .unwrap()
            .restore_log("audit", &mut |_| {})
    };
    // Cut short: Corruption naming the object.
    let newest = keys.last().unwrap().clone();
    let bytes = server.object_bytes(target.bucket_name(), &newest).unwrap();
    server.put_object(
        target.bucket_name(),
        &newest,
        bytes[..bytes.len() - 1].to_vec(),
    );
    let b = tempfile::tempdir().unwrap();
    let e = restore_into(b.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(e.to_string().contains(&newest), "{e}");
    // Gone while the newest catalog lists it: the store lost it, Corruption naming it.
    server.delete_object(target.bucket_name(), &newest);
    let e = restore_into(b.path()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(e.to_string().contains(&newest), "{e}");
    // Back in place: the restore goes through.
    server.put_object(target.bucket_name(), &newest, bytes);
    let report = restore_into(b.path()).unwrap();
    assert_eq!(report.segments_downloaded, 0);
    assert_eq!(report.segments, keys.len() as u64);
}

/// An object of a live segment under a key other than its recorded copy's: what an upload leaves
/// when a crash keeps it from being recorded and the segment is compressed again into other
/// bytes after the restart. No catalog lists it and nothing deleted it, ever; the open-time
/// sweep does now (and keeps the recorded copy).
#[test]
fn the_open_sweep_deletes_an_unrecorded_object_of_a_live_segment() {
    let (server, target, t2) = bucket("orphan");
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &t2, "kept", 1500);
    let objects = || -> Vec<String> {
        server
            .list_keys(target.bucket_name(), "aof2/logs/kept/")
            .into_iter()
            .filter(|k| k.ends_with(".t1"))
            .collect()
    };
    let recorded = objects();
    let first = recorded[0].clone();
    let (stem, _) = first.rsplit_once('-').unwrap();
    let orphan = format!("{stem}-00000000.t1");
    assert!(!recorded.contains(&orphan));
    let bytes = server.object_bytes(target.bucket_name(), &first).unwrap();
    server.put_object(target.bucket_name(), &orphan, bytes);

    let m = manager(dir.path(), t2);
    let log = m.open_log("kept", log_config()).unwrap();
    let deadline = Instant::now() + WAIT;
    while objects().contains(&orphan) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let now = objects();
    assert!(!now.contains(&orphan), "{now:?}");
    for key in &recorded {
        assert!(now.contains(key), "recorded copy {key} kept: {now:?}");
    }
    m.evict_tier0(&log).unwrap();
    m.evict_tier1(&log).unwrap();
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), payload(i as u64));
    }
}

/// An open of a log while it is being restored waits for the restore, then opens the restored
/// log. It used to run beside it: it created a new, empty log in the directory the restore then
/// replaced (here its claim failed with `Fenced`; with the claim put off by an unreachable
/// store, its acknowledged appends would have vanished with the directory).
#[test]
fn an_open_during_a_restore_waits_for_it() {
    let (_server, _, t2) = bucket("restore-open");
    let a = tempfile::tempdir().unwrap();
    write_log(a.path(), &t2, "events", 2500);
    let b = tempfile::tempdir().unwrap();
    let mut take_over = t2.clone();
    take_over.take_over = true;
    let m = manager(b.path(), take_over);
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (opened_tx, opened_rx) = std::sync::mpsc::channel::<()>();
    let m = &m;
    std::thread::scope(|s| {
        let restore = s.spawn(move || {
            let mut first = true;
            m.restore_log("events", &mut move |_| {
                if std::mem::take(&mut first) {
                    started_tx.send(()).unwrap();
                    // Give the open every chance to run beside the restore (it must wait).
                    let _ = opened_rx.recv_timeout(Duration::from_secs(2));
                }
            })
        });
        started_rx.recv().unwrap();
        let log = m.open_log("events", log_config());
        let _ = opened_tx.send(());
        let report = restore.join().unwrap().unwrap();
        let log = log.expect("the open waits for the restore, then opens the restored log");
        assert_eq!(log.next_seq(), report.end_seq);
        let seq = log.append(b"after the restore").unwrap();
        assert_eq!(seq, report.end_seq);
        assert_eq!(log.read(0).unwrap().payload(), payload(0));
    });
}

/// Closing the manager while the store holds requests without answering gives them up: the
/// close used to wait out each one's time limit (here 120 s) in the upload workers.
#[test]
fn fault_manager_close_gives_up_requests_a_hung_store_holds() {
    let Some((server, _, mut t2)) = fault_bucket("hung-close") else {
        return;
    };
    t2.request_timeout = Duration::from_secs(120);
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), t2);
    let log = m.open_log("hung", log_config()).unwrap();
    server.faults().hang(true);
    append_all(&log, 0..600);
    log.seal().unwrap();
    let deadline = Instant::now() + WAIT;
    while server.faults().injected() == 0 {
        assert!(Instant::now() < deadline, "no upload reached the store");
        std::thread::sleep(Duration::from_millis(5));
    }
    let started = Instant::now();
    m.close().unwrap();
    let took = started.elapsed();
    server.faults().hang(false);
    assert!(
        took < Duration::from_secs(60),
        "the close waited {took:?} for requests the store never answered"
    );
}

/// Wait until the store has applied a fault to some request.
fn wait_for_a_fault(server: &S3Server) {
    let deadline = Instant::now() + WAIT;
    while server.faults().injected() == 0 {
        assert!(Instant::now() < deadline, "no request met the fault");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A log `name` whose first 600 records are in Tier 2, listed by its catalog; then `fault` is
/// set for catalog PUTs and one more segment (records 600..610, one upload) sealed. Returns
/// once a catalog PUT met the fault.
fn seal_with_catalog_puts_faulted(
    server: &S3Server,
    t2: &Tier2Config,
    root: &std::path::Path,
    name: &str,
    fault: impl FnOnce(&support::s3::Faults),
) -> (AofManager, aof2::Aof) {
    let m = manager(root, t2.clone());
    let log = m.open_log(name, log_config()).unwrap();
    append_all(&log, 0..600);
    log.seal().unwrap();
    assert!(m.wait_for_tier2(&log, WAIT));
    server.faults().only_methods(&["PUT"]);
    server.faults().only_paths_containing("/catalog/");
    fault(server.faults());
    append_all(&log, 600..610);
    log.seal().unwrap();
    wait_for_a_fault(server);
    (m, log)
}

/// `wait_for_tier2` is true only once the catalog listing every upload is in the store. It used
/// to return while the catalog PUT was still on its way: the flag it looked at was cleared when
/// the catalog was built, before the PUT.
#[test]
fn fault_wait_for_tier2_waits_for_the_catalog_put() {
    let Some((server, _, mut t2)) = fault_bucket("wait-catalog") else {
        return;
    };
    t2.request_timeout = Duration::from_secs(60);
    let dir = tempfile::tempdir().unwrap();
    // The catalog PUT listing the last segment hangs.
    let (m, log) =
        seal_with_catalog_puts_faulted(&server, &t2, dir.path(), "waited", |f| f.hang(true));
    assert!(
        !m.wait_for_tier2(&log, Duration::from_millis(300)),
        "the catalog listing the last segment is not in the store yet"
    );
    server.faults().hang(false);
    assert!(m.wait_for_tier2(&log, WAIT));
    let end = sealed_end(&m, &log);
    assert_eq!(end, 610);
    assert_eq!(RemoteReader::open(t2, "waited").unwrap().end_seq(), end);
}

/// A catalog publication that fails (the store refuses catalog PUTs for a while) is retried
/// by itself. It used to wait for the log's next upload: a log that uploaded nothing more kept
/// an old catalog, so restores and remote readers missed its newest segments until a reopen.
#[test]
fn fault_a_failed_catalog_publication_is_retried_without_another_upload() {
    let Some((server, _, t2)) = fault_bucket("retry-catalog") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (m, log) =
        seal_with_catalog_puts_faulted(&server, &t2, dir.path(), "quiet", |f| f.outage(true));
    assert!(!m.wait_for_tier2(&log, Duration::from_millis(300)));
    let end = sealed_end(&m, &log);
    assert!(RemoteReader::open(t2.clone(), "quiet").unwrap().end_seq() < end);

    // The log writes nothing more; the catalog still catches up once the store takes it.
    server.faults().outage(false);
    assert!(
        m.wait_for_tier2(&log, WAIT),
        "the catalog is published again"
    );
    assert_eq!(
        RemoteReader::open(t2.clone(), "quiet").unwrap().end_seq(),
        end
    );
    let b = tempfile::tempdir().unwrap();
    let mut take_over = t2;
    take_over.take_over = true;
    let mb = manager(b.path(), take_over);
    assert_eq!(mb.restore_log("quiet", &mut |_| {}).unwrap().end_seq, end);
}

/// A remote reader's refresh follows its log, and refuses to switch to another log created
/// under the same name (it used to switch silently: sequence numbers started again at 0 under
/// the reader, with other records).
#[test]
fn remote_reader_refresh_follows_its_log_and_refuses_a_replacement() {
    let (server, target, t2) = bucket("refresh");
    let a = tempfile::tempdir().unwrap();
    let ma = manager(a.path(), t2.clone());
    let la = ma.open_log("feed", log_config()).unwrap();
    append_all(&la, 0..300);
    la.seal().unwrap();
    assert!(ma.wait_for_tier2(&la, WAIT));
    let reader = RemoteReader::open(t2.clone(), "feed").unwrap();
    assert_eq!(reader.end_seq(), 300);
    append_all(&la, 300..500);
    la.seal().unwrap();
    assert!(ma.wait_for_tier2(&la, WAIT));
    assert_eq!(reader.refresh().unwrap(), 500);
    assert_eq!(reader.read(450).unwrap().payload(), payload(450));
    la.close().unwrap();
    ma.close().unwrap();

    // The log is deleted from the store, and another root creates a new log of that name.
    for key in server.list_keys(target.bucket_name(), "aof2/logs/feed/") {
        server.delete_object(target.bucket_name(), &key);
    }
    let b = tempfile::tempdir().unwrap();
    let mb = manager(b.path(), t2.clone());
    let lb = mb.open_log("feed", log_config()).unwrap();
    lb.append(b"a different log").unwrap();
    lb.seal().unwrap();
    assert!(mb.wait_for_tier2(&lb, WAIT));
    assert_eq!(RemoteReader::open(t2, "feed").unwrap().end_seq(), 1);

    let err = reader.refresh().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("another log"), "{err}");
    // The reader still serves the log it opened.
    assert_eq!(reader.end_seq(), 500);
    assert_eq!(reader.read(450).unwrap().payload(), payload(450));
}

// ------------------------------------------------------------------ a store that refuses aof2

fn manager_config(root: &std::path::Path, t2: Tier2Config) -> ManagerConfig {
    let mut config = ManagerConfig::new(root);
    config.tier0_max_bytes = 16 * SEGMENT;
    config.tier1_frame_bytes = 16 << 10;
    config.compress_threads = 1;
    config.tier2 = Some(t2);
    config
}

/// A Tier 2 URL naming a bucket that does not exist fails `AofManager::open`, a restore and a
/// remote reader at once with `Tier2Misconfigured` (`InvalidInput`), naming the bucket and the
/// endpoint and saying what to fix. It used to be taken for an outage: the manager opened, the
/// claim was "deferred", and the log never uploaded, with "Tier 2 unavailable" as the only
/// sign. A store that is down at open still opens (uploads catch up), and a missing object in
/// an existing bucket is still "not found".
#[test]
fn a_missing_bucket_fails_the_open_with_what_to_fix() {
    let server = S3Server::start();
    let name = unique_bucket("never-created");
    let missing = server.missing_bucket(&name);
    let dir = tempfile::tempdir().unwrap();
    let t2 = tier2_config(&missing);
    let err = AofManager::open(manager_config(&dir.path().join("root"), t2.clone()))
        .expect_err("a missing bucket fails the open");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(
        matches!(err, aof2::Error::Tier2Misconfigured { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    for part in [
        name.as_str(),
        "does not exist",
        "NoSuchBucket",
        &server.endpoint(),
        "create it",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    let err = RemoteReader::open(t2.clone(), "orders").unwrap_err();
    assert!(
        matches!(err, aof2::Error::Tier2Misconfigured { .. }),
        "{err:?}"
    );

    // In a bucket that exists, a log that is not there is "not found", not a misconfiguration.
    let target = server.bucket(&unique_bucket("exists"));
    let err = RemoteReader::open(tier2_config(&target), "orders").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let m = manager(&dir.path().join("root"), tier2_config(&target));
    let restore = m.restore_log("orders", &mut |_| {}).unwrap_err();
    assert_eq!(restore.kind(), ErrorKind::NotFound, "{restore}");
    assert!(m.tier_stats().tier2.unwrap().problem.is_none());
    m.close().unwrap();
}

/// Credentials the store rejects (a wrong secret key: `403 SignatureDoesNotMatch`) fail the open
/// with `Tier2Misconfigured` saying to check the credentials; they used to be taken for an outage.
#[test]
fn fault_rejected_credentials_fail_the_open_with_what_to_fix() {
    let server = S3Server::start();
    if server.external() {
        eprintln!("skipped: the external S3 server (moto) does not check credentials");
        return;
    }
    let name = unique_bucket("bad-secret");
    server.bucket(&name);
    let wrong = server.target_with_secret(&name, "not-the-secret");
    let dir = tempfile::tempdir().unwrap();
    let err = AofManager::open(manager_config(dir.path(), tier2_config(&wrong)))
        .expect_err("rejected credentials fail the open");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let message = err.to_string();
    for part in [
        "credentials rejected",
        "SignatureDoesNotMatch",
        &server.endpoint(),
        "secret key",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    // No retries: one request, answered at once.
    assert_eq!(server.faults().requests(), 1);
}

/// A store down when the manager opens (503s, then a store that does not answer) is an outage,
/// not a misconfiguration: the manager and the log open, appends work, and the uploads catch
/// up once it is back; no problem is reported.
#[test]
fn fault_a_store_down_at_open_is_not_a_misconfiguration() {
    let server = S3Server::start();
    if server.external() {
        return;
    }
    let target = server.bucket(&unique_bucket("down-at-open"));
    let dir = tempfile::tempdir().unwrap();
    for (round, hang) in [(0u64, false), (1, true)] {
        if hang {
            server.faults().hang(true);
        } else {
            server.faults().outage(true);
        }
        let started = Instant::now();
        let m = manager(dir.path(), tier2_config(&target));
        let log = m.open_log("down", log_config()).unwrap();
        assert!(started.elapsed() < Duration::from_secs(15), "open waited");
        append_all(&log, round * 300..round * 300 + 300);
        let stats = m.tier_stats().tier2.unwrap();
        assert_eq!(stats.problem, None, "{stats:?}");
        server.faults().clear();
        assert!(m.wait_for_tier2(&log, WAIT), "uploads catch up");
        log.close().unwrap();
        m.close().unwrap();
    }
}

/// Runs `log` into a store that starts refusing aof2 (`refuse`), checks that appends go on,
/// that the refusal shows in the Tier 2 stats without being asked again and again, then
/// `accept`s again and checks the uploads catch up. With `objects_survive` (the refusal leaves
/// the bucket's objects), a read that needs Tier 2 is checked too.
fn refusal_while_running(
    server: &S3Server,
    target: &Tier2Target,
    refuse: impl FnOnce(),
    expected: &str,
    accept: impl FnOnce(),
    objects_survive: bool,
) {
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), tier2_config(target));
    let log = m.open_log("refused", log_config()).unwrap();
    append_all(&log, 0..300);
    assert!(m.wait_for_tier2(&log, WAIT));

    refuse();
    // Appends go on (Tier 0 and Tier 1 hold them); sealed segments wait for their upload.
    append_all(&log, 300..1500);
    let deadline = Instant::now() + WAIT;
    let stats = loop {
        let stats = m.tier_stats().tier2.unwrap();
        if stats.problem.is_some() && stats.breaker == "open" {
            break stats;
        }
        assert!(Instant::now() < deadline, "no problem reported: {stats:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    let problem = stats.problem.clone().unwrap();
    assert!(problem.contains(expected), "{problem}");
    assert!(stats.upload_backlog > 0, "{stats:?}");
    // Backing off as for an outage: the breaker lets a probe through now and then (about 3 in
    // 2 s from 200 ms doubling), not a request per upload and retry (about 50 in 2 s before).
    let requests = server.faults().requests();
    std::thread::sleep(Duration::from_secs(2));
    let asked = server.faults().requests() - requests;
    assert!(
        asked <= 10,
        "{asked} requests in 2 s while the store refuses aof2"
    );
    assert_eq!(log.read(1499).unwrap().payload(), payload(1499));
    if objects_survive {
        // A read that needs Tier 2 says why it cannot, with what to fix.
        m.evict_tier0(&log).unwrap();
        assert!(m.evict_tier1(&log).unwrap() > 0);
        let e = log.read(0).unwrap_err();
        assert!(matches!(e, aof2::Error::Tier2Misconfigured { .. }), "{e:?}");
        assert!(e.to_string().contains(expected), "{e}");
    }

    accept();
    assert!(
        m.wait_for_tier2(&log, WAIT),
        "uploads catch up once it is fixed"
    );
    let stats = m.tier_stats().tier2.unwrap();
    assert_eq!(stats.problem, None, "{stats:?}");
    assert_eq!(log.read(0).unwrap().payload(), payload(0));
    log.close().unwrap();
    m.close().unwrap();
}

/// Credentials withdrawn while the manager runs (`403 InvalidAccessKeyId`): appends go on, the
/// Tier 2 stats say the store rejects the credentials, requests back off, and once the key works
/// again the uploads catch up. They used to show only as "unavailable" (after five retries of
/// every request).
#[test]
fn fault_credentials_revoked_while_running_are_reported_and_uploads_resume() {
    let server = S3Server::start();
    if server.external() {
        eprintln!("skipped: the external S3 server (moto) does not check credentials");
        return;
    }
    let target = server.bucket(&unique_bucket("revoked"));
    refusal_while_running(
        &server,
        &target,
        || server.revoke_credentials(true),
        "credentials rejected by the store",
        || server.revoke_credentials(false),
        true,
    );
}

/// The bucket deleted while the manager runs: appends go on, the Tier 2 stats say the bucket
/// does not exist, and once it is created again the uploads catch up.
#[test]
fn fault_a_bucket_removed_while_running_is_reported_and_uploads_resume() {
    let server = S3Server::start();
    if server.external() {
        eprintln!("skipped: buckets are removed from the in-process S3 server only");
        return;
    }
    let name = unique_bucket("removed");
    let target = server.bucket(&name);
    refusal_while_running(
        &server,
        &target,
        || server.remove_bucket(&name),
        "does not exist",
        || {
            server.bucket(&name);
        },
        false,
    );
}

/// A log opened after its bucket was deleted (the manager opened before): the open fails with
/// `Tier2Misconfigured` rather than opening with its claim "deferred" forever.
#[test]
fn fault_a_log_opened_after_its_bucket_was_removed_fails() {
    let server = S3Server::start();
    if server.external() {
        eprintln!("skipped: buckets are removed from the in-process S3 server only");
        return;
    }
    let name = unique_bucket("gone");
    let target = server.bucket(&name);
    let dir = tempfile::tempdir().unwrap();
    let m = manager(dir.path(), tier2_config(&target));
    server.remove_bucket(&name);
    let err = m.open_log("orders", log_config()).unwrap_err();
    assert!(
        matches!(err, aof2::Error::Tier2Misconfigured { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("does not exist"), "{err}");
    m.close().unwrap();
}

// ------------------------------------------------------------------ whole-object downloads
//
// A restore and a fetch back into Tier 1 stream each object into `<id>.t1.tmp` through a buffer
// of `limits::DOWNLOAD_CHUNK_BYTES` (1 MiB), checking its CRC on the way. These logs have
// segments of a few MiB of incompressible records, so every object spans several buffers and
// ends inside one.

const BIG_SEGMENT: u64 = 3 << 20;

/// Incompressible payloads of varied sizes (the first empty, most not multiples of 8).
fn big_payloads(count: usize) -> Vec<Vec<u8>> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..count)
        .map(|i| {
            let len = (i * 7919) % 41_000;
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect()
}

fn big_segment_manager(root: &std::path::Path, t2: Tier2Config) -> AofManager {
    let mut config = ManagerConfig::new(root);
    config.tier2 = Some(t2);
    config.compression = aof2::Compression::Fixed(1);
    config.compress_threads = 1;
    AofManager::open(config).unwrap()
}

fn big_log_config() -> LogConfig {
    LogConfig {
        durability: Durability::None,
        ..LogConfig::default().with_segment_bytes(BIG_SEGMENT)
    }
}

/// Write `payloads` to log `name` in `root`, seal it and wait until Tier 2 holds every record.
fn write_big_log(root: &std::path::Path, t2: &Tier2Config, name: &str, payloads: &[Vec<u8>]) {
    let m = big_segment_manager(root, t2.clone());
    let log = m.open_log(name, big_log_config()).unwrap();
    for chunk in payloads.chunks(64) {
        log.append_batch(chunk).unwrap();
    }
    log.seal().unwrap();
    assert!(m.wait_for_tier2(&log, WAIT), "uploads finish");
    m.close().unwrap();
}

/// The log's segment objects under `prefix` (the bucket-relative prefix of its Tier 2 URL, "" or
/// ending in '/'), by segment id.
fn segment_objects(
    server: &S3Server,
    target: &Tier2Target,
    prefix: &str,
    name: &str,
) -> std::collections::BTreeMap<u64, (String, Vec<u8>)> {
    server
        .list_keys(target.bucket_name(), &format!("{prefix}aof2/logs/{name}/"))
        .into_iter()
        .filter(|k| k.ends_with(".t1"))
        .map(|key| {
            let file = key.rsplit('/').next().unwrap();
            let id = u64::from_str_radix(&file[..16], 16).unwrap();
            let bytes = server.object_bytes(target.bucket_name(), &key).unwrap();
            (id, (key, bytes))
        })
        .collect()
}

/// Files under `dir` whose names end in `.tmp`.
fn tmp_files(dir: &std::path::Path) -> Vec<String> {
    walk_keys(dir)
        .into_iter()
        .filter(|k| k.ends_with(".tmp"))
        .collect()
}

/// The restored log's Tier 1 files are the objects, byte for byte, and its records the payloads.
fn check_restored(
    m: &AofManager,
    root: &std::path::Path,
    name: &str,
    objects: &std::collections::BTreeMap<u64, (String, Vec<u8>)>,
    payloads: &[Vec<u8>],
) {
    let tier1 = root.join("logs").join(name).join("tier1");
    for (id, (key, bytes)) in objects {
        let local = std::fs::read(tier1.join(format!("{id:016x}.t1"))).unwrap();
        assert!(local == *bytes, "the Tier 1 file of {key} differs from it");
    }
    let log = m.open_log(name, big_log_config()).unwrap();
    assert_eq!(log.next_seq(), payloads.len() as u64);
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), &payloads[i][..], "seq {i}");
    }
    assert!(m.verify_log(&log).problems.is_empty());
    assert_eq!(tmp_files(root), Vec::<String>::new());
}

/// A restore of a log whose objects are several download buffers long brings every object back
/// byte for byte, and every record with it.
#[test]
fn restore_of_objects_larger_than_the_download_buffer_is_byte_for_byte() {
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("stream-restore"));
    let t2 = tier2_config(&target.with_prefix("big"));
    let payloads = big_payloads(450);
    let a = tempfile::tempdir().unwrap();
    write_big_log(a.path(), &t2, "big", &payloads);
    let objects = segment_objects(&server, &target, "big/", "big");
    assert!(objects.len() >= 2, "{} objects", objects.len());
    for (key, bytes) in objects.values() {
        assert!(bytes.len() > 1 << 20, "{key}: {} bytes", bytes.len());
        assert_ne!(bytes.len() % (1 << 20), 0, "{key} ends inside a buffer");
    }

    let b = tempfile::tempdir().unwrap();
    let mut take_over = t2.clone();
    take_over.take_over = true;
    let m = big_segment_manager(b.path(), take_over);
    let report = m.restore_log("big", &mut |_| {}).unwrap();
    assert_eq!(report.segments_downloaded, objects.len() as u64);
    let total: usize = objects.values().map(|(_, bytes)| bytes.len()).sum();
    assert_eq!(report.bytes_downloaded, total as u64);
    check_restored(&m, b.path(), "big", &objects, &payloads);
}

/// Downloads cut off mid-transfer (the status and part of the body arrived, then the connection
/// closed) are retried from the start, and the restore completes with every byte.
#[test]
fn fault_downloads_cut_off_mid_stream_are_retried_and_complete() {
    let Some((server, target, t2)) = fault_bucket("stream-cut") else {
        return;
    };
    let payloads = big_payloads(450);
    let a = tempfile::tempdir().unwrap();
    write_big_log(a.path(), &t2, "cut", &payloads);
    let objects = segment_objects(&server, &target, "", "cut");
    assert!(objects.len() >= 2, "{} objects", objects.len());

    let b = tempfile::tempdir().unwrap();
    let mut take_over = t2.clone();
    take_over.take_over = true;
    // The breaker stays closed through the failures of one download.
    take_over.breaker_failures = 10;
    let m = big_segment_manager(b.path(), take_over);
    let faults = server.faults();
    faults.only_methods(&["GET"]);
    faults.only_uris_containing(".t1");
    // Past the first buffer: a part of the object is in the file when the connection closes.
    faults.cut_next_bodies(3, (1 << 20) + 4321);
    faults.reset_counters();
    let report = m.restore_log("cut", &mut |_| {}).unwrap();
    assert_eq!(faults.injected(), 3);
    assert_eq!(report.segments_downloaded, objects.len() as u64);
    let stats = m.tier_stats().tier2.unwrap();
    assert!(stats.retries >= 3, "{stats:?}");
    assert_eq!(stats.breaker, "closed", "{stats:?}");
    faults.clear();
    check_restored(&m, b.path(), "cut", &objects, &payloads);
}

/// Connections dropped before any answer while objects are fetched back into Tier 1 (a log read
/// from Tier 2 repeatedly) are retried, and the fetches complete.
#[test]
fn fault_dropped_connections_during_fetches_into_tier1_are_retried() {
    let Some((server, _, mut t2)) = fault_bucket("stream-fetch") else {
        return;
    };
    t2.breaker_failures = 20;
    let payloads = big_payloads(450);
    let dir = tempfile::tempdir().unwrap();
    write_big_log(dir.path(), &t2, "fetch", &payloads);
    let m = big_segment_manager(dir.path(), t2);
    let log = m.open_log("fetch", big_log_config()).unwrap();
    m.evict_tier0(&log).unwrap();
    assert!(m.evict_tier1(&log).unwrap() > 0);
    let faults = server.faults();
    faults.seed(7);
    faults.only_methods(&["GET"]);
    faults.only_uris_containing(".t1");
    faults.drop_connections(0.3);
    let in_tier1 = |m: &AofManager| {
        m.log_info(&log)
            .segments
            .iter()
            .filter(|s| s.tier1_bytes > 0)
            .count()
    };
    let sealed = sealed_segments(&m, &log).len();
    let deadline = Instant::now() + WAIT;
    while in_tier1(&m) < sealed {
        assert!(Instant::now() < deadline, "fetches finish");
        // Reads retry too: some of their ranged GETs are dropped (and retried) as well.
        for (i, r) in log.reader(0).enumerate() {
            assert_eq!(r.unwrap().payload(), &payloads[i][..], "seq {i}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(faults.injected() > 0);
    faults.clear();
    assert!(m.tier_stats().tier2.unwrap().fetches >= sealed as u64);
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), &payloads[i][..], "seq {i}");
    }
    assert!(m.verify_log(&log).problems.is_empty());
    assert_eq!(tmp_files(dir.path()), Vec::<String>::new());
}

/// An object damaged in its middle (one flipped byte, its length intact): a restore refuses it
/// with `Corruption` naming its key, and so does a fetch into Tier 1; neither leaves a
/// temporary file behind.
#[test]
fn fault_a_damaged_object_is_corruption_and_leaves_no_temporary_file() {
    let Some((server, target, t2)) = fault_bucket("stream-damaged") else {
        return;
    };
    let payloads = big_payloads(450);
    let a = tempfile::tempdir().unwrap();
    write_big_log(a.path(), &t2, "damaged", &payloads);
    let objects = segment_objects(&server, &target, "", "damaged");
    let (first, (key, bytes)) = objects.iter().next().unwrap();
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    server.put_object(target.bucket_name(), key, damaged);

    // Restore.
    let b = tempfile::tempdir().unwrap();
    let mut take_over = t2.clone();
    take_over.take_over = true;
    let m = big_segment_manager(b.path(), take_over);
    let e = m.restore_log("damaged", &mut |_| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(e.to_string().contains(key.as_str()), "{e}");
    assert_eq!(tmp_files(b.path()), Vec::<String>::new());
    assert_eq!(m.tier_stats().tier2.unwrap().breaker, "closed");
    drop(m);

    // Fetch into Tier 1 of the writer's copy, read from Tier 2 only.
    let m = big_segment_manager(a.path(), t2);
    let log = m.open_log("damaged", big_log_config()).unwrap();
    m.evict_tier0(&log).unwrap();
    assert!(m.evict_tier1(&log).unwrap() > 0);
    let segment = sealed_segments(&m, &log)
        .into_iter()
        .find(|s| s.id == *first)
        .unwrap();
    let faults = server.faults();
    faults.reset_counters();
    // Reads of the segment's frames (ranged GETs) until one whole-object GET, the fetch, went out.
    let deadline = Instant::now() + WAIT;
    while faults.requests_with_method("GET") == faults.ranged_gets() {
        assert!(Instant::now() < deadline, "no fetch of the damaged object");
        for seq in segment.base_seq..segment.end_seq {
            let _ = log.read(seq);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let tier1 = a.path().join("logs").join("damaged");
    let deadline = Instant::now() + WAIT;
    while !tmp_files(&tier1).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", tmp_files(&tier1));
        std::thread::sleep(Duration::from_millis(10));
    }
    let info = m.log_info(&log);
    let after = info.segments.iter().find(|s| s.id == *first).unwrap();
    assert_eq!(after.tier1_bytes, 0, "{after:?}");
    assert_eq!(m.tier_stats().tier2.unwrap().fetches, 0);
}

/// A fetch into Tier 1 whose transfer stalls mid-stream (the store sent part of the object and
/// then nothing more): once nothing arrives for a request's time limit, the attempt is given up
/// and retried, and the fetch completes; no temporary file is left behind.
#[test]
fn fault_a_fetch_stalled_mid_stream_times_out_and_is_retried() {
    let Some((server, _, mut t2)) = fault_bucket("stream-stall") else {
        return;
    };
    t2.request_timeout = Duration::from_secs(2);
    let payloads = big_payloads(450);
    let dir = tempfile::tempdir().unwrap();
    write_big_log(dir.path(), &t2, "stall", &payloads);
    let m = big_segment_manager(dir.path(), t2);
    let log = m.open_log("stall", big_log_config()).unwrap();
    m.evict_tier0(&log).unwrap();
    assert!(m.evict_tier1(&log).unwrap() > 0);
    let sealed = sealed_segments(&m, &log).len() as u64;
    let faults = server.faults();
    faults.only_methods(&["GET"]);
    faults.only_uris_containing(".t1");
    faults.skip_ranged_gets(true);
    faults.stall_next_bodies(1, (1 << 20) + 4321);
    faults.reset_counters();
    let before = m.tier_stats().tier2.unwrap();
    // Reads (ranged GETs, never stalled) until every segment was fetched back into Tier 1.
    let deadline = Instant::now() + WAIT;
    while m.tier_stats().tier2.unwrap().fetches < sealed {
        assert!(Instant::now() < deadline, "fetches finish");
        for (i, r) in log.reader(0).enumerate() {
            assert_eq!(r.unwrap().payload(), &payloads[i][..], "seq {i}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(faults.injected(), 1, "one whole-object GET stalled");
    let after = m.tier_stats().tier2.unwrap();
    assert!(after.retries > before.retries, "{after:?}");
    assert!(
        after.request_failures > before.request_failures,
        "{after:?}"
    );
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), &payloads[i][..], "seq {i}");
    }
    assert!(m.verify_log(&log).problems.is_empty());
    m.close().unwrap();
    assert_eq!(tmp_files(dir.path()), Vec::<String>::new());
}

/// A restore over a slow link: a segment object takes clearly longer than a request's time limit
/// to download, and well under the transfer's (one per `part_bytes` of the object). Each attempt
/// used to be cut off at a request's time limit, so the restore could never complete.
#[test]
fn fault_a_restore_over_a_slow_link_completes() {
    let Some((server, target, mut t2)) = fault_bucket("slow-link") else {
        return;
    };
    t2.part_bytes = 5 << 20;
    t2.multipart_threshold = 5 << 20;
    let log_config = || LogConfig {
        durability: Durability::None,
        ..LogConfig::default().with_segment_bytes(32 << 20)
    };
    // One segment of about 18 MB: its object is 4 parts long, its transfer's limit 4 s.
    let payloads = big_payloads(900);
    let a = tempfile::tempdir().unwrap();
    {
        let m = big_segment_manager(a.path(), t2.clone());
        let log = m.open_log("slow", log_config()).unwrap();
        for chunk in payloads.chunks(64) {
            log.append_batch(chunk).unwrap();
        }
        log.seal().unwrap();
        assert!(m.wait_for_tier2(&log, WAIT), "uploads finish");
        m.close().unwrap();
    }
    let objects = segment_objects(&server, &target, "", "slow");
    assert_eq!(objects.len(), 1, "{:?}", objects.keys());
    let (key, object) = objects.values().next().unwrap();
    assert!(
        object.len() > 3 * (5 << 20),
        "{key}: {} bytes",
        object.len()
    );

    let b = tempfile::tempdir().unwrap();
    let mut restore = t2.clone();
    restore.take_over = true;
    restore.request_timeout = Duration::from_secs(1);
    let m = big_segment_manager(b.path(), restore);
    let faults = server.faults();
    faults.only_methods(&["GET"]);
    faults.only_uris_containing(".t1");
    faults.skip_ranged_gets(true);
    // About 1.8 s for the object.
    faults.throttle_bodies(10 << 20);
    let started = Instant::now();
    let report = m.restore_log("slow", &mut |_| {}).unwrap();
    let took = started.elapsed();
    faults.clear();
    // The throttle holds the object back: the download did take longer than a request's limit.
    assert!(took > Duration::from_millis(1500), "{took:?}");
    assert_eq!(report.segments_downloaded, 1);
    assert_eq!(report.bytes_downloaded, object.len() as u64);
    let local = std::fs::read(
        b.path()
            .join("logs/slow/tier1")
            .join(format!("{:016x}.t1", objects.keys().next().unwrap())),
    )
    .unwrap();
    assert!(local == *object, "the Tier 1 file differs from {key}");
    let log = m.open_log("slow", log_config()).unwrap();
    assert_eq!(log.next_seq(), payloads.len() as u64);
    for (i, r) in log.reader(0).enumerate() {
        assert_eq!(r.unwrap().payload(), &payloads[i][..], "seq {i}");
    }
    assert!(m.verify_log(&log).problems.is_empty());
    m.close().unwrap();
    assert_eq!(tmp_files(b.path()), Vec::<String>::new());
}

/// Closing the manager while a fetch back into Tier 1 stalls mid-stream gives the fetch up. The
/// close used to wait for the log's fetch, which waited out its time limit and its retries
/// (here 120 s each).
#[test]
fn fault_manager_close_during_a_stalled_fetch() {
    let Some((server, _, mut t2)) = fault_bucket("stall-close") else {
        return;
    };
    t2.request_timeout = Duration::from_secs(120);
    let payloads = big_payloads(450);
    let dir = tempfile::tempdir().unwrap();
    write_big_log(dir.path(), &t2, "stall", &payloads);
    let m = big_segment_manager(dir.path(), t2);
    let log = m.open_log("stall", big_log_config()).unwrap();
    m.evict_tier0(&log).unwrap();
    assert!(m.evict_tier1(&log).unwrap() > 0);
    let faults = server.faults();
    faults.only_methods(&["GET"]);
    faults.only_uris_containing(".t1");
    faults.skip_ranged_gets(true);
    faults.stall_next_bodies(1, (1 << 20) + 4321);
    faults.reset_counters();
    // Read (ranged GETs, never stalled) until a fetch of a whole object stalls.
    let deadline = Instant::now() + WAIT;
    while faults.injected() == 0 {
        assert!(Instant::now() < deadline, "no fetch started");
        for (i, r) in log.reader(0).enumerate() {
            assert_eq!(r.unwrap().payload(), &payloads[i][..], "seq {i}");
        }
    }
    let started = Instant::now();
    m.close().unwrap();
    let took = started.elapsed();
    faults.clear();
    assert!(
        took < Duration::from_secs(60),
        "the close waited {took:?} for a stalled fetch"
    );
    assert_eq!(tmp_files(dir.path()), Vec::<String>::new());
}

/// Several logs compress at once under a Tier 1 budget of three segments, with Tier 2 taking
/// the copies, so compressions evict local copies Tier 2 holds to make room; then every log is
/// read over and over, so segments held only in Tier 2 are fetched back into Tier 1. Each
/// compression and each fetch reserves its room before it writes: Tier 1 files and reservations
/// never exceed the budget, and every record reads back byte for byte.
#[test]
fn parallel_compressions_and_fetches_stay_within_the_tier1_budget() {
    const LOGS: usize = 4;
    const RECORDS: usize = 300;
    let server = S3Server::start();
    let target = server.bucket(&unique_bucket("tier1-budget"));
    let dir = tempfile::tempdir().unwrap();
    let tier1_max = 3 * SEGMENT;
    let mut config = ManagerConfig::new(dir.path());
    config.tier0_max_bytes = 32 * SEGMENT;
    config.tier1_frame_bytes = 16 << 10;
    config.compress_threads = LOGS;
    config.tier1_max_bytes = tier1_max;
    // Appends wait for Tier 0 room while Tier 1 waits for uploads: generously, never refused.
    config.admission_timeout = WAIT;
    config.tier2 = Some(tier2_config(&target));
    let m = AofManager::open(config).unwrap();
    let logs: Vec<aof2::Aof> = (0..LOGS)
        .map(|i| {
            let config = LogConfig {
                durability: Durability::None,
                ..log_config()
            };
            m.open_log(&format!("log{i}"), config).unwrap()
        })
        .collect();
    // Incompressible, so a Tier 1 copy is as large as its segment: ~10 segments per log.
    let payloads: Vec<Vec<Vec<u8>>> = (0..LOGS)
        .map(|i| {
            let mut p = incompressible(RECORDS + i, 2000);
            p.drain(..i);
            p
        })
        .collect();
    std::thread::scope(|s| {
        for (log, payloads) in logs.iter().zip(&payloads) {
            s.spawn(move || {
                for chunk in payloads.chunks(10) {
                    log.append_batch(chunk).unwrap();
                }
            });
        }
    });
    for log in &logs {
        log.seal().unwrap();
        assert!(m.wait_for_tier2(log, WAIT), "{:?}", m.tier_stats());
    }
    let stats = m.tier_stats();
    let tier2 = stats.tier2.clone().unwrap();
    assert!(
        stats.segments_compressed >= 4 * (tier1_max / SEGMENT) && tier2.tier1_evictions > 0,
        "Tier 1 filled and was evicted to make room: {stats:?}"
    );
    assert!(
        stats.tier1_peak_bytes <= tier1_max,
        "Tier 1 reached {} bytes, over the budget of {tier1_max}: {stats:?}",
        stats.tier1_peak_bytes
    );

    // Only Tier 2 left: reads over and over bring segments back into Tier 1, within the budget.
    for log in &logs {
        m.evict_tier0(log).unwrap();
        m.evict_tier1(log).unwrap();
    }
    let deadline = Instant::now() + WAIT;
    while m.tier_stats().tier2.unwrap().fetches < 4 && Instant::now() < deadline {
        for (log, payloads) in logs.iter().zip(&payloads) {
            for (i, r) in log.reader(0).enumerate() {
                assert_eq!(r.unwrap().payload(), payloads[i].as_slice(), "seq {i}");
            }
        }
    }
    let stats = m.tier_stats();
    assert!(stats.tier2.clone().unwrap().fetches >= 4, "{stats:?}");
    assert!(
        stats.tier1_peak_bytes <= tier1_max && stats.tier1_used_bytes <= tier1_max,
        "{stats:?}"
    );
    for (log, payloads) in logs.iter().zip(&payloads) {
        let read: Vec<Vec<u8>> = log
            .reader(0)
            .map(|r| r.unwrap().payload().to_vec())
            .collect();
        assert!(read == *payloads, "every record reads back");
    }
    m.close().unwrap();
}

/// A restore that races its log's retention (the writer retires a segment the restore is about
/// to fetch, and deletes its object once a newer catalog stops listing it) restores from the
/// newer catalog. An object missing while the newest catalog still lists it is reported as
/// `Corruption`: the store lost it. Both used to fail with `NotFound`, which the CLI reports as
/// "no such log" (exit 2).
#[test]
fn restore_follows_retention_and_reports_a_lost_object_as_corruption() {
    let (server, target, t2) = bucket("restore-race");
    let a = tempfile::tempdir().unwrap();
    let ma = manager(a.path(), t2.clone());
    let la = ma.open_log("race", log_config()).unwrap();
    append_all(&la, 0..1500);
    la.seal().unwrap();
    assert!(ma.wait_for_tier2(&la, WAIT));
    let objects = || {
        server
            .list_keys(target.bucket_name(), "aof2/logs/race/")
            .into_iter()
            .filter(|k| k.ends_with(".t1"))
            .collect::<Vec<_>>()
    };
    let before = objects().len();

    // The restore has read the catalog when it reports its plan; retention runs then.
    let b = tempfile::tempdir().unwrap();
    let mb = manager(b.path(), t2.clone());
    let mut retired = false;
    let report = mb
        .restore_log("race", &mut |_| {
            if !std::mem::replace(&mut retired, true) {
                assert!(la.truncate_before(800).unwrap() > 0);
                let deadline = Instant::now() + WAIT;
                while objects().len() == before {
                    assert!(Instant::now() < deadline, "retention deletes objects");
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })
        .unwrap();
    assert_eq!(report.first_seq, la.first_seq());
    assert_eq!(report.end_seq, 1500);
    mb.close().unwrap();

    // An object the newest catalog lists, gone from the store.
    let lost = objects().pop().unwrap();
    server.delete_object(target.bucket_name(), &lost);
    let c = tempfile::tempdir().unwrap();
    let mc = manager(c.path(), t2);
    let err = mc.restore_log("race", &mut |_| {}).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    assert!(err.to_string().contains(&lost), "{err}");
}

/// After an outage, the breaker's probe is a short request even when the first request to go
/// out is a long multipart upload. The upload used to be the probe: the breaker stayed
/// half-open for the whole upload and every other request (here a read of a segment only Tier 2
/// holds) failed fast, although the store answered again.
#[test]
fn fault_a_long_upload_is_not_the_breakers_probe() {
    let Some((server, _, mut t2)) = fault_bucket("long-probe") else {
        return;
    };
    t2.multipart_threshold = 8 << 20;
    t2.part_bytes = 8 << 20;
    t2.request_timeout = Duration::from_secs(10);
    t2.breaker_failures = 1;
    t2.breaker_open_for = Duration::from_millis(300);
    let dir = tempfile::tempdir().unwrap();
    let (m, log) = multipart_log(dir.path(), t2);
    // A segment only Tier 2 holds.
    log.append(b"cold record").unwrap();
    assert!(log.seal().unwrap());
    assert!(m.wait_for_tier2(&log, WAIT));
    m.evict_tier0(&log).unwrap();
    assert!(m.evict_tier1(&log).unwrap() > 0);

    // An outage opens the breaker; a large segment waits for its upload meanwhile.
    server.faults().outage(true);
    let err = log.read(0).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let payloads = incompressible(200, 64 << 10);
    for p in &payloads {
        log.append(p).unwrap();
    }
    assert!(log.seal().unwrap());
    // The store comes back, slow for the upload's requests: the upload takes seconds.
    let posts = server.faults().requests_with_method("POST");
    server.faults().clear();
    server.faults().only_paths_containing(".t1");
    server.faults().only_methods(&["PUT", "POST"]);
    server.faults().latency(Duration::from_secs(2));
    let deadline = Instant::now() + WAIT;
    while server.faults().requests_with_method("POST") == posts {
        assert!(Instant::now() < deadline, "the upload never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The upload is under way: the store answers, so reads do too.
    let record = log.read(0).expect("reads go on during the upload");
    assert_eq!(record.payload(), b"cold record");
    server.faults().clear();
    assert!(m.wait_for_tier2(&log, WAIT));
}
