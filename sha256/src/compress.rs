//! The compression functions: whole 64-byte blocks into one state ([`compress`]), or into
//! two states fed the same blocks ([`compress_pair`]).
//!
//! All three are one loop ([`compress_blocks`]) instantiated for a different word type.
//! Its shape is what measured fastest in V8 (Chromium 156): the message schedule in SIMD,
//! four words at a time, computed inside a loop of four rounds. Fully unrolled 64 rounds
//! (schedule in locals, or precomputed for four blocks at once in SIMD lanes) were no
//! faster, often slower, and 4-12x bigger (V8 spills heavily in long straight-line code).

use super::words::{round, Word, K, X2, X4};

/// Compresses `blocks` (whole 64-byte blocks; a shorter rest is ignored) into `state`.
pub(super) fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    compress_blocks(state, blocks);
}

/// Compresses the same blocks into two states at once: each state in one half of every
/// SIMD register ([`X2`]), one message schedule for both.
pub(super) fn compress_pair(a: &mut [u32; 8], b: &mut [u32; 8], blocks: &[u8]) {
    let mut s: [X2; 8] = core::array::from_fn(|k| X2::from_lanes([a[k], b[k]]));
    compress_blocks(&mut s, blocks);
    for (k, v) in s.iter().enumerate() {
        [a[k], b[k]] = v.to_lanes();
    }
}

/// The SHA-256 compression (FIPS 180-4 §6.2.2) of every block into `state`, whose words
/// are one state (`u32`) or several in SIMD lanes.
#[inline(always)]
fn compress_blocks<S: Word>(state: &mut [S; 8], blocks: &[u8]) {
    for block in blocks.as_chunks::<64>().0 {
        // x = W[t..t+16] as four vectors of four words.
        let mut x = X4::load_quarters(block);
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        let mut bc = b.xor(c);
        for k in K.as_chunks::<4>().0 {
            let w = x[0];
            // The next four schedule words, independent of the rounds below: the CPU
            // overlaps them. (The last four iterations compute words nobody uses; a
            // separate loop without them measured no faster and costs code.)
            x = [x[1], x[2], x[3], X4::schedule_next(x[0], x[1], x[2], x[3])];
            round!(a b c d e f g h bc, S::wk::<0>(w, k));
            round!(h a b c d e f g bc, S::wk::<1>(w, k));
            round!(g h a b c d e f bc, S::wk::<2>(w, k));
            round!(f g h a b c d e bc, S::wk::<3>(w, k));
            // After four rounds the roles have moved by four: rename back (register
            // moves at the loop's end, which the CPU mostly eliminates).
            (a, b, c, d, e, f, g, h) = (e, f, g, h, a, b, c, d);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wadd(v);
        }
    }
}
