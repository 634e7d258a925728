//! Revocation: one token (RFC 7009, Tyk's `/oauth/revoke`) or every token of a client
//! (`revoke_all`), with Tyk's answers. Tokens are deleted as keys, so every edge drops them.

use portcullis_proto::key_hash::key_hash;
use serde_json::json;

use super::client_auth::{belongs, presented};
use super::errors::OAuthError;
use super::form::Form;
use super::notify::{Kind, Tokens};
use super::{OAuthApi, OAuthReply, OAuthServer};

const NO_CLIENT: &str = "oauth client doesn't exist";

impl OAuthServer {
    /// `api`: the API the request came in on (an edge's relay); `None` from the management API,
    /// whose caller holds the admin secret and needs no client secret.
    pub(super) async fn revoke(
        &self,
        api: Option<&OAuthApi>,
        form: &Form<'_>,
        authorization: &str,
    ) -> Result<OAuthReply, OAuthError> {
        let token = form
            .get("token")
            .ok_or(OAuthError::tyk(400, "token is required"))?;
        let who = match api {
            Some(_) => presented(form, authorization)?,
            None => presented(form, "")?,
        };
        let who = who.ok_or(OAuthError::tyk(400, "client_id is required"))?;
        let client = self
            .find_client(&who.client_id)
            .await?
            .ok_or(OAuthError::tyk(404, NO_CLIENT))?;
        if let Some(api) = api {
            if !belongs(&self.store, &client, &api.api_id).await? {
                return Err(OAuthError::tyk(404, NO_CLIENT));
            }
            let authenticated = client.is_public()
                || who
                    .secret
                    .as_deref()
                    .is_some_and(|s| self.secret_matches(&client, s));
            if !authenticated {
                return Err(OAuthError::InvalidClient);
            }
        }
        let hash = key_hash(token);
        let id = &client.client_id;
        let refresh_first = form.get("token_type_hint") == Some("refresh_token");
        // The hint orders the look-ups only (RFC 7009 2.1): both kinds are tried.
        let mut revoked = None;
        for refresh in [refresh_first, !refresh_first] {
            let done = if refresh {
                self.store.revoke_oauth_refresh_token(&hash, id).await?
            } else {
                self.store.revoke_oauth_access_token(&hash, id).await?
            };
            if done {
                revoked = Some(refresh);
                break;
            }
        }
        // RFC 7009 2.2: an unknown token is answered like a revoked one.
        if let Some(refresh) = revoked {
            tracing::info!(client_id = %id, refresh, "OAuth token revoked");
            let api = match api {
                Some(a) => Some(a.clone()),
                None if !client.api_id.is_empty() => self.api(&client.api_id).await.ok(),
                None => None,
            };
            if let Some(api) = api {
                self.notify(
                    &api,
                    Kind::Revoke,
                    &if refresh {
                        Tokens {
                            refresh_token: token,
                            ..Tokens::default()
                        }
                    } else {
                        Tokens {
                            new_oauth_token: token,
                            ..Tokens::default()
                        }
                    },
                );
            }
        }
        Ok(OAuthReply::ok(
            json!({"status": "ok", "message": "token revoked successfully"}),
        ))
    }

    /// Every access and refresh token (and code) of a client, for its id and secret.
    pub(super) async fn revoke_all(
        &self,
        api: Option<&OAuthApi>,
        form: &Form<'_>,
    ) -> Result<OAuthReply, OAuthError> {
        let client_id = form
            .get("client_id")
            .ok_or(OAuthError::tyk(401, "client_id is required"))?;
        let secret = form
            .get("client_secret")
            .ok_or(OAuthError::tyk(401, "client_secret is required"))?;
        let client = self
            .find_client(client_id)
            .await?
            .ok_or(OAuthError::tyk(404, NO_CLIENT))?;
        if let Some(api) = api
            && !belongs(&self.store, &client, &api.api_id).await?
        {
            return Err(OAuthError::tyk(404, NO_CLIENT));
        }
        if !self.secret_matches(&client, secret) {
            return Err(OAuthError::tyk(401, "client credentials invalid"));
        }
        let revoked = self.store.revoke_client_tokens(client_id).await?;
        tracing::info!(%client_id, revoked, "every OAuth token of a client revoked");
        Ok(OAuthReply::ok(
            json!({"status": "ok", "message": "tokens revoked successfully"}),
        ))
    }
}
