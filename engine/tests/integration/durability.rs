//! `durability = "ack_after_sync"` through real processes: kill -9 mid-stream (with and without
//! tail sampling), a downstream outage with disk queues, backpressure from a tiny disk queue,
//! and a full disk (RLIMIT_FSIZE makes writes fail with EFBIG for real).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use shardtel_protocol::proto::collector::trace::v1::ExportTraceServiceRequest;
use shardtel_protocol::Signal;

use crate::gen::{flatten, request, span};
use crate::harness::{proc_status_kib, read_lines, span_ids_in, spans_in, wait_until, Shardtel};
use crate::loadgen::{loadgen_bin, output_text};
use crate::test_config::{
    millis, secs, Action, Batch, Component, Cores, Durability, Pipeline, Queue, Retry, TailSampling,
};

/// Starts loadgen against `st` in the background: gRPC, open loop, verifying against
/// `verify_dir`'s file exporter output at the end.
fn start_loadgen(st: &Shardtel, verify_dir: &Path, rate: u32, secs: u32, json: &Path) -> Child {
    let glob = format!("{}/traces*.jsonl*", verify_dir.display());
    Command::new(loadgen_bin())
        .args(["-p", "grpc", "-e", &st.grpc_url()])
        .args([
            "--rate",
            &rate.to_string(),
            "--duration",
            &format!("{secs}s"),
        ])
        .args(["--connections", "4", "--timeout", "5s"])
        .args(["--verify", "--verify-file", &glob, "--verify-wait", "120s"])
        .args(["--verify-settle", "3s", "-q", "--json"])
        .arg(json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start loadgen")
}

/// Waits for loadgen; returns (exit ok, report text, json).
fn finish_loadgen(child: Child, json: &Path) -> (bool, String, serde_json::Value) {
    let out = child.wait_with_output().unwrap();
    let text = output_text(&out);
    let value = std::fs::read_to_string(json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    (out.status.success(), text, value)
}

fn verify_numbers(json: &serde_json::Value) -> (u64, u64, u64) {
    let v = &json["verify"];
    let n = |k: &str| v[k].as_u64().unwrap_or(u64::MAX);
    (n("spans_acknowledged"), n("spans_lost"), n("duplicates"))
}

fn sampler() -> (&'static str, Component) {
    ("tail_sampling", TailSampling::keep_all(secs(3)).into())
}

/// A processor that upserts `key` on every span: the rewritten spans are copies, which must
/// keep their request's ingest-log frame until they are on disk downstream.
fn tagger(name: &'static str, key: &str) -> (&'static str, Component) {
    (name, Component::attributes(&[Action::upsert(key, "x")]))
}

/// `processors` in this order in the traces pipeline; every exported span must carry the
/// attributes `tags`; `what` names the run.
fn kill9_run(what: &str, processors: Vec<(&str, Component)>, tags: &[&str]) {
    let mut st = Shardtel::start_config(|c| {
        let names: Vec<&str> = processors.iter().map(|(name, _)| *name).collect();
        processors
            .into_iter()
            .fold(c, |c, (name, p)| c.processor(name, p))
            .file_pipelines()
            .with_traces(|p| p.processors(&names))
    });
    let json = st.dir.path().join("loadgen.json");
    let out = st.out();
    let child = start_loadgen(&st, &out, 10_000, 10, &json);
    std::thread::sleep(Duration::from_secs(4));
    st.kill();
    std::thread::sleep(Duration::from_millis(500));
    st.spawn();
    let (ok, report, json) = finish_loadgen(child, &json);
    let (acked, lost, duplicates) = verify_numbers(&json);
    eprintln!("kill -9 ({what}): {acked} spans acknowledged, {lost} lost, {duplicates} duplicates");
    assert!(
        ok && lost == 0 && acked > 10_000,
        "loadgen --verify after kill -9 ({what}):\n{report}\nshardtel log:\n{}",
        st.log()
    );
    let log = st.log();
    assert!(log.contains("replaying"), "no replay after kill -9:\n{log}");
    assert_eq!(st.stop(), 0);
    for tag in tags {
        let lines = read_lines(&out, "traces");
        assert!(
            !lines.is_empty() && lines.iter().all(|(_, l)| l.contains(tag)),
            "spans exported without {tag}"
        );
    }
}

#[test]
fn kill_9_mid_stream_loses_no_acknowledged_span() {
    kill9_run("no processors", vec![], &[]);
}

#[test]
fn kill_9_with_tail_sampling_replays_the_traces_it_held() {
    kill9_run("tail sampling", vec![sampler()], &[]);
}

#[test]
fn kill_9_with_rewriting_processors_around_the_sampler_loses_nothing() {
    kill9_run(
        "rewriting processors around tail sampling",
        vec![
            tagger("tag_before", "review.before"),
            sampler(),
            tagger("tag_after", "review.after"),
        ],
        &["review.before", "review.after"],
    );
}

/// A collector writing every signal to files.
fn file_collector() -> Shardtel {
    Shardtel::start_config(|c| c.file_pipelines())
}

/// A collector forwarding traces over OTLP/gRPC to `downstream` through `queue`, retrying
/// for ever.
fn forwarder(downstream: &Shardtel, queue: Queue) -> Shardtel {
    let endpoint = downstream.grpc_url();
    Shardtel::start_config(|c| {
        c.exporter(
            "downstream",
            Component::otlp(&endpoint)
                .set("compression", "none")
                .retry(Retry::forever(millis(50), millis(500)))
                .batch(Batch {
                    timeout: Some(millis(50)),
                    max_bytes: Some(256 << 10),
                    ..Batch::default()
                })
                .queue(queue),
        )
        .traces(Pipeline::otlp_to(&["downstream"]))
    })
}

#[test]
fn downstream_outage_queues_on_disk_with_flat_memory_and_drains() {
    let mut downstream = file_collector();
    let upstream = forwarder(&downstream, Queue::disk(Some(2 << 30)));
    let json = upstream.dir.path().join("loadgen.json");
    let child = start_loadgen(&upstream, &downstream.out(), 10_000, 45, &json);
    std::thread::sleep(Duration::from_secs(5));
    downstream.kill();
    let pid = upstream.child.as_ref().unwrap().id();
    let queued = || upstream.metric_sum("shardtel_exporter_queue_disk_bytes", "downstream");
    let start_rss = proc_status_kib(pid, "VmRSS");
    let mut max_rss = start_rss;
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        max_rss = max_rss.max(proc_status_kib(pid, "VmRSS"));
    }
    let queued_bytes = queued();
    downstream.spawn();
    let (ok, report, json) = finish_loadgen(child, &json);
    let (acked, lost, duplicates) = verify_numbers(&json);
    eprintln!(
        "outage: {acked} acknowledged, {lost} lost, {duplicates} duplicates; queue on disk {queued_bytes} bytes; RSS {start_rss} -> max {max_rss} KiB"
    );
    assert!(
        queued_bytes > 20 << 20,
        "the queue did not grow on disk ({queued_bytes} bytes):\n{}",
        upstream.metrics()
    );
    // 30 s at ~3.5 MB/s went to disk; memory grew by far less.
    assert!(
        max_rss < start_rss + 64 * 1024,
        "RSS grew from {start_rss} to {max_rss} KiB while {queued_bytes} bytes were queued"
    );
    assert!(
        ok && lost == 0 && acked > 100_000,
        "loadgen --verify after the outage:\n{report}\nupstream log:\n{}",
        upstream.log()
    );
    assert!(
        wait_until(60, || upstream
            .metric_sum("shardtel_exporter_queue_disk_frames", "downstream")
            == 0),
        "the backlog did not drain: {}",
        upstream.metrics()
    );
}

#[test]
fn a_tiny_disk_queue_and_a_dead_backend_refuse_with_retryable_errors() {
    let mut downstream = file_collector();
    downstream.kill();
    let upstream = forwarder(&downstream, Queue::disk(Some(1 << 20)));
    let client = reqwest::blocking::Client::new();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for r in 0..400u64 {
        let req = request((0..100).map(|i| span(9, r * 100 + i % 4, i / 4)).collect());
        let resp = upstream
            .post(&client, Signal::Traces, req.encode_to_vec())
            .unwrap();
        match resp.status().as_u16() {
            200 => accepted.push(req),
            503 => {
                assert!(resp.headers().contains_key("retry-after"));
                refused += 1;
            }
            other => panic!(
                "unexpected status {other}: {}",
                resp.text().unwrap_or_default()
            ),
        }
    }
    assert!(refused > 0, "nothing was refused; {}", upstream.metrics());
    assert!(!accepted.is_empty());
    assert!(
        wait_until(10, || upstream.metric_sum(
            "shardtel_receiver_failed_requests_total",
            "signal=\"traces\""
        ) >= refused),
        "refusals not counted: {}",
        upstream.metrics()
    );
    downstream.spawn();
    let expected = flatten(&accepted);
    let all_arrived = || {
        let got = span_ids_in(&downstream.out());
        expected.iter().all(|(_, _, s)| got.contains(&s.span_id))
    };
    assert!(
        wait_until(60, all_arrived),
        "accepted spans missing downstream; upstream log:\n{}",
        upstream.log()
    );
}

#[test]
fn a_full_disk_refuses_with_retryable_errors_and_recovers() {
    const LIMIT: u64 = 1 << 20;
    // Start without the limit to lay out files, then restart with it.
    let mut st = file_collector();
    st.kill();
    st.spawn_with(|cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls (signal, setrlimit) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let limit = libc::rlimit {
                    rlim_cur: LIMIT,
                    rlim_max: libc::RLIM_INFINITY,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    let client = reqwest::blocking::Client::new();
    let post = |r: u64| {
        let req = request((0..10).map(|i| span(7, r * 10 + i, 0)).collect());
        let resp = st
            .post(&client, Signal::Traces, req.encode_to_vec())
            .unwrap();
        let status = resp.status().as_u16();
        let retry_after = resp.headers().contains_key("retry-after");
        (status, retry_after, resp.text().unwrap_or_default(), req)
    };
    let (status, retry_after, body, _) = post(0);
    assert_eq!(status, 503, "a write past RLIMIT_FSIZE should fail: {body}");
    assert!(retry_after);
    assert!(
        wait_until(10, || st
            .metric_sum("shardtel_ingest_log_refused_disk_errors_total", "")
            >= 1),
        "{}",
        st.metrics()
    );
    assert!(
        wait_until(10, || st.log().contains("File too large")),
        "no clear error in the log:\n{}",
        st.log()
    );
    // Space returns: lift the limit on the running process.
    let pid = st.child.as_ref().unwrap().id() as libc::pid_t;
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on valid pointers.
    let lifted =
        unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &unlimited, std::ptr::null_mut()) };
    assert_eq!(lifted, 0, "prlimit: {}", std::io::Error::last_os_error());
    let mut sent = Vec::new();
    assert!(
        wait_until(20, || {
            let (status, _, _, req) = post(1 + sent.len() as u64);
            if status == 200 {
                sent.push(req);
            }
            status == 200
        }),
        "no recovery after the limit was lifted:\n{}",
        st.log()
    );
    let expected = flatten(&sent);
    assert!(
        wait_until(20, || {
            let got = span_ids_in(&st.out());
            expected.iter().all(|(_, _, s)| got.contains(&s.span_id))
        }),
        "accepted spans did not arrive:\n{}",
        st.log()
    );
    assert_eq!(st.stop(), 0);
}

/// Sets `RLIMIT_FSIZE` of the running process `pid` (`None`: no limit).
fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let limit = libc::rlimit {
        rlim_cur: bytes.unwrap_or(libc::RLIM_INFINITY),
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall on valid pointers.
    let set = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// The file exporter's disk fills up mid-line for real: `RLIMIT_FSIZE` is lowered on the
/// running process to 100 bytes past the end of its file, so the next batch's write is short,
/// then fails with `EFBIG`, and is retried. Once the limit is lifted, the file holds whole
/// JSON lines only, and every accepted span exactly once.
#[test]
fn a_file_write_that_fails_mid_line_leaves_whole_lines_and_each_batch_once() {
    let mut st = Shardtel::start_config(|c| {
        let out = c.out_dir();
        c.with(|c| {
            c.engine.cores = Cores::List(vec![0]);
            c.engine.durability = Some(Durability::None);
        })
        .exporter(
            "file_traces",
            Component::file(out.join("traces.jsonl"))
                .batch(Batch::timeout(millis(20)))
                .retry(Retry::forever(millis(50), millis(200))),
        )
        .traces(Pipeline::otlp_to(&["file_traces"]))
    });
    // A lowered limit sends SIGXFSZ, whose default action kills: ignore it, as a service would.
    st.kill();
    st.spawn_with(|cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: only an async-signal-safe call (signal) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                Ok(())
            });
        }
    });
    let pid = st.child.as_ref().unwrap().id();
    let file = st.out().join("traces.core0.jsonl");
    let req = |r: u64| request((0..10).map(|i| span(9, r * 10 + i, 0)).collect());
    let arrived = |reqs: &[ExportTraceServiceRequest]| {
        let got = span_ids_in(&st.out());
        flatten(reqs)
            .iter()
            .all(|(_, _, s)| got.contains(&s.span_id))
    };
    let mut sent = vec![req(0)];
    st.post_traces(&sent[0]);
    assert!(wait_until(20, || arrived(&sent)), "{}", st.log());
    let whole = std::fs::metadata(&file).unwrap().len();

    limit_file_size(pid, Some(whole + 100));
    let retries = || st.metric_sum("shardtel_exporter_retries_total", "file_traces");
    let retried_before = retries();
    sent.push(req(1));
    st.post_traces(&sent[1]);
    assert!(
        wait_until(20, || retries() >= retried_before + 2),
        "the write past the limit was not retried: {}",
        st.metrics()
    );
    // Each failed attempt is cut off again: between attempts the file ends where it did.
    assert!(
        wait_until(5, || std::fs::metadata(&file).unwrap().len() == whole),
        "the failed batch left {} bytes behind",
        std::fs::metadata(&file).unwrap().len() - whole
    );

    limit_file_size(pid, None);
    assert!(
        wait_until(20, || arrived(&sent)),
        "the retried batch did not arrive:\n{}",
        st.log()
    );
    sent.push(req(2));
    st.post_traces(&sent[2]);
    assert!(wait_until(20, || arrived(&sent)), "{}", st.log());
    assert_eq!(st.stop(), 0);

    let bytes = std::fs::read(&file).unwrap();
    assert!(bytes.ends_with(b"\n"), "the file ends in a torn line");
    // Every line parses (read_traces panics on one that does not) and no span is doubled.
    let mut got: Vec<Vec<u8>> = spans_in(&st.out()).into_iter().map(|s| s.span_id).collect();
    got.sort();
    let mut expected: Vec<Vec<u8>> = flatten(&sent)
        .into_iter()
        .map(|(_, _, s)| s.span_id)
        .collect();
    expected.sort();
    assert_eq!(got, expected, "each accepted span exactly once");
}

/// Posts `n` requests of 40 spans (10 traces) over OTLP/HTTP; all must be accepted.
fn post_traces(st: &Shardtel, tag: u8, n: u64) -> Vec<ExportTraceServiceRequest> {
    (0..n)
        .map(|r| {
            // A new connection per request: the kernel spreads them over the cores.
            let req = request(
                (0..40)
                    .map(|i| span(tag, r * 10 + i % 10, i / 10))
                    .collect(),
            );
            st.post_traces(&req);
            req
        })
        .collect()
}

/// The next start runs on core 0 only.
fn shrink_to_one_core(st: &mut Shardtel) {
    st.reconfigure(|c| c.engine.cores = Cores::List(vec![0]));
}

#[test]
fn fewer_cores_after_kill_9_drain_the_orphaned_ingest_log() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        panic!("this test needs 2 CPUs (an orphaned core needs a second core to begin with)");
    }
    let mut st = Shardtel::start_config(|c| {
        c.processor("tail_sampling", TailSampling::keep_all(secs(60)))
            .file_pipelines()
            .with_traces(|p| p.processors(&["tail_sampling"]))
    });
    let sent = post_traces(&st, 11, 40);
    // The sampler holds every trace for 60 s: the requests stay in both cores' ingest logs.
    assert!(wait_until(10, || st
        .metric_sum("shardtel_ingest_log_frames", "core=\"1\"")
        > 0));
    st.kill();
    shrink_to_one_core(&mut st);
    st.spawn();
    // Core 0 routes core 1's requests again (through its own ingest log); the sampler holds
    // them, so the orphaned log is kept until they are decided.
    assert!(
        wait_until(30, || st.log().contains("draining the orphaned ingest log")),
        "the orphaned ingest log was not picked up:\n{}",
        st.log()
    );
    assert!(wait_until(30, || st.metric_sum(
        "shardtel_ingest_log_appended_frames_total",
        "core=\"0\""
    ) > 0));
    std::thread::sleep(Duration::from_secs(1));
    // SIGTERM decides what the sampler holds and exports it.
    assert_eq!(st.stop(), 0);
    let got = span_ids_in(&st.out());
    let missing = flatten(&sent)
        .into_iter()
        .filter(|(_, _, s)| !got.contains(&s.span_id))
        .count();
    assert_eq!(missing, 0, "spans lost; log:\n{}", st.log());
}

#[test]
fn fewer_cores_drain_the_orphaned_export_queue() {
    let mut downstream = file_collector();
    downstream.kill();
    let mut upstream = forwarder(&downstream, Queue::disk(None));
    let sent = post_traces(&upstream, 12, 40);
    assert!(wait_until(10, || upstream.metric_sum(
        "shardtel_exporter_queue_disk_frames",
        "core=\"1\""
    ) > 0));
    assert_eq!(upstream.stop(), 0);
    shrink_to_one_core(&mut upstream);
    downstream.spawn();
    upstream.spawn();
    let expected: Vec<Vec<u8>> = flatten(&sent)
        .into_iter()
        .map(|(_, _, s)| s.span_id)
        .collect();
    assert!(
        wait_until(60, || {
            let got = span_ids_in(&downstream.out());
            expected.iter().all(|id| got.contains(id))
        }),
        "queued spans of the removed core did not arrive:\n{}",
        upstream.log()
    );
    assert!(!upstream.dir.path().join("queues/downstream/core1").exists());
}

#[test]
fn a_second_process_on_the_same_data_dir_refuses_to_start() {
    let mut st = file_collector();
    let pid = st.child.as_ref().unwrap().id();
    // The same file: the same data_dir (and ports, which SO_REUSEPORT would let it share).
    let second = Command::new(env!("CARGO_BIN_EXE_shardtel"))
        .arg("--config")
        .arg(&st.config_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success(),
        "a second process started:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "is in use by another shardtel process (pid {pid})"
        )),
        "{stderr}"
    );
    assert_eq!(
        crate::harness::http_get(st.ports.health, "/").map(|r| r.0),
        Some(200)
    );
    assert_eq!(st.stop(), 0);
}
