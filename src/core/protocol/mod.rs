//! Upload protocols as pure state machines.
//!
//! A protocol never performs I/O. The engine asks it for the [`Step`] to take, performs it,
//! and feeds the response back. To add a protocol, write a type implementing [`Protocol`]
//! in a new file here, and register it where `crate::web::options` picks the protocol by
//! name; the engine, hashing, retries and progress come for free.

pub mod tus;

use crate::core::chunker::ChunkPlan;
use crate::core::digest::ChunkDigest;
use crate::core::error::UploadError;
use crate::core::http::{HttpRequest, HttpResponse, Method};
use crate::core::retry::{is_transient_status, parse_retry_after};

/// What the engine should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this body-less request and hand the response to [`Protocol::handle_response`].
    Send(HttpRequest),
    /// Read and hash the file bytes `offset..offset + length`, then send the request
    /// [`Protocol::chunk_request`] builds for them.
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

    /// The request that sends a chunk whose bytes have been read and hashed.
    fn chunk_request(&mut self, chunk: &ChunkDigest) -> HttpRequest;

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
    }
}

/// A protocol error naming the request whose response was wrong.
pub fn bad_response(method: Method, purpose: &str, what: &str) -> UploadError {
    UploadError::protocol(format!("the response to {method} ({purpose}) {what}"))
}
