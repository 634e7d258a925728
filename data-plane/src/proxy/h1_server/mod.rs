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
    /// For hyper, from the first request the direct server does not serve.
    Handoff(CountingIo<I>),
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
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::with_capacity(1024);
    let mut head_deadline = Some(Instant::now() + limits.header_timeout);
    loop {
        let req = loop {
            match request::parse(&mut buf, max_head, limits.max_headers) {
                Head::Ready(req) => break req,
                Head::Handoff => {
                    io.put_back(buf.freeze());
                    return Ended::Handoff(io);
                }
                Head::Partial => {}
            }
            let now = Instant::now();
            if head_deadline.is_none() && !buf.is_empty() {
                head_deadline = Some(now + limits.header_timeout);
            }
            let deadline = head_deadline.unwrap_or(now + limits.idle_timeout);
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_CHUNK);
            }
            match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                // The client closed, failed, or took too long: nothing to answer, as hyper.
                _ => return Ended::Closed,
            }
        };
        head_deadline = None;
        activity.request_started();
        let head_request = req.method() == Method::HEAD;
        let handled = proxy.handle(req, conn, reserved);
        let mut handled = std::pin::pin!(handled);
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        // While the request is handled the socket is watched, so a client that goes away
        // cancels its upstream request (hyper's default, no half-closed connections); bytes
        // of a next, pipelined request wait in the buffer, up to one head and body.
        let resp = loop {
            tokio::select! {
                biased;
                resp = &mut handled => break resp,
                read = io.read_buf(&mut buf), if buf.len() < max_head + request::MAX_BODY => {
                    match read {
                        Ok(n) if n > 0 => {}
                        _ => return Ended::Closed,
                    }
                }
            }
        };
        match response::write(&mut io, &mut out, resp, head_request).await {
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
        if out.capacity() > KEEP_OUT {
            out = Vec::with_capacity(1024);
        }
    }
}
