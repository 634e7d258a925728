//! Caps on the strings a node sends before they are stored in the registry or logged. Hello
//! fields are produced by our own gateway, so anything out of bounds is refused; NACK texts are
//! diagnostics an operator needs even when they are long, so they are truncated (and say so).

use portcullis_proto::sync::{Hello, JoinRequest, Nack};

use super::status::SyncError;

pub const MAX_BUILD_VERSION: usize = 64;
pub const MAX_CAPABILITIES: usize = 64;
pub const MAX_CAPABILITY: usize = 64;
pub const MAX_CONFIG_HASH: usize = 128;
pub const MAX_NACK_ERROR: usize = 1024;
pub const MAX_NACK_RESOURCES: usize = 32;
pub const MAX_RESOURCE_ID: usize = 256;

/// What a truncated text ends with.
pub const TRUNCATED: &str = "… (truncated)";

fn printable(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
}

pub const MAX_TOKEN: usize = 256;
pub const MAX_GROUP: usize = 253;
pub const MAX_CSR: usize = 16 * 1024;

/// Refuses a Join whose fields are out of bounds before they reach the database or a log line
/// (the node name is checked with its own message by `join`).
pub fn check_join(j: &JoinRequest) -> Result<(), SyncError> {
    let bad = |m: String| Err(SyncError::BadRequest(m));
    if j.version.len() > MAX_BUILD_VERSION || !printable(&j.version) {
        return bad(format!(
            "version must be at most {MAX_BUILD_VERSION} printable ASCII characters"
        ));
    }
    if j.bootstrap_token.len() > MAX_TOKEN {
        return bad(format!("bootstrap_token must be at most {MAX_TOKEN} bytes"));
    }
    if j.expected_group.len() > MAX_GROUP || j.expected_group.chars().any(char::is_control) {
        return bad(format!(
            "expected_group must be at most {MAX_GROUP} bytes without control characters"
        ));
    }
    if j.csr_der.len() > MAX_CSR {
        return bad(format!("csr_der must be at most {MAX_CSR} bytes"));
    }
    Ok(())
}

/// Refuses a Hello whose fields are out of bounds; the message names the field and the bound.
pub fn check_hello(h: &Hello) -> Result<(), SyncError> {
    let bad = |m: String| Err(SyncError::BadRequest(m));
    if h.build_version.len() > MAX_BUILD_VERSION || !printable(&h.build_version) {
        return bad(format!(
            "Hello build_version must be at most {MAX_BUILD_VERSION} printable ASCII characters"
        ));
    }
    if h.config_hash.len() > MAX_CONFIG_HASH || !printable(&h.config_hash) {
        return bad(format!(
            "Hello config_hash must be at most {MAX_CONFIG_HASH} printable ASCII characters"
        ));
    }
    if h.capabilities.len() > MAX_CAPABILITIES {
        return bad(format!(
            "Hello names {} capabilities; at most {MAX_CAPABILITIES} are accepted",
            h.capabilities.len()
        ));
    }
    if h.capabilities
        .iter()
        .any(|c| c.is_empty() || c.len() > MAX_CAPABILITY || !printable(c))
    {
        return bad(format!(
            "each Hello capability must be 1 to {MAX_CAPABILITY} printable ASCII characters"
        ));
    }
    Ok(())
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut, and replaces
/// control characters so that a log line stays one line.
pub fn truncate(s: &str, max: usize) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    if s.len() <= max {
        return clean(s);
    }
    let mut end = max.saturating_sub(TRUNCATED.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATED}", clean(&s[..end]))
}

/// The NACK as it is stored and logged: error text and resource ids truncated, at most
/// [`MAX_NACK_RESOURCES`] ids kept.
pub fn bound_nack(mut n: Nack) -> Nack {
    n.error = truncate(&n.error, MAX_NACK_ERROR);
    let dropped = n.resource_ids.len().saturating_sub(MAX_NACK_RESOURCES);
    n.resource_ids.truncate(MAX_NACK_RESOURCES);
    for id in &mut n.resource_ids {
        *id = truncate(id, MAX_RESOURCE_ID);
    }
    if dropped > 0 {
        n.resource_ids.push(format!("… and {dropped} more"));
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_a_character_boundary() {
        let long = "é".repeat(2000);
        let t = truncate(&long, MAX_NACK_ERROR);
        assert!(t.len() <= MAX_NACK_ERROR);
        assert!(t.ends_with(TRUNCATED));
        assert_eq!(truncate("short\nline", 100), "short line");
    }

    #[test]
    fn bounds_resource_ids() {
        let n = bound_nack(Nack {
            revision: 1,
            error: "x".into(),
            resource_ids: (0..100).map(|i| format!("{i:0>300}")).collect(),
        });
        assert_eq!(n.resource_ids.len(), MAX_NACK_RESOURCES + 1);
        assert!(n.resource_ids[0].len() <= MAX_RESOURCE_ID);
        assert_eq!(n.resource_ids[MAX_NACK_RESOURCES], "… and 68 more");
    }

    #[test]
    fn refuses_oversized_hello_fields() {
        let ok = Hello {
            build_version: "0.1.0".into(),
            capabilities: vec!["keyless".into()],
            ..Default::default()
        };
        assert!(check_hello(&ok).is_ok());
        let many = Hello {
            capabilities: vec!["x".into(); 65],
            ..ok.clone()
        };
        assert!(check_hello(&many).is_err());
        let long = Hello {
            build_version: "1".repeat(65),
            ..ok
        };
        assert!(check_hello(&long).is_err());
    }
}
