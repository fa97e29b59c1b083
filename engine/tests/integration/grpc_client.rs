//! A raw gRPC unary client (hyper HTTP/2 on tokio) for error-case tests.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// What came back: HTTP status, grpc-status, grpc-message, response message bytes.
#[derive(Debug)]
pub struct GrpcReply {
    pub http_status: u16,
    pub grpc_status: Option<i32>,
    pub grpc_message: String,
    pub body: Bytes,
}

pub struct GrpcClient {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    authority: String,
}

impl GrpcClient {
    pub async fn connect(port: u16) -> Self {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        Self {
            sender,
            authority: format!("127.0.0.1:{port}"),
        }
    }

    /// Sends `frame` (already gRPC-framed) to `path` with extra headers.
    pub async fn call(&mut self, path: &str, frame: Bytes, headers: &[(&str, &str)]) -> GrpcReply {
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{path}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .sender
            .send_request(req.body(Full::new(frame)).unwrap())
            .await
            .unwrap();
        let http_status = resp.status().as_u16();
        let head = resp.headers().clone();
        let collected = resp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().unwrap_or_default();
        let body = collected.to_bytes();
        let get = |name: &str| {
            trailers
                .get(name)
                .or_else(|| head.get(name))
                .map(|v| v.to_str().unwrap().to_string())
        };
        GrpcReply {
            http_status,
            grpc_status: get("grpc-status").map(|s| s.parse().unwrap()),
            grpc_message: get("grpc-message").unwrap_or_default(),
            body,
        }
    }
}

pub fn frame(msg: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(msg.len() + 5);
    v.push(0);
    v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    v.extend_from_slice(msg);
    Bytes::from(v)
}

pub const TRACES: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
