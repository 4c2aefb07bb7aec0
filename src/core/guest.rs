//! Genesys Cloud Web Messaging guest attachments, the pure part: checking a file against
//! the session's rules, building the guest requests, reading the server's messages, and
//! turning the protocol's error codes into stable codes and words a customer understands.
//!
//! The guest protocol is JSON over the widget's WebSocket. Every server message is an
//! envelope `{"type", "class", "code", "body"}`; the attachment flow is `onAttachment` →
//! `PresignedUrlResponse` (or `GenerateUrlError`) → one PUT to the presigned URL →
//! `UploadSuccessEvent` (or `UploadFailureEvent`). `crate::web::guest` runs the flow.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::core::error::UploadError;

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
    /// Reads the rules from a `SessionResponse` body (JSON text).
    pub fn from_json(body: &str) -> Result<Self, UploadError> {
        serde_json::from_str(body).map_err(|_| {
            UploadError::invalid(
                "session.sessionResponse must be the body of the SessionResponse message",
            )
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
    let essence = |t: &str| t.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
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
    let inbound = rules.inbound().filter(|i| {
        !i.file_types.is_empty() && i.max_file_size_kb.is_some_and(|kb| kb > 0.0)
    });
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
    let trimmed = |value: f64| {
        let text = format!("{value:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    match bytes {
        b if b >= 1_000_000 => format!("{} MB", trimmed(b as f64 / 1e6)),
        b if b >= 1_000 => format!("{} KB", trimmed(b as f64 / 1e3)),
        b => format!("{b} bytes"),
    }
}

/// The stable code and customer's words for a guest API error code.
pub fn server_error(server_code: u32) -> UploadError {
    let (code, words) = match server_code {
        4001 => ("file_type_invalid", "This type of file can't be sent here."),
        4002 => ("file_size_invalid", "This file is too large to send here."),
        4003 => ("file_content_invalid", "This file was refused. It may be damaged or unsafe."),
        4004 => ("file_name_invalid", "This file name can't be used. Rename the file and try again."),
        4005 => ("file_name_too_long", "This file name is too long. Rename the file and try again."),
        4006 => ("session_expired", "Your chat session has expired. Start a new chat to send files."),
        4007 => ("session_not_found", "Your chat session was not found. Start a new chat to send files."),
        4008 => ("attachment_expired", "The upload took too long and expired. Please try again."),
        4009 => ("attachment_not_found", "The file could not be found. Please try again."),
        4010 => ("attachment_not_uploaded", "The file did not finish uploading. Please try again."),
        4029 => ("too_many_requests", "Too many files at once. Wait a moment and try again."),
        _ => ("unexpected", "Something went wrong on our side. Please try again later."),
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
pub fn on_attachment(
    token: &str,
    attachment_id: &str,
    file_name: &str,
    file_type: &str,
    file_size: u64,
    file_md5: Option<&str>,
) -> Value {
    let mut request = json!({
        "action": "onAttachment",
        "token": token,
        "attachmentId": attachment_id,
        "fileName": file_name,
        "fileType": file_type,
        "fileSize": file_size,
        "errorsAsJson": true,
    });
    if let (Some(md5), Some(object)) = (file_md5, request.as_object_mut()) {
        object.insert("fileMd5".into(), json!(md5));
    }
    request
}

/// The `deleteAttachment` request (a file uploaded but not sent).
pub fn delete_attachment(token: &str, attachment_id: &str) -> Value {
    json!({ "action": "deleteAttachment", "token": token, "attachmentId": attachment_id })
}

/// The `onMessage` request carrying `text` and the attachments `ids`.
pub fn attachment_message(token: &str, text: &str, ids: &[String]) -> Value {
    let content: Vec<Value> = ids
        .iter()
        .map(|id| json!({ "contentType": "Attachment", "attachment": { "id": id } }))
        .collect();
    json!({
        "action": "onMessage",
        "token": token,
        "message": { "type": "Text", "text": text, "content": content },
    })
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
    /// Reads one server message (JSON text). Unknown or malformed messages are `Other`.
    pub fn parse(text: &str) -> GuestEvent {
        let Ok(envelope) = serde_json::from_str::<Value>(text) else {
            return GuestEvent::Other;
        };
        let body = &envelope["body"];
        let string = |v: &Value| v.as_str().map(str::to_owned);
        let number = |v: &Value| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64));
        let id = || string(&body["attachmentId"]);
        let parsed = match envelope["class"].as_str().unwrap_or_default() {
            "PresignedUrlResponse" => (|| {
                let headers = body["headers"]
                    .as_object()
                    .map(|h| {
                        h.iter()
                            .filter_map(|(k, v)| Some((k.clone(), string(v)?)))
                            .collect()
                    })
                    .unwrap_or_default();
                Some(GuestEvent::PresignedUrl {
                    attachment_id: id()?,
                    url: string(&body["url"])?,
                    headers,
                })
            })(),
            "GenerateUrlError" => number(&body["errorCode"]).map(|code| GuestEvent::UrlError {
                attachment_id: id(),
                error_code: code as u32,
            }),
            "UploadSuccessEvent" => (|| {
                Some(GuestEvent::UploadSucceeded {
                    attachment_id: id()?,
                    download_url: string(&body["downloadUrl"])?,
                })
            })(),
            "UploadFailureEvent" => (|| {
                Some(GuestEvent::UploadFailed {
                    attachment_id: id()?,
                    error_code: number(&body["errorCode"])? as u32,
                })
            })(),
            "TooManyRequestsErrorMessage" => Some(GuestEvent::TooManyRequests {
                retry_after_secs: number(&body["retryAfter"]).unwrap_or(1),
            }),
            "AttachmentDeletedResponse" => id().map(|attachment_id| GuestEvent::Deleted { attachment_id }),
            "string" => number(&envelope["code"])
                .filter(|code| *code >= 400)
                .map(|code| GuestEvent::Error { code: code as u32 }),
            _ => None,
        };
        parsed.unwrap_or(GuestEvent::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> SessionRules {
        SessionRules::from_json(
            r#"{"connected":true,"allowedMedia":{"inbound":{"fileTypes":[{"type":"image/*"},{"type":"application/pdf"}],"maxFileSizeKB":10240}},"blockedExtensions":[".exe",".BAT"]}"#,
        )
        .unwrap()
    }

    fn code(result: Result<(), UploadError>) -> &'static str {
        result.err().map_or("ok", |e| e.code())
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
        assert_eq!(code(validate(Some(&r), "doc.pdf", "application/pdf", 10_240_000)), "ok");
        assert_eq!(code(validate(Some(&r), "doc.pdf", "application/pdf", 10_240_001)), "file_size_invalid");
        assert_eq!(code(validate(Some(&r), "cat.png", "image/png", 0)), "file_empty");
        assert_eq!(code(validate(Some(&r), "setup.EXE", "image/png", 5)), "file_extension_blocked");
        assert_eq!(code(validate(Some(&r), "run.bat", "application/pdf", 5)), "file_extension_blocked");
        assert_eq!(code(validate(Some(&r), "notes.txt", "text/plain", 5)), "file_type_invalid");
        assert_eq!(code(validate(Some(&r), "noext", "image/gif", 5)), "ok");
        assert_eq!(code(validate(None, "any.exe", "x/y", 5)), "ok");
        assert_eq!(code(validate(None, "any", "x/y", 0)), "file_empty");
        let off = SessionRules::from_json(r#"{"allowedMedia":{"inbound":{}}}"#).unwrap();
        assert_eq!(code(validate(Some(&off), "cat.png", "image/png", 5)), "attachments_disabled");
        let none = SessionRules::from_json(r#"{"allowedMedia":{}}"#).unwrap();
        assert_eq!(code(validate(Some(&none), "cat.png", "image/png", 5)), "attachments_disabled");
        let err = validate(Some(&r), "doc.pdf", "application/pdf", 20_000_000).unwrap_err();
        assert_eq!(err.to_string(), "This file is too large. The limit is 10.24 MB.");
        assert!(SessionRules::from_json("[1]").is_err());
        assert_eq!((human_size(5_000_000), human_size(1_500), human_size(999)), ("5 MB".into(), "1.5 KB".into(), "999 bytes".into()));
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
            assert!(matches!(err, UploadError::Attachment { server_code: Some(s), .. } if s == server));
            assert!(err.to_string().ends_with('.'), "{err}");
        }
    }

    #[test]
    fn builds_requests() {
        let request = on_attachment("tok", "att-1", "a.pdf", "application/pdf", 42, Some("abcd"));
        assert_eq!(
            request,
            json!({"action":"onAttachment","token":"tok","attachmentId":"att-1","fileName":"a.pdf",
                   "fileType":"application/pdf","fileSize":42,"errorsAsJson":true,"fileMd5":"abcd"})
        );
        assert!(on_attachment("t", "a", "n", "t", 1, None).get("fileMd5").is_none());
        assert_eq!(
            delete_attachment("tok", "att-1"),
            json!({"action":"deleteAttachment","token":"tok","attachmentId":"att-1"})
        );
        assert_eq!(
            attachment_message("tok", "here", &["a".into(), "b".into()]),
            json!({"action":"onMessage","token":"tok","message":{"type":"Text","text":"here","content":[
                {"contentType":"Attachment","attachment":{"id":"a"}},
                {"contentType":"Attachment","attachment":{"id":"b"}}]}})
        );
    }

    #[test]
    fn parses_server_messages() {
        use GuestEvent::*;
        let cases = [
            (r#"{"type":"response","class":"PresignedUrlResponse","code":200,"body":{"attachmentId":"a","headers":{"x-amz-tagging":"t=1"},"url":"https://u/k"}}"#,
             PresignedUrl { attachment_id: "a".into(), url: "https://u/k".into(), headers: vec![("x-amz-tagging".into(), "t=1".into())] }),
            (r#"{"type":"message","class":"GenerateUrlError","code":200,"body":{"attachmentId":"a","errorCode":4001,"errorMessage":"bad"}}"#,
             UrlError { attachment_id: Some("a".into()), error_code: 4001 }),
            (r#"{"type":"message","class":"UploadSuccessEvent","code":200,"body":{"attachmentId":"a","downloadUrl":"https://d","timestamp":"t"}}"#,
             UploadSucceeded { attachment_id: "a".into(), download_url: "https://d".into() }),
            (r#"{"type":"message","class":"UploadFailureEvent","code":200,"body":{"attachmentId":"a","errorCode":4003,"errorMessage":"x"}}"#,
             UploadFailed { attachment_id: "a".into(), error_code: 4003 }),
            (r#"{"type":"response","class":"TooManyRequestsErrorMessage","code":429,"body":{"retryAfter":3,"errorCode":4029,"errorMessage":"slow down"}}"#,
             TooManyRequests { retry_after_secs: 3 }),
            (r#"{"type":"response","class":"string","code":4006,"body":"session expired"}"#, Error { code: 4006 }),
            (r#"{"type":"message","class":"AttachmentDeletedResponse","code":200,"body":{"attachmentId":"a"}}"#,
             Deleted { attachment_id: "a".into() }),
            (r#"{"type":"response","class":"string","code":200,"body":"ok"}"#, Other),
            (r#"{"type":"message","class":"StructuredMessage","code":200,"body":{}}"#, Other),
            (r#"{"type":"response","class":"PresignedUrlResponse","code":200,"body":{}}"#, Other),
            ("not json", Other),
        ];
        for (text, expected) in cases {
            assert_eq!(GuestEvent::parse(text), expected, "{text}");
        }
    }
}
