//! `Join`: a bootstrap token and a CSR become a node identity in the group bound to the token.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use portcullis_proto::sync::{JoinRequest, JoinResponse};
use portcullis_proto::version::{BUILD_VERSION, check_skew};
use uuid::Uuid;

use super::bounds;
use super::service::Inner;
use super::status::SyncError;
use crate::metrics::OutcomeLabels;
use crate::store::join::NewNode;

/// Longest a Join waits for one of the `--max-concurrent-joins` slots.
const SLOT_WAIT: Duration = Duration::from_secs(5);

pub async fn join(
    inner: &Inner,
    remote: Option<IpAddr>,
    req: JoinRequest,
) -> Result<JoinResponse, SyncError> {
    let result = limited(inner, remote, req).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(SyncError::Token(_)) => "token_refused",
        Err(SyncError::JoinRateLimited { .. }) => "rate_limited",
        Err(SyncError::JoinsBusy) => "busy",
        Err(_) => "refused",
    };
    inner
        .metrics
        .joins_total
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
    result
}

/// Every Join costs database work from the pool the management API shares, before the token is
/// even known to be good: each source address gets a token bucket, and the replica processes a
/// few joins at a time.
async fn limited(
    inner: &Inner,
    remote: Option<IpAddr>,
    req: JoinRequest,
) -> Result<JoinResponse, SyncError> {
    if let Some(address) = remote
        && let Err(wait) = inner.join_buckets.take(&address)
    {
        return Err(SyncError::JoinRateLimited {
            address,
            wait_secs: wait.as_secs().max(1),
        });
    }
    let _slot = match tokio::time::timeout(SLOT_WAIT, inner.join_slots.acquire()).await {
        Ok(Ok(slot)) => slot,
        _ => return Err(SyncError::JoinsBusy),
    };
    admit(inner, req).await
}

async fn admit(inner: &Inner, req: JoinRequest) -> Result<JoinResponse, SyncError> {
    bounds::check_join(&req)?;
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
