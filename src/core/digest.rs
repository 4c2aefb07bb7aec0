//! SHA-256 bookkeeping for one upload: the digest of every chunk, the running digest of the
//! whole file, and a checkpoint at the server's acknowledged offset so a retry can rewind.
//!
//! The running digest is always "file bytes `0..hashed_offset`", and a snapshot of it is
//! kept at the end of every finished chunk until the server acknowledges that offset (the
//! engine hashes one chunk ahead while the previous one uploads, so the running digest is
//! often past the offset being acknowledged). When a request fails, the server may have kept
//! none, all, or (without a checksum) part of the chunk we were sending.
//! [`FileDigest::rewind`] goes back to the last acknowledged offset; the engine then re-reads
//! from there, so no byte is ever counted twice and none is skipped, wherever a retry cuts a
//! chunk.

use md5::{Digest, Md5};

use chunkup_sha256::{update_pair, Sha256};

/// A SHA-256 digest.
pub type Sha256Bytes = [u8; 32];
/// An MD5 digest.
pub type Md5Bytes = [u8; 16];

/// The whole-file hash states, rewound together.
#[derive(Clone)]
struct FileHashes {
    sha256: Sha256,
    /// Only when the caller asked for the file's MD5 (e.g. for an attachment API).
    md5: Option<Md5>,
}

impl FileHashes {
    fn new(md5: bool) -> Self {
        FileHashes {
            sha256: Sha256::new(),
            md5: md5.then(Md5::new),
        }
    }

    /// Feeds `bytes`, and the same bytes to `chunk` (the open chunk's own SHA-256) if any:
    /// both SHA-256 states in one pass where their blocks line up ([`update_pair`]).
    fn update(&mut self, bytes: &[u8], chunk: Option<&mut Sha256>) {
        match chunk {
            Some(chunk) => update_pair(&mut self.sha256, chunk, bytes),
            None => self.sha256.update(bytes),
        }
        if let Some(md5) = &mut self.md5 {
            md5.update(bytes);
        }
    }
}

/// One finished chunk: its place in the file and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkDigest {
    /// Where the chunk starts in the file.
    pub offset: u64,
    /// Its length in bytes.
    pub length: u64,
    /// SHA-256 of its bytes.
    pub sha256: Sha256Bytes,
}

/// Running whole-file digest with a rewindable checkpoint and an optional open chunk.
#[derive(Clone)]
pub struct FileDigest {
    checkpoint: FileHashes,
    checkpoint_offset: u64,
    running: FileHashes,
    hashed_offset: u64,
    /// The open chunk: where it started, and its own hasher, or `None` when it starts at
    /// byte 0, where the file's running SHA-256 is the chunk's too (one hashing pass, not
    /// two, for a whole-file PUT and for every upload's first chunk until it ends).
    chunk: Option<(u64, Option<Sha256>)>,
    /// Snapshots of `running` at the ends of finished chunks, not yet acknowledged.
    boundaries: Vec<(u64, FileHashes)>,
}

impl FileDigest {
    /// A digest of nothing, checkpointed at offset 0; with `md5`, an MD5 of the whole file
    /// is kept beside the SHA-256.
    pub fn new(md5: bool) -> Self {
        FileDigest {
            checkpoint: FileHashes::new(md5),
            checkpoint_offset: 0,
            running: FileHashes::new(md5),
            hashed_offset: 0,
            chunk: None,
            boundaries: Vec::new(),
        }
    }

    /// How many bytes from the start of the file the running digest has seen.
    pub fn hashed_offset(&self) -> u64 {
        self.hashed_offset
    }

    /// The offset of the checkpoint (the last offset the server acknowledged).
    pub fn checkpoint_offset(&self) -> u64 {
        self.checkpoint_offset
    }

    /// Starts a chunk at the current hashed offset; later [`update`](Self::update)s feed it.
    pub fn start_chunk(&mut self) {
        let own = (self.hashed_offset > 0).then(Sha256::new);
        self.chunk = Some((self.hashed_offset, own));
    }

    /// Feeds the next bytes of the file, in order.
    pub fn update(&mut self, bytes: &[u8]) {
        let chunk = match &mut self.chunk {
            Some((_, Some(own))) => Some(own),
            _ => None,
        };
        self.running.update(bytes, chunk);
        self.hashed_offset += bytes.len() as u64;
    }

    /// Closes the open chunk, snapshots the running digest at its end, and returns its
    /// digest (an empty chunk if none was open).
    pub fn finish_chunk(&mut self) -> ChunkDigest {
        self.boundaries
            .push((self.hashed_offset, self.running.clone()));
        let (offset, sha256) = match self.chunk.take() {
            Some((offset, Some(own))) => (offset, own.finalize()),
            // Started at byte 0: the running digest covers exactly this chunk.
            Some((offset, None)) => (offset, self.file_sha256()),
            None => (self.hashed_offset, Sha256::new().finalize()),
        };
        ChunkDigest {
            offset,
            length: self.hashed_offset - offset,
            sha256,
        }
    }

    /// Moves the checkpoint to the current hashed offset (the server acknowledged it).
    pub fn commit(&mut self) {
        let at = self.hashed_offset;
        let committed = self.commit_to(at);
        debug_assert!(committed);
    }

    /// Moves the checkpoint to `offset`, which must be the hashed offset or the end of a
    /// finished chunk; returns false (and changes nothing) otherwise.
    pub fn commit_to(&mut self, offset: u64) -> bool {
        let state = if offset == self.hashed_offset {
            self.running.clone()
        } else if let Some((_, state)) = self.boundaries.iter().find(|(at, _)| *at == offset) {
            state.clone()
        } else {
            return false;
        };
        self.checkpoint = state;
        self.checkpoint_offset = offset;
        self.boundaries.retain(|(at, _)| *at > offset);
        true
    }

    /// Throws away everything hashed after the checkpoint, including an open chunk and the
    /// snapshots after it, and returns the checkpoint offset: where to re-read the file from.
    pub fn rewind(&mut self) -> u64 {
        self.running = self.checkpoint.clone();
        self.hashed_offset = self.checkpoint_offset;
        self.chunk = None;
        self.boundaries.clear();
        self.checkpoint_offset
    }

    /// The SHA-256 of the file bytes `0..hashed_offset`.
    pub fn file_sha256(&self) -> Sha256Bytes {
        self.running.sha256.clone().finalize()
    }

    /// The MD5 of the file bytes `0..hashed_offset`, if it is being kept.
    pub fn file_md5(&self) -> Option<Md5Bytes> {
        self.running.md5.clone().map(|md5| md5.finalize().into())
    }
}

/// SHA-256 of a byte slice, in one call.
pub fn sha256(bytes: &[u8]) -> Sha256Bytes {
    Sha256::digest(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::encoding::hex;
    use crate::core::testkit::{pseudo_random_bytes, XorShift};

    #[test]
    fn known_answer_vectors() {
        // FIPS 180-2 / NIST examples.
        assert_eq!(
            hex(&sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let million_a = vec![b'a'; 1_000_000];
        assert_eq!(
            hex(&sha256(&million_a)),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn incremental_equals_one_shot_across_any_split() {
        let data = pseudo_random_bytes(5000, 1);
        for split in [0, 1, 63, 64, 65, 4999, 5000] {
            let mut d = FileDigest::new(false);
            d.update(&data[..split]);
            d.update(&data[split..]);
            assert_eq!(d.file_sha256(), sha256(&data), "split {split}");
        }
    }

    #[test]
    fn chunks_hash_their_own_bytes() {
        let data = pseudo_random_bytes(1000, 2);
        let mut d = FileDigest::new(false);
        d.update(&data[..100]);
        d.start_chunk();
        d.update(&data[100..350]);
        d.update(&data[350..400]);
        let chunk = d.finish_chunk();
        assert_eq!(chunk.offset, 100);
        assert_eq!(chunk.length, 300);
        assert_eq!(chunk.sha256, sha256(&data[100..400]));
        assert_eq!(d.hashed_offset(), 400);
    }

    /// Simulates retries that cut the file at arbitrary offsets: hash ahead, rewind to the
    /// checkpoint, re-hash up to the offset the "server" kept, commit, and go on. The final
    /// digest must be the file's digest whatever the cut points were.
    #[test]
    fn rewinding_to_any_offset_never_double_counts() {
        let data = pseudo_random_bytes(10_000, 3);
        let mut rng = XorShift::new(7);
        for _ in 0..200 {
            let mut d = FileDigest::new(false);
            while d.checkpoint_offset() < data.len() as u64 {
                let from = d.checkpoint_offset() as usize;
                let ahead = from + 1 + rng.below((data.len() - from) as u64) as usize;
                d.start_chunk();
                d.update(&data[from..ahead]);
                let _ = d.finish_chunk();
                // The server kept some prefix of what we sent, possibly nothing, possibly all.
                let kept = from + rng.below((ahead - from + 1) as u64) as usize;
                if kept == ahead {
                    d.commit();
                } else {
                    assert_eq!(d.rewind(), from as u64);
                    d.update(&data[from..kept]);
                    d.commit();
                }
                assert_eq!(d.checkpoint_offset(), kept as u64);
            }
            assert_eq!(d.file_sha256(), sha256(&data));
        }
    }

    /// Hashing runs a chunk ahead of the acknowledgements: committing to an earlier chunk end
    /// uses its snapshot, not the running state.
    #[test]
    fn commits_to_a_chunk_end_behind_the_running_digest() {
        let data = pseudo_random_bytes(300, 4);
        let mut d = FileDigest::new(false);
        for range in [0..100, 100..200, 200..250] {
            d.start_chunk();
            d.update(&data[range]);
            let _ = d.finish_chunk();
        }
        assert!(!d.commit_to(150), "not a chunk end");
        assert!(d.commit_to(100));
        assert_eq!(d.checkpoint_offset(), 100);
        assert!(d.commit_to(200));
        assert!(
            !d.commit_to(100),
            "snapshots before the checkpoint are gone"
        );
        assert_eq!(d.rewind(), 200);
        assert_eq!(d.file_sha256(), sha256(&data[..200]));
        d.update(&data[200..300]);
        d.commit();
        assert_eq!(d.file_sha256(), sha256(&data));
    }

    #[test]
    fn md5_is_kept_and_rewound_with_the_sha256() {
        let data = pseudo_random_bytes(3000, 5);
        let mut d = FileDigest::new(true);
        d.update(&data[..1000]);
        d.commit();
        d.update(&data[1000..2500]);
        assert_eq!(d.rewind(), 1000);
        d.update(&data[1000..]);
        assert_eq!(d.file_sha256(), sha256(&data));
        assert_eq!(d.file_md5(), Some(<[u8; 16]>::from(Md5::digest(&data))));
        // RFC 1321 test vector.
        let mut abc = FileDigest::new(true);
        abc.update(b"abc");
        assert_eq!(
            hex(&abc.file_md5().unwrap_or_default()),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(FileDigest::new(false).file_md5(), None);
    }

    #[test]
    fn rewind_drops_an_open_chunk() {
        let mut d = FileDigest::new(false);
        d.update(b"hello");
        d.commit();
        d.start_chunk();
        d.update(b" world");
        assert_eq!(d.rewind(), 5);
        assert_eq!(d.hashed_offset(), 5);
        let empty = d.finish_chunk();
        assert_eq!((empty.offset, empty.length), (5, 0));
        assert_eq!(d.file_sha256(), sha256(b"hello"));
    }
}
