//! The GCS-style `range` protocol: session creation, chunked PUTs with
//! 308/Range, the 256 KiB rule, status queries, offset and total checks,
//! 256 KiB-aligned persistence of broken bodies (client abort and injected
//! reset), status faults, DELETE with 499, `/info` and CORS.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UNIT: usize = 256 * 1024;

/// POSTs a session and returns its Location.
async fn create_session(ts: &TestServer, base: &str, length: usize, ctype: Option<&str>) -> String {
    let len = length.to_string();
    let mut headers = vec![("X-Upload-Content-Length", len.as_str())];
    if let Some(c) = ctype {
        headers.push(("X-Upload-Content-Type", c));
    }
    let res = send(ts.addr, "POST", &format!("{base}/range/"), &headers, b"").await;
    assert_eq!(res.status, 201, "create failed: {}", res.text());
    res.header("location").expect("Location").to_owned()
}

async fn put_chunk(ts: &TestServer, loc: &str, first: usize, data: &[u8], total: usize) -> Resp {
    let range = format!("bytes {}-{}/{total}", first, first + data.len() - 1);
    send(
        ts.addr,
        "PUT",
        loc,
        &[("Content-Range", range.as_str())],
        data,
    )
    .await
}

async fn query(ts: &TestServer, loc: &str, total: usize) -> Resp {
    let range = format!("bytes */{total}");
    send(
        ts.addr,
        "PUT",
        loc,
        &[("Content-Range", range.as_str())],
        b"",
    )
    .await
}

fn assert_308(res: &Resp, range: Option<&str>) {
    assert_eq!(res.status, 308, "{}", res.text());
    assert_eq!(res.reason, "Resume Incomplete");
    assert_eq!(res.header("range"), range);
    assert_eq!(res.header("location"), None, "a 308 must not redirect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_with_308_and_final_200() {
    let ts = start().await;
    let n = 2 * UNIT + 1000;
    let data = payload(n);
    let loc = create_session(&ts, "", n, Some("text/plain")).await;
    let id = loc.strip_prefix("/range/").expect("relative Location");
    assert_eq!(id.len(), 16, "{loc}");

    // Nothing persisted yet: 308 without Range.
    assert_308(&query(&ts, &loc, n).await, None);
    let i = info(&ts, &loc).await;
    assert_eq!(i["offset"], 0);
    assert_eq!(
        i["metadata"],
        serde_json::json!({"contentType": "text/plain"})
    );

    let res = put_chunk(&ts, &loc, 0, &data[..UNIT], n).await;
    assert_308(&res, Some("bytes=0-262143"));
    assert_308(&query(&ts, &loc, n).await, Some("bytes=0-262143"));
    // `bytes */*` is a status query too.
    let res = send(ts.addr, "PUT", &loc, &[("Content-Range", "bytes */*")], b"").await;
    assert_308(&res, Some("bytes=0-262143"));
    let i = info(&ts, &loc).await;
    assert_eq!(i["offset"], UNIT);
    assert_eq!(i["sha256"], sha256_hex(&data[..UNIT]));
    assert_eq!(i["complete"], false);

    // The last chunk may have any length.
    let res = put_chunk(&ts, &loc, UNIT, &data[UNIT..], n).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("location"), None);
    assert_eq!(
        res.json(),
        serde_json::json!({"size": n, "sha256": sha256_hex(&data)})
    );
    // Afterwards the query and a repeated final chunk both answer 200.
    let res = query(&ts, &loc, n).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["sha256"], sha256_hex(&data));
    let res = put_chunk(&ts, &loc, UNIT, &data[UNIT..], n).await;
    assert_eq!(res.status, 200);
    let i = info(&ts, &loc).await;
    assert_eq!(i["complete"], true);
    assert_eq!(i["size"], n);
    assert_eq!(i["offset"], n);
    assert_eq!(i["sha256"], sha256_hex(&data));
    assert_eq!(
        i["faults"],
        serde_json::json!({"429": 0, "500": 0, "503": 0, "reset": 0, "corrupt": 0})
    );

    // Without Content-Range a PUT carries the whole object.
    let small = payload(10);
    let loc = create_session(&ts, "", 10, None).await;
    let res = send(ts.addr, "PUT", &loc, &[], &small).await;
    assert_eq!(res.status, 200);
    assert_eq!(info(&ts, &loc).await["metadata"], serde_json::json!({}));

    // An empty object is complete from the start.
    let loc = create_session(&ts, "", 0, None).await;
    let res = query(&ts, &loc, 0).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.json(),
        serde_json::json!({"size": 0, "sha256": sha256_hex(b"")})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections() {
    let ts = start_with(Opts {
        max_size: 10 * UNIT as u64,
        ..Opts::default()
    })
    .await;
    // Creation.
    let post = |len: &'static str| async move {
        send(
            ts.addr,
            "POST",
            "/range",
            &[("X-Upload-Content-Length", len)],
            b"",
        )
        .await
        .status
    };
    assert_eq!(post("-1").await, 400);
    assert_eq!(post("abc").await, 400);
    assert_eq!(post("2621441").await, 413);
    assert_eq!(send(ts.addr, "POST", "/range/", &[], b"").await.status, 400);

    let n = 3 * UNIT;
    let data = payload(n);
    let loc = create_session(&ts, "", n, None).await;
    // 256 KiB rule: a non-final chunk must be a multiple of 262144 bytes.
    let res = put_chunk(&ts, &loc, 0, &data[..1000], n).await;
    assert_eq!(res.status, 400);
    assert!(res.text().contains("262144"), "{}", res.text());
    let res = put_chunk(&ts, &loc, 0, &data[..UNIT + 1], n).await;
    assert_eq!(res.status, 400);
    // Must not start after the persisted offset.
    let res = put_chunk(&ts, &loc, UNIT, &data[UNIT..2 * UNIT], n).await;
    assert_eq!(res.status, 400);
    assert!(res.text().contains("persisted"), "{}", res.text());
    // Total must equal X-Upload-Content-Length, for chunks and queries.
    let res = put_chunk(&ts, &loc, 0, &data[..UNIT], n + 1).await;
    assert_eq!(res.status, 400);
    assert_eq!(query(&ts, &loc, n - 1).await.status, 400);
    // Malformed ranges, a range past the total, a total of `*` on a chunk,
    // and a body whose length differs from the range.
    for bad in [
        "bytes 0-1",
        "bytes=0-262143/786432",
        "bytes 9-3/786432",
        "bytes 786431-786432/786432",
        "bytes 0-262143/*",
    ] {
        let res = send(
            ts.addr,
            "PUT",
            &loc,
            &[("Content-Range", bad)],
            &data[..UNIT],
        )
        .await;
        assert_eq!(res.status, 400, "{bad}: {}", res.text());
    }
    let res = send(
        ts.addr,
        "PUT",
        &loc,
        &[("Content-Range", "bytes 0-262143/786432")],
        &data[..1000],
    )
    .await;
    assert_eq!(res.status, 400);
    // Nothing of the above was stored.
    assert_eq!(info(&ts, &loc).await["offset"], 0);
    // Unknown or malformed ids.
    for path in [
        "/range/0123456789abcdef",
        "/range/nope",
        "/faults/none/range/x",
    ] {
        assert_eq!(query(&ts, path, n).await.status, 404, "{path}");
        let res = send(ts.addr, "GET", &format!("{path}/info"), &[], b"").await;
        assert_eq!(res.status, 404, "{path}");
    }
    // A tus id is not a range session and vice versa.
    let tus_loc = create(&ts, "", 5, None).await;
    let tus_id = tus_loc.trim_start_matches("/files/");
    assert_eq!(query(&ts, &format!("/range/{tus_id}"), 5).await.status, 404);
    let range_id = loc.trim_start_matches("/range/");
    assert_eq!(head(&ts, &format!("/files/{range_id}")).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_abort_keeps_256k_aligned_prefix() {
    let ts = start().await;
    let n = 3 * UNIT;
    let data = payload(n);
    let loc = create_session(&ts, "", n, None).await;
    // Announce two units, send 300000 bytes, then close: one unit is kept.
    let mut req = request_bytes(
        ts.addr,
        "PUT",
        &loc,
        &[("Content-Range", "bytes 0-524287/786432")],
        &data[..2 * UNIT],
    );
    req.truncate(req.len() - (2 * UNIT - 300_000));
    let mut stream = TcpStream::connect(ts.addr).await.expect("connect");
    stream.write_all(&req).await.expect("write");
    stream.shutdown().await.expect("shutdown");
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink).await;
    drop(stream);

    let mut offset = serde_json::Value::Null;
    for _ in 0..100 {
        offset = info(&ts, &loc).await["offset"].clone();
        if offset != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(offset, UNIT);
    assert_308(&query(&ts, &loc, n).await, Some("bytes=0-262143"));
    assert_eq!(info(&ts, &loc).await["sha256"], sha256_hex(&data[..UNIT]));
    let on_disk = std::fs::metadata(
        ts.data_dir()
            .join("range")
            .join(format!("{}.bin", loc.trim_start_matches("/range/"))),
    )
    .expect("bin")
    .len();
    assert_eq!(on_disk, UNIT as u64);
    // And the upload resumes from there.
    let res = put_chunk(&ts, &loc, UNIT, &data[UNIT..], n).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["sha256"], sha256_hex(&data));
}

/// One reset on a whole-object PUT; returns what was kept.
async fn reset_once(seed: u64) -> (usize, TestServer, String) {
    let ts = start_with(Opts {
        seed,
        ..Opts::default()
    })
    .await;
    let n = 4 * UNIT + 5;
    let data = payload(n);
    let loc = create_session(&ts, "/faults/reset:1", n, None).await;
    assert!(loc.starts_with("/faults/reset:1/range/"), "{loc}");
    let range = format!("bytes 0-{}/{n}", n - 1);
    let req = request_bytes(ts.addr, "PUT", &loc, &[("Content-Range", &range)], &data);
    let (got, err) = raw_request(ts.addr, &req).await;
    assert_reset(&got, err);
    let i = info(&ts, &loc).await;
    assert_eq!(i["faults"]["reset"], 1);
    let kept = i["offset"].as_u64().expect("offset") as usize;
    assert_eq!(kept % UNIT, 0, "kept {kept}");
    assert!(kept < n);
    assert_eq!(i["sha256"], sha256_hex(&data[..kept]));
    (kept, ts, loc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_keeps_256k_aligned_prefix_and_resumes() {
    let (kept, ts, loc) = reset_once(4).await;
    // Seed 4 cuts past the first unit, so the test shows a real prefix.
    assert!(kept >= UNIT, "kept {kept}");
    let n = 4 * UNIT + 5;
    let data = payload(n);
    // The client asks for the offset on a clean route and resumes.
    let id = loc.rsplit('/').next().unwrap_or_default();
    let plain = format!("/range/{id}");
    let want = format!("bytes=0-{}", kept - 1);
    assert_308(&query(&ts, &plain, n).await, Some(want.as_str()));
    let res = put_chunk(&ts, &plain, kept, &data[kept..], n).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["sha256"], sha256_hex(&data));
    let global = send(ts.addr, "GET", "/__faults", &[], b"").await.json();
    assert_eq!(global["injected"]["reset"], 1);
    // Same seed, same cut.
    assert_eq!(reset_once(4).await.0, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_faults_strike_puts_before_storing() {
    let ts = start().await;
    let n = UNIT + 10;
    let data = payload(n);
    // Creation is never faulted, even on a faulty family.
    let loc = create_session(&ts, "/faults/500:1", n, None).await;
    let id = loc.rsplit('/').next().unwrap_or_default().to_owned();
    let on = |spec: &str| format!("/faults/{spec}/range/{id}");

    let res = put_chunk(&ts, &on("429:1,retry-after:4"), 0, &data[..UNIT], n).await;
    assert_eq!(res.status, 429);
    assert_eq!(res.header("retry-after"), Some("4"));
    assert_eq!(res.header("tus-resumable"), None, "not a tus route");
    assert_eq!(
        put_chunk(&ts, &on("500:1"), 0, &data[..UNIT], n)
            .await
            .status,
        500
    );
    assert_eq!(query(&ts, &on("503:1"), n).await.status, 503);
    let i = info(&ts, &loc).await;
    assert_eq!(i["offset"], 0, "a faulted PUT stores nothing");
    assert_eq!(
        i["faults"],
        serde_json::json!({"429": 1, "500": 1, "503": 1, "reset": 0, "corrupt": 0})
    );
    // Latency applies; the plain route works.
    let t = std::time::Instant::now();
    assert_308(&query(&ts, &on("latency:120"), n).await, None);
    assert!(t.elapsed() >= Duration::from_millis(120));
    // Bandwidth throttles chunk bodies: 256 KiB at 512 KiB/s is 0.5 s.
    let t = std::time::Instant::now();
    assert_308(
        &put_chunk(&ts, &on("bandwidth:512kib"), 0, &data[..UNIT], n).await,
        Some("bytes=0-262143"),
    );
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(
        put_chunk(&ts, &format!("/range/{id}"), UNIT, &data[UNIT..], n)
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_answers_499_then_404() {
    let ts = start().await;
    let loc = create_session(&ts, "", UNIT, None).await;
    let res = send(ts.addr, "DELETE", &loc, &[], b"").await;
    assert_eq!(res.status, 499);
    assert_eq!(res.reason, "Client Closed Request");
    assert_eq!(send(ts.addr, "DELETE", &loc, &[], b"").await.status, 404);
    assert_eq!(query(&ts, &loc, UNIT).await.status, 404);
    let res = send(ts.addr, "GET", &format!("{loc}/info"), &[], b"").await;
    assert_eq!(res.status, 404);
    let id = loc.trim_start_matches("/range/");
    assert!(!ts
        .data_dir()
        .join("range")
        .join(format!("{id}.bin"))
        .exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_exposed_headers() {
    let ts = start().await;
    let loc = create_session(&ts, "/faults/none", UNIT + 1, None).await;
    let res = send(
        ts.addr,
        "OPTIONS",
        &loc,
        &[
            ("Origin", "http://localhost:9"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "content-range,x-anything"),
        ],
        b"",
    )
    .await;
    assert!(res.status == 200 || res.status == 204, "{}", res.status);
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    let methods = res
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(
        methods.contains("PUT") && methods.contains("DELETE"),
        "{methods}"
    );
    let allowed = res
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(allowed.contains("x-anything"), "{allowed}");
    assert_eq!(res.header("tus-resumable"), None);
    assert_eq!(res.header("tus-version"), None);

    let data = payload(UNIT);
    let range = format!("bytes 0-{}/{}", UNIT - 1, UNIT + 1);
    let res = send(
        ts.addr,
        "PUT",
        &loc,
        &[
            ("Content-Range", range.as_str()),
            ("Origin", "http://localhost:9"),
        ],
        &data,
    )
    .await;
    assert_eq!(res.status, 308);
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    let exposed = res
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in ["range", "location", "retry-after", "etag"] {
        assert!(
            exposed.split(',').any(|e| e.trim() == h),
            "{h} not in {exposed}"
        );
    }
}

/// A chunk that starts before the persisted offset (a browser resending a PUT whose
/// connection dropped) is accepted: the bytes the server already has are ignored, as GCS
/// does. One that starts after it, or ends before it, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_chunks_skip_persisted_bytes() {
    let ts = start().await;
    let n = 3 * UNIT + 10;
    let data = payload(n);
    let loc = create_session(&ts, "", n, None).await;
    assert_308(
        &put_chunk(&ts, &loc, 0, &data[..UNIT], n).await,
        Some("bytes=0-262143"),
    );
    // Resend from 0 with two units: the first is skipped, the second stored.
    let res = put_chunk(&ts, &loc, 0, &data[..2 * UNIT], n).await;
    assert_308(&res, Some("bytes=0-524287"));
    // Entirely before the offset: nothing new, refused.
    assert_eq!(put_chunk(&ts, &loc, 0, &data[..UNIT], n).await.status, 400);
    // The rest, overlapping one unit, finishes the object.
    let res = put_chunk(&ts, &loc, UNIT, &data[UNIT..], n).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(info(&ts, &loc).await["sha256"], sha256_hex(&data));
}
