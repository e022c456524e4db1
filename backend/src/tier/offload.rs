//! Forward migration of one file (DESIGN 5.2), step by step: (1) intent + quota
//! reservation; (2) upload with checksum (multipart for large files); (3) re-check the data
//! version; (4) SetAttrObj ltr through the outbox, then verify west's copy; (5) under a write
//! lease: final check, stub record (fsync), punch (fsync); (6) commit (intent out, remote
//! record in, quota used) in one catalog batch.
//!
//! Any stop before the commit rolls back: the stub record (if written) is removed, west goes
//! back to a placeholder through the outbox (rtl), the reservation is returned.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use gpair_proto::now_ms;

use super::job::{JobKind, JobRt, Outcome};
use super::quota::RemoteRecord;
use super::stub::{self, DataVersion, LeaseRefused, StubRecord, WriteLease};
use super::{
    blocking, east_stop, failed, failpoint, lock, open_file, read_at, west_stop, FileResult,
    Intent, MarkState, Stop, Tiering, CF_TIERS,
};
use crate::catalog::{gpair_key, CF_INTENTS, CF_QUOTA};
use crate::entry::EntryMeta;
use crate::registry::GpairRecord;
use crate::sync::AttrOp;
use crate::west::{WestKey, WestStore};

/// Chunk size of the checksum pass over a large file.
const CRC_CHUNK: usize = 8 << 20;

/// A multipart upload in progress, journaled in the offload's intent: enough for a later
/// attempt (after a transient failure, or a restart) to list the parts west holds, check them
/// against what it recorded, and upload only the rest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadNote {
    pub id: String,
    /// CRC32C of the whole file the upload carries (its metadata declares it).
    pub crc32c: u32,
    pub part_size: u64,
    /// Parts west acknowledged, by number.
    pub parts: BTreeMap<i32, NotedPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NotedPart {
    pub etag: String,
    pub crc32c: u32,
    pub len: u64,
}

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
        // A writer evicted from here on may still be writing (partitioned, not dead): the
        // release step refuses the file then.
        let began_ms = now_ms();
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
        // Held open for writing through a mount: ask for the file now (revokes), so a file a
        // writer keeps is deferred before anything is uploaded.
        if let Some(sessions) = self.sessions.get() {
            let id = crate::caps::FileId {
                gpair: rec.name.clone(),
                ino: md.ino(),
            };
            if let Some(why) = sessions.fenced(&id) {
                return Ok(FileResult::new(Outcome::Skipped, why));
            }
            if sessions.has_writers(&id) {
                let why = format!("offload (job {})", rt.id());
                match sessions.exclusive(&id, path, &why, &rt.cancel).await {
                    Ok(exclusive) => drop(exclusive),
                    Err(deferred) => return Ok(FileResult::new(Outcome::Skipped, deferred.0)),
                }
            }
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
        // A multipart upload of this very data kept by an earlier attempt (a transient failure,
        // or a restart that recovery kept for resuming): its parts are reused where west still
        // holds them.
        let gk = gpair_key(&rec.name, rel);
        let resume = self
            .catalog()
            .get::<Intent>(CF_INTENTS, &gk)
            .ok()
            .flatten()
            .filter(|i| i.kind == JobKind::Migrate && i.dv == dv)
            .and_then(|i| i.upload);
        let intent = Intent {
            kind: JobKind::Migrate,
            job: rt.id(),
            dv,
            started_ms: now_ms(),
            upload: resume.clone(),
        };
        if let Err(e) = self.put_intent(&rec.name, rel, &intent) {
            self.engine.quotas.unreserve(&rec.name, dv.size);
            return Err(e);
        }
        let mut reached = Reached::BeforeStub;
        let result = self
            .offload_steps(
                rt,
                rec,
                rel,
                path,
                west,
                file,
                dv,
                resume,
                began_ms,
                &mut reached,
            )
            .await;
        match result {
            Ok(r) => Ok(r),
            Err(stop @ Stop::Transient(_))
                if reached == Reached::BeforeStub && self.upload_note(&gk).is_some() =>
            {
                // West went away mid-upload: keep the intent and its upload for the next
                // attempt (no rtl: west holds only parts, the object is still the
                // placeholder). The reservation is taken again by that attempt.
                self.engine.quotas.unreserve(&rec.name, dv.size);
                Err(stop)
            }
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
        resume: Option<UploadNote>,
        began_ms: i64,
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
            .upload(
                west,
                rec,
                rel,
                &key,
                Arc::clone(&file),
                &meta,
                dv.size,
                resume,
            )
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

        // 5. Under the exclusive cap (no mount session may write: write caps are revoked and
        // waited for, a file still held is deferred) and a write lease: final check, stub
        // record, punch.
        let _exclusive = match self.sessions.get() {
            Some(sessions) => {
                let id = crate::caps::FileId {
                    gpair: rec.name.clone(),
                    ino: meta.ino,
                };
                let why = format!("offload (job {})", rt.id());
                let exclusive = sessions
                    .exclusive(&id, path, &why, &rt.cancel)
                    .await
                    .map_err(|deferred| FileResult::new(Outcome::Skipped, deferred.0))?;
                // A writer evicted meanwhile may still be alive (partitioned) with writes
                // on the way: no release under it.
                if let Some(who) = sessions.evicted_writer_since(&id, began_ms) {
                    return Err(FileResult::new(
                        Outcome::Dirty,
                        format!("{who} had it open for writing and was evicted during the offload; retried by the next run"),
                    )
                    .into());
                }
                Some(exclusive)
            }
            None => None,
        };
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

    /// The upload journaled in a file's intent, if any.
    fn upload_note(&self, gk: &[u8]) -> Option<UploadNote> {
        self.catalog()
            .get::<Intent>(CF_INTENTS, gk)
            .ok()
            .flatten()
            .and_then(|i| i.upload)
    }

    /// Journals (or clears) the multipart upload of the file's offload intent.
    fn journal_upload(&self, gk: &[u8], note: Option<&UploadNote>) -> Result<(), Stop> {
        let Some(mut intent) = self
            .catalog()
            .get::<Intent>(CF_INTENTS, gk)
            .map_err(|e| failed(format!("catalog: {e}")))?
        else {
            return Err(failed("the offload's intent vanished during its upload"));
        };
        intent.upload = note.cloned();
        self.catalog()
            .put(CF_INTENTS, gk, &intent)
            .map_err(|e| failed(format!("catalog: {e}")))
    }

    /// A file whose offload kept its multipart upload for resuming and then stopped for good
    /// (job cancelled, file unbound): west back to a placeholder, the intent dropped, the
    /// upload aborted once west answers. Left alone at daemon shutdown: recovery decides.
    pub(super) fn abandon_resumable_upload(self: &Arc<Self>, path: &Path) {
        if self.cancel.is_cancelled() {
            return;
        }
        let Some((rec, rel)) = self.locate(path) else {
            return;
        };
        let gk = gpair_key(&rec.name, &rel);
        let Ok(Some(intent)) = self.catalog().get::<Intent>(CF_INTENTS, &gk) else {
            return;
        };
        if intent.kind != JobKind::Migrate || intent.upload.is_none() {
            return;
        }
        if let Err(e) = self.engine.enqueue_setattr(&rec.name, &rel, AttrOp::Rtl) {
            tracing::error!(error = %e, "cannot queue the rollback of west to a placeholder");
            return; // the intent stays: recovery retries
        }
        self.clear_intent(&rec.name, &rel);
        self.abort_uploads_later(rec.name.clone(), rel);
        tracing::info!(path = %path.display(), "gave up a kept multipart upload; aborting it");
    }

    /// Uploads the file; returns (ETag, CRC32C). A multipart upload is journaled in the
    /// intent as it goes; `resume` is one an earlier attempt kept.
    #[allow(clippy::too_many_arguments)]
    async fn upload(
        &self,
        west: &dyn WestStore,
        rec: &GpairRecord,
        rel: &[u8],
        key: &WestKey,
        file: Arc<File>,
        meta: &EntryMeta,
        size: u64,
        resume: Option<UploadNote>,
    ) -> Result<(String, u32), Stop> {
        let changed = || {
            Stop::from(FileResult::new(
                Outcome::Dirty,
                "written during the offload",
            ))
        };
        if size < self.config.multipart_threshold {
            if resume.is_some() {
                // Kept by an attempt made with a lower threshold: not needed any more.
                west.abort_uploads(&rec.bucket, key)
                    .await
                    .map_err(|e| west_stop("abort leftover multipart uploads", e))?;
                self.journal_upload(&gpair_key(&rec.name, rel), None)?;
            }
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
        let gk = gpair_key(&rec.name, rel);
        let part = self.config.part_size;
        let count = size.div_ceil(part);
        // Parts west already holds for this data: listed by west with the ETag and length we
        // journaled when it acknowledged them (each is checked again against the file's bytes
        // below before it is reused).
        let mut kept: Option<(String, BTreeMap<i32, NotedPart>)> = None;
        if let Some(note) = resume.filter(|n| n.crc32c == crc && n.part_size == part) {
            match west.list_parts(&rec.bucket, key, &note.id).await {
                Ok(Some(listed)) => {
                    let parts: BTreeMap<i32, NotedPart> = listed
                        .into_iter()
                        .filter_map(|l| {
                            let n = note.parts.get(&l.number)?;
                            (n.etag == l.etag && n.len == l.size).then(|| (l.number, n.clone()))
                        })
                        .collect();
                    tracing::info!(
                        key = key.key,
                        upload_id = note.id,
                        reused = parts.len(),
                        parts = count,
                        "resuming an interrupted multipart upload"
                    );
                    kept = Some((note.id, parts));
                }
                Ok(None) => {
                    tracing::info!(
                        key = key.key,
                        "the interrupted multipart upload is gone on west; starting afresh"
                    );
                }
                Err(e) => return Err(west_stop("list the parts of an interrupted upload", e)),
            }
        }
        let (id, have) = match kept {
            Some(k) => k,
            None => {
                // Uploads of this key still open can only be leftovers of an interrupted
                // offload (this job holds the file): recovery's own abort stands aside once a
                // new offload of the file is in flight, so this one clears them.
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
                (id, BTreeMap::new())
            }
        };
        let note = Mutex::new(UploadNote {
            id: id.clone(),
            crc32c: crc,
            part_size: part,
            parts: have.clone(),
        });
        let journaled = {
            let g = lock(&note);
            self.journal_upload(&gk, Some(&g))
        };
        if let Err(e) = journaled {
            if let Err(abort) = west.abort_uploads(&rec.bucket, key).await {
                tracing::warn!(error = %abort, "cannot abort a multipart upload yet");
            }
            return Err(e);
        }
        let (note, have) = (&note, &have);
        let parts = futures::stream::iter(0..count)
            .map(|i| {
                let f = Arc::clone(&file);
                let id = id.clone();
                let gk = gk.clone();
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
                    if let Some(h) = have
                        .get(&n)
                        .filter(|h| h.crc32c == part_crc && h.len == len as u64)
                    {
                        return Ok::<_, Stop>((n, h.etag.clone(), part_crc, len));
                    }
                    let etag = west
                        .upload_part(&rec.bucket, key, &id, n, data.into())
                        .await
                        .map_err(|e| west_stop("upload part", e))?;
                    {
                        let mut g = lock(note);
                        g.parts.insert(
                            n,
                            NotedPart {
                                etag: etag.clone(),
                                crc32c: part_crc,
                                len: len as u64,
                            },
                        );
                        self.journal_upload(&gk, Some(&g))?;
                    }
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
                    // A transient stop wins: the upload is kept for the next attempt.
                    if matches!(e, Stop::Transient(_)) || first_err.is_none() {
                        first_err = Some(e);
                    }
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
            Ok(etag) => {
                // Completed: nothing left to resume.
                self.journal_upload(&gk, None)?;
                Ok((etag, crc))
            }
            Err(e @ Stop::Transient(_)) => {
                // West went away: the parts it acknowledged stay journaled and are reused by
                // the next attempt (which aborts them instead if it cannot).
                let kept = lock(note).parts.len();
                tracing::info!(
                    key = key.key,
                    upload_id = id,
                    parts = kept,
                    "multipart upload interrupted; keeping its parts for resuming"
                );
                Err(e)
            }
            Err(e) => {
                // No orphaned parts: abort (recovery aborts again if this fails).
                let _ = self.journal_upload(&gk, None);
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
