//! Tyk's built-in OAuth 2.0 provider: an API definition's settings (`use_oauth2`, `oauth_meta`,
//! `notifications`) and the OAuth client resource (docs/oauth.md).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ValidationError;
use super::json::null_as_default;

/// A grant type of the token endpoint (`oauth_meta.allowed_access_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    Password,
    ClientCredentials,
}

impl GrantType {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "authorization_code" => Self::AuthorizationCode,
            "refresh_token" => Self::RefreshToken,
            "password" => Self::Password,
            "client_credentials" => Self::ClientCredentials,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::Password => "password",
            Self::ClientCredentials => "client_credentials",
        }
    }
}

/// A response type of the authorization endpoint (`oauth_meta.allowed_authorize_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseType {
    Code,
    /// The implicit grant.
    Token,
}

impl ResponseType {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "code" => Some(Self::Code),
            "token" => Some(Self::Token),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Code => "code",
            Self::Token => "token",
        }
    }
}

/// The OAuth 2.0 provider settings of an API definition.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct OAuthSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_oauth2: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub oauth_meta: OAuthMeta,
    #[serde(default, deserialize_with = "null_as_default")]
    pub notifications: Notifications,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct OAuthMeta {
    #[serde(default, deserialize_with = "null_as_default")]
    pub allowed_access_types: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub allowed_authorize_types: Vec<String>,
    /// The login portal `/oauth/authorize` redirects to (307, the client's parameters kept).
    #[serde(default, deserialize_with = "null_as_default")]
    pub auth_login_redirect: String,
}

/// `notifications`: where token changes are announced (`X-Tyk-Shared-Secret` on each POST).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct Notifications {
    /// Sealed at rest by the control plane (a stored secret).
    #[serde(default, deserialize_with = "null_as_default")]
    pub shared_secret: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub oauth_on_keychange_url: String,
}

fn http_url(field: &str, value: &str) -> Result<(), ValidationError> {
    let ok = (value.starts_with("http://") || value.starts_with("https://"))
        && value.len() <= 2048
        && !value.chars().any(|c| c.is_control() || c == ' ');
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            "must be an absolute http:// or https:// URL",
        ))
    }
}

impl OAuthSpec {
    /// Grant types the token endpoint accepts; the field's own errors are caught by `validate`.
    pub fn grant_allowed(&self, grant: GrantType) -> bool {
        self.oauth_meta
            .allowed_access_types
            .iter()
            .any(|t| t == grant.as_str())
    }

    pub fn response_type_allowed(&self, rt: ResponseType) -> bool {
        self.oauth_meta
            .allowed_authorize_types
            .iter()
            .any(|t| t == rt.as_str())
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        for (i, t) in self.oauth_meta.allowed_access_types.iter().enumerate() {
            if GrantType::parse(t).is_none() {
                return Err(ValidationError::new(
                    format!("oauth_meta.allowed_access_types[{i}]"),
                    "must be authorization_code, refresh_token, password or client_credentials",
                ));
            }
        }
        for (i, t) in self.oauth_meta.allowed_authorize_types.iter().enumerate() {
            if ResponseType::parse(t).is_none() {
                return Err(ValidationError::new(
                    format!("oauth_meta.allowed_authorize_types[{i}]"),
                    "must be code or token",
                ));
            }
        }
        if !self.oauth_meta.auth_login_redirect.is_empty() {
            http_url(
                "oauth_meta.auth_login_redirect",
                &self.oauth_meta.auth_login_redirect,
            )?;
        }
        if !self.notifications.oauth_on_keychange_url.is_empty() {
            http_url(
                "notifications.oauth_on_keychange_url",
                &self.notifications.oauth_on_keychange_url,
            )?;
        }
        Ok(())
    }
}

/// Several redirect URIs share Tyk's one `redirect_uri` field, separated by this.
pub const REDIRECT_URI_SEPARATOR: char = ';';
/// `token_endpoint_auth_method` of a public client (RFC 7591): no secret, PKCE required.
pub const PUBLIC_CLIENT: &str = "none";

const MAX_ID: usize = 255;
const MAX_REDIRECT_URIS: usize = 32;

/// An OAuth client as stored on the control plane and streamed to edges (resource kind
/// `oauth_client`, id = `client_id`). `secret` is sealed before it reaches any table.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OAuthClient {
    #[serde(default, deserialize_with = "null_as_default")]
    pub client_id: String,
    /// Sealed (`SealedField` format); empty for a public client.
    #[serde(default, deserialize_with = "null_as_default")]
    pub secret: String,
    /// One URI, or several separated by `;`; matched exactly.
    #[serde(default, deserialize_with = "null_as_default")]
    pub redirect_uri: String,
    /// The API the client belongs to; empty: every API its policy grants.
    #[serde(default, deserialize_with = "null_as_default")]
    pub api_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub policy_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub org_id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub meta_data: Map<String, Value>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub description: String,
    /// RFC 7591; `none` makes a public client. Default `client_secret_basic` (form accepted too).
    #[serde(default, deserialize_with = "null_as_default")]
    pub token_endpoint_auth_method: String,
}

impl OAuthClient {
    /// Parses what an operator sent, naming the field of a bad value; text and numbers that
    /// Postgres could not store back are refused like in every other resource.
    pub fn parse(body: &[u8]) -> Result<Self, ValidationError> {
        let (_, client) = super::json::parse_object(body)?;
        Ok(client)
    }

    pub fn redirect_uris(&self) -> impl Iterator<Item = &str> {
        self.redirect_uri
            .split(REDIRECT_URI_SEPARATOR)
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }

    /// Exact match against one of the registered URIs.
    pub fn allows_redirect(&self, uri: &str) -> bool {
        self.redirect_uris().any(|u| u == uri)
    }

    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == PUBLIC_CLIENT
    }

    /// Checks what an operator sent (the secret still in plaintext or already sealed).
    pub fn validate(&self) -> Result<(), ValidationError> {
        let id_ok = |s: &str| {
            !s.is_empty() && s.len() <= MAX_ID && !s.chars().any(|c| c.is_control() || c == '/')
        };
        if !id_ok(&self.client_id) {
            return Err(ValidationError::new(
                "client_id",
                "must be 1 to 255 characters without '/' or control characters",
            ));
        }
        if !self.api_id.is_empty() && !id_ok(&self.api_id) {
            return Err(ValidationError::new("api_id", "is not a valid API id"));
        }
        let uris: Vec<&str> = self.redirect_uris().collect();
        if uris.len() > MAX_REDIRECT_URIS {
            return Err(ValidationError::new(
                "redirect_uri",
                format!("at most {MAX_REDIRECT_URIS} URIs"),
            ));
        }
        for u in uris {
            let scheme_ok = u.contains("://") && !u.starts_with("javascript:");
            if !scheme_ok || u.contains('#') || u.len() > 2048 || u.chars().any(char::is_control) {
                return Err(ValidationError::new(
                    "redirect_uri",
                    "each URI must be absolute, without a fragment",
                ));
            }
        }
        match self.token_endpoint_auth_method.as_str() {
            "" | "client_secret_basic" | "client_secret_post" | PUBLIC_CLIENT => {}
            _ => {
                return Err(ValidationError::new(
                    "token_endpoint_auth_method",
                    "must be client_secret_basic, client_secret_post or none",
                ));
            }
        }
        if self.description.len() > 4096 {
            return Err(ValidationError::new("description", "at most 4096 bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_redirect_uris_match_exactly() {
        let c = OAuthClient {
            client_id: "c".into(),
            redirect_uri: "http://a.example/cb; http://b.example/cb".into(),
            ..Default::default()
        };
        assert!(c.allows_redirect("http://a.example/cb"));
        assert!(c.allows_redirect("http://b.example/cb"));
        assert!(!c.allows_redirect("http://a.example/cb/"));
        assert!(!c.allows_redirect("http://a.example/cb?x=1"));
        c.validate().unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let c = OAuthClient {
            client_id: "a/b".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "client_id");
        let c = OAuthClient {
            client_id: "c".into(),
            redirect_uri: "http://a/cb#frag".into(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().field, "redirect_uri");
        let spec: OAuthSpec = serde_json::from_value(serde_json::json!({
            "use_oauth2": true,
            "oauth_meta": {"allowed_access_types": ["authorization_code", "magic"]}
        }))
        .unwrap();
        assert_eq!(
            spec.validate().unwrap_err().field,
            "oauth_meta.allowed_access_types[1]"
        );
    }
}
