//! `--verify` end to end: the real loadgen binary against an in-test OTLP/HTTP target
//! that acknowledges every request but writes only some of them to a JSON-lines file, as
//! a lossy file exporter would.

mod otlp_target;

use otlp_target::{http_file_exporter, run_with_json, temp_dir};

const REQUESTS: u64 = 50;
const SPANS_PER_REQUEST: u64 = 100;

/// Runs loadgen in --verify mode against `endpoint`; returns (exit code, JSON results).
fn run_verify(
    dir: &std::path::Path,
    port: u16,
    extra: &[&str],
) -> (Option<i32>, serde_json::Value, String) {
    let name = format!("result-{}", extra.join("_").replace(['-', ' '], ""));
    let endpoint = format!("http://127.0.0.1:{port}");
    let pattern = format!("{}/traces*.jsonl*", dir.display());
    let count = REQUESTS.to_string();
    let mut args = vec![
        "--endpoint",
        &endpoint,
        "--count",
        &count,
        "--connections",
        "2",
        "--concurrency",
        "1",
        "--verify",
        "--verify-file",
        &pattern,
        "--verify-wait",
        "2s",
        "--verify-settle",
        "300ms",
        "--templates",
        "8",
    ];
    args.extend_from_slice(extra);
    if !extra.contains(&"--protocol") {
        args.extend_from_slice(&["--protocol", "http-protobuf"]);
    }
    run_with_json(dir, &name, &args)
}

#[test]
fn a_target_dropping_every_tenth_request_is_reported_as_that_much_loss() {
    let dir = temp_dir("drop10");
    let target = http_file_exporter(&dir.join("traces.jsonl"), Box::new(|i| i % 10 != 0));
    let (code, res, text) = run_verify(&dir, target.addr.port(), &[]);
    assert_eq!(code, Some(2), "loss must exit with status 2\n{text}");
    let v = &res["verify"];
    let dropped = REQUESTS.div_ceil(10) * SPANS_PER_REQUEST;
    assert_eq!(res["requests"]["accepted"], REQUESTS, "{text}");
    assert_eq!(
        v["spans_acknowledged"],
        REQUESTS * SPANS_PER_REQUEST,
        "{text}"
    );
    assert_eq!(v["spans_lost"], dropped, "{text}");
    assert_eq!(
        v["spans_arrived"],
        REQUESTS * SPANS_PER_REQUEST - dropped,
        "{text}"
    );
    assert_eq!(v["duplicates"], 0);
    // Whole traces per request: the dropped requests' traces are missing entirely.
    assert_eq!(v["traces_incomplete"], 0, "{text}");
    assert!(v["traces_without_arrivals"].as_u64().unwrap() > 0, "{text}");
    assert_eq!(v["passed"], false);
    assert!(
        text.contains(&format!("FAIL: {dropped} lost spans")),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_target_keeping_everything_passes_and_other_runs_are_ignored() {
    let dir = temp_dir("keepall");
    let target = http_file_exporter(&dir.join("traces.jsonl"), Box::new(|_| true));
    let (code, res, text) = run_verify(
        &dir,
        target.addr.port(),
        &["--run-id", "0x0101", "--workers", "2"],
    );
    assert_eq!(code, Some(0), "{text}");
    let v = &res["verify"];
    assert_eq!(v["spans_lost"], 0, "{text}");
    assert_eq!(v["spans_arrived"], REQUESTS * SPANS_PER_REQUEST, "{text}");
    assert_eq!(v["traces_incomplete"], 0);
    assert_eq!(v["spans_from_other_runs"], 0);
    assert_eq!(v["passed"], true);
    assert_eq!(res["run_id"], "0101");

    // A second run appends to the same file: the first run's spans are not its own.
    let (code, res, text) = run_verify(&dir, target.addr.port(), &["--run-id", "0x0202"]);
    assert_eq!(code, Some(0), "{text}");
    let v = &res["verify"];
    assert_eq!(v["spans_lost"], 0, "{text}");
    assert_eq!(
        v["spans_from_other_runs"],
        REQUESTS * SPANS_PER_REQUEST,
        "{text}"
    );
    assert_eq!(v["spans_unrecognised"], 0, "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn split_traces_with_a_dropped_piece_are_incomplete() {
    let dir = temp_dir("split");
    let target = http_file_exporter(&dir.join("traces.jsonl"), Box::new(|i| i % 10 != 0));
    let (code, res, text) = run_verify(&dir, target.addr.port(), &["--split-traces", "2"]);
    assert_eq!(code, Some(2), "{text}");
    let v = &res["verify"];
    assert_eq!(
        v["spans_lost"],
        REQUESTS.div_ceil(10) * SPANS_PER_REQUEST,
        "{text}"
    );
    assert!(v["traces_incomplete"].as_u64().unwrap() > 0, "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn sampled_targets_may_drop_whole_traces_but_not_pieces() {
    // Whole traces per request: a dropped request is a trace the sampler did not keep.
    let dir = temp_dir("sampled");
    let target = http_file_exporter(&dir.join("traces.jsonl"), Box::new(|i| i % 10 != 0));
    let (code, res, text) = run_verify(&dir, target.addr.port(), &["--sampled"]);
    assert_eq!(code, Some(0), "{text}");
    let v = &res["verify"];
    assert_eq!(v["spans_lost"], 0, "{text}");
    assert!(v["traces_without_arrivals"].as_u64().unwrap() > 0, "{text}");
    drop(target);

    // Split traces: dropping a request leaves kept traces incomplete, which is loss.
    let target = http_file_exporter(&dir.join("traces-split.jsonl"), Box::new(|i| i % 10 != 0));
    let (code, res, text) = run_verify(
        &dir,
        target.addr.port(),
        &["--sampled", "--split-traces", "2", "--run-id", "77"],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(
        res["verify"]["traces_incomplete"].as_u64().unwrap() > 0,
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn otlp_json_bodies_verify_too() {
    let dir = temp_dir("json");
    let target = http_file_exporter(&dir.join("traces.jsonl"), Box::new(|i| i % 10 != 0));
    let (code, res, text) = run_verify(
        &dir,
        target.addr.port(),
        &["--protocol", "http-json", "--split-traces", "3"],
    );
    assert_eq!(code, Some(2), "{text}");
    let v = &res["verify"];
    assert_eq!(res["requests"]["accepted"], REQUESTS, "{text}");
    assert_eq!(
        v["spans_lost"],
        REQUESTS.div_ceil(10) * SPANS_PER_REQUEST,
        "{text}"
    );
    assert_eq!(v["duplicates"], 0, "{text}");
    assert_eq!(v["spans_unrecognised"], 0, "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}
