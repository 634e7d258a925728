//! The token endpoint: authorization_code, refresh_token, password and client_credentials
//! (RFC 6749 4 and 6), with PKCE and refresh-token rotation (docs/oauth.md).

use chrono::{DateTime, Utc};
use portcullis_proto::key_hash::key_hash;
use portcullis_proto::model::oauth::{GrantType, OAuthClient};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::client_auth::presented;
use super::errors::OAuthError;
use super::form::Form;
use super::notify::{Kind, Tokens};
use super::{OAuthApi, OAuthReply, OAuthServer, pkce, random_token, session};
use crate::store::StoreError;
use crate::store::oauth_grants::{NewRefreshToken, Rotation};

/// bcrypt reads only the first 72 bytes; a longer password would match on its prefix.
const BCRYPT_MAX_PASSWORD: usize = 72;
/// How long a password grant waits for a bcrypt slot before it is answered 503.
const BCRYPT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Which refresh token, if any, comes with an access token.
pub(super) enum Refresh {
    None,
    /// A new grant: a new family.
    NewFamily,
    /// A rotation: the next token of the family.
    Family(Uuid),
}

/// What was issued.
pub(super) struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: Option<String>,
    pub scope: String,
}

impl Issued {
    fn body(&self) -> Value {
        let mut b = Map::new();
        b.insert("access_token".into(), json!(self.access_token));
        b.insert("token_type".into(), json!("bearer"));
        b.insert("expires_in".into(), json!(self.expires_in));
        if let Some(r) = &self.refresh_token {
            b.insert("refresh_token".into(), json!(r));
        }
        if !self.scope.is_empty() {
            b.insert("scope".into(), json!(self.scope));
        }
        Value::Object(b)
    }
}

fn after(now: DateTime<Utc>, secs: i64) -> Result<DateTime<Utc>, OAuthError> {
    chrono::Duration::try_seconds(secs)
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| OAuthError::internal("lifetime out of range"))
}

impl OAuthServer {
    /// Stores an access token (a key every edge finds) and, when asked, its refresh token.
    pub(super) async fn issue(
        &self,
        api: &OAuthApi,
        client: &OAuthClient,
        base: &Value,
        scope: &str,
        refresh: Refresh,
    ) -> Result<Issued, OAuthError> {
        let now = Utc::now();
        let expires = after(now, self.lifetimes.token_secs)?;
        let access_token = random_token();
        let access_hash = key_hash(&access_token);
        let stored = session::stamped(base, now, expires);
        self.store
            .put_oauth_token(&access_hash, &stored, &client.client_id, expires)
            .await?;
        let family = match refresh {
            Refresh::None => None,
            Refresh::NewFamily => Some(Uuid::new_v4()),
            Refresh::Family(f) => Some(f),
        };
        let refresh_token = match family {
            Some(family) => {
                let token = random_token();
                self.store
                    .insert_refresh_token(&NewRefreshToken {
                        token_hash: &key_hash(&token),
                        client_id: &client.client_id,
                        api_id: &api.api_id,
                        family,
                        access_key_hash: &access_hash,
                        session: base,
                        scope,
                        expires_at: after(now, self.lifetimes.refresh_secs)?,
                    })
                    .await?;
                Some(token)
            }
            None => None,
        };
        tracing::info!(api_id = %api.api_id, client_id = %client.client_id, key_hash = %access_hash, "OAuth access token issued");
        Ok(Issued {
            access_token,
            expires_in: self.lifetimes.token_secs,
            refresh_token,
            scope: scope.to_owned(),
        })
    }

    fn refresh_for_new_grant(&self, api: &OAuthApi) -> Refresh {
        if api.spec.grant_allowed(GrantType::RefreshToken) {
            Refresh::NewFamily
        } else {
            Refresh::None
        }
    }

    /// `POST {listen_path}oauth/token`.
    pub(super) async fn token(
        &self,
        api: &OAuthApi,
        form: &Form<'_>,
        authorization: &str,
    ) -> Result<OAuthReply, OAuthError> {
        let grant = form.require("grant_type", "grant_type is required")?;
        let grant = GrantType::parse(grant)
            .filter(|g| api.spec.grant_allowed(*g))
            .ok_or(OAuthError::UnsupportedGrantType)?;
        let client = self
            .authenticate(&api.api_id, presented(form, authorization)?)
            .await?;
        if client.is_public()
            && !matches!(
                grant,
                GrantType::AuthorizationCode | GrantType::RefreshToken
            )
        {
            return Err(OAuthError::UnauthorizedClient(
                "a public client may use authorization_code and refresh_token only",
            ));
        }
        let issued = match grant {
            GrantType::AuthorizationCode => self.authorization_code(api, &client, form).await?,
            GrantType::RefreshToken => self.refresh_token(api, &client, form).await?,
            GrantType::Password => self.password(api, &client, form).await?,
            GrantType::ClientCredentials => {
                let base = session::from_client(&client, api);
                let scope = form.get("scope").unwrap_or_default();
                let issued = self
                    .issue(api, &client, &base, scope, Refresh::None)
                    .await?;
                self.notify_new(api, "", &issued);
                issued
            }
        };
        Ok(OAuthReply::ok(issued.body()))
    }

    fn notify_new(&self, api: &OAuthApi, code: &str, issued: &Issued) {
        self.notify(
            api,
            Kind::New,
            &Tokens {
                auth_code: code,
                new_oauth_token: &issued.access_token,
                refresh_token: issued.refresh_token.as_deref().unwrap_or_default(),
                ..Tokens::default()
            },
        );
    }

    async fn authorization_code(
        &self,
        api: &OAuthApi,
        client: &OAuthClient,
        form: &Form<'_>,
    ) -> Result<Issued, OAuthError> {
        let code = form.require("code", "code is required")?;
        // Burned whatever follows: a code presented with a wrong verifier is not retried.
        let redeemed = self.store.redeem_oauth_code(&key_hash(code)).await?.ok_or(
            OAuthError::InvalidGrant("the code is unknown, expired or already used"),
        )?;
        if redeemed.client_id != client.client_id || redeemed.api_id != api.api_id {
            return Err(OAuthError::InvalidGrant(
                "the code was issued to another client or API",
            ));
        }
        if form.get("redirect_uri").unwrap_or_default() != redeemed.redirect_uri {
            return Err(OAuthError::InvalidGrant(
                "redirect_uri differs from the one the code was issued for",
            ));
        }
        let verifier = form.get("code_verifier");
        match (&redeemed.code_challenge, verifier) {
            (Some(challenge), Some(v)) => {
                if redeemed.code_challenge_method.as_deref() != Some(pkce::S256)
                    || !pkce::verify(v, challenge)
                {
                    return Err(OAuthError::InvalidGrant("code_verifier does not match"));
                }
            }
            (Some(_), None) => {
                return Err(OAuthError::InvalidGrant(
                    "code_verifier is required for this code",
                ));
            }
            // A verifier for a code issued without a challenge proves nothing; refusing it
            // keeps a downgrade from looking like PKCE.
            (None, Some(_)) => {
                return Err(OAuthError::InvalidGrant(
                    "the code was issued without a code_challenge",
                ));
            }
            (None, None) if client.is_public() => {
                return Err(OAuthError::InvalidGrant(
                    "PKCE is required for public clients",
                ));
            }
            (None, None) => {}
        }
        let refresh = self.refresh_for_new_grant(api);
        let issued = self
            .issue(api, client, &redeemed.session, &redeemed.scope, refresh)
            .await?;
        self.notify_new(api, code, &issued);
        Ok(issued)
    }

    async fn refresh_token(
        &self,
        api: &OAuthApi,
        client: &OAuthClient,
        form: &Form<'_>,
    ) -> Result<Issued, OAuthError> {
        let old = form.require("refresh_token", "refresh_token is required")?;
        match self
            .store
            .rotate_refresh_token(&key_hash(old), &client.client_id, &api.api_id)
            .await?
        {
            Rotation::Rotated(r) => {
                let issued = self
                    .issue(api, client, &r.session, &r.scope, Refresh::Family(r.family))
                    .await?;
                self.notify(
                    api,
                    Kind::Refresh,
                    &Tokens {
                        new_oauth_token: &issued.access_token,
                        refresh_token: issued.refresh_token.as_deref().unwrap_or_default(),
                        old_refresh_token: old,
                        ..Tokens::default()
                    },
                );
                Ok(issued)
            }
            Rotation::Reused {
                revoked_access_tokens,
            } => {
                tracing::warn!(api_id = %api.api_id, client_id = %client.client_id, revoked_access_tokens, "a used refresh token was presented again: its family is revoked");
                Err(OAuthError::InvalidGrant(
                    "the refresh token was already used",
                ))
            }
            Rotation::NotFound => Err(OAuthError::InvalidGrant(
                "the refresh token is unknown, expired or revoked",
            )),
        }
    }

    /// The resource owner is a basic-auth user: a key named `{org_id}{username}` (Tyk's
    /// name) or, as the edge's basic auth finds users, `{username}`.
    async fn password(
        &self,
        api: &OAuthApi,
        client: &OAuthClient,
        form: &Form<'_>,
    ) -> Result<Issued, OAuthError> {
        const WRONG: OAuthError = OAuthError::InvalidGrant("invalid username or password");
        let username = form.require("username", "username is required")?;
        let password = form.require("password", "password is required")?;
        if password.len() > BCRYPT_MAX_PASSWORD {
            return Err(WRONG);
        }
        let mut names = vec![format!("{}{username}", api.org_id)];
        if !api.org_id.is_empty() {
            names.push(username.to_owned());
        }
        let mut user = None;
        for name in names {
            match self.store.get_key(&key_hash(&name)).await {
                Ok(s) => {
                    user = Some(s);
                    break;
                }
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let user = user.ok_or(WRONG)?;
        // The user's organisation must be the API's, exactly; a disabled or expired user gets
        // no tokens, as it would get no access with basic auth.
        let org_ok = user["org_id"].as_str().unwrap_or_default() == api.org_id;
        let expires = user["expires"].as_i64().unwrap_or(0);
        let usable = user["is_inactive"].as_bool() != Some(true)
            && (expires <= 0 || expires > Utc::now().timestamp());
        let org_ok = org_ok && usable;
        let stored = user["basic_auth_data"]["password"]
            .as_str()
            .filter(|p| !p.is_empty())
            .map(str::to_owned);
        let (Some(stored), true) = (stored, org_ok) else {
            return Err(WRONG);
        };
        let hash_type = user["basic_auth_data"]["hash_type"]
            .as_str()
            .unwrap_or_default();
        let password = password.to_owned();
        let ok = if hash_type == "bcrypt" {
            let _slot = tokio::time::timeout(BCRYPT_WAIT, self.bcrypt_slots.acquire())
                .await
                .map_err(|_| OAuthError::Busy)?
                .map_err(|_| OAuthError::Busy)?;
            // Tens of milliseconds of CPU: off the async workers.
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &stored).unwrap_or(false))
                .await
                .map_err(|_| OAuthError::internal("password check failed"))?
        } else {
            // The control plane hashes every password it stores; a plaintext one only comes
            // from an older store, and is compared in constant time.
            subtle::ConstantTimeEq::ct_eq(stored.as_bytes(), password.as_bytes()).into()
        };
        if !ok {
            return Err(WRONG);
        }
        let base = session::from_client(client, api);
        let scope = form.get("scope").unwrap_or_default();
        let refresh = self.refresh_for_new_grant(api);
        let issued = self.issue(api, client, &base, scope, refresh).await?;
        self.notify_new(api, "", &issued);
        Ok(issued)
    }
}
