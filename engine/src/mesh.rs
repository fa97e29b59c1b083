//! The cross-core mesh: one bounded single-producer channel for every
//! ordered pair of cores, made before the reactors start.
//!
//! Span batches travel to their owner core here. Nothing else is shared
//! between cores on the data path.

use glommio::channels::shared_channel::{self, SharedReceiver, SharedSender};
use shardtel_protocol::scan::SpanBatch;

/// The ends of the mesh that belong to one core.
pub struct MeshEnds {
    /// `senders[to]`: this core's channel to core `to` (`None` for itself).
    pub senders: Vec<Option<SharedSender<SpanBatch>>>,
    /// `receivers[from]`: the channel from core `from` (`None` for itself).
    pub receivers: Vec<Option<SharedReceiver<SpanBatch>>>,
}

/// Builds the full mesh for `cores` cores, `capacity` batches per channel.
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
