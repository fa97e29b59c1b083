//! The command line: validate, default-config, and a clean drain on SIGTERM.

use std::process::Command;

use prost::Message;

use crate::gen::{request, span};
use crate::harness::{base_config, file_pipelines, read_traces, Shardtel};

fn shardtel(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_shardtel"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn default_config_prints_and_validates() {
    let out = shardtel(&["default-config"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[receivers.otlp]"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.toml");
    std::fs::write(&path, &text).unwrap();
    let out = shardtel(&["validate", "--config", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn validate_reports_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[engine]\ncorez = 3\n\n[receivers.otlp]\ngrpc = \"127.0.0.1:4317\"\n\n[pipelines.traces]\nreceivers = [\"otlp\"]\nexporters = [\"nope\"]\n",
    )
    .unwrap();
    let out = shardtel(&["validate", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:2"), "{err}");
    assert!(err.contains("corez"), "{err}");
}

#[test]
fn sigterm_drains_batches_and_exits_zero() {
    // A long batch timeout: only the drain can flush these spans.
    let mut st = Shardtel::start(|dir, ports| {
        base_config(dir, ports, "")
            + &file_pipelines(dir).replace("timeout = \"50ms\"", "timeout = \"1h\"")
    });
    let client = reqwest::blocking::Client::new();
    let req = request((0..100).map(|i| span(5, i, 0)).collect());
    let resp = client
        .post(format!("{}/v1/traces", st.http_url()))
        .header("content-type", "application/x-protobuf")
        .body(req.encode_to_vec())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(st.stop(), 0, "log:\n{}", st.log());
    let spans: usize = read_traces(&st.out())
        .iter()
        .flat_map(|(_, r)| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    assert_eq!(spans, 100, "log:\n{}", st.log());
}
