//! Randomized multi-threaded stress test of the public API: several logs with different
//! durabilities under a tight Tier 0 budget, writers, point readers, iterating readers,
//! followers, seal / truncate / evict / verify, and close + reopen of logs while others use them.
//!
//! STRESS_SEED (default: time based, printed) and STRESS_SECS (default 25) control a run;
//! STRESS_TIER2=1 adds a `file://` Tier 2 (uploads, Tier 1 eviction, remote readers).
//! Not part of the default run (it takes its full duration and two cores): `cargo nextest run -p
//! aof2 --test stress --run-ignored all`. Session 10 found a deadlock and a retention/reopen race
//! with it (both fixed, with focused tests in `basic.rs` and `retention.rs`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use aof2::{
    Aof, AofManager, Durability, Error, LogConfig, ManagerConfig, RemoteReader, Tier2Config,
};

const SEGMENT_BYTES: u64 = 64 * 1024;
const MODEL_CAP: usize = 4 << 20;
const KEEP: u64 = 800;

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix(self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

fn make_id(log: usize, writer: usize, counter: u64) -> u64 {
    ((log as u64 + 1) << 56) | ((writer as u64 + 1) << 48) | counter
}
fn id_log(id: u64) -> usize {
    ((id >> 56) as usize).wrapping_sub(1)
}

/// Payload fully determined by its id; the id is in the first 8 bytes.
fn gen_payload(id: u64) -> Vec<u8> {
    const ALPHA: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let h = splitmix(id ^ 0x5151_5151);
    let r = h % 100;
    let len = if r < 70 {
        16 + (h >> 8) % 200
    } else if r < 95 {
        200 + (h >> 8) % 4000
    } else {
        4000 + (h >> 8) % 26000
    } as usize;
    let mut v = vec![0u8; len];
    v[..8].copy_from_slice(&id.to_le_bytes());
    for (i, b) in v.iter_mut().enumerate().skip(8) {
        *b = ALPHA[(((h >> (i % 48)) as usize) + i + i / 97) % ALPHA.len()];
    }
    v
}

struct LogModel {
    idx: usize,
    name: String,
    config: LogConfig,
    /// seq -> acknowledged id (0 = unknown)
    acked: Vec<AtomicU64>,
    /// id -> seq for acknowledged records
    by_id: Mutex<HashMap<u64, u64>>,
    slot: RwLock<(Aof, u64)>,
    acked_count: AtomicU64,
    max_first_seen: AtomicU64,
}

struct Shared {
    m: AofManager,
    logs: Vec<LogModel>,
    stop: AtomicBool,
    violations: Mutex<Vec<String>>,
    unexpected: Mutex<Vec<String>>,
    counters: Mutex<HashMap<String, u64>>,
    ops: AtomicU64,
    heartbeats: Vec<(AtomicU64, AtomicUsize, AtomicBool)>,
    start: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn beat(&self, t: usize, op: usize) {
        self.heartbeats[t].0.store(self.now_ms(), Ordering::Relaxed);
        self.heartbeats[t].1.store(op, Ordering::Relaxed);
    }
    fn count(&self, what: impl Into<String>) {
        *self
            .counters
            .lock()
            .unwrap()
            .entry(what.into())
            .or_default() += 1;
    }
    fn violation(&self, msg: String) {
        eprintln!("VIOLATION: {msg}");
        let mut v = self.violations.lock().unwrap();
        if v.len() < 100 {
            v.push(msg);
        }
    }
    fn unexpected(&self, msg: String) {
        eprintln!("UNEXPECTED: {msg}");
        let mut v = self.unexpected.lock().unwrap();
        if v.len() < 100 {
            v.push(msg);
        }
    }
    fn handle(&self, l: usize) -> (Aof, u64) {
        self.logs[l].slot.read().unwrap().clone()
    }
    fn generation(&self, l: usize) -> u64 {
        self.logs[l].slot.read().unwrap().1
    }

    /// Classify an error from an operation on handle generation `g` of log `l`. Returns true
    /// when the handle must be re-fetched.
    fn classify(&self, l: usize, g: u64, op: &str, e: &Error) -> bool {
        match e {
            Error::Backpressure { .. } => {
                self.count(format!("backpressure:{op}"));
                false
            }
            Error::Closed(_) => {
                if self.generation(l) == g {
                    self.violation(format!(
                        "log {l} gen {g}: {op} got Closed but the log was not closed: {e}"
                    ));
                } else {
                    self.count(format!("closed:{op}"));
                }
                true
            }
            Error::Io { .. } if self.generation(l) != g => {
                // a closed (stale) handle reading a file the new instance evicted/removed
                self.count(format!("stale_handle_io:{op}"));
                eprintln!("NOTE: stale handle of log {l} gen {g}: {op}: {e}");
                true
            }
            other => {
                let stale = self.generation(l) != g;
                self.unexpected(format!(
                    "log {l} gen {g} (stale handle: {stale}): {op}: {other} (kind {:?}, {other:?})",
                    other.kind()
                ));
                stale
            }
        }
    }

    fn record_ack(&self, l: usize, seq: u64, id: u64, how: &str) {
        let lm = &self.logs[l];
        if seq as usize >= MODEL_CAP {
            panic!("model capacity exceeded");
        }
        if let Err(prev) =
            lm.acked[seq as usize].compare_exchange(0, id, Ordering::AcqRel, Ordering::Acquire)
        {
            self.violation(format!(
                "log {l}: seq {seq} acknowledged twice ({how}): first id {prev:#x}, now id {id:#x} (sequence reused)"
            ));
            return;
        }
        if let Some(old) = lm.by_id.lock().unwrap().insert(id, seq) {
            self.violation(format!(
                "log {l}: id {id:#x} acknowledged at seq {old} and {seq}"
            ));
        }
        lm.acked_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Check one record read back at `seq` of log `l`.
    fn check_record(&self, l: usize, seq: u64, got_seq: u64, payload: &[u8], ctx: &str) -> bool {
        if got_seq != seq {
            self.violation(format!(
                "log {l} {ctx}: asked seq {seq}, record says seq {got_seq}"
            ));
            return false;
        }
        if payload.len() < 16 {
            self.violation(format!(
                "log {l} {ctx} seq {seq}: payload of {} bytes",
                payload.len()
            ));
            return false;
        }
        let id = u64::from_le_bytes(payload[..8].try_into().unwrap());
        if id_log(id) != l {
            self.violation(format!(
                "log {l} {ctx} seq {seq}: record belongs to log {} (id {id:#x})",
                id_log(id)
            ));
            return false;
        }
        let want = gen_payload(id);
        if want.as_slice() != payload {
            let first_diff = want.iter().zip(payload).position(|(a, b)| a != b);
            self.violation(format!(
                "log {l} {ctx} seq {seq}: payload of id {id:#x} corrupted: {} bytes, want {}, first difference at {first_diff:?}",
                payload.len(),
                want.len()
            ));
            return false;
        }
        let acked = self.logs[l].acked[seq as usize].load(Ordering::Acquire);
        if acked != 0 && acked != id {
            self.violation(format!(
                "log {l} {ctx} seq {seq}: holds id {id:#x}, but id {acked:#x} was acknowledged at this seq"
            ));
            return false;
        }
        if acked == 0
            && let Some(&other) = self.logs[l].by_id.lock().unwrap().get(&id)
            && other != seq
        {
            self.violation(format!(
                "log {l} {ctx} seq {seq}: holds id {id:#x}, which was acknowledged at seq {other}"
            ));
            return false;
        }
        true
    }
}

/// STRESS_TIER2 set: the manager has a `file://` Tier 2 beside the root, and a Tier 1 budget
/// small enough that Tier 1 copies Tier 2 holds are released; workers also evict Tier 1, wait
/// for Tier 2 and read through remote readers.
fn tier2_mode() -> bool {
    std::env::var_os("STRESS_TIER2").is_some()
}

fn open_manager(root: &Path) -> AofManager {
    let mut config = ManagerConfig {
        compress_threads: 1,
        tier0_max_bytes: 10 * SEGMENT_BYTES,
        admission_timeout: Duration::from_secs(2),
        ..ManagerConfig::new(root)
    };
    if tier2_mode() {
        let store = root.with_extension("store");
        std::fs::create_dir_all(&store).unwrap();
        let mut t2 = Tier2Config::new(format!("file://{}", store.display()));
        t2.request_timeout = Duration::from_secs(5);
        t2.backoff_base = Duration::from_millis(10);
        t2.backoff_max = Duration::from_millis(200);
        config.tier2 = Some(t2);
        config.tier1_max_bytes = 16 * SEGMENT_BYTES;
    }
    AofManager::open(config).expect("open manager")
}

/// Read one record of log `l` through a new remote reader and check it against the model.
fn remote_read(s: &Shared, l: usize, h: &Aof, rng: &mut Rng) {
    let Some(t2) = s.m.config().tier2.clone() else {
        return;
    };
    let reader = match RemoteReader::open(t2, &s.logs[l].name) {
        Ok(r) => r,
        Err(Error::NotFound(_)) => {
            s.count("remote_no_catalog");
            return;
        }
        Err(e) => {
            s.unexpected(format!("log {l}: remote open: {e} ({e:?})"));
            return;
        }
    };
    let (first, end) = (reader.first_seq(), reader.end_seq());
    if end <= first {
        s.count("remote_empty");
        return;
    }
    let seq = first + rng.below(end - first);
    match reader.read(seq) {
        Ok(rec) => {
            s.check_record(l, seq, rec.seq(), rec.payload(), "remote");
            s.count("remote_read_ok");
        }
        // Retention went past it after the reader read its catalog (objects go after the
        // catalog stops listing them).
        Err(Error::NotFound(_)) if seq < h.first_seq() => s.count("remote_read_retired"),
        Err(e) => s.unexpected(format!(
            "log {l}: remote read({seq}) of {first}..{end}: {e} ({e:?}); local first_seq {}",
            h.first_seq()
        )),
    }
}

fn log_configs() -> Vec<(String, LogConfig)> {
    let d = [
        Durability::Always,
        Durability::Interval(Duration::from_millis(5)),
        Durability::None,
    ];
    d.iter()
        .enumerate()
        .map(|(i, &durability)| {
            (
                format!("log{i}"),
                LogConfig {
                    durability,
                    ..LogConfig::default().with_segment_bytes(SEGMENT_BYTES)
                },
            )
        })
        .collect()
}

const OP_NAMES: [&str; 14] = [
    "idle",
    "append",
    "append_batch",
    "append_nowait",
    "read",
    "reader",
    "seal",
    "truncate",
    "evict_tier0",
    "verify",
    "reopen",
    "follow",
    "final",
    "watchdog",
];

fn worker(s: Arc<Shared>, t: usize, seed: u64) {
    let mut rng = Rng(splitmix(seed ^ (t as u64 * 0x1234_5678_9abc)));
    let nlogs = s.logs.len();
    let mut counter: u64 = 0;
    let mut handles: Vec<(Aof, u64)> = (0..nlogs).map(|l| s.handle(l)).collect();
    while !s.stop.load(Ordering::Relaxed) {
        let l = rng.below(nlogs as u64) as usize;
        let (h, g) = handles[l].clone();
        let r = rng.below(1000);
        let refetch;
        s.ops.fetch_add(1, Ordering::Relaxed);
        if r < 250 {
            s.beat(t, 1);
            counter += 1;
            let id = make_id(l, t, counter);
            match h.append(&gen_payload(id)) {
                Ok(seq) => {
                    s.record_ack(l, seq, id, "append");
                    if h.durability() == Durability::Always && h.durable_watermark() <= seq {
                        s.violation(format!(
                            "log {l}: Always append returned seq {seq} but durable_watermark is {}",
                            h.durable_watermark()
                        ));
                    }
                    refetch = false;
                }
                Err(e) => refetch = s.classify(l, g, "append", &e),
            }
        } else if r < 350 {
            s.beat(t, 2);
            let k = 1 + rng.below(8) as usize;
            let ids: Vec<u64> = (0..k)
                .map(|_| {
                    counter += 1;
                    make_id(l, t, counter)
                })
                .collect();
            // keep batches small enough for one segment
            let payloads: Vec<Vec<u8>> = ids.iter().map(|&id| gen_payload(id)).collect();
            let total: usize = payloads.iter().map(Vec::len).sum();
            if total > 40_000 {
                refetch = false;
            } else {
                match h.append_batch(&payloads) {
                    Ok(first) => {
                        for (i, &id) in ids.iter().enumerate() {
                            s.record_ack(l, first + i as u64, id, "append_batch");
                        }
                        if h.durability() == Durability::Always
                            && h.durable_watermark() < first + k as u64
                        {
                            s.violation(format!(
                                "log {l}: Always batch {first}..{} returned but durable_watermark is {}",
                                first + k as u64,
                                h.durable_watermark()
                            ));
                        }
                        refetch = false;
                    }
                    Err(e) => refetch = s.classify(l, g, "append_batch", &e),
                }
            }
        } else if r < 450 {
            s.beat(t, 3);
            let n = 1 + rng.below(5);
            let mut last = None;
            let mut rf = false;
            for _ in 0..n {
                counter += 1;
                let id = make_id(l, t, counter);
                match h.append_nowait(&gen_payload(id)) {
                    Ok(seq) => {
                        s.record_ack(l, seq, id, "append_nowait");
                        last = Some(seq);
                    }
                    Err(e) => {
                        rf = s.classify(l, g, "append_nowait", &e);
                        break;
                    }
                }
            }
            if let Some(seq) = last
                && !rf
            {
                match h.wait_durable(seq) {
                    Ok(()) => {
                        if h.durable_watermark() <= seq {
                            s.violation(format!(
                                "log {l}: wait_durable({seq}) returned but durable_watermark is {}",
                                h.durable_watermark()
                            ));
                        }
                    }
                    Err(e) => rf = s.classify(l, g, "wait_durable", &e),
                }
            }
            refetch = rf;
        } else if r < 650 {
            s.beat(t, 4);
            let first = h.first_seq();
            let next = h.next_seq();
            let vis0 = h.durable_watermark();
            if next > first {
                // bias toward recent and old ends
                let seq = if rng.chance(500) {
                    next - 1 - rng.below((next - first).min(200))
                } else {
                    first + rng.below(next - first)
                };
                let acked = s.logs[l].acked[seq as usize].load(Ordering::Acquire) != 0;
                match h.read(seq) {
                    Ok(rec) => {
                        s.check_record(l, seq, rec.seq(), rec.payload(), "read");
                        s.count("read_ok");
                        refetch = false;
                    }
                    Err(Error::NotFound(msg)) => {
                        let f = h.first_seq();
                        let must = seq >= f
                            && (seq < vis0 || (acked && h.durability() == Durability::None));
                        if must && s.generation(l) == g {
                            s.violation(format!(
                                "log {l}: read({seq}) NotFound ({msg}); first_seq {f} (was {first}), durable before read {vis0}, acked {acked}, next_seq {next}"
                            ));
                        } else {
                            s.count("read_notfound_ok");
                        }
                        refetch = s.generation(l) != g;
                    }
                    Err(e) => refetch = s.classify(l, g, "read", &e),
                }
            } else {
                refetch = false;
            }
        } else if r < 730 {
            s.beat(t, 5);
            let first = h.first_seq();
            let next = h.next_seq();
            let start = first + rng.below(next.saturating_sub(first) + 1);
            let mut reader = h.reader(start);
            let mut expect = start;
            let mut rf = false;
            for item in reader.by_ref().take(300) {
                match item {
                    Ok(rec) => {
                        if !s.check_record(l, expect, rec.seq(), rec.payload(), "reader") {
                            break;
                        }
                        expect += 1;
                    }
                    Err(Error::NotFound(msg)) => {
                        let f = h.first_seq();
                        if expect >= f && s.generation(l) == g {
                            s.violation(format!(
                                "log {l}: reader from {start} at {expect}: NotFound ({msg}) but first_seq is {f}"
                            ));
                        } else {
                            s.count("reader_truncated");
                        }
                        rf = s.generation(l) != g;
                    }
                    Err(e) => rf = s.classify(l, g, "reader", &e),
                }
            }
            refetch = rf;
        } else if r < 800 {
            s.beat(t, 6);
            refetch = match h.seal() {
                Ok(_) => false,
                Err(e) => s.classify(l, g, "seal", &e),
            };
        } else if r < 830 {
            s.beat(t, 7);
            let first = h.first_seq();
            let next = h.next_seq();
            if next > first + KEEP && std::env::var_os("STRESS_NO_TRUNCATE").is_none() {
                let target = next - KEEP - rng.below(KEEP.min(next - first - KEEP));
                match h.truncate_before(target) {
                    Ok(f) => {
                        if f > target {
                            // another thread may have truncated further meanwhile
                            s.count("truncate_result_above_target");
                        }
                        if false {
                            s.violation(format!(
                                "log {l}: truncate_before({target}) returned first_seq {f} > target"
                            ));
                        }
                        if f < first && s.generation(l) == g {
                            s.violation(format!(
                                "log {l}: truncate_before({target}) returned {f} < earlier first_seq {first}"
                            ));
                        }
                        s.logs[l].max_first_seen.fetch_max(f, Ordering::AcqRel);
                        s.count("truncate_ok");
                        refetch = false;
                    }
                    Err(e) => refetch = s.classify(l, g, "truncate_before", &e),
                }
            } else {
                refetch = false;
            }
        } else if r < 900 {
            s.beat(t, 8);
            refetch = if tier2_mode() && rng.chance(400) {
                match s.m.evict_tier1(&h) {
                    Ok(_) => false,
                    Err(e) => s.classify(l, g, "evict_tier1", &e),
                }
            } else {
                match s.m.evict_tier0(&h) {
                    Ok(_) => false,
                    Err(e) => s.classify(l, g, "evict_tier0", &e),
                }
            };
        } else if r < 930 {
            s.beat(t, 9);
            let rep = s.m.verify_log(&h);
            if !rep.is_clean() {
                if s.generation(l) == g {
                    s.violation(format!("log {l}: verify_log not clean: {:?}", rep.problems));
                } else {
                    s.count("verify_unclean_stale");
                }
            }
            refetch = false;
        } else if r < 934 && std::env::var_os("STRESS_NO_REOPEN").is_none() {
            s.beat(t, 10);
            reopen(&s, l, &mut rng);
            refetch = true;
        } else {
            // a bit of thinking time / cheap queries
            if tier2_mode() && rng.chance(100) {
                remote_read(&s, l, &h, &mut rng);
            } else if tier2_mode() && rng.chance(50) {
                let _ = s.m.wait_for_tier2(&h, Duration::from_millis(rng.below(50)));
            }
            let _ = h.stats();
            if std::env::var_os("STRESS_NO_LOG_INFO").is_none() {
                let _ = s.m.log_info(&h);
            }
            refetch = false;
        }
        if refetch || rng.chance(20) {
            handles[l] = s.handle(l);
        }
        s.beat(t, 0);
    }
    s.heartbeats[t].2.store(true, Ordering::Relaxed);
}

/// Close the current handle of log `l` and open a new one; the write lock keeps others from
/// fetching a handle meanwhile.
fn reopen(s: &Shared, l: usize, rng: &mut Rng) {
    let lm = &s.logs[l];
    let mut slot = lm.slot.write().unwrap();
    let old = slot.0.clone();
    let g = slot.1;
    let close = old.close();
    let old_next = old.next_seq();
    let old_first = old.first_seq();
    let old_durable = old.durable_watermark();
    if let Err(e) = &close {
        s.unexpected(format!("log {l} gen {g}: close failed: {e} ({e:?})"));
    }
    let new = match s.m.open_log(&lm.name, lm.config.clone()) {
        Ok(h) => h,
        Err(e) => {
            s.violation(format!("log {l} gen {g}: reopen failed: {e} ({e:?})"));
            s.stop.store(true, Ordering::Relaxed);
            // keep the old handle; everything will fail with Closed
            slot.1 += 1;
            return;
        }
    };
    let nn = new.next_seq();
    let nf = new.first_seq();
    if nn != old_next {
        s.violation(format!(
            "log {l}: after close+reopen next_seq {nn}, before {old_next} (durable before {old_durable}, close result {close:?})"
        ));
    }
    if nf < old_first {
        s.violation(format!(
            "log {l}: after close+reopen first_seq {nf}, before {old_first}"
        ));
    }
    *slot = (new.clone(), g + 1);
    let to = new.next_seq();
    drop(slot);
    s.count("reopen");
    // Every record from the start must read back now (concurrent truncation may cut the front).
    let from = nf + rng.below((to - nf).min(KEEP) + 1);
    scan(s, l, &new, g + 1, from, to, true, "reopen-scan");
}

/// Read [from, to) with a reader; every seq must be present (each checked against the model).
#[allow(clippy::too_many_arguments)]
fn scan(
    s: &Shared,
    l: usize,
    h: &Aof,
    g: u64,
    from: u64,
    to: u64,
    tolerate_truncation: bool,
    ctx: &str,
) -> u64 {
    let mut expect = from;
    let mut reader = h.reader(from);
    let mut n = 0;
    while expect < to {
        match reader.next() {
            Some(Ok(rec)) => {
                if !s.check_record(l, expect, rec.seq(), rec.payload(), ctx) {
                    return n;
                }
                expect += 1;
                n += 1;
            }
            Some(Err(Error::NotFound(msg))) => {
                let f = h.first_seq();
                if tolerate_truncation && expect < f {
                    expect = f;
                    reader = h.reader(f);
                    continue;
                }
                s.violation(format!(
                    "log {l} {ctx}: reader at {expect} (range {from}..{to}): NotFound ({msg}), first_seq {f}"
                ));
                return n;
            }
            Some(Err(e)) => {
                if !s.classify(l, g, ctx, &e) {
                    // other error already recorded
                }
                return n;
            }
            None => {
                let vis = h.durable_watermark();
                s.violation(format!(
                    "log {l} {ctx}: reader ended at {expect}, expected records up to {to} (durable {vis}, next_seq {})",
                    h.next_seq()
                ));
                return n;
            }
        }
    }
    n
}

fn follower(s: Arc<Shared>, t: usize, l: usize, seed: u64) {
    let mut rng = Rng(splitmix(seed ^ 0xF011 ^ (l as u64) << 20));
    let (mut h, mut g) = s.handle(l);
    let first = h.first_seq();
    let mut next = first + rng.below(h.next_seq().saturating_sub(first) + 1);
    let mut reader = h.reader(next);
    while !s.stop.load(Ordering::Relaxed) {
        s.beat(t, 11);
        match reader.next_timeout(Duration::from_millis(50)) {
            Ok(Some(rec)) => {
                s.check_record(l, next, rec.seq(), rec.payload(), "follower");
                next += 1;
                s.count("follow_ok");
            }
            Ok(None) => {}
            Err(Error::NotFound(msg)) => {
                let f = h.first_seq();
                if next < f {
                    s.count("follower_truncated");
                    next = f;
                    reader = h.reader(next);
                } else {
                    s.violation(format!(
                        "log {l} follower at {next}: NotFound ({msg}) but first_seq is {f}"
                    ));
                    break;
                }
            }
            Err(e) => {
                if s.classify(l, g, "follower", &e) {
                    (h, g) = s.handle(l);
                    let f = h.first_seq();
                    if next < f {
                        next = f;
                    }
                    reader = h.reader(next);
                } else {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    s.heartbeats[t].2.store(true, Ordering::Relaxed);
}

/// Full check of a quiescent log: every seq in [first_seq, next_seq) reads back and matches the
/// model; every acknowledged seq at or above first_seq is covered.
fn full_check(s: &Shared, l: usize, h: &Aof, g: u64, ctx: &str) -> (u64, u64) {
    let first = h.first_seq();
    let next = h.next_seq();
    let floor = s.logs[l].max_first_seen.load(Ordering::Acquire);
    if first < floor {
        s.violation(format!(
            "log {l} {ctx}: first_seq {first} below an earlier truncation result {floor}"
        ));
    }
    // every acknowledged seq must be below next_seq
    let mut acked_in_range = 0;
    let mut unacked_in_range = 0;
    for seq in 0..MODEL_CAP as u64 {
        let id = s.logs[l].acked[seq as usize].load(Ordering::Acquire);
        if seq >= next {
            if id != 0 {
                s.violation(format!(
                    "log {l} {ctx}: seq {seq} was acknowledged but next_seq is {next}"
                ));
            }
            if seq > next + 1000 {
                break;
            }
            continue;
        }
        if seq >= first {
            if id != 0 {
                acked_in_range += 1
            } else {
                unacked_in_range += 1
            }
        }
    }
    let scanned = scan(s, l, h, g, first, next, false, ctx);
    for seq in (first..next).step_by(97) {
        match h.read(seq) {
            Ok(rec) => {
                s.check_record(l, seq, rec.seq(), rec.payload(), ctx);
            }
            Err(e) => s.violation(format!("log {l} {ctx}: read({seq}) failed: {e}")),
        }
    }
    eprintln!(
        "  {ctx} log {l}: first_seq {first} next_seq {next} durable {} scanned {scanned}, acked in range {acked_in_range}, unacknowledged in range {unacked_in_range}",
        h.durable_watermark()
    );
    (first, next)
}

#[test]
#[ignore = "randomized, 25 s: run on demand (see the module doc)"]
fn stress() {
    let seed: u64 = std::env::var("STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let secs: u64 = std::env::var("STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let workers: usize = std::env::var("STRESS_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    eprintln!("STRESS_SEED={seed} STRESS_SECS={secs} STRESS_WORKERS={workers}");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let m = open_manager(&root);
    let configs = log_configs();
    let logs: Vec<LogModel> = configs
        .iter()
        .enumerate()
        .map(|(i, (name, config))| {
            let h = m.open_log(name, config.clone()).expect("open log");
            LogModel {
                idx: i,
                name: name.clone(),
                config: config.clone(),
                acked: (0..MODEL_CAP).map(|_| AtomicU64::new(0)).collect(),
                by_id: Mutex::new(HashMap::new()),
                slot: RwLock::new((h, 0)),
                acked_count: AtomicU64::new(0),
                max_first_seen: AtomicU64::new(0),
            }
        })
        .collect();
    let nlogs = logs.len();
    let nthreads = workers + nlogs + 1; // + main
    let main_t = nthreads - 1;
    let s = Arc::new(Shared {
        m,
        logs,
        stop: AtomicBool::new(false),
        violations: Mutex::new(Vec::new()),
        unexpected: Mutex::new(Vec::new()),
        counters: Mutex::new(HashMap::new()),
        ops: AtomicU64::new(0),
        heartbeats: (0..nthreads)
            .map(|_| {
                (
                    AtomicU64::new(0),
                    AtomicUsize::new(0),
                    AtomicBool::new(false),
                )
            })
            .collect(),
        start: Instant::now(),
    });
    // watchdog
    let all_done = Arc::new(AtomicBool::new(false));
    {
        let s = s.clone();
        let all_done = all_done.clone();
        std::thread::spawn(move || {
            let limit = 60_000;
            loop {
                std::thread::sleep(Duration::from_millis(500));
                if all_done.load(Ordering::Relaxed) {
                    return;
                }
                let now = s.now_ms();
                let stuck: Vec<String> = s
                    .heartbeats
                    .iter()
                    .enumerate()
                    .filter(|(_, hb)| !hb.2.load(Ordering::Relaxed))
                    .filter(|(_, hb)| now.saturating_sub(hb.0.load(Ordering::Relaxed)) > limit)
                    .map(|(t, hb)| {
                        format!(
                            "thread {t} in op {} for {} ms",
                            OP_NAMES[hb.1.load(Ordering::Relaxed)],
                            now - hb.0.load(Ordering::Relaxed)
                        )
                    })
                    .collect();
                if !stuck.is_empty() {
                    eprintln!("WATCHDOG (seed {seed}): no progress: {stuck:?}");
                    let hold: u64 = std::env::var("STRESS_HOLD")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    eprintln!(
                        "WATCHDOG: pid {} holding {hold} s for a debugger",
                        std::process::id()
                    );
                    std::thread::sleep(Duration::from_secs(hold));
                    let s2 = s.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs(5));
                        eprintln!("WATCHDOG: diagnostics hung too; aborting");
                        let _ = &s2;
                        std::process::abort();
                    });
                    for (l, lm) in s.logs.iter().enumerate() {
                        if let Ok(slot) = lm.slot.try_read() {
                            let h = &slot.0;
                            eprintln!(
                                "  log {l} gen {}: first {} next {} durable {} stats {:?}",
                                slot.1,
                                h.first_seq(),
                                h.next_seq(),
                                h.durable_watermark(),
                                h.stats()
                            );
                        } else {
                            eprintln!("  log {l}: slot write-locked (reopen in progress)");
                        }
                    }
                    eprintln!("  tier stats {:?}", s.m.tier_stats());
                    std::process::abort();
                }
            }
        });
    }
    s.beat(main_t, 12);
    let mut threads = Vec::new();
    for t in 0..workers {
        let s = s.clone();
        threads.push(std::thread::spawn(move || worker(s, t, seed)));
    }
    for l in 0..nlogs {
        let s = s.clone();
        let t = workers + l;
        threads.push(std::thread::spawn(move || follower(s, t, l, seed)));
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline && !s.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(200));
        s.beat(main_t, 12);
    }
    s.stop.store(true, Ordering::Relaxed);
    for th in threads {
        if let Err(p) = th.join() {
            s.violation(format!(
                "a thread panicked: {:?}",
                p.downcast_ref::<String>()
            ));
        }
    }
    s.beat(main_t, 12);
    let ops = s.ops.load(Ordering::Relaxed);
    eprintln!(
        "ran {ops} worker operations; tier stats {:?}",
        s.m.tier_stats()
    );
    // quiescent checks
    let mut ends = Vec::new();
    for l in 0..nlogs {
        let (h, g) = s.handle(l);
        if let Err(e) = h.flush() {
            s.unexpected(format!("final flush of log {l}: {e}"));
        }
        let rep = s.m.verify_log(&h);
        if !rep.is_clean() {
            s.violation(format!("log {l} final verify: {:?}", rep.problems));
        }
        ends.push(full_check(&s, l, &h, g, "final"));
        s.beat(main_t, 12);
    }
    if let Err(e) = s.m.close() {
        s.unexpected(format!("manager close: {e} ({e:?})"));
    }
    // reopen the manager and every log
    let m2 = open_manager(&root);
    for (l, &(first, next)) in ends.iter().enumerate().take(nlogs) {
        let lm = &s.logs[l];
        let h = m2
            .open_log(&lm.name, lm.config.clone())
            .expect("reopen log");
        if h.next_seq() != next || h.first_seq() != first {
            s.violation(format!(
                "log {l} after manager reopen: first_seq {} next_seq {}, before close {first} {next}",
                h.first_seq(),
                h.next_seq()
            ));
        }
        let rep = m2.verify_log(&h);
        if !rep.is_clean() {
            s.violation(format!(
                "log {l} verify after manager reopen: {:?}",
                rep.problems
            ));
        }
        full_check(&s, l, &h, u64::MAX, "after-manager-reopen");
        // appends continue densely
        let id = make_id(l, 200, 1);
        match h.append(&gen_payload(id)) {
            Ok(seq) if seq == h.next_seq() - 1 && seq == next.max(h.first_seq()) => {}
            Ok(seq) => s.violation(format!(
                "log {l}: first append after manager reopen got seq {seq}, next_seq was {next}"
            )),
            Err(e) => s.unexpected(format!("log {l}: append after manager reopen: {e}")),
        }
        s.beat(main_t, 12);
    }
    m2.close().expect("close m2");
    all_done.store(true, Ordering::Relaxed);
    let mut counters: Vec<_> = s.counters.lock().unwrap().clone().into_iter().collect();
    counters.sort();
    eprintln!("counters: {counters:?}");
    for (l, lm) in s.logs.iter().enumerate() {
        eprintln!(
            "log {l} ({}): acknowledged {} records",
            lm.name,
            lm.acked_count.load(Ordering::Relaxed)
        );
        let _ = lm.idx;
    }
    eprintln!("STRESS_SEED={seed}: {ops} operations");
    let v = s.violations.lock().unwrap();
    let u = s.unexpected.lock().unwrap();
    assert!(
        v.is_empty() && u.is_empty(),
        "seed {seed}: {} violations, {} unexpected errors:\n{}\n---\n{}",
        v.len(),
        u.len(),
        v.join("\n"),
        u.join("\n")
    );
}
