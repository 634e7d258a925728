//! The routing table: APIs by host, then by longest listen path. Built aside from validated
//! definitions and swapped in whole, so a request sees one consistent configuration.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use portcullis_proto::model::oauth::OAuthClient;
use portcullis_proto::model::{ApiDefinition, ValidationError};

use crate::auth::AuthChain;
use crate::policies::PolicyIndex;

/// Everything the proxy needs to forward to one API, parsed once per configuration change.
#[derive(Debug)]
pub struct Route {
    pub api_id: String,
    pub domain: String,
    pub listen_path: String,
    pub strip_listen_path: bool,
    pub preserve_host_header: bool,
    pub keyless: bool,
    pub active: bool,
    /// The upstream (`target_url`, or the first of `target_list` when balanced).
    pub target: Target,
    /// Round robin over `target_list` (`proxy.enable_load_balancing`); `None`: one target.
    pub balancer: Option<Box<crate::proxy::balance::Balancer>>,
    /// `proxy.timeout` when set; otherwise the gateway default applies.
    pub timeout: Option<Duration>,
    /// The authentication chain (no methods for keyless APIs; static mTLS may still apply).
    pub auth: AuthChain,
    pub strip_auth_data: bool,
    /// Set when the definition enables a method this build lacks: every request is refused.
    pub unserved: Option<crate::auth::Unserved>,
    /// This API's traffic counters, attached on first use (see `request_metrics`).
    pub counters: std::sync::OnceLock<Arc<crate::request_metrics::ApiCounters>>,
    /// TLS settings for an `https` upstream; `None` for plain HTTP.
    pub upstream_tls: Option<Arc<crate::proxy::upstream_tls::ApiTls>>,
    /// Split tokens: (the login path, the provider's token endpoint); docs/jwt.md.
    pub split_login: Option<(String, String)>,
    /// The OAuth 2.0 provider's endpoints under the listen path (`use_oauth2`); docs/oauth.md.
    pub oauth: Option<Box<crate::oauth::RouteOAuth>>,
    /// Credentials the gateway adds for the upstream (docs/upstream-auth.md).
    pub upstream_auth: Option<Arc<crate::upstream_auth::UpstreamAuth>>,
}

/// One upstream of an API.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http` for `h2c` targets too: h2c is cleartext.
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix, without a trailing slash ("" for the root).
    pub base: String,
    /// HTTP/2 without TLS, by prior knowledge (`h2c://`, Tyk's way to name gRPC upstreams).
    pub h2c: bool,
    /// `authority` as the Host header sent to it, made once with the route.
    pub host: http::HeaderValue,
}

impl Target {
    fn parse(field: &'static str, url: &str) -> Result<Self, ValidationError> {
        let target: url::Url = url
            .parse()
            .map_err(|e| ValidationError::new(field, format!("not an absolute URL: {e}")))?;
        let (scheme, h2c) = match target.scheme() {
            "http" => (Scheme::HTTP, false),
            "https" => (Scheme::HTTPS, false),
            "h2c" => (Scheme::HTTP, true),
            other => {
                return Err(ValidationError::new(
                    field,
                    format!("unsupported scheme {other}"),
                ));
            }
        };
        let host = target
            .host_str()
            .ok_or_else(|| ValidationError::new(field, "has no host"))?;
        // `url` knows no default port for h2c.
        let port = target.port().or(h2c.then_some(80));
        let authority = match port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let authority: Authority = authority
            .parse()
            .map_err(|_| ValidationError::new(field, "host is not a valid authority"))?;
        let host = http::HeaderValue::from_str(authority.as_str())
            .map_err(|_| ValidationError::new(field, "host is not a valid authority"))?;
        Ok(Self {
            scheme,
            authority,
            base: target.path().trim_end_matches('/').to_owned(),
            h2c,
            host,
        })
    }
}

impl Route {
    pub fn from_definition(def: &ApiDefinition) -> Result<Self, ValidationError> {
        let spec = def.spec();
        let p = &spec.proxy;
        let balanced = p.enable_load_balancing && !p.target_list.is_empty();
        let balancer = if balanced {
            let targets = p
                .target_list
                .iter()
                .map(|t| Target::parse("proxy.target_list", t))
                .collect::<Result<Vec<_>, _>>()?;
            Some(Box::new(crate::proxy::balance::Balancer::new(targets)))
        } else {
            None
        };
        let target = match &balancer {
            Some(b) => b.first().clone(),
            None => Target::parse("proxy.target_url", &p.target_url)?,
        };
        // Validation bounds the timeout; clamped anyway so no value can panic here.
        let timeout = (spec.proxy.timeout > 0.0).then(|| {
            Duration::try_from_secs_f64(spec.proxy.timeout)
                .unwrap_or(Duration::MAX)
                .min(Duration::from_secs_f64(
                    portcullis_proto::model::bounds::MAX_TIMEOUT_SECS,
                ))
        });
        let unserved = crate::auth::Unserved::of(def);
        // A balanced API's TLS settings follow its first https target (docs/gateway.md).
        let tls_target = balancer
            .as_ref()
            .and_then(|b| b.targets().find(|t| t.scheme == Scheme::HTTPS))
            .unwrap_or(&target);
        let upstream_tls =
            crate::proxy::upstream_tls::ApiTls::of(spec, &tls_target.scheme, &tls_target.authority);
        // Requests are matched in normal form (crate::path), so the listen path is too: a
        // `/api//v1/` or `/%7Euser/` would otherwise match nothing and let its traffic
        // fall through to a shorter, perhaps keyless, listen path.
        let listen_path = crate::path::normalize(&spec.proxy.listen_path)
            .map_or_else(|_| spec.proxy.listen_path.clone(), |p| p.into_owned());
        let upstream_auth = crate::upstream_auth::UpstreamAuth::of(def, target.authority.as_str())?;
        Ok(Self {
            api_id: spec.api_id.clone(),
            domain: spec.domain.to_ascii_lowercase(),
            oauth: crate::oauth::RouteOAuth::of(def, &listen_path),
            listen_path,
            strip_listen_path: spec.proxy.strip_listen_path,
            preserve_host_header: spec.proxy.preserve_host_header,
            keyless: spec.use_keyless && unserved.is_none(),
            active: spec.active,
            target,
            balancer,
            timeout,
            auth: AuthChain::build(def)?,
            upstream_auth,
            strip_auth_data: spec.strip_auth_data,
            unserved,
            counters: std::sync::OnceLock::new(),
            upstream_tls,
            split_login: None,
        }
        .with_split_login(def))
    }

    fn with_split_login(mut self, def: &ApiDefinition) -> Self {
        let split = &def.idp().split_token;
        if split.enabled {
            let path = format!("{}{}", self.listen_path.trim_end_matches('/'), split.path());
            self.split_login = Some((path, split.token_url.clone()));
        }
        self
    }

    /// True when `path` is under this route's listen path ("/a/" also takes "/a").
    fn matches(&self, path: &str) -> bool {
        let lp = self.listen_path.as_str();
        if path.starts_with(lp) {
            // "/api" must not take "/apiary": the next character must end a segment.
            return lp.ends_with('/')
                || path.len() == lp.len()
                || matches!(path.as_bytes()[lp.len()], b'/' | b'?');
        }
        lp.len() > 1 && lp.ends_with('/') && path == &lp[..lp.len() - 1]
    }
}

/// Routes grouped by host; each group sorted by listen path length, longest first.
#[derive(Debug, Default)]
pub struct RoutingTable {
    by_domain: HashMap<String, Vec<Arc<Route>>>,
    any_domain: Vec<Arc<Route>>,
    len: usize,
    /// Policies of the same configuration, applied to sessions on every request.
    pub policies: Arc<PolicyIndex>,
    /// Certificates of the same configuration (server, client allow-lists, upstream).
    pub certs: Arc<crate::certs::CertStore>,
    /// The TLS listener's ServerConfigs by server name, built from the same configuration.
    pub tls: Arc<crate::tls::TlsHosts>,
    /// Upstream TLS clients of this table's routes, resolved on first use.
    pub upstream_tls: crate::proxy::upstream_tls::TableTls,
    /// OAuth clients by `client_id` (their secrets are not held): the authorize endpoint's
    /// checks, and a bearer token whose client is gone is refused.
    pub oauth_clients: HashMap<String, Arc<OAuthClient>>,
}

impl RoutingTable {
    pub fn new<'a>(routes: impl IntoIterator<Item = &'a Arc<Route>>) -> Self {
        let mut table = Self::default();
        for route in routes {
            if !route.active {
                continue;
            }
            table.len += 1;
            if route.domain.is_empty() {
                table.any_domain.push(route.clone());
            } else {
                table
                    .by_domain
                    .entry(route.domain.clone())
                    .or_default()
                    .push(route.clone());
            }
        }
        let longest_first = |v: &mut Vec<Arc<Route>>| {
            v.sort_by(|a, b| {
                b.listen_path
                    .len()
                    .cmp(&a.listen_path.len())
                    .then_with(|| a.listen_path.cmp(&b.listen_path))
            })
        };
        longest_first(&mut table.any_domain);
        table.by_domain.values_mut().for_each(longest_first);
        table
    }

    pub fn with_certs(mut self, certs: crate::certs::CertStore) -> Self {
        self.certs = Arc::new(certs);
        self
    }

    pub fn with_tls(mut self, tls: crate::tls::TlsHosts) -> Self {
        self.tls = Arc::new(tls);
        self
    }

    pub fn with_oauth_clients(mut self, clients: HashMap<String, Arc<OAuthClient>>) -> Self {
        self.oauth_clients = clients;
        self
    }

    pub fn with_policies(mut self, policies: PolicyIndex) -> Self {
        self.policies = Arc::new(policies);
        self
    }

    /// Every route, host-bound ones first.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.by_domain.values().flatten().chain(&self.any_domain)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The API for a request: APIs bound to the request's host first, then host-less ones.
    pub fn lookup(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        if let Some(host) = host.filter(|_| !self.by_domain.is_empty()) {
            let host = strip_port(host);
            let found = if host.bytes().any(|b| b.is_ascii_uppercase()) {
                self.by_domain.get(&host.to_ascii_lowercase())
            } else {
                self.by_domain.get(host)
            };
            if let Some(route) = found.and_then(|routes| routes.iter().find(|r| r.matches(path))) {
                return Some(route);
            }
        }
        self.any_domain.iter().find(|r| r.matches(path))
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn route(id: &str, domain: &str, listen_path: &str) -> Arc<Route> {
        let def = ApiDefinition::from_value(json!({
            "api_id": id, "domain": domain, "use_keyless": true,
            "proxy": {"listen_path": listen_path, "target_url": "http://127.0.0.1:1/base/"}
        }))
        .unwrap();
        Arc::new(Route::from_definition(&def).unwrap())
    }

    #[test]
    fn longest_listen_path_wins_and_segments_are_respected() {
        let routes = [
            route("root", "", "/"),
            route("a", "", "/api/"),
            route("ab", "", "/api/b/"),
            route("x", "", "/x"),
        ];
        let t = RoutingTable::new(routes.iter());
        let id = |p: &str| t.lookup(None, p).map(|r| r.api_id.clone());
        assert_eq!(id("/api/b/c").as_deref(), Some("ab"));
        assert_eq!(id("/api/c").as_deref(), Some("a"));
        assert_eq!(id("/api").as_deref(), Some("a"));
        assert_eq!(id("/x/y").as_deref(), Some("x"));
        assert_eq!(id("/xy").as_deref(), Some("root"), "/x must not take /xy");
        assert_eq!(id("/other").as_deref(), Some("root"));
    }

    #[test]
    fn host_bound_apis_come_first_and_ports_or_case_do_not_matter() {
        let routes = [
            route("any", "", "/p/"),
            route("eu", "eu.example.com", "/p/"),
        ];
        let t = RoutingTable::new(routes.iter());
        assert_eq!(
            t.lookup(Some("EU.example.com:8080"), "/p/1")
                .unwrap()
                .api_id,
            "eu"
        );
        assert_eq!(
            t.lookup(Some("us.example.com"), "/p/1").unwrap().api_id,
            "any"
        );
        assert_eq!(t.lookup(None, "/p/1").unwrap().api_id, "any");
        assert!(t.lookup(None, "/q").is_none());
        assert_eq!(route("r", "", "/").target.base, "/base");
    }

    #[test]
    fn listen_paths_are_matched_in_normal_form() {
        let routes = [route("open", "", "/"), route("tilde", "", "/%7euser//v1/")];
        let t = RoutingTable::new(routes.iter());
        let path = crate::path::normalize("/%7Euser//v1/x").unwrap();
        assert_eq!(t.lookup(None, &path).unwrap().api_id, "tilde");
    }
}
