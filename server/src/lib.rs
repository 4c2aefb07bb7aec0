//! chunkup-server: the reference tus 1.0.0 upload server for chunkup's demo
//! and browser tests, with deterministic fault injection. It also speaks a
//! GCS-style resumable session (`range.rs`) under the same route families and
//! faults, and it is the widget's backend for an S3-compatible object store
//! (Garage in the tests, `store_s3.rs`): presigned single PUTs (`s3.rs`) and
//! multipart uploads through presigned part URLs (`multipart.rs`), all signed
//! with rusty-s3. On top of the presigned PUT sits an emulator of the Genesys
//! Cloud Web Messaging guest API's attachment flow (`guest/`, a WebSocket).
//!
//! This file wires the pieces together (shared state, router and layers,
//! startup); `main.rs` only adds the command line. Tests start the server
//! in-process through [`start`]. `proxy.rs` is the other mode of the
//! binary: the same fault injection in front of another server.
//!
//! Layer order, outermost first: request log → tus headers (Tus-Resumable,
//! OPTIONS discovery, tus paths only) → CORS → routes. The tus header layer sits outside
//! CORS because the CORS layer answers every OPTIONS itself, and the tus
//! discovery headers must be merged into that answer.

pub mod body;
pub mod checksum;
pub mod config;
pub mod conn;
pub mod control;
pub mod faults;
pub mod guest;
pub mod ids;
pub mod logging;
pub mod multipart;
pub mod proxy;
pub mod range;
pub mod s3;
pub mod statics;
pub mod store;
pub mod store_s3;
pub mod tus;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, Method};
use axum::{middleware, Router};
use store_s3::ObjectStore;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_http::cors::{AllowHeaders, Any, CorsLayer};

pub use config::Config;
use faults::FaultEngine;
use guest::GuestState;
use store::Store;

/// State shared by all handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    /// tus uploads.
    pub store: Arc<Store>,
    /// GCS-style range sessions (same machinery, own directory).
    pub range: Arc<Store>,
    /// The object store behind put, s3 (multipart) and guest attachments; `None`
    /// without `--s3-endpoint`.
    pub object_store: Option<Arc<ObjectStore>>,
    pub faults: Arc<FaultEngine>,
    pub max_size: u64,
    /// Guest API sessions and attachments.
    pub guest: Arc<GuestState>,
}

/// Headers a cross-origin page (the wasm-bindgen-test runner, the demo on
/// another port) must be able to read (`range` for the range protocol's
/// 308s, `etag` for downloads of guest attachments). `tus::tus_headers` repeats them on
/// OPTIONS answers, which the CORS layer treats as preflights and leaves
/// without `Access-Control-Expose-Headers`; a real tus client reads the
/// `Tus-*` headers of its own OPTIONS request.
pub const EXPOSED: [&str; 12] = [
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
    "range",
    "etag",
];

fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::HEAD,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        // Mirroring rather than `*`: the wildcard does not cover
        // `Authorization`, which clients may send.
        .allow_headers(AllowHeaders::mirror_request())
        .expose_headers(EXPOSED.map(HeaderName::from_static))
        .max_age(Duration::from_secs(86_400))
}

/// The complete application.
pub fn build_router(state: AppState, www: &Path, pkg: &Path, widget: &Path) -> Router {
    Router::new()
        .merge(tus::routes())
        .merge(range::routes())
        .merge(s3::routes())
        .merge(multipart::routes())
        .merge(guest::routes())
        .merge(control::routes())
        .merge(statics::router(www, pkg, widget))
        .layer(cors())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            tus::tus_headers,
        ))
        .layer(middleware::from_fn(logging::log_requests))
        .with_state(state)
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    DataDir(PathBuf, std::io::Error),
    Bind(String, std::io::Error),
    /// The object store is misconfigured or cannot be reached (message without secrets).
    Store(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::DataDir(dir, e) => write!(f, "data dir {}: {e}", dir.display()),
            StartError::Bind(addr, e) => write!(f, "cannot listen on {addr}: {e}"),
            StartError::Store(msg) => write!(f, "object store: {msg}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A running server. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    /// `--host` as given (the URL uses it, so `localhost` stays `localhost`
    /// and the browser origin is what the caller asked for).
    pub host: String,
    pub data_dir: PathBuf,
    /// The data dir was created by us (no `--data-dir`), so it may be removed.
    pub temp_data_dir: bool,
    pub state: AppState,
    accept: JoinHandle<()>,
}

impl Server {
    /// `http://HOST:PORT/` as printed on startup: HOST as given to
    /// `--host` (IPv6 literals bracketed), PORT the one actually bound.
    pub fn url(&self) -> String {
        http_url(&self.host, self.addr.port())
    }
}

/// `http://HOST:PORT/` with HOST as given (IPv6 literals bracketed, with or
/// without brackets in `host`): what the server and the proxy print.
pub(crate) fn http_url(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("http://[{host}]:{port}/")
    } else {
        format!("http://{host}:{port}/")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.guest.close();
    }
}

/// Binds, loads the data dir and starts serving on the current runtime.
pub async fn start(config: Config) -> Result<Server, StartError> {
    let object_store = match &config.store {
        None => None,
        Some(c) => {
            let store = ObjectStore::new(c).map_err(StartError::Store)?;
            // Fail at startup, with the reason, rather than on the first upload (and
            // before a temporary data dir exists that would then be left behind).
            store
                .check_bucket()
                .await
                .map_err(|e| StartError::Store(e.to_string()))?;
            Some(Arc::new(store))
        }
    };
    let (data_dir, temp_data_dir) = match &config.data_dir {
        Some(dir) => (dir.clone(), false),
        None => {
            let dir = config::fresh_temp_dir("chunkup-server")
                .map_err(|e| StartError::DataDir(std::env::temp_dir(), e))?;
            (dir, true)
        }
    };
    let faults = Arc::new(FaultEngine::new(config.faults.clone(), config.seed));
    let store = Store::open(&data_dir, |id| faults.seed_for_existing(id))
        .map_err(|e| StartError::DataDir(data_dir.clone(), e))?;
    // Subdirectories are skipped by the tus store's loader (their names are
    // not upload ids), so the two protocols never see each other's files.
    let range_dir = data_dir.join("range");
    let range = Store::open(&range_dir, |id| {
        faults.seed_for_existing(&format!("range:{id}"))
    })
    .map_err(|e| StartError::DataDir(range_dir.clone(), e))?;
    let state = AppState {
        store: Arc::new(store),
        range: Arc::new(range),
        object_store,
        faults,
        max_size: config.max_size,
        guest: Arc::new(GuestState::new(config.guest.clone())),
    };
    let app = build_router(state.clone(), &config.www, &config.pkg, &config.widget);
    let bind_host = config.host.trim_start_matches('[').trim_end_matches(']');
    let listener = TcpListener::bind((bind_host, config.port))
        .await
        .map_err(|e| StartError::Bind(format!("{}:{}", config.host, config.port), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(config.host.clone(), e))?;
    let accept = tokio::spawn(conn::serve(listener, app));
    Ok(Server {
        addr,
        host: config.host.clone(),
        data_dir,
        temp_data_dir,
        state,
        accept,
    })
}
