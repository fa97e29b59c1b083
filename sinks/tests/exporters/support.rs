//! Test servers (real hyper HTTP/2 and HTTP/1 on glommio sockets), span
//! fixtures and executor setup shared by the exporter tests.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io::Read as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::net::TcpListener;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use prost::Message;
use shardtel_protocol::proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use shardtel_protocol::proto::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use shardtel_protocol::proto::resource::v1::Resource;
use shardtel_protocol::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use shardtel_protocol::reframe::Encoded;
use shardtel_sinks::net::{GlommioIo, LocalExec};

/// Runs `test` on a fresh glommio executor with default settings (these work
/// under this machine's 8 MiB locked-memory limit, many tests at once).
pub fn run<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(test)
        .expect("glommio executor starts")
        .join()
        .expect("test executor thread");
}

/// Polls `cond` every 5 ms until it holds; panics after `within`.
pub async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
}

/// A trace request with `spans` spans whose names start with `tag`; `pad`
/// bytes of attribute value per span make it as large as needed.
pub fn trace_request(tag: &str, spans: usize, pad: usize) -> ExportTraceServiceRequest {
    let spans = (0..spans)
        .map(|i| Span {
            trace_id: {
                let mut id = vec![0u8; 16];
                id[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
                id[8] = tag.len() as u8;
                id
            },
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            name: format!("{tag}-{i}"),
            kind: 2,
            // Always set: OTLP JSON (like the Collector) writes `status` even when
            // empty, so `None` would read back as `Some(default)`.
            status: Some(Status {
                message: if i % 3 == 2 {
                    "failed".into()
                } else {
                    String::new()
                },
                code: (i % 3) as i32,
            }),
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_000_100_000 + i as u64,
            attributes: vec![KeyValue {
                key: "pad".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("x".repeat(pad))),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("svc-{tag}"))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "test".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `request` encoded, split into two chunks to exercise chunked batches.
pub fn encoded(request: &ExportTraceServiceRequest) -> Encoded {
    let bytes = Bytes::from(request.encode_to_vec());
    let mid = bytes.len() / 2;
    Encoded {
        chunks: vec![bytes.slice(..mid), bytes.slice(mid..)],
        len: bytes.len(),
    }
}

/// All spans of some requests, in order.
pub fn spans_of<'a>(
    requests: impl IntoIterator<Item = &'a ExportTraceServiceRequest>,
) -> Vec<Span> {
    requests
        .into_iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.iter().cloned())
        .collect()
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// Decodes an OTLP/HTTP body (gunzipping per `content-encoding`).
    pub fn http_trace_request(&self) -> ExportTraceServiceRequest {
        let body = match self.headers.get("content-encoding") {
            Some(v) if v == "gzip" => gunzip(&self.body),
            Some(v) if v == "zstd" => zstd::decode_all(self.body.as_ref()).expect("valid zstd"),
            None => self.body.to_vec(),
            Some(other) => panic!("unexpected content-encoding {other:?}"),
        };
        ExportTraceServiceRequest::decode(body.as_slice()).expect("valid protobuf")
    }

    /// Decodes a gRPC body: one length-prefixed message, gunzipped per
    /// `grpc-encoding` when the compressed flag is set.
    pub fn grpc_trace_request(&self) -> ExportTraceServiceRequest {
        let body = &self.body;
        assert!(body.len() >= 5, "grpc frame too short");
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert_eq!(body.len(), 5 + len, "exactly one grpc message");
        let message = &body[5..];
        let message = match body[0] {
            0 => message.to_vec(),
            1 => {
                assert_eq!(self.headers.get("grpc-encoding").unwrap(), "gzip");
                gunzip(message)
            }
            flag => panic!("bad compressed flag {flag}"),
        };
        ExportTraceServiceRequest::decode(message.as_slice()).expect("valid protobuf")
    }
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// What the test server answers to the next request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Success (gRPC status 0 / HTTP 200), with an optional partial success.
    Ok {
        rejected: i64,
        message: &'static str,
    },
    /// gRPC trailers-only answer with this status (and optional RetryInfo seconds).
    Grpc {
        code: u32,
        message: &'static str,
        retry_after_secs: Option<i64>,
    },
    /// HTTP status with an optional `Retry-After` and a text body.
    Http {
        status: u16,
        retry_after: Option<&'static str>,
        body: &'static str,
    },
}

pub const OK: Reply = Reply::Ok {
    rejected: 0,
    message: "",
};

/// A real server on 127.0.0.1 that records requests and answers from a script
/// (then [`OK`] once the script is empty).
pub struct TestServer {
    pub addr: SocketAddr,
    pub requests: Rc<RefCell<Vec<Recorded>>>,
    pub script: Rc<RefCell<VecDeque<Reply>>>,
    /// Connections accepted so far.
    pub connections: Rc<Cell<usize>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    Http1,
}

impl TestServer {
    /// Starts a server on `addr` (port 0 picks one).
    pub fn start(protocol: Protocol, addr: SocketAddr, script: Vec<Reply>) -> TestServer {
        Self::start_with(protocol, addr, script, true)
    }

    /// Starts a server on a free port of 127.0.0.1.
    pub fn local(protocol: Protocol, script: Vec<Reply>) -> TestServer {
        Self::start(protocol, "127.0.0.1:0".parse().unwrap(), script)
    }

    /// Like [`TestServer::start`]; `keep_alive = false` makes the HTTP/1 server
    /// close each connection after one response.
    pub fn start_with(
        protocol: Protocol,
        addr: SocketAddr,
        script: Vec<Reply>,
        keep_alive: bool,
    ) -> TestServer {
        let listener = TcpListener::bind(addr).expect("bind test server");
        let addr = listener.local_addr().unwrap();
        let requests = Rc::new(RefCell::new(Vec::new()));
        let script = Rc::new(RefCell::new(VecDeque::from(script)));
        let connections = Rc::new(Cell::new(0));
        let (reqs, scr, conns) = (requests.clone(), script.clone(), connections.clone());
        glommio::spawn_local(async move {
            loop {
                let Ok(stream) = listener.accept().await else {
                    return;
                };
                conns.set(conns.get() + 1);
                let (reqs, scr) = (reqs.clone(), scr.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (reqs, scr) = (reqs.clone(), scr.clone());
                    async move { Ok::<_, Infallible>(handle(protocol, req, reqs, scr).await) }
                });
                let io = GlommioIo::new(stream);
                glommio::spawn_local(async move {
                    let _ = match protocol {
                        Protocol::Grpc => {
                            hyper::server::conn::http2::Builder::new(LocalExec)
                                .serve_connection(io, service)
                                .await
                        }
                        Protocol::Http1 => {
                            hyper::server::conn::http1::Builder::new()
                                .keep_alive(keep_alive)
                                .serve_connection(io, service)
                                .await
                        }
                    };
                })
                .detach();
            }
        })
        .detach();
        TestServer {
            addr,
            requests,
            script,
            connections,
        }
    }

    pub fn count(&self) -> usize {
        self.requests.borrow().len()
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
/// A port that was free a moment ago and that no other test of this process was given: tests
/// run in parallel, and one test's dead backend must not become another test's live server.
pub fn free_addr() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

type ResBody = UnsyncBoxBody<Bytes, Infallible>;

async fn handle(
    protocol: Protocol,
    req: Request<Incoming>,
    requests: Rc<RefCell<Vec<Recorded>>>,
    script: Rc<RefCell<VecDeque<Reply>>>,
) -> Response<ResBody> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    requests.borrow_mut().push(Recorded {
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        body,
    });
    let reply = script.borrow_mut().pop_front().unwrap_or(OK);
    match protocol {
        Protocol::Grpc => grpc_reply(reply),
        Protocol::Http1 => http_reply(reply),
    }
}

fn response_message(rejected: i64, message: &str) -> Vec<u8> {
    ExportTraceServiceResponse {
        partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: message.into(),
        }),
    }
    .encode_to_vec()
}

fn grpc_reply(reply: Reply) -> Response<ResBody> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    match reply {
        Reply::Ok { rejected, message } => {
            let message = response_message(rejected, message);
            let mut framed = vec![0u8];
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            *response.body_mut() = Full::new(Bytes::from(framed))
                .with_trailers(async move { Some(Ok(trailers)) })
                .boxed_unsync();
        }
        Reply::Grpc {
            code,
            message,
            retry_after_secs,
        } => {
            let headers = response.headers_mut();
            headers.insert("grpc-status", HeaderValue::from(code));
            headers.insert("grpc-message", HeaderValue::from_static(message));
            if let Some(seconds) = retry_after_secs {
                headers.insert(
                    "grpc-status-details-bin",
                    HeaderValue::from_str(&retry_info_details(code, seconds)).unwrap(),
                );
            }
        }
        Reply::Http { status, .. } => {
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
        }
    }
    response
}

fn http_reply(reply: Reply) -> Response<ResBody> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
    match reply {
        Reply::Ok { rejected, message } => {
            response.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("application/x-protobuf"),
            );
            *response.body_mut() =
                Full::new(Bytes::from(response_message(rejected, message))).boxed_unsync();
        }
        Reply::Http {
            status,
            retry_after,
            body,
        } => {
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            if let Some(value) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from_static(value));
            }
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("text/plain"));
            *response.body_mut() = Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync();
        }
        Reply::Grpc { .. } => panic!("grpc reply scripted for an http server"),
    }
    response
}

/// `grpc-status-details-bin` carrying a `google.rpc.RetryInfo`, hand-encoded
/// with prost (google.rpc.Status { code, message, details: [Any] }).
fn retry_info_details(code: u32, seconds: i64) -> String {
    #[derive(Clone, PartialEq, Message)]
    struct Duration_ {
        #[prost(int64, tag = "1")]
        seconds: i64,
    }
    #[derive(Clone, PartialEq, Message)]
    struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        retry_delay: Option<Duration_>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Any {
        #[prost(string, tag = "1")]
        type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, Message)]
    struct Status {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(message, repeated, tag = "3")]
        details: Vec<Any>,
    }
    let status = Status {
        code: code as i32,
        details: vec![Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: RetryInfo {
                retry_delay: Some(Duration_ { seconds }),
            }
            .encode_to_vec(),
        }],
    };
    base64_encode(&status.encode_to_vec())
}

/// Standard base64 without padding (as gRPC sends binary headers).
fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

// ---- configuration builders (kept here so a config API change touches one place)

use shardtel_config::{
    BatchConfig, Compression, Endpoint, ExporterConfig, ExporterKind, FileExporterConfig,
    OtlpExporterConfig, OtlpHttpExporterConfig, QueueConfig, RetryConfig, RotationConfig,
};

pub fn batch(max_items: usize, timeout: Duration) -> BatchConfig {
    BatchConfig {
        max_items,
        max_bytes: 8 << 20,
        timeout,
    }
}

pub fn retry(initial_ms: u64, max_ms: u64, max_elapsed_ms: u64) -> RetryConfig {
    RetryConfig {
        enabled: true,
        initial_interval: Duration::from_millis(initial_ms),
        max_interval: Duration::from_millis(max_ms),
        max_elapsed_time: Duration::from_millis(max_elapsed_ms),
    }
}

pub fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint {
        scheme: "http".into(),
        host: addr.ip().to_string(),
        port: addr.port(),
        path: String::new(),
    }
}

/// A queue of the default kind holding at most `max_bytes`.
pub fn queue_of(max_bytes: usize) -> QueueConfig {
    QueueConfig {
        max_bytes,
        ..QueueConfig::default()
    }
}

pub fn otlp_config(addr: SocketAddr) -> OtlpExporterConfig {
    OtlpExporterConfig {
        endpoint: endpoint(addr),
        compression: Compression::Gzip,
        timeout: Duration::from_secs(5),
        headers: Default::default(),
        tls: None,
        batch: batch(10_000, Duration::from_millis(20)),
        retry: retry(10, 50, 0),
        queue: queue_of(16 << 20),
    }
}

pub fn otlphttp_config(addr: SocketAddr) -> OtlpHttpExporterConfig {
    OtlpHttpExporterConfig {
        endpoint: endpoint(addr),
        traces_endpoint: None,
        metrics_endpoint: None,
        logs_endpoint: None,
        compression: Compression::Gzip,
        timeout: Duration::from_secs(5),
        headers: Default::default(),
        tls: None,
        batch: batch(10_000, Duration::from_millis(20)),
        retry: retry(10, 50, 0),
        queue: queue_of(16 << 20),
    }
}

pub fn file_config(
    path: &std::path::Path,
    max_megabytes: u64,
    max_backups: u32,
) -> FileExporterConfig {
    FileExporterConfig {
        path: path.to_owned(),
        rotation: RotationConfig {
            max_megabytes,
            max_backups,
        },
        batch: batch(10_000, Duration::ZERO),
        retry: retry(10, 50, 0),
        queue: queue_of(64 << 20),
    }
}

pub fn exporter(name: &str, kind: ExporterKind) -> ExporterConfig {
    ExporterConfig {
        name: name.into(),
        kind,
    }
}

/// An export queue for exporter `name` on core 0.
pub fn start_queue(name: &str, kind: ExporterKind) -> std::rc::Rc<shardtel_sinks::ExportQueue> {
    shardtel_sinks::ExportQueue::start(&exporter(name, kind), 0).unwrap()
}

/// A fresh, empty directory for one test.
pub fn temp_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shardtel-sinks-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
