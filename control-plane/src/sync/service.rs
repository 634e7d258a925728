//! The tonic service: routes each RPC to its module after authenticating the caller.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use portcullis_proto::sync::sync_server::Sync;
use portcullis_proto::sync::{
    JoinRequest, JoinResponse, LookupSessionRequest, LookupSessionResponse, OAuthRequest,
    OAuthResponse, RenewCertificateRequest, RenewCertificateResponse, ReportSessionsRequest,
    ReportSessionsResponse, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;
use uuid::Uuid;

use super::ack_log::AckLog;
use super::auth::Purpose;
use super::bucket::Buckets;
use super::guard::NodeGuard;
use super::limits::SyncLimits;
use super::status::SyncError;
use super::tailer::Tailer;
use super::tls::PeerInfo;
use super::{auth, join, renew, report, watch};
use crate::ca::NodeCa;
use crate::metrics::{Metrics, OutcomeLabels};
use crate::store::Store;
use crate::store::keys::KeyOrigin;

/// Snapshots being built and sent at the same time, per replica.
const SNAPSHOT_SENDS: usize = 32;

/// Shared by every call.
#[derive(Debug)]
pub struct Inner {
    pub store: Store,
    pub ca: Arc<NodeCa>,
    pub tailer: Tailer,
    pub metrics: Arc<Metrics>,
    pub replica: String,
    pub cert_ttl: Duration,
    /// Bounds the snapshots being sent at once (see `watch::WatchStream::push`).
    pub snapshot_sends: tokio::sync::Semaphore,
    pub guard: Arc<NodeGuard>,
    pub acks: AckLog,
    /// Joins per source address.
    pub join_buckets: Buckets<IpAddr>,
    /// Joins being processed at once.
    pub join_slots: tokio::sync::Semaphore,
    /// Snapshots each node may force.
    pub snapshot_buckets: Buckets<Uuid>,
    /// Sessions each node may report (`report::RATE_PER_SEC`).
    pub report_buckets: Buckets<Uuid>,
    /// OAuth requests relayed per node (each costs Postgres writes, maybe a bcrypt check).
    pub oauth_buckets: Buckets<Uuid>,
    /// The OAuth 2.0 provider edges relay their token endpoints to.
    pub oauth: Arc<crate::oauth::OAuthServer>,
}

/// The `portcullis.sync.v1.Sync` service.
#[derive(Clone, Debug)]
pub struct SyncService {
    inner: Arc<Inner>,
}

impl SyncService {
    // Wiring, called once by `serve`; each part is a different kind.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        ca: Arc<NodeCa>,
        tailer: Tailer,
        metrics: Arc<Metrics>,
        replica: String,
        cert_ttl: Duration,
        limits: SyncLimits,
        oauth: Arc<crate::oauth::OAuthServer>,
    ) -> Self {
        let guard = NodeGuard::start(store.clone());
        let acks = AckLog::start(store.clone());
        Self {
            inner: Arc::new(Inner {
                join_buckets: Buckets::new(limits.join_rate_per_sec, limits.join_burst),
                join_slots: tokio::sync::Semaphore::new(limits.max_concurrent_joins),
                snapshot_buckets: Buckets::every(limits.snapshot_every, limits.snapshot_burst),
                report_buckets: Buckets::new(report::RATE_PER_SEC, report::BURST),
                oauth_buckets: Buckets::new(OAUTH_RATE_PER_SEC, OAUTH_BURST),
                guard,
                acks,
                store,
                ca,
                tailer,
                metrics,
                replica,
                cert_ttl,
                snapshot_sends: tokio::sync::Semaphore::new(SNAPSHOT_SENDS),
                oauth,
            }),
        }
    }
}

/// The client's address, as the TLS acceptor saw it.
fn remote_of<T>(request: &Request<T>) -> Option<SocketAddr> {
    request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.remote)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Sync for SyncService {
    #[tracing::instrument(skip_all, name = "join", fields(remote = ?remote_of(&request)))]
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let remote = remote_of(&request);
        let ip = remote.map(|r| r.ip());
        match join::join(&self.inner, ip, request.into_inner()).await {
            Ok(resp) => Ok(Response::new(resp)),
            Err(e) => {
                tracing::warn!(?remote, error = %e, "join refused");
                Err(e.into())
            }
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<WatchStream>, Status> {
        let node = auth::authenticate(&self.inner.store, &request, Purpose::Call).await?;
        let (tx, rx) = mpsc::channel(16);
        let inner = self.inner.clone();
        let span = tracing::info_span!("watch", node_id = %node.id, group = %node.group, remote = ?remote_of(&request));
        tokio::spawn(watch::run(inner, node, request.into_inner(), tx).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[tracing::instrument(skip_all, name = "renew_certificate")]
    async fn renew_certificate(
        &self,
        request: Request<RenewCertificateRequest>,
    ) -> Result<Response<RenewCertificateResponse>, Status> {
        let node = auth::authenticate(&self.inner.store, &request, Purpose::Renew).await?;
        Ok(Response::new(
            renew::renew(&self.inner, &node, request.into_inner()).await?,
        ))
    }

    async fn lookup_session(
        &self,
        request: Request<LookupSessionRequest>,
    ) -> Result<Response<LookupSessionResponse>, Status> {
        auth::authenticate(&self.inner.store, &request, Purpose::Call).await?;
        let key_hash = request.into_inner().key_hash;
        if key_hash.len() != 64 || !key_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                SyncError::BadRequest("key_hash must be a sha256 hex digest".into()).into(),
            );
        }
        // Origin and revocation come from the same snapshot as the session and the revision.
        let (found, revision) = self
            .inner
            .store
            .lookup_key(&key_hash.to_ascii_lowercase())
            .await
            .map_err(SyncError::from)?;
        let revision = u64::try_from(revision).unwrap_or(0);
        Ok(Response::new(match found {
            None => LookupSessionResponse {
                revision,
                ..Default::default()
            },
            Some(mut k) => LookupSessionResponse {
                found: true,
                session_json: {
                    // A tombstone carries its revocation as the floor edges check (and keep in
                    // Redis with the record).
                    if let (Some(t), Some(m)) = (k.revoked_at, k.session.as_object_mut()) {
                        // `iat` counts whole seconds: a token of the revocation's second
                        // may predate it, so that second is refused too.
                        let floor = t.timestamp();
                        let kept = m
                            .get(portcullis_proto::model::TOKENS_AFTER_FIELD)
                            .and_then(serde_json::Value::as_i64)
                            .unwrap_or(0);
                        m.insert(
                            portcullis_proto::model::TOKENS_AFTER_FIELD.into(),
                            floor.max(kept).into(),
                        );
                    }
                    k.session.to_string().into_bytes()
                },
                revision,
                origin: match k.origin {
                    // An OAuth access token is a stored key, as in Tyk.
                    KeyOrigin::Operator | KeyOrigin::OAuth => String::new(),
                    KeyOrigin::Jwt => report::ORIGIN_JWT.to_owned(),
                },
                revoked_at: k.revoked_at.map_or(0, |t| t.timestamp()),
            },
        }))
    }

    async fn report_sessions(
        &self,
        request: Request<ReportSessionsRequest>,
    ) -> Result<Response<ReportSessionsResponse>, Status> {
        let node = auth::authenticate(&self.inner.store, &request, Purpose::Call).await?;
        let sessions = request.into_inner().sessions;
        let count = |outcome: &'static str, n: usize| {
            self.inner
                .metrics
                .sync_reported_sessions_total
                .get_or_create(&OutcomeLabels { outcome })
                .inc_by(n as u64);
        };
        let checked = match report::check_all(&sessions) {
            Ok(c) => c,
            Err(e) => {
                count("refused", sessions.len());
                tracing::warn!(node_id = %node.id, error = %e, "session report refused");
                return Err(e.into());
            }
        };
        if checked.is_empty() {
            return Ok(Response::new(ReportSessionsResponse {}));
        }
        // Bounded by MAX_SESSIONS above.
        let n = u32::try_from(checked.len()).unwrap_or(u32::MAX);
        if let Err(wait) = self.inner.report_buckets.take_n(&node.id, n) {
            count("refused", checked.len());
            return Err(Status::resource_exhausted(format!(
                "node {} reports sessions faster than {} per second; retry in {} ms",
                node.id,
                report::RATE_PER_SEC,
                wait.as_millis()
            )));
        }
        let mut ids: Vec<String> = checked.iter().flat_map(|c| c.policies.clone()).collect();
        ids.sort();
        ids.dedup();
        let known = self
            .inner
            .store
            .policy_orgs(&ids)
            .await
            .map_err(SyncError::from)?;
        let (keep, foreign): (Vec<_>, Vec<_>) = checked
            .into_iter()
            .partition(|c| report::policies_of_its_org(c, &known));
        if !foreign.is_empty() {
            tracing::debug!(node_id = %node.id, sessions = foreign.len(), "reported sessions apply policies that do not exist in their org; not stored");
        }
        let keys: Vec<_> = keep.into_iter().map(|c| c.key).collect();
        let outcome = self
            .inner
            .store
            .report_keys(node.id, &keys)
            .await
            .map_err(SyncError::from)?;
        count("accepted", outcome.accepted);
        count("skipped", outcome.skipped + foreign.len());
        Ok(Response::new(ReportSessionsResponse {}))
    }

    async fn oauth(
        &self,
        request: Request<OAuthRequest>,
    ) -> Result<Response<OAuthResponse>, Status> {
        let node = auth::authenticate(&self.inner.store, &request, Purpose::Call).await?;
        if let Err(wait) = self.inner.oauth_buckets.take(&node.id) {
            return Err(Status::resource_exhausted(format!(
                "node {} relays OAuth requests faster than {OAUTH_RATE_PER_SEC} per second; retry in {} ms",
                node.id,
                wait.as_millis()
            )));
        }
        let req = request.into_inner();
        let reply = match oauth_bounds(&req) {
            Ok(()) => {
                let form: Vec<(String, String)> =
                    req.form.into_iter().map(|f| (f.name, f.value)).collect();
                self.inner
                    .oauth
                    .handle(&req.api_id, &req.endpoint, &form, &req.authorization)
                    .await
            }
            Err(why) => crate::oauth::OAuthReply {
                status: 400,
                body: serde_json::json!({"error": "invalid_request", "error_description": why}),
            },
        };
        let body = serde_json::to_vec(&reply.body)
            .map_err(|_| Status::internal("OAuth answer not serialisable"))?;
        Ok(Response::new(OAuthResponse {
            status: u32::from(reply.status),
            body,
        }))
    }
}

/// Relayed OAuth requests a node may make per second, and its burst (docs/sync.md).
const OAUTH_RATE_PER_SEC: f64 = 2000.0;
const OAUTH_BURST: u32 = 4000;
/// Bounds of a relayed OAuth request (the edge bounds the body it reads too).
const OAUTH_MAX_FIELDS: usize = 64;
const OAUTH_MAX_NAME: usize = 64;
const OAUTH_MAX_VALUE: usize = 8 * 1024;
const OAUTH_MAX_AUTHORIZATION: usize = 8 * 1024;
const OAUTH_MAX_API_ID: usize = 255;

fn oauth_bounds(req: &OAuthRequest) -> Result<(), &'static str> {
    if req.api_id.is_empty() || req.api_id.len() > OAUTH_MAX_API_ID {
        return Err("api_id must be 1 to 255 bytes");
    }
    if !crate::oauth::ENDPOINTS.contains(&req.endpoint.as_str()) {
        return Err("unknown OAuth endpoint");
    }
    if req.authorization.len() > OAUTH_MAX_AUTHORIZATION {
        return Err("the Authorization header is too long");
    }
    if req.form.len() > OAUTH_MAX_FIELDS {
        return Err("too many parameters");
    }
    if req
        .form
        .iter()
        .any(|f| f.name.len() > OAUTH_MAX_NAME || f.value.len() > OAUTH_MAX_VALUE)
    {
        return Err("a parameter is too long");
    }
    Ok(())
}

#[cfg(test)]
mod oauth_bounds_tests {
    use portcullis_proto::sync::FormField;

    use super::*;

    fn req(endpoint: &str, fields: usize, value: usize) -> OAuthRequest {
        OAuthRequest {
            api_id: "api".into(),
            endpoint: endpoint.into(),
            form: (0..fields)
                .map(|i| FormField {
                    name: format!("f{i}"),
                    value: "v".repeat(value),
                })
                .collect(),
            authorization: String::new(),
        }
    }

    #[test]
    fn relayed_requests_are_bounded() {
        assert!(oauth_bounds(&req("token", 64, OAUTH_MAX_VALUE)).is_ok());
        assert!(oauth_bounds(&req("token", 65, 1)).is_err());
        assert!(oauth_bounds(&req("token", 1, OAUTH_MAX_VALUE + 1)).is_err());
        assert!(
            oauth_bounds(&req("authorize", 1, 1)).is_err(),
            "not an endpoint"
        );
        let mut r = req("revoke", 1, 1);
        r.authorization = "x".repeat(OAUTH_MAX_AUTHORIZATION + 1);
        assert!(oauth_bounds(&r).is_err());
        let mut r = req("revoke_all", 1, 1);
        r.api_id = "a".repeat(256);
        assert!(oauth_bounds(&r).is_err());
        r.api_id = String::new();
        assert!(oauth_bounds(&r).is_err());
        let mut r = req("authorize-client", 1, 1);
        r.form[0].name = "n".repeat(65);
        assert!(oauth_bounds(&r).is_err());
    }
}
