//! Prometheus exposition formats → OTLP metrics: what the `prometheus` scrape receiver reads
//! and what it makes of it, without sockets or timers so that every rule is testable here.
//!
//! - [`text`]: the Prometheus text format 0.0.4 and OpenMetrics 1.0 text, one hardened line
//!   parser.
//! - [`translate`]: a scrape's samples → one `ExportMetricsServiceRequest`
//!   ([`ScrapeBuilder`]), with the per-target state that gives cumulative points their start
//!   time and disappeared series their stale point ([`SeriesTable`]).
//! - `otlp` (private): writing the protobuf directly.
//!
//! Content negotiation: [`accept_header`] writes the `Accept` header for the configured
//! [`ScrapeProtocol`]s (Prometheus's `scrape_protocols`), [`ScrapeFormat::from_content_type`]
//! reads the answer's `Content-Type`.
//!
//! ```
//! use shardtel_protocol::exposition::{ScrapeBuilder, ScrapeFormat, ScrapeReport, ScrapeTarget, SeriesTable};
//!
//! let target = ScrapeTarget {
//!     job: "node".into(),
//!     instance: "10.0.0.1:9100".into(),
//!     scheme: "http".into(),
//!     labels: vec![("instance".into(), "10.0.0.1:9100".into()), ("job".into(), "node".into())],
//!     honor_labels: false,
//!     honor_timestamps: true,
//!     sample_limit: 0,
//! };
//! let body = b"# TYPE requests_total counter\nrequests_total{code=\"200\"} 7\n";
//! let (mut builder, mut table, mut out) = (ScrapeBuilder::default(), SeriesTable::default(), Vec::new());
//! let format = ScrapeFormat::from_content_type("text/plain; version=0.0.4");
//! builder.gather(&target, body, format, 1_700_000_000_000).unwrap();
//! let stats = builder.commit(&target, &mut table, 1_700_000_000_000, Some((body[..].into(), format)));
//! builder.report(&target, 1_700_000_000_000, &ScrapeReport { up: true, series_added: stats.series_added, ..Default::default() });
//! let points = builder.encode(&target, "0.1.0", &mut out);
//! assert_eq!(points, 1 + 5); // the counter, and up, scrape_duration_seconds, ...
//! ```

mod otlp;
pub mod text;
pub mod translate;

pub use text::{Flavor, MetricKind, ParseError, TextParser};
pub use translate::{
    unit_to_ucum, CommitStats, ScrapeBuilder, ScrapeError, ScrapeFormat, ScrapeReport,
    ScrapeTarget, SeriesTable,
};

/// The instrumentation scope of points without `otel_scope_name`: the translator, as the
/// specification asks.
pub const SCOPE_NAME: &str = "shardtel/receiver/prometheus";

/// A format a scrape may ask for (Prometheus's `scrape_protocols` names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScrapeProtocol {
    /// `OpenMetricsText1.0.0`.
    OpenMetricsText1,
    /// `OpenMetricsText0.0.1`.
    OpenMetricsText0,
    /// `PrometheusText0.0.4`.
    PrometheusText0,
}

impl ScrapeProtocol {
    /// The configuration names, in Prometheus's default order of preference.
    pub const NAMES: &'static [&'static str] = &[
        "OpenMetricsText1.0.0",
        "OpenMetricsText0.0.1",
        "PrometheusText0.0.4",
    ];

    /// Prometheus's default preference.
    pub const DEFAULT: [ScrapeProtocol; 3] = [
        ScrapeProtocol::OpenMetricsText1,
        ScrapeProtocol::OpenMetricsText0,
        ScrapeProtocol::PrometheusText0,
    ];

    /// The protocol named `name` (one of [`ScrapeProtocol::NAMES`]).
    pub fn from_name(name: &str) -> Option<ScrapeProtocol> {
        match name {
            "OpenMetricsText1.0.0" => Some(ScrapeProtocol::OpenMetricsText1),
            "OpenMetricsText0.0.1" => Some(ScrapeProtocol::OpenMetricsText0),
            "PrometheusText0.0.4" => Some(ScrapeProtocol::PrometheusText0),
            _ => None,
        }
    }

    fn media_type(self) -> &'static str {
        match self {
            ScrapeProtocol::OpenMetricsText1 => "application/openmetrics-text;version=1.0.0",
            ScrapeProtocol::OpenMetricsText0 => "application/openmetrics-text;version=0.0.1",
            ScrapeProtocol::PrometheusText0 => "text/plain;version=0.0.4",
        }
    }
}

/// The `Accept` header for `protocols` in order of preference, with quality values and a
/// final `*/*` as Prometheus writes it:
/// `application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1`.
pub fn accept_header(protocols: &[ScrapeProtocol]) -> String {
    let mut out = String::new();
    let mut weight = 1000u32;
    for (i, p) in protocols.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(p.media_type());
        if i > 0 {
            let q = format!("{:.3}", f64::from(weight) / 1000.0);
            out.push_str(";q=");
            out.push_str(q.trim_end_matches('0').trim_end_matches('.'));
        }
        weight = weight.saturating_sub(250).max(100);
    }
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str("*/*;q=0.1");
    out
}

impl ScrapeFormat {
    /// The format of a response with `content_type`: OpenMetrics for
    /// `application/openmetrics-text`, else the Prometheus text format (Prometheus's fallback
    /// for a missing or unknown type).
    pub fn from_content_type(content_type: &str) -> ScrapeFormat {
        let media = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if media == "application/openmetrics-text" {
            ScrapeFormat::Text(Flavor::OpenMetrics)
        } else {
            ScrapeFormat::Text(Flavor::Prometheus)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_matches_prometheus() {
        assert_eq!(
            accept_header(&ScrapeProtocol::DEFAULT),
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        );
        assert_eq!(
            accept_header(&[ScrapeProtocol::PrometheusText0]),
            "text/plain;version=0.0.4,*/*;q=0.1"
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            ScrapeFormat::from_content_type(
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            ),
            ScrapeFormat::Text(Flavor::OpenMetrics)
        );
        assert_eq!(
            ScrapeFormat::from_content_type("text/plain; version=0.0.4"),
            ScrapeFormat::Text(Flavor::Prometheus)
        );
        assert_eq!(
            ScrapeFormat::from_content_type(""),
            ScrapeFormat::Text(Flavor::Prometheus)
        );
    }
}
