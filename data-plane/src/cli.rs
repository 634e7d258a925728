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
    /// Regional Redis for sessions (falls back to REDIS_URL).
    #[arg(long, env = "PORTCULLIS_REDIS_URL")]
    pub redis_url: Option<String>,
    #[arg(long, env = "PORTCULLIS_REDIS_PREFIX", default_value = "portcullis:")]
    pub redis_prefix: String,
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
    /// Tokio worker threads (default: one per core).
    #[arg(long, env = "PORTCULLIS_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    #[arg(long, env = "PORTCULLIS_LOG_JSON")]
    pub log_json: bool,
    #[command(flatten)]
    pub client: crate::proxy::ClientArgs,
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
    #[error("--session-cache-entries must be between 16 and 10000000")]
    CacheEntries,
    #[error("--redis-ca-cert {path}: {reason}")]
    RedisCa { path: String, reason: String },
    #[error(transparent)]
    ClientLimits(#[from] crate::proxy::LimitError),
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
        Ok(Config {
            listen: self.listen,
            admin_listen: self.admin_listen,
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
            redis_url: self
                .redis_url
                .clone()
                .or_else(|| std::env::var("REDIS_URL").ok()),
            redis_prefix: self.redis_prefix.clone(),
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
        })
    }
}
