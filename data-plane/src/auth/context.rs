//! What an authentication method may look at: one context per request, built by the proxy
//! after routing (docs/architecture.md, "The authentication chain").

use http::request::Parts;
use http::{HeaderName, HeaderValue};

use super::split_token::SplitTokens;

use super::identity::{Identity, Provider, Source};
use crate::certs::CertStore;
use crate::conn::ConnInfo;
use crate::error::ProxyError;
use crate::idp::Idp;
use crate::router::Route;
use crate::sessions::{LookupError, Sessions};
use crate::shared::Shared;

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
    shared: &'a Shared,
    /// Headers the upstream must receive instead of the client's (a split token's rebuilt
    /// JWT, a plugin's changes); applied by the proxy after the chain.
    edits: std::sync::Mutex<RequestEdits>,
    /// The base identity's key tag once the chain passed, for the access log (0: none).
    key_tag: std::sync::atomic::AtomicU64,
    /// The request's spans, when it is traced (docs/observability.md).
    trace: Option<&'a crate::trace::RequestTrace>,
}

/// What the chain asks the proxy to change in the request before it goes upstream (after
/// `strip_auth_data`).
#[derive(Debug, Default)]
pub struct RequestEdits {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl RequestEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    /// Applies removals, then sets (a set header replaces every earlier value).
    pub fn apply(self, headers: &mut http::HeaderMap) {
        for name in self.remove {
            headers.remove(name);
        }
        for (name, value) in self.set {
            headers.insert(name, value);
        }
    }
}

impl<'a> RequestContext<'a> {
    pub fn new(
        parts: &'a Parts,
        body: Option<&'a [u8]>,
        route: &'a Route,
        conn: &'a ConnInfo,
        certs: Option<&'a CertStore>,
        shared: &'a Shared,
    ) -> Self {
        Self {
            parts,
            body,
            route,
            conn,
            certs,
            shared,
            edits: std::sync::Mutex::default(),
            key_tag: std::sync::atomic::AtomicU64::new(0),
            trace: None,
        }
    }

    /// The context of a traced request: each method then records its span.
    pub fn with_trace(mut self, trace: Option<&'a crate::trace::RequestTrace>) -> Self {
        self.trace = trace;
        self
    }

    pub fn trace(&self) -> Option<&'a crate::trace::RequestTrace> {
        self.trace
    }

    /// Remembers who the request runs as (the hash's first digits only; docs/observability.md).
    pub fn set_identity(&self, key_hash: &str) {
        if let Some(tag) = crate::access_log::KeyTag::of(key_hash) {
            self.key_tag
                .store(tag.to_bits(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The base identity's key tag, once the chain passed.
    pub fn key_tag(&self) -> Option<crate::access_log::KeyTag> {
        crate::access_log::KeyTag::from_bits(
            self.key_tag.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    pub fn split_tokens(&self) -> &'a SplitTokens {
        &self.shared.split_tokens
    }

    /// Asks the proxy to send `value` in `name` upstream.
    pub fn rewrite_header(&self, name: HeaderName, value: HeaderValue) {
        self.edits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set
            .push((name, value));
    }

    /// Asks the proxy to drop `name` before the request goes upstream.
    pub fn remove_header(&self, name: HeaderName) {
        self.edits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove
            .push(name);
    }

    /// What the methods asked to change upstream.
    pub fn take_edits(&self) -> RequestEdits {
        std::mem::take(&mut *self.edits.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Gateway-wide plugin clients and engines (docs/plugins.md).
    pub fn plugins(&self) -> &'a crate::plugins::Plugins {
        self.shared.plugins()
    }

    /// True when the configuration in force holds the OAuth client `client_id` (a deleted
    /// client's tokens are refused even while a session is still cached).
    pub fn oauth_client_known(&self, client_id: &str) -> bool {
        self.shared
            .table
            .load()
            .oauth_clients
            .contains_key(client_id)
    }

    pub fn sessions(&self) -> &'a Sessions {
        &self.shared.sessions
    }

    /// JWK sets, discovery and introspection, shared by every route of the gateway.
    pub fn idp(&self) -> &'a Idp {
        self.shared.idp()
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
        match self.sessions().lookup(&key_hash).await {
            // A token-made session is named after a public claim: never a key to present.
            Ok(Some(session)) if session.token_made => Err(unknown),
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
