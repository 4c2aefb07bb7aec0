//! Static files: `--www` at `/` (with `index.html` for directories),
//! `--pkg` at `/pkg/` (the wasm-pack output) and `--widget` at `/widget/`
//! (the built chat widget that talks to the guest API, `guest.rs`). A
//! missing directory or file is a plain 404. Content types are pinned for the two kinds browsers are
//! strict about: `application/wasm` (required by
//! `WebAssembly.instantiateStreaming`) and `text/javascript` (module
//! scripts; mime_guess maps `.mjs` to the legacy `application/javascript`).

use std::path::Path;

use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::services::ServeDir;

pub fn router<S: Clone + Send + Sync + 'static>(
    www: &Path,
    pkg: &Path,
    widget: &Path,
) -> Router<S> {
    Router::new()
        .nest_service("/pkg", ServeDir::new(pkg))
        .nest_service("/widget", ServeDir::new(widget))
        .fallback_service(ServeDir::new(www))
        .layer(middleware::from_fn(fix_headers))
}

async fn fix_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_ascii_lowercase();
    let mut res = next.run(req).await;
    if res.status().is_success() {
        let forced = if path.ends_with(".wasm") {
            Some("application/wasm")
        } else if path.ends_with(".js") || path.ends_with(".mjs") {
            Some("text/javascript")
        } else {
            None
        };
        if let Some(ct) = forced {
            res.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        }
    }
    // The demo and tests rebuild pkg/ often; always revalidate.
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}
