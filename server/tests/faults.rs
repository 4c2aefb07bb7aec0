//! Fault injection tests: status faults, the connection-killing `reset`,
//! the checksum-caught `corrupt`, latency and bandwidth shaping, runtime
//! control via `/__faults`, and determinism under a fixed seed.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a PATCH on a raw socket and returns whatever came back (or the
/// read error). A `reset` must yield no response bytes at all.
async fn raw_patch(
    ts: &TestServer,
    loc: &str,
    body: &[u8],
    checksum: Option<&str>,
) -> (Vec<u8>, Option<std::io::ErrorKind>) {
    let mut headers = vec![TUS, OCTETS, ("Upload-Offset", "0")];
    if let Some(c) = checksum {
        headers.push(("Upload-Checksum", c));
    }
    let req = request_bytes(ts.addr, "PATCH", loc, &headers, body);
    let mut stream = TcpStream::connect(ts.addr).await.expect("connect");
    // The server may kill the connection while we are still writing.
    let _ = stream.write_all(&req).await;
    let mut got = Vec::new();
    let err = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got))
        .await
        .expect("server must close the connection")
        .err()
        .map(|e| e.kind());
    (got, err)
}

async fn reset_once(seed: u64, checksum: bool) -> (u64, TestServer, String) {
    let ts = start_with(Opts {
        seed,
        ..Opts::default()
    })
    .await;
    let data = payload(200_000);
    let loc = create(&ts, "/faults/reset:1", data.len() as u64, None).await;
    let sum = format!("sha256 {}", b64(&Sha256::digest(&data)));
    let (got, err) = raw_patch(&ts, &loc, &data, checksum.then_some(sum.as_str())).await;
    assert!(
        got.is_empty(),
        "no HTTP response expected, got {:?}",
        String::from_utf8_lossy(&got)
    );
    // Either an RST (ConnectionReset) or, if it raced our last write, EOF.
    assert!(
        matches!(err, None | Some(std::io::ErrorKind::ConnectionReset)),
        "{err:?}"
    );
    let i = info(&ts, &loc).await;
    assert_eq!(i["faults"]["reset"], 1);
    let offset = i["offset"].as_u64().expect("offset");
    if checksum {
        assert_eq!(
            offset, 0,
            "partial body must be discarded when a checksum was sent"
        );
        assert_eq!(i["sha256"], sha256_hex(b""));
    } else {
        assert!((1..200_000).contains(&offset), "kept {offset}");
        assert_eq!(i["sha256"], sha256_hex(&data[..offset as usize]));
    }
    let id = loc.rsplit('/').next().unwrap_or_default().to_owned();
    let on_disk = std::fs::metadata(ts.data_dir().join(format!("{id}.bin")))
        .expect("bin")
        .len();
    assert_eq!(on_disk, offset);
    (offset, ts, loc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_keeps_partial_without_checksum() {
    let (kept, ts, loc) = reset_once(7, false).await;
    // HEAD agrees and the client can resume from there on a clean route.
    let id = loc.rsplit('/').next().unwrap_or_default();
    let plain = format!("/files/{id}");
    assert_eq!(
        head(&ts, &plain).await.header("upload-offset"),
        Some(kept.to_string().as_str())
    );
    let data = payload(200_000);
    assert_eq!(
        patch(&ts, &plain, kept, &data[kept as usize..])
            .await
            .status,
        204
    );
    assert_eq!(info(&ts, &plain).await["sha256"], sha256_hex(&data));
    let global = send(ts.addr, "GET", "/__faults", &[], b"").await.json();
    assert_eq!(global["injected"]["reset"], 1);
    // Same seed, same cut point.
    let (again, _, _) = reset_once(7, false).await;
    assert_eq!(kept, again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_discards_partial_with_checksum() {
    reset_once(3, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_faults() {
    let ts = start().await;
    // POST faults.
    let res = send(
        ts.addr,
        "POST",
        "/faults/500:1/files/",
        &[TUS, ("Upload-Length", "4")],
        b"",
    )
    .await;
    assert_eq!(res.status, 500);
    assert_eq!(res.header("tus-resumable"), Some("1.0.0"));
    let res = send(
        ts.addr,
        "POST",
        "/faults/503:1/files/",
        &[TUS, ("Upload-Length", "4")],
        b"",
    )
    .await;
    assert_eq!(res.status, 503);
    let res = send(
        ts.addr,
        "POST",
        "/faults/429:1,retry-after:7/files/",
        &[
            TUS,
            ("Upload-Length", "4"),
            ("Origin", "http://localhost:1"),
        ],
        b"",
    )
    .await;
    assert_eq!(res.status, 429);
    assert_eq!(res.header("retry-after"), Some("7"));
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    let res = send(
        ts.addr,
        "POST",
        "/faults/429:1/files/",
        &[TUS, ("Upload-Length", "4")],
        b"",
    )
    .await;
    assert_eq!(res.header("retry-after"), Some("1"));
    let res = send(
        ts.addr,
        "POST",
        "/faults/429:1,retry-after:date:5/files/",
        &[TUS, ("Upload-Length", "4")],
        b"",
    )
    .await;
    let date = httpdate::parse_http_date(res.header("retry-after").expect("Retry-After"))
        .expect("HTTP-date");
    let ahead = date
        .duration_since(SystemTime::now())
        .expect("in the future");
    assert!(
        ahead > Duration::from_secs(3) && ahead <= Duration::from_secs(6),
        "{ahead:?}"
    );

    // HEAD and PATCH faults on an upload created without faults: the route
    // family picks the spec, the upload is the same.
    let loc = create(&ts, "/faults/none", 4, None).await;
    let id = loc.rsplit('/').next().unwrap_or_default().to_owned();
    let head_503 = send(
        ts.addr,
        "HEAD",
        &format!("/faults/503:1/files/{id}"),
        &[TUS],
        b"",
    )
    .await;
    assert_eq!(head_503.status, 503);
    let p = format!("/faults/500:1/files/{id}");
    assert_eq!(patch(&ts, &p, 0, b"abcd").await.status, 500);
    let p = format!("/faults/429:1/files/{id}");
    assert_eq!(patch(&ts, &p, 0, b"abcd").await.status, 429);
    let i = info(&ts, &loc).await;
    assert_eq!(i["offset"], 0, "a faulted PATCH stores nothing");
    assert_eq!(
        i["faults"],
        serde_json::json!({"429": 1, "500": 1, "503": 1, "reset": 0, "corrupt": 0})
    );
    assert_eq!(patch(&ts, &loc, 0, b"abcd").await.status, 204);

    let global = send(ts.addr, "GET", "/__faults", &[], b"").await.json();
    assert_eq!(
        global["injected"],
        serde_json::json!({"429": 4, "500": 2, "503": 2, "reset": 0, "corrupt": 0})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_fault_control() {
    let ts = start_with(Opts {
        faults: "503:1",
        seed: 5,
        ..Opts::default()
    })
    .await;
    let res = send(
        ts.addr,
        "GET",
        "/__faults",
        &[("Origin", "http://localhost:1")],
        b"",
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        res.json(),
        serde_json::json!({"spec": "503:1", "seed": 5, "injected": {"429": 0, "500": 0, "503": 0, "reset": 0, "corrupt": 0}})
    );
    let post = || {
        send(
            ts.addr,
            "POST",
            "/files/",
            &[TUS, ("Upload-Length", "1")],
            b"",
        )
    };
    assert_eq!(post().await.status, 503);

    let res = send(
        ts.addr,
        "PUT",
        "/__faults?seed=9",
        &[],
        b"latency:5, 500:0.25",
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.json()["spec"], "500:0.25,latency:5");
    assert_eq!(res.json()["seed"], 9);
    assert_eq!(res.json()["injected"]["503"], 1);

    for off in ["", "none"] {
        let res = send(ts.addr, "PUT", "/__faults", &[], off.as_bytes()).await;
        assert_eq!(res.json()["spec"], "none");
        assert_eq!(res.json()["seed"], 9, "seed kept without ?seed");
        assert_eq!(post().await.status, 201);
    }
    let res = send(ts.addr, "PUT", "/__faults", &[], b"500:2").await;
    assert_eq!(res.status, 400);
    assert!(res.json()["error"]
        .as_str()
        .unwrap_or("")
        .contains("probability"));
    let res = send(ts.addr, "PUT", "/__faults?seed=x", &[], b"500:1").await;
    assert_eq!(res.status, 400);
    // Rejected updates change nothing.
    assert_eq!(
        send(ts.addr, "GET", "/__faults", &[], b"").await.json()["spec"],
        "none"
    );
}

/// Runs a fixed request script and returns every status seen.
async fn scripted_statuses(ts: &TestServer) -> Vec<u16> {
    let mut statuses = Vec::new();
    let mut loc = None;
    for _ in 0..40 {
        let res = send(
            ts.addr,
            "POST",
            "/files/",
            &[TUS, ("Upload-Length", "100")],
            b"",
        )
        .await;
        statuses.push(res.status);
        if res.status == 201 {
            loc = res.header("location").map(str::to_owned);
            break;
        }
    }
    let loc = loc.expect("created within 40 tries");
    for _ in 0..15 {
        statuses.push(head(ts, &loc).await.status);
    }
    let data = payload(100);
    let mut offset = 0u64;
    for _ in 0..15 {
        let end = (offset + 10).min(100);
        let res = patch(ts, &loc, offset, &data[offset as usize..end as usize]).await;
        statuses.push(res.status);
        if res.status == 204 {
            offset = end;
        }
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_same_fault_sequence() {
    let spec = "429:0.2,500:0.2,503:0.15";
    let run = |seed| async move {
        let ts = start_with(Opts {
            faults: spec,
            seed,
            ..Opts::default()
        })
        .await;
        scripted_statuses(&ts).await
    };
    let a = run(42).await;
    let b = run(42).await;
    let c = run(43).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert!(a.contains(&204) && a.iter().any(|s| *s >= 429), "{a:?}");

    // Reseeding at runtime restarts the sequence on the same server.
    let ts = start().await;
    let put = |addr| async move {
        let body = spec.as_bytes();
        assert_eq!(
            send(addr, "PUT", "/__faults?seed=42", &[], body)
                .await
                .status,
            200
        );
    };
    put(ts.addr).await;
    let d = scripted_statuses(&ts).await;
    put(ts.addr).await;
    let e = scripted_statuses(&ts).await;
    assert_eq!(d, a);
    assert_eq!(e, a);

    // Path-prefix families have their own streams, also reproducible.
    let ts = start_with(Opts {
        seed: 42,
        ..Opts::default()
    })
    .await;
    let mut first = Vec::new();
    for _ in 0..20 {
        first.push(
            send(
                ts.addr,
                "POST",
                "/faults/500:0.5/files/",
                &[TUS, ("Upload-Length", "1")],
                b"",
            )
            .await
            .status,
        );
    }
    let ts2 = start_with(Opts {
        seed: 42,
        ..Opts::default()
    })
    .await;
    // Traffic on another family does not shift this family's stream.
    send(
        ts2.addr,
        "POST",
        "/faults/503:0.5/files/",
        &[TUS, ("Upload-Length", "1")],
        b"",
    )
    .await;
    let mut second = Vec::new();
    for _ in 0..20 {
        second.push(
            send(
                ts2.addr,
                "POST",
                "/faults/500:0.5/files/",
                &[TUS, ("Upload-Length", "1")],
                b"",
            )
            .await
            .status,
        );
    }
    assert_eq!(first, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_bandwidth() {
    let ts = start().await;
    let loc = create(&ts, "/faults/latency:150", 100_000, None).await;
    let t = Instant::now();
    assert_eq!(head(&ts, &loc).await.status, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );

    let id = loc.rsplit('/').next().unwrap_or_default();
    let slow = format!("/faults/bandwidth:200KB/files/{id}");
    let data = payload(100_000);
    let t = Instant::now();
    assert_eq!(patch(&ts, &slow, 0, &data).await.status, 204);
    // 100 kB at 200 kB/s is 0.5 s.
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(info(&ts, &loc).await["sha256"], sha256_hex(&data));
}

/// OPTIONS answers carry `Access-Control-Expose-Headers` (browsers must read
/// `Tus-Extension` from them), and `checksum:off` hides the checksum
/// extension on its route family only.
#[tokio::test]
async fn options_expose_tus_headers_and_checksum_can_be_hidden() {
    let ts = start().await;
    let origin = [("Origin", "http://127.0.0.1:1")];
    let plain = send(ts.addr, "OPTIONS", "/files/", &origin, b"").await;
    assert_eq!(plain.status, 204);
    let exposed = plain
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for name in [
        "tus-extension",
        "tus-checksum-algorithm",
        "upload-offset",
        "location",
    ] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    assert_eq!(
        plain.header("tus-extension"),
        Some("creation,checksum,termination")
    );

    let off = send(
        ts.addr,
        "OPTIONS",
        "/faults/checksum:off,reset:0.5/files/",
        &origin,
        b"",
    )
    .await;
    assert_eq!(off.status, 204);
    assert_eq!(off.header("tus-extension"), Some("creation,termination"));
    assert_eq!(off.header("tus-checksum-algorithm"), None);

    assert_eq!(
        faults_spec_roundtrip("checksum:off,latency:3"),
        "latency:3,checksum:off"
    );
}

fn faults_spec_roundtrip(text: &str) -> String {
    chunkup_server::faults::FaultSpec::parse(text)
        .expect("valid spec")
        .to_string()
}

fn checksum_of(data: &[u8]) -> String {
    format!("sha256 {}", b64(&Sha256::digest(data)))
}

async fn patch_checked(ts: &TestServer, loc: &str, offset: u64, body: &[u8]) -> Resp {
    let off = offset.to_string();
    let sum = checksum_of(body);
    send(
        ts.addr,
        "PATCH",
        loc,
        &[
            TUS,
            OCTETS,
            ("Upload-Offset", off.as_str()),
            ("Upload-Checksum", sum.as_str()),
        ],
        body,
    )
    .await
}

/// `corrupt` flips a byte of a checksummed PATCH before verification: the
/// server answers 460 and stores nothing; without a checksum it never
/// strikes, so it cannot make the server store a wrong byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_is_caught_by_the_checksum_and_never_stored() {
    let ts = start().await;
    let data = payload(100_000);
    let loc = create(&ts, "/faults/corrupt:1", data.len() as u64, None).await;
    for _ in 0..3 {
        let res = patch_checked(&ts, &loc, 0, &data[..60_000]).await;
        assert_eq!(
            (res.status, res.reason.as_str()),
            (460, "Checksum Mismatch")
        );
    }
    let i = info(&ts, &loc).await;
    assert_eq!(i["offset"], 0, "a corrupted PATCH stores nothing");
    assert_eq!(i["faults"]["corrupt"], 3);
    let id = loc.rsplit('/').next().unwrap_or_default().to_owned();
    let on_disk = std::fs::metadata(ts.data_dir().join(format!("{id}.bin")))
        .expect("bin")
        .len();
    assert_eq!(on_disk, 0, "the corrupted bytes were cut off again");

    // Without Upload-Checksum the same family never corrupts anything.
    assert_eq!(patch(&ts, &loc, 0, &data[..60_000]).await.status, 204);
    // The client re-sends on a clean family and completes.
    let clean = format!("/files/{id}");
    let res = patch_checked(&ts, &clean, 60_000, &data[60_000..]).await;
    assert_eq!(res.status, 204);
    let i = info(&ts, &loc).await;
    assert_eq!(i["sha256"], sha256_hex(&data));
    assert_eq!(i["faults"]["corrupt"], 3);
    let global = send(ts.addr, "GET", "/__faults", &[], b"").await.json();
    assert_eq!(global["injected"]["corrupt"], 3);

    // An empty checksummed body has no byte to flip.
    let empty = create(&ts, "/faults/corrupt:1", 0, None).await;
    assert_eq!(patch_checked(&ts, &empty, 0, b"").await.status, 204);
    assert_eq!(info(&ts, &empty).await["faults"]["corrupt"], 0);
}

/// `corrupt` rolls on a stream of its own: a spec with it meets the other
/// kinds on exactly the same requests as the spec without it, and the same
/// seed gives the same corrupted requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_does_not_shift_the_other_faults() {
    async fn outcomes(faults: &str) -> Vec<u16> {
        let ts = start_with(Opts {
            faults,
            seed: 11,
            ..Opts::default()
        })
        .await;
        let data = payload(40_000);
        // Creation may be faulted too; retry until created.
        let mut loc = None;
        for _ in 0..40 {
            let res = send(
                ts.addr,
                "POST",
                "/files/",
                &[TUS, ("Upload-Length", "40000")],
                b"",
            )
            .await;
            if res.status == 201 {
                loc = res.header("location").map(str::to_owned);
                break;
            }
        }
        let loc = loc.expect("created");
        let mut statuses = Vec::new();
        let mut offset = 0;
        while offset < data.len() && statuses.len() < 200 {
            let end = (offset + 1000).min(data.len());
            let res = patch_checked(&ts, &loc, offset as u64, &data[offset..end]).await;
            statuses.push(res.status);
            if res.status == 204 {
                offset = end;
            }
        }
        assert_eq!(info(&ts, &loc).await["sha256"], sha256_hex(&data));
        statuses
    }
    let without = outcomes("503:0.3").await;
    let with = outcomes("503:0.3,corrupt:0.3").await;
    let again = outcomes("503:0.3,corrupt:0.3").await;
    assert_eq!(with, again, "same seed, same corruption");
    assert!(with.contains(&460) && with.contains(&503), "{with:?}");
    let is_503 = |v: &[u16]| v.iter().map(|s| *s == 503).collect::<Vec<_>>();
    let n = without.len().min(with.len());
    assert_eq!(is_503(&without)[..n], is_503(&with)[..n]);
}
