//! Round robin over an API's `proxy.target_list` (Tyk's `enable_load_balancing`), with
//! passive health: a target the gateway could not connect to is passed over for a while, so
//! one dead upstream costs its share of requests a retry rather than an error
//! (docs/gateway.md, "Load balancing").

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::router::Target;

/// Most targets one request tries: a list of 256 dead upstreams must not cost 256 connects
/// per request.
pub const MAX_ATTEMPTS: usize = 3;

/// How long a target that refused a connection is passed over.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Member {
    target: Target,
    /// Milliseconds on `clock()` until which the target is passed over; 0: healthy.
    down_until: AtomicU64,
}

/// The targets of one balanced API. Built with the routing table, so a configuration change
/// starts every target healthy.
#[derive(Debug)]
pub struct Balancer {
    members: Vec<Member>,
    next: AtomicUsize,
}

/// Milliseconds since the first call: cheap, monotonic, and never 0 after the first
/// millisecond (0 means healthy).
fn clock() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1)
}

impl Balancer {
    /// `targets` is never empty: validation refuses an empty `target_list`.
    pub fn new(targets: Vec<Target>) -> Self {
        Self {
            members: targets
                .into_iter()
                .map(|target| Member {
                    target,
                    down_until: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn first(&self) -> &Target {
        &self.members[0].target
    }

    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.members.iter().map(|m| &m.target)
    }

    /// The order in which one request tries the targets: round robin from the next turn,
    /// healthy targets first, then (when every one is down) the rest in the same order, since
    /// a guess beats refusing outright.
    pub fn plan(&self) -> Plan<'_> {
        let n = self.members.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        Plan {
            balancer: self,
            start,
            step: 0,
            now: clock(),
            healthy_pass: true,
            tried_any: false,
        }
    }

    /// The target at `index` could not be reached: pass it over for `DOWN_FOR`.
    pub fn mark_down(&self, index: usize) {
        if let Some(m) = self.members.get(index) {
            let until = clock().saturating_add(DOWN_FOR.as_millis() as u64);
            m.down_until.store(until, Ordering::Relaxed);
            tracing::warn!(upstream = %m.target.authority, seconds = DOWN_FOR.as_secs(), "upstream refused the connection: passed over");
        }
    }

    /// The target answered: it is healthy again.
    pub fn mark_up(&self, index: usize) {
        if let Some(m) = self.members.get(index)
            && m.down_until.load(Ordering::Relaxed) != 0
        {
            m.down_until.store(0, Ordering::Relaxed);
        }
    }
}

/// The targets one request may try, in order, each at most once.
pub struct Plan<'a> {
    balancer: &'a Balancer,
    start: usize,
    step: usize,
    now: u64,
    healthy_pass: bool,
    tried_any: bool,
}

impl<'a> Iterator for Plan<'a> {
    /// (index, target)
    type Item = (usize, &'a Target);

    fn next(&mut self) -> Option<Self::Item> {
        let members = &self.balancer.members;
        let n = members.len();
        loop {
            if self.step == n {
                // The second pass tries the targets that were down, only if the first found
                // none healthy.
                if !self.healthy_pass || self.tried_any {
                    return None;
                }
                self.healthy_pass = false;
                self.step = 0;
            }
            let index = (self.start + self.step) % n;
            self.step += 1;
            let down = members[index].down_until.load(Ordering::Relaxed) > self.now;
            if down != self.healthy_pass {
                self.tried_any = true;
                return Some((index, &members[index].target));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(n: usize) -> Balancer {
        Balancer::new(
            (0..n)
                .map(|i| {
                    let authority = format!("127.0.0.1:{}", 1000 + i);
                    Target {
                        scheme: http::uri::Scheme::HTTP,
                        host: http::HeaderValue::from_str(&authority).unwrap(),
                        authority: authority.parse().unwrap(),
                        base: String::new(),
                        h2c: false,
                    }
                })
                .collect(),
        )
    }

    fn order(b: &Balancer) -> Vec<usize> {
        b.plan().map(|(i, _)| i).collect()
    }

    #[test]
    fn turns_rotate_and_each_plan_tries_every_target_once() {
        let b = balancer(3);
        assert_eq!(order(&b), vec![0, 1, 2]);
        assert_eq!(order(&b), vec![1, 2, 0]);
        assert_eq!(order(&b), vec![2, 0, 1]);
        assert_eq!(order(&b), vec![0, 1, 2]);
    }

    #[test]
    fn down_targets_are_passed_over_until_all_are_down() {
        let b = balancer(3);
        b.mark_down(1);
        assert_eq!(order(&b), vec![0, 2]);
        assert_eq!(order(&b), vec![2, 0]);
        b.mark_down(0);
        b.mark_down(2);
        // Everything down: still tried, in turn order.
        assert_eq!(order(&b), vec![2, 0, 1]);
        b.mark_up(0);
        assert_eq!(order(&b), vec![0]);
    }
}
