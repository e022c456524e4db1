//! The in-memory schedule of the durable outbox: which outbox records are due when, per
//! gpeer, and which are being applied. The records themselves live in the catalog's
//! `outbox` column family; this index is rebuilt from it at start, so losing it loses
//! nothing.
//!
//! Tolerated inconsistency: an index entry whose record was already removed (unbind, or a
//! completed apply racing a rebuild) is dropped when a worker finds no record for it.

use std::collections::{BTreeSet, HashMap, HashSet};

/// `gpair ‖ 0 ‖ path`, the outbox key.
pub type ItemKey = Vec<u8>;

#[derive(Default)]
pub struct Queue {
    /// gpeer → (due_ms, seq, key)
    due: HashMap<String, BTreeSet<(i64, u64, ItemKey)>>,
    /// key → (gpeer, due_ms, seq)
    index: HashMap<ItemKey, (String, i64, u64)>,
    in_flight: HashSet<ItemKey>,
    /// Keys re-enqueued while in flight: apply again when the current attempt ends.
    redo: HashSet<ItemKey>,
    /// Keys whose last attempt failed permanently (shown by `sync status`).
    failing: HashSet<ItemKey>,
    /// Keys of pending renames: work under their destination waits for them.
    renames: HashSet<ItemKey>,
    seq: u64,
}

impl Queue {
    /// Schedules `key` at `due_ms` (or keeps the earlier time if already scheduled).
    pub fn schedule(&mut self, gpeer: &str, key: ItemKey, due_ms: i64, is_rename: bool) {
        if is_rename {
            self.renames.insert(key.clone());
        }
        if self.in_flight.contains(&key) {
            self.redo.insert(key);
            return;
        }
        if let Some((g, d, s)) = self.index.get(&key).cloned() {
            if d <= due_ms && g == gpeer {
                return;
            }
            if let Some(set) = self.due.get_mut(&g) {
                set.remove(&(d, s, key.clone()));
            }
        }
        self.seq += 1;
        let seq = self.seq;
        self.due
            .entry(gpeer.to_owned())
            .or_default()
            .insert((due_ms, seq, key.clone()));
        self.index.insert(key, (gpeer.to_owned(), due_ms, seq));
    }

    /// Takes the earliest due item of a gpeer that is not paused, skipping items under a
    /// pending rename destination. Returns the key, or the earliest future due time.
    pub fn pop_ready(
        &mut self,
        now_ms: i64,
        paused: &HashSet<String>,
    ) -> Result<ItemKey, Option<i64>> {
        let mut next: Option<i64> = None;
        let mut chosen: Option<(String, (i64, u64, ItemKey))> = None;
        for (gpeer, set) in &self.due {
            if paused.contains(gpeer) {
                continue;
            }
            for item in set.iter() {
                if item.0 > now_ms {
                    next = Some(next.map_or(item.0, |n| n.min(item.0)));
                    break;
                }
                if self.blocked_by_rename(&item.2) {
                    continue;
                }
                if chosen
                    .as_ref()
                    .is_none_or(|(_, c)| (item.0, item.1) < (c.0, c.1))
                {
                    chosen = Some((gpeer.clone(), item.clone()));
                }
                break;
            }
        }
        match chosen {
            Some((gpeer, item)) => {
                if let Some(set) = self.due.get_mut(&gpeer) {
                    set.remove(&item);
                }
                self.index.remove(&item.2);
                self.in_flight.insert(item.2.clone());
                Ok(item.2)
            }
            None => Err(next),
        }
    }

    /// Takes up to `max` more ready items of `gpeer` whose keys start with `prefix` (to
    /// apply together with one already taken).
    pub fn pop_more(
        &mut self,
        gpeer: &str,
        prefix: &[u8],
        now_ms: i64,
        max: usize,
    ) -> Vec<ItemKey> {
        let Some(set) = self.due.get(gpeer) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        for item in set.iter() {
            if taken.len() >= max || item.0 > now_ms {
                break;
            }
            if item.2.starts_with(prefix)
                && !self.renames.contains(&item.2)
                && !self.blocked_by_rename(&item.2)
            {
                taken.push(item.clone());
            }
        }
        let mut keys = Vec::with_capacity(taken.len());
        if let Some(set) = self.due.get_mut(gpeer) {
            for item in taken {
                set.remove(&item);
                self.index.remove(&item.2);
                self.in_flight.insert(item.2.clone());
                keys.push(item.2);
            }
        }
        keys
    }

    /// Whether an ancestor directory of `key` is the destination of a pending rename.
    fn blocked_by_rename(&self, key: &[u8]) -> bool {
        if self.renames.is_empty() || self.renames.contains(key) {
            return false;
        }
        let mut end = key.len();
        while let Some(i) = key[..end].iter().rposition(|&b| b == b'/' || b == 0) {
            if key[i] == 0 {
                return false;
            }
            if self.renames.contains(&key[..i]) {
                return true;
            }
            end = i;
        }
        false
    }

    /// The attempt on `key` ended. Returns true when it was re-enqueued meanwhile.
    pub fn finish(&mut self, key: &[u8]) -> bool {
        self.in_flight.remove(key);
        self.renames.remove(key);
        self.redo.remove(key)
    }

    pub fn set_failing(&mut self, key: &[u8], failing: bool) {
        if failing {
            self.failing.insert(key.to_vec());
        } else {
            self.failing.remove(key);
        }
    }

    /// Forgets everything of keys starting with `prefix` (unbind).
    pub fn remove_prefix(&mut self, prefix: &[u8]) {
        let keys: Vec<ItemKey> = self
            .index
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        for k in keys {
            if let Some((g, d, s)) = self.index.remove(&k) {
                if let Some(set) = self.due.get_mut(&g) {
                    set.remove(&(d, s, k.clone()));
                }
            }
        }
        self.redo.retain(|k| !k.starts_with(prefix));
        self.failing.retain(|k| !k.starts_with(prefix));
        self.renames.retain(|k| !k.starts_with(prefix));
    }

    /// (pending, failing) of keys starting with `prefix`.
    pub fn counts(&self, prefix: &[u8]) -> (u64, u64) {
        let pending = self.index.keys().filter(|k| k.starts_with(prefix)).count()
            + self
                .in_flight
                .iter()
                .filter(|k| k.starts_with(prefix))
                .count();
        let failing = self
            .failing
            .iter()
            .filter(|k| k.starts_with(prefix))
            .count();
        (pending as u64, failing as u64)
    }

    pub fn failing_keys(&self, prefix: &[u8], limit: usize) -> Vec<ItemKey> {
        let mut keys: Vec<ItemKey> = self
            .failing
            .iter()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        keys.sort();
        keys.truncate(limit);
        keys
    }

    pub fn len(&self) -> usize {
        self.index.len() + self.in_flight.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> ItemKey {
        let mut v = b"p\0".to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn coalesces_and_orders_by_due_time() {
        let mut q = Queue::default();
        q.schedule("g", k("a"), 10, false);
        q.schedule("g", k("a"), 5, false);
        q.schedule("g", k("a"), 50, false);
        q.schedule("g", k("b"), 7, false);
        assert_eq!(q.len(), 2);
        let none = HashSet::new();
        assert_eq!(q.pop_ready(100, &none), Ok(k("a")));
        assert_eq!(q.pop_ready(100, &none), Ok(k("b")));
        assert_eq!(q.pop_ready(100, &none), Err(None));
    }

    #[test]
    fn paused_gpeers_and_future_items_wait() {
        let mut q = Queue::default();
        q.schedule("down", k("a"), 0, false);
        q.schedule("up", k("b"), 500, false);
        let paused: HashSet<String> = ["down".to_string()].into();
        assert_eq!(q.pop_ready(100, &paused), Err(Some(500)));
        assert_eq!(q.pop_ready(600, &paused), Ok(k("b")));
        assert_eq!(q.pop_ready(600, &HashSet::new()), Ok(k("a")));
    }

    #[test]
    fn re_enqueue_while_in_flight_is_redone() {
        let mut q = Queue::default();
        q.schedule("g", k("a"), 0, false);
        let key = q.pop_ready(1, &HashSet::new()).unwrap();
        q.schedule("g", k("a"), 0, false);
        assert!(q.finish(&key));
        assert!(!q.finish(&key));
    }

    #[test]
    fn work_under_a_pending_rename_waits_for_it() {
        let mut q = Queue::default();
        q.schedule("g", k("new/x"), 0, false);
        q.schedule("g", k("new"), 1, true);
        let none = HashSet::new();
        assert_eq!(q.pop_ready(5, &none), Ok(k("new")));
        assert_eq!(
            q.pop_ready(5, &none),
            Err(None),
            "new/x waits while the rename is in flight"
        );
        q.finish(&k("new"));
        assert_eq!(q.pop_ready(5, &none), Ok(k("new/x")));
    }
}
