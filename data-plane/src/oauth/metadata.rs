//! RFC 8414 authorization server metadata for one API, built at the edge from its definition.
//! The issuer is the URL the client used (scheme, `Host`, listen path), so every edge and region
//! describes itself.

use serde_json::{Value, json};

use super::RouteOAuth;

const MAX_HOST: usize = 255;

/// A `Host` value fit to go into a URL: a name or address, with an optional port.
fn host_ok(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST
        && host.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']')
        })
}

/// The issuer identifier: `scheme://host` and the listen path without its trailing slash.
pub fn issuer(scheme: &str, host: &str, oauth: &RouteOAuth) -> Option<String> {
    host_ok(host).then(|| format!("{scheme}://{}{}", host.to_ascii_lowercase(), oauth.base()))
}

pub fn document(issuer: &str, oauth: &RouteOAuth) -> Value {
    let response_types: Vec<&str> = oauth.authorize_types.iter().map(|t| t.as_str()).collect();
    let grant_types: Vec<&str> = oauth.grant_types.iter().map(|t| t.as_str()).collect();
    let auth_methods = ["client_secret_basic", "client_secret_post", "none"];
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "response_types_supported": response_types,
        "grant_types_supported": grant_types,
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "code_challenge_methods_supported": ["S256"],
    })
}

#[cfg(test)]
mod tests {
    use portcullis_proto::model::ApiDefinition;

    use super::*;

    #[test]
    fn the_document_describes_the_api_where_it_was_asked() {
        let def = ApiDefinition::from_value(json!({
            "api_id": "a", "use_oauth2": true,
            "oauth_meta": {
                "allowed_access_types": ["authorization_code", "client_credentials"],
                "allowed_authorize_types": ["code"]
            },
            "proxy": {"listen_path": "/shop/", "target_url": "http://127.0.0.1:1/"}
        }))
        .unwrap();
        let oauth = RouteOAuth::of(&def, "/shop/").unwrap();
        let issuer = issuer("https", "GW.example:8443", &oauth).unwrap();
        assert_eq!(issuer, "https://gw.example:8443/shop");
        assert_eq!(
            document(&issuer, &oauth),
            json!({
                "issuer": "https://gw.example:8443/shop",
                "authorization_endpoint": "https://gw.example:8443/shop/oauth/authorize",
                "token_endpoint": "https://gw.example:8443/shop/oauth/token",
                "revocation_endpoint": "https://gw.example:8443/shop/oauth/revoke",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "client_credentials"],
                "token_endpoint_auth_methods_supported":
                    ["client_secret_basic", "client_secret_post", "none"],
                "revocation_endpoint_auth_methods_supported":
                    ["client_secret_basic", "client_secret_post", "none"],
                "code_challenge_methods_supported": ["S256"]
            })
        );
        assert!(issuer_for("[::1]:80", &oauth).is_some());
        for bad in ["", "a b", "evil.example/x", "evil.example?x", "x\"y", "a@b"] {
            assert!(issuer_for(bad, &oauth).is_none(), "{bad}");
        }
    }

    fn issuer_for(host: &str, oauth: &RouteOAuth) -> Option<String> {
        issuer("http", host, oauth)
    }
}
