//! Quotas counted in leases (`--quota-lease N` with `--rate-limiter local`; docs/limits.md).
//!
//! Instead of one Redis call per request, a gateway reserves up to `N` requests of a key's
//! quota at once and spends them in memory. The regional counter is moved by the reservation,
//! so the region can never admit more than the quota: what a lease costs is that a gateway may
//! refuse a key early while another gateway still holds part of its quota. A lease lives at most
//! [`LEASE_LIFE`]; what is left of it is given back to Redis in the same script call that takes
//! the key's next lease, so a quota ends up exact once every gateway holding a lease has seen
//! the key again.
//!
//! A lease's size follows the key's traffic: it doubles while leases run out before they expire
//! and falls back to what was used when one expires, so a quiet key leases one request at a time
//! (one call per request, as without leases) and a busy one `N` at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::gcra::QUOTA;
use super::script::{self, LuaScript, NUMBER_LEN};
use super::shards::Shards;
use super::{Limits, Unanswered};
use crate::redis_link::RedisLink;

/// How long a gateway may spend a lease: the longest another gateway can be refused while
/// quota it could have used sits unused here.
pub(super) const LEASE_LIFE: Duration = Duration::from_secs(1);
/// The largest `--quota-lease`.
pub const MAX_LEASE: u32 = 100_000;
/// Leases kept per gateway (about 150 bytes each with the scope). Dropping one loses what was
/// left of it: the counter keeps it as used, which never admits more than the quota.
const MAX_LEASES: usize = 1 << 17;
const EXPIRE_PER_CALL: usize = 2;

/// KEYS: the quota counter (the one the exact limiters `INCR`). ARGV: requests wanted, requests
/// given back, the period they were leased in, quota max, renewal in seconds. Answers (requests
/// granted, the counter's period, its time to live in ms or -1 for none).
///
/// A period is named by when its counter expires on Redis's clock (ms; -1: a counter that never
/// expires). Two periods of one key are at least a second apart (renewals are whole seconds), so
/// names within [`PERIOD_SLACK_MS`] are the same period: TIME and PTTL round differently from
/// one call to the next. Leftovers are only given back to the period they were leased in, and
/// never to a counter that does not expire: one that was deleted and made again has the same
/// name, and giving back into it would admit more than its quota.
const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local want, back, leased_in = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local qmax = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local raw = redis.call('GET', KEYS[1])
local used, period, ttl = 0, -1, -1
if raw then
  used = tonumber(raw)
  if not used then return redis.error_reply('quota counter is not a number') end
  ttl = redis.call('PTTL', KEYS[1])
  if ttl >= 0 then period = now + ttl end
  if back > 0 and (period < 0 or math.abs(period - leased_in) > 500) then back = 0 end
  if back > used then back = used end
  used = used - back
end
local grant = math.max(math.min(want, qmax - used), 0)
if raw then
  -- INCRBY keeps the counter's expiry.
  if grant ~= back then redis.call('INCRBY', KEYS[1], grant - back) end
elseif grant > 0 then
  if tonumber(ARGV[5]) > 0 then
    redis.call('SET', KEYS[1], grant, 'EX', ARGV[5])
    ttl = tonumber(ARGV[5]) * 1000
    period = now + ttl
  else
    redis.call('SET', KEYS[1], grant)
  end
end
return {grant, period, ttl}
";

/// See [`SCRIPT`]: the largest difference between two names of one period.
const PERIOD_SLACK_MS: i64 = 500;
/// Quotas beyond 2^53 cannot be counted exactly in Lua's numbers; nobody will reach one.
const MAX_QUOTA: i64 = 1 << 53;

fn same_period(a: i64, b: i64) -> bool {
    a.abs_diff(b) <= PERIOD_SLACK_MS.unsigned_abs()
}

struct Lease {
    /// Requests this gateway may still admit on the lease.
    left: u64,
    /// What the last reservation was granted: the next one's size follows from it.
    size: u64,
    /// µs since `Leases::epoch`.
    expires: u64,
    /// The counter's period the lease was taken in (see [`SCRIPT`]).
    period: i64,
    /// A reservation of more than one request is on its way until then (µs since the epoch):
    /// the requests that run out meanwhile reserve one each, so one gateway never holds more
    /// than one lease's worth. A time rather than a flag, so a request dropped mid-call does
    /// not keep it set.
    reserving_until: u64,
    /// The reservation (see `Leases::asked`) whose answer named `period`: an answer to an
    /// older one that names another period arrived late and does not move the lease back.
    adopted: u64,
}

pub(super) struct Leases {
    max: u64,
    leases: Shards<Lease>,
    script: LuaScript,
    /// Numbers the reservations in the order they are asked.
    asked: AtomicU64,
}

/// A reservation on its way: what was asked, its number and when.
#[derive(Debug, Clone, Copy)]
struct Taken {
    ask: Ask,
    seq: u64,
    asked_at: u64,
}

/// A reservation to ask Redis for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ask {
    want: u64,
    back: u64,
    /// The period `back` was leased in.
    leased_in: i64,
    /// The key's one reservation that sizes its lease; not one made while that is on its way.
    main: bool,
}

impl Ask {
    const FIRST: Ask = Ask {
        want: 1,
        back: 0,
        leased_in: -1,
        main: true,
    };
    const BESIDE: Ask = Ask {
        main: false,
        ..Self::FIRST
    };
}

impl Leases {
    pub(super) fn new(max: u32) -> Self {
        Self::with_capacity(max, MAX_LEASES)
    }

    fn with_capacity(max: u32, leases: usize) -> Self {
        Self {
            max: u64::from(max.clamp(1, MAX_LEASE)),
            leases: Shards::with_capacity(leases),
            script: LuaScript::new(SCRIPT),
            asked: AtomicU64::new(1),
        }
    }

    fn now(&self) -> u64 {
        self.leases.now()
    }

    fn shard(&self, scope: &str) -> std::sync::MutexGuard<'_, super::shards::Shard<Lease>> {
        self.leases.lock(scope)
    }

    /// One request against the key's quota: `Ok(true)` admitted, `Ok(false)` the quota is used
    /// up, `Err` Redis could not be asked (and no lease covered the request).
    pub(super) async fn take(
        &self,
        redis: Option<&Arc<RedisLink>>,
        limits: &Limits,
    ) -> Result<bool, Unanswered> {
        // The lease's life counts from the ask: an answer that was slow to come must not carry
        // the lease past the counter's period.
        let asked_at = self.now();
        let ask = match self.spend(&limits.scope, asked_at) {
            Ok(()) => return Ok(true),
            Err(ask) => ask,
        };
        let seq = self.asked.fetch_add(1, Ordering::Relaxed);
        let answer = self.reserve(redis, limits, ask).await;
        let taken = Taken { ask, seq, asked_at };
        self.settle(&limits.scope, taken, answer)
    }

    /// Records the answer to a reservation: `Ok(true)` this request is admitted.
    fn settle(
        &self,
        scope: &str,
        taken: Taken,
        answer: Result<(i64, i64, i64), Unanswered>,
    ) -> Result<bool, Unanswered> {
        let Taken { ask, seq, asked_at } = taken;
        let mut shard = self.shard(scope);
        let (granted, period, ttl_ms) = match answer {
            Ok(a) => a,
            Err(e) => {
                if let Some(lease) = shard.get_mut(scope) {
                    if ask.want > 1 {
                        lease.reserving_until = 0;
                    }
                    // Only a call that never left kept what it was to give back: one that failed
                    // or timed out may have run.
                    if matches!(e, Unanswered::NoLink | Unanswered::Down(_))
                        && same_period(lease.period, ask.leased_in)
                    {
                        lease.left = lease.left.saturating_add(ask.back);
                    }
                }
                return Err(e);
            }
        };
        let granted = u64::try_from(granted).unwrap_or(0).min(ask.want);
        let mut expires = asked_at.saturating_add(LEASE_LIFE.as_micros() as u64);
        if let Ok(ms) = u64::try_from(ttl_ms) {
            expires = expires.min(asked_at.saturating_add(ms.saturating_mul(1000)));
        }
        if !shard.contains_key(scope) {
            self.leases.insert(
                &mut shard,
                scope,
                Lease {
                    left: 0,
                    size: 0,
                    expires: asked_at,
                    period,
                    reserving_until: 0,
                    adopted: seq,
                },
            );
        }
        let Some(lease) = shard.get_mut(scope) else {
            return Ok(granted > 0);
        };
        if ask.want > 1 {
            lease.reserving_until = 0;
        }
        let same = same_period(lease.period, period);
        // Another period than the lease's: the current one if the counter expires later, or,
        // where a name is -1 (no expiry) or the lease had expired, if this reservation was
        // asked after the one that named the lease's; otherwise the answer was overtaken by a
        // newer one and names the period before.
        let newer = !same
            && if lease.period >= 0 && period >= 0 && lease.expires > asked_at {
                // Both expire: a new period always ends later. Reservations may reach Redis in
                // another order than they were numbered (proxy workers), so the number alone
                // could move a live lease back to the period that just ended.
                period > lease.period
            } else {
                seq > lease.adopted || (lease.period >= 0 && period > lease.period)
            };
        if granted == 0 {
            // Used up: the next request asks Redis again (the quota may be raised or renewed).
            // What another reservation of this period still holds stays spendable.
            if newer {
                lease.left = 0;
                lease.period = period;
                lease.adopted = seq;
            }
            lease.size = 0;
            return Ok(false);
        }
        if same {
            lease.left = lease.left.saturating_add(granted - 1);
            lease.adopted = lease.adopted.max(seq);
        } else if newer {
            // A new period: what was left of the old one is not spent in it.
            lease.left = granted - 1;
            lease.period = period;
            lease.adopted = seq;
        } else {
            // A late answer from the period before: only this request is admitted on it.
            return Ok(true);
        }
        if ask.main {
            lease.size = granted;
        }
        lease.expires = expires;
        Ok(true)
    }

    /// Admits the request on the key's lease, or says what to reserve instead.
    fn spend(&self, scope: &str, now: u64) -> Result<(), Ask> {
        let mut shard = self.shard(scope);
        let ask = match shard.to_back(scope) {
            None => Err(Ask::FIRST),
            Some(lease) if now < lease.expires && lease.left > 0 => {
                lease.left -= 1;
                Ok(())
            }
            Some(lease) if now < lease.reserving_until => Err(Ask::BESIDE),
            Some(lease) => {
                let want = if now < lease.expires {
                    // Ran out before it expired: the key is busier than the lease.
                    lease.size.saturating_mul(2)
                } else {
                    lease.size.saturating_sub(lease.left)
                }
                .clamp(1, self.max);
                let ask = Ask {
                    want,
                    back: lease.left,
                    leased_in: lease.period,
                    main: true,
                };
                lease.left = 0;
                // Until the answer sets it: if it never comes (a timeout, an error, the request
                // dropped mid-call) Redis may still have counted it, and the next reservation
                // starts again from one rather than spending another lease per request.
                lease.size = 0;
                if want > 1 {
                    lease.reserving_until = now.saturating_add(LEASE_LIFE.as_micros() as u64);
                }
                Err(ask)
            }
        };
        // Leases that have expired with nothing left to give back are only their sizes: drop a
        // few from the old end (never the one just used, now at the back).
        for _ in 0..EXPIRE_PER_CALL {
            match shard.front() {
                Some((key, oldest))
                    if key != scope && oldest.expires <= now && oldest.left == 0 =>
                {
                    shard.pop_front();
                }
                _ => break,
            }
        }
        ask
    }

    async fn reserve(
        &self,
        redis: Option<&Arc<RedisLink>>,
        limits: &Limits,
        ask: Ask,
    ) -> Result<(i64, i64, i64), Unanswered> {
        let (link, conn) = script::connect(redis)?;
        let scope = limits.scope.as_str();
        let mut cmd =
            self.script
                .command(1, 5, script::key_len(link, QUOTA, scope) + 5 * NUMBER_LEN);
        script::key(&mut cmd, link, QUOTA, scope);
        cmd.arg(ask.want)
            .arg(ask.back)
            .arg(ask.leased_in)
            .arg(limits.quota_max.min(MAX_QUOTA))
            .arg(limits.quota_renewal_rate);
        self.script.run(link, conn, &cmd).await
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.leases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(left: u64, size: u64, expires: u64) -> Lease {
        Lease {
            left,
            size,
            expires,
            period: 7_000,
            reserving_until: 0,
            adopted: 0,
        }
    }

    fn with(leases: &Leases, scope: &str, l: Lease) {
        leases.shard(scope).insert(scope.into(), l);
    }

    fn ask(want: u64, back: u64) -> Ask {
        Ask {
            want,
            back,
            leased_in: 7_000,
            main: true,
        }
    }

    #[test]
    fn a_lease_is_spent_in_memory_until_it_runs_out_or_expires() {
        let leases = Leases::new(64);
        assert_eq!(
            leases.spend("k", 0),
            Err(Ask::FIRST),
            "no lease: ask for one"
        );
        with(&leases, "k", lease(2, 4, 1_000));
        assert_eq!(leases.spend("k", 10), Ok(()));
        assert_eq!(leases.spend("k", 20), Ok(()));
        assert_eq!(
            leases.spend("k", 30),
            Err(ask(8, 0)),
            "ran out before expiring: twice the size"
        );
        assert_eq!(
            leases.spend("k", 40),
            Err(Ask::BESIDE),
            "while that reservation is on its way, one request at a time"
        );
        with(&leases, "k", lease(3, 4, 1_000));
        assert_eq!(
            leases.spend("k", 1_000),
            Err(ask(1, 3)),
            "expired with 3 of 4 left: the 3 go back, the next lease is what was used"
        );
        assert_eq!(
            leases.spend("k", 1_001),
            Err(ask(1, 0)),
            "what was given back is not given back twice"
        );
    }

    #[test]
    fn sizes_stay_within_one_and_the_flag() {
        let leases = Leases::new(64);
        with(&leases, "k", lease(0, 64, 1_000));
        assert_eq!(leases.spend("k", 1), Err(ask(64, 0)));
        with(&leases, "k", lease(5, 5, 1_000));
        assert_eq!(leases.spend("k", 2_000), Err(ask(1, 5)), "none used: one");
        assert_eq!(Leases::new(0).max, 1);
        assert_eq!(Leases::new(u32::MAX).max, u64::from(MAX_LEASE));
    }

    #[test]
    fn periods_are_told_apart_by_more_than_rounding() {
        assert!(same_period(-1, -1), "a counter that never expires");
        assert!(same_period(10_000, 10_002));
        assert!(!same_period(10_000, 11_000), "renewals are whole seconds");
        assert!(!same_period(-1, 10_000));
    }

    #[test]
    fn memory_is_bounded_and_only_spent_expired_leases_are_swept() {
        let leases = Leases::with_capacity(64, 128);
        for i in 0..1_000 {
            let scope = format!("key-{i}");
            let mut shard = leases.shard(&scope);
            leases.leases.insert(&mut shard, &scope, lease(0, 1, 5));
        }
        assert!(leases.len() <= 128, "{}", leases.len());
        for i in 0..200 {
            let _ = leases.spend(&format!("new-{i}"), 10);
        }
        assert!(leases.len() < 128, "{}", leases.len());
        let alone = Leases::new(64);
        with(&alone, "k", lease(3, 4, 5));
        assert_eq!(
            alone.spend("k", 10),
            Err(ask(1, 3)),
            "an expired lease with requests left is kept to give them back"
        );
    }

    fn taken(ask: Ask, seq: u64) -> Taken {
        Taken {
            ask,
            seq,
            asked_at: 100,
        }
    }

    #[test]
    fn a_reservation_whose_answer_is_lost_starts_the_next_from_one() {
        let leases = Leases::new(64);
        with(&leases, "k", lease(0, 32, 1_000));
        assert_eq!(leases.spend("k", 10), Err(ask(64, 0)));
        // No answer (timed out, failed, or the request went away): once the reservation's time
        // has passed, the key asks for one request, not for another 64.
        let later = 10 + LEASE_LIFE.as_micros() as u64;
        assert_eq!(leases.spend("k", later), Err(ask(1, 0)));
        let failed = leases.settle("k", taken(ask(1, 0), 5), Err(Unanswered::NoLink));
        assert!(failed.is_err());
        assert_eq!(leases.spend("k", later + 1), Err(ask(1, 0)));
    }

    #[test]
    fn answers_name_the_period_and_a_newer_ask_wins_even_with_an_earlier_name() {
        let leases = Leases::new(64);
        // First lease: 10 requests in the period that ends at 7 000 ms.
        assert_eq!(
            leases
                .settle(
                    "k",
                    taken(
                        Ask {
                            want: 10,
                            ..Ask::FIRST
                        },
                        1
                    ),
                    Ok((10, 7_000, 900))
                )
                .ok(),
            Some(true)
        );
        for _ in 0..9 {
            assert_eq!(leases.spend("k", 200), Ok(()));
        }
        // The counter was reset and now never expires (renewal set to 0): a newer ask adopts
        // the new period although its name (-1) is smaller, and its lease is spent.
        assert_eq!(leases.spend("k", 300), Err(ask(20, 0)));
        assert_eq!(
            leases
                .settle("k", taken(ask(20, 0), 2), Ok((20, -1, -1)))
                .ok(),
            Some(true)
        );
        for _ in 0..19 {
            assert_eq!(leases.spend("k", 400), Ok(()));
        }
        // An answer to an older ask naming another period admits only its own request.
        assert_eq!(
            leases
                .settle("k", taken(Ask::BESIDE, 1), Ok((5, 7_000, 900)))
                .ok(),
            Some(true)
        );
        assert_ne!(leases.spend("k", 500), Ok(()), "nothing of it was kept");
    }

    #[test]
    fn a_grant_beyond_the_ask_is_not_believed() {
        let leases = Leases::new(64);
        assert_eq!(
            leases
                .settle("k", taken(Ask::FIRST, 1), Ok((i64::MAX, 7_000, 900)))
                .ok(),
            Some(true)
        );
        assert_ne!(leases.spend("k", 200), Ok(()), "one asked, one admitted");
        assert!(same_period(i64::MIN, i64::MIN));
        assert!(
            !same_period(i64::MIN, i64::MAX),
            "no overflow on a hostile period"
        );
    }

    #[test]
    fn a_lease_ends_with_its_period_counted_from_the_ask() {
        let leases = Leases::new(64);
        // Asked at 100 µs, the counter had 1 ms left: the lease ends at 1 100 µs.
        assert_eq!(
            leases
                .settle("k", taken(Ask::FIRST, 1), Ok((1, 7_000, 1)))
                .ok(),
            Some(true)
        );
        assert_eq!(
            leases
                .settle("k", taken(ask(5, 0), 2), Ok((5, 7_000, 1)))
                .ok(),
            Some(true)
        );
        assert_eq!(leases.spend("k", 1_099), Ok(()));
        assert_ne!(leases.spend("k", 1_100), Ok(()));
    }

    #[test]
    fn a_live_lease_is_not_moved_back_to_the_period_that_just_ended() {
        let leases = Leases::new(64);
        let big = Ask {
            want: 10,
            ..Ask::FIRST
        };
        // Reservation 2 reached Redis after the new period began and was answered first;
        // reservation 3 ran just before, in the old period.
        assert_eq!(
            leases
                .settle("k", taken(big, 2), Ok((10, 9_000, 1_000)))
                .ok(),
            Some(true)
        );
        assert_eq!(
            leases.settle("k", taken(big, 3), Ok((10, 8_000, 10))).ok(),
            Some(true)
        );
        for _ in 0..9 {
            assert_eq!(
                leases.spend("k", 200),
                Ok(()),
                "the new period's lease is kept"
            );
        }
        assert_ne!(leases.spend("k", 200), Ok(()));
    }
}
