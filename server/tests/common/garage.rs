//! A Garage cluster for the tests, started from the `garage` binary the way
//! `scripts/garage.mjs` does it: N nodes on loopback (free ports, replication factor N up
//! to 3), each with its own directories and TOML under one temporary directory, connected,
//! a layout applied, a bucket and a key made with the `garage` command, and the bucket's
//! CORS set through the S3 API (PutBucketCors, signed by rusty-s3 through the server's own
//! `ObjectStore`).
//!
//! [`shared`] is one three-node cluster per test binary, started on first use; tests keep
//! out of each other's way because every object key is random. [`Garage::start`] gives a
//! test a cluster of its own (to stop nodes in it). Every node runs under a `sh` watchdog
//! holding a pipe from the test process: when the process ends (the shared cluster is never
//! dropped) the pipe closes and the watchdog kills the node, and a janitor removes the
//! directory. Garage missing is a test failure with the way to install it, never a skip.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use chunkup_server::store_s3::{parse_endpoint, ObjectStore, Secret, StoreConfig};

pub const BUCKET: &str = "chunkup";
pub const REGION: &str = "garage";

/// The CORS rules the tests' pages need (as `scripts/garage.mjs` sets them).
pub const CORS: &str = "<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin>\
<AllowedMethod>GET</AllowedMethod><AllowedMethod>PUT</AllowedMethod><AllowedMethod>POST</AllowedMethod>\
<AllowedMethod>DELETE</AllowedMethod><AllowedMethod>HEAD</AllowedMethod><AllowedHeader>*</AllowedHeader>\
<ExposeHeader>ETag</ExposeHeader><ExposeHeader>x-amz-checksum-sha256</ExposeHeader>\
<MaxAgeSeconds>3600</MaxAgeSeconds></CORSRule></CORSConfiguration>";

/// The `garage` binary: `$GARAGE_BIN`, `garage` on PATH, or `~/.cargo/bin/garage`.
pub fn garage_bin() -> PathBuf {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(explicit) = std::env::var_os("GARAGE_BIN") {
        candidates.push(explicit.into());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("garage")));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/garage"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Garage is not installed (no `garage` on PATH or in ~/.cargo/bin), and these \
                 tests run against a real Garage cluster: run `bash scripts/setup.sh` (it runs \
                 `cargo install garage --locked`), or set GARAGE_BIN"
            )
        })
}

/// A loopback port free now, for a node that must be told its port. Picked below the
/// kernel's ephemeral range, so that no socket bound to port 0 meanwhile (the tests' own
/// servers start side by side with the cluster) can take it before the node binds it, and
/// never the same port twice in this process. (`scripts/lib.mjs`'s `freePort` does the same.)
fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(11_000));
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..200 {
        let draw = u64::from_str_radix(&random_hex(8), 16).unwrap_or(0);
        let port = low + (draw % u64::from(high - low)) as u16;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.push(port);
            return port;
        }
    }
    panic!("no free port between {low} and {high}")
}

fn random_hex(bytes: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    let mut i = 0u64;
    while out.len() < bytes * 2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        out.push_str(&format!("{:016x}", h.finish()));
        i += 1;
    }
    out.truncate(bytes * 2);
    out
}

struct Node {
    /// `<id>@127.0.0.1:<rpc port>`, once the cluster is formed.
    id: Option<String>,
    config: PathBuf,
    log: PathBuf,
    admin_port: u16,
    running: Option<Running>,
}

struct Running {
    watchdog: Child,
    stdin: ChildStdin,
    pid: u32,
}

/// A running cluster.
pub struct Garage {
    pub endpoints: Vec<String>,
    pub region: String,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    pub dir: PathBuf,
    pub start_time: Duration,
    bin: PathBuf,
    nodes: Mutex<Vec<Node>>,
    _janitor: Option<(Child, ChildStdin)>,
}

/// One three-node cluster per test binary.
pub fn shared() -> &'static Garage {
    static SHARED: OnceLock<Garage> = OnceLock::new();
    SHARED.get_or_init(|| Garage::start(3))
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or_default()
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
}

/// `GET /health` on a node's admin API: its status, or `None` without an answer.
fn health(port: u16) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: garage\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.split(' ').nth(1)?.parse().ok()
}

fn retry<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("garage: {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

impl Garage {
    /// Starts a cluster of `n` nodes (replication factor `min(n, 3)`); panics with the
    /// reason when it cannot.
    pub fn start(n: usize) -> Garage {
        let bin = garage_bin();
        let started = Instant::now();
        let dir = chunkup_server::config::fresh_temp_dir("chunkup-garage-test").expect("temp dir");
        let rpc_secret = random_hex(32);
        let admin_token = random_hex(24);
        let replication = n.min(3);
        let mut nodes = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..n {
            let node_dir = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let (rpc, s3, admin) = (free_port(), free_port(), free_port());
            let config = node_dir.join("garage.toml");
            let toml = format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"lmdb\"\n\
                 lmdb_map_size = \"1G\"\nreplication_factor = {replication}\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{rpc_secret}\"\n\n[s3_api]\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 s3_region = \"{REGION}\"\n\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n\
                 admin_token = \"{admin_token}\"\n",
                d = node_dir.display()
            );
            std::fs::write(&config, toml).expect("write config");
            endpoints.push(format!("http://127.0.0.1:{s3}/"));
            nodes.push(Node {
                id: None,
                log: node_dir.join("garage.log"),
                config,
                admin_port: admin,
                running: None,
            });
        }
        // Removes the whole directory once this process is gone (its stdin closes).
        let mut janitor = Command::new("sh")
            .args([
                "-c",
                "cat >/dev/null; sleep 1; rm -rf \"$0\"",
                &dir.display().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("janitor");
        let janitor_stdin = janitor.stdin.take().expect("janitor stdin");
        let mut garage = Garage {
            endpoints,
            region: REGION.into(),
            bucket: BUCKET.into(),
            key_id: String::new(),
            secret: String::new(),
            dir,
            start_time: Duration::ZERO,
            bin,
            nodes: Mutex::new(nodes),
            _janitor: Some((janitor, janitor_stdin)),
        };
        for i in 0..n {
            garage.start_node(i);
        }
        let configs: Vec<PathBuf> = garage.lock().iter().map(|n| n.config.clone()).collect();
        let ids: Vec<String> = configs
            .iter()
            .map(|c| {
                retry("node id", || garage.cli_with(c, &["node", "id", "-q"]))
                    .trim()
                    .to_owned()
            })
            .collect();
        for id in &ids[1..] {
            retry("node connect", || garage.cli(&["node", "connect", id]));
        }
        for (node, id) in garage.lock().iter_mut().zip(&ids) {
            node.id = Some(id.clone());
        }
        for id in &ids {
            let short = id.split('@').next().unwrap_or_default();
            retry("layout assign", || {
                garage.cli(&["layout", "assign", "-z", "dc1", "-c", "1G", short])
            });
        }
        retry("layout apply", || {
            garage.cli(&["layout", "apply", "--version", "1"])
        });
        let ports: Vec<u16> = garage.lock().iter().map(|n| n.admin_port).collect();
        for port in ports {
            retry("health", || match health(port) {
                Some(200) => Ok(()),
                other => Err(format!("health {other:?}")),
            });
        }
        retry("bucket create", || {
            garage.cli(&["bucket", "create", BUCKET])
        });
        let info = retry("key create", || {
            garage.cli(&["key", "create", "chunkup-test-key"])
        });
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("garage key create printed no {name}"))
        };
        garage.key_id = field("Key ID:");
        garage.secret = field("Secret key:");
        retry("bucket allow", || {
            garage.cli(&[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                BUCKET,
                "--key",
                &garage.key_id,
            ])
        });
        // CORS through the S3 API, signed by rusty-s3 (in the server's ObjectStore), on a
        // runtime of its own: this may run inside a test's runtime.
        let config = garage.store_config(None);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let store = ObjectStore::new(&config).expect("store");
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    match store.put_bucket_cors(CORS).await {
                        Ok(()) => break,
                        Err(e) if Instant::now() > deadline => panic!("garage: PutBucketCors: {e}"),
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            })
        })
        .join()
        .expect("CORS set");
        garage.start_time = started.elapsed();
        garage
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Node>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cli_with(&self, config: &Path, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(config)
            .args(args)
            .env("RUST_LOG", "error")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "garage {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ))
        }
    }

    /// Runs the `garage` command against node 0.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let config = self.lock()[0].config.clone();
        self.cli_with(&config, args)
    }

    /// The server's `--s3-*` configuration for this cluster (node 0), with `public` as
    /// the endpoint browsers use (default: node 0 too).
    pub fn store_config(&self, public: Option<&str>) -> StoreConfig {
        let endpoint = parse_endpoint(&self.endpoints[0], false).expect("endpoint");
        StoreConfig {
            public_endpoint: public
                .map(|p| parse_endpoint(p, true).expect("public endpoint"))
                .unwrap_or_else(|| endpoint.clone()),
            endpoint,
            region: self.region.clone(),
            bucket: self.bucket.clone(),
            access_key_id: self.key_id.clone(),
            secret_access_key: Secret::new(self.secret.clone()),
        }
    }

    /// Starts node `i` (again) on its directories and ports and waits for its admin API.
    pub fn start_node(&self, i: usize) {
        let mut nodes = self.lock();
        let node = &mut nodes[i];
        assert!(node.running.is_none(), "garage node {i} already runs");
        // Starts the node, prints its pid, waits for stdin (a pipe from this process) to
        // close, then kills the node if it still runs.
        let script = "exec 3<&0; \"$0\" -c \"$1\" server >>\"$2\" 2>&1 </dev/null 3<&- & pid=$!; \
                      echo \"$pid\"; cat <&3 >/dev/null; kill -9 \"$pid\" 2>/dev/null; \
                      wait \"$pid\" 2>/dev/null; exit 0";
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(&self.bin)
            .arg(&node.config)
            .arg(&node.log)
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a garage node");
        let stdin = watchdog.stdin.take().expect("watchdog stdin");
        let mut line = String::new();
        BufReader::new(watchdog.stdout.take().expect("watchdog stdout"))
            .read_line(&mut line)
            .expect("the node's pid");
        let pid: u32 = line.trim().parse().expect("a pid");
        let port = node.admin_port;
        let log = node.log.clone();
        node.running = Some(Running {
            watchdog,
            stdin,
            pid,
        });
        drop(nodes);
        retry("node start", || {
            if !alive(pid) {
                return Err(format!(
                    "node {i} exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            health(port)
                .map(drop)
                .ok_or_else(|| "no answer yet".to_owned())
        });
        // A restarted node may not know its peers yet (it saves them now and then), and
        // they retry it ever more slowly: introduce it, as an operator would.
        let (id, peer) = {
            let nodes = self.lock();
            let peer = nodes
                .iter()
                .enumerate()
                .find(|(j, n)| *j != i && n.running.is_some())
                .map(|(_, n)| n.config.clone());
            (nodes[i].id.clone(), peer)
        };
        if let (Some(id), Some(peer)) = (id, peer) {
            retry("node connect", || {
                self.cli_with(&peer, &["node", "connect", &id])
            });
        }
    }

    /// Stops node `i` with SIGKILL (as a crash) and waits until it is gone.
    pub fn stop_node(&self, i: usize) {
        let running = self.lock()[i].running.take();
        if let Some(mut r) = running {
            let _ = Command::new("kill")
                .args(["-9", &r.pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive(r.pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(r.stdin);
            let _ = r.watchdog.wait();
        }
    }

    /// Waits until node `i` reports a healthy (or degraded but working) cluster.
    pub fn wait_healthy(&self, i: usize) {
        let (port, log) = {
            let nodes = self.lock();
            (nodes[i].admin_port, nodes[i].log.clone())
        };
        retry("health", || match health(port) {
            Some(200) => Ok(()),
            other => {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                Err(format!(
                    "node {i}: health {other:?}; its log ends:\n{}",
                    tail.join("\n")
                ))
            }
        });
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let n = self.lock().len();
        for i in 0..n {
            self.stop_node(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
