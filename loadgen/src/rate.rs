//! The rate controller: when each request is due, whether it may go now, and latency
//! measured from the *intended* send time.
//!
//! Open loop: request `i` is due at `start + i / rate`, whatever happened to earlier
//! requests. Sends are scheduled by the clock, never by completions. If the target
//! stalls and the in-flight cap is reached, due requests wait; as soon as capacity frees
//! up the backlog goes out as fast as allowed, and each request's latency still counts
//! from its scheduled time, so the wait shows in the percentiles (no coordinated
//! omission). Closed loop: a request is sent whenever fewer than the allowed number are
//! in flight; its intended time is its send time.
//!
//! The controller is a pure state machine over an injected [`Clock`] reading, so the
//! tests below drive it with a simulated clock and target, deterministically.

use std::time::Instant;

use hdrhistogram::Histogram;

/// Nanoseconds since the clock's origin.
pub type Nanos = u64;

/// A monotonic time source.
pub trait Clock {
    /// Now, in nanoseconds since the clock's origin.
    fn now(&self) -> Nanos;
}

/// The real clock: `Instant` relative to an origin.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose zero is `origin`.
    pub fn new(origin: Instant) -> Self {
        Self { origin }
    }

    /// The instant of reading `at`.
    pub fn instant_at(&self, at: Nanos) -> Instant {
        self.origin + std::time::Duration::from_nanos(at)
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Nanos {
        self.origin.elapsed().as_nanos() as Nanos
    }
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// Open loop: one request every `interval_ns` nanoseconds.
    Open {
        /// Nanoseconds between consecutive intended send times.
        interval_ns: f64,
    },
    /// Closed loop: send whenever in-flight is below capacity.
    Closed,
}

impl Pace {
    /// Open loop at `requests_per_second`.
    pub fn open(requests_per_second: f64) -> Self {
        Pace::Open {
            interval_ns: 1e9 / requests_per_second,
        }
    }
}

/// When to stop scheduling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Stop after this many requests.
    pub count: Option<u64>,
    /// Schedule nothing at or after this time.
    pub deadline: Option<Nanos>,
}

/// One request the controller released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Sequential index (0, 1, 2, ...).
    pub index: u64,
    /// When the request was due: the schedule (open loop) or the send time (closed).
    pub intended: Nanos,
}

/// What the caller should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send this request now.
    Send(Ticket),
    /// Nothing is due before this time; come back then (or on a completion).
    WaitUntil(Nanos),
    /// Due, but in-flight is at capacity: come back on a completion.
    WaitForCompletion,
    /// The run's schedule is over (count or deadline reached).
    Done,
}

/// Decides, request by request, when to send.
#[derive(Debug, Clone)]
pub struct RateController {
    pace: Pace,
    start: Nanos,
    limits: Limits,
    issued: u64,
}

impl RateController {
    /// A controller whose first request is due at `start`.
    pub fn new(pace: Pace, start: Nanos, limits: Limits) -> Self {
        Self {
            pace,
            start,
            limits,
            issued: 0,
        }
    }

    /// Requests released so far.
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// The scheduled time of request `index` (open loop), else `start`.
    pub fn scheduled(&self, index: u64) -> Nanos {
        match self.pace {
            Pace::Open { interval_ns } => self.start + (index as f64 * interval_ns) as Nanos,
            Pace::Closed => self.start,
        }
    }

    /// Requests due at `now` but not yet released (open loop; 0 for closed loop).
    pub fn backlog(&self, now: Nanos) -> u64 {
        match self.pace {
            Pace::Open { interval_ns } if now >= self.start => {
                let due = ((now - self.start) as f64 / interval_ns) as u64 + 1;
                let due = self.limits.count.map_or(due, |c| due.min(c));
                due.saturating_sub(self.issued)
            }
            _ => 0,
        }
    }

    /// Requests the schedule asked for before `now` (and before the deadline) that were
    /// never released: how far behind the run ended. Always 0 for closed loop.
    pub fn behind_schedule(&self, now: Nanos) -> u64 {
        let end = self
            .limits
            .deadline
            .map_or(now, |d| now.min(d.saturating_sub(1)));
        self.backlog(end)
    }

    /// The next step, given the time and how many requests are in flight out of
    /// `capacity` allowed.
    pub fn decide(&mut self, now: Nanos, in_flight: usize, capacity: usize) -> Decision {
        if self.limits.count.is_some_and(|c| self.issued >= c) {
            return Decision::Done;
        }
        if self.limits.deadline.is_some_and(|d| now >= d) {
            // The run is over; whatever is still due is reported as behind schedule.
            return Decision::Done;
        }
        let intended = match self.pace {
            Pace::Open { .. } => {
                let due = self.scheduled(self.issued);
                if self.limits.deadline.is_some_and(|d| due >= d) {
                    return Decision::Done;
                }
                if due > now {
                    return Decision::WaitUntil(due);
                }
                due
            }
            Pace::Closed => now,
        };
        if in_flight >= capacity {
            return Decision::WaitForCompletion;
        }
        let ticket = Ticket {
            index: self.issued,
            intended,
        };
        self.issued += 1;
        Decision::Send(ticket)
    }
}

/// The highest latency a histogram tracks: one hour, in microseconds.
pub const MAX_TRACKED_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds (1 µs to 1 h, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3).expect("valid histogram bounds")
}

/// Latency of every request from its intended time, and how late it was sent.
#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    /// Completion minus intended send time, µs.
    pub latency: Histogram<u64>,
    /// Actual minus intended send time, µs: the generator's own lateness.
    pub send_lag: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        Self {
            latency: new_histogram(),
            send_lag: new_histogram(),
        }
    }
}

impl LatencyRecorder {
    /// Records one finished request.
    pub fn record(&mut self, ticket: Ticket, sent: Nanos, completed: Nanos) -> u64 {
        let latency = completed.saturating_sub(ticket.intended) / 1_000;
        self.latency.saturating_record(latency);
        self.send_lag
            .saturating_record(sent.saturating_sub(ticket.intended) / 1_000);
        latency
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    const MS: u64 = 1_000_000;
    const US: u64 = 1_000;

    /// A clock the test moves by hand.
    struct ManualClock(Cell<Nanos>);

    impl Clock for ManualClock {
        fn now(&self) -> Nanos {
            self.0.get()
        }
    }

    /// A FIFO target serving one request at a time; during a stall it serves nothing.
    struct SimTarget {
        service: Nanos,
        stall: Option<(Nanos, Nanos)>,
        free_at: Nanos,
    }

    impl SimTarget {
        fn completion_for(&mut self, arrival: Nanos) -> Nanos {
            let mut start = arrival.max(self.free_at);
            if let Some((from, to)) = self.stall {
                if start >= from && start < to {
                    start = to;
                }
            }
            self.free_at = start + self.service;
            self.free_at
        }
    }

    #[derive(Debug, Clone, Copy)]
    struct Sent {
        ticket: Ticket,
        sent: Nanos,
        completed: Nanos,
    }

    /// Runs a controller against a simulated target the way a worker does.
    fn simulate(
        mut ctl: RateController,
        target: &mut SimTarget,
        capacity: usize,
    ) -> (Vec<Sent>, LatencyRecorder) {
        let clock = ManualClock(Cell::new(0));
        let mut in_flight: BinaryHeap<Reverse<(Nanos, u64)>> = BinaryHeap::new();
        let mut sent: Vec<Sent> = Vec::new();
        let mut rec = LatencyRecorder::default();
        let mut complete_until = |now: Nanos,
                                  in_flight: &mut BinaryHeap<Reverse<(Nanos, u64)>>,
                                  sent: &mut Vec<Sent>| {
            while let Some(&Reverse((at, idx))) = in_flight.peek() {
                if at > now {
                    break;
                }
                in_flight.pop();
                let s = sent[idx as usize];
                rec.record(s.ticket, s.sent, s.completed);
            }
        };
        loop {
            let now = clock.now();
            complete_until(now, &mut in_flight, &mut sent);
            match ctl.decide(now, in_flight.len(), capacity) {
                Decision::Send(ticket) => {
                    assert_eq!(ticket.index, sent.len() as u64);
                    let completed = target.completion_for(now);
                    in_flight.push(Reverse((completed, ticket.index)));
                    sent.push(Sent {
                        ticket,
                        sent: now,
                        completed,
                    });
                }
                Decision::WaitUntil(t) => {
                    assert!(t > now);
                    let next = in_flight.peek().map_or(t, |r| r.0 .0.min(t));
                    clock.0.set(next);
                }
                Decision::WaitForCompletion => {
                    let next = in_flight
                        .peek()
                        .expect("waiting with nothing in flight")
                        .0
                         .0;
                    clock.0.set(next.max(now));
                }
                Decision::Done => {
                    complete_until(u64::MAX, &mut in_flight, &mut sent);
                    return (sent, rec);
                }
            }
        }
    }

    fn open(rate: f64, secs: u64) -> RateController {
        RateController::new(
            Pace::open(rate),
            0,
            Limits {
                count: None,
                deadline: Some(secs * 1_000 * MS),
            },
        )
    }

    #[test]
    fn fast_target_every_request_goes_out_on_schedule() {
        let mut target = SimTarget {
            service: 100 * US,
            stall: None,
            free_at: 0,
        };
        let (sent, rec) = simulate(open(1_000.0, 1), &mut target, 8);
        assert_eq!(sent.len(), 1_000);
        for (i, s) in sent.iter().enumerate() {
            assert_eq!(s.ticket.intended, i as u64 * MS);
            assert_eq!(s.sent, s.ticket.intended, "request {i} sent late");
        }
        assert_eq!(rec.latency.len(), 1_000);
        assert_eq!(rec.latency.max(), rec.latency.min());
        assert!(rec.latency.equivalent(rec.latency.max(), 100));
        assert_eq!(rec.send_lag.max(), 0);
    }

    #[test]
    fn slow_target_does_not_slow_the_schedule() {
        // The target needs 2 ms per request, the schedule offers one every 1 ms:
        // completions fall further behind, sends must not.
        let mut target = SimTarget {
            service: 2 * MS,
            stall: None,
            free_at: 0,
        };
        let (sent, rec) = simulate(open(1_000.0, 1), &mut target, 10_000);
        assert_eq!(sent.len(), 1_000);
        for (i, s) in sent.iter().enumerate() {
            assert_eq!(
                s.sent,
                i as u64 * MS,
                "request {i} was not sent on schedule"
            );
            // Queued behind i earlier requests: (i + 1) x 2 ms after time 0.
            assert_eq!(s.completed - s.ticket.intended, (i as u64 + 2) * MS);
        }
        // The last request waited about a second: the histogram shows it.
        assert!(rec.latency.max() >= 999_000, "max {}", rec.latency.max());
        assert_eq!(rec.send_lag.max(), 0);
    }

    #[test]
    fn stall_backlog_goes_out_fast_and_latency_includes_the_wait() {
        // 1000 req/s for 1 s, at most 4 in flight; the target stalls from 200 to 700 ms.
        let (stall_from, stall_to) = (200 * MS, 700 * MS);
        let mut target = SimTarget {
            service: 100 * US,
            stall: Some((stall_from, stall_to)),
            free_at: 0,
        };
        let (sent, rec) = simulate(open(1_000.0, 1), &mut target, 4);
        // Nothing the schedule asked for was skipped.
        assert_eq!(sent.len(), 1_000);
        let mut checked = 0;
        for s in &sent {
            let intended = s.ticket.intended;
            if intended > stall_from + MS && intended < stall_to {
                checked += 1;
                let recorded = s.completed - intended;
                let naive = s.completed - s.sent;
                // The recorded latency holds the whole wait from the schedule...
                assert!(
                    recorded >= stall_to - intended,
                    "request due at {intended} recorded {recorded} ns"
                );
                // ...while a send-time (closed-loop) measurement hides it, unless the
                // request was one of the 4 stuck in flight during the stall.
                if s.sent >= stall_to {
                    assert!(naive < 100 * MS, "naive latency {naive}");
                }
                // The backlog went out as fast as capacity allowed: right after the stall,
                // at the target's service rate, not at the schedule's pace.
                assert!(s.sent >= stall_to || s.sent <= stall_from + 5 * MS);
                assert!(s.sent < stall_to + 60 * MS, "backlog sent at {}", s.sent);
            }
        }
        assert!(
            checked > 450,
            "{checked} requests were due during the stall"
        );
        // Requests due after the backlog drained are on time again.
        let late = sent
            .iter()
            .filter(|s| s.ticket.intended > 800 * MS)
            .all(|s| s.sent == s.ticket.intended);
        assert!(late);
        // The histogram reflects the stall: p70 of the run is in the hundreds of ms.
        assert!(rec.latency.value_at_quantile(0.7) > 100_000);
        assert!(rec.latency.max() >= 499_000);
        assert!(rec.send_lag.max() >= 450_000);
    }

    #[test]
    fn a_stall_past_the_deadline_ends_the_run_behind_schedule() {
        // The target stalls from 500 ms until long after the 1 s run ends.
        let mut target = SimTarget {
            service: 100 * US,
            stall: Some((500 * MS, 5_000 * MS)),
            free_at: 0,
        };
        let (sent, rec) = simulate(open(1_000.0, 1), &mut target, 2);
        // 500 before the stall and the 2 stuck in flight; nothing after the deadline.
        assert_eq!(sent.len(), 502);
        assert!(sent.iter().all(|s| s.sent < 1_000 * MS));
        // The two stuck requests are still measured from their schedule, up to 4.5 s.
        assert!(rec.latency.max() >= 4_498_000, "max {}", rec.latency.max());
        // What the schedule wanted but never got is reported, not silently dropped.
        let mut issued = RateController::new(
            Pace::open(1_000.0),
            0,
            Limits {
                count: None,
                deadline: Some(1_000 * MS),
            },
        );
        for _ in 0..502 {
            assert!(matches!(
                issued.decide(999 * MS, 0, usize::MAX),
                Decision::Send(_)
            ));
        }
        assert_eq!(issued.decide(1_000 * MS, 0, usize::MAX), Decision::Done);
        assert_eq!(issued.behind_schedule(3_000 * MS), 498);
    }

    #[test]
    fn closed_loop_keeps_concurrency_and_measures_from_send() {
        let mut target = SimTarget {
            service: MS,
            stall: None,
            free_at: 0,
        };
        let ctl = RateController::new(
            Pace::Closed,
            0,
            Limits {
                count: Some(300),
                deadline: None,
            },
        );
        let (sent, rec) = simulate(ctl, &mut target, 3);
        assert_eq!(sent.len(), 300);
        assert!(sent.iter().all(|s| s.sent == s.ticket.intended));
        assert_eq!(rec.send_lag.max(), 0);
        // Three in flight against a single-server target: each waits for up to two others.
        assert!(rec.latency.max() <= 3_010);
    }

    #[test]
    fn count_and_deadline_end_the_schedule() {
        let mut c = RateController::new(
            Pace::open(10.0),
            5,
            Limits {
                count: Some(2),
                deadline: None,
            },
        );
        assert_eq!(c.decide(0, 0, 1), Decision::WaitUntil(5));
        assert!(matches!(c.decide(5, 0, 1), Decision::Send(t) if t.intended == 5));
        assert_eq!(c.decide(6, 1, 1), Decision::WaitUntil(100_000_005));
        assert_eq!(c.decide(100_000_005, 1, 1), Decision::WaitForCompletion);
        assert_eq!(c.backlog(100_000_005), 1);
        assert!(matches!(c.decide(100_000_006, 0, 1), Decision::Send(t) if t.index == 1));
        assert_eq!(c.decide(u64::MAX / 2, 0, 1), Decision::Done);

        let mut d = RateController::new(
            Pace::Closed,
            0,
            Limits {
                count: None,
                deadline: Some(10),
            },
        );
        assert!(matches!(d.decide(9, 0, 1), Decision::Send(_)));
        assert_eq!(d.decide(10, 0, 1), Decision::Done);
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let c = MonotonicClock::new(Instant::now());
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
