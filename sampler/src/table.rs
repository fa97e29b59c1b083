//! The per-core trace table: pending traces with their summaries, in arrival order, and the
//! retained request batches their spans point into.
//!
//! Traces live in a slab (`Vec` plus free list) indexed by `u32`, found by trace id through an
//! [`IdMap`] (whose slots can be asked for ahead of a lookup), and threaded on two intrusive doubly linked lists: by first arrival (the decision
//! timer order and the eviction order) and by root arrival (the `decision_wait_after_root`
//! order). Both lists are sorted by their deadline because time never goes backwards, so the
//! next deadline is always at a list head and removing a decided trace is O(1).

use std::mem::size_of;
use std::ops::Range;
use std::rc::Rc;

use shardtel_protocol::scan::{ResourceEntry, ScopeEntry};
use shardtel_protocol::TraceId;

use super::compress::CompressedBatch;
use super::held::{HeldBatch, HeldIndex, HeldSpan};
use super::idmap::{IdHash, IdMap, SLOT_BYTES};

/// No slab entry.
pub(crate) const NIL: u32 = u32::MAX;

/// One buffered span: a batch slot and the span's index in that batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SpanRef {
    pub(crate) slot: u32,
    pub(crate) span: u32,
}

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
};

/// A pending trace: its buffered spans and what the policies need to know about them.
#[derive(Debug)]
pub(crate) struct Trace {
    pub(crate) id: TraceId,
    /// Arrival of the first span, nanoseconds since the sampler's epoch.
    pub(crate) first_seen: u64,
    /// Arrival of the first root span (no parent), [`NO_ROOT`] until one arrives (see
    /// [`Trace::root_seen`]; not an `Option`, which would take 8 bytes more per trace).
    pub(crate) root_at: u64,
    pub(crate) spans: Vec<SpanRef>,
    /// Wire bytes of the buffered span bodies.
    pub(crate) span_bytes: u64,
    /// Earliest non-zero `start_time_unix_nano` (`u64::MAX` if none).
    pub(crate) min_start: u64,
    /// Latest `end_time_unix_nano` (0 if none).
    pub(crate) max_end: u64,
    /// Bit `i` set when span predicate `i` matched a span or its resource.
    pub(crate) matched: u64,
    fifo: Link,
    root: Link,
    /// Bit `c` set when a span has status code `c` (0 unset, 1 ok, 2 error).
    pub(crate) status_seen: u8,
    in_root_list: bool,
    live: bool,
}

/// [`Trace::root_at`] of a trace whose root has not arrived.
pub(crate) const NO_ROOT: u64 = u64::MAX;

impl Trace {
    /// Arrival of the first root span, if any.
    pub(crate) fn root_seen(&self) -> Option<u64> {
        (self.root_at != NO_ROOT).then_some(self.root_at)
    }

    /// Latest end minus earliest start, 0 when either is unknown.
    pub(crate) fn duration_nanos(&self) -> u64 {
        if self.min_start == u64::MAX || self.max_end == 0 {
            return 0;
        }
        self.max_end.saturating_sub(self.min_start)
    }

    /// Whether a span with any of the status codes in `mask` (bit per code) was seen.
    pub(crate) fn any_status(&self, mask: u8) -> bool {
        self.status_seen & mask != 0
    }
}

/// Bytes charged for a pending trace holding `spans` spans: the slab entry, its share of the
/// id map (the map is 3/8 to 3/4 full: at most 8/3 slots per trace), and its span list
/// (capacity grows 4, 8, 16, … exactly as charged).
pub(crate) fn trace_cost(spans: usize) -> u64 {
    const BASE: usize = size_of::<Trace>() + SLOT_BYTES * 8 / 3;
    (BASE + span_list_capacity(spans) * size_of::<SpanRef>()) as u64
}

/// The span list capacity kept for `len` spans.
pub(crate) fn span_list_capacity(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len.next_power_of_two().max(4)
    }
}

/// However little of a retained request buffer a core's spans use, the core is charged at least
/// `1 / MIN_SHARE_DIVISOR` of it: the buffer stays in memory whole while any core holds a span
/// of it, so the physical memory of retained buffers is at most this many times the charge.
pub(crate) const MIN_SHARE_DIVISOR: u64 = 4;

/// Encoded size of a span as a `spans` field: tag, length prefix, body.
#[inline]
pub(crate) fn span_field_len(body_len: u64) -> u64 {
    1 + varint_len(body_len) + body_len
}

fn varint_len(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

/// What retaining one batch costs a core (see [`batch_cost`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchCost {
    /// `buf.len()`: the request buffer, shared by every core that got spans of it.
    pub(crate) buf: u64,
    /// The bytes of `buf` this core's part covers: its spans as encoded fields (tag, length,
    /// body) plus the header fields of the resources and scopes they belong to. At most `buf`.
    pub(crate) own: u64,
    /// The spans' share of `own`.
    pub(crate) own_spans_bytes: u64,
    /// Spans in this core's part.
    pub(crate) own_spans: u32,
    /// The index's vectors, the `Rc` allocation and the slot.
    pub(crate) overhead: u64,
}

impl BatchCost {
    /// The part of the buffer charged: this core's share, at least `buf / MIN_SHARE_DIVISOR`.
    pub(crate) fn part(&self) -> u64 {
        self.own
            .max(self.buf.div_ceil(MIN_SHARE_DIVISOR))
            .min(self.buf)
    }

    /// Bytes charged against `max_buffered_bytes_per_core` while the batch is retained.
    pub(crate) fn charge(&self) -> u64 {
        self.part() + self.overhead
    }

    /// Whether a batch with `live` of its `own_spans` spans still buffered holds so little that
    /// copying them out is worth it: some of this core's spans are gone and the rest (at the
    /// part's average span size) use less than `1 / MIN_SHARE_DIVISOR` of the charged part.
    pub(crate) fn is_sparse(&self, live: u32) -> bool {
        live > 0
            && live < self.own_spans
            && u128::from(live) * u128::from(self.own_spans_bytes) * u128::from(MIN_SHARE_DIVISOR)
                < u128::from(self.part()) * u128::from(self.own_spans)
    }
}

/// What retaining `batch` costs: its share of the request buffer (the bytes its index covers,
/// at least a quarter of the buffer), the index's vectors (by capacity), and the slot.
pub(crate) fn batch_cost(batch: &HeldBatch) -> BatchCost {
    let HeldIndex {
        resources,
        scopes,
        spans,
        headers,
        rewrites,
        span_prefixes_minimal: _,
    } = &batch.index;
    cost_of(
        batch.buf.len(),
        [
            resources.capacity(),
            scopes.capacity(),
            spans.capacity(),
            headers.capacity(),
        ],
        spans.iter().map(|s| s.len()),
        headers,
        rewrites.bytes(),
    )
}

/// [`batch_cost`] of `batch` once added (tests): the held spans are allocated to their number,
/// the other vectors are held as they are.
#[cfg(test)]
pub(crate) fn batch_cost_of(batch: &shardtel_protocol::scan::SpanBatch) -> BatchCost {
    let i = &batch.index;
    cost_of(
        batch.buf.len(),
        [
            i.resources.capacity(),
            i.scopes.capacity(),
            i.spans.len(),
            i.headers.capacity(),
        ],
        i.spans.iter().map(|s| s.range.end - s.range.start),
        &i.headers,
        i.rewrites.bytes(),
    )
}

/// [`batch_cost`] from the buffer's length, the capacities of the resource, scope, span and
/// header vectors, the spans' body lengths, the header ranges and the rewritten bytes.
fn cost_of(
    buf: usize,
    [resources, scopes, spans, headers_capacity]: [usize; 4],
    span_lens: impl Iterator<Item = u32>,
    headers: &[Range<u32>],
    rewrites: usize,
) -> BatchCost {
    let overhead = batch_overhead(resources, scopes, spans, headers_capacity) + rewrites as u64;
    let mut own_spans = 0u32;
    let own_spans_bytes: u64 = span_lens
        .map(|len| {
            own_spans += 1;
            span_field_len(u64::from(len))
        })
        .sum();
    let own_headers: u64 = headers.iter().map(|h| u64::from(h.end - h.start)).sum();
    let buf = buf as u64;
    BatchCost {
        buf,
        own: (own_spans_bytes + own_headers).min(buf),
        own_spans_bytes,
        own_spans,
        overhead,
    }
}

/// Bytes of a retained batch besides its buffer: index vectors with room for that many
/// resources, scopes, spans (held, without trace ids) and header ranges, the `Rc` allocation
/// (two counters and the [`HeldBatch`]) and the slot.
pub(crate) fn batch_overhead(resources: usize, scopes: usize, spans: usize, headers: usize) -> u64 {
    let index = resources * size_of::<ResourceEntry>()
        + scopes * size_of::<ScopeEntry>()
        + spans * size_of::<HeldSpan>()
        + headers * size_of::<Range<u32>>();
    let fixed = 2 * size_of::<usize>() + size_of::<HeldBatch>() + size_of::<BatchSlot>();
    (index + fixed) as u64
}

/// How a retained batch holds its spans.
#[derive(Debug)]
pub(crate) enum Held {
    /// In the request buffer, shared with other cores (and the buffer with [`super::Kept`]
    /// values).
    Plain(Rc<HeldBatch>),
    /// As one LZ4 block of this core's own (`buffer_compression = "lz4"`).
    Compressed(Box<CompressedBatch>),
}

/// A retained batch.
#[derive(Debug)]
pub(crate) struct BatchSlot {
    pub(crate) held: Held,
    /// Buffered spans pointing into this batch.
    pub(crate) refs: u32,
    /// What [`batch_cost`] said; `cost.charge()` is charged while `refs > 0`.
    pub(crate) cost: BatchCost,
    /// Unique per inserted batch, so that a queued compaction can tell a reused slot.
    pub(crate) serial: u64,
    /// Queued for compaction (see [`BatchCost::is_sparse`]).
    pub(crate) queued: bool,
    /// The call (see `Sampler::call`) and the position in `Sampler::emitting` of the group
    /// collecting this batch's kept spans in the current call.
    pub(crate) kept_call: u64,
    pub(crate) kept_at: usize,
}

/// The retained batches, a slab indexed by `u32`.
#[derive(Debug, Default)]
pub(crate) struct BatchSlots {
    slots: Vec<Option<BatchSlot>>,
    free: Vec<u32>,
    live: usize,
    serial: u64,
}

impl BatchSlots {
    pub(crate) fn insert(&mut self, batch: Rc<HeldBatch>) -> u32 {
        let cost = batch_cost(&batch);
        self.insert_held(Held::Plain(batch), cost)
    }

    /// Inserts a compressed batch, at [`CompressedBatch::cost`].
    pub(crate) fn insert_compressed(&mut self, batch: CompressedBatch) -> u32 {
        let cost = batch.cost();
        self.insert_held(Held::Compressed(Box::new(batch)), cost)
    }

    fn insert_held(&mut self, held: Held, cost: BatchCost) -> u32 {
        self.serial += 1;
        let slot = BatchSlot {
            held,
            refs: 0,
            cost,
            serial: self.serial,
            queued: false,
            kept_call: 0,
            kept_at: 0,
        };
        self.live += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        }
    }

    pub(crate) fn get(&self, i: u32) -> &BatchSlot {
        self.slots[i as usize].as_ref().expect("live batch slot")
    }

    pub(crate) fn get_mut(&mut self, i: u32) -> &mut BatchSlot {
        self.slots[i as usize].as_mut().expect("live batch slot")
    }

    /// The batch in slot `i` if it is still the one inserted as `serial`.
    pub(crate) fn get_serial(&self, i: u32, serial: u64) -> Option<&BatchSlot> {
        self.slots
            .get(i as usize)?
            .as_ref()
            .filter(|b| b.serial == serial)
    }

    pub(crate) fn remove(&mut self, i: u32) {
        debug_assert_eq!(self.get(i).refs, 0);
        self.slots[i as usize] = None;
        self.free.push(i);
        self.live -= 1;
    }

    /// Batches currently retained.
    pub(crate) fn len(&self) -> usize {
        self.live
    }
}

/// Pending traces.
#[derive(Debug, Default)]
pub(crate) struct TraceTable {
    traces: Vec<Trace>,
    free: Vec<u32>,
    by_id: IdMap,
    fifo_head: u32,
    fifo_tail: u32,
    root_head: u32,
    root_tail: u32,
}

impl TraceTable {
    /// An empty table whose id map is `by_id`'s kind (its hasher; see [`IdMap::with_hasher`]).
    pub(crate) fn new(by_id: IdMap) -> Self {
        TraceTable {
            by_id,
            fifo_head: NIL,
            fifo_tail: NIL,
            root_head: NIL,
            root_tail: NIL,
            ..Default::default()
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The hash the id map places `id` by.
    #[inline]
    pub(crate) fn hash(&self, id: &TraceId) -> IdHash {
        self.by_id.hash(id)
    }

    #[inline]
    pub(crate) fn find(&self, id: &TraceId) -> Option<u32> {
        self.find_hashed(self.hash(id), id)
    }

    /// [`TraceTable::find`] of an id whose hash is known.
    #[inline]
    pub(crate) fn find_hashed(&self, hash: IdHash, id: &TraceId) -> Option<u32> {
        let traces = &self.traces;
        self.by_id.get(hash, |i| traces[i as usize].id == *id)
    }

    /// The pending trace the id map holds for `hash`, not confirmed: a lookup that reads no
    /// trace entry, for asking for it ahead. Confirm with [`TraceTable::is`].
    #[inline]
    pub(crate) fn candidate(&self, hash: IdHash) -> Option<u32> {
        self.by_id.candidate(hash)
    }

    /// Whether `i` is the pending trace `id`.
    #[inline]
    pub(crate) fn is(&self, i: u32, id: &TraceId) -> bool {
        self.traces
            .get(i as usize)
            .is_some_and(|t| t.live && t.id == *id)
    }

    /// Asks the CPU for the id map's slot of `hash` ahead of a lookup (a hint).
    #[inline]
    pub(crate) fn prefetch_slot(&self, hash: IdHash) {
        self.by_id.prefetch(hash);
    }

    /// Asks the CPU for trace `i`'s entry ahead of its use (a hint; see
    /// `shardtel_protocol::prefetch`).
    #[inline]
    pub(crate) fn prefetch(&self, i: u32) {
        if let Some(t) = self.traces.get(i as usize) {
            shardtel_protocol::prefetch::prefetch(t);
        }
    }

    pub(crate) fn get(&self, i: u32) -> &Trace {
        let t = &self.traces[i as usize];
        debug_assert!(t.live);
        t
    }

    pub(crate) fn get_mut(&mut self, i: u32) -> &mut Trace {
        let t = &mut self.traces[i as usize];
        debug_assert!(t.live);
        t
    }

    /// The pending trace that arrived first (the next timer deadline, the next to evict).
    pub(crate) fn oldest(&self) -> Option<u32> {
        (self.fifo_head != NIL).then_some(self.fifo_head)
    }

    /// Asks the CPU for what deciding the traces after `i` in arrival order will read: the
    /// next one's span list and id map slot, and the entry of the one after it (whose own span
    /// list the next call asks for). The timer decides in that order, and each of these is a
    /// cache miss otherwise taken one after another (a hint; see `shardtel_protocol::prefetch`).
    /// Returns the next trace's hash, for the caller's own hints.
    #[inline]
    pub(crate) fn prefetch_after(&self, i: u32) -> Option<IdHash> {
        let next = self.traces.get(i as usize)?.fifo.next;
        let t = self.traces.get(next as usize)?;
        if let Some(first) = t.spans.first() {
            shardtel_protocol::prefetch::prefetch(first);
        }
        self.prefetch(t.fifo.next);
        let hash = self.hash(&t.id);
        self.by_id.prefetch(hash);
        Some(hash)
    }

    /// The pending trace whose root arrived first among those on the root list.
    pub(crate) fn oldest_root(&self) -> Option<u32> {
        (self.root_head != NIL).then_some(self.root_head)
    }

    /// Adds an empty trace seen first at `now`, at the end of the arrival list.
    #[cfg(test)]
    pub(crate) fn create(&mut self, id: TraceId, now: u64) -> u32 {
        self.create_hashed(self.hash(&id), id, now)
    }

    /// [`TraceTable::create`] of an id whose hash is known.
    pub(crate) fn create_hashed(&mut self, hash: IdHash, id: TraceId, now: u64) -> u32 {
        debug_assert!(self.find_hashed(hash, &id).is_none());
        let trace = Trace {
            id,
            first_seen: now,
            root_at: NO_ROOT,
            spans: Vec::new(),
            span_bytes: 0,
            min_start: u64::MAX,
            max_end: 0,
            status_seen: 0,
            matched: 0,
            fifo: UNLINKED,
            root: UNLINKED,
            in_root_list: false,
            live: true,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.traces[i as usize] = trace;
                i
            }
            None => {
                self.traces.push(trace);
                (self.traces.len() - 1) as u32
            }
        };
        self.by_id.insert(hash, i);
        let tail = self.fifo_tail;
        self.traces[i as usize].fifo = Link {
            prev: tail,
            next: NIL,
        };
        if tail == NIL {
            self.fifo_head = i;
        } else {
            self.traces[tail as usize].fifo.next = i;
        }
        self.fifo_tail = i;
        i
    }

    /// Appends trace `i` to the root list (its root arrived now).
    pub(crate) fn push_root(&mut self, i: u32) {
        debug_assert!(!self.traces[i as usize].in_root_list);
        let tail = self.root_tail;
        let t = &mut self.traces[i as usize];
        t.root = Link {
            prev: tail,
            next: NIL,
        };
        t.in_root_list = true;
        if tail == NIL {
            self.root_head = i;
        } else {
            self.traces[tail as usize].root.next = i;
        }
        self.root_tail = i;
    }

    /// Removes trace `i` from the table and both lists, returning it.
    pub(crate) fn remove(&mut self, i: u32) -> Trace {
        let Link { prev, next } = self.traces[i as usize].fifo;
        if prev == NIL {
            self.fifo_head = next;
        } else {
            self.traces[prev as usize].fifo.next = next;
        }
        if next == NIL {
            self.fifo_tail = prev;
        } else {
            self.traces[next as usize].fifo.prev = prev;
        }
        if self.traces[i as usize].in_root_list {
            let Link { prev, next } = self.traces[i as usize].root;
            if prev == NIL {
                self.root_head = next;
            } else {
                self.traces[prev as usize].root.next = next;
            }
            if next == NIL {
                self.root_tail = prev;
            } else {
                self.traces[next as usize].root.prev = prev;
            }
        }
        let t = &mut self.traces[i as usize];
        let trace = Trace {
            spans: std::mem::take(&mut t.spans),
            fifo: UNLINKED,
            root: UNLINKED,
            in_root_list: false,
            live: false,
            ..*t
        };
        t.live = false;
        let removed = self.by_id.remove(self.by_id.hash(&trace.id), i);
        debug_assert!(removed);
        self.free.push(i);
        trace
    }

    /// Pending traces in arrival order (tests, and a reload marking the traces its old policies
    /// still decide).
    pub(crate) fn arrival_order(&self) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = self.fifo_head;
        while i != NIL {
            out.push(i);
            i = self.traces[i as usize].fifo.next;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keep_arrival_order_through_removals() {
        let mut t = TraceTable::new(IdMap::default());
        let ids: Vec<u32> = (0..5u8).map(|n| t.create([n; 16], u64::from(n))).collect();
        t.push_root(ids[3]);
        t.push_root(ids[1]);
        assert_eq!(t.arrival_order(), ids);
        assert_eq!(t.oldest_root(), Some(ids[3]));
        let removed = t.remove(ids[3]);
        assert_eq!(removed.id, [3; 16]);
        assert_eq!(t.oldest_root(), Some(ids[1]));
        t.remove(ids[0]);
        assert_eq!(t.oldest(), Some(ids[1]));
        t.remove(ids[1]);
        assert_eq!(t.oldest_root(), None);
        assert_eq!(t.arrival_order(), [ids[2], ids[4]]);
        assert_eq!(t.find(&[4; 16]), Some(ids[4]));
        assert_eq!(t.find(&[3; 16]), None);
        // Freed entries are reused and go to the end of the list.
        let again = t.create([9; 16], 9);
        assert!(ids.contains(&again));
        assert_eq!(t.arrival_order(), [ids[2], ids[4], again]);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn span_list_capacity_doubles_from_four() {
        let caps: Vec<usize> = [0, 1, 4, 5, 8, 9, 1000]
            .into_iter()
            .map(span_list_capacity)
            .collect();
        assert_eq!(caps, [0, 4, 4, 8, 8, 16, 1024]);
        assert!(trace_cost(5) > trace_cost(4));
    }

    #[test]
    fn a_pending_trace_entry_stays_small() {
        // 112 bytes on 64-bit targets (was 128 with an unused last-arrival time and an
        // `Option` for the root's arrival): a trace table slot is paid per buffered trace and,
        // as capacity, per `max_traces_per_core`.
        assert!(size_of::<Trace>() <= 112, "{}", size_of::<Trace>());
        let mut table = TraceTable::new(IdMap::default());
        let i = table.create([1; 16], 5);
        assert_eq!(table.get(i).root_seen(), None);
        table.get_mut(i).root_at = 7;
        assert_eq!(table.get(i).root_seen(), Some(7));
    }
}
