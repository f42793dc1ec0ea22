//! The Tier 0 budget: one byte count across every log of a manager.
//!
//! Every Tier 0 segment file (prepared, active, sealed and not yet evicted, hydrated) holds a
//! [`Lease`] for its size; dropping the lease gives the bytes back and wakes anyone waiting for
//! room. A lease is only taken *before* the bytes become resident (a segment is created or
//! rebuilt after its lease is granted), so `used` never exceeds the limit by more than what
//! recovery found on disk at open ([`Tier0Budget::force`]).

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
