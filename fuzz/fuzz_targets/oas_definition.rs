//! Tyk OAS definitions (`POST /tyk/apis/oas`, a file of a configuration folder): any bytes. A
//! document is refused with a field, or becomes a Classic definition whose OAS view parses
//! again into the same API (id, listen path, target, auth methods).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_proto::model::oas;

fuzz_target!(|data: &[u8]| {
    let Ok(api) = oas::parse(data) else {
        return;
    };
    let view = oas::to_oas(&api.definition);
    let text = serde_json::to_vec(&view).expect("a JSON value serialises");
    let again = oas::parse(&text).expect("the OAS view of an accepted definition parses");
    let (a, b) = (api.definition.spec(), again.definition.spec());
    assert_eq!(a.api_id, b.api_id);
    assert_eq!(a.proxy.listen_path, b.proxy.listen_path);
    assert_eq!(a.proxy.target_url, b.proxy.target_url);
    assert_eq!(a.use_keyless, b.use_keyless);
    assert_eq!(a.use_standard_auth, b.use_standard_auth);
    assert_eq!(a.use_basic_auth, b.use_basic_auth);
});
