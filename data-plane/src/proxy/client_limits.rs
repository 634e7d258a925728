//! What one client connection may cost the proxy: how long it may take to send a request head
//! or sit idle, how large its headers may be, how many connections may be open at once, and the
//! HTTP/2 stream limits; and which request paths it may send. Each is a flag with a bound
//! (docs/gateway.md, "Client limits" and "Request paths").

use std::time::Duration;

/// The proxy's client-side limits, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLimits {
    /// A request head must be complete this long after its first byte (or after the
    /// connection opened, for the first request).
    pub header_timeout: Duration,
    /// An HTTP/1 keep-alive connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// Largest HTTP/1 request head, and largest HTTP/2 header list, in bytes.
    pub max_header_bytes: u32,
    /// Most header fields in one HTTP/1 request.
    pub max_headers: usize,
    /// Most client connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    pub h2_max_concurrent_streams: u32,
    /// Streams a client may open and reset before the proxy accepted them (rapid reset).
    pub h2_max_pending_resets: usize,
    /// `None`: no keep-alive pings.
    pub h2_keepalive_interval: Option<Duration>,
    pub h2_keepalive_timeout: Duration,
    /// How request paths are normalised (`--allow-encoded-slashes`).
    pub path_rules: crate::path::PathRules,
    /// WebSockets and other `Upgrade`s are tunnelled (`--disable-websockets` turns it off).
    pub websockets: bool,
    /// An upgraded connection that moves no byte either way for this long is closed.
    pub upgrade_idle_timeout: Duration,
    /// Serve every HTTP/1 client connection with hyper's server, not the direct one
    /// (`--hyper-http1-server`, docs/architecture.md "Client connections").
    pub hyper_http1: bool,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            // Longer than the 60 s idle timeout of common load balancers in front of the
            // gateway, so it is them that close, never a request racing our close.
            idle_timeout: Duration::from_secs(75),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_connections: 10_000,
            h2_max_concurrent_streams: 200,
            h2_max_pending_resets: 20,
            h2_keepalive_interval: Some(Duration::from_secs(30)),
            h2_keepalive_timeout: Duration::from_secs(20),
            path_rules: crate::path::PathRules::default(),
            websockets: true,
            upgrade_idle_timeout: Duration::from_secs(300),
            hyper_http1: false,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LimitError {
    #[error("{flag} must be a number of seconds between {min} and {max}, got {got}")]
    Seconds {
        flag: &'static str,
        min: f64,
        max: f64,
        got: f64,
    },
    #[error("{flag} must be between {min} and {max}, got {got}")]
    Count {
        flag: &'static str,
        min: u64,
        max: u64,
        got: u64,
    },
}

/// The soft open-file limit of this process (Linux), for the warning below.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl ClientLimits {
    /// Each client connection can hold an upstream connection too: a cap above half the
    /// open-file limit lets a flood exhaust descriptors (Redis, the sync stream and upstream
    /// connects then fail) before the cap is reached.
    pub fn warn_if_above_file_limit(&self) {
        if let Some(limit) = open_file_limit()
            && (self.max_connections as u64).saturating_mul(2) > limit
        {
            tracing::warn!(
                max_client_connections = self.max_connections,
                open_file_limit = limit,
                "--max-client-connections is above half the open-file limit; raise `ulimit -n` or lower the cap"
            );
        }
    }
}

/// The flags, flattened into the gateway's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// Seconds a client may take to send a request head (slow clients are cut off).
    #[arg(long, env = "PORTCULLIS_CLIENT_HEADER_TIMEOUT", default_value_t = 10.0)]
    pub client_header_timeout: f64,
    /// Seconds an idle HTTP/1 keep-alive client connection is kept open.
    #[arg(long, env = "PORTCULLIS_CLIENT_IDLE_TIMEOUT", default_value_t = 75.0)]
    pub client_idle_timeout: f64,
    /// Largest request head (HTTP/1) or header list (HTTP/2) in bytes; larger ones get 431.
    #[arg(long, env = "PORTCULLIS_MAX_HEADER_BYTES", default_value_t = 65536)]
    pub max_header_bytes: u64,
    /// Most header fields in one HTTP/1 request; more get 431.
    #[arg(long, env = "PORTCULLIS_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: u64,
    /// Most client connections open at once; further ones wait to be accepted.
    #[arg(
        long,
        env = "PORTCULLIS_MAX_CLIENT_CONNECTIONS",
        default_value_t = 10_000
    )]
    pub max_client_connections: u64,
    /// Most concurrent streams on one HTTP/2 client connection.
    #[arg(
        long,
        env = "PORTCULLIS_H2_MAX_CONCURRENT_STREAMS",
        default_value_t = 200
    )]
    pub h2_max_concurrent_streams: u64,
    /// Most streams an HTTP/2 client may reset before they are accepted (rapid-reset guard).
    #[arg(long, env = "PORTCULLIS_H2_MAX_PENDING_RESETS", default_value_t = 20)]
    pub h2_max_pending_resets: u64,
    /// Seconds between HTTP/2 keep-alive pings to an idle client (0: no pings).
    #[arg(long, env = "PORTCULLIS_H2_KEEPALIVE_INTERVAL", default_value_t = 30.0)]
    pub h2_keepalive_interval: f64,
    /// Seconds to wait for a ping's answer before closing the connection.
    #[arg(long, env = "PORTCULLIS_H2_KEEPALIVE_TIMEOUT", default_value_t = 20.0)]
    pub h2_keepalive_timeout: f64,
    /// Forward `%2F` in request paths (kept encoded) instead of answering 400, as Tyk does.
    #[arg(long, env = "PORTCULLIS_ALLOW_ENCODED_SLASHES")]
    pub allow_encoded_slashes: bool,
    /// Forward `Upgrade` requests (WebSockets) as plain requests instead of tunnelling them
    /// (Tyk's `http_server_options.enable_websockets: false`).
    #[arg(long, env = "PORTCULLIS_DISABLE_WEBSOCKETS")]
    pub disable_websockets: bool,
    /// Seconds an upgraded (WebSocket) connection may carry no byte either way before both
    /// sides are closed.
    #[arg(long, env = "PORTCULLIS_UPGRADE_IDLE_TIMEOUT", default_value_t = 300.0)]
    pub upgrade_idle_timeout: f64,
    /// Serve HTTP/1 clients with hyper's server only, instead of the gateway's direct server
    /// for plain requests (docs/architecture.md, "Client connections").
    #[arg(long, env = "PORTCULLIS_HYPER_HTTP1_SERVER")]
    pub hyper_http1_server: bool,
}

fn seconds(flag: &'static str, got: f64, min: f64, max: f64) -> Result<Duration, LimitError> {
    if got.is_finite() && (min..=max).contains(&got) {
        Ok(Duration::from_secs_f64(got))
    } else {
        Err(LimitError::Seconds {
            flag,
            min,
            max,
            got,
        })
    }
}

fn count(flag: &'static str, got: u64, min: u64, max: u64) -> Result<u64, LimitError> {
    if (min..=max).contains(&got) {
        Ok(got)
    } else {
        Err(LimitError::Count {
            flag,
            min,
            max,
            got,
        })
    }
}

/// A day: longer waits only hold sockets for clients that have gone.
const MAX_WAIT: f64 = 86_400.0;

impl ClientLimits {
    /// Every value clamped into the flags' ranges. The flags are checked with a message at
    /// start; this keeps limits built in code (tests, embedders) from reaching a hyper panic
    /// or an `Instant` overflow.
    pub fn bounded(mut self) -> Self {
        let wait = |d: Duration| {
            d.clamp(
                Duration::from_millis(100),
                Duration::from_secs_f64(MAX_WAIT),
            )
        };
        self.header_timeout = wait(self.header_timeout);
        self.idle_timeout = wait(self.idle_timeout);
        self.h2_keepalive_timeout = wait(self.h2_keepalive_timeout);
        self.h2_keepalive_interval = self.h2_keepalive_interval.map(wait);
        self.max_header_bytes = self.max_header_bytes.clamp(8192, 16 << 20);
        self.max_headers = self.max_headers.clamp(1, 10_000);
        self.max_connections = self.max_connections.clamp(1, 1 << 20);
        self.h2_max_concurrent_streams = self.h2_max_concurrent_streams.clamp(1, 100_000);
        self.h2_max_pending_resets = self.h2_max_pending_resets.clamp(1, 100_000);
        self.upgrade_idle_timeout = wait(self.upgrade_idle_timeout);
        self
    }
}

impl ClientArgs {
    pub fn to_limits(&self) -> Result<ClientLimits, LimitError> {
        let interval = self.h2_keepalive_interval;
        // Counts are bounded well below u32/usize, so the conversions below cannot truncate.
        Ok(ClientLimits {
            header_timeout: seconds(
                "--client-header-timeout",
                self.client_header_timeout,
                0.1,
                MAX_WAIT,
            )?,
            idle_timeout: seconds(
                "--client-idle-timeout",
                self.client_idle_timeout,
                0.1,
                MAX_WAIT,
            )?,
            // hyper's smallest read buffer is 8 KiB.
            max_header_bytes: count("--max-header-bytes", self.max_header_bytes, 8192, 16 << 20)?
                as u32,
            max_headers: count("--max-headers", self.max_headers, 1, 10_000)? as usize,
            max_connections: count(
                "--max-client-connections",
                self.max_client_connections,
                1,
                1 << 20,
            )? as usize,
            h2_max_concurrent_streams: count(
                "--h2-max-concurrent-streams",
                self.h2_max_concurrent_streams,
                1,
                100_000,
            )? as u32,
            h2_max_pending_resets: count(
                "--h2-max-pending-resets",
                self.h2_max_pending_resets,
                1,
                100_000,
            )? as usize,
            h2_keepalive_interval: if interval == 0.0 {
                None
            } else {
                Some(seconds("--h2-keepalive-interval", interval, 0.1, MAX_WAIT)?)
            },
            h2_keepalive_timeout: seconds(
                "--h2-keepalive-timeout",
                self.h2_keepalive_timeout,
                0.1,
                MAX_WAIT,
            )?,
            path_rules: crate::path::PathRules {
                allow_encoded_slashes: self.allow_encoded_slashes,
            },
            websockets: !self.disable_websockets,
            upgrade_idle_timeout: seconds(
                "--upgrade-idle-timeout",
                self.upgrade_idle_timeout,
                0.1,
                MAX_WAIT,
            )?,
            hyper_http1: self.hyper_http1_server,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        client: ClientArgs,
    }

    fn parse(args: &[&str]) -> Result<ClientLimits, LimitError> {
        let mut argv = vec!["gw"];
        argv.extend_from_slice(args);
        Cmd::parse_from(argv).client.to_limits()
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        assert_eq!(parse(&[]).unwrap(), ClientLimits::default());
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        for (flag, value) in [
            ("--client-header-timeout", "0"),
            ("--client-header-timeout", "1e20"),
            ("--client-header-timeout", "NaN"),
            ("--client-idle-timeout", "-1"),
            ("--max-header-bytes", "100"),
            ("--max-headers", "0"),
            ("--max-client-connections", "0"),
            ("--max-client-connections", "18446744073709551615"),
            ("--h2-max-concurrent-streams", "0"),
            ("--h2-keepalive-interval", "inf"),
            ("--h2-keepalive-timeout", "0"),
            ("--upgrade-idle-timeout", "0"),
        ] {
            let err = parse(&[&format!("{flag}={value}")]).unwrap_err();
            assert!(err.to_string().starts_with(flag), "{err}");
        }
        let wild = ClientLimits {
            header_timeout: Duration::MAX,
            idle_timeout: Duration::ZERO,
            max_header_bytes: 0,
            max_connections: usize::MAX,
            ..ClientLimits::default()
        }
        .bounded();
        assert_eq!(wild.header_timeout, Duration::from_secs(86_400));
        assert_eq!(wild.idle_timeout, Duration::from_millis(100));
        assert_eq!(
            (wild.max_header_bytes, wild.max_connections),
            (8192, 1 << 20)
        );
        assert_eq!(ClientLimits::default().bounded(), ClientLimits::default());
        assert_eq!(
            parse(&["--h2-keepalive-interval", "0"])
                .unwrap()
                .h2_keepalive_interval,
            None
        );
    }
}
