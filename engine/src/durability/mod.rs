//! Ingest durability (`engine.durability = "ack_after_sync"`): each core's ingest log, the
//! release of its frames once their data is safe downstream, replay after a restart, the logs
//! of cores that no longer exist, the data directory's lock, and the ingest log's metrics.
//!
//! # Acknowledged means durable
//!
//! [`IngestLog::append`] appends a request body to the receiving core's log and waits for its
//! group commit; only then is the request routed, and only then does the client get success.
//!
//! # When a frame may be forgotten (DESIGN.md invariant 4)
//!
//! A frame may be dropped from the log once every span of it was decided by the sampler (kept
//! spans handed to *durable* export queues, dropped spans dropped) or, without a sampler, handed
//! to the durable export queues. Instead of per-channel watermarks, the engine uses the fact
//! that the hot path never copies span bytes (invariant 2): after the append, the request body
//! is wrapped in a [`bytes::Bytes`] that keeps the frame's token alive
//! ([`shardtel_protocol::scan::keep_alive`]). Every span batch routed
//! over the mesh, every buffer the sampler holds, every piece in an export batch waiting for
//! its disk-queue append (or, for in-memory queues, for its send) is a slice of that buffer.
//! When the last slice (and the last clone of the token) is dropped, on whichever core, the
//! token marks the frame's LSN released in a ring of single-writer-per-slot atomics. The
//! receiving core scans the ring from its low watermark every [`CHECKPOINT_EVERY`] and
//! checkpoints its log at the first unreleased LSN; whole segments below it are deleted. A
//! refused request drops its body at once, so its frame is released at once.
//!
//! Anything that copies span bytes out of the request buffer (a rewriting processor, the
//! metrics split after a processor changed a request, the sampler's compaction of stragglers)
//! must keep the frame unreleased until the copy is in a durable export queue: the copy is made
//! a `Bytes` whose owner also holds the original (`shardtel_processors::tied_to_origin`) or the frame's
//! release token.
//!
//! Below the pipeline: this module knows nothing of cores, routing or receivers; what a replay
//! does with a frame is the caller's function.

mod data_dir_lock;
mod ingest_log;
mod orphans;

pub use data_dir_lock::{create_private_dir, lock_data_dir, DataDirError, DataDirLock};
pub use ingest_log::{
    wal_fsync_latency, AppendError, Checkpoints, IngestLog, IngestLogSnapshot, OpenError, Tracked,
    CHECKPOINT_EVERY, MAX_UNRELEASED, WAL_FSYNC_SECONDS,
};
pub use orphans::{
    adopt_orphaned_queues, drain_orphaned_ingest_logs, orphans_of, report_orphaned_logs,
};
