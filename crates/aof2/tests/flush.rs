//! Black-box tests of the flush and follow promises: `Durability::Interval` deadlines, followers
//! woken by what they wait for, waits for durability.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use aof2::{AofManager, Durability, ErrorKind, LogConfig, ManagerConfig, ReadVisibility};

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
/// it holds; once `fail` is set, every fdatasync fails with EIO.
struct SyncGate {
    closed: Mutex<bool>,
    opened: Condvar,
    fail: AtomicBool,
}

impl SyncGate {
    fn install(m: &AofManager) -> (Arc<SyncGate>, mpsc::Receiver<()>) {
        let gate = Arc::new(SyncGate {
            closed: Mutex::new(false),
            opened: Condvar::new(),
            fail: AtomicBool::new(false),
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
            if g.fail.load(Ordering::Acquire) {
                return Err(std::io::Error::from_raw_os_error(5));
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

/// A follower of written records on a durable log is woken by the append, not by the sync that
/// follows (an `Interval(1 h)` log syncs nothing here) nor by polling: it used to sleep in 5 ms
/// steps, so it woke 200 times a second while idle and saw records up to 5 ms late.
#[test]
fn written_follower_of_an_interval_log_is_woken_by_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let log = m
        .open_log(
            "wake",
            small(Durability::Interval(Duration::from_secs(3600))),
        )
        .unwrap();
    let follower = {
        let log = log.clone();
        std::thread::spawn(move || {
            let mut reader = log.reader_with(0, ReadVisibility::Written);
            reader
                .next_timeout(Duration::MAX)
                .map(|r| r.map(|r| r.payload().to_vec()))
        })
    };
    // Give the follower time to go to sleep (if it has not yet, it finds the record at once).
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(log.append(b"wake up").unwrap(), 0);
    let deadline = Instant::now() + HANG;
    while !follower.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the append did not wake the follower"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(follower.join().unwrap().unwrap().unwrap(), b"wake up");
    assert_eq!(log.durable_watermark(), 0, "no sync was needed to wake it");
    assert!(
        log.stats().follow_wakeups <= 1,
        "woken once, by the append: {:?}",
        log.stats()
    );
    m.close().unwrap();
}

/// An idle follower sleeps until its timeout: one wake-up, not one every 5 ms.
#[test]
fn an_idle_follower_does_not_poll() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    for (name, durability, visibility) in [
        (
            "always-written",
            Durability::Always,
            ReadVisibility::Written,
        ),
        (
            "always-durable",
            Durability::Always,
            ReadVisibility::Durable,
        ),
        (
            "interval-written",
            Durability::Interval(Duration::from_millis(5)),
            ReadVisibility::Written,
        ),
        ("none", Durability::None, ReadVisibility::Durable),
    ] {
        let log = m.open_log(name, small(durability)).unwrap();
        let mut reader = log.reader_with(0, visibility);
        assert!(
            reader
                .next_timeout(Duration::from_millis(300))
                .unwrap()
                .is_none()
        );
        assert!(
            log.stats().follow_wakeups <= 2,
            "{name}: an idle follower polled: {:?}",
            log.stats()
        );
    }
    m.close().unwrap();
}

/// Followers of every kind see records appended by many writers: no wake-up is lost between a
/// follower's look and its sleep (each waits with no deadline, so a lost one hangs the test).
#[test]
fn followers_miss_no_wake_up() {
    const WRITERS: u64 = 4;
    const RECORDS: u64 = 500;
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    for durability in [
        Durability::Always,
        Durability::Interval(Duration::from_millis(1)),
        Durability::None,
    ] {
        let log = m
            .open_log(
                &format!("many-{}", durability.name().replace(':', "-")),
                small(durability),
            )
            .unwrap();
        let (done_tx, done) = mpsc::channel();
        let followers: Vec<_> = [ReadVisibility::Written, ReadVisibility::Durable]
            .into_iter()
            .map(|visibility| {
                let log = log.clone();
                let done_tx = done_tx.clone();
                std::thread::spawn(move || {
                    let mut reader = log.reader_with(0, visibility);
                    for seq in 0..WRITERS * RECORDS {
                        let record = reader.next_timeout(Duration::MAX).unwrap().unwrap();
                        assert_eq!(record.seq(), seq);
                    }
                    done_tx.send(()).unwrap();
                })
            })
            .collect();
        std::thread::scope(|s| {
            for w in 0..WRITERS {
                let log = &log;
                s.spawn(move || {
                    for i in 0..RECORDS {
                        log.append(&(w * RECORDS + i).to_le_bytes()).unwrap();
                    }
                });
            }
        });
        for _ in 0..followers.len() {
            done.recv_timeout(HANG)
                .unwrap_or_else(|_| panic!("{durability:?}: a follower missed a wake-up"));
        }
        for f in followers {
            f.join().unwrap();
        }
    }
    m.close().unwrap();
}

/// Waits for durability, held at the fdatasync: the durable watermark does not move before the
/// sync ends; an async wait dropped mid-wait takes no wake-up from the others; a failed sync
/// fails every later wait, append and flush, while records synced before it stay durable.
#[test]
fn waits_for_durability_around_a_held_and_a_failed_sync() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let (gate, held) = SyncGate::install(&m);
    let log = m.open_log("waits", small(Durability::Always)).unwrap();
    assert_eq!(
        log.wait_durable(0).unwrap_err().kind(),
        ErrorKind::NotFound,
        "not appended yet"
    );
    assert_eq!(
        log.wait_durable(u64::MAX).unwrap_err().kind(),
        ErrorKind::NotFound
    );

    gate.close();
    let first = log.append_nowait(b"a").unwrap();
    held.recv_timeout(HANG)
        .expect("the group commit reached its fdatasync");
    let second = log.append_nowait(b"b").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dropped =
            tokio::time::timeout(Duration::from_millis(50), log.wait_durable_async(second)).await;
        assert!(
            dropped.is_err(),
            "nothing is durable while the sync is held"
        );
    });
    let blocking = {
        let log = log.clone();
        std::thread::spawn(move || log.wait_durable(second))
    };
    let asynchronous = {
        let log = log.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(log.wait_durable_async(first))
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(log.durable_watermark(), 0, "ahead of the fdatasync");
    gate.open();
    blocking.join().unwrap().unwrap();
    asynchronous.join().unwrap().unwrap();
    assert_eq!(log.durable_watermark(), 2);

    // Batches count once, records and payload bytes exactly; a rejected batch counts nothing.
    log.append_batch(&[b"".as_slice(), b"xy", b""]).unwrap();
    let too_large = vec![0u8; 300 * 1024];
    let e = log
        .append_batch(&[b"fits".as_slice(), &too_large])
        .unwrap_err();
    assert!(matches!(e, aof2::Error::RecordTooLarge { .. }), "{e}");
    assert_eq!(log.next_seq(), 5, "nothing of a rejected batch is written");
    let stats = log.stats();
    assert_eq!(
        (stats.appends, stats.records_appended, stats.bytes_appended),
        (3, 5, 4),
        "{stats:?}"
    );

    gate.fail.store(true, Ordering::Release);
    let e = log.append(b"never durable").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    assert_eq!(log.durable_watermark(), 5);
    log.wait_durable(4).unwrap();
    assert_eq!(log.wait_durable(5).unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(
        rt.block_on(log.wait_durable_async(5)).unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(
        log.append_nowait(b"x").unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(log.flush().unwrap_err().kind(), ErrorKind::Closed);
    assert!(log.close().is_err(), "the close of a failed log reports it");
}

/// After a clean close every written record is durable: waits for them succeed, in every mode.
#[test]
fn waits_after_close() {
    let dir = tempfile::tempdir().unwrap();
    let m = AofManager::open(ManagerConfig::new(dir.path())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for durability in [
        Durability::None,
        Durability::Interval(Duration::from_secs(3600)),
        Durability::Always,
    ] {
        let name = format!("closed-{}", durability.name().replace(':', "-"));
        let log = m.open_log(&name, small(durability)).unwrap();
        let seq = log.append_nowait(b"x").unwrap();
        log.close().unwrap();
        assert_eq!(log.durable_watermark(), 1, "{durability:?}");
        log.wait_durable(seq).unwrap();
        rt.block_on(log.wait_durable_async(seq)).unwrap();
        assert_eq!(
            log.wait_durable(seq + 1).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert_eq!(log.append(b"y").unwrap_err().kind(), ErrorKind::Closed);
    }
    m.close().unwrap();
}
