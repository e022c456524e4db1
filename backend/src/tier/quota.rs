//! Per-gpair quotas on west usage (DESIGN 6): bytes and files offloaded.
//!
//! Usage is never a counter that a crash could leave wrong: `used` is the sum of the
//! catalog's remote records (`quota` CF, key `gpair ‖ 0 ‖ path`, one per offloaded file),
//! recomputed at start; a record is written in the same atomic batch that ends an offload
//! (with its intent's removal) and removed in the batch that ends a recall, or when sync
//! deletes the file. `reserved` covers offloads in flight; their intents are resolved at start
//! before any new work, so nothing is reserved after a restart.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::catalog::{gpair_key, split_gpair_key, Catalog, CatalogError, CF_QUOTA};

/// Limits of one gpair (stored in its registry record); 0 = no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaLimits {
    pub max_bytes: u64,
    pub max_files: u64,
}

/// One offloaded file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteRecord {
    pub size: u64,
    pub crc32c: u32,
    pub offloaded_at_ms: i64,
    pub job: u64,
    /// The east inode that was offloaded (0 in records written before it was kept).
    #[serde(default)]
    pub ino: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub used_bytes: u64,
    pub used_files: u64,
    pub reserved_bytes: u64,
    pub reserved_files: u64,
}

#[derive(Default)]
pub struct Quotas {
    usage: Mutex<HashMap<String, Usage>>,
    /// Serializes removals of remote records (see [`Quotas::remove_record`]).
    records: Mutex<()>,
}

fn lock(m: &Mutex<HashMap<String, Usage>>) -> std::sync::MutexGuard<'_, HashMap<String, Usage>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Quotas {
    /// Recomputes every gpair's usage from the remote records.
    pub fn load(&self, catalog: &Catalog) -> Result<(), CatalogError> {
        let mut usage: HashMap<String, Usage> = HashMap::new();
        let records: Vec<(Vec<u8>, RemoteRecord)> = catalog.scan(
            CF_QUOTA,
            b"",
            |e| tracing::error!(error = %e, "skipping a corrupt remote record"),
        )?;
        for (k, r) in records {
            if let Some((g, _)) = split_gpair_key(&k) {
                let u = usage.entry(g.to_owned()).or_default();
                u.used_bytes += r.size;
                u.used_files += 1;
            }
        }
        *lock(&self.usage) = usage;
        Ok(())
    }

    pub fn usage(&self, gpair: &str) -> Usage {
        lock(&self.usage).get(gpair).copied().unwrap_or_default()
    }

    /// Reserves room for one file of `bytes`, or says which limit refuses it.
    pub fn reserve(&self, gpair: &str, limits: QuotaLimits, bytes: u64) -> Result<(), String> {
        let mut all = lock(&self.usage);
        let u = all.entry(gpair.to_owned()).or_default();
        let files_after = u.used_files + u.reserved_files + 1;
        let bytes_after = u.used_bytes + u.reserved_bytes + bytes;
        if limits.max_files > 0 && files_after > limits.max_files {
            return Err(format!(
                "quota: gpair {gpair} may hold {} file(s) on west; {} used, {} reserved",
                limits.max_files, u.used_files, u.reserved_files
            ));
        }
        if limits.max_bytes > 0 && bytes_after > limits.max_bytes {
            return Err(format!(
                "quota: gpair {gpair} may hold {} bytes on west; {} used, {} reserved, this file needs {bytes}",
                limits.max_bytes, u.used_bytes, u.reserved_bytes
            ));
        }
        u.reserved_files += 1;
        u.reserved_bytes += bytes;
        Ok(())
    }

    /// Returns a reservation (the offload did not happen).
    pub fn unreserve(&self, gpair: &str, bytes: u64) {
        if let Some(u) = lock(&self.usage).get_mut(gpair) {
            u.reserved_files = u.reserved_files.saturating_sub(1);
            u.reserved_bytes = u.reserved_bytes.saturating_sub(bytes);
        }
    }

    /// A reservation became usage (its remote record was just committed).
    pub fn commit(&self, gpair: &str, bytes: u64) {
        let mut all = lock(&self.usage);
        let u = all.entry(gpair.to_owned()).or_default();
        u.reserved_files = u.reserved_files.saturating_sub(1);
        u.reserved_bytes = u.reserved_bytes.saturating_sub(bytes);
        u.used_files += 1;
        u.used_bytes += bytes;
    }

    /// Usage without a reservation (a recovered offload that had finished).
    pub fn add_used(&self, gpair: &str, bytes: u64) {
        let mut all = lock(&self.usage);
        let u = all.entry(gpair.to_owned()).or_default();
        u.used_files += 1;
        u.used_bytes += bytes;
    }

    /// An offloaded file's remote record was removed (recalled or deleted).
    pub fn free(&self, gpair: &str, bytes: u64) {
        if let Some(u) = lock(&self.usage).get_mut(gpair) {
            u.used_files = u.used_files.saturating_sub(1);
            u.used_bytes = u.used_bytes.saturating_sub(bytes);
        }
    }

    /// Sets a gpair's usage to what its remote records sum to (`gpair fsck --repair`);
    /// reservations of offloads in flight are kept.
    pub fn set_used(&self, gpair: &str, bytes: u64, files: u64) {
        let mut all = lock(&self.usage);
        let u = all.entry(gpair.to_owned()).or_default();
        u.used_bytes = bytes;
        u.used_files = files;
    }

    pub fn forget_gpair(&self, gpair: &str) {
        lock(&self.usage).remove(gpair);
    }

    /// The file (or everything under the directory) at `path` is gone: its remote records
    /// go, and their usage with them.
    pub fn forget_path(
        &self,
        catalog: &Catalog,
        gpair: &str,
        path: &[u8],
        is_dir: bool,
    ) -> Result<(), CatalogError> {
        let key = gpair_key(gpair, path);
        let mut gone: Vec<(Vec<u8>, RemoteRecord)> = Vec::new();
        if let Some(r) = catalog.get::<RemoteRecord>(CF_QUOTA, &key)? {
            gone.push((key.clone(), r));
        }
        if is_dir {
            let mut under = key;
            under.push(b'/');
            gone.extend(catalog.scan::<RemoteRecord>(CF_QUOTA, &under, |_| {})?);
        }
        for (k, _) in gone {
            if let Some((_, p)) = split_gpair_key(&k) {
                self.remove_record(catalog, gpair, p)?;
            }
        }
        Ok(())
    }

    /// Sync saw `path` (absolute: `abs`) as `meta`: if it is no longer the file that was
    /// offloaded there — not a regular file, another inode, or no stub record (deleted and
    /// re-created, which the watcher may report as one change, and inode numbers get reused) —
    /// its remote record goes. `stub_xattr`: the stub record's attribute name.
    pub fn forget_if_replaced(
        &self,
        catalog: &Catalog,
        gpair: &str,
        path: &[u8],
        abs: &std::path::Path,
        meta: &crate::entry::EntryMeta,
        stub_xattr: &str,
    ) -> Result<(), CatalogError> {
        let key = gpair_key(gpair, path);
        let Some(r) = catalog.get::<RemoteRecord>(CF_QUOTA, &key)? else {
            return Ok(());
        };
        let replaced = meta.kind != crate::entry::EntryKind::File
            || (r.ino != 0 && r.ino != meta.ino)
            || matches!(crate::tier::stub::read_path(abs, stub_xattr), Ok(None));
        if replaced {
            self.remove_record(catalog, gpair, path)?;
        }
        Ok(())
    }

    /// Removes one file's remote record and frees its usage, once even when several callers
    /// race for it (sync and a finishing recall). Returns the record removed.
    pub fn remove_record(
        &self,
        catalog: &Catalog,
        gpair: &str,
        path: &[u8],
    ) -> Result<Option<RemoteRecord>, CatalogError> {
        let _one_at_a_time = self
            .records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = gpair_key(gpair, path);
        let Some(r) = catalog.get::<RemoteRecord>(CF_QUOTA, &key)? else {
            return Ok(None);
        };
        catalog.delete(CF_QUOTA, &key)?;
        self.free(gpair, r.size);
        Ok(Some(r))
    }

    /// A rename moved `from` (and what is under it) to `to`: the remote records follow.
    pub fn move_path(
        &self,
        catalog: &Catalog,
        gpair: &str,
        from: &[u8],
        to: &[u8],
        is_dir: bool,
    ) -> Result<(), CatalogError> {
        let old = gpair_key(gpair, from);
        let mut moves: Vec<(Vec<u8>, Vec<u8>, RemoteRecord)> = Vec::new();
        if let Some(r) = catalog.get::<RemoteRecord>(CF_QUOTA, &old)? {
            moves.push((old.clone(), gpair_key(gpair, to), r));
        }
        if is_dir {
            let mut under = old.clone();
            under.push(b'/');
            for (k, r) in catalog.scan::<RemoteRecord>(CF_QUOTA, &under, |_| {})? {
                let mut new_path = to.to_vec();
                new_path.extend_from_slice(&k[old.len()..]);
                moves.push((k, gpair_key(gpair, &new_path), r));
            }
        }
        if moves.is_empty() {
            return Ok(());
        }
        // A record already at a destination belongs to a file the rename replaced: its usage
        // goes (once), before the moved record takes its place.
        let moving: std::collections::HashSet<&[u8]> =
            moves.iter().map(|(f, _, _)| f.as_slice()).collect();
        for (_, to_k, _) in &moves {
            if !moving.contains(to_k.as_slice()) {
                if let Some((_, p)) = split_gpair_key(to_k) {
                    self.remove_record(catalog, gpair, p)?;
                }
            }
        }
        let mut batch = catalog.batch();
        for (from_k, to_k, r) in &moves {
            batch.delete(CF_QUOTA, from_k);
            batch.put(CF_QUOTA, to_k, r);
        }
        batch.commit()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reservations_respect_limits_and_commit_into_usage() {
        let q = Quotas::default();
        let lim = QuotaLimits {
            max_bytes: 100,
            max_files: 2,
        };
        q.reserve("p", lim, 60).unwrap();
        let err = q.reserve("p", lim, 41).unwrap_err();
        assert!(err.contains("100 bytes"), "{err}");
        q.reserve("p", lim, 40).unwrap();
        let err = q.reserve("p", lim, 0).unwrap_err();
        assert!(err.contains("2 file(s)"), "{err}");
        q.commit("p", 60);
        q.unreserve("p", 40);
        assert_eq!(
            q.usage("p"),
            Usage {
                used_bytes: 60,
                used_files: 1,
                reserved_bytes: 0,
                reserved_files: 0
            }
        );
        // Exactly at the limit is allowed; no limit means none.
        q.reserve("p", lim, 40).unwrap();
        q.reserve("other", QuotaLimits::default(), u64::MAX / 4)
            .unwrap();
    }

    #[test]
    fn usage_is_the_sum_of_remote_records_and_follows_renames_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let rec = |size| RemoteRecord {
            size,
            crc32c: 0,
            offloaded_at_ms: 1,
            job: 1,
            ino: 0,
        };
        c.put(CF_QUOTA, &gpair_key("p", b"d/a"), &rec(10)).unwrap();
        c.put(CF_QUOTA, &gpair_key("p", b"d/b"), &rec(20)).unwrap();
        c.put(CF_QUOTA, &gpair_key("p", b"e"), &rec(5)).unwrap();
        c.put(CF_QUOTA, &gpair_key("q", b"x"), &rec(7)).unwrap();
        let q = Quotas::default();
        q.load(&c).unwrap();
        assert_eq!(q.usage("p").used_bytes, 35);
        assert_eq!(q.usage("p").used_files, 3);
        // A rename over an offloaded file: the replaced file's usage goes.
        c.put(CF_QUOTA, &gpair_key("p", b"f"), &rec(100)).unwrap();
        c.put(CF_QUOTA, &gpair_key("p", b"g"), &rec(1)).unwrap();
        q.load(&c).unwrap();
        q.move_path(&c, "p", b"g", b"f", false).unwrap();
        assert_eq!(q.usage("p").used_bytes, 36);
        q.forget_path(&c, "p", b"f", false).unwrap();
        assert_eq!(q.usage("p").used_bytes, 35);
        q.move_path(&c, "p", b"d", b"z", true).unwrap();
        assert!(c
            .get::<RemoteRecord>(CF_QUOTA, &gpair_key("p", b"z/b"))
            .unwrap()
            .is_some());
        q.forget_path(&c, "p", b"z", true).unwrap();
        assert_eq!(q.usage("p").used_bytes, 5);
        let fresh = Quotas::default();
        fresh.load(&c).unwrap();
        assert_eq!(fresh.usage("p"), q.usage("p"));
        assert_eq!(fresh.usage("q").used_bytes, 7);
    }
}
