//! Upstream connections. Each client connection keeps one HTTP/1.1 connection to the upstream it
//! last used, reserved for it: sequential requests on a keep-alive client connection then skip the
//! shared pool (its lock, hashing and checkout futures) entirely. When the client connection
//! ends, its upstream connection goes to a process-wide idle list that the next client connection
//! draws from, so clients without keep-alive still reuse upstream connections. Concurrent HTTP/2
//! streams go through the shared pooled client, TLS upstreams through the pooled client of
//! their TLS settings (`upstream_tls`), which speaks HTTP/2 when the upstream picks it by ALPN.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::direct;
use super::upstream_tls::{self, TlsFailure};
use super::{RequestBody, UpstreamClient};

type Sender = SendRequest<RequestBody>;

/// Why a request got no upstream response.
#[derive(Debug)]
pub enum SendError {
    /// TLS with the upstream failed (handshake, verification, or an alert from the upstream);
    /// `detail` is rustls's description, for the log.
    Tls {
        failure: TlsFailure,
        detail: String,
    },
    /// No connection to the upstream could be made, so the request was not sent; `unsent` is
    /// the request when it could be kept, for another target (`balance`).
    Connect {
        unsent: Option<Box<Request<RequestBody>>>,
        detail: String,
    },
    Other(String),
}

impl From<String> for SendError {
    fn from(e: String) -> Self {
        Self::Other(e)
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tls { detail, .. } | Self::Connect { detail, .. } => f.write_str(detail),
            Self::Other(e) => f.write_str(e),
        }
    }
}

/// Takes the request back out of a failed connect, for another target.
impl SendError {
    pub fn take_unsent(&mut self) -> Option<Request<RequestBody>> {
        match self {
            Self::Connect { unsent, .. } => unsent.take().map(|b| *b),
            _ => None,
        }
    }

    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. })
    }
}

enum Slot {
    Empty,
    Idle(Authority, Sender),
    /// A request of this client connection is using it (HTTP/2 streams run concurrently).
    Busy,
}

/// The upstream connection reserved for one client connection.
pub struct Reserved {
    slot: Mutex<Slot>,
    /// The direct client's connection (`direct`), beside hyper's: a client connection that
    /// mixes streamed and in-memory bodies keeps one of each.
    direct: Mutex<Option<(Authority, direct::Conn)>>,
    idle: Arc<IdleUpstreams>,
    /// The byte tunnel of an upgraded request (`tunnel`): the client connection's task waits
    /// for it, so a tunnel holds its connection slot.
    tunnel: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Reserved {
    pub fn new(idle: Arc<IdleUpstreams>) -> Self {
        Self {
            slot: Mutex::new(Slot::Empty),
            direct: Mutex::new(None),
            idle,
            tunnel: Mutex::new(None),
        }
    }

    pub fn hold_tunnel(&self, task: tokio::task::JoinHandle<()>) {
        *self.tunnel.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// The tunnel's task, if a request became one. The upstream connection reserved for the
    /// client connection goes to the idle list first: a tunnel can last hours.
    pub fn take_tunnel(&self) -> Option<tokio::task::JoinHandle<()>> {
        let task = self
            .tunnel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let slot = std::mem::replace(
            &mut *self.slot.lock().unwrap_or_else(|p| p.into_inner()),
            Slot::Empty,
        );
        if let Slot::Idle(authority, sender) = slot {
            self.idle.put(authority, sender);
        }
        self.park_direct();
        Some(task)
    }

    fn park_direct(&self) {
        let direct = self.direct.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((authority, conn)) = direct {
            self.idle.put_direct(authority, conn);
        }
    }

    /// The direct connection to `authority`: this client connection's own, else an idle one.
    fn take_direct(&self, authority: &Authority) -> Option<direct::Conn> {
        let own = self.direct.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((a, mut conn)) = own {
            if a != *authority {
                // A balanced API's other target: kept for whoever goes there next.
                self.idle.put_direct(a, conn);
            } else if conn.is_fresh() {
                return Some(conn);
            }
        }
        self.idle.take_direct(authority)
    }

    /// A connection whose response was read to its end; a second one (concurrent HTTP/2
    /// streams) goes to the idle list.
    fn put_direct(&self, authority: Authority, conn: direct::Conn) {
        let mut own = self.direct.lock().unwrap_or_else(|p| p.into_inner());
        if own.is_none() {
            *own = Some((authority, conn));
        } else {
            drop(own);
            self.idle.put_direct(authority, conn);
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        let slot = std::mem::replace(
            self.slot.get_mut().unwrap_or_else(|p| p.into_inner()),
            Slot::Empty,
        );
        if let Slot::Idle(authority, sender) = slot {
            self.idle.put(authority, sender);
        }
        self.park_direct();
    }
}

/// Most idle connections kept per upstream once their client connections have gone.
const IDLE_PER_UPSTREAM: usize = 256;

/// Idle upstream connections left behind by finished client connections.
#[derive(Default)]
pub struct IdleUpstreams {
    by_authority: Mutex<HashMap<Authority, Vec<Sender>>>,
    direct: Mutex<DirectIdle>,
}

/// The direct client's idle connections, each with the time it went idle.
#[derive(Default)]
struct DirectIdle {
    by_authority: HashMap<Authority, Vec<(Instant, direct::Conn)>>,
    swept: Option<Instant>,
}

/// An idle direct connection older than this is closed rather than reused (hyper's pool
/// setting here), so targets that went away do not keep sockets open.
const DIRECT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

impl IdleUpstreams {
    fn take(&self, authority: &Authority) -> Option<Sender> {
        let mut map = self.by_authority.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.get_mut(authority)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, authority: Authority, sender: Sender) {
        let mut map = self.by_authority.lock().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(authority).or_default();
        list.retain(|s| !s.is_closed());
        if list.len() < IDLE_PER_UPSTREAM {
            list.push(sender);
        }
    }

    fn take_direct(&self, authority: &Authority) -> Option<direct::Conn> {
        let mut idle = self.direct.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.by_authority.get_mut(authority)?;
        while let Some((since, mut conn)) = list.pop() {
            if since.elapsed() < DIRECT_IDLE_TIMEOUT && conn.is_fresh() {
                return Some(conn);
            }
        }
        idle.by_authority.remove(authority);
        None
    }

    fn put_direct(&self, authority: Authority, conn: direct::Conn) {
        let mut idle = self.direct.lock().unwrap_or_else(|p| p.into_inner());
        // Every few seconds, close what expired or was closed under every upstream, so a
        // list nobody draws from any more does not hold its sockets.
        let now = Instant::now();
        if idle
            .swept
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            idle.swept = Some(now);
            idle.by_authority.retain(|_, list| {
                list.retain_mut(|(since, c)| {
                    now.duration_since(*since) < DIRECT_IDLE_TIMEOUT && c.is_fresh()
                });
                !list.is_empty()
            });
        }
        let list = idle.by_authority.entry(authority).or_default();
        if list.len() < IDLE_PER_UPSTREAM {
            list.push((now, conn));
        }
    }
}

enum Claim {
    /// The idle connection to this upstream.
    Reuse(Sender),
    /// Nothing usable is reserved: open a new connection and keep it.
    Open,
    /// Another request of this client connection holds it: use the shared pool.
    Busy,
}

impl Reserved {
    fn claim(&self, authority: &Authority) -> Claim {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *slot, Slot::Busy) {
            Slot::Idle(a, s) if a == *authority && !s.is_closed() => Claim::Reuse(s),
            // Another upstream's connection (a balanced API's other target): kept for whoever
            // goes there next rather than closed.
            Slot::Idle(a, s) => {
                if !s.is_closed() {
                    self.idle.put(a, s);
                }
                Claim::Open
            }
            Slot::Empty => Claim::Open,
            Slot::Busy => Claim::Busy,
        }
    }

    fn put(&self, authority: Authority, sender: Sender) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Slot::Idle(authority, sender);
    }

    fn release(&self) {
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = Slot::Empty;
    }
}

/// Frees the claim when a request fails before its connection could be given back.
struct ClaimGuard<'a>(Option<&'a Reserved>);

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.0 {
            r.release();
        }
    }
}

/// An upstream response body that hands its connection back to the client connection's slot
/// once the body has been read to the end.
pub struct UpstreamBody {
    inner: Inner,
    give_back: Option<(Arc<Reserved>, Authority, Sender)>,
}

enum Inner {
    Hyper(Incoming),
    /// With the slot its connection goes back to.
    Direct(direct::DirectBody, Option<(Arc<Reserved>, Authority)>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl UpstreamBody {
    fn pooled(inner: Incoming) -> Self {
        Self {
            inner: Inner::Hyper(inner),
            give_back: None,
        }
    }

    fn finish(&mut self) {
        if let Some((reserved, authority, sender)) = self.give_back.take() {
            reserved.put(authority, sender);
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Dropped before its end (client went away): the connection's state is unknown.
        if let Some((reserved, ..)) = self.give_back.take() {
            reserved.release();
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match &mut this.inner {
            Inner::Hyper(inner) => {
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                let ended = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
                    _ => false,
                };
                if ended {
                    this.finish();
                }
                polled.map_err(Into::into)
            }
            Inner::Direct(body, home) => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                if let Some(conn) = body.take_spare()
                    && let Some((reserved, authority)) = home.take()
                {
                    reserved.put_direct(authority, conn);
                }
                polled.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper(b) => b.is_end_stream(),
            Inner::Direct(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Hyper(b) => b.size_hint(),
            Inner::Direct(b, _) => b.size_hint(),
        }
    }
}

/// An upstream that takes longer to accept a connection counts as refusing it: a target that
/// drops SYNs is then passed over like one that resets them (`balance`), instead of holding
/// every request for the whole upstream timeout.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(super) async fn tcp(authority: &Authority) -> std::io::Result<TcpStream> {
    let port = authority.port_u16().unwrap_or(80);
    let connect = TcpStream::connect((
        authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']'),
        port,
    ));
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A new HTTP/1.1 connection, able to become a tunnel after a 101 (which only an `Upgrade`
/// request gets; others never see the difference).
async fn connect(
    authority: &Authority,
    req: Request<RequestBody>,
) -> Result<(Sender, Request<RequestBody>), SendError> {
    let stream = match tcp(authority).await {
        Ok(s) => s,
        Err(e) => {
            return Err(SendError::Connect {
                unsent: Some(Box::new(req)),
                detail: e.to_string(),
            });
        }
    };
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Other(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok((sender, req))
}

/// Sends an `Upgrade` request on a connection of its own, which becomes the tunnel's upstream
/// side after a 101 and is never pooled.
pub async fn send_upgrade(
    client: &UpstreamClient,
    scheme: &Scheme,
    authority: &Authority,
    req: Request<RequestBody>,
) -> Result<Response<UpstreamBody>, SendError> {
    if *scheme != Scheme::HTTP {
        // The pooled TLS client keeps its HTTP/1.1 connections upgradable.
        return pooled(client, scheme, authority, req).await;
    }
    let (mut s, req) = connect(authority, req).await?;
    let resp = s
        .send_request(req)
        .await
        .map_err(|e| SendError::Other(e.to_string()))?;
    Ok(resp.map(UpstreamBody::pooled))
}

/// Sends `req`, whose URI is origin-form, to the upstream at `scheme://authority`. The raw
/// connections write the URI as given, so it must not carry scheme or authority.
pub async fn send(
    client: &UpstreamClient,
    reserved: &Arc<Reserved>,
    scheme: &Scheme,
    authority: &Authority,
    req: Request<RequestBody>,
) -> Result<Response<UpstreamBody>, SendError> {
    if *scheme != Scheme::HTTP {
        return pooled(client, scheme, authority, req).await;
    }
    let mut req = match direct::Outgoing::take(req) {
        Ok(out) => return send_direct(reserved, authority, out).await,
        Err(req) => req,
    };
    let mut sender = match reserved.claim(authority) {
        Claim::Busy => return pooled(client, scheme, authority, req).await,
        Claim::Reuse(s) => Some(s),
        Claim::Open => None,
    };
    let mut guard = ClaimGuard(Some(reserved));
    if sender.is_none() {
        sender = reserved.idle.take(authority);
    }
    if let Some(mut s) = sender.take()
        && s.ready().await.is_ok()
    {
        match s.try_send_request(req).await {
            Ok(resp) => {
                guard.0 = None;
                return Ok(give_back(resp, reserved, authority, s));
            }
            // The upstream closed the idle connection before the request went out: retry once
            // on a new connection, as the pooled client would.
            Err(mut e) => match e.take_message() {
                Some(unsent) => req = unsent,
                None => return Err(e.into_error().to_string().into()),
            },
        }
    }
    let (mut s, req) = connect(authority, req).await?;
    let resp = s
        .send_request(req)
        .await
        .map_err(|e| SendError::Other(e.to_string()))?;
    guard.0 = None;
    Ok(give_back(resp, reserved, authority, s))
}

/// One request through the direct client (`direct`).
async fn send_direct(
    reserved: &Arc<Reserved>,
    authority: &Authority,
    out: direct::Outgoing,
) -> Result<Response<UpstreamBody>, SendError> {
    if let Some(mut conn) = reserved.take_direct(authority) {
        match conn.exchange(&out, authority).await {
            Ok(head) => return Ok(direct_response(conn, head, reserved, authority)),
            // The upstream closed the idle connection as the request went out: a request that
            // may be repeated goes once more on a new connection, as hyper's pool would.
            Err(direct::DirectError::Closed) if out.idempotent() => {}
            Err(e) => return Err(SendError::Other(e.to_string())),
        }
    }
    let mut conn = match tcp(authority).await {
        Ok(stream) => direct::Conn::new(stream),
        Err(e) => {
            return Err(SendError::Connect {
                unsent: Some(Box::new(out.into_request())),
                detail: e.to_string(),
            });
        }
    };
    match conn.exchange(&out, authority).await {
        Ok(head) => Ok(direct_response(conn, head, reserved, authority)),
        Err(e) => Err(SendError::Other(e.to_string())),
    }
}

fn direct_response(
    conn: direct::Conn,
    head: direct::ResponseHead,
    reserved: &Arc<Reserved>,
    authority: &Authority,
) -> Response<UpstreamBody> {
    let mut body = direct::DirectBody::new(conn, &head);
    // A bodiless answer frees its connection at once.
    let home = match body.take_spare() {
        Some(conn) => {
            reserved.put_direct(authority.clone(), conn);
            None
        }
        None => Some((reserved.clone(), authority.clone())),
    };
    let mut resp = Response::new(UpstreamBody {
        inner: Inner::Direct(body, home),
        give_back: None,
    });
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    resp
}

fn give_back(
    resp: Response<Incoming>,
    reserved: &Arc<Reserved>,
    authority: &Authority,
    sender: Sender,
) -> Response<UpstreamBody> {
    let mut give_back = Some((reserved.clone(), authority.clone(), sender));
    if resp.body().is_end_stream()
        && let Some((r, a, s)) = give_back.take()
    {
        r.put(a, s);
    }
    resp.map(|inner| UpstreamBody {
        inner: Inner::Hyper(inner),
        give_back,
    })
}

/// The pooled client needs the absolute URI to choose a connection; it sends origin-form on
/// HTTP/1.1 and the `:scheme`/`:authority` pseudo-headers on HTTP/2.
pub async fn pooled<C>(
    client: &hyper_util::client::legacy::Client<C, RequestBody>,
    scheme: &Scheme,
    authority: &Authority,
    req: Request<RequestBody>,
) -> Result<Response<UpstreamBody>, SendError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let (mut parts, body) = req.into_parts();
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(scheme.clone());
    uri.authority = Some(authority.clone());
    parts.uri = http::Uri::from_parts(uri).map_err(|e| e.to_string())?;
    let req = Request::from_parts(parts, body);
    client
        .request(req)
        .await
        .map(|r| r.map(UpstreamBody::pooled))
        .map_err(|e| match upstream_tls::classify(&e) {
            Some((failure, detail)) => SendError::Tls { failure, detail },
            None if e.is_connect() => SendError::Connect {
                unsent: None,
                detail: e.to_string(),
            },
            None => SendError::Other(e.to_string()),
        })
}
