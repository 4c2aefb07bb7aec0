//! Sending one request: the caller's headers beneath the protocol's, a file slice as the
//! body, a timeout, and cancellation by the upload's signal.
//!
//! The body is `blob.slice(start, end)`: the browser streams it from the file, so chunk bytes
//! are never copied out of wasm memory. The request itself goes out through src/js/io.js
//! (fetch, or XMLHttpRequest for byte-level upload progress), which uses the global `fetch`
//! so chunkup works the same in its Worker.

use std::cell::Cell;
use std::rc::Rc;

use js_sys::{Array, Function};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{AbortSignal, Blob};

use crate::core::error::UploadError;
use crate::core::http::{Body, HttpRequest, HttpResponse};
use crate::core::value::object;
use crate::web::convert::to_js;
use crate::web::io::{self, Exchange, Failure};
use crate::web::js::get;
use crate::web::options::{string_map, HeaderSource};

/// Cancels the request if dropped before it was answered: an abandoned request never runs on.
struct CancelOnDrop<'a>(Option<&'a Exchange>);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(exchange) = self.0.take() {
            exchange.cancel();
        }
    }
}

/// Sends the requests of one upload.
#[derive(Clone)]
pub struct Transport {
    blob: Blob,
    headers: HeaderSource,
    timeout_ms: u32,
    signal: Option<AbortSignal>,
    keepalive: bool,
    target: Option<Function>,
    /// The status of the last refusal of the credentials, until the next `headers()` (or
    /// `target()`) call asks for fresh ones with it.
    refresh: Rc<Cell<Option<u16>>>,
}

impl Transport {
    /// A transport for requests about `blob`, cancelled by `signal`; `timeout_ms` 0 = none.
    pub fn new(
        blob: Blob,
        headers: HeaderSource,
        timeout_ms: u32,
        signal: Option<AbortSignal>,
    ) -> Self {
        Transport {
            blob,
            headers,
            timeout_ms,
            signal,
            keepalive: false,
            target: None,
            refresh: Rc::default(),
        }
    }

    /// The server refused the credentials with `status`: the next call of the caller's
    /// `headers()` (or `target()`) gets `{ refresh: true, status }`. False when the headers
    /// are fixed and cannot be refreshed.
    pub fn refresh_credentials(&self, status: u16) -> bool {
        let refreshable =
            self.target.is_some() || matches!(self.headers, HeaderSource::Callback(_));
        if refreshable {
            self.refresh.set(Some(status));
        }
        refreshable
    }

    /// The argument of a `headers()` or `target()` call: `{ refresh: false }`, or after a
    /// refusal `{ refresh: true, status }` (once).
    fn credentials_context(&self) -> JsValue {
        let context = match self.refresh.take() {
            Some(status) => object([
                ("refresh", true.into()),
                ("status", u32::from(status).into()),
            ]),
            None => object([("refresh", false.into())]),
        };
        to_js(&context)
    }

    /// Lets `target()` supply the URL and headers of requests that allow it (a fresh
    /// presigned URL per attempt).
    pub fn with_target(mut self, target: Option<Function>) -> Self {
        self.target = target;
        self
    }

    /// A copy that ignores the caller's (already fired) signal and survives page unload:
    /// for the clean-up request after an abort.
    pub fn detached(&self) -> Self {
        Transport {
            signal: None,
            keepalive: true,
            ..self.clone()
        }
    }

    /// The per-request timeout (0 = none).
    pub fn timeout_ms(&self) -> u32 {
        self.timeout_ms
    }

    /// The signal every wait of the upload obeys.
    pub fn signal(&self) -> &Option<AbortSignal> {
        &self.signal
    }

    /// Sends `request` and returns its status and headers. Requests that ask for upload
    /// progress call `on_sent` as their body leaves.
    pub async fn send(
        &self,
        request: &HttpRequest,
        on_sent: &dyn Fn(u64),
    ) -> Result<HttpResponse, UploadError> {
        let (url, callers) = match (&self.target, request.caller_target) {
            (Some(target), true) => self.call_target(request, target).await?,
            _ => (request.url.clone(), self.callers_headers(request).await?),
        };
        let headers: Array = with_protocol_headers(callers, request)
            .into_iter()
            .map(|(name, value)| -> JsValue { Array::of2(&name.into(), &value.into()).into() })
            .collect();
        let body = match request.body {
            Body::FileRange { start, end } => Some(
                self.blob
                    .slice_with_f64_and_f64(start as f64, end as f64)
                    .map_err(|_| UploadError::ReadFailed("the file could not be sliced".into()))?,
            ),
            Body::Empty => None,
        };
        let exchange = io::send_request(
            request.method.as_str(),
            &url,
            &headers,
            body.as_ref(),
            self.timeout_ms,
            request.upload_progress,
            self.keepalive,
            &io::signal_arg(&self.signal),
        );
        let mut guard = CancelOnDrop(Some(&exchange));
        loop {
            let event = io::wait(exchange.next())
                .await
                .map_err(|failure| self.failed(request, failure))?;
            if let Some(sent) = event.as_f64() {
                on_sent(sent as u64);
                continue;
            }
            guard.0 = None;
            let mut response = response_of(&event);
            if request.caller_target && self.target.is_some() {
                response.sent_to = Some(url);
            }
            return Ok(response);
        }
    }

    /// The caller's headers (`options.headers`, or what its function returns now).
    async fn callers_headers(
        &self,
        request: &HttpRequest,
    ) -> Result<Vec<(String, String)>, UploadError> {
        let callback = match &self.headers {
            HeaderSource::Fixed(pairs) => return Ok(pairs.clone()),
            HeaderSource::Callback(callback) => callback,
        };
        let value = io::call(
            callback,
            &self.credentials_context(),
            self.timeout_ms,
            &self.signal,
        )
        .await
        .map_err(|failure| self.failed(request, failure))?;
        string_map(&value, "the value returned by headers()")
            .map_err(|e| UploadError::HeadersFailed(e.to_string()))
    }

    /// Calls `target()` and reads `{ url, headers }` from what it returns.
    async fn call_target(
        &self,
        request: &HttpRequest,
        target: &Function,
    ) -> Result<(String, Vec<(String, String)>), UploadError> {
        let failed = |why: String| UploadError::HeadersFailed(format!("the target callback {why}"));
        let value = io::call(
            target,
            &self.credentials_context(),
            self.timeout_ms,
            &self.signal,
        )
        .await
        .map_err(|failure| match failure {
            Failure::Threw(detail) => failed(format!("threw: {detail}")),
            Failure::Rejected(detail) => failed(format!("rejected: {detail}")),
            other => self.failed(request, other),
        })?;
        let url = get(&value, "url")
            .as_string()
            .ok_or_else(|| failed("returned no url string".to_owned()))?;
        crate::core::options::check_endpoint(&url)
            .map_err(|_| failed("returned a url that is not an absolute http(s) URL".to_owned()))?;
        let headers = get(&value, "headers");
        let headers = if headers.is_undefined() || headers.is_null() {
            Vec::new()
        } else {
            string_map(&headers, "target().headers").map_err(|e| failed(e.to_string()))?
        };
        Ok((url, headers))
    }

    /// The error for a failed wait of `request`.
    fn failed(&self, request: &HttpRequest, failure: Failure) -> UploadError {
        failure.into_error(|failure| match failure {
            Failure::Timeout => UploadError::Timeout {
                method: request.method,
                purpose: request.purpose,
                timeout_ms: self.timeout_ms,
            },
            Failure::Header(name) => UploadError::HeadersFailed(format!(
                "\"{name}\" is not a valid HTTP header name, or its value is not a valid header value"
            )),
            Failure::Refused => UploadError::protocol(format!(
                "the browser refused to send the {} ({}) request",
                request.method, request.purpose
            )),
            Failure::Threw(detail) | Failure::Rejected(detail) => UploadError::HeadersFailed(detail),
            Failure::Network(detail) => UploadError::Network {
                method: request.method,
                purpose: request.purpose,
                detail,
            },
            Failure::Aborted | Failure::Read(_) => UploadError::Aborted,
        })
    }
}

/// `[status, [name, value, name, value...]]` as an [`HttpResponse`].
fn response_of(answer: &JsValue) -> HttpResponse {
    let answer: &Array = answer.unchecked_ref();
    let flat: Array = answer.get(1).unchecked_into();
    let texts: Vec<String> = flat
        .iter()
        .map(|v| v.as_string().unwrap_or_default())
        .collect();
    let response = HttpResponse::new(
        answer.get(0).as_f64().unwrap_or(0.0) as u16,
        texts
            .chunks_exact(2)
            .map(|pair| (pair[0].as_str(), pair[1].clone())),
    );
    // A refusal comes with the start of its body (an S3 error document names its code).
    match answer.get(2).as_string() {
        Some(body) => response.with_body(body),
        None => response,
    }
}

/// The caller's headers with the protocol's on top (a protocol header replaces a caller's
/// header of the same name, so the protocol cannot be broken by accident).
fn with_protocol_headers(
    mut headers: Vec<(String, String)>,
    request: &HttpRequest,
) -> Vec<(String, String)> {
    for (name, value) in &request.default_headers {
        if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            headers.push((name.clone(), value.clone()));
        }
    }
    for (name, value) in &request.headers {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((name.clone(), value.clone()));
    }
    headers
}
