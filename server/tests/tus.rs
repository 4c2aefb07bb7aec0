//! Protocol tests: tus core, creation, checksum and termination as seen on
//! the wire, plus `/info`, statics and CORS. Fault injection is covered in
//! `faults.rs`.

mod common;

use common::*;
use sha1::{Digest as _, Sha1};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn is_upload_location(loc: &str, base: &str) -> bool {
    loc.strip_prefix(base)
        .and_then(|rest| rest.strip_prefix("/files/"))
        .is_some_and(|id| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_advertises_tus() {
    let ts = start_with(Opts {
        max_size: 12345,
        ..Opts::default()
    })
    .await;
    for path in ["/files/", "/files/0123456789abcdef", "/faults/500:1/files/"] {
        let res = send(ts.addr, "OPTIONS", path, &[], b"").await;
        assert_eq!(res.status, 204, "{path}");
        assert_eq!(res.header("tus-resumable"), Some("1.0.0"));
        assert_eq!(res.header("tus-version"), Some("1.0.0"));
        assert_eq!(
            res.header("tus-extension"),
            Some("creation,checksum,termination")
        );
        assert_eq!(res.header("tus-checksum-algorithm"), Some("sha1,sha256"));
        assert_eq!(res.header("tus-max-size"), Some("12345"));
    }
    // A CORS preflight gets the CORS answer merged into the tus one.
    let res = send(
        ts.addr,
        "OPTIONS",
        "/files/",
        &[
            ("Origin", "http://127.0.0.1:9"),
            ("Access-Control-Request-Method", "PATCH"),
            (
                "Access-Control-Request-Headers",
                "tus-resumable,upload-offset,upload-checksum,content-type,authorization,x-custom",
            ),
        ],
        b"",
    )
    .await;
    assert_eq!(res.status, 204);
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    let methods = res.header("access-control-allow-methods").unwrap_or("");
    for m in ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(m), "{methods}");
    }
    let allowed = res.header("access-control-allow-headers").unwrap_or("");
    assert!(allowed.contains("authorization") && allowed.contains("x-custom"));
    assert_eq!(res.header("access-control-max-age"), Some("86400"));
    assert_eq!(res.header("tus-version"), Some("1.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_patch_head_info_delete_round_trip() {
    let ts = start().await;
    let data = payload(300_000);
    let meta = format!(
        "filename {},type {}",
        b64(b"report.pdf"),
        b64(b"application/pdf")
    );
    let loc = create(&ts, "", data.len() as u64, Some(&meta)).await;
    assert!(is_upload_location(&loc, ""), "{loc}");

    let res = head(&ts, &loc).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("upload-offset"), Some("0"));
    assert_eq!(res.header("upload-length"), Some("300000"));
    assert_eq!(res.header("cache-control"), Some("no-store"));
    assert_eq!(res.header("tus-resumable"), Some("1.0.0"));
    assert_eq!(res.header("upload-metadata"), Some(meta.as_str()));

    let res = patch(&ts, &loc, 0, &data[..100_000]).await;
    assert_eq!(res.status, 204, "{}", res.text());
    assert_eq!(res.header("upload-offset"), Some("100000"));
    assert_eq!(res.header("tus-resumable"), Some("1.0.0"));

    let half = info(&ts, &loc).await;
    assert_eq!(half["offset"], 100_000);
    assert_eq!(half["complete"], false);
    assert_eq!(half["sha256"], sha256_hex(&data[..100_000]));

    let res = patch(&ts, &loc, 100_000, &data[100_000..]).await;
    assert_eq!(res.status, 204);
    assert_eq!(res.header("upload-offset"), Some("300000"));
    assert_eq!(
        head(&ts, &loc).await.header("upload-offset"),
        Some("300000")
    );

    let done = info(&ts, &loc).await;
    assert_eq!(
        done,
        serde_json::json!({
            "size": 300_000,
            "offset": 300_000,
            "sha256": sha256_hex(&data),
            "complete": true,
            "metadata": {"filename": "report.pdf", "type": "application/pdf"},
            "faults": {"429": 0, "500": 0, "503": 0, "reset": 0, "corrupt": 0},
            "received": 300_000,
        })
    );
    let id = loc.trim_start_matches("/files/");
    let stored = std::fs::read(ts.data_dir().join(format!("{id}.bin"))).expect("bin file");
    assert_eq!(stored, data);
    let sidecar: serde_json::Value = serde_json::from_slice(
        &std::fs::read(ts.data_dir().join(format!("{id}.json"))).expect("sidecar"),
    )
    .expect("sidecar JSON");
    assert_eq!(sidecar["length"], 300_000);
    assert_eq!(sidecar["offset"], 300_000);
    assert_eq!(sidecar["metadata"]["filename"], "report.pdf");

    let res = send(ts.addr, "DELETE", &loc, &[TUS], b"").await;
    assert_eq!(res.status, 204);
    assert_eq!(res.header("tus-resumable"), Some("1.0.0"));
    assert!(!ts.data_dir().join(format!("{id}.bin")).exists());
    assert!(!ts.data_dir().join(format!("{id}.json")).exists());
    assert_eq!(head(&ts, &loc).await.status, 404);
    assert_eq!(send(ts.addr, "DELETE", &loc, &[TUS], b"").await.status, 404);
    assert_eq!(patch(&ts, &loc, 0, b"x").await.status, 404);
    let res = send(ts.addr, "GET", &format!("{loc}/info"), &[], b"").await;
    assert_eq!(res.status, 404);
    assert_eq!(res.json()["error"], "upload not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_upload_is_complete() {
    let ts = start().await;
    let loc = create(&ts, "", 0, None).await;
    let i = info(&ts, &loc).await;
    assert_eq!(i["complete"], true);
    assert_eq!(i["offset"], 0);
    assert_eq!(i["sha256"], sha256_hex(b""));
    assert_eq!(i["metadata"], serde_json::json!({}));
    let res = patch(&ts, &loc, 0, b"").await;
    assert_eq!(res.status, 204);
    assert_eq!(res.header("upload-offset"), Some("0"));
    assert_eq!(patch(&ts, &loc, 0, b"x").await.status, 413);
}

async fn patch_with_checksum(
    ts: &TestServer,
    loc: &str,
    offset: u64,
    body: &[u8],
    sum: &str,
) -> Resp {
    let off = offset.to_string();
    send(
        ts.addr,
        "PATCH",
        loc,
        &[
            TUS,
            OCTETS,
            ("Upload-Offset", &off),
            ("Upload-Checksum", sum),
        ],
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_verify_and_mismatch_stores_nothing() {
    let ts = start().await;
    let data = payload(200_000);
    let loc = create(&ts, "", data.len() as u64, None).await;
    let id = loc.trim_start_matches("/files/").to_owned();
    let bin = ts.data_dir().join(format!("{id}.bin"));

    let sha1 = format!("sha1 {}", b64(&Sha1::digest(&data[..50_000])));
    let res = patch_with_checksum(&ts, &loc, 0, &data[..50_000], &sha1).await;
    assert_eq!(res.status, 204, "{}", res.text());
    assert_eq!(res.header("upload-offset"), Some("50000"));

    // Digest of different bytes: 460, nothing stored, offset unchanged.
    let wrong = format!("sha256 {}", b64(&Sha256::digest(b"something else")));
    let res = patch_with_checksum(&ts, &loc, 50_000, &data[50_000..], &wrong).await;
    assert_eq!(res.status, 460);
    assert_eq!(res.reason, "Checksum Mismatch");
    assert_eq!(res.header("tus-resumable"), Some("1.0.0"));
    assert_eq!(info(&ts, &loc).await["offset"], 50_000);
    assert_eq!(std::fs::metadata(&bin).expect("bin").len(), 50_000);
    assert_eq!(head(&ts, &loc).await.header("upload-offset"), Some("50000"));

    // Unsupported algorithm and malformed digests are 400, also storing nothing.
    let md5 = "md5 1B2M2Y8AsgTpgAmY7PhCfg==";
    assert_eq!(
        patch_with_checksum(&ts, &loc, 50_000, &data[50_000..], md5)
            .await
            .status,
        400
    );
    let short = "sha256 AAAA";
    assert_eq!(
        patch_with_checksum(&ts, &loc, 50_000, &data[50_000..], short)
            .await
            .status,
        400
    );
    assert_eq!(info(&ts, &loc).await["offset"], 50_000);

    let right = format!("sha256 {}", b64(&Sha256::digest(&data[50_000..])));
    let res = patch_with_checksum(&ts, &loc, 50_000, &data[50_000..], &right).await;
    assert_eq!(res.status, 204);
    let i = info(&ts, &loc).await;
    assert_eq!(i["sha256"], sha256_hex(&data));
    assert_eq!(i["complete"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_preconditions() {
    let ts = start().await;
    let loc = create(&ts, "", 10, None).await;
    // Wrong offset.
    assert_eq!(patch(&ts, &loc, 3, b"abc").await.status, 409);
    // Wrong or missing content type.
    let res = send(
        ts.addr,
        "PATCH",
        &loc,
        &[
            TUS,
            ("Content-Type", "application/octet-stream"),
            ("Upload-Offset", "0"),
        ],
        b"abc",
    )
    .await;
    assert_eq!(res.status, 415);
    let res = send(
        ts.addr,
        "PATCH",
        &loc,
        &[TUS, ("Upload-Offset", "0")],
        b"abc",
    )
    .await;
    assert_eq!(res.status, 415);
    // Missing or bad Upload-Offset.
    assert_eq!(
        send(ts.addr, "PATCH", &loc, &[TUS, OCTETS], b"abc")
            .await
            .status,
        400
    );
    let res = send(
        ts.addr,
        "PATCH",
        &loc,
        &[TUS, OCTETS, ("Upload-Offset", "-1")],
        b"a",
    )
    .await;
    assert_eq!(res.status, 400);
    // Past Upload-Length: 413 and nothing stored.
    assert_eq!(patch(&ts, &loc, 0, b"0123456789X").await.status, 413);
    assert_eq!(info(&ts, &loc).await["offset"], 0);
    assert_eq!(patch(&ts, &loc, 0, b"01234").await.status, 204);
    assert_eq!(patch(&ts, &loc, 5, b"567890").await.status, 413);
    assert_eq!(patch(&ts, &loc, 5, b"56789").await.status, 204);
    assert_eq!(info(&ts, &loc).await["sha256"], sha256_hex(b"0123456789"));
    // Unknown and malformed ids.
    for bad in [
        "/files/0000000000000000",
        "/files/ZZZ",
        "/files/..%2F..%2Fetc%2Fpasswd",
    ] {
        assert_eq!(patch(&ts, bad, 0, b"x").await.status, 404, "{bad}");
        assert_eq!(head(&ts, bad).await.status, 404, "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_resumable_required() {
    let ts = start().await;
    let loc = create(&ts, "", 10, None).await;
    let checks: [(&str, &str); 4] = [
        ("POST", "/files/"),
        ("HEAD", loc.as_str()),
        ("PATCH", loc.as_str()),
        ("DELETE", loc.as_str()),
    ];
    for (method, path) in checks {
        for version in [None, Some("0.2.2")] {
            let mut headers = vec![("Upload-Length", "10"), OCTETS, ("Upload-Offset", "0")];
            if let Some(v) = version {
                headers.push(("Tus-Resumable", v));
            }
            let res = send(ts.addr, method, path, &headers, b"").await;
            assert_eq!(res.status, 412, "{method} {path} {version:?}");
            assert_eq!(res.header("tus-version"), Some("1.0.0"));
            assert_eq!(res.header("tus-resumable"), Some("1.0.0"));
        }
    }
    assert_eq!(info(&ts, &loc).await["offset"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creation_validation() {
    let ts = start_with(Opts {
        max_size: 1000,
        ..Opts::default()
    })
    .await;
    let post = |headers: Vec<(&'static str, String)>| {
        let addr = ts.addr;
        async move {
            let mut h: Vec<(&str, &str)> = vec![TUS];
            h.extend(headers.iter().map(|(n, v)| (*n, v.as_str())));
            send(addr, "POST", "/files/", &h, b"").await
        }
    };
    assert_eq!(post(vec![]).await.status, 400);
    for bad in ["-1", "abc", "1.5", "", "99999999999999999999999"] {
        assert_eq!(
            post(vec![("Upload-Length", bad.into())]).await.status,
            400,
            "{bad:?}"
        );
    }
    assert_eq!(
        post(vec![("Upload-Defer-Length", "1".into())]).await.status,
        400
    );
    assert_eq!(
        post(vec![("Upload-Length", "1001".into())]).await.status,
        413
    );
    assert_eq!(
        post(vec![("Upload-Length", "1000".into())]).await.status,
        201
    );
    for (metadata, status) in [
        ("filename", 201),
        ("filename !!!notbase64", 400),
        ("a YQ== extra", 400),
        ("a YQ==,a Yg==", 400),
        ("a YQ==,,b Yg==", 400),
        (",a YQ==", 400),
    ] {
        let res = post(vec![
            ("Upload-Length", "5".into()),
            ("Upload-Metadata", metadata.into()),
        ])
        .await;
        assert_eq!(res.status, status, "{metadata:?}");
    }
    // Key without value, unpadded base64 and non-UTF-8 values are accepted.
    let loc = {
        let res = post(vec![
            ("Upload-Length", "5".into()),
            ("Upload-Metadata", "flag,name aGk,bin //79".into()),
        ])
        .await;
        assert_eq!(res.status, 201);
        res.header("location").expect("location").to_owned()
    };
    let i = info(&ts, &loc).await;
    assert_eq!(i["metadata"]["flag"], "");
    assert_eq!(i["metadata"]["name"], "hi");
    assert_eq!(i["metadata"]["bin"], "\u{fffd}\u{fffd}\u{fffd}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_locations_keep_the_route_prefix() {
    let ts = start().await;
    let loc = create(&ts, "", 4, None).await;
    assert!(is_upload_location(&loc, ""), "{loc}");

    for base in [
        "/faults/none",
        "/faults/latency:1",
        "/faults/latency%3A1%2Cretry-after%3A2",
    ] {
        let loc = create(&ts, base, 4, None).await;
        assert!(is_upload_location(&loc, base), "{base} -> {loc}");
        assert_eq!(patch(&ts, &loc, 0, b"abcd").await.status, 204);
        assert_eq!(head(&ts, &loc).await.header("upload-offset"), Some("4"));
        // The same upload is reachable through every route family.
        let id = loc.rsplit('/').next().unwrap_or_default();
        let plain = format!("/files/{id}");
        assert_eq!(head(&ts, &plain).await.header("upload-offset"), Some("4"));
        assert_eq!(info(&ts, &loc).await["sha256"], sha256_hex(b"abcd"));
    }
    // Without the trailing slash too.
    let res = send(
        ts.addr,
        "POST",
        "/files",
        &[TUS, ("Upload-Length", "1")],
        b"",
    )
    .await;
    assert_eq!(res.status, 201);
    assert!(is_upload_location(res.header("location").unwrap_or(""), ""));
    // A bad spec in the path is a 400.
    let res = send(
        ts.addr,
        "POST",
        "/faults/bogus:1/files/",
        &[TUS, ("Upload-Length", "1")],
        b"",
    )
    .await;
    assert_eq!(res.status, 400);
    assert_eq!(res.header("tus-resumable"), Some("1.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_escaping_filename_is_only_metadata() {
    let ts = start().await;
    let evil = "../../etc/passwd";
    let data = b"pwned:x:0:0::/:/bin/sh\n";
    let meta = format!("filename {}", b64(evil.as_bytes()));
    let loc = create(&ts, "", data.len() as u64, Some(&meta)).await;
    assert_eq!(patch(&ts, &loc, 0, data).await.status, 204);
    let i = info(&ts, &loc).await;
    assert_eq!(i["metadata"]["filename"], evil);
    assert_eq!(i["complete"], true);

    // The data dir holds exactly <id>.bin and <id>.json, besides the (empty)
    // directory of range sessions (put objects live in the object store).
    let id = loc.trim_start_matches("/files/");
    let mut names: Vec<String> = std::fs::read_dir(ts.data_dir())
        .expect("data dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![format!("{id}.bin"), format!("{id}.json"), "range".into()]
    );
    // Nothing was written where the filename points.
    assert!(!ts.data_dir().join(evil).exists());
    assert!(!ts.dir.join("etc").exists());
    let passwd = std::fs::read("/etc/passwd").unwrap_or_default();
    assert!(!passwd.windows(data.len()).any(|w| w == data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_patch_keeps_received_bytes() {
    let ts = start().await;
    let data = payload(100_000);
    let loc = create(&ts, "", data.len() as u64, None).await;
    // Announce 100000 bytes, send 40000, then close: the server keeps them.
    let mut req = request_bytes(
        ts.addr,
        "PATCH",
        &loc,
        &[TUS, OCTETS, ("Upload-Offset", "0")],
        &data,
    );
    req.truncate(req.len() - 60_000);
    let mut stream = TcpStream::connect(ts.addr).await.expect("connect");
    stream.write_all(&req).await.expect("write");
    stream.shutdown().await.expect("shutdown");
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink).await;
    drop(stream);

    let mut offset = serde_json::Value::Null;
    for _ in 0..100 {
        offset = info(&ts, &loc).await["offset"].clone();
        if offset == 40_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(offset, 40_000);
    assert_eq!(head(&ts, &loc).await.header("upload-offset"), Some("40000"));
    assert_eq!(info(&ts, &loc).await["sha256"], sha256_hex(&data[..40_000]));
    // And the upload resumes from there.
    assert_eq!(patch(&ts, &loc, 40_000, &data[40_000..]).await.status, 204);
    assert_eq!(info(&ts, &loc).await["sha256"], sha256_hex(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statics_and_cors() {
    let root = chunkup_server::config::fresh_temp_dir("chunkup-statics").expect("dir");
    let www = root.join("www");
    let pkg = root.join("pkg");
    std::fs::create_dir_all(www.join("sub")).expect("mkdir");
    std::fs::create_dir_all(&pkg).expect("mkdir");
    std::fs::write(www.join("index.html"), "<h1>demo</h1>").expect("write");
    std::fs::write(www.join("app.mjs"), "export {}").expect("write");
    std::fs::write(pkg.join("chunkup.js"), "export {}").expect("write");
    std::fs::write(pkg.join("chunkup_bg.wasm"), b"\0asm\x01\0\0\0").expect("write");
    let ts = start_with(Opts {
        www: Some(&www),
        pkg: Some(&pkg),
        ..Opts::default()
    })
    .await;

    let res = send(ts.addr, "GET", "/", &[], b"").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.text(), "<h1>demo</h1>");
    let res = send(ts.addr, "GET", "/app.mjs", &[], b"").await;
    assert_eq!(res.header("content-type"), Some("text/javascript"));
    let res = send(ts.addr, "GET", "/pkg/chunkup.js", &[], b"").await;
    assert_eq!(res.header("content-type"), Some("text/javascript"));
    let res = send(
        ts.addr,
        "GET",
        "/pkg/chunkup_bg.wasm",
        &[("Origin", "http://localhost:1")],
        b"",
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/wasm"));
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        send(ts.addr, "GET", "/missing.html", &[], b"").await.status,
        404
    );
    assert_eq!(
        send(ts.addr, "GET", "/pkg/missing.js", &[], b"")
            .await
            .status,
        404
    );
    assert_eq!(
        send(ts.addr, "GET", "/../../etc/passwd", &[], b"")
            .await
            .status,
        404
    );

    // Cross-origin tus responses expose the headers the client reads.
    let res = send(
        ts.addr,
        "POST",
        "/files/",
        &[
            TUS,
            ("Upload-Length", "3"),
            ("Origin", "http://localhost:8000"),
        ],
        b"",
    )
    .await;
    assert_eq!(res.status, 201);
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    let exposed = res
        .header("access-control-expose-headers")
        .unwrap_or("")
        .to_ascii_lowercase();
    for h in [
        "location",
        "upload-offset",
        "upload-length",
        "upload-metadata",
        "tus-resumable",
        "tus-version",
        "tus-extension",
        "tus-max-size",
        "tus-checksum-algorithm",
        "retry-after",
    ] {
        assert!(
            exposed.split(',').any(|e| e.trim() == h),
            "{h} not in {exposed}"
        );
    }
    // Error answers carry CORS headers too, so the browser can read them.
    let res = send(
        ts.addr,
        "POST",
        "/files/",
        &[("Origin", "http://localhost:8000")],
        b"",
    )
    .await;
    assert_eq!(res.status, 412);
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    drop(ts);
    let _ = std::fs::remove_dir_all(root);

    // Missing static dirs are 404s, not crashes.
    let ts = start().await;
    assert_eq!(send(ts.addr, "GET", "/", &[], b"").await.status, 404);
    assert_eq!(
        send(ts.addr, "GET", "/pkg/x.wasm", &[], b"").await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_uploads_from_the_data_dir() {
    let root = chunkup_server::config::fresh_temp_dir("chunkup-restart").expect("dir");
    let data = payload(5000);
    let loc = {
        let ts = start_with(Opts {
            data_dir: Some(&root),
            ..Opts::default()
        })
        .await;
        let loc = create(&ts, "", 5000, Some("filename YS50eHQ=")).await;
        assert_eq!(patch(&ts, &loc, 0, &data[..3000]).await.status, 204);
        loc
    };
    let ts = start_with(Opts {
        data_dir: Some(&root),
        ..Opts::default()
    })
    .await;
    assert_eq!(head(&ts, &loc).await.header("upload-offset"), Some("3000"));
    assert_eq!(patch(&ts, &loc, 3000, &data[3000..]).await.status, 204);
    let i = info(&ts, &loc).await;
    assert_eq!(i["sha256"], sha256_hex(&data));
    assert_eq!(i["metadata"]["filename"], "a.txt");
    drop(ts);
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_at_one_offset_apply_once() {
    let ts = start().await;
    let data = payload(2_000_000);
    let loc = create(&ts, "", 4_000_000, None).await;
    let (a, b) = tokio::join!(patch(&ts, &loc, 0, &data), patch(&ts, &loc, 0, &data));
    let mut statuses = [a.status, b.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [204, 409]);
    let i = info(&ts, &loc).await;
    assert_eq!(i["offset"], 2_000_000);
    assert_eq!(i["sha256"], sha256_hex(&data));
}
