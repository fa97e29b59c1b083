//! Tail sampling on the owner core: whole-trace decisions, no locks, bounded memory,
//! deterministic.
//!
//! Each core owns one [`Sampler`], a synchronous state machine with no clock and no I/O: the
//! core hands it the span batches it owns ([`Sampler::add`]), calls [`Sampler::tick`] from a
//! timer set to [`Sampler::next_deadline`], and exports the [`Kept`] spans it returns. The same
//! inputs (batches, times, configuration) always give the same outputs.
//!
//! Depends on `shardtel-protocol` (span batches, trace ids) and `shardtel-config` only: the
//! engine feeds one [`Sampler`] per core, exports the [`Kept`] spans, and publishes its
//! [`SamplerStats`] as metric families.
//!
//! - **Zero copy.** A buffered span is a `(batch slot, span index)` pair pointing into the
//!   request buffer it arrived in (stored once per batch, its index without a trace id per
//!   span: the trace knows it, see `held`). Kept spans are returned as a batch of their own
//!   over the same buffer, ready for `reframe::encode_trace_spans`. The exceptions are the
//!   compaction of stragglers (below) and, when configured, compressed buffers (below). The
//!   engine copies the request bodies of a sampling pipeline into shared chunks
//!   ([`arena::BodyArena`]) before routing them: a buffer held for `decision_wait` then takes
//!   its length in memory, not its allocator size class.
//! - **Trace table.** Per pending trace: first/last arrival, root arrival, span count
//!   and bytes, earliest start and latest end, status codes seen, and one bit per span predicate
//!   policy, all updated as spans arrive (see [`policy`]), so a decision reads only the summary.
//! - **When.** `decision_wait` after the trace's first span, or `decision_wait_after_root` after
//!   its root span (no parent) arrived if that is sooner — or early, when a bound would be
//!   crossed (see below). Every decision is counted by [`DecisionReason`]. Due decisions are
//!   made by [`Sampler::tick`] and also at the start of every [`Sampler::add`], so a flood of
//!   arriving spans cannot starve the decision timer.
//! - **Root span "ended".** An SDK exports a span only once it has ended, so the root span's
//!   *arrival* is when the collector learns the root has ended; `decision_wait_after_root`
//!   counts from there, on the sampler's monotonic clock. The root's `end_time_unix_nano` is
//!   not used: it comes from the sender's wall clock (skew), and a backlog replayed from Kafka
//!   or a write-ahead log would find every root long "ended" and decide each trace before the
//!   rest of its spans were read.
//! - **Decision cache.** Decided trace ids are remembered (bounded FIFOs, one per outcome);
//!   a late span of a remembered trace is forwarded (sampled) or dropped (not sampled) at once
//!   and counted. A late span of a forgotten trace starts a new trace.
//!
//! # Bounds
//!
//! | bound | when it would be crossed |
//! |---|---|
//! | `max_traces_per_core` | a new trace first decides the oldest pending trace |
//! | `max_spans_per_trace`, `max_bytes_per_trace` | the trace is decided with what it has; the span follows the decision through the cache (a single span larger than `max_bytes_per_trace` is decided alone at once) |
//! | `max_buffered_bytes_per_core` | after each batch, the oldest traces are decided until the charge is within the bound |
//!
//! Every trace that starts buffering is decided (by one reason) or dropped at shutdown:
//! `traces_received = Σ decisions + shutdown drops + buffered`.
//!
//! # How memory is counted
//!
//! A buffered span keeps its whole request buffer alive, and when a request's spans belong to
//! several cores, each of them holds the same buffer (an `Rc` per core of one `Bytes`). The
//! per-core charge against `max_buffered_bytes_per_core` is, for every retained batch, this
//! core's **share** of the buffer — the bytes its spans and their resource and scope headers
//! occupy — but **at least a quarter** of the buffer (`table::MIN_SHARE_DIVISOR`), plus the
//! batch's index and each pending trace's table entry and span list (see `table::batch_cost`,
//! `table::trace_cost`). Shares add up to the buffer once across cores (full charging, the
//! earlier rule, counted it once per core); the floor bounds what a core can hold without being
//! charged for it: whatever the other cores released, the retained buffers are at most four
//! times their charge.
//!
//! Stragglers would keep that floor, and a whole buffer, for a few spans: a batch whose buffered
//! spans on this core have fallen below a quarter of its charged share (after some of them were
//! decided) is **compacted** once it has stayed so for `decision_wait / 4` — its remaining spans
//! are copied into a buffer of their own and the big one is released (see `compact`). That
//! is the sampler's only copy of span bytes; it frees at least four times what it copies, and
//! is counted (`compactions`, `compacted_spans`, `compacted_bytes`).
//!
//! **Compressed buffers** (`buffer_compression = "lz4"`, see `compress`). At the end of
//! [`Sampler::add`], the batch's spans still buffered on this core are copied (as a compaction
//! lays them out, at the same span positions) into one LZ4 block and the request buffer is
//! released. Such a batch is charged its block exactly, with no share and no floor, plus its
//! index; decisions never decompress (every policy reads the trace table's summary, built as
//! spans arrive), and kept spans are decompressed for export, into reused buffers of a small
//! bounded pool, through a small bounded cache of decompressed blocks (neither charged, like
//! the decision cache). Counted in
//! `compressed_batches`, `compression_*`, `decompress*`.
//!
//! While a batch is being added the charge may exceed the bound by that batch (it is already
//! in memory); when `add` returns it is within the bound again. The decision cache (32–48
//! bytes per id) and the slab of the trace table (about 170 bytes × `max_traces_per_core`) are
//! bounded by their own settings and not charged.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use shardtel_config::{PolicyConfig, PolicyKind, StatusCode, TailSamplingConfig};
//! use shardtel_sampler::{CoreShare, Sampler};
//! # let batch = shardtel_protocol::scan::SpanBatch::scan(bytes::Bytes::new()).unwrap();
//!
//! let mut config = TailSamplingConfig::new(vec![PolicyConfig {
//!     name: "errors".into(),
//!     kind: PolicyKind::StatusCode { status_codes: vec![StatusCode::Error], invert: false },
//! }]);
//! config.decision_wait = Duration::from_secs(10);
//! let mut sampler = Sampler::new(&config, CoreShare::SINGLE)?;
//!
//! let start = Instant::now();
//! let mut kept = Vec::new();
//! sampler.add(batch, start, &mut kept);
//! if let Some(deadline) = sampler.next_deadline() {
//!     sampler.tick(deadline, &mut kept);
//! }
//! for k in &kept {
//!     // encode_trace_spans(&k.batch, &k.spans, &mut encoded) and export
//! }
//! sampler.shutdown(start + Duration::from_secs(60), &mut kept);
//! assert_eq!(sampler.stats().buffered_traces, 0);
//! # Ok::<(), shardtel_sampler::SamplerError>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod arena;
mod cache;
pub mod capacity;
mod compact;
mod compress;
mod held;
mod idmap;
pub mod policy;
mod span_fields;
mod stats;
mod table;

#[cfg(test)]
mod model;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shardtel_config::{BufferCompression, OnShutdown, PolicyConfig, TailSamplingConfig};
use shardtel_protocol::hash::TraceIdHashBuilder;
use shardtel_protocol::scan::SpanBatch;
use shardtel_protocol::TraceId;

use cache::DecisionCache;
use compress::{Compressor, DecompressedCache, PlainPool};
use held::HeldBatch;
use idmap::{IdHash, IdMap};
use policy::{Facts, Policies, Vote};
use table::{span_list_capacity, trace_cost, BatchSlots, Held, SpanRef, TraceTable};

pub use policy::{probabilistic_hash, MAX_SPAN_PREDICATES};
pub use stats::{PolicyStats, SamplerStats};

/// Why a [`Sampler`] could not be built from a (validated) configuration.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    /// A `string_attribute` regex did not compile (the config crate checks them, so this
    /// happens only with hand-built configurations).
    #[error("policy {policy:?}: invalid regex: {source}")]
    InvalidRegex {
        /// The policy's name.
        policy: String,
        /// The regex error.
        source: regex::Error,
    },
    /// More span predicate policies than [`MAX_SPAN_PREDICATES`].
    #[error("policy {policy:?}: more than {max} attribute and trace_state policies")]
    TooManySpanPredicates {
        /// The first policy over the limit.
        policy: String,
        /// The limit.
        max: usize,
    },
}

/// Which share of process-wide rates this core gets: `rate_limiting.spans_per_second` and
/// `composite.max_total_spans_per_second` are split evenly across cores, the remainder going
/// one span/s each to the lowest-numbered cores (11 spans/s on 3 cores: 4, 4, 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoreShare {
    /// This core's index, `0..cores`.
    pub core: usize,
    /// Number of cores running a sampler.
    pub cores: usize,
}

impl CoreShare {
    /// A single core: the whole rate.
    pub const SINGLE: CoreShare = CoreShare { core: 0, cores: 1 };

    /// This core's part of `total`.
    pub fn split(self, total: u64) -> u64 {
        let cores = self.cores.max(1) as u64;
        let core = self.core as u64;
        total / cores + u64::from(core < total % cores)
    }
}

/// What triggered a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecisionReason {
    /// `decision_wait` after the trace's first span.
    Timer,
    /// `decision_wait_after_root` after the root span arrived.
    RootDone,
    /// A new trace found `max_traces_per_core` traces pending; this was the oldest.
    MaxTraces,
    /// The core's buffered bytes crossed `max_buffered_bytes_per_core`; this was the oldest.
    MaxBufferedBytes,
    /// The trace would have exceeded `max_spans_per_trace`.
    MaxSpansPerTrace,
    /// The trace would have exceeded `max_bytes_per_trace`.
    MaxBytesPerTrace,
    /// [`Sampler::shutdown`] with `on_shutdown = "decide"`.
    Shutdown,
}

impl DecisionReason {
    /// Every reason, in [`DecisionReason::index`] order.
    pub const ALL: [DecisionReason; 7] = [
        DecisionReason::Timer,
        DecisionReason::RootDone,
        DecisionReason::MaxTraces,
        DecisionReason::MaxBufferedBytes,
        DecisionReason::MaxSpansPerTrace,
        DecisionReason::MaxBytesPerTrace,
        DecisionReason::Shutdown,
    ];

    /// Position in [`DecisionReason::ALL`] and [`SamplerStats::decisions`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `reason` label value.
    pub fn name(self) -> &'static str {
        match self {
            DecisionReason::Timer => "timer",
            DecisionReason::RootDone => "root_done",
            DecisionReason::MaxTraces => "max_traces",
            DecisionReason::MaxBufferedBytes => "max_buffered_bytes",
            DecisionReason::MaxSpansPerTrace => "max_spans_per_trace",
            DecisionReason::MaxBytesPerTrace => "max_bytes_per_trace",
            DecisionReason::Shutdown => "shutdown",
        }
    }

    /// Whether this is an early decision forced by a bound.
    pub fn is_bound(self) -> bool {
        !matches!(
            self,
            DecisionReason::Timer | DecisionReason::RootDone | DecisionReason::Shutdown
        )
    }
}

/// Spans to export: a subset of one batch, as ascending indices into `batch.index.spans`. The
/// batch holds the kept spans only (its index is made for this value, its buffer is shared
/// with the traces of the same request that are still buffered), so `spans` lists them all.
#[derive(Clone, Debug)]
pub struct Kept {
    /// The batch the spans are in.
    pub batch: Rc<SpanBatch>,
    /// Ascending span indices, each at most once (for `reframe::encode_trace_spans`).
    pub spans: Vec<u32>,
}

/// Kept spans of one batch in one call: (span index, its trace's id).
type KeptSpans = Vec<(u32, TraceId)>;

/// [`Sampler::add`]'s lookup of a span whose trace is not pending.
const NOT_FOUND: u32 = u32::MAX;

/// The settings the sampler applies, in its own units.
#[derive(Clone, Copy, Debug)]
struct Limits {
    wait: u64,
    wait_after_root: Option<u64>,
    /// How long a batch stays sparse before its spans are compacted: `decision_wait / 4`.
    compact_after: u64,
    max_traces: usize,
    max_bytes: u64,
    max_spans_per_trace: usize,
    max_bytes_per_trace: u64,
    on_shutdown: OnShutdown,
}

impl Limits {
    fn of(config: &TailSamplingConfig) -> Limits {
        Limits {
            wait: nanos(config.decision_wait),
            wait_after_root: config.decision_wait_after_root.map(nanos),
            compact_after: nanos(config.decision_wait) / 4,
            max_traces: config.max_traces_per_core.max(1),
            max_bytes: config.max_buffered_bytes_per_core,
            max_spans_per_trace: (config.max_spans_per_trace as usize).max(1),
            max_bytes_per_trace: config.max_bytes_per_trace,
            on_shutdown: config.on_shutdown,
        }
    }
}

/// The policies of an earlier configuration, kept after a reload ([`Sampler::reconfigure`])
/// to decide the traces that were pending then; dropped once the last of them is decided.
struct Retiring {
    policies: Policies,
    /// Its pending traces: one bit per trace table index (as of the reload).
    traces: Vec<u64>,
    /// How many of them are still pending.
    pending: usize,
    /// Where each of its top-level policies counts its votes in `SamplerStats::policies`.
    stats_at: Vec<usize>,
    /// Predicate bits of the resources of the batch being added, under these policies.
    resource_bits: Vec<u64>,
}

impl Retiring {
    fn holds(&self, t: u32) -> bool {
        let (word, bit) = ((t / 64) as usize, t % 64);
        self.traces.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Marks trace `t` decided; true when it was this generation's.
    fn release(&mut self, t: u32) -> bool {
        let (word, bit) = ((t / 64) as usize, t % 64);
        match self.traces.get_mut(word) {
            Some(w) if *w & (1 << bit) != 0 => {
                *w &= !(1 << bit);
                self.pending -= 1;
                true
            }
            _ => false,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// `c` decompressed into a buffer from `pool`, counted in `stats` (a function, not a method:
/// its callers hold a batch slot of the sampler mutably).
fn decompress_counted(
    c: &compress::CompressedBatch,
    pool: &PlainPool,
    stats: &mut SamplerStats,
) -> HeldBatch {
    let started = Instant::now();
    let batch = c.decompress(pool);
    stats.decompressions += 1;
    stats.decompressed_bytes += c.plain_len();
    stats.decompression_nanos += nanos(started.elapsed());
    batch
}

/// One core's tail sampler. `!Send`: it holds `Rc`s of the batches it buffers.
pub struct Sampler {
    limits: Limits,
    /// The first `now` seen; times are kept as nanoseconds since then.
    epoch: Option<Instant>,
    /// The latest time seen (time never goes backwards inside the sampler).
    now: u64,
    table: TraceTable,
    slots: BatchSlots,
    cache: DecisionCache,
    policies: Policies,
    /// The configuration `policies` was compiled from.
    policy_config: Vec<PolicyConfig>,
    /// Earlier policies still deciding the traces pending when they were replaced, oldest first
    /// (empty but for the `decision_wait` after a reload that changed the policies).
    retiring: Vec<Retiring>,
    stats: SamplerStats,
    /// Counts public calls, to group a call's kept spans per batch.
    call: u64,
    /// The slot of the batch being added (not freed mid-call when its refs drop to zero).
    pinned: Option<u32>,
    /// Sparse batches to compact: (slot, serial, when it became sparse), oldest first.
    sparse: VecDeque<(u32, u64, u64)>,
    votes: Vec<Vote>,
    resource_bits: Vec<u64>,
    /// `buffer_compression`, as of the last configuration (applies to batches added after it).
    compression: BufferCompression,
    compressor: Compressor,
    decompressed: DecompressedCache,
    /// Buffers for decompressed blocks, reused.
    plain_pool: PlainPool,
    /// Which spans of the batch being added are buffered (with compression on).
    adding_live: Vec<bool>,
    /// Scratch of [`Sampler::add`]: each span's trace id hash, and its pending trace as looked
    /// up (unconfirmed) before the batch is added ([`NOT_FOUND`] when none).
    lookups: Vec<(IdHash, u32)>,
    /// Scratch: their indices.
    live_scratch: Vec<u32>,
    /// This call's kept spans, one group per batch in the order of their first kept span:
    /// the batch and its kept spans with their trace ids (made [`Kept`] by `finish`).
    emitting: Vec<(Rc<HeldBatch>, KeptSpans)>,
    /// The span lists of earlier calls' groups, kept for their room.
    emitting_spare: Vec<KeptSpans>,
}

impl Sampler {
    /// A sampler for one of `share.cores` cores, with `config`'s bounds and policies compiled.
    pub fn new(config: &TailSamplingConfig, share: CoreShare) -> Result<Sampler, SamplerError> {
        let policies = Policies::compile(config, share)?;
        let stats = SamplerStats::new(policies.names().map(|(n, d)| (n.to_string(), d)));
        // One key for the trace table's and the decision cache's maps: a span's hash serves
        // both lookups.
        let hasher = TraceIdHashBuilder::default();
        Ok(Sampler {
            limits: Limits::of(config),
            epoch: None,
            now: 0,
            table: TraceTable::new(IdMap::with_hasher(hasher.clone())),
            slots: BatchSlots::default(),
            cache: DecisionCache::new(
                IdMap::with_hasher(hasher),
                config.decision_cache.sampled_cache_size,
                config.decision_cache.non_sampled_cache_size,
            ),
            policies,
            policy_config: config.policies.clone(),
            retiring: Vec::new(),
            stats,
            call: 0,
            pinned: None,
            sparse: VecDeque::new(),
            votes: Vec::new(),
            resource_bits: Vec::new(),
            compression: config.buffer_compression,
            compressor: Compressor::default(),
            decompressed: DecompressedCache::default(),
            plain_pool: PlainPool::default(),
            adding_live: Vec::new(),
            lookups: Vec::new(),
            live_scratch: Vec::new(),
            emitting: Vec::new(),
            emitting_spare: Vec::new(),
        })
    }

    /// Statistics, current as of the last call.
    pub fn stats(&self) -> &SamplerStats {
        &self.stats
    }

    /// Whether the batches added now are held in their request buffers (`buffer_compression =
    /// "none"`), which the engine then copies into memory sized to them (see [`arena`]). With
    /// compression the sampler keeps its own block and lets go of the buffer at once.
    pub fn holds_request_buffers(&self) -> bool {
        self.compression == BufferCompression::None
    }

    /// What [`Sampler::shutdown`] does with pending traces (`on_shutdown`).
    pub fn on_shutdown(&self) -> OnShutdown {
        self.limits.on_shutdown
    }

    /// Applies a new configuration (a reload) without losing what is buffered.
    ///
    /// - **Bounds** (`decision_wait`, `decision_wait_after_root`, `max_traces_per_core`,
    ///   `max_buffered_bytes_per_core`, `max_spans_per_trace`, `max_bytes_per_trace`,
    ///   `on_shutdown`) apply at once, to pending traces too: their deadlines are recomputed from
    ///   their first span with the new `decision_wait`, and the next [`Sampler::add`] decides
    ///   the oldest early if a lowered bound is crossed. `decision_wait_after_root` counts for
    ///   roots that arrive after the reload.
    /// - **Policies**, when they changed, decide the traces that start after the reload. Every
    ///   trace pending at the reload keeps being summarised and is decided by the policies it
    ///   started under, so a reload never changes the decision of a trace in flight; those
    ///   policies are dropped once their last trace is decided (at most `decision_wait` later).
    ///   Per-policy counters carry over by policy name.
    /// - The decision cache (its sizes) is kept as it is.
    /// - `buffer_compression` applies to the batches added after the reload; batches already
    ///   held stay as they are.
    pub fn reconfigure(
        &mut self,
        config: &TailSamplingConfig,
        share: CoreShare,
    ) -> Result<(), SamplerError> {
        let limits = Limits::of(config);
        self.compression = config.buffer_compression;
        if config.policies == self.policy_config {
            self.limits = limits;
            return Ok(());
        }
        let policies = Policies::compile(config, share)?;
        self.limits = limits;
        let old = std::mem::replace(&mut self.policies, policies);
        self.policy_config = config.policies.clone();
        let mut retiring = Retiring {
            policies: old,
            traces: Vec::new(),
            pending: 0,
            stats_at: Vec::new(),
            resource_bits: Vec::new(),
        };
        for t in self.table.arrival_order() {
            if self.retiring.iter().any(|r| r.holds(t)) {
                continue;
            }
            let word = (t / 64) as usize;
            if retiring.traces.len() <= word {
                retiring.traces.resize(word + 1, 0);
            }
            retiring.traces[word] |= 1 << (t % 64);
            retiring.pending += 1;
        }
        if retiring.pending > 0 {
            self.retiring.push(retiring);
        }
        // Counters by name: the new policies first, then those only earlier ones have.
        let mut old_stats = std::mem::take(&mut self.stats.policies);
        let mut stats: Vec<PolicyStats> = self
            .policies
            .names()
            .map(
                |(name, is_drop)| match old_stats.iter().position(|p| p.name == name) {
                    Some(i) => old_stats.remove(i),
                    None => PolicyStats {
                        name: name.to_string(),
                        is_drop,
                        sample: 0,
                        not_sample: 0,
                        drop: 0,
                    },
                },
            )
            .collect();
        stats.append(&mut old_stats);
        for r in &mut self.retiring {
            r.stats_at = r
                .policies
                .names()
                .map(|(name, is_drop)| {
                    stats
                        .iter()
                        .position(|p| p.name == name)
                        .unwrap_or_else(|| {
                            stats.push(PolicyStats {
                                name: name.to_string(),
                                is_drop,
                                sample: 0,
                                not_sample: 0,
                                drop: 0,
                            });
                            stats.len() - 1
                        })
                })
                .collect();
        }
        self.stats.policies = stats;
        Ok(())
    }

    /// Traces pending under policies a reload replaced (see [`Sampler::reconfigure`]).
    pub fn traces_under_replaced_policies(&self) -> usize {
        self.retiring.iter().map(|r| r.pending).sum()
    }

    /// The earlier policies that decide trace `t`, if a reload replaced them while it was
    /// pending.
    fn generation_of(&self, t: u32) -> Option<usize> {
        if self.retiring.is_empty() {
            return None;
        }
        self.retiring.iter().position(|r| r.holds(t))
    }

    /// Trace `t` leaves the table: it leaves its generation, and a generation with no pending
    /// trace left is dropped. Returns the generation it was in.
    fn forget_generation(&mut self, t: u32) -> Option<Retiring> {
        let g = self.generation_of(t)?;
        self.retiring[g].release(t);
        if self.retiring[g].pending == 0 {
            Some(self.retiring.remove(g))
        } else {
            None
        }
    }

    /// Adds a batch whose spans this core owns.
    ///
    /// First, as [`Sampler::tick`] would, traces whose decision time has come are decided and
    /// due compactions done, so a flood of batches cannot hold decisions back even if the
    /// caller's timer runs late. Then spans of pending traces join them; spans of traces in
    /// the decision cache are resolved at once (forwarded into `out` if sampled, dropped and
    /// counted otherwise); other spans start new traces. Bounds this batch would cross force
    /// early decisions (counted by reason). Kept spans of every decision go to `out`.
    pub fn add(&mut self, batch: SpanBatch, now: Instant, out: &mut Vec<Kept>) {
        let now = self.advance(now);
        self.catch_up(now);
        if batch.index.spans.is_empty() {
            self.finish(out);
            return;
        }
        let mut resource_bits = std::mem::take(&mut self.resource_bits);
        self.policies.resource_bits(&batch, &mut resource_bits);
        for r in &mut self.retiring {
            r.policies.resource_bits(&batch, &mut r.resource_bits);
        }
        // Held without the spans' trace ids (see `held`); `entries` has them while adding.
        let (batch, entries) = HeldBatch::split(batch);
        let batch = Rc::new(batch);
        let slot = self.slots.insert(Rc::clone(&batch));
        self.pinned = Some(slot);
        let compress = self.compression == BufferCompression::Lz4;
        if compress {
            self.adding_live.clear();
            self.adding_live.resize(entries.len(), false);
        }
        self.stats.buffered_batches = self.slots.len() as u64;

        // Passes one and two: every span's trace id hashed and its id map slot asked for, then
        // every span's pending trace looked up and its entry asked for (or, for a trace not
        // pending, its decision cache slot), before any is read or changed. With millions of
        // traces pending each of these is a cache miss; asked for in loops with no other work,
        // they overlap instead of being taken one after another in the loop below. The lookups
        // are confirmed there (the trace may have been decided meanwhile, and a hash match is
        // not yet an id match); spans of traces created below are looked up again.
        let mut lookups = std::mem::take(&mut self.lookups);
        lookups.clear();
        let mut prev: Option<(TraceId, IdHash)> = None;
        for entry in &entries {
            let hash = match prev {
                Some((id, hash)) if id == entry.trace_id => hash,
                _ => {
                    let hash = self.table.hash(&entry.trace_id);
                    self.table.prefetch_slot(hash);
                    prev = Some((entry.trace_id, hash));
                    hash
                }
            };
            lookups.push((hash, NOT_FOUND));
        }
        let mut prev: Option<(IdHash, u32)> = None;
        for (hash, t) in &mut lookups {
            *t = match prev {
                Some((h, t)) if h == *hash => t,
                _ => {
                    let t = match self.table.candidate(*hash) {
                        Some(t) => {
                            self.table.prefetch(t);
                            t
                        }
                        None => {
                            self.cache.prefetch_get(*hash);
                            NOT_FOUND
                        }
                    };
                    prev = Some((*hash, t));
                    t
                }
            };
        }

        // Consecutive spans usually belong to the same trace: remember the last lookup until a
        // decision may have invalidated it.
        let mut last: Option<(TraceId, u32)> = None;
        for (i, entry) in entries.iter().enumerate() {
            self.stats.spans_received += 1;
            // The span bytes two spans ahead, which have usually left the cache while the
            // request waited for this core.
            if i + 2 < entries.len() {
                shardtel_protocol::prefetch::prefetch_bytes(batch.span(i + 2));
            }
            let body = batch.span(i);
            let len = body.len() as u64;
            let id = entry.trace_id;
            let (hash, candidate) = lookups[i];
            let pending = match last {
                Some((last_id, t)) if last_id == id => Some(t),
                _ if self.table.is(candidate, &id) => Some(candidate),
                _ => self.table.find_hashed(hash, &id),
            };
            if let Some(t) = pending {
                let trace = self.table.get(t);
                let reason = if trace.spans.len() + 1 > self.limits.max_spans_per_trace {
                    Some(DecisionReason::MaxSpansPerTrace)
                } else if trace.span_bytes + len > self.limits.max_bytes_per_trace {
                    Some(DecisionReason::MaxBytesPerTrace)
                } else {
                    None
                };
                match reason {
                    None => {
                        let resource = batch.index.scopes[entry.scope as usize].resource as usize;
                        let bits = match self.generation_of(t) {
                            Some(g) => self.retiring[g].resource_bits[resource],
                            None => resource_bits[resource],
                        };
                        self.append(t, slot, i as u32, body, bits);
                        last = Some((id, t));
                        continue;
                    }
                    Some(reason) => {
                        self.decide(t, reason, now);
                        last = None;
                    }
                }
            }
            if let Some(sampled) = self.cache.get(hash, &id) {
                if sampled {
                    self.stats.late_spans_forwarded += 1;
                    self.emit(slot, i as u32, id);
                } else {
                    self.stats.late_spans_dropped += 1;
                }
                continue;
            }
            // (A loop: a reload may have lowered the bound below what is pending.)
            while self.table.len() >= self.limits.max_traces {
                let Some(oldest) = self.table.oldest() else {
                    break;
                };
                self.decide(oldest, DecisionReason::MaxTraces, now);
            }
            let t = self.table.create_hashed(hash, id, now);
            self.stats.traces_received += 1;
            self.stats.buffered_traces += 1;
            self.charge(trace_cost(0));
            let resource = batch.index.scopes[entry.scope as usize].resource as usize;
            self.append(t, slot, i as u32, body, resource_bits[resource]);
            if len > self.limits.max_bytes_per_trace {
                self.decide(t, DecisionReason::MaxBytesPerTrace, now);
                last = None;
            } else {
                last = Some((id, t));
            }
        }
        self.resource_bits = resource_bits;
        self.lookups = lookups;
        drop(entries);
        drop(batch);
        if compress && self.slots.get(slot).refs > 0 {
            self.compress_slot(slot);
        }
        self.adding_live.clear();
        self.decide_over_byte_bound(now);
        self.pinned = None;
        if self.slots.get(slot).refs == 0 {
            self.remove_slot(slot);
        } else {
            self.mark_if_sparse(slot);
        }
        self.finish(out);
    }

    /// Decides every trace whose decision time has come, oldest deadline first, then compacts
    /// the batches that have been sparse for `decision_wait / 4` (see the module docs).
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Kept>) {
        let now = self.advance(now);
        self.catch_up(now);
        self.finish(out);
    }

    /// Due decisions, then due compactions.
    fn catch_up(&mut self, now: u64) {
        // Bounds a reload lowered hold from the next tick, not only from the next batch (an
        // idle core would otherwise keep what the old bounds allowed until the timers).
        while self.table.len() > self.limits.max_traces {
            let Some(oldest) = self.table.oldest() else {
                break;
            };
            self.decide(oldest, DecisionReason::MaxTraces, now);
        }
        self.decide_over_byte_bound(now);
        while let Some((t, deadline, reason)) = self.next_due() {
            if deadline > now {
                break;
            }
            if reason == DecisionReason::Timer {
                if let Some(next) = self.table.prefetch_after(t) {
                    self.cache.prefetch_insert(next);
                }
            }
            self.decide(t, reason, now);
        }
        while let Some(&(slot, serial, since)) = self.sparse.front() {
            if since.saturating_add(self.limits.compact_after) > now {
                break;
            }
            self.sparse.pop_front();
            if self
                .slots
                .get_serial(slot, serial)
                .is_some_and(|b| b.refs > 0)
            {
                self.compact(slot);
            }
        }
    }

    /// Decides the oldest traces, early, while the core holds more than
    /// `max_buffered_bytes_per_core`.
    fn decide_over_byte_bound(&mut self, now: u64) {
        while self.stats.buffered_bytes > self.limits.max_bytes {
            let Some(oldest) = self.table.oldest() else {
                break;
            };
            self.decide(oldest, DecisionReason::MaxBufferedBytes, now);
        }
    }

    /// Queues batch `slot` for compaction if it has just become sparse.
    fn mark_if_sparse(&mut self, slot: u32) {
        let b = self.slots.get_mut(slot);
        if !b.queued && b.cost.is_sparse(b.refs) {
            b.queued = true;
            let serial = b.serial;
            self.sparse.push_back((slot, serial, self.now));
        }
    }

    /// Copies the spans still buffered from batch `slot` into a batch of their own and points
    /// their traces at it; the old batch is released.
    fn compact(&mut self, slot: u32) {
        let old = match &self.slots.get(slot).held {
            Held::Plain(batch) => Rc::clone(batch),
            Held::Compressed(c) => {
                Rc::new(decompress_counted(c, &self.plain_pool, &mut self.stats))
            }
        };
        let refs = self.slots.get(slot).refs;
        // The pending traces with spans in this batch, and those spans. The held batch has no
        // trace ids: they are read from the span bodies (a span whose bytes are not held, in a
        // compressed batch, is not buffered).
        let mut traces: Vec<u32> = Vec::new();
        let mut last = None;
        for i in 0..old.index.spans.len() {
            let Some(id) = old.read_trace_id(i) else {
                continue;
            };
            if last == Some(id) {
                continue;
            }
            last = Some(id);
            if let Some(t) = self.table.find(&id) {
                traces.push(t);
            }
        }
        traces.sort_unstable();
        traces.dedup();
        let mut live: Vec<u32> = Vec::with_capacity(refs as usize);
        for &t in &traces {
            live.extend(
                self.table
                    .get(t)
                    .spans
                    .iter()
                    .filter(|r| r.slot == slot)
                    .map(|r| r.span),
            );
        }
        live.sort_unstable();
        debug_assert_eq!(live.len(), refs as usize);
        let small = compact::compact(&old, &live);
        drop(old);
        let bytes = small.buf.len() as u64;
        let new = if self.compression == BufferCompression::Lz4 {
            let all: Vec<u32> = (0..refs).collect();
            let c = self.compress_counted(&small, &all);
            self.slots.insert_compressed(c)
        } else {
            self.slots.insert(Rc::new(small))
        };
        self.slots.get_mut(new).refs = refs;
        for &t in &traces {
            for r in &mut self.table.get_mut(t).spans {
                if r.slot == slot {
                    let k = live.binary_search(&r.span).expect("live span") as u32;
                    *r = SpanRef { slot: new, span: k };
                }
            }
        }
        let charge = self.slots.get(new).cost.charge();
        self.charge(charge);
        let b = self.slots.get_mut(slot);
        b.refs = 0;
        let charge = b.cost.charge();
        self.refund(charge);
        self.remove_slot(slot);
        self.stats.compactions += 1;
        self.stats.compacted_spans += u64::from(refs);
        self.stats.compacted_bytes += bytes;
    }

    /// When the next decision is due (`None` when nothing is buffered). A deadline already
    /// past is returned as is: call [`Sampler::tick`] at once. Re-read it after every
    /// [`Sampler::add`] and [`Sampler::tick`]: a root span arriving with
    /// `decision_wait_after_root` set can bring it forward.
    pub fn next_deadline(&self) -> Option<Instant> {
        let (_, deadline, _) = self.next_due()?;
        Some(self.epoch? + Duration::from_nanos(deadline))
    }

    /// Shutdown with durability on and `on_shutdown = "drop"`: leaks the buffers of the pending
    /// traces, so they stay alive until the process exits and their ingest-log frames are
    /// never released (the next start replays them). Dropping them with this core would let
    /// the receiving core, still closing its log, checkpoint past them (seen: a trace lost).
    pub fn leak_pending(&mut self) {
        std::mem::forget(std::mem::take(&mut self.slots));
    }

    /// Shutdown: decides (`on_shutdown = "decide"`, reason [`DecisionReason::Shutdown`]) or
    /// drops (`"drop"`, counted) every pending trace, oldest first.
    pub fn shutdown(&mut self, now: Instant, out: &mut Vec<Kept>) {
        let now = self.advance(now);
        while let Some(t) = self.table.oldest() {
            match self.limits.on_shutdown {
                OnShutdown::Decide => self.decide(t, DecisionReason::Shutdown, now),
                OnShutdown::Drop => {
                    self.forget_generation(t);
                    let trace = self.table.remove(t);
                    self.stats.shutdown_dropped_traces += 1;
                    self.stats.shutdown_dropped_spans += trace.spans.len() as u64;
                    self.release(&trace);
                }
            }
        }
        self.finish(out);
    }

    /// Converts `now` to nanoseconds since the epoch, never going backwards.
    fn advance(&mut self, now: Instant) -> u64 {
        self.call += 1;
        let epoch = *self.epoch.get_or_insert(now);
        let t = nanos(now.saturating_duration_since(epoch));
        self.now = self.now.max(t);
        self.now
    }

    /// The pending trace with the earliest deadline: the head of the arrival list (timer) or of
    /// the root list (root_done); on a tie, the timer.
    fn next_due(&self) -> Option<(u32, u64, DecisionReason)> {
        let timer = self.table.oldest().map(|t| {
            let deadline = self
                .table
                .get(t)
                .first_seen
                .saturating_add(self.limits.wait);
            (t, deadline, DecisionReason::Timer)
        });
        let root = self.limits.wait_after_root.and_then(|wait| {
            let t = self.table.oldest_root()?;
            let seen = self.table.get(t).root_seen()?;
            Some((t, seen.saturating_add(wait), DecisionReason::RootDone))
        });
        match (timer, root) {
            (Some(a), Some(b)) => Some(if b.1 < a.1 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    fn charge(&mut self, bytes: u64) {
        self.stats.buffered_bytes += bytes;
    }

    fn refund(&mut self, bytes: u64) {
        debug_assert!(self.stats.buffered_bytes >= bytes);
        self.stats.buffered_bytes -= bytes;
    }

    /// Buffers span `span` of batch `slot` (body `body`) in trace `t`.
    fn append(&mut self, t: u32, slot: u32, span: u32, body: &[u8], resource_bits: u64) {
        let (fields, span_bits) = match self.generation_of(t) {
            Some(g) => self.retiring[g].policies.scan_span(body),
            None => self.policies.scan_span(body),
        };
        let bits = resource_bits | span_bits;
        let now = self.now;
        let trace = self.table.get_mut(t);
        let len = trace.spans.len();
        let (old_cap, new_cap) = (span_list_capacity(len), span_list_capacity(len + 1));
        if new_cap != old_cap {
            trace.spans.reserve_exact(new_cap - len);
        }
        trace.spans.push(SpanRef { slot, span });
        trace.span_bytes += body.len() as u64;
        if fields.start != 0 {
            trace.min_start = trace.min_start.min(fields.start);
        }
        trace.max_end = trace.max_end.max(fields.end);
        if (0..8).contains(&fields.status) {
            trace.status_seen |= 1 << fields.status;
        }
        trace.matched |= bits;
        let new_root = !fields.has_parent && trace.root_at == table::NO_ROOT;
        if new_root {
            trace.root_at = now;
        }
        if new_root && self.limits.wait_after_root.is_some() {
            self.table.push_root(t);
        }
        if new_cap != old_cap {
            self.charge(trace_cost(len + 1) - trace_cost(len));
        }
        if self.pinned == Some(slot) && !self.adding_live.is_empty() {
            self.adding_live[span as usize] = true;
        }
        let batch = self.slots.get_mut(slot);
        batch.refs += 1;
        if batch.refs == 1 {
            let cost = batch.cost.charge();
            self.charge(cost);
        }
        self.stats.buffered_spans += 1;
        self.stats.buffered_span_bytes += body.len() as u64;
    }

    /// Decides trace `t` now, emitting its spans if sampled.
    fn decide(&mut self, t: u32, reason: DecisionReason, now: u64) {
        let sampled = match self.generation_of(t) {
            None => {
                let trace = self.table.get(t);
                let facts = Facts { trace, now };
                let sampled = self.policies.decide(&facts, &mut self.votes);
                for (p, vote) in self.stats.policies.iter_mut().zip(&self.votes) {
                    p.count(*vote);
                }
                sampled
            }
            Some(g) => {
                let r = &mut self.retiring[g];
                let facts = Facts {
                    trace: self.table.get(t),
                    now,
                };
                let sampled = r.policies.decide(&facts, &mut self.votes);
                for (&at, vote) in r.stats_at.iter().zip(&self.votes) {
                    self.stats.policies[at].count(*vote);
                }
                self.forget_generation(t);
                sampled
            }
        };
        let trace = self.table.remove(t);
        let spans = trace.spans.len() as u64;
        let stats = &mut self.stats;
        stats.decisions[reason.index()] += 1;
        if sampled {
            stats.traces_sampled += 1;
            stats.spans_sampled += spans;
        } else {
            stats.traces_not_sampled += 1;
            stats.spans_not_sampled += spans;
        }
        let latency_us = now.saturating_sub(trace.first_seen) / 1_000;
        stats.decision_latency_us.saturating_record(latency_us);
        stats.decision_latency_sum_us += latency_us;
        self.cache
            .insert(self.table.hash(&trace.id), trace.id, sampled);
        self.stats.cache_sampled = self.cache.len(true) as u64;
        self.stats.cache_not_sampled = self.cache.len(false) as u64;
        if sampled {
            for r in &trace.spans {
                self.emit(r.slot, r.span, trace.id);
            }
        }
        self.release(&trace);
    }

    /// Drops a removed trace's references to its batches and its charge.
    fn release(&mut self, trace: &table::Trace) {
        for r in &trace.spans {
            if self.pinned == Some(r.slot) && !self.adding_live.is_empty() {
                self.adding_live[r.span as usize] = false;
            }
            let batch = self.slots.get_mut(r.slot);
            batch.refs -= 1;
            if batch.refs == 0 {
                let cost = batch.cost.charge();
                self.refund(cost);
                if self.pinned != Some(r.slot) {
                    self.remove_slot(r.slot);
                }
            } else if self.pinned != Some(r.slot) {
                self.mark_if_sparse(r.slot);
            }
        }
        self.refund(trace_cost(trace.spans.len()));
        self.stats.buffered_traces -= 1;
        self.stats.buffered_spans -= trace.spans.len() as u64;
        self.stats.buffered_span_bytes -= trace.span_bytes;
        self.stats.buffered_batches = self.slots.len() as u64;
    }

    /// Adds span `span` of batch `slot`, of trace `id`, to this call's group for that batch
    /// (see [`Sampler::finish`]).
    fn emit(&mut self, slot: u32, span: u32, id: TraceId) {
        let call = self.call;
        let batch = self.slots.get_mut(slot);
        if batch.kept_call != call {
            batch.kept_call = call;
            batch.kept_at = self.emitting.len();
            let spans = match &batch.held {
                Held::Plain(b) => Rc::clone(b),
                Held::Compressed(c) => match self.decompressed.get(slot, batch.serial) {
                    Some(b) => {
                        self.stats.decompression_cache_hits += 1;
                        b
                    }
                    None => {
                        let b = Rc::new(decompress_counted(c, &self.plain_pool, &mut self.stats));
                        self.decompressed.insert(slot, batch.serial, Rc::clone(&b));
                        self.stats.decompressed_cached_bytes = self.decompressed.bytes();
                        b
                    }
                },
            };
            let list = self.emitting_spare.pop().unwrap_or_default();
            self.emitting.push((spans, list));
        }
        self.emitting[batch.kept_at].1.push((span, id));
    }

    /// Releases batch slot `slot` (no span of it is buffered any more), with its decompressed
    /// block if the cache holds it.
    fn remove_slot(&mut self, slot: u32) {
        if let Held::Compressed(c) = &self.slots.get(slot).held {
            self.stats.compressed_held_bytes -= c.cost().buf;
            self.stats.compressed_held_plain_bytes -= c.plain_len();
            self.decompressed.forget(slot);
            self.stats.decompressed_cached_bytes = self.decompressed.bytes();
        }
        self.slots.remove(slot);
        self.stats.buffered_batches = self.slots.len() as u64;
    }

    /// Replaces the batch being added (slot `slot`) by a compressed copy of its spans that are
    /// still buffered, and charges the copy instead of the request buffer's share. Span
    /// positions do not change, so the trace table is left as it is.
    fn compress_slot(&mut self, slot: u32) {
        let mut live = std::mem::take(&mut self.live_scratch);
        live.clear();
        live.extend(
            self.adding_live
                .iter()
                .enumerate()
                .filter(|(_, l)| **l)
                .map(|(i, _)| i as u32),
        );
        let b = self.slots.get(slot);
        debug_assert_eq!(live.len(), b.refs as usize);
        let Held::Plain(batch) = &b.held else {
            unreachable!("a batch being added is not compressed yet")
        };
        let batch = Rc::clone(batch);
        let c = self.compress_counted(&batch, &live);
        drop(batch);
        self.live_scratch = live;
        let cost = c.cost();
        let b = self.slots.get_mut(slot);
        let old = b.cost.charge();
        b.held = Held::Compressed(Box::new(c));
        b.cost = cost;
        self.refund(old);
        self.charge(cost.charge());
    }

    /// Compresses spans `live` of `batch`, counted in the statistics.
    fn compress_counted(&mut self, batch: &HeldBatch, live: &[u32]) -> compress::CompressedBatch {
        let started = Instant::now();
        let c = self.compressor.compress(batch, live);
        self.stats.compression_nanos += nanos(started.elapsed());
        self.stats.compressed_batches += 1;
        self.stats.compression_in_bytes += c.plain_len();
        self.stats.compression_out_bytes += c.cost().buf;
        self.stats.compressed_held_bytes += c.cost().buf;
        self.stats.compressed_held_plain_bytes += c.plain_len();
        c
    }

    /// This call's kept spans as [`Kept`] values, one per batch in the order of their first
    /// kept span: each a batch of just those spans, in order, their trace ids back in their
    /// entries (see [`HeldBatch::kept`]).
    fn finish(&mut self, out: &mut Vec<Kept>) {
        for (batch, mut spans) in self.emitting.drain(..) {
            // Several traces and late spans may interleave.
            if !spans.is_sorted_by_key(|s| s.0) {
                spans.sort_unstable_by_key(|s| s.0);
            }
            debug_assert!(spans.windows(2).all(|w| w[0].0 < w[1].0));
            out.push(Kept {
                batch: Rc::new(batch.kept(&spans)),
                spans: (0..spans.len() as u32).collect(),
            });
            spans.clear();
            self.emitting_spare.push(spans);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{batch, batch_of, config, kv, policy, span, trace_id, ResourceSpec};
    use super::*;
    use shardtel_config::BufferCompression;
    use shardtel_config::{PolicyKind, StatusCode};
    use shardtel_protocol::proto::common::v1::any_value::Value;
    use shardtel_protocol::scan::SpanBatch;
    use shardtel_protocol::span::SpanView;

    fn errors() -> TailSamplingConfig {
        config(vec![policy(
            "errors",
            PolicyKind::StatusCode {
                status_codes: vec![StatusCode::Error],
                invert: false,
            },
        )])
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// (trace id, span id) of every kept span, in output order.
    fn kept_ids(kept: &[Kept]) -> Vec<(TraceId, u64)> {
        let mut ids = Vec::new();
        for k in kept {
            for &i in &k.spans {
                let e = &k.batch.index.spans[i as usize];
                let view =
                    SpanView::new(&k.batch.buf[e.range.start as usize..e.range.end as usize]);
                let mut sid = [0; 8];
                sid.copy_from_slice(view.span_id());
                ids.push((e.trace_id, u64::from_be_bytes(sid)));
            }
        }
        ids
    }

    fn user(value: &str) -> TailSamplingConfig {
        config(vec![policy(
            &format!("user-{value}"),
            PolicyKind::StringAttribute {
                key: "user.id".into(),
                values: vec![value.into()],
                enabled_regex_matching: false,
                invert: false,
            },
        )])
    }

    #[test]
    fn a_reload_decides_pending_traces_by_their_policies_and_new_ones_by_the_new() {
        let user_of = |v: &str| vec![("user.id", Value::StringValue(v.into()))];
        let mut cfg = user("vip");
        cfg.decision_wait = secs(10);
        let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        // Pending at the reload: 1 (vip), 2 (gold, its gold span arrives after the reload).
        s.add(
            batch(vec![
                span(1, 1).with_attrs(user_of("vip")),
                span(2, 1).root(),
            ]),
            t0,
            &mut out,
        );
        let mut gold = user("gold");
        gold.decision_wait = secs(5);
        s.reconfigure(&gold, CoreShare::SINGLE).unwrap();
        assert_eq!(s.traces_under_replaced_policies(), 2);
        // After: 3 (vip) and 4 (gold) start under the new policy; 1 and 2 get more spans.
        s.add(
            batch(vec![
                span(2, 2).with_attrs(user_of("gold")),
                span(3, 1).with_attrs(user_of("vip")),
                span(4, 1).with_attrs(user_of("gold")),
                span(1, 2),
            ]),
            t0 + secs(1),
            &mut out,
        );
        assert!(out.is_empty());
        // The new decision_wait (5 s) applies to the pending traces too.
        s.tick(t0 + secs(5), &mut out);
        assert_eq!(kept_ids(&out), [(trace_id(1), 1), (trace_id(1), 2)]);
        assert_eq!(s.traces_under_replaced_policies(), 0);
        out.clear();
        s.tick(t0 + secs(6), &mut out);
        assert_eq!(kept_ids(&out), [(trace_id(4), 1)]);
        let st = s.stats();
        assert_eq!((st.traces_sampled, st.traces_not_sampled), (2, 2));
        // Votes counted under each policy's own name; the new one listed first.
        let votes: Vec<(&str, u64, u64)> = st
            .policies
            .iter()
            .map(|p| (p.name.as_str(), p.sample, p.not_sample))
            .collect();
        assert_eq!(votes, [("user-gold", 1, 1), ("user-vip", 1, 1)]);
        assert_eq!(st.buffered_traces, 0);
    }

    #[test]
    fn reloads_in_a_row_keep_each_generation_of_pending_traces_with_its_policies() {
        let user_of = |v: &str| vec![("user.id", Value::StringValue(v.into()))];
        let mut s = Sampler::new(&user("vip"), CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        // Generation vip: 1 (vip), 5 (no user yet).
        s.add(
            batch(vec![span(1, 1).with_attrs(user_of("vip")), span(5, 1)]),
            t0,
            &mut out,
        );
        s.reconfigure(&user("gold"), CoreShare::SINGLE).unwrap();
        // Generation gold: 2 (gold); 5 gets a gold span, still under vip.
        s.add(
            batch(vec![
                span(2, 1).with_attrs(user_of("gold")),
                span(5, 2).with_attrs(user_of("gold")),
            ]),
            t0 + secs(1),
            &mut out,
        );
        s.reconfigure(&user("silver"), CoreShare::SINGLE).unwrap();
        assert_eq!(s.traces_under_replaced_policies(), 3);
        // Generation silver: 3 (silver), 4 (vip); 1 and 2 get more spans.
        s.add(
            batch(vec![
                span(3, 1).with_attrs(user_of("silver")),
                span(4, 1).with_attrs(user_of("vip")),
                span(1, 2),
                span(2, 2).with_attrs(user_of("silver")),
            ]),
            t0 + secs(2),
            &mut out,
        );
        assert!(out.is_empty());
        s.tick(t0 + secs(60), &mut out);
        let mut kept: Vec<(TraceId, u64)> = kept_ids(&out);
        kept.sort();
        let mut expected = vec![
            (trace_id(1), 1),
            (trace_id(1), 2),
            (trace_id(2), 1),
            (trace_id(2), 2),
            (trace_id(3), 1),
        ];
        expected.sort();
        assert_eq!(kept, expected);
        assert_eq!(s.traces_under_replaced_policies(), 0);
        let st = s.stats();
        assert_eq!((st.traces_sampled, st.traces_not_sampled), (3, 2));
        assert_eq!(st.buffered_traces, 0);
    }

    #[test]
    fn a_reload_with_the_same_policies_only_changes_bounds() {
        let mut s = Sampler::new(&errors(), CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.add(batch(vec![span(1, 1), span(2, 1)]), t0, &mut out);
        let mut cfg = errors();
        cfg.max_traces_per_core = 1;
        s.reconfigure(&cfg, CoreShare::SINGLE).unwrap();
        assert_eq!(s.traces_under_replaced_policies(), 0);
        // The lowered bound decides the oldest early at the next tick (an idle core too)...
        s.tick(t0, &mut out);
        assert_eq!(s.stats().decided(DecisionReason::MaxTraces), 1);
        assert_eq!(s.stats().buffered_traces, 1);
        // ... and at the next batch, which makes room for its trace.
        s.add(batch(vec![span(3, 1)]), t0, &mut out);
        assert_eq!(s.stats().decided(DecisionReason::MaxTraces), 2);
        assert_eq!(s.stats().buffered_traces, 1);
        // A lowered byte bound, too.
        let mut cfg = errors();
        cfg.max_buffered_bytes_per_core = 1;
        s.reconfigure(&cfg, CoreShare::SINGLE).unwrap();
        s.tick(t0, &mut out);
        assert_eq!(s.stats().decided(DecisionReason::MaxBufferedBytes), 1);
        assert_eq!(s.stats().buffered_traces, 0);
    }

    #[test]
    fn decides_after_decision_wait_and_keeps_whole_traces() {
        let mut cfg = errors();
        cfg.decision_wait = secs(10);
        let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        // Trace 1 arrives in two pieces, the error in the second; trace 2 has no error.
        s.add(
            batch(vec![span(1, 1).root(), span(2, 1).root(), span(1, 2)]),
            t0,
            &mut out,
        );
        s.add(
            batch(vec![span(1, 3).status(2), span(2, 2)]),
            t0 + secs(3),
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(s.next_deadline(), Some(t0 + secs(10)));
        s.tick(t0 + secs(9), &mut out);
        assert!(out.is_empty());
        s.tick(t0 + secs(10), &mut out);
        // One Kept per batch, holding just the kept spans (spans 0 and 2 of the first batch),
        // ascending.
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].spans, [0, 1]);
        assert_eq!(out[0].batch.index.spans.len(), 2);
        assert_eq!(out[1].spans, [0]);
        assert_eq!(
            kept_ids(&out),
            [(trace_id(1), 1), (trace_id(1), 2), (trace_id(1), 3)]
        );
        let st = s.stats();
        assert_eq!((st.traces_sampled, st.traces_not_sampled), (1, 1));
        assert_eq!((st.spans_sampled, st.spans_not_sampled), (3, 2));
        assert_eq!(st.decided(DecisionReason::Timer), 2);
        assert_eq!(st.policies[0].sample, 1);
        assert_eq!(st.decision_latency_us.len(), 2);
        let p100 = st.decision_latency_us.value_at_quantile(1.0);
        assert!(
            st.decision_latency_us.equivalent(p100, 10_000_000),
            "{p100}"
        );
        assert_eq!(
            (st.buffered_traces, st.buffered_spans, st.buffered_bytes),
            (0, 0, 0)
        );
        assert_eq!(st.buffered_batches, 0);
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn late_spans_follow_the_cached_decision() {
        let mut s = Sampler::new(&errors(), CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.add(batch(vec![span(1, 1).status(2), span(2, 1)]), t0, &mut out);
        s.tick(t0 + secs(30), &mut out);
        assert_eq!(kept_ids(&out), [(trace_id(1), 1)]);
        out.clear();
        // Late spans of both; a span of a new trace 3 in the same batch is buffered.
        s.add(
            batch(vec![span(2, 2).status(2), span(1, 2), span(3, 1)]),
            t0 + secs(31),
            &mut out,
        );
        assert_eq!(kept_ids(&out), [(trace_id(1), 2)]);
        // A batch of just the kept span (of the batch's three).
        assert_eq!(out[0].spans, [0]);
        assert_eq!(out[0].batch.index.spans.len(), 1);
        let st = s.stats();
        assert_eq!((st.late_spans_forwarded, st.late_spans_dropped), (1, 1));
        assert_eq!((st.buffered_traces, st.buffered_batches), (1, 1));
        assert_eq!((st.cache_sampled, st.cache_not_sampled), (1, 1));
    }

    #[test]
    fn decision_wait_after_root() {
        let mut cfg = errors();
        cfg.decision_wait = secs(30);
        cfg.decision_wait_after_root = Some(secs(2));
        cfg.policies = vec![policy("all", PolicyKind::AlwaysSample)];
        let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.add(batch(vec![span(1, 2), span(2, 2)]), t0, &mut out);
        s.add(batch(vec![span(2, 1).root()]), t0 + secs(5), &mut out);
        s.add(batch(vec![span(1, 1).root()]), t0 + secs(6), &mut out);
        assert_eq!(s.next_deadline(), Some(t0 + secs(7)));
        s.tick(t0 + secs(7), &mut out);
        assert_eq!(kept_ids(&out), [(trace_id(2), 2), (trace_id(2), 1)]);
        s.tick(t0 + secs(8), &mut out);
        assert_eq!(s.stats().decided(DecisionReason::RootDone), 2);
        // A trace whose root never comes waits for decision_wait.
        s.add(batch(vec![span(3, 2)]), t0 + secs(9), &mut out);
        assert_eq!(s.next_deadline(), Some(t0 + secs(39)));
        s.tick(t0 + secs(39), &mut out);
        assert_eq!(s.stats().decided(DecisionReason::Timer), 1);
    }

    #[test]
    fn max_traces_decides_the_oldest_early() {
        let mut cfg = errors();
        cfg.max_traces_per_core = 2;
        let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.add(batch(vec![span(1, 1).status(2)]), t0, &mut out);
        s.add(batch(vec![span(2, 1)]), t0 + secs(1), &mut out);
        s.add(batch(vec![span(3, 1), span(1, 2)]), t0 + secs(2), &mut out);
        // Trace 3 evicted trace 1 (kept, it has an error); its second span followed the cache.
        assert_eq!(kept_ids(&out), [(trace_id(1), 1), (trace_id(1), 2)]);
        assert_eq!(out.len(), 2);
        let st = s.stats();
        assert_eq!(st.decided(DecisionReason::MaxTraces), 1);
        assert_eq!(st.buffered_traces, 2);
        assert_eq!(st.late_spans_forwarded, 1);
    }

    #[test]
    fn per_trace_bounds_decide_that_trace_and_later_spans_follow() {
        let mut cfg = errors();
        cfg.max_spans_per_trace = 2;
        let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.add(
            batch(vec![
                span(1, 1).status(2),
                span(1, 2),
                span(1, 3),
                span(2, 1),
            ]),
            t0,
            &mut out,
        );
        assert_eq!(
            kept_ids(&out),
            [(trace_id(1), 1), (trace_id(1), 2), (trace_id(1), 3)]
        );
        assert_eq!(s.stats().decided(DecisionReason::MaxSpansPerTrace), 1);
        assert_eq!(s.stats().late_spans_forwarded, 1);

        let mut cfg = errors();
        cfg.max_bytes_per_trace = 300;
        let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        out.clear();
        s.add(
            batch(vec![
                span(1, 1).status(2).pad(100),
                span(1, 2).pad(100),
                span(1, 3).pad(100),
            ]),
            t0,
            &mut out,
        );
        assert_eq!(kept_ids(&out).len(), 3);
        assert_eq!(s.stats().decided(DecisionReason::MaxBytesPerTrace), 1);
        // A single span larger than the bound is decided alone, at once.
        out.clear();
        s.add(
            batch(vec![span(7, 1).status(2).pad(400), span(8, 1)]),
            t0,
            &mut out,
        );
        assert_eq!(kept_ids(&out), [(trace_id(7), 1)]);
        assert_eq!(s.stats().decided(DecisionReason::MaxBytesPerTrace), 2);
        assert_eq!(s.stats().buffered_traces, 1);
    }

    #[test]
    fn buffered_bytes_bound_decides_the_oldest_traces() {
        let one = batch(vec![span(1, 1).status(2)]);
        let cost = table::batch_cost_of(&one).charge() + trace_cost(1);
        let mut cfg = errors();
        // Room for two one-span batches, not three.
        cfg.max_buffered_bytes_per_core = 2 * cost + cost / 2;
        let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for n in 1..=3 {
            s.add(batch(vec![span(n, 1).status(2)]), t0 + secs(n), &mut out);
            assert!(s.stats().buffered_bytes <= cfg.max_buffered_bytes_per_core);
        }
        assert_eq!(s.stats().decided(DecisionReason::MaxBufferedBytes), 1);
        assert_eq!(kept_ids(&out), [(trace_id(1), 1)]);
        assert_eq!(s.stats().buffered_bytes, 2 * cost);
        assert_eq!(s.stats().buffered_batches, 2);
        // A batch alone larger than the bound: its own traces are decided at once.
        let big: Vec<_> = (10..40).map(|n| span(n, 1).pad(50)).collect();
        out.clear();
        s.add(batch(big), t0 + secs(5), &mut out);
        assert!(s.stats().buffered_bytes <= cfg.max_buffered_bytes_per_core);
        assert_eq!(
            s.stats().decided(DecisionReason::MaxBufferedBytes),
            1 + 2 + 30
        );
        assert_eq!(s.stats().buffered_traces, 0);
    }

    /// The parts of one request that `partition` sends to `cores` cores.
    fn parts(request: &SpanBatch, cores: usize) -> Vec<SpanBatch> {
        let mut parts = Vec::new();
        request.index.partition(
            cores,
            |t| shardtel_protocol::route::owner_core(t, cores),
            &mut parts,
        );
        parts
            .into_iter()
            .map(|index| SpanBatch {
                buf: request.buf.clone(),
                index,
                release_token: None,
            })
            .collect()
    }

    #[test]
    fn a_shared_request_buffer_is_charged_by_share_with_a_floor() {
        // 40 traces of one 200-byte span: the parts of a 2-core split share the buffer.
        let request = batch((0..40).map(|n| span(n, 1).pad(200)).collect());
        let b = request.buf.len() as u64;
        let whole = table::batch_cost_of(&request);
        // A core owning the whole request is charged all of it but the request framing.
        assert!(whole.part() <= b && whole.part() + 16 > b, "{whole:?}");
        let halves = parts(&request, 2);
        let shares: Vec<u64> = halves
            .iter()
            .map(|p| table::batch_cost_of(p).part())
            .collect();
        assert!(shares.iter().all(|&p| p < b));
        // Together the parts are charged about the buffer once, not once per core.
        let sum: u64 = shares.iter().sum();
        assert!(sum <= b + 16 && sum + 16 >= b, "{shares:?} of {b}");
        // A tiny part is charged a quarter of the buffer.
        let mut tiny = halves[0].clone();
        tiny.index.spans.truncate(1);
        assert_eq!(table::batch_cost_of(&tiny).part(), b.div_ceil(4));
        // Each sampler charges its part, and the pinned buffer is held once in memory.
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut total = 0;
        for (core, part) in halves.into_iter().enumerate() {
            let share = CoreShare { core, cores: 2 };
            let mut s = Sampler::new(&errors(), share).unwrap();
            let cost = table::batch_cost_of(&part).charge();
            let traces = part.index.spans.len();
            s.add(part, t0, &mut out);
            assert_eq!(
                s.stats().buffered_bytes,
                cost + traces as u64 * trace_cost(1)
            );
            total += s.stats().buffered_bytes;
        }
        assert!(total < 2 * b, "{total}");
    }

    #[test]
    fn add_decides_due_traces_before_its_own_spans() {
        // A caller whose timer runs late still gets decisions on time from its adds.
        let mut cfg = errors();
        cfg.decision_wait = secs(10);
        let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.add(batch(vec![span(1, 1).status(2)]), t0, &mut out);
        s.add(batch(vec![span(2, 1)]), t0 + secs(9), &mut out);
        assert!(out.is_empty());
        // No tick: the add at t0 + 10 s decides trace 1, then its late span follows.
        s.add(batch(vec![span(1, 2), span(3, 1)]), t0 + secs(10), &mut out);
        assert_eq!(kept_ids(&out), [(trace_id(1), 1), (trace_id(1), 2)]);
        let st = s.stats();
        assert_eq!(st.decided(DecisionReason::Timer), 1);
        assert_eq!(st.late_spans_forwarded, 1);
        assert_eq!(st.buffered_traces, 2);
    }

    #[test]
    fn stragglers_of_a_released_buffer_are_compacted_and_exported_intact() {
        // 8 traces in one request; 7 end (root) soon, one straggles until decision_wait.
        let mut cfg = errors();
        cfg.policies = vec![policy("all", PolicyKind::AlwaysSample)];
        cfg.decision_wait = secs(40);
        cfg.decision_wait_after_root = Some(secs(1));
        let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let spans: Vec<_> = (1..=8)
            .map(|n| {
                let sp = span(n, 1).pad(300);
                if n == 8 {
                    sp
                } else {
                    sp.root()
                }
            })
            .collect();
        let request = batch(spans);
        let straggler = request.span_body(7);
        let whole = table::batch_cost_of(&request).charge();
        s.add(request, t0, &mut out);
        s.tick(t0 + secs(1), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].spans.len(), 7);
        // The buffer is held for one span; it is still charged whole ...
        assert_eq!(s.stats().buffered_bytes, whole + trace_cost(1));
        // ... until it has been sparse for decision_wait / 4.
        s.tick(t0 + secs(10), &mut out);
        assert_eq!(s.stats().compactions, 0);
        s.tick(t0 + secs(11), &mut out);
        let st = s.stats();
        assert_eq!((st.compactions, st.compacted_spans), (1, 1));
        assert!(st.compacted_bytes < 400, "{}", st.compacted_bytes);
        // What is left: the straggler's small buffer, its batch's fixed overhead (index, slot)
        // and the trace's entry.
        assert!(
            st.buffered_bytes < whole / 3,
            "{} of {whole}",
            st.buffered_bytes
        );
        assert_eq!((st.buffered_batches, st.buffered_spans), (1, 1));
        // More spans of the straggler join it; at its decision all are exported, intact.
        out.clear();
        s.add(batch(vec![span(8, 2)]), t0 + secs(12), &mut out);
        s.tick(t0 + secs(40), &mut out);
        assert_eq!(kept_ids(&out), [(trace_id(8), 1), (trace_id(8), 2)]);
        let kept = out
            .iter()
            .find(|k| k.batch.index.spans.len() == 1 && k.spans == [0]);
        let body = kept.map(|k| k.batch.span_body(0));
        assert_eq!(body.as_ref(), Some(&straggler));
        let st = s.stats();
        assert_eq!((st.buffered_bytes, st.buffered_batches), (0, 0));
    }

    fn lz4(mut cfg: TailSamplingConfig) -> TailSamplingConfig {
        cfg.buffer_compression = BufferCompression::Lz4;
        cfg
    }

    /// The re-framed bytes of every `Kept`, in output order.
    fn encoded(out: &[Kept]) -> Vec<Vec<u8>> {
        out.iter()
            .map(|k| {
                let mut enc = shardtel_protocol::reframe::Encoded::default();
                shardtel_protocol::reframe::encode_trace_spans(&k.batch, &k.spans, &mut enc);
                enc.chunks.iter().flat_map(|c| c.iter().copied()).collect()
            })
            .collect()
    }

    #[test]
    fn compression_charges_the_block_exactly_and_releases_the_request_buffer() {
        let res = |name: &str| ResourceSpec {
            attrs: vec![kv("service.name", Value::StringValue(name.into()))],
        };
        // Trace 1 is decided at once (its single span is over max_bytes_per_trace), trace 3's
        // span is late (cached): neither is in the block.
        let mut cfg = lz4(errors());
        cfg.max_bytes_per_trace = 2000;
        let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.add(batch(vec![span(3, 1).status(2)]), t0, &mut out);
        s.tick(t0 + secs(30), &mut out);
        out.clear();
        let request = batch_of(&[
            (res("a"), vec![span(1, 1).pad(2500), span(2, 1).pad(300)]),
            (res("b"), vec![span(3, 2), span(4, 1).pad(200), span(4, 2)]),
        ]);
        let watch = request.buf.clone();
        let expected = {
            let live = [1, 3, 4];
            let copy = compact::compact(&HeldBatch::from(request.clone()), &live);
            let block = compress::block_len(&copy.buf) as u64;
            let index = &copy.index;
            block
                + compress::compressed_overhead(
                    index.resources.len(),
                    index.scopes.len(),
                    request.index.spans.len(),
                    index.headers.len(),
                )
                + trace_cost(1)
                + trace_cost(2)
        };
        s.add(request, t0 + secs(31), &mut out);
        let st = s.stats();
        assert_eq!(st.decided(DecisionReason::MaxBytesPerTrace), 1);
        assert_eq!(st.late_spans_forwarded, 1);
        assert_eq!((st.buffered_traces, st.buffered_spans), (2, 3));
        assert_eq!(st.buffered_bytes, expected);
        assert_eq!(st.compressed_batches, 2);
        assert!(st.compressed_held_bytes < st.compressed_held_plain_bytes);
        // The outputs of this call hold the request; once they are gone, only the copy is.
        drop(out);
        assert!(
            watch.is_unique(),
            "the sampler still holds the request buffer"
        );
        // Everything released at the end.
        let mut out = Vec::new();
        s.shutdown(t0 + secs(40), &mut out);
        let st = s.stats();
        assert_eq!(
            (
                st.buffered_bytes,
                st.compressed_held_bytes,
                st.decompressed_cached_bytes
            ),
            (0, 0, 0)
        );
    }

    #[test]
    fn compressed_and_plain_samplers_keep_the_same_bytes() {
        // Pieces of traces over many batches and resources, decided by timer, root and bounds.
        let mut cfg = errors();
        cfg.policies = vec![
            policy(
                "errors",
                PolicyKind::StatusCode {
                    status_codes: vec![StatusCode::Error],
                    invert: false,
                },
            ),
            policy(
                "vip",
                PolicyKind::StringAttribute {
                    key: "user.id".into(),
                    values: vec!["vip".into()],
                    enabled_regex_matching: false,
                    invert: false,
                },
            ),
        ];
        cfg.decision_wait = secs(10);
        cfg.decision_wait_after_root = Some(secs(2));
        cfg.max_traces_per_core = 4;
        let mut plain = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        let mut packed = Sampler::new(&lz4(cfg), CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let res = |n: u64| ResourceSpec {
            attrs: vec![kv(
                "service.name",
                Value::StringValue(format!("svc-{}", n % 3)),
            )],
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut kept = 0;
        for step in 0..60u64 {
            let mut groups = Vec::new();
            for g in 0..3 {
                let spans = (0..4)
                    .map(|k| {
                        let trace = step * 2 + k % 3;
                        let mut sp = span(trace, step * 100 + g * 10 + k).pad((k * 37) as usize);
                        if trace % 7 == 0 && k == 1 {
                            sp = sp.status(2);
                        }
                        if trace % 5 == 0 {
                            sp = sp.with_attrs(vec![("user.id", Value::StringValue("vip".into()))]);
                        }
                        if k == 3 && step % 2 == 0 {
                            sp = sp.root();
                        }
                        sp
                    })
                    .collect();
                groups.push((res(step + g), spans));
            }
            let now = t0 + Duration::from_millis(step * 700);
            a.clear();
            b.clear();
            plain.add(batch_of(&groups), now, &mut a);
            packed.add(batch_of(&groups), now, &mut b);
            plain.tick(now, &mut a);
            packed.tick(now, &mut b);
            assert_eq!(encoded(&a), encoded(&b), "step {step}");
            kept += kept_ids(&a).len();
        }
        a.clear();
        b.clear();
        plain.shutdown(t0 + secs(100), &mut a);
        packed.shutdown(t0 + secs(100), &mut b);
        assert_eq!(encoded(&a), encoded(&b));
        kept += kept_ids(&a).len();
        assert!(kept > 100, "{kept}");
        let (p, c) = (plain.stats(), packed.stats());
        assert_eq!(
            (p.traces_sampled, p.spans_sampled, p.decided_early()),
            (c.traces_sampled, c.spans_sampled, c.decided_early())
        );
        assert!(c.decided_early() > 0);
        assert!(c.decompressions > 0 && c.decompression_cache_hits > 0);
    }

    #[test]
    fn the_decompressed_block_cache_is_bounded() {
        // 30 batches, each of 10 root spans (kept 1 s later) and a straggler that stays
        // buffered: every block is decompressed once and stays held; the cache keeps only the
        // most recent few.
        let mut cfg = lz4(errors());
        cfg.policies = vec![policy("all", PolicyKind::AlwaysSample)];
        cfg.decision_wait_after_root = Some(secs(1));
        let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for b in 0..30u64 {
            let mut spans: Vec<_> = (0..10)
                .map(|k| span(b * 100 + k, 1).root().pad(50_000))
                .collect();
            spans.push(span(b * 100 + 99, 1));
            s.add(batch(spans), t0, &mut out);
        }
        s.tick(t0 + secs(1), &mut out);
        assert_eq!(out.len(), 30);
        let st = s.stats();
        assert_eq!(st.decompressions, 30);
        assert_eq!((st.buffered_batches, st.buffered_spans), (30, 30));
        // About 500 KB per block: the byte bound (4 MiB) holds the last 8 at most.
        let cache = &s.decompressed;
        assert!(cache.len() > 0 && cache.len() <= compress::DecompressedCache::MAX_BLOCKS);
        assert!(cache.bytes() <= compress::DecompressedCache::MAX_BYTES);
        assert_eq!(st.decompressed_cached_bytes, cache.bytes());
        // Released with their slots.
        s.shutdown(t0 + secs(60), &mut out);
        assert_eq!((s.decompressed.len(), s.stats().buffered_bytes), (0, 0));
    }

    #[test]
    fn time_never_goes_backwards_and_empty_batches_are_ignored() {
        let mut cfg = errors();
        cfg.decision_wait = secs(10);
        let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.add(batch(vec![span(1, 1)]), t0 + secs(5), &mut out);
        // An earlier `now` counts as the latest one seen.
        s.add(batch(vec![span(2, 1)]), t0, &mut out);
        assert_eq!(s.next_deadline(), Some(t0 + secs(15)));
        s.tick(t0 + secs(14), &mut out);
        assert_eq!(s.stats().buffered_traces, 2);
        s.tick(t0 + secs(15), &mut out);
        assert_eq!(s.stats().buffered_traces, 0);
        s.add(batch(Vec::new()), t0 + secs(16), &mut out);
        assert_eq!(
            (s.stats().spans_received, s.stats().buffered_batches),
            (2, 0)
        );
    }

    #[test]
    fn shutdown_decides_or_drops() {
        let t0 = Instant::now();
        for mode in [OnShutdown::Decide, OnShutdown::Drop] {
            let mut cfg = errors();
            cfg.on_shutdown = mode;
            let mut s = Sampler::new(&cfg, CoreShare::SINGLE).unwrap();
            let mut out = Vec::new();
            s.add(
                batch(vec![span(1, 1).status(2), span(2, 1), span(2, 2)]),
                t0,
                &mut out,
            );
            s.shutdown(t0 + secs(1), &mut out);
            let st = s.stats();
            assert_eq!(st.buffered_traces, 0);
            assert_eq!(st.buffered_bytes, 0);
            match mode {
                OnShutdown::Decide => {
                    assert_eq!(kept_ids(&out), [(trace_id(1), 1)]);
                    assert_eq!(st.decided(DecisionReason::Shutdown), 2);
                }
                OnShutdown::Drop => {
                    assert!(out.is_empty());
                    assert_eq!(
                        (st.shutdown_dropped_traces, st.shutdown_dropped_spans),
                        (2, 3)
                    );
                }
            }
        }
    }

    #[test]
    fn seed_policy_set_on_a_realistic_mix() {
        let cfg = shardtel_config::Config::from_str(
            r#"
[receivers.otlp]
[exporters.blackhole]
[pipelines.traces]
receivers = ["otlp"]
processors = ["tail_sampling"]
exporters = ["blackhole"]
[processors.tail_sampling]
decision_wait = "10s"
[[processors.tail_sampling.policies]]
name = "errors"
type = "status_code"
status_codes = ["ERROR"]
[[processors.tail_sampling.policies]]
name = "slow"
type = "latency"
threshold = "1s"
[[processors.tail_sampling.policies]]
name = "vip"
type = "string_attribute"
key = "user.id"
values = ["vip"]
[[processors.tail_sampling.policies]]
name = "baseline"
type = "probabilistic"
percent = 10
"#,
            "seed.toml",
        )
        .unwrap();
        let shardtel_config::ProcessorConfig::TailSampling(ts) = &cfg.processors["tail_sampling"]
        else {
            panic!("not a tail sampler")
        };
        let mut s = Sampler::new(ts, CoreShare::SINGLE).unwrap();
        let t0 = Instant::now();
        let mut out = Vec::new();
        let ms = 1_000_000;
        let n = 4000u64;
        let mut expected = std::collections::BTreeSet::new();
        for t in 0..n {
            let kind = t % 10;
            let root = span(t, 1).root();
            let (a, b) = match kind {
                0 => (root, span(t, 2).status(2)),
                1 => (root.times(ms, 1500 * ms), span(t, 2)),
                2 => (
                    root,
                    span(t, 2).with_attrs(vec![("user.id", Value::StringValue("vip".into()))]),
                ),
                _ => (
                    root,
                    span(t, 2).with_attrs(vec![("user.id", Value::StringValue("u-1".into()))]),
                ),
            };
            let by_hash = u128::from(probabilistic_hash(&trace_id(t), b"")) * 10 < 1 << 64;
            if kind <= 2 || by_hash {
                expected.insert(trace_id(t));
            }
            // Each trace in two pieces, under a resource.
            let r = ResourceSpec {
                attrs: vec![kv("service.name", Value::StringValue("cart".into()))],
            };
            s.add(batch_of(&[(r.clone(), vec![a])]), t0, &mut out);
            s.add(batch_of(&[(r, vec![b])]), t0, &mut out);
        }
        s.tick(t0 + secs(10), &mut out);
        let kept: std::collections::BTreeSet<TraceId> =
            kept_ids(&out).into_iter().map(|(t, _)| t).collect();
        assert_eq!(kept, expected);
        assert_eq!(kept_ids(&out).len(), 2 * kept.len());
        let rest = kept.len() as f64 - 0.3 * n as f64;
        // About 10% of the other 70%.
        assert!((rest - 0.07 * n as f64).abs() < 0.02 * n as f64, "{rest}");
        let st = s.stats();
        assert_eq!(
            st.policies.iter().map(|p| p.sample).collect::<Vec<_>>()[..3],
            [n / 10, n / 10, n / 10]
        );
    }
}
