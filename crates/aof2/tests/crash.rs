//! kill -9 crash test.
//!
//! The test binary re-executes itself as a child process (`child_writer`, an ignored test that
//! does nothing unless `AOF2_CRASH_CHILD_ROOT` is set). The child appends self-describing records
//! from several threads with `Durability::Always` (single appends, atomic batches, and one writer
//! pipelining `append_nowait` + `wait_durable`) and prints `ack <seq> <id>` for every
//! acknowledged record. The parent kills it with SIGKILL at a random moment, reopens the root and
//! checks that every acknowledged record survived byte for byte, that nothing after the durable
//! tail is garbage, that batches are atomic and that each writer's records form a gap-free prefix.
//! The same root is reused across iterations so history accumulates and recovery runs repeatedly.
//!
//! Environment: `AOF2_CRASH_ITERATIONS` (default 50), `AOF2_CRASH_SEED` (default: from the clock).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aof2::{AofManager, Durability, LogConfig, ManagerConfig};

const ROOT_ENV: &str = "AOF2_CRASH_CHILD_ROOT";
const RUN_ENV: &str = "AOF2_CRASH_CHILD_RUN";
const LOG: &str = "crash";
const WRITERS: u64 = 4;

fn log_config() -> LogConfig {
    LogConfig {
        durability: Durability::Always,
        ..LogConfig::default().with_segment_bytes(64 * 1024)
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

/// The child process: appends forever until killed. Does nothing in a normal test run.
#[test]
#[ignore = "child process of kill9_acknowledged_records_survive"]
fn child_writer() {
    let Some(root) = std::env::var_os(ROOT_ENV) else {
        return;
    };
    let run: u64 = std::env::var(RUN_ENV)
        .expect("run number")
        .parse()
        .expect("run number");
    let manager = match AofManager::open(ManagerConfig::new(root)) {
        Ok(m) => m,
        Err(e) => {
            emit(&format!("\nAOF2ERROR open manager: {e}\n"));
            std::process::exit(3);
        }
    };
    let log = match manager.open_log(LOG, log_config()) {
        Ok(l) => l,
        Err(e) => {
            emit(&format!("\nAOF2ERROR open log: {e}\n"));
            std::process::exit(3);
        }
    };
    // libtest may have printed "test child_writer ... " without a newline: start a fresh line.
    emit(&format!("\nAOF2READY {}\n", log.next_seq()));
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
                            match log.append_nowait(&payload(id)) {
                                Ok(seq) => {
                                    lines.push_str(&format!("ack {seq} {id}\n"));
                                    last = seq;
                                }
                                Err(e) => {
                                    emit(&format!("\nAOF2ERROR append_nowait: {e}\n"));
                                    std::process::exit(4);
                                }
                            }
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
                    let result = if n == 1 {
                        log.append(&payloads[0])
                    } else {
                        log.append_batch(&payloads)
                    };
                    let first = match result {
                        Ok(s) => s,
                        Err(e) => {
                            emit(&format!("\nAOF2ERROR append: {e}\n"));
                            std::process::exit(4);
                        }
                    };
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
}

/// What an earlier check saw at one sequence: its shape and the CRC-32C of its payload. Once a
/// parent check has seen a record (and closed the log, syncing it) the record may never change.
type Known = Vec<(Shape, u32)>;

/// Reopen the root and check every invariant. Returns the record count and a recovery summary.
fn check_root(
    root: &Path,
    acked: &HashMap<u64, u64>,
    known: &mut Known,
    totals: &mut Totals,
) -> (u64, String) {
    let manager = AofManager::open(ManagerConfig::new(root)).expect("reopen root after kill");
    let log = manager.open_log(LOG, log_config()).expect("reopen log");
    let report = manager.recovery_report(LOG).expect("recovery report");
    assert!(
        report.quarantined.is_empty(),
        "kill -9 must never quarantine a segment: {report:?}"
    );
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
        "sealed {} scanned {} cut-tails {} dropped-frames {} dropped-segments {}",
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
    let iterations: u64 = std::env::var("AOF2_CRASH_ITERATIONS")
        .ok()
        .map(|v| v.parse().expect("AOF2_CRASH_ITERATIONS"))
        .unwrap_or(50);
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
    println!("crash test: seed {seed} (AOF2_CRASH_SEED), {iterations} iterations");
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
                "child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROOT_ENV, &root)
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
        for line in &lines {
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

        let (count, summary) = check_root(&root, &acked, &mut known, &mut totals);
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
}
