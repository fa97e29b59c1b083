//! The start-up check of a tail sampler's bounds against `decision_wait`: can the configured
//! bounds hold `decision_wait` of traffic at the rate the process is expected to take?
//!
//! Every trace waits `decision_wait` (unless a bound decides it early), so at a steady `rate`
//! spans/s a core holds `rate / cores × decision_wait` spans. When a bound is smaller, the
//! oldest traces are decided before their spans have all arrived (counted as early decisions),
//! or, with an ingest log, receivers refuse once the log is full. [`check`] computes what each
//! bound needs and returns one [`Shortfall`] per bound that cannot hold it; the engine logs them
//! as warnings at start.
//!
//! The rate is `tail_sampling.expected_spans_per_second` when set, else derived:
//! [`DERIVED_SPANS_PER_SECOND_PER_CORE`] × cores. Sizes per span are assumptions stated here
//! (and in docs/tail-sampling.md): [`ASSUMED_WIRE_BYTES_PER_SPAN`] on the wire (loadgen's
//! default spans: 8 attributes, about 400 bytes), charged at [`ASSUMED_CHARGE_PER_WIRE_BYTE`]
//! times that plus [`ASSUMED_CHARGE_PER_SPAN`] (with `buffer_compression = "lz4"`,
//! [`ASSUMED_LZ4_CHARGE_PER_WIRE_BYTE`] and [`ASSUMED_LZ4_CHARGE_PER_SPAN`]), in traces of
//! [`ASSUMED_SPANS_PER_TRACE`].

use std::time::Duration;

use shardtel_config::{BufferCompression, TailSamplingConfig};

/// Spans/s one core takes with tail sampling when no rate is configured: about what the
/// 2-core reference machine acknowledged at zero loss with the reference policies (1M spans/s
/// over 2 cores, `BENCHMARKS.md`).
pub const DERIVED_SPANS_PER_SECOND_PER_CORE: u64 = 500_000;
/// Wire bytes per span assumed (an OTLP span with about 8 attributes).
pub const ASSUMED_WIRE_BYTES_PER_SPAN: u64 = 400;
/// Spans per trace assumed (for `max_traces_per_core`).
pub const ASSUMED_SPANS_PER_TRACE: u64 = 10;
/// Charge per wire byte of a buffered span (its share of the request buffer, resource and scope
/// headers included), in hundredths.
pub const ASSUMED_CHARGE_PER_WIRE_BYTE: u64 = 110;
/// Charge per buffered span on top of its bytes: its index entry, its place in its trace's
/// span list and its share of the trace entry.
pub const ASSUMED_CHARGE_PER_SPAN: u64 = 60;

/// A bound that cannot hold `decision_wait` of traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The setting, e.g. `tail_sampling.max_buffered_bytes_per_core`.
    pub setting: &'static str,
    /// What it is set to (bytes or traces).
    pub configured: u64,
    /// What `decision_wait` at the rate needs.
    pub needed: u64,
    /// The spans/s per core the configured value holds for `decision_wait`.
    pub holds_spans_per_second_per_core: u64,
}

/// The rate [`check`] assumes, and where it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Spans/s for the whole process.
    pub spans_per_second: u64,
    /// True when derived from the core count, false when configured.
    pub derived: bool,
}

impl Rate {
    /// `expected_spans_per_second` if set, else [`DERIVED_SPANS_PER_SECOND_PER_CORE`] × cores.
    pub fn of(config: &TailSamplingConfig, cores: usize) -> Rate {
        match config.expected_spans_per_second {
            Some(r) => Rate {
                spans_per_second: r,
                derived: false,
            },
            None => Rate {
                spans_per_second: DERIVED_SPANS_PER_SECOND_PER_CORE * cores.max(1) as u64,
                derived: true,
            },
        }
    }
}

/// Charge per wire byte of a buffered span in an LZ4 block (`buffer_compression = "lz4"`), in
/// hundredths: its copy with its share of the resource and scope headers, compressed (the
/// loadgen-shaped spans of `sampler_path` compress to about 0.25 of that copy, 0.27 of their
/// wire size).
pub const ASSUMED_LZ4_CHARGE_PER_WIRE_BYTE: u64 = 30;
/// Charge per buffered span in an LZ4 block on top of its bytes: its index entry in the block
/// and its share of the trace entry and span list.
pub const ASSUMED_LZ4_CHARGE_PER_SPAN: u64 = 65;

/// Charged bytes per buffered span assumed, for `config`'s `buffer_compression`.
pub fn assumed_charge_per_span(config: &TailSamplingConfig) -> u64 {
    match config.buffer_compression {
        BufferCompression::None => {
            ASSUMED_WIRE_BYTES_PER_SPAN * ASSUMED_CHARGE_PER_WIRE_BYTE / 100
                + ASSUMED_CHARGE_PER_SPAN
        }
        BufferCompression::Lz4 => {
            ASSUMED_WIRE_BYTES_PER_SPAN * ASSUMED_LZ4_CHARGE_PER_WIRE_BYTE / 100
                + ASSUMED_LZ4_CHARGE_PER_SPAN
        }
    }
}

/// The bounds that cannot hold `decision_wait` at `rate` on `cores` cores: the sampler's
/// `max_buffered_bytes_per_core` and `max_traces_per_core`, and the ingest log's
/// `ingest_max_bytes` (per core) when `ingest_log_bytes` is given (durability on).
pub fn check(
    config: &TailSamplingConfig,
    cores: usize,
    rate: Rate,
    ingest_log_bytes: Option<u64>,
) -> Vec<Shortfall> {
    let per_core = rate.spans_per_second / cores.max(1) as u64;
    let wait = config.decision_wait;
    let spans = spans_in(per_core, wait);
    let mut out = Vec::new();
    let mut bound = |setting, configured: u64, per_span: u64, spans_per: u64| {
        let needed = (spans / spans_per).saturating_mul(per_span);
        if configured < needed {
            out.push(Shortfall {
                setting,
                configured,
                needed,
                holds_spans_per_second_per_core: holds(configured, per_span, spans_per, wait),
            });
        }
    };
    bound(
        "tail_sampling.max_buffered_bytes_per_core",
        config.max_buffered_bytes_per_core,
        assumed_charge_per_span(config),
        1,
    );
    bound(
        "tail_sampling.max_traces_per_core",
        config.max_traces_per_core as u64,
        1,
        ASSUMED_SPANS_PER_TRACE,
    );
    if let Some(log) = ingest_log_bytes {
        bound(
            "engine.wal.ingest_max_bytes",
            log,
            ASSUMED_WIRE_BYTES_PER_SPAN,
            1,
        );
    }
    out
}

/// Spans arriving on a core in `wait` at `per_core` spans/s.
fn spans_in(per_core: u64, wait: Duration) -> u64 {
    (u128::from(per_core) * wait.as_nanos() / 1_000_000_000).min(u128::from(u64::MAX)) as u64
}

/// The spans/s per core that `configured` units hold for `wait` (`per_span` units per span, or
/// one unit per `spans_per` spans).
fn holds(configured: u64, per_span: u64, spans_per: u64, wait: Duration) -> u64 {
    let spans = u128::from(configured / per_span.max(1)) * u128::from(spans_per);
    (spans * 1_000_000_000 / wait.as_nanos().max(1)).min(u128::from(u64::MAX)) as u64
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = if self.setting.ends_with("traces_per_core") {
            "traces"
        } else {
            "bytes"
        };
        write!(
            f,
            "{} = {} {unit} holds decision_wait of traffic up to {} spans/s per core only; {} {unit} needed",
            self.setting, self.configured, self.holds_spans_per_second_per_core, self.needed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::config;

    fn bench_config() -> TailSamplingConfig {
        let mut c = config(Vec::new());
        c.decision_wait = Duration::from_secs(10);
        c.max_traces_per_core = 1_000_000;
        c.max_buffered_bytes_per_core = 4 << 30;
        c
    }

    #[test]
    fn bounds_sized_for_the_rate_pass() {
        // 1M spans/s on 2 cores for 10 s: 5M spans per core x 500 bytes = 2.5 GB < 4 GiB,
        // 500k traces < 1M.
        let rate = Rate {
            spans_per_second: 1_000_000,
            derived: false,
        };
        assert_eq!(assumed_charge_per_span(&bench_config()), 500);
        assert_eq!(check(&bench_config(), 2, rate, Some(4 << 30)), vec![]);
    }

    #[test]
    fn compressed_buffers_are_assumed_to_hold_more_spans() {
        // 185 bytes per span in LZ4 blocks: 2 GiB per core holds 10 s of 1.16M spans/s, where
        // uncompressed (500 bytes) it holds 429K.
        let mut c = bench_config();
        c.max_buffered_bytes_per_core = 2 << 30;
        let rate = Rate {
            spans_per_second: 2_000_000,
            derived: false,
        };
        let short = check(&c, 2, rate, None);
        assert_eq!(short.len(), 1, "{short:?}");
        assert_eq!(short[0].holds_spans_per_second_per_core, 429_496);
        c.buffer_compression = BufferCompression::Lz4;
        assert_eq!(assumed_charge_per_span(&c), 185);
        assert_eq!(check(&c, 2, rate, None), vec![]);
    }

    #[test]
    fn each_short_bound_is_reported_with_its_numbers() {
        let mut c = bench_config();
        c.max_buffered_bytes_per_core = 1 << 30;
        c.max_traces_per_core = 100_000;
        let rate = Rate::of(&c, 2);
        assert_eq!(
            rate,
            Rate {
                spans_per_second: 1_000_000,
                derived: true
            }
        );
        let s = check(&c, 2, rate, Some(1 << 30));
        assert_eq!(
            s,
            vec![
                Shortfall {
                    setting: "tail_sampling.max_buffered_bytes_per_core",
                    configured: 1 << 30,
                    needed: 2_500_000_000,
                    // 2^30 / 500 = 2,147,483 spans over 10 s
                    holds_spans_per_second_per_core: 214_748,
                },
                Shortfall {
                    setting: "tail_sampling.max_traces_per_core",
                    configured: 100_000,
                    needed: 500_000,
                    holds_spans_per_second_per_core: 100_000,
                },
                Shortfall {
                    setting: "engine.wal.ingest_max_bytes",
                    configured: 1 << 30,
                    needed: 2_000_000_000,
                    holds_spans_per_second_per_core: 268_435,
                },
            ]
        );
        assert_eq!(
            s[0].to_string(),
            "tail_sampling.max_buffered_bytes_per_core = 1073741824 bytes holds decision_wait of \
             traffic up to 214748 spans/s per core only; 2500000000 bytes needed"
        );
    }

    #[test]
    fn a_configured_rate_replaces_the_derived_one() {
        let mut c = bench_config();
        c.expected_spans_per_second = Some(100_000);
        c.max_buffered_bytes_per_core = 300 << 20;
        let rate = Rate::of(&c, 2);
        assert!(!rate.derived);
        // 50k spans/s per core x 10 s x 500 bytes = 250 MB < 300 MiB
        assert_eq!(check(&c, 2, rate, None), vec![]);
        c.expected_spans_per_second = Some(200_000);
        let s = check(&c, 2, Rate::of(&c, 2), None);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].needed, 500_000_000);
    }
}
