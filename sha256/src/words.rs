//! The SHA-256 building blocks: constants, the round (written once, as a macro over the
//! [`Word`] trait, for a `u32` or for SIMD lanes holding several independent states), and
//! the SIMD types: [`X4`] (four `u32` lanes: the message schedule) and
//! [`X2`] (two states, each stored twice, see there).
//!
//! On wasm32 with `simd128` these wrap `core::arch::wasm32::v128`; elsewhere a portable
//! stand-in with the same lane layout and results is used, so the algorithms and their
//! tests run unchanged on any target.

/// FIPS 180-4 §4.2.2: the first 32 bits of the fractional parts of the cube roots of the
/// first 64 primes.
pub(super) const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

/// FIPS 180-4 §5.3.3: the initial hash value.
pub(super) const H0: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// What a round needs from its working variables: one state (`u32`) or several states in
/// SIMD lanes. Everything is `#[inline(always)]`, so the rounds become straight-line code
/// on locals whatever the caller's opt-level.
pub(super) trait Word: Copy {
    /// Wrapping addition (modulo 2^32 in every lane).
    fn wadd(self, other: Self) -> Self;
    fn xor(self, other: Self) -> Self;
    /// Σ0(a) = ROTR²(a) ⊕ ROTR¹³(a) ⊕ ROTR²²(a)
    fn big_sigma0(self) -> Self;
    /// Σ1(e) = ROTR⁶(e) ⊕ ROTR¹¹(e) ⊕ ROTR²⁵(e)
    fn big_sigma1(self) -> Self;
    /// Ch(e, f, g) = (e ∧ f) ⊕ (¬e ∧ g): f where e has a 1, g elsewhere.
    fn ch(e: Self, f: Self, g: Self) -> Self;
    /// Maj(a, b, c), given `b_xor_c` = b ⊕ c: where b and c agree the majority is b,
    /// elsewhere a decides. b ⊕ c is the previous round's a ⊕ b, so it comes for free.
    fn maj(a: Self, b: Self, b_xor_c: Self) -> Self;
    /// W[t] + K[t] for round t = 4i + N in this word type, from W[4i..4i+4] (one vector of
    /// the SIMD message schedule) and K[4i..4i+4].
    fn wk<const N: usize>(w: X4, k: &[u32; 4]) -> Self;
}

/// σ0(w) = ROTR⁷(w) ⊕ ROTR¹⁸(w) ⊕ SHR³(w)
#[inline(always)]
#[cfg_attr(
    all(target_arch = "wasm32", target_feature = "simd128"),
    allow(dead_code)
)]
fn small_sigma0(x: u32) -> u32 {
    x.rotate_right(7) ^ x.rotate_right(18) ^ (x >> 3)
}

/// σ1(w) = ROTR¹⁷(w) ⊕ ROTR¹⁹(w) ⊕ SHR¹⁰(w)
#[inline(always)]
#[cfg_attr(
    all(target_arch = "wasm32", target_feature = "simd128"),
    allow(dead_code)
)]
fn small_sigma1(x: u32) -> u32 {
    x.rotate_right(17) ^ x.rotate_right(19) ^ (x >> 10)
}

impl Word for u32 {
    #[inline(always)]
    fn wadd(self, other: u32) -> u32 {
        self.wrapping_add(other)
    }
    #[inline(always)]
    fn xor(self, other: u32) -> u32 {
        self ^ other
    }
    // wasm has i32.rotr (one `ror` in V8's code).
    #[inline(always)]
    fn big_sigma0(self) -> u32 {
        self.rotate_right(2) ^ self.rotate_right(13) ^ self.rotate_right(22)
    }
    #[inline(always)]
    fn big_sigma1(self) -> u32 {
        self.rotate_right(6) ^ self.rotate_right(11) ^ self.rotate_right(25)
    }
    // Three operations instead of four: wasm has no and-not.
    #[inline(always)]
    fn ch(e: u32, f: u32, g: u32) -> u32 {
        g ^ (e & (f ^ g))
    }
    #[inline(always)]
    fn maj(a: u32, b: u32, b_xor_c: u32) -> u32 {
        b ^ ((a ^ b) & b_xor_c)
    }
    // K is added in scalar code (measured a little faster than a SIMD add and four lane
    // extractions of the sums, and smaller).
    #[inline(always)]
    fn wk<const N: usize>(w: X4, k: &[u32; 4]) -> u32 {
        w.lane::<N>().wrapping_add(k[N])
    }
}

/// One SHA-256 round on eight working variables of any [`Word`] type.
///
/// The variables are renamed, never moved: round t+1 is invoked with the names rotated by
/// one (`h a b c d e f g`), the new e lands in `$d` and the new a in `$h`. `$bc` carries
/// b ⊕ c from round to round for [`Word::maj`]. `$wk` is W[t] + K[t].
macro_rules! round {
    ($a:ident $b:ident $c:ident $d:ident $e:ident $f:ident $g:ident $h:ident $bc:ident, $wk:expr) => {{
        // h + W + K and Ch do not wait for Σ1(e), the longest part of the round.
        let t1 = $h
            .wadd($wk)
            .wadd(Word::ch($e, $f, $g))
            .wadd($e.big_sigma1());
        let t2 = $a.big_sigma0().wadd(Word::maj($a, $b, $bc));
        $bc = $a.xor($b);
        $d = $d.wadd(t1);
        $h = t1.wadd(t2);
    }};
}
pub(super) use round;

pub(super) use imp::{X2, X4};

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod imp {
    use super::Word;
    use core::arch::wasm32::*;

    /// Four `u32` lanes: four consecutive words of the message schedule.
    #[derive(Clone, Copy)]
    pub(in super::super) struct X4(v128);

    /// Two independent `u32`s, each stored twice: lanes `[x, x, y, y]`. A 64-bit shift of
    /// `x:x` right by n leaves ROTR(x, n) in its low half, so a rotation is one
    /// `i64x2.shr_u` instead of two 32-bit shifts and an or (wasm has no SIMD rotate);
    /// Σ then copies the low halves up again with one shuffle to keep values doubled.
    #[derive(Clone, Copy)]
    pub(in super::super) struct X2(v128);

    impl X4 {
        #[inline(always)]
        pub(in super::super) fn from_lanes(l: [u32; 4]) -> X4 {
            X4(u32x4(l[0], l[1], l[2], l[3]))
        }
        #[inline(always)]
        pub(in super::super) fn lane<const N: usize>(self) -> u32 {
            u32x4_extract_lane::<N>(self.0)
        }
        /// The 16 big-endian words of a block as four vectors. wasm has no scalar byte
        /// swap (LLVM would expand `u32::from_be_bytes` into a dozen operations): one
        /// unaligned load and one shuffle per four words instead.
        #[inline(always)]
        pub(in super::super) fn load_quarters(block: &[u8; 64]) -> [X4; 4] {
            core::array::from_fn(|i| {
                assert!(i < 4);
                // SAFETY: i < 4, so the 16 bytes at 16 * i lie within the 64-byte block;
                // v128_load has no alignment requirement.
                let v = unsafe { v128_load(block.as_ptr().add(16 * i).cast::<v128>()) };
                X4(i8x16_shuffle::<
                    3,
                    2,
                    1,
                    0,
                    7,
                    6,
                    5,
                    4,
                    11,
                    10,
                    9,
                    8,
                    15,
                    14,
                    13,
                    12,
                >(v, v))
            })
        }
        /// W[t..t+4] from x0 = W[t-16..t-12], x1, x2 and x3 = W[t-4..t] (FIPS 180-4 §6.2.2
        /// step 1). σ0 and the additions are 4-wide; σ1 needs W[t-2] and W[t-1], then W[t]
        /// and W[t+1] computed here, so it runs twice on two lanes (the other two lanes are
        /// zero, and σ1(0) = 0).
        #[inline(always)]
        pub(in super::super) fn schedule_next(x0: X4, x1: X4, x2: X4, x3: X4) -> X4 {
            let zero = u32x4_splat(0);
            let w15 = X4(u32x4_shuffle::<1, 2, 3, 4>(x0.0, x1.0));
            let w7 = X4(u32x4_shuffle::<1, 2, 3, 4>(x2.0, x3.0));
            let s = x0.wadd(w7).wadd(w15.small_sigma0());
            let s = s.wadd(X4(u32x4_shuffle::<2, 3, 4, 5>(x3.0, zero)).small_sigma1());
            s.wadd(X4(u32x4_shuffle::<4, 5, 0, 1>(s.0, zero)).small_sigma1())
        }
        #[inline(always)]
        fn shr(self, n: u32) -> X4 {
            X4(u32x4_shr(self.0, n))
        }
        /// Two shifts and an or: wasm has no SIMD rotate.
        #[inline(always)]
        fn rotr(self, n: u32) -> X4 {
            X4(v128_or(u32x4_shr(self.0, n), u32x4_shl(self.0, 32 - n)))
        }
        #[inline(always)]
        fn small_sigma0(self) -> X4 {
            self.rotr(7).xor(self.rotr(18)).xor(self.shr(3))
        }
        #[inline(always)]
        fn small_sigma1(self) -> X4 {
            self.rotr(17).xor(self.rotr(19)).xor(self.shr(10))
        }
    }

    impl Word for X4 {
        #[inline(always)]
        fn wadd(self, other: X4) -> X4 {
            X4(u32x4_add(self.0, other.0))
        }
        #[inline(always)]
        fn xor(self, other: X4) -> X4 {
            X4(v128_xor(self.0, other.0))
        }
        #[inline(always)]
        fn big_sigma0(self) -> X4 {
            self.rotr(2).xor(self.rotr(13)).xor(self.rotr(22))
        }
        #[inline(always)]
        fn big_sigma1(self) -> X4 {
            self.rotr(6).xor(self.rotr(11)).xor(self.rotr(25))
        }
        // v128.bitselect(v1, v2, c) = (v1 & c) | (v2 & !c): Ch in one instruction...
        #[inline(always)]
        fn ch(e: X4, f: X4, g: X4) -> X4 {
            X4(v128_bitselect(f.0, g.0, e.0))
        }
        // ...and Maj: a where b and c differ, b where they agree.
        #[inline(always)]
        fn maj(a: X4, b: X4, b_xor_c: X4) -> X4 {
            X4(v128_bitselect(a.0, b.0, b_xor_c.0))
        }
        /// One SIMD add gives four rounds' W + K (LLVM computes it once), then a shuffle
        /// broadcasts lane N, without a trip through a scalar register.
        #[inline(always)]
        fn wk<const N: usize>(w: X4, k: &[u32; 4]) -> X4 {
            let s = w.wadd(X4::from_lanes(*k));
            X4(u32x4_shuffle::<N, N, N, N>(s.0, s.0))
        }
    }

    impl X2 {
        #[inline(always)]
        pub(in super::super) fn from_lanes(l: [u32; 2]) -> X2 {
            X2(u32x4(l[0], l[0], l[1], l[1]))
        }
        #[inline(always)]
        pub(in super::super) fn to_lanes(self) -> [u32; 2] {
            [
                u32x4_extract_lane::<0>(self.0),
                u32x4_extract_lane::<2>(self.0),
            ]
        }
        /// ROTR(x, r1) ⊕ ROTR(x, r2) ⊕ ROTR(x, r3), doubled again.
        #[inline(always)]
        fn sigma(self, r1: u32, r2: u32, r3: u32) -> X2 {
            let (v1, v2, v3) = (
                u64x2_shr(self.0, r1),
                u64x2_shr(self.0, r2),
                u64x2_shr(self.0, r3),
            );
            let lo = v128_xor(v128_xor(v1, v2), v3);
            X2(u32x4_shuffle::<0, 0, 2, 2>(lo, lo))
        }
    }

    impl Word for X2 {
        #[inline(always)]
        fn wadd(self, other: X2) -> X2 {
            X2(u32x4_add(self.0, other.0))
        }
        #[inline(always)]
        fn xor(self, other: X2) -> X2 {
            X2(v128_xor(self.0, other.0))
        }
        #[inline(always)]
        fn big_sigma0(self) -> X2 {
            self.sigma(2, 13, 22)
        }
        #[inline(always)]
        fn big_sigma1(self) -> X2 {
            self.sigma(6, 11, 25)
        }
        #[inline(always)]
        fn ch(e: X2, f: X2, g: X2) -> X2 {
            X2(v128_bitselect(f.0, g.0, e.0))
        }
        #[inline(always)]
        fn maj(a: X2, b: X2, b_xor_c: X2) -> X2 {
            X2(v128_bitselect(a.0, b.0, b_xor_c.0))
        }
        #[inline(always)]
        fn wk<const N: usize>(w: X4, k: &[u32; 4]) -> X2 {
            X2(<X4 as Word>::wk::<N>(w, k).0)
        }
    }
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod imp {
    use super::{small_sigma0, small_sigma1, Word};

    /// Portable stand-in for the wasm SIMD type (same lanes, same results).
    #[derive(Clone, Copy)]
    pub(in super::super) struct X4([u32; 4]);

    /// Portable stand-in for the wasm two-state type (the doubling is a SIMD device only).
    #[derive(Clone, Copy)]
    pub(in super::super) struct X2([u32; 2]);

    impl X4 {
        #[inline(always)]
        pub(in super::super) fn lane<const N: usize>(self) -> u32 {
            self.0[N]
        }
        #[inline(always)]
        pub(in super::super) fn load_quarters(block: &[u8; 64]) -> [X4; 4] {
            core::array::from_fn(|i| {
                X4(core::array::from_fn(|j| {
                    let at = 16 * i + 4 * j;
                    u32::from_be_bytes([block[at], block[at + 1], block[at + 2], block[at + 3]])
                }))
            })
        }
        #[inline(always)]
        pub(in super::super) fn schedule_next(x0: X4, x1: X4, x2: X4, x3: X4) -> X4 {
            let mut w = [0u32; 20];
            for (i, x) in [x0, x1, x2, x3].iter().enumerate() {
                w[4 * i..4 * i + 4].copy_from_slice(&x.0);
            }
            for t in 16..20 {
                w[t] = w[t - 16]
                    .wrapping_add(w[t - 7])
                    .wrapping_add(small_sigma0(w[t - 15]))
                    .wrapping_add(small_sigma1(w[t - 2]));
            }
            X4([w[16], w[17], w[18], w[19]])
        }
    }

    /// Lane-wise operations of the portable types.
    macro_rules! lanewise {
        ($T:ident) => {
            impl Word for $T {
                #[inline(always)]
                fn wadd(self, o: $T) -> $T {
                    $T(core::array::from_fn(|i| self.0[i].wrapping_add(o.0[i])))
                }
                #[inline(always)]
                fn xor(self, o: $T) -> $T {
                    $T(core::array::from_fn(|i| self.0[i] ^ o.0[i]))
                }
                #[inline(always)]
                fn big_sigma0(self) -> $T {
                    $T(self.0.map(u32::big_sigma0))
                }
                #[inline(always)]
                fn big_sigma1(self) -> $T {
                    $T(self.0.map(u32::big_sigma1))
                }
                #[inline(always)]
                fn ch(e: $T, f: $T, g: $T) -> $T {
                    $T(core::array::from_fn(|i| u32::ch(e.0[i], f.0[i], g.0[i])))
                }
                #[inline(always)]
                fn maj(a: $T, b: $T, bc: $T) -> $T {
                    $T(core::array::from_fn(|i| u32::maj(a.0[i], b.0[i], bc.0[i])))
                }
                #[inline(always)]
                fn wk<const N: usize>(w: X4, k: &[u32; 4]) -> $T {
                    $T(core::array::from_fn(|_| w.0[N].wrapping_add(k[N])))
                }
            }
        };
    }
    lanewise!(X4);
    lanewise!(X2);

    impl X2 {
        #[inline(always)]
        pub(in super::super) fn from_lanes(l: [u32; 2]) -> X2 {
            X2(l)
        }
        #[inline(always)]
        pub(in super::super) fn to_lanes(self) -> [u32; 2] {
            self.0
        }
    }
}
