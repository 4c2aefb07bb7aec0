//! One stderr line per request: method, path (never the query string and
//! never any header value, so tokens in `Authorization` or URLs cannot leak
//! into CI logs), status, duration and any injected fault.
//!
//! The line is printed from a drop guard, so requests whose response is
//! never produced (a `reset` fault kills the connection, or the client went
//! away) are still logged exactly once.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// A slot where handlers describe what they injected (e.g. `fault=500`).
#[derive(Debug, Clone, Default)]
pub struct LogNote(Arc<Mutex<Option<String>>>);

impl LogNote {
    pub fn set(&self, note: impl Into<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(note.into());
    }

    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Extracting never fails: outside the logging middleware (unit tests) the
/// note is simply not printed.
impl<S: Send + Sync> FromRequestParts<S> for LogNote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<LogNote>()
            .cloned()
            .unwrap_or_default())
    }
}

struct LogLine {
    method: Method,
    path: String,
    note: LogNote,
    start: Instant,
    status: Option<StatusCode>,
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let status = match self.status {
            Some(s) => s.as_u16().to_string(),
            None => "---".to_owned(),
        };
        let mut line = format!(
            "{} {} {} {}ms",
            self.method,
            self.path,
            status,
            self.start.elapsed().as_millis()
        );
        if let Some(note) = self.note.take() {
            line.push(' ');
            line.push_str(&note);
        } else if self.status.is_none() {
            line.push_str(" (no response: connection closed)");
        }
        eprintln!("{line}");
    }
}

pub async fn log_requests(mut req: Request, next: Next) -> Response {
    let note = LogNote::default();
    req.extensions_mut().insert(note.clone());
    let mut line = LogLine {
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        note,
        start: Instant::now(),
        status: None,
    };
    let response = next.run(req).await;
    line.status = Some(response.status());
    response
}
