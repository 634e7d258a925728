//! The sliding log (`--rate-limiter sliding-log`, Tyk's default limiter; docs/limits.md): one
//! sorted-set entry per admitted request, so at most `rate` requests are admitted in ANY
//! `per`-second window. Exact, at the cost of memory and work that grow with the rate.

use std::io::Write;
use std::sync::Arc;

use redis::RedisWrite;

use super::gcra::QUOTA;
use super::script::{self, LuaScript, NUMBER_LEN};
use super::{Decision, Limits, Outcome, RateInfo};
use crate::redis_link::RedisLink;

/// (rate admitted, rate remaining, ms until a slot frees, quota admitted, quota remaining).
type ScriptAnswer = (i64, i64, i64, i64, i64);

const SCRIPT: &str = r"
local allowed_rate, remaining, reset_ms = 1, -1, 0
local rate = tonumber(ARGV[3])
local now = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - per)
  local n = redis.call('ZCARD', KEYS[1])
  if n >= rate then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {0, 0, math.max(0, tonumber(oldest[2]) + per - now), 1, -1}
  end
  redis.call('ZADD', KEYS[1], now, ARGV[6])
  redis.call('PEXPIRE', KEYS[1], per)
  remaining = rate - n - 1
  reset_ms = per
end
local qmax = tonumber(ARGV[4])
if qmax > 0 then
  local used = redis.call('INCR', KEYS[2])
  if used == 1 and tonumber(ARGV[5]) > 0 then
    redis.call('EXPIRE', KEYS[2], ARGV[5])
  end
  if used > qmax then
    redis.call('DECR', KEYS[2])
    if rate > 0 then redis.call('ZREM', KEYS[1], ARGV[6]) end
    return {1, remaining, reset_ms, 0, 0}
  end
  return {1, remaining, reset_ms, 1, qmax - used}
end
return {1, remaining, reset_ms, 1, -1}
";

const LOG: &str = "rl:";

pub(super) struct SlidingLog {
    script: LuaScript,
}

impl Default for SlidingLog {
    fn default() -> Self {
        Self {
            script: LuaScript::new(SCRIPT),
        }
    }
}

impl SlidingLog {
    pub(super) async fn check(&self, redis: Option<&Arc<RedisLink>>, limits: &Limits) -> Outcome {
        let pass = |u| (u, Decision::Allowed(None));
        let (link, conn) = script::connect(redis).map_err(pass)?;
        let scope = limits.scope.as_str();
        // The gateway's clock: gateways of a region should run NTP.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (rate, per_ms) = limits.window();
        let room = script::key_len(link, LOG, scope)
            + script::key_len(link, QUOTA, scope)
            + 7 * NUMBER_LEN;
        let mut cmd = self.script.command(2, 6, room);
        script::key(&mut cmd, link, LOG, scope);
        script::key(&mut cmd, link, QUOTA, scope);
        cmd.arg(now_ms)
            .arg(per_ms)
            .arg(rate)
            .arg(limits.quota_max)
            .arg(limits.quota_renewal_rate);
        {
            // The entry must be unique, or two requests in one millisecond would be one entry.
            let mut member = cmd.writer_for_next_arg();
            let _ = write!(member, "{now_ms}-{}", rand::random::<u64>());
        }
        let (rate_ok, remaining, reset_ms, quota_ok, _quota_left): ScriptAnswer =
            self.script.run(link, conn, &cmd).await.map_err(pass)?;
        // Counters are plain numbers in Redis (a script must update them atomically, so they
        // are not sealed): whoever can write there can lift or exhaust a limit, but the headers
        // never claim more than the window allows.
        let info = RateInfo {
            limit: rate,
            remaining: u64::try_from(remaining).unwrap_or(0).min(rate),
            reset_secs: u64::try_from(reset_ms)
                .unwrap_or(0)
                .min(per_ms)
                .div_ceil(1000),
        };
        if rate_ok == 0 {
            return Ok(Decision::RateExceeded(info));
        }
        if quota_ok == 0 {
            return Ok(Decision::QuotaExceeded);
        }
        Ok(Decision::Allowed((rate > 0).then_some(info)))
    }
}
