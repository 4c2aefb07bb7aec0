//! The `put` protocol's backend: `POST {base}/presign` hands out a presigned `PUT` of one
//! whole object to the object store (`store_s3.rs`, Garage in the tests), signed with
//! rusty-s3 for the store's public endpoint. The upload itself goes from the browser to the
//! store; this server never sees it. The guest API (`guest/`) presigns its attachment
//! URLs through [`presign_put`] too.
//!
//! Never faulted: in a real deployment this is the app's own backend, not the storage
//! service whose failures the client must survive. Faults on the PUT come from a
//! chunkup-server proxy in front of the store: with a `/faults/{spec}` route family, the
//! URL's path starts with that prefix, which the proxy strips and applies (see
//! [`crate::store_s3::with_base`]).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::store_s3::MAX_EXPIRES_SECS;
use crate::tus::{self, Target};
use crate::AppState;

/// `ttlSeconds` when the request names none.
pub const DEFAULT_TTL_SECS: u64 = 300;
/// Always signed, so tests can check that signed headers are enforced; a caller may
/// choose its own value.
pub const TAGGING_HEADER: &str = "x-amz-tagging";
pub const DEFAULT_TAGGING: &str = "chunkup=1";

/// Headers that cannot be signed extras: framing or connection headers the browser sets
/// itself (the length is signed anyway, from `fileSize`), or `content-type` (from
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

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/presign", post(presign_handler))
        .route("/faults/{spec}/presign", post(presign_handler))
        .layer(DefaultBodyLimit::max(1 << 20))
}

/// What to presign. Build with [`PresignRequest::new`] and adjust fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresignRequest {
    /// For the caller's records only; never part of the key, never sent to the store.
    pub file_name: String,
    /// The `Content-Type` the PUT must send (signed); "" means none is signed.
    pub file_type: String,
    /// The exact `Content-Length` the PUT must send (signed).
    pub file_size: u64,
    /// Lifetime of the URL; `None` is [`DEFAULT_TTL_SECS`].
    pub ttl_seconds: Option<u64>,
    /// Hand out a URL that expired a second ago.
    pub expired: bool,
    /// Extra headers to sign (names are case-insensitive, stored lowercase).
    /// `x-amz-tagging: chunkup=1` is added unless given.
    pub headers: BTreeMap<String, String>,
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

/// A presigned upload: PUT `url` with exactly `headers` (which include `content-type`
/// unless the declared type is empty) and a body of exactly the declared size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presigned {
    pub url: String,
    pub method: &'static str,
    pub headers: BTreeMap<String, String>,
    pub key: String,
    /// Unix seconds after which the store refuses the URL.
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
    /// No `--s3-endpoint`.
    NoStore,
}

impl std::fmt::Display for PresignError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PresignError::TooLarge { size, max } => {
                write!(f, "fileSize {size} exceeds the maximum {max}")
            }
            PresignError::BadTtl(t) => {
                write!(f, "ttlSeconds {t} is not between 1 and {MAX_EXPIRES_SECS}")
            }
            PresignError::BadHeader(msg) => f.write_str(msg),
            PresignError::NoStore => f.write_str(NO_STORE),
        }
    }
}

impl std::error::Error for PresignError {}

impl PresignError {
    /// The HTTP status `POST /presign` answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            PresignError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            PresignError::NoStore => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// What the store-backed routes answer (503) when the server has no store.
pub const NO_STORE: &str =
    "no object store configured: start the server with --s3-endpoint, --s3-bucket, \
     --s3-access-key-id and --s3-secret-access-key (npm start does, when Garage is installed)";

/// `http://` plus the request's Host, so a URL works from a page on another origin;
/// empty (a server-relative URL) when the Host is missing or is not a plain
/// `host[:port]`. The guest API builds its download URLs with it.
pub(crate) fn origin_from_host(headers: &axum::http::HeaderMap) -> String {
    let host = tus::header_str(headers, &axum::http::header::HOST).unwrap_or_default();
    let plain = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if plain {
        format!("http://{host}")
    } else {
        String::new()
    }
}

/// Presigns a PUT of a new object for an upload. `base` is the route family the URL
/// goes through: `""`, or `/faults/{percent-encoded spec}` (a chunkup-server proxy in
/// front of the store applies it).
pub fn presign_put(
    app: &AppState,
    base: &str,
    mut req: PresignRequest,
) -> Result<Presigned, PresignError> {
    let store = app.object_store.as_deref().ok_or(PresignError::NoStore)?;
    if req.file_size > app.max_size {
        return Err(PresignError::TooLarge {
            size: req.file_size,
            max: app.max_size,
        });
    }
    let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TTL_SECS);
    if !(1..=MAX_EXPIRES_SECS).contains(&ttl) {
        return Err(PresignError::BadTtl(ttl));
    }
    let extras = signed_extras(&req.file_type, std::mem::take(&mut req.headers))?;
    // What the browser must send as it is: the extras and the type.
    let mut listed = extras;
    if !req.file_type.is_empty() {
        listed.insert("content-type".into(), req.file_type.clone());
    }
    // The length is signed too, so the store enforces the declared size, but not listed:
    // browsers set it themselves and refuse to be told.
    let mut signed = listed.clone();
    signed.insert("content-length".into(), req.file_size.to_string());
    let key = store.fresh_key();
    let url = store.presign_put(&key, &signed, ttl, req.expired, base);
    Ok(Presigned {
        url: url.url,
        method: "PUT",
        headers: listed,
        key,
        expires: url.expires,
    })
}

/// JSON body of `POST {base}/presign`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PresignBody {
    file_name: String,
    /// `null` counts as absent.
    file_type: Option<String>,
    file_size: u64,
    ttl_seconds: Option<u64>,
    expired: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

async fn presign_handler(State(app): State<AppState>, target: Target, body: Bytes) -> Response {
    // `latency` applies here as on every POST; no other fault does.
    target.delay().await;
    let req: PresignBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return tus::json_error(
                StatusCode::BAD_REQUEST,
                &format!("bad presign request: {e}"),
            )
        }
    };
    let req = PresignRequest {
        file_name: req.file_name,
        file_type: req.file_type.unwrap_or_default(),
        file_size: req.file_size,
        ttl_seconds: req.ttl_seconds,
        expired: req.expired.unwrap_or(false),
        headers: req.headers.unwrap_or_default(),
    };
    match presign_put(&app, &target.base, req) {
        Ok(p) => Json(p).into_response(),
        Err(e) => tus::json_error(e.status(), &e.to_string()),
    }
}

/// Validates and normalises the extra headers to sign: lowercase names of `[a-z0-9-]`,
/// values a browser can send, no framing headers, `content-type` only if it repeats
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
        if HeaderValue::from_str(&value).is_err() || !value.is_ascii() {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(signed_extras("", one("x-y", "é")).is_err());
        let custom = signed_extras("", one("x-amz-tagging", "a=b")).expect("valid");
        assert_eq!(custom.get(TAGGING_HEADER).map(String::as_str), Some("a=b"));
    }
}
