//! tus 1.0.0 (<https://tus.io/protocols/resumable-upload>): core, creation, checksum and
//! termination, as a state machine.
//!
//! ```text
//! Discover ──OPTIONS──▶ Create ──POST──▶ Upload ──PATCH…──▶ (Verify ──HEAD──▶) Done
//!     │                   ▲                ▲   │ failure
//!     └─▶ Resume ──HEAD───┴─(unknown)      └───┴──HEAD── Resync
//!           └──(known: its offset)──▶ Upload
//! ```
//!
//! OPTIONS tells which extensions the server has. An upload to continue (after a reload, or
//! `uploadUrl`) is asked its offset with HEAD; one the server no longer knows (404, 410, an
//! offset or length that cannot be this file's) is dropped and a new one created. Where
//! the server verifies no checksum, a final HEAD confirms that it holds the whole file
//! before the upload counts as done. Chunks carry
//! `Upload-Checksum: sha256 <base64>` when the server lists sha256 in
//! `Tus-Checksum-Algorithm`; the server then refuses a corrupted chunk with 460 and keeps
//! nothing of it. Without a checksum a server may keep part of a PATCH body that broke off,
//! which is why every retry starts with HEAD to learn the real offset.

use crate::core::chunker::ChunkPlan;
use crate::core::digest::Sha256Bytes;
use crate::core::encoding::base64;
use crate::core::error::UploadError;
use crate::core::http::{HttpRequest, HttpResponse, Method};
use crate::core::protocol::{
    answered, bad_response, status_error, status_error_with, Protocol, Step,
};
use crate::core::url::resolve;

const TUS_VERSION: &str = "1.0.0";
const TUS_RESUMABLE: &str = "Tus-Resumable";

/// What the server's OPTIONS answer said it supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `Tus-Extension`.
    pub extensions: Vec<String>,
    /// `Tus-Checksum-Algorithm`, lower-cased.
    pub checksum_algorithms: Vec<String>,
    /// `Tus-Max-Size`.
    pub max_size: Option<u64>,
    /// False when the server did not expose `Tus-Extension` (often a CORS misconfiguration):
    /// then creation is simply tried.
    pub advertised: bool,
}

impl Capabilities {
    /// Reads the headers of an OPTIONS response.
    pub fn from_response(response: &HttpResponse) -> Result<Self, UploadError> {
        if let Some(versions) = response.header("Tus-Version") {
            if !split_list(versions).any(|v| v == TUS_VERSION) {
                return Err(bad_response(
                    Method::Options,
                    "discover server",
                    "lists no tus version 1.0.0 in Tus-Version",
                ));
            }
        }
        let extensions = response.header("Tus-Extension");
        Ok(Capabilities {
            advertised: extensions.is_some(),
            extensions: extensions
                .map(split_list)
                .into_iter()
                .flatten()
                .map(str::to_owned)
                .collect(),
            checksum_algorithms: response
                .header("Tus-Checksum-Algorithm")
                .map(split_list)
                .into_iter()
                .flatten()
                .map(str::to_ascii_lowercase)
                .collect(),
            max_size: response
                .u64_header("Tus-Max-Size")
                .map_err(|e| bad_response(Method::Options, "discover server", &e))?,
        })
    }

    /// Whether the server lists an extension.
    pub fn has(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| e == extension)
    }

    /// Whether chunks can be sent with a SHA-256 `Upload-Checksum`.
    pub fn verifies_sha256(&self) -> bool {
        self.has("checksum") && self.checksum_algorithms.iter().any(|a| a == "sha256")
    }
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Encodes `Upload-Metadata`: `key base64(value)` pairs joined by commas.
pub fn encode_metadata(pairs: &[(String, String)]) -> String {
    // Written out rather than collected and joined: the crate's only join of Strings, and
    // its code in the wasm is larger than this loop.
    let mut header = String::new();
    for (key, value) in pairs {
        if !header.is_empty() {
            header.push(',');
        }
        header.push_str(key);
        if !value.is_empty() {
            header.push(' ');
            header.push_str(&base64(value.as_bytes()));
        }
    }
    header
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Discover,
    Resume,
    Create,
    Resync,
    Upload,
    Verify,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum InFlight {
    Options(HttpRequest),
    Resume(HttpRequest),
    Create(HttpRequest),
    Head(HttpRequest),
    Patch { request: HttpRequest, end: u64 },
}

/// A tus 1.0 upload of one file.
#[derive(Debug, Clone)]
pub struct TusUpload {
    endpoint: String,
    plan: ChunkPlan,
    metadata: Vec<(String, String)>,
    capabilities: Option<Capabilities>,
    upload_url: Option<String>,
    offset: u64,
    /// The end of the furthest PATCH sent (or the offset a resumed upload was found at): a
    /// HEAD claiming more would pass bytes never sent for stored.
    furthest_sent: u64,
    state: State,
    in_flight: Option<InFlight>,
    /// An upload to continue rather than create, until the server has answered about it.
    resume_candidate: Option<String>,
    resumed_from: Option<u64>,
    resume_refused: bool,
    /// The final HEAD (no server checksum) confirmed the whole file.
    end_confirmed: bool,
}

impl TusUpload {
    /// An upload of `size` bytes to the creation URL `endpoint` (absolute).
    pub fn new(
        endpoint: String,
        size: u64,
        chunk_size: u64,
        metadata: Vec<(String, String)>,
    ) -> Self {
        TusUpload {
            endpoint,
            plan: ChunkPlan::new(size, chunk_size),
            metadata,
            capabilities: None,
            upload_url: None,
            offset: 0,
            furthest_sent: 0,
            state: State::Discover,
            in_flight: None,
            resume_candidate: None,
            resumed_from: None,
            resume_refused: false,
            end_confirmed: false,
        }
    }

    /// Continues the upload at `url` (absolute) if the server still holds it, instead of
    /// creating one.
    pub fn resuming(mut self, url: Option<String>) -> Self {
        self.resume_candidate = url;
        self
    }

    fn send(&mut self, request: HttpRequest, wrap: fn(HttpRequest) -> InFlight) -> Step {
        self.in_flight = Some(wrap(request.clone()));
        Step::Send(request)
    }

    fn url(&self) -> &str {
        self.upload_url.as_deref().unwrap_or(&self.endpoint)
    }

    fn on_options(
        &mut self,
        request: &HttpRequest,
        response: &HttpResponse,
    ) -> Result<(), UploadError> {
        if !response.is_success() {
            return Err(status_error(request, response));
        }
        let caps = Capabilities::from_response(response)?;
        if caps.advertised && !caps.has("creation") {
            return Err(UploadError::protocol(
                "the tus server does not offer the creation extension, so no upload can be started",
            ));
        }
        if let Some(max) = caps.max_size.filter(|max| self.plan.size > *max) {
            return Err(UploadError::invalid(format!(
                "the file is {} bytes but the server accepts at most {max}",
                self.plan.size
            )));
        }
        self.capabilities = Some(caps);
        self.state = if self.resume_candidate.is_some() {
            State::Resume
        } else {
            State::Create
        };
        Ok(())
    }

    /// The answer about the upload to continue: its offset, or that it is gone.
    fn on_resume(
        &mut self,
        request: &HttpRequest,
        response: &HttpResponse,
    ) -> Result<(), UploadError> {
        let known = match response.status {
            // Refused credentials (401, 403: headers() is asked for fresh ones; refused
            // again, the engine calls abandon_resume), a timeout, an upload locked by
            // another client, a rate limit; and every 5xx. Retried or not as usual.
            401 | 403 | 408 | 423 | 429 => return Err(status_error(request, response)),
            // Unknown or terminated (tus: 404, 410), or any other refusal of the upload
            // itself (a proxy's 400): start afresh, rather than fail on this upload until
            // its record expires.
            400..=499 => None,
            _ if !response.is_success() => return Err(status_error(request, response)),
            _ => {
                let length_matches = match response.u64_header("Upload-Length") {
                    Ok(Some(length)) => length == self.plan.size,
                    // Deferred length, or none exposed: the offset check must do.
                    Ok(None) => true,
                    Err(_) => false,
                };
                let offset = response.u64_header("Upload-Offset").ok().flatten();
                offset.filter(|o| length_matches && *o <= self.plan.size)
            }
        };
        match known {
            Some(offset) => {
                self.upload_url = self.resume_candidate.take();
                self.offset = offset;
                self.furthest_sent = offset;
                self.resumed_from = Some(offset);
                self.state = State::Upload;
            }
            None => {
                self.resume_candidate = None;
                self.resume_refused = true;
                self.state = State::Create;
            }
        }
        Ok(())
    }

    fn on_create(
        &mut self,
        request: &HttpRequest,
        response: &HttpResponse,
    ) -> Result<(), UploadError> {
        if response.status != 201 {
            return Err(status_error(request, response));
        }
        let location = response
            .header("Location")
            .filter(|l| !l.is_empty())
            .ok_or_else(|| {
                bad_response(
                    request.method,
                    request.purpose,
                    "has no Location header (is it exposed by CORS?)",
                )
            })?;
        let url = resolve(&request.url, location)
            .filter(|url| crate::core::options::check_endpoint(url).is_ok())
            .ok_or_else(|| {
                bad_response(
                    request.method,
                    request.purpose,
                    "has a Location that is not a URL",
                )
            })?;
        self.upload_url = Some(url);
        self.offset = 0;
        self.state = State::Upload;
        Ok(())
    }

    /// The answer's `Upload-Offset`: present, within the file, and no further than the
    /// `sent` bytes that could have reached the server.
    fn read_offset(
        &self,
        request: &HttpRequest,
        response: &HttpResponse,
        sent: u64,
    ) -> Result<u64, UploadError> {
        let offset = response
            .u64_header("Upload-Offset")
            .map_err(|e| bad_response(request.method, request.purpose, &e))?
            .ok_or_else(|| {
                bad_response(
                    request.method,
                    request.purpose,
                    "has no Upload-Offset header (is it exposed by CORS?)",
                )
            })?;
        if offset > self.plan.size {
            return Err(bad_response(
                request.method,
                request.purpose,
                &format!(
                    "claims offset {offset}, beyond the file's {} bytes",
                    self.plan.size
                ),
            ));
        }
        if offset > sent {
            return Err(bad_response(
                request.method,
                request.purpose,
                &format!("claims offset {offset}, beyond the {sent} bytes sent"),
            ));
        }
        Ok(offset)
    }

    fn on_head(
        &mut self,
        request: &HttpRequest,
        response: &HttpResponse,
    ) -> Result<(), UploadError> {
        if !response.is_success() {
            return Err(status_error(request, response));
        }
        if let Ok(Some(length)) = response.u64_header("Upload-Length") {
            if length != self.plan.size {
                return Err(bad_response(
                    request.method,
                    request.purpose,
                    &format!("says the upload is {length} bytes, not {}", self.plan.size),
                ));
            }
        }
        self.offset = self.read_offset(request, response, self.furthest_sent)?;
        if self.state == State::Verify && self.offset == self.plan.size {
            self.end_confirmed = true;
        }
        // An offset short of the end after Verify went back: the engine reports it.
        self.state = State::Upload;
        Ok(())
    }

    fn on_patch(
        &mut self,
        request: &HttpRequest,
        end: u64,
        response: &HttpResponse,
    ) -> Result<(), UploadError> {
        match response.status {
            200 | 204 => {}
            460 => {
                return Err(UploadError::ChecksumMismatch {
                    offset: end - request_len(request),
                    status: 460,
                })
            }
            // 409: our offset and the server's disagree (an earlier PATCH landed after all,
            // or part of one did). HEAD sorts it out, so it is worth a retry.
            409 => return Err(status_error_with(request, response, true)),
            _ => return Err(status_error(request, response)),
        }
        self.offset = self.read_offset(request, response, end)?;
        Ok(())
    }
}

fn request_len(request: &HttpRequest) -> u64 {
    match request.body {
        crate::core::http::Body::FileRange { start, end } => end - start,
        crate::core::http::Body::Empty => 0,
    }
}

impl Protocol for TusUpload {
    fn name(&self) -> &'static str {
        "tus"
    }

    fn plan(&self) -> ChunkPlan {
        self.plan
    }

    fn next_step(&mut self) -> Step {
        match self.state {
            State::Discover => {
                let request = HttpRequest::new(Method::Options, &self.endpoint, "discover server");
                self.send(request, InFlight::Options)
            }
            State::Create => {
                let mut request = HttpRequest::new(Method::Post, &self.endpoint, "create upload")
                    .header(TUS_RESUMABLE, TUS_VERSION)
                    .header("Upload-Length", self.plan.size.to_string());
                if !self.metadata.is_empty() {
                    request = request.header("Upload-Metadata", encode_metadata(&self.metadata));
                }
                self.send(request, InFlight::Create)
            }
            State::Resync => {
                let request = HttpRequest::new(Method::Head, self.url(), "check upload offset")
                    .header(TUS_RESUMABLE, TUS_VERSION);
                self.send(request, InFlight::Head)
            }
            State::Resume => {
                let url = self.resume_candidate.clone().unwrap_or_default();
                let request = HttpRequest::new(Method::Head, &url, "check upload to continue")
                    .header(TUS_RESUMABLE, TUS_VERSION);
                self.send(request, InFlight::Resume)
            }
            // Trust, then verify: without a checksum the server's word that each PATCH
            // landed is all there is, so ask once more that it holds the whole file.
            State::Upload
                if self.offset >= self.plan.size
                    && self.verified_checksum().is_none()
                    && !self.end_confirmed =>
            {
                self.state = State::Verify;
                self.next_step()
            }
            State::Verify => {
                let request = HttpRequest::new(Method::Head, self.url(), "confirm upload complete")
                    .header(TUS_RESUMABLE, TUS_VERSION);
                self.send(request, InFlight::Head)
            }
            State::Upload if self.offset >= self.plan.size => {
                self.state = State::Done;
                Step::Done
            }
            State::Upload => Step::UploadChunk {
                offset: self.offset,
                length: self.plan.chunk_len_at(self.offset),
            },
            State::Done => Step::Done,
        }
    }

    fn digest_before_send(&self) -> bool {
        self.verified_checksum().is_some()
    }

    fn chunk_request(
        &mut self,
        offset: u64,
        length: u64,
        sha256: Option<&Sha256Bytes>,
    ) -> HttpRequest {
        let end = offset + length;
        let mut request = HttpRequest::new(Method::Patch, self.url(), "upload chunk")
            .header(TUS_RESUMABLE, TUS_VERSION)
            .header("Upload-Offset", offset.to_string())
            .header("Content-Type", "application/offset+octet-stream")
            .file_range(offset, end);
        if let (Some(_), Some(sha256)) = (self.verified_checksum(), sha256) {
            request = request.header("Upload-Checksum", format!("sha256 {}", base64(sha256)));
        }
        self.furthest_sent = self.furthest_sent.max(end);
        self.in_flight = Some(InFlight::Patch {
            request: request.clone(),
            end,
        });
        request
    }

    fn handle_response(&mut self, response: &HttpResponse) -> Result<(), UploadError> {
        let in_flight = answered(&mut self.in_flight)?;
        if response
            .header(TUS_RESUMABLE)
            .is_some_and(|v| v != TUS_VERSION)
            && response.status == 412
        {
            return Err(UploadError::protocol(
                "the server does not speak tus 1.0.0 (HTTP 412)",
            ));
        }
        match in_flight {
            InFlight::Options(request) => self.on_options(&request, response),
            InFlight::Resume(request) => self.on_resume(&request, response),
            InFlight::Create(request) => self.on_create(&request, response),
            InFlight::Head(request) => self.on_head(&request, response),
            InFlight::Patch { request, end } => self.on_patch(&request, end, response),
        }
    }

    fn recover(&mut self) {
        self.in_flight = None;
        self.state = if self.upload_url.is_some() {
            State::Resync
        } else if self.capabilities.is_none() {
            State::Discover
        } else if self.resume_candidate.is_some() {
            State::Resume
        } else {
            State::Create
        };
    }

    fn acknowledged_offset(&self) -> u64 {
        self.offset
    }

    fn upload_url(&self) -> Option<&str> {
        self.upload_url.as_deref()
    }

    fn termination_request(&self) -> Option<HttpRequest> {
        let url = self.upload_url.as_deref()?;
        let caps = self.capabilities.as_ref()?;
        caps.has("termination").then(|| {
            HttpRequest::new(Method::Delete, url, "terminate upload")
                .header(TUS_RESUMABLE, TUS_VERSION)
        })
    }

    fn verified_checksum(&self) -> Option<&'static str> {
        self.capabilities
            .as_ref()
            .filter(|c| c.verifies_sha256())
            .map(|_| "sha256")
    }

    fn is_auth_failure(&self, status: u16) -> bool {
        matches!(status, 401 | 403)
    }

    fn resume_url(&self) -> Option<&str> {
        self.upload_url.as_deref()
    }

    fn resumed_from(&self) -> Option<u64> {
        self.resumed_from
    }

    fn resume_refused(&self) -> bool {
        self.resume_refused
    }

    fn abandon_resume(&mut self) -> bool {
        if self.state != State::Resume || self.resume_candidate.is_none() {
            return false;
        }
        self.resume_candidate = None;
        self.resume_refused = true;
        self.in_flight = None;
        self.state = State::Create;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::digest::{sha256, ChunkDigest};

    const ENDPOINT: &str = "https://up.example.com/files/";

    fn options_response(extensions: &str, algorithms: &str) -> HttpResponse {
        HttpResponse::new(
            204,
            [
                ("Tus-Resumable", "1.0.0"),
                ("Tus-Version", "1.0.0,0.2.2"),
                ("Tus-Extension", extensions),
                ("Tus-Checksum-Algorithm", algorithms),
                ("Tus-Max-Size", "1000000"),
            ],
        )
    }

    fn created(size: u64, chunk: u64, extensions: &str) -> TusUpload {
        let mut t = TusUpload::new(
            ENDPOINT.into(),
            size,
            chunk,
            vec![("filename".into(), "a.txt".into())],
        );
        assert!(matches!(t.next_step(), Step::Send(r) if r.method == Method::Options));
        t.handle_response(&options_response(extensions, "sha1,sha256"))
            .unwrap();
        let Step::Send(post) = t.next_step() else {
            panic!("expected POST")
        };
        assert_eq!(post.method, Method::Post);
        assert_eq!(
            post.header_value("Upload-Length"),
            Some(size.to_string().as_str())
        );
        assert_eq!(
            post.header_value("Upload-Metadata"),
            Some("filename YS50eHQ=")
        );
        assert_eq!(post.header_value("Tus-Resumable"), Some("1.0.0"));
        t.handle_response(&HttpResponse::new(201, [("Location", "/files/abc")]))
            .unwrap();
        assert_eq!(t.upload_url(), Some("https://up.example.com/files/abc"));
        t
    }

    #[test]
    fn parses_capabilities() {
        let caps = Capabilities::from_response(&options_response(
            "creation, termination,checksum",
            "SHA1, sha256",
        ))
        .unwrap();
        assert!(caps.has("creation") && caps.has("termination") && caps.verifies_sha256());
        assert_eq!(caps.max_size, Some(1_000_000));
        let none =
            Capabilities::from_response(&HttpResponse::new(204, [("Tus-Resumable", "1.0.0")]))
                .unwrap();
        assert!(!none.advertised && !none.verifies_sha256());
        let old = HttpResponse::new(204, [("Tus-Version", "0.2.2")]);
        assert_eq!(
            Capabilities::from_response(&old).unwrap_err().code(),
            "protocol"
        );
        let bad_max = HttpResponse::new(204, [("Tus-Max-Size", "lots")]);
        assert_eq!(
            Capabilities::from_response(&bad_max).unwrap_err().code(),
            "protocol"
        );
    }

    #[test]
    fn metadata_encoding() {
        let pairs = vec![
            ("filename".to_string(), "résumé.pdf".to_string()),
            ("empty".to_string(), String::new()),
            ("conversationId".to_string(), "abc".to_string()),
        ];
        assert_eq!(
            encode_metadata(&pairs),
            "filename csOpc3Vtw6kucGRm,empty,conversationId YWJj"
        );
    }

    #[test]
    fn full_happy_path_with_checksums() {
        let mut t = created(25, 10, "creation,checksum,termination");
        assert_eq!(t.verified_checksum(), Some("sha256"));
        let data: Vec<u8> = (0..25).collect();
        let mut offset = 0;
        while let Step::UploadChunk { offset: o, length } = t.next_step() {
            assert_eq!(o, offset);
            let chunk = ChunkDigest {
                offset: o,
                length,
                sha256: sha256(&data[o as usize..(o + length) as usize]),
            };
            let patch = t.chunk_request(chunk.offset, chunk.length, Some(&chunk.sha256));
            assert_eq!(patch.method, Method::Patch);
            assert_eq!(patch.url, "https://up.example.com/files/abc");
            assert_eq!(
                patch.header_value("Upload-Offset"),
                Some(o.to_string().as_str())
            );
            assert_eq!(
                patch.header_value("Content-Type"),
                Some("application/offset+octet-stream")
            );
            assert_eq!(
                patch.header_value("Upload-Checksum"),
                Some(format!("sha256 {}", base64(&chunk.sha256)).as_str())
            );
            assert_eq!(
                patch.body,
                crate::core::http::Body::FileRange {
                    start: o,
                    end: o + length
                }
            );
            offset = o + length;
            t.handle_response(&HttpResponse::new(
                204,
                [("Upload-Offset", offset.to_string())],
            ))
            .unwrap();
        }
        assert_eq!(offset, 25);
        assert_eq!(t.next_step(), Step::Done);
        let delete = t.termination_request().unwrap();
        assert_eq!(
            (delete.method, delete.url.as_str()),
            (Method::Delete, "https://up.example.com/files/abc")
        );
    }

    #[test]
    fn no_checksum_header_without_sha256_and_no_delete_without_termination() {
        let mut t = created(5, 10, "creation");
        assert_eq!(t.verified_checksum(), None);
        let chunk = ChunkDigest {
            offset: 0,
            length: 5,
            sha256: [0; 32],
        };
        assert_eq!(
            t.chunk_request(chunk.offset, chunk.length, Some(&chunk.sha256))
                .header_value("Upload-Checksum"),
            None
        );
        assert_eq!(t.termination_request(), None);
    }

    #[test]
    fn failure_resyncs_with_head() {
        let mut t = created(30, 10, "creation,checksum");
        let Step::UploadChunk {
            offset: 0,
            length: 10,
        } = t.next_step()
        else {
            panic!()
        };
        t.chunk_request(0, 10, Some(&[1; 32]));
        let err = t
            .handle_response(&HttpResponse::new(460, Vec::<(&str, &str)>::new()))
            .unwrap_err();
        assert_eq!(
            (err.code(), err.is_retryable()),
            ("checksum_mismatch", true)
        );
        t.recover();
        let Step::Send(head) = t.next_step() else {
            panic!("expected HEAD")
        };
        assert_eq!(head.method, Method::Head);
        t.handle_response(&HttpResponse::new(
            200,
            [("Upload-Offset", "7"), ("Upload-Length", "30")],
        ))
        .unwrap();
        assert_eq!(t.acknowledged_offset(), 7);
        assert_eq!(
            t.next_step(),
            Step::UploadChunk {
                offset: 7,
                length: 10
            }
        );
    }

    #[test]
    fn a_head_claiming_bytes_never_sent_is_refused() {
        let mut t = created(30, 10, "creation,checksum");
        let _ = t.next_step();
        t.chunk_request(0, 10, Some(&[1; 32]));
        t.recover();
        let Step::Send(head) = t.next_step() else {
            panic!("expected HEAD")
        };
        assert_eq!(head.method, Method::Head);
        let err = t
            .handle_response(&HttpResponse::new(
                200,
                [("Upload-Offset", "25"), ("Upload-Length", "30")],
            ))
            .unwrap_err();
        assert_eq!(err.code(), "protocol");
        assert_eq!(t.acknowledged_offset(), 0);
    }

    #[test]
    fn statuses_are_classified() {
        let mut t = created(30, 10, "creation");
        let patch = |t: &mut TusUpload, status: u16, headers: Vec<(&str, &str)>| {
            t.recover();
            let _ = t.next_step();
            t.handle_response(&HttpResponse::new(200, [("Upload-Offset", "0")]))
                .unwrap();
            let _ = t.next_step();
            t.chunk_request(0, 10, Some(&[0; 32]));
            t.handle_response(&HttpResponse::new(status, headers))
                .unwrap_err()
        };
        let e = patch(&mut t, 429, vec![("Retry-After", "3")]);
        assert!(matches!(
            e,
            UploadError::HttpStatus {
                status: 429,
                retryable: true,
                retry_after: Some(crate::core::error::RetryAfter::Seconds(3)),
                ..
            }
        ));
        assert!(patch(&mut t, 409, vec![]).is_retryable());
        assert!(patch(&mut t, 503, vec![]).is_retryable());
        assert!(!patch(&mut t, 403, vec![]).is_retryable());
        assert!(!patch(&mut t, 404, vec![]).is_retryable());
        assert_eq!(patch(&mut t, 204, vec![]).code(), "protocol");
        assert_eq!(
            patch(&mut t, 204, vec![("Upload-Offset", "11")]).code(),
            "protocol"
        );
    }

    #[test]
    fn creation_errors() {
        let mut t = TusUpload::new(ENDPOINT.into(), 2_000_000, 10, vec![]);
        let _ = t.next_step();
        let err = t
            .handle_response(&options_response("creation", ""))
            .unwrap_err();
        assert_eq!(err.code(), "invalid_input");

        let mut t = TusUpload::new(ENDPOINT.into(), 10, 10, vec![]);
        let _ = t.next_step();
        let err = t
            .handle_response(&options_response("termination", ""))
            .unwrap_err();
        assert_eq!(err.code(), "protocol");

        let mut t = TusUpload::new(ENDPOINT.into(), 10, 10, vec![]);
        let _ = t.next_step();
        t.handle_response(&HttpResponse::new(204, Vec::<(&str, &str)>::new()))
            .unwrap();
        let Step::Send(post) = t.next_step() else {
            panic!()
        };
        assert_eq!(post.header_value("Upload-Metadata"), None);
        let err = t
            .handle_response(&HttpResponse::new(201, Vec::<(&str, &str)>::new()))
            .unwrap_err();
        assert!(err.to_string().contains("no Location"));
        t.recover();
        assert!(matches!(t.next_step(), Step::Send(r) if r.method == Method::Post));
    }

    #[test]
    fn empty_file_is_done_after_creation() {
        let mut t = created(0, 10, "creation");
        // No checksum verified: the end is confirmed first.
        let Step::Send(head) = t.next_step() else {
            panic!("expected HEAD")
        };
        assert_eq!(
            (head.method, head.purpose),
            (Method::Head, "confirm upload complete")
        );
        t.handle_response(&HttpResponse::new(200, [("Upload-Offset", "0")]))
            .unwrap();
        assert_eq!(t.next_step(), Step::Done);
        let mut checked = created(0, 10, "creation,checksum");
        assert_eq!(
            checked.next_step(),
            Step::Done,
            "a verifying server needs no HEAD"
        );
    }

    #[test]
    fn the_end_is_confirmed_without_a_server_checksum() {
        let mut t = created(10, 10, "creation,termination");
        let _ = t.next_step();
        let _ = t.chunk_request(0, 10, None);
        t.handle_response(&HttpResponse::new(204, [("Upload-Offset", "10")]))
            .unwrap();
        let Step::Send(head) = t.next_step() else {
            panic!("expected HEAD")
        };
        assert_eq!(head.purpose, "confirm upload complete");
        // The server lost the end: the offset it reports is what the engine sees (and
        // refuses as an offset that went back).
        t.handle_response(&HttpResponse::new(200, [("Upload-Offset", "4")]))
            .unwrap();
        assert_eq!(t.acknowledged_offset(), 4);
        assert_eq!(
            t.next_step(),
            Step::UploadChunk {
                offset: 4,
                length: 6
            }
        );
    }

    fn resuming(size: u64, candidate: &str) -> TusUpload {
        let mut t =
            TusUpload::new(ENDPOINT.into(), size, 10, vec![]).resuming(Some(candidate.into()));
        assert!(matches!(t.next_step(), Step::Send(r) if r.method == Method::Options));
        t.handle_response(&options_response("creation,termination", "sha256"))
            .unwrap();
        t
    }

    #[test]
    fn continues_an_upload_the_server_still_holds() {
        let url = "https://up.example.com/files/abc";
        let mut t = resuming(25, url);
        let Step::Send(head) = t.next_step() else {
            panic!("expected HEAD")
        };
        assert_eq!((head.method, head.url.as_str()), (Method::Head, url));
        assert_eq!(t.resumed_from(), None);
        t.handle_response(&HttpResponse::new(
            200,
            [("Upload-Offset", "20"), ("Upload-Length", "25")],
        ))
        .unwrap();
        assert_eq!((t.resumed_from(), t.resume_refused()), (Some(20), false));
        assert_eq!(t.upload_url(), Some(url));
        assert_eq!(t.resume_url(), Some(url));
        assert_eq!(
            t.next_step(),
            Step::UploadChunk {
                offset: 20,
                length: 5
            }
        );
    }

    #[test]
    fn an_upload_the_server_no_longer_knows_is_created_afresh() {
        let unknown = [
            HttpResponse::new(404, Vec::<(&str, &str)>::new()),
            HttpResponse::new(410, Vec::<(&str, &str)>::new()),
            // Another file's upload: wrong length, or an offset beyond this file.
            HttpResponse::new(200, [("Upload-Offset", "5"), ("Upload-Length", "99")]),
            HttpResponse::new(200, [("Upload-Offset", "26")]),
            HttpResponse::new(200, Vec::<(&str, &str)>::new()),
        ];
        for response in unknown {
            let mut t = resuming(25, "https://up.example.com/files/old");
            let _ = t.next_step();
            t.handle_response(&response).unwrap();
            assert!(t.resume_refused(), "{response:?}");
            assert_eq!(t.resumed_from(), None);
            assert!(matches!(t.next_step(), Step::Send(r) if r.method == Method::Post));
        }
        // A server error is retried as usual: HEAD again.
        let mut t = resuming(25, "https://up.example.com/files/old");
        let _ = t.next_step();
        let err = t
            .handle_response(&HttpResponse::new(503, Vec::<(&str, &str)>::new()))
            .unwrap_err();
        assert!(err.is_retryable());
        t.recover();
        assert!(matches!(t.next_step(), Step::Send(r) if r.purpose == "check upload to continue"));
        assert!(t.is_auth_failure(403) && t.is_auth_failure(401) && !t.is_auth_failure(404));
    }
}
