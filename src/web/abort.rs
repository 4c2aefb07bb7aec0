//! The caller's `AbortSignal`, as something any wait can be raced against.
//!
//! One `abort` listener is registered per upload (and removed on drop); it flips a flag and
//! wakes the upload's task. [`AbortWatch::race`] then lets a fetch, a stream read, a
//! `headers()` promise or a gloo-timers sleep end the moment the signal fires, with no
//! JavaScript closure created per wait.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use wasm_bindgen::closure::Closure;
use wasm_bindgen::JsCast;
use web_sys::AbortSignal;

use crate::core::error::UploadError;

/// One waker is enough: every wait of an upload runs in that upload's single task (the
/// detached clean-up request gets an `AbortWatch` of its own).
#[derive(Default)]
struct Shared {
    fired: bool,
    waker: Option<Waker>,
}

/// Watches an optional `AbortSignal` for the duration of one upload.
pub struct AbortWatch {
    signal: Option<AbortSignal>,
    shared: Rc<RefCell<Shared>>,
    listener: Option<Closure<dyn FnMut()>>,
}

impl AbortWatch {
    /// Starts watching `signal` (nothing to watch when `None`).
    pub fn new(signal: Option<AbortSignal>) -> Self {
        let shared = Rc::new(RefCell::new(Shared::default()));
        let listener = signal.as_ref().map(|signal| {
            let shared = Rc::clone(&shared);
            let listener = Closure::<dyn FnMut()>::new(move || {
                let mut state = shared.borrow_mut();
                state.fired = true;
                if let Some(waker) = state.waker.take() {
                    waker.wake();
                }
            });
            // Registration cannot fail on a real AbortSignal; if it did, `fired()` still
            // reads `signal.aborted` directly.
            let _ =
                signal.add_event_listener_with_callback("abort", listener.as_ref().unchecked_ref());
            listener
        });
        AbortWatch {
            signal,
            shared,
            listener,
        }
    }

    /// True once the caller aborted.
    pub fn fired(&self) -> bool {
        self.shared.borrow().fired || self.signal.as_ref().is_some_and(AbortSignal::aborted)
    }

    /// Runs `future` until it completes or the signal fires, whichever is first.
    pub async fn race<F: Future>(&self, future: F) -> Result<F::Output, UploadError> {
        let mut future = pin!(future);
        poll_fn(|cx| {
            if self.fired() {
                return Poll::Ready(Err(UploadError::Aborted));
            }
            if let Poll::Ready(output) = future.as_mut().poll(cx) {
                return Poll::Ready(Ok(output));
            }
            self.shared.borrow_mut().waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Sleeps `ms` milliseconds with gloo-timers, ending early with `Aborted`.
    pub async fn sleep(&self, ms: u32) -> Result<(), UploadError> {
        self.race(gloo_timers::future::TimeoutFuture::new(ms)).await
    }
}

impl Drop for AbortWatch {
    fn drop(&mut self) {
        if let (Some(signal), Some(listener)) = (&self.signal, &self.listener) {
            let _ = signal
                .remove_event_listener_with_callback("abort", listener.as_ref().unchecked_ref());
        }
    }
}
