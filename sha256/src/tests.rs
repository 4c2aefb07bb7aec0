//! Known answers and differential tests against the `sha2` crate. They run natively
//! (`cargo test`, portable lanes) and in the browser (`wasm-pack test`, SIMD lanes).

extern crate std;

use super::*;
use sha2::Digest as _;
use std::vec::Vec;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;
#[cfg(target_arch = "wasm32")]
wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

/// xorshift32: deterministic, no dependency, same sequence natively and in wasm.
struct Rng(u32);

impl Rng {
    fn next(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
    /// 0..n, with a bias towards the interesting neighbourhoods of block boundaries.
    fn below(&mut self, n: usize) -> usize {
        let r = self.next() as usize;
        let v = if r & 3 == 0 {
            (r >> 2) % (n / 64 + 1) * 64 + (r >> 12) % 3
        } else {
            r >> 2
        };
        v % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn reference(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> std::string::String {
    bytes.iter().map(|b| std::format!("{b:02x}")).collect()
}

/// Random cut points of `data`, sorted, always including both ends.
fn cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    let mut c: Vec<usize> = (0..rng.next() % 6).map(|_| rng.below(len + 1)).collect();
    c.push(0);
    c.push(len);
    c.sort_unstable();
    c
}

#[test]
fn fips_180_2_known_answers() {
    let cases: [(&[u8], &str); 3] = [
        (
            b"",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ),
        (
            b"abc",
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        ),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
        ),
    ];
    for (msg, want) in cases {
        assert_eq!(hex(&Sha256::digest(msg)), want);
        let mut h = Sha256::new();
        for byte in msg {
            h.update(core::slice::from_ref(byte));
        }
        assert_eq!(hex(&h.finalize()), want);
    }
    let million_a = std::vec![b'a'; 1_000_000];
    let want = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";
    assert_eq!(hex(&Sha256::digest(&million_a)), want);
    let (mut a, mut b) = (Sha256::new(), Sha256::new());
    for piece in million_a.chunks(1000) {
        update_pair(&mut a, &mut b, piece);
    }
    assert_eq!(hex(&a.finalize()), want);
    assert_eq!(hex(&b.finalize()), want);
}

#[test]
fn random_lengths_and_splits_match_sha2() {
    let mut rng = Rng(0x9e37_79b9);
    for _ in 0..300 {
        let len = rng.below(3000);
        let data = rng.bytes(len);
        let mut h = Sha256::new();
        let c = cuts(&mut rng, data.len());
        for w in c.windows(2) {
            h.update(&data[w[0]..w[1]]);
            assert_eq!(h.buffered_len(), w[1] % 64);
        }
        assert_eq!(
            h.clone().finalize(),
            reference(&[&data]),
            "len {}",
            data.len()
        );
        // A clone carries on independently.
        let mut more = h.clone();
        more.update(b"tail");
        assert_eq!(more.finalize(), reference(&[&data, b"tail"]));
        assert_eq!(h.finalize(), reference(&[&data]));
    }
}

/// Two hashes started with different prefixes, then fed the same bytes through
/// `update_pair`; `prefixes` picks the prefix lengths.
fn check_pairs(seed: u32, prefixes: impl Fn(&mut Rng) -> (usize, usize)) {
    let mut rng = Rng(seed);
    for _ in 0..150 {
        let (la, lb) = prefixes(&mut rng);
        let (pa, pb) = (rng.bytes(la), rng.bytes(lb));
        let len = rng.below(4000);
        let data = rng.bytes(len);
        let (mut a, mut b) = (Sha256::new(), Sha256::new());
        a.update(&pa);
        b.update(&pb);
        for w in cuts(&mut rng, data.len()).windows(2) {
            update_pair(&mut a, &mut b, &data[w[0]..w[1]]);
        }
        let ctx = std::format!("prefixes {la} {lb}, len {}", data.len());
        assert_eq!(a.finalize(), reference(&[&pa, &data]), "a: {ctx}");
        assert_eq!(b.finalize(), reference(&[&pb, &data]), "b: {ctx}");
    }
}

#[test]
fn pair_from_the_same_start() {
    check_pairs(1, |_| (0, 0));
}

#[test]
fn pair_from_different_offsets_multiple_of_64() {
    // The chunk digest starts fresh at a 64-aligned file offset: shared-schedule path.
    check_pairs(2, |rng| (0, rng.below(40) * 64));
    check_pairs(3, |rng| (rng.below(40) * 64, rng.below(40) * 64));
}

#[test]
fn pair_with_the_same_partial_block() {
    // Equal phases but different buffered bytes: each completes its own block first.
    check_pairs(4, |rng| {
        let phase = 1 + rng.below(63);
        (rng.below(10) * 64 + phase, rng.below(10) * 64 + phase)
    });
}

#[test]
fn pair_with_different_phases() {
    check_pairs(5, |rng| (rng.below(2000), rng.below(2000)));
    check_pairs(6, |rng| (0, 1 + rng.below(63)));
}

/// Both compressions against `sha2`'s own compression function, on random states and
/// block counts (including a rest shorter than a block, which must be ignored).
#[test]
fn compressions_match_sha2_compress256() {
    let mut rng = Rng(8);
    for _ in 0..100 {
        let n = rng.below(24);
        let len = n * 64 + rng.below(64);
        let data = rng.bytes(len);
        let blocks: Vec<[u8; 64]> = data
            .chunks_exact(64)
            .map(|b| b.try_into().unwrap())
            .collect();
        let states: [[u32; 8]; 2] = core::array::from_fn(|_| core::array::from_fn(|_| rng.next()));
        let expect = states.map(|mut s| {
            sha2::block_api::compress256(&mut s, &blocks);
            s
        });
        let mut s = states;
        compress(&mut s[0], &data);
        assert_eq!(s[0], expect[0], "single, {n} blocks");
        let mut s = states;
        let [s0, s1, ..] = &mut s;
        compress_pair(s0, s1, &data);
        assert_eq!(s[..2], expect[..2], "pair, {n} blocks");
    }
}
