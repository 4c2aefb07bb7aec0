//! An emulator of the Genesys Cloud Web Messaging guest API, the parts the
//! attachment flow uses, on the wire format of the real service: JSON text
//! frames on a WebSocket (`GET /guest/v1?deploymentId=…`), every server
//! message an envelope `{"type","class","code","body"}`.
//!
//! The flow: `configureSession` → `SessionResponse` (with the attachment
//! rules); `onAttachment` → `PresignedUrlResponse` whose URL is a presigned
//! PUT to the object store (`s3.rs`, `store_s3.rs`: Garage in the tests); the
//! client PUTs the file to the store; a watcher sees the object appear (the
//! store has no upload notifications, so it polls with GetObject), reads it
//! back, checks size and MD5, and sends `UploadSuccessEvent` (or
//! `UploadFailureEvent`) on the session's socket; `onMessage` referencing the
//! attachment is echoed as a `StructuredMessage`, followed by a canned agent
//! reply. `deleteAttachment` and `echo` complete the set.
//!
//! Pieces: `wire.rs` (envelopes, rules, error codes, guest fault spec),
//! `session.rs` (one WebSocket connection), and this file (the shared
//! sessions and attachments, the upload watchers, and the HTTP routes:
//! downloads, streamed from the store, plus JSON introspection for tests and
//! the demo).
//!
//! State is in memory only: a restart forgets every session and attachment
//! (their objects stay in the store).

pub mod session;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, LAST_MODIFIED, RANGE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::store_s3::{now_unix, ObjectDigest};
use crate::tus::json_error;
use crate::AppState;
use wire::code;
pub use wire::{GuestError, GuestFaults, GuestRules};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/guest/v1", get(session::upgrade))
        .route("/guest/files/{id}/{name}", get(download))
        .route("/guest/attachments/{id}", get(attachment_info))
        .route("/guest/sessions/{token}", get(session_info))
}

/// Where an attachment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachmentState {
    /// A URL was handed out; no accepted upload yet.
    Requested,
    /// Uploaded and accepted (`UploadSuccessEvent` sent).
    Uploaded,
    /// Uploaded but refused (`UploadFailureEvent` 4003: MD5 mismatch).
    Failed,
    Deleted,
}

/// The per-connection guest faults with what is left of their counts.
/// Shared with the attachments whose URL the connection handed out, since
/// `upload-failure` strikes when the upload completes, which the
/// upload-event listener sees, not the connection.
#[derive(Debug)]
pub(crate) struct ConnFaults {
    pub(crate) spec: GuestFaults,
    rate_limit_left: AtomicU64,
    expired_url_left: AtomicU64,
    upload_failure_left: AtomicU64,
}

impl ConnFaults {
    pub(crate) fn new(spec: GuestFaults) -> Self {
        ConnFaults {
            rate_limit_left: AtomicU64::new(spec.rate_limit),
            expired_url_left: AtomicU64::new(spec.expired_url),
            upload_failure_left: AtomicU64::new(spec.upload_failure),
            spec,
        }
    }

    fn take(counter: &AtomicU64) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    pub(crate) fn take_rate_limit(&self) -> bool {
        Self::take(&self.rate_limit_left)
    }

    pub(crate) fn take_expired_url(&self) -> bool {
        Self::take(&self.expired_url_left)
    }

    fn take_upload_failure(&self) -> bool {
        Self::take(&self.upload_failure_left)
    }
}

/// Where a session's server messages go: the connection that configured
/// it last (a reconnecting client configures the same token again).
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    pub(crate) conn: u64,
    pub(crate) tx: mpsc::UnboundedSender<String>,
}

#[derive(Debug, Default)]
struct Session {
    /// `action` of every request that named this token (or arrived on a
    /// connection configured with it), in order; "" when it had none.
    requests: Vec<String>,
    configured: bool,
    outbox: Option<Outbox>,
}

/// How often a watcher asks the store whether an attachment's object is there.
const WATCH_INTERVAL: Duration = Duration::from_millis(150);
/// How long after its URL expired a watcher keeps looking (a PUT that started just
/// before the expiry may still be arriving).
const WATCH_GRACE_SECS: u64 = 120;

/// The accepted (or refused) upload of an attachment.
#[derive(Debug, Clone)]
struct Upload {
    key: String,
    file_name: String,
    file_type: String,
    stored: ObjectDigest,
}

#[derive(Debug)]
struct Attachment {
    id: String,
    token: String,
    /// Declared by the latest `onAttachment`.
    file_name: String,
    file_type: String,
    declared_size: u64,
    declared_md5: Option<String>,
    state: AttachmentState,
    upload: Option<Upload>,
    /// Every key presigned for it (a client asks again after a failure).
    keys: Vec<String>,
    url_requests: u64,
    /// Of the connection that handed out the latest URL.
    faults: Arc<ConnFaults>,
    /// `http://host` of that connection, for download URLs.
    origin: String,
}

impl Attachment {
    fn download_url(&self, upload: &Upload) -> String {
        format!(
            "{}/guest/files/{}/{}",
            self.origin,
            wire::encode_segment(&self.id),
            wire::encode_segment(&upload.file_name)
        )
    }
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    attachments: HashMap<String, Attachment>,
    /// Presigned key → attachment id. Upload events are matched through
    /// this map rather than the key's app metadata, which `POST /presign`
    /// lets anyone set.
    keys: HashMap<String, String>,
}

/// A URL just handed out for an attachment.
pub(crate) struct IssuedUrl<'a> {
    pub(crate) token: &'a str,
    pub(crate) id: &'a str,
    pub(crate) file_name: &'a str,
    pub(crate) file_type: &'a str,
    pub(crate) size: u64,
    pub(crate) md5: Option<&'a str>,
    pub(crate) key: &'a str,
    pub(crate) faults: Arc<ConnFaults>,
    pub(crate) origin: &'a str,
}

/// An uploaded attachment as an `onMessage` echo describes it.
pub(crate) struct AttachmentRef {
    pub(crate) id: String,
    pub(crate) url: String,
    pub(crate) file_name: String,
    pub(crate) mime: String,
    pub(crate) size: u64,
    pub(crate) sha256: String,
}

/// Guest sessions and attachments, shared by all connections.
#[derive(Debug)]
pub struct GuestState {
    pub rules: GuestRules,
    inner: Mutex<Inner>,
    next_conn: AtomicU64,
    /// Set when the server stops: upload watchers end.
    closed: AtomicBool,
}

/// The guest state is plain data changed in single steps under the lock; a
/// poisoned lock still holds consistent data, so recover instead of
/// panicking.
fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl GuestState {
    pub fn new(rules: GuestRules) -> Self {
        GuestState {
            rules,
            inner: Mutex::new(Inner::default()),
            next_conn: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        }
    }

    /// Ends every upload watcher (the server is stopping).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Whether a watcher of `key` should keep looking: the server runs, and the key's
    /// attachment is neither deleted nor already uploaded.
    fn watching(&self, key: &str) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let inner = lock(&self.inner);
        let Some(id) = inner.keys.get(key) else {
            return false;
        };
        inner
            .attachments
            .get(id)
            .is_some_and(|a| matches!(a.state, AttachmentState::Requested))
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn log_request(&self, token: &str, action: &str) {
        lock(&self.inner)
            .sessions
            .entry(token.to_owned())
            .or_default()
            .requests
            .push(action.to_owned());
    }

    /// Binds `token` to a connection; true when the session is new.
    pub(crate) fn configure(&self, token: &str, outbox: Outbox) -> bool {
        let mut inner = lock(&self.inner);
        let session = inner.sessions.entry(token.to_owned()).or_default();
        let new_session = !session.configured;
        session.configured = true;
        session.outbox = Some(outbox);
        new_session
    }

    /// A connection is gone (or switched tokens): stop routing events to it,
    /// unless a newer connection already took the session over.
    pub(crate) fn detach(&self, token: &str, conn: u64) {
        let mut inner = lock(&self.inner);
        if let Some(session) = inner.sessions.get_mut(token) {
            if session.outbox.as_ref().is_some_and(|o| o.conn == conn) {
                session.outbox = None;
            }
        }
    }

    /// Attachment ids are chosen by clients (UUIDs); one that belongs to
    /// another session cannot be requested again.
    pub(crate) fn check_owner(&self, token: &str, id: &str) -> Result<(), GuestError> {
        match lock(&self.inner).attachments.get(id) {
            Some(a) if a.token != token => Err(GuestError::new(
                code::BAD_REQUEST,
                "attachmentId belongs to another session",
            )),
            _ => Ok(()),
        }
    }

    /// Records a URL handed out: a new attachment, or a fresh URL for an
    /// existing one (which starts over as "requested" with the newly
    /// declared name, type, size and MD5).
    pub(crate) fn url_issued(&self, url: IssuedUrl<'_>) {
        let mut inner = lock(&self.inner);
        inner.keys.insert(url.key.to_owned(), url.id.to_owned());
        let att = inner
            .attachments
            .entry(url.id.to_owned())
            .or_insert_with(|| Attachment {
                id: url.id.to_owned(),
                token: url.token.to_owned(),
                file_name: String::new(),
                file_type: String::new(),
                declared_size: 0,
                declared_md5: None,
                state: AttachmentState::Requested,
                upload: None,
                keys: Vec::new(),
                url_requests: 0,
                faults: url.faults.clone(),
                origin: String::new(),
            });
        att.file_name = url.file_name.to_owned();
        att.file_type = url.file_type.to_owned();
        att.declared_size = url.size;
        att.declared_md5 = url.md5.map(str::to_owned);
        att.state = AttachmentState::Requested;
        att.upload = None;
        att.keys.push(url.key.to_owned());
        att.url_requests += 1;
        att.faults = url.faults;
        att.origin = url.origin.to_owned();
    }

    /// The attachments an `onMessage` references, all of which must be this
    /// session's (else 4009; deleted ones count as gone) and uploaded (else
    /// 4010). Unknown ids are reported before un-uploaded ones.
    pub(crate) fn message_attachments(
        &self,
        token: &str,
        ids: &[String],
    ) -> Result<Vec<AttachmentRef>, GuestError> {
        let inner = lock(&self.inner);
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            match inner.attachments.get(id) {
                Some(a) if a.token == token && a.state != AttachmentState::Deleted => found.push(a),
                _ => {
                    return Err(GuestError::new(
                        code::ATTACHMENT_NOT_FOUND,
                        "attachment not found",
                    ))
                }
            }
        }
        found
            .into_iter()
            .map(|a| match (&a.upload, a.state) {
                (Some(u), AttachmentState::Uploaded) => Ok(AttachmentRef {
                    id: a.id.clone(),
                    url: a.download_url(u),
                    file_name: u.file_name.clone(),
                    mime: u.file_type.clone(),
                    size: u.stored.size,
                    sha256: u.stored.sha256.clone(),
                }),
                _ => Err(GuestError::new(
                    code::NOT_UPLOADED,
                    "attachment not successfully uploaded",
                )),
            })
            .collect()
    }

    /// Marks an attachment of `token` deleted; returns its keys, whose
    /// objects the caller removes. Unknown (or already deleted): 4009.
    pub(crate) fn delete(&self, token: &str, id: &str) -> Result<Vec<String>, GuestError> {
        let mut inner = lock(&self.inner);
        match inner.attachments.get_mut(id) {
            Some(a) if a.token == token && a.state != AttachmentState::Deleted => {
                a.state = AttachmentState::Deleted;
                a.upload = None;
                Ok(a.keys.clone())
            }
            _ => Err(GuestError::new(
                code::ATTACHMENT_NOT_FOUND,
                "attachment not found",
            )),
        }
    }

    /// An object appeared in the store for one of an attachment's keys (read back and
    /// hashed); returns the event to send and where. Only an attachment still waiting
    /// for its upload (`requested`) takes it.
    fn upload_completed(&self, key: &str, stored: ObjectDigest) -> Option<(Option<Outbox>, Value)> {
        let mut inner = lock(&self.inner);
        let id = inner.keys.get(key)?.clone();
        let att = inner.attachments.get_mut(&id)?;
        if att.state != AttachmentState::Requested {
            return None;
        }
        let size_ok = stored.size == att.declared_size;
        let md5 = stored.md5.clone();
        let upload = Upload {
            key: key.to_owned(),
            file_name: att.file_name.clone(),
            file_type: att.file_type.clone(),
            stored,
        };
        let failure = |code: u32, text: &str| {
            wire::message(
                "UploadFailureEvent",
                200,
                json!({
                    "attachmentId": id,
                    "errorCode": code,
                    "errorMessage": text,
                    "timestamp": wire::rfc3339_now(),
                }),
            )
        };
        let msg = if att.faults.take_upload_failure() {
            // As if the upload landed after the attachment expired: the
            // client must ask for a fresh URL and upload again.
            att.state = AttachmentState::Requested;
            att.upload = None;
            failure(code::ATTACHMENT_EXPIRED, "attachment has expired")
        } else if !size_ok
            || att
                .declared_md5
                .as_deref()
                .is_some_and(|declared| !md5_matches(declared, &md5))
        {
            att.state = AttachmentState::Failed;
            att.upload = Some(upload);
            failure(code::CONTENT_INVALID, "file content invalid")
        } else {
            let url = att.download_url(&upload);
            att.state = AttachmentState::Uploaded;
            att.upload = Some(upload);
            wire::message(
                "UploadSuccessEvent",
                200,
                json!({
                    "attachmentId": id,
                    "downloadUrl": url,
                    "timestamp": wire::rfc3339_now(),
                }),
            )
        };
        let token = att.token.clone();
        let outbox = inner.sessions.get(&token).and_then(|s| s.outbox.clone());
        Some((outbox, msg))
    }

    /// The `GET /guest/attachments/{id}` JSON.
    pub fn attachment_json(&self, id: &str) -> Option<Value> {
        let inner = lock(&self.inner);
        let a = inner.attachments.get(id)?;
        let stored = a.upload.as_ref().map(|u| &u.stored);
        Some(json!({
            "attachmentId": a.id,
            "fileName": a.file_name,
            "fileType": a.file_type,
            "declaredSize": a.declared_size,
            "size": stored.map(|s| s.size),
            "sha256": stored.map(|s| s.sha256.clone()),
            "md5": stored.map(|s| s.md5.clone()),
            "state": a.state,
            "urlRequests": a.url_requests,
        }))
    }

    /// The request log of a session (unknown token: `None`).
    pub fn session_requests(&self, token: &str) -> Option<Vec<String>> {
        lock(&self.inner)
            .sessions
            .get(token)
            .map(|s| s.requests.clone())
    }

    /// The key and type of an uploaded attachment, if `name` is its name.
    fn download(&self, id: &str, name: &str) -> Option<(String, String)> {
        let inner = lock(&self.inner);
        let a = inner.attachments.get(id)?;
        match (&a.upload, a.state) {
            (Some(u), AttachmentState::Uploaded) if u.file_name == name => {
                Some((u.key.clone(), u.file_type.clone()))
            }
            _ => None,
        }
    }
}

/// Whether a declared `fileMd5` (hex, either case, or base64 of the 16
/// bytes as in `Content-MD5`) is the stored object's MD5 hex.
fn md5_matches(declared: &str, stored_hex: &str) -> bool {
    let declared = declared.trim();
    if declared.len() == 32 {
        return declared.eq_ignore_ascii_case(stored_hex);
    }
    base64::engine::general_purpose::STANDARD
        .decode(declared)
        .is_ok_and(|bytes| crate::checksum::hex(&bytes) == stored_hex)
}

/// Watches the store for the object of a key just handed out for an attachment: the
/// store sends no notification, so this asks for it (GetObject) every [`WATCH_INTERVAL`]
/// until it is there, reading it back and hashing it, and turns it into the guest event.
/// It stops when the attachment no longer waits for it (uploaded through another URL,
/// deleted), [`WATCH_GRACE_SECS`] after `expires`, or when the server stops.
pub(crate) fn watch_upload(app: AppState, key: String, expires: u64) {
    tokio::spawn(async move {
        let Some(store) = app.object_store.clone() else {
            return;
        };
        let mut complained = false;
        while app.guest.watching(&key) && now_unix() <= expires + WATCH_GRACE_SECS {
            // A GetObject of a missing key is as cheap as a HeadObject, and one that
            // finds the object reads it at once.
            match store.digest_object(&key).await {
                Ok(Some(stored)) => {
                    deliver(&app, &key, stored);
                    return;
                }
                Ok(None) => {}
                // Once per watcher: a store node may be down for a while.
                Err(e) if !complained => {
                    complained = true;
                    eprintln!("chunkup-server: guest: watching an upload: {e}");
                }
                Err(_) => {}
            }
            tokio::time::sleep(WATCH_INTERVAL).await;
        }
    });
}

fn deliver(app: &AppState, key: &str, stored: ObjectDigest) {
    let Some((outbox, msg)) = app.guest.upload_completed(key, stored) else {
        return;
    };
    let class = msg["class"].as_str().unwrap_or_default().to_owned();
    // The session's socket may be gone (the client reconnects later); Genesys does not
    // replay events.
    let sent = outbox.is_some_and(|o| o.tx.send(msg.to_string()).is_ok());
    let note = if sent { "" } else { " (no connection)" };
    eprintln!("WS /guest/v1 event {class}{note}");
}

/// `GET /guest/files/{id}/{name}` (and HEAD): the uploaded bytes, streamed from the
/// store with the declared type (`Range` is passed on, as a CDN would). 404 unless
/// uploaded, not deleted, and `name` is the uploaded file's name.
async fn download(
    State(app): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let Some((key, file_type)) = app.guest.download(&id, &name) else {
        return json_error(StatusCode::NOT_FOUND, "attachment not found");
    };
    let Some(store) = app.object_store.as_deref() else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, crate::s3::NO_STORE);
    };
    let range = headers.get(RANGE).and_then(|v| v.to_str().ok());
    let answer = match store.get_object(&key, range, method == Method::HEAD).await {
        Ok(a) => a,
        Err(e) => return json_error(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    let status = answer.status();
    if status == StatusCode::NOT_FOUND {
        return json_error(StatusCode::NOT_FOUND, "attachment not found");
    }
    let (head, body) = answer.into_parts();
    let mut res = Response::new(Body::new(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    for name in [
        CONTENT_LENGTH,
        CONTENT_RANGE,
        ACCEPT_RANGES,
        ETAG,
        LAST_MODIFIED,
    ] {
        if let Some(v) = head.headers.get(&name) {
            h.insert(name, v.clone());
        }
    }
    if status.is_success() {
        let ty = if file_type.is_empty() {
            "application/octet-stream"
        } else {
            &file_type
        };
        if let Ok(v) = HeaderValue::from_str(ty) {
            h.insert(CONTENT_TYPE, v);
        }
    }
    res
}

async fn attachment_info(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    match app.guest.attachment_json(&id) {
        Some(v) => Json(v).into_response(),
        None => json_error(StatusCode::NOT_FOUND, "attachment not found"),
    }
}

async fn session_info(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    match app.guest.session_requests(&token) {
        Some(requests) => {
            let body: BTreeMap<&str, Vec<String>> = BTreeMap::from([("requests", requests)]);
            Json(body).into_response()
        }
        None => json_error(StatusCode::NOT_FOUND, "session not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_forms() {
        let hex = "9e107d9d372bb6826bd81d3542a419d6";
        assert!(md5_matches(hex, hex));
        assert!(md5_matches(&hex.to_ascii_uppercase(), hex));
        assert!(md5_matches("nhB9nTcrtoJr2B01QqQZ1g==", hex));
        assert!(!md5_matches("00107d9d372bb6826bd81d3542a419d6", hex));
        assert!(!md5_matches("nope", hex));
    }
}
