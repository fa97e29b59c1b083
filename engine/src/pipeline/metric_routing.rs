//! Metrics by series identity: when the metrics pipeline has an exporter that keeps state per
//! series (`prometheusremotewrite`: delta → cumulative, last timestamp), every point of a series
//! must reach the same core. The receiving core scans the request, splits it per owner core at
//! the `Metric` level (owner = `hash(job, instance, metric name)`, see
//! `shardtel_protocol::series`) and re-frames each part without copying metric bytes; parts for
//! other cores go over the mesh. Without such an exporter, metrics stay on the receiving core.

use std::cell::RefCell;

use bytes::Bytes;
use shardtel_config::{Config, ExporterKind};
use shardtel_protocol::reframe::Encoded;
use shardtel_protocol::scan::{scan_metrics, ScanError};
use shardtel_protocol::series::{MetricsPart, MetricsRouting};
use shardtel_protocol::Signal;

use super::exporters::queue_charge;
use super::ingest::Rejected;
use super::mesh::MeshMessage;
use super::{IngestError, Pipeline};

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
}

/// A core's scratch for splitting metrics requests (reused; `!Send`).
#[derive(Default)]
pub(super) struct MetricsRouter {
    routing: RefCell<MetricsRouting>,
    parts: RefCell<Vec<MetricsPart>>,
}

impl MetricsRouter {
    /// Validates `body` and splits it among `cores` owners: returns the total number of points
    /// and the non-empty parts. A request that belongs to one core whole is passed on as it is.
    pub(super) fn split(
        &self,
        body: &Bytes,
        cores: usize,
    ) -> Result<(u64, Vec<RoutedPart>), ScanError> {
        let mut routing = self.routing.borrow_mut();
        let points = routing.scan(body)?;
        if let Some(core) = routing.single_owner(cores) {
            let piece = Encoded {
                chunks: vec![body.clone()],
                len: body.len(),
            };
            return Ok((
                points,
                vec![RoutedPart {
                    core,
                    piece,
                    points,
                }],
            ));
        }
        let mut parts = self.parts.borrow_mut();
        routing.split(body, cores, &mut parts);
        let routed = parts
            .iter_mut()
            .enumerate()
            .filter(|(_, p)| !p.encoded.is_empty())
            .map(|(core, p)| RoutedPart {
                core,
                piece: std::mem::take(&mut p.encoded),
                points: p.points,
            })
            .collect();
        Ok((points, routed))
    }
}

impl Pipeline {
    /// Splits a metrics request by series owner: the local part first, then the others over
    /// the mesh. The points accepted.
    pub(super) async fn route_metrics_by_series(&self, body: Bytes) -> Result<u64, Rejected> {
        let Some(router) = &self.routing.metrics else {
            return Ok(0);
        };
        let malformed = |source| IngestError::Malformed {
            signal: Signal::Metrics,
            source,
        };
        // The metrics processors run on the receiving core, before the split. A request they
        // changed is joined into one buffer (a copy of that request only) to be split.
        let mut dropped = 0;
        if self.processors.request_chain(Signal::Metrics).is_some() {
            scan_metrics(&body).map_err(malformed)?;
        }
        let body = match self.run_request_chain(Signal::Metrics, &body) {
            Some((piece, outcome)) => {
                dropped = outcome.dropped;
                let mut joined = Vec::with_capacity(piece.len);
                for chunk in &piece.chunks {
                    joined.extend_from_slice(chunk);
                }
                shardtel_processors::tied_to_origin(Bytes::from(joined), &body)
            }
            None => body,
        };
        let (points, mut parts) = router.split(&body, self.cores).map_err(malformed)?;
        let points = points + dropped;
        // Local first, as for spans: a refusal leaves nothing behind on other cores.
        parts.sort_by_key(|p| p.core != self.core);
        for part in parts {
            let charge = queue_charge(part.piece.len, body.len());
            let pushed = if part.core == self.core {
                self.exporters
                    .push_now(Signal::Metrics, part.piece, None, part.points, charge)
            } else {
                let message = MeshMessage::Metrics {
                    piece: part.piece,
                    points: part.points,
                    charge,
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
