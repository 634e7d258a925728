//! The direct HTTP/1.1 client: plain-HTTP upstream requests whose body is empty or already in
//! memory (most API traffic) are written and answered inside the client connection's own task,
//! on a connection it owns, instead of through hyper's client, whose connection task, request
//! channel and body channel cost three task hand-offs per request. Heads are parsed with
//! `httparse` into the read buffer and header values share it; bodies come out as slices of
//! it. Streaming request bodies, upgrades, TLS and HTTP/2 upstreams keep using hyper
//! (docs/architecture.md, "Upstream connections").

mod body;
mod chunked;
mod head;

pub use body::DirectBody;
pub use chunked::{Chunked, Step};
pub use head::{Framing, ResponseHead, parse_response};

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, request};
use http_body::Body as _;
use http_body_util::{Either, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::RequestBody;

/// Read buffer of a connection; grown in steps of this size while a body streams.
const READ_CHUNK: usize = 16 * 1024;
/// Largest request body the direct client sends (see `Outgoing::take`).
const MAX_BODY: usize = 16 * 1024;
/// 1xx answers skipped before the final one (100 Continue, 103 Early Hints).
const MAX_INTERIM: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// Nothing of an answer arrived: the upstream closed or reset the connection first.
    #[error("upstream closed the connection before answering")]
    Closed,
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream response head over 408 KiB or 100 fields")]
    HeadTooLarge,
    #[error("invalid upstream response head: {0}")]
    BadHead(&'static str),
    #[error("invalid upstream response framing: {0}")]
    BadFraming(&'static str),
    #[error("upstream sent more than {MAX_INTERIM} informational responses")]
    TooManyInterim,
    #[error("upstream switched protocols for a request that asked for no upgrade")]
    UnexpectedSwitch,
    #[error("upstream closed the connection in the middle of a body")]
    Truncated,
}

/// A request the direct client can carry.
pub struct Outgoing {
    pub parts: request::Parts,
    pub body: Bytes,
}

impl Outgoing {
    /// The request back when the direct client cannot carry it: a body still streaming in
    /// from the client, or one whose `Content-Length` disagrees with the bytes read (which
    /// hyper's client then refuses as it always did).
    // Boxing either side would cost an allocation per request; the value moves once.
    #[allow(clippy::result_large_err)]
    pub fn take(req: Request<RequestBody>) -> Result<Self, Request<RequestBody>> {
        let (mut parts, body) = req.into_parts();
        // CONNECT turns the connection into a tunnel on a 2xx: hyper's upgrade path knows that.
        if parts.method == Method::CONNECT {
            return Err(Request::from_parts(parts, body));
        }
        let bytes = match body {
            Either::Left(incoming) if incoming.is_end_stream() => Bytes::new(),
            Either::Right(full) => full_bytes(full),
            body => return Err(Request::from_parts(parts, body)),
        };
        // The request leaves in one write that a socket buffer always takes, so an upstream
        // that answers before reading all of a body cannot stall it; larger bodies go through
        // hyper, which reads the answer while it writes.
        if bytes.len() > MAX_BODY {
            return Err(Request::from_parts(parts, Either::Right(Full::new(bytes))));
        }
        match parts.headers.get(CONTENT_LENGTH) {
            // hyper's server already refused a malformed one from the client.
            Some(v)
                if v.to_str().ok().and_then(|s| s.parse::<usize>().ok()) != Some(bytes.len()) =>
            {
                return Err(Request::from_parts(parts, Either::Right(Full::new(bytes))));
            }
            Some(_) => {}
            // A body read by an auth method came chunked (Transfer-Encoding is gone by now):
            // it is sent with its length. Methods that define a body say it is empty.
            None if !bytes.is_empty()
                || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) =>
            {
                parts
                    .headers
                    .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            }
            None => {}
        }
        Ok(Self { parts, body: bytes })
    }

    /// For another target, after this one refused the connection.
    pub fn into_request(self) -> Request<RequestBody> {
        Request::from_parts(self.parts, Either::Right(Full::new(self.body)))
    }

    /// RFC 9110 §9.2.2: may be sent again when a reused connection turns out closed.
    pub fn idempotent(&self) -> bool {
        matches!(
            self.parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        )
    }
}

/// `Full` yields its one frame at once, so a waker that does nothing is enough.
pub(crate) fn full_bytes(mut full: Full<Bytes>) -> Bytes {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(&mut full).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap_or_default(),
        _ => Bytes::new(),
    }
}

/// One upstream connection of the direct client.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    /// The request head is written here, reused from request to request.
    out: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
        }
    }

    /// False when the idle connection has been closed by the upstream or holds bytes nobody
    /// asked for. Costs a system call only when the reactor saw the socket become readable.
    pub fn is_fresh(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes the request and reads the final response head; the body stays in the buffer
    /// and on the socket for [`DirectBody`].
    pub async fn exchange(
        &mut self,
        req: &Outgoing,
        authority: &Authority,
    ) -> Result<ResponseHead, DirectError> {
        self.out.clear();
        let target = req.parts.uri.path_and_query().map_or("/", |p| p.as_str());
        head::encode_request(
            &req.parts.method,
            target,
            &req.parts.headers,
            authority.as_str(),
            &mut self.out,
        );
        self.out.extend_from_slice(&req.body);
        // An upstream may answer and close before it reads the request (a 401 or 413 of its
        // own): what it answered is still read, and only without an answer is the write's
        // failure the result.
        let write_failed = match self.stream.write_all(&self.out).await {
            Ok(()) => false,
            Err(e) if is_reset(&e) => true,
            // Not the upstream going away: nothing will answer.
            Err(e) => return Err(e.into()),
        };
        let mut interim = 0;
        let mut answered = false;
        loop {
            if !self.buf.is_empty() {
                answered = true;
                if let Some(head) = head::parse_response(&mut self.buf, &req.parts.method)? {
                    if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                        return Err(DirectError::UnexpectedSwitch);
                    }
                    if head.status.is_informational() {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(DirectError::TooManyInterim);
                        }
                        continue;
                    }
                    // Part of the request may still be unread on a connection that failed.
                    let mut head = head;
                    head.reusable &= !write_failed;
                    return Ok(head);
                }
            }
            if self.buf.capacity() - self.buf.len() < 1024 {
                self.buf.reserve(READ_CHUNK);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) if !answered => return Err(DirectError::Closed),
                Ok(0) => return Err(DirectError::Truncated),
                Ok(_) => {}
                Err(e) if !answered && is_reset(&e) => return Err(DirectError::Closed),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(method: Method, length: Option<&str>, body: &'static [u8]) -> Option<Outgoing> {
        let mut req = Request::builder().method(method).uri("/p");
        if let Some(l) = length {
            req = req.header(CONTENT_LENGTH, l);
        }
        let req = req
            .body(Either::Right(Full::new(Bytes::from_static(body))))
            .unwrap();
        Outgoing::take(req).ok()
    }

    #[test]
    fn a_read_body_is_sent_with_its_length_and_a_disagreeing_one_is_not_taken() {
        let out = take(Method::POST, None, b"abc").unwrap();
        assert_eq!(
            (out.parts.headers[CONTENT_LENGTH].as_bytes(), &out.body[..]),
            (&b"3"[..], &b"abc"[..])
        );
        let out = take(Method::POST, None, b"").unwrap();
        assert_eq!(out.parts.headers[CONTENT_LENGTH], "0");
        let out = take(Method::GET, None, b"").unwrap();
        assert!(!out.parts.headers.contains_key(CONTENT_LENGTH));
        assert!(take(Method::POST, Some("3"), b"abc").is_some());
        // A body cut short by the auth read: hyper refuses it as before.
        assert!(take(Method::POST, Some("10"), b"abc").is_none());
        assert!(take(Method::POST, Some("x"), b"abc").is_none());
        assert!(take(Method::CONNECT, None, b"").is_none());
        let big: &'static [u8] = Box::leak(vec![b'a'; MAX_BODY + 1].into_boxed_slice());
        assert!(take(Method::PUT, None, big).is_none());
    }
}
