//! WebSockets and other HTTP/1.1 `Upgrade`s: the request is authenticated and forwarded like
//! any other; when the upstream answers 101 the two connections become one byte tunnel until
//! either side closes or no byte moves for the idle timeout (docs/gateway.md, "WebSockets").

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
    /// `Sec-WebSocket-Key`, whose accept value the upstream's 101 must carry.
    websocket_key: Option<HeaderValue>,
    client: OnUpgrade,
}

/// RFC 6455 §1.3.
const WEBSOCKET_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Each direction's copy buffer.
const BUFFER: usize = 16 * 1024;

impl Upgrade {
    /// Takes the upgrade out of an HTTP/1.1 request that asks for one. HTTP/2 has no
    /// `Upgrade` (RFC 9113 §8.6): such requests are forwarded as plain requests.
    pub fn take(parts: &mut Parts) -> Option<Self> {
        if parts.version != Version::HTTP_11
            || !super::headers::lists_token(&parts.headers, &header::CONNECTION, "upgrade")
        {
            return None;
        }
        let protocol = parts.headers.get(header::UPGRADE)?.clone();
        // An upgrade to h2c would turn the tunnel into an HTTP/2 connection whose requests the
        // gateway never sees (h2c smuggling): such a request goes upstream as a plain one.
        let names_h2c = protocol.to_str().map_or(true, |p| {
            p.split(',').any(|t| t.trim().eq_ignore_ascii_case("h2c"))
        });
        if names_h2c {
            return None;
        }
        let websocket_key = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned();
        let client = parts.extensions.remove::<OnUpgrade>()?;
        Some(Self {
            protocol,
            websocket_key,
            client,
        })
    }

    /// Why a 101 does not switch to what the client asked for, if it does not: a tunnel opens
    /// only to the protocol requested, so an upstream that answers 101 to anything (an echo of
    /// status codes) cannot be made to carry raw requests past the gateway.
    fn mismatch(&self, headers: &HeaderMap) -> Option<&'static str> {
        let Some(answered) = headers.get(header::UPGRADE) else {
            return Some("no Upgrade header in the 101");
        };
        if !answered
            .as_bytes()
            .eq_ignore_ascii_case(self.protocol.as_bytes())
        {
            return Some("the 101 names another protocol");
        }
        if let Some(key) = &self.websocket_key {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
            ctx.update(key.as_bytes());
            ctx.update(WEBSOCKET_GUID);
            use base64::Engine as _;
            let expected = base64::engine::general_purpose::STANDARD.encode(ctx.finish());
            let accept = headers.get(header::SEC_WEBSOCKET_ACCEPT);
            if accept.is_none_or(|a| a.as_bytes() != expected.as_bytes()) {
                return Some("Sec-WebSocket-Accept does not answer the client's key");
            }
        }
        None
    }

    /// Puts the upgrade back on the upstream request after hop-by-hop headers were removed.
    pub fn restore(&self, headers: &mut HeaderMap) {
        headers.insert(header::UPGRADE, self.protocol.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }

    /// After the upstream's answer: a valid 101 starts the tunnel (its task is returned, for
    /// the client connection to wait on) and keeps the headers that describe the switch; any
    /// other answer reaches the client as it came (`Ok(None)`). A 101 that does not switch to
    /// what was asked for is an error (answered 502).
    pub fn answer<B>(
        self,
        resp: &mut Response<B>,
        idle: Duration,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, &'static str> {
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(None);
        }
        if let Some(why) = self.mismatch(resp.headers()) {
            return Err(why);
        }
        let upstream = hyper::upgrade::on(&mut *resp);
        super::headers::remove_hop_by_hop(resp.headers_mut());
        resp.headers_mut()
            .insert(header::UPGRADE, self.protocol.clone());
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        let client = self.client;
        Ok(Some(tokio::spawn(async move {
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
        })))
    }
}

/// Copies both ways until both directions ended, or nothing moved for `idle`.
async fn run<C, U>(client: C, upstream: U, idle: Duration)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    let last = AtomicU64::new(0);
    let (cr, cw) = tokio::io::split(client);
    let (ur, uw) = tokio::io::split(upstream);
    // An error either way (a reset) ends both directions; an end of stream ends only its own.
    let both =
        async { tokio::try_join!(pump(cr, uw, &last, started), pump(ur, cw, &last, started)) };
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
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    last: &AtomicU64,
    started: Instant,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        // TLS streams hold written bytes until flushed.
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(now, Ordering::Relaxed);
    }
    // A peer that already closed its reading side is no reason to cut the other direction.
    let _ = to.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(protocol: &'static str, key: Option<&'static str>) -> Upgrade {
        Upgrade {
            protocol: HeaderValue::from_static(protocol),
            websocket_key: key.map(HeaderValue::from_static),
            client: hyper::upgrade::on(http::Request::new(())),
        }
    }

    fn answer(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_101_must_switch_to_the_protocol_and_key_the_client_asked_for() {
        // RFC 6455 §1.3's example handshake.
        let ws = upgrade("websocket", Some("dGhlIHNhbXBsZSBub25jZQ=="));
        let good = [
            ("upgrade", "WebSocket"),
            ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        ];
        assert_eq!(ws.mismatch(&answer(&good)), None);
        assert!(ws.mismatch(&answer(&[("upgrade", "websocket")])).is_some());
        assert!(
            ws.mismatch(&answer(&[
                ("upgrade", "websocket"),
                ("sec-websocket-accept", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            ]))
            .is_some()
        );
        assert!(
            ws.mismatch(&answer(&[good[1]])).is_some(),
            "no Upgrade header"
        );
        let other = upgrade("my-protocol", None);
        assert_eq!(other.mismatch(&answer(&[("upgrade", "my-protocol")])), None);
        assert!(other.mismatch(&answer(&[("upgrade", "h2c")])).is_some());
    }

    /// A side whose reads fail, as a reset connection's do.
    struct Reset;

    impl AsyncRead for Reset {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::ErrorKind::ConnectionReset.into()))
        }
    }

    impl AsyncWrite for Reset {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            b: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_reset_on_one_side_ends_both_directions() {
        // The upstream side stays open and silent: only the client's reset can end the tunnel
        // before the (hour-long) idle timeout.
        let (upstream, _peer) = tokio::io::duplex(64);
        let ended = tokio::time::timeout(
            Duration::from_secs(30),
            run(Reset, upstream, Duration::from_secs(3600)),
        )
        .await;
        assert!(
            ended.is_ok(),
            "the tunnel outlived a reset of the client side"
        );
    }

    #[test]
    fn an_upgrade_to_h2c_is_never_tunnelled() {
        for protocol in ["h2c", "H2C", "websocket, h2c"] {
            let mut req = http::Request::builder()
                .header("connection", "Upgrade, HTTP2-Settings")
                .header("upgrade", protocol)
                .body(())
                .unwrap();
            let on = hyper::upgrade::on(&mut req);
            let (mut parts, ()) = req.into_parts();
            parts.extensions.insert(on);
            assert!(Upgrade::take(&mut parts).is_none(), "{protocol}");
        }
    }
}
