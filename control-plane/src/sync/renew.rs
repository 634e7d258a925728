//! `RenewCertificate`: a node presents a new CSR over its authenticated channel and gets a fresh
//! certificate for the same identity; the old one stops being accepted for new calls.

use chrono::{DateTime, Utc};
use portcullis_proto::sync::{RenewCertificateRequest, RenewCertificateResponse};

use super::auth::NodeIdentity;
use super::service::Inner;
use super::status::SyncError;

pub async fn renew(
    inner: &Inner,
    node: &NodeIdentity,
    req: RenewCertificateRequest,
) -> Result<RenewCertificateResponse, SyncError> {
    let issued = inner
        .ca
        .sign_node_csr(&req.csr_der, &node.id.to_string(), inner.cert_ttl)?;
    let expires =
        DateTime::<Utc>::from_timestamp(issued.not_after.unix_timestamp(), 0).unwrap_or_default();
    inner
        .store
        .node_certificate_renewed(node.id, &issued.serial_hex, expires, &node.serial)
        .await?;
    tracing::info!(node_id = %node.id, "node certificate renewed");
    Ok(RenewCertificateResponse {
        certificate_pem: issued.pem,
        ca_pem: inner.ca.info().certificate_pem.clone(),
    })
}
