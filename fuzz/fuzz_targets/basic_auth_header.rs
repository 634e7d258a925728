//! Basic auth header. Raw bytes as the `Authorization` value never panic and a user found never
//! holds a `:`; and `user\0password` encoded as a client would is always read back as `user`.
#![no_main]

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use portcullis_data_plane::auth::AuthMethod;
use portcullis_data_plane::auth::basic::BasicAuth;
use portcullis_data_plane::error::ProxyError;
use portcullis_fuzz::{parts, split};
use portcullis_proto::model::BasicAuthSpec;

fuzz_target!(|data: &[u8]| {
    let auth = BasicAuth::new("fuzz", &BasicAuthSpec::default());

    if let Some(mut head) = parts(b"/", &[("authorization", data)]) {
        match auth.credential(&head, None) {
            Ok(user) => assert!(!user.contains(':'), "user {user:?} holds a ':'"),
            Err(
                ProxyError::BasicMissing
                | ProxyError::BasicNotBasic
                | ProxyError::BasicNotEncoded
                | ProxyError::BasicNotPair,
            ) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
        auth.strip(&mut head);
        assert_eq!(auth.credential(&head, None), Err(ProxyError::BasicMissing));
    }

    let (user, password) = split(data, 0);
    let user = String::from_utf8_lossy(user).replace(':', "");
    let password = String::from_utf8_lossy(password).replace(':', "");
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let head = parts(
        b"/",
        &[("authorization", format!("Basic {encoded}").as_bytes())],
    )
    .unwrap_or_else(|| panic!("a base64 header value is always valid"));
    assert_eq!(
        auth.credential(&head, None).as_deref(),
        Ok(user.as_str()),
        "user {user:?} with password {password:?} not read back"
    );
});
