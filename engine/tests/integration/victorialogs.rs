//! The `loki` exporter against a real server of Loki's push protocol: VictoriaLogs v1.52.2
//! (built from the Go module proxy, started by `tests/peers/backends.sh`), whose
//! `/insert/loki/api/v1/push` takes protobuf+snappy and JSON pushes. Logs go through a real
//! shardtel on every core, then VictoriaLogs' LogsQL API (`/select/logsql/query`) is asked
//! what it stored: the stream (labels), the message (body), the time, and every structured
//! metadata entry as a field.

use std::collections::BTreeMap;

use prost::Message;
use serde_json::Value;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::common::v1::{
    any_value, AnyValue, InstrumentationScope, KeyValueList,
};
use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::Signal;

use crate::backends::{now_ns, unique, VICTORIALOGS};
use crate::gen::{kv, s};
use crate::harness::{wait_until, Shardtel};
use crate::test_config::{millis, Batch, Component, Pipeline, Retry};

/// Every log entry of tenant `account` (VictoriaLogs' `AccountID`) that matches the LogsQL
/// `filter`, oldest first; each as its field → value object.
fn logs(account: u32, filter: &str) -> Vec<BTreeMap<String, String>> {
    let Ok(response) = reqwest::blocking::Client::new()
        .get(format!("{}/select/logsql/query", VICTORIALOGS.url()))
        .header("AccountID", account.to_string())
        .query(&[
            ("query", format!("{filter} | sort by (_time)")),
            ("limit", "1000".into()),
        ])
        .timeout(std::time::Duration::from_secs(10))
        .send()
    else {
        return Vec::new();
    };
    if !response.status().is_success() {
        return Vec::new();
    }
    response
        .text()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .collect()
}

/// A shardtel whose logs pipeline pushes to VictoriaLogs' Loki endpoint through `loki`, a
/// `loki` exporter with the endpoint set (the test adds its keys).
fn loki_to_victorialogs(change: impl FnOnce(Component) -> Component) -> Shardtel {
    let exporter = change(Component::loki(&format!(
        "{}/insert/loki/api/v1/push",
        VICTORIALOGS.url()
    )))
    .batch(Batch::timeout(millis(50)));
    Shardtel::start_config(|c| {
        c.exporter("loki", exporter)
            .logs(Pipeline::otlp_to(&["loki"]))
    })
}

fn record(t: u64, body: any_value::Value, level: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: t,
        body: Some(AnyValue { value: Some(body) }),
        attributes: vec![kv("level", s(level)), kv("user.id", s("u-42"))],
        severity_text: level.to_uppercase(),
        severity_number: if level == "error" { 17 } else { 9 },
        trace_id: vec![0x11; 16],
        span_id: vec![0x22; 8],
        ..Default::default()
    }
}

/// RFC 3339 UTC with nanoseconds, as VictoriaLogs writes `_time`.
fn rfc3339(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let frac = format!("{:09}", ns % 1_000_000_000);
    let frac = frac.trim_end_matches('0');
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{}{frac}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        if frac.is_empty() { "" } else { "." }
    )
}

/// How the exporter of one test is set up and what VictoriaLogs should do with it.
struct Case {
    test: &'static str,
    encoding: &'static str,
    /// `tenant_id`: VictoriaLogs reads `X-Scope-OrgID` as its own tenant, `AccountID[:ProjectID]`.
    tenant: Option<u32>,
    /// VictoriaLogs parses a JSON line into fields unless told not to
    /// (`VL-Loki-Disable-Message-Parsing: 1`); Loki keeps every line as it is.
    parse_messages: bool,
}

/// Pushes three records (out of order, two levels, one with a map body) through a `loki`
/// exporter set up as `case` says, and checks each entry VictoriaLogs stored field by field.
fn push_and_read_back(case: Case) {
    if !VICTORIALOGS.available(case.test) {
        return;
    }
    let shardtel = loki_to_victorialogs(|loki| {
        let mut loki = loki
            .set("encoding", case.encoding)
            .set(
                "labels.resource",
                vec!["service.name", "deployment.environment"],
            )
            .set("labels.attributes", vec!["level"])
            .retry(Retry::backoff(millis(50), millis(200)));
        if let Some(tenant) = case.tenant {
            loki = loki.set("tenant_id", tenant.to_string());
        }
        if !case.parse_messages {
            loki = loki.set("headers.VL-Loki-Disable-Message-Parsing", "1");
        }
        loki
    });
    let service = unique(&format!("vl-{}", case.encoding));
    let t0 = now_ns() - 5_000_000_000;
    let map_body = any_value::Value::KvlistValue(KeyValueList {
        values: vec![
            kv("event", s("login")),
            kv("ok", any_value::Value::BoolValue(true)),
        ],
    });
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s(&service)),
                    kv("deployment.environment", s("prod")),
                    kv("host.name", s("node-1")),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app".into(),
                    version: "2.0".into(),
                    ..Default::default()
                }),
                log_records: vec![
                    record(t0 + 3_000, s("third: disk full"), "error"),
                    record(t0 + 1_000, s("first: connection refused"), "error"),
                    record(t0 + 2_000, map_body, "info"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    shardtel.post_accepted(Signal::Logs, request.encode_to_vec());

    let account = case.tenant.unwrap_or(0);
    let filter = format!("service_name:=\"{service}\"");
    let mut got = Vec::new();
    assert!(
        wait_until(30, || {
            got = logs(account, &filter);
            got.len() >= 3
        }),
        "VictoriaLogs holds {} of 3 entries: {got:?}; shardtel log:\n{}\n{}",
        got.len(),
        shardtel.log(),
        shardtel.metrics()
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let got = logs(account, &filter);
    assert_eq!(got.len(), 3, "{got:#?}");
    if account != 0 {
        assert!(
            logs(0, &filter).is_empty(),
            "tenant {account}'s entries are not in the default tenant"
        );
    }

    let stream = |level: &str| {
        format!("{{deployment_environment=\"prod\",level=\"{level}\",service_name=\"{service}\"}}")
    };
    let expected = [
        (
            t0 + 1_000,
            "first: connection refused",
            "error",
            "ERROR",
            "17",
        ),
        (
            t0 + 2_000,
            "{\"event\":\"login\",\"ok\":true}",
            "info",
            "INFO",
            "9",
        ),
        (t0 + 3_000, "third: disk full", "error", "ERROR", "17"),
    ];
    for (entry, (ns, body, level, severity, number)) in got.iter().zip(expected) {
        let mut want: BTreeMap<String, String> = [
            ("_msg", body.to_string()),
            ("_time", rfc3339(ns)),
            ("_stream", stream(level)),
            // Stream labels are fields as well.
            ("service_name", service.clone()),
            ("deployment_environment", "prod".into()),
            ("level", level.into()),
            // Structured metadata, one field each.
            ("host_name", "node-1".into()),
            ("user_id", "u-42".into()),
            ("scope_name", "app".into()),
            ("scope_version", "2.0".into()),
            ("severity_text", severity.into()),
            ("severity_number", number.into()),
            ("trace_id", "11111111111111111111111111111111".into()),
            ("span_id", "2222222222222222".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if case.parse_messages && body.starts_with('{') {
            // The JSON line became fields, and the entry has no message of its own.
            want.insert("event".into(), "login".into());
            want.insert("ok".into(), "true".into());
            want.insert(
                "_msg".into(),
                "missing _msg field; see https://docs.victoriametrics.com/victorialogs/keyconcepts/#message-field".into(),
            );
        }
        let mut entry = entry.clone();
        // VictoriaLogs' own id of the stream: present, not ours to predict.
        assert!(
            entry.remove("_stream_id").is_some_and(|id| !id.is_empty()),
            "{entry:?}"
        );
        assert_eq!(entry, want);
    }
    assert!(
        wait_until(10, || shardtel.metric_sum(
            "shardtel_exporter_sent_log_records_total",
            "exporter=\"loki\""
        ) == 3),
        "{}",
        shardtel.metrics()
    );
}

#[test]
fn loki_protobuf_push_to_victorialogs() {
    push_and_read_back(Case {
        test: "loki_protobuf_push_to_victorialogs",
        encoding: "protobuf",
        tenant: None,
        parse_messages: true,
    });
}

#[test]
fn loki_json_push_to_victorialogs_lines_kept_whole() {
    push_and_read_back(Case {
        test: "loki_json_push_to_victorialogs_lines_kept_whole",
        encoding: "json",
        tenant: None,
        parse_messages: false,
    });
}

#[test]
fn loki_tenant_is_a_victorialogs_account() {
    push_and_read_back(Case {
        test: "loki_tenant_is_a_victorialogs_account",
        encoding: "protobuf",
        tenant: Some(7),
        parse_messages: false,
    });
}

/// A tenant that is not `AccountID[:ProjectID]` (Loki takes any string) is refused by
/// VictoriaLogs with 400: a permanent error, so the push is counted as failed, not retried.
#[test]
fn loki_tenant_victorialogs_cannot_read_is_refused() {
    if !VICTORIALOGS.available("loki_tenant_victorialogs_cannot_read_is_refused") {
        return;
    }
    let shardtel = loki_to_victorialogs(|loki| loki.set("tenant_id", "team-a"));
    let service = unique("vl-tenant");
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv("service.name", s(&service))],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![record(now_ns(), s("refused"), "info")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    shardtel.post_accepted(Signal::Logs, request.encode_to_vec());
    assert!(
        wait_until(30, || shardtel.metric_sum(
            "shardtel_exporter_send_failed_log_records_total",
            "exporter=\"loki\""
        ) == 1),
        "{}",
        shardtel.metrics()
    );
    assert_eq!(
        shardtel.metric_sum("shardtel_exporter_retries_total", "exporter=\"loki\""),
        0
    );
    assert!(logs(0, &format!("service_name:=\"{service}\"")).is_empty());
}

/// `line_format = "json"`: VictoriaLogs parses each JSON line into fields (nested objects
/// flattened with dots: `attributes.user.id`, `resources.host.name`), so every part of the
/// record is a field of its own, the body as `body`, and the entry keeps no message.
#[test]
fn loki_json_lines_become_victorialogs_fields() {
    if !VICTORIALOGS.available("loki_json_lines_become_victorialogs_fields") {
        return;
    }
    let shardtel = loki_to_victorialogs(|loki| loki.set("line_format", "json"));
    let service = unique("vl-json-line");
    let t = now_ns() - 1_000_000_000;
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s(&service)),
                    kv("host.name", s("node-1")),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app".into(),
                    ..Default::default()
                }),
                log_records: vec![record(t, s("disk full"), "error")],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    shardtel.post_accepted(Signal::Logs, request.encode_to_vec());
    let filter = format!("service_name:=\"{service}\"");
    let mut got = Vec::new();
    assert!(
        wait_until(30, || {
            got = logs(0, &filter);
            !got.is_empty()
        }),
        "{}",
        shardtel.log()
    );
    assert_eq!(got.len(), 1, "{got:#?}");
    let mut entry = got[0].clone();
    assert!(entry.remove("_stream_id").is_some());
    let want: BTreeMap<String, String> = [
        (
            "_msg",
            "missing _msg field; see https://docs.victoriametrics.com/victorialogs/keyconcepts/#message-field",
        ),
        ("_time", &rfc3339(t)),
        ("_stream", &format!("{{service_name=\"{service}\"}}")),
        ("service_name", &service),
        ("body", "disk full"),
        ("attributes.level", "error"),
        ("attributes.user.id", "u-42"),
        ("resources.host.name", "node-1"),
        ("instrumentation_scope.name", "app"),
        ("severity_text", "ERROR"),
        ("severity_number", "17"),
        ("trace_id", "11111111111111111111111111111111"),
        ("span_id", "2222222222222222"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(entry, want);
}
