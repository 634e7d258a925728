//! `POST /tyk/apis/oas/import`: a plain OpenAPI document plus query parameters becomes a Tyk
//! OAS API with the extension Tyk's import would build (docs/oas.md, "Import").

use serde_json::{Map, Value, json};

use super::super::ValidationError;
use super::super::compat::Warning;
use super::read::{self, object};
use super::{EXTENSION, OasApi, from_document};

/// The query parameters of Tyk's import route.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportParams {
    pub listen_path: Option<String>,
    pub upstream_url: Option<String>,
    pub custom_domain: Option<String>,
    pub api_id: Option<String>,
    pub authentication: bool,
    pub allow_list: bool,
    pub validate_request: bool,
    pub mock_response: bool,
}

/// Go's `strconv.ParseBool`, which Tyk reads these flags with.
fn flag(name: &str, v: &str) -> Result<bool, ValidationError> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(ValidationError::new(name, "must be true or false")),
    }
}

impl ImportParams {
    /// From the decoded query pairs; unknown parameters are ignored, as Tyk does.
    pub fn from_query<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ValidationError> {
        let mut p = Self::default();
        for (k, v) in pairs {
            let text = |v: &str| (!v.is_empty()).then(|| v.to_owned());
            match k {
                "listenPath" => p.listen_path = text(v),
                "upstreamURL" => p.upstream_url = text(v),
                "customDomain" => p.custom_domain = text(v),
                "apiID" => p.api_id = text(v),
                "authentication" => p.authentication = flag(k, v)?,
                "allowList" => p.allow_list = flag(k, v)?,
                "validateRequest" => p.validate_request = flag(k, v)?,
                "mockResponse" => p.mock_response = flag(k, v)?,
                _ => {}
            }
        }
        Ok(p)
    }
}

/// Builds the Tyk OAS API of an imported OpenAPI document.
pub fn import(body: &[u8], p: &ImportParams) -> Result<OasApi, ValidationError> {
    let mut doc = read::document(body)?;
    if doc.contains_key(EXTENSION) {
        return Err(ValidationError::new(
            EXTENSION,
            "the import payload should not contain x-tyk-api-gateway",
        ));
    }
    if p.allow_list {
        return Err(ValidationError::new(
            "allowList",
            "endpoint allow lists are not implemented; import without allowList",
        ));
    }
    let upstream = match &p.upstream_url {
        Some(u) => u.clone(),
        None => first_server(&doc)?,
    };
    let title = doc
        .get("info")
        .and_then(|i| i.get("title"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut info = json!({"name": title, "state": {"active": true}});
    if let Some(id) = &p.api_id {
        info["id"] = json!(id);
    }
    let mut server = json!({
        "listenPath": {"value": p.listen_path.as_deref().unwrap_or("/"), "strip": true},
    });
    if let Some(d) = &p.custom_domain {
        server["customDomain"] = json!({"enabled": true, "name": d});
    }
    if p.authentication {
        server["authentication"] = authentication(&doc)?;
    }
    doc.insert(
        EXTENSION.into(),
        json!({"info": info, "upstream": {"url": upstream}, "server": server}),
    );
    let mut api = from_document(doc)?;
    if p.validate_request {
        api.warnings.push(Warning {
            field: "validateRequest".into(),
            reason: "request validation is not applied; requests reach the upstream unchecked"
                .into(),
        });
    }
    if p.mock_response {
        api.warnings.push(Warning {
            field: "mockResponse".into(),
            reason: "mock responses are not served; requests reach the upstream".into(),
        });
    }
    Ok(api)
}

/// `servers[0].url` with its variables replaced by their defaults (Tyk's upstream when no
/// `upstreamURL` is given).
fn first_server(doc: &Map<String, Value>) -> Result<String, ValidationError> {
    let Some(server) = doc
        .get("servers")
        .and_then(Value::as_array)
        .and_then(|s| s.first())
    else {
        return Err(ValidationError::new(
            "upstreamURL",
            "is required when the document has no servers entry",
        ));
    };
    let mut url = server
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| ValidationError::new("servers[0].url", "is required"))?
        .to_owned();
    if let Some(Value::Object(vars)) = server.get("variables") {
        for (name, var) in vars {
            let default = var
                .get("default")
                .and_then(Value::as_str)
                .unwrap_or_default();
            url = url.replace(&format!("{{{name}}}"), default);
        }
    }
    if url::Url::parse(&url).is_err() {
        return Err(ValidationError::new(
            "servers[0].url",
            format!(
                "error validating servers entry in OAS: Please update {url:?} to be a valid url or pass a valid url with upstreamURL query param"
            ),
        ));
    }
    Ok(url)
}

/// `server.authentication` enabling every scheme the document's `security` names, as Tyk's
/// `authentication=true` does.
fn authentication(doc: &Map<String, Value>) -> Result<Value, ValidationError> {
    let names: Vec<String> = doc
        .get("security")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .flat_map(|r| r.keys().cloned())
        .collect();
    if names.is_empty() {
        return Err(ValidationError::new(
            "security",
            "authentication=true needs the document to name a security scheme",
        ));
    }
    let components = object(doc, "components", "components")?
        .map(|c| object(c, "securitySchemes", "components.securitySchemes"))
        .transpose()?
        .flatten();
    let kind = |n: &str| {
        components
            .and_then(|c| c.get(n))
            .map(|c| {
                let s = |k: &str| {
                    c.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                (s("type"), s("bearerFormat"))
            })
            .unwrap_or_default()
    };
    let mut schemes = Map::new();
    for n in &names {
        schemes.insert(n.clone(), json!({"enabled": true}));
    }
    let mut auth = json!({"enabled": true, "securitySchemes": schemes});
    if schemes_len(&auth) >= 2 {
        // Tyk's rule: any token scheme identifies the caller, else a JWT, else OAuth.
        let kinds: Vec<(String, String)> = names.iter().map(|n| kind(n)).collect();
        let base = if kinds.iter().any(|(t, _)| t == "apiKey") {
            "auth_token"
        } else if kinds.iter().any(|(t, f)| t == "http" && f == "JWT") {
            "jwt_claim"
        } else {
            "oauth_key"
        };
        auth["baseIdentityProvider"] = json!(base);
    }
    Ok(auth)
}

fn schemes_len(auth: &Value) -> usize {
    auth.get("securitySchemes")
        .and_then(Value::as_object)
        .map_or(0, Map::len)
}
