//! `/tyk/apis`: Tyk Classic API definitions.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use portcullis_proto::model::{ApiDefinition, ValidationError};
use portcullis_proto::model::{auth_methods, compat, oas};
use serde_json::Value;

use super::{ApiError, ApiState, stored_secrets, written, written_warning};

pub(super) const NOT_FOUND: &str = "API not found";

/// Refuses a definition that enables an authentication method the edges do not implement: an
/// edge would otherwise have to refuse every request to it (docs/security.md).
pub(super) fn servable(def: &ApiDefinition) -> Result<(), ValidationError> {
    match auth_methods::unsupported(def).into_iter().next() {
        None => Ok(()),
        Some(u) => Err(ValidationError::new(
            u.field,
            format!(
                "enables {}, an authentication or access-control feature Portcullis does not implement yet",
                u.method
            ),
        )),
    }
}

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
    store_new(&state, ApiDefinition::parse(&body)?, Vec::new()).await
}

pub async fn update(
    State(state): State<ApiState>,
    Path(api_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut def = ApiDefinition::parse(&body)?;
    // The path names the API, as in Tyk; a different id in the body is overridden.
    def.set_api_id(&api_id);
    store_replacement(&state, def, Vec::new()).await
}

/// The checks and sealing every write of a definition goes through, whichever format it came
/// in (Classic here, Tyk OAS in `oas.rs`): the warnings are the classic ones after `extra`.
fn prepare(
    state: &ApiState,
    def: ApiDefinition,
    mut extra: Vec<compat::Warning>,
) -> Result<(ApiDefinition, Vec<compat::Warning>), ApiError> {
    servable(&def)?;
    extra.extend(compat::api_warnings(&def));
    let def = stored_secrets::seal_api(def, &state.stored_secrets)?;
    Ok((def, extra))
}

/// Refuses the ids the static `/tyk/apis/oas` routes would shadow (docs/oas.md).
pub(super) fn not_reserved(def: &ApiDefinition) -> Result<(), ValidationError> {
    if oas::RESERVED_IDS.contains(&def.api_id()) {
        return Err(ValidationError::new(
            "api_id",
            "\"oas\" and \"import\" are reserved: /tyk/apis/oas routes would shadow the API",
        ));
    }
    Ok(())
}

/// Stores a new API (`added`). The ids the OAS routes shadow are refused (docs/oas.md).
pub(super) async fn store_new(
    state: &ApiState,
    def: ApiDefinition,
    extra: Vec<compat::Warning>,
) -> Result<Json<Value>, ApiError> {
    not_reserved(&def)?;
    let (def, warnings) = prepare(state, def, extra)?;
    state
        .store
        .create_api(&def)
        .await
        .map_err(ApiError::from_store(NOT_FOUND))?;
    Ok(written_warning(def.api_id(), "added", &warnings))
}

/// Replaces a stored API (`modified`); the definition already carries the id of the path.
pub(super) async fn store_replacement(
    state: &ApiState,
    def: ApiDefinition,
    extra: Vec<compat::Warning>,
) -> Result<Json<Value>, ApiError> {
    let (def, warnings) = prepare(state, def, extra)?;
    state
        .store
        .update_api(&def)
        .await
        .map_err(ApiError::from_store(NOT_FOUND))?;
    Ok(written_warning(def.api_id(), "modified", &warnings))
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
    Ok(written(&api_id, "deleted"))
}

/// `PUT` or `DELETE` on the collection path with an empty id (`/tyk/{kind}/`): no resource has
/// that id, so it is the usual 404, not a 405 a client would read as a routing fault.
pub async fn unnamed() -> ApiError {
    ApiError::NotFound(NOT_FOUND)
}
