//! The circuit breaker in front of the plugin server: after [`FAILURES`] consecutive outages
//! (connection failures, timeouts, `UNAVAILABLE`) calls fail at once for [`OPEN_FOR`]; then one
//! trial call goes through and its outcome closes the breaker or opens it again. A plugin
//! server that is down thus costs a request nothing after the first few, and a recovered one
//! is used again within seconds.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const FAILURES: u32 = 5;
pub const OPEN_FOR: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
struct State {
    failures: u32,
    open_until: Option<Instant>,
    trial: bool,
}

#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
}

/// Leave to make one call. Dropped without [`Breaker::report`] (the client went away), a
/// trial permit lets the next caller try.
pub struct Permit<'a> {
    breaker: &'a Breaker,
    trial: bool,
    reported: bool,
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `None` while the breaker is open or its trial call is in flight.
    pub fn admit(&self) -> Option<Permit<'_>> {
        let mut s = self.lock();
        let mut trial = false;
        if let Some(until) = s.open_until {
            if Instant::now() < until || s.trial {
                return None;
            }
            s.trial = true;
            trial = true;
        }
        Some(Permit {
            breaker: self,
            trial,
            reported: false,
        })
    }

    /// Records a call's outcome; `true` when this opened the breaker.
    pub fn report(&self, mut permit: Permit<'_>, outage: bool) -> bool {
        permit.reported = true;
        let mut s = self.lock();
        if permit.trial {
            s.trial = false;
        }
        if !outage {
            s.failures = 0;
            s.open_until = None;
            return false;
        }
        s.failures = s.failures.saturating_add(1);
        // A call that started before the breaker opened and fails after does not reopen it.
        if permit.trial || (s.open_until.is_none() && s.failures >= FAILURES) {
            s.open_until = Some(Instant::now() + OPEN_FOR);
            return true;
        }
        false
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.trial && !self.reported {
            self.breaker.lock().trial = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_outages_and_a_trial_decides() {
        let b = Breaker::default();
        for _ in 0..FAILURES - 1 {
            let p = b.admit().unwrap();
            assert!(!b.report(p, true));
        }
        // A success resets the count.
        let p = b.admit().unwrap();
        b.report(p, false);
        for _ in 0..FAILURES - 1 {
            let p = b.admit().unwrap();
            b.report(p, true);
        }
        let p = b.admit().unwrap();
        assert!(b.report(p, true));
        assert!(b.admit().is_none());
        // Pretend the open period is over.
        b.lock().open_until = Some(Instant::now());
        let trial = b.admit().unwrap();
        assert!(b.admit().is_none(), "one trial at a time");
        drop(trial);
        let trial = b.admit().unwrap();
        b.report(trial, false);
        assert!(b.admit().is_some());
    }
}
