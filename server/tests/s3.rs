//! The `put` protocol against a real Garage cluster: `POST /presign` signs (with rusty-s3)
//! a PUT that Garage itself checks (signed type, tagging and length; expiry; signature),
//! the object lands in Garage and `GET /s3/objects/{key}/info` reads it back; refusals
//! and validation; route families in the URL; the bucket's CORS for browser PUTs.

mod common;

use common::*;
use md5::{Digest as _, Md5};
use serde_json::json;

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn presign(ts: &TestServer, base: &str, body: serde_json::Value) -> serde_json::Value {
    let res = post_json(ts, &format!("{base}/presign"), &body).await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()
}

async fn object_info(ts: &TestServer, key: &str) -> Resp {
    send(ts.addr, "GET", &format!("/s3/objects/{key}/info"), &[], b"").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_put_lands_in_garage() {
    let ts = start_with_garage(None).await;
    let garage = garage::shared();
    let data = payload(100_000);
    let p = presign(
        &ts,
        "",
        json!({"fileName": "été.bin", "fileType": "application/x-test", "fileSize": data.len(),
               "headers": {"X-Amz-Meta-Owner": "alice"}}),
    )
    .await;
    let key = p["key"].as_str().expect("key").to_owned();
    assert_eq!(key.len(), 32, "a random key, not the name");
    assert_eq!(p["method"], "PUT");
    assert_eq!(
        p["headers"],
        json!({"content-type": "application/x-test", "x-amz-meta-owner": "alice", "x-amz-tagging": "chunkup=1"})
    );
    let url = p["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!("{}{}/{key}?", garage.endpoints[0], garage.bucket)),
        "signed for the public endpoint (here Garage itself): {url}"
    );
    assert!(url.contains("X-Amz-Signature="), "{url}");
    assert!(!url.contains(&garage.secret));
    assert!(p["expires"].as_u64().expect("expires") > 0);

    assert_eq!(
        object_info(&ts, &key).await.status,
        404,
        "nothing before the PUT"
    );
    let headers = header_pairs(&p["headers"]);
    let put = send_url("PUT", url, &as_refs(&headers), &data).await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(
        put.header("etag"),
        Some(format!("\"{}\"", md5_hex(&data)).as_str())
    );

    let info = object_info(&ts, &key).await;
    assert_eq!(info.status, 200, "{}", info.text());
    let info = info.json();
    assert_eq!(info["size"], data.len());
    assert_eq!(info["sha256"], sha256_hex(&data));
    assert_eq!(info["md5"], md5_hex(&data));
    assert_eq!(info["contentType"], "application/x-test");

    // The same URL replaces the object, as on S3.
    let other = payload(100_000).iter().map(|b| b ^ 1).collect::<Vec<u8>>();
    assert_eq!(
        send_url("PUT", url, &as_refs(&headers), &other)
            .await
            .status,
        200
    );
    assert_eq!(
        object_info(&ts, &key).await.json()["sha256"],
        sha256_hex(&other)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_enforces_what_was_signed() {
    let ts = start_with_garage(None).await;
    let data = payload(1000);
    let p = presign(
        &ts,
        "",
        json!({"fileName": "a.png", "fileType": "image/png", "fileSize": 1000}),
    )
    .await;
    let url = p["url"].as_str().expect("url");
    let key = p["key"].as_str().expect("key");
    let good = vec![
        ("content-type", "image/png"),
        ("x-amz-tagging", "chunkup=1"),
    ];
    let without = |name: &str| {
        good.iter()
            .copied()
            .filter(|(n, _)| *n != name)
            .collect::<Vec<_>>()
    };
    let refused = [
        (
            "no tagging",
            send_url("PUT", url, &without("x-amz-tagging"), &data).await,
        ),
        (
            "other tagging",
            send_url(
                "PUT",
                url,
                &[("content-type", "image/png"), ("x-amz-tagging", "x=1")],
                &data,
            )
            .await,
        ),
        (
            "other type",
            send_url(
                "PUT",
                url,
                &[
                    ("content-type", "image/gif"),
                    ("x-amz-tagging", "chunkup=1"),
                ],
                &data,
            )
            .await,
        ),
        (
            "shorter body",
            send_url("PUT", url, &good, &data[..999]).await,
        ),
        ("tampered signature", {
            let bad = url.replace("X-Amz-Signature=", "X-Amz-Signature=0");
            send_url("PUT", &bad, &good, &data).await
        }),
        ("another key", {
            let other = url.replacen(key, &"0".repeat(32), 1);
            send_url("PUT", &other, &good, &data).await
        }),
    ];
    for (what, res) in &refused {
        assert!(
            matches!(res.status, 400 | 403),
            "{what}: {} {}",
            res.status,
            res.text()
        );
    }
    assert_eq!(object_info(&ts, key).await.status, 404, "nothing stored");
    assert_eq!(send_url("PUT", url, &good, &data).await.status, 200);
    assert_eq!(
        object_info(&ts, key).await.json()["sha256"],
        sha256_hex(&data)
    );
}

/// Garage refuses an expired presigned URL before reading the body. Note the status:
/// Garage 2.5 answers 400 `InvalidRequest` ("Date is too old"), where AWS answers 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_urls_are_refused() {
    let ts = start_with_garage(None).await;
    let data = payload(10);
    let p = presign(
        &ts,
        "",
        json!({"fileName": "a.txt", "fileType": "", "fileSize": 10, "expired": true}),
    )
    .await;
    assert!(p["expires"].as_u64().expect("expires") < chunkup_server::store_s3::now_unix());
    assert_eq!(
        p["headers"],
        json!({"x-amz-tagging": "chunkup=1"}),
        "no type signed"
    );
    let res = send_url(
        "PUT",
        p["url"].as_str().expect("url"),
        &as_refs(&header_pairs(&p["headers"])),
        &data,
    )
    .await;
    assert_eq!(
        (res.status, s3_code(&res).as_str()),
        (400, "InvalidRequest"),
        "{}",
        res.text()
    );
    assert!(res.text().contains("Date is too old"), "{}", res.text());

    // A short lifetime runs out.
    let p = presign(
        &ts,
        "",
        json!({"fileName": "a.txt", "fileSize": 10, "ttlSeconds": 1}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let res = send_url(
        "PUT",
        p["url"].as_str().expect("url"),
        &as_refs(&header_pairs(&p["headers"])),
        &data,
    )
    .await;
    assert_eq!(res.status, 400, "{}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presign_validation() {
    let ts = start_with_garage(None).await;
    let status = |body: serde_json::Value| {
        let ts = &ts;
        async move { post_json(ts, "/presign", &body).await.status }
    };
    assert_eq!(
        status(json!({"fileSize": 1})).await,
        400,
        "fileName required"
    );
    assert_eq!(
        status(json!({"fileName": "a"})).await,
        400,
        "fileSize required"
    );
    assert_eq!(status(json!({"fileName": "a", "fileSize": -1})).await, 400);
    assert_eq!(
        status(json!({"fileName": "a", "fileSize": 1, "app": {}})).await,
        400,
        "unknown field"
    );
    assert_eq!(
        status(json!({"fileName": "a", "fileSize": 2u64 << 30})).await,
        413
    );
    assert_eq!(
        status(json!({"fileName": "a", "fileSize": 1, "ttlSeconds": 0})).await,
        400
    );
    assert_eq!(
        status(json!({"fileName": "a", "fileSize": 1, "ttlSeconds": 604_801})).await,
        400
    );
    for headers in [
        json!({"content-length": "1"}),
        json!({"host": "x"}),
        json!({"x_y": "1"}),
        json!({"x-y": "a\nb"}),
        json!({"content-type": "text/plain"}),
    ] {
        assert_eq!(
            status(
                json!({"fileName": "a", "fileSize": 1, "fileType": "image/png", "headers": headers})
            )
            .await,
            400,
            "{headers}"
        );
    }
    let bad = send(ts.addr, "POST", "/presign", &[], b"not json").await;
    assert_eq!(bad.status, 400);
    assert!(bad.json()["error"].as_str().is_some());
    assert_eq!(object_info(&ts, "not-a-key").await.status, 404);

    // Without a store: 503, saying what to do.
    let bare = start().await;
    let res = post_json(&bare, "/presign", &json!({"fileName": "a", "fileSize": 1})).await;
    assert_eq!(res.status, 503);
    assert!(res.text().contains("--s3-endpoint"), "{}", res.text());
    assert_eq!(object_info(&bare, &"0".repeat(32)).await.status, 503);
}

/// A route family puts its prefix in front of the URL's path, after signing; Garage
/// itself does not know it (a chunkup-server proxy in front strips it: `proxy.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_families_prefix_the_url() {
    let ts = start_with_garage(Some("http://127.0.0.1:9/")).await;
    let p = presign(
        &ts,
        "/faults/500%3A1",
        json!({"fileName": "a", "fileSize": 1}),
    )
    .await;
    let url = p["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!(
            "http://127.0.0.1:9/faults/500%3A1/chunkup/{}?",
            p["key"].as_str().expect("key")
        )),
        "{url}"
    );
    assert_eq!(
        post_json(
            &ts,
            "/faults/bogus/presign",
            &json!({"fileName": "a", "fileSize": 1})
        )
        .await
        .status,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garage_answers_browser_preflights_and_exposes_the_etag() {
    let ts = start_with_garage(None).await;
    let p = presign(
        &ts,
        "",
        json!({"fileName": "a", "fileType": "image/png", "fileSize": 3}),
    )
    .await;
    let url = p["url"].as_str().expect("url");
    let pre = send_url(
        "OPTIONS",
        url,
        &[
            ("Origin", "http://127.0.0.1:8080"),
            ("Access-Control-Request-Method", "PUT"),
            (
                "Access-Control-Request-Headers",
                "content-type,x-amz-tagging",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(pre.status, 200, "{}", pre.text());
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    assert!(pre
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("PUT")));
    let put = send_url(
        "PUT",
        url,
        &[
            ("Origin", "http://127.0.0.1:8080"),
            ("content-type", "image/png"),
            ("x-amz-tagging", "chunkup=1"),
        ],
        b"abc",
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(put.header("access-control-allow-origin"), Some("*"));
    let exposed = put
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.contains("etag"), "{exposed}");
}
