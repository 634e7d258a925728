//! `/tyk/policies`: Tyk policies.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use portcullis_proto::model::{Policy, compat};
use serde_json::Value;

use super::{ApiError, ApiState, written, written_warning};

const NOT_FOUND: &str = "Policy not found";

pub async fn list(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(Value::Array(
        state
            .store
            .list_policies()
            .await
            .map_err(ApiError::from_store(NOT_FOUND))?,
    )))
}

pub async fn get(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // An id the store could not hold (U+0000) names no policy.
    Policy::check_id(&id).map_err(|_| ApiError::NotFound(NOT_FOUND))?;
    Ok(Json(
        state
            .store
            .get_policy(&id)
            .await
            .map_err(ApiError::from_store(NOT_FOUND))?,
    ))
}

pub async fn create(State(state): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let policy = Policy::parse(&body)?;
    state
        .store
        .write_policy(&policy, true)
        .await
        .map_err(ApiError::from_store(NOT_FOUND))?;
    Ok(written_warning(
        policy.id(),
        "added",
        &compat::policy_warnings(&policy),
    ))
}

pub async fn update(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    Policy::check_id(&id)?;
    let mut policy = Policy::parse(&body)?;
    policy.set_id(&id);
    state
        .store
        .write_policy(&policy, false)
        .await
        .map_err(ApiError::from_store(NOT_FOUND))?;
    Ok(written_warning(
        &id,
        "modified",
        &compat::policy_warnings(&policy),
    ))
}

pub async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Policy::check_id(&id).map_err(|_| ApiError::NotFound(NOT_FOUND))?;
    state
        .store
        .delete_policy(&id)
        .await
        .map_err(ApiError::from_store(NOT_FOUND))?;
    Ok(written(&id, "deleted"))
}

/// `PUT` or `DELETE` on the collection path with an empty id (`/tyk/{kind}/`): no resource has
/// that id, so it is the usual 404, not a 405 a client would read as a routing fault.
pub async fn unnamed() -> ApiError {
    ApiError::NotFound(NOT_FOUND)
}
