//! The engine's `Environment` in a browser: fetch, gloo-timers, `Date.now()`,
//! `Math.random()` and the caller's `onProgress` callback.

use std::cell::Cell;
use std::rc::Rc;

use js_sys::Function;
use wasm_bindgen::JsValue;

use crate::core::engine::Environment;
use crate::core::error::UploadError;
use crate::core::http::{HttpRequest, HttpResponse};
use crate::core::progress::Progress;
use crate::web::convert::progress_to_js;
use crate::web::transport::Transport;

/// The caller's `onProgress`: called with each snapshot; one that throws does not break
/// the upload (one console warning, without details that could carry the caller's data).
pub struct ProgressCallback {
    function: Option<Function>,
    warned: Cell<bool>,
}

impl ProgressCallback {
    /// Wraps the caller's function, if any.
    pub fn new(function: Option<Function>) -> Rc<Self> {
        Rc::new(ProgressCallback {
            function,
            warned: Cell::new(false),
        })
    }

    /// Hands `progress` to the caller.
    pub fn deliver(&self, progress: &Progress) {
        let Some(callback) = &self.function else {
            return;
        };
        let Ok(value) = progress_to_js(progress) else {
            return;
        };
        if callback.call1(&JsValue::NULL, &value).is_err() && !self.warned.replace(true) {
            web_sys::console::warn_1(&JsValue::from_str(
                "chunkup: onProgress threw; the upload goes on and further errors are ignored",
            ));
        }
    }
}

/// What one upload runs in.
pub struct BrowserEnv {
    transport: Transport,
    progress: Rc<ProgressCallback>,
    adjust: Option<Box<dyn Fn(Progress) -> Progress>>,
}

impl BrowserEnv {
    /// An environment sending with `transport` and reporting to `progress`.
    pub fn new(transport: Transport, progress: Rc<ProgressCallback>) -> Self {
        BrowserEnv {
            transport,
            progress,
            adjust: None,
        }
    }

    /// Passes every snapshot through `adjust` first (a flow made of several uploads
    /// presents them as one).
    pub fn adjusting(mut self, adjust: impl Fn(Progress) -> Progress + 'static) -> Self {
        self.adjust = Some(Box::new(adjust));
        self
    }
}

impl Environment for BrowserEnv {
    async fn send(
        &self,
        request: &HttpRequest,
        on_sent: &dyn Fn(u64),
    ) -> Result<HttpResponse, UploadError> {
        self.transport.send(request, on_sent).await
    }

    async fn sleep(&self, ms: u32) -> Result<(), UploadError> {
        self.transport.abort_watch().sleep(ms).await
    }

    fn now_ms(&self) -> f64 {
        js_sys::Date::now()
    }

    fn random(&self) -> f64 {
        js_sys::Math::random()
    }

    fn report(&self, progress: &Progress) {
        match &self.adjust {
            Some(adjust) => self.progress.deliver(&adjust(progress.clone())),
            None => self.progress.deliver(progress),
        }
    }

    fn send_detached(&self, request: HttpRequest) {
        let transport = self.transport.detached();
        wasm_bindgen_futures::spawn_local(async move {
            // Best effort: the upload already failed with `aborted`, whatever happens here.
            let _ = transport.send(&request, &|_| {}).await;
        });
    }
}
