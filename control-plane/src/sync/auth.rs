//! Per-call node authentication: the handshake verified the chain to the node CA; here the
//! certificate must also be unexpired, name a registered node, match its current serial and not
//! be revoked.

use chrono::Utc;
use tonic::Request;
use uuid::Uuid;

use super::status::SyncError;
use super::tls::PeerInfo;
use crate::ca::parse_node_certificate;
use crate::store::Store;

/// A node that passed authentication for this call.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub id: Uuid,
    pub group: String,
    /// Serial of the certificate presented on this call.
    pub serial: String,
}

/// What a call is for: only a renewal may use the certificate its previous renewal replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Call,
    Renew,
}

pub async fn authenticate<T>(
    store: &Store,
    req: &Request<T>,
    purpose: Purpose,
) -> Result<NodeIdentity, SyncError> {
    let cert = req
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.certificate.as_ref())
        .ok_or(SyncError::NoCertificate)?;
    let parsed = parse_node_certificate(cert).map_err(SyncError::BadCertificate)?;
    if parsed.not_after <= Utc::now().timestamp() {
        return Err(SyncError::CertificateExpired);
    }
    let id = Uuid::parse_str(&parsed.node_id)
        .map_err(|_| SyncError::BadCertificate("subject is not a node id".into()))?;
    let record = store
        .node_record(id)
        .await?
        .ok_or_else(|| SyncError::BadCertificate(format!("node {id} is not registered")))?;
    if record.revoked {
        return Err(SyncError::Revoked(id.to_string()));
    }
    let current = same_serial(&record.cert_serial, &parsed.serial_hex);
    // A node whose renewal answer was lost still holds the certificate that asked for it.
    let retry_renewal = purpose == Purpose::Renew
        && !record.prev_cert_serial.is_empty()
        && same_serial(&record.prev_cert_serial, &parsed.serial_hex);
    if !current && !retry_renewal {
        return Err(SyncError::BadCertificate(
            "certificate has been superseded by a renewal".into(),
        ));
    }
    Ok(NodeIdentity {
        id,
        group: record.group,
        serial: parsed.serial_hex,
    })
}

/// Serials as hex, ignoring the leading zero bytes DER drops (older releases recorded them).
fn same_serial(recorded: &str, presented: &str) -> bool {
    fn significant(s: &str) -> &str {
        let mut s = s;
        while let Some(rest) = s.strip_prefix("00") {
            s = rest;
        }
        s
    }
    significant(recorded).eq_ignore_ascii_case(significant(presented))
}
