//! Upstream response bytes as the direct HTTP/1.1 client reads them: the first byte picks GET
//! or HEAD, the rest is a response head and, when it says chunked, the body. Nothing panics; a
//! parsed head takes exactly its own bytes; decoded chunk data is never empty and never more
//! than the bytes it came from.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use portcullis_data_plane::proxy::direct::{Chunked, Framing, Step, parse_response};

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let method = if first & 1 == 0 {
        http::Method::GET
    } else {
        http::Method::HEAD
    };
    let mut buf = BytesMut::from(rest);
    let Ok(Some(head)) = parse_response(&mut buf, &method) else {
        return;
    };
    assert!(buf.len() < rest.len(), "a head is at least one byte");
    if method == http::Method::HEAD {
        assert_eq!(head.framing, Framing::Empty);
    }
    if head.framing != Framing::Chunked {
        return;
    }
    let fed = buf.len();
    let mut decoder = Chunked::default();
    let mut out = 0;
    while let Ok(Step::Data(d)) = decoder.decode(&mut buf) {
        assert!(!d.is_empty());
        out += d.len();
    }
    assert!(out <= fed);
});
