//! Single flight: concurrent callers asking for the same key share one call. An entry lives only
//! while someone waits on it, so the map is bounded by the callers in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::lock;

pub(super) struct Flights<T> {
    map: Mutex<HashMap<String, Arc<OnceCell<T>>>>,
}

impl<T> Default for Flights<T> {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
        }
    }
}

impl<T: Clone> Flights<T> {
    /// The answer of the call in flight for `key`, or of `call` when there is none; `true` when
    /// this caller made the call.
    pub(super) async fn run<F, Fut>(&self, key: &str, call: F) -> (T, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell = lock(&self.map).entry(key.to_owned()).or_default().clone();
        let guard = Guard {
            map: &self.map,
            key,
            cell,
        };
        let mut led = false;
        let answer = guard
            .cell
            .get_or_init(|| {
                led = true;
                call()
            })
            .await
            .clone();
        (answer, led)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

struct Guard<'a, T> {
    map: &'a Mutex<HashMap<String, Arc<OnceCell<T>>>>,
    key: &'a str,
    cell: Arc<OnceCell<T>>,
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        let mut map = lock(self.map);
        // Answered: later callers start afresh. Cancelled: remove only when nobody else waits
        // (the map's and this caller's references); a waiter takes the call over otherwise.
        if map
            .get(self.key)
            .is_some_and(|c| Arc::ptr_eq(c, &self.cell))
            && (self.cell.initialized() || Arc::strong_count(&self.cell) <= 2)
        {
            map.remove(self.key);
        }
    }
}
