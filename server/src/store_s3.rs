//! The object store: an S3-compatible service (Garage in the tests) that holds the `put`
//! protocol's objects, the `s3` protocol's multipart uploads and the guest API's
//! attachments. This server plays the widget's backend: it holds the store's credentials,
//! talks to the store itself (creates, lists, completes and aborts multipart uploads,
//! reads objects back to hash them) and hands browsers presigned URLs, so a browser never
//! holds a credential.
//!
//! Every request this server sends and every URL it hands out is signed by rusty-s3
//! (SigV4, query authentication); nothing here computes a signature. rusty-s3 is Sans-IO:
//! the requests go out on hyper's client, one connection per request as in the proxy
//! (`proxy.rs`), which also means a node of the store that went away costs one failed
//! request, never a pool of dead connections. The few XML answers needed (errors,
//! InitiateMultipartUpload, ListParts with its per-part checksums, ListMultipartUploads)
//! are read by a minimal tag scanner: S3 answers are flat, attribute-free elements, and
//! only a handful of values are wanted.
//!
//! Two endpoints: `endpoint` is where this server reaches the store, `public_endpoint`
//! where browsers do (in the tests a fault-injecting proxy in front of Garage). URLs for
//! browsers are signed for the public one, because SigV4 signs the `Host`, and the proxy
//! forwards `Host` unchanged. A route family `/faults/{spec}` is put in front of the path
//! of such a URL after signing ([`with_base`]): a chunkup-server proxy strips it again
//! and applies that spec, so the store sees exactly the signed path.
//!
//! Secrets: the secret key lives in rusty-s3's `Credentials` (whose `Debug` hides it) and
//! [`Secret`]; errors name the operation and the store's status, code and message, never a
//! URL (a presigned URL carries a signature) or a header value.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, HOST};
use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use jiff::{SignedDuration, Timestamp};
use md5::Md5;
use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CreateMultipartUpload, DeleteObject, GetObject,
    HeadBucket, HeadObject, ListParts, PutObject, UploadPart,
};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};
use url::Url;

use crate::conn::send_on_new_connection;
use crate::ids::random_hex;

/// The longest lifetime S3 (and Garage) accept for a presigned URL: 7 days.
pub const MAX_EXPIRES_SECS: u64 = 7 * 24 * 3600;
/// Lifetime of the URLs this server signs for its own requests.
const OWN_REQUEST_TTL: Duration = Duration::from_secs(300);
/// A store request with no answer (head) after this long fails.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Largest XML answer read (a ListParts page of 1,000 parts is about 300 KB).
const MAX_XML: usize = 16 << 20;
/// S3's part numbers.
pub const MAX_PART_NUMBER: u16 = 10_000;
/// S3's largest part (5 GiB).
pub const MAX_PART_SIZE: u64 = 5 << 30;

/// A secret that never shows in `Debug` output (the config is printed in tests).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Where the store is and how to sign for it (`--s3-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Where this server sends its own requests: `http://HOST:PORT/`.
    pub endpoint: Url,
    /// Where browsers reach the store (the URLs handed out are signed for it).
    pub public_endpoint: Url,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

/// `text` (a URL as given) for a message: a user name and password in it, which may be a
/// secret, are left out.
pub fn without_user_info(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://(user info not shown)@{}", &rest[at + 1..]),
        None => text.to_owned(),
    }
}

/// Parses an endpoint URL: http (or, with `tls_ok`, https), a host, no user info, query
/// or fragment; a path, if any, is kept as the base of the bucket's path.
pub fn parse_endpoint(text: &str, tls_ok: bool) -> Result<Url, String> {
    let shown = without_user_info(text);
    let bad = |why: &str| format!("{shown:?} {why}");
    let mut url = Url::parse(text.trim()).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    match url.scheme() {
        "http" => {}
        "https" if tls_ok => {}
        _ if tls_ok => return Err(bad("is not an http(s) URL")),
        _ => {
            return Err(bad(
                "is not an http:// URL (the server speaks plain HTTP to the store)",
            ))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not hold a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Why a store operation failed. Displayed without URLs, headers or secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No answer: connection refused or broken, or a timeout.
    Unreachable { op: &'static str, why: String },
    /// The store answered with an error status (`code` from its XML body, if any).
    Status {
        op: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    /// An answer that could not be understood.
    BadAnswer { op: &'static str, why: String },
}

impl StoreError {
    /// The store's status, when it answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            StoreError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The store's error code (`NoSuchUpload`, `InvalidDigest`, …), when it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            StoreError::Status { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Unreachable { op, why } => write!(f, "store {op}: no answer ({why})"),
            StoreError::Status {
                op,
                status,
                code,
                message,
            } => {
                write!(f, "store {op}: {status}")?;
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            StoreError::BadAnswer { op, why } => write!(f, "store {op}: unexpected answer ({why})"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Where a part's SHA-256 travels in its presigned URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the signed query (`x-amz-checksum-sha256=…`); the browser sends no extra
    /// header (sending the same one as well gets 400 from Garage).
    Query,
    /// As a signed header the browser must send (`x-amz-checksum-sha256: …`).
    Header,
    /// No checksum at all: the part travels unverified.
    None,
}

impl Placement {
    pub fn parse(text: &str) -> Option<Placement> {
        match text {
            "query" => Some(Placement::Query),
            "header" => Some(Placement::Header),
            "none" => Some(Placement::None),
            _ => None,
        }
    }
}

/// What to presign an `UploadPart` for.
#[derive(Debug, Clone, Copy)]
pub struct PartUrl<'a> {
    pub key: &'a str,
    pub upload_id: &'a str,
    pub part_number: u16,
    /// Base64 SHA-256 of the part (ignored with [`Placement::None`]).
    pub checksum_sha256: Option<&'a str>,
    pub placement: Placement,
    /// Lifetime in seconds (1 to [`MAX_EXPIRES_SECS`]).
    pub ttl: u64,
    /// Signed as if `ttl + 1` seconds ago: already expired.
    pub expired: bool,
    /// Route family put in front of the path ([`with_base`]).
    pub base: &'a str,
}

/// A presigned request for a browser: its URL and the headers it must send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signed {
    pub url: String,
    /// Signed headers the request must carry, lowercase names (`host` excluded).
    pub headers: BTreeMap<String, String>,
    /// Unix seconds after which the store refuses the URL.
    pub expires: u64,
}

/// A part as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PartInfo {
    pub part_number: u16,
    pub size: u64,
    /// As the store sends it, quoted.
    pub etag: String,
    /// Base64 SHA-256 the store verified and kept (only for uploads created with a
    /// checksum algorithm).
    #[serde(rename = "checksumSHA256", skip_serializing_if = "Option::is_none")]
    pub checksum_sha256: Option<String>,
}

/// A part of a CompleteMultipartUpload request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u16,
    pub etag: String,
    /// Base64 SHA-256; the store compares it with the one it kept for the part.
    pub checksum_sha256: Option<String>,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadItem {
    pub key: String,
    pub upload_id: String,
    pub initiated: String,
}

/// The ListMultipartUploads answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadList {
    pub bucket: String,
    pub uploads: Vec<UploadItem>,
    /// More uploads than one page (1,000) holds.
    pub truncated: bool,
}

/// A stored object read back in full and hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectDigest {
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
    /// Lowercase hex.
    pub md5: String,
    pub etag: Option<String>,
    #[serde(rename = "contentType")]
    pub content_type: Option<String>,
}

/// The store client and presigner.
#[derive(Debug)]
pub struct ObjectStore {
    internal: Bucket,
    public: Bucket,
    credentials: Credentials,
    /// Where to connect for this server's own requests, and the `Host` they carry.
    connect_host: String,
    connect_port: u16,
    host_header: String,
}

/// Keys this server makes: exactly 32 lowercase hex characters (never derived from a file
/// name, so a key says nothing about the file and needs no escaping anywhere).
pub fn is_valid_key(key: &str) -> bool {
    key.len() == 32 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Upload ids are the store's; anything printable of sane length is passed on (rusty-s3
/// encodes it in the query).
pub fn is_valid_upload_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 1024 && id.bytes().all(|b| b.is_ascii_graphic())
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Puts the route family `base` (`""` or `/faults/{encoded spec}`) in front of the path
/// of a signed URL. The signature covers the path without it: only a chunkup-server proxy,
/// which strips the prefix before forwarding, passes such a URL on intact.
pub fn with_base(mut url: Url, base: &str) -> Url {
    if !base.is_empty() {
        let path = format!("{base}{}", url.path());
        url.set_path(&path);
    }
    url
}

/// `host[:port]` as rusty-s3 signs it (the port only when not the scheme's default).
fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

impl ObjectStore {
    pub fn new(config: &StoreConfig) -> Result<ObjectStore, String> {
        let bucket = |endpoint: &Url| {
            Bucket::new(
                endpoint.clone(),
                UrlStyle::Path,
                config.bucket.clone(),
                config.region.clone(),
            )
            .map_err(|e| format!("bucket {:?}: {e}", config.bucket))
        };
        let internal = bucket(&config.endpoint)?;
        let public = bucket(&config.public_endpoint)?;
        let connect_host = config
            .endpoint
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let connect_port = config.endpoint.port_or_known_default().unwrap_or(80);
        Ok(ObjectStore {
            host_header: host_header(&config.endpoint),
            internal,
            public,
            credentials: Credentials::new(
                config.access_key_id.clone(),
                config.secret_access_key.expose().to_owned(),
            ),
            connect_host,
            connect_port,
        })
    }

    pub fn bucket(&self) -> &str {
        self.internal.name()
    }

    /// A fresh random key (32 lowercase hex characters: see is_valid_key).
    pub fn fresh_key(&self) -> String {
        random_hex::<16>()
    }

    /// The object's public URL, without query (what a browser is told it uploaded to).
    pub fn location(&self, key: &str) -> String {
        self.public.object_url(key).to_string()
    }

    // ---- URLs for browsers ----

    /// A presigned `PUT` of the whole object. `headers` (lowercase names, `content-type`
    /// among them when the PUT must send one) are signed and must be sent as given.
    pub fn presign_put(
        &self,
        key: &str,
        headers: &BTreeMap<String, String>,
        ttl: u64,
        expired: bool,
        base: &str,
    ) -> Signed {
        let mut action = PutObject::new(&self.public, Some(&self.credentials), key);
        for (name, value) in headers {
            action.headers_mut().insert(name.clone(), value.clone());
        }
        let (url, expires) = sign(&action, ttl, expired);
        Signed {
            url: with_base(url, base).to_string(),
            headers: headers.clone(),
            expires,
        }
    }

    /// A presigned `UploadPart`, with the part's base64 SHA-256 where `placement` says.
    pub fn presign_part(&self, part: &PartUrl<'_>) -> Signed {
        let mut action = UploadPart::new(
            &self.public,
            Some(&self.credentials),
            part.key,
            part.part_number,
            part.upload_id,
        );
        let mut headers = BTreeMap::new();
        if let Some(sum) = part.checksum_sha256 {
            match part.placement {
                Placement::Query => action
                    .query_mut()
                    .insert("x-amz-checksum-sha256", sum.to_owned()),
                Placement::Header => {
                    action
                        .headers_mut()
                        .insert("x-amz-checksum-sha256", sum.to_owned());
                    headers.insert("x-amz-checksum-sha256".to_owned(), sum.to_owned());
                }
                Placement::None => {}
            }
        }
        let (url, expires) = sign(&action, part.ttl, part.expired);
        Signed {
            url: with_base(url, part.base).to_string(),
            headers,
            expires,
        }
    }

    // ---- this server's own requests ----

    /// Sends one signed request to the store and returns the answer's head and body
    /// stream. Bodies here are small (XML) and sent whole.
    async fn send(
        &self,
        op: &'static str,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<hyper::Response<Incoming>, StoreError> {
        let unreachable = |why: String| StoreError::Unreachable { op, why };
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let mut request = hyper::Request::new(Full::new(body.clone()));
        *request.method_mut() = method.clone();
        *request.uri_mut() = target
            .parse()
            .map_err(|_| unreachable("bad request target".into()))?;
        let h = request.headers_mut();
        let host = self
            .host_header
            .parse()
            .map_err(|_| unreachable("bad host".into()))?;
        h.insert(HOST, host);
        for (name, value) in headers {
            let name = axum::http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| unreachable("bad header name".into()))?;
            let value = axum::http::HeaderValue::from_str(value)
                .map_err(|_| unreachable(format!("bad value for header {name}")))?;
            h.insert(name, value);
        }
        if !body.is_empty() || matches!(method, Method::POST | Method::PUT) {
            h.insert(CONTENT_LENGTH, body.len().into());
        }
        let work = send_on_new_connection(&self.connect_host, self.connect_port, request);
        tokio::time::timeout(TIMEOUT, work)
            .await
            .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
            .map_err(|e| unreachable(e.error))
    }

    /// [`send`](Self::send), then the whole body (at most [`MAX_XML`] bytes); an error
    /// status becomes [`StoreError::Status`] with the code and message of its XML body.
    async fn call(
        &self,
        op: &'static str,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(HeaderMap, String), StoreError> {
        let res = self.send(op, method, url, headers, body).await?;
        let status = res.status();
        let (head, body) = res.into_parts();
        let text = read_text(op, body).await?;
        if !status.is_success() {
            return Err(status_error(op, status, &text));
        }
        Ok((head.headers, text))
    }

    fn own<'a>(&self, action: &impl S3Action<'a>) -> Url {
        action.sign(OWN_REQUEST_TTL)
    }

    /// Whether the bucket exists and the key may use it (checked once at startup).
    pub async fn check_bucket(&self) -> Result<(), StoreError> {
        let action = HeadBucket::new(&self.internal, Some(&self.credentials));
        let res = self
            .send(
                "HeadBucket",
                Method::HEAD,
                &self.own(&action),
                &[],
                Bytes::new(),
            )
            .await?;
        let status = res.status();
        drop(res);
        if status.is_success() {
            Ok(())
        } else {
            Err(status_error("HeadBucket", status, ""))
        }
    }

    /// CreateMultipartUpload. With `checksum`, the upload keeps each part's SHA-256
    /// (`x-amz-checksum-algorithm: SHA256`): every part must then carry one, ListParts
    /// reports them, and CompleteMultipartUpload compares the client's with them.
    /// `metadata` becomes `x-amz-meta-*` (names `[a-z0-9-]`, values printable ASCII).
    pub async fn create_multipart(
        &self,
        key: &str,
        content_type: &str,
        metadata: &BTreeMap<String, String>,
        checksum: bool,
    ) -> Result<String, StoreError> {
        const OP: &str = "CreateMultipartUpload";
        let mut action = CreateMultipartUpload::new(&self.internal, Some(&self.credentials), key);
        let mut headers: Vec<(String, String)> = Vec::new();
        if !content_type.is_empty() {
            headers.push(("content-type".into(), content_type.to_owned()));
        }
        if checksum {
            headers.push(("x-amz-checksum-algorithm".into(), "SHA256".into()));
        }
        for (name, value) in metadata {
            headers.push((format!("x-amz-meta-{name}"), value.clone()));
        }
        for (name, value) in &headers {
            action.headers_mut().insert(name.clone(), value.clone());
        }
        let url = self.own(&action);
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let (_, text) = self
            .call(OP, Method::POST, &url, &pairs, Bytes::new())
            .await?;
        first_text(&text, "UploadId")
            .filter(|id| is_valid_upload_id(id))
            .ok_or_else(|| StoreError::BadAnswer {
                op: OP,
                why: "no UploadId".into(),
            })
    }

    /// ListParts, every page.
    pub async fn list_parts(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<Vec<PartInfo>, StoreError> {
        const OP: &str = "ListParts";
        let bad = |why: &str| StoreError::BadAnswer {
            op: OP,
            why: why.into(),
        };
        let mut parts = Vec::new();
        let mut marker: Option<u16> = None;
        loop {
            let mut action =
                ListParts::new(&self.internal, Some(&self.credentials), key, upload_id);
            if let Some(m) = marker {
                action.set_part_number_marker(m);
            }
            let url = self.own(&action);
            let (_, text) = self.call(OP, Method::GET, &url, &[], Bytes::new()).await?;
            for part in elements(&text, "Part") {
                let number = first_text(part, "PartNumber")
                    .and_then(|n| n.parse::<u16>().ok())
                    .ok_or_else(|| bad("a part without PartNumber"))?;
                let size = first_text(part, "Size")
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(|| bad("a part without Size"))?;
                let etag = first_text(part, "ETag").ok_or_else(|| bad("a part without ETag"))?;
                parts.push(PartInfo {
                    part_number: number,
                    size,
                    etag,
                    checksum_sha256: first_text(part, "ChecksumSHA256"),
                });
            }
            let truncated = first_text(&text, "IsTruncated").as_deref() == Some("true");
            let next =
                first_text(&text, "NextPartNumberMarker").and_then(|n| n.parse::<u16>().ok());
            match (truncated, next) {
                (true, Some(n)) if Some(n) != marker && n > 0 => marker = Some(n),
                (true, _) => return Err(bad("truncated without a usable NextPartNumberMarker")),
                (false, _) => break,
            }
        }
        parts.sort_by_key(|p| p.part_number);
        Ok(parts)
    }

    /// CompleteMultipartUpload; returns the object's ETag. S3 may answer 200 with an
    /// `<Error>` body, which counts as an error here.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<String, StoreError> {
        const OP: &str = "CompleteMultipartUpload";
        let action = CompleteMultipartUpload::new(
            &self.internal,
            Some(&self.credentials),
            key,
            upload_id,
            parts.iter().map(|p| p.etag.as_str()),
        );
        // rusty-s3's body lists ETags only; the URL does not depend on the body (query
        // authentication signs no payload), so the body with checksums is written here.
        let mut body = String::from("<CompleteMultipartUpload>");
        for p in parts {
            body.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag>",
                p.part_number,
                xml_escape(&p.etag)
            ));
            if let Some(sum) = &p.checksum_sha256 {
                body.push_str(&format!(
                    "<ChecksumSHA256>{}</ChecksumSHA256>",
                    xml_escape(sum)
                ));
            }
            body.push_str("</Part>");
        }
        body.push_str("</CompleteMultipartUpload>");
        let url = self.own(&action);
        let (_, text) = self
            .call(
                OP,
                Method::POST,
                &url,
                &[("content-type", "application/xml")],
                Bytes::from(body),
            )
            .await?;
        if text.contains("<Error>") {
            return Err(status_error(OP, StatusCode::OK, &text));
        }
        first_text(&text, "ETag").ok_or_else(|| StoreError::BadAnswer {
            op: OP,
            why: "no ETag".into(),
        })
    }

    /// AbortMultipartUpload.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), StoreError> {
        let action =
            AbortMultipartUpload::new(&self.internal, Some(&self.credentials), key, upload_id);
        let url = self.own(&action);
        self.call(
            "AbortMultipartUpload",
            Method::DELETE,
            &url,
            &[],
            Bytes::new(),
        )
        .await
        .map(drop)
    }

    /// A URL of the bucket itself with `query`, signed for this server's own request by
    /// rusty-s3's general `signing::sign` (for the operations rusty-s3 has no action for).
    fn signed_bucket_url(&self, method: rusty_s3::Method, query: &[(&str, &str)]) -> url::Url {
        rusty_s3::signing::sign(
            &Timestamp::now(),
            method,
            self.internal.base_url().clone(),
            self.credentials.key(),
            self.credentials.secret(),
            None,
            self.internal.region(),
            OWN_REQUEST_TTL.as_secs(),
            query.iter().copied(),
            std::iter::empty(),
        )
    }

    /// ListMultipartUploads of the bucket (one page of up to 1,000). rusty-s3 has no
    /// action for it, so it is signed with rusty-s3's general `signing::sign`.
    pub async fn list_multipart_uploads(&self) -> Result<UploadList, StoreError> {
        const OP: &str = "ListMultipartUploads";
        let url = self.signed_bucket_url(
            rusty_s3::Method::Get,
            &[("max-uploads", "1000"), ("uploads", "")],
        );
        let (_, text) = self.call(OP, Method::GET, &url, &[], Bytes::new()).await?;
        let mut uploads = Vec::new();
        for item in elements(&text, "Upload") {
            let (Some(key), Some(upload_id)) =
                (first_text(item, "Key"), first_text(item, "UploadId"))
            else {
                return Err(StoreError::BadAnswer {
                    op: OP,
                    why: "an upload without Key or UploadId".into(),
                });
            };
            uploads.push(UploadItem {
                key,
                upload_id,
                initiated: first_text(item, "Initiated").unwrap_or_default(),
            });
        }
        Ok(UploadList {
            bucket: self.bucket().to_owned(),
            uploads,
            truncated: first_text(&text, "IsTruncated").as_deref() == Some("true"),
        })
    }

    /// PutBucketCors with `xml` (a `<CORSConfiguration>`), signed by rusty-s3's general
    /// `signing::sign` (rusty-s3 has no action for it).
    pub async fn put_bucket_cors(&self, xml: &str) -> Result<(), StoreError> {
        let url = self.signed_bucket_url(rusty_s3::Method::Put, &[("cors", "")]);
        self.call(
            "PutBucketCors",
            Method::PUT,
            &url,
            &[("content-type", "application/xml")],
            Bytes::from(xml.to_owned()),
        )
        .await
        .map(drop)
    }

    /// GetObject as a stream (`range` forwarded; `head` sends a HEAD instead), for
    /// serving an object through this server. The answer is the store's, status included.
    pub async fn get_object(
        &self,
        key: &str,
        range: Option<&str>,
        head: bool,
    ) -> Result<hyper::Response<Incoming>, StoreError> {
        let (op, method, url) = if head {
            let action = HeadObject::new(&self.internal, Some(&self.credentials), key);
            ("HeadObject", Method::HEAD, self.own(&action))
        } else {
            let action = GetObject::new(&self.internal, Some(&self.credentials), key);
            ("GetObject", Method::GET, self.own(&action))
        };
        let headers: Vec<(&str, &str)> = range.map(|r| ("range", r)).into_iter().collect();
        self.send(op, method, &url, &headers, Bytes::new()).await
    }

    /// Reads the whole object and hashes it (SHA-256 and MD5); `None` when absent.
    pub async fn digest_object(&self, key: &str) -> Result<Option<ObjectDigest>, StoreError> {
        const OP: &str = "GetObject";
        let res = self.get_object(key, None, false).await?;
        let status = res.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let (head, mut body) = res.into_parts();
        if !status.is_success() {
            let text = read_text(OP, body).await.unwrap_or_default();
            return Err(status_error(OP, status, &text));
        }
        let mut sha256 = Sha256::new();
        let mut md5 = Md5::new();
        let mut size = 0u64;
        loop {
            let frame = tokio::time::timeout(TIMEOUT, body.frame())
                .await
                .map_err(|_| StoreError::Unreachable {
                    op: OP,
                    why: "the body stalled".into(),
                })?;
            match frame {
                None => break,
                Some(Err(e)) => {
                    return Err(StoreError::Unreachable {
                        op: OP,
                        why: e.to_string(),
                    })
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        sha256.update(&data);
                        md5.update(&data);
                        size += data.len() as u64;
                    }
                }
            }
        }
        if let Some(expected) =
            header(&head.headers, &CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
        {
            if expected != size {
                return Err(StoreError::Unreachable {
                    op: OP,
                    why: format!("body ended after {size} of {expected} bytes"),
                });
            }
        }
        Ok(Some(ObjectDigest {
            size,
            sha256: crate::checksum::hex(&sha256.finalize()),
            md5: crate::checksum::hex(&md5.finalize()),
            etag: header(&head.headers, &ETAG),
            content_type: header(&head.headers, &CONTENT_TYPE),
        }))
    }

    /// DeleteObject (S3 answers 204 whether or not it existed).
    pub async fn delete_object(&self, key: &str) -> Result<(), StoreError> {
        let action = DeleteObject::new(&self.internal, Some(&self.credentials), key);
        let url = self.own(&action);
        self.call("DeleteObject", Method::DELETE, &url, &[], Bytes::new())
            .await
            .map(drop)
    }
}

/// Signs `action` for `ttl` seconds from now, or with `expired` as if signed `ttl + 1`
/// seconds ago (so it expired a second ago); returns the URL and its expiry.
fn sign<'a>(action: &impl S3Action<'a>, ttl: u64, expired: bool) -> (Url, u64) {
    let ttl = ttl.clamp(1, MAX_EXPIRES_SECS);
    let now = now_unix();
    if expired {
        let back = SignedDuration::from_secs(i64::try_from(ttl + 1).unwrap_or(i64::MAX));
        let then = Timestamp::now()
            .checked_sub(back)
            .unwrap_or_else(|_| Timestamp::now());
        (
            action.sign_with_time(Duration::from_secs(ttl), &then),
            now.saturating_sub(1),
        )
    } else {
        (action.sign(Duration::from_secs(ttl)), now + ttl)
    }
}

fn header(h: &HeaderMap, name: &axum::http::HeaderName) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

async fn read_text(op: &'static str, body: Incoming) -> Result<String, StoreError> {
    let limited = http_body_util::Limited::new(body, MAX_XML);
    let bytes = tokio::time::timeout(TIMEOUT, limited.collect())
        .await
        .map_err(|_| StoreError::Unreachable {
            op,
            why: "the body stalled".into(),
        })?
        .map_err(|e| StoreError::Unreachable {
            op,
            why: e.to_string(),
        })?
        .to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn status_error(op: &'static str, status: StatusCode, body: &str) -> StoreError {
    StoreError::Status {
        op,
        status: status.as_u16(),
        code: first_text(body, "Code").unwrap_or_default(),
        // One line, bounded: store messages can embed whole request bodies.
        message: first_text(body, "Message")
            .map(|m| m.split_whitespace().collect::<Vec<_>>().join(" "))
            .map(|m| m.chars().take(300).collect())
            .unwrap_or_default(),
    }
}

/// The raw contents of every `<tag>…</tag>` element in `xml`, in order. S3 answers write
/// these elements without attributes and never nest an element in one of its own name.
pub fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            break;
        };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// The unescaped text of the first `<tag>…</tag>` in `xml`.
pub fn first_text(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag)
        .first()
        .map(|raw| xml_unescape(raw.trim()))
}

fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp..];
        let Some(semi) = after.find(';') else {
            out.push_str(after);
            return out;
        };
        let entity = &after[1..semi];
        let decoded = match entity {
            "lt" => Some('<'),
            "gt" => Some('>'),
            "amp" => Some('&'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => out.push(c),
            None => out.push_str(&after[..=semi]),
        }
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    out
}

pub fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StoreConfig {
        StoreConfig {
            endpoint: parse_endpoint("http://127.0.0.1:3900", false).expect("valid"),
            public_endpoint: parse_endpoint("http://127.0.0.1:4000/", true).expect("valid"),
            region: "garage".into(),
            bucket: "chunkup".into(),
            access_key_id: "GK0123456789abcdef01234567".into(),
            secret_access_key: Secret::new("s3cr3t"),
        }
    }

    #[test]
    fn endpoints() {
        let err = parse_endpoint("http://key:hunter2@a:1", false).expect_err("user info");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(without_user_info("http://a:1/p@q"), "http://a:1/p@q");
        assert_eq!(
            parse_endpoint("http://127.0.0.1:3900", false).map(|u| u.to_string()),
            Ok("http://127.0.0.1:3900/".into())
        );
        assert!(parse_endpoint("https://s3.example:443", false).is_err());
        assert!(parse_endpoint("https://s3.example", true).is_ok());
        for bad in [
            "",
            "127.0.0.1:3900",
            "ftp://a",
            "http://u:p@a:1",
            "http://a:1/?x",
            "http://a:1/#f",
        ] {
            assert!(parse_endpoint(bad, true).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let c = config();
        let text = format!("{c:?} {:?}", ObjectStore::new(&c).expect("store"));
        assert!(!text.contains("s3cr3t"), "{text}");
    }

    #[test]
    fn part_urls_carry_the_checksum_where_asked() {
        let store = ObjectStore::new(&config()).expect("store");
        let key = store.fresh_key();
        assert!(is_valid_key(&key));
        assert_ne!(key, store.fresh_key());
        let sum = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        let part = |placement, expired, base| PartUrl {
            key: &key,
            upload_id: "u1",
            part_number: 3,
            checksum_sha256: Some(sum),
            placement,
            ttl: 60,
            expired,
            base,
        };
        let q = store.presign_part(&part(Placement::Query, false, ""));
        assert!(
            q.url
                .starts_with(&format!("http://127.0.0.1:4000/chunkup/{key}?")),
            "{}",
            q.url
        );
        assert!(
            q.url.contains(
                "x-amz-checksum-sha256=47DEQpj8HBSa%2B%2FTImW%2B5JCeuQeRkm5NMpJWZG3hSuFU%3D"
            ),
            "{}",
            q.url
        );
        assert!(q.url.contains("partNumber=3") && q.url.contains("uploadId=u1"));
        assert!(q.headers.is_empty());
        let h = store.presign_part(&part(Placement::Header, false, ""));
        assert!(!h.url.contains("x-amz-checksum-sha256="));
        assert!(
            h.url
                .contains("X-Amz-SignedHeaders=host%3Bx-amz-checksum-sha256"),
            "{}",
            h.url
        );
        assert_eq!(
            h.headers.get("x-amz-checksum-sha256").map(String::as_str),
            Some(sum)
        );
        let n = store.presign_part(&part(Placement::None, false, "/faults/500%3A1"));
        assert!(
            n.url.starts_with(&format!(
                "http://127.0.0.1:4000/faults/500%3A1/chunkup/{key}?"
            )),
            "{}",
            n.url
        );
        assert!(!n.url.contains("checksum"));
        assert!(!n.url.contains("s3cr3t"));
        let expired = store.presign_part(&part(Placement::Query, true, ""));
        assert!(expired.expires < now_unix());
    }

    #[test]
    fn xml_scanning() {
        let xml = r#"<?xml version="1.0"?><ListMultipartUploadsResult xmlns="x"><Bucket>b</Bucket><KeyMarker></KeyMarker><IsTruncated>false</IsTruncated>
            <Upload><Initiated>2024</Initiated><Key>a&amp;b</Key><UploadId>u1</UploadId><Owner><ID>o</ID></Owner></Upload>
            <Upload><Key>k2</Key><UploadId>u2</UploadId></Upload></ListMultipartUploadsResult>"#;
        let uploads = elements(xml, "Upload");
        assert_eq!(uploads.len(), 2);
        assert_eq!(first_text(uploads[0], "Key").as_deref(), Some("a&b"));
        assert_eq!(first_text(uploads[1], "UploadId").as_deref(), Some("u2"));
        assert_eq!(first_text(xml, "IsTruncated").as_deref(), Some("false"));
        assert_eq!(xml_unescape("&lt;&#65;&#x42;&bogus;"), "<AB&bogus;");
        let err = status_error(
            "X",
            StatusCode::BAD_REQUEST,
            "<Error><Code>InvalidDigest</Code><Message>bad\n  sum</Message></Error>",
        );
        assert_eq!(err.to_string(), "store X: 400 InvalidDigest: bad sum");
        assert_eq!(err.code(), Some("InvalidDigest"));
    }
}
