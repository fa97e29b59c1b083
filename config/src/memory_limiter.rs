//! `type = "memory_limiter"`: a process-wide memory limit, after the OpenTelemetry Collector's
//! memory_limiter processor.
//!
//! ```toml
//! [processors.memory_limiter]
//! check_interval = "1s"
//! limit_mib = 4000
//! spike_limit_mib = 800
//! ```
//!
//! Soft limit = limit − spike limit. Above the soft limit, receivers of the pipelines that list
//! the processor refuse new data with a retryable error. The engine also fits each core's
//! buffers (requests in flight, mesh, connections, export queues, sampler, ...) into the core's
//! share of the limit less half the spike limit and the process's baseline at start-up.

use std::time::Duration;

use crate::decode::{self, Decoder, Section};
use crate::error::ConfigErrorKind;

/// `type = "memory_limiter"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimiterConfig {
    /// How often the process's resident memory is measured. Default 1s.
    pub check_interval: Duration,
    /// The hard limit.
    pub limit: MemoryAmount,
    /// Headroom below the limit: soft limit = limit − spike. Default 20% of the limit.
    pub spike_limit: Option<MemoryAmount>,
}

/// An amount of memory: absolute, or a share of the machine's (or cgroup's) memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryAmount {
    /// `limit_mib` / `spike_limit_mib`.
    Mib(u64),
    /// `limit_percentage` / `spike_limit_percentage`: percent (1 to 100) of total memory.
    Percent(u32),
}

impl MemoryAmount {
    /// Bytes, with `total` the memory available to the process.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            MemoryAmount::Mib(m) => m << 20,
            MemoryAmount::Percent(p) => total / 100 * u64::from(p),
        }
    }
}

impl MemoryLimiterConfig {
    /// The keys `type = "memory_limiter"` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "type",
        "check_interval",
        "limit_mib",
        "spike_limit_mib",
        "limit_percentage",
        "spike_limit_percentage",
    ];
    /// Default `check_interval`.
    pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

    /// (hard, soft) limits in bytes, with `total` the memory available to the process.
    pub fn limits(&self, total: u64) -> (u64, u64) {
        let hard = self.limit.bytes(total);
        let spike = self
            .spike_limit
            .map_or(hard / 5, |s| s.bytes(total))
            .min(hard);
        (hard, hard - spike)
    }
}

pub(crate) fn decode_memory_limiter(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
) -> Option<MemoryLimiterConfig> {
    d.check_keys(s, MemoryLimiterConfig::KEYS);
    let check_interval = d.field_or(
        s,
        "check_interval",
        MemoryLimiterConfig::DEFAULT_CHECK_INTERVAL,
        |v| decode::min_duration(decode::duration(v)?, Duration::from_millis(10)),
    );
    let mib = |v: &toml::de::DeValue<'_>| decode::in_range(decode::count(v, u64::MAX)?, 1, 1 << 30);
    let percent =
        |v: &toml::de::DeValue<'_>| Ok(decode::in_range(decode::count(v, 100)?, 1, 100)? as u32);
    let (limit_key, spike_key, conflict): (&str, &str, &'static [&'static str]) =
        match (s.get("limit_mib"), s.get("limit_percentage")) {
            (Some(_), Some(v)) => {
                d.report(
                    s.key("limit_percentage"),
                    v.span(),
                    ConfigErrorKind::KeyConflict {
                        keys: &["limit_mib", "limit_percentage"],
                    },
                );
                return None;
            }
            (None, None) => {
                d.report_at_key(
                    s.path.clone(),
                    ConfigErrorKind::MissingOneOf {
                        keys: &["limit_mib", "limit_percentage"],
                    },
                );
                return None;
            }
            (Some(_), None) => (
                "limit_mib",
                "spike_limit_mib",
                &["limit_mib", "spike_limit_percentage"],
            ),
            (None, Some(_)) => (
                "limit_percentage",
                "spike_limit_percentage",
                &["limit_percentage", "spike_limit_mib"],
            ),
        };
    // A spike limit in the other unit than the limit.
    if let Some(v) = s.get(conflict[1]) {
        d.report(
            s.key(conflict[1]),
            v.span(),
            ConfigErrorKind::MixedMemoryUnits {
                limit: conflict[0],
                spike: conflict[1],
                use_instead: spike_key,
            },
        );
        return None;
    }
    let limit = if limit_key == "limit_mib" {
        d.field(s, limit_key, mib).map(MemoryAmount::Mib)
    } else {
        d.field(s, limit_key, percent).map(MemoryAmount::Percent)
    }?;
    let spike_limit = if s.get(spike_key).is_none() {
        None
    } else if spike_key == "spike_limit_mib" {
        Some(d.field(s, spike_key, mib).map(MemoryAmount::Mib)?)
    } else {
        Some(d.field(s, spike_key, percent).map(MemoryAmount::Percent)?)
    };
    if let Some(spike) = spike_limit {
        let below = match (limit, spike) {
            (MemoryAmount::Mib(l), MemoryAmount::Mib(s)) => s < l,
            (MemoryAmount::Percent(l), MemoryAmount::Percent(s)) => s < l,
            _ => true,
        };
        if !below {
            d.report_at_key(
                s.key(spike_key),
                ConfigErrorKind::SpikeNotBelowLimit {
                    spike: spike_key,
                    limit: limit_key,
                },
            );
            return None;
        }
    }
    Some(MemoryLimiterConfig {
        check_interval,
        limit,
        spike_limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, ProcessorConfig};

    fn load(text: &str) -> Result<Config, crate::ConfigErrors> {
        let base = crate::testing::pipeline_through("metrics", &["memory_limiter"]);
        crate::testing::load(&format!("{text}{base}"), &|_| None)
    }

    fn limiter(text: &str) -> MemoryLimiterConfig {
        match crate::testing::processor(load(text), "memory_limiter") {
            ProcessorConfig::MemoryLimiter(m) => m,
            other => panic!("{other:?}"),
        }
    }

    fn err(text: &str) -> String {
        crate::testing::problems(load(text))
    }

    #[test]
    fn limits_and_defaults() {
        let m = limiter("[processors.memory_limiter]\nlimit_mib = 1000\n");
        assert_eq!(m.check_interval, Duration::from_secs(1));
        assert_eq!(m.limits(0), (1000 << 20, 800 << 20));
        let m = limiter("[processors.memory_limiter]\ncheck_interval = \"100ms\"\nlimit_mib = 1000\nspike_limit_mib = 100\n");
        assert_eq!(m.limits(0), (1000 << 20, 900 << 20));
        let m = limiter(
            "[processors.memory_limiter]\nlimit_percentage = 50\nspike_limit_percentage = 10\n",
        );
        assert_eq!(m.limits(1000), (500, 400));
    }

    #[test]
    fn errors() {
        assert_eq!(
            err("[processors.memory_limiter]\ncheck_interval = \"1ms\"\n"),
            "shardtel.toml:1: processors.memory_limiter: missing required key (set at least one of limit_mib, limit_percentage)\n\
             shardtel.toml:2: processors.memory_limiter.check_interval: 1ms is too small (minimum 10ms)"
        );
        assert_eq!(
            err("[processors.memory_limiter]\nlimit_mib = 100\nspike_limit_mib = 100\n"),
            "shardtel.toml:3: processors.memory_limiter.spike_limit_mib: spike_limit_mib must be below limit_mib (soft limit = limit - spike)"
        );
        assert_eq!(
            err("[processors.memory_limiter]\nlimit_mib = 100\nspike_limit_percentage = 10\n"),
            "shardtel.toml:3: processors.memory_limiter.spike_limit_percentage: spike_limit_percentage cannot go with limit_mib (use spike_limit_mib)"
        );
        assert_eq!(
            err("[processors.memory_limiter]\nlimit_percentage = 101\n"),
            "shardtel.toml:2: processors.memory_limiter.limit_percentage: 101 is too large (maximum 100)"
        );
    }

    #[test]
    fn one_memory_limiter_per_process() {
        let text = "[processors.a]\ntype = \"memory_limiter\"\nlimit_mib = 100\n\
                    [processors.b]\ntype = \"memory_limiter\"\nlimit_mib = 200\n\
                    [receivers.otlp]\n[exporters.blackhole]\n\
                    [pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = [\"a\"]\nexporters = [\"blackhole\"]\n\
                    [pipelines.logs]\nreceivers = [\"otlp\"]\nprocessors = [\"b\"]\nexporters = [\"blackhole\"]\n";
        let errors = Config::from_str_with_env(text, "shardtel.toml", &|_| None).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "shardtel.toml:15: pipelines.logs.processors: memory limiter \"b\" is listed, but \"a\" is already used by another pipeline (the limit is process-wide: use one memory_limiter in every pipeline)"
        );
    }
}
