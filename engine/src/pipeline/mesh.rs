//! The cross-core mesh: one bounded single-producer channel for every ordered pair of cores,
//! made before the reactors start; each core's sending ends, its counters and their metric
//! families.
//!
//! Span batches travel to their trace's owner core here, and, when the metrics pipeline keeps
//! per-series state (`prometheusremotewrite`), metrics to their series' owner core. Nothing else
//! is shared between cores on the data path.

use std::cell::{Cell, OnceCell};
use std::rc::Rc;
use std::time::Duration;

use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use glommio::sync::Semaphore;
use shardtel_protocol::reframe::Encoded;
use shardtel_protocol::scan::SpanBatch;

use super::{IngestError, Overload, Pipeline};
use crate::telemetry::{Exposition, Families};

/// How long a receiving core waits for room on a full mesh channel before it refuses the
/// request as overloaded.
const MESH_SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// What crosses the mesh.
#[derive(Debug)]
pub enum MeshMessage {
    /// Spans owned by the receiving core's peer (see `shardtel_protocol::route`).
    Spans(SpanBatch),
    /// An encoded `ExportMetricsServiceRequest` whose series the peer owns (see
    /// `shardtel_protocol::series`): new length prefixes and slices of the request received.
    Metrics {
        /// The request.
        piece: Encoded,
        /// Data points in it.
        points: u64,
        /// What the export queues are charged for it (see `pipeline::queue_charge`).
        charge: usize,
        /// The exporters it goes to (a routing processor's choice; all of the metrics
        /// pipeline's without one).
        set: shardtel_processors::ExporterSet,
    },
}

/// The ends of the mesh that belong to one core.
pub struct MeshEnds {
    /// `senders[to]`: this core's channel to core `to` (`None` for itself).
    pub senders: Vec<Option<SharedSender<MeshMessage>>>,
    /// `receivers[from]`: the channel from core `from` (`None` for itself).
    pub receivers: Vec<Option<SharedReceiver<MeshMessage>>>,
}

/// Builds the full mesh for `cores` cores, `capacity` messages per channel.
pub fn build(cores: usize, capacity: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> = (0..cores)
        .map(|_| MeshEnds {
            senders: (0..cores).map(|_| None).collect(),
            receivers: (0..cores).map(|_| None).collect(),
        })
        .collect();
    for from in 0..cores {
        for to in 0..cores {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(capacity);
                ends[from].senders[to] = Some(tx);
                ends[to].receivers[from] = Some(rx);
            }
        }
    }
    ends
}

/// One core's sending ends of the mesh, once connected, and its mesh counters.
pub(super) struct Mesh {
    senders: OnceCell<Vec<Option<ConnectedSender<MeshMessage>>>>,
    /// One permit per destination: glommio's `send().await` must not be awaited by two tasks at
    /// once on the same sender.
    send_permits: Vec<Semaphore>,
    /// Messages sent to core `i`.
    sent: Vec<Cell<u64>>,
    /// Messages received from core `i`.
    received: Vec<Cell<u64>>,
    /// Sends that timed out.
    send_timeouts: Cell<u64>,
}

impl Mesh {
    /// Unconnected ends for `cores` cores.
    pub(super) fn new(cores: usize) -> Mesh {
        Mesh {
            senders: OnceCell::new(),
            send_permits: (0..cores).map(|_| Semaphore::new(1)).collect(),
            sent: (0..cores).map(|_| Cell::new(0)).collect(),
            received: (0..cores).map(|_| Cell::new(0)).collect(),
            send_timeouts: Cell::new(0),
        }
    }

    /// Connects the sending ends (each waits for its peer's receiving end).
    pub(super) async fn connect(&self, senders: Vec<Option<SharedSender<MeshMessage>>>) {
        let mut connected = Vec::with_capacity(senders.len());
        for tx in senders {
            connected.push(match tx {
                Some(tx) => Some(tx.connect().await),
                None => None,
            });
        }
        let _ = self.senders.set(connected);
    }

    /// Sends a message to its owner core, waiting at most [`MESH_SEND_TIMEOUT`] for room.
    pub(super) async fn send_to(
        &self,
        dest: usize,
        message: MeshMessage,
    ) -> Result<(), IngestError> {
        let Some(sender) = self.senders.get().and_then(|s| s[dest].as_ref()) else {
            return Err(IngestError::Draining);
        };
        let send = async {
            let _permit = self.send_permits[dest]
                .acquire_permit(1)
                .await
                .map_err(|_| IngestError::Draining)?;
            sender
                .send(message)
                .await
                .map_err(|_| IngestError::Draining)
        };
        match glommio::timer::timeout(MESH_SEND_TIMEOUT, async { Ok(send.await) }).await {
            Ok(Ok(())) => {
                let c = &self.sent[dest];
                c.set(c.get() + 1);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let c = &self.send_timeouts;
                c.set(c.get() + 1);
                Err(IngestError::Overloaded(Overload::OwnerChannel))
            }
        }
    }

    /// Counts a message received from core `from`.
    pub(super) fn received_from(&self, from: usize) {
        let c = &self.received[from];
        c.set(c.get() + 1);
    }

    /// Closes every sending end: peers' consumers end once every sender into them is closed
    /// and their channels are empty.
    pub(super) fn close(&self) {
        if let Some(senders) = self.senders.get() {
            for s in senders.iter().flatten() {
                s.close();
            }
        }
    }

    /// The counters, for telemetry.
    pub(super) fn snapshot(&self) -> MeshSnapshot {
        MeshSnapshot {
            sent: self.sent.iter().map(Cell::get).collect(),
            received: self.received.iter().map(Cell::get).collect(),
            send_timeouts: self.send_timeouts.get(),
        }
    }
}

impl Pipeline {
    /// Connects this core's sending ends of the mesh. Every core's receiving ends must be
    /// connecting meanwhile ([`Pipeline::consume_mesh`], spawned first).
    pub async fn connect_mesh(&self, senders: Vec<Option<SharedSender<MeshMessage>>>) {
        self.mesh.connect(senders).await;
    }

    /// Receives what core `from` routes to this core until every sender into the channel is
    /// closed and it is empty, delivering each message ([`Pipeline::deliver`]).
    pub async fn consume_mesh(self: Rc<Self>, from: usize, rx: SharedReceiver<MeshMessage>) {
        let rx = rx.connect().await;
        while let Some(message) = rx.recv().await {
            self.mesh.received_from(from);
            self.deliver(message).await;
            // recv() never waits while the peer keeps the channel busy: give this core's other
            // tasks (receivers, exporters, the sampler's timer, telemetry) their turn between
            // messages.
            futures_lite::future::yield_now().await;
        }
    }

    /// Closes this core's sending ends: nothing more leaves this core. Peers' consumers end
    /// once every sender into them is closed and their channels are empty.
    pub fn close_mesh(&self) {
        self.mesh.close();
    }
}

/// What a core publishes about its mesh channels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshSnapshot {
    /// Messages sent to each other core.
    pub sent: Vec<u64>,
    /// Messages received from each other core.
    pub received: Vec<u64>,
    /// Sends that timed out (request refused).
    pub send_timeouts: u64,
}

impl Families for MeshSnapshot {
    fn families(cores: &[(usize, &Self)], out: &mut Exposition) {
        let depth = out.gauge(
            "shardtel_mesh_channel_depth",
            "Messages (span batches, routed metrics) in flight on the channel from one core to another.",
        );
        for (from, f) in cores {
            for (to, t) in cores {
                if from == to {
                    continue;
                }
                let sent = f.sent.get(*to).copied().unwrap_or(0);
                let received = t.received.get(*from).copied().unwrap_or(0);
                depth.sample(&[("from", from), ("to", to)], sent.saturating_sub(received));
            }
        }
        let sent = out.counter(
            "shardtel_mesh_sent_batches_total",
            "Messages (span batches, routed metrics) sent to another core.",
        );
        for (from, s) in cores {
            for (to, v) in s.sent.iter().enumerate() {
                if to != *from {
                    sent.sample(&[("from", from), ("to", &to)], *v);
                }
            }
        }
        let timeouts = out.counter(
            "shardtel_mesh_send_timeouts_total",
            "Mesh sends that timed out; the request was refused.",
        );
        for (core, s) in cores {
            timeouts.sample(&[("core", core)], s.send_timeouts);
        }
    }
}
