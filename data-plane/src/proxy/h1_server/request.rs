//! Reading a client's request head out of the connection's buffer with `httparse`.
//!
//! Only the plain shape of a request is taken here: HTTP/1.1, no `Transfer-Encoding`, at most
//! one `Content-Length` whose body is already in the buffer, and none of the headers that ask
//! the server for more than an answer (`Expect`, `Upgrade`, `TE`, a `Connection` other than
//! `keep-alive`). Everything else, malformed heads included, is hyper's to serve or refuse, so
//! its answers (400, 431, 100 Continue, upgrades, HTTP/2) stay what they were.

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body_util::{Either, Full};

use crate::proxy::RequestBody;

/// Header fields a head may have to be served here; hyper takes heads with more, up to
/// `--max-headers`.
pub const MAX_FIELDS: usize = 64;
/// Largest request body served here; larger ones stream through hyper.
pub const MAX_BODY: usize = 16 * 1024;

/// What the buffer holds.
// Returned by value straight into the server loop: boxing the request would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Head {
    /// Not the whole head yet.
    Partial,
    /// A request, with its head and body taken out of the buffer.
    Ready(Request<RequestBody>),
    /// A request (or bytes) for hyper, left in the buffer.
    Handoff,
}

/// Where one field of the head lies in the buffer.
#[derive(Clone, Copy, Default)]
struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

fn span(base: *const u8, part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - base as usize;
    (start, start + part.len())
}

/// `max_head` and `max_fields` are the client limits: a head that is over either goes to hyper,
/// which answers it 431 as it always did. `cache` is an emptied header map to fill, kept from
/// the connection's last response.
pub fn parse(
    buf: &mut BytesMut,
    max_head: usize,
    max_fields: usize,
    cache: &mut Option<HeaderMap>,
) -> Head {
    let mut storage =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut fields = [Field::default(); MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let head_len =
        match parsed.parse_with_uninit_headers(buf, &mut storage[..max_fields.min(MAX_FIELDS)]) {
            Ok(httparse::Status::Complete(n)) if n <= max_head => n,
            Ok(httparse::Status::Partial) if buf.len() < max_head => return Head::Partial,
            // httparse counts fields before the head is complete: the rest of it is waited for
            // under the header timeout here, and only a whole head goes to hyper.
            Err(httparse::Error::TooManyHeaders) if buf.len() < max_head && !head_ended(buf) => {
                return Head::Partial;
            }
            // Likewise the HTTP/2 connection preface, whose request line httparse refuses.
            Err(httparse::Error::Version) if is_preface_start(buf) => return Head::Partial,
            _ => return Head::Handoff,
        };
    if parsed.version != Some(1) {
        return Head::Handoff;
    }
    let Some(method) = parsed
        .method
        .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
    else {
        return Head::Handoff;
    };
    if method == Method::CONNECT {
        return Head::Handoff;
    }
    let base = buf.as_ptr();
    let Some(target) = parsed.path.map(|p| span(base, p.as_bytes())) else {
        return Head::Handoff;
    };
    let mut length: Option<usize> = None;
    let count = parsed.headers.len();
    for (field, h) in fields.iter_mut().zip(parsed.headers.iter()) {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match (length, digits(h.value)) {
                (None, Some(n)) if n <= MAX_BODY => length = Some(n),
                _ => return Head::Handoff,
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                return Head::Handoff;
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"te")
        {
            return Head::Handoff;
        }
        *field = Field {
            name: span(base, name),
            value: span(base, h.value),
        };
    }
    let body_len = length.unwrap_or(0);
    if buf.len() - head_len < body_len {
        // The body is still on its way: hyper reads it as it arrives.
        return Head::Handoff;
    }
    let bytes = buf.split_to(head_len + body_len).freeze();
    match build(&bytes, method, target, &fields[..count], head_len, cache) {
        Some(req) => Head::Ready(req),
        None => {
            // Not taken after all (a target or field the `http` types refuse): back in front
            // of whatever followed it, for hyper to answer.
            let rest = buf.split();
            buf.extend_from_slice(&bytes);
            buf.extend_from_slice(&rest);
            Head::Handoff
        }
    }
}

/// Room left in a new request's header map for what the proxy adds (`X-Forwarded-*`, a
/// rewritten `Host`, trace context) before it goes upstream.
const ADDED_FIELDS: usize = 4;

fn build(
    bytes: &Bytes,
    method: Method,
    target: (usize, usize),
    fields: &[Field],
    head_len: usize,
    cache: &mut Option<HeaderMap>,
) -> Option<Request<RequestBody>> {
    let uri = Uri::from_maybe_shared(bytes.slice(target.0..target.1)).ok()?;
    let mut headers = cache.take().unwrap_or_default();
    headers.reserve(fields.len() + ADDED_FIELDS);
    for f in fields {
        let name = HeaderName::from_bytes(&bytes[f.name.0..f.name.1]).ok()?;
        let value = HeaderValue::from_maybe_shared(bytes.slice(f.value.0..f.value.1)).ok()?;
        headers.append(name, value);
    }
    let mut req = Request::new(Either::Right(Full::new(bytes.slice(head_len..))));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Some(req)
}

/// The blank line that ends a head (or the bare-LF form httparse also reads).
fn head_ended(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w == b"\n\n") || buf.windows(4).any(|w| w == b"\r\n\r\n")
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The first bytes of the HTTP/2 connection preface, not all of it yet.
fn is_preface_start(buf: &[u8]) -> bool {
    buf.len() < PREFACE.len() && PREFACE.starts_with(buf)
}

/// A `Content-Length` value: ASCII digits only (RFC 9110 §8.6), no sign, no list.
fn digits(v: &[u8]) -> Option<usize> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0usize, |n, d| {
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> (Head, BytesMut) {
        let mut buf = BytesMut::from(s);
        let head = parse(&mut buf, 64 * 1024, 100, &mut None);
        (head, buf)
    }

    fn ready(s: &str) -> (Request<RequestBody>, BytesMut) {
        match parse_str(s) {
            (Head::Ready(r), rest) => (r, rest),
            _ => panic!("not served directly: {s:?}"),
        }
    }

    fn handed_off(s: &str) -> bool {
        let (head, rest) = parse_str(s);
        // What hyper gets is every byte the client sent.
        matches!(head, Head::Handoff) && rest == s.as_bytes()
    }

    #[test]
    fn a_kept_header_map_is_filled_again_from_empty() {
        let mut kept = HeaderMap::with_capacity(16);
        kept.insert("x-old", HeaderValue::from_static("1"));
        kept.clear();
        let mut cache = Some(kept);
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        let Head::Ready(req) = parse(&mut buf, 64 * 1024, 100, &mut cache) else {
            panic!("served directly")
        };
        assert!(cache.is_none());
        assert_eq!(req.headers().len(), 1);
        assert!(req.headers().capacity() >= 16);
    }

    #[test]
    fn a_plain_request_is_taken_with_its_body_and_leaves_the_next_one() {
        let (req, rest) = ready(
            "POST /a/b?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nX-Two: a\r\nx-two: b\r\n\r\nabcGET / HTTP/1.1\r\n",
        );
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().path(), "/a/b");
        assert_eq!(req.uri().query(), Some("q=1"));
        assert_eq!(req.headers()["host"], "x");
        let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["a", "b"]);
        let Either::Right(body) = req.into_body() else {
            panic!("in memory")
        };
        assert_eq!(crate::proxy::direct::full_bytes(body), "abc");
        assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn partial_heads_wait_and_everything_unusual_goes_to_hyper_untouched() {
        assert!(matches!(
            parse_str("GET / HTTP/1.1\r\nHost: x\r\n").0,
            Head::Partial
        ));
        for s in [
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
            "POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab",
            "POST / HTTP/1.1\r\nContent-Length: +2\r\n\r\nab",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 16385\r\n\r\n",
            "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\n\r\n",
            "GARBAGE\r\n\r\n",
        ] {
            assert!(handed_off(s), "{s:?}");
        }
        let (req, _) = ready("GET / HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n");
        assert_eq!(req.headers()["connection"], "Keep-Alive");
    }

    #[test]
    fn heads_over_the_client_limits_are_hyper_s_to_refuse() {
        let many: String = (0..70).map(|i| format!("x-{i}: v\r\n")).collect();
        assert!(handed_off(&format!("GET / HTTP/1.1\r\n{many}\r\n")));
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nA: b\r\nC: d\r\n\r\n");
        assert!(matches!(
            parse(&mut buf, 64 * 1024, 1, &mut None),
            Head::Handoff
        ));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "v".repeat(9000));
        let mut buf = BytesMut::from(long.as_str());
        assert!(matches!(
            parse(&mut buf, 8192, 100, &mut None),
            Head::Handoff
        ));
        // An unfinished head already over the limit is not waited for.
        let mut buf = BytesMut::from(&long.as_bytes()[..8300]);
        assert!(matches!(
            parse(&mut buf, 8192, 100, &mut None),
            Head::Handoff
        ));
        // An unfinished head over the field count is waited for: hyper gets it whole, so the
        // header timeout runs from its first byte, not from the hand-off.
        let unfinished = format!("GET / HTTP/1.1\r\n{many}");
        assert!(matches!(parse_str(&unfinished).0, Head::Partial));
        // The same for the HTTP/2 preface, which hyper then takes complete.
        assert!(matches!(
            parse_str("PRI * HTTP/2.0\r\n\r\nSM").0,
            Head::Partial
        ));
        assert!(handed_off("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    }
}
