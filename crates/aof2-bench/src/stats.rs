//! Latency percentiles.
//!
//! Contract: [`Summary::from_nanos`] sorts the samples it is given and reports nearest-rank
//! percentiles in microseconds (`p` is the smallest sample with at least a fraction p of all
//! samples at or below it), the maximum and the mean. No samples give `None`.

use serde::Serialize;

/// Percentiles of one set of latencies, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Number of samples.
    pub samples: usize,
}

impl Summary {
    /// Summarize latencies given in nanoseconds (sorted in place); `None` without samples.
    pub fn from_nanos(samples: &mut [u64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let us = |ns: u64| ns as f64 / 1000.0;
        let total: u128 = samples.iter().map(|&n| u128::from(n)).sum();
        Some(Summary {
            p50: us(nearest_rank(samples, 0.50)),
            p99: us(nearest_rank(samples, 0.99)),
            p999: us(nearest_rank(samples, 0.999)),
            max: us(samples[samples.len() - 1]),
            mean: total as f64 / samples.len() as f64 / 1000.0,
            samples: samples.len(),
        })
    }
}

/// The nearest-rank `q` quantile of sorted, non-empty samples.
pub fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut v: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        let s = Summary::from_nanos(&mut v).unwrap();
        assert_eq!(s.p50, 500.0);
        assert_eq!(s.p99, 990.0);
        assert_eq!(s.p999, 999.0);
        assert_eq!(s.max, 1000.0);
        assert_eq!(s.mean, 500.5);
        assert_eq!(s.samples, 1000);
        assert_eq!(Summary::from_nanos(&mut []), None);
        assert_eq!(Summary::from_nanos(&mut [3000]).unwrap().p999, 3.0);
        let mut two = [1000, 2000];
        let s = Summary::from_nanos(&mut two).unwrap();
        assert_eq!((s.p50, s.p99), (1.0, 2.0));
    }
}
