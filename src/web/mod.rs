//! Browser glue: everything that touches wasm-bindgen, js-sys or web-sys.
//!
//! Each file implements one effect the pure engine in `crate::core` asks for, and nothing
//! else: [`source`] reads the file through the counting stream, [`transport`] sends requests,
//! [`io`] awaits the waits done in JavaScript (each ended by the upload's `AbortSignal`),
//! [`env`] ties them into the engine's `Environment`, [`options`] checks what JavaScript
//! passed in, [`convert`] turns results and errors back into JavaScript values, [`guest`]
//! runs `attachFile`, and [`worker`] decides whether the work runs in chunkup's Worker.

pub mod convert;
pub mod env;
pub mod guest;
pub mod io;
pub mod js;
pub mod options;
pub mod resume;
pub mod source;
pub mod transport;
pub mod worker;

use std::rc::Rc;

use wasm_bindgen::JsValue;

use crate::core::encoding::hex;
use crate::core::engine::{upload, EngineConfig};
use crate::core::error::UploadError;
use crate::core::options::UploadSettings;
use crate::core::parallel::{upload_parts, PartsConfig};
use crate::core::protocol::for_upload;
use crate::core::protocol::s3::{create_arg, part_plan, MultipartId};
use crate::core::resume::ResumeTarget;
use crate::web::convert::error_to_js;

/// `uploadFile(file, onProgress, options)`: checks the input, then runs the engine in
/// chunkup's Worker or, where none can start or `worker: false`, here.
pub async fn upload_file(
    file: JsValue,
    on_progress: JsValue,
    options: JsValue,
) -> Result<JsValue, JsValue> {
    // On a page, the first pace yields: see Pacer::for_this_thread.
    let pacer = worker::Pacer::for_this_thread();
    pacer.pace().await;
    let input = options::parse(&file, &on_progress, &options).map_err(|e| error_to_js(&e))?;
    if input.aborted_already() {
        return Err(error_to_js(&UploadError::Aborted));
    }
    let portable = options::for_worker(&options, &input);
    let args = [&file, &on_progress, &portable];
    if let Some(answer) = worker::offload(input.worker, "uploadFile", &args, &input.signal).await {
        return answer;
    }
    pacer.pace().await;
    worker::apart(upload_here(input))
        .await
        .map_err(|e| error_to_js(&e))
}

async fn upload_here(input: options::UploadInput) -> Result<JsValue, UploadError> {
    if io::fired(&input.signal) {
        return Err(UploadError::Aborted);
    }
    let resume = resume::Resume::claim_for(&input).await.map(Rc::new);
    let stored = match &resume {
        Some(resume) => resume.stored().await,
        None => None,
    };
    let mut settings = input.settings.clone();
    if let (None, Some(ResumeTarget::Url(url))) = (&settings.resume_url, &stored) {
        settings.resume_url = Some(url.clone());
    }
    let settings = &settings;
    let mut source = source::FileSource::new(input.blob.clone(), input.signal.clone());
    let env = env::BrowserEnv::new(
        transport::Transport::new(
            input.blob.clone(),
            input.headers.clone(),
            settings.timeout_ms,
            input.signal.clone(),
        )
        .with_target(input.target.clone()),
        env::ProgressCallback::new(input.on_progress.clone()),
    )
    .keeping_records(resume.clone())
    .with_hooks(input.multipart.clone());
    let (outcome, refused) = match for_upload(settings, input.size) {
        Some(mut protocol) => {
            let config = EngineConfig {
                retry: settings.retry,
                progress_interval_ms: settings.progress_interval_ms,
                md5: settings.md5,
            };
            let outcome = upload(protocol.as_mut(), &env, &mut source, config).await;
            // A record the server turned down that nothing replaced goes too.
            let replaced = protocol.resume_url().is_some() && !env.saved_nothing();
            (outcome, protocol.resume_refused() && !replaced)
        }
        None => {
            let config = multipart_config(&input, settings, stored)?;
            (upload_parts(&env, &mut source, config).await, false)
        }
    };
    if let Some(resume) = &resume {
        // Done or aborted: the record goes. Other failures keep it, to continue later.
        if matches!(outcome, Ok(_) | Err(UploadError::Aborted)) || refused {
            resume.forget().await;
        }
    }
    Ok(convert::summary_to_js(&outcome?))
}

/// The multipart engine's settings: the part plan, the hooks' first argument, and the
/// upload to continue (`s3Upload`, or a stored record cut in the same part size).
fn multipart_config(
    input: &options::UploadInput,
    settings: &UploadSettings,
    stored: Option<ResumeTarget>,
) -> Result<PartsConfig, UploadError> {
    let multipart = input
        .multipart
        .as_ref()
        .ok_or_else(|| UploadError::invalid("options.s3 is required for protocol \"s3\""))?;
    let plan = part_plan(input.size, settings.chunk_size)?;
    // A record cut in another part size cannot be continued: its upload is abandoned
    // (aborted), unless `s3Upload` names that very upload.
    let (from_record, abandon) = match stored {
        Some(ResumeTarget::Multipart {
            upload_id,
            key,
            part_size,
        }) => {
            let id = MultipartId { upload_id, key };
            if part_size == plan.chunk_size {
                (Some(id), None)
            } else {
                (None, Some(id))
            }
        }
        _ => (None, None),
    };
    let abandon = abandon.filter(|old| multipart.continue_upload.as_ref() != Some(old));
    Ok(PartsConfig {
        retry: settings.retry,
        progress_interval_ms: settings.progress_interval_ms,
        md5: settings.md5,
        parallel: multipart.parallel,
        plan,
        create: create_arg(
            &multipart.name,
            &multipart.kind,
            input.size,
            &multipart.metadata,
        ),
        resume: multipart.continue_upload.clone().or(from_record),
        abandon,
    })
}

/// `sha256File(file, options)`: the hex SHA-256 of a Blob, read through the same counting
/// stream and hasher as an upload, in chunkup's Worker unless `worker: false`.
pub async fn sha256_file(file: JsValue, options: JsValue) -> Result<JsValue, JsValue> {
    let pacer = worker::Pacer::for_this_thread();
    pacer.pace().await;
    let (blob, signal, allowed) =
        options::parse_sha256(&file, &options).map_err(|e| error_to_js(&e))?;
    if io::fired(&signal) {
        return Err(error_to_js(&UploadError::Aborted));
    }
    let portable = options::portable(&options, &options::SHA256_OPTIONS);
    if let Some(answer) = worker::offload(allowed, "sha256File", &[&file, &portable], &signal).await
    {
        return answer;
    }
    pacer.pace().await;
    let digest = worker::apart(source::digest_whole_file(&blob, &signal, false))
        .await
        .map_err(|e| error_to_js(&e))?;
    Ok(JsValue::from_str(&hex(&digest.file_sha256())))
}
