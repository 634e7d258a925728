//! Bounds on what unauthenticated clients and misbehaving nodes can make the sync port do
//! (`docs/sync.md`, "Limits"). Every bound has a flag; the defaults fit a fleet of thousands.

use std::time::Duration;

/// The sync server's limits, as `serve` uses them.
#[derive(Debug, Clone)]
pub struct SyncLimits {
    /// A TLS handshake not finished within this is dropped.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; connections beyond wait in the kernel's backlog.
    pub max_handshakes: usize,
    /// Handshakes in progress at once from one source address.
    pub max_handshakes_per_address: usize,
    /// Established connections at once; more are closed right after accept.
    pub max_connections: usize,
    /// HTTP/2 streams at once on one connection.
    pub max_streams_per_connection: u32,
    /// Longest unary call (Join, RenewCertificate, LookupSession); Watch is not bounded.
    pub request_timeout: Duration,
    /// Largest HTTP/2 header list a client may send.
    pub max_header_list_bytes: u32,
    /// Joins per second one source address may start (token bucket refill).
    pub join_rate_per_sec: f64,
    /// Joins one source address may start in a burst.
    pub join_burst: u32,
    /// Joins being processed at once per replica, so they cannot take the whole database pool.
    pub max_concurrent_joins: usize,
    /// Snapshots a node may force (bad hash, ahead of head, drift NACK, no configuration) in a burst.
    pub snapshot_burst: u32,
    /// One forced snapshot is earned back per this period.
    pub snapshot_every: Duration,
    /// Longest a single node's old ACK may hold the change log back.
    pub retention_node_hold: Duration,
}

impl Default for SyncLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 256,
            max_handshakes_per_address: 32,
            max_connections: 20_000,
            max_streams_per_connection: 100,
            request_timeout: Duration::from_secs(30),
            max_header_list_bytes: 16 * 1024,
            join_rate_per_sec: 10.0,
            join_burst: 100,
            max_concurrent_joins: 4,
            snapshot_burst: 3,
            snapshot_every: Duration::from_secs(10),
            retention_node_hold: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The `serve` flags for [`SyncLimits`].
#[derive(Debug, Clone, clap::Args)]
pub struct SyncLimitArgs {
    /// Seconds a client has to finish the TLS handshake on the sync port.
    #[arg(long, env = "PORTCULLIS_SYNC_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub sync_handshake_timeout: u64,
    /// TLS handshakes in progress at once on the sync port.
    #[arg(long, env = "PORTCULLIS_SYNC_MAX_HANDSHAKES", default_value_t = 256)]
    pub sync_max_handshakes: usize,
    /// TLS handshakes in progress at once from one source address.
    #[arg(
        long,
        env = "PORTCULLIS_SYNC_MAX_HANDSHAKES_PER_ADDRESS",
        default_value_t = 32
    )]
    pub sync_max_handshakes_per_address: usize,
    /// Open connections on the sync port; more are closed at once.
    #[arg(
        long,
        env = "PORTCULLIS_SYNC_MAX_CONNECTIONS",
        default_value_t = 20_000
    )]
    pub sync_max_connections: usize,
    /// HTTP/2 streams at once per sync connection.
    #[arg(long, env = "PORTCULLIS_SYNC_MAX_STREAMS", default_value_t = 100)]
    pub sync_max_streams: u32,
    /// Seconds a unary sync call (Join, RenewCertificate, LookupSession) may take.
    #[arg(long, env = "PORTCULLIS_SYNC_REQUEST_TIMEOUT", default_value_t = 30)]
    pub sync_request_timeout: u64,
    /// Joins per second one source address may make (sustained).
    #[arg(long, env = "PORTCULLIS_JOIN_RATE", default_value_t = 10.0)]
    pub join_rate: f64,
    /// Joins one source address may make in a burst.
    #[arg(long, env = "PORTCULLIS_JOIN_BURST", default_value_t = 100)]
    pub join_burst: u32,
    /// Joins processed at once by this replica.
    #[arg(long, env = "PORTCULLIS_MAX_CONCURRENT_JOINS", default_value_t = 4)]
    pub max_concurrent_joins: usize,
    /// Snapshots a node may force in a burst (bad hash, ahead of head, drift, no configuration).
    #[arg(long, env = "PORTCULLIS_SNAPSHOT_BURST", default_value_t = 3)]
    pub snapshot_burst: u32,
    /// Seconds to earn back one forced snapshot.
    #[arg(long, env = "PORTCULLIS_SNAPSHOT_EVERY", default_value_t = 10)]
    pub snapshot_every: u64,
    /// Seconds a single node's old ACK may hold the change log back (default 7 days).
    #[arg(
        long,
        env = "PORTCULLIS_RETENTION_NODE_HOLD",
        default_value_t = 604_800
    )]
    pub retention_node_hold: u64,
}

/// A limit flag out of its range; the message names the flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag} must be {range}")]
pub struct LimitError {
    pub flag: &'static str,
    pub range: &'static str,
}

fn within<T: PartialOrd>(
    v: T,
    lo: T,
    hi: T,
    flag: &'static str,
    range: &'static str,
) -> Result<T, LimitError> {
    if v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(LimitError { flag, range })
    }
}

impl SyncLimitArgs {
    pub fn to_limits(&self) -> Result<SyncLimits, LimitError> {
        const DAY: u64 = 24 * 3600;
        Ok(SyncLimits {
            handshake_timeout: Duration::from_secs(within(
                self.sync_handshake_timeout,
                1,
                300,
                "--sync-handshake-timeout",
                "1 to 300 seconds",
            )?),
            max_handshakes: within(
                self.sync_max_handshakes,
                1,
                65_536,
                "--sync-max-handshakes",
                "1 to 65536",
            )?,
            max_handshakes_per_address: within(
                self.sync_max_handshakes_per_address,
                1,
                65_536,
                "--sync-max-handshakes-per-address",
                "1 to 65536",
            )?,
            max_connections: within(
                self.sync_max_connections,
                1,
                1_000_000,
                "--sync-max-connections",
                "1 to 1000000",
            )?,
            max_streams_per_connection: within(
                self.sync_max_streams,
                4,
                10_000,
                "--sync-max-streams",
                "4 to 10000",
            )?,
            request_timeout: Duration::from_secs(within(
                self.sync_request_timeout,
                1,
                600,
                "--sync-request-timeout",
                "1 to 600 seconds",
            )?),
            max_header_list_bytes: 16 * 1024,
            join_rate_per_sec: within(
                self.join_rate,
                0.001,
                100_000.0,
                "--join-rate",
                "0.001 to 100000 per second",
            )?,
            join_burst: within(
                self.join_burst,
                1,
                1_000_000,
                "--join-burst",
                "1 to 1000000",
            )?,
            max_concurrent_joins: within(
                self.max_concurrent_joins,
                1,
                1024,
                "--max-concurrent-joins",
                "1 to 1024",
            )?,
            snapshot_burst: within(
                self.snapshot_burst,
                1,
                1000,
                "--snapshot-burst",
                "1 to 1000",
            )?,
            snapshot_every: Duration::from_secs(within(
                self.snapshot_every,
                0,
                3600,
                "--snapshot-every",
                "0 to 3600 seconds",
            )?),
            retention_node_hold: Duration::from_secs(within(
                self.retention_node_hold,
                3600,
                365 * DAY,
                "--retention-node-hold",
                "3600 to 31536000 seconds",
            )?),
        })
    }
}
