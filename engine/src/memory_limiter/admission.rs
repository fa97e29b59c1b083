//! The memory limiter as one core sees it: the admission check the intake asks before it
//! takes a request (answered with a [`Pressure`], never with a request error), its refusal
//! counters, and their metric families.

use std::sync::Arc;

use shardtel_config::{Config, ProcessorConfig};

use super::MemoryGauge;
use crate::telemetry::{Exposition, Families};

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
        let i = signal.index();
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
    use crate::memory_limiter::budget::tests::{config, BASE};

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
