//! `authorize-client`: the login portal, once its user consented, asks for a code (or, for the
//! implicit grant, a token) for a client (docs/oauth.md). Tyk's form fields, plus PKCE.

use chrono::Utc;
use portcullis_proto::key_hash::key_hash;
use portcullis_proto::model::oauth::{OAuthClient, ResponseType};
use serde_json::json;

use super::client_auth::belongs;
use super::errors::OAuthError;
use super::form::Form;
use super::grants::Refresh;
use super::{OAuthApi, OAuthReply, OAuthServer, pkce, random_token, session};
use crate::store::oauth_grants::NewCode;

/// Longest `state` and `scope` kept (they travel back in the redirect).
const MAX_STATE: usize = 1024;

/// `uri` with `params` added to its query (`?` or `&`), each form-encoded.
fn with_query(uri: &str, params: &[(&str, &str)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", ser.finish())
}

/// `uri` with `params` as its fragment (the implicit grant, RFC 6749 4.2.2).
fn with_fragment(uri: &str, params: &[(&str, &str)]) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    format!("{uri}#{}", ser.finish())
}

/// The redirect URI asked for, which must be registered (exactly); none given is the only
/// one registered.
fn redirect_uri<'a>(client: &'a OAuthClient, form: &Form<'a>) -> Result<&'a str, OAuthError> {
    match form.get("redirect_uri") {
        Some(uri) if client.allows_redirect(uri) => Ok(uri),
        Some(_) => Err(OAuthError::InvalidRequest(
            "redirect_uri is not registered for this client",
        )),
        None => {
            let mut uris = client.redirect_uris();
            match (uris.next(), uris.next()) {
                (Some(only), None) => Ok(only),
                _ => Err(OAuthError::InvalidRequest("redirect_uri is required")),
            }
        }
    }
}

impl OAuthServer {
    pub(super) async fn authorize_client(
        &self,
        api: &OAuthApi,
        form: &Form<'_>,
    ) -> Result<OAuthReply, OAuthError> {
        let response_type = form.require("response_type", "response_type is required")?;
        let response_type = ResponseType::parse(response_type)
            .filter(|r| api.spec.response_type_allowed(*r))
            .ok_or(OAuthError::UnsupportedResponseType)?;
        let client_id = form.require("client_id", "client_id is required")?;
        let client = match self.find_client(client_id).await? {
            Some(c) if belongs(&self.store, &c, &api.api_id).await? => c,
            Some(_) => {
                return Err(OAuthError::UnauthorizedClient(
                    "the client may not use this API",
                ));
            }
            None => return Err(OAuthError::InvalidRequest("unknown client_id")),
        };
        let redirect = redirect_uri(&client, form)?;
        let state = form.get("state").unwrap_or_default();
        let scope = form.get("scope").unwrap_or_default();
        if state.len() > MAX_STATE || scope.len() > MAX_STATE {
            return Err(OAuthError::InvalidRequest(
                "state and scope are at most 1024 bytes",
            ));
        }
        let base = match form.get("key_rules") {
            Some(rules) => session::from_key_rules(rules, &client, api)?,
            None => session::from_client(&client, api),
        };
        match response_type {
            ResponseType::Code => {
                let challenge = self.challenge(&client, form)?;
                let code = random_token();
                let expires_at = chrono::Duration::try_seconds(self.lifetimes.code_secs)
                    .and_then(|d| Utc::now().checked_add_signed(d))
                    .ok_or_else(|| OAuthError::internal("code lifetime out of range"))?;
                self.store
                    .insert_oauth_code(&NewCode {
                        code_hash: &key_hash(&code),
                        client_id: &client.client_id,
                        api_id: &api.api_id,
                        // As asked: RFC 6749 4.1.3 wants the token request to repeat
                        // it when (and only when) the authorization request sent it.
                        redirect_uri: form.get("redirect_uri").unwrap_or_default(),
                        session: &base,
                        scope,
                        code_challenge: challenge,
                        code_challenge_method: challenge.map(|_| pkce::S256),
                        expires_at,
                    })
                    .await?;
                let mut params = vec![("code", code.as_str())];
                if !state.is_empty() {
                    params.push(("state", state));
                }
                Ok(OAuthReply::ok(json!({
                    "code": code,
                    "redirect_to": with_query(redirect, &params),
                })))
            }
            ResponseType::Token => {
                let issued = self
                    .issue(api, &client, &base, scope, Refresh::None)
                    .await?;
                let expires_in = issued.expires_in.to_string();
                let mut params = vec![
                    ("access_token", issued.access_token.as_str()),
                    ("token_type", "bearer"),
                    ("expires_in", expires_in.as_str()),
                ];
                if !state.is_empty() {
                    params.push(("state", state));
                }
                self.notify(
                    api,
                    super::notify::Kind::New,
                    &super::notify::Tokens {
                        new_oauth_token: &issued.access_token,
                        ..Default::default()
                    },
                );
                Ok(OAuthReply::ok(json!({
                    "access_token": issued.access_token,
                    "token_type": "bearer",
                    "expires_in": issued.expires_in,
                    "redirect_to": with_fragment(redirect, &params),
                })))
            }
        }
    }

    /// The PKCE challenge of a code request: S256 only, required of a public client.
    fn challenge<'a>(
        &self,
        client: &OAuthClient,
        form: &Form<'a>,
    ) -> Result<Option<&'a str>, OAuthError> {
        let challenge = form.get("code_challenge");
        let method = form.get("code_challenge_method");
        match (challenge, method) {
            (None, None) if client.is_public() => Err(OAuthError::InvalidRequest(
                "PKCE code_challenge (S256) is required for public clients",
            )),
            (None, None) => Ok(None),
            (None, Some(_)) => Err(OAuthError::InvalidRequest(
                "code_challenge_method without code_challenge",
            )),
            // RFC 7636 4.3: no method means `plain`, which is not supported.
            (Some(_), m) if m != Some(pkce::S256) => Err(OAuthError::InvalidRequest(
                "code_challenge_method must be S256",
            )),
            (Some(c), _) if !pkce::well_formed(c) => Err(OAuthError::InvalidRequest(
                "code_challenge must be 43 to 128 characters of [A-Za-z0-9-._~]",
            )),
            (Some(c), _) => Ok(Some(c)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_their_query_and_encode_values() {
        assert_eq!(
            with_query("http://a/cb", &[("code", "x"), ("state", "s t&")]),
            "http://a/cb?code=x&state=s+t%26"
        );
        assert_eq!(
            with_query("http://a/cb?k=1", &[("code", "x")]),
            "http://a/cb?k=1&code=x"
        );
        assert_eq!(
            with_fragment(
                "http://a/cb",
                &[("access_token", "t"), ("token_type", "bearer")]
            ),
            "http://a/cb#access_token=t&token_type=bearer"
        );
    }
}
