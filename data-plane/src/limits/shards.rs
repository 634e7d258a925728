//! Per-key state of the in-process limiters (`local.rs`, `lease.rs`): split into shards so
//! concurrent requests for different keys rarely wait on one lock, each shard kept in least
//! recently used order so its owner can drop idle entries from the old end, and bounded.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use hashlink::LinkedHashMap;

const SHARDS: usize = 64;

pub(super) type Shard<V> = LinkedHashMap<String, V>;

pub(super) struct Shards<V> {
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<Shard<V>>]>,
    per_shard: usize,
}

impl<V> Shards<V> {
    /// Room for about `entries` keys in all.
    pub(super) fn with_capacity(entries: usize) -> Self {
        Self {
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            per_shard: entries.div_ceil(SHARDS).max(1),
        }
    }

    /// Microseconds on the gateway's monotonic clock: wall-clock jumps do not move limits.
    pub(super) fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The shard that holds `scope`.
    pub(super) fn lock(&self, scope: &str) -> MutexGuard<'_, Shard<V>> {
        let i = (self.hasher.hash_one(scope) % SHARDS as u64) as usize;
        // A panic while holding the lock leaves plain numbers behind: still usable.
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `scope` at the recent end of its (locked) shard, first forgetting the least
    /// recently used entry when the shard is full.
    pub(super) fn insert(&self, shard: &mut Shard<V>, scope: &str, value: V) {
        if shard.len() >= self.per_shard {
            shard.pop_front();
        }
        shard.insert(scope.to_owned(), value);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.len()))
            .sum()
    }
}
