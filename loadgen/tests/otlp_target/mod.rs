//! Small OTLP targets written for the tests: an OTLP/HTTP receiver that writes what it
//! accepts as OTLP/JSON lines (as a file exporter would), and an OTLP/gRPC receiver that
//! answers with chosen `grpc-status` codes. Both listen on 127.0.0.1:0 and run on their
//! own thread until dropped.

#![allow(dead_code)]

use std::convert::Infallible;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Decides, from a request's arrival index, whether it is written to the file.
pub type KeepFn = dyn Fn(u64) -> bool + Send + Sync;

/// Decides the `grpc-status` of the request with this arrival index.
pub type StatusFn = dyn Fn(u64) -> u16 + Send + Sync;

struct HttpState {
    file: Mutex<File>,
    keep: Box<KeepFn>,
    requests: AtomicU64,
    spans: AtomicU64,
}

struct GrpcState {
    status: Box<StatusFn>,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    requests: AtomicU64,
    spans: AtomicU64,
    encodings: Mutex<Vec<String>>,
    authorizations: Mutex<Vec<String>>,
}

/// A running target; stops when dropped.
pub struct Target {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received.
    pub requests: Arc<AtomicU64>,
    /// Connections accepted.
    pub connections: Arc<AtomicU64>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    grpc: Option<Arc<GrpcState>>,
}

impl Target {
    /// Every `grpc-encoding` header seen (gRPC targets).
    pub fn encodings(&self) -> Vec<String> {
        self.grpc
            .as_ref()
            .map(|g| g.encodings.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Every `authorization` header seen (gRPC targets); empty for requests without one.
    pub fn authorizations(&self) -> Vec<String> {
        self.grpc
            .as_ref()
            .map(|g| g.authorizations.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Most requests a gRPC target had in progress at once.
    pub fn max_in_flight(&self) -> u64 {
        self.grpc
            .as_ref()
            .map_or(0, |g| g.max_in_flight.load(Ordering::SeqCst))
    }

    /// Items (spans, points, records) decoded by a gRPC target.
    pub fn grpc_items(&self) -> u64 {
        self.grpc
            .as_ref()
            .map_or(0, |g| g.spans.load(Ordering::SeqCst))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A server thread: where it listens, connections accepted, its stop sender and its thread.
type Server = (
    SocketAddr,
    Arc<AtomicU64>,
    oneshot::Sender<()>,
    JoinHandle<()>,
);

/// Listens on 127.0.0.1:0 on a thread of its own and serves each accepted connection with
/// `serve` (a task each, counted) until the returned sender fires or is dropped.
fn spawn_server<F, Fut>(serve: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, mut stop_rx) = oneshot::channel();
    let connections = Arc::new(AtomicU64::new(0));
    let accepted_count = connections.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    accepted = listener.accept() => {
                        accepted_count.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(serve(accepted.unwrap().0));
                    }
                }
            }
        });
    });
    (addr_rx.recv().unwrap(), connections, stop_tx, thread)
}

/// An OTLP/HTTP (protobuf or JSON, HTTP/1.1) trace receiver: acknowledges every request
/// with 200, and appends the ones `keep` selects to `file` as OTLP/JSON lines before
/// answering.
pub fn http_file_exporter(file: &Path, keep: Box<KeepFn>) -> Target {
    http_file_exporter_on(file, keep, false)
}

/// Like [`http_file_exporter`], speaking HTTP/2 (h2c) instead when `http2`.
pub fn http_file_exporter_on(file: &Path, keep: Box<KeepFn>, http2: bool) -> Target {
    let state = Arc::new(HttpState {
        file: Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .unwrap(),
        ),
        keep,
        requests: AtomicU64::new(0),
        spans: AtomicU64::new(0),
    });
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let (addr, connections, shutdown, thread) = spawn_server(move |stream| {
        let state = state.clone();
        let counter = counter.clone();
        async move {
            let svc = service_fn(move |req| {
                counter.fetch_add(1, Ordering::SeqCst);
                handle_http(req, state.clone())
            });
            let io = TokioIo::new(stream);
            if http2 {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, svc)
                    .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            }
        }
    });
    Target {
        addr,
        requests,
        connections,
        shutdown: Some(shutdown),
        thread: Some(thread),
        grpc: None,
    }
}

async fn handle_http(
    req: Request<Incoming>,
    state: Arc<HttpState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    assert_eq!(req.uri().path(), "/v1/traces");
    let json = req.headers()["content-type"] == "application/json";
    let body = req.into_body().collect().await.unwrap().to_bytes();
    // JSON bodies are read with opentelemetry-proto's serde mapping, independent of the
    // protocol crate loadgen encodes them with.
    let decoded = if json {
        serde_json::from_slice::<ExportTraceServiceRequest>(&body).map_err(|e| e.to_string())
    } else {
        ExportTraceServiceRequest::decode(body).map_err(|e| e.to_string())
    };
    let Ok(msg) = decoded else {
        return Ok(Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .body(Full::new(Bytes::from_static(b"bad protobuf")))
            .unwrap());
    };
    let index = state.requests.fetch_add(1, Ordering::SeqCst);
    let spans: usize = msg
        .resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .map(|s| s.spans.len())
        .sum();
    state.spans.fetch_add(spans as u64, Ordering::SeqCst);
    if (state.keep)(index) {
        let mut line = serde_json::to_vec(&msg).unwrap();
        line.push(b'\n');
        let mut f = state.file.lock().unwrap();
        f.write_all(&line).unwrap();
        f.flush().unwrap();
    }
    let resp = ExportTraceServiceResponse::default().encode_to_vec();
    Ok(Response::builder()
        .header("content-type", "application/x-protobuf")
        .body(Full::new(Bytes::from(resp)))
        .unwrap())
}

/// An OTLP/gRPC receiver (h2c) holding each request 3 ms, then answering with
/// `status(index)`:
/// 0 with a response message and `grpc-status` in the trailers, anything else as a
/// trailers-only response. Decompresses gzip / zstd messages and counts their spans.
pub fn grpc_receiver(status: Box<StatusFn>) -> Target {
    grpc_receiver_on(status, None)
}

/// Like [`grpc_receiver`], over TLS with `acceptor` when given.
pub fn grpc_receiver_on(
    status: Box<StatusFn>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) -> Target {
    let state = Arc::new(GrpcState {
        status,
        in_flight: AtomicU64::new(0),
        max_in_flight: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        spans: AtomicU64::new(0),
        encodings: Mutex::new(Vec::new()),
        authorizations: Mutex::new(Vec::new()),
    });
    let requests = Arc::new(AtomicU64::new(0));
    let counter = requests.clone();
    let served = state.clone();
    let (addr, connections, shutdown, thread) = spawn_server(move |stream| {
        let state = served.clone();
        let counter = counter.clone();
        let acceptor = acceptor.clone();
        async move {
            let svc = service_fn(move |req| {
                counter.fetch_add(1, Ordering::SeqCst);
                handle_grpc(req, state.clone())
            });
            let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            match acceptor {
                None => {
                    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                }
                Some(acceptor) => {
                    // A client that distrusts the certificate aborts here.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                }
            }
        }
    });
    Target {
        addr,
        requests,
        connections,
        shutdown: Some(shutdown),
        thread: Some(thread),
        grpc: Some(state),
    }
}

async fn handle_grpc(
    req: Request<Incoming>,
    state: Arc<GrpcState>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let path = req.uri().path().to_string();
    assert_eq!(req.headers()["content-type"], "application/grpc");
    assert_eq!(req.headers()["te"], "trailers");
    let encoding = req
        .headers()
        .get("grpc-encoding")
        .map(|v| v.to_str().unwrap().to_string());
    let authorization = req
        .headers()
        .get("authorization")
        .map_or_else(String::new, |v| v.to_str().unwrap().to_string());
    state.authorizations.lock().unwrap().push(authorization);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // Hold each request briefly so that concurrency is visible.
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let compressed = body[0] == 1;
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    assert_eq!(body.len(), 5 + len);
    let msg = &body[5..];
    let plain: Vec<u8> = match (compressed, encoding.as_deref()) {
        (false, _) => msg.to_vec(),
        (true, Some("gzip")) => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(msg), &mut out).unwrap();
            out
        }
        (true, Some("zstd")) => zstd::decode_all(msg).unwrap(),
        other => panic!("unexpected compression {other:?}"),
    };
    state
        .encodings
        .lock()
        .unwrap()
        .push(encoding.unwrap_or_else(|| "identity".into()));
    let items = match path.as_str() {
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export" => {
            ExportTraceServiceRequest::decode(&plain[..])
                .unwrap()
                .resource_spans
                .iter()
                .flat_map(|r| r.scope_spans.iter())
                .map(|s| s.spans.len())
                .sum::<usize>()
        }
        "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export" => {
            use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
            use opentelemetry_proto::tonic::metrics::v1::metric::Data;
            ExportMetricsServiceRequest::decode(&plain[..])
                .unwrap()
                .resource_metrics
                .iter()
                .flat_map(|r| r.scope_metrics.iter().flat_map(|s| s.metrics.iter()))
                .map(|m| match m.data.as_ref().unwrap() {
                    Data::Gauge(g) => g.data_points.len(),
                    Data::Sum(s) => s.data_points.len(),
                    Data::Histogram(h) => h.data_points.len(),
                    other => panic!("unexpected metric {other:?}"),
                })
                .sum()
        }
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export" => {
            use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
            ExportLogsServiceRequest::decode(&plain[..])
                .unwrap()
                .resource_logs
                .iter()
                .flat_map(|r| r.scope_logs.iter())
                .map(|s| s.log_records.len())
                .sum()
        }
        other => panic!("unexpected path {other}"),
    };
    state.spans.fetch_add(items as u64, Ordering::SeqCst);
    let index = state.requests.fetch_add(1, Ordering::SeqCst);
    let code = (state.status)(index);
    let builder = Response::builder()
        .status(200)
        .header("content-type", "application/grpc");
    if code != 0 {
        // Trailers-only: the status travels in the headers, no body.
        return Ok(builder
            .header("grpc-status", code.to_string())
            .header("grpc-message", "try later")
            .body(Full::new(Bytes::new()).boxed())
            .unwrap());
    }
    let resp = ExportTraceServiceResponse::default().encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(resp.len() as u32).to_be_bytes());
    framed.extend_from_slice(&resp);
    let body = Full::new(Bytes::from(framed)).with_trailers(async {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        Some(Ok(t))
    });
    Ok(builder.body(body.boxed()).unwrap())
}

/// A fresh temporary directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "shardtel-loadgen-it-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the real loadgen binary with `args`.
pub fn loadgen(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_shardtel-loadgen"))
        .args(args)
        .output()
        .expect("failed to run shardtel-loadgen")
}

/// Runs loadgen with `args` plus `--quiet --json DIR/NAME.json`; returns its exit code, the
/// JSON results (which it must have written) and its output as text (also printed).
pub fn run_with_json(
    dir: &Path,
    name: &str,
    args: &[&str],
) -> (Option<i32>, serde_json::Value, String) {
    let json = dir.join(format!("{name}.json"));
    let mut all = args.to_vec();
    all.extend_from_slice(&["--quiet", "--json", json.to_str().unwrap()]);
    let out = loadgen(&all);
    let text = describe(&out);
    eprintln!("{text}");
    assert!(json.exists(), "no json results written\n{text}");
    (out.status.code(), read_json(&json), text)
}

/// `scheme://127.0.0.1:PORT` of a target.
pub fn url(scheme: &str, target: &Target) -> String {
    format!("{scheme}://127.0.0.1:{}", target.addr.port())
}

/// Reads a `--json` result file.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The process output as text, for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
