//! Cutting a file into chunks: where each chunk starts and ends, and re-chunking the
//! arbitrary pieces a browser stream hands over into exactly those chunks.
//!
//! A `Blob` stream yields pieces of whatever size the browser likes (often 64 KiB); chunks
//! are `chunkSize` long, except the last. A piece that straddles a chunk boundary is split:
//! its tail stays in the [`Rechunker`] and starts the next chunk, so nothing is re-read.

/// The chunk grid of one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkPlan {
    /// The file's size in bytes.
    pub size: u64,
    /// The length of every chunk but the last.
    pub chunk_size: u64,
}

impl ChunkPlan {
    /// A plan for a file of `size` bytes in chunks of `chunk_size` (must be > 0).
    pub fn new(size: u64, chunk_size: u64) -> Self {
        debug_assert!(chunk_size > 0);
        ChunkPlan {
            size,
            chunk_size: chunk_size.max(1),
        }
    }

    /// The length of the chunk starting at `offset` (0 at or past the end).
    pub fn chunk_len_at(&self, offset: u64) -> u64 {
        self.size.saturating_sub(offset).min(self.chunk_size)
    }

    /// How many chunks remain from `offset` to the end.
    pub fn chunks_from(&self, offset: u64) -> u64 {
        self.size.saturating_sub(offset).div_ceil(self.chunk_size)
    }

    /// The chunks a fresh upload sends, as `(offset, length)`.
    pub fn chunks(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..self.chunks_from(0)).map(|i| {
            let offset = i * self.chunk_size;
            (offset, self.chunk_len_at(offset))
        })
    }
}

/// Holds the unconsumed tail of the last piece read from the stream.
#[derive(Debug, Default)]
pub struct Rechunker {
    buf: Vec<u8>,
    pos: usize,
}

impl Rechunker {
    /// An empty re-chunker.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when every byte of the last piece has been taken.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// How many bytes are waiting.
    pub fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Hands out the buffer to be overwritten with the next piece, which the re-chunker then
    /// yields from its start. The allocation, and its length, are kept from piece to piece so
    /// a source that resizes it to a same-sized piece does not re-zero it.
    pub fn refill(&mut self) -> &mut Vec<u8> {
        self.pos = 0;
        &mut self.buf
    }

    /// Takes up to `max` waiting bytes.
    pub fn take(&mut self, max: u64) -> &[u8] {
        let n = usize::try_from(max)
            .unwrap_or(usize::MAX)
            .min(self.available());
        let start = self.pos;
        self.pos += n;
        &self.buf[start..start + n]
    }

    /// Drops whatever is waiting (the stream is about to be recreated elsewhere).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit::pseudo_random_bytes;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn boundaries_for_edge_sizes() {
        let c = 8 * MIB;
        let cases: [(u64, &[(u64, u64)]); 6] = [
            (0, &[]),
            (1, &[(0, 1)]),
            (c - 1, &[(0, c - 1)]),
            (c, &[(0, c)]),
            (c + 1, &[(0, c), (c, 1)]),
            (3 * c, &[(0, c), (c, c), (2 * c, c)]),
        ];
        for (size, expected) in cases {
            let plan = ChunkPlan::new(size, c);
            let chunks: Vec<_> = plan.chunks().collect();
            assert_eq!(chunks, expected, "size {size}");
            assert_eq!(plan.chunks_from(0), expected.len() as u64);
            let total: u64 = chunks.iter().map(|(_, l)| l).sum();
            assert_eq!(total, size);
        }
    }

    #[test]
    fn plan_from_a_mid_chunk_offset_realigns() {
        let plan = ChunkPlan::new(100, 30);
        assert_eq!(plan.chunk_len_at(45), 30);
        assert_eq!(plan.chunk_len_at(90), 10);
        assert_eq!(plan.chunk_len_at(100), 0);
        assert_eq!(plan.chunk_len_at(150), 0);
        assert_eq!(plan.chunks_from(45), 2);
        assert_eq!(plan.chunks_from(100), 0);
    }

    /// Pieces of every awkward size re-chunk into exactly the planned chunks.
    #[test]
    fn rechunks_arbitrary_pieces_exactly() {
        let data = pseudo_random_bytes(1000, 9);
        for piece_len in [1usize, 7, 64, 99, 100, 101, 999, 1000, 4096] {
            for chunk_size in [1u64, 3, 100, 333, 1000, 5000] {
                let plan = ChunkPlan::new(data.len() as u64, chunk_size);
                let mut pieces = data.chunks(piece_len);
                let mut r = Rechunker::new();
                let mut rebuilt = Vec::new();
                for (offset, len) in plan.chunks() {
                    let mut chunk = Vec::new();
                    while (chunk.len() as u64) < len {
                        if r.is_empty() {
                            let piece = pieces.next().expect("stream ended early");
                            let buf = r.refill();
                            buf.clear();
                            buf.extend_from_slice(piece);
                        }
                        chunk.extend_from_slice(r.take(len - chunk.len() as u64));
                    }
                    assert_eq!(chunk, &data[offset as usize..(offset + len) as usize]);
                    rebuilt.extend(chunk);
                }
                assert_eq!(rebuilt, data, "piece {piece_len} chunk {chunk_size}");
                assert!(r.is_empty() && pieces.next().is_none());
            }
        }
    }

    #[test]
    fn clear_drops_waiting_bytes() {
        let mut r = Rechunker::new();
        r.refill().extend_from_slice(b"abcdef");
        assert_eq!(r.available(), 6);
        assert_eq!(r.take(2), b"ab");
        assert_eq!(r.available(), 4);
        r.clear();
        assert!(r.is_empty());
        assert_eq!(r.take(10), b"");
    }
}
