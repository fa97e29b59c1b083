//! The three OTLP signals, shared by every crate (config, sinks, engine, loadgen).

use std::fmt;

/// An OTLP signal. Per-signal arrays everywhere are indexed by [`Signal::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// Spans (`ExportTraceServiceRequest`).
    Traces,
    /// Metric data points (`ExportMetricsServiceRequest`).
    Metrics,
    /// Log records (`ExportLogsServiceRequest`).
    Logs,
}

impl Signal {
    /// All three signals, in index (and config) order.
    pub const ALL: [Signal; 3] = [Signal::Traces, Signal::Metrics, Signal::Logs];

    /// The position of this signal in per-signal arrays: traces 0, metrics 1, logs 2.
    pub const fn index(self) -> usize {
        match self {
            Signal::Traces => 0,
            Signal::Metrics => 1,
            Signal::Logs => 2,
        }
    }

    /// `"traces"`, `"metrics"` or `"logs"`: the pipeline key, the OTLP/HTTP path segment and
    /// the name on the command line and in reports.
    pub const fn name(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }

    /// The default OTLP/HTTP path: `/v1/traces`, `/v1/metrics` or `/v1/logs`.
    pub const fn http_path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    /// The path of the unary gRPC `Export` method of this signal's OTLP service.
    pub const fn grpc_path(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_position_in_all() {
        for (i, signal) in Signal::ALL.into_iter().enumerate() {
            assert_eq!(signal.index(), i);
        }
    }

    #[test]
    fn names_and_paths_agree() {
        for signal in Signal::ALL {
            assert_eq!(signal.to_string(), signal.name());
            assert_eq!(signal.http_path(), format!("/v1/{}", signal.name()));
            let service = signal.grpc_path().split('.').nth(3).unwrap();
            assert_eq!(
                service,
                if signal == Signal::Traces {
                    "trace"
                } else {
                    signal.name()
                }
            );
        }
    }
}
