//! The built-in OAuth 2.0 provider's endpoints under an API's listen path (docs/oauth.md).
//! Codes and tokens live on the control plane only: the edge answers `/oauth/authorize` and the
//! RFC 8414 metadata itself, and relays token, revoke, revoke_all and authorize-client to the
//! control plane (`Sync.Oauth`). These endpoints bypass the authentication chain; a bearer
//! token is then checked by `auth::methods::oauth2`.

mod authorize;
pub mod body;
mod endpoints;
mod metadata;
mod relay;

pub use endpoints::serve;
pub use relay::Relays;

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use portcullis_proto::model::ApiDefinition;
use portcullis_proto::model::oauth::{GrantType, ResponseType};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `--oauth-error-status-code`: the status every OAuth error answer is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorStatus {
    /// Keep the RFC 6749 status (400 or 401) the error was given.
    Rfc,
    /// One status for every error (Tyk's `oauth_error_status_code`, 403 by default).
    Fixed(StatusCode),
}

impl Default for ErrorStatus {
    fn default() -> Self {
        Self::Fixed(StatusCode::FORBIDDEN)
    }
}

impl ErrorStatus {
    /// `rfc`, or a status from 400 to 599.
    pub fn parse(v: &str) -> Result<Self, String> {
        let v = v.trim();
        if v.eq_ignore_ascii_case("rfc") {
            return Ok(Self::Rfc);
        }
        v.parse::<u16>()
            .ok()
            .filter(|n| (400..=599).contains(n))
            .and_then(|n| StatusCode::from_u16(n).ok())
            .map(Self::Fixed)
            .ok_or_else(|| format!("{v:?} is neither \"rfc\" nor a status from 400 to 599"))
    }

    /// The status an answer with RFC status `rfc` is sent with. Only client errors are
    /// mapped: a success stays one, and an outage (5xx) must not read as bad credentials.
    pub fn map(self, rfc: StatusCode) -> StatusCode {
        match self {
            _ if !rfc.is_client_error() => rfc,
            Self::Rfc => rfc,
            Self::Fixed(s) => s,
        }
    }
}

/// `--oauth-portal-secret`: what `X-Tyk-Authorization` must equal on the per-API
/// authorize-client route. Kept as its SHA-256 only, so the comparison is constant-time
/// whatever the lengths, and the secret itself is neither held nor printable.
#[derive(Clone, PartialEq, Eq)]
pub struct PortalSecret([u8; 32]);

impl std::fmt::Debug for PortalSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PortalSecret(<redacted>)")
    }
}

impl PortalSecret {
    /// `None` for an empty secret: an empty header must never match.
    pub fn new(secret: &str) -> Option<Self> {
        (!secret.is_empty()).then(|| Self(Sha256::digest(secret.as_bytes()).into()))
    }

    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        bool::from(self.0.ct_eq(&digest))
    }
}

/// The gateway's OAuth settings (`--oauth-error-status-code`, `--oauth-portal-secret`).
#[derive(Debug, Clone, Default)]
pub struct OAuthConfig {
    pub error_status: ErrorStatus,
    /// Unset: the per-API authorize-client route answers 404.
    pub portal_secret: Option<PortalSecret>,
}

impl OAuthConfig {
    pub fn with_error_status(mut self, status: ErrorStatus) -> Self {
        self.error_status = status;
        self
    }

    /// An empty or absent secret leaves the portal route closed.
    pub fn with_portal_secret(mut self, secret: Option<impl AsRef<str>>) -> Self {
        self.portal_secret = secret.and_then(|s| PortalSecret::new(s.as_ref()));
        self
    }
}

/// One endpoint under the listen path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Authorize,
    Token,
    Revoke,
    RevokeAll,
    /// Tyk's per-API `tyk/oauth/authorize-client`, for the login portal.
    AuthorizeClient,
    /// RFC 8414 `.well-known/oauth-authorization-server`.
    Metadata,
}

impl Endpoint {
    /// The endpoint name of the `Oauth` RPC (relayed endpoints only).
    fn relay_name(self) -> Option<&'static str> {
        Some(match self {
            Self::Token => "token",
            Self::Revoke => "revoke",
            Self::RevokeAll => "revoke_all",
            Self::AuthorizeClient => "authorize-client",
            Self::Authorize | Self::Metadata => return None,
        })
    }
}

/// What a route of a `use_oauth2` API needs of `def.oauth()`, parsed once per configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteOAuth {
    /// The listen path without its trailing slash: every endpoint is below it.
    base: String,
    pub authorize_types: Vec<ResponseType>,
    pub grant_types: Vec<GrantType>,
    /// The login portal `/oauth/authorize` redirects to; empty: none.
    pub login_redirect: String,
}

impl RouteOAuth {
    /// `None` unless the API enables the provider (the proxy then pays one `Option` check).
    pub fn of(def: &ApiDefinition, listen_path: &str) -> Option<Box<Self>> {
        let spec = def.oauth();
        if !spec.use_oauth2 {
            return None;
        }
        let meta = &spec.oauth_meta;
        Some(Box::new(Self {
            base: listen_path.trim_end_matches('/').to_owned(),
            // Validation refused unknown names already.
            authorize_types: meta
                .allowed_authorize_types
                .iter()
                .filter_map(|t| ResponseType::parse(t))
                .collect(),
            grant_types: meta
                .allowed_access_types
                .iter()
                .filter_map(|t| GrantType::parse(t))
                .collect(),
            login_redirect: meta.auth_login_redirect.clone(),
        }))
    }

    /// The listen path without its trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The endpoint a request is for, or `None` for the API's own paths. Tyk's routes:
    /// authorize, token and authorize-client take an optional trailing slash.
    pub fn endpoint(&self, method: &Method, path: &str) -> Option<Endpoint> {
        let rest = path.strip_prefix(self.base.as_str())?;
        let bare = rest.strip_suffix('/').unwrap_or(rest);
        let post = *method == Method::POST;
        let get = *method == Method::GET;
        let found = match (rest, bare) {
            (_, "/oauth/authorize") if post || get => Endpoint::Authorize,
            (_, "/oauth/token") if post => Endpoint::Token,
            (_, "/tyk/oauth/authorize-client") if post => Endpoint::AuthorizeClient,
            ("/oauth/revoke", _) if post => Endpoint::Revoke,
            ("/oauth/revoke_all", _) if post => Endpoint::RevokeAll,
            ("/.well-known/oauth-authorization-server", _) if get => Endpoint::Metadata,
            _ => return None,
        };
        Some(found)
    }
}

/// RFC 6749 5.1: token endpoint answers (and errors) are not cached anywhere.
pub fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(listen_path: &str) -> Box<RouteOAuth> {
        let def = ApiDefinition::from_value(serde_json::json!({
            "api_id": "a", "use_oauth2": true,
            "oauth_meta": {
                "allowed_access_types": ["authorization_code", "refresh_token"],
                "allowed_authorize_types": ["code"],
                "auth_login_redirect": "http://portal.example/login"
            },
            "proxy": {"listen_path": listen_path, "target_url": "http://127.0.0.1:1/"}
        }))
        .unwrap();
        RouteOAuth::of(&def, listen_path).unwrap()
    }

    #[test]
    fn endpoints_are_found_under_the_listen_path_with_tyks_methods_and_slashes() {
        let r = route("/api/");
        let (get, post, put) = (Method::GET, Method::POST, Method::PUT);
        assert_eq!(
            r.endpoint(&get, "/api/oauth/authorize"),
            Some(Endpoint::Authorize)
        );
        assert_eq!(
            r.endpoint(&post, "/api/oauth/authorize/"),
            Some(Endpoint::Authorize)
        );
        assert_eq!(r.endpoint(&post, "/api/oauth/token"), Some(Endpoint::Token));
        assert_eq!(
            r.endpoint(&post, "/api/oauth/token/"),
            Some(Endpoint::Token)
        );
        assert_eq!(r.endpoint(&get, "/api/oauth/token"), None);
        assert_eq!(
            r.endpoint(&post, "/api/oauth/revoke"),
            Some(Endpoint::Revoke)
        );
        assert_eq!(r.endpoint(&post, "/api/oauth/revoke/"), None);
        assert_eq!(
            r.endpoint(&post, "/api/oauth/revoke_all"),
            Some(Endpoint::RevokeAll)
        );
        assert_eq!(
            r.endpoint(&post, "/api/tyk/oauth/authorize-client/"),
            Some(Endpoint::AuthorizeClient)
        );
        assert_eq!(
            r.endpoint(&post, "/api/tyk/oauth/authorize-client"),
            Some(Endpoint::AuthorizeClient)
        );
        assert_eq!(
            r.endpoint(&get, "/api/.well-known/oauth-authorization-server"),
            Some(Endpoint::Metadata)
        );
        assert_eq!(r.endpoint(&put, "/api/oauth/token"), None);
        assert_eq!(r.endpoint(&post, "/other/oauth/token"), None);
        assert_eq!(r.endpoint(&post, "/api/oauth/tokens"), None);
        assert_eq!(r.endpoint(&get, "/api/resource"), None);
        // A root listen path serves them at the root.
        assert_eq!(
            route("/").endpoint(&post, "/oauth/token"),
            Some(Endpoint::Token)
        );
        assert_eq!(r.authorize_types, [ResponseType::Code]);
        assert_eq!(
            r.grant_types,
            [GrantType::AuthorizationCode, GrantType::RefreshToken]
        );
    }

    #[test]
    fn an_api_without_use_oauth2_has_no_endpoints() {
        let def = ApiDefinition::from_value(serde_json::json!({
            "api_id": "a",
            "proxy": {"listen_path": "/a/", "target_url": "http://127.0.0.1:1/"}
        }))
        .unwrap();
        assert!(RouteOAuth::of(&def, "/a/").is_none());
    }

    #[test]
    fn error_status_is_rfc_or_a_fixed_error_status() {
        assert_eq!(ErrorStatus::parse("rfc"), Ok(ErrorStatus::Rfc));
        assert_eq!(
            ErrorStatus::parse("400"),
            Ok(ErrorStatus::Fixed(StatusCode::BAD_REQUEST))
        );
        assert!(ErrorStatus::parse("200").is_err());
        assert!(ErrorStatus::parse("600").is_err());
        assert!(ErrorStatus::parse("x").is_err());
        let tyk = ErrorStatus::default();
        assert_eq!(tyk.map(StatusCode::UNAUTHORIZED), StatusCode::FORBIDDEN);
        assert_eq!(tyk.map(StatusCode::BAD_REQUEST), StatusCode::FORBIDDEN);
        assert_eq!(tyk.map(StatusCode::OK), StatusCode::OK);
        assert_eq!(
            tyk.map(StatusCode::TEMPORARY_REDIRECT),
            StatusCode::TEMPORARY_REDIRECT
        );
        assert_eq!(
            ErrorStatus::Rfc.map(StatusCode::UNAUTHORIZED),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            tyk.map(StatusCode::SERVICE_UNAVAILABLE),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn the_portal_secret_matches_only_itself_and_never_prints() {
        let s = PortalSecret::new("portal-secret").unwrap();
        assert!(s.matches(b"portal-secret"));
        assert!(!s.matches(b"portal-secre"));
        assert!(!s.matches(b""));
        assert!(PortalSecret::new("").is_none());
        assert!(!format!("{s:?}").contains("portal"));
        let c = OAuthConfig::default().with_portal_secret(Some(""));
        assert!(c.portal_secret.is_none());
    }
}
