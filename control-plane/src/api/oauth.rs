//! The OAuth 2.0 provider's management routes: authorize-client (the login portal's call),
//! revoke, revoke_all, deleting a refresh token and purging lapsed tokens (docs/oauth.md). The
//! grants themselves live in `crate::oauth`.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use portcullis_proto::key_hash::key_hash;
use portcullis_proto::model::ValidationError;
use serde_json::{Value, json};

use super::{ApiError, ApiState, query_param};
use crate::oauth::OAuthReply;

const MAX_FIELDS: usize = 64;
const MAX_NAME: usize = 64;
const MAX_VALUE: usize = 8 * 1024;
const MAX_BODY: usize = 64 * 1024;

/// A 400 in Tyk's shape.
fn bad(message: &str) -> Response {
    reply(OAuthReply {
        status: 400,
        body: json!({"status": "error", "message": message}),
    })
}

fn reply(r: OAuthReply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, Json(r.body)).into_response();
    // Codes and tokens must not sit in a cache (RFC 6749 5.1).
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// The body's fields: a form, or (as Tyk accepts) a JSON object of strings. Bounded.
fn fields(body: &[u8]) -> Result<Vec<(String, String)>, &'static str> {
    if body.len() > MAX_BODY {
        return Err("the body is too large");
    }
    let trimmed = body.trim_ascii_start();
    let out: Vec<(String, String)> = if trimmed.first() == Some(&b'{') {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(trimmed) else {
            return Err("the body must be a form or a JSON object of strings");
        };
        let mut out = Vec::with_capacity(m.len());
        for (k, v) in m {
            let Value::String(v) = v else {
                return Err("the body must be a form or a JSON object of strings");
            };
            out.push((k, v));
        }
        out
    } else {
        url::form_urlencoded::parse(body)
            .take(MAX_FIELDS + 1)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    };
    if out.len() > MAX_FIELDS {
        return Err("too many fields");
    }
    if out
        .iter()
        .any(|(k, v)| k.len() > MAX_NAME || v.len() > MAX_VALUE)
    {
        return Err("a field is too long");
    }
    Ok(out)
}

/// `POST /tyk/oauth/authorize-client/` (form, with `api_id`).
pub async fn authorize_client(State(state): State<ApiState>, body: Bytes) -> Response {
    let form = match fields(&body) {
        Ok(f) => f,
        Err(why) => return bad(why),
    };
    let Some(api_id) = form
        .iter()
        .find(|(k, _)| k == "api_id")
        .map(|(_, v)| v.clone())
        .filter(|v| !v.is_empty() && v.len() <= 255)
    else {
        return bad("api_id is required");
    };
    reply(
        state
            .oauth
            .handle(&api_id, "authorize-client", &form, "")
            .await,
    )
}

/// `POST /tyk/oauth/revoke` (form `token`, `token_type_hint`, `client_id`).
pub async fn revoke(State(state): State<ApiState>, body: Bytes) -> Response {
    match fields(&body) {
        Ok(form) => reply(state.oauth.admin_revoke(&form).await),
        Err(why) => bad(why),
    }
}

/// `POST /tyk/oauth/revoke_all` (form `client_id`, `client_secret`).
pub async fn revoke_all(State(state): State<ApiState>, body: Bytes) -> Response {
    match fields(&body) {
        Ok(form) => reply(state.oauth.admin_revoke_all(&form).await),
        Err(why) => bad(why),
    }
}

/// `DELETE /tyk/oauth/refresh/{token}?api_id=`: one refresh token goes; the access tokens of its
/// grant stay valid until they expire (Tyk's behaviour; `POST /tyk/oauth/revoke` with
/// `token_type_hint=refresh_token` revokes the whole grant).
pub async fn delete_refresh(
    State(state): State<ApiState>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let api_id = query_param(query.as_deref(), "api_id")
        .filter(|a| !a.is_empty())
        .ok_or(ApiError::Invalid(ValidationError::new(
            "api_id",
            "Missing parameter api_id",
        )))?;
    if token.len() > MAX_VALUE || api_id.len() > 255 || api_id.contains('\0') {
        return Err(ApiError::NotFound(REFRESH_NOT_FOUND));
    }
    let deleted = state
        .store
        .delete_refresh_token(&key_hash(&token), &api_id)
        .await
        .map_err(ApiError::Internal)?;
    if !deleted {
        return Err(ApiError::NotFound(REFRESH_NOT_FOUND));
    }
    Ok(Json(
        json!({"key": token, "status": "ok", "action": "deleted"}),
    ))
}

const REFRESH_NOT_FOUND: &str = "refresh token not found";

/// Sweep rounds one purge runs at most (each deletes up to a batch per table), so that one call
/// cannot hold the database for long; the periodic sweep takes the rest.
const MAX_PURGE_ROUNDS: usize = 100;

/// `DELETE /tyk/oauth/tokens?scope=lapsed`: expired codes, refresh tokens and access tokens are
/// deleted now rather than by the next periodic sweep (each access token as a key, so every
/// edge drops it).
pub async fn purge_lapsed(
    State(state): State<ApiState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    match query_param(query.as_deref(), "scope").as_deref() {
        None | Some("") => {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"status": "error", "message": "scope parameter is required"})),
            )
                .into_response());
        }
        Some("lapsed") => {}
        Some(_) => {
            return Err(ApiError::Invalid(ValidationError::new(
                "scope",
                "must be lapsed",
            )));
        }
    }
    let mut purged: u64 = 0;
    for _ in 0..MAX_PURGE_ROUNDS {
        let keys = state
            .store
            .sweep_expired_keys()
            .await
            .map_err(ApiError::Internal)?;
        let grants = state
            .store
            .sweep_expired_oauth()
            .await
            .map_err(ApiError::Internal)?;
        let round = grants + keys as u64;
        purged += round;
        if round == 0 {
            break;
        }
    }
    Ok(
        Json(json!({"status": "ok", "message": "lapsed tokens purged", "purged": purged}))
            .into_response(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_json_bodies() {
        let f = fields(b"a=1&b=x+y%21").unwrap();
        assert_eq!(
            f,
            vec![("a".into(), "1".into()), ("b".into(), "x y!".into())]
        );
        let f = fields(br#" {"a": "1"}"#).unwrap();
        assert_eq!(f, vec![("a".into(), "1".into())]);
        assert!(fields(br#"{"a": 1}"#).is_err());
        let many: String = (0..65).map(|i| format!("f{i}=v&")).collect();
        assert!(fields(many.as_bytes()).is_err());
        assert!(fields(format!("a={}", "x".repeat(MAX_VALUE + 1)).as_bytes()).is_err());
    }
}
