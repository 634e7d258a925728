//! What the traffic tests (WebSockets, gRPC, streaming, load balancing) share: a stack whose
//! gateway has chosen options, and auth-token keys for APIs.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::idp_stack::Stack;
use crate::{Cp, Dp, DpOptions, EchoUpstream, TestDb};

/// A stack (no Redis) whose gateway runs with `opts` (joined with a fresh token).
pub async fn stack_with(opts: DpOptions) -> Stack {
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let echo = EchoUpstream::start().await;
    let token = Some(cp.token("default").await);
    let dp = Dp::start(&cp, DpOptions { token, ..opts })
        .await
        .expect("gateway starts");
    Stack {
        db,
        cp,
        echo,
        dp,
        revisions: 0,
    }
}

/// A new auth-token key with access to `apis`.
pub async fn key_for(cp: &Cp, apis: &[&str]) -> String {
    let rights: serde_json::Map<String, Value> = apis
        .iter()
        .map(|a| {
            (
                (*a).to_owned(),
                json!({"api_id": a, "versions": ["Default"]}),
            )
        })
        .collect();
    let (status, body) = cp
        .call(
            Method::POST,
            "/tyk/keys",
            Some(&json!({"access_rights": rights})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "create key: {body}");
    body["key"].as_str().expect("key in answer").to_owned()
}
