//! Typed gateway settings, built once from the command line (`cli.rs`) or directly by tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Everything `start` needs. Tests build this directly; the binary builds it from `Cli`.
#[derive(Clone)]
pub struct Config {
    /// Plain HTTP proxy listener (`--listen`); port 0 picks a free port.
    pub listen: SocketAddr,
    /// Admin listener for `/hello`, `/ready`, `/metrics` (`--admin-listen`).
    pub admin_listen: SocketAddr,
    /// HTTPS proxy listener (`--tls-listen`), certificates chosen by SNI from the store;
    /// `None`: no TLS listener.
    pub tls_listen: Option<SocketAddr>,
    /// Longest a client may take over its TLS handshake (`--tls-handshake-timeout`).
    pub tls_handshake_timeout: Duration,
    /// Store certificates expiring within this are warned about (`--certificate-expiry-warning`).
    pub certificate_expiry_warning: Duration,
    /// Control-plane sync endpoints, `https://host:port` (`--control-plane`, repeatable).
    pub control_planes: Vec<url::Url>,
    /// `<id>.<secret>`; needed only when the node has no identity yet.
    pub bootstrap_token: Option<String>,
    /// `sha256:<hex>` of the node CA's SubjectPublicKeyInfo; pins the CP before the token is sent.
    pub ca_hash: String,
    /// Group the node expects to join (must match the token's).
    pub group: Option<String>,
    /// Name reported to the control plane (defaults to the host name in the CLI).
    pub node_name: String,
    /// Keeps the node identity and last applied configuration across restarts.
    pub state_dir: Option<PathBuf>,
    /// Shared secret (same as the CP's) for backups and sealed secrets.
    pub encryption_secret: String,
    /// Upstream timeout when an API sets none (`proxy.timeout`).
    pub upstream_timeout: Duration,
    /// The regional Redis for sessions (`--redis-url`); without it lookups go to the CP.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this gateway writes (`--redis-prefix`), to share one Redis.
    pub redis_prefix: String,
    /// How rate limits are counted (`--rate-limiter`, docs/limits.md).
    pub rate_limiter: crate::limits::RateLimiterKind,
    /// `--quota-lease`: quotas reserved up to this many requests at a time (0: exact).
    pub quota_lease: u32,
    /// `--proxy-workers`: threads with a runtime each serving the proxy listeners (0: the
    /// caller's runtime serves them, as every test does).
    pub proxy_workers: usize,
    /// `--access-log`: one JSON line per proxied request (docs/observability.md).
    pub access_log: Option<crate::access_log::Target>,
    /// `--otlp-endpoint` and friends: traces over OTLP (docs/observability.md).
    pub tracing: Option<crate::trace::ExportConfig>,
    /// Skip the in-process session cache (`--disable-local-session-cache`), as Tyk's
    /// `disable_cached_session_state`.
    pub local_session_cache: bool,
    /// PEM CA bundle that signs a `rediss://` Redis's certificate (`--redis-ca-cert`); `None`:
    /// the system roots.
    pub redis_ca_pem: Option<Vec<u8>>,
    /// Sessions kept in the local cache (`--session-cache-entries`).
    pub session_cache_entries: usize,
    /// Tyk's master keys: a key whose rights are empty may call every API
    /// (`--allow-master-keys`; off: such a key is refused everywhere).
    pub allow_master_keys: bool,
    /// Timeouts and size limits for proxy clients (`--client-header-timeout` and friends).
    pub client_limits: crate::proxy::ClientLimits,
    /// Gateway-wide upstream client certificates and pinned public keys
    /// (`--upstream-certificate`, `--pinned-public-key`; docs/certificates.md).
    pub upstream_tls: crate::proxy::upstream_tls::GatewayTls,
    /// JWK sets, OpenID discovery and introspection (`--jwks-cache-ttl` and friends).
    pub idp: crate::idp::IdpConfig,
    /// The OAuth 2.0 provider's endpoints (`--oauth-error-status-code`, `--oauth-portal-secret`).
    pub oauth: crate::oauth::OAuthConfig,
    /// Custom auth plugins (`--coprocess-grpc-server`, `--middleware-path`; docs/plugins.md).
    pub plugins: crate::plugins::PluginConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("tls_listen", &self.tls_listen)
            .field("control_planes", &self.control_planes)
            .field("group", &self.group)
            .field("node_name", &self.node_name)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}
