//! Header rewriting between client and upstream (RFC 9110 §7.6.1 hop-by-hop rules).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection and must not be forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
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
    // Most messages carry none: one pass over the names is cheaper than ten hashed removals.
    if !headers
        .keys()
        .any(|k| HOP_BY_HOP.contains(k) || *k == PROXY_CONNECTION)
    {
        return;
    }
    // Every Connection header counts: `Connection: close` then `Connection: x-hop` names both.
    if headers.contains_key(header::CONNECTION) {
        let listed: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(PROXY_CONNECTION);
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
        h.append(header::CONNECTION, HeaderValue::from_static("x-second-hop"));
        h.insert("x-second-hop", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
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
