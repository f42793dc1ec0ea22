//! The workloads W1–W5, and the child process W5 kills.
//!
//! Contract, common to every row:
//! - each row opens its system in a fresh temporary directory under `Settings::data_dir`, removed
//!   afterwards;
//! - appending rows first run an untimed warm-up of the same shape (`warmup_secs`), then call
//!   `System::settle`, then time `secs` of closed-loop appends (or until a record cap); the
//!   payload of each record is built before its clock starts, into a reused buffer;
//! - durable rows time every append; buffered rows and point reads time one operation in
//!   [`SAMPLE_EVERY`] (two clock reads cost as much as a small buffered append); throughput
//!   always counts every operation over the wall time from the start barrier to the last writer;
//! - `fsyncs` is the system's own count over the timed part, `device_flushes` the device's;
//! - a row that fails is reported with its error in `notes` instead of stopping the run.
//!
//! Workloads:
//! - W1: durable appends with each `writers` count (closed loop), plus aof2 with one thread
//!   pipelining up to `pipeline_depth` appends (`append_nowait`, then `wait_durable` on the
//!   oldest when the window is full; a record's latency ends when the thread observes the durable
//!   watermark past it), and aof2 with each `writers` count of closed-loop async tasks instead of
//!   threads (`append_nowait`, then `wait_durable_async`; one runtime worker thread per CPU).
//! - W2: buffered appends, one writer.
//! - W3: aof2 only (the peers have no follow mode): one writer paced at `tail_rate` records/s
//!   stamps each payload with its send time; a reader thread following the log with
//!   `Reader::next_timeout` (default visibility: durable records) measures now − stamp.
//! - W4: one writer fills `read_fill_bytes` untimed, `sync`, then a timed full scan (every payload
//!   verified, ids in order) and `point_reads` random point reads (each verified).
//! - W5: a child process (this executable, hidden subcommand) appends until `volume` bytes are
//!   acknowledged, keeps appending, and is killed with SIGKILL; then the time to reopen the
//!   system (until it accepts appends) is measured and the records it recovered are counted.
//! - W6 (tiering, aof2 only) is in [`crate::tiering`], W7 (Tier 2 on a local S3 server, aof2
//!   only) in [`crate::tier2`].

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use clap::ValueEnum;

use crate::env::DeviceFlushes;
use crate::payload::{PayloadBuilder, PayloadKind, STAMP_END, read_u64};
use crate::report::{Row, Workload};
use crate::stats::Summary;
use crate::systems::aof2::Aof2System;
use crate::systems::{OpenOptions, Result, System, SystemKind};

/// Buffered appends and point reads time one operation in this many.
pub const SAMPLE_EVERY: u64 = 8;
/// Most latency samples kept per row (all writers together).
const MAX_SAMPLES: u64 = 1 << 22;
/// The hidden subcommand W5 runs.
pub const CHILD_COMMAND: &str = "__append-until-killed";

/// Everything that shapes a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Timed seconds per appending row.
    pub secs: f64,
    /// Untimed warm-up seconds per appending row.
    pub warmup_secs: f64,
    /// Record sizes, bytes.
    pub sizes: Vec<usize>,
    /// Closed-loop writer counts of W1.
    pub writers: Vec<usize>,
    /// Payload contents.
    pub payload: PayloadKind,
    /// Systems to measure (others are skipped).
    pub systems: Vec<SystemKind>,
    /// Parent of the per-row temporary directories.
    pub data_dir: PathBuf,
    /// W1: durable appends one aof2 thread keeps in flight.
    pub pipeline_depth: usize,
    /// Buffered rows stop after this many bytes even if time is left.
    pub buffered_cap_bytes: u64,
    /// Durable rows stop after this many records even if time is left.
    pub durable_cap_records: u64,
    /// W3: offered append rate, records/s.
    pub tail_rate: f64,
    /// W4: bytes filled before reading back.
    pub read_fill_bytes: u64,
    /// W4: random point reads.
    pub point_reads: u64,
    /// W5: bytes acknowledged before the kill.
    pub reopen_volumes: Vec<u64>,
    /// W6: bytes written untiered, then compressed, for the compression and Tier 1 read rows.
    pub tier_fill_bytes: u64,
    /// W6: bytes ingested through the Tier 0 budget.
    pub tier_ingest_bytes: u64,
    /// W6: the Tier 0 budget of the ingest rows.
    pub tier_budget: u64,
    /// W7: bytes of payload written, uploaded, read back, scanned and restored.
    pub tier2_bytes: u64,
    /// W7: random point reads per frame size.
    pub tier2_point_reads: u64,
}

impl Settings {
    /// The `--quick` run: about a second per row, W5 at 400 MiB only.
    pub fn quick(data_dir: PathBuf) -> Self {
        Settings {
            secs: 1.0,
            warmup_secs: 0.25,
            sizes: vec![1024, 64],
            writers: vec![1, 4, 16, 64],
            payload: PayloadKind::Text,
            systems: SystemKind::ALL.to_vec(),
            data_dir,
            pipeline_depth: 1024,
            buffered_cap_bytes: 2 << 30,
            durable_cap_records: 4_000_000,
            tail_rate: 10_000.0,
            read_fill_bytes: 128 << 20,
            point_reads: 200_000,
            reopen_volumes: vec![400 << 20],
            tier_fill_bytes: 256 << 20,
            tier_ingest_bytes: 1 << 30,
            tier_budget: 256 << 20,
            tier2_bytes: 256 << 20,
            tier2_point_reads: 300,
        }
    }

    /// The default, fuller run: five seconds per row, W5 at 400 MiB and 4 GiB.
    pub fn full(data_dir: PathBuf) -> Self {
        Settings {
            secs: 5.0,
            warmup_secs: 1.0,
            buffered_cap_bytes: 6 << 30,
            durable_cap_records: 20_000_000,
            read_fill_bytes: 1 << 30,
            point_reads: 1_000_000,
            reopen_volumes: vec![400 << 20, 4 << 30],
            tier_fill_bytes: 1 << 30,
            tier_ingest_bytes: 4 << 30,
            tier2_bytes: 1 << 30,
            tier2_point_reads: 1000,
            ..Settings::quick(data_dir)
        }
    }

    fn wants(&self, kind: SystemKind) -> bool {
        self.systems.contains(&kind)
    }
}

/// Runs workloads and collects their rows.
#[derive(Debug)]
pub struct Bench<'a> {
    settings: &'a Settings,
    device: Option<DeviceFlushes>,
}

/// What one closed-loop drive did.
#[derive(Debug)]
struct Driven {
    records: u64,
    elapsed: Duration,
    latencies: Vec<u64>,
    /// First id a later drive of the same system may use.
    next_id: u64,
}

/// The shape of one closed-loop drive.
#[derive(Debug, Clone, Copy)]
struct DriveSpec {
    writers: usize,
    size: usize,
    payload: PayloadKind,
    duration: Option<Duration>,
    max_records: u64,
    first_id: u64,
    /// Time one append in this many; 0 = none.
    sample_every: u64,
}

/// Append with `spec.writers` threads until `spec.duration` passes or `spec.max_records` are
/// appended. Writer `w` appends ids `first_id + k * writers + w`, k = 0, 1, …
fn drive(system: &dyn System, spec: DriveSpec) -> Result<Driven> {
    let writers = spec.writers.max(1);
    let per_writer = spec.max_records.div_ceil(writers as u64);
    let stop = AtomicBool::new(false);
    let running = AtomicUsize::new(writers);
    let ready = Barrier::new(writers + 1);
    let sample_capacity = per_writer
        .checked_div(spec.sample_every)
        .map_or(0, |n| (n + 1).min(MAX_SAMPLES / writers as u64) as usize);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let (stop, running, ready) = (&stop, &running, &ready);
                s.spawn(move || {
                    let mut writer = system.writer(w);
                    let mut builder = PayloadBuilder::new(spec.size, spec.payload);
                    let mut latencies = Vec::with_capacity(sample_capacity);
                    ready.wait();
                    let mut k = 0u64;
                    let result = loop {
                        if k >= per_writer || stop.load(Relaxed) {
                            break Ok(());
                        }
                        let id = spec.first_id + k * writers as u64 + w as u64;
                        let payload = builder.build(id);
                        let outcome =
                            if spec.sample_every != 0 && k.is_multiple_of(spec.sample_every) {
                                let started = Instant::now();
                                let outcome = writer.append(id, payload);
                                latencies.push(started.elapsed().as_nanos() as u64);
                                outcome
                            } else {
                                writer.append(id, payload)
                            };
                        if let Err(e) = outcome {
                            stop.store(true, Relaxed);
                            break Err(e);
                        }
                        k += 1;
                    };
                    let finished = Instant::now();
                    running.fetch_sub(1, Relaxed);
                    result.map(|()| (k, latencies, finished))
                })
            })
            .collect();
        ready.wait();
        let started = Instant::now();
        while running.load(Relaxed) > 0 {
            let left = spec
                .duration
                .map(|d| d.saturating_sub(started.elapsed()))
                .unwrap_or(Duration::from_millis(5));
            if left.is_zero() {
                stop.store(true, Relaxed);
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(5)));
        }
        let mut records = 0;
        let mut max_k = 0;
        let mut latencies = Vec::new();
        let mut last = started;
        let mut first_error = None;
        for handle in handles {
            match handle.join() {
                Ok(Ok((k, mut mine, finished))) => {
                    records += k;
                    max_k = max_k.max(k);
                    latencies.append(&mut mine);
                    last = last.max(finished);
                }
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => {
                    first_error.get_or_insert("a writer thread panicked".into());
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(Driven {
                records,
                elapsed: last - started,
                latencies,
                next_id: spec.first_id + max_k * writers as u64,
            }),
        }
    })
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn delta(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// Set a row's device columns from counters read before and after its timed part.
fn set_device(row: &mut Row, before: Option<(u64, u64)>, after: Option<(u64, u64)>) {
    row.device_flushes = delta(before.map(|c| c.0), after.map(|c| c.0));
    row.device_writes = delta(before.map(|c| c.1), after.map(|c| c.1));
}

/// A row for a measurement that failed.
fn failed(mut row: Row, error: &dyn std::fmt::Display) -> Row {
    eprintln!(
        "  FAILED {} {} {} B x{}: {error}",
        row.workload.id(),
        row.system,
        row.record_size,
        row.writers
    );
    row.note(&format!("FAILED: {error}"));
    row
}

/// Print a finished row's headline to stderr and pass it on.
fn done(row: Row) -> Row {
    if !row.notes.contains("FAILED") {
        progress(&row);
    }
    row
}

fn progress(row: &Row) {
    let rate = row
        .records_per_sec
        .map(|r| format!("{r:.0} records/s"))
        .or(row.reopen_ms.map(|ms| format!("reopen {ms:.1} ms")))
        .unwrap_or_default();
    let p99 = row
        .p99_us
        .map(|p| format!(", p99 {p:.1} µs"))
        .unwrap_or_default();
    eprintln!(
        "  {} {:<20} {:<16} {:>5} B x{:<3} {rate}{p99}",
        row.workload.id(),
        row.system,
        row.operation,
        row.record_size,
        row.writers
    );
}

impl<'a> Bench<'a> {
    /// A runner for `settings`, counting device flushes of the data directory's device.
    pub fn new(settings: &'a Settings) -> Self {
        Bench {
            settings,
            device: DeviceFlushes::for_dir(&settings.data_dir),
        }
    }

    /// (flushes, writes) completed by the data device so far.
    fn device_counters(&self) -> Option<(u64, u64)> {
        self.device.and_then(|d| d.read())
    }

    fn temp_dir(&self, kind: SystemKind) -> Result<tempfile::TempDir> {
        let slug: String = kind
            .name()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        Ok(tempfile::Builder::new()
            .prefix(&format!("aof2-bench-{slug}-"))
            .tempdir_in(&self.settings.data_dir)?)
    }

    /// Run one workload; returns its rows.
    pub fn run(&self, workload: Workload) -> Vec<Row> {
        eprintln!("{}", workload.title());
        match workload {
            Workload::W1 => self.w1(),
            Workload::W2 => self.w2(),
            Workload::W3 => self.w3(),
            Workload::W4 => self.w4(),
            Workload::W5 => self.w5(),
            Workload::W6 => crate::tiering::w6(self.settings),
            Workload::W7 => crate::tier2::w7(self.settings),
        }
    }

    fn w1(&self) -> Vec<Row> {
        let s = self.settings;
        let kinds = [
            SystemKind::Aof2Always,
            SystemKind::Okaywal,
            SystemKind::RaftEngineSync,
            SystemKind::RawFdatasync,
            SystemKind::RawGroupCommit,
        ];
        let mut rows = Vec::new();
        for &size in &s.sizes {
            for &writers in &s.writers {
                for kind in kinds.into_iter().filter(|k| s.wants(*k)) {
                    rows.push(done(self.appends(kind, Workload::W1, size, writers)));
                }
            }
            if s.wants(SystemKind::Aof2Always) {
                rows.push(done(self.pipelined(size)));
                for &writers in &s.writers {
                    rows.push(done(self.async_tasks(size, writers)));
                }
            }
        }
        rows
    }

    fn w2(&self) -> Vec<Row> {
        let s = self.settings;
        let kinds = [
            SystemKind::Aof2None,
            SystemKind::Aof2Interval,
            SystemKind::RaftEngineNosync,
            SystemKind::Commitlog,
            SystemKind::RawWrite,
            SystemKind::Memcpy,
        ];
        let mut rows = Vec::new();
        for &size in &s.sizes {
            for kind in kinds.into_iter().filter(|k| s.wants(*k)) {
                rows.push(done(self.appends(kind, Workload::W2, size, 1)));
            }
        }
        rows
    }

    fn w3(&self) -> Vec<Row> {
        let s = self.settings;
        let kinds = [
            SystemKind::Aof2Always,
            SystemKind::Aof2Interval,
            SystemKind::Aof2None,
        ];
        let mut rows = Vec::new();
        for &size in &s.sizes {
            for kind in kinds.into_iter().filter(|k| s.wants(*k)) {
                let row = Row::new(kind, Workload::W3, "append->visible", size, 1, s.payload);
                rows.push(match self.tail(kind, size, row.clone()) {
                    Ok(row) => done(row),
                    Err(e) => failed(row, &e),
                });
            }
        }
        rows
    }

    fn w4(&self) -> Vec<Row> {
        let s = self.settings;
        let kinds = [
            SystemKind::Aof2None,
            SystemKind::RaftEngineNosync,
            SystemKind::Commitlog,
            SystemKind::RawWrite,
        ];
        let mut rows = Vec::new();
        for &size in &s.sizes {
            for kind in kinds.into_iter().filter(|k| s.wants(*k)) {
                match self.read_back(kind, size) {
                    Ok(pair) => rows.extend(pair.into_iter().map(done)),
                    Err(e) => rows.push(failed(
                        Row::new(kind, Workload::W4, "scan", size, 1, s.payload),
                        &e,
                    )),
                }
            }
        }
        rows
    }

    fn w5(&self) -> Vec<Row> {
        let s = self.settings;
        let mut rows = Vec::new();
        for &volume in &s.reopen_volumes {
            let small = volume <= 1 << 30;
            let cases = [
                (SystemKind::Aof2None, 1, true),
                (SystemKind::Aof2Always, 64, small),
                (SystemKind::Okaywal, 64, small),
                (SystemKind::RaftEngineNosync, 1, true),
                (SystemKind::Commitlog, 1, true),
            ];
            for (kind, writers, wanted) in cases {
                if !wanted || !s.wants(kind) {
                    continue;
                }
                let mut row = Row::new(kind, Workload::W5, "reopen", 1024, writers, s.payload);
                row.volume_bytes = Some(volume);
                rows.push(match self.reopen(kind, writers, volume, row.clone()) {
                    Ok(row) => done(row),
                    Err(e) => failed(row, &e),
                });
            }
        }
        rows
    }

    /// Warm up `system` with `writers` untimed writers, then let it settle.
    fn warm_up(
        &self,
        system: &dyn System,
        size: usize,
        writers: usize,
        max_records: u64,
    ) -> Result<Driven> {
        let warm = drive(
            system,
            DriveSpec {
                writers,
                size,
                payload: self.settings.payload,
                duration: Some(secs(self.settings.warmup_secs)),
                max_records,
                first_id: 0,
                sample_every: 0,
            },
        )?;
        system.settle();
        Ok(warm)
    }

    /// W1/W2: closed-loop appends.
    fn appends(&self, kind: SystemKind, workload: Workload, size: usize, writers: usize) -> Row {
        let s = self.settings;
        let mut row = Row::new(kind, workload, "append", size, writers, s.payload);
        let result = (|| -> Result<()> {
            let (cap, sample_every) = if kind.durable() {
                (s.durable_cap_records, 1)
            } else {
                (s.buffered_cap_bytes / size.max(1) as u64, SAMPLE_EVERY)
            };
            let warm_cap = cap / 4;
            let dir = self.temp_dir(kind)?;
            let options = OpenOptions {
                record_size: size,
                capacity_bytes: (cap + warm_cap) * size as u64,
                track_positions: false,
            };
            let system = kind.open(dir.path(), &options)?;
            let warm = self.warm_up(&*system, size, writers, warm_cap)?;
            let (fsyncs, device) = (system.fsyncs(), self.device_counters());
            let mut run = drive(
                &*system,
                DriveSpec {
                    writers,
                    size,
                    payload: s.payload,
                    duration: Some(secs(s.secs)),
                    max_records: cap,
                    first_id: warm.next_id,
                    sample_every,
                },
            )?;
            row.fsyncs = delta(fsyncs, system.fsyncs());
            set_device(&mut row, device, self.device_counters());
            system.close()?;
            row.set_rate(run.records, run.elapsed.as_secs_f64());
            row.set_latency(Summary::from_nanos(&mut run.latencies));
            row.note(kind.notes());
            if sample_every > 1 {
                row.note(&format!("latency sampled 1 in {sample_every}"));
            }
            if run.records >= cap {
                row.note("stopped at the record cap");
            }
            Ok(())
        })();
        match result {
            Ok(()) => row,
            Err(e) => failed(row, &e),
        }
    }

    /// W1: one aof2 thread pipelining durable appends.
    fn pipelined(&self, size: usize) -> Row {
        let s = self.settings;
        let kind = SystemKind::Aof2Always;
        let operation = format!("pipelined {}", s.pipeline_depth);
        let mut row = Row::new(kind, Workload::W1, &operation, size, 1, s.payload);
        let result = (|| -> Result<()> {
            let dir = self.temp_dir(kind)?;
            let system = Aof2System::open(kind, dir.path())?;
            let warm = self.warm_up(&system, size, 1, s.durable_cap_records / 4)?;
            let log = system.log();
            let (fsyncs, device) = (system.fsyncs(), self.device_counters());
            let mut builder = PayloadBuilder::new(size, s.payload);
            let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(s.pipeline_depth);
            let mut latencies = Vec::with_capacity(MAX_SAMPLES as usize / 4);
            let retire = |in_flight: &mut VecDeque<(u64, Instant)>, latencies: &mut Vec<u64>| {
                let durable = log.durable_watermark();
                let mut now = None;
                while let Some(&(seq, started)) = in_flight.front() {
                    if seq >= durable {
                        break;
                    }
                    let now = *now.get_or_insert_with(Instant::now);
                    latencies.push((now - started).as_nanos() as u64);
                    in_flight.pop_front();
                }
            };
            let started = Instant::now();
            let deadline = started + secs(s.secs);
            let mut id = warm.next_id;
            let mut records = 0u64;
            loop {
                if in_flight.len() >= s.pipeline_depth {
                    let (oldest, _) = in_flight[0];
                    log.wait_durable(oldest)?;
                }
                retire(&mut in_flight, &mut latencies);
                let payload = builder.build(id);
                let now = Instant::now();
                if now >= deadline || records >= s.durable_cap_records {
                    break;
                }
                let seq = log.append_nowait(payload)?;
                in_flight.push_back((seq, now));
                id += 1;
                records += 1;
            }
            if let Some(&(last, _)) = in_flight.back() {
                log.wait_durable(last)?;
                retire(&mut in_flight, &mut latencies);
            }
            let elapsed = started.elapsed();
            row.fsyncs = delta(fsyncs, system.fsyncs());
            set_device(&mut row, device, self.device_counters());
            Box::new(system).close()?;
            row.set_rate(records, elapsed.as_secs_f64());
            row.set_latency(Summary::from_nanos(&mut latencies));
            row.note(&format!(
                "1 thread: append_nowait, wait_durable on the oldest at {} in flight; latency ends when the thread sees the durable watermark pass it",
                s.pipeline_depth
            ));
            Ok(())
        })();
        match result {
            Ok(()) => row,
            Err(e) => failed(row, &e),
        }
    }

    /// W1: closed-loop durable appends from `writers` async tasks instead of threads, on a tokio
    /// runtime with one worker thread per CPU: each task appends with `append_nowait`, awaits
    /// `wait_durable_async`, and appends its next record.
    fn async_tasks(&self, size: usize, writers: usize) -> Row {
        let s = self.settings;
        let kind = SystemKind::Aof2Always;
        let mut row = Row::new(kind, Workload::W1, "async tasks", size, writers, s.payload);
        let result = (|| -> Result<()> {
            let dir = self.temp_dir(kind)?;
            let system = Aof2System::open(kind, dir.path())?;
            let warm = self.warm_up(&system, size, writers, s.durable_cap_records / 4)?;
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(cpus)
                .build()?;
            let (fsyncs, device) = (system.fsyncs(), self.device_counters());
            let per_task = s.durable_cap_records.div_ceil(writers as u64);
            let stop = Arc::new(AtomicBool::new(false));
            let started = Instant::now();
            let tasks: Vec<_> = (0..writers as u64)
                .map(|w| {
                    let (log, stop) = (system.log().clone(), stop.clone());
                    let (first_id, payload) = (warm.next_id, s.payload);
                    runtime.spawn(async move {
                        let mut builder = PayloadBuilder::new(size, payload);
                        let mut latencies = Vec::with_capacity(per_task.min(MAX_SAMPLES) as usize);
                        let mut k = 0u64;
                        while k < per_task && !stop.load(Relaxed) {
                            let id = first_id + k * writers as u64 + w;
                            let began = Instant::now();
                            let seq = log.append_nowait(builder.build(id))?;
                            log.wait_durable_async(seq).await?;
                            latencies.push(began.elapsed().as_nanos() as u64);
                            k += 1;
                        }
                        Ok::<_, ::aof2::Error>((k, latencies))
                    })
                })
                .collect();
            let deadline = started + secs(s.secs);
            while Instant::now() < deadline && !tasks.iter().all(|t| t.is_finished()) {
                std::thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Relaxed);
            let mut records = 0;
            let mut latencies = Vec::new();
            for task in tasks {
                let (k, mut mine) = runtime.block_on(task)??;
                records += k;
                latencies.append(&mut mine);
            }
            let elapsed = started.elapsed();
            row.fsyncs = delta(fsyncs, system.fsyncs());
            set_device(&mut row, device, self.device_counters());
            drop(runtime);
            Box::new(system).close()?;
            row.set_rate(records, elapsed.as_secs_f64());
            row.set_latency(Summary::from_nanos(&mut latencies));
            row.note(&format!(
                "{writers} tokio tasks on {cpus} worker threads: append_nowait, then await wait_durable_async"
            ));
            Ok(())
        })();
        match result {
            Ok(()) => row,
            Err(e) => failed(row, &e),
        }
    }

    /// W3: append-to-visible latency for a reader following an aof2 log.
    fn tail(&self, kind: SystemKind, size: usize, mut row: Row) -> Result<Row> {
        let s = self.settings;
        if size < STAMP_END {
            return Err(format!("records of {size} B cannot carry a send stamp").into());
        }
        let dir = self.temp_dir(kind)?;
        let system = Aof2System::open(kind, dir.path())?;
        let warm = self.warm_up(&system, size, 1, 100_000)?;
        let log = system.log();
        let start_seq = log.next_seq();
        let (fsyncs, device) = (system.fsyncs(), self.device_counters());
        let base = Instant::now();
        let writer_done = AtomicBool::new(false);
        let end_seq = AtomicU64::new(u64::MAX);
        let interval = Duration::from_secs_f64(1.0 / s.tail_rate.max(1.0));
        let (written, elapsed, read) = std::thread::scope(|scope| -> Result<_> {
            let reader = scope.spawn(|| -> Result<(u64, Vec<u64>)> {
                let mut reader = log.reader(start_seq);
                let mut checker = PayloadBuilder::new(size, s.payload).stamped();
                let mut latencies = Vec::new();
                let give_up = base + secs(s.secs + 30.0);
                loop {
                    match reader.next_timeout(Duration::from_millis(50))? {
                        Some(record) => {
                            let now = base.elapsed().as_nanos() as u64;
                            let payload = record.payload();
                            latencies.push(now.saturating_sub(read_u64(payload, 8)));
                            checker.check(payload)?;
                        }
                        None => {
                            if writer_done.load(Relaxed)
                                && reader.next_seq() >= end_seq.load(Relaxed)
                            {
                                break;
                            }
                            if Instant::now() > give_up {
                                return Err("the reader did not see every record in time".into());
                            }
                        }
                    }
                    if writer_done.load(Relaxed) && reader.next_seq() >= end_seq.load(Relaxed) {
                        break;
                    }
                }
                Ok((reader.next_seq() - start_seq, latencies))
            });
            let mut builder = PayloadBuilder::new(size, s.payload);
            let started = Instant::now();
            let deadline = started + secs(s.secs);
            let mut id = warm.next_id;
            let mut written = 0u64;
            let outcome = (|| -> Result<()> {
                loop {
                    let due = started + interval * u32::try_from(written).unwrap_or(u32::MAX);
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(());
                    }
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let stamp = base.elapsed().as_nanos() as u64;
                    log.append(builder.build_stamped(id, stamp))?;
                    id += 1;
                    written += 1;
                }
            })();
            let elapsed = started.elapsed();
            end_seq.store(log.next_seq(), Relaxed);
            writer_done.store(true, Relaxed);
            let read = reader.join().map_err(|_| "the reader thread panicked")?;
            outcome?;
            Ok((written, elapsed, read?))
        })?;
        let (seen, mut latencies) = read;
        if seen != written {
            return Err(format!("the reader saw {seen} of {written} records").into());
        }
        row.fsyncs = delta(fsyncs, system.fsyncs());
        set_device(&mut row, device, self.device_counters());
        Box::new(system).close()?;
        row.set_rate(written, elapsed.as_secs_f64());
        row.set_latency(Summary::from_nanos(&mut latencies));
        row.note(&format!(
            "{}; writer paced at {:.0} records/s offered; reader: next_timeout, sees durable records",
            kind.notes(),
            s.tail_rate
        ));
        Ok(row)
    }

    /// W4: fill, then a timed scan and timed random point reads.
    fn read_back(&self, kind: SystemKind, size: usize) -> Result<Vec<Row>> {
        let s = self.settings;
        let records = (s.read_fill_bytes / size.max(1) as u64).max(1);
        let dir = self.temp_dir(kind)?;
        let options = OpenOptions {
            record_size: size,
            capacity_bytes: records * size as u64,
            track_positions: false,
        };
        let system = kind.open(dir.path(), &options)?;
        if !system.can_read() {
            return Err(crate::systems::unsupported(kind, "reading back"));
        }
        drive(
            &*system,
            DriveSpec {
                writers: 1,
                size,
                payload: s.payload,
                duration: None,
                max_records: records,
                first_id: 0,
                sample_every: 0,
            },
        )?;
        system.sync()?;

        let mut checker = PayloadBuilder::new(size, s.payload);
        let mut expected = 0u64;
        let started = Instant::now();
        let count = system.scan(&mut |payload| {
            let id = checker.check(payload)?;
            if size >= 8 && id != expected {
                return Err(format!("scan returned id {id}, expected {expected}").into());
            }
            expected += 1;
            Ok(())
        })?;
        let scan_secs = started.elapsed().as_secs_f64();
        if count != records {
            return Err(format!("scan returned {count} of {records} records").into());
        }
        let fill_note = match system.kind() {
            SystemKind::Aof2None => "filled with Durability::None, flushed; reader iterator",
            SystemKind::RaftEngineNosync => "put values live in the memtable: memory reads",
            SystemKind::Commitlog => "read(offset, 1 MiB limit) batches",
            _ => "pread of 1 MiB chunks",
        };
        let mut scan = Row::new(kind, Workload::W4, "scan", size, 1, s.payload);
        scan.durable = false;
        scan.set_rate(count, scan_secs);
        scan.note(fill_note);
        scan.note("every payload verified");

        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut latencies = Vec::with_capacity((s.point_reads / SAMPLE_EVERY + 1) as usize);
        let started = Instant::now();
        for i in 0..s.point_reads {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let id = state % records;
            let mut check = |payload: &[u8]| -> Result<()> {
                let got = checker.check(payload)?;
                if size >= 8 && got != id {
                    return Err(format!("read of id {id} returned id {got}").into());
                }
                Ok(())
            };
            if i.is_multiple_of(SAMPLE_EVERY) {
                let t = Instant::now();
                system.read(id, &mut check)?;
                latencies.push(t.elapsed().as_nanos() as u64);
            } else {
                system.read(id, &mut check)?;
            }
        }
        let point_secs = started.elapsed().as_secs_f64();
        system.close()?;
        let mut point = Row::new(kind, Workload::W4, "point read", size, 1, s.payload);
        point.durable = false;
        point.set_rate(s.point_reads, point_secs);
        point.set_latency(Summary::from_nanos(&mut latencies));
        point.note(match kind {
            SystemKind::Aof2None => "Aof::read(seq)",
            SystemKind::RaftEngineNosync => "Engine::get (memtable, copies the value)",
            SystemKind::Commitlog => "read(offset, one-record limit)",
            _ => "pread of one record",
        });
        point.note(&format!(
            "uniform random over {records} records; every payload verified; latency sampled 1 in {SAMPLE_EVERY}"
        ));
        Ok(vec![scan, point])
    }

    /// W5: kill an appending child, then time the reopen.
    fn reopen(&self, kind: SystemKind, writers: usize, volume: u64, mut row: Row) -> Result<Row> {
        let size = row.record_size;
        let dir = self.temp_dir(kind)?;
        let value = kind
            .to_possible_value()
            .ok_or("system without a command-line name")?;
        let mut child = ChildGuard(
            Command::new(std::env::current_exe()?)
                .arg(CHILD_COMMAND)
                .args(["--system", value.get_name()])
                .arg("--dir")
                .arg(dir.path())
                .args(["--record-size", &size.to_string()])
                .args(["--writers", &writers.to_string()])
                .args(["--target-bytes", &volume.to_string()])
                .args([
                    "--payload",
                    self.settings
                        .payload
                        .to_possible_value()
                        .ok_or("payload without a name")?
                        .get_name(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?,
        );
        let stdout = child.0.stdout.take().ok_or("no child stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let mut fields = line.split_whitespace();
        if fields.next() != Some("ready") {
            return Err(format!("the appending child did not get ready (said {line:?})").into());
        }
        let acked: u64 = fields.next().ok_or("no count")?.parse()?;
        let child_secs: f64 = fields.next().ok_or("no time")?.parse()?;
        // Let it append a little further, then kill it mid-append.
        std::thread::sleep(Duration::from_millis(20));
        child.kill()?;

        let options = OpenOptions {
            record_size: size,
            capacity_bytes: volume,
            track_positions: false,
        };
        let started = Instant::now();
        let system = kind.open(dir.path(), &options)?;
        let reopen = started.elapsed();
        let recovered = system.recovered_records();
        system.close()?;
        row.reopen_ms = Some(reopen.as_secs_f64() * 1000.0);
        row.secs = reopen.as_secs_f64();
        row.note(&format!(
            "child appended {} MiB ({acked} records acked) in {child_secs:.1} s, kept appending, SIGKILL 20 ms later",
            volume >> 20
        ));
        match recovered {
            Ok(n) => {
                row.records = n;
                if kind == SystemKind::Okaywal {
                    row.note(&format!(
                        "replayed {n} un-checkpointed entries (okaywal recycles its files as it checkpoints)"
                    ));
                } else {
                    row.note(&format!("recovered {n} records"));
                    if n < acked {
                        row.note("FEWER THAN ACKED");
                    }
                }
            }
            Err(e) => row.note(&format!("record count unavailable: {e}")),
        }
        row.note(match kind {
            SystemKind::Aof2None | SystemKind::Aof2Always => "AofManager::open + open_log",
            SystemKind::RaftEngineNosync => "Engine::open (replays every file into the memtable)",
            SystemKind::Commitlog => {
                "CommitLog::new (opens the files and trusts its index: no checksum or tail scan)"
            }
            _ => "WriteAheadLog::recover",
        });
        Ok(row)
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
struct ChildGuard(Child);

impl ChildGuard {
    fn kill(&mut self) -> Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Parameters of the W5 child.
#[derive(Debug, Clone)]
pub struct ChildArgs {
    pub system: SystemKind,
    pub dir: PathBuf,
    pub record_size: usize,
    pub writers: usize,
    pub target_bytes: u64,
    pub payload: PayloadKind,
}

/// The W5 child: append with `writers` threads; once `target_bytes` are acknowledged print
/// `ready <records> <secs>` and keep appending (at most up to twice the target, or 5 s) until
/// killed. Exits on its own when its stdin closes (the parent is gone) or after 120 s.
pub fn append_until_killed(args: &ChildArgs) -> Result<()> {
    let options = OpenOptions {
        record_size: args.record_size,
        capacity_bytes: args.target_bytes.saturating_mul(2),
        track_positions: false,
    };
    let system = args.system.open(&args.dir, &options)?;
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(4);
    });
    let appended = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let writers = args.writers.max(1);
    let target_records = args.target_bytes.div_ceil(args.record_size.max(1) as u64);
    std::thread::scope(|s| {
        for w in 0..writers {
            let (system, appended, stop) = (&*system, &appended, &stop);
            s.spawn(move || {
                let mut writer = system.writer(w);
                let mut builder = PayloadBuilder::new(args.record_size, args.payload);
                let mut k = 0u64;
                while !stop.load(Relaxed) {
                    let id = k * writers as u64 + w as u64;
                    if let Err(e) = writer.append(id, builder.build(id)) {
                        eprintln!("appending child: {e}");
                        std::process::exit(1);
                    }
                    appended.fetch_add(1, Relaxed);
                    k += 1;
                }
            });
        }
        let started = Instant::now();
        while appended.load(Relaxed) < target_records {
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "ready {} {:.3}",
            appended.load(Relaxed),
            started.elapsed().as_secs_f64()
        );
        let _ = out.flush();
        drop(out);
        let ready = Instant::now();
        while appended.load(Relaxed) < target_records * 2
            && ready.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Relaxed);
        std::thread::sleep(Duration::from_secs(120));
        std::process::exit(3);
    })
}

/// Is `dir` usable as the parent of data directories?
pub fn check_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    tempfile::Builder::new()
        .prefix("aof2-bench-probe-")
        .tempdir_in(dir)?;
    Ok(())
}
