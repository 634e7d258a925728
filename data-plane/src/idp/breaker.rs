//! A circuit breaker and a cap on calls in flight, per provider host (`scheme://host:port`).
//! After `failures` consecutive outages (timeouts, connection failures, 5xx) calls to the host
//! fail at once for `open`; then one trial call goes through, and its outcome closes the breaker
//! or opens it again. A provider that is down thus costs a request nothing after the first few,
//! and a recovered one is used again within `open`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashlink::LruCache;
use tokio::sync::Semaphore;

use super::lock;

/// Hosts remembered; URLs come from API definitions, so this is far above any real count.
const HOSTS: usize = 1000;
/// Calls in flight to one host; beyond, a caller waits up to `BUSY_WAIT` for a slot.
pub(super) const IN_FLIGHT_PER_HOST: usize = 64;

struct Host {
    failures: u32,
    open_until: Option<Instant>,
    trial: bool,
    slots: Arc<Semaphore>,
}

impl Host {
    fn new() -> Self {
        Self {
            failures: 0,
            open_until: None,
            trial: false,
            slots: Arc::new(Semaphore::new(IN_FLIGHT_PER_HOST)),
        }
    }
}

pub(super) struct Breakers {
    hosts: Mutex<LruCache<String, Host>>,
    failures: u32,
    open: Duration,
}

/// Leave to make one call; report its outcome with [`Breakers::report`]. Dropped unreported
/// (the caller went away), a trial permit lets the next caller try.
pub(super) struct Permit<'a> {
    breakers: &'a Breakers,
    host: String,
    trial: bool,
    reported: bool,
    pub(super) slots: Arc<Semaphore>,
}

impl Breakers {
    pub(super) fn new(failures: u32, open: Duration) -> Self {
        Self {
            hosts: Mutex::new(LruCache::new(HOSTS)),
            failures: failures.max(1),
            open,
        }
    }

    /// `None` while the breaker of `host` is open (or its trial call is in flight).
    pub(super) fn admit(&self, host: &str) -> Option<Permit<'_>> {
        let mut hosts = lock(&self.hosts);
        if !hosts.contains_key(host) {
            hosts.insert(host.to_owned(), Host::new());
        }
        let h = hosts.get_mut(host)?;
        let mut trial = false;
        if let Some(until) = h.open_until {
            if Instant::now() < until || h.trial {
                return None;
            }
            h.trial = true;
            trial = true;
        }
        Some(Permit {
            breakers: self,
            host: host.to_owned(),
            trial,
            reported: false,
            slots: h.slots.clone(),
        })
    }

    /// Records the outcome of a call; `true` when this opened the breaker.
    pub(super) fn report(&self, mut permit: Permit<'_>, outage: bool) -> bool {
        permit.reported = true;
        let mut hosts = lock(&self.hosts);
        if !hosts.contains_key(&permit.host) {
            hosts.insert(permit.host.clone(), Host::new());
        }
        let Some(h) = hosts.get_mut(&permit.host) else {
            return false;
        };
        if permit.trial {
            h.trial = false;
        }
        if !outage {
            h.failures = 0;
            h.open_until = None;
            return false;
        }
        h.failures = h.failures.saturating_add(1);
        // A call that started before the breaker opened and fails after does not reopen it.
        if permit.trial || (h.open_until.is_none() && h.failures >= self.failures) {
            h.open_until = Some(Instant::now() + self.open);
            return true;
        }
        false
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.trial
            && !self.reported
            && let Some(h) = lock(&self.breakers.hosts).get_mut(&self.host)
        {
            h.trial = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_outages_and_one_trial_closes_it() {
        let b = Breakers::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            let p = b.admit("http://h").unwrap();
            assert!(!b.report(p, true));
        }
        // A success resets the count.
        let p = b.admit("http://h").unwrap();
        b.report(p, false);
        for i in 0..3 {
            let p = b.admit("http://h").unwrap();
            assert_eq!(b.report(p, true), i == 2);
        }
        assert!(b.admit("http://h").is_none());
        assert!(b.admit("http://other").is_some());
        std::thread::sleep(Duration::from_millis(60));
        let trial = b.admit("http://h").unwrap();
        assert!(b.admit("http://h").is_none(), "one trial at a time");
        drop(trial);
        let trial = b.admit("http://h").unwrap();
        assert!(b.report(trial, true), "a failed trial reopens");
        assert!(b.admit("http://h").is_none());
        std::thread::sleep(Duration::from_millis(60));
        let trial = b.admit("http://h").unwrap();
        b.report(trial, false);
        assert!(b.admit("http://h").is_some());
        assert!(b.admit("http://h").is_some());
    }
}
