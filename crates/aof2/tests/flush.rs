//! Black-box tests of the flush and follow promises: `Durability::Interval` deadlines, followers
//! woken by what they wait for, waits for durability.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use aof2::{AofManager, Durability, LogConfig, ManagerConfig, ReadVisibility};

/// Longest a test waits for something that must happen promptly; reaching it is the failure.
const HANG: Duration = Duration::from_secs(30);

fn small(durability: Durability) -> LogConfig {
    LogConfig {
        durability,
        ..LogConfig::default().with_segment_bytes(256 * 1024)
    }
}

/// A clock for `AofManager::set_clock` that a test moves forward.
fn manual_clock() -> (aof2::Clock, Arc<AtomicU64>) {
    let offset_ns = Arc::new(AtomicU64::new(0));
    let offset = offset_ns.clone();
    let clock: aof2::Clock =
        Arc::new(move || Instant::now() + Duration::from_nanos(offset.load(Ordering::Acquire)));
    (clock, offset_ns)
}

fn advance(offset_ns: &AtomicU64, by: Duration) {
    offset_ns.fetch_add(by.as_nanos() as u64, Ordering::AcqRel);
}

/// A sync fault seam that holds every fdatasync while the gate is closed, and reports each one
/// it holds.
struct SyncGate {
    closed: Mutex<bool>,
    opened: Condvar,
}

impl SyncGate {
    fn install(m: &AofManager) -> (Arc<SyncGate>, mpsc::Receiver<()>) {
        let gate = Arc::new(SyncGate {
            closed: Mutex::new(false),
            opened: Condvar::new(),
        });
        let (held_tx, held) = mpsc::channel();
        let g = gate.clone();
        m.set_sync_fault(Some(Arc::new(move || {
            let mut closed = g.closed.lock().unwrap();
            if *closed {
                let _ = held_tx.send(());
                while *closed {
                    closed = g.opened.wait(closed).unwrap();
                }
            }
            Ok(())
        })));
        (gate, held)
    }

    fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }

    fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
    }
}

/// `Interval(d)` promises every record durable about `d` after its append. The timer used to
/// measure `d` from the end of the previous sync: a record appended while a sync ran waited for
/// that sync, then a whole `d`, then its own sync. Here the sync runs for 40 minutes of the
/// log's clock after the record was appended; 65 minutes after the append (25 after that sync)
/// the record must be synced, not 60 minutes after the sync.
#[test]
fn interval_deadline_runs_from_the_append_not_from_the_previous_sync() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let (clock, offset) = manual_clock();
    m.set_clock(Some(clock));
    let (gate, held) = SyncGate::install(&m);
    let d = Duration::from_secs(3600);
    let log = m.open_log("iv", small(Durability::Interval(d))).unwrap();

    assert_eq!(log.append(b"covered").unwrap(), 0);
    gate.close();
    let flusher = {
        let log = log.clone();
        std::thread::spawn(move || log.flush())
    };
    held.recv_timeout(HANG)
        .expect("the explicit flush reached its fdatasync");
    // Appended after that sync read the written watermark: it covers record 0 only.
    assert_eq!(log.append(b"late").unwrap(), 1);
    advance(&offset, Duration::from_secs(40 * 60));
    gate.open();
    flusher.join().unwrap().unwrap();
    assert_eq!(
        log.durable_watermark(),
        1,
        "the flush covered record 0 only"
    );

    advance(&offset, Duration::from_secs(25 * 60));
    // A durable-visibility follower sees record 1 once a sync covers it.
    let mut follower = log.reader_with(1, ReadVisibility::Durable);
    let record = follower
        .next_timeout(HANG)
        .unwrap()
        .expect("record 1 synced once d passed since its append");
    assert_eq!(record.payload(), b"late");
    assert_eq!(log.durable_watermark(), 2);
    m.close().unwrap();
}

/// No interval sync before `d`: a quiet `Interval` log syncs a record once `d` has passed since
/// its append, and not earlier.
#[test]
fn interval_sync_waits_for_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let (clock, offset) = manual_clock();
    m.set_clock(Some(clock));
    let d = Duration::from_secs(3600);
    let log = m.open_log("quiet", small(Durability::Interval(d))).unwrap();
    let flushes = log.stats().flushes;
    assert_eq!(log.append(b"r").unwrap(), 0);
    advance(&offset, Duration::from_secs(59 * 60));
    let mut follower = log.reader_with(0, ReadVisibility::Durable);
    assert!(
        follower
            .next_timeout(Duration::from_millis(50))
            .unwrap()
            .is_none(),
        "synced before its deadline"
    );
    assert_eq!(log.stats().flushes, flushes);
    advance(&offset, Duration::from_secs(2 * 60));
    assert!(follower.next_timeout(HANG).unwrap().is_some());
    assert_eq!(log.stats().flushes, flushes + 1, "one sync covered it");
    m.close().unwrap();
}
