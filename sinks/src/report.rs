//! Rate-limited failure logging: one summary per interval per exporter per core, and a
//! [`Throttle`] for single warnings that says how many it held back.

use std::time::{Duration, Instant};

/// How often a failing exporter may log.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Tally {
    requests: u64,
    items: u64,
    last: String,
}

impl Tally {
    fn add(&mut self, requests: u64, items: u64, message: impl FnOnce() -> String) {
        self.requests += requests;
        self.items += items;
        // Only the message of the latest failure is kept, and only rendered
        // when it will be logged soon: the previous one is overwritten.
        self.last = message();
    }
}

/// Failures of one exporter on one core since the last log line.
#[derive(Debug)]
pub(crate) struct FailureReport {
    label: String,
    interval: Duration,
    last_logged: Option<Instant>,
    permanent: Tally,
    retries: Tally,
    rejected: Tally,
}

impl FailureReport {
    /// `label` names the exporter and core, e.g. `exporter tempo (core 1)`.
    pub(crate) fn new(label: String, interval: Duration) -> Self {
        Self {
            label,
            interval,
            last_logged: None,
            permanent: Tally::default(),
            retries: Tally::default(),
            rejected: Tally::default(),
        }
    }

    /// A request failed for good (permanent error, or retries ran out).
    pub(crate) fn permanent(&mut self, items: u64, message: impl FnOnce() -> String, now: Instant) {
        self.permanent.add(1, items, message);
        self.maybe_log(now);
    }

    /// An attempt failed and will be retried.
    pub(crate) fn retry(&mut self, message: impl FnOnce() -> String, now: Instant) {
        self.retries.add(1, 0, message);
        self.maybe_log(now);
    }

    /// The backend accepted a request but rejected `items` of it.
    pub(crate) fn rejected(&mut self, items: u64, message: impl FnOnce() -> String, now: Instant) {
        self.rejected.add(1, items, message);
        self.maybe_log(now);
    }

    /// Logs the pending summary if the interval has passed since the last line.
    pub(crate) fn maybe_log(&mut self, now: Instant) {
        let due = self
            .last_logged
            .is_none_or(|last| now.duration_since(last) >= self.interval);
        if due && self.has_pending() {
            for line in self.take_lines() {
                log::warn!("{line}");
            }
            self.last_logged = Some(now);
        }
    }

    /// Logs the pending summary now, whatever the interval (at shutdown).
    pub(crate) fn flush(&mut self, now: Instant) {
        self.last_logged = None;
        self.maybe_log(now);
    }

    fn has_pending(&self) -> bool {
        self.permanent.requests + self.retries.requests + self.rejected.requests > 0
    }

    /// The summary lines, resetting the tallies.
    fn take_lines(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let label = &self.label;
        let p = std::mem::take(&mut self.permanent);
        if p.requests > 0 {
            lines.push(format!(
                "{label}: {} requests ({} items) failed permanently since last report: {}",
                p.requests, p.items, p.last
            ));
        }
        let r = std::mem::take(&mut self.retries);
        if r.requests > 0 {
            lines.push(format!(
                "{label}: {} attempts failed and will be retried since last report: {}",
                r.requests, r.last
            ));
        }
        let j = std::mem::take(&mut self.rejected);
        if j.requests > 0 {
            lines.push(format!(
                "{label}: backend rejected {} items in {} partially successful requests since last report: {}",
                j.items, j.requests, j.last
            ));
        }
        lines
    }
}

/// A warning logged at most once per interval; the next line says how many were held back.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: std::cell::Cell<Option<Instant>>,
    suppressed: std::cell::Cell<u64>,
}

impl Throttle {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: std::cell::Cell::new(None),
            suppressed: std::cell::Cell::new(0),
        }
    }

    /// `Some(suffix)` when a line is due at `now` (the suffix, empty or
    /// ` (N more since the last report)`, ends the line); `None` counts one held back.
    pub fn due(&self, now: Instant) -> Option<String> {
        if self
            .last
            .get()
            .is_some_and(|t| now.duration_since(t) < self.interval)
        {
            self.suppressed.set(self.suppressed.get() + 1);
            return None;
        }
        self.last.set(Some(now));
        Some(match self.suppressed.replace(0) {
            0 => String::new(),
            n => format!(" ({n} more since the last report)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttled_warning_says_how_many_it_held_back() {
        let t0 = Instant::now();
        let throttle = Throttle::new(Duration::from_secs(10));
        assert_eq!(throttle.due(t0).as_deref(), Some(""));
        for i in 1..=5 {
            assert_eq!(throttle.due(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(
            throttle.due(t0 + Duration::from_secs(10)).as_deref(),
            Some(" (5 more since the last report)")
        );
        assert_eq!(
            throttle.due(t0 + Duration::from_secs(20)).as_deref(),
            Some("")
        );
    }

    #[test]
    fn first_failure_logs_then_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut report = FailureReport::new("exporter x (core 1)".into(), Duration::from_secs(10));
        report.permanent(5, || "400 Bad Request".into(), t0);
        assert!(!report.has_pending(), "first failure is logged at once");
        for i in 1..=37 {
            report.permanent(2, || format!("error {i}"), t0 + Duration::from_millis(i));
        }
        assert!(report.has_pending(), "suppressed within the interval");
        report.retry(|| "unavailable".into(), t0 + Duration::from_secs(5));
        let lines = report.take_lines();
        assert_eq!(
            lines,
            [
                "exporter x (core 1): 37 requests (74 items) failed permanently since last report: error 37",
                "exporter x (core 1): 1 attempts failed and will be retried since last report: unavailable",
            ]
        );
        assert!(!report.has_pending());
    }

    #[test]
    fn pending_summary_logs_when_interval_passed() {
        let t0 = Instant::now();
        let mut report = FailureReport::new("x".into(), Duration::from_secs(10));
        report.rejected(3, || "bad".into(), t0);
        report.rejected(4, || "worse".into(), t0 + Duration::from_secs(1));
        report.maybe_log(t0 + Duration::from_secs(9));
        assert!(report.has_pending());
        report.maybe_log(t0 + Duration::from_secs(10));
        assert!(!report.has_pending());
        report.permanent(1, || "late".into(), t0 + Duration::from_secs(11));
        assert!(report.has_pending());
        report.flush(t0 + Duration::from_secs(12));
        assert!(!report.has_pending());
    }
}
