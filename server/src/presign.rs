//! S3-style presigned PUT: the store of presigned object keys and their
//! uploaded objects, URL signing and verification, and the Rust API other
//! server code uses to presign keys, attach its own metadata to them and
//! hear when an upload to a key completed or failed (a web-messaging
//! emulator handing out attachment upload URLs is the intended user).
//! The HTTP side (`POST /presign`, `PUT /s3/{key}`) is in `s3.rs`.
//!
//! Signing: `X-Signature` is the lowercase hex HMAC-SHA256, keyed with the
//! server secret, of [`string_to_sign`] (method, key, expiry, declared size,
//! signed header names, and each signed header as `name:value`, the content
//! type included). The declared type, size and headers are kept with the
//! key, so a tampered URL (expiry, header list, signature) fails the HMAC,
//! and a request whose headers differ from the signed values fails a
//! separate comparison with a message saying which header. This imitates S3
//! for tests; it is not meant to be secure (the default secret is random
//! per process, see `--secret`).
//!
//! Objects live in `<data-dir>/s3/<key>.bin`. A PUT writes a fresh
//! `<key>.<n>.part` and renames it over the object only once the whole body
//! arrived, so an object appears (or is replaced) atomically, as on S3.
//! Keys are in memory only and are not reloaded after a restart: a restart
//! normally changes the secret, which invalidates every URL anyway.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher as _};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderName, HeaderValue};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use crate::checksum;
use crate::faults::{FaultCounters, FaultKind, FaultSpec, Prng};
use crate::AppState;

/// `ttlSeconds` when the request names none.
pub const DEFAULT_TTL_SECS: u64 = 300;
/// S3's own limit for presigned URLs (7 days).
pub const MAX_TTL_SECS: u64 = 7 * 24 * 3600;
/// Always signed, so tests can check that custom signed headers are
/// enforced; a caller may choose its own value.
pub const TAGGING_HEADER: &str = "x-amz-tagging";
pub const DEFAULT_TAGGING: &str = "chunkup=1";
/// Events buffered per subscriber; a subscriber that falls further behind
/// gets `RecvError::Lagged` rather than blocking uploads.
const EVENT_CAPACITY: usize = 256;

/// Headers that cannot be signed extras: they are framing or connection
/// headers the browser sets itself (or, for `content-type`, the declared
/// `fileType`).
const RESERVED_HEADERS: [&str; 10] = [
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "expect",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-connection",
];

/// What to presign. Build with [`PresignRequest::new`] and adjust fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresignRequest {
    /// Kept as metadata only; never part of the key or any path.
    pub file_name: String,
    /// The exact `Content-Type` the PUT must send; "" means the PUT must send
    /// none (a browser sends none for a `Blob` whose type is "").
    pub file_type: String,
    /// The exact `Content-Length` the PUT must send.
    pub file_size: u64,
    /// Lifetime of the URL; `None` is [`DEFAULT_TTL_SECS`].
    pub ttl_seconds: Option<u64>,
    /// Hand out a URL whose expiry is already in the past.
    pub expired: bool,
    /// Extra headers to sign (names are case-insensitive, stored lowercase).
    /// `x-amz-tagging: chunkup=1` is added unless given.
    pub headers: BTreeMap<String, String>,
    /// App-level metadata (e.g. an attachment id), echoed in every
    /// [`UploadEvent`] for this key and in `/info`.
    pub app: BTreeMap<String, String>,
}

impl PresignRequest {
    pub fn new(file_name: &str, file_type: &str, file_size: u64) -> Self {
        PresignRequest {
            file_name: file_name.to_owned(),
            file_type: file_type.to_owned(),
            file_size,
            ..PresignRequest::default()
        }
    }
}

/// A presigned upload: PUT `url` with exactly `headers` (which include
/// `content-type` unless the declared type is empty) and a body of exactly
/// the declared size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presigned {
    pub url: String,
    pub method: &'static str,
    pub headers: BTreeMap<String, String>,
    pub key: String,
    /// Unix seconds after which the URL is refused.
    pub expires: u64,
}

/// Why a presign request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresignError {
    TooLarge {
        size: u64,
        max: u64,
    },
    BadTtl(u64),
    BadHeader(String),
    /// The route prefix is not "" or `/faults/{valid spec}`.
    BadBase(String),
    NoSuchKey,
}

impl std::fmt::Display for PresignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PresignError::TooLarge { size, max } => {
                write!(f, "fileSize {size} exceeds the maximum {max}")
            }
            PresignError::BadTtl(t) => write!(f, "ttlSeconds {t} exceeds {MAX_TTL_SECS}"),
            PresignError::BadHeader(msg) => f.write_str(msg),
            PresignError::BadBase(b) => write!(f, "bad route prefix {b:?}"),
            PresignError::NoSuchKey => f.write_str("unknown key"),
        }
    }
}

impl std::error::Error for PresignError {}

impl PresignError {
    /// The HTTP status `POST /presign` answers with.
    pub fn status(&self) -> u16 {
        match self {
            PresignError::TooLarge { .. } => 413,
            PresignError::NoSuchKey => 404,
            _ => 400,
        }
    }
}

/// Notification sent on [`S3Store::subscribe`] for every PUT to a known key
/// (exactly one per PUT, including refused ones; unknown keys send none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadEvent {
    pub key: String,
    pub file_name: String,
    /// The key's app-level metadata at the time of the event.
    pub app: BTreeMap<String, String>,
    pub outcome: UploadOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum UploadOutcome {
    /// The object is stored (replacing any earlier one for the key).
    Completed {
        size: u64,
        sha256: String,
        md5: String,
    },
    /// This attempt stored nothing. `status` is the answer sent, or `None`
    /// when the connection broke or was reset (no answer reached the
    /// client). A failure is not final: the client may retry the same URL.
    Failed { status: Option<u16>, reason: String },
}

/// A stored object (the last complete PUT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredObject {
    pub size: u64,
    pub sha256: String,
    pub md5: String,
}

impl StoredObject {
    /// The ETag S3 sends for a single-part upload: the quoted MD5 hex.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.md5)
    }
}

/// One presigned key: what was signed, its object, its fault stream and
/// counters, and the app's metadata.
#[derive(Debug)]
pub struct S3Object {
    pub key: String,
    pub file_name: String,
    pub content_type: String,
    pub size: u64,
    /// Signed extra headers (lowercase names), `content-type` excluded.
    pub headers: BTreeMap<String, String>,
    pub faults: FaultCounters,
    rng: Mutex<Prng>,
    app: Mutex<BTreeMap<String, String>>,
    stored: Mutex<Option<StoredObject>>,
    /// Serialises the rename-and-record step of concurrent PUTs, so the
    /// recorded digests always describe the file on disk.
    pub(crate) commit_lock: tokio::sync::Mutex<()>,
}

impl S3Object {
    pub fn app_meta(&self) -> BTreeMap<String, String> {
        lock_std(&self.app).clone()
    }

    pub fn stored(&self) -> Option<StoredObject> {
        lock_std(&self.stored).clone()
    }

    pub(crate) fn set_stored(&self, stored: StoredObject) {
        *lock_std(&self.stored) = Some(stored);
    }

    /// Every signed header, `content-type` included, sorted by name.
    pub fn signed_headers(&self) -> BTreeMap<String, String> {
        let mut all = self.headers.clone();
        all.insert("content-type".into(), self.content_type.clone());
        all
    }

    /// The `X-SignedHeaders` value: sorted names joined by `;`.
    pub fn signed_names(&self) -> String {
        self.signed_headers()
            .into_keys()
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Rolls this key's own fault stream for one PUT.
    pub(crate) fn roll(&self, spec: &FaultSpec, allow_reset: bool) -> Option<FaultKind> {
        spec.roll(&mut lock_std(&self.rng), allow_reset)
    }

    /// Uniform in [0, n) from this key's stream (where a reset cuts).
    pub(crate) fn draw_below(&self, n: u64) -> u64 {
        lock_std(&self.rng).below(n)
    }
}

/// std mutexes here guard plain data updated in single steps; a poisoned
/// lock still holds consistent data, so recover instead of panicking.
fn lock_std<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Presigned keys, their objects and the event channel.
#[derive(Debug)]
pub struct S3Store {
    dir: PathBuf,
    secret: Vec<u8>,
    objects: Mutex<HashMap<String, Arc<S3Object>>>,
    events: broadcast::Sender<UploadEvent>,
    /// Keyed from OS randomness by std, like the tus upload ids: keys are
    /// unguessable without a `rand` dependency.
    key_hasher: RandomState,
    counter: AtomicU64,
}

/// Keys are exactly 32 lowercase hex characters; anything else in a URL is
/// an unknown key and never reaches the filesystem.
pub fn is_valid_key(key: &str) -> bool {
    key.len() == 32 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl S3Store {
    /// Opens `dir` (creating it) with the given secret, or a random one.
    /// Objects left by an earlier run are deleted: their keys are gone.
    pub fn open(dir: &Path, secret: Option<Vec<u8>>) -> io::Result<S3Store> {
        std::fs::create_dir_all(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.get(..32))
                .is_some_and(is_valid_key);
            if ours && path.is_file() {
                let _ = std::fs::remove_file(&path);
            }
        }
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Ok(S3Store {
            dir: dir.to_path_buf(),
            secret: secret.unwrap_or_else(random_secret),
            objects: Mutex::new(HashMap::new()),
            events,
            key_hasher: RandomState::new(),
            counter: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Subscribes to upload outcomes. Events sent before subscribing are not
    /// replayed; use [`S3Object::stored`] for the current state.
    pub fn subscribe(&self) -> broadcast::Receiver<UploadEvent> {
        self.events.subscribe()
    }

    pub fn get(&self, key: &str) -> Option<Arc<S3Object>> {
        if !is_valid_key(key) {
            return None;
        }
        lock_std(&self.objects).get(key).cloned()
    }

    /// Sets one app-level metadata entry on a key (e.g. an attachment id
    /// chosen after presigning). False if the key is unknown.
    pub fn set_app_meta(&self, key: &str, name: &str, value: &str) -> bool {
        match self.get(key) {
            Some(obj) => {
                lock_std(&obj.app).insert(name.to_owned(), value.to_owned());
                true
            }
            None => false,
        }
    }

    /// Where the object for `key` is (or will be) stored.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.bin"))
    }

    /// Creates an empty, uniquely named temporary file for one PUT.
    pub(crate) async fn create_temp(&self, key: &str) -> io::Result<PathBuf> {
        loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.join(format!("{key}.{n}.part"));
            match tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .await
            {
                Ok(_) => return Ok(path),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub(crate) fn emit(&self, obj: &S3Object, outcome: UploadOutcome) {
        // No subscriber is the normal case outside the emulator.
        let _ = self.events.send(UploadEvent {
            key: obj.key.clone(),
            file_name: obj.file_name.clone(),
            app: obj.app_meta(),
            outcome,
        });
    }

    fn fresh_key(&self) -> String {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut out = String::with_capacity(32);
        for half in 0u8..2 {
            let mut h = self.key_hasher.build_hasher();
            h.write_u8(half);
            h.write_u64(n);
            h.write_u128(nanos);
            out.push_str(&format!("{:016x}", h.finish()));
        }
        out
    }

    fn register(
        &self,
        req: PresignRequest,
        headers: BTreeMap<String, String>,
        seed: u64,
    ) -> Arc<S3Object> {
        let mut objects = lock_std(&self.objects);
        let key = loop {
            let key = self.fresh_key();
            if !objects.contains_key(&key) {
                break key;
            }
        };
        let obj = Arc::new(S3Object {
            key: key.clone(),
            file_name: req.file_name,
            content_type: req.file_type,
            size: req.file_size,
            headers,
            faults: FaultCounters::default(),
            rng: Mutex::new(Prng::new(seed)),
            app: Mutex::new(req.app),
            stored: Mutex::new(None),
            commit_lock: tokio::sync::Mutex::new(()),
        });
        objects.insert(key, obj.clone());
        obj
    }

    /// Lowercase hex signature of `obj`'s signed values with `expires`.
    pub fn sign(&self, obj: &S3Object, expires: u64) -> String {
        let text = string_to_sign(&obj.key, expires, obj.size, &obj.signed_headers());
        checksum::hex(&hmac_sha256(&self.secret, text.as_bytes()))
    }

    /// Whether the URL parameters are the ones this server signed for `obj`.
    pub fn signature_matches(
        &self,
        obj: &S3Object,
        expires: u64,
        signed_names: &str,
        signature: &str,
    ) -> bool {
        let expected = self.sign(obj, expires);
        // Both compared in full, so timing says nothing about the secret.
        let names_ok = signed_names == obj.signed_names();
        let sig_ok = constant_time_eq(
            expected.as_bytes(),
            signature.to_ascii_lowercase().as_bytes(),
        );
        names_ok & sig_ok
    }

    fn presigned(&self, obj: &S3Object, origin: &str, base: &str, expires: u64) -> Presigned {
        let url = format!(
            "{origin}{base}/s3/{key}?X-Expires={expires}&X-SignedHeaders={names}&X-Signature={sig}",
            key = obj.key,
            names = obj.signed_names(),
            sig = self.sign(obj, expires),
        );
        let mut headers = obj.headers.clone();
        if !obj.content_type.is_empty() {
            headers.insert("content-type".into(), obj.content_type.clone());
        }
        Presigned {
            url,
            method: "PUT",
            headers,
            key: obj.key.clone(),
            expires,
        }
    }
}

/// Presigns a new key for an upload.
///
/// `origin` is put in front of the URL as is: `""` for a server-relative
/// URL, or e.g. `http://127.0.0.1:8080`. `base` is the route family the
/// PUT must use, `""` (global faults) or `/faults/{percent-encoded spec}`;
/// the key's fault stream is drawn from that family's presign stream.
pub fn presign(
    app: &AppState,
    origin: &str,
    base: &str,
    req: PresignRequest,
) -> Result<Presigned, PresignError> {
    let stream_key = family_key(base)?;
    presign_on(app, origin, base, &stream_key, req)
}

/// A fresh URL for an existing key (same signed type, size and headers; new
/// expiry), e.g. to hand out again after the first one expired.
pub fn presign_again(
    app: &AppState,
    origin: &str,
    base: &str,
    key: &str,
    ttl_seconds: Option<u64>,
    expired: bool,
) -> Result<Presigned, PresignError> {
    family_key(base)?;
    let obj = app.s3.get(key).ok_or(PresignError::NoSuchKey)?;
    let expires = expiry(ttl_seconds, expired)?;
    Ok(app.s3.presigned(&obj, origin, base, expires))
}

/// [`presign`] with the family's stream key already known (HTTP handlers
/// have it from the route).
pub(crate) fn presign_on(
    app: &AppState,
    origin: &str,
    base: &str,
    stream_key: &str,
    mut req: PresignRequest,
) -> Result<Presigned, PresignError> {
    if req.file_size > app.max_size {
        return Err(PresignError::TooLarge {
            size: req.file_size,
            max: app.max_size,
        });
    }
    let expires = expiry(req.ttl_seconds, req.expired)?;
    let headers = signed_extras(&req.file_type, std::mem::take(&mut req.headers))?;
    let seed = app.faults.draw_seed(&format!("s3:{stream_key}"));
    let obj = app.s3.register(req, headers, seed);
    Ok(app.s3.presigned(&obj, origin, base, expires))
}

/// The creation-stream key of a route prefix, as `Target` computes it.
fn family_key(base: &str) -> Result<String, PresignError> {
    if base.is_empty() {
        return Ok("global".into());
    }
    let bad = || PresignError::BadBase(base.to_owned());
    let raw = base
        .strip_prefix("/faults/")
        .filter(|r| !r.contains('/'))
        .ok_or_else(bad)?;
    let decoded = crate::tus::percent_decode(raw).ok_or_else(bad)?;
    let spec = FaultSpec::parse(&decoded).map_err(|_| bad())?;
    Ok(format!("path:{spec}"))
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn expiry(ttl_seconds: Option<u64>, expired: bool) -> Result<u64, PresignError> {
    let ttl = ttl_seconds.unwrap_or(DEFAULT_TTL_SECS);
    if ttl > MAX_TTL_SECS {
        return Err(PresignError::BadTtl(ttl));
    }
    let now = now_unix();
    // A URL is refused once now > expires, so one second back is expired.
    Ok(if expired {
        now.saturating_sub(1)
    } else {
        now + ttl
    })
}

/// Validates and normalises the extra headers to sign: lowercase names of
/// `[a-z0-9-]` (so they need no escaping in `X-SignedHeaders`), values a
/// browser can send, no framing headers, `content-type` only if it repeats
/// `file_type`, and the default tagging unless the caller set its own.
fn signed_extras(
    file_type: &str,
    headers: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, PresignError> {
    if HeaderValue::from_str(file_type).is_err() {
        return Err(PresignError::BadHeader(
            "fileType is not a valid header value".into(),
        ));
    }
    let mut out = BTreeMap::new();
    for (name, value) in headers {
        let lower = name.trim().to_ascii_lowercase();
        let simple = !lower.is_empty()
            && lower
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !simple || HeaderName::from_bytes(lower.as_bytes()).is_err() {
            return Err(PresignError::BadHeader(format!(
                "header name {name:?} must be letters, digits and '-'"
            )));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(PresignError::BadHeader(format!(
                "header {lower} cannot be signed"
            )));
        }
        let value = value.trim().to_owned();
        if HeaderValue::from_str(&value).is_err() {
            return Err(PresignError::BadHeader(format!(
                "header {lower} has an invalid value"
            )));
        }
        if lower == "content-type" {
            if value != file_type {
                return Err(PresignError::BadHeader(
                    "headers.content-type differs from fileType".into(),
                ));
            }
            continue;
        }
        if out.insert(lower.clone(), value).is_some() {
            return Err(PresignError::BadHeader(format!(
                "header {lower} is repeated"
            )));
        }
    }
    out.entry(TAGGING_HEADER.to_owned())
        .or_insert_with(|| DEFAULT_TAGGING.to_owned());
    Ok(out)
}

/// What the signature covers, one item per line:
///
/// ```text
/// PUT
/// {key}
/// {expires}
/// {size}
/// {signed names joined by ';'}
/// {name}:{value}        (one line per signed header, sorted by name)
/// ```
pub fn string_to_sign(
    key: &str,
    expires: u64,
    size: u64,
    signed: &BTreeMap<String, String>,
) -> String {
    let names: Vec<&str> = signed.keys().map(String::as_str).collect();
    let mut text = format!("PUT\n{key}\n{expires}\n{size}\n{}\n", names.join(";"));
    for (name, value) in signed {
        text.push_str(name);
        text.push(':');
        text.push_str(value);
        text.push('\n');
    }
    text
}

/// HMAC-SHA256 (RFC 2104), written out over `sha2` rather than adding the
/// `hmac` crate for a dozen lines.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer.finalize());
    out
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 bytes from std's OS-seeded hasher keys, the process id and the clock,
/// mixed with SHA-256. Good enough for a test server's signing key.
fn random_secret() -> Vec<u8> {
    let mut h = Sha256::new();
    for i in 0u64..4 {
        let mut s = RandomState::new().build_hasher();
        s.write_u64(i);
        h.update(s.finish().to_le_bytes());
    }
    h.update(std::process::id().to_le_bytes());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.update(nanos.to_le_bytes());
    h.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        crate::config::parse_hex(s).expect("hex")
    }

    #[test]
    fn hmac_rfc4231_vectors() {
        // Test case 1.
        let mac = hmac_sha256(&[0x0b; 20], b"Hi There");
        assert_eq!(
            checksum::hex(&mac),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        // Test case 2.
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            checksum::hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            mac.to_vec(),
            unhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
    }

    #[test]
    fn extras_are_normalised_and_checked() {
        let mut h = BTreeMap::new();
        h.insert("X-Custom".to_owned(), " v ".to_owned());
        h.insert("Content-Type".to_owned(), "text/plain".to_owned());
        let out = signed_extras("text/plain", h).expect("valid");
        assert_eq!(out.get("x-custom").map(String::as_str), Some("v"));
        assert_eq!(
            out.get(TAGGING_HEADER).map(String::as_str),
            Some(DEFAULT_TAGGING)
        );
        assert!(!out.contains_key("content-type"));

        let one = |n: &str, v: &str| BTreeMap::from([(n.to_owned(), v.to_owned())]);
        assert!(signed_extras("a/b", one("content-type", "c/d")).is_err());
        assert!(signed_extras("", one("content-length", "1")).is_err());
        assert!(signed_extras("", one("x_y", "1")).is_err());
        assert!(signed_extras("", one("x-y", "a\nb")).is_err());
        let custom = signed_extras("", one("x-amz-tagging", "a=b")).expect("valid");
        assert_eq!(custom.get(TAGGING_HEADER).map(String::as_str), Some("a=b"));
    }

    #[test]
    fn string_to_sign_layout() {
        let signed = BTreeMap::from([
            ("x-amz-tagging".to_owned(), "chunkup=1".to_owned()),
            ("content-type".to_owned(), "text/plain".to_owned()),
        ]);
        assert_eq!(
            string_to_sign("k", 10, 5, &signed),
            "PUT\nk\n10\n5\ncontent-type;x-amz-tagging\ncontent-type:text/plain\nx-amz-tagging:chunkup=1\n"
        );
    }

    #[test]
    fn family_keys() {
        assert_eq!(family_key(""), Ok("global".into()));
        assert_eq!(family_key("/faults/500%3A1"), Ok("path:500:1".into()));
        assert!(family_key("/faults/bogus:1").is_err());
        assert!(family_key("/elsewhere").is_err());
    }
}
