//! Mashery request signature: `<flags><key>\0<signature>`. A signature is accepted only when
//! it is `hex(hash(key + secret + t))` for a second `t` within the allowed skew (an independent
//! computation here), and the right signature for the presented key is always accepted, in any
//! letter case, from the header or the query parameter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use md5::Md5;
use portcullis_data_plane::auth::token::TokenAuth;
use portcullis_data_plane::error::ProxyError;
use portcullis_data_plane::sessions::Session;
use portcullis_fuzz::{parts, split};
use portcullis_proto::model::{AuthTokenSpec, SessionState};
use sha2::{Digest, Sha256};

const SKEW: i64 = 2;
const SECRET: &str = "fuzz-shared-secret";
const META_SECRET: &str = "fuzz-secret-from-meta-data";
const ORG: &str = "org1";

fn digest(sha256: bool, input: &str) -> String {
    if sha256 {
        hex::encode(Sha256::digest(input.as_bytes()))
    } else {
        hex::encode(Md5::digest(input.as_bytes()))
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let sha256 = flags & 1 != 0;
    let from_meta = flags & 2 != 0;
    let use_param = flags & 4 != 0;
    let secret = if from_meta { META_SECRET } else { SECRET };
    let Ok(spec) = serde_json::from_value::<AuthTokenSpec>(serde_json::json!({
        "validate_signature": true,
        "signature": {
            "algorithm": if sha256 { "MasherySHA256" } else { "MasheryMD5" },
            "header": "X-Signature",
            "use_param": use_param,
            "param_name": "sig",
            "secret": if from_meta { "$tyk_meta.sig_secret" } else { SECRET },
            "allowed_clock_skew": SKEW,
        },
    })) else {
        panic!("the spec is valid");
    };
    let Some(auth) = TokenAuth::new(&spec) else {
        panic!("Authorization is a valid header name");
    };
    let Ok(state) = SessionState::from_value(serde_json::json!({
        "org_id": ORG,
        "meta_data": {"sig_secret": META_SECRET},
        "access_rights": {"a": {"api_id": "a", "api_name": "a", "versions": ["Default"]}},
    })) else {
        panic!("the session is valid");
    };
    let session = Session::new(state);

    let (key, signature) = split(data, 0);
    let Some(head) = parts(b"/", &[("authorization", key), ("x-signature", signature)]) else {
        return;
    };
    let Ok(key) = auth.credential(&head, None) else {
        return;
    };
    let key = key.into_owned();
    let before = chrono_now();
    let verdict = auth.verify_signature(&head, &session);
    let after = chrono_now();
    match &verdict {
        Ok(()) => {
            let presented = String::from_utf8_lossy(signature)
                .trim()
                .to_ascii_lowercase();
            let mut keys = vec![key.as_str()];
            if let Some(stripped) = key.strip_prefix(ORG).filter(|s| !s.is_empty()) {
                keys.push(stripped);
            }
            let valid = keys.iter().any(|k| {
                (before - SKEW..=after + SKEW)
                    .any(|t| digest(sha256, &format!("{k}{secret}{t}")) == presented)
            });
            assert!(valid, "signature {presented:?} accepted for key {key:?}");
        }
        Err(ProxyError::Signature { .. }) => {}
        Err(other) => panic!("unexpected error {other:?}"),
    }

    // The right signature, upper case, must pass (the skew covers the seconds this takes).
    let right = digest(sha256, &format!("{key}{secret}{}", chrono_now())).to_ascii_uppercase();
    // A key may itself start with "Bearer ": present it behind one more, as a client would.
    let header = format!("Bearer {key}");
    let head = if use_param {
        let mut target = b"/?sig=".to_vec();
        target.extend_from_slice(right.as_bytes());
        parts(&target, &[("authorization", header.as_bytes())])
    } else {
        parts(
            b"/",
            &[
                ("authorization", header.as_bytes()),
                ("x-signature", right.as_bytes()),
            ],
        )
    };
    let Some(head) = head else {
        panic!("a key that was read from a header is a valid header value");
    };
    assert_eq!(
        auth.verify_signature(&head, &session),
        Ok(()),
        "right signature refused for key {key:?}"
    );
});

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
