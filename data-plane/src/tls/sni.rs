//! Which certificate a ClientHello gets, and which ServerConfig (client-certificate policy)
//! a server name gets; built once per routing table (docs/certificates.md, "HTTPS at the edge").

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use portcullis_proto::model::ApiDefinition;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::client_verify::{self, ClientAuth};
use crate::certs::{CertStore, StoreCert, normal_name};

/// What the handshake needs to know of one API definition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiTls {
    pub api_id: String,
    /// Lower-case host without a port; empty: served on every server name.
    pub domain: String,
    pub active: bool,
    /// Store ids of the server certificates for this API's domain.
    pub certificates: Vec<String>,
    /// Store ids of allowed client leaves or of the CAs that issue them.
    pub client_certificates: Vec<String>,
    /// Static mTLS (`use_mutual_tls_auth`).
    pub static_mtls: bool,
    /// Dynamic mTLS (`auth.use_certificate`): the key is found from the client certificate.
    pub dynamic_mtls: bool,
}

impl ApiTls {
    pub fn of(def: &ApiDefinition) -> Self {
        let s = def.spec();
        let domain = normal_name(&s.domain);
        // A domain with a port routes on the Host without it; SNI never carries a port.
        let domain = match domain.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h.to_owned(),
            _ => domain,
        };
        Self {
            api_id: s.api_id.clone(),
            domain,
            active: s.active,
            certificates: s.certificates.clone(),
            client_certificates: s.client_certificates.clone(),
            static_mtls: s.use_mutual_tls_auth,
            dynamic_mtls: s.auth.use_certificate && !s.use_keyless,
        }
    }
}

/// How a certificate name matches a server name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NameMatch {
    Exact,
    /// `*.example.com` for `a.example.com`: the star stands for exactly one label.
    Wildcard,
}

/// Matches a certificate DNS name (lower case) against a server name (lower case). A wildcard
/// is only a whole leftmost label, over at least two more labels (no `*.com`), as RFC 6125
/// §6.4.3 and the CA/Browser Forum allow.
pub fn name_matches(pattern: &str, host: &str) -> Option<NameMatch> {
    if let Some(parent) = pattern.strip_prefix("*.") {
        if !parent.contains('.') || parent.contains('*') {
            return None;
        }
        let (label, rest) = host.split_once('.')?;
        return (!label.is_empty() && rest == parent).then_some(NameMatch::Wildcard);
    }
    (!pattern.is_empty() && pattern == host).then_some(NameMatch::Exact)
}

/// A server certificate with the names it is chosen by.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub cert: Arc<StoreCert>,
    /// `certs::dns_names` of the leaf.
    pub names: Vec<String>,
}

impl Candidate {
    pub fn new(cert: Arc<StoreCert>) -> Self {
        let names = cert
            .chain
            .first()
            .map(|d| crate::certs::dns_names(d))
            .unwrap_or_default();
        Self { cert, names }
    }
}

/// The best certificate for `sni` among `candidates` (in preference order): an exact name
/// before a wildcard, never an expired one. Without SNI, the first certificate still valid.
pub fn choose<'a>(
    candidates: &'a [Candidate],
    sni: Option<&str>,
    now_unix: i64,
) -> Option<&'a Arc<StoreCert>> {
    let mut live = candidates.iter().filter(|c| !c.cert.is_expired(now_unix));
    let Some(sni) = sni else {
        return live.next().map(|c| &c.cert);
    };
    live.filter_map(|c| {
        c.names
            .iter()
            .filter_map(|n| name_matches(n, sni))
            .min()
            .map(|m| (m, &c.cert))
    })
    .min_by_key(|(m, _)| *m)
    .map(|(_, c)| c)
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Picks the certificate while the handshake runs, so expiry is checked at that moment and
/// not only when the configuration was applied.
#[derive(Debug)]
struct SniResolver {
    candidates: Vec<Candidate>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name().map(normal_name);
        // None makes rustls end the handshake with an access_denied alert.
        choose(&self.candidates, sni.as_deref(), now_unix())?
            .certified_key
            .clone()
    }
}

/// The TLS side of one routing table: a ServerConfig per server name that an API binds to,
/// one for every other name (and for clients without SNI).
#[derive(Default)]
pub struct TlsHosts {
    by_host: HashMap<String, Arc<ServerConfig>>,
    any: Option<Arc<ServerConfig>>,
    /// For clients without SNI: the same certificates as `any`, but a certificate is only
    /// requested (never required), since such a client's Host may name any API.
    no_sni: Option<Arc<ServerConfig>>,
}

impl std::fmt::Debug for TlsHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsHosts")
            .field("hosts", &self.by_host.len())
            .field("any", &self.any.is_some())
            .field("no_sni", &self.no_sni.is_some())
            .finish()
    }
}

/// One ServerConfig per distinct (certificates, client-certificate policy): many domains
/// served by the same wildcard certificate share one.
type ConfigKey = (Vec<String>, ClientAuth);

impl TlsHosts {
    /// Builds the configs for the active APIs among `apis`, with certificates from `store`.
    pub fn build<'a>(apis: impl IntoIterator<Item = &'a ApiTls>, store: &CertStore) -> Self {
        let mut any_domain: Vec<&ApiTls> = Vec::new();
        let mut by_domain: BTreeMap<&str, Vec<&ApiTls>> = BTreeMap::new();
        let mut sorted: Vec<&ApiTls> = apis.into_iter().filter(|a| a.active).collect();
        // The order of candidates is the order of preference: stable across rebuilds.
        sorted.sort_by(|a, b| a.api_id.cmp(&b.api_id));
        for api in sorted {
            if api.domain.is_empty() {
                any_domain.push(api);
            } else {
                by_domain.entry(api.domain.as_str()).or_default().push(api);
            }
        }
        let mut cache: HashMap<ConfigKey, Option<Arc<ServerConfig>>> = HashMap::new();
        let any_wants_certs = any_domain
            .iter()
            .chain(by_domain.values().flatten())
            .any(|a| a.static_mtls || a.dynamic_mtls);
        let mut entry = |apis: &[&ApiTls], auth: ClientAuth| -> Option<Arc<ServerConfig>> {
            let mut ids: Vec<String> = Vec::new();
            let mut candidates = Vec::new();
            for id in apis.iter().flat_map(|a| &a.certificates) {
                if ids.contains(id) {
                    continue;
                }
                if let Some(c) = store.get(id).filter(|c| c.certified_key.is_some()) {
                    ids.push(id.clone());
                    candidates.push(c.clone());
                }
            }
            if candidates.is_empty() {
                return None;
            }
            cache
                .entry((ids, auth.clone()))
                .or_insert_with(|| {
                    // Names are parsed once per distinct config, not once per domain.
                    let candidates = candidates.into_iter().map(Candidate::new).collect();
                    let resolver = Arc::new(SniResolver { candidates });
                    match server_config(resolver, &auth, store) {
                        Ok(c) => Some(Arc::new(c)),
                        // Refused rather than left to another name's config, whose
                        // client-certificate policy may be laxer.
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot build a TLS configuration; those server names are refused");
                            refusing_config()
                        }
                    }
                })
                .clone()
        };
        let any = entry(&any_domain, ClientAuth::for_apis(&any_domain));
        let no_sni = entry(
            &any_domain,
            if any_wants_certs {
                ClientAuth::Request
            } else {
                ClientAuth::None
            },
        );
        let mut by_host = HashMap::new();
        for (domain, mut apis) in by_domain {
            // A request for the domain that no domain-bound listen path takes falls through to
            // the domain-less APIs (`RoutingTable::lookup`), so they are served here too.
            apis.extend(any_domain.iter().copied());
            let auth = ClientAuth::for_apis(&apis);
            if let Some(config) = entry(&apis, auth) {
                by_host.insert(domain.to_owned(), config);
            }
        }
        Self {
            by_host,
            any,
            no_sni,
        }
    }

    /// The config for a server name (lower case): its domain's, else the domain-less APIs'.
    /// `None`: no API has a certificate for it.
    pub fn config_for(&self, sni: Option<&str>) -> Option<&Arc<ServerConfig>> {
        match sni {
            Some(h) => self.by_host.get(h).or(self.any.as_ref()),
            None => self.no_sni.as_ref(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty() && self.any.is_none()
    }
}

/// The ring provider with TLS 1.3 and 1.2, as every edge ServerConfig uses.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::LazyLock<Arc<rustls::crypto::CryptoProvider>> =
        std::sync::LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    PROVIDER.clone()
}

pub(crate) const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn server_config(
    resolver: Arc<SniResolver>,
    auth: &ClientAuth,
    store: &CertStore,
) -> Result<ServerConfig, rustls::Error> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_verify::verifier(auth, store)? {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Ends a handshake for a server name no certificate serves: its resolver finds nothing, so
/// rustls answers the ClientHello with an access_denied alert.
pub(crate) fn refusing_config() -> Option<Arc<ServerConfig>> {
    static REFUSE: std::sync::LazyLock<Option<Arc<ServerConfig>>> =
        std::sync::LazyLock::new(|| {
            let resolver = Arc::new(SniResolver {
                candidates: Vec::new(),
            });
            server_config(resolver, &ClientAuth::None, &CertStore::default())
                .ok()
                .map(Arc::new)
        });
    REFUSE.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_stands_for_exactly_one_label() {
        let m = |p, h| name_matches(p, h);
        assert_eq!(
            m("*.example.com", "a.example.com"),
            Some(NameMatch::Wildcard)
        );
        assert_eq!(m("*.example.com", "example.com"), None);
        assert_eq!(m("*.example.com", "a.b.example.com"), None);
        assert_eq!(m("*.example.com", ".example.com"), None);
        assert_eq!(m("*.com", "example.com"), None, "no wildcard over a TLD");
        assert_eq!(m("a.*.com", "a.b.com"), None);
        assert_eq!(m("*.*.example.com", "a.b.example.com"), None);
        assert_eq!(
            m("api.example.com", "api.example.com"),
            Some(NameMatch::Exact)
        );
        assert_eq!(m("api.example.com", "www.example.com"), None);
        assert_eq!(m("", ""), None);
    }

    fn cert(id: &str, names: &[&str], not_after: i64) -> Candidate {
        Candidate {
            cert: Arc::new(StoreCert {
                id: id.into(),
                chain: Vec::new(),
                fingerprint: [0; 32],
                spki_sha256: [0; 32],
                not_after,
                is_ca: false,
                certified_key: None,
            }),
            names: names.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    #[test]
    fn the_exact_name_wins_over_a_wildcard_and_expired_certificates_are_never_chosen() {
        let now = 1_000;
        let certs = [
            cert("wild", &["*.example.com"], 2_000),
            cert("exact-expired", &["api.example.com"], 999),
            cert("exact", &["other.org", "api.example.com"], 2_000),
        ];
        let id = |sni: Option<&str>| choose(&certs, sni, now).map(|c| c.id.as_str());
        assert_eq!(id(Some("api.example.com")), Some("exact"));
        assert_eq!(id(Some("www.example.com")), Some("wild"));
        assert_eq!(id(Some("a.b.example.com")), None);
        assert_eq!(id(Some("other.org")), Some("exact"));
        assert_eq!(id(None), Some("wild"), "no SNI: the first one still valid");
        let expired = [cert("old", &["api.example.com"], 10)];
        assert!(choose(&expired, Some("api.example.com"), now).is_none());
        assert!(choose(&expired, None, now).is_none());
    }
}
