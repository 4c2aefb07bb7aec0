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
use crate::core::protocol::s3::Hook;
use crate::core::resume::ResumeTarget;
use crate::core::value::Value;
use crate::web::convert::progress_to_js;
use crate::web::convert::{from_js, to_js};
use crate::web::io::{self, Failure};
use crate::web::js::settle;
use crate::web::options::Multipart;
use crate::web::resume::Resume;
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
    records: Option<Rc<Resume>>,
    saved: Cell<bool>,
    hooks: Option<Multipart>,
}

impl BrowserEnv {
    /// An environment sending with `transport` and reporting to `progress`.
    pub fn new(transport: Transport, progress: Rc<ProgressCallback>) -> Self {
        BrowserEnv {
            transport,
            progress,
            adjust: None,
            pacer: Pacer::for_this_thread(),
            records: None,
            saved: Cell::new(false),
            hooks: None,
        }
    }

    /// The caller's `s3` hooks, for a multipart upload.
    pub fn with_hooks(mut self, hooks: Option<Multipart>) -> Self {
        self.hooks = hooks;
        self
    }

    /// Stores where the upload can be continued after a reload in `records`.
    pub fn keeping_records(mut self, records: Option<Rc<Resume>>) -> Self {
        self.records = records;
        self
    }

    /// True unless a resume record was stored during this upload.
    pub fn saved_nothing(&self) -> bool {
        !self.saved.get()
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

    fn refresh_credentials(&self, status: u16) -> bool {
        self.transport.refresh_credentials(status)
    }

    fn offline(&self) -> bool {
        crate::web::io::is_offline()
    }

    async fn wait_online(&self) -> Result<(), UploadError> {
        crate::web::io::wait_online(self.transport.signal()).await
    }

    async fn call_hook(&self, hook: Hook, arg: &Value) -> Result<Value, UploadError> {
        let Some(hooks) = &self.hooks else {
            return Err(UploadError::invalid(
                "options.s3 is required for protocol \"s3\"",
            ));
        };
        let failed = |how: &str, detail: String| UploadError::HookFailed {
            message: format!("the s3.{} hook {how}: {detail}", hook.name()),
            retryable: true,
        };
        let signal = self.transport.signal();
        match io::call(
            hooks.hook(hook),
            &to_js(arg),
            self.transport.timeout_ms(),
            signal,
        )
        .await
        {
            Ok(answer) => Ok(from_js(&answer)),
            Err(Failure::Threw(detail)) => Err(failed("threw", detail)),
            Err(Failure::Rejected(detail)) => Err(failed("rejected", detail)),
            Err(Failure::Timeout) => Err(failed("did not answer", "timed out".into())),
            Err(_) => Err(UploadError::Aborted),
        }
    }

    fn call_hook_detached(&self, hook: Hook, arg: Value) {
        let Some(hooks) = &self.hooks else {
            return;
        };
        // Best effort, awaited by nothing: a clean-up (after an abort, or of an upload given
        // up), whatever happens to it.
        io::call_detached(hooks.hook(hook), &to_js(&arg), self.transport.timeout_ms());
    }

    fn resumable_at(&self, target: ResumeTarget) {
        if let Some(records) = &self.records {
            records.save(target);
            self.saved.set(true);
        }
    }

    fn send_detached(&self, request: HttpRequest) {
        let transport = self.transport.detached();
        wasm_bindgen_futures::spawn_local(async move {
            // Best effort, awaited by nothing: a clean-up (after an abort, or of an upload
            // given up), whatever happens here.
            let _ = transport.send(&request, &|_| {}).await;
        });
    }
}
