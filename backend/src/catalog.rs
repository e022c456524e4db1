//! The catalog: the backend's RocksDB, one column family per concern (DESIGN 4.2).
//!
//! Every value is a versioned record: one format-version byte, then JSON. A record with an
//! unknown version is refused, never guessed at; format changes come with a migration in
//! [`decode`]. Keys that belong to a gpair start with `gpair-name ‖ 0x00`, so everything of a
//! gpair is one contiguous range (unbind deletes it with one range delete).
//!
//! Writes go to RocksDB's WAL without an fsync each; [`Catalog::sync_wal`] is called by a
//! group-commit ticker, so a burst of updates costs one fsync, not one per entry. What a
//! power loss could take back (the last tick's updates) is re-derived by the next
//! reconciliation scan; a process crash loses nothing (the WAL is in the page cache).

use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Column families.
pub const CF_REGISTRY: &str = "registry";
pub const CF_ENTRIES: &str = "entries";
pub const CF_INTENTS: &str = "intents";
pub const CF_OUTBOX: &str = "outbox";
pub const CF_JOBS: &str = "jobs";
pub const CF_QUOTA: &str = "quota";
pub const CF_SESSIONS: &str = "sessions";
pub const CF_META: &str = "meta";
/// Per-file tier marks (dirty, conflict) of files not in flight.
pub const CF_TIERS: &str = "tiers";
const ALL_CFS: &[&str] = &[
    CF_TIERS,
    CF_REGISTRY,
    CF_ENTRIES,
    CF_INTENTS,
    CF_OUTBOX,
    CF_JOBS,
    CF_QUOTA,
    CF_SESSIONS,
    CF_META,
];

/// Current record format.
pub const RECORD_VERSION: u8 = 1;
/// Catalog layout version, stored under `meta/layout`.
pub const LAYOUT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("catalog: {0}")]
    Db(#[from] rocksdb::Error),
    #[error("catalog record {key} in {cf}: {message}")]
    Corrupt {
        cf: &'static str,
        key: String,
        message: String,
    },
}

pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

pub struct Catalog {
    db: DB,
    path: PathBuf,
    /// Where every registry change is copied (`gpair fsck --rebuild` after a lost catalog:
    /// see [`crate::fsck::write_registry_backup`]); unset in tests.
    registry_backup: std::sync::OnceLock<PathBuf>,
    backup_lock: std::sync::Mutex<()>,
}

/// `gpair ‖ 0x00 ‖ path`: the key of a per-gpair record.
pub fn gpair_key(gpair: &str, path: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(gpair.len() + 1 + path.len());
    k.extend_from_slice(gpair.as_bytes());
    k.push(0);
    k.extend_from_slice(path);
    k
}

/// Splits a per-gpair key back into (gpair, path).
pub fn split_gpair_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let i = key.iter().position(|&b| b == 0)?;
    Some((std::str::from_utf8(&key[..i]).ok()?, &key[i + 1..]))
}

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Records are plain structs of strings, numbers and byte vectors: serialization
    // cannot fail.
    out.extend(serde_json::to_vec(value).unwrap_or_default());
    out
}

pub fn decode<T: DeserializeOwned>(cf: &'static str, key: &[u8], bytes: &[u8]) -> Result<T> {
    let corrupt = |message: String| CatalogError::Corrupt {
        cf,
        key: String::from_utf8_lossy(key).into_owned(),
        message,
    };
    match bytes.split_first() {
        Some((&RECORD_VERSION, rest)) => {
            serde_json::from_slice(rest).map_err(|e| corrupt(e.to_string()))
        }
        Some((v, _)) => Err(corrupt(format!(
            "record version {v} is not supported (this build knows {RECORD_VERSION})"
        ))),
        None => Err(corrupt("empty record".into())),
    }
}

impl Catalog {
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(|e| CatalogError::Open {
            path: path.into(),
            message: e.to_string(),
        })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        let cfs = ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs).map_err(|e| CatalogError::Open {
            path: path.into(),
            message: e.to_string(),
        })?;
        let catalog = Self {
            db,
            path: path.into(),
            registry_backup: std::sync::OnceLock::new(),
            backup_lock: std::sync::Mutex::new(()),
        };
        match catalog.get_raw(CF_META, b"layout")? {
            None => catalog.put_raw(CF_META, b"layout", &[LAYOUT_VERSION])?,
            Some(v) if v.as_slice() == [LAYOUT_VERSION] => {}
            Some(v) => {
                return Err(CatalogError::Open {
                    path: path.into(),
                    message: format!(
                    "catalog layout {v:?} is newer than this build understands ({LAYOUT_VERSION})"
                ),
                })
            }
        }
        Ok(catalog)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        // Every name used here is in ALL_CFS, created at open.
        #[allow(clippy::expect_used)]
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    pub fn get_raw(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf), key)?)
    }

    pub fn put_raw(&self, cf: &'static str, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.put_cf(self.cf(cf), key, value)?;
        self.after_write(cf);
        Ok(())
    }

    /// Copies the registry to `path` now and after every registry change from here on.
    pub fn set_registry_backup(&self, path: PathBuf) {
        let _ = self.registry_backup.set(path);
        self.after_write(CF_REGISTRY);
    }

    pub fn registry_backup(&self) -> Option<&Path> {
        self.registry_backup.get().map(PathBuf::as_path)
    }

    fn after_write(&self, cf: &'static str) {
        if cf != CF_REGISTRY {
            return;
        }
        if let Some(path) = self.registry_backup.get() {
            let _one = self
                .backup_lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = crate::fsck::write_registry_backup(self, path) {
                tracing::error!(path = %path.display(), error = %e, "cannot write the registry backup");
            }
        }
    }

    pub fn get<T: DeserializeOwned>(&self, cf: &'static str, key: &[u8]) -> Result<Option<T>> {
        match self.get_raw(cf, key)? {
            Some(bytes) => decode(cf, key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn put<T: Serialize>(&self, cf: &'static str, key: &[u8], value: &T) -> Result<()> {
        self.put_raw(cf, key, &encode(value))
    }

    pub fn delete(&self, cf: &'static str, key: &[u8]) -> Result<()> {
        self.db.delete_cf(self.cf(cf), key)?;
        self.after_write(cf);
        Ok(())
    }

    /// Every record whose key starts with `prefix`, in key order. A corrupt record is
    /// reported through `on_corrupt` and skipped, so one bad record never hides the rest.
    pub fn scan<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        prefix: &[u8],
        mut on_corrupt: impl FnMut(CatalogError),
    ) -> Result<Vec<(Vec<u8>, T)>> {
        let mut out = Vec::new();
        self.for_each_raw(cf, prefix, |k, v| {
            match decode(cf, k, v) {
                Ok(t) => out.push((k.to_vec(), t)),
                Err(e) => on_corrupt(e),
            }
            true
        })?;
        Ok(out)
    }

    /// Calls `f` with every raw record under `prefix` until it returns false.
    pub fn for_each_raw(
        &self,
        cf: &'static str,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let iter = self
            .db
            .iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward));
        for item in iter {
            let (k, v) = item?;
            if !k.starts_with(prefix) || !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    /// Deletes every record whose key starts with `prefix`.
    pub fn delete_prefix(&self, cf: &'static str, prefix: &[u8]) -> Result<()> {
        let mut end = prefix.to_vec();
        // The smallest key greater than every key with this prefix.
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                break;
            }
        }
        let mut batch = WriteBatch::default();
        if end.is_empty() {
            let keys: Vec<Vec<u8>> = self
                .db
                .iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward))
                .filter_map(|r| r.ok().map(|(k, _)| k.to_vec()))
                .collect();
            for k in keys {
                batch.delete_cf(self.cf(cf), k);
            }
        } else {
            batch.delete_range_cf(self.cf(cf), prefix, &end);
        }
        Ok(self.db.write(batch)?)
    }

    pub fn batch(&self) -> Batch<'_> {
        Batch {
            catalog: self,
            batch: WriteBatch::default(),
        }
    }

    /// Makes every write so far durable (one fsync of the WAL).
    pub fn sync_wal(&self) -> Result<()> {
        Ok(self.db.flush_wal(true)?)
    }
}

/// Several writes applied atomically.
pub struct Batch<'a> {
    catalog: &'a Catalog,
    batch: WriteBatch,
}

impl Batch<'_> {
    pub fn put<T: Serialize>(&mut self, cf: &'static str, key: &[u8], value: &T) {
        self.batch.put_cf(self.catalog.cf(cf), key, encode(value));
    }

    pub fn delete(&mut self, cf: &'static str, key: &[u8]) {
        self.batch.delete_cf(self.catalog.cf(cf), key);
    }

    pub fn len(&self) -> usize {
        self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    pub fn commit(self) -> Result<()> {
        Ok(self.catalog.db.write(self.batch)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Catalog::open(dir.path()).unwrap();
            c.put(CF_REGISTRY, b"k", &vec![1u32, 2, 3]).unwrap();
            let mut b = c.batch();
            b.put(CF_ENTRIES, &gpair_key("p1", b"a/b"), &"x");
            b.put(CF_ENTRIES, &gpair_key("p1", b"a/c"), &"y");
            b.put(CF_ENTRIES, &gpair_key("p2", b"a"), &"z");
            b.commit().unwrap();
            c.sync_wal().unwrap();
        }
        let c = Catalog::open(dir.path()).unwrap();
        assert_eq!(
            c.get::<Vec<u32>>(CF_REGISTRY, b"k").unwrap(),
            Some(vec![1, 2, 3])
        );
        let p1: Vec<(Vec<u8>, String)> = c.scan(CF_ENTRIES, &gpair_key("p1", b""), |_| {}).unwrap();
        assert_eq!(p1.len(), 2);
        assert_eq!(split_gpair_key(&p1[0].0), Some(("p1", &b"a/b"[..])));
        c.delete_prefix(CF_ENTRIES, &gpair_key("p1", b"")).unwrap();
        assert!(c
            .scan::<String>(CF_ENTRIES, &gpair_key("p1", b""), |_| {})
            .unwrap()
            .is_empty());
        assert_eq!(
            c.scan::<String>(CF_ENTRIES, &gpair_key("p2", b""), |_| {})
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn unknown_record_versions_are_refused_not_guessed() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.put_raw(CF_REGISTRY, b"bad", &[9, b'{', b'}']).unwrap();
        let err = c.get::<serde_json::Value>(CF_REGISTRY, b"bad").unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
        let mut seen = 0;
        let ok: Vec<(Vec<u8>, serde_json::Value)> =
            c.scan(CF_REGISTRY, b"", |_| seen += 1).unwrap();
        assert!(ok.is_empty());
        assert_eq!(seen, 1);
    }
}
