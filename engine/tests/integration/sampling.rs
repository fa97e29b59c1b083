//! Tail sampling through the real process: traces arrive in pieces over
//! many connections; every kept trace is complete, every error, slow and
//! VIP trace is kept, the probabilistic share of the rest is within bounds,
//! and a second run with the same input makes the same decisions. Then the
//! same through shardtel-loadgen's traces (split over requests and gRPC
//! connections), checked by its `--verify --sampled`. Both also with the
//! buffered spans held compressed (`buffer_compression = "lz4"`).

use std::collections::{BTreeMap, BTreeSet};

use shardtel_protocol::proto::trace::v1::status;

use crate::gen::{kv, request, s, span};
use crate::harness::{spans_in, wait_until, Shardtel};
use crate::loadgen::{loadgen_bin, output_text};
use crate::test_config::{secs, Pipeline, TailSampling};

const TRACES: u64 = 400;
const SPANS: u64 = 6;

/// The reference policy (tests/fixtures/reference-sampling.toml: errors, slower than 1 s, user
/// `vip`, 10 % of the rest), deciding 1 s after a trace's first span, with `buffer_compression`
/// `compression`.
fn sampling_collector(compression: &'static str) -> Shardtel {
    Shardtel::start_config(|c| {
        c.processor(
            "tail_sampling",
            TailSampling::reference()
                .decision_wait(secs(1))
                .buffer_compression(compression),
        )
        .file_exporters()
        .traces(Pipeline::otlp_to(&["file_traces"]).processors(&["tail_sampling"]))
    })
}

/// Kind of trace `t`: 0 error, 1 slow, 2 vip, 3 ordinary.
fn kind(t: u64) -> u8 {
    match t % 20 {
        0 => 0,
        1 => 1,
        2 => 2,
        _ => 3,
    }
}

fn trace_span(t: u64, i: u64) -> shardtel_protocol::proto::trace::v1::Span {
    let mut sp = span(11, t, i);
    // ordinary: no errors, short
    sp.status = Some(shardtel_protocol::proto::trace::v1::Status::default());
    match kind(t) {
        0 if i == 3 => {
            sp.status = Some(shardtel_protocol::proto::trace::v1::Status {
                code: status::StatusCode::Error as i32,
                message: "boom".into(),
            })
        }
        1 if i == 0 => sp.end_time_unix_nano = sp.start_time_unix_nano + 2_000_000_000,
        2 => sp.attributes.push(kv("user.id", s("vip"))),
        _ => sp.attributes.push(kv("user.id", s("user-1"))),
    }
    sp
}

/// Sends every trace in SPANS pieces, each piece in 4 requests, each
/// request on a fresh connection (so every core receives pieces).
fn send_all(st: &Shardtel) {
    for piece in 0..SPANS {
        for part in 0..4u64 {
            let spans = (0..TRACES)
                .filter(|t| t % 4 == part)
                .map(|t| trace_span(t, piece))
                .collect();
            st.post_traces(&request(spans));
        }
    }
}

/// trace number -> spans that arrived
fn arrived(st: &Shardtel) -> BTreeMap<u64, BTreeSet<Vec<u8>>> {
    let mut out: BTreeMap<u64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for sp in spans_in(&st.out()) {
        let t = u64::from_be_bytes(sp.trace_id[8..16].try_into().unwrap());
        assert!(
            out.entry(t).or_default().insert(sp.span_id),
            "span exported twice"
        );
    }
    out
}

fn run_once(compression: &'static str) -> BTreeSet<u64> {
    let mut st = sampling_collector(compression);
    send_all(&st);
    // decision_wait is 1 s: every trace is decided within a few seconds
    let must = (0..TRACES).filter(|&t| kind(t) != 3).count();
    assert!(
        wait_until(30, || arrived(&st)
            .values()
            .filter(|s| s.len() == SPANS as usize)
            .count()
            >= must),
        "kept traces incomplete or missing; log:\n{}",
        st.log()
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_compressed_as_configured(&st, compression);
    assert_eq!(st.stop(), 0);
    let got = arrived(&st);
    for (t, spans) in &got {
        assert_eq!(spans.len(), SPANS as usize, "kept trace {t} is incomplete");
    }
    for t in 0..TRACES {
        if kind(t) != 3 {
            assert!(
                got.contains_key(&t),
                "trace {t} of kind {} was not kept",
                kind(t)
            );
        }
    }
    let ordinary = (0..TRACES).filter(|&t| kind(t) == 3).count() as f64;
    let kept_ordinary = got.keys().filter(|&&t| kind(t) == 3).count() as f64;
    let share = kept_ordinary / ordinary;
    // 10 % of 340 traces: mean 34, sd 5.5; allow about 3 sd either way
    assert!(
        (0.05..=0.15).contains(&share),
        "probabilistic share {share:.3} (kept {kept_ordinary} of {ordinary})"
    );
    got.keys().copied().collect()
}

/// With `"lz4"`, batches were compressed and kept spans decompressed; with `"none"`, nothing.
fn assert_compressed_as_configured(st: &Shardtel, compression: &str) {
    let compressed = st.metric_sum("shardtel_sampler_compressed_batches_total", "");
    let decompressed = st.metric_sum("shardtel_sampler_decompressions_total", "cache=\"miss\"");
    if compression == "lz4" {
        assert!(
            compressed > 0 && decompressed > 0,
            "lz4: {compressed} batches compressed, {decompressed} decompressed:\n{}",
            st.metrics()
        );
    } else {
        assert_eq!((compressed, decompressed), (0, 0));
    }
}

#[test]
fn tail_sampling_keeps_whole_traces_deterministically() {
    let first = run_once("none");
    let second = run_once("none");
    assert_eq!(
        first, second,
        "decisions differ between two runs with the same input"
    );
}

/// Compression changes where buffered spans are held, never which traces are kept.
#[test]
fn compressed_buffers_keep_the_same_whole_traces() {
    assert_eq!(run_once("lz4"), run_once("none"));
}

#[test]
fn loadgen_traces_split_over_connections_are_kept_whole() {
    loadgen_traces_kept_whole("none");
}

#[test]
fn loadgen_traces_in_compressed_buffers_are_kept_whole() {
    loadgen_traces_kept_whole("lz4");
}

fn loadgen_traces_kept_whole(compression: &'static str) {
    let st = sampling_collector(compression);
    let glob = format!("{}/traces*.jsonl*", st.out().display());
    let json = st.dir.path().join("loadgen.json");
    let out = std::process::Command::new(loadgen_bin())
        .args(["-p", "grpc", "-e", &st.grpc_url(), "--rate", "20000"])
        .args(["--duration", "3s", "--connections", "4", "--split-traces"])
        .args(["--verify", "--sampled", "--verify-file", &glob])
        .args(["--verify-wait", "30s", "-q", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let report = output_text(&out);
    assert!(
        out.status.success(),
        "loadgen --verify --sampled failed:\n{report}\nshardtel log:\n{}",
        st.log()
    );
    assert!(report.contains("PASS"), "{report}");
    // Not vacuous: the sampler kept some traces whole and dropped others.
    assert!(
        wait_until(30, || {
            st.metric_sum("shardtel_sampler_traces_total", "decision=\"sampled\"") > 0
                && st.metric_sum("shardtel_sampler_traces_total", "decision=\"not_sampled\"") > 0
        }),
        "no decisions of both kinds:\n{}",
        st.metrics()
    );
    // `--sampled` counts a trace none of whose spans arrived as "not kept": a trace the sampler
    // kept but that was lost whole would pass that check. So every trace the sampler kept must
    // have arrived whole, and every one it dropped must be one that did not arrive.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let complete = report["verify"]["traces_complete"].as_u64().unwrap();
    let not_kept = report["verify"]["traces_without_arrivals"]
        .as_u64()
        .unwrap();
    let decided = |d: &str| {
        st.metric_sum(
            "shardtel_sampler_traces_total",
            &format!("decision=\"{d}\""),
        )
    };
    assert!(
        wait_until(30, || decided("sampled") == complete
            && decided("not_sampled") == not_kept),
        "loadgen: {complete} traces complete, {not_kept} without arrivals; the sampler: {} \
         kept, {} dropped\n{report}",
        decided("sampled"),
        decided("not_sampled")
    );
    assert_compressed_as_configured(&st, compression);
}

/// At start, the process checks the sampler's bounds and the ingest log's size against
/// `decision_wait` at the rate it is expected to take (derived from its cores unless
/// `expected_spans_per_second` is set) and warns, with the numbers, for each one that cannot
/// hold it; a rate the bounds hold gives no warning.
#[test]
fn bounds_too_small_for_decision_wait_are_logged_at_start() {
    let start = |rate: Option<u64>| {
        Shardtel::start_config(|c| {
            let mut sampling = crate::test_config::Component::from(
                TailSampling::reference().decision_wait(secs(10)),
            )
            .set("max_buffered_bytes_per_core", "64MiB");
            if let Some(r) = rate {
                sampling = sampling.set("expected_spans_per_second", r as i64);
            }
            c.processor("tail_sampling", sampling)
                .file_exporters()
                .traces(Pipeline::otlp_to(&["file_traces"]).processors(&["tail_sampling"]))
        })
    };
    let mut st = start(None);
    let log = st.log();
    st.stop();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("tail sampling \"tail_sampling\""))
        .collect();
    // 64 MiB / 500 assumed bytes per span = 134,217 spans over 10 s; 200,000 traces x 10
    // spans over 10 s; 1 GiB of ingest log / 400 wire bytes over 10 s.
    for expected in [
        "tail_sampling.max_buffered_bytes_per_core = 67108864 bytes holds decision_wait of traffic up to 13421 spans/s per core only",
        "tail_sampling.max_traces_per_core = 200000 traces holds decision_wait of traffic up to 200000 spans/s per core only",
        "engine.wal.ingest_max_bytes = 1073741824 bytes holds decision_wait of traffic up to 268435 spans/s per core only",
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(expected)
                && w.contains("derived: 500000 spans/s per core")
                && w.contains("decision_wait = 10s")),
            "no warning with {expected:?} in the log:\n{log}"
        );
    }
    assert_eq!(warnings.len(), 3, "{log}");

    // 10,000 spans/s: 5,000 per core on 2 cores (10,000 on one) fit in every bound.
    let mut st = start(Some(10_000));
    let log = st.log();
    st.stop();
    assert!(
        !log.contains("tail sampling \"tail_sampling\""),
        "a warning for a rate the bounds hold:\n{log}"
    );
    assert!(log.contains("INFO"), "the process logged nothing:\n{log}");
}
