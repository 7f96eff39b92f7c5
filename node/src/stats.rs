//! What the node has done, counted: the numbers behind `/status`,
//! `/metrics` and the status page's chart. Plain atomics and a small map of
//! labelled counters; cheap enough for the flood path.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Hold latency buckets (upper bounds, milliseconds) for the histogram.
pub const HOLD_BUCKETS_MS: [u64; 9] = [10, 50, 100, 250, 500, 750, 1000, 2000, 5000];

/// How often the history is sampled, and how many samples are kept (1 hour).
pub const HISTORY_EVERY: Duration = Duration::from_secs(5);
const HISTORY_LEN: usize = 720;

#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub accepted: AtomicU64,
    pub tempfailed: AtomicU64,
    pub rejected: AtomicU64,
    /// Second tries of messages whose 250 was lost, answered and not queued twice.
    pub resent: AtomicU64,
    pub refused_at_connect: AtomicU64,
    pub delivered: AtomicU64,
    pub deferred: AtomicU64,
    pub bounced: AtomicU64,
    /// Refusals by reason (`penalised`, `over_limit`, `relay_denied`, …).
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// Next hops' configuration faults by kind (`route::hop_faults`).
    hop_faults: Mutex<BTreeMap<&'static str, u64>>,
    /// Check outcomes by (check, result).
    checks: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    hold_buckets: [AtomicU64; HOLD_BUCKETS_MS.len() + 1],
    hold_sum_ms: AtomicU64,
    history: Mutex<VecDeque<Sample>>,
}

/// The cumulative counters at one moment, for the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Sample {
    /// Unix seconds.
    pub t: u64,
    pub accepted: u64,
    /// Refused at connect, rejected and tempfailed.
    pub refused: u64,
}

impl Stats {
    pub fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts a refusal for `reason`.
    pub fn refusal(&self, reason: &'static str) {
        *self.refusals.lock().unwrap().entry(reason).or_default() += 1;
    }

    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refusals.lock().unwrap().clone()
    }

    pub fn hop_fault(&self, fault: &'static str) {
        *self.hop_faults.lock().unwrap().entry(fault).or_default() += 1;
    }

    pub fn hop_faults(&self) -> BTreeMap<&'static str, u64> {
        self.hop_faults.lock().unwrap().clone()
    }

    pub fn check(&self, check: &'static str, result: &'static str) {
        *self.checks.lock().unwrap().entry((check, result)).or_default() += 1;
    }

    pub fn checks(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.checks.lock().unwrap().clone()
    }

    pub fn hold(&self, took: Duration) {
        let ms = took.as_millis() as u64;
        let bucket = HOLD_BUCKETS_MS.iter().position(|&b| ms <= b).unwrap_or(HOLD_BUCKETS_MS.len());
        self.hold_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.hold_sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Per-bucket counts (not cumulative) and the sum in milliseconds.
    pub fn hold_histogram(&self) -> (Vec<u64>, u64) {
        (self.hold_buckets.iter().map(Self::get).collect(), Self::get(&self.hold_sum_ms))
    }

    pub fn sample(&self, now_secs: u64) {
        let refused =
            Self::get(&self.refused_at_connect) + Self::get(&self.rejected) + Self::get(&self.tempfailed);
        let sample = Sample { t: now_secs, accepted: Self::get(&self.accepted), refused };
        let mut history = self.history.lock().unwrap();
        if history.len() == HISTORY_LEN {
            history.pop_front();
        }
        history.push_back(sample);
    }

    pub fn history(&self) -> Vec<Sample> {
        self.history.lock().unwrap().iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_latencies_fall_into_their_buckets() {
        let stats = Stats::default();
        stats.hold(Duration::from_millis(5));
        stats.hold(Duration::from_millis(480));
        stats.hold(Duration::from_secs(60));
        let (buckets, sum) = stats.hold_histogram();
        assert_eq!((buckets[0], buckets[4], buckets[9]), (1, 1, 1));
        assert_eq!(sum, 60_485);
    }

    #[test]
    fn history_keeps_the_last_hour() {
        let stats = Stats::default();
        for t in 0..800 {
            Stats::add(&stats.accepted);
            stats.sample(t);
        }
        let history = stats.history();
        assert_eq!(history.len(), 720);
        assert_eq!(history.last().unwrap().accepted, 800);
    }
}
