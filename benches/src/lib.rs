//! Bench helpers: the recorded payloads the criterion benches read, and the reference
//! configurations they share with the tests and the docs (`tests/fixtures/`).
#![forbid(unsafe_code)]

use std::path::PathBuf;

pub mod routing_path;

/// `tests/fixtures/reference-sampling.toml`: the recommended tail-sampling policy (errors,
/// slower than 1 s, user.id = "vip", 10 % of the rest).
pub const REFERENCE_SAMPLING: &str = include_str!("../../tests/fixtures/reference-sampling.toml");

/// `tests/fixtures/redaction.toml`: the DESIGN.md redaction processor (`[processors.redact]`).
pub const REDACTION: &str = include_str!("../../tests/fixtures/redaction.toml");

/// `benches/data/traces-00{0,1}.pb`: two `ExportTraceServiceRequest`s of 100 spans (about 10
/// traces, 355 bytes per span).
pub fn trace_payloads() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    ["traces-000.pb", "traces-001.pb"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("reading {f}: {e}")))
        .collect()
}
