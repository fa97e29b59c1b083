//! `[processors.*]`: transformations between receivers and exporters: `tail_sampling` (the
//! whole-trace sampler on each trace's owner core, below), `attributes` and `resource` (see
//! `attributes.rs`), `filter` (`filter.rs`) and `memory_limiter` (`memory_limiter.rs`).
//!
//! A processor's type is its `type` key, or its table name when that names a type
//! (`[processors.tail_sampling]`), or the part of the name before a `/`
//! (`[processors."tail_sampling/strict"]`), as in the OpenTelemetry Collector.
//!
//! Tail sampling policies follow the OpenTelemetry Collector's `tail_sampling` processor, with
//! each policy's settings written next to its `name` and `type` rather than in a nested table:
//!
//! ```toml
//! [processors.tail_sampling]
//! decision_wait = "10s"
//! [[processors.tail_sampling.policies]]
//! name = "errors"
//! type = "status_code"
//! status_codes = ["ERROR"]
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use toml::de::DeValue;

use crate::attributes::{decode_attributes, decode_resource, AttributesConfig, ResourceConfig};
use crate::decode::{self, Decoder, Section};
use crate::error::{ComponentKind, ConfigErrorKind};
use crate::filter::{decode_filter, FilterConfig, StatusCode};
use crate::memory_limiter::{decode_memory_limiter, MemoryLimiterConfig};
use crate::transform::{
    decode_routing, decode_spanmetrics, decode_transform, RoutingConfig, SpanMetricsConfig,
    TransformConfig,
};
use crate::units::format_duration;

/// One `[processors.NAME]` table.
// Built once at start-up, so the size difference between variants costs nothing (as for
// `ExporterKind`).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessorConfig {
    /// `type = "tail_sampling"`: whole-trace sampling on the trace's owner core.
    TailSampling(TailSamplingConfig),
    /// `type = "attributes"`: ordered actions on item (and optionally resource) attributes
    /// and log bodies.
    Attributes(AttributesConfig),
    /// `type = "resource"`: ordered actions on resource attributes.
    Resource(ResourceConfig),
    /// `type = "filter"`: drops spans, log records or data points that match conditions.
    Filter(FilterConfig),
    /// `type = "memory_limiter"`: process-wide memory limit enforced at admission.
    MemoryLimiter(MemoryLimiterConfig),
    /// `type = "routing"`: each item to the exporters of the first route whose condition holds.
    Routing(RoutingConfig),
    /// `type = "transform"`: statements that change items where their conditions hold.
    Transform(TransformConfig),
    /// `type = "spanmetrics"`: calls and duration metrics from spans, into the metrics pipeline.
    SpanMetrics(SpanMetricsConfig),
}

impl ProcessorConfig {
    /// Processor types this build implements.
    pub const SUPPORTED: &'static [&'static str] = &[
        "tail_sampling",
        "attributes",
        "resource",
        "filter",
        "memory_limiter",
        "routing",
        "transform",
        "spanmetrics",
    ];
    /// Processor types shardtel plans (DESIGN.md) that this build does not implement yet.
    pub const PLANNED: &'static [&'static str] = &["probabilistic_sampler", "batch"];

    /// The `type` value of this processor.
    pub fn type_name(&self) -> &'static str {
        match self {
            ProcessorConfig::TailSampling(_) => "tail_sampling",
            ProcessorConfig::Attributes(_) => "attributes",
            ProcessorConfig::Resource(_) => "resource",
            ProcessorConfig::Filter(_) => "filter",
            ProcessorConfig::MemoryLimiter(_) => "memory_limiter",
            ProcessorConfig::Routing(_) => "routing",
            ProcessorConfig::Transform(_) => "transform",
            ProcessorConfig::SpanMetrics(_) => "spanmetrics",
        }
    }

    /// Whether the processor handles this signal's pipeline (tail sampling: traces only; a
    /// filter: the signals it has conditions for; the others: every signal).
    pub fn supports(&self, signal: shardtel_protocol::Signal) -> bool {
        match self {
            ProcessorConfig::TailSampling(_) | ProcessorConfig::SpanMetrics(_) => {
                signal == shardtel_protocol::Signal::Traces
            }
            ProcessorConfig::Filter(f) => f.rules(signal).is_some(),
            // Every signal; a route whose condition does not fit the pipeline's items is
            // reported at the route (`validate::check_routing`).
            ProcessorConfig::Routing(_) => true,
            ProcessorConfig::Transform(t) => !t.groups(signal).is_empty(),
            _ => true,
        }
    }

    /// The signals it handles, for messages: `"traces"`, `"traces and logs"`, ...
    pub fn supported_signals(&self) -> &'static str {
        use shardtel_protocol::Signal::{Logs, Metrics, Traces};
        match (
            self.supports(Traces),
            self.supports(Metrics),
            self.supports(Logs),
        ) {
            (true, false, false) => "traces",
            (false, true, false) => "metrics",
            (false, false, true) => "logs",
            (true, true, false) => "traces and metrics",
            (true, false, true) => "traces and logs",
            (false, true, true) => "metrics and logs",
            _ => "traces, metrics and logs",
        }
    }
}

/// `type = "tail_sampling"`: buffers each trace on its owner core, then keeps or drops it whole.
///
/// A trace is decided `decision_wait` after its first span arrived, or `decision_wait_after_root`
/// after its root span arrived if that comes first, or early when one of the bounds would be
/// crossed (the oldest trace on the core, or the trace that would outgrow its own bound, is
/// decided at once). Decided trace ids stay in a bounded cache so that late spans follow their
/// trace's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailSamplingConfig {
    /// How long after its first span a trace is decided. Default 30s.
    pub decision_wait: Duration,
    /// If set, a trace is decided this long after its root span (no parent) arrived, when that
    /// is earlier than `decision_wait`. Default: not set.
    pub decision_wait_after_root: Option<Duration>,
    /// Traces buffered per core; a new trace beyond it decides the oldest one early.
    /// Default 100 000.
    pub max_traces_per_core: usize,
    /// Memory held per core: this core's share of every retained request buffer (at least a
    /// quarter of it) or, with `buffer_compression = "lz4"`, its compressed blocks, plus indexes
    /// and the trace table. Crossing it decides the oldest traces early. Default 256 MiB.
    pub max_buffered_bytes_per_core: u64,
    /// Spans buffered per trace; the span that would cross it decides the trace, and later spans
    /// follow that decision. Default 10 000.
    pub max_spans_per_trace: u32,
    /// Span bytes (wire size) buffered per trace, handled like `max_spans_per_trace`.
    /// Default 16 MiB.
    pub max_bytes_per_trace: u64,
    /// `decision_cache = { sampled_cache_size = N, non_sampled_cache_size = M }`.
    pub decision_cache: DecisionCacheConfig,
    /// What happens to buffered traces at shutdown. Default [`OnShutdown::Decide`].
    pub on_shutdown: OnShutdown,
    /// The policies, at least one; a trace is kept when any says sample and no `drop` policy
    /// matches.
    pub policies: Vec<PolicyConfig>,
    /// Spans/s the whole process is expected to take, for the start-up check of the bounds
    /// against `decision_wait` (a warning in the log). Default: not set, derived from the
    /// number of cores (`shardtel_sampler::capacity`).
    pub expected_spans_per_second: Option<u64>,
    /// How undecided spans are held on their owner core. Default [`BufferCompression::None`].
    pub buffer_compression: BufferCompression,
}

impl TailSamplingConfig {
    /// The keys `type = "tail_sampling"` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "type",
        "decision_wait",
        "decision_wait_after_root",
        "max_traces_per_core",
        "max_buffered_bytes_per_core",
        "max_spans_per_trace",
        "max_bytes_per_trace",
        "decision_cache",
        "on_shutdown",
        "policies",
        "expected_spans_per_second",
        "buffer_compression",
    ];
    /// Default `decision_wait`.
    pub const DEFAULT_DECISION_WAIT: Duration = Duration::from_secs(30);
    /// Default `max_traces_per_core`.
    pub const DEFAULT_MAX_TRACES_PER_CORE: usize = 100_000;
    /// Default `max_buffered_bytes_per_core`.
    pub const DEFAULT_MAX_BUFFERED_BYTES_PER_CORE: u64 = 256 << 20;
    /// Default `max_spans_per_trace`.
    pub const DEFAULT_MAX_SPANS_PER_TRACE: u32 = 10_000;
    /// Default `max_bytes_per_trace`.
    pub const DEFAULT_MAX_BYTES_PER_TRACE: u64 = 16 << 20;
    /// Longest accepted `decision_wait` / `decision_wait_after_root`.
    pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

    /// Defaults for everything but the policies.
    pub fn new(policies: Vec<PolicyConfig>) -> Self {
        TailSamplingConfig {
            decision_wait: Self::DEFAULT_DECISION_WAIT,
            decision_wait_after_root: None,
            max_traces_per_core: Self::DEFAULT_MAX_TRACES_PER_CORE,
            max_buffered_bytes_per_core: Self::DEFAULT_MAX_BUFFERED_BYTES_PER_CORE,
            max_spans_per_trace: Self::DEFAULT_MAX_SPANS_PER_TRACE,
            max_bytes_per_trace: Self::DEFAULT_MAX_BYTES_PER_TRACE,
            decision_cache: DecisionCacheConfig::default(),
            on_shutdown: OnShutdown::Decide,
            policies,
            expected_spans_per_second: None,
            buffer_compression: BufferCompression::None,
        }
    }
}

/// `decision_cache`: how many decided trace ids each core remembers, per outcome (FIFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionCacheConfig {
    /// Trace ids remembered as sampled. 0 turns the cache off. Default 100 000.
    pub sampled_cache_size: usize,
    /// Trace ids remembered as not sampled. 0 turns the cache off. Default 100 000.
    pub non_sampled_cache_size: usize,
}

impl DecisionCacheConfig {
    /// The keys `decision_cache` accepts.
    pub const KEYS: &'static [&'static str] = &["sampled_cache_size", "non_sampled_cache_size"];
    /// Largest accepted size of either cache.
    pub const MAX_SIZE: u64 = 100_000_000;
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        DecisionCacheConfig {
            sampled_cache_size: 100_000,
            non_sampled_cache_size: 100_000,
        }
    }
}

/// `on_shutdown`: what happens to the traces still buffered when shardtel stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnShutdown {
    /// `"decide"`: decide each one now with what it has (the default).
    Decide,
    /// `"drop"`: drop them (counted); with `durability = "ack_after_sync"`, leave them in the
    /// ingest log instead, to be replayed at the next start.
    Drop,
}

impl OnShutdown {
    /// The accepted values.
    pub const NAMES: &'static [&'static str] = &["decide", "drop"];
}

/// `buffer_compression`: how the tail sampler holds the spans of undecided traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BufferCompression {
    /// `"none"`: spans stay in the request buffers they arrived in, shared between cores (the
    /// default); the receiving core copies each request body once into memory sized to it
    /// (`shardtel_sampler::arena`).
    #[default]
    None,
    /// `"lz4"`: each batch's buffered spans are copied into one LZ4 block on the owner core and
    /// the request buffer is released; kept traces are decompressed for export. Less memory per
    /// buffered span, more CPU (docs/tail-sampling.md has the measured numbers).
    Lz4,
}

impl BufferCompression {
    /// The accepted values.
    pub const NAMES: &'static [&'static str] = &["none", "lz4"];
}

/// One named policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// Unique within its list; the `policy` label of its metrics.
    pub name: String,
    /// The type and its settings.
    pub kind: PolicyKind,
}

/// A policy's type and settings. `invert` flips a policy's vote (key `invert_match`, as in the
/// OpenTelemetry Collector, or `invert`); to veto traces, use a `drop` policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyKind {
    /// `always_sample`: every trace.
    AlwaysSample,
    /// `status_code`: a span has one of these status codes.
    StatusCode {
        /// `status_codes = ["ERROR", "OK", "UNSET"]`, at least one.
        status_codes: Vec<StatusCode>,
        /// Sample traces where no span has one of them.
        invert: bool,
    },
    /// `latency`: the trace's duration (latest span end − earliest span start) is at least
    /// `threshold` and, if set, at most `upper_threshold`.
    Latency {
        /// `threshold = "1s"` (or `threshold_ms = 1000`).
        threshold: Duration,
        /// `upper_threshold = "5s"` (or `upper_threshold_ms`).
        upper_threshold: Option<Duration>,
        /// Sample traces outside the range.
        invert: bool,
    },
    /// `string_attribute`: a span or resource attribute `key` has a string value equal to one
    /// of `values`, or matching one of them as a regex (unanchored) with
    /// `enabled_regex_matching`.
    StringAttribute {
        /// Attribute key.
        key: String,
        /// Values or regexes, at least one.
        values: Vec<String>,
        /// Treat `values` as regexes.
        enabled_regex_matching: bool,
        /// Sample traces where no span or resource matches.
        invert: bool,
    },
    /// `numeric_attribute`: a span or resource attribute `key` is an integer (or double) within
    /// `min_value..=max_value` (either may be left out, not both).
    NumericAttribute {
        /// Attribute key.
        key: String,
        /// Smallest matching value.
        min_value: Option<i64>,
        /// Largest matching value.
        max_value: Option<i64>,
        /// Sample traces where nothing matches.
        invert: bool,
    },
    /// `boolean_attribute`: a span or resource attribute `key` is the boolean `value`.
    BooleanAttribute {
        /// Attribute key.
        key: String,
        /// The value to match.
        value: bool,
        /// Sample traces where nothing matches.
        invert: bool,
    },
    /// `probabilistic`: a share of traces chosen by a hash of the trace id (and salt), so every
    /// core, node and replay makes the same choice.
    Probabilistic {
        /// `percent = 10` or `sampling_percentage = 10`: 0 to 100.
        sampling_percentage: Percentage,
        /// `hash_salt`: mixed into the hash (default empty).
        hash_salt: String,
    },
    /// `rate_limiting`: sample while fewer than `spans_per_second` spans were sampled by this
    /// policy in the current second. The rate is split evenly across cores.
    RateLimiting {
        /// Spans per second for the whole process, at least 1.
        spans_per_second: u64,
    },
    /// `span_count`: the trace has at least `min_spans` and, if set, at most `max_spans` spans.
    SpanCount {
        /// Fewest spans.
        min_spans: u32,
        /// Most spans.
        max_spans: Option<u32>,
        /// Sample traces outside the range.
        invert: bool,
    },
    /// `trace_state`: a span's W3C `tracestate` has `key` with one of `values`.
    TraceState {
        /// The tracestate key.
        key: String,
        /// Values, at least one.
        values: Vec<String>,
        /// Sample traces where no span matches.
        invert: bool,
    },
    /// `and`: every sub-policy says sample.
    And {
        /// Sub-policies (not `and`, `drop` or `composite`).
        policies: Vec<PolicyConfig>,
    },
    /// `drop`: when every sub-policy matches, the trace is dropped whatever other policies say.
    Drop {
        /// Sub-policies (not `and`, `drop` or `composite`).
        policies: Vec<PolicyConfig>,
    },
    /// `composite`: the first sub-policy (in `policy_order`) that says sample decides, within
    /// its share of `max_total_spans_per_second`.
    Composite {
        /// Spans per second for the whole process (split evenly across cores).
        max_total_spans_per_second: u64,
        /// Sub-policy names in evaluation order (defaults to the order of `policies`).
        policy_order: Vec<String>,
        /// Sub-policies (not `drop` or `composite`).
        policies: Vec<PolicyConfig>,
        /// Share of the rate per sub-policy; those not listed (or at 0) get
        /// `max_total_spans_per_second / number of sub-policies`.
        rate_allocation: Vec<RateAllocation>,
    },
}

impl PolicyKind {
    /// All policy types.
    pub const TYPES: &'static [&'static str] = &[
        "always_sample",
        "status_code",
        "latency",
        "string_attribute",
        "numeric_attribute",
        "boolean_attribute",
        "probabilistic",
        "rate_limiting",
        "span_count",
        "trace_state",
        "and",
        "drop",
        "composite",
    ];
    /// Types allowed inside `and` and `drop`.
    pub const LEAF_TYPES: &'static [&'static str] = &[
        "always_sample",
        "status_code",
        "latency",
        "string_attribute",
        "numeric_attribute",
        "boolean_attribute",
        "probabilistic",
        "rate_limiting",
        "span_count",
        "trace_state",
    ];
    /// Types allowed inside `composite`.
    pub const COMPOSITE_SUB_TYPES: &'static [&'static str] = &[
        "always_sample",
        "status_code",
        "latency",
        "string_attribute",
        "numeric_attribute",
        "boolean_attribute",
        "probabilistic",
        "rate_limiting",
        "span_count",
        "trace_state",
        "and",
    ];

    /// The types allowed inside a policy of type `parent` (`and`, `drop` or `composite`).
    pub fn allowed_inside(parent: &str) -> &'static [&'static str] {
        match parent {
            "composite" => Self::COMPOSITE_SUB_TYPES,
            "and" | "drop" => Self::LEAF_TYPES,
            _ => Self::TYPES,
        }
    }

    /// The `type` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            PolicyKind::AlwaysSample => "always_sample",
            PolicyKind::StatusCode { .. } => "status_code",
            PolicyKind::Latency { .. } => "latency",
            PolicyKind::StringAttribute { .. } => "string_attribute",
            PolicyKind::NumericAttribute { .. } => "numeric_attribute",
            PolicyKind::BooleanAttribute { .. } => "boolean_attribute",
            PolicyKind::Probabilistic { .. } => "probabilistic",
            PolicyKind::RateLimiting { .. } => "rate_limiting",
            PolicyKind::SpanCount { .. } => "span_count",
            PolicyKind::TraceState { .. } => "trace_state",
            PolicyKind::And { .. } => "and",
            PolicyKind::Drop { .. } => "drop",
            PolicyKind::Composite { .. } => "composite",
        }
    }

    /// The keys a policy of type `ty` accepts (besides `name` and `type`).
    fn keys(ty: &str) -> &'static [&'static str] {
        match ty {
            "status_code" => &["name", "type", "status_codes", "invert_match", "invert"],
            "latency" => &[
                "name",
                "type",
                "threshold",
                "threshold_ms",
                "upper_threshold",
                "upper_threshold_ms",
                "invert_match",
                "invert",
            ],
            "string_attribute" => &[
                "name",
                "type",
                "key",
                "values",
                "enabled_regex_matching",
                "invert_match",
                "invert",
            ],
            "numeric_attribute" => &[
                "name",
                "type",
                "key",
                "min_value",
                "max_value",
                "invert_match",
                "invert",
            ],
            "boolean_attribute" => &["name", "type", "key", "value", "invert_match", "invert"],
            "probabilistic" => &[
                "name",
                "type",
                "percent",
                "sampling_percentage",
                "hash_salt",
            ],
            "rate_limiting" => &["name", "type", "spans_per_second"],
            "span_count" => &[
                "name",
                "type",
                "min_spans",
                "max_spans",
                "invert_match",
                "invert",
            ],
            "trace_state" => &["name", "type", "key", "values", "invert_match", "invert"],
            "and" | "drop" => &["name", "type", "policies"],
            "composite" => &[
                "name",
                "type",
                "max_total_spans_per_second",
                "policy_order",
                "rate_allocation",
                "policies",
            ],
            _ => &["name", "type"],
        }
    }
}

/// A percentage from 0 to 100 (compared by bits, so that configs stay `Eq`).
#[derive(Debug, Clone, Copy)]
pub struct Percentage(f64);

impl Percentage {
    /// `value` if it is within 0..=100.
    pub fn new(value: f64) -> Option<Percentage> {
        (0.0..=100.0).contains(&value).then_some(Percentage(value))
    }

    /// The percentage, 0 to 100.
    pub fn get(self) -> f64 {
        self.0
    }
}

impl PartialEq for Percentage {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

impl Eq for Percentage {}

/// One `rate_allocation` entry of a composite policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateAllocation {
    /// The sub-policy's name.
    pub policy: String,
    /// Its share of `max_total_spans_per_second`, 0 to 100 (0: an equal share).
    pub percent: u32,
}

impl RateAllocation {
    /// The keys an entry accepts.
    pub const KEYS: &'static [&'static str] = &["policy", "percent"];
}

pub(crate) fn decode(
    d: &mut Decoder<'_>,
    root: &Section<'_, '_>,
) -> BTreeMap<String, ProcessorConfig> {
    let s = d.map_section(root, "processors");
    let mut processors = BTreeMap::new();
    for (key, value) in s.entries() {
        let name = key.get_ref().as_ref();
        d.define(ComponentKind::Processor, name);
        let table = d.table(s.key(name), value, None);
        if !table.exists() {
            continue;
        }
        let Some(ty) = d.component_type(
            &table,
            name,
            ComponentKind::Processor,
            ProcessorConfig::SUPPORTED,
            ProcessorConfig::PLANNED,
        ) else {
            continue;
        };
        let decoded = match ty.as_str() {
            "tail_sampling" => {
                d.check_keys(&table, TailSamplingConfig::KEYS);
                Some(decode_tail_sampling(d, &table).map(ProcessorConfig::TailSampling))
            }
            "attributes" => Some(decode_attributes(d, &table).map(ProcessorConfig::Attributes)),
            "resource" => Some(decode_resource(d, &table).map(ProcessorConfig::Resource)),
            "filter" => Some(decode_filter(d, &table).map(ProcessorConfig::Filter)),
            "memory_limiter" => {
                Some(decode_memory_limiter(d, &table).map(ProcessorConfig::MemoryLimiter))
            }
            "routing" => Some(decode_routing(d, &table).map(ProcessorConfig::Routing)),
            "transform" => Some(decode_transform(d, &table).map(ProcessorConfig::Transform)),
            "spanmetrics" => Some(decode_spanmetrics(d, &table).map(ProcessorConfig::SpanMetrics)),
            _ => None,
        };
        if let Some(decoded) = decoded {
            if let Some(config) = decoded {
                processors.insert(name.to_string(), config);
            }
            continue;
        }
        d.report_unknown_type(
            &table,
            key.span(),
            ty,
            ComponentKind::Processor,
            ProcessorConfig::SUPPORTED,
            ProcessorConfig::PLANNED,
        );
    }
    processors
}

fn wait(value: &DeValue<'_>) -> Result<Duration, ConfigErrorKind> {
    let wait = decode::duration(value)?;
    if wait > TailSamplingConfig::MAX_WAIT {
        return Err(ConfigErrorKind::TooLarge {
            value: format_duration(wait),
            max: format_duration(TailSamplingConfig::MAX_WAIT),
        });
    }
    Ok(wait)
}

fn decode_tail_sampling(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<TailSamplingConfig> {
    let decision_wait = d.field_or(
        s,
        "decision_wait",
        TailSamplingConfig::DEFAULT_DECISION_WAIT,
        |v| decode::min_duration(wait(v)?, Duration::from_millis(1)),
    );
    let decision_wait_after_root = d.field(s, "decision_wait_after_root", wait);
    let max_traces_per_core = d.field_or(
        s,
        "max_traces_per_core",
        TailSamplingConfig::DEFAULT_MAX_TRACES_PER_CORE,
        |v| Ok(decode::in_range(decode::count(v, u64::MAX)?, 1, 100_000_000)? as usize),
    );
    let max_buffered_bytes_per_core = d.field_or(
        s,
        "max_buffered_bytes_per_core",
        TailSamplingConfig::DEFAULT_MAX_BUFFERED_BYTES_PER_CORE,
        |v| decode::min_size(decode::size(v)?, 1 << 20),
    );
    let max_spans_per_trace = d.field_or(
        s,
        "max_spans_per_trace",
        TailSamplingConfig::DEFAULT_MAX_SPANS_PER_TRACE,
        |v| Ok(decode::in_range(decode::count(v, u64::MAX)?, 1, u64::from(u32::MAX))? as u32),
    );
    let max_bytes_per_trace = d.field_or(
        s,
        "max_bytes_per_trace",
        TailSamplingConfig::DEFAULT_MAX_BYTES_PER_TRACE,
        |v| decode::min_size(decode::size(v)?, 1 << 10),
    );
    let c = d.section(s, "decision_cache", DecisionCacheConfig::KEYS);
    let default = DecisionCacheConfig::default();
    let cache_size =
        |v: &DeValue<'_>| Ok(decode::count(v, DecisionCacheConfig::MAX_SIZE)? as usize);
    let decision_cache = DecisionCacheConfig {
        sampled_cache_size: d.field_or(
            &c,
            "sampled_cache_size",
            default.sampled_cache_size,
            cache_size,
        ),
        non_sampled_cache_size: d.field_or(
            &c,
            "non_sampled_cache_size",
            default.non_sampled_cache_size,
            cache_size,
        ),
    };
    let on_shutdown = d.field_or(s, "on_shutdown", OnShutdown::Decide, |v| {
        Ok(match decode::one_of(v, OnShutdown::NAMES)? {
            "drop" => OnShutdown::Drop,
            _ => OnShutdown::Decide,
        })
    });
    let expected_spans_per_second = d.field(s, "expected_spans_per_second", |v| {
        decode::in_range(decode::count(v, u64::MAX)?, 1, u64::MAX)
    });
    let buffer_compression = d.field_or(s, "buffer_compression", BufferCompression::None, |v| {
        Ok(match decode::one_of(v, BufferCompression::NAMES)? {
            "lz4" => BufferCompression::Lz4,
            _ => BufferCompression::None,
        })
    });
    let policies = decode_policies(d, s, Level::Top)?;
    Some(TailSamplingConfig {
        decision_wait,
        decision_wait_after_root,
        max_traces_per_core,
        max_buffered_bytes_per_core,
        max_spans_per_trace,
        max_bytes_per_trace,
        decision_cache,
        on_shutdown,
        policies,
        expected_spans_per_second,
        buffer_compression,
    })
}

/// Where a policy list is, which decides the types it may hold: top level, or inside a policy
/// of this type.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Top,
    Inside(&'static str),
}

impl Level {
    fn allowed(self) -> &'static [&'static str] {
        match self {
            Level::Top => PolicyKind::TYPES,
            Level::Inside(parent) => PolicyKind::allowed_inside(parent),
        }
    }
}

/// The `policies` list of `s`: required and non-empty. `None` when absent or when any policy
/// is invalid (each problem is reported).
fn decode_policies(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
    level: Level,
) -> Option<Vec<PolicyConfig>> {
    let Some(value) = s.get("policies") else {
        let path = s.key("policies");
        d.report_at_key(path, ConfigErrorKind::NoPolicies);
        return None;
    };
    let path = s.key("policies");
    d.value(path.clone(), value, |v| match v {
        DeValue::Array(array) if array.is_empty() => Err(ConfigErrorKind::NoPolicies),
        DeValue::Array(_) => Ok(()),
        other => Err(ConfigErrorKind::WrongType {
            expected: "an array of policy tables ([[...policies]] or [{ name = .., type = .. }])",
            found: decode::describe(other),
        }),
    })?;
    let DeValue::Array(list) = value.get_ref() else {
        return None;
    };
    let mut policies = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    let mut ok = true;
    for (i, element) in list.iter().enumerate() {
        let table = d.table(format!("{path}[{i}]"), element, None);
        if !table.exists() {
            ok = false;
            continue;
        }
        // Duplicates are found even among policies that fail to decode.
        if let Some(name) = table.get("name").filter(|v| v.get_ref().as_str().is_some()) {
            let text = name.get_ref().as_str().unwrap_or_default();
            if names.contains(&text) {
                d.report(
                    table.key("name"),
                    name.span(),
                    ConfigErrorKind::DuplicatePolicyName {
                        name: text.to_string(),
                    },
                );
                ok = false;
            }
            names.push(text);
        }
        match decode_policy(d, &table, level) {
            Some(policy) => policies.push(policy),
            None => ok = false,
        }
    }
    ok.then_some(policies)
}

fn decode_policy(d: &mut Decoder<'_>, s: &Section<'_, '_>, level: Level) -> Option<PolicyConfig> {
    let name = if s.get("name").is_some() {
        d.field(s, "name", decode::non_empty_string)
    } else {
        d.require(s, "name", "name = \"errors\"");
        None
    };
    let Some(type_value) = s.get("type") else {
        d.require(s, "type", "type = \"status_code\" or another policy type");
        return None;
    };
    let ty = d.value(s.key("type"), type_value, |v| {
        let ty = decode::string(v)?;
        if !PolicyKind::TYPES.contains(&ty.as_str()) {
            return Err(ConfigErrorKind::UnknownPolicyType {
                ty,
                allowed: level.allowed(),
            });
        }
        if let Level::Inside(inside) = level {
            let allowed = level.allowed();
            if !allowed.contains(&ty.as_str()) {
                return Err(ConfigErrorKind::PolicyTypeNotAllowed {
                    ty: ty.into(),
                    inside,
                    allowed,
                });
            }
        }
        Ok(ty)
    })?;
    d.check_keys(s, PolicyKind::keys(&ty));
    let kind = match ty.as_str() {
        "always_sample" => Some(PolicyKind::AlwaysSample),
        "status_code" => {
            let status_codes = required(d, s, "status_codes", "status_codes = [\"ERROR\"]", |v| {
                let DeValue::Array(array) = v else {
                    return Err(ConfigErrorKind::WrongType {
                        expected: "an array like [\"ERROR\"]",
                        found: decode::describe(v),
                    });
                };
                if array.is_empty() {
                    return Err(ConfigErrorKind::Empty);
                }
                array
                    .iter()
                    .map(|e| StatusCode::decode(e.get_ref()))
                    .collect()
            });
            let invert = invert(d, s);
            Some(PolicyKind::StatusCode {
                status_codes: status_codes?,
                invert,
            })
        }
        "latency" => decode_latency(d, s),
        "string_attribute" => {
            let key = attribute_key(d, s);
            let regex = d.field_or(s, "enabled_regex_matching", false, decode::boolean);
            let values = required(d, s, "values", "values = [\"vip\"]", |v| {
                let values = non_empty_strings(v)?;
                if regex {
                    for pattern in &values {
                        check_regex(pattern)?;
                    }
                }
                Ok(values)
            });
            let invert = invert(d, s);
            Some(PolicyKind::StringAttribute {
                key: key?,
                values: values?,
                enabled_regex_matching: regex,
                invert,
            })
        }
        "numeric_attribute" => {
            let key = attribute_key(d, s);
            let min_value = d.field(s, "min_value", decode::signed);
            let max_value = d.field(s, "max_value", decode::signed);
            let invert = invert(d, s);
            bounds(d, s, &["min_value", "max_value"], min_value, max_value)?;
            Some(PolicyKind::NumericAttribute {
                key: key?,
                min_value,
                max_value,
                invert,
            })
        }
        "boolean_attribute" => {
            let key = attribute_key(d, s);
            let value = required(d, s, "value", "value = true", decode::boolean);
            let invert = invert(d, s);
            Some(PolicyKind::BooleanAttribute {
                key: key?,
                value: value?,
                invert,
            })
        }
        "probabilistic" => {
            let percentage = match alias(d, s, "percent", "sampling_percentage") {
                Some(key) => d.field(s, key, |v| {
                    let n = decode::number(v)?;
                    Percentage::new(n).ok_or(ConfigErrorKind::NotInRange {
                        value: n.to_string(),
                        range: "0 to 100",
                    })
                }),
                None => {
                    if s.get("sampling_percentage").is_none() {
                        d.require(s, "percent", "percent = 10");
                    }
                    None
                }
            };
            let hash_salt = d.field_or(s, "hash_salt", String::new(), decode::string);
            Some(PolicyKind::Probabilistic {
                sampling_percentage: percentage?,
                hash_salt,
            })
        }
        "rate_limiting" => {
            let spans_per_second =
                required(d, s, "spans_per_second", "spans_per_second = 1000", |v| {
                    decode::in_range(decode::count(v, u64::MAX)?, 1, 1 << 40)
                });
            Some(PolicyKind::RateLimiting {
                spans_per_second: spans_per_second?,
            })
        }
        "span_count" => {
            let span_count = |v: &DeValue<'_>| Ok(decode::count(v, u64::from(u32::MAX))? as u32);
            let min_spans = d.field(s, "min_spans", span_count);
            let max_spans = d.field(s, "max_spans", span_count);
            let invert = invert(d, s);
            bounds(d, s, &["min_spans", "max_spans"], min_spans, max_spans)?;
            Some(PolicyKind::SpanCount {
                min_spans: min_spans.unwrap_or(0),
                max_spans,
                invert,
            })
        }
        "trace_state" => {
            let key = attribute_key(d, s);
            let values = required(d, s, "values", "values = [\"value1\"]", non_empty_strings);
            let invert = invert(d, s);
            Some(PolicyKind::TraceState {
                key: key?,
                values: values?,
                invert,
            })
        }
        "and" => {
            decode_policies(d, s, Level::Inside("and")).map(|policies| PolicyKind::And { policies })
        }
        "drop" => decode_policies(d, s, Level::Inside("drop"))
            .map(|policies| PolicyKind::Drop { policies }),
        _ => decode_composite(d, s),
    };
    Some(PolicyConfig {
        name: name?,
        kind: kind?,
    })
}

/// Decodes `key`, reporting it (with `hint`) when absent.
fn required<T>(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
    key: &str,
    hint: &'static str,
    parse: impl FnOnce(&DeValue<'_>) -> Result<T, ConfigErrorKind>,
) -> Option<T> {
    if s.get(key).is_none() {
        d.require(s, key, hint);
        return None;
    }
    d.field(s, key, parse)
}

/// Checks the bounds of a range policy (`numeric_attribute`, `span_count`), decoded from
/// `keys` (minimum, maximum): at least one is set, every one set is valid, and the minimum is
/// not above the maximum. `None` after reporting a problem.
fn bounds<T: Copy + PartialOrd + std::fmt::Display>(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
    keys: &'static [&'static str; 2],
    min: Option<T>,
    max: Option<T>,
) -> Option<()> {
    let [min_key, max_key] = *keys;
    let present = s.get(min_key).is_some() || s.get(max_key).is_some();
    if !present {
        d.report_at_key(s.path.clone(), ConfigErrorKind::MissingOneOf { keys });
    }
    if let (Some(min), Some(max)) = (min, max) {
        if min > max {
            d.report_at_key(
                s.key(min_key),
                ConfigErrorKind::BoundsOrder {
                    lower: format!("{min_key} ({min})"),
                    upper: format!("{max_key} ({max})"),
                },
            );
            return None;
        }
    }
    let failed =
        (s.get(min_key).is_some() && min.is_none()) || (s.get(max_key).is_some() && max.is_none());
    (present && !failed).then_some(())
}

fn attribute_key(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<String> {
    required(d, s, "key", "key = \"user.id\"", decode::non_empty_string)
}

/// `invert_match` (the OpenTelemetry Collector's name) or `invert`.
fn invert(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> bool {
    match alias(d, s, "invert_match", "invert") {
        Some(key) => d.field_or(s, key, false, decode::boolean),
        None => false,
    }
}

/// Which of two synonymous keys is set (`None` if neither); both set is reported.
fn alias(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
    key: &'static str,
    other: &'static str,
) -> Option<&'static str> {
    match (s.get(key), s.get(other)) {
        (Some(_), Some(value)) => {
            d.report(
                s.key(other),
                value.span(),
                ConfigErrorKind::AliasConflict {
                    key: other,
                    other: key,
                },
            );
            None
        }
        (Some(_), None) => Some(key),
        (None, Some(_)) => Some(other),
        (None, None) => None,
    }
}

fn non_empty_strings(value: &DeValue<'_>) -> Result<Vec<String>, ConfigErrorKind> {
    let values = decode::strings(value)?;
    if values.is_empty() {
        return Err(ConfigErrorKind::Empty);
    }
    Ok(values)
}

fn check_regex(pattern: &str) -> Result<(), ConfigErrorKind> {
    crate::attributes::check_regex(pattern).map(|_| ())
}

fn decode_latency(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<PolicyKind> {
    let millis = |v: &DeValue<'_>| Ok(Duration::from_millis(decode::count(v, 1 << 40)?));
    let threshold = match alias(d, s, "threshold", "threshold_ms") {
        Some("threshold") => d.field(s, "threshold", decode::duration),
        Some(key) => d.field(s, key, millis),
        None => {
            if s.get("threshold").is_none() && s.get("threshold_ms").is_none() {
                d.require(s, "threshold", "threshold = \"1s\"");
            }
            None
        }
    };
    let upper_key = alias(d, s, "upper_threshold", "upper_threshold_ms");
    let upper_threshold = match upper_key {
        Some("upper_threshold") => d.field(s, "upper_threshold", decode::duration),
        Some(key) => d.field(s, key, millis),
        None => None,
    };
    let invert = invert(d, s);
    let threshold = threshold?;
    if let (Some(upper), Some(key)) = (upper_threshold, upper_key) {
        if upper < threshold {
            d.report_at_key(
                s.key(key),
                ConfigErrorKind::BoundsOrder {
                    lower: format!("threshold ({})", format_duration(threshold)),
                    upper: format!("{key} ({})", format_duration(upper)),
                },
            );
            return None;
        }
    }
    if upper_key.is_some() && upper_threshold.is_none() {
        return None;
    }
    Some(PolicyKind::Latency {
        threshold,
        upper_threshold,
        invert,
    })
}

fn decode_composite(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<PolicyKind> {
    let max_total = required(
        d,
        s,
        "max_total_spans_per_second",
        "max_total_spans_per_second = 1000",
        |v| decode::in_range(decode::count(v, u64::MAX)?, 1, 1 << 40),
    );
    let order = d.field(s, "policy_order", decode::strings);
    let allocations = d.field(s, "rate_allocation", |v| {
        let DeValue::Array(array) = v else {
            return Err(ConfigErrorKind::WrongType {
                expected: "an array like [{ policy = \"errors\", percent = 50 }]",
                found: decode::describe(v),
            });
        };
        array
            .iter()
            .map(|e| {
                let DeValue::Table(t) = e.get_ref() else {
                    return Err(ConfigErrorKind::WrongType {
                        expected: "a table like { policy = \"errors\", percent = 50 }",
                        found: decode::describe(e.get_ref()),
                    });
                };
                for (k, _) in t.iter() {
                    if !RateAllocation::KEYS.contains(&k.get_ref().as_ref()) {
                        return Err(ConfigErrorKind::UnknownKey {
                            allowed: RateAllocation::KEYS.to_vec(),
                        });
                    }
                }
                let policy = t
                    .get("policy")
                    .ok_or(ConfigErrorKind::MissingKey {
                        hint: "policy = \"errors\"",
                    })
                    .and_then(|v| decode::non_empty_string(v.get_ref()))?;
                let percent =
                    t.get("percent")
                        .ok_or(ConfigErrorKind::MissingKey {
                            hint: "percent = 50",
                        })
                        .and_then(|v| decode::count(v.get_ref(), 100))? as u32;
                Ok(RateAllocation { policy, percent })
            })
            .collect::<Result<Vec<_>, _>>()
    });
    let policies = decode_policies(d, s, Level::Inside("composite"))?;
    let names: Vec<String> = policies.iter().map(|p| p.name.clone()).collect();
    let mut ok = true;
    let unknown = |name: &str| ConfigErrorKind::UnknownSubPolicy {
        name: name.to_string(),
        defined: names.clone(),
    };
    let policy_order = match order {
        Some(order) => {
            let key = s.key("policy_order");
            for (i, name) in order.iter().enumerate() {
                if order[..i].contains(name) {
                    d.report_at_key(
                        key.clone(),
                        ConfigErrorKind::NameListedTwice { name: name.clone() },
                    );
                    ok = false;
                } else if !names.contains(name) {
                    d.report_at_key(key.clone(), unknown(name));
                    ok = false;
                }
            }
            for name in &names {
                if !order.contains(name) {
                    d.report_at_key(
                        key.clone(),
                        ConfigErrorKind::NotInPolicyOrder { name: name.clone() },
                    );
                    ok = false;
                }
            }
            order
        }
        None if s.get("policy_order").is_some() => return None,
        None => names.clone(),
    };
    let rate_allocation = match allocations {
        Some(allocations) => {
            let key = s.key("rate_allocation");
            for (i, a) in allocations.iter().enumerate() {
                if allocations[..i].iter().any(|b| b.policy == a.policy) {
                    d.report_at_key(
                        key.clone(),
                        ConfigErrorKind::NameListedTwice {
                            name: a.policy.clone(),
                        },
                    );
                    ok = false;
                } else if !names.contains(&a.policy) {
                    d.report_at_key(key.clone(), unknown(&a.policy));
                    ok = false;
                }
            }
            let total: u64 = allocations.iter().map(|a| u64::from(a.percent)).sum();
            if total > 100 {
                d.report_at_key(key, ConfigErrorKind::AllocationOver100 { total });
                ok = false;
            }
            allocations
        }
        None if s.get("rate_allocation").is_some() => return None,
        None => Vec::new(),
    };
    (ok).then_some(())?;
    Some(PolicyKind::Composite {
        max_total_spans_per_second: max_total?,
        policy_order,
        policies,
        rate_allocation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::type_from_name;
    use crate::Config;

    const BASE: &str = "\
[receivers.otlp]
[exporters.blackhole]
[pipelines.traces]
receivers = [\"otlp\"]
processors = [\"tail_sampling\"]
exporters = [\"blackhole\"]
";

    fn load(text: &str) -> Result<Config, crate::ConfigErrors> {
        Config::from_str_with_env(&format!("{text}{BASE}"), "shardtel.toml", &|_| None)
    }

    fn tail_sampling(text: &str) -> TailSamplingConfig {
        match load(text) {
            Ok(config) => match config.processors.into_values().next() {
                Some(ProcessorConfig::TailSampling(c)) => c,
                other => panic!("not a tail sampler: {other:?}"),
            },
            Err(e) => panic!("unexpected errors:\n{e}"),
        }
    }

    fn err(text: &str) -> String {
        crate::testing::problems(load(text))
    }

    fn policy(name: &str, kind: PolicyKind) -> PolicyConfig {
        PolicyConfig {
            name: name.to_string(),
            kind,
        }
    }

    #[test]
    fn type_defaults_to_the_name_or_its_prefix() {
        let supported = ProcessorConfig::SUPPORTED;
        let planned = ProcessorConfig::PLANNED;
        assert_eq!(
            type_from_name("tail_sampling", supported, planned),
            Some("tail_sampling")
        );
        assert_eq!(
            type_from_name("tail_sampling/strict", supported, planned),
            Some("tail_sampling")
        );
        assert_eq!(type_from_name("redact", supported, planned), None);
        assert_eq!(type_from_name("otlp", &["otlp"], &[]), Some("otlp"));
    }

    /// DESIGN.md's `[processors.tail_sampling]` sketch, verbatim.
    const DESIGN_SKETCH: &str = r#"
[processors.tail_sampling]
decision_wait = "10s"
max_traces_per_core = 200_000
[[processors.tail_sampling.policies]]
name = "errors"
type = "status_code"
status_codes = ["ERROR"]
[[processors.tail_sampling.policies]]
name = "slow"
type = "latency"
threshold = "1s"
[[processors.tail_sampling.policies]]
name = "vip"
type = "string_attribute"
key = "user.id"
values = ["vip"]
[[processors.tail_sampling.policies]]
name = "baseline"
type = "probabilistic"
percent = 10
"#;

    #[test]
    fn design_sketch_parses_as_written() {
        let c = tail_sampling(DESIGN_SKETCH);
        let mut expected = TailSamplingConfig::new(vec![
            policy(
                "errors",
                PolicyKind::StatusCode {
                    status_codes: vec![StatusCode::Error],
                    invert: false,
                },
            ),
            policy(
                "slow",
                PolicyKind::Latency {
                    threshold: Duration::from_secs(1),
                    upper_threshold: None,
                    invert: false,
                },
            ),
            policy(
                "vip",
                PolicyKind::StringAttribute {
                    key: "user.id".into(),
                    values: vec!["vip".into()],
                    enabled_regex_matching: false,
                    invert: false,
                },
            ),
            policy(
                "baseline",
                PolicyKind::Probabilistic {
                    sampling_percentage: Percentage::new(10.0).unwrap(),
                    hash_salt: String::new(),
                },
            ),
        ]);
        expected.decision_wait = Duration::from_secs(10);
        expected.max_traces_per_core = 200_000;
        assert_eq!(c, expected);
    }

    #[test]
    fn default_config_example_parses_to_the_defaults() {
        let example: String = crate::DEFAULT_CONFIG
            .lines()
            .skip_while(|l| *l != "# [processors.tail_sampling]")
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
            .collect();
        assert!(example.contains("percent = 10"), "{example}");
        let parsed = tail_sampling(&example);
        let seed = tail_sampling(DESIGN_SKETCH);
        assert_eq!(parsed, TailSamplingConfig::new(seed.policies));
    }

    #[test]
    fn every_key_and_policy_type_is_read() {
        let c = tail_sampling(
            r#"
[processors.tail_sampling]
decision_wait = "5s"
decision_wait_after_root = "500ms"
max_traces_per_core = 10
max_buffered_bytes_per_core = "64MiB"
max_spans_per_trace = 1000
max_bytes_per_trace = "1MiB"
decision_cache = { sampled_cache_size = 7, non_sampled_cache_size = 0 }
on_shutdown = "drop"
buffer_compression = "lz4"
policies = [
  { name = "all", type = "always_sample" },
  { name = "st", type = "status_code", status_codes = ["OK", "UNSET"], invert_match = true },
  { name = "lat", type = "latency", threshold_ms = 100, upper_threshold = "2s", invert = true },
  { name = "str", type = "string_attribute", key = "http.route", values = ["^/health", "/metrics$"], enabled_regex_matching = true },
  { name = "num", type = "numeric_attribute", key = "http.status_code", min_value = -5, max_value = 599 },
  { name = "num2", type = "numeric_attribute", key = "x", max_value = 3 },
  { name = "bool", type = "boolean_attribute", key = "retry", value = true, invert_match = false },
  { name = "p", type = "probabilistic", sampling_percentage = 12.5, hash_salt = "s" },
  { name = "rate", type = "rate_limiting", spans_per_second = 100 },
  { name = "count", type = "span_count", min_spans = 2, max_spans = 20 },
  { name = "ts", type = "trace_state", key = "vendor", values = ["a", "b"] },
  { name = "and", type = "and", policies = [
      { name = "a1", type = "status_code", status_codes = ["ERROR"] },
      { name = "a2", type = "span_count", max_spans = 3 } ] },
  { name = "drop-health", type = "drop", policies = [
      { name = "h", type = "string_attribute", key = "http.route", values = ["/health"] } ] },
  { name = "comp", type = "composite", max_total_spans_per_second = 1000,
    policy_order = ["c2", "c1"],
    rate_allocation = [{ policy = "c1", percent = 30 }, { policy = "c2", percent = 70 }],
    policies = [
      { name = "c1", type = "always_sample" },
      { name = "c2", type = "and", policies = [{ name = "x", type = "always_sample" }] } ] },
]
"#,
        );
        assert_eq!(c.decision_wait, Duration::from_secs(5));
        assert_eq!(c.decision_wait_after_root, Some(Duration::from_millis(500)));
        assert_eq!(c.max_traces_per_core, 10);
        assert_eq!(c.max_buffered_bytes_per_core, 64 << 20);
        assert_eq!(c.max_spans_per_trace, 1000);
        assert_eq!(c.max_bytes_per_trace, 1 << 20);
        assert_eq!(
            c.decision_cache,
            DecisionCacheConfig {
                sampled_cache_size: 7,
                non_sampled_cache_size: 0
            }
        );
        assert_eq!(c.on_shutdown, OnShutdown::Drop);
        assert_eq!(c.buffer_compression, BufferCompression::Lz4);
        let types: Vec<&str> = c.policies.iter().map(|p| p.kind.type_name()).collect();
        assert_eq!(
            types,
            [
                "always_sample",
                "status_code",
                "latency",
                "string_attribute",
                "numeric_attribute",
                "numeric_attribute",
                "boolean_attribute",
                "probabilistic",
                "rate_limiting",
                "span_count",
                "trace_state",
                "and",
                "drop",
                "composite"
            ]
        );
        assert_eq!(
            c.policies[1].kind,
            PolicyKind::StatusCode {
                status_codes: vec![StatusCode::Ok, StatusCode::Unset],
                invert: true
            }
        );
        assert_eq!(
            c.policies[2].kind,
            PolicyKind::Latency {
                threshold: Duration::from_millis(100),
                upper_threshold: Some(Duration::from_secs(2)),
                invert: true
            }
        );
        assert_eq!(
            c.policies[4].kind,
            PolicyKind::NumericAttribute {
                key: "http.status_code".into(),
                min_value: Some(-5),
                max_value: Some(599),
                invert: false
            }
        );
        assert_eq!(
            c.policies[7].kind,
            PolicyKind::Probabilistic {
                sampling_percentage: Percentage::new(12.5).unwrap(),
                hash_salt: "s".into()
            }
        );
        assert_eq!(
            c.policies[9].kind,
            PolicyKind::SpanCount {
                min_spans: 2,
                max_spans: Some(20),
                invert: false
            }
        );
        let PolicyKind::Composite {
            max_total_spans_per_second,
            policy_order,
            policies,
            rate_allocation,
        } = &c.policies[13].kind
        else {
            panic!()
        };
        assert_eq!(*max_total_spans_per_second, 1000);
        assert_eq!(policy_order, &["c2", "c1"]);
        assert_eq!(policies.len(), 2);
        assert_eq!(rate_allocation[1].percent, 70);
    }

    #[test]
    fn nested_array_of_tables_form() {
        let c = tail_sampling(
            r#"
[processors.tail_sampling]
[[processors.tail_sampling.policies]]
name = "slow-errors"
type = "and"
[[processors.tail_sampling.policies.policies]]
name = "e"
type = "status_code"
status_codes = ["ERROR"]
[[processors.tail_sampling.policies.policies]]
name = "s"
type = "latency"
threshold = "2s"
"#,
        );
        let PolicyKind::And { policies } = &c.policies[0].kind else {
            panic!()
        };
        assert_eq!(policies.len(), 2);
        assert_eq!(c.decision_wait, Duration::from_secs(30));
        assert_eq!(c.on_shutdown, OnShutdown::Decide);
        assert_eq!(c.buffer_compression, BufferCompression::None);
    }

    #[test]
    fn policy_errors_name_key_and_line() {
        let text = r#"[processors.tail_sampling]
decision_wait = "0s"
on_shutdown = "flush"
buffer_compression = "zstd"
[[processors.tail_sampling.policies]]
name = "a"
type = "magic"
[[processors.tail_sampling.policies]]
name = "b"
type = "status_code"
status_codes = ["FAILED"]
[[processors.tail_sampling.policies]]
type = "latency"
[[processors.tail_sampling.policies]]
name = "d"
type = "string_attribute"
key = "k"
values = ["(unclosed"]
enabled_regex_matching = true
colour = "red"
[[processors.tail_sampling.policies]]
name = "e"
type = "probabilistic"
percent = 10
sampling_percentage = 10
[[processors.tail_sampling.policies]]
name = "f"
type = "probabilistic"
percent = 101
[[processors.tail_sampling.policies]]
name = "g"
type = "and"
policies = [{ name = "x", type = "composite" }]
[[processors.tail_sampling.policies]]
name = "g"
type = "always_sample"
[[processors.tail_sampling.policies]]
name = "h"
type = "numeric_attribute"
key = "k"
min_value = 5
max_value = 1
[[processors.tail_sampling.policies]]
name = "i"
type = "latency"
threshold = "2s"
upper_threshold = "1s"
[[processors.tail_sampling.policies]]
name = "j"
type = "span_count"
"#;
        assert_eq!(
            err(text),
            "shardtel.toml:2: processors.tail_sampling.decision_wait: 0s is too small (minimum 1ms)\n\
             shardtel.toml:3: processors.tail_sampling.on_shutdown: invalid value \"flush\" (allowed: \"decide\", \"drop\")\n\
             shardtel.toml:4: processors.tail_sampling.buffer_compression: invalid value \"zstd\" (allowed: \"none\", \"lz4\")\n\
             shardtel.toml:7: processors.tail_sampling.policies[0].type: unknown policy type \"magic\" (allowed: always_sample, status_code, latency, string_attribute, numeric_attribute, boolean_attribute, probabilistic, rate_limiting, span_count, trace_state, and, drop, composite)\n\
             shardtel.toml:11: processors.tail_sampling.policies[1].status_codes: invalid value \"FAILED\" (allowed: \"ERROR\", \"OK\", \"UNSET\")\n\
             shardtel.toml:12: processors.tail_sampling.policies[2].name: missing required key (name = \"errors\")\n\
             shardtel.toml:12: processors.tail_sampling.policies[2].threshold: missing required key (threshold = \"1s\")\n\
             shardtel.toml:18: processors.tail_sampling.policies[3].values: invalid regex \"(unclosed\": unclosed group\n\
             shardtel.toml:20: processors.tail_sampling.policies[3].colour: unknown key (allowed: name, type, key, values, enabled_regex_matching, invert_match, invert)\n\
             shardtel.toml:25: processors.tail_sampling.policies[4].sampling_percentage: sampling_percentage and percent mean the same thing (set only one)\n\
             shardtel.toml:29: processors.tail_sampling.policies[5].percent: 101 is not in the range 0 to 100\n\
             shardtel.toml:33: processors.tail_sampling.policies[6].policies[0].type: policy type \"composite\" is not allowed inside an \"and\" policy (allowed: always_sample, status_code, latency, string_attribute, numeric_attribute, boolean_attribute, probabilistic, rate_limiting, span_count, trace_state)\n\
             shardtel.toml:35: processors.tail_sampling.policies[7].name: policy name \"g\" is used twice in this list (names must be unique)\n\
             shardtel.toml:41: processors.tail_sampling.policies[8].min_value: min_value (5) is greater than max_value (1)\n\
             shardtel.toml:47: processors.tail_sampling.policies[9].upper_threshold: threshold (2s) is greater than upper_threshold (1s)\n\
             shardtel.toml:48: processors.tail_sampling.policies[10]: missing required key (set at least one of min_spans, max_spans)"
        );
    }

    #[test]
    fn policies_are_required() {
        assert_eq!(
            err("[processors.tail_sampling]\ndecision_wait = \"10s\"\n"),
            "shardtel.toml:1: processors.tail_sampling.policies: at least one policy is required (each policy is a table with a name and a type)"
        );
        assert_eq!(
            err("[processors.tail_sampling]\npolicies = []\n"),
            "shardtel.toml:2: processors.tail_sampling.policies: at least one policy is required (each policy is a table with a name and a type)"
        );
        assert_eq!(
            err("[processors.tail_sampling]\npolicies = [{ name = \"d\", type = \"drop\" }]\n"),
            "shardtel.toml:2: processors.tail_sampling.policies[0].policies: at least one policy is required (each policy is a table with a name and a type)"
        );
    }

    #[test]
    fn composite_references_are_checked() {
        let text = r#"[processors.tail_sampling]
[[processors.tail_sampling.policies]]
name = "c"
type = "composite"
max_total_spans_per_second = 100
policy_order = ["a", "zz", "a"]
rate_allocation = [{ policy = "a", percent = 80 }, { policy = "b", percent = 30 }, { policy = "q", percent = 1 }]
policies = [{ name = "a", type = "always_sample" }, { name = "b", type = "always_sample" }]
"#;
        assert_eq!(
            err(text),
            "shardtel.toml:6: processors.tail_sampling.policies[0].policy_order: no sub-policy is named \"zz\" (sub-policies: a, b)\n\
             shardtel.toml:6: processors.tail_sampling.policies[0].policy_order: \"a\" is listed twice\n\
             shardtel.toml:6: processors.tail_sampling.policies[0].policy_order: sub-policy \"b\" is not listed (list every sub-policy once, in evaluation order)\n\
             shardtel.toml:7: processors.tail_sampling.policies[0].rate_allocation: no sub-policy is named \"q\" (sub-policies: a, b)\n\
             shardtel.toml:7: processors.tail_sampling.policies[0].rate_allocation: rate allocations add up to 111% (at most 100%)"
        );
    }

    #[test]
    fn tail_sampling_only_in_the_traces_pipeline() {
        let text = format!(
            "{DESIGN_SKETCH}[pipelines.logs]\nreceivers = [\"otlp\"]\nprocessors = [\"tail_sampling\"]\nexporters = [\"blackhole\"]\n"
        );
        let errors = Config::from_str_with_env(&format!("{BASE}{text}"), "x.toml", &|_| None)
            .unwrap_err()
            .to_string();
        assert_eq!(
            errors,
            "x.toml:30: pipelines.logs.processors: processor \"tail_sampling\" (type tail_sampling) processes traces only; remove it from the logs pipeline"
        );
    }
}
