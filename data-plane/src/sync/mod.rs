//! The sync client: join with a bootstrap token (CA pinned), then one Watch stream at a time,
//! applying snapshots and changes atomically and answering each with an ACK or a NACK.

pub mod backup;
mod client;
pub mod connect;
pub mod identity;
mod join;
pub mod pin;
pub mod renew;

pub use client::{SyncClient, SyncFatal};
