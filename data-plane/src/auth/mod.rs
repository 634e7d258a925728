//! The authentication chain: one module per method behind [`AuthMethod`], then the session
//! checks every method shares, in Tyk's order and with Tyk's messages.

pub mod chain;
pub mod context;
pub mod identity;
pub mod methods;
mod session_checks;
pub mod split_token;
pub mod stored_secrets;
pub mod token_session;
mod url_acl;
pub mod verified;

pub use chain::{AuthChain, Failure, Proven};
pub use context::RequestContext;
pub use identity::{Identity, Provider, Source};
pub use methods::{AuthMethod, basic, token};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis_proto::model::ApiDefinition;

use crate::error::ProxyError;
use crate::policies::{Entitlements, PolicyIndex, entitlements};

/// An API whose definition enables a method this build does not implement (see
/// `portcullis_proto::model::auth_methods`): refused with 503, never served another way.
#[derive(Debug)]
pub struct Unserved {
    /// The methods, comma-separated, as named in the 503 answer and the metrics.
    pub method: Arc<str>,
    /// Requests refused so far (`portcullis_gateway_unsupported_auth_method_total`).
    pub refused: AtomicU64,
}

impl Unserved {
    pub fn of(def: &ApiDefinition) -> Option<Self> {
        let found = portcullis_proto::model::auth_methods::unsupported(def);
        if found.is_empty() {
            return None;
        }
        let methods: Vec<&str> = found.iter().map(|u| u.method).collect();
        tracing::warn!(
            api_id = %def.api_id(),
            field = %found[0].field,
            "API enables an authentication method this gateway does not implement; answering 503"
        );
        Some(Self {
            method: methods.join(",").into(),
            refused: AtomicU64::new(0),
        })
    }
}

/// Authenticates a request (every method of the route's chain) and applies the base
/// identity's policies: what the request runs under.
pub async fn authenticate(
    ctx: &RequestContext<'_>,
    policies: &Arc<PolicyIndex>,
) -> Result<Arc<Entitlements>, Failure> {
    let route = ctx.route;
    if let Some(unserved) = &route.unserved {
        unserved.refused.fetch_add(1, Ordering::Relaxed);
        return Err(ProxyError::UnsupportedAuth {
            method: unserved.method.clone(),
        }
        .into());
    }
    let proven = route.auth.run(ctx).await?;
    let after_chain = |error: ProxyError| Failure {
        challenge: (error.status() == http::StatusCode::UNAUTHORIZED)
            .then(|| route.auth.base_challenge())
            .flatten(),
        error,
    };
    // Tyk checks only the base identity; a second factor that is expired, inactive or without
    // rights to this API would then still open it (docs/security.md).
    for other in &proven.others {
        checked(ctx, other, policies).map_err(after_chain)?;
    }
    let effective = checked(ctx, &proven.base, policies).map_err(after_chain)?;
    ctx.set_identity(&proven.base.key_hash);
    Ok(effective)
}

/// The identity's policies applied, then expiry, inactive, access-rights and URL checks.
fn checked(
    ctx: &RequestContext<'_>,
    identity: &Identity,
    policies: &Arc<PolicyIndex>,
) -> Result<Arc<Entitlements>, ProxyError> {
    let session = &identity.session;
    let effective = session
        .entitlements(&identity.key_hash, policies, || {
            let ids: Vec<&str> = session.state.policy_ids().collect();
            entitlements(session.state.spec(), &identity.key_hash, &ids, policies)
        })
        .map_err(|e| {
            tracing::debug!(api_id = %ctx.route.api_id, error = %e, "policies could not be applied");
            ProxyError::Disallowed
        })?;
    session_checks::check(
        session,
        &effective,
        ctx.route,
        ctx.parts,
        ctx.sessions().master_keys_allowed(),
    )?;
    Ok(effective)
}
