//! The `loki` exporter against a recorder: no Loki server is packaged here, so a small HTTP/1.1
//! server in the test process plays Loki's push API. It decodes protobuf pushes (snappy,
//! `logproto.PushRequest`, declared below from Loki's `push.proto`) and JSON pushes, and
//! answers the first protobuf push with 500 so the retry path runs for real.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::common::v1::{AnyValue, InstrumentationScope};
use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use shardtel_protocol::proto::resource::v1::Resource;

use shardtel_protocol::Signal;

use crate::gen::{kv, s};
use crate::harness::{wait_until, Shardtel};
use crate::test_config::{millis, Batch, Component, Pipeline, Retry};

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, Message)]
struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`.
#[derive(Clone, PartialEq, Message)]
struct StreamAdapter {
    #[prost(string, tag = "1")]
    labels: String,
    #[prost(message, repeated, tag = "2")]
    entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, Message)]
struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    line: String,
    #[prost(message, repeated, tag = "3")]
    structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Message)]
struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, Message)]
struct Timestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

/// One received entry: (stream labels, ns, line, metadata).
type Received = (String, i64, String, BTreeMap<String, String>);

#[derive(Default)]
struct Recorded {
    protobuf: Vec<Received>,
    json: Vec<Received>,
    /// (path, content-type, tenant) of every request, answered or refused.
    requests: Vec<(String, String, String)>,
    refused_once: bool,
    /// Entries sorted by time within every stream of every push.
    ordered: bool,
}

/// Starts the recorder; returns its port.
fn recorder(recorded: Arc<Mutex<Recorded>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    recorded.lock().unwrap().ordered = true;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let recorded = recorded.clone();
            std::thread::spawn(move || serve(stream, &recorded));
        }
    });
    port
}

/// Serves keep-alive HTTP/1.1 requests with a `content-length` body.
fn serve(stream: TcpStream, recorded: &Mutex<Recorded>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body).unwrap();
        let content_type = headers.get("content-type").cloned().unwrap_or_default();
        let tenant = headers.get("x-scope-orgid").cloned().unwrap_or_default();
        let mut r = recorded.lock().unwrap();
        r.requests
            .push((path.clone(), content_type.clone(), tenant));
        let status = if path == "/proto/loki/api/v1/push" && !r.refused_once {
            r.refused_once = true;
            "500 Internal Server Error"
        } else {
            let streams = if content_type == "application/x-protobuf" {
                decode_protobuf(&body)
            } else {
                decode_json(&body)
            };
            for (labels, entries) in streams {
                r.ordered &= entries.windows(2).all(|w| w[0].0 <= w[1].0);
                let target = if path.starts_with("/proto") {
                    &mut r.protobuf
                } else {
                    &mut r.json
                };
                for (ns, line, metadata) in entries {
                    target.push((labels.clone(), ns, line, metadata));
                }
            }
            "204 No Content"
        };
        drop(r);
        write!(writer, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").unwrap();
    }
}

type Entries = Vec<(i64, String, BTreeMap<String, String>)>;

fn decode_protobuf(body: &[u8]) -> Vec<(String, Entries)> {
    let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
    PushRequest::decode(raw.as_slice())
        .unwrap()
        .streams
        .into_iter()
        .map(|s| {
            let entries = s
                .entries
                .into_iter()
                .map(|e| {
                    let ts = e.timestamp.unwrap();
                    (
                        ts.seconds * 1_000_000_000 + i64::from(ts.nanos),
                        e.line,
                        e.structured_metadata
                            .into_iter()
                            .map(|m| (m.name, m.value))
                            .collect(),
                    )
                })
                .collect();
            (s.labels, entries)
        })
        .collect()
}

fn decode_json(body: &[u8]) -> Vec<(String, Entries)> {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    json["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let labels: Vec<String> = s["stream"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap()))
                .collect();
            let entries = s["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| {
                    let metadata = v[2]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                                .collect()
                        })
                        .unwrap_or_default();
                    (
                        v[0].as_str().unwrap().parse().unwrap(),
                        v[1].as_str().unwrap().to_string(),
                        metadata,
                    )
                })
                .collect();
            (format!("{{{}}}", labels.join(", ")), entries)
        })
        .collect()
}

fn record(t: u64, body: &str, level: &str) -> LogRecord {
    LogRecord {
        time_unix_nano: t,
        body: Some(AnyValue {
            value: Some(s(body)),
        }),
        attributes: vec![kv("level", s(level)), kv("user.id", s("u-42"))],
        severity_text: level.to_uppercase(),
        trace_id: vec![0x11; 16],
        span_id: vec![0x22; 8],
        ..Default::default()
    }
}

#[test]
fn loki_push_protobuf_and_json_to_a_recorder() {
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let port = recorder(recorded.clone());
    let shardtel = Shardtel::start_config(|c| {
        c.exporter(
            "loki",
            Component::loki(&format!("http://127.0.0.1:{port}/proto/loki/api/v1/push"))
                .set("tenant_id", "team-a")
                .set(
                    "labels.resource",
                    vec!["service.name", "deployment.environment"],
                )
                .set("labels.attributes", vec!["level"])
                .batch(Batch::timeout(millis(50)))
                .retry(Retry::backoff(millis(50), millis(200))),
        )
        .exporter(
            "loki_json",
            Component::loki(&format!("http://127.0.0.1:{port}/json/loki/api/v1/push"))
                .set("encoding", "json")
                .batch(Batch::timeout(millis(50))),
        )
        .logs(Pipeline::otlp_to(&["loki", "loki_json"]))
    });
    let t0 = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // Out of order within the request: the exporter sorts each stream by time.
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("checkout")),
                    kv("deployment.environment", s("prod")),
                    kv("host.name", s("node-1")),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app".into(),
                    ..Default::default()
                }),
                log_records: vec![
                    record(t0 + 30, "third error", "error"),
                    record(t0 + 10, "first error", "error"),
                    record(t0 + 20, "an info", "info"),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    shardtel.post_accepted(Signal::Logs, request.encode_to_vec());
    assert!(
        wait_until(30, || {
            let r = recorded.lock().unwrap();
            r.protobuf.len() == 3 && r.json.len() == 3
        }),
        "log:\n{}\nmetrics:\n{}",
        shardtel.log(),
        shardtel.metrics()
    );
    let r = recorded.lock().unwrap();
    assert!(
        r.refused_once,
        "the first protobuf push was refused, then retried"
    );
    assert!(r.ordered, "entries of a stream sorted by time");
    let error_stream =
        "{deployment_environment=\"prod\", level=\"error\", service_name=\"checkout\"}";
    let info_stream =
        "{deployment_environment=\"prod\", level=\"info\", service_name=\"checkout\"}";
    let lines: Vec<(&str, i64, &str)> = r
        .protobuf
        .iter()
        .map(|(labels, ns, line, _)| (labels.as_str(), *ns, line.as_str()))
        .collect();
    let t0 = t0 as i64;
    assert_eq!(
        lines,
        [
            (error_stream, t0 + 10, "first error"),
            (error_stream, t0 + 30, "third error"),
            (info_stream, t0 + 20, "an info"),
        ]
    );
    let metadata = &r.protobuf[0].3;
    assert_eq!(metadata["user_id"], "u-42");
    assert_eq!(metadata["host_name"], "node-1");
    assert_eq!(metadata["scope_name"], "app");
    assert_eq!(metadata["trace_id"], "11111111111111111111111111111111");
    assert_eq!(metadata["span_id"], "2222222222222222");
    assert_eq!(metadata["severity_text"], "ERROR");
    assert!(
        !metadata.contains_key("level"),
        "labels are not repeated as metadata"
    );
    // The JSON exporter uses the default labels (no record attributes): one stream.
    let json_stream = "{deployment_environment=\"prod\", service_name=\"checkout\"}";
    assert!(
        r.json.iter().all(|(labels, ..)| labels == json_stream),
        "{:?}",
        r.json
    );
    let json_lines: Vec<&str> = r.json.iter().map(|e| e.2.as_str()).collect();
    assert_eq!(json_lines, ["first error", "an info", "third error"]);
    assert_eq!(r.json[0].3["level"], "error");
    // Headers: tenant only where configured, content types per encoding.
    for (path, content_type, tenant) in &r.requests {
        if path.starts_with("/proto") {
            assert_eq!(
                (content_type.as_str(), tenant.as_str()),
                ("application/x-protobuf", "team-a")
            );
        } else {
            assert_eq!(
                (content_type.as_str(), tenant.as_str()),
                ("application/json", "")
            );
        }
    }
    drop(r);
    assert!(
        wait_until(10, || shardtel
            .metric_sum("shardtel_exporter_retries_total", "exporter=\"loki\"")
            >= 1
            && shardtel
                .metric_sum("shardtel_exporter_sent_log_records_total", "")
                == 6),
        "{}",
        shardtel.metrics()
    );
}
