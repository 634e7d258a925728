//! Tokens whose signature was checked, by the sha256 of the whole token, so that an RS256 or
//! ES256 token costs one signature check per token rather than per request. Bounded (least
//! recently used out first) and never trusted past the token's `exp` or [`MAX_AGE_SECS`].

use std::sync::Mutex;

use hashlink::LruCache;

/// A verified token is re-verified at least this often, so a key withdrawn at the identity
/// provider (and flushed here) stops working within this bound even for long-lived tokens.
pub const MAX_AGE_SECS: i64 = 300;
const SHARDS: usize = 8;

/// Token digest → (what its claims gave, unix second the entry ends).
type Shard<V> = Mutex<LruCache<[u8; 32], (V, i64)>>;

pub struct VerifiedCache<V> {
    shards: Vec<Shard<V>>,
}

impl<V> std::fmt::Debug for VerifiedCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifiedCache(..)")
    }
}

impl<V: Clone> VerifiedCache<V> {
    pub fn new(capacity: usize) -> Self {
        let per_shard = (capacity / SHARDS).max(1);
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect(),
        }
    }

    fn shard(&self, digest: &[u8; 32]) -> &Shard<V> {
        &self.shards[usize::from(digest[0]) % SHARDS]
    }

    /// The entry for `digest` while `now` is before its end.
    pub fn get(&self, digest: &[u8; 32], now: i64) -> Option<V> {
        let mut shard = self.shard(digest).lock().unwrap_or_else(|p| p.into_inner());
        match shard.get(digest) {
            Some((v, until)) if now < *until => Some(v.clone()),
            Some(_) => {
                shard.remove(digest);
                None
            }
            None => None,
        }
    }

    /// Remembers `v` until `exp` (when the token has one), at most [`MAX_AGE_SECS`] from now.
    pub fn insert(&self, digest: [u8; 32], v: V, now: i64, exp: Option<i64>) {
        let until = exp.map_or(now + MAX_AGE_SECS, |e| e.min(now + MAX_AGE_SECS));
        if until <= now {
            return;
        }
        self.shard(&digest)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, (v, until));
    }

    pub fn clear(&self) {
        for s in &self.shards {
            s.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_end_at_exp_or_the_maximum_age() {
        let c = VerifiedCache::new(64);
        c.insert([1; 32], "a", 1000, Some(1010));
        assert_eq!(c.get(&[1; 32], 1009), Some("a"));
        assert_eq!(c.get(&[1; 32], 1010), None);
        c.insert([2; 32], "b", 1000, None);
        assert_eq!(c.get(&[2; 32], 1000 + MAX_AGE_SECS - 1), Some("b"));
        assert_eq!(c.get(&[2; 32], 1000 + MAX_AGE_SECS), None);
        c.insert([3; 32], "c", 1000, Some(999));
        assert_eq!(c.get(&[3; 32], 1000), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let c = VerifiedCache::new(16);
        for i in 0..=255u8 {
            c.insert([i; 32], i, 0, None);
        }
        let held = (0..=255u8)
            .filter(|i| c.get(&[*i; 32], 1).is_some())
            .count();
        assert!(held <= 16, "{held}");
    }
}
