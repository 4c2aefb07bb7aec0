//! The S3-style presigned PUT: presigning, the PUT checks (signature,
//! expiry, Content-Type, signed headers, length), ETag, replacement, faults
//! (a reset stores nothing), `/info`, CORS, and the Rust API with its
//! notification hook.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use chunkup_server::presign::{self, PresignRequest, UploadOutcome};
use common::*;
use md5::{Digest as _, Md5};
use serde_json::json;

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// POSTs a presign request and returns the JSON answer.
async fn presign_json(ts: &TestServer, base: &str, body: serde_json::Value) -> serde_json::Value {
    let res = send(
        ts.addr,
        "POST",
        &format!("{base}/presign"),
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(res.status, 200, "presign failed: {}", res.text());
    res.json()
}

/// The request target of a presigned URL (our client speaks to `addr`).
fn target_of(ts: &TestServer, url: &str) -> String {
    let origin = format!("http://{}", ts.addr);
    url.strip_prefix(&origin)
        .unwrap_or_else(|| panic!("{url} is not absolute on {origin}"))
        .to_owned()
}

/// The headers a presign answer says to send.
fn signed_headers(p: &serde_json::Value) -> Vec<(String, String)> {
    p["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned()))
        .collect()
}

async fn put(ts: &TestServer, path: &str, headers: &[(String, String)], body: &[u8]) -> Resp {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    send(ts.addr, "PUT", path, &h, body).await
}

fn without(headers: &[(String, String)], name: &str) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case(name))
        .cloned()
        .collect()
}

fn with(headers: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut h = without(headers, name);
    h.push((name.to_owned(), value.to_owned()));
    h
}

async fn s3_info(ts: &TestServer, key: &str) -> serde_json::Value {
    let res = send(ts.addr, "GET", &format!("/s3/{key}/info"), &[], b"").await;
    assert_eq!(res.status, 200, "info failed: {}", res.text());
    res.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presign_put_etag_info_and_replace() {
    let ts = start().await;
    let data = payload(300_000);
    let p = presign_json(
        &ts,
        "",
        json!({"fileName": "../../evil.txt", "fileType": "text/plain", "fileSize": data.len()}),
    )
    .await;
    let key = p["key"].as_str().expect("key").to_owned();
    assert_eq!(key.len(), 32);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(p["method"], "PUT");
    assert_eq!(
        p["headers"],
        json!({"content-type": "text/plain", "x-amz-tagging": "chunkup=1"})
    );
    let url = p["url"].as_str().expect("url");
    let path = target_of(&ts, url);
    assert!(path.starts_with(&format!("/s3/{key}?X-Expires=")), "{path}");
    assert!(path.contains("&X-SignedHeaders=content-type;x-amz-tagging&X-Signature="));
    let expires = p["expires"].as_u64().expect("expires");
    let now = presign::now_unix();
    assert!((now + 299..=now + 301).contains(&expires), "{expires}");

    // Nothing stored yet.
    let i = s3_info(&ts, &key).await;
    assert_eq!(i["complete"], false);
    assert_eq!(i["etag"], serde_json::Value::Null);
    assert_eq!(i["sha256"], sha256_hex(b""));

    let headers = signed_headers(&p);
    let res = put(&ts, &path, &headers, &data).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let etag = format!("\"{}\"", md5_hex(&data));
    assert_eq!(res.header("etag"), Some(etag.as_str()));

    let i = s3_info(&ts, &key).await;
    assert_eq!(i["size"], data.len());
    assert_eq!(i["offset"], data.len());
    assert_eq!(i["complete"], true);
    assert_eq!(i["sha256"], sha256_hex(&data));
    assert_eq!(i["md5"], md5_hex(&data));
    assert_eq!(i["etag"], etag);
    assert_eq!(
        i["metadata"],
        json!({"fileName": "../../evil.txt", "contentType": "text/plain"})
    );
    assert_eq!(
        i["faults"],
        json!({"429": 0, "500": 0, "503": 0, "reset": 0, "corrupt": 0})
    );

    // A second valid PUT replaces the object.
    let other: Vec<u8> = data.iter().map(|b| b.wrapping_add(1)).collect();
    let res = put(&ts, &path, &headers, &other).await;
    assert_eq!(res.status, 200);
    let i = s3_info(&ts, &key).await;
    assert_eq!(i["sha256"], sha256_hex(&other));
    assert_eq!(i["etag"], format!("\"{}\"", md5_hex(&other)));

    // The file name never reaches the filesystem: only <key>.bin exists.
    let names: Vec<String> = std::fs::read_dir(ts.data_dir().join("s3"))
        .expect("s3 dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![format!("{key}.bin")]);
    assert_eq!(
        std::fs::read(ts.data_dir().join("s3").join(format!("{key}.bin"))).expect("object"),
        other
    );

    // An empty object with no content type: no Content-Type header is sent.
    let p = presign_json(&ts, "", json!({"fileName": "empty", "fileSize": 0})).await;
    assert_eq!(p["headers"], json!({"x-amz-tagging": "chunkup=1"}));
    let res = put(
        &ts,
        &target_of(&ts, p["url"].as_str().unwrap_or_default()),
        &signed_headers(&p),
        b"",
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(
        res.header("etag"),
        Some("\"d41d8cd98f00b204e9800998ecf8427e\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_checks_in_order() {
    let ts = start().await;
    let data = payload(1000);
    let p = presign_json(
        &ts,
        "",
        json!({"fileName": "a.bin", "fileType": "application/octet-stream", "fileSize": 1000,
               "headers": {"X-Amz-Meta-Owner": "alice"}}),
    )
    .await;
    let key = p["key"].as_str().expect("key").to_owned();
    let path = target_of(&ts, p["url"].as_str().expect("url"));
    assert!(
        path.contains("X-SignedHeaders=content-type;x-amz-meta-owner;x-amz-tagging"),
        "{path}"
    );
    let headers = signed_headers(&p);
    let code = |res: &Resp| {
        let t = res.text();
        t.split("<Code>")
            .nth(1)
            .and_then(|r| r.split("</Code>").next())
            .unwrap_or_default()
            .to_owned()
    };

    // Unknown key.
    let res = put(
        &ts,
        "/s3/0123456789abcdef0123456789abcdef?X-Expires=1",
        &headers,
        &data,
    )
    .await;
    assert_eq!(res.status, 404);
    assert_eq!(code(&res), "NoSuchKey");
    assert_eq!(res.header("content-type"), Some("application/xml"));
    // Missing signature parameters.
    let res = put(&ts, &format!("/s3/{key}"), &headers, &data).await;
    assert_eq!((res.status, code(&res).as_str()), (403, "AccessDenied"));
    // Tampered signature, expiry or header list.
    let sig_at = path.find("X-Signature=").expect("sig") + "X-Signature=".len();
    let mut tampered = path.clone();
    let flipped = if &path[sig_at..sig_at + 1] == "0" {
        "1"
    } else {
        "0"
    };
    tampered.replace_range(sig_at..sig_at + 1, flipped);
    let res = put(&ts, &tampered, &headers, &data).await;
    assert_eq!(
        (res.status, code(&res).as_str()),
        (403, "SignatureDoesNotMatch")
    );
    let exp = p["expires"].as_u64().expect("expires");
    let later = path.replace(
        &format!("X-Expires={exp}"),
        &format!("X-Expires={}", exp + 100),
    );
    let res = put(&ts, &later, &headers, &data).await;
    assert_eq!(
        (res.status, code(&res).as_str()),
        (403, "SignatureDoesNotMatch")
    );
    let fewer = path.replace(
        "content-type;x-amz-meta-owner;x-amz-tagging",
        "content-type;x-amz-tagging",
    );
    let res = put(&ts, &fewer, &without(&headers, "x-amz-meta-owner"), &data).await;
    assert_eq!(
        (res.status, code(&res).as_str()),
        (403, "SignatureDoesNotMatch")
    );
    // Wrong or missing Content-Type.
    let res = put(
        &ts,
        &path,
        &with(&headers, "content-type", "text/plain"),
        &data,
    )
    .await;
    assert_eq!(res.status, 403);
    assert!(res.text().contains("Content-Type"), "{}", res.text());
    let res = put(&ts, &path, &without(&headers, "content-type"), &data).await;
    assert_eq!(res.status, 403);
    // Missing or changed signed headers.
    let res = put(&ts, &path, &without(&headers, "x-amz-tagging"), &data).await;
    assert_eq!(res.status, 403);
    assert!(
        res.text().contains("Missing signed header x-amz-tagging"),
        "{}",
        res.text()
    );
    let res = put(
        &ts,
        &path,
        &with(&headers, "x-amz-tagging", "chunkup=2"),
        &data,
    )
    .await;
    assert_eq!(res.status, 403);
    assert!(res.text().contains("x-amz-tagging"), "{}", res.text());
    let res = put(
        &ts,
        &path,
        &with(&headers, "x-amz-meta-owner", "mallory"),
        &data,
    )
    .await;
    assert_eq!(res.status, 403);
    // Header names are case-insensitive, values exact.
    let res = put(
        &ts,
        &path,
        &with(&headers, "X-AMZ-TAGGING", "chunkup=1"),
        &data[..999],
    )
    .await;
    assert_eq!((res.status, code(&res).as_str()), (400, "EntityTooSmall"));
    // Wrong length.
    let mut longer = data.clone();
    longer.push(0);
    let res = put(&ts, &path, &headers, &longer).await;
    assert_eq!((res.status, code(&res).as_str()), (400, "EntityTooLarge"));
    // None of that stored anything.
    let i = s3_info(&ts, &key).await;
    assert_eq!(i["complete"], false);
    // The real thing works, through any route family.
    let via_family = format!("/faults/latency:1{path}");
    let res = put(&ts, &via_family, &headers, &data).await;
    assert_eq!(res.status, 200, "{}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_urls_are_refused() {
    let ts = start().await;
    let p = presign_json(
        &ts,
        "",
        json!({"fileName": "x", "fileType": "text/plain", "fileSize": 3, "expired": true}),
    )
    .await;
    assert!(p["expires"].as_u64().expect("expires") < presign::now_unix());
    let res = put(
        &ts,
        &target_of(&ts, p["url"].as_str().unwrap_or_default()),
        &signed_headers(&p),
        b"abc",
    )
    .await;
    assert_eq!(res.status, 403);
    assert!(res.text().contains("Request has expired"), "{}", res.text());

    // A 1-second URL works now and is refused two seconds later.
    let p = presign_json(
        &ts,
        "",
        json!({"fileName": "x", "fileType": "text/plain", "fileSize": 3, "ttlSeconds": 1}),
    )
    .await;
    let path = target_of(&ts, p["url"].as_str().unwrap_or_default());
    let headers = signed_headers(&p);
    assert_eq!(put(&ts, &path, &headers, b"abc").await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let res = put(&ts, &path, &headers, b"abc").await;
    assert_eq!(res.status, 403);
    assert!(res.text().contains("Request has expired"), "{}", res.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presign_validation() {
    let ts = start_with(Opts {
        max_size: 1000,
        ..Opts::default()
    })
    .await;
    let status = |body: &'static str| async move {
        send(ts.addr, "POST", "/presign", &[], body.as_bytes())
            .await
            .status
    };
    assert_eq!(status(r#"{"fileName":"a","fileSize":1001}"#).await, 413);
    assert_eq!(status(r#"{"fileName":"a","fileSize":-1}"#).await, 400);
    assert_eq!(status(r#"{"fileName":"a"}"#).await, 400);
    assert_eq!(status("not json").await, 400);
    assert_eq!(
        status(r#"{"fileName":"a","fileSize":1,"ttlSeconds":604801}"#).await,
        400
    );
    assert_eq!(
        status(r#"{"fileName":"a","fileSize":1,"headers":{"content-length":"1"}}"#).await,
        400
    );
    assert_eq!(
        status(r#"{"fileName":"a","fileSize":1,"headers":{"x y":"1"}}"#).await,
        400
    );
    assert_eq!(
        status(
            r#"{"fileName":"a","fileType":"a/b","fileSize":1,"headers":{"content-type":"c/d"}}"#
        )
        .await,
        400
    );
    // The caller may choose its own tagging; it is then the signed value.
    let p = presign_json(
        &ts,
        "",
        json!({"fileName": "a", "fileSize": 1, "headers": {"x-amz-tagging": "team=qa"}}),
    )
    .await;
    assert_eq!(p["headers"], json!({"x-amz-tagging": "team=qa"}));
    // Without a Host header the URL is server-relative.
    let mut stream = tokio::net::TcpStream::connect(ts.addr)
        .await
        .expect("connect");
    let body = br#"{"fileName":"a","fileSize":1}"#;
    let req = format!(
        "POST /presign HTTP/1.0\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    );
    let (got, _) = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(req.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        let r = stream.read_to_end(&mut got).await;
        (got, r)
    };
    let res = parse_response(&got, false);
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(res.json()["url"]
        .as_str()
        .unwrap_or_default()
        .starts_with("/s3/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_on_put_and_reset_stores_nothing() {
    let ts = start_with(Opts {
        seed: 3,
        ..Opts::default()
    })
    .await;
    let mut events = ts.server.state.s3.subscribe();
    let data = payload(200_000);
    // Presigning is never faulted; the URL keeps the family.
    let p = presign_json(
        &ts,
        "/faults/reset:1",
        json!({"fileName": "r.bin", "fileType": "application/octet-stream", "fileSize": data.len()}),
    )
    .await;
    let key = p["key"].as_str().expect("key").to_owned();
    let path = target_of(&ts, p["url"].as_str().expect("url"));
    assert!(
        path.starts_with(&format!("/faults/reset:1/s3/{key}?")),
        "{path}"
    );
    let headers = signed_headers(&p);
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (got, err) = raw_request(ts.addr, &request_bytes(ts.addr, "PUT", &path, &h, &data)).await;
    assert_reset(&got, err);
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("event in time")
        .expect("event");
    assert_eq!(ev.key, key);
    match &ev.outcome {
        UploadOutcome::Failed {
            status: None,
            reason,
        } => {
            assert!(reason.contains("reset"), "{reason}")
        }
        other => panic!("unexpected {other:?}"),
    }
    let i = s3_info(&ts, &key).await;
    assert_eq!(i["complete"], false);
    assert_eq!(i["faults"]["reset"], 1);
    // No object and no temporary file left behind.
    let left: Vec<_> = std::fs::read_dir(ts.data_dir().join("s3"))
        .expect("dir")
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // Status faults, via other families with the same signed URL.
    let query = &path[path.find('?').expect("query")..];
    let on = |spec: &str| format!("/faults/{spec}/s3/{key}{query}");
    let res = put(&ts, &on("429:1,retry-after:3"), &headers, &data).await;
    assert_eq!(res.status, 429);
    assert_eq!(res.header("retry-after"), Some("3"));
    let res = put(&ts, &on("500:1"), &headers, &data).await;
    assert_eq!(res.status, 500);
    let res = put(&ts, &on("503:1"), &headers, &data).await;
    assert_eq!(res.status, 503);
    assert!(res.text().contains("SlowDown"), "{}", res.text());
    let i = s3_info(&ts, &key).await;
    assert_eq!(
        i["faults"],
        json!({"429": 1, "500": 1, "503": 1, "reset": 1, "corrupt": 0})
    );
    assert_eq!(i["complete"], false);
    // The retry succeeds; bandwidth throttles it (200 kB at 400 kB/s is
    // 0.5 s) and latency delays it.
    let t = std::time::Instant::now();
    let res = put(&ts, &on("bandwidth:400kb,latency:50"), &headers, &data).await;
    assert_eq!(res.status, 200);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(s3_info(&ts, &key).await["sha256"], sha256_hex(&data));

    // A client that vanishes mid-body stores nothing either.
    let p = presign_json(&ts, "", json!({"fileName": "c", "fileSize": data.len()})).await;
    let key2 = p["key"].as_str().expect("key").to_owned();
    let headers2 = signed_headers(&p);
    let h2: Vec<(&str, &str)> = headers2
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let path2 = target_of(&ts, p["url"].as_str().expect("url"));
    let mut req = request_bytes(ts.addr, "PUT", &path2, &h2, &data);
    req.truncate(req.len() - 50_000);
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(ts.addr)
            .await
            .expect("connect");
        stream.write_all(&req).await.expect("write");
        stream.shutdown().await.expect("shutdown");
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink).await;
    }
    // Skip the events of the first key's PUTs above.
    let failed = loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("event in time")
            .expect("event");
        if ev.key == key2 {
            break ev;
        }
    };
    assert!(
        matches!(failed.outcome, UploadOutcome::Failed { status: None, .. }),
        "{failed:?}"
    );
    assert_eq!(s3_info(&ts, &key2).await["complete"], false);
    assert!(!ts
        .data_dir()
        .join("s3")
        .join(format!("{key2}.bin"))
        .exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_api_and_notification_hook() {
    let ts = start_with(Opts {
        secret: Some(b"0123456789abcdef"),
        ..Opts::default()
    })
    .await;
    let state = &ts.server.state;
    let mut events = state.s3.subscribe();
    let mut req = PresignRequest::new("photo.png", "image/png", 5);
    req.app = BTreeMap::from([("conversation".to_owned(), "c-1".to_owned())]);
    req.headers = BTreeMap::from([("X-Extra".to_owned(), "1".to_owned())]);
    let p = presign::presign(state, "", "", req).expect("presigned");
    assert!(p.url.starts_with(&format!("/s3/{}?", p.key)), "{}", p.url);
    assert_eq!(
        p.headers,
        BTreeMap::from([
            ("content-type".to_owned(), "image/png".to_owned()),
            ("x-amz-tagging".to_owned(), "chunkup=1".to_owned()),
            ("x-extra".to_owned(), "1".to_owned()),
        ])
    );
    // Attach an id after presigning (as an emulator would once it has one).
    assert!(state.s3.set_app_meta(&p.key, "attachmentId", "att-42"));
    assert!(!state.s3.set_app_meta("nope", "a", "b"));

    let headers: Vec<(String, String)> = p.headers.clone().into_iter().collect();
    // A refused PUT is reported too.
    let res = put(&ts, &p.url, &without(&headers, "x-extra"), b"12345").await;
    assert_eq!(res.status, 403);
    let ev = events.recv().await.expect("event");
    assert_eq!(
        ev.outcome,
        UploadOutcome::Failed {
            status: Some(403),
            reason: "SignatureDoesNotMatch: Missing signed header x-extra".into()
        }
    );
    let res = put(&ts, &p.url, &headers, b"12345").await;
    assert_eq!(res.status, 200);
    let ev = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("event in time")
        .expect("event");
    assert_eq!(ev.key, p.key);
    assert_eq!(ev.file_name, "photo.png");
    assert_eq!(
        ev.app,
        BTreeMap::from([
            ("attachmentId".to_owned(), "att-42".to_owned()),
            ("conversation".to_owned(), "c-1".to_owned()),
        ])
    );
    assert_eq!(
        ev.outcome,
        UploadOutcome::Completed {
            size: 5,
            sha256: sha256_hex(b"12345"),
            md5: md5_hex(b"12345"),
        }
    );
    // Events serialise for the emulator's wire format.
    let json = serde_json::to_value(&ev).expect("json");
    assert_eq!(json["outcome"]["type"], "completed");
    assert_eq!(json["fileName"], "photo.png");
    let obj = state.s3.get(&p.key).expect("object");
    assert_eq!(obj.stored().map(|s| s.size), Some(5));
    assert_eq!(
        std::fs::read(state.s3.object_path(&p.key)).expect("object file"),
        b"12345"
    );
    assert_eq!(s3_info(&ts, &p.key).await["app"]["attachmentId"], "att-42");

    // The signature is the documented HMAC, so a fixed secret gives
    // reproducible URLs.
    let text = presign::string_to_sign(&p.key, p.expires, 5, &obj.signed_headers());
    let sig = presign::hmac_sha256(b"0123456789abcdef", text.as_bytes());
    let hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
    assert!(p.url.ends_with(&format!("&X-Signature={hex}")), "{}", p.url);

    // A fresh URL for the same key, and a family-prefixed one.
    let again = presign::presign_again(
        state,
        "http://h:1",
        "/faults/500%3A1",
        &p.key,
        Some(60),
        false,
    )
    .expect("again");
    assert!(again
        .url
        .starts_with(&format!("http://h:1/faults/500%3A1/s3/{}?", p.key)));
    assert!(presign::presign(state, "", "/bogus", PresignRequest::new("a", "", 1)).is_err());
    assert!(presign::presign_again(state, "", "", "0123", None, false).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_for_browser_puts() {
    let ts = start().await;
    let p = presign_json(
        &ts,
        "",
        json!({"fileName": "a", "fileType": "text/plain", "fileSize": 2}),
    )
    .await;
    let path = target_of(&ts, p["url"].as_str().expect("url"));
    let res = send(
        ts.addr,
        "OPTIONS",
        &path,
        &[
            ("Origin", "http://localhost:9"),
            ("Access-Control-Request-Method", "PUT"),
            (
                "Access-Control-Request-Headers",
                "content-type,x-amz-tagging",
            ),
        ],
        b"",
    )
    .await;
    assert!(res.status == 200 || res.status == 204, "{}", res.status);
    assert_eq!(res.header("tus-resumable"), None);
    let allowed = res
        .header("access-control-allow-headers")
        .unwrap_or_default();
    assert!(allowed.contains("x-amz-tagging"), "{allowed}");
    let mut headers = signed_headers(&p);
    headers.push(("Origin".into(), "http://localhost:9".into()));
    let res = put(&ts, &path, &headers, b"hi").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    let exposed = res
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.split(',').any(|e| e.trim() == "etag"), "{exposed}");
    // Refusals carry CORS headers too, so the page can read them.
    let res = put(
        &ts,
        &path,
        &[("Origin".into(), "http://localhost:9".into())],
        b"hi",
    )
    .await;
    assert_eq!(res.status, 403);
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
}
