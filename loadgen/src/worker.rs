//! One worker thread: a current-thread tokio runtime, pinned to a CPU, owning its
//! connections, its generator and its rate controller.
//!
//! The loop asks the [`RateController`] what to do, generates and sends requests on the
//! least recently used connection with room, and handles completions, connection events
//! and reconnects (and, with `--requests-per-connection`, replaces a connection once it carried
//! its share). Each request's latency is measured from its intended time in the
//! request's own task, so a busy loop cannot inflate it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

use crate::gen::Generator;
use crate::outcome::{Outcome, Reason, TransportError};
use crate::rate::{
    Clock, Decision, LatencyRecorder, Limits, MonotonicClock, Nanos, Pace, RateController, Ticket,
};
use crate::stats::{Counts, LiveStats};
use crate::transport::{breaks_connection, Sender, Transport};
use crate::verify::WorkerLedger;

/// What a worker is asked to do.
pub struct WorkerPlan {
    /// Worker index (also in span ids).
    pub index: u8,
    /// CPU to pin to.
    pub cpu: Option<usize>,
    /// Connections this worker opens.
    pub connections: usize,
    /// In-flight requests allowed per HTTP/2 connection (HTTP/1.1: always 1).
    pub per_connection: usize,
    /// Pacing for this worker's share of the load.
    pub pace: Pace,
    /// Requests this worker sends at most.
    pub count: Option<u64>,
    /// How long to send.
    pub duration: Option<Duration>,
    /// Wait this long after start before the first request (spreads workers' schedules).
    pub phase: Duration,
    /// Busy-wait for sub-millisecond send accuracy instead of sleeping.
    pub spin: bool,
    /// Replace a connection once it carried this many requests (`None`: never).
    pub requests_per_connection: Option<u64>,
}

/// What a worker hands back.
pub struct WorkerResult {
    /// Latency and send-lag histograms.
    pub recorder: LatencyRecorder,
    /// Totals.
    pub counts: Counts,
    /// What was acknowledged (for `--verify`).
    pub ledger: WorkerLedger,
    /// From the first scheduled send to the last completion.
    pub elapsed: Duration,
    /// Whether pinning to the requested CPU succeeded.
    pub pinned: Option<bool>,
}

enum Event {
    Done {
        conn: usize,
        generation: u64,
        ticket: Ticket,
        sent: Nanos,
        completed: Nanos,
        index: u64,
        items: u32,
        outcome: Outcome,
        sender: Option<Sender>,
    },
    Connected {
        conn: usize,
        generation: u64,
        sender: Sender,
    },
    ConnectFailed {
        conn: usize,
        generation: u64,
        error: String,
    },
    Closed {
        conn: usize,
        generation: u64,
    },
}

enum ConnState {
    Connecting,
    Ready(Sender),
    /// HTTP/1.1 with its one request in flight (the sender travels with it).
    Busy,
    Down,
}

struct Conn {
    state: ConnState,
    generation: u64,
    in_flight: usize,
    /// Requests started on this generation of the connection.
    started: u64,
    backoff: Duration,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest sleep between checks of the stop flag.
const MAX_IDLE: Duration = Duration::from_millis(100);

/// Pins the current thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

/// Runs one worker to completion on the current thread.
pub fn run_worker(
    plan: WorkerPlan,
    transport: Arc<Transport>,
    mut generator: Generator,
    live: Arc<LiveStats>,
    stop: Arc<AtomicBool>,
    ready: Arc<Barrier>,
) -> Result<WorkerResult> {
    let pinned = plan.cpu.map(pin_current_thread);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("failed to start worker runtime")?;
    let mut w = Worker {
        index: plan.index,
        per_connection: if transport.http2 {
            plan.per_connection.max(1)
        } else {
            1
        },
        transport,
        requests_per_connection: plan.requests_per_connection.unwrap_or(u64::MAX),
        conns: Vec::new(),
        next_conn: 0,
        in_flight: 0,
        counts: Counts::default(),
        recorder: LatencyRecorder::default(),
        ledger: WorkerLedger::default(),
        live,
        clock: MonotonicClock::new(Instant::now()),
        errors_logged: 0,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    rt.block_on(w.open_all(plan.connections, &tx, &mut rx));
    ready.wait();
    let result = rt.block_on(w.drive(&plan, &mut generator, &tx, &mut rx, &stop));
    result?;
    w.ledger.group_templates = generator.into_group_templates();
    let elapsed = Duration::from_nanos(w.clock.now());
    Ok(WorkerResult {
        recorder: w.recorder,
        counts: w.counts,
        ledger: w.ledger,
        elapsed,
        pinned,
    })
}

struct Worker {
    index: u8,
    transport: Arc<Transport>,
    per_connection: usize,
    requests_per_connection: u64,
    conns: Vec<Conn>,
    next_conn: usize,
    in_flight: usize,
    counts: Counts,
    recorder: LatencyRecorder,
    ledger: WorkerLedger,
    live: Arc<LiveStats>,
    clock: MonotonicClock,
    errors_logged: u32,
}

impl Worker {
    fn capacity(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| c.started < self.requests_per_connection)
            .filter(|c| match &c.state {
                ConnState::Ready(s) => !s.is_closed(),
                ConnState::Busy => true,
                _ => false,
            })
            .count()
            * self.per_connection
    }

    fn start_connect(&mut self, conn: usize, delay: Duration, tx: &mpsc::UnboundedSender<Event>) {
        let c = &mut self.conns[conn];
        c.generation += 1;
        c.started = 0;
        c.state = ConnState::Connecting;
        let generation = c.generation;
        let transport = self.transport.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let closed_tx = tx.clone();
            let on_close = move || {
                let _ = closed_tx.send(Event::Closed { conn, generation });
            };
            let event = match transport.connect(on_close).await {
                Ok(sender) => Event::Connected {
                    conn,
                    generation,
                    sender,
                },
                Err(e) => Event::ConnectFailed {
                    conn,
                    generation,
                    error: format!("{e:#}"),
                },
            };
            let _ = tx.send(event);
        });
    }

    /// Opens every connection and waits until each has connected or failed once.
    async fn open_all(
        &mut self,
        n: usize,
        tx: &mpsc::UnboundedSender<Event>,
        rx: &mut mpsc::UnboundedReceiver<Event>,
    ) {
        for i in 0..n {
            self.conns.push(Conn {
                state: ConnState::Down,
                generation: 0,
                in_flight: 0,
                started: 0,
                backoff: MIN_BACKOFF,
            });
            self.start_connect(i, Duration::ZERO, tx);
        }
        let mut pending = n;
        while pending > 0 {
            let Some(ev) = rx.recv().await else { break };
            if matches!(ev, Event::Connected { .. } | Event::ConnectFailed { .. }) {
                pending -= 1;
            }
            self.handle(ev, tx);
        }
    }

    fn reconnect_later(&mut self, conn: usize, tx: &mpsc::UnboundedSender<Event>) {
        let delay = self.conns[conn].backoff;
        self.conns[conn].backoff = (delay * 2).min(MAX_BACKOFF);
        self.conns[conn].state = ConnState::Down;
        self.start_connect(conn, delay, tx);
    }

    fn handle(&mut self, ev: Event, tx: &mpsc::UnboundedSender<Event>) {
        match ev {
            Event::Done {
                conn,
                generation,
                ticket,
                sent,
                completed,
                index,
                items,
                outcome,
                sender,
            } => {
                self.in_flight -= 1;
                self.live.in_flight.fetch_sub(1, Ordering::Relaxed);
                let c = &mut self.conns[conn];
                if c.generation == generation {
                    c.in_flight -= 1;
                }
                let latency = self.recorder.record(ticket, sent, completed);
                if let Ok(mut h) = self.live.interval.lock() {
                    h.saturating_record(latency);
                }
                self.counts.record(outcome, u64::from(items));
                match outcome {
                    Outcome::Accepted { rejected } => {
                        LiveStats::add(&self.live.accepted, 1);
                        LiveStats::add(
                            &self.live.items_acked,
                            u64::from(items).saturating_sub(rejected),
                        );
                        if rejected == 0 {
                            self.ledger.acked.insert(index);
                        }
                    }
                    Outcome::Refused(_) => LiveStats::add(&self.live.refused, 1),
                    Outcome::Failed(_) => LiveStats::add(&self.live.failed, 1),
                }
                if self.conns[conn].generation != generation {
                    return;
                }
                let c = &self.conns[conn];
                if c.started >= self.requests_per_connection && c.in_flight == 0 {
                    // It carried its share: closed (its sender dropped), a new one opened.
                    drop(sender);
                    self.conns[conn].state = ConnState::Down;
                    self.start_connect(conn, Duration::ZERO, tx);
                    return;
                }
                match sender {
                    // HTTP/1.1: the connection carried only this request. After a transport
                    // error or a timeout (an exchange cut short) it is unusable.
                    Some(sender) => {
                        let broken = breaks_connection(&outcome)
                            || outcome == Outcome::Failed(Reason::Timeout)
                            || sender.is_closed();
                        if broken {
                            self.reconnect_later(conn, tx);
                        } else {
                            self.conns[conn].state = ConnState::Ready(sender);
                        }
                    }
                    // HTTP/2: a failed stream says nothing about the connection; only a
                    // closed one is replaced (its driver also reports `Closed`).
                    None => {
                        if let ConnState::Ready(s) = &self.conns[conn].state {
                            if s.is_closed() {
                                self.reconnect_later(conn, tx);
                            }
                        }
                    }
                }
            }
            Event::Connected {
                conn,
                generation,
                sender,
            } => {
                let c = &mut self.conns[conn];
                if c.generation == generation {
                    c.state = ConnState::Ready(sender);
                    c.in_flight = 0;
                    c.backoff = MIN_BACKOFF;
                    self.counts.connects += 1;
                }
            }
            Event::ConnectFailed {
                conn,
                generation,
                error,
            } => {
                if self.conns[conn].generation == generation {
                    self.counts.connect_failures += 1;
                    if self.errors_logged < 3 {
                        self.errors_logged += 1;
                        eprintln!(
                            "shardtel-loadgen: worker {} connection {conn}: {error}",
                            self.index
                        );
                    }
                    self.reconnect_later(conn, tx);
                }
            }
            Event::Closed { conn, generation } => {
                let c = &self.conns[conn];
                if c.generation == generation
                    && matches!(c.state, ConnState::Ready(_) | ConnState::Busy)
                {
                    // Requests still in flight on it fail on their own.
                    self.conns[conn].in_flight = 0;
                    self.reconnect_later(conn, tx);
                }
            }
        }
    }

    /// Takes a sender from the next connection with room, round robin.
    fn pick(&mut self) -> Option<(usize, u64, Sender)> {
        let n = self.conns.len();
        for k in 0..n {
            let i = (self.next_conn + k) % n;
            let per = self.per_connection;
            let limit = self.requests_per_connection;
            let c = &mut self.conns[i];
            if c.in_flight >= per || c.started >= limit {
                continue;
            }
            let sender = match &c.state {
                ConnState::Ready(s) if s.is_closed() => continue,
                ConnState::Ready(s) => match s.try_clone() {
                    Some(clone) => clone,
                    None => match std::mem::replace(&mut c.state, ConnState::Busy) {
                        ConnState::Ready(s) => s,
                        _ => unreachable!("state was ready"),
                    },
                },
                _ => continue,
            };
            c.in_flight += 1;
            c.started += 1;
            self.next_conn = (i + 1) % n;
            return Some((i, c.generation, sender));
        }
        None
    }

    async fn drive(
        &mut self,
        plan: &WorkerPlan,
        generator: &mut Generator,
        tx: &mpsc::UnboundedSender<Event>,
        rx: &mut mpsc::UnboundedReceiver<Event>,
        stop: &AtomicBool,
    ) -> Result<()> {
        self.clock = MonotonicClock::new(Instant::now());
        let start = plan.phase.as_nanos() as Nanos;
        let limits = Limits {
            count: plan.count,
            deadline: plan.duration.map(|d| start + d.as_nanos() as Nanos),
        };
        let mut ctl = RateController::new(plan.pace, start, limits);
        let mut unreachable_since: Option<Instant> = None;
        loop {
            while let Ok(ev) = rx.try_recv() {
                self.handle(ev, tx);
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let now = self.clock.now();
            let capacity = self.capacity();
            if capacity == 0 {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > self.transport.timeout {
                    eprintln!(
                        "shardtel-loadgen: worker {}: no connection to {} for {:?}, giving up",
                        plan.index,
                        self.transport.endpoint.authority(),
                        self.transport.timeout
                    );
                    break;
                }
            } else {
                unreachable_since = None;
            }
            match ctl.decide(now, self.in_flight, capacity) {
                Decision::Send(ticket) => {
                    let req = generator.next_request()?;
                    debug_assert_eq!(req.index, ctl.issued() - 1);
                    self.ledger.requests_issued += 1;
                    self.counts.sent += 1;
                    self.counts.items_sent += u64::from(req.items);
                    LiveStats::add(&self.live.sent, 1);
                    LiveStats::add(&self.live.in_flight, 1);
                    self.in_flight += 1;
                    let Some((conn, generation, mut sender)) = self.pick() else {
                        // Unreachable while capacity() and pick() agree; count, don't crash.
                        let closed = Outcome::Failed(Reason::Transport(TransportError::Closed));
                        let now = self.clock.now();
                        let _ = tx.send(Event::Done {
                            conn: 0,
                            generation: u64::MAX,
                            ticket,
                            sent: now,
                            completed: now,
                            index: req.index,
                            items: req.items,
                            outcome: closed,
                            sender: None,
                        });
                        continue;
                    };
                    let transport = self.transport.clone();
                    let tx = tx.clone();
                    let clock = self.clock;
                    tokio::spawn(async move {
                        let sent = clock.now();
                        let outcome = transport.execute(&mut sender, req.body).await;
                        let completed = clock.now();
                        let sender = match sender {
                            Sender::Http1(_) => Some(sender),
                            Sender::Http2(_) => None,
                        };
                        let _ = tx.send(Event::Done {
                            conn,
                            generation,
                            ticket,
                            sent,
                            completed,
                            index: req.index,
                            items: req.items,
                            outcome,
                            sender,
                        });
                    });
                    tokio::task::yield_now().await;
                }
                Decision::WaitUntil(t) => {
                    let wait = Duration::from_nanos(t - now);
                    if plan.spin && wait < Duration::from_millis(2) {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    let until = self.clock.instant_at(t).min(Instant::now() + MAX_IDLE);
                    tokio::select! {
                        ev = rx.recv() => if let Some(ev) = ev { self.handle(ev, tx) },
                        _ = tokio::time::sleep_until(until.into()) => {}
                    }
                }
                Decision::WaitForCompletion => {
                    tokio::select! {
                        ev = rx.recv() => if let Some(ev) = ev { self.handle(ev, tx) },
                        _ = tokio::time::sleep(MAX_IDLE) => {}
                    }
                }
                Decision::Done => break,
            }
        }
        self.counts.behind_schedule = ctl.behind_schedule(self.clock.now());
        // Let what is in flight finish (each request has its own timeout).
        let drain_deadline = Instant::now() + self.transport.timeout + Duration::from_secs(1);
        while self.in_flight > 0 {
            let left = drain_deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(ev)) => self.handle(ev, tx),
                _ => break,
            }
        }
        if self.in_flight > 0 {
            eprintln!(
                "shardtel-loadgen: worker {}: {} requests still in flight at exit",
                plan.index, self.in_flight
            );
        }
        Ok(())
    }
}
