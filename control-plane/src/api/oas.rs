//! `/tyk/apis/oas`: Tyk OAS API definitions, written through the same path as Classic ones
//! (`apis.rs`) after `portcullis_proto::model::oas` maps them (docs/oas.md).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use portcullis_proto::model::{ApiDefinition, oas};
use serde_json::Value;

use super::apis::{self, NOT_FOUND};
use super::{ApiError, ApiState};

/// Tyk's refusal of a write to an OAS route without the extension.
const EXTENSION_REQUIRED: ApiError = ApiError::Refused {
    field: oas::EXTENSION,
    message: "the payload should contain x-tyk-api-gateway",
};

fn view(stored: Value) -> Result<Value, ApiError> {
    let def = ApiDefinition::from_value(stored)?;
    Ok(oas::to_oas(&def))
}

/// Every API in its OAS view; one written as Classic gets a generated document.
pub async fn list(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let apis = state
        .store
        .list_apis()
        .await
        .map_err(ApiError::from_store(NOT_FOUND))?;
    let views = apis.into_iter().map(view).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(Value::Array(views)))
}

pub async fn get(
    State(state): State<ApiState>,
    Path(api_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let stored = state
        .store
        .get_api(&api_id)
        .await
        .map_err(ApiError::from_store(NOT_FOUND))?;
    Ok(Json(view(stored)?))
}

fn parse(body: &[u8]) -> Result<oas::OasApi, ApiError> {
    if !oas::has_extension(body)? {
        return Err(EXTENSION_REQUIRED);
    }
    Ok(oas::parse(body)?)
}

pub async fn create(State(state): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let api = parse(&body)?;
    apis::store_new(&state, api.definition, api.warnings).await
}

pub async fn update(
    State(state): State<ApiState>,
    Path(api_id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let mut api = parse(&body)?;
    // The path names the API, as in Tyk; a different `info.id` is overridden.
    oas::set_id(&mut api, &api_id);
    apis::store_replacement(&state, api.definition, api.warnings).await
}

pub async fn remove(state: State<ApiState>, api_id: Path<String>) -> Result<Json<Value>, ApiError> {
    apis::remove(state, api_id).await
}

/// `POST /tyk/apis/oas/import`: a plain OpenAPI document and Tyk's query parameters.
pub async fn import(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if oas::has_extension(&body)? {
        return Err(ApiError::Refused {
            field: oas::EXTENSION,
            message: "the import payload should not contain x-tyk-api-gateway",
        });
    }
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let params =
        oas::ImportParams::from_query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let api = oas::import(&body, &params)?;
    apis::store_new(&state, api.definition, api.warnings).await
}
