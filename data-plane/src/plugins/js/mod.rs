//! The embedded JavaScript engine running Tyk's JSVM auth middleware (`driver: otto`,
//! docs/plugins-js.md). Scripts run on a few dedicated threads, each with its own QuickJS
//! runtime, never on the async workers; every call gets a fresh context, a deadline and a
//! memory limit, so a runaway or hostile script costs one failed request, not the gateway.

mod pool;
pub mod reply;
pub mod script;
mod vm;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use reply::Reply;

use super::PluginConfig;
use crate::error::ProxyError;

/// Wall-clock budget of one call: context, script evaluation and the middleware together.
/// Tyk's default is 5 s; an auth check that needs more than this is a bug or an attack.
pub const DEADLINE: Duration = Duration::from_millis(200);
/// Heap of one runtime (one call at a time runs in it).
pub const MEMORY_LIMIT: usize = 16 * 1024 * 1024;
/// JavaScript stack of one runtime (deep recursion ends with a `RangeError`).
pub const STACK_LIMIT: usize = 256 * 1024;
/// Calls waiting for a free engine; beyond, or after waiting [`QUEUE_WAIT`], a request is
/// answered 503 rather than queued without end.
pub const QUEUE: usize = 64;
pub const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// Why a script gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsError {
    #[error("no --middleware-path is set on this gateway")]
    NotConfigured,
    #[error("every JavaScript engine is busy")]
    Busy,
    #[error("the script cannot be loaded: {0}")]
    Load(String),
    #[error("the script ran past its {}ms deadline", DEADLINE.as_millis())]
    Timeout,
    #[error("the script exceeded its {} MiB memory limit", MEMORY_LIMIT >> 20)]
    OutOfMemory,
    #[error("{0}")]
    Script(String),
    /// Not a failure: the script's own answer (a refusal, or a response of its own).
    #[error("{0}")]
    Answer(ProxyError),
}

impl JsError {
    /// What the client sees; the detail goes to the gateway's log only (it may quote the
    /// script or the file system).
    pub fn to_proxy(&self) -> ProxyError {
        match self {
            Self::NotConfigured => ProxyError::JsUnavailable(
                "JavaScript middleware is not enabled on this gateway (no --middleware-path)",
            ),
            Self::Busy => ProxyError::JsUnavailable(
                "Too many JavaScript middleware calls in flight, retry later",
            ),
            Self::Load(_) => ProxyError::JsFailed("JavaScript middleware could not be loaded"),
            Self::Timeout => ProxyError::JsFailed("JavaScript middleware timed out"),
            Self::OutOfMemory => {
                ProxyError::JsFailed("JavaScript middleware exceeded its memory limit")
            }
            Self::Script(_) => ProxyError::JsFailed("JavaScript middleware failed"),
            Self::Answer(answer) => answer.clone(),
        }
    }
}

/// One middleware call: which script and object, and its three arguments as JSON.
#[derive(Debug, Clone)]
pub struct Call {
    pub api_id: Arc<str>,
    /// `auth_check.path`, relative to `--middleware-path`.
    pub path: Arc<str>,
    /// `auth_check.name`: the global middleware object.
    pub name: Arc<str>,
    pub request: String,
    pub session: Arc<str>,
    pub spec: Arc<str>,
}

pub struct Engines {
    root: Option<PathBuf>,
    /// Started at the first call, so gateways without JavaScript APIs run no threads.
    pool: OnceLock<pool::Pool>,
}

impl Engines {
    pub fn new(config: &PluginConfig) -> Self {
        Self {
            root: config.middleware_path.clone(),
            pool: OnceLock::new(),
        }
    }

    /// Runs `call` on a free engine.
    pub async fn run(&self, call: Call) -> Result<Reply, JsError> {
        let root = self.root.clone().ok_or(JsError::NotConfigured)?;
        self.pool
            .get_or_init(pool::Pool::start)
            .run(root, call)
            .await
    }
}

#[cfg(test)]
mod tests;
