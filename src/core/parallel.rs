//! The engine for S3 multipart uploads: several parts in flight at once, each with its own
//! retries, while the file is read and hashed once, in order.
//!
//! ```text
//! reader ─part 1, 2, 3… (read and hashed in order: the part's SHA-256 and the file's, one
//!    │                    pass)
//!    └─▶ up to `parallel` parts in flight ─signPart─▶ PUT (file slice, byte progress) ─▶ ETag
//!              each retries on its own (network, 5xx, 429, a refused digest, an expired
//!              URL, which is signed afresh)
//! all parts done ─▶ completeMultipartUpload ─▶ location
//! ```
//!
//! The reader runs at most `parallel` parts ahead of the parts acknowledged, so the file's
//! SHA-256 is exact whatever the order the parts finish in, and memory is bounded by the
//! parts in flight (bodies are file slices; nothing is buffered). A resumed upload asks
//! `listParts` first: parts the store holds (same number, same size) are read and hashed
//! but not sent again.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Poll, Waker};

use crate::core::chunker::ChunkPlan;
use crate::core::digest::ChunkDigest;
use crate::core::engine::{ByteSource, Environment, Reader, Reporter, UploadSummary};
use crate::core::error::UploadError;
use crate::core::progress::{Phase, ProgressModel, UploadedChunk};
use crate::core::protocol::s3::{
    complete_arg, location, part_count, part_range, part_response, sign_arg, stored_parts,
    FinishedPart, Hook, MultipartId, SignedPart, StoredPart,
};
use crate::core::resume::ResumeTarget;
use crate::core::retry::RetryPolicy;
use crate::core::value::Value;

/// What a multipart upload needs to know.
#[derive(Debug, Clone)]
pub struct PartsConfig {
    /// When and how often to retry (each part counts its own failures).
    pub retry: RetryPolicy,
    /// Minimum time between throttled progress calls.
    pub progress_interval_ms: u32,
    /// Also compute the whole file's MD5.
    pub md5: bool,
    /// Parts in flight at once (1 to 16).
    pub parallel: u32,
    /// The parts (see `s3::part_plan`).
    pub plan: ChunkPlan,
    /// `createMultipartUpload`'s argument.
    pub create: Value,
    /// A multipart upload to continue instead of creating one.
    pub resume: Option<MultipartId>,
    /// A multipart upload of this file that will not be continued (a record of it cut in
    /// another part size): aborted, so its parts are not left stored.
    pub abandon: Option<MultipartId>,
}

/// Uploads `source` as an S3 multipart upload through the caller's hooks. On abort, every
/// part in flight stops, `abortMultipartUpload` is called (without waiting for it), and the
/// upload fails with `Aborted`.
pub async fn upload_parts<E: Environment, S: ByteSource>(
    env: &E,
    source: &mut S,
    config: PartsConfig,
) -> Result<UploadSummary, UploadError> {
    let started_ms = env.now_ms();
    let plan = config.plan;
    let count = part_count(&plan);
    let reporter = Reporter::new(
        env,
        ProgressModel::new(
            plan.size,
            u64::from(count),
            config.progress_interval_ms,
            started_ms,
        ),
    );
    reporter.emit(|model, _| Some(model.phase(Phase::Starting, started_ms)));
    let hooks = Hooks {
        env,
        retry: config.retry,
        reporter: &reporter,
        retries: Cell::new(0),
    };
    env.pause().await;
    if let Some(old) = &config.abandon {
        env.call_hook_detached(Hook::Abort, old.to_value());
    }
    let (id, stored) = hooks.begin(&config).await?;
    env.resumable_at(ResumeTarget::Multipart {
        upload_id: id.upload_id.clone(),
        key: id.key.clone(),
        part_size: plan.chunk_size,
    });
    let mut reader = Reader::new(source, config.md5);
    let run = PartsRun {
        id: &id,
        plan,
        count,
        config: &config,
        reporter: &reporter,
        hooks: &hooks,
        stored,
        sending: RefCell::default(),
        queue: RefCell::default(),
        verified: Cell::new(None),
    };
    let parts = run.transfer(&mut reader).await;
    reader.close();
    let (finished, chunks, resumed_from) = parts.map_err(|error| abort_with(env, &id, error))?;
    let answer = hooks
        .call(
            Hook::Complete,
            &complete_arg(&id, &finished),
            Phase::Uploading,
        )
        .await
        .map_err(|error| abort_with(env, &id, error))?;
    let url = location(&answer)?;
    reporter.with(|model| model.set_upload_url(&url));
    let now = env.now_ms();
    reporter.emit(|model, now| Some(model.done(now)));
    Ok(UploadSummary {
        url,
        size: plan.size,
        sha256: reader.digest.file_sha256(),
        md5: reader.digest.file_md5(),
        chunks,
        retries: hooks.retries.get(),
        duration_ms: now - started_ms,
        protocol: "s3",
        checksum: (run.verified.get() == Some(true)).then_some("sha256"),
        resumed_from,
    })
}

/// `error`, after asking the store to abort the multipart upload `id` (without waiting) when
/// it is an abort: its parts would stay stored, and billed, with nothing left to continue or
/// end them.
fn abort_with<E: Environment>(env: &E, id: &MultipartId, error: UploadError) -> UploadError {
    if error == UploadError::Aborted {
        env.call_hook_detached(Hook::Abort, id.to_value());
    }
    error
}

/// The caller's hooks, with retries for the ones that may fail on the way (they call the
/// widget's backend over the network), and the retry waits of the whole upload.
struct Hooks<'a, E> {
    env: &'a E,
    retry: RetryPolicy,
    reporter: &'a Reporter<'a, E>,
    /// Retries over the whole upload: of every part and every hook.
    retries: Cell<u32>,
}

impl<E: Environment> Hooks<'_, E> {
    /// Calls `hook`, retrying a failure that may pass (as `retry` allows); `back_to` is the
    /// phase progress returns to after a retry's wait.
    async fn call(&self, hook: Hook, arg: &Value, back_to: Phase) -> Result<Value, UploadError> {
        self.call_counting(hook, arg, back_to, &mut 0).await
    }

    /// [`Hooks::call`], adding the retries it spent to `spent`.
    async fn call_counting(
        &self,
        hook: Hook,
        arg: &Value,
        back_to: Phase,
        spent: &mut u32,
    ) -> Result<Value, UploadError> {
        let mut failures = 0;
        loop {
            let error = match self.env.call_hook(hook, arg).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let ms =
                self.retry
                    .delay_or_fail(error, failures, self.env.random(), self.env.now_ms())?;
            failures += 1;
            *spent += 1;
            self.wait_to_retry(failures + 1, ms, back_to).await?;
        }
    }

    /// Counts a retry, reports the wait (phase `retrying`, `retryInMs`), waits, and puts the
    /// phase back to `back_to` unless something else changed it meanwhile.
    async fn wait_to_retry(
        &self,
        attempt: u32,
        ms: u32,
        back_to: Phase,
    ) -> Result<(), UploadError> {
        let retries = self.retries.get() + 1;
        self.retries.set(retries);
        self.reporter
            .emit(|model, now| Some(model.retrying(attempt, retries, ms, now)));
        self.env.sleep(ms).await?;
        self.reporter.emit(|model, now| {
            (model.current().phase == Phase::Retrying).then(|| model.phase(back_to, now))
        });
        Ok(())
    }

    /// The multipart upload to send to, and the parts it already holds: the one to
    /// continue if the store still knows it, else a new one.
    async fn begin(
        &self,
        config: &PartsConfig,
    ) -> Result<(MultipartId, Vec<StoredPart>), UploadError> {
        if let Some(id) = &config.resume {
            // A store that no longer knows the upload: listParts answers null (S3's
            // NoSuchUpload), or keeps failing. Either way, start afresh.
            match self
                .call(Hook::ListParts, &id.to_value(), Phase::Starting)
                .await
            {
                // Gone: free whatever the store may still hold of it (billed until then).
                Ok(Value::Null) => self.env.call_hook_detached(Hook::Abort, id.to_value()),
                Ok(answer) => return Ok((id.clone(), stored_parts(&answer)?)),
                // Aborted: the record goes, so the upload goes too. (An abort during
                // createMultipartUpload leaves the upload it may yet create: its id never
                // comes.)
                Err(UploadError::Aborted) => {
                    return Err(abort_with(self.env, id, UploadError::Aborted))
                }
                // The backend may only be down for now: the upload is left as it is.
                Err(_) => {}
            }
        }
        let answer = self
            .call(Hook::Create, &config.create, Phase::Starting)
            .await?;
        Ok((MultipartId::from_value(&answer)?, Vec::new()))
    }
}

/// A part being sent: its future, and its bytes sent so far.
type PartFuture<'a> =
    Pin<Box<dyn Future<Output = Result<(FinishedPart, UploadedChunk), UploadError>> + 'a>>;

struct PartsRun<'a, E> {
    id: &'a MultipartId,
    plan: ChunkPlan,
    count: u32,
    config: &'a PartsConfig,
    reporter: &'a Reporter<'a, E>,
    hooks: &'a Hooks<'a, E>,
    stored: Vec<StoredPart>,
    /// Bytes sent of each part in flight, by part number.
    sending: RefCell<Vec<(u32, u64)>>,
    /// Parts read and hashed, waiting to be sent; and how many more may be read now.
    queue: RefCell<ReadAhead>,
    /// Whether every part sent in this session went with a checksum the store verified;
    /// None while none was sent (parts held from before say nothing about theirs).
    verified: Cell<Option<bool>>,
}

#[derive(Default)]
struct ReadAhead {
    hashed: VecDeque<ChunkDigest>,
    /// Parts that may be read ahead of those acknowledged.
    credits: u32,
    waker: Option<Waker>,
}

impl<'a, E: Environment> PartsRun<'a, E> {
    /// Reads and hashes every part in order while sending them, `parallel` at a time.
    /// Returns the finished parts and chunks in order, and the bytes the store already
    /// held (a resumed upload).
    async fn transfer<S: ByteSource>(
        &self,
        reader: &mut Reader<'_, S>,
    ) -> Result<(Vec<FinishedPart>, Vec<UploadedChunk>, u64), UploadError> {
        let parallel = self.config.parallel.max(1) as usize;
        // One part more than are in flight may be read ahead: the next part is hashed while
        // the others travel, as the single-stream engine does.
        self.queue.borrow_mut().credits = self.config.parallel.max(1) + 1;
        let mut hashing: Pin<Box<dyn Future<Output = Result<(), UploadError>> + '_>> =
            Box::pin(self.read_parts(reader));
        let mut hashing_done = false;
        let mut in_flight: Vec<PartFuture<'_>> = Vec::new();
        let mut finished: Vec<Option<(FinishedPart, UploadedChunk)>> =
            vec![None; self.count as usize];
        let mut next_part = 1u32;
        let mut resumed_from = 0;
        poll_fn(|cx| {
            loop {
                if !hashing_done {
                    if let Poll::Ready(read) = hashing.as_mut().poll(cx) {
                        read?;
                        hashing_done = true;
                    }
                }
                let mut progressed = false;
                // Hashed parts: reuse what the store holds, send the rest as slots free up.
                loop {
                    let Some(digest) = self.queue.borrow_mut().hashed.pop_front() else {
                        break;
                    };
                    let number = next_part;
                    if let Some(etag) = self.stored_part(number, digest.length) {
                        next_part += 1;
                        resumed_from += digest.length;
                        let done = self.finish(number, &digest, etag, 0, true);
                        finished[number as usize - 1] = Some(done);
                        self.give_credit();
                    } else if in_flight.len() < parallel {
                        next_part += 1;
                        in_flight.push(Box::pin(self.send_part(number, digest)));
                    } else {
                        self.queue.borrow_mut().hashed.push_front(digest);
                        break;
                    }
                    progressed = true;
                }
                let mut i = 0;
                while i < in_flight.len() {
                    match in_flight[i].as_mut().poll(cx) {
                        Poll::Ready(done) => {
                            let (part, chunk) = done?;
                            let number = part.number;
                            finished[number as usize - 1] = Some((part, chunk));
                            drop(in_flight.swap_remove(i));
                            self.give_credit();
                            progressed = true;
                        }
                        Poll::Pending => i += 1,
                    }
                }
                if hashing_done && in_flight.is_empty() && self.queue.borrow().hashed.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                if !progressed {
                    self.queue.borrow_mut().waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        })
        .await?;
        let (parts, chunks) = finished.into_iter().flatten().unzip();
        Ok((parts, chunks, resumed_from))
    }

    /// The store's ETag for part `number` if it already holds it whole.
    fn stored_part(&self, number: u32, length: u64) -> Option<String> {
        self.stored
            .iter()
            .find(|p| p.number == number && p.size == length)
            .map(|p| p.etag.clone())
    }

    /// A part is acknowledged (or already held): the reader may read one more ahead.
    fn give_credit(&self) {
        let mut queue = self.queue.borrow_mut();
        queue.credits += 1;
        if let Some(waker) = queue.waker.take() {
            waker.wake();
        }
    }

    /// Reads and hashes the parts in order, as credits allow.
    async fn read_parts<S: ByteSource>(
        &self,
        reader: &mut Reader<'_, S>,
    ) -> Result<(), UploadError> {
        for number in 1..=self.count {
            poll_fn(|cx| {
                let mut queue = self.queue.borrow_mut();
                if queue.credits > 0 {
                    queue.credits -= 1;
                    Poll::Ready(())
                } else {
                    queue.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            let (_, length) = part_range(&self.plan, number);
            if number == 1 && !self.stored.is_empty() {
                self.reporter
                    .emit(|model, now| Some(model.phase(Phase::Resuming, now)));
            }
            let digest = reader.read_chunk(length, self.reporter).await?;
            reader.digest.commit();
            let mut queue = self.queue.borrow_mut();
            queue.hashed.push_back(digest);
            if let Some(waker) = queue.waker.take() {
                waker.wake();
            }
        }
        Ok(())
    }

    /// Sends part `number` until the store takes it: signed, PUT, retried on its own.
    async fn send_part(
        &self,
        number: u32,
        digest: ChunkDigest,
    ) -> Result<(FinishedPart, UploadedChunk), UploadError> {
        let env = self.reporter.env;
        let hooks = self.hooks;
        let sign = sign_arg(self.id, number, digest.length, &digest.sha256);
        // Failed PUTs in a row, and the retries spent on this part's signatures.
        let mut failures = 0u32;
        let mut signing_retries = 0u32;
        self.reporter.emit(|model, now| {
            (model.current().phase != Phase::Uploading).then(|| model.phase(Phase::Uploading, now))
        });
        loop {
            // As before each step of the single-stream engine: a chance to yield.
            env.pause().await;
            let signed = SignedPart::from_value(
                &hooks
                    .call_counting(
                        Hook::SignPart,
                        &sign,
                        Phase::Uploading,
                        &mut signing_retries,
                    )
                    .await?,
            )?;
            let request = signed.request(digest.offset, digest.length);
            let on_sent = |sent: u64| self.part_sent(number, sent);
            let outcome = match env.send(&request, &on_sent).await {
                Ok(response) => part_response(&request, &response),
                Err(error) => Err(error),
            };
            let error = match outcome {
                Ok(etag) => {
                    let carried = signed.carries_checksum();
                    self.verified
                        .set(Some(self.verified.get().unwrap_or(true) && carried));
                    let retries = failures + signing_retries;
                    // Acknowledged first, then no longer in flight: bytesSent never dips.
                    let done = self.finish(number, &digest, etag, retries, false);
                    self.part_sent(number, 0);
                    return Ok(done);
                }
                Err(error) => error,
            };
            // Its bytes go back to unsent (as a restarted `put`'s).
            self.part_sent(number, 0);
            if matches!(
                error,
                UploadError::Network { .. } | UploadError::Timeout { .. }
            ) && env.offline()
            {
                // As the single-stream engine: no retry is spent, and progress says why
                // nothing moves.
                self.reporter
                    .emit(|model, now| Some(model.phase(Phase::Offline, now)));
                env.wait_online().await?;
                self.reporter.emit(|model, now| {
                    (model.current().phase == Phase::Offline)
                        .then(|| model.phase(Phase::Uploading, now))
                });
                continue;
            }
            let ms =
                self.config
                    .retry
                    .delay_or_fail(error, failures, env.random(), env.now_ms())?;
            failures += 1;
            hooks
                .wait_to_retry(failures + 1, ms, Phase::Uploading)
                .await?;
        }
    }

    /// Part `number` has sent `sent` bytes of its body: one bar over every part in flight.
    fn part_sent(&self, number: u32, sent: u64) {
        let total = {
            let mut sending = self.sending.borrow_mut();
            match sending.iter_mut().find(|(n, _)| *n == number) {
                Some(entry) => entry.1 = sent,
                None => sending.push((number, sent)),
            }
            sending.retain(|(_, bytes)| *bytes > 0);
            sending.iter().map(|(_, bytes)| bytes).sum::<u64>()
        };
        self.reporter.emit(|model, now| {
            let acknowledged = model.current().bytes_uploaded;
            let progress = model.sent(acknowledged + total, now);
            if model.current().phase == Phase::Retrying && sent > 0 {
                return Some(model.phase(Phase::Uploading, now));
            }
            progress
        });
    }

    /// Part `number` is in the store (sent now, or `held` from before a resume): its record,
    /// and its place on the bar (bytes held from before count as uploaded, not as speed).
    fn finish(
        &self,
        number: u32,
        digest: &ChunkDigest,
        etag: String,
        retries: u32,
        held: bool,
    ) -> (FinishedPart, UploadedChunk) {
        let chunk = UploadedChunk {
            index: u64::from(number - 1),
            offset: digest.offset,
            length: digest.length,
            sha256: digest.sha256,
            retries,
        };
        self.reporter.emit(|model, now| {
            let acknowledged = model.current().bytes_uploaded + digest.length;
            let done = model.current().chunk_index + 1;
            model.set_chunk_position(done.min(u64::from(self.count)), u64::from(self.count));
            if held {
                model.resumed(acknowledged, now);
            } else {
                // The upload advanced: failures in a row start again.
                model.set_attempt(1);
            }
            model.acknowledged(acknowledged, Some(chunk.clone()), now)
        });
        let part = FinishedPart {
            number,
            etag,
            sha256: digest.sha256,
        };
        (part, chunk)
    }
}

#[cfg(test)]
#[path = "parallel_tests.rs"]
mod tests;
