//! Errors of the sync server and their one mapping to gRPC statuses.

use tonic::Status;

use crate::ca::CaError;
use crate::store::StoreError;
use crate::store::join::TokenRefusal;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Token(#[from] TokenRefusal),
    #[error("node expects group {expected:?} but the bootstrap token is for group {actual:?}")]
    GroupMismatch { expected: String, actual: String },
    #[error("{0}")]
    VersionSkew(String),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("a node client certificate is required")]
    NoCertificate,
    #[error("node certificate refused: {0}")]
    BadCertificate(String),
    #[error("node certificate has expired")]
    CertificateExpired,
    #[error("node {0} has been revoked")]
    Revoked(String),
    #[error("too many joins from {address}; retry in {wait_secs} s")]
    JoinRateLimited {
        address: std::net::IpAddr,
        wait_secs: u64,
    },
    #[error("too many joins in progress on this control plane; retry shortly")]
    JoinsBusy,
    #[error("certificate authority error")]
    Ca(#[from] CaError),
    #[error("store error")]
    Store(#[from] StoreError),
}

impl From<SyncError> for Status {
    fn from(e: SyncError) -> Self {
        match &e {
            SyncError::Token(_) => Status::permission_denied(e.to_string()),
            SyncError::GroupMismatch { .. } | SyncError::VersionSkew(_) => {
                Status::failed_precondition(e.to_string())
            }
            SyncError::BadRequest(_) => Status::invalid_argument(e.to_string()),
            SyncError::NoCertificate
            | SyncError::BadCertificate(_)
            | SyncError::CertificateExpired => Status::unauthenticated(e.to_string()),
            SyncError::Revoked(_) => Status::permission_denied(e.to_string()),
            SyncError::JoinRateLimited { .. } | SyncError::JoinsBusy => {
                Status::resource_exhausted(e.to_string())
            }
            SyncError::Ca(CaError::BadCsr(_)) => Status::invalid_argument(e.to_string()),
            SyncError::Ca(inner) => {
                tracing::error!(error = %inner, "certificate authority failure");
                Status::internal("certificate authority error")
            }
            SyncError::Store(inner) => {
                tracing::error!(error = %inner, "store failure in sync server");
                Status::unavailable("control plane storage unavailable")
            }
        }
    }
}
