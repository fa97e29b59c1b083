//! Reloading the configuration of a running shardtel (SIGHUP through `shardtel reload`): under
//! load nothing acknowledged is lost or duplicated, traces in flight keep the decision of the
//! policies they started under while new rules show in the output; a file with problems and a
//! file that changes a listener change nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::proto::common::v1::any_value::Value;
use shardtel_protocol::proto::trace::v1::Span;
use shardtel_protocol::Signal;

use crate::gen;
use crate::harness::{free_port, spans_in, wait_until, Shardtel};
use crate::loadgen::{output_text, verifying};
use crate::test_config::{
    millis, Action, Batch, Component, Pipeline, Policy, TailSampling, TestConfig,
};

const GEN_KEY: &str = "reload.gen";
/// The tag of the trace ids the reload test cuts itself, and how many it cuts.
const CUT_TAG: u8 = 0xC7;
const CUT_TRACES: u64 = 16;

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

/// The spans of one line of file exporter output.
fn spans_of_json_line(line: &str) -> Vec<Span> {
    use prost::Message as _;
    let pb = shardtel_protocol::json::to_protobuf(Signal::Traces, line.as_bytes()).unwrap();
    ExportTraceServiceRequest::decode(pb.as_ref())
        .unwrap()
        .resource_spans
        .into_iter()
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .collect()
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
    // Long enough that the pieces of the traces the test cuts arrive within it even when the
    // reload is slow on a loaded machine (the cut is checked only if they did).
    let wait = Duration::from_secs(8);
    let mut st = Shardtel::start_config(|c| stamped(c, TailSampling::keep_all(wait)));
    let json = st.dir.path().join("loadgen.json");
    let mut loadgen = verifying(&st, &json)
        .args(["-p", "grpc", "-e", &st.grpc_url()])
        .args(["--rate", "20000", "--duration", "12s", "--connections", "4"])
        .args(["--split-traces", "5", "--sampled"])
        // Kept traces leave the sampler up to decision_wait after their last span: a settle
        // longer than that lets them all arrive before the verdict.
        .args(["--verify-settle", "12s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Reload once kept traces flow out (this machine may be slow: it shares its cores).
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        wait_until(30, || st
            .metric_sum("shardtel_exporter_sent_spans_total", "")
            > 0),
        "nothing exported before the reload; log:\n{}",
        st.log()
    );
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
    // Traces the test cuts itself, whatever the timing of this machine: their first pieces
    // arrive before the reload and their last pieces after it.
    let cut_piece = |first: u64| {
        let spans = (0..CUT_TRACES)
            .flat_map(|t| (first..first + 2).map(move |i| gen::span(CUT_TAG, t, i)))
            .collect();
        st.post_traces(&gen::request(spans));
    };
    let cut_started = std::time::Instant::now();
    cut_piece(0);
    // Through the lock file of the data directory, as an operator would.
    let said = shardtel_reload(&["--config", st.config_path.to_str().unwrap()]);
    assert!(said.contains("sent SIGHUP"), "{said}");
    assert!(
        wait_until(30, || st
            .metric_sum("shardtel_config_reloads_total", "result=\"success\"")
            == 1),
        "the reload was not counted; log:\n{}",
        st.log()
    );
    cut_piece(2);
    let cut_took = cut_started.elapsed();
    let reloaded_under_load = matches!(loadgen.try_wait(), Ok(None));
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
    assert!(
        report["verify"]["traces_complete"].as_u64() > Some(0),
        "no kept trace arrived: {text}\nlog:\n{}\nmetrics:\n{}",
        st.log(),
        st.metrics()
    );
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

    assert!(
        wait_until(30, || st.metric_sum("shardtel_sampler_buffered_traces", "")
            == 0),
        "the sampler still holds traces"
    );
    // A trace none of whose spans arrived must be one the sampler dropped: `--sampled` counts
    // it as "not kept", so a trace lost whole (say, from the old sampler at the reload) would
    // otherwise pass. Every kept one arrived whole.
    let not_kept = report["verify"]["traces_without_arrivals"]
        .as_u64()
        .unwrap();
    let kept = report["verify"]["traces_complete"].as_u64().unwrap();
    let dropped = st.metric_sum("shardtel_sampler_traces_total", "decision=\"not_sampled\"");
    let sampled = st.metric_sum("shardtel_sampler_traces_total", "decision=\"sampled\"");
    assert!(
        not_kept <= dropped && kept <= sampled,
        "{not_kept} traces without arrivals but {dropped} dropped by the sampler, {kept} \
         complete of {sampled} kept: {text}"
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
    eprintln!(
        "kept traces: {before} decided before the reload, {in_flight} in flight at it \
         (reloaded while loadgen ran: {reloaded_under_load})"
    );
    assert!(
        started_after.is_empty(),
        "{} traces that started after the reload were kept by the old policy",
        started_after.len()
    );
    // The traces cut by the test: kept whole by the old policy, each piece with the stamp of
    // the processors that were running when it arrived.
    // Only when their last pieces came within decision_wait of the first: a trace decided
    // before its last pieces arrived is no longer in flight (its late pieces follow the
    // decision cache, which the loadgen traffic may have cycled).
    if cut_took < wait {
        for t in 0..CUT_TRACES {
            let id = gen::trace_id(CUT_TAG, t);
            let mut got = by_trace.get(&id).cloned().unwrap_or_default();
            got.sort();
            assert_eq!(
                got,
                ["1", "1", "2", "2"],
                "trace {t} cut by the reload: the generations of its spans"
            );
        }
    } else {
        eprintln!(
            "\n!!!!!!!! the cut was not checked: the reload took {cut_took:?}, longer than \
             decision_wait ({wait:?}), on this machine !!!!!!!!\n"
        );
    }
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

/// Under load, an exporter's endpoint and the processors change together: the gateway
/// forwards to one downstream shardtel, then (after the reload) to another, through the same
/// export queue (on disk, the default with durability). Every acknowledged span arrives once
/// across the two; no span stamped after the reload reaches the old endpoint; what the queue
/// held at the reload may go to either; the exporter's counters keep growing.
#[test]
fn reload_moves_an_exporter_to_a_new_endpoint_without_losing_what_it_held() {
    let first = Shardtel::start_config(|c| {
        c.file_exporters()
            .traces(Pipeline::otlp_to(&["file_traces"]))
    });
    // The second writes next to the first's output, so one glob verifies both.
    let beside = first.out().join("traces-second.jsonl");
    let second = Shardtel::start_config(|c| {
        c.exporter("file_traces", Component::file(&beside))
            .traces(Pipeline::otlp_to(&["file_traces"]))
    });
    let mut gateway = Shardtel::start_config(|c| {
        c.exporter("up", Component::otlp(&first.grpc_url()))
            .processor("stamp", stamp("1"))
            .traces(Pipeline::otlp_to(&["up"]).processors(&["stamp"]))
    });
    let json = gateway.dir.path().join("loadgen.json");
    let glob = format!("{}/traces*.jsonl*", first.out().display());
    let loadgen = Command::new(crate::loadgen::loadgen_bin())
        .args(["-p", "grpc", "-e", &gateway.grpc_url()])
        .args(["--rate", "20000", "--duration", "6s", "--connections", "4"])
        .args(["--split-traces", "3", "--verify", "--verify-file", &glob])
        .args(["--verify-wait", "60s", "-q", "--json"])
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        wait_until(30, || first
            .metric_sum("shardtel_exporter_sent_spans_total", "")
            > 0),
        "nothing reached the first endpoint before the reload; log:\n{}",
        gateway.log()
    );
    let endpoint = second.grpc_url();
    gateway.reconfigure(|c| {
        c.exporters.insert("up".into(), Component::otlp(&endpoint));
        c.replace_processor("stamp", stamp("2"));
    });
    reload_and_wait(&gateway, "success", 1);
    let out = loadgen.wait_with_output().unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success(),
        "loadgen --verify failed:\n{text}\ngateway log:\n{}",
        gateway.log()
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["verify"]["spans_lost"], 0, "{text}");
    assert_eq!(report["verify"]["duplicates"], 0, "{text}");
    let log = gateway.log();
    assert!(log.contains("reloaded: processors; exporters up"), "{log}");

    // spans_in reads both files: split them by file.
    let second_spans: Vec<Span> = crate::harness::read_lines(&first.out(), "traces-second")
        .into_iter()
        .flat_map(|(_, line)| spans_of_json_line(&line))
        .collect();
    let all = spans_in(&first.out());
    let stamped_after = all.iter().filter(|s| generation(s) == "2").count();
    let after_at_second = second_spans.iter().filter(|s| generation(s) == "2").count();
    assert!(stamped_after > 0, "the new stamp is not in the output");
    assert_eq!(
        stamped_after, after_at_second,
        "a span stamped after the reload went to the old endpoint"
    );
    assert!(
        all.len() > second_spans.len(),
        "nothing reached the old endpoint"
    );
    // The exporter's counters kept growing across the swap (the old queue's are added).
    let sent = gateway.metric_sum("shardtel_exporter_sent_spans_total", "exporter=\"up\"");
    assert_eq!(sent, all.len() as u64, "{}", gateway.metrics());
    assert_eq!(gateway.stop(), 0);
}

/// `shardtel reload` names no process it cannot be sure of: without `--pid` or `--config` it
/// says what to pass, and a lock file that no live shardtel holds (its pid may be anyone's by
/// now) is refused without a signal.
#[test]
fn shardtel_reload_refuses_to_guess_the_process() {
    let reload = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_shardtel"))
            .arg("reload")
            .args(args)
            .output()
            .unwrap()
    };
    let out = reload(&[]);
    assert!(!out.status.success());
    assert!(output_text(&out).contains("pass --pid PID or --config FILE"));

    // A stale lock file naming a live process that is not shardtel.
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path(), crate::harness::Ports::new())
        .exporter("blackhole", Component::blackhole())
        .traces(Pipeline::otlp_to(&["blackhole"]));
    let path = dir.path().join("shardtel.toml");
    std::fs::write(&path, config.render()).unwrap();
    let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(dir.path().join("LOCK"), format!("{}\n", bystander.id())).unwrap();
    let out = reload(&["--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("no running shardtel holds"),
        "{}",
        output_text(&out)
    );
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "the process named by the stale lock file was signalled"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// A routing processor's routes change live: requests after the reload follow the new routes,
/// and the route counters keep growing (carried over, not reset).
#[test]
fn routes_change_live_and_their_counters_keep_growing() {
    let mut dirs = None;
    let route = |default: &str, slow: &str| {
        Component::routing(&[default], &[(r#"attributes["slow"] == true"#, &[slow])])
    };
    let mut st = Shardtel::start_config(|c| {
        let out = c.out_dir();
        dirs = Some((out.join("a"), out.join("b")));
        let file = |dir: &str| {
            Component::file(out.join(dir).join("traces.jsonl")).batch(Batch::timeout(millis(50)))
        };
        c.exporter("a_store", file("a"))
            .exporter("b_store", file("b"))
            .processor("route", route("a_store", "b_store"))
            .traces(Pipeline::otlp_to(&["a_store", "b_store"]).processors(&["route"]))
    });
    let (a_dir, b_dir) = dirs.unwrap();
    // Traces `first..first + 8` of 2 spans; the even ones carry `slow = true`.
    let send = |st: &Shardtel, first: u64| {
        let mut spans = Vec::new();
        for t in first..first + 8 {
            for i in 0..2 {
                let mut sp = gen::span(23, t, i);
                sp.attributes.push(gen::kv("t", gen::s(&t.to_string())));
                if t % 2 == 0 {
                    sp.attributes.push(gen::kv("slow", Value::BoolValue(true)));
                }
                spans.push(sp);
            }
        }
        st.post_traces(&gen::request(spans));
    };
    let traces_in = |dir: &Path| -> Vec<u64> {
        let mut v: Vec<u64> = spans_in(dir)
            .iter()
            .map(|sp| {
                let t = sp.attributes.iter().find(|kv| kv.key == "t").unwrap();
                match t.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(t)) => t.parse().unwrap(),
                    other => panic!("t is {other:?}"),
                }
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let routed =
        |st: &Shardtel| st.metric_sum("shardtel_routing_items_total", "processor=\"route\"");
    send(&st, 0);
    assert!(
        wait_until(20, || routed(&st) == 16),
        "routed {}; log:\n{}",
        routed(&st),
        st.log()
    );

    // Slow traces now go to a_store, the rest to b_store.
    st.reconfigure(|c| c.replace_processor("route", route("b_store", "a_store")));
    reload_and_wait(&st, "success", 1);
    send(&st, 100);
    assert!(
        wait_until(20, || routed(&st) == 32),
        "routed {} (the counters must keep growing across the reload); log:\n{}",
        routed(&st),
        st.log()
    );
    let want = |range: std::ops::Range<u64>, even: bool| -> Vec<u64> {
        range.filter(|t| (t % 2 == 0) == even).collect()
    };
    assert!(wait_until(20, || traces_in(&a_dir).len()
        + traces_in(&b_dir).len()
        == 16));
    let mut want_a = want(0..8, false);
    want_a.extend(want(100..108, true));
    let mut want_b = want(0..8, true);
    want_b.extend(want(100..108, false));
    assert_eq!(traces_in(&a_dir), want_a);
    assert_eq!(traces_in(&b_dir), want_b);
}
