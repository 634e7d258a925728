//! The admin secret check (`X-Tyk-Authorization`), in front of every route but `GET /hello` and
//! the console's static shell.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, ApiState};

const HEADER: &str = "x-tyk-authorization";

/// Compares digests so neither the content nor the length of the secret leaks through timing.
fn secret_matches(presented: &[u8], expected: &str) -> bool {
    let a = Sha256::digest(presented);
    let b = Sha256::digest(expected.as_bytes());
    bool::from(a.ct_eq(&b))
}

pub async fn require_admin_secret(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    // Load balancers and probes call /hello without credentials, as with Tyk.
    if req.method() == Method::GET && req.uri().path() == "/hello" {
        return next.run(req).await;
    }
    // A browser cannot send the secret when it navigates: the shell holds no data, and every
    // call it makes is checked here (docs/console.md).
    if super::console::is_shell(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let ok = req
        .headers()
        .get(HEADER)
        .is_some_and(|v| secret_matches(v.as_bytes(), &state.admin_secret));
    if ok {
        next.run(req).await
    } else {
        ApiError::Forbidden.into_response()
    }
}
