//! The commit → ACK histogram as plain counts per group, beside the Prometheus family: the
//! `prometheus-client` family does not let its contents be read back, and the console
//! (docs/console.md) draws the histogram from JSON, not from the exposition text.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// Upper bounds (seconds) of the buckets, shared with `portcullis_sync_propagation_seconds`.
pub const BOUNDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One count per bound, and one more for what is above the largest.
const SLOTS: usize = BOUNDS.len() + 1;

#[derive(Debug, Clone, Copy)]
struct Counts {
    slots: [u64; SLOTS],
    sum: f64,
}

/// What this replica has observed since it started, per node group.
#[derive(Debug, Default)]
pub struct PropagationCounts {
    groups: Mutex<BTreeMap<String, Counts>>,
}

/// One group's histogram: `counts[i]` observations were at most `BOUNDS[i]` seconds and above
/// the bound before it; the last count is of those above every bound.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupPropagation {
    pub group: String,
    pub count: u64,
    pub sum_seconds: f64,
    pub counts: Vec<u64>,
}

impl PropagationCounts {
    pub fn observe(&self, group: &str, seconds: f64) {
        let slot = BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BOUNDS.len());
        let mut groups = self.lock();
        let counts = groups.entry(group.to_owned()).or_insert(Counts {
            slots: [0; SLOTS],
            sum: 0.0,
        });
        counts.slots[slot] += 1;
        counts.sum += seconds;
    }

    /// Every group observed so far, by name.
    pub fn snapshot(&self) -> Vec<GroupPropagation> {
        self.lock()
            .iter()
            .map(|(group, c)| GroupPropagation {
                group: group.clone(),
                count: c.slots.iter().sum(),
                sum_seconds: c.sum,
                counts: c.slots.to_vec(),
            })
            .collect()
    }

    /// Counts stay usable after a panic elsewhere: a poisoned lock holds whole numbers still.
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Counts>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn observations_land_in_the_bucket_of_their_upper_bound() {
        let p = PropagationCounts::default();
        p.observe("eu", 0.001);
        p.observe("eu", 0.0011);
        p.observe("eu", 30.0);
        p.observe("default", 0.2);
        let snap = p.snapshot();
        assert_eq!(
            snap.iter().map(|g| g.group.as_str()).collect::<Vec<_>>(),
            ["default", "eu"]
        );
        let eu = &snap[1];
        assert_eq!(eu.count, 3);
        assert_eq!(eu.counts.len(), BOUNDS.len() + 1);
        assert_eq!((eu.counts[0], eu.counts[1], eu.counts[13]), (1, 1, 1));
        assert!((eu.sum_seconds - 30.0021).abs() < 1e-9);
        assert_eq!(snap[0].counts[7], 1, "0.2 s is in the bucket up to 0.25 s");
    }
}
