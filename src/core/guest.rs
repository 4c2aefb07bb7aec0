//! Genesys Cloud Web Messaging guest attachments, the pure part: checking a file against
//! the session's rules, building the guest requests, reading the server's messages, and
//! turning the protocol's error codes into stable codes and words a customer understands.
//!
//! The guest protocol is JSON over the widget's WebSocket. Every server message is an
//! envelope `{"type", "class", "code", "body"}`; the attachment flow is `onAttachment` →
//! `PresignedUrlResponse` (or `GenerateUrlError`) → one PUT to the presigned URL →
//! `UploadSuccessEvent` (or `UploadFailureEvent`). `crate::web::guest` runs the flow.
//!
//! Messages are [`Value`]s, built and read here by hand: the browser glue turns them into
//! JavaScript objects and back, so no JSON library or serde format ends up in the wasm.

use crate::core::error::UploadError;
use crate::core::progress::{Phase, Progress, ProgressModel};
use crate::core::value::{object, Value};

/// Presents the uploads of one attachment (a restart with a fresh URL is a new upload) as
/// one progress: the bar never moves back, and a PUT that completed is not the end (the
/// server still checks the file), so 100 % and `done` wait for `UploadSuccessEvent`.
#[derive(Debug, Default)]
pub struct AttachProgress {
    percent: f64,
    uploaded: u64,
    last: Option<Progress>,
}

impl AttachProgress {
    /// The snapshot the customer sees for an upload's `progress`.
    pub fn adjust(&mut self, mut progress: Progress) -> Progress {
        if progress.phase == Phase::Done {
            progress.phase = Phase::Verifying;
            progress.percent = 99.9;
            progress.eta_seconds = None;
        }
        self.percent = self.percent.max(progress.percent);
        self.uploaded = self.uploaded.max(progress.bytes_uploaded);
        progress.percent = self.percent;
        progress.bytes_uploaded = self.uploaded;
        self.last = Some(progress.clone());
        progress
    }

    /// A snapshot before (or between) the uploads of a file of `size` bytes: `Starting`
    /// while the URL is asked for, `Retrying` with `retry_in_ms` while a rate limit (4029)
    /// is waited out. The bar holds where it was.
    pub fn before_upload(
        &self,
        size: u64,
        phase: Phase,
        retry_in_ms: Option<u32>,
        now_ms: f64,
    ) -> Progress {
        let mut progress = ProgressModel::new(size, 1, 0, now_ms).phase(phase, now_ms);
        progress.percent = self.percent;
        progress.bytes_uploaded = self.uploaded;
        progress.bytes_sent = self.uploaded;
        progress.retry_in_ms = retry_in_ms;
        progress
    }

    /// The final snapshot, once the server confirmed the attachment.
    pub fn confirmed(&mut self) -> Option<Progress> {
        let mut last = self.last.take()?;
        last.phase = Phase::Done;
        last.percent = 100.0;
        last.bytes_uploaded = last.bytes_total;
        last.bytes_sent = last.bytes_total;
        last.eta_seconds = Some(0.0);
        last.retry_in_ms = None;
        last.chunk = None;
        Some(last)
    }
}

/// The attachment rules of a session: the parts of the `SessionResponse` body that matter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionRules {
    allowed_media: Option<AllowedMedia>,
    blocked_extensions: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct AllowedMedia {
    inbound: Option<InboundMedia>,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct InboundMedia {
    /// The allowed MIME types (`image/*`, `application/pdf`).
    file_types: Vec<String>,
    max_file_size_kb: Option<f64>,
}

/// `value[key]` read with `read`: `Some(None)` when absent or null, `None` when it has the
/// wrong shape (a body that is not what the guest API sends must not pass for "no rules").
fn optional<T>(
    value: &Value,
    key: &str,
    read: impl FnOnce(&Value) -> Option<T>,
) -> Option<Option<T>> {
    match value.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(field) => read(field).map(Some),
    }
}

/// A list of strings, or of objects whose `key` is a string.
fn strings(value: &Value, key: Option<&str>) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|item| match key {
            Some(key) => item.str_at(key).map(str::to_owned),
            None => item.as_str().map(str::to_owned),
        })
        .collect()
}

impl SessionRules {
    /// Reads the rules from a `SessionResponse` body; `None` when it is not one.
    pub fn from_value(body: &Value) -> Option<SessionRules> {
        body.as_object()?;
        let allowed_media = optional(body, "allowedMedia", |media| {
            media.as_object()?;
            let inbound = optional(media, "inbound", |inbound| {
                inbound.as_object()?;
                Some(InboundMedia {
                    file_types: optional(inbound, "fileTypes", |t| strings(t, Some("type")))?
                        .unwrap_or_default(),
                    max_file_size_kb: optional(inbound, "maxFileSizeKB", Value::as_f64)?,
                })
            })?;
            Some(AllowedMedia { inbound })
        })?;
        Some(SessionRules {
            allowed_media,
            blocked_extensions: optional(body, "blockedExtensions", |e| strings(e, None))?
                .unwrap_or_default(),
        })
    }
    /// The largest file accepted, in bytes (1 KB = 1000 bytes, as the guest API counts).
    pub fn max_bytes(&self) -> Option<u64> {
        self.inbound()?
            .max_file_size_kb
            .map(|kb| (kb.max(0.0) * 1000.0) as u64)
    }

    fn inbound(&self) -> Option<&InboundMedia> {
        self.allowed_media.as_ref()?.inbound.as_ref()
    }
}

/// Whether `mime` matches an allowed type: exact, `type/*` or `*/*`, ignoring case and
/// parameters (`text/plain; charset=utf-8`).
pub fn type_allowed(allowed: &str, mime: &str) -> bool {
    let essence = |t: &str| {
        t.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    let (allowed, mime) = (essence(allowed), essence(mime));
    if allowed == "*/*" || allowed == "*" || allowed == mime {
        return true;
    }
    match (allowed.strip_suffix("/*"), mime.split_once('/')) {
        (Some(family), Some((kind, _))) => family == kind,
        _ => false,
    }
}

/// The file's extension with its dot, lower-cased (`.exe`), or `None` without one.
fn extension(file_name: &str) -> Option<String> {
    let (_, ext) = file_name.rsplit_once('.')?;
    (!ext.is_empty()).then(|| format!(".{}", ext.to_ascii_lowercase()))
}

/// Checks a file against the session's rules before anything is sent. Without rules (the
/// widget did not pass the SessionResponse), only the empty-file rule applies.
pub fn validate(
    rules: Option<&SessionRules>,
    file_name: &str,
    mime: &str,
    size: u64,
) -> Result<(), UploadError> {
    if size == 0 {
        return Err(attachment_error(
            "file_empty",
            None,
            "This file is empty. Choose another file.",
        ));
    }
    let Some(rules) = rules else { return Ok(()) };
    let inbound = rules
        .inbound()
        .filter(|i| !i.file_types.is_empty() && i.max_file_size_kb.is_some_and(|kb| kb > 0.0));
    let Some(inbound) = inbound else {
        return Err(attachment_error(
            "attachments_disabled",
            None,
            "Files can't be sent in this chat.",
        ));
    };
    if let Some(ext) = extension(file_name) {
        if rules
            .blocked_extensions
            .iter()
            .any(|blocked| blocked.trim().eq_ignore_ascii_case(&ext))
        {
            return Err(attachment_error(
                "file_extension_blocked",
                None,
                &format!("Files ending in {ext} can't be sent here."),
            ));
        }
    }
    if !inbound
        .file_types
        .iter()
        .any(|allowed| type_allowed(allowed, mime))
    {
        return Err(attachment_error(
            "file_type_invalid",
            None,
            "This type of file can't be sent here.",
        ));
    }
    if let Some(max) = rules.max_bytes().filter(|max| size > *max) {
        return Err(attachment_error(
            "file_size_invalid",
            None,
            &format!("This file is too large. The limit is {}.", human_size(max)),
        ));
    }
    Ok(())
}

/// `10 MB`, `500 KB`, in the guest API's decimal units.
fn human_size(bytes: u64) -> String {
    // Integer arithmetic: float formatting would add a lot of code to the wasm.
    let with_two_decimals = |value: u64, unit: u64| {
        let hundredths = value * 100 / unit;
        let text = format!("{}.{:02}", hundredths / 100, hundredths % 100);
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    match bytes {
        b if b >= 1_000_000 => format!("{} MB", with_two_decimals(b, 1_000_000)),
        b if b >= 1_000 => format!("{} KB", with_two_decimals(b, 1_000)),
        b => format!("{b} bytes"),
    }
}

/// The stable code and customer's words for a guest API error code.
pub fn server_error(server_code: u32) -> UploadError {
    let (code, words) = match server_code {
        4001 => ("file_type_invalid", "This type of file can't be sent here."),
        4002 => ("file_size_invalid", "This file is too large to send here."),
        4003 => (
            "file_content_invalid",
            "This file was refused. It may be damaged or unsafe.",
        ),
        4004 => (
            "file_name_invalid",
            "This file name can't be used. Rename the file and try again.",
        ),
        4005 => (
            "file_name_too_long",
            "This file name is too long. Rename the file and try again.",
        ),
        4006 => (
            "session_expired",
            "Your chat session has expired. Start a new chat to send files.",
        ),
        4007 => (
            "session_not_found",
            "Your chat session was not found. Start a new chat to send files.",
        ),
        4008 => (
            "attachment_expired",
            "The upload took too long and expired. Please try again.",
        ),
        4009 => (
            "attachment_not_found",
            "The file could not be found. Please try again.",
        ),
        4010 => (
            "attachment_not_uploaded",
            "The file did not finish uploading. Please try again.",
        ),
        4029 => (
            "too_many_requests",
            "Too many files at once. Wait a moment and try again.",
        ),
        4000 => (
            "feature_unavailable",
            "Sending files is not available in this chat right now.",
        ),
        4020 => (
            "missing_parameter",
            "Something was missing from the request. Please try again.",
        ),
        _ => (
            "unexpected",
            "Something went wrong on our side. Please try again later.",
        ),
    };
    attachment_error(code, Some(server_code), words)
}

fn attachment_error(code: &'static str, server_code: Option<u32>, message: &str) -> UploadError {
    UploadError::Attachment {
        code,
        server_code,
        message: message.to_owned(),
    }
}

/// The `onAttachment` request: asks for a presigned URL for a file; `file_md5` is sent
/// when given.
pub fn on_attachment(
    token: &str,
    attachment_id: &str,
    file_name: &str,
    file_type: &str,
    file_size: u64,
    file_md5: Option<&str>,
) -> Value {
    let mut request = object([
        ("action", "onAttachment".into()),
        ("token", token.into()),
        ("attachmentId", attachment_id.into()),
        ("fileName", file_name.into()),
        ("fileType", file_type.into()),
        ("fileSize", file_size.into()),
        ("errorsAsJson", true.into()),
    ]);
    if let (Some(md5), Value::Object(entries)) = (file_md5, &mut request) {
        entries.push(("fileMd5".to_owned(), md5.into()));
    }
    request
}

/// The `deleteAttachment` request (a file uploaded but not sent).
pub fn delete_attachment(token: &str, attachment_id: &str) -> Value {
    object([
        ("action", "deleteAttachment".into()),
        ("token", token.into()),
        ("attachmentId", attachment_id.into()),
    ])
}

/// The `onMessage` request carrying `text` and the attachments `ids`.
pub fn on_message(token: &str, text: &str, ids: &[String]) -> Value {
    let content = ids
        .iter()
        .map(|id| {
            object([
                ("contentType", "Attachment".into()),
                ("attachment", object([("id", id.as_str().into())])),
            ])
        })
        .collect();
    object([
        ("action", "onMessage".into()),
        ("token", token.into()),
        (
            "message",
            object([
                ("type", "Text".into()),
                ("text", text.into()),
                ("content", Value::Array(content)),
            ]),
        ),
    ])
}

/// A server message, as far as the attachment flow cares. (Field names follow the wire.)
#[allow(missing_docs)]
#[derive(Debug, Clone, PartialEq)]
pub enum GuestEvent {
    /// Where to PUT the file, and the headers to send exactly.
    PresignedUrl {
        attachment_id: String,
        url: String,
        headers: Vec<(String, String)>,
    },
    /// No URL: the server refused the attachment.
    UrlError {
        attachment_id: Option<String>,
        error_code: u32,
    },
    /// The upload was checked and stored.
    UploadSucceeded {
        attachment_id: String,
        download_url: String,
    },
    /// The upload was refused after the PUT.
    UploadFailed {
        attachment_id: String,
        error_code: u32,
    },
    /// Rate limited: wait this long, then ask again.
    TooManyRequests { retry_after_secs: u64 },
    /// A plain error response (`class: "string"`), e.g. an expired session.
    Error { code: u32 },
    /// `deleteAttachment` was done.
    Deleted { attachment_id: String },
    /// Anything else (messages, echoes, other responses).
    Other,
}

impl GuestEvent {
    /// Reads a server message: an envelope `{"type", "class", "code", "body"}` whose body is
    /// an object for most classes and a text for `class: "string"` errors.
    pub fn from_value(envelope: &Value) -> GuestEvent {
        let empty = Value::Object(Vec::new());
        let body = envelope
            .get("body")
            .filter(|b| b.as_object().is_some())
            .unwrap_or(&empty);
        // A whole number, or a text holding one ("4008": not every proxy keeps the type;
        // parsed as an integer: a float parser would add 20 KB to the wasm).
        let code = |v: Option<&Value>| match v? {
            Value::String(text) => text.trim().parse::<u32>().ok(),
            other => other
                .as_f64()
                .filter(|c| *c >= 0.0 && *c <= f64::from(u32::MAX) && c.fract() == 0.0)
                .map(|c| c as u32),
        };
        let text = |key| body.str_at(key).map(str::to_owned);
        let parsed = match envelope.str_at("class").unwrap_or_default() {
            "PresignedUrlResponse" => {
                text("attachmentId")
                    .zip(text("url"))
                    .map(|(attachment_id, url)| GuestEvent::PresignedUrl {
                        attachment_id,
                        url,
                        headers: body
                            .get("headers")
                            .and_then(Value::as_object)
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                            .collect(),
                    })
            }
            "GenerateUrlError" => {
                code(body.get("errorCode")).map(|error_code| GuestEvent::UrlError {
                    attachment_id: text("attachmentId"),
                    error_code,
                })
            }
            "UploadSuccessEvent" => text("attachmentId").zip(text("downloadUrl")).map(
                |(attachment_id, download_url)| GuestEvent::UploadSucceeded {
                    attachment_id,
                    download_url,
                },
            ),
            "UploadFailureEvent" => text("attachmentId").zip(code(body.get("errorCode"))).map(
                |(attachment_id, error_code)| GuestEvent::UploadFailed {
                    attachment_id,
                    error_code,
                },
            ),
            "TooManyRequestsErrorMessage" => Some(GuestEvent::TooManyRequests {
                retry_after_secs: code(body.get("retryAfter")).map_or(1, u64::from),
            }),
            "AttachmentDeletedResponse" => {
                text("attachmentId").map(|attachment_id| GuestEvent::Deleted { attachment_id })
            }
            "string" => code(envelope.get("code"))
                .filter(|code| *code >= 400)
                .map(|code| GuestEvent::Error { code }),
            _ => None,
        };
        parsed.unwrap_or(GuestEvent::Other)
    }
}

/// Fresh URLs asked for after an expired URL or a failed upload, before giving up.
pub const FRESH_URL_ATTEMPTS: u32 = 3;

/// What the attachment flow wants done next (see [`AttachFlow`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this request on the session.
    Send(Value),
    /// Wait for the server's next message until this time (ms since the epoch; `None`: for
    /// ever), then hand it to [`AttachFlow::on_event`], or fail with [`no_response`].
    Receive {
        /// When the answer is due.
        until_ms: Option<f64>,
    },
    /// Wait this long (a rate limit), then ask again.
    Sleep {
        /// How long.
        ms: u32,
    },
    /// PUT the file to `url` with exactly `headers`, then report with
    /// [`AttachFlow::on_upload`].
    Upload {
        /// The presigned URL.
        url: String,
        /// The headers the server signed.
        headers: Vec<(String, String)>,
    },
    /// The server checked and stored the file.
    Done {
        /// Where it can be downloaded (`UploadSuccessEvent`).
        download_url: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Stage {
    /// Ask for a presigned URL (`onAttachment`).
    Ask,
    /// Waiting for the URL.
    AwaitUrl,
    /// Waiting out a rate limit before asking again.
    RateLimited { ms: u32 },
    /// A URL arrived: PUT the file there.
    Upload {
        url: String,
        headers: Vec<(String, String)>,
    },
    /// The PUT is under way.
    Uploading,
    /// Waiting for the server's verdict on the upload.
    AwaitVerdict,
    /// The server stored the file.
    Done { download_url: String },
}

/// Web-messaging attachments as a pure state machine: `onAttachment` → `PresignedUrlResponse`
/// (waiting out 4029 rate limits) → the PUT → `UploadSuccessEvent`; an expired URL (403 on
/// the PUT) or an upload the server did not see (4008, 4010) starts again with a fresh URL.
/// `crate::web::guest` performs the [`Action`]s.
#[derive(Debug, Clone)]
pub struct AttachFlow {
    request: Value,
    attachment_id: String,
    rate_limit_waits: u32,
    max_delay_ms: u32,
    event_timeout_ms: u32,
    stage: Stage,
    /// When the answer to the last request is due.
    until_ms: Option<f64>,
    rate_limited: u32,
    fresh_urls: u32,
    url_requested: bool,
}

impl AttachFlow {
    /// A flow sending `request` (the `onAttachment` of `attachment_id`); at most
    /// `rate_limit_waits` waits of at most `max_delay_ms` each for rate limits, and
    /// `event_timeout_ms` (0 = for ever) for each answer.
    pub fn new(
        request: Value,
        attachment_id: &str,
        rate_limit_waits: u32,
        max_delay_ms: u32,
        event_timeout_ms: u32,
    ) -> Self {
        AttachFlow {
            request,
            attachment_id: attachment_id.to_owned(),
            rate_limit_waits,
            max_delay_ms,
            event_timeout_ms,
            stage: Stage::Ask,
            until_ms: None,
            rate_limited: 0,
            fresh_urls: 0,
            url_requested: false,
        }
    }

    /// Whether an `onAttachment` went out, so that the server may hold something to delete
    /// when the flow fails.
    pub fn url_requested(&self) -> bool {
        self.url_requested
    }

    /// The next thing to do, at `now_ms`. After [`Action::Upload`], the next call must
    /// come after [`AttachFlow::on_upload`].
    pub fn next(&mut self, now_ms: f64) -> Action {
        match std::mem::replace(&mut self.stage, Stage::Uploading) {
            Stage::Ask => {
                self.stage = Stage::AwaitUrl;
                self.url_requested = true;
                self.until_ms = self.deadline(now_ms);
                Action::Send(self.request.clone())
            }
            Stage::RateLimited { ms } => {
                self.stage = Stage::Ask;
                Action::Sleep { ms }
            }
            Stage::Upload { url, headers } => Action::Upload { url, headers },
            Stage::Done { download_url } => {
                self.stage = Stage::Done {
                    download_url: download_url.clone(),
                };
                Action::Done { download_url }
            }
            waiting => {
                self.stage = waiting;
                Action::Receive {
                    until_ms: self.until_ms,
                }
            }
        }
    }

    fn deadline(&self, now_ms: f64) -> Option<f64> {
        (self.event_timeout_ms > 0).then(|| now_ms + f64::from(self.event_timeout_ms))
    }

    /// A message from the server arrived while waiting.
    pub fn on_event(&mut self, event: GuestEvent) -> Result<(), UploadError> {
        match self.stage {
            Stage::AwaitUrl => self.on_url_answer(event),
            Stage::AwaitVerdict => self.on_verdict(event),
            _ => Ok(()),
        }
    }

    fn on_url_answer(&mut self, event: GuestEvent) -> Result<(), UploadError> {
        let retry_after_secs = match event {
            GuestEvent::PresignedUrl {
                attachment_id,
                url,
                headers,
            } if attachment_id == self.attachment_id => {
                crate::core::options::check_endpoint(&url).map_err(|_| {
                    UploadError::protocol("the presigned URL is not an absolute http(s) URL")
                })?;
                self.stage = Stage::Upload { url, headers };
                return Ok(());
            }
            GuestEvent::UrlError {
                attachment_id: Some(other),
                ..
            } if other != self.attachment_id => return Ok(()),
            GuestEvent::TooManyRequests { retry_after_secs } => retry_after_secs,
            GuestEvent::UrlError {
                error_code: 4029, ..
            }
            | GuestEvent::Error { code: 4029 } => 1,
            // A message's text too long, or its custom attributes too large: refusals of the
            // widget's onMessage, which may cross this wait. An onAttachment has neither.
            GuestEvent::Error { code: 4011 | 4013 } => return Ok(()),
            GuestEvent::UrlError { error_code, .. } => return Err(server_error(error_code)),
            GuestEvent::Error { code } => return Err(server_error(code)),
            _ => return Ok(()),
        };
        self.rate_limited += 1;
        if self.rate_limited > self.rate_limit_waits {
            return Err(server_error(4029));
        }
        let ms = retry_after_secs
            .saturating_mul(1000)
            .min(u64::from(self.max_delay_ms)) as u32;
        self.stage = Stage::RateLimited { ms };
        Ok(())
    }

    fn on_verdict(&mut self, event: GuestEvent) -> Result<(), UploadError> {
        match event {
            GuestEvent::UploadSucceeded {
                attachment_id,
                download_url,
            } if attachment_id == self.attachment_id => {
                self.stage = Stage::Done { download_url };
                Ok(())
            }
            GuestEvent::UploadFailed {
                attachment_id,
                error_code,
            } if attachment_id == self.attachment_id => {
                // Expired or not seen as uploaded: start again with a fresh URL.
                if matches!(error_code, 4008 | 4010) && self.fresh_urls < FRESH_URL_ATTEMPTS {
                    self.fresh_urls += 1;
                    self.stage = Stage::Ask;
                    Ok(())
                } else {
                    Err(server_error(error_code))
                }
            }
            // Only a session-level error concerns this upload: others (a rate-limited text
            // message of the customer's, say) belong to other requests.
            GuestEvent::Error {
                code: code @ (4006 | 4007),
            } => Err(server_error(code)),
            _ => Ok(()),
        }
    }

    /// The PUT ended: on success the flow waits for the verdict; an expired URL (403, or
    /// another store's word for it: `is_expired_url`) starts again with a fresh URL, a few
    /// times; other failures end it.
    pub fn on_upload(
        &mut self,
        outcome: Result<(), UploadError>,
        now_ms: f64,
    ) -> Result<(), UploadError> {
        match outcome {
            Ok(()) => {
                self.stage = Stage::AwaitVerdict;
                self.until_ms = self.deadline(now_ms);
                Ok(())
            }
            Err(error) if error.is_expired_url() && self.fresh_urls < FRESH_URL_ATTEMPTS => {
                self.fresh_urls += 1;
                self.stage = Stage::Ask;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }
}

/// The error when the chat service did not answer in time.
pub fn no_response() -> UploadError {
    attachment_error(
        "no_response",
        None,
        "The chat service did not answer. Please try again.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::core::value::testing::parse;

    fn rules_from(json: &str) -> SessionRules {
        SessionRules::from_value(&parse(json).expect("json")).expect("a SessionResponse body")
    }

    fn rules() -> SessionRules {
        rules_from(
            r#"{"connected":true,"allowedMedia":{"inbound":{"fileTypes":[{"type":"image/*"},{"type":"application/pdf"}],"maxFileSizeKB":10240}},"blockedExtensions":[".exe",".BAT"]}"#,
        )
    }

    fn code(result: Result<(), UploadError>) -> &'static str {
        result.err().map_or("ok", |e| e.code())
    }

    #[test]
    fn attach_progress_never_goes_back_and_ends_only_when_confirmed() {
        let mut model = crate::core::progress::ProgressModel::new(1000, 1, 0, 0.0);
        let mut relay = AttachProgress::default();
        let half = relay.adjust(model.sent(500, 1.0).expect("unthrottled"));
        assert_eq!((half.percent, half.phase), (50.0, Phase::Starting));
        let put_done = relay.adjust(model.done(2.0));
        assert_eq!((put_done.percent, put_done.phase), (99.9, Phase::Verifying));
        // A restart with a fresh URL: a new upload from 0.
        let mut again = crate::core::progress::ProgressModel::new(1000, 1, 0, 3.0);
        let restarted = relay.adjust(again.sent(100, 4.0).expect("unthrottled"));
        assert_eq!(
            (
                restarted.percent,
                restarted.bytes_uploaded,
                restarted.bytes_sent
            ),
            (99.9, 1000, 100)
        );
        let done = relay.confirmed().expect("a snapshot");
        assert_eq!(
            (done.phase, done.percent, done.bytes_uploaded),
            (Phase::Done, 100.0, 1000)
        );
        assert!(relay.confirmed().is_none());
    }

    #[test]
    fn before_an_upload_progress_says_starting_or_waiting_and_holds_the_bar() {
        let mut relay = AttachProgress::default();
        let first = relay.before_upload(1000, Phase::Starting, None, 0.0);
        assert_eq!(
            (
                first.phase,
                first.percent,
                first.bytes_total,
                first.retry_in_ms
            ),
            (Phase::Starting, 0.0, 1000, None)
        );
        // After half a PUT and a fresh-URL restart, a 4029 wait: the bar stays at 50 %.
        let mut model = crate::core::progress::ProgressModel::new(1000, 1, 0, 0.0);
        relay.adjust(model.acknowledged(500, None, 1.0).expect("unthrottled"));
        let waiting = relay.before_upload(1000, Phase::Retrying, Some(2000), 2.0);
        assert_eq!(
            (
                waiting.phase,
                waiting.percent,
                waiting.bytes_uploaded,
                waiting.retry_in_ms
            ),
            (Phase::Retrying, 50.0, 500, Some(2000))
        );
    }

    #[test]
    fn type_wildcards() {
        assert!(type_allowed("image/*", "image/png"));
        assert!(type_allowed("IMAGE/*", "image/PNG"));
        assert!(type_allowed("*/*", "application/x-anything"));
        assert!(type_allowed("text/plain", "text/plain; charset=utf-8"));
        assert!(!type_allowed("image/*", "application/pdf"));
        assert!(!type_allowed("image/png", "image/jpeg"));
        assert!(!type_allowed("image/*", "imagex"));
    }

    #[test]
    fn validation_rules() {
        let r = rules();
        assert_eq!(code(validate(Some(&r), "cat.png", "image/png", 5)), "ok");
        assert_eq!(
            code(validate(Some(&r), "doc.pdf", "application/pdf", 10_240_000)),
            "ok"
        );
        assert_eq!(
            code(validate(Some(&r), "doc.pdf", "application/pdf", 10_240_001)),
            "file_size_invalid"
        );
        assert_eq!(
            code(validate(Some(&r), "cat.png", "image/png", 0)),
            "file_empty"
        );
        assert_eq!(
            code(validate(Some(&r), "setup.EXE", "image/png", 5)),
            "file_extension_blocked"
        );
        assert_eq!(
            code(validate(Some(&r), "run.bat", "application/pdf", 5)),
            "file_extension_blocked"
        );
        assert_eq!(
            code(validate(Some(&r), "notes.txt", "text/plain", 5)),
            "file_type_invalid"
        );
        assert_eq!(code(validate(Some(&r), "noext", "image/gif", 5)), "ok");
        assert_eq!(code(validate(None, "any.exe", "x/y", 5)), "ok");
        assert_eq!(code(validate(None, "any", "x/y", 0)), "file_empty");
        let off = rules_from(r#"{"allowedMedia":{"inbound":{}}}"#);
        assert_eq!(
            code(validate(Some(&off), "cat.png", "image/png", 5)),
            "attachments_disabled"
        );
        let none = rules_from(r#"{"allowedMedia":{}}"#);
        assert_eq!(
            code(validate(Some(&none), "cat.png", "image/png", 5)),
            "attachments_disabled"
        );
        let err = validate(Some(&r), "doc.pdf", "application/pdf", 20_000_000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "This file is too large. The limit is 10.24 MB."
        );
        for not_rules in [
            "[1]",
            r#""text""#,
            r#"{"allowedMedia":"all"}"#,
            r#"{"allowedMedia":{"inbound":{"fileTypes":"image/*"}}}"#,
            r#"{"allowedMedia":{"inbound":{"fileTypes":[{"type":1}]}}}"#,
            r#"{"allowedMedia":{"inbound":{"maxFileSizeKB":"10"}}}"#,
            r#"{"blockedExtensions":[".exe",1]}"#,
        ] {
            let value = parse(not_rules).expect("json");
            assert!(SessionRules::from_value(&value).is_none(), "{not_rules}");
        }
        let nulls = rules_from(r#"{"allowedMedia":null,"blockedExtensions":null}"#);
        assert_eq!(nulls, SessionRules::default());
        assert_eq!(
            (human_size(5_000_000), human_size(1_500), human_size(999)),
            ("5 MB".into(), "1.5 KB".into(), "999 bytes".into())
        );
    }

    #[test]
    fn every_server_code_has_a_stable_code_and_words() {
        let cases = [
            (4001, "file_type_invalid"),
            (4002, "file_size_invalid"),
            (4003, "file_content_invalid"),
            (4004, "file_name_invalid"),
            (4005, "file_name_too_long"),
            (4006, "session_expired"),
            (4007, "session_not_found"),
            (4008, "attachment_expired"),
            (4009, "attachment_not_found"),
            (4010, "attachment_not_uploaded"),
            (4029, "too_many_requests"),
            (4000, "feature_unavailable"),
            (4020, "missing_parameter"),
            (5000, "unexpected"),
            (4999, "unexpected"),
        ];
        for (server, expected) in cases {
            let err = server_error(server);
            assert_eq!(err.code(), expected);
            assert!(
                matches!(err, UploadError::Attachment { server_code: Some(s), .. } if s == server)
            );
            assert!(err.to_string().ends_with('.'), "{err}");
        }
    }

    #[test]
    fn builds_requests() {
        let request = on_attachment("tok", "att-1", "a.pdf", "application/pdf", 42, Some("abcd"));
        assert_eq!(
            request,
            json(
                serde_json::json!({"action":"onAttachment","token":"tok","attachmentId":"att-1","fileName":"a.pdf",
                   "fileType":"application/pdf","fileSize":42,"errorsAsJson":true,"fileMd5":"abcd"})
            )
        );
        assert!(on_attachment("t", "a", "n", "t", 1, None)
            .get("fileMd5")
            .is_none());
        assert_eq!(
            delete_attachment("tok", "att-1"),
            json(
                serde_json::json!({"action":"deleteAttachment","token":"tok","attachmentId":"att-1"})
            )
        );
        let ids = ["a".to_string(), "b".to_string()];
        assert_eq!(
            on_message("tok", "here", &ids),
            json(
                serde_json::json!({"action":"onMessage","token":"tok","message":{"type":"Text","text":"here","content":[
                {"contentType":"Attachment","attachment":{"id":"a"}},
                {"contentType":"Attachment","attachment":{"id":"b"}}]}})
            )
        );
    }

    /// A JSON value as a [`Value`] (keys in the order serde_json keeps them: sorted).
    fn json(value: serde_json::Value) -> Value {
        crate::core::value::testing::from_serde(value)
    }

    #[test]
    fn parses_server_messages() {
        use GuestEvent::*;
        let cases = [
            (
                r#"{"type":"response","class":"PresignedUrlResponse","code":200,"body":{"attachmentId":"a","headers":{"x-amz-tagging":"t=1"},"url":"https://u/k"}}"#,
                PresignedUrl {
                    attachment_id: "a".into(),
                    url: "https://u/k".into(),
                    headers: vec![("x-amz-tagging".into(), "t=1".into())],
                },
            ),
            (
                r#"{"type":"message","class":"GenerateUrlError","code":200,"body":{"attachmentId":"a","errorCode":4001,"errorMessage":"bad"}}"#,
                UrlError {
                    attachment_id: Some("a".into()),
                    error_code: 4001,
                },
            ),
            (
                r#"{"type":"message","class":"UploadSuccessEvent","code":200,"body":{"attachmentId":"a","downloadUrl":"https://d","timestamp":"t"}}"#,
                UploadSucceeded {
                    attachment_id: "a".into(),
                    download_url: "https://d".into(),
                },
            ),
            (
                r#"{"type":"message","class":"UploadFailureEvent","code":200,"body":{"attachmentId":"a","errorCode":4003,"errorMessage":"x"}}"#,
                UploadFailed {
                    attachment_id: "a".into(),
                    error_code: 4003,
                },
            ),
            (
                r#"{"type":"response","class":"TooManyRequestsErrorMessage","code":429,"body":{"retryAfter":3,"errorCode":4029,"errorMessage":"slow down"}}"#,
                TooManyRequests {
                    retry_after_secs: 3,
                },
            ),
            (
                r#"{"type":"response","class":"string","code":4006,"body":"session expired"}"#,
                Error { code: 4006 },
            ),
            (
                r#"{"type":"message","class":"AttachmentDeletedResponse","code":200,"body":{"attachmentId":"a"}}"#,
                Deleted {
                    attachment_id: "a".into(),
                },
            ),
            (
                r#"{"type":"response","class":"string","code":200,"body":"ok"}"#,
                Other,
            ),
            (
                r#"{"type":"message","class":"StructuredMessage","code":200,"body":{}}"#,
                Other,
            ),
            (
                r#"{"type":"response","class":"PresignedUrlResponse","code":200,"body":{}}"#,
                Other,
            ),
            ("not json", Other),
            // Codes sent as text are read as numbers; fractions and negatives are not codes.
            (
                r#"{"type":"message","class":"UploadFailureEvent","code":200,"body":{"attachmentId":"a","errorCode":"4008"}}"#,
                UploadFailed {
                    attachment_id: "a".into(),
                    error_code: 4008,
                },
            ),
            (
                r#"{"type":"response","class":"string","code":"429","body":"slow down"}"#,
                Error { code: 429 },
            ),
            (
                r#"{"type":"message","class":"UploadFailureEvent","code":200,"body":{"attachmentId":"a","errorCode":4008.5}}"#,
                Other,
            ),
            (
                r#"{"type":"message","class":"UploadFailureEvent","code":200,"body":{"attachmentId":"a","errorCode":"-1"}}"#,
                Other,
            ),
        ];
        for (text, expected) in cases {
            let event = parse(text).map_or(Other, |v| GuestEvent::from_value(&v));
            assert_eq!(event, expected, "{text}");
        }
    }
    fn flow(waits: u32) -> AttachFlow {
        AttachFlow::new(
            on_attachment("tok", "att", "a.pdf", "application/pdf", 5, None),
            "att",
            waits,
            2_000,
            60_000,
        )
    }

    fn presigned(id: &str, url: &str) -> GuestEvent {
        GuestEvent::PresignedUrl {
            attachment_id: id.into(),
            url: url.into(),
            headers: vec![("x-amz-tagging".into(), "t".into())],
        }
    }

    fn expect_upload(flow: &mut AttachFlow) {
        assert!(
            matches!(flow.next(0.0), Action::Upload { url, headers } if url == "https://s/k" && headers.len() == 1)
        );
    }

    #[test]
    fn attach_flow_happy_path() {
        let mut f = flow(3);
        assert!(!f.url_requested());
        assert!(
            matches!(f.next(1000.0), Action::Send(v) if v.str_at("action") == Some("onAttachment"))
        );
        assert!(f.url_requested());
        assert_eq!(
            f.next(2000.0),
            Action::Receive {
                until_ms: Some(61_000.0)
            }
        );
        // Answers for another attachment, or unrelated messages, are not ours.
        f.on_event(presigned("other", "https://s/other")).unwrap();
        f.on_event(GuestEvent::UrlError {
            attachment_id: Some("other".into()),
            error_code: 4001,
        })
        .unwrap();
        f.on_event(GuestEvent::Other).unwrap();
        // A text message of the customer's refused meanwhile (too long, attributes too large).
        f.on_event(GuestEvent::Error { code: 4011 }).unwrap();
        f.on_event(GuestEvent::Error { code: 4013 }).unwrap();
        assert!(matches!(f.next(3000.0), Action::Receive { .. }));
        f.on_event(presigned("att", "https://s/k")).unwrap();
        expect_upload(&mut f);
        f.on_upload(Ok(()), 5000.0).unwrap();
        assert_eq!(
            f.next(5000.0),
            Action::Receive {
                until_ms: Some(65_000.0)
            }
        );
        f.on_event(GuestEvent::UploadSucceeded {
            attachment_id: "other".into(),
            download_url: "x".into(),
        })
        .unwrap();
        f.on_event(GuestEvent::Error { code: 4029 }).unwrap(); // a text message's rate limit
        f.on_event(GuestEvent::UploadSucceeded {
            attachment_id: "att".into(),
            download_url: "https://d/a".into(),
        })
        .unwrap();
        assert_eq!(
            f.next(6000.0),
            Action::Done {
                download_url: "https://d/a".into()
            }
        );
        assert_eq!(
            f.next(7000.0),
            Action::Done {
                download_url: "https://d/a".into()
            }
        );
    }

    #[test]
    fn attach_flow_waits_out_rate_limits_then_gives_up() {
        let mut f = flow(2);
        assert!(matches!(f.next(0.0), Action::Send(_)));
        f.on_event(GuestEvent::TooManyRequests {
            retry_after_secs: 1,
        })
        .unwrap();
        assert_eq!(f.next(0.0), Action::Sleep { ms: 1000 });
        assert!(matches!(f.next(0.0), Action::Send(_)));
        // A long Retry-After is capped by the retry policy's longest wait.
        f.on_event(GuestEvent::UrlError {
            attachment_id: Some("att".into()),
            error_code: 4029,
        })
        .unwrap();
        assert_eq!(f.next(0.0), Action::Sleep { ms: 1000 });
        assert!(matches!(f.next(0.0), Action::Send(_)));
        let err = f
            .on_event(GuestEvent::TooManyRequests {
                retry_after_secs: 60,
            })
            .unwrap_err();
        assert_eq!(err.code(), "too_many_requests");
        let mut capped = flow(5);
        capped.next(0.0);
        capped
            .on_event(GuestEvent::TooManyRequests {
                retry_after_secs: 60,
            })
            .unwrap();
        assert_eq!(capped.next(0.0), Action::Sleep { ms: 2000 });
    }

    #[test]
    fn attach_flow_asks_for_fresh_urls_a_few_times() {
        let mut f = flow(3);
        for _ in 0..FRESH_URL_ATTEMPTS {
            assert!(matches!(f.next(0.0), Action::Send(_)));
            f.on_event(presigned("att", "https://s/k")).unwrap();
            expect_upload(&mut f);
            // Garage's word for an expired URL (AWS's is 403, below).
            let expired = UploadError::HttpStatus {
                method: crate::core::http::Method::Put,
                purpose: "upload file",
                status: 400,
                retryable: false,
                retry_after: None,
                expired_url: true,
            };
            f.on_upload(Err(expired), 0.0).unwrap();
        }
        assert!(matches!(f.next(0.0), Action::Send(_)));
        f.on_event(presigned("att", "https://s/k")).unwrap();
        expect_upload(&mut f);
        let err = f
            .on_upload(
                Err(UploadError::HttpStatus {
                    method: crate::core::http::Method::Put,
                    purpose: "upload file",
                    status: 403,
                    retryable: false,
                    retry_after: None,
                    expired_url: true,
                }),
                0.0,
            )
            .unwrap_err();
        assert_eq!(err.status(), Some(403));
        // Other upload failures end the flow at once.
        let mut g = flow(3);
        g.next(0.0);
        g.on_event(presigned("att", "https://s/k")).unwrap();
        expect_upload(&mut g);
        assert_eq!(
            g.on_upload(Err(UploadError::Aborted), 0.0).unwrap_err(),
            UploadError::Aborted
        );
    }

    #[test]
    fn attach_flow_restarts_after_expired_uploads_and_maps_refusals() {
        let mut f = flow(3);
        f.next(0.0);
        f.on_event(presigned("att", "https://s/k")).unwrap();
        expect_upload(&mut f);
        f.on_upload(Ok(()), 0.0).unwrap();
        f.on_event(GuestEvent::UploadFailed {
            attachment_id: "att".into(),
            error_code: 4008,
        })
        .unwrap();
        assert!(
            matches!(f.next(0.0), Action::Send(_)),
            "a fresh URL after 4008"
        );
        f.on_event(presigned("att", "https://s/k")).unwrap();
        expect_upload(&mut f);
        f.on_upload(Ok(()), 0.0).unwrap();
        let err = f
            .on_event(GuestEvent::UploadFailed {
                attachment_id: "att".into(),
                error_code: 4003,
            })
            .unwrap_err();
        assert_eq!(err.code(), "file_content_invalid");

        let mut refused = flow(3);
        refused.next(0.0);
        let err = refused
            .on_event(GuestEvent::UrlError {
                attachment_id: Some("att".into()),
                error_code: 4001,
            })
            .unwrap_err();
        assert_eq!(err.code(), "file_type_invalid");
        let mut expired = flow(3);
        expired.next(0.0);
        assert_eq!(
            expired
                .on_event(GuestEvent::Error { code: 4006 })
                .unwrap_err()
                .code(),
            "session_expired"
        );
        let mut session_gone = flow(3);
        session_gone.next(0.0);
        session_gone
            .on_event(presigned("att", "https://s/k"))
            .unwrap();
        expect_upload(&mut session_gone);
        session_gone.on_upload(Ok(()), 0.0).unwrap();
        assert_eq!(
            session_gone
                .on_event(GuestEvent::Error { code: 4007 })
                .unwrap_err()
                .code(),
            "session_not_found"
        );
        let mut bad_url = flow(3);
        bad_url.next(0.0);
        assert_eq!(
            bad_url
                .on_event(presigned("att", "ftp://s/k"))
                .unwrap_err()
                .code(),
            "protocol"
        );
        let mut forever = AttachFlow::new(Value::Null, "att", 1, 1, 0);
        forever.next(0.0);
        assert_eq!(forever.next(0.0), Action::Receive { until_ms: None });
        assert_eq!(no_response().code(), "no_response");
    }
}
