//! A single PUT of the whole file, as presigned object-storage URLs (S3, GCS, Azure SAS)
//! expect: one request, the caller's headers exactly as given, a `Content-Length`, no
//! resumption. A retry sends the whole file again.
//!
//! The request asks for byte-level upload progress (the browser sends it with XHR), and
//! the engine hashes the file while it travels. Presigned URLs expire, so when the caller
//! can mint a fresh one (`target()`), an expired URL (403; Garage: 400 `InvalidRequest`) is
//! worth a retry too.

use crate::core::chunker::ChunkPlan;
use crate::core::digest::Sha256Bytes;
use crate::core::error::UploadError;
use crate::core::http::{HttpRequest, HttpResponse, Method};
use crate::core::protocol::{
    answered, is_expired_presigned_url, presigned_status_error, without_query, Protocol, Step,
};
use crate::core::retry::is_transient_status;

/// A single-PUT upload of one file.
#[derive(Debug, Clone)]
pub struct PutUpload {
    url: String,
    size: u64,
    content_type: Option<String>,
    fresh_url_per_attempt: bool,
    done: bool,
    in_flight: Option<HttpRequest>,
}

impl PutUpload {
    /// A PUT of `size` bytes to `url`, with `Content-Type: content_type` when given.
    /// `fresh_url_per_attempt` says the caller supplies a new URL for every attempt, which
    /// makes an expired-URL 403 retryable.
    pub fn new(
        url: String,
        size: u64,
        content_type: Option<String>,
        fresh_url_per_attempt: bool,
    ) -> Self {
        PutUpload {
            url,
            size,
            content_type,
            fresh_url_per_attempt,
            done: false,
            in_flight: None,
        }
    }
}

impl Protocol for PutUpload {
    fn name(&self) -> &'static str {
        "put"
    }

    fn plan(&self) -> ChunkPlan {
        ChunkPlan::new(self.size, self.size.max(1))
    }

    fn next_step(&mut self) -> Step {
        if self.done {
            Step::Done
        } else {
            Step::UploadChunk {
                offset: 0,
                length: self.size,
            }
        }
    }

    fn digest_before_send(&self) -> bool {
        false
    }

    fn chunk_request(&mut self, offset: u64, length: u64, _: Option<&Sha256Bytes>) -> HttpRequest {
        let mut request = HttpRequest::new(Method::Put, &self.url, "upload file")
            .file_range(offset, offset + length)
            .with_upload_progress();
        request.caller_target = self.fresh_url_per_attempt;
        if let Some(content_type) = &self.content_type {
            // A default: a Content-Type among the caller's (signed) headers wins.
            request
                .default_headers
                .push(("Content-Type".into(), content_type.clone()));
        }
        self.in_flight = Some(request.clone());
        request
    }

    fn handle_response(&mut self, response: &HttpResponse) -> Result<(), UploadError> {
        let request = answered(&mut self.in_flight)?;
        match response.status {
            200..=299 => {
                // The file is where `target()` sent it, not at the endpoint given first.
                if let Some(url) = &response.sent_to {
                    self.url.clone_from(url);
                }
                self.done = true;
                Ok(())
            }
            status => {
                // An expired URL is worth a retry when the caller mints a fresh URL per
                // attempt (`target()`); other refusals when they are transient.
                let retryable = if is_expired_presigned_url(response) {
                    self.fresh_url_per_attempt
                } else {
                    is_transient_status(status)
                };
                Err(presigned_status_error(&request, response, retryable))
            }
        }
    }

    fn recover(&mut self) {
        self.in_flight = None;
    }

    fn acknowledged_offset(&self) -> u64 {
        if self.done {
            self.size
        } else {
            0
        }
    }

    fn upload_url(&self) -> Option<&str> {
        // The query of a presigned URL is a credential: never hand it back.
        self.done.then(|| without_query(&self.url))
    }

    fn termination_request(&self) -> Option<HttpRequest> {
        None
    }

    fn verified_checksum(&self) -> Option<&'static str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_put_with_the_content_type_and_upload_progress() {
        let mut put = PutUpload::new(
            "https://b.s3.example/k?X-Sig=secret".into(),
            10,
            Some("image/png".into()),
            false,
        );
        assert_eq!(
            put.next_step(),
            Step::UploadChunk {
                offset: 0,
                length: 10
            }
        );
        let request = put.chunk_request(0, 10, None);
        assert_eq!(
            (request.method, request.url.as_str()),
            (Method::Put, "https://b.s3.example/k?X-Sig=secret")
        );
        assert_eq!(
            request.default_headers,
            vec![("Content-Type".to_string(), "image/png".to_string())]
        );
        assert_eq!(request.header_value("content-type"), None);
        assert!(request.upload_progress && !request.caller_target);
        assert_eq!(
            request.body,
            crate::core::http::Body::FileRange { start: 0, end: 10 }
        );
        put.handle_response(&HttpResponse::new(200, [("ETag", "\"abc\"")]))
            .unwrap();
        assert_eq!(put.acknowledged_offset(), 10);
        assert_eq!(put.next_step(), Step::Done);
        assert_eq!(put.upload_url(), Some("https://b.s3.example/k"));
    }

    #[test]
    fn the_url_is_where_target_sent_the_file() {
        let mut put = PutUpload::new("https://first.example/k?X-Sig=a".into(), 5, None, true);
        let _ = put.chunk_request(0, 5, None);
        let mut response = HttpResponse::new(200, Vec::<(&str, &str)>::new());
        response.sent_to = Some("https://b.s3.example/renewed?X-Sig=b".into());
        put.handle_response(&response).unwrap();
        assert_eq!(put.upload_url(), Some("https://b.s3.example/renewed"));
    }

    #[test]
    fn an_empty_file_is_still_put() {
        let mut put = PutUpload::new("https://x/k".into(), 0, None, false);
        assert_eq!(
            put.next_step(),
            Step::UploadChunk {
                offset: 0,
                length: 0
            }
        );
        assert!(put.chunk_request(0, 0, None).default_headers.is_empty());
        put.handle_response(&HttpResponse::new(204, Vec::<(&str, &str)>::new()))
            .unwrap();
        assert_eq!(put.next_step(), Step::Done);
    }

    #[test]
    fn a_failure_restarts_the_whole_put_and_403_is_retryable_only_with_fresh_urls() {
        for (fresh, retryable) in [(false, false), (true, true)] {
            let mut put = PutUpload::new("https://x/k".into(), 5, None, fresh);
            let _ = put.next_step();
            assert_eq!(put.chunk_request(0, 5, None).caller_target, fresh);
            let err = put
                .handle_response(&HttpResponse::new(403, Vec::<(&str, &str)>::new()))
                .unwrap_err();
            assert_eq!((err.status(), err.is_retryable()), (Some(403), retryable));
            let garage_expired = HttpResponse::new(400, Vec::<(&str, &str)>::new()).with_body(
                "<Error><Code>InvalidRequest</Code><Message>Bad request: Date is too old</Message></Error>",
            );
            put.recover();
            let _ = put.next_step();
            let _ = put.chunk_request(0, 5, None);
            let err = put.handle_response(&garage_expired).unwrap_err();
            assert_eq!((err.status(), err.is_retryable()), (Some(400), retryable));
            assert!(
                err.is_expired_url(),
                "the guest flow asks for a fresh URL on this"
            );
            put.recover();
            assert_eq!(
                put.next_step(),
                Step::UploadChunk {
                    offset: 0,
                    length: 5
                }
            );
        }
        let mut put = PutUpload::new("https://x/k".into(), 5, None, false);
        let _ = put.chunk_request(0, 5, None);
        assert!(put
            .handle_response(&HttpResponse::new(503, Vec::<(&str, &str)>::new()))
            .unwrap_err()
            .is_retryable());
        assert_eq!(put.upload_url(), None);
    }
}
