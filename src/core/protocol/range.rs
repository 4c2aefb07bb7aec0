//! A Content-Range resumable session, as Google Cloud Storage's resumable uploads speak it
//! (and others modelled on them): the caller's backend creates the session and hands the
//! browser its URI; the browser PUTs chunks with `Content-Range: bytes A-B/TOTAL`.
//!
//! `308` with `Range: bytes=0-N` means "have N+1 bytes, go on"; `200`/`201` means done. A
//! status query is an empty PUT with `Content-Range: bytes */TOTAL`, sent after every
//! failure, since a server may keep part of a broken chunk (GCS keeps whole 256 KiB units).
//! Every chunk but the last must be a multiple of 256 KiB.
//!
//! To continue a session after a reload, the first request is a status query: the session
//! says how much it holds, and the upload goes on from there.

use crate::core::chunker::ChunkPlan;
use crate::core::digest::Sha256Bytes;
use crate::core::error::UploadError;
use crate::core::http::{Body, HttpRequest, HttpResponse, Method};
use crate::core::protocol::{answered, bad_response, status_error, without_query, Protocol, Step};

/// The unit GCS persists and requires chunk sizes to be multiples of.
pub const RANGE_CHUNK_UNIT: u64 = 256 * 1024;

/// Checks a chunk size for the range protocol.
pub fn check_chunk_size(chunk_size: u64) -> Result<(), UploadError> {
    if chunk_size % RANGE_CHUNK_UNIT == 0 {
        Ok(())
    } else {
        Err(UploadError::invalid(format!(
            "chunkSize must be a multiple of 256 KiB ({RANGE_CHUNK_UNIT} bytes) for the range protocol, got {chunk_size}"
        )))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Upload,
    Query,
    Done,
}

/// A resumable Content-Range upload to a session URI.
#[derive(Debug, Clone)]
pub struct RangeUpload {
    url: String,
    plan: ChunkPlan,
    offset: u64,
    /// The end of the furthest chunk ever sent: no server can have more.
    furthest_sent: u64,
    state: State,
    in_flight: Option<HttpRequest>,
    /// Continuing a session: what it held when first asked.
    resuming: bool,
    resumed_from: Option<u64>,
    resume_refused: bool,
}

impl RangeUpload {
    /// An upload of `size` bytes to the session `url` in chunks of `chunk_size` (checked
    /// with [`check_chunk_size`] beforehand).
    pub fn new(url: String, size: u64, chunk_size: u64) -> Self {
        RangeUpload {
            url,
            plan: ChunkPlan::new(size, chunk_size),
            offset: 0,
            furthest_sent: 0,
            // An empty file is finalised by the query form (`bytes */0`).
            state: if size == 0 {
                State::Query
            } else {
                State::Upload
            },
            in_flight: None,
            resuming: false,
            resumed_from: None,
            resume_refused: false,
        }
    }

    /// Continues a session that may hold bytes from before (a reload): ask first.
    pub fn resuming(mut self, resume: bool) -> Self {
        if resume {
            self.resuming = true;
            self.state = State::Query;
            // Whatever was sent before the reload: the server may hold any of it.
            self.furthest_sent = self.plan.size;
        }
        self
    }

    /// The first answer of a resumed session tells where it stood.
    fn note_resumed(&mut self) {
        if self.resuming && self.resumed_from.is_none() {
            self.resumed_from = Some(self.offset);
        }
    }

    fn send(&mut self, request: HttpRequest) -> HttpRequest {
        self.in_flight = Some(request.clone());
        request
    }

    /// `Range: bytes=0-N` → N + 1; no header → 0. Never more than the request could have
    /// delivered, and a 308 never says "everything" (that would be a 200, and taking it
    /// would loop on status queries).
    fn persisted(
        &self,
        request: &HttpRequest,
        response: &HttpResponse,
    ) -> Result<u64, UploadError> {
        let bad = |what: &str| bad_response(request.method, request.purpose, what);
        let offset = match response.header("Range") {
            None => 0,
            Some(range) => {
                range
                    .strip_prefix("bytes=0-")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .ok_or_else(|| bad("has a Range header that is not bytes=0-N"))?
                    + 1
            }
        };
        let sent_up_to = self.furthest_sent.max(self.offset);
        if offset > sent_up_to {
            return Err(bad(&format!(
                "claims {offset} bytes persisted, more than were sent ({sent_up_to})"
            )));
        }
        if offset >= self.plan.size {
            return Err(bad(
                "says every byte is persisted but did not finish the upload (308 instead of 200)",
            ));
        }
        Ok(offset)
    }

    /// Only the answer to the final chunk or to a status query may finish the upload.
    fn may_finish(&self, request: &HttpRequest) -> bool {
        match request.body {
            Body::FileRange { end, .. } => end == self.plan.size,
            // A status query: only once every byte went out (in this session, or in the one
            // a resumed upload continues), else a 200 would pass unsent bytes for stored.
            Body::Empty => self.furthest_sent == self.plan.size,
        }
    }
}

impl Protocol for RangeUpload {
    fn name(&self) -> &'static str {
        "range"
    }

    fn plan(&self) -> ChunkPlan {
        self.plan
    }

    fn next_step(&mut self) -> Step {
        match self.state {
            State::Done => Step::Done,
            // Everything sent but not finalised (cannot happen with GCS): ask.
            State::Upload if self.offset >= self.plan.size => {
                self.state = State::Query;
                self.next_step()
            }
            State::Upload => Step::UploadChunk {
                offset: self.offset,
                length: self.plan.chunk_len_at(self.offset),
            },
            State::Query => {
                let request = HttpRequest::new(Method::Put, &self.url, "query upload status")
                    .header("Content-Range", format!("bytes */{}", self.plan.size));
                Step::Send(self.send(request))
            }
        }
    }

    fn digest_before_send(&self) -> bool {
        false
    }

    fn chunk_request(&mut self, offset: u64, length: u64, _: Option<&Sha256Bytes>) -> HttpRequest {
        let request = HttpRequest::new(Method::Put, &self.url, "upload chunk")
            .header(
                "Content-Range",
                format!("bytes {offset}-{}/{}", offset + length - 1, self.plan.size),
            )
            .file_range(offset, offset + length);
        self.furthest_sent = self.furthest_sent.max(offset + length);
        self.send(request)
    }

    fn handle_response(&mut self, response: &HttpResponse) -> Result<(), UploadError> {
        let request = answered(&mut self.in_flight)?;
        match response.status {
            200 | 201 if self.may_finish(&request) => {
                self.offset = self.plan.size;
                self.state = State::Done;
                self.note_resumed();
                Ok(())
            }
            200 | 201 => Err(bad_response(
                request.method,
                request.purpose,
                "finished the upload before the last byte was sent",
            )),
            308 => {
                self.offset = self.persisted(&request, response)?;
                self.state = State::Upload;
                self.note_resumed();
                Ok(())
            }
            // The session to continue is gone: its record must go. A new session needs the
            // caller's backend, so this is the end of this upload.
            404 | 410 if self.resuming && self.resumed_from.is_none() => {
                self.resume_refused = true;
                Err(status_error(&request, response))
            }
            _ => Err(status_error(&request, response)),
        }
    }

    fn recover(&mut self) {
        self.in_flight = None;
        self.state = State::Query;
    }

    fn acknowledged_offset(&self) -> u64 {
        self.offset
    }

    fn upload_url(&self) -> Option<&str> {
        // Session URIs carry their credential in the query (GCS's upload_id).
        Some(without_query(&self.url))
    }

    fn termination_request(&self) -> Option<HttpRequest> {
        (self.state != State::Done)
            .then(|| HttpRequest::new(Method::Delete, &self.url, "cancel upload session"))
    }

    fn verified_checksum(&self) -> Option<&'static str> {
        None
    }

    fn is_auth_failure(&self, status: u16) -> bool {
        matches!(status, 401 | 403)
    }

    fn resume_url(&self) -> Option<&str> {
        // Continuing needs only the endpoint option, which is the session URI (and whose
        // hash is in the record's key): the record marks that a session was begun. Its
        // query, which carries the credential of a signed session URI, is not stored.
        (self.plan.size > 0).then(|| without_query(&self.url))
    }

    fn resumed_from(&self) -> Option<u64> {
        self.resumed_from
    }

    fn resume_refused(&self) -> bool {
        self.resume_refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const URL: &str = "https://storage.example/upload?upload_id=secret";

    fn content_range(r: &HttpRequest) -> &str {
        r.header_value("Content-Range").unwrap_or_default()
    }

    #[test]
    fn chunk_sizes_must_be_multiples_of_256_kib() {
        assert!(check_chunk_size(256 * KIB).is_ok());
        assert!(check_chunk_size(8 * 1024 * KIB).is_ok());
        let err = check_chunk_size(1000 * KIB).unwrap_err();
        assert_eq!(err.code(), "invalid_input");
        assert!(err.to_string().contains("multiple of 256 KiB"));
    }

    #[test]
    fn uploads_in_ranges_following_308() {
        let size = 600 * KIB;
        let mut r = RangeUpload::new(URL.into(), size, 256 * KIB);
        let mut sent = Vec::new();
        while let Step::UploadChunk { offset, length } = r.next_step() {
            let request = r.chunk_request(offset, length, None);
            assert_eq!(request.method, Method::Put);
            sent.push(content_range(&request).to_owned());
            let end = offset + length;
            let response = if end == size {
                HttpResponse::new(200, Vec::<(&str, &str)>::new())
            } else {
                HttpResponse::new(308, [("Range", format!("bytes=0-{}", end - 1))])
            };
            r.handle_response(&response).unwrap();
        }
        assert_eq!(
            sent,
            [
                "bytes 0-262143/614400",
                "bytes 262144-524287/614400",
                "bytes 524288-614399/614400"
            ]
        );
        assert_eq!(r.next_step(), Step::Done);
        assert_eq!(r.acknowledged_offset(), size);
        assert_eq!(r.upload_url(), Some("https://storage.example/upload"));
    }

    #[test]
    fn a_failure_queries_the_status_and_resumes_where_the_server_is() {
        let mut r = RangeUpload::new(URL.into(), 1024 * KIB, 512 * KIB);
        let _ = r.next_step();
        let _ = r.chunk_request(0, 512 * KIB, None);
        r.recover();
        let Step::Send(query) = r.next_step() else {
            panic!("expected a status query")
        };
        assert_eq!(
            (query.method, content_range(&query)),
            (Method::Put, "bytes */1048576")
        );
        assert_eq!(query.body, crate::core::http::Body::Empty);
        // GCS kept one 256 KiB unit of the broken chunk.
        r.handle_response(&HttpResponse::new(308, [("Range", "bytes=0-262143")]))
            .unwrap();
        assert_eq!(
            r.next_step(),
            Step::UploadChunk {
                offset: 256 * KIB,
                length: 512 * KIB
            }
        );
        // No Range header: nothing persisted yet.
        r.recover();
        let _ = r.next_step();
        r.handle_response(&HttpResponse::new(308, Vec::<(&str, &str)>::new()))
            .unwrap();
        assert_eq!(r.acknowledged_offset(), 0);
    }

    #[test]
    fn statuses_and_bad_ranges() {
        let mut r = RangeUpload::new(URL.into(), 100, 256 * KIB);
        let _ = r.chunk_request(0, 100, None);
        assert!(r
            .handle_response(&HttpResponse::new(503, Vec::<(&str, &str)>::new()))
            .unwrap_err()
            .is_retryable());
        let _ = r.chunk_request(0, 100, None);
        let gone = r
            .handle_response(&HttpResponse::new(404, Vec::<(&str, &str)>::new()))
            .unwrap_err();
        assert_eq!((gone.code(), gone.is_retryable()), ("http_status", false));
        let _ = r.chunk_request(0, 100, None);
        let bad = r
            .handle_response(&HttpResponse::new(308, [("Range", "bytes=5-9")]))
            .unwrap_err();
        assert_eq!(bad.code(), "protocol");
        let _ = r.chunk_request(0, 100, None);
        let beyond = r
            .handle_response(&HttpResponse::new(308, [("Range", "bytes=0-100")]))
            .unwrap_err();
        assert_eq!(beyond.code(), "protocol");
        // A 308 claiming every byte would loop on status queries: refused.
        let _ = r.chunk_request(0, 100, None);
        let all = r
            .handle_response(&HttpResponse::new(308, [("Range", "bytes=0-99")]))
            .unwrap_err();
        assert!(all.to_string().contains("308 instead of 200"), "{all}");
        // More than the request carried.
        let mut big = RangeUpload::new(URL.into(), 1024 * KIB, 256 * KIB);
        let _ = big.chunk_request(0, 256 * KIB, None);
        let more = big
            .handle_response(&HttpResponse::new(308, [("Range", "bytes=0-524287")]))
            .unwrap_err();
        assert!(more.to_string().contains("more than were sent"), "{more}");
        // A 200 to a chunk that is not the last.
        let _ = big.chunk_request(0, 256 * KIB, None);
        let early = big
            .handle_response(&HttpResponse::new(200, Vec::<(&str, &str)>::new()))
            .unwrap_err();
        assert_eq!(early.code(), "protocol");
        let delete = r.termination_request().expect("a session can be cancelled");
        assert_eq!(delete.method, Method::Delete);
    }

    #[test]
    fn an_empty_file_is_finalised_by_a_query() {
        let mut r = RangeUpload::new(URL.into(), 0, 256 * KIB);
        let Step::Send(query) = r.next_step() else {
            panic!("expected the query form")
        };
        assert_eq!(content_range(&query), "bytes */0");
        r.handle_response(&HttpResponse::new(200, Vec::<(&str, &str)>::new()))
            .unwrap();
        assert_eq!(r.next_step(), Step::Done);
    }

    #[test]
    fn a_status_query_answered_done_before_every_byte_was_sent_is_refused() {
        let mut r = RangeUpload::new(URL.into(), 600 * KIB, 256 * KIB);
        let _ = r.next_step();
        let _ = r.chunk_request(0, 256 * KIB, None);
        r.recover();
        let Step::Send(_) = r.next_step() else {
            panic!("expected a status query")
        };
        let err = r
            .handle_response(&HttpResponse::new(200, Vec::<(&str, &str)>::new()))
            .unwrap_err();
        assert_eq!(err.code(), "protocol");
        assert_ne!(r.next_step(), Step::Done);
    }

    #[test]
    fn a_resumed_session_is_asked_first_and_continues_where_it_stood() {
        let size = 1024 * KIB;
        let mut r = RangeUpload::new(URL.into(), size, 256 * KIB).resuming(true);
        assert_eq!(
            r.resume_url(),
            Some("https://storage.example/upload"),
            "the session URI without the credential in its query"
        );
        let Step::Send(query) = r.next_step() else {
            panic!("a status query first")
        };
        assert_eq!(content_range(&query), "bytes */1048576");
        assert_eq!(r.resumed_from(), None);
        // Before the reload, 768 KiB had landed.
        r.handle_response(&HttpResponse::new(308, [("Range", "bytes=0-786431")]))
            .unwrap();
        assert_eq!(r.resumed_from(), Some(768 * KIB));
        assert_eq!(
            r.next_step(),
            Step::UploadChunk {
                offset: 768 * KIB,
                length: 256 * KIB
            }
        );
        // A session that is gone: its record goes, and the upload fails (a new session needs
        // the caller's backend).
        let mut gone = RangeUpload::new(URL.into(), size, 256 * KIB).resuming(true);
        let _ = gone.next_step();
        let err = gone
            .handle_response(&HttpResponse::new(404, Vec::<(&str, &str)>::new()))
            .unwrap_err();
        assert_eq!((err.code(), gone.resume_refused()), ("http_status", true));
        // A complete session: done at once.
        let mut done = RangeUpload::new(URL.into(), size, 256 * KIB).resuming(true);
        let _ = done.next_step();
        done.handle_response(&HttpResponse::new(200, Vec::<(&str, &str)>::new()))
            .unwrap();
        assert_eq!(
            (done.resumed_from(), done.next_step()),
            (Some(size), Step::Done)
        );
        assert!(done.is_auth_failure(403));
    }
}
