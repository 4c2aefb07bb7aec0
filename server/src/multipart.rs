//! The widget's backend for the `s3` protocol: S3 multipart uploads through presigned part
//! URLs. The browser calls these five JSON endpoints (through the five async hooks the
//! client takes) and sends the parts straight to the object store; this server holds the
//! credentials and signs, with rusty-s3 (`store_s3.rs`).
//!
//! * `POST /s3/multipart` {name, type, size, metadata?, checksum?} → {uploadId, key}
//! * `POST {base}/s3/multipart/sign` {uploadId, key, partNumber, size, checksumSHA256,
//!   placement?, expiresIn?, expired?} → {url, headers, expires}
//! * `POST /s3/multipart/list` {uploadId, key} → [{partNumber, size, etag, checksumSHA256?}]
//! * `POST /s3/multipart/complete` {uploadId, key, parts} → {location, etag}
//! * `POST /s3/multipart/abort` {uploadId, key} → {}
//!
//! plus, for tests and the demo, `GET /s3/objects/{key}/info` (the stored object, read
//! back and hashed by this server) and `GET /s3/multipart/uploads` (ListMultipartUploads).
//!
//! Keys are made here (32 random hex characters), never derived from the file name, which
//! travels only as metadata. None of these routes is faulted: they are the app's own
//! backend. Faults between the browser and the store come from a chunkup-server proxy in
//! front of it, aimed per URL by a `/faults/{spec}` route family on `sign`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::logging::LogNote;
use crate::s3::NO_STORE;
use crate::store_s3::{
    is_valid_key, is_valid_upload_id, CompletedPart, ObjectStore, PartUrl, Placement, StoreError,
    MAX_EXPIRES_SECS, MAX_PART_NUMBER, MAX_PART_SIZE,
};
use crate::tus::Target;
use crate::AppState;

/// `expiresIn` when the request names none.
pub const DEFAULT_PART_TTL_SECS: u64 = 600;
/// S3's largest object (5 TiB).
const MAX_OBJECT_SIZE: u64 = 5 << 40;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/s3/multipart", post(create))
        .route("/s3/multipart/sign", post(sign))
        .route("/faults/{spec}/s3/multipart/sign", post(sign))
        .route("/s3/multipart/list", post(list))
        .route("/s3/multipart/complete", post(complete))
        .route("/s3/multipart/abort", post(abort))
        .route("/s3/multipart/uploads", get(uploads))
        .route("/s3/objects/{key}/info", get(object_info))
        // A complete request lists at most 10,000 parts: well under 4 MB of JSON.
        .layer(DefaultBodyLimit::max(4 << 20))
}

/// A refused request: `{"error": …}` (plus the store's `code`, when it refused).
#[derive(Debug)]
pub(crate) struct Refusal {
    status: StatusCode,
    error: String,
    code: Option<String>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.error, "code": self.code})),
        )
            .into_response()
    }
}

type Answer = Result<Response, Refusal>;

fn bad(msg: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        error: msg.into(),
        code: None,
    }
}

fn parse<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| bad(format!("bad {what} request: {e}")))
}

fn store(app: &AppState) -> Result<&ObjectStore, Refusal> {
    app.object_store.as_deref().ok_or_else(|| Refusal {
        status: StatusCode::SERVICE_UNAVAILABLE,
        error: NO_STORE.into(),
        code: None,
    })
}

/// A store refusal keeps its status (404 NoSuchUpload, 400 InvalidPart, …) and code;
/// no answer, or a store error, is 502.
fn store_failure(e: StoreError, note: &LogNote) -> Refusal {
    let status = e
        .status()
        .filter(|s| (400..500).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    note.set(format!("store {}", e.code().unwrap_or("unreachable")));
    Refusal {
        status,
        error: e.to_string(),
        code: e.code().map(str::to_owned),
    }
}

/// A metadata value as an `x-amz-meta-*` header can carry it: printable ASCII as is,
/// anything else (non-ASCII, controls, `%`) percent-encoded as UTF-8.
pub fn meta_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.trim().to_owned()
}

/// The identity of an upload in every request after the first.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UploadRef {
    upload_id: String,
    key: String,
}

impl UploadRef {
    fn check(&self) -> Result<(), Refusal> {
        if !is_valid_key(&self.key) {
            return Err(bad("key must be one this server made (32 hex characters)"));
        }
        if !is_valid_upload_id(&self.upload_id) {
            return Err(bad("uploadId must be a non-empty printable string"));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(rename = "type")]
    content_type: Option<String>,
    size: u64,
    /// `null` counts as absent, as everywhere here.
    metadata: Option<BTreeMap<String, String>>,
    /// `"sha256"` (default): the store keeps every part's SHA-256, so each part must
    /// carry one; `"none"`: parts may travel without (placement `none`).
    #[serde(default)]
    checksum: Option<String>,
}

/// `POST /s3/multipart`.
async fn create(State(app): State<AppState>, note: LogNote, body: Bytes) -> Answer {
    let store = store(&app)?;
    let req: CreateBody = parse("create", &body)?;
    let max = app.max_size.min(MAX_OBJECT_SIZE);
    if req.size > max {
        return Err(Refusal {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            error: format!("size {} exceeds the maximum {max}", req.size),
            code: None,
        });
    }
    let content_type = req.content_type.unwrap_or_default();
    if axum::http::HeaderValue::from_str(&content_type).is_err() || !content_type.is_ascii() {
        return Err(bad("type is not a valid Content-Type"));
    }
    let checksum = match req.checksum.as_deref() {
        None | Some("sha256") => true,
        Some("none") => false,
        Some(other) => {
            return Err(bad(format!(
                "checksum must be \"sha256\" or \"none\", not {other:?}"
            )))
        }
    };
    let mut meta = BTreeMap::new();
    meta.insert("filename".to_owned(), meta_value(&req.name));
    for (name, value) in req.metadata.iter().flatten() {
        let lower = name.to_ascii_lowercase();
        let simple = !lower.is_empty()
            && lower.len() <= 64
            && lower
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !simple || lower == "filename" {
            return Err(bad(format!(
                "metadata name {name:?} must be 1 to 64 letters, digits and '-' (and not filename)"
            )));
        }
        meta.insert(lower, meta_value(value));
    }
    // S3 caps user metadata at 2 KB.
    if meta.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() > 2048 {
        return Err(bad("metadata larger than 2 KB"));
    }
    let key = store.fresh_key();
    let upload_id = store
        .create_multipart(&key, &content_type, &meta, checksum)
        .await
        .map_err(|e| store_failure(e, &note))?;
    Ok(Json(json!({"uploadId": upload_id, "key": key})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SignBody {
    upload_id: String,
    key: String,
    part_number: u64,
    size: u64,
    #[serde(rename = "checksumSHA256")]
    checksum_sha256: Option<String>,
    placement: Option<String>,
    expires_in: Option<u64>,
    expired: Option<bool>,
}

/// `POST {base}/s3/multipart/sign`: no request to the store, only signing.
async fn sign(State(app): State<AppState>, target: Target, body: Bytes) -> Answer {
    let store = store(&app)?;
    let req: SignBody = parse("sign", &body)?;
    let upload = UploadRef {
        upload_id: req.upload_id,
        key: req.key,
    };
    upload.check()?;
    let part_number = part_number(req.part_number)?;
    if req.size > MAX_PART_SIZE {
        return Err(bad(format!(
            "size {} exceeds the largest part, {MAX_PART_SIZE}",
            req.size
        )));
    }
    let placement = match req.placement.as_deref() {
        None => Placement::Query,
        Some(p) => Placement::parse(p)
            .ok_or_else(|| bad("placement must be \"query\", \"header\" or \"none\""))?,
    };
    let checksum = match (&req.checksum_sha256, placement) {
        (_, Placement::None) => None,
        (None, _) => {
            return Err(bad(
                "checksumSHA256 is required unless placement is \"none\"",
            ))
        }
        (Some(sum), _) => {
            let decoded = base64::engine::general_purpose::STANDARD.decode(sum);
            if !decoded.is_ok_and(|d| d.len() == 32) {
                return Err(bad("checksumSHA256 must be the base64 of 32 bytes"));
            }
            Some(sum.as_str())
        }
    };
    let ttl = req.expires_in.unwrap_or(DEFAULT_PART_TTL_SECS);
    if !(1..=MAX_EXPIRES_SECS).contains(&ttl) {
        return Err(bad(format!("expiresIn must be 1 to {MAX_EXPIRES_SECS}")));
    }
    let signed = store.presign_part(&PartUrl {
        key: &upload.key,
        upload_id: &upload.upload_id,
        part_number,
        checksum_sha256: checksum,
        placement,
        ttl,
        expired: req.expired.unwrap_or(false),
        base: &target.base,
    });
    Ok(Json(signed).into_response())
}

fn part_number(n: u64) -> Result<u16, Refusal> {
    u16::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_PART_NUMBER).contains(n))
        .ok_or_else(|| bad(format!("partNumber must be 1 to {MAX_PART_NUMBER}")))
}

/// `POST /s3/multipart/list`.
async fn list(State(app): State<AppState>, note: LogNote, body: Bytes) -> Answer {
    let store = store(&app)?;
    let upload: UploadRef = parse("list", &body)?;
    upload.check()?;
    let parts = store
        .list_parts(&upload.key, &upload.upload_id)
        .await
        .map_err(|e| store_failure(e, &note))?;
    Ok(Json(parts).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CompleteBody {
    upload_id: String,
    key: String,
    parts: Vec<CompletePart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CompletePart {
    part_number: u64,
    etag: String,
    #[serde(rename = "checksumSHA256")]
    checksum_sha256: Option<String>,
}

/// `POST /s3/multipart/complete`. The parts' checksums are passed to the store for the
/// parts it kept one for (an upload created with `checksum: "sha256"`), which compares
/// them; for an upload without, the store has none to compare, so they are left out.
async fn complete(State(app): State<AppState>, note: LogNote, body: Bytes) -> Answer {
    let store = store(&app)?;
    let req: CompleteBody = parse("complete", &body)?;
    let upload = UploadRef {
        upload_id: req.upload_id,
        key: req.key,
    };
    upload.check()?;
    if req.parts.is_empty() {
        return Err(bad("parts must not be empty"));
    }
    let mut parts = Vec::with_capacity(req.parts.len());
    for p in req.parts {
        if p.etag.is_empty() || !p.etag.is_ascii() {
            return Err(bad("etag must be the part's ETag"));
        }
        parts.push(CompletedPart {
            part_number: part_number(p.part_number)?,
            etag: p.etag,
            checksum_sha256: p.checksum_sha256,
        });
    }
    let stored = store
        .list_parts(&upload.key, &upload.upload_id)
        .await
        .map_err(|e| store_failure(e, &note))?;
    for part in &mut parts {
        let kept = stored
            .iter()
            .find(|s| s.part_number == part.part_number)
            .is_some_and(|s| s.checksum_sha256.is_some());
        if !kept {
            part.checksum_sha256 = None;
        }
    }
    let etag = store
        .complete_multipart(&upload.key, &upload.upload_id, &parts)
        .await
        .map_err(|e| store_failure(e, &note))?;
    Ok(Json(json!({"location": store.location(&upload.key), "etag": etag})).into_response())
}

/// `POST /s3/multipart/abort`.
async fn abort(State(app): State<AppState>, note: LogNote, body: Bytes) -> Answer {
    let store = store(&app)?;
    let upload: UploadRef = parse("abort", &body)?;
    upload.check()?;
    store
        .abort_multipart(&upload.key, &upload.upload_id)
        .await
        .map_err(|e| store_failure(e, &note))?;
    Ok(Json(json!({})).into_response())
}

/// `GET /s3/multipart/uploads`: the bucket's multipart uploads in progress.
async fn uploads(State(app): State<AppState>, note: LogNote) -> Answer {
    let list = store(&app)?
        .list_multipart_uploads()
        .await
        .map_err(|e| store_failure(e, &note))?;
    Ok(Json(list).into_response())
}

/// `GET /s3/objects/{key}/info`: the object read back from the store and hashed
/// ({size, sha256, md5, etag, contentType}); 404 when there is none.
async fn object_info(
    State(app): State<AppState>,
    note: LogNote,
    Path(key): Path<String>,
) -> Answer {
    let store = store(&app)?;
    let not_found = || Refusal {
        status: StatusCode::NOT_FOUND,
        error: "object not found".into(),
        code: None,
    };
    if !is_valid_key(&key) {
        return Err(not_found());
    }
    match store.digest_object(&key).await {
        Ok(Some(digest)) => Ok(Json(digest).into_response()),
        Ok(None) => Err(not_found()),
        Err(e) => Err(store_failure(e, &note)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_values_stay_ascii() {
        assert_eq!(meta_value("report.pdf"), "report.pdf");
        assert_eq!(meta_value("été 100%.txt"), "%C3%A9t%C3%A9 100%25.txt");
        assert_eq!(meta_value("a\nb"), "a%0Ab");
    }
}
