//! Storage-backend exporters: `type = "prometheusremotewrite"` (metrics to Prometheus, Mimir or
//! any remote-write v1 receiver) and `type = "loki"` (logs to Loki's push API).
//!
//! Both share the network keys of the OTLP exporters (`endpoint`, `timeout`, `headers`) and the
//! `batch`, `retry`, `queue` tables; the conversion settings are theirs alone.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::de::DeValue;

use crate::decode::{self, Decoder, Section};
use crate::delivery::{
    decode_batch, decode_queue, decode_retry, BatchConfig, QueueConfig, RetryConfig,
};
use crate::endpoint::{
    check_header, decode_headers, parse_endpoint, timeout, Endpoint, EndpointUse,
};
use crate::error::ConfigErrorKind;
use crate::tls::ClientTlsConfig;

/// How exponential histograms are written to Prometheus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExponentialHistograms {
    /// `"native"` (the default): Prometheus native histograms (the receiver needs
    /// `--enable-feature=native-histograms`).
    Native,
    /// `"classic"`: `_bucket` series with an `le` label per exponential bucket, plus `_sum` and
    /// `_count`.
    Classic,
}

impl ExponentialHistograms {
    /// The accepted values.
    pub const NAMES: &'static [&'static str] = &["native", "classic"];
}

/// `[exporters.NAME] type = "prometheusremotewrite"`: OTLP metrics to a Prometheus remote-write
/// v1 endpoint (snappy-compressed protobuf), named and labelled as the OpenTelemetry →
/// Prometheus compatibility specification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrometheusRemoteWriteExporterConfig {
    /// The full write URL, e.g. `http://prometheus:9090/api/v1/write`. Required.
    pub endpoint: Endpoint,
    /// Deadline of one write request. Default 10s.
    pub timeout: Duration,
    /// Extra request headers (e.g. `x-scope-orgid` for Mimir), names lowercased.
    pub headers: BTreeMap<String, String>,
    /// `[exporters.NAME.tls]`, for an `https://` endpoint.
    pub tls: Option<ClientTlsConfig>,
    /// Unit and type suffixes on metric names (`_seconds`, `_total`, `_ratio`). Default true.
    pub add_metric_suffixes: bool,
    /// A `target_info` series per resource with its attributes. Default true.
    pub target_info: bool,
    /// `otel_scope_name` and `otel_scope_version` labels. Default true.
    pub scope_labels: bool,
    /// Resource attributes copied as labels onto every series of the resource. Default none.
    pub promote_resource_attributes: Vec<String>,
    /// Native or classic histograms for OTLP exponential histograms. Default native.
    pub exponential_histograms: ExponentialHistograms,
    /// Series whose state (delta accumulation, last timestamp) one core keeps. Default 100000.
    pub max_series_per_core: usize,
    /// A series not seen for this long is forgotten (a delta series then starts from zero).
    /// Default 15m.
    pub series_ttl: Duration,
    /// `[exporters.NAME.batch]`.
    pub batch: BatchConfig,
    /// `[exporters.NAME.retry]`.
    pub retry: RetryConfig,
    /// `[exporters.NAME.queue]`.
    pub queue: QueueConfig,
}

impl PrometheusRemoteWriteExporterConfig {
    /// The keys `type = "prometheusremotewrite"` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "type",
        "endpoint",
        "timeout",
        "headers",
        "tls",
        "add_metric_suffixes",
        "target_info",
        "scope_labels",
        "promote_resource_attributes",
        "exponential_histograms",
        "max_series_per_core",
        "series_ttl",
        "batch",
        "retry",
        "queue",
    ];
    /// Default `max_series_per_core`.
    pub const DEFAULT_MAX_SERIES_PER_CORE: usize = 100_000;

    /// Defaults for everything but the endpoint.
    pub fn new(endpoint: Endpoint) -> Self {
        PrometheusRemoteWriteExporterConfig {
            endpoint,
            timeout: Duration::from_secs(10),
            headers: BTreeMap::new(),
            tls: None,
            add_metric_suffixes: true,
            target_info: true,
            scope_labels: true,
            promote_resource_attributes: Vec::new(),
            exponential_histograms: ExponentialHistograms::Native,
            max_series_per_core: Self::DEFAULT_MAX_SERIES_PER_CORE,
            series_ttl: Duration::from_secs(15 * 60),
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            queue: QueueConfig::default(),
        }
    }
}

/// How a Loki push request is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LokiEncoding {
    /// `"protobuf"` (the default): `logproto.PushRequest`, snappy-compressed.
    Protobuf,
    /// `"json"`: Loki's JSON push body.
    Json,
}

impl LokiEncoding {
    /// The accepted values.
    pub const NAMES: &'static [&'static str] = &["protobuf", "json"];
}

/// What a Loki log line holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LokiLineFormat {
    /// `"body"` (the default): the record's body; everything that is not a label goes into
    /// structured metadata.
    Body,
    /// `"json"`: a JSON object with the body, attributes, resource, scope, trace context and
    /// severity.
    Json,
    /// `"logfmt"`: the same as `key=value` pairs.
    Logfmt,
}

impl LokiLineFormat {
    /// The accepted values.
    pub const NAMES: &'static [&'static str] = &["body", "json", "logfmt"];
}

/// `[exporters.NAME] type = "loki"`: OTLP logs to Loki's push API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LokiExporterConfig {
    /// The push URL, e.g. `http://loki:3100/loki/api/v1/push`. Required.
    pub endpoint: Endpoint,
    /// Request encoding. Default protobuf.
    pub encoding: LokiEncoding,
    /// `X-Scope-OrgID` (multi-tenant Loki). Default none.
    pub tenant_id: Option<String>,
    /// Deadline of one push request. Default 10s.
    pub timeout: Duration,
    /// Extra request headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// `[exporters.NAME.tls]`, for an `https://` endpoint.
    pub tls: Option<ClientTlsConfig>,
    /// Resource attributes that become stream labels.
    pub resource_labels: Vec<String>,
    /// Log record attributes that become stream labels. Default none.
    pub attribute_labels: Vec<String>,
    /// What the line holds. Default body.
    pub line_format: LokiLineFormat,
    /// `[exporters.NAME.batch]`.
    pub batch: BatchConfig,
    /// `[exporters.NAME.retry]`.
    pub retry: RetryConfig,
    /// `[exporters.NAME.queue]`.
    pub queue: QueueConfig,
}

impl LokiExporterConfig {
    /// The keys `type = "loki"` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "type",
        "endpoint",
        "encoding",
        "tenant_id",
        "timeout",
        "headers",
        "tls",
        "labels",
        "line_format",
        "batch",
        "retry",
        "queue",
    ];
    /// The keys `labels` accepts.
    pub const LABELS_KEYS: &'static [&'static str] = &["resource", "attributes"];
    /// Default `labels.resource`: the resource attributes Loki's own OTLP endpoint indexes.
    pub const DEFAULT_RESOURCE_LABELS: &'static [&'static str] = &[
        "service.name",
        "service.namespace",
        "service.instance.id",
        "deployment.environment",
        "deployment.environment.name",
        "cloud.region",
        "cloud.availability_zone",
        "k8s.cluster.name",
        "k8s.namespace.name",
        "k8s.pod.name",
        "k8s.container.name",
        "container.name",
        "k8s.replicaset.name",
        "k8s.deployment.name",
        "k8s.statefulset.name",
        "k8s.daemonset.name",
        "k8s.cronjob.name",
        "k8s.job.name",
    ];

    /// Defaults for everything but the endpoint.
    pub fn new(endpoint: Endpoint) -> Self {
        LokiExporterConfig {
            endpoint,
            encoding: LokiEncoding::Protobuf,
            tenant_id: None,
            timeout: Duration::from_secs(10),
            headers: BTreeMap::new(),
            tls: None,
            resource_labels: Self::DEFAULT_RESOURCE_LABELS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            attribute_labels: Vec::new(),
            line_format: LokiLineFormat::Body,
            batch: BatchConfig::default(),
            retry: RetryConfig::default(),
            queue: QueueConfig::default(),
        }
    }
}

fn endpoint(d: &mut Decoder<'_>, s: &Section<'_, '_>, hint: &'static str) -> Option<Endpoint> {
    if s.get("endpoint").is_none() {
        d.require(s, "endpoint", hint);
        return None;
    }
    d.field(s, "endpoint", |v| parse_endpoint(v, EndpointUse::Http))
}

/// Attribute keys: non-empty strings, each once.
fn keys(value: &DeValue<'_>) -> Result<Vec<String>, ConfigErrorKind> {
    let keys = decode::strings(value)?;
    for (i, key) in keys.iter().enumerate() {
        if key.is_empty() {
            return Err(ConfigErrorKind::Empty);
        }
        if keys[..i].contains(key) {
            return Err(ConfigErrorKind::NameListedTwice { name: key.clone() });
        }
    }
    Ok(keys)
}

pub(crate) fn decode_prometheus(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
) -> Option<PrometheusRemoteWriteExporterConfig> {
    let endpoint = endpoint(d, s, "endpoint = \"http://prometheus:9090/api/v1/write\"");
    let mut c = PrometheusRemoteWriteExporterConfig::new(Endpoint {
        scheme: String::new(),
        host: String::new(),
        port: 0,
        path: String::new(),
    });
    c.timeout = d.field_or(s, "timeout", c.timeout, timeout);
    c.headers = decode_headers(d, s);
    c.tls = crate::tls::decode_client(d, s);
    c.add_metric_suffixes = d.field_or(
        s,
        "add_metric_suffixes",
        c.add_metric_suffixes,
        decode::boolean,
    );
    c.target_info = d.field_or(s, "target_info", c.target_info, decode::boolean);
    c.scope_labels = d.field_or(s, "scope_labels", c.scope_labels, decode::boolean);
    c.promote_resource_attributes = d.field_or(s, "promote_resource_attributes", Vec::new(), keys);
    c.exponential_histograms =
        d.field_or(s, "exponential_histograms", c.exponential_histograms, |v| {
            Ok(match decode::one_of(v, ExponentialHistograms::NAMES)? {
                "classic" => ExponentialHistograms::Classic,
                _ => ExponentialHistograms::Native,
            })
        });
    c.max_series_per_core = d.field_or(s, "max_series_per_core", c.max_series_per_core, |v| {
        Ok(decode::in_range(decode::count(v, u64::MAX)?, 1, 100_000_000)? as usize)
    });
    c.series_ttl = d.field_or(s, "series_ttl", c.series_ttl, |v| {
        decode::min_duration(decode::duration(v)?, Duration::from_secs(1))
    });
    c.batch = decode_batch(d, s);
    c.retry = decode_retry(d, s);
    c.queue = decode_queue(d, s);
    c.endpoint = endpoint?;
    Some(c)
}

pub(crate) fn decode_loki(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<LokiExporterConfig> {
    let endpoint = endpoint(d, s, "endpoint = \"http://loki:3100/loki/api/v1/push\"");
    let mut c = LokiExporterConfig::new(Endpoint {
        scheme: String::new(),
        host: String::new(),
        port: 0,
        path: String::new(),
    });
    c.encoding = d.field_or(s, "encoding", c.encoding, |v| {
        Ok(match decode::one_of(v, LokiEncoding::NAMES)? {
            "json" => LokiEncoding::Json,
            _ => LokiEncoding::Protobuf,
        })
    });
    c.tenant_id = d.field(s, "tenant_id", |v| {
        let text = decode::non_empty_string(v)?;
        check_header("x-scope-orgid", &text)?;
        Ok(text)
    });
    c.timeout = d.field_or(s, "timeout", c.timeout, timeout);
    c.headers = decode_headers(d, s);
    c.tls = crate::tls::decode_client(d, s);
    let labels = d.section(s, "labels", LokiExporterConfig::LABELS_KEYS);
    c.resource_labels = d.field_or(&labels, "resource", c.resource_labels, keys);
    c.attribute_labels = d.field_or(&labels, "attributes", c.attribute_labels, keys);
    c.line_format = d.field_or(s, "line_format", c.line_format, |v| {
        Ok(match decode::one_of(v, LokiLineFormat::NAMES)? {
            "json" => LokiLineFormat::Json,
            "logfmt" => LokiLineFormat::Logfmt,
            _ => LokiLineFormat::Body,
        })
    });
    c.batch = decode_batch(d, s);
    c.retry = decode_retry(d, s);
    c.queue = decode_queue(d, s);
    c.endpoint = endpoint?;
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, ExporterKind};

    fn load(exporter: &str) -> Result<ExporterKind, String> {
        let signal = if exporter.contains("loki") {
            "logs"
        } else {
            "metrics"
        };
        let text = format!(
            "[exporters.x]\n{exporter}\n[receivers.otlp]\n[pipelines.{signal}]\nreceivers = [\"otlp\"]\nexporters = [\"x\"]\n"
        );
        Config::load(&text, "s.toml", &|_| None, &[0])
            .map(|c| c.exporters["x"].kind.clone())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn prometheus_defaults_and_settings() {
        let ExporterKind::PrometheusRemoteWrite(c) =
            load("type = \"prometheusremotewrite\"\nendpoint = \"http://p:9090/api/v1/write\"")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(c.endpoint.path, "/api/v1/write");
        assert!(c.add_metric_suffixes && c.target_info && c.scope_labels);
        assert_eq!(c.exponential_histograms, ExponentialHistograms::Native);
        assert_eq!(c.max_series_per_core, 100_000);
        assert_eq!(c.series_ttl, Duration::from_secs(900));
        let ExporterKind::PrometheusRemoteWrite(c) = load(
            "type = \"prometheusremotewrite\"\nendpoint = \"http://p:9090/api/v1/write\"\n\
             add_metric_suffixes = false\ntarget_info = false\nscope_labels = false\n\
             promote_resource_attributes = [\"k8s.pod.name\"]\nexponential_histograms = \"classic\"\n\
             max_series_per_core = 10\nseries_ttl = \"1m\"\nheaders = { \"X-Scope-OrgID\" = \"t1\" }",
        )
        .unwrap() else {
            panic!()
        };
        assert!(!c.add_metric_suffixes && !c.target_info && !c.scope_labels);
        assert_eq!(c.promote_resource_attributes, ["k8s.pod.name"]);
        assert_eq!(c.exponential_histograms, ExponentialHistograms::Classic);
        assert_eq!(c.max_series_per_core, 10);
        assert_eq!(c.headers["x-scope-orgid"], "t1");
    }

    #[test]
    fn prometheus_errors_name_the_key() {
        assert_eq!(
            load("type = \"prometheusremotewrite\"").unwrap_err(),
            "s.toml:1: exporters.x.endpoint: missing required key (endpoint = \"http://prometheus:9090/api/v1/write\")"
        );
        assert_eq!(
            load("type = \"prometheusremotewrite\"\nendpoint = \"http://p:1/w\"\nexponential_histograms = \"both\"\nmax_series_per_core = 0\nsuffixes = 1\npromote_resource_attributes = [\"a\", \"a\"]").unwrap_err(),
            "s.toml:4: exporters.x.exponential_histograms: invalid value \"both\" (allowed: \"native\", \"classic\")\n\
             s.toml:5: exporters.x.max_series_per_core: 0 is too small (minimum 1)\n\
             s.toml:6: exporters.x.suffixes: unknown key (allowed: type, endpoint, timeout, headers, tls, add_metric_suffixes, target_info, scope_labels, promote_resource_attributes, exponential_histograms, max_series_per_core, series_ttl, batch, retry, queue)\n\
             s.toml:7: exporters.x.promote_resource_attributes: \"a\" is listed twice"
        );
    }

    #[test]
    fn storage_exporters_only_in_their_signal_pipeline() {
        let text = "[receivers.otlp]\n[exporters.p]\ntype = \"prometheusremotewrite\"\nendpoint = \"http://p:1/w\"\n\
                    [exporters.l]\ntype = \"loki\"\nendpoint = \"http://l:1/p\"\n\
                    [pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"p\", \"l\"]\n\
                    [pipelines.logs]\nreceivers = [\"otlp\"]\nexporters = [\"l\"]\n";
        assert_eq!(
            Config::load(text, "s.toml", &|_| None, &[0]).unwrap_err().to_string(),
            "s.toml:10: pipelines.traces.exporters: exporter \"p\" (type prometheusremotewrite) exports metrics only; remove it from the traces pipeline\n\
             s.toml:10: pipelines.traces.exporters: exporter \"l\" (type loki) exports logs only; remove it from the traces pipeline"
        );
    }

    #[test]
    fn loki_defaults_and_settings() {
        let ExporterKind::Loki(c) =
            load("type = \"loki\"\nendpoint = \"http://loki:3100/loki/api/v1/push\"").unwrap()
        else {
            panic!()
        };
        assert_eq!(c.encoding, LokiEncoding::Protobuf);
        assert_eq!(c.line_format, LokiLineFormat::Body);
        assert_eq!(c.resource_labels[0], "service.name");
        assert!(c.attribute_labels.is_empty() && c.tenant_id.is_none());
        let ExporterKind::Loki(c) = load(
            "type = \"loki\"\nendpoint = \"http://loki:3100/loki/api/v1/push\"\nencoding = \"json\"\n\
             tenant_id = \"team-a\"\nline_format = \"logfmt\"\n\
             labels = { resource = [\"service.name\"], attributes = [\"level\"] }",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.encoding, LokiEncoding::Json);
        assert_eq!(c.tenant_id.as_deref(), Some("team-a"));
        assert_eq!(c.line_format, LokiLineFormat::Logfmt);
        assert_eq!(c.resource_labels, ["service.name"]);
        assert_eq!(c.attribute_labels, ["level"]);
    }

    #[test]
    fn loki_errors_name_the_key() {
        assert_eq!(
            load("type = \"loki\"\nendpoint = \"http://l:3100/p\"\nline_format = \"xml\"\nlabels = { resource = [\"\"], stream = [] }\ntenant_id = \"a\\nb\"").unwrap_err(),
            "s.toml:4: exporters.x.line_format: invalid value \"xml\" (allowed: \"body\", \"json\", \"logfmt\")\n\
             s.toml:5: exporters.x.labels.stream: unknown key (allowed: resource, attributes)\n\
             s.toml:5: exporters.x.labels.resource: must not be empty\n\
             s.toml:6: exporters.x.tenant_id: invalid header \"x-scope-orgid\": values may only contain visible ASCII, spaces and tabs"
        );
    }
}
