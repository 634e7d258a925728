//! Auth token in a header: `<name>\0<value>`. The key found is never shorter than Tyk's minimum,
//! is part of what was sent, and is gone after `strip` (so it never reaches the upstream).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_data_plane::auth::AuthMethod;
use portcullis_data_plane::auth::token::TokenAuth;
use portcullis_data_plane::error::ProxyError;
use portcullis_fuzz::{parts, split};
use portcullis_proto::model::AuthTokenSpec;

fuzz_target!(|data: &[u8]| {
    let (name, value) = split(data, 0);
    let Ok(name) = std::str::from_utf8(name) else {
        return;
    };
    let Ok(spec) =
        serde_json::from_value::<AuthTokenSpec>(serde_json::json!({ "auth_header_name": name }))
    else {
        return;
    };
    // An unusable header name leaves the API without a method (closed), which is fine.
    let Some(auth) = TokenAuth::new(&spec) else {
        return;
    };
    let Some(mut head) = parts(b"/", &[(spec.auth_header_name.as_str(), value)]) else {
        return;
    };
    match auth.credential(&head, None) {
        Ok(key) => {
            assert!(key.len() >= 3, "key shorter than 3 accepted: {key:?}");
            assert_eq!(key.trim(), key, "key keeps surrounding whitespace");
            let sent = String::from_utf8_lossy(value);
            assert!(sent.contains(key.as_ref()), "key {key:?} not in {sent:?}");
        }
        Err(ProxyError::AuthMissing | ProxyError::Disallowed) => {}
        Err(other) => panic!("unexpected error {other:?}"),
    }
    auth.strip(&mut head);
    assert_eq!(
        auth.credential(&head, None),
        Err(ProxyError::AuthMissing),
        "credential left after strip"
    );
});
