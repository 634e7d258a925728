//! Typed control-plane settings, built once from the command line (`cli.rs`) or directly by tests.

use std::net::SocketAddr;
use std::time::Duration;

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
    /// Shared secret the CA key (and later other secrets) are sealed with.
    pub encryption_secret: String,
    /// Name of this replica, shown in the node registry.
    pub replica_name: String,
    /// Lifetime of node certificates issued at join and renewal.
    pub node_cert_ttl: Duration,
    /// Largest database pool this replica opens.
    pub max_db_connections: u32,
    /// Tyk's key lifetime settings (`--global-session-lifetime` and friends).
    pub lifetime_rules: crate::lifetime::LifetimeRules,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("api_listen", &self.api_listen)
            .field("sync_listen", &self.sync_listen)
            .field("sync_names", &self.sync_names)
            .field("replica_name", &self.replica_name)
            .field("node_cert_ttl", &self.node_cert_ttl)
            .finish_non_exhaustive()
    }
}
