//! Crash recovery (DESIGN 5.2, 5.3, invariant I3): at start, before any job resumes, every
//! intent left in the catalog is resolved from what the east file's stub record says.
//!
//! | intent  | stub record on the file                  | resolution                                  |
//! |---------|------------------------------------------|---------------------------------------------|
//! | offload | present, data unchanged since            | finish: punch (idempotent), commit           |
//! | offload | present, file written since              | east data is newer: drop the stub, rtl       |
//! | offload | absent, mid-upload, its job resumes it   | keep the intent: the job resumes the upload  |
//! | offload | absent                                   | roll back: rtl (west → placeholder), abort uploads |
//! | recall  | present                                  | not finished: release what was written; the job redoes it |
//! | recall  | absent                                   | finished on east: rtl, free quota            |
//!
//! rtl goes through the durable outbox, so it is applied once west is reachable; multipart
//! uploads of rolled-back offloads are aborted in the background until west answers.

use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use gpair_proto::now_ms;

use super::job::{self, FileRecord, JobKind, Outcome};
use super::quota::RemoteRecord;
use super::stub::{self, DataVersion};
use super::{open_file, Intent, MarkState, TierMark, Tiering, CF_TIERS};
use crate::catalog::{gpair_key, split_gpair_key, CatalogError, CF_INTENTS, CF_JOBS, CF_QUOTA};
use crate::sync::{join_rel, AttrOp};

/// What recovery did, for the log and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    pub offloads_finished: usize,
    pub offloads_rolled_back: usize,
    /// Offloads interrupted mid-upload whose job resumes them, reusing the uploaded parts.
    pub offloads_kept_for_resume: usize,
    pub recalls_finished: usize,
    pub recalls_undone: usize,
    /// Intents whose file is gone, or kept because the file could not be read.
    pub dropped: usize,
}

impl Tiering {
    /// Resolves every intent in the catalog. Blocking file work; call once at start.
    pub fn recover(self: &Arc<Self>) -> Result<Recovered, CatalogError> {
        let intents: Vec<(Vec<u8>, Intent)> = self.catalog().scan(
            CF_INTENTS,
            b"",
            |e| tracing::error!(error = %e, "dropping a corrupt intent record"),
        )?;
        let mut done = Recovered::default();
        for (key, intent) in intents {
            let Some((gpair, rel)) = split_gpair_key(&key).map(|(g, r)| (g.to_owned(), r.to_vec()))
            else {
                self.catalog().delete(CF_INTENTS, &key)?;
                done.dropped += 1;
                continue;
            };
            let Some((rec, _)) = self.engine.gpair(&gpair) else {
                // Unbound since: nothing of it is ours any more.
                self.catalog().delete(CF_INTENTS, &key)?;
                done.dropped += 1;
                continue;
            };
            let path = join_rel(&rec.local_path, &rel);
            let outcome = match intent.kind {
                JobKind::Migrate => self.recover_offload(&gpair, &rel, &path, &intent)?,
                JobKind::Recall => self.recover_recall(&gpair, &rel, &path, &intent)?,
            };
            match outcome {
                Resolution::OffloadFinished => done.offloads_finished += 1,
                Resolution::OffloadRolledBack => done.offloads_rolled_back += 1,
                Resolution::OffloadKeptForResume => done.offloads_kept_for_resume += 1,
                Resolution::RecallFinished => done.recalls_finished += 1,
                Resolution::RecallUndone => done.recalls_undone += 1,
                Resolution::Gone | Resolution::Left => done.dropped += 1,
            }
            tracing::info!(gpair, path = %path.display(), kind = ?intent.kind, resolution = ?outcome, "resolved an interrupted migration");
        }
        self.catalog().sync_wal()?;
        Ok(done)
    }

    /// Opens the file of an intent and reads its stub record, telling "gone", "unreadable"
    /// and "no record" apart: only a file that opened and answered ENODATA has no stub record.
    fn inspect(&self, path: &std::path::Path) -> Inspect {
        let f = match open_file(path, true) {
            Ok(f) => f,
            Err(e) if stub::is_gone(&e) || e.raw_os_error() == Some(libc::ELOOP) => {
                return Inspect::Gone
            }
            Err(e) => return Inspect::Unreadable(format!("open: {e}")),
        };
        match stub::read_fd(&f, path, &self.config.stub_xattr) {
            Ok(Some(s)) => Inspect::Stub(f, Box::new(s)),
            Ok(None) => Inspect::Local(f),
            Err(e) => Inspect::Unreadable(e.to_string()),
        }
    }

    fn recover_offload(
        self: &Arc<Self>,
        gpair: &str,
        rel: &[u8],
        path: &std::path::Path,
        intent: &Intent,
    ) -> Result<Resolution, CatalogError> {
        let gk = gpair_key(gpair, rel);
        match self.inspect(path) {
            Inspect::Stub(f, s) => {
                let now = f.metadata().ok().map(|m| DataVersion::of(&m));
                // A crash between the punch and the mtime it puts back leaves the punch's own
                // mtime: the size is the same and not a byte of data is left (a write since
                // would have allocated some), so the release just needs finishing.
                let punched = now.is_some_and(|dv| dv.size == s.offloaded.size)
                    && stub::all_holes(&f) == Some(true);
                if now.is_some_and(|dv| s.offloaded.same_data(&dv)) || punched {
                    // Stub record durable (written only after west was verified as owner):
                    // finish the release.
                    let released = stub::punch(&f, s.size)
                        .and_then(|()| stub::set_mtime(&f, s.mtime_ns))
                        .and_then(|()| f.sync_all());
                    if let Err(e) = released {
                        tracing::error!(path = %path.display(), error = %e, "cannot release the data of a recovered offload; it stays a stub with local data");
                    }
                } else {
                    // Changed after the stub record was written while nobody held a lease: the
                    // data may be partly released. West keeps its verified copy and stays owner;
                    // the stub stays; an operator decides (state: conflict).
                    let _ = self.catalog().put(
                        CF_TIERS,
                        &gk,
                        &TierMark {
                            state: MarkState::Conflict,
                            reason: "changed on east after its stub record was written (offload interrupted); west holds the offloaded copy".into(),
                            at_ms: now_ms(),
                        },
                    );
                }
                self.commit_recovered_offload(gpair, &gk, &f, &s, intent)?;
                self.set_file_outcome(intent.job, path, Outcome::Done, "", s.size);
                Ok(Resolution::OffloadFinished)
            }
            Inspect::Local(f) if intent.upload.is_some() && self.resumable(&f, path, intent) => {
                // Interrupted mid-upload, the data unchanged, and its job will offload the file
                // again: the intent keeps the upload, whose acknowledged parts the resumed
                // offload reuses (or aborts). West still holds only the placeholder.
                Ok(Resolution::OffloadKeptForResume)
            }
            Inspect::Local(_) => {
                // East holds the data (the punch only ever follows a durable stub record):
                // roll back, west back to a placeholder, no orphaned parts.
                if let Err(e) = self.engine.enqueue_setattr(gpair, rel, AttrOp::Rtl) {
                    tracing::error!(error = %e, "cannot queue rtl for a rolled-back offload");
                }
                self.abort_uploads_later(gpair.to_owned(), rel.to_vec());
                self.catalog().delete(CF_INTENTS, &gk)?;
                Ok(Resolution::OffloadRolledBack)
            }
            Inspect::Gone => {
                // Deleted or renamed while we were down: it may be a stub under another name
                // now, so west is left alone (metadata sync moves or retires the object).
                self.abort_uploads_later(gpair.to_owned(), rel.to_vec());
                self.catalog().delete(CF_INTENTS, &gk)?;
                Ok(Resolution::Gone)
            }
            Inspect::Unreadable(why) => {
                tracing::error!(path = %path.display(), why, "cannot tell how an interrupted offload ended; its intent stays");
                Ok(Resolution::Left)
            }
        }
    }

    fn commit_recovered_offload(
        &self,
        gpair: &str,
        gk: &[u8],
        f: &std::fs::File,
        s: &stub::StubRecord,
        intent: &Intent,
    ) -> Result<(), CatalogError> {
        let mut batch = self.catalog().batch();
        batch.delete(CF_INTENTS, gk);
        batch.put(
            CF_QUOTA,
            gk,
            &RemoteRecord {
                size: s.size,
                crc32c: s.crc32c,
                offloaded_at_ms: s.offloaded_at_ms,
                job: intent.job,
                ino: f
                    .metadata()
                    .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                    .unwrap_or(0),
            },
        );
        let existed = self.catalog().get_raw(CF_QUOTA, gk)?.is_some();
        batch.commit()?;
        if !existed {
            self.engine.quotas.add_used(gpair, s.size);
        }
        Ok(())
    }

    fn recover_recall(
        self: &Arc<Self>,
        gpair: &str,
        rel: &[u8],
        path: &std::path::Path,
        intent: &Intent,
    ) -> Result<Resolution, CatalogError> {
        let gk = gpair_key(gpair, rel);
        match self.inspect(path) {
            Inspect::Stub(f, s) => {
                // Not finished: what was written into the stub is released again; the job's
                // file is still pending and is recalled afresh.
                let _ = stub::punch(&f, s.size)
                    .and_then(|()| stub::set_mtime(&f, s.mtime_ns))
                    .and_then(|()| f.sync_all());
                self.catalog().delete(CF_INTENTS, &gk)?;
                Ok(Resolution::RecallUndone)
            }
            Inspect::Local(f) => {
                // The stub record is gone: the data is on east, durable. West drops its copy.
                if let Err(e) = self.engine.enqueue_setattr(gpair, rel, AttrOp::Rtl) {
                    tracing::error!(error = %e, "cannot queue rtl for a finished recall");
                }
                self.engine
                    .quotas
                    .remove_record(self.catalog(), gpair, rel)?;
                let mut batch = self.catalog().batch();
                batch.delete(CF_INTENTS, &gk);
                batch.delete(CF_TIERS, &gk);
                batch.commit()?;
                let size = f
                    .metadata()
                    .map_or(0, |m| std::os::unix::fs::MetadataExt::size(&m));
                self.set_file_outcome(intent.job, path, Outcome::Done, "", size);
                Ok(Resolution::RecallFinished)
            }
            Inspect::Gone => {
                // Renamed or deleted while we were down: west is left alone (it may hold the
                // only copy of a stub that lives under another name now).
                self.catalog().delete(CF_INTENTS, &gk)?;
                Ok(Resolution::Gone)
            }
            Inspect::Unreadable(why) => {
                tracing::error!(path = %path.display(), why, "cannot tell how an interrupted recall ended; its intent stays");
                Ok(Resolution::Left)
            }
        }
    }

    /// Whether an offload interrupted mid-upload will be resumed: the file's data is what the
    /// intent saw, and the intent's job is unfinished with this file still pending in it.
    fn resumable(&self, f: &std::fs::File, path: &std::path::Path, intent: &Intent) -> bool {
        let unchanged = f.metadata().is_ok_and(|m| DataVersion::of(&m) == intent.dv);
        let job_open = matches!(
            self.catalog().get::<job::JobRecord>(CF_JOBS, &job::job_key(intent.job)),
            Ok(Some(j)) if !j.state.finished()
        );
        let pending = matches!(
            self.catalog().get::<FileRecord>(CF_JOBS, &job::file_key(intent.job, path.as_os_str().as_bytes())),
            Ok(Some(r)) if r.outcome == Outcome::Pending
        );
        unchanged && job_open && pending
    }

    /// Records a file's outcome in its job when recovery finished it.
    fn set_file_outcome(
        &self,
        job_id: u64,
        path: &std::path::Path,
        outcome: Outcome,
        reason: &str,
        bytes: u64,
    ) {
        let key = job::file_key(job_id, path.as_os_str().as_bytes());
        let Ok(Some(mut f)) = self.catalog().get::<FileRecord>(CF_JOBS, &key) else {
            return;
        };
        if f.outcome != Outcome::Pending {
            return;
        }
        f.outcome = outcome;
        f.reason = reason.to_owned();
        f.bytes = bytes;
        f.at_ms = now_ms();
        let _ = self.catalog().put(CF_JOBS, &key, &f);
    }

    /// Aborts the multipart uploads of a rolled-back offload, retrying until west answers.
    pub(super) fn abort_uploads_later(self: &Arc<Self>, gpair: String, rel: Vec<u8>) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                let Some((rec, _)) = me.engine.gpair(&gpair) else {
                    return;
                };
                if me
                    .catalog()
                    .get_raw(CF_INTENTS, &gpair_key(&gpair, &rel))
                    .ok()
                    .flatten()
                    .is_some()
                {
                    // A new offload of the file is in flight: its upload is not an orphan.
                    return;
                }
                if let Some(west) = me.engine.store(&rec.gpeer) {
                    let key = crate::west::keys::west_key(&rec.prefix, &rel);
                    match west.abort_uploads(&rec.bucket, &key).await {
                        Ok(n) => {
                            if n > 0 {
                                tracing::info!(
                                    gpair,
                                    uploads = n,
                                    "aborted orphaned multipart uploads"
                                );
                            }
                            return;
                        }
                        Err(e) if e.is_permanent() => {
                            tracing::warn!(gpair, error = %e, "cannot abort orphaned multipart uploads");
                            return;
                        }
                        Err(_) => {}
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = me.cancel.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum Resolution {
    OffloadFinished,
    OffloadRolledBack,
    OffloadKeptForResume,
    RecallFinished,
    RecallUndone,
    /// The file is gone from its path: the intent is dropped, west left to metadata sync.
    Gone,
    /// The file could not be read: the intent stays for the next start or an operator.
    Left,
}

enum Inspect {
    Gone,
    Unreadable(String),
    Local(std::fs::File),
    Stub(std::fs::File, Box<stub::StubRecord>),
}
