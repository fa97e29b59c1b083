//! `prometheusremotewrite`: OTLP metrics to a Prometheus remote-write v1 endpoint.
//!
//! Batches hold OTLP metrics like every exporter's; the one sender task of the core converts
//! each batch once, before its first attempt ([`PrometheusExporter::prepare`]), into a
//! `WriteRequest` (snappy-compressed protobuf), so retries resend the same bytes and per-series
//! state changes once per batch, in order. One sender per core keeps every series' samples in
//! time order on the wire: the engine routes all points of a series to one core (see
//! `shardtel_protocol::series`), and Prometheus rejects a whole request that holds a sample
//! older than one it already has.
//!
//! Responses: 2xx success; 429 and 5xx are retried (honouring `Retry-After`); other 4xx are
//! permanent (the remote-write specification).

mod convert;
pub(crate) mod naming;
mod prompb;
mod state;

use std::cell::RefCell;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ::http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE};
use bytes::Bytes;
use prost::Message;
use shardtel_config::{ExponentialHistograms, PrometheusRemoteWriteExporterConfig};
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::reframe::Encoded;

pub use self::convert::ConversionStats;
use self::convert::{Converted, Converter, Settings};
use self::prompb::WriteRequest;
use self::state::SeriesTable;
use crate::batch::Batch;
use crate::error::ExportError;
use crate::push::{snappy, StorageEndpoint};
use crate::transport::Route;

/// One `prometheusremotewrite` exporter on one core.
pub(crate) struct PrometheusExporter {
    endpoint: StorageEndpoint,
    converter: RefCell<RemoteWriteConverter>,
}

impl PrometheusExporter {
    /// `headers` already holds the configured headers.
    pub(crate) fn new(
        route: Route,
        mut headers: HeaderMap,
        cfg: &PrometheusRemoteWriteExporterConfig,
        core: usize,
        cores: usize,
    ) -> Self {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        headers.insert(
            HeaderName::from_static("x-prometheus-remote-write-version"),
            HeaderValue::from_static("0.1.0"),
        );
        Self {
            // One sender: see the module's documentation.
            endpoint: StorageEndpoint::new(route, headers, cfg.timeout, 1),
            converter: RefCell::new(RemoteWriteConverter::new(cfg, core, cores)),
        }
    }

    /// Converts a batch of OTLP metrics into the compressed `WriteRequest` to send; its
    /// `items` are the points that were not dropped. Yields to the reactor between resources
    /// when it has run long (a full batch takes milliseconds).
    pub(crate) async fn prepare(&self, batch: &Batch) -> Result<Batch, ExportError> {
        let request = decode_metrics(batch)?;
        let (now_ms, now) = clocks();
        let mut out = Converted::default();
        for rm in &request.resource_metrics {
            // The borrow ends before the yield: `stats` may run meanwhile.
            self.converter
                .borrow_mut()
                .converter
                .convert_resource(rm, now_ms, now, &mut out);
            glommio::yield_if_needed().await;
        }
        // Encoding and compressing the whole request: on the blocking thread when large.
        let (body, dropped) = crate::offload::run(batch.bytes, move || encode(out)).await;
        let bytes = body.len();
        Ok(Batch {
            signal: batch.signal,
            chunks: if bytes == 0 { Vec::new() } else { vec![body] },
            bytes,
            held: bytes,
            items: batch.items.saturating_sub(dropped),
            traces: Vec::new(),
        })
    }

    /// POSTs a prepared batch.
    pub(crate) async fn export(&self, worker: usize, batch: &Batch) -> Result<(), ExportError> {
        self.endpoint.push(worker, batch.chunks.clone()).await
    }

    pub(crate) fn stats(&self) -> ConversionStats {
        self.converter.borrow().stats()
    }
}

/// Wall-clock milliseconds (for `target_info` and points without a time) and the monotonic
/// clock (for series expiry).
fn clocks() -> (i64, Instant) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    (now_ms, Instant::now())
}

/// The compressed `WriteRequest` of converted series (empty when there are none) and the
/// number of points dropped.
fn encode(out: Converted) -> (Bytes, u64) {
    if out.series.is_empty() {
        return (Bytes::new(), out.dropped_points);
    }
    let raw = WriteRequest {
        timeseries: out.series,
    }
    .encode_to_vec();
    (snappy(&raw), out.dropped_points)
}

/// Decodes a batch (concatenated `ExportMetricsServiceRequest`s) without joining its chunks.
fn decode_metrics(batch: &Batch) -> Result<ExportMetricsServiceRequest, ExportError> {
    let buf = Encoded {
        chunks: batch.chunks.clone(),
        len: batch.bytes,
    };
    ExportMetricsServiceRequest::decode(buf).map_err(|e| ExportError::Encode {
        reason: format!("invalid ExportMetricsServiceRequest: {e}"),
    })
}

/// OTLP metrics → snappy-compressed remote-write `WriteRequest`s, with the per-series state
/// of one core. Public for benchmarks; the exporter uses it through its batches.
pub struct RemoteWriteConverter {
    converter: Converter,
}

impl RemoteWriteConverter {
    /// A converter for `core` of `cores` with the exporter's settings.
    pub fn new(cfg: &PrometheusRemoteWriteExporterConfig, core: usize, cores: usize) -> Self {
        let settings = Settings {
            suffixes: cfg.add_metric_suffixes,
            target_info: cfg.target_info,
            scope_labels: cfg.scope_labels,
            promote: cfg.promote_resource_attributes.clone(),
            native_histograms: cfg.exponential_histograms == ExponentialHistograms::Native,
            core,
            cores,
        };
        Self {
            converter: Converter::new(
                settings,
                SeriesTable::new(cfg.max_series_per_core, cfg.series_ttl),
            ),
        }
    }

    /// Converts an encoded `ExportMetricsServiceRequest`; returns the compressed body (empty
    /// when nothing is left to send) and the number of points dropped.
    pub fn convert(&mut self, otlp: &[u8]) -> Result<(Bytes, u64), String> {
        let request = ExportMetricsServiceRequest::decode(otlp).map_err(|e| e.to_string())?;
        Ok(self.convert_decoded(&request))
    }

    fn convert_decoded(&mut self, request: &ExportMetricsServiceRequest) -> (Bytes, u64) {
        let (now_ms, now) = clocks();
        let mut out = Converted::default();
        self.converter.convert(request, now_ms, now, &mut out);
        encode(out)
    }

    /// The conversion counters.
    pub fn stats(&self) -> ConversionStats {
        self.converter.stats()
    }
}

#[cfg(test)]
mod tests;
