//! Helpers shared by the fuzz targets: splitting one input into fields, building request heads,
//! and driving the auth methods' futures (they never wait on I/O for the parts fuzzed here).

use std::future::Future;
use std::task::{Context, Poll, Waker};

use http::request::Parts;

/// Splits `data` at the first `sep`: (before, after). No `sep`: (all, empty).
pub fn split(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A request head for `path_and_query` with `headers`; `None` when `http` refuses any part,
/// as hyper would have refused the request before the gateway saw it.
pub fn parts(path_and_query: &[u8], headers: &[(&str, &[u8])]) -> Option<Parts> {
    let uri = http::Uri::builder()
        .path_and_query(path_and_query)
        .build()
        .ok()?;
    let mut req = http::Request::builder().uri(uri);
    for (name, value) in headers {
        let value = http::HeaderValue::from_bytes(value).ok()?;
        req = req.header(*name, value);
    }
    Some(req.body(()).ok()?.into_parts().0)
}

/// Polls `fut` once. The futures fuzzed here never wait, so anything else is a bug.
pub fn ready<T>(fut: impl Future<Output = T>) -> T {
    let mut fut = std::pin::pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("future waited although it has no I/O to wait for"),
    }
}
