//! Command-line parsing and the server configuration. Hand-written rather
//! than clap: a dozen flags do not justify the dependency, and test scripts
//! rely on the exact behaviour documented in [`USAGE`].

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::faults::FaultSpec;
use crate::guest::GuestRules;
use crate::proxy::{self, Upstream};
use crate::store_s3::{self, Secret, StoreConfig};

/// Where `--s3-secret-access-key` is read from when the flag is not given (keeps the
/// secret off the command line, where `ps` shows it).
pub const SECRET_ENV: &str = "CHUNKUP_S3_SECRET_ACCESS_KEY";
/// `--s3-region` when not given: Garage's usual region name.
pub const DEFAULT_REGION: &str = "garage";

pub const USAGE: &str = "\
chunkup-server: reference upload server for chunkup (tus 1.0, GCS-style range
sessions, S3-style presigned PUT, a Genesys-style web messaging guest API;
with fault injection)

USAGE: chunkup-server [OPTIONS]

OPTIONS (each also accepted as --name=value):
  --port N           TCP port (default 8080; 0 picks a free port)
  --host HOST        address to bind (default 127.0.0.1)
  --data-dir DIR     where uploads are stored (default: a fresh temporary
                     directory, removed again on Ctrl-C)
  --faults SPEC      global fault spec (default none), e.g.
                     429:0.1,500:0.05,503:0.05,reset:0.1,latency:20,
                     bandwidth:2MB,retry-after:2 (or retry-after:date:2)
  --seed N           seed for fault decisions (default 1)
  --max-size BYTES   largest upload accepted (default 4294967296)
  --www DIR          static files served at / (default www)
  --pkg DIR          static files served at /pkg/ (default pkg)
  --widget DIR       static files served at /widget/ (default widget/dist)
  --s3-endpoint URL  the object store (S3 API, e.g. Garage) this server talks
                     to: http://HOST:PORT. Enables the put protocol (/presign),
                     the s3 multipart backend (/s3/...) and guest attachments
  --s3-public-endpoint URL
                     where browsers reach the store (presigned URLs are signed
                     for it), e.g. a fault proxy in front of it (default: the
                     --s3-endpoint)
  --s3-region NAME   the store's region (default garage)
  --s3-bucket NAME   the bucket
  --s3-access-key-id ID
  --s3-secret-access-key SECRET
                     the key (or set CHUNKUP_S3_SECRET_ACCESS_KEY instead, which
                     keeps it off the command line); never logged
  --guest-file-types LIST
                     guest API: allowed attachment MIME types, comma-separated
                     (default image/*,application/pdf,text/plain)
  --guest-max-kb N   guest API: maxFileSizeKB, 1 KB = 1000 bytes (default 51200)
  --guest-blocked LIST
                     guest API: blocked extensions (default .exe,.bat,.cmd,.js)
  --proxy-to URL     proxy mode: no routes of its own, forward every request
                     to URL (http://HOST:PORT) and inject --faults into the
                     write requests; only --port, --host, --faults (without
                     corrupt) and --seed apply
  --help             print this help

On startup prints exactly one line to stdout:
  chunkup-server listening on http://HOST:PORT/
or, in proxy mode:
  chunkup-server proxy listening on http://HOST:PORT/
";

/// Everything the server needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// `None` means "create a fresh temporary directory".
    pub data_dir: Option<PathBuf>,
    pub faults: FaultSpec,
    pub seed: u64,
    pub max_size: u64,
    pub www: PathBuf,
    pub pkg: PathBuf,
    pub widget: PathBuf,
    /// The object store (`--s3-*`); `None`: put, s3 and guest attachments answer 503.
    pub store: Option<StoreConfig>,
    /// Attachment rules of the guest API's `SessionResponse`.
    pub guest: GuestRules,
    /// Proxy mode: forward everything there instead of serving.
    pub proxy_to: Option<Upstream>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 8080,
            data_dir: None,
            faults: FaultSpec::default(),
            seed: 1,
            max_size: 4_294_967_296,
            www: PathBuf::from("www"),
            pkg: PathBuf::from("pkg"),
            widget: PathBuf::from("widget/dist"),
            store: None,
            guest: GuestRules::default(),
            proxy_to: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<Config>),
    Help,
}

/// Parses the arguments after the program name, reading the store's secret from
/// [`SECRET_ENV`] when `--s3-secret-access-key` is not given. Errors are messages meant
/// for stderr; the binary exits with status 2 on them.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    parse_args_with_env(args, |name| std::env::var(name).ok())
}

/// The `--s3-*` flags as given, assembled into a [`StoreConfig`] once all are read.
#[derive(Default)]
struct StoreFlags {
    endpoint: Option<String>,
    public_endpoint: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    access_key_id: Option<String>,
    secret: Option<String>,
}

impl StoreFlags {
    fn any(&self) -> bool {
        self.endpoint.is_some()
            || self.public_endpoint.is_some()
            || self.region.is_some()
            || self.bucket.is_some()
            || self.access_key_id.is_some()
            || self.secret.is_some()
    }

    fn build(self, env: impl Fn(&str) -> Option<String>) -> Result<Option<StoreConfig>, String> {
        if !self.any() {
            return Ok(None);
        }
        let missing = |flag: &str| format!("{flag} is required with the other --s3-* flags");
        let endpoint = store_s3::parse_endpoint(
            &self.endpoint.ok_or_else(|| missing("--s3-endpoint"))?,
            false,
        )
        .map_err(|e| format!("--s3-endpoint: {e}"))?;
        let public_endpoint = match self.public_endpoint {
            Some(text) => store_s3::parse_endpoint(&text, true)
                .map_err(|e| format!("--s3-public-endpoint: {e}"))?,
            None => endpoint.clone(),
        };
        let bucket = self.bucket.ok_or_else(|| missing("--s3-bucket"))?;
        if bucket.is_empty()
            || !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(format!("--s3-bucket: {bucket:?} is not a bucket name"));
        }
        let region = self.region.unwrap_or_else(|| DEFAULT_REGION.to_owned());
        if region.is_empty() || region.contains('/') {
            return Err(format!("--s3-region: {region:?} is not a region name"));
        }
        let access_key_id = self
            .access_key_id
            .filter(|k| !k.is_empty())
            .ok_or_else(|| missing("--s3-access-key-id"))?;
        // The message never repeats the secret.
        let secret = self
            .secret
            .or_else(|| env(SECRET_ENV))
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                format!("--s3-secret-access-key (or {SECRET_ENV}) is required with --s3-endpoint")
            })?;
        Ok(Some(StoreConfig {
            endpoint,
            public_endpoint,
            region,
            bucket,
            access_key_id,
            secret_access_key: Secret::new(secret),
        }))
    }
}

/// [`parse_args`] with the environment given as a lookup function (tests).
pub fn parse_args_with_env<I: IntoIterator<Item = String>>(
    args: I,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Command, String> {
    let mut config = Config::default();
    let mut store = StoreFlags::default();
    let mut given: Vec<String> = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Command::Help);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        // Never the whole argument: a mistyped `--s3-secret…=VALUE` must not print VALUE,
        // nor a value left over when a flag took the next flag as its own value.
        let unknown = || {
            if name.starts_with("--") {
                format!("unknown argument {name:?}")
            } else {
                "unexpected value (not shown) where a flag was expected".to_owned()
            }
        };
        if !matches!(
            name.as_str(),
            "--port"
                | "--host"
                | "--data-dir"
                | "--faults"
                | "--seed"
                | "--max-size"
                | "--www"
                | "--pkg"
                | "--widget"
                | "--s3-endpoint"
                | "--s3-public-endpoint"
                | "--s3-region"
                | "--s3-bucket"
                | "--s3-access-key-id"
                | "--s3-secret-access-key"
                | "--guest-file-types"
                | "--guest-max-kb"
                | "--guest-blocked"
                | "--proxy-to"
        ) {
            return Err(unknown());
        }
        let value = match inline {
            Some(v) => v,
            None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
        };
        given.push(name.clone());
        match name.as_str() {
            "--port" => {
                config.port = value
                    .parse()
                    .map_err(|_| format!("--port: {value:?} is not a port number"))?
            }
            "--host" => config.host = value,
            "--data-dir" => config.data_dir = Some(PathBuf::from(value)),
            "--faults" => {
                config.faults = FaultSpec::parse(&value).map_err(|e| format!("--faults: {e}"))?
            }
            "--seed" => {
                config.seed = value
                    .parse()
                    .map_err(|_| format!("--seed: {value:?} is not an unsigned integer"))?
            }
            "--max-size" => {
                config.max_size = value
                    .parse()
                    .map_err(|_| format!("--max-size: {value:?} is not a byte count"))?
            }
            "--www" => config.www = PathBuf::from(value),
            "--pkg" => config.pkg = PathBuf::from(value),
            "--widget" => config.widget = PathBuf::from(value),
            "--guest-file-types" => {
                config.guest.file_types = GuestRules::parse_file_types(&value)
                    .map_err(|e| format!("--guest-file-types: {e}"))?
            }
            "--guest-max-kb" => {
                config.guest.max_kb = value
                    .parse()
                    .map_err(|_| format!("--guest-max-kb: {value:?} is not a whole number"))?
            }
            "--guest-blocked" => {
                config.guest.blocked = GuestRules::parse_blocked(&value)
                    .map_err(|e| format!("--guest-blocked: {e}"))?
            }
            "--s3-endpoint" => store.endpoint = Some(value),
            "--s3-public-endpoint" => store.public_endpoint = Some(value),
            "--s3-region" => store.region = Some(value),
            "--s3-bucket" => store.bucket = Some(value),
            "--s3-access-key-id" => store.access_key_id = Some(value),
            "--s3-secret-access-key" => store.secret = Some(value),
            "--proxy-to" => {
                config.proxy_to =
                    Some(Upstream::parse(&value).map_err(|e| format!("--proxy-to: {e}"))?)
            }
            _ => return Err(unknown()),
        }
    }
    config.store = store.build(env)?;
    if config.proxy_to.is_some() {
        // Refused rather than ignored, so nobody believes a proxy stores
        // uploads in a --data-dir.
        const PROXY_FLAGS: [&str; 5] = ["--proxy-to", "--port", "--host", "--faults", "--seed"];
        if let Some(other) = given.iter().find(|n| !PROXY_FLAGS.contains(&n.as_str())) {
            return Err(format!("{other} has no effect with --proxy-to"));
        }
        proxy::check_spec(&config.faults).map_err(|e| format!("--faults: {e}"))?;
    }
    Ok(Command::Run(Box::new(config)))
}

/// Creates a fresh, uniquely named directory under the system temp dir.
pub fn fresh_temp_dir(prefix: &str) -> std::io::Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let base = std::env::temp_dir();
    // `create_dir` (not `_all`) fails if the name exists, so two servers
    // started in the same nanosecond still get distinct directories.
    for attempt in 0u32..1000 {
        let dir = base.join(format!("{prefix}-{}-{nanos}-{attempt}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "could not create a temporary directory",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, String> {
        match parse_args(args.iter().map(|s| s.to_string()))? {
            Command::Run(c) => Ok(*c),
            Command::Help => Err("help".into()),
        }
    }

    #[test]
    fn defaults() {
        let c = run(&[]).expect("defaults parse");
        assert_eq!(c.port, 8080);
        assert_eq!(c.host, "127.0.0.1");
        assert_eq!(c.seed, 1);
        assert_eq!(c.max_size, 4_294_967_296);
        assert!(c.data_dir.is_none());
        assert!(c.faults.is_none());
        assert!(c.store.is_none());
        assert_eq!(c.www, PathBuf::from("www"));
        assert_eq!(c.pkg, PathBuf::from("pkg"));
        assert_eq!(c.widget, PathBuf::from("widget/dist"));
        assert_eq!(c.guest, GuestRules::default());
        assert!(c.proxy_to.is_none());
    }

    #[test]
    fn proxy_mode_flags() {
        let c = run(&[
            "--proxy-to",
            "http://127.0.0.1:1080",
            "--port=0",
            "--faults",
            "reset:0.2",
            "--seed",
            "4",
        ])
        .expect("parses");
        assert_eq!(
            c.proxy_to,
            Some(Upstream {
                host: "127.0.0.1".into(),
                port: 1080
            })
        );
        assert!(run(&["--proxy-to", "http://a:1", "--data-dir", "/tmp/x"]).is_err());
        assert!(run(&["--proxy-to", "http://a:1", "--faults", "corrupt:0.1"]).is_ok());
        assert!(run(&["--proxy-to", "http://a:1", "--faults", "checksum:off"]).is_err());
        assert!(run(&["--proxy-to", "https://a:1"]).is_err());
        // corrupt is fine for the server itself.
        assert!(run(&["--faults", "corrupt:0.1"]).is_ok());
    }

    #[test]
    fn all_flags_both_forms() {
        let c = run(&[
            "--port",
            "0",
            "--host=0.0.0.0",
            "--data-dir",
            "/tmp/x",
            "--faults=500:0.5",
            "--seed",
            "42",
            "--max-size=1000",
            "--www",
            "w",
            "--pkg",
            "p",
            "--widget",
            "wd",
            "--guest-file-types=image/png, */*",
            "--guest-max-kb",
            "7",
            "--guest-blocked",
            "exe,.Sh",
        ])
        .expect("parses");
        assert_eq!(c.port, 0);
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.data_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(c.faults.p500, Some(0.5));
        assert_eq!(c.seed, 42);
        assert_eq!(c.max_size, 1000);
        assert_eq!(c.www, PathBuf::from("w"));
        assert_eq!(c.pkg, PathBuf::from("p"));
        assert_eq!(c.widget, PathBuf::from("wd"));
        assert_eq!(c.guest.file_types, ["image/png", "*/*"]);
        assert_eq!(c.guest.max_kb, 7);
        assert_eq!(c.guest.blocked, [".exe", ".Sh"]);
    }

    #[test]
    fn store_flags() {
        let env = |name: &str| (name == SECRET_ENV).then(|| "from-env".to_owned());
        let parse = |args: &[&str], env: &dyn Fn(&str) -> Option<String>| match parse_args_with_env(
            args.iter().map(|s| s.to_string()),
            env,
        )? {
            Command::Run(c) => Ok(*c),
            Command::Help => Err("help".to_owned()),
        };
        let none = |_: &str| None;
        let base = [
            "--s3-endpoint",
            "http://127.0.0.1:3900",
            "--s3-bucket=chunkup",
            "--s3-access-key-id",
            "GK1",
        ];
        let c = parse(&base, &env).expect("secret from the environment");
        let store = c.store.expect("store");
        assert_eq!(store.endpoint.as_str(), "http://127.0.0.1:3900/");
        assert_eq!(store.public_endpoint, store.endpoint);
        assert_eq!(store.region, "garage");
        assert_eq!(store.secret_access_key.expose(), "from-env");
        let mut args = base.to_vec();
        args.extend([
            "--s3-secret-access-key=flag",
            "--s3-public-endpoint",
            "http://127.0.0.1:4000",
            "--s3-region",
            "r1",
        ]);
        let store = parse(&args, &env).expect("parses").store.expect("store");
        assert_eq!(store.secret_access_key.expose(), "flag", "the flag wins");
        assert_eq!(store.public_endpoint.as_str(), "http://127.0.0.1:4000/");
        assert_eq!(store.region, "r1");
        let err = parse(&base, &none).expect_err("no secret");
        assert!(err.contains(SECRET_ENV), "{err}");
        assert!(parse(&["--s3-bucket", "b"], &env).is_err(), "no endpoint");
        assert!(parse(
            &[
                "--s3-endpoint",
                "https://a:1",
                "--s3-bucket",
                "b",
                "--s3-access-key-id",
                "k"
            ],
            &env
        )
        .is_err());
        assert!(parse(
            &[
                "--s3-endpoint",
                "http://a:1",
                "--s3-bucket",
                "B!",
                "--s3-access-key-id",
                "k"
            ],
            &env
        )
        .is_err());
        // A mistyped secret flag is refused without echoing the value.
        let err = parse(&["--s3-secret=hunter2"], &none).expect_err("unknown");
        assert!(!err.contains("hunter2"), "{err}");
        // An empty key id takes the secret's flag as its value: the secret is left over.
        let err = parse(
            &["--s3-access-key-id", "--s3-secret-access-key", "hunter2"],
            &none,
        )
        .expect_err("left-over value");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(parse(&["--proxy-to", "http://a:1", "--s3-bucket", "b"], &env).is_err());
        assert!(parse(&[], &env).expect("no store").store.is_none());
    }

    #[test]
    fn errors_and_help() {
        assert!(run(&["--port"]).is_err());
        assert!(run(&["--port", "70000"]).is_err());
        assert!(run(&["--faults", "bogus:1"]).is_err());
        assert!(run(&["--seed", "-1"]).is_err());
        assert!(run(&["--frobnicate"]).is_err());
        assert!(run(&["stray"]).is_err());
        assert!(run(&["--guest-file-types", "image"]).is_err());
        assert!(run(&["--guest-max-kb", "-1"]).is_err());
        assert!(run(&["--guest-blocked", "a/b"]).is_err());
        assert!(
            run(&["--secret", "00"]).is_err(),
            "the HMAC presigner is gone"
        );
        assert_eq!(run(&["--help"]).err().as_deref(), Some("help"));
    }
}
