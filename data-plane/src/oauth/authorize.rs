//! `/oauth/authorize`, answered at the edge from the streamed clients: the client, its
//! redirect URI (exact match), the response type and PKCE are checked, then the user is sent to
//! the API's login portal with the client's parameters (307). Every error is a JSON answer,
//! never a redirect: until the client and its URI are known good, a redirect could go anywhere.

use std::collections::HashMap;
use std::sync::Arc;

use portcullis_proto::model::oauth::{OAuthClient, ResponseType};

use super::RouteOAuth;
use super::body::Params;
use crate::error::OAuthError;
use crate::policies::PolicyIndex;

/// RFC 7636 §4.2: a challenge is 43 to 128 unreserved characters (S256 gives 43).
fn challenge_ok(c: &str) -> bool {
    (43..=128).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// True when `client` may be used on `api_id`: bound to it, or (bound to none) its policy
/// grants it, as the control plane decides at the token endpoint.
fn serves_api(client: &OAuthClient, api_id: &str, policies: &PolicyIndex) -> bool {
    if !client.api_id.is_empty() {
        return client.api_id == api_id;
    }
    policies
        .get(&client.policy_id)
        .is_some_and(|p| p.access_rights.contains_key(api_id))
}

/// Where the user goes: the login portal with `query` (the request's parameters) added.
fn login_location(login: &str, query: &str) -> String {
    let (base, fragment) = match login.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (login, None),
    };
    let sep = if base.contains('?') { '&' } else { '?' };
    let mut out = format!("{base}{sep}{query}");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

/// Checks an authorization request; the `Location` of the login portal when it stands.
/// `query` is the parameters as they go on (the request's own query for a GET).
pub fn check(
    oauth: &RouteOAuth,
    api_id: &str,
    clients: &HashMap<String, Arc<OAuthClient>>,
    policies: &PolicyIndex,
    params: &Params,
    query: &str,
) -> Result<String, OAuthError> {
    if oauth.login_redirect.is_empty() {
        return Err(OAuthError::InvalidRequest(
            "this API has no login page (oauth_meta.auth_login_redirect)",
        ));
    }
    let client_id = params
        .non_empty("client_id")
        .ok_or(OAuthError::InvalidRequest("client_id is required"))?;
    let client = clients
        .get(client_id)
        .ok_or(OAuthError::UnauthorizedClient(
            "the client is not registered",
        ))?;
    if !serves_api(client, api_id, policies) {
        return Err(OAuthError::UnauthorizedClient(
            "the client is not registered for this API",
        ));
    }
    let redirect_uri = params
        .non_empty("redirect_uri")
        .ok_or(OAuthError::InvalidRequest("redirect_uri is required"))?;
    if !client.allows_redirect(redirect_uri) {
        return Err(OAuthError::InvalidRequest(
            "redirect_uri does not match a URI registered for the client",
        ));
    }
    let response_type = params
        .non_empty("response_type")
        .ok_or(OAuthError::InvalidRequest("response_type is required"))?;
    ResponseType::parse(response_type)
        .filter(|t| oauth.authorize_types.contains(t))
        .ok_or(OAuthError::UnsupportedResponseType)?;
    match (
        params.non_empty("code_challenge"),
        params.non_empty("code_challenge_method"),
    ) {
        (None, None) if client.is_public() => {
            return Err(OAuthError::InvalidRequest(
                "PKCE code_challenge (S256) is required for public clients",
            ));
        }
        (None, None) => {}
        (None, Some(_)) => {
            return Err(OAuthError::InvalidRequest(
                "code_challenge_method without code_challenge",
            ));
        }
        // RFC 7636's default is "plain", which this server does not take.
        (Some(_), m) if m != Some("S256") => {
            return Err(OAuthError::InvalidRequest(
                "code_challenge_method must be S256",
            ));
        }
        (Some(c), _) if !challenge_ok(c) => {
            return Err(OAuthError::InvalidRequest(
                "code_challenge must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
            ));
        }
        (Some(_), _) => {}
    }
    Ok(login_location(&oauth.login_redirect, query))
}

#[cfg(test)]
mod tests {
    use portcullis_proto::model::ApiDefinition;
    use portcullis_proto::model::PolicySpec;

    use super::*;
    use crate::oauth::body::parse_form;

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn oauth(login: &str, types: &[&str]) -> Box<RouteOAuth> {
        let def = ApiDefinition::from_value(serde_json::json!({
            "api_id": "api", "use_oauth2": true,
            "oauth_meta": {"allowed_authorize_types": types, "auth_login_redirect": login},
            "proxy": {"listen_path": "/api/", "target_url": "http://127.0.0.1:1/"}
        }))
        .unwrap();
        RouteOAuth::of(&def, "/api/").unwrap()
    }

    fn clients() -> HashMap<String, Arc<OAuthClient>> {
        let c = |id: &str, api: &str, policy: &str, method: &str| {
            (
                id.to_owned(),
                Arc::new(OAuthClient {
                    client_id: id.into(),
                    redirect_uri: "http://app.example/cb;http://app.example/other".into(),
                    api_id: api.into(),
                    policy_id: policy.into(),
                    token_endpoint_auth_method: method.into(),
                    ..Default::default()
                }),
            )
        };
        [
            c("conf", "api", "", ""),
            c("public", "api", "", "none"),
            c("elsewhere", "other-api", "", ""),
            c("by-policy", "", "grants-api", ""),
            c("by-other-policy", "", "grants-other", ""),
        ]
        .into_iter()
        .collect()
    }

    fn policies() -> PolicyIndex {
        let p = |id: &str, api: &str| {
            let spec: PolicySpec = serde_json::from_value(serde_json::json!({
                "id": id, "access_rights": {api: {"api_id": api, "versions": []}}
            }))
            .unwrap();
            (id.to_owned(), Arc::new(spec))
        };
        [p("grants-api", "api"), p("grants-other", "other-api")]
            .into_iter()
            .collect()
    }

    fn run(o: &RouteOAuth, query: &str) -> Result<String, OAuthError> {
        let params = parse_form(query.as_bytes()).unwrap();
        check(o, "api", &clients(), &policies(), &params, query)
    }

    #[test]
    fn a_good_request_goes_to_the_login_page_with_its_query() {
        let o = oauth("https://portal.example/login", &["code", "token"]);
        let q = "response_type=code&client_id=conf&redirect_uri=http%3A%2F%2Fapp.example%2Fcb&state=xyz";
        assert_eq!(
            run(&o, q).unwrap(),
            format!("https://portal.example/login?{q}")
        );
        let q = "response_type=token&client_id=by-policy&redirect_uri=http://app.example/other";
        assert!(run(&o, q).is_ok());
        // The portal's own query and fragment are kept.
        let o = oauth("https://portal.example/login?tenant=1#top", &["code"]);
        let q = "response_type=code&client_id=conf&redirect_uri=http://app.example/cb";
        assert_eq!(
            run(&o, q).unwrap(),
            format!("https://portal.example/login?tenant=1&{q}#top")
        );
    }

    #[test]
    fn clients_and_redirect_uris_must_be_registered_exactly() {
        let o = oauth("https://portal.example/login", &["code"]);
        let rq = |client: &str, uri: &str| {
            run(
                &o,
                &format!("response_type=code&client_id={client}&redirect_uri={uri}"),
            )
        };
        assert_eq!(
            rq("nobody", "http://app.example/cb"),
            Err(OAuthError::UnauthorizedClient(
                "the client is not registered"
            ))
        );
        for other in ["elsewhere", "by-other-policy"] {
            assert_eq!(
                rq(other, "http://app.example/cb"),
                Err(OAuthError::UnauthorizedClient(
                    "the client is not registered for this API"
                ))
            );
        }
        for bad in [
            "http://evil.example/cb",
            "http://app.example/cb/",
            "http://app.example/cb%3Fx%3D1",
            "http://app.example/c",
            "HTTP://app.example/cb",
        ] {
            assert_eq!(
                rq("conf", bad),
                Err(OAuthError::InvalidRequest(
                    "redirect_uri does not match a URI registered for the client"
                )),
                "{bad}"
            );
        }
        assert_eq!(
            run(&o, "response_type=code&client_id=conf"),
            Err(OAuthError::InvalidRequest("redirect_uri is required"))
        );
        assert_eq!(
            run(&o, "response_type=code&redirect_uri=http://app.example/cb"),
            Err(OAuthError::InvalidRequest("client_id is required"))
        );
    }

    #[test]
    fn response_types_must_be_allowed() {
        let o = oauth("https://portal.example/login", &["code"]);
        let base = "client_id=conf&redirect_uri=http://app.example/cb";
        assert_eq!(
            run(&o, &format!("{base}&response_type=token")),
            Err(OAuthError::UnsupportedResponseType)
        );
        assert_eq!(
            run(&o, &format!("{base}&response_type=id_token")),
            Err(OAuthError::UnsupportedResponseType)
        );
        assert_eq!(
            run(&o, base),
            Err(OAuthError::InvalidRequest("response_type is required"))
        );
    }

    #[test]
    fn public_clients_need_an_s256_challenge() {
        let o = oauth("https://portal.example/login", &["code", "token"]);
        let base = "response_type=code&redirect_uri=http://app.example/cb";
        assert_eq!(
            run(&o, &format!("{base}&client_id=public")),
            Err(OAuthError::InvalidRequest(
                "PKCE code_challenge (S256) is required for public clients"
            ))
        );
        assert_eq!(
            run(
                &o,
                "response_type=token&client_id=public&redirect_uri=http://app.example/cb"
            ),
            Err(OAuthError::InvalidRequest(
                "PKCE code_challenge (S256) is required for public clients"
            ))
        );
        let with = |client: &str, rest: &str| run(&o, &format!("{base}&client_id={client}{rest}"));
        assert!(
            with(
                "public",
                &format!("&code_challenge={CHALLENGE}&code_challenge_method=S256")
            )
            .is_ok()
        );
        assert!(
            with(
                "conf",
                &format!("&code_challenge={CHALLENGE}&code_challenge_method=S256")
            )
            .is_ok()
        );
        assert!(
            with("conf", "").is_ok(),
            "PKCE is optional for confidential clients"
        );
        for (rest, msg) in [
            (
                format!("&code_challenge={CHALLENGE}"),
                "code_challenge_method must be S256",
            ),
            (
                format!("&code_challenge={CHALLENGE}&code_challenge_method=plain"),
                "code_challenge_method must be S256",
            ),
            (
                "&code_challenge=short&code_challenge_method=S256".to_owned(),
                "code_challenge must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
            ),
            (
                format!(
                    "&code_challenge={}%2B&code_challenge_method=S256",
                    &CHALLENGE[1..]
                ),
                "code_challenge must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
            ),
            (
                "&code_challenge_method=S256".to_owned(),
                "code_challenge_method without code_challenge",
            ),
        ] {
            assert_eq!(
                with("public", &rest),
                Err(OAuthError::InvalidRequest(msg)),
                "{rest}"
            );
        }
    }

    #[test]
    fn an_api_without_a_login_page_cannot_authorize() {
        let o = oauth("", &["code"]);
        assert_eq!(
            run(
                &o,
                "response_type=code&client_id=conf&redirect_uri=http://app.example/cb"
            ),
            Err(OAuthError::InvalidRequest(
                "this API has no login page (oauth_meta.auth_login_redirect)"
            ))
        );
    }
}
