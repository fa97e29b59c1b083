//! The command line: validate, default-config, and a clean drain on SIGTERM.

use std::process::Command;

use crate::gen::{request, span};
use crate::harness::{spans_in, Shardtel};
use crate::test_config::{secs, Batch};

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
    let mut st = Shardtel::start_config(|c| {
        c.file_pipelines()
            .with_exporter("file_traces", |e| e.batch(Batch::timeout(secs(3600))))
    });
    st.post_traces(&request((0..100).map(|i| span(5, i, 0)).collect()));
    assert_eq!(st.stop(), 0, "log:\n{}", st.log());
    assert_eq!(spans_in(&st.out()).len(), 100, "log:\n{}", st.log());
}

#[test]
fn help_says_what_shardtel_is_and_where_to_start() {
    let out = shardtel(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let first = help.lines().next().unwrap();
    assert_eq!(
        first,
        "shardtel: an OpenTelemetry collector for traces, metrics and logs."
    );
    for expected in [
        "OTLP over gRPC and HTTP",
        "tail-samples whole traces",
        "pinned to each CPU core",
        "until SIGTERM or SIGINT",
        "shardtel default-config > shardtel.toml",
        "shardtel validate --config shardtel.toml",
        "--config <FILE>",
        "log_format",
        "docs/",
    ] {
        assert!(
            help.contains(expected),
            "{expected:?} missing from:\n{help}"
        );
    }
    assert!(
        !help.contains("shardtel engine:"),
        "the crate's internal description leaked into the help:\n{help}"
    );
    // -h: the one-line summary and the same pointers.
    let short = String::from_utf8(shardtel(&["-h"]).stdout).unwrap();
    assert!(
        short.starts_with("shardtel: an OpenTelemetry collector"),
        "{short}"
    );
    assert!(short.contains("shardtel validate --config"), "{short}");
}

#[test]
fn version_names_the_release_and_what_it_is() {
    let out = shardtel(&["--version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(concat!("shardtel ", env!("CARGO_PKG_VERSION")))
    );
    let rest: Vec<&str> = lines.collect();
    let rest = rest.join("\n");
    assert!(rest.contains("OpenTelemetry collector"), "{text}");
    assert!(rest.contains("shardtel default-config"), "{text}");
    assert!(rest.contains("shardtel validate --config FILE"), "{text}");
    // -V: the version alone, for scripts.
    let short = String::from_utf8(shardtel(&["-V"]).stdout).unwrap();
    assert_eq!(short, concat!("shardtel ", env!("CARGO_PKG_VERSION"), "\n"));
}
