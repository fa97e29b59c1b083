//! Buffer compression (`buffer_compression = "lz4"`): a batch's buffered spans held as one LZ4
//! block on the owner core instead of inside their request buffer.
//!
//! At the end of [`super::Sampler::add`], the spans of the batch that this core still buffers
//! (and their resource and scope header fields) are copied as `compact` lays them out and
//! compressed into a [`CompressedBatch`]; the core's reference to the request buffer is then
//! dropped. The index keeps every span's position (`compact::compact_in_place`), so the trace
//! table's `(slot, span)` references stay as they are, and decisions, which read only the trace
//! table's summaries, never decompress. Exporting a kept trace decompresses the blocks its spans
//! are in, through a small [`DecompressedCache`]: the traces of one batch are decided at about
//! the same time, so a block is usually decompressed once.
//!
//! The codec is the reference C LZ4 (see the workspace note on `lz4`) at [`ACCELERATION`]:
//! compressing is most of what this option costs per span, and on loadgen's payload the C
//! library at acceleration 3 takes about 20 % fewer instructions per byte than `lz4_flex`
//! (14 % fewer than itself at 1), for blocks about 4 % larger.

use std::mem::size_of;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;

use shardtel_protocol::scan::{ReleaseToken, ResourceEntry, ScopeEntry};

use lz4::block::CompressionMode;

use super::compact;
use super::held::{HeldBatch, HeldIndex, HeldSpan};
use super::table::{BatchCost, BatchSlot};

/// A batch's buffered spans as one LZ4 block, with the index of the uncompressed bytes.
#[derive(Debug)]
pub(crate) struct CompressedBatch {
    /// Positions in the uncompressed bytes; one entry per span of the batch it was made from
    /// (spans not buffered then have an empty range).
    index: HeldIndex,
    /// The LZ4 block, allocated to its exact size.
    block: Box<[u8]>,
    plain_len: u32,
    /// Spans the block holds.
    spans: u32,
    release_token: Option<ReleaseToken>,
}

impl CompressedBatch {
    /// What holding it costs: the block exactly (no share, no floor: the block is this core's
    /// alone), the index, this value (boxed) and the slot.
    pub(crate) fn cost(&self) -> BatchCost {
        let block = self.block.len() as u64;
        BatchCost {
            buf: block,
            own: block,
            own_spans_bytes: block,
            own_spans: self.spans,
            overhead: compressed_overhead(
                self.index.resources.capacity(),
                self.index.scopes.capacity(),
                self.index.spans.capacity(),
                self.index.headers.capacity(),
            ),
        }
    }

    /// Bytes before compression.
    pub(crate) fn plain_len(&self) -> u64 {
        u64::from(self.plain_len)
    }

    /// The spans, uncompressed: a batch with the same span positions, holding the release token.
    /// The bytes are decompressed into a buffer from `pool` (see [`PlainPool`]).
    pub(crate) fn decompress(&self, pool: &PlainPool) -> HeldBatch {
        let len = self.plain_len as usize;
        let mut plain = pool.take(len);
        let n = lz4::block::decompress_to_buffer(&self.block, Some(len as i32), &mut plain[..len])
            .expect("a block this sampler compressed decompresses");
        assert_eq!(n, len, "a block decompresses to its length");
        let buf = bytes::Bytes::from_owner(Pooled {
            plain,
            len,
            pool: pool.clone(),
            _release_token: self.release_token.clone(),
        });
        HeldBatch {
            buf,
            index: self.index.clone(),
            release_token: self.release_token.clone(),
        }
    }
}

/// Buffers that held decompressed blocks, for the next decompressions. A buffer comes back
/// when the last reference to its bytes goes (the decompressed cache's, the kept batches'
/// being exported), and the next block is decompressed over its old bytes, which LZ4
/// overwrites (`decompress` checks the length it wrote); only the part beyond the largest
/// block it held before is zeroed. Otherwise every block took a fresh buffer, which safe Rust
/// must zero before LZ4 writes to it: `perf` of the engine at 750K spans/s put that zeroing at
/// about 2 % of the process's CPU (BENCHMARKS.md, morning of 2026-12-07).
///
/// Bounded: at most [`PlainPool::MAX_BUFFERS`] buffers, each at most [`PlainPool::MAX_BUFFER`]
/// bytes (a larger one is freed, as is one that comes back to a full pool). Not charged
/// against `max_buffered_bytes_per_core`, like the decompressed cache. Lock-free: a buffer may
/// come back on whichever thread drops its bytes.
#[derive(Clone, Debug)]
pub(crate) struct PlainPool(Arc<ArrayQueue<Vec<u8>>>);

impl Default for PlainPool {
    fn default() -> Self {
        Self(Arc::new(ArrayQueue::new(Self::MAX_BUFFERS)))
    }
}

impl PlainPool {
    /// Most buffers kept: the decompressed cache's blocks and a few being exported.
    pub(crate) const MAX_BUFFERS: usize = 16;
    /// Largest buffer kept.
    pub(crate) const MAX_BUFFER: usize = 256 << 10;

    /// A buffer of at least `len` bytes, whose contents are unspecified (old bytes or zeros).
    fn take(&self, len: usize) -> Vec<u8> {
        let mut plain = self.0.pop().unwrap_or_default();
        if plain.len() < len {
            plain.resize(len, 0);
        }
        plain
    }

    /// Keeps `plain` for a next decompression, if it is small enough and there is room.
    fn give_back(&self, plain: Vec<u8>) {
        if plain.capacity() <= Self::MAX_BUFFER {
            let _ = self.0.push(plain);
        }
    }

    /// Buffers kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// The owner of a decompressed block's bytes (the first `len` of `plain`): gives its buffer
/// back to the pool when the last reference goes, and keeps the batch's release token until
/// then.
struct Pooled {
    plain: Vec<u8>,
    len: usize,
    pool: PlainPool,
    _release_token: Option<ReleaseToken>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.plain[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.plain));
    }
}

/// Bytes of a compressed batch besides its block: index vectors with room for that many
/// resources, scopes, spans and header ranges, the boxed [`CompressedBatch`] and the slot.
pub(crate) fn compressed_overhead(
    resources: usize,
    scopes: usize,
    spans: usize,
    headers: usize,
) -> u64 {
    let index = resources * size_of::<ResourceEntry>()
        + scopes * size_of::<ScopeEntry>()
        + spans * size_of::<HeldSpan>()
        + headers * size_of::<Range<u32>>();
    (index + size_of::<CompressedBatch>() + size_of::<BatchSlot>()) as u64
}

/// Compresses batches, reusing its scratch buffers (no allocation but the block and the index).
#[derive(Debug, Default)]
pub(crate) struct Compressor {
    plain: Vec<u8>,
    out: Vec<u8>,
}

impl Compressor {
    /// Spans `live` (ascending) of `batch` as a compressed batch; span `i` of `batch` is span
    /// `i` of [`CompressedBatch::decompress`].
    pub(crate) fn compress(&mut self, batch: &HeldBatch, live: &[u32]) -> CompressedBatch {
        let index = compact::compact_in_place(batch, live, &mut self.plain);
        let n = compress_into(&self.plain, &mut self.out, ACCELERATION);
        CompressedBatch {
            index,
            block: Box::from(&self.out[..n]),
            plain_len: self.plain.len() as u32,
            spans: live.len() as u32,
            release_token: batch.release_token.clone(),
        }
    }
}

/// LZ4's `acceleration`: 1 (its default) looks for a match at every byte until 64 bytes in a
/// row found none; 3 looks at every third byte from the start of a run without matches. Spans
/// have such runs (ids, timestamps, unique values), where this saves most of the search.
///
/// Higher values save little more: LZ4's work on spans is mostly per sequence (a literal run
/// and a match; about 20 per span, at every id, timestamp and attribute value that differs
/// from the spans before), which acceleration does not change. Measured on `sampler_path`'s
/// blocks (callgrind instructions per input byte, LZ4 alone, hash table reset excluded; time
/// of copy and compression from the test `compress::tests::time_per_span`; stored ÷ plain
/// bytes and the process's RSS per buffered span ÷ its wire bytes in `sampler_path sample
/// 6000 lz4`):
///
/// | acceleration | instr./byte | time | ratio | RSS ÷ wire |
/// |---|---|---|---|---|
/// | 1 | 5.72 | +9 % | 0.242 | 0.52 |
/// | 2 | 4.90 | +2 % | 0.258 | 0.56 |
/// | **3** | 4.58 | 1 | 0.268 | 0.55 |
/// | 4 | 4.33 | −3 % | 0.285 | 0.57 |
/// | 6 | 4.13 | −5 % | 0.319 | 0.61 |
/// | 8 | 3.84 | −8 % | 0.331 | 0.63 |
/// | 12 | 3.77 | −11 % | 0.381 | 0.69 |
///
/// Past 4 the memory passes issue 22's 0.6 × wire; 4 saves about 3 % of the time to copy and
/// compress (and under 1 % of a span's CPU end to end) for 4 % more memory, so 3 stays.
const ACCELERATION: i32 = 3;

/// `plain` as an LZ4 block in `out` (grown when needed, never shrunk: shrinking and growing
/// again would zero the regrown part for every batch); returns the block's length.
fn compress_into(plain: &[u8], out: &mut Vec<u8>, acceleration: i32) -> usize {
    let room = lz4::block::compress_bound(plain.len()).expect("a batch is less than 2 GiB");
    if out.len() < room {
        out.resize(room, 0);
    }
    lz4::block::compress_to_buffer(plain, Some(CompressionMode::FAST(acceleration)), false, out)
        .expect("the output has room for the worst case")
}

/// The length of `plain` as a block (what the sampler's tests expect to be charged for it).
#[cfg(test)]
pub(crate) fn block_len(plain: &[u8]) -> usize {
    compress_into(plain, &mut Vec::new(), ACCELERATION)
}

/// Decompressed blocks kept for the next decisions, most recently used first: at most
/// [`DecompressedCache::MAX_BLOCKS`] blocks and [`DecompressedCache::MAX_BYTES`] bytes (a block
/// larger than that is not kept). Not charged against `max_buffered_bytes_per_core`, like the
/// decision cache: bounded by its own limits.
#[derive(Debug, Default)]
pub(crate) struct DecompressedCache {
    /// (slot, serial, batch), most recently used first.
    blocks: Vec<(u32, u64, Rc<HeldBatch>)>,
    bytes: u64,
}

impl DecompressedCache {
    /// Most blocks kept.
    pub(crate) const MAX_BLOCKS: usize = 8;
    /// Most uncompressed bytes kept.
    pub(crate) const MAX_BYTES: u64 = 4 << 20;

    /// The block of slot `slot` (inserted as `serial`), if kept; it becomes the most recent.
    pub(crate) fn get(&mut self, slot: u32, serial: u64) -> Option<Rc<HeldBatch>> {
        let at = self
            .blocks
            .iter()
            .position(|(s, n, _)| *s == slot && *n == serial)?;
        let entry = self.blocks.remove(at);
        let batch = Rc::clone(&entry.2);
        self.blocks.insert(0, entry);
        Some(batch)
    }

    /// Keeps `batch` as the most recent, dropping the least recent beyond the bounds.
    pub(crate) fn insert(&mut self, slot: u32, serial: u64, batch: Rc<HeldBatch>) {
        let len = batch.buf.len() as u64;
        if len > Self::MAX_BYTES {
            return;
        }
        self.bytes += len;
        self.blocks.insert(0, (slot, serial, batch));
        while self.blocks.len() > Self::MAX_BLOCKS || self.bytes > Self::MAX_BYTES {
            let (_, _, old) = self.blocks.pop().expect("over the bounds means not empty");
            self.bytes -= old.buf.len() as u64;
        }
    }

    /// Drops the block of slot `slot`, if kept (the slot was released).
    pub(crate) fn forget(&mut self, slot: u32) {
        if let Some(at) = self.blocks.iter().position(|(s, _, _)| *s == slot) {
            let (_, _, old) = self.blocks.remove(at);
            self.bytes -= old.buf.len() as u64;
        }
    }

    /// Blocks kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Uncompressed bytes kept now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{batch_of, kv, span, ResourceSpec};
    use shardtel_protocol::proto::common::v1::any_value::Value;

    #[test]
    fn a_block_decompresses_to_its_spans_at_their_positions() {
        let res = |name: &str| ResourceSpec {
            attrs: vec![kv("service.name", Value::StringValue(name.into()))],
        };
        let batch = batch_of(&[
            (res("a"), vec![span(1, 1), span(2, 1).pad(300)]),
            (res("b"), vec![span(3, 1), span(4, 1).pad(100)]),
        ]);
        let token: ReleaseToken = std::sync::Arc::new(());
        let watch = std::sync::Arc::downgrade(&token);
        let mut batch = batch;
        batch.release_token = Some(token);
        let batch = HeldBatch::from(batch);
        let live = [1, 3];
        let c = Compressor::default().compress(&batch, &live);
        assert_eq!(c.spans, 2);
        let plain = c.decompress(&PlainPool::default());
        assert_eq!(plain.index.spans.len(), 4);
        for &i in &live {
            assert_eq!(plain.span(i as usize), batch.span(i as usize));
        }
        // The same bytes as the straggler compaction of those spans.
        assert_eq!(plain.buf, compact::compact(&batch, &live).buf);
        assert_eq!(c.cost().buf, c.block.len() as u64);
        // The release token lives as long as the block or anything decompressed from it.
        drop(batch);
        drop(c);
        assert!(watch.upgrade().is_some());
        drop(plain);
        assert!(watch.upgrade().is_none());
    }

    /// A measurement more than a check (`cargo test --release -p shardtel-sampler --lib
    /// time_per_span -- --ignored --nocapture`): the time per span of copying (as `compress`
    /// does) and compressing a core's part of the benchmark payloads at several accelerations,
    /// and of decompressing it, with the ratio. Each figure is the fastest of many rounds, the
    /// accelerations taking turns in every round, so that other work on a shared machine
    /// (which only ever adds time) affects them alike. The parts are in the cache: the
    /// absolute figures are lower than in the engine, the differences are what to read.
    #[test]
    #[ignore]
    fn time_per_span() {
        use std::time::Instant;
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/data");
        let mut parts = Vec::new();
        for file in ["traces-000.pb", "traces-001.pb"] {
            let payload = std::fs::read(root.join(file)).expect("benches/data payload");
            let batch = shardtel_protocol::scan::SpanBatch::scan(bytes::Bytes::from(payload))
                .expect("payload scans");
            let mut indexes = Vec::new();
            let owner = |t: &_| shardtel_protocol::route::owner_core(t, 2);
            batch.index.partition(2, owner, &mut indexes);
            for index in indexes {
                let live: Vec<u32> = (0..index.spans.len() as u32).collect();
                let part = shardtel_protocol::scan::SpanBatch {
                    buf: batch.buf.clone(),
                    index,
                    release_token: None,
                };
                parts.push((HeldBatch::split(part).0, live));
            }
        }
        let spans: usize = parts.iter().map(|(_, live)| live.len()).sum();
        let accelerations = [1, 2, 3, 4, 6, 8, 12];
        // Per acceleration: fastest compression, fastest decompression (seconds), ratio.
        let mut best = vec![(f64::MAX, f64::MAX, 0.0); accelerations.len()];
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let mut blocks: Vec<(Vec<u8>, usize)> = Vec::new();
        for _ in 0..2000 {
            for (k, &acceleration) in accelerations.iter().enumerate() {
                blocks.clear();
                let started = Instant::now();
                for (part, live) in &parts {
                    let index = compact::compact_in_place(part, live, &mut plain);
                    std::hint::black_box(index);
                    let n = compress_into(&plain, &mut out, acceleration);
                    blocks.push((out[..n].to_vec(), plain.len()));
                }
                best[k].0 = f64::min(best[k].0, started.elapsed().as_secs_f64());
                let started = Instant::now();
                for (block, len) in &blocks {
                    let mut plain = vec![0; *len];
                    lz4::block::decompress_to_buffer(block, Some(*len as i32), &mut plain)
                        .expect("decompresses");
                    std::hint::black_box(plain);
                }
                best[k].1 = f64::min(best[k].1, started.elapsed().as_secs_f64());
                let stored: usize = blocks.iter().map(|b| b.0.len()).sum();
                let plain: usize = blocks.iter().map(|b| b.1).sum();
                best[k].2 = stored as f64 / plain as f64;
            }
        }
        // What the figures rest on: every acceleration's blocks decompress to the bytes they
        // were made from.
        for (part, live) in &parts {
            let index = compact::compact_in_place(part, live, &mut plain);
            std::hint::black_box(index);
            for &acceleration in &accelerations {
                let n = compress_into(&plain, &mut out, acceleration);
                let mut back = vec![0; plain.len()];
                let m = lz4::block::decompress_to_buffer(
                    &out[..n],
                    Some(plain.len() as i32),
                    &mut back,
                )
                .expect("decompresses");
                assert_eq!(
                    (m, &back),
                    (plain.len(), &plain),
                    "acceleration {acceleration}"
                );
            }
        }
        for (k, acceleration) in accelerations.iter().enumerate() {
            let (c, d, ratio) = best[k];
            println!(
                "acceleration {acceleration}: compress {:.1} ns/span, decompress {:.1} ns/span, ratio {ratio:.3}",
                c * 1e9 / spans as f64,
                d * 1e9 / spans as f64,
            );
        }
    }

    #[test]
    fn decompression_reuses_buffers_within_the_pools_bounds() {
        let spans = |n: usize| {
            HeldBatch::from(batch_of(&[(
                ResourceSpec::default(),
                (1..=4).map(|i| span(i, 1).pad(n)).collect(),
            )]))
        };
        let pool = PlainPool::default();
        let mut compressor = Compressor::default();
        let big = compressor.compress(&spans(2000), &[0, 1, 2, 3]);
        let small = compressor.compress(&spans(10), &[1, 3]);
        // A buffer comes back when the bytes go, and the next, smaller block is decompressed
        // over the old bytes: what it holds is only its own.
        let first = big.decompress(&pool);
        assert_eq!(pool.len(), 0);
        let expected = compact::compact(&spans(10), &[1, 3]).buf;
        drop(first);
        assert_eq!(pool.len(), 1);
        let second = small.decompress(&pool);
        assert_eq!(pool.len(), 0);
        assert_eq!(second.buf, expected);
        drop(second);
        // Bounded in number...
        let held: Vec<_> = (0..PlainPool::MAX_BUFFERS + 3)
            .map(|_| small.decompress(&pool))
            .collect();
        drop(held);
        assert_eq!(pool.len(), PlainPool::MAX_BUFFERS);
        // ... and in size.
        let pool = PlainPool::default();
        let huge = compressor.compress(&spans(PlainPool::MAX_BUFFER), &[0]);
        drop(huge.decompress(&pool));
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn the_cache_keeps_the_most_recent_blocks_within_its_bounds() {
        let block = |n: usize| {
            Rc::new(HeldBatch::from(batch_of(&[(
                ResourceSpec::default(),
                vec![span(1, 1).pad(n)],
            )])))
        };
        let mut cache = DecompressedCache::default();
        for slot in 0..20 {
            cache.insert(slot, 1, block(100));
        }
        assert_eq!(cache.len(), DecompressedCache::MAX_BLOCKS);
        assert!(cache.get(19, 1).is_some() && cache.get(0, 1).is_none());
        // A use makes a block the most recent: it outlives the others.
        assert!(cache.get(12, 1).is_some());
        for slot in 20..27 {
            cache.insert(slot, 1, block(100));
        }
        assert!(cache.get(12, 1).is_some() && cache.get(13, 1).is_none());
        // Another serial in the same slot is another block.
        assert!(cache.get(12, 2).is_none());
        // The byte bound.
        cache.insert(30, 1, block(3 << 20));
        cache.insert(31, 1, block(3 << 20));
        assert!(cache.bytes() <= DecompressedCache::MAX_BYTES);
        assert!(cache.get(30, 1).is_none() && cache.get(31, 1).is_some());
        cache.insert(32, 1, block(5 << 20));
        assert!(cache.get(32, 1).is_none());
        cache.forget(31);
        assert!(cache.get(31, 1).is_none());
        let left: u64 = cache.blocks.iter().map(|b| b.2.buf.len() as u64).sum();
        assert_eq!(cache.bytes(), left);
    }
}
