//! The `memory_limiter` processor: a process-wide memory limit, enforced at admission, and
//! per-core buffer bounds that fit the limit.
//!
//! - **Bounding.** At start-up, [`setup`] measures the process's baseline (its resident set
//!   before the cores start, plus [`CORE_RUNTIME_BYTES`] per core) and [`fit`] shrinks every
//!   per-core buffer — requests in flight, the mesh channels into the core, the connections it
//!   serves at their worst case, its export queues (a disk queue's memory part only), its tail
//!   sampler — so that they fit an equal share of [`buffer_budget`] (the limit less half the
//!   spike limit and the baseline), next to the parts it cannot shrink (the sampler's table,
//!   connections being refused, the request being decoded, batches being sent, ingest log
//!   writes, the Kafka consumer). Each change is logged; start-up fails when the minimums do
//!   not fit.
//! - **Refusing.** Receivers of the pipelines that list the processor refuse requests with a
//!   retryable error (gRPC `UNAVAILABLE`, HTTP 429 with `Retry-After`), counted per core, signal
//!   and reason, when the receiving core's buffered data reached its share of the soft limit
//!   ([`Pressure::Buffered`]: exact, per core, no shared state), or when the resident set was
//!   at or above the soft limit at the last check ([`Pressure::Resident`]). Kafka consumers
//!   pause (the message is retried).
//! - **Measuring.** A plain thread (never a reactor) reads the resident set from
//!   `/proc/self/status` every `check_interval` and publishes it with one flag; cores read the
//!   flag with a relaxed load. While the flag is set, every reactor and the monitor thread give
//!   their freed memory back to the OS ([`return_freed_memory`]), so that the next measurement
//!   sees what is held rather than what mimalloc kept for reuse.
//!
//! It imports no receiver and no pipeline: what the OTLP connections may hold arrives as data
//! ([`ConnectionBounds`]), a refusal leaves as a [`Pressure`] (the receivers' intake answers it
//! as a retryable error), and its counters leave as metric families.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shardtel_config::{
    Config, Durability, ExporterKind, MemoryLimiterConfig, ProcessorConfig, QueueStorage,
};
use shardtel_sinks::DiskQueueSettings;

use crate::telemetry::{signal_index, Exposition, Families};

/// Why the memory limiter could not start.
#[derive(Debug, thiserror::Error)]
pub enum MemoryLimiterError {
    /// The monitor thread could not be spawned.
    #[error("memory_limiter: failed to start its thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The soft limit leaves nothing for buffers.
    #[error(
        "memory_limiter: the soft limit {} MiB is below the process's own baseline of about \
         {} MiB ({} MiB now, {} MiB per core once running); raise limit_mib",
        .soft_limit >> 20,
        .baseline.div_ceil(1 << 20),
        .resident >> 20,
        CORE_RUNTIME_BYTES >> 20
    )]
    BelowBaseline {
        /// The soft limit, bytes.
        soft_limit: u64,
        /// The baseline: resident now plus [`CORE_RUNTIME_BYTES`] per core, bytes.
        baseline: u64,
        /// Resident now, bytes.
        resident: u64,
    },
    /// The parts of a core's memory that cannot shrink further do not fit its share.
    #[error(
        "memory_limiter: each core's share of the memory for buffers (the limit less half \
         the spike limit and the baseline) is {} MiB ({} MiB / {cores} cores), less than the \
         {} MiB its buffers need at least ({}); raise limit_mib, lower max_recv_msg_size, \
         batch.max_bytes, max_concurrent_streams or the tail sampler's table and cache \
         sizes, or run on fewer cores",
        .share >> 20,
        .budget >> 20,
        .minimums.iter().map(|(_, b)| b).sum::<u64>().div_ceil(1 << 20),
        describe_parts(.minimums)
    )]
    DoesNotFit {
        /// Each core's share, bytes.
        share: u64,
        /// What all cores' buffers may hold, bytes.
        budget: u64,
        /// Cores.
        cores: usize,
        /// Each part's least size: (what, bytes).
        minimums: Vec<(String, u64)>,
    },
}

/// `what N KiB, ...`
fn describe_parts(parts: &[(String, u64)]) -> String {
    parts
        .iter()
        .map(|(what, bytes)| format!("{what} {} KiB", bytes >> 10))
        .collect::<Vec<_>>()
        .join(", ")
}

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

/// The process's memory state, written by the monitor thread, read by every core.
#[derive(Debug)]
pub struct MemoryGauge {
    limited: AtomicBool,
    rss: AtomicU64,
    /// The hard limit, in bytes.
    pub hard_limit: u64,
    /// The soft limit (hard − spike), in bytes.
    pub soft_limit: u64,
    /// How often the resident set is measured.
    pub check_interval: Duration,
}

impl MemoryGauge {
    /// True while the resident set is at or above the soft limit.
    #[inline]
    pub fn limited(&self) -> bool {
        self.limited.load(Ordering::Relaxed)
    }

    /// The last measured resident set size, in bytes.
    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// A gauge with fixed limits that never measures (tests).
    pub fn fixed(hard_limit: u64, soft_limit: u64, limited: bool) -> MemoryGauge {
        MemoryGauge {
            limited: AtomicBool::new(limited),
            rss: AtomicU64::new(0),
            hard_limit,
            soft_limit,
            check_interval: MemoryLimiterConfig::DEFAULT_CHECK_INTERVAL,
        }
    }

    /// Records a measurement; returns whether the state changed.
    fn record(&self, rss: u64) -> bool {
        self.rss.store(rss, Ordering::Relaxed);
        let limited = rss >= self.soft_limit;
        self.limited.swap(limited, Ordering::Relaxed) != limited
    }
}

/// The resident set size of this process (`VmRSS` of `/proc/self/status`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Memory available to the process: the machine's (`MemTotal`), or its cgroup's limit
/// (`memory.max`, cgroup v2) when lower.
pub fn available_memory() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(u64::MAX, |kb| kb * 1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    total.min(cgroup)
}

/// Starts the monitor thread for `config`; returns the gauge the cores read.
pub fn start(config: &MemoryLimiterConfig) -> Result<Arc<MemoryGauge>, MemoryLimiterError> {
    let (hard, soft) = config.limits(available_memory());
    let gauge = Arc::new(MemoryGauge {
        check_interval: config.check_interval,
        ..MemoryGauge::fixed(hard, soft, false)
    });
    if let Some(rss) = resident_bytes() {
        gauge.record(rss);
    }
    let interval = config.check_interval;
    let g = gauge.clone();
    std::thread::Builder::new()
        .name("shardtel-memory".into())
        .spawn(move || monitor(&g, interval))
        .map_err(MemoryLimiterError::Thread)?;
    Ok(gauge)
}

/// How often the monitor logs the limiter turning on or off (the resident set can hover at the
/// soft limit, switching every check).
const LOG_EVERY: Duration = Duration::from_secs(10);

fn monitor(gauge: &MemoryGauge, interval: Duration) {
    let mut logged: Option<std::time::Instant> = None;
    let mut unlogged = 0u64;
    loop {
        std::thread::sleep(interval);
        if gauge.limited() {
            // Program-wide part: free segments cached by the allocator's arenas.
            return_freed_memory();
        }
        let Some(rss) = resident_bytes() else {
            continue;
        };
        if !gauge.record(rss) {
            continue;
        }
        if logged.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            unlogged += 1;
            continue;
        }
        logged = Some(std::time::Instant::now());
        let since = match std::mem::take(&mut unlogged) {
            0 => String::new(),
            n => format!(" ({n} changes since the last line)"),
        };
        if gauge.limited() {
            log::warn!(
                "memory_limiter: resident memory {} MiB reached the soft limit {} MiB; refusing new data{since}",
                rss >> 20,
                gauge.soft_limit >> 20
            );
        } else {
            log::info!(
                "memory_limiter: resident memory {} MiB is below the soft limit {} MiB again; accepting data{since}",
                rss >> 20,
                gauge.soft_limit >> 20
            );
        }
    }
}

/// Returns the calling thread's freed memory to the OS: mimalloc keeps freed pages for reuse
/// and purges them only when the same thread allocates again, so an idle (or refusing) reactor
/// would keep the resident set above the soft limit for good after a burst.
pub fn return_freed_memory() {
    // SAFETY: `mi_collect` takes no pointer; it frees the calling thread's empty pages and
    // purges (decommits) free memory of its segments and of the shared arenas, which mimalloc
    // synchronises itself. No live allocation is touched.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

/// Runs on every core while a memory limiter is configured: every check interval in which the
/// process is above its soft limit, returns the core's freed memory to the OS
/// ([`return_freed_memory`]), so that the resident set measured next reflects what is held.
pub async fn return_freed_memory_while_limited(gauge: Arc<MemoryGauge>) {
    loop {
        glommio::timer::sleep(gauge.check_interval).await;
        if gauge.limited() {
            return_freed_memory();
        }
    }
}

/// The memory limiter the pipelines list (validation allows one), if any.
pub fn configured(config: &Config) -> Option<&MemoryLimiterConfig> {
    config.pipelines.iter().find_map(|(_, p)| {
        p.processors
            .iter()
            .find_map(|n| match config.processors.get(n) {
                Some(ProcessorConfig::MemoryLimiter(m)) => Some(m),
                _ => None,
            })
    })
}

/// Request bytes a core may have in flight when no memory limiter bounds it.
pub fn default_inflight_bytes(max_recv_msg_size: usize) -> usize {
    (max_recv_msg_size * 16).max(64 << 20)
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

/// What every core gets when a memory limiter is configured.
#[derive(Clone, Debug)]
pub struct MemorySetup {
    /// The shared gauge.
    pub gauge: Arc<MemoryGauge>,
    /// Request bytes in flight per core, fitted to the core's share.
    pub max_inflight_bytes: usize,
    /// Bytes each disk queue holds in memory until durable, fitted to the core's share.
    pub disk_queue_memory_bytes: usize,
    /// Bytes of recent commits each disk queue caches, fitted to the core's share.
    pub disk_queue_cache_bytes: usize,
    /// Bytes the connections a core serves may hold together at their worst case.
    pub connection_bytes: usize,
    /// A core refuses (429) while its buffered data (requests in flight, export queues in
    /// memory, tail sampler) is at or above this many bytes: the soft limit's share of what
    /// those buffers were fitted to.
    pub buffered_limit: u64,
}

/// What the buffers of all cores may hold together: the hard limit less the baseline and less
/// half the spike limit, which is left for the allocator's slack. Buffers full to this bound put
/// the process half-way between the soft and the hard limit: above the soft limit, so receivers
/// refuse while the buffers drain, and below the hard limit.
pub fn buffer_budget(gauge: &MemoryGauge, baseline: u64) -> u64 {
    let spike = gauge.hard_limit - gauge.soft_limit;
    (gauge.hard_limit - spike / 2).saturating_sub(baseline)
}

/// Memory a core's reactor takes besides buffered data once it runs: glommio's 10 MiB of
/// registered I/O memory, io_uring rings, exporter clients, write-ahead log state (about 20 MiB
/// measured here). The baseline measured before the cores start does not include it.
pub const CORE_RUNTIME_BYTES: u64 = 24 << 20;

/// Starts the memory limiter the pipelines list, if any: the monitor thread, and `config`'s
/// per-core buffers fitted to the soft limit less the process's baseline (each change logged).
/// `connections`: what the OTLP receivers' connections hold, when there are any.
pub fn setup(
    mut config: Config,
    cores: usize,
    connections: Option<&ConnectionBounds>,
) -> Result<(Config, Option<MemorySetup>), MemoryLimiterError> {
    let Some(limiter) = configured(&config).copied() else {
        return Ok((config, None));
    };
    let gauge = start(&limiter)?;
    let baseline = resident_bytes().unwrap_or(0) + cores as u64 * CORE_RUNTIME_BYTES;
    if baseline >= gauge.soft_limit {
        return Err(MemoryLimiterError::BelowBaseline {
            soft_limit: gauge.soft_limit,
            baseline,
            resident: resident_bytes().unwrap_or(0),
        });
    }
    let total = buffer_budget(&gauge, baseline);
    let budget = fit(&mut config, cores, total, connections)?;
    // Buffers full to `total` would put the resident set half-way into the spike limit; the
    // soft limit's share of them is where a core starts refusing.
    let buffered_limit = (budget.buffered as u128 * (gauge.soft_limit - baseline) as u128
        / total.max(1) as u128) as u64;
    log::info!(
        "memory_limiter: limit {} MiB, soft limit {} MiB, baseline about {} MiB, {} MiB of buffers per core ({})",
        gauge.hard_limit >> 20,
        gauge.soft_limit >> 20,
        baseline >> 20,
        budget.share >> 20,
        describe_parts(&budget.parts)
    );
    for change in &budget.changes {
        log::info!("memory_limiter: fitted to the per-core share: {change}");
    }
    log::info!(
        "memory_limiter: a core refuses while its buffered data (requests in flight, export queues in memory, tail sampler) is at or above {} KiB of the {} KiB they may hold",
        buffered_limit >> 10,
        budget.buffered >> 10
    );
    Ok((
        config,
        Some(MemorySetup {
            gauge,
            max_inflight_bytes: budget.max_inflight_bytes,
            disk_queue_memory_bytes: budget.disk_queue_memory_bytes,
            disk_queue_cache_bytes: budget.disk_queue_cache_bytes,
            connection_bytes: budget.connection_bytes,
            buffered_limit,
        }),
    ))
}

/// Why the memory limiter refused a request (the `reason` label of its refusal counter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pressure {
    /// The process's resident set is at or above the soft limit.
    Resident = 0,
    /// This core's buffered data reached its share of the soft limit.
    Buffered = 1,
}

/// The memory limiter as one core sees it: the shared gauge, which signals it guards, its
/// buffered-data threshold, and this core's refusal counters.
#[derive(Debug)]
pub struct CoreLimiter {
    gauge: Arc<MemoryGauge>,
    signals: [bool; 3],
    buffered_limit: u64,
    refused: [[std::cell::Cell<u64>; 3]; 2],
}

impl CoreLimiter {
    /// A limiter for the signals whose pipelines list a memory limiter; the core refuses while
    /// its buffered data is at or above `buffered_limit` bytes (see [`MemorySetup`]).
    pub fn new(gauge: Arc<MemoryGauge>, config: &Config, buffered_limit: u64) -> CoreLimiter {
        let mut signals = [false; 3];
        for (signal, p) in config.pipelines.iter() {
            let listed = p.processors.iter().any(|n| {
                matches!(
                    config.processors.get(n),
                    Some(ProcessorConfig::MemoryLimiter(_))
                )
            });
            signals[signal as usize] = listed;
        }
        CoreLimiter {
            gauge,
            signals,
            buffered_limit,
            refused: Default::default(),
        }
    }

    /// `Err` (and counted) when `signal` must be refused now: the process is above its soft
    /// limit, or this core's `buffered` data (computed only when needed) reached its threshold.
    #[inline]
    pub fn check(
        &self,
        signal: shardtel_protocol::Signal,
        buffered: impl FnOnce() -> u64,
    ) -> Result<(), Pressure> {
        let i = signal_index(signal);
        if !self.signals[i] {
            return Ok(());
        }
        let pressure = if self.gauge.limited() {
            Pressure::Resident
        } else if buffered() >= self.buffered_limit {
            Pressure::Buffered
        } else {
            return Ok(());
        };
        let c = &self.refused[pressure as usize][i];
        c.set(c.get() + 1);
        Err(pressure)
    }

    /// Like [`CoreLimiter::check`], on the resident set only (for requests already read).
    #[inline]
    pub fn check_resident(&self, signal: shardtel_protocol::Signal) -> Result<(), Pressure> {
        self.check(signal, || 0)
    }

    /// The shared gauge.
    pub fn gauge(&self) -> Arc<MemoryGauge> {
        self.gauge.clone()
    }

    /// A snapshot for telemetry.
    pub fn snapshot(&self) -> MemorySnapshot {
        let counts = |r: usize| std::array::from_fn(|i| self.refused[r][i].get());
        MemorySnapshot {
            rss: self.gauge.rss(),
            soft_limit: self.gauge.soft_limit,
            hard_limit: self.gauge.hard_limit,
            limited: self.gauge.limited(),
            buffered_limit: self.buffered_limit,
            refused_requests: [counts(0), counts(1)],
        }
    }
}

/// What a core publishes about the memory limiter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemorySnapshot {
    /// Resident set size, bytes (process-wide).
    pub rss: u64,
    /// Soft limit, bytes.
    pub soft_limit: u64,
    /// Hard limit, bytes.
    pub hard_limit: u64,
    /// Refusing now (resident set above the soft limit).
    pub limited: bool,
    /// This core's buffered-data threshold, bytes.
    pub buffered_limit: u64,
    /// Requests this core refused, `[reason][signal]`: reasons as [`Pressure`], signals
    /// traces, metrics, logs.
    pub refused_requests: [[u64; 3]; 2],
}

impl Families for MemorySnapshot {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        let Some((_, first)) = cores.first() else {
            return;
        };
        for (name, help, v) in [
            (
                "shardtel_memory_limiter_resident_bytes",
                "Resident memory of the process at the last check.",
                first.rss,
            ),
            (
                "shardtel_memory_limiter_soft_limit_bytes",
                "Soft limit (limit - spike limit): above it receivers refuse data.",
                first.soft_limit,
            ),
            (
                "shardtel_memory_limiter_hard_limit_bytes",
                "The configured limit.",
                first.hard_limit,
            ),
            (
                "shardtel_memory_limiter_limited",
                "1 while the resident memory is above the soft limit (receivers refuse), else 0.",
                u64::from(first.limited),
            ),
        ] {
            out.gauge(name, help).sample(&[], v);
        }
        let limit = out.gauge(
            "shardtel_memory_limiter_buffered_limit_bytes",
            "Buffered data (requests in flight, export queues in memory, tail sampler) at which a core refuses.",
        );
        for (core, s) in cores {
            limit.sample(&[("core", core)], s.buffered_limit);
        }
        let refused = out.counter(
            "shardtel_memory_limiter_refused_requests_total",
            "Requests refused because memory was above the soft limit (retryable: gRPC UNAVAILABLE, HTTP 429); reason resident (the process's resident set) or buffered (the core's buffered data).",
        );
        for (core, s) in cores {
            for (r, reason) in ["resident", "buffered"].iter().enumerate() {
                for (i, signal) in ["traces", "metrics", "logs"].iter().enumerate() {
                    refused.sample(
                        &[("signal", signal), ("reason", reason), ("core", core)],
                        s.refused_requests[r][i],
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
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

    fn config(text: &str) -> Config {
        Config::from_str_with_env(text, "t.toml", &|_| None).unwrap()
    }

    const BASE: &str = r#"
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

    #[test]
    fn gauge_flags_the_soft_limit() {
        let g = MemoryGauge::fixed(100, 80, false);
        assert!(!g.record(50));
        assert!(!g.limited());
        assert!(g.record(80));
        assert!(g.limited());
        assert!(!g.record(90));
        assert!(g.record(79));
        assert!(!g.limited());
        assert!(resident_bytes().unwrap() > 0);
        assert!(available_memory() > 0);
    }

    #[test]
    fn refuses_only_guarded_signals_while_limited() {
        let c = config(BASE);
        let gauge = Arc::new(MemoryGauge::fixed(100, 80, false));
        let l = CoreLimiter::new(gauge.clone(), &c, 1000);
        use shardtel_protocol::Signal;
        assert!(l.check(Signal::Traces, || 999).is_ok());
        assert!(matches!(
            l.check(Signal::Traces, || 1000),
            Err(Pressure::Buffered)
        ));
        assert!(l.check_resident(Signal::Traces).is_ok());
        gauge.record(90);
        assert!(matches!(
            l.check_resident(Signal::Traces),
            Err(Pressure::Resident)
        ));
        assert!(l.check(Signal::Logs, || 5000).is_ok());
        assert_eq!(l.snapshot().refused_requests, [[1, 0, 0], [1, 0, 0]]);
        let mut out = Exposition::default();
        MemorySnapshot::families(&[(0, &l.snapshot())], &mut out);
        let text = out.render();
        assert!(text.contains(
            "shardtel_memory_limiter_refused_requests_total{signal=\"traces\",reason=\"buffered\",core=\"0\"} 1"
        ));
    }
}
