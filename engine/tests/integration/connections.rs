//! The connection limit through the real process: connections over `max_connections` get a
//! retryable refusal (HTTP 503 with `Retry-After` and `Connection: close`, gRPC `UNAVAILABLE`),
//! counted in /metrics; a freed slot serves again; and shardtel-loadgen with more connections
//! than the limit loses nothing it was told was accepted.

use std::io::Read;
use std::net::TcpStream;

use prost::Message;

use crate::gen::{request, span};
use crate::grpc_client::{frame, GrpcClient, TRACES};
use crate::harness::{self, http_post, tokio_runtime, wait_until, Shardtel};
use crate::loadgen::{output_text, verifying};
use crate::test_config::Cores;

/// One core (so the limit is exact: the kernel spreads connections over cores by a hash) and
/// `max_connections` connections.
fn limited(max_connections: u64) -> Shardtel {
    Shardtel::start_config(|c| {
        c.with(|c| {
            c.engine.cores = Cores::List(vec![0]);
            c.otlp.max_connections = Some(max_connections);
        })
        .file_pipelines()
    })
}

/// Posts `body` on `s` (keep-alive); the response head.
fn post(s: &mut TcpStream, body: &[u8]) -> String {
    http_post(s, body).unwrap()
}

fn connect(port: u16) -> TcpStream {
    harness::connect(port).unwrap()
}

#[test]
fn connections_over_the_limit_are_refused_retryably_and_counted() {
    let st = limited(2);
    let body = request(vec![span(1, 1, 0)]).encode_to_vec();
    // Two connections hold the core's two slots (keep-alive).
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(st.ports.http)).collect();
    for s in &mut held {
        let head = post(s, &body);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    assert!(
        wait_until(10, || st
            .metric_sum("shardtel_receiver_connections", "transport=\"http\"")
            == 2),
        "{}",
        st.metrics()
    );
    // A third: 503 with Retry-After, then the server closes it.
    let mut third = connect(st.ports.http);
    let head = post(&mut third, &body).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let mut rest = Vec::new();
    assert_eq!(
        third.read_to_end(&mut rest).unwrap(),
        0,
        "connection left open"
    );
    // gRPC too: UNAVAILABLE, which OTLP clients retry.
    let reply = tokio_runtime().block_on(async {
        let mut c = GrpcClient::connect(st.ports.grpc).await;
        c.call(TRACES, frame(&body), &[]).await
    });
    assert_eq!(reply.grpc_status, Some(14), "{reply:?}");
    assert!(
        reply.grpc_message.contains("too many connections"),
        "{reply:?}"
    );
    for (transport, n) in [("http", 1), ("grpc", 1)] {
        assert!(
            wait_until(10, || st.metric_sum(
                "shardtel_receiver_refused_connections_total",
                &format!("transport=\"{transport}\",answered=\"true\"")
            ) == n),
            "{}",
            st.metrics()
        );
    }
    // A held connection still works; once one is closed, a new connection is served.
    assert!(post(&mut held[0], &body).starts_with("HTTP/1.1 200"));
    drop(held.pop());
    assert!(
        wait_until(10, || {
            let mut s = connect(st.ports.http);
            post(&mut s, &body).starts_with("HTTP/1.1 200")
        }),
        "no slot freed after a connection closed:\n{}",
        st.metrics()
    );
}

#[test]
fn loadgen_over_the_connection_limit_loses_nothing_accepted() {
    let st = limited(2);
    let json = st.dir.path().join("loadgen.json");
    for (protocol, endpoint) in [("http-protobuf", st.http_url()), ("grpc", st.grpc_url())] {
        let out = verifying(&st, &json)
            .args(["-p", protocol, "-e", &endpoint])
            .args(["--connections", "6", "--count", "600"])
            .args(["--spans-per-request", "10", "--timeout", "30s"])
            .output()
            .unwrap();
        let text = output_text(&out);
        assert!(
            out.status.success(),
            "{protocol}: loadgen --verify failed (exit {:?}):\n{text}\nshardtel log:\n{}",
            out.status.code(),
            st.log()
        );
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        eprintln!("{protocol}: {text}");
        // HTTP: every refusal is a 503. gRPC: a request the client sends while the refused
        // connection's GOAWAY is on its way fails as "connection closed" in loadgen's hyper
        // client; the server never processed it (gRPC clients retry those transparently).
        let failed = report["requests"]["failed"].as_u64().unwrap();
        let closed = report["failed_by_reason"]["transport: connection closed"]
            .as_u64()
            .unwrap_or(0);
        match protocol {
            "grpc" => assert_eq!(failed, closed, "{protocol}:\n{text}"),
            _ => assert_eq!(failed, 0, "{protocol}:\n{text}"),
        }
        assert!(
            report["requests"]["accepted"].as_u64().unwrap() > 0,
            "{text}"
        );
        assert_eq!(report["verify"]["spans_lost"], 0, "{text}");
        let reason = if protocol == "grpc" {
            "grpc UNAVAILABLE (14)"
        } else {
            "http 503"
        };
        assert!(
            report["refused_by_reason"][reason].as_u64().unwrap_or(0) > 0,
            "{protocol}: no connection was refused:\n{text}"
        );
    }
    for transport in ["http", "grpc"] {
        assert!(
            st.metric_sum(
                "shardtel_receiver_refused_connections_total",
                &format!("transport=\"{transport}\"")
            ) > 0,
            "{}",
            st.metrics()
        );
    }
}
