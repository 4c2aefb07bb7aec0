//! Resume records: what lets an upload continue after a reload or a crash, and the rules
//! that keep them safe and few.
//!
//! A record is stored under a key that is the SHA-256 of what identifies the file and the
//! target (name, size, last modification, endpoint, protocol, and what decides where the
//! file lands: tus metadata, s3's `createMultipartUpload` arguments), so the browser's storage
//! never holds a file name in clear (shared computers, tus-js-client issues 97, 272, 315).
//! It holds the upload's URL (tus), the session URI without its query (range) or the
//! multipart upload's id (s3), and the file's size: never a header value, nor the query of
//! a signed session URI. Records expire after a while and are few ([`ResumePolicy`]);
//! `crate::web` keeps them in IndexedDB and applies [`to_prune`] whenever it adds one.

use crate::core::encoding::hex;
use crate::core::value::{object, Value};
use chunkup_sha256::Sha256;

/// How many records and for how long (`options.resume`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResumePolicy {
    /// At most this many records are kept; the oldest go first.
    pub max_records: u32,
    /// A record older than this is not used, and is removed.
    pub max_age_ms: f64,
}

impl Default for ResumePolicy {
    fn default() -> Self {
        ResumePolicy {
            max_records: 100,
            max_age_ms: 24.0 * 60.0 * 60.0 * 1000.0,
        }
    }
}

/// What identifies one file sent to one target.
#[derive(Debug, Clone, PartialEq)]
pub struct FileIdentity<'a> {
    /// The file's name.
    pub name: &'a str,
    /// Its size in bytes.
    pub size: u64,
    /// `File.lastModified` (ms since the epoch).
    pub last_modified: f64,
    /// The absolute endpoint the upload goes to.
    pub endpoint: &'a str,
    /// `"tus"`, `"range"` or `"s3"`.
    pub protocol: &'a str,
    /// What else decides where the file lands, as strings (tus: the `Upload-Metadata`
    /// pairs; s3: `createMultipartUpload`'s name, type and metadata): the same file sent
    /// with other metadata (to another conversation, say) is another upload.
    pub destination: &'a [&'a str],
}

impl FileIdentity<'_> {
    /// The record key: hex SHA-256 of the identity's fields, each length-prefixed so that
    /// no two identities can produce the same input.
    pub fn key(&self) -> String {
        let mut hash = Sha256::new();
        let modified = self.last_modified.to_bits().to_be_bytes();
        let size = self.size.to_be_bytes();
        let count = (self.destination.len() as u64).to_be_bytes();
        let fields: [&[u8]; 6] = [
            self.name.as_bytes(),
            &size,
            &modified,
            self.endpoint.as_bytes(),
            self.protocol.as_bytes(),
            &count,
        ];
        let destination = self.destination.iter().map(|part| part.as_bytes());
        for field in fields.into_iter().chain(destination) {
            hash.update(&(field.len() as u64).to_be_bytes());
            hash.update(field);
        }
        hex(&hash.finalize())
    }
}

/// Where an upload can be continued from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeTarget {
    /// tus: the upload's URL; range: the session URI.
    Url(String),
    /// s3: the multipart upload, and the part size its parts were cut with.
    Multipart {
        /// S3's `UploadId`.
        upload_id: String,
        /// The object key.
        key: String,
        /// The part size (the parts the store holds are reused only with the same cut).
        part_size: u64,
    },
}

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeRecord {
    /// What continues the upload.
    pub target: ResumeTarget,
    /// `"tus"`, `"range"` or `"s3"`.
    pub protocol: String,
    /// The file's size.
    pub size: u64,
    /// When it was stored (ms since the epoch).
    pub saved_ms: f64,
}

/// The record format's version: a record of another version is ignored.
const VERSION: f64 = 1.0;

impl ResumeRecord {
    /// The record as stored.
    pub fn to_value(&self) -> Value {
        let mut value = object([
            ("v", VERSION.into()),
            ("protocol", self.protocol.as_str().into()),
            ("size", self.size.into()),
            ("savedAt", self.saved_ms.into()),
        ]);
        if let Value::Object(entries) = &mut value {
            match &self.target {
                ResumeTarget::Url(url) => entries.push(("url".into(), url.as_str().into())),
                ResumeTarget::Multipart {
                    upload_id,
                    key,
                    part_size,
                } => {
                    entries.push(("uploadId".into(), upload_id.as_str().into()));
                    entries.push(("key".into(), key.as_str().into()));
                    entries.push(("partSize".into(), (*part_size).into()));
                }
            }
        }
        value
    }

    /// Reads a stored record; `None` for anything else.
    pub fn from_value(value: &Value) -> Option<ResumeRecord> {
        if value.f64_at("v") != Some(VERSION) {
            return None;
        }
        let whole = |key: &str| value.f64_at(key).filter(|n| *n >= 0.0 && n.fract() == 0.0);
        let size = whole("size")?;
        let target = match value.str_at("url") {
            Some(url) => ResumeTarget::Url(url.to_owned()),
            None => ResumeTarget::Multipart {
                upload_id: value.str_at("uploadId")?.to_owned(),
                key: value.str_at("key")?.to_owned(),
                part_size: whole("partSize")? as u64,
            },
        };
        Some(ResumeRecord {
            target,
            protocol: value.str_at("protocol")?.to_owned(),
            size: size as u64,
            saved_ms: value.f64_at("savedAt")?,
        })
    }

    /// Whether this record may continue an upload of `size` bytes with `protocol` at
    /// `now_ms` under `policy`.
    pub fn usable(&self, protocol: &str, size: u64, now_ms: f64, policy: &ResumePolicy) -> bool {
        self.protocol == protocol && self.size == size && !expired(self.saved_ms, now_ms, policy)
    }
}

fn expired(saved_ms: f64, now_ms: f64, policy: &ResumePolicy) -> bool {
    now_ms - saved_ms > policy.max_age_ms || saved_ms > now_ms + policy.max_age_ms
}

/// Which records to remove, given every stored `(key, saved_ms)` (a record that could not
/// be read counts with `None`): the unreadable and expired ones, then the oldest until at
/// most `policy.max_records` remain.
pub fn to_prune(
    records: &[(String, Option<f64>)],
    now_ms: f64,
    policy: &ResumePolicy,
) -> Vec<String> {
    let mut prune = Vec::new();
    let mut live: Vec<(&str, f64)> = Vec::new();
    for (key, saved) in records {
        match saved.filter(|saved| !expired(*saved, now_ms, policy)) {
            Some(saved) => live.push((key, saved)),
            None => prune.push(key.clone()),
        }
    }
    // The oldest go first. A selection rather than a sort: there are at most a few more
    // than `max_records`, and a sort would add kilobytes to the wasm.
    while live.len() > policy.max_records as usize {
        let oldest = (0..live.len())
            .min_by(|&a, &b| live[a].1.total_cmp(&live[b].1))
            .unwrap_or(0);
        prune.push(live.swap_remove(oldest).0.to_owned());
    }
    prune
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> FileIdentity<'static> {
        FileIdentity {
            name: "holiday.mp4",
            size: 300_000_000,
            last_modified: 1_700_000_000_000.0,
            endpoint: "https://up.example.com/files/",
            protocol: "tus",
            destination: &["conversation", "A"],
        }
    }

    #[test]
    fn keys_are_hashes_that_change_with_every_field() {
        let key = identity().key();
        assert_eq!(key.len(), 64);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(!key.contains("holiday"));
        assert_eq!(key, identity().key(), "stable");
        let variants = [
            FileIdentity {
                name: "holiday.mov",
                ..identity()
            },
            FileIdentity {
                size: 300_000_001,
                ..identity()
            },
            FileIdentity {
                last_modified: 1_700_000_000_001.0,
                ..identity()
            },
            FileIdentity {
                endpoint: "https://up.example.com/other/",
                ..identity()
            },
            FileIdentity {
                protocol: "range",
                ..identity()
            },
            FileIdentity {
                destination: &["conversation", "B"],
                ..identity()
            },
            FileIdentity {
                destination: &[],
                ..identity()
            },
            FileIdentity {
                destination: &["conversationA"],
                ..identity()
            },
            // Field boundaries matter: "ab" + "c" is not "a" + "bc".
            FileIdentity {
                name: "holiday.mp4https://up.example.com/files",
                endpoint: "/",
                ..identity()
            },
        ];
        for variant in variants {
            assert_ne!(variant.key(), key, "{variant:?}");
        }
    }

    #[test]
    fn records_round_trip_and_hold_no_secrets() {
        let record = ResumeRecord {
            target: ResumeTarget::Url("https://up.example.com/files/abc".into()),
            protocol: "tus".into(),
            size: 42,
            saved_ms: 1000.0,
        };
        let value = record.to_value();
        assert_eq!(ResumeRecord::from_value(&value), Some(record.clone()));
        let keys: Vec<&str> = value
            .as_object()
            .unwrap_or_default()
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["v", "protocol", "size", "savedAt", "url"]);
        let multipart = ResumeRecord {
            target: ResumeTarget::Multipart {
                upload_id: "u-1".into(),
                key: "k".into(),
                part_size: 5 << 20,
            },
            protocol: "s3".into(),
            size: 42,
            saved_ms: 1000.0,
        };
        assert_eq!(
            ResumeRecord::from_value(&multipart.to_value()),
            Some(multipart)
        );
        assert_eq!(ResumeRecord::from_value(&Value::Null), None);
        assert_eq!(ResumeRecord::from_value(&object([("v", 2.0.into())])), None);
        let policy = ResumePolicy::default();
        assert!(record.usable("tus", 42, 2000.0, &policy));
        assert!(!record.usable("range", 42, 2000.0, &policy));
        assert!(!record.usable("tus", 43, 2000.0, &policy));
        assert!(!record.usable("tus", 42, 1000.0 + policy.max_age_ms + 1.0, &policy));
    }

    #[test]
    fn pruning_drops_the_expired_the_unreadable_and_the_oldest() {
        let policy = ResumePolicy {
            max_records: 3,
            max_age_ms: 1000.0,
        };
        let now = 10_000.0;
        let records: Vec<(String, Option<f64>)> = vec![
            ("old".into(), Some(8_000.0)),
            ("broken".into(), None),
            ("a".into(), Some(9_100.0)),
            ("b".into(), Some(9_500.0)),
            ("c".into(), Some(9_200.0)),
            ("d".into(), Some(9_900.0)),
            ("future".into(), Some(20_000.0)),
        ];
        let mut pruned = to_prune(&records, now, &policy);
        pruned.sort();
        assert_eq!(pruned, ["a", "broken", "future", "old"]);
        assert!(to_prune(&records[2..4], now, &policy).is_empty());
    }
}
