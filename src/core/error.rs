//! The one error type of chunkup, with the stable `code` that JavaScript callers match on.
//!
//! Every failure, wherever it starts (bad options, an HTTP status, a dropped connection, a
//! file that cannot be read), becomes an [`UploadError`]. Messages are written for a person
//! and never contain a header value, a token or a URL query string, because widgets tend to
//! show or log them.

use thiserror::Error;

use crate::core::http::Method;

/// When a server asked us to wait before retrying (`Retry-After`), in either of its forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: 120`
    Seconds(u64),
    /// `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`.
    At {
        /// The date as milliseconds since the Unix epoch.
        epoch_ms: u64,
    },
}

/// Everything that can make an upload fail.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum UploadError {
    /// The caller passed something unusable; no request was sent.
    #[error("{0}")]
    InvalidInput(String),

    /// The server answered with a status the protocol does not accept at this point.
    #[error("the server answered {method} ({purpose}) with HTTP {status}")]
    HttpStatus {
        /// The request's method.
        method: Method,
        /// What the request was for.
        purpose: &'static str,
        /// The HTTP status.
        status: u16,
        /// Whether the status is worth a retry.
        retryable: bool,
        /// How long the server asked us to wait, if it did.
        retry_after: Option<RetryAfter>,
        /// The refusal says a presigned URL expired (AWS 403; Garage 400 `InvalidRequest`
        /// "Date is too old"): a fresh URL may succeed where this one cannot.
        expired_url: bool,
    },

    /// The server said the bytes it received do not match the checksum we sent (tus 460).
    #[error("the server received the chunk at byte {offset} corrupted (checksum mismatch, HTTP {status})")]
    ChecksumMismatch {
        /// Where the refused chunk starts.
        offset: u64,
        /// The HTTP status (460 for tus).
        status: u16,
    },

    /// The request never got an HTTP answer: offline, DNS, connection reset, CORS.
    #[error("network error during {method} ({purpose}): {detail}")]
    Network {
        /// The request's method.
        method: Method,
        /// What the request was for.
        purpose: &'static str,
        /// The browser's own words ("Failed to fetch").
        detail: String,
    },

    /// No answer arrived within `timeoutMs`.
    #[error("{method} ({purpose}) got no answer within {timeout_ms} ms")]
    Timeout {
        /// The request's method.
        method: Method,
        /// What the request was for.
        purpose: &'static str,
        /// The limit that passed.
        timeout_ms: u32,
    },

    /// Retryable failures kept happening without the server's offset moving.
    #[error("gave up after {attempts} retries without progress; last error: {last}")]
    RetriesExhausted {
        /// Retries made in a row before giving up.
        attempts: u32,
        /// The last failure.
        last: Box<UploadError>,
    },

    /// The caller's AbortSignal fired.
    #[error("the upload was aborted")]
    Aborted,

    /// The file could not be read (deleted, changed on disk, permission revoked).
    #[error("could not read the file: {0}")]
    ReadFailed(String),

    /// The caller's `headers` callback threw or returned something that is not a header map.
    #[error("the headers callback failed: {0}")]
    HeadersFailed(String),

    /// One of the caller's `s3` hooks threw, rejected or answered with something unusable.
    /// A throw or rejection is retried (the hooks call the widget's backend over the
    /// network); an unusable answer is not.
    #[error("{message}")]
    HookFailed {
        /// What went wrong, naming the hook (never its arguments or answer).
        message: String,
        /// Whether trying again may help.
        retryable: bool,
    },

    /// The server refused the credentials twice in a row for the same request, the second
    /// time right after `headers({ refresh: true })` supplied fresh ones (or the headers
    /// are fixed, so nothing fresher could be had).
    #[error("the server refused the credentials (HTTP {status}), also after asking headers() for fresh ones")]
    Unauthorized {
        /// The HTTP status (401, or 403 for tus and range).
        status: u16,
    },

    /// The server broke the protocol (missing header, impossible offset, bad Location).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// chunkup's Worker stopped while it ran the call (it crashed, or could not answer).
    /// The next call starts a new one; an upload continues from its resume record.
    #[error("chunkup's Worker stopped: {0}")]
    WorkerFailed(String),

    /// A web-messaging attachment was refused, by the session's rules or by the server;
    /// the message is written for the customer.
    #[error("{message}")]
    Attachment {
        /// The stable code (`file_type_invalid`, `session_expired`, ...).
        code: &'static str,
        /// The guest API's own error code (4001...5000), when the server sent one.
        server_code: Option<u32>,
        /// Words a customer understands.
        message: String,
    },
}

impl UploadError {
    /// The stable, machine-readable code exposed to JavaScript as `error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            UploadError::InvalidInput(_) => "invalid_input",
            UploadError::HttpStatus { .. } => "http_status",
            UploadError::ChecksumMismatch { .. } => "checksum_mismatch",
            UploadError::Network { .. } => "network",
            UploadError::Timeout { .. } => "timeout",
            UploadError::RetriesExhausted { .. } => "retries_exhausted",
            UploadError::Aborted => "aborted",
            UploadError::ReadFailed(_) => "read_failed",
            UploadError::HeadersFailed(_) => "headers_failed",
            UploadError::HookFailed { .. } => "hook_failed",
            UploadError::Unauthorized { .. } => "unauthorized",
            UploadError::Protocol(_) => "protocol",
            UploadError::WorkerFailed(_) => "worker_failed",
            UploadError::Attachment { code, .. } => code,
        }
    }

    /// The HTTP status behind this error, if there is one (for `retries_exhausted`, the last).
    pub fn status(&self) -> Option<u16> {
        match self {
            UploadError::HttpStatus { status, .. }
            | UploadError::ChecksumMismatch { status, .. }
            | UploadError::Unauthorized { status } => Some(*status),
            UploadError::RetriesExhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    /// Whether this is a store's refusal of an expired presigned URL.
    pub fn is_expired_url(&self) -> bool {
        match self {
            UploadError::HttpStatus { expired_url, .. } => *expired_url,
            UploadError::RetriesExhausted { last, .. } => last.is_expired_url(),
            _ => false,
        }
    }

    /// Whether trying the same thing again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            UploadError::HttpStatus { retryable, .. }
            | UploadError::HookFailed { retryable, .. } => *retryable,
            UploadError::ChecksumMismatch { .. }
            | UploadError::Network { .. }
            | UploadError::Timeout { .. }
            | UploadError::WorkerFailed(_) => true,
            // Worth another go later (the words say so); the flow itself already retried.
            UploadError::Attachment { code, .. } => matches!(
                *code,
                "too_many_requests"
                    | "no_response"
                    | "attachment_expired"
                    | "attachment_not_found"
                    | "attachment_not_uploaded"
                    | "unexpected"
            ),
            _ => false,
        }
    }

    /// The error a retry loop wrapped, if any.
    pub fn cause(&self) -> Option<&UploadError> {
        match self {
            UploadError::RetriesExhausted { last, .. } => Some(last),
            _ => None,
        }
    }

    /// Shorthand for [`UploadError::InvalidInput`].
    pub fn invalid(message: impl Into<String>) -> Self {
        UploadError::InvalidInput(message.into())
    }

    /// Shorthand for [`UploadError::Protocol`].
    pub fn protocol(message: impl Into<String>) -> Self {
        UploadError::Protocol(message.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let status = UploadError::HttpStatus {
            method: Method::Patch,
            purpose: "upload chunk",
            status: 503,
            retryable: true,
            retry_after: None,
            expired_url: false,
        };
        assert_eq!(status.code(), "http_status");
        assert_eq!(status.status(), Some(503));
        assert!(status.is_retryable());
        let exhausted = UploadError::RetriesExhausted {
            attempts: 3,
            last: Box::new(status),
        };
        assert_eq!(exhausted.code(), "retries_exhausted");
        assert_eq!(exhausted.status(), Some(503));
        assert!(!exhausted.is_retryable());
        assert_eq!(
            exhausted.cause().map(UploadError::code),
            Some("http_status")
        );
        assert_eq!(
            exhausted.to_string(),
            "gave up after 3 retries without progress; last error: the server answered PATCH (upload chunk) with HTTP 503"
        );
        assert_eq!(UploadError::Aborted.code(), "aborted");
        assert_eq!(UploadError::invalid("x").code(), "invalid_input");
        assert_eq!(UploadError::protocol("x").code(), "protocol");
        let stopped = UploadError::WorkerFailed("out of memory".into());
        assert_eq!(stopped.code(), "worker_failed");
        assert!(stopped.is_retryable());
        assert_eq!(
            stopped.to_string(),
            "chunkup's Worker stopped: out of memory"
        );
        assert_eq!(UploadError::ReadFailed("x".into()).code(), "read_failed");
        assert_eq!(
            UploadError::HeadersFailed("x".into()).code(),
            "headers_failed"
        );
        let refused = UploadError::Unauthorized { status: 401 };
        assert_eq!(
            (refused.code(), refused.status(), refused.is_retryable()),
            ("unauthorized", Some(401), false)
        );
        let mismatch = UploadError::ChecksumMismatch {
            offset: 2,
            status: 460,
        };
        assert_eq!(mismatch.code(), "checksum_mismatch");
        assert!(mismatch.is_retryable());
    }
}
