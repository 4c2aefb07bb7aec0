//! The upload engine: drives a [`Protocol`] to completion over a file, hashing every chunk,
//! retrying what can be retried and reporting progress.
//!
//! The engine is written against three small traits, so it runs unchanged in the browser
//! (`crate::web` implements them with `fetch`, a counting `TransformStream` and gloo
//! timers) and natively in tests (`core::testkit` implements them with an in-memory tus
//! server that injects faults).
//!
//! Chunk by chunk: read `offset..offset + length` from the stream into the digest (never
//! buffering the chunk: bytes are hashed as they arrive and dropped), ask the protocol for
//! the request, send it with the file slice as body, learn the new offset. While a chunk
//! travels, the next one is read and hashed, so the CPU and the network work at once.
//! After a retryable failure the current reader is cancelled, the protocol re-learns the
//! server's offset, and the digest rewinds to its checkpoint; the next chunk then reopens the
//! file at the checkpoint and, if the server kept part of the failed chunk, re-hashes that
//! part before going on.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::Poll;

use crate::core::chunker::Rechunker;
use crate::core::digest::{ChunkDigest, FileDigest, Md5Bytes, Sha256Bytes};
use crate::core::error::UploadError;
use crate::core::http::{HttpRequest, HttpResponse, Method};
use crate::core::progress::{Phase, Progress, ProgressModel, UploadedChunk};
use crate::core::protocol::s3::Hook;
use crate::core::protocol::{Protocol, Step};
use crate::core::resume::ResumeTarget;
use crate::core::retry::RetryPolicy;
use crate::core::value::Value;

/// The effects the engine needs from its surroundings. Methods take `&self` because a
/// request and the hashing of a chunk run at the same time.
#[allow(async_fn_in_trait)] // single-threaded wasm: futures need not be Send.
pub trait Environment {
    /// Sends a request and returns the response, whatever its status. Fails with
    /// `Network`, `Timeout`, `HeadersFailed` or `Aborted`. For a request that asks for
    /// upload progress, calls `on_sent` with the body bytes sent so far, as they go.
    async fn send(
        &self,
        request: &HttpRequest,
        on_sent: &dyn Fn(u64),
    ) -> Result<HttpResponse, UploadError>;
    /// Waits, or fails with `Aborted` as soon as the upload is aborted.
    async fn sleep(&self, ms: u32) -> Result<(), UploadError>;
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> f64;
    /// Uniform in `[0, 1)`, for jitter.
    fn random(&self) -> f64;
    /// Hands a progress snapshot to the caller.
    fn report(&self, progress: &Progress);
    /// Sends a request without waiting for it (best-effort clean-up after an abort).
    fn send_detached(&self, request: HttpRequest);
    /// Called between slices of hashing (at most [`HASH_SLICE`] bytes apart) and before
    /// each protocol step or part: a chance to let other work run. On a page's main thread
    /// the browser environment yields to the event loop here once it has held the thread
    /// for a few milliseconds.
    async fn pause(&self) {}
    /// The server refused the credentials with `status`: the next `headers()` call should
    /// fetch fresh ones. False when they cannot be refreshed (fixed headers).
    fn refresh_credentials(&self, _status: u16) -> bool {
        false
    }
    /// Whether the browser says it is offline.
    fn offline(&self) -> bool {
        false
    }
    /// Waits until the browser is online again; `Aborted` as soon as the upload is aborted.
    async fn wait_online(&self) -> Result<(), UploadError> {
        Ok(())
    }
    /// The upload can now be continued after a reload from `target` (store it).
    fn resumable_at(&self, _target: ResumeTarget) {}
    /// Calls one of the caller's hooks (`options.s3`) with `arg`; its answer, or
    /// `HookFailed` (retryable when it threw, rejected or did not answer in time) or
    /// `Aborted`.
    async fn call_hook(&self, hook: Hook, _arg: &Value) -> Result<Value, UploadError> {
        Err(UploadError::HookFailed {
            message: format!("the s3.{} hook is not available here", hook.name()),
            retryable: false,
        })
    }
    /// Calls a hook without waiting for it (best-effort clean-up after an abort).
    fn call_hook_detached(&self, _hook: Hook, _arg: Value) {}
}

/// The most bytes hashed between two [`Environment::pause`] calls: about a millisecond of
/// SHA-256 in wasm, so a paced main thread is never held long by one slice.
pub const HASH_SLICE: u64 = 256 * 1024;

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
    /// Also compute the MD5 of the whole file (for APIs that ask for it).
    pub md5: bool,
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
    /// MD5 of the whole file, when asked for.
    pub md5: Option<Md5Bytes>,
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
    /// How many bytes the server already held when this upload continued an earlier one
    /// (0 for a fresh upload): they were re-read and hashed here, not sent again.
    pub resumed_from: u64,
}

/// Uploads `source` with `protocol`. On abort, sends the protocol's termination request
/// (without waiting for it) and fails with `Aborted`.
pub async fn upload<P: Protocol + ?Sized, E: Environment, S: ByteSource>(
    protocol: &mut P,
    env: &E,
    source: &mut S,
    config: EngineConfig,
) -> Result<UploadSummary, UploadError> {
    let started_ms = env.now_ms();
    let plan = protocol.plan();
    let mut run = Run {
        reporter: Reporter::new(
            env,
            ProgressModel::new(
                plan.size,
                plan.chunks_from(0),
                config.progress_interval_ms,
                started_ms,
            ),
        ),
        protocol,
        env,
        reader: Reader::new(source, config.md5),
        retry: config.retry,
        prepared: None,
        ahead: None,
        chunks: Vec::new(),
        failures_in_a_row: 0,
        retries: 0,
        retries_since_chunk: 0,
        caught_up: false,
        credentials_refreshed: None,
        last_sent: None,
        resume_url_noted: false,
    };
    let outcome = run.run(started_ms).await;
    run.reader.close();
    if matches!(outcome, Err(UploadError::Aborted)) {
        if let Some(request) = run.protocol.termination_request() {
            run.env.send_detached(request);
        }
    }
    outcome
}

/// The progress model and where its snapshots go. The model sits in a `RefCell` because
/// a request (reporting bytes sent) and the hashing of a chunk (reporting bytes read) run
/// at the same time; it is only ever borrowed for one update, never across an await.
pub(crate) struct Reporter<'a, E> {
    pub(crate) model: RefCell<ProgressModel>,
    pub(crate) env: &'a E,
}

impl<'a, E: Environment> Reporter<'a, E> {
    /// Reports `model`'s snapshots to `env`.
    pub(crate) fn new(env: &'a E, model: ProgressModel) -> Self {
        Reporter {
            model: RefCell::new(model),
            env,
        }
    }

    /// Applies `change` at the current time and reports the snapshot it returns, if any.
    pub(crate) fn emit(&self, change: impl FnOnce(&mut ProgressModel, f64) -> Option<Progress>) {
        let report = change(&mut self.model.borrow_mut(), self.env.now_ms());
        if let Some(report) = report {
            self.env.report(&report);
        }
    }

    /// Reads or adjusts the model without reporting.
    pub(crate) fn with<T>(&self, look: impl FnOnce(&mut ProgressModel) -> T) -> T {
        look(&mut self.model.borrow_mut())
    }
}

/// The file's reader, its re-chunker and the digest of what was read, kept together
/// because they move together: the digest covers exactly the bytes the reader yielded.
pub(crate) struct Reader<'a, S> {
    pub(crate) source: &'a mut S,
    pub(crate) digest: FileDigest,
    pub(crate) rechunker: Rechunker,
    /// File position of the next byte the reader (through the re-chunker) yields.
    pub(crate) at: Option<u64>,
}

impl<'a, S: ByteSource> Reader<'a, S> {
    /// A reader of `source` from its start, digesting SHA-256 (and MD5 with `md5`).
    pub(crate) fn new(source: &'a mut S, md5: bool) -> Self {
        Reader {
            source,
            digest: FileDigest::new(md5),
            rechunker: Rechunker::new(),
            at: None,
        }
    }

    pub(crate) fn close(&mut self) {
        self.source.close();
        self.rechunker.clear();
        self.at = None;
    }

    /// Reads the next `length` bytes as one chunk and returns its digest.
    pub(crate) async fn read_chunk<E: Environment>(
        &mut self,
        length: u64,
        reporter: &Reporter<'_, E>,
    ) -> Result<ChunkDigest, UploadError> {
        self.digest.start_chunk();
        self.hash_next(length, reporter).await?;
        Ok(self.digest.finish_chunk())
    }

    /// Reads the next `length` bytes of the file into the digest, opening a reader at the
    /// digest's position if the current one is elsewhere (or was cancelled).
    async fn hash_next<E: Environment>(
        &mut self,
        length: u64,
        reporter: &Reporter<'_, E>,
    ) -> Result<(), UploadError> {
        let start = self.digest.hashed_offset();
        if self.at != Some(start) {
            self.rechunker.clear();
            self.source.open_at(start)?;
            self.at = Some(start);
        }
        let mut remaining = length;
        while remaining > 0 {
            if self.rechunker.is_empty() {
                let more = match self.source.read_piece(self.rechunker.refill()).await {
                    Ok(more) => more,
                    Err(error) => {
                        // The buffer's contents are undefined now: never yield them.
                        self.close();
                        return Err(error);
                    }
                };
                if !more {
                    self.close();
                    return Err(UploadError::ReadFailed(format!(
                        "the file ended at byte {} but is {} bytes long (was it changed while uploading?)",
                        start + length - remaining,
                        self.source.size()
                    )));
                }
                let position = self.source.position();
                reporter.emit(|model, now| model.read(position, now));
            }
            let bytes = self.rechunker.take(remaining.min(HASH_SLICE));
            self.digest.update(bytes);
            remaining -= bytes.len() as u64;
            reporter.env.pause().await;
        }
        self.at = Some(start + length);
        Ok(())
    }
}

struct Run<'a, P: ?Sized, E, S> {
    protocol: &'a mut P,
    env: &'a E,
    reader: Reader<'a, S>,
    retry: RetryPolicy,
    reporter: Reporter<'a, E>,
    /// The chunk sent but not yet acknowledged.
    prepared: Option<ChunkDigest>,
    /// The chunk after it, hashed while it was being sent.
    ahead: Option<ChunkDigest>,
    chunks: Vec<UploadedChunk>,
    failures_in_a_row: u32,
    retries: u32,
    retries_since_chunk: u32,
    /// A resumed upload's part already on the server has been re-read and hashed.
    caught_up: bool,
    /// Fresh credentials were asked for after the request `(method, purpose)` was refused:
    /// another refusal before that request (or progress) gets through ends the upload.
    credentials_refreshed: Option<(Method, &'static str)>,
    /// The last request sent, as `(method, purpose)`.
    last_sent: Option<(Method, &'static str)>,
    resume_url_noted: bool,
}

impl<P: Protocol + ?Sized, E: Environment, S: ByteSource> Run<'_, P, E, S> {
    async fn run(&mut self, started_ms: f64) -> Result<UploadSummary, UploadError> {
        let size = self.protocol.plan().size;
        if self.reader.source.size() != size {
            return Err(UploadError::protocol(
                "the protocol and the file disagree about the size",
            ));
        }
        self.reporter
            .emit(|model, _| Some(model.phase(Phase::Starting, started_ms)));
        loop {
            // Each step (a request and its bookkeeping) is a chance to yield, as between
            // slices of hashing: on a first call the browser also compiles the code it runs.
            self.env.pause().await;
            if let Some(held) = self.protocol.resumed_from().filter(|_| !self.caught_up) {
                self.caught_up = true;
                self.catch_up(held).await?;
            }
            let outcome = match self.protocol.next_step() {
                Step::Done => break,
                Step::Send(request) => self.exchange(&request).await,
                Step::UploadChunk { offset, length } => {
                    self.upload_chunk(offset, length).await.and_then(|()| {
                        // A 2xx that took none of the bytes would otherwise loop for ever.
                        let taken = self.protocol.acknowledged_offset() > offset;
                        (taken || length == 0).then_some(()).ok_or_else(|| {
                            UploadError::protocol(format!(
                                "the server answered success but kept none of the {length} bytes sent at offset {offset}"
                            ))
                        })
                    })
                }
            };
            match outcome {
                Ok(()) => {
                    if self.credentials_refreshed == self.last_sent {
                        self.credentials_refreshed = None;
                    }
                    self.note_resume_url();
                    self.acknowledge()?;
                }
                Err(error) => self.recover_or_fail(error).await?,
            }
        }
        // The last acknowledgement may have come from a status query after a partial chunk.
        self.align_to(size).await?;
        let url = self
            .protocol
            .upload_url()
            .ok_or_else(|| UploadError::protocol("the upload finished without a URL"))?
            .to_owned();
        let now = self.env.now_ms();
        self.reporter.emit(|model, now| Some(model.done(now)));
        Ok(UploadSummary {
            url,
            size,
            sha256: self.reader.digest.file_sha256(),
            md5: self.reader.digest.file_md5(),
            chunks: std::mem::take(&mut self.chunks),
            retries: self.retries,
            duration_ms: now - started_ms,
            protocol: self.protocol.name(),
            checksum: self.protocol.verified_checksum(),
            resumed_from: self.protocol.resumed_from().unwrap_or(0),
        })
    }

    /// Tells the environment, once, where this upload can be continued from after a reload.
    fn note_resume_url(&mut self) {
        if self.resume_url_noted {
            return;
        }
        if let Some(url) = self.protocol.resume_url() {
            self.resume_url_noted = true;
            self.env.resumable_at(ResumeTarget::Url(url.to_owned()));
        }
    }

    /// The server already holds the first `held` bytes (a resumed upload): re-read and
    /// hash them, in chunks of the plan's size, without sending them, so that the chunk
    /// digests and the file's SHA-256 are exact.
    async fn catch_up(&mut self, held: u64) -> Result<(), UploadError> {
        if held == 0 {
            return Ok(());
        }
        self.reporter.emit(|model, now| {
            model.resumed(held, now);
            Some(model.phase(Phase::Resuming, now))
        });
        let plan = self.protocol.plan();
        while self.reader.digest.checkpoint_offset() < held {
            let at = self.reader.digest.checkpoint_offset();
            let length = plan.chunk_len_at(at).min(held - at);
            let chunk = self.reader.read_chunk(length, &self.reporter).await?;
            self.reader.digest.commit();
            self.record(chunk);
        }
        Ok(())
    }

    async fn exchange(&mut self, request: &HttpRequest) -> Result<(), UploadError> {
        self.last_sent = Some((request.method, request.purpose));
        let response = self.env.send(request, &|_| {}).await?;
        self.handle(&response)
    }

    fn handle(&mut self, response: &HttpResponse) -> Result<(), UploadError> {
        self.protocol.handle_response(response)?;
        self.note_upload_url();
        Ok(())
    }

    /// Puts the upload's URL in the progress once the protocol knows it.
    fn note_upload_url(&self) {
        if let Some(url) = self.protocol.upload_url() {
            self.reporter.with(|model| {
                if model.current().upload_url.is_none() {
                    model.set_upload_url(url);
                }
            });
        }
    }

    /// Sends the chunk `offset..offset + length`. When the protocol needs the chunk's digest
    /// in the request (a checksum header), the chunk is hashed first and the next chunk is
    /// hashed while this one travels; otherwise the chunk is hashed while it travels.
    async fn upload_chunk(&mut self, offset: u64, length: u64) -> Result<(), UploadError> {
        let plan = self.protocol.plan();
        if !self.protocol.digest_before_send() {
            self.align_to(offset).await?;
            self.announce_chunk(offset);
            let request = self.protocol.chunk_request(offset, length, None);
            self.last_sent = Some((request.method, request.purpose));
            let reporter = &self.reporter;
            let on_sent = |sent: u64| reporter.emit(|model, now| model.sent(offset + sent, now));
            let send = self.env.send(&request, &on_sent);
            let hash = self.reader.read_chunk(length, &self.reporter);
            let protocol = &mut *self.protocol;
            // The answer is judged as soon as it arrives: a refusal does not wait for the
            // rest of the file to be hashed.
            let judge = |response: HttpResponse| protocol.handle_response(&response);
            let chunk = judge_then_finish(send, judge, hash).await?;
            self.prepared = Some(chunk);
            self.note_upload_url();
            return Ok(());
        }
        let hashed_ahead = self.ahead.take().filter(|c| {
            c.offset == offset
                && c.length == length
                && self.reader.digest.checkpoint_offset() == offset
        });
        let chunk = match hashed_ahead {
            Some(chunk) => chunk,
            None => {
                self.align_to(offset).await?;
                self.reader.read_chunk(length, &self.reporter).await?
            }
        };
        self.announce_chunk(offset);
        let request = self
            .protocol
            .chunk_request(offset, length, Some(&chunk.sha256));
        self.last_sent = Some((request.method, request.purpose));
        self.prepared = Some(chunk);
        let reporter = &self.reporter;
        let on_sent = |sent: u64| reporter.emit(|model, now| model.sent(offset + sent, now));
        let next_length = plan.chunk_len_at(offset + length);
        let response = if next_length == 0 {
            self.env.send(&request, &on_sent).await?
        } else {
            let send = self.env.send(&request, &on_sent);
            let hash_ahead = self.reader.read_chunk(next_length, &self.reporter);
            let (sent, ahead) = send_while(send, hash_ahead).await;
            let response = sent?;
            match ahead {
                Some(Ok(ahead)) => self.ahead = Some(ahead),
                // The file failed to read ahead: still take the server's answer to this chunk
                // (so its acknowledgement is reported), then fail with the read error.
                Some(Err(error)) => {
                    self.handle(&response)?;
                    self.acknowledge()?;
                    return Err(error);
                }
                None => {}
            }
            response
        };
        self.handle(&response)
    }

    /// Tells progress which chunk is being worked on, once any partial chunk before it has
    /// been recorded.
    fn announce_chunk(&self, offset: u64) {
        let index = self.chunks.len() as u64;
        let count = index + self.protocol.plan().chunks_from(offset);
        self.reporter.emit(|model, now| {
            model.set_chunk_position(index, count);
            (model.current().phase != Phase::Uploading).then(|| model.phase(Phase::Uploading, now))
        });
    }

    /// Makes the digest's checkpoint equal the server's offset `target`, re-reading the part
    /// of a chunk the server kept when a request broke off.
    async fn align_to(&mut self, target: u64) -> Result<(), UploadError> {
        let digest = &mut self.reader.digest;
        if digest.checkpoint_offset() == target && digest.hashed_offset() == target {
            return Ok(());
        }
        self.prepared = None;
        self.ahead = None;
        let from = digest.rewind();
        if target < from {
            return Err(offset_went_back(from, target));
        }
        if target > from {
            let partial = self
                .reader
                .read_chunk(target - from, &self.reporter)
                .await?;
            self.reader.digest.commit();
            self.record(partial);
        }
        Ok(())
    }

    /// Looks at the offset the protocol learned from the last response.
    fn acknowledge(&mut self) -> Result<(), UploadError> {
        let acknowledged = self.protocol.acknowledged_offset();
        let checkpoint = self.reader.digest.checkpoint_offset();
        if acknowledged < checkpoint {
            return Err(offset_went_back(checkpoint, acknowledged));
        }
        if acknowledged == checkpoint {
            return Ok(());
        }
        self.failures_in_a_row = 0;
        self.credentials_refreshed = None;
        self.reporter.with(|model| model.set_attempt(1));
        let whole_chunk = self
            .prepared
            .take()
            .filter(|c| c.offset == checkpoint && c.offset + c.length == acknowledged);
        // Bytes the server held from before this session (its answer to a resumed upload's
        // first request): uploaded, but no part of this session's speed.
        let held_from_before = !self.caught_up
            && self
                .protocol
                .resumed_from()
                .is_some_and(|held| acknowledged <= held);
        match whole_chunk {
            Some(chunk) if self.reader.digest.commit_to(acknowledged) => self.record(chunk),
            _ if held_from_before => self
                .reporter
                .with(|model| model.resumed(acknowledged, self.env.now_ms())),
            // Part of a chunk: the digest catches up when the next step aligns to it.
            _ => self
                .reporter
                .emit(|model, now| model.acknowledged(acknowledged, None, now)),
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
        self.reporter
            .emit(|model, now| model.acknowledged(end, Some(uploaded), now));
    }

    /// Either schedules a retry (wait, cancel the reader, let the protocol re-sync) or ends
    /// the upload with the error.
    async fn recover_or_fail(&mut self, error: UploadError) -> Result<(), UploadError> {
        // Refused credentials: ask headers() for fresh ones and try again at once; a second
        // refusal in a row means fresh ones do not help either.
        if let Some(status) = auth_failure(&error, &*self.protocol) {
            if self.credentials_refreshed.is_some() || !self.env.refresh_credentials(status) {
                // Refused for good while the upload to continue was looked up (another
                // user's upload): a new one, if the protocol can; it gets a refresh of its own.
                if self.protocol.abandon_resume() {
                    self.credentials_refreshed = None;
                    return Ok(());
                }
                return Err(UploadError::Unauthorized { status });
            }
            self.credentials_refreshed = self.last_sent;
            self.restart_exchange();
            return Ok(());
        }
        // Offline: no retry is spent; wait for the browser to come back.
        if matches!(
            error,
            UploadError::Network { .. } | UploadError::Timeout { .. }
        ) && self.env.offline()
        {
            let before = self.reporter.with(|model| model.current().phase);
            self.reporter
                .emit(|model, now| Some(model.phase(Phase::Offline, now)));
            self.restart_exchange();
            self.env.wait_online().await?;
            self.reporter
                .emit(|model, now| Some(model.phase(before, now)));
            return Ok(());
        }
        let delay_ms = self.retry.delay_or_fail(
            error,
            self.failures_in_a_row,
            self.env.random(),
            self.env.now_ms(),
        )?;
        self.failures_in_a_row += 1;
        self.retries += 1;
        self.retries_since_chunk += 1;
        self.restart_exchange();
        let (attempt, retries) = (self.failures_in_a_row + 1, self.retries);
        let before = self.reporter.with(|model| model.current().phase);
        self.reporter
            .emit(|model, now| Some(model.retrying(attempt, retries, delay_ms, now)));
        self.env.sleep(delay_ms).await?;
        let resume = if before == Phase::Starting {
            Phase::Starting
        } else {
            Phase::Uploading
        };
        self.reporter
            .emit(|model, now| Some(model.phase(resume, now)));
        Ok(())
    }
}

impl<P: Protocol + ?Sized, E: Environment, S: ByteSource> Run<'_, P, E, S> {
    /// Forgets the request that failed: the reader stops, what was hashed ahead is dropped,
    /// and the protocol re-learns the server's state before going on.
    fn restart_exchange(&mut self) {
        self.reader.close();
        self.ahead = None;
        self.protocol.recover();
    }
}

/// The status of a refusal that means the credentials expired, if `error` is one.
fn auth_failure<P: Protocol + ?Sized>(error: &UploadError, protocol: &P) -> Option<u16> {
    match error {
        UploadError::HttpStatus {
            status,
            retryable: false,
            ..
        } if protocol.is_auth_failure(*status) => Some(*status),
        _ => None,
    }
}

fn offset_went_back(from: u64, to: u64) -> UploadError {
    UploadError::protocol(format!(
        "the server's offset went back from {from} to {to}: it lost bytes it had acknowledged"
    ))
}

/// Runs a request and some work at once. If the request fails, returns at once (dropping,
/// and so cancelling, the work); otherwise waits for both. The work's result is `None` only
/// when the request failed first.
async fn send_while<A, B, T, U>(
    a: A,
    b: B,
) -> (Result<T, UploadError>, Option<Result<U, UploadError>>)
where
    A: Future<Output = Result<T, UploadError>>,
    B: Future<Output = Result<U, UploadError>>,
{
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut out_a, mut out_b) = (None, None);
    poll_fn(|cx| {
        if out_a.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                out_a = Some(v);
            }
        }
        if let Some(failed) = out_a.take_if(|sent| sent.is_err()) {
            return Poll::Ready((failed, None));
        }
        if out_b.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                out_b = Some(v);
            }
        }
        match (out_a.take(), out_b.take()) {
            (Some(x), Some(y)) => Poll::Ready((x, Some(y))),
            (x, y) => {
                out_a = x;
                out_b = y;
                Poll::Pending
            }
        }
    })
    .await
}

/// Runs a request and the hashing of its body at once. The answer is judged the moment it
/// arrives; if the request or the judgement fails, that error is returned at once (the
/// hashing is dropped, which cancels it). Otherwise the hashing is awaited and returned.
async fn judge_then_finish<A, J, B, U>(send: A, mut judge: J, hash: B) -> Result<U, UploadError>
where
    A: Future<Output = Result<HttpResponse, UploadError>>,
    J: FnMut(HttpResponse) -> Result<(), UploadError>,
    B: Future<Output = Result<U, UploadError>>,
{
    let (mut send, mut hash) = (pin!(send), pin!(hash));
    let (mut judged, mut hashed) = (false, None);
    poll_fn(|cx| {
        if !judged {
            if let Poll::Ready(response) = send.as_mut().poll(cx) {
                judge(response?)?;
                judged = true;
            }
        }
        if hashed.is_none() {
            if let Poll::Ready(chunk) = hash.as_mut().poll(cx) {
                hashed = Some(chunk?);
            }
        }
        match (judged, hashed.take()) {
            (true, Some(chunk)) => Poll::Ready(Ok(chunk)),
            (_, chunk) => {
                hashed = chunk;
                Poll::Pending
            }
        }
    })
    .await
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
