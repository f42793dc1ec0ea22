//! Per-log statistics kept in atomics: cheap to update on the hot path, cheap to read.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Live counters of one log.
#[derive(Debug, Default)]
pub(crate) struct LogCounters {
    pub records_appended: AtomicU64,
    pub bytes_appended: AtomicU64,
    pub appends: AtomicU64,
    pub flushes: AtomicU64,
    pub fsync_total_ns: AtomicU64,
    pub fsync_max_ns: AtomicU64,
    pub fsync_last_ns: AtomicU64,
    pub segments_rolled: AtomicU64,
    pub segments_sealed: AtomicU64,
    pub rollover_waits: AtomicU64,
    pub backpressure_waits: AtomicU64,
    pub budget_waits: AtomicU64,
    pub segments_retired: AtomicU64,
    pub segments_recycled: AtomicU64,
    pub follow_wakeups: AtomicU64,
}

impl LogCounters {
    pub fn record_fsync(&self, ns: u64) {
        self.flushes.fetch_add(1, Relaxed);
        self.fsync_total_ns.fetch_add(ns, Relaxed);
        self.fsync_max_ns.fetch_max(ns, Relaxed);
        self.fsync_last_ns.store(ns, Relaxed);
    }

    pub fn snapshot(&self) -> LogStats {
        let flushes = self.flushes.load(Relaxed);
        LogStats {
            records_appended: self.records_appended.load(Relaxed),
            bytes_appended: self.bytes_appended.load(Relaxed),
            appends: self.appends.load(Relaxed),
            flushes,
            fsync_mean_us: self
                .fsync_total_ns
                .load(Relaxed)
                .checked_div(flushes)
                .unwrap_or(0) as f64
                / 1000.0,
            fsync_max_us: self.fsync_max_ns.load(Relaxed) as f64 / 1000.0,
            segments_rolled: self.segments_rolled.load(Relaxed),
            segments_sealed: self.segments_sealed.load(Relaxed),
            rollover_waits: self.rollover_waits.load(Relaxed),
            backpressure_waits: self.backpressure_waits.load(Relaxed),
            budget_waits: self.budget_waits.load(Relaxed),
            segments_retired: self.segments_retired.load(Relaxed),
            segments_recycled: self.segments_recycled.load(Relaxed),
            follow_wakeups: self.follow_wakeups.load(Relaxed),
            ..Default::default()
        }
    }
}

/// A point-in-time copy of a log's statistics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogStats {
    /// Records appended since open.
    pub records_appended: u64,
    /// Payload bytes appended since open.
    pub bytes_appended: u64,
    /// Append calls (a batch counts once).
    pub appends: u64,
    /// Completed group commits (fdatasync rounds).
    pub flushes: u64,
    /// Mean fdatasync round latency, µs.
    pub fsync_mean_us: f64,
    /// Worst fdatasync round latency, µs.
    pub fsync_max_us: f64,
    /// Segments rolled over since open.
    pub segments_rolled: u64,
    /// Segments sealed since open.
    pub segments_sealed: u64,
    /// Waits for the next segment at a rollover: appends (and `seal` calls) that found no
    /// prepared segment ready. Each waiting writer counts, so one slow preparation under 16
    /// writers can count 16.
    pub rollover_waits: u64,
    /// Appends that waited because too many bytes were unsynced.
    pub backpressure_waits: u64,
    /// Segment preparations that found no Tier 0 room (and were retried).
    pub budget_waits: u64,
    /// Segments removed by retention (`Aof::truncate_before`).
    pub segments_retired: u64,
    /// Segments prepared in the file of an evicted Tier 0 segment instead of a new file.
    pub segments_recycled: u64,
    /// Times a follower waiting for the next record (`Reader::next_timeout`) woke up: a record
    /// became visible, the log failed or closed, or its timeout passed. A follower is woken by
    /// these, never to poll, so an idle one wakes once per wait.
    pub follow_wakeups: u64,
    /// Records written (next sequence number).
    pub next_seq: u64,
    /// Records durable (all sequences below this are synced).
    pub durable_seq: u64,
    /// Segments in the log.
    pub segments: u64,
    /// Segments prepared ahead and ready for rollover.
    pub prepared_ready: u64,
}
