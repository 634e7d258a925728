//! Every way an OAuth request fails, mapped in one place to its status and body: RFC 6749 5.2
//! `{"error", "error_description"}` for the grant endpoints, Tyk's `{"status": "error",
//! "message"}` for the revoke routes (docs/oauth.md).

use serde_json::{Value, json};

use super::OAuthReply;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The API is unknown or does not use the built-in provider.
    #[error("API not found or not OAuth 2.0")]
    ApiNotFound,
    #[error("{0}")]
    InvalidRequest(&'static str),
    /// Unknown client, wrong secret, client of another API: one answer for all of them, so a
    /// caller learns nothing about which part was wrong.
    #[error("client authentication failed")]
    InvalidClient,
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("{0}")]
    UnauthorizedClient(&'static str),
    #[error("the grant type is not supported by this API")]
    UnsupportedGrantType,
    #[error("the response type is not supported by this API")]
    UnsupportedResponseType,
    /// Every password check slot stayed busy (RFC 6749 4.1.2.1's `temporarily_unavailable`).
    #[error("the server is busy, retry later")]
    Busy,
    /// Tyk's answers of the revoke routes: a status and a message.
    #[error("{message}")]
    Tyk { status: u16, message: &'static str },
    #[error("internal error")]
    Internal(#[source] InternalError),
}

/// What failed inside; logged, never shown.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        Self::Internal(InternalError::Store(e))
    }
}

impl OAuthError {
    pub fn internal(what: impl Into<String>) -> Self {
        Self::Internal(InternalError::Other(what.into()))
    }

    pub fn tyk(status: u16, message: &'static str) -> Self {
        Self::Tyk { status, message }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::ApiNotFound | Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant(_) => "invalid_grant",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::Busy => "temporarily_unavailable",
            Self::Tyk { .. } => "error",
            Self::Internal(_) => "server_error",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::ApiNotFound => 404,
            Self::InvalidClient => 401,
            Self::Tyk { status, .. } => *status,
            Self::Internal(_) => 500,
            Self::Busy => 503,
            _ => 400,
        }
    }

    fn body(&self) -> Value {
        match self {
            Self::Tyk { message, .. } => json!({"status": "error", "message": message}),
            _ => json!({"error": self.code(), "error_description": self.to_string()}),
        }
    }

    pub fn reply(self) -> OAuthReply {
        if let Self::Internal(e) = &self {
            tracing::error!(error = %e, "OAuth request failed");
        }
        OAuthReply {
            status: self.status(),
            body: self.body(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6749_shapes_and_statuses() {
        let r = OAuthError::InvalidClient.reply();
        assert_eq!(r.status, 401);
        assert_eq!(r.body["error"], "invalid_client");
        assert!(r.body["error_description"].is_string());
        let r = OAuthError::InvalidGrant("code expired").reply();
        assert_eq!(
            (r.status, r.body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(r.body["error_description"], "code expired");
        let r = OAuthError::UnsupportedGrantType.reply();
        assert_eq!(
            (r.status, r.body["error"].as_str()),
            (400, Some("unsupported_grant_type"))
        );
        let r = OAuthError::ApiNotFound.reply();
        assert_eq!(r.status, 404);
        assert_eq!(
            r.body,
            json!({"error": "invalid_request", "error_description": "API not found or not OAuth 2.0"})
        );
        let r = OAuthError::internal("boom").reply();
        assert_eq!(r.status, 500);
        assert_eq!(
            r.body["error_description"], "internal error",
            "the cause is not shown"
        );
    }

    #[test]
    fn tyk_shapes_for_the_revoke_routes() {
        let r = OAuthError::tyk(404, "oauth client doesn't exist").reply();
        assert_eq!(r.status, 404);
        assert_eq!(
            r.body,
            json!({"status": "error", "message": "oauth client doesn't exist"})
        );
    }
}
