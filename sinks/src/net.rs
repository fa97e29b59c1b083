//! hyper 1.x on glommio: an I/O adapter over glommio's `TcpStream` and a
//! task executor that spawns on the current core.
//!
//! Both the receivers (in the engine) and the network exporters (here) run
//! hyper connections as tasks of the reactor that owns the socket, so a
//! connection never leaves its core.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

/// A glommio `TcpStream` seen through hyper's `rt::Read`/`rt::Write` traits.
pub struct GlommioIo {
    stream: TcpStream,
}

impl GlommioIo {
    /// Wraps a connected stream; sets `TCP_NODELAY` (OTLP is request/response).
    pub fn new(stream: TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        Self { stream }
    }

    /// Connects to `addr` (a `host:port` string) on the current core.
    pub async fn connect(addr: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await.map_err(io::Error::from)?;
        Ok(Self::new(stream))
    }

    /// Connects to an already resolved address on the current core. Unlike
    /// [`GlommioIo::connect`] with a host name, this never blocks the reactor
    /// on a DNS lookup.
    pub async fn connect_addr(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await.map_err(io::Error::from)?;
        Ok(Self::new(stream))
    }
}

impl hyper::rt::Read for GlommioIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        // `initialize_unfilled` zeroes only the part hyper has never
        // initialised, so steady-state reads into a reused buffer cost no memset.
        let dst = buf.initialize_unfilled();
        match Pin::new(&mut self.stream).poll_read(cx, dst) {
            Poll::Ready(Ok(n)) => {
                // The one unsafe site of this crate (`#![deny(unsafe_code)]` in lib.rs).
                #[allow(unsafe_code)]
                // SAFETY: `advance(n)` requires the next `n` bytes of the cursor to be
                // initialised; `poll_read` wrote `n <= dst.len()` bytes into `dst`, which is
                // exactly that initialised, unfilled part of the buffer.
                unsafe {
                    buf.advance(n)
                };
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for GlommioIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

/// hyper's executor: spawns connection-internal futures on the current core.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: Future + 'static,
{
    fn execute(&self, fut: F) {
        glommio::spawn_local(fut).detach();
    }
}
