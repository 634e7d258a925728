//! OAuth clients in a configuration folder (`oauth_clients/`, docs/config.md). Each file is
//! checked as `POST /tyk/oauth/clients/create` checks a client, but against the APIs and
//! policies the store will hold once the whole folder is applied, so a client may name an API
//! of the same folder. Secrets are compared opened and sealed before anything is written.

use std::collections::BTreeMap;

use portcullis_proto::model::ValidationError;
use portcullis_proto::model::oauth::OAuthClient;
use portcullis_proto::sealed_field;
use serde_json::Value;

use super::oauth_clients::{
    DEFAULT_AUTH_METHOD, SECRET_FIELD, api_id_required, check_plain_secret, grants, new_secret,
    parse_client, policy_org, same_secret, seal_secret,
};
use super::{ApiError, ApiState};
use crate::store::StoreError;

/// The secret a file gives.
enum Secret {
    /// None: a stored client keeps its own, a new confidential one gets a random one (read it
    /// with `GET /tyk/oauth/clients/{api_id}/{client_id}`).
    Keep,
    /// In plain text, or sealed (as `config dump` writes it) and opened here.
    Plain(String),
}

/// One file of `oauth_clients/`, parsed.
pub(super) struct Wanted {
    source: String,
    /// Its secret taken out.
    client: OAuthClient,
    secret: Secret,
}

/// A file's own error, named with the file.
fn in_file(source: &str) -> impl Fn(ApiError) -> ApiError + '_ {
    move |e| match e {
        ApiError::Invalid(e) => ApiError::InFile {
            file: source.to_owned(),
            field: e.field,
            reason: e.reason,
        },
        ApiError::Refused { field, message } => ApiError::InFile {
            file: source.to_owned(),
            field: field.to_owned(),
            reason: message.to_owned(),
        },
        other => other,
    }
}

fn refused(source: &str, field: &str, reason: &str) -> ApiError {
    ApiError::InFile {
        file: source.to_owned(),
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

pub(super) fn parse_item(state: &ApiState, source: &str, body: &Value) -> Result<Wanted, ApiError> {
    // The secret is read apart: a parse error quotes the value it met, and a secret written
    // unquoted in YAML (a number) must not come back in an answer.
    let mut body = body.clone();
    let given = match body.as_object_mut().and_then(|o| o.remove("secret")) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(refused(
                source,
                "secret",
                "must be a string (quote it in YAML)",
            ));
        }
    };
    let bytes = serde_json::to_vec(&body)
        .map_err(|e| in_file(source)(ValidationError::new("body", e.to_string()).into()))?;
    let client = parse_client(&bytes).map_err(in_file(source))?;
    let secret = if given.is_empty() {
        Secret::Keep
    } else if sealed_field::is_sealed(&given) {
        // A sealed value is bound to its client id: one copied into another client's file, or
        // dumped under another --encryption-secret, does not open.
        let plain = sealed_field::open(
            &state.stored_secrets,
            &client.client_id,
            SECRET_FIELD,
            &given,
        )
        .map_err(|_| {
            refused(
                source,
                "secret",
                "is a sealed value that does not open for this client_id with this control plane's --encryption-secret",
            )
        })?;
        Secret::Plain(plain)
    } else {
        check_plain_secret(&given).map_err(in_file(source))?;
        Secret::Plain(given)
    };
    Ok(Wanted {
        source: source.to_owned(),
        client,
        secret,
    })
}

/// What the store will hold once the folder is applied, as far as a client depends on it:
/// each API's `use_oauth2` and org, and each policy's body.
#[derive(Default)]
pub(super) struct Targets {
    pub(super) apis: BTreeMap<String, (bool, String)>,
    pub(super) policies: BTreeMap<String, Value>,
}

impl Targets {
    /// An API as a stored or desired body shows it.
    pub(super) fn api_of(body: &Value) -> (bool, String) {
        let use_oauth2 = body
            .get("use_oauth2")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let org = body
            .get("org_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        (use_oauth2, org)
    }
}

/// The clients to plan: `(source, id, body with the secret in plain text)` to compare, and the
/// clients to write, by id, their secrets sealed.
pub(super) type Resolved = (Vec<(String, String, Value)>, BTreeMap<String, OAuthClient>);

pub(super) fn resolve(
    state: &ApiState,
    wanted: Vec<Wanted>,
    stored: &BTreeMap<String, Value>,
    targets: &Targets,
) -> Result<Resolved, ApiError> {
    let mut rows = Vec::with_capacity(wanted.len());
    let mut write = BTreeMap::new();
    for Wanted {
        source,
        mut client,
        secret,
    } in wanted
    {
        if client.token_endpoint_auth_method.is_empty() {
            client.token_endpoint_auth_method = DEFAULT_AUTH_METHOD.to_owned();
        }
        client.validate().map_err(|e| in_file(&source)(e.into()))?;
        if client.api_id.is_empty() && client.policy_id.is_empty() {
            return Err(in_file(&source)(api_id_required()));
        }
        // The org is the API's, else the policy's, as at create; the file's is not trusted.
        let mut org = None;
        if !client.api_id.is_empty() {
            match targets.apis.get(&client.api_id) {
                None => return Err(refused(&source, "api_id", "API doesn't exist")),
                Some((false, _)) => return Err(refused(&source, "api_id", "API is not OAuth2")),
                Some((true, api_org)) => org = Some(api_org.clone()),
            }
        }
        if !client.policy_id.is_empty() {
            let Some(policy) = targets.policies.get(&client.policy_id) else {
                return Err(refused(&source, "policy_id", "Policy doesn't exist"));
            };
            org.get_or_insert_with(|| policy_org(policy));
        }
        client.org_id = org.unwrap_or_default();

        let current: Option<OAuthClient> = stored
            .get(&client.client_id)
            .map(|v| serde_json::from_value(v.clone()))
            .transpose()
            .map_err(|e| {
                ApiError::Internal(StoreError::Corrupt(format!(
                    "OAuth client {}: {e}",
                    client.client_id
                )))
            })?;
        if let Some(c) = &current {
            // As PUT keeps them: the client's tokens belong to its API and its org.
            let moved = if c.api_id != client.api_id {
                Some("api_id")
            } else if c.org_id != client.org_id {
                Some("org_id")
            } else {
                None
            };
            if let Some(field) = moved {
                return Err(refused(
                    &source,
                    field,
                    "cannot change (the client's tokens belong to it; its org comes from its API or policy): delete the client and create it again",
                ));
            }
            // PUT's rule: the client stays usable on its API.
            if !client.api_id.is_empty()
                && !client.policy_id.is_empty()
                && !targets
                    .policies
                    .get(&client.policy_id)
                    .is_some_and(|p| grants(p, &client.api_id))
            {
                return Err(refused(
                    &source,
                    "policy_id",
                    "Policy access rights doesn't contain API this OAuth client belongs to",
                ));
            }
        }
        // The stored secret, opened only when it is kept or compared; one that does not open
        // (another --encryption-secret) is replaced by a secret the file gives.
        let stored_secret = current
            .as_ref()
            .map(|c| c.secret.as_str())
            .unwrap_or_default();
        let stored_plain = (!stored_secret.is_empty())
            .then(|| {
                sealed_field::open(
                    &state.stored_secrets,
                    &client.client_id,
                    SECRET_FIELD,
                    stored_secret,
                )
                .ok()
            })
            .flatten();
        // (what is written, sealed; what the plan compares, as `opened` shows the stored one)
        let (sealed, compared_secret) = match (client.is_public(), secret) {
            (true, Secret::Plain(_)) => {
                return Err(refused(
                    &source,
                    "secret",
                    "a public client (token_endpoint_auth_method none) has no secret",
                ));
            }
            (true, Secret::Keep) => (String::new(), String::new()),
            (false, Secret::Plain(s)) => {
                // An unchanged secret keeps its sealed copy, so the row does not change for
                // nothing.
                let sealed = match &stored_plain {
                    Some(p) if same_secret(p, &s) => stored_secret.to_owned(),
                    _ => seal_secret(state, &client.client_id, &s),
                };
                (sealed, s)
            }
            (false, Secret::Keep) if !stored_secret.is_empty() => (
                stored_secret.to_owned(),
                stored_plain.unwrap_or_else(|| stored_secret.to_owned()),
            ),
            (false, Secret::Keep) => {
                let plain = new_secret();
                (seal_secret(state, &client.client_id, &plain), plain)
            }
        };
        client.secret = compared_secret;
        let compared = serde_json::to_value(&client)
            .map_err(|e| ApiError::Internal(StoreError::Corrupt(format!("OAuth client: {e}"))))?;
        client.secret = sealed;
        rows.push((source, client.client_id.clone(), compared));
        write.insert(client.client_id.clone(), client);
    }
    Ok((rows, write))
}

/// A stored client as the plan compares it: its secret opened (left sealed if it does not
/// open, which then shows as a change).
pub(super) fn opened(state: &ApiState, stored: &Value) -> Value {
    let mut v = stored.clone();
    let id = v
        .get("client_id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(secret) = v.get("secret").and_then(Value::as_str)
        && let Ok(plain) = sealed_field::open(&state.stored_secrets, &id, SECRET_FIELD, secret)
    {
        v["secret"] = Value::String(plain);
    }
    v
}
