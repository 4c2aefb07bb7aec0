//! Rust values into JavaScript ones: the progress object, the result and the `Error`
//! thrown on failure (with its stable `code`, `status`, `retryable` and `cause`).

use serde::Serialize;
use wasm_bindgen::JsValue;

use crate::core::encoding::hex;
use crate::core::engine::UploadSummary;
use crate::core::error::UploadError;
use crate::core::progress::{Progress, UploadedChunk};
use crate::web::js::set;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsChunk {
    index: u64,
    offset: u64,
    length: u64,
    sha256: String,
    retries: u32,
}

impl From<&UploadedChunk> for JsChunk {
    fn from(c: &UploadedChunk) -> Self {
        JsChunk {
            index: c.index,
            offset: c.offset,
            length: c.length,
            sha256: hex(&c.sha256),
            retries: c.retries,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsProgress<'a> {
    phase: &'static str,
    bytes_read: u64,
    bytes_uploaded: u64,
    bytes_sent: u64,
    bytes_total: u64,
    percent: f64,
    bytes_per_second: f64,
    eta_seconds: Option<f64>,
    chunk_index: u64,
    chunk_count: u64,
    attempt: u32,
    retries: u32,
    retry_in_ms: Option<u32>,
    chunk: Option<JsChunk>,
    url: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsResult<'a> {
    url: &'a str,
    size: u64,
    sha256: String,
    md5: Option<String>,
    chunks: Vec<JsChunk>,
    retries: u32,
    duration_ms: f64,
    protocol: &'static str,
    checksum: Option<&'static str>,
}

pub(crate) fn to_js<T: Serialize>(value: &T) -> Result<JsValue, UploadError> {
    let serializer = serde_wasm_bindgen::Serializer::new().serialize_missing_as_null(true);
    value
        .serialize(&serializer)
        .map_err(|e| UploadError::protocol(format!("cannot build the JavaScript value: {e}")))
}

/// The object handed to `onProgress`.
pub fn progress_to_js(p: &Progress) -> Result<JsValue, UploadError> {
    to_js(&JsProgress {
        phase: p.phase.as_str(),
        bytes_read: p.bytes_read,
        bytes_uploaded: p.bytes_uploaded,
        bytes_sent: p.bytes_sent,
        bytes_total: p.bytes_total,
        percent: p.percent,
        bytes_per_second: p.bytes_per_second,
        eta_seconds: p.eta_seconds,
        chunk_index: p.chunk_index,
        chunk_count: p.chunk_count,
        attempt: p.attempt,
        retries: p.retries,
        retry_in_ms: p.retry_in_ms,
        chunk: p.chunk.as_ref().map(JsChunk::from),
        url: p.upload_url.as_deref(),
    })
}

/// The value `uploadFile` resolves to.
pub fn summary_to_js(s: &UploadSummary) -> Result<JsValue, UploadError> {
    to_js(&JsResult {
        url: &s.url,
        size: s.size,
        sha256: hex(&s.sha256),
        md5: s.md5.as_ref().map(|m| hex(m)),
        chunks: s.chunks.iter().map(JsChunk::from).collect(),
        retries: s.retries,
        duration_ms: s.duration_ms,
        protocol: s.protocol,
        checksum: s.checksum,
    })
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
