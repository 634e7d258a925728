//! GCRA in the gateway's memory (`--rate-limiter local`; docs/limits.md), like Tyk's DRL: the
//! rate limit costs no Redis round trip, and each gateway enforces the FULL rate on its own, so
//! N gateways of a region admit up to N × `rate`. Quotas are still counted in the regional
//! Redis: one script call per request of a key with a quota, exact across the region, or with
//! `--quota-lease` in leases of several requests (`lease.rs`), never more than the quota.
//!
//! Memory is bounded: at most [`MAX_CELLS`] counters, in shards each kept in least recently
//! used order. A counter whose TAT has passed is the same as none, so idle counters are dropped
//! from the old end as requests come; when a shard is full its least recently used counter is
//! forgotten (that key starts afresh, with a full burst).

use std::sync::Arc;

use super::gcra::{Cell, RedisGcra};
use super::lease::Leases;
use super::shards::Shards;
use super::{Decision, Limits, Outcome};
use crate::redis_link::RedisLink;

/// Counters kept per gateway: about 200 bytes each with its scope, so some 50 MB at most.
pub(super) const MAX_CELLS: usize = 1 << 18;
/// Idle counters dropped per request, from the least recently used end: enough to keep pace
/// with the counters requests add, bounded so no request pays for a long sweep.
const EXPIRE_PER_CALL: usize = 2;

struct Stored {
    /// Theoretical arrival time, µs on the counters' clock (`Shards::now`).
    tat: u64,
    /// The interval the TAT was counted with (see `Cell::carried`).
    interval: u64,
}

pub(super) struct LocalGcra {
    cells: Shards<Stored>,
    quota: Quota,
}

/// How the local limiter counts quotas.
enum Quota {
    /// One script call per request.
    Exact(RedisGcra),
    Leased(Leases),
}

impl Default for LocalGcra {
    fn default() -> Self {
        Self::with_capacity(MAX_CELLS)
    }
}

impl LocalGcra {
    fn with_capacity(cells: usize) -> Self {
        Self {
            cells: Shards::with_capacity(cells),
            quota: Quota::Exact(RedisGcra::default()),
        }
    }

    /// Quotas reserved `max` requests at a time at most (`--quota-lease`).
    pub(super) fn with_quota_lease(mut self, max: u32) -> Self {
        self.quota = Quota::Leased(Leases::new(max));
        self
    }

    /// One request against the key's counter: the backlog after it when admitted, the
    /// backlog that refused it otherwise.
    fn take(&self, scope: &str, cell: Cell) -> Result<u64, u64> {
        let now = self.cells.now();
        let mut shard = self.cells.lock(scope);
        for _ in 0..EXPIRE_PER_CALL {
            match shard.front() {
                Some((_, oldest)) if oldest.tat <= now => {
                    shard.pop_front();
                }
                _ => break,
            }
        }
        if let Some(stored) = shard.to_back(scope) {
            let backlog = cell.carried(stored.tat.saturating_sub(now), stored.interval);
            let after = cell.admit(backlog).ok_or(backlog)?;
            *stored = Stored {
                tat: now.saturating_add(after),
                interval: cell.interval,
            };
            return Ok(after);
        }
        let after = cell.admit(0).ok_or(0u64)?;
        self.cells.insert(
            &mut shard,
            scope,
            Stored {
                tat: now.saturating_add(after),
                interval: cell.interval,
            },
        );
        Ok(after)
    }

    /// Gives back the slot [`Self::take`] handed out (the quota refused the request).
    fn give_back(&self, scope: &str, cell: Cell) {
        if let Some(stored) = self.cells.lock(scope).get_mut(scope)
            && stored.interval == cell.interval
        {
            stored.tat = stored.tat.saturating_sub(cell.interval);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.cells.len()
    }

    pub(super) async fn check(&self, redis: Option<&Arc<RedisLink>>, limits: &Limits) -> Outcome {
        let cell = Cell::of(limits);
        let info = match cell {
            None => None,
            Some(c) => match self.take(&limits.scope, c) {
                Ok(after) => Some(c.admitted(after)),
                Err(backlog) => return Ok(Decision::RateExceeded(c.refused(backlog))),
            },
        };
        let admitted = Decision::Allowed(info);
        if limits.quota_max <= 0 {
            return Ok(admitted);
        }
        // Without Redis the quota is not enforced, but the local rate limit still is.
        let quota_ok = match &self.quota {
            Quota::Exact(exact) => exact.call(redis, None, limits).await.map(|a| a.2 != 0),
            Quota::Leased(leases) => leases.take(redis, limits).await,
        }
        .map_err(|u| (u, admitted))?;
        if !quota_ok {
            if let Some(c) = cell {
                self.give_back(&limits.scope, c);
            }
            return Ok(Decision::QuotaExceeded);
        }
        Ok(admitted)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::limits;
    use super::*;

    #[tokio::test]
    async fn enforces_the_rate_in_process_and_counts_the_quota_without_redis_as_unenforced() {
        let local = LocalGcra::default();
        let l = limits(3.0, 3600.0);
        let mut admitted = 0;
        for _ in 0..5 {
            match local.check(None, &l).await {
                Ok(Decision::Allowed(Some(_))) => admitted += 1,
                Ok(Decision::RateExceeded(info)) => assert_eq!(info.limit, 3),
                other => panic!("{:?}", other.ok()),
            }
        }
        assert_eq!(admitted, 3, "no Redis needed for the rate");
        let mut with_quota = limits(3.0, 3600.0);
        with_quota.scope = "q".into();
        with_quota.quota_max = 1;
        assert!(matches!(
            local.check(None, &with_quota).await,
            Err((super::super::Unanswered::NoLink, Decision::Allowed(Some(_))))
        ));
    }

    #[test]
    fn a_given_back_slot_can_be_taken_again() {
        let local = LocalGcra::default();
        let c = Cell::of(&limits(1.0, 3600.0)).unwrap();
        assert!(local.take("k", c).is_ok());
        assert!(local.take("k", c).is_err());
        local.give_back("k", c);
        assert!(local.take("k", c).is_ok());
        assert!(local.take("k", c).is_err());
        assert!(local.take("other", c).is_ok(), "counters are per scope");
    }

    #[test]
    fn memory_is_bounded_and_idle_counters_go() {
        let local = LocalGcra::with_capacity(256);
        let c = Cell::of(&limits(1.0, 3600.0)).unwrap();
        for i in 0..10_000 {
            assert!(local.take(&format!("key-{i}"), c).is_ok());
        }
        assert!(local.len() <= 256, "{}", local.len());
        // Counters that are already back to idle are dropped by later requests.
        let idle = LocalGcra::with_capacity(MAX_CELLS);
        let fast = Cell {
            interval: 1,
            tolerance: 1,
        };
        for i in 0..1000 {
            let _ = idle.take(&format!("key-{i}"), fast);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        // 200 new counters, each request dropping up to two idle ones.
        for i in 0..200 {
            let _ = idle.take(&format!("new-{i}"), fast);
        }
        assert!(idle.len() < 1000, "{}", idle.len());
    }
}
