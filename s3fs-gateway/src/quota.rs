//! Per-bucket usage (bytes and objects holding data) and quota enforcement.
//!
//! Usage is computed by walking every bucket when the gateway starts, so it is exact after
//! any crash; afterwards every change to a bucket goes through [`Usage::apply`], which runs the
//! filesystem change and the counter update under one lock so concurrent writers of the same
//! key cannot double count. Writers reserve their size first ([`Usage::reserve`]) so that
//! concurrent uploads cannot together exceed a limit.
//!
//! What counts: every regular file that holds data is one object and its length in bytes.
//! Placeholders (data released) and directories count as nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::Quota;
use crate::error::{Error, Result};
use crate::meta::ObjectMeta;

/// What one object contributes to its bucket's usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Contribution {
    pub bytes: u64,
    pub objects: u64,
}

impl Contribution {
    pub const NONE: Contribution = Contribution {
        bytes: 0,
        objects: 0,
    };

    pub fn data(bytes: u64) -> Self {
        Self { bytes, objects: 1 }
    }

    /// The contribution of the object at `path` right now (nothing if absent).
    pub fn of_path(path: &Path) -> Self {
        match std::fs::symlink_metadata(path) {
            Ok(md) if md.is_file() => match ObjectMeta::load(path) {
                Ok(Some(meta)) if meta.placeholder => Self::NONE,
                _ => Self::data(md.len()),
            },
            _ => Self::NONE,
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    bytes: u64,
    objects: u64,
    reserved_bytes: u64,
    reserved_objects: u64,
}

/// A bucket's usage and limits, as reported by `?gpair-usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub bytes: u64,
    pub objects: u64,
    pub limits: Quota,
}

pub struct Usage {
    limits: BTreeMap<String, Quota>,
    counters: Mutex<HashMap<String, Counters>>,
}

/// Space held for a write in flight; returned when dropped.
pub struct Reservation {
    usage: Arc<Usage>,
    bucket: String,
    bytes: u64,
    objects: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut all = self.usage.lock();
        if let Some(c) = all.get_mut(&self.bucket) {
            c.reserved_bytes = c.reserved_bytes.saturating_sub(self.bytes);
            c.reserved_objects = c.reserved_objects.saturating_sub(self.objects);
        }
    }
}

impl Usage {
    /// Walks every bucket under `root` and counts what it holds.
    pub fn scan(root: &Path, limits: BTreeMap<String, Quota>) -> std::io::Result<Self> {
        let mut counters = HashMap::new();
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !entry.file_type()?.is_dir() || !s3s::path::check_bucket_name(&name) {
                continue;
            }
            let mut c = Counters::default();
            scan_dir(&entry.path(), &mut c)?;
            counters.insert(name, c);
        }
        Ok(Self {
            limits,
            counters: Mutex::new(counters),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Counters>> {
        // A panic while holding this lock cannot leave counters half-updated (plain integer
        // stores), so a poisoned lock is still consistent.
        self.counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn limits(&self, bucket: &str) -> Quota {
        self.limits.get(bucket).copied().unwrap_or_default()
    }

    pub fn report(&self, bucket: &str) -> Report {
        let c = self.lock().get(bucket).copied().unwrap_or_default();
        Report {
            bytes: c.bytes,
            objects: c.objects,
            limits: self.limits(bucket),
        }
    }

    pub fn bucket_created(&self, bucket: &str) {
        self.lock().entry(bucket.to_owned()).or_default();
    }

    pub fn bucket_deleted(&self, bucket: &str) {
        self.lock().remove(bucket);
    }

    /// Holds room for an object of `bytes` about to replace `old` in `bucket`; refuses with
    /// `QuotaExceeded` when the bucket would go over a limit.
    pub fn reserve(
        self: &Arc<Self>,
        bucket: &str,
        bytes: u64,
        old: Contribution,
    ) -> Result<Reservation> {
        let limits = self.limits(bucket);
        let mut all = self.lock();
        let c = all.entry(bucket.to_owned()).or_default();
        if let Some(max) = limits.max_bytes {
            let projected = (c.bytes + c.reserved_bytes + bytes).saturating_sub(old.bytes);
            if projected > max {
                return Err(Error::QuotaExceeded(format!(
                    "bucket {bucket} is over its byte quota: {} bytes used, this write needs {bytes}, the limit is {max}",
                    c.bytes + c.reserved_bytes
                )));
            }
        }
        if let Some(max) = limits.max_objects {
            let projected = (c.objects + c.reserved_objects + 1).saturating_sub(old.objects);
            if projected > max {
                return Err(Error::QuotaExceeded(format!(
                    "bucket {bucket} is over its object quota: {} objects, the limit is {max}",
                    c.objects + c.reserved_objects
                )));
            }
        }
        c.reserved_bytes += bytes;
        c.reserved_objects += 1;
        Ok(Reservation {
            usage: Arc::clone(self),
            bucket: bucket.to_owned(),
            bytes,
            objects: 1,
        })
    }

    /// Runs `change` (a filesystem change to `bucket`) under the usage lock; it returns what
    /// it removed and what it added, and the counters follow.
    pub fn apply<T>(
        &self,
        bucket: &str,
        change: impl FnOnce() -> Result<(Contribution, Contribution, T)>,
    ) -> Result<T> {
        let mut all = self.lock();
        let (removed, added, out) = change()?;
        let c = all.entry(bucket.to_owned()).or_default();
        c.bytes = c.bytes.saturating_sub(removed.bytes) + added.bytes;
        c.objects = c.objects.saturating_sub(removed.objects) + added.objects;
        Ok(out)
    }
}

fn scan_dir(dir: &Path, c: &mut Counters) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            scan_dir(&entry.path(), c)?;
        } else if ft.is_file() {
            let got = Contribution::of_path(&entry.path());
            c.bytes += got.bytes;
            c.objects += got.objects;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(limits: Quota) -> Arc<Usage> {
        let dir = tempfile::tempdir().unwrap();
        let u = Usage::scan(dir.path(), [("b".to_string(), limits)].into()).unwrap();
        u.bucket_created("b");
        Arc::new(u)
    }

    #[test]
    fn reservations_hold_room_until_dropped() {
        let u = usage(Quota {
            max_bytes: Some(100),
            max_objects: Some(2),
        });
        let r1 = u.reserve("b", 60, Contribution::NONE).unwrap();
        assert!(
            u.reserve("b", 50, Contribution::NONE).is_err(),
            "60 reserved + 50 > 100"
        );
        drop(r1);
        let r2 = u.reserve("b", 50, Contribution::NONE).unwrap();
        u.apply("b", || Ok((Contribution::NONE, Contribution::data(50), ())))
            .unwrap();
        drop(r2);
        assert_eq!(u.report("b").bytes, 50);
        // Overwriting the 50-byte object with 100 bytes counts only the difference.
        assert!(u.reserve("b", 100, Contribution::data(50)).is_ok());
        assert!(u.reserve("b", 101, Contribution::data(50)).is_err());
    }

    #[test]
    fn object_limit_counts_new_keys_only() {
        let u = usage(Quota {
            max_bytes: None,
            max_objects: Some(1),
        });
        u.apply("b", || Ok((Contribution::NONE, Contribution::data(1), ())))
            .unwrap();
        assert!(u.reserve("b", 1, Contribution::NONE).is_err());
        assert!(u.reserve("b", 1, Contribution::data(1)).is_ok());
        let err = u.reserve("b", 1, Contribution::NONE).err().unwrap();
        assert!(err.to_string().contains("object quota"), "{err}");
    }
}
