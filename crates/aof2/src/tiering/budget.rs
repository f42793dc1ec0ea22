//! The Tier 0 and Tier 1 budgets: one byte count each across every log of a manager.
//!
//! Every Tier 0 segment file (prepared, active, sealed and not yet evicted, hydrated) holds a
//! [`Lease`] for its size; dropping the lease gives the bytes back and wakes anyone waiting for
//! room. A lease is only taken *before* the bytes become resident (a segment is created or
//! rebuilt after its lease is granted), so `used` never exceeds the limit by more than what
//! recovery found on disk at open ([`Tier0Budget::force`]).
//!
//! Tier 1 counts the files of the logs open for writing plus [`Tier1Reservation`]s: room taken
//! *before* a Tier 1 file is written (a compression reserves an upper bound of its file's size,
//! a fetch from Tier 2 the file's known size) and settled to the real size when the file is
//! installed. Writers running at once therefore never share the same free room, and
//! `used + reserved` never exceeds the limit by more than the files opens found on disk
//! ([`Tier1Budget::force`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Global Tier 0 byte budget.
#[derive(Debug)]
pub(crate) struct Tier0Budget {
    max: u64,
    used: Mutex<u64>,
    /// Mirror of `used` for lock-free readers (stats, pressure).
    used_now: AtomicU64,
    /// Highest `used` ever seen.
    peak: AtomicU64,
    freed: Condvar,
}

/// Bytes of the budget held by one resident segment; released on drop.
#[derive(Debug)]
pub(crate) struct Lease {
    budget: Arc<Tier0Budget>,
    bytes: u64,
}

impl Tier0Budget {
    pub(crate) fn new(max: u64) -> Arc<Self> {
        Arc::new(Tier0Budget {
            max,
            used: Mutex::new(0),
            used_now: AtomicU64::new(0),
            peak: AtomicU64::new(0),
            freed: Condvar::new(),
        })
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    pub(crate) fn used(&self) -> u64 {
        self.used_now.load(Ordering::Acquire)
    }

    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Acquire)
    }

    /// used ÷ limit.
    pub(crate) fn pressure(&self) -> f64 {
        self.used() as f64 / self.max as f64
    }

    fn grant(self: &Arc<Self>, used: &mut u64, bytes: u64) -> Lease {
        *used += bytes;
        self.used_now.store(*used, Ordering::Release);
        self.peak.fetch_max(*used, Ordering::AcqRel);
        Lease {
            budget: self.clone(),
            bytes,
        }
    }

    /// A lease if `bytes` fit now.
    pub(crate) fn try_acquire(self: &Arc<Self>, bytes: u64) -> Option<Lease> {
        let mut used = self.used.lock();
        (*used + bytes <= self.max).then(|| self.grant(&mut used, bytes))
    }

    /// Wait until `bytes` fit or `deadline` passes. `make_room` runs (without the budget lock)
    /// before every wait, so the caller can ask for eviction.
    pub(crate) fn acquire_until(
        self: &Arc<Self>,
        bytes: u64,
        deadline: Instant,
        mut make_room: impl FnMut(u64),
    ) -> Option<Lease> {
        loop {
            let missing = {
                let mut used = self.used.lock();
                if *used + bytes <= self.max {
                    return Some(self.grant(&mut used, bytes));
                }
                *used + bytes - self.max
            };
            make_room(missing);
            let mut used = self.used.lock();
            if *used + bytes <= self.max {
                return Some(self.grant(&mut used, bytes));
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            // Bounded waits: eviction may free room without going through this condvar's
            // notification order (a lease dropped between the check and the wait is caught on
            // the next round).
            let step = (deadline - now).min(std::time::Duration::from_millis(2));
            self.freed.wait_for(&mut used, step);
        }
    }

    /// Count bytes that are already resident (found on disk at open): granted even beyond the
    /// limit, which then shows as pressure above 1 and makes the coordinator evict.
    pub(crate) fn force(self: &Arc<Self>, bytes: u64) -> Lease {
        let mut used = self.used.lock();
        self.grant(&mut used, bytes)
    }

    fn release(&self, bytes: u64) {
        let mut used = self.used.lock();
        *used -= bytes;
        self.used_now.store(*used, Ordering::Release);
        drop(used);
        self.freed.notify_all();
    }
}

impl Lease {
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Give back all but `bytes` (a sealed segment is truncated to its footer).
    pub(crate) fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.budget.release(self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.release(self.bytes);
        }
    }
}

/// Global Tier 1 byte budget: files of the logs open for writing, and room reserved for files
/// being written.
#[derive(Debug)]
pub(crate) struct Tier1Budget {
    max: u64,
    held: Mutex<Tier1Held>,
    /// Mirrors of `held` for lock-free readers (stats, evict-ahead checks).
    used_now: AtomicU64,
    reserved_now: AtomicU64,
    /// Highest `used + reserved` ever seen.
    peak: AtomicU64,
}

#[derive(Debug, Default)]
struct Tier1Held {
    /// Bytes of Tier 1 files installed.
    used: u64,
    /// Bytes reserved by writers of Tier 1 files still running.
    reserved: u64,
}

/// Tier 1 room held for one file being written; given back on drop unless settled.
#[derive(Debug)]
pub(crate) struct Tier1Reservation {
    budget: Arc<Tier1Budget>,
    bytes: u64,
}

impl Tier1Budget {
    pub(crate) fn new(max: u64) -> Arc<Self> {
        Arc::new(Tier1Budget {
            max,
            held: Mutex::new(Tier1Held::default()),
            used_now: AtomicU64::new(0),
            reserved_now: AtomicU64::new(0),
            peak: AtomicU64::new(0),
        })
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// Bytes of Tier 1 files installed.
    pub(crate) fn used(&self) -> u64 {
        self.used_now.load(Ordering::Acquire)
    }

    /// Bytes reserved for Tier 1 files being written.
    pub(crate) fn reserved(&self) -> u64 {
        self.reserved_now.load(Ordering::Acquire)
    }

    /// Highest `used + reserved` seen.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Acquire)
    }

    /// Files and reservations together: what the budget counts against the limit.
    pub(crate) fn held(&self) -> u64 {
        let held = self.held.lock();
        held.used.saturating_add(held.reserved)
    }

    /// How many bytes must be freed before `bytes` more fit (0 if they fit now).
    pub(crate) fn missing(&self, bytes: u64) -> u64 {
        self.held().saturating_add(bytes).saturating_sub(self.max)
    }

    fn publish(&self, held: &Tier1Held) {
        self.used_now.store(held.used, Ordering::Release);
        self.reserved_now.store(held.reserved, Ordering::Release);
        self.peak
            .fetch_max(held.used.saturating_add(held.reserved), Ordering::AcqRel);
    }

    fn grant(self: &Arc<Self>, held: &mut Tier1Held, bytes: u64) -> Tier1Reservation {
        held.reserved += bytes;
        self.publish(held);
        Tier1Reservation {
            budget: self.clone(),
            bytes,
        }
    }

    /// A reservation of `bytes` if they fit next to the files and the other reservations now.
    pub(crate) fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Tier1Reservation> {
        let mut held = self.held.lock();
        let fits = held
            .used
            .checked_add(held.reserved)
            .and_then(|h| h.checked_add(bytes))
            .is_some_and(|total| total <= self.max);
        fits.then(|| self.grant(&mut held, bytes))
    }

    /// Reserve what `plan` picks out of the room free now (it is given that room and returns at
    /// most that much): one decision, so nothing takes the room between looking and taking.
    pub(crate) fn reserve_with(
        self: &Arc<Self>,
        plan: impl FnOnce(u64) -> u64,
    ) -> Tier1Reservation {
        let mut held = self.held.lock();
        let room = self
            .max
            .saturating_sub(held.used.saturating_add(held.reserved));
        let bytes = plan(room).min(room);
        self.grant(&mut held, bytes)
    }

    /// Count Tier 1 files that already exist (found at open): counted even beyond the limit,
    /// which eviction to Tier 2 then brings back down.
    pub(crate) fn force(&self, bytes: u64) {
        let mut held = self.held.lock();
        held.used = held.used.saturating_add(bytes);
        self.publish(&held);
    }

    /// Tier 1 files of this many bytes left the budget (evicted, retired, their log closed).
    pub(crate) fn forget(&self, bytes: u64) {
        let mut held = self.held.lock();
        held.used = held.used.saturating_sub(bytes);
        self.publish(&held);
    }
}

impl Tier1Reservation {
    /// The file is installed: count its real size as used and give the rest of the reservation
    /// back. Call with whatever lock makes the file visible, so others see both or neither.
    pub(crate) fn settle(mut self, file_bytes: u64) {
        debug_assert!(
            file_bytes <= self.bytes,
            "a Tier 1 file of {file_bytes} bytes outgrew its reservation of {}",
            self.bytes
        );
        let budget = &self.budget;
        let mut held = budget.held.lock();
        held.reserved -= self.bytes;
        held.used = held.used.saturating_add(file_bytes);
        budget.publish(&held);
        self.bytes = 0;
    }
}

impl Drop for Tier1Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let mut held = self.budget.held.lock();
            held.reserved -= self.bytes;
            self.budget.publish(&held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tier1_reservations_share_the_room_and_settle_to_the_file() {
        let b = Tier1Budget::new(100);
        let first = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(50).is_none(), "the reserved room is taken");
        assert_eq!(b.missing(50), 10);
        let second = b.try_reserve(40).unwrap();
        assert_eq!((b.used(), b.reserved(), b.held()), (0, 100, 100));
        first.settle(25);
        assert_eq!((b.used(), b.reserved()), (25, 40));
        drop(second); // a failed write gives everything back
        assert_eq!((b.used(), b.reserved()), (25, 0));
        let planned = b.reserve_with(|room| {
            assert_eq!(room, 75);
            room + 10
        });
        assert_eq!(b.reserved(), 75, "never more than the room");
        drop(planned);
        b.force(200);
        assert!(b.try_reserve(0).is_none() && b.try_reserve(1).is_none());
        b.forget(225);
        assert_eq!(b.held(), 0);
        assert_eq!(b.peak(), 225);
    }

    #[test]
    fn leases_count_and_release() {
        let b = Tier0Budget::new(100);
        let a = b.try_acquire(60).unwrap();
        assert!(b.try_acquire(50).is_none());
        let mut c = b.try_acquire(40).unwrap();
        assert_eq!(b.used(), 100);
        c.shrink_to(10);
        assert_eq!(b.used(), 70);
        drop(a);
        assert_eq!(b.used(), 10);
        let forced = b.force(200);
        assert!(b.pressure() > 2.0);
        drop((c, forced));
        assert_eq!(b.used(), 0);
        assert_eq!(b.peak(), 210);
    }

    #[test]
    fn waiter_gets_room_when_a_lease_drops() {
        let b = Tier0Budget::new(100);
        let held = b.try_acquire(100).unwrap();
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            b2.acquire_until(50, Instant::now() + Duration::from_secs(10), |_| {})
        });
        std::thread::sleep(Duration::from_millis(20));
        drop(held);
        let got = t.join().unwrap().expect("room after the drop");
        assert_eq!(got.bytes(), 50);
        let none = b.acquire_until(80, Instant::now() + Duration::from_millis(10), |_| {});
        assert!(none.is_none(), "50 held, 80 more does not fit");
    }
}
