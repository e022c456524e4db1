//! Read grants for mounts (DESIGN 5.4): a mount reading a stub asks for a short-lived
//! presigned GET of the object that holds its data and reads ranges from west directly.
//! The backend checks the stub record belongs to the gpair, finds the copy where recall
//! would, and applies the gpair's read policy: `recall` recalls the file in the background
//! at its first read, `recall_after_reads = N` once it was opened N times within an hour.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gpair_proto::now_ms;

use super::job::JobKind;
use super::{blocking, lock, stub, TierError, Tiering};
use crate::registry::ReadPolicy;

/// How long a grant's URL stays valid.
pub const GRANT_TTL: Duration = Duration::from_secs(15 * 60);
/// The window `recall_after_reads` counts in.
const READ_WINDOW_MS: i64 = 3600 * 1000;
/// Paths whose reads are counted at once; the oldest windows go first beyond this.
const MAX_COUNTED: usize = 100_000;

/// What a mount needs to read a stub from west.
#[derive(Debug, Clone)]
pub struct Grant {
    pub url: String,
    pub expires_in: Duration,
    pub size: u64,
    /// This read started a background recall.
    pub recalling: bool,
}

/// Reads of stubs per path within the current window: (count, window start).
#[derive(Default)]
pub struct ReadCounts(std::sync::Mutex<HashMap<PathBuf, (u32, i64)>>);

impl ReadCounts {
    /// Counts one read of `path` at `now`; returns the count within the window.
    fn count(&self, path: &Path, now: i64) -> u32 {
        let mut m = lock(&self.0);
        if m.len() >= MAX_COUNTED && !m.contains_key(path) {
            m.retain(|_, (_, since)| now - *since < READ_WINDOW_MS);
            if m.len() >= MAX_COUNTED {
                return 1;
            }
        }
        let e = m.entry(path.to_path_buf()).or_insert((0, now));
        if now - e.1 >= READ_WINDOW_MS {
            *e = (0, now);
        }
        e.0 = e.0.saturating_add(1);
        e.0
    }

    fn forget(&self, path: &Path) {
        lock(&self.0).remove(path);
    }

    /// Reads of `path` counted within the window that holds `now`.
    fn of(&self, path: &Path, now: i64) -> u32 {
        lock(&self.0)
            .get(path)
            .filter(|(_, since)| now - since < READ_WINDOW_MS)
            .map_or(0, |(n, _)| *n)
    }
}

/// When files were last recalled, for `gpair explain` (since the backend started; at most
/// `MAX_COUNTED` files, the oldest forgotten first).
#[derive(Default)]
pub struct LastRecalls(std::sync::Mutex<HashMap<PathBuf, i64>>);

impl LastRecalls {
    pub fn note(&self, path: &Path, at: i64) {
        let mut m = lock(&self.0);
        if m.len() >= MAX_COUNTED && !m.contains_key(path) {
            if let Some(oldest) = m.iter().min_by_key(|(_, t)| **t).map(|(p, _)| p.clone()) {
                m.remove(&oldest);
            }
        }
        m.insert(path.to_path_buf(), at);
    }

    fn of(&self, path: &Path) -> i64 {
        lock(&self.0).get(path).copied().unwrap_or(0)
    }
}

impl Tiering {
    /// Opens of the stub at `abs` through mounts within the last hour.
    pub fn reads_of(&self, abs: &Path) -> u32 {
        self.reads.of(abs, now_ms())
    }

    /// When a recall last brought `abs` back (0: not since the backend started).
    pub fn last_recall_of(&self, abs: &Path) -> i64 {
        self.recalls.of(abs)
    }

    /// The gpair and relative path of `abs`, which must be absolute and below a bound share.
    pub fn locate_abs(
        &self,
        abs: &Path,
    ) -> Result<(crate::registry::GpairRecord, Vec<u8>), TierError> {
        if !abs.is_absolute() {
            return Err(TierError::Invalid(format!(
                "path {} is not absolute",
                abs.display()
            )));
        }
        self.locate(abs).ok_or_else(|| {
            TierError::Precondition(format!(
                "{} is not under the share of any bound gpair",
                abs.display()
            ))
        })
    }

    /// A read grant for the stub at `abs`. `new_read`: this is an open of the file, counted
    /// for the read policy (refreshes of an expired grant are not). Without `verify`, a file
    /// not renamed since its offload is granted at its key without asking west (its data is
    /// there unless something went wrong, which the reader notices and asks again with
    /// `verify`, which finds the copy wherever recall would).
    pub async fn read_grant(
        self: &Arc<Self>,
        abs: &Path,
        new_read: bool,
        verify: bool,
        expect: Option<(&str, i64)>,
    ) -> Result<Grant, TierError> {
        let (rec, rel) = self.locate_abs(abs)?;
        let attr = self.config.stub_xattr.clone();
        let p = abs.to_path_buf();
        let read = blocking(move || stub::read_path(&p, &attr))
            .await
            .map_err(TierError::Internal)?;
        let stub = match read {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(TierError::Precondition(format!(
                    "{} is not offloaded (its data is on east)",
                    abs.display()
                )))
            }
            Err(e) => return Err(TierError::Precondition(e.to_string())),
        };
        Self::stub_belongs(&rec, &stub).map_err(TierError::Precondition)?;
        // West's copy was found corrupt (recall, fsck): never serve it. (A `lost` mark is no
        // reason to refuse: the copy is looked for below, and a read that finds none fails.)
        let mark: Option<super::TierMark> = self
            .engine
            .catalog
            .get(super::CF_TIERS, &crate::catalog::gpair_key(&rec.name, &rel))
            .ok()
            .flatten();
        if let Some(m) = mark.filter(|m| m.state == super::MarkState::Conflict) {
            return Err(TierError::Precondition(format!(
                "{} is marked {:?}: {}",
                abs.display(),
                m.state,
                m.reason
            )));
        }
        if let Some((etag, at)) = expect {
            if stub.etag != etag || stub.offloaded_at_ms != at {
                return Err(TierError::Precondition(format!(
                    "{} holds another offloaded file than the one being read (replaced since it was opened)",
                    abs.display()
                )));
            }
        }
        // The same client as the workers', rebuilt first if a transient failure asked for it
        // (fresh DNS and connections after an outage).
        let west = self.engine.store(&rec.gpeer).ok_or_else(|| {
            TierError::Precondition(format!(
                "gpeer {} of gpair {} is not known",
                rec.gpeer, rec.name
            ))
        })?;
        let unavailable = |what: &str, e: crate::west::WestError| {
            if e.is_transient() {
                // Counts against the gpeer's health like the workers' failures do.
                self.engine.report_transient(&rec.gpeer, &e);
            }
            TierError::Unavailable(format!("{what}: {e}"))
        };
        let current = crate::west::keys::west_key(&rec.prefix, &rel);
        let key = if !verify && current.long_path.is_none() && current.key == stub.key {
            current
        } else {
            let found = self
                .find_copy(west.as_ref(), &rec, &rel, &stub)
                .await
                .map_err(|e| unavailable("find the west copy", e))?;
            // West answered: an outage only grants noticed is over.
            self.engine.report_success(&rec.gpeer);
            found
                .ok_or_else(|| {
                    TierError::NotFound(format!(
                        "west copy missing: no object of {} bytes owned by west at {}/{}",
                        stub.size, stub.bucket, stub.key
                    ))
                })?
                .0
        };
        let url = west
            .presign_read(&stub.bucket, &key, GRANT_TTL)
            .await
            .map_err(|e| unavailable("presign a read", e))?;
        // A file some job is already moving needs no new recall job.
        let recall = new_read
            && !lock(&self.active).contains_key(abs)
            && match rec.read_policy {
                ReadPolicy::Recall => true,
                ReadPolicy::Stream => {
                    rec.recall_after_reads > 0
                        && self.reads.count(abs, now_ms()) >= rec.recall_after_reads
                }
            };
        let mut recalling = false;
        if recall {
            match self
                .create_job(JobKind::Recall, vec![abs.to_path_buf()], false)
                .await
            {
                Ok(job) => {
                    tracing::info!(path = %abs.display(), job = job.id(), policy = ?rec.read_policy, "recalling a stub read through a mount");
                    self.reads.forget(abs);
                    recalling = true;
                }
                Err(e) => {
                    tracing::warn!(path = %abs.display(), "read policy recall not started: {e}")
                }
            }
        }
        Ok(Grant {
            url,
            expires_in: GRANT_TTL,
            size: stub.size,
            recalling,
        })
    }
}

impl Tiering {
    /// A mount truncates the stub at `abs` to zero: make it an ordinary empty local file
    /// without fetching its data. Serialized with every job on the file (a recall in flight
    /// finishes first — then the file is local with its data, and the caller's truncation
    /// does the rest). West's copy is no longer the file's: the remote record goes (quota
    /// freed) and a sync of the path moves the old object to the trash. Returns whether the
    /// file was a stub.
    pub async fn discard(self: &Arc<Self>, abs: &Path) -> Result<bool, TierError> {
        let (rec, rel) = self.locate_abs(abs)?;
        // Claim the file as a job would (job 0: no job).
        loop {
            {
                let mut active = lock(&self.active);
                if !active.contains_key(abs) {
                    active.insert(abs.to_path_buf(), (0, JobKind::Recall));
                    break;
                }
            }
            if self.cancel.is_cancelled() {
                return Err(TierError::Unavailable(
                    "the backend is shutting down".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let result = self.discard_claimed(&rec, &rel, abs).await;
        lock(&self.active).remove(abs);
        result
    }

    async fn discard_claimed(
        &self,
        rec: &crate::registry::GpairRecord,
        rel: &[u8],
        abs: &Path,
    ) -> Result<bool, TierError> {
        let attr = self.config.stub_xattr.clone();
        let p = abs.to_path_buf();
        let root = rec.local_path.clone();
        let was_stub = blocking(move || -> Result<bool, String> {
            // A symlinked directory on the way must not lead outside the share.
            let inside = p
                .parent()
                .and_then(|d| std::fs::canonicalize(d).ok())
                .is_some_and(|d| d.starts_with(&root));
            if !inside {
                return Err(format!("{} is not inside the share", p.display()));
            }
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p)
                .map_err(|e| format!("{}: {e}", p.display()))?;
            match stub::read_fd(&f, &p, &attr) {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(false),
                // Never truncate on a guess: an unreadable record is the operator's to see.
                Err(e) => return Err(format!("{}: {e}; not emptying it", p.display())),
            }
            // Empty first, then no record: never a moment where holes read as data.
            f.set_len(0)
                .map_err(|e| format!("truncate {}: {e}", p.display()))?;
            stub::remove_fd(&f, &attr).map_err(|e| format!("{}: {e}", p.display()))?;
            f.sync_all()
                .map_err(|e| format!("fsync {}: {e}", p.display()))?;
            Ok(true)
        })
        .await
        .map_err(TierError::Internal)?
        .map_err(TierError::Precondition)?;
        if was_stub {
            self.engine
                .quotas
                .remove_record(self.catalog(), &rec.name, rel)
                .map_err(|e| TierError::Internal(e.to_string()))?;
            let _ = self
                .catalog()
                .delete(super::CF_TIERS, &crate::catalog::gpair_key(&rec.name, rel));
            let _ =
                self.engine
                    .enqueue(&rec.name, rel, crate::sync::Op::Put, crate::sync::SETTLE_MS);
            tracing::info!(path = %abs.display(), "stub truncated to zero through a mount; west's copy goes to the trash");
        }
        Ok(was_stub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_counted_per_window() {
        let c = ReadCounts::default();
        let p = Path::new("/s/a");
        assert_eq!(c.count(p, 0), 1);
        assert_eq!(c.count(p, 10), 2);
        assert_eq!(c.count(Path::new("/s/b"), 10), 1);
        assert_eq!(c.count(p, READ_WINDOW_MS - 1), 3);
        // A new window starts over.
        assert_eq!(c.count(p, READ_WINDOW_MS), 1);
        c.forget(p);
        assert_eq!(c.count(p, READ_WINDOW_MS + 1), 1);
    }
}
