//! W7: Tier 2 against a local S3 server (aof2 only; every aof2 row has a baseline of plain
//! `object_store` requests, plus zstd, against the same server in the same run).
//!
//! Contract: [`w7`] starts s3s-fs on loopback through `aof2-s3-local` (no faults; when
//! `AOF2_TEST_S3_ENDPOINT` is set, that server is used instead), writes `tier2_bytes` of 1 KiB
//! log lines (`PayloadKind::Logs`, `Durability::None`, 64 MiB segments, zstd level 1 fixed so
//! that every run uploads the same bytes) and returns these rows, each next to its baseline:
//! - `upload`: the log is written and compressed with Tier 2 off, then its manager is reopened
//!   with Tier 2 on, which queues every sealed segment for upload. MB/s of object bytes
//!   (compressed) from the reopen to `wait_for_tier2` (uploads, writer claim and catalog
//!   publications). Baseline `object_store PUT`: the same Tier 1 files' bytes, from memory, to
//!   other keys, with aof2's upload concurrency, single-PUT/multipart threshold and part size,
//!   from as many threads each waiting on a task of a two-thread runtime (aof2's shape).
//! - `point read tier2 <frame>`: random records of segments held only in Tier 2 (Tier 0 and
//!   Tier 1 copies evicted, hydration off), with 256 KiB and 1 MiB frames. The latency columns
//!   are those of the reads that issued a ranged GET; reads served by the manager's small frame
//!   cache are counted apart. Each segment's first read (which opens it: three more ranged GETs)
//!   is timed apart, before the random reads.
//! - `scan tier2`: a `RemoteReader` over the whole log, one record after another. Baseline
//!   `GET + zstd`: every object fetched whole, one after another, and its frames decompressed in
//!   memory. Compared on MB/s of record frames (payload + 32-byte header).
//! - `restore`: `AofManager::restore_log` into an empty root: seconds per GiB of objects
//!   downloaded and per GiB of payload. Baseline `GET + write`: every object fetched whole and
//!   written with fsync, rename and directory fsync, with the same concurrency.
//!
//! Units: `mb_per_sec` is 10^6 object (compressed) bytes/s in upload and restore rows and 10^6
//! payload bytes/s in the others; the notes say which and add the other units.

use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aof2::format::tier1::{Tier1Footer, decode_frame_index};
use aof2::{
    AofManager, Compression, Durability, LogConfig, ManagerConfig, RemoteReader, Tier2Config,
};
use aof2_s3_local::{S3Server, Tier2Target, unique_bucket};
use bytes::Bytes;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::payload::{PayloadBuilder, PayloadKind, read_u64};
use crate::report::{Class, Row, Workload};
use crate::stats::Summary;
use crate::systems::{Result, SystemKind};
use crate::workloads::Settings;

const LOG: &str = "bench";
/// The smaller log written with 1 MiB frames for the second point-read row.
const LOG_1M: &str = "bench-1m";
/// Log lines, as in W6: object sizes and scan speeds mean nothing on repeated text or random
/// bytes.
const PAYLOAD: PayloadKind = PayloadKind::Logs;
const SIZE: usize = 1024;
/// Fixed, so that the adaptive level (which follows the machine's load) does not change what is
/// uploaded from run to run.
const LEVEL: i32 = 1;
const WAIT: Duration = Duration::from_secs(600);
/// Worker threads of the baselines' runtime: aof2's Tier 2 runtime has two.
const RUNTIME_THREADS: usize = 2;

fn row(operation: &str, writers: usize) -> Row {
    Row::new(
        SystemKind::Aof2None,
        Workload::W7,
        operation,
        SIZE,
        writers,
        PAYLOAD,
    )
}

fn baseline(operation: &str, name: &str, writers: usize) -> Row {
    let mut r = row(operation, writers);
    r.system = name.to_string();
    r.class = Class::Baseline;
    r.durable = false;
    r
}

fn failed(mut r: Row, e: &dyn std::fmt::Display) -> Row {
    r.note(&format!("FAILED: {e}"));
    r
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// The Tier 2 settings aof2 gets for `target`: defaults plus the server's options.
fn tier2_config(target: &Tier2Target) -> Tier2Config {
    let mut config = Tier2Config::new(&target.url);
    config.options = target.options.clone();
    config
}

fn manager_config(root: &Path, frame_bytes: usize, tier2: Option<Tier2Config>) -> ManagerConfig {
    let mut config = ManagerConfig::new(root);
    config.compression = Compression::Fixed(LEVEL);
    config.tier1_frame_bytes = frame_bytes;
    // Reads of Tier-2-only segments stay on Tier 2 (no fetch back into Tier 1).
    config.hydrate_after_passes = 0;
    config.tier2 = tier2;
    config
}

fn log_config() -> LogConfig {
    LogConfig {
        durability: Durability::None,
        ..LogConfig::default()
    }
}

/// Run `future` on `runtime` and wait for it from this (non-runtime) thread, as aof2's Tier 2
/// calls do.
fn block_on<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    future: impl Future<Output = T> + Send + 'static,
) -> T {
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = sender.send(future.await);
    });
    receiver.recv().expect("a runtime task panicked")
}

/// Append `bytes` of records to log `name` and wait until every sealed segment is in Tier 1 (and
/// Tier 2, when configured). Returns the open manager and log.
fn fill(mut config: ManagerConfig, name: &str, bytes: u64) -> Result<(AofManager, aof2::Aof)> {
    let upload = config.tier2.is_some();
    // Room for everything in Tier 0: appends never wait for compression.
    config.tier0_max_bytes = bytes * 2 + (1 << 30);
    let manager = AofManager::open(config)?;
    let log = manager.open_log(name, log_config())?;
    let mut builder = PayloadBuilder::new(SIZE, PAYLOAD);
    for id in 0..bytes / SIZE as u64 {
        log.append(builder.build(id))?;
    }
    if !manager.wait_for_tier1(&log, WAIT) {
        return Err("compression did not finish in 10 minutes".into());
    }
    if upload && !manager.wait_for_tier2(&log, WAIT) {
        return Err("uploads did not finish in 10 minutes".into());
    }
    Ok((manager, log))
}

/// Bytes of every Tier 1 file of log `name` under `root`, in segment order.
fn tier1_files(root: &Path, name: &str) -> Result<Vec<Bytes>> {
    let dir = root.join("logs").join(name).join("tier1");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "t1"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| Ok(Bytes::from(std::fs::read(p)?)))
        .collect()
}

/// What the setup and the upload rows leave for the later rows.
struct Uploaded {
    manager: AofManager,
    log: aof2::Aof,
    /// Records in sealed (uploaded) segments.
    records: u64,
}

/// Upload rows: aof2 uploading a reopened root's backlog, then plain PUTs of the same bytes.
fn upload_rows(
    settings: &Settings,
    root: &Path,
    tier2: &Tier2Config,
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    rows: &mut Vec<Row>,
) -> Result<Uploaded> {
    let threads = tier2.upload_concurrency;
    eprintln!(
        "  write and compress {} MiB (Tier 2 off)",
        settings.tier2_bytes >> 20
    );
    let (manager, log) = fill(
        manager_config(root, 256 << 10, None),
        LOG,
        settings.tier2_bytes,
    )?;
    manager.close()?;
    drop(log);
    let objects = tier1_files(root, LOG)?;

    eprintln!("  upload {} Tier 1 files", objects.len());
    let manager = AofManager::open(manager_config(root, 256 << 10, Some(tier2.clone())))?;
    // Opening the log claims it in Tier 2 and queues every sealed segment for upload.
    let started = Instant::now();
    let log = manager.open_log(LOG, log_config())?;
    let open_secs = started.elapsed().as_secs_f64();
    if !manager.wait_for_tier2(&log, WAIT) {
        return Err("uploads did not finish in 10 minutes".into());
    }
    let wall = started.elapsed().as_secs_f64();
    let stats = manager
        .tier_stats()
        .tier2
        .ok_or("the manager reports no Tier 2")?;
    let info = manager.log_info(&log);
    let records: u64 = info
        .segments
        .iter()
        .filter(|s| s.in_tier2)
        .map(|s| s.end_seq - s.base_seq)
        .sum();

    let mut plain = baseline("upload", "object_store PUT", threads);
    let total: u64 = objects.iter().map(|o| o.len() as u64).sum();
    let (plain_secs, multipart) = put_all(runtime, store, &objects, tier2)?;
    plain.secs = plain_secs;
    plain.records = records;
    plain.records_per_sec = Some(records as f64 / plain_secs);
    plain.mb_per_sec = Some(mb(total) / plain_secs);
    plain.volume_bytes = Some(total);
    plain.note(&format!(
        "the same {} objects ({:.1} MiB, {multipart} multipart) from memory, {threads} at a time",
        objects.len(),
        total as f64 / (1 << 20) as f64
    ));

    let mut r = row("upload", threads);
    r.secs = wall;
    r.records = records;
    r.records_per_sec = Some(records as f64 / wall);
    r.mb_per_sec = Some(mb(stats.upload_bytes) / wall);
    r.volume_bytes = Some(stats.upload_bytes);
    let ratio = (records * SIZE as u64) as f64 / stats.upload_bytes as f64;
    r.note(&format!(
        "MB/s of objects: {} segments, {:.1} MiB uploaded (zstd L{LEVEL}, payload/object {ratio:.2}), \
         wall time from open_log to wait_for_tier2 (open_log with the writer claim {:.0} ms, \
         {} catalog publications); {:.1} MB/s per upload stream (upload_seconds {:.2} s summed \
         over {threads} streams); {:.2}x plain PUT; {} requests, {} retries",
        stats.segments_uploaded,
        stats.upload_bytes as f64 / (1 << 20) as f64,
        open_secs * 1e3,
        stats.catalogs_published,
        stats.upload_mb_per_sec(),
        stats.upload_seconds,
        (mb(stats.upload_bytes) / wall) / (mb(total) / plain_secs),
        stats.requests,
        stats.retries
    ));
    rows.push(r);
    rows.push(plain);
    Ok(Uploaded {
        manager,
        log,
        records,
    })
}

/// PUT every object under `baseline/put/` the way aof2 would (single PUT below the multipart
/// threshold, parts above), `upload_concurrency` at a time. Returns (seconds, multipart count).
fn put_all(
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
    objects: &[Bytes],
    tier2: &Tier2Config,
) -> Result<(f64, usize)> {
    let next = AtomicUsize::new(0);
    let part = tier2.part_bytes;
    let threshold = tier2.multipart_threshold;
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..tier2.upload_concurrency)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(object) = objects.get(i) else {
                            return Ok(());
                        };
                        let path = ObjectPath::from(format!("baseline/put/{i:06}"));
                        let store = store.clone();
                        let object = object.clone();
                        block_on(runtime, async move {
                            if (object.len() as u64) < threshold {
                                store.put(&path, PutPayload::from(object)).await?;
                            } else {
                                let upload = store.put_multipart(&path).await?;
                                let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
                                for chunk in object.chunks(part) {
                                    writer.wait_for_capacity(2).await?;
                                    writer.write(chunk);
                                }
                                writer.finish().await?;
                            }
                            Ok::<_, object_store::Error>(())
                        })?;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().map_err(|_| "a PUT thread panicked")??;
        }
        Ok(())
    })?;
    let multipart = objects
        .iter()
        .filter(|o| o.len() as u64 >= threshold)
        .count();
    Ok((started.elapsed().as_secs_f64(), multipart))
}

/// Random single-record reads of the segments of `log` held only in Tier 2.
fn point_reads(
    manager: &AofManager,
    log: &aof2::Aof,
    reads: u64,
    frame_bytes: usize,
) -> Result<Row> {
    manager.evict_tier0(log)?;
    manager.evict_tier1(log)?;
    let remote: Vec<(u64, u64)> = manager
        .log_info(log)
        .segments
        .iter()
        .filter(|s| s.tiers() == "2")
        .map(|s| (s.base_seq, s.end_seq))
        .collect();
    if remote.is_empty() {
        return Err("no segment is held only in Tier 2".into());
    }
    let counters = || {
        manager
            .tier_stats()
            .tier2
            .map_or((0, 0), |t| (t.ranged_gets, t.download_bytes))
    };
    let mut builder = PayloadBuilder::new(SIZE, PAYLOAD);
    let mut check = |seq: u64, record: &aof2::Record| -> Result<()> {
        let id = builder.check(record.payload())?;
        if id != seq {
            return Err(format!("record {seq} holds the payload of record {id}").into());
        }
        Ok(())
    };

    // First read of each segment: opens it (header, tail and frame index), then reads a frame.
    let (gets_before, _) = counters();
    let mut opens = Vec::with_capacity(remote.len());
    for &(base, _) in &remote {
        let started = Instant::now();
        let record = log.read(base)?;
        opens.push(started.elapsed().as_nanos() as u64);
        check(base, &record)?;
    }
    let open_gets = counters().0 - gets_before;
    let opens = Summary::from_nanos(&mut opens).ok_or("no segment")?;

    let total: u64 = remote.iter().map(|(base, end)| end - base).sum();
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ frame_bytes as u64;
    let mut cold = Vec::with_capacity(reads as usize);
    let mut cached = Vec::new();
    let (gets_before, bytes_before) = counters();
    for _ in 0..reads {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut k = x % total;
        let mut seq = 0;
        for &(base, end) in &remote {
            if k < end - base {
                seq = base + k;
                break;
            }
            k -= end - base;
        }
        let (gets, _) = counters();
        let started = Instant::now();
        let record = log.read(seq)?;
        let nanos = started.elapsed().as_nanos() as u64;
        if counters().0 > gets {
            cold.push(nanos);
        } else {
            cached.push(nanos);
        }
        check(seq, &record)?;
    }
    let (gets_after, bytes_after) = counters();
    let gets = gets_after - gets_before;
    let busy: u64 = cold.iter().chain(&cached).sum();

    let mut r = row(&format!("point read tier2 {} KiB", frame_bytes >> 10), 1);
    r.records = reads;
    r.secs = busy as f64 / 1e9;
    r.records_per_sec = Some(reads as f64 / r.secs);
    r.mb_per_sec = Some(mb(reads * SIZE as u64) / r.secs);
    let cold_count = cold.len();
    let summary = Summary::from_nanos(&mut cold);
    r.set_latency(summary);
    r.note(&format!(
        "random records of {} Tier-2-only segments, {} KiB frames; latency of the {cold_count} \
         reads that issued a ranged GET (max {:.2} ms); {} GETs, {:.0} KiB each on average; {} \
         reads hit the frame cache; first read of each segment (opens it, {:.1} GETs) mean \
         {:.2} ms, max {:.2} ms",
        remote.len(),
        frame_bytes >> 10,
        summary.map_or(f64::NAN, |s| s.max / 1000.0),
        gets,
        (bytes_after - bytes_before) as f64 / gets.max(1) as f64 / 1024.0,
        cached.len(),
        open_gets as f64 / remote.len() as f64,
        opens.mean / 1000.0,
        opens.max / 1000.0
    ));
    Ok(r)
}

/// Keys of log `name`'s segment objects, in segment order.
fn segment_keys(server: &S3Server, bucket: &str, name: &str) -> Vec<String> {
    server
        .list_keys(bucket, &format!("aof2/logs/{name}/"))
        .into_iter()
        .filter(|k| k.ends_with(".t1"))
        .collect()
}

/// Scan rows: a `RemoteReader` over the whole log, then whole-object GETs + zstd.
fn scan_rows(
    server: &S3Server,
    target: &Tier2Target,
    tier2: &Tier2Config,
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
) -> Result<Vec<Row>> {
    let reader = RemoteReader::open(tier2.clone(), LOG)?;
    let gets_before = server.faults().ranged_gets();
    let started = Instant::now();
    let mut n = 0u64;
    let mut bytes = 0u64;
    for record in reader.iter_from(reader.first_seq()) {
        let record = record?;
        if read_u64(record.payload(), 0) != record.seq() {
            return Err(format!("record {} holds another record's payload", record.seq()).into());
        }
        bytes += record.len() as u64;
        n += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let gets = server.faults().ranged_gets() - gets_before;
    if n != reader.end_seq() - reader.first_seq() {
        return Err(format!("the scan read {n} records of {}", reader.end_seq()).into());
    }
    let frame_mb = mb(bytes + n * aof2::limits::FRAME_HEADER_BYTES) / secs;

    let keys = segment_keys(server, target.bucket_name(), LOG);
    let mut plain = baseline("scan tier2", "GET + zstd", 1);
    let mut decompressor = zstd::bulk::Decompressor::new()?;
    let mut frame = Vec::new();
    let mut out = 0u64;
    let mut fetched = 0u64;
    let mut get_secs = 0.0;
    let started = Instant::now();
    for key in &keys {
        let store = store.clone();
        let path = ObjectPath::from(key.as_str());
        let get_started = Instant::now();
        let object = block_on(
            runtime,
            async move { store.get(&path).await?.bytes().await },
        )?;
        get_secs += get_started.elapsed().as_secs_f64();
        fetched += object.len() as u64;
        let footer_at = object
            .len()
            .checked_sub(aof2::limits::TIER1_FOOTER_BYTES as usize)
            .ok_or("object shorter than a Tier 1 footer")?;
        let footer = Tier1Footer::decode(&object[footer_at..]).map_err(|e| e.to_string())?;
        let index_at = footer.index_offset() as usize;
        let index = &object[index_at..index_at + footer.index_len() as usize];
        for entry in decode_frame_index(index, &footer).map_err(|e| e.to_string())? {
            let at = entry.compressed_offset as usize;
            frame.clear();
            frame.reserve(entry.uncompressed_len as usize);
            decompressor.decompress_to_buffer(
                &object[at..at + entry.compressed_len as usize],
                &mut frame,
            )?;
            out += frame.len() as u64;
            std::hint::black_box(&frame);
        }
    }
    let plain_secs = started.elapsed().as_secs_f64();
    plain.secs = plain_secs;
    plain.records = n;
    plain.records_per_sec = Some(n as f64 / plain_secs);
    plain.mb_per_sec = Some(mb(n * SIZE as u64) / plain_secs);
    let plain_frame_mb = mb(out) / plain_secs;
    plain.note(&format!(
        "{plain_frame_mb:.0} MB/s of record frames; {} objects ({:.1} MiB) fetched whole one \
         after another ({get_secs:.2} s in GETs: {:.0} MB/s), every frame decompressed in memory \
         ({:.2} s; no record CRCs)",
        keys.len(),
        fetched as f64 / (1 << 20) as f64,
        mb(fetched) / get_secs,
        plain_secs - get_secs
    ));

    let mut r = row("scan tier2", 1);
    r.set_rate(n, secs);
    r.note(&format!(
        "{frame_mb:.0} MB/s of record frames = {:.2}x GET + zstd; RemoteReader, one record \
         after another: {} ranged GETs (one per frame, 256 KiB frames, up to 3 fetched ahead of the reader), \
         every record CRC-checked",
        frame_mb / plain_frame_mb,
        if server.external() {
            "n/a".to_string()
        } else {
            gets.to_string()
        }
    ));
    Ok(vec![r, plain])
}

/// Restore rows: `restore_log` into an empty root, then whole-object GETs written to files.
fn restore_rows(
    dir: &Path,
    server: &S3Server,
    target: &Tier2Target,
    tier2: &Tier2Config,
    runtime: &tokio::runtime::Runtime,
    store: &Arc<dyn ObjectStore>,
) -> Result<Vec<Row>> {
    let threads = tier2.upload_concurrency.clamp(1, 8);
    let manager = AofManager::open(manager_config(
        &dir.join("restored"),
        256 << 10,
        Some(tier2.clone()),
    ))?;
    let started = Instant::now();
    let report = manager.restore_log(LOG, &mut |_| {})?;
    let secs = started.elapsed().as_secs_f64();
    manager.close()?;
    let records = report.end_seq - report.first_seq;
    let payload = records * SIZE as u64;

    let keys = segment_keys(server, target.bucket_name(), LOG);
    let files = dir.join("plain-restore");
    std::fs::create_dir_all(&files)?;
    let next = AtomicUsize::new(0);
    let started = Instant::now();
    let fetched = std::thread::scope(|scope| -> Result<u64> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<u64> {
                    let mut fetched = 0u64;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(key) = keys.get(i) else {
                            return Ok(fetched);
                        };
                        let store = store.clone();
                        let path = ObjectPath::from(key.as_str());
                        let object =
                            block_on(
                                runtime,
                                async move { store.get(&path).await?.bytes().await },
                            )?;
                        let path = files.join(format!("{i:06}.t1"));
                        let tmp = path.with_extension("tmp");
                        let mut file = std::fs::File::create(&tmp)?;
                        file.write_all(&object)?;
                        file.sync_all()?;
                        std::fs::rename(&tmp, &path)?;
                        std::fs::File::open(&files)?.sync_all()?;
                        fetched += object.len() as u64;
                    }
                })
            })
            .collect();
        let mut fetched = 0;
        for worker in workers {
            fetched += worker.join().map_err(|_| "a GET thread panicked")??;
        }
        Ok(fetched)
    })?;
    let plain_secs = started.elapsed().as_secs_f64();

    let mut plain = baseline("restore", "GET + write", threads);
    plain.secs = plain_secs;
    plain.records = records;
    plain.records_per_sec = Some(records as f64 / plain_secs);
    plain.mb_per_sec = Some(mb(fetched) / plain_secs);
    plain.volume_bytes = Some(fetched);
    plain.note(&format!(
        "MB/s of objects: {} objects fetched whole, {threads} at a time, each written with fsync, \
         rename, directory fsync; {:.2} s/GiB of objects",
        keys.len(),
        plain_secs / gib(fetched)
    ));

    let mut r = row("restore", threads);
    r.secs = secs;
    r.records = records;
    r.records_per_sec = Some(records as f64 / secs);
    r.mb_per_sec = Some(mb(report.bytes_downloaded) / secs);
    r.volume_bytes = Some(report.bytes_downloaded);
    r.note(&format!(
        "MB/s of objects: restore_log of {} segments ({:.1} MiB downloaded, {:.0} MiB of payload) \
         into an empty root in {secs:.2} s: {:.2} s/GiB of objects, {:.2} s/GiB of payload; \
         {:.2}x GET + write",
        report.segments_downloaded,
        report.bytes_downloaded as f64 / (1 << 20) as f64,
        payload as f64 / (1 << 20) as f64,
        secs / gib(report.bytes_downloaded),
        secs / gib(payload),
        (mb(report.bytes_downloaded) / secs) / (mb(fetched) / plain_secs)
    ));
    Ok(vec![r, plain])
}

/// The point-read row with 1 MiB frames: a smaller log of its own, uploaded as it is written.
fn point_reads_1m(settings: &Settings, dir: &Path, tier2: &Tier2Config) -> Result<Row> {
    let bytes = (settings.tier2_bytes / 4).max(192 << 20);
    eprintln!(
        "  write {} MiB with 1 MiB frames, upload, point reads",
        bytes >> 20
    );
    let (manager, log) = fill(
        manager_config(&dir.join("frames-1m"), 1 << 20, Some(tier2.clone())),
        LOG_1M,
        bytes,
    )?;
    let r = point_reads(&manager, &log, settings.tier2_point_reads, 1 << 20);
    manager.close()?;
    r
}

/// W7 rows (see the module contract).
pub fn w7(settings: &Settings) -> Vec<Row> {
    let mut rows = Vec::new();
    let setup = (|| -> Result<_> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RUNTIME_THREADS)
            .thread_name("aof2-bench-s3")
            .enable_all()
            .build()?;
        let dir = tempfile::Builder::new()
            .prefix("aof2-bench-w7-")
            .tempdir_in(&settings.data_dir)?;
        Ok((runtime, dir))
    })();
    let (runtime, dir) = match setup {
        Ok(s) => s,
        Err(e) => {
            rows.push(failed(row("upload", 1), &e));
            return rows;
        }
    };
    let server = S3Server::start();
    if server.external() {
        eprintln!("  S3 server: {} (external)", server.endpoint());
    }
    let target = server.bucket(&unique_bucket("aof2-bench-w7"));
    let tier2 = tier2_config(&target);
    let store: Arc<dyn ObjectStore> = Arc::from(target.store().0);

    let uploaded = match upload_rows(
        settings,
        &dir.path().join("writer"),
        &tier2,
        &runtime,
        &store,
        &mut rows,
    ) {
        Ok(u) => u,
        Err(e) => {
            rows.push(failed(row("upload", tier2.upload_concurrency), &e));
            return rows;
        }
    };
    eprintln!("  point reads from Tier 2 (256 KiB frames)");
    match point_reads(
        &uploaded.manager,
        &uploaded.log,
        settings.tier2_point_reads,
        256 << 10,
    ) {
        Ok(r) => rows.push(r),
        Err(e) => rows.push(failed(row("point read tier2 256 KiB", 1), &e)),
    }
    let _ = uploaded.manager.close();
    drop(uploaded.log);
    match point_reads_1m(settings, dir.path(), &tier2) {
        Ok(r) => rows.push(r),
        Err(e) => rows.push(failed(row("point read tier2 1024 KiB", 1), &e)),
    }
    eprintln!(
        "  scan {} records from Tier 2 (RemoteReader)",
        uploaded.records
    );
    match scan_rows(&server, &target, &tier2, &runtime, &store) {
        Ok(mut r) => rows.append(&mut r),
        Err(e) => rows.push(failed(row("scan tier2", 1), &e)),
    }
    eprintln!("  restore into an empty root");
    match restore_rows(dir.path(), &server, &target, &tier2, &runtime, &store) {
        Ok(mut r) => rows.append(&mut r),
        Err(e) => rows.push(failed(row("restore", tier2.upload_concurrency), &e)),
    }
    rows
}
