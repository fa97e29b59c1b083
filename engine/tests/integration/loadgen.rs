//! shardtel-loadgen against a real shardtel with a file exporter, in
//! `--verify` mode: every acknowledged span arrives, traces split over
//! requests and connections are complete.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::Shardtel;

/// The loadgen binary next to `shardtel` (built by `cargo test --workspace`;
/// built here if this test runs alone).
pub fn loadgen_bin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_shardtel")).with_file_name("shardtel-loadgen");
    if !bin.exists() {
        let release = bin.parent().is_some_and(|p| p.ends_with("release"));
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "shardtel-loadgen"]);
        if release {
            cmd.arg("--release");
        }
        assert!(
            cmd.status().unwrap().success(),
            "failed to build shardtel-loadgen"
        );
    }
    bin
}

/// shardtel-loadgen set up to verify what `st`'s file exporter wrote (`--verify`, reading for up
/// to 60 s) and to write its report to `json`; the caller adds the target and the load.
pub fn verifying(st: &Shardtel, json: &std::path::Path) -> Command {
    let glob = format!("{}/traces*.jsonl*", st.out().display());
    let mut cmd = Command::new(loadgen_bin());
    cmd.args([
        "--verify",
        "--verify-file",
        &glob,
        "--verify-wait",
        "60s",
        "-q",
    ])
    .arg("--json")
    .arg(json);
    cmd
}

/// A finished process's stdout and stderr, as text.
pub fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run_loadgen(st: &Shardtel, protocol: &str, extra: &[&str]) -> (bool, String) {
    let endpoint = if protocol == "grpc" {
        st.grpc_url()
    } else {
        st.http_url()
    };
    let glob = format!("{}/traces*.jsonl*", st.out().display());
    let out = Command::new(loadgen_bin())
        .args([
            "-p",
            protocol,
            "-e",
            &endpoint,
            "--rate",
            "20000",
            "--duration",
            "3s",
        ])
        .args([
            "--connections",
            "4",
            "--split-traces",
            "--verify",
            "--verify-file",
            &glob,
        ])
        .args(["--verify-wait", "20s", "-q"])
        .args(extra)
        .output()
        .unwrap();
    (out.status.success(), output_text(&out))
}

#[test]
fn loadgen_verify_reports_no_loss_through_shardtel() {
    let st = Shardtel::start_config(|c| c.file_pipelines());
    let (ok, report) = run_loadgen(&st, "grpc", &["-c", "gzip"]);
    assert!(
        ok,
        "loadgen --verify failed over gRPC:\n{report}\nshardtel log:\n{}",
        st.log()
    );
    assert!(report.contains("lost"), "{report}");
    let (ok, report) = run_loadgen(&st, "http-protobuf", &["-c", "zstd", "--run-id", "7"]);
    assert!(
        ok,
        "loadgen --verify failed over HTTP:\n{report}\nshardtel log:\n{}",
        st.log()
    );
}
