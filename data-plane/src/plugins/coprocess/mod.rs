//! The client of a Tyk gRPC coprocess plugin server (`--coprocess-grpc-server`): one lazily
//! connected channel per gateway, a deadline on every call (`--coprocess-timeout`; Tyk has
//! none), a bound on calls in flight and a circuit breaker (docs/plugins.md).

mod answer;
mod breaker;
pub mod cache;
pub mod session;
mod target;

use std::sync::OnceLock;
use std::time::Duration;

use portcullis_proto::coprocess::Object;
use portcullis_proto::coprocess::dispatcher_client::DispatcherClient;
use tokio::sync::Semaphore;
use tonic::transport::Channel;

pub use answer::Answer;
pub use target::Target;

use super::PluginConfig;

/// Dispatch calls in flight at once; beyond, a call waits for a slot within its deadline.
pub const IN_FLIGHT: usize = 256;
/// A call cancelled this close to its deadline timed out.
const TIMEOUT_SLACK: Duration = Duration::from_millis(20);
/// The largest answer read from a plugin server (gRPC's usual default).
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Why a plugin could not be asked; every one answers 503 (`ProxyError::PluginUnavailable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchError {
    NotConfigured,
    Unreachable,
    TimedOut,
    BreakerOpen,
    Busy,
    /// The plugin server answered with a gRPC error of its own (a failing plugin).
    Failed,
}

impl DispatchError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotConfigured => "no --coprocess-grpc-server is configured",
            Self::Unreachable => "the plugin server cannot be reached",
            Self::TimedOut => "the plugin server did not answer in time",
            Self::BreakerOpen => "the plugin server is failing; calls are paused",
            Self::Busy => "too many plugin calls in flight",
            Self::Failed => "the plugin failed",
        }
    }
}

pub struct Dispatcher {
    target: Result<Target, String>,
    timeout: Duration,
    channel: OnceLock<Result<Channel, String>>,
    breaker: breaker::Breaker,
    slots: Semaphore,
}

impl Dispatcher {
    pub fn new(config: &PluginConfig) -> Self {
        let target = match &config.coprocess_grpc_server {
            None => Err(DispatchError::NotConfigured.reason().to_owned()),
            Some(s) => Target::parse(s),
        };
        if let (Some(given), Err(why)) = (&config.coprocess_grpc_server, &target) {
            tracing::error!(target = %given, %why, "--coprocess-grpc-server is unusable; gRPC plugin auth answers 503");
        }
        Self {
            target,
            timeout: config.coprocess_timeout,
            channel: OnceLock::new(),
            breaker: breaker::Breaker::default(),
            slots: Semaphore::new(IN_FLIGHT),
        }
    }

    /// True when `--coprocess-grpc-server` was given and parses.
    pub fn configured(&self) -> bool {
        self.target.is_ok()
    }

    /// Built at first use: a lazy channel needs the runtime, which `new` may not run in.
    fn channel(&self) -> Result<Channel, DispatchError> {
        let target = self
            .target
            .as_ref()
            .map_err(|_| DispatchError::NotConfigured)?;
        self.channel
            .get_or_init(|| target.channel(self.timeout))
            .clone()
            .map_err(|why| {
                tracing::warn!(%why, "cannot build the plugin server channel");
                DispatchError::Unreachable
            })
    }

    /// One `Dispatch` call, within `--coprocess-timeout` (waiting for a slot included).
    pub async fn dispatch(&self, object: Object) -> Result<Object, DispatchError> {
        let channel = self.channel()?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let permit = self.breaker.admit().ok_or(DispatchError::BreakerOpen)?;
        let Ok(Ok(_slot)) = tokio::time::timeout_at(deadline, self.slots.acquire()).await else {
            // Not the server's fault: the breaker is left as it was.
            drop(permit);
            return Err(DispatchError::Busy);
        };
        let mut client = DispatcherClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES);
        let mut request = tonic::Request::new(object);
        // Sent as `grpc-timeout`, so the server can give up too.
        request.set_timeout(self.timeout);
        let outcome = tokio::time::timeout_at(deadline, client.dispatch(request)).await;
        let (result, outage) = match outcome {
            Err(_) => (Err(DispatchError::TimedOut), true),
            Ok(Ok(reply)) => (Ok(reply.into_inner()), false),
            Ok(Err(status)) => match status.code() {
                tonic::Code::DeadlineExceeded => (Err(DispatchError::TimedOut), true),
                // The channel enforces `grpc-timeout` itself and reports it as cancelled.
                tonic::Code::Cancelled
                    if tokio::time::Instant::now() + TIMEOUT_SLACK >= deadline =>
                {
                    (Err(DispatchError::TimedOut), true)
                }
                tonic::Code::Unavailable | tonic::Code::Cancelled => {
                    tracing::debug!(error = %status, "plugin server unavailable");
                    (Err(DispatchError::Unreachable), true)
                }
                // The transport failing below gRPC (connection refused, reset) comes as
                // Unknown with a source error; a plugin's own exception has none.
                tonic::Code::Unknown if std::error::Error::source(&status).is_some() => {
                    tracing::debug!(error = %status, "plugin server connection failed");
                    (Err(DispatchError::Unreachable), true)
                }
                _ => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "the gRPC plugin answered with an error");
                    (Err(DispatchError::Failed), false)
                }
            },
        };
        if self.breaker.report(permit, outage) {
            tracing::warn!(
                failures = breaker::FAILURES,
                open_for = ?breaker::OPEN_FOR,
                "the gRPC plugin server keeps failing: pausing calls"
            );
        }
        result
    }
}
