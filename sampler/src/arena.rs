//! Request bodies a tail sampler retains, copied into large shared chunks.
//!
//! A retained request buffer stays in memory for `decision_wait`, as the allocation that holds
//! it: a body the HTTP/2 codec read is a slice of a read buffer sized by its frames, one
//! assembled from several frames an allocation of its declared size, a decompressed one a
//! vector of its own. The allocator rounds each of those up to its size class (mimalloc: up to
//! 25 %, about 10 % of a 40 KB body on average), and that rounding was the largest part of the
//! memory per buffered span above its wire size (docs/tail-sampling.md).
//!
//! [`BodyArena`] copies a body into the free end of a chunk of [`CHUNK`] bytes and hands out
//! that part of the chunk as `Bytes` (`BytesMut::split`, no allocation per body): the chunk is
//! freed when the last body in it is, and bodies received together are decided together
//! (`decision_wait` after their first span), so chunks are released about as soon as their
//! bodies. What stays unused is the tail of each chunk that the next body did not fit in (a
//! body at most [`CHUNK`] / 8 wastes at most 1/8 of a chunk; on average about half a body per
//! chunk), and the free end of the chunk being filled (one per core). Larger bodies are copied
//! into an exact allocation of their own (for those the allocator's rounding is small).
//!
//! The copy costs one `memcpy` of the body per request, on the receiving core, only on a
//! pipeline with tail sampling: a plain pipeline hands its bodies to the exporters and drops
//! them at once, so rounding costs it nothing and it does not copy.

use bytes::{Bytes, BytesMut};

/// Bytes per chunk. Large enough that the allocator serves it from pages of its own (no size
/// class rounding to speak of) and that a 40 KB request leaves about 2 % of it unused, small
/// enough that one chunk pinned by a few late bodies holds little.
pub const CHUNK: usize = 1 << 20;

/// Bodies up to this size go into chunks; larger ones get an allocation of their own.
pub const MAX_IN_CHUNK: usize = CHUNK / 8;

/// One core's chunk being filled (see the module docs).
#[derive(Debug, Default)]
pub struct BodyArena {
    /// The free end of the current chunk (empty, capacity left); no chunk before the first body.
    free: BytesMut,
}

impl BodyArena {
    /// A copy of `body` in memory sized to it (see the module docs).
    pub fn copy(&mut self, body: &[u8]) -> Bytes {
        if body.len() > MAX_IN_CHUNK {
            return Bytes::copy_from_slice(body);
        }
        if self.free.capacity() < body.len() {
            // The old chunk's free end goes with it: it is freed with the chunk's last body.
            self.free = BytesMut::with_capacity(CHUNK);
        }
        // Within capacity: no reallocation, the bytes land in the chunk.
        self.free.extend_from_slice(body);
        self.free.split().freeze()
    }

    /// Bytes still free in the current chunk.
    #[cfg(test)]
    fn spare(&self) -> usize {
        self.free.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_share_a_chunk_until_it_is_full() {
        let mut arena = BodyArena::default();
        let body = vec![7u8; 40_000];
        let a = arena.copy(&body);
        let b = arena.copy(&body[..1000]);
        assert_eq!(&a[..], &body[..]);
        assert_eq!(&b[..], &body[..1000]);
        // Consecutive in one allocation.
        assert_eq!(a.as_ptr() as usize + a.len(), b.as_ptr() as usize);
        assert_eq!(arena.spare(), CHUNK - 41_000);
        // A body that does not fit starts a new chunk; the earlier bodies keep theirs.
        let mut n = 0;
        while arena.spare() >= body.len() {
            arena.copy(&body);
            n += 1;
        }
        assert_eq!(n, (CHUNK - 41_000) / 40_000);
        let c = arena.copy(&body);
        assert_eq!(&c[..], &body[..]);
        assert_eq!(arena.spare(), CHUNK - 40_000);
        assert_eq!(&a[..], &body[..]);
        drop(arena);
        assert_eq!(&c[..], &body[..]);
    }

    #[test]
    fn large_bodies_are_copied_on_their_own() {
        let mut arena = BodyArena::default();
        let body = vec![1u8; MAX_IN_CHUNK + 1];
        let a = arena.copy(&body);
        assert_eq!(&a[..], &body[..]);
        assert_eq!(arena.spare(), 0);
        let small = arena.copy(b"abc");
        assert_eq!(&small[..], b"abc");
    }
}
