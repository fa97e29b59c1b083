//! Slow clients of the Zipkin and Jaeger listeners: they run on the OTLP receiver's connection
//! clocks, so a request head trickled one byte at a time cannot hold a connection past the
//! head deadline (`read_timeout` or 10 s, whichever is shorter), a stalled body is answered 408
//! by `read_timeout` and counted as a timeout, and a body whose client went away is counted as
//! `client_aborted`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::closed_after;
use crate::harness::{free_port, wait_until, Shardtel};
use crate::test_config::{Component, Cores, Pipeline};

const READ: Duration = Duration::from_secs(2);
const IDLE: Duration = Duration::from_secs(1);
/// How far apart a trickling client sends the bytes of a request head: under `IDLE`.
const TRICKLE: Duration = Duration::from_millis(300);
/// The head deadline these listeners get: `read_timeout`, shorter than 10 s.
const HEAD: Duration = READ;
/// How late a close or an answer may come after its deadline (the watchdog, a loaded machine).
const SLACK: Duration = Duration::from_millis(1500);

/// The listeners' ports.
struct Ports {
    zipkin: u16,
    jaeger_grpc: u16,
    thrift: u16,
}

/// One core (so that `max_connections = 1` is one connection), Zipkin and Jaeger with
/// `read_timeout` 2 s and `idle_timeout` 1 s.
fn start() -> (Shardtel, Ports) {
    let ports = Ports {
        zipkin: free_port(),
        jaeger_grpc: free_port(),
        thrift: free_port(),
    };
    let limits = |c: Component| {
        c.set("max_connections", 1)
            .set("read_timeout", format!("{}ms", READ.as_millis()))
            .set("idle_timeout", format!("{}ms", IDLE.as_millis()))
    };
    let st = Shardtel::start_config(|c| {
        c.with(|c| c.engine.cores = Cores::List(vec![0]))
            .receiver("zipkin", limits(Component::zipkin_receiver(ports.zipkin)))
            .receiver(
                "jaeger",
                limits(Component::jaeger_receiver(ports.jaeger_grpc, ports.thrift)),
            )
            .file_exporters()
            .traces(Pipeline::otlp_to(&["file_traces"]).receivers(&["zipkin", "jaeger"]))
    });
    (st, ports)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// A good request for the listener on `port`: Zipkin JSON, or a Jaeger Thrift `Batch` with an
/// empty span list.
fn good_request(ports: &Ports, port: u16) -> (&'static str, &'static str, Vec<u8>) {
    if port == ports.zipkin {
        let span = br#"[{"traceId":"0123456789abcdef0123456789abcdef","id":"0123456789abcdef","name":"x","timestamp":1700000000000000,"duration":1}]"#;
        ("/api/v2/spans", "application/json", span.to_vec())
    } else {
        // Batch { 1: Process { 1: serviceName = "x" }, 2: spans = [] }
        let batch = [
            12, 0, 1, 11, 0, 1, 0, 0, 0, 1, b'x', 0, 15, 0, 2, 12, 0, 0, 0, 0, 0,
        ];
        ("/api/traces", "application/x-thrift", batch.to_vec())
    }
}

/// A new connection posting a good request: its status (0 when the connection failed or was
/// closed without an answer).
fn post_once(ports: &Ports, port: u16) -> u16 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (path, ctype, body) = good_request(ports, port);
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    if s.write_all(head.as_bytes()).is_err() || s.write_all(&body).is_err() {
        return 0;
    }
    status_of(&read_head(&mut s))
}

/// Reads a response head (empty when the connection closed first).
fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return String::new(),
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Requests of `receiver` failed with `reason`.
fn failed(st: &Shardtel, receiver: &str, reason: &str) -> u64 {
    let (receiver, reason) = (
        format!("receiver=\"{receiver}\""),
        format!("reason=\"{reason}\""),
    );
    st.metrics()
        .lines()
        .filter(|l| l.starts_with("shardtel_receiver_failed_requests_by_reason_total{"))
        .filter(|l| l.contains(&receiver) && l.contains(&reason))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn trickled_request_heads_are_closed_at_the_head_deadline_then_a_good_client_is_served() {
    let (st, ports) = start();
    // Each listener's one place is held: HTTP/1.1 request heads, one byte every TRICKLE (less
    // than idle_timeout apart, so an idle timer that reads reset never fires), and a gRPC
    // connection that sends nothing.
    assert!(TRICKLE < IDLE);
    let mut held = Vec::new();
    for (what, port) in [("zipkin", ports.zipkin), ("jaeger thrift", ports.thrift)] {
        let conn = connect(port);
        let since = Instant::now();
        let mut writer = conn.try_clone().unwrap();
        std::thread::spawn(move || {
            for b in b"POST /api/traces HTTP/1.1\r\nhost: x\r\nx-slow: "
                .iter()
                .cycle()
            {
                if writer.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(TRICKLE);
            }
        });
        held.push((what, port, conn, since));
    }
    let grpc = connect(ports.jaeger_grpc);
    let grpc_since = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    // Their places are taken: a good client is closed at once.
    for (what, port, _, _) in &held {
        assert_eq!(
            post_once(&ports, *port),
            0,
            "{what}: a client over the limit"
        );
    }
    let closes: Vec<_> = held
        .into_iter()
        .map(|(what, port, conn, since)| {
            let closed = std::thread::spawn(move || closed_after(conn, since));
            (what, port, closed)
        })
        .chain(std::iter::once((
            "jaeger grpc (silent)",
            ports.jaeger_grpc,
            std::thread::spawn(move || closed_after(grpc, grpc_since)),
        )))
        .collect();
    for (what, port, closed) in closes {
        let after = closed.join().unwrap();
        assert!(
            after >= HEAD - Duration::from_millis(50) && after <= HEAD + SLACK,
            "the {what} connection closed after {after:?} (head deadline {HEAD:?}); log:\n{}",
            st.log()
        );
        if port != ports.jaeger_grpc {
            // Its place is free again: a good client is served.
            let served = wait_until(5, || post_once(&ports, port) == 202);
            assert!(
                served,
                "{what}: a good client was not served; log:\n{}",
                st.log()
            );
        }
    }
}

#[test]
fn stalled_bodies_get_408_counted_as_timeout_and_aborted_ones_count_as_client_aborted() {
    let (st, ports) = start();
    for (receiver, port) in [("zipkin", ports.zipkin), ("jaeger", ports.thrift)] {
        let (path, ctype, body) = good_request(&ports, port);
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n",
            body.len() + 1000
        );
        // A body that stalls after its first bytes: 408 at read_timeout, then the close.
        let mut stalled = connect(port);
        stalled.write_all(head.as_bytes()).unwrap();
        stalled.write_all(&body[..4]).unwrap();
        answered_by_read_timeout_then_closed(receiver, stalled, 408);
        assert!(
            wait_until(5, || failed(&st, receiver, "timeout") == 1),
            "{receiver}: timeouts counted: {}",
            failed(&st, receiver, "timeout")
        );

        // A client that goes away mid-body.
        let mut aborted = connect(port);
        aborted.write_all(head.as_bytes()).unwrap();
        aborted.write_all(&body[..4]).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(aborted);
        assert!(
            wait_until(5, || failed(&st, receiver, "client_aborted") == 1),
            "{receiver}: aborts counted: {}; metrics:\n{}",
            failed(&st, receiver, "client_aborted"),
            st.metrics()
        );
        assert_eq!(failed(&st, receiver, "malformed"), 0, "{receiver}");
        // The listener still serves.
        assert!(
            wait_until(5, || post_once(&ports, port) == 202),
            "{receiver}"
        );
    }
}

/// `stalled` (a request whose body stopped) is answered `status` with `Connection: close`
/// once read_timeout has passed, not before, and then closed.
fn answered_by_read_timeout_then_closed(receiver: &str, mut stalled: TcpStream, status: u16) {
    let since = Instant::now();
    let answer = read_head(&mut stalled);
    let after = since.elapsed();
    assert_eq!(status_of(&answer), status, "{receiver}: {answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{receiver}: {answer:?}"
    );
    assert!(
        after >= READ - Duration::from_millis(50) && after <= READ + SLACK,
        "{receiver}: answered after {after:?} (read_timeout {READ:?})"
    );
    let closed = closed_after(stalled, Instant::now());
    assert!(
        closed <= SLACK,
        "{receiver}: closed {closed:?} after the {status}"
    );
}

#[test]
fn a_request_refused_as_overloaded_whose_body_stalls_is_answered_by_read_timeout() {
    let (st, ports) = start();
    for (receiver, port) in [("zipkin", ports.zipkin), ("jaeger", ports.thrift)] {
        let (path, ctype, body) = good_request(&ports, port);
        // Refused at admission (the overload path, on demand), its body stalled: the body is
        // read and dropped by read_timeout at most, then the refusal goes out and the
        // connection closes.
        let mut stalled = connect(port);
        write!(
            stalled,
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {ctype}\r\nx-shardtel-fault: refuse\r\ncontent-length: {}\r\n\r\n",
            body.len() + 1000
        )
        .unwrap();
        stalled.write_all(&body[..4]).unwrap();
        answered_by_read_timeout_then_closed(receiver, stalled, 503);
        assert!(
            wait_until(5, || post_once(&ports, port) == 202),
            "{receiver}"
        );
    }
    drop(st);
}
