//! The plugin's sessions by request id (Tyk's `id_extractor`): a request whose id was seen
//! before the session's deadline is served without calling the plugin.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashlink::LruCache;
use portcullis_proto::model::plugins::{ExtractorSettings, IdSource, MAX_ID_CACHE_TTL_SECS};
use regex::Regex;
use sha2::{Digest, Sha256};

use crate::auth::identity::Identity;

/// Ids remembered per API; the least recently used go first.
pub const ENTRIES: usize = 10_000;
/// The longest id read from a request.
const MAX_ID_BYTES: usize = 4096;

#[derive(Debug)]
pub struct Extractor {
    source: IdSource,
    regex: Option<(Regex, usize)>,
    ttl: Duration,
}

impl Extractor {
    pub fn new(settings: ExtractorSettings) -> Result<Self, regex::Error> {
        let regex = match settings.regex {
            Some((expr, index)) => Some((
                regex::RegexBuilder::new(&expr)
                    .size_limit(1 << 20)
                    .build()?,
                index,
            )),
            None => None,
        };
        Ok(Self {
            source: settings.source,
            regex,
            ttl: Duration::from_secs(settings.ttl_secs),
        })
    }

    pub fn reads_body(&self) -> bool {
        matches!(self.source, IdSource::Form(_))
    }

    /// The request's id, or `None` when it has none (Tyk answers 400).
    pub fn extract(&self, parts: &http::request::Parts, body: Option<&[u8]>) -> Option<String> {
        let raw = match &self.source {
            IdSource::Header(name) => parts.headers.get(name)?.to_str().ok()?.to_owned(),
            IdSource::Form(name) => form_value(parts, body, name)?,
        };
        let id = match &self.regex {
            None => raw.as_str(),
            Some((re, index)) => re.find_iter(&raw).nth(*index)?.as_str(),
        };
        if id.is_empty() || id.len() > MAX_ID_BYTES {
            return None;
        }
        // The cache is keyed on the whole value, not only the part a regex picked: two
        // credentials that share a user name must not share a session (docs/plugins.md).
        Some(format!("{raw}\0{id}"))
    }

    /// How long a session may be reused: the plugin's `id_extractor_deadline`, else the
    /// configured `id_cache_ttl`, never beyond [`MAX_ID_CACHE_TTL_SECS`].
    pub fn keep_for(&self, deadline_unix: i64) -> Option<Duration> {
        let now = chrono::Utc::now().timestamp();
        let ttl = if deadline_unix > now {
            Duration::from_secs(u64::try_from(deadline_unix - now).unwrap_or(0))
        } else {
            self.ttl
        };
        let ttl = ttl.min(Duration::from_secs(MAX_ID_CACHE_TTL_SECS));
        (!ttl.is_zero()).then_some(ttl)
    }
}

/// Go's `FormValue`: the url-encoded body first, then the query string.
fn form_value(parts: &http::request::Parts, body: Option<&[u8]>, name: &str) -> Option<String> {
    let is_form = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
    let find = |bytes: &[u8]| {
        url::form_urlencoded::parse(bytes)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    body.filter(|_| is_form)
        .and_then(find)
        .or_else(|| find(parts.uri.query()?.as_bytes()))
}

/// Header edits the plugin asked for with a session: replayed with every cached use, so a
/// plugin that replaces a client's identity header keeps doing so.
pub type Edits = Arc<[(http::HeaderName, Option<http::HeaderValue>)]>;

struct Entry {
    until: Instant,
    identity: Identity,
    edits: Edits,
}

pub struct SessionCache {
    entries: Mutex<LruCache<[u8; 32], Entry>>,
}

impl std::fmt::Debug for SessionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCache").finish_non_exhaustive()
    }
}

impl Default for SessionCache {
    fn default() -> Self {
        Self {
            entries: Mutex::new(LruCache::new(ENTRIES)),
        }
    }
}

/// Ids are kept as hashes: they are often credentials.
fn slot(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl SessionCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<[u8; 32], Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<(Identity, Edits)> {
        let key = slot(id);
        let mut entries = self.lock();
        match entries.get(&key) {
            Some(e) if e.until > Instant::now() => Some((e.identity.clone(), e.edits.clone())),
            Some(_) => {
                entries.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, id: &str, identity: Identity, edits: Edits, ttl: Duration) {
        self.lock().insert(
            slot(id),
            Entry {
                until: Instant::now() + ttl,
                identity,
                edits,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn ids_come_from_headers_forms_and_regex_matches() {
        let header = Extractor::new(ExtractorSettings {
            source: IdSource::Header("x-id".into()),
            regex: None,
            ttl_secs: 0,
        })
        .unwrap();
        assert_eq!(
            header
                .extract(&parts("/", &[("x-id", "abc")]), None)
                .as_deref(),
            Some("abc\x00abc")
        );
        assert_eq!(header.extract(&parts("/", &[]), None), None);
        let form = Extractor::new(ExtractorSettings {
            source: IdSource::Form("user".into()),
            regex: Some(("[0-9]+".into(), 1)),
            ttl_secs: 0,
        })
        .unwrap();
        let p = parts(
            "/?user=q9",
            &[("content-type", "application/x-www-form-urlencoded")],
        );
        assert_eq!(
            form.extract(&p, Some(b"user=a1b22c333")).as_deref(),
            Some("a1b22c333\x0022")
        );
        // The same match in another value is another cache slot.
        assert_ne!(
            form.extract(&p, Some(b"user=x22")),
            form.extract(&p, Some(b"user=a1b22c333"))
        );
        // Not a form body: the query string.
        let p = parts("/?user=7x88", &[]);
        assert_eq!(
            form.extract(&p, Some(b"user=a1b22")).as_deref(),
            Some("7x88\x0088")
        );
        assert_eq!(
            form.extract(&parts("/?user=7", &[]), None),
            None,
            "no second match"
        );
    }

    #[test]
    fn deadlines_are_the_plugins_then_the_ttl_and_capped() {
        let ex = Extractor::new(ExtractorSettings {
            source: IdSource::Header("x".into()),
            regex: None,
            ttl_secs: 30,
        })
        .unwrap();
        let now = chrono::Utc::now().timestamp();
        assert_eq!(ex.keep_for(0), Some(Duration::from_secs(30)));
        assert!(ex.keep_for(now + 100).unwrap() > Duration::from_secs(90));
        assert_eq!(
            ex.keep_for(now + 1_000_000),
            Some(Duration::from_secs(MAX_ID_CACHE_TTL_SECS))
        );
    }
}
