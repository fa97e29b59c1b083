//! The process's memory state: a monitor thread measures the resident set every
//! `check_interval` and sets one flag the cores read; while it is set, every reactor and the
//! monitor return their freed memory to the OS.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shardtel_config::MemoryLimiterConfig;

use super::MemoryLimiterError;

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
    pub(super) fn record(&self, rss: u64) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
