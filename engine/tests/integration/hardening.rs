//! A hardened edge, through the real process: slow, idle and hostile clients, injected panics
//! and bad input never take the service away from good clients (issue 16). Timeouts are
//! shortened through the configuration so that the tests run in seconds.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;

use crate::gen;
use crate::harness::{file_pipelines, http_get, wait_until, Ports, Shardtel};

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

/// One core (so that connection limits are exact), files for every signal, `timeouts`, and
/// `otlp` / `engine` lines added to their tables.
fn config(dir: &Path, ports: Ports, timeouts: Timeouts, otlp: &str, engine: &str) -> String {
    format!(
        r#"
[engine]
cores = [0]
data_dir = "{dir}"
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
{pipelines}"#,
        dir = dir.display(),
        health = ports.health,
        metrics = ports.metrics,
        grpc = ports.grpc,
        http = ports.http,
        header = timeouts.read_header.as_millis(),
        read = timeouts.read.as_millis(),
        idle = timeouts.idle.as_millis(),
        pipelines = file_pipelines(dir),
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

/// Waits on `s` until the server closes it; returns when (how long after `since`).
fn closed_after(mut s: TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return since.elapsed(),
            Ok(_) => {}
        }
    }
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[test]
fn idle_and_slow_header_connections_at_the_limit_are_closed_then_a_good_client_is_served() {
    let s = Shardtel::start(|dir, ports| config(dir, ports, SHORT, "max_connections = 4", ""));
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
    let s = Shardtel::start(|dir, ports| config(dir, ports, SHORT, "", ""));
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
    let s = Shardtel::start(|dir, ports| config(dir, ports, SHORT, "", ""));
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
