//! Client authentication at the token and revoke endpoints: HTTP Basic or form parameters
//! (RFC 6749 2.3.1), a public client by its id alone. Every failure is the same
//! `invalid_client`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portcullis_proto::model::PolicySpec;
use portcullis_proto::model::oauth::OAuthClient;
use subtle::ConstantTimeEq;

use super::OAuthServer;
use super::errors::OAuthError;
use super::form::Form;
use crate::store::{Store, StoreError};

/// The credentials a request presents.
#[derive(Debug, PartialEq, Eq)]
pub struct Presented {
    pub client_id: String,
    pub secret: Option<String>,
}

/// `application/x-www-form-urlencoded` decoding of one component (RFC 6749 2.3.1 applies it
/// to the Basic user and password): `+` is a space, `%XX` a byte, the result UTF-8.
pub fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// (id, secret) of an `Authorization: Basic` header; anything else that is not empty fails.
fn basic(authorization: &str) -> Result<Option<(String, String)>, OAuthError> {
    let authorization = authorization.trim();
    if authorization.is_empty() {
        return Ok(None);
    }
    let (scheme, data) = authorization
        .split_once(' ')
        .ok_or(OAuthError::InvalidClient)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::InvalidClient);
    }
    let raw = STANDARD
        .decode(data.trim())
        .map_err(|_| OAuthError::InvalidClient)?;
    let raw = String::from_utf8(raw).map_err(|_| OAuthError::InvalidClient)?;
    // The id cannot hold ':' once encoded, the secret may: split at the first one.
    let (id, secret) = raw.split_once(':').ok_or(OAuthError::InvalidClient)?;
    let id = form_decode(id).ok_or(OAuthError::InvalidClient)?;
    let secret = form_decode(secret).ok_or(OAuthError::InvalidClient)?;
    Ok(Some((id, secret)))
}

/// Who the request says it is. `None` when it names no client at all.
pub fn presented(form: &Form<'_>, authorization: &str) -> Result<Option<Presented>, OAuthError> {
    let form_id = form.get("client_id");
    let form_secret = form.get("client_secret");
    match basic(authorization)? {
        Some((id, secret)) => {
            // RFC 6749 2.3: one method per request.
            if form_secret.is_some() {
                return Err(OAuthError::InvalidRequest(
                    "use one client authentication method (HTTP Basic or form), not both",
                ));
            }
            if form_id.is_some_and(|f| f != id) {
                return Err(OAuthError::InvalidRequest(
                    "client_id differs from the HTTP Basic client",
                ));
            }
            Ok(Some(Presented {
                client_id: id,
                secret: Some(secret).filter(|s| !s.is_empty()),
            }))
        }
        None => Ok(form_id.map(|id| Presented {
            client_id: id.to_owned(),
            secret: form_secret.map(str::to_owned),
        })),
    }
}

/// Whether `client` may be used on `api_id`: its own API, or (no API of its own) an API its
/// policy grants.
pub async fn belongs(
    store: &Store,
    client: &OAuthClient,
    api_id: &str,
) -> Result<bool, OAuthError> {
    if !client.api_id.is_empty() {
        return Ok(client.api_id == api_id);
    }
    if client.policy_id.is_empty() {
        return Ok(false);
    }
    match store.get_policy(&client.policy_id).await {
        Ok(policy) => Ok(serde_json::from_value::<PolicySpec>(policy)
            .is_ok_and(|p| p.access_rights.contains_key(api_id))),
        Err(StoreError::NotFound) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl OAuthServer {
    /// The client, if it exists (`None` otherwise).
    pub(super) async fn find_client(
        &self,
        client_id: &str,
    ) -> Result<Option<OAuthClient>, OAuthError> {
        match self.store.get_oauth_client(client_id).await {
            Ok(c) => Ok(Some(c)),
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `secret` is the client's (constant time). A client whose stored secret does not
    /// open matches nothing.
    pub(super) fn secret_matches(&self, client: &OAuthClient, secret: &str) -> bool {
        if client.secret.is_empty() {
            return false;
        }
        let Ok(stored) = portcullis_proto::sealed_field::open(
            &self.stored_secrets,
            &client.client_id,
            "secret",
            &client.secret,
        ) else {
            tracing::warn!(client_id = %client.client_id, "an OAuth client's secret does not open (another --encryption-secret?)");
            return false;
        };
        !stored.is_empty() && bool::from(stored.as_bytes().ct_eq(secret.as_bytes()))
    }

    /// Authenticates the client of a token request on `api_id`. A public client presents its
    /// id only; a confidential one its secret too.
    pub(super) async fn authenticate(
        &self,
        api_id: &str,
        presented: Option<Presented>,
    ) -> Result<OAuthClient, OAuthError> {
        let presented = presented.ok_or(OAuthError::InvalidClient)?;
        let client = self
            .find_client(&presented.client_id)
            .await?
            .ok_or(OAuthError::InvalidClient)?;
        if !belongs(&self.store, &client, api_id).await? {
            return Err(OAuthError::InvalidClient);
        }
        let ok = if client.is_public() {
            presented.secret.is_none()
        } else {
            presented
                .secret
                .as_deref()
                .is_some_and(|s| self.secret_matches(&client, s))
        };
        if ok {
            Ok(client)
        } else {
            Err(OAuthError::InvalidClient)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    fn b64(s: &str) -> String {
        format!("Basic {}", STANDARD.encode(s))
    }

    #[test]
    fn form_decoding_of_basic_credentials() {
        assert_eq!(form_decode("a+b%3Ac%25").unwrap(), "a b:c%");
        assert_eq!(form_decode("%C3%A9").unwrap(), "é");
        assert!(form_decode("%zz").is_none());
        assert!(form_decode("%4").is_none(), "truncated escape");
        assert!(form_decode("%FF").is_none(), "not UTF-8");
    }

    #[test]
    fn basic_credentials_are_percent_decoded() {
        let f = form(&[]);
        let f = Form::new(&f).unwrap();
        let p = presented(&f, &b64("my%3Aclient:s%2Bcr%3Aet+x"))
            .unwrap()
            .unwrap();
        assert_eq!(p.client_id, "my:client");
        assert_eq!(p.secret.as_deref(), Some("s+cr:et x"));
        // The secret may hold a raw ':' (split at the first).
        let p = presented(&f, &b64("id:a:b")).unwrap().unwrap();
        assert_eq!(
            (p.client_id.as_str(), p.secret.as_deref()),
            ("id", Some("a:b"))
        );
        let p = presented(&f, &format!("bAsIc {}", STANDARD.encode("id:s")))
            .unwrap()
            .unwrap();
        assert_eq!(p.client_id, "id", "the scheme is case-insensitive");
        // An empty secret is none (a public client in Basic form).
        let p = presented(&f, &b64("pub:")).unwrap().unwrap();
        assert_eq!(p.secret, None);
    }

    #[test]
    fn malformed_basic_is_invalid_client() {
        let f = form(&[]);
        let f = Form::new(&f).unwrap();
        for bad in [
            "Basic",
            "Basic !!!",
            "Bearer abc",
            &b64("no-colon"),
            &b64("id%zz:s"),
        ] {
            assert!(
                matches!(presented(&f, bad), Err(OAuthError::InvalidClient)),
                "{bad}"
            );
        }
        assert_eq!(presented(&f, "").unwrap(), None);
    }

    #[test]
    fn form_credentials_and_mixing() {
        let f = form(&[("client_id", "c"), ("client_secret", "s")]);
        let f = Form::new(&f).unwrap();
        let p = presented(&f, "").unwrap().unwrap();
        assert_eq!(
            (p.client_id.as_str(), p.secret.as_deref()),
            ("c", Some("s"))
        );
        assert!(matches!(
            presented(&f, &b64("c:s")),
            Err(OAuthError::InvalidRequest(_))
        ));
        let f = form(&[("client_id", "other")]);
        let f = Form::new(&f).unwrap();
        assert!(matches!(
            presented(&f, &b64("c:s")),
            Err(OAuthError::InvalidRequest(_))
        ));
        let f = form(&[("client_id", "c")]);
        let f = Form::new(&f).unwrap();
        assert_eq!(presented(&f, &b64("c:s")).unwrap().unwrap().client_id, "c");
        let p = presented(&f, "").unwrap().unwrap();
        assert_eq!(p.secret, None);
    }
}
