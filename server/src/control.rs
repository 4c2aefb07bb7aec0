//! Runtime fault control: `GET /__faults` reports the global spec, seed and
//! counters; `PUT /__faults` (text body in the spec syntax, optional
//! `?seed=N`) replaces the global spec. Lets a test script switch faults on
//! a running server without restarting it.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::faults::{CounterSnapshot, FaultSpec};
use crate::AppState;

/// JSON shape of both GET and PUT answers.
#[derive(Debug, Serialize)]
pub struct FaultsStatus {
    /// Canonical form of the global spec ("none" when off).
    pub spec: String,
    pub seed: u64,
    /// Faults injected since startup on every route family.
    pub injected: CounterSnapshot,
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/__faults", get(get_faults).put(put_faults))
}

fn status(app: &AppState) -> Json<FaultsStatus> {
    Json(FaultsStatus {
        spec: app.faults.global_spec().to_string(),
        seed: app.faults.seed(),
        injected: app.faults.counters.snapshot(),
    })
}

async fn get_faults(State(app): State<AppState>) -> Json<FaultsStatus> {
    status(&app)
}

async fn put_faults(
    State(app): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let bad = |msg: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": msg })),
        )
            .into_response()
    };
    let seed = match query.get("seed").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(seed)) => Some(seed),
        Some(Err(_)) => return bad("seed must be an unsigned integer".into()),
    };
    let spec = match FaultSpec::parse(&body) {
        Ok(spec) => spec,
        Err(e) => return bad(e.to_string()),
    };
    app.faults.set(spec, seed);
    status(&app).into_response()
}
