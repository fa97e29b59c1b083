//! Metrics by series identity: when the metrics pipeline has an exporter that keeps state per
//! series (`prometheusremotewrite`: delta → cumulative, last timestamp), every point of a series
//! must reach the same core. The receiving core scans the request, splits it per owner core at
//! the `Metric` level (owner = `hash(job, instance, metric name)`, see
//! `shardtel_protocol::series`) and re-frames each part without copying metric bytes; parts for
//! other cores go over the mesh. Without such an exporter, metrics stay on the receiving core.
//!
//! With a `routing` processor too, the receiving core routes the points first (after the other
//! processors) and splits each destination set's piece by series owner: a piece that is the
//! whole request is split as it is; the pieces of a request whose points go different ways are
//! each joined into one buffer (a copy) and scanned again to be split.

use std::cell::RefCell;

use bytes::Bytes;
use shardtel_config::{Config, ExporterKind};
use shardtel_processors::ExporterSet;
use shardtel_protocol::reframe::Encoded;
use shardtel_protocol::scan::ScanError;
use shardtel_protocol::series::{MetricsPart, MetricsRouting};
use shardtel_protocol::Signal;

use super::exporters::queue_charge;
use super::ingest::{Partial, Rejected};
use super::mesh::MeshMessage;
use super::scratch::{Loan, Pool};
use super::{IngestError, Overload, Pipeline};

/// True when the metrics pipeline needs series routing.
pub(super) fn needed(config: &Config) -> bool {
    config.pipelines.metrics.as_ref().is_some_and(|p| {
        p.exporters.iter().any(|name| {
            config
                .exporters
                .get(name)
                .is_some_and(|e| matches!(e.kind, ExporterKind::PrometheusRemoteWrite(_)))
        })
    })
}

/// One destination of a routed request.
pub(super) struct RoutedPart {
    /// The owner core.
    pub(super) core: usize,
    /// The request for it.
    pub(super) piece: Encoded,
    /// Data points in it.
    pub(super) points: u64,
    /// The exporters it goes to (all of the pipeline's without a routing processor).
    pub(super) set: ExporterSet,
    /// Bytes of the buffer its slices keep alive (for its queue charge).
    pub(super) buffer: usize,
}

/// A core's scratch for splitting metrics requests (reused; `!Send`).
#[derive(Default)]
pub(super) struct MetricsRouter {
    routings: Pool<MetricsRouting>,
    parts: RefCell<Vec<MetricsPart>>,
}

impl MetricsRouter {
    /// Validates and indexes `body`: the index (kept until the request is split) and its data
    /// points.
    pub(super) fn scan(&self, body: &[u8]) -> Result<(Loan<'_, MetricsRouting>, u64), ScanError> {
        let mut routing = self.routings.lend();
        let points = routing.scan(body)?;
        Ok((routing, points))
    }

    /// Splits `body`, which `routing` indexes (`points` data points), among `cores` owners:
    /// the non-empty parts. A request that belongs to one core whole is passed on as it is.
    fn split(
        &self,
        routing: &mut MetricsRouting,
        body: &Bytes,
        points: u64,
        cores: usize,
    ) -> Vec<RoutedPart> {
        if let Some(core) = routing.single_owner(cores) {
            let piece = Encoded {
                chunks: vec![body.clone()],
                len: body.len(),
            };
            return vec![RoutedPart {
                core,
                piece,
                points,
                set: ExporterSet::MAX,
                buffer: body.len(),
            }];
        }
        let mut parts = self.parts.borrow_mut();
        routing.split(body, cores, &mut parts);
        parts
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| !p.encoded.is_empty())
            .map(|(core, p)| RoutedPart {
                core,
                piece: std::mem::take(&mut p.encoded),
                points: p.points,
                set: ExporterSet::MAX,
                buffer: body.len(),
            })
            .collect()
    }
}

impl Pipeline {
    /// Splits a metrics request by series owner (`routing`: its scan, `points` data points):
    /// the local part first, then the others over the mesh. The points accepted; refused after
    /// some parts were queued, the parts not queued ([`Rejected::partial`]).
    pub(super) async fn route_metrics_by_series(
        &self,
        body: Bytes,
        mut routing: Loan<'_, MetricsRouting>,
        points: u64,
    ) -> Result<u64, Rejected> {
        let Some(router) = &self.routing.metrics else {
            return Ok(0);
        };
        // The metrics processors run on the receiving core, before the split. A request they
        // changed is joined into one buffer (a copy of that request only) and scanned again to
        // be split.
        let (body, points, dropped) = match self.run_request_chain(Signal::Metrics, &body) {
            Some((piece, outcome)) => {
                let mut joined = Vec::with_capacity(piece.len);
                for chunk in &piece.chunks {
                    joined.extend_from_slice(chunk);
                }
                let joined = shardtel_processors::tied_to_origin(Bytes::from(joined), &body);
                let points = routing
                    .scan(&joined)
                    .map_err(|source| IngestError::Malformed {
                        signal: Signal::Metrics,
                        source,
                    })?;
                (joined, points, outcome.dropped)
            }
            None => (body, points, 0),
        };
        let processors = self.processors();
        let mut parts = match &processors.metrics_router {
            None => router.split(&mut routing, &body, points, self.cores),
            Some(points_router) => {
                let mut pieces = Vec::new();
                points_router.route_request(&body, routing.index(), &mut pieces);
                let mut parts = Vec::new();
                for piece in pieces {
                    let split = if piece.whole {
                        router.split(&mut routing, &body, piece.items, self.cores)
                    } else {
                        let joined =
                            shardtel_processors::tied_to_origin(piece.piece.to_bytes(), &body);
                        let (mut again, n) =
                            router
                                .scan(&joined)
                                .map_err(|source| IngestError::Malformed {
                                    signal: Signal::Metrics,
                                    source,
                                })?;
                        router.split(&mut again, &joined, n, self.cores)
                    };
                    parts.extend(split.into_iter().map(|p| RoutedPart {
                        set: piece.set,
                        ..p
                    }));
                }
                parts
            }
        };
        drop(routing);
        let points = points + dropped;
        // Local first, as for spans: a refusal here leaves nothing behind on other cores. A mesh
        // send that times out after earlier parts were queued refuses only the rest (see
        // `deliver_parts`).
        parts.sort_by_key(|p| p.core != self.core);
        let local_room = parts.iter().filter(|p| p.core == self.core).all(|p| {
            let charge = queue_charge(p.piece.len, p.buffer);
            self.exporters
                .has_room_in(Signal::Metrics, p.set, charge.max(p.piece.len))
        });
        if !local_room {
            let full = IngestError::Overloaded(Overload::ExportQueue);
            return Err(Rejected::items(points, full));
        }
        let send = |part: RoutedPart| async move {
            let charge = queue_charge(part.piece.len, part.buffer);
            if part.core == self.core {
                self.exporters.push_now_to(
                    Signal::Metrics,
                    part.set,
                    part.piece,
                    None,
                    part.points,
                    charge,
                )
            } else {
                let message = MeshMessage::Metrics {
                    piece: part.piece,
                    points: part.points,
                    charge,
                    set: part.set,
                };
                self.mesh.send_to(part.core, message).await
            }
        };
        if let Err((error, partial)) = deliver_parts(parts, send).await {
            let queued = partial.as_ref().map_or(0, |p| p.queued_items);
            return Err(Rejected::items(points.saturating_sub(queued), error).with_partial(partial));
        }
        Ok(points)
    }
}

/// Delivers `parts` in order with `send`, stopping at the first refusal: its error and, when
/// parts were queued before it, the parts not queued and the points queued (a mesh send can
/// time out after earlier parts are queued; room cannot be reserved on every core first).
async fn deliver_parts<F, Fut>(
    parts: Vec<RoutedPart>,
    mut send: F,
) -> Result<(), (IngestError, Option<Partial>)>
where
    F: FnMut(RoutedPart) -> Fut,
    Fut: std::future::Future<Output = Result<(), IngestError>>,
{
    let mut queued_items = 0u64;
    let mut sent = 0usize;
    let mut parts = parts.into_iter();
    while let Some(part) = parts.next() {
        // Kept to hand back if refused after an earlier part was queued (a list of slices, not
        // the bytes); a refused first part refuses the whole request, so it needs no copy.
        let (piece, points) = ((sent > 0).then(|| part.piece.clone()), part.points);
        if let Err(e) = send(part).await {
            let partial = piece.map(|piece| Partial {
                unsent: std::iter::once(piece)
                    .chain(parts.map(|p| p.piece))
                    .collect(),
                queued_items,
            });
            return Err((e, partial));
        }
        sent += 1;
        queued_items += points;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use prost::Message;
    use shardtel_config::{SpanHistogram, SpanMetricsConfig, SpanTemporality};
    use shardtel_processors::SpanMetrics;
    use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
    use shardtel_protocol::proto::common::v1::{any_value, AnyValue, KeyValue};
    use shardtel_protocol::proto::metrics::v1::{metric, number_data_point};
    use shardtel_protocol::proto::resource::v1::Resource;
    use shardtel_protocol::proto::trace::v1::Span;

    /// The data of every metric of a metrics request.
    fn metric_data(body: &[u8]) -> impl Iterator<Item = metric::Data> {
        ExportMetricsServiceRequest::decode(body)
            .unwrap()
            .resource_metrics
            .into_iter()
            .flat_map(|rm| rm.scope_metrics)
            .flat_map(|sm| sm.metrics)
            .filter_map(|m| m.data)
    }

    /// The `calls` of every point of a metrics request.
    fn calls(body: &[u8]) -> u64 {
        metric_data(body)
            .filter_map(|d| match d {
                metric::Data::Sum(s) => Some(s.data_points),
                _ => None,
            })
            .flatten()
            .map(|p| match p.value {
                Some(number_data_point::Value::AsInt(n)) => n as u64,
                _ => 0,
            })
            .sum()
    }

    /// The count of every histogram point of a metrics request.
    fn histogram_counts(body: &[u8]) -> u64 {
        metric_data(body)
            .filter_map(|d| match d {
                metric::Data::Histogram(h) => Some(h.data_points),
                _ => None,
            })
            .flatten()
            .map(|p| p.count)
            .sum()
    }

    /// A delta span metrics flush of `spans` spans over 8 services, split between 2 cores.
    fn split_flush(spans: u64) -> (SpanMetrics, Bytes, Vec<RoutedPart>) {
        let m = SpanMetrics::new(
            &SpanMetricsConfig {
                dimensions: Vec::new(),
                buckets: vec![std::time::Duration::from_millis(10)],
                max_series: 1000,
                flush_interval: std::time::Duration::from_secs(1),
                namespace: "traces.span.metrics".into(),
                histogram: SpanHistogram::Explicit,
                aggregation_temporality: SpanTemporality::Delta,
                metrics_expiration: std::time::Duration::ZERO,
            },
            0,
        );
        for i in 0..spans {
            let resource = Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("svc{}", i % 8))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            };
            let span = Span {
                name: format!("op{}", i % 3),
                end_time_unix_nano: 1_000_000,
                ..Default::default()
            };
            m.record(&span.encode_to_vec(), &resource.encode_to_vec());
        }
        let (body, points) = m.flush(10).unwrap();
        let router = MetricsRouter::default();
        let (mut routing, n) = router.scan(&body).unwrap();
        assert_eq!(n, points);
        let parts = router.split(&mut routing, &body, n, 2);
        drop(routing);
        assert_eq!(parts.len(), 2, "the 8 services go to both cores");
        (m, body, parts)
    }

    /// A flush split between two cores whose second part is refused (a mesh send that timed
    /// out): the refusal names the part not queued and the points queued, and putting back only
    /// that part counts every span once in what is exported.
    #[test]
    fn a_refused_later_part_leaves_the_queued_parts_out_of_the_next_flush() {
        let (m, body, parts) = split_flush(80);
        let start = m.window_start();
        let first_points = parts[0].points;
        let total_points: u64 = parts.iter().map(|p| p.points).sum();
        let queued = RefCell::new(Vec::new());
        let send = |part: RoutedPart| {
            let ok = part.core == 0;
            if ok {
                queued.borrow_mut().push(part.piece.to_bytes());
            }
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(IngestError::Overloaded(Overload::OwnerChannel))
                }
            }
        };
        let (error, partial) = block_on(deliver_parts(parts, send)).unwrap_err();
        assert!(matches!(
            error,
            IngestError::Overloaded(Overload::OwnerChannel)
        ));
        let partial = partial.expect("the first part was queued");
        assert_eq!(partial.queued_items, first_points);
        assert_eq!(partial.unsent.len(), 1);
        let unsent: Vec<Bytes> = partial.unsent.iter().map(Encoded::to_bytes).collect();
        let queued = queued.into_inner();
        assert_eq!(calls(&queued[0]) + calls(&unsent[0]), calls(&body));
        assert_eq!(calls(&body), 80);
        assert!(total_points > first_points);

        m.refused_parts(unsent.iter().map(|b| &b[..]), start);
        let (again, _) = m.flush(20).unwrap();
        // Exported: the queued part, then the next flush with the refused part only.
        assert_eq!(calls(&queued[0]) + calls(&again), 80);
        assert_eq!(calls(&again), calls(&unsent[0]));
        assert_eq!(histogram_counts(&queued[0]) + histogram_counts(&again), 80);
        assert_eq!(histogram_counts(&again), histogram_counts(&unsent[0]));
    }

    /// A refusal of the first part leaves nothing queued: the whole request is refused.
    #[test]
    fn a_refused_first_part_refuses_the_whole_request() {
        let (_, _, parts) = split_flush(16);
        let sent = std::cell::Cell::new(0);
        let send = |_: RoutedPart| {
            sent.set(sent.get() + 1);
            async { Err(IngestError::Overloaded(Overload::ExportQueue)) }
        };
        let (_, partial) = block_on(deliver_parts(parts, send)).unwrap_err();
        assert!(partial.is_none());
        assert_eq!(sent.get(), 1);
    }
}
