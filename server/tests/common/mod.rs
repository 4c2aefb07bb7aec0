//! Test harness shared by the integration tests: starts the server
//! in-process on port 0 with its own temporary data dir, and talks to it
//! with a deliberately tiny hand-written HTTP/1.1 client (one connection per
//! request, `Connection: close`), so tests see exactly what is on the wire.

#![allow(dead_code)] // each test binary uses a different subset

pub mod garage;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chunkup_server::config::{fresh_temp_dir, Config};
use chunkup_server::faults::FaultSpec;
use chunkup_server::store_s3::StoreConfig;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct TestServer {
    pub server: chunkup_server::Server,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Opts<'a> {
    pub faults: &'a str,
    pub seed: u64,
    pub max_size: u64,
    pub www: Option<&'a Path>,
    pub pkg: Option<&'a Path>,
    /// Defaults to `<test dir>/data`.
    pub data_dir: Option<&'a Path>,
    /// The object store (`--s3-*`); none when None.
    pub store: Option<StoreConfig>,
    pub widget: Option<&'a Path>,
    /// Guest API attachment rules; the `--guest-*` defaults when None.
    pub guest: Option<chunkup_server::guest::GuestRules>,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            faults: "none",
            seed: 1,
            max_size: 1 << 30,
            www: None,
            pkg: None,
            data_dir: None,
            store: None,
            widget: None,
            guest: None,
        }
    }
}

pub async fn start() -> TestServer {
    start_with(Opts::default()).await
}

/// A server backed by the test binary's shared Garage cluster ([`garage::shared`]),
/// browsers reaching the store at `public` (default: Garage's node 0 itself).
pub async fn start_with_garage(public: Option<&str>) -> TestServer {
    let cluster = garage::shared();
    start_with(Opts {
        store: Some(cluster.store_config(public)),
        ..Opts::default()
    })
    .await
}

pub async fn start_with(opts: Opts<'_>) -> TestServer {
    let dir = fresh_temp_dir("chunkup-server-test").expect("temp dir");
    let missing = dir.join("no-such-static-dir");
    let config = Config {
        host: "127.0.0.1".into(),
        port: 0,
        data_dir: Some(
            opts.data_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.join("data")),
        ),
        faults: FaultSpec::parse(opts.faults).expect("test fault spec"),
        seed: opts.seed,
        max_size: opts.max_size,
        www: opts
            .www
            .map(Path::to_path_buf)
            .unwrap_or_else(|| missing.clone()),
        pkg: opts
            .pkg
            .map(Path::to_path_buf)
            .unwrap_or_else(|| missing.clone()),
        widget: opts.widget.map(Path::to_path_buf).unwrap_or(missing),
        store: opts.store,
        guest: opts.guest.unwrap_or_default(),
        proxy_to: None,
    };
    let server = chunkup_server::start(config).await.expect("server starts");
    TestServer {
        addr: server.addr,
        server,
        dir,
    }
}

impl TestServer {
    pub fn data_dir(&self) -> PathBuf {
        self.server.data_dir.clone()
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Serialises a request head (and body) the way a browser would.
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() || matches!(method, "POST" | "PATCH" | "PUT") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(&request_bytes(addr, method, path, headers, body))
        .await
        .expect("write request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    parse_response(&raw, method == "HEAD")
}

pub fn parse_response(raw: &[u8], head_only: bool) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let mut parts = status_line.splitn(3, ' ');
    let _version = parts.next();
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let reason = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if head_only {
        body.clear();
    }
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        reason,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .expect("chunk size");
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}

pub const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
pub const OCTETS: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic test payload.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// POSTs until created (retrying injected faults) and returns the Location.
pub async fn create(ts: &TestServer, base: &str, length: u64, metadata: Option<&str>) -> String {
    let len = length.to_string();
    let mut headers = vec![TUS, ("Upload-Length", len.as_str())];
    if let Some(m) = metadata {
        headers.push(("Upload-Metadata", m));
    }
    let res = send(ts.addr, "POST", &format!("{base}/files/"), &headers, b"").await;
    assert_eq!(res.status, 201, "create failed: {}", res.text());
    res.header("location").expect("Location").to_owned()
}

pub async fn patch(ts: &TestServer, loc: &str, offset: u64, body: &[u8]) -> Resp {
    let off = offset.to_string();
    send(
        ts.addr,
        "PATCH",
        loc,
        &[TUS, OCTETS, ("Upload-Offset", off.as_str())],
        body,
    )
    .await
}

pub async fn head(ts: &TestServer, loc: &str) -> Resp {
    send(ts.addr, "HEAD", loc, &[TUS], b"").await
}

pub async fn info(ts: &TestServer, loc: &str) -> serde_json::Value {
    let res = send(ts.addr, "GET", &format!("{loc}/info"), &[], b"").await;
    assert_eq!(res.status, 200, "info failed: {}", res.text());
    res.json()
}

/// Sends raw request bytes and returns whatever came back (or the read
/// error). A `reset` fault must yield no response bytes at all.
pub async fn raw_request(addr: SocketAddr, req: &[u8]) -> (Vec<u8>, Option<std::io::ErrorKind>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may kill the connection while we are still writing.
    let _ = stream.write_all(req).await;
    let mut got = Vec::new();
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut got),
    )
    .await
    .expect("server must close the connection")
    .err()
    .map(|e| e.kind());
    (got, err)
}

/// Asserts that a request was answered by a reset: no HTTP bytes, and an
/// RST (or EOF, if it raced our last write).
pub fn assert_reset(got: &[u8], err: Option<std::io::ErrorKind>) {
    assert!(
        got.is_empty(),
        "no HTTP response expected, got {:?}",
        String::from_utf8_lossy(got)
    );
    assert!(
        matches!(err, None | Some(std::io::ErrorKind::ConnectionReset)),
        "{err:?}"
    );
}

/// Splits `http://HOST:PORT/path?query` into the address and the request target.
pub fn url_target(url: &str) -> (SocketAddr, String) {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("not http: {url}"));
    let (authority, target) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .parse()
        .unwrap_or_else(|_| panic!("not an IP:port authority: {url}"));
    (addr, target.to_owned())
}

/// `send` to an absolute `http://IP:PORT/…` URL (a presigned one, say): `Host` is the
/// URL's authority, as a browser sends it.
pub async fn send_url(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let (addr, target) = url_target(url);
    send(addr, method, &target, headers, body).await
}

/// POSTs JSON to the server and returns the answer.
pub async fn post_json(ts: &TestServer, path: &str, body: &serde_json::Value) -> Resp {
    send(
        ts.addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
}

/// The `headers` object of a presign answer as pairs.
pub fn header_pairs(v: &serde_json::Value) -> Vec<(String, String)> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Borrowed view of owned header pairs, for `send`.
pub fn as_refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The S3 error code of an XML error body.
pub fn s3_code(res: &Resp) -> String {
    let text = res.text();
    text.split("<Code>")
        .nth(1)
        .and_then(|rest| rest.split("</Code>").next())
        .unwrap_or_default()
        .to_owned()
}
