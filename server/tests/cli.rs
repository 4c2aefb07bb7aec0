//! The binary as test scripts use it: the single stdout line (server and
//! proxy mode), exit codes, `--help`, and cleanup of the temporary data dir
//! on SIGTERM.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_chunkup-server");

#[test]
fn prints_listening_line_and_serves() {
    let mut child = Command::new(BIN)
        .args(["--port", "0", "--faults", "none", "--seed", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read line");
    let url = line
        .trim_end()
        .strip_prefix("chunkup-server listening on http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix('/'))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let port: u16 = url.parse().expect("port");
    assert_ne!(port, 0);

    // The server answers on that port.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::io::Write::write_all(
        &mut s,
        b"GET /__faults HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""seed":3"#), "{resp}");

    // SIGTERM: clean exit, temporary data dir removed.
    #[cfg(unix)]
    {
        let mut stderr = child.stderr.take().expect("stderr");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = child.wait().expect("wait");
        assert!(exit.success(), "{exit:?}");
        let mut log = String::new();
        stderr.read_to_string(&mut log).expect("stderr");
        assert!(log.contains("GET /__faults 200"), "{log}");
        let dir = log
            .lines()
            .find_map(|l| l.strip_prefix("chunkup-server: data dir "))
            .and_then(|rest| rest.split(", faults").next())
            .expect("data dir logged");
        assert!(!std::path::Path::new(dir).exists(), "{dir} left behind");
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &["--faults", "500:7"][..],
        &["--faults", "bogus"][..],
        &["--port", "x"][..],
        &["--nope"][..],
        &["--guest-file-types", "image"][..],
        &["--proxy-to", "http://127.0.0.1:1", "--data-dir", "/tmp/x"][..],
        &[
            "--proxy-to",
            "http://127.0.0.1:1",
            "--faults",
            "checksum:off",
        ][..],
        &["--proxy-to", "http://127.0.0.1:1", "--s3-bucket", "b"][..],
        &["--s3-endpoint", "http://127.0.0.1:1", "--s3-bucket", "b"][..],
        &["--secret", "00"][..],
        &["--proxy-to", "127.0.0.1:1"][..],
    ] {
        let out = Command::new(BIN).args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty());
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn help_exits_0() {
    let out = Command::new(BIN).arg("--help").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--port",
        "--host",
        "--data-dir",
        "--faults",
        "--seed",
        "--max-size",
        "--www",
        "--pkg",
        "--s3-endpoint",
        "--s3-public-endpoint",
        "--s3-region",
        "--s3-bucket",
        "--s3-access-key-id",
        "--s3-secret-access-key",
        "CHUNKUP_S3_SECRET_ACCESS_KEY",
        "--widget",
        "--guest-file-types",
        "--guest-max-kb",
        "--guest-blocked",
        "--proxy-to",
    ] {
        assert!(text.contains(flag), "{flag}");
    }
}

/// A store that cannot be reached stops the server at startup (status 1), with a message
/// that names the store but never the secret, whichever way it was given.
#[test]
fn unreachable_store_fails_at_startup_without_leaking_the_secret() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let base = [
        "--port",
        "0",
        "--s3-endpoint",
        endpoint.as_str(),
        "--s3-bucket",
        "chunkup",
        "--s3-access-key-id",
        "GKtest",
    ];
    let with_flag = Command::new(BIN)
        .args(base)
        .args(["--s3-secret-access-key", "hunter2-flag"])
        .output()
        .expect("run");
    let with_env = Command::new(BIN)
        .args(base)
        .env("CHUNKUP_S3_SECRET_ACCESS_KEY", "hunter2-env")
        .output()
        .expect("run");
    for out in [with_flag, with_env] {
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty(), "no listening line");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("object store: store HeadBucket: no answer"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn proxy_mode_prints_its_own_line_and_serves_its_counters() {
    let mut child = Command::new(BIN)
        .args([
            "--proxy-to",
            "http://127.0.0.1:9",
            "--port",
            "0",
            "--faults",
            "503:1",
            "--seed",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn proxy");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read line");
    let port: u16 = line
        .trim_end()
        .strip_prefix("chunkup-server proxy listening on http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix('/'))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::io::Write::write_all(
        &mut s,
        b"GET /__faults HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""spec":"503:1""#), "{resp}");
    assert!(
        resp.contains(r#""upstream":"http://127.0.0.1:9""#),
        "{resp}"
    );
    let _ = child.kill();
    let _ = child.wait();
}
