//! Fitting each core's buffers to its share of the limit at start-up: every part of a core's
//! memory the configuration bounds, the least each can be given, and a max-min fair share of
//! what is left for the parts that can shrink.

use shardtel_config::{Config, Durability, ExporterKind, ProcessorConfig, QueueStorage};
use shardtel_sinks::DiskQueueSettings;

use super::{default_inflight_bytes, MemoryLimiterError};

/// What the OTLP receivers' connections may hold, as the memory limiter counts it; computed from
/// the configuration by the receivers (`receivers::otlp::connections::bounds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionBounds {
    /// `receivers.otlp.max_connections`.
    pub max_connections: usize,
    /// Connections one core serves: its share of `max_connections`.
    pub per_core: usize,
    /// The most one served connection holds besides the request bodies it delivered (the worst
    /// case of the configured listeners).
    pub per_connection_bytes: usize,
    /// That worst case for a gRPC connection.
    pub grpc_bytes: usize,
    /// That worst case for an HTTP/1.1 connection.
    pub http_bytes: usize,
    /// What the connections one core refuses at once hold at most, together.
    pub refusing_bytes: usize,
}

/// What [`fit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Each core's share of the soft limit, minus its share of the baseline, in bytes.
    pub share: u64,
    /// Request bytes in flight per core.
    pub max_inflight_bytes: usize,
    /// Bytes each disk queue holds in memory until durable (see `DiskQueueSettings`).
    pub disk_queue_memory_bytes: usize,
    /// Bytes of recent commits each disk queue caches.
    pub disk_queue_cache_bytes: usize,
    /// Bytes the connections a core serves may hold together, each at its worst case.
    pub connection_bytes: usize,
    /// What a core's data buffers (requests in flight, export queues in memory, tail sampler)
    /// were fitted to together, bytes.
    pub buffered: u64,
    /// What the buffers hold at most per core, part by part, for the log: (what, bytes).
    pub parts: Vec<(String, u64)>,
    /// One line per value changed, for the log.
    pub changes: Vec<String>,
}

/// Bytes a tail sampler keeps per trace slot and per decision-cache entry besides its span
/// buffers (see the README's memory bound).
const SAMPLER_BYTES_PER_TRACE: u64 = 170;
const SAMPLER_BYTES_PER_CACHED_ID: u64 = 60;
/// State a `prometheusremotewrite` exporter keeps per series (last timestamp, delta totals in a
/// hash table); an estimate: histograms with many buckets take more.
const PROMETHEUS_BYTES_PER_SERIES: u64 = 256;
/// librdkafka's consumer defaults: `queued.max.messages.kbytes` (KiB) and `fetch.max.bytes`.
const KAFKA_QUEUED_KBYTES: u64 = 65_536;
const KAFKA_FETCH_MAX_BYTES: u64 = 52_428_800;

/// One part of a core's memory: what it is, the bytes configured, the least it can be fitted
/// to (equal to the demand for parts that cannot be scaled).
struct Item {
    part: Part,
    demand: u64,
    minimum: u64,
}

/// Shrinks the per-core buffers of `config` to fit `budget / cores` per core, where `budget` is
/// what all buffers may hold ([`buffer_budget`]): parts that cannot be scaled keep their size,
/// the others share the rest by max-min fairness (see `scale`). `connections`: what the OTLP
/// receivers' connections hold, when there are any. Fails when the minimums do not fit.
pub fn fit(
    config: &mut Config,
    cores: usize,
    budget: u64,
    connections: Option<&ConnectionBounds>,
) -> Result<Budget, MemoryLimiterError> {
    let share = budget / cores.max(1) as u64;
    let items = items(config, cores, connections);
    let minimum: u64 = items.iter().map(|i| i.minimum).sum();
    if minimum > share {
        return Err(MemoryLimiterError::DoesNotFit {
            share,
            budget,
            cores,
            minimums: items.iter().map(|i| (i.part.name(), i.minimum)).collect(),
        });
    }
    let sizes = scale(&items, share);
    let max_recv = max_recv_msg_size(config);
    let mut budget = Budget {
        share,
        max_inflight_bytes: default_inflight_bytes(max_recv as usize),
        disk_queue_memory_bytes: DiskQueueSettings::MEMORY_BYTES,
        disk_queue_cache_bytes: DiskQueueSettings::CACHE_BYTES,
        connection_bytes: usize::MAX,
        buffered: 0,
        parts: Vec::new(),
        changes: Vec::new(),
    };
    for (item, size) in items.iter().zip(sizes) {
        budget.parts.push((item.part.name(), size));
        match item.part {
            Part::Connections => budget.connection_bytes = size as usize,
            Part::Inflight | Part::Queue(_) | Part::DiskQueues(_) | Part::Sampler(_) => {
                budget.buffered += size
            }
            Part::Mesh(_) | Part::Fixed(_) => {}
        }
        if size >= item.demand {
            continue;
        }
        let (demand, changes) = (item.demand, &mut budget.changes);
        match &item.part {
            Part::Inflight => {
                budget.max_inflight_bytes = size as usize;
                changes.push(format!(
                    "request bytes in flight per core {} KiB -> {} KiB",
                    demand >> 10,
                    size >> 10
                ));
            }
            Part::Mesh(per_slot) => {
                let capacity = (size / per_slot).max(1) as usize;
                changes.push(format!(
                    "engine.channel_capacity {} -> {capacity} (each slot may hold a request of up to max_recv_msg_size)",
                    config.engine.channel_capacity
                ));
                config.engine.channel_capacity = capacity;
            }
            Part::Queue(name) => {
                if let Some(q) = config
                    .exporters
                    .get_mut(name)
                    .and_then(|e| queue_mut(&mut e.kind))
                {
                    q.max_bytes = size as usize;
                    changes.push(format!(
                        "exporters.{name}.queue.max_bytes {} KiB -> {} KiB",
                        demand >> 10,
                        size >> 10
                    ));
                }
            }
            Part::DiskQueues(_) => {
                // Memory and cache shrink together; the queues' disk bounds stay.
                let scaled = |v: usize| (v as u128 * size as u128 / demand as u128) as usize;
                budget.disk_queue_memory_bytes =
                    scaled(DiskQueueSettings::MEMORY_BYTES).max(item.minimum_per_queue());
                budget.disk_queue_cache_bytes = scaled(DiskQueueSettings::CACHE_BYTES);
                changes.push(format!(
                    "memory of each disk queue (appends not yet durable + cache) {} KiB + {} KiB -> {} KiB + {} KiB",
                    DiskQueueSettings::MEMORY_BYTES >> 10,
                    DiskQueueSettings::CACHE_BYTES >> 10,
                    budget.disk_queue_memory_bytes >> 10,
                    budget.disk_queue_cache_bytes >> 10
                ));
            }
            Part::Sampler(name) => {
                if let Some(ProcessorConfig::TailSampling(t)) = config.processors.get_mut(name) {
                    t.max_buffered_bytes_per_core = size;
                    changes.push(format!(
                        "processors.{name}.max_buffered_bytes_per_core {} KiB -> {} KiB",
                        demand >> 10,
                        size >> 10
                    ));
                }
            }
            Part::Connections => {
                if let Some(c) = connections {
                    let grpc = c.grpc_bytes as u64;
                    let http = c.http_bytes as u64;
                    changes.push(format!(
                        "connections per core: {} of receivers.otlp.max_connections {} -> {} KiB at their worst case: {} gRPC ({} KiB each) or {} HTTP/1.1 ({} KiB each) connections",
                        c.per_core,
                        c.max_connections,
                        size >> 10,
                        size / grpc,
                        grpc >> 10,
                        size / http,
                        http >> 10
                    ));
                }
            }
            Part::Fixed(_) => {}
        }
    }
    Ok(budget)
}

fn max_recv_msg_size(config: &Config) -> u64 {
    config
        .receivers
        .otlp
        .as_ref()
        .map_or(4 << 20, |o| o.max_recv_msg_size) as u64
}

/// Every part of one core's memory that `config` bounds (see the module docs).
fn items(config: &Config, cores: usize, connections: Option<&ConnectionBounds>) -> Vec<Item> {
    let max_recv = max_recv_msg_size(config);
    let scalable = |part, demand: u64, minimum: u64| Item {
        part,
        demand,
        minimum: minimum.min(demand),
    };
    let fixed = |what: String, bytes: u64| Item {
        part: Part::Fixed(what),
        demand: bytes,
        minimum: bytes,
    };
    let mut items = vec![scalable(
        Part::Inflight,
        default_inflight_bytes(max_recv as usize) as u64,
        2 * max_recv,
    )];
    if cores > 1 {
        let per_slot = (cores as u64 - 1) * max_recv;
        items.push(scalable(
            Part::Mesh(per_slot),
            config.engine.channel_capacity as u64 * per_slot,
            per_slot,
        ));
    }
    if let Some(c) = connections {
        let per_connection = c.per_connection_bytes as u64;
        let per_core = c.per_core as u64;
        items.push(scalable(
            Part::Connections,
            per_core * per_connection,
            per_core.min(4) * per_connection,
        ));
        items.push(fixed(
            "connections being refused".into(),
            c.refusing_bytes as u64,
        ));
    }
    if let Some(otlp) = &config.receivers.otlp {
        // One request is decoded at a time per core: decompression may grow its output to
        // twice the limit before trimming it; OTLP/JSON (HTTP) is parsed into a document
        // tree, about five times its size, then encoded.
        let copies = if otlp.http.is_some() { 6 } else { 2 };
        items.push(fixed("request being decoded".into(), copies * max_recv));
    }
    let mut used: Vec<&String> = config
        .pipelines
        .iter()
        .flat_map(|(_, p)| p.exporters.iter())
        .collect();
    used.sort();
    used.dedup();
    let (mut disk_queues, mut disk_batch) = (0u64, 0u64);
    for name in used {
        let Some(e) = config.exporters.get(name) else {
            continue;
        };
        let (Some(q), Some(b)) = (e.kind.queue(), e.kind.batch()) else {
            continue;
        };
        let disk = q.storage == QueueStorage::Disk;
        if disk {
            disk_queues += 1;
            disk_batch = disk_batch.max(b.max_bytes as u64);
        } else {
            items.push(scalable(
                Part::Queue(name.clone()),
                q.max_bytes as u64,
                b.max_bytes as u64,
            ));
        }
        if let ExporterKind::PrometheusRemoteWrite(p) = &e.kind {
            items.push(fixed(
                format!("exporter {name} series state"),
                PROMETHEUS_BYTES_PER_SERIES * p.max_series_per_core as u64,
            ));
        }
        // Batches being sent: read back from disk (a memory queue counts them in its bytes)
        // and their encoded form.
        let kind = e.kind.type_name();
        let copies = send_copies(kind) + u64::from(disk);
        items.push(fixed(
            format!("exporter {name} sending"),
            shardtel_sinks::senders_of(kind) as u64 * b.max_bytes as u64 * copies,
        ));
    }
    if disk_queues > 0 {
        let per_queue = DiskQueueSettings::memory_bound(
            DiskQueueSettings::MEMORY_BYTES,
            DiskQueueSettings::CACHE_BYTES,
            usize::MAX,
        ) as u64;
        items.push(scalable(
            Part::DiskQueues(disk_batch),
            disk_queues * per_queue,
            disk_queues * disk_batch,
        ));
    }
    for (name, p) in &config.processors {
        let listed = config
            .pipelines
            .traces
            .as_ref()
            .is_some_and(|t| t.processors.contains(name));
        if let (ProcessorConfig::SpanMetrics(m), true) = (p, listed) {
            items.push(fixed(
                format!("{name} series"),
                shardtel_processors::SpanMetrics::max_held_bytes(m),
            ));
        }
        if let (ProcessorConfig::TailSampling(t), true) = (p, listed) {
            items.push(scalable(
                Part::Sampler(name.clone()),
                t.max_buffered_bytes_per_core,
                1 << 20,
            ));
            let cached = (t.decision_cache.sampled_cache_size
                + t.decision_cache.non_sampled_cache_size) as u64;
            items.push(fixed(
                format!("{name} trace table and decision cache"),
                SAMPLER_BYTES_PER_TRACE * t.max_traces_per_core as u64
                    + SAMPLER_BYTES_PER_CACHED_ID * cached,
            ));
        }
    }
    if config.engine.durability == Durability::AckAfterSync {
        // One group commit being written while the next one gathers.
        items.push(fixed(
            "ingest log writes".into(),
            2 * (config.engine.wal.group_commit_bytes + max_recv),
        ));
    }
    if let Some(kafka) = &config.receivers.kafka {
        let get = |key: &str, default: u64| {
            kafka
                .librdkafka
                .get(key)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(default)
        };
        items.push(fixed(
            "kafka consumer (queued.max.messages.kbytes + fetch.max.bytes)".into(),
            get("queued.max.messages.kbytes", KAFKA_QUEUED_KBYTES) * 1024
                + get("fetch.max.bytes", KAFKA_FETCH_MAX_BYTES),
        ));
    }
    items
}

/// Copies of a batch an exporter of kind `kind` makes while sending it, besides the batch: its
/// encoded form, in multiples of the batch (estimates: OTLP/JSON lines are written from decoded
/// messages, the remote-write and Loki conversions are about three times the protobuf,
/// compressed OTLP and Kafka messages at most its size).
fn send_copies(kind: &str) -> u64 {
    match kind {
        // Decoded into messages (about twice the protobuf), then written as JSON (about three
        // times).
        "file" => 5,
        "prometheusremotewrite" | "loki" => 3,
        "blackhole" => 0,
        _ => 1,
    }
}

/// Sizes for `items` that add up to at most `share`: each part gets `min(demand, level)` (and at
/// least its minimum) for the highest `level` that fits, so a part with a modest demand (bytes in
/// flight, a queue) is not starved by one whose demand is nominally huge (the mesh's slots,
/// thousands of connections at their worst case).
fn scale(items: &[Item], share: u64) -> Vec<u64> {
    let size = |i: &Item, level: u64| level.clamp(i.minimum, i.demand.max(i.minimum));
    let total = |level: u64| -> u64 { items.iter().map(|i| size(i, level)).sum() };
    let top = items.iter().map(|i| i.demand).max().unwrap_or(0);
    if total(top) <= share {
        return items.iter().map(|i| i.demand).collect();
    }
    let (mut low, mut high) = (0u64, top);
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        if total(mid) <= share {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    items.iter().map(|i| size(i, low)).collect()
}

fn queue_mut(kind: &mut ExporterKind) -> Option<&mut shardtel_config::QueueConfig> {
    match kind {
        ExporterKind::Otlp(c) => Some(&mut c.queue),
        ExporterKind::OtlpHttp(c) => Some(&mut c.queue),
        ExporterKind::File(c) => Some(&mut c.queue),
        ExporterKind::Kafka(c) => Some(&mut c.queue),
        ExporterKind::PrometheusRemoteWrite(c) => Some(&mut c.queue),
        ExporterKind::Loki(c) => Some(&mut c.queue),
        ExporterKind::Blackhole => None,
    }
}

#[derive(Debug)]
enum Part {
    Inflight,
    /// Bytes one slot of every channel into a core may hold.
    Mesh(u64),
    /// An in-memory export queue.
    Queue(String),
    /// What the disk queues hold in memory (appends not yet durable, caches); the largest
    /// `batch.max_bytes` among them.
    DiskQueues(u64),
    Sampler(String),
    /// Served connections, at their worst case each.
    Connections,
    /// Bounded by settings the limiter does not change.
    Fixed(String),
}

impl Item {
    /// The least memory bound one disk queue can be given (one batch).
    fn minimum_per_queue(&self) -> usize {
        match self.part {
            Part::DiskQueues(batch) => batch as usize,
            _ => 0,
        }
    }
}

impl Part {
    fn name(&self) -> String {
        match self {
            Part::Inflight => "requests in flight".into(),
            Part::Mesh(_) => "mesh channels".into(),
            Part::Queue(n) => format!("exporter {n} queue"),
            Part::DiskQueues(_) => "disk queues in memory".into(),
            Part::Sampler(n) => format!("{n} buffers"),
            Part::Connections => "connections".into(),
            Part::Fixed(what) => what.clone(),
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::receivers::otlp::connections::{self, Protocol};

    /// `fit` with the connection bounds the OTLP receivers report for `config`.
    fn fit(config: &mut Config, cores: usize, budget: u64) -> Result<Budget, MemoryLimiterError> {
        let bounds = config
            .receivers
            .otlp
            .as_ref()
            .map(|otlp| connections::bounds(otlp, cores));
        super::fit(config, cores, budget, bounds.as_ref())
    }

    pub(crate) fn config(text: &str) -> Config {
        Config::from_str_with_env(text, "t.toml", &|_| None).unwrap()
    }

    pub(crate) const BASE: &str = r#"
[engine]
cores = [0]
channel_capacity = 1024
[receivers.otlp]
max_recv_msg_size = "1MiB"
max_concurrent_streams = 16
max_connections = 64
[processors.memory_limiter]
limit_mib = 400
spike_limit_mib = 100
[processors.tail_sampling]
max_buffered_bytes_per_core = "256MiB"
policies = [{ name = "all", type = "always_sample" }]
[exporters.f]
type = "file"
path = "/tmp/x.jsonl"
queue = { max_bytes = "64MiB" }
[pipelines.traces]
receivers = ["otlp"]
processors = ["memory_limiter", "tail_sampling"]
exporters = ["f"]
"#;

    fn total(budget: &Budget) -> u64 {
        budget.parts.iter().map(|(_, b)| b).sum()
    }

    #[test]
    fn buffers_that_fit_are_left_alone() {
        let mut c = config(BASE);
        let before = c.clone();
        // On one core with a 1 GiB budget everything fits: requests in flight 64 MiB, 64
        // connections of 1.3 MiB, the disk queue's 72 MiB in memory, the sampler's 256 MiB, and
        // the fixed parts.
        let budget = fit(&mut c, 1, 1 << 30).unwrap();
        assert!(budget.changes.is_empty(), "{:?}", budget.changes);
        assert_eq!(c, before);
        assert_eq!(budget.max_inflight_bytes, 64 << 20);
        assert_eq!(
            budget.disk_queue_memory_bytes,
            DiskQueueSettings::MEMORY_BYTES
        );
        let part = |what: &str| budget.parts.iter().find(|(w, _)| w == what).unwrap().1;
        assert_eq!(
            part("connections"),
            64 * connections::worst_case_bytes(Protocol::Grpc, 16) as u64
        );
        assert_eq!(part("exporter f sending"), 6 * (4 << 20));
        assert_eq!(
            part("tail_sampling trace table and decision cache"),
            170 * 100_000 + 60 * 200_000
        );
        assert!(total(&budget) <= 1 << 30);
    }

    #[test]
    fn buffers_shrink_to_the_share() {
        let mut c = config(BASE);
        let budget = fit(&mut c, 2, 300 << 20).unwrap();
        assert_eq!(budget.share, 150 << 20);
        assert!(total(&budget) <= budget.share, "{:?}", budget.parts);
        let ProcessorConfig::TailSampling(t) = &c.processors["tail_sampling"] else {
            panic!()
        };
        let ExporterKind::File(f) = &c.exporters["f"].kind else {
            panic!()
        };
        let otlp = c.receivers.otlp.as_ref().unwrap();
        // What the parts were fitted to is what the settings now allow.
        let part = |what: &str| budget.parts.iter().find(|(w, _)| w == what).unwrap().1;
        assert!(c.engine.channel_capacity >= 1 && c.engine.channel_capacity < 1024);
        assert!(c.engine.channel_capacity as u64 * (1 << 20) <= part("mesh channels"));
        assert_eq!(t.max_buffered_bytes_per_core, part("tail_sampling buffers"));
        assert_eq!(otlp.max_connections, 64);
        assert_eq!(budget.connection_bytes as u64, part("connections"));
        assert!(part("connections") < 32 * connections::per_connection_bytes(otlp) as u64);
        // The disk queue's bound on disk stays; what it holds in memory shrinks.
        assert_eq!(f.queue.max_bytes, 64 << 20);
        assert!(budget.disk_queue_memory_bytes >= f.batch.max_bytes);
        assert!(
            (budget.disk_queue_memory_bytes + budget.disk_queue_cache_bytes) as u64
                <= part("disk queues in memory")
        );
        assert_eq!(budget.changes.len(), 5, "{:?}", budget.changes);
    }

    #[test]
    fn memory_queues_shrink_and_fixed_parts_stay() {
        let mut c = config(&BASE.replace("[engine]", "[engine]\ndurability = \"none\""));
        let budget = fit(&mut c, 2, 300 << 20).unwrap();
        assert!(total(&budget) <= budget.share, "{:?}", budget.parts);
        let ExporterKind::File(f) = &c.exporters["f"].kind else {
            panic!()
        };
        assert!(f.queue.max_bytes < 64 << 20 && f.queue.max_bytes >= f.batch.max_bytes);
        let part = |what: &str| budget.parts.iter().find(|(w, _)| w == what).map(|p| p.1);
        assert_eq!(part("exporter f sending"), Some(5 * (4 << 20)));
        assert_eq!(part("ingest log writes"), None);
        assert_eq!(part("disk queues in memory"), None);
    }

    #[test]
    fn minimums_that_do_not_fit_are_an_error() {
        let mut c = config(BASE);
        let e = fit(&mut c, 2, 8 << 20).unwrap_err().to_string();
        assert!(e.contains("less than the"), "{e}");
        assert!(e.contains("connections"), "{e}");
    }
}
