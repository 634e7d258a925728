//! Basic auth credentials extracted from the body with the regexps of an API definition (the
//! XML shape Tyk documents). Any body never panics; a user found is what the user regexp
//! captured; a body built from `user\0password` is read back as `user`.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use portcullis_data_plane::auth::AuthMethod;
use portcullis_data_plane::auth::basic::BasicAuth;
use portcullis_data_plane::error::ProxyError;
use portcullis_fuzz::{parts, split};
use portcullis_proto::model::BasicAuthSpec;

/// Built once: compiling the regexps per input would be most of the work.
static AUTH: LazyLock<BasicAuth> = LazyLock::new(|| {
    let Ok(spec) = serde_json::from_value::<BasicAuthSpec>(serde_json::json!({
        "extract_from_body": true,
        "body_user_regexp": "<User>(.*)</User>",
        "body_password_regexp": "<Password>(.*)</Password>",
    })) else {
        panic!("the spec is valid");
    };
    BasicAuth::new("fuzz", &spec)
});

fuzz_target!(|data: &[u8]| {
    let auth = &*AUTH;
    assert!(auth.needs_body());
    let Some(head) = parts(b"/", &[]) else {
        panic!("an empty request head is valid");
    };

    match auth.credential(&head, Some(data)) {
        Ok(user) => {
            let text = String::from_utf8_lossy(data);
            assert!(
                text.contains(&format!("<User>{user}</User>")),
                "user {user:?} not captured from {text:?}"
            );
        }
        Err(ProxyError::BodyNoUser | ProxyError::BodyNoPassword) => {}
        Err(other) => panic!("unexpected error {other:?}"),
    }

    // `.` stops at a line end and the capture is greedy: keep the parts free of both.
    let (user, password) = split(data, 0);
    let clean = |b: &[u8]| String::from_utf8_lossy(b).replace(['\n', '\r', '<', '>'], "");
    let (user, password) = (clean(user), clean(password));
    let body = format!("<Login><User>{user}</User><Password>{password}</Password></Login>");
    assert_eq!(
        auth.credential(&head, Some(body.as_bytes())).as_deref(),
        Ok(user.as_str()),
        "user not read back from {body:?}"
    );
});
