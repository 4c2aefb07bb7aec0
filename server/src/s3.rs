//! HTTP side of the S3-style single presigned PUT (signing and the object
//! store are in `presign.rs`), under both route families:
//!
//! * `POST {base}/presign` — JSON in, presigned URL out (never faulted: in a
//!   real deployment this is the app's own backend, not the storage service
//!   whose failures the client must survive);
//! * `PUT {base}/s3/{key}?X-Expires&X-SignedHeaders&X-Signature` — checks in
//!   S3's spirit (404, 403, 411, 400), then rolls faults, then streams the
//!   body to a temporary file that replaces the object only when complete;
//! * `GET {base}/s3/{key}/info` — test introspection, never faulted.
//!
//! Like tus PATCHes, a PUT body is processed on a spawned task, so a client
//! that vanishes mid-body still gets its temporary file removed and its
//! `Failed` event sent.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, ETAG, HOST, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use crate::body::{self, reject, BodyEnd};
use crate::checksum::{self, Algo};
use crate::conn::ConnKill;
use crate::faults::{FaultKind, FaultSpec};
use crate::logging::LogNote;
use crate::presign::{self, PresignRequest, S3Object, StoredObject, UploadOutcome};
use crate::store::Appender;
use crate::tus::{self, parse_tus_u64, record, Info, Target};
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/presign", post(presign_handler))
        .route("/faults/{spec}/presign", post(presign_handler))
        .route("/s3/{id}", put(put_object))
        .route("/faults/{spec}/s3/{id}", put(put_object))
        .route("/s3/{id}/info", get(info))
        .route("/faults/{spec}/s3/{id}/info", get(info))
        // PUT bodies are streamed; axum's 2 MB default would cut them off.
        .layer(DefaultBodyLimit::disable())
}

/// JSON body of `POST {base}/presign`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PresignBody {
    file_name: String,
    #[serde(default)]
    file_type: String,
    file_size: u64,
    ttl_seconds: Option<u64>,
    #[serde(default)]
    expired: bool,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    app: BTreeMap<String, String>,
}

/// `http://` plus the request's Host, so the URL works from a page on
/// another origin (the test runner); empty (a server-relative URL) when
/// the Host is missing or is not a plain `host[:port]`. The guest API uses
/// it too, with the Host of its WebSocket request.
pub(crate) fn origin_from_host(headers: &HeaderMap) -> String {
    let host = tus::header_str(headers, &HOST).unwrap_or_default();
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

async fn presign_handler(
    State(app): State<AppState>,
    target: Target,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
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
        file_type: req.file_type,
        file_size: req.file_size,
        ttl_seconds: req.ttl_seconds,
        expired: req.expired,
        headers: req.headers,
        app: req.app,
    };
    let origin = origin_from_host(&headers);
    match presign::presign_on(&app, &origin, &target.base, &target.stream_key, req) {
        Ok(p) => Json(p).into_response(),
        Err(e) => tus::json_error(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
            &e.to_string(),
        ),
    }
}

/// An S3-style XML error body.
fn s3_error(status: StatusCode, code: &str, message: &str, key: Option<&str>) -> Response {
    let key = key
        .map(|k| format!("<Key>{}</Key>", xml_escape(k)))
        .unwrap_or_default();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message>{key}</Error>\n",
        xml_escape(message)
    );
    (status, [(CONTENT_TYPE, "application/xml")], body).into_response()
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Why a PUT was refused before its body was read.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
        }
    }
}

/// The PUT checks, in order: signature parameters present and well formed,
/// signature, expiry, Content-Type, each signed header, Content-Length.
fn verify(
    app: &AppState,
    obj: &S3Object,
    uri: &Uri,
    headers: &HeaderMap,
    now: u64,
) -> Result<(), Refusal> {
    let forbidden = StatusCode::FORBIDDEN;
    // A query that does not even parse is treated like missing parameters.
    let query: HashMap<String, String> = Query::try_from_uri(uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let (Some(expires), Some(names), Some(signature)) = (
        query.get("X-Expires"),
        query.get("X-SignedHeaders"),
        query.get("X-Signature"),
    ) else {
        return Err(Refusal::new(
            forbidden,
            "AccessDenied",
            "Query-string authentication requires the X-Expires, X-SignedHeaders and X-Signature parameters",
        ));
    };
    let Some(expires) = parse_tus_u64(expires) else {
        return Err(Refusal::new(
            forbidden,
            "AccessDenied",
            "X-Expires must be unix seconds",
        ));
    };
    if !app.s3.signature_matches(obj, expires, names, signature) {
        return Err(Refusal::new(
            forbidden,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        ));
    }
    if now > expires {
        return Err(Refusal::new(
            forbidden,
            "AccessDenied",
            "Request has expired",
        ));
    }
    let content_type = tus::header_str(headers, &CONTENT_TYPE).map(str::trim);
    if content_type.unwrap_or_default() != obj.content_type {
        return Err(Refusal::new(
            forbidden,
            "SignatureDoesNotMatch",
            format!(
                "Content-Type does not match the signed value {:?}",
                obj.content_type
            ),
        ));
    }
    for (name, signed) in &obj.headers {
        // Repeated headers count as their comma-joined value, as a proxy
        // would fold them.
        let values: Vec<&str> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{fffd}").trim())
            .collect();
        if values.is_empty() {
            return Err(Refusal::new(
                forbidden,
                "SignatureDoesNotMatch",
                format!("Missing signed header {name}"),
            ));
        }
        if values.join(", ") != *signed {
            return Err(Refusal::new(
                forbidden,
                "SignatureDoesNotMatch",
                format!("Header {name} does not match the signed value"),
            ));
        }
    }
    let Some(length) = tus::header_str(headers, &CONTENT_LENGTH).and_then(parse_tus_u64) else {
        return Err(Refusal::new(
            StatusCode::LENGTH_REQUIRED,
            "MissingContentLength",
            "You must provide the Content-Length HTTP header.",
        ));
    };
    if length != obj.size {
        let code = if length < obj.size {
            "EntityTooSmall"
        } else {
            "EntityTooLarge"
        };
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            code,
            format!(
                "Content-Length {length} does not match the signed size {}",
                obj.size
            ),
        ));
    }
    Ok(())
}

/// Injected status faults in S3's dress (`SlowDown` is S3's own 503);
/// 429 keeps `Retry-After` as on the tus routes.
fn fault_response(kind: FaultKind, spec: &FaultSpec) -> Response {
    match kind {
        FaultKind::TooManyRequests => {
            let mut res = s3_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "injected fault: 429",
                None,
            );
            let retry = spec.retry_after_value(SystemTime::now());
            if let Ok(v) = HeaderValue::from_str(&retry) {
                res.headers_mut().insert(RETRY_AFTER, v);
            }
            res
        }
        FaultKind::Internal => s3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "injected fault: 500",
            None,
        ),
        FaultKind::Unavailable => s3_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "injected fault: 503",
            None,
        ),
        // Resets never produce a response, and `corrupt` never strikes a
        // put (no checksum is verified); this is only a safe default.
        FaultKind::Reset | FaultKind::Corrupt => s3_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "injected fault: reset",
            None,
        ),
    }
}

async fn put_object(
    State(app): State<AppState>,
    target: Target,
    note: LogNote,
    kill: Option<Extension<ConnKill>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    target.delay().await;
    let Some(obj) = target.id.as_deref().and_then(|k| app.s3.get(k)) else {
        let res = s3_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
            None,
        );
        return reject(body, res).await;
    };
    if let Err(refusal) = verify(&app, &obj, &uri, &headers, presign::now_unix()) {
        note.set(format!("refused {}", refusal.code));
        app.s3.emit(
            &obj,
            UploadOutcome::Failed {
                status: Some(refusal.status.as_u16()),
                reason: format!("{}: {}", refusal.code, refusal.message),
            },
        );
        let res = s3_error(
            refusal.status,
            refusal.code,
            &refusal.message,
            Some(&obj.key),
        );
        return reject(body, res).await;
    }
    let job = PutJob {
        app: app.clone(),
        obj: obj.clone(),
        bandwidth: target.spec.bandwidth,
        note: note.clone(),
    };
    let work = match obj.roll(&target.spec, true) {
        None => tokio::spawn(job.receive(body)),
        Some(FaultKind::Reset) => {
            record(&app, Some(&obj.faults), FaultKind::Reset, &note);
            // Strictly inside the body, as for tus: the client always sees
            // a partial transfer.
            let cut = if obj.size >= 2 {
                1 + obj.draw_below(obj.size - 1)
            } else {
                0
            };
            let kill = kill.map(|Extension(k)| k);
            tokio::spawn(job.reset(body, cut, kill))
        }
        Some(kind) => {
            // Decided before any body byte is read.
            record(&app, Some(&obj.faults), kind, &note);
            app.s3.emit(
                &obj,
                UploadOutcome::Failed {
                    status: Some(fault_status(kind)),
                    reason: format!("injected fault {}", kind.label()),
                },
            );
            return reject(body, fault_response(kind, &target.spec)).await;
        }
    };
    // On its own task so the outcome (temp file removed, event sent) happens
    // even if this handler future is dropped with the connection.
    match work.await {
        Ok(res) => res,
        Err(_) => tus::plain(StatusCode::INTERNAL_SERVER_ERROR, "PUT task failed"),
    }
}

fn fault_status(kind: FaultKind) -> u16 {
    match kind {
        FaultKind::TooManyRequests => 429,
        FaultKind::Internal | FaultKind::Reset | FaultKind::Corrupt => 500,
        FaultKind::Unavailable => 503,
    }
}

/// A validated PUT, owned so it can run on a task.
struct PutJob {
    app: AppState,
    obj: std::sync::Arc<S3Object>,
    bandwidth: Option<u64>,
    note: LogNote,
}

impl PutJob {
    fn fail(&self, status: Option<u16>, reason: String) {
        self.app
            .s3
            .emit(&self.obj, UploadOutcome::Failed { status, reason });
    }

    async fn receive(self, mut body: Body) -> Response {
        let key = self.obj.key.clone();
        let tmp = match self.app.s3.create_temp(&key).await {
            Ok(p) => p,
            Err(e) => {
                self.fail(Some(500), "storage error".into());
                return tus::storage_error(&e);
            }
        };
        let appender = Appender::start_hashing(&tmp, 0, vec![Algo::Sha256, Algo::Md5]);
        let (end, got) = body::read_body(
            &mut body,
            self.obj.size,
            Some(&appender),
            true,
            self.bandwidth,
        )
        .await;
        let finished = appender.finish().await;
        let stored = match (end, finished) {
            (BodyEnd::Complete, Ok(a)) if a.written == self.obj.size && a.digests.len() == 2 => {
                StoredObject {
                    size: a.written,
                    sha256: checksum::hex(&a.digests[0]),
                    md5: checksum::hex(&a.digests[1]),
                }
            }
            (BodyEnd::WriteFailed, _) | (_, Err(_)) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                self.fail(Some(500), "storage error".into());
                return tus::storage_error(&std::io::Error::other("object writer failed"));
            }
            (BodyEnd::Overflow, _) => {
                // Only possible without Content-Length, which is refused
                // earlier; kept for completeness.
                let _ = tokio::fs::remove_file(&tmp).await;
                self.fail(Some(400), "body longer than Content-Length".into());
                let res = s3_error(
                    StatusCode::BAD_REQUEST,
                    "IncompleteBody",
                    "The body is longer than the signed size.",
                    Some(&key),
                );
                return reject(body, res).await;
            }
            (BodyEnd::Broken, _) | (BodyEnd::Complete, Ok(_)) => {
                // S3 semantics: nothing of an incomplete body is kept.
                let _ = tokio::fs::remove_file(&tmp).await;
                let broken = end == BodyEnd::Broken;
                self.note
                    .set(format!("body interrupted after {got}; stored nothing"));
                self.fail(
                    (!broken).then_some(400),
                    format!("body interrupted after {got} of {} bytes", self.obj.size),
                );
                return s3_error(
                    StatusCode::BAD_REQUEST,
                    "IncompleteBody",
                    "You did not provide the number of bytes specified by the Content-Length HTTP header.",
                    Some(&key),
                );
            }
        };
        let committed = {
            let _guard = self.obj.commit_lock.lock().await;
            match tokio::fs::rename(&tmp, self.app.s3.object_path(&key)).await {
                Ok(()) => {
                    self.obj.set_stored(stored.clone());
                    Ok(())
                }
                Err(e) => Err(e),
            }
        };
        if let Err(e) = committed {
            let _ = tokio::fs::remove_file(&tmp).await;
            self.fail(Some(500), "storage error".into());
            return tus::storage_error(&e);
        }
        self.app.s3.emit(
            &self.obj,
            UploadOutcome::Completed {
                size: stored.size,
                sha256: stored.sha256.clone(),
                md5: stored.md5.clone(),
            },
        );
        let mut res = StatusCode::OK.into_response();
        if let Ok(v) = HeaderValue::from_str(&stored.etag()) {
            res.headers_mut().insert(ETAG, v);
        }
        res
    }

    /// The `reset` fault: read `cut` bytes, store nothing, kill the
    /// connection so the client sees a network error.
    async fn reset(self, mut body: Body, cut: u64, kill: Option<ConnKill>) -> Response {
        let mut read = 0;
        if cut > 0 {
            read = body::read_body(&mut body, cut, None, false, self.bandwidth)
                .await
                .1;
        }
        self.note
            .set(format!("fault=reset read={read} stored nothing"));
        self.fail(None, format!("injected reset after {read} bytes"));
        crate::conn::kill(kill)
    }
}

/// JSON body of `GET {base}/s3/{key}/info`: the tus `/info` shape plus the
/// object's MD5 and ETag and the key's app metadata.
#[derive(Debug, Serialize)]
pub struct S3Info {
    #[serde(flatten)]
    pub info: Info,
    /// MD5 of the stored object (of zero bytes when there is none).
    pub md5: String,
    /// The quoted ETag of the stored object; null when there is none.
    pub etag: Option<String>,
    pub app: BTreeMap<String, String>,
}

async fn info(State(app): State<AppState>, target: Target) -> Response {
    let Some(obj) = target.id.as_deref().and_then(|k| app.s3.get(k)) else {
        return tus::json_error(StatusCode::NOT_FOUND, "object not found");
    };
    let stored = obj.stored();
    let mut metadata = BTreeMap::new();
    metadata.insert("fileName".to_owned(), obj.file_name.clone());
    metadata.insert("contentType".to_owned(), obj.content_type.clone());
    let empty_sha256 = || checksum::hex(&Algo::Sha256.hasher().finish());
    let empty_md5 = || checksum::hex(&Algo::Md5.hasher().finish());
    Json(S3Info {
        info: Info {
            size: obj.size,
            offset: stored.as_ref().map_or(0, |s| s.size),
            sha256: stored
                .as_ref()
                .map_or_else(empty_sha256, |s| s.sha256.clone()),
            complete: stored.is_some(),
            metadata,
            faults: obj.faults.snapshot(),
        },
        md5: stored.as_ref().map_or_else(empty_md5, |s| s.md5.clone()),
        etag: stored.as_ref().map(StoredObject::etag),
        app: obj.app_meta(),
    })
    .into_response()
}
