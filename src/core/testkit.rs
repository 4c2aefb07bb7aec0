//! Native test doubles for the engine: an in-memory tus server that injects faults, a file
//! held in memory that yields pieces of a chosen size, a virtual clock, and a tiny executor.
//!
//! They let the whole upload loop (retries, rewinds, partial chunks, aborts) be exercised
//! thousands of times per second with exact assertions on what the server stored.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::core::digest::sha256;
use crate::core::encoding::base64;
use crate::core::engine::{ByteSource, Environment};
use crate::core::error::UploadError;
use crate::core::http::{Body, HttpRequest, HttpResponse, Method};
use crate::core::progress::Progress;
use crate::core::protocol::s3::Hook;
use crate::core::resume::ResumeTarget;
use crate::core::value::Value;

/// Runs a future whose awaits all complete at once (everything here is synchronous).
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("future did not complete: the test doubles never pend");
}

/// A small deterministic PRNG (xorshift64*).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `len` reproducible pseudo-random bytes.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = XorShift::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// What the fake server does to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status (and `Retry-After`, if given) instead.
    Status(u16, Option<String>),
    /// PATCH only: keep `keep` bytes of the body (only when no checksum was sent, like a
    /// real server) and then drop the connection.
    Reset { keep: u64 },
    /// PATCH only: one byte of the body arrives flipped.
    Corrupt,
    /// The server handles the request, then the connection breaks before the answer.
    LoseResponse,
    /// PATCH only: a broken server answers 204 but keeps nothing.
    AcceptNothing,
    /// The caller aborts while this request is in flight.
    Abort,
    /// The browser goes offline: the request fails without an answer, and the environment
    /// says offline until the engine waits for it to come back.
    Offline,
}

/// Decides the fault for the n-th request (0-based).
pub type FaultPlan = Box<dyn FnMut(&HttpRequest, usize) -> Option<Fault>>;

/// One upload held by the fake server.
#[derive(Debug, Clone, Default)]
pub struct StoredUpload {
    pub length: u64,
    pub data: Vec<u8>,
    pub metadata: Option<String>,
}

/// An in-memory tus 1.0 server.
pub struct FakeTusServer {
    pub extensions: &'static str,
    pub checksum_algorithms: &'static str,
    pub uploads: HashMap<String, StoredUpload>,
    pub deleted: Vec<String>,
    /// Every request seen: method and URL.
    pub log: Vec<(Method, String)>,
    /// After this PATCH succeeds, HEAD reports an offset this many bytes lower (a server
    /// that loses data).
    pub lose_bytes_after_patch: Option<u64>,
    next_id: u32,
}

impl FakeTusServer {
    pub fn new(extensions: &'static str, checksum_algorithms: &'static str) -> Self {
        FakeTusServer {
            extensions,
            checksum_algorithms,
            uploads: HashMap::new(),
            deleted: Vec::new(),
            log: Vec::new(),
            lose_bytes_after_patch: None,
            next_id: 0,
        }
    }

    fn id_of(url: &str) -> String {
        url.rsplit('/').next().unwrap_or_default().to_owned()
    }

    fn handle(
        &mut self,
        request: &HttpRequest,
        file: &[u8],
        fault: Option<Fault>,
    ) -> Result<HttpResponse, UploadError> {
        if fault == Some(Fault::LoseResponse) {
            let _ = self.handle(request, file, None);
            return Err(UploadError::Network {
                method: request.method,
                purpose: request.purpose,
                detail: "connection reset after the request was handled".into(),
            });
        }
        self.log.push((request.method, request.url.clone()));
        let empty: [(&str, String); 0] = [];
        if let Some(Fault::Status(status, retry_after)) = &fault {
            let headers: Vec<(&str, String)> = retry_after
                .iter()
                .map(|v| ("Retry-After", v.clone()))
                .collect();
            return Ok(HttpResponse::new(*status, headers));
        }
        if request.method != Method::Options
            && request.header_value("Tus-Resumable") != Some("1.0.0")
        {
            return Ok(HttpResponse::new(412, empty));
        }
        match request.method {
            Method::Options => Ok(HttpResponse::new(
                204,
                [
                    ("Tus-Version", "1.0.0".to_string()),
                    ("Tus-Extension", self.extensions.to_string()),
                    (
                        "Tus-Checksum-Algorithm",
                        self.checksum_algorithms.to_string(),
                    ),
                ],
            )),
            Method::Post => {
                let length = request
                    .header_value("Upload-Length")
                    .and_then(|v| v.parse().ok());
                let Some(length) = length else {
                    return Ok(HttpResponse::new(400, empty));
                };
                self.next_id += 1;
                let id = format!("u{}", self.next_id);
                self.uploads.insert(
                    id.clone(),
                    StoredUpload {
                        length,
                        data: Vec::new(),
                        metadata: request.header_value("Upload-Metadata").map(str::to_owned),
                    },
                );
                Ok(HttpResponse::new(
                    201,
                    [("Location", format!("/files/{id}"))],
                ))
            }
            Method::Head => {
                let lose = self.lose_bytes_after_patch.unwrap_or(0);
                match self.uploads.get(&Self::id_of(&request.url)) {
                    Some(u) => Ok(HttpResponse::new(
                        200,
                        [
                            (
                                "Upload-Offset",
                                (u.data.len() as u64).saturating_sub(lose).to_string(),
                            ),
                            ("Upload-Length", u.length.to_string()),
                        ],
                    )),
                    None => Ok(HttpResponse::new(404, empty)),
                }
            }
            Method::Patch => self.patch(request, file, fault),
            Method::Delete => {
                let id = Self::id_of(&request.url);
                self.uploads.remove(&id);
                self.deleted.push(id);
                Ok(HttpResponse::new(204, empty))
            }
            Method::Put => Ok(HttpResponse::new(405, empty)),
        }
    }

    fn patch(
        &mut self,
        request: &HttpRequest,
        file: &[u8],
        fault: Option<Fault>,
    ) -> Result<HttpResponse, UploadError> {
        let empty: [(&str, String); 0] = [];
        let Some(upload) = self.uploads.get_mut(&Self::id_of(&request.url)) else {
            return Ok(HttpResponse::new(404, empty));
        };
        let offset: Option<u64> = request
            .header_value("Upload-Offset")
            .and_then(|v| v.parse().ok());
        if offset != Some(upload.data.len() as u64) {
            return Ok(HttpResponse::new(409, empty));
        }
        let Body::FileRange { start, end } = request.body else {
            return Ok(HttpResponse::new(400, empty));
        };
        let mut body = file[start as usize..end as usize].to_vec();
        if fault == Some(Fault::Corrupt) && !body.is_empty() {
            body[0] ^= 0xff;
        }
        if fault == Some(Fault::AcceptNothing) {
            return Ok(HttpResponse::new(
                204,
                [("Upload-Offset", upload.data.len().to_string())],
            ));
        }
        let checksum = request.header_value("Upload-Checksum");
        if let Some(Fault::Reset { keep }) = fault {
            if checksum.is_none() {
                upload
                    .data
                    .extend_from_slice(&body[..keep.min(body.len() as u64) as usize]);
            }
            return Err(UploadError::Network {
                method: request.method,
                purpose: request.purpose,
                detail: "connection reset".into(),
            });
        }
        if let Some(checksum) = checksum {
            if checksum != format!("sha256 {}", base64(&sha256(&body))) {
                return Ok(HttpResponse::new(460, empty));
            }
        }
        if upload.data.len() as u64 + body.len() as u64 > upload.length {
            return Ok(HttpResponse::new(413, empty));
        }
        upload.data.extend_from_slice(&body);
        Ok(HttpResponse::new(
            204,
            [("Upload-Offset", upload.data.len().to_string())],
        ))
    }
}

/// An in-memory S3 bucket with multipart uploads, and the widget's backend's hooks over it.
#[derive(Debug, Default)]
pub struct FakeS3 {
    /// Multipart uploads in progress: upload id → (key, part number → bytes).
    pub uploads: HashMap<String, (String, std::collections::BTreeMap<u32, Vec<u8>>)>,
    /// Completed objects: key → bytes.
    pub objects: HashMap<String, Vec<u8>>,
    /// Upload ids aborted.
    pub aborted: Vec<String>,
    /// Every hook called, by name.
    pub hooks: Vec<&'static str>,
    /// Where `signPart` puts the checksum: "query", "header" or "none".
    pub placement: &'static str,
    /// `signPart` calls that give an already expired URL (counted down).
    pub expired_urls: u32,
    /// `listParts` of an upload the store does not know throws (retryably, as every throw
    /// of a hook in the browser), instead of answering null.
    pub list_parts_throws: bool,
    /// The hook during which the caller aborts the upload.
    pub abort_during: Option<&'static str>,
    /// Hooks that throw (retryably, as a backend that cannot be reached) before answering:
    /// the hook's name, counted down per call.
    pub hook_failures: Vec<(&'static str, u32)>,
    next_id: u32,
}

impl FakeS3 {
    /// A bucket whose signer puts the checksum in the URL's query.
    pub fn new() -> Self {
        FakeS3 {
            placement: "query",
            ..FakeS3::default()
        }
    }

    fn etag(bytes: &[u8]) -> String {
        format!("\"{}\"", crate::core::encoding::hex(&sha256(bytes)[..16]))
    }

    /// A hook of the widget's backend.
    pub fn hook(
        &mut self,
        hook: crate::core::protocol::s3::Hook,
        arg: &crate::core::value::Value,
    ) -> Result<crate::core::value::Value, UploadError> {
        use crate::core::protocol::s3::Hook;
        use crate::core::value::{object, Value};
        self.hooks.push(hook.name());
        if let Some((_, left)) = self
            .hook_failures
            .iter_mut()
            .find(|(name, left)| *name == hook.name() && *left > 0)
        {
            *left -= 1;
            return Err(UploadError::HookFailed {
                message: format!("the s3.{} hook threw: backend unreachable", hook.name()),
                retryable: true,
            });
        }
        let id = arg.str_at("uploadId").unwrap_or_default().to_owned();
        let failed = |message: &str| UploadError::HookFailed {
            message: message.to_owned(),
            retryable: false,
        };
        match hook {
            Hook::Create => {
                self.next_id += 1;
                let id = format!("mpu-{}", self.next_id);
                let key = format!("objects/{}", self.next_id);
                self.uploads
                    .insert(id.clone(), (key.clone(), Default::default()));
                Ok(object([
                    ("uploadId", id.as_str().into()),
                    ("key", key.as_str().into()),
                ]))
            }
            Hook::SignPart => {
                if !self.uploads.contains_key(&id) {
                    return Err(failed("no such upload"));
                }
                let number = arg.f64_at("partNumber").unwrap_or(0.0) as u32;
                let checksum = arg.str_at("checksumSHA256").unwrap_or_default();
                let expired = if self.expired_urls > 0 {
                    self.expired_urls -= 1;
                    "&expired=1"
                } else {
                    ""
                };
                let (query, headers) = match self.placement {
                    "query" => (format!("&x-amz-checksum-sha256={checksum}"), Value::Null),
                    "header" => (
                        String::new(),
                        object([("x-amz-checksum-sha256", checksum.into())]),
                    ),
                    _ => (String::new(), Value::Null),
                };
                let url = format!(
                    "https://s3.test/bucket?uploadId={id}&partNumber={number}{query}{expired}"
                );
                Ok(object([("url", url.as_str().into()), ("headers", headers)]))
            }
            Hook::ListParts => {
                let Some((_, parts)) = self.uploads.get(&id) else {
                    return if self.list_parts_throws {
                        Err(UploadError::HookFailed {
                            message: "NoSuchUpload".into(),
                            retryable: true,
                        })
                    } else {
                        Ok(Value::Null)
                    };
                };
                Ok(Value::Array(
                    parts
                        .iter()
                        .map(|(n, bytes)| {
                            object([
                                ("partNumber", (*n).into()),
                                ("size", (bytes.len() as u64).into()),
                                ("etag", Self::etag(bytes).into()),
                            ])
                        })
                        .collect(),
                ))
            }
            Hook::Complete => {
                let (key, parts) = self
                    .uploads
                    .remove(&id)
                    .ok_or_else(|| failed("NoSuchUpload"))?;
                let listed = arg
                    .get("parts")
                    .and_then(Value::as_array)
                    .unwrap_or_default();
                let mut object_bytes = Vec::new();
                for (i, part) in listed.iter().enumerate() {
                    let number = part.f64_at("partNumber").unwrap_or(0.0) as u32;
                    let bytes = parts.get(&number).ok_or_else(|| failed("InvalidPart"))?;
                    if number != i as u32 + 1
                        || part.str_at("etag") != Some(Self::etag(bytes).as_str())
                    {
                        return Err(failed("InvalidPart"));
                    }
                    if part.str_at("checksumSHA256") != Some(base64(&sha256(bytes)).as_str()) {
                        return Err(failed("InvalidPart checksum"));
                    }
                    object_bytes.extend_from_slice(bytes);
                }
                self.objects.insert(key.clone(), object_bytes);
                let location = format!("https://s3.test/bucket/{key}?X-Amz-Signature=secret");
                Ok(object([("location", location.as_str().into())]))
            }
            Hook::Abort => {
                self.uploads.remove(&id);
                self.aborted.push(id);
                Ok(Value::Null)
            }
        }
    }

    /// A part's PUT.
    fn put(
        &mut self,
        request: &HttpRequest,
        file: &[u8],
        fault: Option<Fault>,
    ) -> Result<HttpResponse, UploadError> {
        let empty: [(&str, String); 0] = [];
        let query = request
            .url
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or_default();
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        };
        if param("expired").is_some() {
            return Ok(HttpResponse::new(403, empty));
        }
        let (Some(id), Some(number)) = (
            param("uploadId"),
            param("partNumber").and_then(|n| n.parse::<u32>().ok()),
        ) else {
            return Ok(HttpResponse::new(400, empty));
        };
        let Body::FileRange { start, end } = request.body else {
            return Ok(HttpResponse::new(400, empty));
        };
        let mut body = file[start as usize..end as usize].to_vec();
        if fault == Some(Fault::Corrupt) && !body.is_empty() {
            body[0] ^= 0xff;
        }
        if let Some(Fault::Reset { .. }) = fault {
            // S3 keeps nothing of a part whose body broke off.
            return Err(UploadError::Network {
                method: request.method,
                purpose: request.purpose,
                detail: "connection reset".into(),
            });
        }
        let checksum = param("x-amz-checksum-sha256").or_else(|| {
            request
                .header_value("x-amz-checksum-sha256")
                .map(str::to_owned)
        });
        if let Some(checksum) = checksum {
            if checksum != base64(&sha256(&body)) {
                return Ok(HttpResponse::new(400, empty)
                    .with_body("<Error><Code>BadDigest</Code></Error>"));
            }
        }
        let Some((_, parts)) = self.uploads.get_mut(&id) else {
            return Ok(
                HttpResponse::new(404, empty).with_body("<Error><Code>NoSuchUpload</Code></Error>")
            );
        };
        let etag = Self::etag(&body);
        parts.insert(number, body);
        Ok(HttpResponse::new(200, [("ETag", etag)]))
    }
}

/// The engine's surroundings, simulated. The engine holds it by shared reference (a send
/// and the hashing of the next chunk run at once), so the state sits in a `RefCell`.
pub struct FakeEnv(RefCell<FakeState>);

/// What the simulated surroundings saw and hold.
pub struct FakeState {
    pub server: FakeTusServer,
    pub s3: FakeS3,
    file: Rc<Vec<u8>>,
    faults: FaultPlan,
    requests: usize,
    pub aborted: bool,
    pub clock_ms: f64,
    /// How long a request takes on the virtual clock, besides its body's bytes.
    pub request_ms: f64,
    rng: XorShift,
    pub sleeps: Vec<u32>,
    pub reports: Vec<Progress>,
    pub detached: Vec<HttpRequest>,
    /// The caller's headers can be refreshed (a `headers()` function).
    pub refreshable: bool,
    /// Every refresh asked for, with the refusing status.
    pub refreshes: Vec<u16>,
    pub offline: bool,
    /// How many times the engine waited for the browser to be online again.
    pub online_waits: u32,
    /// Every URL the engine said the upload can be continued from.
    pub resumable_at: Vec<String>,
}

impl FakeEnv {
    pub fn new(server: FakeTusServer, file: Rc<Vec<u8>>, faults: FaultPlan) -> Self {
        FakeEnv(RefCell::new(FakeState {
            server,
            s3: FakeS3::new(),
            file,
            faults,
            requests: 0,
            aborted: false,
            clock_ms: 1_700_000_000_000.0,
            request_ms: 5.0,
            rng: XorShift::new(42),
            sleeps: Vec::new(),
            reports: Vec::new(),
            detached: Vec::new(),
            refreshable: true,
            refreshes: Vec::new(),
            offline: false,
            online_waits: 0,
            resumable_at: Vec::new(),
        }))
    }

    /// Changes the state before the upload starts.
    pub fn with(self, change: impl FnOnce(&mut FakeState)) -> Self {
        change(&mut self.0.borrow_mut());
        self
    }

    /// The state, once the engine is done with the environment.
    pub fn into_state(self) -> FakeState {
        self.0.into_inner()
    }

    /// Marks the upload as aborted from now on.
    pub fn abort(&self) {
        self.0.borrow_mut().aborted = true;
    }
}

impl Environment for FakeEnv {
    async fn send(
        &self,
        request: &HttpRequest,
        on_sent: &dyn Fn(u64),
    ) -> Result<HttpResponse, UploadError> {
        if request.upload_progress {
            if let Body::FileRange { start, end } = request.body {
                // Half the body, then all of it, as an XHR upload would report.
                on_sent((end - start) / 2);
                on_sent(end - start);
            }
        }
        let mut state = self.0.borrow_mut();
        if state.aborted {
            return Err(UploadError::Aborted);
        }
        let n = state.requests;
        let fault = (state.faults)(request, n);
        state.requests += 1;
        if fault == Some(Fault::Abort) {
            state.aborted = true;
            return Err(UploadError::Aborted);
        }
        if fault == Some(Fault::Offline) {
            state.offline = true;
            return Err(UploadError::Network {
                method: request.method,
                purpose: request.purpose,
                detail: "Failed to fetch".into(),
            });
        }
        let bytes = match request.body {
            Body::FileRange { start, end } => end - start,
            Body::Empty => 0,
        };
        state.clock_ms += state.request_ms + bytes as f64 / 100_000.0;
        let file = Rc::clone(&state.file);
        if request.url.starts_with("https://s3.test/") {
            return match fault {
                Some(Fault::Status(status, retry_after)) => Ok(HttpResponse::new(
                    status,
                    retry_after.map(|v| ("Retry-After", v)),
                )),
                fault => state.s3.put(request, &file, fault),
            };
        }
        state.server.handle(request, &file, fault)
    }

    async fn sleep(&self, ms: u32) -> Result<(), UploadError> {
        let mut state = self.0.borrow_mut();
        if state.aborted {
            return Err(UploadError::Aborted);
        }
        state.sleeps.push(ms);
        state.clock_ms += f64::from(ms);
        Ok(())
    }

    fn now_ms(&self) -> f64 {
        self.0.borrow().clock_ms
    }

    fn random(&self) -> f64 {
        self.0.borrow_mut().rng.unit()
    }

    fn report(&self, progress: &Progress) {
        self.0.borrow_mut().reports.push(progress.clone());
    }

    fn refresh_credentials(&self, status: u16) -> bool {
        let mut state = self.0.borrow_mut();
        state.refreshes.push(status);
        state.refreshable
    }

    fn offline(&self) -> bool {
        self.0.borrow().offline
    }

    async fn wait_online(&self) -> Result<(), UploadError> {
        let mut state = self.0.borrow_mut();
        if state.aborted {
            return Err(UploadError::Aborted);
        }
        state.online_waits += 1;
        state.offline = false;
        state.clock_ms += 3000.0;
        Ok(())
    }

    async fn call_hook(&self, hook: Hook, arg: &Value) -> Result<Value, UploadError> {
        let mut state = self.0.borrow_mut();
        if state.s3.abort_during == Some(hook.name()) {
            state.aborted = true;
        }
        if state.aborted {
            return Err(UploadError::Aborted);
        }
        state.s3.hook(hook, arg)
    }

    fn call_hook_detached(&self, hook: Hook, arg: Value) {
        let mut state = self.0.borrow_mut();
        let _ = state.s3.hook(hook, &arg);
    }

    fn resumable_at(&self, target: ResumeTarget) {
        let described = match target {
            ResumeTarget::Url(url) => url,
            ResumeTarget::Multipart { upload_id, key, .. } => format!("{upload_id} {key}"),
        };
        self.0.borrow_mut().resumable_at.push(described);
    }

    fn send_detached(&self, request: HttpRequest) {
        let mut state = self.0.borrow_mut();
        state.aborted = false;
        let file = Rc::clone(&state.file);
        let _ = state.server.handle(&request, &file, None);
        state.detached.push(request);
    }
}

/// A file in memory, read in pieces of `piece_len` bytes.
pub struct MemorySource {
    file: Rc<Vec<u8>>,
    piece_len: usize,
    /// The size the source claims (normally the file's length).
    pub claimed_size: u64,
    at: Option<u64>,
    /// Every offset a reader was opened at.
    pub opens: Vec<u64>,
}

impl MemorySource {
    pub fn new(file: Rc<Vec<u8>>, piece_len: usize) -> Self {
        MemorySource {
            claimed_size: file.len() as u64,
            file,
            piece_len,
            at: None,
            opens: Vec::new(),
        }
    }
}

impl ByteSource for MemorySource {
    fn size(&self) -> u64 {
        self.claimed_size
    }

    fn open_at(&mut self, offset: u64) -> Result<(), UploadError> {
        self.opens.push(offset);
        self.at = Some(offset);
        Ok(())
    }

    fn close(&mut self) {
        self.at = None;
    }

    async fn read_piece(&mut self, buf: &mut Vec<u8>) -> Result<bool, UploadError> {
        let at = self
            .at
            .ok_or_else(|| UploadError::ReadFailed("read from a closed reader".into()))?
            as usize;
        buf.clear();
        if at >= self.file.len() {
            return Ok(false);
        }
        let end = (at + self.piece_len).min(self.file.len());
        buf.extend_from_slice(&self.file[at..end]);
        self.at = Some(end as u64);
        Ok(true)
    }

    fn position(&self) -> u64 {
        self.at.unwrap_or(0)
    }
}
