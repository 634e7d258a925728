//! Token-change notifications (`notifications.oauth_on_keychange_url`): a POST with
//! `X-Tyk-Shared-Secret`, retried with backoff, from a bounded queue so a slow or dead webhook
//! never holds up a grant (docs/oauth.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

/// Notifications waiting; past this they are dropped (and counted).
const QUEUE: usize = 4096;
/// Deliveries in flight at once.
const CONCURRENT: usize = 32;
const TIMEOUT: Duration = Duration::from_secs(10);
/// Waits before the second and the third attempt.
const BACKOFF: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(2)];

/// What happened to a token (`notification_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    New,
    Refresh,
    Revoke,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Refresh => "refresh",
            Self::Revoke => "revoke",
        }
    }
}

/// The tokens a notification names (Tyk's `NewOAuthNotification`); empty when not involved.
#[derive(Default)]
pub struct Tokens<'a> {
    pub auth_code: &'a str,
    pub new_oauth_token: &'a str,
    pub refresh_token: &'a str,
    pub old_refresh_token: &'a str,
}

/// Where an API's notifications go, with the opened shared secret.
#[derive(Clone)]
pub struct Target {
    pub url: String,
    pub secret: String,
}

// The secret and the tokens stay out of logs.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

struct Job {
    target: Target,
    body: Vec<u8>,
}

/// Delivery counters, for logs and tests.
#[derive(Debug, Default)]
pub struct Counters {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Job>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

pub fn payload(kind: Kind, t: &Tokens<'_>) -> Value {
    json!({
        "auth_code": t.auth_code,
        "new_oauth_token": t.new_oauth_token,
        "refresh_token": t.refresh_token,
        "old_refresh_token": t.old_refresh_token,
        "notification_type": kind.as_str(),
    })
}

impl Notifier {
    /// Starts the delivery worker on the current runtime.
    pub fn start() -> Self {
        // reqwest is built without a TLS provider; the binary installs ring, this covers tests.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (tx, rx) = mpsc::channel(QUEUE);
        let counters = Arc::new(Counters::default());
        tokio::spawn(worker(rx, counters.clone()));
        Self { tx, counters }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Queues a notification; never waits. A full queue drops it.
    pub fn send(&self, target: Target, kind: Kind, tokens: &Tokens<'_>) {
        let body = payload(kind, tokens).to_string().into_bytes();
        if self.tx.try_send(Job { target, body }).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("OAuth notification queue full: notification dropped");
        }
    }
}

async fn worker(mut rx: mpsc::Receiver<Job>, counters: Arc<Counters>) {
    let client = match reqwest::Client::builder()
        .timeout(TIMEOUT)
        // A webhook answer cannot send the shared secret somewhere else.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "OAuth notifications disabled: HTTP client");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let client = client.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let ok = deliver(&client, &job).await;
            let counter = if ok {
                &counters.delivered
            } else {
                &counters.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// Up to three attempts; a 2xx answer is a delivery.
async fn deliver(client: &reqwest::Client, job: &Job) -> bool {
    for attempt in 0..=BACKOFF.len() {
        if attempt > 0 {
            tokio::time::sleep(BACKOFF[attempt - 1]).await;
        }
        let sent = client
            .post(&job.target.url)
            .header("Content-Type", "application/json")
            .header("X-Tyk-Shared-Secret", &job.target.secret)
            .body(job.body.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                tracing::warn!(url = %job.target.url, status = %r.status(), attempt, "OAuth notification refused")
            }
            Err(e) => {
                tracing::warn!(url = %job.target.url, error = %e.without_url(), attempt, "OAuth notification failed")
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_shape() {
        let p = payload(
            Kind::Refresh,
            &Tokens {
                new_oauth_token: "a",
                refresh_token: "r2",
                old_refresh_token: "r1",
                ..Tokens::default()
            },
        );
        assert_eq!(
            p,
            json!({"auth_code": "", "new_oauth_token": "a", "refresh_token": "r2",
                   "old_refresh_token": "r1", "notification_type": "refresh"})
        );
    }
}
