//! `/tyk/certs`: the certificate store, as Tyk's certificate API. Uploads are PEM bundles; a
//! private key is sealed under `--encryption-secret` before the record reaches the store, and no
//! answer ever carries key material (docs/security.md).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use portcullis_proto::model::ValidationError;
use portcullis_proto::model::bounds::MAX_CERTIFICATES_PER_LIST;
use portcullis_proto::model::certificate::{
    CertificateRecord, PRIVATE_KEY_FIELD, ParsedBundle, parse_bundle,
};
use portcullis_proto::sealed_field;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState};
use crate::store::StoreError;

/// Tyk's wording for an unknown id (GET and DELETE).
pub const NOT_FOUND: &str = "Certificate with given SHA256 fingerprint not found";
/// Longest node-group name accepted in `tags` (groups are short names, docs/sync.md).
const MAX_TAG_BYTES: usize = 128;

#[derive(Debug, Default, Deserialize)]
pub struct CertQuery {
    #[serde(default)]
    org_id: Option<String>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    tags: Option<String>,
}

fn cert_query(query: Result<Query<CertQuery>, QueryRejection>) -> Result<CertQuery, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ValidationError::new("query", e.body_text()).into())
}

/// `?tags=g1,g2` (or `*`): the groups that hold the certificate without an API referencing it.
fn parse_tags(tags: Option<&str>) -> Result<Vec<String>, ValidationError> {
    let Some(tags) = tags else {
        return Ok(Vec::new());
    };
    let mut out: Vec<String> = Vec::new();
    for t in tags.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if t.len() > MAX_TAG_BYTES || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ValidationError::new(
                "tags",
                format!(
                    "each tag is a node group name of at most {MAX_TAG_BYTES} bytes without white space"
                ),
            ));
        }
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    if out.len() > MAX_CERTIFICATES_PER_LIST {
        return Err(ValidationError::new(
            "tags",
            format!("at most {MAX_CERTIFICATES_PER_LIST} tags"),
        ));
    }
    out.sort();
    Ok(out)
}

/// The record to store for `bundle`: its private key, if any, sealed to the certificate's id.
pub fn sealed_record(state: &ApiState, bundle: ParsedBundle) -> CertificateRecord {
    let ParsedBundle {
        mut record,
        private_key_pem,
    } = bundle;
    if let Some(pem) = private_key_pem {
        record.private_key =
            sealed_field::seal(&state.certificate_keys, &record.id, PRIVATE_KEY_FIELD, &pem);
    }
    record
}

/// Parses and stores an upload. Every refusal is Tyk's 403 with Tyk's message.
pub async fn add(
    state: &ApiState,
    org_id: &str,
    body: &[u8],
    tags: Vec<String>,
) -> Result<CertificateRecord, ApiError> {
    let bundle = parse_bundle(org_id, body, chrono::Utc::now().timestamp())
        .map_err(|e| ApiError::CertificateRefused(e.to_string()))?;
    let mut record = sealed_record(state, bundle);
    record.tags = tags;
    match state.store.create_certificate(&record).await {
        Ok(_) => Ok(record),
        Err(StoreError::Conflict { reason, .. }) => Err(ApiError::CertificateRefused(reason)),
        Err(e) => Err(ApiError::Internal(e)),
    }
}

/// The certificate a key's `certificate` field names (dynamic mTLS, docs/keys.md): a store id
/// that must exist, or a PEM certificate, added to the store (without a key) when absent.
pub async fn for_key(
    state: &ApiState,
    org_id: &str,
    value: &str,
) -> Result<CertificateRecord, ApiError> {
    const FIELD: &str = "certificate";
    // A client presents a certificate; a bare public key could never be matched.
    let not_a_key = || ValidationError::new(FIELD, "must be a certificate, not a public key");
    if !value.contains("-----BEGIN") {
        return match state.store.get_certificate(value).await {
            Ok(record) if record.certificate_pem.is_empty() => Err(not_a_key().into()),
            Ok(record) => Ok(record),
            Err(StoreError::NotFound) => Err(ValidationError::new(
                FIELD,
                "no certificate with this id in the store (upload it with POST /tyk/certs)",
            )
            .into()),
            Err(e) => Err(ApiError::Internal(e)),
        };
    }
    let bundle = parse_bundle(org_id, value.as_bytes(), chrono::Utc::now().timestamp())
        .map_err(|e| ValidationError::new(FIELD, e.to_string()))?;
    if bundle.private_key_pem.is_some() {
        return Err(ValidationError::new(
            FIELD,
            "must not contain a private key: a key needs only the client's certificate",
        )
        .into());
    }
    let record = bundle.record;
    if record.certificate_pem.is_empty() {
        return Err(not_a_key().into());
    }
    match state.store.get_certificate(&record.id).await {
        Ok(existing) => return Ok(existing),
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(ApiError::Internal(e)),
    }
    match state.store.create_certificate(&record).await {
        // Uploaded by someone else in between: the same certificate either way.
        Ok(_) | Err(StoreError::Conflict { .. }) => Ok(record),
        Err(e) => Err(ApiError::Internal(e)),
    }
}

/// `POST /tyk/certs?org_id=ORG[&tags=g1,g2]` with a PEM body.
pub async fn create(
    State(state): State<ApiState>,
    query: Result<Query<CertQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let query = cert_query(query)?;
    let tags = parse_tags(query.tags.as_deref())?;
    let org_id = query.org_id.unwrap_or_default();
    let record = add(&state, &org_id, &body, tags).await?;
    tracing::info!(certificate = %record.id, has_private = record.meta.has_private, "certificate added");
    Ok(Json(
        json!({"id": record.id, "status": "ok", "message": "Certificate added"}),
    ))
}

/// `GET /tyk/certs[?org_id=ORG][&mode=detailed]`.
pub async fn list(
    State(state): State<ApiState>,
    query: Result<Query<CertQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = cert_query(query)?;
    // Postgres text cannot hold U+0000: such an org owns no certificate.
    let certs = if query.org_id.as_deref().is_some_and(|o| o.contains('\0')) {
        Vec::new()
    } else {
        state
            .store
            .list_certificates(query.org_id.as_deref())
            .await
            .map_err(ApiError::from_store(NOT_FOUND))?
    };
    if query.mode.as_deref() == Some("detailed") {
        let basics: Vec<Value> = certs
            .iter()
            .map(|c| {
                let m = &c.meta;
                json!({
                    "id": c.id,
                    "issuer_cn": m.issuer_cn,
                    "subject_cn": m.subject_cn,
                    "dns_names": m.dns_names,
                    "has_private": m.has_private,
                    "is_ca": m.is_ca,
                    "not_before": m.not_before,
                    "not_after": m.not_after,
                })
            })
            .collect();
        return Ok(Json(json!({ "certs": basics })));
    }
    let ids: Vec<&str> = certs.iter().map(|c| c.id.as_str()).collect();
    Ok(Json(json!({ "certs": ids })))
}

fn meta(record: &CertificateRecord) -> Value {
    let mut m = record.meta.clone();
    m.id.clone_from(&record.id);
    m.has_private = !record.private_key.is_empty();
    serde_json::to_value(m).unwrap_or(Value::Null)
}

/// `GET /tyk/certs/{id}` (one meta) or `GET /tyk/certs/{id1},{id2}` (an array, `null` for an
/// unknown id, as Tyk).
pub async fn get(
    State(state): State<ApiState>,
    Path(ids): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let ids: Vec<&str> = ids.split(',').collect();
    if ids.len() > MAX_CERTIFICATES_PER_LIST {
        return Err(
            ValidationError::new("id", format!("at most {MAX_CERTIFICATES_PER_LIST} ids")).into(),
        );
    }
    if let [id] = ids.as_slice() {
        if id.contains('\0') {
            return Err(ApiError::NotFound(NOT_FOUND));
        }
        let record = state
            .store
            .get_certificate(id)
            .await
            .map_err(ApiError::from_store(NOT_FOUND))?;
        return Ok(Json(meta(&record)));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if id.contains('\0') {
            out.push(Value::Null);
            continue;
        }
        match state.store.get_certificate(id).await {
            Ok(record) => out.push(meta(&record)),
            Err(StoreError::NotFound) => out.push(Value::Null),
            Err(e) => return Err(ApiError::Internal(e)),
        }
    }
    Ok(Json(Value::Array(out)))
}

/// `DELETE /tyk/certs/{id}`.
pub async fn remove(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if id.contains('\0') {
        return Err(ApiError::NotFound(NOT_FOUND));
    }
    state
        .store
        .delete_certificate(&id)
        .await
        .map_err(ApiError::from_store(NOT_FOUND))?;
    tracing::info!(certificate = %id, "certificate removed");
    Ok(Json(json!({"status": "ok", "message": "removed"})))
}

/// `PUT` or `DELETE` on the collection path with an empty id (`/tyk/{kind}/`): no resource has
/// that id, so it is the usual 404, not a 405 a client would read as a routing fault.
pub async fn unnamed() -> ApiError {
    ApiError::NotFound(NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_trimmed_deduplicated_and_bounded() {
        assert_eq!(parse_tags(None).unwrap(), Vec::<String>::new());
        assert_eq!(
            parse_tags(Some(" b ,a,,b")).unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(parse_tags(Some("*")).unwrap(), vec!["*".to_string()]);
        assert!(parse_tags(Some("a b")).is_err());
        let many: Vec<String> = (0..=MAX_CERTIFICATES_PER_LIST)
            .map(|i| format!("g{i}"))
            .collect();
        assert!(parse_tags(Some(&many.join(","))).is_err());
    }
}
