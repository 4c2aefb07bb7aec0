//! Sending one request with `XMLHttpRequest`, for the one thing `fetch` cannot do: report
//! how much of a request body has been sent (`xhr.upload.onprogress`). Used for requests
//! that ask for upload progress, such as a single PUT of a whole file.
//!
//! The XHR's events land in a small shared state that the request's future polls, so the
//! caller's `on_sent` runs inside a poll, never re-entrantly from a JavaScript event.
//! Dropping the future before the answer aborts the XHR.

use std::cell::RefCell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

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
}

#[derive(Default)]
struct Shared {
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
    ) -> Result<XhrRequest, JsValue> {
        let xhr = XmlHttpRequest::new()?;
        xhr.open_with_async(method, url, true)?;
        for (name, value) in headers {
            xhr.set_request_header(name, value)?;
        }
        let shared = Rc::new(RefCell::new(Shared::default()));
        let on_progress = {
            let shared = Rc::clone(&shared);
            Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                if let Some(event) = event.dyn_ref::<ProgressEvent>() {
                    let mut state = shared.borrow_mut();
                    state.sent = Some(event.loaded() as u64);
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
        xhr.upload()?
            .set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
        xhr.set_onload(Some(on_load.as_ref().unchecked_ref()));
        xhr.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        xhr.set_onabort(Some(on_error.as_ref().unchecked_ref()));
        xhr.send_with_opt_blob(body)?;
        Ok(XhrRequest {
            xhr,
            shared,
            _handlers: [on_progress, on_load, on_error],
        })
    }

    /// Waits for the answer, calling `on_sent` with the body bytes sent so far as they go.
    pub async fn outcome(&self, on_sent: &dyn Fn(u64)) -> XhrOutcome {
        poll_fn(|cx| {
            let mut state = self.shared.borrow_mut();
            if let Some(sent) = state.sent.filter(|s| state.reported != Some(*s)) {
                state.reported = Some(sent);
                drop(state);
                on_sent(sent);
                state = self.shared.borrow_mut();
            }
            match state.finished {
                Some(answered) => Poll::Ready(answered),
                None => {
                    state.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        let answered = self.shared.borrow().finished.unwrap_or(false);
        match (answered, self.xhr.status()) {
            // Status 0 means no HTTP answer, whatever event fired.
            (true, Ok(status)) if status != 0 => XhrOutcome::Answered(HttpResponse::new(
                status,
                parse_headers(&self.xhr.get_all_response_headers().unwrap_or_default()),
            )),
            _ => XhrOutcome::Failed,
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
