//! Auth token in a query parameter: `<param name>\0<query>`. A key found is the decoded value
//! of a pair with that name; `strip` removes every such pair, keeps every other pair as sent and
//! leaves the path alone.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use portcullis_data_plane::auth::AuthMethod;
use portcullis_data_plane::auth::token::TokenAuth;
use portcullis_data_plane::error::ProxyError;
use portcullis_fuzz::{parts, split};
use portcullis_proto::model::AuthTokenSpec;

/// The decoded name of one `&`-separated pair, as a form decoder reads it.
fn pair_name(pair: &str) -> Cow<'_, str> {
    let raw = pair.split_once('=').map_or(pair, |(k, _)| k);
    if raw.contains(['%', '+']) {
        let bytes: Vec<u8> = raw
            .bytes()
            .map(|b| if b == b'+' { b' ' } else { b })
            .collect();
        Cow::Owned(String::from_utf8_lossy(&percent_decode(&bytes)).into_owned())
    } else {
        Cow::Borrowed(raw)
    }
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let (name, query) = split(data, 0);
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    if name.is_empty() {
        return;
    }
    let Ok(spec) = serde_json::from_value::<AuthTokenSpec>(serde_json::json!({
        "use_param": true, "param_name": name,
    })) else {
        return;
    };
    let Some(auth) = TokenAuth::new(&spec) else {
        return;
    };
    let mut target = b"/api/x?".to_vec();
    target.extend_from_slice(query);
    let Some(mut head) = parts(&target, &[]) else {
        return;
    };
    let sent = head.uri.query().unwrap_or_default().to_owned();
    let named: Vec<&str> = sent.split('&').filter(|p| pair_name(p) == name).collect();
    match auth.credential(&head, None) {
        Ok(key) => {
            assert!(key.len() >= 3, "key shorter than 3 accepted: {key:?}");
            assert!(
                !named.is_empty(),
                "key {key:?} found without a pair named {name:?}"
            );
        }
        Err(ProxyError::AuthMissing | ProxyError::Disallowed) => {}
        Err(other) => panic!("unexpected error {other:?}"),
    }
    auth.strip(&mut head);
    assert_eq!(head.uri.path(), "/api/x", "strip changed the path");
    let left = head.uri.query().unwrap_or_default();
    assert!(
        left.split('&').all(|p| pair_name(p) != name),
        "pair named {name:?} left in {left:?} (sent {sent:?})"
    );
    if !named.is_empty() {
        let kept: Vec<&str> = sent.split('&').filter(|p| pair_name(p) != name).collect();
        assert_eq!(left, kept.join("&"), "other pairs changed (sent {sent:?})");
    }
    assert_eq!(
        auth.credential(&head, None),
        Err(ProxyError::AuthMissing),
        "credential left after strip"
    );
});
