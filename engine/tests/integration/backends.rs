//! The storage backends the exporters are tested against (Jaeger, VictoriaMetrics,
//! VictoriaLogs): built from the Go module proxy and started by `tests/peers/backends.sh`,
//! which `test.sh` runs and whose URLs it exports. Each test first asks whether its backend
//! answers; without it the test fails, unless `SHARDTEL_BACKENDS_OPTIONAL=1`, which makes it
//! skip with a loud message.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// One backend: the environment variable naming its base URL, the URL `backends.sh` uses
/// by default, and a path that answers 2xx once it serves.
pub struct Backend {
    pub name: &'static str,
    pub env: &'static str,
    pub default_url: &'static str,
    pub ready_path: &'static str,
}

pub const JAEGER_QUERY: Backend = Backend {
    name: "Jaeger (query)",
    env: "SHARDTEL_JAEGER_QUERY",
    default_url: "http://127.0.0.1:26686",
    ready_path: "/api/services",
};

pub const VICTORIAMETRICS: Backend = Backend {
    name: "VictoriaMetrics",
    env: "SHARDTEL_VICTORIAMETRICS_URL",
    default_url: "http://127.0.0.1:28428",
    ready_path: "/health",
};

pub const VICTORIALOGS: Backend = Backend {
    name: "VictoriaLogs",
    env: "SHARDTEL_VICTORIALOGS_URL",
    default_url: "http://127.0.0.1:29428",
    ready_path: "/health",
};

/// Jaeger's OTLP/gRPC receiver.
pub fn jaeger_otlp_grpc() -> String {
    std::env::var("SHARDTEL_JAEGER_OTLP_GRPC").unwrap_or_else(|_| "http://127.0.0.1:24317".into())
}

/// Jaeger's OTLP/HTTP receiver.
pub fn jaeger_otlp_http() -> String {
    std::env::var("SHARDTEL_JAEGER_OTLP_HTTP").unwrap_or_else(|_| "http://127.0.0.1:24318".into())
}

impl Backend {
    pub fn url(&self) -> String {
        std::env::var(self.env).unwrap_or_else(|_| self.default_url.into())
    }

    /// True when the backend answers; false (after a loud message) when it does not and
    /// `SHARDTEL_BACKENDS_OPTIONAL=1`; panics otherwise.
    pub fn available(&self, test: &str) -> bool {
        let url = self.url();
        let ready = reqwest::blocking::Client::new()
            .get(format!("{url}{}", self.ready_path))
            .timeout(Duration::from_secs(5))
            .send()
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return true;
        }
        if std::env::var("SHARDTEL_BACKENDS_OPTIONAL").as_deref() == Ok("1") {
            eprintln!(
                "\n!!!!!!!! SKIPPED {test}: no {} at {url} (SHARDTEL_BACKENDS_OPTIONAL=1) !!!!!!!!\n",
                self.name
            );
            return false;
        }
        panic!(
            "no {} at {url}: run ./test.sh (it starts one through tests/peers/backends.sh), \
             or set SHARDTEL_BACKENDS_OPTIONAL=1 to skip",
            self.name
        );
    }

    /// GET `path` with `query`; (status, body). Never panics on a refused connection (the
    /// caller's wait loop asks again).
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> (u16, String) {
        match reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.url()))
            .query(query)
            .timeout(Duration::from_secs(10))
            .send()
        {
            Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// GET `path` as JSON; `Value::Null` when it is not 2xx JSON.
    pub fn get_json(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let (status, body) = self.get(path, query);
        if !(200..300).contains(&status) {
            return Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }
}

/// Nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A name no earlier run against the same long-lived backend used.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), now_ns())
}
