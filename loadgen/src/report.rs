//! Reporting: the live progress line, the final text report, JSON results and the
//! `.hgrm` percentile distribution.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::stats::{Counts, LiveStats};
use crate::verify::VerifyReport;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

impl Percentiles {
    /// Reads the percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Request totals.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RequestTotals {
    /// Sent.
    pub sent: u64,
    /// Accepted (success status).
    pub accepted: u64,
    /// Refused, retryable (gRPC UNAVAILABLE / RESOURCE_EXHAUSTED, HTTP 429 / 503).
    pub refused: u64,
    /// Failed for any other reason.
    pub failed: u64,
    /// Due by the open-loop schedule but never sent (the run ended behind).
    pub behind_schedule: u64,
}

/// Item totals (spans, points or records).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ItemTotals {
    /// In sent requests.
    pub sent: u64,
    /// Acknowledged (accepted requests minus partial-success rejections).
    pub acknowledged: u64,
    /// Rejected through partial success.
    pub rejected: u64,
}

/// Achieved rates over the run's duration.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Rates {
    /// Requests sent per second.
    pub requests_per_second: f64,
    /// Items sent per second.
    pub items_per_second: f64,
    /// Items acknowledged per second.
    pub acknowledged_items_per_second: f64,
}

/// Everything about a finished run; printed as text, written as JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    /// Run id (first two bytes of every span id), hex.
    pub run_id: String,
    /// traces, metrics or logs.
    pub signal: String,
    /// What an item is (spans, points, records).
    pub item: String,
    /// grpc, http-protobuf or http-json.
    pub protocol: String,
    /// Target URL.
    pub endpoint: String,
    /// none, gzip or zstd.
    pub compression: String,
    /// open or closed.
    pub mode: String,
    /// Open loop: the requested rate, in `rate_unit` per second.
    pub target_rate: Option<f64>,
    /// Unit of `target_rate`.
    pub rate_unit: Option<String>,
    /// Closed loop: in-flight requests per connection.
    pub concurrency: Option<usize>,
    /// Worker threads.
    pub workers: usize,
    /// Connections in total.
    pub connections: usize,
    /// Items per request.
    pub items_per_request: u32,
    /// Seconds from the first scheduled send to the last completion.
    pub duration_seconds: f64,
    /// Request totals.
    pub requests: RequestTotals,
    /// Refusals by reason.
    pub refused_by_reason: BTreeMap<String, u64>,
    /// Failures by reason.
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Item totals.
    pub items: ItemTotals,
    /// Achieved rates.
    pub achieved: Rates,
    /// Latency from intended send time, µs, all completed requests.
    pub latency_us: Percentiles,
    /// How late requests were sent relative to their schedule, µs.
    pub send_lag_us: Percentiles,
    /// Connections opened.
    pub connections_opened: u64,
    /// Connection attempts that failed.
    pub connection_failures: u64,
    /// The `--verify` verdict.
    pub verify: Option<VerifyReport>,
}

impl RunReport {
    /// Fills the totals, rates and percentiles.
    pub fn fill(
        &mut self,
        counts: &Counts,
        latency: &Histogram<u64>,
        lag: &Histogram<u64>,
        elapsed: Duration,
    ) {
        self.duration_seconds = elapsed.as_secs_f64();
        self.requests = RequestTotals {
            sent: counts.sent,
            accepted: counts.accepted,
            refused: counts.refused,
            failed: counts.failed,
            behind_schedule: counts.behind_schedule,
        };
        self.refused_by_reason = counts
            .refused_by
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        self.failed_by_reason = counts
            .failed_by
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        self.items = ItemTotals {
            sent: counts.items_sent,
            acknowledged: counts.items_acked,
            rejected: counts.items_rejected,
        };
        let secs = self.duration_seconds.max(1e-9);
        self.achieved = Rates {
            requests_per_second: counts.sent as f64 / secs,
            items_per_second: counts.items_sent as f64 / secs,
            acknowledged_items_per_second: counts.items_acked as f64 / secs,
        };
        self.latency_us = Percentiles::of(latency);
        self.send_lag_us = Percentiles::of(lag);
        self.connections_opened = counts.connects;
        self.connection_failures = counts.connect_failures;
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let item = &self.item;
        let load = match (self.target_rate, &self.rate_unit, self.concurrency) {
            (Some(rate), Some(unit), _) => format!("open loop at {rate} {unit}/s"),
            (_, _, Some(c)) => format!("closed loop, {c} in flight per connection"),
            _ => self.mode.clone(),
        };
        let _ = writeln!(
            s,
            "shardtel-loadgen run {}: {} over {} to {} ({}), {}, {} workers, {} connections, {} {} per request",
            self.run_id,
            self.signal,
            self.protocol,
            self.endpoint,
            self.compression,
            load,
            self.workers,
            self.connections,
            self.items_per_request,
            item
        );
        let _ = writeln!(s, "{:<14}{:.2} s", "duration", self.duration_seconds);
        let r = &self.requests;
        let _ = writeln!(
            s,
            "{:<14}sent {}  accepted {}  refused {}  failed {}  behind schedule {}",
            "requests", r.sent, r.accepted, r.refused, r.failed, r.behind_schedule
        );
        for (reason, n) in &self.refused_by_reason {
            let _ = writeln!(s, "{:<14}refused {reason}: {n}", "");
        }
        for (reason, n) in &self.failed_by_reason {
            let _ = writeln!(s, "{:<14}failed {reason}: {n}", "");
        }
        let _ = writeln!(
            s,
            "{:<14}sent {}  acknowledged {}  rejected {}",
            item, self.items.sent, self.items.acknowledged, self.items.rejected
        );
        let a = &self.achieved;
        let _ = writeln!(
            s,
            "{:<14}{:.1} req/s  {:.0} {item}/s sent  {:.0} {item}/s acknowledged",
            "achieved", a.requests_per_second, a.items_per_second, a.acknowledged_items_per_second
        );
        let ms = |us: u64| us as f64 / 1000.0;
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "{:<14}p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (ms from intended send time, {} requests)",
            "latency",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            l.count
        );
        let g = &self.send_lag_us;
        let _ = writeln!(
            s,
            "{:<14}p50 {:.3}  p99 {:.3}  max {:.3}  (ms the generator sent behind schedule)",
            "send lag",
            ms(g.p50),
            ms(g.p99),
            ms(g.max)
        );
        let _ = writeln!(
            s,
            "{:<14}opened {}  failed attempts {}",
            "connections", self.connections_opened, self.connection_failures
        );
        if let Some(v) = &self.verify {
            s.push_str(&verify_text(v));
        }
        s
    }
}

/// The text form of a verify report.
pub fn verify_text(v: &VerifyReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<14}{} ({} inputs read, waited {:.1} s{})",
        "verify",
        v.source,
        v.inputs_read,
        v.waited_seconds,
        if v.sampled { ", target samples" } else { "" }
    );
    let _ = writeln!(
        s,
        "{:<14}acknowledged {}  arrived {}  lost {}  duplicates {}  arrived unacknowledged {}  other runs {}  unrecognised {}",
        "  spans",
        v.spans_acknowledged,
        v.spans_arrived,
        v.spans_lost,
        v.duplicates,
        v.spans_arrived_unacknowledged,
        v.spans_from_other_runs,
        v.spans_unrecognised
    );
    let _ = writeln!(
        s,
        "{:<14}acknowledged {}  complete {}  incomplete {}  {} {}",
        "  traces",
        v.traces_acknowledged,
        v.traces_complete,
        v.traces_incomplete,
        if v.sampled {
            "not kept"
        } else {
            "lost entirely"
        },
        v.traces_without_arrivals
    );
    if v.unreadable_records > 0 {
        let _ = writeln!(
            s,
            "{:<14}{} unreadable lines; first: {}",
            "  warning",
            v.unreadable_records,
            v.first_unreadable.as_deref().unwrap_or("?")
        );
    }
    let verdict = if v.passed {
        "PASS".to_string()
    } else if v.nothing_arrived && v.spans_lost == 0 && v.traces_incomplete == 0 {
        format!(
            "FAIL: none of {} acknowledged traces arrived (a sampler that keeps nothing, or no \
             exporter writing where --verify reads)",
            v.traces_acknowledged
        )
    } else {
        format!(
            "FAIL: {} lost spans, {} incomplete traces",
            v.spans_lost, v.traces_incomplete
        )
    };
    let _ = writeln!(s, "{:<14}{verdict}", "  result");
    s
}

/// Writes `report` as pretty JSON.
pub fn write_json(path: &Path, report: &RunReport) -> Result<()> {
    let json = serde_json::to_vec_pretty(report)?;
    std::fs::write(path, json).with_context(|| format!("failed to write {}", path.display()))
}

/// Writes a histogram of microseconds as an HdrHistogram `.hgrm` percentile
/// distribution with values in milliseconds (the format of HdrHistogram's
/// `outputPercentileDistribution`, 5 ticks per half distance).
pub fn write_hgrm(path: &Path, h: &Histogram<u64>) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path)
            .with_context(|| format!("failed to create {}", path.display()))?,
    );
    f.write_all(hgrm_text(h).as_bytes())?;
    f.flush()?;
    Ok(())
}

/// The `.hgrm` text of a microsecond histogram (values in milliseconds).
pub fn hgrm_text(h: &Histogram<u64>) -> String {
    const SCALE: f64 = 1000.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let value = h.highest_equivalent(v.value_iterated_to()) as f64 / SCALE;
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{:12.3} {:2.12} {:10} {:14.2}",
                    value,
                    q,
                    cumulative(h, v.value_iterated_to()),
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(
                    s,
                    "{:12.3} {:2.12} {:10}",
                    value,
                    q,
                    cumulative(h, v.value_iterated_to())
                );
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / SCALE, h.stdev() / SCALE, h.max() as f64 / SCALE)
    };
    let _ = writeln!(s, "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]");
    let _ = writeln!(
        s,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        h.distinct_values()
    );
    s
}

fn cumulative(h: &Histogram<u64>, value: u64) -> u64 {
    h.count_between(0, value)
}

/// Prints a progress line to stderr every `interval` until `done()` is true.
pub fn progress_loop(
    live: &[Arc<LiveStats>],
    item: &str,
    items_per_request: u32,
    interval: Duration,
    quiet: bool,
    done: impl Fn() -> bool,
) {
    let start = std::time::Instant::now();
    let mut last = (0u64, 0u64, 0u64, 0u64);
    let mut last_at = start;
    while !done() {
        std::thread::sleep(Duration::from_millis(50));
        if last_at.elapsed() < interval {
            continue;
        }
        let now = std::time::Instant::now();
        let dt = now.duration_since(last_at).as_secs_f64();
        last_at = now;
        let mut sent = 0;
        let mut acked_items = 0;
        let mut refused = 0;
        let mut failed = 0;
        let mut in_flight = 0;
        let mut interval_hist = crate::rate::new_histogram();
        for l in live {
            sent += l.sent.load(Ordering::Relaxed);
            acked_items += l.items_acked.load(Ordering::Relaxed);
            refused += l.refused.load(Ordering::Relaxed);
            failed += l.failed.load(Ordering::Relaxed);
            in_flight += l.in_flight.load(Ordering::Relaxed);
            if let Ok(mut h) = l.interval.lock() {
                let _ = interval_hist.add(&*h);
                h.reset();
            }
        }
        if quiet {
            continue;
        }
        let req_rate = (sent - last.0) as f64 / dt;
        let item_rate = (sent - last.0) as f64 * f64::from(items_per_request) / dt;
        let acked_rate = (acked_items - last.1) as f64 / dt;
        let p99 = if interval_hist.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.3} ms",
                interval_hist.value_at_quantile(0.99) as f64 / 1000.0
            )
        };
        eprintln!(
            "[{:6.1}s] {:9.1} req/s {:11.0} {item}/s sent {:11.0} acked | refused {} failed {} (+{}) | p99 {} | in flight {}",
            start.elapsed().as_secs_f64(),
            req_rate,
            item_rate,
            acked_rate,
            refused,
            failed,
            (refused + failed) - (last.2 + last.3),
            p99,
            in_flight
        );
        last = (sent, acked_items, refused, failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::new_histogram;

    #[test]
    fn hgrm_has_header_rows_and_footer() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let text = hgrm_text(&h);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("Value") && lines[0].contains("1/(1-Percentile)"));
        assert!(lines[1].is_empty());
        let rows: Vec<&str> = lines[2..]
            .iter()
            .copied()
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert!(rows.len() > 20);
        let first: Vec<&str> = rows[0].split_whitespace().collect();
        assert_eq!(first.len(), 4);
        assert_eq!(first[0], "0.001");
        let last: Vec<&str> = rows.last().unwrap().split_whitespace().collect();
        assert_eq!(last.len(), 3, "the 100% row has no 1/(1-p) column");
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "10000");
        assert!(text.contains("#[Max     =       10.00"), "{text}");
        assert!(text.contains("Total count    =        10000]"), "{text}");
    }

    #[test]
    fn text_report_names_reasons() {
        let mut counts = Counts {
            sent: 3,
            ..Default::default()
        };
        counts.record(crate::outcome::Outcome::Accepted { rejected: 0 }, 100);
        counts.record(
            crate::outcome::Outcome::Refused(crate::outcome::Reason::Grpc(14)),
            100,
        );
        counts.record(
            crate::outcome::Outcome::Failed(crate::outcome::Reason::Timeout),
            100,
        );
        let mut h = new_histogram();
        h.record(1500).unwrap();
        let mut r = RunReport {
            item: "spans".into(),
            ..Default::default()
        };
        r.fill(&counts, &h, &new_histogram(), Duration::from_secs(1));
        let text = r.to_text();
        assert!(text.contains("refused grpc UNAVAILABLE (14): 1"));
        assert!(text.contains("failed timeout: 1"));
        assert!(text.contains("p50 1.500"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["requests"]["accepted"], 1);
        assert_eq!(json["failed_by_reason"]["timeout"], 1);
    }
}
