//! `[receivers.prometheus]`: scrapes Prometheus targets and ingests what it scrapes as OTLP
//! metrics, through the core's [`Intake`] like every receiver.
//!
//! # Cores and targets
//!
//! Every core knows every target; each target is owned by one core (a hash of its job and URL,
//! `targets::owner`) and scraped only there, by a task of its own that keeps the target's
//! connection and its [`SeriesTable`] (start times, previous scrape) on that core: no lock,
//! nothing shared. Within its interval a target is scraped at a fixed offset (another hash),
//! so a thousand targets of one job do not all fire at once.
//!
//! # One scrape
//!
//! Admission first (`Intake::admit`: refused while draining or above the memory limiter's
//! threshold, then counted and skipped), then the HTTP exchange (`client`: kept-alive
//! HTTP/1.1, TLS, basic or bearer credentials, the `Accept` header of `scrape_protocols`, gzip,
//! `body_size_limit`, all within `scrape_timeout`), then the translation, once and on this core
//! (`shardtel_protocol::exposition`: parse, start times, stale points, `up` and the other
//! report series), then `Intake::ingest` of the OTLP request: from there on a scrape is like
//! any OTLP request (metric routing by series for `prometheusremotewrite`, processors,
//! durability, exporters). A failed scrape still ingests its `up` 0 and the stale points of the
//! series it had.

mod client;
mod targets;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use glommio::task::JoinHandle;
use shardtel_config::Config;
use shardtel_protocol::exposition::{ScrapeBuilder, ScrapeReport, SeriesTable};
use shardtel_protocol::Signal;

pub use self::client::FetchError;
use self::targets::Target;
pub use self::targets::TargetError;
use super::{Intake, Transport};
use crate::telemetry::{label_values, Column, Exposition, Families, MetricType};

/// The running scrapes of one core.
pub struct PrometheusReceiverHandle {
    tasks: RefCell<Vec<JoinHandle<()>>>,
    counters: Rc<ScrapeCounters>,
    targets: usize,
}

/// Per-core counters of the scrapes (cells on this core, published as a snapshot).
#[derive(Default)]
struct ScrapeCounters {
    scrapes: Cell<u64>,
    failed: Cell<u64>,
    refused: Cell<u64>,
    samples: Cell<u64>,
    stale_points: Cell<u64>,
    up: Cell<u64>,
    series: Cell<u64>,
}

/// Starts this core's scrapes if `[receivers.prometheus]` feeds the metrics pipeline.
pub fn start(
    intake: Rc<Intake>,
    config: &Config,
    cores: usize,
) -> Result<Option<PrometheusReceiverHandle>, TargetError> {
    let Some(prometheus) = &config.receivers.prometheus else {
        return Ok(None);
    };
    let fed = config
        .pipelines
        .get(Signal::Metrics)
        .is_some_and(|p| p.receivers.iter().any(|r| r == "prometheus"));
    if !fed {
        log::warn!("receivers.prometheus feeds no metrics pipeline; not scraping");
        return Ok(None);
    }
    let owned = targets::owned_targets(&prometheus.scrape_configs, intake.core(), cores)?;
    log::info!(
        "prometheus receiver (core {}): scraping {} target(s)",
        intake.core(),
        owned.len()
    );
    let counters = Rc::new(ScrapeCounters::default());
    let builder = Rc::new(RefCell::new(Translation::default()));
    let count = owned.len();
    let tasks = owned
        .into_iter()
        .map(|target| {
            let scraper = Scraper {
                intake: intake.clone(),
                target,
                table: SeriesTable::default(),
                connection: client::Connection::default(),
                builder: builder.clone(),
                counters: counters.clone(),
                was_up: true,
            };
            glommio::spawn_local(scraper.run()).detach()
        })
        .collect();
    Ok(Some(PrometheusReceiverHandle {
        tasks: RefCell::new(tasks),
        counters,
        targets: count,
    }))
}

impl PrometheusReceiverHandle {
    /// Waits for every scrape loop to stop (they stop when the core starts draining).
    pub async fn finish(&self) {
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        for t in tasks {
            t.await;
        }
    }

    /// The counters now, for telemetry.
    pub fn snapshot(&self) -> PrometheusSnapshot {
        let c = &self.counters;
        PrometheusSnapshot {
            targets: self.targets as u64,
            targets_up: c.up.get(),
            scrapes: c.scrapes.get(),
            failed_scrapes: c.failed.get(),
            refused_scrapes: c.refused.get(),
            samples: c.samples.get(),
            stale_points: c.stale_points.get(),
            series: c.series.get(),
        }
    }
}

/// One target's scrape loop and state.
struct Scraper {
    intake: Rc<Intake>,
    target: Target,
    table: SeriesTable,
    connection: client::Connection,
    /// The core's translation scratch (borrowed only between awaits).
    builder: Rc<RefCell<Translation>>,
    counters: Rc<ScrapeCounters>,
    was_up: bool,
}

/// What every scrape of a core reuses: the builder and the output buffer (one per core, not
/// per target: a thousand targets would otherwise each hold their largest request).
#[derive(Default)]
struct Translation {
    builder: ScrapeBuilder,
    out: Vec<u8>,
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl Scraper {
    async fn run(mut self) {
        self.counters.up.set(self.counters.up.get() + 1);
        let interval = self.target.interval;
        loop {
            // The next multiple of the interval, shifted by this target's offset.
            let now = unix_now().as_nanos();
            let period = interval.as_nanos().max(1);
            let offset = self.target.offset.as_nanos() % period;
            let wait = Duration::from_nanos(((offset + period - now % period) % period) as u64);
            let stop = futures_lite::future::or(
                async {
                    self.intake.wait_draining().await;
                    true
                },
                async {
                    glommio::timer::sleep(wait).await;
                    false
                },
            )
            .await;
            if stop || self.intake.draining() {
                break;
            }
            self.scrape_once().await;
            // Never twice in one slot, however long the scrape took.
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        if self.was_up {
            self.counters.up.set(self.counters.up.get() - 1);
        }
        let c = &self.counters;
        c.series
            .set(c.series.get().saturating_sub(self.table.len() as u64));
    }

    async fn scrape_once(&mut self) {
        let started = Instant::now();
        let time_ms = unix_now().as_millis() as i64;
        let guard = match self.intake.admit(Signal::Metrics) {
            Ok(guard) => guard,
            Err(e) => {
                self.counters.refused.set(self.counters.refused.get() + 1);
                log::debug!("scrape of {} refused: {e}", self.target.labels.instance);
                return;
            }
        };
        // Draining does not wait for a slow target: the scrape is abandoned.
        let intake = self.intake.clone();
        let fetched =
            futures_lite::future::or(self.connection.fetch(&self.target.endpoint), async {
                intake.wait_draining().await;
                Err(FetchError::Draining)
            })
            .await;
        let fetched = match fetched {
            Err(FetchError::Draining) => return,
            Ok((body, format)) => match guard.try_add(body.len()) {
                Ok(()) => Ok((body, format)),
                Err(e) => {
                    self.counters.refused.set(self.counters.refused.get() + 1);
                    log::debug!("scrape of {} refused: {e}", self.target.labels.instance);
                    return;
                }
            },
            Err(e) => Err(e.to_string()),
        };
        let target = &self.target.labels;
        let series_before = self.table.len() as u64;
        let (body, failure) = {
            let mut translation = self.builder.borrow_mut();
            let Translation { builder, out } = &mut *translation;
            let gathered = match fetched {
                Ok((body, format)) => match builder.gather(target, &body, format, time_ms) {
                    Ok(()) => Ok((body, format)),
                    Err(e) => Err(e.to_string()),
                },
                Err(e) => Err(e),
            };
            let samples = builder.samples();
            let up = gathered.is_ok();
            let (success, failure) = match gathered {
                Ok(kept) => (Some(kept), None),
                Err(reason) => (None, Some(reason)),
            };
            let stats = builder.commit(target, &mut self.table, time_ms, success);
            let report = ScrapeReport {
                up,
                duration_seconds: started.elapsed().as_secs_f64(),
                samples_scraped: samples,
                samples_post_relabeling: if up { samples } else { 0 },
                series_added: stats.series_added,
            };
            builder.report(target, time_ms, &report);
            let points = builder.encode(target, env!("CARGO_PKG_VERSION"), out);
            let c = &self.counters;
            c.samples
                .set(c.samples.get() + if up { samples } else { 0 });
            c.stale_points
                .set(c.stale_points.get() + stats.stale_points);
            let body = (points > 0).then(|| Bytes::copy_from_slice(out));
            (body, failure)
        };
        let c = &self.counters;
        c.series
            .set((c.series.get() + self.table.len() as u64).saturating_sub(series_before));
        c.scrapes.set(c.scrapes.get() + 1);
        match &failure {
            Some(reason) => {
                c.failed.set(c.failed.get() + 1);
                if self.was_up {
                    c.up.set(c.up.get() - 1);
                    log::warn!(
                        "scrape of {} (job {:?}) failed: {reason}",
                        target.instance,
                        target.job
                    );
                }
                self.was_up = false;
            }
            None => {
                if !self.was_up {
                    c.up.set(c.up.get() + 1);
                    log::info!(
                        "scrape of {} (job {:?}) is up again",
                        target.instance,
                        target.job
                    );
                }
                self.was_up = true;
            }
        }
        let Some(body) = body else {
            return;
        };
        if guard.try_add(body.len()).is_err() {
            self.counters.refused.set(self.counters.refused.get() + 1);
            return;
        }
        if let Err(e) = self
            .intake
            .ingest(Signal::Metrics, Transport::Scrape, body)
            .await
        {
            log::debug!("scrape of {} not ingested: {e}", target.instance);
        }
        drop(guard);
    }
}

/// Counters of one core's scrapes (`[receivers.prometheus]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrometheusSnapshot {
    /// Targets this core owns.
    pub targets: u64,
    /// Of those, the ones whose last scrape succeeded.
    pub targets_up: u64,
    /// Scrapes done.
    pub scrapes: u64,
    /// Scrapes that failed (connection, status, timeout, size, parse, sample_limit).
    pub failed_scrapes: u64,
    /// Scrapes skipped or dropped because the core refused them (draining, memory, in-flight
    /// bytes).
    pub refused_scrapes: u64,
    /// Samples read from successful scrapes.
    pub samples: u64,
    /// Stale points written for series that disappeared.
    pub stale_points: u64,
    /// Series whose state (start time, last value) this core holds.
    pub series: u64,
}

impl Families for PrometheusSnapshot {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        if cores.is_empty() {
            return;
        }
        let rows: Vec<_> = cores
            .iter()
            .map(|(core, s)| (label_values(&[("core", core)]), *s))
            .collect();
        out.table(&SCRAPES, &rows);
    }
}

/// The scrape series, one per core.
const SCRAPES: [Column<PrometheusSnapshot>; 8] = [
    (
        "shardtel_receiver_prometheus_targets",
        MetricType::Gauge,
        "Prometheus targets this core scrapes.",
        |s| s.targets.into(),
    ),
    (
        "shardtel_receiver_prometheus_targets_up",
        MetricType::Gauge,
        "Targets whose last scrape succeeded.",
        |s| s.targets_up.into(),
    ),
    (
        "shardtel_receiver_prometheus_scrapes_total",
        MetricType::Counter,
        "Scrapes done.",
        |s| s.scrapes.into(),
    ),
    (
        "shardtel_receiver_prometheus_failed_scrapes_total",
        MetricType::Counter,
        "Scrapes that failed (connection, status, timeout, body size, parse, sample_limit).",
        |s| s.failed_scrapes.into(),
    ),
    (
        "shardtel_receiver_prometheus_refused_scrapes_total",
        MetricType::Counter,
        "Scrapes skipped or dropped because the core refused new data.",
        |s| s.refused_scrapes.into(),
    ),
    (
        "shardtel_receiver_prometheus_samples_total",
        MetricType::Counter,
        "Samples read from successful scrapes.",
        |s| s.samples.into(),
    ),
    (
        "shardtel_receiver_prometheus_stale_points_total",
        MetricType::Counter,
        "Stale points written for series that disappeared.",
        |s| s.stale_points.into(),
    ),
    (
        "shardtel_receiver_prometheus_series",
        MetricType::Gauge,
        "Series whose start time and last value this core holds.",
        |s| s.series.into(),
    ),
];
