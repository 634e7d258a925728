//! Portcullis control plane: the management API (Tyk Gateway API compatible), the Postgres store
//! with its change log, the node CA and the gRPC sync server that streams configuration to edges.

pub mod api;
pub mod ca;
pub mod cli;
pub mod config;
pub mod config_folder;
pub mod lifetime;
pub mod metrics;
pub mod oauth;
pub mod store;
pub mod sync;

mod serve;

pub use config::Config;
pub use serve::{ControlPlane, RunError, StartError, start};
