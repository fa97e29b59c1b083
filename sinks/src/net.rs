//! hyper 1.x on glommio: an I/O adapter over glommio's `TcpStream` (or any futures-io stream
//! over it, such as a TLS session), the [`Stream`] of a connection that is plaintext or TLS,
//! and a task executor that spawns on the current core.
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

/// A futures-io stream (by default glommio's `TcpStream`) seen through hyper's
/// `rt::Read`/`rt::Write` traits.
pub struct GlommioIo<S = TcpStream> {
    stream: S,
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

impl<S> GlommioIo<S> {
    /// Wraps any stream over a socket (e.g. a [`Stream`]); `TCP_NODELAY` is the caller's to
    /// set on the socket.
    pub fn over(stream: S) -> Self {
        Self { stream }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }
}

impl<S: AsyncRead + Unpin> hyper::rt::Read for GlommioIo<S> {
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

impl<S: AsyncWrite + Unpin> hyper::rt::Write for GlommioIo<S> {
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

/// A connection's byte stream: the TCP socket itself, or a TLS session over it (`T`: a
/// futures-rustls server or client stream). One type for both, so a hyper connection is built
/// once for either.
pub enum Stream<T> {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS (boxed: a TLS session holds its buffers and state inline).
    Tls(Box<T>),
}

impl<T> Stream<T> {
    /// Whether this is a TLS session.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stream<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stream<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_close(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_close(cx),
        }
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
