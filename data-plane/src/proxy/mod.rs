//! The proxy server: accepts HTTP/1.1 and HTTP/2 (h2c) clients, routes each request and
//! forwards it to the upstream with a pooled client, streaming bodies both ways.

mod forward;
pub mod headers;
mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
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
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::error::ProxyError;
use crate::limits::{Decision, Limiter, RateInfo};
use crate::shared::Shared;

/// Upstream bodies pass through untouched; gateway answers are small full bodies.
pub type ProxyBody = Either<upstream::UpstreamBody, Full<Bytes>>;

/// Request bodies stream through, unless an auth method had to read them first.
pub type RequestBody = Either<Incoming, Full<Bytes>>;

type UpstreamClient = Client<HttpsConnector<HttpConnector>, RequestBody>;

/// Largest request body an auth method may read (basic auth from the body).
const MAX_AUTH_BODY: usize = 1024 * 1024;

/// Per-process proxy state, shared by every connection.
pub struct Proxy {
    shared: Arc<Shared>,
    client: UpstreamClient,
    idle: Arc<upstream::IdleUpstreams>,
    limiter: Limiter,
    default_timeout: Duration,
}

impl Proxy {
    pub fn new(shared: Arc<Shared>, default_timeout: Duration) -> Result<Self, rustls::Error> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https);
        Ok(Self {
            shared,
            client,
            idle: Arc::default(),
            limiter: Limiter::default(),
            default_timeout,
        })
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
        reserved: &Arc<upstream::Reserved>,
    ) -> Response<ProxyBody> {
        let table = self.shared.table.load();
        let unrouted = |e: ProxyError| {
            let resp = reply(e);
            self.shared.requests.unrouted.record(resp.status().as_u16());
            resp
        };
        if !self.shared.is_ready() {
            return unrouted(ProxyError::NotReady);
        }
        let host = req.uri().host().or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        });
        let Some(route) = table.lookup(host, req.uri().path()).cloned() else {
            return unrouted(ProxyError::NoRoute);
        };
        let policies = (!route.keyless).then(|| table.policies.clone());
        drop(table);
        let resp = self
            .handle_route(req, &route, policies, remote, reserved)
            .await;
        self.shared
            .requests
            .cached(&route.counters, &route.api_id)
            .record(resp.status().as_u16());
        resp
    }

    async fn handle_route(
        &self,
        req: Request<Incoming>,
        route: &Arc<crate::router::Route>,
        policies: Option<Arc<crate::policies::PolicyIndex>>,
        remote: SocketAddr,
        reserved: &Arc<upstream::Reserved>,
    ) -> Response<ProxyBody> {
        let mut rate_info = None;
        let req = match policies {
            None => req.map(Either::Left),
            Some(policies) => {
                let (mut parts, body) = req.into_parts();
                let needs_body = route.auth.as_ref().is_some_and(|m| m.needs_body());
                let (body, read) = if needs_body {
                    // Unreadable or oversized bodies hold no credentials.
                    let limited = http_body_util::Limited::new(body, MAX_AUTH_BODY);
                    let bytes = http_body_util::BodyExt::collect(limited)
                        .await
                        .map(|c| c.to_bytes())
                        .unwrap_or_default();
                    (Either::Right(Full::new(bytes.clone())), Some(bytes))
                } else {
                    (Either::Left(body), None)
                };
                let effective = match crate::auth::authenticate(
                    route,
                    &parts,
                    read.as_deref(),
                    &self.shared.sessions,
                    &policies,
                )
                .await
                {
                    Ok(e) => e,
                    Err(e) => return challenge(reply(e), route),
                };
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
                if route.strip_auth_data
                    && let Some(method) = &route.auth
                {
                    method.strip(&mut parts);
                }
                Request::from_parts(parts, body)
            }
        };
        match forward::forward(
            &self.client,
            reserved,
            route,
            req,
            remote,
            self.default_timeout,
            &self.shared.requests.upstream_latency,
        )
        .await
        {
            Ok(resp) => match rate_info {
                Some(info) => with_rate_headers(resp, info),
                None => resp,
            },
            Err(e) => reply(e),
        }
    }
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

/// Adds the method's `WWW-Authenticate` to its 401 answers.
fn challenge(mut resp: Response<ProxyBody>, route: &crate::router::Route) -> Response<ProxyBody> {
    if resp.status() == http::StatusCode::UNAUTHORIZED
        && let Some(value) = route.auth.as_ref().and_then(|m| m.challenge())
    {
        resp.headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, value.clone());
    }
    resp
}

fn reply(e: ProxyError) -> Response<ProxyBody> {
    e.into_response().map(Either::Right)
}

/// Serves connections until the listener fails.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>) -> std::io::Result<()> {
    let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(
        TokioExecutor::new(),
    ));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let reserved = Arc::new(upstream::Reserved::new(proxy.idle.clone()));
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                let reserved = reserved.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, remote, &reserved).await) }
            });
            if let Err(e) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, %remote, "client connection ended with an error");
            }
        });
    }
}
