//! Portcullis edge gateway: the proxy, its routing table, the admin port and the sync client
//! that keeps the configuration in step with the control plane.

pub mod access_log;
pub mod admin;
pub mod applied;
pub mod auth;
pub mod certs;
pub mod cli;
pub mod config;
pub mod conn;
pub mod error;
pub mod idp;
pub mod jose;
pub mod limits;
pub mod oauth;
pub mod path;
pub mod plugins;
pub mod policies;
pub mod proxy;
pub mod redis_link;
pub mod request_metrics;
pub mod router;
pub mod session_record;
pub mod sessions;
pub mod shared;
pub mod sync;
pub mod tls;
pub mod trace;
pub mod upstream_auth;

mod gateway;

pub use config::Config;
pub use gateway::{Gateway, RunError, StartError, start};
