//! Checks that span keys or sections: pipelines refer to defined components, listeners do not
//! share a port, retry intervals are ordered, queues hold a batch, cores exist on this machine.
//! Per-key checks (types, formats, ranges) happen while decoding.

use std::collections::BTreeSet;

use crate::decode::{join, Locations};
use crate::delivery::{QueueOverflow, QueueStorage};
use crate::error::{ComponentKind, ConfigError, ConfigErrorKind};
use crate::exporters::ExporterKind;
use crate::ottl::parse_condition;
use crate::tls::{CheckFiles, FileProblem};
use crate::{Config, ProcessorConfig};

/// Every cross-key problem of `config`, placed with `locations`; `usable_cpus` is the machine's
/// core layout.
pub(crate) fn validate(
    config: &Config,
    locations: &Locations,
    origin: &str,
    usable_cpus: &[usize],
) -> Vec<ConfigError> {
    let mut report = Reporter {
        locations,
        origin,
        errors: Vec::new(),
    };

    if !locations.failed("engine.cores") {
        for kind in config.engine.cores.problems(usable_cpus) {
            report.report("engine.cores".into(), kind);
        }
    }

    if let Some(otlp) = &config.receivers.otlp {
        let failed =
            locations.failed("receivers.otlp.grpc") || locations.failed("receivers.otlp.http");
        if otlp.grpc.is_none() && otlp.http.is_none() && !failed {
            report.report("receivers.otlp".into(), ConfigErrorKind::NoOtlpProtocol);
        }
    }
    if let Some(jaeger) = &config.receivers.jaeger {
        let failed = locations.failed("receivers.jaeger.grpc")
            || locations.failed("receivers.jaeger.thrift_http");
        if jaeger.grpc.is_none() && jaeger.thrift_http.is_none() && !failed {
            report.report(
                "receivers.jaeger".into(),
                ConfigErrorKind::NoListener {
                    keys: &["grpc", "thrift_http"],
                },
            );
        }
    }
    check_ports(config, locations, &mut report);
    check_exporters(config, locations, &mut report);
    check_pipelines(config, locations, &mut report);
    check_memory_limiters(config, locations, &mut report);
    check_tail_samplers(config, locations, &mut report);
    check_routing(config, locations, &mut report);
    check_spanmetrics(config, locations, &mut report);
    report.errors
}

/// Collects problems, each at the line of its key.
struct Reporter<'a> {
    locations: &'a Locations,
    origin: &'a str,
    errors: Vec<ConfigError>,
}

impl Reporter<'_> {
    fn report(&mut self, key: String, kind: ConfigErrorKind) {
        let line = self.locations.line(&key);
        self.report_at(key, line, kind);
    }

    fn report_at(&mut self, key: String, line: Option<usize>, kind: ConfigErrorKind) {
        self.errors
            .push(ConfigError::new(key, kind).at(self.origin, line));
    }
}

fn check_ports(config: &Config, locations: &Locations, report: &mut Reporter<'_>) {
    let mut listeners = vec![
        ("telemetry.health", config.telemetry.health),
        ("telemetry.metrics", config.telemetry.metrics),
    ];
    if let Some(otlp) = &config.receivers.otlp {
        listeners.push(("receivers.otlp.grpc", otlp.grpc));
        listeners.push(("receivers.otlp.http", otlp.http));
    }
    if let Some(zipkin) = &config.receivers.zipkin {
        listeners.push(("receivers.zipkin.endpoint", Some(zipkin.endpoint)));
    }
    if let Some(jaeger) = &config.receivers.jaeger {
        listeners.push(("receivers.jaeger.grpc", jaeger.grpc));
        listeners.push(("receivers.jaeger.thrift_http", jaeger.thrift_http));
    }
    if let Some(fluent) = &config.receivers.fluentforward {
        listeners.push(("receivers.fluentforward.endpoint", Some(fluent.endpoint)));
    }
    let mut listeners: Vec<(&str, u16, Option<usize>)> = listeners
        .into_iter()
        .filter(|(key, _)| !locations.failed(key))
        .filter_map(|(key, addr)| Some((key, addr?.port(), locations.line(key))))
        // Port 0 asks the kernel for a free port: never a conflict.
        .filter(|(_, port, _)| *port != 0)
        .collect();
    // The listener written later in the file is the one reported.
    listeners.sort_by_key(|(_, _, line)| *line);
    for (i, (key, port, _)) in listeners.iter().enumerate() {
        if let Some((other, _, _)) = listeners[..i].iter().find(|(_, p, _)| p == port) {
            report.report(
                key.to_string(),
                ConfigErrorKind::PortInUse {
                    port: *port,
                    other: other.to_string(),
                },
            );
        }
    }
}

fn check_exporters(config: &Config, locations: &Locations, report: &mut Reporter<'_>) {
    let mut file_paths: Vec<(String, String)> = Vec::new();
    for (name, exporter) in &config.exporters {
        let path = join("exporters", name);
        if let Some(retry) = exporter.kind.retry() {
            let initial = join(&join(&path, "retry"), "initial_interval");
            let max = join(&join(&path, "retry"), "max_interval");
            if retry.initial_interval > retry.max_interval
                && !locations.failed(&initial)
                && !locations.failed(&max)
            {
                report.report(
                    initial,
                    ConfigErrorKind::RetryIntervalsOrder {
                        initial: retry.initial_interval,
                        max: retry.max_interval,
                    },
                );
            }
        }
        if let (Some(batch), Some(queue)) = (exporter.kind.batch(), exporter.kind.queue()) {
            let queue_key = join(&join(&path, "queue"), "max_bytes");
            let batch_key = join(&join(&path, "batch"), "max_bytes");
            if queue.max_bytes < batch.max_bytes
                && !locations.failed(&queue_key)
                && !locations.failed(&batch_key)
            {
                report.report(
                    queue_key,
                    ConfigErrorKind::QueueSmallerThanBatch {
                        queue: queue.max_bytes as u64,
                        batch: batch.max_bytes as u64,
                    },
                );
            }
        }
        if let Some(queue) = exporter.kind.queue() {
            let key = join(&join(&path, "queue"), "overflow");
            if queue.overflow == QueueOverflow::DropOldest
                && queue.storage == QueueStorage::Memory
                && !locations.failed(&key)
            {
                report.report(key, ConfigErrorKind::DropOldestNeedsDisk);
            }
        }
        if let ExporterKind::File(file) = &exporter.kind {
            let key = join(&path, "path");
            let text = file.path.display().to_string();
            match file_paths.iter().find(|(p, _)| *p == text) {
                Some((_, other)) => report.report(
                    key,
                    ConfigErrorKind::DuplicatePath {
                        path: text,
                        other: other.clone(),
                    },
                ),
                None => file_paths.push((text, key)),
            }
        }
    }
}

fn check_pipelines(config: &Config, locations: &Locations, report: &mut Reporter<'_>) {
    if config.pipelines.iter().next().is_none() {
        let failed = [
            "pipelines",
            "pipelines.traces",
            "pipelines.metrics",
            "pipelines.logs",
        ]
        .iter()
        .any(|key| locations.failed(key));
        if !failed {
            report.report("pipelines".into(), ConfigErrorKind::NoPipelines);
        }
        return;
    }
    let defined = |kind: ComponentKind| -> Vec<String> {
        let mut names: BTreeSet<String> = locations.defined.get(&kind).cloned().unwrap_or_default();
        match kind {
            ComponentKind::Receiver => {
                names.extend(config.receivers.names().into_iter().map(String::from))
            }
            ComponentKind::Processor => names.extend(config.processors.keys().cloned()),
            ComponentKind::Exporter => names.extend(config.exporters.keys().cloned()),
        }
        names.into_iter().collect()
    };
    for (signal, pipeline) in config.pipelines.iter() {
        let path = join("pipelines", signal.name());
        for (kind, key, names) in [
            (ComponentKind::Receiver, "receivers", &pipeline.receivers),
            (ComponentKind::Processor, "processors", &pipeline.processors),
            (ComponentKind::Exporter, "exporters", &pipeline.exporters),
        ] {
            let list_key = join(&path, key);
            if locations.failed(&list_key) {
                continue;
            }
            if names.is_empty() && kind != ComponentKind::Processor {
                report.report(list_key.clone(), ConfigErrorKind::EmptyPipeline { kind });
            }
            let defined = defined(kind);
            for (i, name) in names.iter().enumerate() {
                // The key names the list; the line is the element's.
                let line = locations.line(&format!("{list_key}[{i}]"));
                if names[..i].contains(name) {
                    report.report_at(
                        list_key.clone(),
                        line,
                        ConfigErrorKind::ListedTwice {
                            kind,
                            name: name.clone(),
                        },
                    );
                } else if let Some(supported) = Some(name)
                    .filter(|_| kind == ComponentKind::Receiver)
                    .and_then(|n| crate::Receivers::only_signal(n))
                    .filter(|supported| *supported != signal)
                {
                    report.report_at(
                        list_key.clone(),
                        line,
                        ConfigErrorKind::ReceiverSignal {
                            name: name.clone(),
                            supported,
                            signal,
                        },
                    );
                } else if let Some(processor) = config
                    .processors
                    .get(name)
                    .filter(|p| kind == ComponentKind::Processor && !p.supports(signal))
                {
                    report.report_at(
                        list_key.clone(),
                        line,
                        ConfigErrorKind::ProcessorSignal {
                            name: name.clone(),
                            kind: Box::new((processor.type_name(), processor.supported_signals())),
                            signal,
                        },
                    );
                } else if let Some((exporter, supported)) = config
                    .exporters
                    .get(name)
                    .filter(|_| kind == ComponentKind::Exporter)
                    .and_then(|e| Some((e, e.kind.only_signal()?)))
                    .filter(|(_, supported)| *supported != signal)
                {
                    report.report_at(
                        list_key.clone(),
                        line,
                        ConfigErrorKind::ExporterSignal {
                            name: name.clone(),
                            ty: exporter.kind.type_name(),
                            supported,
                            signal,
                        },
                    );
                } else if !defined.contains(name) {
                    report.report_at(
                        list_key.clone(),
                        line,
                        ConfigErrorKind::Undefined {
                            kind,
                            name: name.clone(),
                            defined: defined.clone(),
                        },
                    );
                }
            }
        }
    }
}

/// The memory limit is process-wide: every pipeline that lists a memory limiter must list the
/// same one.
fn check_memory_limiters(config: &Config, locations: &Locations, report: &mut Reporter<'_>) {
    let mut first: Option<&str> = None;
    for (signal, pipeline) in config.pipelines.iter() {
        let list_key = join(&join("pipelines", signal.name()), "processors");
        for (i, name) in pipeline.processors.iter().enumerate() {
            if !matches!(
                config.processors.get(name),
                Some(ProcessorConfig::MemoryLimiter(_))
            ) {
                continue;
            }
            match first {
                None => first = Some(name),
                Some(other) if other != name => report.report_at(
                    list_key.clone(),
                    locations.line(&format!("{list_key}[{i}]")),
                    ConfigErrorKind::SecondMemoryLimiter {
                        name: name.clone(),
                        other: other.to_string(),
                    },
                ),
                Some(_) => {}
            }
        }
    }
}

/// A traces pipeline has one tail sampler: its decision is the trace's, and the engine splits
/// the pipeline's processors into those before and after it.
fn check_tail_samplers(config: &Config, locations: &Locations, report: &mut Reporter<'_>) {
    for (signal, pipeline) in config.pipelines.iter() {
        let list_key = join(&join("pipelines", signal.name()), "processors");
        let mut first: Option<&str> = None;
        for (i, name) in pipeline.processors.iter().enumerate() {
            if !matches!(
                config.processors.get(name),
                Some(ProcessorConfig::TailSampling(_))
            ) {
                continue;
            }
            match first {
                None => first = Some(name),
                Some(other) => report.report_at(
                    list_key.clone(),
                    locations.line(&format!("{list_key}[{i}]")),
                    ConfigErrorKind::SecondTailSampling {
                        name: name.clone(),
                        other: other.to_string(),
                    },
                ),
            }
        }
    }
}

/// Cross-key checks: a `tls` table on an exporter that has no `https://` endpoint.
pub(crate) fn check_tls_endpoints(
    config: &Config,
    locations: &Locations,
    origin: &str,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (name, exporter) in &config.exporters {
        if exporter.kind.tls().is_none() {
            continue;
        }
        let endpoints = exporter.kind.endpoints();
        if endpoints.iter().any(|e| e.scheme == "https") {
            continue;
        }
        let key = join(&join("exporters", name), "tls");
        let line = locations.line(&key);
        let endpoint = endpoints.first().map(|e| e.to_string()).unwrap_or_default();
        errors.push(
            ConfigError::new(key, ConfigErrorKind::TlsNeedsHttps { endpoint }).at(origin, line),
        );
    }
    errors
}

/// The problems `files` finds with the files of every TLS and auth table, each at the line of
/// the key naming the file.
pub(crate) fn check_files(
    config: &Config,
    locations: &Locations,
    origin: &str,
    files: &dyn CheckFiles,
) -> Vec<ConfigError> {
    let mut tables: Vec<(String, Vec<FileProblem>)> = Vec::new();
    if let Some(otlp) = &config.receivers.otlp {
        if let Some(tls) = &otlp.tls {
            tables.push(("receivers.otlp.tls".into(), files.server_tls(tls)));
        }
        if let Some(auth) = &otlp.auth {
            tables.push(("receivers.otlp.auth".into(), files.auth(auth)));
        }
    }
    let r = &config.receivers;
    let servers = [
        ("zipkin", r.zipkin.as_ref().map(|z| (&z.tls, &z.auth))),
        ("jaeger", r.jaeger.as_ref().map(|j| (&j.tls, &j.auth))),
        (
            "fluentforward",
            r.fluentforward.as_ref().map(|f| (&f.tls, &None)),
        ),
    ];
    for (receiver, (tls, auth)) in servers.into_iter().filter_map(|(n, t)| Some((n, t?))) {
        if let Some(tls) = tls {
            tables.push((format!("receivers.{receiver}.tls"), files.server_tls(tls)));
        }
        if let Some(auth) = auth {
            tables.push((format!("receivers.{receiver}.auth"), files.auth(auth)));
        }
    }
    for (name, exporter) in &config.exporters {
        if let Some(tls) = exporter.kind.tls() {
            let table = join(&join("exporters", name), "tls");
            tables.push((table, files.client_tls(tls)));
        }
    }
    if let Some(prometheus) = &config.receivers.prometheus {
        for (i, scrape) in prometheus.scrape_configs.iter().enumerate() {
            if let Some(tls) = &scrape.tls {
                let table = format!("receivers.prometheus.scrape_configs[{i}].tls_config");
                tables.push((table, files.client_tls(tls)));
            }
        }
    }
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for (table, problems) in tables {
        for problem in problems {
            let key = join(&table, problem.key);
            // One file named by two keys (a combined cert+key PEM) may fail twice the same way.
            let message = problem.error.to_string();
            if !seen.insert((key.clone(), message)) {
                continue;
            }
            let line = locations.line(&key);
            let kind = ConfigErrorKind::BadFile {
                path: problem.path,
                source: problem.error,
            };
            errors.push(ConfigError::new(key, kind).at(origin, line));
        }
    }
    errors
}

/// A routing processor comes last in its pipeline, every route's condition checks in the context
/// of the pipeline's items (span, log record, data point), and every exporter its routes name is
/// one of the pipeline's (those are the exporters started for the signal).
fn check_routing(config: &Config, locations: &Locations, report: &mut Reporter<'_>) {
    for (signal, pipeline) in config.pipelines.iter() {
        let list_key = join(&join("pipelines", signal.name()), "processors");
        for (i, name) in pipeline.processors.iter().enumerate() {
            let Some(ProcessorConfig::Routing(routing)) = config.processors.get(name) else {
                continue;
            };
            if i + 1 != pipeline.processors.len() {
                report.report_at(
                    list_key.clone(),
                    locations.line(&format!("{list_key}[{i}]")),
                    ConfigErrorKind::RoutingNotLast { name: name.clone() },
                );
            }
            let base = join("processors", name);
            for (r, route) in routing.routes.iter().enumerate() {
                if route.condition(signal).is_some() {
                    continue;
                }
                let context = crate::transform::item_context(signal);
                let message = match parse_condition(&route.condition, context, true) {
                    Err(e) => e.message,
                    Ok(_) => continue,
                };
                report.report(
                    format!("{base}.routes[{r}].condition"),
                    ConfigErrorKind::RouteConditionSignal {
                        condition: route.condition.clone(),
                        signal,
                        message,
                    },
                );
            }
            let keyed = std::iter::once(("default".to_string(), &routing.default)).chain(
                routing
                    .routes
                    .iter()
                    .enumerate()
                    .map(|(r, route)| (format!("routes[{r}].exporters"), &route.exporters)),
            );
            for (key, exporters) in keyed {
                for exporter in exporters {
                    if !pipeline.exporters.contains(exporter) {
                        report.report(
                            format!("{base}.{key}"),
                            ConfigErrorKind::RouteExporterNotListed {
                                name: exporter.clone(),
                                signal,
                                listed: pipeline.exporters.clone(),
                            },
                        );
                    }
                }
            }
        }
    }
}

/// A `spanmetrics` processor hands its metrics to the metrics pipeline: there must be one.
fn check_spanmetrics(config: &Config, locations: &Locations, report: &mut Reporter<'_>) {
    let Some(traces) = &config.pipelines.traces else {
        return;
    };
    if config.pipelines.metrics.is_some() {
        return;
    }
    let list_key = "pipelines.traces.processors".to_string();
    for (i, name) in traces.processors.iter().enumerate() {
        if matches!(
            config.processors.get(name),
            Some(ProcessorConfig::SpanMetrics(_))
        ) {
            report.report_at(
                list_key.clone(),
                locations.line(&format!("{list_key}[{i}]")),
                ConfigErrorKind::SpanMetricsWithoutMetricsPipeline { name: name.clone() },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::Config;

    #[test]
    fn one_tail_sampler_per_pipeline() {
        let policy = "[[processors.{}.policies]]\nname = \"all\"\ntype = \"always_sample\"\n";
        let mut text = String::new();
        for name in ["a", "b"] {
            text.push_str(&format!("[processors.{name}]\ntype = \"tail_sampling\"\n"));
            text.push_str(&policy.replace("{}", name));
        }
        text.push_str(
            "[receivers.otlp]\n[exporters.blackhole]\n\
             [pipelines.traces]\nreceivers = [\"otlp\"]\n\
             processors = [\"a\",\n  \"b\"]\nexporters = [\"blackhole\"]\n",
        );
        let errors = Config::from_str_with_env(&text, "shardtel.toml", &|_| None).unwrap_err();
        assert_eq!(
            errors.to_string(),
            "shardtel.toml:16: pipelines.traces.processors: tail_sampling processor \"b\" is listed after \"a\" (a pipeline samples once: combine their policies in one tail_sampling processor)"
        );
    }
}
