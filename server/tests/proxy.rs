//! Proxy mode (`--proxy-to`): requests and answers pass unchanged (method,
//! path, query, headers with `Host`, bodies, reason phrases, preflights),
//! faults strike write requests only, a `reset` leaves the upstream what it
//! received and the client a dead connection, and `/__faults` is the
//! proxy's own. The upstream here is the reference server without faults, and
//! for presigned URLs a real Garage cluster (signed for the proxy's host, since
//! the proxy forwards `Host` unchanged): `/faults/{spec}/` prefixes, and
//! `corrupt` striking only bodies whose checksum Garage verifies.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chunkup_server::faults::FaultSpec;
use chunkup_server::proxy::{self, Proxy, Upstream};
use common::*;
use sha2::{Digest as _, Sha256};

async fn proxy_to(ts: &TestServer, faults: &str, seed: u64) -> Proxy {
    let upstream = Upstream::parse(&format!("http://{}", ts.addr)).expect("upstream URL");
    proxy::start(
        upstream,
        "127.0.0.1",
        0,
        FaultSpec::parse(faults).expect("spec"),
        seed,
    )
    .await
    .expect("proxy starts")
}

/// `send` through the proxy (the hand-written client sends `Host` = the
/// address it talks to, as a browser does).
async fn via(p: &Proxy, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    send(p.addr, method, path, headers, body).await
}

fn checksum_of(data: &[u8]) -> String {
    format!("sha256 {}", b64(&Sha256::digest(data)))
}

async fn create_via(p: &Proxy, length: usize) -> String {
    let len = length.to_string();
    let res = via(
        p,
        "POST",
        "/files/",
        &[TUS, ("Upload-Length", len.as_str())],
        b"",
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.text());
    res.header("location").expect("Location").to_owned()
}

async fn patch_via(p: &Proxy, loc: &str, offset: u64, body: &[u8], sum: Option<&str>) -> Resp {
    let off = offset.to_string();
    let mut headers = vec![TUS, OCTETS, ("Upload-Offset", off.as_str())];
    if let Some(sum) = sum {
        headers.push(("Upload-Checksum", sum));
    }
    via(p, "PATCH", loc, &headers, body).await
}

fn stored_uploads(ts: &TestServer) -> usize {
    std::fs::read_dir(ts.data_dir())
        .expect("data dir")
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_requests_and_answers_unchanged() {
    let ts = start().await;
    let p = proxy_to(&ts, "none", 1).await;
    assert_eq!(p.url(), format!("http://127.0.0.1:{}/", p.addr.port()));

    // A CORS preflight reaches the upstream and its answer comes back.
    let pre = via(
        &p,
        "OPTIONS",
        "/files/",
        &[
            ("Origin", "http://127.0.0.1:9"),
            ("Access-Control-Request-Method", "PATCH"),
            (
                "Access-Control-Request-Headers",
                "upload-offset, tus-resumable",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("tus-extension"),
        Some("creation,checksum,termination")
    );
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));

    let data = payload(150_000);
    let loc = create_via(&p, data.len()).await;
    assert!(loc.starts_with("/files/"), "{loc}");
    // tus's own status and reason phrase pass through.
    let bad = patch_via(&p, &loc, 0, &data[..1000], Some(&checksum_of(b"other"))).await;
    assert_eq!(
        (bad.status, bad.reason.as_str()),
        (460, "Checksum Mismatch")
    );
    let ok = patch_via(
        &p,
        &loc,
        0,
        &data[..100_000],
        Some(&checksum_of(&data[..100_000])),
    )
    .await;
    assert_eq!(ok.status, 204);
    assert_eq!(ok.header("upload-offset"), Some("100000"));
    assert_eq!(ok.header("tus-resumable"), Some("1.0.0"));
    let h = via(&p, "HEAD", &loc, &[TUS], b"").await;
    assert_eq!((h.status, h.header("upload-offset")), (200, Some("100000")));
    assert_eq!(h.header("cache-control"), Some("no-store"));

    // A chunked request body (no Content-Length) is streamed as well.
    let rest = &data[100_000..];
    let mut req = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: 100000\r\n\
         Transfer-Encoding: chunked\r\n\r\n",
        p.addr
    )
    .into_bytes();
    for piece in rest.chunks(7000) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (raw, _) = raw_request(p.addr, &req).await;
    let res = parse_response(&raw, false);
    assert_eq!(res.status, 204, "{}", res.text());
    let i = via(&p, "GET", &format!("{loc}/info"), &[], b"")
        .await
        .json();
    assert_eq!(i["sha256"], sha256_hex(&data));

    // `/__faults` is the proxy's own.
    let own = via(&p, "GET", "/__faults", &[], b"").await.json();
    assert_eq!(own["upstream"], format!("http://{}", ts.addr));
    assert_eq!(own["spec"], "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_faults_are_answered_by_the_proxy_on_writes_only() {
    let ts = start().await;
    let loc = create(&ts, "", 10, None).await;
    let p = proxy_to(&ts, "500:1", 1).await;
    let res = via(&p, "POST", "/files/", &[TUS, ("Upload-Length", "4")], b"").await;
    assert_eq!(res.status, 500);
    assert_eq!(stored_uploads(&ts), 1, "the upstream never saw the POST");
    assert_eq!(patch_via(&p, &loc, 0, b"abc", None).await.status, 500);
    // Reads are never faulted.
    assert_eq!(via(&p, "HEAD", &loc, &[TUS], b"").await.status, 200);
    assert_eq!(
        via(&p, "GET", &format!("{loc}/info"), &[], b"")
            .await
            .status,
        200
    );
    assert_eq!(info(&ts, &loc).await["offset"], 0);

    let p = proxy_to(&ts, "429:1,retry-after:3", 1).await;
    let res = via(
        &p,
        "PATCH",
        &loc,
        &[
            TUS,
            OCTETS,
            ("Upload-Offset", "0"),
            ("Origin", "http://127.0.0.1:9"),
        ],
        b"abc",
    )
    .await;
    assert_eq!(res.status, 429);
    assert_eq!(res.header("retry-after"), Some("3"));
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("http://127.0.0.1:9")
    );
    assert!(res
        .header("access-control-expose-headers")
        .is_some_and(|h| h.contains("retry-after")));
    assert_eq!(res.header("tus-resumable"), Some("1.0.0"));
    let counted = via(&p, "GET", "/__faults", &[], b"").await.json();
    assert_eq!(counted["injected"]["429"], 1);
    // The upstream's own counters know nothing of the proxy's faults.
    let upstream = send(ts.addr, "GET", "/__faults", &[], b"").await.json();
    assert_eq!(upstream["injected"]["429"], 0);
}

async fn reset_through_proxy(checksum: bool) {
    let ts = start().await;
    let data = payload(200_000);
    let loc = create(&ts, "", data.len() as u64, None).await;
    let p = proxy_to(&ts, "reset:1", 3).await;
    let sum = checksum_of(&data);
    let mut headers = vec![TUS, OCTETS, ("Upload-Offset", "0")];
    if checksum {
        headers.push(("Upload-Checksum", sum.as_str()));
    }
    let req = request_bytes(p.addr, "PATCH", &loc, &headers, &data);
    let (got, err) = raw_request(p.addr, &req).await;
    assert_reset(&got, err);
    let i = info(&ts, &loc).await;
    let offset = i["offset"].as_u64().expect("offset");
    if checksum {
        assert_eq!(offset, 0, "the upstream discards a broken checksummed body");
    } else {
        assert!((1..200_000).contains(&offset), "kept {offset}");
        assert_eq!(i["sha256"], sha256_hex(&data[..offset as usize]));
    }
    assert_eq!(
        via(&p, "GET", "/__faults", &[], b"").await.json()["injected"]["reset"],
        1
    );
    // The client resumes (here past the proxy) and completes.
    let res = patch(&ts, &loc, offset, &data[offset as usize..]).await;
    assert_eq!(res.status, 204);
    assert_eq!(info(&ts, &loc).await["sha256"], sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_leaves_the_upstream_what_it_received() {
    reset_through_proxy(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_with_checksum_leaves_nothing() {
    reset_through_proxy(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_control_determinism_and_a_missing_upstream() {
    let ts = start().await;
    let p = proxy_to(&ts, "latency:300", 1).await;
    let t = Instant::now();
    assert_eq!(
        via(&p, "POST", "/files/", &[TUS, ("Upload-Length", "1")], b"")
            .await
            .status,
        201
    );
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );

    // Runtime control: checksum:off is refused, a good spec with a seed is taken.
    let res = via(&p, "PUT", "/__faults", &[], b"checksum:off").await;
    assert_eq!(res.status, 400);
    assert!(res.text().contains("checksum:off"), "{}", res.text());
    let res = via(&p, "PUT", "/__faults?seed=42", &[], b"500:0.5").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["spec"], "500:0.5");
    let statuses = |addr: SocketAddr| async move {
        let mut out = Vec::new();
        for _ in 0..20 {
            out.push(
                send(addr, "POST", "/files/", &[TUS, ("Upload-Length", "1")], b"")
                    .await
                    .status,
            );
        }
        out
    };
    let first = statuses(p.addr).await;
    let other = proxy_to(&ts, "500:0.5", 42).await;
    assert_eq!(first, statuses(other.addr).await, "same seed, same faults");
    assert!(first.contains(&500) && first.contains(&201), "{first:?}");

    // Nobody listening upstream: 502 from the proxy.
    let gone = ts.addr;
    drop(ts);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let upstream = Upstream::parse(&format!("http://{gone}")).expect("url");
    let lonely = proxy::start(upstream, "127.0.0.1", 0, FaultSpec::default(), 1)
        .await
        .expect("starts");
    let res = send(lonely.addr, "GET", "/files/x/info", &[], b"").await;
    assert_eq!(res.status, 502);
}

/// Presigned URLs signed for the proxy reach Garage intact (Host and query unchanged, a
/// `/faults/{spec}/` prefix stripped); the prefix's faults apply; `corrupt` flips a byte
/// only where Garage verifies a checksum, so Garage refuses it and a re-send succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_through_a_proxy_in_front_of_garage() {
    use serde_json::json;
    let cluster = garage::shared();
    let upstream = Upstream::parse(&cluster.endpoints[0]).expect("upstream");
    let p = proxy::start(upstream, "127.0.0.1", 0, FaultSpec::default(), 5)
        .await
        .expect("proxy");
    let ts = start_with_garage(Some(&p.url())).await;
    let data = payload(300_000);
    let sum = b64(&Sha256::digest(&data));

    // A single PUT: the URL points at the proxy and Garage accepts it.
    let put = post_json(
        &ts,
        "/presign",
        &json!({"fileName": "a", "fileSize": data.len()}),
    )
    .await
    .json();
    let url = put["url"].as_str().expect("url");
    assert!(url.starts_with(&p.url()), "{url}");
    let headers = header_pairs(&put["headers"]);
    let res = send_url("PUT", url, &as_refs(&headers), &data).await;
    assert_eq!(res.status, 200, "{}", res.text());

    // A family prefix: stripped, and its faults applied.
    let faulted = post_json(
        &ts,
        "/faults/503%3A1/presign",
        &json!({"fileName": "a", "fileSize": data.len()}),
    )
    .await
    .json();
    let url = faulted["url"].as_str().expect("url");
    assert!(
        url.starts_with(&format!("{}faults/503%3A1/chunkup/", p.url())),
        "{url}"
    );
    let res = send_url(
        "PUT",
        url,
        &as_refs(&header_pairs(&faulted["headers"])),
        &data,
    )
    .await;
    assert_eq!(res.status, 503);
    let bogus = send(p.addr, "PUT", "/faults/bogus:1/chunkup/x", &[], b"x").await;
    assert_eq!(bogus.status, 400, "{}", bogus.text());

    // corrupt:1 on parts: with the checksum (query or header) Garage refuses the flipped
    // byte; the counter shows it went by. Without one the proxy leaves the body alone.
    let created = post_json(
        &ts,
        "/s3/multipart",
        &json!({"name": "c", "size": data.len()}),
    )
    .await
    .json();
    let (id, key) = (created["uploadId"].clone(), created["key"].clone());
    for placement in ["query", "header"] {
        let signed = post_json(
            &ts,
            "/faults/corrupt%3A1/s3/multipart/sign",
            &json!({"uploadId": id, "key": key, "partNumber": 1, "size": data.len(),
                    "checksumSHA256": sum, "placement": placement}),
        )
        .await
        .json();
        let url = signed["url"].as_str().expect("url");
        let res = send_url(
            "PUT",
            url,
            &as_refs(&header_pairs(&signed["headers"])),
            &data,
        )
        .await;
        assert_eq!(
            (res.status, s3_code(&res).as_str()),
            (400, "InvalidDigest"),
            "{placement}: {}",
            res.text()
        );
    }
    let counters = send(p.addr, "GET", "/__faults", &[], b"").await.json();
    assert_eq!(counters["injected"]["corrupt"], 2);
    let signed = post_json(
        &ts,
        "/s3/multipart/sign",
        &json!({"uploadId": id, "key": key, "partNumber": 1, "size": data.len(), "checksumSHA256": sum}),
    )
    .await
    .json();
    let res = send_url("PUT", signed["url"].as_str().expect("url"), &[], &data).await;
    assert_eq!(res.status, 200, "the re-send: {}", res.text());
    let etag = res.header("etag").expect("etag").to_owned();
    let done = post_json(
        &ts,
        "/s3/multipart/complete",
        &json!({"uploadId": id, "key": key, "parts": [{"partNumber": 1, "etag": etag, "checksumSHA256": sum}]}),
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.text());
    let key = key.as_str().expect("key");
    let stored = send(ts.addr, "GET", &format!("/s3/objects/{key}/info"), &[], b"")
        .await
        .json();
    assert_eq!(stored["sha256"], sha256_hex(&data));

    // No checksum, no corruption: a presigned PUT through corrupt:1 arrives intact.
    let plain = post_json(
        &ts,
        "/faults/corrupt%3A1/presign",
        &json!({"fileName": "a", "fileSize": data.len()}),
    )
    .await
    .json();
    let res = send_url(
        "PUT",
        plain["url"].as_str().expect("url"),
        &as_refs(&header_pairs(&plain["headers"])),
        &data,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let key = plain["key"].as_str().expect("key");
    let stored = send(ts.addr, "GET", &format!("/s3/objects/{key}/info"), &[], b"")
        .await
        .json();
    assert_eq!(stored["sha256"], sha256_hex(&data));
    assert_eq!(
        send(p.addr, "GET", "/__faults", &[], b"").await.json()["injected"]["corrupt"],
        2
    );

    // reset:1 on a part: the client's connection dies, Garage keeps nothing of it.
    let put = post_json(
        &ts,
        "/faults/reset%3A1/presign",
        &json!({"fileName": "a", "fileSize": data.len()}),
    )
    .await
    .json();
    let (addr, target) = url_target(put["url"].as_str().expect("url"));
    let mut req = format!(
        "PUT {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nx-amz-tagging: chunkup=1\r\n\r\n",
        data.len()
    )
    .into_bytes();
    req.extend_from_slice(&data);
    let (got, err) = raw_request(addr, &req).await;
    assert_reset(&got, err);
    let key = put["key"].as_str().expect("key");
    let res = send(ts.addr, "GET", &format!("/s3/objects/{key}/info"), &[], b"").await;
    assert_eq!(res.status, 404, "a broken PUT stores nothing");
}
