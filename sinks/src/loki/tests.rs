//! Unit tests of the Loki conversion.

use prost::Message;
use shardtel_config::{LokiEncoding, LokiExporterConfig, LokiLineFormat};
use shardtel_protocol::proto::collector::logs::v1::ExportLogsServiceRequest;
use shardtel_protocol::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use shardtel_protocol::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use shardtel_protocol::proto::resource::v1::Resource;

use super::{LokiConverter, PushRequest};

fn s(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn record(t: u64, body: &str, attrs: Vec<KeyValue>) -> LogRecord {
    LogRecord {
        time_unix_nano: t,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(body.into())),
        }),
        attributes: attrs,
        severity_text: "ERROR".into(),
        severity_number: 17,
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        ..Default::default()
    }
}

fn request(resource: Vec<KeyValue>, records: Vec<LogRecord>) -> Vec<u8> {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "app".into(),
                    version: "2".into(),
                    ..Default::default()
                }),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn config() -> LokiExporterConfig {
    LokiExporterConfig::new("http://l:3100/loki/api/v1/push".parse().unwrap())
}

fn decode(body: &[u8]) -> PushRequest {
    let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
    PushRequest::decode(raw.as_slice()).unwrap()
}

#[test]
fn streams_by_labels_sorted_entries_and_metadata() {
    let mut cfg = config();
    cfg.attribute_labels = vec!["level".into()];
    let c = LokiConverter::new(&cfg);
    let req = request(
        vec![s("service.name", "api"), s("host.name", "h1")],
        vec![
            record(30, "third", vec![s("level", "error"), s("user.id", "u1")]),
            record(10, "first", vec![s("level", "error")]),
            record(20, "other stream", vec![s("level", "info")]),
        ],
    );
    let push = decode(&c.convert(&req).unwrap());
    assert_eq!(push.streams.len(), 2);
    let error = &push.streams[0];
    assert_eq!(error.labels, "{level=\"error\", service_name=\"api\"}");
    let lines: Vec<&str> = error.entries.iter().map(|e| e.line.as_str()).collect();
    assert_eq!(lines, ["first", "third"]);
    let ts = error.entries[0].timestamp.as_ref().unwrap();
    assert_eq!((ts.seconds, ts.nanos), (0, 10));
    let metadata: Vec<(&str, &str)> = error.entries[1]
        .structured_metadata
        .iter()
        .map(|m| (m.name.as_str(), m.value.as_str()))
        .collect();
    assert_eq!(
        metadata,
        [
            ("user_id", "u1"),
            ("host_name", "h1"),
            ("scope_name", "app"),
            ("scope_version", "2"),
            ("trace_id", "abababababababababababababababab"),
            ("span_id", "cdcdcdcdcdcdcdcd"),
            ("severity_text", "ERROR"),
            ("severity_number", "17"),
        ]
    );
    assert_eq!(
        push.streams[1].labels,
        "{level=\"info\", service_name=\"api\"}"
    );
}

#[test]
fn records_without_labels_get_unknown_service_and_escaping() {
    let c = LokiConverter::new(&config());
    let req = request(
        vec![s("service.namespace", "a\"b\\c")],
        vec![record(1, "x", vec![])],
    );
    let push = decode(&c.convert(&req).unwrap());
    assert_eq!(
        push.streams[0].labels,
        "{service_namespace=\"a\\\"b\\\\c\"}"
    );
    let req = request(vec![], vec![record(1, "x", vec![])]);
    let push = decode(&c.convert(&req).unwrap());
    assert_eq!(push.streams[0].labels, "{service_name=\"unknown_service\"}");
    assert!(c.convert(&request(vec![], vec![])).unwrap().is_empty());
}

#[test]
fn json_and_logfmt_lines_and_json_encoding() {
    let mut cfg = config();
    cfg.line_format = LokiLineFormat::Json;
    let req = request(
        vec![s("service.name", "api"), s("host.name", "h1")],
        vec![record(5, "boom", vec![s("user.id", "u 1")])],
    );
    let push = decode(&LokiConverter::new(&cfg).convert(&req).unwrap());
    let entry = &push.streams[0].entries[0];
    assert!(entry.structured_metadata.is_empty());
    let line: serde_json::Value = serde_json::from_str(&entry.line).unwrap();
    assert_eq!(line["body"], "boom");
    assert_eq!(line["attributes"]["user.id"], "u 1");
    assert_eq!(line["resources"]["host.name"], "h1");
    assert_eq!(line["trace_id"], "abababababababababababababababab");
    assert_eq!(line["instrumentation_scope"]["name"], "app");

    cfg.line_format = LokiLineFormat::Logfmt;
    let push = decode(&LokiConverter::new(&cfg).convert(&req).unwrap());
    assert_eq!(
        push.streams[0].entries[0].line,
        "body=boom trace_id=abababababababababababababababab span_id=cdcdcdcdcdcdcdcd severity_text=ERROR severity_number=17 user_id=\"u 1\" resource_host_name=h1 scope_name=app"
    );

    cfg.line_format = LokiLineFormat::Body;
    cfg.encoding = LokiEncoding::Json;
    let body = LokiConverter::new(&cfg).convert(&req).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let stream = &json["streams"][0];
    assert_eq!(stream["stream"]["service_name"], "api");
    assert_eq!(stream["values"][0][0], "5");
    assert_eq!(stream["values"][0][1], "boom");
    assert_eq!(stream["values"][0][2]["user_id"], "u 1");
}

/// Two chosen keys that make one label name: the record attribute wins, whichever value
/// sorts first (it was the smaller value).
#[test]
fn a_record_attribute_label_wins_over_a_resource_label_of_the_same_name() {
    let mut cfg = config();
    cfg.attribute_labels = vec!["service_name".into()];
    let c = LokiConverter::new(&cfg);
    for (resource, attribute) in [("a-resource", "z-record"), ("z-resource", "a-record")] {
        let req = request(
            vec![s("service.name", resource)],
            vec![record(1, "x", vec![s("service_name", attribute)])],
        );
        let push = decode(&c.convert(&req).unwrap());
        assert_eq!(
            push.streams[0].labels,
            format!("{{service_name=\"{attribute}\"}}")
        );
    }
}
