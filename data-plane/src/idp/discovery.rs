//! OpenID Connect Discovery 1.0: the `jwks_uri` of an issuer, from
//! `{issuer}/.well-known/openid-configuration`. The document must name the issuer it was fetched
//! for (§4.3), so a provider (or whoever answers for its host) cannot point the gateway at the
//! keys of another issuer. Documents are kept for an hour and served stale while the provider
//! fails; failed attempts are repeated at most once per `jwks_refetch_interval`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Idp, IdpError, What, Why, lock};

/// Issuers whose documents are kept.
pub(super) const ISSUERS: usize = 1000;
const TTL: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub(super) struct Entry {
    good: Option<(Arc<str>, Instant)>,
    attempted: Option<Instant>,
    error: Option<IdpError>,
}

fn same_issuer(a: &str, b: &str) -> bool {
    // A trailing slash is how operators and providers most often differ; nothing else is.
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

impl Idp {
    /// The `jwks_uri` the discovery document of `issuer` names.
    pub async fn discover_jwks_uri(&self, issuer: &str) -> Result<Arc<str>, IdpError> {
        {
            let mut cache = lock(&self.discovery);
            if let Some(entry) = cache.get(issuer) {
                let recent = entry
                    .attempted
                    .is_some_and(|at| at.elapsed() < self.cfg.jwks_refetch_interval);
                match &entry.good {
                    Some((uri, at)) if at.elapsed() < TTL => return Ok(uri.clone()),
                    Some((uri, at)) if recent && at.elapsed() < self.cfg.jwks_max_stale => {
                        return Ok(uri.clone());
                    }
                    None if recent => {
                        return Err(entry
                            .error
                            .clone()
                            .unwrap_or(IdpError::Unavailable(Why::Connect)));
                    }
                    _ => {}
                }
            }
        }
        let flight = self.discovery_flights.run(issuer, || self.discover(issuer));
        let answer = match tokio::time::timeout(self.wait_bound(), flight).await {
            Ok((answer, led)) => {
                if !led {
                    self.stats.bump(&self.stats.shared_calls);
                }
                answer
            }
            Err(_) => Err(IdpError::Unavailable(Why::Timeout)),
        };
        match answer {
            Ok(uri) => Ok(uri),
            // A mismatch is an answer, not an outage: the old document is not served over it.
            Err(IdpError::IssuerMismatch) => Err(IdpError::IssuerMismatch),
            Err(e) => {
                let mut cache = lock(&self.discovery);
                match cache.get(issuer).and_then(|e| e.good.clone()) {
                    Some((uri, at)) if at.elapsed() < self.cfg.jwks_max_stale => Ok(uri),
                    _ => Err(e),
                }
            }
        }
    }

    async fn discover(&self, issuer: &str) -> Result<Arc<str>, IdpError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let answer = match self.get(&url).await {
            Ok(body) => parse(issuer, &body),
            Err(e) => Err(e),
        };
        if answer == Err(IdpError::IssuerMismatch) {
            self.stats.bump(&self.stats.discovery_mismatches);
        }
        let mut cache = lock(&self.discovery);
        if !cache.contains_key(issuer) {
            cache.insert(issuer.to_owned(), Entry::default());
        }
        if let Some(entry) = cache.get_mut(issuer) {
            let now = Instant::now();
            entry.attempted = Some(now);
            match &answer {
                Ok(uri) => {
                    entry.good = Some((uri.clone(), now));
                    entry.error = None;
                }
                Err(e) => {
                    if *e == IdpError::IssuerMismatch {
                        entry.good = None;
                    }
                    entry.error = Some(e.clone());
                }
            }
        }
        answer
    }
}

fn parse(issuer: &str, body: &[u8]) -> Result<Arc<str>, IdpError> {
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(body) else {
        return Err(IdpError::BadResponse(What::NotJson));
    };
    let Some(Value::String(named)) = doc.get("issuer") else {
        return Err(IdpError::BadResponse(What::Field("issuer")));
    };
    if !same_issuer(named, issuer) {
        return Err(IdpError::IssuerMismatch);
    }
    let Some(Value::String(uri)) = doc.get("jwks_uri") else {
        return Err(IdpError::BadResponse(What::Field("jwks_uri")));
    };
    super::fetch::check_url(uri).map_err(|_| IdpError::BadResponse(What::Field("jwks_uri")))?;
    Ok(Arc::from(uri.as_str()))
}
