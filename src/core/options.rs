//! The validated settings of one upload, independent of how JavaScript spelled them.
//!
//! `crate::web::options` reads the JS object and hands the plain values to the checks here,
//! so every rule (what a chunk size may be, what a metadata key may contain) is written and
//! tested once, natively.

use crate::core::error::UploadError;
use crate::core::retry::RetryPolicy;

/// 8 MiB: large enough that per-request overhead stays small on fast links, small enough
/// that a retry on a flaky mobile link re-sends little.
pub const DEFAULT_CHUNK_SIZE: u64 = 8 * 1024 * 1024;
/// One progress call per 100 ms at most, besides the ones that are always made.
pub const DEFAULT_PROGRESS_INTERVAL_MS: u32 = 100;
/// Two minutes without an answer to one request counts as a network failure.
pub const DEFAULT_TIMEOUT_MS: u32 = 120_000;
/// The largest integer JavaScript numbers hold exactly.
pub const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// The upload protocols, by their `options.protocol` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolKind {
    /// tus 1.0 (the default).
    Tus,
    /// One PUT of the whole file to a presigned URL.
    Put,
    /// A Content-Range resumable session (Google Cloud Storage style).
    Range,
    /// An S3 multipart upload through presigned part URLs, several parts in flight.
    S3,
}

impl ProtocolKind {
    /// Every protocol, in the order the docs list them.
    pub const ALL: [ProtocolKind; 4] = [
        ProtocolKind::Tus,
        ProtocolKind::Put,
        ProtocolKind::Range,
        ProtocolKind::S3,
    ];

    /// The name JavaScript uses.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolKind::Tus => "tus",
            ProtocolKind::Put => "put",
            ProtocolKind::Range => "range",
            ProtocolKind::S3 => "s3",
        }
    }

    /// The protocol called `name`.
    pub fn parse(name: &str) -> Result<Self, UploadError> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                UploadError::invalid(format!(
                    "options.protocol \"{name}\" is not supported; use \"tus\", \"put\", \"range\" or \"s3\""
                ))
            })
    }
}

/// Everything the engine and the protocols need to know about one upload.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadSettings {
    /// Which protocol speaks to the server.
    pub protocol: ProtocolKind,
    /// Absolute http(s) URL: the tus creation URL, the presigned PUT URL or the session URI.
    pub endpoint: String,
    /// Bytes per request.
    pub chunk_size: u64,
    /// `Upload-Metadata` pairs, defaults (`filename`, `filetype`) first, caller's after.
    pub metadata: Vec<(String, String)>,
    /// When and how often to retry.
    pub retry: RetryPolicy,
    /// Minimum time between throttled progress calls.
    pub progress_interval_ms: u32,
    /// 0 disables the per-request timeout.
    pub timeout_ms: u32,
    /// `put`: the `Content-Type` to send, if any.
    pub content_type: Option<String>,
    /// `put`: the caller supplies a fresh URL and headers for every attempt.
    pub fresh_url_per_attempt: bool,
    /// Also compute the whole file's MD5.
    pub md5: bool,
    /// Continue the upload at this URL (`uploadUrl`, or a stored resume record) instead of
    /// creating one: tus asks its offset with HEAD, range queries the session's status.
    pub resume_url: Option<String>,
}

/// Checks that a number is a whole number in `min..=max` and returns it.
pub fn whole_number(name: &str, value: f64, min: u64, max: u64) -> Result<u64, UploadError> {
    if !value.is_finite() || value.fract() != 0.0 || value < min as f64 || value > max as f64 {
        return Err(UploadError::invalid(format!(
            "{name} must be a whole number from {min} to {max}, got {}",
            describe_number(value)
        )));
    }
    Ok(value as u64)
}

/// Names a number without float formatting, whose code is large in wasm.
fn describe_number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if value.abs() >= 1e18 {
        "a number too large".into()
    } else if value.fract() == 0.0 {
        format!("{}", value as i64)
    } else {
        "a fractional number".into()
    }
}

/// Checks that an endpoint is an absolute `http:` or `https:` URL.
pub fn check_endpoint(url: &str) -> Result<(), UploadError> {
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| UploadError::invalid("endpoint must be an http: or https: URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(UploadError::invalid("endpoint has no host"));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        // Credentials in a URL end up in logs and error texts: pass them as headers.
        return Err(UploadError::invalid(
            "endpoint must not contain a user name or password; send credentials in headers",
        ));
    }
    Ok(())
}

/// Checks a tus metadata key: non-empty, ASCII, no spaces or commas (they delimit pairs).
pub fn check_metadata_key(key: &str) -> Result<(), UploadError> {
    let ok = !key.is_empty() && key.bytes().all(|b| b.is_ascii_graphic() && b != b',');
    if ok {
        Ok(())
    } else {
        Err(UploadError::invalid(format!(
            "metadata key \"{key}\" must be non-empty ASCII without spaces or commas"
        )))
    }
}

/// Puts the caller's metadata over the defaults: a caller's `filename` replaces ours.
pub fn merge_metadata(
    defaults: Vec<(String, String)>,
    callers: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, UploadError> {
    let mut merged = defaults;
    for (key, value) in callers {
        check_metadata_key(&key)?;
        merged.retain(|(k, _)| *k != key);
        merged.push((key, value));
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers() {
        assert_eq!(whole_number("chunkSize", 1.0, 1, 10), Ok(1));
        assert_eq!(whole_number("chunkSize", 10.0, 1, 10), Ok(10));
        assert_eq!(
            whole_number("n", 1.5, 1, 10).unwrap_err().to_string(),
            "n must be a whole number from 1 to 10, got a fractional number"
        );
        assert!(whole_number("n", -3.0, 1, 10)
            .unwrap_err()
            .to_string()
            .ends_with("got -3"));
        for bad in [0.0, -1.0, 1.5, 11.0, f64::NAN, f64::INFINITY] {
            let err = whole_number("chunkSize", bad, 1, 10).unwrap_err();
            assert_eq!(err.code(), "invalid_input");
            assert!(err
                .to_string()
                .starts_with("chunkSize must be a whole number"));
        }
    }

    #[test]
    fn protocol_names() {
        for kind in ProtocolKind::ALL {
            assert_eq!(ProtocolKind::parse(kind.name()), Ok(kind));
        }
        let err = ProtocolKind::parse("ftp").unwrap_err();
        assert_eq!(err.code(), "invalid_input");
        assert!(err.to_string().contains("\"put\""));
    }

    #[test]
    fn endpoints() {
        assert!(check_endpoint("https://up.example.com/files/").is_ok());
        assert!(check_endpoint("HTTP://127.0.0.1:8080/files/").is_ok());
        for bad in [
            "",
            "ftp://x/",
            "files/",
            "https://",
            "https:///x",
            "javascript:alert(1)",
            "https://user:secret@up.example.com/files/",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metadata_keys_and_merge() {
        assert!(check_metadata_key("conversationId").is_ok());
        for bad in ["", "a b", "a,b", "é"] {
            assert!(check_metadata_key(bad).is_err(), "{bad:?}");
        }
        let merged = merge_metadata(
            vec![
                ("filename".into(), "a.txt".into()),
                ("filetype".into(), "text/plain".into()),
            ],
            vec![
                ("filename".into(), "b.txt".into()),
                ("c".into(), "1".into()),
            ],
        )
        .unwrap();
        assert_eq!(
            merged,
            vec![
                ("filetype".to_string(), "text/plain".to_string()),
                ("filename".to_string(), "b.txt".to_string()),
                ("c".to_string(), "1".to_string()),
            ]
        );
        assert!(merge_metadata(vec![], vec![("bad key".into(), "x".into())]).is_err());
    }
}
