//! Where the processors (`shardtel-processors`) run on this core: the traces processors before
//! the sampler on the spans the core owns, those of metrics and logs on the receiving core; and
//! their metric families.

use bytes::Bytes;
use shardtel_processors::{ChainOutcome, ProcessorSnapshot, RouterSnapshot, SpanMetricsSnapshot};
use shardtel_protocol::reframe::Encoded;
use shardtel_protocol::scan::SpanBatch;
use shardtel_protocol::Signal;

use super::route::whole;
use super::Pipeline;
use crate::telemetry::{Exposition, Families};

impl Pipeline {
    /// Runs the traces processors listed before the sampler (all of them without one) on a
    /// batch this core owns. Returns whether anything changed.
    pub(super) fn process_owned(&self, batch: &mut SpanBatch) -> bool {
        let processors = self.processors();
        let changed = match &processors.traces_before {
            Some(chain) => chain.process_traces(batch).changed,
            None => false,
        };
        if let Some(metrics) = &processors.spanmetrics_before {
            metrics.record_batch(batch, None);
        }
        changed
    }

    /// How often the span metrics are handed to the metrics pipeline, when there are any.
    pub fn spanmetrics_interval(&self) -> Option<std::time::Duration> {
        self.processors().spanmetrics_flush
    }

    /// Hands the span metrics counted since the last flush to the metrics pipeline (as a
    /// request from a receiver would be: durability, series routing, processors, exporters).
    /// A refused flush is counted and its counts kept for the next one (of a flush split among
    /// cores whose first parts were queued, only the parts not queued).
    pub async fn flush_spanmetrics(&self) {
        let processors = self.processors();
        let metrics = [
            &processors.spanmetrics_before,
            &processors.spanmetrics_after,
        ];
        for m in metrics.into_iter().flatten() {
            let start = m.window_start();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let Some((body, _points)) = m.flush(now) else {
                continue;
            };
            if let Err(e) = self.ingest(Signal::Metrics, body.clone()).await {
                log::debug!(
                    "core {}: span metrics refused, kept for the next flush: {:?}",
                    self.core,
                    e.error
                );
                // Parts of the flush already queued on other cores are not put back: the next
                // flush would send them again (a delta counted twice downstream).
                match &e.partial {
                    Some(p) => {
                        let unsent: Vec<Bytes> = p.unsent.iter().map(Encoded::to_bytes).collect();
                        m.refused_parts(unsent.iter().map(|b| &b[..]), start);
                    }
                    None => m.refused(&body, start),
                }
            }
        }
    }

    /// The span metrics counters, for telemetry.
    pub fn spanmetrics_snapshot(&self) -> Option<SpanMetricsSnapshot> {
        let processors = self.processors();
        processors
            .spanmetrics_before
            .as_ref()
            .or(processors.spanmetrics_after.as_ref())
            .map(|m| m.snapshot())
    }

    /// Runs a metrics or logs pipeline's processors on a validated request of `items` items:
    /// the piece to export and how many items it holds.
    pub(super) fn process_request(
        &self,
        signal: Signal,
        body: Bytes,
        items: u64,
    ) -> (Encoded, u64) {
        match self.run_request_chain(signal, &body) {
            Some((piece, outcome)) => (piece, items.saturating_sub(outcome.dropped)),
            None => (whole(body), items),
        }
    }

    /// Runs a metrics or logs pipeline's processors on a validated request: the changed request
    /// and what the chain did, or `None` when there is no chain or it changed nothing.
    pub(super) fn run_request_chain(
        &self,
        signal: Signal,
        body: &Bytes,
    ) -> Option<(Encoded, ChainOutcome)> {
        match self
            .processors()
            .request_chain(signal)?
            .process_request(body)
        {
            Ok(changed) => changed,
            Err(e) => {
                // The scanner accepted the request, so the walk cannot fail; export it as is.
                log::warn!(
                    "core {}: {signal} processors skipped a request: {e}",
                    self.core
                );
                None
            }
        }
    }

    /// Counters of every processor on this core, for telemetry.
    pub fn processor_snapshot(&self) -> Vec<ProcessorSnapshot> {
        self.processors().snapshot()
    }

    /// Counters of every routing processor on this core, for telemetry.
    pub fn router_snapshot(&self) -> Vec<RouterSnapshot> {
        self.processors().router_snapshot()
    }
}

/// `shardtel_routing_items_total{processor, signal, route, core}`: items (spans for traces)
/// each route took; `route="default"` counts those no route matched (dropped when `default`
/// is empty).
impl Families for [RouterSnapshot] {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        if cores.iter().all(|(_, r)| r.is_empty()) {
            return;
        }
        let family = out.counter(
            "shardtel_routing_items_total",
            "Items each route of a routing processor took (route=\"default\": no route matched).",
        );
        for (core, routers) in cores {
            for r in *routers {
                for (route, n) in &r.routed {
                    family.sample(
                        &[
                            ("processor", &r.name),
                            ("signal", &r.signal),
                            ("route", route),
                            ("core", core),
                        ],
                        *n,
                    );
                }
            }
        }
    }
}

impl Families for [ProcessorSnapshot] {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        if cores.iter().all(|(_, p)| p.is_empty()) {
            return;
        }
        for (name, help, field) in [
            (
                "shardtel_processor_items_received_total",
                "Items (spans, data points, log records; resources for the resource processor) that reached the processor.",
                0,
            ),
            (
                "shardtel_processor_items_changed_total",
                "Items the processor changed (rewritten; the others stay untouched slices).",
                1,
            ),
            (
                "shardtel_processor_items_dropped_total",
                "Items the processor dropped (filter).",
                2,
            ),
        ] {
            let family = out.counter(name, help);
            for (core, snaps) in cores {
                for s in *snaps {
                    let v = [s.received, s.changed, s.dropped][field];
                    family.sample(
                        &[
                            ("processor", &s.name),
                            ("type", &s.kind),
                            ("signal", &s.signal),
                            ("core", core),
                        ],
                        v,
                    );
                }
            }
        }
    }
}

/// The span metrics counters, one series per core:
/// `shardtel_spanmetrics_spans_total`, `shardtel_spanmetrics_overflow_spans_total` (spans
/// counted in the `otel.metric.overflow` series), `shardtel_spanmetrics_series` (gauge),
/// `shardtel_spanmetrics_refused_flushes_total`, `shardtel_spanmetrics_expired_series_total`,
/// `shardtel_spanmetrics_held_bytes` (gauge).
impl Families for SpanMetricsSnapshot {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        if cores.is_empty() {
            return;
        }
        type Column = (
            &'static str,
            &'static str,
            bool,
            fn(&SpanMetricsSnapshot) -> u64,
        );
        let columns: [Column; 6] = [
            (
                "shardtel_spanmetrics_spans_total",
                "Spans counted by the spanmetrics processor.",
                true,
                |s| s.spans,
            ),
            (
                "shardtel_spanmetrics_overflow_spans_total",
                "Spans counted in the otel.metric.overflow series because max_series was reached.",
                true,
                |s| s.overflow_spans,
            ),
            (
                "shardtel_spanmetrics_series",
                "Span metrics series held on the core.",
                false,
                |s| s.series,
            ),
            (
                "shardtel_spanmetrics_refused_flushes_total",
                "Flushes the metrics pipeline refused (counts kept for the next flush).",
                true,
                |s| s.refused_flushes,
            ),
            (
                "shardtel_spanmetrics_expired_series_total",
                "Series forgotten after metrics_expiration without a span.",
                true,
                |s| s.expired_series,
            ),
            (
                "shardtel_spanmetrics_held_bytes",
                "Bytes the span metrics series hold on the core (labels cut to 1024 bytes each).",
                false,
                |s| s.held_bytes,
            ),
        ];
        for (name, help, counter, get) in columns {
            let family = if counter {
                out.counter(name, help)
            } else {
                out.family(name, crate::telemetry::MetricType::Gauge, help)
            };
            for (core, s) in cores {
                family.sample(&[("core", core)], get(s));
            }
        }
    }
}
