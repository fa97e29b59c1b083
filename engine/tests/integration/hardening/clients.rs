//! Slow, idle and hostile clients, injected panics and bad input never take the service away
//! from good clients. Timeouts are shortened through the configuration so that the tests run
//! in seconds.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use super::closed_after;
use crate::gen;
use crate::h2frames::{
    frame as h2_frame, CONTINUATION, DATA, END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, GOAWAY,
    HEADERS, PROTOCOL_ERROR, RST_STREAM, SETTINGS,
};
use crate::harness::{free_port, http_get, wait_until, Ports, Shardtel};
use crate::test_config::{Component, Pipeline};

/// The connection timeouts of a test's `[receivers.otlp]`.
#[derive(Clone, Copy)]
struct Timeouts {
    read_header: Duration,
    read: Duration,
    idle: Duration,
}

const SHORT: Timeouts = Timeouts {
    read_header: Duration::from_millis(500),
    read: Duration::from_secs(2),
    idle: Duration::from_millis(1500),
};

/// What a test's process runs with: one core by default (so that connection limits are
/// exact), the ingest log on, traces into a file.
struct Setup<'a> {
    /// `engine.cores`.
    cores: &'a str,
    /// `engine.data_dir`, under the test's directory.
    data_dir: &'a str,
    /// More `[engine]` lines.
    engine: &'a str,
    timeouts: Timeouts,
    /// More `[receivers.otlp]` lines.
    otlp: &'a str,
    /// The file exporter's batch timeout.
    batch_timeout: &'a str,
    /// The traces pipeline's processors, and their tables.
    processors: &'a str,
    tables: &'a str,
}

const ONE_CORE: Setup<'static> = Setup {
    cores: "[0]",
    data_dir: "",
    engine: "",
    timeouts: SHORT,
    otlp: "",
    batch_timeout: "50ms",
    processors: "",
    tables: "",
};

fn config(dir: &Path, ports: Ports, setup: Setup<'_>) -> String {
    format!(
        r#"
[engine]
cores = {cores}
data_dir = "{dir}/{data_dir}"
shutdown_timeout = "5s"
{engine}

[telemetry]
health = "127.0.0.1:{health}"
metrics = "127.0.0.1:{metrics}"

[receivers.otlp]
grpc = "127.0.0.1:{grpc}"
http = "127.0.0.1:{http}"
read_header_timeout = "{header}ms"
read_timeout = "{read}ms"
idle_timeout = "{idle}ms"
{otlp}

[exporters.file_traces]
type = "file"
path = "{dir}/out/traces.jsonl"
batch = {{ timeout = "{batch_timeout}" }}

[pipelines.traces]
receivers = ["otlp"]
processors = [{processors}]
exporters = ["file_traces"]
{tables}"#,
        cores = setup.cores,
        dir = dir.display(),
        data_dir = setup.data_dir,
        engine = setup.engine,
        health = ports.health,
        metrics = ports.metrics,
        grpc = ports.grpc,
        http = ports.http,
        header = setup.timeouts.read_header.as_millis(),
        read = setup.timeouts.read.as_millis(),
        idle = setup.timeouts.idle.as_millis(),
        otlp = setup.otlp,
        batch_timeout = setup.batch_timeout,
        processors = setup.processors,
        tables = setup.tables,
    )
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A small valid trace request.
fn good_request() -> Vec<u8> {
    gen::request(vec![gen::span(1, 1, 1)]).encode_to_vec()
}

/// Posts `body` on `s` (keep-alive) and returns the response's status line and head.
fn post(s: &mut TcpStream, body: &[u8]) -> String {
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    read_response(s)
}

/// Reads one response (head and a body of its content-length); returns the head.
fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return String::from_utf8_lossy(&buf).into_owned(),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = s.read_exact(&mut body);
    head
}

/// A new connection posting one good request: its status (0 when the connection failed).
fn post_once(port: u16) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let head = post(&mut s, &good_request());
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[test]
fn idle_and_slow_header_connections_at_the_limit_are_closed_then_a_good_client_is_served() {
    let s = Shardtel::start(|dir, ports| {
        config(
            dir,
            ports,
            Setup {
                otlp: "max_connections = 4",
                ..ONE_CORE
            },
        )
    });
    let (http, grpc) = (s.ports.http, s.ports.grpc);
    // 1: HTTP/1.1, one request answered, then idle (keep-alive).
    let mut keep_alive = connect(http);
    assert!(post(&mut keep_alive, &good_request()).starts_with("HTTP/1.1 200"));
    let keep_alive_idle = Instant::now();
    // 2: gRPC: the preface and SETTINGS, then nothing.
    let mut h2 = connect(grpc);
    h2.write_all(H2_PREFACE).unwrap();
    let h2_idle = Instant::now();
    // 3: nothing at all.
    let silent = connect(http);
    let silent_since = Instant::now();
    // 4: a request head, one byte every 100 ms.
    let trickle = connect(http);
    let trickle_since = Instant::now();
    let writer = trickle.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut writer = writer;
        for b in b"POST /v1/traces HTTP/1.1\r\nhost: x\r\nx-slow: "
            .iter()
            .cycle()
        {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // The four hold every place: a good client is refused.
    assert_eq!(post_once(http), 503, "{}", s.log());

    let closes: Vec<_> = [
        ("keep-alive", keep_alive, keep_alive_idle, SHORT.idle),
        ("gRPC", h2, h2_idle, SHORT.idle),
        ("silent", silent, silent_since, SHORT.read_header),
        ("trickling", trickle, trickle_since, SHORT.read_header),
    ]
    .into_iter()
    .map(|(what, conn, since, timeout)| {
        (
            what,
            timeout,
            std::thread::spawn(move || closed_after(conn, since)),
        )
    })
    .collect();
    // A good client is served as soon as the places are free: within the idle timeout.
    let start = Instant::now();
    let served = wait_until(10, || post_once(http) == 200);
    let waited = start.elapsed();
    assert!(served, "a good client was never served; log:\n{}", s.log());
    assert!(
        waited <= SHORT.idle + Duration::from_secs(2),
        "served after {waited:?}"
    );
    for (what, timeout, closed) in closes {
        let after = closed.join().unwrap();
        // (The gRPC connection may be closed earlier by an unanswered keep-alive ping.)
        let earliest = if what == "gRPC" {
            SHORT.idle / 2
        } else {
            timeout
        };
        assert!(
            after >= earliest - Duration::from_millis(50)
                && after <= timeout + Duration::from_secs(2),
            "the {what} connection closed after {after:?} (timeout {timeout:?})"
        );
    }
}

/// A request body that sends `chunks` and then stalls forever.
struct Stalling {
    chunks: Vec<bytes::Bytes>,
}

impl hyper::body::Body for Stalling {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.chunks.pop() {
            Some(c) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(c)))),
            None => std::task::Poll::Pending,
        }
    }
}

#[test]
fn stalled_4mb_bodies_do_not_stop_a_good_client_longer_than_read_timeout() {
    const FOUR_MB: usize = 4 << 20;
    let s = Shardtel::start(|dir, ports| config(dir, ports, ONE_CORE));
    let start = Instant::now();
    // 48 HTTP/1.1 bodies declaring 4 MB: 128 KiB sent in two pieces, then nothing.
    let http_stalls: Vec<_> = (0..48)
        .map(|_| {
            let port = s.ports.http;
            std::thread::spawn(move || {
                let mut c = connect(port);
                write!(
                    c,
                    "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {FOUR_MB}\r\n\r\n"
                )
                .unwrap();
                c.write_all(&[0x0a; 64 << 10]).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                c.write_all(&[0x0a; 64 << 10]).unwrap();
                let head = read_response(&mut c);
                (head, start.elapsed())
            })
        })
        .collect();
    // 16 gRPC streams on one connection declaring 4 MB: 128 KiB sent in two frames, then
    // nothing.
    let grpc_port = s.ports.grpc;
    let grpc_stalls = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", grpc_port))
                .await
                .unwrap();
            let (sender, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let calls: Vec<_> = (0..16)
                .map(|_| {
                    let mut sender = sender.clone();
                    tokio::spawn(async move {
                        let mut prefix = vec![0u8];
                        prefix.extend_from_slice(&(FOUR_MB as u32).to_be_bytes());
                        prefix.resize(64 << 10, 0x0a);
                        let body = Stalling {
                            chunks: vec![vec![0x0a; 64 << 10].into(), prefix.into()],
                        };
                        let req = http::Request::post(format!(
                            "http://127.0.0.1:{grpc_port}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                        ))
                        .header("content-type", "application/grpc")
                        .header("te", "trailers")
                        .body(body)
                        .unwrap();
                        sender.ready().await.unwrap();
                        let resp = sender.send_request(req).await.unwrap();
                        let status = resp
                            .headers()
                            .get("grpc-status")
                            .map(|v| v.to_str().unwrap().to_string());
                        (status, start.elapsed())
                    })
                })
                .collect();
            let mut out = Vec::new();
            for c in calls {
                out.push(c.await.unwrap());
            }
            out
        })
    });
    // Meanwhile a good client posts every 100 ms, on new connections.
    std::thread::sleep(Duration::from_millis(300));
    let mut good = Vec::new();
    while start.elapsed() < SHORT.read + Duration::from_secs(2) {
        good.push((post_once(s.ports.http), start.elapsed()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let first_ok = good
        .iter()
        .find(|(code, _)| *code == 200)
        .map(|(_, at)| *at);
    assert!(
        first_ok.is_some_and(|at| at <= SHORT.read),
        "the good client was not served within read_timeout: {good:?}"
    );
    assert!(
        good.iter().all(|(code, _)| *code == 200 || *code == 503),
        "{good:?}"
    );
    // Every stalled body failed once read_timeout passed, and not before.
    let late = SHORT.read + Duration::from_secs(3);
    for stall in http_stalls {
        let (head, at) = stall.join().unwrap();
        assert!(head.starts_with("HTTP/1.1 408"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert!(at >= SHORT.read && at <= late, "answered after {at:?}");
    }
    for (status, at) in grpc_stalls.join().unwrap() {
        assert_eq!(status.as_deref(), Some("4"), "DEADLINE_EXCEEDED");
        assert!(at >= SHORT.read && at <= late, "answered after {at:?}");
    }
    assert!(wait_until(5, || s.metric_sum(
        "shardtel_receiver_failed_requests_total",
        "traces"
    ) >= 64));
}

#[test]
fn a_trickling_client_on_the_health_port_does_not_fail_a_concurrent_health_check() {
    let s = Shardtel::start(|dir, ports| config(dir, ports, ONE_CORE));
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let (port, stop) = (s.ports.health, stop.clone());
        std::thread::spawn(move || {
            // One byte every 1.5 s, reconnecting whenever the server gives up on it.
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                for b in b"GET / HTTP/1.1\r\n" {
                    if stop.load(Ordering::Relaxed) || c.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1500));
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..5 {
        let start = Instant::now();
        let mut c = TcpStream::connect(("127.0.0.1", s.ports.health)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let mut answer = String::new();
        let read = c.read_to_string(&mut answer);
        assert!(
            read.is_ok(),
            "a health check timed out next to a trickling client"
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(start.elapsed() < Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(700));
    }
    stop.store(true, Ordering::Relaxed);
    trickler.join().unwrap();
    assert_eq!(http_get(s.ports.health, "/").map(|(c, _)| c), Some(200));
}

/// The resident set of process `pid`, in bytes.
fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Posts `body` on a new connection with `headers`; the status (0 when the connection failed
/// without an answer).
fn post_with(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if s.write_all(head.as_bytes()).is_err() || s.write_all(body).is_err() {
        return 0;
    }
    read_response(&mut s)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");

#[test]
fn eight_parallel_gzipped_4mb_json_bodies_of_empty_spans_stay_under_a_400mib_limiter() {
    const LIMIT_MIB: u64 = 400;
    let tables = format!(
        "[processors.memory_limiter]\ncheck_interval = \"20ms\"\nlimit_mib = {LIMIT_MIB}\n"
    );
    let s = Shardtel::start(|dir, ports| {
        config(
            dir,
            ports,
            Setup {
                processors: "\"memory_limiter\"",
                tables: &tables,
                ..ONE_CORE
            },
        )
    });
    assert!(
        s.log().contains("memory_limiter"),
        "the limiter runs: {}",
        s.log()
    );
    // 4 MB of `{}` spans (1.3 million), gzip'd to a few KB.
    let json = {
        let mut j = String::from(r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{}"#);
        while j.len() < 4_000_000 - 8 {
            j.push_str(",{}");
        }
        j.push_str("]}]}]}");
        j
    };
    let gzipped = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(json.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    assert!(gzipped.len() < 100_000, "{}", gzipped.len());
    let pid = s.child.as_ref().unwrap().id();
    let idle = rss_of(pid).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let gzipped = Arc::new(gzipped);
    for _round in 0..3 {
        let posts: Vec<_> = (0..8)
            .map(|_| {
                let (port, body) = (s.ports.http, gzipped.clone());
                std::thread::spawn(move || {
                    post_with(
                        port,
                        "/v1/traces",
                        &[
                            ("content-type", "application/json"),
                            ("content-encoding", "gzip"),
                        ],
                        &body,
                    )
                })
            })
            .collect();
        for post in posts {
            let code = post.join().unwrap();
            // Spans without ids are refused as malformed once converted; or the limiter or the
            // core's bytes in flight refuse first. Never anything else.
            assert!([400, 429, 503].contains(&code), "status {code}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    assert!(
        peak < LIMIT_MIB << 20,
        "peak RSS {} MiB (idle {} MiB)",
        peak >> 20,
        idle >> 20
    );
    assert_eq!(post_once(s.ports.http), 200, "{}", s.log());
    println!(
        "8 × 3 gzip'd 4 MB JSON bodies of empty spans: peak RSS {} MiB (idle {} MiB)",
        peak >> 20,
        idle >> 20
    );
}

#[test]
fn data_dir_and_the_directories_the_engine_creates_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = Shardtel::start(|dir, ports| {
        // A data directory the engine has to create.
        config(
            dir,
            ports,
            Setup {
                data_dir: "data",
                ..ONE_CORE
            },
        )
    });
    assert_eq!(post_once(s.ports.http), 200);
    let data = s.dir.path().join("data");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for dir in [data.clone(), data.join("ingest"), data.join("ingest/core0")] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    assert_eq!(mode(&data.join("LOCK")), 0o600);
}

#[test]
fn an_injected_reactor_panic_turns_health_503_exits_non_zero_and_loses_no_acknowledged_span() {
    let mut s = Shardtel::start(|dir, ports| {
        // Two cores; spans wait in the exporters' memory (a long batch timeout) when the
        // panic comes.
        config(
            dir,
            ports,
            Setup {
                cores: "\"all\"",
                batch_timeout: "1h",
                ..ONE_CORE
            },
        )
    });
    // Acknowledged spans, over 8 connections at once (spread over both cores).
    let posters: Vec<_> = (0..8u64)
        .map(|c| {
            let port = s.ports.http;
            std::thread::spawn(move || {
                let mut conn = connect(port);
                let mut acked = Vec::new();
                for t in (0..200u64).filter(|t| t % 8 == c) {
                    let spans: Vec<_> = (0..4).map(|i| gen::span(9, t, i)).collect();
                    let body = gen::request(spans.clone()).encode_to_vec();
                    let head = post(&mut conn, &body);
                    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                    acked.extend(spans.into_iter().map(|sp| (sp.trace_id, sp.span_id)));
                }
                acked
            })
        })
        .collect();
    let sent: Vec<_> = posters
        .into_iter()
        .flat_map(|p| p.join().unwrap())
        .collect();
    assert_eq!(sent.len(), 800);
    // Health, watched closely from now on.
    let health = s.ports.health;
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            while watching.load(Ordering::Relaxed) {
                if let Some((503, body)) = http_get(health, "/") {
                    return Some((start.elapsed(), body));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        })
    };
    // The fault: a reactor panics on this request (test builds only).
    let status = post_with(
        s.ports.http,
        "/v1/traces",
        &[PROTOBUF, ("x-shardtel-fault", "reactor")],
        &good_request(),
    );
    assert_eq!(status, 0, "the panicking core answers nothing");
    let exited = {
        let child = s.child.as_mut().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 20 s after the panic"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    watching.store(false, Ordering::Relaxed);
    let unhealthy = watcher.join().unwrap();
    let log = s.log();
    let (after, body) =
        unhealthy.unwrap_or_else(|| panic!("health never answered 503; log:\n{log}"));
    assert!(after < Duration::from_secs(1), "503 after {after:?}");
    assert!(body.contains("failed"), "{body}");
    assert_eq!(exited.code(), Some(1), "log:\n{log}");
    assert!(log.contains("injected fault: the reactor panics"), "{log}");
    assert!(log.contains("stopped by a panic"), "{log}");
    s.child = None;

    // After a restart, every acknowledged span arrives (at least once).
    s.spawn();
    let missing = |s: &Shardtel| {
        let got: std::collections::HashSet<(Vec<u8>, Vec<u8>)> =
            crate::harness::read_traces(&s.out())
                .into_iter()
                .flat_map(|(_, r)| gen::flatten(&[r]))
                .map(|(_, _, sp)| (sp.trace_id, sp.span_id))
                .collect();
        sent.iter().filter(|k| !got.contains(*k)).count()
    };
    // The spans the restart replays wait for their batch timeout (1 h): drain them out.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.stop(), 0);
    assert_eq!(missing(&s), 0, "acknowledged spans lost; log:\n{}", s.log());
}

#[test]
fn a_panic_while_decoding_fails_only_its_request() {
    let s = Shardtel::start(|dir, ports| config(dir, ports, ONE_CORE));
    for _ in 0..3 {
        let status = post_with(
            s.ports.http,
            "/v1/traces",
            &[PROTOBUF, ("x-shardtel-fault", "decode")],
            &good_request(),
        );
        assert_eq!(status, 500);
    }
    assert_eq!(post_once(s.ports.http), 200);
    assert_eq!(http_get(s.ports.health, "/").map(|(c, _)| c), Some(200));
    assert!(
        s.log().contains("(contained: its request or batch failed)"),
        "{}",
        s.log()
    );
    assert!(wait_until(5, || s.metric_sum(
        "shardtel_receiver_failed_requests_total",
        "transport=\"http\""
    ) >= 3));
}

// ---------------------------------------------------------------------------------------------
// Bad input through the process: clean errors, and good clients go on being served.

/// Good clients are served: a request over HTTP and one over gRPC, and health is 200.
fn still_serving(s: &Shardtel) {
    assert_eq!(post_once(s.ports.http), 200, "{}", s.log());
    let port = s.ports.grpc;
    let reply = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let mut client = crate::grpc_client::GrpcClient::connect(port).await;
            let frame = crate::grpc_client::frame(&good_request());
            client.call(crate::grpc_client::TRACES, frame, &[]).await
        });
    assert_eq!(reply.grpc_status, Some(0), "{reply:?}");
    assert_eq!(http_get(s.ports.health, "/").map(|(c, _)| c), Some(200));
}

/// The HPACK block of an OTLP/gRPC traces export (literals, no Huffman, no indexing).
fn grpc_request_headers() -> Vec<u8> {
    let path = crate::grpc_client::TRACES.as_bytes();
    let mut h = vec![0x83, 0x86]; // :method POST, :scheme http
    h.extend_from_slice(&[0x04, path.len() as u8]); // :path
    h.extend_from_slice(path);
    h.extend_from_slice(&[0x01, 1, b'x']); // :authority
    h.extend_from_slice(&[0x0f, 0x10, 16]); // content-type
    h.extend_from_slice(b"application/grpc");
    h.extend_from_slice(&[0x00, 2]);
    h.extend_from_slice(b"te");
    h.push(8);
    h.extend_from_slice(b"trailers");
    h
}

/// A raw HTTP/2 connection: the preface and SETTINGS are sent; a thread reads what the server
/// sends (frame types and streams) until it closes.
struct RawH2 {
    stream: TcpStream,
    frames: std::thread::JoinHandle<(Vec<(u8, u32)>, Duration)>,
}

impl RawH2 {
    fn connect(port: u16) -> RawH2 {
        let mut stream = connect(port);
        stream.write_all(H2_PREFACE).unwrap();
        stream.write_all(&h2_frame(SETTINGS, 1, 0, &[])).unwrap();
        let mut reader = stream.try_clone().unwrap();
        let start = Instant::now();
        let frames = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut head = [0u8; 9];
            while reader.read_exact(&mut head).is_ok() {
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                let mut payload = vec![0u8; len];
                if reader.read_exact(&mut payload).is_err() {
                    break;
                }
                if head[3] == GOAWAY && payload.len() >= 8 {
                    // The error code, as the "stream" of the GOAWAY.
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    seen.push((GOAWAY, code));
                    continue;
                }
                seen.push((head[3], stream));
            }
            (seen, start.elapsed())
        });
        RawH2 { stream, frames }
    }

    /// Writes `bytes` (an error means the server closed the connection).
    fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Waits for the server to close the connection: the frames it sent, and when it closed.
    fn closed(self) -> (Vec<(u8, u32)>, Duration) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        self.frames.join().unwrap()
    }
}

#[test]
fn rapid_reset_continuation_and_small_data_floods_get_clean_errors() {
    let s = Shardtel::start(|dir, ports| config(dir, ports, ONE_CORE));
    let headers = grpc_request_headers();

    // Rapid reset: 10,000 streams opened and cancelled at once.
    let mut h2 = RawH2::connect(s.ports.grpc);
    let mut burst = Vec::new();
    for i in 0..10_000u32 {
        let id = 2 * i + 1;
        burst.extend(h2_frame(HEADERS, END_HEADERS, id, &headers));
        burst.extend(h2_frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    h2.send(&burst);
    let (frames, after) = h2.closed();
    assert!(
        frames.contains(&(GOAWAY, ENHANCE_YOUR_CALM)),
        "{:?}",
        &frames[..frames.len().min(20)]
    );
    assert!(after < Duration::from_secs(10), "closed after {after:?}");
    still_serving(&s);

    // CONTINUATION flood: a header block that never ends, 16 MB of it.
    let mut h2 = RawH2::connect(s.ports.grpc);
    h2.send(&h2_frame(HEADERS, 0, 1, &headers));
    let mut pad = vec![0x00, 5];
    pad.extend_from_slice(b"x-pad");
    pad.extend_from_slice(&[0x7f, 0x81, 0x07]); // a 1,000-byte value (127 + 0x381)
    pad.resize(pad.len() + 1000, b'a');
    let chunk: Vec<u8> = (0..64)
        .flat_map(|_| h2_frame(CONTINUATION, 0, 1, &pad))
        .collect();
    for _ in 0..256 {
        if !h2.send(&chunk) {
            break;
        }
    }
    let (frames, after) = h2.closed();
    assert!(frames.contains(&(GOAWAY, PROTOCOL_ERROR)), "{frames:?}");
    assert!(after < Duration::from_secs(10), "closed after {after:?}");
    still_serving(&s);

    // Small-DATA flood: a 100,000-byte message in 1-byte DATA frames.
    std::thread::sleep(Duration::from_millis(100));
    let mut h2 = RawH2::connect(s.ports.grpc);
    let mut flood = h2_frame(HEADERS, END_HEADERS, 1, &headers);
    let mut message = vec![0u8];
    message.extend_from_slice(&99_995u32.to_be_bytes());
    message.resize(100_000, 0);
    for (i, b) in message.iter().enumerate() {
        let last = i + 1 == message.len();
        flood.extend(h2_frame(DATA, if last { END_STREAM } else { 0 }, 1, &[*b]));
    }
    h2.send(&flood);
    std::thread::sleep(Duration::from_millis(500));
    let (frames, _) = h2.closed();
    // The HTTP/2 layer closes the connection before the body is whole.
    assert!(frames.contains(&(GOAWAY, ENHANCE_YOUR_CALM)), "{frames:?}");
    still_serving(&s);
}

/// `depth` kvlists nested in a span attribute.
fn nested_kvlists(depth: usize) -> shardtel_protocol::proto::common::v1::AnyValue {
    use shardtel_protocol::proto::common::v1::{any_value, AnyValue, KeyValue, KeyValueList};
    let mut value = AnyValue {
        value: Some(any_value::Value::StringValue("leaf".into())),
    };
    for _ in 0..depth {
        value = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![KeyValue {
                    key: "k".into(),
                    value: Some(value),
                    ..Default::default()
                }],
            })),
        };
    }
    value
}

/// An OTLP/JSON trace request with `depth` kvlists nested in a span attribute.
fn deep_json(depth: usize) -> String {
    let mut value = r#"{"stringValue":"leaf"}"#.to_string();
    for _ in 0..depth {
        value = format!(r#"{{"kvlistValue":{{"values":[{{"key":"k","value":{value}}}]}}}}"#);
    }
    format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","attributes":[{{"key":"deep","value":{value}}}]}}]}}]}}]}}"#
    )
}

/// Posts `body` to `/v1/traces` as `content_type`: the status and the response body as text.
fn post_body(port: u16, content_type: &str, body: &[u8]) -> (u16, String) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/traces"))
        .header("content-type", content_type)
        .body(body.to_vec())
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    (
        status,
        String::from_utf8_lossy(&resp.bytes().unwrap()).into_owned(),
    )
}

#[test]
fn deep_kvlists_long_varints_and_huge_length_prefixes_get_clean_errors() {
    let s = Shardtel::start(|dir, ports| config(dir, ports, ONE_CORE));
    let http = s.ports.http;
    let protobuf = "application/x-protobuf";

    // 65 nested kvlists, in protobuf and in JSON.
    let mut span = gen::span(3, 1, 0);
    span.attributes
        .push(shardtel_protocol::proto::common::v1::KeyValue {
            key: "deep".into(),
            value: Some(nested_kvlists(65)),
            ..Default::default()
        });
    let deep = gen::request(vec![span]);
    let (status, body) = post_body(http, protobuf, &deep.encode_to_vec());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nested deeper than 64"), "{body}");
    let (status, body) = post_body(http, "application/json", deep_json(65).as_bytes());
    assert_eq!(status, 400, "{body}");
    // (serde_json's own limit, 128 nested JSON values, comes first.)
    assert!(body.contains("recursion limit exceeded"), "{body}");
    // 25 kvlists pass it (about 110 JSON levels) and convert to messages nested 80 deep.
    let (status, body) = post_body(http, "application/json", deep_json(25).as_bytes());
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("nested deeper than 64"), "{body}");

    // An 11-byte varint (an unknown field 15 of the request).
    let mut long_varint = good_request();
    long_varint.push(15 << 3);
    long_varint.extend_from_slice(&[0xff; 10]);
    long_varint.push(0x01);
    let (status, body) = post_body(http, protobuf, &long_varint);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid varint"), "{body}");

    // A length prefix of 4 GiB (resource_spans) on a 20-byte request.
    let mut huge = vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f];
    huge.extend_from_slice(&[0; 14]);
    let (status, body) = post_body(http, protobuf, &huge);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("truncated"), "{body}");

    // A gRPC message prefix declaring 4 GiB, with 10 bytes behind it.
    let port = s.ports.grpc;
    let reply = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let mut client = crate::grpc_client::GrpcClient::connect(port).await;
            let mut frame = vec![0, 0xff, 0xff, 0xff, 0xff];
            frame.extend_from_slice(&[0; 10]);
            client
                .call(crate::grpc_client::TRACES, frame.into(), &[])
                .await
        });
    assert_eq!(reply.grpc_status, Some(3), "INVALID_ARGUMENT: {reply:?}");

    still_serving(&s);
    let rss = rss_of(s.child.as_ref().unwrap().id()).unwrap();
    assert!(rss < 200 << 20, "RSS {} MiB", rss >> 20);
}

#[test]
fn requests_cancelled_while_their_append_waits_leave_no_frame_behind() {
    // Group commits 800 ms apart: a request waits that long for its append.
    let mut s = Shardtel::start(|dir, ports| {
        config(
            dir,
            ports,
            Setup {
                engine: "[engine.wal]\ngroup_commit_interval = \"800ms\"",
                // (The raw client answers no keep-alive ping: no idle time-out here.)
                timeouts: Timeouts {
                    read_header: Duration::from_secs(10),
                    read: Duration::from_secs(30),
                    idle: Duration::from_secs(60),
                },
                ..ONE_CORE
            },
        )
    });
    let headers = grpc_request_headers();
    let message =
        crate::grpc_client::frame(&gen::request(vec![gen::span(4, 1, 0)]).encode_to_vec());
    // Three requests sent whole, each cancelled by its client (RST_STREAM) 200 ms later: the
    // server drops the request's future while it waits for the group commit. (Each starts a
    // group of its own, so that its commit is a full 800 ms away.)
    let mut h2 = RawH2::connect(s.ports.grpc);
    for i in 0..3u32 {
        let id = 2 * i + 1;
        let mut request = h2_frame(HEADERS, END_HEADERS, id, &headers);
        request.extend(h2_frame(DATA, END_STREAM, id, &message));
        assert!(h2.send(&request));
        std::thread::sleep(Duration::from_millis(200));
        assert!(h2.send(&h2_frame(RST_STREAM, 0, id, &8u32.to_be_bytes())));
        std::thread::sleep(Duration::from_millis(1000));
    }
    let (frames, _) = h2.closed();
    assert!(
        !frames.contains(&(HEADERS, 1)),
        "cancelled requests got no answer: {frames:?}"
    );
    // One request acknowledged after them, and exported.
    let acked = gen::request(vec![gen::span(4, 2, 0)]);
    s.post_traces(&acked);
    let exported = |s: &Shardtel| -> Vec<Vec<u8>> {
        crate::harness::read_traces(&s.out())
            .into_iter()
            .flat_map(|(_, r)| gen::flatten(&[r]))
            .map(|(_, _, sp)| sp.trace_id)
            .collect()
    };
    assert!(wait_until(10, || !exported(&s).is_empty()));
    // Every frame released once the export is done: the watermark is not stuck.
    assert!(
        wait_until(10, || s.metric_sum("shardtel_ingest_log_frames", "core")
            == 0),
        "unreleased frames: {}",
        s.metric_sum("shardtel_ingest_log_frames", "core")
    );
    assert_eq!(s.stop(), 0);
    // A clean restart replays nothing, so nothing is exported twice.
    s.spawn();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.stop(), 0);
    assert!(!s.log().contains("replaying"), "{}", s.log());
    assert_eq!(
        exported(&s),
        vec![acked.resource_spans[0].scope_spans[0].spans[0]
            .trace_id
            .clone()]
    );
}

/// A request refused as overloaded keeps its HTTP/1.1 connection when its body arrives in time
/// (the body is read and dropped, the refusal answered, and the next request on the same
/// connection is served), and gets `Connection: close` when its body does not end before
/// `read_timeout`: the rest of that body would otherwise be read as the next request.
#[test]
fn a_refused_http1_request_keeps_its_connection_unless_its_body_stalls() {
    let s = Shardtel::start(|dir, ports| config(dir, ports, ONE_CORE));
    let body = good_request();
    let refused_head = |declared: usize| {
        format!(
            "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\nx-shardtel-fault: refuse\r\ncontent-length: {declared}\r\n\r\n"
        )
    };
    // The whole body: refused, and the same connection carries a good request after.
    let mut c = connect(s.ports.http);
    c.write_all(refused_head(body.len()).as_bytes()).unwrap();
    c.write_all(&body).unwrap();
    let head = read_response(&mut c);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let head = post(&mut c, &body);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // A body that stops 1,000 bytes short: refused once read_timeout has passed, with
    // `Connection: close`, and the connection closed.
    let mut c = connect(s.ports.http);
    let start = Instant::now();
    c.write_all(refused_head(body.len() + 1000).as_bytes())
        .unwrap();
    c.write_all(&body).unwrap();
    let head = read_response(&mut c);
    let answered = start.elapsed();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(
        answered >= SHORT.read - Duration::from_millis(100),
        "answered after {answered:?}, before read_timeout"
    );
    let closed = closed_after(c, start);
    assert!(
        closed <= SHORT.read + Duration::from_secs(3),
        "closed after {closed:?}"
    );
    // Both refusals are counted by reason; the service still serves.
    assert!(wait_until(5, || s.metric_sum(
        "shardtel_receiver_failed_requests_total",
        "traces"
    ) >= 2));
    assert_eq!(post_once(s.ports.http), 200);
}

/// Sends a request with `head` (its lines, without `content-length`) and an 80 KiB body in five
/// writes 20 ms apart on `c`, after the answer was given (an answer from the head alone):
/// returns the answer's head.
fn early_answer(c: &mut TcpStream, head: &str) -> String {
    let body = vec![b'x'; 80 << 10];
    write!(
        c,
        "{head}\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    for part in body.chunks(16 << 10) {
        std::thread::sleep(Duration::from_millis(20));
        // A write that fails (the server reset the connection) shows in the answer read next.
        let _ = c.write_all(part);
    }
    read_response(c)
}

/// Each request of `wrong` (a head, and the status it must get), answered before its 80 KiB
/// body arrived, is read whole by its client (no reset), and the same connection then carries
/// `good` (a head with its content-length, and its body) with `ok`.
fn early_answers_keep_their_connection(
    port: u16,
    wrong: &[(&str, &str)],
    good: (&str, &[u8]),
    ok: &str,
) {
    for (head, status) in wrong {
        let mut c = connect(port);
        let answer = early_answer(&mut c, head);
        assert!(answer.starts_with(status), "{head}: {answer:?}");
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "{head}: {answer}"
        );
        c.write_all(good.0.as_bytes()).unwrap();
        c.write_all(good.1).unwrap();
        let answer = read_response(&mut c);
        assert!(answer.starts_with(ok), "after {head}: {answer:?}");
    }
}

#[test]
fn http1_answers_given_before_the_body_arrived_are_read_and_keep_the_connection() {
    let s = Shardtel::start(|dir, ports| config(dir, ports, ONE_CORE));
    let body = good_request();
    let good = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    early_answers_keep_their_connection(
        s.ports.http,
        &[
            (
                "POST /v2/traces HTTP/1.1\r\ncontent-type: application/x-protobuf",
                "HTTP/1.1 404",
            ),
            (
                "PUT /v1/traces HTTP/1.1\r\ncontent-type: application/x-protobuf",
                "HTTP/1.1 405",
            ),
            ("POST /v1/traces HTTP/1.1\r\ncontent-type: text/plain", "HTTP/1.1 415"),
            (
                "POST /v1/traces HTTP/1.1\r\ncontent-type: application/x-protobuf\r\ncontent-encoding: br",
                "HTTP/1.1 415",
            ),
        ],
        (&good, &body),
        "HTTP/1.1 200",
    );
}

#[test]
fn zipkin_and_jaeger_thrift_answers_given_before_the_body_arrived_keep_the_connection() {
    let (zipkin, grpc, thrift) = (free_port(), free_port(), free_port());
    let _s = Shardtel::start_config(|c| {
        c.receiver("zipkin", Component::zipkin_receiver(zipkin))
            .receiver("jaeger", Component::jaeger_receiver(grpc, thrift))
            .file_exporters()
            .traces(Pipeline::otlp_to(&["file_traces"]).receivers(&["zipkin", "jaeger"]))
    });
    let spans = b"[]";
    let good = format!(
        "POST /api/v2/spans HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        spans.len()
    );
    early_answers_keep_their_connection(
        zipkin,
        &[
            (
                "POST /api/v1/spans HTTP/1.1\r\ncontent-type: application/json",
                "HTTP/1.1 415",
            ),
            (
                "POST /api/v3/spans HTTP/1.1\r\ncontent-type: application/json",
                "HTTP/1.1 404",
            ),
            (
                "POST /api/v2/spans HTTP/1.1\r\ncontent-type: application/json\r\ncontent-encoding: br",
                "HTTP/1.1 415",
            ),
        ],
        (&good, spans),
        "HTTP/1.1 202",
    );
    // An empty Thrift batch is no valid Batch: the good request is one the receiver reads and
    // answers 400 (the connection stays up).
    let good = "POST /api/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-thrift\r\ncontent-length: 1\r\n\r\n";
    early_answers_keep_their_connection(
        thrift,
        &[
            (
                "POST /api/traces HTTP/1.1\r\ncontent-type: text/plain",
                "HTTP/1.1 415",
            ),
            (
                "POST /api/other HTTP/1.1\r\ncontent-type: application/x-thrift",
                "HTTP/1.1 404",
            ),
        ],
        (good, b"\0"),
        "HTTP/1.1 400",
    );
}
