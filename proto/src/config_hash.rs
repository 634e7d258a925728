//! Canonical JSON and the configuration hash both planes compute: sha256 over the
//! group's resources sorted by kind then id, each contributing the digest of its canonical body.
//! Both sides hash the canonical bytes carried on the wire, so they agree without re-serializing.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Serializes `value` with object keys sorted at every level and no white space.
///
/// Written out rather than relying on `serde_json`'s map order, which a `preserve_order`
/// feature anywhere in the dependency graph would silently change.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Serializing a scalar Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Digest of one resource: binds kind, id and canonical body.
pub fn resource_digest(kind: i32, id: &str, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(kind.to_be_bytes());
    h.update((id.len() as u64).to_be_bytes());
    h.update(id.as_bytes());
    h.update(body);
    h.finalize().into()
}

/// Hash of a whole configuration from its resource digests, which must come sorted by
/// `(kind, id)`. Returns `"sha256:<hex>"`.
pub fn config_hash<'a>(sorted_digests: impl IntoIterator<Item = &'a [u8; 32]>) -> String {
    let mut h = Sha256::new();
    for d in sorted_digests {
        h.update(d);
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = json!({"b": 1, "a": {"z": [3, {"y": true, "x": null}], "c": "é\"q"}});
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":{"c":"é\"q","z":[3,{"x":null,"y":true}]},"b":1}"#
        );
    }

    #[test]
    fn hash_depends_on_every_resource_and_is_stable() {
        let a = resource_digest(1, "a", b"{}");
        let b = resource_digest(1, "b", b"{}");
        let h1 = config_hash([&a, &b]);
        assert_eq!(h1, config_hash([&a, &b]));
        assert_ne!(h1, config_hash([&a]));
        assert_ne!(a, resource_digest(2, "a", b"{}"));
        // Empty configuration: sha256 of nothing (independent oracle: `sha256sum < /dev/null`).
        assert_eq!(
            config_hash(std::iter::empty()),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
