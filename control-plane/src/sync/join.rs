//! `Join`: a bootstrap token and a CSR become a node identity in the group bound to the token.

use chrono::{DateTime, Utc};
use portcullis_proto::sync::{JoinRequest, JoinResponse};
use portcullis_proto::version::{BUILD_VERSION, check_skew};
use uuid::Uuid;

use super::service::Inner;
use super::status::SyncError;
use crate::metrics::OutcomeLabels;
use crate::store::join::NewNode;

pub async fn join(inner: &Inner, req: JoinRequest) -> Result<JoinResponse, SyncError> {
    let result = admit(inner, req).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(SyncError::Token(_)) => "token_refused",
        Err(_) => "refused",
    };
    inner
        .metrics
        .joins_total
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
    result
}

async fn admit(inner: &Inner, req: JoinRequest) -> Result<JoinResponse, SyncError> {
    check_skew(BUILD_VERSION, &req.version).map_err(SyncError::VersionSkew)?;
    let name = req.node_name.trim();
    if name.is_empty() || name.len() > 253 || name.chars().any(char::is_control) {
        return Err(SyncError::BadRequest(
            "node_name must be 1 to 253 printable characters".into(),
        ));
    }
    let token = inner
        .store
        .check_bootstrap_token(&req.bootstrap_token)
        .await??;
    if !req.expected_group.is_empty() && req.expected_group != token.group {
        return Err(SyncError::GroupMismatch {
            expected: req.expected_group,
            actual: token.group,
        });
    }
    let id = Uuid::new_v4();
    let issued = inner
        .ca
        .sign_node_csr(&req.csr_der, &id.to_string(), inner.cert_ttl)?;
    let expires =
        DateTime::<Utc>::from_timestamp(issued.not_after.unix_timestamp(), 0).unwrap_or_default();
    inner
        .store
        .register_node(NewNode {
            id,
            name,
            group: &token.group,
            version: &req.version,
            token_id: &token.id,
            cert_serial: &issued.serial_hex,
            cert_expires_at: expires,
        })
        .await??;
    tracing::info!(node_id = %id, node_name = name, group = %token.group, token_id = %token.id, "node joined");
    Ok(JoinResponse {
        node_id: id.to_string(),
        group: token.group,
        certificate_pem: issued.pem,
        ca_pem: inner.ca.info().certificate_pem.clone(),
    })
}
