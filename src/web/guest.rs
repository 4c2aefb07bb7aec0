//! The web-messaging attachment flow in the browser (`attachFile`), over the widget's own
//! guest session: validate the file against the session's rules, ask for a presigned URL
//! (`onAttachment`), PUT the file with the engine's `put` protocol, and wait for the
//! server's verdict (`UploadSuccessEvent`). Rate limits are waited out, an expired URL or
//! upload is retried with a fresh URL, and an abort deletes the attachment.
//!
//! The widget owns the WebSocket; chunkup only sees a small session object: `token`,
//! `send(message)`, `subscribe(listener) -> unsubscribe` and, optionally, the
//! `sessionResponse` body. Messages, rules and error codes are in `core::guest`.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Function;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{AbortSignal, Blob};

use crate::core::encoding::hex;
use crate::core::engine::{upload, EngineConfig, UploadSummary};
use crate::core::error::UploadError;
use crate::core::guest::{self, Action, AttachFlow, AttachProgress, GuestEvent, SessionRules};
use crate::core::options::{DEFAULT_PROGRESS_INTERVAL_MS, DEFAULT_TIMEOUT_MS};
use crate::core::progress::Phase;
use crate::core::protocol::put::PutUpload;
use crate::core::protocol::Protocol;
use crate::core::retry::RetryPolicy;
use crate::core::value::{object, Value};
use crate::web::convert::{from_js, to_js};
use crate::web::env::{BrowserEnv, ProgressCallback};
use crate::web::io::{self, Failure, Inbox};
use crate::web::js::{get, set};
use crate::web::options::{
    blob_arg, describe, is_absent, optional_bool, optional_number, optional_signal, portable,
    progress_arg, reject_unknown, retry_policy, HeaderSource,
};
use crate::web::source::{digest_whole_file, FileSource};
use crate::web::transport::Transport;
use crate::web::worker::{apart, offload, Pacer};

const KNOWN_OPTIONS: [&str; 7] = [
    "worker",
    "signal",
    "md5",
    "retry",
    "timeoutMs",
    "eventTimeoutMs",
    "progressIntervalMs",
];
/// How long to wait for the server's answers on the socket by default.
const DEFAULT_EVENT_TIMEOUT_MS: u32 = 60_000;

/// What the widget hands over.
struct Session {
    token: String,
    this: JsValue,
    send: Function,
    subscribe: Function,
    rules: Option<SessionRules>,
}

impl Session {
    /// A plain object with what chunkup uses of the session, for the Worker.
    fn portable(&self) -> JsValue {
        let copy: JsValue = js_sys::Object::new().into();
        set(&copy, "token", &JsValue::from_str(&self.token));
        set(&copy, "send", &self.send.bind0(&self.this));
        set(&copy, "subscribe", &self.subscribe.bind0(&self.this));
        set(
            &copy,
            "sessionResponse",
            &get(&self.this, "sessionResponse"),
        );
        copy
    }

    fn parse(value: &JsValue) -> Result<Session, UploadError> {
        let invalid = |what: &str| UploadError::invalid(format!("session.{what}"));
        if !value.is_object() {
            return Err(UploadError::invalid(
                "session must be an object with token, send(message) and subscribe(listener)",
            ));
        }
        let function = |key: &str| get(value, key).dyn_into::<Function>().ok();
        Ok(Session {
            token: get(value, "token")
                .as_string()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| invalid("token must be the session token string"))?,
            send: function("send").ok_or_else(|| invalid("send must be a function(message)"))?,
            subscribe: function("subscribe").ok_or_else(|| {
                invalid("subscribe must be a function(listener) returning an unsubscribe function")
            })?,
            rules: rules_of(&get(value, "sessionResponse"))?,
            this: value.clone(),
        })
    }

    /// Hands `message` to the widget's `send` and leaves it to settle (for at most
    /// `timeout_ms`), awaited by nothing: a clean-up.
    fn send_detached(&self, message: &Value, timeout_ms: u32) {
        io::call_detached(&self.send.bind0(&self.this), &to_js(message), timeout_ms);
    }

    /// Sends one guest request. A `send` that returns a promise (an async socket wrapper,
    /// or the Worker's stand-in for the page's `send`) is awaited, for at most `timeout_ms`
    /// (0: for ever) and no longer than `signal` allows; its rejection is a failure like a
    /// throw.
    async fn send(
        &self,
        message: &Value,
        timeout_ms: u32,
        signal: &Option<AbortSignal>,
    ) -> Result<(), UploadError> {
        let object = to_js(message);
        let (method, purpose) = (crate::core::http::Method::Post, "send a chat message");
        io::call(&self.send.bind0(&self.this), &object, timeout_ms, signal)
            .await
            .map(|_| ())
            .map_err(|failure| {
                failure.into_error(|other| match other {
                    Failure::Timeout => UploadError::Timeout {
                        method,
                        purpose,
                        timeout_ms,
                    },
                    Failure::Threw(detail) | Failure::Rejected(detail) => UploadError::Network {
                        method,
                        purpose,
                        detail: format!("session.send threw: {detail}"),
                    },
                    _ => UploadError::Network {
                        method,
                        purpose,
                        detail: "session.send failed".into(),
                    },
                })
            })
    }
}

/// The rules in a `SessionResponse` body, if one was given.
fn rules_of(session_response: &JsValue) -> Result<Option<SessionRules>, UploadError> {
    if is_absent(session_response) {
        return Ok(None);
    }
    SessionRules::from_value(&from_js(session_response))
        .map(Some)
        .ok_or_else(|| {
            UploadError::invalid("sessionResponse must be the body of the SessionResponse message")
        })
}

/// The flow's subscription to the session's messages (queued by the `Inbox` of
/// src/js/io.js, a plain JavaScript function the widget may keep calling); unsubscribes
/// when dropped.
struct Subscription {
    inbox: Inbox,
    unsubscribe: Function,
}

impl Subscription {
    /// Subscribes to the session's messages. A `subscribe` that returns a promise of the
    /// unsubscribe function (the Worker's stand-in for the page's `subscribe`) is awaited;
    /// if the upload is aborted first, the subscription that arrives later is ended then.
    async fn new(
        session: &Session,
        signal: &Option<AbortSignal>,
    ) -> Result<Subscription, UploadError> {
        let inbox = Inbox::new();
        let threw =
            |detail: String| UploadError::invalid(format!("session.subscribe threw: {detail}"));
        let returned = inbox
            .subscribe_to(&session.subscribe.bind0(&session.this), signal)
            .await
            .map_err(|failure| {
                failure.into_error(|other| match other {
                    Failure::Threw(detail) | Failure::Rejected(detail) => threw(detail),
                    _ => threw("an unknown JavaScript error".into()),
                })
            })?;
        let unsubscribe = returned.dyn_into::<Function>().map_err(|_| {
            UploadError::invalid("session.subscribe must return an unsubscribe function")
        })?;
        Ok(Subscription { inbox, unsubscribe })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // A widget whose unsubscribe fails keeps calling the listener: it only queues into
        // an inbox nobody reads, and is collected with it.
        let _ = self.unsubscribe.call0(&JsValue::NULL);
    }
}

/// `validateAttachment(sessionResponse, file)`: the checks `attachFile` makes first.
pub fn validate_attachment(session_response: &JsValue, file: &JsValue) -> Result<(), UploadError> {
    let blob = blob_arg(file)?;
    let (name, kind) = describe(&blob);
    guest::validate(
        rules_of(session_response)?.as_ref(),
        &name,
        &kind,
        blob.size() as u64,
    )
}

/// `buildAttachmentMessage(token, text, attachmentIds)`: the `onMessage` request.
pub fn build_attachment_message(
    token: &str,
    text: &str,
    ids: &JsValue,
) -> Result<JsValue, UploadError> {
    let ids: Vec<String> = js_sys::Array::is_array(ids)
        .then(|| {
            js_sys::Array::from(ids)
                .iter()
                .map(|id| id.as_string())
                .collect::<Option<_>>()
        })
        .flatten()
        .ok_or_else(|| UploadError::invalid("attachmentIds must be an array of strings"))?;
    Ok(to_js(&guest::on_message(token, text, &ids)))
}

struct Settings {
    worker: bool,
    signal: Option<AbortSignal>,
    md5: bool,
    retry: RetryPolicy,
    timeout_ms: u32,
    event_timeout_ms: u32,
    progress_interval_ms: u32,
}

fn settings(options: &JsValue) -> Result<Settings, UploadError> {
    if is_absent(options) {
        return settings(&js_sys::Object::new().into());
    }
    if !options.is_object() || js_sys::Array::is_array(options) {
        return Err(UploadError::invalid("options must be an object"));
    }
    reject_unknown(options, &KNOWN_OPTIONS, "options")?;
    let number = |key, max, default| {
        optional_number(options, "options", key, 0, max).map(|n| n.map_or(default, |n| n as u32))
    };
    Ok(Settings {
        worker: optional_bool(options, "worker", true)?,
        signal: optional_signal(options)?,
        md5: optional_bool(options, "md5", false)?,
        retry: retry_policy(&get(options, "retry"))?,
        timeout_ms: number("timeoutMs", 86_400_000, DEFAULT_TIMEOUT_MS)?,
        event_timeout_ms: number("eventTimeoutMs", 86_400_000, DEFAULT_EVENT_TIMEOUT_MS)?,
        progress_interval_ms: number("progressIntervalMs", 60_000, DEFAULT_PROGRESS_INTERVAL_MS)?,
    })
}

/// One attachment on its way: the pure [`AttachFlow`] decides, this performs.
struct Flow<'a> {
    session: &'a Session,
    inbox: Subscription,
    signal: Option<AbortSignal>,
    blob: Blob,
    name: String,
    kind: String,
    size: u64,
    attachment_id: String,
    md5: Option<String>,
    progress: Rc<ProgressCallback>,
    relay: Rc<RefCell<AttachProgress>>,
    settings: Settings,
}

/// `attachFile(session, file, onProgress, options)`: checks everything it can without
/// traffic, then runs the flow in chunkup's Worker (the session's `send` and `subscribe`
/// stay on the page and are called through messages) or, where none can start or with
/// `worker: false`, here.
pub async fn attach_file(
    session: JsValue,
    file: JsValue,
    on_progress: JsValue,
    options: JsValue,
) -> Result<JsValue, JsValue> {
    let js_error = |e: UploadError| crate::web::convert::error_to_js(&e);
    // As in `uploadFile` (src/web/mod.rs): on a page, yield before and after the checks.
    let pacer = Pacer::for_this_thread();
    pacer.pace().await;
    let input = AttachInput::parse(&session, file.clone(), on_progress.clone(), &options)
        .map_err(js_error)?;
    if input
        .settings
        .signal
        .as_ref()
        .is_some_and(AbortSignal::aborted)
    {
        return Err(js_error(UploadError::Aborted));
    }
    // The widget's session may be a class holding its socket: only what chunkup uses of it
    // crosses, its methods bound to it.
    let session = input.session.portable();
    let options = portable(&options, &KNOWN_OPTIONS);
    let args = [&session, &file, &on_progress, &options];
    if let Some(answer) = offload(
        input.settings.worker,
        "attachFile",
        &args,
        &input.settings.signal,
    )
    .await
    {
        return answer;
    }
    pacer.pace().await;
    apart(attach_here(input)).await.map_err(js_error)
}

/// The checked arguments of `attachFile`.
struct AttachInput {
    session: Session,
    blob: Blob,
    on_progress: Option<Function>,
    settings: Settings,
    name: String,
    kind: String,
    size: u64,
}

impl AttachInput {
    fn parse(
        session: &JsValue,
        file: JsValue,
        on_progress: JsValue,
        options: &JsValue,
    ) -> Result<AttachInput, UploadError> {
        let session = Session::parse(session)?;
        let blob = blob_arg(&file)?;
        let on_progress = progress_arg(&on_progress)?;
        let settings = settings(options)?;
        let (name, kind) = describe(&blob);
        let size = blob.size() as u64;
        guest::validate(session.rules.as_ref(), &name, &kind, size)?;
        Ok(AttachInput {
            session,
            blob,
            on_progress,
            settings,
            name,
            kind,
            size,
        })
    }
}

async fn attach_here(input: AttachInput) -> Result<JsValue, UploadError> {
    let AttachInput {
        session,
        blob,
        on_progress,
        settings,
        name,
        kind,
        size,
    } = input;
    let signal = settings.signal.clone();
    if io::fired(&signal) {
        return Err(UploadError::Aborted);
    }
    let md5 = if settings.md5 {
        Some(file_md5(&blob, &signal).await?)
    } else {
        None
    };
    let attachment_id = random_uuid()?;
    let request = guest::on_attachment(
        &session.token,
        &attachment_id,
        &name,
        &kind,
        size,
        md5.as_deref(),
    );
    let mut steps = AttachFlow::new(
        request,
        &attachment_id,
        settings.retry.attempts,
        settings.retry.max_delay_ms,
        settings.event_timeout_ms,
    );
    let flow = Flow {
        inbox: Subscription::new(&session, &signal).await?,
        session: &session,
        signal,
        blob,
        name,
        kind,
        size,
        attachment_id,
        md5,
        progress: ProgressCallback::new(on_progress),
        relay: Rc::default(),
        settings,
    };
    let outcome = flow.run(&mut steps).await;
    if outcome.is_err() && steps.url_requested() {
        // Best effort: an attachment that will not be sent must not linger on the server.
        // Sent, not awaited (as uploadFile's DELETE): a widget's send may hold a message
        // until its socket is back, and the failure, an abort above all, is known now.
        let delete = guest::delete_attachment(&session.token, &flow.attachment_id);
        session.send_detached(&delete, flow.settings.event_timeout_ms);
    }
    outcome
}

impl Flow<'_> {
    /// Performs what `steps` asks until the server confirmed the attachment.
    async fn run(&self, steps: &mut AttachFlow) -> Result<JsValue, UploadError> {
        let mut summary = None;
        self.before_upload(Phase::Starting, None);
        loop {
            match steps.next(js_sys::Date::now()) {
                Action::Send(request) => {
                    let timeout_ms = self.settings.event_timeout_ms;
                    self.session
                        .send(&request, timeout_ms, &self.signal)
                        .await?
                }
                Action::Receive { until_ms } => {
                    let event = self.next_event(until_ms).await?;
                    steps.on_event(event)?;
                }
                Action::Sleep { ms } => {
                    // A rate limit (4029) waited out before the URL is asked for again.
                    self.before_upload(Phase::Retrying, Some(ms));
                    io::sleep(ms, &self.signal).await?;
                    self.before_upload(Phase::Starting, None);
                }
                Action::Upload { url, headers } => {
                    let outcome = self
                        .put(url, headers)
                        .await
                        .map(|done| summary = Some(done));
                    steps.on_upload(outcome, js_sys::Date::now())?;
                }
                Action::Done { download_url } => {
                    if let Some(done) = self.relay.borrow_mut().confirmed() {
                        self.progress.deliver(&done);
                    }
                    let summary = summary.ok_or_else(|| {
                        UploadError::protocol("the server confirmed an upload that did not happen")
                    })?;
                    return Ok(self.result(&summary, &download_url));
                }
            }
        }
    }

    /// Tells the caller where the attachment stands before its PUT (see
    /// `AttachProgress::before_upload`).
    fn before_upload(&self, phase: Phase, retry_in_ms: Option<u32>) {
        let now = js_sys::Date::now();
        let progress = self
            .relay
            .borrow()
            .before_upload(self.size, phase, retry_in_ms, now);
        self.progress.deliver(&progress);
    }

    /// The PUT, with the presigned headers exactly as given and the declared type.
    async fn put(
        &self,
        url: String,
        headers: Vec<(String, String)>,
    ) -> Result<UploadSummary, UploadError> {
        let mut source = FileSource::new(self.blob.clone(), self.signal.clone());
        let transport = Transport::new(
            self.blob.clone(),
            HeaderSource::Fixed(headers),
            self.settings.timeout_ms,
            self.signal.clone(),
        );
        let relay = Rc::clone(&self.relay);
        let env = BrowserEnv::new(transport, Rc::clone(&self.progress))
            .adjusting(move |progress| relay.borrow_mut().adjust(progress));
        // As a trait object, like every upload: the engine is then compiled once, not once
        // per protocol type (the wasm's size).
        let mut protocol: Box<dyn Protocol> = Box::new(PutUpload::new(
            url,
            self.size,
            Some(self.kind.clone()),
            false,
        ));
        let config = EngineConfig {
            retry: self.settings.retry,
            progress_interval_ms: self.settings.progress_interval_ms,
            md5: false,
        };
        upload(protocol.as_mut(), &env, &mut source, config).await
    }

    /// The next server message, before `until_ms` and unless aborted.
    async fn next_event(&self, until_ms: Option<f64>) -> Result<GuestEvent, UploadError> {
        let left = until_ms.map_or(0, |at| (at - js_sys::Date::now()).max(1.0) as u32);
        let next = self
            .inbox
            .inbox
            .next_message(left, &io::signal_arg(&self.signal));
        match io::wait(next).await {
            Ok(message) => Ok(GuestEvent::from_value(&from_js(&message))),
            Err(Failure::Aborted) => Err(UploadError::Aborted),
            Err(_) => Err(guest::no_response()),
        }
    }

    /// What `attachFile` resolves to.
    fn result(&self, summary: &UploadSummary, download_url: &str) -> JsValue {
        to_js(&object([
            ("attachmentId", self.attachment_id.as_str().into()),
            ("downloadUrl", download_url.into()),
            ("sha256", hex(&summary.sha256).into()),
            ("md5", self.md5.as_deref().into()),
            ("size", self.size.into()),
            ("fileName", self.name.as_str().into()),
            ("fileType", self.kind.as_str().into()),
            ("retries", summary.retries.into()),
        ]))
    }
}

/// The MD5 the guest API's `fileMd5` wants, hex, read through the same stream as uploads.
async fn file_md5(blob: &Blob, signal: &Option<AbortSignal>) -> Result<String, UploadError> {
    digest_whole_file(blob, signal, true)
        .await?
        .file_md5()
        .map(|md5| hex(&md5))
        .ok_or_else(|| UploadError::protocol("the MD5 was not kept"))
}

/// `crypto.randomUUID()`: attachment ids are UUIDs in the guest API.
fn random_uuid() -> Result<String, UploadError> {
    let crypto = get(&js_sys::global(), "crypto");
    get(&crypto, "randomUUID")
        .dyn_into::<Function>()
        .ok()
        .and_then(|f| f.call0(&crypto).ok())
        .and_then(|id| id.as_string())
        .ok_or_else(|| {
            UploadError::invalid("crypto.randomUUID is not available (a secure context is needed)")
        })
}
