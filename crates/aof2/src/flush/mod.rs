//! FlushManager: background work for every log of a manager.
//!
//! - A bounded pool of flush workers runs group commits requested by the interval timer, the
//!   dirty-bytes watermark, explicit `flush`, and async/non-waiting durable appends. A log is queued
//!   at most once at a time, so the queue is bounded by the number of logs, and flushes of different
//!   logs run in parallel on the pool (a slow log occupies one worker, not all).
//! - A few preparer threads (`limits::PREPARE_THREADS`, shared by every log) create, preallocate
//!   and pre-fault the next segment of each log ahead of need; one sealer thread writes footers of
//!   full segments. Neither is on the append path.
//! - A timer thread triggers interval flushes and age-based segment rollover.
//!
//! The group commit itself lives in [`crate::aof`] (`LogShared::sync_to`): whichever thread
//! finds no sync in progress becomes the syncer, one fdatasync covers every record written before
//! it, and each waiter is released with its own result.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::aof::LogShared;
use crate::segment::RolledSegment;

/// A unit of background work.
pub(crate) enum Job {
    Flush(Arc<LogShared>),
    Prepare(Arc<LogShared>),
    Seal(Arc<LogShared>, RolledSegment),
    /// Delete the files of segments retired before a restart (see
    /// [`LogShared::sweep_retired_files`]).
    Sweep(Arc<LogShared>),
}

/// A simple blocking work queue (many producers, many consumers).
struct Queue {
    jobs: Mutex<(VecDeque<Job>, bool)>,
    ready: Condvar,
}

impl Queue {
    fn new() -> Arc<Self> {
        Arc::new(Queue {
            jobs: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
        })
    }

    fn push(&self, job: Job) {
        let mut q = self.jobs.lock();
        if q.1 {
            return;
        }
        q.0.push_back(job);
        drop(q);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Job> {
        let mut q = self.jobs.lock();
        loop {
            if let Some(job) = q.0.pop_front() {
                return Some(job);
            }
            if q.1 {
                return None;
            }
            self.ready.wait(&mut q);
        }
    }

    fn shut(&self) {
        self.jobs.lock().1 = true;
        self.ready.notify_all();
    }
}

fn run(job: Job) {
    match job {
        Job::Flush(log) => log.background_flush(),
        Job::Prepare(log) => log.prepare_next_segment(),
        Job::Seal(log, rolled) => log.seal_segment(rolled, None),
        Job::Sweep(log) => log.sweep_retired_files(),
    }
}

/// Owns the background threads of a manager.
pub(crate) struct FlushManager {
    flush: Arc<Queue>,
    prepare: Arc<Queue>,
    seal: Arc<Queue>,
    logs: Arc<Mutex<Vec<Weak<LogShared>>>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for FlushManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushManager").finish_non_exhaustive()
    }
}

impl FlushManager {
    pub(crate) fn start(flush_threads: usize, tick: Duration) -> Arc<Self> {
        let fm = Arc::new(FlushManager {
            flush: Queue::new(),
            prepare: Queue::new(),
            seal: Queue::new(),
            logs: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
        });
        let mut threads = Vec::new();
        for i in 0..flush_threads {
            let q = fm.flush.clone();
            threads.push(spawn(format!("aof2-flush-{i}"), move || {
                while let Some(j) = q.pop() {
                    run(j)
                }
            }));
        }
        for i in 0..crate::limits::PREPARE_THREADS {
            let q = fm.prepare.clone();
            threads.push(spawn(format!("aof2-prepare-{i}"), move || {
                while let Some(j) = q.pop() {
                    run(j)
                }
            }));
        }
        let q = fm.seal.clone();
        threads.push(spawn("aof2-seal".into(), move || {
            while let Some(j) = q.pop() {
                run(j)
            }
        }));
        let (logs, stop) = (fm.logs.clone(), fm.stop.clone());
        threads.push(spawn("aof2-timer".into(), move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(tick);
                let live: Vec<Arc<LogShared>> = {
                    let mut l = logs.lock();
                    l.retain(|w| w.strong_count() > 0);
                    l.iter().filter_map(Weak::upgrade).collect()
                };
                for log in live {
                    log.on_tick();
                }
            }
        }));
        *fm.threads.lock() = threads;
        fm
    }

    pub(crate) fn register(&self, log: &Arc<LogShared>) {
        self.logs.lock().push(Arc::downgrade(log));
    }

    pub(crate) fn submit(&self, job: Job) {
        match job {
            Job::Flush(_) => self.flush.push(job),
            Job::Prepare(_) | Job::Sweep(_) => self.prepare.push(job),
            Job::Seal(..) => self.seal.push(job),
        }
    }

    /// Finish queued work and stop every thread.
    pub(crate) fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.flush.shut();
        self.prepare.shut();
        self.seal.shut();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .expect("spawn aof2 thread")
}
