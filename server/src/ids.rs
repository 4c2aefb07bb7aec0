//! Unguessable identifiers: upload ids (`store.rs`), object keys (`store_s3.rs`) and the
//! guest API's message ids (`guest/wire.rs`), all from one source.
//!
//! The bytes come from SipHash under keys that std draws from the OS once per process, over
//! a counter (no two inputs are the same) and the time: nobody can guess an id from another,
//! without a `rand` dependency. Fault decisions do not use this; they stay seeded
//! (`faults.rs`) so that a test run can be replayed.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::checksum::hex;

/// `N` unguessable bytes, each call's different from every other's.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let keys = KEYS.get_or_init(RandomState::new);
    let call = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut out = [0u8; N];
    for (index, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = keys.build_hasher();
        h.write_usize(index);
        h.write_u64(call);
        h.write_u128(nanos);
        chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
    }
    out
}

/// `N` unguessable bytes as 2N lowercase hex characters.
pub fn random_hex<const N: usize>() -> String {
    hex(&random_bytes::<N>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn hex_ids_have_their_length_and_never_repeat() {
        let ids: HashSet<String> = (0..10_000).map(|_| random_hex::<8>()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids
            .iter()
            .all(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        assert_eq!(random_hex::<16>().len(), 32);
    }

    #[test]
    fn every_byte_varies() {
        // A byte stuck at one value (a chunk left unfilled) would show in a few hundred draws.
        let draws: Vec<[u8; 13]> = (0..500).map(|_| random_bytes::<13>()).collect();
        for position in 0..13 {
            let values: HashSet<u8> = draws.iter().map(|d| d[position]).collect();
            assert!(
                values.len() > 100,
                "byte {position}: {} values",
                values.len()
            );
        }
    }
}
