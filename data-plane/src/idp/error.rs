//! What can go wrong talking to an identity provider. No message carries a URL's query, a
//! token or a client secret: these errors end up in logs and in `/metrics` labels.

/// Why a provider could not be reached; the auth methods answer these with a 5xx-class error
/// (the token may well be valid), and the circuit breaker counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Why {
    #[error("no answer within the fetch timeout")]
    Timeout,
    #[error("connection failed")]
    Connect,
    #[error("server error (HTTP {0})")]
    ServerError(u16),
    #[error("circuit breaker open after repeated failures")]
    BreakerOpen,
    #[error("too many calls to this provider in flight")]
    Busy,
    #[error("TLS client unavailable")]
    Tls,
}

/// Why an answer was unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum What {
    #[error("the body exceeds the size limit")]
    TooLarge,
    #[error("the body is not a JSON object")]
    NotJson,
    #[error("the JWK set does not parse")]
    KeySet,
    #[error("the JWK set holds no usable key")]
    NoKeys,
    #[error("a required field is missing or has the wrong type: {0}")]
    Field(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdpError {
    #[error("identity provider unavailable: {0}")]
    Unavailable(Why),
    /// A 3xx or 4xx answer: redirects are not followed, and a refusal is not an outage.
    #[error("identity provider answered HTTP {0}")]
    Refused(u16),
    #[error("unusable answer from the identity provider: {0}")]
    BadResponse(What),
    /// Introspection said `active: false`, or the token's `exp` has passed.
    #[error("the token is not active")]
    Inactive,
    /// Not an `http://` or `https://` URL with a host (userinfo is refused too).
    #[error("not an http(s) URL of an identity provider")]
    BadUrl,
    /// The discovery document names another issuer (OpenID Connect Discovery 1.0 §4.3).
    #[error("the discovery document names another issuer")]
    IssuerMismatch,
}

impl IdpError {
    /// Outages, as opposed to answers: only these count towards the circuit breaker.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}
