//! `/tyk/apis`: Tyk Classic API definitions.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use portcullis_proto::model::ApiDefinition;
use serde_json::{Value, json};

use super::{ApiError, ApiState};

const NOT_FOUND: &str = "API not found";

pub async fn list(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let apis = state
        .store
        .list_apis()
        .await
        .map_err(ApiError::from_store(NOT_FOUND))?;
    Ok(Json(Value::Array(apis)))
}

pub async fn get(
    State(state): State<ApiState>,
    Path(api_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        state
            .store
            .get_api(&api_id)
            .await
            .map_err(ApiError::from_store(NOT_FOUND))?,
    ))
}

pub async fn create(State(state): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let def = ApiDefinition::parse(&body)?;
    state
        .store
        .create_api(&def)
        .await
        .map_err(ApiError::from_store(NOT_FOUND))?;
    Ok(Json(
        json!({"key": def.api_id(), "status": "ok", "action": "added"}),
    ))
}

pub async fn update(
    State(state): State<ApiState>,
    Path(api_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut def = ApiDefinition::parse(&body)?;
    // The path names the API, as in Tyk; a different id in the body is overridden.
    def.set_api_id(&api_id);
    state
        .store
        .update_api(&def)
        .await
        .map_err(ApiError::from_store(NOT_FOUND))?;
    Ok(Json(
        json!({"key": api_id, "status": "ok", "action": "modified"}),
    ))
}

pub async fn remove(
    State(state): State<ApiState>,
    Path(api_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .store
        .delete_api(&api_id)
        .await
        .map_err(ApiError::from_store(NOT_FOUND))?;
    Ok(Json(
        json!({"key": api_id, "status": "ok", "action": "deleted"}),
    ))
}
