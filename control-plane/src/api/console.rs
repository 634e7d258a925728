//! `/console`: the fleet console's static shell (docs/console.md). The page, its script and its
//! style are compiled in; the data they show comes from the authenticated management API with
//! the secret the operator types in, so these three routes are served without it.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");
const ICON: &str = include_str!("console/favicon.svg");

/// Paths of the shell: the only ones the admin secret check lets through besides `/hello`.
const PATHS: &[&str] = &[
    "/console",
    "/console/",
    "/console/console.js",
    "/console/console.css",
    "/console/favicon.svg",
];

/// Nothing but this origin's own files may load, no script that is not `console.js` may run,
/// no form may submit anywhere (a secret in a form must never become a URL), and no other site
/// may frame the page (docs/console.md).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// True for a request the shell answers, which needs no admin secret.
pub fn is_shell(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::GET && PATHS.contains(&path)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 6] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // An upgraded control plane serves its own script at once, not a cached older one.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// Without an icon of its own the browser asks for `/favicon.ico`, which needs the secret.
pub async fn icon() -> Response {
    asset("image/svg+xml", ICON)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_page_loads_nothing_but_its_own_script_and_style() {
        assert!(INDEX.contains(r#"<script src="/console/console.js""#));
        assert!(INDEX.contains(r#"href="/console/console.css""#));
        assert!(INDEX.contains(r#"href="/console/favicon.svg""#));
        // One script element, and it has a src: an inline one would be refused by the policy.
        assert_eq!(INDEX.matches("<script").count(), 1);
        assert!(
            !INDEX.contains(" style="),
            "inline style is refused by the policy"
        );
        // The SVG namespace is a name, not an address the browser loads.
        let script = SCRIPT.replace("\"http://www.w3.org/2000/svg\"", "");
        let icon = ICON.replace("\"http://www.w3.org/2000/svg\"", "");
        for text in [INDEX, &script, STYLE, &icon] {
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
    }

    #[test]
    fn the_script_never_parses_data_as_html() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "console.js uses {sink}");
        }
    }

    #[test]
    fn only_get_of_the_shell_skips_the_admin_secret() {
        use axum::http::Method;
        assert!(is_shell(&Method::GET, "/console"));
        assert!(is_shell(&Method::GET, "/console/console.js"));
        assert!(!is_shell(&Method::POST, "/console"));
        assert!(!is_shell(&Method::GET, "/console/other"));
        assert!(!is_shell(&Method::GET, "/console/../tyk/keys"));
    }
}
