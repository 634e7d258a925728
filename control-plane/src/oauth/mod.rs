//! The built-in OAuth 2.0 authorization server (docs/oauth.md): grants, codes, refresh-token
//! rotation, PKCE and notifications. Edges relay their token, revoke and authorize-client
//! requests here (`Sync.Oauth`); the management API calls the same functions.
//!
//! Codes, refresh tokens and access tokens are 256 random bits, stored by their sha256 only.

mod authorize;
mod client_auth;
mod errors;
mod form;
mod grants;
pub mod notify;
mod pkce;
mod revoke;
mod session;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use portcullis_proto::envelope::EnvelopeKey;
use portcullis_proto::model::ApiDefinition;
use portcullis_proto::model::oauth::OAuthSpec;
use serde_json::Value;

pub use errors::OAuthError;
use form::Form;

use crate::store::{Store, StoreError};

/// The longest lifetime a flag may set (10 years), in seconds.
pub const MAX_LIFETIME_SECS: i64 = 10 * 365 * 24 * 3600;

/// Lifetimes of what the provider issues, in seconds (`--oauth-*-ttl`; Tyk's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OAuthLifetimes {
    pub code_secs: i64,
    pub token_secs: i64,
    pub refresh_secs: i64,
}

impl Default for OAuthLifetimes {
    fn default() -> Self {
        Self {
            code_secs: 250,
            token_secs: 3600,
            refresh_secs: 14 * 24 * 3600,
        }
    }
}

/// An answer: the RFC 6749 status and its JSON body (the edge adds `Cache-Control: no-store`).
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthReply {
    pub status: u16,
    pub body: Value,
}

impl OAuthReply {
    fn ok(body: Value) -> Self {
        Self { status: 200, body }
    }
}

/// The endpoints an edge relays.
pub const ENDPOINTS: [&str; 4] = ["token", "revoke", "revoke_all", "authorize-client"];

/// The parts of an OAuth-enabled API the provider uses.
#[derive(Debug, Clone)]
pub struct OAuthApi {
    pub api_id: String,
    pub name: String,
    pub org_id: String,
    pub spec: OAuthSpec,
}

#[derive(Debug)]
pub struct OAuthServer {
    store: Store,
    /// Opens client secrets and the APIs' `notifications.shared_secret`.
    stored_secrets: EnvelopeKey,
    lifetimes: OAuthLifetimes,
    notifier: notify::Notifier,
    /// Bounds the password grant's bcrypt runs (tens of milliseconds of CPU each), so a flood
    /// of guesses cannot take every core of the control plane.
    bcrypt_slots: tokio::sync::Semaphore,
}

/// 32 random bytes, base64url without padding (43 characters).
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl OAuthServer {
    /// Starts the notification worker on the current runtime.
    pub fn new(store: Store, stored_secrets: EnvelopeKey, lifetimes: OAuthLifetimes) -> Self {
        Self {
            store,
            stored_secrets,
            lifetimes,
            notifier: notify::Notifier::start(),
            bcrypt_slots: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get().div_ceil(2)),
            ),
        }
    }

    pub fn notifier(&self) -> &notify::Notifier {
        &self.notifier
    }

    /// One relayed request: `endpoint` is one of [`ENDPOINTS`], `form` the parameters in
    /// order, `authorization` the request's Authorization header ("" when none).
    pub async fn handle(
        &self,
        api_id: &str,
        endpoint: &str,
        form: &[(String, String)],
        authorization: &str,
    ) -> OAuthReply {
        let result = async {
            let form = Form::new(form)?;
            let api = self.api(api_id).await?;
            match endpoint {
                "token" => self.token(&api, &form, authorization).await,
                "authorize-client" => self.authorize_client(&api, &form).await,
                "revoke" => self.revoke(Some(&api), &form, authorization).await,
                "revoke_all" => self.revoke_all(Some(&api), &form).await,
                _ => Err(OAuthError::InvalidRequest("unknown OAuth endpoint")),
            }
        }
        .await;
        result.unwrap_or_else(OAuthError::reply)
    }

    /// `POST /tyk/oauth/revoke` of the management API: the caller holds the admin secret, so
    /// no client secret and no API is needed.
    pub async fn admin_revoke(&self, form: &[(String, String)]) -> OAuthReply {
        let result = async { self.revoke(None, &Form::new(form)?, "").await }.await;
        result.unwrap_or_else(OAuthError::reply)
    }

    /// `POST /tyk/oauth/revoke_all` of the management API (Tyk asks the client secret there).
    pub async fn admin_revoke_all(&self, form: &[(String, String)]) -> OAuthReply {
        let result = async { self.revoke_all(None, &Form::new(form)?).await }.await;
        result.unwrap_or_else(OAuthError::reply)
    }

    /// The API, if it exists and uses the built-in provider.
    async fn api(&self, api_id: &str) -> Result<OAuthApi, OAuthError> {
        // No stored id holds NUL, and Postgres would refuse the query.
        if api_id.contains('\0') {
            return Err(OAuthError::ApiNotFound);
        }
        let value = match self.store.get_api(api_id).await {
            Ok(v) => v,
            Err(StoreError::NotFound) => return Err(OAuthError::ApiNotFound),
            Err(e) => return Err(e.into()),
        };
        let def = ApiDefinition::from_value(value)
            .map_err(|e| OAuthError::internal(format!("stored API {api_id}: {e}")))?;
        if !def.oauth().use_oauth2 {
            return Err(OAuthError::ApiNotFound);
        }
        Ok(OAuthApi {
            api_id: def.api_id().to_owned(),
            name: def.spec().name.clone(),
            org_id: def.spec().org_id.clone(),
            spec: def.oauth().clone(),
        })
    }

    /// Where the API's notifications go, `None` when it has no webhook (or its secret does
    /// not open: nothing is sent without it).
    fn notify_target(&self, api: &OAuthApi) -> Option<notify::Target> {
        let n = &api.spec.notifications;
        if n.oauth_on_keychange_url.is_empty() {
            return None;
        }
        let secret = if portcullis_proto::sealed_field::is_sealed(&n.shared_secret) {
            match portcullis_proto::sealed_field::open(
                &self.stored_secrets,
                &api.api_id,
                "notifications.shared_secret",
                &n.shared_secret,
            ) {
                Ok(s) => s,
                Err(_) => {
                    tracing::warn!(api_id = %api.api_id, "notifications.shared_secret does not open: OAuth notification not sent");
                    return None;
                }
            }
        } else {
            // Written before the secret was sealed at rest.
            n.shared_secret.clone()
        };
        Some(notify::Target {
            url: n.oauth_on_keychange_url.clone(),
            secret,
        })
    }

    fn notify(&self, api: &OAuthApi, kind: notify::Kind, tokens: &notify::Tokens<'_>) {
        if let Some(target) = self.notify_target(api) {
            self.notifier.send(target, kind, tokens);
        }
    }
}
