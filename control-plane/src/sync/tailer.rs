//! One tailer per replica: reads the change log in revision order, woken by Postgres
//! LISTEN/NOTIFY and, because notifications are only a doorbell that can be missed, by a poll
//! every second. Each batch is applied to the shared [`ConfigState`] and the new head is
//! announced to every watch stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::state::{ConfigState, LOG_CAPACITY};
use crate::metrics::Metrics;
use crate::store::changelog::NOTIFY_CHANNEL;
use crate::store::{Store, StoreError};

const POLL_INTERVAL: Duration = Duration::from_secs(1);
const BATCH: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum TailerError {
    #[error("cannot load the configuration from Postgres: {0}")]
    Load(#[from] StoreError),
}

/// Shared handles on the tailer's state.
#[derive(Clone, Debug)]
pub struct Tailer {
    pub state: Arc<Mutex<ConfigState>>,
    pub head: watch::Receiver<i64>,
}

impl Tailer {
    /// Loads the current state and starts tailing in the background.
    pub async fn start(store: Store, metrics: Arc<Metrics>) -> Result<Self, TailerError> {
        let state = Arc::new(Mutex::new(load(&store).await?));
        let head = lock(&state).head();
        metrics.sync_head_revision.set(head);
        let (tx, rx) = watch::channel(head);
        tokio::spawn(run(store, state.clone(), tx, metrics));
        Ok(Self { state, head: rx })
    }
}

async fn load(store: &Store) -> Result<ConfigState, StoreError> {
    let start = store.load_start_state(LOG_CAPACITY as i64).await?;
    let revoked = start.revoked_nodes.iter().map(ToString::to_string);
    Ok(ConfigState::new(start.head, start.resources, start.log).with_revoked(revoked))
}

/// Locks the state; a poisoned lock only means another thread panicked mid-update of plain data
/// that every update leaves consistent, so keep going.
pub(crate) fn lock(state: &Mutex<ConfigState>) -> std::sync::MutexGuard<'_, ConfigState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn run(
    store: Store,
    state: Arc<Mutex<ConfigState>>,
    head_tx: watch::Sender<i64>,
    metrics: Arc<Metrics>,
) {
    let mut listener = None;
    loop {
        if listener.is_none() {
            listener = listen(&store).await;
        }
        match &mut listener {
            Some(l) => match tokio::time::timeout(POLL_INTERVAL, l.recv()).await {
                Ok(Ok(_)) | Err(_) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "change-log LISTEN connection lost; polling until it is back");
                    listener = None;
                }
            },
            None => tokio::time::sleep(POLL_INTERVAL).await,
        }
        if head_tx.is_closed() {
            return;
        }
        if let Err(e) = catch_up(&store, &state, &head_tx, &metrics).await {
            tracing::warn!(error = %e, "reading the change log failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn listen(store: &Store) -> Option<PgListener> {
    let mut l = match PgListener::connect_with(store.pool()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the LISTEN connection");
            return None;
        }
    };
    match l.listen(NOTIFY_CHANNEL).await {
        Ok(()) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "LISTEN failed");
            None
        }
    }
}

async fn catch_up(
    store: &Store,
    state: &Mutex<ConfigState>,
    head_tx: &watch::Sender<i64>,
    metrics: &Metrics,
) -> Result<(), StoreError> {
    loop {
        let head = lock(state).head();
        let changes = store.changes_since(head, BATCH).await?;
        if changes.is_empty() {
            return Ok(());
        }
        let full = changes.len() as i64 == BATCH;
        let applied = lock(state).apply(&changes);
        if let Err(gap) = applied {
            // Cannot happen with the counter-row revisions; recover by reloading everything.
            tracing::error!(%gap, "change log gap; reloading the whole configuration");
            let fresh = load(store).await?;
            *lock(state) = fresh;
        }
        let head = lock(state).head();
        metrics.sync_head_revision.set(head);
        head_tx.send_replace(head);
        if !full {
            return Ok(());
        }
    }
}
