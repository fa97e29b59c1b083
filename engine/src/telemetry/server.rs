//! The health and metrics endpoints: plain HTTP/1.1 on plain threads, never on a reactor. Each
//! connection is served on a thread of its own, at most [`MAX_CONNECTIONS`] at once per
//! endpoint (more are closed at once), and gets [`READ_TIMEOUT`] to send its request and
//! [`WRITE_TIMEOUT`] to read the answer, however slowly it trickles: one slow client never
//! delays another's health check.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Board, Families};

/// Connections one endpoint serves at once; more are closed without an answer.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send its request head, in all.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a client may take to read the answer, in all.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which endpoint a listener serves.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint {
    /// `GET /` (any path): 200 when healthy, 503 otherwise.
    Health,
    /// `GET /metrics`: Prometheus text.
    Metrics,
}

/// Serves one telemetry endpoint on a plain thread (never on a reactor), each connection on a
/// thread of its own (see the module docs).
pub fn serve<S: Families + Send + Sync + 'static>(
    listener: TcpListener,
    board: Arc<Board<S>>,
    endpoint: Endpoint,
) -> std::io::Result<()> {
    let name = match endpoint {
        Endpoint::Health => "shardtel-health",
        Endpoint::Metrics => "shardtel-metrics",
    };
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for stream in listener.incoming() {
                // A failed accept (descriptors exhausted) is retried after a pause, not at
                // once: this thread would otherwise spin a CPU until descriptors came back.
                let Ok(stream) = stream else {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    continue;
                };
                if open.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::AcqRel);
                    continue;
                }
                let (board, served) = (board.clone(), open.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("{name}-conn"))
                    .spawn(move || {
                        let _ = answer(stream, &board, endpoint);
                        served.fetch_sub(1, Ordering::AcqRel);
                    });
                if let Err(e) = spawned {
                    log::warn!("{name}: failed to start a connection's thread: {e}");
                    open.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })
        .map(drop)
}

/// Time left until `deadline`, or a timed-out error.
fn left(deadline: Instant) -> std::io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

fn answer<S: Families + Send + Sync + 'static>(
    mut stream: TcpStream,
    board: &Board<S>,
    endpoint: Endpoint,
) -> std::io::Result<()> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while n < buf.len() {
        stream.set_read_timeout(Some(left(deadline)?))?;
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
            let (healthy, states) = board.health();
            let states = states.join(",");
            if healthy {
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
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let deadline = Instant::now() + WRITE_TIMEOUT;
    let mut rest = response.as_bytes();
    while !rest.is_empty() {
        stream.set_write_timeout(Some(left(deadline)?))?;
        match stream.write(rest)? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            written => rest = &rest[written..],
        }
    }
    stream.flush()
}
