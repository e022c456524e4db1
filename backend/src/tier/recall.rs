//! Reverse migration of one file (DESIGN 5.3): intent; find and check west's copy; stream it
//! back into the same inode with ranged GETs in parallel (the stub record still says
//! "remote", so readers keep reading west until the end), checksum verified; restore the
//! mtime, fsync, remove the stub record, fsync; then SetAttrObj rtl through the outbox and one
//! catalog batch that drops the intent and the remote record (quota freed).
//!
//! A copy that is missing or does not match the stub's checksum is refused: the stub stays
//! intact, the file is marked `conflict` with the reason.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use gpair_proto::now_ms;

use super::job::{JobKind, JobRt, Outcome};
use super::stub::{self, DataVersion, StubRecord};
use super::{
    blocking, east_stop, failed, failpoint, west_stop, FileResult, Intent, MarkState, Stop,
    Tiering, CF_TIERS,
};
use crate::catalog::{gpair_key, CF_INTENTS};
use crate::registry::GpairRecord;
use crate::sync::AttrOp;
use crate::west::{WestKey, WestStore};

/// A failed write into east during a recall. A full filesystem (ENOSPC) or quota (EDQUOT)
/// is named as such, with what happens next: the caller releases what was written, so the
/// file stays a clean stub.
fn east_write_stop(path: &Path, what: &str, e: std::io::Error) -> Stop {
    let full = match e.raw_os_error() {
        Some(libc::ENOSPC) => Some("ENOSPC: the east filesystem is full"),
        Some(libc::EDQUOT) => Some("EDQUOT: the east disk quota is exhausted"),
        _ => None,
    };
    match full {
        Some(why) => failed(format!(
            "{what} {}: {why} ({e}); the file stays a stub (what was written is released): free space on east and recall it again",
            path.display()
        )),
        None => east_stop(path, what, e),
    }
}

impl Tiering {
    pub(super) async fn recall(
        &self,
        rt: &JobRt,
        rec: &GpairRecord,
        rel: &[u8],
        path: &Path,
        west: &dyn WestStore,
    ) -> Result<FileResult, Stop> {
        let (file, md, stub) = match self.open_for_step(path, true).await {
            Ok(o) => (o.file, o.md, o.stub),
            Err(Stop::Done(r)) => return Ok(r),
            Err(e) => return Err(e),
        };
        let stub = match stub {
            Err(e) => return Err(failed(e.to_string())),
            Ok(None) => return Ok(FileResult::new(Outcome::Noop, "already local")),
            Ok(Some(s)) => s,
        };
        if let Err(why) = Self::stub_belongs(rec, &stub) {
            let why = format!("{why}; not recalling it");
            self.set_mark(&rec.name, rel, MarkState::Conflict, &why);
            return Err(failed(why));
        }
        // A changed size means east was written behind the stub's back. (A changed mtime alone
        // — `touch` — is kept: it is restored after the data comes back.)
        if md.len() != stub.size {
            let why = "the file changed on east after it was offloaded; not overwriting it";
            self.set_mark(&rec.name, rel, MarkState::Conflict, why);
            return Err(failed(why));
        }
        let mut stub = stub;
        stub.mtime_ns = DataVersion::of(&md).mtime_ns;
        self.put_intent(
            &rec.name,
            rel,
            &Intent {
                kind: JobKind::Recall,
                job: rt.id(),
                dv: DataVersion::of(&md),
                started_ms: now_ms(),
                upload: None,
            },
        )?;
        let file = Arc::new(file);
        let result = self
            .recall_steps(rt, rec, rel, path, west, Arc::clone(&file), &stub)
            .await;
        if result.is_err() {
            // The stub record is still in place: give back whatever was written into it,
            // so the file stays a clean stub, and retry from scratch later.
            // Only while the stub record is still there: once it is gone the data is the
            // file's own.
            let f = Arc::clone(&file);
            let size = stub.size;
            let mtime = stub.mtime_ns;
            let attr = self.config.stub_xattr.clone();
            let p = path.to_path_buf();
            let still_stub = blocking(move || {
                if !matches!(stub::read_fd(&f, &p, &attr), Ok(Some(_))) {
                    return false;
                }
                let _ = stub::punch(&f, size)
                    .and_then(|()| stub::set_mtime(&f, mtime))
                    .and_then(|()| f.sync_all());
                true
            })
            .await;
            if still_stub == Ok(true) {
                self.clear_intent(&rec.name, rel);
            }
            // Otherwise the recall got past the stub record's removal: its intent stays for
            // recovery to finish (rtl, quota) at the next start.
        }
        result
    }

    /// Where west holds a stub's data: at the file's current key, or (renamed on east, sync
    /// not caught up yet) where it was uploaded, or — sync saw the rename as a deletion
    /// (watcher overflow, daemon down) — in the trash under the recorded key.
    pub(crate) async fn find_copy(
        &self,
        west: &dyn WestStore,
        rec: &GpairRecord,
        rel: &[u8],
        stub: &StubRecord,
    ) -> Result<Option<(WestKey, crate::west::WestEntry)>, crate::west::WestError> {
        let current = crate::west::keys::west_key(&rec.prefix, rel);
        let recorded = WestKey {
            key: stub.key.clone(),
            long_path: None,
        };
        for key in [&current, &recorded] {
            if stub.bucket != rec.bucket && std::ptr::eq(key, &current) {
                continue;
            }
            if let Some(e) = west.head(&stub.bucket, key, false).await? {
                if e.data_len == stub.size && e.gpair_name.is_none() {
                    return Ok(Some((key.clone(), e)));
                }
            }
            if current.object_key(false) == recorded.key {
                break;
            }
        }
        self.find_in_trash(west, rec, stub).await
    }

    /// Why the object at the stub's key (current or recorded) is not its copy, when west
    /// owns data there of another size: a corrupt copy, not a missing one.
    async fn wrong_size_copy(
        &self,
        west: &dyn WestStore,
        rec: &GpairRecord,
        rel: &[u8],
        stub: &StubRecord,
    ) -> Result<Option<String>, crate::west::WestError> {
        let current = crate::west::keys::west_key(&rec.prefix, rel);
        let recorded = WestKey {
            key: stub.key.clone(),
            long_path: None,
        };
        for key in [&current, &recorded] {
            if let Some(e) = west.head(&stub.bucket, key, false).await? {
                if e.gpair_name.is_none() && e.data_len > 0 && e.data_len != stub.size {
                    return Ok(Some(format!(
                        "west copy at {}/{} holds {} bytes but the stub says {}; the stub is kept",
                        stub.bucket,
                        key.object_key(false),
                        e.data_len,
                        stub.size
                    )));
                }
            }
        }
        Ok(None)
    }

    /// Whether a stub record is one this gpair wrote (a copied or forged record must not
    /// make us fetch some other object into, or serve it for, this file).
    pub(crate) fn stub_belongs(rec: &GpairRecord, stub: &StubRecord) -> Result<(), String> {
        let key_ok = rec.prefix.is_empty()
            || stub.key.starts_with(&format!("{}/", rec.prefix))
            || stub.key.starts_with(crate::west::keys::LONG_PREFIX);
        if stub.gpair != rec.name || stub.bucket != rec.bucket || !key_ok {
            return Err(format!(
                "the stub record names gpair {:?}, {}/{}, not this gpair's {:?}, {}/{}…",
                stub.gpair, stub.bucket, stub.key, rec.name, rec.bucket, rec.prefix
            ));
        }
        Ok(())
    }

    /// The newest trash copy of the stub's recorded key that west owns with the stub's size.
    async fn find_in_trash(
        &self,
        west: &dyn WestStore,
        rec: &GpairRecord,
        stub: &StubRecord,
    ) -> Result<Option<(WestKey, crate::west::WestEntry)>, crate::west::WestError> {
        let prefix = format!("{}/{}/", super::TRASH_DIR, rec.name);
        let suffix = format!("/{}", stub.key);
        let mut candidates: Vec<String> = west
            .list_keys(&stub.bucket, &prefix)
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| {
                k.strip_suffix(&suffix)
                    .and_then(|head| head.strip_prefix(&prefix))
                    .is_some_and(|ms| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        candidates.sort();
        for k in candidates.into_iter().rev() {
            let key = WestKey {
                key: k,
                long_path: None,
            };
            if let Some(e) = west.head(&stub.bucket, &key, false).await? {
                if e.data_len == stub.size && e.gpair_name.is_none() {
                    tracing::info!(key = key.key, "recalling from the trash");
                    return Ok(Some((key, e)));
                }
            }
        }
        Ok(None)
    }

    #[allow(clippy::too_many_arguments)]
    async fn recall_steps(
        &self,
        rt: &JobRt,
        rec: &GpairRecord,
        rel: &[u8],
        path: &Path,
        west: &dyn WestStore,
        file: Arc<File>,
        stub: &StubRecord,
    ) -> Result<FileResult, Stop> {
        let conflict = |why: String| {
            self.set_mark(&rec.name, rel, MarkState::Conflict, &why);
            failed(why)
        };
        let found = self
            .find_copy(west, rec, rel, stub)
            .await
            .map_err(|e| west_stop("find west copy", e))?;
        let Some((key, entry)) = found else {
            // West owns other data at the key: corrupt (conflict); nothing there: lost.
            let wrong = self
                .wrong_size_copy(west, rec, rel, stub)
                .await
                .map_err(|e| west_stop("find west copy", e))?;
            if let Some(why) = wrong {
                return Err(conflict(why));
            }
            let why = format!(
                "west copy missing (lost): no object of {} bytes owned by west at {}/{} (nor renamed, nor in the trash); the stub is kept",
                stub.size, stub.bucket, stub.key
            );
            self.set_mark(&rec.name, rel, MarkState::Lost, &why);
            return Err(failed(why));
        };
        if entry.crc32c.is_some_and(|c| c != stub.crc32c) {
            return Err(conflict(format!(
                "west copy at {}/{} has checksum {} but the stub says {}",
                stub.bucket,
                key.object_key(false),
                entry.crc32c.map(stub::format_crc).unwrap_or_default(),
                stub.checksum()
            )));
        }

        // Stream it back into the same inode, ranges in parallel, checksum per range.
        let size = stub.size;
        let part = self.config.part_size;
        let count = size.div_ceil(part);
        let mut ranges = futures::stream::iter(0..count)
            .map(|i| {
                let f = Arc::clone(&file);
                let key = &key;
                async move {
                    let off = i * part;
                    let len = part.min(size - off);
                    let data = west
                        .read_range(&stub.bucket, key, off, len)
                        .await
                        .map_err(|e| west_stop("read west copy", e))?;
                    let crc = blocking(move || {
                        let crc = crc32c::crc32c(&data);
                        f.write_all_at(&data, off).map(|()| crc)
                    })
                    .await
                    .map_err(failed)?
                    .map_err(|e| east_write_stop(path, "write", e))?;
                    Ok::<_, Stop>((i, crc, len))
                }
            })
            .buffer_unordered(self.config.streams_per_file);
        let mut crcs = vec![(0u32, 0u64); count as usize];
        let mut first_err = None;
        let mut written = 0u64;
        while let Some(r) = ranges.next().await {
            match r {
                Ok((i, crc, len)) => {
                    crcs[i as usize] = (crc, len);
                    written += 1;
                    if written == 1 {
                        failpoint!("recall-mid-stream");
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
            if rt.cancel.is_cancelled() && first_err.is_none() {
                first_err = Some(FileResult::new(Outcome::Cancelled, "job cancelled").into());
            }
        }
        drop(ranges);
        if let Some(e) = first_err {
            return Err(e);
        }
        let crc = crcs.iter().fold(0u32, |acc, (c, len)| {
            crc32c::crc32c_combine(acc, *c, *len as usize)
        });
        if crc != stub.crc32c {
            return Err(conflict(format!(
                "west copy is corrupt: its data has checksum {} but the stub says {}",
                stub::format_crc(crc),
                stub.checksum()
            )));
        }

        // Durable data, then the stub record goes: the file is local again.
        let attr = self.config.stub_xattr.clone();
        let mtime = stub.mtime_ns;
        let f = Arc::clone(&file);
        blocking(move || -> std::io::Result<()> {
            stub::set_mtime(&f, mtime)?;
            f.sync_all()?;
            failpoint!("recall-after-sync");
            stub::remove_fd(&f, &attr)?;
            f.sync_all()
        })
        .await
        .map_err(failed)?
        .map_err(|e| east_write_stop(path, "finish recall of", e))?;
        failpoint!("recall-before-rtl");

        // West drops its data (durably queued), quota freed, intent resolved.
        if let Err(e) = self.engine.enqueue_setattr(&rec.name, rel, AttrOp::Rtl) {
            tracing::error!(error = %e, "cannot queue SetAttrObj rtl; recovery will");
            // The intent stays: recovery queues it at the next start.
            return Ok(FileResult {
                outcome: Outcome::Done,
                reason: String::new(),
                bytes: size,
            });
        }
        let gk = gpair_key(&rec.name, rel);
        // The remote record first (freeing its usage once), then the intent: a crash between
        // the two leaves the intent, whose recovery finds no record and frees nothing.
        if let Err(e) = self
            .engine
            .quotas
            .remove_record(self.catalog(), &rec.name, rel)
        {
            tracing::error!(error = %e, "cannot drop the remote record of a recalled file; recovery will");
            return Ok(FileResult {
                outcome: Outcome::Done,
                reason: String::new(),
                bytes: size,
            });
        }
        let mut batch = self.catalog().batch();
        batch.delete(CF_INTENTS, &gk);
        batch.delete(CF_TIERS, &gk);
        if let Err(e) = batch.commit() {
            tracing::error!(error = %e, "cannot record a finished recall; recovery will");
        }
        Ok(FileResult {
            outcome: Outcome::Done,
            reason: String::new(),
            bytes: size,
        })
    }
}
