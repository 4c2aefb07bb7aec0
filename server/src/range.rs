//! Google-Cloud-Storage-style resumable upload sessions (the `range`
//! protocol), under both route families:
//!
//! * `POST {base}/range/` creates a session (`X-Upload-Content-Length`);
//! * `PUT {base}/range/{id}` with `Content-Range: bytes A-B/TOTAL` uploads a
//!   chunk (308 "Resume Incomplete" + `Range` until the last byte, then 200);
//!   with `bytes */TOTAL` it asks for the persisted offset;
//! * `DELETE {base}/range/{id}` cancels (499, as GCS answers);
//! * `GET {base}/range/{id}/info` is the tus `/info` shape.
//!
//! Sessions reuse the tus [`Store`](crate::store::Store) machinery (sidecar,
//! lock, fault stream, appender) in their own directory, `<data-dir>/range`,
//! so ids never collide with tus uploads and survive a restart the same way.
//!
//! GCS persists data in 256 KiB units: every chunk but the last must be a
//! multiple of [`UNIT`], and a body that breaks part-way (client gone, or an
//! injected `reset`) keeps only the bytes up to the last full unit. A client
//! must therefore ask for the offset after any failure rather than assume
//! what it sent was kept. As for tus, chunk bodies are processed on a
//! spawned task holding the session lock, so a vanished client's bytes are
//! still committed (or cut back) before the next request sees the session.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_RANGE, LOCATION, RANGE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use serde::Serialize;
use tokio::sync::OwnedMutexGuard;

use crate::body::{self, drain, reject, BodyEnd};
use crate::conn::ConnKill;
use crate::faults::FaultKind;
use crate::logging::LogNote;
use crate::store::{Appender, Upload};
use crate::tus::{self, header_str, parse_tus_u64, plain, record, Target};
use crate::AppState;

/// GCS's persistence unit and chunk granularity: 256 KiB.
pub const UNIT: u64 = 256 * 1024;

pub const H_UPLOAD_CONTENT_LENGTH: HeaderName = HeaderName::from_static("x-upload-content-length");
pub const H_UPLOAD_CONTENT_TYPE: HeaderName = HeaderName::from_static("x-upload-content-type");

pub fn routes() -> Router<AppState> {
    // `/range` and `/range/` both create, as `/files` does for tus.
    let create = || post(create_session);
    let session = || put(put_session).delete(delete_session);
    Router::new()
        .route("/range", create())
        .route("/range/", create())
        .route("/range/{id}", session())
        .route("/range/{id}/info", get(info))
        .route("/faults/{spec}/range", create())
        .route("/faults/{spec}/range/", create())
        .route("/faults/{spec}/range/{id}", session())
        .route("/faults/{spec}/range/{id}/info", get(info))
        // Chunks are streamed; axum's 2 MB default would cut them off.
        .layer(DefaultBodyLimit::disable())
}

/// A parsed `Content-Range` request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentRange {
    /// `bytes */TOTAL` or `bytes */*`: a status query.
    Query { total: Option<u64> },
    /// `bytes A-B/TOTAL` (or `/*`): bytes A..=B of the object.
    Bytes {
        first: u64,
        last: u64,
        total: Option<u64>,
    },
}

/// Parses `bytes A-B/TOTAL`, `bytes */TOTAL`, with `*` allowed as TOTAL.
/// Numbers are plain decimals; `A <= B` is required.
pub fn parse_content_range(value: &str) -> Option<ContentRange> {
    let value = value.trim();
    let unit = value.get(..5)?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let rest = value.get(5..)?;
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let (range, total) = rest.trim().split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(parse_tus_u64(t)?),
    };
    match range.trim() {
        "*" => Some(ContentRange::Query { total }),
        r => {
            let (a, b) = r.split_once('-')?;
            let (first, last) = (parse_tus_u64(a)?, parse_tus_u64(b)?);
            (first <= last).then_some(ContentRange::Bytes { first, last, total })
        }
    }
}

/// The largest multiple of [`UNIT`] not above `n`.
pub fn aligned(n: u64) -> u64 {
    n - n % UNIT
}

fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "session not found")
}

fn bad(msg: &str) -> Response {
    plain(StatusCode::BAD_REQUEST, msg)
}

/// Sets a non-standard reason phrase (hyper only knows IANA ones).
fn with_reason(mut res: Response, reason: &'static [u8]) -> Response {
    res.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(reason));
    res
}

/// 308 "Resume Incomplete" with `Range: bytes=0-{offset-1}` (no `Range` at
/// offset 0) and deliberately no `Location`: fetch returns a 308 without
/// `Location` to the caller instead of following it.
fn resume_incomplete(offset: u64) -> Response {
    let mut res = StatusCode::PERMANENT_REDIRECT.into_response();
    if offset > 0 {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes=0-{}", offset - 1)) {
            res.headers_mut().insert(RANGE, v);
        }
    }
    with_reason(res, b"Resume Incomplete")
}

/// Body of the final 200.
#[derive(Debug, Serialize)]
struct Finished {
    size: u64,
    sha256: String,
}

async fn finished(app: &AppState, session: &Arc<Upload>) -> Response {
    match app.range.sha256_committed(session).await {
        Ok(sha256) => Json(Finished {
            size: session.meta().length,
            sha256,
        })
        .into_response(),
        Err(e) => tus::storage_error(&e),
    }
}

/// 200 + JSON when complete, else 308 with the persisted range.
async fn status_answer(app: &AppState, session: &Arc<Upload>) -> Response {
    let meta = session.meta();
    if meta.complete() {
        finished(app, session).await
    } else {
        resume_incomplete(meta.offset)
    }
}

/// POST: creates a session. Never faulted (in a real deployment the app's
/// backend creates it); `latency` still applies. A body is read and ignored.
async fn create_session(
    State(app): State<AppState>,
    target: Target,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(refused) = target.refusal() {
        return reject(body, refused).await;
    }
    target.delay().await;
    let res = create(&app, &target, &headers).await;
    reject(body, res).await
}

async fn create(app: &AppState, target: &Target, headers: &HeaderMap) -> Response {
    let Some(length) = header_str(headers, &H_UPLOAD_CONTENT_LENGTH).and_then(parse_tus_u64) else {
        return bad("X-Upload-Content-Length must be a non-negative integer");
    };
    if length > app.max_size {
        return plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("X-Upload-Content-Length exceeds {}", app.max_size),
        );
    }
    let mut metadata = BTreeMap::new();
    match headers.get(&H_UPLOAD_CONTENT_TYPE).map(|v| v.to_str()) {
        None => {}
        Some(Ok(ct)) => {
            metadata.insert("contentType".to_owned(), ct.trim().to_owned());
        }
        Some(Err(_)) => return bad("X-Upload-Content-Type is not ASCII"),
    }
    let seed = app
        .faults
        .draw_seed(&format!("range:{}", target.stream_key));
    let session = match app.range.create(length, metadata, None, seed).await {
        Ok(s) => s,
        Err(e) => return tus::storage_error(&e),
    };
    let location = format!("{}/range/{}", target.base, session.id);
    match HeaderValue::from_str(&location) {
        Ok(loc) => (StatusCode::CREATED, [(LOCATION, loc)]).into_response(),
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "bad location"),
    }
}

/// PUT: a chunk or a status query. See the README for the order of checks.
async fn put_session(
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
    let Some(session) = target.id.as_deref().and_then(|id| app.range.get(id)) else {
        return reject(body, not_found()).await;
    };
    let length = session.meta().length;
    // Without Content-Range the PUT carries the whole object (GCS's
    // single-request upload); for an empty object that is just a query.
    let range = match headers.get(CONTENT_RANGE) {
        None if length == 0 => ContentRange::Query { total: Some(0) },
        None => ContentRange::Bytes {
            first: 0,
            last: length - 1,
            total: Some(length),
        },
        Some(v) => match v.to_str().ok().and_then(parse_content_range) {
            Some(r) => r,
            None => {
                let res = bad("Content-Range must be `bytes A-B/TOTAL` or `bytes */TOTAL`");
                return reject(body, res).await;
            }
        },
    };
    let total = match range {
        ContentRange::Query { total } | ContentRange::Bytes { total, .. } => total,
    };
    if total.is_some_and(|t| t != length) {
        let res = bad(&format!(
            "Content-Range total does not match X-Upload-Content-Length {length}"
        ));
        return reject(body, res).await;
    }
    match range {
        ContentRange::Query { .. } => {
            // A query has no body; anything sent is ignored.
            drain(body).await;
            let _guard = session.lock.lock().await;
            if session.is_deleted() {
                return not_found();
            }
            if let Some(kind) = session.roll(&target.spec, false) {
                record(&app, Some(&session.faults), kind, &note);
                return tus::fault_response(kind, &target.spec);
            }
            status_answer(&app, &session).await
        }
        ContentRange::Bytes { first, last, total } => {
            if total.is_none() {
                return reject(body, bad("a chunk's Content-Range needs the total size")).await;
            }
            let chunk = Chunk {
                first,
                len: last - first + 1,
                total: length,
            };
            put_chunk(app, target, note, kill, headers, body, session, chunk).await
        }
    }
}

/// The byte range a chunk PUT declares.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    first: u64,
    len: u64,
    total: u64,
}

#[allow(clippy::too_many_arguments)] // one handler's extractors, passed on
async fn put_chunk(
    app: AppState,
    target: Target,
    note: LogNote,
    kill: Option<Extension<ConnKill>>,
    headers: HeaderMap,
    body: Body,
    session: Arc<Upload>,
    chunk: Chunk,
) -> Response {
    let end = chunk.first + chunk.len;
    if end > chunk.total {
        return reject(body, bad("Content-Range ends past the total size")).await;
    }
    if header_str(&headers, &CONTENT_LENGTH)
        .and_then(parse_tus_u64)
        .is_some_and(|cl| cl != chunk.len)
    {
        return reject(body, bad("Content-Length does not match Content-Range")).await;
    }
    if end < chunk.total && !chunk.len.is_multiple_of(UNIT) {
        let res = bad("every chunk but the last must be a multiple of 262144 bytes (256 KiB)");
        return reject(body, res).await;
    }
    let guard = session.lock.clone().lock_owned().await;
    if session.is_deleted() {
        drop(guard);
        return reject(body, not_found()).await;
    }
    let meta = session.meta();
    let complete = meta.complete();
    // A chunk may start before the persisted offset: a client resending after a broken
    // connection (browsers silently resend an idempotent PUT whose reused connection
    // dropped). As GCS does, the bytes already persisted are ignored.
    let overlaps = chunk.first < meta.offset && meta.offset < end;
    if !complete && chunk.first != meta.offset && !overlaps {
        drop(guard);
        let res = bad(&format!(
            "Content-Range starts at {} but the session has {} bytes persisted; \
             ask with `Content-Range: bytes */{}`",
            chunk.first, meta.offset, chunk.total
        ));
        return reject(body, res).await;
    }
    let job = ChunkJob {
        app: app.clone(),
        session: session.clone(),
        start: meta.offset,
        skip: if overlaps {
            meta.offset - chunk.first
        } else {
            0
        },
        chunk,
        bandwidth: target.spec.bandwidth,
        note: note.clone(),
    };
    let work = match session.roll(&target.spec, !complete) {
        None if complete => {
            // A repeated final chunk (its 200 was lost): answer as GCS does.
            drop(guard);
            drain(body).await;
            return finished(&app, &session).await;
        }
        None => tokio::spawn(job.receive(body, guard)),
        Some(FaultKind::Reset) => {
            record(&app, Some(&session.faults), FaultKind::Reset, &note);
            let cut = if chunk.len >= 2 {
                1 + session.draw_below(chunk.len - 1)
            } else {
                0
            };
            let kill = kill.map(|Extension(k)| k);
            tokio::spawn(job.reset(body, cut, guard, kill))
        }
        Some(kind) => {
            // Decided before any body byte is stored.
            record(&app, Some(&session.faults), kind, &note);
            drop(guard);
            return reject(body, tus::fault_response(kind, &target.spec)).await;
        }
    };
    // On its own task so the bytes are committed (or cut back) even if this
    // handler future is dropped with the connection.
    match work.await {
        Ok(res) => res,
        Err(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "PUT task failed"),
    }
}

/// A validated chunk PUT, owned so it can run on a task.
struct ChunkJob {
    app: AppState,
    session: Arc<Upload>,
    /// The persisted offset, where this chunk's new bytes go.
    start: u64,
    /// Leading bytes of the body the server already has.
    skip: u64,
    chunk: Chunk,
    bandwidth: Option<u64>,
    note: LogNote,
}

impl ChunkJob {
    /// Keeps the written bytes up to the last full 256 KiB unit of the
    /// object and drops the rest; returns how many of this chunk's bytes
    /// were kept.
    async fn keep_aligned(&self, written: u64) -> u64 {
        let store = &self.app.range;
        let end = aligned(self.start + written).max(self.start);
        if let Err(e) = store.commit(&self.session, end).await {
            eprintln!("chunkup-server: storage error: {e}");
        }
        if let Err(e) = store.truncate_to_committed(&self.session).await {
            eprintln!("chunkup-server: storage error: {e}");
        }
        end - self.start
    }

    async fn receive(self, mut body: Body, guard: OwnedMutexGuard<()>) -> Response {
        let store = &self.app.range;
        let appender = Appender::start(self.session.bin_path(), self.start, None);
        let (end, read) = body::read_body_skipping(
            &mut body,
            self.chunk.len,
            self.skip,
            Some(&appender),
            true,
            self.bandwidth,
        )
        .await;
        self.session.received.fetch_add(read, Ordering::Relaxed);
        let written = match appender.finish().await {
            Ok(a) if end != BodyEnd::WriteFailed => a.written,
            Ok(_) => {
                let _ = store.truncate_to_committed(&self.session).await;
                return tus::storage_error(&std::io::Error::other("writer stopped"));
            }
            Err(e) => {
                let _ = store.truncate_to_committed(&self.session).await;
                return tus::storage_error(&e);
            }
        };
        match end {
            BodyEnd::Complete if self.skip + written == self.chunk.len => {
                let offset = self.start + written;
                if let Err(e) = store.commit(&self.session, offset).await {
                    return tus::storage_error(&e);
                }
                drop(guard);
                if offset >= self.chunk.total {
                    finished(&self.app, &self.session).await
                } else {
                    resume_incomplete(offset)
                }
            }
            BodyEnd::Overflow => {
                // Malformed (only possible without Content-Length): keep
                // nothing of it.
                let _ = store.truncate_to_committed(&self.session).await;
                drop(guard);
                reject(body, bad("body longer than Content-Range")).await
            }
            _ => {
                let kept = self.keep_aligned(written).await;
                drop(guard);
                self.note
                    .set(format!("body interrupted after {written}; kept {kept}"));
                bad("body interrupted or shorter than Content-Range")
            }
        }
    }

    /// The `reset` fault: read `cut` bytes, keep the 256 KiB-aligned part,
    /// then kill the connection so the client sees a network error.
    async fn reset(
        self,
        mut body: Body,
        cut: u64,
        guard: OwnedMutexGuard<()>,
        kill: Option<ConnKill>,
    ) -> Response {
        let appender = Appender::start(self.session.bin_path(), self.start, None);
        let mut read = 0;
        if cut > 0 {
            read = body::read_body_skipping(
                &mut body,
                cut,
                self.skip,
                Some(&appender),
                false,
                self.bandwidth,
            )
            .await
            .1;
            self.session.received.fetch_add(read, Ordering::Relaxed);
        }
        let kept = match appender.finish().await {
            Ok(a) => self.keep_aligned(a.written).await,
            Err(e) => {
                let _ = self.app.range.truncate_to_committed(&self.session).await;
                eprintln!("chunkup-server: storage error: {e}");
                0
            }
        };
        self.note
            .set(format!("fault=reset read={read} kept={kept}"));
        // Release the session before the client can retry.
        drop(guard);
        crate::conn::kill(kill)
    }
}

/// DELETE: cancels the session. GCS answers 499; never faulted.
async fn delete_session(State(app): State<AppState>, target: Target) -> Response {
    if let Some(refused) = target.refusal() {
        return refused;
    }
    target.delay().await;
    let Some(session) = target.id.as_deref().and_then(|id| app.range.get(id)) else {
        return not_found();
    };
    let _guard = session.lock.lock().await;
    if session.is_deleted() {
        return not_found();
    }
    match app.range.delete(&session).await {
        Ok(()) => {
            let status = StatusCode::from_u16(499).unwrap_or(StatusCode::NO_CONTENT);
            with_reason(status.into_response(), b"Client Closed Request")
        }
        Err(e) => tus::storage_error(&e),
    }
}

/// GET …/info: the tus `/info` shape; never faulted.
async fn info(State(app): State<AppState>, target: Target) -> Response {
    let Some(session) = target.id.as_deref().and_then(|id| app.range.get(id)) else {
        return tus::json_error(StatusCode::NOT_FOUND, "session not found");
    };
    tus::upload_info(&app.range, &session).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(
            parse_content_range("bytes 0-262143/1000000"),
            Some(ContentRange::Bytes {
                first: 0,
                last: 262_143,
                total: Some(1_000_000)
            })
        );
        assert_eq!(
            parse_content_range(" Bytes */10 "),
            Some(ContentRange::Query { total: Some(10) })
        );
        assert_eq!(
            parse_content_range("bytes */*"),
            Some(ContentRange::Query { total: None })
        );
        assert_eq!(
            parse_content_range("bytes 5-9/*"),
            Some(ContentRange::Bytes {
                first: 5,
                last: 9,
                total: None
            })
        );
        for bad in [
            "",
            "bytes",
            "bytes=0-1/2",
            "bytes0-1/2",
            "bytes 1-0/2",
            "bytes -1/2",
            "bytes 0-1",
            "bytes 0-+1/2",
            "items 0-1/2",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn alignment() {
        assert_eq!(aligned(0), 0);
        assert_eq!(aligned(UNIT - 1), 0);
        assert_eq!(aligned(UNIT), UNIT);
        assert_eq!(aligned(3 * UNIT + 7), 3 * UNIT);
    }
}
