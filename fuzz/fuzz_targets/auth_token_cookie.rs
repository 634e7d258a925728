//! Auth token in a cookie: `<cookie name>\0<Cookie header>\0<second Cookie header>`. A key found
//! is the value of a cookie of that name; `strip` removes every cookie of that name from every
//! `Cookie` header and keeps the others.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_data_plane::auth::AuthMethod;
use portcullis_data_plane::auth::token::TokenAuth;
use portcullis_data_plane::error::ProxyError;
use portcullis_fuzz::{parts, split};
use portcullis_proto::model::AuthTokenSpec;

/// Each non-empty `;`-separated cookie, trimmed, in order.
fn cookies(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let (name, rest) = split(data, 0);
    let (first, second) = split(rest, 0);
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    if name.is_empty() {
        return;
    }
    let Ok(spec) = serde_json::from_value::<AuthTokenSpec>(serde_json::json!({
        "use_cookie": true, "cookie_name": name,
    })) else {
        return;
    };
    let Some(auth) = TokenAuth::new(&spec) else {
        return;
    };
    let Some(mut head) = parts(b"/", &[("cookie", first), ("cookie", second)]) else {
        return;
    };
    let sent = cookies(&head.headers);
    match auth.credential(&head, None) {
        Ok(key) => {
            assert!(key.len() >= 3, "key shorter than 3 accepted: {key:?}");
            assert!(
                sent.iter()
                    .any(|c| c.split_once('=') == Some((name, key.as_ref()))),
                "key {key:?} is not the value of a cookie {name:?} in {sent:?}"
            );
        }
        Err(ProxyError::AuthMissing | ProxyError::Disallowed) => {}
        Err(other) => panic!("unexpected error {other:?}"),
    }
    auth.strip(&mut head);
    let left = cookies(&head.headers);
    let expected: Vec<String> = sent
        .into_iter()
        .filter(|c| c.split_once('=').is_none_or(|(k, _)| k != name))
        .collect();
    assert_eq!(left, expected, "strip kept the key or lost other cookies");
    assert_eq!(
        auth.credential(&head, None),
        Err(ProxyError::AuthMissing),
        "credential left after strip"
    );
});
