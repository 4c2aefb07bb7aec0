//! Engine tests against the in-memory tus server of `core::testkit`: every chunk-boundary
//! size, every fault kind, random fault storms, aborts and broken servers.

use std::rc::Rc;

use super::*;
use crate::core::digest::sha256;
use crate::core::protocol::tus::TusUpload;
use crate::core::testkit::{
    block_on, pseudo_random_bytes, FakeEnv, FakeState, FakeTusServer, Fault, FaultPlan,
    MemorySource, XorShift,
};

const ALL: &str = "creation,checksum,termination";
const CHUNK: u64 = 1000;

struct Outcome {
    result: Result<UploadSummary, UploadError>,
    env: FakeState,
    source: MemorySource,
    file: Rc<Vec<u8>>,
}

fn config(attempts: u32) -> EngineConfig {
    EngineConfig {
        retry: RetryPolicy {
            attempts,
            base_delay_ms: 100,
            max_delay_ms: 5000,
        },
        progress_interval_ms: 100,
        md5: false,
    }
}

fn run_upload(
    size: usize,
    piece: usize,
    server: FakeTusServer,
    faults: FaultPlan,
    attempts: u32,
) -> Outcome {
    run_upload_with(size, piece, server, faults, attempts, None, |_| {})
}

/// [`run_upload`], continuing the upload at `resume` if given, with the environment's
/// state changed by `setup` first.
fn run_upload_with(
    size: usize,
    piece: usize,
    server: FakeTusServer,
    faults: FaultPlan,
    attempts: u32,
    resume: Option<&str>,
    setup: impl FnOnce(&mut FakeState),
) -> Outcome {
    let file = Rc::new(pseudo_random_bytes(size, size as u64 + 11));
    let env = FakeEnv::new(server, Rc::clone(&file), faults).with(setup);
    let mut source = MemorySource::new(Rc::clone(&file), piece);
    let mut tus = TusUpload::new(
        "http://127.0.0.1:9/files/".into(),
        size as u64,
        CHUNK,
        vec![("filename".into(), "f.bin".into())],
    )
    .resuming(resume.map(str::to_owned));
    let result = block_on(upload(&mut tus, &env, &mut source, config(attempts)));
    Outcome {
        result,
        env: env.into_state(),
        source,
        file,
    }
}

fn no_faults() -> FaultPlan {
    Box::new(|_, _| None)
}

/// Faults on the PATCH requests only: the n-th PATCH (0-based) gets `plan(n)`.
fn on_patches(mut plan: impl FnMut(usize) -> Option<Fault> + 'static) -> FaultPlan {
    let mut patches = 0;
    Box::new(move |request, _| {
        (request.method == crate::core::http::Method::Patch).then(|| {
            patches += 1;
            plan(patches - 1)
        })?
    })
}

/// What every successful upload must satisfy.
fn assert_uploaded(o: &Outcome) -> &UploadSummary {
    let summary = o.result.as_ref().expect("upload succeeds");
    // The upload the result names (a server may hold others: one given up on, say).
    let (id, stored) = o
        .env
        .server
        .uploads
        .iter()
        .find(|(id, _)| summary.url.rsplit('/').next() == Some(id.as_str()))
        .expect("the result's upload on the server");
    assert_eq!(stored.data, *o.file, "server holds the file");
    assert_eq!(
        summary.sha256,
        sha256(&o.file),
        "result sha256 is the file's"
    );
    assert_eq!(summary.size, o.file.len() as u64);
    // The acknowledged chunks tile the file and hash their own bytes.
    let mut next = 0;
    for (i, chunk) in summary.chunks.iter().enumerate() {
        assert_eq!((chunk.index, chunk.offset), (i as u64, next));
        let bytes = &o.file[chunk.offset as usize..(chunk.offset + chunk.length) as usize];
        assert_eq!(chunk.sha256, sha256(bytes));
        assert!(chunk.length > 0 && chunk.length <= CHUNK);
        next += chunk.length;
    }
    assert_eq!(next, o.file.len() as u64);
    // Progress: uploaded bytes and percent never go back, the last call is done at 100 %.
    let mut last = (0u64, 0.0f64);
    for p in &o.env.reports {
        assert!(
            p.bytes_uploaded >= last.0 && p.percent >= last.1,
            "progress went back"
        );
        assert!(p.bytes_uploaded <= p.bytes_total);
        last = (p.bytes_uploaded, p.percent);
    }
    let final_report = o.env.reports.last().expect("progress reported");
    assert_eq!(
        (final_report.phase, final_report.percent),
        (crate::core::progress::Phase::Done, 100.0)
    );
    // One progress call per acknowledged chunk carries it.
    let reported: Vec<_> = o
        .env
        .reports
        .iter()
        .filter_map(|p| p.chunk.clone())
        .collect();
    assert_eq!(reported, summary.chunks);
    assert_eq!(summary.url, format!("http://127.0.0.1:9/files/{id}"));
    summary
}

#[test]
fn uploads_every_boundary_size_without_faults() {
    for size in [0, 1, 999, 1000, 1001, 2999, 3000, 3001] {
        for piece in [1, 7, 64, 1000, 4096] {
            let o = run_upload(
                size,
                piece,
                FakeTusServer::new(ALL, "sha1,sha256"),
                no_faults(),
                3,
            );
            let s = assert_uploaded(&o);
            assert_eq!(
                s.chunks.len() as u64,
                (size as u64).div_ceil(CHUNK),
                "size {size}"
            );
            assert_eq!(
                (s.retries, s.checksum, s.protocol),
                (0, Some("sha256"), "tus")
            );
            let stored = o.env.server.uploads.values().next().expect("stored");
            assert_eq!(stored.metadata.as_deref(), Some("filename Zi5iaW4="));
            // One reader for the whole file: no rewinds without faults.
            assert!(
                o.source.opens.len() <= 1,
                "size {size}: {:?}",
                o.source.opens
            );
        }
    }
}

#[test]
fn sends_no_checksum_to_a_server_without_the_extension() {
    let o = run_upload(
        2500,
        100,
        FakeTusServer::new("creation,termination", ""),
        no_faults(),
        3,
    );
    assert_eq!(assert_uploaded(&o).checksum, None);
}

#[test]
fn honours_retry_after_seconds_and_dates() {
    let o = run_upload(
        3000,
        64,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| (n == 1).then(|| Fault::Status(429, Some("2".into())))),
        3,
    );
    let s = assert_uploaded(&o);
    assert_eq!((s.retries, o.env.sleeps.clone()), (1, vec![2000]));
    assert_eq!(s.chunks[1].retries, 1);

    // An HTTP-date 3 s after the fake clock's start, which advanced a little meanwhile.
    let date = "Tue, 14 Nov 2023 22:13:23 GMT"; // 1_700_000_003_000 ms
    let o = run_upload(
        3000,
        64,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(move |n| (n == 0).then(|| Fault::Status(503, Some(date.into())))),
        3,
    );
    assert_uploaded(&o);
    assert!(
        (2900..=3000).contains(&o.env.sleeps[0]),
        "{:?}",
        o.env.sleeps
    );

    // A server asking for an hour is capped at maxDelayMs.
    let o = run_upload(
        10,
        64,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| (n == 0).then(|| Fault::Status(429, Some("3600".into())))),
        3,
    );
    assert_uploaded(&o);
    assert_eq!(o.env.sleeps, vec![5000]);
}

#[test]
fn retries_every_transient_status_on_every_request_kind() {
    for status in [408, 423, 429, 500, 502, 503, 504] {
        for n in 0..5 {
            // n-th request: OPTIONS, POST, PATCH, PATCH, PATCH (HEADs appear after failures).
            let faults: FaultPlan =
                Box::new(move |_, i| (i == n).then_some(Fault::Status(status, None)));
            let o = run_upload(2500, 300, FakeTusServer::new(ALL, "sha256"), faults, 3);
            let s = assert_uploaded(&o);
            assert_eq!(s.retries, 1, "status {status} on request {n}");
        }
    }
}

#[test]
fn a_reset_that_kept_part_of_a_chunk_is_rehashed_not_resent() {
    // No checksum: the server keeps 400 of the second chunk's 1000 bytes.
    let o = run_upload(
        3000,
        64,
        FakeTusServer::new("creation,termination", ""),
        on_patches(|n| (n == 1).then_some(Fault::Reset { keep: 400 })),
        3,
    );
    let s = assert_uploaded(&o);
    let layout: Vec<_> = s.chunks.iter().map(|c| (c.offset, c.length)).collect();
    assert_eq!(
        layout,
        vec![(0, 1000), (1000, 400), (1400, 1000), (2400, 600)]
    );
    assert_eq!(s.chunks[1].retries, 1);
    // The reader was recreated at the checkpoint (1000) to re-hash the kept part.
    assert_eq!(o.source.opens, vec![0, 1000]);
}

#[test]
fn a_reset_with_checksums_discards_the_partial_chunk() {
    let o = run_upload(
        3000,
        64,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| (n == 1).then_some(Fault::Reset { keep: 400 })),
        3,
    );
    let s = assert_uploaded(&o);
    let layout: Vec<_> = s.chunks.iter().map(|c| (c.offset, c.length)).collect();
    assert_eq!(layout, vec![(0, 1000), (1000, 1000), (2000, 1000)]);
    assert_eq!(o.source.opens, vec![0, 1000]);
}

#[test]
fn a_corrupted_chunk_is_refused_with_460_and_resent() {
    let o = run_upload(
        3000,
        64,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| (n == 2).then_some(Fault::Corrupt)),
        3,
    );
    let s = assert_uploaded(&o);
    assert_eq!(s.retries, 1);
    let statuses: Vec<_> = o.env.server.log.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        statuses,
        ["OPTIONS", "POST", "PATCH", "PATCH", "PATCH", "HEAD", "PATCH"]
    );
}

#[test]
fn a_lost_response_to_an_accepted_chunk_is_not_resent() {
    // The server stored the whole chunk but the connection broke before the answer.
    let o = run_upload(
        2000,
        64,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| (n == 0).then_some(Fault::LoseResponse)),
        3,
    );
    let s = assert_uploaded(&o);
    assert_eq!((s.chunks.len(), s.retries), (2, 1));
    // HEAD said 1000: the chunk hashed before sending was committed without re-reading,
    // and only the next chunk needed a new reader.
    assert_eq!(o.source.opens, vec![0, 1000]);
    let patches = o
        .env
        .server
        .log
        .iter()
        .filter(|(m, _)| *m == crate::core::http::Method::Patch);
    assert_eq!(patches.count(), 2, "chunk 0 was not sent again");

    // Without checksums the chunk is hashed while it travels; a lost answer still leaves
    // the right result.
    let o = run_upload(
        2000,
        64,
        FakeTusServer::new("creation", ""),
        on_patches(|n| (n == 0).then_some(Fault::LoseResponse)),
        3,
    );
    assert_uploaded(&o);
}

#[test]
fn random_fault_storms_never_corrupt_the_result() {
    for seed in 0..300u64 {
        for (extensions, algorithms) in [(ALL, "sha256"), ("creation", "")] {
            let mut rng = XorShift::new(seed);
            let size = rng.below(5000) as usize;
            let piece = 1 + rng.below(700) as usize;
            let mut fault_rng = XorShift::new(seed ^ 0xfeed);
            let checksums = !algorithms.is_empty();
            let faults: FaultPlan = Box::new(move |request, _| {
                let roll = fault_rng.below(100);
                let len = match request.body {
                    crate::core::http::Body::FileRange { start, end } => end - start,
                    crate::core::http::Body::Empty => 0,
                };
                match roll {
                    0..=9 => Some(Fault::Status([429, 500, 503][roll as usize % 3], None)),
                    10..=19 if len > 0 => Some(Fault::Reset {
                        keep: fault_rng.below(len + 1),
                    }),
                    // Without checksums a corrupted body goes unnoticed: that is what they are for.
                    20..=24 if len > 0 && checksums => Some(Fault::Corrupt),
                    _ => None,
                }
            });
            let o = run_upload(
                size,
                piece,
                FakeTusServer::new(extensions, algorithms),
                faults,
                20,
            );
            assert_uploaded(&o);
        }
    }
}

#[test]
fn gives_up_after_the_configured_retries_without_progress() {
    let o = run_upload(
        3000,
        64,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| (n >= 1).then_some(Fault::Status(503, None))),
        4,
    );
    let err = o.result.unwrap_err();
    assert_eq!((err.code(), err.status()), ("retries_exhausted", Some(503)));
    assert!(matches!(
        err,
        UploadError::RetriesExhausted { attempts: 4, .. }
    ));
    assert_eq!(o.env.sleeps.len(), 4);
    // Backoff ceilings 100, 200, 400, 800 with full jitter.
    for (sleep, ceiling) in o.env.sleeps.iter().zip([100, 200, 400, 800]) {
        assert!(*sleep <= ceiling, "{sleep} > {ceiling}");
    }
}

#[test]
fn attempts_reset_when_the_offset_advances() {
    // Every chunk fails once; one retry in a row is allowed, so the upload still succeeds.
    let o = run_upload(
        5000,
        64,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| (n % 2 == 0).then_some(Fault::Status(500, None))),
        1,
    );
    let s = assert_uploaded(&o);
    assert_eq!(s.retries, 5);
    assert!(s.chunks.iter().all(|c| c.retries == 1));
}

#[test]
fn permanent_errors_fail_at_once() {
    for status in [400, 404, 410, 413, 415] {
        let o = run_upload(
            3000,
            64,
            FakeTusServer::new(ALL, "sha256"),
            on_patches(move |n| (n == 1).then_some(Fault::Status(status, None))),
            5,
        );
        let err = o.result.unwrap_err();
        assert_eq!(
            (err.code(), err.status(), err.is_retryable()),
            ("http_status", Some(status), false)
        );
        assert!(o.env.sleeps.is_empty());
    }
}

#[test]
fn exhausted_checksum_mismatches_say_so() {
    let o = run_upload(
        3000,
        64,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|_| Some(Fault::Corrupt)),
        2,
    );
    let err = o.result.unwrap_err();
    assert_eq!(err.code(), "retries_exhausted");
    assert_eq!(
        err.cause().map(UploadError::code),
        Some("checksum_mismatch")
    );
    assert_eq!(err.status(), Some(460));
}

#[test]
fn abort_terminates_the_upload_when_the_server_can() {
    let o = run_upload(
        5000,
        64,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| (n == 2).then_some(Fault::Abort)),
        3,
    );
    assert_eq!(o.result.unwrap_err(), UploadError::Aborted);
    assert_eq!(o.env.detached.len(), 1);
    assert_eq!(o.env.detached[0].method, crate::core::http::Method::Delete);
    assert_eq!(o.env.server.deleted, vec!["u1".to_string()]);

    let o = run_upload(
        5000,
        64,
        FakeTusServer::new("creation", ""),
        on_patches(|n| (n == 2).then_some(Fault::Abort)),
        3,
    );
    assert_eq!(o.result.unwrap_err(), UploadError::Aborted);
    assert!(
        o.env.detached.is_empty(),
        "no termination extension, no DELETE"
    );

    // Abort before creation: nothing to delete.
    let faults: FaultPlan = Box::new(|_, n| (n == 0).then_some(Fault::Abort));
    let o = run_upload(5000, 64, FakeTusServer::new(ALL, "sha256"), faults, 3);
    assert_eq!(o.result.unwrap_err(), UploadError::Aborted);
    assert!(o.env.detached.is_empty());
}

#[test]
fn abort_during_a_backoff_sleep_ends_the_upload() {
    let faults: FaultPlan = Box::new(|request, _| {
        (request.method == crate::core::http::Method::Patch).then_some(Fault::Status(503, None))
    });
    let file = Rc::new(pseudo_random_bytes(100, 1));
    let env = FakeEnv::new(FakeTusServer::new(ALL, "sha256"), Rc::clone(&file), faults);
    let mut source = MemorySource::new(Rc::clone(&file), 10);
    let mut tus = TusUpload::new("http://127.0.0.1:9/files/".into(), 100, CHUNK, vec![]);
    // Abort as soon as the first retry is reported.
    struct AbortOnRetry(FakeEnv);
    impl Environment for AbortOnRetry {
        async fn send(
            &self,
            r: &HttpRequest,
            on_sent: &dyn Fn(u64),
        ) -> Result<HttpResponse, UploadError> {
            self.0.send(r, on_sent).await
        }
        async fn sleep(&self, ms: u32) -> Result<(), UploadError> {
            self.0.sleep(ms).await
        }
        fn now_ms(&self) -> f64 {
            self.0.now_ms()
        }
        fn random(&self) -> f64 {
            self.0.random()
        }
        fn report(&self, p: &Progress) {
            if p.phase == crate::core::progress::Phase::Retrying {
                self.0.abort();
            }
            self.0.report(p)
        }
        fn send_detached(&self, r: HttpRequest) {
            self.0.send_detached(r)
        }
    }
    let env = AbortOnRetry(env);
    let result = block_on(upload(&mut tus, &env, &mut source, config(5)));
    assert_eq!(result.unwrap_err(), UploadError::Aborted);
    let state = env.0.into_state();
    assert!(state.sleeps.is_empty(), "the sleep ended at once");
    assert_eq!(state.server.deleted.len(), 1);
}

#[test]
fn a_server_that_loses_acknowledged_bytes_is_a_protocol_error() {
    let mut server = FakeTusServer::new(ALL, "sha256");
    server.lose_bytes_after_patch = Some(500);
    let o = run_upload(
        3000,
        64,
        server,
        on_patches(|n| (n == 1).then_some(Fault::Status(500, None))),
        3,
    );
    let err = o.result.unwrap_err();
    assert_eq!(err.code(), "protocol");
    assert!(
        err.to_string().contains("went back from 1000 to 500"),
        "{err}"
    );
}

#[test]
fn a_file_shorter_than_its_size_fails_to_read() {
    let file = Rc::new(pseudo_random_bytes(1500, 1));
    let env = FakeEnv::new(
        FakeTusServer::new(ALL, "sha256"),
        Rc::clone(&file),
        no_faults(),
    );
    let mut source = MemorySource::new(Rc::clone(&file), 64);
    source.claimed_size = 2500;
    let mut tus = TusUpload::new("http://127.0.0.1:9/files/".into(), 2500, CHUNK, vec![]);
    let err = block_on(upload(&mut tus, &env, &mut source, config(3))).unwrap_err();
    assert_eq!(err.code(), "read_failed");
    assert!(err.to_string().contains("ended at byte 1500"), "{err}");
}

#[test]
fn progress_reports_phases_attempts_and_the_read_position() {
    let o = run_upload(
        3000,
        64,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| (n == 1).then_some(Fault::Status(503, None))),
        3,
    );
    assert_uploaded(&o);
    use crate::core::progress::Phase::*;
    let phases: Vec<_> = o.env.reports.iter().map(|p| p.phase).collect();
    assert_eq!(phases.first(), Some(&Starting));
    let retry = o
        .env
        .reports
        .iter()
        .find(|p| p.phase == Retrying)
        .expect("a retrying report");
    assert_eq!((retry.attempt, retry.retries, retry.chunk_index), (2, 1, 1));
    assert!(retry.retry_in_ms.is_some());
    assert!(o
        .env
        .reports
        .iter()
        .any(|p| p.bytes_read > 0 && p.chunk.is_none() && p.phase == Uploading));
    let first_with_url = o
        .env
        .reports
        .iter()
        .position(|p| p.upload_url.is_some())
        .expect("url reported");
    assert!(o.env.reports[first_with_url..]
        .iter()
        .all(|p| p.upload_url.as_deref() == Some("http://127.0.0.1:9/files/u1")));
    assert!(o.env.reports[..first_with_url]
        .iter()
        .all(|p| p.phase == Starting));
    let chunk_counts: Vec<_> = o.env.reports.iter().map(|p| p.chunk_count).collect();
    assert!(chunk_counts.iter().all(|c| *c == 3), "{chunk_counts:?}");
}

#[test]
fn a_server_that_answers_success_but_keeps_nothing_is_a_protocol_error() {
    for (extensions, algorithms) in [(ALL, "sha256"), ("creation", "")] {
        let o = run_upload(
            3000,
            64,
            FakeTusServer::new(extensions, algorithms),
            on_patches(|n| (n == 1).then_some(Fault::AcceptNothing)),
            3,
        );
        let err = o.result.unwrap_err();
        assert_eq!(err.code(), "protocol");
        assert!(
            err.to_string().contains("kept none of the 1000 bytes"),
            "{err}"
        );
        assert!(o.env.server.log.len() < 10, "no request loop");
    }
}

#[test]
fn progress_names_the_chunk_after_a_recorded_partial_one() {
    let o = run_upload(
        3000,
        64,
        FakeTusServer::new("creation", ""),
        on_patches(|n| (n == 1).then_some(Fault::Reset { keep: 400 })),
        3,
    );
    assert_uploaded(&o);
    // Whenever a chunk is acknowledged, chunkIndex already points past the chunks before it.
    for p in o.env.reports.iter().filter(|p| p.chunk.is_some()) {
        let chunk = p.chunk.as_ref().map(|c| c.index).unwrap_or_default();
        assert!(
            p.chunk_index >= chunk,
            "chunkIndex {} behind chunk {chunk}",
            p.chunk_index
        );
    }
}

#[test]
fn refused_credentials_are_refreshed_once_then_the_upload_goes_on() {
    // A token that expires every third request: each refusal is followed by fresh headers.
    let mut n = 0;
    let o = run_upload(
        5500,
        300,
        FakeTusServer::new(ALL, "sha256"),
        Box::new(move |_, _| {
            n += 1;
            (n % 3 == 0).then_some(Fault::Status(401, None))
        }),
        0,
    );
    let s = assert_uploaded(&o);
    assert!(!o.env.refreshes.is_empty());
    assert!(o.env.refreshes.iter().all(|s| *s == 401));
    assert!(o.env.sleeps.is_empty(), "no backoff for a refresh");
    assert_eq!(s.retries, 0, "a refresh is not a retry");
    // tus counts 403 as refused credentials too.
    let o = run_upload(
        2500,
        300,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| (n == 1).then_some(Fault::Status(403, None))),
        0,
    );
    assert_uploaded(&o);
    assert_eq!(o.env.refreshes, [403]);
}

#[test]
fn a_second_refusal_in_a_row_is_unauthorized() {
    let o = run_upload(
        2500,
        300,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| (n >= 1).then_some(Fault::Status(401, None))),
        5,
    );
    let err = o.result.unwrap_err();
    assert_eq!((err.code(), err.status()), ("unauthorized", Some(401)));
    assert_eq!(o.env.refreshes, [401]);
    // Fixed headers cannot be refreshed: the first refusal is final.
    let o = run_upload_with(
        2500,
        300,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| (n == 0).then_some(Fault::Status(401, None))),
        5,
        None,
        |state| state.refreshable = false,
    );
    assert_eq!(o.result.unwrap_err().code(), "unauthorized");
}

#[test]
fn offline_waits_for_the_browser_without_spending_retries() {
    let o = run_upload(
        4000,
        300,
        FakeTusServer::new(ALL, "sha256"),
        on_patches(|n| matches!(n, 1 | 2 | 5).then_some(Fault::Offline)),
        0,
    );
    let s = assert_uploaded(&o);
    assert_eq!(o.env.online_waits, 3);
    assert_eq!(s.retries, 0, "waiting for the network is not a retry");
    assert!(o.env.sleeps.is_empty());
    let phases: Vec<_> = o.env.reports.iter().map(|p| p.phase).collect();
    assert!(phases.contains(&crate::core::progress::Phase::Offline));
}

/// A server holding the first `held` bytes of the file under `/files/u0`.
fn server_holding(
    held: usize,
    size: usize,
    extensions: &'static str,
    algorithms: &'static str,
) -> FakeTusServer {
    let file = pseudo_random_bytes(size, size as u64 + 11);
    let mut server = FakeTusServer::new(extensions, algorithms);
    server.uploads.insert(
        "u0".into(),
        crate::core::testkit::StoredUpload {
            length: size as u64,
            data: file[..held].to_vec(),
            metadata: None,
        },
    );
    server
}

#[test]
fn a_resumed_upload_sends_only_the_rest_and_hashes_everything() {
    for (size, held) in [(5500, 0), (5500, 2000), (5500, 2345), (5500, 5500), (1, 1)] {
        for algorithms in ["sha256", ""] {
            let o = run_upload_with(
                size,
                300,
                server_holding(held, size, ALL, algorithms),
                no_faults(),
                0,
                Some("http://127.0.0.1:9/files/u0"),
                |_| {},
            );
            let s = assert_uploaded(&o);
            assert_eq!(s.resumed_from, held as u64);
            assert_eq!(o.env.server.uploads.len(), 1, "no new upload was created");
            let sent: u64 = s
                .chunks
                .iter()
                .filter(|c| c.offset >= held as u64)
                .map(|c| c.length)
                .sum();
            assert_eq!(sent, (size - held) as u64);
            let patched = o
                .env
                .server
                .log
                .iter()
                .filter(|(m, _)| *m == crate::core::http::Method::Patch)
                .count();
            assert_eq!(
                patched as u64,
                (size - held).div_ceil(CHUNK as usize) as u64,
                "only the rest was sent"
            );
            let phases: Vec<_> = o.env.reports.iter().map(|p| p.phase).collect();
            assert_eq!(
                phases.contains(&crate::core::progress::Phase::Resuming),
                held > 0
            );
            assert_eq!(o.env.resumable_at, ["http://127.0.0.1:9/files/u0"]);
        }
    }
}

#[test]
fn the_bytes_held_from_before_are_never_reported_as_speed() {
    // Requests slow enough that the progress throttle lets a call out between the server's
    // answer (HEAD: 4000 bytes held) and the re-hashing of those bytes.
    let o = run_upload_with(
        5500,
        300,
        server_holding(4000, 5500, ALL, "sha256"),
        no_faults(),
        0,
        Some("http://127.0.0.1:9/files/u0"),
        |state| state.request_ms = 200.0,
    );
    let s = assert_uploaded(&o);
    assert_eq!(s.resumed_from, 4000);
    let resuming = o
        .env
        .reports
        .iter()
        .position(|p| p.phase == crate::core::progress::Phase::Resuming)
        .expect("a resuming phase");
    for report in &o.env.reports[..=resuming] {
        assert_eq!(
            (report.bytes_per_second, report.eta_seconds),
            (0.0, None),
            "{report:?}"
        );
    }
}

#[test]
fn an_upload_the_server_lost_is_started_afresh() {
    let o = run_upload_with(
        2500,
        300,
        FakeTusServer::new(ALL, "sha256"),
        no_faults(),
        0,
        Some("http://127.0.0.1:9/files/gone"),
        |_| {},
    );
    let s = assert_uploaded(&o);
    assert_eq!(s.resumed_from, 0);
    assert_eq!(o.env.resumable_at, ["http://127.0.0.1:9/files/u1"]);
}

#[test]
fn a_stored_upload_the_server_refuses_is_started_afresh() {
    // (status, how many HEADs of the stored upload get it, credentials refreshable,
    //  resumed from). A 400 from a proxy: a new upload at once. A 403 once (an expired
    // token): fresh credentials, and the upload continues. A 403 again after them, or with
    // fixed headers (another user's upload): a new upload, not a failure on every attempt
    // until the record expires. A 423 (locked): retried, and it continues.
    for (status, refusals, refreshable, resumed) in [
        (400, 1, true, 0),
        (403, 1, true, 1000),
        (403, 9, true, 0),
        (403, 9, false, 0),
        (423, 1, true, 1000),
    ] {
        let mut heads = 0;
        let faults: FaultPlan = Box::new(move |request, _| {
            let stored =
                request.method == crate::core::http::Method::Head && request.url.ends_with("/u0");
            stored.then(|| {
                heads += 1;
                (heads <= refusals).then_some(Fault::Status(status, None))
            })?
        });
        let o = run_upload_with(
            2500,
            300,
            server_holding(1000, 2500, ALL, "sha256"),
            faults,
            3,
            Some("http://127.0.0.1:9/files/u0"),
            |state| state.refreshable = refreshable,
        );
        let case = format!("{status} x{refusals}, refreshable {refreshable}");
        let s = assert_uploaded(&o);
        assert_eq!(s.resumed_from, resumed, "{case}");
        let url = if resumed > 0 { "u0" } else { "u1" };
        assert!(s.url.ends_with(url), "{case}: {}", s.url);
    }
}

#[test]
fn without_a_server_checksum_the_end_is_confirmed() {
    let o = run_upload(
        2500,
        300,
        FakeTusServer::new("creation,termination", ""),
        no_faults(),
        0,
    );
    assert_uploaded(&o);
    let last = o.env.server.log.last().expect("requests");
    assert_eq!(
        last.0,
        crate::core::http::Method::Head,
        "a final HEAD confirms the end"
    );
    // A server that loses the end after acknowledging it: never a silent success.
    let mut server = FakeTusServer::new("creation,termination", "");
    server.lose_bytes_after_patch = Some(10);
    let o = run_upload(2500, 300, server, no_faults(), 3);
    assert_eq!(o.result.unwrap_err().code(), "protocol");
}
