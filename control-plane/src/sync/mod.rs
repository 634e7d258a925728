//! gRPC sync server (docs/sync.md): join with a bootstrap token, the per-node watch stream fed by
//! this replica's change-log tailer, and certificate renewal. TLS always; every RPC but `Join`
//! requires a node certificate, checked per call.

mod ack_log;
mod auth;
mod bounds;
mod bucket;
mod guard;
mod join;
mod limits;
mod renew;
mod report;
mod service;
mod state;
mod status;
mod tailer;
mod tls;
mod watch;

pub use limits::{LimitError, SyncLimitArgs, SyncLimits};
pub use service::SyncService;
pub use state::ConfigState;
pub use tailer::{Tailer, TailerError};
pub use tls::{TlsIncoming, accept_tls, server_config};
