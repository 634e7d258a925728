//! The session directory of one edge: a short in-process cache, then the regional Redis, then
//! the control plane (`LookupSession`). Key changes arrive as session events on the watch
//! stream, in revision order; an event drops the key everywhere in this region, and a lookup
//! older than the newest event for its key is not cached, so a revocation is never overtaken.
//!
//! Everything here is sized for a hostile client sending random keys (docs/security.md): the
//! cache is a set of bounded LRUs (unknown keys in their own, smaller one, so a flood of bad
//! keys cannot push out the good ones), concurrent lookups of one key share one Redis and CP
//! call, and at most [`CP_LOOKUPS`] control-plane lookups are in flight per edge. Session
//! records in Redis are sealed (see `session_record`), so write access to Redis does not mint keys.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use hashlink::LruCache;
use portcullis_proto::envelope::EnvelopeKey;
use portcullis_proto::model::SessionState;
use portcullis_proto::sync::sync_client::SyncClient as Grpc;
use portcullis_proto::sync::{
    LookupSessionRequest, ReportSessionsRequest, ReportedSession, SessionEvent,
};
use tokio::sync::{OnceCell, Semaphore};
use tonic::transport::Channel;

use crate::redis_link::RedisLink;
use crate::session_record::{self, Refusal};

/// Tyk keeps sessions in-process for 10 s; events make this a fallback, not the freshness bound.
const FOUND_TTL: Duration = Duration::from_secs(10);
/// Unknown keys are remembered briefly so a flood of bad keys does not reach the CP.
const MISSING_TTL: Duration = Duration::from_secs(1);
/// How long a session stays in the regional Redis without being refreshed.
const REDIS_TTL_SECS: u64 = 3600;
/// A Redis call slower than this counts as an outage for this request.
const REDIS_TIMEOUT: Duration = crate::redis_link::CALL_TIMEOUT;
const CP_TIMEOUT: Duration = Duration::from_secs(2);
/// Events are remembered this long to order in-flight lookups against them.
const EVENT_MEMORY: Duration = Duration::from_secs(60);
/// Control-plane lookups in flight at once from this edge; beyond, a lookup waits up to
/// [`CP_WAIT`] for a slot and is then answered 503 (the key may well be valid).
pub const CP_LOOKUPS: usize = 32;
const CP_WAIT: Duration = Duration::from_millis(500);
/// Default number of cached sessions (`--session-cache-entries`).
pub const DEFAULT_CACHE_ENTRIES: usize = 100_000;
/// The cache is split so that lookups of different keys rarely wait on one lock.
const SHARDS: usize = 16;
/// Refusals of Redis records are logged at most this often (a forger can cause many).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// A session as the auth chain uses it.
#[derive(Debug)]
pub struct Session {
    pub state: SessionState,
    /// Made from a verified token (`meta_data.TykJWTSessionID`), at this edge or another: only
    /// the token methods may use it, never an auth token or basic auth (its key id is derived
    /// from a public claim, so anyone could compute it).
    pub token_made: bool,
    /// Unix seconds an operator revoked this edge-made session at (0: not revoked). Tokens
    /// issued at or before it are refused (docs/keys.md, "Sessions made at the edge").
    pub revoked_at: i64,
    /// An earlier revocation of this identity, kept by the control plane on the sessions made
    /// after it: tokens issued at or before it stay refused.
    pub tokens_after: i64,
    /// The opened `hmac_string` (docs/hmac.md): unsealed at the first signed request, not at
    /// every one; `None` inside when it does not open.
    hmac_secret: OpenedSecret,
    /// The session's policies as last applied, and the policy index they were applied from:
    /// a request under the same index reuses them instead of merging policies again.
    effective: arc_swap::ArcSwapOption<Applied>,
}

/// Entitlements applied from one policy index.
#[derive(Debug)]
struct Applied {
    /// Held weakly: a newer index replaces the entry, and an old index's memory is not kept
    /// alive by the sessions that used it (its allocation is, so its address is never reused
    /// while this entry exists).
    index: std::sync::Weak<crate::policies::PolicyIndex>,
    key_hash: String,
    value: Arc<crate::policies::Entitlements>,
}

/// A secret opened from the session, never shown by `Debug`.
#[derive(Default)]
struct OpenedSecret(std::sync::OnceLock<Option<String>>);

impl std::fmt::Debug for OpenedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The meta-data field Tyk stores a JWT session's key id in (the control plane checks a
/// reported session's hash against it).
pub const JWT_SESSION_ID: &str = "TykJWTSessionID";

impl Session {
    pub fn new(state: SessionState) -> Self {
        // The control plane sets the mark and refuses it from operators, so an operator's key
        // (even one imported from Tyk with a `TykJWTSessionID`) is never taken for one.
        let token_made = state
            .field(portcullis_proto::model::TOKEN_ORIGIN_FIELD)
            .and_then(serde_json::Value::as_str)
            == Some("jwt");
        let tokens_after = state
            .field(portcullis_proto::model::TOKENS_AFTER_FIELD)
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        Self {
            state,
            token_made,
            revoked_at: 0,
            tokens_after,
            hmac_secret: OpenedSecret::default(),
            effective: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// The session's entitlements under `index`, computed by `apply` only when this session
    /// has not been applied from this index (and for this key hash) before. Failures are not
    /// kept: they are rare and their log line should appear.
    pub fn entitlements<E>(
        &self,
        key_hash: &str,
        index: &Arc<crate::policies::PolicyIndex>,
        apply: impl FnOnce() -> Result<crate::policies::Entitlements, E>,
    ) -> Result<Arc<crate::policies::Entitlements>, E> {
        if let Some(applied) = &*self.effective.load()
            && std::ptr::eq(applied.index.as_ptr(), Arc::as_ptr(index))
            && applied.key_hash == key_hash
        {
            return Ok(applied.value.clone());
        }
        let value = Arc::new(apply()?);
        self.effective.store(Some(Arc::new(Applied {
            index: Arc::downgrade(index),
            key_hash: key_hash.to_owned(),
            value: value.clone(),
        })));
        Ok(value)
    }

    /// The session's HMAC secret, opened once with `open` and kept as long as the session.
    pub fn hmac_secret(&self, open: impl FnOnce() -> Option<String>) -> Option<&str> {
        self.hmac_secret.0.get_or_init(open).as_deref()
    }

    /// Tokens issued at or before this (unix seconds) are refused for this session.
    pub fn revocation_floor(&self) -> i64 {
        self.revoked_at.max(self.tokens_after)
    }
}

/// Sessions made here and not yet acknowledged by the control plane, at most this many (the
/// oldest are dropped: a JWT session is made again from its next token).
const MAX_PENDING_REPORTS: usize = 10_000;
/// Sessions per `ReportSessions` call (the control plane's bound).
const REPORT_BATCH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// Neither Redis nor the control plane could answer for a key not cached here.
    Unavailable,
    /// Too many control-plane lookups in flight on this edge.
    Busy,
}

type Answer = Result<Option<Arc<Session>>, LookupError>;

struct Cached {
    at: Instant,
    session: Option<Arc<Session>>,
    /// The revision the session was read at: an event no newer than it (the key's own
    /// creation, arriving after the first lookup) leaves the entry alone.
    revision: u64,
}

struct Shard {
    found: LruCache<String, Cached>,
    missing: LruCache<String, Instant>,
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct SessionStats {
    pub redis_hits: AtomicU64,
    pub redis_unsealed: AtomicU64,
    pub redis_tampered: AtomicU64,
    pub redis_malformed: AtomicU64,
    pub redis_expired: AtomicU64,
    pub cp_lookups: AtomicU64,
    /// Lookups answered by another caller's in-flight lookup of the same key.
    pub shared_lookups: AtomicU64,
    pub cp_busy: AtomicU64,
    /// Sessions made here from verified tokens, and reported to the control plane.
    pub made: AtomicU64,
    pub reported: AtomicU64,
    pub report_failures: AtomicU64,
    last_refusal_log: Mutex<Option<Instant>>,
}

pub struct Sessions {
    /// Off: every lookup goes to Redis (Tyk's `disable_cached_session_state`).
    no_local_cache: AtomicBool,
    /// Tyk's master keys: empty access rights grant every API (`--allow-master-keys`).
    master_keys: AtomicBool,
    shards: OnceLock<Vec<Mutex<Shard>>>,
    in_flight: Mutex<HashMap<String, Arc<OnceCell<Answer>>>>,
    cp_slots: Semaphore,
    events: Mutex<HashMap<String, (u64, Instant)>>,
    /// Redis records older than this revision are ignored: this edge may have missed the events
    /// that should have deleted them (a failed DEL, or a snapshot after a gap).
    redis_floor: AtomicU64,
    redis: OnceLock<Arc<RedisLink>>,
    /// Seals session records in Redis; without it Redis is not used for sessions.
    seal: OnceLock<EnvelopeKey>,
    cp: ArcSwapOption<Grpc<Channel>>,
    cp_generation: Mutex<u64>,
    /// Sessions made here, by key hash, waiting for `ReportSessions`.
    reports: Mutex<HashMap<String, Vec<u8>>>,
    report_wake: tokio::sync::Notify,
    pub stats: SessionStats,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            no_local_cache: AtomicBool::new(false),
            master_keys: AtomicBool::new(false),
            shards: OnceLock::new(),
            in_flight: Mutex::default(),
            cp_slots: Semaphore::new(CP_LOOKUPS),
            events: Mutex::default(),
            redis_floor: AtomicU64::new(0),
            redis: OnceLock::new(),
            seal: OnceLock::new(),
            cp: ArcSwapOption::empty(),
            cp_generation: Mutex::new(0),
            reports: Mutex::default(),
            report_wake: tokio::sync::Notify::new(),
            stats: SessionStats::default(),
        }
    }
}

fn parse(json: &[u8], revoked_at: i64) -> Option<Arc<Session>> {
    let value = serde_json::from_slice(json).ok()?;
    SessionState::from_value(value).ok().map(|state| {
        let mut session = Session::new(state);
        session.revoked_at = revoked_at;
        Arc::new(session)
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sessions {
    /// Uses `redis` as the regional store from now on.
    pub fn set_redis(&self, redis: Arc<RedisLink>) {
        let _ = self.redis.set(redis);
    }

    /// Derives the key that seals session records in Redis from the shared encryption secret.
    pub fn set_secret(&self, shared_secret: &str) {
        let _ = self.seal.set(session_record::key(shared_secret));
    }

    pub fn disable_local_cache(&self) {
        self.no_local_cache.store(true, Ordering::Relaxed);
    }

    /// Sizes the local cache (once, before the first lookup; later calls are ignored).
    pub fn set_cache_entries(&self, entries: usize) {
        let _ = self.shards.set(new_shards(entries));
    }

    pub fn allow_master_keys(&self, allow: bool) {
        self.master_keys.store(allow, Ordering::Relaxed);
    }

    pub fn master_keys_allowed(&self) -> bool {
        self.master_keys.load(Ordering::Relaxed)
    }

    fn shards(&self) -> &[Mutex<Shard>] {
        self.shards
            .get_or_init(|| new_shards(DEFAULT_CACHE_ENTRIES))
    }

    fn shard(&self, hash: &str) -> &Mutex<Shard> {
        let shards = self.shards();
        let i = hash
            .bytes()
            .fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(b.into()));
        &shards[i % shards.len()]
    }

    /// Sessions held in the local cache now (found and unknown keys).
    pub fn cache_len(&self) -> usize {
        self.shards()
            .iter()
            .map(|s| {
                let s = lock(s);
                s.found.len() + s.missing.len()
            })
            .sum()
    }

    /// The most the local cache holds.
    pub fn cache_capacity(&self) -> usize {
        self.shards()
            .iter()
            .map(|s| {
                let s = lock(s);
                s.found.capacity() + s.missing.capacity()
            })
            .sum()
    }

    /// The link to the regional Redis, when configured.
    pub fn redis(&self) -> Option<&Arc<RedisLink>> {
        self.redis.get()
    }

    /// The control-plane client used for lookups; `None` while disconnected.
    pub fn set_control_plane(&self, client: Option<Grpc<Channel>>) {
        self.cp.store(client.map(Arc::new));
    }

    /// The control-plane client in use, `None` while disconnected (the OAuth relay shares it).
    pub fn control_plane(&self) -> Option<Arc<Grpc<Channel>>> {
        self.cp.load_full()
    }

    /// Uses `client`, built with the node identity of `generation`, unless a channel of a newer
    /// identity is already installed (the old certificate is refused once renewed).
    pub fn install_control_plane(&self, generation: u64, client: Grpc<Channel>) {
        let mut newest = lock(&self.cp_generation);
        if generation >= *newest {
            *newest = generation;
            self.cp.store(Some(Arc::new(client)));
        }
    }

    fn redis_key(prefix: &str, hash: &str) -> String {
        format!("{prefix}session:{hash}")
    }

    fn newest_event(&self, hash: &str) -> u64 {
        lock(&self.events).get(hash).map_or(0, |(r, _)| *r)
    }

    fn cache(&self, hash: &str, session: Option<Arc<Session>>, revision: u64) {
        if self.no_local_cache.load(Ordering::Relaxed) {
            return;
        }
        let mut shard = lock(self.shard(hash));
        match session {
            Some(session) => {
                shard.missing.remove(hash);
                shard.found.insert(
                    hash.to_owned(),
                    Cached {
                        at: Instant::now(),
                        session: Some(session),
                        revision,
                    },
                );
            }
            None => {
                shard.found.remove(hash);
                shard.missing.insert(hash.to_owned(), Instant::now());
            }
        }
    }

    /// The cached answer for `hash`, if fresh.
    fn cached(&self, hash: &str) -> Option<Option<Arc<Session>>> {
        let mut shard = lock(self.shard(hash));
        if let Some(c) = shard.found.get(hash) {
            if c.at.elapsed() < FOUND_TTL {
                return Some(c.session.clone());
            }
            shard.found.remove(hash);
        }
        match shard.missing.get(hash) {
            Some(at) if at.elapsed() < MISSING_TTL => Some(None),
            Some(_) => {
                shard.missing.remove(hash);
                None
            }
            None => None,
        }
    }

    pub async fn lookup(&self, hash: &str) -> Answer {
        if let Some(answer) = self.cached(hash) {
            return Ok(answer);
        }
        // One lookup per key at a time: the others wait for its answer.
        let cell = lock(&self.in_flight)
            .entry(hash.to_owned())
            .or_default()
            .clone();
        // Removes the entry also when this caller is dropped mid-lookup (the client went
        // away): otherwise a flood of random keys from clients that hang up grows the map.
        let guard = InFlight {
            map: &self.in_flight,
            hash,
            cell,
        };
        let mut led = false;
        let answer = guard
            .cell
            .get_or_init(|| {
                led = true;
                self.lookup_uncached(hash)
            })
            .await
            .clone();
        if !led {
            self.stats.shared_lookups.fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    fn note_refusal(&self, refusal: Refusal) {
        let counter = match refusal {
            Refusal::Unsealed => &self.stats.redis_unsealed,
            Refusal::Tampered => &self.stats.redis_tampered,
            Refusal::Malformed => &self.stats.redis_malformed,
            Refusal::Expired => &self.stats.redis_expired,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut last = lock(&self.stats.last_refusal_log);
        if last.is_none_or(|at| at.elapsed() >= REFUSAL_LOG_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                reason = refusal.as_str(),
                "refused a session record from Redis (not sealed by a gateway of this deployment); asking the control plane (further refusals are counted in /metrics)"
            );
        }
    }

    async fn read_redis(&self, hash: &str, newest_event: u64) -> Option<(Arc<Session>, u64)> {
        let link = self.redis.get()?;
        let key = self.seal.get()?;
        let raw = link
            .get_bytes(&Self::redis_key(link.prefix(), hash))
            .await?;
        match session_record::open(key, hash, &raw) {
            Ok((rev, _)) if rev < newest_event => None,
            Ok((rev, json)) => match parse(&json, 0) {
                Some(session) => {
                    self.stats.redis_hits.fetch_add(1, Ordering::Relaxed);
                    Some((session, rev))
                }
                None => {
                    self.note_refusal(Refusal::Malformed);
                    None
                }
            },
            Err(refusal) => {
                self.note_refusal(refusal);
                None
            }
        }
    }

    async fn lookup_uncached(&self, hash: &str) -> Answer {
        let newest_event = self
            .newest_event(hash)
            .max(self.redis_floor.load(Ordering::Acquire));
        if let Some((session, rev)) = self.read_redis(hash, newest_event).await {
            self.cache(hash, Some(session.clone()), rev);
            return Ok(Some(session));
        }
        let Ok(Ok(_slot)) = tokio::time::timeout(CP_WAIT, self.cp_slots.acquire()).await else {
            self.stats.cp_busy.fetch_add(1, Ordering::Relaxed);
            return Err(LookupError::Busy);
        };
        let mut attempt = 0;
        let (answer, session) = loop {
            let Some(cp) = self.cp.load_full() else {
                return Err(LookupError::Unavailable);
            };
            let mut client = (*cp).clone();
            let request = LookupSessionRequest {
                key_hash: hash.to_owned(),
            };
            self.stats.cp_lookups.fetch_add(1, Ordering::Relaxed);
            let Ok(Ok(answer)) =
                tokio::time::timeout(CP_TIMEOUT, client.lookup_session(request)).await
            else {
                return Err(LookupError::Unavailable);
            };
            let answer = answer.into_inner();
            let session = if answer.found {
                parse(&answer.session_json, answer.revoked_at)
            } else {
                None
            };
            attempt += 1;
            // An event newer than what the CP read means the key changed meanwhile: ask again,
            // and never cache a stale answer.
            if answer.revision >= self.newest_event(hash) {
                break (answer, session);
            }
            if attempt >= 2 {
                return Ok(session);
            }
        };
        self.cache(hash, session.clone(), answer.revision);
        // A revoked edge-made session stays out of Redis: the record would outlive the event.
        if session.as_ref().is_some_and(|s| s.revoked_at == 0)
            && let Some(link) = self.redis.get()
            && let Some(key) = self.seal.get()
        {
            let record = session_record::seal(key, hash, answer.revision, &answer.session_json);
            link.set_ex(
                &Self::redis_key(link.prefix(), hash),
                &record,
                REDIS_TTL_SECS,
            )
            .await;
        }
        Ok(session)
    }

    /// The revision a session made now must be sealed at: an event or snapshot after it makes
    /// the record (and the cache entry) stale, so a revocation is never overtaken.
    pub fn seen_revision(&self, hash: &str) -> u64 {
        self.newest_event(hash)
            .max(self.redis_floor.load(Ordering::Acquire))
    }

    /// A session this edge made from a verified token (docs/keys.md, "Sessions made at the
    /// edge"): cached here, written to the region's Redis and queued for the control plane.
    /// `seen` is [`Self::seen_revision`] from before the lookup that found nothing; when an
    /// event for the key arrived since, the session is used for this request only.
    /// `to_redis` false keeps the region's Redis out of it (a session remade too often).
    pub async fn remember_made(
        &self,
        hash: &str,
        session: Arc<Session>,
        json: Vec<u8>,
        seen: u64,
        to_redis: bool,
    ) {
        self.stats.made.fetch_add(1, Ordering::Relaxed);
        if self.seen_revision(hash) != seen {
            return;
        }
        self.cache(hash, Some(session), seen);
        if to_redis
            && let Some(link) = self.redis.get()
            && let Some(key) = self.seal.get()
        {
            let record = session_record::seal(key, hash, seen, &json);
            link.set_ex(
                &Self::redis_key(link.prefix(), hash),
                &record,
                REDIS_TTL_SECS,
            )
            .await;
        }
        {
            let mut reports = lock(&self.reports);
            if reports.len() >= MAX_PENDING_REPORTS && !reports.contains_key(hash) {
                // Bounded: drop an arbitrary pending one; its next token makes it again.
                if let Some(victim) = reports.keys().next().cloned() {
                    reports.remove(&victim);
                }
            }
            reports.insert(hash.to_owned(), json);
        }
        self.report_wake.notify_one();
    }

    /// Sends the sessions made here to the control plane, in batches, until the process ends.
    /// A failed call keeps them for the next round.
    pub async fn report_loop(&self) {
        loop {
            self.report_wake.notified().await;
            // Coalesce a burst of new sessions into one call.
            tokio::time::sleep(Duration::from_millis(50)).await;
            loop {
                let batch: Vec<(String, Vec<u8>)> = {
                    let mut reports = lock(&self.reports);
                    let keys: Vec<String> = reports.keys().take(REPORT_BATCH).cloned().collect();
                    keys.into_iter()
                        .filter_map(|k| reports.remove(&k).map(|v| (k, v)))
                        .collect()
                };
                if batch.is_empty() {
                    break;
                }
                if !self.report(&batch).await {
                    self.stats.report_failures.fetch_add(1, Ordering::Relaxed);
                    {
                        let mut reports = lock(&self.reports);
                        for (k, v) in batch {
                            if reports.len() < MAX_PENDING_REPORTS {
                                reports.entry(k).or_insert(v);
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    self.report_wake.notify_one();
                    break;
                }
            }
        }
    }

    async fn report(&self, batch: &[(String, Vec<u8>)]) -> bool {
        let Some(cp) = self.cp.load_full() else {
            return false;
        };
        let mut client = (*cp).clone();
        let request = ReportSessionsRequest {
            sessions: batch
                .iter()
                .map(|(hash, json)| ReportedSession {
                    key_hash: hash.clone(),
                    session_json: json.clone(),
                    origin: "jwt".into(),
                })
                .collect(),
        };
        match tokio::time::timeout(CP_TIMEOUT, client.report_sessions(request)).await {
            Ok(Ok(_)) => {
                self.stats
                    .reported
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// A key changed or was deleted on the control plane: forget it here and in the region.
    pub async fn on_event(&self, event: &SessionEvent) {
        {
            let mut events = lock(&self.events);
            events.retain(|_, (_, at)| at.elapsed() < EVENT_MEMORY);
            let entry = events
                .entry(event.key_hash.clone())
                .or_insert((0, Instant::now()));
            *entry = (entry.0.max(event.revision), Instant::now());
        }
        {
            let mut shard = lock(self.shard(&event.key_hash));
            let read_after = shard
                .found
                .peek(&event.key_hash)
                .is_some_and(|c| c.revision >= event.revision && c.session.is_some());
            if !read_after {
                shard.found.remove(&event.key_hash);
            }
            shard.missing.remove(&event.key_hash);
        }
        if let Some(link) = self.redis.get() {
            let Some(mut conn) = link.conn() else {
                self.raise_redis_floor(event.revision);
                link.failed();
                return;
            };
            let mut cmd = redis::cmd("DEL");
            cmd.arg(Self::redis_key(link.prefix(), &event.key_hash));
            match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<()>(&mut conn)).await {
                Ok(Ok(())) => {}
                _ => {
                    tracing::warn!(
                        "could not drop a changed key from Redis; older Redis records are ignored from now on"
                    );
                    self.raise_redis_floor(event.revision);
                    link.failed();
                }
            }
        }
    }

    /// After a snapshot at `revision` the events before it are unknown: start the local cache
    /// afresh and trust no Redis record written before it.
    pub fn after_snapshot(&self, revision: u64) {
        for shard in self.shards() {
            let mut shard = lock(shard);
            shard.found.clear();
            shard.missing.clear();
        }
        self.raise_redis_floor(revision);
    }

    fn raise_redis_floor(&self, revision: u64) {
        self.redis_floor.fetch_max(revision, Ordering::AcqRel);
    }

    /// Prometheus text for the session directory.
    pub fn render(&self, out: &mut String) {
        let s = &self.stats;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, u64)]| {
            let _ = writeln!(
                out,
                "# HELP portcullis_gateway_{name} {help}\n# TYPE portcullis_gateway_{name} {kind}"
            );
            for (labels, v) in lines {
                let _ = writeln!(out, "portcullis_gateway_{name}{labels} {v}");
            }
        };
        if let Some(link) = self.redis.get() {
            metric(
                "redis_up",
                "gauge",
                "1 while the link to the regional Redis is connected, 0 while it reconnects.",
                &[("", u64::from(link.is_up()))],
            );
        }
        let len = u64::try_from(self.cache_len()).unwrap_or(u64::MAX);
        let cap = u64::try_from(self.cache_capacity()).unwrap_or(u64::MAX);
        metric(
            "session_cache_entries",
            "gauge",
            "Keys (found and unknown) in the local session cache.",
            &[("", len)],
        );
        metric(
            "session_cache_capacity",
            "gauge",
            "The most keys the local session cache holds.",
            &[("", cap)],
        );
        metric(
            "edge_sessions_made_total",
            "counter",
            "Sessions this edge made from verified tokens (JWT identities).",
            &[("", n(&s.made))],
        );
        metric(
            "edge_sessions_reported_total",
            "counter",
            "Edge-made sessions acknowledged by the control plane (ReportSessions).",
            &[("", n(&s.reported))],
        );
        metric(
            "edge_session_report_failures_total",
            "counter",
            "ReportSessions calls that failed and were retried.",
            &[("", n(&s.report_failures))],
        );
        metric(
            "session_redis_hits_total",
            "counter",
            "Sessions served from a sealed Redis record.",
            &[("", n(&s.redis_hits))],
        );
        metric(
            "session_redis_refused_total",
            "counter",
            "Session records in Redis refused: not sealed, sealed for another key or secret, or unreadable.",
            &[
                ("{reason=\"unsealed\"}", n(&s.redis_unsealed)),
                ("{reason=\"tampered\"}", n(&s.redis_tampered)),
                ("{reason=\"malformed\"}", n(&s.redis_malformed)),
                ("{reason=\"expired\"}", n(&s.redis_expired)),
            ],
        );
        metric(
            "session_cp_lookups_total",
            "counter",
            "LookupSession calls made to the control plane.",
            &[("", n(&s.cp_lookups))],
        );
        metric(
            "session_shared_lookups_total",
            "counter",
            "Lookups answered by a concurrent lookup of the same key.",
            &[("", n(&s.shared_lookups))],
        );
        metric(
            "session_cp_busy_total",
            "counter",
            "Lookups refused (503) because too many control-plane lookups were in flight.",
            &[("", n(&s.cp_busy))],
        );
    }
}

fn new_shards(entries: usize) -> Vec<Mutex<Shard>> {
    let per_shard = (entries / SHARDS).max(1);
    // Unknown keys get a quarter of the room: a flood of random keys only churns that part.
    let missing = (per_shard / 4).max(1);
    (0..SHARDS)
        .map(|_| {
            Mutex::new(Shard {
                found: LruCache::new(per_shard.saturating_sub(missing).max(1)),
                missing: LruCache::new(missing),
            })
        })
        .collect()
}

type InFlightMap = Mutex<HashMap<String, Arc<OnceCell<Answer>>>>;

/// One caller's share of a single-flight lookup.
struct InFlight<'a> {
    map: &'a InFlightMap,
    hash: &'a str,
    cell: Arc<OnceCell<Answer>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = lock(self.map);
        // Answered: later callers start afresh. Cancelled: remove only when nobody else waits
        // (the map's and this caller's references); a waiter takes the lookup over otherwise.
        if map
            .get(self.hash)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
            && (self.cell.initialized() || Arc::strong_count(&self.cell) <= 2)
        {
            map.remove(self.hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control plane that accepts connections and never answers: every lookup holds its slot
    /// until `CP_TIMEOUT`.
    async fn silent_cp() -> (tokio::net::TcpListener, Grpc<Channel>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        (listener, Grpc::new(channel))
    }

    #[tokio::test]
    async fn lookups_beyond_the_cp_slots_are_busy_and_one_key_shares_one_call() {
        let (listener, client) = silent_cp().await;
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let sessions = Arc::new(Sessions::default());
        sessions.set_control_plane(Some(client));
        let mut tasks = Vec::new();
        for i in 0..CP_LOOKUPS + 8 {
            let s = sessions.clone();
            tasks.push(tokio::spawn(
                async move { s.lookup(&format!("hash-{i}")).await },
            ));
        }
        for _ in 0..10 {
            let s = sessions.clone();
            tasks.push(tokio::spawn(async move { s.lookup("hash-0").await }));
        }
        let mut busy = 0;
        for t in tasks {
            if matches!(t.await.unwrap(), Err(LookupError::Busy)) {
                busy += 1;
            }
        }
        assert_eq!(busy, 8, "the lookups over the cap are refused as busy");
        assert_eq!(sessions.stats.cp_busy.load(Ordering::Relaxed), 8);
        assert_eq!(
            sessions.stats.cp_lookups.load(Ordering::Relaxed),
            CP_LOOKUPS as u64,
            "one call per distinct key"
        );
        assert_eq!(sessions.stats.shared_lookups.load(Ordering::Relaxed), 10);
        accept.abort();
    }

    #[tokio::test]
    async fn cancelled_lookups_leave_no_single_flight_entry() {
        let (listener, client) = silent_cp().await;
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let sessions = Sessions::default();
        sessions.set_control_plane(Some(client));
        for i in 0..50 {
            let hash = format!("gone-{i}");
            let lookup = sessions.lookup(&hash);
            // The client hangs up while the CP has not answered.
            let _ = tokio::time::timeout(Duration::from_millis(5), lookup).await;
        }
        assert_eq!(lock(&sessions.in_flight).len(), 0);
        accept.abort();
    }

    #[test]
    fn the_cache_never_outgrows_its_capacity() {
        let sessions = Sessions::default();
        sessions.set_cache_entries(64);
        let cap = sessions.cache_capacity();
        assert!(cap <= 64, "{cap}");
        for i in 0..10_000 {
            sessions.cache(&format!("missing-{i}"), None, 0);
        }
        assert!(sessions.cache_len() <= cap);
        let state = SessionState::from_value(serde_json::json!({"org_id": "o"})).unwrap();
        let found = Arc::new(Session::new(state));
        sessions.cache("known", Some(found), 0);
        for i in 0..10_000 {
            sessions.cache(&format!("missing-again-{i}"), None, 0);
        }
        assert!(
            sessions.cached("known").is_some_and(|s| s.is_some()),
            "unknown keys do not push out a found one"
        );
        assert!(sessions.cache_len() <= cap);
    }

    #[tokio::test]
    async fn an_event_no_newer_than_the_cached_read_keeps_it() {
        let sessions = Sessions::default();
        let state = SessionState::from_value(serde_json::json!({"org_id": "o"})).unwrap();
        sessions.cache("k", Some(Arc::new(Session::new(state))), 7);
        let event = |revision| SessionEvent {
            key_hash: "k".into(),
            revoked: false,
            revision,
        };
        // The key's own creation event, arriving after the lookup that read it.
        sessions.on_event(&event(7)).await;
        assert!(sessions.cached("k").is_some_and(|s| s.is_some()));
        // A later change drops it.
        sessions.on_event(&event(8)).await;
        assert!(sessions.cached("k").is_none());
    }
}
