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
    /// Every HMAC/RSA signature failure (docs/hmac.md): one message, as Tyk.
    #[error("Authorization field missing, malformed or invalid")]
    HmacInvalid,
    #[error("Certificate not found")]
    HmacCertNotFound,
    #[error("Certificate doesn't contain RSA Public key")]
    HmacCertNotRsa,
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
    /// OAuth 2.0 bearer: no `Authorization` header (Tyk answers 400).
    #[error("Authorization field missing")]
    OAuthMissing,
    /// OAuth 2.0 bearer: the header is not `Bearer <token>`.
    #[error("Bearer token malformed")]
    OAuthMalformed,
    /// OAuth 2.0 bearer: unknown, revoked or deleted token.
    #[error("Key not authorised")]
    OAuthNotAuthorised,
    /// OAuth 2.0 bearer: the token's client was deleted (its tokens go with it).
    #[error("Key not authorised. OAuth client access was revoked")]
    OAuthClientRevoked,
    /// A request path the gateway refuses to normalise (see `crate::path`).
    #[error("{0}")]
    BadPath(#[from] crate::path::PathError),
    /// Upstream authentication cannot be applied, e.g. the request-signing certificate is
    /// not in the store (Tyk answers its request-signing misconfigurations with 500).
    #[error("{0}")]
    UpstreamAuthConfig(&'static str),
    /// The upstream's OAuth token endpoint is down, slow or answered garbage.
    #[error("The upstream OAuth token endpoint is unavailable")]
    UpstreamTokenUnavailable,
    /// The upstream's OAuth token endpoint refused the gateway's client credentials.
    #[error("The upstream OAuth token endpoint refused the gateway's credentials")]
    UpstreamTokenRefused,
    /// A JavaScript auth middleware answered the request itself (docs/plugins-js.md): a
    /// refusal rendered as `{"error": message}`, or with `raw` its own body as it is.
    #[error("{message}")]
    JsAnswer {
        status: StatusCode,
        message: std::sync::Arc<str>,
        headers: std::sync::Arc<[(http::HeaderName, HeaderValue)]>,
        raw: bool,
    },
    /// The JavaScript middleware failed: load error, exception, deadline, memory limit.
    #[error("{0}")]
    JsFailed(&'static str),
    /// JavaScript middleware cannot run here (no `--middleware-path`, all engines busy).
    #[error("{0}")]
    JsUnavailable(&'static str),
    /// A gRPC plugin answered the request itself (Tyk's `return_overrides`, or its answers
    /// for a missing session or token): status, headers and body are the plugin's.
    #[error("{}", .0.message)]
    PluginAnswer(std::sync::Arc<crate::plugins::coprocess::Answer>),
    /// The gRPC plugin could not be asked: not configured, down, too slow, breaker open, busy.
    #[error("custom auth plugin {hook:?} is unavailable: {reason}")]
    PluginUnavailable {
        hook: std::sync::Arc<str>,
        reason: &'static str,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Signature { status, .. } | Self::JsAnswer { status, .. } => *status,
            Self::JsFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::JsUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::PluginAnswer(answer) => answer.status,
            Self::PluginUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
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
            | Self::HmacInvalid
            | Self::JwtMissing
            | Self::ExternalMissing
            | Self::OAuthMissing
            | Self::OAuthMalformed
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
            | Self::JwtClaims(_)
            | Self::OAuthNotAuthorised
            | Self::OAuthClientRevoked => StatusCode::FORBIDDEN,
            Self::ExternalError | Self::HmacCertNotFound | Self::HmacCertNotRsa => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::UpstreamAuthConfig(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::UpstreamTokenUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamTokenRefused => StatusCode::BAD_GATEWAY,
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
        if let Self::PluginAnswer(answer) = &self {
            return answer.response();
        }
        if let Self::JsAnswer {
            status,
            message,
            headers,
            raw,
        } = &self
        {
            return js_answer(*status, message, headers, *raw);
        }
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

/// A script's own answer: its headers over Tyk's error body (or its raw body).
fn js_answer(
    status: StatusCode,
    message: &str,
    headers: &[(http::HeaderName, HeaderValue)],
    raw: bool,
) -> Response<Full<Bytes>> {
    let body = if raw {
        Bytes::copy_from_slice(message.as_bytes())
    } else {
        Bytes::from(format!(
            "{{\n    \"error\": {}\n}}",
            serde_json::Value::String(message.to_owned())
        ))
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    if !raw {
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    for (name, value) in headers {
        resp.headers_mut().insert(name.clone(), value.clone());
    }
    resp
}

/// An answer of the OAuth 2.0 endpoints the edge serves itself: RFC 6749 §5.2's
/// `{"error", "error_description"}`, sent with `--oauth-error-status-code` (docs/oauth.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("{0}")]
    UnauthorizedClient(&'static str),
    #[error("the response_type is not allowed for this API")]
    UnsupportedResponseType,
    /// The control plane keeps every code and token: without it no grant can be answered.
    #[error("the control plane cannot be reached")]
    Unavailable,
    /// Too many relays to the control plane in flight on this edge.
    #[error("too many OAuth requests in flight, retry later")]
    Busy,
    /// The per-API authorize-client route without the portal secret (Tyk's admin answer).
    #[error("Attempted administrative access with invalid or missing key!")]
    PortalKey,
    /// The per-API authorize-client route on a gateway without `--oauth-portal-secret`.
    #[error("Not Found")]
    PortalClosed,
}

impl OAuthError {
    /// The RFC 6749 error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidRequest(_) => "invalid_request",
            Self::UnauthorizedClient(_) => "unauthorized_client",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::Unavailable | Self::Busy => "temporarily_unavailable",
            Self::PortalKey => "access_denied",
            Self::PortalClosed => "not_found",
        }
    }

    /// The status RFC 6749 gives the error, before `--oauth-error-status-code`.
    pub fn rfc_status(&self) -> StatusCode {
        match self {
            Self::InvalidRequest(_)
            | Self::UnauthorizedClient(_)
            | Self::UnsupportedResponseType => StatusCode::BAD_REQUEST,
            Self::Unavailable | Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::PortalKey => StatusCode::FORBIDDEN,
            Self::PortalClosed => StatusCode::NOT_FOUND,
        }
    }

    /// The status sent: grant errors follow `--oauth-error-status-code`; an outage, the
    /// portal's admin check and a closed route keep their own.
    pub fn status(&self, mapping: crate::oauth::ErrorStatus) -> StatusCode {
        match self {
            Self::Unavailable | Self::Busy | Self::PortalKey | Self::PortalClosed => {
                self.rfc_status()
            }
            _ => mapping.map(self.rfc_status()),
        }
    }

    pub fn into_response(self, mapping: crate::oauth::ErrorStatus) -> Response<Full<Bytes>> {
        let body = match &self {
            Self::PortalKey => serde_json::json!({"status": "error", "message": self.to_string()}),
            // Not an OAuth answer: the route is not there.
            Self::PortalClosed => serde_json::json!({"error": self.to_string()}),
            _ => serde_json::json!({"error": self.code(), "error_description": self.to_string()}),
        };
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status(mapping);
        crate::oauth::no_store(resp.headers_mut());
        resp
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::oauth::ErrorStatus;

    async fn answer(e: OAuthError, mapping: ErrorStatus) -> (u16, serde_json::Value) {
        let resp = e.into_response(mapping);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn oauth_errors_have_rfc_bodies_and_the_configured_status() {
        let tyk = ErrorStatus::default();
        let (status, body) = answer(OAuthError::InvalidRequest("x is required"), tyk).await;
        assert_eq!(status, 403);
        assert_eq!(
            body,
            serde_json::json!({"error": "invalid_request", "error_description": "x is required"})
        );
        let (status, _) = answer(OAuthError::UnsupportedResponseType, ErrorStatus::Rfc).await;
        assert_eq!(status, 400);
        let (status, body) = answer(OAuthError::Unavailable, tyk).await;
        assert_eq!(status, 503);
        assert_eq!(body["error"], "temporarily_unavailable");
        assert_eq!(
            body["error_description"],
            "the control plane cannot be reached"
        );
        let (status, body) = answer(OAuthError::PortalKey, ErrorStatus::Rfc).await;
        assert_eq!(status, 403);
        assert_eq!(
            body,
            serde_json::json!({"status": "error",
                "message": "Attempted administrative access with invalid or missing key!"})
        );
        assert_eq!(
            answer(OAuthError::PortalClosed, tyk).await,
            (404, serde_json::json!({"error": "Not Found"}))
        );
    }

    #[test]
    fn bearer_errors_are_tyks() {
        assert_eq!(ProxyError::OAuthMissing.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            ProxyError::OAuthMalformed.to_string(),
            "Bearer token malformed"
        );
        assert_eq!(
            ProxyError::OAuthNotAuthorised.status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            ProxyError::OAuthClientRevoked.to_string(),
            "Key not authorised. OAuth client access was revoked"
        );
    }
}
