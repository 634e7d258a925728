//! WebSockets and other HTTP/1.1 `Upgrade`s: the request is authenticated and forwarded like
//! any other; when the upstream answers 101 the two connections become one byte tunnel until
//! either side closes or no byte moves for the idle timeout (docs/gateway.md, "WebSockets").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What an upgrade request carries past the hop-by-hop header removal.
pub struct Upgrade {
    protocol: HeaderValue,
    client: OnUpgrade,
}

/// Each direction's copy buffer.
const BUFFER: usize = 16 * 1024;

/// True when a `Connection` header lists `token` (case-insensitive).
fn lists(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

impl Upgrade {
    /// Takes the upgrade out of an HTTP/1.1 request that asks for one. HTTP/2 has no
    /// `Upgrade` (RFC 9113 §8.6): such requests are forwarded as plain requests.
    pub fn take(parts: &mut Parts) -> Option<Self> {
        if parts.version != Version::HTTP_11 || !lists(&parts.headers, "upgrade") {
            return None;
        }
        let protocol = parts.headers.get(header::UPGRADE)?.clone();
        let client = parts.extensions.remove::<OnUpgrade>()?;
        Some(Self { protocol, client })
    }

    /// Puts the upgrade back on the upstream request after hop-by-hop headers were removed.
    pub fn restore(&self, headers: &mut HeaderMap) {
        headers.insert(header::UPGRADE, self.protocol.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }

    /// After the upstream's answer: a 101 starts the tunnel (its task is returned, for the
    /// client connection to wait on) and keeps the headers that describe the switch; any
    /// other answer reaches the client as it came.
    pub fn answer<B>(
        self,
        resp: &mut Response<B>,
        idle: Duration,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return None;
        }
        let upstream = hyper::upgrade::on(&mut *resp);
        let protocol = resp.headers().get(header::UPGRADE).cloned();
        super::headers::remove_hop_by_hop(resp.headers_mut());
        resp.headers_mut().insert(
            header::UPGRADE,
            protocol.unwrap_or_else(|| self.protocol.clone()),
        );
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let client = self.client;
        Some(tokio::spawn(async move {
            let (client, upstream) = tokio::join!(client, upstream);
            match (client, upstream) {
                (Ok(c), Ok(u)) => run(TokioIo::new(c), TokioIo::new(u), idle).await,
                (c, u) => {
                    tracing::debug!(
                        client_ok = c.is_ok(),
                        upstream_ok = u.is_ok(),
                        "upgrade did not complete"
                    );
                }
            }
        }))
    }
}

/// Copies both ways until both directions ended, or nothing moved for `idle`.
async fn run<C, U>(client: C, upstream: U, idle: Duration)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = tokio::io::split(upstream);
    let both = async { tokio::join!(pump(cr, uw, &last, started), pump(ur, cw, &last, started)) };
    let watchdog = async {
        loop {
            tokio::time::sleep(idle).await;
            let moved = Duration::from_millis(last.load(Ordering::Relaxed));
            if started.elapsed().saturating_sub(moved) >= idle {
                tracing::debug!("upgraded connection idle: closed");
                return;
            }
        }
    };
    tokio::select! {
        _ = both => {}
        () = watchdog => {}
    }
}

/// One direction: a read end closes the write side of the other connection (half-close), so
/// protocols that finish one way first keep working.
async fn pump<R, W>(mut from: R, mut to: W, last: &AtomicU64, started: Instant)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // TLS streams hold written bytes until flushed.
        if to.write_all(&buf[..n]).await.is_err() || to.flush().await.is_err() {
            break;
        }
        let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(now, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}
