//! The cross-core mesh: one bounded single-producer channel for every
//! ordered pair of cores, made before the reactors start.
//!
//! Span batches travel to their trace's owner core here, and, when the metrics pipeline keeps
//! per-series state (`prometheusremotewrite`), metrics to their series' owner core. Nothing else
//! is shared between cores on the data path.

use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use shardtel_protocol::reframe::Encoded;
use shardtel_protocol::scan::SpanBatch;

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
        /// What it keeps alive: see `crate::core::held_bytes`.
        held: usize,
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
