//! The link to the regional Redis. A call that fails or times out marks the link failed; a
//! background task then builds a fresh connection (at most one attempt in flight, one per
//! second), so a restarted Redis is picked up again without waiting on the client library's
//! own reconnection, and a Redis that was down when the gateway started is used once it is up.
//!
//! `rediss://` URLs speak TLS (rustls, the same stack as the rest of the gateway), checked
//! against `--redis-ca-cert` when given, otherwise the system roots.
//!
//! Beyond one server (docs/redis.md): a Redis Cluster (`redis+cluster://` / `rediss+cluster://`
//! with its seed nodes), where every key one script touches carries the same hash tag, and a
//! Sentinel-managed primary (`redis+sentinel://`), looked up again at every reconnection so a
//! failover is followed. Neither retries a command on its own: a command whose answer was lost
//! may have run, and running it again would count a request twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::runtime::Handle;

/// A Redis call slower than this counts as an outage for this request.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// Where the link connects, from the URL's scheme.
enum Source {
    Single(redis::Client),
    Cluster(ClusterClient),
    /// Locked only while the primary is looked up (reconnections, one at a time).
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// A connection to the region's Redis, whatever its topology. Cheap to clone: each is a handle
/// on one multiplexed connection (per node, for a cluster).
///
/// The client library drives each connection, and opens a replacement after an error, in a
/// task on the runtime that makes the call. Called from a proxy worker (docs/architecture.md
/// "Proxy workers"), that would move the region's one connection onto a busy worker thread for
/// every other caller, and a worker's stop would drop it; so a call from a worker runs on the
/// runtime that opened the link (`home`) instead.
#[derive(Clone)]
pub struct Conn {
    inner: Inner,
    home: Option<Handle>,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// What a call made here must run on instead: the link's runtime, when this is a worker.
    fn on_home(&self) -> Option<(Inner, Handle)> {
        match &self.home {
            Some(h) if crate::proxy::workers::is_worker() => Some((self.inner.clone(), h.clone())),
            _ => None,
        }
    }
}

/// A call running on the link's runtime for a caller on a worker. Dropping it (the caller's
/// timeout, the request gone) aborts the call, as dropping the call itself would: a command
/// still waiting for a connection is then never sent late.
struct OnHome<T>(tokio::task::JoinHandle<redis::RedisResult<T>>);

impl<T> Future for OnHome<T> {
    type Output = redis::RedisResult<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| {
                Err(std::io::Error::other(format!(
                    "the Redis call on the gateway's main runtime did not finish: {e}"
                ))
                .into())
            })
        })
    }
}

impl<T> Drop for OnHome<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        if let Some((mut inner, home)) = self.on_home() {
            let cmd = cmd.clone();
            return Box::pin(OnHome(
                home.spawn(async move { inner.req_packed_command(&cmd).await }),
            ));
        }
        self.inner.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        if let Some((mut inner, home)) = self.on_home() {
            let cmd = cmd.clone();
            return Box::pin(OnHome(home.spawn(async move {
                inner.req_packed_commands(&cmd, offset, count).await
            })));
        }
        self.inner.req_packed_commands(cmd, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

impl ConnectionLike for Inner {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(_) => 0,
        }
    }
}

pub struct RedisLink {
    source: Source,
    conn: ArcSwapOption<Inner>,
    prefix: String,
    reconnecting: AtomicBool,
    /// The runtime that opened the link: it drives the connections (see [`Conn`]).
    home: Option<Handle>,
}

/// True when `e` says the connection (or, for a cluster, its view of the nodes) is unusable,
/// so the link must be rebuilt; a server's answer to one command (a script error, a MOVED
/// that the cluster client already acted on) is not.
pub fn needs_new_connection(e: &redis::RedisError) -> bool {
    e.is_unrecoverable_error()
        || e.is_timeout()
        // A primary demoted by Sentinel: ask the sentinels again.
        || matches!(e.kind(), redis::ErrorKind::ReadOnly | redis::ErrorKind::MasterDown)
}

/// `%XX` escapes of a URL's user or password, as redis-rs reads them from the sentinels' URLs.
fn percent_decoded(s: &str) -> Result<String, LinkError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    LinkError::Url("a bad %-escape in the Redis URL's credentials".into())
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| LinkError::Url("the Redis URL's credentials are not UTF-8".into()))
}

/// A URL the link cannot use.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Url(String),
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}

fn tls_certificates(ca_pem: Option<Vec<u8>>) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: ca_pem,
    }
}

/// `host:port,host:port` after the scheme of a cluster or sentinel URL (`user:password@` may
/// come first, `/NAME` after for Sentinel); each node as a `redis://` or `rediss://` URL.
fn nodes(rest: &str, tls: bool) -> Result<(Vec<String>, Option<&str>, &str), LinkError> {
    // One `user:password@` for all nodes, before the first host; characters such as `@`, `/`
    // and `,` in it are written %-escaped.
    let (auth, rest) = match rest.split_once('@') {
        Some((auth, rest)) => (Some(auth), rest),
        None => (None, rest),
    };
    if rest.contains('@') || auth.is_some_and(|a| a.contains('/') || a.contains(',')) {
        return Err(LinkError::Url(
            "give the credentials once, before the first HOST:PORT, with @ / , %-escaped".into(),
        ));
    }
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let scheme = if tls { "rediss" } else { "redis" };
    let mut out = Vec::new();
    for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let ok = host
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(LinkError::Url(format!(
                "{host:?} is not HOST:PORT in the Redis URL"
            )));
        }
        out.push(match auth {
            Some(a) => format!("{scheme}://{a}@{host}"),
            None => format!("{scheme}://{host}"),
        });
    }
    if out.is_empty() || out.len() > 64 {
        return Err(LinkError::Url(
            "a cluster or sentinel URL names 1 to 64 HOST:PORT nodes, comma-separated".into(),
        ));
    }
    Ok((out, auth, path))
}

impl Source {
    fn parse(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Self, LinkError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| LinkError::Url("the Redis URL has no scheme".into()))?;
        match scheme {
            "redis+cluster" | "rediss+cluster" => {
                let tls = scheme == "rediss+cluster";
                let (seeds, _, _) = nodes(rest, tls)?;
                let mut builder = ClusterClient::builder(seeds)
                    .connection_timeout(Duration::from_millis(500))
                    .response_timeout(Duration::from_millis(200))
                    // See the module comment: a lost answer is an outage, never a second run.
                    .retries(0);
                if tls {
                    builder = builder.certs(tls_certificates(ca_pem));
                }
                Ok(Self::Cluster(builder.build()?))
            }
            "redis+sentinel" | "rediss+sentinel" => {
                let tls = scheme == "rediss+sentinel";
                if ca_pem.is_some() {
                    // Refused rather than silently checked against the system roots.
                    return Err(LinkError::Url(
                        "--redis-ca-cert is not supported with Sentinel yet: use certificates the system roots accept".into(),
                    ));
                }
                let (sentinels, auth, service) = nodes(rest, tls)?;
                if service.is_empty() || service.contains('/') {
                    return Err(LinkError::Url(
                        "a sentinel URL ends with /SERVICE_NAME (the primary's name in sentinel.conf)"
                            .into(),
                    ));
                }
                // The primary takes the same credentials as the sentinels, read as redis-rs reads
                // them from a URL: `user:password`, or `:password`, %-escaped.
                let redis_connection_info = match auth {
                    None => None,
                    Some(a) => {
                        let (user, password) = a.split_once(':').unwrap_or((a, ""));
                        let (user, password) = (percent_decoded(user)?, percent_decoded(password)?);
                        Some(redis::RedisConnectionInfo {
                            username: (!user.is_empty()).then_some(user),
                            password: (!password.is_empty()).then_some(password),
                            ..Default::default()
                        })
                    }
                };
                let info = SentinelNodeConnectionInfo {
                    tls_mode: tls.then_some(redis::TlsMode::Secure),
                    redis_connection_info,
                };
                let client = SentinelClient::build(
                    sentinels,
                    service.to_owned(),
                    Some(info),
                    SentinelServerType::Master,
                )?;
                Ok(Self::Sentinel(tokio::sync::Mutex::new(client)))
            }
            _ => Ok(Self::Single(match ca_pem {
                Some(root_cert) => {
                    redis::Client::build_with_tls(url, tls_certificates(Some(root_cert)))?
                }
                None => redis::Client::open(url)?,
            })),
        }
    }

    async fn connect(&self) -> redis::RedisResult<Inner> {
        match self {
            Self::Single(client) => ConnectionManager::new_with_config(client.clone(), config())
                .await
                .map(Inner::Single),
            Self::Cluster(client) => client.get_async_connection().await.map(Inner::Cluster),
            Self::Sentinel(sentinel) => {
                let primary = sentinel.lock().await.async_get_client().await?;
                ConnectionManager::new_with_config(primary, config())
                    .await
                    .map(Inner::Single)
            }
        }
    }
}

fn config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Duration::from_millis(200))
        .set_connection_timeout(Duration::from_millis(500))
        .set_number_of_retries(1)
}

impl RedisLink {
    /// Opens the link; an unreachable Redis is retried in the background.
    pub async fn open(
        url: &str,
        prefix: &str,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Arc<Self>, LinkError> {
        let source = Source::parse(url, ca_pem)?;
        if matches!(source, Source::Cluster(_)) && (prefix.contains('{') || prefix.contains('}')) {
            // The hash tag that keeps a script's keys in one slot must be the first braces.
            return Err(LinkError::Url(
                "--redis-prefix must not contain { or } with a Redis Cluster".into(),
            ));
        }
        let link = Arc::new(Self {
            source,
            conn: ArcSwapOption::empty(),
            prefix: prefix.to_owned(),
            reconnecting: AtomicBool::new(false),
            home: Handle::try_current().ok(),
        });
        match tokio::time::timeout(Duration::from_secs(3), link.source.connect()).await {
            Ok(Ok(m)) => link.conn.store(Some(Arc::new(m))),
            _ => {
                tracing::warn!(
                    "Redis unreachable at start; sessions come from the control plane until it answers"
                );
                link.failed();
            }
        }
        Ok(link)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// True for a Redis Cluster: keys that one script or transaction touches then carry a hash
    /// tag (`{...}`), so that they live in one slot.
    pub fn is_cluster(&self) -> bool {
        matches!(self.source, Source::Cluster(_))
    }

    /// True when a connection is in place and no reconnection is under way.
    pub fn is_up(&self) -> bool {
        self.conn.load().is_some() && !self.reconnecting.load(Ordering::Acquire)
    }

    /// A connection to use now, if the link is up.
    pub fn conn(&self) -> Option<Conn> {
        self.conn.load_full().map(|c| Conn {
            inner: (*c).clone(),
            home: self.home.clone(),
        })
    }

    /// `GET key` within [`CALL_TIMEOUT`]; a failure or timeout reports the link failed and
    /// reads as a miss (callers then ask the source of truth).
    pub async fn get_bytes(self: &Arc<Self>, key: &str) -> Option<Vec<u8>> {
        let Some(mut conn) = self.conn() else {
            self.failed();
            return None;
        };
        let got: Result<redis::RedisResult<Option<Vec<u8>>>, _> = tokio::time::timeout(
            CALL_TIMEOUT,
            redis::cmd("GET").arg(key).query_async(&mut conn),
        )
        .await;
        match got {
            Ok(Ok(found)) => found,
            _ => {
                self.failed();
                None
            }
        }
    }

    /// `SET key value EX secs` within [`CALL_TIMEOUT`]; false (and the link reported failed)
    /// when it did not happen.
    pub async fn set_ex(self: &Arc<Self>, key: &str, value: &[u8], secs: u64) -> bool {
        let Some(mut conn) = self.conn() else {
            self.failed();
            return false;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value).arg("EX").arg(secs.max(1));
        match tokio::time::timeout(CALL_TIMEOUT, cmd.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => true,
            _ => {
                self.failed();
                false
            }
        }
    }

    /// Reports a failed or timed-out call: reconnect in the background.
    pub fn failed(self: &Arc<Self>) {
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let link = self.clone();
        let reconnect = async move {
            loop {
                match tokio::time::timeout(Duration::from_secs(1), link.source.connect()).await {
                    Ok(Ok(m)) => {
                        link.conn.store(Some(Arc::new(m)));
                        tracing::info!("Redis connection re-established");
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            }
            link.reconnecting.store(false, Ordering::Release);
        };
        // On the link's own runtime, never on a proxy worker's (see [`Conn`]).
        match &self.home {
            Some(home) => drop(home.spawn(reconnect)),
            None => drop(tokio::spawn(reconnect)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_and_sentinel_urls_name_their_nodes_and_one_set_of_credentials() {
        let (seeds, auth, path) = nodes("u:p%40ss@10.0.0.1:7000, 10.0.0.2:7001", false).unwrap();
        assert_eq!(
            seeds,
            [
                "redis://u:p%40ss@10.0.0.1:7000",
                "redis://u:p%40ss@10.0.0.2:7001"
            ]
        );
        assert_eq!((auth, path), (Some("u:p%40ss"), ""));
        let (seeds, _, service) = nodes("[::1]:26379/orders", true).unwrap();
        assert_eq!(
            (seeds[0].as_str(), service),
            ("rediss://[::1]:26379", "orders")
        );
        for bad in [
            "",
            "host",
            "host:port",
            ":6379",
            "u:p@h1:1,u:p@h2:2",
            "u:p/x@h:1",
        ] {
            assert!(nodes(bad, false).is_err(), "{bad}");
        }
        assert_eq!(percent_decoded("p%40ss%2Fw").unwrap(), "p@ss/w");
        assert!(percent_decoded("p%4").is_err());
    }

    #[test]
    fn a_sentinel_url_needs_its_service_and_no_private_ca() {
        assert!(Source::parse("redis+sentinel://127.0.0.1:26379", None).is_err());
        assert!(Source::parse("redis+sentinel://127.0.0.1:26379/a/b", None).is_err());
        assert!(Source::parse("redis+sentinel://127.0.0.1:26379/orders", Some(vec![])).is_err());
        assert!(Source::parse("redis+sentinel://:secret@127.0.0.1:26379/orders", None).is_ok());
        assert!(Source::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", None).is_ok());
    }
}
