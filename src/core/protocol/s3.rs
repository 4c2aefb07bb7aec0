//! S3 multipart uploads through presigned part URLs, the pure part: how the file is cut
//! into parts, what the caller's five hooks are asked and what their answers must be, what
//! a part's response means, and what completes the upload. `core::parallel` runs it, with
//! several parts in flight.
//!
//! The browser never holds storage credentials: the widget's backend creates the upload,
//! signs each part's URL and completes it, through hooks named as in Uppy's S3 plugin
//! (`createMultipartUpload`, `signPart`, `listParts`, `completeMultipartUpload`,
//! `abortMultipartUpload`). Each part is hashed before `signPart` is asked for its URL, so
//! the signer can put the part's SHA-256 into the signature; the checksum then travels
//! where the signer put it (the URL's query, or a signed header), and chunkup adds no
//! header of its own. A store refuses a part whose bytes do not match (400 `BadDigest` or
//! `InvalidDigest`): it is sent again.

use crate::core::chunker::ChunkPlan;
use crate::core::digest::Sha256Bytes;
use crate::core::encoding::base64;
use crate::core::error::UploadError;
use crate::core::http::{HttpRequest, HttpResponse, Method};
use crate::core::protocol::{
    is_expired_presigned_url, presigned_status_error, s3_error_code, without_query,
};
use crate::core::retry::is_transient_status;
use crate::core::value::{object, Value};

/// S3's smallest part (every part but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's most parts per upload.
pub const MAX_PARTS: u64 = 10_000;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// The caller's hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `createMultipartUpload({ name, type, size, metadata })` → `{ uploadId, key }`.
    Create,
    /// `signPart({ uploadId, key, partNumber, size, checksumSHA256 })` → `{ url, headers }`.
    SignPart,
    /// `listParts({ uploadId, key })` → `[{ partNumber, size, etag }]`.
    ListParts,
    /// `completeMultipartUpload({ uploadId, key, parts })` → `{ location }`.
    Complete,
    /// `abortMultipartUpload({ uploadId, key })`.
    Abort,
}

impl Hook {
    /// The hook's name in `options.s3`.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Create => "createMultipartUpload",
            Hook::SignPart => "signPart",
            Hook::ListParts => "listParts",
            Hook::Complete => "completeMultipartUpload",
            Hook::Abort => "abortMultipartUpload",
        }
    }

    /// Every hook, in the order the docs list them.
    pub const ALL: [Hook; 5] = [
        Hook::Create,
        Hook::SignPart,
        Hook::ListParts,
        Hook::Complete,
        Hook::Abort,
    ];
}

/// The part size for a file of `size` bytes asked to go in parts of `requested` bytes: at
/// least 5 MiB, and grown (to a whole MiB) so that no file needs more than 10,000 parts.
/// `Err` when the file is beyond what S3 multipart can hold (10,000 parts of 5 GiB).
pub fn part_plan(size: u64, requested: u64) -> Result<ChunkPlan, UploadError> {
    const MIB: u64 = 1024 * 1024;
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    let part_size = requested.max(MIN_PART_SIZE).max(needed);
    if needed > MAX_PART_SIZE {
        return Err(UploadError::invalid(format!(
            "the file is {size} bytes, more than S3 multipart holds (10,000 parts of 5 GiB)"
        )));
    }
    if part_size > MAX_PART_SIZE {
        return Err(UploadError::invalid(
            "options.chunkSize: an S3 part is at most 5 GiB",
        ));
    }
    Ok(ChunkPlan::new(size, part_size))
}

/// How many parts a plan has: an empty file is one empty part (an upload has at least one).
pub fn part_count(plan: &ChunkPlan) -> u32 {
    plan.chunks_from(0).max(1) as u32
}

/// Where part `number` (1-based) lies in the file: `(offset, length)`.
pub fn part_range(plan: &ChunkPlan, number: u32) -> (u64, u64) {
    let offset = u64::from(number - 1) * plan.chunk_size;
    (offset, plan.chunk_len_at(offset))
}

/// The multipart upload the store created (or the one to continue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartId {
    /// S3's `UploadId`.
    pub upload_id: String,
    /// The object key.
    pub key: String,
}

impl MultipartId {
    /// `{ uploadId, key }`, the argument every hook after the first receives.
    pub fn to_value(&self) -> Value {
        object([
            ("uploadId", self.upload_id.as_str().into()),
            ("key", self.key.as_str().into()),
        ])
    }

    /// Reads `createMultipartUpload`'s answer.
    pub fn from_value(answer: &Value) -> Result<MultipartId, UploadError> {
        let text = |name: &str| {
            answer
                .str_at(name)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| hook_answer(Hook::Create, &format!("no {name} string")))
        };
        Ok(MultipartId {
            upload_id: text("uploadId")?,
            key: text("key")?,
        })
    }
}

/// The error for a hook's answer that is not what it must be.
pub fn hook_answer(hook: Hook, what: &str) -> UploadError {
    UploadError::HookFailed {
        message: format!("the s3.{} hook answered with {what}", hook.name()),
        retryable: false,
    }
}

/// `createMultipartUpload`'s argument.
pub fn create_arg(name: &str, kind: &str, size: u64, metadata: &[(String, String)]) -> Value {
    let metadata = Value::Object(
        metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().into()))
            .collect(),
    );
    object([
        ("name", name.into()),
        ("type", kind.into()),
        ("size", size.into()),
        ("metadata", metadata),
    ])
}

/// `signPart`'s argument: the part and the base64 SHA-256 of its bytes.
pub fn sign_arg(id: &MultipartId, number: u32, size: u64, sha256: &Sha256Bytes) -> Value {
    object([
        ("uploadId", id.upload_id.as_str().into()),
        ("key", id.key.as_str().into()),
        ("partNumber", number.into()),
        ("size", size.into()),
        ("checksumSHA256", base64(sha256).into()),
    ])
}

/// A part's signed request, as `signPart` answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPart {
    /// The presigned URL.
    pub url: String,
    /// Headers to send exactly as given.
    pub headers: Vec<(String, String)>,
}

impl SignedPart {
    /// Reads `signPart`'s answer.
    pub fn from_value(answer: &Value) -> Result<SignedPart, UploadError> {
        let url = answer
            .str_at("url")
            .ok_or_else(|| hook_answer(Hook::SignPart, "no url string"))?;
        crate::core::options::check_endpoint(url).map_err(|_| {
            hook_answer(Hook::SignPart, "a url that is not an absolute http(s) URL")
        })?;
        let headers = match answer.get("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(entries)) => entries
                .iter()
                .map(|(name, value)| Some((name.clone(), value.as_str()?.to_owned())))
                .collect::<Option<_>>()
                .ok_or_else(|| hook_answer(Hook::SignPart, "headers that are not all strings"))?,
            Some(_) => {
                return Err(hook_answer(
                    Hook::SignPart,
                    "headers that are not an object",
                ))
            }
        };
        Ok(SignedPart {
            url: url.to_owned(),
            headers,
        })
    }

    /// Whether the store will verify the part's SHA-256: the signer put
    /// `x-amz-checksum-sha256` into the URL's query or the headers.
    pub fn carries_checksum(&self) -> bool {
        let named = |name: &str| name.eq_ignore_ascii_case("x-amz-checksum-sha256");
        let in_query = self
            .url
            .split_once('?')
            .map(|(_, query)| {
                query
                    .split('&')
                    .any(|pair| named(pair.split('=').next().unwrap_or_default()))
            })
            .unwrap_or(false);
        in_query || self.headers.iter().any(|(name, _)| named(name))
    }

    /// The PUT of the file bytes `offset..offset + length` to this URL.
    pub fn request(&self, offset: u64, length: u64) -> HttpRequest {
        let mut request = HttpRequest::new(Method::Put, &self.url, "upload part")
            .file_range(offset, offset + length)
            .with_upload_progress();
        // Exactly the signer's headers: nothing the signature does not cover.
        request.headers = self.headers.clone();
        request
    }
}

/// What the store's answer to a part's PUT means: its ETag, or an error (retryable for
/// transient statuses, a refused digest, and an expired URL, which `signPart` renews).
pub fn part_response(
    request: &HttpRequest,
    response: &HttpResponse,
) -> Result<String, UploadError> {
    if response.is_success() {
        return response
            .header("ETag")
            .filter(|etag| !etag.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                UploadError::protocol(
                    "the store's answer to a part has no ETag header (the bucket's CORS must expose ETag)",
                )
            });
    }
    let code = s3_error_code(&response.body);
    let refused_digest = response.status == 400
        && matches!(
            code,
            Some("BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch")
        );
    // S3 answers a slow body with 400 RequestTimeout: the part is worth sending again.
    let timed_out = response.status == 400 && code == Some("RequestTimeout");
    // An expired URL: `signPart` signs the retry afresh.
    let expired = is_expired_presigned_url(response);
    let retryable = is_transient_status(response.status) || refused_digest || timed_out || expired;
    if refused_digest {
        return Err(UploadError::ChecksumMismatch {
            offset: match request.body {
                crate::core::http::Body::FileRange { start, .. } => start,
                crate::core::http::Body::Empty => 0,
            },
            status: 400,
        });
    }
    Err(presigned_status_error(request, response, retryable))
}

/// One part the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    /// 1-based.
    pub number: u32,
    /// Its size in bytes.
    pub size: u64,
    /// The store's ETag for it.
    pub etag: String,
}

/// Reads `listParts`'s answer.
pub fn stored_parts(answer: &Value) -> Result<Vec<StoredPart>, UploadError> {
    let items = answer
        .as_array()
        .ok_or_else(|| hook_answer(Hook::ListParts, "something that is not an array"))?;
    items
        .iter()
        .map(|part| {
            let number = part
                .f64_at("partNumber")
                .filter(|n| *n >= 1.0 && *n <= MAX_PARTS as f64 && n.fract() == 0.0);
            let size = part
                .f64_at("size")
                .filter(|n| *n >= 0.0 && n.fract() == 0.0);
            match (number, size, part.str_at("etag")) {
                (Some(number), Some(size), Some(etag)) if !etag.is_empty() => Ok(StoredPart {
                    number: number as u32,
                    size: size as u64,
                    etag: etag.to_owned(),
                }),
                _ => Err(hook_answer(
                    Hook::ListParts,
                    "a part without a whole partNumber, size or etag",
                )),
            }
        })
        .collect()
}

/// One finished part, for `completeMultipartUpload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedPart {
    /// 1-based.
    pub number: u32,
    /// The store's ETag.
    pub etag: String,
    /// The part's SHA-256.
    pub sha256: Sha256Bytes,
}

/// `completeMultipartUpload`'s argument: the parts in order.
pub fn complete_arg(id: &MultipartId, parts: &[FinishedPart]) -> Value {
    let parts = parts
        .iter()
        .map(|p| {
            object([
                ("partNumber", p.number.into()),
                ("etag", p.etag.as_str().into()),
                ("checksumSHA256", base64(&p.sha256).into()),
            ])
        })
        .collect();
    object([
        ("uploadId", id.upload_id.as_str().into()),
        ("key", id.key.as_str().into()),
        ("parts", Value::Array(parts)),
    ])
}

/// The object's URL from `completeMultipartUpload`'s answer, without its query.
pub fn location(answer: &Value) -> Result<String, UploadError> {
    let url = answer
        .str_at("location")
        .filter(|l| !l.is_empty())
        .ok_or_else(|| hook_answer(Hook::Complete, "no location string"))?;
    Ok(without_query(url).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::value::testing::parse;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn parts_are_at_least_5_mib_and_never_more_than_10000() {
        assert_eq!(part_plan(100, MIB).unwrap().chunk_size, 5 * MIB);
        assert_eq!(part_plan(100 * MIB, 8 * MIB).unwrap().chunk_size, 8 * MIB);
        // 100 GiB in 8 MiB parts would be 12,800: grown to 11 MiB.
        let big = part_plan(100 * 1024 * MIB, 8 * MIB).unwrap();
        assert_eq!(big.chunk_size, 11 * MIB);
        assert!(big.chunks_from(0) <= MAX_PARTS);
        let too_big = part_plan(60_000 * 1024 * MIB, 8 * MIB).unwrap_err();
        assert_eq!(too_big.code(), "invalid_input");
        assert!(too_big.to_string().contains("more than S3 multipart holds"));
        // A small file with a part size beyond S3's: the option is named, not the file.
        let part_too_big = part_plan(1000, 6 * 1024 * MIB).unwrap_err();
        assert_eq!(
            part_too_big.to_string(),
            "options.chunkSize: an S3 part is at most 5 GiB"
        );
        let plan = part_plan(10 * 5 * MIB + 17, 5 * MIB).unwrap();
        assert_eq!(part_count(&plan), 11);
        assert_eq!(part_range(&plan, 1), (0, 5 * MIB));
        assert_eq!(part_range(&plan, 11), (50 * MIB, 17));
        let empty = part_plan(0, 5 * MIB).unwrap();
        assert_eq!((part_count(&empty), part_range(&empty, 1)), (1, (0, 0)));
    }

    #[test]
    fn hook_arguments_and_answers() {
        let id =
            MultipartId::from_value(&parse(r#"{"uploadId":"u-1","key":"k/1"}"#).unwrap()).unwrap();
        assert_eq!(
            id.to_value(),
            parse(r#"{"uploadId":"u-1","key":"k/1"}"#).unwrap()
        );
        for bad in [
            r#"{"uploadId":"u"}"#,
            r#"{"uploadId":"","key":"k"}"#,
            "null",
            "[]",
        ] {
            let err = MultipartId::from_value(&parse(bad).unwrap()).unwrap_err();
            assert_eq!(err.code(), "hook_failed", "{bad}");
            assert!(err.to_string().contains("createMultipartUpload"));
        }
        let sign = sign_arg(&id, 3, 10, &crate::core::digest::sha256(b"abc"));
        assert_eq!(
            sign.str_at("checksumSHA256"),
            Some("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=")
        );
        assert_eq!(sign.f64_at("partNumber"), Some(3.0));
        let create = create_arg("a.bin", "video/mp4", 9, &[("owner".into(), "x".into())]);
        assert_eq!(
            create,
            parse(r#"{"name":"a.bin","type":"video/mp4","size":9,"metadata":{"owner":"x"}}"#)
                .unwrap()
        );
        let parts = stored_parts(&parse(r#"[{"partNumber":2,"size":5,"etag":"\"e2\""}]"#).unwrap())
            .unwrap();
        assert_eq!(
            parts,
            [StoredPart {
                number: 2,
                size: 5,
                etag: "\"e2\"".into()
            }]
        );
        for bad in [
            "{}",
            r#"[{"partNumber":0,"size":5,"etag":"e"}]"#,
            r#"[{"partNumber":1.5,"size":5,"etag":"e"}]"#,
            r#"[{"partNumber":1,"size":5}]"#,
        ] {
            assert_eq!(
                stored_parts(&parse(bad).unwrap()).unwrap_err().code(),
                "hook_failed",
                "{bad}"
            );
        }
        let complete = complete_arg(
            &id,
            &[FinishedPart {
                number: 1,
                etag: "\"e\"".into(),
                sha256: [0; 32],
            }],
        );
        assert_eq!(
            complete
                .get("parts")
                .and_then(Value::as_array)
                .map(<[Value]>::len),
            Some(1)
        );
        assert_eq!(
            location(&parse(r#"{"location":"https://s/b/k?X-Amz-Signature=s"}"#).unwrap()).unwrap(),
            "https://s/b/k"
        );
        assert_eq!(location(&Value::Null).unwrap_err().code(), "hook_failed");
    }

    #[test]
    fn the_checksum_travels_where_the_signer_put_it() {
        let signed = |json: &str| SignedPart::from_value(&parse(json).unwrap()).unwrap();
        let in_query = signed(
            r#"{"url":"https://s/b/k?partNumber=1&X-Amz-Checksum-Sha256=abc&X-Amz-Signature=s"}"#,
        );
        assert!(in_query.carries_checksum());
        assert!(
            in_query.request(0, 5).headers.is_empty(),
            "no header added beside a query checksum"
        );
        let in_header = signed(
            r#"{"url":"https://s/b/k?partNumber=1","headers":{"x-amz-checksum-sha256":"abc"}}"#,
        );
        assert!(in_header.carries_checksum());
        assert_eq!(
            in_header.request(0, 5).headers,
            [("x-amz-checksum-sha256".to_owned(), "abc".to_owned())]
        );
        assert!(!signed(r#"{"url":"https://s/b/k?partNumber=1"}"#).carries_checksum());
        let request = in_query.request(10, 5);
        assert_eq!(
            (request.method, request.upload_progress),
            (Method::Put, true)
        );
        assert_eq!(
            request.body,
            crate::core::http::Body::FileRange { start: 10, end: 15 }
        );
        for bad in [
            r#"{}"#,
            r#"{"url":"/relative"}"#,
            r#"{"url":"https://s/k","headers":{"a":1}}"#,
            r#"{"url":"https://s/k","headers":"x"}"#,
        ] {
            assert_eq!(
                SignedPart::from_value(&parse(bad).unwrap())
                    .unwrap_err()
                    .code(),
                "hook_failed",
                "{bad}"
            );
        }
    }

    #[test]
    fn part_answers() {
        let request =
            HttpRequest::new(Method::Put, "https://s/b/k", "upload part").file_range(5, 10);
        let ok = HttpResponse::new(200, [("ETag", "\"abc\"")]);
        assert_eq!(part_response(&request, &ok).unwrap(), "\"abc\"");
        let hidden = HttpResponse::new(200, Vec::<(&str, &str)>::new());
        assert!(part_response(&request, &hidden)
            .unwrap_err()
            .to_string()
            .contains("CORS must expose ETag"));
        let digest = HttpResponse::new(400, Vec::<(&str, &str)>::new())
            .with_body("<Error><Code>InvalidDigest</Code><Message>no</Message></Error>");
        let err = part_response(&request, &digest).unwrap_err();
        assert_eq!(
            (err.code(), err.is_retryable()),
            ("checksum_mismatch", true)
        );
        let bad = HttpResponse::new(400, Vec::<(&str, &str)>::new())
            .with_body("<Error><Code>InvalidArgument</Code></Error>");
        assert!(!part_response(&request, &bad).unwrap_err().is_retryable());
        for status in [403, 429, 500, 503] {
            let err = part_response(
                &request,
                &HttpResponse::new(status, Vec::<(&str, &str)>::new()),
            )
            .unwrap_err();
            assert!(err.is_retryable(), "{status}");
        }
        assert!(!part_response(
            &request,
            &HttpResponse::new(404, Vec::<(&str, &str)>::new())
        )
        .unwrap_err()
        .is_retryable());
        // Garage's expired URL, and an InvalidRequest that is not about time.
        let garage_expired = HttpResponse::new(400, Vec::<(&str, &str)>::new())
            .with_body("<Error><Code>InvalidRequest</Code><Message>Bad request: Date is too old</Message></Error>");
        let err = part_response(&request, &garage_expired).unwrap_err();
        assert!(err.is_retryable() && err.is_expired_url());
        let other = HttpResponse::new(400, Vec::<(&str, &str)>::new())
            .with_body("<Error><Code>InvalidRequest</Code><Message>Header and query both carry a checksum</Message></Error>");
        assert!(!part_response(&request, &other).unwrap_err().is_retryable());
    }
}
