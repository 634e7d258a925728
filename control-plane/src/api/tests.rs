//! Router-level checks that need no database: the OpenAPI document matches the routes.

use serde_json::Value;

use super::health::OPENAPI;

/// Every route the router registers, in OpenAPI path syntax (trailing-slash aliases excluded).
const ROUTES: &[&str] = &[
    "/hello",
    "/metrics",
    "/openapi.json",
    "/console",
    "/console/console.js",
    "/console/console.css",
    "/console/favicon.svg",
    "/tyk/reload",
    "/tyk/reload/group",
    "/tyk/apis",
    "/tyk/apis/{api_id}",
    "/tyk/apis/oas",
    "/tyk/apis/oas/import",
    "/tyk/apis/oas/{api_id}",
    "/tyk/policies",
    "/tyk/policies/{id}",
    "/tyk/certs",
    "/tyk/certs/{id}",
    "/tyk/cache/jwks",
    "/tyk/cache/jwks/{api_id}",
    "/tyk/keys",
    "/tyk/keys/create",
    "/tyk/keys/{key}",
    "/tyk/oauth/clients/create",
    "/tyk/oauth/clients/{api_id}",
    "/tyk/oauth/clients/apis/{client_id}",
    "/tyk/oauth/clients/{api_id}/{client_id}",
    "/tyk/oauth/clients/{api_id}/{client_id}/tokens",
    "/tyk/oauth/clients/{api_id}/{client_id}/rotate",
    "/tyk/oauth/authorize-client",
    "/tyk/oauth/revoke",
    "/tyk/oauth/revoke_all",
    "/tyk/oauth/refresh/{token}",
    "/tyk/oauth/tokens",
    "/portcullis/bootstrap-tokens",
    "/portcullis/bootstrap-tokens/{id}",
    "/portcullis/ca",
    "/portcullis/config",
    "/portcullis/nodes",
    "/portcullis/nodes/{id}",
    "/portcullis/propagation",
];

#[test]
fn openapi_describes_every_route_and_nothing_else() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    let mut documented: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    documented.sort_unstable();
    let mut routes = ROUTES.to_vec();
    routes.sort_unstable();
    assert_eq!(documented, routes);
    let source = include_str!("mod.rs");
    for route in ROUTES {
        assert!(
            source.contains(&format!("\"{route}\"")),
            "{route} is documented but not routed"
        );
    }
}
