//! OAuth 2.0 bearer tokens of the built-in provider (`use_oauth2`), first in Tyk's chain. An
//! access token is a key the control plane stored when it issued it, so it is found like any
//! key, in every region, from its first use (docs/oauth.md). Expiry, inactive and rights checks
//! are the chain's common ones.

use http::header::AUTHORIZATION;
use http::request::Parts;

use super::AuthMethod;
use crate::auth::context::RequestContext;
use crate::auth::identity::{Identity, Provider};
use crate::error::ProxyError;

/// The session field naming the client a token was issued to.
const CLIENT_FIELD: &str = "oauth_client_id";
/// Issued tokens are 43 characters; anything much longer is not one and is not looked up.
const MAX_TOKEN: usize = 1024;

#[derive(Debug)]
pub struct OAuth2Bearer;

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive), with Tyk's answers
/// for a missing or malformed header.
pub fn bearer(parts: &Parts) -> Result<&str, ProxyError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ProxyError::OAuthMissing)?;
    let value = value
        .to_str()
        .map_err(|_| ProxyError::OAuthMalformed)?
        .trim();
    if value.is_empty() {
        return Err(ProxyError::OAuthMissing);
    }
    let (scheme, token) = value
        .split_once([' ', '\t'])
        .ok_or(ProxyError::OAuthMalformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains([' ', '\t']) {
        return Err(ProxyError::OAuthMalformed);
    }
    Ok(token)
}

#[async_trait::async_trait]
impl AuthMethod for OAuth2Bearer {
    fn provider(&self) -> Provider {
        Provider::OauthKey
    }

    fn presented(&self, ctx: &RequestContext<'_>) -> bool {
        bearer(ctx.parts).is_ok_and(|t| !super::looks_like_jwt(t))
    }

    async fn authenticate(&self, ctx: &RequestContext<'_>) -> Result<Identity, ProxyError> {
        let token = bearer(ctx.parts)?;
        if token.len() > MAX_TOKEN {
            return Err(ProxyError::OAuthNotAuthorised);
        }
        let identity = ctx
            .stored_key(token, Provider::OauthKey, ProxyError::OAuthNotAuthorised)
            .await?;
        // A deleted client's tokens stay stored (inactive) until they expire, and a session
        // cached here may outlive the client by a moment: the configuration in force decides,
        // with Tyk's "client access was revoked" (docs/oauth.md).
        let client = identity
            .session
            .state
            .field(CLIENT_FIELD)
            .and_then(serde_json::Value::as_str)
            .filter(|c| !c.is_empty());
        if let Some(client) = client
            && !ctx.oauth_client_known(client)
        {
            return Err(ProxyError::OAuthClientRevoked);
        }
        Ok(identity)
    }

    fn strip(&self, parts: &mut Parts) {
        parts.headers.remove(AUTHORIZATION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(value: Option<&[u8]>) -> Parts {
        let mut b = http::Request::builder().uri("/");
        if let Some(v) = value {
            b = b.header("authorization", http::HeaderValue::from_bytes(v).unwrap());
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn bearer_headers_are_read_as_tyk_answers_them() {
        assert_eq!(bearer(&parts(Some(b"Bearer abc"))), Ok("abc"));
        assert_eq!(bearer(&parts(Some(b"bearer   abc  "))), Ok("abc"));
        assert_eq!(bearer(&parts(Some(b"BEARER\tabc"))), Ok("abc"));
        assert_eq!(bearer(&parts(None)), Err(ProxyError::OAuthMissing));
        assert_eq!(bearer(&parts(Some(b""))), Err(ProxyError::OAuthMissing));
        assert_eq!(bearer(&parts(Some(b"  "))), Err(ProxyError::OAuthMissing));
        for malformed in [
            &b"abc"[..],
            b"Bearer",
            b"Bearer ",
            b"Basic abc",
            b"Bearerabc",
            b"Bearer a b",
            b"Bearer \xff\xfe",
        ] {
            assert_eq!(
                bearer(&parts(Some(malformed))),
                Err(ProxyError::OAuthMalformed),
                "{malformed:?}"
            );
        }
    }

    mod chain {
        use std::sync::Arc;

        use portcullis_proto::key_hash::key_hash;
        use portcullis_proto::model::oauth::OAuthClient;
        use portcullis_proto::model::{ApiDefinition, SessionState};
        use serde_json::json;

        use super::parts;
        use crate::auth::RequestContext;
        use crate::conn::ConnInfo;
        use crate::error::ProxyError;
        use crate::router::{Route, RoutingTable};
        use crate::sessions::Session;
        use crate::shared::Shared;

        /// A gateway holding client `c` and the sessions of four tokens.
        async fn gateway() -> Arc<Shared> {
            let shared = Shared::new();
            let client = OAuthClient {
                client_id: "c".into(),
                ..Default::default()
            };
            let clients = [("c".to_owned(), Arc::new(client))].into_iter().collect();
            shared.install(RoutingTable::default().with_oauth_clients(clients), 1);
            let now = chrono::Utc::now().timestamp();
            for (token, client, expires, api) in [
                ("live-token", "c", now + 3600, "api"),
                ("orphan-token", "deleted", now + 3600, "api"),
                ("expired-token", "c", now - 10, "api"),
                ("other-api-token", "c", now + 3600, "other"),
            ] {
                let state = SessionState::from_value(json!({
                    "org_id": "o", "oauth_client_id": client, "expires": expires,
                    "access_rights": {api: {"api_id": api, "versions": []}}
                }))
                .unwrap();
                let hash = key_hash(token);
                shared
                    .sessions
                    .remember_made(&hash, Arc::new(Session::new(state)), Vec::new(), 0, false)
                    .await;
            }
            shared
        }

        #[tokio::test]
        async fn a_token_stands_until_its_client_is_gone_or_it_expires() {
            let shared = gateway().await;
            let def = ApiDefinition::from_value(json!({
                "api_id": "api", "use_oauth2": true,
                "proxy": {"listen_path": "/api/", "target_url": "http://127.0.0.1:1/"}
            }))
            .unwrap();
            let route = Route::from_definition(&def).unwrap();
            let conn = ConnInfo::plain("127.0.0.1:1".parse().unwrap());
            let policies = shared.table.load().policies.clone();
            let run = |header: Option<&'static str>| {
                let shared = shared.clone();
                let (route, conn, policies) = (&route, &conn, policies.clone());
                async move {
                    let p = parts(header.map(str::as_bytes));
                    let ctx = RequestContext::new(&p, None, route, conn, None, &shared);
                    crate::auth::authenticate(&ctx, &policies)
                        .await
                        .map(|_| ())
                        .map_err(|f| f.error)
                }
            };
            assert_eq!(run(Some("Bearer live-token")).await, Ok(()));
            assert_eq!(
                run(Some("Bearer orphan-token")).await,
                Err(ProxyError::OAuthClientRevoked)
            );
            assert_eq!(
                run(Some("Bearer expired-token")).await,
                Err(ProxyError::KeyExpired)
            );
            assert_eq!(
                run(Some("Bearer other-api-token")).await,
                Err(ProxyError::Disallowed)
            );
            assert_eq!(
                run(Some("Bearer unknown-token")).await,
                Err(ProxyError::OAuthNotAuthorised)
            );
            assert_eq!(run(None).await, Err(ProxyError::OAuthMissing));
            assert_eq!(
                run(Some("live-token")).await,
                Err(ProxyError::OAuthMalformed)
            );
            // The client deleted: the cached session no longer opens the API.
            shared.install(RoutingTable::default(), 2);
            assert_eq!(
                run(Some("Bearer live-token")).await,
                Err(ProxyError::OAuthClientRevoked)
            );
        }
    }

    #[test]
    fn strip_removes_the_token() {
        let mut p = parts(Some(b"Bearer abc"));
        OAuth2Bearer.strip(&mut p);
        assert!(p.headers.get("authorization").is_none());
    }
}
