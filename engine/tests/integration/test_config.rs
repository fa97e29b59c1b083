//! Test configurations as values. [`TestConfig`] holds what a test sets as typed fields and
//! renders them to TOML, so a changed setting is a field assignment or a method call that
//! cannot silently miss; `.replace` on a config string does nothing once the text it looks for
//! changes. [`TestConfig::render`] validates the text with `shardtel_config` before a process
//! reads it, so a key the config no longer knows fails the test where it is built.
//!
//! The reference configurations (the recommended tail-sampling policy and the redaction rules)
//! come from the fixtures under `tests/fixtures/`, which the benches and the docs check
//! (`docs.rs`) use too.
//!
//! ```ignore
//! let st = Shardtel::start_config(|c| {
//!     c.processor("tail_sampling", TailSampling::reference().decision_wait(secs(1)))
//!         .file_pipelines()
//!         .with_traces(|p| p.processors(&["tail_sampling"]))
//! });
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::{Table, Value};

use crate::harness::Ports;

/// `tests/fixtures/reference-sampling.toml`: the recommended tail-sampling policy (keep errors,
/// traces slower than 1 s, user `vip`, and 10 % of the rest), as docs/tail-sampling.md shows it.
pub const REFERENCE_SAMPLING: &str =
    include_str!("../../../tests/fixtures/reference-sampling.toml");

/// `tests/fixtures/redaction.toml`: the seed architecture's redaction processor (hash
/// `http.url`, delete `user.email`, mask card numbers in log bodies), as docs/processors.md
/// shows it.
pub const REDACTION: &str = include_str!("../../../tests/fixtures/redaction.toml");

/// A whole test configuration: `[engine]`, `[telemetry]`, `[receivers.otlp]` on the test's
/// ports and data dir, plus the components and pipelines a test adds.
#[derive(Clone, Debug)]
pub struct TestConfig {
    pub engine: Engine,
    pub telemetry: Telemetry,
    pub otlp: OtlpReceiver,
    /// Receivers other than `otlp`, by name (`[receivers.kafka]`).
    pub receivers: BTreeMap<String, Component>,
    pub processors: BTreeMap<String, Component>,
    pub exporters: BTreeMap<String, Component>,
    pub traces: Option<Pipeline>,
    pub metrics: Option<Pipeline>,
    pub logs: Option<Pipeline>,
}

/// `[engine]`.
#[derive(Clone, Debug)]
pub struct Engine {
    pub cores: Cores,
    pub data_dir: PathBuf,
    /// `None`: the default (`ack_after_sync`).
    pub durability: Option<Durability>,
    pub channel_capacity: Option<u64>,
    pub shutdown_timeout: Duration,
}

/// `engine.cores`.
#[derive(Clone, Debug)]
pub enum Cores {
    All,
    List(Vec<usize>),
}

/// `engine.durability`.
#[derive(Clone, Copy, Debug)]
pub enum Durability {
    None,
    AckAfterSync,
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::AckAfterSync => "ack_after_sync",
        }
    }
}

/// `[telemetry]`: health and metrics on 127.0.0.1.
#[derive(Clone, Debug)]
pub struct Telemetry {
    pub health: u16,
    pub metrics: u16,
}

/// `[receivers.otlp]` on 127.0.0.1.
#[derive(Clone, Debug)]
pub struct OtlpReceiver {
    pub grpc: u16,
    pub http: u16,
    pub max_recv_msg_size: Option<u64>,
    pub max_concurrent_streams: Option<u64>,
    pub max_connections: Option<u64>,
    /// `read_header_timeout`, `read_timeout` and `idle_timeout`, when set.
    pub read_header_timeout: Option<Duration>,
    pub read_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// `[receivers.otlp.tls]`.
    pub tls: Option<ReceiverTls>,
    /// `[receivers.otlp.auth]`.
    pub auth: Option<ReceiverAuth>,
}

/// `[receivers.otlp.tls]`.
#[derive(Clone, Debug)]
pub struct ReceiverTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Set: clients must present a certificate of this CA (mTLS).
    pub client_ca_file: Option<PathBuf>,
    pub reload_interval: Option<Duration>,
}

impl ReceiverTls {
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        ReceiverTls {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            client_ca_file: None,
            reload_interval: None,
        }
    }

    /// Requires client certificates of the CA in `ca_file`.
    pub fn client_ca(mut self, ca_file: impl Into<PathBuf>) -> Self {
        self.client_ca_file = Some(ca_file.into());
        self
    }

    pub fn reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = Some(interval);
        self
    }

    fn to_value(&self) -> Value {
        let mut t = Table::new();
        t.insert("cert_file".into(), path(&self.cert_file));
        t.insert("key_file".into(), path(&self.key_file));
        insert_opt(
            &mut t,
            "client_ca_file",
            self.client_ca_file.as_deref().map(path),
        );
        insert_opt(
            &mut t,
            "reload_interval",
            self.reload_interval.map(duration),
        );
        Value::Table(t)
    }
}

/// `[receivers.otlp.auth]`.
#[derive(Clone, Debug)]
pub struct ReceiverAuth {
    pub bearer_tokens: Vec<String>,
}

impl ReceiverAuth {
    pub fn tokens(tokens: &[&str]) -> Self {
        ReceiverAuth {
            bearer_tokens: strings(tokens),
        }
    }

    fn to_value(&self) -> Value {
        let mut t = Table::new();
        t.insert("bearer_tokens".into(), string_array(&self.bearer_tokens));
        Value::Table(t)
    }
}

/// A `[pipelines.SIGNAL]` table.
#[derive(Clone, Debug, Default)]
pub struct Pipeline {
    pub receivers: Vec<String>,
    pub processors: Vec<String>,
    pub exporters: Vec<String>,
}

impl Pipeline {
    /// From the OTLP receiver to `exporters`, without processors.
    pub fn otlp_to(exporters: &[&str]) -> Self {
        Pipeline {
            receivers: vec!["otlp".into()],
            processors: Vec::new(),
            exporters: strings(exporters),
        }
    }

    /// The same with `processors`, in this order.
    pub fn processors(mut self, processors: &[&str]) -> Self {
        self.processors = strings(processors);
        self
    }

    /// The same with `receivers`.
    pub fn receivers(mut self, receivers: &[&str]) -> Self {
        self.receivers = strings(receivers);
        self
    }

    fn to_value(&self) -> Value {
        let mut t = Table::new();
        t.insert("receivers".into(), string_array(&self.receivers));
        if !self.processors.is_empty() {
            t.insert("processors".into(), string_array(&self.processors));
        }
        t.insert("exporters".into(), string_array(&self.exporters));
        Value::Table(t)
    }
}

/// A receiver, processor or exporter table, built by the typed constructors below and
/// rendered as it is. [`Component::set`] adds or changes a key; a key shardtel does not know
/// fails [`TestConfig::render`].
#[derive(Clone, Debug, PartialEq)]
pub struct Component(Table);

impl Component {
    /// A table with `type = kind`.
    pub fn of_type(kind: &str) -> Self {
        let mut t = Table::new();
        t.insert("type".into(), kind.into());
        Component(t)
    }

    /// Sets `key` (a dotted key sets a nested table's key: `"spans.exclude.match_type"`).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        let mut path: Vec<&str> = key.split('.').collect();
        let last = path.pop().unwrap();
        let mut table = &mut self.0;
        for part in path {
            table = match table
                .entry(part)
                .or_insert_with(|| Value::Table(Table::new()))
            {
                Value::Table(t) => t,
                other => panic!("{key}: {part} is {other}, not a table"),
            };
        }
        table.insert(last.into(), value.into());
        self
    }

    /// `batch = { ... }`.
    pub fn batch(self, batch: Batch) -> Self {
        self.set("batch", batch.to_value())
    }

    /// `retry = { ... }`.
    pub fn retry(self, retry: Retry) -> Self {
        self.set("retry", retry.to_value())
    }

    /// `queue = { ... }`.
    pub fn queue(self, queue: Queue) -> Self {
        self.set("queue", queue.to_value())
    }

    // ---- exporters ----

    /// A file exporter writing OTLP JSON lines to `path` (one file per core).
    pub fn file(path: impl AsRef<Path>) -> Self {
        Self::of_type("file").set("path", path.as_ref().display().to_string())
    }

    /// An OTLP/gRPC exporter.
    pub fn otlp(endpoint: &str) -> Self {
        Self::of_type("otlp").set("endpoint", endpoint)
    }

    /// An OTLP/HTTP exporter.
    pub fn otlphttp(endpoint: &str) -> Self {
        Self::of_type("otlphttp").set("endpoint", endpoint)
    }

    /// A blackhole exporter (counts and drops).
    pub fn blackhole() -> Self {
        Self::of_type("blackhole")
    }

    /// A Loki exporter.
    pub fn loki(endpoint: &str) -> Self {
        Self::of_type("loki").set("endpoint", endpoint)
    }

    /// A Prometheus remote-write exporter.
    pub fn prometheus_remote_write(endpoint: &str) -> Self {
        Self::of_type("prometheusremotewrite").set("endpoint", endpoint)
    }

    /// A Kafka exporter.
    pub fn kafka_exporter(brokers: &[&str]) -> Self {
        Self::of_type("kafka").set("brokers", string_array(&strings(brokers)))
    }

    /// `tls = { ca_file, cert_file, key_file }` for an `https://` endpoint: trust `ca_file`,
    /// present the client certificate `cert_key` (certificate, key) when given.
    pub fn tls(self, ca_file: &Path, cert_key: Option<(&Path, &Path)>) -> Self {
        let c = self.set("tls.ca_file", path(ca_file));
        match cert_key {
            Some((cert, key)) => c
                .set("tls.cert_file", path(cert))
                .set("tls.key_file", path(key)),
            None => c,
        }
    }

    // ---- receivers ----

    /// A Kafka receiver (consumer group `group_id`) of `traces_topics`.
    pub fn kafka_receiver(brokers: &[&str], traces_topics: &[&str], group_id: &str) -> Self {
        Self(Table::new())
            .set("brokers", string_array(&strings(brokers)))
            .set("traces_topics", string_array(&strings(traces_topics)))
            .set("group_id", group_id)
    }

    /// A Prometheus scrape receiver with `scrape_configs` (tables of Prometheus's keys).
    pub fn prometheus_receiver(scrape_configs: Vec<Table>) -> Self {
        let configs = scrape_configs.into_iter().map(Value::Table).collect();
        Self(Table::new()).set("scrape_configs", Value::Array(configs))
    }

    /// A `[receivers.zipkin]` on 127.0.0.1:`port`.
    pub fn zipkin_receiver(port: u16) -> Self {
        Self(Table::new()).set("endpoint", format!("127.0.0.1:{port}"))
    }

    /// A `[receivers.jaeger]` with gRPC on 127.0.0.1:`grpc` and Thrift over HTTP on
    /// 127.0.0.1:`thrift_http`.
    pub fn jaeger_receiver(grpc: u16, thrift_http: u16) -> Self {
        Self(Table::new())
            .set("grpc", format!("127.0.0.1:{grpc}"))
            .set("thrift_http", format!("127.0.0.1:{thrift_http}"))
    }

    /// A `[receivers.fluentforward]` on 127.0.0.1:`port`.
    pub fn fluentforward_receiver(port: u16) -> Self {
        Self(Table::new()).set("endpoint", format!("127.0.0.1:{port}"))
    }

    /// A server receiver's `tls` table.
    pub fn server_tls(self, tls: &ReceiverTls) -> Self {
        self.set("tls", tls.to_value())
    }

    /// A server receiver's `auth` table.
    pub fn server_auth(self, auth: &ReceiverAuth) -> Self {
        self.set("auth", auth.to_value())
    }

    // ---- processors ----

    /// An attributes processor with `actions`, in this order.
    pub fn attributes(actions: &[Action]) -> Self {
        Self::of_type("attributes").set(
            "actions",
            Value::Array(actions.iter().map(|a| Value::Table(a.0.clone())).collect()),
        )
    }

    /// The redaction processor of `tests/fixtures/redaction.toml` (named `redact` there).
    pub fn redaction() -> Self {
        fixture_component(REDACTION, "redaction.toml", "processors", "redact")
    }

    /// A filter processor dropping spans whose `http.route` matches `route_regex`.
    pub fn filter_spans_by_route(route_regex: &str) -> Self {
        let mut condition = Table::new();
        condition.insert("key".into(), "http.route".into());
        condition.insert("value".into(), route_regex.into());
        Self::of_type("filter")
            .set("spans.exclude.match_type", "regexp")
            .set(
                "spans.exclude.attributes",
                Value::Array(vec![Value::Table(condition)]),
            )
    }

    /// A routing processor: `routes` as `(condition, exporters)`, tried in order, then
    /// `default`.
    pub fn routing(default: &[&str], routes: &[(&str, &[&str])]) -> Self {
        let routes = routes
            .iter()
            .map(|(condition, exporters)| {
                let mut t = Table::new();
                t.insert("condition".into(), (*condition).into());
                t.insert("exporters".into(), string_array(&strings(exporters)));
                Value::Table(t)
            })
            .collect();
        Self::of_type("routing")
            .set("default", string_array(&strings(default)))
            .set("routes", Value::Array(routes))
    }

    /// A transform processor: `groups` as `(signal key, context, statements)`, e.g.
    /// `("trace_statements", "span", &["set(...)"])`.
    pub fn transform(groups: &[(&str, &str, &[&str])]) -> Self {
        let mut by_key: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
        for (key, context, statements) in groups {
            let mut t = Table::new();
            t.insert("context".into(), (*context).into());
            t.insert("statements".into(), string_array(&strings(statements)));
            by_key.entry(key).or_default().push(Value::Table(t));
        }
        by_key
            .into_iter()
            .fold(Self::of_type("transform"), |c, (key, groups)| {
                c.set(key, Value::Array(groups))
            })
    }

    /// A memory limiter.
    pub fn memory_limiter(check_interval: Duration, limit_mib: u64) -> Self {
        Self::of_type("memory_limiter")
            .set("check_interval", duration(check_interval))
            .set("limit_mib", int(limit_mib))
    }
}

/// One action of an attributes processor.
#[derive(Clone, Debug)]
pub struct Action(Table);

impl Action {
    /// `{ key, action = "upsert", value }`.
    pub fn upsert(key: &str, value: &str) -> Self {
        let mut t = Table::new();
        t.insert("key".into(), key.into());
        t.insert("action".into(), "upsert".into());
        t.insert("value".into(), value.into());
        Action(t)
    }
}

/// An exporter's `batch` table; `None` keeps the default.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub max_items: Option<u64>,
    pub max_bytes: Option<u64>,
    pub timeout: Option<Duration>,
}

impl Batch {
    /// Only `timeout` set.
    pub fn timeout(timeout: Duration) -> Self {
        Batch {
            timeout: Some(timeout),
            ..Batch::default()
        }
    }

    fn to_value(&self) -> Value {
        let mut t = Table::new();
        insert_opt(&mut t, "max_items", self.max_items.map(int));
        insert_opt(&mut t, "max_bytes", self.max_bytes.map(int));
        insert_opt(&mut t, "timeout", self.timeout.map(duration));
        Value::Table(t)
    }
}

/// An exporter's `retry` table; `None` keeps the default.
#[derive(Clone, Debug, Default)]
pub struct Retry {
    pub initial_interval: Option<Duration>,
    pub max_interval: Option<Duration>,
    /// `Duration::ZERO`: never give up.
    pub max_elapsed_time: Option<Duration>,
}

impl Retry {
    /// Backing off from `initial` to `max`, never giving up.
    pub fn forever(initial: Duration, max: Duration) -> Self {
        Retry {
            initial_interval: Some(initial),
            max_interval: Some(max),
            max_elapsed_time: Some(Duration::ZERO),
        }
    }

    /// Backing off from `initial` to `max`, giving up after the default time (never with
    /// `durability = "ack_after_sync"`, 300 s with `"none"`).
    pub fn backoff(initial: Duration, max: Duration) -> Self {
        Retry {
            initial_interval: Some(initial),
            max_interval: Some(max),
            max_elapsed_time: None,
        }
    }

    fn to_value(&self) -> Value {
        let mut t = Table::new();
        insert_opt(
            &mut t,
            "initial_interval",
            self.initial_interval.map(duration),
        );
        insert_opt(&mut t, "max_interval", self.max_interval.map(duration));
        insert_opt(
            &mut t,
            "max_elapsed_time",
            self.max_elapsed_time.map(duration),
        );
        Value::Table(t)
    }
}

/// An exporter's `queue` table.
#[derive(Clone, Copy, Debug)]
pub struct Queue {
    pub storage: QueueStorage,
    /// `None`: the default for the storage.
    pub max_bytes: Option<u64>,
}

/// `queue.storage`.
#[derive(Clone, Copy, Debug)]
pub enum QueueStorage {
    Memory,
    Disk,
}

impl Queue {
    pub fn memory(max_bytes: u64) -> Self {
        Queue {
            storage: QueueStorage::Memory,
            max_bytes: Some(max_bytes),
        }
    }

    pub fn disk(max_bytes: Option<u64>) -> Self {
        Queue {
            storage: QueueStorage::Disk,
            max_bytes,
        }
    }

    fn to_value(self) -> Value {
        let mut t = Table::new();
        let storage = match self.storage {
            QueueStorage::Memory => "memory",
            QueueStorage::Disk => "disk",
        };
        t.insert("storage".into(), storage.into());
        insert_opt(&mut t, "max_bytes", self.max_bytes.map(int));
        Value::Table(t)
    }
}

/// A `tail_sampling` processor.
#[derive(Clone, Debug)]
pub struct TailSampling {
    pub decision_wait: Duration,
    pub max_traces_per_core: Option<u64>,
    pub max_buffered_bytes_per_core: Option<u64>,
    /// `decision_cache = { sampled_cache_size, non_sampled_cache_size }`, both this size.
    pub decision_cache: Option<u64>,
    pub on_shutdown: Option<OnShutdown>,
    /// `buffer_compression` (`"none"` or `"lz4"`).
    pub buffer_compression: Option<&'static str>,
    pub policies: Vec<Policy>,
}

/// `tail_sampling.on_shutdown`.
#[derive(Clone, Copy, Debug)]
pub enum OnShutdown {
    Decide,
    Drop,
}

impl TailSampling {
    pub fn new(decision_wait: Duration, policies: Vec<Policy>) -> Self {
        TailSampling {
            decision_wait,
            max_traces_per_core: None,
            max_buffered_bytes_per_core: None,
            decision_cache: None,
            on_shutdown: None,
            buffer_compression: None,
            policies,
        }
    }

    /// One `always_sample` policy: every trace is kept once decided.
    pub fn keep_all(decision_wait: Duration) -> Self {
        Self::new(decision_wait, vec![Policy::always_sample("all")])
    }

    /// The recommended policy of `tests/fixtures/reference-sampling.toml`, with its settings.
    ///
    /// # Panics
    ///
    /// If the fixture has a setting this type does not carry: add it here, so that no part of
    /// the reference is silently left out.
    pub fn reference() -> Self {
        let table = fixture_component(
            REFERENCE_SAMPLING,
            "reference-sampling.toml",
            "processors",
            "tail_sampling",
        )
        .0;
        let mut sampling = TailSampling::new(Duration::ZERO, Vec::new());
        for (key, value) in table {
            match (key.as_str(), value) {
                ("decision_wait", Value::String(d)) => {
                    sampling.decision_wait = shardtel_config::parse_duration(&d)
                        .unwrap_or_else(|e| panic!("reference-sampling.toml: {e:?}"));
                }
                ("max_traces_per_core", Value::Integer(n)) => {
                    sampling.max_traces_per_core = Some(n as u64);
                }
                ("policies", Value::Array(policies)) => {
                    sampling.policies = policies
                        .into_iter()
                        .map(|p| match p {
                            Value::Table(t) => Policy(t),
                            other => panic!("reference-sampling.toml: policy {other}"),
                        })
                        .collect();
                }
                (key, value) => panic!(
                    "tests/fixtures/reference-sampling.toml sets {key} = {value}, which \
                     TailSampling::reference does not carry: add it"
                ),
            }
        }
        assert!(
            !sampling.decision_wait.is_zero() && !sampling.policies.is_empty(),
            "reference-sampling.toml: no decision_wait or no policies"
        );
        sampling
    }

    pub fn decision_wait(mut self, decision_wait: Duration) -> Self {
        self.decision_wait = decision_wait;
        self
    }

    pub fn max_traces_per_core(mut self, traces: u64) -> Self {
        self.max_traces_per_core = Some(traces);
        self
    }

    pub fn on_shutdown(mut self, on_shutdown: OnShutdown) -> Self {
        self.on_shutdown = Some(on_shutdown);
        self
    }

    pub fn buffer_compression(mut self, compression: &'static str) -> Self {
        self.buffer_compression = Some(compression);
        self
    }
}

impl From<TailSampling> for Component {
    fn from(s: TailSampling) -> Component {
        let mut c =
            Component::of_type("tail_sampling").set("decision_wait", duration(s.decision_wait));
        if let Some(n) = s.max_traces_per_core {
            c = c.set("max_traces_per_core", int(n));
        }
        if let Some(n) = s.max_buffered_bytes_per_core {
            c = c.set("max_buffered_bytes_per_core", int(n));
        }
        if let Some(n) = s.decision_cache {
            c = c
                .set("decision_cache.sampled_cache_size", int(n))
                .set("decision_cache.non_sampled_cache_size", int(n));
        }
        if let Some(on_shutdown) = s.on_shutdown {
            let name = match on_shutdown {
                OnShutdown::Decide => "decide",
                OnShutdown::Drop => "drop",
            };
            c = c.set("on_shutdown", name);
        }
        if let Some(compression) = s.buffer_compression {
            c = c.set("buffer_compression", compression);
        }
        c.set(
            "policies",
            Value::Array(s.policies.into_iter().map(|p| Value::Table(p.0)).collect()),
        )
    }
}

/// One tail-sampling policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy(Table);

impl Policy {
    fn of_type(name: &str, kind: &str) -> Self {
        let mut t = Table::new();
        t.insert("name".into(), name.into());
        t.insert("type".into(), kind.into());
        Policy(t)
    }

    pub fn always_sample(name: &str) -> Self {
        Self::of_type(name, "always_sample")
    }

    /// Keeps traces with a span of one of `codes` (`"ERROR"`, `"OK"`, `"UNSET"`).
    pub fn status_code(name: &str, codes: &[&str]) -> Self {
        let mut p = Self::of_type(name, "status_code");
        p.0.insert("status_codes".into(), string_array(&strings(codes)));
        p
    }

    pub fn probabilistic(name: &str, percent: u64) -> Self {
        let mut p = Self::of_type(name, "probabilistic");
        p.0.insert("percent".into(), int(percent));
        p
    }

    /// Keeps traces with a span whose `key` matches one of the regular expressions `values`.
    pub fn string_attribute_regex(name: &str, key: &str, values: &[&str]) -> Self {
        let mut p = Self::of_type(name, "string_attribute");
        p.0.insert("key".into(), key.into());
        p.0.insert("values".into(), string_array(&strings(values)));
        p.0.insert("enabled_regex_matching".into(), true.into());
        p
    }
}

impl TestConfig {
    /// Engine (every core, `dir` as data dir, 10 s shutdown timeout), telemetry and the OTLP
    /// receiver on `ports`; no components, no pipelines.
    pub fn new(dir: &Path, ports: Ports) -> Self {
        TestConfig {
            engine: Engine {
                cores: Cores::All,
                data_dir: dir.to_path_buf(),
                durability: None,
                channel_capacity: None,
                shutdown_timeout: Duration::from_secs(10),
            },
            telemetry: Telemetry {
                health: ports.health,
                metrics: ports.metrics,
            },
            otlp: OtlpReceiver {
                grpc: ports.grpc,
                http: ports.http,
                max_recv_msg_size: None,
                max_concurrent_streams: None,
                max_connections: None,
                read_header_timeout: None,
                read_timeout: None,
                idle_timeout: None,
                tls: None,
                auth: None,
            },
            receivers: BTreeMap::new(),
            processors: BTreeMap::new(),
            exporters: BTreeMap::new(),
            traces: None,
            metrics: None,
            logs: None,
        }
    }

    /// The directory the file exporters of [`TestConfig::file_exporters`] write to.
    pub fn out_dir(&self) -> PathBuf {
        self.engine.data_dir.join("out")
    }

    /// Changes `self` in place (for settings without a builder method).
    pub fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }

    /// Adds receiver `name`; panics if there is one.
    pub fn receiver(mut self, name: &str, receiver: Component) -> Self {
        insert_new(&mut self.receivers, "receiver", name, receiver);
        self
    }

    /// Adds processor `name`; panics if there is one.
    pub fn processor(mut self, name: &str, processor: impl Into<Component>) -> Self {
        insert_new(&mut self.processors, "processor", name, processor.into());
        self
    }

    /// Replaces processor `name`; panics if there is none.
    pub fn replace_processor(&mut self, name: &str, processor: impl Into<Component>) {
        let old = self.processors.insert(name.to_string(), processor.into());
        assert!(
            old.is_some(),
            "no processor {name} in this test config to replace"
        );
    }

    /// Adds exporter `name`; panics if there is one.
    pub fn exporter(mut self, name: &str, exporter: Component) -> Self {
        insert_new(&mut self.exporters, "exporter", name, exporter);
        self
    }

    /// Changes exporter `name`; panics if there is none.
    pub fn with_exporter(
        mut self,
        name: &str,
        change: impl FnOnce(Component) -> Component,
    ) -> Self {
        let exporter = self
            .exporters
            .remove(name)
            .unwrap_or_else(|| panic!("no exporter {name} in this test config"));
        self.exporters.insert(name.to_string(), change(exporter));
        self
    }

    /// Sets the traces pipeline.
    pub fn traces(mut self, pipeline: Pipeline) -> Self {
        self.traces = Some(pipeline);
        self
    }

    /// Sets the metrics pipeline.
    pub fn metrics(mut self, pipeline: Pipeline) -> Self {
        self.metrics = Some(pipeline);
        self
    }

    /// Sets the logs pipeline.
    pub fn logs(mut self, pipeline: Pipeline) -> Self {
        self.logs = Some(pipeline);
        self
    }

    /// Changes the traces pipeline; panics if there is none.
    pub fn with_traces(mut self, change: impl FnOnce(Pipeline) -> Pipeline) -> Self {
        let pipeline = self
            .traces
            .take()
            .expect("no traces pipeline in this test config");
        self.traces = Some(change(pipeline));
        self
    }

    /// Exporters `file_traces`, `file_metrics` and `file_logs` writing to
    /// [`TestConfig::out_dir`] (`traces.jsonl`, ...) in batches of at most 50 ms.
    pub fn file_exporters(self) -> Self {
        let out = self.out_dir();
        ["traces", "metrics", "logs"]
            .into_iter()
            .fold(self, |c, signal| {
                c.exporter(
                    &format!("file_{signal}"),
                    Component::file(out.join(format!("{signal}.jsonl")))
                        .batch(Batch::timeout(Duration::from_millis(50))),
                )
            })
    }

    /// [`TestConfig::file_exporters`] and a pipeline per signal from the OTLP receiver to them.
    pub fn file_pipelines(self) -> Self {
        self.file_exporters()
            .traces(Pipeline::otlp_to(&["file_traces"]))
            .metrics(Pipeline::otlp_to(&["file_metrics"]))
            .logs(Pipeline::otlp_to(&["file_logs"]))
    }

    /// The configuration as a TOML table.
    pub fn to_table(&self) -> Table {
        let mut engine = Table::new();
        let cores = match &self.engine.cores {
            Cores::All => Value::from("all"),
            Cores::List(cores) => Value::Array(cores.iter().map(|&c| int(c as u64)).collect()),
        };
        engine.insert("cores".into(), cores);
        engine.insert(
            "data_dir".into(),
            self.engine.data_dir.display().to_string().into(),
        );
        insert_opt(
            &mut engine,
            "durability",
            self.engine.durability.map(|d| d.name().into()),
        );
        insert_opt(
            &mut engine,
            "channel_capacity",
            self.engine.channel_capacity.map(int),
        );
        engine.insert(
            "shutdown_timeout".into(),
            duration(self.engine.shutdown_timeout),
        );

        let mut telemetry = Table::new();
        telemetry.insert("health".into(), local(self.telemetry.health));
        telemetry.insert("metrics".into(), local(self.telemetry.metrics));

        let mut otlp = Table::new();
        otlp.insert("grpc".into(), local(self.otlp.grpc));
        otlp.insert("http".into(), local(self.otlp.http));
        insert_opt(
            &mut otlp,
            "max_recv_msg_size",
            self.otlp.max_recv_msg_size.map(int),
        );
        insert_opt(
            &mut otlp,
            "max_concurrent_streams",
            self.otlp.max_concurrent_streams.map(int),
        );
        insert_opt(
            &mut otlp,
            "max_connections",
            self.otlp.max_connections.map(int),
        );
        for (key, value) in [
            ("read_header_timeout", self.otlp.read_header_timeout),
            ("read_timeout", self.otlp.read_timeout),
            ("idle_timeout", self.otlp.idle_timeout),
        ] {
            insert_opt(&mut otlp, key, value.map(duration));
        }
        insert_opt(
            &mut otlp,
            "tls",
            self.otlp.tls.as_ref().map(ReceiverTls::to_value),
        );
        insert_opt(
            &mut otlp,
            "auth",
            self.otlp.auth.as_ref().map(ReceiverAuth::to_value),
        );
        let mut receivers = components(&self.receivers);
        assert!(
            !receivers.contains_key("otlp"),
            "the OTLP receiver is TestConfig::otlp"
        );
        receivers.insert("otlp".into(), Value::Table(otlp));

        let mut pipelines = Table::new();
        for (signal, pipeline) in [
            ("traces", &self.traces),
            ("metrics", &self.metrics),
            ("logs", &self.logs),
        ] {
            insert_opt(
                &mut pipelines,
                signal,
                pipeline.as_ref().map(Pipeline::to_value),
            );
        }

        let mut root = Table::new();
        root.insert("engine".into(), Value::Table(engine));
        root.insert("telemetry".into(), Value::Table(telemetry));
        root.insert("receivers".into(), Value::Table(receivers));
        if !self.processors.is_empty() {
            root.insert(
                "processors".into(),
                Value::Table(components(&self.processors)),
            );
        }
        if !self.exporters.is_empty() {
            root.insert(
                "exporters".into(),
                Value::Table(components(&self.exporters)),
            );
        }
        root.insert("pipelines".into(), Value::Table(pipelines));
        root
    }

    /// The configuration file's text.
    ///
    /// # Panics
    ///
    /// If shardtel would refuse it, with its errors and the text.
    pub fn render(&self) -> String {
        let text = toml::to_string(&self.to_table()).expect("a test config renders as TOML");
        if let Err(errors) = shardtel_config::Config::from_str(&text, "test-config.toml") {
            panic!("the test config is invalid:\n{errors}\n\ntest-config.toml:\n{text}");
        }
        text
    }
}

/// `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `n` milliseconds.
pub fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The table `[SECTION.NAME]` of a fixture, which must hold exactly that one component.
fn fixture_component(text: &str, file: &str, section: &str, name: &str) -> Component {
    let mut root: Table = text
        .parse()
        .unwrap_or_else(|e| panic!("tests/fixtures/{file} is not TOML: {e}"));
    let Some(Value::Table(mut components)) = root.remove(section) else {
        panic!("tests/fixtures/{file} has no [{section}.*]");
    };
    assert!(
        root.is_empty(),
        "tests/fixtures/{file} has more than [{section}.{name}]"
    );
    let Some(Value::Table(component)) = components.remove(name) else {
        panic!("tests/fixtures/{file} has no [{section}.{name}]");
    };
    assert!(
        components.is_empty(),
        "tests/fixtures/{file} has more than [{section}.{name}]"
    );
    Component(component)
}

fn insert_new(map: &mut BTreeMap<String, Component>, what: &str, name: &str, c: Component) {
    assert!(
        map.insert(name.to_string(), c).is_none(),
        "{what} {name} added twice to a test config"
    );
}

fn components(map: &BTreeMap<String, Component>) -> Table {
    map.iter()
        .map(|(name, c)| (name.clone(), Value::Table(c.0.clone())))
        .collect()
}

fn insert_opt(t: &mut Table, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        t.insert(key.into(), value);
    }
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|s| s.to_string()).collect()
}

fn string_array(s: &[String]) -> Value {
    Value::Array(s.iter().map(|s| Value::from(s.as_str())).collect())
}

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).expect("fits a TOML integer"))
}

fn path(p: &Path) -> Value {
    p.display().to_string().into()
}

fn local(port: u16) -> Value {
    format!("127.0.0.1:{port}").into()
}

/// A duration as shardtel reads it: whole seconds as `"Ns"`, else `"Nms"`, else `"Nns"`.
fn duration(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
    .into()
}

#[test]
fn a_rendered_config_validates_and_holds_what_was_built() {
    let ports = Ports {
        grpc: 1,
        http: 2,
        health: 3,
        metrics: 4,
    };
    let config = TestConfig::new(Path::new("/tmp/shardtel-test-config"), ports)
        .with(|c| {
            c.engine.cores = Cores::List(vec![0]);
            c.engine.durability = Some(Durability::None);
            c.engine.shutdown_timeout = millis(2500);
            c.otlp.max_recv_msg_size = Some(256 << 10);
        })
        .processor("tail_sampling", TailSampling::reference())
        .processor("redact", Component::redaction())
        .file_pipelines()
        .with_traces(|p| p.processors(&["tail_sampling", "redact"]));
    let text = config.render();
    let read: Table = text.parse().unwrap();
    assert_eq!(
        read["engine"]["cores"],
        Value::Array(vec![int(0)]),
        "{text}"
    );
    assert_eq!(read["engine"]["durability"].as_str(), Some("none"));
    assert_eq!(read["engine"]["shutdown_timeout"].as_str(), Some("2500ms"));
    assert_eq!(
        read["receivers"]["otlp"]["max_recv_msg_size"],
        int(256 << 10)
    );
    assert_eq!(
        read["pipelines"]["traces"]["processors"],
        string_array(&strings(&["tail_sampling", "redact"]))
    );
    assert_eq!(
        read["exporters"]["file_logs"]["path"].as_str(),
        Some("/tmp/shardtel-test-config/out/logs.jsonl")
    );
}

#[test]
fn the_reference_policy_is_the_fixture_whole() {
    // What the builder renders for the reference policy is the fixture's table, key for key.
    let fixture: Table = REFERENCE_SAMPLING.parse().unwrap();
    let mut rendered = Component::from(TailSampling::reference()).0;
    assert_eq!(rendered.remove("type"), Some(Value::from("tail_sampling")));
    assert_eq!(
        Value::Table(rendered),
        fixture["processors"]["tail_sampling"]
    );
}

#[test]
fn base_config_still_holds_what_the_kafka_tests_patch() {
    // kafka.rs patches `harness::base_config` text with `replacen` until it moves to
    // TestConfig: the text it looks for must stay, or those patches would silently do nothing.
    let text = crate::harness::base_config(Path::new("/tmp/x"), Ports::new(), "");
    assert_eq!(text.matches("cores = \"all\"").count(), 1, "{text}");
    assert_eq!(text.matches("[engine]\n").count(), 1, "{text}");
}

#[test]
#[should_panic(expected = "the test config is invalid")]
fn a_key_shardtel_does_not_know_fails_where_the_config_is_built() {
    TestConfig::new(Path::new("/tmp/x"), Ports::new())
        .exporter("sink", Component::blackhole().set("bacth", 1))
        .traces(Pipeline::otlp_to(&["sink"]))
        .render();
}

#[test]
fn the_kafka_tests_configs_render_from_values() {
    // What kafka.rs builds as text today: a gateway to Kafka, and a processor consuming the
    // topic with a regex policy into files, with durability off.
    let ports = Ports::new();
    TestConfig::new(Path::new("/tmp/x"), ports)
        .with(|c| c.engine.cores = Cores::List(vec![0]))
        .exporter(
            "kafka",
            Component::kafka_exporter(&["127.0.0.1:9092"])
                .set("traces_topic", "spans")
                .batch(Batch::timeout(millis(50))),
        )
        .traces(Pipeline::otlp_to(&["kafka"]))
        .render();
    let policy = Policy::string_attribute_regex("even", "http.route", &["^/api/[0-9]*[02468]$"]);
    let text = TestConfig::new(Path::new("/tmp/x"), ports)
        .with(|c| c.engine.durability = Some(Durability::None))
        .receiver(
            "kafka",
            Component::kafka_receiver(&["127.0.0.1:9092"], &["spans"], "group")
                .set("initial_offset", "earliest")
                .set("session_timeout", "6s"),
        )
        .processor(
            "tail_sampling",
            TailSampling::new(secs(2), vec![policy]).on_shutdown(OnShutdown::Decide),
        )
        .file_exporters()
        .traces(
            Pipeline::otlp_to(&["file_traces"])
                .receivers(&["kafka"])
                .processors(&["tail_sampling"]),
        )
        .render();
    let read: Table = text.parse().unwrap();
    assert_eq!(
        read["receivers"]["kafka"]["group_id"].as_str(),
        Some("group")
    );
    assert_eq!(
        read["processors"]["tail_sampling"]["policies"][0]["values"][0].as_str(),
        Some("^/api/[0-9]*[02468]$"),
        "{text}"
    );
}
