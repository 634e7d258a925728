//! Management API: Tyk Gateway API compatible routes plus Portcullis's own under `/portcullis`.
//! Handlers are thin: parse, call the store, shape the answer; errors map to HTTP in `error.rs`.

mod admin_auth;
mod apis;
mod cache;
mod certs;
mod config;
mod config_clients;
mod console;
mod error;
mod fleet;
mod health;
pub mod https;
mod keys;
mod oas;
mod oauth;
mod oauth_clients;
mod policies;
mod stored_secrets;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post, put};

pub use error::ApiError;

use crate::ca::CaInfo;
use crate::lifetime::LifetimeRules;
use crate::metrics::Metrics;
use crate::store::Store;

/// Largest request body accepted (an API definition with a big OpenAPI document inlined).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Largest configuration folder `POST /portcullis/config` takes (docs/config.md).
const MAX_CONFIG_BODY: usize = 64 * 1024 * 1024;

/// What every handler can reach.
#[derive(Clone, Debug)]
pub struct ApiState {
    pub store: Store,
    pub admin_secret: Arc<str>,
    pub ca: Arc<CaInfo>,
    pub metrics: Arc<Metrics>,
    pub lifetime_rules: LifetimeRules,
    /// Keys without access rights are accepted (Tyk's `allow_master_keys`).
    pub allow_master_keys: bool,
    /// Seals secrets inside API definitions (from `--encryption-secret`, which edges share).
    pub stored_secrets: portcullis_proto::envelope::EnvelopeKey,
    /// Seals private keys of the certificate store (from `--encryption-secret`, its own label).
    pub certificate_keys: portcullis_proto::envelope::EnvelopeKey,
    /// The OAuth 2.0 provider (authorize-client, revoke, revoke_all; docs/oauth.md).
    pub oauth: Arc<crate::oauth::OAuthServer>,
}

/// Tyk's answer to a write of an API or a policy: `action` is `added`, `modified` or `deleted`.
/// One query parameter's value, if given.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn written(key: &str, action: &'static str) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"key": key, "status": "ok", "action": action}))
}

/// Tyk's answer to a write of a definition, plus the fields it sets that are stored but not
/// acted on (docs/tyk-compatibility.md).
fn written_warning(
    key: &str,
    action: &'static str,
    warnings: &[portcullis_proto::model::compat::Warning],
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "key": key, "status": "ok", "action": action, "warnings": warnings,
    }))
}

/// The whole management API. Every route but `GET /hello` and the console's static shell
/// needs the admin secret.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/hello", get(health::hello))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        .route("/console", get(console::index))
        .route("/console/", get(console::index))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style))
        .route("/console/favicon.svg", get(console::icon))
        .route("/tyk/reload", get(health::reload).post(health::reload))
        .route("/tyk/reload/", get(health::reload).post(health::reload))
        .route(
            "/tyk/reload/group",
            get(health::reload).post(health::reload),
        )
        .route("/tyk/apis", get(apis::list).post(apis::create))
        .route(
            "/tyk/apis/",
            get(apis::list)
                .post(apis::create)
                .put(apis::unnamed)
                .delete(apis::unnamed),
        )
        // Static segments win over `{api_id}`, so an API with the id `oas` or `import` could
        // not be reached; those ids are refused on create (docs/oas.md).
        .route("/tyk/apis/oas", get(oas::list).post(oas::create))
        .route(
            "/tyk/apis/oas/",
            get(oas::list)
                .post(oas::create)
                .put(apis::unnamed)
                .delete(apis::unnamed),
        )
        .route("/tyk/apis/oas/import", post(oas::import))
        .route(
            "/tyk/apis/oas/{api_id}",
            get(oas::get).put(oas::update).delete(oas::remove),
        )
        .route(
            "/tyk/apis/{api_id}",
            get(apis::get).put(apis::update).delete(apis::remove),
        )
        .route("/tyk/policies", get(policies::list).post(policies::create))
        .route(
            "/tyk/policies/",
            get(policies::list)
                .post(policies::create)
                .put(policies::unnamed)
                .delete(policies::unnamed),
        )
        .route(
            "/tyk/policies/{id}",
            get(policies::get)
                .put(policies::update)
                .delete(policies::remove),
        )
        .route("/tyk/certs", get(certs::list).post(certs::create))
        .route(
            "/tyk/certs/",
            get(certs::list).post(certs::create).delete(certs::unnamed),
        )
        .route("/tyk/certs/{id}", get(certs::get).delete(certs::remove))
        .route("/tyk/cache/jwks", delete(cache::flush_jwks_all))
        .route("/tyk/cache/jwks/{api_id}", delete(cache::flush_jwks_api))
        .route("/tyk/keys", get(keys::list).post(keys::create))
        .route(
            "/tyk/keys/",
            get(keys::list)
                .post(keys::create)
                .put(keys::unnamed_update)
                .delete(keys::unnamed_delete),
        )
        .route("/tyk/keys/create", post(keys::create_generating))
        .route(
            "/tyk/keys/{key}",
            get(keys::get)
                .post(keys::create_named)
                .put(keys::update)
                .delete(keys::remove),
        )
        .route("/tyk/oauth/clients/create", post(oauth_clients::create))
        .route("/tyk/oauth/clients/{api_id}", get(oauth_clients::list))
        .route(
            "/tyk/oauth/clients/apis/{client_id}",
            get(oauth_clients::apis_of_client)
                .put(oauth_clients::update_of_apis)
                .delete(oauth_clients::remove_of_apis),
        )
        .route(
            "/tyk/oauth/clients/{api_id}/{client_id}",
            get(oauth_clients::get)
                .put(oauth_clients::update)
                .delete(oauth_clients::remove),
        )
        .route(
            "/tyk/oauth/clients/{api_id}/{client_id}/tokens",
            get(oauth_clients::tokens),
        )
        .route(
            "/tyk/oauth/clients/{api_id}/{client_id}/rotate",
            put(oauth_clients::rotate),
        )
        .route("/tyk/oauth/authorize-client", post(oauth::authorize_client))
        .route(
            "/tyk/oauth/authorize-client/",
            post(oauth::authorize_client),
        )
        .route("/tyk/oauth/revoke", post(oauth::revoke))
        .route("/tyk/oauth/revoke_all", post(oauth::revoke_all))
        .route("/tyk/oauth/refresh/{token}", delete(oauth::delete_refresh))
        .route("/tyk/oauth/tokens", delete(oauth::purge_lapsed))
        .route(
            "/portcullis/bootstrap-tokens",
            get(fleet::list_tokens).post(fleet::create_token),
        )
        .route(
            "/portcullis/bootstrap-tokens/{id}",
            delete(fleet::revoke_token),
        )
        .route("/portcullis/ca", get(fleet::ca))
        .route(
            "/portcullis/config",
            get(config::dump)
                .post(config::apply)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_CONFIG_BODY)),
        )
        .route("/portcullis/nodes", get(fleet::list_nodes))
        .route("/portcullis/propagation", get(fleet::propagation))
        .route(
            "/portcullis/nodes/{id}",
            get(fleet::get_node).delete(fleet::revoke_node),
        )
        .fallback(health::not_found)
        .method_not_allowed_fallback(health::method_not_allowed)
        .layer(axum::middleware::from_fn(health::refuse_control_paths))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin_auth::require_admin_secret,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            health::count_requests,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

#[cfg(test)]
mod tests;
