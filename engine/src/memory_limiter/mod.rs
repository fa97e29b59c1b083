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

mod admission;
mod budget;
mod gauge;

use std::sync::Arc;

use shardtel_config::{Config, MemoryLimiterConfig, ProcessorConfig};

pub use admission::{CoreLimiter, MemorySnapshot, Pressure};
pub use budget::{fit, Budget, ConnectionBounds};
pub use gauge::{
    available_memory, resident_bytes, return_freed_memory, return_freed_memory_while_limited,
    start, MemoryGauge,
};

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
