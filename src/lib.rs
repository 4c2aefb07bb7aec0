//! chunkup: resumable, checksummed, chunked file uploads from a web page, in Rust compiled
//! to WebAssembly.
//!
//! This file is the whole JavaScript-facing surface: `uploadFile`, `sha256File`,
//! `attachFile`, `validateAttachment`, `buildAttachmentMessage`, and the TypeScript
//! declarations (types/chunkup.d.ts) of their options, progress object, results and error
//! codes. The work happens in [`core`] (pure logic, tested natively) and,
//! in the browser, in `web` (glue to fetch, streams and timers).

#![deny(missing_docs)]

pub mod core;
#[cfg(target_arch = "wasm32")]
mod web;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen::prelude::*;

// SAFETY: chunkup's wasm runs on one thread (the page's, or its Worker's; never shared
// memory), which is what AssumeSingleThreaded requires.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::AssumeSingleThreaded<lol_alloc::FreeListAllocator> =
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::FreeListAllocator::new()) };

#[cfg(target_arch = "wasm32")]
#[wasm_bindgen(typescript_custom_section)]
const TYPESCRIPT: &'static str = include_str!("../types/chunkup.d.ts");

/// Uploads `file` to `options.endpoint`, calling `on_progress` along the way.
///
/// Resolves to the result object, or rejects with an `Error` whose `code` says what went
/// wrong. See the TypeScript declarations (types/chunkup.d.ts) for every field.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen(js_name = uploadFile, skip_typescript)]
pub async fn upload_file(
    file: JsValue,
    on_progress: JsValue,
    options: JsValue,
) -> Result<JsValue, JsValue> {
    web::upload_file(file, on_progress, options).await
}

/// Sends a file as a web-messaging (Genesys Cloud guest API) attachment over the widget's
/// session: validation, presigned URL, PUT with progress, server verdict.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen(js_name = attachFile, skip_typescript)]
pub async fn attach_file(
    session: JsValue,
    file: JsValue,
    on_progress: JsValue,
    options: JsValue,
) -> Result<JsValue, JsValue> {
    web::guest::attach_file(session, file, on_progress, options).await
}

/// Checks a file against a `SessionResponse` body the way `attachFile` does first:
/// `null` when it may be sent, else the `Error` it would be refused with.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen(js_name = validateAttachment, skip_typescript)]
pub fn validate_attachment(session_response: JsValue, file: JsValue) -> JsValue {
    match web::guest::validate_attachment(&session_response, &file) {
        Ok(()) => JsValue::NULL,
        Err(error) => web::convert::error_to_js(&error),
    }
}

/// The `onMessage` request that sends `text` with the attachments `attachment_ids`.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen(js_name = buildAttachmentMessage, skip_typescript)]
pub fn build_attachment_message(
    token: String,
    text: String,
    attachment_ids: JsValue,
) -> Result<JsValue, JsValue> {
    web::guest::build_attachment_message(&token, &text, &attachment_ids)
        .map_err(|error| web::convert::error_to_js(&error))
}

/// The lower-case hex SHA-256 of a `Blob` or `File`, computed in Rust as uploads do.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen(js_name = sha256File, skip_typescript)]
pub async fn sha256_file(file: JsValue, options: JsValue) -> Result<JsValue, JsValue> {
    web::sha256_file(file, options).await
}
