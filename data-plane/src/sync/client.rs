//! The long-running sync task: join if needed, then watch, reconnecting with jittered
//! exponential backoff across the configured control planes. The gateway keeps serving its last
//! configuration whatever happens here.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portcullis_proto::sync::sync_client::SyncClient as Grpc;
use portcullis_proto::sync::watch_request::Message as Outbound;
use portcullis_proto::sync::watch_response::Message as Inbound;
use portcullis_proto::sync::{Ack, CacheFlush, Hello, Nack, Snapshot, WatchRequest};
use portcullis_proto::version::BUILD_VERSION;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::identity::{Identity, StateDir};
use super::join::{JoinFailure, JoinParams, error_chain, join};
use super::renew::{Validity, renew_once};
use super::{backup, connect};
use crate::applied::{AppliedConfig, ApplyError};
use crate::config::Config;
use crate::shared::Shared;

/// How the control plane refuses a certificate it has replaced (see `renew_forever`).
const SUPERSEDED: &str = "superseded by a renewal";
/// Snapshots of many thousands of APIs arrive in 1 MiB chunks; deltas can be larger.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A revoked node asks again rarely: revocation is final, but an operator may look at the
/// control plane's log, and a node that never asks could not notice a restored database.
const REVOKED_BACKOFF_MIN: Duration = Duration::from_secs(30);
const REVOKED_BACKOFF_MAX: Duration = Duration::from_secs(600);
/// How the control plane words a revoked node's refusal (`PERMISSION_DENIED`).
const REVOKED: &str = "has been revoked";
/// How often a gateway rewrites a backup that already holds its configuration.
const BACKUP_REWRITE_EVERY: Duration = Duration::from_secs(600);
/// At most one Redis backup write per period per gateway; bursts coalesce.
const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// `CacheFlush.cache` of the JWK sets fetched from identity providers.
const JWKS_CACHE: &str = "jwks";

/// Why the sync task gave up for good. The gateway keeps serving what it has.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncFatal {
    #[error("{0}")]
    PinMismatch(String),
    #[error("{0}")]
    JoinRefused(String),
    #[error("no node identity in the state dir and no --bootstrap-token to join with")]
    NoToken,
    #[error("state dir: {0}")]
    StateDir(String),
    #[error(
        "the node certificate expired at {0} (unix seconds) and cannot be renewed; join again with --bootstrap-token"
    )]
    CertificateExpired(i64),
}

pub struct SyncClient {
    config: Config,
    shared: Arc<Shared>,
    state_dir: Option<StateDir>,
    identity: Option<Identity>,
    applied: Option<AppliedConfig>,
    next_cp: usize,
}

struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min,
            min,
            max,
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        // Full jitter in [d/2, d): a fleet reconnecting after a CP restart spreads out.
        let half = d / 2;
        half + Duration::from_micros(rand::rng().random_range(0..=half.as_micros().max(1) as u64))
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

enum StreamEnd {
    /// Worth retrying (after a pause); whether any message was applied.
    Retry { error: String, progressed: bool },
    /// The control plane says this node is revoked: ask again rarely.
    Revoked(String),
}

/// Whether a refusal says the node was revoked.
fn is_revoked(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::PermissionDenied && status.message().contains(REVOKED)
}

impl SyncClient {
    pub fn new(
        config: Config,
        shared: Arc<Shared>,
        state_dir: Option<StateDir>,
        identity: Option<Identity>,
        applied: Option<AppliedConfig>,
    ) -> Self {
        Self {
            config,
            shared,
            state_dir,
            identity,
            applied,
            next_cp: 0,
        }
    }

    fn cp_url(&mut self) -> url::Url {
        let n = self.config.control_planes.len().max(1);
        let url = self.config.control_planes[self.next_cp % n].clone();
        self.next_cp = self.next_cp.wrapping_add(1);
        url
    }

    pub async fn run(mut self) -> Result<(), SyncFatal> {
        if self.applied.is_none() {
            self.load_backup().await;
        }
        let identity = match self.identity.take() {
            Some(i) => match Validity::of_pem(&i.cert_pem) {
                Ok(v) if !v.expired(chrono::Utc::now().timestamp()) => i,
                Ok(v) if self.config.bootstrap_token.is_some() => {
                    tracing::warn!(node_id = %i.node_id, expired_at = v.not_after, "node certificate expired while the node was down; joining again");
                    self.join_with_retry().await?
                }
                Ok(v) => return Err(self.fatal(SyncFatal::CertificateExpired(v.not_after))),
                Err(e) => return Err(self.fatal(SyncFatal::StateDir(e))),
            },
            None => self.join_with_retry().await?,
        };
        if let Ok(mut g) = self.shared.node_id.lock() {
            *g = Some(identity.node_id.clone());
        }
        let (persist_tx, persist_rx) = watch::channel(None::<Snapshot>);
        if let Some(dir) = self.state_dir.clone() {
            tokio::spawn(persist_state_dir(
                self.shared.clone(),
                dir,
                persist_rx.clone(),
                self.config.encryption_secret.clone(),
                identity.group.clone(),
            ));
        }
        tokio::spawn(persist_backup(
            self.shared.clone(),
            persist_rx,
            self.config.encryption_secret.clone(),
            identity.group.clone(),
        ));
        // The identity and its generation (renewals so far): session lookups use a channel built
        // from the newest generation, whichever of the watch loop and the renewal installs last.
        let (identity_tx, identity_rx) = watch::channel((0u64, identity));
        let renew_now = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(renew_forever(
            self.config.control_planes.clone(),
            identity_tx,
            self.state_dir.clone(),
            self.shared.clone(),
            renew_now.clone(),
        ));
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        let mut revoked = Backoff::new(REVOKED_BACKOFF_MIN, REVOKED_BACKOFF_MAX);
        let mut said_revoked = false;
        loop {
            let url = self.cp_url();
            let (generation, identity) = identity_rx.borrow().clone();
            let end = self
                .watch_once(&url, &identity, generation, &persist_tx)
                .await;
            self.shared.stats.connected.store(false, Ordering::Release);
            self.shared.sessions.set_control_plane(None);
            let (error, progressed) = match end {
                StreamEnd::Retry { error, progressed } => (error, progressed),
                StreamEnd::Revoked(error) => {
                    // Said once: a revoked node retrying for days must not fill the log.
                    if !said_revoked {
                        said_revoked = true;
                        tracing::error!(control_plane = %url, node_id = %identity.node_id, %error, "this node has been revoked; serving the last configuration without updates; to bring it back, clear its state dir and join again with a new bootstrap token");
                    } else {
                        tracing::debug!(control_plane = %url, %error, "still revoked");
                    }
                    self.shared.stats.set_error(format!(
                        "node {} has been revoked by the control plane; serving the last configuration ({error})",
                        identity.node_id
                    ));
                    tokio::time::sleep(revoked.next()).await;
                    continue;
                }
            };
            if progressed {
                said_revoked = false;
                revoked.reset();
            }
            if error.contains(SUPERSEDED) {
                // A renewal whose answer was lost: the control plane moved on to a certificate
                // this node never received. It still accepts this one to renew with.
                renew_now.notify_one();
            }
            tracing::warn!(control_plane = %url, %error, "sync stream ended; serving the last configuration");
            self.shared.stats.set_error(error);
            if progressed {
                backoff.reset();
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }

    /// Serves the group's backup from the regional Redis when there is no configuration yet. The
    /// Hello then names its revision and hash, so the control plane answers with the changes
    /// since, not a snapshot.
    async fn load_backup(&mut self) {
        let group = match (&self.identity, &self.config.group) {
            (Some(i), _) => i.group.clone(),
            (None, Some(g)) => g.clone(),
            (None, None) => {
                tracing::info!(
                    "no --group and no joined identity: cannot start from a Redis backup"
                );
                return;
            }
        };
        let Some(link) = self.shared.sessions.redis().cloned() else {
            return;
        };
        let Some(bytes) = backup::fetch(&link, &group).await else {
            tracing::info!(%group, "no configuration backup in Redis for this group");
            return;
        };
        let refuse = |e: String| {
            tracing::error!(%group, error = %e, "refusing the configuration backup from Redis");
            self.shared
                .stats
                .backup_refusals
                .fetch_add(1, Ordering::Relaxed);
            let why = format!("Redis backup refused: {e}");
            if let Ok(mut g) = self.shared.stats.backup_refused.lock() {
                *g = Some(why.clone());
            }
            self.shared.stats.set_error(why);
        };
        let snapshot = match backup::open(&bytes, &group, &self.config.encryption_secret) {
            Ok((_, s)) => s,
            Err(e) => return refuse(e.to_string()),
        };
        match AppliedConfig::from_snapshot(&[snapshot], &group) {
            Ok(c) => {
                tracing::info!(%group, revision = c.revision, resources = c.len(), "serving the configuration backup from Redis");
                self.shared.install(c.routing_table(), c.revision);
                self.shared
                    .stats
                    .backup_loads
                    .fetch_add(1, Ordering::Relaxed);
                self.applied = Some(c);
            }
            Err(e) => refuse(e.to_string()),
        }
    }

    fn fatal(&self, e: SyncFatal) -> SyncFatal {
        tracing::error!(error = %e, "sync stopped");
        self.shared.stats.set_error(e.to_string());
        e
    }

    async fn join_with_retry(&mut self) -> Result<Identity, SyncFatal> {
        let token = self
            .config
            .bootstrap_token
            .clone()
            .ok_or(SyncFatal::NoToken)?;
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            let url = self.cp_url();
            let result = join(JoinParams {
                url: &url,
                token: &token,
                ca_hash: &self.config.ca_hash,
                node_name: &self.config.node_name,
                group: self.config.group.as_deref(),
            })
            .await;
            match result {
                Ok(identity) => {
                    tracing::info!(node_id = %identity.node_id, group = %identity.group, control_plane = %url, "joined");
                    if let Some(dir) = &self.state_dir {
                        dir.save_identity(&identity)
                            .map_err(|e| SyncFatal::StateDir(e.to_string()))?;
                    }
                    return Ok(identity);
                }
                Err(JoinFailure::Fatal(e)) => {
                    tracing::error!(error = %e, "join failed");
                    self.shared.stats.set_error(e.to_string());
                    return Err(e);
                }
                Err(JoinFailure::Retry(e)) => {
                    tracing::warn!(control_plane = %url, error = %e, "join attempt failed; retrying");
                    self.shared.stats.set_error(e);
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
    }

    #[tracing::instrument(skip_all, name = "watch", fields(control_plane = %url, node_id = %identity.node_id))]
    async fn watch_once(
        &mut self,
        url: &url::Url,
        identity: &Identity,
        generation: u64,
        persist_tx: &watch::Sender<Option<Snapshot>>,
    ) -> StreamEnd {
        let retry = |error: String, progressed| StreamEnd::Retry { error, progressed };
        let tls = match connect::node_tls(identity) {
            Ok(t) => t,
            Err(e) => return retry(e.to_string(), false),
        };
        let channel = match connect::channel(url, tls).await {
            Ok(c) => c,
            Err(e) => return retry(error_chain(&e), false),
        };
        self.shared
            .sessions
            .install_control_plane(generation, Grpc::new(channel.clone()));
        let mut grpc = Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let (tx, rx) = mpsc::channel(16);
        let (revision, hash) = match &self.applied {
            Some(a) => (u64::try_from(a.revision).unwrap_or(0), a.hash.clone()),
            None => (0, String::new()),
        };
        let hello = Hello {
            node_id: identity.node_id.clone(),
            protocol_version: portcullis_proto::PROTOCOL_VERSION,
            capabilities: portcullis_proto::model::auth_methods::IMPLEMENTED
                .iter()
                .map(|m| (*m).to_owned())
                .collect(),
            build_version: BUILD_VERSION.into(),
            last_revision: revision,
            config_hash: hash,
        };
        let _ = tx
            .send(WatchRequest {
                message: Some(Outbound::Hello(hello)),
            })
            .await;
        let mut inbound = match grpc.watch(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) if is_revoked(&status) => {
                return StreamEnd::Revoked(format!("watch refused: {}", status.message()));
            }
            Err(status) => return retry(format!("watch refused: {}", status.message()), false),
        };
        let stats = &self.shared.stats;
        stats.connected.store(true, Ordering::Release);
        stats.connects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(control_plane = %url, revision, "watching");
        let mut chunks: Vec<Snapshot> = Vec::new();
        let mut progressed = false;
        loop {
            let msg = match inbound.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return retry("control plane closed the stream".into(), progressed),
                Err(status) if is_revoked(&status) => {
                    return StreamEnd::Revoked(format!("stream closed: {}", status.message()));
                }
                Err(status) => {
                    return retry(format!("stream error: {}", status.message()), progressed);
                }
            };
            let received = self.shared.tracer().map(|_| crate::trace::now_ns());
            let message_kind = match &msg.message {
                Some(Inbound::Snapshot(_)) => "snapshot",
                Some(Inbound::Changes(_)) => "changes",
                Some(Inbound::Bookmark(_)) => "bookmark",
                None => "empty",
            };
            let (result, at) = match msg.message {
                Some(Inbound::Snapshot(s)) => {
                    if s.chunk == 0 {
                        chunks.clear();
                    }
                    let (last, revision) = (s.chunk + 1 >= s.chunks, s.revision);
                    chunks.push(s);
                    if !last {
                        continue;
                    }
                    let result =
                        AppliedConfig::from_snapshot(&std::mem::take(&mut chunks), &identity.group)
                            .map(|c| {
                                stats.snapshots.fetch_add(1, Ordering::Relaxed);
                                self.applied = Some(c);
                            });
                    // Key events between our last revision and the snapshot are unknown, and so
                    // are cache flushes: every JWK set is fetched again.
                    self.shared.sessions.after_snapshot(revision);
                    self.shared.idp().flush_jwks(None);
                    (result, revision)
                }
                Some(Inbound::Changes(c)) => {
                    // Dropping a cached key is always safe, so events apply even if the
                    // configuration part is rejected.
                    for event in &c.session_events {
                        self.shared.sessions.on_event(event).await;
                    }
                    for flush in &c.cache_flushes {
                        apply_flush(self.shared.idp(), flush);
                    }
                    let result = match self.applied.as_mut() {
                        Some(a) => a.apply_changes(&c),
                        None => Err(ApplyError::BaseMismatch {
                            held: 0,
                            from: i64::try_from(c.from_revision).unwrap_or(0),
                        }),
                    };
                    if result.is_ok() {
                        stats.changes.fetch_add(1, Ordering::Relaxed);
                    }
                    (result, c.to_revision)
                }
                Some(Inbound::Bookmark(b)) => {
                    let result = match self.applied.as_mut() {
                        Some(a) => a.apply_bookmark(b.revision, &b.config_hash),
                        None => Err(ApplyError::HashMismatch {
                            expected: b.config_hash.clone(),
                            computed: "nothing".into(),
                        }),
                    };
                    if result.is_ok() {
                        stats.bookmarks.fetch_add(1, Ordering::Relaxed);
                    }
                    (result, b.revision)
                }
                None => continue,
            };
            if let (Some(tracer), Some(started)) = (self.shared.tracer(), received) {
                use crate::trace::Attr;
                tracer.record_root(
                    "portcullis.sync.apply",
                    started,
                    vec![
                        (
                            "portcullis.sync.message",
                            Attr::Str(message_kind.to_owned()),
                        ),
                        (
                            "portcullis.revision",
                            Attr::Int(i64::try_from(at).unwrap_or(i64::MAX)),
                        ),
                        ("portcullis.sync.accepted", Attr::Bool(result.is_ok())),
                    ],
                    result.as_ref().err().map(ToString::to_string),
                );
            }
            let reply = match result {
                Ok(()) => {
                    let Some(applied) = self.applied.as_ref() else {
                        continue;
                    };
                    progressed = true;
                    stats
                        .fresh_at_ms
                        .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
                    self.shared
                        .install(applied.routing_table(), applied.revision);
                    persist_tx.send_replace(Some(applied.to_snapshot()));
                    Outbound::Ack(Ack {
                        revision: at,
                        config_hash: applied.hash.clone(),
                        unserved_apis: crate::request_metrics::unserved_apis(
                            &self.shared.table.load(),
                        ),
                    })
                }
                Err(e) => {
                    stats.nacks.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(revision = at, error = %e, "configuration rejected; serving the previous one");
                    Outbound::Nack(Nack {
                        revision: at,
                        error: e.to_string(),
                        resource_ids: e.resource_ids(),
                    })
                }
            };
            if tx
                .send(WatchRequest {
                    message: Some(reply),
                })
                .await
                .is_err()
            {
                return retry("stream closed while answering".into(), progressed);
            }
        }
    }
}

/// Drops what a `CacheFlush` names. Like a session event, a flush is always safe to apply,
/// whatever becomes of the configuration part of its message.
fn apply_flush(idp: &crate::idp::Idp, flush: &CacheFlush) {
    if flush.cache != JWKS_CACHE {
        // A cache a newer control plane knows and this build does not hold.
        tracing::debug!(cache = %flush.cache, "ignoring a flush of an unknown cache");
        return;
    }
    // An id no API can have (the control plane refuses them) flushes every API: more than was
    // asked, never less.
    let sane = flush.api_id.len() <= 255 && !flush.api_id.chars().any(char::is_control);
    let api_id = (sane && !flush.api_id.is_empty()).then_some(flush.api_id.as_str());
    tracing::info!(
        api_id = api_id.unwrap_or("*"),
        revision = flush.revision,
        "flushing the JWKS cache"
    );
    idp.flush_jwks(api_id);
}

/// Writes the newest applied configuration to the state dir as soon as it is applied; revisions
/// applied while a write is in flight coalesce into the next one.
async fn persist_state_dir(
    shared: Arc<Shared>,
    dir: StateDir,
    mut rx: watch::Receiver<Option<Snapshot>>,
    secret: String,
    group: String,
) {
    while rx.changed().await.is_ok() {
        let Some(snapshot) = rx.borrow_and_update().clone() else {
            continue;
        };
        let revision = i64::try_from(snapshot.revision).unwrap_or(i64::MAX);
        let (dir, secret, group) = (dir.clone(), secret.clone(), group.clone());
        let written =
            tokio::task::spawn_blocking(move || dir.save_config(&snapshot, &secret, &group)).await;
        match written {
            Ok(Ok(())) => shared
                .stats
                .state_dir_revision
                .store(revision, Ordering::Relaxed),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not write the configuration to the state dir")
            }
            Err(_) => {}
        }
    }
}

/// Writes the sealed backup of the newest applied configuration to the regional Redis, at most
/// once per `PERSIST_EVERY`: every gateway of a group writes it, and a burst of commits should
/// not mean a burst of full-configuration writes.
async fn persist_backup(
    shared: Arc<Shared>,
    mut rx: watch::Receiver<Option<Snapshot>>,
    secret: String,
    group: String,
) {
    let mut written_at = tokio::time::Instant::now();
    while rx.changed().await.is_ok() {
        let Some(link) = shared.sessions.redis().cloned() else {
            return;
        };
        let Some(snapshot) = rx.borrow_and_update().clone() else {
            continue;
        };
        if link.conn().is_none() {
            // Redis is away: try again later rather than sealing the configuration for nothing.
            rx.mark_changed();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Same configuration already stored (by this gateway or another of the group): a
        // revision moved by a bookmark changes nothing worth rewriting. Each gateway still
        // rewrites it now and then, which repairs a backup damaged in Redis.
        let hash = snapshot.config_hash.clone();
        if written_at.elapsed() < BACKUP_REWRITE_EVERY
            && backup::stored_hash(&link, &group).await.as_deref() == Some(hash.as_str())
        {
            tokio::time::sleep(PERSIST_EVERY).await;
            continue;
        }
        let revision = i64::try_from(snapshot.revision).unwrap_or(0);
        let (secret, group2) = (secret.clone(), group.clone());
        let sealed =
            tokio::task::spawn_blocking(move || backup::seal(&snapshot, &group2, &secret)).await;
        let stored = match sealed {
            Ok(sealed) => backup::store(&link, &group, &hash, sealed).await,
            Err(_) => false,
        };
        if stored {
            written_at = tokio::time::Instant::now();
        }
        if stored {
            shared
                .stats
                .backup_revision
                .store(revision, Ordering::Relaxed);
        } else {
            tracing::warn!(
                revision,
                "could not write the configuration backup to Redis; retrying"
            );
            // Try again with whatever is newest by then. Bookmarks (every 30 s) also bring it
            // back after a Redis restart lost it: the stored hash is gone with it.
            rx.mark_changed();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tokio::time::sleep(PERSIST_EVERY).await;
    }
}

/// Renews the node certificate before it expires, for as long as the gateway runs. A failed
/// attempt is retried against the next control plane; past expiry the node keeps serving what it
/// has and says so.
async fn renew_forever(
    control_planes: Vec<url::Url>,
    identity: watch::Sender<(u64, Identity)>,
    state_dir: Option<StateDir>,
    shared: Arc<Shared>,
    renew_now: Arc<tokio::sync::Notify>,
) {
    let mut next_cp = 0usize;
    let mut last_renewal: Option<tokio::time::Instant> = None;
    loop {
        let (generation, current) = identity.borrow().clone();
        let validity = match Validity::of_pem(&current.cert_pem) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the node certificate; not renewing");
                return;
            }
        };
        shared
            .stats
            .cert_not_after
            .store(validity.not_after, Ordering::Relaxed);
        let mut delay = validity.jittered_delay(chrono::Utc::now().timestamp_millis());
        // A clock running far ahead of the control plane's would otherwise renew in a loop.
        if let Some(at) = last_renewal {
            delay = delay.max(validity.min_gap().saturating_sub(at.elapsed()));
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = renew_now.notified() => tracing::info!("certificate superseded on the control plane; renewing now"),
            () = identity.closed() => return,
        }
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let (renewed, from) = loop {
            let url = &control_planes[next_cp % control_planes.len().max(1)];
            next_cp = next_cp.wrapping_add(1);
            match renew_once(url, &current).await {
                Ok(new) => break (new, url.clone()),
                Err(e) => {
                    let expired = validity.expired(chrono::Utc::now().timestamp());
                    tracing::warn!(control_plane = %url, error = %e, expired, "certificate renewal failed; retrying");
                    if expired {
                        shared.stats.set_error(
                            SyncFatal::CertificateExpired(validity.not_after).to_string(),
                        );
                    }
                    // A revoked node's renewals cannot succeed; they wait as long as its watches.
                    let wait = if e.to_string().contains(REVOKED) {
                        REVOKED_BACKOFF_MAX
                    } else {
                        backoff.next().min(Duration::from_secs(30))
                    };
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = identity.closed() => return,
                    }
                }
            }
        };
        last_renewal = Some(tokio::time::Instant::now());
        if let Some(dir) = &state_dir {
            save_identity(dir, &renewed).await;
        }
        identity.send_replace((generation + 1, renewed.clone()));
        // Session lookups open calls on a channel of their own; the old certificate no longer
        // authenticates new calls.
        if let Ok(tls) = connect::node_tls(&renewed)
            && let Ok(channel) = connect::channel(&from, tls).await
        {
            shared
                .sessions
                .install_control_plane(generation + 1, Grpc::new(channel));
        }
        shared.stats.renewals.fetch_add(1, Ordering::Relaxed);
        tracing::info!(node_id = %renewed.node_id, "node certificate renewed");
    }
}

/// The renewed identity must reach the state dir, or a restart comes back with a certificate
/// the control plane has replaced; a few quick retries ride out a transient failure.
async fn save_identity(dir: &StateDir, identity: &Identity) {
    for attempt in 1..=5 {
        match dir.save_identity(identity) {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, attempt, "renewed certificate not written to the state dir");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use portcullis_proto::sync::CacheFlush;

    use super::apply_flush;

    #[test]
    fn jwks_flushes_reach_the_idp_and_unknown_caches_are_ignored() {
        let idp = crate::idp::Idp::default();
        let flush = |cache: &str, api_id: &str| CacheFlush {
            cache: cache.into(),
            api_id: api_id.into(),
            revision: 7,
        };
        apply_flush(&idp, &flush("jwks", "api-1"));
        apply_flush(&idp, &flush("jwks", ""));
        apply_flush(&idp, &flush("jwks", "bad\u{1}id"));
        apply_flush(&idp, &flush("introspection", "api-1"));
        assert_eq!(idp.stats.jwks_flushes.load(Ordering::Relaxed), 3);
    }
}
