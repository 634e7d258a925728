//! `/tyk/cache/jwks`: makes every edge drop the JWK sets it fetched, for one API or for all, so
//! the next token refetches them (after a key rotation at the identity provider). Each call
//! commits one change-log row that edges receive as a `CacheFlush`, in revision order.

use axum::Json;
use axum::extract::{Path, State};
use portcullis_proto::model::ValidationError;
use serde_json::{Value, json};

use super::{ApiError, ApiState};
use crate::store::cache::{EVERY_API, JWKS};

/// Longest API id (as `ApiDefinition` accepts them).
const MAX_API_ID: usize = 255;

/// Tyk's answer to a cache invalidation.
fn invalidated() -> Json<Value> {
    Json(json!({"status": "ok", "message": "cache invalidated"}))
}

/// The rules API ids follow elsewhere: no `/` (Tyk's "Invalid API ID"), no white space or
/// control character, at most 255 bytes. `*` names every API in the log, so it is refused as an
/// id: `DELETE /tyk/cache/jwks` flushes every API.
fn check_api_id(api_id: &str) -> Result<(), ValidationError> {
    if api_id.contains('/') {
        return Err(ValidationError::new("api_id", "Invalid API ID"));
    }
    if api_id.is_empty()
        || api_id == EVERY_API
        || api_id.len() > MAX_API_ID
        || api_id.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ValidationError::new(
            "api_id",
            "must be 1 to 255 characters without white space (and not *)",
        ));
    }
    Ok(())
}

/// `DELETE /tyk/cache/jwks/{api_id}`. The API need not exist: an edge that holds no key set for
/// it has nothing to drop.
pub async fn flush_jwks_api(
    State(state): State<ApiState>,
    Path(api_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_api_id(&api_id)?;
    let revision = state
        .store
        .flush_cache(JWKS, Some(&api_id))
        .await
        .map_err(ApiError::Internal)?;
    tracing::info!(%api_id, revision, "JWKS cache flush committed");
    Ok(invalidated())
}

/// `DELETE /tyk/cache/jwks`: every API's key sets.
pub async fn flush_jwks_all(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let revision = state
        .store
        .flush_cache(JWKS, None)
        .await
        .map_err(ApiError::Internal)?;
    tracing::info!(revision, "JWKS cache flush for every API committed");
    Ok(invalidated())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn api_ids_follow_the_api_rules() {
        assert!(check_api_id("abc-123").is_ok());
        assert_eq!(check_api_id("a/b").unwrap_err().reason, "Invalid API ID");
        for bad in ["", "*", "a b", "a\tb", &"x".repeat(256)] {
            assert!(check_api_id(bad).is_err(), "{bad:?}");
        }
    }
}
