//! The engine's `Environment` in a browser: fetch, gloo-timers, `Date.now()`,
//! `Math.random()` and the caller's `onProgress` callback.

use std::cell::Cell;

use js_sys::Function;
use wasm_bindgen::JsValue;

use crate::core::engine::Environment;
use crate::core::error::UploadError;
use crate::core::http::{HttpRequest, HttpResponse};
use crate::core::progress::Progress;
use crate::web::convert::progress_to_js;
use crate::web::transport::Transport;

/// What one upload runs in.
pub struct BrowserEnv {
    transport: Transport,
    on_progress: Option<Function>,
    warned_about_callback: Cell<bool>,
}

impl BrowserEnv {
    /// An environment sending with `transport` and reporting to `on_progress`.
    pub fn new(transport: Transport, on_progress: Option<Function>) -> Self {
        BrowserEnv {
            transport,
            on_progress,
            warned_about_callback: Cell::new(false),
        }
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
        let Some(callback) = &self.on_progress else {
            return;
        };
        let Ok(value) = progress_to_js(progress) else {
            return;
        };
        // A callback that throws must not break the upload; say so once, without details
        // that could carry the caller's data.
        if callback.call1(&JsValue::NULL, &value).is_err()
            && !self.warned_about_callback.replace(true)
        {
            web_sys::console::warn_1(&JsValue::from_str(
                "chunkup: onProgress threw; the upload goes on and further errors are ignored",
            ));
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
