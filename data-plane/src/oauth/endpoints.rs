//! One request to an OAuth endpoint, from the proxy (which found the endpoint and ran the API's
//! static mTLS check): parameters read with bounds, then answered here or relayed.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};

use super::body::{self, MAX_BODY, Params};
use super::{Endpoint, RouteOAuth, authorize, metadata, relay};
use crate::error::OAuthError;
use crate::router::Route;
use crate::shared::Shared;

/// A client has this long to send its (at most 16 KiB) body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The login portal's credential on the per-API authorize-client route (Tyk's admin header).
const PORTAL_HEADER: &str = "x-tyk-authorization";

/// Reads the body as parameters: a form or a JSON object, at most [`MAX_BODY`] bytes.
async fn params<B>(parts: &http::request::Parts, body: B) -> Result<Params, OAuthError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_big = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY as u64);
    if too_big {
        return Err(OAuthError::InvalidRequest("the request is too large"));
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await;
    let Ok(Ok(collected)) = read else {
        return Err(OAuthError::InvalidRequest(
            "the body could not be read (at most 16 KiB, in time)",
        ));
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    body::parse_body(content_type, &collected.to_bytes())
}

/// Answers one OAuth endpoint request. `scheme` is the connection's (for the metadata issuer).
pub async fn serve<B>(
    endpoint: Endpoint,
    req: Request<B>,
    route: &Route,
    oauth: &RouteOAuth,
    scheme: &str,
    shared: &Shared,
) -> Response<Full<Bytes>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = shared.oauth();
    let mapping = config.error_status;
    let (parts, body) = req.into_parts();
    let answer = match endpoint {
        Endpoint::Metadata => metadata_answer(&parts, oauth, scheme),
        Endpoint::Authorize => authorize_answer(&parts, body, route, oauth, shared).await,
        Endpoint::AuthorizeClient => match &config.portal_secret {
            None => Err(OAuthError::PortalClosed),
            Some(secret) => {
                let presented = parts.headers.get(PORTAL_HEADER).map(HeaderValue::as_bytes);
                if !presented.is_some_and(|p| secret.matches(p)) {
                    Err(OAuthError::PortalKey)
                } else {
                    relayed(&parts, body, route, shared, endpoint, false).await
                }
            }
        },
        Endpoint::Token | Endpoint::Revoke | Endpoint::RevokeAll => {
            relayed(&parts, body, route, shared, endpoint, true).await
        }
    };
    answer.unwrap_or_else(|e| e.into_response(mapping))
}

async fn relayed<B>(
    parts: &http::request::Parts,
    body: B,
    route: &Route,
    shared: &Shared,
    endpoint: Endpoint,
    client_auth: bool,
) -> Result<Response<Full<Bytes>>, OAuthError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(name) = endpoint.relay_name() else {
        return Err(OAuthError::InvalidRequest("not a relayed endpoint"));
    };
    let params = params(parts, body).await?;
    // The API is the one routed to; a form naming another (the control plane's own
    // authorize-client route takes `api_id`) is refused rather than left to interpretation.
    if params.get("api_id").is_some_and(|id| id != route.api_id) {
        return Err(OAuthError::InvalidRequest("api_id names another API"));
    }
    // HTTP Basic client authentication; the portal route's caller is not a client.
    let authorization = if client_auth {
        parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    } else {
        ""
    };
    Ok(relay::relay(
        &shared.sessions,
        &shared.oauth_relays,
        shared.oauth().error_status,
        &route.api_id,
        name,
        params,
        authorization,
    )
    .await)
}

async fn authorize_answer<B>(
    parts: &http::request::Parts,
    body: B,
    route: &Route,
    oauth: &RouteOAuth,
    shared: &Shared,
) -> Result<Response<Full<Bytes>>, OAuthError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (params, query) = if parts.method == Method::POST {
        let params = params(parts, body).await?;
        let query = params.to_query();
        (params, query)
    } else {
        let query = parts.uri.query().unwrap_or("");
        (body::parse_form(query.as_bytes())?, query.to_owned())
    };
    let table = shared.table.load();
    let location = authorize::check(
        oauth,
        &route.api_id,
        &table.oauth_clients,
        &table.policies,
        &params,
        &query,
    )?;
    drop(table);
    let location = HeaderValue::try_from(location)
        .map_err(|_| OAuthError::InvalidRequest("the login page URL cannot be sent"))?;
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    resp.headers_mut().insert(header::LOCATION, location);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn metadata_answer(
    parts: &http::request::Parts,
    oauth: &RouteOAuth,
    scheme: &str,
) -> Result<Response<Full<Bytes>>, OAuthError> {
    let host = parts.uri.host().map(str::to_owned).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    let issuer = host
        .and_then(|h| metadata::issuer(scheme, &h, oauth))
        .ok_or(OAuthError::InvalidRequest(
            "the Host header is not a valid host",
        ))?;
    let body = metadata::document(&issuer, oauth).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // The issuer comes from the client's Host: no shared cache may hand it to another client.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use portcullis_proto::model::ApiDefinition;
    use portcullis_proto::model::oauth::OAuthClient;

    use super::*;
    use crate::oauth::OAuthConfig;
    use crate::router::RoutingTable;

    fn shared(portal: Option<&str>) -> Arc<Shared> {
        let shared = Shared::new();
        shared.set_oauth(OAuthConfig::default().with_portal_secret(portal));
        let client = OAuthClient {
            client_id: "c".into(),
            redirect_uri: "http://app.example/cb".into(),
            api_id: "api".into(),
            ..Default::default()
        };
        let clients = [("c".to_owned(), Arc::new(client))].into_iter().collect();
        shared.install(RoutingTable::default().with_oauth_clients(clients), 1);
        shared
    }

    fn route() -> Route {
        let def = ApiDefinition::from_value(serde_json::json!({
            "api_id": "api", "use_oauth2": true,
            "oauth_meta": {
                "allowed_access_types": ["authorization_code"],
                "allowed_authorize_types": ["code"],
                "auth_login_redirect": "http://portal.example/login"
            },
            "proxy": {"listen_path": "/api/", "target_url": "http://127.0.0.1:1/"}
        }))
        .unwrap();
        Route::from_definition(&def).unwrap()
    }

    async fn call(
        shared: &Shared,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: &'static str,
    ) -> (StatusCode, http::HeaderMap, String) {
        let route = route();
        let oauth = route.oauth.as_deref().unwrap();
        let endpoint = oauth
            .endpoint(&method, uri.split('?').next().unwrap())
            .unwrap();
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let resp = serve(endpoint, req, &route, oauth, "http", shared).await;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn authorize_redirects_a_get_with_its_query_and_a_post_with_its_form() {
        let s = shared(None);
        let q =
            "response_type=code&client_id=c&redirect_uri=http%3A%2F%2Fapp.example%2Fcb&state=s1";
        let (status, headers, _) = call(
            &s,
            Method::GET,
            &format!("/api/oauth/authorize?{q}"),
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            headers["location"],
            format!("http://portal.example/login?{q}").as_str()
        );
        let (status, headers, _) = call(
            &s,
            Method::POST,
            "/api/oauth/authorize",
            &[("content-type", "application/x-www-form-urlencoded")],
            "response_type=code&client_id=c&redirect_uri=http%3A%2F%2Fapp.example%2Fcb",
        )
        .await;
        assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            headers["location"],
            "http://portal.example/login?response_type=code&client_id=c&redirect_uri=http%3A%2F%2Fapp.example%2Fcb"
        );
        // An unregistered redirect URI gets a JSON error, never a redirect.
        let (status, headers, body) = call(
            &s,
            Method::GET,
            "/api/oauth/authorize?response_type=code&client_id=c&redirect_uri=http://evil.example/",
            &[],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "Tyk's status by default");
        assert!(headers.get("location").is_none());
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "invalid_request");
    }

    #[tokio::test]
    async fn the_portal_route_needs_its_secret_and_is_closed_without_one() {
        let (status, _, _) = call(
            &shared(None),
            Method::POST,
            "/api/tyk/oauth/authorize-client/",
            &[("x-tyk-authorization", "")],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let s = shared(Some("portal-secret"));
        for presented in [None, Some("wrong"), Some("portal-secret ")] {
            let headers: Vec<(&str, &str)> = presented
                .map(|p| ("x-tyk-authorization", p))
                .into_iter()
                .collect();
            let (status, _, body) = call(
                &s,
                Method::POST,
                "/api/tyk/oauth/authorize-client/",
                &headers,
                "response_type=code",
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(
                body,
                r#"{"message":"Attempted administrative access with invalid or missing key!","status":"error"}"#
            );
        }
        // The right secret reaches the relay (no control plane here: 503).
        let (status, headers, body) = call(
            &s,
            Method::POST,
            "/api/tyk/oauth/authorize-client",
            &[("x-tyk-authorization", "portal-secret")],
            "response_type=code",
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers["cache-control"], "no-store");
        assert_eq!(
            body,
            r#"{"error":"temporarily_unavailable","error_description":"the control plane cannot be reached"}"#
        );
    }

    #[tokio::test]
    async fn relayed_bodies_are_bounded_before_the_relay() {
        let s = shared(None);
        let (status, _, body) = call(
            &s,
            Method::POST,
            "/api/oauth/token",
            &[("content-type", "text/plain")],
            "grant_type=client_credentials",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("invalid_request"), "{body}");
        let (status, _, _) = call(
            &s,
            Method::POST,
            "/api/oauth/token",
            &[("content-length", "100000")],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _, _) = call(&s, Method::POST, "/api/oauth/revoke", &[], "token=x").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _, body) = call(
            &s,
            Method::POST,
            "/api/oauth/token",
            &[],
            "grant_type=client_credentials&api_id=other",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("api_id names another API"), "{body}");
    }

    #[tokio::test]
    async fn metadata_is_served_for_the_host_asked() {
        let s = shared(None);
        let (status, headers, body) = call(
            &s,
            Method::GET,
            "/api/.well-known/oauth-authorization-server",
            &[("host", "gw.example:8080")],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/json");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(doc["issuer"], "http://gw.example:8080/api");
        assert_eq!(
            doc["token_endpoint"],
            "http://gw.example:8080/api/oauth/token"
        );
        let (status, _, _) = call(
            &s,
            Method::GET,
            "/api/.well-known/oauth-authorization-server",
            &[("host", "evil/x")],
            "",
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
}
