//! Every management API error, and its one mapping to an HTTP status and Tyk's error body
//! `{"status": "error", "message": "..."}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use portcullis_proto::model::ValidationError;
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Attempted administrative access with invalid or missing key!")]
    Forbidden,
    /// Tyk's per-resource wording, e.g. "API not found".
    #[error("{0}")]
    NotFound(&'static str),
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// A 400 with Tyk's exact wording (its clients match on it), naming the field as well.
    #[error("{message}")]
    Refused {
        field: &'static str,
        message: &'static str,
    },
    #[error("{field}: {reason}")]
    Conflict { field: &'static str, reason: String },
    /// A file of a configuration folder that cannot be applied (docs/config.md): nothing of the
    /// folder is written.
    #[error("{file}: {field}: {reason}")]
    InFile {
        file: String,
        field: String,
        reason: String,
    },
    /// An upload the certificate store refuses: Tyk answers 403 with its message.
    #[error("{0}")]
    CertificateRefused(String),
    #[error("Method not supported")]
    MethodNotAllowed,
    #[error("{0}")]
    NotImplemented(&'static str),
    #[error("Internal error")]
    Internal(#[source] StoreError),
}

impl ApiError {
    /// Store errors in the context of one resource kind (`what` is Tyk's not-found message).
    pub fn from_store(what: &'static str) -> impl FnOnce(StoreError) -> Self {
        move |e| match e {
            StoreError::NotFound => Self::NotFound(what),
            StoreError::Conflict { field, reason } => Self::Conflict { field, reason },
            other => Self::Internal(other),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Forbidden | Self::CertificateRefused(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Invalid(_)
            | Self::Conflict { .. }
            | Self::Refused { .. }
            | Self::InFile { .. } => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            Self::Invalid(e) => {
                json!({"status": "error", "message": self.to_string(), "field": e.field})
            }
            Self::Conflict { field, .. } | Self::Refused { field, .. } => {
                json!({"status": "error", "message": self.to_string(), "field": field})
            }
            Self::InFile { file, field, .. } => json!({
                "status": "error", "message": self.to_string(), "file": file, "field": field,
            }),
            Self::Internal(e) => {
                // The cause goes to the log, not to the caller.
                tracing::error!(error = %e, source = ?std::error::Error::source(e), "management API request failed");
                json!({"status": "error", "message": self.to_string()})
            }
            _ => json!({"status": "error", "message": self.to_string()}),
        };
        (status, Json(body)).into_response()
    }
}
