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

/// `gpair ‖ 0` of an outbox key.
fn gpair_prefix(key: &[u8]) -> Option<&[u8]> {
    key.iter().position(|&b| b == 0).map(|i| &key[..=i])
}

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
    /// Pending renames, destination key → source key. Other work on or under either path
    /// waits for the rename.
    renames: HashMap<ItemKey, ItemKey>,
    /// Source keys of pending renames (with multiplicity).
    sources: HashMap<ItemKey, usize>,
    /// Gpairs (`gpair ‖ 0`) with a rename being applied: their renames run one at a time,
    /// in order, so "move into a directory, then move the directory" lands right on west.
    renaming: HashSet<Vec<u8>>,
    seq: u64,
}

impl Queue {
    /// Schedules `key` at `due_ms` (or keeps the earlier time if already scheduled).
    pub fn schedule(
        &mut self,
        gpeer: &str,
        key: ItemKey,
        due_ms: i64,
        rename_from: Option<ItemKey>,
    ) {
        if let Some(from) = rename_from {
            if let Some(old) = self.renames.insert(key.clone(), from.clone()) {
                self.forget_source(&old);
            }
            *self.sources.entry(from).or_insert(0) += 1;
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
                if self.renames.contains_key(&item.2) {
                    if let Some(g) = gpair_prefix(&item.2) {
                        self.renaming.insert(g.to_vec());
                    }
                }
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
                && !self.renames.contains_key(&item.2)
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

    /// Whether `key` must wait for a pending rename: renames of one gpair run one at a time;
    /// other work on or under a pending rename's source or destination waits for it.
    fn blocked_by_rename(&self, key: &[u8]) -> bool {
        if self.renames.is_empty() {
            return false;
        }
        // A file's SetAttr record waits like work on the file itself.
        if let Some(file) = key.strip_suffix(super::ATTR_SUFFIX) {
            return self.renames.contains_key(file)
                || self.sources.contains_key(file)
                || self.blocked_by_rename(file);
        }
        if self.renames.contains_key(key) {
            return gpair_prefix(key).is_some_and(|g| self.renaming.contains(g));
        }
        if self.sources.contains_key(key) {
            return true;
        }
        let mut end = key.len();
        while let Some(i) = key[..end].iter().rposition(|&b| b == b'/' || b == 0) {
            if key[i] == 0 {
                return false;
            }
            if self.renames.contains_key(&key[..i]) || self.sources.contains_key(&key[..i]) {
                return true;
            }
            end = i;
        }
        false
    }

    fn forget_source(&mut self, from: &[u8]) {
        if let Some(n) = self.sources.get_mut(from) {
            *n -= 1;
            if *n == 0 {
                self.sources.remove(from);
            }
        }
    }

    /// The attempt on `key` ended. Returns true when it was re-enqueued meanwhile.
    pub fn finish(&mut self, key: &[u8]) -> bool {
        self.in_flight.remove(key);
        if let Some(g) = gpair_prefix(key) {
            if self.renames.contains_key(key) {
                self.renaming.remove(g);
            }
        }
        let redo = self.redo.remove(key);
        if !redo {
            // A re-enqueued rename keeps its registration until it runs.
            if let Some(from) = self.renames.remove(key) {
                self.forget_source(&from);
            }
        }
        redo
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
        self.renames.retain(|k, _| !k.starts_with(prefix));
        self.sources.retain(|k, _| !k.starts_with(prefix));
        self.renaming.retain(|k| !k.starts_with(prefix));
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
        q.schedule("g", k("a"), 10, None);
        q.schedule("g", k("a"), 5, None);
        q.schedule("g", k("a"), 50, None);
        q.schedule("g", k("b"), 7, None);
        assert_eq!(q.len(), 2);
        let none = HashSet::new();
        assert_eq!(q.pop_ready(100, &none), Ok(k("a")));
        assert_eq!(q.pop_ready(100, &none), Ok(k("b")));
        assert_eq!(q.pop_ready(100, &none), Err(None));
    }

    #[test]
    fn paused_gpeers_and_future_items_wait() {
        let mut q = Queue::default();
        q.schedule("down", k("a"), 0, None);
        q.schedule("up", k("b"), 500, None);
        let paused: HashSet<String> = ["down".to_string()].into();
        assert_eq!(q.pop_ready(100, &paused), Err(Some(500)));
        assert_eq!(q.pop_ready(600, &paused), Ok(k("b")));
        assert_eq!(q.pop_ready(600, &HashSet::new()), Ok(k("a")));
    }

    #[test]
    fn re_enqueue_while_in_flight_is_redone() {
        let mut q = Queue::default();
        q.schedule("g", k("a"), 0, None);
        let key = q.pop_ready(1, &HashSet::new()).unwrap();
        q.schedule("g", k("a"), 0, None);
        assert!(q.finish(&key));
        assert!(!q.finish(&key));
    }

    #[test]
    fn work_under_a_pending_rename_waits_for_it() {
        let mut q = Queue::default();
        q.schedule("g", k("new/x"), 0, None);
        q.schedule("g", k("new"), 1, Some(k("old")));
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

    #[test]
    fn a_files_setattr_waits_for_a_pending_rename_of_it_or_its_directory() {
        let mut q = Queue::default();
        q.schedule("g", k("d2"), 0, Some(k("d1")));
        let mut attr = k("d2/f");
        attr.extend_from_slice(super::super::ATTR_SUFFIX);
        let mut src_attr = k("d1/f");
        src_attr.extend_from_slice(super::super::ATTR_SUFFIX);
        q.schedule("g", attr.clone(), 0, None);
        q.schedule("g", src_attr.clone(), 0, None);
        let none = HashSet::new();
        assert_eq!(q.pop_ready(10, &none), Ok(k("d2")), "the rename first");
        assert_eq!(
            q.pop_ready(10, &none).ok(),
            None,
            "both SetAttrs wait for it"
        );
        q.finish(&k("d2"));
        let mut got = vec![
            q.pop_ready(10, &none).unwrap(),
            q.pop_ready(10, &none).unwrap(),
        ];
        got.sort();
        let mut want = vec![attr, src_attr];
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn work_under_a_pending_rename_source_waits_for_it() {
        let mut q = Queue::default();
        q.schedule("g", k("dir/sub"), 0, None);
        q.schedule("g", k("dir/sub/x"), 0, None);
        q.schedule("g", k("moved"), 5, Some(k("dir/sub")));
        let none = HashSet::new();
        assert_eq!(
            q.pop_ready(1, &none),
            Err(Some(5)),
            "nothing under the source may run first"
        );
        assert_eq!(q.pop_ready(10, &none), Ok(k("moved")));
        q.finish(&k("moved"));
        assert!(q.pop_ready(10, &none).is_ok());
    }

    #[test]
    fn renames_of_one_gpair_run_one_at_a_time_in_order() {
        let mut q = Queue::default();
        q.schedule("g", k("dir/f"), 1, Some(k("f")));
        q.schedule("g", k("elsewhere/sub"), 2, Some(k("dir")));
        let none = HashSet::new();
        let first = q.pop_ready(5, &none).unwrap();
        assert_eq!(first, k("dir/f"));
        assert_eq!(
            q.pop_ready(5, &none),
            Err(None),
            "the second rename waits for the first"
        );
        q.finish(&first);
        assert_eq!(q.pop_ready(5, &none), Ok(k("elsewhere/sub")));
    }
}
