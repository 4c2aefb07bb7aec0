//! Rust values into JavaScript ones and back: [`Value`]s, the progress object, the result
//! and the `Error` thrown on failure (with its stable `code`, `status`, `retryable` and
//! `cause`).

use js_sys::{Array, Object};
use wasm_bindgen::{JsCast, JsValue};

use crate::core::encoding::hex;
use crate::core::engine::UploadSummary;
use crate::core::error::UploadError;
use crate::core::progress::{Progress, UploadedChunk};
use crate::core::value::{object, Value};
use crate::web::js::set;

/// A [`Value`] as a JavaScript value: plain objects, arrays, strings, numbers.
pub fn to_js(value: &Value) -> JsValue {
    match value {
        Value::Null => JsValue::NULL,
        Value::Bool(b) => JsValue::from_bool(*b),
        Value::Number(n) => JsValue::from_f64(*n),
        Value::String(s) => JsValue::from_str(s),
        Value::Array(items) => items.iter().map(to_js).collect::<Array>().into(),
        Value::Object(entries) => {
            let target: JsValue = Object::new().into();
            for (key, item) in entries {
                set(&target, key, &to_js(item));
            }
            target
        }
    }
}

/// Objects nest this deep at most in what chunkup reads (guest messages); deeper parts, and
/// cycles, read as null rather than recursing without end.
const MAX_DEPTH: u32 = 8;

/// The plain data in a JavaScript value (a parsed JSON message, a `SessionResponse` body):
/// own enumerable properties of objects, arrays, strings, numbers and booleans; anything
/// else (functions, symbols, `undefined`) reads as null.
pub fn from_js(value: &JsValue) -> Value {
    from_js_within(value, MAX_DEPTH)
}

fn from_js_within(value: &JsValue, depth: u32) -> Value {
    if let Some(s) = value.as_string() {
        return Value::String(s);
    }
    if let Some(n) = value.as_f64() {
        return Value::Number(n);
    }
    if let Some(b) = value.as_bool() {
        return Value::Bool(b);
    }
    if depth == 0 || !value.is_object() || value.is_function() {
        return Value::Null;
    }
    if Array::is_array(value) {
        let items: &Array = value.unchecked_ref();
        return Value::Array(
            items
                .iter()
                .map(|item| from_js_within(&item, depth - 1))
                .collect(),
        );
    }
    let entries = Object::entries(value.unchecked_ref::<Object>());
    Value::Object(
        entries
            .iter()
            .filter_map(|entry| {
                let pair: &Array = entry.unchecked_ref();
                Some((
                    pair.get(0).as_string()?,
                    from_js_within(&pair.get(1), depth - 1),
                ))
            })
            .collect(),
    )
}

fn chunk_value(c: &UploadedChunk) -> Value {
    object([
        ("index", c.index.into()),
        ("offset", c.offset.into()),
        ("length", c.length.into()),
        ("sha256", hex(&c.sha256).into()),
        ("retries", c.retries.into()),
    ])
}

/// The object handed to `onProgress`.
pub fn progress_to_js(p: &Progress) -> JsValue {
    to_js(&object([
        ("phase", p.phase.as_str().into()),
        ("bytesRead", p.bytes_read.into()),
        ("bytesUploaded", p.bytes_uploaded.into()),
        ("bytesSent", p.bytes_sent.into()),
        ("bytesTotal", p.bytes_total.into()),
        ("percent", p.percent.into()),
        ("bytesPerSecond", p.bytes_per_second.into()),
        ("etaSeconds", p.eta_seconds.into()),
        ("chunkIndex", p.chunk_index.into()),
        ("chunkCount", p.chunk_count.into()),
        ("attempt", p.attempt.into()),
        ("retries", p.retries.into()),
        ("retryInMs", p.retry_in_ms.into()),
        ("chunk", p.chunk.as_ref().map_or(Value::Null, chunk_value)),
        ("url", p.upload_url.as_deref().into()),
    ]))
}

/// The value `uploadFile` resolves to.
pub fn summary_to_js(s: &UploadSummary) -> JsValue {
    to_js(&object([
        ("url", s.url.as_str().into()),
        ("size", s.size.into()),
        ("sha256", hex(&s.sha256).into()),
        ("md5", s.md5.as_ref().map(|m| hex(m)).into()),
        (
            "chunks",
            Value::Array(s.chunks.iter().map(chunk_value).collect()),
        ),
        ("retries", s.retries.into()),
        ("durationMs", s.duration_ms.into()),
        ("protocol", s.protocol.into()),
        ("checksum", s.checksum.into()),
        ("resumedFrom", s.resumed_from.into()),
    ]))
}

/// The `Error` `uploadFile` rejects with.
pub fn error_to_js(error: &UploadError) -> JsValue {
    let js_error = js_sys::Error::new(&error.to_string());
    js_error.set_name("ChunkupError");
    let value: JsValue = js_error.into();
    set(&value, "code", &JsValue::from_str(error.code()));
    set(
        &value,
        "retryable",
        &JsValue::from_bool(error.is_retryable()),
    );
    if let Some(status) = error.status() {
        set(&value, "status", &JsValue::from(status));
    }
    if let UploadError::Attachment {
        server_code: Some(code),
        ..
    } = error
    {
        set(&value, "serverCode", &JsValue::from(*code));
    }
    if let Some(cause) = error.cause() {
        set(&value, "cause", &error_to_js(cause));
    }
    value
}
