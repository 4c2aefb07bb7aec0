//! The engine's `Environment` in a browser: requests and sleeps through src/js/io.js, `Date.now()`,
//! `Math.random()`, the caller's `onProgress` callback, and pacing on the main thread.

use std::cell::Cell;
use std::rc::Rc;

use js_sys::Function;
use wasm_bindgen::{JsCast, JsValue};

use crate::core::engine::Environment;
use crate::core::error::UploadError;
use crate::core::http::{HttpRequest, HttpResponse};
use crate::core::progress::Progress;
use crate::web::convert::progress_to_js;
use crate::web::js::settle;
use crate::web::transport::Transport;
use crate::web::worker::Pacer;

/// The caller's `onProgress`: called with each snapshot; one that throws does not break
/// the upload (one console warning, without details that could carry the caller's data).
pub struct ProgressCallback {
    function: Option<Function>,
    warned: Rc<Cell<bool>>,
}

impl ProgressCallback {
    /// Wraps the caller's function, if any.
    pub fn new(function: Option<Function>) -> Rc<Self> {
        Rc::new(ProgressCallback {
            function,
            warned: Rc::default(),
        })
    }

    /// Hands `progress` to the caller.
    pub fn deliver(&self, progress: &Progress) {
        let Some(callback) = &self.function else {
            return;
        };
        let value = progress_to_js(progress);
        match callback.call1(&JsValue::NULL, &value) {
            Err(_) => warn_once(&self.warned),
            // An async callback, or the Worker's stand-in for the page's callback: its
            // rejection is the same mistake as a throw.
            Ok(returned) => {
                if let Ok(promise) = returned.dyn_into::<js_sys::Promise>() {
                    let warned = Rc::clone(&self.warned);
                    wasm_bindgen_futures::spawn_local(async move {
                        if settle(promise).await.is_err() {
                            warn_once(&warned);
                        }
                    });
                }
            }
        }
    }
}

fn warn_once(warned: &Cell<bool>) {
    if !warned.replace(true) {
        web_sys::console::warn_1(&JsValue::from_str(
            "chunkup: onProgress threw; the upload goes on and further errors are ignored",
        ));
    }
}

/// What one upload runs in.
pub struct BrowserEnv {
    transport: Transport,
    progress: Rc<ProgressCallback>,
    adjust: Option<Box<dyn Fn(Progress) -> Progress>>,
    pacer: Pacer,
}

impl BrowserEnv {
    /// An environment sending with `transport` and reporting to `progress`.
    pub fn new(transport: Transport, progress: Rc<ProgressCallback>) -> Self {
        BrowserEnv {
            transport,
            progress,
            adjust: None,
            pacer: Pacer::for_this_thread(),
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
        crate::web::io::sleep(ms, self.transport.signal()).await
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

    async fn pause(&self) {
        self.pacer.pace().await;
    }

    fn send_detached(&self, request: HttpRequest) {
        let transport = self.transport.detached();
        wasm_bindgen_futures::spawn_local(async move {
            // Best effort: the upload already failed with `aborted`, whatever happens here.
            let _ = transport.send(&request, &|_| {}).await;
        });
    }
}
