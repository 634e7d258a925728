//! Wiring: migrations, CA, tailer, then the management API and the sync server on their
//! listeners. Everything runs on the caller's runtime, so a test can run several control planes
//! in one process and stop one by dropping its runtime.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_proto::sync::sync_server::SyncServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::Config;
use crate::api::{self, ApiState};
use crate::ca::{CaError, CaSecrets, NodeCa};
use crate::metrics::Metrics;
use crate::store::changelog::Retention;
use crate::store::{Store, StoreError};
use crate::sync::{self, SyncService, Tailer, TailerError};

/// Largest message the sync server accepts from a node (ACKs and NACKs are small).
const MAX_INBOUND_MESSAGE: usize = 1024 * 1024;

/// Why the control plane could not start. Each message names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("node CA: {0}")]
    Ca(#[from] CaError),
    #[error(transparent)]
    WeakSecret(#[from] crate::config::WeakSecret),
    #[error("management API TLS: {0}")]
    ApiTls(#[from] api::https::HttpsError),
    #[error("sync TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    Tailer(#[from] TailerError),
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Why a running control plane stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("management API server failed: {0}")]
    Api(std::io::Error),
    #[error("sync server failed: {0}")]
    Sync(tonic::transport::Error),
    #[error("a server task ended unexpectedly")]
    Task(#[from] tokio::task::JoinError),
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    pub api_addr: SocketAddr,
    pub sync_addr: SocketAddr,
    /// `sha256:<hex>` pin of the node CA, for `--ca-hash`.
    pub ca_hash: String,
    api_task: JoinHandle<Result<(), std::io::Error>>,
    sync_task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl ControlPlane {
    /// Runs until one of the servers fails.
    pub async fn wait(self) -> Result<(), RunError> {
        let Self {
            api_task,
            sync_task,
            ..
        } = self;
        tokio::select! {
            r = api_task => r?.map_err(RunError::Api),
            r = sync_task => r?.map_err(RunError::Sync),
        }
    }
}

/// Keeps the change log within the retention rules; every replica runs it, which is harmless.
async fn compact_periodically(store: Store, retention: Retention) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        match store.compact_change_log(retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "change log compacted"),
            Err(e) => tracing::warn!(error = %e, "change log compaction failed"),
        }
    }
}

/// Deletes keys past their lifetime about once a second; each deletion reaches every edge as a
/// session event. Replicas racing on the same rows skip each other's (SKIP LOCKED).
async fn sweep_keys_periodically(store: Store) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match store.sweep_expired_keys().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "keys deleted by their lifetime"),
            Err(e) => tracing::warn!(error = %e, "key lifetime sweep failed"),
        }
        // Expired OAuth codes and refresh tokens are refused anyway; this only frees rows.
        match store.sweep_expired_oauth().await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "expired OAuth codes and refresh tokens deleted"),
            Err(e) => tracing::warn!(error = %e, "OAuth lifetime sweep failed"),
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// Starts every part of the control plane and returns once its listeners are bound.
pub async fn start(config: Config) -> Result<ControlPlane, StartError> {
    config.check_secrets()?;
    let api_tls = match &config.api_tls {
        Some(t) => Some(api::https::acceptor(&t.cert, &t.key)?),
        None => None,
    };
    let store = Store::connect(&config.database_url, config.max_db_connections).await?;
    store.migrate().await?;
    let metrics = Arc::new(Metrics::new());
    let ca_secrets = CaSecrets {
        current: config.ca_secret.as_deref().unwrap_or(&config.admin_secret),
        previous: config.previous_ca_secret.as_deref(),
        legacy_shared: &config.encryption_secret,
    };
    let ca = Arc::new(NodeCa::load_or_create(&store, ca_secrets).await?);
    let (chain, key) = ca.issue_server_certificate(&config.sync_names)?;
    let tls = Arc::new(sync::server_config(ca.certificate_der(), chain, key)?);
    let tailer = Tailer::start(store.clone(), metrics.clone()).await?;

    let retention = Retention {
        node_hold_max_secs: i64::try_from(config.sync_limits.retention_node_hold.as_secs())
            .unwrap_or(i64::MAX),
        ..Retention::default()
    };
    tokio::spawn(compact_periodically(store.clone(), retention));
    tokio::spawn(sweep_keys_periodically(store.clone()));

    let api_listener = bind("management API", config.api_listen).await?;
    let sync_listener = bind("sync server", config.sync_listen).await?;
    let local = |l: &TcpListener, what, addr| {
        l.local_addr()
            .map_err(|source| StartError::Bind { what, addr, source })
    };
    let api_addr = local(&api_listener, "management API", config.api_listen)?;
    let sync_addr = local(&sync_listener, "sync server", config.sync_listen)?;

    let stored_secrets = portcullis_proto::sealed_field::key(&config.encryption_secret);
    let oauth = Arc::new(crate::oauth::OAuthServer::new(
        store.clone(),
        stored_secrets.clone(),
        config.lifetime_rules.oauth,
    ));
    let ca_info = ca.info();
    let app = api::router(ApiState {
        store: store.clone(),
        admin_secret: Arc::from(config.admin_secret.as_str()),
        ca: ca_info.clone(),
        metrics: metrics.clone(),
        lifetime_rules: config.lifetime_rules,
        allow_master_keys: config.allow_master_keys,
        stored_secrets,
        certificate_keys: portcullis_proto::sealed_field::certificate_key(
            &config.encryption_secret,
        ),
        oauth: oauth.clone(),
    });
    let api_task = match api_tls {
        Some(acceptor) => {
            let listener =
                api::https::TlsListener::new(api_listener, acceptor).map_err(|source| {
                    StartError::Bind {
                        what: "management API",
                        addr: config.api_listen,
                        source,
                    }
                })?;
            tokio::spawn(async move { axum::serve(listener, app).await })
        }
        None => tokio::spawn(async move { axum::serve(api_listener, app).await }),
    };

    let metrics_for_sync = metrics.clone();
    let service = SyncService::new(
        store,
        ca,
        tailer,
        metrics,
        config.replica_name.clone(),
        config.node_cert_ttl,
        config.sync_limits.clone(),
        oauth,
    );
    let limits = &config.sync_limits;
    let incoming = sync::accept_tls(sync_listener, tls, limits, metrics_for_sync);
    let sync_task = tokio::spawn(
        tonic::transport::Server::builder()
            // Dead peers are noticed in about half a minute instead of at the next write.
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .max_concurrent_streams(limits.max_streams_per_connection)
            .http2_max_header_list_size(limits.max_header_list_bytes)
            .http2_max_pending_accept_reset_streams(Some(64))
            // Unary calls only: a Watch answers at once and streams its body outside the timeout.
            .timeout(limits.request_timeout)
            .add_service(SyncServer::new(service).max_decoding_message_size(MAX_INBOUND_MESSAGE))
            .serve_with_incoming(incoming),
    );
    tracing::info!(%api_addr, %sync_addr, ca_hash = %ca_info.ca_hash, replica = %config.replica_name, "control plane started");
    Ok(ControlPlane {
        api_addr,
        sync_addr,
        ca_hash: ca_info.ca_hash.clone(),
        api_task,
        sync_task,
    })
}
