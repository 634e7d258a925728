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

    /// A connection to use now, if the link is up.
    pub fn conn(&self) -> Option<ConnectionManager> {
        self.conn.load_full().map(|c| (*c).clone())
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
