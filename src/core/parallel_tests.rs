//! Multipart engine tests against the in-memory S3 of `core::testkit`: part-boundary sizes
//! with 1 and 4 parts in flight, every fault a store or its network produces, expired
//! URLs, abort, resume, and where the checksum travels.

use std::rc::Rc;

use super::*;
use crate::core::digest::sha256;
use crate::core::protocol::s3::{create_arg, part_count};
use crate::core::testkit::{
    block_on, pseudo_random_bytes, FakeEnv, FakeState, FakeTusServer, Fault, FaultPlan,
    MemorySource,
};

const PART: u64 = 1000;

struct Outcome {
    result: Result<UploadSummary, UploadError>,
    env: FakeState,
    file: Rc<Vec<u8>>,
}

fn run(
    size: usize,
    parallel: u32,
    faults: FaultPlan,
    resume: Option<MultipartId>,
    setup: impl FnOnce(&mut FakeState),
) -> Outcome {
    run_with(size, parallel, faults, resume, None, setup)
}

/// [`run`], abandoning the multipart upload `abandon`.
fn run_with(
    size: usize,
    parallel: u32,
    faults: FaultPlan,
    resume: Option<MultipartId>,
    abandon: Option<MultipartId>,
    setup: impl FnOnce(&mut FakeState),
) -> Outcome {
    let file = Rc::new(pseudo_random_bytes(size, size as u64 + 5));
    let env = FakeEnv::new(FakeTusServer::new("", ""), Rc::clone(&file), faults).with(setup);
    let mut source = MemorySource::new(Rc::clone(&file), 333);
    let config = PartsConfig {
        retry: RetryPolicy {
            attempts: 4,
            base_delay_ms: 10,
            max_delay_ms: 100,
        },
        progress_interval_ms: 0,
        md5: false,
        parallel,
        plan: ChunkPlan::new(size as u64, PART),
        create: create_arg("a.bin", "application/octet-stream", size as u64, &[]),
        resume,
        abandon,
    };
    let result = block_on(upload_parts(&env, &mut source, config));
    Outcome {
        result,
        env: env.into_state(),
        file,
    }
}

fn no_faults() -> FaultPlan {
    Box::new(|_, _| None)
}

/// The multipart upload of an earlier page, as a record or `s3Upload` names it.
fn old_upload() -> MultipartId {
    MultipartId {
        upload_id: "mpu-old".into(),
        key: "objects/old".into(),
    }
}

/// Puts [`old_upload`] in the store, holding `parts` (part number → bytes).
fn store_old_upload(state: &mut FakeState, parts: std::collections::BTreeMap<u32, Vec<u8>>) {
    let old = old_upload();
    state.s3.uploads.insert(old.upload_id, (old.key, parts));
}

/// Faults on the part PUTs only: the n-th PUT (0-based) gets `plan(n)`.
fn on_parts(mut plan: impl FnMut(usize) -> Option<Fault> + 'static) -> FaultPlan {
    let mut puts = 0;
    Box::new(move |request, _| {
        (request.method == crate::core::http::Method::Put).then(|| {
            puts += 1;
            plan(puts - 1)
        })?
    })
}

/// What every successful multipart upload must satisfy.
fn assert_stored(o: &Outcome) -> &UploadSummary {
    let summary = o.result.as_ref().expect("upload succeeds");
    assert_eq!(o.env.s3.objects.len(), 1, "one object");
    let (key, bytes) = o.env.s3.objects.iter().next().expect("object");
    assert_eq!(bytes, &*o.file, "the store holds the file");
    assert!(o.env.s3.uploads.is_empty(), "no multipart upload left");
    assert_eq!(
        summary.url,
        format!("https://s3.test/bucket/{key}"),
        "location without its query"
    );
    assert_eq!(summary.sha256, sha256(&o.file));
    assert_eq!(
        (summary.protocol, summary.size),
        ("s3", o.file.len() as u64)
    );
    let count = part_count(&ChunkPlan::new(o.file.len() as u64, PART));
    assert_eq!(summary.chunks.len(), count as usize);
    let mut next = 0;
    for (i, chunk) in summary.chunks.iter().enumerate() {
        assert_eq!((chunk.index, chunk.offset), (i as u64, next));
        let part = &o.file[chunk.offset as usize..(chunk.offset + chunk.length) as usize];
        assert_eq!(chunk.sha256, sha256(part));
        next += chunk.length;
    }
    assert_eq!(next, o.file.len() as u64);
    let mut last = 0.0;
    for p in &o.env.reports {
        assert!(p.percent >= last, "the bar never goes back");
        assert!(p.bytes_uploaded <= p.bytes_total);
        last = p.percent;
    }
    let done = o.env.reports.last().expect("progress");
    assert_eq!((done.phase, done.percent), (Phase::Done, 100.0));
    summary
}

#[test]
fn uploads_every_part_boundary_size_with_one_and_four_parts_in_flight() {
    let p = PART as usize;
    for size in [0, 1, p - 1, p, p + 1, 10 * p + 17] {
        for parallel in [1, 4] {
            let o = run(size, parallel, no_faults(), None, |_| {});
            let s = assert_stored(&o);
            assert_eq!(
                (s.checksum, s.retries, s.resumed_from),
                (Some("sha256"), 0, 0),
                "{size}/{parallel}"
            );
            assert_eq!(o.env.s3.hooks.first(), Some(&"createMultipartUpload"));
            assert_eq!(o.env.s3.hooks.last(), Some(&"completeMultipartUpload"));
            let signs = o.env.s3.hooks.iter().filter(|h| **h == "signPart").count();
            assert_eq!(
                signs,
                part_count(&ChunkPlan::new(size as u64, PART)) as usize
            );
            assert_eq!(o.env.resumable_at.len(), 1);
            let sent: Vec<u64> = o.env.reports.iter().map(|p| p.bytes_sent).collect();
            assert!(
                sent.windows(2).all(|w| w[0] <= w[1]),
                "bytesSent never dips without a failure: {sent:?}"
            );
        }
    }
}

#[test]
fn every_fault_is_survived_and_each_part_retries_on_its_own() {
    let faults: [(&str, Fault); 5] = [
        ("503", Fault::Status(503, None)),
        ("429", Fault::Status(429, Some("1".into()))),
        ("500", Fault::Status(500, None)),
        ("reset", Fault::Reset { keep: 10 }),
        ("corrupt", Fault::Corrupt),
    ];
    for (name, fault) in faults {
        for parallel in [1, 4] {
            let fault = fault.clone();
            let o = run(
                10 * PART as usize + 17,
                parallel,
                on_parts(move |n| (n % 3 == 1).then(|| fault.clone())),
                None,
                |_| {},
            );
            let s = assert_stored(&o);
            assert!(s.retries > 0, "{name}");
            assert!(s.chunks.iter().any(|c| c.retries > 0), "{name}");
        }
    }
}

#[test]
fn offline_waits_for_the_browser_without_spending_retries() {
    for parallel in [1, 4] {
        let o = run(
            4 * PART as usize + 3,
            parallel,
            on_parts(|n| matches!(n, 1 | 2).then_some(Fault::Offline)),
            None,
            |_| {},
        );
        let s = assert_stored(&o);
        assert_eq!(s.retries, 0, "waiting for the network is not a retry");
        assert!(o.env.online_waits >= 1);
        let phases: Vec<_> = o.env.reports.iter().map(|p| p.phase).collect();
        assert!(phases.contains(&crate::core::progress::Phase::Offline));
        assert_eq!(phases.last(), Some(&crate::core::progress::Phase::Done));
    }
}

#[test]
fn a_part_refused_for_its_digest_is_sent_again() {
    let o = run(
        3 * PART as usize,
        2,
        on_parts(|n| (n == 0).then_some(Fault::Corrupt)),
        None,
        |_| {},
    );
    let s = assert_stored(&o);
    assert_eq!(s.retries, 1);
    assert_eq!(s.chunks[0].retries, 1);
}

#[test]
fn an_expired_part_url_is_signed_afresh() {
    let o = run(3 * PART as usize, 1, no_faults(), None, |state| {
        state.s3.expired_urls = 2
    });
    let s = assert_stored(&o);
    assert_eq!(s.retries, 2);
    let signs = o.env.s3.hooks.iter().filter(|h| **h == "signPart").count();
    assert_eq!(signs, 5, "three parts, two of them signed twice");
}

#[test]
fn hook_retries_are_counted_and_shown_like_part_retries() {
    use crate::core::progress::Phase;
    let o = run(3 * PART as usize, 1, no_faults(), None, |state| {
        state.s3.hook_failures = vec![("createMultipartUpload", 1), ("signPart", 2)];
    });
    let s = assert_stored(&o);
    assert_eq!(
        s.retries, 3,
        "one createMultipartUpload and two signPart retries"
    );
    assert_eq!(
        s.chunks[0].retries, 2,
        "part 1 waited for its signature twice"
    );
    let reports = &o.env.reports;
    let waits: Vec<_> = reports
        .iter()
        .filter(|p| p.phase == Phase::Retrying)
        .map(|p| (p.attempt, p.retries, p.retry_in_ms.is_some()))
        .collect();
    assert_eq!(waits, [(2, 1, true), (2, 2, true), (3, 3, true)]);
    // After each wait the phase is back where it was: starting, then uploading.
    let after_wait = |n: usize| {
        let at = reports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.phase == Phase::Retrying)
            .nth(n)
            .map(|(i, _)| i)
            .unwrap();
        (reports[at + 1].phase, reports[at + 1].retry_in_ms)
    };
    assert_eq!(after_wait(0), (Phase::Starting, None));
    assert_eq!(after_wait(2), (Phase::Uploading, None));
    // Once a part lands, failures in a row start again.
    let landed = reports.iter().find(|p| p.chunk.is_some()).unwrap();
    assert_eq!((landed.attempt, landed.retries), (1, 3));
}

#[test]
fn persistent_failures_exhaust_the_retries() {
    let o = run(
        3 * PART as usize,
        4,
        on_parts(|_| Some(Fault::Status(503, None))),
        None,
        |_| {},
    );
    let err = o.result.unwrap_err();
    assert_eq!((err.code(), err.status()), ("retries_exhausted", Some(503)));
    assert!(o.env.s3.aborted.is_empty(), "kept, to be continued later");
    assert_eq!(o.env.s3.uploads.len(), 1);
}

#[test]
fn abort_stops_every_part_and_aborts_the_upload() {
    let o = run(
        10 * PART as usize,
        4,
        on_parts(|n| (n == 3).then_some(Fault::Abort)),
        None,
        |_| {},
    );
    assert_eq!(o.result.unwrap_err(), UploadError::Aborted);
    assert_eq!(o.env.s3.aborted.len(), 1);
    assert!(o.env.s3.uploads.is_empty(), "no multipart upload left");
    assert!(o.env.s3.objects.is_empty());
}

#[test]
fn an_abort_while_listing_or_completing_aborts_the_upload_too() {
    // An upload of three parts whose caller aborts during `hook`, continuing
    // [`old_upload`] when `resume`, which the store holds when `stored`.
    let aborted_during = |hook: &'static str, resume: bool, stored: bool| {
        run(
            3 * PART as usize,
            2,
            no_faults(),
            resume.then(old_upload),
            move |state| {
                state.s3.abort_during = Some(hook);
                if stored {
                    store_old_upload(state, Default::default());
                }
            },
        )
    };
    let o = aborted_during("listParts", true, true);
    assert_eq!(o.result.unwrap_err(), UploadError::Aborted);
    assert_eq!(o.env.s3.aborted, ["mpu-old"]);
    assert!(o.env.s3.uploads.is_empty(), "no multipart upload left");

    // The store no longer knows it (listParts: null), and the abort comes while a new one
    // is being created: the old one is aborted once, and the new one's id never came.
    let o = aborted_during("createMultipartUpload", true, false);
    assert_eq!(o.result.unwrap_err(), UploadError::Aborted);
    assert_eq!(o.env.s3.aborted, ["mpu-old"]);

    let o = aborted_during("completeMultipartUpload", false, false);
    assert_eq!(o.result.unwrap_err(), UploadError::Aborted);
    assert_eq!(o.env.s3.aborted.len(), 1);
    assert!(o.env.s3.uploads.is_empty(), "no multipart upload left");
    assert!(o.env.s3.objects.is_empty());
}

#[test]
fn an_upload_that_will_not_be_continued_is_aborted() {
    let o = run_with(
        3 * PART as usize,
        2,
        no_faults(),
        None,
        Some(old_upload()),
        |state| store_old_upload(state, Default::default()),
    );
    assert_stored(&o);
    assert_eq!(o.env.s3.aborted, ["mpu-old"]);
    assert_eq!(
        o.env.s3.hooks[..2],
        ["abortMultipartUpload", "createMultipartUpload"]
    );
}

#[test]
fn parts_held_from_before_claim_no_checksum() {
    let size = 3 * PART as usize;
    let file = pseudo_random_bytes(size, size as u64 + 5);
    let o = run(size, 2, no_faults(), Some(old_upload()), move |state| {
        let parts = (1..=3)
            .map(|n: usize| {
                (
                    n as u32,
                    file[(n - 1) * PART as usize..n * PART as usize].to_vec(),
                )
            })
            .collect();
        store_old_upload(state, parts);
    });
    let s = assert_stored(&o);
    assert_eq!(s.resumed_from, size as u64);
    assert!(!o.env.s3.hooks.contains(&"signPart"), "nothing was sent");
    assert_eq!(
        s.checksum, None,
        "whether those parts were verified is not known"
    );
}

#[test]
fn a_resumed_upload_sends_only_the_missing_parts() {
    let size = 10 * PART as usize + 17;
    let file = pseudo_random_bytes(size, size as u64 + 5);
    let id = old_upload();
    let part = |n: usize| file[(n - 1) * PART as usize..n * PART as usize].to_vec();
    let half_part = part(4)[..500].to_vec();
    let o = run(size, 4, no_faults(), Some(id.clone()), move |state| {
        let mut parts = std::collections::BTreeMap::new();
        parts.insert(1, part(1));
        parts.insert(2, part(2));
        // A part of the wrong size (another cut) is not reused.
        parts.insert(4, half_part);
        store_old_upload(state, parts);
    });
    let s = assert_stored(&o);
    assert_eq!(s.resumed_from, 2 * PART);
    assert!(!o.env.s3.hooks.contains(&"createMultipartUpload"));
    assert_eq!(o.env.s3.hooks.first(), Some(&"listParts"));
    let signs = o.env.s3.hooks.iter().filter(|h| **h == "signPart").count();
    assert_eq!(signs, 9, "parts 3 to 11");
    assert!(o.env.reports.iter().any(|p| p.phase == Phase::Resuming));
    // An upload the store no longer knows (listParts answers null): a new one at once, and
    // the old one is aborted, in case the store still holds parts of it.
    let o = run(size, 4, no_faults(), Some(id.clone()), |_| {});
    let s = assert_stored(&o);
    assert_eq!(s.resumed_from, 0);
    assert_eq!(
        &o.env.s3.hooks[..3],
        ["listParts", "abortMultipartUpload", "createMultipartUpload"]
    );
    assert_eq!(o.env.s3.aborted, ["mpu-old"]);
    // A listParts that keeps throwing: a new one once its retries are spent, but the old
    // one is left as it is (the backend may only be down for now).
    let o = run(size, 4, no_faults(), Some(id), |state| {
        state.s3.list_parts_throws = true;
    });
    let s = assert_stored(&o);
    assert_eq!(s.resumed_from, 0);
    let lists = o.env.s3.hooks.iter().filter(|h| **h == "listParts").count();
    assert_eq!(lists, 5, "the first call and its 4 retries");
    assert!(o.env.s3.aborted.is_empty());
    assert!(o.env.s3.hooks.contains(&"createMultipartUpload"));
}

#[test]
fn the_checksum_travels_where_the_signer_put_it() {
    let o = run(3 * PART as usize, 2, no_faults(), None, |state| {
        state.s3.placement = "header"
    });
    assert_eq!(assert_stored(&o).checksum, Some("sha256"));
    let o = run(3 * PART as usize, 2, no_faults(), None, |state| {
        state.s3.placement = "none"
    });
    assert_eq!(
        assert_stored(&o).checksum,
        None,
        "unverified parts are said so"
    );
    // Without a checksum the store cannot refuse a corrupted part: the test S3 stores it,
    // and completion (which checks the parts' SHA-256 here) refuses the upload.
    let o = run(
        3 * PART as usize,
        1,
        on_parts(|n| (n == 1).then_some(Fault::Corrupt)),
        None,
        |state| state.s3.placement = "none",
    );
    assert_eq!(o.result.unwrap_err().code(), "hook_failed");
}
