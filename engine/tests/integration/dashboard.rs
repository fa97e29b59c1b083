//! The Grafana dashboard (`contrib/grafana/shardtel.json`) against a real Prometheus 2.42
//! scraping loaded shardtel processes: every panel's every query (and the dashboard's variable
//! query) must return a non-empty result of finite numbers through Prometheus's HTTP API.
//!
//! Two processes, as in examples/stack: a gateway (OTLP in, memory limiter, ingest log, traces
//! to Kafka, metrics and logs to files) and a processing tier (Kafka in, tail sampling, files),
//! both scraped every second by a Prometheus this test starts on a port of its own (the
//! `prometheus` binary test.sh installs). shardtel-loadgen sends traces, metrics and logs to the
//! gateway for the whole test. Without a Kafka broker the test fails, unless
//! `SHARDTEL_KAFKA_OPTIONAL=1`: then the gateway writes traces to a file, sampling runs on the
//! gateway and only the Kafka panels are skipped, loudly. Without `prometheus` the test fails,
//! unless `SHARDTEL_PROMETHEUS_OPTIONAL=1` (it skips loudly).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{free_port, Shardtel};
use crate::kafka::{broker, broker_available, create_topic_on, unique_topic};
use crate::loadgen::loadgen_bin;
use crate::test_config::{millis, secs, Batch, Component, Pipeline, TailSampling, TestConfig};

const DASHBOARD: &str = include_str!("../../../contrib/grafana/shardtel.json");

/// What `$__rate_interval` stands for here: four scrapes at 1 s, as Grafana computes it
/// (4 × the scrape interval) when the data source's scrape interval is set.
const RATE_INTERVAL: &str = "4s";

/// A process killed (and waited for) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every query of the dashboard: (panel title, expression), including the variables'.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &[Value], out: &mut Vec<(String, String)>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("").to_string();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("every target has an expr");
                out.push((title.clone(), expr.to_string()));
            }
            if let Some(nested) = panel["panels"].as_array() {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dashboard["panels"].as_array().expect("panels"), &mut out);
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] == "query" {
            let query = &variable["query"];
            let text = query["query"].as_str().or(query.as_str()).unwrap();
            // label_values(METRIC, LABEL): Grafana asks for the series of METRIC.
            let metric = text
                .strip_prefix("label_values(")
                .and_then(|r| r.split(',').next())
                .unwrap_or_else(|| panic!("variable query {text:?} is not label_values(...)"));
            out.push((format!("variable {}", variable["name"]), metric.to_string()));
        }
    }
    out
}

/// The expression as Grafana sends it, with the dashboard's variables expanded.
fn expand(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("${instance:regex}", ".+")
        .replace("$instance", ".+")
}

/// An instant query: Ok(result) when Prometheus answered "success".
fn query(prometheus: &str, expr: &str) -> Result<Vec<Value>, String> {
    let response: Value = reqwest::blocking::Client::new()
        .get(format!("{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .timeout(Duration::from_secs(10))
        .send()
        .and_then(|r| r.text())
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str(&text).map_err(|e| format!("{e}: {text}")))?;
    if response["status"] != "success" {
        return Err(response.to_string());
    }
    Ok(response["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// The labels of the outermost `by (...)` of `expr`.
fn grouped_by(expr: &str) -> Vec<String> {
    expr.split_once("by (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(labels, _)| labels.split(',').map(|l| l.trim().to_string()).collect())
        .unwrap_or_default()
}

/// Why `result` does not count: empty, a value that is not a finite number, or a series without
/// a label the query groups by (a label the metric does not have).
fn problem(expr: &str, result: &[Value]) -> Option<String> {
    if result.is_empty() {
        return Some("empty result".into());
    }
    for series in result {
        for label in grouped_by(expr) {
            if series["metric"][&label].as_str().is_none_or(str::is_empty) {
                return Some(format!("no label {label} in {series}"));
            }
        }
        let value = series["value"][1].as_str().unwrap_or("missing");
        match value.parse::<f64>() {
            Ok(v) if v.is_finite() => {}
            _ => return Some(format!("value {value} in {series}")),
        }
    }
    None
}

/// Starts Prometheus scraping `targets` (host:port of /metrics) every second.
fn start_prometheus(dir: &Path, targets: &[String]) -> (Killed, String) {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: shardtel\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus");
    let url = format!("http://127.0.0.1:{port}");
    let child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reqwest::blocking::get(format!("{url}/-/ready")).is_ok_and(|r| r.status().is_success()) {
        assert!(
            Instant::now() < deadline,
            "prometheus not ready in 30 s: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, url)
}

/// shardtel-loadgen sending `signal` to `endpoint` for `duration` at `rate` requests/s.
fn load(endpoint: &str, signal: &str, duration: &str) -> Killed {
    Killed(
        Command::new(loadgen_bin())
            .args([
                "--endpoint",
                endpoint,
                "--signal",
                signal,
                "--rate",
                "200",
                "--duration",
                duration,
                "--workers",
                "1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("shardtel-loadgen"),
    )
}

fn prometheus_binary_available() -> bool {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var("SHARDTEL_PROMETHEUS_OPTIONAL").as_deref() == Ok("1") {
        eprintln!("\n!!!!!!!! SKIPPED dashboard: no prometheus binary (SHARDTEL_PROMETHEUS_OPTIONAL=1) !!!!!!!!\n");
        return false;
    }
    panic!("no prometheus binary: run ./test.sh (it installs Debian's), or set SHARDTEL_PROMETHEUS_OPTIONAL=1 to skip");
}

fn gateway_config(c: TestConfig, kafka_topic: Option<&str>) -> TestConfig {
    let c = c
        .processor(
            "memory_limiter",
            Component::memory_limiter(millis(100), 2048),
        )
        .file_exporters();
    let traces = match kafka_topic {
        Some(topic) => c
            .exporter(
                "kafka",
                Component::kafka_exporter(&[&broker()])
                    .set("traces_topic", topic)
                    .batch(Batch::timeout(millis(50))),
            )
            .traces(Pipeline::otlp_to(&["kafka"]).processors(&["memory_limiter"])),
        None => c
            .processor(
                "tail_sampling",
                TailSampling::reference().decision_wait(secs(1)),
            )
            .traces(
                Pipeline::otlp_to(&["file_traces"])
                    .processors(&["memory_limiter", "tail_sampling"]),
            ),
    };
    traces
        .metrics(Pipeline::otlp_to(&["file_metrics"]).processors(&["memory_limiter"]))
        .logs(Pipeline::otlp_to(&["file_logs"]).processors(&["memory_limiter"]))
}

fn processing_config(c: TestConfig, topic: &str) -> TestConfig {
    c.receiver(
        "kafka",
        Component::kafka_receiver(&[&broker()], &[topic], &unique_topic("dashboard-group"))
            .set("initial_offset", "earliest"),
    )
    .processor(
        "tail_sampling",
        TailSampling::reference().decision_wait(secs(1)),
    )
    .file_exporters()
    .traces(
        Pipeline::otlp_to(&["file_traces"])
            .receivers(&["kafka"])
            .processors(&["tail_sampling"]),
    )
    .metrics(Pipeline::otlp_to(&["file_metrics"]))
    .logs(Pipeline::otlp_to(&["file_logs"]))
}

#[test]
fn every_panel_query_returns_finite_numbers_from_a_loaded_shardtel() {
    if !prometheus_binary_available() {
        return;
    }
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("shardtel.json is JSON");
    let all = queries(&dashboard);
    assert!(all.len() >= 20, "{} queries", all.len());
    let kafka = broker_available("dashboard::every_panel_query");
    let topic = kafka.then(|| {
        let topic = unique_topic("dashboard");
        create_topic_on(&broker(), &topic, 2);
        topic
    });
    let gateway = Shardtel::start_config(|c| gateway_config(c, topic.as_deref()));
    let processing = topic
        .as_deref()
        .map(|topic| Shardtel::start_config(|c| processing_config(c, topic)));
    let mut targets = vec![format!("127.0.0.1:{}", gateway.ports.metrics)];
    if let Some(p) = &processing {
        targets.push(format!("127.0.0.1:{}", p.ports.metrics));
    }
    let prometheus_dir = tempfile::tempdir().unwrap();
    let (_prometheus, url) = start_prometheus(prometheus_dir.path(), &targets);
    let _load: Vec<Killed> = ["traces", "metrics", "logs"]
        .into_iter()
        .map(|signal| load(&gateway.grpc_url(), signal, "120s"))
        .collect();

    let checked: Vec<&(String, String)> = all
        .iter()
        .filter(|(_, expr)| kafka || !expr.contains("kafka"))
        .collect();
    if checked.len() < all.len() {
        eprintln!(
            "\n!!!!!!!! SKIPPED the {} Kafka queries of the dashboard: no broker (SHARDTEL_KAFKA_OPTIONAL=1) !!!!!!!!\n",
            all.len() - checked.len()
        );
    }
    // Until every query answers (rates need a few scrapes; sampling decides after 1 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let failures = loop {
        let failures: Vec<String> = checked
            .iter()
            .filter_map(|(title, expr)| {
                let expanded = expand(expr);
                let why = match query(&url, &expanded) {
                    Ok(result) => problem(expr, &result)?,
                    Err(e) => format!("error {e}"),
                };
                Some(format!("{title}: {expanded}: {why}"))
            })
            .collect();
        if failures.is_empty() || Instant::now() > deadline {
            break failures;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let names = |st: &Shardtel| -> Vec<String> {
        let mut names: Vec<String> = st
            .metrics()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(str::to_string)
            .collect();
        names.dedup();
        names
    };
    assert!(
        failures.is_empty(),
        "{} of {} queries failed:\n{}\n\ngateway's metrics:\n{}\n\nprocessing tier's metrics:\n{}\n\ngateway log:\n{}",
        failures.len(),
        checked.len(),
        failures.join("\n"),
        names(&gateway).join("\n"),
        processing.as_ref().map(|p| names(p).join("\n")).unwrap_or_default(),
        gateway.log()
    );
}

/// The dashboard file itself: valid for Grafana's import (a data source input, unique panel
/// ids, every query using the instance variable).
#[test]
fn the_dashboard_imports_and_every_query_filters_by_instance() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("shardtel.json is JSON");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    assert_eq!(dashboard["uid"], "shardtel");
    let mut ids = Vec::new();
    fn collect(panels: &[Value], ids: &mut Vec<u64>) {
        for p in panels {
            ids.push(p["id"].as_u64().expect("panel id"));
            if let Some(nested) = p["panels"].as_array() {
                collect(nested, ids);
            }
        }
    }
    collect(dashboard["panels"].as_array().unwrap(), &mut ids);
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "panel ids repeat");
    for (title, expr) in queries(&dashboard) {
        if title.starts_with("variable ") {
            continue;
        }
        assert!(
            expr.contains("instance=~\"$instance\""),
            "{title}: {expr} does not filter by $instance"
        );
        assert!(
            !expr.contains("[1m]") && !expr.contains("[5m]"),
            "{title}: {expr}: use $__rate_interval"
        );
    }
}
