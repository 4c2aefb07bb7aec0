//! Genesys Cloud Web Messaging guest attachments, the pure part: checking a file against
//! the session's rules, building the guest requests, reading the server's messages, and
//! turning the protocol's error codes into stable codes and words a customer understands.
//!
//! The guest protocol is JSON over the widget's WebSocket. Every server message is an
//! envelope `{"type", "class", "code", "body"}`; the attachment flow is `onAttachment` →
//! `PresignedUrlResponse` (or `GenerateUrlError`) → one PUT to the presigned URL →
//! `UploadSuccessEvent` (or `UploadFailureEvent`). `crate::web::guest` runs the flow.
//!
//! Messages are plain serde types: the browser glue converts them to and from JavaScript
//! objects with serde-wasm-bindgen, so no JSON library ends up in the wasm.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::error::UploadError;
use crate::core::progress::{Phase, Progress};

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
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionRules {
    #[serde(default)]
    allowed_media: Option<AllowedMedia>,
    #[serde(default)]
    blocked_extensions: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
struct AllowedMedia {
    #[serde(default)]
    inbound: Option<InboundMedia>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
struct InboundMedia {
    #[serde(default, rename = "fileTypes")]
    file_types: Vec<FileType>,
    #[serde(default, rename = "maxFileSizeKB")]
    max_file_size_kb: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
struct FileType {
    #[serde(rename = "type")]
    mime: String,
}

impl SessionRules {
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
        .any(|allowed| type_allowed(&allowed.mime, mime))
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

/// The `onAttachment` request.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OnAttachment<'a> {
    action: &'static str,
    token: &'a str,
    attachment_id: &'a str,
    file_name: &'a str,
    file_type: &'a str,
    file_size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_md5: Option<&'a str>,
    errors_as_json: bool,
}

impl<'a> OnAttachment<'a> {
    /// Asks for a presigned URL for a file; `file_md5` is sent when given.
    pub fn new(
        token: &'a str,
        attachment_id: &'a str,
        file_name: &'a str,
        file_type: &'a str,
        file_size: u64,
        file_md5: Option<&'a str>,
    ) -> Self {
        OnAttachment {
            action: "onAttachment",
            token,
            attachment_id,
            file_name,
            file_type,
            file_size,
            file_md5,
            errors_as_json: true,
        }
    }
}

/// The `deleteAttachment` request (a file uploaded but not sent).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeleteAttachment<'a> {
    action: &'static str,
    token: &'a str,
    attachment_id: &'a str,
}

impl<'a> DeleteAttachment<'a> {
    /// Deletes `attachment_id`.
    pub fn new(token: &'a str, attachment_id: &'a str) -> Self {
        DeleteAttachment {
            action: "deleteAttachment",
            token,
            attachment_id,
        }
    }
}

/// The `onMessage` request carrying text and attachments.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OnMessage<'a> {
    action: &'static str,
    token: &'a str,
    message: TextMessage<'a>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
struct TextMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    content: Vec<AttachmentContent<'a>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct AttachmentContent<'a> {
    content_type: &'static str,
    attachment: AttachmentRef<'a>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
struct AttachmentRef<'a> {
    id: &'a str,
}

impl<'a> OnMessage<'a> {
    /// Sends `text` with the attachments `ids`.
    pub fn new(token: &'a str, text: &'a str, ids: &'a [String]) -> Self {
        OnMessage {
            action: "onMessage",
            token,
            message: TextMessage {
                kind: "Text",
                text,
                content: ids
                    .iter()
                    .map(|id| AttachmentContent {
                        content_type: "Attachment",
                        attachment: AttachmentRef { id },
                    })
                    .collect(),
            },
        }
    }
}

/// A server message's envelope: `{"type", "class", "code", "body"}` (`type` is not needed).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Envelope {
    #[serde(default)]
    class: String,
    #[serde(default)]
    code: Option<f64>,
    #[serde(default)]
    body: Option<Body>,
}

/// A body is an object for most classes and a text for `class: "string"` errors.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
enum Body {
    Fields(BodyFields),
    Text(String),
}

/// The body fields of every class the flow reads, all optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
struct BodyFields {
    attachment_id: Option<String>,
    url: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    error_code: Option<f64>,
    download_url: Option<String>,
    retry_after: Option<f64>,
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

impl From<Envelope> for GuestEvent {
    fn from(envelope: Envelope) -> GuestEvent {
        let fields = match envelope.body {
            Some(Body::Fields(fields)) => fields,
            _ => BodyFields::default(),
        };
        let code = |v: Option<f64>| v.filter(|c| *c >= 0.0).map(|c| c as u32);
        let parsed = match envelope.class.as_str() {
            "PresignedUrlResponse" => {
                fields
                    .attachment_id
                    .zip(fields.url)
                    .map(|(attachment_id, url)| GuestEvent::PresignedUrl {
                        attachment_id,
                        url,
                        headers: fields.headers.unwrap_or_default().into_iter().collect(),
                    })
            }
            "GenerateUrlError" => code(fields.error_code).map(|error_code| GuestEvent::UrlError {
                attachment_id: fields.attachment_id,
                error_code,
            }),
            "UploadSuccessEvent" => fields.attachment_id.zip(fields.download_url).map(
                |(attachment_id, download_url)| GuestEvent::UploadSucceeded {
                    attachment_id,
                    download_url,
                },
            ),
            "UploadFailureEvent" => fields.attachment_id.zip(code(fields.error_code)).map(
                |(attachment_id, error_code)| GuestEvent::UploadFailed {
                    attachment_id,
                    error_code,
                },
            ),
            "TooManyRequestsErrorMessage" => Some(GuestEvent::TooManyRequests {
                retry_after_secs: code(fields.retry_after).map_or(1, u64::from),
            }),
            "AttachmentDeletedResponse" => fields
                .attachment_id
                .map(|attachment_id| GuestEvent::Deleted { attachment_id }),
            "string" => code(envelope.code)
                .filter(|code| *code >= 400)
                .map(|code| GuestEvent::Error { code }),
            _ => None,
        };
        parsed.unwrap_or(GuestEvent::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_from(json: &str) -> SessionRules {
        serde_json::from_str(json).expect("a SessionResponse body")
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
        assert!(serde_json::from_str::<SessionRules>("[1]").is_err());
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
        let request =
            OnAttachment::new("tok", "att-1", "a.pdf", "application/pdf", 42, Some("abcd"));
        assert_eq!(
            json(&request),
            serde_json::json!({"action":"onAttachment","token":"tok","attachmentId":"att-1","fileName":"a.pdf",
                   "fileType":"application/pdf","fileSize":42,"errorsAsJson":true,"fileMd5":"abcd"})
        );
        assert!(json(&OnAttachment::new("t", "a", "n", "t", 1, None))
            .get("fileMd5")
            .is_none());
        assert_eq!(
            json(&DeleteAttachment::new("tok", "att-1")),
            serde_json::json!({"action":"deleteAttachment","token":"tok","attachmentId":"att-1"})
        );
        let ids = ["a".to_string(), "b".to_string()];
        assert_eq!(
            json(&OnMessage::new("tok", "here", &ids)),
            serde_json::json!({"action":"onMessage","token":"tok","message":{"type":"Text","text":"here","content":[
                {"contentType":"Attachment","attachment":{"id":"a"}},
                {"contentType":"Attachment","attachment":{"id":"b"}}]}})
        );
    }

    /// A request as JSON, for comparison.
    fn json<T: Serialize>(request: &T) -> serde_json::Value {
        serde_json::to_value(request).expect("serialisable")
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
        ];
        for (text, expected) in cases {
            let event = serde_json::from_str::<Envelope>(text).map_or(Other, GuestEvent::from);
            assert_eq!(event, expected, "{text}");
        }
    }
}
