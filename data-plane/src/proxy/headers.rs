//! Header rewriting between client and upstream (RFC 9110 §7.6.1 hop-by-hop rules).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const HOPS: usize = 8;
/// Headers that describe one connection and must not be forwarded.
const HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Some clients still send it; it is hop-by-hop too.
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// True when a comma-separated header (`Connection`, `TE`) lists `token`, case-insensitively,
/// across all of its fields.
pub fn lists_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including those named in `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are present (most messages carry none, and an
    // upstream's answer often only `Connection: keep-alive`): only those are removed, rather
    // than nine hashed removals on every message.
    let mut present = [false; HOPS + 1];
    let mut any = false;
    for name in headers.keys() {
        let at = HOP_BY_HOP
            .iter()
            .position(|h| h == name)
            .or_else(|| (*name == PROXY_CONNECTION).then_some(HOPS));
        if let Some(i) = at {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    // Every Connection header counts: `Connection: close` then `Connection: x-hop` names both.
    // `close` and `keep-alive` name no other header (`Keep-Alive` is removed below anyway).
    if present[0] {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| {
                !n.is_empty()
                    && !n.eq_ignore_ascii_case("close")
                    && !n.eq_ignore_ascii_case("keep-alive")
            })
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    if present[HOPS] {
        headers.remove(PROXY_CONNECTION);
    }
}

/// Appends the client address (`ConnInfo::forwarded_for`) to `X-Forwarded-For` and records
/// the scheme it used.
pub fn add_forwarded(headers: &mut HeaderMap, client: &HeaderValue, scheme: &'static str) {
    let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            HeaderValue::from_str(&format!("{prev}, {}", client.to_str().unwrap_or_default())).ok()
        }
        None => Some(client.clone()),
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
}

/// An address as `X-Forwarded-For` carries it: IPv4-mapped IPv6 addresses as IPv4.
pub fn address_value(ip: IpAddr) -> HeaderValue {
    let text = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or_else(|| v6.to_string(), |v4| v4.to_string()),
        IpAddr::V4(v4) => v4.to_string(),
    };
    // Digits, dots and colons only.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("x-second-hop, close"),
        );
        h.insert("x-second-hop", HeaderValue::from_static("1"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
        // An answer with only `Connection: keep-alive`: that header goes, the rest stays.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_LENGTH));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let client = address_value("::ffff:127.0.0.1".parse().unwrap());
        add_forwarded(&mut h, &client, "http");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        let mut h = HeaderMap::new();
        add_forwarded(
            &mut h,
            &address_value("2001:db8::1".parse().unwrap()),
            "https",
        );
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
    }
}
