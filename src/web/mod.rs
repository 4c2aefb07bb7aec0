//! Browser glue: everything that touches wasm-bindgen, js-sys or web-sys.
//!
//! Each file implements one effect the pure engine in `crate::core` asks for, and nothing
//! else: [`source`] reads the file through the counting stream, [`transport`] sends requests
//! with `fetch`, [`abort`] turns an `AbortSignal` into something every wait can race,
//! [`env`] ties them into the engine's `Environment`, [`options`] checks what JavaScript
//! passed in, and [`convert`] turns results and errors back into JavaScript values.

pub mod abort;
pub mod convert;
pub mod env;
pub mod guest;
pub mod js;
pub mod options;
pub mod source;
pub mod transport;
pub mod xhr;

use wasm_bindgen::JsValue;

use crate::core::encoding::hex;
use crate::core::engine::{upload, EngineConfig};
use crate::core::error::UploadError;
use crate::core::protocol::for_upload;

/// `uploadFile(file, onProgress, options)`: checks the input, then runs the engine.
pub async fn upload_file(
    file: JsValue,
    on_progress: JsValue,
    options: JsValue,
) -> Result<JsValue, UploadError> {
    let input = options::parse(&file, &on_progress, &options)?;
    let abort = std::rc::Rc::new(abort::AbortWatch::new(input.signal.clone()));
    if abort.fired() {
        return Err(UploadError::Aborted);
    }
    let settings = &input.settings;
    let mut source = source::FileSource::new(input.blob.clone(), std::rc::Rc::clone(&abort));
    let env = env::BrowserEnv::new(
        transport::Transport::new(
            input.blob.clone(),
            input.headers.clone(),
            settings.timeout_ms,
            std::rc::Rc::clone(&abort),
        )
        .with_target(input.target.clone()),
        env::ProgressCallback::new(input.on_progress.clone()),
    );
    let config = EngineConfig {
        retry: settings.retry,
        progress_interval_ms: settings.progress_interval_ms,
        md5: settings.md5,
    };
    let mut protocol = for_upload(settings, input.size);
    let summary = upload(protocol.as_mut(), &env, &mut source, config).await?;
    convert::summary_to_js(&summary)
}

/// `sha256File(file)`: the hex SHA-256 of a Blob, read through the same counting stream
/// and hasher as an upload.
pub async fn sha256_file(file: JsValue) -> Result<String, UploadError> {
    let blob: web_sys::Blob = wasm_bindgen::JsCast::dyn_into(file)
        .map_err(|_| UploadError::invalid("file must be a Blob or a File"))?;
    let abort = std::rc::Rc::new(abort::AbortWatch::new(None));
    let digest = source::digest_whole_file(&blob, &abort, false).await?;
    Ok(hex(&digest.file_sha256()))
}
