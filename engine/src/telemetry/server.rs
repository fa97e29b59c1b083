//! The health and metrics endpoints: plain HTTP/1.1 on plain threads, never on a reactor.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::{Board, Families};

/// Which endpoint a listener serves.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint {
    /// `GET /` (any path): 200 when healthy, 503 otherwise.
    Health,
    /// `GET /metrics`: Prometheus text.
    Metrics,
}

/// Serves one telemetry endpoint on a plain thread (never on a reactor).
pub fn serve<S: Families + Send + Sync + 'static>(
    listener: TcpListener,
    board: Arc<Board<S>>,
    endpoint: Endpoint,
) -> std::io::Result<()> {
    let name = match endpoint {
        Endpoint::Health => "shardtel-health",
        Endpoint::Metrics => "shardtel-metrics",
    };
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = answer(stream, &board, endpoint);
            }
        })
        .map(drop)
}

fn answer<S: Families + Send + Sync + 'static>(
    mut stream: TcpStream,
    board: &Board<S>,
    endpoint: Endpoint,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < buf.len() {
        let r = stream.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf[..n]);
    let path = head.split_whitespace().nth(1).unwrap_or("/");
    let (status, ctype, body) = match endpoint {
        Endpoint::Health => {
            let states = board.state_names().join(",");
            if board.healthy() {
                (
                    "200 OK",
                    "application/json",
                    format!("{{\"status\":\"serving\",\"cores\":\"{states}\"}}\n"),
                )
            } else {
                (
                    "503 Service Unavailable",
                    "application/json",
                    format!("{{\"status\":\"unavailable\",\"cores\":\"{states}\"}}\n"),
                )
            }
        }
        Endpoint::Metrics if path == "/metrics" || path == "/" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            board.render_metrics(),
        ),
        Endpoint::Metrics => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
