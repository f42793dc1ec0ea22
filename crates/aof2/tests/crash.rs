//! kill -9 crash tests.
//!
//! The test binary re-executes itself as a child process (`child_writer` / `child_writer_tiered`,
//! ignored tests that do nothing unless their root variable is set). The child appends
//! self-describing records from several threads with `Durability::Always` (single appends, atomic
//! batches, and one writer pipelining `append_nowait` + `wait_durable`) and prints
//! `ack <seq> <id>` for every acknowledged record. The parent kills it with SIGKILL at a random
//! moment, reopens the root and checks that every acknowledged record survived byte for byte,
//! that nothing after the durable tail is garbage, that batches are atomic and that each writer's
//! records form a gap-free prefix. The same root is reused across iterations so history
//! accumulates and recovery runs repeatedly.
//!
//! The tiered variant runs the child with a Tier 0 budget of six 64 KiB segments, so sealed
//! segments are compressed into Tier 1 and evicted continuously, and a reader thread re-reads old
//! records so that segments are hydrated back into Tier 0: kills land in the middle of every tier
//! transition. The parent also checks that no file is left behind: every segment file belongs to
//! a segment in Tier 0 (or is a prepared blank), every Tier 1 file to a segment in Tier 1, no
//! temporary file survives a writable open, and recovery restarted exactly the compressions the
//! manifest had in flight.
//!
//! The Tier 2 variant adds an S3 server: the parent runs the in-process one (s3s-fs on
//! loopback, `support::s3`) and hands its URL and options to the child, which connects over real
//! TCP. The child's Tier 1 budget holds a few segments, so every sealed segment is uploaded and
//! its Tier 1 copy evicted soon after; the reader thread reads segments held only in Tier 2, so
//! they are fetched back into Tier 1 and hydrated into Tier 0; in half of the runs a retention
//! thread truncates the log (its objects are deleted after the catalog drops them). In some runs
//! the parent injects faults while the child runs (a 503 storm, an outage, dropped connections,
//! hung requests), so kills land while uploads retry or wait for the circuit breaker. After each
//! kill the parent also checks that every segment the manifest records as uploaded is in the
//! bucket with the recorded CRC (and equal to the local Tier 1 file it was uploaded from, if that
//! is still there), that no object is left that nothing references (beyond retention's), that a
//! `RemoteReader` reads what the catalog left by the kill lists, and, after evicting both local
//! tiers, that every record reads back from Tier 2 alone.
//!
//! Environment: `AOF2_CRASH_ITERATIONS` (default 50 plain, 30 tiered, 20 Tier 2),
//! `AOF2_CRASH_SEED` (default: from the clock).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aof2::format::manifest::{
    Edit, WAL_HEADER_BYTES, WalRead, decode_snapshot, decode_wal_header, decode_wal_record,
};
use aof2::format::segment::SegmentFooter;
use aof2::{
    AofManager, Durability, ErrorKind, LogConfig, ManagerConfig, RemoteReader, SegmentState,
    Tier2Config, TierLocation,
};
use support::s3::{S3Server, Tier2Target, unique_bucket};

mod support;

const RUN_ENV: &str = "AOF2_CRASH_CHILD_RUN";
const LOG: &str = "crash";
const WRITERS: u64 = 4;
const SEGMENT_BYTES: u64 = 64 * 1024;

fn log_config() -> LogConfig {
    log_config_with(Durability::Always)
}

fn log_config_with(durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        ..LogConfig::default().with_segment_bytes(SEGMENT_BYTES)
    }
}

/// One crash test: which child runs, how it is configured, how many kills by default.
struct Scenario {
    /// Name of the ignored test that is the child.
    child: &'static str,
    /// Environment variable carrying the root to the child (one per scenario, so a child only
    /// runs when its own parent starts it).
    root_env: &'static str,
    default_iterations: u64,
    /// The child's manager configuration.
    manager_config: fn(&Path) -> ManagerConfig,
    /// The child's durability in run `run` (a kill -9 loses nothing written, whatever the mode,
    /// so every mode must keep every acknowledged record).
    durability: fn(u64) -> Durability,
    /// Whether the child exercises tiering (reader thread, stats) and the parent checks files.
    tiered: bool,
    /// Whether the child uses Tier 2 (the parent's S3 server) and truncates the log.
    tier2: bool,
    /// The parent kills the child 5 to this many milliseconds after it is ready.
    max_kill_delay_ms: u64,
}

const PLAIN: Scenario = Scenario {
    child: "child_writer",
    root_env: "AOF2_CRASH_CHILD_ROOT",
    default_iterations: 50,
    manager_config: plain_manager_config,
    durability: |_| Durability::Always,
    tiered: false,
    tier2: false,
    max_kill_delay_ms: 150,
};

fn plain_manager_config(root: &Path) -> ManagerConfig {
    ManagerConfig::new(root)
}

/// Tier 0 budget of the tiered child, in segments: an active segment, two prepared ones and
/// three sealed ones, so compression and eviction never stop.
const TIERED_BUDGET_SEGMENTS: u64 = 6;

const TIERED: Scenario = Scenario {
    child: "child_writer_tiered",
    root_env: "AOF2_CRASH_TIERED_CHILD_ROOT",
    default_iterations: 30,
    manager_config: tiered_manager_config,
    durability: alternating_durability,
    tiered: true,
    tier2: false,
    max_kill_delay_ms: 150,
};

/// Alternate: `Always` seals by syncing the segment, `None` seals by compressing it (the Tier 1
/// copy is what is synced), so kills land in both ways of sealing.
fn alternating_durability(run: u64) -> Durability {
    if run.is_multiple_of(2) {
        Durability::None
    } else {
        Durability::Always
    }
}

fn tiered_manager_config(root: &Path) -> ManagerConfig {
    ManagerConfig {
        tier0_max_bytes: TIERED_BUDGET_SEGMENTS * SEGMENT_BYTES,
        // Several frames per segment: repeated reads decompress and so trigger hydration.
        tier1_frame_bytes: 16 << 10,
        admission_timeout: Duration::from_secs(2),
        compress_threads: 2,
        ..ManagerConfig::new(root)
    }
}

/// Tier 1 budget of the Tier 2 child, in segments (Tier 1 files of these incompressible
/// payloads are about a segment each): uploads are followed by Tier 1 evictions at once, and a
/// fetch from Tier 2 evicts another Tier 1 copy.
const TIER2_TIER1_SEGMENTS: u64 = 4;

/// Records the Tier 2 child's retention keeps behind the records the parent has already checked.
const RETAINED_RECORDS: u64 = 2000;

/// Environment variables carrying the S3 target to the Tier 2 child: the URL, and the
/// `object_store` options as `key=value` lines.
const TIER2_URL_ENV: &str = "AOF2_CRASH_TIER2_URL";
const TIER2_OPTIONS_ENV: &str = "AOF2_CRASH_TIER2_OPTIONS";

/// Prefix of the Tier 2 scenario's keys inside its bucket (a prefix exercises key building).
const TIER2_PREFIX: &str = "crash/t2";

const TIER2: Scenario = Scenario {
    child: "child_writer_tier2",
    root_env: "AOF2_CRASH_TIER2_CHILD_ROOT",
    default_iterations: 20,
    manager_config: tier2_manager_config,
    durability: alternating_durability,
    tiered: true,
    tier2: true,
    // Long enough for uploads, Tier 1 evictions and fetches to follow each other in one run.
    max_kill_delay_ms: 400,
};

/// The tiered child's configuration plus a Tier 1 budget of a few segments and Tier 2 (from the
/// environment the parent sets).
fn tier2_manager_config(root: &Path) -> ManagerConfig {
    let url = std::env::var(TIER2_URL_ENV).expect("Tier 2 URL from the parent");
    let options = std::env::var(TIER2_OPTIONS_ENV).expect("Tier 2 options from the parent");
    let options = options
        .lines()
        .map(|line| {
            let (key, value) = line.split_once('=').expect("key=value");
            (key.to_string(), value.to_string())
        })
        .collect();
    ManagerConfig {
        tier1_max_bytes: TIER2_TIER1_SEGMENTS * SEGMENT_BYTES,
        tier2: Some(tier2_config(&url, options, Duration::from_secs(2))),
        ..tiered_manager_config(root)
    }
}

/// Tier 2 settings of the child (and of the parent's reopen, with a longer `request_timeout`):
/// quick retries and a breaker that opens and probes again within a run.
fn tier2_config(
    url: &str,
    options: Vec<(String, String)>,
    request_timeout: Duration,
) -> Tier2Config {
    Tier2Config {
        options,
        request_timeout,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(100),
        breaker_open_for: Duration::from_millis(100),
        upload_concurrency: 2,
        ..Tier2Config::new(url)
    }
}

// ------------------------------------------------------------------ deterministic records

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Record identity: run (16 bits) | writer (8 bits) | per-writer counter (40 bits).
fn make_id(run: u64, writer: u64, counter: u64) -> u64 {
    assert!(run < 1 << 16 && writer < 1 << 8 && counter < 1 << 40);
    run << 48 | writer << 40 | counter
}

fn split_id(id: u64) -> (u64, u64, u64) {
    (id >> 48, (id >> 40) & 0xff, id & ((1 << 40) - 1))
}

/// What a record with a given id looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Zero-length payload (carries no id).
    Empty,
    /// 1..=7 bytes, each equal to the length (carries no id).
    Tiny(u8),
    /// 8-byte LE id followed by `body` bytes derived from the id.
    Full { id: u64, body: usize },
}

fn shape(id: u64) -> Shape {
    let h = splitmix(id);
    match h % 16 {
        0 => Shape::Empty,
        1 => Shape::Tiny(1 + ((h >> 8) % 7) as u8),
        _ => Shape::Full {
            id,
            body: ((h >> 8) % 3001) as usize,
        },
    }
}

fn payload(id: u64) -> Vec<u8> {
    match shape(id) {
        Shape::Empty => Vec::new(),
        Shape::Tiny(n) => vec![n; n as usize],
        Shape::Full { id, body } => {
            let mut v = Vec::with_capacity(8 + body + 8);
            v.extend_from_slice(&id.to_le_bytes());
            let mut s = id ^ 0x5555_AAAA_0F0F_F0F0;
            while v.len() < 8 + body {
                s = splitmix(s);
                v.extend_from_slice(&s.to_le_bytes());
            }
            v.truncate(8 + body);
            v
        }
    }
}

/// Classify bytes read back from the log; `Err` if they are not a payload any writer produces.
fn classify(bytes: &[u8]) -> Result<Shape, String> {
    match bytes.len() {
        0 => Ok(Shape::Empty),
        n @ 1..=7 => {
            if bytes.iter().all(|&b| b as usize == n) {
                Ok(Shape::Tiny(n as u8))
            } else {
                Err(format!("tiny payload of {n} bytes is garbage: {bytes:?}"))
            }
        }
        n => {
            let id = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            match shape(id) {
                Shape::Full { body, .. } if body == n - 8 => {}
                other => {
                    return Err(format!(
                        "payload of {n} bytes claims id {id:#x}, whose shape is {other:?}"
                    ));
                }
            }
            if payload(id) != bytes {
                return Err(format!("payload of id {id:#x} ({n} bytes) differs"));
            }
            Ok(Shape::Full { id, body: n - 8 })
        }
    }
}

/// The last writer pipelines: `append_nowait` of a few single records, then `wait_durable` of
/// the last one, then it acknowledges them all.
const PIPELINED_WRITER: u64 = WRITERS - 1;

/// How many records writer `writer` of `run` appends in the operation starting at `counter`
/// (1 = a single `append`, 2..=5 = one atomic `append_batch`). The pipelining writer appends
/// single records only.
fn op_len(run: u64, writer: u64, counter: u64) -> u64 {
    let h = splitmix(make_id(run, writer, counter) ^ 0xB47C_B47C_B47C_B47C);
    if writer != PIPELINED_WRITER && h.is_multiple_of(3) {
        2 + (h >> 8) % 4
    } else {
        1
    }
}

/// How many single records the pipelining writer appends before it waits (1..=8).
fn pipeline_len(run: u64, counter: u64) -> u64 {
    1 + splitmix(make_id(run, PIPELINED_WRITER, counter) ^ 0x1D1D) % 8
}

/// Start and length of the operation (batch) of `run`/`writer` that contains `counter`.
fn batch_of(run: u64, writer: u64, counter: u64) -> (u64, u64) {
    let mut start = 0;
    loop {
        let n = op_len(run, writer, start);
        if counter < start + n {
            return (start, n);
        }
        start += n;
    }
}

// ------------------------------------------------------------------ child

fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    if out.write_all(text.as_bytes()).is_err() || out.flush().is_err() {
        std::process::exit(2);
    }
}

/// Run an append; `Backpressure` (Tier 0 full while compression catches up) wrote nothing and is
/// retried. Any other error ends the child.
fn retrying<T>(what: &str, mut append: impl FnMut() -> aof2::Result<T>) -> T {
    loop {
        match append() {
            Ok(v) => return v,
            Err(e) if e.kind() == ErrorKind::Backpressure => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => {
                emit(&format!("\nAOF2ERROR {what}: {e}\n"));
                std::process::exit(4);
            }
        }
    }
}

/// The child process: appends forever until killed. Does nothing in a normal test run.
#[test]
#[ignore = "child process of kill9_acknowledged_records_survive"]
fn child_writer() {
    run_child(&PLAIN);
}

/// The child process of the tiered test: appends, re-reads old records and reports tier
/// statistics until killed. Does nothing in a normal test run.
#[test]
#[ignore = "child process of kill9_during_tiering_acknowledged_records_survive"]
fn child_writer_tiered() {
    run_child(&TIERED);
}

/// The child process of the Tier 2 test: the tiered child with Tier 2 and retention. Does
/// nothing in a normal test run.
#[test]
#[ignore = "child process of kill9_during_tier2_acknowledged_records_survive"]
fn child_writer_tier2() {
    run_child(&TIER2);
}

fn run_child(scenario: &Scenario) {
    let Some(root) = std::env::var_os(scenario.root_env) else {
        return;
    };
    let run: u64 = std::env::var(RUN_ENV)
        .expect("run number")
        .parse()
        .expect("run number");
    let manager = match AofManager::open((scenario.manager_config)(Path::new(&root))) {
        Ok(m) => m,
        Err(e) => {
            emit(&format!("\nAOF2ERROR open manager: {e}\n"));
            std::process::exit(3);
        }
    };
    let log = match manager.open_log(LOG, log_config_with((scenario.durability)(run))) {
        Ok(l) => l,
        Err(e) => {
            emit(&format!("\nAOF2ERROR open log: {e}\n"));
            std::process::exit(3);
        }
    };
    // libtest may have printed "test child_writer ... " without a newline: start a fresh line.
    let ready = log.next_seq();
    emit(&format!("\nAOF2READY {ready}\n"));
    if scenario.tiered {
        let reader = log.clone();
        let tier2 = scenario.tier2;
        std::thread::spawn(move || reread_old_records(&reader, run, tier2));
        let manager = manager.clone();
        let stats_log = log.clone();
        std::thread::spawn(move || {
            loop {
                let s = manager.tier_stats();
                let mut line = format!(
                    "AOF2STATS {} {} {} {} {} {} {}",
                    s.segments_compressed,
                    s.evictions,
                    s.hydrations,
                    s.admission_timeouts,
                    s.tier0_peak_bytes,
                    s.compress_failures,
                    stats_log.stats().segments_recycled
                );
                if let Some(t) = s.tier2 {
                    line.push_str(&format!(
                        " {} {} {} {} {} {} {}",
                        t.segments_uploaded,
                        t.tier1_evictions,
                        t.fetches,
                        t.retries,
                        t.request_failures,
                        t.breaker_opened,
                        t.upload_backlog
                    ));
                }
                line.push('\n');
                emit(&line);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    }
    if scenario.tier2 && run % 2 == 1 {
        let log = log.clone();
        std::thread::spawn(move || retain(&log, run, ready));
    }
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut counter = 0;
                loop {
                    if writer == PIPELINED_WRITER {
                        let k = pipeline_len(run, counter);
                        let mut lines = String::new();
                        let mut last = 0;
                        for c in counter..counter + k {
                            let id = make_id(run, writer, c);
                            let seq = retrying("append_nowait", || log.append_nowait(&payload(id)));
                            lines.push_str(&format!("ack {seq} {id}\n"));
                            last = seq;
                        }
                        if let Err(e) = log.wait_durable(last) {
                            emit(&format!("\nAOF2ERROR wait_durable: {e}\n"));
                            std::process::exit(4);
                        }
                        emit(&lines);
                        counter += k;
                        continue;
                    }
                    let n = op_len(run, writer, counter);
                    let ids: Vec<u64> = (counter..counter + n)
                        .map(|c| make_id(run, writer, c))
                        .collect();
                    let payloads: Vec<Vec<u8>> = ids.iter().map(|&id| payload(id)).collect();
                    let first = retrying("append", || {
                        if n == 1 {
                            log.append(&payloads[0])
                        } else {
                            log.append_batch(&payloads)
                        }
                    });
                    let mut lines = String::new();
                    for (j, id) in ids.iter().enumerate() {
                        lines.push_str(&format!("ack {} {}\n", first + j as u64, id));
                    }
                    emit(&lines);
                    counter += n;
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Tiered child: read a run of old records three times over (a segment decompressed that often
/// is hydrated back into Tier 0, one read that often from Tier 2 is fetched back into Tier 1;
/// with Tier 2 six times, so that fetched segments are hydrated too), sometimes with an
/// iterator, checking that every payload is one a writer produces.
///
/// With Tier 2 (`tier2`), a read may fail with `Unavailable` while the parent injects faults,
/// and retention may remove a record between choosing and reading it (`NotFound` below the
/// log's first sequence): such a pass is cut short. Any other failure ends the child.
fn reread_old_records(log: &aof2::Aof, run: u64, tier2: bool) {
    let fail = |what: String| -> ! {
        emit(&format!("\nAOF2ERROR reader: {what}\n"));
        std::process::exit(5);
    };
    // Whether the pass goes on.
    let check = |seq: u64, record: aof2::Result<aof2::Record>| -> bool {
        match record {
            Ok(r) if r.seq() != seq => fail(format!("read {seq} returned seq {}", r.seq())),
            Ok(r) => {
                if let Err(e) = classify(r.payload()) {
                    fail(format!("seq {seq}: {e}"));
                }
                true
            }
            Err(e) if tier2 && e.kind() == ErrorKind::Unavailable => false,
            Err(e) if tier2 && e.kind() == ErrorKind::NotFound && seq < log.first_seq() => false,
            Err(e) => fail(format!("read {seq}: {e}")),
        }
    };
    let mut x = splitmix(run ^ 0x0EAD_0EAD);
    loop {
        let first = log.first_seq();
        let durable = log.durable_watermark();
        if durable < first + 400 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        x = splitmix(x);
        let start = first + x % ((durable - first) / 2);
        let end = (start + 120).min(durable);
        // With Tier 2 the first passes read the remote copy and fetch it; later ones read the
        // fetched Tier 1 copy often enough to hydrate it.
        let passes = if tier2 { 6 } else { 3 };
        'passes: for _ in 0..passes {
            for seq in start..end {
                if !check(seq, log.read(seq)) {
                    std::thread::sleep(Duration::from_millis(5));
                    break 'passes;
                }
            }
        }
        if x.is_multiple_of(4) {
            for (k, record) in log.reader(start).take(400).enumerate() {
                if !check(start + k as u64, record) {
                    break;
                }
            }
        }
    }
}

/// Tier 2 child: retention. A few times per run, remove the segments wholly below a floor a
/// little under `ready` (the records the parent checked before this run), printing
/// `AOF2RETAIN <floor>` before and `AOF2RETAINED <first seq>` after each call, so the parent
/// knows both the highest floor ever asked for and the first sequence it must still find.
fn retain(log: &aof2::Aof, run: u64, ready: u64) {
    let mut x = splitmix(run ^ 0x2E7A_1AED);
    for k in 0..3 {
        x = splitmix(x);
        std::thread::sleep(Duration::from_millis(20 + x % 60));
        let floor = (ready.saturating_sub(RETAINED_RECORDS) + k * 200).min(ready);
        emit(&format!("AOF2RETAIN {floor}\n"));
        match log.truncate_before(floor) {
            Ok(first) => emit(&format!("AOF2RETAINED {first}\n")),
            Err(e) => {
                emit(&format!("\nAOF2ERROR truncate_before({floor}): {e}\n"));
                std::process::exit(4);
            }
        }
    }
}

// ------------------------------------------------------------------ parent

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[derive(Default)]
struct Totals {
    acked_checked: u64,
    records_checked: u64,
    /// Kills that found a compression in flight (a `CompressStarted` without its outcome).
    kills_in_compression: u64,
    /// ... a Tier 1 temporary file (the kill landed while the file was being written).
    kills_writing_tier1: u64,
    /// ... a segment file the manifest says is evicted (between the `Tier0Evicted` edit and the
    /// unlink, or a hydration renamed into place before its `Hydrated` edit).
    kills_in_eviction_or_hydration: u64,
    /// ... a hydration's temporary segment file.
    kills_writing_hydration: u64,
    compressions_restarted: u64,
    /// Reopens (in `None` mode) that left full unsealed segments to the background sealer, and
    /// how many segments in all.
    kills_with_seals_resumed: u64,
    seals_resumed: u64,
    seal_syncs_deferred: u64,
    /// From the children's last statistics before each kill.
    child_compressed: u64,
    child_evictions: u64,
    child_hydrations: u64,
    /// Segments the children prepared in the files of evicted ones.
    child_recycled: u64,
    child_admission_timeouts: u64,
    /// Tier 2 (from the children's last statistics).
    child_uploads: u64,
    child_tier1_evictions: u64,
    child_fetches: u64,
    child_tier2_retries: u64,
    child_tier2_failures: u64,
    child_breaker_opened: u64,
    /// Tier 2 kill sites (see [`KillSite`]).
    kills_with_upload_backlog: u64,
    kills_uploaded_unrecorded: u64,
    kills_tier1_released_present: u64,
    kills_fetch_tmp: u64,
    kills_with_tier2_only: u64,
    /// Faults the parent injected, by kind, and requests it faulted.
    fault_runs: BTreeMap<&'static str, u64>,
    faults_injected: u64,
    /// Retention calls the children finished, and the highest floor acknowledged.
    retentions: u64,
    /// Tier 2 checks of the parent.
    objects_checked: u64,
    remote_records_checked: u64,
    tier2_only_records_checked: u64,
    leaked_objects: u64,
    retired_files_left: u64,
    /// Segments whose local Tier 1 copy is a second compression, made after their upload.
    recompressed_after_upload: BTreeSet<u64>,
}

/// What the parent knows of the children's retention.
#[derive(Debug, Default)]
struct Retention {
    /// The highest floor any child asked for (a call may have finished unseen before the kill).
    requested: u64,
    /// The highest first sequence a finished call returned.
    acknowledged: u64,
}

/// The parent's handle on Tier 2: the server (for inspection) and the target's configuration.
struct Tier2Check {
    server: S3Server,
    target: Tier2Target,
}

impl Tier2Check {
    /// Start the in-process server with a fresh bucket.
    fn start() -> Tier2Check {
        let server = S3Server::start();
        let target = server
            .bucket(&unique_bucket("crash"))
            .with_prefix(TIER2_PREFIX);
        Tier2Check { server, target }
    }

    /// The parent's Tier 2 configuration (the child's, with a longer request timeout: nothing
    /// is injected while the parent checks).
    fn config(&self) -> Tier2Config {
        tier2_config(
            &self.target.url,
            self.target.options.clone(),
            Duration::from_secs(10),
        )
    }

    fn bucket(&self) -> &str {
        self.target.bucket_name()
    }

    /// Prefix of every key of the log.
    fn log_prefix(&self) -> String {
        format!("{TIER2_PREFIX}/aof2/logs/{LOG}/")
    }

    /// Key of a segment's object (`docs/format.md`: content-named by the Tier 1 footer CRC).
    fn segment_key(&self, log_id: u128, segment_id: u64, footer_crc: u32) -> String {
        format!(
            "{}{log_id:032x}/{segment_id:016x}-{footer_crc:08x}.t1",
            self.log_prefix()
        )
    }

    /// Segment objects in the bucket: (key, log id, segment id).
    fn segment_objects(&self) -> Vec<(String, String, u64)> {
        let prefix = self.log_prefix();
        self.server
            .list_keys(self.bucket(), &prefix)
            .into_iter()
            .filter(|k| k.ends_with(".t1"))
            .map(|k| {
                let rest = &k[prefix.len()..];
                let (log_id, name) = rest.split_once('/').expect("<log id>/<segment>.t1");
                let id = u64::from_str_radix(&name[..16], 16).expect("segment id");
                let log_id = log_id.to_string();
                (k, log_id, id)
            })
            .collect()
    }
}

// ------------------------------------------------------------------ the manifest's view

/// What the manifest says about one segment, replayed independently from its files.
#[derive(Debug, Clone, Default)]
struct ManifestSegment {
    sealed: bool,
    compressing: bool,
    tier1: bool,
    in_tier0: bool,
    quarantined: bool,
    /// The Tier 1 file the last `CompressDone` recorded: (length, footer CRC).
    tier1_file: Option<(u64, u32)>,
    /// The `Tier2Uploaded` edit, if the upload was recorded.
    tier2: Option<Uploaded>,
}

/// What a `Tier2Uploaded` edit recorded.
#[derive(Debug, Clone, Copy)]
struct Uploaded {
    file_len: u64,
    footer_crc: u32,
    object_crc: u32,
}

/// The edits of `logs/<LOG>/manifest` in replay order: the snapshot's, then every WAL
/// generation's from the one the snapshot names, up to a torn tail. Each comes with its file and
/// the offset just after it.
fn manifest_edits(root: &Path) -> Vec<(std::path::PathBuf, usize, Edit)> {
    let dir = root.join("logs").join(LOG).join("manifest");
    let mut edits = Vec::new();
    let mut first_generation = 0;
    let snapshot = dir.join("snapshot");
    if let Ok(bytes) = std::fs::read(&snapshot) {
        let (next, body) = decode_snapshot(&bytes).expect("manifest snapshot decodes");
        first_generation = next;
        edits.extend(body.into_iter().map(|e| (snapshot.clone(), bytes.len(), e)));
    }
    let mut wals: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .expect("manifest dir")
        .map(|e| e.unwrap().path())
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?.to_string();
            let generation = u64::from_str_radix(name.strip_prefix("wal-")?, 16).ok()?;
            (generation >= first_generation).then_some((generation, p))
        })
        .collect();
    wals.sort();
    for (generation, path) in wals {
        let bytes = std::fs::read(&path).unwrap();
        if bytes.len() < WAL_HEADER_BYTES {
            continue; // created, header never written
        }
        assert_eq!(decode_wal_header(&bytes).unwrap(), generation);
        let mut pos = WAL_HEADER_BYTES;
        while let WalRead::Edit(edit, n) = decode_wal_record(&bytes[pos..])
            .unwrap_or_else(|e| panic!("{} offset {pos}: {e}", path.display()))
        {
            pos += n;
            edits.push((path.clone(), pos, edit));
        }
    }
    edits
}

/// Every edit of segment `id` the manifest still holds (the snapshot's, then the WAL's), with
/// the file each comes from, for failure messages.
fn segment_history(root: &Path, id: u64) -> Vec<String> {
    manifest_edits(root)
        .into_iter()
        .filter(|(_, _, e)| {
            let of = match e {
                Edit::SegmentPrepared { segment_id, .. }
                | Edit::SegmentDropped { segment_id }
                | Edit::SegmentRetired { segment_id }
                | Edit::SegmentQuarantined { segment_id, .. }
                | Edit::CompressStarted { segment_id, .. }
                | Edit::CompressFailed { segment_id, .. }
                | Edit::Tier0Evicted { segment_id }
                | Edit::Hydrated { segment_id }
                | Edit::Tier1Dropped { segment_id }
                | Edit::Tier1Evicted { segment_id }
                | Edit::Tier1Fetched { segment_id } => *segment_id,
                Edit::SegmentSealed(info) => info.segment_id,
                Edit::CompressDone(info) => info.segment_id,
                Edit::Tier2Uploaded(info) => info.tier1.segment_id,
                Edit::LogCreated { .. } | Edit::LogOpened { .. } | Edit::RetiredBelow { .. } => {
                    return false;
                }
            };
            of == id
        })
        .map(|(file, _, e)| {
            let file = file.file_name().unwrap().to_string_lossy().into_owned();
            match e {
                Edit::Tier2Uploaded(info) => format!(
                    "{file}: Tier2Uploaded {{ tier1: {:?}, object_crc: {:#010x} }}",
                    info.tier1, info.object_crc
                ),
                e => format!("{file}: {e:?}"),
            }
        })
        .collect()
}

/// Replay the manifest into segment id -> state.
fn manifest_view(root: &Path) -> BTreeMap<u64, ManifestSegment> {
    manifest_state(root).1
}

/// Replay the manifest into the log id and segment id -> state.
fn manifest_state(root: &Path) -> (u128, BTreeMap<u64, ManifestSegment>) {
    let edits = manifest_edits(root).into_iter().map(|(_, _, e)| e);
    let mut view: BTreeMap<u64, ManifestSegment> = BTreeMap::new();
    let mut id = 0;
    for edit in edits {
        match edit {
            Edit::SegmentPrepared { segment_id, .. } => {
                view.insert(
                    segment_id,
                    ManifestSegment {
                        in_tier0: true,
                        ..Default::default()
                    },
                );
            }
            Edit::SegmentSealed(info) => at(&mut view, info.segment_id).sealed = true,
            Edit::SegmentDropped { segment_id } | Edit::SegmentRetired { segment_id } => {
                view.remove(&segment_id);
            }
            Edit::SegmentQuarantined { segment_id, .. } => {
                at(&mut view, segment_id).quarantined = true
            }
            Edit::CompressStarted { segment_id, .. } => {
                at(&mut view, segment_id).compressing = true
            }
            Edit::CompressDone(info) => {
                let s = at(&mut view, info.segment_id);
                s.compressing = false;
                s.tier1 = true;
                s.tier1_file = Some((info.file_len, info.footer_crc));
            }
            Edit::CompressFailed { segment_id, .. } => {
                at(&mut view, segment_id).compressing = false
            }
            Edit::Tier0Evicted { segment_id } => at(&mut view, segment_id).in_tier0 = false,
            Edit::Hydrated { segment_id } => at(&mut view, segment_id).in_tier0 = true,
            Edit::Tier1Dropped { segment_id } => {
                let s = at(&mut view, segment_id);
                s.tier1 = false;
                s.compressing = false;
            }
            Edit::Tier2Uploaded(info) => {
                let s = at(&mut view, info.tier1.segment_id);
                assert!(
                    s.sealed && s.tier2.is_none(),
                    "upload recorded twice: {s:?}"
                );
                if let Some(file) = s.tier1_file {
                    assert_eq!(
                        file,
                        (info.tier1.file_len, info.tier1.footer_crc),
                        "segment {}: the object is not a copy of the Tier 1 file",
                        info.tier1.segment_id
                    );
                }
                s.tier2 = Some(Uploaded {
                    file_len: info.tier1.file_len,
                    footer_crc: info.tier1.footer_crc,
                    object_crc: info.object_crc,
                });
            }
            Edit::Tier1Evicted { segment_id } => {
                let s = at(&mut view, segment_id);
                assert!(s.tier1 && s.tier2.is_some(), "Tier 1 released early: {s:?}");
                s.tier1 = false;
            }
            Edit::Tier1Fetched { segment_id } => {
                let s = at(&mut view, segment_id);
                assert!(!s.tier1, "fetched into an occupied Tier 1 slot: {s:?}");
                let t2 = s.tier2.expect("fetched from Tier 2 without an upload");
                s.tier1 = true;
                s.tier1_file = Some((t2.file_len, t2.footer_crc));
            }
            Edit::LogCreated { log_id, .. } => id = log_id,
            Edit::LogOpened { .. } | Edit::RetiredBelow { .. } => {}
        }
    }
    (id, view)
}

fn at(view: &mut BTreeMap<u64, ManifestSegment>, id: u64) -> &mut ManifestSegment {
    view.get_mut(&id)
        .unwrap_or_else(|| panic!("manifest edit of unknown segment {id}"))
}

/// Files of `dir` as (name, segment id parsed from the first 16 hex digits, if any).
fn files_in(dir: &Path) -> Vec<(String, Option<u64>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let id = name.get(..16).and_then(|h| u64::from_str_radix(h, 16).ok());
            (name, id)
        })
        .collect()
}

/// What a kill left on disk (and in the bucket), read before recovery touches anything.
#[derive(Debug, Default)]
struct KillSite {
    compressing: u64,
    /// A compression's temporary Tier 1 file.
    tier1_tmp: u64,
    evicted_but_present: u64,
    hydration_tmp: u64,
    /// Sealed segments with a Tier 1 copy whose upload was not recorded.
    upload_backlog: u64,
    /// Segment objects in the bucket whose upload the manifest does not record (the kill landed
    /// between the acknowledged PUT and the `Tier2Uploaded` edit).
    uploaded_unrecorded: u64,
    /// Tier 1 files of segments the manifest says are not in Tier 1 (between `Tier1Evicted` and
    /// the unlink, or a fetch renamed into place before its `Tier1Fetched` edit).
    tier1_released_present: u64,
    /// A fetch's temporary file in `tier1/` (any other `.tmp` than a compression's).
    fetch_tmp: u64,
    /// Segments held only by Tier 2.
    tier2_only: u64,
}

fn kill_site(root: &Path, tier2: Option<&Tier2Check>) -> KillSite {
    let log_dir = root.join("logs").join(LOG);
    if !log_dir.join("manifest").is_dir() {
        return KillSite::default();
    }
    let (log_id, view) = manifest_state(root);
    let mut site = KillSite {
        compressing: view.values().filter(|s| s.compressing).count() as u64,
        upload_backlog: view
            .values()
            .filter(|s| s.sealed && s.tier1 && s.tier2.is_none() && !s.quarantined)
            .count() as u64,
        tier2_only: view
            .values()
            .filter(|s| s.sealed && !s.in_tier0 && !s.tier1 && s.tier2.is_some())
            .count() as u64,
        ..Default::default()
    };
    for (name, id) in files_in(&log_dir.join("tier1")) {
        if name.ends_with(".t1.tmp") {
            site.tier1_tmp += 1;
        } else if name.ends_with(".tmp") {
            site.fetch_tmp += 1;
        } else if let Some(s) = id.and_then(|id| view.get(&id))
            && !s.tier1
        {
            site.tier1_released_present += 1;
        }
    }
    for (name, id) in files_in(&log_dir.join("segments")) {
        if name.ends_with(".seg.tmp") {
            site.hydration_tmp += 1;
        } else if let Some(s) = id.and_then(|id| view.get(&id))
            && s.sealed
            && !s.in_tier0
        {
            site.evicted_but_present += 1;
        }
    }
    if let Some(t2) = tier2 {
        let log_id = format!("{log_id:032x}");
        site.uploaded_unrecorded = t2
            .segment_objects()
            .iter()
            .filter(|(_, of, id)| *of == log_id && view.get(id).is_some_and(|s| s.tier2.is_none()))
            .count() as u64;
    }
    site
}

/// After a writable open (and every restarted compression finished): every file belongs to the
/// tier the log and the manifest say it is in, and nothing temporary is left.
///
/// The one exception is retention's: a kill between a `SegmentRetired` edit and the unlinks
/// leaves the retired segment's files behind, unreferenced, and so does a kill during a
/// compression, fetch or hydration of a segment retention retired meanwhile (its temporary
/// file). The background sweep after the open deletes them (`LogShared::sweep_retired_files`),
/// possibly after this check. Those are files of segments older than the oldest the manifest
/// knows; their number is returned.
fn check_tier_files(root: &Path, manager: &AofManager, log: &aof2::Aof) -> u64 {
    let log_dir = root.join("logs").join(LOG);
    let info = manager.log_info(log);
    let view = manifest_view(root);
    let oldest = view.keys().next().copied().unwrap_or(0);
    let retired = |id: Option<u64>| id.is_some_and(|id| id < oldest);
    let mut retired_files = 0;
    let in_tier0 = |t: TierLocation| matches!(t, TierLocation::Tier0 | TierLocation::Tier0And1);
    let in_tier1 = |t: TierLocation| matches!(t, TierLocation::Tier1 | TierLocation::Tier0And1);
    let mut listed = HashSet::new();
    for s in &info.segments {
        listed.insert(s.id);
        let m = view
            .get(&s.id)
            .unwrap_or_else(|| panic!("segment {} is not in the manifest: {view:?}", s.id));
        assert!(!m.quarantined && !m.compressing, "segment {}: {m:?}", s.id);
        assert_eq!(
            m.in_tier0,
            in_tier0(s.tier),
            "segment {}: {s:?} vs {m:?}",
            s.id
        );
        assert_eq!(
            m.tier1,
            in_tier1(s.tier),
            "segment {}: {s:?} vs {m:?}",
            s.id
        );
        assert_eq!(
            m.tier2.is_some(),
            s.in_tier2,
            "segment {}: {s:?} vs {m:?}",
            s.id
        );
        if s.tier == TierLocation::None {
            assert!(
                s.in_tier2 && s.state == SegmentState::Sealed,
                "segment {} is in no tier: {s:?}",
                s.id
            );
        }
        assert_eq!(s.path.is_file(), in_tier0(s.tier), "{s:?}");
        let t1 = log_dir.join("tier1").join(format!("{:016x}.t1", s.id));
        assert_eq!(t1.is_file(), in_tier1(s.tier), "{s:?}");
    }
    // Segments the manifest knows but the log does not list are prepared blanks.
    for (id, m) in &view {
        if !listed.contains(id) {
            assert!(
                !m.sealed,
                "sealed segment {id} missing from log_info: {m:?}"
            );
            let path = log_dir.join("segments").join(format!("{id:016x}.seg"));
            let head = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("prepared segment {id}: {}: {e}", path.display()));
            assert!(
                head.len() == SEGMENT_BYTES as usize && head[..128].iter().all(|&b| b == 0),
                "prepared segment {id} is not blank"
            );
        }
    }
    let tier = |id: Option<u64>| {
        id.and_then(|id| info.segments.iter().find(|s| s.id == id))
            .map(|s| s.tier)
    };
    let kept: Vec<String> = (0..aof2::limits::RECYCLED_SEGMENTS_KEPT)
        .map(|k| format!("recycled-{k}"))
        .collect();
    for (name, id) in files_in(&log_dir.join("segments")) {
        if name.ends_with(".tmp") && retired(id) {
            // A hydration of a segment retention retired meanwhile, cut off by the kill: the
            // sweep after the open deletes it with the other files of retired segments.
            retired_files += 1;
            continue;
        }
        assert!(
            !name.ends_with(".tmp"),
            "temporary file left: segments/{name}"
        );
        if kept.contains(&name) {
            // An evicted segment's file, kept to prepare a later segment in.
            continue;
        }
        assert!(name.ends_with(".seg"), "unexpected file segments/{name}");
        match tier(id) {
            Some(t) => assert!(in_tier0(t), "segments/{name} belongs to a segment in {t:?}"),
            None if retired(id) => retired_files += 1,
            None => assert!(
                id.is_some_and(|id| view.contains_key(&id)),
                "orphan segments/{name}: not in the manifest"
            ),
        }
    }
    for (name, id) in files_in(&log_dir.join("tier1")) {
        if name.ends_with(".tmp") && retired(id) {
            // A compression or fetch of a retired segment, cut off by the kill (as above).
            retired_files += 1;
            continue;
        }
        assert!(
            !name.ends_with(".tmp"),
            "temporary file left: tier1/{name} (manifest: {:?})",
            id.and_then(|id| view.get(&id))
        );
        assert!(name.ends_with(".t1"), "unexpected file tier1/{name}");
        match tier(id) {
            Some(t) => assert!(
                in_tier1(t),
                "tier1/{name} belongs to a segment in {t:?} (manifest: {:?})",
                id.and_then(|id| view.get(&id))
            ),
            None if retired(id) => retired_files += 1,
            None => panic!("orphan tier1/{name}"),
        }
    }
    assert!(
        !root.join("quarantine").exists(),
        "kill -9 must never quarantine anything"
    );
    retired_files
}

/// What an earlier check saw at one sequence: its shape and the CRC-32C of its payload. Once a
/// parent check has seen a record (and closed the log, syncing it) the record may never change.
type Known = Vec<(Shape, u32)>;

/// Reopen the root and check every invariant. Returns the record count and a recovery summary.
///
/// The parent opens with the default Tier 0 budget (nothing is evicted while it checks) and, for
/// the tiered scenario, first compares what the kill left on disk with what recovery did.
#[allow(clippy::too_many_arguments)]
fn check_root(
    root: &Path,
    scenario: &Scenario,
    durability: Durability,
    tier2: Option<&Tier2Check>,
    retention: &Retention,
    acked: &HashMap<u64, u64>,
    known: &mut Known,
    totals: &mut Totals,
) -> (u64, String) {
    let site = scenario.tiered.then(|| kill_site(root, tier2));
    // The catalog as the kill left it (there is none before the first publication).
    let remote = tier2.and_then(|t2| match RemoteReader::open(t2.config(), LOG) {
        Ok(reader) => Some(reader),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => panic!("a remote reader on the catalog the kill left: {e}"),
    });
    let mut config = ManagerConfig::new(root);
    if let Some(t2) = tier2 {
        config.tier2 = Some(t2.config());
        // The parent's reads fetch and hydrate nothing: files change only when it says so.
        config.hydrate_after_passes = 0;
    }
    let manager = AofManager::open(config).expect("reopen root after kill");
    // Reopened in the child's mode: a `None` open leaves the segments the child rolled but did
    // not seal to the background sealer.
    let log = manager
        .open_log(LOG, log_config_with(durability))
        .unwrap_or_else(|e| {
            panic!(
                "reopen log: {e}\nthe manifest says (id: state): {:?}\nsegment files: {:?}",
                manifest_view(root),
                files_in(&root.join("logs").join(LOG).join("segments"))
            )
        });
    let report = manager.recovery_report(LOG).expect("recovery report");
    assert!(
        report.quarantined.is_empty(),
        "kill -9 must never quarantine a segment: {report:?}"
    );
    let mut tier_summary = String::new();
    if let Some(site) = site {
        assert_eq!(
            report.compressions_restarted as u64, site.compressing,
            "recovery restarts exactly the compressions in flight ({site:?}): {report:?}"
        );
        assert!(
            report.tier0_dropped.is_empty() && report.tier1_dropped.is_empty(),
            "kill -9 damages no copy in either tier: {report:?}"
        );
        assert!(
            manager.wait_for_tier1(&log, Duration::from_secs(30)),
            "restarted compressions finish: {:?}",
            manager.tier_stats()
        );
        // The parent's upload workers pick up what the child left unuploaded; until they are
        // done, the log's segments and the manifest may disagree about Tier 2 for a moment.
        if tier2.is_some() {
            assert!(
                manager.wait_for_tier2(&log, Duration::from_secs(60)),
                "the parent's uploads finish: {:?}",
                manager.tier_stats().tier2
            );
        }
        totals.retired_files_left = check_tier_files(root, &manager, &log);
        totals.kills_in_compression += u64::from(site.compressing > 0);
        totals.kills_writing_tier1 += u64::from(site.tier1_tmp > 0);
        totals.kills_in_eviction_or_hydration += u64::from(site.evicted_but_present > 0);
        totals.kills_writing_hydration += u64::from(site.hydration_tmp > 0);
        totals.compressions_restarted += report.compressions_restarted as u64;
        tier_summary = format!(
            "; tier1 {} restarted {} evicted-left {} hydration-tmp {}",
            report.tier1_segments,
            report.compressions_restarted,
            site.evicted_but_present,
            site.hydration_tmp
        );
        if tier2.is_some() {
            totals.kills_with_upload_backlog += u64::from(site.upload_backlog > 0);
            totals.kills_uploaded_unrecorded += u64::from(site.uploaded_unrecorded > 0);
            totals.kills_tier1_released_present += u64::from(site.tier1_released_present > 0);
            totals.kills_fetch_tmp += u64::from(site.fetch_tmp > 0);
            totals.kills_with_tier2_only += u64::from(site.tier2_only > 0);
            tier_summary.push_str(&format!(
                "; tier2-only {} backlog {} unrecorded {} released-left {} fetch-tmp {}",
                site.tier2_only,
                site.upload_backlog,
                site.uploaded_unrecorded,
                site.tier1_released_present,
                site.fetch_tmp
            ));
        }
    }
    let next = log.next_seq();
    if report.seals_resumed > 0 || report.seal_syncs_deferred > 0 {
        // Left to the background sealer or the next sync, maybe still unsynced: the watermark
        // must say so until a sync, and a flush makes everything durable.
        assert_eq!(durability, Durability::None, "{report:?}");
        assert!(
            log.durable_watermark() < next,
            "the watermark must not cover segments nobody synced: {report:?}"
        );
        totals.seals_resumed += report.seals_resumed as u64;
        totals.seal_syncs_deferred += report.seal_syncs_deferred as u64;
        totals.kills_with_seals_resumed += 1;
        log.flush().expect("flush after a deferred-seal open");
    }
    assert_eq!(
        log.durable_watermark(),
        next,
        "everything recovered is durable"
    );

    assert!(
        next >= known.len() as u64,
        "the log shrank from {} to {next} records",
        known.len()
    );

    // Retention removed whole segments below a floor a child asked for, and at least up to the
    // first sequence a finished call returned; never a record no check had seen.
    let first = log.first_seq();
    assert!(
        first >= retention.acknowledged && first <= retention.requested,
        "the log starts at {first}; the children asked for {} and saw {}",
        retention.requested,
        retention.acknowledged
    );
    assert!(
        first <= known.len() as u64,
        "retention removed records {}..{first} no check had seen",
        known.len()
    );
    if first > 0 {
        let e = log.read(first - 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "read below the first: {e}");
    }

    // Every record is readable, dense and well formed; records seen before are unchanged.
    let mut count = 0u64;
    for (k, record) in log.reader(first).enumerate() {
        let i = first as usize + k;
        let record = record.unwrap_or_else(|e| panic!("reading seq {i} of {next}: {e}"));
        assert_eq!(record.seq(), i as u64, "sequences are dense");
        let crc = aof2::format::crc32c(record.payload());
        if let Some(&(_, old_crc)) = known.get(i) {
            assert_eq!(crc, old_crc, "seq {i} changed since an earlier check");
        } else {
            let s = classify(record.payload())
                .unwrap_or_else(|e| panic!("seq {i} (of {next}) is garbage: {e}"));
            known.push((s, crc));
        }
        count += 1;
    }
    assert_eq!(count, next - first, "reader({first}) yields every record");
    let shapes: Vec<Shape> = known.iter().map(|&(s, _)| s).collect();
    totals.records_checked += count;

    // Every acknowledged record is present byte for byte (those below the first sequence were,
    // when an earlier check read them).
    for (&seq, &id) in acked {
        assert!(
            seq < next,
            "acknowledged seq {seq} (id {id:#x}) lost: log has {next} records"
        );
        assert_eq!(
            shapes[seq as usize],
            shape(id),
            "acknowledged seq {seq} holds the wrong record (want id {id:#x})"
        );
    }
    totals.acked_checked += acked.len() as u64;

    // No id twice; each writer's records are in order with no holes; batches are whole.
    let mut seen = HashSet::new();
    let mut per_writer: HashMap<(u64, u64), Vec<(u64, u64)>> = HashMap::new();
    for (seq, s) in shapes.iter().enumerate() {
        if let Shape::Full { id, .. } = *s {
            assert!(seen.insert(id), "id {id:#x} appears twice (again at {seq})");
            let (run, writer, counter) = split_id(id);
            per_writer
                .entry((run, writer))
                .or_default()
                .push((counter, seq as u64));
        }
    }
    for (&(run, writer), list) in &per_writer {
        let mut expect_next = 0;
        for &(counter, seq) in list {
            assert!(
                counter >= expect_next,
                "run {run} writer {writer}: counter {counter} at seq {seq} out of order"
            );
            for missing in expect_next..counter {
                assert!(
                    !matches!(shape(make_id(run, writer, missing)), Shape::Full { .. }),
                    "run {run} writer {writer}: record {missing} missing before {counter} (seq {seq})"
                );
            }
            expect_next = counter + 1;
            let (start, n) = batch_of(run, writer, counter);
            let first_seq = seq - (counter - start);
            for j in 0..n {
                let at = first_seq + j;
                assert!(
                    at < next,
                    "run {run} writer {writer}: batch {start}+{n} cut at seq {at} (log has {next})"
                );
                assert_eq!(
                    shapes[at as usize],
                    shape(make_id(run, writer, start + j)),
                    "run {run} writer {writer}: batch {start}+{n} is not whole at seq {at}"
                );
            }
        }
    }

    let verify = manager.verify_log(&log);
    assert!(verify.is_clean(), "verify after kill: {verify:?}");
    assert_eq!(verify.records, next - first, "verify checked every record");
    if let Some(t2) = tier2 {
        let summary = check_tier2(root, &manager, &log, t2, remote, acked, known, totals);
        tier_summary.push_str(&summary);
    }
    let summary = format!(
        "sealed {} scanned {} cut-tails {} dropped-frames {} dropped-segments {}{tier_summary}",
        report.sealed_segments,
        report.scanned_segments,
        report.cut_tails.len(),
        report.dropped_incomplete_frames,
        report.dropped_segments
    );
    manager.close().expect("close after check");
    (next, summary)
}

/// The Tier 2 checks after a kill, on the reopened log (every record of it already checked and
/// in `known`). Returns a summary for the iteration's line.
///
/// 1. A remote reader on the catalog the kill left reads every record it lists, as the log has
///    them (the catalog may lag the manifest, and may still list segments retention removed
///    whose objects the kill kept from deletion).
/// 2. Once the parent uploaded what the child had not: every segment the manifest records as
///    uploaded is in the bucket under its content-named key, with the recorded length and
///    CRC-32C, equal to the local Tier 1 file when there is one; any other segment object
///    belongs to a segment retention removed. The catalog lists exactly the sealed segments.
/// 3. With both local tiers evicted, every sealed segment is held only by Tier 2 and every
///    record reads back from it.
#[allow(clippy::too_many_arguments)]
fn check_tier2(
    root: &Path,
    manager: &AofManager,
    log: &aof2::Aof,
    t2: &Tier2Check,
    remote: Option<RemoteReader>,
    acked: &HashMap<u64, u64>,
    known: &Known,
    totals: &mut Totals,
) -> String {
    let (first, next) = (log.first_seq(), log.next_seq());
    let check = |what: &str, seq: u64, bytes: &[u8]| {
        let &(_, crc) = known
            .get(seq as usize)
            .unwrap_or_else(|| panic!("{what}: seq {seq} is beyond the log ({next})"));
        assert_eq!(
            aof2::format::crc32c(bytes),
            crc,
            "{what}: seq {seq} differs from the log"
        );
        if let Some(&id) = acked.get(&seq) {
            assert!(
                bytes == payload(id).as_slice(),
                "{what}: acknowledged seq {seq} is not id {id:#x}"
            );
        }
    };

    // 1. The catalog the kill left.
    let mut catalog_before = None;
    if let Some(remote) = &remote {
        // Segments the child retired before the kill may be listed by its last catalog; the
        // reopen's sweep deletes their objects once its own catalog is out. Check the rest.
        let (from, end) = (remote.first_seq().max(log.first_seq()), remote.end_seq());
        assert!(
            end <= next,
            "the catalog lists records {from}..{end}, the log has {next}"
        );
        let mut n = 0;
        for (k, record) in remote.iter_from(from).enumerate() {
            let record = record.unwrap_or_else(|e| panic!("remote read {}: {e}", from + k as u64));
            assert_eq!(record.seq(), from + k as u64);
            check("remote reader", record.seq(), record.payload());
            n += 1;
        }
        assert_eq!(
            n,
            end - from,
            "the remote reader yields what the catalog lists"
        );
        totals.remote_records_checked += n;
        catalog_before = Some((from, end));
    }

    // 2. Everything sealed uploaded; the bucket and the manifest agree.
    assert!(
        manager.wait_for_tier2(log, Duration::from_secs(60)),
        "the parent's uploads finish: {:?}",
        manager.tier_stats().tier2
    );
    let (log_id, view) = manifest_state(root);
    let oldest = view.keys().next().copied().unwrap_or(0);
    let mut referenced = HashSet::new();
    for (&id, m) in &view {
        let Some(up) = m.tier2 else {
            assert!(!m.sealed, "sealed segment {id} is not uploaded: {m:?}");
            continue;
        };
        let key = t2.segment_key(log_id, id, up.footer_crc);
        let bytes = t2
            .server
            .object_bytes(t2.bucket(), &key)
            .unwrap_or_else(|| {
                panic!("segment {id}: the manifest records an upload to {key}, the bucket lacks it")
            });
        assert_eq!(bytes.len() as u64, up.file_len, "{key}: length");
        assert_eq!(
            aof2::format::crc32c(&bytes),
            up.object_crc,
            "{key}: the object's CRC is not the one recorded"
        );
        if m.tier1 && m.tier1_file != Some((up.file_len, up.footer_crc)) {
            // Compressed again after the upload (an open queues compressions of Tier 0 segments
            // without a Tier 1 copy, whether or not Tier 2 holds them): another file.
            totals.recompressed_after_upload.insert(id);
        } else if m.tier1 {
            let path = root
                .join("logs")
                .join(LOG)
                .join("tier1")
                .join(format!("{id:016x}.t1"));
            let local = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                local == bytes,
                "{key} differs from {} ({} bytes, CRC {:#010x}); the manifest: {m:?}; \
                 the segment's edits: {:?}",
                path.display(),
                local.len(),
                aof2::format::crc32c(&local),
                segment_history(root, id)
            );
        }
        referenced.insert(key);
        totals.objects_checked += 1;
    }
    let log_hex = format!("{log_id:032x}");
    let mut leaked = 0;
    for (key, of, id) in t2.segment_objects() {
        assert_eq!(of, log_hex, "{key} belongs to another log");
        if !referenced.contains(&key) {
            assert!(
                id < oldest,
                "{key} is referenced by nothing (the manifest: {:?})",
                view.get(&id)
            );
            leaked += 1;
        }
    }
    totals.leaked_objects = leaked;
    let info = manager.log_info(log);
    let sealed_end = info
        .segments
        .iter()
        .filter(|s| s.state == SegmentState::Sealed)
        .map(|s| s.end_seq)
        .max()
        .unwrap_or(first);
    let fresh = RemoteReader::open(t2.config(), LOG).expect("remote reader after the uploads");
    assert_eq!(
        (fresh.first_seq(), fresh.end_seq()),
        (first, sealed_end),
        "the parent's catalog lists exactly the sealed segments"
    );
    // Records the catalog the kill left did not list yet.
    let listed_from = catalog_before.map_or(first, |(_, end)| end.max(first));
    for (k, record) in fresh.iter_from(listed_from).enumerate() {
        let record =
            record.unwrap_or_else(|e| panic!("remote read {}: {e}", listed_from + k as u64));
        check(
            "remote reader after uploads",
            record.seq(),
            record.payload(),
        );
        totals.remote_records_checked += 1;
    }

    // 3. Only Tier 2 left.
    manager.evict_tier0(log).expect("evict Tier 0");
    manager.evict_tier1(log).expect("evict Tier 1");
    for s in &manager.log_info(log).segments {
        if s.state == SegmentState::Sealed {
            assert!(
                s.tier == TierLocation::None && s.in_tier2,
                "segment {} is not held by Tier 2 alone after evicting both tiers: {s:?}",
                s.id
            );
        }
    }
    check_tier_files(root, manager, log);
    let mut n = 0;
    for (k, record) in log.reader(first).enumerate() {
        let seq = first + k as u64;
        let record = record.unwrap_or_else(|e| panic!("read {seq} from Tier 2: {e}"));
        assert_eq!(record.seq(), seq);
        check("Tier 2 alone", seq, record.payload());
        n += 1;
    }
    assert_eq!(n, next - first);
    totals.tier2_only_records_checked += sealed_end - first;
    format!(
        "; catalog {} objects {} leaked {leaked}",
        catalog_before.map_or("none".to_string(), |(a, b)| format!("{a}..{b}")),
        referenced.len()
    )
}

#[test]
fn kill9_acknowledged_records_survive() {
    crash_loop(&PLAIN);
}

#[test]
fn kill9_during_tiering_acknowledged_records_survive() {
    crash_loop(&TIERED);
}

#[test]
fn kill9_during_tier2_acknowledged_records_survive() {
    crash_loop(&TIER2);
}

/// A fault the parent injects into the S3 server while a Tier 2 child runs.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// A fifth of requests answered `503 SlowDown`: retries.
    SlowDown,
    /// Every request answered `503`: the breaker opens, uploads wait, Tier 2 reads fail fast.
    Outage,
    /// A tenth of connections closed without an answer.
    DropConnections,
    /// No answers at all: requests time out.
    Hang,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::SlowDown => "slow-down",
            Fault::Outage => "outage",
            Fault::DropConnections => "dropped-connections",
            Fault::Hang => "hang",
        }
    }

    fn set(self, server: &S3Server) {
        let faults = server.faults();
        match self {
            Fault::SlowDown => faults.slow_down(0.2),
            Fault::Outage => faults.outage(true),
            Fault::DropConnections => faults.drop_connections(0.1),
            Fault::Hang => faults.hang(true),
        }
    }
}

fn crash_loop(scenario: &Scenario) {
    let iterations: u64 = std::env::var("AOF2_CRASH_ITERATIONS")
        .ok()
        .map(|v| v.parse().expect("AOF2_CRASH_ITERATIONS"))
        .unwrap_or(scenario.default_iterations);
    let seed: u64 = std::env::var("AOF2_CRASH_SEED")
        .ok()
        .map(|v| v.parse().expect("AOF2_CRASH_SEED"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!(
        "crash test {}: seed {seed} (AOF2_CRASH_SEED), {iterations} iterations",
        scenario.child
    );
    let mut rng = XorShift(seed);
    let tier2 = scenario.tier2.then(Tier2Check::start);
    let mut retention = Retention::default();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let exe = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut acked: HashMap<u64, u64> = HashMap::new();
    let mut totals = Totals::default();
    let mut known = Known::new();
    let mut final_count = 0;
    // Run a private copy of this binary: a concurrent `cargo test` may re-link the original path
    // while the test runs, and parent and child must be the same build.
    let child_exe = dir.path().join("crash-child");
    std::fs::copy(&exe, &child_exe).expect("copy test binary");

    for iteration in 0..iterations {
        let run = iteration + 1;
        let mut command = Command::new(&child_exe);
        command
            .args([
                "--ignored",
                "--exact",
                scenario.child,
                "--nocapture",
                "--test-threads=1",
            ])
            .env(scenario.root_env, &root)
            .env(RUN_ENV, run.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(t2) = &tier2 {
            let options: Vec<String> = t2
                .target
                .options
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            command
                .env(TIER2_URL_ENV, &t2.target.url)
                .env(TIER2_OPTIONS_ENV, options.join("\n"));
        }
        let mut child = command.spawn().expect("spawn child");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if buf.last() != Some(&b'\n') {
                    break; // a partial last line: the kill landed mid-print
                }
                buf.pop();
                if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                    break;
                }
            }
        });

        let mut lines = Vec::new();
        // Usually kill a while after the child is writing; sometimes early (during open/recovery).
        let after_ready = !rng.next().is_multiple_of(4);
        if after_ready {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => {
                        let ready = line.contains("AOF2READY") || line.contains("AOF2ERROR");
                        lines.push(line);
                        if ready {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        let delay = 5 + rng.next() % (scenario.max_kill_delay_ms - 4);
        // With Tier 2, about half the runs get a fault from a random moment on, which usually
        // ends a little later (and otherwise lasts until the kill).
        let fault = tier2
            .as_ref()
            .filter(|t2| !t2.server.external())
            .and_then(|_| match rng.next() % 8 {
                0 => Some(Fault::SlowDown),
                1 => Some(Fault::Outage),
                2 => Some(Fault::DropConnections),
                3 => Some(Fault::Hang),
                _ => None,
            });
        match (fault, &tier2) {
            (Some(fault), Some(t2)) => {
                let on = rng.next() % delay;
                let off = on + 20 + rng.next() % 200;
                std::thread::sleep(Duration::from_millis(on));
                fault.set(&t2.server);
                if off < delay {
                    std::thread::sleep(Duration::from_millis(off - on));
                    t2.server.faults().clear();
                    std::thread::sleep(Duration::from_millis(delay - off));
                } else {
                    std::thread::sleep(Duration::from_millis(delay - on));
                }
                *totals.fault_runs.entry(fault.name()).or_default() += 1;
            }
            _ => std::thread::sleep(Duration::from_millis(delay)),
        }
        let _ = child.kill();
        let status = child.wait().expect("wait for child");
        reader.join().expect("stdout reader");
        lines.extend(rx.try_iter());
        if let Some(t2) = tier2.as_ref().filter(|t2| !t2.server.external()) {
            // Requests of the dead child that the server still holds finish (or fail) now,
            // before the parent looks.
            t2.server.faults().clear();
            if fault.is_some() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }

        if let Some(e) = lines.iter().find(|l| l.contains("AOF2ERROR")) {
            panic!("iteration {iteration}: child reported {e}");
        }
        assert_eq!(
            status.signal(),
            Some(9),
            "iteration {iteration}: child exited on its own ({status}); last lines: {:?}",
            &lines[lines.len().saturating_sub(5)..]
        );
        let mut acks_this_run = 0;
        let mut last_stats = None;
        for line in &lines {
            if let Some(rest) = line.strip_prefix("AOF2STATS ") {
                let v: Vec<u64> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                last_stats = Some(v);
                continue;
            }
            if let Some(floor) = line.strip_prefix("AOF2RETAIN ") {
                retention.requested = retention.requested.max(floor.parse().unwrap());
                continue;
            }
            if let Some(first) = line.strip_prefix("AOF2RETAINED ") {
                retention.acknowledged = retention.acknowledged.max(first.parse().unwrap());
                totals.retentions += 1;
                continue;
            }
            let Some(rest) = line.strip_prefix("ack ") else {
                continue;
            };
            let mut parts = rest.split(' ');
            let seq: u64 = parts.next().unwrap().parse().unwrap();
            let id: u64 = parts.next().unwrap().parse().unwrap();
            if let Some(old) = acked.insert(seq, id) {
                panic!("seq {seq} acknowledged twice: id {old:#x} and {id:#x}");
            }
            acks_this_run += 1;
        }

        if let Some(v) = &last_stats {
            let [
                compressed,
                evictions,
                hydrations,
                timeouts,
                peak,
                failures,
                recycled,
            ] = v[..7]
            else {
                panic!("stats line {v:?}");
            };
            if let [
                uploads,
                tier1_evictions,
                fetches,
                retries,
                request_failures,
                opened,
                _,
            ] = v[7..]
            {
                totals.child_uploads += uploads;
                totals.child_tier1_evictions += tier1_evictions;
                totals.child_fetches += fetches;
                totals.child_tier2_retries += retries;
                totals.child_tier2_failures += request_failures;
                totals.child_breaker_opened += opened;
            }
            assert_eq!(failures, 0, "iteration {iteration}: compressions failed");
            let max = TIERED_BUDGET_SEGMENTS * SEGMENT_BYTES;
            assert!(
                peak <= max + SEGMENT_BYTES,
                "iteration {iteration}: Tier 0 peaked at {peak} bytes of {max}"
            );
            totals.child_compressed += compressed;
            totals.child_evictions += evictions;
            totals.child_hydrations += hydrations;
            totals.child_recycled += recycled;
            totals.child_admission_timeouts += timeouts;
        }

        let (count, summary) = check_root(
            &root,
            scenario,
            (scenario.durability)(run),
            tier2.as_ref(),
            &retention,
            &acked,
            &mut known,
            &mut totals,
        );
        final_count = count;
        println!(
            "iteration {iteration:3}: kill after {delay:3} ms ({}{}), {acks_this_run:5} acks, \
             {count:7} records; recovery: {summary}",
            if after_ready {
                "after ready"
            } else {
                "from spawn"
            },
            fault.map_or(String::new(), |f| format!(", {}", f.name()))
        );
    }

    println!(
        "crash test done: {iterations} iterations, {} acknowledged records checked \
         ({} distinct), {} record reads, final record count {final_count}, {:.1} s, seed {seed}",
        totals.acked_checked,
        acked.len(),
        totals.records_checked,
        started.elapsed().as_secs_f64()
    );
    assert!(
        iterations == 0 || !acked.is_empty(),
        "no record was ever acknowledged: the test checked nothing"
    );
    if scenario.tiered {
        println!(
            "tiering under the kills: children compressed {} segments, evicted {}, hydrated {} \
             ({} admission timeouts), prepared {} in evicted files; kills that found a compression in flight {} (writing the \
             Tier 1 file {}), an evicted or hydrated segment file not yet settled {}, a \
             hydration writing {}; recovery restarted {} compressions; {} reopens left {} \
             unsealed segments to the sealer and {} found sealed to the next sync",
            totals.child_compressed,
            totals.child_evictions,
            totals.child_hydrations,
            totals.child_admission_timeouts,
            totals.child_recycled,
            totals.kills_in_compression,
            totals.kills_writing_tier1,
            totals.kills_in_eviction_or_hydration,
            totals.kills_writing_hydration,
            totals.compressions_restarted,
            totals.kills_with_seals_resumed,
            totals.seals_resumed,
            totals.seal_syncs_deferred
        );
        assert!(
            iterations < 5 || (totals.child_compressed > 0 && totals.child_evictions > 0),
            "the children never compressed or evicted: the test exercised no tiering"
        );
        assert!(
            iterations < 5 || totals.child_recycled > 0,
            "no child prepared a segment in an evicted file: the kills never hit reused files"
        );
    }
    if let Some(t2) = &tier2 {
        if !t2.server.external() {
            totals.faults_injected = t2.server.faults().injected();
        }
        println!(
            "Tier 2 under the kills: children uploaded {} segments, released {} Tier 1 copies, \
             fetched {} back ({} retries, {} failed requests, breaker opened {} times); faults \
             {:?} ({} requests faulted); retention calls {} (log starts at {}); kills that \
             found an upload backlog {}, an upload not yet recorded {}, a released Tier 1 file \
             not yet removed {}, a fetch writing {}, segments only in Tier 2 {}; parent checked \
             {} objects, {} records through remote readers, {} records from Tier 2 alone; left \
             behind by retention: {} objects, {} files; segments compressed again after their \
             upload: {}",
            totals.child_uploads,
            totals.child_tier1_evictions,
            totals.child_fetches,
            totals.child_tier2_retries,
            totals.child_tier2_failures,
            totals.child_breaker_opened,
            totals.fault_runs,
            totals.faults_injected,
            totals.retentions,
            retention.acknowledged,
            totals.kills_with_upload_backlog,
            totals.kills_uploaded_unrecorded,
            totals.kills_tier1_released_present,
            totals.kills_fetch_tmp,
            totals.kills_with_tier2_only,
            totals.objects_checked,
            totals.remote_records_checked,
            totals.tier2_only_records_checked,
            totals.leaked_objects,
            totals.retired_files_left,
            totals.recompressed_after_upload.len()
        );
        assert!(
            iterations < 5
                || (totals.child_uploads > 0
                    && totals.child_tier1_evictions > 0
                    && totals.tier2_only_records_checked > 0),
            "the children never uploaded or released a Tier 1 copy: the test exercised no Tier 2"
        );
    }
}

// ------------------------------------------------------------------ a kill between two seals

/// A `None` log with Tier 1 seals rolled segments on the compression workers, several at once,
/// so a segment's `SegmentSealed` edit can reach the manifest before its predecessor's has even
/// started (the worker holding the predecessor was descheduled: the kill -9 test above hit this
/// under load). Simulated here: the WAL is cut right after the first seal recorded out of order
/// (every edit is synced before the next, so a kill leaves exactly such a prefix) and the
/// predecessors sealed later get back the file they had before their seal began: frames, then
/// zeros to the segment's capacity. The log must still open with every record of them all.
#[test]
fn kill_between_out_of_order_seals_leaves_the_log_openable() {
    for attempt in 0..8 {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let config = ManagerConfig {
            compress_threads: 4,
            tier1_frame_bytes: 16 << 10,
            ..ManagerConfig::new(&root)
        };
        let manager = AofManager::open(config).unwrap();
        let log = manager
            .open_log(LOG, log_config_with(Durability::None))
            .unwrap();
        let mut model = Vec::new();
        let mut bytes = 0;
        while bytes < 4 << 20 {
            let p = payload(make_id(1, 0, model.len() as u64));
            assert_eq!(log.append(&p).unwrap(), model.len() as u64);
            bytes += p.len();
            model.push(p);
        }
        manager.close().unwrap();
        drop((log, manager));

        // The first `SegmentSealed` recorded (in the same WAL file) before a lower segment's
        // seal had started: that segment's `CompressStarted`, which its seal records right after
        // writing the footer, comes later too.
        let edits = manifest_edits(&root);
        let position = |want: &dyn Fn(&Edit) -> bool| edits.iter().position(|(_, _, e)| want(e));
        let sealed_at = |id: u64| {
            position(&|e| matches!(e, Edit::SegmentSealed(info) if info.segment_id == id))
        };
        let started_at = |id: u64| {
            position(
                &|e| matches!(e, Edit::CompressStarted { segment_id, .. } if *segment_id == id),
            )
        };
        let not_started_before = |at: usize| -> Vec<u64> {
            let Edit::SegmentSealed(info) = &edits[at].2 else {
                return Vec::new();
            };
            (0..info.segment_id)
                .filter(|&other| {
                    sealed_at(other).is_some_and(|j| j > at && edits[j].0 == edits[at].0)
                        && started_at(other).is_none_or(|j| j > at)
                })
                .collect()
        };
        let Some(at) = (0..edits.len()).find(|&at| !not_started_before(at).is_empty()) else {
            println!("attempt {attempt}: no seal was recorded before an earlier one started");
            continue;
        };
        let earlier = not_started_before(at);
        let Edit::SegmentSealed(info) = &edits[at].2 else {
            unreachable!()
        };
        let (id, end) = (info.segment_id, info.base_seq + info.record_count);
        let (wal, cut, _) = &edits[at];
        println!(
            "attempt {attempt}: segment {id} sealed before {earlier:?} began sealing; cutting {} \
             at {cut}",
            wal.display()
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(wal)
            .unwrap()
            .set_len(*cut as u64)
            .unwrap();
        for other in &earlier {
            let path = root
                .join("logs")
                .join(LOG)
                .join("segments")
                .join(format!("{other:016x}.seg"));
            let bytes = std::fs::read(&path).unwrap();
            let footer = SegmentFooter::decode(&bytes[bytes.len() - 96..]).unwrap();
            let mut unsealed = bytes[..footer.records_end as usize].to_vec();
            unsealed.resize(SEGMENT_BYTES as usize, 0);
            std::fs::write(&path, unsealed).unwrap();
        }

        let manager = AofManager::open(ManagerConfig::new(&root)).unwrap();
        let log = manager.open_log(LOG, log_config()).unwrap_or_else(|e| {
            panic!(
                "a kill right after segment {id} was sealed before {earlier:?} leaves a log \
                 that does not open: {e}"
            )
        });
        let next = log.next_seq();
        assert!(
            next >= end,
            "segment {id} is sealed (records up to {end}), the log has {next}"
        );
        for (seq, record) in log.reader(0).enumerate() {
            let record = record.unwrap_or_else(|e| panic!("read {seq}: {e}"));
            assert!(record.payload() == model[seq].as_slice(), "seq {seq}");
        }
        let verify = manager.verify_log(&log);
        assert!(verify.is_clean(), "{verify:?}");
        assert_eq!(verify.records, next);
        manager.close().unwrap();
        return;
    }
}

// ------------------------------------------------------------------ kills around Tier 1 copies

/// A log with Tier 2 whose sealed segments are all uploaded (and still in Tier 0 and Tier 1).
fn uploaded_log(root: &Path, t2: &Tier2Check) -> (AofManager, aof2::Aof, Vec<aof2::SegmentInfo>) {
    let config = ManagerConfig {
        tier2: Some(t2.config()),
        tier1_frame_bytes: 16 << 10,
        hydrate_after_passes: 0,
        ..ManagerConfig::new(root)
    };
    let manager = AofManager::open(config).unwrap();
    let log = manager.open_log(LOG, log_config()).unwrap();
    for i in 0..300 {
        log.append(&payload(make_id(1, 0, i))).unwrap();
    }
    assert!(manager.wait_for_tier2(&log, Duration::from_secs(60)));
    let sealed: Vec<_> = manager
        .log_info(&log)
        .segments
        .into_iter()
        .filter(|s| s.state == SegmentState::Sealed)
        .collect();
    assert!(sealed.len() >= 3, "{sealed:?}");
    (manager, log, sealed)
}

/// Reopen after a simulated kill. A Tier 1 budget of one byte keeps the open from compressing
/// anything (it would write Tier 1 files of its own while the test looks).
fn reopen_with_tier2(root: &Path, t2: &Tier2Check) -> (AofManager, aof2::Aof) {
    let config = ManagerConfig {
        tier2: Some(t2.config()),
        tier1_max_bytes: 1,
        ..ManagerConfig::new(root)
    };
    let manager = AofManager::open(config).unwrap();
    let log = manager.open_log(LOG, log_config()).unwrap();
    (manager, log)
}

/// A segment in Tier 0, Tier 1 and Tier 2 gives up its Tier 1 copy (`Tier1Evicted`, recorded
/// before the unlink); a kill between the edit and the unlink leaves the `.t1` file behind.
/// Simulated: the file is put back after the eviction. The reopen must remove it.
#[test]
fn kill_between_tier1_release_and_unlink_leaves_no_file() {
    let t2 = Tier2Check::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (manager, log, sealed) = uploaded_log(&root, &t2);
    let segment = &sealed[1];
    assert_eq!(segment.tier, TierLocation::Tier0And1, "{segment:?}");
    let t1 = root
        .join("logs")
        .join(LOG)
        .join("tier1")
        .join(format!("{:016x}.t1", segment.id));
    let bytes = std::fs::read(&t1).unwrap();
    assert!(manager.evict_tier1(&log).unwrap() > 0);
    assert!(!t1.exists());
    manager.close().unwrap();
    drop((log, manager));
    std::fs::write(&t1, &bytes).unwrap();

    let (manager, log) = reopen_with_tier2(&root, &t2);
    let info = manager.log_info(&log);
    let now = info.segments.iter().find(|s| s.id == segment.id).unwrap();
    assert_eq!(now.tier, TierLocation::Tier0, "{now:?}");
    assert!(
        !t1.exists(),
        "{} is left behind: the manifest released segment {}'s Tier 1 copy (it is in Tier 0 \
         and Tier 2), recovery did not remove the file",
        t1.display(),
        segment.id
    );
    check_tier_files(&root, &manager, &log);
}

/// A segment held only by Tier 2 is fetched back into Tier 1 (download, then
/// `sys::write_atomic` of `tier1/<id>.t1`, then `Tier1Fetched`); a kill while the download is
/// written leaves write_atomic's temporary file, `tier1/<id>.tmp`. Simulated: the temporary file
/// is created after the segment left both local tiers. The reopen must remove it.
#[test]
fn kill_during_a_fetch_from_tier2_leaves_no_file() {
    let t2 = Tier2Check::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (manager, log, sealed) = uploaded_log(&root, &t2);
    manager.evict_tier0(&log).unwrap();
    manager.evict_tier1(&log).unwrap();
    let segment = &sealed[1];
    manager.close().unwrap();
    drop((log, manager));
    let tier1_dir = root.join("logs").join(LOG).join("tier1");
    // The temporary file of a fetch: `sys::write_atomic` appends `.tmp` to `tier1/<id>.t1`.
    let tmp = tier1_dir.join(format!("{:016x}.t1.tmp", segment.id));
    std::fs::write(&tmp, vec![0x5a; 4096]).unwrap();

    let (manager, log) = reopen_with_tier2(&root, &t2);
    let info = manager.log_info(&log);
    let now = info.segments.iter().find(|s| s.id == segment.id).unwrap();
    assert_eq!(now.tier, TierLocation::None, "{now:?}");
    assert!(
        !tmp.exists(),
        "{} is left behind: recovery removes tier1/<id>.t1.tmp and tier1/<id>.t1 of a \
         segment without a recorded Tier 1 copy",
        tmp.display()
    );
    check_tier_files(&root, &manager, &log);
}
