//! `[receivers.prometheus]` against real targets: Debian's `prometheus-node-exporter` (installed
//! by test.sh, started here on a free port), Prometheus 2.42's own `/metrics`, and end to end:
//! scrape → `prometheusremotewrite` → Prometheus, compared with what a Prometheus scraping the
//! same node exporter stores.
//!
//! Without the node exporter binary (or Prometheus) these tests fail, unless
//! `SHARDTEL_NODE_EXPORTER_OPTIONAL=1` (or `SHARDTEL_PROMETHEUS_OPTIONAL=1`), which makes them
//! skip with a loud message.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;
use serde_json::Value as Json;
use shardtel_protocol::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use shardtel_protocol::proto::common::v1::{any_value, KeyValue};
use shardtel_protocol::proto::metrics::v1::{metric, number_data_point, Metric};
use shardtel_protocol::Signal;
use toml::{Table, Value};

use crate::harness::{free_port, read_lines, wait_until, Shardtel};
use crate::test_config::{Component, Pipeline};

const NODE_EXPORTER: &str = "prometheus-node-exporter";

/// A process this test started; killed when dropped.
struct Process {
    child: Child,
    port: u16,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(url: &str) -> Option<String> {
    let response = reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?;
    response
        .status()
        .is_success()
        .then(|| response.text().ok())
        .flatten()
}

fn skip_or_panic(test: &str, what: &str, optional_env: &str) -> Option<Process> {
    if std::env::var(optional_env).as_deref() == Ok("1") {
        eprintln!("\n!!!!!!!! SKIPPED {test}: {what} ({optional_env}=1) !!!!!!!!\n");
        return None;
    }
    panic!("{test}: {what}: run ./test.sh (it installs it), or set {optional_env}=1 to skip");
}

/// Debian's node exporter on a free port, a fixed set of collectors (so that the series do
/// not come and go with the machine's devices), its own Go and process metrics included.
fn node_exporter(test: &str) -> Option<Process> {
    let port = free_port();
    let spawned = Command::new(NODE_EXPORTER)
        .args([
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--collector.disable-defaults",
            "--collector.cpu",
            "--collector.meminfo",
            "--collector.loadavg",
            "--collector.stat",
            "--collector.uname",
            "--collector.time",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = spawned else {
        return skip_or_panic(
            test,
            "no prometheus-node-exporter binary",
            "SHARDTEL_NODE_EXPORTER_OPTIONAL",
        );
    };
    let process = Process {
        child,
        port,
        _dir: None,
    };
    let url = format!("http://127.0.0.1:{port}/metrics");
    assert!(
        wait_until(20, || get(&url).is_some()),
        "the node exporter did not answer on {url}"
    );
    Some(process)
}

/// A scrape config table: `job` scraping `targets` every `interval`.
fn job(name: &str, targets: &[String], interval: &str) -> Table {
    let mut t = Table::new();
    t.insert("job_name".into(), name.into());
    t.insert("scrape_interval".into(), interval.into());
    t.insert("scrape_timeout".into(), interval.into());
    let mut group = Table::new();
    group.insert(
        "targets".into(),
        Value::Array(targets.iter().map(|t| Value::from(t.as_str())).collect()),
    );
    t.insert(
        "static_configs".into(),
        Value::Array(vec![Value::Table(group)]),
    );
    t
}

fn with_labels(mut job: Table, labels: &[(&str, &str)]) -> Table {
    let mut l = Table::new();
    for (k, v) in labels {
        l.insert(k.to_string(), (*v).into());
    }
    if let Some(Value::Array(groups)) = job.get_mut("static_configs") {
        if let Some(Value::Table(g)) = groups.first_mut() {
            g.insert("labels".into(), Value::Table(l));
        }
    }
    job
}

/// shardtel scraping with `jobs` into the file exporter (`metrics.jsonl`).
fn scraping_to_files(jobs: Vec<Table>) -> Shardtel {
    Shardtel::start_config(|c| {
        c.receiver("prometheus", Component::prometheus_receiver(jobs))
            .file_exporters()
            .metrics(Pipeline::otlp_to(&["file_metrics"]).receivers(&["prometheus"]))
    })
}

/// Every request the file exporter wrote.
fn requests(st: &Shardtel) -> Vec<ExportMetricsServiceRequest> {
    read_lines(&st.out(), "metrics")
        .into_iter()
        .map(|(_, line)| {
            let pb =
                shardtel_protocol::json::to_protobuf(Signal::Metrics, line.as_bytes()).unwrap();
            ExportMetricsServiceRequest::decode(pb.as_ref()).unwrap()
        })
        .collect()
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some((kv.key.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

/// Every metric named `name`, with its resource's attributes, in the order written.
fn metrics_named(
    reqs: &[ExportMetricsServiceRequest],
    name: &str,
) -> Vec<(BTreeMap<String, String>, String, Metric)> {
    let mut out = Vec::new();
    for r in reqs {
        for rm in &r.resource_metrics {
            let resource = attrs(&rm.resource.as_ref().unwrap().attributes);
            for sm in &rm.scope_metrics {
                let scope = sm
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                for m in &sm.metrics {
                    if m.name == name {
                        out.push((resource.clone(), scope.clone(), m.clone()));
                    }
                }
            }
        }
    }
    out
}

fn gauge_values(metric: &Metric) -> Vec<(Option<f64>, u32)> {
    let Some(metric::Data::Gauge(g)) = &metric.data else {
        panic!("{} is not a gauge: {:?}", metric.name, metric.data)
    };
    g.data_points
        .iter()
        .map(|p| {
            let v = match p.value {
                Some(number_data_point::Value::AsDouble(v)) => Some(v),
                _ => None,
            };
            (v, p.flags)
        })
        .collect()
}

#[test]
fn node_exporter_metrics_become_otlp_with_start_times_and_stale_points() {
    let test = "scrape::node_exporter_metrics_become_otlp_with_start_times_and_stale_points";
    let Some(mut exporter) = node_exporter(test) else {
        return;
    };
    let target = format!("127.0.0.1:{}", exporter.port);
    let jobs = vec![with_labels(
        job("node", std::slice::from_ref(&target), "1s"),
        &[("env", "test")],
    )];
    let st = scraping_to_files(jobs);
    assert!(
        wait_until(30, || metrics_named(
            &requests(&st),
            "node_cpu_seconds_total"
        )
        .len()
            >= 2),
        "two scrapes of the node exporter did not arrive; log:\n{}",
        st.log()
    );
    let reqs = requests(&st);

    // One resource per target, as the Collector makes it (loopback: no server.address).
    let cpu = metrics_named(&reqs, "node_cpu_seconds_total");
    let (resource, scope, first) = &cpu[0];
    let expected: BTreeMap<String, String> = [
        ("service.name", "node"),
        ("service.instance.id", target.as_str()),
        ("server.port", &target[10..]),
        ("url.scheme", "http"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(resource, &expected);
    assert_eq!(scope, "shardtel/receiver/prometheus");

    // Counters: monotonic cumulative sums; the first point starts at its own time, the next
    // ones at that same start.
    assert_eq!(first.description, "Seconds the CPUs spent in each mode.");
    assert_eq!(attrs(&first.metadata)["prometheus.type"], "counter");
    let points = |m: &Metric| {
        let Some(metric::Data::Sum(s)) = &m.data else {
            panic!("not a sum")
        };
        assert!(s.is_monotonic && s.aggregation_temporality == 2);
        s.data_points.clone()
    };
    let p0 = &points(first)[0];
    let labels = attrs(&p0.attributes);
    assert!(
        labels.contains_key("cpu") && labels.contains_key("mode"),
        "{labels:?}"
    );
    assert_eq!(
        labels["env"], "test",
        "the static label is a point attribute"
    );
    assert_eq!(p0.start_time_unix_nano, p0.time_unix_nano);
    let p1 = points(&cpu[1].2)
        .into_iter()
        .find(|p| p.attributes == p0.attributes)
        .unwrap();
    assert_eq!(p1.start_time_unix_nano, p0.time_unix_nano);
    assert!(p1.time_unix_nano > p0.time_unix_nano);

    // A summary (the exporter's Go GC pauses) and a gauge.
    let (_, _, gc) = &metrics_named(&reqs, "go_gc_duration_seconds")[0];
    let Some(metric::Data::Summary(summary)) = &gc.data else {
        panic!("{gc:?}")
    };
    let quantiles: Vec<f64> = summary.data_points[0]
        .quantile_values
        .iter()
        .map(|q| q.quantile)
        .collect();
    assert_eq!(quantiles, [0.0, 0.25, 0.5, 0.75, 1.0]);
    let (_, _, load) = &metrics_named(&reqs, "node_load1")[0];
    assert_eq!(attrs(&load.metadata)["prometheus.type"], "gauge");
    assert!(gauge_values(load)[0].0.is_some_and(|v| v >= 0.0));

    // What Prometheus reports of each scrape.
    let (_, _, up) = &metrics_named(&reqs, "up")[0];
    assert_eq!(gauge_values(up), [(Some(1.0), 0)]);
    let (_, _, scraped) = &metrics_named(&reqs, "scrape_samples_scraped")[0];
    assert!(gauge_values(scraped)[0].0.unwrap() > 100.0);
    assert_eq!(
        metrics_named(&reqs, "scrape_duration_seconds")[0].2.unit,
        "s"
    );

    // The receiver's own counters (published once a second).
    assert!(wait_until(10, || st
        .metric_sum("shardtel_receiver_prometheus_scrapes_total", "")
        >= 2));
    assert_eq!(
        st.metric_sum("shardtel_receiver_prometheus_failed_scrapes_total", ""),
        0
    );
    assert_eq!(st.metric_sum("shardtel_receiver_prometheus_targets", ""), 1);
    assert!(
        st.metric_sum(
            "shardtel_receiver_accepted_metric_points_total",
            "transport=\"scrape\""
        ) > 100
    );

    // The target goes away: up 0, and the node exporter's series get their stale points.
    let _ = exporter.child.kill();
    let _ = exporter.child.wait();
    let stale = |st: &Shardtel| {
        let reqs = requests(st);
        let down = metrics_named(&reqs, "up")
            .iter()
            .any(|(_, _, m)| gauge_values(m) == [(Some(0.0), 0)]);
        let stale_load = metrics_named(&reqs, "node_load1")
            .iter()
            .any(|(_, _, m)| gauge_values(m) == [(None, 1)]);
        down && stale_load
    };
    assert!(
        wait_until(30, || stale(&st)),
        "no up 0 and stale node_load1 after the target went away; log:\n{}",
        st.log()
    );
    assert!(wait_until(10, || {
        st.metric_sum("shardtel_receiver_prometheus_failed_scrapes_total", "") >= 1
            && st.metric_sum("shardtel_receiver_prometheus_stale_points_total", "") > 100
    }));
}

fn prometheus_url() -> String {
    std::env::var("SHARDTEL_PROMETHEUS_URL").unwrap_or_else(|_| "http://127.0.0.1:19090".into())
}

fn prometheus_ready(url: &str) -> bool {
    get(&format!("{url}/-/ready")).is_some()
}

#[test]
fn prometheus_itself_as_a_target() {
    let test = "scrape::prometheus_itself_as_a_target";
    let url = prometheus_url();
    if !prometheus_ready(&url) {
        skip_or_panic(
            test,
            &format!("no Prometheus at {url}"),
            "SHARDTEL_PROMETHEUS_OPTIONAL",
        );
        return;
    }
    let target = url.trim_start_matches("http://").to_string();
    let st = scraping_to_files(vec![job("prometheus", &[target], "1s")]);
    let name = "prometheus_http_request_duration_seconds";
    assert!(
        wait_until(30, || !metrics_named(&requests(&st), name).is_empty()),
        "no {name} from Prometheus's /metrics; log:\n{}",
        st.log()
    );
    let reqs = requests(&st);
    let (_, _, histogram) = &metrics_named(&reqs, name)[0];
    let Some(metric::Data::Histogram(h)) = &histogram.data else {
        panic!("{histogram:?}")
    };
    assert_eq!(h.aggregation_temporality, 2);
    let p = h
        .data_points
        .iter()
        .find(|p| p.count > 0)
        .expect("a handler that served requests");
    assert!(p.explicit_bounds.len() >= 5, "{p:?}");
    assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
    assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
    assert!(p.sum.is_some() && attrs(&p.attributes).contains_key("handler"));
    assert!(p.start_time_unix_nano > 0 && p.start_time_unix_nano <= p.time_unix_nano);
    // Counters keep their `_total` name.
    assert!(!metrics_named(&reqs, "prometheus_http_requests_total").is_empty());
    let (_, _, up) = &metrics_named(&reqs, "up")[0];
    assert_eq!(gauge_values(up), [(Some(1.0), 0)]);
}

/// A Prometheus of this test: scrapes `target` every second as job `job`.
fn prometheus_scraping(test: &str, job_name: &str, target: &str) -> Option<Process> {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: {job_name}\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let spawned = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(child) = spawned else {
        return skip_or_panic(test, "no prometheus binary", "SHARDTEL_PROMETHEUS_OPTIONAL");
    };
    let p = Process {
        child,
        port,
        _dir: Some(dir),
    };
    assert!(wait_until(30, || prometheus_ready(&format!(
        "http://127.0.0.1:{port}"
    ))));
    Some(p)
}

/// `{job="JOB"}` at `at_ms` from the Prometheus at `url`: labels (without `otel_scope_*`) →
/// value.
fn series(url: &str, job: &str, at_ms: u128) -> BTreeMap<BTreeMap<String, String>, f64> {
    let body = reqwest::blocking::Client::new()
        .get(format!("{url}/api/v1/query"))
        .query(&[
            ("query", format!("{{job=\"{job}\"}}")),
            ("time", format!("{:.3}", at_ms as f64 / 1000.0)),
        ])
        .timeout(Duration::from_secs(10))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    let json: Json = serde_json::from_str(&body).unwrap_or(Json::Null);
    let mut out = BTreeMap::new();
    for s in json["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let labels: BTreeMap<String, String> = s["metric"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| !k.starts_with("otel_scope_"))
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let value = s["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        out.insert(labels, value);
    }
    out
}

fn name_of(labels: &BTreeMap<String, String>) -> &str {
    labels.get("__name__").map_or("", String::as_str)
}

#[test]
fn scrape_to_remote_write_matches_a_direct_prometheus_scrape() {
    let test = "scrape::scrape_to_remote_write_matches_a_direct_prometheus_scrape";
    let remote = prometheus_url();
    if !prometheus_ready(&remote) {
        skip_or_panic(
            test,
            &format!("no Prometheus at {remote}"),
            "SHARDTEL_PROMETHEUS_OPTIONAL",
        );
        return;
    }
    let Some(exporter) = node_exporter(test) else {
        return;
    };
    let target = format!("127.0.0.1:{}", exporter.port);
    // A job name of this run only: the shared Prometheus keeps what earlier runs wrote.
    let job_name = format!("node_e2e_{}", exporter.port);
    let Some(direct) = prometheus_scraping(test, &job_name, &target) else {
        return;
    };
    let direct_url = format!("http://127.0.0.1:{}", direct.port);
    let st = Shardtel::start_config(|c| {
        c.receiver(
            "prometheus",
            Component::prometheus_receiver(vec![job(
                &job_name,
                std::slice::from_ref(&target),
                "1s",
            )]),
        )
        .exporter(
            "prw",
            Component::prometheus_remote_write(&format!("{remote}/api/v1/write")).batch(
                crate::test_config::Batch::timeout(Duration::from_millis(100)),
            ),
        )
        .metrics(Pipeline::otlp_to(&["prw"]).receivers(&["prometheus"]))
    });
    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
    };
    // Both have scraped a few times; compare what each holds 2 s ago.
    std::thread::sleep(Duration::from_secs(6));
    let mut via_shardtel = BTreeMap::new();
    let mut direct_series = BTreeMap::new();
    let complete = wait_until(30, || {
        let at = now_ms() - 2000;
        via_shardtel = series(&remote, &job_name, at);
        direct_series = series(&direct_url, &job_name, at);
        via_shardtel.len() > 100 && direct_series.len() > 100
    });
    assert!(
        complete,
        "too few series: {} via shardtel, {} direct; log:\n{}",
        via_shardtel.len(),
        direct_series.len(),
        st.log()
    );

    // Same series: names and labels. shardtel adds `target_info` (the resource's attributes)
    // and `otel_scope_*` labels (left out above); the direct scrape may hold `_created`
    // series, which shardtel turns into start times.
    let shardtel_keys: BTreeSet<_> = via_shardtel
        .keys()
        .filter(|l| name_of(l) != "target_info")
        .cloned()
        .collect();
    let direct_keys: BTreeSet<_> = direct_series
        .keys()
        .filter(|l| !name_of(l).ends_with("_created"))
        .cloned()
        .collect();
    let only_shardtel: Vec<_> = shardtel_keys.difference(&direct_keys).collect();
    let only_direct: Vec<_> = direct_keys.difference(&shardtel_keys).collect();
    assert!(
        only_shardtel.is_empty() && only_direct.is_empty(),
        "series differ:\nonly via shardtel: {only_shardtel:#?}\nonly direct: {only_direct:#?}"
    );
    assert!(via_shardtel.keys().any(|l| name_of(l) == "target_info"));

    // Values: equal where they cannot change, within one scrape interval's change where they
    // do (the two scrapes are up to a second apart).
    let value = |m: &BTreeMap<_, f64>, name: &str, extra: &[(&str, &str)]| -> f64 {
        m.iter()
            .find(|(l, _)| {
                name_of(l) == name
                    && extra
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {name}{extra:?}"))
    };
    for name in [
        "node_memory_MemTotal_bytes",
        "node_boot_time_seconds",
        "process_start_time_seconds",
        "up",
    ] {
        assert_eq!(
            value(&via_shardtel, name, &[]),
            value(&direct_series, name, &[]),
            "{name}"
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for (labels, v) in &via_shardtel {
        if name_of(labels) == "node_cpu_seconds_total" {
            let d = direct_series[labels];
            assert!(
                (v - d).abs() <= 2.0 * cpus.max(1.0),
                "{labels:?}: {v} via shardtel, {d} direct"
            );
        }
    }
    drop(direct);
    drop(exporter);
}

/// A private CA and a certificate for 127.0.0.1 signed by it, made with the openssl CLI:
/// (ca.pem, cert.pem, key.pem) in `dir`.
fn certificates(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("the openssl CLI");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=scrape test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "cert.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

#[test]
fn https_targets_with_basic_auth_a_private_ca_and_refusals() {
    let test = "scrape::https_targets_with_basic_auth_a_private_ca_and_refusals";
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    // The node exporter's web config: TLS and one user (bcrypt, as it requires).
    let hash = Command::new("python3")
        .args([
            "-c",
            "import crypt; print(crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH)))",
        ])
        .output()
        .expect("python3");
    let hash = String::from_utf8(hash.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$2"), "no bcrypt hash: {hash:?}");
    let web = dir.path().join("web.yml");
    std::fs::write(
        &web,
        format!(
            "tls_server_config:\n  cert_file: {0}/cert.pem\n  key_file: {0}/key.pem\nbasic_auth_users:\n  scraper: '{hash}'\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let port = free_port();
    let Ok(child) = Command::new(NODE_EXPORTER)
        .args([
            &format!("--web.listen-address=127.0.0.1:{port}"),
            &format!("--web.config.file={}", web.display()),
            "--collector.disable-defaults",
            "--collector.loadavg",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        skip_or_panic(
            test,
            "no prometheus-node-exporter binary",
            "SHARDTEL_NODE_EXPORTER_OPTIONAL",
        );
        return;
    };
    let _exporter = Process {
        child,
        port,
        _dir: None,
    };
    let target = format!("127.0.0.1:{port}");
    let ca = dir.path().join("ca.pem").display().to_string();
    let https = |name: &str, password: &str, ca_file: Option<&str>| {
        // 3 s: a TLS handshake and a bcrypt check in debug builds on a loaded 2-core machine
        // took longer than 1 s (the scrape then reports a timeout instead of the 401).
        let mut t = job(name, std::slice::from_ref(&target), "3s");
        t.insert("scheme".into(), "https".into());
        let mut auth = Table::new();
        auth.insert("username".into(), "scraper".into());
        auth.insert("password".into(), password.into());
        t.insert("basic_auth".into(), Value::Table(auth));
        if let Some(ca) = ca_file {
            let mut tls = Table::new();
            tls.insert("ca_file".into(), ca.into());
            t.insert("tls_config".into(), Value::Table(tls));
        }
        t
    };
    let st = scraping_to_files(vec![
        https("good", "s3cret", Some(&ca)),
        https("wrong_password", "nope", Some(&ca)),
        https("untrusted", "s3cret", None),
    ]);
    // `up` of each job, from the resources' service.name.
    let up_of = |st: &Shardtel, job: &str| -> Vec<f64> {
        metrics_named(&requests(st), "up")
            .iter()
            .filter(|(r, _, _)| r.get("service.name").map(String::as_str) == Some(job))
            .flat_map(|(_, _, m)| gauge_values(m))
            .filter_map(|(v, _)| v)
            .collect()
    };
    assert!(
        wait_until(30, || {
            !up_of(&st, "good").is_empty()
                && !up_of(&st, "wrong_password").is_empty()
                && !up_of(&st, "untrusted").is_empty()
        }),
        "no up for every job; log:\n{}",
        st.log()
    );
    assert!(
        up_of(&st, "good").iter().all(|v| *v == 1.0),
        "{:?}",
        up_of(&st, "good")
    );
    assert!(!metrics_named(&requests(&st), "node_load1").is_empty());
    assert!(up_of(&st, "wrong_password").iter().all(|v| *v == 0.0));
    assert!(up_of(&st, "untrusted").iter().all(|v| *v == 0.0));
    // Each refusal is logged with its cause (a scrape that timed out says so instead, and the
    // next one is tried).
    assert!(
        wait_until(30, || {
            let log = st.log();
            log.contains("status 401") && log.contains("cannot connect")
        }),
        "{}",
        st.log()
    );
}
