//! Sampler statistics and their Prometheus text rendering.
//!
//! Every metric is named `shardtel_sampler_*` and carries a `core` label; see [`render`] for the
//! list. Counters only grow; the `buffered_*` and `decision_cache_entries` gauges describe the
//! moment of the snapshot.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::policy::Vote;
use super::DecisionReason;

/// Votes of one top-level policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyStats {
    /// The policy's name.
    pub name: String,
    /// Whether it is a `drop` policy (votes drop or not-sample, never sample).
    pub is_drop: bool,
    /// Traces it voted to sample.
    pub sample: u64,
    /// Traces it did not vote to sample (for a `drop` policy: traces it did not match).
    pub not_sample: u64,
    /// Traces a `drop` policy matched (and so dropped).
    pub drop: u64,
}

impl PolicyStats {
    pub(crate) fn count(&mut self, vote: Vote) {
        match vote {
            Vote::Sample => self.sample += 1,
            Vote::NotSample => self.not_sample += 1,
            Vote::Drop => self.drop += 1,
        }
    }
}

/// Statistics of one core's sampler. Cheap to clone for a published snapshot except for the
/// latency histogram (a few KiB).
#[derive(Clone, Debug)]
pub struct SamplerStats {
    /// Spans given to [`super::Sampler::add`].
    pub spans_received: u64,
    /// Traces that started buffering (a trace whose cached decision was forgotten and that
    /// receives spans again counts again).
    pub traces_received: u64,
    /// Decided traces, by reason (index: [`DecisionReason::index`]).
    pub decisions: [u64; DecisionReason::ALL.len()],
    /// Traces decided sampled.
    pub traces_sampled: u64,
    /// Traces decided not sampled.
    pub traces_not_sampled: u64,
    /// Spans of traces decided sampled (at decision time; late spans not included).
    pub spans_sampled: u64,
    /// Spans of traces decided not sampled.
    pub spans_not_sampled: u64,
    /// Spans of already-sampled traces forwarded as they arrived.
    pub late_spans_forwarded: u64,
    /// Spans of already-not-sampled traces dropped as they arrived.
    pub late_spans_dropped: u64,
    /// Traces dropped undecided at shutdown (`on_shutdown = "drop"`).
    pub shutdown_dropped_traces: u64,
    /// Their spans.
    pub shutdown_dropped_spans: u64,
    /// Per top-level policy, in configuration order.
    pub policies: Vec<PolicyStats>,
    /// Decision time − first span's arrival, in microseconds (1% precision, clamped to
    /// [`SamplerStats::MAX_LATENCY_US`]).
    pub decision_latency_us: Histogram<u64>,
    /// Sum of the recorded latencies, in microseconds.
    pub decision_latency_sum_us: u64,
    /// Traces buffered now.
    pub buffered_traces: u64,
    /// Spans buffered now.
    pub buffered_spans: u64,
    /// Wire bytes of the buffered spans.
    pub buffered_span_bytes: u64,
    /// Bytes charged against `max_buffered_bytes_per_core`: this core's share of every retained
    /// request buffer (at least a quarter of it), their indexes, and the trace table entries.
    pub buffered_bytes: u64,
    /// Request batches retained now.
    pub buffered_batches: u64,
    /// Trace ids in the decision cache as sampled.
    pub cache_sampled: u64,
    /// Trace ids in the decision cache as not sampled.
    pub cache_not_sampled: u64,
    /// Sparse batches whose buffered spans were copied into a small buffer of their own.
    pub compactions: u64,
    /// Spans copied by those compactions.
    pub compacted_spans: u64,
    /// Bytes of the buffers they made (the bytes copied).
    pub compacted_bytes: u64,
}

impl SamplerStats {
    /// Largest recorded decision latency (24 h, the longest `decision_wait`); larger values
    /// are recorded as this.
    pub const MAX_LATENCY_US: u64 = 24 * 3600 * 1_000_000;
    /// Precision of the latency histogram: 2 significant digits (1%), about 30 KiB.
    pub const LATENCY_SIGNIFICANT_DIGITS: u8 = 2;

    pub(crate) fn new(policies: impl Iterator<Item = (String, bool)>) -> Self {
        SamplerStats {
            spans_received: 0,
            traces_received: 0,
            decisions: [0; DecisionReason::ALL.len()],
            traces_sampled: 0,
            traces_not_sampled: 0,
            spans_sampled: 0,
            spans_not_sampled: 0,
            late_spans_forwarded: 0,
            late_spans_dropped: 0,
            shutdown_dropped_traces: 0,
            shutdown_dropped_spans: 0,
            policies: policies
                .map(|(name, is_drop)| PolicyStats {
                    name,
                    is_drop,
                    sample: 0,
                    not_sample: 0,
                    drop: 0,
                })
                .collect(),
            decision_latency_us: Histogram::new_with_bounds(
                1,
                Self::MAX_LATENCY_US,
                Self::LATENCY_SIGNIFICANT_DIGITS,
            )
            .expect("valid histogram bounds"),
            decision_latency_sum_us: 0,
            buffered_traces: 0,
            buffered_spans: 0,
            buffered_span_bytes: 0,
            buffered_bytes: 0,
            buffered_batches: 0,
            cache_sampled: 0,
            cache_not_sampled: 0,
            compactions: 0,
            compacted_spans: 0,
            compacted_bytes: 0,
        }
    }

    /// Traces decided for `reason`.
    pub fn decided(&self, reason: DecisionReason) -> u64 {
        self.decisions[reason.index()]
    }

    /// Traces decided for any reason.
    pub fn decided_total(&self) -> u64 {
        self.decisions.iter().sum()
    }

    /// Traces decided early because a bound would have been crossed.
    pub fn decided_early(&self) -> u64 {
        DecisionReason::ALL
            .iter()
            .filter(|r| r.is_bound())
            .map(|r| self.decided(*r))
            .sum()
    }
}

/// Appends the Prometheus text exposition of the samplers of several cores to `out`, one
/// `# HELP`/`# TYPE` per metric family, one series per core (label `core`):
///
/// | metric | type | labels |
/// |---|---|---|
/// | `shardtel_sampler_spans_received_total` | counter | |
/// | `shardtel_sampler_traces_received_total` | counter | |
/// | `shardtel_sampler_traces_total` | counter | `decision` = `sampled` / `not_sampled` |
/// | `shardtel_sampler_spans_total` | counter | `decision` |
/// | `shardtel_sampler_decisions_total` | counter | `reason` = `timer`, `root_done`, `max_traces`, `max_buffered_bytes`, `max_spans_per_trace`, `max_bytes_per_trace`, `shutdown` |
/// | `shardtel_sampler_policy_votes_total` | counter | `policy`, `vote` = `sample` / `not_sample` / `drop` |
/// | `shardtel_sampler_late_spans_total` | counter | `decision` = `forwarded` / `dropped` |
/// | `shardtel_sampler_shutdown_dropped_traces_total` | counter | |
/// | `shardtel_sampler_shutdown_dropped_spans_total` | counter | |
/// | `shardtel_sampler_decision_latency_seconds` | summary | `quantile` = 0.5, 0.9, 0.99, 0.999 (+ `_sum`, `_count`) |
/// | `shardtel_sampler_buffered_traces` | gauge | |
/// | `shardtel_sampler_buffered_spans` | gauge | |
/// | `shardtel_sampler_buffered_span_bytes` | gauge | |
/// | `shardtel_sampler_buffered_bytes` | gauge | |
/// | `shardtel_sampler_buffered_batches` | gauge | |
/// | `shardtel_sampler_decision_cache_entries` | gauge | `decision` = `sampled` / `not_sampled` |
/// | `shardtel_sampler_compactions_total` | counter | |
/// | `shardtel_sampler_compacted_spans_total` | counter | |
/// | `shardtel_sampler_compacted_bytes_total` | counter | |
pub fn render(cores: &[(usize, &SamplerStats)], out: &mut String) {
    let single = |name, kind, help, get: fn(&SamplerStats) -> u64| Family {
        name,
        kind,
        help,
        label: "",
        values: Box::new(move |s| vec![("", get(s))]),
    };
    let pair =
        |name, kind, help, label, names: [&'static str; 2], get: fn(&SamplerStats) -> [u64; 2]| {
            Family {
                name,
                kind,
                help,
                label,
                values: Box::new(move |s| names.into_iter().zip(get(s)).collect()),
            }
        };
    let families = [
        single(
            "shardtel_sampler_spans_received_total",
            "counter",
            "Spans that reached the tail sampler on their owner core.",
            |s| s.spans_received,
        ),
        single(
            "shardtel_sampler_traces_received_total",
            "counter",
            "Traces that started buffering in the tail sampler.",
            |s| s.traces_received,
        ),
        pair(
            "shardtel_sampler_traces_total",
            "counter",
            "Traces decided, by outcome.",
            "decision",
            ["sampled", "not_sampled"],
            |s| [s.traces_sampled, s.traces_not_sampled],
        ),
        pair(
            "shardtel_sampler_spans_total",
            "counter",
            "Spans of decided traces at decision time, by outcome.",
            "decision",
            ["sampled", "not_sampled"],
            |s| [s.spans_sampled, s.spans_not_sampled],
        ),
        Family {
            name: "shardtel_sampler_decisions_total",
            kind: "counter",
            help: "Traces decided, by what triggered the decision (all but timer, root_done and shutdown are bounds crossed).",
            label: "reason",
            values: Box::new(|s| {
                DecisionReason::ALL
                    .iter()
                    .map(|r| (r.name(), s.decided(*r)))
                    .collect()
            }),
        },
        pair(
            "shardtel_sampler_late_spans_total",
            "counter",
            "Spans that arrived after their trace was decided, forwarded or dropped per the cached decision.",
            "decision",
            ["forwarded", "dropped"],
            |s| [s.late_spans_forwarded, s.late_spans_dropped],
        ),
        single(
            "shardtel_sampler_shutdown_dropped_traces_total",
            "counter",
            "Traces dropped undecided at shutdown (on_shutdown = \"drop\").",
            |s| s.shutdown_dropped_traces,
        ),
        single(
            "shardtel_sampler_shutdown_dropped_spans_total",
            "counter",
            "Spans of traces dropped undecided at shutdown.",
            |s| s.shutdown_dropped_spans,
        ),
        single(
            "shardtel_sampler_buffered_traces",
            "gauge",
            "Traces buffered, waiting for their decision.",
            |s| s.buffered_traces,
        ),
        single(
            "shardtel_sampler_buffered_spans",
            "gauge",
            "Spans buffered, waiting for their trace's decision.",
            |s| s.buffered_spans,
        ),
        single(
            "shardtel_sampler_buffered_span_bytes",
            "gauge",
            "Wire bytes of the buffered spans.",
            |s| s.buffered_span_bytes,
        ),
        single(
            "shardtel_sampler_buffered_bytes",
            "gauge",
            "Bytes charged against max_buffered_bytes_per_core: this core's share of retained request buffers (at least a quarter of each), their indexes and the trace table.",
            |s| s.buffered_bytes,
        ),
        single(
            "shardtel_sampler_buffered_batches",
            "gauge",
            "Request batches retained because some of their spans are buffered.",
            |s| s.buffered_batches,
        ),
        pair(
            "shardtel_sampler_decision_cache_entries",
            "gauge",
            "Trace ids remembered in the decision cache.",
            "decision",
            ["sampled", "not_sampled"],
            |s| [s.cache_sampled, s.cache_not_sampled],
        ),
        single(
            "shardtel_sampler_compactions_total",
            "counter",
            "Sparse request buffers whose few buffered spans were copied out so the buffer could be freed.",
            |s| s.compactions,
        ),
        single(
            "shardtel_sampler_compacted_spans_total",
            "counter",
            "Spans copied by compactions.",
            |s| s.compacted_spans,
        ),
        single(
            "shardtel_sampler_compacted_bytes_total",
            "counter",
            "Bytes copied by compactions (the size of the buffers they made).",
            |s| s.compacted_bytes,
        ),
    ];
    for f in &families {
        family(out, f.name, f.kind, f.help);
        for (core, s) in cores {
            for (value, n) in (f.values)(s) {
                if f.label.is_empty() {
                    let _ = writeln!(out, "{}{{core=\"{core}\"}} {n}", f.name);
                } else {
                    let _ = writeln!(
                        out,
                        "{}{{core=\"{core}\",{}=\"{value}\"}} {n}",
                        f.name, f.label
                    );
                }
            }
        }
    }

    let name = "shardtel_sampler_policy_votes_total";
    family(
        out,
        name,
        "counter",
        "Votes of each top-level policy, one per decided trace.",
    );
    for (core, s) in cores {
        for p in &s.policies {
            let policy = escape(&p.name);
            let votes: &[(&str, u64)] = if p.is_drop {
                &[("not_sample", p.not_sample), ("drop", p.drop)]
            } else {
                &[("sample", p.sample), ("not_sample", p.not_sample)]
            };
            for (vote, n) in votes {
                let _ = writeln!(
                    out,
                    "{name}{{core=\"{core}\",policy=\"{policy}\",vote=\"{vote}\"}} {n}"
                );
            }
        }
    }

    let name = "shardtel_sampler_decision_latency_seconds";
    family(
        out,
        name,
        "summary",
        "Time from a trace's first span to its decision.",
    );
    for (core, s) in cores {
        let h = &s.decision_latency_us;
        for q in [0.5, 0.9, 0.99, 0.999] {
            let seconds = h.value_at_quantile(q) as f64 / 1e6;
            let _ = writeln!(out, "{name}{{core=\"{core}\",quantile=\"{q}\"}} {seconds}");
        }
        let sum = s.decision_latency_sum_us as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{core=\"{core}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{core=\"{core}\"}} {}", h.len());
    }
}

/// A metric family whose series are read from each core's stats: `(label value, value)` pairs
/// (the label value is ignored when `label` is empty).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    label: &'static str,
    #[allow(clippy::type_complexity)]
    values: Box<dyn Fn(&SamplerStats) -> Vec<(&'static str, u64)>>,
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_family_once_with_a_series_per_core() {
        let mut a = SamplerStats::new(
            [
                ("errors".to_string(), false),
                ("no \"health\"".to_string(), true),
            ]
            .into_iter(),
        );
        a.spans_received = 10;
        a.decisions[DecisionReason::MaxTraces.index()] = 3;
        a.policies[0].sample = 2;
        a.policies[1].drop = 1;
        a.decision_latency_us.record(2_000_000).unwrap();
        a.decision_latency_sum_us = 2_000_000;
        let b = SamplerStats::new([("errors".to_string(), false)].into_iter());
        let mut out = String::new();
        render(&[(0, &a), (1, &b)], &mut out);
        assert_eq!(
            out.matches("# TYPE shardtel_sampler_spans_received_total counter")
                .count(),
            1
        );
        assert!(out.contains("shardtel_sampler_spans_received_total{core=\"0\"} 10\n"));
        assert!(out.contains("shardtel_sampler_spans_received_total{core=\"1\"} 0\n"));
        assert!(
            out.contains("shardtel_sampler_decisions_total{core=\"0\",reason=\"max_traces\"} 3\n")
        );
        assert!(out.contains(
            "shardtel_sampler_policy_votes_total{core=\"0\",policy=\"errors\",vote=\"sample\"} 2\n"
        ));
        assert!(out.contains(
            "shardtel_sampler_policy_votes_total{core=\"0\",policy=\"no \\\"health\\\"\",vote=\"drop\"} 1\n"
        ));
        assert!(out.contains(
            "shardtel_sampler_decision_latency_seconds{core=\"0\",quantile=\"0.5\"} 2.0"
        ));
        assert!(out.contains("shardtel_sampler_decision_latency_seconds_count{core=\"0\"} 1\n"));
        assert!(out.contains("shardtel_sampler_decision_latency_seconds_sum{core=\"0\"} 2\n"));
        // Every non-comment line is `name{labels} value`.
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(
                series.starts_with("shardtel_sampler_") && series.ends_with('}'),
                "{line}"
            );
            value.parse::<f64>().unwrap();
        }
    }
}
