//! tus 1.0.0 handlers (core + creation + checksum + termination) and the
//! non-standard `/info` endpoint, mounted under two route families that
//! share one handler set:
//!
//! * `/files/…` uses the global fault spec (changeable via `PUT /__faults`);
//! * `/faults/{spec}/files/…` uses the spec in the path, so each browser test
//!   can choose its faults without touching global state. Locations keep the
//!   prefix exactly as the request spelled it.
//!
//! PATCH bodies are processed on a spawned task that owns the upload lock:
//! if hyper drops the handler because the client vanished, the bytes already
//! received are still flushed and committed (or discarded when a checksum
//! was sent), exactly as a real tus server behaves.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, head, post};
use axum::{Extension, Json, Router};
use base64::Engine as _;
use serde::Serialize;

use crate::body::{self, reject, BodyEnd};
use crate::checksum::{self, Expected};
use crate::conn::ConnKill;
use crate::faults::{CounterSnapshot, FaultCounters, FaultKind, FaultSpec};
use crate::logging::LogNote;
use crate::store::{Appender, Store, Upload};
use crate::AppState;

pub const TUS_VERSION: &str = "1.0.0";
pub const TUS_EXTENSIONS: &str = "creation,checksum,termination";
/// What a `/faults/{spec}/` family with `checksum:off` advertises instead.
pub const TUS_EXTENSIONS_WITHOUT_CHECKSUM: &str = "creation,termination";
pub const TUS_CHECKSUM_ALGORITHMS: &str = "sha1,sha256";

pub const H_TUS_RESUMABLE: HeaderName = HeaderName::from_static("tus-resumable");
pub const H_TUS_VERSION: HeaderName = HeaderName::from_static("tus-version");
pub const H_TUS_EXTENSION: HeaderName = HeaderName::from_static("tus-extension");
pub const H_TUS_MAX_SIZE: HeaderName = HeaderName::from_static("tus-max-size");
pub const H_TUS_CHECKSUM_ALGORITHM: HeaderName = HeaderName::from_static("tus-checksum-algorithm");
pub const H_UPLOAD_OFFSET: HeaderName = HeaderName::from_static("upload-offset");
pub const H_UPLOAD_LENGTH: HeaderName = HeaderName::from_static("upload-length");
pub const H_UPLOAD_METADATA: HeaderName = HeaderName::from_static("upload-metadata");
pub const H_UPLOAD_CHECKSUM: HeaderName = HeaderName::from_static("upload-checksum");
pub const H_UPLOAD_DEFER_LENGTH: HeaderName = HeaderName::from_static("upload-defer-length");

pub fn routes() -> Router<AppState> {
    // `/files` and `/files/` both create: clients differ on the slash.
    let create = || post(create_upload);
    let upload = || head(head_upload).patch(patch_upload).delete(delete_upload);
    Router::new()
        .route("/files", create())
        .route("/files/", create())
        .route("/files/{id}", upload())
        .route("/files/{id}/info", get(info))
        .route("/faults/{spec}/files", create())
        .route("/faults/{spec}/files/", create())
        .route("/faults/{spec}/files/{id}", upload())
        .route("/faults/{spec}/files/{id}/info", get(info))
        .route_layer(middleware::from_fn(require_tus_resumable))
        // Uploads are streamed; axum's 2 MB default would cut them off.
        .layer(DefaultBodyLimit::disable())
}

/// Whether a path belongs to the tus routes (used by [`tus_headers`], which
/// runs outside the router and so cannot rely on route matching). Under
/// `/faults/{spec}` everything is tus except the other protocols' route
/// names (`range`, `s3`, `presign`), which must not get tus discovery
/// answers or `Tus-Resumable`.
pub fn is_tus_path(path: &str) -> bool {
    if path == "/files" || path.starts_with("/files/") {
        return true;
    }
    let Some(rest) = path.strip_prefix("/faults/") else {
        return false;
    };
    let after_spec = rest.split_once('/').map_or("", |(_, tail)| tail);
    let first = after_spec.split('/').next().unwrap_or_default();
    !matches!(first, "range" | "s3" | "presign")
}

/// Outermost tus layer: every tus response gets `Tus-Resumable`, and every
/// OPTIONS on a tus path becomes the tus discovery answer (204 plus the
/// `Tus-*` headers), merged with the CORS preflight headers the CORS layer
/// already produced for it.
pub async fn tus_headers(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let tus = is_tus_path(req.uri().path());
    let options = req.method() == Method::OPTIONS;
    let checksum_off = options && path_spec(req.uri().path()).is_some_and(|s| s.checksum_off);
    let mut res = next.run(req).await;
    if !tus {
        return res;
    }
    if options {
        *res.status_mut() = StatusCode::NO_CONTENT;
        *res.body_mut() = Body::empty();
        let h = res.headers_mut();
        h.remove(CONTENT_LENGTH);
        h.remove(CONTENT_TYPE);
        // axum's method router adds `Allow` listing only the routed methods,
        // which would misdescribe what the tus resource supports.
        h.remove(axum::http::header::ALLOW);
        h.insert(H_TUS_VERSION, HeaderValue::from_static(TUS_VERSION));
        if checksum_off {
            h.insert(
                H_TUS_EXTENSION,
                HeaderValue::from_static(TUS_EXTENSIONS_WITHOUT_CHECKSUM),
            );
        } else {
            h.insert(H_TUS_EXTENSION, HeaderValue::from_static(TUS_EXTENSIONS));
            h.insert(
                H_TUS_CHECKSUM_ALGORITHM,
                HeaderValue::from_static(TUS_CHECKSUM_ALGORITHMS),
            );
        }
        if let Ok(exposed) = HeaderValue::from_str(&crate::EXPOSED.join(", ")) {
            h.insert(axum::http::header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed);
        }
        h.insert(H_TUS_MAX_SIZE, HeaderValue::from(app.max_size));
    }
    res.headers_mut()
        .insert(H_TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    res
}

/// The fault spec of a `/faults/{spec}/...` path, if it has a valid one.
pub(crate) fn path_spec(path: &str) -> Option<FaultSpec> {
    let raw = path.strip_prefix("/faults/")?.split('/').next()?;
    FaultSpec::parse(&percent_decode(raw)?).ok()
}

/// Decodes `%XX` escapes; `None` on a malformed escape or invalid UTF-8.
pub(crate) fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// tus: every request except OPTIONS must name the protocol version. GET is
/// exempt because the only GET is our own `/info`.
async fn require_tus_resumable(req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::OPTIONS | Method::GET) {
        return next.run(req).await;
    }
    let ok = req
        .headers()
        .get(&H_TUS_RESUMABLE)
        .is_some_and(|v| v.as_bytes() == TUS_VERSION.as_bytes());
    if ok {
        return next.run(req).await;
    }
    let res = (
        StatusCode::PRECONDITION_FAILED,
        [(H_TUS_VERSION, TUS_VERSION)],
        "Tus-Resumable: 1.0.0 required\n",
    )
        .into_response();
    reject(req.into_body(), res).await
}

/// Which route family a request came in on, resolved once per request.
pub struct Target {
    /// The fault spec that applies (global, or from the path).
    pub(crate) spec: FaultSpec,
    /// Which creation fault stream POSTs on this family use.
    pub(crate) stream_key: String,
    /// Path prefix before `/files` (or `/range`, `/s3`, `/presign`), raw as
    /// received ("" or "/faults/<raw>").
    pub(crate) base: String,
    pub(crate) id: Option<String>,
    /// `token:N` refused this request's credentials: handlers answer 401 (after reading
    /// the body, as every refusal does, so the connection stays usable).
    pub(crate) unauthorized: bool,
}

impl FromRequestParts<AppState> for Target {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Response> {
        let params: HashMap<String, String> =
            match Path::<HashMap<String, String>>::from_request_parts(parts, app).await {
                Ok(Path(p)) => p,
                // Routes without captures (`/files/`) have no params at all.
                Err(axum::extract::rejection::PathRejection::MissingPathParams(_)) => {
                    HashMap::new()
                }
                Err(e) => return Err(e.into_response()),
            };
        let id = params.get("id").cloned();
        let Some(decoded) = params.get("spec") else {
            let spec = app.faults.global_spec();
            return Ok(Target {
                unauthorized: !token_ok(app, parts, &spec),
                spec,
                stream_key: "global".into(),
                base: String::new(),
                id,
            });
        };
        let spec = FaultSpec::parse(decoded)
            .map_err(|e| plain(StatusCode::BAD_REQUEST, &e.to_string()))?;
        // Keep the segment exactly as the client encoded it, so the
        // Location we hand back is the URL family the client chose.
        let raw = parts
            .uri
            .path()
            .strip_prefix("/faults/")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        Ok(Target {
            unauthorized: !token_ok(app, parts, &spec),
            stream_key: format!("path:{spec}"),
            spec,
            base: format!("/faults/{raw}"),
            id,
        })
    }
}

/// `token:N`: a request (other than OPTIONS and the `/info` introspection) must carry a
/// bearer token that has been used fewer than N times.
fn token_ok(app: &AppState, parts: &Parts, spec: &FaultSpec) -> bool {
    let Some(limit) = spec.token_uses else {
        return true;
    };
    if parts.method == axum::http::Method::OPTIONS || parts.uri.path().ends_with("/info") {
        return true;
    }
    let authorization = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    app.faults.use_token(authorization, limit)
}

impl Target {
    /// The 401 of a request whose token `token:N` refused, if it was refused.
    pub(crate) fn refusal(&self) -> Option<Response> {
        self.unauthorized.then(|| {
            let mut res = plain(StatusCode::UNAUTHORIZED, "token missing or expired");
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            res
        })
    }
}

impl Target {
    /// The `latency` fault: a fixed delay before handling.
    pub(crate) async fn delay(&self) {
        if let Some(d) = self.spec.latency() {
            tokio::time::sleep(d).await;
        }
    }

    fn upload(&self, app: &AppState) -> Option<std::sync::Arc<Upload>> {
        self.id.as_deref().and_then(|id| app.store.get(id))
    }
}

pub(crate) fn plain(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{msg}\n"),
    )
        .into_response()
}

pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// tus integers are plain non-negative decimals (no sign, no spaces).
pub(crate) fn parse_tus_u64(value: &str) -> Option<u64> {
    let v = value.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// Parses `Upload-Metadata`: comma-separated `key[ base64value]` pairs. Keys
/// must be non-empty, unique and free of spaces; values are standard base64
/// (padding optional) and are stored as text (invalid UTF-8 is replaced).
/// A key without a value maps to "".
pub fn parse_metadata(header: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    if header.trim().is_empty() {
        return Ok(out);
    }
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    for pair in header.split(',') {
        let pair = pair.trim();
        let mut parts = pair.split(' ');
        let key = parts.next().unwrap_or_default();
        let value = parts.next();
        if key.is_empty() {
            return Err(format!("metadata pair {pair:?} has an empty key"));
        }
        if parts.next().is_some() {
            return Err(format!(
                "metadata pair {pair:?} has more than key and value"
            ));
        }
        let decoded = match value {
            None => String::new(),
            Some(v) => {
                let bytes = lenient
                    .decode(v)
                    .map_err(|_| format!("metadata value for {key:?} is not base64"))?;
                String::from_utf8_lossy(&bytes).into_owned()
            }
        };
        if out.insert(key.to_owned(), decoded).is_some() {
            return Err(format!("metadata key {key:?} is repeated"));
        }
    }
    Ok(out)
}

/// Counts an injected fault (globally and for the upload or object whose
/// counters are given) and notes it for the request log.
pub(crate) fn record(
    app: &AppState,
    counters: Option<&FaultCounters>,
    kind: FaultKind,
    note: &LogNote,
) {
    app.faults.counters.bump(kind);
    if let Some(c) = counters {
        c.bump(kind);
    }
    note.set(format!("fault={}", kind.label()));
}

pub(crate) fn fault_response(kind: FaultKind, spec: &FaultSpec) -> Response {
    match kind {
        FaultKind::TooManyRequests => {
            let retry = spec.retry_after_value(SystemTime::now());
            let mut res = plain(StatusCode::TOO_MANY_REQUESTS, "injected fault: 429");
            if let Ok(v) = HeaderValue::from_str(&retry) {
                res.headers_mut().insert(RETRY_AFTER, v);
            }
            res
        }
        FaultKind::Internal => plain(StatusCode::INTERNAL_SERVER_ERROR, "injected fault: 500"),
        FaultKind::Unavailable => plain(StatusCode::SERVICE_UNAVAILABLE, "injected fault: 503"),
        // Resets never produce a response, and a corrupted body is answered
        // by the checksum check (460); these are only safe defaults.
        FaultKind::Reset => plain(StatusCode::INTERNAL_SERVER_ERROR, "injected fault: reset"),
        FaultKind::Corrupt => plain(StatusCode::INTERNAL_SERVER_ERROR, "injected fault: corrupt"),
    }
}

fn not_found() -> Response {
    let mut res = plain(StatusCode::NOT_FOUND, "upload not found");
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

pub(crate) fn storage_error(e: &std::io::Error) -> Response {
    eprintln!("chunkup-server: storage error: {e}");
    plain(StatusCode::INTERNAL_SERVER_ERROR, "storage error")
}

/// POST: creation extension. A body (creation-with-upload, which is not
/// offered) is read and ignored; see [`body::DRAIN_TIMEOUT`] for why it is read.
async fn create_upload(
    State(app): State<AppState>,
    target: Target,
    note: LogNote,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = target.refusal() {
        return reject(body, refused).await;
    }
    let res = create(&app, &target, &note, &headers).await;
    reject(body, res).await
}

async fn create(app: &AppState, target: &Target, note: &LogNote, headers: &HeaderMap) -> Response {
    target.delay().await;
    if headers.contains_key(&H_UPLOAD_DEFER_LENGTH) && !headers.contains_key(&H_UPLOAD_LENGTH) {
        return plain(
            StatusCode::BAD_REQUEST,
            "Upload-Defer-Length is not supported",
        );
    }
    let Some(length) = header_str(headers, &H_UPLOAD_LENGTH).and_then(parse_tus_u64) else {
        return plain(
            StatusCode::BAD_REQUEST,
            "Upload-Length must be a non-negative integer",
        );
    };
    if length > app.max_size {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("Upload-Length exceeds Tus-Max-Size {}", app.max_size),
        );
    }
    let raw_metadata = match headers.get(&H_UPLOAD_METADATA).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v.to_owned()),
        Some(Err(_)) => {
            return plain(StatusCode::BAD_REQUEST, "Upload-Metadata is not ASCII");
        }
    };
    let metadata = match raw_metadata.as_deref().map(parse_metadata).transpose() {
        Ok(m) => m.unwrap_or_default(),
        Err(msg) => return plain(StatusCode::BAD_REQUEST, &msg),
    };
    // Faults are rolled only for valid requests, so a test's fault sequence
    // does not depend on how many malformed requests it also sent.
    let rng_seed = match app.faults.roll_creation(&target.stream_key, &target.spec) {
        Ok(seed) => seed,
        Err(kind) => {
            record(app, None, kind, note);
            return fault_response(kind, &target.spec);
        }
    };
    let upload = match app
        .store
        .create(length, metadata, raw_metadata, rng_seed)
        .await
    {
        Ok(u) => u,
        Err(e) => return storage_error(&e),
    };
    let location = format!("{}/files/{}", target.base, upload.id);
    match HeaderValue::from_str(&location) {
        Ok(loc) => (StatusCode::CREATED, [(LOCATION, loc)]).into_response(),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "bad location"),
    }
}

/// HEAD: current offset. Waits for an in-flight PATCH so the offset it
/// reports includes whatever that PATCH kept.
async fn head_upload(State(app): State<AppState>, target: Target, note: LogNote) -> Response {
    if let Some(refused) = target.refusal() {
        return refused;
    }
    target.delay().await;
    let Some(upload) = target.upload(&app) else {
        return not_found();
    };
    let _guard = upload.lock.lock().await;
    if upload.is_deleted() {
        return not_found();
    }
    if let Some(kind) = upload.roll(&target.spec, false) {
        record(&app, Some(&upload.faults), kind, &note);
        return fault_response(kind, &target.spec);
    }
    let meta = upload.meta();
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    h.insert(H_UPLOAD_OFFSET, HeaderValue::from(meta.offset));
    h.insert(H_UPLOAD_LENGTH, HeaderValue::from(meta.length));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = meta
        .metadata_header
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
    {
        h.insert(H_UPLOAD_METADATA, v);
    }
    res
}

fn is_offset_octet_stream(headers: &HeaderMap) -> bool {
    header_str(headers, &CONTENT_TYPE)
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mt| {
            mt.trim()
                .eq_ignore_ascii_case("application/offset+octet-stream")
        })
}

/// PATCH: append bytes at the current offset.
async fn patch_upload(
    State(app): State<AppState>,
    target: Target,
    note: LogNote,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = target.refusal() {
        return reject(body, refused).await;
    }
    target.delay().await;
    let Some(upload) = target.upload(&app) else {
        return reject(body, not_found()).await;
    };
    if !is_offset_octet_stream(&headers) {
        let res = plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/offset+octet-stream",
        );
        return reject(body, res).await;
    }
    let Some(client_offset) = header_str(&headers, &H_UPLOAD_OFFSET).and_then(parse_tus_u64) else {
        let res = plain(
            StatusCode::BAD_REQUEST,
            "Upload-Offset must be a non-negative integer",
        );
        return reject(body, res).await;
    };
    let expected = match headers.get(&H_UPLOAD_CHECKSUM) {
        None => None,
        Some(v) => match v.to_str().map_err(|_| checksum::ChecksumError::Malformed) {
            Ok(text) => match checksum::parse_header(text) {
                Ok(e) => Some(e),
                Err(e) => {
                    return reject(body, plain(StatusCode::BAD_REQUEST, &e.to_string())).await
                }
            },
            Err(e) => return reject(body, plain(StatusCode::BAD_REQUEST, &e.to_string())).await,
        },
    };
    let content_length = header_str(&headers, &CONTENT_LENGTH).and_then(parse_tus_u64);

    let guard = upload.lock.clone().lock_owned().await;
    if upload.is_deleted() {
        drop(guard);
        return reject(body, not_found()).await;
    }
    let meta = upload.meta();
    if client_offset != meta.offset {
        drop(guard);
        let res = plain(
            StatusCode::CONFLICT,
            &format!(
                "Upload-Offset {client_offset} does not match {}",
                meta.offset
            ),
        );
        return reject(body, res).await;
    }
    let remaining = meta.length.saturating_sub(meta.offset);
    if content_length.is_some_and(|cl| cl > remaining) {
        drop(guard);
        let res = plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body extends past Upload-Length",
        );
        return reject(body, res).await;
    }

    let mut job = PatchJob {
        app: app.clone(),
        upload: upload.clone(),
        start: meta.offset,
        remaining,
        expected,
        bandwidth: target.spec.bandwidth,
        note: note.clone(),
        corrupt_at: None,
    };
    let work = match upload.roll(&target.spec, true) {
        None => {
            // `corrupt` strikes only where the checksum will catch it, so it
            // can cause a 460 but never a wrong byte on disk.
            if job.expected.is_some() {
                let body_len = content_length.unwrap_or(remaining);
                job.corrupt_at = upload.roll_corrupt(&target.spec, body_len);
            }
            tokio::spawn(async move {
                let res = job.receive(body).await;
                drop(guard);
                res
            })
        }
        Some(FaultKind::Reset) => {
            record(&app, Some(&upload.faults), FaultKind::Reset, &note);
            // Cut somewhere strictly inside the body, so the client always
            // sees a partial transfer (1 ..= len-1 bytes read).
            let body_len = content_length.unwrap_or(remaining);
            let cut = if body_len >= 2 {
                1 + upload.draw_below(body_len - 1)
            } else {
                0
            };
            let kill = kill.map(|Extension(k)| k);
            tokio::spawn(async move { job.reset(body, cut, guard, kill).await })
        }
        Some(kind) => {
            // Decided before any body byte is stored.
            record(&app, Some(&upload.faults), kind, &note);
            drop(guard);
            return reject(body, fault_response(kind, &target.spec)).await;
        }
    };
    // The work runs on its own task so that it completes (and commits) even
    // if this handler future is dropped with the connection.
    match work.await {
        Ok(res) => res,
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "PATCH task failed"),
    }
}

/// Everything a PATCH needs once validated, owned so it can run on a task.
struct PatchJob {
    app: AppState,
    upload: std::sync::Arc<Upload>,
    start: u64,
    remaining: u64,
    expected: Option<Expected>,
    bandwidth: Option<u64>,
    note: LogNote,
    /// Body position of the byte the `corrupt` fault flips (only ever set
    /// when `expected` is).
    corrupt_at: Option<u64>,
}

impl PatchJob {
    async fn read_body(
        &self,
        body: &mut Body,
        limit: u64,
        sink: Option<&Appender>,
        probe_end: bool,
    ) -> (BodyEnd, u64) {
        let read = self.read_body_inner(body, limit, sink, probe_end).await;
        self.upload
            .received
            .fetch_add(read.1, std::sync::atomic::Ordering::Relaxed);
        read
    }

    async fn read_body_inner(
        &self,
        body: &mut Body,
        limit: u64,
        sink: Option<&Appender>,
        probe_end: bool,
    ) -> (BodyEnd, u64) {
        match self.corrupt_at.filter(|_| self.expected.is_some()) {
            None => body::read_body(body, limit, sink, probe_end, self.bandwidth).await,
            Some(at) => {
                let read =
                    body::read_body_corrupting(body, limit, sink, probe_end, self.bandwidth, at)
                        .await;
                if read.1 > at {
                    // Counted only once the byte really went by flipped.
                    record(
                        &self.app,
                        Some(&self.upload.faults),
                        FaultKind::Corrupt,
                        &self.note,
                    );
                    self.note.set(format!("fault=corrupt at={at}"));
                }
                read
            }
        }
    }

    /// The normal PATCH path: stream to disk, verify, commit.
    async fn receive(self, mut body: Body) -> Response {
        let store = &self.app.store;
        let appender = Appender::start(
            self.upload.bin_path(),
            self.start,
            self.expected.as_ref().map(|e| e.algo),
        );
        let (end, _) = self
            .read_body(&mut body, self.remaining, Some(&appender), true)
            .await;
        let appended = match appender.finish().await {
            Ok(a) if end != BodyEnd::WriteFailed => a,
            Ok(_) => {
                let _ = store.truncate_to_committed(&self.upload).await;
                return storage_error(&std::io::Error::other("writer stopped"));
            }
            Err(e) => {
                let _ = store.truncate_to_committed(&self.upload).await;
                return storage_error(&e);
            }
        };
        if let Some(expected) = &self.expected {
            let matches = appended.digest.as_deref() == Some(expected.digest.as_slice());
            if end != BodyEnd::Complete || !matches {
                // With a checksum the PATCH is all or nothing.
                if let Err(e) = store.truncate_to_committed(&self.upload).await {
                    return storage_error(&e);
                }
                return match end {
                    BodyEnd::Overflow => {
                        let res = plain(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "body extends past Upload-Length",
                        );
                        reject(body, res).await
                    }
                    BodyEnd::Broken => {
                        self.note.set("body interrupted; discarded (checksum)");
                        plain(StatusCode::BAD_REQUEST, "body interrupted")
                    }
                    _ => checksum_mismatch(),
                };
            }
        }
        let new_offset = self.start + appended.written;
        if let Err(e) = store.commit(&self.upload, new_offset).await {
            return storage_error(&e);
        }
        match end {
            BodyEnd::Overflow => {
                let res = plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body extends past Upload-Length",
                );
                reject(body, res).await
            }
            BodyEnd::Broken => {
                self.note
                    .set(format!("body interrupted; kept {}", appended.written));
                plain(StatusCode::BAD_REQUEST, "body interrupted")
            }
            _ => {
                let mut res = StatusCode::NO_CONTENT.into_response();
                res.headers_mut()
                    .insert(H_UPLOAD_OFFSET, HeaderValue::from(new_offset));
                res
            }
        }
    }

    /// The `reset` fault: read `cut` bytes, keep them only without a
    /// checksum (as a real server keeps a partial body), then kill the
    /// connection so the client sees a network error, not a response.
    async fn reset(
        self,
        mut body: Body,
        cut: u64,
        guard: tokio::sync::OwnedMutexGuard<()>,
        kill: Option<ConnKill>,
    ) -> Response {
        let keep = self.expected.is_none();
        let appender = keep.then(|| Appender::start(self.upload.bin_path(), self.start, None));
        let mut read = 0;
        if cut > 0 {
            read = self
                .read_body(&mut body, cut, appender.as_ref(), false)
                .await
                .1;
        }
        let mut kept = 0;
        if let Some(appender) = appender {
            match appender.finish().await {
                Ok(a) => {
                    kept = a.written;
                    if let Err(e) = self.app.store.commit(&self.upload, self.start + kept).await {
                        eprintln!("chunkup-server: storage error: {e}");
                    }
                }
                Err(e) => {
                    let _ = self.app.store.truncate_to_committed(&self.upload).await;
                    eprintln!("chunkup-server: storage error: {e}");
                }
            }
        }
        self.note.set(if keep {
            format!("fault=reset read={read} kept={kept}")
        } else {
            format!("fault=reset read={read} discarded (checksum)")
        });
        // Release the upload before the client can retry.
        drop(guard);
        crate::conn::kill(kill)
    }
}

/// 460 is tus's own status; hyper has no canonical reason for it, so set it.
fn checksum_mismatch() -> Response {
    let mut res = plain(
        StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
        "Checksum Mismatch",
    );
    res.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(b"Checksum Mismatch"));
    res
}

/// DELETE: termination extension.
async fn delete_upload(State(app): State<AppState>, target: Target) -> Response {
    if let Some(refused) = target.refusal() {
        return refused;
    }
    target.delay().await;
    let Some(upload) = target.upload(&app) else {
        return not_found();
    };
    let _guard = upload.lock.lock().await;
    if upload.is_deleted() {
        return not_found();
    }
    match app.store.delete(&upload).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => storage_error(&e),
    }
}

/// JSON body of `GET …/files/{id}/info`.
#[derive(Debug, Serialize)]
pub struct Info {
    pub size: u64,
    pub offset: u64,
    pub sha256: String,
    pub complete: bool,
    pub metadata: BTreeMap<String, String>,
    pub faults: CounterSnapshot,
    /// tus and range: body bytes read for this upload since the server started, kept or
    /// not (how much a client sent twice); absent for put objects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
}

pub(crate) fn json_error(status: StatusCode, msg: &str) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// GET …/info: test/demo introspection, not part of tus. Never faulted and
/// does not wait for an in-flight PATCH (it reports committed bytes).
async fn info(State(app): State<AppState>, target: Target) -> Response {
    let Some(upload) = target.upload(&app) else {
        return json_error(StatusCode::NOT_FOUND, "upload not found");
    };
    upload_info(&app.store, &upload).await
}

/// The `/info` answer for an upload of `store` (tus uploads and range
/// sessions share the shape).
pub(crate) async fn upload_info(store: &Store, upload: &std::sync::Arc<Upload>) -> Response {
    let meta = upload.meta();
    let sha256 = match store.sha256_committed(upload).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chunkup-server: storage error: {e}");
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage error");
        }
    };
    Json(Info {
        size: meta.length,
        offset: meta.offset,
        sha256,
        complete: meta.complete(),
        metadata: meta.metadata,
        faults: upload.faults.snapshot(),
        received: Some(upload.received.load(std::sync::atomic::Ordering::Relaxed)),
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_parsing() {
        let m = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential")
            .expect("valid");
        assert_eq!(m["filename"], "world_domination_plan.pdf");
        assert_eq!(m["is_confidential"], "");
        // Padding is optional; surrounding spaces are tolerated.
        let m = parse_metadata(" a YQ , b Yg==").expect("valid");
        assert_eq!((m["a"].as_str(), m["b"].as_str()), ("a", "b"));
        assert!(parse_metadata("").expect("empty ok").is_empty());
        for bad in [
            "a YQ== extra",
            "a !!!",
            ",a YQ==",
            "a YQ==,,b Yg==",
            "a YQ==,a Yg==",
        ] {
            assert!(parse_metadata(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tus_integers() {
        assert_eq!(parse_tus_u64("0"), Some(0));
        assert_eq!(parse_tus_u64(" 42 "), Some(42));
        for bad in ["", "-1", "+1", "1.0", "abc", "99999999999999999999999"] {
            assert_eq!(parse_tus_u64(bad), None, "{bad:?}");
        }
    }
}
