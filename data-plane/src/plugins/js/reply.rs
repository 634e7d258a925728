//! What a middleware's answer means, read the way Tyk reads its `VMReturnObject`: return
//! overrides first (a refusal, or an answer of the script's own), then the session.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::JsError;

/// The decision of one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `ReturnOverrides.ResponseCode` ≥ 400: refused, with Tyk's `{"error": message}` body.
    Deny {
        status: u16,
        message: String,
        headers: Vec<(String, String)>,
    },
    /// A code below 400 (or `OverrideError`), or a `TykJsResponse`: answered with this body
    /// as it is, the upstream never called.
    Respond {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Authenticated: `session` is what `ReturnAuthData` returned (`None`: no session).
    Allow {
        session: Option<Map<String, Value>>,
        /// The top-level `AuthValue`: Tyk's key id for the session.
        auth_value: String,
        set_headers: Vec<(String, String)>,
        delete_headers: Vec<String>,
    },
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct Answer {
    request: Option<Request>,
    session: Option<Value>,
    auth_value: Option<Value>,
    response: Option<Value>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct Request {
    set_headers: Option<Value>,
    delete_headers: Option<Value>,
    return_overrides: Option<Overrides>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct Overrides {
    response_code: Option<Value>,
    response_error: Option<Value>,
    response_body: Option<Value>,
    response_headers: Option<Value>,
    /// The gRPC protocol's name for the same map; scripts ported from it use it.
    headers: Option<Value>,
    override_error: Option<Value>,
}

fn bad(what: &str) -> JsError {
    JsError::Script(format!("the middleware's answer has {what}"))
}

/// A string field; numbers and booleans are taken as their text, null as absent.
fn string(v: Option<Value>, field: &str) -> Result<String, JsError> {
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
        Some(_) => Err(bad(&format!("a {field} that is not a string"))),
    }
}

fn string_map(v: Option<Value>, field: &str) -> Result<Vec<(String, String)>, JsError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| Ok((k, string(Some(v), field)?)))
            .collect(),
        Some(_) => Err(bad(&format!("a {field} that is not an object"))),
    }
}

fn status(v: Option<Value>) -> Result<i64, JsError> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| bad("a ResponseCode that is not an integer")),
        Some(_) => Err(bad("a ResponseCode that is not a number")),
    }
}

/// A status a final response can carry.
fn final_status(code: i64) -> Result<u16, JsError> {
    u16::try_from(code)
        .ok()
        .filter(|c| (200..=999).contains(c))
        .ok_or_else(|| bad(&format!("ResponseCode {code}, which no response can have")))
}

pub fn parse(text: &str) -> Result<Reply, JsError> {
    let answer: Answer = serde_json::from_str(text)
        .map_err(|e| JsError::Script(format!("the middleware's answer is not an object: {e}")))?;
    let Some(request) = answer.request else {
        // `TykJsResponse(response, meta)`: the script answers the request itself.
        if let Some(response) = answer.response {
            let Value::Object(mut r) = response else {
                return Err(bad("a Response that is not an object"));
            };
            let code = match status(r.remove("Code"))? {
                0 => 200,
                c => c,
            };
            return Ok(Reply::Respond {
                status: final_status(code)?,
                body: string(r.remove("Body"), "Response.Body")?,
                headers: string_map(r.remove("Headers"), "Response.Headers")?,
            });
        }
        return Err(bad("no Request"));
    };
    let o = request.return_overrides.unwrap_or_default();
    let code = status(o.response_code)?;
    let error = string(o.response_error, "ResponseError")?;
    let body = if error.is_empty() {
        string(o.response_body, "ResponseBody")?
    } else {
        error
    };
    let mut headers = string_map(o.response_headers, "ResponseHeaders")?;
    headers.extend(string_map(o.headers, "ReturnOverrides.Headers")?);
    let override_error = matches!(o.override_error, Some(Value::Bool(true)));
    if code >= 400 && !override_error {
        return Ok(Reply::Deny {
            status: final_status(code)?,
            // Tyk would send an empty message; its gRPC path says this.
            message: if body.is_empty() {
                "Key not authorised".into()
            } else {
                body
            },
            headers,
        });
    }
    if code > 0 {
        return Ok(Reply::Respond {
            status: final_status(code)?,
            body,
            headers,
        });
    }
    let session = match answer.session {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err(bad("a Session that is not an object")),
    };
    let delete_headers = match request.delete_headers {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(names)) => names
            .into_iter()
            .map(|n| string(Some(n), "DeleteHeaders entry"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("DeleteHeaders that is not an array")),
    };
    Ok(Reply::Allow {
        session,
        auth_value: string(answer.auth_value, "AuthValue")?,
        set_headers: string_map(request.set_headers, "SetHeaders")?,
        delete_headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_of_400_or_more_refuses_with_the_error_text() {
        let r = parse(
            r#"{"Request":{"ReturnOverrides":{"ResponseCode":401,"ResponseError":"nope",
                "ResponseHeaders":{"X-Why":"no key"}}},"SessionMeta":{}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Reply::Deny {
                status: 401,
                message: "nope".into(),
                headers: vec![("X-Why".into(), "no key".into())]
            }
        );
        let r = parse(r#"{"Request":{"ReturnOverrides":{"ResponseCode":403}}}"#).unwrap();
        assert!(
            matches!(r, Reply::Deny { status: 403, message, .. } if message == "Key not authorised")
        );
    }

    #[test]
    fn a_lower_code_or_override_error_answers_raw() {
        let r = parse(
            r#"{"Request":{"ReturnOverrides":{"ResponseCode":302,"ResponseBody":"go",
                "ResponseHeaders":{"Location":"/login"}}}}"#,
        )
        .unwrap();
        assert!(matches!(r, Reply::Respond { status: 302, ref body, .. } if body == "go"));
        let r = parse(
            r#"{"Request":{"ReturnOverrides":{"ResponseCode":418,"ResponseError":"tea","OverrideError":true}}}"#,
        )
        .unwrap();
        assert!(matches!(r, Reply::Respond { status: 418, .. }));
        let r = parse(r#"{"Response":{"Body":"hi"},"SessionMeta":{}}"#).unwrap();
        assert!(matches!(r, Reply::Respond { status: 200, ref body, .. } if body == "hi"));
    }

    #[test]
    fn no_override_is_a_session_with_header_changes() {
        let r = parse(
            r#"{"Request":{"SetHeaders":{"X-User":"bob"},"DeleteHeaders":["X-Secret"],
                "ReturnOverrides":{"ResponseCode":0}},"Session":{"rate":5},"AuthValue":"k1"}"#,
        )
        .unwrap();
        let Reply::Allow {
            session,
            auth_value,
            set_headers,
            delete_headers,
        } = r
        else {
            panic!("{r:?}")
        };
        assert_eq!(session.unwrap()["rate"], 5);
        assert_eq!(auth_value, "k1");
        assert_eq!(set_headers, vec![("X-User".into(), "bob".into())]);
        assert_eq!(delete_headers, vec!["X-Secret".to_owned()]);
    }

    #[test]
    fn nonsense_is_an_error_not_a_pass() {
        for bad in [
            "undefined",
            "[]",
            r#"{"SessionMeta":{}}"#,
            r#"{"Request":{"ReturnOverrides":{"ResponseCode":"401"}}}"#,
            r#"{"Request":{"ReturnOverrides":{"ResponseCode":100}}}"#,
            r#"{"Request":{"ReturnOverrides":{"ResponseCode":70000}}}"#,
            r#"{"Request":{"SetHeaders":{"X":{}}}}"#,
            r#"{"Request":{},"Session":"x"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}
