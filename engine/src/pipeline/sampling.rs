//! Where the tail sampler (`shardtel-sampler`) runs on this core: spans this core owns go in,
//! kept spans come out (through the processors listed after the sampler) into the traces
//! exporters; its decision timer; what it still holds at shutdown; its metric families.

use std::time::{Duration, Instant};

use shardtel_config::{Config, Durability, OnShutdown, ProcessorConfig};
use shardtel_processors::{ExporterSet, SpanChanges, SpanGroups, SpanPart};
use shardtel_protocol::reframe::{encode_trace_spans, encode_trace_spans_rewritten, Encoded};
use shardtel_protocol::scan::SpanBatch;
use shardtel_protocol::Signal;
use shardtel_sampler::{capacity, DecisionReason, Kept, SamplerStats};

use super::exporters::queue_charge;
use super::Pipeline;
use crate::telemetry::{Exposition, Families, MetricType};

/// At start: warns, with the numbers, for each bound of the traces pipeline's tail sampler (and
/// of the ingest log, with durability on) that cannot hold `decision_wait` of traffic at the
/// rate the process is expected to take (`shardtel_sampler::capacity`). Returns the warnings.
pub fn check_capacity(config: &Config, cores: usize) -> Vec<String> {
    let Some(traces) = &config.pipelines.traces else {
        return Vec::new();
    };
    let ingest_log = (config.engine.durability == Durability::AckAfterSync)
        .then_some(config.engine.wal.ingest_max_bytes);
    let mut warnings = Vec::new();
    for name in &traces.processors {
        let Some(ProcessorConfig::TailSampling(t)) = config.processors.get(name) else {
            continue;
        };
        let rate = capacity::Rate::of(t, cores);
        let shortfalls = capacity::check(t, cores, rate, ingest_log);
        if shortfalls.is_empty() {
            continue;
        }
        let source = if rate.derived {
            format!(
                "derived: {} spans/s per core x {cores} cores; set processors.{name}.expected_spans_per_second",
                capacity::DERIVED_SPANS_PER_SECOND_PER_CORE
            )
        } else {
            format!("processors.{name}.expected_spans_per_second")
        };
        for s in shortfalls {
            let w = format!(
                "tail sampling {name:?}: at {} spans/s ({source}), decision_wait = {:?} needs more than the bounds hold ({} assumed bytes per buffered span, {} on the wire, {} spans per trace): {s}; beyond that, traces are decided early or receivers refuse",
                rate.spans_per_second,
                t.decision_wait,
                capacity::assumed_charge_per_span(t),
                capacity::ASSUMED_WIRE_BYTES_PER_SPAN,
                capacity::ASSUMED_SPANS_PER_TRACE,
            );
            log::warn!("{w}");
            warnings.push(w);
        }
    }
    warnings
}

impl Pipeline {
    /// True when the traces pipeline has a tail sampler.
    pub fn samples(&self) -> bool {
        self.sampler.is_some()
    }

    /// Hands spans this core owns to the tail sampler and exports what it decided to keep
    /// (late spans of sampled traces, early decisions).
    pub(super) async fn sample(&self, batch: SpanBatch) {
        let mut kept = Vec::new();
        if let Some(sampler) = &self.sampler {
            sampler.borrow_mut().add(batch, Instant::now(), &mut kept);
        }
        self.export_kept(kept).await;
    }

    /// Encodes kept spans into one request (protobuf concatenation) and pushes it to the
    /// traces exporters. With processors listed after the sampler, they run on the kept spans
    /// of each batch in place: the batch (shared with its spans still buffered) is neither
    /// copied nor changed, their changes are applied while encoding.
    async fn export_kept(&self, kept: Vec<Kept>) {
        if kept.is_empty() {
            return;
        }
        let processors = self.processors();
        if let Some(metrics) = &processors.spanmetrics_after {
            for k in &kept {
                metrics.record_batch(&k.batch, Some(&k.spans));
            }
        }
        if processors.traces_router.is_some() {
            return self.export_kept_routed(kept).await;
        }
        let mut enc = Encoded::default();
        let mut items = 0u64;
        let mut charge = 0usize;
        for k in &kept {
            let before = enc.len;
            match &processors.traces_after {
                None => {
                    encode_trace_spans(&k.batch, &k.spans, &mut enc);
                    items += k.spans.len() as u64;
                }
                Some(chain) => {
                    let changes = chain.process_trace_spans(&k.batch, &k.spans);
                    let rewrites = Some(&changes.rewrites);
                    if changes.dropped.is_empty() {
                        encode_trace_spans_rewritten(&k.batch, &k.spans, rewrites, &mut enc);
                        items += k.spans.len() as u64;
                    } else {
                        let left = without(&k.spans, &changes.dropped);
                        encode_trace_spans_rewritten(&k.batch, &left, rewrites, &mut enc);
                        items += left.len() as u64;
                    }
                }
            }
            if enc.len > before {
                charge += queue_charge(enc.len - before, k.batch.buf.len());
            }
        }
        drop(kept);
        if enc.is_empty() {
            return;
        }
        self.exporters
            .push_waiting(Signal::Traces, enc, None, items, charge)
            .await;
    }

    /// [`Pipeline::export_kept`] with a routing processor: each kept trace goes, after the
    /// processors listed after the sampler, to the exporters of its route; one encoding per
    /// destination set, shared by its exporters.
    async fn export_kept_routed(&self, kept: Vec<Kept>) {
        let processors = self.processors();
        let Some(router) = &processors.traces_router else {
            return;
        };
        let changes: Vec<Option<SpanChanges>> = kept
            .iter()
            .map(|k| {
                let chain = processors.traces_after.as_ref()?;
                Some(chain.process_trace_spans(&k.batch, &k.spans))
            })
            .collect();
        let lefts: Vec<Option<Vec<u32>>> = kept
            .iter()
            .zip(&changes)
            .map(|(k, c)| match c {
                Some(c) if !c.dropped.is_empty() => Some(without(&k.spans, &c.dropped)),
                _ => None,
            })
            .collect();
        let parts: Vec<SpanPart<'_>> = kept
            .iter()
            .zip(&changes)
            .zip(&lefts)
            .map(|((k, c), left)| SpanPart {
                batch: &k.batch,
                spans: left.as_deref().unwrap_or(&k.spans),
                extra: c.as_ref().map(|c| &c.rewrites),
            })
            .collect();
        let mut groups: Vec<SpanGroups> = vec![Vec::new(); parts.len()];
        router.route_parts(&parts, &mut groups);
        let mut out: Vec<(ExporterSet, Encoded, u64, usize)> = Vec::new();
        for (part, groups) in parts.iter().zip(&groups) {
            for (set, group) in groups {
                if *set == 0 {
                    continue;
                }
                let pos = match out.iter().position(|o| o.0 == *set) {
                    Some(p) => p,
                    None => {
                        out.push((*set, Encoded::default(), 0, 0));
                        out.len() - 1
                    }
                };
                let o = &mut out[pos];
                let before = o.1.len;
                encode_trace_spans_rewritten(part.batch, group, part.extra, &mut o.1);
                o.2 += group.len() as u64;
                o.3 += queue_charge(o.1.len - before, part.batch.buf.len());
            }
        }
        drop(parts);
        drop(kept);
        for (set, enc, items, charge) in out {
            if !enc.is_empty() {
                self.exporters
                    .push_waiting_to(Signal::Traces, set, enc, None, items, charge)
                    .await;
            }
        }
    }

    /// Decides the traces whose time has come; returns when the next one is due.
    pub async fn sampler_tick(&self) -> Duration {
        let Some(sampler) = &self.sampler else {
            return Duration::from_secs(1);
        };
        let mut kept = Vec::new();
        let now = Instant::now();
        let next = {
            let mut s = sampler.borrow_mut();
            s.tick(now, &mut kept);
            s.next_deadline()
        };
        self.export_kept(kept).await;
        next.map_or(Duration::from_millis(100), |d| {
            d.saturating_duration_since(Instant::now())
        })
        .clamp(Duration::from_millis(1), Duration::from_millis(100))
    }

    /// At shutdown, once every span this core owns has arrived: decides (or drops) what the
    /// sampler still holds, as configured, and exports what it keeps before `deadline` (a full
    /// queue whose destination is down would hold it forever). With durability on,
    /// `on_shutdown = "drop"` drops nothing acknowledged: the pending traces' ingest-log frames
    /// stay unreleased, and the next start replays them. False when the export of the kept
    /// traces ran out of time.
    pub async fn finish_sampling(&self, deadline: Instant) -> bool {
        let Some(sampler) = &self.sampler else {
            return true;
        };
        let replay_pending = self.durable() && sampler.borrow().on_shutdown() == OnShutdown::Drop;
        if replay_pending {
            sampler.borrow_mut().leak_pending();
            return true;
        }
        let mut kept = Vec::new();
        sampler.borrow_mut().shutdown(Instant::now(), &mut kept);
        let remaining = deadline.saturating_duration_since(Instant::now());
        let export = async {
            self.export_kept(kept).await;
            Ok(())
        };
        glommio::timer::timeout(remaining, export).await.is_ok()
    }

    /// The sampler's statistics, for telemetry.
    pub fn sampler_snapshot(&self) -> Option<SamplerStats> {
        self.sampler.as_ref().map(|s| s.borrow().stats().clone())
    }
}

/// `spans` (ascending) without `dropped` (ascending).
fn without(spans: &[u32], dropped: &[u32]) -> Vec<u32> {
    let mut dropped = dropped.iter().peekable();
    spans
        .iter()
        .copied()
        .filter(|&i| dropped.next_if_eq(&&i).is_none())
        .collect()
}

/// A sampler family read from each core's statistics: `(label value, value)` pairs under the
/// family's label (`""`: one sample per core, no label besides `core`).
type SamplerColumn = (
    &'static str,
    MetricType,
    &'static str,
    &'static str,
    fn(&SamplerStats) -> Vec<(&'static str, u64)>,
);

/// The sampler series, one per core (label `core`):
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
/// | `shardtel_sampler_compressed_batches_total` | counter | |
/// | `shardtel_sampler_compression_bytes_total` | counter | `stage` = `in` / `out` |
/// | `shardtel_sampler_compression_seconds_total` | counter | |
/// | `shardtel_sampler_compressed_bytes` | gauge | `stage` = `compressed` / `uncompressed` |
/// | `shardtel_sampler_decompressions_total` | counter | `cache` = `miss` / `hit` |
/// | `shardtel_sampler_decompressed_bytes_total` | counter | |
/// | `shardtel_sampler_decompression_seconds_total` | counter | |
/// | `shardtel_sampler_decompressed_cache_bytes` | gauge | |
impl Families for SamplerStats {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        if cores.is_empty() {
            return;
        }
        use MetricType::{Counter, Gauge};
        let columns: [SamplerColumn; 23] = [
            (
                "shardtel_sampler_spans_received_total",
                Counter,
                "Spans that reached the tail sampler on their owner core.",
                "",
                |s| vec![("", s.spans_received)],
            ),
            (
                "shardtel_sampler_traces_received_total",
                Counter,
                "Traces that started buffering in the tail sampler.",
                "",
                |s| vec![("", s.traces_received)],
            ),
            (
                "shardtel_sampler_traces_total",
                Counter,
                "Traces decided, by outcome.",
                "decision",
                |s| vec![("sampled", s.traces_sampled), ("not_sampled", s.traces_not_sampled)],
            ),
            (
                "shardtel_sampler_spans_total",
                Counter,
                "Spans of decided traces at decision time, by outcome.",
                "decision",
                |s| vec![("sampled", s.spans_sampled), ("not_sampled", s.spans_not_sampled)],
            ),
            (
                "shardtel_sampler_decisions_total",
                Counter,
                "Traces decided, by what triggered the decision (all but timer, root_done and shutdown are bounds crossed).",
                "reason",
                |s| {
                    DecisionReason::ALL
                        .iter()
                        .map(|r| (r.name(), s.decided(*r)))
                        .collect()
                },
            ),
            (
                "shardtel_sampler_late_spans_total",
                Counter,
                "Spans that arrived after their trace was decided, forwarded or dropped per the cached decision.",
                "decision",
                |s| vec![("forwarded", s.late_spans_forwarded), ("dropped", s.late_spans_dropped)],
            ),
            (
                "shardtel_sampler_shutdown_dropped_traces_total",
                Counter,
                "Traces dropped undecided at shutdown (on_shutdown = \"drop\").",
                "",
                |s| vec![("", s.shutdown_dropped_traces)],
            ),
            (
                "shardtel_sampler_shutdown_dropped_spans_total",
                Counter,
                "Spans of traces dropped undecided at shutdown.",
                "",
                |s| vec![("", s.shutdown_dropped_spans)],
            ),
            (
                "shardtel_sampler_buffered_traces",
                Gauge,
                "Traces buffered, waiting for their decision.",
                "",
                |s| vec![("", s.buffered_traces)],
            ),
            (
                "shardtel_sampler_buffered_spans",
                Gauge,
                "Spans buffered, waiting for their trace's decision.",
                "",
                |s| vec![("", s.buffered_spans)],
            ),
            (
                "shardtel_sampler_buffered_span_bytes",
                Gauge,
                "Wire bytes of the buffered spans.",
                "",
                |s| vec![("", s.buffered_span_bytes)],
            ),
            (
                "shardtel_sampler_buffered_bytes",
                Gauge,
                "Bytes charged against max_buffered_bytes_per_core: this core's share of retained request buffers (at least a quarter of each), their indexes and the trace table.",
                "",
                |s| vec![("", s.buffered_bytes)],
            ),
            (
                "shardtel_sampler_buffered_batches",
                Gauge,
                "Request batches retained because some of their spans are buffered.",
                "",
                |s| vec![("", s.buffered_batches)],
            ),
            (
                "shardtel_sampler_decision_cache_entries",
                Gauge,
                "Trace ids remembered in the decision cache.",
                "decision",
                |s| vec![("sampled", s.cache_sampled), ("not_sampled", s.cache_not_sampled)],
            ),
            (
                "shardtel_sampler_compactions_total",
                Counter,
                "Sparse request buffers whose few buffered spans were copied out so the buffer could be freed.",
                "",
                |s| vec![("", s.compactions)],
            ),
            (
                "shardtel_sampler_compacted_spans_total",
                Counter,
                "Spans copied by compactions.",
                "",
                |s| vec![("", s.compacted_spans)],
            ),
            (
                "shardtel_sampler_compacted_bytes_total",
                Counter,
                "Bytes copied by compactions (the size of the buffers they made).",
                "",
                |s| vec![("", s.compacted_bytes)],
            ),
            (
                "shardtel_sampler_compressed_batches_total",
                Counter,
                "Batches whose buffered spans were compressed (buffer_compression = \"lz4\").",
                "",
                |s| vec![("", s.compressed_batches)],
            ),
            (
                "shardtel_sampler_compression_bytes_total",
                Counter,
                "Bytes compressed: the spans and headers copied (in) and the blocks made (out).",
                "stage",
                |s| vec![("in", s.compression_in_bytes), ("out", s.compression_out_bytes)],
            ),
            (
                "shardtel_sampler_compressed_bytes",
                Gauge,
                "Compressed blocks held now, and their size uncompressed.",
                "stage",
                |s| {
                    vec![
                        ("compressed", s.compressed_held_bytes),
                        ("uncompressed", s.compressed_held_plain_bytes),
                    ]
                },
            ),
            (
                "shardtel_sampler_decompressions_total",
                Counter,
                "Blocks decompressed to export kept spans (miss) or found already decompressed in the cache (hit).",
                "cache",
                |s| vec![("miss", s.decompressions), ("hit", s.decompression_cache_hits)],
            ),
            (
                "shardtel_sampler_decompressed_bytes_total",
                Counter,
                "Bytes decompressed.",
                "",
                |s| vec![("", s.decompressed_bytes)],
            ),
            (
                "shardtel_sampler_decompressed_cache_bytes",
                Gauge,
                "Bytes of decompressed blocks kept for the next decisions (bounded, not charged).",
                "",
                |s| vec![("", s.decompressed_cached_bytes)],
            ),
        ];
        for (name, kind, help, label, values) in columns {
            let family = out.family(name, kind, help);
            for (core, s) in cores {
                for (value, n) in values(s) {
                    if label.is_empty() {
                        family.sample(&[("core", core)], n);
                    } else {
                        family.sample(&[("core", core), (label, &value)], n);
                    }
                }
            }
        }
        for (name, help, nanos) in [
            (
                "shardtel_sampler_compression_seconds_total",
                "Time spent copying and compressing buffered spans.",
                (|s| s.compression_nanos) as fn(&SamplerStats) -> u64,
            ),
            (
                "shardtel_sampler_decompression_seconds_total",
                "Time spent decompressing blocks of kept spans.",
                |s| s.decompression_nanos,
            ),
        ] {
            let family = out.counter(name, help);
            for (core, s) in cores {
                family.sample(&[("core", core)], nanos(s) as f64 / 1e9);
            }
        }
        let votes = out.counter(
            "shardtel_sampler_policy_votes_total",
            "Votes of each top-level policy, one per decided trace.",
        );
        for (core, s) in cores {
            for p in &s.policies {
                let counts: &[(&str, u64)] = if p.is_drop {
                    &[("not_sample", p.not_sample), ("drop", p.drop)]
                } else {
                    &[("sample", p.sample), ("not_sample", p.not_sample)]
                };
                for (vote, n) in counts {
                    votes.sample(&[("core", core), ("policy", &p.name), ("vote", vote)], *n);
                }
            }
        }
        let latency = out.summary(
            "shardtel_sampler_decision_latency_seconds",
            "Time from a trace's first span to its decision.",
        );
        for (core, s) in cores {
            let h = &s.decision_latency_us;
            for q in [0.5, 0.9, 0.99, 0.999] {
                let seconds = h.value_at_quantile(q) as f64 / 1e6;
                latency.sample(&[("core", core), ("quantile", &q)], seconds);
            }
            latency
                .sample_with_suffix(
                    "_sum",
                    &[("core", core)],
                    s.decision_latency_sum_us as f64 / 1e6,
                )
                .sample_with_suffix("_count", &[("core", core)], h.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::exposition::parse;

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
        let mut e = Exposition::default();
        SamplerStats::families(&[(0, &a), (1, &b)], &mut e);
        let out = e.render();
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
        parse(&out).unwrap();
    }
}
