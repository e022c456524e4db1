//! Forward migration of one file (DESIGN 5.2), step by step: (1) intent + quota
//! reservation; (2) upload with checksum (multipart for large files); (3) re-check the data
//! version; (4) SetAttrObj ltr through the outbox, then verify west's copy; (5) under a write
//! lease: final check, stub record (fsync), punch (fsync); (6) commit (intent out, remote
//! record in, quota used) in one catalog batch.
//!
//! Any stop before the commit rolls back: the stub record (if written) is removed, west goes
//! back to a placeholder through the outbox (rtl), the reservation is returned.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;
use gpair_proto::now_ms;

use super::job::{JobKind, JobRt, Outcome};
use super::quota::RemoteRecord;
use super::stub::{self, DataVersion, LeaseRefused, StubRecord, WriteLease};
use super::{
    blocking, east_stop, failed, failpoint, open_file, read_at, west_stop, FileResult, Intent,
    MarkState, Stop, Tiering, CF_TIERS,
};
use crate::catalog::{gpair_key, CF_INTENTS, CF_QUOTA};
use crate::entry::EntryMeta;
use crate::registry::GpairRecord;
use crate::sync::AttrOp;
use crate::west::{WestKey, WestStore};

/// Chunk size of the checksum pass over a large file.
const CRC_CHUNK: usize = 8 << 20;

/// How far an offload got before it stopped (what a rollback must undo).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reached {
    BeforeStub,
    StubWritten,
}

impl Tiering {
    pub(super) async fn offload(
        &self,
        rt: &JobRt,
        rec: &GpairRecord,
        rel: &[u8],
        path: &Path,
        west: &dyn WestStore,
    ) -> Result<FileResult, Stop> {
        let (file, md, stub) = match self.open_for_step(path, false).await {
            Ok(o) => (o.file, o.md, o.stub),
            Err(Stop::Done(r)) => return Ok(r),
            Err(e) => return Err(e),
        };
        match stub {
            Err(e) => return Err(failed(e.to_string())),
            Ok(Some(_)) => return Ok(FileResult::new(Outcome::Noop, "already remote")),
            Ok(None) => {}
        }
        if md.nlink() > 1 {
            return Ok(FileResult::new(
                Outcome::Skipped,
                format!(
                    "has {} hard links: offloading one name would turn the others into stubs behind sync's back",
                    md.nlink()
                ),
            ));
        }
        let dv = DataVersion::of(&md);
        if dv.size == 0 {
            return Ok(FileResult::new(
                Outcome::Skipped,
                "empty file: nothing to offload",
            ));
        }
        // A SetAttrObj of this file still queued (the rollback of an earlier attempt) must
        // land before a new upload, or its rtl would release the new copy.
        while self.engine.setattr_pending(&rec.name, rel) {
            if rt.cancel.is_cancelled() || self.cancel.is_cancelled() {
                return Ok(FileResult::new(Outcome::Cancelled, "job cancelled"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        if let Err(why) = self.engine.quotas.reserve(&rec.name, rec.quota, dv.size) {
            return Ok(FileResult::new(Outcome::Skipped, why));
        }
        let intent = Intent {
            kind: JobKind::Migrate,
            job: rt.id(),
            dv,
            started_ms: now_ms(),
        };
        if let Err(e) = self.put_intent(&rec.name, rel, &intent) {
            self.engine.quotas.unreserve(&rec.name, dv.size);
            return Err(e);
        }
        let mut reached = Reached::BeforeStub;
        let result = self
            .offload_steps(rt, rec, rel, path, west, file, dv, &mut reached)
            .await;
        match result {
            Ok(r) => Ok(r),
            Err(stop) => {
                self.roll_back_offload(rec, rel, path, dv.size, reached)
                    .await;
                if let Stop::Done(r) = &stop {
                    if r.outcome == Outcome::Dirty {
                        self.set_mark(&rec.name, rel, MarkState::Dirty, &r.reason);
                    }
                }
                Err(stop)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn offload_steps(
        &self,
        rt: &JobRt,
        rec: &GpairRecord,
        rel: &[u8],
        path: &Path,
        west: &dyn WestStore,
        file: File,
        dv: DataVersion,
        reached: &mut Reached,
    ) -> Result<FileResult, Stop> {
        let key = crate::west::keys::west_key(&rec.prefix, rel);
        let p = path.to_path_buf();
        let meta = blocking(move || EntryMeta::read(&p))
            .await
            .map_err(failed)?
            .map_err(|e| east_stop(path, "stat", e))?;
        let file = Arc::new(file);

        // 2. Upload, computing the checksum on the way.
        let (etag, crc) = self
            .upload(west, rec, &key, Arc::clone(&file), &meta, dv.size)
            .await?;
        if rt.cancel.is_cancelled() {
            return Err(FileResult::new(Outcome::Cancelled, "job cancelled").into());
        }
        failpoint!("offload-after-upload");

        // 3. Unchanged since we started?
        let f2 = Arc::clone(&file);
        let now = blocking(move || f2.metadata())
            .await
            .map_err(failed)?
            .map_err(|e| east_stop(path, "stat", e))?;
        if DataVersion::of(&now) != dv {
            return Err(FileResult::new(Outcome::Dirty, "written during the offload").into());
        }

        // 4. West owns the data: SetAttrObj ltr through the outbox, then verify.
        match self
            .engine
            .setattr_and_wait(&rec.name, rel, AttrOp::Ltr, &rt.cancel)
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) if rt.cancel.is_cancelled() => {
                return Err(FileResult::new(Outcome::Cancelled, "job cancelled").into())
            }
            Ok(Err(e)) => return Err(failed(format!("SetAttrObj ltr_local_to_remote: {e}"))),
            Err(e) => return Err(failed(format!("SetAttrObj ltr_local_to_remote: {e}"))),
        }
        failpoint!("offload-after-setattr");
        match west.head(&rec.bucket, &key, false).await {
            Ok(Some(e))
                if e.data_len == dv.size && e.gpair_name.is_none() && e.crc32c == Some(crc) => {}
            Ok(Some(e)) => {
                return Err(failed(format!(
                    "west copy not verified after SetAttrObj: {} bytes (want {}), gpair-name {:?}, checksum {:?}",
                    e.data_len,
                    dv.size,
                    e.gpair_name,
                    e.crc32c.map(stub::format_crc)
                )))
            }
            Ok(None) => return Err(failed("west copy vanished after SetAttrObj")),
            Err(e) => return Err(west_stop("verify west copy", e)),
        }

        // 5. Under a write lease: final check, stub record, punch.
        drop(file);
        let stub_rec = StubRecord {
            gpair: rec.name.clone(),
            gpair_value: rec.gpair_value.clone(),
            bucket: rec.bucket.clone(),
            key: key.object_key(false),
            etag,
            size: dv.size,
            mtime_ns: dv.mtime_ns,
            crc32c: crc,
            offloaded: dv,
            offloaded_at_ms: now_ms(),
        };
        let attr = self.config.stub_xattr.clone();
        let p = path.to_path_buf();
        let rec2 = stub_rec.clone();
        let released = blocking(move || release(&p, &attr, &rec2, dv))
            .await
            .map_err(failed)?;
        match released {
            Release::Done => {}
            Release::Stopped(r, stub_written) => {
                if stub_written {
                    *reached = Reached::StubWritten;
                }
                return Err(r.into());
            }
        }
        *reached = Reached::StubWritten;

        // 6. Commit.
        let gk = gpair_key(&rec.name, rel);
        let mut batch = self.catalog().batch();
        batch.delete(CF_INTENTS, &gk);
        batch.delete(CF_TIERS, &gk);
        batch.put(
            CF_QUOTA,
            &gk,
            &RemoteRecord {
                size: dv.size,
                crc32c: crc,
                offloaded_at_ms: stub_rec.offloaded_at_ms,
                job: rt.id(),
                ino: meta.ino,
            },
        );
        // A record left by an earlier file at this path (replaced before sync noticed) is
        // overwritten here: its usage goes with it.
        let stale: Option<RemoteRecord> = self.catalog().get(CF_QUOTA, &gk).ok().flatten();
        batch
            .commit()
            .map_err(|e| failed(format!("catalog: {e}")))?;
        self.engine.quotas.commit(&rec.name, dv.size);
        if let Some(old) = stale {
            self.engine.quotas.free(&rec.name, old.size);
        }
        // Deleted or replaced on east while we released it (its deletion may already have
        // been synced, before the record above existed): the record must not outlive it.
        let p = path.to_path_buf();
        let ino = meta.ino;
        let same = blocking(move || {
            std::fs::symlink_metadata(&p)
                .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == ino)
        })
        .await;
        if same == Ok(false) {
            if let Err(e) = self
                .engine
                .quotas
                .forget_path(self.catalog(), &rec.name, rel, false)
            {
                tracing::error!(error = %e, "cannot drop the remote record of a file deleted during its offload");
            }
            return Ok(FileResult::new(
                Outcome::Skipped,
                "gone: deleted or replaced during the offload",
            ));
        }
        Ok(FileResult {
            outcome: Outcome::Done,
            reason: String::new(),
            bytes: dv.size,
        })
    }

    /// Uploads the file; returns (ETag, CRC32C).
    async fn upload(
        &self,
        west: &dyn WestStore,
        rec: &GpairRecord,
        key: &WestKey,
        file: Arc<File>,
        meta: &EntryMeta,
        size: u64,
    ) -> Result<(String, u32), Stop> {
        let changed = || {
            Stop::from(FileResult::new(
                Outcome::Dirty,
                "written during the offload",
            ))
        };
        if size < self.config.multipart_threshold {
            let f = Arc::clone(&file);
            let data = blocking(move || read_at(&f, 0, size as usize))
                .await
                .map_err(failed)?
                .map_err(|e| failed(format!("read: {e}")))?;
            if data.len() as u64 != size {
                return Err(changed());
            }
            let crc = crc32c::crc32c(&data);
            let etag = west
                .put_file(&rec.bucket, key, data.into(), meta, crc, &rec.gpair_value)
                .await
                .map_err(|e| west_stop("upload", e))?;
            return Ok((etag, crc));
        }
        // Large: the checksum first (it travels in the upload's metadata), then the parts.
        let f = Arc::clone(&file);
        let crc = blocking(move || -> std::io::Result<Option<u32>> {
            let mut crc = 0u32;
            let mut off = 0u64;
            while off < size {
                let chunk = read_at(&f, off, CRC_CHUNK.min((size - off) as usize))?;
                if chunk.is_empty() {
                    return Ok(None);
                }
                crc = crc32c::crc32c_append(crc, &chunk);
                off += chunk.len() as u64;
            }
            Ok(Some(crc))
        })
        .await
        .map_err(failed)?
        .map_err(|e| failed(format!("read: {e}")))?
        .ok_or_else(changed)?;
        // Uploads of this key still open can only be leftovers of an interrupted offload
        // (this job holds the file): recovery's own abort stands aside once a new offload of
        // the file is in flight, so this one clears them.
        let stale = west
            .abort_uploads(&rec.bucket, key)
            .await
            .map_err(|e| west_stop("abort leftover multipart uploads", e))?;
        if stale > 0 {
            tracing::info!(
                key = key.key,
                uploads = stale,
                "aborted leftover multipart uploads"
            );
        }
        let id = west
            .start_upload(&rec.bucket, key, meta, crc, &rec.gpair_value)
            .await
            .map_err(|e| west_stop("start multipart upload", e))?;
        let part = self.config.part_size;
        let count = size.div_ceil(part);
        let parts = futures::stream::iter(0..count)
            .map(|i| {
                let f = Arc::clone(&file);
                let id = id.clone();
                async move {
                    let off = i * part;
                    let len = part.min(size - off) as usize;
                    let data = blocking(move || read_at(&f, off, len))
                        .await
                        .map_err(failed)?
                        .map_err(|e| failed(format!("read: {e}")))?;
                    if data.len() != len {
                        return Err(changed());
                    }
                    let n = i as i32 + 1;
                    let part_crc = crc32c::crc32c(&data);
                    let etag = west
                        .upload_part(&rec.bucket, key, &id, n, data.into())
                        .await
                        .map_err(|e| west_stop("upload part", e))?;
                    Ok::<_, Stop>((n, etag, part_crc, len))
                }
            })
            .buffer_unordered(self.config.streams_per_file)
            .collect::<Vec<_>>()
            .await;
        let mut done = Vec::with_capacity(parts.len());
        let mut first_err = None;
        for p in parts {
            match p {
                Ok(v) => done.push(v),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        done.sort_by_key(|(n, ..)| *n);
        // The checksum of the bytes actually sent must be the one the metadata declares (the
        // file could have changed between the checksum pass and the parts).
        let sent = done.iter().fold(0u32, |acc, (_, _, c, len)| {
            crc32c::crc32c_combine(acc, *c, *len)
        });
        if first_err.is_none() && sent != crc {
            first_err = Some(changed());
        }
        let finished = match first_err {
            Some(e) => Err(e),
            None => {
                let parts: Vec<(i32, String)> =
                    done.into_iter().map(|(n, etag, ..)| (n, etag)).collect();
                west.finish_upload(&rec.bucket, key, &id, &parts)
                    .await
                    .map_err(|e| west_stop("complete multipart upload", e))
            }
        };
        match finished {
            Ok(etag) => Ok((etag, crc)),
            Err(e) => {
                // No orphaned parts: abort (recovery aborts again if this fails).
                if let Err(abort) = west.abort_uploads(&rec.bucket, key).await {
                    tracing::warn!(error = %abort, "cannot abort a failed multipart upload yet");
                }
                Err(e)
            }
        }
    }

    /// Undoes an offload that stopped before its commit.
    async fn roll_back_offload(
        &self,
        rec: &GpairRecord,
        rel: &[u8],
        path: &Path,
        size: u64,
        reached: Reached,
    ) {
        if reached == Reached::StubWritten {
            // West owns a verified copy and the stub record may be on disk while the punch
            // may have released part of the data: going back could lose bytes. The intent
            // stays; recovery at the next start finishes the offload from the stub record.
            tracing::error!(path = %path.display(), "offload stopped after its stub record was written; recovery will finish it");
            return;
        }
        if let Err(e) = self.engine.enqueue_setattr(&rec.name, rel, AttrOp::Rtl) {
            tracing::error!(error = %e, "cannot queue the rollback of west to a placeholder");
            return; // the intent stays: recovery retries
        }
        self.engine.quotas.unreserve(&rec.name, size);
        self.clear_intent(&rec.name, rel);
    }
}

enum Release {
    Done,
    /// Stopped, and whether the stub record had been written (and not removed).
    Stopped(FileResult, bool),
}

/// Step 5, blocking: lease, final check, stub record + fsync, punch + mtime + fsync.
fn release(path: &Path, attr: &str, rec: &StubRecord, dv: DataVersion) -> Release {
    let fail = |what: &str, e: std::io::Error| {
        Release::Stopped(
            FileResult::new(Outcome::Failed, format!("{what} {}: {e}", path.display())),
            false,
        )
    };
    let file = match open_file(path, true) {
        Ok(f) => f,
        Err(e) => return fail("open", e),
    };
    let _lease = match WriteLease::take(&file) {
        Ok(l) => Some(l),
        Err(LeaseRefused::Busy) => {
            return Release::Stopped(
                FileResult::new(
                    Outcome::Skipped,
                    "busy: open by another process; retried by the next run",
                ),
                false,
            )
        }
        Err(LeaseRefused::Unsupported(e)) => {
            tracing::warn!(path = %path.display(), error = %e, "file leases unsupported here; relying on the data-version check alone");
            None
        }
        Err(LeaseRefused::Failed(e)) => return fail("lease", e),
    };
    match file.metadata() {
        Ok(m) if DataVersion::of(&m) == dv => {}
        Ok(_) => {
            return Release::Stopped(
                FileResult::new(Outcome::Dirty, "written during the offload"),
                false,
            )
        }
        Err(e) => return fail("stat", e),
    }
    if let Err(e) = stub::write_fd(&file, attr, rec).and_then(|()| file.sync_all()) {
        // The record may or may not be on disk: try to take it off again.
        let removed = stub::remove_fd(&file, attr).and_then(|()| file.sync_all());
        return Release::Stopped(
            FileResult::new(
                Outcome::Failed,
                format!("write stub record on {}: {e}", path.display()),
            ),
            removed.is_err(),
        );
    }
    failpoint!("offload-after-stub");
    let punched = stub::punch(&file, dv.size)
        .and_then(|()| stub::set_mtime(&file, dv.mtime_ns))
        .and_then(|()| file.sync_all());
    if let Err(e) = punched {
        return Release::Stopped(
            FileResult::new(
                Outcome::Failed,
                format!("release data of {}: {e}", path.display()),
            ),
            true,
        );
    }
    failpoint!("offload-after-punch");
    Release::Done
}
