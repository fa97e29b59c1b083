//! [`TlsIo`]: the stream under a TLS connection.
//!
//! It does two things the raw socket cannot:
//! - it first yields the bytes [`crate::ServerTls::accept`] read to tell TLS from plaintext,
//!   then reads on;
//! - during the handshake it accepts every write at once into a buffer that `flush` and `close`
//!   drain. rustls sends an alert when it refuses a peer (`certificate_required`,
//!   `bad_certificate`, ...) with a single "last-gasp" write attempt; on a completion-based
//!   socket such as glommio's, the first write of anything is always pending, so without the
//!   buffer the alert would be lost and the peer would only see the connection close. After the
//!   handshake, writes go straight through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

/// Bytes [`crate::ServerTls::accept`] looks at before the handshake: enough to tell an HTTP/2
/// preface from HTTP/1.
pub(crate) const SNIFF_BYTES: usize = 16;

/// Handshake writes buffered before a write waits for the socket (a handshake flight with a
/// long certificate chain fits).
const MAX_BUFFERED: usize = 64 << 10;

/// The stream under a [`crate::ServerStream`] or [`crate::ClientStream`]; see the module docs.
#[derive(Debug)]
pub struct TlsIo<S> {
    inner: S,
    prefix: [u8; SNIFF_BYTES],
    prefix_start: usize,
    prefix_end: usize,
    handshaking: bool,
    /// Handshake bytes accepted but not yet written to `inner`.
    pending: Vec<u8>,
    pending_start: usize,
}

impl<S> TlsIo<S> {
    pub(crate) fn new(inner: S, prefix: [u8; SNIFF_BYTES], len: usize) -> Self {
        TlsIo {
            inner,
            prefix,
            prefix_start: 0,
            prefix_end: len,
            handshaking: true,
            pending: Vec::new(),
            pending_start: 0,
        }
    }

    /// The handshake is over: writes go straight to the stream from now on.
    pub(crate) fn end_handshake(&mut self) {
        self.handshaking = false;
        if self.pending_start == self.pending.len() {
            self.pending = Vec::new();
            self.pending_start = 0;
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The underlying stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S: AsyncWrite + Unpin> TlsIo<S> {
    /// Writes the buffered handshake bytes to the stream.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_start < self.pending.len() {
            let n = match Pin::new(&mut self.inner)
                .poll_write(cx, &self.pending[self.pending_start..])
            {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.pending_start += n;
        }
        self.pending.clear();
        self.pending_start = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TlsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.prefix_start < this.prefix_end {
            let n = buf.len().min(this.prefix_end - this.prefix_start);
            buf[..n].copy_from_slice(&this.prefix[this.prefix_start..this.prefix_start + n]);
            this.prefix_start += n;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TlsIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.handshaking {
            if this.pending.len() - this.pending_start >= MAX_BUFFERED {
                match this.poll_drain(cx) {
                    Poll::Ready(Ok(())) => {}
                    other => return other.map(|r| r.map(|()| 0)),
                }
            }
            this.pending.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_write(cx, buf),
            other => other.map(|r| r.map(|()| 0)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.handshaking {
            // All of it: rustls hands over queued records (e.g. ChangeCipherSpec, then the
            // alert) in one vectored write, and its last-gasp write is a single call.
            if this.pending.len() - this.pending_start >= MAX_BUFFERED {
                match this.poll_drain(cx) {
                    Poll::Ready(Ok(())) => {}
                    other => return other.map(|r| r.map(|()| 0)),
                }
            }
            let mut total = 0;
            for buf in bufs {
                this.pending.extend_from_slice(buf);
                total += buf.len();
            }
            return Poll::Ready(Ok(total));
        }
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            other => other.map(|r| r.map(|()| 0)),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_close(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

    /// A stream whose every first write attempt is pending (like a completion-based socket),
    /// recording what was written.
    #[derive(Default)]
    struct Lazy {
        written: Vec<u8>,
        ready: bool,
        input: Vec<u8>,
    }

    impl AsyncRead for Lazy {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Lazy {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if !self.ready {
                self.ready = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.ready = false;
            self.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn handshake_writes_are_accepted_at_once_and_drained_by_close() {
        let mut io = TlsIo::new(Lazy::default(), [0; SNIFF_BYTES], 0);
        // A single synchronous attempt, as rustls's last-gasp alert write makes.
        let attempt = future::block_on(future::poll_fn(|cx| {
            Poll::Ready(Pin::new(&mut io).poll_write(cx, b"alert"))
        }));
        assert!(matches!(attempt, Poll::Ready(Ok(5))), "{attempt:?}");
        assert!(io.get_ref().written.is_empty());
        future::block_on(io.close()).unwrap();
        assert_eq!(io.get_ref().written, b"alert");
        // After the handshake, writes go through (and wait for the stream).
        io.end_handshake();
        future::block_on(io.write_all(b"data")).unwrap();
        assert_eq!(io.get_ref().written, b"alertdata");
    }

    #[test]
    fn a_vectored_handshake_write_is_taken_whole() {
        let mut io = TlsIo::new(Lazy::default(), [0; SNIFF_BYTES], 0);
        let bufs = [io::IoSlice::new(b"ccs"), io::IoSlice::new(b"alert")];
        let attempt = future::block_on(future::poll_fn(|cx| {
            Poll::Ready(Pin::new(&mut io).poll_write_vectored(cx, &bufs))
        }));
        assert!(matches!(attempt, Poll::Ready(Ok(8))), "{attempt:?}");
        future::block_on(io.flush()).unwrap();
        assert_eq!(io.get_ref().written, b"ccsalert");
    }

    #[test]
    fn sniffed_bytes_are_read_first() {
        let mut prefix = [0; SNIFF_BYTES];
        prefix[..3].copy_from_slice(b"abc");
        let inner = Lazy {
            input: b"def".to_vec(),
            ..Lazy::default()
        };
        let mut io = TlsIo::new(inner, prefix, 3);
        let mut out = Vec::new();
        future::block_on(io.read_to_end(&mut out)).unwrap();
        assert_eq!(out, b"abcdef");
    }
}
