//! The direct HTTP/1.1 server: plain requests (no streamed body, no upgrade, no expectation)
//! are read with `httparse` into the connection's buffer and answered from the connection's
//! own task, the response head and a small body in one write. hyper's server, which parses
//! into the same types, spends a dispatcher, a body channel and a boxed timer per request on
//! what is, for most API traffic, one read and one write (docs/architecture.md, "Client
//! connections").
//!
//! The first request of any other shape, and any bytes `httparse` refuses, hands the
//! connection to hyper with every byte read so far put back in front (`CountingIo::put_back`);
//! hyper then serves the rest of the connection as it serves every connection with
//! `--hyper-http1-server`. So HTTP/2, upgrades, `Expect: 100-continue`, chunked and large
//! request bodies, HTTP/1.0 and hyper's 400 and 431 answers are hyper's, unchanged.

mod request;
mod response;

use std::sync::Arc;

use bytes::BytesMut;
use http::Method;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::Proxy;
use super::head_timer::{Activity, CountingIo};
use super::upstream::Reserved;
use crate::conn::ConnInfo;
use request::Head;
use response::After;

/// The read buffer grows in steps of this size.
const READ_CHUNK: usize = 8 * 1024;
/// A write buffer that grew past this for a large head is not kept for the next response.
const KEEP_OUT: usize = 64 * 1024;

/// How the direct server left a connection.
pub enum Ended<I> {
    /// Closed: by the client, a timeout, a failed write or a response that ends it.
    Closed,
    /// For hyper, from the first request the direct server does not serve, which must be
    /// under way by `deadline` (the head's, so a hand-off never restarts the header timeout).
    Handoff {
        io: CountingIo<I>,
        deadline: Instant,
    },
}

/// The state one client connection keeps from request to request.
struct Connection {
    /// What the client sent that is not yet a request.
    buf: BytesMut,
    /// The response head (and a small body) being written.
    out: Vec<u8>,
    /// The header map of the last response, emptied, for the next request's head.
    headers: Option<http::HeaderMap>,
}

/// Serves requests on `io` until the connection ends or a request is hyper's. Applies the
/// connection's timeouts as hyper does with the head timer (`head_timer`): the first head
/// within the header timeout of the connection's start; later ones within the idle timeout
/// for their first byte and the header timeout from it.
pub async fn serve<I>(
    proxy: &Proxy,
    mut io: CountingIo<I>,
    conn: &Arc<ConnInfo>,
    reserved: &Arc<Reserved>,
    activity: &Activity,
) -> Ended<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let limits = proxy.limits();
    let max_head = limits.max_header_bytes as usize;
    let mut c = Connection {
        buf: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(1024),
        headers: None,
    };
    let mut head_deadline = Some(Instant::now() + limits.header_timeout);
    let mut idle_deadline = Instant::now() + limits.idle_timeout;
    // One timer for the connection, moved only when a wait must end sooner than it is set
    // for: most requests read their whole head at once and never touch it. When it fires
    // early (a later deadline than it was set for), it is set again.
    let timer = tokio::time::sleep_until(head_deadline.unwrap_or(idle_deadline));
    let mut timer = std::pin::pin!(timer);
    let mut served = 0u64;
    loop {
        let req = loop {
            match request::parse(&mut c.buf, max_head, limits.max_headers, &mut c.headers) {
                Head::Ready(req) => break req,
                // HTTP/2 only ever starts a connection; hyper would read this as a bad request.
                Head::Handoff if served > 0 && c.buf.starts_with(b"PRI * HTTP/2.0") => {
                    return Ended::Closed;
                }
                Head::Handoff => {
                    let deadline =
                        head_deadline.unwrap_or_else(|| Instant::now() + limits.header_timeout);
                    io.put_back(c.buf.freeze());
                    return Ended::Handoff { io, deadline };
                }
                Head::Partial => {}
            }
            if head_deadline.is_none() && !c.buf.is_empty() {
                head_deadline = Some(Instant::now() + limits.header_timeout);
            }
            let deadline = head_deadline.unwrap_or(idle_deadline);
            if deadline < timer.deadline() {
                timer.as_mut().reset(deadline);
            }
            if c.buf.capacity() - c.buf.len() < 1024 {
                c.buf.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                read = io.read_buf(&mut c.buf) => match read {
                    Ok(n) if n > 0 => {}
                    // The client closed or failed: nothing to answer, as hyper.
                    _ => return Ended::Closed,
                },
                () = &mut timer => {
                    if Instant::now() >= deadline {
                        return Ended::Closed;
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        };
        head_deadline = None;
        served += 1;
        activity.request_started();
        let head_request = req.method() == Method::HEAD;
        let handled = proxy.handle(req, conn, reserved);
        let mut handled = std::pin::pin!(handled);
        if c.buf.capacity() - c.buf.len() < 1024 {
            c.buf.reserve(READ_CHUNK);
        }
        // While the request is handled, an idle socket is watched, so a client that goes away
        // cancels its upstream request (hyper's default, no half-closed connections). As in
        // hyper, not once a next, pipelined request is waiting: its client may have closed
        // its sending side and still wait for both answers.
        let resp = loop {
            tokio::select! {
                biased;
                resp = &mut handled => break resp,
                read = io.read_buf(&mut c.buf), if c.buf.is_empty() => {
                    match read {
                        Ok(n) if n > 0 => {}
                        _ => return Ended::Closed,
                    }
                }
            }
        };
        let written = response::write(&mut io, &mut c, resp, head_request).await;
        match written {
            Ok(After::KeepAlive) => {}
            Ok(After::Close) => {
                let _ = tokio::time::timeout(limits.header_timeout, io.shutdown()).await;
                return Ended::Closed;
            }
            Err(e) => {
                tracing::debug!(error = %e, remote = %conn.remote, "client connection failed");
                return Ended::Closed;
            }
        }
        idle_deadline = Instant::now() + limits.idle_timeout;
        if c.out.capacity() > KEEP_OUT {
            c.out = Vec::with_capacity(1024);
        }
    }
}
