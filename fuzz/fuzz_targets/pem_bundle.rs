//! Certificate-store uploads (`POST /tyk/certs`): any bytes. A bundle is refused with one of
//! Tyk's messages or parsed into a record whose id is the org plus 64 hex digits, that never
//! carries the private key, and whose key (when there is one) matches the leaf.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proto::model::certificate::parse_bundle;

const NOW: i64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(parsed) = parse_bundle("org", data, NOW) else {
        return;
    };
    let record = &parsed.record;
    let hex = record.id.strip_prefix("org").unwrap_or_default();
    assert_eq!(hex.len(), 64, "id {:?}", record.id);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "id {:?}", record.id);
    assert!(record.private_key.is_empty(), "the parsed record carries no key");
    assert_eq!(record.meta.has_private, parsed.private_key_pem.is_some());
    assert!(
        record.certificate_pem.is_empty() != record.public_key_pem.is_empty(),
        "a bundle is certificates or one public key"
    );
    if !record.certificate_pem.is_empty() {
        assert!(record.not_after_unix >= NOW, "expired certificates are refused");
    }
});
