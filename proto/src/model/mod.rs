//! Tyk Classic JSON model (snake_case field names). Each resource keeps the whole JSON object it
//! was given, so fields Portcullis does not use yet round-trip, next to a typed view of the
//! fields it does use. Parsing validates; a bad value names its field.

mod api_definition;
pub mod auth_methods;
pub mod bounds;
pub mod certificate;
pub mod compat;
pub mod hmac;
pub mod idp_auth;
mod json;
pub mod oas;
pub mod oauth;
pub mod plugins;
mod policy;
mod session;
pub mod upstream_auth;

pub use api_definition::{
    ApiDefinition, ApiSpec, AuthTokenSpec, BasicAuthSpec, IDENTITY_PROVIDERS, ProxySpec,
    SignatureSpec, TransportSpec,
};
pub use policy::{AccessDefinition, Partitions, Policy, PolicySpec};
pub use session::{
    AllowedUrl, ApiLimit, BasicAuthData, SessionAccess, SessionSpec, SessionState,
    TOKEN_ORIGIN_FIELD, TOKENS_AFTER_FIELD,
};

/// A rejected resource: which field, and why. Shown to operators as `"<field>: <reason>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A fresh id in Tyk's style (uuid v4, hex without dashes).
pub fn generate_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}
