//! Routing spans by trace ID: the receiving core scans a trace request, partitions its spans by
//! owner core (`owner_core(trace_id, cores)`), keeps its own part (first, so that a refusal
//! leaves nothing behind on other cores) and sends the others over the mesh; the owner core
//! runs the processors and the sampler on what it receives, and queues it for export.

use std::sync::Arc;

use bytes::Bytes;
use shardtel_processors::ExporterSet;
use shardtel_protocol::reframe::{encode_trace_spans, encode_traces, Encoded};
use shardtel_protocol::route::owner_core;
use shardtel_protocol::scan::{keep_alive, ReleaseToken, SpanBatch, TracesIndex};
use shardtel_protocol::Signal;

use super::exporters::queue_charge;
use super::ingest::{Partial, Rejected};
use super::mesh::MeshMessage;
use super::Pipeline;
use super::{IngestError, Overload};

impl Pipeline {
    /// Routes a trace request that `index` (its scan) describes: the spans accepted.
    pub(super) async fn route_traces(
        &self,
        body: Bytes,
        index: &TracesIndex,
        release_token: Option<ReleaseToken>,
    ) -> Result<u64, Rejected> {
        // (spans owned here, true when they are the whole request as received)
        let mut local: Option<(SpanBatch, bool)> = None;
        let mut remote: Vec<(usize, SpanBatch)> = Vec::new();
        let items;
        {
            items = index.spans.len() as u64;
            if items == 0 {
                return Ok(0);
            }
            // A tail sampler that holds request buffers holds the body for `decision_wait`: in
            // memory sized to it (one copy per request, into this core's chunks), not in the
            // allocation the receiver read it into (rounded up to the allocator's size class).
            // One that compresses lets go of it at once: no copy.
            let holds = self
                .sampler
                .as_ref()
                .is_some_and(|s| s.borrow().holds_request_buffers());
            // The copy keeps the ingest log's frame alive as the received body did: the
            // exporters hold slices of the buffer after the sampler lets go of the batch (and
            // its `release_token`), and the frame must stay until they have written them.
            let body = if holds {
                let copy = self.routing.bodies.borrow_mut().copy(&body);
                match &release_token {
                    Some(token) => keep_alive(copy, token.clone()),
                    None => copy,
                }
            } else {
                body
            };
            let n = self.cores;
            let mut parts = self.routing.parts.borrow_mut();
            if n > 1 {
                index.partition(n, |t| owner_core(t, n), &mut parts);
            }
            let single = n == 1 || parts.iter().filter(|p| !p.spans.is_empty()).count() == 1;
            if single {
                let dest = if n == 1 {
                    0
                } else {
                    owner_core(&index.spans[0].trace_id, n)
                };
                if dest == self.core {
                    // The request as received is already the request to export; only
                    // the sampler, processors and exporters that cut messages from the
                    // index need it.
                    let index = if self.sampler.is_some()
                        || self.processors().traces_before.is_some()
                        || self.processors().traces_router.is_some()
                        || self.exporters.traces_want_index()
                    {
                        index.clone()
                    } else {
                        TracesIndex::default()
                    };
                    local = Some((
                        SpanBatch {
                            buf: body.clone(),
                            index,
                            release_token: release_token.clone(),
                        },
                        true,
                    ));
                } else {
                    remote.push((
                        dest,
                        SpanBatch {
                            buf: body.clone(),
                            index: index.clone(),
                            release_token: release_token.clone(),
                        },
                    ));
                }
            } else {
                for (dest, part) in parts.iter_mut().enumerate() {
                    if part.spans.is_empty() {
                        continue;
                    }
                    // A copy, not the part itself: its vectors then have exactly the room
                    // they use (a tail sampler holds them for decision_wait, and pushing into
                    // fresh vectors left them up to twice that), and `parts` keeps its
                    // capacity for the next request.
                    let batch = SpanBatch {
                        buf: body.clone(),
                        index: part.clone(),
                        release_token: release_token.clone(),
                    };
                    if dest == self.core {
                        local = Some((batch, false));
                    } else {
                        remote.push((dest, batch));
                    }
                }
            }
        }
        // Local first: if it is refused, nothing has left this core yet and
        // the client's retry creates no duplicate.
        // Spans queued so far: counted as accepted if a later part is refused.
        let mut queued = 0;
        if let Some((mut batch, mut is_whole)) = local {
            let local_items = if is_whole {
                items
            } else {
                batch.index.spans.len() as u64
            };
            is_whole &= !self.process_owned(&mut batch);
            let pushed = if batch.index.spans.is_empty() && !is_whole {
                Ok(())
            } else if self.sampler.is_some() {
                self.sample(batch).await;
                Ok(())
            } else if self.processors().traces_router.is_some() {
                let groups = self.routed_groups(&batch);
                let room = groups.iter().all(|(set, enc, _, charge)| {
                    self.exporters
                        .has_room_in(Signal::Traces, *set, (*charge).max(enc.len))
                });
                if room {
                    groups
                        .into_iter()
                        .try_for_each(|(set, enc, spans, charge)| {
                            self.exporters.push_now_to(
                                Signal::Traces,
                                set,
                                enc,
                                None,
                                spans,
                                charge,
                            )
                        })
                } else {
                    Err(IngestError::Overloaded(Overload::ExportQueue))
                }
            } else if is_whole {
                let charge = batch.buf.len();
                let piece = whole(batch.buf.clone());
                // (The index is empty when no one needs it.)
                let index = self.shared_index(batch, items);
                self.exporters
                    .push_now(Signal::Traces, piece, index.as_ref(), items, charge)
            } else {
                let mut enc = Encoded::default();
                encode_traces(&batch, &mut enc);
                let charge = queue_charge(enc.len, batch.buf.len());
                let spans = batch.index.spans.len() as u64;
                let index = self.shared_index(batch, spans);
                self.exporters
                    .push_now(Signal::Traces, enc, index.as_ref(), spans, charge)
            };
            if let Err(e) = pushed {
                return Err(Rejected::items(items, e));
            }
            queued = local_items;
        }
        for (dest, batch) in remote {
            let part_items = batch.index.spans.len() as u64;
            if let Err(e) = self.mesh.send_to(dest, MeshMessage::Spans(batch)).await {
                // The parts queued before are exported: accepted, not refused (the client
                // resends the whole request; at least once).
                let partial = (queued > 0).then(|| Partial {
                    unsent: Vec::new(),
                    queued_items: queued,
                });
                return Err(Rejected::items(items.saturating_sub(queued), e).with_partial(partial));
            }
            queued += part_items;
        }
        Ok(items)
    }

    /// Delivers a message received from another core: spans through the processors and the
    /// sampler if there is one, else straight to the exporters, waiting for queue room
    /// (backpressure flows back through the mesh).
    pub async fn deliver(&self, message: MeshMessage) {
        let mut batch = match message {
            MeshMessage::Spans(batch) => batch,
            MeshMessage::Metrics {
                piece,
                points,
                charge,
                set,
            } => {
                return self
                    .exporters
                    .push_waiting_to(Signal::Metrics, set, piece, None, points, charge)
                    .await;
            }
        };
        self.process_owned(&mut batch);
        if batch.index.spans.is_empty() {
            return;
        }
        if self.sampler.is_some() {
            return self.sample(batch).await;
        }
        if self.processors().traces_router.is_some() {
            for (set, enc, spans, charge) in self.routed_groups(&batch) {
                self.exporters
                    .push_waiting_to(Signal::Traces, set, enc, None, spans, charge)
                    .await;
            }
            return;
        }
        let mut enc = Encoded::default();
        encode_traces(&batch, &mut enc);
        let items = batch.index.spans.len() as u64;
        let charge = queue_charge(enc.len, batch.buf.len());
        let index = self.shared_index(batch, items);
        self.exporters
            .push_waiting(Signal::Traces, enc, index.as_ref(), items, charge)
            .await;
    }

    /// The spans of `batch` (owned here, processed) grouped by the exporters the routing
    /// processor sends their traces to: `(set, piece, spans, charge)` per non-empty set.
    fn routed_groups(&self, batch: &SpanBatch) -> Vec<(ExporterSet, Encoded, u64, usize)> {
        let Some(router) = &self.processors().traces_router else {
            return Vec::new();
        };
        let spans: Vec<u32> = (0..batch.index.spans.len() as u32).collect();
        let mut groups = Vec::new();
        router.route_spans(batch, &spans, None, &mut groups);
        groups
            .into_iter()
            .filter(|(set, _)| *set != 0)
            .map(|(set, group)| {
                let mut enc = Encoded::default();
                encode_trace_spans(batch, &group, &mut enc);
                let charge = queue_charge(enc.len, batch.buf.len());
                (set, enc, group.len() as u64, charge)
            })
            .collect()
    }

    /// `batch` (the owner core's spans, encoded into the piece being pushed) shared with the
    /// exporters that cut messages from its index, when there is one and it indexes all
    /// `items` spans; moved, not copied.
    fn shared_index(&self, batch: SpanBatch, items: u64) -> Option<Arc<SpanBatch>> {
        (batch.index.spans.len() as u64 == items && self.exporters.traces_want_index())
            .then(|| Arc::new(batch))
    }
}

/// A request buffer as one encoded piece.
pub(super) fn whole(body: Bytes) -> Encoded {
    let len = body.len();
    Encoded {
        chunks: vec![body],
        len,
    }
}
