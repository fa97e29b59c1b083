//! Counters: the live view the progress line reads once a second, and the per-worker
//! totals merged into the final report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::outcome::{Outcome, Reason};
use crate::rate::new_histogram;

/// What one worker publishes while it runs. Each counter has a single writer (its
/// worker); the progress thread only reads them.
#[derive(Debug)]
pub struct LiveStats {
    /// Requests sent.
    pub sent: AtomicU64,
    /// Requests answered with success.
    pub accepted: AtomicU64,
    /// Requests refused (retryable).
    pub refused: AtomicU64,
    /// Requests failed.
    pub failed: AtomicU64,
    /// Items acknowledged.
    pub items_acked: AtomicU64,
    /// Requests in flight.
    pub in_flight: AtomicU64,
    /// Latencies since the progress thread last took them.
    pub interval: Mutex<Histogram<u64>>,
}

impl Default for LiveStats {
    fn default() -> Self {
        Self {
            sent: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            items_acked: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            interval: Mutex::new(new_histogram()),
        }
    }
}

impl LiveStats {
    /// Adds `v` to a counter.
    pub fn add(counter: &AtomicU64, v: u64) {
        counter.fetch_add(v, Ordering::Relaxed);
    }
}

/// A worker's (or the run's) totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests sent.
    pub sent: u64,
    /// Requests answered with success.
    pub accepted: u64,
    /// Requests refused (retryable).
    pub refused: u64,
    /// Requests failed.
    pub failed: u64,
    /// Items in sent requests.
    pub items_sent: u64,
    /// Items acknowledged (accepted minus partially rejected).
    pub items_acked: u64,
    /// Items rejected through partial success.
    pub items_rejected: u64,
    /// Requests due by the schedule but never sent (open loop, behind at the end).
    pub behind_schedule: u64,
    /// Connections opened.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Refusals by reason.
    pub refused_by: BTreeMap<Reason, u64>,
    /// Failures by reason.
    pub failed_by: BTreeMap<Reason, u64>,
}

impl Counts {
    /// Counts one finished request of `items` items.
    pub fn record(&mut self, outcome: Outcome, items: u64) {
        match outcome {
            Outcome::Accepted { rejected } => {
                let rejected = rejected.min(items);
                self.accepted += 1;
                self.items_acked += items - rejected;
                self.items_rejected += rejected;
            }
            Outcome::Refused(r) => {
                self.refused += 1;
                *self.refused_by.entry(r).or_default() += 1;
            }
            Outcome::Failed(r) => {
                self.failed += 1;
                *self.failed_by.entry(r).or_default() += 1;
            }
        }
    }

    /// Adds another worker's totals.
    pub fn merge(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.failed += other.failed;
        self.items_sent += other.items_sent;
        self.items_acked += other.items_acked;
        self.items_rejected += other.items_rejected;
        self.behind_schedule += other.behind_schedule;
        self.connects += other.connects;
        self.connect_failures += other.connect_failures;
        for (k, v) in &other.refused_by {
            *self.refused_by.entry(*k).or_default() += v;
        }
        for (k, v) in &other.failed_by {
            *self.failed_by.entry(*k).or_default() += v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_merge() {
        let mut a = Counts::default();
        a.record(Outcome::Accepted { rejected: 3 }, 10);
        a.record(Outcome::Refused(Reason::Http(429)), 10);
        a.record(Outcome::Failed(Reason::Timeout), 10);
        let mut b = Counts::default();
        b.record(Outcome::Failed(Reason::Timeout), 10);
        b.merge(&a);
        assert_eq!(b.accepted, 1);
        assert_eq!(b.items_acked, 7);
        assert_eq!(b.items_rejected, 3);
        assert_eq!(b.refused_by[&Reason::Http(429)], 1);
        assert_eq!(b.failed_by[&Reason::Timeout], 2);
    }
}
