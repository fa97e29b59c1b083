//! Reloading the configuration of a running shardtel (SIGHUP through `shardtel reload`): under
//! load nothing acknowledged is lost or duplicated, traces in flight keep the decision of the
//! policies they started under while new rules show in the output; a file with problems and a
//! file that changes a listener change nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use shardtel_protocol::proto::common::v1::any_value::Value;
use shardtel_protocol::proto::trace::v1::Span;

use crate::gen;
use crate::harness::{free_port, spans_in, wait_until, Shardtel};
use crate::loadgen::{output_text, verifying};
use crate::test_config::{Action, Component, Pipeline, Policy, TailSampling, TestConfig};

const GEN_KEY: &str = "reload.gen";

/// Stamps every span with `reload.gen = generation` (an attributes processor).
fn stamp(generation: &str) -> Component {
    Component::attributes(&[Action::upsert(GEN_KEY, generation)])
}

/// Traces through `stamp` (generation 1) and `tail_sampling` to the file exporter.
fn stamped(c: TestConfig, sampling: TailSampling) -> TestConfig {
    c.file_exporters()
        .processor("stamp", stamp("1"))
        .processor("tail_sampling", sampling)
        .traces(Pipeline::otlp_to(&["file_traces"]).processors(&["stamp", "tail_sampling"]))
}

/// `shardtel reload` with these arguments; its output, which must say it signalled.
fn shardtel_reload(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shardtel"))
        .arg("reload")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "shardtel reload {args:?} failed: {text}"
    );
    text
}

/// Asks `st` to reload through its pid and waits until `result` was counted `count` times.
fn reload_and_wait(st: &Shardtel, result: &str, count: u64) {
    let pid = st.child.as_ref().unwrap().id().to_string();
    shardtel_reload(&["--pid", &pid]);
    let label = format!("result=\"{result}\"");
    assert!(
        wait_until(30, || st
            .metric_sum("shardtel_config_reloads_total", &label)
            == count),
        "no {result} reload counted; log:\n{}",
        st.log()
    );
}

/// The `reload.gen` value of a span.
fn generation(span: &Span) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key == GEN_KEY)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The generations of the spans of each trace in the file output under `dir`.
fn generations_by_trace(dir: &Path) -> BTreeMap<Vec<u8>, Vec<String>> {
    let mut by_trace: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    for span in spans_in(dir) {
        by_trace
            .entry(span.trace_id.clone())
            .or_default()
            .push(generation(&span));
    }
    by_trace
}

/// Under load: the processors and the sampling policy change live. Every span acknowledged
/// and kept arrives once; every trace that started before the reload is kept by the old
/// policy (keep all) whatever spans it got after; traces that started after it are decided by
/// the new one (keep none); spans processed after the reload carry the new stamp.
#[test]
fn reload_under_load_keeps_every_span_and_the_decisions_of_traces_in_flight() {
    let wait = Duration::from_secs(2);
    let mut st = Shardtel::start_config(|c| stamped(c, TailSampling::keep_all(wait)));
    let json = st.dir.path().join("loadgen.json");
    let loadgen = verifying(&st, &json)
        .args(["-p", "grpc", "-e", &st.grpc_url()])
        .args(["--rate", "20000", "--duration", "8s", "--connections", "4"])
        .args(["--split-traces", "5", "--sampled"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    st.reconfigure(|c| {
        c.replace_processor("stamp", stamp("2"));
        c.replace_processor(
            "tail_sampling",
            TailSampling::new(
                wait,
                vec![Policy::string_attribute_regex(
                    "none",
                    GEN_KEY,
                    &["^never$"],
                )],
            ),
        );
    });
    // Through the lock file of the data directory, as an operator would.
    let said = shardtel_reload(&["--config", st.config_path.to_str().unwrap()]);
    assert!(said.contains("sent SIGHUP"), "{said}");
    let out = loadgen.wait_with_output().unwrap();
    let text = output_text(&out);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_default())
            .unwrap_or_else(|e| panic!("no loadgen report ({e}):\n{text}\n{}", st.log()));
    assert!(
        out.status.success(),
        "loadgen --verify failed:\n{text}\nshardtel log:\n{}",
        st.log()
    );
    assert_eq!(report["verify"]["spans_lost"], 0, "{text}");
    assert_eq!(report["verify"]["duplicates"], 0, "{text}");
    assert_eq!(report["verify"]["traces_incomplete"], 0, "{text}");
    assert_eq!(
        st.metric_sum("shardtel_config_reloads_total", "result=\"success\""),
        1,
        "{}",
        st.log()
    );
    assert!(
        st.log().contains("reloaded: processors; tail sampling"),
        "{}",
        st.log()
    );

    let by_trace = generations_by_trace(&st.out());
    let started_after: Vec<_> = by_trace
        .values()
        .filter(|g| g.iter().all(|g| g == "2"))
        .collect();
    let in_flight = by_trace
        .values()
        .filter(|g| g.iter().any(|g| g == "1") && g.iter().any(|g| g == "2"))
        .count();
    let before = by_trace.len() - in_flight;
    eprintln!("kept traces: {before} decided before the reload, {in_flight} in flight at it");
    assert!(
        started_after.is_empty(),
        "{} traces that started after the reload were kept by the old policy",
        started_after.len()
    );
    assert!(
        in_flight > 0,
        "no trace was in flight at the reload ({before} traces before it): the test \
         did not exercise the cut"
    );
    assert!(
        by_trace.values().flatten().all(|g| g == "1" || g == "2"),
        "a span without a stamp"
    );
    // The new policy decided the traces that started after the reload (and kept none).
    let metrics = st.metrics();
    let not_sampled = crate::harness::metric_sum_in(
        &metrics,
        "shardtel_sampler_policy_votes_total",
        "policy=\"none\",vote=\"not_sample\"",
    );
    assert!(
        not_sampled > 0,
        "the new policy decided nothing:\n{metrics}"
    );
    assert_eq!(st.stop(), 0);
}

/// A file with problems changes nothing: every problem is logged, the failure counted, and the
/// old processors keep running. A file that changes a listener's port is refused with the key
/// named, and changes nothing either. A good file after both applies.
#[test]
fn bad_and_refused_reloads_change_nothing() {
    let mut st = Shardtel::start_config(|c| {
        c.file_exporters()
            .processor("stamp", stamp("1"))
            .traces(Pipeline::otlp_to(&["file_traces"]).processors(&["stamp"]))
    });
    let good = std::fs::read_to_string(&st.config_path).unwrap();
    let send = |st: &Shardtel, n: u64| {
        st.post_traces(&gen::request((0..2).map(|i| gen::span(21, n, i)).collect()))
    };
    send(&st, 1);

    // Two problems: an unknown top-level table and an exporter without its endpoint.
    let bad = format!("{good}\n[bogus]\nkey = 1\n\n[exporters.broken]\ntype = \"otlp\"\n");
    std::fs::write(&st.config_path, bad).unwrap();
    reload_and_wait(&st, "failure", 1);
    let log = st.log();
    assert!(
        log.contains("reload failed, nothing changed") && log.contains("bogus"),
        "{log}"
    );
    assert!(log.contains("exporters.broken"), "{log}");
    send(&st, 2);

    // A new port for OTLP/gRPC with a new stamp: refused, the key named.
    st.reconfigure(|c| {
        c.otlp.grpc = free_port();
        c.replace_processor("stamp", stamp("2"));
    });
    reload_and_wait(&st, "refused", 1);
    let log = st.log();
    assert!(
        log.contains("reload refused") && log.contains("receivers.otlp.grpc"),
        "{log}"
    );
    send(&st, 3);
    assert!(
        wait_until(10, || spans_in(&st.out()).len() == 3 * 2),
        "{}",
        st.log()
    );
    let generations: Vec<String> = spans_in(&st.out()).iter().map(generation).collect();
    assert!(generations.iter().all(|g| g == "1"), "{generations:?}");
    assert!(
        st.metrics()
            .contains("shardtel_config_last_reload_successful 0"),
        "{}",
        st.metrics()
    );

    // Back to the old port with the new stamp: applies.
    let grpc = st.ports.grpc;
    st.reconfigure(|c| c.otlp.grpc = grpc);
    reload_and_wait(&st, "success", 1);
    send(&st, 4);
    assert!(
        wait_until(10, || spans_in(&st.out()).len() == 4 * 2),
        "{}",
        st.log()
    );
    let last: Vec<String> = spans_in(&st.out())
        .iter()
        .filter(|s| generation(s) == "2")
        .map(generation)
        .collect();
    assert_eq!(last.len(), 2, "the new stamp is not in the output");
    assert_eq!(st.stop(), 0);
}
