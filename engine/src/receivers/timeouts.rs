//! Connection timeouts of the HTTP receivers (`otlp`, `zipkin`, `jaeger`): every served
//! connection has a [`ConnectionClock`] and one watchdog (a timer per connection, not per
//! request, run by [`drive`]) that closes it when the client is too slow or stays away, and
//! fails a request whose body does not arrive in time. Reads from the client never extend a
//! deadline: a client that trickles a request head one byte at a time is closed at the head
//! deadline all the same.
//!
//! - **Head** (`read_header_timeout`; the other receivers have no such key and use
//!   [`Timeouts::of_listener`]): an HTTP/1.1 request head must arrive within it, counted
//!   from its first byte (or from the accept, for a connection that sends nothing). An HTTP/2
//!   connection must send its first bytes (the HTTP/2 preface) within it. Then the connection
//!   is closed.
//! - **Body** (`read_timeout`): a request's whole body must arrive within it, counted from the
//!   moment its head was read. Then the request fails (HTTP 408 and the connection is closed;
//!   gRPC `DEADLINE_EXCEEDED` on that stream only) and what it was charged is given back.
//! - **Idle** (`idle_timeout`): a connection without a request in progress is closed after it
//!   (HTTP/1.1 at once, HTTP/2 with `GOAWAY`).
//!
//! Which of HTTP/1.1 and HTTP/2 a connection speaks ([`Wire`]) is what it negotiated, not its
//! listener's: an OTLP/HTTP client over TLS that chose `h2` by ALPN has an HTTP/2 clock.
//!
//! Besides these, HTTP/2 connections send keep-alive pings ([`h2_keep_alive`]) through hyper's
//! timer, which runs on glommio's ([`GlommioTimer`]), and every accepted socket has TCP
//! keep-alive ([`set_tcp_keepalive`]). A closed connection frees its `max_connections` slot.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};

use shardtel_config::{ListenerLimits, OtlpReceiverConfig};

use crate::receivers::intake::Intake;
use crate::receivers::security::Connection;

/// TCP keep-alive: probes start after this long without traffic.
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// TCP keep-alive: time between probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// TCP keep-alive: unanswered probes before the kernel drops the connection.
pub const TCP_KEEPALIVE_PROBES: u32 = 3;

/// The request head deadline of the `zipkin` and `jaeger` listeners, which have no
/// `read_header_timeout` key: this, or `read_timeout` when shorter.
pub const LISTENER_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection's timeouts (`[receivers.otlp]`'s, or another receiver's `limits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// `read_header_timeout`.
    pub read_header: Duration,
    /// `read_timeout`: a whole request body.
    pub read: Duration,
    /// `idle_timeout`.
    pub idle: Duration,
}

impl Timeouts {
    /// The timeouts `otlp` configures.
    pub fn of(otlp: &OtlpReceiverConfig) -> Timeouts {
        Timeouts {
            read_header: otlp.read_header_timeout,
            read: otlp.read_timeout,
            idle: otlp.idle_timeout,
        }
    }

    /// The timeouts of a `zipkin` or `jaeger` listener: `read_timeout` and `idle_timeout` as
    /// configured, and for the request head (which they have no key for)
    /// [`LISTENER_HEAD_TIMEOUT`], or `read_timeout` when shorter.
    pub fn of_listener(limits: &ListenerLimits) -> Timeouts {
        Timeouts {
            read_header: limits.read_timeout.min(LISTENER_HEAD_TIMEOUT),
            read: limits.read_timeout,
            idle: limits.idle_timeout,
        }
    }

    /// The shortest of them: how long the watchdog sleeps at most, so that no deadline set
    /// while it sleeps is earlier than its wake-up (and nothing has to wake it).
    fn shortest(&self) -> Duration {
        self.read_header.min(self.read).min(self.idle)
    }
}

/// HTTP/2 keep-alive pings: (interval, timeout). A ping is sent after half the idle timeout
/// without a frame from the client; one not answered within the header timeout closes the
/// connection (a client that cannot answer a ping in that time is as gone as one that cannot
/// send a request head).
pub fn h2_keep_alive(timeouts: &Timeouts) -> (Duration, Duration) {
    (timeouts.idle / 2, timeouts.read_header)
}

/// Turns on TCP keep-alive for an accepted socket (see the `TCP_KEEPALIVE_*` constants), so
/// that a peer that vanished is noticed even while its connection waits.
pub fn set_tcp_keepalive(stream: &impl AsRawFd) -> nix::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    #[allow(unsafe_code)]
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    setsockopt(&fd, sockopt::KeepAlive, &true)?;
    setsockopt(
        &fd,
        sockopt::TcpKeepIdle,
        &(TCP_KEEPALIVE_IDLE.as_secs() as u32),
    )?;
    setsockopt(
        &fd,
        sockopt::TcpKeepInterval,
        &(TCP_KEEPALIVE_INTERVAL.as_secs() as u32),
    )?;
    setsockopt(&fd, sockopt::TcpKeepCount, &TCP_KEEPALIVE_PROBES)
}

/// Why the watchdog closed a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No request head (HTTP/1.1) or no first bytes (HTTP/2) within `read_header_timeout`.
    Head,
    /// No request in progress for `idle_timeout`.
    Idle,
}

/// What a connection speaks, as its clock sees it: what its client negotiated (ALPN over TLS,
/// or its listener's protocol in plaintext), not which listener accepted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// HTTP/1.1: every request has a head, whose first byte starts the head deadline.
    Http1,
    /// HTTP/2: the preface must arrive by the head deadline; after it only the idle timeout
    /// applies between streams (pings, `WINDOW_UPDATE` and the like start nothing), and an
    /// idle connection gets a `GOAWAY`.
    H2,
}

impl Wire {
    /// HTTP/2 when `h2` (a gRPC listener, or `h2` chosen by ALPN), else HTTP/1.1.
    pub fn of(h2: bool) -> Wire {
        if h2 {
            Wire::H2
        } else {
            Wire::Http1
        }
    }
}

/// What one connection is doing, as its timeouts see it. `!Send`: it lives on its core.
pub struct ConnectionClock {
    timeouts: Timeouts,
    wire: Wire,
    /// Requests whose handler runs (HTTP/1.1: at most one).
    active: Cell<usize>,
    /// Since when the connection has had no request in progress.
    idle_since: Cell<Instant>,
    /// Since when a request head (HTTP/1.1), or the first bytes (HTTP/2), have been awaited:
    /// set at the accept and by a request head's first byte, cleared when the request starts.
    head_since: Cell<Option<Instant>>,
    /// The bodies being read (at most `max_concurrent_streams`): a body leaves when it is done
    /// or expired.
    bodies: RefCell<Vec<Rc<BodyDeadline>>>,
}

impl ConnectionClock {
    /// The clock of a connection speaking `wire` accepted now.
    pub fn new(timeouts: Timeouts, wire: Wire) -> Rc<ConnectionClock> {
        let now = Instant::now();
        Rc::new(ConnectionClock {
            timeouts,
            wire,
            active: Cell::new(0),
            idle_since: Cell::new(now),
            head_since: Cell::new(Some(now)),
            bodies: RefCell::new(Vec::new()),
        })
    }

    /// True for an HTTP/2 connection.
    pub fn speaks_h2(&self) -> bool {
        self.wire == Wire::H2
    }

    /// How long an expired HTTP/2 connection gets to see its `GOAWAY` before it is dropped.
    pub fn grace(&self) -> Duration {
        self.timeouts.read_header
    }

    /// The connection's timeouts.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// Bytes arrived from the client.
    fn received(&self) {
        match self.wire {
            // The first byte of a request head while none is in progress starts its clock.
            Wire::Http1 => {
                if self.active.get() == 0 && self.head_since.get().is_none() {
                    self.head_since.set(Some(Instant::now()));
                }
            }
            // The preface arrived; from now on only the idle timeout applies between streams.
            Wire::H2 => self.head_since.set(None),
        }
    }

    /// A request's head was read and its handler starts: its body must arrive by
    /// `read_timeout` from now. The returned guard ends the request when dropped.
    pub fn request(self: &Rc<Self>) -> RequestClock {
        self.active.set(self.active.get() + 1);
        self.head_since.set(None);
        let body = Rc::new(BodyDeadline {
            at: Instant::now() + self.timeouts.read,
            state: Cell::new(BodyState::Reading),
            waker: Cell::new(None),
        });
        self.bodies.borrow_mut().push(body.clone());
        RequestClock {
            clock: self.clone(),
            body,
        }
    }

    /// Expires what is due at `now`: bodies past their deadline fail (their requests are
    /// woken); the connection itself expires when it waited too long for a head or idled.
    fn check(&self, now: Instant) -> Option<Expiry> {
        self.bodies.borrow_mut().retain(|body| {
            if body.at > now {
                return true;
            }
            body.state.set(BodyState::Expired);
            if let Some(waker) = body.waker.take() {
                waker.wake();
            }
            false
        });
        if self.active.get() > 0 {
            return None;
        }
        match self.head_since.get() {
            Some(since) if since + self.timeouts.read_header <= now => Some(Expiry::Head),
            Some(_) => None,
            None if self.idle_since.get() + self.timeouts.idle <= now => Some(Expiry::Idle),
            None => None,
        }
    }

    /// The earliest deadline that is running.
    fn next_deadline(&self) -> Option<Instant> {
        let body = self.bodies.borrow().iter().map(|b| b.at).min();
        let connection = (self.active.get() == 0).then(|| match self.head_since.get() {
            Some(since) => since + self.timeouts.read_header,
            None => self.idle_since.get() + self.timeouts.idle,
        });
        match (body, connection) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Watches the connection: fails bodies that are late, and returns when the connection
    /// itself expired (the caller closes it). Sleeps at most the shortest timeout at a time, so
    /// that a deadline set meanwhile is never missed and requests never wake it.
    pub async fn watch(&self) -> Expiry {
        loop {
            let now = Instant::now();
            if let Some(expiry) = self.check(now) {
                return expiry;
            }
            let cap = now + self.timeouts.shortest();
            let wake = self.next_deadline().map_or(cap, |d| d.min(cap));
            glommio::timer::sleep(wake.saturating_duration_since(now)).await;
        }
    }
}

/// Runs a served connection until it ends, its clock expires it (see the module docs), or the core
/// drains. Draining asks the connection to finish (`graceful`: HTTP/2 GOAWAY, HTTP/1.1 close
/// after the current response) and awaits it, still under its timeouts. A connection that
/// waited too long for a request head is dropped (closed at once); an idle one too, except
/// that HTTP/2 first gets a `GOAWAY` and `read_header_timeout` to see it.
pub async fn drive<C: Future>(
    intake: &Intake,
    clock: &ConnectionClock,
    mut conn: Pin<&mut C>,
    graceful: impl FnOnce(Pin<&mut C>),
) {
    /// How the connection's first phase ended.
    enum Ended {
        Closed,
        Draining,
        Expired(Expiry),
    }
    let ended = futures_lite::future::or(
        async {
            let _ = conn.as_mut().await;
            Ended::Closed
        },
        futures_lite::future::or(
            async {
                intake.wait_draining().await;
                Ended::Draining
            },
            async { Ended::Expired(clock.watch().await) },
        ),
    )
    .await;
    match ended {
        Ended::Closed | Ended::Expired(Expiry::Head) => {}
        Ended::Draining => {
            graceful(conn.as_mut());
            futures_lite::future::or(
                async {
                    let _ = conn.await;
                },
                async {
                    clock.watch().await;
                },
            )
            .await;
        }
        Ended::Expired(Expiry::Idle) => {
            if clock.speaks_h2() {
                graceful(conn.as_mut());
                let _ = glommio::timer::timeout(clock.grace(), async {
                    let _ = conn.await;
                    Ok(())
                })
                .await;
            }
        }
    }
}

/// The state of one body's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyState {
    Reading,
    Done,
    Expired,
}

/// When a request's body must have arrived.
struct BodyDeadline {
    at: Instant,
    state: Cell<BodyState>,
    waker: Cell<Option<Waker>>,
}

/// One request of a connection: counts it as in progress until dropped, and bounds the time
/// its body may take.
pub struct RequestClock {
    clock: Rc<ConnectionClock>,
    body: Rc<BodyDeadline>,
}

impl RequestClock {
    /// Resolves when the body's deadline passed (the watchdog decides); pending forever
    /// after [`RequestClock::body_done`].
    pub fn body_expired(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| match self.body.state.get() {
            BodyState::Expired => Poll::Ready(()),
            BodyState::Reading => {
                self.body.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
            BodyState::Done => Poll::Pending,
        })
    }

    /// How long the body may take (`read_timeout`).
    pub fn timeout(&self) -> Duration {
        self.clock.timeouts.read
    }

    /// Reads and drops up to `max` more bytes of `body` by the body's deadline, so that an
    /// error response to a request whose body is not used is not lost to a TCP reset when the
    /// connection closes with unread data. Returns true if the body ended (false: more than
    /// `max` bytes, the deadline passed, or the connection failed).
    pub async fn discard_body(&self, body: &mut hyper::body::Incoming, max: usize) -> bool {
        let ended = futures_lite::future::or(super::listener::discard_body(body, max), async {
            self.body_expired().await;
            false
        })
        .await;
        self.body_done();
        ended
    }

    /// The body arrived (or the request no longer reads it).
    pub fn body_done(&self) {
        if self.body.state.get() == BodyState::Reading {
            self.body.state.set(BodyState::Done);
            self.body.waker.take();
            let mut bodies = self.clock.bodies.borrow_mut();
            if let Some(i) = bodies.iter().position(|b| Rc::ptr_eq(b, &self.body)) {
                bodies.swap_remove(i);
            }
        }
    }
}

impl Drop for RequestClock {
    fn drop(&mut self) {
        self.body_done();
        let active = self.clock.active.get() - 1;
        self.clock.active.set(active);
        if active == 0 {
            self.clock.idle_since.set(Instant::now());
        }
    }
}

/// A connection's socket seen through hyper's `rt::Read`/`rt::Write` (as
/// `shardtel_sinks::net::GlommioIo`), telling its clock when bytes arrive.
pub struct WatchedIo {
    stream: Connection,
    clock: Rc<ConnectionClock>,
}

impl WatchedIo {
    /// `stream` (plaintext or TLS; `TCP_NODELAY` was set when it was secured), watched by
    /// `clock`.
    pub fn new(stream: Connection, clock: Rc<ConnectionClock>) -> WatchedIo {
        WatchedIo { stream, clock }
    }
}

impl hyper::rt::Read for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        // Zeroes only what hyper never initialised: a reused buffer costs no memset.
        let dst = buf.initialize_unfilled();
        match Pin::new(&mut this.stream).poll_read(cx, dst) {
            Poll::Ready(Ok(n)) => {
                #[allow(unsafe_code)]
                // SAFETY: the read wrote `n <= dst.len()` bytes into the initialised, unfilled
                // part of the buffer.
                unsafe {
                    buf.advance(n)
                };
                if n > 0 {
                    this.clock.received();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl hyper::rt::Write for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

/// hyper's timer over glommio's: sleeps are glommio timers of the core that polls them.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlommioTimer;

impl hyper::rt::Timer for GlommioTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(GlommioSleep::new(glommio::timer::Timer::new(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep(deadline.saturating_duration_since(Instant::now()))
    }
}

/// A glommio timer that hyper may hold: hyper asks `Send + Sync` of every sleep, while a
/// glommio timer belongs to its core. The connections that hold these sleeps are tasks of the
/// core that made them and never leave it; the sleep checks that on every poll, and one dropped
/// on another thread is leaked rather than touched.
struct GlommioSleep {
    timer: ManuallyDrop<glommio::timer::Timer>,
    thread: ThreadId,
}

impl GlommioSleep {
    fn new(timer: glommio::timer::Timer) -> Self {
        GlommioSleep {
            timer: ManuallyDrop::new(timer),
            thread: std::thread::current().id(),
        }
    }
}

// SAFETY: the timer (an `Rc` inside) is only used on the thread that created it: `poll`
// asserts that, and `drop` leaks it on any other thread. `&GlommioSleep` gives no access to it.
#[allow(unsafe_code)]
unsafe impl Send for GlommioSleep {}
#[allow(unsafe_code)]
unsafe impl Sync for GlommioSleep {}

impl Future for GlommioSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        assert_eq!(
            std::thread::current().id(),
            self.thread,
            "a glommio timer is polled on its own core only"
        );
        Pin::new(&mut *self.timer).poll(cx).map(drop)
    }
}

impl hyper::rt::Sleep for GlommioSleep {}

impl Drop for GlommioSleep {
    fn drop(&mut self) {
        if std::thread::current().id() == self.thread {
            #[allow(unsafe_code)]
            // SAFETY: dropped once, here, on the thread that created it.
            unsafe {
                ManuallyDrop::drop(&mut self.timer)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    const TIMEOUTS: Timeouts = Timeouts {
        read_header: Duration::from_secs(10),
        read: Duration::from_secs(30),
        idle: Duration::from_secs(60),
    };
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn http_heads_bodies_and_idle_connections_expire_on_time() {
        let t0 = Instant::now();
        let clock = ConnectionClock::new(TIMEOUTS, Wire::Http1);
        // A fresh connection must send a head.
        assert_eq!(clock.check(t0 + TIMEOUTS.read_header - MS), None);
        let head = clock.next_deadline().unwrap() - t0;
        assert!(head >= TIMEOUTS.read_header && head < TIMEOUTS.read_header + MS);
        assert_eq!(
            clock.check(t0 + TIMEOUTS.read_header + MS),
            Some(Expiry::Head)
        );

        // A request in progress: no head or idle deadline, only its body's.
        let request = clock.request();
        let t1 = Instant::now();
        assert_eq!(clock.check(t1 + TIMEOUTS.idle + MS), None);
        assert!(block_on(poll_once(request.body_expired())).is_some());
        drop(request);

        // Its body arrived in time: nothing expires while it is processed.
        let request = clock.request();
        request.body_done();
        let t2 = Instant::now();
        assert_eq!(clock.check(t2 + TIMEOUTS.read + MS), None);
        assert!(block_on(poll_once(request.body_expired())).is_none());
        drop(request);

        // Idle after it; a first byte starts the next head's clock.
        let t3 = Instant::now();
        assert_eq!(clock.check(t3 + TIMEOUTS.idle - MS), None);
        clock.received();
        assert!(clock.next_deadline().unwrap() - t3 < TIMEOUTS.read_header + MS);
        assert_eq!(
            clock.check(Instant::now() + TIMEOUTS.read_header + MS),
            Some(Expiry::Head)
        );
    }

    #[test]
    fn a_body_that_is_late_fails_its_request_only() {
        let clock = ConnectionClock::new(TIMEOUTS, Wire::H2);
        clock.received();
        let slow = clock.request();
        let quick = clock.request();
        quick.body_done();
        let t = Instant::now();
        assert_eq!(
            clock.check(t + TIMEOUTS.read + MS),
            None,
            "streams are open"
        );
        assert!(block_on(poll_once(slow.body_expired())).is_some());
        assert!(block_on(poll_once(quick.body_expired())).is_none());
        drop((slow, quick));
        assert!(clock.bodies.borrow().is_empty());
        // gRPC: after the preface only the idle timeout applies between streams.
        let idle = Instant::now();
        assert_eq!(clock.check(idle + TIMEOUTS.read_header + MS), None);
        assert_eq!(clock.check(idle + TIMEOUTS.idle + MS), Some(Expiry::Idle));
    }

    #[test]
    fn a_grpc_connection_that_sends_nothing_expires_at_the_header_timeout() {
        let t0 = Instant::now();
        let clock = ConnectionClock::new(TIMEOUTS, Wire::H2);
        assert_eq!(
            clock.check(t0 + TIMEOUTS.read_header + MS),
            Some(Expiry::Head)
        );
    }

    #[test]
    fn a_client_that_negotiated_h2_has_an_h2_clock_whatever_its_listener() {
        // An OTLP/HTTP client over TLS that chose h2 (Wire::of(negotiated_h2)): its pings and
        // WINDOW_UPDATEs after the preface start no head deadline, and idling ends in GOAWAY.
        let clock = ConnectionClock::new(TIMEOUTS, Wire::of(true));
        assert!(clock.speaks_h2());
        clock.received();
        drop(clock.request());
        clock.received();
        let idle = Instant::now();
        assert_eq!(clock.check(idle + TIMEOUTS.read_header + MS), None);
        assert_eq!(clock.check(idle + TIMEOUTS.idle + MS), Some(Expiry::Idle));
        // The same bytes on an HTTP/1.1 clock would have been a request head's first.
        let clock = ConnectionClock::new(TIMEOUTS, Wire::of(false));
        assert!(!clock.speaks_h2());
        drop(clock.request());
        clock.received();
        assert_eq!(
            clock.check(Instant::now() + TIMEOUTS.read_header + MS),
            Some(Expiry::Head)
        );
    }

    #[test]
    fn a_listener_without_read_header_timeout_bounds_heads_by_read_timeout_or_10s() {
        let mut limits = ListenerLimits::with_size(1 << 20);
        limits.read_timeout = Duration::from_secs(30);
        limits.idle_timeout = Duration::from_secs(60);
        let t = Timeouts::of_listener(&limits);
        assert_eq!(t.read_header, LISTENER_HEAD_TIMEOUT);
        assert_eq!((t.read, t.idle), (limits.read_timeout, limits.idle_timeout));
        limits.read_timeout = Duration::from_secs(2);
        assert_eq!(
            Timeouts::of_listener(&limits).read_header,
            Duration::from_secs(2)
        );
    }
}
