//! The session directory of one edge: a short in-process cache, then the regional Redis, then
//! the control plane (`LookupSession`). Key changes arrive as session events on the watch
//! stream, in revision order; an event drops the key everywhere in this region, and a lookup
//! older than the newest event for its key is not cached, so a revocation is never overtaken.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use portcullis_proto::model::SessionState;
use portcullis_proto::sync::sync_client::SyncClient as Grpc;
use portcullis_proto::sync::{LookupSessionRequest, SessionEvent};

use crate::redis_link::RedisLink;
use tonic::transport::Channel;

/// Tyk keeps sessions in-process for 10 s; events make this a fallback, not the freshness bound.
const FOUND_TTL: Duration = Duration::from_secs(10);
/// Unknown keys are remembered briefly so a flood of bad keys does not reach the CP.
const MISSING_TTL: Duration = Duration::from_secs(1);
/// How long a session stays in the regional Redis without being refreshed.
const REDIS_TTL_SECS: u64 = 3600;
/// A Redis call slower than this counts as an outage for this request.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
const CP_TIMEOUT: Duration = Duration::from_secs(2);
/// Events are remembered this long to order in-flight lookups against them.
const EVENT_MEMORY: Duration = Duration::from_secs(60);

/// A session as the auth chain uses it.
#[derive(Debug)]
pub struct Session {
    pub state: SessionState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupError {
    /// Neither Redis nor the control plane could answer for a key not cached here.
    Unavailable,
}

struct Cached {
    at: Instant,
    session: Option<Arc<Session>>,
}

#[derive(Default)]
pub struct Sessions {
    /// Off: every lookup goes to Redis (Tyk's `disable_cached_session_state`).
    no_local_cache: std::sync::atomic::AtomicBool,
    local: Mutex<HashMap<String, Cached>>,
    events: Mutex<HashMap<String, (u64, Instant)>>,
    /// Redis records older than this revision are ignored: this edge may have missed the events
    /// that should have deleted them (a failed DEL, or a snapshot after a gap).
    redis_floor: AtomicU64,
    redis: OnceLock<Arc<RedisLink>>,
    cp: ArcSwapOption<Grpc<Channel>>,
    cp_generation: Mutex<u64>,
}

fn parse(json: &[u8]) -> Option<Arc<Session>> {
    let value = serde_json::from_slice(json).ok()?;
    SessionState::from_value(value)
        .ok()
        .map(|state| Arc::new(Session { state }))
}

impl Sessions {
    /// Uses `redis` as the regional store from now on.
    pub fn set_redis(&self, redis: Arc<RedisLink>) {
        let _ = self.redis.set(redis);
    }

    pub fn disable_local_cache(&self) {
        self.no_local_cache
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The link to the regional Redis, when configured.
    pub fn redis(&self) -> Option<&Arc<RedisLink>> {
        self.redis.get()
    }

    /// The control-plane client used for lookups; `None` while disconnected.
    pub fn set_control_plane(&self, client: Option<Grpc<Channel>>) {
        self.cp.store(client.map(Arc::new));
    }

    /// Uses `client`, built with the node identity of `generation`, unless a channel of a newer
    /// identity is already installed (the old certificate is refused once renewed).
    pub fn install_control_plane(&self, generation: u64, client: Grpc<Channel>) {
        let mut newest = self.cp_generation.lock().unwrap_or_else(|p| p.into_inner());
        if generation >= *newest {
            *newest = generation;
            self.cp.store(Some(Arc::new(client)));
        }
    }

    fn redis_key(prefix: &str, hash: &str) -> String {
        format!("{prefix}session:{hash}")
    }

    fn newest_event(&self, hash: &str) -> u64 {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
            .map_or(0, |(r, _)| *r)
    }

    fn cache(&self, hash: &str, session: Option<Arc<Session>>) {
        if self
            .no_local_cache
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        if local.len() > 100_000 {
            local.retain(|_, c| c.at.elapsed() < FOUND_TTL);
        }
        local.insert(
            hash.to_owned(),
            Cached {
                at: Instant::now(),
                session,
            },
        );
    }

    pub async fn lookup(&self, hash: &str) -> Result<Option<Arc<Session>>, LookupError> {
        if let Some(c) = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(hash)
        {
            let ttl = if c.session.is_some() {
                FOUND_TTL
            } else {
                MISSING_TTL
            };
            if c.at.elapsed() < ttl {
                return Ok(c.session.clone());
            }
        }
        let newest_event = self
            .newest_event(hash)
            .max(self.redis_floor.load(Ordering::Acquire));
        if let Some(link) = self.redis.get() {
            match link.conn() {
                Some(mut conn) => {
                    let got: Result<redis::RedisResult<Option<Vec<u8>>>, _> = tokio::time::timeout(
                        REDIS_TIMEOUT,
                        redis::cmd("GET")
                            .arg(Self::redis_key(link.prefix(), hash))
                            .query_async(&mut conn),
                    )
                    .await;
                    match got {
                        Ok(Ok(Some(raw))) => {
                            if let Some((rev, json)) = split_record(&raw)
                                && rev >= newest_event
                                && let Some(session) = parse(json)
                            {
                                self.cache(hash, Some(session.clone()));
                                return Ok(Some(session));
                            }
                        }
                        Ok(Ok(None)) => {}
                        _ => link.failed(),
                    }
                }
                None => link.failed(),
            }
        }
        let mut attempt = 0;
        let (answer, session) = loop {
            let Some(cp) = self.cp.load_full() else {
                return Err(LookupError::Unavailable);
            };
            let mut client = (*cp).clone();
            let request = LookupSessionRequest {
                key_hash: hash.to_owned(),
            };
            let Ok(Ok(answer)) =
                tokio::time::timeout(CP_TIMEOUT, client.lookup_session(request)).await
            else {
                return Err(LookupError::Unavailable);
            };
            let answer = answer.into_inner();
            let session = if answer.found {
                parse(&answer.session_json)
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
        self.cache(hash, session.clone());
        if session.is_some()
            && let Some(link) = self.redis.get()
            && let Some(mut conn) = link.conn()
        {
            let mut record = format!("{}\n", answer.revision).into_bytes();
            record.extend_from_slice(&answer.session_json);
            let mut cmd = redis::cmd("SET");
            cmd.arg(Self::redis_key(link.prefix(), hash))
                .arg(record)
                .arg("EX")
                .arg(REDIS_TTL_SECS);
            match tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async::<()>(&mut conn)).await {
                Ok(Ok(())) => {}
                _ => link.failed(),
            }
        }
        Ok(session)
    }

    /// A key changed or was deleted on the control plane: forget it here and in the region.
    pub async fn on_event(&self, event: &SessionEvent) {
        {
            let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
            events.retain(|_, (_, at)| at.elapsed() < EVENT_MEMORY);
            let entry = events
                .entry(event.key_hash.clone())
                .or_insert((0, Instant::now()));
            *entry = (entry.0.max(event.revision), Instant::now());
        }
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&event.key_hash);
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
        self.local.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.raise_redis_floor(revision);
    }

    fn raise_redis_floor(&self, revision: u64) {
        self.redis_floor.fetch_max(revision, Ordering::AcqRel);
    }
}

/// Redis records are `<revision>\n<session json>`.
fn split_record(raw: &[u8]) -> Option<(u64, &[u8])> {
    let nl = raw.iter().position(|b| *b == b'\n')?;
    let rev = std::str::from_utf8(&raw[..nl]).ok()?.parse().ok()?;
    Some((rev, &raw[nl + 1..]))
}
