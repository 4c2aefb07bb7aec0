//! Sending one request with `XMLHttpRequest`, for the one thing `fetch` cannot do: report
//! how much of a request body has been sent (`xhr.upload.onprogress`). Used for requests
//! that ask for upload progress, such as a single PUT of a whole file.
//!
//! The XHR's events land in a small shared state that the request's future polls, so the
//! caller's `on_sent` runs inside a poll, never re-entrantly from a JavaScript event.
//! Dropping the future before the answer aborts the XHR.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use gloo_timers::future::TimeoutFuture;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Blob, ProgressEvent, XmlHttpRequest};

use crate::core::http::HttpResponse;

/// How an XHR ended, as far as the caller is concerned.
pub enum XhrOutcome {
    /// An HTTP answer arrived.
    Answered(HttpResponse),
    /// No HTTP answer (network error, CORS refusal).
    Failed,
    /// Nothing moved for the idle timeout: no body byte left and no answer came.
    Stalled,
}

/// Why an XHR could not be started.
pub enum XhrSetupError {
    /// A header name or value is not valid HTTP (the browser refused it).
    Header,
    /// The browser refused to open or send the request.
    Refused,
}

#[derive(Default)]
struct Shared {
    /// When the body last moved (ms since the epoch), for the idle timeout.
    last_activity_ms: f64,
    sent: Option<u64>,
    reported: Option<u64>,
    finished: Option<bool>,
    waker: Option<Waker>,
}

impl Shared {
    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// One XHR in flight, with its event handlers; aborts the request when dropped unfinished.
pub struct XhrRequest {
    xhr: XmlHttpRequest,
    shared: Rc<RefCell<Shared>>,
    _handlers: [Closure<dyn FnMut(JsValue)>; 3],
}

impl XhrRequest {
    /// Opens and sends `method url` with `headers` and an optional file slice as body.
    pub fn send(
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<&Blob>,
    ) -> Result<XhrRequest, XhrSetupError> {
        // Browser error texts may quote the URL (a presigned credential): none is passed on.
        let refused = |_| XhrSetupError::Refused;
        let xhr = XmlHttpRequest::new().map_err(refused)?;
        xhr.open_with_async(method, url, true).map_err(refused)?;
        for (name, value) in headers {
            xhr.set_request_header(name, value)
                .map_err(|_| XhrSetupError::Header)?;
        }
        let shared = Rc::new(RefCell::new(Shared {
            last_activity_ms: js_sys::Date::now(),
            ..Shared::default()
        }));
        let on_progress = {
            let shared = Rc::clone(&shared);
            Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                if let Some(event) = event.dyn_ref::<ProgressEvent>() {
                    let mut state = shared.borrow_mut();
                    state.sent = Some(event.loaded() as u64);
                    state.last_activity_ms = js_sys::Date::now();
                    state.wake();
                }
            })
        };
        let finish = |answered: bool| {
            let shared = Rc::clone(&shared);
            Closure::<dyn FnMut(JsValue)>::new(move |_| {
                let mut state = shared.borrow_mut();
                state.finished.get_or_insert(answered);
                state.wake();
            })
        };
        let (on_load, on_error) = (finish(true), finish(false));
        // Registering an upload listener before send() is what makes the browser report
        // upload progress (it also makes a cross-origin request preflighted).
        xhr.upload()
            .map_err(refused)?
            .set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
        xhr.set_onload(Some(on_load.as_ref().unchecked_ref()));
        xhr.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        xhr.set_onabort(Some(on_error.as_ref().unchecked_ref()));
        xhr.send_with_opt_blob(body).map_err(refused)?;
        Ok(XhrRequest {
            xhr,
            shared,
            _handlers: [on_progress, on_load, on_error],
        })
    }

    /// Waits for the answer, calling `on_sent` with the body bytes sent so far as they go.
    /// `idle_timeout_ms` (0 = none) limits how long nothing may move: it restarts with
    /// every progress event, so a large body on a slow link is not cut off, a stalled one is.
    pub async fn outcome(&self, on_sent: &dyn Fn(u64), idle_timeout_ms: u32) -> XhrOutcome {
        let mut timer: Option<TimeoutFuture> = None;
        let finished = poll_fn(|cx| {
            let mut state = self.shared.borrow_mut();
            if let Some(sent) = state.sent.filter(|s| state.reported != Some(*s)) {
                state.reported = Some(sent);
                drop(state);
                on_sent(sent);
                state = self.shared.borrow_mut();
            }
            if let Some(answered) = state.finished {
                return Poll::Ready(Some(answered));
            }
            state.waker = Some(cx.waker().clone());
            if idle_timeout_ms == 0 {
                return Poll::Pending;
            }
            let last_activity_ms = state.last_activity_ms;
            drop(state);
            // One timer at a time: dropping an unfired gloo timer wakes the task, so
            // replacing it on every poll would spin. When it fires, it is re-armed for
            // whatever is left since the last activity, or the request has stalled.
            loop {
                let left = f64::from(idle_timeout_ms) - (js_sys::Date::now() - last_activity_ms);
                if left <= 0.0 {
                    return Poll::Ready(None);
                }
                let pending = timer.get_or_insert_with(|| TimeoutFuture::new(left.ceil() as u32));
                match Pin::new(pending).poll(cx) {
                    Poll::Ready(()) => timer = None,
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        match finished {
            None => XhrOutcome::Stalled,
            Some(answered) => match (answered, self.xhr.status()) {
                // Status 0 means no HTTP answer, whatever event fired.
                (true, Ok(status)) if status != 0 => XhrOutcome::Answered(HttpResponse::new(
                    status,
                    parse_headers(&self.xhr.get_all_response_headers().unwrap_or_default()),
                )),
                _ => XhrOutcome::Failed,
            },
        }
    }
}

impl Drop for XhrRequest {
    fn drop(&mut self) {
        if self.shared.borrow().finished.is_none() {
            let _ = self.xhr.abort();
        }
        self.xhr.set_onload(None);
        self.xhr.set_onerror(None);
        self.xhr.set_onabort(None);
        if let Ok(upload) = self.xhr.upload() {
            upload.set_onprogress(None);
        }
    }
}

/// `getAllResponseHeaders()` text: `name: value` lines separated by CRLF.
fn parse_headers(text: &str) -> Vec<(String, String)> {
    text.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect()
}
