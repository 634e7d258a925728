//! What a method proves: the session a request runs under and where it came from.

use std::sync::Arc;

use crate::sessions::Session;

/// The methods that can provide the base identity, by Tyk's `base_identity_provided_by` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    AuthToken,
    BasicAuthUser,
    HmacKey,
    JwtClaim,
    OidcUser,
    OauthKey,
    CustomAuth,
}

impl Provider {
    /// The `base_identity_provided_by` value naming this provider; `None` for "" (unset).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "auth_token" => Self::AuthToken,
            "basic_auth_user" => Self::BasicAuthUser,
            "hmac_key" => Self::HmacKey,
            "jwt_claim" => Self::JwtClaim,
            "oidc_user" => Self::OidcUser,
            "oauth_key" => Self::OauthKey,
            "custom_auth" => Self::CustomAuth,
            _ => return None,
        })
    }

    /// The `base_identity_provided_by` name (also the auth span's method attribute).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthToken => "auth_token",
            Self::BasicAuthUser => "basic_auth_user",
            Self::HmacKey => "hmac_key",
            Self::JwtClaim => "jwt_claim",
            Self::OidcUser => "oidc_user",
            Self::OauthKey => "oauth_key",
            Self::CustomAuth => "custom_auth",
        }
    }
}

/// Where the session of an identity was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A key stored on the control plane, found through the session directory.
    StoredKey,
    /// A stored key found from the client's certificate (dynamic mTLS).
    Certificate,
    /// A session made from a verified token (JWT, OpenID Connect, external OAuth).
    Token,
}

/// A proven identity.
#[derive(Debug, Clone)]
pub struct Identity {
    pub session: Arc<Session>,
    /// The hash the session is known by (policies and limits are keyed by it).
    pub key_hash: String,
    pub provider: Provider,
    pub source: Source,
}
