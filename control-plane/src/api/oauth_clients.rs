//! OAuth clients, Tyk's routes (`/tyk/oauth/clients/...`, docs/oauth.md).
//!
//! A client's secret is sealed before it reaches a table or the change log (doc id =
//! `client_id`, field `secret`). Tyk's client API returns the secret, so every answer here
//! carries it opened; a public client (`token_endpoint_auth_method: none`) has none.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use portcullis_proto::model::oauth::OAuthClient;
use portcullis_proto::model::{ApiDefinition, Policy, ValidationError, generate_id};
use portcullis_proto::sealed_field;
use rand::RngCore;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::{ApiError, ApiState, query_param, written};
use crate::store::StoreError;

const CLIENT_NOT_FOUND: &str = "OAuth Client ID not found";
const API_NOT_FOUND: &str = "API not found";
/// The sealing field of a client's secret (CONTRACT: doc id = client_id, field "secret").
pub(super) const SECRET_FIELD: &str = "secret";
pub(super) const DEFAULT_AUTH_METHOD: &str = "client_secret_basic";
/// A client body is small; the global limit is sized for API definitions.
const MAX_BODY: usize = 256 * 1024;
const MAX_META_DATA: usize = 64 * 1024;
const MAX_SECRET: usize = 512;
/// Longest id a path segment may name; longer ones name nothing.
const MAX_PATH_ID: usize = 255;
/// Tyk's page size of `GET .../tokens?page=N`.
const TOKENS_PAGE_SIZE: i64 = 100;
fn invalid(field: &str, reason: &str) -> ApiError {
    ApiError::Invalid(ValidationError::new(field, reason))
}

fn corrupt(what: String) -> ApiError {
    ApiError::Internal(StoreError::Corrupt(what))
}

/// The client an operator sent (secret still in plaintext), its fields of the wrong type named.
pub(super) fn parse_client(body: &[u8]) -> Result<OAuthClient, ApiError> {
    if body.len() > MAX_BODY {
        return Err(invalid("body", "an OAuth client is at most 256 KiB"));
    }
    let client = OAuthClient::parse(body)?;
    let meta_len = serde_json::to_vec(&client.meta_data).map_or(usize::MAX, |v| v.len());
    if meta_len > MAX_META_DATA {
        return Err(invalid("meta_data", "at most 64 KiB of JSON"));
    }
    Ok(client)
}

/// An id from the path that the store could hold; anything else names no resource.
fn path_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_PATH_ID && !id.contains('\0')
}

/// 32 random bytes, base64url without padding (43 characters), like the tokens.
pub(super) fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(super) fn same_secret(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A secret an operator chose: bounded, printable, and not a sealed value (which would be
/// sealed again and never match what a client presents).
pub(super) fn check_plain_secret(secret: &str) -> Result<(), ApiError> {
    if sealed_field::is_sealed(secret) {
        return Err(invalid(
            "secret",
            "is a sealed value that is not this client's secret; send the secret itself",
        ));
    }
    if secret.len() > MAX_SECRET || secret.chars().any(char::is_control) {
        return Err(invalid(
            "secret",
            "must be at most 512 bytes without control characters",
        ));
    }
    Ok(())
}

pub(super) fn seal_secret(state: &ApiState, client_id: &str, plain: &str) -> String {
    if plain.is_empty() {
        return String::new();
    }
    sealed_field::seal(&state.stored_secrets, client_id, SECRET_FIELD, plain)
}

/// The stored client's secret in plaintext; one that does not open is a 500 whose log line
/// names the client, never the value.
pub(super) fn open_secret(state: &ApiState, client: &OAuthClient) -> Result<String, ApiError> {
    if client.secret.is_empty() {
        return Ok(String::new());
    }
    sealed_field::open(
        &state.stored_secrets,
        &client.client_id,
        SECRET_FIELD,
        &client.secret,
    )
    .map_err(|e| {
        corrupt(format!(
            "OAuth client {}: stored secret: {e}",
            client.client_id
        ))
    })
}

/// The client as Tyk's API shows it: the stored body with its secret opened.
fn shown_with(mut client: OAuthClient, plain_secret: String) -> Result<Value, ApiError> {
    client.secret = plain_secret;
    serde_json::to_value(&client).map_err(|e| corrupt(format!("OAuth client: {e}")))
}

/// An answer carrying secrets: no cache along the way may keep it.
fn secret_bearing(body: Value) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn shown(state: &ApiState, client: OAuthClient) -> Result<Value, ApiError> {
    let plain = open_secret(state, &client)?;
    shown_with(client, plain)
}

/// The API a new client is bound to; it must exist and be an OAuth 2.0 API (Tyk's messages).
async fn oauth_api(state: &ApiState, api_id: &str) -> Result<ApiDefinition, ApiError> {
    let stored = match state.store.get_api(api_id).await {
        Ok(v) => v,
        Err(StoreError::NotFound) => {
            return Err(ApiError::Refused {
                field: "api_id",
                message: "API doesn't exist",
            });
        }
        Err(e) => return Err(ApiError::Internal(e)),
    };
    let def =
        ApiDefinition::from_value(stored).map_err(|e| corrupt(format!("API {api_id}: {e}")))?;
    if !def.oauth().use_oauth2 {
        return Err(ApiError::Refused {
            field: "api_id",
            message: "API is not OAuth2",
        });
    }
    Ok(def)
}

/// The stored policy body `policy_id` names, as a 400 on `policy_id` when there is none.
async fn policy(state: &ApiState, policy_id: &str) -> Result<Value, ApiError> {
    let missing = || ApiError::Refused {
        field: "policy_id",
        message: "Policy doesn't exist",
    };
    Policy::check_id(policy_id).map_err(|_| missing())?;
    match state.store.get_policy(policy_id).await {
        Ok(v) => Ok(v),
        Err(StoreError::NotFound) => Err(missing()),
        Err(e) => Err(ApiError::Internal(e)),
    }
}

/// A policy body grants an API when its `access_rights` has the API's id as a key (what the
/// store's list query reads too).
pub(super) fn grants(policy: &Value, api_id: &str) -> bool {
    policy
        .get("access_rights")
        .and_then(Value::as_object)
        .is_some_and(|rights| rights.contains_key(api_id))
}

pub(super) fn policy_org(policy: &Value) -> String {
    policy
        .get("org_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A client of `api_id`: bound to it, or bound to no API and its policy granting it.
async fn belongs(state: &ApiState, client: &OAuthClient, api_id: &str) -> Result<bool, ApiError> {
    if !client.api_id.is_empty() {
        return Ok(client.api_id == api_id);
    }
    if client.policy_id.is_empty() || Policy::check_id(&client.policy_id).is_err() {
        return Ok(false);
    }
    match state.store.get_policy(&client.policy_id).await {
        Ok(p) => Ok(grants(&p, api_id)),
        Err(StoreError::NotFound) => Ok(false),
        Err(e) => Err(ApiError::Internal(e)),
    }
}

/// The client the path names, 404 unless it exists and belongs to the path's API.
async fn find(state: &ApiState, api_id: &str, client_id: &str) -> Result<OAuthClient, ApiError> {
    if !path_id_ok(api_id) || !path_id_ok(client_id) {
        return Err(ApiError::NotFound(CLIENT_NOT_FOUND));
    }
    let client = state
        .store
        .get_oauth_client(client_id)
        .await
        .map_err(ApiError::from_store(CLIENT_NOT_FOUND))?;
    if belongs(state, &client, api_id).await? {
        Ok(client)
    } else {
        Err(ApiError::NotFound(CLIENT_NOT_FOUND))
    }
}

pub(super) fn api_id_required() -> ApiError {
    invalid(
        "api_id",
        "is required unless policy_id names the policy whose APIs the client may use",
    )
}

/// `POST /tyk/oauth/clients/create`
pub async fn create(State(state): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let mut client = parse_client(&body)?;
    let chosen_id = !client.client_id.is_empty();
    if !chosen_id {
        client.client_id = generate_id();
    }
    if client.token_endpoint_auth_method.is_empty() {
        client.token_endpoint_auth_method = DEFAULT_AUTH_METHOD.to_owned();
    }
    client.validate()?;
    if client.api_id.is_empty() && client.policy_id.is_empty() {
        return Err(api_id_required());
    }
    // The client's org is its API's, else its policy's; what the body says is not trusted.
    let mut org_id = None;
    if !client.api_id.is_empty() {
        org_id = Some(
            oauth_api(&state, &client.api_id)
                .await?
                .spec()
                .org_id
                .clone(),
        );
    }
    if !client.policy_id.is_empty() {
        let p = policy(&state, &client.policy_id).await?;
        org_id.get_or_insert_with(|| policy_org(&p));
    }
    client.org_id = org_id.unwrap_or_default();

    let plain = if client.is_public() {
        if !client.secret.is_empty() {
            return Err(invalid(
                "secret",
                "a public client (token_endpoint_auth_method none) has no secret",
            ));
        }
        String::new()
    } else if client.secret.is_empty() {
        new_secret()
    } else {
        check_plain_secret(&client.secret)?;
        std::mem::take(&mut client.secret)
    };
    client.secret = seal_secret(&state, &client.client_id, &plain);

    if chosen_id {
        // An id an operator reuses after a delete whose token revocation failed must not
        // bring the old tokens back to life: clear leftovers first (an existing client is a
        // conflict, and its tokens are left alone).
        match state.store.get_oauth_client(&client.client_id).await {
            Ok(_) => {
                return Err(ApiError::Conflict {
                    field: "client_id",
                    reason: format!("OAuth client {} already exists", client.client_id),
                });
            }
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(ApiError::Internal(e)),
        }
        state
            .store
            .revoke_client_tokens(&client.client_id)
            .await
            .map_err(ApiError::Internal)?;
    }
    state
        .store
        .create_oauth_client(&client)
        .await
        .map_err(ApiError::from_store(CLIENT_NOT_FOUND))?;
    Ok(secret_bearing(shown_with(client, plain)?))
}

/// `GET /tyk/oauth/clients/{api_id}`
pub async fn list(
    State(state): State<ApiState>,
    Path(api_id): Path<String>,
) -> Result<Response, ApiError> {
    if !path_id_ok(&api_id) {
        return Err(ApiError::NotFound(API_NOT_FOUND));
    }
    state
        .store
        .get_api(&api_id)
        .await
        .map_err(ApiError::from_store(API_NOT_FOUND))?;
    let clients = state
        .store
        .list_api_oauth_clients(&api_id)
        .await
        .map_err(ApiError::from_store(API_NOT_FOUND))?;
    let shown: Vec<Value> = clients
        .into_iter()
        .map(|c| shown(&state, c))
        .collect::<Result<_, _>>()?;
    Ok(secret_bearing(Value::Array(shown)))
}

/// `GET /tyk/oauth/clients/{api_id}/{client_id}`
pub async fn get(
    State(state): State<ApiState>,
    Path((api_id, client_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let client = find(&state, &api_id, &client_id).await?;
    Ok(secret_bearing(shown(&state, client)?))
}

/// `PUT /tyk/oauth/clients/{api_id}/{client_id}`: replaces what an operator may change; the
/// id, API and org stay. The secret is kept unless a new one is sent (sending back the one GET
/// returned keeps it).
pub async fn update(
    State(state): State<ApiState>,
    Path((api_id, client_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let current = find(&state, &api_id, &client_id).await?;
    let mut client = parse_client(&body)?;
    client.client_id = current.client_id.clone();
    client.api_id = current.api_id.clone();
    client.org_id = current.org_id.clone();
    if client.token_endpoint_auth_method.is_empty() {
        client.token_endpoint_auth_method = DEFAULT_AUTH_METHOD.to_owned();
    }
    client.validate()?;
    if client.api_id.is_empty() && client.policy_id.is_empty() {
        return Err(api_id_required());
    }
    if !client.policy_id.is_empty() {
        let p = policy(&state, &client.policy_id).await?;
        // Tyk's rule: the client must stay usable on the API the path names.
        if !grants(&p, &api_id) {
            return Err(invalid(
                "policy_id",
                "Policy access rights doesn't contain API this OAuth client belongs to",
            ));
        }
    }

    let current_plain = open_secret(&state, &current)?;
    let given = std::mem::take(&mut client.secret);
    let unchanged = given.is_empty()
        || given == current.secret
        || (!current_plain.is_empty() && same_secret(&given, &current_plain));
    let (sealed, plain) = if client.is_public() {
        if !unchanged {
            return Err(invalid(
                "secret",
                "a public client (token_endpoint_auth_method none) has no secret",
            ));
        }
        (String::new(), String::new())
    } else if unchanged && !current_plain.is_empty() {
        (current.secret.clone(), current_plain)
    } else if unchanged {
        // A public client made confidential gets its first secret.
        let plain = new_secret();
        (seal_secret(&state, &client.client_id, &plain), plain)
    } else {
        check_plain_secret(&given)?;
        (seal_secret(&state, &client.client_id, &given), given)
    };
    client.secret = sealed;
    state
        .store
        .replace_oauth_client(&client)
        .await
        .map_err(ApiError::from_store(CLIENT_NOT_FOUND))?;
    Ok(secret_bearing(shown_with(client, plain)?))
}

/// `DELETE /tyk/oauth/clients/{api_id}/{client_id}`: the client first, so no new token is
/// issued for it, then every token it has.
pub async fn remove(
    State(state): State<ApiState>,
    Path((api_id, client_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let client = find(&state, &api_id, &client_id).await?;
    state
        .store
        .delete_oauth_client(&client.client_id)
        .await
        .map_err(ApiError::from_store(CLIENT_NOT_FOUND))?;
    state
        .store
        .disable_client_tokens(&client.client_id)
        .await
        .map_err(ApiError::Internal)?;
    Ok(written(&client.client_id, "deleted"))
}

/// `?page=N` as Tyk reads it: absent or empty, no pagination; not a number or below 1, page 1.
fn requested_page(query: Option<&str>) -> Option<i64> {
    let page = query_param(query, "page")?;
    if page.is_empty() {
        return None;
    }
    Some(page.parse::<i64>().ok().filter(|p| *p >= 1).unwrap_or(1))
}

fn token_json(hash: String, expires: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    json!({"code": hash, "expires": expires.map_or(0, |t| t.timestamp())})
}

/// `GET /tyk/oauth/clients/{api_id}/{client_id}/tokens`: the client's live access tokens, each
/// named by its key hash (tokens themselves are never stored).
pub async fn tokens(
    State(state): State<ApiState>,
    Path((api_id, client_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let client = find(&state, &api_id, &client_id).await?;
    let Some(page) = requested_page(query.as_deref()) else {
        let tokens = state
            .store
            .list_client_tokens(&client.client_id)
            .await
            .map_err(ApiError::Internal)?;
        let tokens: Vec<Value> = tokens.into_iter().map(|(h, e)| token_json(h, e)).collect();
        return Ok(Json(Value::Array(tokens)));
    };
    let offset = (page - 1).saturating_mul(TOKENS_PAGE_SIZE);
    let (rows, total) = state
        .store
        .client_tokens_page(&client.client_id, offset, TOKENS_PAGE_SIZE)
        .await
        .map_err(ApiError::Internal)?;
    let tokens: Vec<Value> = rows.into_iter().map(|(h, e)| token_json(h, e)).collect();
    Ok(Json(json!({
        "pagination": {
            "page_size": TOKENS_PAGE_SIZE,
            "page_num": page,
            "page_total": (total + TOKENS_PAGE_SIZE - 1) / TOKENS_PAGE_SIZE,
        },
        "tokens": tokens,
    })))
}

/// `GET /tyk/oauth/clients/apis/{client_id}?orgID=`: the ids of the OAuth APIs the client may
/// use (Tyk's route): its own API, or those its policy grants. An unknown client, or one of
/// another org, has none.
pub async fn apis_of_client(
    State(state): State<ApiState>,
    Path(client_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let none = || Ok(Json(Value::Array(Vec::new())));
    if !path_id_ok(&client_id) {
        return none();
    }
    let client = match state.store.get_oauth_client(&client_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => return none(),
        Err(e) => return Err(ApiError::Internal(e)),
    };
    let org = query_param(query.as_deref(), "orgID");
    if org.is_some_and(|o| !o.is_empty() && o != client.org_id) {
        return none();
    }
    if !client.api_id.is_empty() {
        return Ok(Json(json!([client.api_id])));
    }
    if client.policy_id.is_empty() || Policy::check_id(&client.policy_id).is_err() {
        return none();
    }
    let policy = match state.store.get_policy(&client.policy_id).await {
        Ok(p) => p,
        Err(StoreError::NotFound) => return none(),
        Err(e) => return Err(ApiError::Internal(e)),
    };
    let granted: Vec<String> = policy
        .get("access_rights")
        .and_then(Value::as_object)
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default();
    let mut ids = Vec::new();
    for api_id in granted {
        let stored = match state.store.get_api(&api_id).await {
            Ok(v) => v,
            Err(StoreError::NotFound) => continue,
            Err(e) => return Err(ApiError::Internal(e)),
        };
        if stored.get("use_oauth2").and_then(Value::as_bool) == Some(true) {
            ids.push(api_id);
        }
    }
    Ok(Json(Value::Array(
        ids.into_iter().map(Value::String).collect(),
    )))
}

/// `PUT` and `DELETE /tyk/oauth/clients/apis/{client_id}`: the path of a client of an API whose
/// id is `apis` (the static route above takes it); `GET` there is Tyk's list, as in Tyk.
pub async fn update_of_apis(
    state: State<ApiState>,
    Path(client_id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    update(state, Path(("apis".to_owned(), client_id)), body).await
}

pub async fn remove_of_apis(
    state: State<ApiState>,
    Path(client_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    remove(state, Path(("apis".to_owned(), client_id))).await
}

/// `PUT /tyk/oauth/clients/{api_id}/{client_id}/rotate`: a new secret for a confidential
/// client; its tokens stay valid (as in Tyk).
pub async fn rotate(
    State(state): State<ApiState>,
    Path((api_id, client_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let mut client = find(&state, &api_id, &client_id).await?;
    if client.is_public() {
        return Err(invalid(
            "token_endpoint_auth_method",
            "a public client (none) has no secret to rotate",
        ));
    }
    let plain = new_secret();
    client.secret = seal_secret(&state, &client.client_id, &plain);
    state
        .store
        .replace_oauth_client(&client)
        .await
        .map_err(ApiError::from_store(CLIENT_NOT_FOUND))?;
    Ok(secret_bearing(shown_with(client, plain)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_body_is_bounded_and_storable() {
        let ok = parse_client(br#"{"redirect_uri":"http://a/cb","meta_data":{"k":1}}"#).unwrap();
        assert_eq!(ok.meta_data["k"], 1);
        let field = |body: &[u8]| match parse_client(body) {
            Err(ApiError::Invalid(e)) => e.field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(b"[1]"), "body");
        assert_eq!(field(b"{"), "body");
        assert_eq!(field(br#"{"meta_data":{"a":"x\u0000"}}"#), "meta_data.a");
        assert_eq!(field(br#"{"description":"\u0000"}"#), "description");
        assert_eq!(field(br#"{"meta_data":{"n":1e305}}"#), "meta_data.n");
        assert_eq!(field(br#"{"meta_data":"text"}"#), "meta_data");
        assert_eq!(field(br#"{"redirect_uri":5}"#), "redirect_uri");
        let big = format!(r#"{{"meta_data":{{"k":"{}"}}}}"#, "x".repeat(70 * 1024));
        assert_eq!(field(big.as_bytes()), "meta_data");
    }

    #[test]
    fn secrets_are_random_and_chosen_ones_bounded() {
        let a = new_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, new_secret());
        assert!(check_plain_secret("operator-chosen").is_ok());
        assert!(check_plain_secret("sealed:v1:abc").is_err());
        assert!(check_plain_secret(&"x".repeat(513)).is_err());
        assert!(check_plain_secret("a\nb").is_err());
    }

    #[test]
    fn the_page_is_read_as_tyk_does() {
        assert_eq!(requested_page(None), None);
        assert_eq!(requested_page(Some("")), None);
        assert_eq!(requested_page(Some("page=")), None);
        assert_eq!(requested_page(Some("page=3")), Some(3));
        assert_eq!(requested_page(Some("x=1&page=abc")), Some(1));
        assert_eq!(requested_page(Some("page=0")), Some(1));
        assert_eq!(requested_page(Some("page=-4")), Some(1));
        assert_eq!(requested_page(Some("page=99999999999999999999")), Some(1));
    }

    #[test]
    fn policies_grant_by_access_rights_key() {
        let p = json!({"access_rights": {"api-1": {}}, "org_id": "o"});
        assert!(grants(&p, "api-1"));
        assert!(!grants(&p, "api-2"));
        assert!(!grants(&json!({"access_rights": null}), "api-1"));
        assert_eq!(policy_org(&p), "o");
    }
}
