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
use shardtel_protocol::scan::ScanError;
use shardtel_protocol::series::{MetricsPart, MetricsRouting};

/// True when the metrics pipeline needs series routing.
pub fn needed(config: &Config) -> bool {
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
pub struct RoutedPart {
    /// The owner core.
    pub core: usize,
    /// The request for it.
    pub piece: Encoded,
    /// Data points in it.
    pub points: u64,
}

/// A core's scratch for splitting metrics requests (reused; `!Send`).
#[derive(Default)]
pub struct MetricsRouter {
    routing: RefCell<MetricsRouting>,
    parts: RefCell<Vec<MetricsPart>>,
}

impl MetricsRouter {
    /// Validates `body` and splits it among `cores` owners: returns the total number of points
    /// and the non-empty parts. A request that belongs to one core whole is passed on as it is.
    pub fn split(&self, body: &Bytes, cores: usize) -> Result<(u64, Vec<RoutedPart>), ScanError> {
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
