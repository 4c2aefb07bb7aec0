//! The upload engine: drives a [`Protocol`] to completion over a file, hashing every chunk,
//! retrying what can be retried and reporting progress.
//!
//! The engine is written against three small traits, so it runs unchanged in the browser
//! (`crate::web` implements them with `fetch`, a counting `TransformStream` and gloo
//! timers) and natively in tests (`core::testkit` implements them with an in-memory tus
//! server that injects faults).
//!
//! One chunk at a time: read `offset..offset + length` from the stream into the digest
//! (never buffering the chunk: bytes are hashed as they arrive and dropped), ask the
//! protocol for the request, send it with the file slice as body, learn the new offset.
//! After a retryable failure the current reader is cancelled, the protocol re-learns the
//! server's offset, and the digest rewinds to its checkpoint; the next chunk then reopens the
//! file at the checkpoint and, if the server kept part of the failed chunk, re-hashes that
//! part before going on.

use crate::core::chunker::Rechunker;
use crate::core::digest::{ChunkDigest, FileDigest, Sha256Bytes};
use crate::core::error::UploadError;
use crate::core::http::{HttpRequest, HttpResponse};
use crate::core::progress::{Phase, Progress, ProgressModel, UploadedChunk};
use crate::core::protocol::{Protocol, Step};
use crate::core::retry::{Decision, RetryPolicy};

/// The effects the engine needs from its surroundings.
#[allow(async_fn_in_trait)] // single-threaded wasm: futures need not be Send.
pub trait Environment {
    /// Sends a request and returns the response, whatever its status. Fails with
    /// `Network`, `Timeout`, `HeadersFailed` or `Aborted`.
    async fn send(&mut self, request: &HttpRequest) -> Result<HttpResponse, UploadError>;
    /// Waits, or fails with `Aborted` as soon as the upload is aborted.
    async fn sleep(&mut self, ms: u32) -> Result<(), UploadError>;
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> f64;
    /// Uniform in `[0, 1)`, for jitter.
    fn random(&mut self) -> f64;
    /// Hands a progress snapshot to the caller.
    fn report(&mut self, progress: &Progress);
    /// Sends a request without waiting for it (best-effort clean-up after an abort).
    fn send_detached(&mut self, request: HttpRequest);
}

/// The file being uploaded, readable from any offset.
#[allow(async_fn_in_trait)]
pub trait ByteSource {
    /// The file's size in bytes.
    fn size(&self) -> u64;
    /// Cancels any current reader and starts a new one at `offset`.
    fn open_at(&mut self, offset: u64) -> Result<(), UploadError>;
    /// Cancels the current reader, if any.
    fn close(&mut self);
    /// Overwrites `buf` with the next piece of the file (resizing it to the piece's length);
    /// `Ok(false)` at the end.
    async fn read_piece(&mut self, buf: &mut Vec<u8>) -> Result<bool, UploadError>;
    /// How far the reader got, as a file position, by the count of the counting stream.
    fn position(&self) -> u64;
}

/// What the engine needs to know beyond the protocol.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    /// When and how often to retry.
    pub retry: RetryPolicy,
    /// Minimum time between throttled progress calls.
    pub progress_interval_ms: u32,
}

/// What a finished upload reports.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadSummary {
    /// The upload's URL on the server.
    pub url: String,
    /// The file's size in bytes.
    pub size: u64,
    /// SHA-256 of the whole file.
    pub sha256: Sha256Bytes,
    /// The chunks the server acknowledged, in order; together they cover the file exactly.
    pub chunks: Vec<UploadedChunk>,
    /// Retries over the whole upload.
    pub retries: u32,
    /// From the first request to the last acknowledgement.
    pub duration_ms: f64,
    /// The protocol's name.
    pub protocol: &'static str,
    /// The algorithm the server verified each chunk with, if any.
    pub checksum: Option<&'static str>,
}

/// Uploads `source` with `protocol`. On abort, sends the protocol's termination request
/// (without waiting for it) and fails with `Aborted`.
pub async fn upload<P: Protocol, E: Environment, S: ByteSource>(
    protocol: &mut P,
    env: &mut E,
    source: &mut S,
    config: EngineConfig,
) -> Result<UploadSummary, UploadError> {
    let started_ms = env.now_ms();
    let plan = protocol.plan();
    let mut run = Run {
        progress: ProgressModel::new(
            plan.size,
            plan.chunks_from(0),
            config.progress_interval_ms,
            started_ms,
        ),
        protocol,
        env,
        source,
        retry: config.retry,
        digest: FileDigest::new(),
        rechunker: Rechunker::new(),
        reader_at: None,
        prepared: None,
        chunks: Vec::new(),
        failures_in_a_row: 0,
        retries: 0,
        retries_since_chunk: 0,
    };
    let outcome = run.run(started_ms).await;
    run.source.close();
    if matches!(outcome, Err(UploadError::Aborted)) {
        if let Some(request) = run.protocol.termination_request() {
            run.env.send_detached(request);
        }
    }
    outcome
}

struct Run<'a, P, E, S> {
    protocol: &'a mut P,
    env: &'a mut E,
    source: &'a mut S,
    retry: RetryPolicy,
    progress: ProgressModel,
    digest: FileDigest,
    rechunker: Rechunker,
    /// File position of the next byte the reader (through the re-chunker) yields.
    reader_at: Option<u64>,
    /// The chunk hashed and sent but not yet acknowledged.
    prepared: Option<ChunkDigest>,
    chunks: Vec<UploadedChunk>,
    failures_in_a_row: u32,
    retries: u32,
    retries_since_chunk: u32,
}

impl<P: Protocol, E: Environment, S: ByteSource> Run<'_, P, E, S> {
    async fn run(&mut self, started_ms: f64) -> Result<UploadSummary, UploadError> {
        let size = self.protocol.plan().size;
        if self.source.size() != size {
            return Err(UploadError::protocol(
                "the protocol and the file disagree about the size",
            ));
        }
        let report = self.progress.phase(Phase::Starting, started_ms);
        self.env.report(&report);
        loop {
            let outcome = match self.protocol.next_step() {
                Step::Done => break,
                Step::Send(request) => self.exchange(&request).await,
                Step::UploadChunk { offset, length } => self.upload_chunk(offset, length).await,
            };
            match outcome {
                Ok(()) => self.acknowledge()?,
                Err(error) => self.recover_or_fail(error).await?,
            }
        }
        // The last acknowledgement may have come from a HEAD after a partial chunk.
        self.align_to(size).await?;
        let url = self
            .protocol
            .upload_url()
            .ok_or_else(|| UploadError::protocol("the upload finished without a URL"))?
            .to_owned();
        let now = self.env.now_ms();
        let report = self.progress.done(now);
        self.env.report(&report);
        Ok(UploadSummary {
            url,
            size,
            sha256: self.digest.file_sha256(),
            chunks: std::mem::take(&mut self.chunks),
            retries: self.retries,
            duration_ms: now - started_ms,
            protocol: self.protocol.name(),
            checksum: self.protocol.verified_checksum(),
        })
    }

    async fn exchange(&mut self, request: &HttpRequest) -> Result<(), UploadError> {
        let response = self.env.send(request).await?;
        self.protocol.handle_response(&response)?;
        if self.progress.current().upload_url.is_none() {
            if let Some(url) = self.protocol.upload_url() {
                self.progress.set_upload_url(url);
            }
        }
        Ok(())
    }

    async fn upload_chunk(&mut self, offset: u64, length: u64) -> Result<(), UploadError> {
        self.align_to(offset).await?;
        let plan = self.protocol.plan();
        let index = self.chunks.len() as u64;
        self.progress
            .set_chunk_position(index, index + plan.chunks_from(offset));
        if self.progress.current().phase != Phase::Uploading {
            let report = self.progress.phase(Phase::Uploading, self.env.now_ms());
            self.env.report(&report);
        }
        self.digest.start_chunk();
        self.hash_next(length).await?;
        let chunk = self.digest.finish_chunk();
        let request = self.protocol.chunk_request(&chunk);
        self.prepared = Some(chunk);
        self.exchange(&request).await
    }

    /// Reads the next `length` bytes of the file into the digest, opening a reader at the
    /// digest's position if the current one is elsewhere (or was cancelled).
    async fn hash_next(&mut self, length: u64) -> Result<(), UploadError> {
        let start = self.digest.hashed_offset();
        if self.reader_at != Some(start) {
            self.rechunker.clear();
            self.source.open_at(start)?;
            self.reader_at = Some(start);
        }
        let mut remaining = length;
        while remaining > 0 {
            if self.rechunker.is_empty() {
                let more = match self.source.read_piece(self.rechunker.refill()).await {
                    Ok(more) => more,
                    Err(error) => {
                        // The buffer's contents are undefined now: never yield them.
                        self.rechunker.clear();
                        self.reader_at = None;
                        return Err(error);
                    }
                };
                if !more {
                    self.rechunker.clear();
                    self.reader_at = None;
                    return Err(UploadError::ReadFailed(format!(
                        "the file ended at byte {} but is {} bytes long (was it changed while uploading?)",
                        start + length - remaining,
                        self.source.size()
                    )));
                }
                if let Some(report) = self
                    .progress
                    .read(self.source.position(), self.env.now_ms())
                {
                    self.env.report(&report);
                }
            }
            let bytes = self.rechunker.take(remaining);
            self.digest.update(bytes);
            remaining -= bytes.len() as u64;
        }
        self.reader_at = Some(start + length);
        Ok(())
    }

    /// Makes the digest's checkpoint equal the server's offset `target`, re-reading the part
    /// of a chunk the server kept when a request broke off.
    async fn align_to(&mut self, target: u64) -> Result<(), UploadError> {
        if self.digest.checkpoint_offset() == target && self.digest.hashed_offset() == target {
            return Ok(());
        }
        self.prepared = None;
        let from = self.digest.rewind();
        if target < from {
            return Err(UploadError::protocol(format!(
                "the server's offset went back from {from} to {target}: it lost bytes it had acknowledged"
            )));
        }
        if target > from {
            self.digest.start_chunk();
            self.hash_next(target - from).await?;
            let partial = self.digest.finish_chunk();
            self.digest.commit();
            self.record(partial);
        }
        Ok(())
    }

    /// Looks at the offset the protocol learned from the last response.
    fn acknowledge(&mut self) -> Result<(), UploadError> {
        let acknowledged = self.protocol.acknowledged_offset();
        let checkpoint = self.digest.checkpoint_offset();
        if acknowledged < checkpoint {
            return Err(UploadError::protocol(format!(
                "the server's offset went back from {checkpoint} to {acknowledged}: it lost bytes it had acknowledged"
            )));
        }
        if acknowledged == checkpoint {
            return Ok(());
        }
        self.failures_in_a_row = 0;
        self.progress.set_attempt(1);
        let whole_chunk = self
            .prepared
            .as_ref()
            .is_some_and(|c| c.offset == checkpoint && c.offset + c.length == acknowledged);
        match self.prepared.take().filter(|_| whole_chunk) {
            Some(chunk) => {
                self.digest.commit();
                self.record(chunk);
            }
            None => {
                // Part of a chunk: the digest catches up when the next step aligns to it.
                if let Some(report) =
                    self.progress
                        .acknowledged(acknowledged, None, self.env.now_ms())
                {
                    self.env.report(&report);
                }
            }
        }
        Ok(())
    }

    fn record(&mut self, chunk: ChunkDigest) {
        let uploaded = UploadedChunk {
            index: self.chunks.len() as u64,
            offset: chunk.offset,
            length: chunk.length,
            sha256: chunk.sha256,
            retries: self.retries_since_chunk,
        };
        self.retries_since_chunk = 0;
        self.chunks.push(uploaded.clone());
        let end = chunk.offset + chunk.length;
        if let Some(report) = self
            .progress
            .acknowledged(end, Some(uploaded), self.env.now_ms())
        {
            self.env.report(&report);
        }
    }

    /// Either schedules a retry (wait, cancel the reader, let the protocol re-sync) or ends
    /// the upload with the error.
    async fn recover_or_fail(&mut self, error: UploadError) -> Result<(), UploadError> {
        let decision = self.retry.decide(
            &error,
            self.failures_in_a_row,
            self.env.random(),
            self.env.now_ms(),
        );
        let delay_ms = match decision {
            Decision::RetryAfterMs(ms) => ms,
            Decision::GiveUp if error.is_retryable() => {
                return Err(UploadError::RetriesExhausted {
                    attempts: self.failures_in_a_row,
                    last: Box::new(error),
                })
            }
            Decision::GiveUp => return Err(error),
        };
        self.failures_in_a_row += 1;
        self.retries += 1;
        self.retries_since_chunk += 1;
        self.source.close();
        self.reader_at = None;
        self.rechunker.clear();
        self.protocol.recover();
        let before = self.progress.current().phase;
        let report = self.progress.retrying(
            self.failures_in_a_row + 1,
            self.retries,
            delay_ms,
            self.env.now_ms(),
        );
        self.env.report(&report);
        self.env.sleep(delay_ms).await?;
        let resume = if before == Phase::Starting {
            Phase::Starting
        } else {
            Phase::Uploading
        };
        let report = self.progress.phase(resume, self.env.now_ms());
        self.env.report(&report);
        Ok(())
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
