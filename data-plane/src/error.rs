//! Every error a client of the proxy can see, mapped to a status and a Tyk-style JSON body
//! `{"error": "..."}` in one place.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("No API found for this path")]
    NoRoute,
    #[error("Authorization field missing")]
    AuthMissing,
    /// Unknown key, or an API the key has no rights to (Tyk uses one message for both).
    #[error("Access to this API has been disallowed")]
    Disallowed,
    #[error("Key has expired, please renew")]
    KeyExpired,
    #[error("Key is inactive, please renew")]
    KeyInactive,
    /// Basic auth without a header (sent with `WWW-Authenticate`).
    #[error("Authorization field missing")]
    BasicMissing,
    #[error("Attempted access with malformed header, header not in basic auth format")]
    BasicNotBasic,
    #[error("Attempted access with malformed header, auth data not encoded correctly")]
    BasicNotEncoded,
    #[error("Attempted access with malformed header, values not in basic auth format")]
    BasicNotPair,
    #[error("User not authorised")]
    UserNotAuthorised,
    #[error("Body do not contain username")]
    BodyNoUser,
    #[error("Body do not contain password")]
    BodyNoPassword,
    #[error("username should be inside regexp match group")]
    BodyUserGroup,
    #[error("password should be inside regexp match group")]
    BodyPasswordGroup,
    /// Mashery signature check failed; status and message are configurable per API.
    #[error("{message}")]
    Signature {
        status: StatusCode,
        message: std::sync::Arc<str>,
    },
    #[error("Rate Limit Exceeded")]
    RateLimited,
    #[error("Quota exceeded")]
    QuotaExceeded,
    #[error("There was a problem proxying the request")]
    Upstream,
    #[error("Upstream service reached hard timeout.")]
    Timeout,
    /// TLS to the upstream failed: its certificate, its pin, its TLS versions, or its refusal.
    #[error("{0}")]
    UpstreamTls(crate::proxy::upstream_tls::TlsFailure),
    #[error("Gateway has no configuration yet")]
    NotReady,
    /// The API asks for an authentication method this build lacks: refused, never served with
    /// another method or open.
    #[error(
        "This API uses the {method} authentication method, which this gateway does not implement"
    )]
    UnsupportedAuth { method: std::sync::Arc<str> },
    /// Too many session lookups or password checks in flight on this edge.
    #[error("Too many authentication requests in flight, retry later")]
    AuthBusy,
    /// Static mTLS on a connection that is not TLS.
    #[error("TLS not enabled")]
    TlsNotEnabled,
    /// Static mTLS without a client certificate.
    #[error("Client TLS certificate is required")]
    ClientCertMissing,
    /// Static mTLS: the presented certificate is neither allow-listed nor issued by an
    /// allow-listed CA.
    #[error("Certificate with SHA256 {0} not allowed")]
    ClientCertNotAllowed(String),
    /// The presented (or allow-listed) client certificate has expired.
    #[error("Certificate has expired")]
    CertExpired,
    /// Dynamic mTLS without a client certificate.
    #[error("Client certificate required")]
    CertRequired,
    /// A key bound to certificates used with another one (Tyk's `auth.cert_mismatch`).
    #[error("Access to this API has been disallowed")]
    CertMismatch,
    /// JWT: no token (Tyk answers 400 here, unlike auth token's 401).
    #[error("Authorization field missing")]
    JwtMissing,
    /// JWT: malformed, bad signature, unknown key, revoked session.
    #[error("Key not authorized")]
    JwtNotAuthorized,
    /// JWT: the token's `alg` is not of the API's `jwt_signing_method` family (or is `none`).
    #[error("Key not authorized: Unexpected signing method")]
    JwtUnexpectedMethod,
    #[error("Key not authorized: token has expired")]
    JwtExpired,
    #[error("Key not authorized: token used before issued")]
    JwtUsedBeforeIssued,
    #[error("Key not authorized: token is not valid yet")]
    JwtNotYetValid,
    /// JWT: identity or policy claims do not give a session (Tyk's messages, 403).
    #[error("{0}")]
    JwtClaims(&'static str),
    /// External OAuth: no token.
    #[error("authorization field missing")]
    ExternalMissing,
    /// External OAuth: bad signature, inactive or expired at introspection.
    #[error("access token is not valid")]
    ExternalInvalid,
    /// External OAuth: a JWT time claim failed (Tyk passes the JWT message on, with 401).
    #[error("{0}")]
    ExternalTime(&'static str),
    /// External OAuth: the provider could not be asked (down, garbage, misconfigured).
    #[error("error happened during the access token validation")]
    ExternalError,
    /// OpenID Connect: anything wrong with the ID token.
    #[error("Key not authorised")]
    OidcNotAuthorised,
    /// A request path the gateway refuses to normalise (see `crate::path`).
    #[error("{0}")]
    BadPath(#[from] crate::path::PathError),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Signature { status, .. } => *status,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::AuthMissing
            | Self::KeyExpired
            | Self::BasicMissing
            | Self::UserNotAuthorised
            | Self::CertRequired
            | Self::CertMismatch
            | Self::JwtExpired
            | Self::JwtUsedBeforeIssued
            | Self::JwtNotYetValid
            | Self::ExternalInvalid
            | Self::ExternalTime(_)
            | Self::OidcNotAuthorised => StatusCode::UNAUTHORIZED,
            Self::BasicNotBasic
            | Self::BasicNotEncoded
            | Self::BasicNotPair
            | Self::BodyNoUser
            | Self::BodyNoPassword
            | Self::BodyUserGroup
            | Self::BodyPasswordGroup
            | Self::JwtMissing
            | Self::ExternalMissing
            | Self::BadPath(_) => StatusCode::BAD_REQUEST,
            Self::Disallowed
            | Self::KeyInactive
            | Self::QuotaExceeded
            | Self::TlsNotEnabled
            | Self::ClientCertMissing
            | Self::ClientCertNotAllowed(_)
            | Self::CertExpired
            | Self::JwtNotAuthorized
            | Self::JwtUnexpectedMethod
            | Self::JwtClaims(_) => StatusCode::FORBIDDEN,
            Self::ExternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::Upstream | Self::UpstreamTls(_) => StatusCode::BAD_GATEWAY,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::NotReady | Self::UnsupportedAuth { .. } | Self::AuthBusy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The response body, built without serde: the messages are fixed strings without quotes.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        // Messages can be operator-defined (signature errors): escape them as JSON.
        let body = format!(
            "{{\n    \"error\": {}\n}}",
            serde_json::Value::String(self.to_string())
        );
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}
