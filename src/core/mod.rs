//! The pure heart of chunkup: everything that can be decided without a browser.
//!
//! Nothing under `core/` imports wasm-bindgen, js-sys or web-sys, so all of it runs and is
//! tested natively with `cargo test`. The browser glue in `crate::web` supplies the few
//! effects the [`engine`] needs (send a request, read the file, sleep, tell the time) through
//! the traits in [`engine`].

pub mod chunker;
pub mod digest;
pub mod encoding;
pub mod engine;
pub mod error;
pub mod guest;
pub mod http;
pub mod options;
pub mod parallel;
pub mod progress;
pub mod protocol;
pub mod resume;
pub mod retry;
pub mod url;
pub mod value;

#[cfg(test)]
pub(crate) mod testkit;
