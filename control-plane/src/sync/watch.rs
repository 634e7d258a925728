//! One watch stream: Hello, then whatever the node needs to reach head (snapshot, changes or
//! bookmark) every time the tailer announces a new head, and ACK/NACK bookkeeping.
//!
//! Messages may be pipelined ahead of ACKs. After a NACK for an invalid resource the stream sends
//! nothing until a newer revision exists, then the changes since the last ACK; a NACK for drift
//! (hash or base mismatch) is answered with a snapshot at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use portcullis_proto::sync::watch_request::Message as Inbound;
use portcullis_proto::sync::watch_response::Message as Outbound;
use portcullis_proto::sync::{Ack, Nack, WatchRequest, WatchResponse};
use portcullis_proto::version::{BUILD_VERSION, check_skew};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::auth::NodeIdentity;
use super::bounds;
use super::guard::Refusal;
use super::service::Inner;
use super::state::{ConfigState, GroupView, Plan};
use super::status::SyncError;
use super::tailer::lock;
use crate::metrics::{GroupLabels, SnapshotLabels};

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);
/// Longest wait for room in a stream's outbound queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

type Out = mpsc::Sender<Result<WatchResponse, Status>>;

struct WatchStream {
    inner: Arc<Inner>,
    /// The node id as the change log names it (revocation fence).
    node_key: String,
    node: NodeIdentity,
    labels: GroupLabels,
    out: Out,
    /// What the node will hold once it has applied everything sent.
    sent: (i64, String),
    acked: (i64, String),
    /// After an invalid-resource NACK: send nothing until head passes this revision.
    blocked_until_after: Option<i64>,
    /// Revisions after this one were committed while the stream was live, and their ACKs
    /// measure propagation; catching up after a reconnect or a snapshot does not.
    live_from: i64,
    /// APIs the node last said it answers 503 (`Ack.unserved_apis`); stored when it changes.
    unserved: Option<Vec<String>>,
}

pub async fn run(
    inner: Arc<Inner>,
    node: NodeIdentity,
    mut inbound: Streaming<WatchRequest>,
    out: Out,
) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(WatchRequest {
            message: Some(Inbound::Hello(h)),
        }))) => h,
        _ => {
            let _ = out
                .send(Err(Status::invalid_argument(
                    "the first message of Watch must be Hello",
                )))
                .await;
            return;
        }
    };
    if hello.node_id != node.id.to_string() {
        let _ = out
            .send(Err(Status::permission_denied(
                "Hello names another node than the certificate",
            )))
            .await;
        return;
    }
    if let Err(e) = bounds::check_hello(&hello) {
        let _ = out.send(Err(e.into())).await;
        return;
    }
    if let Err(skew) = check_skew(BUILD_VERSION, &hello.build_version) {
        let _ = out.send(Err(SyncError::VersionSkew(skew).into())).await;
        return;
    }
    if let Err(e) = inner
        .store
        .node_connected(
            node.id,
            &inner.replica,
            &hello.build_version,
            &hello.capabilities,
        )
        .await
    {
        let _ = out.send(Err(SyncError::from(e).into())).await;
        return;
    }
    let labels = GroupLabels {
        group: node.group.clone(),
    };
    inner
        .metrics
        .sync_connected_streams
        .get_or_create(&labels)
        .inc();
    tracing::info!(node_id = %node.id, group = %node.group, revision = hello.last_revision, "watch stream opened");

    let node_id = node.id;
    let mut stream = WatchStream {
        node_key: node.id.to_string(),
        inner: inner.clone(),
        node,
        labels: labels.clone(),
        out,
        sent: (to_i64(hello.last_revision), hello.config_hash.clone()),
        acked: (to_i64(hello.last_revision), hello.config_hash),
        blocked_until_after: None,
        live_from: *inner.tailer.head.borrow(),
        unserved: None,
    };
    let end = stream.serve(&mut inbound).await;
    if let Some(status) = end {
        let _ = stream.out.send(Err(status)).await;
    }
    inner
        .metrics
        .sync_connected_streams
        .get_or_create(&labels)
        .dec();
    if let Err(e) = inner.store.node_disconnected(node_id, &inner.replica).await {
        tracing::warn!(error = %e, "could not record node disconnect");
    }
    tracing::info!(%node_id, "watch stream closed");
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl WatchStream {
    /// Runs until the node goes away (`None`) or must be cut off (`Some(status)`).
    async fn serve(&mut self, inbound: &mut Streaming<WatchRequest>) -> Option<Status> {
        let mut head = self.inner.tailer.head.clone();
        // A node coming from another replica may be a few milliseconds ahead of this replica's
        // tailer; give it a moment before calling the node "ahead of head" and resending everything.
        let wanted = self.sent.0;
        let _ = tokio::time::timeout(CATCH_UP_WAIT, head.wait_for(|h| *h >= wanted)).await;
        head.mark_unchanged();
        if let Err(end) = self.push(false).await {
            return end;
        }
        let mut standing = self.inner.guard.watch(self.node.id);
        let mut bookmark = tokio::time::interval(BOOKMARK_EVERY);
        bookmark.reset();
        loop {
            tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() {
                        return Some(Status::unavailable("control plane is shutting down"));
                    }
                    let newest = *head.borrow_and_update();
                    if lock(&self.inner.tailer.state).is_revoked(&self.node_key) {
                        return Some(self.fenced());
                    }
                    if self.blocked_until_after.is_some_and(|b| newest <= b) {
                        continue;
                    }
                    self.blocked_until_after = None;
                    if let Err(end) = self.push(false).await {
                        return end;
                    }
                }
                msg = inbound.message() => match msg {
                    Ok(Some(WatchRequest { message: Some(Inbound::Ack(ack)) })) => self.on_ack(ack).await,
                    Ok(Some(WatchRequest { message: Some(Inbound::Nack(nack)) })) => {
                        if let Err(end) = self.on_nack(nack).await {
                            return end;
                        }
                    }
                    Ok(Some(_)) => return Some(Status::invalid_argument("unexpected message on Watch")),
                    Ok(None) | Err(_) => return None,
                },
                changed = standing.verdicts.changed() => {
                    if changed.is_err() {
                        return Some(Status::unavailable("control plane is shutting down"));
                    }
                    let refused = match standing.refusal() {
                        Some(Refusal::Revoked) => SyncError::Revoked(self.node.id.to_string()),
                        Some(Refusal::CertificateExpired) => SyncError::CertificateExpired,
                        None => continue,
                    };
                    tracing::warn!(node_id = %self.node.id, error = %refused, "closing watch stream");
                    return Some(refused.into());
                }
                _ = bookmark.tick() => {
                    if self.blocked_until_after.is_none()
                        && let Err(end) = self.push(false).await
                    {
                        return end;
                    }
                }
            }
        }
    }

    /// The status a revoked node's stream ends with.
    fn fenced(&self) -> Status {
        let refused = SyncError::Revoked(self.node_key.clone());
        tracing::warn!(node_id = %self.node.id, error = %refused, "closing watch stream");
        refused.into()
    }

    /// Sends what the node needs to reach head from what it was sent. `resync` forces a snapshot.
    /// `Err(None)`: the node went away; `Err(Some(status))`: end the stream with `status`.
    ///
    /// This is the only place that sends configuration, and it plans under the state lock after
    /// checking the revocation fence under that same lock: the tailer applies a revocation and
    /// everything after it in one critical section, so nothing committed after a node's
    /// revocation is ever planned for it, on any replica.
    async fn push(&mut self, resync: bool) -> Result<(), Option<Status>> {
        enum Step {
            Send(Vec<WatchResponse>),
            Fenced,
            Throttle(&'static str),
            Permit,
        }
        let inner = self.inner.clone();
        let mut permit = None;
        let mut allowed = false;
        let messages = loop {
            let step = {
                let mut state = lock(&inner.tailer.state);
                if state.is_revoked(&self.node_key) {
                    Step::Fenced
                } else {
                    let plan = if resync {
                        Plan::Snapshot {
                            reason: "resync",
                            view: state.view(&self.node.group),
                        }
                    } else {
                        state.plan(&self.node.group, self.sent.0, &self.sent.1)
                    };
                    match plan {
                        // A snapshot the node's own claims forced (its hash, its revision, a
                        // drift NACK) costs a build and a copy per chunk: a node looping on bad
                        // claims waits for its bucket instead.
                        Plan::Snapshot { reason, .. }
                            if !allowed && reason != "below_retention" =>
                        {
                            Step::Throttle(reason)
                        }
                        // Each snapshot in flight holds a copy of its messages until they are
                        // written, and after a control-plane restart every node of a large fleet
                        // may want one at once: the permit comes before the copy. The plan is
                        // made again once it is held, since the head may have moved meanwhile.
                        Plan::Snapshot { .. } if permit.is_none() => Step::Permit,
                        plan => Step::Send(self.messages_for(&state, plan)),
                    }
                }
            };
            match step {
                Step::Send(messages) => break messages,
                Step::Fenced => return Err(Some(self.fenced())),
                Step::Throttle(reason) => match inner.snapshot_buckets.take(&self.node.id) {
                    Ok(()) => allowed = true,
                    Err(wait) => {
                        inner
                            .metrics
                            .sync_snapshots_throttled_total
                            .get_or_create(&self.labels)
                            .inc();
                        tracing::warn!(node_id = %self.node.id, reason, wait_ms = wait.as_millis() as u64, "node forces snapshots faster than the snapshot limit; holding the next one back");
                        tokio::time::sleep(wait).await;
                    }
                },
                Step::Permit => match inner.snapshot_sends.acquire().await {
                    Ok(p) => permit = Some(p),
                    Err(_) => return Err(None),
                },
            }
        };
        for m in messages {
            // A node that stops reading must not hold a snapshot permit for ever.
            match tokio::time::timeout(SEND_TIMEOUT, self.out.send(Ok(m))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(None),
                Err(_) => {
                    tracing::warn!(node_id = %self.node.id, "node stopped reading its stream; closing it");
                    return Err(None);
                }
            }
        }
        Ok(())
    }

    /// The messages that carry `plan`, and what the node will hold once it has applied them.
    fn messages_for(&mut self, state: &ConfigState, plan: Plan) -> Vec<WatchResponse> {
        match plan {
            Plan::Snapshot { reason, view } => {
                let msgs = snapshot_messages(state, &view, reason);
                self.live_from = self.live_from.max(view.revision);
                self.inner
                    .metrics
                    .sync_snapshots_total
                    .get_or_create(&SnapshotLabels {
                        group: self.node.group.clone(),
                        reason,
                    })
                    .inc();
                self.sent = (view.revision, view.hash.clone());
                msgs
            }
            Plan::Changes(c) => {
                self.sent = (to_i64(c.to_revision), c.config_hash.clone());
                vec![WatchResponse {
                    message: Some(Outbound::Changes(c)),
                }]
            }
            Plan::Bookmark(b) => {
                self.sent = (to_i64(b.revision), b.config_hash.clone());
                vec![WatchResponse {
                    message: Some(Outbound::Bookmark(b)),
                }]
            }
        }
    }

    async fn on_ack(&mut self, mut ack: Ack) {
        ack.config_hash = bounds::truncate(&ack.config_hash, bounds::MAX_CONFIG_HASH);
        self.record_unserved(&ack.unserved_apis).await;
        let revision = to_i64(ack.revision);
        if revision <= self.acked.0 {
            return;
        }
        let times =
            lock(&self.inner.tailer.state).commit_times(self.acked.0.max(self.live_from), revision);
        let now = Utc::now();
        self.inner.metrics.observe_propagation(
            &self.labels,
            times
                .into_iter()
                .map(|t| (now - t).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6),
        );
        self.acked = (revision, ack.config_hash);
        self.inner
            .acks
            .record(self.node.id, revision, &self.acked.1);
    }

    /// Stores the APIs the node cannot serve (bounded like NACK resources) when they change.
    async fn record_unserved(&mut self, reported: &[String]) {
        let unserved: Vec<String> = reported
            .iter()
            .take(bounds::MAX_NACK_RESOURCES)
            .map(|s| bounds::truncate(s, bounds::MAX_RESOURCE_ID))
            .collect();
        if self.unserved.as_ref() == Some(&unserved) {
            return;
        }
        if !unserved.is_empty() {
            tracing::warn!(node_id = %self.node.id, apis = ?unserved, "node answers 503 on APIs whose authentication method it does not implement");
        }
        match self
            .inner
            .store
            .node_unserved(self.node.id, &unserved)
            .await
        {
            Ok(()) => self.unserved = Some(unserved),
            Err(e) => tracing::warn!(error = %e, "could not record the node's unserved APIs"),
        }
    }

    async fn on_nack(&mut self, nack: Nack) -> Result<(), Option<Status>> {
        let nack = bounds::bound_nack(nack);
        tracing::warn!(node_id = %self.node.id, revision = nack.revision, error = %nack.error, resources = ?nack.resource_ids, "node rejected configuration");
        self.inner
            .metrics
            .sync_nacks_total
            .get_or_create(&self.labels)
            .inc();
        let record = serde_json::json!({
            "revision": nack.revision,
            "error": nack.error,
            "resource_ids": nack.resource_ids,
            "at": Utc::now().to_rfc3339(),
        });
        if let Err(e) = self.inner.store.node_nacked(self.node.id, &record).await {
            tracing::warn!(error = %e, "could not record NACK");
        }
        if nack.error.starts_with("config hash mismatch")
            || nack.error.starts_with("base revision mismatch")
        {
            self.blocked_until_after = None;
            return self.push(true).await;
        }
        self.blocked_until_after = Some(to_i64(nack.revision));
        self.sent = self.acked.clone();
        Ok(())
    }
}

fn snapshot_messages(
    state: &ConfigState,
    view: &GroupView,
    reason: &'static str,
) -> Vec<WatchResponse> {
    state
        .snapshot_chunks(view)
        .iter()
        .map(|chunk| {
            let mut chunk = chunk.clone();
            chunk.reason = reason.to_owned();
            WatchResponse {
                message: Some(Outbound::Snapshot(chunk)),
            }
        })
        .collect()
}
