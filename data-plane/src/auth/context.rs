//! What an authentication method may look at: one context per request, built by the proxy
//! after routing (docs/architecture.md, "The authentication chain").

use http::request::Parts;

use super::identity::{Identity, Provider, Source};
use crate::certs::CertStore;
use crate::conn::ConnInfo;
use crate::error::ProxyError;
use crate::router::Route;
use crate::sessions::{LookupError, Sessions};

/// One request as the chain sees it.
pub struct RequestContext<'a> {
    pub parts: &'a Parts,
    /// The buffered body, when a method of the route asked for it (`needs_body`).
    pub body: Option<&'a [u8]>,
    pub route: &'a Route,
    /// Facts fixed at accept: remote address, TLS, SNI, ALPN, the client's certificates.
    pub conn: &'a ConnInfo,
    /// The certificate store of the configuration the request was routed with; present when
    /// the route uses certificates.
    pub certs: Option<&'a CertStore>,
    sessions: &'a Sessions,
}

impl<'a> RequestContext<'a> {
    pub fn new(
        parts: &'a Parts,
        body: Option<&'a [u8]>,
        route: &'a Route,
        conn: &'a ConnInfo,
        certs: Option<&'a CertStore>,
        sessions: &'a Sessions,
    ) -> Self {
        Self {
            parts,
            body,
            route,
            conn,
            certs,
            sessions,
        }
    }

    pub fn sessions(&self) -> &Sessions {
        self.sessions
    }

    /// Finds a stored key through the session directory (local cache, regional Redis, the
    /// control plane): the one place where lookups, their cache, events and outage rules live.
    /// `unknown` is the method's answer for a key that does not exist.
    pub async fn stored_key(
        &self,
        key: &str,
        provider: Provider,
        unknown: ProxyError,
    ) -> Result<Identity, ProxyError> {
        let key_hash = portcullis_proto::key_hash::key_hash(key);
        match self.sessions.lookup(&key_hash).await {
            Ok(Some(session)) => Ok(Identity {
                session,
                key_hash,
                provider,
                source: Source::StoredKey,
            }),
            // Unknown keys and keys that cannot be checked (CP and Redis both away) are refused
            // the same way Tyk refuses an unknown key.
            Ok(None) | Err(LookupError::Unavailable) => Err(unknown),
            Err(LookupError::Busy) => Err(ProxyError::AuthBusy),
        }
    }
}
