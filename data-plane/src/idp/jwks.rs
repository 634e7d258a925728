//! JWK sets by URL. A set is used for `jwks_ttl`; a token naming a `kid` the set lacks
//! refetches it at once (a provider rotated its keys), but at most once per
//! `jwks_refetch_interval`, so tokens with random `kid`s cannot turn the gateway into a load
//! generator against the provider. A fetch that fails, or a document that does not parse, never
//! replaces the last good set: it is served stale (up to `jwks_max_stale`) while the provider
//! recovers, and failed attempts are not repeated within the interval either.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use super::{Idp, IdpError, What, Why, lock};
use crate::jose::KeySet;

/// URLs whose sets are kept (they come from API definitions; an LRU all the same).
pub(super) const URLS: usize = 1000;
/// API ids remembered per URL for flushes.
const APIS_PER_URL: usize = 1024;

struct Good {
    set: Arc<KeySet>,
    at: Instant,
}

#[derive(Default)]
pub(super) struct Entry {
    good: Option<Good>,
    /// When the last fetch (successful or not) ended.
    attempted: Option<Instant>,
    error: Option<IdpError>,
    apis: HashSet<String>,
    /// Flushed since the last fetch: fetched again before use, the old set kept as fallback.
    flushed: bool,
}

pub(super) enum Plan {
    Serve(Arc<KeySet>),
    Fail(IdpError),
    Fetch,
}

impl Idp {
    /// The JWK set at `url` for a token of `api_id` naming `kid`. The caller looks the key up;
    /// a set lacking `kid` is returned when it cannot be refetched yet.
    pub async fn key_set(
        &self,
        api_id: &str,
        url: &str,
        kid: Option<&str>,
    ) -> Result<Arc<KeySet>, IdpError> {
        match self.plan(api_id, url, kid) {
            Plan::Serve(set) => return Ok(set),
            Plan::Fail(e) => return Err(e),
            Plan::Fetch => {}
        }
        let flight = self.jwks_flights.run(url, || self.fetch_set(url));
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
            Ok(set) => Ok(set),
            Err(e) => self.stale(url).ok_or(e),
        }
    }

    pub(super) fn plan(&self, api_id: &str, url: &str, kid: Option<&str>) -> Plan {
        let mut cache = lock(&self.jwks);
        if !cache.contains_key(url) {
            cache.insert(url.to_owned(), Entry::default());
        }
        let Some(entry) = cache.get_mut(url) else {
            return Plan::Fetch;
        };
        if entry.apis.len() < APIS_PER_URL && !entry.apis.contains(api_id) {
            entry.apis.insert(api_id.to_owned());
        }
        let recent = entry
            .attempted
            .is_some_and(|at| at.elapsed() < self.cfg.jwks_refetch_interval);
        let flushed = entry.flushed;
        match &entry.good {
            Some(good) if !flushed && good.at.elapsed() < self.cfg.jwks_ttl => match kid {
                Some(kid) if !good.set.has_kid(kid) => {
                    if recent {
                        self.stats.bump(&self.stats.jwks_refetches_refused);
                        Plan::Serve(good.set.clone())
                    } else {
                        self.stats.bump(&self.stats.jwks_kid_refetches);
                        Plan::Fetch
                    }
                }
                _ => Plan::Serve(good.set.clone()),
            },
            _ if !recent => Plan::Fetch,
            Some(good) if good.at.elapsed() < self.cfg.jwks_max_stale => {
                self.stats.bump(&self.stats.jwks_stale_served);
                Plan::Serve(good.set.clone())
            }
            _ => Plan::Fail(
                entry
                    .error
                    .clone()
                    .unwrap_or(IdpError::Unavailable(Why::Connect)),
            ),
        }
    }

    async fn fetch_set(&self, url: &str) -> Result<Arc<KeySet>, IdpError> {
        let parsed = self
            .get(url)
            .await
            .and_then(|body| match KeySet::parse(&body) {
                Ok(set) if !set.is_empty() => Ok(Arc::new(set)),
                Ok(_) => Err(IdpError::BadResponse(What::NoKeys)),
                Err(_) => Err(IdpError::BadResponse(What::KeySet)),
            });
        let mut cache = lock(&self.jwks);
        if !cache.contains_key(url) {
            cache.insert(url.to_owned(), Entry::default());
        }
        let Some(entry) = cache.get_mut(url) else {
            return parsed;
        };
        let now = Instant::now();
        entry.attempted = Some(now);
        match &parsed {
            Ok(set) => {
                entry.good = Some(Good {
                    set: set.clone(),
                    at: now,
                });
                entry.error = None;
                entry.flushed = false;
            }
            Err(e) => {
                if matches!(e, IdpError::BadResponse(What::KeySet | What::NoKeys)) {
                    self.stats.bump(&self.stats.jwks_parse_failures);
                    if self.stats.may_log() {
                        tracing::warn!(
                            host = super::fetch::check_url(url)
                                .map(|(_, h)| h)
                                .unwrap_or_default(),
                            "a fetched JWK set did not parse; keeping the last good one"
                        );
                    }
                }
                entry.error = Some(e.clone());
            }
        }
        parsed
    }

    /// JWK sets held now (fresh or stale).
    pub fn jwks_cached(&self) -> usize {
        lock(&self.jwks)
            .iter()
            .filter(|(_, e)| e.good.is_some())
            .count()
    }

    /// The last good set of `url` while its provider fails.
    fn stale(&self, url: &str) -> Option<Arc<KeySet>> {
        let mut cache = lock(&self.jwks);
        let good = cache.get(url)?.good.as_ref()?;
        if good.at.elapsed() >= self.cfg.jwks_max_stale {
            return None;
        }
        if good.at.elapsed() >= self.cfg.jwks_ttl {
            self.stats.bump(&self.stats.jwks_stale_served);
        }
        Some(good.set.clone())
    }

    /// Drops the JWK sets fetched for `api_id` (every API when `None`): the next token
    /// refetches them (`DELETE /tyk/cache/jwks[/{api_id}]` on the control plane). Breakers
    /// are kept: a flush does not let a failing provider be hammered.
    ///
    /// The last good set stays as the fallback while the provider fails: a flush (and every
    /// snapshot makes one) during an outage must not refuse every token.
    pub fn flush_jwks(&self, api_id: Option<&str>) {
        self.stats.bump(&self.stats.jwks_flushes);
        let mut cache = lock(&self.jwks);
        for (_, entry) in cache.iter_mut() {
            if api_id.is_none_or(|api| entry.apis.contains(api)) {
                entry.flushed = true;
                entry.attempted = None;
                entry.error = None;
            }
        }
    }
}
