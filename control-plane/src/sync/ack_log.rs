//! Records ACKs in the node registry in batches: one UPDATE per replica every few tens of
//! milliseconds instead of one per ACK (with 500 nodes, every commit was 500 writes). The
//! registry is for operators and retention, so a 50 ms delay costs nothing.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::store::Store;

const GATHER: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct AckLog {
    tx: mpsc::UnboundedSender<(Uuid, i64, String)>,
}

impl AckLog {
    /// Starts the writer on the current runtime.
    pub fn start(store: Store) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_forever(rx, store));
        Self { tx }
    }

    pub fn record(&self, node: Uuid, revision: i64, hash: &str) {
        let _ = self.tx.send((node, revision, hash.to_owned()));
    }
}

async fn write_forever(mut rx: mpsc::UnboundedReceiver<(Uuid, i64, String)>, store: Store) {
    let mut batch: HashMap<Uuid, (i64, String)> = HashMap::new();
    while let Some(first) = rx.recv().await {
        keep_newest(&mut batch, first);
        tokio::time::sleep(GATHER).await;
        while let Ok(ack) = rx.try_recv() {
            keep_newest(&mut batch, ack);
        }
        let mut acks: Vec<_> = batch
            .drain()
            .map(|(id, (rev, hash))| (id, rev, hash))
            .collect();
        // Replicas update rows in the same order, so two batches never deadlock each other.
        acks.sort_unstable_by_key(|a| a.0);
        if let Err(e) = store.nodes_acked(&acks).await {
            tracing::warn!(error = %e, nodes = acks.len(), "could not record ACKs");
        }
    }
}

fn keep_newest(batch: &mut HashMap<Uuid, (i64, String)>, (id, rev, hash): (Uuid, i64, String)) {
    match batch.get(&id) {
        Some((held, _)) if *held >= rev => {}
        _ => {
            batch.insert(id, (rev, hash));
        }
    }
}
