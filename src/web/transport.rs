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
        }
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

    /// Sends `request` and returns its status and headers.
    pub async fn send(&self, request: &HttpRequest) -> Result<HttpResponse, UploadError> {
        let user_headers = self.abort.race(self.headers.resolve()).await??;
        let headers = Headers::new().map_err(|e| UploadError::HeadersFailed(message_of(&e)))?;
        for (name, value) in user_headers.iter().chain(&request.headers) {
            headers.set(name, value).map_err(|_| {
                UploadError::HeadersFailed(format!("{name:?} is not a valid HTTP header name, or its value is not a valid header value"))
            })?;
        }
        let init = RequestInit::new();
        init.set_method(request.method.as_str());
        init.set_headers(&headers);
        init.set_cache(RequestCache::NoStore);
        if self.keepalive {
            // Not in web-sys's stable RequestInit; lets the request outlive the page.
            crate::web::js::set(&init, "keepalive", &JsValue::TRUE);
        }
        if let Body::FileRange { start, end } = request.body {
            let slice = self
                .blob
                .slice_with_f64_and_f64(start as f64, end as f64)
                .map_err(|e| UploadError::ReadFailed(message_of(&e)))?;
            init.set_body(&slice);
        }
        let controller = AbortController::new().map_err(|e| network(request, &e))?;
        init.set_signal(Some(&controller.signal()));
        let mut guard = AbortOnDrop(Some(controller));
        let fetch_request = Request::new_with_str_and_init(&request.url, &init).map_err(|e| {
            UploadError::invalid(format!(
                "cannot build the {} request: {}",
                request.method,
                message_of(&e)
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
            None => {
                return Err(UploadError::Timeout {
                    method: request.method,
                    purpose: request.purpose,
                    timeout_ms: self.timeout_ms,
                })
            }
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
async fn within<F: Future>(ms: u32, future: F) -> Option<F::Output> {
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
