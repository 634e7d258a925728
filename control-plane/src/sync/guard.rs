//! Cuts off streams of nodes that were revoked or whose certificate expired: one registry query
//! per replica every few seconds for all its open streams, instead of one per stream (500 idle
//! streams spent most of the replica's idle CPU on their own checks).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use crate::store::Store;

const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Why a node's streams must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Revoked,
    CertificateExpired,
}

type Verdicts = Arc<HashMap<Uuid, Refusal>>;

#[derive(Debug)]
pub struct NodeGuard {
    watched: Mutex<HashMap<Uuid, usize>>,
    verdicts: watch::Sender<Verdicts>,
}

/// A stream's registration; dropping it unregisters the node.
pub struct Watched {
    guard: Arc<NodeGuard>,
    id: Uuid,
    pub verdicts: watch::Receiver<Verdicts>,
}

impl Watched {
    /// The refusal for this node in the latest verdicts, if any.
    pub fn refusal(&self) -> Option<Refusal> {
        self.verdicts.borrow().get(&self.id).copied()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        let mut watched = self.guard.watched.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = watched.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                watched.remove(&self.id);
            }
        }
    }
}

impl NodeGuard {
    /// Starts the periodic check on the current runtime.
    pub fn start(store: Store) -> Arc<Self> {
        let guard = Arc::new(Self {
            watched: Mutex::default(),
            verdicts: watch::Sender::new(Arc::default()),
        });
        tokio::spawn(check_forever(Arc::downgrade(&guard), store));
        guard
    }

    pub fn watch(self: &Arc<Self>, id: Uuid) -> Watched {
        *self
            .watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default() += 1;
        Watched {
            guard: self.clone(),
            id,
            verdicts: self.verdicts.subscribe(),
        }
    }

    fn watched_ids(&self) -> Vec<Uuid> {
        self.watched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

async fn check_forever(guard: std::sync::Weak<NodeGuard>, store: Store) {
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(guard) = guard.upgrade() else {
            return;
        };
        let ids = guard.watched_ids();
        if ids.is_empty() {
            continue;
        }
        match store.node_standing(&ids).await {
            Ok(found) => {
                let present: HashSet<Uuid> = found.iter().map(|s| s.id).collect();
                let mut verdicts: HashMap<Uuid, Refusal> = found
                    .into_iter()
                    .filter_map(|s| match (s.revoked, s.expired) {
                        (true, _) => Some((s.id, Refusal::Revoked)),
                        (false, true) => Some((s.id, Refusal::CertificateExpired)),
                        _ => None,
                    })
                    .collect();
                // A node deleted from the registry is as good as revoked.
                for id in ids.iter().filter(|id| !present.contains(id)) {
                    verdicts.insert(*id, Refusal::Revoked);
                }
                if !verdicts.is_empty() || !guard.verdicts.borrow().is_empty() {
                    guard.verdicts.send_replace(Arc::new(verdicts));
                }
            }
            // Postgres away: keep streams open; nothing new can be revoked meanwhile.
            Err(e) => tracing::warn!(error = %e, "node revocation check failed"),
        }
    }
}
