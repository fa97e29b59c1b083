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
use super::ingest::Rejected;
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
    /// the local part first, then the others over the mesh. The points accepted.
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
        // Local first, as for spans: a refusal leaves nothing behind on other cores.
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
        for part in parts {
            let charge = queue_charge(part.piece.len, part.buffer);
            let pushed = if part.core == self.core {
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
            };
            if let Err(e) = pushed {
                return Err(Rejected::items(points, e));
            }
        }
        Ok(points)
    }
}
