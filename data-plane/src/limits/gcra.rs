//! The generic cell rate algorithm (`--rate-limiter gcra`, the default; docs/limits.md).
//!
//! A counter is one number, the theoretical arrival time (TAT): when the key would be back to
//! idle if its requests had come evenly spaced. A request is admitted when moving the TAT one
//! emission interval (`per / rate`) further leaves it at most `per` (the tolerance, burst ×
//! interval) ahead of now. So from idle `rate` requests pass at once, then one every interval.
//!
//! The math here is shared by the Redis script below and the in-process limiter (`local.rs`);
//! everything is in whole microseconds, which Lua's doubles hold exactly (a ten-year window is
//! 3.2e14 µs, the Unix time in µs 1.8e15, both below 2^53).

use std::sync::Arc;

use super::script::{self, LuaScript, NUMBER_LEN};
use super::{Decision, Limits, Outcome, RateInfo, Unanswered};
use crate::redis_link::RedisLink;

const MICROS: u64 = 1_000_000;

/// A rate limit as GCRA counts it, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// One request per `interval` once the burst is spent.
    pub interval: u64,
    /// How far ahead of now the TAT may run: burst × interval.
    pub tolerance: u64,
}

impl Cell {
    /// The cell for `limits`, or `None` without a rate limit. Uses [`Limits::window`], so a
    /// fractional rate (0.5 per second) is one request per longer window (2 s).
    pub fn of(limits: &Limits) -> Option<Self> {
        let (requests, window_ms) = limits.window();
        if requests == 0 {
            return None;
        }
        let window = window_ms.saturating_mul(1000);
        // The resolution is 1 µs: a rate above a million a second for one key becomes a burst
        // of the window's microseconds, then one request per microsecond.
        let interval = (window / requests).max(1);
        Some(Self {
            interval,
            tolerance: interval.saturating_mul(requests).min(window),
        })
    }

    /// Requests admitted at once from idle.
    pub fn burst(&self) -> u64 {
        self.tolerance / self.interval
    }

    /// The backlog (TAT − now) a stored cell leaves, never beyond the tolerance. A cell stored
    /// under another interval (the key's rate was edited) is rescaled: the backlog stands for
    /// requests, so a raised rate admits again at once, as the sliding log would.
    pub fn carried(&self, backlog: u64, stored_interval: u64) -> u64 {
        let backlog = if stored_interval == self.interval || stored_interval == 0 {
            backlog
        } else {
            let scaled = (u128::from(backlog) * u128::from(self.interval))
                .div_ceil(u128::from(stored_interval));
            u64::try_from(scaled).unwrap_or(u64::MAX)
        };
        backlog.min(self.tolerance)
    }

    /// One more request on top of `backlog`: the new backlog when it is admitted.
    pub fn admit(&self, backlog: u64) -> Option<u64> {
        let after = backlog.saturating_add(self.interval);
        (after <= self.tolerance).then_some(after)
    }

    /// Headers after an admitted request left `after` of backlog.
    pub fn admitted(&self, after: u64) -> RateInfo {
        let after = after.min(self.tolerance);
        RateInfo {
            limit: self.burst(),
            remaining: (self.tolerance - after) / self.interval,
            reset_secs: after.div_ceil(MICROS),
        }
    }

    /// Headers for a request refused on `backlog`: when the next one would pass.
    pub fn refused(&self, backlog: u64) -> RateInfo {
        let wait = backlog
            .min(self.tolerance)
            .saturating_add(self.interval)
            .saturating_sub(self.tolerance);
        RateInfo {
            limit: self.burst(),
            remaining: 0,
            reset_secs: wait.div_ceil(MICROS).max(1),
        }
    }
}

/// KEYS: the cell (`<TAT>:<interval>` in µs), the quota counter. ARGV: interval (0: no rate
/// limit), tolerance, quota max, quota renewal in seconds. Answers (rate admitted, backlog in
/// µs: after the request when admitted, before it when refused, quota admitted).
const SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local now, after = 0, 0
if interval > 0 then
  -- Redis's clock rather than each gateway's: gateways with skewed clocks still agree.
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local backlog = 0
  local stored = redis.call('GET', KEYS[1])
  if stored then
    local tat, old = string.match(stored, '^(%d+):(%d+)$')
    tat, old = tonumber(tat), tonumber(old)
    if tat and old and tat > now then
      backlog = tat - now
      if old > 0 and old ~= interval then
        backlog = math.ceil(backlog * interval / old)
      end
      if backlog > tolerance then backlog = tolerance end
    end
  end
  after = backlog + interval
  if after > tolerance then return {0, backlog, 1} end
end
local qmax = tonumber(ARGV[3])
if qmax > 0 then
  local used = redis.call('INCR', KEYS[2])
  if used == 1 and tonumber(ARGV[4]) > 0 then
    redis.call('EXPIRE', KEYS[2], ARGV[4])
  end
  if used > qmax then
    redis.call('DECR', KEYS[2])
    -- The TAT stays where it was: the rate-limit slot is given back.
    return {1, after, 0}
  end
end
if interval > 0 then
  redis.call('SET', KEYS[1], string.format('%.0f:%.0f', now + after, interval),
    'PX', math.ceil(after / 1000))
end
return {1, after, 1}
";

/// (rate admitted, backlog in µs, quota admitted).
type ScriptAnswer = (i64, i64, i64);

pub(super) struct RedisGcra {
    script: LuaScript,
}

impl Default for RedisGcra {
    fn default() -> Self {
        Self {
            script: LuaScript::new(SCRIPT),
        }
    }
}

impl RedisGcra {
    pub(super) async fn check(&self, redis: Option<&Arc<RedisLink>>, limits: &Limits) -> Outcome {
        let cell = Cell::of(limits);
        let answer = self
            .call(redis, cell, limits)
            .await
            .map_err(|u| (u, Decision::Allowed(None)))?;
        Ok(decide(cell, answer))
    }

    /// One script call: the rate limit for `cell` (none: only the quota) and the quota.
    pub(super) async fn call(
        &self,
        redis: Option<&Arc<RedisLink>>,
        cell: Option<Cell>,
        limits: &Limits,
    ) -> Result<ScriptAnswer, Unanswered> {
        let (link, conn) = script::connect(redis)?;
        let scope = limits.scope.as_str();
        let room = script::key_len(link, CELL, scope)
            + script::key_len(link, QUOTA, scope)
            + 4 * NUMBER_LEN;
        let mut cmd = self.script.command(2, 4, room);
        script::key(&mut cmd, link, CELL, scope);
        script::key(&mut cmd, link, QUOTA, scope);
        let (interval, tolerance) = cell.map_or((0, 0), |c| (c.interval, c.tolerance));
        cmd.arg(interval)
            .arg(tolerance)
            .arg(limits.quota_max)
            .arg(limits.quota_renewal_rate);
        self.script.run(link, conn, &cmd).await
    }
}

/// Key kinds: the GCRA cell, and the quota counter every limiter shares.
const CELL: &str = "gcra:";
pub(super) const QUOTA: &str = "quota:";

/// Counters are plain numbers in Redis (a script must update them atomically, so they are not
/// sealed): whoever can write there can lift or exhaust a limit, but the headers never claim
/// more than the cell allows.
fn decide(cell: Option<Cell>, (rate_ok, backlog, quota_ok): ScriptAnswer) -> Decision {
    let backlog = u64::try_from(backlog).unwrap_or(0);
    match cell {
        Some(c) if rate_ok == 0 => Decision::RateExceeded(c.refused(backlog)),
        _ if quota_ok == 0 => Decision::QuotaExceeded,
        Some(c) => Decision::Allowed(Some(c.admitted(backlog))),
        None => Decision::Allowed(None),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::limits;
    use super::*;

    fn cell(rate: f64, per: f64) -> Cell {
        Cell::of(&limits(rate, per)).unwrap()
    }

    /// Admits requests at `times` (µs) against one cell, as the script and `local.rs` do.
    fn run(c: Cell, times: &[u64]) -> Vec<bool> {
        let mut tat = 0u64;
        times
            .iter()
            .map(|&now| {
                let backlog = c.carried(tat.saturating_sub(now), c.interval);
                match c.admit(backlog) {
                    Some(after) => {
                        tat = now + after;
                        true
                    }
                    None => false,
                }
            })
            .collect()
    }

    #[test]
    fn from_idle_exactly_rate_requests_pass_then_one_per_interval() {
        let c = cell(10.0, 1.0);
        assert_eq!(
            c,
            Cell {
                interval: 100_000,
                tolerance: 1_000_000
            }
        );
        assert_eq!(c.burst(), 10);
        let burst = run(c, &[0; 11]);
        assert_eq!(burst.iter().filter(|ok| **ok).count(), 10);
        assert!(!burst[10], "the eleventh is refused");
        // One interval later exactly one more passes; a microsecond early, none.
        let mut times = vec![0; 10];
        times.extend([99_999, 100_000, 100_000, 200_000]);
        assert_eq!(
            &run(c, &times)[10..],
            &[false, true, false, true],
            "one request per emission interval"
        );
        // After a whole window the full burst is back.
        let mut times = vec![0; 10];
        times.extend([1_000_000; 11]);
        assert_eq!(run(c, &times).iter().filter(|ok| **ok).count(), 20);
    }

    #[test]
    fn fractional_rates_are_one_request_per_longer_window() {
        let c = cell(0.5, 1.0);
        assert_eq!(c.interval, 2_000_000, "0.5/s: one per 2 s");
        assert_eq!(c.burst(), 1);
        assert_eq!(
            run(c, &[0, 1_999_999, 2_000_000]),
            [true, false, true],
            "the next one 2 s later"
        );
        let c = cell(2.7, 1.0);
        assert_eq!((c.burst(), c.interval), (2, 500_000), "whole requests");
        let c = cell(3.0, 1.0);
        assert_eq!(
            c.burst(),
            3,
            "an interval rounded down never loses a request"
        );
        assert!(c.tolerance <= 1_000_000);
    }

    #[test]
    fn headers_count_down_and_say_when_the_next_request_passes() {
        let c = cell(3.0, 60.0);
        assert_eq!(c.admitted(c.interval).remaining, 2);
        assert_eq!(c.admitted(2 * c.interval).remaining, 1);
        let full = c.admitted(c.tolerance);
        assert_eq!((full.limit, full.remaining, full.reset_secs), (3, 0, 60));
        assert_eq!(c.admit(c.tolerance), None);
        let refused = c.refused(c.tolerance);
        assert_eq!((refused.remaining, refused.reset_secs), (0, 20));
        // A refusal a microsecond before the next slot still says at least 1 s.
        assert_eq!(c.refused(c.tolerance - c.interval + 1).reset_secs, 1);
        // Time that passed since a request leaves a part of a request: not a whole one.
        assert_eq!(c.admitted(2 * c.interval - 1).remaining, 1);
    }

    #[test]
    fn an_edited_rate_rescales_the_backlog_it_finds() {
        // One of one request used per hour, then the rate is raised to 50 an hour.
        let old = cell(1.0, 3600.0);
        let new = cell(50.0, 3600.0);
        let backlog = new.carried(old.tolerance, old.interval);
        assert_eq!(backlog, new.interval, "one request of 50 used");
        assert_eq!(new.admitted(new.admit(backlog).unwrap()).remaining, 48);
        // Lowered: the backlog never runs past the new tolerance.
        assert_eq!(old.carried(new.tolerance, new.interval), old.tolerance);
        assert_eq!(
            old.carried(123, 0),
            123,
            "a stored interval of 0 is ignored"
        );
    }

    #[test]
    fn huge_and_tiny_numbers_neither_overflow_nor_panic() {
        for (rate, per) in [
            (1e300, 1.0),
            (1e9, 0.001),
            (1e9, 1e300),
            (0.001, 31_536_000.0),
            (f64::MAX, f64::MAX),
            (f64::MIN_POSITIVE, f64::MIN_POSITIVE),
            (1.0, f64::INFINITY),
        ] {
            let c = cell(rate, per);
            assert!(c.interval >= 1 && c.tolerance >= c.interval, "{rate}/{per}");
            assert!(c.tolerance <= 10 * 365 * 86_400 * MICROS, "{rate}/{per}");
            for backlog in [0, 1, c.interval, c.tolerance, u64::MAX] {
                let carried = c.carried(backlog, 1);
                assert!(carried <= c.tolerance);
                let _ = c.carried(backlog, u64::MAX);
                let _ = c.admit(carried);
                let _ = c.admit(u64::MAX);
                let info = c.admitted(u64::MAX);
                assert!(info.remaining <= info.limit);
                assert!(c.refused(u64::MAX).reset_secs >= 1);
            }
        }
        // A million a millisecond: a burst of 1000 (the window's microseconds), then 1 per µs.
        let c = cell(1e9, 0.001);
        assert_eq!((c.interval, c.burst()), (1, 1000));
        assert!(Cell::of(&limits(0.0, 1.0)).is_none());
        assert!(Cell::of(&limits(f64::NAN, 1.0)).is_none());
    }

    #[test]
    fn decisions_follow_the_script_answer() {
        let c = Some(cell(2.0, 1.0));
        assert!(matches!(
            decide(c, (0, 1_000_000, 1)),
            Decision::RateExceeded(RateInfo { remaining: 0, .. })
        ));
        assert_eq!(decide(c, (1, 500_000, 0)), Decision::QuotaExceeded);
        assert_eq!(decide(None, (1, 0, 0)), Decision::QuotaExceeded);
        assert_eq!(decide(None, (1, 0, 1)), Decision::Allowed(None));
        assert!(matches!(
            decide(c, (1, -5, 1)),
            Decision::Allowed(Some(RateInfo {
                limit: 2,
                remaining: 2,
                ..
            }))
        ));
    }
}
