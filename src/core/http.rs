//! A browser-free description of the HTTP requests a protocol wants sent and the responses
//! it reads back.
//!
//! A request body is never bytes in wasm memory: it is a byte range of the file, which the
//! transport turns into `file.slice(start, end)` so the browser streams it from disk.

use std::fmt;

/// The HTTP methods the upload protocols use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the names are the documentation
pub enum Method {
    Options,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// The method as it goes on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Options => "OPTIONS",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request carries as its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    Empty,
    /// The bytes `start..end` of the file being uploaded.
    FileRange {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
}

/// One request a protocol wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: String,
    /// Protocol headers. The transport adds the caller's own headers beneath them.
    pub headers: Vec<(String, String)>,
    /// Headers sent only when the caller's headers do not name them (a default
    /// `Content-Type` that a signed one must be able to replace).
    pub default_headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
    /// A few words for error messages ("create upload", "upload chunk"), never the URL.
    pub purpose: &'static str,
    /// Report the body's upload byte by byte (the browser transport then uses XHR, whose
    /// `upload.onprogress` fetch lacks).
    pub upload_progress: bool,
    /// The caller may replace the URL and headers before each attempt (a `target()`
    /// callback minting fresh presigned URLs).
    pub caller_target: bool,
}

impl HttpRequest {
    /// A request without a body.
    pub fn new(method: Method, url: impl Into<String>, purpose: &'static str) -> Self {
        HttpRequest {
            method,
            url: url.into(),
            headers: Vec::new(),
            default_headers: Vec::new(),
            body: Body::Empty,
            purpose,
            upload_progress: false,
            caller_target: false,
        }
    }

    /// Adds a header (builder style).
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// The first value of a header, looked up case-insensitively.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asks for byte-by-byte upload progress (builder style).
    pub fn with_upload_progress(mut self) -> Self {
        self.upload_progress = true;
        self
    }

    /// Sets the body to a range of the file (builder style).
    pub fn file_range(mut self, start: u64, end: u64) -> Self {
        self.body = Body::FileRange { start, end };
        self
    }
}

/// The parts of a response the protocols look at: the status, the headers, and the start
/// of an error's body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    /// The HTTP status.
    pub status: u16,
    /// Header names are stored lower-case.
    headers: Vec<(String, String)>,
    /// The start of the body of an error answer (an S3 error document names its reason
    /// there); empty for successes.
    pub body: String,
    /// Where the request went, when the caller's `target()` chose it rather than the
    /// request's own `url`.
    pub sent_to: Option<String>,
}

impl HttpResponse {
    /// A response with the given status and headers (names in any case).
    pub fn new<N: AsRef<str>, V: Into<String>>(
        status: u16,
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        HttpResponse {
            status,
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.as_ref().to_ascii_lowercase(), v.into()))
                .collect(),
            body: String::new(),
            sent_to: None,
        }
    }

    /// The same response with the start of its body.
    pub fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of a header, looked up case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    /// A header that must be a non-negative integer, or `None` when it is absent.
    pub fn u64_header(&self, name: &str) -> Result<Option<u64>, String> {
        match self.header(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("the {name} header is not a non-negative integer")),
        }
    }

    /// True for 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_case_insensitive_and_trimmed() {
        let r = HttpResponse::new(204, [("Upload-Offset", " 42 "), ("X-Other", "a")]);
        assert_eq!(r.header("upload-offset"), Some("42"));
        assert_eq!(r.u64_header("UPLOAD-OFFSET"), Ok(Some(42)));
        assert_eq!(r.u64_header("missing"), Ok(None));
        assert!(r.is_success());
    }

    #[test]
    fn bad_integer_header_is_reported_without_its_value() {
        let r = HttpResponse::new(204, [("Upload-Offset", "secret-token")]);
        let err = r.u64_header("Upload-Offset").unwrap_err();
        assert!(!err.contains("secret-token"));
    }
}
