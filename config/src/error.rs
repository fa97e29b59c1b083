//! Configuration errors: one [`ConfigError`] per problem, each naming the file, the line, the
//! dotted key and what is allowed; [`ConfigErrors`] collects all of them.

use std::fmt;
use std::time::Duration;

use crate::units::{format_duration, format_size};

/// All problems found in one configuration.
///
/// Loading collects every problem it can find rather than stopping at the first one; `Display`
/// prints one problem per line, sorted by line number.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems, in the order they are displayed.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// How many problems were found.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no problem (never the case for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// One configuration problem.
///
/// Displays as `origin:line: key: message`, for example
/// `shardtel.toml:12: exporters.tempo.endpoint: invalid url "htp:/x" (expected http://host:port or https://host:port)`.
/// The line is left out when unknown and the key when the problem is not about one key (syntax
/// errors, environment variables).
#[derive(Debug)]
pub struct ConfigError {
    /// The file name (or other origin, e.g. `<embedded default>`) the problem is in.
    pub origin: String,
    /// 1-based line in the original (not environment-substituted) text, when known.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `exporters.tempo.endpoint`; empty when the problem has no key.
    pub key: String,
    /// What is wrong.
    pub kind: ConfigErrorKind,
}

impl ConfigError {
    /// A problem with `key` whose file and line are not known (yet).
    pub fn new(key: impl Into<String>, kind: ConfigErrorKind) -> Self {
        ConfigError {
            origin: String::new(),
            line: None,
            key: key.into(),
            kind,
        }
    }

    /// The same problem placed at `origin:line`.
    pub fn at(mut self, origin: &str, line: Option<usize>) -> Self {
        self.origin = origin.to_string();
        self.line = line;
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.origin.is_empty() {
            f.write_str(&self.origin)?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            f.write_str(": ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// The kind of component a pipeline refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComponentKind {
    /// `[receivers.NAME]`
    Receiver,
    /// `[processors.NAME]`
    Processor,
    /// `[exporters.NAME]`
    Exporter,
}

impl ComponentKind {
    /// The noun with its indefinite article, e.g. "an exporter".
    pub fn with_article(self) -> &'static str {
        match self {
            ComponentKind::Receiver => "a receiver",
            ComponentKind::Processor => "a processor",
            ComponentKind::Exporter => "an exporter",
        }
    }

    /// Plural noun, e.g. "exporters".
    pub fn plural(self) -> &'static str {
        match self {
            ComponentKind::Receiver => "receivers",
            ComponentKind::Processor => "processors",
            ComponentKind::Exporter => "exporters",
        }
    }
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComponentKind::Receiver => "receiver",
            ComponentKind::Processor => "processor",
            ComponentKind::Exporter => "exporter",
        })
    }
}

/// What is wrong; the message says what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    #[error("cannot read config file: {source}")]
    Io {
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("invalid toml: {message}")]
    Syntax {
        /// The TOML parser's description.
        message: String,
    },
    /// `${NAME}` without a default and `NAME` is not set.
    #[error(
        "environment variable {name} is not set (set it, or give a default: ${{{name}:-default}})"
    )]
    EnvVarUnset {
        /// The variable.
        name: String,
    },
    /// A malformed `${...}` reference.
    #[error("invalid environment reference {text:?}: {reason} (write ${{NAME}} or ${{NAME:-default}}; $$ is a literal $)")]
    EnvSyntax {
        /// The reference as written (possibly cut at the end of the line).
        text: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `${NAME}` whose value would change the file's structure where the reference sits (see
    /// the `env` module): it is refused rather than let it add keys, tables or comments.
    #[error("the value of environment variable {name} {reason}")]
    EnvValueUnfit {
        /// The variable (its default's text when the default was used).
        name: String,
        /// What is wrong with the value there, and what would work.
        reason: &'static str,
    },
    /// A key that this table does not have.
    #[error("unknown key (allowed: {})", .allowed.join(", "))]
    UnknownKey {
        /// The keys the table accepts.
        allowed: Vec<&'static str>,
    },
    /// A required key is absent.
    #[error("missing required key ({hint})")]
    MissingKey {
        /// What to write, e.g. `path = "./traces.jsonl"`.
        hint: &'static str,
    },
    /// The value has the wrong TOML type.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What the key accepts.
        expected: &'static str,
        /// The type (and value, for scalars) that was given.
        found: String,
    },
    /// A string that is not one of a fixed set of words.
    #[error("invalid value {value:?} (allowed: {})", .allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "))]
    NotOneOf {
        /// The value given.
        value: String,
        /// The accepted values.
        allowed: &'static [&'static str],
    },
    /// A malformed URL.
    #[error("invalid url {value:?} (expected http://host:port or https://host:port)")]
    InvalidUrl {
        /// The value given.
        value: String,
    },
    /// An OTLP/gRPC endpoint with a path.
    #[error("{value:?}: an OTLP/gRPC endpoint takes no path (expected http://host:port)")]
    UnexpectedUrlPath {
        /// The value given.
        value: String,
    },
    /// A malformed listen address.
    #[error("invalid address {value:?} (expected ip:port like \"0.0.0.0:4317\" or \"[::]:4317\", or false to disable)")]
    InvalidAddress {
        /// The value given.
        value: String,
    },
    /// A malformed byte size.
    #[error("invalid size {value:?} (expected a number of bytes or a string like \"512KiB\", \"4MiB\", \"1GB\")")]
    InvalidSize {
        /// The value given.
        value: String,
    },
    /// A malformed duration.
    #[error(
        "invalid duration {value:?} (expected a string like \"200ms\", \"10s\", \"1m\", \"1h30m\")"
    )]
    InvalidDuration {
        /// The value given.
        value: String,
    },
    /// A number without a unit where a duration is expected.
    #[error("duration {value} has no unit (write e.g. \"{value}s\" or \"{value}ms\")")]
    DurationWithoutUnit {
        /// The integer given.
        value: i64,
    },
    /// A number below its minimum.
    #[error("{value} is too small (minimum {min})")]
    TooSmall {
        /// The value given, formatted with its unit.
        value: String,
        /// The minimum, formatted with its unit.
        min: String,
    },
    /// A number above its maximum.
    #[error("{value} is too large (maximum {max})")]
    TooLarge {
        /// The value given, formatted with its unit.
        value: String,
        /// The maximum, formatted with its unit.
        max: String,
    },
    /// A string that must not be empty.
    #[error("must not be empty")]
    Empty,
    /// `[exporters.NAME]` or `[processors.NAME]` without `type`, and NAME is not a type.
    #[error("missing key \"type\" ({name:?} is not {} type; {})", .kind.with_article(), allowed_types(*.kind, .allowed))]
    MissingType {
        /// Receiver, processor or exporter.
        kind: ComponentKind,
        /// The table name.
        name: String,
        /// The types this build supports.
        allowed: &'static [&'static str],
    },
    /// A `type` this build does not know at all.
    #[error("unknown {kind} type {ty:?} ({})", allowed_types(*.kind, .allowed))]
    UnknownType {
        /// Receiver, processor or exporter.
        kind: ComponentKind,
        /// The type given.
        ty: String,
        /// The types this build supports.
        allowed: &'static [&'static str],
    },
    /// A `type` that shardtel plans (DESIGN.md) but this build does not implement.
    #[error("{kind} type {ty:?} is not supported by this build yet")]
    UnsupportedType {
        /// Receiver, processor or exporter.
        kind: ComponentKind,
        /// The type given.
        ty: String,
    },
    /// `queue.overflow = "drop_oldest"` with an in-memory queue.
    #[error("overflow = \"drop_oldest\" needs storage = \"disk\" (an in-memory queue refuses when full)")]
    DropOldestNeedsDisk,
    /// A pipeline names a component that is not defined.
    #[error("{kind} {name:?} is not defined ({})", defined_list(*.kind, .defined))]
    Undefined {
        /// Receiver, processor or exporter.
        kind: ComponentKind,
        /// The name used.
        name: String,
        /// The names that are defined.
        defined: Vec<String>,
    },
    /// A pipeline lists the same component twice.
    #[error("{kind} {name:?} is listed twice")]
    ListedTwice {
        /// Receiver, processor or exporter.
        kind: ComponentKind,
        /// The name listed twice.
        name: String,
    },
    /// A pipeline without receivers or without exporters.
    #[error("a pipeline needs at least one {kind}")]
    EmptyPipeline {
        /// Receiver or exporter.
        kind: ComponentKind,
    },
    /// No `[pipelines.*]` table.
    #[error("no pipeline is defined (define at least one of [pipelines.traces], [pipelines.metrics], [pipelines.logs])")]
    NoPipelines,
    /// A receiver with every listener disabled.
    #[error("every listener ({}) is disabled (enable at least one)", .keys.join(", "))]
    NoListener {
        /// The listener keys.
        keys: &'static [&'static str],
    },
    /// A receiver in the pipeline of a signal it does not receive.
    #[error("receiver {name:?} receives {supported} only; remove it from the {signal} pipeline")]
    ReceiverSignal {
        /// The receiver's name.
        name: String,
        /// The signal it receives.
        supported: shardtel_protocol::Signal,
        /// The pipeline's signal.
        signal: shardtel_protocol::Signal,
    },
    /// `[receivers.otlp]` with both protocols disabled.
    #[error("grpc and http are both disabled (enable at least one)")]
    NoOtlpProtocol,
    /// Two listeners on the same port.
    #[error("port {port} is already used by {other}")]
    PortInUse {
        /// The port.
        port: u16,
        /// The key of the other listener.
        other: String,
    },
    /// `retry.initial_interval` greater than `retry.max_interval`.
    #[error("initial_interval ({}) is greater than max_interval ({})", format_duration(*.initial), format_duration(*.max))]
    RetryIntervalsOrder {
        /// `initial_interval`.
        initial: Duration,
        /// `max_interval`.
        max: Duration,
    },
    /// `queue.max_bytes` smaller than one batch.
    #[error("{} is smaller than batch.max_bytes ({}); the queue must hold at least one batch", format_size(*.queue), format_size(*.batch))]
    QueueSmallerThanBatch {
        /// `queue.max_bytes`.
        queue: u64,
        /// `batch.max_bytes`.
        batch: u64,
    },
    /// Two file exporters writing the same file.
    #[error("path {path:?} is already used by {other}")]
    DuplicatePath {
        /// The path.
        path: String,
        /// The key of the other exporter's path.
        other: String,
    },
    /// A header name or value that HTTP does not allow.
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader {
        /// The header name.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A malformed `log_level`.
    #[error("invalid log level {value:?} (expected off, error, warn, info, debug or trace, optionally per module: \"info,shardtel_engine=debug\")")]
    InvalidLogLevel {
        /// The value given.
        value: String,
    },
    /// `cores = []`.
    #[error("empty cpu list (use \"all\" or cpu ids like [0, 1])")]
    EmptyCpuList,
    /// A malformed cpu list string.
    #[error("invalid cpu list {value:?} (expected \"all\", a list like \"0-3,6\", or an array like [0, 1])")]
    InvalidCpuList {
        /// The value given.
        value: String,
    },
    /// A listed CPU that is not online or not in this process's affinity mask.
    #[error("cpu {cpu} is not online or not available to this process (usable cpus: {usable})")]
    CpuUnavailable {
        /// The cpu id.
        cpu: usize,
        /// The usable cpus as a list like `0-3,6`.
        usable: String,
    },
    /// A CPU listed twice.
    #[error("cpu {cpu} is listed twice")]
    DuplicateCpu {
        /// The cpu id.
        cpu: usize,
    },
    /// A number outside its range.
    #[error("{value} is not in the range {range}")]
    NotInRange {
        /// The value given.
        value: String,
        /// The range, e.g. "0 to 100".
        range: &'static str,
    },
    /// A `[processors.NAME.policies]` list without a policy.
    #[error("at least one policy is required (each policy is a table with a name and a type)")]
    NoPolicies,
    /// A policy type that does not exist.
    #[error("unknown policy type {ty:?} (allowed: {})", .allowed.join(", "))]
    UnknownPolicyType {
        /// The type given.
        ty: String,
        /// The types allowed in this list.
        allowed: &'static [&'static str],
    },
    /// A policy type that exists but is not allowed in this list (e.g. `composite` inside `and`).
    #[error("policy type {ty:?} is not allowed inside {} {inside:?} policy (allowed: {})", if *.inside == "and" { "an" } else { "a" }, .allowed.join(", "))]
    PolicyTypeNotAllowed {
        /// The type given (boxed, so that this variant is no larger than the others).
        ty: Box<str>,
        /// The type of the enclosing policy: `and`, `drop` or `composite`.
        inside: &'static str,
        /// The types allowed there.
        allowed: &'static [&'static str],
    },
    /// Two policies of one list with the same name.
    #[error("policy name {name:?} is used twice in this list (names must be unique)")]
    DuplicatePolicyName {
        /// The name.
        name: String,
    },
    /// A condition or statement of the statement language that does not parse or check.
    #[error("invalid statement `{statement}`: {message}")]
    InvalidStatement {
        /// The text.
        statement: String,
        /// What is wrong.
        message: String,
    },
    /// A route names an exporter that the pipeline does not list.
    #[error("exporter {name:?} is not listed in pipelines.{signal}.exporters (listed: {})", .listed.join(", "))]
    RouteExporterNotListed {
        /// The exporter.
        name: String,
        /// The pipeline.
        signal: shardtel_protocol::Signal,
        /// What the pipeline lists.
        listed: Vec<String>,
    },
    /// A route whose condition does not check in the context of a pipeline that lists its
    /// routing processor (e.g. `trace.has_error` in a logs pipeline).
    #[error("condition `{condition}` cannot route {signal} (the routing processor is listed in pipelines.{signal}.processors): {message}")]
    RouteConditionSignal {
        /// The condition's text.
        condition: String,
        /// The pipeline.
        signal: shardtel_protocol::Signal,
        /// What is wrong in that pipeline's item context.
        message: String,
    },
    /// A spanmetrics processor without a metrics pipeline to hand its metrics to.
    #[error("spanmetrics processor {name} needs a [pipelines.metrics] for its metrics")]
    SpanMetricsWithoutMetricsPipeline {
        /// The processor.
        name: String,
    },
    /// A routing processor that is not the last of its pipeline.
    #[error("routing processor {name} must be the last processor of the pipeline (it chooses the exporters)")]
    RoutingNotLast {
        /// The processor.
        name: String,
    },
    /// A regular expression that does not compile.
    #[error("invalid regex {pattern:?}: {message}")]
    InvalidRegex {
        /// The pattern.
        pattern: String,
        /// The regex compiler's explanation (first line).
        message: String,
    },
    /// A name that refers to no sub-policy of a composite policy.
    #[error("no sub-policy is named {name:?} (sub-policies: {})", .defined.join(", "))]
    UnknownSubPolicy {
        /// The name used.
        name: String,
        /// The sub-policy names.
        defined: Vec<String>,
    },
    /// A composite sub-policy missing from `policy_order`.
    #[error("sub-policy {name:?} is not listed (list every sub-policy once, in evaluation order)")]
    NotInPolicyOrder {
        /// The sub-policy.
        name: String,
    },
    /// A name listed twice in `policy_order` or `rate_allocation`.
    #[error("{name:?} is listed twice")]
    NameListedTwice {
        /// The name.
        name: String,
    },
    /// `rate_allocation` percentages adding up to more than 100.
    #[error("rate allocations add up to {total}% (at most 100%)")]
    AllocationOver100 {
        /// The sum of the percentages.
        total: u64,
    },
    /// A lower bound greater than its upper bound.
    #[error("{lower} is greater than {upper}")]
    BoundsOrder {
        /// The lower bound's key and value, e.g. `min_value (5)`.
        lower: String,
        /// The upper bound's key and value.
        upper: String,
    },
    /// Two keys that mean the same thing are both set.
    #[error("{key} and {other} mean the same thing (set only one)")]
    AliasConflict {
        /// This key.
        key: &'static str,
        /// The other key.
        other: &'static str,
    },
    /// None of a group of keys of which at least one is required.
    #[error("missing required key (set at least one of {})", .keys.join(", "))]
    MissingOneOf {
        /// The keys.
        keys: &'static [&'static str],
    },
    /// A processor in the pipeline of a signal it does not process.
    #[error("processor {name:?} (type {}) processes {} only; remove it from the {signal} pipeline", .kind.0, .kind.1)]
    ProcessorSignal {
        /// The processor's name.
        name: String,
        /// Its type, and the signals it processes (e.g. `traces` or `traces and logs`).
        kind: Box<(&'static str, &'static str)>,
        /// The pipeline's signal.
        signal: shardtel_protocol::Signal,
    },
    /// Two keys of which at most one may be set.
    #[error("set only one of {}", .keys.join(", "))]
    KeyConflict {
        /// The keys.
        keys: &'static [&'static str],
    },
    /// `extract` with a regex that has no named group.
    #[error("regex {pattern:?} has no named group (write e.g. (?P<name>...))")]
    NoNamedGroup {
        /// The pattern.
        pattern: String,
    },
    /// `key = "log.body"` where there is no log body to change.
    #[error("\"log.body\" names a log record's body, which the resource processor cannot change")]
    LogBodyNotAllowed,
    /// A memory limiter's spike limit in another unit than its limit.
    #[error("{spike} cannot go with {limit} (use {use_instead})")]
    MixedMemoryUnits {
        /// The limit's key.
        limit: &'static str,
        /// The spike limit's key.
        spike: &'static str,
        /// The spike key that goes with the limit.
        use_instead: &'static str,
    },
    /// A memory limiter whose spike limit is not below its limit.
    #[error("{spike} must be below {limit} (soft limit = limit - spike)")]
    SpikeNotBelowLimit {
        /// The spike limit's key.
        spike: &'static str,
        /// The limit's key.
        limit: &'static str,
    },
    /// Pipelines that list two different memory limiters.
    #[error("memory limiter {name:?} is listed, but {other:?} is already used by another pipeline (the limit is process-wide: use one memory_limiter in every pipeline)")]
    SecondMemoryLimiter {
        /// This one.
        name: String,
        /// The one listed first.
        other: String,
    },
    /// A traces pipeline that lists a second `tail_sampling` processor.
    #[error("tail_sampling processor {name:?} is listed after {other:?} (a pipeline samples once: combine their policies in one tail_sampling processor)")]
    SecondTailSampling {
        /// This one.
        name: String,
        /// The one listed first.
        other: String,
    },
    /// An exporter in the pipeline of a signal it does not export.
    #[error("exporter {name:?} (type {ty}) exports {supported} only; remove it from the {signal} pipeline")]
    ExporterSignal {
        /// The exporter's name.
        name: String,
        /// Its type.
        ty: &'static str,
        /// The signal it exports.
        supported: shardtel_protocol::Signal,
        /// The pipeline's signal.
        signal: shardtel_protocol::Signal,
    },
    // The Prometheus scrape receiver (`[receivers.prometheus]`).
    /// Two scrape configs with one `job_name`.
    #[error("job_name {name:?} is used by another scrape config (job names must be unique)")]
    DuplicateJobName {
        /// The name.
        name: String,
    },
    /// A scrape target that is not `host:port`.
    #[error(
        "invalid target {value:?} (expected host:port like \"127.0.0.1:9100\", or a host name)"
    )]
    InvalidTarget {
        /// The value given.
        value: String,
    },
    /// A label name Prometheus does not allow, or a reserved one.
    #[error("invalid label name {value:?} (letters, digits and '_', not starting with a digit or \"__\")")]
    InvalidLabelName {
        /// The value given.
        value: String,
    },
    /// `scrape_timeout` longer than `scrape_interval`.
    #[error("scrape_timeout {} is longer than scrape_interval {}", crate::units::format_duration(*.timeout), crate::units::format_duration(*.interval))]
    ScrapeTimeoutTooLong {
        /// The timeout.
        timeout: std::time::Duration,
        /// The interval.
        interval: std::time::Duration,
    },
    // Kafka (`[exporters.NAME] type = "kafka"`, `[receivers.kafka]`).
    /// A broker address that is not `host:port`.
    #[error("invalid broker address {value:?} (expected host:port like \"127.0.0.1:9092\")")]
    InvalidBroker {
        /// The value given.
        value: String,
    },
    /// A Kafka topic name with characters Kafka does not allow, or too long.
    #[error("invalid topic {value:?} (up to 249 letters, digits, '.', '_' and '-')")]
    InvalidTopic {
        /// The value given.
        value: String,
    },
    /// Kafka settings that do not fit together.
    #[error("{reason}")]
    KafkaSetting {
        /// What is wrong and how to fix it.
        reason: &'static str,
    },
    // TLS and authentication (`[receivers.otlp.tls]`, `[receivers.otlp.auth]`,
    // `[exporters.NAME.tls]`).
    /// TLS settings that do not fit together.
    #[error("{reason}")]
    TlsSetting {
        /// What is wrong and how to fix it.
        reason: &'static str,
    },
    /// `[exporters.NAME.tls]` on an exporter none of whose endpoints is `https://`.
    #[error(
        "tls settings apply to https:// endpoints only, and {endpoint} is plaintext (use https://)"
    )]
    TlsNeedsHttps {
        /// The exporter's (first) endpoint.
        endpoint: String,
    },
    /// A `server_name` that is neither a DNS name nor an IP address.
    #[error("invalid server name {value:?} (expected a DNS name like \"tempo.internal\" or an IP address)")]
    InvalidServerName {
        /// The value given.
        value: String,
    },
    /// A bearer token with characters RFC 6750 does not allow. The token itself is never
    /// shown.
    #[error("a bearer token may only contain letters, digits and -._~+/ followed by = padding (RFC 6750); the value is not shown")]
    InvalidToken,
    /// A file named by the configuration (certificate, key, CA bundle, token file) is missing or
    /// does not parse; found by a [`crate::CheckFiles`] implementation.
    #[error("{}: {source}", .path.display())]
    BadFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn allowed_types(kind: ComponentKind, allowed: &[&str]) -> String {
    if allowed.is_empty() {
        format!("this build supports no {kind} types yet")
    } else {
        format!("allowed types: {}", allowed.join(", "))
    }
}

fn defined_list(kind: ComponentKind, defined: &[String]) -> String {
    if defined.is_empty() {
        format!("no {} are defined", kind.plural())
    } else {
        format!("defined {}: {}", kind.plural(), defined.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_line_and_key() {
        let e = ConfigError::new(
            "exporters.tempo.endpoint",
            ConfigErrorKind::InvalidUrl {
                value: "htp:/x".into(),
            },
        )
        .at("shardtel.toml", Some(12));
        assert_eq!(
            e.to_string(),
            "shardtel.toml:12: exporters.tempo.endpoint: invalid url \"htp:/x\" (expected http://host:port or https://host:port)"
        );
        let e = ConfigError::new("", ConfigErrorKind::NoPipelines).at("a.toml", None);
        assert_eq!(
            e.to_string(),
            "a.toml: no pipeline is defined (define at least one of [pipelines.traces], [pipelines.metrics], [pipelines.logs])"
        );
        let e = ConfigError::new("engine.cores", ConfigErrorKind::DuplicateCpu { cpu: 1 });
        assert_eq!(e.to_string(), "engine.cores: cpu 1 is listed twice");
    }

    #[test]
    fn errors_display_one_per_line() {
        let errors = ConfigErrors(vec![
            ConfigError::new("a", ConfigErrorKind::Empty).at("f", Some(1)),
            ConfigError::new("b", ConfigErrorKind::EmptyCpuList).at("f", Some(2)),
        ]);
        assert_eq!(
            errors.to_string(),
            "f:1: a: must not be empty\nf:2: b: empty cpu list (use \"all\" or cpu ids like [0, 1])"
        );
        assert_eq!(errors.len(), 2);
    }

    #[test]
    fn config_error_stays_small() {
        // clippy's result_large_err limit is 128 bytes for the whole ConfigError.
        assert!(std::mem::size_of::<ConfigError>() < 128);
    }

    #[test]
    fn type_lists() {
        let kind = ConfigErrorKind::UnknownType {
            kind: ComponentKind::Processor,
            ty: "foo".into(),
            allowed: &[],
        };
        assert_eq!(
            kind.to_string(),
            "unknown processor type \"foo\" (this build supports no processor types yet)"
        );
        let kind = ConfigErrorKind::Undefined {
            kind: ComponentKind::Exporter,
            name: "kafka".into(),
            defined: vec![],
        };
        assert_eq!(
            kind.to_string(),
            "exporter \"kafka\" is not defined (no exporters are defined)"
        );
    }
}
