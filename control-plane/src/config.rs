//! Typed control-plane settings, built once from the command line (`cli.rs`) or directly by tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Shortest admin, encryption and CA secret accepted, in bytes (256 bits of key material if random).
pub const MIN_SECRET_LEN: usize = 32;

/// A secret that does not protect what it should; the message names the flag.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WeakSecret {
    #[error("{0} must be at least 32 bytes (generate one with `openssl rand -hex 32`)")]
    Short(&'static str),
    #[error("{0} must differ from --encryption-secret, which every edge holds")]
    Shared(&'static str),
}

/// Refuses a secret shorter than [`MIN_SECRET_LEN`].
pub fn check_secret(flag: &'static str, secret: &str) -> Result<(), WeakSecret> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(WeakSecret::Short(flag));
    }
    Ok(())
}

/// PEM files for the management API's HTTPS listener.
#[derive(Debug, Clone)]
pub struct ApiTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// Every secret long enough; called by `start` so no entry point skips it.
    pub fn check_secrets(&self) -> Result<(), WeakSecret> {
        check_secret("--admin-secret", &self.admin_secret)?;
        check_secret("--encryption-secret", &self.encryption_secret)?;
        if let Some(s) = &self.ca_secret {
            check_secret("--ca-secret", s)?;
        }
        // Edges hold the encryption secret: equal to the admin or CA secret, it would give every
        // edge the management API or the node CA key.
        if self.admin_secret == self.encryption_secret {
            return Err(WeakSecret::Shared("--admin-secret"));
        }
        if self.ca_secret.as_deref() == Some(self.encryption_secret.as_str()) {
            return Err(WeakSecret::Shared("--ca-secret"));
        }
        Ok(())
    }
}

/// Everything `serve` needs. Tests build this directly; the binary builds it from `Cli`.
#[derive(Clone)]
pub struct Config {
    /// Management API listener (`--api-listen`); port 0 picks a free port.
    pub api_listen: SocketAddr,
    /// gRPC sync listener (`--sync-listen`), TLS always.
    pub sync_listen: SocketAddr,
    /// Names in the sync server certificate (`--sync-names`).
    pub sync_names: Vec<String>,
    pub database_url: String,
    /// Admin secret expected in `X-Tyk-Authorization`.
    pub admin_secret: String,
    /// Shared secret every edge also holds (config backups, stored client secrets).
    pub encryption_secret: String,
    /// CP-only secret the node CA key is sealed with (`--ca-secret`); `None` derives the sealing
    /// key from the admin secret. Edges never hold either.
    pub ca_secret: Option<String>,
    /// The CA secret (or admin secret) used before a rotation; the CA key is re-sealed at start.
    pub previous_ca_secret: Option<String>,
    /// Keys without access rights are accepted (`--allow-master-keys`, Tyk's `allow_master_keys`).
    pub allow_master_keys: bool,
    /// Serve the management API over HTTPS with this certificate chain and key (PEM files).
    pub api_tls: Option<ApiTls>,
    /// Name of this replica, shown in the node registry.
    pub replica_name: String,
    /// Lifetime of node certificates issued at join and renewal.
    pub node_cert_ttl: Duration,
    /// Largest database pool this replica opens.
    pub max_db_connections: u32,
    /// Tyk's key lifetime settings (`--global-session-lifetime` and friends).
    pub lifetime_rules: crate::lifetime::LifetimeRules,
    /// Bounds on the sync port and on what nodes can make it do (`--sync-max-*`, `--join-*`, ...).
    pub sync_limits: crate::sync::SyncLimits,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("api_listen", &self.api_listen)
            .field("sync_listen", &self.sync_listen)
            .field("sync_names", &self.sync_names)
            .field("replica_name", &self.replica_name)
            .field("node_cert_ttl", &self.node_cert_ttl)
            .field("allow_master_keys", &self.allow_master_keys)
            .field("api_tls", &self.api_tls)
            .finish_non_exhaustive()
    }
}
