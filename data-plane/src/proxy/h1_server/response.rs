//! Writing a response to an HTTP/1.1 client: the head and the first part of the body in one
//! write, then the rest of the body as it arrives, with hyper's framing rules (RFC 9112 §6):
//! a body of known length gets `Content-Length`, any other `Transfer-Encoding: chunked`, and
//! answers to HEAD and 1xx/204/304 answers carry none.

use std::cell::RefCell;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{Response, StatusCode};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Connection;
use crate::proxy::ProxyBody;

/// Body bytes copied behind the head into one write; larger frames are written on their own.
const COALESCE: usize = 16 * 1024;
/// A response's header map is kept for the next request unless it grew past this.
const MAX_CACHED_FIELDS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// No body on the wire.
    None,
    /// No body on the wire, but the length a GET would have had (an answer to HEAD).
    HeadOf(u64),
    Length(u64),
    Chunked,
}

/// Whether the connection can carry another request after this response.
#[derive(Debug, PartialEq)]
pub enum After {
    KeepAlive,
    Close,
}

/// Writes `resp` with the connection's write buffer. An error is the client's socket failing;
/// a body that failed or disagreed with its length ends in `After::Close`, which the client
/// sees as a cut-off response, as from hyper.
pub(super) async fn write<W: AsyncRead + AsyncWrite + Unpin>(
    io: &mut W,
    c: &mut Connection,
    resp: Response<ProxyBody>,
    head_request: bool,
) -> std::io::Result<After> {
    let (mut parts, mut body) = resp.into_parts();
    if parts.status.is_informational() {
        // Only a final answer can end an exchange: a 1xx here (a plugin's or an upstream's
        // status) would pair the client's next answer with this request, and a 101 would turn
        // the connection into a tunnel behind the gateway's back. hyper answers 500 and closes.
        c.out.clear();
        encode_head(
            StatusCode::INTERNAL_SERVER_ERROR,
            &http::HeaderMap::new(),
            Framing::Length(0),
            &mut c.out,
        );
        io.write_all(&c.out).await?;
        io.flush().await?;
        return Ok(After::Close);
    }
    let status = parts.status;
    let exact = body.size_hint().exact();
    let framing =
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            // The GET's length, when the answer knows it and does not say it.
            match exact {
                Some(n) if head_request && n > 0 && !parts.headers.contains_key(CONTENT_LENGTH) => {
                    Framing::HeadOf(n)
                }
                _ => Framing::None,
            }
        } else if let Some(n) = exact {
            Framing::Length(n)
        } else if let Some(n) = declared_length(&parts.headers) {
            Framing::Length(n)
        } else {
            Framing::Chunked
        };
    let mut after = if lists_close(&parts.headers) {
        After::Close
    } else {
        After::KeepAlive
    };
    let out = &mut c.out;
    out.clear();
    encode_head(status, &parts.headers, framing, out);
    if parts.headers.capacity() <= MAX_CACHED_FIELDS {
        parts.headers.clear();
        c.headers = Some(parts.headers);
    }
    let watch = &mut c.buf;
    match framing {
        Framing::None | Framing::HeadOf(_) => {
            // A body already at its end is polled once, so the upstream connection it came on
            // is given back to the client connection's slot.
            if body.is_end_stream() {
                let _ = body.frame().now_or_never();
            }
            io.write_all(out).await?;
        }
        Framing::Length(n) => {
            let mut sent = 0u64;
            if n == 0 {
                let _ = body.frame().now_or_never();
            }
            while sent < n {
                let Next::Frame(frame) = next_frame(io, out, watch, &mut body).await? else {
                    break;
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let room = n - sent;
                if data.len() as u64 > room {
                    // More than the length the head announced: the rest is not sent.
                    push(io, out, data.slice(..room as usize)).await?;
                    sent = n;
                    after = After::Close;
                    break;
                }
                sent += data.len() as u64;
                push(io, out, data).await?;
            }
            if sent < n {
                after = After::Close;
            }
            io.write_all(out).await?;
        }
        Framing::Chunked => {
            let ended = loop {
                let frame = match next_frame(io, out, watch, &mut body).await? {
                    Next::Frame(frame) => frame,
                    ended => break ended,
                };
                // Trailers are dropped, as hyper does for clients that did not ask for them
                // (those that send `TE` are served by hyper).
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                write_hex(data.len(), out);
                out.extend_from_slice(b"\r\n");
                push(io, out, data).await?;
                out.extend_from_slice(b"\r\n");
            };
            // A failed body gets no last chunk: the client sees it cut off.
            if matches!(ended, Next::End) {
                out.extend_from_slice(b"0\r\n\r\n");
            } else {
                after = After::Close;
            }
            io.write_all(out).await?;
        }
    }
    io.flush().await?;
    Ok(after)
}

enum Next {
    Frame(http_body::Frame<Bytes>),
    End,
    /// The body failed, or the client went away while it waited for more.
    Failed,
}

/// The body's next frame. When it is not ready, what `out` holds is sent first, so a slow
/// stream (server-sent events) never holds back its head or earlier frames, and while it
/// waits an idle client socket is watched (into `watch`, the connection's read buffer), so a
/// client that leaves a stream ends it and its upstream request, as in hyper.
async fn next_frame<W: AsyncRead + AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut Vec<u8>,
    watch: &mut BytesMut,
    body: &mut ProxyBody,
) -> std::io::Result<Next> {
    let polled = match body.frame().now_or_never() {
        Some(f) => f,
        None => {
            if !out.is_empty() {
                io.write_all(out).await?;
                out.clear();
            }
            io.flush().await?;
            loop {
                tokio::select! {
                    biased;
                    frame = body.frame() => break frame,
                    read = io.read_buf(watch), if watch.is_empty() => match read {
                        Ok(n) if n > 0 => {}
                        _ => return Ok(Next::Failed),
                    },
                }
            }
        }
    };
    Ok(match polled {
        Some(Ok(frame)) => Next::Frame(frame),
        Some(Err(e)) => {
            tracing::debug!(error = %e, "response body failed; closing the client connection");
            Next::Failed
        }
        None => Next::End,
    })
}

thread_local! {
    static DATE_CACHE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Adds `data` to the pending write, or writes both when it is large.
async fn push<W: AsyncWrite + Unpin>(
    io: &mut W,
    out: &mut Vec<u8>,
    data: Bytes,
) -> std::io::Result<()> {
    if out.len() + data.len() <= COALESCE {
        out.extend_from_slice(&data);
        return Ok(());
    }
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    io.write_all(&data).await
}

fn encode_head(status: StatusCode, headers: &http::HeaderMap, framing: Framing, out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let bodyless_status = status.is_informational() || status == StatusCode::NO_CONTENT;
    let mut length_written = false;
    let mut digits = [0u8; 20];
    for (name, value) in headers {
        if name == TRANSFER_ENCODING {
            continue;
        }
        if name == CONTENT_LENGTH {
            // One length, the one the body is framed by (a HEAD or 304 keeps the GET's).
            let keep = match framing {
                Framing::Length(n) => {
                    !length_written && value.as_bytes() == decimal(n, &mut digits)
                }
                Framing::None | Framing::HeadOf(_) => !bodyless_status && !length_written,
                Framing::Chunked => false,
            };
            if !keep {
                continue;
            }
            length_written = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) | Framing::HeadOf(n) if !length_written => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(decimal(n, &mut digits));
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !headers.contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

fn write_hex(n: usize, out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    let mut i = tmp.len();
    let mut n = n;
    loop {
        i -= 1;
        tmp[i] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    let v = headers.get(CONTENT_LENGTH)?.to_str().ok()?;
    v.parse().ok()
}

fn lists_close(headers: &http::HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// The IMF-fixdate of now, formatted at most once a second per thread.
fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.0 != now {
            let text = chrono::DateTime::<chrono::Utc>::from(SystemTime::now())
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string();
            if text.len() == 29 {
                cache.1.copy_from_slice(text.as_bytes());
                cache.0 = now;
            }
        }
        out.extend_from_slice(&cache.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Either, Full};

    async fn written(resp: Response<ProxyBody>, head: bool) -> (String, After) {
        let mut io = std::io::Cursor::new(Vec::new());
        let mut c = Connection {
            buf: BytesMut::new(),
            out: Vec::new(),
            headers: None,
        };
        let after = write(&mut io, &mut c, resp, head).await.unwrap();
        let text = String::from_utf8(io.into_inner()).unwrap();
        // The gateway's own date changes from second to second: it is checked, then left out.
        let mut lines: Vec<&str> = text.split("\r\n").collect();
        let own_date = lines
            .iter()
            .position(|l| l.starts_with("date: ") && l.ends_with(" GMT"));
        match own_date {
            Some(i) => {
                assert_eq!(lines[i].len(), "date: ".len() + 29, "{}", lines[i]);
                lines.remove(i);
            }
            None => assert!(text.contains("\r\ndate: "), "every answer is dated: {text}"),
        }
        (lines.join("|"), after)
    }

    fn full(status: u16, body: &'static str) -> Response<ProxyBody> {
        let mut r = Response::new(Either::Right(Full::new(Bytes::from_static(
            body.as_bytes(),
        ))));
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    }

    #[tokio::test]
    async fn known_lengths_are_framed_by_content_length_and_bodyless_answers_carry_none() {
        let (text, after) = written(full(200, "hello"), false).await;
        assert_eq!(text, "HTTP/1.1 200 OK|content-length: 5||hello");
        assert_eq!(after, After::KeepAlive);
        let mut r = full(200, "hello");
        r.headers_mut().insert(CONTENT_LENGTH, "5".parse().unwrap());
        r.headers_mut().insert(DATE, "x".parse().unwrap());
        assert_eq!(
            written(r, true).await.0,
            "HTTP/1.1 200 OK|content-length: 5|date: x||",
            "HEAD: the GET's head, no body"
        );
        let mut r = full(204, "");
        r.headers_mut().insert(CONTENT_LENGTH, "0".parse().unwrap());
        assert_eq!(written(r, false).await.0, "HTTP/1.1 204 No Content||");
        // A length that disagrees with the body's is replaced by the body's.
        let mut r = full(200, "abc");
        r.headers_mut()
            .insert(CONTENT_LENGTH, "10".parse().unwrap());
        assert_eq!(
            written(r, false).await.0,
            "HTTP/1.1 200 OK|content-length: 3||abc"
        );
        let mut r = full(599, "");
        r.headers_mut()
            .insert(CONNECTION, "x, Close".parse().unwrap());
        let (text, after) = written(r, false).await;
        assert_eq!(
            text,
            "HTTP/1.1 599 |connection: x, Close|content-length: 0||"
        );
        assert_eq!(after, After::Close);
    }

    #[test]
    fn lengths_are_decimal_and_chunk_sizes_lower_case_hex() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 12345, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
        for (n, hex) in [(0, "0"), (15, "f"), (16, "10"), (65535, "ffff")] {
            let mut out = Vec::new();
            write_hex(n, &mut out);
            assert_eq!(out, hex.as_bytes());
        }
    }
}
