//! The guest API's pieces that need no connection or shared state: the
//! message envelopes, the session's attachment rules and the checks
//! Genesys runs on `onAttachment`, the error codes, the per-connection
//! guest fault spec, and small formatting helpers (UUIDs, RFC 3339 times,
//! percent-encoding).
//!
//! Kept apart from the WebSocket loop so the rules can be unit-tested and
//! `config.rs` can parse the `--guest-*` flags without touching sockets.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::checksum::hex;
use crate::ids::random_bytes;

/// Guest API error codes (the `code` of a `string` response, or the
/// `errorCode` of a `GenerateUrlError` / `UploadFailureEvent`).
pub mod code {
    pub const BAD_REQUEST: u32 = 400;
    /// The deployment has the feature (here: attachments) turned off.
    pub const FEATURE_UNAVAILABLE: u32 = 4000;
    pub const FILE_TYPE: u32 = 4001;
    pub const FILE_SIZE: u32 = 4002;
    pub const CONTENT_INVALID: u32 = 4003;
    pub const FILE_NAME_INVALID: u32 = 4004;
    pub const FILE_NAME_TOO_LONG: u32 = 4005;
    pub const SESSION_EXPIRED: u32 = 4006;
    pub const SESSION_NOT_FOUND: u32 = 4007;
    pub const ATTACHMENT_EXPIRED: u32 = 4008;
    pub const ATTACHMENT_NOT_FOUND: u32 = 4009;
    pub const NOT_UPLOADED: u32 = 4010;
    /// An `onMessage` text longer than [`super::MAX_TEXT_LENGTH`].
    pub const MESSAGE_TOO_LONG: u32 = 4011;
    /// `customAttributes` larger than [`super::MAX_CUSTOM_DATA_BYTES`].
    pub const CUSTOM_ATTRIBUTES_TOO_LARGE: u32 = 4013;
    /// A required field of a request is absent (or null).
    pub const MISSING_PARAMETER: u32 = 4020;
    pub const RATE_LIMITED: u32 = 4029;
}

/// Longest file name accepted, in UTF-16 code units (what the browser's
/// `name.length` and Genesys' Java backend count).
pub const MAX_FILE_NAME: usize = 255;
/// `maxCustomDataBytes` in the `SessionResponse` (Genesys' default), and the
/// limit on an `onMessage`'s `customAttributes` (4013 above it).
pub const MAX_CUSTOM_DATA_BYTES: u64 = 100;
/// Longest `onMessage` text accepted, in UTF-16 code units (4011 above it):
/// the 4000 characters Genesys allows a web messaging text.
pub const MAX_TEXT_LENGTH: usize = 4000;

/// A refused request: a guest error code and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestError {
    pub code: u32,
    pub message: String,
}

impl GuestError {
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        GuestError {
            code,
            message: message.into(),
        }
    }

    /// The plain form: `{"type":"response","class":"string","code":N,"body":"msg"}`.
    pub fn to_string_response(&self) -> Value {
        string_response(self.code, &self.message)
    }
}

/// `{"type":"response","class":…,"code":…,"body":…}`: the answer to a request.
pub fn response(class: &str, code: u32, body: Value) -> Value {
    json!({"type": "response", "class": class, "code": code, "body": body})
}

/// `{"type":"message",…}`: an event or a message the server originates.
pub fn message(class: &str, code: u32, body: Value) -> Value {
    json!({"type": "message", "class": class, "code": code, "body": body})
}

/// The guest API's plain error (class `string`, the message as body).
pub fn string_response(code: u32, text: &str) -> Value {
    response("string", code, Value::String(text.to_owned()))
}

/// The first of `fields` that `request` lacks (absent or null), for a 4020.
pub fn missing_field<'a>(request: &Value, fields: &[&'a str]) -> Option<&'a str> {
    fields
        .iter()
        .copied()
        .find(|f| request.get(f).is_none_or(Value::is_null))
}

/// 4020 for a required field the request lacks.
pub fn missing_parameter(field: &str) -> Value {
    string_response(
        code::MISSING_PARAMETER,
        &format!("missing parameter: {field}"),
    )
}

/// The attachment rules sent in every `SessionResponse`, from
/// `--guest-file-types`, `--guest-max-kb` and `--guest-blocked`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRules {
    /// Allowed MIME types: exact, `type/*` or `*/*`, as given.
    pub file_types: Vec<String>,
    /// `maxFileSizeKB`; 1 KB is 1000 bytes, as the guest API counts.
    pub max_kb: u64,
    /// Blocked extensions, each with its leading dot, as given.
    pub blocked: Vec<String>,
}

impl Default for GuestRules {
    fn default() -> Self {
        GuestRules {
            file_types: ["image/*", "application/pdf", "text/plain"]
                .map(String::from)
                .to_vec(),
            max_kb: 51_200,
            blocked: [".exe", ".bat", ".cmd", ".js"].map(String::from).to_vec(),
        }
    }
}

impl GuestRules {
    /// Parses `--guest-file-types`: comma-separated `type/subtype` items
    /// (`*` allowed on either side), empty items skipped. An empty list is
    /// valid and means no file may be attached.
    pub fn parse_file_types(text: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let ok = item.split_once('/').is_some_and(|(a, b)| {
                let token = |s: &str| {
                    !s.is_empty()
                        && s.bytes().all(|c| {
                            c.is_ascii_graphic() && !matches!(c, b'/' | b';' | b',' | b'"')
                        })
                };
                token(a) && token(b)
            });
            if !ok {
                return Err(format!(
                    "{item:?} is not a MIME type like image/png or image/*"
                ));
            }
            out.push(item.to_owned());
        }
        Ok(out)
    }

    /// Parses `--guest-blocked`: comma-separated extensions, a leading dot
    /// added when missing, empty items skipped.
    pub fn parse_blocked(text: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bare = item.strip_prefix('.').unwrap_or(item);
            let ok = !bare.is_empty()
                && bare
                    .chars()
                    .all(|c| !c.is_whitespace() && !matches!(c, '/' | '\\' | '.'));
            if !ok {
                return Err(format!("{item:?} is not a file extension like .exe"));
            }
            out.push(format!(".{bare}"));
        }
        Ok(out)
    }

    /// The largest `fileSize` accepted, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_kb.saturating_mul(1000)
    }

    /// The `SessionResponse` body.
    pub fn session_body(&self, new_session: bool) -> Value {
        let file_types: Vec<Value> = self
            .file_types
            .iter()
            .map(|t| json!({ "type": t }))
            .collect();
        json!({
            "connected": true,
            "newSession": new_session,
            "readOnly": false,
            "maxCustomDataBytes": MAX_CUSTOM_DATA_BYTES,
            "allowedMedia": {
                "inbound": {"fileTypes": file_types, "maxFileSizeKB": self.max_kb}
            },
            "blockedExtensions": self.blocked,
            "clearedExistingSession": false,
        })
    }

    /// The `onAttachment` checks, in this order: type allowed (4001),
    /// extension not blocked (4001), size in 1..=max (4002), name non-empty
    /// and without `/` or `\` (4004), name at most 255 long (4005).
    pub fn validate(&self, file_name: &str, file_type: &str, size: u64) -> Result<(), GuestError> {
        if !self.file_types.iter().any(|a| type_allowed(a, file_type)) {
            return Err(GuestError::new(code::FILE_TYPE, "file type not supported"));
        }
        if let Some(ext) = extension(file_name) {
            if self.blocked.iter().any(|b| b.eq_ignore_ascii_case(ext)) {
                return Err(GuestError::new(
                    code::FILE_TYPE,
                    "file extension not supported",
                ));
            }
        }
        if size == 0 {
            return Err(GuestError::new(code::FILE_SIZE, "file is empty"));
        }
        if size > self.max_bytes() {
            return Err(GuestError::new(
                code::FILE_SIZE,
                format!("file size is greater than {} KB", self.max_kb),
            ));
        }
        if file_name.is_empty() || file_name.contains(['/', '\\']) {
            return Err(GuestError::new(
                code::FILE_NAME_INVALID,
                "file name invalid",
            ));
        }
        if file_name.encode_utf16().count() > MAX_FILE_NAME {
            return Err(GuestError::new(
                code::FILE_NAME_TOO_LONG,
                "file name too long",
            ));
        }
        Ok(())
    }
}

/// Whether `mime` matches an allowed type: exact, `type/*` or `*/*`,
/// ignoring case and parameters (`text/plain; charset=utf-8`), as the
/// chunkup client checks before asking.
pub fn type_allowed(allowed: &str, mime: &str) -> bool {
    let essence = |t: &str| {
        t.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    };
    let (allowed, mime) = (essence(allowed), essence(mime));
    if allowed == "*/*" || allowed == mime {
        return true;
    }
    match (allowed.strip_suffix("/*"), mime.split_once('/')) {
        (Some(family), Some((kind, _))) => family == kind,
        _ => false,
    }
}

/// The extension with its dot (`.exe` of `a.tar.exe`); `None` without a dot.
fn extension(file_name: &str) -> Option<&str> {
    file_name.rfind('.').map(|i| &file_name[i..])
}

/// `mediaType` of an attachment in a `StructuredMessage`.
pub fn media_type(mime: &str) -> &'static str {
    let lower = mime.trim().to_ascii_lowercase();
    match lower.split('/').next().unwrap_or_default() {
        "image" => "Image",
        "video" => "Video",
        "audio" => "Audio",
        _ => "File",
    }
}

/// The guest fault spec of one WebSocket connection (`?faults=`). Counts
/// are per connection, so a test gets the same faults on every run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestFaults {
    /// The first N `onAttachment` requests get `TooManyRequestsErrorMessage`.
    pub rate_limit: u64,
    /// `retryAfter` of those answers; `None` is 1.
    pub retry_after: Option<u64>,
    /// The first N presigned URLs are already expired.
    pub expired_url: u64,
    /// The first N completed uploads get `UploadFailureEvent` 4008.
    pub upload_failure: u64,
    /// Every `onAttachment` answers 4006.
    pub session_expired: bool,
    /// Every `onAttachment` answers 4000: the deployment's attachments were
    /// switched off after the session started (the `SessionResponse` still
    /// lists the rules, so a client asks and meets the refusal).
    pub attachments_off: bool,
}

impl GuestFaults {
    /// Parses comma-separated items `rate-limit:N`, `retry-after:SECS`,
    /// `expired-url:N`, `upload-failure:N`, `session-expired` (or
    /// `session-expired:on|off`), `attachments-off` (or
    /// `attachments-off:on|off`). Case and whitespace around items don't
    /// matter, empty items are skipped, a repeated item overrides the
    /// earlier one, and an empty spec or `none` means no faults.
    pub fn parse(text: &str) -> Result<GuestFaults, String> {
        let lowered = text.trim().to_ascii_lowercase();
        let items: Vec<&str> = lowered
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .collect();
        let mut spec = GuestFaults::default();
        if items == ["none"] {
            return Ok(spec);
        }
        for item in items {
            let (kind, value) = match item.split_once(':') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            let count = || {
                value
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| format!("{item:?}: expected {kind}:N with N a whole number"))
            };
            match kind {
                "rate-limit" => spec.rate_limit = count()?,
                "retry-after" => spec.retry_after = Some(count()?),
                "expired-url" => spec.expired_url = count()?,
                "upload-failure" => spec.upload_failure = count()?,
                "session-expired" | "attachments-off" => {
                    let on = match value {
                        None | Some("on") => true,
                        Some("off") => false,
                        Some(_) => return Err(format!("{item:?}: expected {kind}[:on|off]")),
                    };
                    if kind == "session-expired" {
                        spec.session_expired = on;
                    } else {
                        spec.attachments_off = on;
                    }
                }
                _ => return Err(format!("unknown guest fault {item:?}")),
            }
        }
        Ok(spec)
    }

    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.unwrap_or(1)
    }
}

/// Canonical form (`none` when empty), for the log.
impl fmt::Display for GuestFaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items = Vec::new();
        if self.rate_limit > 0 {
            items.push(format!("rate-limit:{}", self.rate_limit));
        }
        if let Some(r) = self.retry_after {
            items.push(format!("retry-after:{r}"));
        }
        if self.expired_url > 0 {
            items.push(format!("expired-url:{}", self.expired_url));
        }
        if self.upload_failure > 0 {
            items.push(format!("upload-failure:{}", self.upload_failure));
        }
        if self.session_expired {
            items.push("session-expired".into());
        }
        if self.attachments_off {
            items.push("attachments-off".into());
        }
        if items.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&items.join(","))
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so the
/// result is one path segment (a file name, a fault spec).
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A random version-4 UUID (no `rand` or `uuid` dependency for message ids).
pub fn new_uuid() -> String {
    let mut bytes = random_bytes::<16>();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = hex(&bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Now as RFC 3339 UTC with milliseconds (`2024-05-01T12:00:00.123Z`), the
/// form Genesys timestamps take.
pub fn rfc3339_now() -> String {
    rfc3339(SystemTime::now())
}

pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's
/// `civil_from_days` for non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn types_and_extensions() {
        assert!(type_allowed("image/*", "image/png"));
        assert!(type_allowed("IMAGE/*", "image/PNG"));
        assert!(type_allowed("text/plain", "text/plain; charset=utf-8"));
        assert!(type_allowed("*/*", "x/y"));
        assert!(!type_allowed("image/*", "imagex"));
        assert!(!type_allowed("application/pdf", "application/json"));
        let r = GuestRules::default();
        assert_eq!(r.validate("a.png", "image/png", 1), Ok(()));
        assert_eq!(
            r.validate("a.PNG.Exe", "image/png", 1).map_err(|e| e.code),
            Err(4001)
        );
        assert_eq!(
            r.validate("a.zip", "application/zip", 1)
                .map_err(|e| e.code),
            Err(4001)
        );
        assert_eq!(
            r.validate("a.png", "image/png", 0).map_err(|e| e.code),
            Err(4002)
        );
        assert_eq!(r.validate("a.png", "image/png", 51_200_000), Ok(()));
        assert_eq!(
            r.validate("a.png", "image/png", 51_200_001)
                .map_err(|e| e.code),
            Err(4002)
        );
        assert_eq!(
            r.validate("", "image/png", 1).map_err(|e| e.code),
            Err(4004)
        );
        assert_eq!(
            r.validate("a\\b.png", "image/png", 1).map_err(|e| e.code),
            Err(4004)
        );
        let long = format!("{}.png", "é".repeat(251));
        assert_eq!(r.validate(&long, "image/png", 1), Ok(()));
        let long = format!("{}.png", "é".repeat(252));
        assert_eq!(
            r.validate(&long, "image/png", 1).map_err(|e| e.code),
            Err(4005)
        );
    }

    #[test]
    fn rule_flags() {
        assert_eq!(
            GuestRules::parse_file_types(" image/* ,, text/plain"),
            Ok(vec!["image/*".to_owned(), "text/plain".to_owned()])
        );
        assert_eq!(GuestRules::parse_file_types(""), Ok(vec![]));
        for bad in ["image", "image/", "/png", "a/b/c", "a b/c"] {
            assert!(GuestRules::parse_file_types(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            GuestRules::parse_blocked("exe, .BAT"),
            Ok(vec![".exe".to_owned(), ".BAT".to_owned()])
        );
        for bad in [".", "a/b", ".tar.gz", "a b"] {
            assert!(GuestRules::parse_blocked(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn guest_fault_specs() {
        let f = GuestFaults::parse(
            " Rate-Limit:2, retry-after:3,expired-url:1,upload-failure:4,session-expired,\
             attachments-off",
        )
        .expect("valid");
        assert_eq!(
            f,
            GuestFaults {
                rate_limit: 2,
                retry_after: Some(3),
                expired_url: 1,
                upload_failure: 4,
                session_expired: true,
                attachments_off: true,
            }
        );
        assert_eq!(
            f.to_string(),
            "rate-limit:2,retry-after:3,expired-url:1,upload-failure:4,session-expired,\
             attachments-off"
        );
        assert_eq!(
            GuestFaults::parse("attachments-off:on,attachments-off:off"),
            Ok(GuestFaults::default())
        );
        assert_eq!(GuestFaults::parse("none"), Ok(GuestFaults::default()));
        assert_eq!(GuestFaults::parse(""), Ok(GuestFaults::default()));
        assert_eq!(GuestFaults::default().to_string(), "none");
        for bad in [
            "rate-limit",
            "rate-limit:-1",
            "expired-url:x",
            "bogus:1",
            "session-expired:2",
            "attachments-off:yes",
            "none,none",
        ] {
            assert!(GuestFaults::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn formatting() {
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(id, new_uuid());
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_827_696_789); // leap day 2000
        assert_eq!(rfc3339(t), "2000-02-29T12:34:56.789Z");
        assert_eq!(encode_segment("a b/ü.pdf"), "a%20b%2F%C3%BC.pdf");
        assert_eq!(media_type("image/png"), "Image");
        assert_eq!(media_type("application/pdf"), "File");
    }
}
