//! `type = "routing"` and `type = "transform"`: the processors written in the statement
//! language ([`crate::ottl`]), each condition and statement parsed and checked here so a
//! mistake is a configuration error naming its file, line and text.
//!
//! ```toml
//! [processors.route]
//! type = "routing"
//! default = ["tempo"]
//! [[processors.route.routes]]
//! condition = 'resource.attributes["deployment.environment"] == "dev"'
//! exporters = ["debug_store"]
//! [[processors.route.routes]]
//! condition = 'trace.has_error'
//! exporters = ["tempo", "errors_kafka"]
//!
//! [processors.tidy]
//! type = "transform"
//! [[processors.tidy.trace_statements]]
//! context = "span"
//! statements = ['set(attributes["team"], "shop") where resource.attributes["service.name"] == "checkout"']
//! ```

use shardtel_protocol::Signal;
use toml::de::DeValue;

use crate::decode::{self, Decoder, Section};
use crate::error::ConfigErrorKind;
use crate::ottl::{parse_condition, parse_statement, Context, Expr, LangError, Statement};

/// `type = "routing"`: sends each trace (all its spans in a batch), log record or data point
/// to the exporters of the first route whose condition holds, or to `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Exporters of items no route matches (may be empty: such items are dropped, counted).
    pub default: Vec<String>,
    /// The routes, tried in order; the first that matches wins.
    pub routes: Vec<Route>,
}

impl RoutingConfig {
    /// The keys `type = "routing"` accepts.
    pub const KEYS: &'static [&'static str] = &["type", "default", "routes"];

    /// Whether every route's condition is valid for `signal`'s items (span, log record, data
    /// point context).
    pub fn supports(&self, signal: Signal) -> bool {
        self.routes
            .iter()
            .all(|r| r.parsed[signal.index()].is_some())
    }

    /// Every exporter some route or the default names.
    pub fn exporters(&self) -> impl Iterator<Item = &String> {
        self.default
            .iter()
            .chain(self.routes.iter().flat_map(|r| r.exporters.iter()))
    }
}

/// One `[[processors.NAME.routes]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The condition's text.
    pub condition: String,
    /// The condition parsed for each signal's context (index [`Signal::index`]): span, data
    /// point, log record; `None` where it is not valid.
    pub parsed: [Option<Expr>; 3],
    /// Where matching items go (at least one).
    pub exporters: Vec<String>,
}

impl Route {
    /// The condition for `signal`'s items.
    pub fn condition(&self, signal: Signal) -> Option<&Expr> {
        self.parsed[signal.index()].as_ref()
    }
}

/// The context of each signal's items.
pub fn item_context(signal: Signal) -> Context {
    match signal {
        Signal::Traces => Context::Span,
        Signal::Metrics => Context::DataPoint,
        Signal::Logs => Context::Log,
    }
}

/// `type = "transform"`: statements applied in order to every item of their context.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransformConfig {
    /// `trace_statements`, `metric_statements`, `log_statements` (index [`Signal::index`]).
    pub groups: [Vec<StatementGroup>; 3],
}

impl TransformConfig {
    /// The keys `type = "transform"` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "type",
        "error_mode",
        "trace_statements",
        "metric_statements",
        "log_statements",
    ];

    /// The groups of `signal`'s pipeline (empty: the processor does not handle it).
    pub fn groups(&self, signal: Signal) -> &[StatementGroup] {
        &self.groups[signal.index()]
    }
}

/// One `[[processors.NAME.trace_statements]]` (or metric, log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementGroup {
    /// Which items the statements run on.
    pub context: Context,
    /// The statements, in order.
    pub statements: Vec<Statement>,
}

fn lang_error(text: &str, e: LangError) -> ConfigErrorKind {
    ConfigErrorKind::InvalidStatement {
        statement: text.to_string(),
        message: e.message,
    }
}

/// At most this many routes in one routing processor.
pub const MAX_ROUTES: usize = 64;

pub(crate) fn decode_routing(d: &mut Decoder<'_>, s: &Section<'_, '_>) -> Option<RoutingConfig> {
    d.check_keys(s, RoutingConfig::KEYS);
    let default = d.string_list(s, "default").unwrap_or_default();
    let path = s.key("routes");
    let Some(value) = s.get("routes") else {
        d.require(
            s,
            "routes",
            "[[...routes]] tables like { condition = 'trace.has_error', exporters = [\"errors\"] }",
        );
        return None;
    };
    let DeValue::Array(list) = value.get_ref() else {
        d.value(path, value, |v| {
            Err::<(), _>(ConfigErrorKind::WrongType {
                expected: "an array of route tables ([[...routes]])",
                found: decode::describe(v),
            })
        });
        return None;
    };
    d.value(path.clone(), value, |_| {
        // A route is a bit of a 64-bit set while traces are routed.
        if list.len() > MAX_ROUTES {
            return Err(ConfigErrorKind::TooLarge {
                value: format!("{} routes", list.len()),
                max: format!("{MAX_ROUTES} routes"),
            });
        }
        Ok(())
    });
    let mut routes = Vec::new();
    let mut ok = true;
    for (i, element) in list.iter().enumerate() {
        let table = d.table(
            format!("{path}[{i}]"),
            element,
            Some(&["condition", "exporters"][..]),
        );
        if !table.exists() {
            ok = false;
            continue;
        }
        let Some(cv) = table.get("condition") else {
            d.require(&table, "condition", "condition = 'trace.has_error'");
            ok = false;
            continue;
        };
        let route = d.value(table.key("condition"), cv, |v| {
            let text = decode::non_empty_string(v)?;
            let parsed =
                Signal::ALL.map(|signal| parse_condition(&text, item_context(signal), true));
            if parsed.iter().all(|p| p.is_err()) {
                // Report the error of the context whose paths the condition uses most likely:
                // the span context's, unless it names log or metric paths.
                let pick = if text.contains("severity") || text.contains("body") {
                    Signal::Logs
                } else if text.contains("metric.") {
                    Signal::Metrics
                } else {
                    Signal::Traces
                };
                let e = parsed[pick.index()].clone().unwrap_err();
                return Err(lang_error(&text, e));
            }
            Ok((text, parsed.map(Result::ok)))
        });
        let exporters = d.string_list(&table, "exporters");
        if exporters.as_ref().is_some_and(Vec::is_empty) {
            d.report_at_key(table.key("exporters"), ConfigErrorKind::Empty);
            ok = false;
            continue;
        }
        if exporters.is_none() && table.get("exporters").is_none() {
            d.require(&table, "exporters", "exporters = [\"name\", ...]");
        }
        match (route, exporters) {
            (Some((condition, parsed)), Some(exporters)) => routes.push(Route {
                condition,
                parsed,
                exporters,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(RoutingConfig { default, routes })
}

pub(crate) fn decode_transform(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
) -> Option<TransformConfig> {
    d.check_keys(s, TransformConfig::KEYS);
    d.field(s, "error_mode", |v| {
        decode::one_of(v, &["ignore", "propagate"])
    });
    let mut config = TransformConfig::default();
    let mut ok = true;
    let mut any = false;
    for (signal, key, contexts) in [
        (
            Signal::Traces,
            "trace_statements",
            &["resource", "span", "spanevent"][..],
        ),
        (
            Signal::Metrics,
            "metric_statements",
            &["resource", "datapoint"][..],
        ),
        (Signal::Logs, "log_statements", &["resource", "log"][..]),
    ] {
        let Some(value) = s.get(key) else { continue };
        any = true;
        let path = s.key(key);
        let DeValue::Array(list) = value.get_ref() else {
            d.value(path, value, |v| {
                Err::<(), _>(ConfigErrorKind::WrongType {
                    expected: "an array of tables with context and statements",
                    found: decode::describe(v),
                })
            });
            ok = false;
            continue;
        };
        d.value(path.clone(), value, |_| Ok(()));
        for (i, element) in list.iter().enumerate() {
            let table = d.table(
                format!("{path}[{i}]"),
                element,
                Some(&["context", "statements"][..]),
            );
            if !table.exists() {
                ok = false;
                continue;
            }
            let context = match table.get("context") {
                Some(_) => d.field(&table, "context", |v| {
                    let name = decode::one_of(v, contexts)?;
                    Ok(Context::ALL
                        .iter()
                        .find(|(_, n)| *n == name)
                        .map(|(c, _)| *c)
                        .unwrap_or(Context::Span))
                }),
                None => {
                    d.require(
                        &table,
                        "context",
                        "context = \"span\" (or resource, spanevent, log, datapoint)",
                    );
                    None
                }
            };
            let Some(context) = context else {
                ok = false;
                continue;
            };
            let spath = table.key("statements");
            let Some(sv) = table.get("statements") else {
                d.require(
                    &table,
                    "statements",
                    "statements = ['set(attributes[\"k\"], \"v\")']",
                );
                ok = false;
                continue;
            };
            let DeValue::Array(texts) = sv.get_ref() else {
                d.value(spath, sv, |v| {
                    Err::<(), _>(ConfigErrorKind::WrongType {
                        expected: "an array of statement strings",
                        found: decode::describe(v),
                    })
                });
                ok = false;
                continue;
            };
            d.value(spath.clone(), sv, |_| Ok(()));
            let mut statements = Vec::new();
            for (j, text) in texts.iter().enumerate() {
                let parsed = d.value(format!("{spath}[{j}]"), text, |v| {
                    let text = decode::non_empty_string(v)?;
                    parse_statement(&text, context).map_err(|e| lang_error(&text, e))
                });
                match parsed {
                    Some(st) => statements.push(st),
                    None => ok = false,
                }
            }
            config.groups[signal.index()].push(StatementGroup {
                context,
                statements,
            });
        }
    }
    if !any {
        d.require(
            s,
            "trace_statements",
            "trace_statements, metric_statements or log_statements",
        );
        return None;
    }
    ok.then_some(config)
}

/// `type = "spanmetrics"`: request, error and duration metrics from spans, computed on each
/// span's owner core (before `tail_sampling` when listed before it, so dropped traces count) and
/// handed to the metrics pipeline every `flush_interval`, as delta sums and histograms (the
/// `prometheusremotewrite` exporter accumulates them into cumulative series) or, with
/// `aggregation_temporality = "AGGREGATION_TEMPORALITY_CUMULATIVE"`, as cumulative ones (one
/// stream per core, told apart by `collector.instance.id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanMetricsConfig {
    /// Span (then resource) attributes added as labels.
    pub dimensions: Vec<String>,
    /// Explicit histogram bounds, ascending.
    pub buckets: Vec<std::time::Duration>,
    /// Series kept per core; more go to one `otel.metric.overflow="true"` series, counted.
    pub max_series: usize,
    /// How often each core hands its metrics to the metrics pipeline.
    pub flush_interval: std::time::Duration,
    /// Prefix of the metric names: `{namespace}.calls`, `{namespace}.duration`.
    pub namespace: String,
    /// The kind of the duration histogram.
    pub histogram: SpanHistogram,
    /// Delta (the default here) or cumulative sums and histograms.
    pub aggregation_temporality: SpanTemporality,
    /// A series with no span for this long is forgotten at a flush (frees its place under
    /// `max_series`); zero: never.
    pub metrics_expiration: std::time::Duration,
}

/// `aggregation_temporality` of `spanmetrics`, with the Collector's words (and the short forms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanTemporality {
    /// Each flush holds the counts since the last one (shardtel's default).
    Delta,
    /// Each flush holds every series' counts since its first span (the Collector's default).
    Cumulative,
}

impl SpanTemporality {
    /// The words of `aggregation_temporality`.
    pub const NAMES: &'static [&'static str] = &[
        "AGGREGATION_TEMPORALITY_DELTA",
        "AGGREGATION_TEMPORALITY_CUMULATIVE",
        "delta",
        "cumulative",
    ];
}

/// The duration histogram of `spanmetrics`: `histogram = "explicit"` (bounds `buckets`) or
/// `"exponential"` (base-2 exponential buckets, at most `max_size` a point; the scale is
/// chosen per point, as the Collector's spanmetrics connector does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanHistogram {
    /// Explicit bounds (`buckets`).
    Explicit,
    /// Base-2 exponential buckets.
    Exponential {
        /// Buckets a point holds at most (the Collector's default: 160).
        max_size: u32,
    },
}

impl SpanHistogram {
    /// The words of `histogram`.
    pub const NAMES: &'static [&'static str] = &["explicit", "exponential"];
    /// Default `max_size` of exponential histograms (the Collector's).
    pub const DEFAULT_MAX_SIZE: u32 = 160;
}

impl SpanMetricsConfig {
    /// The keys `type = "spanmetrics"` accepts.
    pub const KEYS: &'static [&'static str] = &[
        "type",
        "dimensions",
        "buckets",
        "max_series",
        "flush_interval",
        "namespace",
        "histogram",
        "max_size",
        "aggregation_temporality",
        "metrics_expiration",
    ];
    /// The OpenTelemetry Collector's default bounds, in milliseconds.
    pub const DEFAULT_BUCKETS_MS: &'static [u64] = &[
        2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10_000, 15_000,
    ];
    /// Default `max_series`.
    pub const DEFAULT_MAX_SERIES: usize = 1000;
}

pub(crate) fn decode_spanmetrics(
    d: &mut Decoder<'_>,
    s: &Section<'_, '_>,
) -> Option<SpanMetricsConfig> {
    d.check_keys(s, SpanMetricsConfig::KEYS);
    let dimensions = d.field_or(s, "dimensions", Vec::new(), decode::strings);
    let default_buckets = SpanMetricsConfig::DEFAULT_BUCKETS_MS
        .iter()
        .map(|ms| std::time::Duration::from_millis(*ms))
        .collect();
    let buckets = d.field_or(s, "buckets", default_buckets, |v| {
        let DeValue::Array(list) = v else {
            return Err(ConfigErrorKind::WrongType {
                expected: "an array of durations like [\"2ms\", \"10ms\", \"1s\"]",
                found: decode::describe(v),
            });
        };
        let mut out: Vec<std::time::Duration> = Vec::new();
        for item in list {
            let b = decode::duration(item.get_ref())?;
            if out.last().is_some_and(|last| *last >= b) {
                return Err(ConfigErrorKind::WrongType {
                    expected: "strictly ascending durations",
                    found: format!("{b:?} after {:?}", out.last().copied().unwrap_or_default()),
                });
            }
            out.push(b);
        }
        if out.is_empty() {
            return Err(ConfigErrorKind::Empty);
        }
        Ok(out)
    });
    let max_series = d.field_or(
        s,
        "max_series",
        SpanMetricsConfig::DEFAULT_MAX_SERIES,
        |v| Ok(decode::in_range(decode::count(v, u64::MAX)?, 1, 10_000_000)? as usize),
    );
    let flush_interval = d.field_or(
        s,
        "flush_interval",
        std::time::Duration::from_secs(15),
        |v| decode::min_duration(decode::duration(v)?, std::time::Duration::from_millis(10)),
    );
    let namespace = d.field_or(
        s,
        "namespace",
        "traces.span.metrics".to_string(),
        decode::non_empty_string,
    );
    let kind = d.field_or(s, "histogram", "explicit", |v| {
        decode::one_of(v, SpanHistogram::NAMES)
    });
    let histogram = if kind == "exponential" {
        if s.get("buckets").is_some() {
            d.report_at_key(
                s.key("buckets"),
                ConfigErrorKind::KeyConflict {
                    keys: &["buckets", "histogram = \"exponential\""],
                },
            );
            return None;
        }
        let max_size = d.field_or(s, "max_size", SpanHistogram::DEFAULT_MAX_SIZE, |v| {
            Ok(decode::in_range(decode::count(v, u64::MAX)?, 2, 16_384)? as u32)
        });
        SpanHistogram::Exponential { max_size }
    } else {
        if s.get("max_size").is_some() {
            d.report_at_key(
                s.key("max_size"),
                ConfigErrorKind::KeyConflict {
                    keys: &["max_size", "histogram = \"explicit\""],
                },
            );
            return None;
        }
        SpanHistogram::Explicit
    };
    let aggregation_temporality =
        d.field_or(s, "aggregation_temporality", SpanTemporality::Delta, |v| {
            Ok(match decode::one_of(v, SpanTemporality::NAMES)? {
                "AGGREGATION_TEMPORALITY_CUMULATIVE" | "cumulative" => SpanTemporality::Cumulative,
                _ => SpanTemporality::Delta,
            })
        });
    let metrics_expiration = d.field_or(
        s,
        "metrics_expiration",
        std::time::Duration::ZERO,
        decode::duration,
    );
    Some(SpanMetricsConfig {
        dimensions,
        buckets,
        max_series,
        flush_interval,
        namespace,
        histogram,
        aggregation_temporality,
        metrics_expiration,
    })
}

#[cfg(test)]
mod tests {
    use crate::{Config, ProcessorConfig};

    fn base(extra: &str, processors: &str, exporters: &str) -> String {
        format!(
            "[receivers.otlp]\n[exporters.a]\ntype = \"blackhole\"\n[exporters.b]\ntype = \"blackhole\"\n{extra}\
             [pipelines.traces]\nreceivers = [\"otlp\"]\nprocessors = {processors}\nexporters = {exporters}\n"
        )
    }

    #[test]
    fn routing_decodes_and_checks_exporters_against_the_pipeline() {
        let text = base(
            "[processors.route]\ntype = \"routing\"\ndefault = [\"a\"]\n[[processors.route.routes]]\ncondition = 'trace.has_error'\nexporters = [\"b\"]\n",
            "[\"route\"]",
            "[\"a\", \"b\"]",
        );
        let config = Config::from_str(&text, "shardtel.toml").unwrap();
        let Some(ProcessorConfig::Routing(r)) = config.processors.get("route") else {
            panic!()
        };
        assert_eq!(r.default, ["a"]);
        assert_eq!(r.routes[0].exporters, ["b"]);
        assert!(r.routes[0].condition(crate::Signal::Traces).is_some());
        assert!(r.routes[0].condition(crate::Signal::Logs).is_none());

        let text = base(
            "[processors.route]\ntype = \"routing\"\ndefault = [\"a\"]\n[[processors.route.routes]]\ncondition = 'trace.has_error'\nexporters = [\"c\"]\n",
            "[\"route\"]",
            "[\"a\"]",
        );
        let e = Config::from_str(&text, "shardtel.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "shardtel.toml:11: processors.route.routes[0].exporters: exporter \"c\" is not listed in pipelines.traces.exporters (listed: a)"
        );
    }

    #[test]
    fn bad_route_condition_names_line_and_text() {
        let text = base(
            "[processors.route]\ntype = \"routing\"\n[[processors.route.routes]]\ncondition = 'attributes[\"a\"] = \"b\"'\nexporters = [\"b\"]\n",
            "[\"route\"]",
            "[\"a\", \"b\"]",
        );
        let e = Config::from_str(&text, "shardtel.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("shardtel.toml:9: processors.route.routes[0].condition: invalid statement `attributes[\"a\"] = \"b\"`: at column 17: expected `==` or `!=`"),
            "{e}"
        );
    }

    /// The same routing processor in a logs and a metrics pipeline: each route's condition is
    /// parsed in the log record and data point contexts; `trace.has_error` (traces only) is an
    /// error at its route, naming the file, the line and the pipeline.
    #[test]
    fn routing_in_logs_and_metrics_pipelines() {
        let text = |condition: &str| {
            format!(
                "[receivers.otlp]\n[exporters.a]\ntype = \"blackhole\"\n[exporters.b]\ntype = \"blackhole\"\n\
                 [processors.route]\ntype = \"routing\"\ndefault = [\"a\"]\n\
                 [[processors.route.routes]]\ncondition = '{condition}'\nexporters = [\"b\"]\n\
                 [pipelines.logs]\nreceivers = [\"otlp\"]\nprocessors = [\"route\"]\nexporters = [\"a\", \"b\"]\n\
                 [pipelines.metrics]\nreceivers = [\"otlp\"]\nprocessors = [\"route\"]\nexporters = [\"a\", \"b\"]\n"
            )
        };
        let config = Config::from_str(
            &text(r#"resource.attributes["env"] == "dev" or attributes["x"] == 1"#),
            "shardtel.toml",
        )
        .unwrap();
        let Some(ProcessorConfig::Routing(r)) = config.processors.get("route") else {
            panic!()
        };
        for signal in crate::Signal::ALL {
            assert!(r.routes[0].condition(signal).is_some(), "{signal}");
        }
        // A log path in a metrics pipeline.
        let e = Config::from_str(
            &text("severity_number >= SEVERITY_NUMBER_ERROR"),
            "shardtel.toml",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "shardtel.toml:10: processors.route.routes[0].condition: condition `severity_number >= SEVERITY_NUMBER_ERROR` cannot route metrics (the routing processor is listed in pipelines.metrics.processors): path `severity_number` is not available in the datapoint context (available: attributes[\"key\"], resource.attributes[\"key\"], metric.name)"
        );
        let e = Config::from_str(&text("trace.has_error"), "shardtel.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shardtel.toml:10: processors.route.routes[0].condition: condition `trace.has_error` cannot route logs")
                && e.contains("trace.has_error is for routing traces")
                && e.contains("cannot route metrics"),
            "{e}"
        );
    }

    #[test]
    fn routing_must_come_last() {
        let text = base(
            "[processors.route]\ntype = \"routing\"\ndefault = [\"a\"]\n[[processors.route.routes]]\ncondition = 'trace.has_error'\nexporters = [\"b\"]\n[processors.f]\ntype = \"attributes\"\n[[processors.f.actions]]\nkey = \"x\"\naction = \"delete\"\n",
            "[\"route\", \"f\"]",
            "[\"a\", \"b\"]",
        );
        let e = Config::from_str(&text, "shardtel.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("routing processor route must be the last processor of the pipeline"),
            "{e}"
        );
    }

    #[test]
    fn transform_statement_errors_name_file_line_and_statement() {
        let text = base(
            "[processors.t]\ntype = \"transform\"\n[[processors.t.trace_statements]]\ncontext = \"span\"\nstatements = [\n  'set(attributes[\"a\"], \"b\")',\n  'set(body, \"x\")',\n]\n",
            "[\"t\"]",
            "[\"a\"]",
        );
        let e = Config::from_str(&text, "shardtel.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "shardtel.toml:12: processors.t.trace_statements[0].statements[1]: invalid statement `set(body, \"x\")`: path `body` is not available in the span context (available: attributes[\"key\"], resource.attributes[\"key\"], name, kind, status.code, status.message)"
        );
        let text = base(
            "[processors.t]\ntype = \"transform\"\n[[processors.t.log_statements]]\ncontext = \"span\"\nstatements = ['set(attributes[\"a\"], \"b\")']\n",
            "[\"t\"]",
            "[\"a\"]",
        );
        let e = Config::from_str(&text, "shardtel.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("processors.t.log_statements[0].context"), "{e}");
        // A transform with log statements only, in a traces pipeline.
        let text = base(
            "[processors.t]\ntype = \"transform\"\n[[processors.t.log_statements]]\ncontext = \"log\"\nstatements = ['set(attributes[\"a\"], \"b\")']\n",
            "[\"t\"]",
            "[\"a\"]",
        );
        let e = Config::from_str(&text, "shardtel.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("processor \"t\""), "{e}");
    }

    #[test]
    fn spanevent_statements_decode_and_name_file_line_and_statement() {
        let text = base(
            "[processors.t]\ntype = \"transform\"\n[[processors.t.trace_statements]]\ncontext = \"spanevent\"\nstatements = [\n  'set(name, \"error\") where name == \"exception\"',\n]\n",
            "[\"t\"]",
            "[\"a\"]",
        );
        let config = Config::from_str(&text, "shardtel.toml").unwrap();
        let Some(ProcessorConfig::Transform(t)) = config.processors.get("t") else {
            panic!()
        };
        assert_eq!(
            t.groups(crate::Signal::Traces)[0].context,
            crate::ottl::Context::SpanEvent
        );
        let text = base(
            "[processors.t]\ntype = \"transform\"\n[[processors.t.trace_statements]]\ncontext = \"spanevent\"\nstatements = [\n  'set(name, \"error\")',\n  'set(time_unix_nano, 0)',\n]\n",
            "[\"t\"]",
            "[\"a\"]",
        );
        let e = Config::from_str(&text, "shardtel.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("shardtel.toml:12: processors.t.trace_statements[0].statements[1]: invalid statement `set(time_unix_nano, 0)`: time_unix_nano cannot be changed in the spanevent context"),
            "{e}"
        );
        // Not a context of logs.
        let text = base(
            "[processors.t]\ntype = \"transform\"\n[[processors.t.log_statements]]\ncontext = \"spanevent\"\nstatements = ['set(name, \"x\")']\n",
            "[\"t\"]",
            "[\"a\"]",
        );
        let e = Config::from_str(&text, "shardtel.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("processors.t.log_statements[0].context"), "{e}");
    }

    #[test]
    fn spanmetrics_histograms_are_explicit_or_exponential() {
        let parse = |keys: &str| {
            let text = base(
                &format!("[processors.sm]\ntype = \"spanmetrics\"\n{keys}"),
                "[\"sm\"]",
                "[\"a\"]",
            );
            let text =
                format!("{text}[pipelines.metrics]\nreceivers = [\"otlp\"]\nexporters = [\"b\"]\n");
            Config::from_str(&text, "shardtel.toml").map(|c| match c.processors.get("sm") {
                Some(ProcessorConfig::SpanMetrics(m)) => m.histogram,
                _ => panic!(),
            })
        };
        use super::SpanHistogram;
        assert_eq!(parse("").unwrap(), SpanHistogram::Explicit);
        assert_eq!(
            parse("histogram = \"exponential\"\n").unwrap(),
            SpanHistogram::Exponential { max_size: 160 }
        );
        assert_eq!(
            parse("histogram = \"exponential\"\nmax_size = 40\n").unwrap(),
            SpanHistogram::Exponential { max_size: 40 }
        );
        let err = |keys: &str| parse(keys).unwrap_err().to_string();
        let e = err("histogram = \"exponential\"\nbuckets = [\"1ms\"]\n");
        assert!(
            e.contains("processors.sm.buckets") && e.contains("set only one of"),
            "{e}"
        );
        let e = err("max_size = 40\n");
        assert!(e.contains("processors.sm.max_size"), "{e}");
        let e = err("histogram = \"exponential\"\nmax_size = 1\n");
        assert!(e.contains("processors.sm.max_size"), "{e}");
        let e = err("histogram = \"native\"\n");
        assert!(
            e.contains("processors.sm.histogram") && e.contains("\"exponential\""),
            "{e}"
        );
    }

    #[test]
    fn spanmetrics_temporality_and_expiration() {
        use super::SpanTemporality;
        let parse = |keys: &str| {
            let text = base(
                &format!("[processors.sm]\ntype = \"spanmetrics\"\n{keys}"),
                "[\"sm\"]",
                "[\"a\"]",
            );
            let text =
                format!("{text}[pipelines.metrics]\nreceivers = [\"otlp\"]\nexporters = [\"b\"]\n");
            Config::from_str(&text, "shardtel.toml").map(|c| match c.processors.get("sm") {
                Some(ProcessorConfig::SpanMetrics(m)) => {
                    (m.aggregation_temporality, m.metrics_expiration)
                }
                _ => panic!(),
            })
        };
        let zero = std::time::Duration::ZERO;
        assert_eq!(parse("").unwrap(), (SpanTemporality::Delta, zero));
        for (word, want) in [
            (
                "AGGREGATION_TEMPORALITY_CUMULATIVE",
                SpanTemporality::Cumulative,
            ),
            ("cumulative", SpanTemporality::Cumulative),
            ("AGGREGATION_TEMPORALITY_DELTA", SpanTemporality::Delta),
            ("delta", SpanTemporality::Delta),
        ] {
            let keys =
                format!("aggregation_temporality = \"{word}\"\nmetrics_expiration = \"5m\"\n");
            assert_eq!(
                parse(&keys).unwrap(),
                (want, std::time::Duration::from_secs(300))
            );
        }
        let e = parse("aggregation_temporality = \"CUMULATIVE\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("shardtel.toml:8: processors.sm.aggregation_temporality")
                && e.contains("AGGREGATION_TEMPORALITY_CUMULATIVE"),
            "{e}"
        );
        let e = parse("metrics_expiration = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("processors.sm.metrics_expiration"), "{e}");
        assert_eq!(parse("metrics_expiration = 0\n").unwrap().1, zero);
    }

    #[test]
    fn spanmetrics_decodes_defaults_and_needs_a_metrics_pipeline() {
        let text = base(
            "[processors.sm]\ntype = \"spanmetrics\"\ndimensions = [\"http.route\"]\n",
            "[\"sm\"]",
            "[\"a\"]",
        );
        let e = Config::from_str(&text, "shardtel.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "shardtel.toml:11: pipelines.traces.processors: spanmetrics processor sm needs a [pipelines.metrics] for its metrics"
        );
        let with_metrics =
            format!("{text}[pipelines.metrics]\nreceivers = [\"otlp\"]\nexporters = [\"b\"]\n");
        let config = Config::from_str(&with_metrics, "shardtel.toml").unwrap();
        let Some(ProcessorConfig::SpanMetrics(m)) = config.processors.get("sm") else {
            panic!()
        };
        assert_eq!(m.dimensions, ["http.route"]);
        assert_eq!(m.buckets.len(), 16);
        assert_eq!(m.max_series, 1000);
        assert_eq!(m.namespace, "traces.span.metrics");
        let bad = base(
            "[processors.sm]\ntype = \"spanmetrics\"\nbuckets = [\"10ms\", \"5ms\"]\n",
            "[\"sm\"]",
            "[\"a\"]",
        );
        let e = Config::from_str(&bad, "shardtel.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("processors.sm.buckets") && e.contains("strictly ascending"),
            "{e}"
        );
        // Not in a metrics or logs pipeline.
        let in_logs = format!("{with_metrics}[pipelines.logs]\nreceivers = [\"otlp\"]\nprocessors = [\"sm\"]\nexporters = [\"a\"]\n");
        let e = Config::from_str(&in_logs, "shardtel.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipelines.logs.processors"), "{e}");
    }
}
