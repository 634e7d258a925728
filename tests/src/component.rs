//! A control plane or gateway running on its own runtime and thread. Dropping (or `stop`)
//! drops that runtime: every task ends and every socket closes, as when a process dies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use portcullis_data_plane::shared::Shared;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::stack::{ADMIN_SECRET, ENCRYPTION_SECRET};

struct Runner {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Runner {
    /// Runs `start` on a fresh runtime in a new thread; returns what it reports once started.
    async fn spawn<C, I, F, Fut>(start: F) -> Result<(Self, I), String>
    where
        C: 'static,
        I: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(C, I), String>> + 'static,
    {
        let (info_tx, info_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = info_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                match start().await {
                    Ok((component, info)) => {
                        let _ = info_tx.send(Ok(info));
                        let _ = stop_rx.await;
                        drop(component);
                    }
                    Err(e) => {
                        let _ = info_tx.send(Err(e));
                    }
                }
            });
            rt.shutdown_timeout(Duration::from_secs(5));
        });
        let info = info_rx
            .await
            .map_err(|_| "component thread died while starting".to_owned())??;
        Ok((
            Self {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            info,
        ))
    }

    fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How to start a control plane; unset fields take the test defaults.
#[derive(Clone, Debug, Default)]
pub struct CpOptions {
    pub api_listen: Option<SocketAddr>,
    pub sync_listen: Option<SocketAddr>,
    pub replica: Option<String>,
    pub node_cert_ttl: Option<Duration>,
    /// Sync limits (join rate, snapshot burst, ...); `None`: the control plane's defaults.
    pub sync_limits: Option<portcullis_control_plane::sync::SyncLimits>,
    /// `--allow-master-keys`.
    pub allow_master_keys: bool,
    /// `--ca-secret` and `--previous-ca-secret`.
    pub ca_secret: Option<String>,
    pub previous_ca_secret: Option<String>,
    /// `--api-tls-cert/--api-tls-key`.
    pub api_tls: Option<portcullis_control_plane::config::ApiTls>,
    /// `--oauth-code-ttl`, `--oauth-token-ttl`, `--oauth-refresh-ttl` (`None`: the defaults).
    pub oauth_code_ttl: Option<Duration>,
    pub oauth_token_ttl: Option<Duration>,
    pub oauth_refresh_ttl: Option<Duration>,
}

/// The `--oauth-*-ttl` flags of `opts`, the defaults where unset.
fn oauth_lifetimes(opts: &CpOptions) -> portcullis_control_plane::oauth::OAuthLifetimes {
    let d = portcullis_control_plane::oauth::OAuthLifetimes::default();
    let secs = |v: Option<Duration>, default: i64| {
        v.map_or(default, |v| i64::try_from(v.as_secs()).unwrap_or(i64::MAX))
    };
    portcullis_control_plane::oauth::OAuthLifetimes {
        code_secs: secs(opts.oauth_code_ttl, d.code_secs),
        token_secs: secs(opts.oauth_token_ttl, d.token_secs),
        refresh_secs: secs(opts.oauth_refresh_ttl, d.refresh_secs),
    }
}

/// A control plane with a management API client.
pub struct Cp {
    pub api_addr: SocketAddr,
    pub sync_addr: SocketAddr,
    pub ca_hash: String,
    pub db_url: String,
    http: reqwest::Client,
    runner: Runner,
}

impl Cp {
    pub async fn start(db_url: &str) -> Self {
        Self::start_on(
            db_url,
            "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
        )
        .await
        .expect("control plane starts")
    }

    /// Starts on given addresses (a restart reuses the previous ones).
    pub async fn start_on(
        db_url: &str,
        api_listen: SocketAddr,
        sync_listen: SocketAddr,
    ) -> Result<Self, String> {
        Self::start_with(
            db_url,
            CpOptions {
                api_listen: Some(api_listen),
                sync_listen: Some(sync_listen),
                ..Default::default()
            },
        )
        .await
    }

    /// One of several replicas on the same database, named `name` in the node registry.
    pub async fn replica(db_url: &str, name: &str) -> Self {
        Self::start_with(
            db_url,
            CpOptions {
                replica: Some(name.into()),
                ..Default::default()
            },
        )
        .await
        .expect("control plane starts")
    }

    pub async fn start_with(db_url: &str, opts: CpOptions) -> Result<Self, String> {
        crate::init();
        let any = || "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!());
        let api_listen = opts.api_listen.unwrap_or_else(any);
        let sync_listen = opts.sync_listen.unwrap_or_else(any);
        let oauth = oauth_lifetimes(&opts);
        let config = portcullis_control_plane::Config {
            api_listen,
            sync_listen,
            sync_names: vec!["localhost".into(), "127.0.0.1".into()],
            database_url: db_url.to_owned(),
            admin_secret: ADMIN_SECRET.into(),
            encryption_secret: ENCRYPTION_SECRET.into(),
            replica_name: opts.replica.unwrap_or_else(|| "cp-test".into()),
            node_cert_ttl: opts.node_cert_ttl.unwrap_or(Duration::from_secs(3600)),
            max_db_connections: 8,
            lifetime_rules: portcullis_control_plane::lifetime::LifetimeRules {
                oauth,
                ..Default::default()
            },
            sync_limits: opts.sync_limits.unwrap_or_default(),
            allow_master_keys: opts.allow_master_keys,
            ca_secret: opts.ca_secret,
            previous_ca_secret: opts.previous_ca_secret,
            api_tls: opts.api_tls,
        };
        let (runner, (api_addr, sync_addr, ca_hash)) = Runner::spawn(move || async move {
            let cp = portcullis_control_plane::start(config)
                .await
                .map_err(|e| e.to_string())?;
            let info = (cp.api_addr, cp.sync_addr, cp.ca_hash.clone());
            Ok((cp, info))
        })
        .await?;
        Ok(Self {
            api_addr,
            sync_addr,
            ca_hash,
            db_url: db_url.to_owned(),
            http: reqwest::Client::new(),
            runner,
        })
    }

    pub fn sync_url(&self) -> url::Url {
        url::Url::parse(&format!("https://127.0.0.1:{}", self.sync_addr.port()))
            .unwrap_or_else(|_| unreachable!())
    }

    /// Stops the control plane, as if its process died.
    pub fn stop(mut self) {
        self.runner.stop();
    }

    /// Calls the management API with the admin secret; returns status and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        self.call_raw(
            method,
            path,
            body.map(|b| b.to_string()),
            Some(ADMIN_SECRET),
        )
        .await
    }

    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        secret: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.api_addr));
        if let Some(s) = secret {
            req = req.header("X-Tyk-Authorization", s);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let resp = req.send().await.expect("management API reachable");
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn create_api(&self, def: &Value) -> Value {
        let (status, body) = self.call(Method::POST, "/tyk/apis", Some(def)).await;
        assert_eq!(status, StatusCode::OK, "create API: {body}");
        body
    }

    /// A one-use bootstrap token for `group` (the default).
    pub async fn token(&self, group: &str) -> String {
        self.token_for(group, 1).await
    }

    /// A bootstrap token that can join `uses` nodes.
    pub async fn token_for(&self, group: &str, uses: i32) -> String {
        let (status, body) = self
            .call(
                Method::POST,
                "/portcullis/bootstrap-tokens",
                Some(&json!({"group": group, "max_uses": uses})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "create token: {body}");
        body["token"].as_str().expect("token in answer").to_owned()
    }
}

/// How to start a gateway.
#[derive(Clone, Debug, Default)]
pub struct DpOptions {
    pub token: Option<String>,
    pub ca_hash: Option<String>,
    pub group: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub upstream_timeout: Option<Duration>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    pub no_local_session_cache: bool,
    /// PEM CA for a `rediss://` Redis (`--redis-ca-cert`).
    pub redis_ca_pem: Option<Vec<u8>>,
    /// `--session-cache-entries`; `None`: the default.
    pub session_cache_entries: Option<usize>,
    /// `--allow-master-keys`.
    pub allow_master_keys: bool,
    /// Control planes to use instead of the one passed to `start`.
    pub control_planes: Vec<url::Url>,
    /// Proxy client timeouts and limits (default: the gateway's defaults).
    pub client_limits: Option<portcullis_data_plane::proxy::ClientLimits>,
    /// `--tls-listen` (default: 127.0.0.1:0, so parallel tests do not collide).
    pub tls_listen: Option<SocketAddr>,
    /// `--tls-handshake-timeout` (default 10 s).
    pub tls_handshake_timeout: Option<Duration>,
    /// `--upstream-certificate` / `--pinned-public-key` (default: none).
    pub upstream_tls: portcullis_data_plane::proxy::upstream_tls::GatewayTls,
    /// `--oauth-portal-secret` (default: none, so `{listen_path}tyk/oauth/authorize-client` is 404).
    pub oauth_portal_secret: Option<String>,
    /// `--oauth-error-status-code`: a status, or `rfc` (default: the gateway's, 403).
    pub oauth_error_status_code: Option<String>,
    /// `--coprocess-grpc-server`, `--coprocess-timeout`, `--middleware-path` (default: none).
    pub plugins: portcullis_data_plane::plugins::PluginConfig,
    /// `--rate-limiter` (default: the gateway's, gcra).
    pub rate_limiter: Option<portcullis_data_plane::limits::RateLimiterKind>,
    /// `--quota-lease` (default 0: exact).
    pub quota_lease: u32,
    /// `--proxy-workers` (default 0: the test's runtime serves the proxy).
    pub proxy_workers: usize,
    /// `--access-log`.
    pub access_log: Option<portcullis_data_plane::access_log::Target>,
    /// `--otlp-endpoint` and friends.
    pub tracing: Option<portcullis_data_plane::trace::ExportConfig>,
}

/// A gateway.
pub struct Dp {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The HTTPS listener (`--tls-listen`).
    pub tls_addr: SocketAddr,
    pub shared: Arc<Shared>,
    http: reqwest::Client,
    runner: Runner,
}

impl Dp {
    pub async fn start(cp: &Cp, opts: DpOptions) -> Result<Self, String> {
        Self::start_at(cp.sync_url(), cp.ca_hash.clone(), opts).await
    }

    /// Starts a gateway for a control plane that may not be running.
    pub async fn start_at(
        sync_url: url::Url,
        ca_hash: String,
        opts: DpOptions,
    ) -> Result<Self, String> {
        crate::init();
        let config = portcullis_data_plane::Config {
            listen: opts
                .listen
                .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!())),
            admin_listen: "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()),
            tls_listen: Some(
                opts.tls_listen
                    .unwrap_or_else(|| "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!())),
            ),
            tls_handshake_timeout: opts
                .tls_handshake_timeout
                .unwrap_or(Duration::from_secs(10)),
            certificate_expiry_warning: Duration::from_secs(30 * 86_400),
            control_planes: if opts.control_planes.is_empty() {
                vec![sync_url]
            } else {
                opts.control_planes
            },
            bootstrap_token: opts.token,
            ca_hash: opts.ca_hash.unwrap_or(ca_hash),
            group: opts.group,
            node_name: "edge-e2e".into(),
            state_dir: opts.state_dir,
            encryption_secret: ENCRYPTION_SECRET.into(),
            upstream_timeout: opts.upstream_timeout.unwrap_or(Duration::from_secs(10)),
            redis_url: opts.redis_url,
            redis_prefix: opts.redis_prefix.unwrap_or_else(|| "portcullis:".into()),
            rate_limiter: opts.rate_limiter.unwrap_or_default(),
            quota_lease: opts.quota_lease,
            proxy_workers: opts.proxy_workers,
            access_log: opts.access_log.clone(),
            tracing: opts.tracing.clone(),
            local_session_cache: !opts.no_local_session_cache,
            redis_ca_pem: opts.redis_ca_pem,
            session_cache_entries: opts
                .session_cache_entries
                .unwrap_or(portcullis_data_plane::sessions::DEFAULT_CACHE_ENTRIES),
            allow_master_keys: opts.allow_master_keys,
            client_limits: opts.client_limits.unwrap_or_default(),
            upstream_tls: opts.upstream_tls,
            idp: portcullis_data_plane::idp::IdpConfig::default(),
            oauth: portcullis_data_plane::oauth::OAuthConfig::default()
                .with_error_status(match opts.oauth_error_status_code.as_deref() {
                    Some(v) => portcullis_data_plane::oauth::ErrorStatus::parse(v)?,
                    None => portcullis_data_plane::oauth::ErrorStatus::default(),
                })
                .with_portal_secret(opts.oauth_portal_secret.as_deref()),
            plugins: opts.plugins,
        };
        let (runner, (proxy_addr, admin_addr, tls_addr, shared)) =
            Runner::spawn(move || async move {
                let gw = portcullis_data_plane::start(config)
                    .await
                    .map_err(|e| e.to_string())?;
                let tls_addr = gw.tls_addr().ok_or("the gateway has no TLS listener")?;
                let info = (gw.proxy_addr(), gw.admin_addr(), tls_addr, gw.shared());
                Ok((gw, info))
            })
            .await?;
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            proxy_addr,
            admin_addr,
            tls_addr,
            shared,
            http,
            runner,
        })
    }

    /// A gateway joined to `cp` in the default group, with no Redis and no state dir.
    pub async fn joined(cp: &Cp) -> Self {
        Self::start(
            cp,
            DpOptions {
                token: Some(cp.token("default").await),
                ..Default::default()
            },
        )
        .await
        .expect("gateway starts")
    }

    /// A gateway in its own "region": its own key prefix in the shared test Redis.
    pub async fn regional(cp: &Cp, region: &str) -> Self {
        let prefix = format!("e2e:{}:{region}:", uuid::Uuid::new_v4().simple());
        Self::start(
            cp,
            DpOptions {
                token: Some(cp.token("default").await),
                redis_url: Some(crate::stack::redis_url()),
                redis_prefix: Some(prefix),
                ..Default::default()
            },
        )
        .await
        .expect("gateway starts")
    }

    pub fn stop(mut self) {
        self.runner.stop();
    }

    /// Stops the gateway once its state dir holds a configuration (written as it applies one).
    pub async fn stop_once_saved(self, state_dir: &std::path::Path) {
        crate::eventually(Duration::from_secs(5), "configuration saved", || async {
            state_dir.join("config.bin").exists().then_some(())
        })
        .await;
        self.stop();
    }

    /// Restarts a gateway from its state dir alone: no token.
    pub async fn from_state(cp: &Cp, state_dir: &std::path::Path) -> Self {
        Self::start(
            cp,
            DpOptions {
                state_dir: Some(state_dir.to_owned()),
                ..Default::default()
            },
        )
        .await
        .expect("gateway starts")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy_addr)
    }

    /// `https://127.0.0.1:<tls port><path>` (connect there with SNI of your choice).
    pub fn tls_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.tls_addr)
    }

    pub fn revision(&self) -> i64 {
        self.shared.stats.applied_revision.load(Ordering::Acquire)
    }

    /// Revision last written to the state dir: what a restart would serve.
    pub fn saved_revision(&self) -> i64 {
        self.shared.stats.state_dir_revision.load(Ordering::Relaxed)
    }

    pub fn snapshots(&self) -> u64 {
        self.shared.stats.snapshots.load(Ordering::Relaxed)
    }

    pub fn renewals(&self) -> u64 {
        self.shared.stats.renewals.load(Ordering::Relaxed)
    }

    /// Watch streams opened so far.
    pub fn connects(&self) -> u64 {
        self.shared.stats.connects.load(Ordering::Relaxed)
    }

    pub fn connected(&self) -> bool {
        self.shared.stats.connected.load(Ordering::Acquire)
    }

    pub fn node_id(&self) -> Option<String> {
        self.shared.node_id.lock().ok().and_then(|g| g.clone())
    }

    pub fn last_error(&self) -> Option<String> {
        self.shared.stats.last_error()
    }

    /// GET through the proxy: status and body text.
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("gateway reachable");
        let status = resp.status();
        (status, resp.text().await.unwrap_or_default())
    }

    pub async fn admin(&self, path: &str) -> StatusCode {
        self.http
            .get(format!("http://{}{path}", self.admin_addr))
            .send()
            .await
            .expect("admin port reachable")
            .status()
    }

    /// Waits until the gateway serves at least `revision`.
    pub async fn wait_for_revision(&self, revision: i64) {
        crate::eventually(
            Duration::from_secs(20),
            &format!("gateway at revision {revision}"),
            || async { (self.revision() >= revision).then_some(()) },
        )
        .await;
    }

    /// Waits until `path` answers `status` through the proxy.
    pub async fn wait_for_status(&self, path: &str, status: u16) -> String {
        crate::eventually(
            Duration::from_secs(20),
            &format!("{path} answering {status}"),
            || async {
                let (s, body) = self.get(path).await;
                (s.as_u16() == status).then_some(body)
            },
        )
        .await
    }
}

/// A keyless API definition for tests.
pub fn keyless_api(id: &str, listen_path: &str, target: &str) -> Value {
    json!({
        "name": id, "api_id": id, "use_keyless": true, "active": true,
        "proxy": {"listen_path": listen_path, "target_url": target, "strip_listen_path": true},
        "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
    })
}
