//! The contract both planes share: the gRPC sync protocol, the Tyk-compatible JSON model with its
//! validation, the canonical configuration hash and the encrypted-envelope format.
//!
//! Nothing here does I/O: no sockets, no database, no Redis.

pub mod config_hash;
pub mod envelope;
pub mod key_hash;
pub mod model;
pub mod pin;
pub mod sealed_field;
pub mod version;

/// Generated tonic/prost code for `portcullis.sync.v1`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod sync {
    tonic::include_proto!("portcullis.sync.v1");
}

/// Generated tonic/prost code for Tyk's gRPC coprocess protocol (package `coprocess`), the
/// gateway's client of custom auth plugin servers (docs/plugins.md).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod coprocess {
    tonic::include_proto!("coprocess");
}

/// Generated tonic/prost code for the OTLP trace export call (package
/// `opentelemetry.proto.collector.trace.v1`), the gateway's span exporter
/// (docs/observability.md).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod otlp {
    tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
}

/// Version of the sync protocol spoken by this build.
pub const PROTOCOL_VERSION: u32 = 1;
