//! A server that restarts: the binary is stopped (SIGTERM, or SIGKILL as in
//! a crash) in the middle of a tus upload and a range session, each with a
//! request body in flight, and started again on the same `--data-dir` and
//! port. HEAD (tus) and the status query (range) then answer the persisted
//! offset, and both uploads complete with the right bytes.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_chunkup-server");
const UNIT: usize = 256 * 1024;

/// Starts the binary on `port` (0: any) with `dir` as data dir and returns
/// it with the address it printed.
fn spawn(dir: &Path, port: u16, log: &Path) -> (Child, SocketAddr) {
    let log = std::fs::File::create(log).expect("log file");
    let mut child = Command::new(BIN)
        .args(["--port", &port.to_string(), "--seed", "5"])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("listening line");
    let port: u16 = line
        .trim_end()
        .strip_prefix("chunkup-server listening on http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn signal(child: &mut Child, name: &str) {
    let ok = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{name}");
    child.wait().expect("server exits");
}

/// Opens a request, sends its head and `sent` of its body bytes, and leaves
/// it hanging, as a client does whose upload the server's death interrupts.
async fn hang(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    sent: usize,
) -> TcpStream {
    let req = request_bytes(addr, method, path, headers, body);
    let head_len = req.len() - body.len();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&req[..head_len + sent])
        .await
        .expect("write part of the request");
    stream
}

async fn status_query(addr: SocketAddr, loc: &str, total: usize) -> Resp {
    let range = format!("bytes */{total}");
    send(addr, "PUT", loc, &[("Content-Range", range.as_str())], b"").await
}

async fn survives(signal_name: &str) {
    let dir = chunkup_server::config::fresh_temp_dir("chunkup-restart-test").expect("temp dir");
    let data_dir = dir.join("data");
    let (mut first, addr) = spawn(&data_dir, 0, &dir.join("first.log"));

    // tus: 100000 bytes committed, then a PATCH with 1.5 MB of its 2.9 MB
    // sent when the server dies (more than the 1 MiB the server buffers
    // before writing, so part of it is on disk, uncommitted).
    let data = payload(3_000_000);
    let res = send(
        addr,
        "POST",
        "/files/",
        &[
            TUS,
            ("Upload-Length", "3000000"),
            ("Upload-Metadata", "filename YS5iaW4="),
        ],
        b"",
    )
    .await;
    assert_eq!(res.status, 201);
    let loc = res.header("location").expect("Location").to_owned();
    let off = |o: usize| o.to_string();
    let res = send(
        addr,
        "PATCH",
        &loc,
        &[TUS, OCTETS, ("Upload-Offset", "0")],
        &data[..100_000],
    )
    .await;
    assert_eq!(res.status, 204);
    let o = off(100_000);
    let tus_hang = hang(
        addr,
        "PATCH",
        &loc,
        &[TUS, OCTETS, ("Upload-Offset", o.as_str())],
        &data[100_000..],
        1_500_000,
    )
    .await;

    // range: one 256 KiB unit persisted, then most of a 6-unit chunk sent.
    let total = 8 * UNIT + 100;
    let object = payload(total);
    let t = total.to_string();
    let res = send(
        addr,
        "POST",
        "/range/",
        &[("X-Upload-Content-Length", t.as_str())],
        b"",
    )
    .await;
    assert_eq!(res.status, 201);
    let range_loc = res.header("location").expect("Location").to_owned();
    let cr = format!("bytes 0-{}/{total}", UNIT - 1);
    let res = send(
        addr,
        "PUT",
        &range_loc,
        &[("Content-Range", cr.as_str())],
        &object[..UNIT],
    )
    .await;
    assert_eq!(res.status, 308);
    let cr = format!("bytes {UNIT}-{}/{total}", 7 * UNIT - 1);
    let range_hang = hang(
        addr,
        "PUT",
        &range_loc,
        &[("Content-Range", cr.as_str())],
        &object[UNIT..7 * UNIT],
        5 * UNIT + 1000,
    )
    .await;

    // Wait until the server wrote some of the interrupted bodies past the
    // committed offsets (so the restart must cut them off), then stop it.
    let id = loc.rsplit('/').next().unwrap_or_default().to_owned();
    let range_id = range_loc.rsplit('/').next().unwrap_or_default().to_owned();
    let tus_bin = data_dir.join(format!("{id}.bin"));
    let range_bin = data_dir.join("range").join(format!("{range_id}.bin"));
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    for _ in 0..100 {
        if len(&tus_bin) > 100_000 && len(&range_bin) > UNIT as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(len(&tus_bin) > 100_000, "tus body not on disk yet");
    assert!(len(&range_bin) > UNIT as u64, "range body not on disk yet");
    signal(&mut first, signal_name);
    drop((tus_hang, range_hang));

    let (mut second, again) = spawn(&data_dir, addr.port(), &dir.join("second.log"));
    assert_eq!(again, addr, "same port");

    // tus: HEAD answers what is persisted (the interrupted PATCH was never
    // committed, so exactly the first 100000 bytes), metadata included.
    let head = send(addr, "HEAD", &loc, &[TUS], b"").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("upload-offset"), Some("100000"));
    assert_eq!(head.header("upload-length"), Some("3000000"));
    assert_eq!(head.header("upload-metadata"), Some("filename YS5iaW4="));
    let i = info_at(addr, &loc).await;
    assert_eq!(i["sha256"], sha256_hex(&data[..100_000]));
    let res = send(
        addr,
        "PATCH",
        &loc,
        &[TUS, OCTETS, ("Upload-Offset", "100000")],
        &data[100_000..],
    )
    .await;
    assert_eq!(res.status, 204);
    let i = info_at(addr, &loc).await;
    assert_eq!(
        (i["complete"].as_bool(), i["sha256"].as_str()),
        (Some(true), Some(sha256_hex(&data).as_str()))
    );

    // range: the status query answers the persisted unit; the rest completes.
    let q = status_query(addr, &range_loc, total).await;
    assert_eq!(q.status, 308);
    let expected = format!("bytes=0-{}", UNIT - 1);
    assert_eq!(q.header("range"), Some(expected.as_str()));
    let cr = format!("bytes {UNIT}-{}/{total}", total - 1);
    let res = send(
        addr,
        "PUT",
        &range_loc,
        &[("Content-Range", cr.as_str())],
        &object[UNIT..],
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["sha256"], sha256_hex(&object));

    // On disk: exactly the files, no leftovers of the interrupted bodies.
    assert_eq!(len(&tus_bin), 3_000_000);
    assert_eq!(len(&range_bin), total as u64);

    signal(&mut second, "TERM");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn info_at(addr: SocketAddr, loc: &str) -> serde_json::Value {
    let res = send(addr, "GET", &format!("{loc}/info"), &[], b"").await;
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_survives_sigterm_and_restart() {
    survives("TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_survives_sigkill_and_restart() {
    survives("KILL").await;
}
