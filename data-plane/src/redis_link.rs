//! The link to the regional Redis. A call that fails or times out marks the link failed; a
//! background task then builds a fresh connection (at most one attempt in flight, one per
//! second), so a restarted Redis is picked up again without waiting on the client library's
//! own reconnection, and a Redis that was down when the gateway started is used once it is up.
//!
//! `rediss://` URLs speak TLS (rustls, the same stack as the rest of the gateway), checked
//! against `--redis-ca-cert` when given, otherwise the system roots.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// A Redis call slower than this counts as an outage for this request.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);

pub struct RedisLink {
    client: redis::Client,
    conn: ArcSwapOption<ConnectionManager>,
    prefix: String,
    reconnecting: AtomicBool,
}

fn config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Duration::from_millis(200))
        .set_connection_timeout(Duration::from_millis(500))
        .set_number_of_retries(1)
}

impl RedisLink {
    /// Opens the link; an unreachable Redis is retried in the background.
    pub async fn open(
        url: &str,
        prefix: &str,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Arc<Self>, redis::RedisError> {
        let client = match ca_pem {
            Some(root_cert) => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )?,
            None => redis::Client::open(url)?,
        };
        let link = Arc::new(Self {
            client,
            conn: ArcSwapOption::empty(),
            prefix: prefix.to_owned(),
            reconnecting: AtomicBool::new(false),
        });
        match tokio::time::timeout(
            Duration::from_secs(3),
            ConnectionManager::new_with_config(link.client.clone(), config()),
        )
        .await
        {
            Ok(Ok(m)) => link.conn.store(Some(Arc::new(m))),
            _ => {
                tracing::warn!(
                    "Redis unreachable at start; sessions come from the control plane until it answers"
                );
                link.failed();
            }
        }
        Ok(link)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// True when a connection is in place and no reconnection is under way.
    pub fn is_up(&self) -> bool {
        self.conn.load().is_some() && !self.reconnecting.load(Ordering::Acquire)
    }

    /// A connection to use now, if the link is up.
    pub fn conn(&self) -> Option<ConnectionManager> {
        self.conn.load_full().map(|c| (*c).clone())
    }

    /// `GET key` within [`CALL_TIMEOUT`]; a failure or timeout reports the link failed and
    /// reads as a miss (callers then ask the source of truth).
    pub async fn get_bytes(self: &Arc<Self>, key: &str) -> Option<Vec<u8>> {
        let Some(mut conn) = self.conn() else {
            self.failed();
            return None;
        };
        let got: Result<redis::RedisResult<Option<Vec<u8>>>, _> = tokio::time::timeout(
            CALL_TIMEOUT,
            redis::cmd("GET").arg(key).query_async(&mut conn),
        )
        .await;
        match got {
            Ok(Ok(found)) => found,
            _ => {
                self.failed();
                None
            }
        }
    }

    /// `SET key value EX secs` within [`CALL_TIMEOUT`]; false (and the link reported failed)
    /// when it did not happen.
    pub async fn set_ex(self: &Arc<Self>, key: &str, value: &[u8], secs: u64) -> bool {
        let Some(mut conn) = self.conn() else {
            self.failed();
            return false;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("EX").arg(secs.max(1));
        match tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => true,
            _ => {
                self.failed();
                false
            }
        }
    }

    /// Reports a failed or timed-out call: reconnect in the background.
    pub fn failed(self: &Arc<Self>) {
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            loop {
                match tokio::time::timeout(
                    Duration::from_secs(1),
                    ConnectionManager::new_with_config(link.client.clone(), config()),
                )
                .await
                {
                    Ok(Ok(m)) => {
                        link.conn.store(Some(Arc::new(m)));
                        tracing::info!("Redis connection re-established");
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
            link.reconnecting.store(false, Ordering::Release);
        });
    }
}
