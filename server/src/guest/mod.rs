//! An emulator of the Genesys Cloud Web Messaging guest API, the parts the
//! attachment flow uses, on the wire format of the real service: JSON text
//! frames on a WebSocket (`GET /guest/v1?deploymentId=…`), every server
//! message an envelope `{"type","class","code","body"}`.
//!
//! The flow: `configureSession` → `SessionResponse` (with the attachment
//! rules); `onAttachment` → `PresignedUrlResponse` whose URL is a presigned
//! S3-style PUT of this server (`presign.rs`); the client PUTs the file;
//! the S3 store's upload notification turns into `UploadSuccessEvent` (or
//! `UploadFailureEvent`) on the session's socket; `onMessage` referencing
//! the attachment is echoed as a `StructuredMessage`, followed by a canned
//! agent reply. `deleteAttachment` and `echo` complete the set.
//!
//! Pieces: `wire.rs` (envelopes, rules, error codes, guest fault spec),
//! `session.rs` (one WebSocket connection), and this file (the shared
//! sessions and attachments, the upload-event listener, and the HTTP
//! routes: downloads plus JSON introspection for tests and the demo).
//!
//! State is in memory only, like presigned keys: a restart forgets every
//! session and attachment.

pub mod session;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use crate::presign::{StoredObject, UploadEvent, UploadOutcome};
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

/// The accepted (or MD5-refused) upload of an attachment.
#[derive(Debug, Clone)]
struct Upload {
    key: String,
    file_name: String,
    file_type: String,
    stored: StoredObject,
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
    puts: u64,
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
        }
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
                puts: 0,
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

    /// Applies one S3 upload event; returns the message to send and where.
    /// Every PUT counts in `puts`; `Failed` is not final (the client retries
    /// the PUT), so only `Completed` changes the state and sends anything.
    fn upload_event(&self, ev: &UploadEvent, file_type: &str) -> Option<(Option<Outbox>, Value)> {
        let mut inner = lock(&self.inner);
        let id = inner.keys.get(&ev.key)?.clone();
        let att = inner.attachments.get_mut(&id)?;
        att.puts += 1;
        let UploadOutcome::Completed { size, sha256, md5 } = &ev.outcome else {
            return None;
        };
        if att.state == AttachmentState::Deleted {
            return None;
        }
        let upload = Upload {
            key: ev.key.clone(),
            file_name: ev.file_name.clone(),
            file_type: file_type.to_owned(),
            stored: StoredObject {
                size: *size,
                sha256: sha256.clone(),
                md5: md5.clone(),
            },
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
        } else if att
            .declared_md5
            .as_deref()
            .is_some_and(|declared| !md5_matches(declared, md5))
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
            "puts": a.puts,
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

/// Listens to the S3 store's upload events for the whole process and turns
/// those of guest attachments into guest events. Subscribes before
/// returning, so no event after startup is missed.
pub fn spawn_listener(app: AppState) -> JoinHandle<()> {
    let mut events = app.s3.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ev) => {
                    let file_type = app
                        .s3
                        .get(&ev.key)
                        .map(|o| o.content_type.clone())
                        .unwrap_or_default();
                    let Some((outbox, msg)) = app.guest.upload_event(&ev, &file_type) else {
                        continue;
                    };
                    let class = msg["class"].as_str().unwrap_or_default().to_owned();
                    // The session's socket may be gone (the client
                    // reconnects later); Genesys does not replay events.
                    let sent = outbox.is_some_and(|o| o.tx.send(msg.to_string()).is_ok());
                    let note = if sent { "" } else { " (no connection)" };
                    eprintln!("WS /guest/v1 event {class}{note}");
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    eprintln!("chunkup-server: guest: missed {n} upload events");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

/// `GET /guest/files/{id}/{name}`: the uploaded bytes with the declared
/// type (Range and HEAD work, as on a CDN). 404 unless uploaded, not
/// deleted, and `name` is the uploaded file's name.
async fn download(
    State(app): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    req: Request,
) -> Response {
    let Some((key, file_type)) = app.guest.download(&id, &name) else {
        return json_error(StatusCode::NOT_FOUND, "attachment not found");
    };
    let res = match ServeFile::new(app.s3.object_path(&key)).oneshot(req).await {
        Ok(res) => res,
        Err(e) => match e {},
    };
    let mut res = res.into_response();
    if res.status().is_success() {
        let ty = if file_type.is_empty() {
            "application/octet-stream"
        } else {
            &file_type
        };
        if let Ok(v) = HeaderValue::from_str(ty) {
            res.headers_mut().insert(CONTENT_TYPE, v);
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
