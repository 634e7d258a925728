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
        Err(e) => {
            // /hello is unauthenticated: the cause (host names, database names) goes to the log.
            tracing::warn!(error = %e, "health check: Postgres unavailable");
            (
                "fail",
                json!({"status": "fail", "componentType": "datastore", "output": "unavailable"}),
            )
        }
    };
    Json(json!({
        "status": status,
        "version": portcullis_proto::version::BUILD_VERSION,
        "description": "Portcullis control plane",
        "details": {"postgres": db},
    }))
}

pub async fn metrics(State(state): State<ApiState>) -> Response {
    let mut text = state.metrics.encode();
    // Per-node figures come from the registry, which every replica shares, so each replica
    // reports every node and the figures agree whichever replica is scraped.
    if let Ok(nodes) = state.store.list_nodes().await {
        let body = text.strip_suffix("# EOF\n").unwrap_or(&text).to_owned();
        text = body + &node_metrics(&nodes) + "# EOF\n";
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

type NodeFigure = fn(&crate::store::nodes::NodeInfo) -> i64;

fn node_metrics(nodes: &[crate::store::nodes::NodeInfo]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let families: [(&str, &str, NodeFigure); 3] = [
        (
            "portcullis_node_revision_lag",
            "Revisions committed since the node's last ACK.",
            |n| n.lag,
        ),
        (
            "portcullis_node_connected",
            "1 while the node has a watch stream open.",
            |n| i64::from(n.connected),
        ),
        (
            "portcullis_node_cert_expiry_timestamp_seconds",
            "When the node's current certificate expires (unix seconds).",
            |n| n.cert_expires_at.timestamp(),
        ),
    ];
    for (name, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for n in nodes.iter().filter(|n| !n.revoked) {
            let _ = writeln!(
                out,
                "{name}{{node=\"{}\",name=\"{}\",group=\"{}\"}} {}",
                n.id,
                label(&n.name),
                label(&n.group),
                value(n)
            );
        }
    }
    out
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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

/// True when the path, percent-decoded, holds a control character (U+0000 included): no
/// resource can be named so, and Postgres would refuse the id with an error instead of "not found".
fn control_in_path(path: &str) -> bool {
    let b = path.as_bytes();
    let hex = |c: u8| char::from(c).to_digit(16);
    b.iter().any(|c| c.is_ascii_control())
        || b.windows(3).any(|w| {
            w[0] == b'%'
                && matches!((hex(w[1]), hex(w[2])), (Some(h), Some(l)) if (h * 16 + l) < 0x20 || h * 16 + l == 0x7f)
        })
}

/// Refuses paths that could name no resource before any handler sees them.
pub async fn refuse_control_paths(req: Request, next: Next) -> Response {
    if control_in_path(req.uri().path()) {
        return not_found().await;
    }
    next.run(req).await
}

pub async fn count_requests(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    // Any token is a method to hyper: unknown ones share one label, or unauthenticated clients
    // could add series without bound.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m.to_owned(),
        _ => "OTHER".to_owned(),
    };
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
