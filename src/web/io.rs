//! The waits of an upload, done in JavaScript (src/js/io.js) and awaited here: requests,
//! file reads, sleeps, the caller's callbacks and the chat session's messages.
//!
//! Every wait takes the upload's `AbortSignal` and settles on its own when it fires, so the
//! Rust side needs one kind of future only (a promise) and no timers of its own. A failure
//! arrives as `{ kind, detail }` and becomes an [`UploadError`] here.

use js_sys::{Array, Function, Promise};
use wasm_bindgen::prelude::*;
use web_sys::{AbortSignal, Blob};

use crate::core::error::UploadError;
use crate::web::js::{get, settle};

#[wasm_bindgen(module = "/src/js/io.js")]
extern "C" {
    /// The byte-counting reader over a Blob.
    pub type CountingReader;

    #[wasm_bindgen(constructor, catch)]
    pub fn new(blob: &Blob, offset: f64, signal: &JsValue) -> Result<CountingReader, JsValue>;

    #[wasm_bindgen(method)]
    pub fn read(this: &CountingReader) -> Promise;

    #[wasm_bindgen(method)]
    pub fn cancel(this: &CountingReader);

    #[wasm_bindgen(method, getter)]
    pub fn bytes(this: &CountingReader) -> f64;

    /// One request on its way.
    pub type Exchange;

    #[wasm_bindgen(method)]
    pub fn next(this: &Exchange) -> Promise;

    #[wasm_bindgen(method)]
    pub fn cancel(this: &Exchange);

    #[wasm_bindgen(js_name = send)]
    #[allow(clippy::too_many_arguments)]
    pub fn send_request(
        method: &str,
        url: &str,
        headers: &Array,
        body: Option<&Blob>,
        timeout_ms: u32,
        progress: bool,
        keepalive: bool,
        signal: &JsValue,
    ) -> Exchange;

    #[wasm_bindgen(js_name = sleep)]
    fn sleep_js(ms: u32, signal: &JsValue) -> Promise;

    /// The value's built-in kind by its tag ("File", "Blob", "AbortSignal", "Headers",
    /// "Map"...), so that one from another realm (an iframe) counts.
    #[wasm_bindgen(js_name = kindOf)]
    pub fn kind_of(value: &JsValue) -> String;

    /// The message of a thrown value: "Name: message" for errors, the text of a string.
    pub fn describe(thrown: &JsValue) -> String;

    /// Whether the browser says it is offline.
    #[wasm_bindgen(js_name = isOffline)]
    pub fn is_offline() -> bool;

    #[wasm_bindgen(js_name = waitOnline)]
    fn wait_online_js(signal: &JsValue) -> Promise;

    #[wasm_bindgen(js_name = call)]
    fn call_js(function: &Function, arg: &JsValue, timeout_ms: u32, signal: &JsValue) -> Promise;

    /// The queue of a chat session's messages.
    pub type Inbox;

    #[wasm_bindgen(constructor)]
    pub fn new() -> Inbox;

    #[wasm_bindgen(method, getter)]
    pub fn listener(this: &Inbox) -> Function;

    #[wasm_bindgen(method, js_name = subscribeTo)]
    fn subscribe_to_js(this: &Inbox, subscribe: &Function, signal: &JsValue) -> Promise;

    #[wasm_bindgen(method, js_name = next)]
    pub fn next_message(this: &Inbox, timeout_ms: u32, signal: &JsValue) -> Promise;
}

/// How a wait in io.js ended, when it did not succeed.
pub enum Failure {
    /// The upload's signal fired.
    Aborted,
    /// Nothing came within the time allowed.
    Timeout,
    /// No HTTP answer; the browser's words.
    Network(String),
    /// A header name or value the browser refused; the header's name.
    Header(String),
    /// The browser refused to build or send the request.
    Refused,
    /// The file could not be read; the browser's words.
    Read(String),
    /// A caller's callback threw; its message.
    Threw(String),
    /// A caller's callback returned a promise that rejected; its message.
    Rejected(String),
}

impl Failure {
    fn from_js(thrown: &JsValue) -> Failure {
        let detail = get(thrown, "detail").as_string().unwrap_or_default();
        match get(thrown, "kind").as_string().as_deref() {
            Some("aborted") => Failure::Aborted,
            Some("timeout") => Failure::Timeout,
            Some("header") => Failure::Header(detail),
            Some("refused") => Failure::Refused,
            Some("read") => Failure::Read(detail),
            Some("threw") => Failure::Threw(detail),
            Some("rejected") => Failure::Rejected(detail),
            _ => Failure::Network(detail),
        }
    }

    /// The error for a failure that only an abort, a timeout or the file explains; other
    /// kinds go through `other`.
    pub fn into_error(self, other: impl FnOnce(Failure) -> UploadError) -> UploadError {
        match self {
            Failure::Aborted => UploadError::Aborted,
            Failure::Read(detail) => UploadError::ReadFailed(detail),
            failure => other(failure),
        }
    }
}

/// Awaits a promise made by io.js.
pub async fn wait(promise: Promise) -> Result<JsValue, Failure> {
    settle(promise)
        .await
        .map_err(|thrown| Failure::from_js(&thrown))
}

/// The signal as io.js takes it (`undefined` for none).
pub fn signal_arg(signal: &Option<AbortSignal>) -> JsValue {
    signal
        .as_ref()
        .map_or(JsValue::UNDEFINED, |s| s.clone().into())
}

/// True once `signal` fired.
pub fn fired(signal: &Option<AbortSignal>) -> bool {
    signal.as_ref().is_some_and(AbortSignal::aborted)
}

/// Waits `ms` milliseconds; `Aborted` as soon as the signal fires.
pub async fn sleep(ms: u32, signal: &Option<AbortSignal>) -> Result<(), UploadError> {
    wait(sleep_js(ms, &signal_arg(signal)))
        .await
        .map(|_| ())
        .map_err(|_| UploadError::Aborted)
}

/// Waits until the browser is online again; `Aborted` as soon as the signal fires.
pub async fn wait_online(signal: &Option<AbortSignal>) -> Result<(), UploadError> {
    wait(wait_online_js(&signal_arg(signal)))
        .await
        .map(|_| ())
        .map_err(|_| UploadError::Aborted)
}

/// Calls one of the caller's functions (with `arg` unless it is `undefined`) and awaits
/// its answer, for at most `timeout_ms` (0 = no limit) and no longer than the upload lasts.
pub async fn call(
    function: &Function,
    arg: &JsValue,
    timeout_ms: u32,
    signal: &Option<AbortSignal>,
) -> Result<JsValue, Failure> {
    wait(call_js(function, arg, timeout_ms, &signal_arg(signal))).await
}

/// Calls one of the caller's functions now and leaves its answer to come or not (for at
/// most `timeout_ms`): a clean-up that nothing waits for, after an abort or a failure.
pub fn call_detached(function: &Function, arg: &JsValue, timeout_ms: u32) {
    // Called here, not when the task below first runs: in the Worker, the call must reach
    // the page before the job's outcome, which ends the page's side of the job.
    let answer = call_js(function, arg, timeout_ms, &JsValue::UNDEFINED);
    wasm_bindgen_futures::spawn_local(async move {
        let _ = wait(answer).await;
    });
}

impl Inbox {
    /// Calls the widget's `subscribe` with this inbox's listener and awaits the unsubscribe
    /// function it returns (or a promise of it). On abort it fails at once; an answer that
    /// comes later is unsubscribed by io.js when it comes.
    pub async fn subscribe_to(
        &self,
        subscribe: &Function,
        signal: &Option<AbortSignal>,
    ) -> Result<JsValue, Failure> {
        wait(self.subscribe_to_js(subscribe, &signal_arg(signal))).await
    }
}
