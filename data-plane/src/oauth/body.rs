//! Parameters of an OAuth request: a form (`application/x-www-form-urlencoded`), a JSON object
//! (Tyk accepts one), or the query of `/oauth/authorize`. Bounded in size, in count and per
//! field; a parameter given twice is refused (RFC 6749 §3.1), so the edge and the control plane
//! can never read different values of it.

use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;

use crate::error::OAuthError;

/// Largest body (or query) read.
pub const MAX_BODY: usize = 16 * 1024;
pub const MAX_FIELDS: usize = 64;
const MAX_NAME: usize = 64;
const MAX_VALUE: usize = 8 * 1024;

/// Parameters in the order sent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A parameter sent empty counts as absent.
    pub fn non_empty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn into_inner(self) -> Vec<(String, String)> {
        self.0
    }

    /// The parameters as a query string.
    pub fn to_query(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.iter())
            .finish()
    }

    fn push(&mut self, name: String, value: String) -> Result<(), OAuthError> {
        if self.0.len() >= MAX_FIELDS {
            return Err(OAuthError::InvalidRequest("too many parameters"));
        }
        if name.is_empty() || name.len() > MAX_NAME || value.len() > MAX_VALUE {
            return Err(OAuthError::InvalidRequest(
                "a parameter name or value is too long",
            ));
        }
        if self.get(&name).is_some() {
            return Err(OAuthError::InvalidRequest(
                "a parameter was given more than once",
            ));
        }
        self.0.push((name, value));
        Ok(())
    }
}

/// `a=1&b=2` form or query encoding.
pub fn parse_form(raw: &[u8]) -> Result<Params, OAuthError> {
    if raw.len() > MAX_BODY {
        return Err(OAuthError::InvalidRequest("the request is too large"));
    }
    let mut params = Params::default();
    for (k, v) in url::form_urlencoded::parse(raw) {
        params.push(k.into_owned(), v.into_owned())?;
    }
    Ok(params)
}

/// A JSON object; strings are taken as they are, numbers and booleans as their text, objects
/// and arrays (a `key_rules` session) as their JSON, nulls as absent.
pub fn parse_json(raw: &[u8]) -> Result<Params, OAuthError> {
    if raw.len() > MAX_BODY {
        return Err(OAuthError::InvalidRequest("the request is too large"));
    }
    let pairs = serde_json::from_slice::<Ordered>(raw)
        .map_err(|_| OAuthError::InvalidRequest("the body is not a JSON object"))?;
    let mut params = Params::default();
    for (k, v) in pairs.0 {
        let text = match v {
            Value::Null => continue,
            Value::String(s) => s,
            Value::Bool(_) | Value::Number(_) => v.to_string(),
            Value::Array(_) | Value::Object(_) => v.to_string(),
        };
        params.push(k, text)?;
    }
    Ok(params)
}

/// The body by its content type: JSON, or a form (also when no type is given, as curl -d).
pub fn parse_body(content_type: Option<&str>, raw: &[u8]) -> Result<Params, OAuthError> {
    let essence = content_type
        .and_then(|t| t.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    let json = essence.eq_ignore_ascii_case("application/json")
        || essence
            .get(essence.len().saturating_sub(5)..)
            .is_some_and(|s| s.eq_ignore_ascii_case("+json"));
    if json {
        parse_json(raw)
    } else if essence.is_empty()
        || essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
    {
        parse_form(raw)
    } else {
        Err(OAuthError::InvalidRequest(
            "the body must be application/x-www-form-urlencoded or application/json",
        ))
    }
}

/// A JSON object's members in document order, at most [`MAX_FIELDS`] + 1 of them read.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    if out.len() > MAX_FIELDS {
                        return Err(serde::de::Error::custom("too many members"));
                    }
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_keep_their_order_and_decode() {
        let p =
            parse_form(b"grant_type=client_credentials&scope=a+b&redirect_uri=http%3A%2F%2Fx%2Fcb")
                .unwrap();
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            [
                ("grant_type", "client_credentials"),
                ("scope", "a b"),
                ("redirect_uri", "http://x/cb")
            ]
        );
        assert_eq!(p.get("scope"), Some("a b"));
        assert_eq!(parse_form(b"").unwrap(), Params::default());
        assert_eq!(parse_form(b"a=&b=1").unwrap().non_empty("a"), None);
    }

    #[test]
    fn forms_are_bounded_and_refuse_repeated_parameters() {
        let dup = parse_form(b"code=a&code=b").unwrap_err();
        assert_eq!(
            dup,
            OAuthError::InvalidRequest("a parameter was given more than once")
        );
        let many: String = (0..=MAX_FIELDS).map(|i| format!("f{i}=1&")).collect();
        assert!(parse_form(many.as_bytes()).is_err());
        let fits: String = (0..MAX_FIELDS).map(|i| format!("f{i}=1&")).collect();
        assert_eq!(
            parse_form(fits.as_bytes()).unwrap().iter().count(),
            MAX_FIELDS
        );
        let long_value = format!("a={}", "x".repeat(MAX_VALUE + 1));
        assert!(parse_form(long_value.as_bytes()).is_err());
        let long_name = format!("{}=1", "n".repeat(MAX_NAME + 1));
        assert!(parse_form(long_name.as_bytes()).is_err());
        let huge = vec![b'a'; MAX_BODY + 1];
        assert_eq!(
            parse_form(&huge).unwrap_err(),
            OAuthError::InvalidRequest("the request is too large")
        );
    }

    #[test]
    fn json_objects_of_strings_are_accepted_in_order() {
        let p = parse_json(
            br#"{"grant_type":"password","username":"u","expires":10,"flag":true,"none":null,
                "key_rules":{"rate":1}}"#,
        )
        .unwrap();
        assert_eq!(
            p.iter().collect::<Vec<_>>(),
            [
                ("grant_type", "password"),
                ("username", "u"),
                ("expires", "10"),
                ("flag", "true"),
                ("key_rules", r#"{"rate":1}"#)
            ]
        );
        for bad in [&b"[1]"[..], b"\"s\"", b"{", b"", br#"{"a":"1","a":"2"}"#] {
            assert!(
                parse_json(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let many: Vec<String> = (0..=MAX_FIELDS)
            .map(|i| format!("\"f{i}\":\"1\""))
            .collect();
        let many = format!("{{{}}}", many.join(","));
        assert!(parse_json(many.as_bytes()).is_err());
        // Deep nesting is bounded by the body size and serde_json's recursion limit.
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(5000), "]".repeat(5000));
        assert!(parse_json(deep.as_bytes()).is_err());
    }

    #[test]
    fn the_content_type_picks_the_parser() {
        let form = b"a=1";
        assert!(parse_body(None, form).is_ok());
        assert!(
            parse_body(
                Some("application/x-www-form-urlencoded; charset=UTF-8"),
                form
            )
            .is_ok()
        );
        assert!(parse_body(Some("Application/JSON"), br#"{"a":"1"}"#).is_ok());
        assert!(parse_body(Some("application/merge+json"), br#"{"a":"1"}"#).is_ok());
        assert!(parse_body(Some("application/json"), form).is_err());
        assert!(parse_body(Some("text/plain"), form).is_err());
        assert!(parse_body(Some("multipart/form-data; boundary=x"), form).is_err());
    }

    #[test]
    fn params_make_a_query_again() {
        let p = parse_form(b"redirect_uri=http%3A%2F%2Fx%2Fcb&state=a+b").unwrap();
        assert_eq!(p.to_query(), "redirect_uri=http%3A%2F%2Fx%2Fcb&state=a+b");
    }
}
