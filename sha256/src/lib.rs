#![no_std]
#![deny(missing_docs)]

//! SHA-256 (FIPS 180-4) for chunkup's upload engine, which hashes every byte twice: once
//! into the current chunk's digest and once into the whole file's running digest.
//!
//! A crate of its own so that it is compiled with full optimisation even where chunkup is
//! built for size (`opt-level = "z"`) or for debugging: it is the hot loop of every upload.
//!
//! This module owns the hash state, the buffering of partial blocks, the padding, and the
//! compressions, tuned for WebAssembly SIMD in V8:
//! - [`Sha256`], one stream: scalar rounds (a stream is a chain of dependent rounds) with
//!   the working variables renamed rather than shifted, the message schedule in SIMD;
//! - [`update_pair`]: two states fed the same bytes. When their block boundaries coincide,
//!   each block's schedule is computed once and the rounds of both states run side by side
//!   in SIMD registers: two states cost 1.0-1.3x one (measured in Chromium 156; two
//!   separate updates cost 2x).
//!
//! `words` has the building blocks, `compress` the one loop they make. Without `simd128`
//! (native builds and tests) a portable stand-in for the SIMD types runs the same
//! algorithms with identical results. No dependencies, no allocation, `no_std`.

mod compress;
mod words;

use compress::{compress, compress_pair};
use words::H0;

/// An incremental SHA-256 hash: `new`, any number of `update`s, `finalize`. Clone it to
/// take a digest of everything so far and carry on.
#[derive(Clone)]
pub struct Sha256 {
    state: [u32; 8],
    /// Bytes of the current, incomplete block (the first `buffered`).
    buffer: [u8; 64],
    buffered: usize,
    /// Whole blocks compressed so far (for the length in the padding).
    blocks: u64,
}

/// Shows the length hashed, not the buffered bytes (file contents do not belong in logs).
impl core::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sha256")
            .field("len", &(self.blocks * 64 + self.buffered as u64))
            .finish_non_exhaustive()
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// A hash of no bytes yet.
    pub const fn new() -> Self {
        Sha256 {
            state: H0,
            buffer: [0; 64],
            buffered: 0,
            blocks: 0,
        }
    }

    /// The SHA-256 of `bytes`.
    pub fn digest(bytes: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(bytes);
        h.finalize()
    }

    /// Bytes waiting in the partial block (the total length fed so far, modulo 64).
    pub fn buffered_len(&self) -> usize {
        self.buffered
    }

    /// Feeds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        let rest = self.fill_buffer(bytes);
        let whole = rest.len() / 64 * 64;
        compress(&mut self.state, &rest[..whole]);
        self.blocks += (whole / 64) as u64;
        self.keep_tail(&rest[whole..]);
    }

    /// The digest of everything fed.
    pub fn finalize(mut self) -> [u8; 32] {
        let bit_len = (self.blocks * 64 + self.buffered as u64).wrapping_mul(8);
        // FIPS 180-4 §5.1.1: a 1 bit, zeros, then the length as a 64-bit big-endian number,
        // in one block if the length still fits after the 1 bit, else in two.
        let n = self.buffered;
        self.buffer[n] = 0x80;
        self.buffer[n + 1..].fill(0);
        if n >= 56 {
            compress(&mut self.state, &self.buffer);
            self.buffer = [0; 64];
        }
        self.buffer[56..].copy_from_slice(&bit_len.to_be_bytes());
        compress(&mut self.state, &self.buffer);
        let mut out = [0u8; 32];
        for (o, s) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&s.to_be_bytes());
        }
        out
    }

    /// Tops up a partial block from the front of `bytes` (compressing it once complete)
    /// and returns what is left.
    fn fill_buffer<'a>(&mut self, bytes: &'a [u8]) -> &'a [u8] {
        if self.buffered == 0 {
            return bytes;
        }
        let take = (64 - self.buffered).min(bytes.len());
        self.buffer[self.buffered..self.buffered + take].copy_from_slice(&bytes[..take]);
        self.buffered += take;
        if self.buffered == 64 {
            compress(&mut self.state, &self.buffer);
            self.blocks += 1;
            self.buffered = 0;
        }
        &bytes[take..]
    }

    /// Buffers what follows the whole blocks (shorter than 64 bytes). When that is not
    /// empty, [`Self::fill_buffer`] has emptied the buffer.
    fn keep_tail(&mut self, tail: &[u8]) {
        if !tail.is_empty() {
            self.buffer[..tail.len()].copy_from_slice(tail);
            self.buffered = tail.len();
        }
    }
}

/// Feeds the same `bytes` to two hashes, e.g. a chunk's digest and the file's running digest.
///
/// Same result as `a.update(bytes); b.update(bytes)`, in 1.1-1.3 times the time of one of
/// them (measured in Chromium; two `update`s take 2 times).
/// When both have the same number of bytes buffered (`a.buffered_len() == b.buffered_len()`,
/// true whenever the chunk started at a file offset that is a multiple of 64), they see
/// identical whole blocks, which are compressed into both states in one pass: one message
/// schedule, and the rounds of both states side by side in SIMD registers. Otherwise the
/// two are simply updated one after the other.
pub fn update_pair(a: &mut Sha256, b: &mut Sha256, bytes: &[u8]) {
    if a.buffered != b.buffered {
        a.update(bytes);
        b.update(bytes);
        return;
    }
    update_in_step([a, b], bytes, |[a, b], blocks| compress_pair(a, b, blocks));
}

/// Feeds `bytes` to hashes with equal buffered lengths: each completes its own partial
/// block (their earlier bytes may differ), then `compress_all` takes the whole blocks into
/// every state at once, and the same tail is buffered by all.
fn update_in_step<const N: usize>(
    mut hashes: [&mut Sha256; N],
    bytes: &[u8],
    compress_all: impl FnOnce([&mut [u32; 8]; N], &[u8]),
) {
    let mut rest = bytes;
    for h in hashes.iter_mut() {
        rest = h.fill_buffer(bytes);
    }
    let whole = rest.len() / 64 * 64;
    compress_all(hashes.each_mut().map(|h| &mut h.state), &rest[..whole]);
    for h in hashes {
        h.blocks += (whole / 64) as u64;
        h.keep_tail(&rest[whole..]);
    }
}

#[cfg(test)]
mod tests;
