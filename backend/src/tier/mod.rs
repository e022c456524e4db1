//! Tiering: forward migration (offload, DESIGN 5.2), reverse migration (recall, 5.3), the
//! jobs that run them, quotas and crash recovery.
//!
//! A job is created from a selection of absolute east paths, expanded once into per-file
//! records, and run with a bounded pool of transfers shared by every job. Each file goes
//! through [`offload`] or [`recall`], which journal an intent before touching west and
//! leave it only in an atomic catalog batch that also records the result; at start,
//! [`recover`] resolves every intent left by a crash (finish or roll back) before any job
//! resumes. West attribute changes go through the sync engine's durable outbox.

pub mod grant;
pub mod job;
mod offload;
pub mod quota;
mod recall;
pub mod recover;
pub mod slots;
pub mod stub;
pub mod throttle;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gpair_proto::now_ms;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::catalog::{gpair_key, CatalogError, CF_INTENTS, CF_JOBS, CF_META, CF_QUOTA};
use crate::config::TierConfig;
use crate::registry::GpairRecord;
use crate::sync::Engine;
use crate::west::WestError;
use job::{Counters, FileRecord, JobKind, JobRecord, JobRt, JobState, Outcome};
use stub::DataVersion;

/// Stops the process dead at a crash window when the daemon runs with the `failpoints`
/// feature and `FAILPOINTS=<name>=return` (docs/backend.md, "Crash tests"): it logs the name,
/// then blocks the task's thread until the test kills the process.
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        {
            if fail::eval($name, |_| ()).is_some() {
                $crate::tier::failpoint_reached($name);
            }
        }
    };
}
pub(crate) use failpoint;

/// Every crash window of 5.2 and 5.3 that has a failpoint.
pub const FAILPOINTS: &[&str] = &[
    "offload-after-upload",
    "offload-after-setattr",
    "offload-after-stub",
    "offload-after-punch",
    "recall-mid-stream",
    "recall-after-sync",
    "recall-before-rtl",
];

#[cfg(feature = "failpoints")]
pub fn failpoint_reached(name: &str) -> ! {
    tracing::error!(failpoint = name, "FAILPOINT {name} reached: stopping here");
    eprintln!("FAILPOINT {name} reached");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Installs the failpoints named in `FAILPOINTS` (no-op without the feature).
pub fn setup_failpoints() {
    #[cfg(feature = "failpoints")]
    {
        let scenario = fail::FailScenario::setup();
        // Lives for the whole process.
        std::mem::forget(scenario);
    }
}

/// A journaled migration step in flight (catalog `intents` CF, key `gpair ‖ 0 ‖ path`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intent {
    pub kind: JobKind,
    pub job: u64,
    /// The east data version observed when the step started.
    pub dv: DataVersion,
    pub started_ms: i64,
    /// An offload's multipart upload in progress (its id and the parts west acknowledged), so
    /// that an offload resumed after a transient failure or a restart uploads only the rest.
    /// Cleared once the upload is completed. Absent in intents written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<offload::UploadNote>,
}

/// Marks on local files that are not in flight (catalog `tiers` CF, key `gpair ‖ 0 ‖ path`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TierMark {
    pub state: MarkState,
    pub reason: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MarkState {
    /// Written during its last offload; local.
    Dirty,
    /// West disagrees with the stub (corrupt copy, wrong size); the stub is kept.
    Conflict,
    /// West's copy of the stub is gone; the stub is kept.
    Lost,
}

/// The tier state of one path (`gpair state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierState {
    Local,
    Offloading,
    Remote,
    Recalling,
    Dirty,
    Conflict,
    Unmanaged,
    /// A stub whose west copy is gone.
    Lost,
}

impl TierState {
    /// The name `gpair state` prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Offloading => "offloading",
            Self::Remote => "remote",
            Self::Recalling => "recalling",
            Self::Dirty => "dirty",
            Self::Conflict => "conflict",
            Self::Unmanaged => "unmanaged",
            Self::Lost => "lost",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FileState {
    pub path: PathBuf,
    pub state: TierState,
    pub gpair: String,
    pub west_key: String,
    pub size: u64,
    pub checksum: String,
    pub detail: String,
    pub offloaded_at_ms: i64,
    pub job: u64,
    pub blocks_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Precondition(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("{0}")]
    Internal(String),
    /// West cannot be reached or answered with a transient error.
    #[error("{0}")]
    Unavailable(String),
}

/// An expanded selection: (absolute path, size) of each file, and the gpairs touched.
type Selection = (Vec<(PathBuf, u64)>, Vec<String>);

/// Listed files of a job (path, record), and whether the list was cut short.
pub type JobFiles = (Vec<(Vec<u8>, FileRecord)>, bool);

/// How one file ended.
#[derive(Debug, Clone)]
pub struct FileResult {
    pub outcome: Outcome,
    pub reason: String,
    pub bytes: u64,
}

impl FileResult {
    fn new(outcome: Outcome, reason: impl Into<String>) -> Self {
        Self {
            outcome,
            reason: reason.into(),
            bytes: 0,
        }
    }
}

/// What stops one attempt at a file.
#[derive(Debug)]
enum Stop {
    /// West is unreachable: wait for the gpeer and try the file again.
    Transient(WestError),
    /// The file ends with this result.
    Done(FileResult),
}

impl From<FileResult> for Stop {
    fn from(r: FileResult) -> Self {
        Self::Done(r)
    }
}

fn failed(reason: impl Into<String>) -> Stop {
    Stop::Done(FileResult::new(Outcome::Failed, reason))
}

/// West errors: transient ones wait for the gpeer, permanent ones fail the file.
fn west_stop(what: &str, e: WestError) -> Stop {
    if e.is_permanent() {
        failed(format!("{what}: {e}"))
    } else {
        Stop::Transient(e)
    }
}

fn east_stop(path: &Path, what: &str, e: impl std::fmt::Display) -> Stop {
    failed(format!("{what} {}: {e}", path.display()))
}

pub const CF_TIERS: &str = crate::catalog::CF_TIERS;

/// Where deleted offloaded files' west data waits out its gpair's retention (bucket root).
pub const TRASH_DIR: &str = ".gpair-trash";

/// `.gpair-trash/GPAIR/MS`: the trash prefix of a deletion at `at_ms`.
pub fn trash_prefix(gpair: &str, at_ms: i64) -> String {
    format!("{TRASH_DIR}/{gpair}/{at_ms:013}")
}

pub struct Tiering {
    pub engine: Arc<Engine>,
    pub config: TierConfig,
    /// Transfer slots shared by every job, interactive work first.
    slots: Arc<slots::Slots>,
    /// Rate limits of background work, per gpair.
    throttles: Mutex<HashMap<String, throttle::Throttle>>,
    jobs: Mutex<BTreeMap<u64, Arc<JobRt>>>,
    /// Files queued or in flight in some job: path → (job, kind).
    active: Mutex<HashMap<PathBuf, (u64, JobKind)>>,
    next_id: AtomicU64,
    id_lock: Mutex<()>,
    pub cancel: CancellationToken,
    /// Reads of stubs through mounts, for `recall_after_reads`.
    reads: grant::ReadCounts,
    /// Policy scans running and done, for `gpair status`.
    pub scans: crate::policy::run::ScanBoard,
    /// When files were last recalled, for `gpair explain`.
    recalls: grant::LastRecalls,
    /// Mount sessions and caps (set by the daemon; an offload asks them for the file's
    /// exclusive cap before it releases data).
    pub sessions: std::sync::OnceLock<Arc<crate::session::Sessions>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("worker thread: {e}"))
}

impl Tiering {
    pub fn new(engine: Arc<Engine>, config: TierConfig, cancel: CancellationToken) -> Arc<Self> {
        let _ = engine.stub_xattr.set(config.stub_xattr.clone());
        engine.deleted_grace_ms.store(
            i64::try_from(config.deleted_grace.as_millis()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        let next = engine
            .catalog
            .get::<u64>(CF_META, b"next_job_id")
            .ok()
            .flatten()
            .unwrap_or(1);
        Arc::new(Self {
            slots: Arc::new(slots::Slots::new(config.transfers)),
            throttles: Mutex::new(HashMap::new()),
            engine,
            config,
            jobs: Mutex::new(BTreeMap::new()),
            active: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(next.max(1)),
            id_lock: Mutex::new(()),
            cancel,
            reads: Default::default(),
            scans: Default::default(),
            recalls: Default::default(),
            sessions: Default::default(),
        })
    }

    /// Whether a job has `path` queued or in flight.
    pub fn in_job(&self, path: &Path) -> bool {
        lock(&self.active).contains_key(path)
    }

    fn catalog(&self) -> &crate::catalog::Catalog {
        &self.engine.catalog
    }

    // ------------------------------------------------------------ selection

    /// The gpair and relative path of an absolute east path.
    pub fn locate(&self, abs: &Path) -> Option<(GpairRecord, Vec<u8>)> {
        let (name, rel) = self.engine.resolve(abs)?;
        let (rec, _) = self.engine.gpair(&name)?;
        Some((rec, rel))
    }

    /// Checks and expands a selection into (absolute path, size) of regular files.
    fn expand(&self, paths: &[PathBuf], recursive: bool) -> Result<Selection, TierError> {
        let mut files = Vec::new();
        let mut gpairs = Vec::new();
        for p in paths {
            if !p.is_absolute() {
                return Err(TierError::Invalid(format!(
                    "path {} is not absolute",
                    p.display()
                )));
            }
            let md = std::fs::symlink_metadata(p)
                .map_err(|e| TierError::NotFound(format!("{}: {e}", p.display())))?;
            let Some((rec, _)) = self.locate(p) else {
                return Err(TierError::Precondition(format!(
                    "{} is not under the share of any bound gpair",
                    p.display()
                )));
            };
            if !gpairs.contains(&rec.name) {
                gpairs.push(rec.name.clone());
            }
            if md.is_dir() {
                if !recursive {
                    return Err(TierError::Invalid(format!(
                        "{} is a directory; pass --recursive to select the files under it",
                        p.display()
                    )));
                }
                let mut stack = vec![p.clone()];
                while let Some(dir) = stack.pop() {
                    let rd = std::fs::read_dir(&dir)
                        .map_err(|e| TierError::NotFound(format!("{}: {e}", dir.display())))?;
                    for ent in rd.flatten() {
                        let path = ent.path();
                        let Ok(m) = std::fs::symlink_metadata(&path) else {
                            continue;
                        };
                        if m.is_dir() {
                            stack.push(path);
                        } else if m.is_file() {
                            files.push((path, m.size()));
                        }
                    }
                }
            } else if md.is_file() {
                files.push((p.clone(), md.size()));
            } else {
                return Err(TierError::Invalid(format!(
                    "{} is not a regular file or directory",
                    p.display()
                )));
            }
        }
        files.sort();
        files.dedup_by(|a, b| a.0 == b.0);
        Ok((files, gpairs))
    }

    // ------------------------------------------------------------ jobs

    /// Creates a job for a selection and starts it. The selection is checked and expanded
    /// first: a bad path fails the request, nothing is created.
    pub async fn create_job(
        self: &Arc<Self>,
        kind: JobKind,
        paths: Vec<PathBuf>,
        recursive: bool,
    ) -> Result<Arc<JobRt>, TierError> {
        self.create_job_as(kind, paths, recursive, false).await
    }

    /// A job of background work (policy runs, prefetch lists): it runs after interactive
    /// work ([`slots`]) and within its gpairs' rate limits ([`throttle`]).
    pub async fn create_background_job(
        self: &Arc<Self>,
        kind: JobKind,
        paths: Vec<PathBuf>,
        recursive: bool,
    ) -> Result<Arc<JobRt>, TierError> {
        self.create_job_as(kind, paths, recursive, true).await
    }

    async fn create_job_as(
        self: &Arc<Self>,
        kind: JobKind,
        paths: Vec<PathBuf>,
        recursive: bool,
        background: bool,
    ) -> Result<Arc<JobRt>, TierError> {
        if paths.is_empty() {
            return Err(TierError::Invalid("no paths given".into()));
        }
        let me = Arc::clone(self);
        let sel = paths.clone();
        let (files, gpairs) = blocking(move || me.expand(&sel, recursive))
            .await
            .map_err(TierError::Internal)??;
        let id = {
            // Allocate and persist under one lock, so the stored counter never goes back.
            let _one = lock(&self.id_lock);
            let id = self.next_id.fetch_add(1, Ordering::SeqCst);
            self.catalog().put(CF_META, b"next_job_id", &(id + 1))?;
            id
        };
        let now = now_ms();
        let rec = JobRecord {
            id,
            kind,
            state: JobState::Queued,
            paths: paths
                .iter()
                .map(|p| p.as_os_str().as_bytes().to_vec())
                .collect(),
            recursive,
            created_ms: now,
            started_ms: 0,
            finished_ms: 0,
            files_total: files.len() as u64,
            bytes_total: files.iter().map(|(_, s)| s).sum(),
            gpairs,
            background,
        };
        let me = Arc::clone(self);
        let rec2 = rec.clone();
        blocking(move || -> Result<(), CatalogError> {
            let c = me.catalog();
            let mut batch = c.batch();
            batch.put(CF_JOBS, &job::job_key(id), &rec2);
            for (p, size) in &files {
                batch.put(
                    CF_JOBS,
                    &job::file_key(id, p.as_os_str().as_bytes()),
                    &FileRecord {
                        outcome: Outcome::Pending,
                        reason: String::new(),
                        size: *size,
                        bytes: 0,
                        at_ms: 0,
                    },
                );
                if batch.len() >= 10_000 {
                    std::mem::replace(&mut batch, c.batch()).commit()?;
                }
            }
            batch.commit()?;
            c.sync_wal()
        })
        .await
        .map_err(TierError::Internal)??;
        let rt = Arc::new(JobRt::new(
            rec,
            Counters::default(),
            // Not a child of the daemon's token: a shutdown leaves jobs to resume, it does not
            // cancel them.
            CancellationToken::new(),
        ));
        lock(&self.jobs).insert(id, Arc::clone(&rt));
        tokio::spawn(Arc::clone(self).run_job(Arc::clone(&rt)));
        Ok(rt)
    }

    pub fn job(&self, id: u64) -> Option<Arc<JobRt>> {
        lock(&self.jobs).get(&id).cloned()
    }

    /// The newest jobs first.
    pub fn jobs(&self, limit: usize) -> Vec<Arc<JobRt>> {
        lock(&self.jobs)
            .values()
            .rev()
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn cancel_job(&self, id: u64) -> Option<Arc<JobRt>> {
        let rt = self.job(id)?;
        rt.cancel.cancel();
        rt.bump();
        Some(rt)
    }

    /// Failed, skipped, no-op, dirty and cancelled files of a job (up to `limit`), and
    /// whether there were more.
    pub fn job_files(&self, id: u64, limit: usize) -> JobFiles {
        let prefix = job::files_prefix(id);
        let mut out = Vec::new();
        let mut more = false;
        let _ = self.catalog().for_each_raw(CF_JOBS, &prefix, |k, v| {
            if let Ok(f) = crate::catalog::decode::<FileRecord>(CF_JOBS, k, v) {
                if !matches!(f.outcome, Outcome::Pending | Outcome::Done) {
                    if out.len() >= limit {
                        more = true;
                        return false;
                    }
                    out.push((k[prefix.len()..].to_vec(), f));
                }
            }
            true
        });
        (out, more)
    }

    fn persist_job(&self, rt: &JobRt) {
        let rec = rt.record();
        if let Err(e) = self.catalog().put(CF_JOBS, &job::job_key(rec.id), &rec) {
            tracing::error!(job = rec.id, error = %e, "cannot record a job");
        }
    }

    /// Runs the pending files of a job, then records how it ended.
    async fn run_job(self: Arc<Self>, rt: Arc<JobRt>) {
        let id = rt.id();
        let (kind, background) = {
            let r = rt.record();
            (r.kind, r.background)
        };
        rt.update(|r| {
            r.state = JobState::Running;
            if r.started_ms == 0 {
                r.started_ms = now_ms();
            }
        });
        self.persist_job(&rt);
        let prefix = job::files_prefix(id);
        let mut pending: Vec<(PathBuf, FileRecord)> = Vec::new();
        let _ = self.catalog().for_each_raw(CF_JOBS, &prefix, |k, v| {
            if let Ok(f) = crate::catalog::decode::<FileRecord>(CF_JOBS, k, v) {
                if f.outcome == Outcome::Pending {
                    let p = PathBuf::from(std::ffi::OsStr::from_bytes(&k[prefix.len()..]));
                    pending.push((p, f));
                }
            }
            true
        });
        let mut tasks = tokio::task::JoinSet::new();
        for (path, frec) in pending {
            if background && !self.throttle(&rt, &path, frec.size).await {
                if self.cancel.is_cancelled() {
                    break;
                }
                self.finish_file(
                    &rt,
                    &path,
                    &frec,
                    FileResult::new(Outcome::Cancelled, "job cancelled before this file started"),
                );
                continue;
            }
            let permit = tokio::select! {
                p = self.slots.acquire(background) => p,
                () = rt.cancel.cancelled() => {
                    self.finish_file(&rt, &path, &frec, FileResult::new(Outcome::Cancelled, "job cancelled before this file started"));
                    continue;
                }
                // Shutdown: the rest stays pending for the next start.
                () = self.cancel.cancelled() => break,
            };
            let Some(permit) = permit else { break };
            let me = Arc::clone(&self);
            let rt2 = Arc::clone(&rt);
            tasks.spawn(async move {
                let (result, permit) = me.process(&rt2, kind, &path, permit).await;
                me.finish_file(&rt2, &path, &frec, result);
                drop(permit);
            });
            // Reap finished tasks as we go, so the set stays small.
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        if self.cancel.is_cancelled() && !rt.cancel.is_cancelled() {
            // Daemon shutdown: the job stays running and resumes at the next start.
            self.persist_job(&rt);
            return;
        }
        let c = rt.counters();
        rt.set_waiting(String::new());
        rt.update(|r| {
            r.finished_ms = now_ms().max(r.started_ms);
            r.state = if rt.cancel.is_cancelled() {
                JobState::Cancelled
            } else if c.failed > 0 {
                JobState::Failed
            } else {
                JobState::Done
            };
        });
        self.persist_job(&rt);
        let me = Arc::clone(&self);
        let _ = blocking(move || me.catalog().sync_wal()).await;
        let r = rt.record();
        tracing::info!(job = id, kind = kind.verb(), state = ?r.state, done = c.files_done, failed = c.failed, skipped = c.skipped, "job finished");
    }

    /// Waits until the rate limits of `path`'s gpair let one more file of `size` bytes start
    /// (background jobs only); the job shows why it waits. False if the job or the daemon was
    /// cancelled meanwhile.
    async fn throttle(&self, rt: &JobRt, path: &Path, size: u64) -> bool {
        const WHY: &str = "rate limit of gpair ";
        loop {
            // A file outside every gpair is not limited; `process` reports it.
            let Some((rec, _)) = self.locate(path) else {
                return true;
            };
            let limits = rec
                .policy
                .as_ref()
                .map(|p| throttle::Limits {
                    files_per_sec: p.max_files_per_sec,
                    bytes_per_sec: p.max_bytes_per_sec,
                })
                .unwrap_or_default();
            let wait = if limits.is_unlimited() {
                Ok(())
            } else {
                let mut all = lock(&self.throttles);
                let t = all
                    .entry(rec.name.clone())
                    .or_insert_with(|| throttle::Throttle::new(limits));
                if t.limits() != limits {
                    // `policy set` changed them: start over at the new rates.
                    *t = throttle::Throttle::new(limits);
                }
                t.try_take(size)
            };
            let Err(wait) = wait else {
                if rt.waiting().starts_with(WHY) {
                    rt.set_waiting(String::new());
                }
                return true;
            };
            if wait > Duration::from_millis(500) {
                rt.set_waiting(format!("{WHY}{} ({})", rec.name, limits.describe()));
            }
            tokio::select! {
                () = tokio::time::sleep(wait.min(Duration::from_secs(5))) => {}
                () = rt.cancel.cancelled() => return false,
                () = self.cancel.cancelled() => return false,
            }
        }
    }

    fn finish_file(&self, rt: &JobRt, path: &Path, frec: &FileRecord, result: FileResult) {
        if self.cancel.is_cancelled()
            && !rt.cancel.is_cancelled()
            && result.outcome == Outcome::Cancelled
        {
            // Interrupted by shutdown: stays pending, resumes at the next start.
            return;
        }
        let rec = FileRecord {
            outcome: result.outcome,
            reason: result.reason,
            size: frec.size,
            bytes: result.bytes,
            at_ms: now_ms(),
        };
        if let Err(e) = self.catalog().put(
            CF_JOBS,
            &job::file_key(rt.id(), path.as_os_str().as_bytes()),
            &rec,
        ) {
            tracing::error!(error = %e, "cannot record a file's outcome");
        }
        if rec.outcome == Outcome::Failed {
            tracing::warn!(job = rt.id(), path = %path.display(), reason = rec.reason, "file failed");
        }
        if rec.outcome == Outcome::Done && rt.record().kind == JobKind::Recall {
            self.recalls.note(path, rec.at_ms);
        }
        rt.count(&rec);
    }

    /// One file of a job: coalesced with other jobs, retried while its gpeer is unreachable.
    ///
    /// A file another job is moving the same way is waited for, then looked at again (a
    /// no-op if that job finished it): whoever asked gets its answer only once the file is
    /// where it was asked to be. A recall also waits for an offload in flight; an offload
    /// of a file being recalled is skipped.
    /// The transfer `permit` is given back while the file waits for another job, so that a
    /// waiting file never holds up transfers.
    async fn process(
        self: &Arc<Self>,
        rt: &JobRt,
        kind: JobKind,
        path: &Path,
        permit: slots::Slot,
    ) -> (FileResult, Option<slots::Slot>) {
        let mut permit = Some(permit);
        loop {
            {
                let mut active = lock(&self.active);
                match active.get(path) {
                    None => {
                        active.insert(path.to_path_buf(), (rt.id(), kind));
                        break;
                    }
                    Some((other, JobKind::Recall)) if kind == JobKind::Migrate => {
                        let why = match other {
                            0 => "busy: a mount is truncating it".to_string(),
                            o => format!("busy: job {o} is recalling it"),
                        };
                        return (FileResult::new(Outcome::Skipped, why), permit);
                    }
                    Some(_) => {}
                }
            }
            permit = None;
            if rt.cancel.is_cancelled() || self.cancel.is_cancelled() {
                return (FileResult::new(Outcome::Cancelled, "job cancelled"), None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if permit.is_none() {
            // Claimed after a wait: a transfer slot again before moving data.
            let p = tokio::select! {
                p = self.slots.acquire(rt.record().background) => p,
                () = rt.cancel.cancelled() => None,
                () = self.cancel.cancelled() => None,
            };
            if p.is_none() {
                lock(&self.active).remove(path);
                return (FileResult::new(Outcome::Cancelled, "job cancelled"), None);
            }
            permit = p;
        }
        let result = loop {
            if rt.cancel.is_cancelled() || self.cancel.is_cancelled() {
                break FileResult::new(Outcome::Cancelled, "job cancelled");
            }
            let Some((rec, rel)) = self.locate(path) else {
                break FileResult::new(
                    Outcome::Skipped,
                    "not under the share of any bound gpair (unbound since?)",
                );
            };
            // Wait while the gpeer is paused (another transfer or the outbox saw it fail).
            let until = self.engine.paused_until(&rec.gpeer);
            if until > now_ms() {
                let health = self.engine.gpeer_health(&rec.gpeer).unwrap_or_default();
                rt.set_waiting(format!("gpeer {}: {}", rec.gpeer, health.last_error));
                // A file waiting for its gpeer holds no transfer slot: files of other gpeers
                // keep moving while this one is down.
                permit = None;
                let wait = Duration::from_millis((until - now_ms()).clamp(10, 5000) as u64);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = rt.cancel.cancelled() => {}
                    () = self.cancel.cancelled() => {}
                }
                continue;
            }
            if permit.is_none() {
                let p = tokio::select! {
                    p = self.slots.acquire(rt.record().background) => p,
                    () = rt.cancel.cancelled() => None,
                    () = self.cancel.cancelled() => None,
                };
                if p.is_none() {
                    break FileResult::new(Outcome::Cancelled, "job cancelled");
                }
                permit = p;
                // Paused again while this file waited for a slot: wait for the gpeer first.
                continue;
            }
            // A symlinked directory on the way must not lead out of the share.
            let (p, root) = (path.to_path_buf(), rec.local_path.clone());
            let inside = blocking(move || {
                p.parent()
                    .and_then(|d| std::fs::canonicalize(d).ok())
                    .is_some_and(|d| d.starts_with(&root))
            })
            .await
            .unwrap_or(false);
            if !inside {
                break FileResult::new(
                    Outcome::Skipped,
                    "its directory is not inside the share (a symlink on the way, or gone)",
                );
            }
            let Some(west) = self.engine.store(&rec.gpeer) else {
                break FileResult::new(
                    Outcome::Failed,
                    format!("gpeer {} is not registered", rec.gpeer),
                );
            };
            let attempt = match kind {
                JobKind::Migrate => self.offload(rt, &rec, &rel, path, west.as_ref()).await,
                JobKind::Recall => self.recall(rt, &rec, &rel, path, west.as_ref()).await,
            };
            match attempt {
                Ok(r) => {
                    self.engine.report_success(&rec.gpeer);
                    rt.set_waiting(String::new());
                    break r;
                }
                Err(Stop::Done(r)) => break r,
                Err(Stop::Transient(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "west unreachable; the file waits for its gpeer");
                    self.engine.report_transient(&rec.gpeer, &e);
                    rt.set_waiting(format!("gpeer {}: {e}", rec.gpeer));
                }
            }
        };
        if kind == JobKind::Migrate && result.outcome != Outcome::Done {
            // Stopped while waiting for its gpeer with a resumable upload kept: give it up.
            self.abandon_resumable_upload(path);
        }
        lock(&self.active).remove(path);
        (result, permit)
    }

    // ------------------------------------------------------------ catalog helpers

    fn put_intent(&self, gpair: &str, rel: &[u8], intent: &Intent) -> Result<(), Stop> {
        self.catalog()
            .put(CF_INTENTS, &gpair_key(gpair, rel), intent)
            .map_err(|e| failed(format!("catalog: {e}")))
    }

    fn clear_intent(&self, gpair: &str, rel: &[u8]) {
        if let Err(e) = self.catalog().delete(CF_INTENTS, &gpair_key(gpair, rel)) {
            tracing::error!(error = %e, "cannot clear an intent");
        }
    }

    /// Marks the file at `abs` dirty (a mount session open for writing on it was evicted:
    /// its writes may not all have reached east yet).
    pub fn mark_dirty_abs(&self, abs: &Path, reason: &str) {
        if let Some((rec, rel)) = self.locate(abs) {
            self.set_mark(&rec.name, &rel, MarkState::Dirty, reason);
        }
    }

    fn set_mark(&self, gpair: &str, rel: &[u8], state: MarkState, reason: &str) {
        let _ = self.catalog().put(
            CF_TIERS,
            &gpair_key(gpair, rel),
            &TierMark {
                state,
                reason: reason.to_owned(),
                at_ms: now_ms(),
            },
        );
    }

    // ------------------------------------------------------------ state

    /// The tier state of one path (never triggers a recall).
    pub fn state(&self, path: &Path) -> FileState {
        let mut st = FileState {
            path: path.to_path_buf(),
            state: TierState::Unmanaged,
            gpair: String::new(),
            west_key: String::new(),
            size: 0,
            checksum: String::new(),
            detail: String::new(),
            offloaded_at_ms: 0,
            job: 0,
            blocks_bytes: 0,
        };
        let md = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => {
                st.detail = e.to_string();
                return st;
            }
        };
        st.size = md.size();
        st.blocks_bytes = md.blocks() * 512;
        let Some((rec, rel)) = self.locate(path) else {
            st.detail = "not under the share of any bound gpair".into();
            return st;
        };
        st.gpair = rec.name.clone();
        if !md.is_file() {
            st.detail = "not a regular file".into();
            return st;
        }
        let key = crate::west::keys::west_key(&rec.prefix, &rel);
        st.west_key = format!("{}/{}", rec.bucket, key.object_key(false));
        let c = self.catalog();
        let gk = gpair_key(&rec.name, &rel);
        let stub = stub::read_path(path, &self.config.stub_xattr);
        let intent: Option<Intent> = c.get(CF_INTENTS, &gk).ok().flatten();
        let mark: Option<TierMark> = c.get(CF_TIERS, &gk).ok().flatten();
        let remote: Option<quota::RemoteRecord> = c.get(CF_QUOTA, &gk).ok().flatten();
        if let Some(r) = &remote {
            st.offloaded_at_ms = r.offloaded_at_ms;
        }
        match stub {
            Err(e) => {
                st.state = TierState::Conflict;
                st.detail = e.to_string();
            }
            Ok(Some(s)) => {
                st.state = TierState::Remote;
                st.checksum = s.checksum();
                st.offloaded_at_ms = s.offloaded_at_ms;
                if s.offloaded.size != md.size() {
                    st.state = TierState::Conflict;
                    st.detail = "the file changed on east after it was offloaded".into();
                }
            }
            Ok(None) => st.state = TierState::Local,
        }
        if let Some(m) = mark {
            match m.state {
                MarkState::Conflict if st.state == TierState::Remote => {
                    st.state = TierState::Conflict;
                    st.detail = m.reason;
                }
                MarkState::Lost if st.state == TierState::Remote => {
                    st.state = TierState::Lost;
                    st.detail = m.reason;
                }
                MarkState::Dirty if st.state == TierState::Local => {
                    st.state = TierState::Dirty;
                    st.detail = m.reason;
                }
                _ => {}
            }
        }
        if let Some(i) = intent {
            st.job = i.job;
            st.state = match i.kind {
                JobKind::Migrate => TierState::Offloading,
                JobKind::Recall => TierState::Recalling,
            };
        }
        st
    }

    /// Deletes retained west data whose retention has passed; returns how many objects.
    pub async fn purge_trash(&self, now: i64) -> usize {
        let mut purged = 0;
        let grace = i64::try_from(self.config.deleted_grace.as_millis()).unwrap_or(i64::MAX);
        for (rec, _) in self.engine.gpair_records() {
            let Some(west) = self.engine.store(&rec.gpeer) else {
                continue;
            };
            let prefix = format!("{TRASH_DIR}/{}/", rec.name);
            let keys = match west.list_keys(&rec.bucket, &prefix).await {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!(gpair = rec.name, error = %e, "cannot list retained data; purging later");
                    continue;
                }
            };
            let keep_ms = (i64::from(rec.retain_deleted_days) * 86_400_000).max(grace);
            for (key, _) in keys {
                let at = key[prefix.len()..]
                    .split('/')
                    .next()
                    .and_then(|t| t.parse::<i64>().ok());
                let Some(at) = at else { continue };
                if at + keep_ms > now {
                    continue;
                }
                let k = crate::west::WestKey {
                    key: key.trim_end_matches('/').to_owned(),
                    long_path: None,
                };
                match west.delete_entry(&rec.bucket, &k, key.ends_with('/')).await {
                    Ok(()) => purged += 1,
                    Err(e) => {
                        tracing::warn!(gpair = rec.name, key, error = %e, "cannot purge retained data yet")
                    }
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "purged deleted files' west data past its retention");
        }
        purged
    }

    /// Purges retained data every `interval` until shutdown.
    pub fn start_purge_loop(self: &Arc<Self>, interval: Duration) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(interval) => {}
                    () = me.cancel.cancelled() => return,
                }
                me.purge_trash(now_ms()).await;
            }
        });
    }

    /// The intents in the catalog (migrations in flight or left by a crash).
    pub fn intents_left(&self) -> Vec<(Vec<u8>, Intent)> {
        self.catalog()
            .scan(CF_INTENTS, b"", |_| {})
            .unwrap_or_default()
    }

    /// Loads the jobs of the catalog and resumes the unfinished ones (after [`recover`]).
    pub fn resume_jobs(self: &Arc<Self>) -> Result<usize, TierError> {
        let jobs: Vec<(Vec<u8>, JobRecord)> = self.catalog().scan(
            CF_JOBS,
            b"j",
            |e| tracing::error!(error = %e, "skipping a corrupt job record"),
        )?;
        let mut resumed = 0;
        for (_, rec) in jobs {
            let prefix = job::files_prefix(rec.id);
            let mut counters = Counters::default();
            let _ = self.catalog().for_each_raw(CF_JOBS, &prefix, |k, v| {
                if let Ok(f) = crate::catalog::decode::<FileRecord>(CF_JOBS, k, v) {
                    counters.add(&f);
                }
                true
            });
            let unfinished = !rec.state.finished();
            let id = rec.id;
            let rt = Arc::new(JobRt::new(rec, counters, CancellationToken::new()));
            lock(&self.jobs).insert(id, Arc::clone(&rt));
            if unfinished {
                resumed += 1;
                tokio::spawn(Arc::clone(self).run_job(rt));
            }
        }
        Ok(resumed)
    }
}

/// A regular file opened for a migration step, with its metadata and stub record (or why it
/// could not be read).
struct Opened {
    file: std::fs::File,
    md: std::fs::Metadata,
    stub: Result<Option<stub::StubRecord>, stub::StubError>,
}

impl Tiering {
    /// Opens the file of an offload or recall and reads its stub record. A file that is gone,
    /// a symlink or not a regular file ends the step as skipped.
    async fn open_for_step(&self, path: &Path, write: bool) -> Result<Opened, Stop> {
        let attr = self.config.stub_xattr.clone();
        let p = path.to_path_buf();
        let opened = blocking(move || -> std::io::Result<_> {
            let f = open_file(&p, write)?;
            let md = f.metadata()?;
            let stub = stub::read_fd(&f, &p, &attr);
            Ok(Opened { file: f, md, stub })
        })
        .await
        .map_err(failed)?;
        let skipped = |why: &str| Stop::Done(FileResult::new(Outcome::Skipped, why));
        match opened {
            Ok(o) if o.md.is_file() => Ok(o),
            Ok(_) => Err(skipped("not a regular file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(skipped("gone: deleted before its turn"))
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                Err(skipped("not a regular file (symlink)"))
            }
            Err(e) => Err(east_stop(path, "open", e)),
        }
    }
}

/// Opens a file for the migration engine: never following a symlink in the last component.
fn open_file(path: &Path, write: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Reads `len` bytes at `offset` (short only at end of file).
fn read_at(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = file.read_at(&mut buf[got..], offset + got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    buf.truncate(got);
    Ok(buf)
}
