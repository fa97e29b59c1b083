//! The ingest step: a decoded request's checks (a pipeline for its signal, room in its export
//! queues), its scan (a malformed request is refused here, before it costs an ingest-log
//! append), the durability hand-off (appended to the ingest log and on disk before it is
//! routed), then the routing of its signal with what the scan found; and the replay of what the
//! ingest log holds after a restart.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use shardtel_config::WalConfig;
use shardtel_protocol::reframe::Encoded;
use shardtel_protocol::scan::{scan_logs, scan_metrics, ReleaseToken, TracesIndex};
use shardtel_protocol::series::MetricsRouting;
use shardtel_protocol::Signal;

use super::scratch::Loan;
use super::{IngestError, Overload, Pipeline};
use crate::durability::{self, Tracked, CHECKPOINT_EVERY};

/// Why the pipeline did not take a request, and how the receiver counts it.
#[derive(Debug)]
pub struct Rejected {
    /// The answer to the client.
    pub error: IngestError,
    /// `Some(items)`: a well-formed request of `items` items refused (counted as refused
    /// items); `None`: rejected before its items were counted (a failed request).
    pub refused_items: Option<u64>,
    /// `Some`: a request split among cores of which some parts were queued before one was
    /// refused (their items are not in `refused_items`; sending the whole request again
    /// exports them twice). `None`: nothing of it was queued.
    pub partial: Option<Partial>,
}

/// What a request split among cores left behind when one of its parts was refused.
#[derive(Debug)]
pub struct Partial {
    /// The parts not queued (the refused one and those after it): requests of their own
    /// (metrics; empty for spans, which nothing puts back).
    pub unsent: Vec<Encoded>,
    /// The items of the parts queued.
    pub queued_items: u64,
}

impl Rejected {
    /// A request rejected before its items were counted.
    fn request(error: IngestError) -> Rejected {
        Rejected {
            error,
            refused_items: None,
            partial: None,
        }
    }

    /// A well-formed request of `items` items refused.
    pub(super) fn items(items: u64, error: IngestError) -> Rejected {
        Rejected {
            error,
            refused_items: Some(items),
            partial: None,
        }
    }
}

impl Rejected {
    /// With what a split request left behind (see [`Rejected::partial`]).
    pub(super) fn with_partial(self, partial: Option<Partial>) -> Rejected {
        Rejected { partial, ..self }
    }
}

impl From<IngestError> for Rejected {
    fn from(error: IngestError) -> Self {
        Rejected::request(error)
    }
}

/// What the scan of a request found, kept for its routing: the scan runs before the
/// ingest-log append (a malformed request is refused before it costs an fsync) and its result
/// is used after it (the request is scanned once).
pub(super) enum Scanned<'a> {
    /// A trace request's index (empty: no spans).
    Traces(Loan<'a, TracesIndex>),
    /// A metrics request indexed by series, and its data points.
    MetricsBySeries(Loan<'a, MetricsRouting>, u64),
    /// A metrics or logs request indexed for its pipeline's routing processor (see
    /// `TracesIndex::scan_items`), and its items.
    Indexed(Loan<'a, TracesIndex>, u64),
    /// A metrics or logs request, validated: its items.
    Items(u64),
}

impl Scanned<'_> {
    /// The items (spans, data points, log records) of the request.
    fn items(&self) -> u64 {
        match self {
            Scanned::Traces(index) => index.spans.len() as u64,
            Scanned::MetricsBySeries(_, points)
            | Scanned::Indexed(_, points)
            | Scanned::Items(points) => *points,
        }
    }
}

impl Pipeline {
    /// Ingests one decoded (decompressed, protobuf) Export*ServiceRequest: the items accepted.
    pub async fn ingest(&self, signal: Signal, body: Bytes) -> Result<u64, Rejected> {
        let exporters = self.exporters.of(signal);
        if exporters.is_empty() {
            return Err(IngestError::NoPipeline(signal).into());
        }
        // A full exporter queue on this core refuses at once, before any write to the ingest
        // log and before the tail sampler, whose kept spans would otherwise wait for room while
        // the client waits for its answer.
        if exporters.iter().any(|e| !e.has_room(body.len())) {
            return Err(IngestError::Overloaded(Overload::ExportQueue).into());
        }
        let scanned = self.scan(signal, &body)?;
        if signal == Signal::Traces && scanned.items() == 0 {
            // Nothing to route, so nothing to make durable.
            return Ok(0);
        }
        // Acknowledged means durable: the request is on disk before it is routed.
        let (body, release_token) = match &self.ingest_log {
            Some(log) => match log.append(signal, body).await {
                Ok(tracked) => (tracked.body, Some(tracked.release_token)),
                Err(e) => return Err(IngestError::from(e).into()),
            },
            None => (body, None),
        };
        self.route_scanned(signal, body, release_token, scanned)
            .await
    }

    /// Validates and indexes (traces, metrics routed by series, metrics and logs for a routing
    /// processor) or counts (metrics, logs) a request of `signal`.
    fn scan(&self, signal: Signal, body: &Bytes) -> Result<Scanned<'_>, Rejected> {
        let malformed = |source| IngestError::Malformed { signal, source };
        let routed = signal != Signal::Traces
            && self.processors().request_router(signal).is_some()
            && (signal == Signal::Logs || self.routing.metrics.is_none());
        if routed {
            let mut index = self.routing.indexes.lend();
            let items = index.scan_items(body, signal).map_err(malformed)?;
            return Ok(Scanned::Indexed(index, items));
        }
        Ok(match signal {
            Signal::Traces => {
                let mut index = self.routing.indexes.lend();
                index.scan(body).map_err(malformed)?;
                Scanned::Traces(index)
            }
            Signal::Metrics => match &self.routing.metrics {
                Some(router) => {
                    let (routing, points) = router.scan(body).map_err(malformed)?;
                    Scanned::MetricsBySeries(routing, points)
                }
                None => Scanned::Items(scan_metrics(body).map_err(malformed)?.items as u64),
            },
            Signal::Logs => Scanned::Items(scan_logs(body).map_err(malformed)?.items as u64),
        })
    }

    /// Scans and routes a request of `signal` (a replayed one): the items accepted.
    async fn route(
        &self,
        signal: Signal,
        body: Bytes,
        release_token: Option<ReleaseToken>,
    ) -> Result<u64, Rejected> {
        let scanned = self.scan(signal, &body)?;
        self.route_scanned(signal, body, release_token, scanned)
            .await
    }

    /// Routes a request of `signal` that `scanned` describes: the items accepted.
    async fn route_scanned(
        &self,
        signal: Signal,
        body: Bytes,
        release_token: Option<ReleaseToken>,
        scanned: Scanned<'_>,
    ) -> Result<u64, Rejected> {
        match scanned {
            Scanned::Traces(index) => self.route_traces(body, &index, release_token).await,
            Scanned::MetricsBySeries(routing, points) => {
                self.route_metrics_by_series(body, routing, points).await
            }
            Scanned::Indexed(index, items) => self.route_items(signal, body, Some(index), items),
            Scanned::Items(items) => self.route_items(signal, body, None, items),
        }
    }

    /// Replays a request from the ingest log: routed like a new one (without logging it
    /// again, unless `relog`: a request of another core's log goes into this core's log
    /// first), waiting out refusals.
    pub async fn replay(&self, signal: Signal, tracked: Tracked, relog: bool) {
        let mut wait = Duration::from_millis(10);
        loop {
            let body = match (&self.ingest_log, relog) {
                (Some(log), true) => match log.append(signal, tracked.body.clone()).await {
                    Ok(tracked) => tracked,
                    Err(e) => {
                        let e = IngestError::from(e);
                        if e.is_retryable() {
                            glommio::timer::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(1));
                            continue;
                        }
                        log::warn!(
                            "core {}: skipped a replayed {} request: {e}",
                            self.core,
                            signal.name()
                        );
                        return;
                    }
                },
                _ => Tracked {
                    body: tracked.body.clone(),
                    release_token: tracked.release_token.clone(),
                },
            };
            match self
                .route(signal, body.body, Some(body.release_token))
                .await
            {
                Ok(_) => return,
                Err(r) if r.refused_items.is_some() && r.error.is_retryable() => {
                    glommio::timer::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Err(r) => {
                    log::warn!(
                        "core {}: skipped a replayed {} request: {}",
                        self.core,
                        signal.name(),
                        r.error
                    );
                    return;
                }
            }
        }
    }

    /// Routes again the requests acknowledged before a restart but not yet safe downstream
    /// (the tail sampler rebuilds the traces it held), then those of the `orphans` ingest logs
    /// (of cores that no longer exist), then moves the log's checkpoint every
    /// [`CHECKPOINT_EVERY`] until the task is cancelled. New requests are served meanwhile.
    pub async fn recover(self: Rc<Self>, orphans: Vec<PathBuf>, wal: WalConfig) {
        let Some(log) = &self.ingest_log else { return };
        let recovered = log.recovered_frames();
        if recovered > 0 {
            log::info!(
                "core {}: replaying {recovered} requests from the ingest log",
                self.core
            );
        }
        let replayed = log
            .replay(|signal, tracked| self.replay(signal, tracked, false))
            .await;
        if replayed.frames > 0 {
            log::info!("core {}: replayed {} requests", self.core, replayed.frames);
        }
        // Ingest logs of cores that no longer exist (the core count shrank).
        let checkpoints = &self.checkpoints;
        durability::drain_orphaned_ingest_logs(self.core, &orphans, &wal, checkpoints, |s, t| {
            self.replay(s, t, true)
        })
        .await;
        loop {
            log.advance();
            glommio::timer::sleep(CHECKPOINT_EVERY).await;
        }
    }
}
