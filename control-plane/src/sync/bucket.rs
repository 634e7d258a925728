//! Token buckets keyed by source address or node id, for the Join, snapshot and session-report
//! limits.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys kept before idle (full) buckets are dropped; a flood of distinct keys cannot grow the
/// map without bound.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub struct Buckets<K> {
    /// Tokens earned per second; `None`: unlimited.
    rate: Option<f64>,
    burst: f64,
    map: Mutex<HashMap<K, (f64, Instant)>>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    pub fn new(rate_per_sec: f64, burst: u32) -> Self {
        Self {
            rate: (rate_per_sec.is_finite() && rate_per_sec > 0.0).then_some(rate_per_sec),
            burst: f64::from(burst.max(1)),
            map: Mutex::default(),
        }
    }

    /// One token per `every`; zero means unlimited.
    pub fn every(every: Duration, burst: u32) -> Self {
        let rate = if every.is_zero() {
            f64::INFINITY
        } else {
            1.0 / every.as_secs_f64()
        };
        Self::new(rate, burst)
    }

    /// Takes a token for `key`, or says how long until one is available.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        self.take_n(key, 1)
    }

    /// Takes `n` tokens at once for `key` (all or none), or says how long until they are
    /// available. More than the burst is never available.
    pub fn take_n(&self, key: &K, n: u32) -> Result<(), Duration> {
        let n = f64::from(n);
        let Some(rate) = self.rate else {
            return Ok(());
        };
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let burst = self.burst;
            map.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        let (tokens, at) = map.entry(key.clone()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(self.burst);
        *at = now;
        if *tokens >= n {
            *tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                ((n - *tokens) / rate).min(86_400.0),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_a_wait() {
        let b = Buckets::new(1.0, 3);
        for _ in 0..3 {
            assert!(b.take(&"a").is_ok());
        }
        let wait = b.take(&"a").unwrap_err();
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1));
        assert!(b.take(&"b").is_ok(), "another key has its own bucket");
    }

    #[test]
    fn zero_period_is_unlimited() {
        let b = Buckets::every(Duration::ZERO, 1);
        for _ in 0..100 {
            assert!(b.take(&1).is_ok());
        }
    }
}
