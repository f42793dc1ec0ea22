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
//! Environment: `AOF2_CRASH_ITERATIONS` (default 50 plain, 30 tiered), `AOF2_CRASH_SEED`
//! (default: from the clock).

use std::collections::{BTreeMap, HashMap, HashSet};
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
use aof2::{AofManager, Durability, ErrorKind, LogConfig, ManagerConfig, TierLocation};

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
}

const PLAIN: Scenario = Scenario {
    child: "child_writer",
    root_env: "AOF2_CRASH_CHILD_ROOT",
    default_iterations: 50,
    manager_config: plain_manager_config,
    durability: |_| Durability::Always,
    tiered: false,
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
    // Alternate: `Always` seals by syncing the segment, `None` seals by compressing it (the
    // Tier 1 copy is what is synced), so kills land in both ways of sealing.
    durability: |run| {
        if run.is_multiple_of(2) {
            Durability::None
        } else {
            Durability::Always
        }
    },
    tiered: true,
};

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
    emit(&format!("\nAOF2READY {}\n", log.next_seq()));
    if scenario.tiered {
        let reader = log.clone();
        std::thread::spawn(move || reread_old_records(&reader, run));
        let manager = manager.clone();
        std::thread::spawn(move || {
            loop {
                let s = manager.tier_stats();
                emit(&format!(
                    "AOF2STATS {} {} {} {} {} {}\n",
                    s.segments_compressed,
                    s.evictions,
                    s.hydrations,
                    s.admission_timeouts,
                    s.tier0_peak_bytes,
                    s.compress_failures
                ));
                std::thread::sleep(Duration::from_millis(10));
            }
        });
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
/// is hydrated back into Tier 0), sometimes with an iterator, checking that every payload is one
/// a writer produces.
fn reread_old_records(log: &aof2::Aof, run: u64) {
    let fail = |what: String| {
        emit(&format!("\nAOF2ERROR reader: {what}\n"));
        std::process::exit(5);
    };
    let check = |seq: u64, record: aof2::Result<aof2::Record>| match record {
        Ok(r) if r.seq() != seq => fail(format!("read {seq} returned seq {}", r.seq())),
        Ok(r) => {
            if let Err(e) = classify(r.payload()) {
                fail(format!("seq {seq}: {e}"));
            }
        }
        Err(e) => fail(format!("read {seq}: {e}")),
    };
    let mut x = splitmix(run ^ 0x0EAD_0EAD);
    loop {
        let durable = log.durable_watermark();
        if durable < 400 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        x = splitmix(x);
        let start = x % (durable / 2);
        let end = (start + 120).min(durable);
        for _ in 0..3 {
            for seq in start..end {
                check(seq, log.read(seq));
            }
        }
        if x.is_multiple_of(4) {
            for (k, record) in log.reader(start).take(400).enumerate() {
                check(start + k as u64, record);
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
    /// From the children's last statistics before each kill.
    child_compressed: u64,
    child_evictions: u64,
    child_hydrations: u64,
    child_admission_timeouts: u64,
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

/// Replay the manifest into segment id -> state.
fn manifest_view(root: &Path) -> BTreeMap<u64, ManifestSegment> {
    let edits = manifest_edits(root).into_iter().map(|(_, _, e)| e);
    let mut view: BTreeMap<u64, ManifestSegment> = BTreeMap::new();
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
            Edit::Tier1Evicted { segment_id } => at(&mut view, segment_id).tier1 = false,
            Edit::Tier1Fetched { segment_id } => at(&mut view, segment_id).tier1 = true,
            // This test runs without Tier 2.
            Edit::Tier2Uploaded(_) => {}
            Edit::LogCreated { .. } | Edit::LogOpened { .. } => {}
        }
    }
    view
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

/// What a kill left on disk, read before recovery touches anything.
#[derive(Debug, Default)]
struct KillSite {
    compressing: u64,
    tier1_tmp: u64,
    evicted_but_present: u64,
    hydration_tmp: u64,
}

fn kill_site(root: &Path) -> KillSite {
    let log_dir = root.join("logs").join(LOG);
    if !log_dir.join("manifest").is_dir() {
        return KillSite::default();
    }
    let view = manifest_view(root);
    let mut site = KillSite {
        compressing: view.values().filter(|s| s.compressing).count() as u64,
        ..Default::default()
    };
    for (name, _) in files_in(&log_dir.join("tier1")) {
        if name.ends_with(".tmp") {
            site.tier1_tmp += 1;
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
    site
}

/// After a writable open (and every restarted compression finished): every file belongs to the
/// tier the log and the manifest say it is in, and nothing temporary is left.
fn check_tier_files(root: &Path, manager: &AofManager, log: &aof2::Aof) {
    let log_dir = root.join("logs").join(LOG);
    let info = manager.log_info(log);
    let view = manifest_view(root);
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
    for (name, id) in files_in(&log_dir.join("segments")) {
        assert!(
            !name.ends_with(".tmp"),
            "temporary file left: segments/{name}"
        );
        assert!(name.ends_with(".seg"), "unexpected file segments/{name}");
        match tier(id) {
            Some(t) => assert!(in_tier0(t), "segments/{name} belongs to a segment in {t:?}"),
            None => assert!(
                id.is_some_and(|id| view.contains_key(&id)),
                "orphan segments/{name}: not in the manifest"
            ),
        }
    }
    for (name, id) in files_in(&log_dir.join("tier1")) {
        assert!(!name.ends_with(".tmp"), "temporary file left: tier1/{name}");
        assert!(name.ends_with(".t1"), "unexpected file tier1/{name}");
        let t = tier(id).unwrap_or_else(|| panic!("orphan tier1/{name}"));
        assert!(in_tier1(t), "tier1/{name} belongs to a segment in {t:?}");
    }
    assert!(
        !root.join("quarantine").exists(),
        "kill -9 must never quarantine anything"
    );
}

/// What an earlier check saw at one sequence: its shape and the CRC-32C of its payload. Once a
/// parent check has seen a record (and closed the log, syncing it) the record may never change.
type Known = Vec<(Shape, u32)>;

/// Reopen the root and check every invariant. Returns the record count and a recovery summary.
///
/// The parent opens with the default Tier 0 budget (nothing is evicted while it checks) and, for
/// the tiered scenario, first compares what the kill left on disk with what recovery did.
fn check_root(
    root: &Path,
    scenario: &Scenario,
    acked: &HashMap<u64, u64>,
    known: &mut Known,
    totals: &mut Totals,
) -> (u64, String) {
    let site = scenario.tiered.then(|| kill_site(root));
    let manager = AofManager::open(ManagerConfig::new(root)).expect("reopen root after kill");
    let log = manager.open_log(LOG, log_config()).unwrap_or_else(|e| {
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
        check_tier_files(root, &manager, &log);
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
    }
    let next = log.next_seq();
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

    // Every record is readable, dense and well formed; records seen before are unchanged.
    let mut count = 0u64;
    for (i, record) in log.reader(0).enumerate() {
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
    assert_eq!(count, next, "reader(0) yields every record");
    let shapes: Vec<Shape> = known.iter().map(|&(s, _)| s).collect();
    totals.records_checked += next;

    // Every acknowledged record is present byte for byte.
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
    assert_eq!(verify.records, next, "verify checked every record");
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

#[test]
fn kill9_acknowledged_records_survive() {
    crash_loop(&PLAIN);
}

#[test]
fn kill9_during_tiering_acknowledged_records_survive() {
    crash_loop(&TIERED);
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
        let mut child = Command::new(&child_exe)
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
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
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
        let delay = 5 + rng.next() % 146;
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let status = child.wait().expect("wait for child");
        reader.join().expect("stdout reader");
        lines.extend(rx.try_iter());

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
            let [compressed, evictions, hydrations, timeouts, peak, failures] = v[..] else {
                panic!("stats line {v:?}");
            };
            assert_eq!(failures, 0, "iteration {iteration}: compressions failed");
            let max = TIERED_BUDGET_SEGMENTS * SEGMENT_BYTES;
            assert!(
                peak <= max + SEGMENT_BYTES,
                "iteration {iteration}: Tier 0 peaked at {peak} bytes of {max}"
            );
            totals.child_compressed += compressed;
            totals.child_evictions += evictions;
            totals.child_hydrations += hydrations;
            totals.child_admission_timeouts += timeouts;
        }

        let (count, summary) = check_root(&root, scenario, &acked, &mut known, &mut totals);
        final_count = count;
        println!(
            "iteration {iteration:3}: kill after {delay:3} ms ({}), {acks_this_run:5} acks, \
             {count:7} records; recovery: {summary}",
            if after_ready {
                "after ready"
            } else {
                "from spawn"
            }
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
             ({} admission timeouts); kills that found a compression in flight {} (writing the \
             Tier 1 file {}), an evicted or hydrated segment file not yet settled {}, a \
             hydration writing {}; recovery restarted {} compressions",
            totals.child_compressed,
            totals.child_evictions,
            totals.child_hydrations,
            totals.child_admission_timeouts,
            totals.kills_in_compression,
            totals.kills_writing_tier1,
            totals.kills_in_eviction_or_hydration,
            totals.kills_writing_hydration,
            totals.compressions_restarted
        );
        assert!(
            iterations < 5 || (totals.child_compressed > 0 && totals.child_evictions > 0),
            "the children never compressed or evicted: the test exercised no tiering"
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
