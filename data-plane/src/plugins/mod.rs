//! Gateway-wide state of custom auth plugins: the gRPC coprocess client and the JavaScript
//! engines (docs/plugins.md). Routes hold only their hook's settings; the connection, its
//! circuit breaker and the loaded scripts live here, set once at start.

pub mod coprocess;
pub mod js;

use std::path::PathBuf;
use std::time::Duration;

/// The gateway's plugin flags (`--coprocess-grpc-server`, `--coprocess-timeout`,
/// `--middleware-path`).
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// `tcp://host:port`, `http://host:port` or `unix:///path`; unset: gRPC hooks answer 503.
    pub coprocess_grpc_server: Option<String>,
    /// One Dispatch call, connection included.
    pub coprocess_timeout: Duration,
    /// Where JavaScript middleware files are read from; unset: JavaScript hooks answer 503.
    pub middleware_path: Option<PathBuf>,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            coprocess_grpc_server: None,
            coprocess_timeout: Duration::from_secs(1),
            middleware_path: None,
        }
    }
}

pub struct Plugins {
    pub config: PluginConfig,
    pub coprocess: coprocess::Dispatcher,
    pub js: js::Engines,
}

impl Plugins {
    pub fn new(config: PluginConfig) -> Self {
        Self {
            coprocess: coprocess::Dispatcher::new(&config),
            js: js::Engines::new(&config),
            config,
        }
    }
}

impl Default for Plugins {
    fn default() -> Self {
        Self::new(PluginConfig::default())
    }
}
