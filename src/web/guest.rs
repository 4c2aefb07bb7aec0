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
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use js_sys::{Function, JSON};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{AbortSignal, Blob};

use crate::core::encoding::hex;
use crate::core::engine::{upload, EngineConfig, UploadSummary};
use crate::core::error::UploadError;
use crate::core::guest::{
    self, AttachProgress, DeleteAttachment, Envelope, GuestEvent, OnAttachment, OnMessage,
    SessionRules,
};
use crate::core::options::{DEFAULT_PROGRESS_INTERVAL_MS, DEFAULT_TIMEOUT_MS};
use crate::core::protocol::put::PutUpload;
use crate::core::retry::RetryPolicy;
use crate::web::abort::AbortWatch;
use crate::web::convert::to_js;
use crate::web::env::{BrowserEnv, ProgressCallback};
use crate::web::js::{get, message_of};
use crate::web::options::{
    describe, is_absent, optional_number, reject_unknown, retry_policy, HeaderSource,
};
use crate::web::source::{digest_whole_file, FileSource};
use crate::web::transport::{within, Transport};

const KNOWN_OPTIONS: [&str; 6] = [
    "signal",
    "md5",
    "retry",
    "timeoutMs",
    "eventTimeoutMs",
    "progressIntervalMs",
];
/// Fresh URLs asked for after an expired URL or a failed upload, before giving up.
const FRESH_URL_ATTEMPTS: u32 = 3;
/// How long to wait for the server's answers on the socket by default.
const DEFAULT_EVENT_TIMEOUT_MS: u32 = 60_000;

/// What `attachFile` resolves to.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AttachResult<'a> {
    attachment_id: &'a str,
    download_url: &'a str,
    sha256: String,
    md5: Option<&'a str>,
    size: u64,
    file_name: &'a str,
    file_type: &'a str,
    retries: u32,
}

/// What the widget hands over.
struct Session {
    token: String,
    this: JsValue,
    send: Function,
    subscribe: Function,
    rules: Option<SessionRules>,
}

impl Session {
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

    fn send<T: serde::Serialize>(&self, message: &T) -> Result<(), UploadError> {
        let object = to_js(message)?;
        self.send
            .call1(&self.this, &object)
            .map(|_| ())
            .map_err(|e| UploadError::Network {
                method: crate::core::http::Method::Post,
                purpose: "send a chat message",
                detail: format!("session.send threw: {}", message_of(&e)),
            })
    }
}

/// The rules in a `SessionResponse` body, if one was given.
fn rules_of(session_response: &JsValue) -> Result<Option<SessionRules>, UploadError> {
    if is_absent(session_response) {
        return Ok(None);
    }
    serde_wasm_bindgen::from_value(session_response.clone())
        .map(Some)
        .map_err(|_| {
            UploadError::invalid("sessionResponse must be the body of the SessionResponse message")
        })
}

#[derive(Default)]
struct Inbox {
    queue: VecDeque<JsValue>,
    waker: Option<Waker>,
}

/// The flow's subscription to the session's messages; unsubscribes when dropped.
struct Subscription {
    inbox: Rc<RefCell<Inbox>>,
    listener: Option<Closure<dyn FnMut(JsValue)>>,
    unsubscribe: Function,
}

impl Subscription {
    fn new(session: &Session) -> Result<Subscription, UploadError> {
        let inbox = Rc::new(RefCell::new(Inbox::default()));
        let sink = Rc::clone(&inbox);
        let listener = Closure::<dyn FnMut(JsValue)>::new(move |message: JsValue| {
            // Widgets may pass the parsed object or the raw text.
            let message = match message.as_string() {
                Some(text) => JSON::parse(&text).unwrap_or(JsValue::NULL),
                None => message,
            };
            let mut inbox = sink.borrow_mut();
            inbox.queue.push_back(message);
            if let Some(waker) = inbox.waker.take() {
                waker.wake();
            }
        });
        let returned = session
            .subscribe
            .call1(&session.this, listener.as_ref())
            .map_err(|e| {
                UploadError::invalid(format!("session.subscribe threw: {}", message_of(&e)))
            })?;
        let Ok(unsubscribe) = returned.dyn_into::<Function>() else {
            // Without a way to unsubscribe, the widget would call a freed listener later.
            listener.forget();
            return Err(UploadError::invalid(
                "session.subscribe must return an unsubscribe function",
            ));
        };
        Ok(Subscription {
            inbox,
            listener: Some(listener),
            unsubscribe,
        })
    }

    async fn next(&self) -> JsValue {
        poll_fn(|cx| {
            let mut inbox = self.inbox.borrow_mut();
            match inbox.queue.pop_front() {
                Some(text) => Poll::Ready(text),
                None => {
                    inbox.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if self.unsubscribe.call0(&JsValue::NULL).is_err() {
            // Still subscribed: keep the listener alive (it only queues into a dead inbox)
            // rather than let the widget call freed memory.
            if let Some(listener) = self.listener.take() {
                listener.forget();
            }
        }
    }
}

/// `validateAttachment(sessionResponse, file)`: the checks `attachFile` makes first.
pub fn validate_attachment(session_response: &JsValue, file: &JsValue) -> Result<(), UploadError> {
    let blob: Blob = file
        .clone()
        .dyn_into()
        .map_err(|_| UploadError::invalid("file must be a Blob or a File"))?;
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
    to_js(&OnMessage::new(token, text, &ids))
}

struct Settings {
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
    let signal = get(options, "signal");
    let md5 = get(options, "md5");
    let number = |key, max, default| {
        optional_number(options, "options", key, 0, max).map(|n| n.map_or(default, |n| n as u32))
    };
    Ok(Settings {
        signal: if is_absent(&signal) {
            None
        } else {
            Some(
                signal
                    .dyn_into()
                    .map_err(|_| UploadError::invalid("options.signal must be an AbortSignal"))?,
            )
        },
        md5: if is_absent(&md5) {
            false
        } else {
            md5.as_bool()
                .ok_or_else(|| UploadError::invalid("options.md5 must be true or false"))?
        },
        retry: retry_policy(&get(options, "retry"))?,
        timeout_ms: number("timeoutMs", 86_400_000, DEFAULT_TIMEOUT_MS)?,
        event_timeout_ms: number("eventTimeoutMs", 86_400_000, DEFAULT_EVENT_TIMEOUT_MS)?,
        progress_interval_ms: number("progressIntervalMs", 60_000, DEFAULT_PROGRESS_INTERVAL_MS)?,
    })
}

/// One attachment on its way.
struct Flow<'a> {
    session: &'a Session,
    inbox: Subscription,
    abort: Rc<AbortWatch>,
    blob: Blob,
    name: String,
    kind: String,
    size: u64,
    attachment_id: String,
    md5: Option<String>,
    progress: Rc<ProgressCallback>,
    relay: Rc<RefCell<AttachProgress>>,
    settings: Settings,
    /// An `onAttachment` went out, so the server may hold something to delete.
    url_requested: bool,
}

/// `attachFile(session, file, onProgress, options)`.
pub async fn attach_file(
    session: JsValue,
    file: JsValue,
    on_progress: JsValue,
    options: JsValue,
) -> Result<JsValue, UploadError> {
    let session = Session::parse(&session)?;
    let blob: Blob = file
        .dyn_into()
        .map_err(|_| UploadError::invalid("file must be a Blob or a File"))?;
    let on_progress = if is_absent(&on_progress) {
        None
    } else {
        Some(on_progress.dyn_into::<Function>().map_err(|_| {
            UploadError::invalid("onProgress must be a function, null or undefined")
        })?)
    };
    let settings = settings(&options)?;
    let (name, kind) = describe(&blob);
    let size = blob.size() as u64;
    guest::validate(session.rules.as_ref(), &name, &kind, size)?;
    let abort = Rc::new(AbortWatch::new(settings.signal.clone()));
    if abort.fired() {
        return Err(UploadError::Aborted);
    }
    let md5 = if settings.md5 {
        Some(file_md5(&blob, &abort).await?)
    } else {
        None
    };
    let mut flow = Flow {
        inbox: Subscription::new(&session)?,
        session: &session,
        abort,
        blob,
        name,
        kind,
        size,
        attachment_id: random_uuid()?,
        md5,
        progress: ProgressCallback::new(on_progress),
        relay: Rc::default(),
        settings,
        url_requested: false,
    };
    let outcome = flow.run().await;
    if outcome.is_err() && flow.url_requested {
        // Best effort: an attachment that will not be sent must not linger on the server.
        let _ = session.send(&DeleteAttachment::new(&session.token, &flow.attachment_id));
    }
    outcome
}

impl Flow<'_> {
    async fn run(&mut self) -> Result<JsValue, UploadError> {
        let mut fresh_urls = 0;
        loop {
            let (url, headers) = self.presigned_url().await?;
            let summary = match self.put(url, headers).await {
                Ok(summary) => summary,
                // 403 from object storage: the URL expired (or was refused); ask again.
                Err(error) if error.status() == Some(403) && fresh_urls < FRESH_URL_ATTEMPTS => {
                    fresh_urls += 1;
                    continue;
                }
                Err(error) => return Err(error),
            };
            match self.verdict().await? {
                Ok(download_url) => {
                    if let Some(done) = self.relay.borrow_mut().confirmed() {
                        self.progress.deliver(&done);
                    }
                    return self.result(&summary, &download_url);
                }
                // Expired or not seen as uploaded: start again with a fresh URL.
                Err(4008 | 4010) if fresh_urls < FRESH_URL_ATTEMPTS => fresh_urls += 1,
                Err(code) => return Err(guest::server_error(code)),
            }
        }
    }

    /// Asks for a presigned URL, waiting out rate limits.
    async fn presigned_url(&mut self) -> Result<(String, Vec<(String, String)>), UploadError> {
        let mut rate_limited = 0;
        self.request_url()?;
        let mut deadline = self.deadline();
        loop {
            let event = self.next_event(deadline).await?;
            let retry_after_secs = match event {
                GuestEvent::PresignedUrl {
                    attachment_id,
                    url,
                    headers,
                } if attachment_id == self.attachment_id => {
                    crate::core::options::check_endpoint(&url).map_err(|_| {
                        UploadError::protocol("the presigned URL is not an absolute http(s) URL")
                    })?;
                    return Ok((url, headers));
                }
                GuestEvent::UrlError {
                    attachment_id: Some(other),
                    ..
                } if other != self.attachment_id => continue,
                GuestEvent::TooManyRequests { retry_after_secs } => retry_after_secs,
                GuestEvent::UrlError {
                    error_code: 4029, ..
                }
                | GuestEvent::Error { code: 4029 } => 1,
                GuestEvent::UrlError { error_code, .. } => {
                    return Err(guest::server_error(error_code))
                }
                GuestEvent::Error { code } => return Err(guest::server_error(code)),
                _ => continue,
            };
            rate_limited += 1;
            if rate_limited > self.settings.retry.attempts {
                return Err(guest::server_error(4029));
            }
            let wait = retry_after_secs
                .saturating_mul(1000)
                .min(u64::from(self.settings.retry.max_delay_ms));
            self.abort.sleep(wait as u32).await?;
            self.request_url()?;
            deadline = self.deadline();
        }
    }

    /// When the answer to what was just sent is due (`None`: wait for ever).
    fn deadline(&self) -> Option<f64> {
        let timeout = self.settings.event_timeout_ms;
        (timeout > 0).then(|| js_sys::Date::now() + f64::from(timeout))
    }

    fn request_url(&mut self) -> Result<(), UploadError> {
        self.url_requested = true;
        self.session.send(&OnAttachment::new(
            &self.session.token,
            &self.attachment_id,
            &self.name,
            &self.kind,
            self.size,
            self.md5.as_deref(),
        ))
    }

    /// The PUT, with the presigned headers exactly as given and the declared type.
    async fn put(
        &self,
        url: String,
        headers: Vec<(String, String)>,
    ) -> Result<UploadSummary, UploadError> {
        let mut source = FileSource::new(self.blob.clone(), Rc::clone(&self.abort));
        let transport = Transport::new(
            self.blob.clone(),
            HeaderSource::Fixed(headers),
            self.settings.timeout_ms,
            Rc::clone(&self.abort),
        );
        let relay = Rc::clone(&self.relay);
        let env = BrowserEnv::new(transport, Rc::clone(&self.progress))
            .adjusting(move |progress| relay.borrow_mut().adjust(progress));
        let mut protocol = PutUpload::new(url, self.size, Some(self.kind.clone()), false);
        let config = EngineConfig {
            retry: self.settings.retry,
            progress_interval_ms: self.settings.progress_interval_ms,
            md5: false,
        };
        upload(&mut protocol, &env, &mut source, config).await
    }

    /// Waits for `UploadSuccessEvent` (the download URL) or `UploadFailureEvent` (its code).
    async fn verdict(&mut self) -> Result<Result<String, u32>, UploadError> {
        let deadline = self.deadline();
        loop {
            match self.next_event(deadline).await? {
                GuestEvent::UploadSucceeded {
                    attachment_id,
                    download_url,
                } if attachment_id == self.attachment_id => {
                    return Ok(Ok(download_url));
                }
                GuestEvent::UploadFailed {
                    attachment_id,
                    error_code,
                } if attachment_id == self.attachment_id => {
                    return Ok(Err(error_code));
                }
                // Only a session-level error concerns this upload: others (a rate-limited
                // text message of the customer's, say) belong to other requests.
                GuestEvent::Error {
                    code: code @ (4006 | 4007),
                } => return Err(guest::server_error(code)),
                _ => continue,
            }
        }
    }

    /// The next server message, before `deadline` and unless aborted.
    async fn next_event(&self, deadline: Option<f64>) -> Result<GuestEvent, UploadError> {
        let left = deadline.map_or(0, |at| (at - js_sys::Date::now()).max(1.0) as u32);
        let next = within(left, self.inbox.next());
        match self.abort.race(next).await? {
            Some(message) => Ok(serde_wasm_bindgen::from_value::<Envelope>(message)
                .map_or(GuestEvent::Other, GuestEvent::from)),
            None => Err(UploadError::Attachment {
                code: "no_response",
                server_code: None,
                message: "The chat service did not answer. Please try again.".into(),
            }),
        }
    }

    fn result(&self, summary: &UploadSummary, download_url: &str) -> Result<JsValue, UploadError> {
        to_js(&AttachResult {
            attachment_id: &self.attachment_id,
            download_url,
            sha256: hex(&summary.sha256),
            md5: self.md5.as_deref(),
            size: self.size,
            file_name: &self.name,
            file_type: &self.kind,
            retries: summary.retries,
        })
    }
}

/// The MD5 the guest API's `fileMd5` wants, hex, read through the same stream as uploads.
async fn file_md5(blob: &Blob, abort: &Rc<AbortWatch>) -> Result<String, UploadError> {
    digest_whole_file(blob, abort, true)
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
