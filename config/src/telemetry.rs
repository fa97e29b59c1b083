//! `[telemetry]`: shardtel's own health endpoint, Prometheus metrics endpoint, log level and
//! log format.

use std::net::{Ipv4Addr, SocketAddr};

use crate::decode::{self, Decoder, Section};
use crate::error::ConfigErrorKind;

/// `[telemetry]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Health check listener (`GET /` answers 200 while running); `false` disables it.
    /// Default `127.0.0.1:13133`.
    pub health: Option<SocketAddr>,
    /// Self-metrics listener (Prometheus text format); `false` disables it.
    /// Default `127.0.0.1:8888`.
    pub metrics: Option<SocketAddr>,
    /// Log filter: a level (`off`, `error`, `warn`, `info`, `debug`, `trace`), optionally with
    /// per-module levels: `"info,shardtel_engine=debug"`. Default `"info"`.
    pub log_level: String,
    /// How each log line is written to stderr. Default [`LogFormat::Text`].
    pub log_format: LogFormat,
}

/// `[telemetry] log_format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `"text"`: `2026-12-06T10:00:00.123Z INFO  core=1 target: message`, for people.
    #[default]
    Text,
    /// `"json"`: one JSON object per line, with the field names of the OpenTelemetry
    /// Collector's JSON logs (`ts`, `level`, `logger`, `caller`, `msg`), for log shippers.
    Json,
}

impl LogFormat {
    /// The values `log_format` accepts.
    pub const NAMES: &'static [&'static str] = &["text", "json"];
}

impl TelemetryConfig {
    /// The keys `[telemetry]` accepts.
    pub const KEYS: &'static [&'static str] = &["health", "metrics", "log_level", "log_format"];
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            health: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 13133))),
            metrics: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 8888))),
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
        }
    }
}

/// Checks a log filter like `"info"` or `"warn,shardtel_engine=debug"`.
pub fn check_log_level(filter: &str) -> Result<(), ConfigErrorKind> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let invalid = || ConfigErrorKind::InvalidLogLevel {
        value: filter.to_string(),
    };
    for directive in filter.split(',') {
        let level = match directive.trim().split_once('=') {
            Some((module, level)) if !module.trim().is_empty() => level,
            Some(_) => return Err(invalid()),
            None => directive,
        };
        if !LEVELS.contains(&level.trim().to_ascii_lowercase().as_str()) {
            return Err(invalid());
        }
    }
    Ok(())
}

pub(crate) fn decode(d: &mut Decoder<'_>, root: &Section<'_, '_>) -> TelemetryConfig {
    let s = d.section(root, "telemetry", TelemetryConfig::KEYS);
    let default = TelemetryConfig::default();
    TelemetryConfig {
        health: d.field_or(&s, "health", default.health, decode::listen_address),
        metrics: d.field_or(&s, "metrics", default.metrics, decode::listen_address),
        log_level: d.field_or(&s, "log_level", default.log_level, |v| {
            let level = decode::string(v)?;
            check_log_level(&level)?;
            Ok(level)
        }),
        log_format: d.field_or(&s, "log_format", default.log_format, |v| {
            Ok(match decode::one_of(v, LogFormat::NAMES)? {
                "json" => LogFormat::Json,
                _ => LogFormat::Text,
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels() {
        for ok in [
            "info",
            "TRACE",
            "off",
            "warn,shardtel_engine=debug",
            "a::b=trace, info",
        ] {
            assert!(check_log_level(ok).is_ok(), "{ok}");
        }
        for bad in ["", "verbose", "info,", "=debug", "x=loud"] {
            assert_eq!(
                check_log_level(bad).unwrap_err().to_string(),
                format!("invalid log level {bad:?} (expected off, error, warn, info, debug or trace, optionally per module: \"info,shardtel_engine=debug\")")
            );
        }
    }

    #[test]
    fn defaults() {
        let t = TelemetryConfig::default();
        assert_eq!(t.health.unwrap().to_string(), "127.0.0.1:13133");
        assert_eq!(t.metrics.unwrap().to_string(), "127.0.0.1:8888");
        assert_eq!(t.log_level, "info");
        assert_eq!(t.log_format, LogFormat::Text);
    }
}
