//! `allowed_urls` of an access right: path regexes with the methods allowed on them (Tyk's
//! granular access). A regex matches anywhere in the request path (as Go's `MatchString`),
//! against the path the client sent (listen path included); an empty method list allows every
//! method. Compiled patterns are cached process-wide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use portcullis_proto::model::AllowedUrl;
use regex::Regex;

fn compiled(pattern: &str) -> Option<Arc<Regex>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Arc<Regex>>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = map.get(pattern) {
        return r.clone();
    }
    if map.len() > 10_000 {
        map.clear();
    }
    // An invalid pattern matches nothing rather than everything.
    let r = Regex::new(pattern).ok().map(Arc::new);
    map.insert(pattern.to_owned(), r.clone());
    r
}

/// True when `allowed` is empty or one entry allows `method` on `path`.
pub fn allows(allowed: &[AllowedUrl], method: &str, path: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    allowed.iter().any(|u| {
        (u.methods.is_empty() || u.methods.iter().any(|m| m.eq_ignore_ascii_case(method)))
            && compiled(&u.url).is_some_and(|r| r.is_match(path))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str, methods: &[&str]) -> AllowedUrl {
        AllowedUrl {
            url: u.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn path_regex_and_method() {
        let acl = [url("/orders/[0-9]+$", &["GET"]), url("/health", &[])];
        assert!(allows(&acl, "GET", "/api/orders/12"));
        assert!(!allows(&acl, "DELETE", "/api/orders/12"));
        assert!(!allows(&acl, "GET", "/api/orders/x"));
        assert!(
            allows(&acl, "POST", "/api/health"),
            "no methods listed: any method"
        );
        assert!(allows(&[], "PATCH", "/anything"));
        assert!(
            !allows(&[url("(", &[])], "GET", "/"),
            "an invalid pattern matches nothing"
        );
    }
}
