//! Command line of `portcullis-gw`; every flag also reads an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::Config;

/// Shortest --encryption-secret accepted, in bytes (the control plane refuses the same).
const MIN_SECRET_LEN: usize = 32;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis-gw",
    version,
    about = "Portcullis edge gateway",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Join (if needed), sync and proxy (the default).
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[arg(long, env = "PORTCULLIS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    #[arg(
        long,
        env = "PORTCULLIS_ADMIN_LISTEN",
        default_value = "127.0.0.1:9080"
    )]
    pub admin_listen: SocketAddr,
    /// HTTPS proxy listener; certificates come from the store, chosen by SNI.
    #[arg(long, env = "PORTCULLIS_TLS_LISTEN", default_value = "0.0.0.0:8443")]
    pub tls_listen: SocketAddr,
    /// Seconds a client has to complete its TLS handshake.
    #[arg(long, env = "PORTCULLIS_TLS_HANDSHAKE_TIMEOUT", default_value_t = 10.0)]
    pub tls_handshake_timeout: f64,
    /// Warn about store certificates expiring within this (30d, 12h, 90m, 3600s; a bare number is days).
    #[arg(long, env = "PORTCULLIS_CERTIFICATE_EXPIRY_WARNING", default_value = "30d", value_parser = parse_days)]
    pub certificate_expiry_warning: Duration,
    /// Control-plane sync URL, https://HOST:7443 (repeat or comma-separate for several replicas).
    #[arg(
        long = "control-plane",
        env = "PORTCULLIS_CONTROL_PLANE",
        value_delimiter = ','
    )]
    pub control_planes: Vec<url::Url>,
    #[arg(long, env = "PORTCULLIS_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
    /// sha256:HEX pin of the node CA (printed by `portcullis-cp token create`).
    #[arg(long, env = "PORTCULLIS_CA_HASH")]
    pub ca_hash: Option<String>,
    #[arg(long, env = "PORTCULLIS_GROUP")]
    pub group: Option<String>,
    /// Name shown in the node registry (default: host name).
    #[arg(long, env = "PORTCULLIS_NODE_NAME")]
    pub node_name: Option<String>,
    /// Keeps the node identity and last configuration across restarts.
    #[arg(long, env = "PORTCULLIS_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[arg(long, env = "PORTCULLIS_ENCRYPTION_SECRET", hide_env_values = true)]
    pub encryption_secret: Option<String>,
    /// Upstream timeout in seconds when an API sets no proxy.timeout.
    #[arg(long, env = "PORTCULLIS_UPSTREAM_TIMEOUT", default_value_t = 30.0)]
    pub upstream_timeout: f64,
    /// Regional Redis for sessions (falls back to REDIS_URL): `redis://`, `rediss://`, a Redis
    /// Cluster as `redis+cluster://HOST:PORT,HOST:PORT` or a Sentinel-managed primary as
    /// `redis+sentinel://HOST:PORT,HOST:PORT/SERVICE` (docs/redis.md).
    #[arg(long, env = "PORTCULLIS_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster, HOST:PORT,HOST:PORT (the same as a
    /// `redis+cluster://` --redis-url).
    #[arg(
        long,
        env = "PORTCULLIS_REDIS_CLUSTER_NODES",
        value_delimiter = ',',
        conflicts_with = "redis_url"
    )]
    pub redis_cluster_nodes: Vec<String>,
    #[arg(long, env = "PORTCULLIS_REDIS_PREFIX", default_value = "portcullis:")]
    pub redis_prefix: String,
    /// How rate limits are counted (docs/limits.md): gcra (in Redis, O(1)), sliding-log (in
    /// Redis, Tyk's default), local (in this gateway's memory; quotas stay in Redis).
    #[arg(
        long,
        env = "PORTCULLIS_RATE_LIMITER",
        value_enum,
        default_value_t = crate::limits::RateLimiterKind::Gcra
    )]
    pub rate_limiter: crate::limits::RateLimiterKind,
    /// With `--rate-limiter local`: reserve quotas in Redis up to this many requests at a time
    /// and count them in memory (docs/limits.md). 0: one Redis call per request.
    #[arg(long, env = "PORTCULLIS_QUOTA_LEASE", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(crate::limits::MAX_LEASE)))]
    pub quota_lease: u32,
    /// Look every session up in Redis instead of caching it in-process for up to 10 s.
    #[arg(long, env = "PORTCULLIS_DISABLE_LOCAL_SESSION_CACHE")]
    pub disable_local_session_cache: bool,
    /// PEM file of the CA that signs the certificate of a rediss:// Redis (default: system roots).
    #[arg(long, env = "PORTCULLIS_REDIS_CA_CERT")]
    pub redis_ca_cert: Option<PathBuf>,
    /// Sessions kept in the in-process cache (found and unknown keys).
    #[arg(long, env = "PORTCULLIS_SESSION_CACHE_ENTRIES", default_value_t = crate::sessions::DEFAULT_CACHE_ENTRIES)]
    pub session_cache_entries: usize,
    /// Let keys with no access rights call every API, as Tyk does (off: refused everywhere).
    #[arg(long, env = "PORTCULLIS_ALLOW_MASTER_KEYS")]
    pub allow_master_keys: bool,
    /// Tokio worker threads (default: one per core; with --proxy-workers, one for the control
    /// work).
    #[arg(long, env = "PORTCULLIS_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Serve the proxy listeners from N threads with a single-threaded runtime each, as nginx's
    /// worker processes (docs/architecture.md "Proxy workers"); 0: the tokio runtime serves them.
    #[arg(long, env = "PORTCULLIS_PROXY_WORKERS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=crate::proxy::workers::MAX_WORKERS as i64))]
    pub proxy_workers: u16,
    #[arg(long, env = "PORTCULLIS_LOG_JSON")]
    pub log_json: bool,
    /// One JSON line per proxied request to `stdout` or a file (appended); never the key or
    /// the query string (docs/observability.md).
    #[arg(long, env = "PORTCULLIS_ACCESS_LOG", value_name = "stdout|PATH")]
    pub access_log: Option<crate::access_log::Target>,
    /// OTLP/gRPC collector to send traces to, `http://HOST:PORT` (docs/observability.md);
    /// unset: no spans are made.
    #[arg(long, env = "PORTCULLIS_OTLP_ENDPOINT", value_name = "URL", value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<http::Uri>,
    /// Share of new traces recorded, 0 to 1; a client's sampled `traceparent` is always
    /// followed.
    #[arg(long, env = "PORTCULLIS_OTLP_SAMPLE_RATIO", default_value_t = 1.0, value_parser = parse_ratio)]
    pub otlp_sample_ratio: f64,
    /// Record every request whose client sent a sampled `traceparent`, whatever the ratio
    /// (for edges whose clients are your own services; off: clients cannot raise the ratio).
    #[arg(long, env = "PORTCULLIS_OTLP_TRUST_CLIENT_SAMPLING")]
    pub otlp_trust_client_sampling: bool,
    /// The `service.name` of the gateway's spans.
    #[arg(
        long,
        env = "PORTCULLIS_OTLP_SERVICE_NAME",
        default_value = "portcullis-gateway"
    )]
    pub otlp_service_name: String,
    /// Client certificate for matching TLS upstreams, PATTERN=CERT_ID (PATTERN: *, HOST,
    /// *.DOMAIN, optionally :PORT); repeatable, or space-separated in the variable. An API's
    /// own `upstream_certificates` win.
    #[arg(
        long = "upstream-certificate",
        env = "PORTCULLIS_UPSTREAM_CERTIFICATES",
        value_delimiter = ' '
    )]
    pub upstream_certificates: Vec<String>,
    /// Public keys matching TLS upstreams must present, PATTERN=ID[,ID...]; repeatable, or
    /// space-separated in the variable. An API's own `pinned_public_keys` win.
    #[arg(
        long = "pinned-public-key",
        env = "PORTCULLIS_PINNED_PUBLIC_KEYS",
        value_delimiter = ' '
    )]
    pub pinned_public_keys: Vec<String>,
    #[command(flatten)]
    pub client: crate::proxy::ClientArgs,
    #[command(flatten)]
    pub idp: IdpArgs,
    #[command(flatten)]
    pub oauth: OAuthArgs,
    #[command(flatten)]
    pub plugins: PluginArgs,
}

/// Custom auth plugins (docs/plugins.md).
#[derive(Debug, clap::Args)]
pub struct PluginArgs {
    /// Tyk's gRPC coprocess plugin server (`coprocess_options.coprocess_grpc_server`):
    /// `tcp://host:port` or `unix:///path/to/socket`.
    #[arg(long, env = "PORTCULLIS_COPROCESS_GRPC_SERVER")]
    pub coprocess_grpc_server: Option<String>,
    /// Seconds one call to the gRPC plugin server may take before the request gets a 503.
    #[arg(long, env = "PORTCULLIS_COPROCESS_TIMEOUT", default_value_t = 1.0)]
    pub coprocess_timeout: f64,
    /// Folder of JavaScript middleware files (`custom_middleware.auth_check.path` is read
    /// relative to it; Tyk's `middleware_path`).
    #[arg(long, env = "PORTCULLIS_MIDDLEWARE_PATH")]
    pub middleware_path: Option<PathBuf>,
}

impl PluginArgs {
    fn to_config(&self) -> Result<crate::plugins::PluginConfig, CliError> {
        if !(self.coprocess_timeout > 0.0 && self.coprocess_timeout <= 60.0) {
            return Err(CliError::Plugins(
                "--coprocess-timeout must be more than 0 and at most 60 seconds".into(),
            ));
        }
        Ok(crate::plugins::PluginConfig {
            coprocess_grpc_server: self.coprocess_grpc_server.clone().filter(|s| !s.is_empty()),
            coprocess_timeout: Duration::from_secs_f64(self.coprocess_timeout),
            middleware_path: self.middleware_path.clone(),
        })
    }
}

/// The OAuth 2.0 provider's endpoints under each `use_oauth2` API (docs/oauth.md).
#[derive(clap::Args)]
pub struct OAuthArgs {
    /// Status of every OAuth error answer: a number from 400 to 599 (Tyk's
    /// oauth_error_status_code, 403), or "rfc" for RFC 6749's own (400, 401).
    #[arg(long, env = "PORTCULLIS_OAUTH_ERROR_STATUS_CODE", default_value = "403", value_parser = crate::oauth::ErrorStatus::parse)]
    pub oauth_error_status_code: crate::oauth::ErrorStatus,
    /// What X-Tyk-Authorization must carry on {listen_path}/tyk/oauth/authorize-client (the
    /// login portal's secret, not the control plane's); unset, that route answers 404.
    #[arg(long, env = "PORTCULLIS_OAUTH_PORTAL_SECRET", hide_env_values = true)]
    pub oauth_portal_secret: Option<String>,
}

impl std::fmt::Debug for OAuthArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: the parsed command line may be printed.
        f.debug_struct("OAuthArgs")
            .field("oauth_error_status_code", &self.oauth_error_status_code)
            .field(
                "oauth_portal_secret",
                &self.oauth_portal_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Shortest --oauth-portal-secret accepted: the route takes guesses from anyone.
const MIN_PORTAL_SECRET_LEN: usize = 16;

impl OAuthArgs {
    fn to_config(&self) -> Result<crate::oauth::OAuthConfig, CliError> {
        let secret = self
            .oauth_portal_secret
            .as_deref()
            .filter(|s| !s.is_empty());
        if secret.is_some_and(|s| s.len() < MIN_PORTAL_SECRET_LEN) {
            return Err(CliError::WeakPortalSecret);
        }
        Ok(crate::oauth::OAuthConfig::default()
            .with_error_status(self.oauth_error_status_code)
            .with_portal_secret(secret))
    }
}

/// Identity providers: JWK sets, OpenID discovery, introspection (docs/jwt.md).
#[derive(Debug, clap::Args)]
pub struct IdpArgs {
    /// Seconds a fetched JWK set is used before it is fetched again (Tyk's JWKS cache time).
    #[arg(long, env = "PORTCULLIS_JWKS_CACHE_TTL", default_value_t = 240)]
    pub jwks_cache_ttl: u64,
    /// A token with an unknown `kid` refetches its JWK set at most once per this many seconds.
    #[arg(long, env = "PORTCULLIS_JWKS_REFETCH_INTERVAL", default_value_t = 10)]
    pub jwks_refetch_interval: u64,
    /// Seconds a JWK set, discovery or introspection call may take, body included.
    #[arg(long, env = "PORTCULLIS_IDP_TIMEOUT", default_value_t = 5.0)]
    pub idp_timeout: f64,
    /// PEM file of CAs trusted for identity-provider HTTPS, besides the public web roots.
    #[arg(long, env = "PORTCULLIS_IDP_CA_CERT")]
    pub idp_ca_cert: Option<PathBuf>,
}

impl IdpArgs {
    fn to_config(&self) -> Result<crate::idp::IdpConfig, CliError> {
        if !(1..=86_400).contains(&self.jwks_cache_ttl) {
            return Err(CliError::Idp(
                "--jwks-cache-ttl must be 1 to 86400 seconds".into(),
            ));
        }
        if !(1..=3_600).contains(&self.jwks_refetch_interval) {
            return Err(CliError::Idp(
                "--jwks-refetch-interval must be 1 to 3600 seconds".into(),
            ));
        }
        if !(self.idp_timeout > 0.0 && self.idp_timeout <= 60.0) {
            return Err(CliError::Idp(
                "--idp-timeout must be more than 0 and at most 60 seconds".into(),
            ));
        }
        let mut extra_roots = Vec::new();
        if let Some(path) = &self.idp_ca_cert {
            let bad = |reason: String| {
                CliError::Idp(format!("--idp-ca-cert {}: {reason}", path.display()))
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                extra_roots.push(cert.map_err(|e| bad(e.to_string()))?);
            }
            if extra_roots.is_empty() {
                return Err(bad("holds no certificate".into()));
            }
        }
        Ok(crate::idp::IdpConfig {
            fetch_timeout: Duration::from_secs_f64(self.idp_timeout),
            jwks_ttl: Duration::from_secs(self.jwks_cache_ttl),
            jwks_refetch_interval: Duration::from_secs(self.jwks_refetch_interval),
            extra_roots,
            ..Default::default()
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("missing {0} (flag or environment variable)")]
    Missing(&'static str),
    #[error("--upstream-timeout must be more than 0 and at most {max} seconds", max = portcullis_proto::model::bounds::MAX_TIMEOUT_SECS)]
    Timeout,
    #[error(
        "--encryption-secret must be at least 32 bytes (generate one with `openssl rand -hex 32`)"
    )]
    WeakSecret,
    #[error(
        "--oauth-portal-secret must be at least 16 bytes (generate one with `openssl rand -hex 32`)"
    )]
    WeakPortalSecret,
    #[error("--session-cache-entries must be between 16 and 10000000")]
    CacheEntries,
    #[error("--redis-ca-cert {path}: {reason}")]
    RedisCa { path: String, reason: String },
    #[error("--tls-handshake-timeout must be more than 0 and at most 300 seconds")]
    HandshakeTimeout,
    #[error(
        "--quota-lease needs --rate-limiter local (gcra and sliding-log count the quota in the rate's own Redis call)"
    )]
    QuotaLease,
    #[error(transparent)]
    ClientLimits(#[from] crate::proxy::LimitError),
    #[error(transparent)]
    UpstreamTls(#[from] crate::proxy::upstream_tls::GatewayTlsError),
    #[error("{0}")]
    Idp(String),
    #[error("{0}")]
    Plugins(String),
}

/// The collector's address: plain HTTP/2 (a collector agent beside the gateway; TLS to a
/// remote collector is that agent's job, docs/observability.md).
fn parse_otlp_endpoint(v: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = v.parse().map_err(|e| format!("{v:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none_or(str::is_empty) {
        return Err(
            "must be http://HOST:PORT (OTLP/gRPC without TLS, e.g. a local collector)".into(),
        );
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err("must not hold credentials (they would reach the logs)".into());
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err("must not have a path: OTLP/gRPC uses the service's own".into());
    }
    Ok(uri)
}

fn parse_ratio(v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{v:?} is not a number from 0 to 1")),
    }
}

/// `30d`, `12h`, `90m`, `3600s`, or a bare number of days.
fn parse_days(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let (n, unit) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&v[..i], c),
        _ => (v, 'd'),
    };
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err("unit must be s, m, h or d".into()),
    };
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a whole number with an optional s/m/h/d unit"))?;
    n.checked_mul(secs)
        .filter(|s| *s <= 3650 * 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| "at most 3650 days".into())
}

impl RunArgs {
    pub fn to_config(&self) -> Result<Config, CliError> {
        if self.control_planes.is_empty() {
            return Err(CliError::Missing(
                "--control-plane / PORTCULLIS_CONTROL_PLANE",
            ));
        }
        if !(self.upstream_timeout > 0.0
            && self.upstream_timeout <= portcullis_proto::model::bounds::MAX_TIMEOUT_SECS)
        {
            return Err(CliError::Timeout);
        }
        if self
            .encryption_secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_SECRET_LEN)
        {
            return Err(CliError::WeakSecret);
        }
        if !(self.tls_handshake_timeout > 0.0 && self.tls_handshake_timeout <= 300.0) {
            return Err(CliError::HandshakeTimeout);
        }
        if self.quota_lease > 0 && self.rate_limiter != crate::limits::RateLimiterKind::Local {
            return Err(CliError::QuotaLease);
        }
        Ok(Config {
            listen: self.listen,
            admin_listen: self.admin_listen,
            tls_listen: Some(self.tls_listen),
            tls_handshake_timeout: Duration::from_secs_f64(self.tls_handshake_timeout),
            certificate_expiry_warning: self.certificate_expiry_warning,
            control_planes: self.control_planes.clone(),
            bootstrap_token: self.bootstrap_token.clone(),
            ca_hash: self
                .ca_hash
                .clone()
                .ok_or(CliError::Missing("--ca-hash / PORTCULLIS_CA_HASH"))?,
            group: self.group.clone(),
            node_name: self.node_name.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_else(|_| "edge".into())
            }),
            state_dir: self.state_dir.clone(),
            encryption_secret: self.encryption_secret.clone().ok_or(CliError::Missing(
                "--encryption-secret / PORTCULLIS_ENCRYPTION_SECRET",
            ))?,
            upstream_timeout: Duration::from_secs_f64(self.upstream_timeout),
            redis_url: if self.redis_cluster_nodes.is_empty() {
                self.redis_url
                    .clone()
                    .or_else(|| std::env::var("REDIS_URL").ok())
            } else {
                Some(format!(
                    "redis+cluster://{}",
                    self.redis_cluster_nodes.join(",")
                ))
            },
            redis_prefix: self.redis_prefix.clone(),
            rate_limiter: self.rate_limiter,
            quota_lease: self.quota_lease,
            proxy_workers: usize::from(self.proxy_workers),
            access_log: self.access_log.clone(),
            tracing: self
                .otlp_endpoint
                .clone()
                .map(|endpoint| crate::trace::ExportConfig {
                    endpoint,
                    sample_ratio: self.otlp_sample_ratio,
                    service_name: self.otlp_service_name.clone(),
                    instance: String::new(),
                    trust_client_sampling: self.otlp_trust_client_sampling,
                }),
            local_session_cache: !self.disable_local_session_cache,
            redis_ca_pem: match &self.redis_ca_cert {
                Some(p) => Some(std::fs::read(p).map_err(|e| CliError::RedisCa {
                    path: p.display().to_string(),
                    reason: e.to_string(),
                })?),
                None => None,
            },
            session_cache_entries: Some(self.session_cache_entries)
                .filter(|n| (16..=10_000_000).contains(n))
                .ok_or(CliError::CacheEntries)?,
            allow_master_keys: self.allow_master_keys,
            client_limits: self.client.to_limits()?,
            upstream_tls: crate::proxy::upstream_tls::GatewayTls::parse(
                &self.upstream_certificates,
                &self.pinned_public_keys,
            )?,
            idp: self.idp.to_config()?,
            oauth: self.oauth.to_config()?,
            plugins: self.plugins.to_config()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, String> {
        let mut args = vec![
            "portcullis-gw",
            "--control-plane",
            "https://cp.example:7443",
            "--ca-hash",
            "sha256:00",
            "--encryption-secret",
            "0123456789abcdef0123456789abcdef",
        ];
        args.extend_from_slice(extra);
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        cli.run.to_config().map_err(|e| e.to_string())
    }

    #[test]
    fn the_rate_limiter_defaults_to_gcra_and_takes_the_three_names() {
        use crate::limits::RateLimiterKind;
        assert_eq!(parse(&[]).unwrap().rate_limiter, RateLimiterKind::Gcra);
        for (name, kind) in [
            ("gcra", RateLimiterKind::Gcra),
            ("sliding-log", RateLimiterKind::SlidingLog),
            ("local", RateLimiterKind::Local),
        ] {
            assert_eq!(parse(&["--rate-limiter", name]).unwrap().rate_limiter, kind);
        }
        assert!(
            parse(&["--rate-limiter", "leaky"])
                .unwrap_err()
                .contains("sliding-log"),
            "a wrong name lists the right ones"
        );
    }

    #[test]
    fn proxy_workers_are_off_by_default_and_bounded() {
        assert_eq!(parse(&[]).unwrap().proxy_workers, 0);
        assert_eq!(parse(&["--proxy-workers", "4"]).unwrap().proxy_workers, 4);
        assert!(parse(&["--proxy-workers", "257"]).is_err());
    }

    #[test]
    fn a_quota_lease_needs_the_local_limiter_and_a_bound() {
        assert_eq!(parse(&[]).unwrap().quota_lease, 0, "exact by default");
        let leased = parse(&["--rate-limiter", "local", "--quota-lease", "64"]).unwrap();
        assert_eq!(leased.quota_lease, 64);
        assert!(
            parse(&["--quota-lease", "64"])
                .unwrap_err()
                .contains("needs --rate-limiter local")
        );
        assert!(parse(&["--rate-limiter", "local", "--quota-lease", "100001"]).is_err());
        assert!(parse(&["--rate-limiter", "local", "--quota-lease", "-1"]).is_err());
    }

    #[test]
    fn oauth_flags_default_to_tyk_and_keep_the_portal_secret_out_of_debug() {
        let tyk = parse(&[]).unwrap().oauth;
        assert_eq!(tyk.error_status, crate::oauth::ErrorStatus::default());
        assert!(tyk.portal_secret.is_none());
        let set = parse(&[
            "--oauth-error-status-code",
            "rfc",
            "--oauth-portal-secret",
            "portal-secret-value",
        ])
        .unwrap()
        .oauth;
        assert_eq!(set.error_status, crate::oauth::ErrorStatus::Rfc);
        assert!(set.portal_secret.unwrap().matches(b"portal-secret-value"));
        assert!(parse(&["--oauth-error-status-code", "302"]).is_err());
        assert!(
            parse(&["--oauth-portal-secret", "short"])
                .unwrap_err()
                .contains("at least 16 bytes")
        );
        let empty = parse(&["--oauth-portal-secret", ""]).unwrap().oauth;
        assert!(
            empty.portal_secret.is_none(),
            "empty leaves the route closed"
        );
        let args = Cli::try_parse_from([
            "portcullis-gw",
            "--oauth-portal-secret",
            "portal-secret-value",
        ])
        .unwrap();
        assert!(!format!("{args:?}").contains("portal-secret-value"));
    }
}
