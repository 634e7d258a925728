//! `/portcullis/*`: bootstrap tokens, the node CA, the node registry and how fast nodes ACK.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use portcullis_proto::model::ValidationError;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiError, ApiState};

const TOKEN_NOT_FOUND: &str = "Bootstrap token not found";
const NODE_NOT_FOUND: &str = "Node not found";
/// Tokens live a day unless told otherwise.
const DEFAULT_TOKEN_LIFETIME_SECS: i64 = 86_400;
/// A token joins one node unless `max_uses` says more: a leaked token is worth one node at most.
const DEFAULT_TOKEN_USES: i32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    #[serde(default = "default_group")]
    group: String,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    max_uses: Option<i32>,
    #[serde(default)]
    description: String,
}

fn default_group() -> String {
    "default".into()
}

fn parse_new_token(body: &[u8]) -> Result<NewToken, ValidationError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let t: NewToken = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ValidationError::new(
            if path == "." { "body".into() } else { path },
            e.into_inner().to_string(),
        )
    })?;
    if t.group.is_empty()
        || !t
            .group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ValidationError::new(
            "group",
            "must be non-empty letters, digits, '-', '_' or '.'",
        ));
    }
    if t.description.len() > 1024 || t.description.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "description",
            "must be at most 1024 bytes without control characters",
        ));
    }
    if t.expires_in
        .is_some_and(|s| s <= 0 || s > 10 * 365 * 86_400)
    {
        return Err(ValidationError::new(
            "expires_in",
            "must be between 1 second and 10 years",
        ));
    }
    if t.max_uses.is_some_and(|m| m <= 0) {
        return Err(ValidationError::new(
            "max_uses",
            "must be positive (absent or null: one use)",
        ));
    }
    Ok(t)
}

pub async fn create_token(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let t = parse_new_token(&body)?;
    let lifetime = chrono::Duration::seconds(t.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS));
    let max_uses = t.max_uses.unwrap_or(DEFAULT_TOKEN_USES);
    let created = state
        .store
        .create_bootstrap_token(&t.group, lifetime, Some(max_uses), &t.description)
        .await
        .map_err(ApiError::from_store(TOKEN_NOT_FOUND))?;
    tracing::info!(token_id = %created.id, group = %created.group, "bootstrap token created");
    Ok(Json(json!({
        "id": created.id,
        "token": created.token,
        "group": created.group,
        "expires_at": created.expires_at,
        "max_uses": max_uses,
        "ca_hash": state.ca.ca_hash,
    })))
}

pub async fn list_tokens(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let tokens = state
        .store
        .list_bootstrap_tokens()
        .await
        .map_err(ApiError::from_store(TOKEN_NOT_FOUND))?;
    Ok(Json(json!({ "tokens": tokens })))
}

pub async fn revoke_token(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // Token ids are short and alphanumeric; anything else (U+0000 included) names no token.
    if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::NotFound(TOKEN_NOT_FOUND));
    }
    state
        .store
        .revoke_bootstrap_token(&id)
        .await
        .map_err(ApiError::from_store(TOKEN_NOT_FOUND))?;
    tracing::info!(token_id = %id, "bootstrap token revoked");
    Ok(Json(
        json!({"key": id, "status": "ok", "action": "deleted"}),
    ))
}

pub async fn ca(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({"ca_hash": state.ca.ca_hash, "certificate": state.ca.certificate_pem}))
}

fn node_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(NODE_NOT_FOUND))
}

pub async fn list_nodes(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let nodes = state
        .store
        .list_nodes()
        .await
        .map_err(ApiError::from_store(NODE_NOT_FOUND))?;
    Ok(Json(json!({ "nodes": nodes })))
}

pub async fn get_node(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let node = state
        .store
        .get_node(node_id(&id)?)
        .await
        .map_err(ApiError::from_store(NODE_NOT_FOUND))?;
    Ok(Json(json!(node)))
}

pub async fn revoke_node(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .store
        .revoke_node(node_id(&id)?)
        .await
        .map_err(ApiError::from_store(NODE_NOT_FOUND))?;
    tracing::info!(node_id = %id, "node revoked");
    Ok(Json(
        json!({"key": id, "status": "ok", "action": "deleted"}),
    ))
}

/// `GET /portcullis/propagation`: the commit → ACK histogram this replica has observed, per node
/// group, as the console draws it (docs/console.md). Each replica counts the ACKs of the nodes
/// whose streams it serves, as its `portcullis_sync_propagation_seconds` does.
pub async fn propagation(State(state): State<ApiState>) -> Json<Value> {
    Json(json!({
        "bounds_seconds": crate::metrics::propagation::BOUNDS,
        "groups": state.metrics.propagation.snapshot(),
    }))
}
