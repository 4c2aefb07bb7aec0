//! Upload protocols as pure state machines.
//!
//! A protocol never performs I/O. The engine asks it for the [`Step`] to take, performs it,
//! and feeds the response back. To add a protocol, write a type implementing [`Protocol`]
//! in a new file here, add its name to `ProtocolKind` (core/options.rs) and register it in
//! [`for_upload`]; the engine, hashing, retries and progress come for free.

pub mod put;
pub mod range;
pub mod s3;
pub mod tus;

use crate::core::chunker::ChunkPlan;
use crate::core::digest::Sha256Bytes;
use crate::core::error::UploadError;
use crate::core::http::{HttpRequest, HttpResponse, Method};
use crate::core::options::{ProtocolKind, UploadSettings};
use crate::core::retry::{is_transient_status, parse_retry_after};

/// The protocol `settings` ask for, set up for a file of `size` bytes: the one place where
/// the protocols that send one chunk at a time are registered. `None` for `s3`, whose
/// parts travel several at a time (`core::parallel`).
pub fn for_upload(settings: &UploadSettings, size: u64) -> Option<Box<dyn Protocol>> {
    let endpoint = settings.endpoint.clone();
    Some(match settings.protocol {
        ProtocolKind::Tus => Box::new(
            tus::TusUpload::new(
                endpoint,
                size,
                settings.chunk_size,
                settings.metadata.clone(),
            )
            .resuming(settings.resume_url.clone()),
        ),
        ProtocolKind::Put => Box::new(put::PutUpload::new(
            endpoint,
            size,
            settings.content_type.clone(),
            settings.fresh_url_per_attempt,
        )),
        ProtocolKind::Range => Box::new(
            range::RangeUpload::new(endpoint, size, settings.chunk_size)
                .resuming(settings.resume_url.is_some()),
        ),
        ProtocolKind::S3 => return None,
    })
}

/// What the engine should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this body-less request and hand the response to [`Protocol::handle_response`].
    Send(HttpRequest),
    /// Send the file bytes `offset..offset + length` in the request
    /// [`Protocol::chunk_request`] builds, and hash them (before sending when
    /// [`Protocol::digest_before_send`], else while they travel).
    UploadChunk {
        /// Where the chunk starts.
        offset: u64,
        /// How long it is.
        length: u64,
    },
    /// The server holds the whole file.
    Done,
}

/// An upload protocol: which requests to send and what their responses mean.
pub trait Protocol {
    /// Short name reported in the result (`"tus"`).
    fn name(&self) -> &'static str;

    /// The chunk grid the protocol sends in.
    fn plan(&self) -> ChunkPlan;

    /// The next step, given everything learned so far.
    fn next_step(&mut self) -> Step;

    /// Whether [`Protocol::chunk_request`] needs the chunk's SHA-256 (for a checksum
    /// header). If not, the engine hashes the chunk while it travels.
    fn digest_before_send(&self) -> bool;

    /// The request that sends the file bytes `offset..offset + length`; `sha256` is their
    /// digest when [`Protocol::digest_before_send`] said it is needed.
    fn chunk_request(
        &mut self,
        offset: u64,
        length: u64,
        sha256: Option<&Sha256Bytes>,
    ) -> HttpRequest;

    /// Interprets the response to the last request. Unexpected statuses become errors,
    /// marked retryable or not.
    fn handle_response(&mut self, response: &HttpResponse) -> Result<(), UploadError>;

    /// A request failed and will be retried: forget what was in flight, so that the next
    /// step re-learns the server's state (its offset) first.
    fn recover(&mut self);

    /// How many bytes from the start of the file the server has acknowledged.
    fn acknowledged_offset(&self) -> u64;

    /// The URL of the upload on the server, once known.
    fn upload_url(&self) -> Option<&str>;

    /// A request that deletes the partial upload after an abort, if the server has one.
    fn termination_request(&self) -> Option<HttpRequest>;

    /// The checksum algorithm the server verifies on every chunk, if any.
    fn verified_checksum(&self) -> Option<&'static str>;

    /// Whether a refusal with `status` means the credentials expired, so that fresh headers
    /// (`headers({ refresh: true })`) may help. 401 everywhere; tus and range add 403.
    fn is_auth_failure(&self, status: u16) -> bool {
        status == 401
    }

    /// What to store to continue this upload after a reload (the tus upload URL, the range
    /// session URI), once known; `None` where the protocol cannot resume.
    fn resume_url(&self) -> Option<&str> {
        None
    }

    /// When this upload continued one the server already held part of: how many bytes it
    /// held at the start (known once the server answered).
    fn resumed_from(&self) -> Option<u64> {
        None
    }

    /// Whether the server turned down the upload it was asked to continue (unknown, gone, or
    /// not this file), so that the stored record must go; the upload then started afresh.
    fn resume_refused(&self) -> bool {
        false
    }

    /// The server refused the credentials for good (again after fresh ones, or fixed ones)
    /// while the upload to continue was being looked up: give that upload up and start
    /// afresh, where this protocol can (tus: a new upload; another user's upload, say).
    /// False: the refusal ends the upload with `unauthorized`.
    fn abandon_resume(&mut self) -> bool {
        false
    }
}

/// The error for a status a protocol did not expect, retryable when the status is transient.
pub fn status_error(request: &HttpRequest, response: &HttpResponse) -> UploadError {
    status_error_with(request, response, is_transient_status(response.status))
}

/// Like [`status_error`], with the protocol deciding whether a retry may help.
pub fn status_error_with(
    request: &HttpRequest,
    response: &HttpResponse,
    retryable: bool,
) -> UploadError {
    UploadError::HttpStatus {
        method: request.method,
        purpose: request.purpose,
        status: response.status,
        retryable,
        retry_after: response.header("Retry-After").and_then(parse_retry_after),
        expired_url: false,
    }
}

/// [`status_error_with`] for a request to a presigned URL: the error says whether the
/// store refused it as expired, so that a caller able to get a fresh URL asks for one.
pub fn presigned_status_error(
    request: &HttpRequest,
    response: &HttpResponse,
    retryable: bool,
) -> UploadError {
    let mut error = status_error_with(request, response, retryable);
    if let UploadError::HttpStatus { expired_url, .. } = &mut error {
        *expired_url = is_expired_presigned_url(response);
    }
    error
}

/// Whether a store refused a presigned URL because it expired: AWS answers 403
/// `AccessDenied` ("Request has expired"), Garage 400 `InvalidRequest` ("Date is too old").
pub fn is_expired_presigned_url(response: &HttpResponse) -> bool {
    let says_expired = || {
        let body = response.body.to_ascii_lowercase();
        find_bytes(&body, "expired").is_some() || find_bytes(&body, "too old").is_some()
    };
    response.status == 403
        || (response.status == 400
            && s3_error_code(&response.body) == Some("InvalidRequest")
            && says_expired())
}

/// The `<Code>` of an S3 error document, if `body` is one.
pub fn s3_error_code(body: &str) -> Option<&str> {
    let start = find_bytes(body, "<Code>")? + "<Code>".len();
    let rest = body.get(start..)?;
    Some(rest.get(..find_bytes(rest, "</Code>")?)?.trim())
}

/// Where `needle` first occurs in `haystack`. For the few short searches in error bodies:
/// std's `str::find` with a `&str` pattern brings its two-way searcher into the wasm.
fn find_bytes(haystack: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|window| window == needle.as_bytes())
}

/// A URL without its query and fragment: presigned URLs and session URIs carry their
/// credentials there, and those never go into results, messages or logs.
pub fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// The request a response answers: what a protocol noted as in flight.
pub fn answered<T>(in_flight: &mut Option<T>) -> Result<T, UploadError> {
    in_flight
        .take()
        .ok_or_else(|| UploadError::protocol("a response arrived with no request in flight"))
}

/// A protocol error naming the request whose response was wrong.
pub fn bad_response(method: Method, purpose: &str, what: &str) -> UploadError {
    UploadError::protocol(format!("the response to {method} ({purpose}) {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_bytes_is_str_find_for_the_searches_made() {
        for (haystack, needle) in [
            ("bad request: date is too old", "too old"),
            ("token expired", "expired"),
            ("expire", "expired"),
            ("", "x"),
            ("abc", ""),
            ("ünïcödé <Code>X</Code>", "<Code>"),
            ("<Code><Code>", "<Code>"),
        ] {
            assert_eq!(
                find_bytes(haystack, needle),
                haystack.find(needle),
                "{haystack:?} / {needle:?}"
            );
        }
    }

    #[test]
    fn s3_error_code_reads_the_code_or_nothing() {
        let doc = "<?xml?><Error><Code> InvalidDigest </Code><Message>é</Message></Error>";
        assert_eq!(s3_error_code(doc), Some("InvalidDigest"));
        assert_eq!(s3_error_code("<Error><Code>Open"), None);
        assert_eq!(s3_error_code("not xml at all"), None);
        assert_eq!(s3_error_code("</Code><Code>Late</Code>"), Some("Late"));
    }
}
