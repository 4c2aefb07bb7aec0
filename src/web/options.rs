//! Checking what JavaScript passed to `uploadFile` before anything is sent.
//!
//! Every mistake is reported as `invalid_input` with a message naming the option, and
//! unknown option names are refused (a typo such as `chunksize` would otherwise be silently
//! ignored). The rules themselves live in `core::options`.

use js_sys::{Function, Object};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{AbortSignal, Blob, File};

use crate::core::error::UploadError;
use crate::core::options::{
    check_endpoint, merge_metadata, whole_number, ProtocolKind, UploadSettings, DEFAULT_CHUNK_SIZE,
    DEFAULT_PROGRESS_INTERVAL_MS, DEFAULT_TIMEOUT_MS, MAX_SAFE_INTEGER,
};
use crate::core::protocol::s3::{Hook, MultipartId, MIN_PART_SIZE};
use crate::core::resume::ResumePolicy;
use crate::core::retry::RetryPolicy;
use crate::web::io::kind_of;
use crate::web::js::get;

const KNOWN_OPTIONS: [&str; 19] = [
    "endpoint",
    "worker",
    "resume",
    "uploadUrl",
    "s3",
    "s3Upload",
    "parallelUploads",
    "protocol",
    "contentType",
    "target",
    "md5",
    "chunkSize",
    "headers",
    "metadata",
    "filename",
    "signal",
    "retry",
    "progressIntervalMs",
    "timeoutMs",
];
/// `s3` without an endpoint: what resume records are keyed by instead.
const NO_ENDPOINT: &str = "s3:";

/// The options of `sha256File`.
pub const SHA256_OPTIONS: [&str; 2] = ["signal", "worker"];
const KNOWN_RETRY_OPTIONS: [&str; 3] = ["attempts", "baseDelayMs", "maxDelayMs"];

/// Where request headers come from: fixed, or a (possibly async) function called before
/// every request so that short-lived tokens stay fresh (src/web/transport.rs calls it).
#[derive(Clone)]
pub enum HeaderSource {
    Fixed(Vec<(String, String)>),
    Callback(Function),
}

/// Everything `uploadFile` was given, checked.
pub struct UploadInput {
    pub blob: Blob,
    pub size: u64,
    pub on_progress: Option<Function>,
    pub signal: Option<AbortSignal>,
    pub headers: HeaderSource,
    /// `put`: called before every attempt for a fresh `{ url, headers }`.
    pub target: Option<Function>,
    /// Run in chunkup's Worker when one can start (the default), else on the page.
    pub worker: bool,
    /// Keep a resume record, and continue from one (None: `resume: false`, or `put`).
    pub resume: Option<ResumePolicy>,
    /// `uploadUrl`: continue this upload (absolute).
    pub upload_url: Option<String>,
    /// `s3`: the caller's hooks, and how many parts go at once.
    pub multipart: Option<Multipart>,
    pub settings: UploadSettings,
}

/// What an `s3` upload was given besides the common options.
#[derive(Clone)]
pub struct Multipart {
    /// The five hooks, in the order of [`Hook::ALL`].
    pub hooks: [Function; 5],
    /// Parts in flight at once.
    pub parallel: u32,
    /// `s3Upload`: a multipart upload to continue.
    pub continue_upload: Option<MultipartId>,
    /// `createMultipartUpload`'s `name`, `type` and `metadata`.
    pub name: String,
    pub kind: String,
    pub metadata: Vec<(String, String)>,
}

impl Multipart {
    /// The caller's function for `hook`.
    pub fn hook(&self, hook: Hook) -> &Function {
        let index = Hook::ALL.iter().position(|h| *h == hook).unwrap_or(0);
        &self.hooks[index]
    }
}

/// `options.s3`: an object with the five hooks, every one a function.
fn s3_hooks(value: &JsValue) -> Result<[Function; 5], UploadError> {
    if !value.is_object() || value.is_function() || js_sys::Array::is_array(value) {
        return Err(UploadError::invalid(
            "options.s3 is required for protocol \"s3\": an object with createMultipartUpload, signPart, listParts, completeMultipartUpload and abortMultipartUpload",
        ));
    }
    let names = Hook::ALL.map(Hook::name);
    reject_unknown(value, &names, "options.s3")?;
    // Bound to the object, so hooks written as methods keep their `this`.
    let function = |name: &str| {
        get(value, name)
            .dyn_into::<Function>()
            .map(|f| f.bind0(value))
            .map_err(|_| UploadError::invalid(format!("options.s3.{name} must be a function")))
    };
    Ok([
        function(names[0])?,
        function(names[1])?,
        function(names[2])?,
        function(names[3])?,
        function(names[4])?,
    ])
}

/// `options.s3Upload`: `{ uploadId, key }` of a multipart upload to continue.
fn s3_upload(value: &JsValue) -> Result<Option<MultipartId>, UploadError> {
    if is_absent(value) {
        return Ok(None);
    }
    let text = |name: &str| {
        get(value, name)
            .as_string()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                UploadError::invalid(format!(
                    "options.s3Upload.{name} must be a non-empty string"
                ))
            })
    };
    if !value.is_object() || js_sys::Array::is_array(value) {
        return Err(UploadError::invalid(
            "options.s3Upload must be { uploadId, key }",
        ));
    }
    reject_unknown(value, &["uploadId", "key"], "options.s3Upload")?;
    Ok(Some(MultipartId {
        upload_id: text("uploadId")?,
        key: text("key")?,
    }))
}

impl UploadInput {
    /// True when the caller's signal had fired before the call.
    pub fn aborted_already(&self) -> bool {
        self.signal.as_ref().is_some_and(AbortSignal::aborted)
    }
}

/// `options.<key>` as a boolean, `default` when absent.
pub(crate) fn optional_bool(
    options: &JsValue,
    key: &str,
    default: bool,
) -> Result<bool, UploadError> {
    let value = get(options, key);
    if is_absent(&value) {
        return Ok(default);
    }
    value
        .as_bool()
        .ok_or_else(|| UploadError::invalid(format!("options.{key} must be true or false")))
}

/// A plain copy of the `known` properties of `object`, read as the checks read them
/// (through getters and the prototype chain), so that it crosses to the Worker with the
/// same meaning: a class instance would arrive stripped of its prototype, or not at all.
pub fn portable(object: &JsValue, known: &[&str]) -> JsValue {
    let copy: JsValue = Object::new().into();
    if is_absent(object) {
        return copy;
    }
    for key in known {
        let value = get(object, key);
        if !value.is_undefined() {
            crate::web::js::set(&copy, key, &value);
        }
    }
    copy
}

/// The options of `uploadFile` as the Worker needs them: URLs made absolute against the
/// page's address (the Worker's own address is the package's).
pub fn for_worker(options: &JsValue, input: &UploadInput) -> JsValue {
    let copy = portable(options, &KNOWN_OPTIONS);
    let set = |key: &str, url: &str| crate::web::js::set(&copy, key, &JsValue::from_str(url));
    if input.settings.endpoint != NO_ENDPOINT {
        set("endpoint", &input.settings.endpoint);
    }
    if let Some(url) = &input.upload_url {
        set("uploadUrl", url);
    }
    // The hooks as a plain object of bound functions: a class instance would not cross.
    if let Some(multipart) = &input.multipart {
        let hooks: JsValue = Object::new().into();
        for (hook, function) in Hook::ALL.iter().zip(&multipart.hooks) {
            crate::web::js::set(&hooks, hook.name(), function);
        }
        crate::web::js::set(&copy, "s3", &hooks);
    }
    copy
}

/// The `file` argument: a `Blob` or a `File`.
/// (Recognised by its tag rather than `instanceof`: a File from an iframe's realm counts.)
pub(crate) fn blob_arg(file: &JsValue) -> Result<Blob, UploadError> {
    if !matches!(kind_of(file).as_str(), "File" | "Blob") {
        return Err(UploadError::invalid("file must be a Blob or a File"));
    }
    Ok(file.clone().unchecked_into())
}

/// `blob` as a File, when it is one (of any realm).
pub(crate) fn as_file(blob: &Blob) -> Option<&File> {
    (kind_of(blob) == "File").then(|| blob.unchecked_ref::<File>())
}

/// The `onProgress` argument: a function, or nothing.
pub(crate) fn progress_arg(on_progress: &JsValue) -> Result<Option<Function>, UploadError> {
    if is_absent(on_progress) {
        return Ok(None);
    }
    on_progress
        .clone()
        .dyn_into::<Function>()
        .map(Some)
        .map_err(|_| UploadError::invalid("onProgress must be a function, null or undefined"))
}

/// A JavaScript value that means "not given".
pub(crate) fn is_absent(value: &JsValue) -> bool {
    value.is_undefined() || value.is_null()
}

/// Refuses an option that the chosen protocol would silently ignore.
fn only_for(
    options: &JsValue,
    key: &str,
    protocol: ProtocolKind,
    allowed: &[ProtocolKind],
) -> Result<(), UploadError> {
    if is_absent(&get(options, key)) || allowed.contains(&protocol) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|p| p.name()).collect();
    Err(UploadError::invalid(format!(
        "options.{key} applies to protocol \"{}\" only, not \"{}\"",
        names.join("\" and \""),
        protocol.name()
    )))
}

/// Checks the three arguments of `uploadFile`.
pub fn parse(
    file: &JsValue,
    on_progress: &JsValue,
    options: &JsValue,
) -> Result<UploadInput, UploadError> {
    let blob = blob_arg(file)?;
    let on_progress = progress_arg(on_progress)?;
    if !options.is_object() || options.is_function() || js_sys::Array::is_array(options) {
        return Err(UploadError::invalid(
            "options must be an object with at least an endpoint",
        ));
    }
    reject_unknown(options, &KNOWN_OPTIONS, "options")?;

    let protocol = match optional_string(options, "protocol")? {
        Some(name) => ProtocolKind::parse(&name)?,
        None => ProtocolKind::Tus,
    };
    use ProtocolKind::{Put, Range, Tus, S3};
    only_for(options, "chunkSize", protocol, &[Tus, Range, S3])?;
    only_for(options, "metadata", protocol, &[Tus, S3])?;
    only_for(options, "filename", protocol, &[Tus, S3])?;
    only_for(options, "s3", protocol, &[S3])?;
    only_for(options, "s3Upload", protocol, &[S3])?;
    only_for(options, "parallelUploads", protocol, &[S3])?;
    only_for(options, "headers", protocol, &[Tus, Put, Range])?;
    only_for(options, "contentType", protocol, &[Put])?;
    only_for(options, "target", protocol, &[Put])?;
    if !is_absent(&get(options, "target")) && !is_absent(&get(options, "headers")) {
        return Err(UploadError::invalid(
            "options.headers cannot be combined with options.target: target() supplies the headers",
        ));
    }
    // s3: the hooks do everything; an endpoint only names the destination for resuming.
    let endpoint = match optional_string(options, "endpoint")?.filter(|e| !e.trim().is_empty()) {
        Some(endpoint) => absolute_url(&endpoint, "endpoint")?,
        None if protocol == S3 => NO_ENDPOINT.to_owned(),
        None => {
            return Err(UploadError::invalid(
                "options.endpoint is required: the URL where uploads are created",
            ))
        }
    };
    only_for(options, "uploadUrl", protocol, &[Tus])?;
    let upload_url = optional_string(options, "uploadUrl")?
        .map(|url| match url.trim() {
            "" => Err(UploadError::invalid("options.uploadUrl must not be empty")),
            url => absolute_url(url, "uploadUrl"),
        })
        .transpose()?;
    let resume_value = get(options, "resume");
    if protocol == Put && resume_value.as_bool() != Some(false) && !is_absent(&resume_value) {
        return Err(UploadError::invalid(
            "options.resume: the put protocol cannot resume (one PUT starts over); use tus, range or s3",
        ));
    }
    let resume = resume_policy(&resume_value)?.filter(|_| protocol != Put);

    let chunk_size = optional_number(options, "options", "chunkSize", 1, MAX_SAFE_INTEGER as u64)?
        .unwrap_or(DEFAULT_CHUNK_SIZE);
    if protocol == Range {
        crate::core::protocol::range::check_chunk_size(chunk_size)?;
    }
    if protocol == S3 && chunk_size < MIN_PART_SIZE {
        return Err(UploadError::invalid(format!(
            "options.chunkSize must be at least 5 MiB ({MIN_PART_SIZE} bytes) for protocol \"s3\": S3's smallest part"
        )));
    }
    let md5 = optional_bool(options, "md5", false)?;
    let worker = optional_bool(options, "worker", true)?;
    let target_value = get(options, "target");
    let target = if is_absent(&target_value) {
        None
    } else {
        Some(target_value.dyn_into::<Function>().map_err(|_| {
            UploadError::invalid("options.target must be a function returning { url, headers }")
        })?)
    };
    let progress_interval_ms =
        optional_number(options, "options", "progressIntervalMs", 0, 60_000)?
            .map_or(DEFAULT_PROGRESS_INTERVAL_MS, |v| v as u32);
    let timeout_ms = optional_number(options, "options", "timeoutMs", 0, 86_400_000)?
        .map_or(DEFAULT_TIMEOUT_MS, |v| v as u32);
    let retry = retry_policy(&get(options, "retry"))?;

    let headers_value = get(options, "headers");
    let headers = if headers_value.is_undefined() || headers_value.is_null() {
        HeaderSource::Fixed(Vec::new())
    } else if let Some(callback) = headers_value.dyn_ref::<Function>() {
        HeaderSource::Callback(callback.clone())
    } else {
        HeaderSource::Fixed(string_map(&headers_value, "options.headers")?)
    };

    let signal = optional_signal(options)?;

    let fresh_url_per_attempt = target.is_some();
    let (default_name, default_type) = describe(&blob);
    // A default only: a Content-Type among the caller's (signed) headers wins.
    let content_type = optional_string(options, "contentType")?
        .or_else(|| Some(blob.type_()))
        .filter(|kind| !kind.is_empty());
    let filename = optional_string(options, "filename")?.unwrap_or(default_name);
    let metadata_value = get(options, "metadata");
    let callers_metadata = if metadata_value.is_undefined() || metadata_value.is_null() {
        Vec::new()
    } else {
        string_map(&metadata_value, "options.metadata")?
    };
    let multipart = if protocol == S3 {
        Some(Multipart {
            hooks: s3_hooks(&get(options, "s3"))?,
            parallel: optional_number(options, "options", "parallelUploads", 1, 16)?
                .map_or(4, |n| n as u32),
            continue_upload: s3_upload(&get(options, "s3Upload"))?,
            name: filename.clone(),
            kind: blob.type_(),
            metadata: callers_metadata.clone(),
        })
    } else {
        None
    };
    let metadata = merge_metadata(
        vec![
            ("filename".into(), filename),
            ("filetype".into(), default_type),
        ],
        callers_metadata,
    )?;

    Ok(UploadInput {
        size: blob.size() as u64,
        blob,
        on_progress,
        signal,
        target,
        headers,
        worker,
        resume,
        settings: UploadSettings {
            protocol,
            content_type,
            fresh_url_per_attempt,
            md5,
            endpoint,
            chunk_size,
            metadata,
            retry,
            progress_interval_ms,
            timeout_ms,
            resume_url: upload_url.clone(),
        },
        upload_url,
        multipart,
    })
}

/// Checks the arguments of `sha256File(file, options)`: the Blob, the optional
/// `options.signal` and whether the Worker may be used.
pub fn parse_sha256(
    file: &JsValue,
    options: &JsValue,
) -> Result<(Blob, Option<AbortSignal>, bool), UploadError> {
    let blob = blob_arg(file)?;
    if is_absent(options) {
        return Ok((blob, None, true));
    }
    if !options.is_object() || options.is_function() || js_sys::Array::is_array(options) {
        return Err(UploadError::invalid("options must be an object"));
    }
    reject_unknown(options, &SHA256_OPTIONS, "options")?;
    Ok((
        blob,
        optional_signal(options)?,
        optional_bool(options, "worker", true)?,
    ))
}

/// `options.signal`, which must be an AbortSignal (of any realm) when given.
pub(crate) fn optional_signal(options: &JsValue) -> Result<Option<AbortSignal>, UploadError> {
    let value = get(options, "signal");
    if is_absent(&value) {
        return Ok(None);
    }
    if kind_of(&value) != "AbortSignal" {
        return Err(UploadError::invalid(
            "options.signal must be an AbortSignal",
        ));
    }
    Ok(Some(value.unchecked_into()))
}

/// A File's name and type; a plain Blob is called "blob", as in FormData.
pub(crate) fn describe(blob: &Blob) -> (String, String) {
    let name = as_file(blob).map_or_else(|| "blob".to_owned(), File::name);
    let kind = blob.type_();
    let kind = if kind.is_empty() {
        "application/octet-stream".to_owned()
    } else {
        kind
    };
    (name, kind)
}

/// Resolves a possibly relative URL (`options.<key>`) as the page's links are: against its
/// base URL (a `<base>` element, or an `about:srcdoc` iframe's parent), else its address.
fn absolute_url(url: &str, key: &str) -> Result<String, UploadError> {
    let global = js_sys::global();
    let base = get(&get(&global, "document"), "baseURI")
        .as_string()
        .or_else(|| get(&get(&global, "location"), "href").as_string());
    let parsed = match &base {
        Some(base) => web_sys::Url::new_with_base(url, base),
        None => web_sys::Url::new(url),
    }
    .map_err(|_| UploadError::invalid(format!("options.{key} is not a valid URL")))?;
    let href: String = parsed.href();
    check_endpoint(&href).map_err(|e| UploadError::invalid(format!("options.{key}: {e}")))?;
    Ok(href)
}

/// `options.resume` (tus, range, s3): `true` or absent (the default policy), `false` (off), or
/// `{ maxRecords, maxAgeMs }`.
fn resume_policy(value: &JsValue) -> Result<Option<ResumePolicy>, UploadError> {
    let defaults = ResumePolicy::default();
    if is_absent(value) {
        return Ok(Some(defaults));
    }
    if let Some(on) = value.as_bool() {
        return Ok(on.then_some(defaults));
    }
    if !value.is_object() || value.is_function() || js_sys::Array::is_array(value) {
        return Err(UploadError::invalid(
            "options.resume must be true, false or { maxRecords, maxAgeMs }",
        ));
    }
    reject_unknown(value, &["maxRecords", "maxAgeMs"], "options.resume")?;
    Ok(Some(ResumePolicy {
        max_records: optional_number(value, "options.resume", "maxRecords", 1, 10_000)?
            .map_or(defaults.max_records, |n| n as u32),
        max_age_ms: optional_number(value, "options.resume", "maxAgeMs", 1, 31 * 86_400_000)?
            .map_or(defaults.max_age_ms, |n| n as f64),
    }))
}

pub(crate) fn reject_unknown(
    object: &JsValue,
    known: &[&str],
    what: &str,
) -> Result<(), UploadError> {
    for key in Object::keys(object.unchecked_ref::<Object>()).iter() {
        let key = key.as_string().unwrap_or_default();
        if !known.contains(&key.as_str()) {
            return Err(UploadError::invalid(format!(
                "{what}.{key} is not an option; known options: {}",
                known.join(", ")
            )));
        }
    }
    Ok(())
}

fn optional_string(object: &JsValue, key: &str) -> Result<Option<String>, UploadError> {
    let value = get(object, key);
    if is_absent(&value) {
        return Ok(None);
    }
    value
        .as_string()
        .map(Some)
        .ok_or_else(|| UploadError::invalid(format!("options.{key} must be a string")))
}

/// `object[key]` as a whole number in `min..=max`, or `None` when absent; `path` names the
/// object in messages (`options`, `options.retry`).
pub(crate) fn optional_number(
    object: &JsValue,
    path: &str,
    key: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, UploadError> {
    let value = get(object, key);
    if is_absent(&value) {
        return Ok(None);
    }
    let number = value
        .as_f64()
        .ok_or_else(|| UploadError::invalid(format!("{path}.{key} must be a number")))?;
    whole_number(&format!("{path}.{key}"), number, min, max).map(Some)
}

pub(crate) fn retry_policy(value: &JsValue) -> Result<RetryPolicy, UploadError> {
    let defaults = RetryPolicy::default();
    if is_absent(value) {
        return Ok(defaults);
    }
    if !value.is_object() || js_sys::Array::is_array(value) {
        return Err(UploadError::invalid("options.retry must be an object"));
    }
    reject_unknown(value, &KNOWN_RETRY_OPTIONS, "options.retry")?;
    let field = |key: &str, max: u64, default: u32| -> Result<u32, UploadError> {
        Ok(optional_number(value, "options.retry", key, 0, max)?.map_or(default, |n| n as u32))
    };
    // One bound given alone moves the other's default along: a maximum below the default
    // base lowers the base, a base above the default maximum raises the maximum.
    let given = |key: &str| !is_absent(&get(value, key));
    let base = field("baseDelayMs", 3_600_000, defaults.base_delay_ms)?;
    let max = field("maxDelayMs", 3_600_000, defaults.max_delay_ms)?;
    let (base_delay_ms, max_delay_ms) = match (given("baseDelayMs"), given("maxDelayMs")) {
        (false, true) => (base.min(max), max),
        (true, false) => (base, max.max(base)),
        _ => (base, max),
    };
    let policy = RetryPolicy {
        attempts: field("attempts", 1000, defaults.attempts)?,
        base_delay_ms,
        max_delay_ms,
    };
    if policy.max_delay_ms < policy.base_delay_ms {
        return Err(UploadError::invalid(
            "options.retry.maxDelayMs must not be below baseDelayMs",
        ));
    }
    Ok(policy)
}

/// A plain object, a `Map` or a `Headers` whose values are all strings, as `(key, value)`
/// pairs. Values are never quoted in errors: they may be tokens.
pub fn string_map(value: &JsValue, what: &str) -> Result<Vec<(String, String)>, UploadError> {
    if !value.is_object() || js_sys::Array::is_array(value) || value.is_function() {
        return Err(UploadError::invalid(format!(
            "{what} must be an object of strings"
        )));
    }
    // Map and Headers (of any realm) keep their entries behind an iterator, not as
    // properties: read as an object, they would look empty.
    let entries: Vec<JsValue> = if matches!(kind_of(value).as_str(), "Map" | "Headers") {
        js_sys::try_iter(value)
            .ok()
            .flatten()
            .map(|entries| entries.flatten().collect())
            .unwrap_or_default()
    } else {
        Object::entries(value.unchecked_ref::<Object>())
            .iter()
            .collect()
    };
    entries
        .into_iter()
        .map(|entry| {
            let pair: js_sys::Array = entry.unchecked_into();
            let key = pair.get(0).as_string().unwrap_or_default();
            let val = pair
                .get(1)
                .as_string()
                .ok_or_else(|| UploadError::invalid(format!("{what}.{key} must be a string")))?;
            Ok((key, val))
        })
        .collect()
}
