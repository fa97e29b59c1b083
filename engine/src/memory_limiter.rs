//! The `memory_limiter` processor: a process-wide memory limit, enforced at admission, and
//! per-core buffer bounds that fit the limit.
//!
//! - **Measuring.** A plain thread (never a reactor) reads the process's resident set size from
//!   `/proc/self/status` every `check_interval` and publishes it with one flag: "above the soft
//!   limit". It is the only writer; cores read the flag with a relaxed load.
//! - **Refusing.** While the flag is set, receivers of the pipelines that list the processor
//!   refuse requests with a retryable error (gRPC `UNAVAILABLE`, HTTP 429 with `Retry-After`),
//!   counted per core and signal. Kafka consumers pause (the message is retried).
//! - **Bounding.** Soft limit = limit − spike limit; each core's share is soft limit / cores.
//!   At start-up, [`fit`] shrinks each core's buffers — request bytes in flight, the mesh
//!   channels into the core, its export queues, its tail sampler — so that together they fit
//!   the share, logging each change, or refuses to start when even their minimums do not fit.
//!   The spike limit is the headroom for what is not buffered data: the process's baseline,
//!   requests being decoded, allocator slack.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shardtel_config::{Config, ExporterKind, MemoryLimiterConfig, ProcessorConfig};

/// The process's memory state, written by the monitor thread, read by every core.
#[derive(Debug)]
pub struct MemoryGauge {
    limited: AtomicBool,
    rss: AtomicU64,
    /// The hard limit, in bytes.
    pub hard_limit: u64,
    /// The soft limit (hard − spike), in bytes.
    pub soft_limit: u64,
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
pub fn start(config: &MemoryLimiterConfig) -> Result<Arc<MemoryGauge>, String> {
    let (hard, soft) = config.limits(available_memory());
    let gauge = Arc::new(MemoryGauge::fixed(hard, soft, false));
    if let Some(rss) = resident_bytes() {
        gauge.record(rss);
    }
    let interval = config.check_interval;
    let g = gauge.clone();
    std::thread::Builder::new()
        .name("shardtel-memory".into())
        .spawn(move || monitor(&g, interval))
        .map_err(|e| format!("memory_limiter: failed to start its thread: {e}"))?;
    Ok(gauge)
}

fn monitor(gauge: &MemoryGauge, interval: Duration) {
    loop {
        std::thread::sleep(interval);
        let Some(rss) = resident_bytes() else {
            continue;
        };
        if gauge.record(rss) {
            if gauge.limited() {
                log::warn!(
                    "memory_limiter: resident memory {} MiB reached the soft limit {} MiB; refusing new data",
                    rss >> 20,
                    gauge.soft_limit >> 20
                );
            } else {
                log::info!(
                    "memory_limiter: resident memory {} MiB is below the soft limit {} MiB again; accepting data",
                    rss >> 20,
                    gauge.soft_limit >> 20
                );
            }
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
    /// Each core's share of the soft limit, in bytes.
    pub share: u64,
    /// Request bytes in flight per core.
    pub max_inflight_bytes: usize,
    /// One line per value changed, for the log.
    pub changes: Vec<String>,
}

/// Shrinks the per-core buffers of `config` to fit `soft_limit / cores` per core (see the
/// module docs). Fails when their minimums do not fit.
pub fn fit(config: &mut Config, cores: usize, soft_limit: u64) -> Result<Budget, String> {
    let share = soft_limit / cores.max(1) as u64;
    let max_recv = config
        .receivers
        .otlp
        .as_ref()
        .map_or(4 << 20, |o| o.max_recv_msg_size) as u64;
    // (what, demand, minimum)
    let mut items: Vec<(Part, u64, u64)> = Vec::new();
    items.push((
        Part::Inflight,
        default_inflight_bytes(max_recv as usize) as u64,
        2 * max_recv,
    ));
    if cores > 1 {
        let per_slot = (cores as u64 - 1) * max_recv;
        items.push((
            Part::Mesh(per_slot),
            config.engine.channel_capacity as u64 * per_slot,
            per_slot,
        ));
    }
    let mut used: Vec<&String> = config
        .pipelines
        .iter()
        .flat_map(|(_, p)| p.exporters.iter())
        .collect();
    used.sort();
    used.dedup();
    for name in used {
        if let Some(e) = config.exporters.get(name) {
            if let (Some(q), Some(b)) = (e.kind.queue(), e.kind.batch()) {
                items.push((
                    Part::Queue(name.clone()),
                    q.max_bytes as u64,
                    b.max_bytes as u64,
                ));
            }
        }
    }
    for (name, p) in &config.processors {
        let listed = config
            .pipelines
            .traces
            .as_ref()
            .is_some_and(|t| t.processors.contains(name));
        if let (ProcessorConfig::TailSampling(t), true) = (p, listed) {
            items.push((
                Part::Sampler(name.clone()),
                t.max_buffered_bytes_per_core,
                1 << 20,
            ));
        }
    }
    let minimum: u64 = items.iter().map(|(_, _, m)| m).sum();
    if minimum > share {
        return Err(format!(
            "memory_limiter: each core's share of the soft limit is {} MiB ({} MiB / {cores} cores), \
             less than the {} MiB its buffers need at least ({}); raise limit_mib, lower \
             max_recv_msg_size or batch.max_bytes, or run on fewer cores",
            share >> 20,
            soft_limit >> 20,
            minimum.div_ceil(1 << 20),
            items
                .iter()
                .map(|(p, _, m)| format!("{} {} KiB", p.name(), m >> 10))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let demand: u64 = items.iter().map(|(_, d, _)| d).sum();
    let mut sizes: Vec<u64> = items.iter().map(|(_, d, _)| *d).collect();
    if demand > share {
        // Scale down in proportion; parts that hit their minimum stay there and the rest
        // share what is left.
        let mut fixed = vec![false; items.len()];
        for _ in 0..items.len() + 1 {
            let fixed_sum: u64 = (0..items.len())
                .filter(|&i| fixed[i])
                .map(|i| items[i].2)
                .sum();
            let free_demand: u64 = (0..items.len())
                .filter(|&i| !fixed[i])
                .map(|i| items[i].1)
                .sum();
            let room = share.saturating_sub(fixed_sum);
            let mut again = false;
            for i in 0..items.len() {
                if fixed[i] {
                    sizes[i] = items[i].2;
                    continue;
                }
                let scaled =
                    (items[i].1 as u128 * room as u128 / free_demand.max(1) as u128) as u64;
                if scaled < items[i].2 {
                    fixed[i] = true;
                    again = true;
                }
                sizes[i] = scaled.max(items[i].2);
            }
            if !again {
                break;
            }
        }
    }
    let mut changes = Vec::new();
    let mut max_inflight_bytes = default_inflight_bytes(max_recv as usize);
    for ((part, demand, _), size) in items.iter().zip(sizes) {
        if size >= *demand {
            continue;
        }
        match part {
            Part::Inflight => {
                max_inflight_bytes = size as usize;
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
        }
    }
    Ok(Budget {
        share,
        max_inflight_bytes,
        changes,
    })
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
    Queue(String),
    Sampler(String),
}

impl Part {
    fn name(&self) -> String {
        match self {
            Part::Inflight => "requests in flight".into(),
            Part::Mesh(_) => "mesh channels".into(),
            Part::Queue(n) => format!("exporter {n} queue"),
            Part::Sampler(n) => format!("{n} buffers"),
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
}

/// Starts the memory limiter the pipelines list, if any: the monitor thread, and `config`'s
/// per-core buffers fitted to the limit (each change logged).
pub fn setup(mut config: Config, cores: usize) -> Result<(Config, Option<MemorySetup>), String> {
    let Some(limiter) = configured(&config).copied() else {
        return Ok((config, None));
    };
    let gauge = start(&limiter)?;
    let budget = fit(&mut config, cores, gauge.soft_limit)?;
    log::info!(
        "memory_limiter: limit {} MiB, soft limit {} MiB, {} MiB of buffers per core",
        gauge.hard_limit >> 20,
        gauge.soft_limit >> 20,
        budget.share >> 20
    );
    for change in &budget.changes {
        log::info!("memory_limiter: fitted to the per-core share: {change}");
    }
    Ok((
        config,
        Some(MemorySetup {
            gauge,
            max_inflight_bytes: budget.max_inflight_bytes,
        }),
    ))
}

/// The memory limiter as one core sees it: the shared gauge, which signals it guards, and
/// this core's refusal counters.
#[derive(Debug)]
pub struct CoreLimiter {
    gauge: Arc<MemoryGauge>,
    signals: [bool; 3],
    refused: [std::cell::Cell<u64>; 3],
}

impl CoreLimiter {
    /// A limiter for the signals whose pipelines list a memory limiter.
    pub fn new(gauge: Arc<MemoryGauge>, config: &Config) -> CoreLimiter {
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
            refused: Default::default(),
        }
    }

    /// `Err` (and counted) when `signal` must be refused now.
    #[inline]
    pub fn check(
        &self,
        signal: shardtel_protocol::Signal,
    ) -> Result<(), crate::ingest::IngestError> {
        let i = crate::telemetry::signal_index(signal);
        if self.signals[i] && self.gauge.limited() {
            self.refused[i].set(self.refused[i].get() + 1);
            return Err(crate::ingest::IngestError::MemoryLimited);
        }
        Ok(())
    }

    /// A snapshot for telemetry.
    pub fn snapshot(&self) -> MemorySnapshot {
        MemorySnapshot {
            rss: self.gauge.rss(),
            soft_limit: self.gauge.soft_limit,
            hard_limit: self.gauge.hard_limit,
            limited: self.gauge.limited(),
            refused_requests: [
                self.refused[0].get(),
                self.refused[1].get(),
                self.refused[2].get(),
            ],
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
    /// Refusing now.
    pub limited: bool,
    /// Requests this core refused, per signal (traces, metrics, logs).
    pub refused_requests: [u64; 3],
}

/// Renders the memory limiter series of every core that has one.
pub fn render(cores: &[(usize, &MemorySnapshot)], out: &mut String) {
    use std::fmt::Write as _;
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
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {v}");
    }
    let name = "shardtel_memory_limiter_refused_requests_total";
    let _ = writeln!(
        out,
        "# HELP {name} Requests refused because memory was above the soft limit (retryable: gRPC UNAVAILABLE, HTTP 429)."
    );
    let _ = writeln!(out, "# TYPE {name} counter");
    for (core, s) in cores {
        for (i, signal) in ["traces", "metrics", "logs"].iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}{{signal=\"{signal}\",core=\"{core}\"}} {}",
                s.refused_requests[i]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_str_with_env(text, "t.toml", &|_| None).unwrap()
    }

    const BASE: &str = r#"
[engine]
cores = [0]
channel_capacity = 1024
[receivers.otlp]
max_recv_msg_size = "1MiB"
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

    #[test]
    fn buffers_that_fit_are_left_alone() {
        let mut c = config(BASE);
        let before = c.clone();
        // inflight 64 + mesh 1023 + queue 64 + sampler 256 MiB on 2 cores would not fit 150 MiB;
        // on one core with a 1 GiB soft limit everything fits.
        let budget = fit(&mut c, 1, 1 << 30).unwrap();
        assert!(budget.changes.is_empty(), "{:?}", budget.changes);
        assert_eq!(c, before);
        assert_eq!(budget.max_inflight_bytes, 64 << 20);
    }

    #[test]
    fn buffers_shrink_to_the_share() {
        let mut c = config(BASE);
        let soft = 300u64 << 20;
        let budget = fit(&mut c, 2, soft).unwrap();
        assert_eq!(budget.share, 150 << 20);
        let ProcessorConfig::TailSampling(t) = &c.processors["tail_sampling"] else {
            panic!()
        };
        let ExporterKind::File(f) = &c.exporters["f"].kind else {
            panic!()
        };
        let mesh = c.engine.channel_capacity as u64 * (1 << 20);
        let total = budget.max_inflight_bytes as u64
            + mesh
            + f.queue.max_bytes as u64
            + t.max_buffered_bytes_per_core;
        assert!(total <= budget.share, "{total} > {}", budget.share);
        assert!(c.engine.channel_capacity >= 1 && c.engine.channel_capacity < 1024);
        assert!(f.queue.max_bytes >= f.batch.max_bytes);
        assert_eq!(budget.changes.len(), 4, "{:?}", budget.changes);
    }

    #[test]
    fn minimums_that_do_not_fit_are_an_error() {
        let mut c = config(BASE);
        let e = fit(&mut c, 2, 8 << 20).unwrap_err();
        assert!(e.contains("less than the"), "{e}");
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
        let l = CoreLimiter::new(gauge.clone(), &c);
        use shardtel_protocol::Signal;
        assert!(l.check(Signal::Traces).is_ok());
        gauge.record(90);
        assert!(matches!(
            l.check(Signal::Traces),
            Err(crate::ingest::IngestError::MemoryLimited)
        ));
        assert!(l.check(Signal::Logs).is_ok());
        assert_eq!(l.snapshot().refused_requests, [1, 0, 0]);
    }
}
