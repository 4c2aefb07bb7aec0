//! Upload-Checksum support (tus checksum extension): parsing the request
//! header and the streaming hashers used to verify a PATCH body.
//!
//! Only `sha1` and `sha256` are offered (`Tus-Checksum-Algorithm: sha1,sha256`);
//! they are the two algorithms a browser can compute cheaply and that the
//! chunkup client sends. MD5 is a hasher here only because the S3-style PUT
//! reports it as the ETag; `Upload-Checksum: md5 …` stays unsupported.

use base64::Engine as _;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A checksum algorithm the server can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    Sha1,
    Sha256,
    /// Never parsed from `Upload-Checksum`; used for S3 ETags.
    Md5,
}

impl Algo {
    /// Digest size in bytes; a header whose decoded digest has another size is
    /// malformed rather than merely wrong.
    fn digest_len(self) -> usize {
        match self {
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
            Algo::Md5 => 16,
        }
    }

    pub fn hasher(self) -> Hasher {
        match self {
            Algo::Sha1 => Hasher::Sha1(Sha1::new()),
            Algo::Sha256 => Hasher::Sha256(Sha256::new()),
            Algo::Md5 => Hasher::Md5(Md5::new()),
        }
    }
}

/// A parsed `Upload-Checksum` header: the algorithm and the expected digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub algo: Algo,
    pub digest: Vec<u8>,
}

/// Why an `Upload-Checksum` header was refused (both are 400 Bad Request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumError {
    Unsupported(String),
    Malformed,
}

impl std::fmt::Display for ChecksumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChecksumError::Unsupported(a) => write!(f, "unsupported checksum algorithm {a:?}"),
            ChecksumError::Malformed => f.write_str("malformed Upload-Checksum header"),
        }
    }
}

/// Parses `<algo> <base64 digest>` as sent in `Upload-Checksum`.
pub fn parse_header(value: &str) -> Result<Expected, ChecksumError> {
    let mut parts = value.trim().splitn(2, ' ');
    let algo_name = parts.next().unwrap_or_default();
    let encoded = parts.next().ok_or(ChecksumError::Malformed)?.trim();
    let algo = match algo_name.to_ascii_lowercase().as_str() {
        "sha1" => Algo::Sha1,
        "sha256" => Algo::Sha256,
        "" => return Err(ChecksumError::Malformed),
        other => return Err(ChecksumError::Unsupported(other.to_owned())),
    };
    let digest = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| ChecksumError::Malformed)?;
    if digest.len() != algo.digest_len() {
        return Err(ChecksumError::Malformed);
    }
    Ok(Expected { algo, digest })
}

/// Incremental hasher fed while the body streams to disk, so verifying a
/// checksum costs no second pass over the data.
pub enum Hasher {
    Sha1(Sha1),
    Sha256(Sha256),
    Md5(Md5),
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Md5(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Md5(h) => h.finalize().to_vec(),
        }
    }
}

/// Lowercase hex, used for the `/info` SHA-256, ETags and signatures.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_supported_algorithms() {
        let e = parse_header("sha1 2jmj7l5rSw0yVb/vlWAYkK/YBwk=").expect("sha1 parses");
        assert_eq!(e.algo, Algo::Sha1);
        assert_eq!(e.digest.len(), 20);
        let e = parse_header("sha256 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
            .expect("sha256 parses");
        assert_eq!(e.algo, Algo::Sha256);
    }

    #[test]
    fn rejects_unknown_and_malformed() {
        assert_eq!(
            parse_header("md5 1B2M2Y8AsgTpgAmY7PhCfg=="),
            Err(ChecksumError::Unsupported("md5".into()))
        );
        assert_eq!(parse_header("sha1"), Err(ChecksumError::Malformed));
        assert_eq!(parse_header("sha1 !!!"), Err(ChecksumError::Malformed));
        assert_eq!(parse_header("sha256 AAAA"), Err(ChecksumError::Malformed));
    }
}
