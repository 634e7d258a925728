//! Wiring: state dir, listeners, proxy, admin port and sync client, all on the caller's runtime
//! (a test can run several gateways in one process and stop one by dropping its runtime).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::applied::AppliedConfig;
use crate::config::Config;
use crate::proxy::{self, Proxy};
use crate::shared::{Shared, SyncStats};
use crate::sync::identity::StateDir;
use crate::sync::{SyncClient, SyncFatal};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("at least one --control-plane URL is needed")]
    NoControlPlane,
    #[error("--ca-hash must look like sha256:<64 hex digits>, got {0:?}")]
    CaHash(String),
    #[error("no node identity in the state dir and no --bootstrap-token to join with")]
    NoToken,
    #[error("state dir {path}: {reason}")]
    StateDir { path: String, reason: String },
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS client configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("--redis-url: {0}")]
    Redis(String),
    #[error("--access-log: {0}")]
    AccessLog(std::io::Error),
    #[error("cannot start the proxy workers: {0}")]
    Workers(std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("sync: {0}")]
    Sync(#[from] SyncFatal),
    #[error("{what} server failed: {source}")]
    Server {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("a gateway task ended unexpectedly: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running gateway.
pub struct Gateway {
    proxy_addr: SocketAddr,
    admin_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    proxy_task: JoinHandle<std::io::Result<()>>,
    /// The HTTPS listener and the certificate-expiry watch (docs/certificates.md).
    tls_task: Option<JoinHandle<std::io::Result<()>>>,
    expiry_task: JoinHandle<()>,
    admin_task: JoinHandle<std::io::Result<()>>,
    sync_task: JoinHandle<Result<(), SyncFatal>>,
    /// Sends sessions made here to the control plane (`ReportSessions`).
    report_task: JoinHandle<()>,
}

impl Gateway {
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Where the HTTPS listener is bound, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn node_id(&self) -> Option<String> {
        self.shared.node_id.lock().ok().and_then(|g| g.clone())
    }

    /// The state the gateway shares between its tasks (routing table, readiness, sync stats).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn sync_stats(&self) -> &SyncStats {
        &self.shared.stats
    }

    pub fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    /// True once the sync task has given up (wrong CA pin, refused token...).
    pub fn sync_failed(&self) -> bool {
        self.sync_task.is_finished()
    }

    /// Runs until a server fails or the sync task gives up for good. A sync failure is
    /// reported while the proxy keeps serving until the caller drops the gateway.
    pub async fn wait(mut self) -> Result<(), RunError> {
        let tls = async {
            match self.tls_task.as_mut() {
                Some(t) => t.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = &mut self.proxy_task => r?.map_err(|source| RunError::Server { what: "proxy", source }),
            r = tls => r?.map_err(|source| RunError::Server { what: "TLS proxy", source }),
            r = &mut self.admin_task => r?.map_err(|source| RunError::Server { what: "admin", source }),
            r = &mut self.sync_task => Ok(r??),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.proxy_task.abort();
        if let Some(t) = &self.tls_task {
            t.abort();
        }
        self.expiry_task.abort();
        self.admin_task.abort();
        self.sync_task.abort();
        self.report_task.abort();
    }
}

/// Connects the session directory to the regional Redis. An unreachable Redis at start is not
/// fatal: sessions come from the control plane until it answers.
async fn connect_redis(
    shared: &Shared,
    url: &str,
    prefix: &str,
    ca_pem: Option<Vec<u8>>,
) -> Result<(), StartError> {
    let link = crate::redis_link::RedisLink::open(url, prefix, ca_pem)
        .await
        .map_err(|e| StartError::Redis(e.to_string()))?;
    shared.idp().set_redis(link.clone());
    shared.split_tokens.set_redis(link.clone());
    shared.upstream_tokens.set_redis(link.clone());
    shared.sessions.set_redis(link);
    Ok(())
}

fn valid_ca_hash(h: &str) -> bool {
    h.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let err = |source| StartError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// Starts the gateway: loads the state dir (serving its configuration at once), binds the
/// listeners and starts syncing. Returns once the listeners are bound.
pub async fn start(config: Config) -> Result<Gateway, StartError> {
    if config.control_planes.is_empty() {
        return Err(StartError::NoControlPlane);
    }
    if !valid_ca_hash(&config.ca_hash) {
        return Err(StartError::CaHash(config.ca_hash.clone()));
    }
    let shared = Shared::new();
    shared.set_idp(crate::idp::Idp::new(config.idp.clone()));
    shared.set_oauth(config.oauth.clone());
    shared.set_plugins(crate::plugins::Plugins::new(config.plugins.clone()));
    shared.idp().set_secret(&config.encryption_secret);
    shared.split_tokens.set_secret(&config.encryption_secret);
    shared.upstream_tokens.set_secret(&config.encryption_secret);
    // Before any route is built, the state dir's included.
    crate::auth::token::set_stored_secret_key(&config.encryption_secret);
    crate::certs::set_encryption_secret(&config.encryption_secret);
    let state_err = |path: &std::path::Path, reason: String| StartError::StateDir {
        path: path.display().to_string(),
        reason,
    };
    let state_dir = match &config.state_dir {
        Some(p) => Some(
            StateDir::open(p, &config.encryption_secret)
                .map_err(|e| state_err(p, e.to_string()))?,
        ),
        None => None,
    };
    let mut identity = None;
    let mut applied = None;
    if let (Some(dir), Some(path)) = (&state_dir, &config.state_dir) {
        identity = dir.load_identity().map_err(|e| state_err(path, e))?;
        if let Some(id) = &identity {
            *shared.node_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.node_id.clone());
            match dir.load_config(&config.encryption_secret, &id.group) {
                Ok(Some(snapshot)) => match AppliedConfig::from_snapshot(&[snapshot], &id.group) {
                    Ok(c) => {
                        tracing::info!(
                            revision = c.revision,
                            resources = c.len(),
                            "serving the configuration from the state dir"
                        );
                        shared.install(c.routing_table(), c.revision);
                        applied = Some(c);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring the configuration in the state dir")
                    }
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "ignoring the configuration in the state dir"),
            }
        }
    }
    if identity.is_none() && config.bootstrap_token.is_none() {
        return Err(StartError::NoToken);
    }

    if !config.local_session_cache {
        shared.sessions.disable_local_cache();
    }
    shared
        .sessions
        .set_cache_entries(config.session_cache_entries);
    shared.sessions.allow_master_keys(config.allow_master_keys);
    shared.sessions.set_secret(&config.encryption_secret);
    if let Some(url) = &config.redis_url {
        connect_redis(
            &shared,
            url,
            &config.redis_prefix,
            config.redis_ca_pem.clone(),
        )
        .await?;
    }
    let (proxy_listener, proxy_addr) = bind("proxy", config.listen).await?;
    let (admin_listener, admin_addr) = bind("admin port", config.admin_listen).await?;
    let tls_listener = match config.tls_listen {
        Some(addr) => Some(bind("TLS proxy", addr).await?),
        None => None,
    };
    if let Some(export) = &config.tracing {
        let mut export = export.clone();
        export.instance = config.node_name.clone();
        shared.set_tracer(Arc::new(crate::trace::Tracer::start(export)));
    }
    let access_log = match &config.access_log {
        Some(target) => {
            Some(crate::access_log::AccessLog::start(target).map_err(StartError::AccessLog)?)
        }
        None => None,
    };
    let proxy = Arc::new(
        Proxy::new(
            shared.clone(),
            config.upstream_timeout,
            config.client_limits.clone(),
        )?
        .with_upstream_tls(config.upstream_tls.clone())
        .with_limiter(crate::limits::Limiter::with_quota_lease(
            config.rate_limiter,
            config.quota_lease,
        ))
        .with_access_log(access_log)
        .with_workers(config.proxy_workers),
    );
    let tls_addr = tls_listener.as_ref().map(|(_, a)| *a);
    let (proxy_task, tls_task) = if config.proxy_workers == 0 {
        let tls_task = tls_listener.map(|(listener, _)| {
            tokio::spawn(crate::tls::serve(
                listener,
                proxy.clone(),
                shared.clone(),
                config.tls_handshake_timeout,
            ))
        });
        (tokio::spawn(proxy::serve(proxy_listener, proxy)), tls_task)
    } else {
        let listeners = proxy::workers::Listeners {
            plain: proxy_listener,
            tls: tls_listener.map(|(l, _)| l),
            handshake_timeout: config.tls_handshake_timeout,
        };
        let mut workers =
            proxy::workers::Workers::start(config.proxy_workers, listeners, proxy, shared.clone())
                .map_err(StartError::Workers)?;
        let task = tokio::spawn(async move {
            let (what, e) = workers.failed().await;
            Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
        });
        (task, None)
    };
    let expiry_task = tokio::spawn(crate::tls::expiry::watch(
        shared.clone(),
        config.certificate_expiry_warning,
    ));
    let admin_task = tokio::spawn(crate::admin::serve(admin_listener, shared.clone()));
    let sync = SyncClient::new(config, shared.clone(), state_dir, identity, applied);
    let sync_task = tokio::spawn(sync.run());
    let report_task = tokio::spawn({
        let shared = shared.clone();
        async move { shared.sessions.report_loop().await }
    });
    tracing::info!(%proxy_addr, ?tls_addr, %admin_addr, "gateway started");
    Ok(Gateway {
        proxy_addr,
        admin_addr,
        tls_addr,
        shared,
        proxy_task,
        tls_task,
        expiry_task,
        admin_task,
        sync_task,
        report_task,
    })
}
