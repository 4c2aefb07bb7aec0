//! Sending one request with `fetch`: the caller's headers beneath the protocol's, a file
//! slice as the body, a per-request timeout, and cancellation by the caller's signal.
//!
//! The body is `blob.slice(start, end)`: the browser streams it from the file, so chunk bytes
//! are never copied out of wasm memory. `fetch` is the global one (bound here rather than
//! through `window`), so chunkup also works in a Web Worker.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;

use js_sys::{Array, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{AbortController, Blob, Headers, Request, RequestCache, RequestInit, Response};

use crate::core::error::UploadError;
use crate::core::http::{Body, HttpRequest, HttpResponse};
use crate::web::abort::AbortWatch;
use crate::web::js::{message_of, settle};
use crate::web::options::HeaderSource;
use crate::web::xhr::{XhrOutcome, XhrRequest, XhrSetupError};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &Request) -> Promise;
}

/// Aborts the request if dropped before it was answered: an abandoned request never runs on.
struct AbortOnDrop(Option<AbortController>);

impl AbortOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(controller) = self.0.take() {
            controller.abort();
        }
    }
}

/// Sends the requests of one upload.
#[derive(Clone)]
pub struct Transport {
    blob: Blob,
    headers: HeaderSource,
    timeout_ms: u32,
    abort: Rc<AbortWatch>,
    keepalive: bool,
    target: Option<js_sys::Function>,
}

impl Transport {
    /// A transport for requests about `blob`, cancelled by `abort`; `timeout_ms` 0 = none.
    pub fn new(blob: Blob, headers: HeaderSource, timeout_ms: u32, abort: Rc<AbortWatch>) -> Self {
        Transport {
            blob,
            headers,
            timeout_ms,
            abort,
            keepalive: false,
            target: None,
        }
    }

    /// Lets `target()` supply the URL and headers of requests that allow it (a fresh
    /// presigned URL per attempt).
    pub fn with_target(mut self, target: Option<js_sys::Function>) -> Self {
        self.target = target;
        self
    }

    /// A copy that ignores the caller's (already fired) signal and survives page unload:
    /// for the clean-up request after an abort.
    pub fn detached(&self) -> Self {
        Transport {
            abort: Rc::new(AbortWatch::new(None)),
            keepalive: true,
            ..self.clone()
        }
    }

    /// The abort watch the transport's waits obey.
    pub fn abort_watch(&self) -> &AbortWatch {
        &self.abort
    }

    /// Sends `request` and returns its status and headers. Requests that ask for upload
    /// progress go through XHR and call `on_sent` as their body leaves.
    pub async fn send(
        &self,
        request: &HttpRequest,
        on_sent: &dyn Fn(u64),
    ) -> Result<HttpResponse, UploadError> {
        let retargeted;
        let (request, callers) = match (&self.target, request.caller_target) {
            (Some(target), true) => {
                let (url, headers) = self.bounded(request, call_target(target)).await??;
                retargeted = HttpRequest {
                    url,
                    ..request.clone()
                };
                (&retargeted, headers)
            }
            _ => (
                request,
                self.bounded(request, self.headers.resolve()).await??,
            ),
        };
        let headers = with_protocol_headers(callers, request);
        let body = match request.body {
            Body::FileRange { start, end } => Some(
                self.blob
                    .slice_with_f64_and_f64(start as f64, end as f64)
                    .map_err(|e| UploadError::ReadFailed(message_of(&e)))?,
            ),
            Body::Empty => None,
        };
        if request.upload_progress {
            self.send_with_xhr(request, &headers, body.as_ref(), on_sent)
                .await
        } else {
            self.send_with_fetch(request, &headers, body.as_ref()).await
        }
    }

    /// Waits for a caller's callback, as long as the request timeout allows and no longer
    /// than the upload is not aborted: a token promise that never settles must not hang.
    /// A callback that never settles counts as a timeout of `request` (and is retried).
    async fn bounded<T>(
        &self,
        request: &HttpRequest,
        callback: impl std::future::Future<Output = Result<T, UploadError>>,
    ) -> Result<Result<T, UploadError>, UploadError> {
        match self.abort.race(within(self.timeout_ms, callback)).await? {
            Some(result) => Ok(result),
            None => Err(self.timeout(request)),
        }
    }

    async fn send_with_fetch(
        &self,
        request: &HttpRequest,
        headers: &[(String, String)],
        body: Option<&Blob>,
    ) -> Result<HttpResponse, UploadError> {
        let fetch_headers =
            Headers::new().map_err(|e| UploadError::HeadersFailed(message_of(&e)))?;
        for (name, value) in headers {
            fetch_headers
                .set(name, value)
                .map_err(|_| invalid_header(name))?;
        }
        let init = RequestInit::new();
        init.set_method(request.method.as_str());
        init.set_headers(&fetch_headers);
        init.set_cache(RequestCache::NoStore);
        if self.keepalive {
            // Not in web-sys's stable RequestInit; lets the request outlive the page.
            crate::web::js::set(&init, "keepalive", &JsValue::TRUE);
        }
        if let Some(body) = body {
            init.set_body(body);
        }
        let controller = AbortController::new().map_err(|e| network(request, &e))?;
        init.set_signal(Some(&controller.signal()));
        let mut guard = AbortOnDrop(Some(controller));
        // The browser's text for this error may quote the URL, so it is not passed on.
        let fetch_request = Request::new_with_str_and_init(&request.url, &init).map_err(|_| {
            UploadError::protocol(format!(
                "the browser refused to build the {} ({}) request",
                request.method, request.purpose
            ))
        })?;
        let answered = self
            .abort
            .race(within(
                self.timeout_ms,
                settle(global_fetch(&fetch_request)),
            ))
            .await?;
        let response = match answered {
            None => return Err(self.timeout(request)),
            Some(Err(thrown)) => return Err(network(request, &thrown)),
            Some(Ok(response)) => response,
        };
        guard.disarm();
        let response: Response = response.dyn_into().map_err(|_| {
            UploadError::protocol("fetch resolved to something that is not a Response")
        })?;
        Ok(HttpResponse::new(
            response.status(),
            header_pairs(&response.headers()),
        ))
    }

    async fn send_with_xhr(
        &self,
        request: &HttpRequest,
        headers: &[(String, String)],
        body: Option<&Blob>,
        on_sent: &dyn Fn(u64),
    ) -> Result<HttpResponse, UploadError> {
        let xhr = XhrRequest::send(request.method.as_str(), &request.url, headers, body).map_err(
            |error| match error {
                XhrSetupError::Header => UploadError::HeadersFailed(
                    "a header name or value is not valid HTTP".to_owned(),
                ),
                XhrSetupError::Refused => UploadError::protocol(format!(
                    "the browser refused to send the {} ({}) request",
                    request.method, request.purpose
                )),
            },
        )?;
        // Dropping `xhr` (on abort) aborts the request.
        match self
            .abort
            .race(xhr.outcome(on_sent, self.timeout_ms))
            .await?
        {
            XhrOutcome::Stalled => Err(self.timeout(request)),
            XhrOutcome::Failed => Err(UploadError::Network {
                method: request.method,
                purpose: request.purpose,
                detail: "the request failed without an HTTP answer".to_owned(),
            }),
            XhrOutcome::Answered(response) => Ok(response),
        }
    }

    fn timeout(&self, request: &HttpRequest) -> UploadError {
        UploadError::Timeout {
            method: request.method,
            purpose: request.purpose,
            timeout_ms: self.timeout_ms,
        }
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

/// Calls `target()` and reads `{ url, headers }` from what it (eventually) returns.
async fn call_target(
    target: &js_sys::Function,
) -> Result<(String, Vec<(String, String)>), UploadError> {
    let failed = |why: String| UploadError::HeadersFailed(format!("the target callback {why}"));
    let returned = target
        .call0(&JsValue::NULL)
        .map_err(|e| failed(format!("threw: {}", message_of(&e))))?;
    let value = match returned.dyn_into::<Promise>() {
        Ok(promise) => settle(promise)
            .await
            .map_err(|e| failed(format!("rejected: {}", message_of(&e))))?,
        Err(value) => value,
    };
    let url = crate::web::js::get(&value, "url")
        .as_string()
        .ok_or_else(|| failed("returned no url string".to_owned()))?;
    crate::core::options::check_endpoint(&url)
        .map_err(|_| failed("returned a url that is not an absolute http(s) URL".to_owned()))?;
    let headers = crate::web::js::get(&value, "headers");
    let headers = if headers.is_undefined() || headers.is_null() {
        Vec::new()
    } else {
        crate::web::options::string_map(&headers, "target().headers")
            .map_err(|e| failed(e.to_string()))?
    };
    Ok((url, headers))
}

fn invalid_header(name: &str) -> UploadError {
    UploadError::HeadersFailed(format!(
        "{name:?} is not a valid HTTP header name, or its value is not a valid header value"
    ))
}

fn network(request: &HttpRequest, thrown: &JsValue) -> UploadError {
    UploadError::Network {
        method: request.method,
        purpose: request.purpose,
        detail: message_of(thrown),
    }
}

/// The response headers JavaScript may read (CORS hides the unexposed ones).
fn header_pairs(headers: &Headers) -> Vec<(String, String)> {
    let Ok(Some(entries)) = js_sys::try_iter(headers) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pair: Array = entry.dyn_into().ok()?;
            Some((pair.get(0).as_string()?, pair.get(1).as_string()?))
        })
        .collect()
}

/// `Some(output)` if `future` completes within `ms` milliseconds (0 = no limit), else `None`.
pub(crate) async fn within<F: Future>(ms: u32, future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    if ms == 0 {
        return Some(future.await);
    }
    let mut timer = pin!(gloo_timers::future::TimeoutFuture::new(ms));
    poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await
}
