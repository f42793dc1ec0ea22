//! Circuit breaker around Tier 2: closed (requests flow), open (requests fail fast until a probe
//! time), half-open (one probe request is in flight; its outcome closes or reopens the circuit).

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Longest the breaker stays open between probes.
const MAX_OPEN: Duration = Duration::from_secs(5);

/// Breaker state as stats show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant, open_for: Duration },
    HalfOpen { open_for: Duration },
}

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    base_open: Duration,
    opened: std::sync::atomic::AtomicU64,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy)]
pub struct Rejected {
    /// When the next probe may run (`None`: a probe is in flight now).
    pub probe_at: Option<Instant>,
}

impl Breaker {
    pub fn new(threshold: u32, base_open: Duration) -> Self {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            base_open,
            opened: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// May a request go out now? An open breaker past its probe time lets exactly one through
    /// (and becomes half-open): `Ok(true)` for that probe.
    pub fn admit(&self) -> Result<bool, Rejected> {
        let mut state = self.state.lock();
        match *state {
            State::Closed { .. } => Ok(false),
            State::Open { until, open_for } => {
                if Instant::now() >= until {
                    *state = State::HalfOpen { open_for };
                    Ok(true)
                } else {
                    Err(Rejected {
                        probe_at: Some(until),
                    })
                }
            }
            State::HalfOpen { .. } => Err(Rejected { probe_at: None }),
        }
    }

    /// A request got an answer from the store (even "not found"): the store is up.
    pub fn success(&self) {
        let mut state = self.state.lock();
        if !matches!(*state, State::Closed { failures: 0 }) {
            if !matches!(*state, State::Closed { .. }) {
                tracing::info!("Tier 2 circuit breaker closed: the store answers again");
            }
            *state = State::Closed { failures: 0 };
        }
    }

    /// A request failed (error response, timeout, connection failure).
    pub fn failure(&self) {
        let mut state = self.state.lock();
        let open_for = match *state {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *state = State::Closed {
                    failures: failures + 1,
                };
                return;
            }
            State::Closed { .. } => {
                tracing::warn!(
                    open_for = ?self.base_open,
                    "Tier 2 circuit breaker open: requests fail fast until the next probe"
                );
                self.base_open
            }
            // A failed probe: the breaker was open already (logged when it opened, not at every
            // probe of a long outage).
            State::HalfOpen { open_for } => {
                let open_for = (open_for * 2).min(MAX_OPEN);
                tracing::debug!(?open_for, "Tier 2 probe failed; circuit breaker open again");
                open_for
            }
            // A request admitted before the breaker opened: already open.
            State::Open { .. } => return,
        };
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *state = State::Open {
            until: Instant::now() + open_for,
            open_for,
        };
    }

    pub fn state(&self) -> BreakerState {
        match *self.state.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// How many times the breaker opened.
    pub fn times_opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_probes_once_and_closes_on_success() {
        let b = Breaker::new(3, Duration::from_millis(30));
        for _ in 0..2 {
            b.admit().unwrap();
            b.failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.admit().unwrap();
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_err(), "open: fail fast");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().unwrap(), "the probe");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit().is_err(), "one probe at a time");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(70));
        b.admit().unwrap();
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.times_opened(), 2);
    }

    #[test]
    fn success_resets_the_failure_count() {
        let b = Breaker::new(2, Duration::from_secs(1));
        b.failure();
        b.success();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
