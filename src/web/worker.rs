//! Where the work runs: in chunkup's dedicated Worker when the page can start one, else on
//! the page, paced so that no task holds the main thread for more than a few milliseconds.
//!
//! On a page's main thread, `uploadFile`, `sha256File` and `attachFile` check their input
//! here first (so a mistake is refused at once, with no Worker started), then hand the very
//! same call to the Worker through the message protocol of src/js/bridge.js, which keeps the
//! caller's callbacks, AbortSignal and socket on the page. In the Worker the same exports
//! find themselves off the main thread and do the work. Where no Worker can start
//! (Content-Security-Policy, a browser without module Workers) or the caller passed
//! `worker: false`, the work runs on the page and [`Pacer`] yields to the event loop.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;

use js_sys::{Array, Promise};
use wasm_bindgen::prelude::*;
use web_sys::AbortSignal;

use crate::core::error::UploadError;
use crate::web::convert::error_to_js;
use crate::web::io::{describe, fired, signal_arg};
use crate::web::js::{get, settle};

#[wasm_bindgen(module = "/src/js/bridge.js")]
extern "C" {
    #[wasm_bindgen(js_name = workerAvailable)]
    fn worker_available(module: &JsValue, signal: &JsValue) -> Promise;

    /// A promise of the job's outcome, or null when it could not be handed over.
    #[wasm_bindgen(js_name = runInWorker)]
    fn run_in_worker(name: &str, args: &Array) -> JsValue;

    #[wasm_bindgen(js_name = onMainThread)]
    fn on_main_thread() -> bool;

    #[wasm_bindgen(js_name = nextTask)]
    fn next_task() -> Promise;
}

/// Runs the export `name` with `args` in chunkup's Worker, when `allowed` and called on a
/// page's main thread with a Worker available; `None` means: run it here (also when the
/// arguments cannot be posted to a Worker).
///
/// The Worker's answer is the export's own: its result, or its `ChunkupError` rebuilt on
/// the page with the same `code`, `status`, `retryable` and `cause`. A Worker that dies
/// meanwhile fails the call with `worker_failed`. `signal` firing while the Worker starts
/// (its script loading, on a first call) fails the call with `aborted` at once.
pub async fn offload(
    allowed: bool,
    name: &str,
    args: &[&JsValue],
    signal: &Option<AbortSignal>,
) -> Option<Result<JsValue, JsValue>> {
    if !allowed || !on_main_thread() {
        return None;
    }
    // The page's compiled module goes along, so the Worker neither fetches nor compiles it.
    let available = settle(worker_available(
        &wasm_bindgen::module(),
        &signal_arg(signal),
    ))
    .await;
    if fired(signal) {
        return Some(Err(error_to_js(&UploadError::Aborted)));
    }
    if available.ok()?.as_bool() != Some(true) {
        return None;
    }
    let args: Array = args.iter().copied().collect();
    let outcome = run_in_worker(name, &args).dyn_into::<Promise>().ok()?;
    Some(settle(outcome).await.map_err(|error| {
        // The export's own errors are ChunkupErrors; one without a code is the Worker's end.
        if get(&error, "code").is_string() {
            error
        } else {
            error_to_js(&UploadError::WorkerFailed(describe(&error)))
        }
    }))
}

/// Hands the thread back to the event loop every few milliseconds of work.
///
/// On a page's main thread the budget is 4 ms, so that input and rendering wait for an
/// upload no longer than a frame's worth of CPU: a task ends within about 10 ms of it, since
/// a slice of hashing and the start of a request may follow the last check (measured in
/// Chromium's traces; a busy machine can still keep the thread waiting for a core). The
/// budget counts wall time since the last yield, waits included, so after a wait the next
/// check yields at once: a cheap extra task, never a long one. In a Worker it is 50 ms,
/// which only keeps the Worker's own messages (an abort, the answer of a `headers()` call)
/// flowing. The yield is a macrotask (`nextTask` in src/js/bridge.js): a promise chain
/// would not end the task.
pub struct Pacer {
    budget_ms: f64,
    since: Cell<f64>,
}

impl Pacer {
    /// A pacer for the thread this runs on. On a page it starts with its budget spent, so
    /// its first `pace()` yields: the task it was made in may have run long already (the
    /// caller's own work, and on a first call V8 compiling each wasm function it enters).
    pub fn for_this_thread() -> Pacer {
        let main = on_main_thread();
        Pacer {
            budget_ms: if main { 4.0 } else { 50.0 },
            since: Cell::new(if main {
                f64::NEG_INFINITY
            } else {
                js_sys::Date::now()
            }),
        }
    }

    /// Yields if the budget since the last yield is spent.
    pub async fn pace(&self) {
        if js_sys::Date::now() - self.since.get() < self.budget_ms {
            return;
        }
        let _ = settle(next_task()).await;
        self.since.set(js_sys::Date::now());
    }
}

/// `work`, boxed. An export awaits its work boxed after its checks and a `pace()`: the
/// work's state machine is then a function of its own, which V8 compiles (on a first call,
/// on this thread) when it is first polled, after that yield, rather than as part of the
/// export's own code before the checks ran.
pub fn apart<'a, T>(work: impl Future<Output = T> + 'a) -> Pin<Box<dyn Future<Output = T> + 'a>> {
    Box::pin(work)
}
