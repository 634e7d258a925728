//! Request heads written and response heads read by the direct HTTP/1.1 client.

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};

use super::DirectError;

/// The most header fields an upstream response may carry (hyper's client default).
pub const MAX_HEADERS: usize = 100;

/// The largest response head read before the upstream is given up on: hyper's client bound,
/// which upstreams with large `Set-Cookie` or policy headers already fit.
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// Writes `METHOD target HTTP/1.1`, the headers and the blank line into `out`. The fields are
/// written as the request carries them: the caller already dropped hop-by-hop fields and set
/// `Content-Length` where a body needs one. A request without Host gets the upstream's
/// authority (RFC 9112 §3.2 makes Host mandatory on HTTP/1.1).
pub fn encode_request(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    authority: &str,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !headers.contains_key(HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(authority.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all: HEAD, 1xx, 204, 304, or `Content-Length: 0`.
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the upstream closes; the connection cannot be reused.
    UntilClose,
}

/// A response head, with what the body reader needs to know.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// False when the upstream asked to close, spoke HTTP/1.0 without keep-alive, or sent
    /// framing that leaves the connection's state in doubt.
    pub reusable: bool,
}

/// Parses the response head at the start of `buf` and splits it off. `Ok(None)`: the head is
/// not complete yet.
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
) -> Result<Option<ResponseHead>, DirectError> {
    let (len, status, minor, spans) = {
        // Left uninitialised: zeroing 100 fields cost more than parsing a typical head.
        let mut fields =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut fields,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD_BYTES {
                    return Err(DirectError::HeadTooLarge);
                }
                return Ok(None);
            }
            Err(httparse::Error::TooManyHeaders) => return Err(DirectError::HeadTooLarge),
            Err(e) => return Err(DirectError::BadHead(parse_error(e))),
        };
        if len > MAX_HEAD_BYTES {
            return Err(DirectError::HeadTooLarge);
        }
        // Offsets rather than slices, so the head can be frozen once and every value shares it.
        let base = buf.as_ptr() as usize;
        let spans: Vec<[usize; 4]> = resp
            .headers
            .iter()
            .map(|field| {
                let name = field.name.as_ptr() as usize - base;
                let value = field.value.as_ptr() as usize - base;
                [
                    name,
                    name + field.name.len(),
                    value,
                    value + field.value.len(),
                ]
            })
            .collect();
        (
            len,
            resp.code.unwrap_or(0),
            resp.version.unwrap_or(1),
            spans,
        )
    };
    let head: Bytes = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(status).map_err(|_| DirectError::BadHead("status code"))?;
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &[n0, n1, v0, v1] in &spans {
        let name = HeaderName::from_bytes(&head[n0..n1])
            .map_err(|_| DirectError::BadHead("header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1))
            .map_err(|_| DirectError::BadHead("header value"))?;
        headers.append(name, value);
    }
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut reusable = keep_alive(&headers, version);
    let framing = framing(method, status, version, &mut headers, &mut reusable)?;
    if framing == Framing::UntilClose {
        reusable = false;
    }
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        reusable,
    }))
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status line",
        httparse::Error::Version => "version",
        _ => "syntax",
    }
}

fn keep_alive(headers: &HeaderMap, version: Version) -> bool {
    let listed = |token: &str| crate::proxy::headers::lists_token(headers, &CONNECTION, token);
    if version == Version::HTTP_10 {
        listed("keep-alive")
    } else {
        !listed("close")
    }
}

fn framing(
    method: &Method,
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
    reusable: &mut bool,
) -> Result<Framing, DirectError> {
    let chunked = headers.contains_key(http::header::TRANSFER_ENCODING);
    if *method == Method::HEAD {
        // A HEAD answer carries the GET's Content-Length, never a body; one that says it is
        // chunked may be followed by one, so its connection is not trusted again.
        *reusable &= !chunked;
        return Ok(Framing::Empty);
    }
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        // Body framing on an answer that has no body: a confused upstream whose late bytes
        // must not become the next request's answer.
        *reusable &= !chunked && matches!(content_length(headers), Ok(None | Some(0)));
        return Ok(Framing::Empty);
    }
    if chunked {
        if version == Version::HTTP_10 {
            // RFC 9112 §6.1: faulty framing in an HTTP/1.0 message; close after it.
            *reusable = false;
        }
        let mut codings = headers
            .get_all(http::header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty())
            .peekable();
        let mut chunked_last = false;
        while let Some(coding) = codings.next() {
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            if chunked && codings.peek().is_some() {
                // RFC 9112 §6.1: chunked is applied once and last; anything else is a message
                // no two parsers read the same way.
                return Err(DirectError::BadFraming(
                    "chunked is not the final transfer coding",
                ));
            }
            chunked_last = chunked;
        }
        // §6.3 rule 3: Transfer-Encoding wins over Content-Length, and such a message must
        // not leave the connection open for another.
        if headers.remove(CONTENT_LENGTH).is_some() {
            *reusable = false;
        }
        return Ok(if chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    match content_length(headers)? {
        Some(0) => Ok(Framing::Empty),
        Some(n) => Ok(Framing::Length(n)),
        None => Ok(Framing::UntilClose),
    }
}

/// Every `Content-Length` field and list member must be the same run of digits (§6.3 rule 5:
/// anything else is an unrecoverable error).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, DirectError> {
    let mut found = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for member in value.as_bytes().split(|b| *b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() || member.len() > 19 || !member.iter().all(u8::is_ascii_digit) {
                return Err(DirectError::BadFraming("invalid Content-Length"));
            }
            let n = member
                .iter()
                .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            match found {
                Some(prev) if prev != n => {
                    return Err(DirectError::BadFraming("conflicting Content-Length"));
                }
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, method: Method) -> Result<Option<ResponseHead>, DirectError> {
        let mut buf = BytesMut::from(raw.as_bytes());
        parse_response(&mut buf, &method)
    }

    #[test]
    fn content_length_response_is_reusable_and_leaves_the_body() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello"[..]);
        let head = parse_response(&mut buf, &Method::GET).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.reusable);
        assert_eq!(head.headers["x-a"], "b");
        assert_eq!(&buf[..], b"hello");
    }

    #[test]
    fn partial_head_waits_and_oversized_head_fails() {
        assert!(
            parse("HTTP/1.1 200 OK\r\nContent-Le", Method::GET)
                .unwrap()
                .is_none()
        );
        let big = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES + 1));
        assert!(matches!(
            parse(&big, Method::GET),
            Err(DirectError::HeadTooLarge)
        ));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert!(matches!(
            parse(&many, Method::GET),
            Err(DirectError::HeadTooLarge)
        ));
    }

    #[test]
    fn transfer_encoding_beats_content_length_and_closes() {
        let head = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::GET,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.reusable);
        assert!(!head.headers.contains_key(CONTENT_LENGTH));
    }

    #[test]
    fn chunked_not_last_and_conflicting_lengths_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(
                matches!(parse(raw, Method::GET), Err(DirectError::BadFraming(_))),
                "{raw}"
            );
        }
        let same = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n",
            Method::GET,
        );
        assert_eq!(same.unwrap().unwrap().framing, Framing::Length(3));
    }

    #[test]
    fn bodiless_responses_and_close_delimited() {
        let head = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            Method::HEAD,
        );
        assert_eq!(head.unwrap().unwrap().framing, Framing::Empty);
        let head = parse("HTTP/1.1 304 Not Modified\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!((head.framing, head.reusable), (Framing::Empty, true));
        let head = parse(
            "HTTP/1.1 204 No Content\r\nContent-Length: 4\r\n\r\n",
            Method::GET,
        );
        let head = head.unwrap().unwrap();
        assert_eq!((head.framing, head.reusable), (Framing::Empty, false));
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(!parse(chunked, Method::HEAD).unwrap().unwrap().reusable);
        let head = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
            Method::HEAD,
        );
        assert!(head.unwrap().unwrap().reusable);
        let old_chunked =
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = parse(old_chunked, Method::GET).unwrap().unwrap();
        assert_eq!((head.framing, head.reusable), (Framing::Chunked, false));
        let head = parse("HTTP/1.1 200 OK\r\n\r\n", Method::GET)
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.reusable);
        let head = parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", Method::GET);
        assert!(!head.unwrap().unwrap().reusable);
        let head = parse(
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
            Method::GET,
        );
        assert!(head.unwrap().unwrap().reusable);
        let head = parse(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
            Method::GET,
        );
        assert!(!head.unwrap().unwrap().reusable);
    }

    #[test]
    fn obsolete_line_folding_is_refused() {
        let folded = "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n";
        assert!(matches!(
            parse(folded, Method::GET),
            Err(DirectError::BadHead(_))
        ));
    }

    #[test]
    fn request_head_gets_host_when_missing() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        let mut out = Vec::new();
        encode_request(&Method::GET, "/p?q", &headers, "up:80", &mut out);
        assert_eq!(out, b"GET /p?q HTTP/1.1\r\nhost: up:80\r\nx-a: 1\r\n\r\n");
    }
}
