//! What the tests of token methods (JWT, external OAuth, OpenID Connect) share: a control
//! plane, an echo upstream and one gateway, API definitions and policies in Tyk's shape, and a
//! request helper that returns the status and the JSON body.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Cp, Dp, EchoUpstream, TestDb, keyless_api};

pub struct Stack {
    pub db: TestDb,
    pub cp: Cp,
    pub echo: EchoUpstream,
    pub dp: Dp,
    /// Changes committed so far (each API or policy written is one revision).
    pub revisions: i64,
}

impl Stack {
    /// A gateway without Redis (enough unless a test counts rate limits).
    pub async fn start() -> Self {
        let db = TestDb::new().await;
        let cp = Cp::start(&db.url).await;
        let echo = EchoUpstream::start().await;
        let dp = Dp::joined(&cp).await;
        Self {
            db,
            cp,
            echo,
            dp,
            revisions: 0,
        }
    }

    /// A gateway with its own region in the test Redis (rate limits and quotas counted).
    pub async fn regional() -> Self {
        let db = TestDb::new().await;
        let cp = Cp::start(&db.url).await;
        let echo = EchoUpstream::start().await;
        let dp = Dp::regional(&cp, "eu").await;
        Self {
            db,
            cp,
            echo,
            dp,
            revisions: 0,
        }
    }

    /// Creates the APIs, then the policies, and waits until the gateway serves them.
    pub async fn create(&mut self, apis: &[Value], policies: &[Value]) {
        for api in apis {
            self.cp.create_api(api).await;
            self.revisions += 1;
        }
        for p in policies {
            let (status, body) = self.cp.call(Method::POST, "/tyk/policies", Some(p)).await;
            assert_eq!(status, StatusCode::OK, "create policy: {body}");
            self.revisions += 1;
        }
        self.dp.wait_for_revision(self.revisions).await;
    }

    pub fn target(&self) -> String {
        self.echo.url()
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        get(&self.dp, path, headers).await
    }
}

/// A GET through the gateway: status and body (JSON when it parses, else a string).
pub async fn get(dp: &Dp, path: &str, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().get(dp.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("gateway reachable");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Asserts a gateway error: its status and its body `{"error": msg}`.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: u16, msg: &str) {
    assert_eq!(
        (got.0.as_u16(), got.1["error"].as_str()),
        (status, Some(msg)),
        "whole answer: {} {}",
        got.0,
        got.1
    );
}

/// Asserts the request reached the echo upstream (status 200 and the echo's body).
#[track_caller]
pub fn assert_upstream(got: &(StatusCode, Value)) -> crate::Received {
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
    serde_json::from_value(got.1.clone())
        .unwrap_or_else(|e| panic!("not the echo's body ({e}): {}", got.1))
}

/// An API at `/{id}/` proxied to `target`, not keyless, with `fields` merged in.
pub fn api(id: &str, target: &str, fields: Value) -> Value {
    let mut api = keyless_api(id, &format!("/{id}/"), target);
    api["use_keyless"] = json!(false);
    if let (Some(api), Some(fields)) = (api.as_object_mut(), fields.as_object()) {
        for (k, v) in fields {
            api.insert(k.clone(), v.clone());
        }
    }
    api
}

/// `access_rights` granting every version of each of `apis`.
pub fn access_rights(apis: &[&str]) -> serde_json::Map<String, Value> {
    apis.iter()
        .map(|a| {
            (
                (*a).to_owned(),
                json!({"api_id": a, "versions": ["Default"]}),
            )
        })
        .collect()
}

/// A policy granting `apis` with a rate of `rate` per `per` seconds (0: unlimited).
pub fn policy(id: &str, apis: &[&str], rate: u64, per: u64) -> Value {
    let rights = access_rights(apis);
    let mut p = json!({"id": id, "name": id, "quota_max": -1, "access_rights": rights});
    if rate > 0 {
        p["rate"] = json!(rate);
        p["per"] = json!(per);
    }
    p
}

/// `Bearer <token>`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
