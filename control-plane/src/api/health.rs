//! Health, metrics, the OpenAPI document, Tyk's reload endpoints and the fallbacks.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{ApiError, ApiState};
use crate::metrics::HttpLabels;

/// The OpenAPI 3 description of every route (kept next to the router; a test checks they agree).
pub const OPENAPI: &str = include_str!("openapi.json");

pub async fn hello(State(state): State<ApiState>) -> Json<Value> {
    let (status, db) = match sqlx::query("SELECT 1").execute(state.store.pool()).await {
        Ok(_) => (
            "pass",
            json!({"status": "pass", "componentType": "datastore"}),
        ),
        Err(e) => (
            "fail",
            json!({"status": "fail", "componentType": "datastore", "output": e.to_string()}),
        ),
    };
    Json(json!({
        "status": status,
        "version": portcullis_proto::version::BUILD_VERSION,
        "description": "Portcullis control plane",
        "details": {"postgres": db},
    }))
}

pub async fn metrics(State(state): State<ApiState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Edges pick up every committed change by themselves; the endpoint stays so Tyk scripts work.
pub async fn reload() -> Json<Value> {
    Json(json!({"status": "ok", "message": ""}))
}

pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"status": "error", "message": "Not found"})),
    )
        .into_response()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

pub async fn count_requests(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    state
        .metrics
        .api_requests_total
        .get_or_create(&HttpLabels {
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}
