//! Metrics and logs requests on the receiving core: the pipeline's processors, then, when the
//! pipeline has a `routing` processor, each log record or data point to the exporters of its
//! route (`shardtel_processors::Router::route_request`). Each destination set's piece is
//! encoded once (new length prefixes, slices of the request buffer) and shared by the set's
//! exporters; a request whose items all take one route is passed on as it arrived.

use bytes::Bytes;
use shardtel_processors::tied_to_origin;
use shardtel_protocol::scan::TracesIndex;
use shardtel_protocol::Signal;

use super::exporters::queue_charge;
use super::ingest::Rejected;
use super::scratch::Loan;
use super::{IngestError, Overload, Pipeline};

impl Pipeline {
    /// Routes a validated metrics or logs request of `items` items (`index`: its scan by
    /// [`TracesIndex::scan_items`], when the scan made one) to the pipeline's exporters: the
    /// items accepted. Every destination's queue must have room, or nothing is queued.
    pub(super) fn route_items(
        &self,
        signal: Signal,
        body: Bytes,
        index: Option<Loan<'_, TracesIndex>>,
        items: u64,
    ) -> Result<u64, Rejected> {
        let processors = self.processors();
        let Some(router) = processors.request_router(signal) else {
            drop(index);
            let buffer = body.len();
            let (piece, kept) = self.process_request(signal, body, items);
            let charge = queue_charge(piece.len, buffer);
            return self
                .exporters
                .push_now(signal, piece, None, kept, charge)
                .map(|()| items)
                .map_err(|e| Rejected::items(items, e));
        };
        let malformed = |source| Rejected::from(IngestError::Malformed { signal, source });
        // The routing processor comes last: it routes what the others left. A request they
        // changed is joined into one buffer (a copy of that request only) and indexed again.
        let (body, index) = match (self.run_request_chain(signal, &body), index) {
            (Some((piece, _)), index) => {
                drop(index);
                let joined = tied_to_origin(piece.to_bytes(), &body);
                let mut index = self.routing.indexes.lend();
                index.scan_items(&joined, signal).map_err(malformed)?;
                (joined, index)
            }
            (None, Some(index)) => (body, index),
            (None, None) => {
                // Scanned before a reload added the router.
                let mut index = self.routing.indexes.lend();
                index.scan_items(&body, signal).map_err(malformed)?;
                (body, index)
            }
        };
        let mut pieces = Vec::new();
        router.route_request(&body, &index, &mut pieces);
        drop(index);
        let buffer = body.len();
        let room = pieces.iter().all(|p| {
            let charge = queue_charge(p.piece.len, buffer);
            self.exporters
                .has_room_in(signal, p.set, charge.max(p.piece.len))
        });
        if !room {
            let full = IngestError::Overloaded(Overload::ExportQueue);
            return Err(Rejected::items(items, full));
        }
        for p in pieces {
            let charge = queue_charge(p.piece.len, buffer);
            self.exporters
                .push_now_to(signal, p.set, p.piece, None, p.items, charge)
                .map_err(|e| Rejected::items(items, e))?;
        }
        Ok(items)
    }
}
