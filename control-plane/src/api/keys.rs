//! `/tyk/keys`: keys (Tyk sessions). A key is stored only as its sha256; it is shown once, in the
//! answer to the call that created it. Basic-auth passwords are stored as bcrypt hashes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use portcullis_proto::key_hash::key_hash;
use portcullis_proto::model::{PolicySpec, SessionSpec, SessionState, ValidationError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, certs};
use crate::lifetime::lifetime;
use crate::store::StoreError;

/// Tyk's wording differs per verb; clients match on it.
const NOT_FOUND_GET: &str = "Key not found";
const NOT_FOUND_PUT: &str = "Key is not found";
const NOT_FOUND_DELETE: &str = "There is no such key found";
/// Tyk's default basic-auth hashing.
const BCRYPT_COST: u32 = 10;

#[derive(Debug, Default, Deserialize)]
pub struct KeyQuery {
    #[serde(default)]
    hashed: Option<String>,
}

/// A query string that does not parse (a repeated `hashed`, say) is a 400 in Tyk's error shape,
/// not axum's plain-text rejection.
fn key_query(query: Result<Query<KeyQuery>, QueryRejection>) -> Result<KeyQuery, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ValidationError::new("query", e.body_text()).into())
}

impl KeyQuery {
    fn hashed(&self) -> bool {
        matches!(self.hashed.as_deref(), Some("true" | "1"))
    }
}

/// The stored address of `key`: the key's hash, or `key` itself when it already is one.
fn address(key: &str, query: &KeyQuery) -> Result<String, ApiError> {
    if key.is_empty() {
        return Err(ValidationError::new("key", "must not be empty").into());
    }
    if query.hashed() {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ValidationError::new(
                "key",
                "with hashed=true the key must be a sha256 hex digest",
            )
            .into());
        }
        return Ok(key.to_ascii_lowercase());
    }
    Ok(key_hash(key))
}

/// bcrypt reads only the first 72 bytes of a password; a longer one would be silently truncated.
const BCRYPT_MAX_PASSWORD: usize = 72;

/// Validates a session and shapes it for storage: bcrypt for a plaintext basic-auth password,
/// creation date kept, an `expires` already in the past on creation means "never" (as Tyk).
async fn prepare(
    session: SessionState,
    existing: Option<&Value>,
    creating: bool,
) -> Result<(Value, SessionSpec), ApiError> {
    let mut value = session.to_value();
    // The gateway's marks of an edge-made session are never an operator's to set.
    if let Some(m) = value.as_object_mut() {
        m.remove(portcullis_proto::model::TOKEN_ORIGIN_FIELD);
        m.remove(portcullis_proto::model::TOKENS_AFTER_FIELD);
    }
    let spec = session.spec();
    let now = Utc::now();
    if creating && spec.expires > 0 && spec.expires < now.timestamp() {
        value["expires"] = json!(0);
    }
    if let Some(basic) = &spec.basic_auth_data
        && !basic.password.is_empty()
        && basic.hash_type != "bcrypt"
    {
        if !basic.hash_type.is_empty() {
            return Err(ValidationError::new(
                "basic_auth_data.hash_type",
                "only bcrypt (or a plaintext password) is supported",
            )
            .into());
        }
        if basic.password.len() > BCRYPT_MAX_PASSWORD {
            return Err(ValidationError::new(
                "basic_auth_data.password",
                format!("must be at most {BCRYPT_MAX_PASSWORD} bytes (bcrypt ignores the rest)"),
            )
            .into());
        }
        let password = basic.password.clone();
        // A bcrypt run takes tens of milliseconds of CPU: off the async workers.
        let hashed = tokio::task::spawn_blocking(move || bcrypt::hash(password, BCRYPT_COST))
            .await
            .map_err(|_| ValidationError::new("basic_auth_data.password", "hashing failed"))?
            .map_err(|e| ValidationError::new("basic_auth_data.password", e.to_string()))?;
        value["basic_auth_data"] = json!({"password": hashed, "hash_type": "bcrypt"});
    }
    let created = existing
        .and_then(|e| e.get("date_created"))
        .cloned()
        .unwrap_or_else(|| json!(now.to_rfc3339()));
    value["date_created"] = created;
    value["last_updated"] = json!(now.timestamp().to_string());
    let mut spec = spec.clone();
    spec.expires = value["expires"].as_i64().unwrap_or(spec.expires);
    Ok((value, spec))
}

/// When the key is deleted by Tyk's lifetime rules, from this write on.
async fn delete_at(
    state: &ApiState,
    spec: &SessionSpec,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let apis: Vec<String> = spec.access_rights.keys().cloned().collect();
    let api_lifetime = state
        .store
        .max_api_session_lifetime(&apis)
        .await
        .map_err(ApiError::Internal)?;
    let now = Utc::now();
    let Some(secs) = lifetime(
        state.lifetime_rules,
        spec.session_lifetime,
        api_lifetime,
        spec.expires,
        now.timestamp(),
    ) else {
        return Ok(None);
    };
    // The inputs are bounded (docs/keys.md); checked anyway, so no stored value can panic here.
    chrono::Duration::try_seconds(secs)
        .and_then(|d| now.checked_add_signed(d))
        .map(Some)
        .ok_or_else(|| {
            ValidationError::new("session_lifetime", "the key's lifetime is out of range").into()
        })
}

/// The sealing field of a key's HMAC secret (doc id: the key's hash, docs/hmac.md).
const HMAC_STRING_FIELD: &str = "hmac_string";
/// Bytes of randomness in a generated HMAC secret (hex-encoded in the session).
const HMAC_SECRET_BYTES: usize = 32;

/// Seals the session's `hmac_string` for the key `hash` before it reaches a table or the
/// change log; returns the plaintext when this call chose or received a new one. An omitted
/// secret keeps the stored one (a PUT echoing GET sends the sealed value back); `generate`
/// (`/tyk/keys/create`) makes one for an HMAC key without it, as Tyk.
fn seal_hmac(
    state: &ApiState,
    hash: &str,
    value: &mut Value,
    existing: Option<&Value>,
    generate: bool,
) -> Result<Option<String>, ApiError> {
    use portcullis_proto::sealed_field;
    let given = value[HMAC_STRING_FIELD]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let enabled = value["hmac_enabled"].as_bool().unwrap_or(false);
    let plain = if given.is_empty() {
        if let Some(old) = existing
            .and_then(|e| e[HMAC_STRING_FIELD].as_str())
            .filter(|o| !o.is_empty())
        {
            value[HMAC_STRING_FIELD] = json!(old);
            return Ok(None);
        }
        if !(generate && enabled) {
            return Ok(None);
        }
        let mut bytes = [0u8; HMAC_SECRET_BYTES];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        hex::encode(bytes)
    } else if sealed_field::is_sealed(&given) {
        // Only a value sealed for this very key is kept: another key's would not open at the edge.
        sealed_field::open(&state.stored_secrets, hash, HMAC_STRING_FIELD, &given)
            .map_err(|e| ValidationError::new(HMAC_STRING_FIELD, e.to_string()))?;
        return Ok(None);
    } else {
        if given.len() > 1024 {
            return Err(
                ValidationError::new(HMAC_STRING_FIELD, "must be at most 1024 bytes").into(),
            );
        }
        given
    };
    value[HMAC_STRING_FIELD] = json!(sealed_field::seal(
        &state.stored_secrets,
        hash,
        HMAC_STRING_FIELD,
        &plain
    ));
    Ok(Some(plain))
}

/// The create answer: Tyk's fields, plus the HMAC secret in plaintext when this call set it
/// (the only time it is shown; GET returns the sealed value).
fn added(key: &str, hash: &str, hmac: Option<String>, action: &str) -> Json<Value> {
    let mut answer = json!({"key": key, "status": "ok", "action": action, "key_hash": hash});
    if let Some(h) = hmac {
        answer[HMAC_STRING_FIELD] = json!(h);
    }
    Json(answer)
}

/// Tyk's wording for a key without access rights.
const NO_RIGHTS: &str =
    "Failed to create key, keys must have at least one Access Rights record set.";

/// A key whose effective access rights would be empty opens every API at Tyk (a master key).
/// Refused unless `--allow-master-keys`: the key needs rights of its own, or a policy that
/// exists and sets the key's rights ([`portcullis_proto::model::PolicySpec::grants_acl`]).
async fn requires_rights(state: &ApiState, session: &SessionState) -> Result<(), ApiError> {
    if state.allow_master_keys || !session.spec().access_rights.is_empty() {
        return Ok(());
    }
    for id in session.policy_ids() {
        match state.store.get_policy(id).await {
            Ok(policy) => {
                if serde_json::from_value::<PolicySpec>(policy).is_ok_and(|p| p.grants_acl()) {
                    return Ok(());
                }
            }
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(ApiError::Internal(e)),
        }
    }
    Err(ValidationError::new(
        "access_rights",
        format!(
            "{NO_RIGHTS} Neither the key nor an existing policy it applies grants an API \
             (start the control plane with --allow-master-keys to allow keys for every API)."
        ),
    )
    .into())
}

/// Parses the body, refuses keys without rights, and shapes it for storage.
async fn checked(
    state: &ApiState,
    body: &[u8],
    existing: Option<&Value>,
    creating: bool,
) -> Result<(Value, SessionSpec), ApiError> {
    let session = SessionState::parse(body)?;
    requires_rights(state, &session).await?;
    prepare(session, existing, creating).await
}

/// `POST /tyk/keys` and `POST /tyk/keys/create`: a generated key (org id + uuid hex, Tyk's
/// legacy format).
///
/// A key with a `certificate` (dynamic mTLS) is named after it, as Tyk: `{org_id}{sha256 hex of
/// the certificate}`, and its session's `certificate` is the store id (docs/keys.md).
pub async fn create(State(state): State<ApiState>, body: Bytes) -> Result<Json<Value>, ApiError> {
    create_key(state, body, false).await
}

/// `POST /tyk/keys/create`: as `POST /tyk/keys`, and an HMAC key without `hmac_string` gets a
/// generated one (Tyk).
pub async fn create_generating(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    create_key(state, body, true).await
}

async fn create_key(state: ApiState, body: Bytes, generate: bool) -> Result<Json<Value>, ApiError> {
    let (mut session, spec) = checked(&state, &body, None, true).await?;
    let delete_at = delete_at(&state, &spec).await?;
    let org = session["org_id"].as_str().unwrap_or_default().to_owned();
    let key = if spec.certificate.is_empty() {
        format!("{org}{}", portcullis_proto::model::generate_id())
    } else {
        let cert = certs::for_key(&state, &org, &spec.certificate).await?;
        session["certificate"] = json!(cert.id);
        let key = format!("{org}{}", cert.meta.fingerprint);
        if state.store.get_key(&key_hash(&key)).await.is_ok() {
            return Err(ApiError::Conflict {
                field: "certificate",
                reason: "a key for this certificate already exists".into(),
            });
        }
        key
    };
    let hash = key_hash(&key);
    let hmac = seal_hmac(&state, &hash, &mut session, None, generate)?;
    state
        .store
        .put_key(&hash, &session, delete_at)
        .await
        .map_err(ApiError::from_store(NOT_FOUND_GET))?;
    tracing::info!(key_hash = %hash, "key created");
    Ok(added(&key, &hash, hmac, "added"))
}

/// `POST /tyk/keys/{key}`: a caller-chosen key, or a basic-auth user name. Over a session an
/// edge made (or its tombstone) it makes an operator's key, which reports never overwrite.
pub async fn create_named(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    query: Result<Query<KeyQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let query = key_query(query)?;
    if query.hashed() {
        return Err(ValidationError::new("hashed", "a key cannot be created by its hash").into());
    }
    let hash = address(&key, &query)?;
    let existing = state.store.get_key(&hash).await.ok();
    // Overwriting a key made for a certificate would drop its binding, and its name is computable
    // from the public certificate: it would become a bearer token anyone could derive.
    if existing
        .as_ref()
        .and_then(|e| e["certificate"].as_str())
        .is_some_and(|c| !c.is_empty())
    {
        return Err(ValidationError::new(
            "certificate",
            "this key was created for a certificate: change it with PUT /tyk/keys/{key}",
        )
        .into());
    }
    let (mut session, spec) = checked(&state, &body, existing.as_ref(), existing.is_none()).await?;
    let hmac = seal_hmac(&state, &hash, &mut session, existing.as_ref(), false)?;
    if !spec.certificate.is_empty() {
        return Err(ValidationError::new(
            "certificate",
            "a key for a certificate is named after the certificate: create it with POST /tyk/keys",
        )
        .into());
    }
    let delete_at = delete_at(&state, &spec).await?;
    state
        .store
        .put_key(&hash, &session, delete_at)
        .await
        .map_err(ApiError::from_store(NOT_FOUND_GET))?;
    Ok(added(&key, &hash, hmac, "added"))
}

/// `PUT /tyk/keys/{key}`: a session an edge made stays edge-made (a later report replaces it).
pub async fn update(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    query: Result<Query<KeyQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let query = key_query(query)?;
    let hash = address(&key, &query)?;
    let existing = state
        .store
        .get_key(&hash)
        .await
        .map_err(ApiError::from_store(NOT_FOUND_PUT))?;
    let (mut session, spec) = checked(&state, &body, Some(&existing), false).await?;
    let hmac = seal_hmac(&state, &hash, &mut session, Some(&existing), false)?;
    // The key was named after its certificate: another one would break that link.
    if spec.certificate != existing["certificate"].as_str().unwrap_or_default() {
        return Err(ValidationError::new(
            "certificate",
            "cannot be changed: a key for a certificate is named after it",
        )
        .into());
    }
    let delete_at = delete_at(&state, &spec).await?;
    state
        .store
        .update_key(&hash, &session, delete_at)
        .await
        .map_err(ApiError::from_store(NOT_FOUND_PUT))?;
    Ok(added(&key, &hash, hmac, "modified"))
}

pub async fn get(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = key_query(query)?;
    let hash = address(&key, &query).map_err(|_| ApiError::NotFound(NOT_FOUND_GET))?;
    let mut session = state
        .store
        .get_key(&hash)
        .await
        .map_err(ApiError::from_store(NOT_FOUND_GET))?;
    session["key_hash"] = json!(hash);
    Ok(Json(session))
}

/// `DELETE /tyk/keys/{key}`: deletes an operator's key; revokes a session an edge made (it stays
/// as a tombstone, which `GET` and the list no longer show, docs/keys.md). Every edge drops it.
pub async fn remove(
    State(state): State<ApiState>,
    Path(key): Path<String>,
    query: Result<Query<KeyQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = key_query(query)?;
    let hash = address(&key, &query).map_err(|_| ApiError::NotFound(NOT_FOUND_DELETE))?;
    state
        .store
        .delete_key(&hash)
        .await
        .map_err(ApiError::from_store(NOT_FOUND_DELETE))?;
    tracing::info!(key_hash = %hash, "key deleted");
    Ok(Json(
        json!({"key": key, "status": "ok", "action": "deleted"}),
    ))
}

/// `GET /tyk/keys`: hashes only; the keys themselves are not stored. Sessions edges made are
/// listed too; revoked ones are not.
pub async fn list(State(state): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let keys = state
        .store
        .list_key_hashes()
        .await
        .map_err(ApiError::from_store(NOT_FOUND_GET))?;
    Ok(Json(json!({ "keys": keys })))
}

/// `PUT /tyk/keys/` with an empty key: no key has it (Tyk's update wording).
pub async fn unnamed_update() -> ApiError {
    ApiError::NotFound(NOT_FOUND_PUT)
}

/// `DELETE /tyk/keys/` with an empty key (Tyk's delete wording).
pub async fn unnamed_delete() -> ApiError {
    ApiError::NotFound(NOT_FOUND_DELETE)
}
