//! State shared between the sync client (writer), the proxy and the admin port (readers).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::router::RoutingTable;
use crate::sessions::Sessions;

#[derive(Default)]
pub struct Shared {
    pub table: ArcSwap<RoutingTable>,
    ready: AtomicBool,
    pub stats: SyncStats,
    pub sessions: Sessions,
    pub requests: crate::request_metrics::RequestMetrics,
    /// Set once joined (or loaded from the state dir).
    pub node_id: std::sync::Mutex<Option<String>>,
    /// Header and payload of the split tokens handed out (docs/jwt.md, "Split tokens").
    pub split_tokens: crate::auth::split_token::SplitTokens,
    /// Identity-provider clients and caches (JWK sets, introspection), set once at start.
    idp: std::sync::OnceLock<Arc<crate::idp::Idp>>,
    /// Requests relayed to the control plane by the OAuth endpoints (bound, counters).
    pub oauth_relays: crate::oauth::Relays,
    /// The OAuth 2.0 endpoints' settings, set once at start.
    oauth: std::sync::OnceLock<crate::oauth::OAuthConfig>,
    /// Auth plugin clients and engines, set once at start (docs/plugins.md).
    plugins: std::sync::OnceLock<crate::plugins::Plugins>,
    /// Tokens the gateway fetched to call upstreams (docs/upstream-auth.md).
    pub upstream_tokens: crate::upstream_auth::TokenCache,
    /// The OTLP span exporter (`--otlp-endpoint`), set once at start.
    tracer: std::sync::OnceLock<Arc<crate::trace::Tracer>>,
}

impl Shared {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Swaps in a new routing table; from then on the gateway is ready for good.
    pub fn install(&self, table: RoutingTable, revision: i64) {
        self.requests
            .retain(table.routes().map(|r| r.api_id.as_str()));
        self.table.store(Arc::new(table));
        self.stats
            .applied_revision
            .store(revision, Ordering::Release);
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Installs the gateway's identity-provider state (once, at start).
    pub fn set_idp(&self, idp: Arc<crate::idp::Idp>) {
        let _ = self.idp.set(idp);
    }

    /// The identity-provider state; a default one when none was installed (tests).
    pub fn idp(&self) -> &crate::idp::Idp {
        self.idp.get_or_init(Default::default)
    }

    /// Installs the span exporter (once, at start).
    pub fn set_tracer(&self, tracer: Arc<crate::trace::Tracer>) {
        let _ = self.tracer.set(tracer);
    }

    /// The span exporter, when `--otlp-endpoint` is set.
    pub fn tracer(&self) -> Option<&Arc<crate::trace::Tracer>> {
        self.tracer.get()
    }

    /// Installs the OAuth endpoints' settings (once, at start).
    pub fn set_oauth(&self, oauth: crate::oauth::OAuthConfig) {
        let _ = self.oauth.set(oauth);
    }

    /// Installs the plugin clients and engines (once, at start).
    pub fn set_plugins(&self, plugins: crate::plugins::Plugins) {
        let _ = self.plugins.set(plugins);
    }

    /// The plugin state; one without a coprocess server or middleware path when none was
    /// installed (tests).
    pub fn plugins(&self) -> &crate::plugins::Plugins {
        self.plugins.get_or_init(Default::default)
    }

    /// The OAuth endpoints' settings; Tyk's defaults when none were installed (tests).
    pub fn oauth(&self) -> &crate::oauth::OAuthConfig {
        self.oauth.get_or_init(Default::default)
    }
}

/// Counters describing the sync client, for tests, `/metrics` and operators.
#[derive(Default, Debug)]
pub struct SyncStats {
    pub applied_revision: AtomicI64,
    pub snapshots: AtomicU64,
    pub changes: AtomicU64,
    pub bookmarks: AtomicU64,
    pub nacks: AtomicU64,
    pub connects: AtomicU64,
    pub connected: AtomicBool,
    pub renewals: AtomicU64,
    /// When the control plane last confirmed the configuration is its newest (unix ms): any
    /// applied snapshot, change or bookmark.
    pub fresh_at_ms: AtomicI64,
    /// Revision of the last backup written to Redis.
    pub backup_revision: AtomicI64,
    /// Revision of the configuration last written to the state dir (what a restart serves).
    pub state_dir_revision: AtomicI64,
    pub backup_loads: AtomicU64,
    pub backup_refusals: AtomicU64,
    /// Why the last Redis backup was refused; the sync error moves on to join attempts.
    pub backup_refused: std::sync::Mutex<Option<String>>,
    /// Expiry of the node certificate in use (unix seconds).
    pub cert_not_after: AtomicI64,
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl SyncStats {
    pub fn set_error(&self, e: impl Into<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.into());
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|g| g.clone())
    }
}
