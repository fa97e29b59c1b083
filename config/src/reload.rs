//! What a reload (SIGHUP, `shardtel reload`) may change in a running process: [`compare`] takes
//! the configuration the process runs and a new, validated one, and returns either the
//! [`LiveChanges`] to apply or every key that only a restart can change ([`RestartRequired`]).
//!
//! Live: the settings of processors (`attributes`, `resource`, `filter`, `transform`, `routing`,
//! and `tail_sampling`'s policies and bounds except its decision cache sizes), the order of a pipeline's processors
//! (with the same tail sampler and memory limiter in it), the settings of exporters but their
//! type and `queue` table (endpoint, headers, timeout, compression, `batch`, `retry`, topic...;
//! not `file` exporters, which own their files), processors no pipeline lists, and
//! `telemetry.log_level`. Everything else — `[engine]`, listener addresses, receivers and their
//! settings, which receivers and exporters a pipeline has, the memory limiter, exporters'
//! queues, `spanmetrics` processors — is fixed at start-up.

use std::collections::BTreeSet;
use std::fmt;

use crate::{Config, ExporterKind, ProcessorConfig, TailSamplingConfig};

/// What a reload changes; every field says what the running process must apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveChanges {
    /// The `attributes`, `resource` or `filter` processors (settings or order) changed.
    pub processors: bool,
    /// The tail sampler's policies or bounds changed.
    pub sampler: bool,
    /// Exporters whose settings changed, by name (each keeps its name, type and pipelines).
    pub exporters: Vec<String>,
    /// `telemetry.log_level` changed.
    pub log_level: bool,
}

impl LiveChanges {
    /// True when the new configuration changes nothing the process runs.
    pub fn is_empty(&self) -> bool {
        *self == LiveChanges::default()
    }

    /// What changes, for the log: `processors, sampler, exporters otlp and kafka`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.processors {
            parts.push("processors".to_string());
        }
        if self.sampler {
            parts.push("tail sampling policies and bounds".to_string());
        }
        if !self.exporters.is_empty() {
            parts.push(format!("exporters {}", self.exporters.join(", ")));
        }
        if self.log_level {
            parts.push("log level".to_string());
        }
        if parts.is_empty() {
            "nothing".to_string()
        } else {
            parts.join("; ")
        }
    }
}

/// Keys whose change needs a restart, with why, in file order of sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartRequired {
    /// `(dotted key, why it cannot change live)`.
    pub keys: Vec<(String, &'static str)>,
}

impl fmt::Display for RestartRequired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reload refused: these keys change only at a restart: ")?;
        for (i, (key, why)) in self.keys.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{key} ({why})")?;
        }
        Ok(())
    }
}

impl std::error::Error for RestartRequired {}

const ENGINE: &str = "cores, data directory, durability and channels are set up at start-up";
const LISTENER: &str = "listeners and their limits are bound and sized at start-up";
const RECEIVER: &str = "receivers are started (bound, joined, scheduled) at start-up";
const TOPOLOGY: &str = "which receivers and exporters a pipeline has is fixed at start-up";
const MEMORY: &str = "the memory limiter fits every buffer at start-up";
const CACHE: &str = "the decision cache is sized at start-up";
const LOG_FORMAT: &str = "the log's format is set when logging starts";
const SECURITY: &str = "the listeners read their certificate and token files' names at start-up \
                        (they re-read the files themselves: `reload_interval`, token file changes)";
const OWNS_FILES: &str = "a file exporter owns its files until the process exits";
const QUEUE: &str = "an exporter's queue is sized (and its disk log opened) at start-up";

/// Compares the configuration a process runs (`old`, as read from its file) with a new,
/// validated one: the live changes, or every key only a restart can change.
pub fn compare(old: &Config, new: &Config) -> Result<LiveChanges, RestartRequired> {
    let mut refused: Vec<(String, &'static str)> = Vec::new();
    let mut refuse = |key: String, why| refused.push((key, why));
    let mut live = LiveChanges::default();

    let (e0, e1) = (&old.engine, &new.engine);
    for (key, same) in [
        ("cores", e0.cores == e1.cores),
        ("data_dir", e0.data_dir == e1.data_dir),
        ("durability", e0.durability == e1.durability),
        ("wal", e0.wal == e1.wal),
        (
            "channel_capacity",
            e0.channel_capacity == e1.channel_capacity,
        ),
        (
            "shutdown_timeout",
            e0.shutdown_timeout == e1.shutdown_timeout,
        ),
    ] {
        if !same {
            refuse(format!("engine.{key}"), ENGINE);
        }
    }
    let (t0, t1) = (&old.telemetry, &new.telemetry);
    for (key, same) in [
        ("health", t0.health == t1.health),
        ("metrics", t0.metrics == t1.metrics),
    ] {
        if !same {
            refuse(format!("telemetry.{key}"), LISTENER);
        }
    }
    if t0.log_format != t1.log_format {
        refuse("telemetry.log_format".into(), LOG_FORMAT);
    }
    live.log_level = t0.log_level != t1.log_level;

    match (&old.receivers.otlp, &new.receivers.otlp) {
        (Some(a), Some(b)) => {
            let mut a_rest = a.clone();
            (a_rest.tls, a_rest.auth) = (b.tls.clone(), b.auth.clone());
            if a_rest != *b {
                for (key, same) in [
                    ("grpc", a.grpc == b.grpc),
                    ("http", a.http == b.http),
                    (
                        "max_recv_msg_size",
                        a.max_recv_msg_size == b.max_recv_msg_size,
                    ),
                    (
                        "max_concurrent_streams",
                        a.max_concurrent_streams == b.max_concurrent_streams,
                    ),
                    ("max_connections", a.max_connections == b.max_connections),
                    (
                        "read_header_timeout",
                        a.read_header_timeout == b.read_header_timeout,
                    ),
                    ("read_timeout", a.read_timeout == b.read_timeout),
                    ("idle_timeout", a.idle_timeout == b.idle_timeout),
                ] {
                    if !same {
                        refuse(format!("receivers.otlp.{key}"), LISTENER);
                    }
                }
            }
            for (key, same) in [("tls", a.tls == b.tls), ("auth", a.auth == b.auth)] {
                if !same {
                    refuse(format!("receivers.otlp.{key}"), SECURITY);
                }
            }
        }
        (None, None) => {}
        _ => refuse("receivers.otlp".into(), TOPOLOGY),
    }
    // Every other receiver (its listener, consumer group or scrape jobs) is set up at start-up.
    let (mut ra, mut rb) = (old.receivers.clone(), new.receivers.clone());
    (ra.otlp, rb.otlp) = (None, None);
    if ra != rb {
        let mut named = false;
        for (name, same) in [
            ("kafka", ra.kafka == rb.kafka),
            ("prometheus", ra.prometheus == rb.prometheus),
            ("zipkin", ra.zipkin == rb.zipkin),
            ("jaeger", ra.jaeger == rb.jaeger),
            ("fluentforward", ra.fluentforward == rb.fluentforward),
        ] {
            if !same {
                refuse(format!("receivers.{name}"), RECEIVER);
                named = true;
            }
        }
        if !named {
            refuse("receivers".into(), RECEIVER);
        }
    }

    // Pipelines: the same receivers and exporters; the processors may be reordered or changed,
    // with the same tail sampler and memory limiter.
    let limiter = |c: &Config, name: &str| {
        matches!(
            c.processors.get(name),
            Some(ProcessorConfig::MemoryLimiter(_))
        )
    };
    // The sampler and span metrics keep state (buffered traces, a window of counts) and
    // span metrics its flush timer, all set up at start-up.
    let sampler = |c: &Config, name: &str| {
        matches!(
            c.processors.get(name),
            Some(ProcessorConfig::TailSampling(_) | ProcessorConfig::SpanMetrics(_))
        )
    };
    for signal in crate::Signal::ALL {
        let (a, b) = (old.pipelines.get(signal), new.pipelines.get(signal));
        let key = format!("pipelines.{signal}");
        match (a, b) {
            (None, None) => continue,
            (Some(_), None) | (None, Some(_)) => {
                refuse(key, TOPOLOGY);
                continue;
            }
            (Some(a), Some(b)) => {
                if a.receivers != b.receivers {
                    refuse(format!("{key}.receivers"), TOPOLOGY);
                }
                if a.exporters != b.exporters {
                    refuse(format!("{key}.exporters"), TOPOLOGY);
                }
                let special = |c: &Config, p: &crate::Pipeline| -> Vec<String> {
                    p.processors
                        .iter()
                        .filter(|n| sampler(c, n) || limiter(c, n))
                        .cloned()
                        .collect()
                };
                if special(old, a) != special(new, b) {
                    refuse(
                        format!("{key}.processors"),
                        "the tail sampler, span metrics and memory limiter of a pipeline are set up at start-up",
                    );
                } else if a.processors != b.processors {
                    live.processors = true;
                }
            }
        }
    }

    // Processors: what the running pipelines list.
    let listed = |c: &Config| -> BTreeSet<String> {
        c.pipelines
            .iter()
            .flat_map(|(_, p)| p.processors.iter().cloned())
            .collect()
    };
    let in_use: BTreeSet<String> = listed(old).union(&listed(new)).cloned().collect();
    let memory_limited = old
        .processors
        .values()
        .any(|p| matches!(p, ProcessorConfig::MemoryLimiter(_)));
    for name in &in_use {
        let (a, b) = (old.processors.get(name), new.processors.get(name));
        if a == b {
            continue;
        }
        let key = format!("processors.{name}");
        match (a, b) {
            (Some(ProcessorConfig::TailSampling(a)), Some(ProcessorConfig::TailSampling(b))) => {
                if a.decision_cache != b.decision_cache {
                    refuse(format!("{key}.decision_cache"), CACHE);
                }
                if memory_limited {
                    for (bound, same) in [
                        (
                            "max_traces_per_core",
                            a.max_traces_per_core == b.max_traces_per_core,
                        ),
                        (
                            "max_buffered_bytes_per_core",
                            a.max_buffered_bytes_per_core == b.max_buffered_bytes_per_core,
                        ),
                    ] {
                        if !same {
                            refuse(format!("{key}.{bound}"), MEMORY);
                        }
                    }
                }
                live.sampler = true;
            }
            (Some(ProcessorConfig::MemoryLimiter(_)), _)
            | (_, Some(ProcessorConfig::MemoryLimiter(_))) => refuse(key, MEMORY),
            (Some(ProcessorConfig::TailSampling(_)), _)
            | (_, Some(ProcessorConfig::TailSampling(_))) => {
                refuse(key, "the tail sampler of a pipeline is set up at start-up")
            }
            (Some(ProcessorConfig::SpanMetrics(_)), _)
            | (_, Some(ProcessorConfig::SpanMetrics(_))) => refuse(
                key,
                "span metrics keep a window of counts and a flush timer set up at start-up",
            ),
            _ => live.processors = true,
        }
    }

    // Exporters the running pipelines list (the lists themselves cannot change, above).
    let exported: BTreeSet<&String> = old
        .pipelines
        .iter()
        .flat_map(|(_, p)| p.exporters.iter())
        .collect();
    for name in exported {
        let (Some(a), Some(b)) = (old.exporters.get(name), new.exporters.get(name)) else {
            continue; // validation: every listed exporter is defined
        };
        if a == b {
            continue;
        }
        let key = format!("exporters.{name}");
        if std::mem::discriminant(&a.kind) != std::mem::discriminant(&b.kind) {
            refuse(format!("{key}.type"), TOPOLOGY);
        } else if matches!(a.kind, ExporterKind::File(_)) {
            refuse(key, OWNS_FILES);
        } else if a.kind.queue() != b.kind.queue() {
            refuse(format!("{key}.queue"), QUEUE);
        } else {
            live.exporters.push(name.clone());
        }
    }

    if refused.is_empty() {
        Ok(live)
    } else {
        Err(RestartRequired { keys: refused })
    }
}

/// `new`'s tail sampling settings with the bounds the memory limiter fitted at start-up (from
/// `running`, the configuration the cores run) when `new` did not change them: with a memory
/// limiter, [`compare`] refuses any change to them, so the fitted values carry over.
pub fn carry_fitted_bounds(running: &Config, new: &mut Config) {
    for (name, p) in new.processors.iter_mut() {
        if let (
            ProcessorConfig::TailSampling(TailSamplingConfig {
                max_buffered_bytes_per_core,
                ..
            }),
            Some(ProcessorConfig::TailSampling(fitted)),
        ) = (p, running.processors.get(name))
        {
            *max_buffered_bytes_per_core = fitted.max_buffered_bytes_per_core;
        }
    }
    for (name, e) in new.exporters.iter_mut() {
        let Some(fitted) = running.exporters.get(name).and_then(|f| f.kind.queue()) else {
            continue;
        };
        let queue = match &mut e.kind {
            ExporterKind::Otlp(c) => &mut c.queue,
            ExporterKind::OtlpHttp(c) => &mut c.queue,
            ExporterKind::File(c) => &mut c.queue,
            ExporterKind::Kafka(c) => &mut c.queue,
            ExporterKind::PrometheusRemoteWrite(c) => &mut c.queue,
            ExporterKind::Loki(c) => &mut c.queue,
            ExporterKind::Blackhole => continue,
        };
        queue.max_bytes = fitted.max_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::load;
    use crate::{ExporterKind, PolicyConfig, PolicyKind};

    /// OTLP in, redaction and tail sampling, out to an OTLP exporter.
    fn base() -> Config {
        let text = r#"
[receivers.otlp]
[processors.redact]
type = "attributes"
actions = [{ key = "user.email", action = "delete" }]
[processors.tail_sampling]
policies = [{ name = "all", type = "always_sample" }]
[exporters.up]
type = "otlp"
endpoint = "http://127.0.0.1:4317"
[pipelines.traces]
receivers = ["otlp"]
processors = ["redact", "tail_sampling"]
exporters = ["up"]
"#;
        load(text, &|_| None).unwrap()
    }

    fn sampling(c: &mut Config) -> &mut TailSamplingConfig {
        match c.processors.get_mut("tail_sampling") {
            Some(ProcessorConfig::TailSampling(t)) => t,
            _ => unreachable!(),
        }
    }

    fn refused_keys(old: &Config, new: &Config) -> Vec<String> {
        compare(old, new)
            .unwrap_err()
            .keys
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn processors_policies_exporter_settings_and_log_level_change_live() {
        let old = base();
        assert!(compare(&old, &old).unwrap().is_empty());
        let mut new = old.clone();
        new.processors.insert(
            "redact".into(),
            load(
                "[processors.redact]\ntype = \"attributes\"\nactions = [{ key = \"user.id\", action = \"hash\" }]\n[receivers.otlp]\n[exporters.blackhole]\n[pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"blackhole\"]\n",
                &|_| None,
            )
            .unwrap()
            .processors["redact"]
            .clone(),
        );
        sampling(&mut new).policies = vec![PolicyConfig {
            name: "half".into(),
            kind: PolicyKind::Probabilistic {
                sampling_percentage: crate::Percentage::new(50.0).unwrap(),
                hash_salt: String::new(),
            },
        }];
        sampling(&mut new).decision_wait = std::time::Duration::from_secs(3);
        let ExporterKind::Otlp(up) = &mut new.exporters.get_mut("up").unwrap().kind else {
            unreachable!()
        };
        up.timeout = std::time::Duration::from_secs(9);
        new.telemetry.log_level = "debug".into();
        let live = compare(&old, &new).unwrap();
        assert_eq!(
            live,
            LiveChanges {
                processors: true,
                sampler: true,
                exporters: vec!["up".into()],
                log_level: true,
            }
        );
        assert_eq!(
            live.describe(),
            "processors; tail sampling policies and bounds; exporters up; log level"
        );
    }

    #[test]
    fn span_metrics_need_a_restart_and_routing_changes_live() {
        let text = |condition: &str, spanmetrics: &str| {
            format!(
                r#"
[receivers.otlp]
[processors.route]
type = "routing"
default = ["up"]
routes = [{{ condition = '{condition}', exporters = ["errors"] }}]
[processors.sm]
type = "spanmetrics"
dimensions = ["{spanmetrics}"]
[exporters.up]
type = "otlp"
endpoint = "http://127.0.0.1:4317"
[exporters.errors]
type = "otlp"
endpoint = "http://127.0.0.1:4327"
[pipelines.traces]
receivers = ["otlp"]
processors = ["sm", "route"]
exporters = ["up", "errors"]
[pipelines.metrics]
receivers = ["otlp"]
exporters = ["up"]
"#
            )
        };
        let old = load(&text("trace.has_error", "http.route"), &|_| None).unwrap();
        let new = load(
            &text(r#"attributes["tier"] == "gold""#, "http.route"),
            &|_| None,
        )
        .unwrap();
        assert_eq!(
            compare(&old, &new).unwrap(),
            LiveChanges {
                processors: true,
                ..LiveChanges::default()
            }
        );
        let new = load(&text("trace.has_error", "http.method"), &|_| None).unwrap();
        assert_eq!(refused_keys(&old, &new), vec!["processors.sm".to_string()]);
        let mut new = old.clone();
        new.pipelines.traces.as_mut().unwrap().processors = vec!["route".into()];
        assert_eq!(
            refused_keys(&old, &new),
            vec!["pipelines.traces.processors".to_string()]
        );
    }

    #[test]
    fn every_key_that_needs_a_restart_is_named() {
        let old = base();
        let mut new = old.clone();
        new.engine.channel_capacity += 1;
        new.engine.data_dir = "/elsewhere".into();
        let otlp = new.receivers.otlp.as_mut().unwrap();
        otlp.grpc = Some("127.0.0.1:14317".parse().unwrap());
        otlp.max_connections += 1;
        sampling(&mut new).decision_cache.sampled_cache_size += 1;
        let ExporterKind::Otlp(up) = &mut new.exporters.get_mut("up").unwrap().kind else {
            unreachable!()
        };
        up.queue.max_bytes += 1;
        new.pipelines.traces.as_mut().unwrap().processors = vec!["redact".into()];
        new.telemetry.log_format = crate::LogFormat::Json;
        new.receivers.otlp.as_mut().unwrap().auth = Some(crate::AuthConfig {
            bearer_tokens: vec!["t0k3n".into()],
            bearer_token_file: None,
        });
        assert_eq!(
            refused_keys(&old, &new),
            [
                "engine.data_dir",
                "engine.channel_capacity",
                "telemetry.log_format",
                "receivers.otlp.grpc",
                "receivers.otlp.max_connections",
                "receivers.otlp.auth",
                "pipelines.traces.processors",
                "processors.tail_sampling.decision_cache",
                "exporters.up.queue",
            ]
        );
        let message = compare(&old, &new).unwrap_err().to_string();
        assert!(
            message.starts_with("reload refused: these keys change only at a restart: engine.data_dir (cores, data directory"),
            "{message}"
        );
    }

    #[test]
    fn fitted_bounds_carry_over_to_the_new_configuration() {
        let mut running = base();
        sampling(&mut running).max_buffered_bytes_per_core = 1 << 20;
        let ExporterKind::Otlp(up) = &mut running.exporters.get_mut("up").unwrap().kind else {
            unreachable!()
        };
        up.queue.max_bytes = 1 << 16;
        let mut new = base();
        sampling(&mut new).decision_wait = std::time::Duration::from_secs(7);
        carry_fitted_bounds(&running, &mut new);
        assert_eq!(sampling(&mut new).max_buffered_bytes_per_core, 1 << 20);
        assert_eq!(new.exporters["up"].kind.queue().unwrap().max_bytes, 1 << 16);
        assert_eq!(
            sampling(&mut new).decision_wait,
            std::time::Duration::from_secs(7)
        );
    }

    #[test]
    fn with_a_memory_limiter_the_sampler_bound_that_changed_is_named() {
        let mut old = base();
        old.processors.insert(
            "limit".into(),
            load(
                "[processors.limit]\ntype = \"memory_limiter\"\nlimit_mib = 1024\n[receivers.otlp]\n[exporters.blackhole]\n[pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"blackhole\"]\n",
                &|_| None,
            )
            .unwrap()
            .processors["limit"]
            .clone(),
        );
        let mut new = old.clone();
        sampling(&mut new).max_traces_per_core += 1;
        assert_eq!(
            refused_keys(&old, &new),
            ["processors.tail_sampling.max_traces_per_core"]
        );
        sampling(&mut new).max_buffered_bytes_per_core += 1;
        assert_eq!(
            refused_keys(&old, &new),
            [
                "processors.tail_sampling.max_traces_per_core",
                "processors.tail_sampling.max_buffered_bytes_per_core",
            ]
        );
    }

    #[test]
    fn reordering_processors_is_live_but_moving_the_sampler_out_is_not() {
        let old = base();
        let mut new = old.clone();
        new.pipelines.traces.as_mut().unwrap().processors =
            vec!["tail_sampling".into(), "redact".into()];
        assert!(compare(&old, &new).unwrap().processors);
        new.pipelines.traces.as_mut().unwrap().exporters = vec![];
        assert_eq!(refused_keys(&old, &new), ["pipelines.traces.exporters"]);
    }
}
