//! Refusals under overload keep an HTTP/2 connection up: a gRPC request refused before its body
//! was read gets its retryable status while its body is still on the way, and thousands of them
//! on one connection never make the server close it. So do the other answers given before the
//! body was read: an unsupported `grpc-encoding`, an unknown method.
//!
//! The requests are refused on demand (`x-shardtel-fault: refuse`, the `fault-injection` build's
//! hook in front of the core's admission: the same path as a core whose request bytes in flight
//! are at their bound). Between the client and shardtel, [`LateBodies`] holds each request's
//! DATA frames until shardtel has answered that stream, as happens under load when the answer
//! comes before the body arrived: deterministically, with no timing in the assertions.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::gen;
use crate::grpc_client::frame;
use crate::grpc_client::TRACES;
use crate::h2frames::{DATA, END_STREAM, GOAWAY, HEADERS, PREFACE, RST_STREAM};
use crate::harness::{free_port, metric_sum_in, tokio_runtime, wait_until, Shardtel};
use crate::test_config::{Component, Pipeline};

/// One HTTP/2 frame: its 9-byte header and payload, as read.
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    bytes: Vec<u8>,
}

/// Takes the complete frames at the front of `buf`.
fn frames(buf: &mut Vec<u8>) -> Vec<Frame> {
    let mut out = Vec::new();
    loop {
        if buf.len() < 9 {
            return out;
        }
        let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
        if buf.len() < 9 + len {
            return out;
        }
        let bytes: Vec<u8> = buf.drain(..9 + len).collect();
        out.push(Frame {
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
            bytes,
        });
    }
}

/// A TCP proxy for one HTTP/2 connection that forwards everything at once, except the DATA
/// frames that carry `held` (the body of the requests to be refused) or its first part (64
/// bytes or more), and whatever the client
/// sends on their streams after them: those wait until the server has ended the stream's
/// response or reset it. (Accepted requests' bodies pass: the server reads them before it
/// answers.) It records the server's `GOAWAY`s (error code and debug data).
struct LateBodies {
    port: u16,
    goaways: Arc<Mutex<Vec<(u32, String)>>>,
}

impl LateBodies {
    async fn start(upstream: u16, held: Bytes) -> LateBodies {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let goaways = Arc::new(Mutex::new(Vec::new()));
        let seen = goaways.clone();
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap();
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = server.into_split();
            let (answered_tx, mut answered_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
            // Server to client: forwarded as read; streams it ends or resets are announced.
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 << 10];
                loop {
                    let n = match server_rx.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    for f in frames(&mut buf) {
                        if client_tx.write_all(&f.bytes).await.is_err() {
                            return;
                        }
                        let ends = matches!(f.kind, DATA | HEADERS) && f.flags & END_STREAM != 0;
                        if ends || f.kind == RST_STREAM {
                            let _ = answered_tx.send(f.stream);
                        }
                        if f.kind == GOAWAY && f.bytes.len() >= 17 {
                            let code = u32::from_be_bytes(f.bytes[13..17].try_into().unwrap());
                            let debug = String::from_utf8_lossy(&f.bytes[17..]).into_owned();
                            seen.lock().unwrap().push((code, debug));
                        }
                    }
                }
            });
            // Client to server: DATA waits for its stream's answer.
            let mut preface = [0u8; PREFACE.len()];
            client_rx.read_exact(&mut preface).await.unwrap();
            server_tx.write_all(&preface).await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = vec![0u8; 64 << 10];
            let mut answered = HashSet::new();
            let mut waiting: HashMap<u32, Vec<Frame>> = HashMap::new();
            loop {
                tokio::select! {
                    read = client_rx.read(&mut chunk) => {
                        let n = match read {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        for f in frames(&mut buf) {
                            let payload = &f.bytes[9..];
                            // At least 64 bytes of it (or all): flow control may split
                            // any body into frames of a few bytes, which match anything.
                            let late_body = f.kind == DATA
                                && payload.len() >= held.len().min(64)
                                && held.starts_with(payload);
                            let waits = f.stream != 0
                                && !answered.contains(&f.stream)
                                && (late_body || waiting.contains_key(&f.stream));
                            if waits {
                                waiting.entry(f.stream).or_default().push(f);
                            } else if server_tx.write_all(&f.bytes).await.is_err() {
                                return;
                            }
                        }
                    }
                    Some(stream) = answered_rx.recv() => {
                        answered.insert(stream);
                        for f in waiting.remove(&stream).unwrap_or_default() {
                            if server_tx.write_all(&f.bytes).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        LateBodies { port, goaways }
    }
}

/// What became of one request: its grpc-status, or the transport error.
type Outcome = Result<i32, String>;

async fn export(
    mut sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    port: u16,
    path: &str,
    body: Bytes,
    header: Option<(&str, &str)>,
) -> Outcome {
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some((name, value)) = header {
        req = req.header(name, value);
    }
    let resp = sender
        .send_request(req.body(Full::new(body)).unwrap())
        .await
        .map_err(|e| format!("request: {e:?}"))?;
    let head = resp.headers().clone();
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("response body: {e:?}"))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = trailers
        .get("grpc-status")
        .or_else(|| head.get("grpc-status"))
        .ok_or("no grpc-status")?;
    Ok(status.to_str().unwrap().parse().unwrap())
}

#[test]
fn thousands_of_grpc_refusals_with_their_bodies_in_flight_leave_the_connection_up() {
    let st = Shardtel::start_config(|c| c.file_pipelines());
    let accepted = frame(&gen::request(vec![gen::span(1, 1, 1)]).encode_to_vec());
    let refused = frame(&gen::request(vec![gen::span(2, 1, 1)]).encode_to_vec());
    refusals_leave_the_connection_up(&st, st.ports.grpc, TRACES, accepted, refused, OVERLOAD);
}

/// A 64 KiB gRPC message (its bytes never read: answered from the headers alone).
fn large_body() -> Bytes {
    frame(&vec![0x5a; 64 << 10])
}

#[test]
fn thousands_of_unsupported_encodings_and_unknown_methods_with_bodies_in_flight_leave_the_connection_up(
) {
    let st = Shardtel::start_config(|c| c.file_pipelines());
    let accepted = frame(&gen::request(vec![gen::span(1, 1, 1)]).encode_to_vec());
    refusals_leave_the_connection_up(
        &st,
        st.ports.grpc,
        TRACES,
        accepted.clone(),
        large_body(),
        UNSUPPORTED_ENCODING,
    );
    refusals_leave_the_connection_up(
        &st,
        st.ports.grpc,
        TRACES,
        accepted,
        large_body(),
        UNKNOWN_METHOD,
    );
}

/// A Jaeger `PostSpansRequest` of one span (`n` makes its trace id), encoded by hand: batch
/// { spans { trace_id, span_id, operation_name "x" }, process { service_name "p" } }.
fn jaeger_request(n: u8) -> Vec<u8> {
    let mut span = vec![0x0a, 16];
    span.extend([n; 16]);
    span.extend([0x12, 8]);
    span.extend([n; 8]);
    span.extend([0x1a, 1, b'x']);
    let mut batch = vec![0x0a, span.len() as u8];
    batch.extend(span);
    batch.extend([0x12, 3, 0x0a, 1, b'p']);
    let mut request = vec![0x0a, batch.len() as u8];
    request.extend(batch);
    request
}

#[test]
fn thousands_of_jaeger_grpc_refusals_with_their_bodies_in_flight_leave_the_connection_up() {
    let (grpc, thrift) = (free_port(), free_port());
    let st = Shardtel::start_config(|c| {
        c.receiver("jaeger", Component::jaeger_receiver(grpc, thrift))
            .file_exporters()
            .traces(Pipeline::otlp_to(&["file_traces"]).receivers(&["jaeger"]))
    });
    let path = "/jaeger.api_v2.CollectorService/PostSpans";
    refusals_leave_the_connection_up(
        &st,
        grpc,
        path,
        frame(&jaeger_request(1)),
        frame(&jaeger_request(2)),
        OVERLOAD,
    );
    refusals_leave_the_connection_up(
        &st,
        grpc,
        path,
        frame(&jaeger_request(1)),
        large_body(),
        UNSUPPORTED_ENCODING,
    );
    refusals_leave_the_connection_up(
        &st,
        grpc,
        path,
        frame(&jaeger_request(1)),
        large_body(),
        UNKNOWN_METHOD,
    );
}

/// How the refused requests of [`refusals_leave_the_connection_up`] are refused.
struct Refusal {
    /// Their path, when not the accepted requests'.
    path: Option<&'static str>,
    /// The header that has them refused.
    header: Option<(&'static str, &'static str)>,
    /// The grpc-status they get.
    status: i32,
    /// The reason they are counted under (`shardtel_receiver_failed_requests_by_reason_total`),
    /// when they are counted.
    reason: Option<&'static str>,
    /// Batches of 64 requests.
    batches: usize,
}

/// Refused as overloaded (`UNAVAILABLE`).
const OVERLOAD: Refusal = Refusal {
    path: None,
    header: Some(("x-shardtel-fault", "refuse")),
    status: 14,
    reason: Some("inflight_bytes"),
    batches: 64,
};

/// An unsupported `grpc-encoding` (`UNIMPLEMENTED`).
const UNSUPPORTED_ENCODING: Refusal = Refusal {
    path: None,
    header: Some(("grpc-encoding", "snappy")),
    status: 12,
    reason: Some("unsupported"),
    batches: 32,
};

/// An unknown method (`UNIMPLEMENTED`, not counted: it names no signal).
const UNKNOWN_METHOD: Refusal = Refusal {
    path: Some("/opentelemetry.proto.collector.trace.v1.TraceService/Nothing"),
    header: None,
    status: 12,
    reason: None,
    batches: 32,
};

/// Sends batches of concurrent requests on one HTTP/2 connection to `port` (more than the 50
/// reset streams h2 remembers), three of four refused as `how` says (`refused`, each with its
/// DATA arriving after the answer: over 1,500 refusals), the others `accepted`; every answer
/// must be OK or the refusal's status as asked, the server must send no GOAWAY and the
/// connection must carry one more request, and every refusal must be counted (when counted).
fn refusals_leave_the_connection_up(
    st: &Shardtel,
    port: u16,
    path: &'static str,
    accepted: Bytes,
    refused: Bytes,
    how: Refusal,
) {
    const PER_BATCH: usize = 64;
    let counted = || {
        how.reason.map_or(0, |reason| {
            metric_sum_in(
                &st.metrics(),
                "shardtel_receiver_failed_requests_by_reason_total",
                &format!("reason=\"{reason}\""),
            )
        })
    };
    let before = counted();
    let (outcomes, goaways, open) = tokio_runtime().block_on(async {
        let proxy = LateBodies::start(port, refused.clone()).await;
        let stream = TcpStream::connect(("127.0.0.1", proxy.port)).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
        let connection = tokio::spawn(conn);
        let mut outcomes = Vec::new();
        for batch in 0..how.batches {
            let calls: Vec<_> = (0..PER_BATCH)
                .map(|i| {
                    let refuse = (batch * PER_BATCH + i) % 4 != 0;
                    let call = if refuse {
                        let to = how.path.unwrap_or(path);
                        export(sender.clone(), proxy.port, to, refused.clone(), how.header)
                    } else {
                        export(sender.clone(), proxy.port, path, accepted.clone(), None)
                    };
                    // A bound, so that a stuck request fails the test instead of hanging it.
                    let bounded = tokio::time::timeout(Duration::from_secs(20), call);
                    (refuse, tokio::spawn(bounded))
                })
                .collect();
            for (refuse, call) in calls {
                let outcome = call
                    .await
                    .unwrap()
                    .unwrap_or(Err("no answer in 20 s".into()));
                outcomes.push((refuse, outcome));
            }
        }
        // The connection still carries a request, and is still open.
        let last = export(sender.clone(), proxy.port, path, accepted.clone(), None).await;
        outcomes.push((false, last));
        let open = !connection.is_finished();
        let goaways = proxy.goaways.lock().unwrap().clone();
        (outcomes, goaways, open)
    });
    let failed: Vec<_> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, (refuse, outcome))| outcome != &Ok(if *refuse { how.status } else { 0 }))
        .collect();
    assert!(
        failed.is_empty() && goaways.is_empty() && open,
        "{} of {} requests not answered as expected (first: {:?}); server GOAWAYs {goaways:?}; \
         connection open: {open}",
        failed.len(),
        outcomes.len(),
        failed.first()
    );
    // Each refusal is counted (the cores' counters reach the endpoint within a moment).
    if how.reason.is_none() {
        return;
    }
    let refused = outcomes.iter().filter(|(refuse, _)| *refuse).count() as u64;
    assert!(
        wait_until(10, || counted() - before == refused),
        "{} refusals counted, {refused} made",
        counted() - before
    );
}
