//! The proxy server: accepts HTTP/1.1 and HTTP/2 (h2c) clients, routes each request and
//! forwards it to the upstream with a pooled client, streaming bodies both ways.

pub mod balance;
mod client_limits;
pub mod direct;
mod forward;
mod h1_server;
pub mod head_timer;
pub mod headers;
mod tunnel;
mod upstream;
pub mod upstream_tls;
pub mod workers;

pub use client_limits::{ClientArgs, ClientLimits, LimitError};

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::auth::RequestContext;
use crate::conn::ConnInfo;
use crate::error::ProxyError;
use crate::limits::{Decision, Limiter, RateInfo};
use crate::shared::Shared;

/// Upstream bodies pass through untouched; gateway answers are small full bodies.
pub type ProxyBody = Either<upstream::UpstreamBody, Full<Bytes>>;

/// Request bodies stream through, unless an auth method had to read them first.
pub type RequestBody = Either<Incoming, Full<Bytes>>;

type UpstreamClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// `h2c://` upstreams: HTTP/2 by prior knowledge, without TLS.
type H2cClient = Client<HttpConnector, RequestBody>;

/// Largest request body an auth method may read (basic auth from the body).
const MAX_AUTH_BODY: usize = 1024 * 1024;

/// Per-process proxy state, shared by every connection.
pub struct Proxy {
    shared: Arc<Shared>,
    client: UpstreamClient,
    h2c: H2cClient,
    /// Idle upstream connections, one pool per proxy worker (`workers`): a connection's socket
    /// is registered with the reactor of the thread that opened it and is only reused there.
    idle: Box<[Arc<upstream::IdleUpstreams>]>,
    upstream_tls: upstream_tls::UpstreamTls,
    limiter: Limiter,
    default_timeout: Duration,
    /// Always within the flags' ranges (`ClientLimits::bounded`).
    limits: ClientLimits,
    /// `--access-log` (docs/observability.md); `None` costs the request path nothing.
    access_log: Option<Arc<crate::access_log::AccessLog>>,
}

impl Proxy {
    pub fn new(
        shared: Arc<Shared>,
        default_timeout: Duration,
        limits: ClientLimits,
    ) -> Result<Self, rustls::Error> {
        let http = upstream_tls::http_connector();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        Ok(Self {
            upstream_tls: upstream_tls::UpstreamTls::new(shared.clone(), Default::default())?,
            shared,
            client,
            h2c,
            idle: Box::new([Arc::default()]),
            limiter: Limiter::default(),
            default_timeout,
            limits: limits.bounded(),
            access_log: None,
        })
    }

    async fn handle(
        &self,
        req: Request<RequestBody>,
        conn: &Arc<ConnInfo>,
        reserved: &Arc<upstream::Reserved>,
    ) -> Response<ProxyBody> {
        // Untraced requests (no `--otlp-endpoint`, or not sampled) pay this one check.
        let Some(tracer) = self.shared.tracer() else {
            return self.route_request(req, conn, reserved, None).await;
        };
        let Some(trace) = tracer.begin(req.headers()) else {
            return self.route_request(req, conn, reserved, None).await;
        };
        use crate::trace::Attr;
        let method = Attr::text(req.method().as_str());
        let path = Attr::text(req.uri().path());
        let resp = self.route_request(req, conn, reserved, Some(&trace)).await;
        let status = resp.status().as_u16();
        let mut attributes = vec![
            ("http.request.method", method),
            ("url.path", path),
            ("http.response.status_code", Attr::Int(i64::from(status))),
            ("client.address", Attr::Str(conn.remote.ip().to_string())),
        ];
        attributes.extend(trace.take_annotations());
        let error = (status >= 500).then(|| format!("HTTP {status}"));
        tracer.finish(trace, attributes, error);
        resp
    }

    async fn route_request(
        &self,
        mut req: Request<RequestBody>,
        conn: &Arc<ConnInfo>,
        reserved: &Arc<upstream::Reserved>,
        trace: Option<&crate::trace::RequestTrace>,
    ) -> Response<ProxyBody> {
        let routing_started = trace.map(|_| crate::trace::now_ns());
        let unrouted = |e: ProxyError| {
            let resp = reply(e);
            self.shared.requests.unrouted.record(resp.status().as_u16());
            resp
        };
        // Before anything reads the path: routing, ACLs and the upstream see the same one.
        if let Err(e) = normalize_uri(req.uri_mut(), self.limits.path_rules) {
            return unrouted(e.into());
        }
        // RFC 9112 §3.2.2: the authority of an absolute-form target (or HTTP/2 `:authority`)
        // replaces Host, so the host routed on and the Host an upstream reads
        // (`preserve_host_header`) cannot name different sites.
        // Skipped when Host already says the same, so HTTP/2 clients that send both pay nothing.
        if let Some(host) = req.uri().authority().and_then(|a| {
            let same = req
                .headers()
                .get(http::header::HOST)
                .is_some_and(|h| h.as_bytes() == a.as_str().as_bytes());
            if same {
                return None;
            }
            let host = match a.port() {
                Some(p) => format!("{}:{}", a.host(), p.as_str()),
                None => a.host().to_owned(),
            };
            http::HeaderValue::from_str(&host).ok()
        }) {
            req.headers_mut().insert(http::header::HOST, host);
        }
        let table = self.shared.table.load();
        if !self.shared.is_ready() {
            return unrouted(ProxyError::NotReady);
        }
        let host = req.uri().host().or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let found = table.lookup(host, req.uri().path()).cloned();
        if let (Some(trace), Some(started)) = (trace, routing_started) {
            trace_route(trace, started, found.as_deref());
        }
        let Some(route) = found else {
            return unrouted(ProxyError::NoRoute);
        };
        let held = Held {
            policies: (!route.keyless).then(|| table.policies.clone()),
            // Only routes that read certificates pay for the store's reference count.
            certs: route.auth.needs_certs().then(|| table.certs.clone()),
        };
        drop(table);
        let Some(log) = &self.access_log else {
            let resp = self
                .handle_route(req, &route, held, conn, reserved, None, trace)
                .await;
            self.shared
                .requests
                .cached(&route.counters, &route.api_id)
                .record(resp.status().as_u16());
            return resp;
        };
        let started = std::time::Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let mut key = None;
        let resp = self
            .handle_route(req, &route, held, conn, reserved, Some(&mut key), trace)
            .await;
        let status = resp.status().as_u16();
        self.shared
            .requests
            .cached(&route.counters, &route.api_id)
            .record(status);
        // Time to the response head: the body streams on after this line is written.
        log.record(&crate::access_log::Entry {
            api_id: &route.api_id,
            method: &method,
            path: &path,
            status,
            latency: started.elapsed(),
            key,
            client: conn.remote.ip(),
        });
        resp
    }

    #[allow(clippy::too_many_arguments)]
    async fn handle_route(
        &self,
        req: Request<RequestBody>,
        route: &Arc<crate::router::Route>,
        held: Held,
        conn: &Arc<ConnInfo>,
        reserved: &Arc<upstream::Reserved>,
        key: Option<&mut Option<crate::access_log::KeyTag>>,
        trace: Option<&crate::trace::RequestTrace>,
    ) -> Response<ProxyBody> {
        let Held { policies, certs } = held;
        let mut rate_info = None;
        // The OAuth provider's own endpoints (docs/oauth.md): public like a login, but not past
        // the API's static mTLS. APIs without `use_oauth2` pay this one check.
        if let Some(oauth) = &route.oauth
            && let Some(endpoint) = oauth.endpoint(req.method(), req.uri().path())
        {
            let (parts, body) = req.into_parts();
            let ctx =
                RequestContext::new(&parts, None, route, conn, certs.as_deref(), &self.shared);
            if let Err(e) = route.auth.check_certificate(&ctx) {
                return reply(e);
            }
            let req = Request::from_parts(parts, body);
            return crate::oauth::serve(endpoint, req, route, oauth, conn.scheme(), &self.shared)
                .await
                .map(Either::Right);
        }
        if let Some((path, token_url)) = &route.split_login
            && req.method() == http::Method::POST
            && req.uri().path() == path
        {
            let (parts, body) = req.into_parts();
            // A login is public, but not past the API's static mTLS.
            let ctx =
                RequestContext::new(&parts, None, route, conn, certs.as_deref(), &self.shared);
            if let Err(e) = route.auth.check_certificate(&ctx) {
                return reply(e);
            }
            let limited =
                http_body_util::Limited::new(body, crate::auth::split_token::MAX_LOGIN_BODY);
            let collect = http_body_util::BodyExt::collect(limited);
            let Ok(Ok(form)) = tokio::time::timeout(self.default_timeout, collect).await else {
                return reply(ProxyError::Upstream);
            };
            return crate::auth::split_token::login(
                self.shared.idp(),
                &self.shared.split_tokens,
                token_url,
                form.to_bytes(),
            )
            .await
            .map(Either::Right);
        }
        let req = match policies {
            None => {
                // Keyless: only the static mTLS check, when the API has one.
                if certs.is_some() {
                    let (parts, body) = req.into_parts();
                    let ctx = RequestContext::new(
                        &parts,
                        None,
                        route,
                        conn,
                        certs.as_deref(),
                        &self.shared,
                    );
                    if let Err(e) = route.auth.check_certificate(&ctx) {
                        return reply(e);
                    }
                    Request::from_parts(parts, body)
                } else {
                    req
                }
            }
            Some(policies) => {
                let (mut parts, body) = req.into_parts();
                let needs_body = route.auth.needs_body();
                let (body, read) = if needs_body {
                    // Unreadable, oversized or too slowly sent bodies hold no credentials.
                    let limited = http_body_util::Limited::new(body, MAX_AUTH_BODY);
                    let collect = http_body_util::BodyExt::collect(limited);
                    let bytes = tokio::time::timeout(self.default_timeout, collect)
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    (Either::Right(Full::new(bytes.clone())), Some(bytes))
                } else {
                    (body, None)
                };
                let ctx = RequestContext::new(
                    &parts,
                    read.as_deref(),
                    route,
                    conn,
                    certs.as_deref(),
                    &self.shared,
                )
                .with_trace(trace);
                let effective = match crate::auth::authenticate(&ctx, &policies).await {
                    Ok(e) => e,
                    Err(failure) => return challenge(failure),
                };
                if let Some(key) = key {
                    *key = ctx.key_tag();
                }
                let edits = ctx.take_edits();
                match self
                    .limiter
                    .check(&self.shared.sessions, effective.limits_for(&route.api_id))
                    .await
                {
                    Decision::Allowed(info) => rate_info = info,
                    Decision::RateExceeded(info) => {
                        return with_rate_headers(reply(ProxyError::RateLimited), info);
                    }
                    Decision::QuotaExceeded => return reply(ProxyError::QuotaExceeded),
                }
                if route.strip_auth_data {
                    route.auth.strip(&mut parts);
                }
                // After stripping: the rebuilt split token and a plugin's headers are for the
                // upstream.
                if !edits.is_empty() {
                    edits.apply(&mut parts.headers);
                }
                Request::from_parts(parts, body)
            }
        };
        let mut req = req;
        let upstream_span = trace.map(|t| {
            let (id, header) = t.upstream_parent();
            // The upstream's parent is the gateway's upstream span, not the client's span.
            let headers = req.headers_mut();
            headers.insert(http::HeaderName::from_static("traceparent"), header);
            if t.parent.is_none() {
                // A trace the gateway started: the client's tracestate belongs to no trace of it.
                headers.remove(http::HeaderName::from_static("tracestate"));
            }
            (t, id, crate::trace::now_ns())
        });
        let forwarded = forward::forward(self, reserved, route, req, conn).await;
        if let Some((trace, id, started)) = upstream_span {
            trace_upstream(trace, id, started, route, &forwarded);
        }
        match forwarded {
            Ok(resp) => match rate_info {
                Some(info) => with_rate_headers(resp, info),
                None => resp,
            },
            Err(e) => reply(e),
        }
    }
}

fn trace_route(
    trace: &crate::trace::RequestTrace,
    started: u64,
    route: Option<&crate::router::Route>,
) {
    use crate::trace::{Attr, Kind};
    let (attributes, error) = match route {
        Some(r) => {
            trace.annotate("portcullis.api_id", Attr::text(&r.api_id));
            trace.annotate("http.route", Attr::text(&r.listen_path));
            (vec![("portcullis.api_id", Attr::text(&r.api_id))], None)
        }
        None => (Vec::new(), Some("no API matches".to_owned())),
    };
    trace.child(
        "portcullis.route",
        Kind::Internal,
        started,
        attributes,
        error,
    );
}

fn trace_upstream(
    trace: &crate::trace::RequestTrace,
    id: [u8; 8],
    started: u64,
    route: &crate::router::Route,
    forwarded: &Result<Response<ProxyBody>, ProxyError>,
) {
    use crate::trace::{Attr, Kind};
    let mut attributes = vec![("portcullis.api_id", Attr::text(&route.api_id))];
    let error = match forwarded {
        Ok(resp) => {
            let status = resp.status().as_u16();
            attributes.push(("http.response.status_code", Attr::Int(i64::from(status))));
            (status >= 500).then(|| format!("HTTP {status}"))
        }
        Err(e) => Some(e.to_string()),
    };
    trace.child_with_id(
        id,
        "portcullis.upstream",
        Kind::Client,
        started,
        attributes,
        error,
    );
}

/// What a request keeps of the configuration it was routed with, once the table is released.
struct Held {
    /// `None` for keyless routes.
    policies: Option<Arc<crate::policies::PolicyIndex>>,
    /// Present when the route reads certificates.
    certs: Option<Arc<crate::certs::CertStore>>,
}

/// `X-RateLimit-*` describe the rate limit: the limit, requests left in the window, and seconds
/// until a slot frees up.
fn with_rate_headers(mut resp: Response<ProxyBody>, info: RateInfo) -> Response<ProxyBody> {
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", info.limit.into());
    h.insert("x-ratelimit-remaining", info.remaining.into());
    h.insert("x-ratelimit-reset", info.reset_secs.into());
    resp
}

/// The failing method's answer, with its `WWW-Authenticate` on 401s.
fn challenge(failure: crate::auth::Failure) -> Response<ProxyBody> {
    let mut resp = reply(failure.error);
    if let Some(value) = failure.challenge {
        resp.headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value);
    }
    resp
}

/// Rewrites the URI's path to its normal form; a normal path costs one scan and no allocation.
fn normalize_uri(
    uri: &mut http::Uri,
    rules: crate::path::PathRules,
) -> Result<(), crate::path::PathError> {
    let mut normal = match crate::path::normalize_with(uri.path(), rules)? {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(p) => p,
    };
    if let Some(q) = uri.query() {
        normal.push('?');
        normal.push_str(q);
    }
    let mut parts = std::mem::take(uri).into_parts();
    // Every byte of the normal form is a valid path byte, so these conversions hold; a failure
    // still refuses the request rather than serving a path nobody checked.
    parts.path_and_query = Some(
        http::uri::PathAndQuery::try_from(normal)
            .map_err(|_| crate::path::PathError::BadPercent)?,
    );
    *uri = http::Uri::from_parts(parts).map_err(|_| crate::path::PathError::BadPercent)?;
    Ok(())
}

fn reply(e: ProxyError) -> Response<ProxyBody> {
    e.into_response().map(Either::Right)
}

/// hyper's server settings from the client limits.
fn server_builder(limits: &ClientLimits) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(head_timer::HeadTimer::new(
            limits.header_timeout,
            limits.idle_timeout,
        ))
        .header_read_timeout(limits.header_timeout)
        .max_headers(limits.max_headers)
        // The head must fit the read buffer (hyper answers 431 otherwise).
        .max_buf_size(limits.max_header_bytes as usize);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes)
        .max_pending_accept_reset_streams(limits.h2_max_pending_resets)
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_timeout);
    builder
}

/// Serves connections until the listener fails. At `max_connections` open connections the
/// loop stops accepting: new ones wait in the kernel's listen backlog until one closes.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) -> std::io::Result<()> {
    proxy.limits.warn_if_above_file_limit();
    let slots = Arc::new(Semaphore::new(proxy.limits.max_connections));
    serve_with_slots(listener, proxy, slots).await
}

/// [`serve`] counting open connections in `slots`, which the proxy workers share (`workers`).
pub async fn serve_with_slots(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    slots: Arc<Semaphore>,
) -> std::io::Result<()> {
    let builder = Arc::new(server_builder(&proxy.limits));
    while let Some((stream, remote, slot)) = accept_capped(&listener, &slots).await {
        let proxy = proxy.clone();
        let builder = builder.clone();
        let activity = Arc::new(head_timer::Activity::default());
        let task = head_timer::CONNECTION.scope(activity.clone(), async move {
            let _slot = slot;
            let conn = Arc::new(ConnInfo::plain(remote));
            connection(&proxy, &builder, stream, conn, activity).await;
        });
        tokio::spawn(task);
    }
    Ok(())
}

/// The next client connection, once a slot of `slots` is free (at the cap, new connections
/// wait in the kernel's listen backlog). `None` only if the semaphore was closed, which
/// nothing does. Shared by the plain and TLS listeners.
pub async fn accept_capped(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(
    tokio::net::TcpStream,
    std::net::SocketAddr,
    tokio::sync::OwnedSemaphorePermit,
)> {
    let slot = slots.clone().acquire_owned().await.ok()?;
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, remote, slot));
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// hyper's server for the proxy's client limits, shared by the plain and TLS listeners.
pub type ServerBuilder = hyper_util::server::conn::auto::Builder<TokioExecutor>;

impl Proxy {
    /// Server settings for this proxy's client limits.
    pub fn server_builder(&self) -> ServerBuilder {
        server_builder(&self.limits)
    }

    pub fn limits(&self) -> &ClientLimits {
        &self.limits
    }

    /// `--access-log` (docs/observability.md).
    pub fn with_access_log(mut self, log: Option<Arc<crate::access_log::AccessLog>>) -> Self {
        self.access_log = log;
        self
    }

    /// One pool of idle upstream connections for each of `workers` proxy workers.
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.idle = (0..workers.max(1)).map(|_| Arc::default()).collect();
        self
    }

    /// The rate limiter the gateway's flags chose (docs/limits.md).
    pub fn with_limiter(mut self, limiter: Limiter) -> Self {
        self.limiter = limiter;
        self
    }

    /// Gateway-wide upstream certificates and pins (docs/certificates.md, "Upstream TLS").
    pub fn with_upstream_tls(mut self, gateway: upstream_tls::GatewayTls) -> Self {
        self.upstream_tls.set_gateway(gateway);
        self
    }
}

/// Serves one client connection over `io` (a TCP stream, or a TLS stream whose handshake is
/// done). Must run inside `head_timer::CONNECTION.scope(activity, …)`.
pub async fn connection<I>(
    proxy: &Arc<Proxy>,
    builder: &ServerBuilder,
    io: I,
    conn: Arc<ConnInfo>,
    activity: Arc<head_timer::Activity>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let remote = conn.remote;
    let idle = &proxy.idle[workers::current().min(proxy.idle.len() - 1)];
    let reserved = Arc::new(upstream::Reserved::new(idle.clone()));
    let io = head_timer::CountingIo::new(io, activity.clone());
    // HTTP/2 by ALPN is hyper's from the start; HTTP/2 by prior knowledge is handed over at
    // its preface.
    let h2 = conn
        .tls
        .as_ref()
        .is_some_and(|t| t.alpn.as_deref() == Some(b"h2"));
    // The first request hyper reads must be under way by then: from the connection's start,
    // or the head deadline of the request the direct server handed over.
    let (io, first_deadline, requests_before) = if proxy.limits.hyper_http1 || h2 {
        let deadline = tokio::time::Instant::now() + proxy.limits.header_timeout;
        (io, deadline, 0)
    } else {
        match h1_server::serve(proxy, io, &conn, &reserved, &activity).await {
            h1_server::Ended::Closed => return,
            h1_server::Ended::Handoff { io, deadline } => (io, deadline, activity.requests()),
        }
    };
    let tunnels = reserved.clone();
    let counted = activity.clone();
    let for_service = proxy.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        counted.request_started();
        let proxy = for_service.clone();
        let reserved = reserved.clone();
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req.map(Either::Left), &conn, &reserved).await) }
    });
    let io = TokioIo::new(io);
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    // hyper's own timers start only once the protocol is known: the first request must also
    // arrive within the header timeout, which bounds a client trickling the HTTP/2 preface or
    // its first HEADERS frame. HTTP/2 has no idle timeout of its own (keep-alive pings only
    // find dead peers): after a whole idle period without a new request the connection is
    // asked to close (GOAWAY; open streams still finish). On HTTP/1 the head timer has usually
    // closed an idle connection already, and a response still streaming is finished first.
    let first_deadline = tokio::time::sleep_until(first_deadline);
    let mut first_deadline = std::pin::pin!(first_deadline);
    let mut first_checked = false;
    let mut seen = 0;
    let mut closing = false;
    let ended = loop {
        tokio::select! {
            ended = conn.as_mut() => break ended,
            () = &mut first_deadline, if !first_checked => {
                first_checked = true;
                if activity.requests() == requests_before {
                    tracing::debug!(%remote, "no request within the header timeout");
                    return;
                }
            }
            () = tokio::time::sleep(proxy.limits.idle_timeout) => {
                let now = activity.requests();
                if now == seen && !closing {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                seen = now;
            }
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, %remote, "client connection ended with an error");
    }
    // An upgraded connection lives on as a tunnel, and keeps its connection slot.
    if let Some(tunnel) = tunnels.take_tunnel() {
        let _ = tunnel.await;
    }
}
