//! Proxy mode (`--proxy-to http://HOST:PORT`): a fault-injecting reverse
//! proxy, so the fault spec of the reference server can sit in front of
//! another upload server (such as @tus/server) that has no fault injection
//! of its own. It has no routes of its own except `/__faults`: every other
//! request is forwarded to the upstream as it came (method, path, query,
//! every end-to-end header including `Host`, the body streamed), and the
//! answer comes back the same way. Forwarding `Host` unchanged matters:
//! servers build absolute `Location` headers from it, and a rewritten one
//! would send the client around the proxy.
//!
//! Faults strike write requests only (POST, PATCH, PUT, DELETE): `latency`
//! before forwarding, `429`/`500`/`503` answered by the proxy itself (the
//! upstream never sees the request), `bandwidth` on the forwarded body, and
//! `reset` on a body with a `Content-Length` of at least 2: the proxy
//! forwards a random 1..len-1 bytes, closes the upstream connection (which
//! then holds whatever a real dropped connection would have left it), and
//! kills the client's connection with RST. `corrupt` inverts one byte of a
//! body on its way, but only of a request that carries a checksum an object
//! store verifies (`x-amz-checksum-*` as a header or in the query, or
//! `Content-MD5`): the store then refuses the body and the client re-sends.
//! Anywhere else (tus: @tus/server verifies nothing) the flipped byte would
//! simply be stored, so it never strikes there.
//!
//! A path starting with `/faults/{spec}/` (the spec percent-encoded as one
//! segment, as on the server) uses that spec instead of the global one, and
//! the prefix is stripped before forwarding: the upstream sees the rest. The
//! reference server puts such prefixes in front of the presigned URLs it
//! signs for an object store behind this proxy, whose signature covers the
//! path without the prefix (`store_s3::with_base`).
//!
//! Each request path rolls on its own stream (from the seed and the path),
//! so an upload's requests meet the same faults whatever else runs beside
//! them. WebSocket upgrades are not forwarded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, CONNECTION, CONTENT_LENGTH, HOST,
    ORIGIN, TRANSFER_ENCODING, VARY,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Extension, Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Either, Empty};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::body::{self, Pacer};
use crate::conn::{send_on_new_connection, ConnKill};
use crate::faults::{CounterSnapshot, FaultEngine, FaultKind, FaultSpec};
use crate::logging::LogNote;
use crate::tus::{self, parse_tus_u64, H_TUS_RESUMABLE, TUS_VERSION};
use crate::StartError;

/// How long a reset waits for the upstream to close its side after the cut,
/// so the upstream has taken in the bytes before the client learns of the
/// reset (and asks for the offset).
const RESET_DRAIN: Duration = Duration::from_secs(5);

/// Where the proxy forwards to: `http://HOST[:PORT][/]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// As given, IPv6 literals without brackets.
    pub host: String,
    pub port: u16,
}

impl Upstream {
    /// Parses `http://HOST[:PORT][/]` (port 80 by default). No TLS, user
    /// info, path, query or fragment: the proxy forwards paths as it gets
    /// them, so a base path would be ignored, and refusing it is clearer.
    pub fn parse(text: &str) -> Result<Upstream, String> {
        let shown = crate::store_s3::without_user_info(text);
        let bad = || format!("{shown:?} is not http://HOST:PORT");
        let rest = text.trim().strip_prefix("http://").ok_or_else(bad)?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(bad)?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Upstream {
            host: host.to_owned(),
            port,
        })
    }
}

impl Upstream {
    /// `HOST:PORT` (IPv6 literals bracketed), as in a `Host` header.
    pub fn authority(&self) -> String {
        if self.host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}", self.authority())
    }
}

/// Fault specs the proxy can apply; the message says why not otherwise.
pub fn check_spec(spec: &FaultSpec) -> Result<(), String> {
    if spec.checksum_off {
        return Err("checksum:off has no meaning for the proxy".into());
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct ProxyState {
    upstream: Arc<Upstream>,
    faults: Arc<FaultEngine>,
}

/// A running proxy. Dropping it stops accepting connections.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    /// `--host` as given, for the printed URL.
    pub host: String,
    pub upstream: Upstream,
    pub faults: Arc<FaultEngine>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// `http://HOST:PORT/`, as printed on startup.
    pub fn url(&self) -> String {
        crate::http_url(&self.host, self.addr.port())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Binds and starts proxying on the current runtime. `spec` must pass
/// [`check_spec`] (the command line checks it first).
pub async fn start(
    upstream: Upstream,
    host: &str,
    port: u16,
    spec: FaultSpec,
    seed: u64,
) -> Result<Proxy, StartError> {
    let faults = Arc::new(FaultEngine::new(spec, seed));
    let state = ProxyState {
        upstream: Arc::new(upstream.clone()),
        faults: faults.clone(),
    };
    let app = Router::new()
        .route("/__faults", get(get_faults).put(put_faults))
        .fallback(forward)
        .layer(middleware::from_fn(crate::logging::log_requests))
        .with_state(state);
    let bind_host = host.trim_start_matches('[').trim_end_matches(']');
    let listener = TcpListener::bind((bind_host, port))
        .await
        .map_err(|e| StartError::Bind(format!("{host}:{port}"), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(host.to_owned(), e))?;
    // The server's own accept loop: its connections can be killed, which
    // is what `reset` needs.
    let accept = tokio::spawn(crate::conn::serve(listener, app));
    Ok(Proxy {
        addr,
        host: host.to_owned(),
        upstream,
        faults,
        accept,
    })
}

/// JSON of `GET /__faults` and `PUT /__faults` on the proxy: the server's
/// shape plus the upstream.
#[derive(Debug, Serialize)]
struct ProxyFaults {
    spec: String,
    seed: u64,
    injected: CounterSnapshot,
    upstream: String,
}

fn status(p: &ProxyState) -> Response {
    let mut res = Json(ProxyFaults {
        spec: p.faults.global_spec().to_string(),
        seed: p.faults.seed(),
        injected: p.faults.counters.snapshot(),
        upstream: p.upstream.to_string(),
    })
    .into_response();
    res.headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res
}

async fn get_faults(State(p): State<ProxyState>) -> Response {
    status(&p)
}

/// As on the server: the spec as a text body, `?seed=N` to reseed.
async fn put_faults(
    State(p): State<ProxyState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    text: String,
) -> Response {
    let bad = |msg: String| tus::json_error(StatusCode::BAD_REQUEST, &msg);
    let seed = match query.get("seed").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(seed)) => Some(seed),
        Some(Err(_)) => return bad("seed must be an unsigned integer".into()),
    };
    let spec = match FaultSpec::parse(&text) {
        Ok(spec) => spec,
        Err(e) => return bad(e.to_string()),
    };
    if let Err(msg) = check_spec(&spec) {
        return bad(msg);
    }
    p.faults.set(spec, seed);
    status(&p)
}

fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PATCH | Method::PUT | Method::DELETE
    )
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_tus_u64)
}

/// The route family of a request: the spec of a `/faults/{spec}/` prefix (stripped from
/// the forwarded target) or the global one. `Err` for a prefix whose spec does not parse
/// or cannot be applied here.
fn family(p: &ProxyState, parts: &Parts) -> Result<(FaultSpec, String), String> {
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let Some(rest) = path_and_query.strip_prefix("/faults/") else {
        return Ok((p.faults.global_spec(), path_and_query.to_owned()));
    };
    let (raw, tail) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
        _ => return Err("a /faults/{spec} prefix must be followed by a path".into()),
    };
    let decoded = tus::percent_decode(raw).ok_or("bad percent-encoding in the fault spec")?;
    let spec = FaultSpec::parse(&decoded).map_err(|e| e.to_string())?;
    check_spec(&spec)?;
    Ok((spec, tail.to_owned()))
}

/// Whether a request carries a checksum an object store verifies, so that a corrupted
/// byte is refused rather than stored.
fn carries_store_checksum(parts: &Parts) -> bool {
    let header = parts.headers.keys().any(|name| {
        name.as_str().starts_with("x-amz-checksum-") && name.as_str() != "x-amz-checksum-algorithm"
            || name.as_str() == "content-md5"
    });
    let query = parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|pair| {
            let name = pair
                .split('=')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase();
            name.starts_with("x-amz-checksum-") && name != "x-amz-checksum-algorithm"
        });
    header || query
}

/// The `corrupt` fault in flight: the body byte at `at` is inverted on its way.
struct Flip {
    at: u64,
    faults: Arc<FaultEngine>,
    note: LogNote,
}

/// Every request but `/__faults`.
async fn forward(
    State(p): State<ProxyState>,
    note: LogNote,
    kill: Option<Extension<ConnKill>>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let (spec, target) = match family(&p, &parts) {
        Ok(family) => family,
        Err(msg) => {
            let res = with_cors(
                tus::plain(StatusCode::BAD_REQUEST, &format!("proxy: {msg}")),
                &parts.headers,
            );
            return body::reject(body, res).await;
        }
    };
    if !is_write(&parts.method) {
        return pass(&p, &parts, &target, body, None, None).await;
    }
    if let Some(delay) = spec.latency() {
        tokio::time::sleep(delay).await;
    }
    let length = content_length(&parts.headers);
    let stream = parts.uri.path().to_owned();
    let decision = p.faults.with_stream(&stream, |rng| {
        let kind = spec.roll(rng, length.is_some_and(|n| n >= 2))?;
        let cut = match (kind, length) {
            // Strictly inside the body, as on the server.
            (FaultKind::Reset, Some(len)) => 1 + rng.below(len - 1),
            _ => 0,
        };
        Some((kind, cut))
    });
    match decision {
        None => {
            // On a stream of its own, so adding `corrupt` to a spec leaves every other
            // fault where it was; rolled only where a store verifies the body.
            let flip = match length {
                Some(len)
                    if len > 0 && spec.corrupt.is_some() && carries_store_checksum(&parts) =>
                {
                    p.faults.with_stream(&format!("corrupt:{stream}"), |rng| {
                        spec.roll_corrupt(rng, len)
                    })
                }
                _ => None,
            }
            .map(|at| Flip {
                at,
                faults: p.faults.clone(),
                note: note.clone(),
            });
            pass(&p, &parts, &target, body, spec.bandwidth, flip).await
        }
        Some((kind, cut)) => {
            p.faults.counters.bump(kind);
            note.set(format!("fault={}", kind.label()));
            if kind == FaultKind::Reset {
                let kill = kill.map(|Extension(k)| k);
                return reset(&p, &parts, &target, body, cut, spec.bandwidth, kill, &note).await;
            }
            let res = with_cors(tus::fault_response(kind, &spec), &parts.headers);
            body::reject(body, res).await
        }
    }
}

/// Connection-level headers (RFC 9110 §7.6.1) belong to one hop; framing is
/// redone by hyper on each side, so `Transfer-Encoding` goes too.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// The proxy's own answers (injected faults, a missing upstream) need CORS
/// headers like the upstream's, or a page on another origin could not read
/// their status and `Retry-After`.
fn with_cors(mut res: Response, request: &HeaderMap) -> Response {
    let h = res.headers_mut();
    let origin = request
        .get(ORIGIN)
        .cloned()
        .unwrap_or(HeaderValue::from_static("*"));
    h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(VARY, HeaderValue::from_static("Origin"));
    h.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("retry-after, tus-resumable"),
    );
    if request.contains_key(&H_TUS_RESUMABLE) {
        h.insert(H_TUS_RESUMABLE, HeaderValue::from_static(TUS_VERSION));
    }
    res
}

fn bad_gateway(request: &HeaderMap, why: &str, e: &dyn std::fmt::Display) -> Response {
    eprintln!("chunkup-server: proxy: {why}: {e}");
    with_cors(
        tus::plain(StatusCode::BAD_GATEWAY, &format!("proxy: {why}")),
        request,
    )
}

/// Forwards one request and streams the answer back, over an upstream
/// connection of its own ([`send_on_new_connection`]).
async fn pass(
    p: &ProxyState,
    parts: &Parts,
    target: &str,
    client_body: Body,
    bandwidth: Option<u64>,
    flip: Option<Flip>,
) -> Response {
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    let has_body = content_length(&parts.headers).is_some_and(|n| n > 0)
        || parts.headers.contains_key(TRANSFER_ENCODING);
    let body = if has_body {
        Either::Left(pump(client_body, bandwidth, flip))
    } else {
        Either::Right(Empty::<Bytes>::new())
    };
    let mut request = hyper::Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = match target.parse() {
        Ok(uri) => uri,
        Err(e) => return bad_gateway(&parts.headers, "bad request target", &e),
    };
    *request.headers_mut() = headers;
    match send_on_new_connection(&p.upstream.host, p.upstream.port, request).await {
        Ok(answer) => {
            let (mut head, incoming) = answer.into_parts();
            strip_hop_by_hop(&mut head.headers);
            // The parts keep hyper's reason-phrase extension (tus's
            // `460 Checksum Mismatch`), which our server side writes back.
            Response::from_parts(head, Body::new(incoming))
        }
        Err(e) => bad_gateway(&parts.headers, &format!("upstream {}", e.step), &e.error),
    }
}

/// The client's body as the upstream request's body, read on a task of its
/// own so `bandwidth` can pace it; a client body that breaks aborts the
/// upstream body, which makes hyper drop the upstream connection. With
/// `flip`, one byte is inverted on its way (counted and logged once it went by).
fn pump(
    mut client: Body,
    bandwidth: Option<u64>,
    flip: Option<Flip>,
) -> http_body_util::Channel<Bytes, std::io::Error> {
    let (mut tx, rx) = http_body_util::Channel::new(4);
    tokio::spawn(async move {
        let pacer = Pacer::new(bandwidth);
        let mut sent = 0u64;
        loop {
            match client.frame().await {
                None => break,
                Some(Err(e)) => {
                    tx.abort(std::io::Error::other(e));
                    break;
                }
                Some(Ok(frame)) => {
                    let Ok(mut data) = frame.into_data() else {
                        continue; // trailers: none of our clients send them
                    };
                    if let Some(f) = flip.as_ref() {
                        if (sent..sent + data.len() as u64).contains(&f.at) {
                            data = body::flip(data, sent, Some(f.at));
                            f.faults.counters.bump(FaultKind::Corrupt);
                            f.note.set(format!("fault=corrupt at={}", f.at));
                        }
                    }
                    sent += data.len() as u64;
                    if tx.send_data(data).await.is_err() {
                        break; // the upstream gave up
                    }
                    pacer.pace(sent).await;
                }
            }
        }
    });
    rx
}

/// The `reset` fault: forwards the request head and `cut` body bytes on a
/// connection of its own, closes it (the upstream sees the body end early,
/// as when a client vanishes) and waits for the upstream to close too, then
/// kills the client's connection. Written by hand rather than through
/// hyper's client because the point is to control exactly which bytes reach
/// the upstream before the connection ends, which hyper does not expose.
#[allow(clippy::too_many_arguments)]
async fn reset(
    p: &ProxyState,
    parts: &Parts,
    target: &str,
    mut client_body: Body,
    cut: u64,
    bandwidth: Option<u64>,
    kill: Option<ConnKill>,
    note: &LogNote,
) -> Response {
    let mut head = Vec::new();
    head.extend_from_slice(format!("{} {target} HTTP/1.1\r\n", parts.method).as_bytes());
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    if !headers.contains_key(HOST) {
        // HTTP/1.1 requires one; the client's was forwarded when present.
        if let Ok(v) = HeaderValue::from_str(&p.upstream.authority()) {
            headers.insert(HOST, v);
        }
    }
    for (name, value) in &headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");

    let mut forwarded = 0u64;
    match TcpStream::connect((p.upstream.host.as_str(), p.upstream.port)).await {
        Ok(mut upstream) => {
            let _ = upstream.set_nodelay(true);
            if upstream.write_all(&head).await.is_ok() {
                let pacer = Pacer::new(bandwidth);
                while forwarded < cut {
                    let data = match client_body.frame().await {
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(d) => d,
                            Err(_) => continue,
                        },
                        _ => break, // the client went away first
                    };
                    let take = data.len().min((cut - forwarded) as usize);
                    if upstream.write_all(&data[..take]).await.is_err() {
                        break;
                    }
                    forwarded += take as u64;
                    pacer.pace(forwarded).await;
                }
                let _ = upstream.flush().await;
            }
            // FIN after the bytes (never RST, which could discard them
            // unread), then whatever the upstream says is thrown away.
            let _ = upstream.shutdown().await;
            let _ = tokio::time::timeout(RESET_DRAIN, async {
                let mut sink = [0u8; 4096];
                while matches!(upstream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
        }
        Err(e) => eprintln!("chunkup-server: proxy: upstream unreachable: {e}"),
    }
    note.set(format!("fault=reset sent={forwarded}"));
    crate::conn::kill(kill)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let ok = |text: &str, host: &str, port: u16| {
            assert_eq!(
                Upstream::parse(text),
                Ok(Upstream {
                    host: host.into(),
                    port
                }),
                "{text}"
            );
        };
        ok("http://127.0.0.1:1080", "127.0.0.1", 1080);
        ok("http://127.0.0.1:1080/", "127.0.0.1", 1080);
        ok("http://localhost", "localhost", 80);
        ok("http://[::1]:9000/", "::1", 9000);
        for bad in [
            "",
            "127.0.0.1:1080",
            "https://a:1",
            "http://",
            "http://a:0",
            "http://a:x",
            "http://a:1/files/",
            "http://u@a:1",
            "http://a:1?q",
            "http://[::1",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Upstream::parse("http://[::1]:9000")
                .expect("valid")
                .to_string(),
            "http://[::1]:9000"
        );
    }

    #[test]
    fn specs_for_the_proxy() {
        let spec = |s: &str| FaultSpec::parse(s).expect("valid");
        assert!(check_spec(&spec("429:0.1,503:0.1,reset:0.2,latency:5")).is_ok());
        assert!(check_spec(&spec("corrupt:0.1")).is_ok());
        assert!(check_spec(&spec("checksum:off")).is_err());
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(HOST, HeaderValue::from_static("a:1"));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "host"]);
    }
}
