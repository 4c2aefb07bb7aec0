//! The `s3` protocol's backend against a real Garage cluster: create, sign (checksum in
//! the query, as a header, or none), parts PUT straight to Garage, list, complete, abort;
//! Garage refusing a wrong checksum in both placements (and the client's list of
//! checksums at completion), an expired part URL, abort leaving no multipart upload, a
//! node stopped mid-upload; every endpoint's validation. Each upload's stored object is
//! compared with the file by SHA-256.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::garage::Garage;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// Parts of 5 MiB, S3's smallest non-final part (Garage does not insist, AWS does).
const PART: usize = 5 << 20;

fn sum_b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(data))
}

async fn ok_json(ts: &TestServer, path: &str, body: Value) -> Value {
    let res = post_json(ts, path, &body).await;
    assert_eq!(res.status, 200, "{path}: {}", res.text());
    res.json()
}

async fn create(ts: &TestServer, extra: Value) -> (String, String) {
    let mut body = json!({"name": "vidéo.mp4", "type": "video/mp4", "size": 12 << 20});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let v = ok_json(ts, "/s3/multipart", body).await;
    let upload_id = v["uploadId"].as_str().expect("uploadId").to_owned();
    let key = v["key"].as_str().expect("key").to_owned();
    assert_eq!(key.len(), 32);
    (upload_id, key)
}

async fn sign(
    ts: &TestServer,
    base: &str,
    upload: &(String, String),
    n: u64,
    data: &[u8],
    extra: Value,
) -> Value {
    let mut body = json!({"uploadId": upload.0, "key": upload.1, "partNumber": n,
                          "size": data.len(), "checksumSHA256": sum_b64(data)});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    ok_json(ts, &format!("{base}/s3/multipart/sign"), body).await
}

async fn put_part(signed: &Value, data: &[u8], extra: &[(&str, &str)]) -> Resp {
    let mut headers = header_pairs(&signed["headers"]);
    headers.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    send_url(
        "PUT",
        signed["url"].as_str().expect("url"),
        &as_refs(&headers),
        data,
    )
    .await
}

async fn list(ts: &TestServer, upload: &(String, String)) -> Resp {
    post_json(
        ts,
        "/s3/multipart/list",
        &json!({"uploadId": upload.0, "key": upload.1}),
    )
    .await
}

async fn uploads_in_progress(ts: &TestServer) -> Vec<String> {
    let res = send(ts.addr, "GET", "/s3/multipart/uploads", &[], b"").await;
    assert_eq!(res.status, 200, "{}", res.text());
    let v = res.json();
    assert_eq!(v["bucket"], "chunkup");
    v["uploads"]
        .as_array()
        .expect("uploads")
        .iter()
        .map(|u| u["key"].as_str().expect("key").to_owned())
        .collect()
}

async fn info(ts: &TestServer, key: &str) -> Resp {
    send(ts.addr, "GET", &format!("/s3/objects/{key}/info"), &[], b"").await
}

/// Uploads `file` in parts (placement by part), completes, and checks the stored object.
async fn upload_all(ts: &TestServer, file: &[u8], placements: &[&str]) -> String {
    let upload = create(ts, json!({"size": file.len()})).await;
    let mut done = Vec::new();
    for (i, part) in file.chunks(PART).enumerate() {
        let n = i as u64 + 1;
        let placement = placements[i % placements.len()];
        let signed = sign(ts, "", &upload, n, part, json!({"placement": placement})).await;
        let res = put_part(&signed, part, &[]).await;
        assert_eq!(res.status, 200, "part {n} ({placement}): {}", res.text());
        let etag = res.header("etag").expect("ETag").to_owned();
        done.push(json!({"partNumber": n, "etag": etag, "checksumSHA256": sum_b64(part)}));
    }
    let listed = list(ts, &upload).await.json();
    assert_eq!(listed.as_array().map(Vec::len), Some(done.len()));
    let v = ok_json(
        ts,
        "/s3/multipart/complete",
        json!({"uploadId": upload.0, "key": upload.1, "parts": done}),
    )
    .await;
    let location = v["location"].as_str().expect("location");
    assert!(
        location.ends_with(&format!("/chunkup/{}", upload.1)),
        "{location}"
    );
    assert!(!location.contains('?'));
    let stored = info(ts, &upload.1).await.json();
    assert_eq!(stored["size"], file.len());
    assert_eq!(stored["sha256"], sha256_hex(file));
    assert_eq!(stored["contentType"], "video/mp4");
    upload.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_in_both_placements_make_the_object() {
    let ts = start_with_garage(None).await;
    let file = payload(2 * PART + 12_345);
    let key = upload_all(&ts, &file, &["query", "header", "query"]).await;
    assert!(
        !uploads_in_progress(&ts).await.contains(&key),
        "completed, so not in progress"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_go_up_in_parallel_and_list_reports_them() {
    let ts = start_with_garage(None).await;
    let file = payload(3 * PART);
    let upload = create(
        &ts,
        json!({"size": file.len(), "metadata": {"conversationId": "c-1"}}),
    )
    .await;
    let mut tasks = Vec::new();
    for (i, part) in file.chunks(PART).enumerate().rev() {
        let signed = sign(&ts, "", &upload, i as u64 + 1, part, json!({})).await;
        assert!(
            signed["headers"].as_object().is_some_and(|h| h.is_empty()),
            "query placement by default"
        );
        assert!(signed["url"]
            .as_str()
            .is_some_and(|u| u.contains("x-amz-checksum-sha256=")));
        let part = part.to_vec();
        tasks.push(tokio::spawn(
            async move { put_part(&signed, &part, &[]).await },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").status, 200);
    }
    let listed = list(&ts, &upload).await.json();
    let parts = listed.as_array().expect("parts");
    assert_eq!(parts.len(), 3);
    for (i, p) in parts.iter().enumerate() {
        let chunk = &file[i * PART..(i + 1) * PART];
        assert_eq!(p["partNumber"], i + 1, "sorted");
        assert_eq!(p["size"], PART);
        assert!(p["etag"].as_str().is_some_and(|e| e.starts_with('"')));
        assert_eq!(
            p["checksumSHA256"],
            sum_b64(chunk),
            "the store kept the verified sum"
        );
    }
    assert!(uploads_in_progress(&ts).await.contains(&upload.1));
    // Resume: only what the list lacks is sent again; here nothing.
    let done: Vec<Value> = parts
        .iter()
        .map(|p| json!({"partNumber": p["partNumber"], "etag": p["etag"], "checksumSHA256": p["checksumSHA256"]}))
        .collect();
    ok_json(
        &ts,
        "/s3/multipart/complete",
        json!({"uploadId": upload.0, "key": upload.1, "parts": done}),
    )
    .await;
    assert_eq!(
        info(&ts, &upload.1).await.json()["sha256"],
        sha256_hex(&file)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_refuses_a_wrong_checksum_in_either_placement() {
    let ts = start_with_garage(None).await;
    let upload = create(&ts, json!({})).await;
    let part = payload(100_000);
    let mut corrupted = part.clone();
    corrupted[77_777] ^= 0xff;
    for placement in ["query", "header"] {
        let signed = sign(&ts, "", &upload, 1, &part, json!({"placement": placement})).await;
        let res = put_part(&signed, &corrupted, &[]).await;
        assert_eq!(res.status, 400, "{placement}: {}", res.text());
        assert!(
            matches!(s3_code(&res).as_str(), "InvalidDigest" | "BadDigest"),
            "{placement}: {}",
            res.text()
        );
        assert_eq!(
            res.header("access-control-allow-origin"),
            Some("*"),
            "readable by a page"
        );
    }
    assert_eq!(list(&ts, &upload).await.json(), json!([]), "nothing kept");

    // The checksum travels where the signer put it: in the query, the same header sent
    // as well is refused; signed as a header, it must be sent.
    let signed = sign(&ts, "", &upload, 1, &part, json!({})).await;
    let sum = sum_b64(&part);
    let both = put_part(&signed, &part, &[("x-amz-checksum-sha256", sum.as_str())]).await;
    assert_eq!(both.status, 400, "{}", both.text());
    let signed = sign(&ts, "", &upload, 1, &part, json!({"placement": "header"})).await;
    let url = signed["url"].as_str().expect("url");
    let missing = send_url("PUT", url, &[], &part).await;
    assert!(matches!(missing.status, 400 | 403), "{}", missing.text());
    assert_eq!(put_part(&signed, &part, &[]).await.status, 200);

    // At completion the store compares the client's sums with the ones it kept.
    let etag = list(&ts, &upload).await.json()[0]["etag"].clone();
    let wrong = post_json(
        &ts,
        "/s3/multipart/complete",
        &json!({"uploadId": upload.0, "key": upload.1,
                "parts": [{"partNumber": 1, "etag": etag, "checksumSHA256": sum_b64(b"other")}]}),
    )
    .await;
    assert_eq!(wrong.status, 400, "{}", wrong.text());
    assert_eq!(wrong.json()["code"], "InvalidDigest");
    let bad_etag = post_json(
        &ts,
        "/s3/multipart/complete",
        &json!({"uploadId": upload.0, "key": upload.1,
                "parts": [{"partNumber": 1, "etag": "\"00\"", "checksumSHA256": sum}]}),
    )
    .await;
    assert_eq!(
        (bad_etag.status, bad_etag.json()["code"].clone()),
        (400, json!("InvalidPart"))
    );
    ok_json(
        &ts,
        "/s3/multipart/complete",
        json!({"uploadId": upload.0, "key": upload.1,
               "parts": [{"partNumber": 1, "etag": etag, "checksumSHA256": sum}]}),
    )
    .await;
    assert_eq!(
        info(&ts, &upload.1).await.json()["sha256"],
        sha256_hex(&part)
    );
}

/// An upload created with `checksum: "none"` takes parts without any checksum (unverified),
/// and completes even when the client lists sums (the store kept none to compare).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_without_checksums() {
    let ts = start_with_garage(None).await;
    let upload = create(&ts, json!({"checksum": "none", "type": ""})).await;
    let part = payload(1000);
    let signed = sign(&ts, "", &upload, 1, &part, json!({"placement": "none"})).await;
    assert!(!signed["url"].as_str().expect("url").contains("checksum"));
    let res = put_part(&signed, &part, &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let listed = list(&ts, &upload).await.json();
    assert!(listed[0].get("checksumSHA256").is_none(), "{listed}");
    ok_json(
        &ts,
        "/s3/multipart/complete",
        json!({"uploadId": upload.0, "key": upload.1,
               "parts": [{"partNumber": 1, "etag": listed[0]["etag"], "checksumSHA256": sum_b64(&part)}]}),
    )
    .await;
    assert_eq!(
        info(&ts, &upload.1).await.json()["sha256"],
        sha256_hex(&part)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_part_urls_are_refused() {
    let ts = start_with_garage(None).await;
    let upload = create(&ts, json!({})).await;
    let part = payload(1000);
    let signed = sign(&ts, "", &upload, 1, &part, json!({"expired": true})).await;
    let res = put_part(&signed, &part, &[]).await;
    // Garage 2.5: 400 InvalidRequest "Date is too old" (AWS: 403 AccessDenied).
    assert_eq!(
        (res.status, s3_code(&res).as_str()),
        (400, "InvalidRequest"),
        "{}",
        res.text()
    );
    let short = sign(&ts, "", &upload, 1, &part, json!({"expiresIn": 1})).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(put_part(&short, &part, &[]).await.status, 400);
    assert_eq!(list(&ts, &upload).await.json(), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_leaves_no_multipart_upload() {
    let ts = start_with_garage(None).await;
    let upload = create(&ts, json!({})).await;
    let part = payload(1000);
    let signed = sign(&ts, "", &upload, 1, &part, json!({})).await;
    assert_eq!(put_part(&signed, &part, &[]).await.status, 200);
    assert!(uploads_in_progress(&ts).await.contains(&upload.1));
    let res = post_json(
        &ts,
        "/s3/multipart/abort",
        &json!({"uploadId": upload.0, "key": upload.1}),
    )
    .await;
    assert_eq!((res.status, res.json()), (200, json!({})));
    assert!(!uploads_in_progress(&ts).await.contains(&upload.1));
    let gone = list(&ts, &upload).await;
    assert_eq!(
        (gone.status, gone.json()["code"].clone()),
        (404, json!("NoSuchUpload"))
    );
    assert_eq!(
        put_part(&signed, &part, &[]).await.status,
        404,
        "no part after an abort"
    );
    assert_eq!(info(&ts, &upload.1).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_validates() {
    let ts = start_with_garage(None).await;
    let upload = create(&ts, json!({})).await;
    let key = upload.1.clone();
    let id = upload.0.clone();
    let sum = sum_b64(b"x");
    let cases = [
        ("/s3/multipart", json!({"type": "a/b", "size": 1})),
        (
            "/s3/multipart",
            json!({"name": "a", "size": 1, "checksum": "md5"}),
        ),
        (
            "/s3/multipart",
            json!({"name": "a", "size": 1, "metadata": {"a b": "c"}}),
        ),
        (
            "/s3/multipart",
            json!({"name": "a", "size": 1, "metadata": {"filename": "c"}}),
        ),
        (
            "/s3/multipart",
            json!({"name": "a", "size": 1, "type": "a\nb"}),
        ),
        ("/s3/multipart", json!({"name": "a", "size": 1, "extra": 1})),
        (
            "/s3/multipart/sign",
            json!({"uploadId": id, "key": "k", "partNumber": 1, "size": 1, "checksumSHA256": sum}),
        ),
        (
            "/s3/multipart/sign",
            json!({"uploadId": "", "key": key, "partNumber": 1, "size": 1, "checksumSHA256": sum}),
        ),
        (
            "/s3/multipart/sign",
            json!({"uploadId": id, "key": key, "partNumber": 0, "size": 1, "checksumSHA256": sum}),
        ),
        (
            "/s3/multipart/sign",
            json!({"uploadId": id, "key": key, "partNumber": 10001, "size": 1, "checksumSHA256": sum}),
        ),
        (
            "/s3/multipart/sign",
            json!({"uploadId": id, "key": key, "partNumber": 1, "size": 6u64 << 30, "checksumSHA256": sum}),
        ),
        (
            "/s3/multipart/sign",
            json!({"uploadId": id, "key": key, "partNumber": 1, "size": 1}),
        ),
        (
            "/s3/multipart/sign",
            json!({"uploadId": id, "key": key, "partNumber": 1, "size": 1, "checksumSHA256": "abc"}),
        ),
        (
            "/s3/multipart/sign",
            json!({"uploadId": id, "key": key, "partNumber": 1, "size": 1, "checksumSHA256": sum, "placement": "body"}),
        ),
        (
            "/s3/multipart/sign",
            json!({"uploadId": id, "key": key, "partNumber": 1, "size": 1, "checksumSHA256": sum, "expiresIn": 0}),
        ),
        (
            "/s3/multipart/sign",
            json!({"uploadId": id, "key": key, "partNumber": 1, "size": 1, "checksumSHA256": sum, "expiresIn": 604_801}),
        ),
        ("/s3/multipart/list", json!({"uploadId": id})),
        (
            "/s3/multipart/complete",
            json!({"uploadId": id, "key": key, "parts": []}),
        ),
        (
            "/s3/multipart/complete",
            json!({"uploadId": id, "key": key, "parts": [{"partNumber": 1, "etag": ""}]}),
        ),
        ("/s3/multipart/abort", json!({"key": key})),
    ];
    for (path, body) in cases {
        let res = post_json(&ts, path, &body).await;
        assert_eq!(res.status, 400, "{path} {body}: {}", res.text());
        assert!(res.json()["error"].as_str().is_some());
    }
    let big = post_json(
        &ts,
        "/s3/multipart",
        &json!({"name": "a", "size": 2u64 << 30}),
    )
    .await;
    assert_eq!(big.status, 413, "above --max-size");
    // Unknown uploads: the store's own 404.
    let unknown = (
        id.replace(|c: char| c.is_ascii_hexdigit(), "0"),
        key.clone(),
    );
    let res = list(&ts, &unknown).await;
    assert_eq!(
        (res.status, res.json()["code"].clone()),
        (404, json!("NoSuchUpload")),
        "{}",
        res.text()
    );
    assert_eq!(info(&ts, &"f".repeat(32)).await.status, 404);
    assert_eq!(info(&ts, "..").await.status, 404);

    // `null` counts as absent.
    let nulls = post_json(
        &ts,
        "/s3/multipart",
        &json!({"name": "a", "type": null, "size": 1, "metadata": null, "checksum": null}),
    )
    .await;
    assert_eq!(nulls.status, 200, "{}", nulls.text());
    let v = nulls.json();
    let signed = post_json(
        &ts,
        "/s3/multipart/sign",
        &json!({"uploadId": v["uploadId"], "key": v["key"], "partNumber": 1, "size": 1,
                "checksumSHA256": sum, "placement": null, "expiresIn": null, "expired": null}),
    )
    .await;
    assert_eq!(signed.status, 200, "{}", signed.text());
    let presigned = post_json(
        &ts,
        "/presign",
        &json!({"fileName": "a", "fileSize": 1, "fileType": null, "ttlSeconds": null, "expired": null, "headers": null}),
    )
    .await;
    assert_eq!(presigned.status, 200, "{}", presigned.text());

    // Without a store: every endpoint answers 503.
    let bare = start().await;
    for path in [
        "/s3/multipart",
        "/s3/multipart/sign",
        "/s3/multipart/list",
        "/s3/multipart/complete",
        "/s3/multipart/abort",
    ] {
        assert_eq!(
            post_json(&bare, path, &json!({})).await.status,
            503,
            "{path}"
        );
    }
    assert_eq!(
        send(bare.addr, "GET", "/s3/multipart/uploads", &[], b"")
            .await
            .status,
        503
    );
}

/// CORS like the rest of the server on the JSON endpoints (same-origin for the demo, but
/// the test runner's page is on another origin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_endpoints_allow_cross_origin_pages() {
    let ts = start_with_garage(None).await;
    let pre = send(
        ts.addr,
        "OPTIONS",
        "/s3/multipart/sign",
        &[
            ("Origin", "http://x"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "content-type"),
        ],
        b"",
    )
    .await;
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    let res = send(
        ts.addr,
        "POST",
        "/s3/multipart",
        &[("Origin", "http://x")],
        br#"{"name":"a","size":1}"#,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
}

/// A Garage node stopped mid-upload (SIGKILL, as a crash): with replication factor 3 the
/// other two keep quorum, the upload completes and the object is intact. Node 0 (the one
/// the server talks to) stays up; the node stopped is another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_mid_upload() {
    let cluster = tokio::task::spawn_blocking(|| Garage::start(3))
        .await
        .expect("cluster");
    let ts = start_with(Opts {
        store: Some(cluster.store_config(None)),
        ..Opts::default()
    })
    .await;
    let file = payload(3 * PART + 1);
    let upload = create(&ts, json!({"size": file.len()})).await;
    let chunks: Vec<&[u8]> = file.chunks(PART).collect();
    let mut done = Vec::new();
    for (i, part) in chunks.iter().enumerate() {
        if i == 1 {
            let c = &cluster;
            tokio::task::block_in_place(|| c.stop_node(2));
        }
        let n = i as u64 + 1;
        let signed = sign(&ts, "", &upload, n, part, json!({})).await;
        let res = put_part(&signed, part, &[]).await;
        assert_eq!(res.status, 200, "part {n}: {}", res.text());
        done.push(
            json!({"partNumber": n, "etag": res.header("etag"), "checksumSHA256": sum_b64(part)}),
        );
    }
    ok_json(
        &ts,
        "/s3/multipart/complete",
        json!({"uploadId": upload.0, "key": upload.1, "parts": done}),
    )
    .await;
    assert_eq!(
        info(&ts, &upload.1).await.json()["sha256"],
        sha256_hex(&file)
    );
    // Back again, it rejoins and the object is still whole.
    tokio::task::block_in_place(|| {
        cluster.start_node(2);
        cluster.wait_healthy(2);
    });
    assert_eq!(
        info(&ts, &upload.1).await.json()["sha256"],
        sha256_hex(&file)
    );
    drop(ts);
    tokio::task::block_in_place(|| drop(cluster));
}
