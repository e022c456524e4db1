//! Policy runs: `gpair policy run` and the periodic trigger. A run scans the share
//! (`scan::scan`) and, unless dry, starts an ordinary migrate job for the candidates, coldest
//! first.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gpair_proto::now_ms;

use super::rules::Keep;
use super::scan::{self, Plan, Progress};
use crate::catalog::{gpair_key, CF_ENTRIES};
use crate::registry::GpairRecord;
use crate::sync::EntryRecord;
use crate::tier::job::JobKind;
use crate::tier::{TierError, TierState, Tiering};

/// What started a run (shown by `gpair status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `gpair policy run`, or its dry run.
    Admin,
    Periodic,
    Watermark,
    SoftLimit,
}

impl Trigger {
    pub fn name(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Self::Admin, true) => "dry run",
            (Self::Admin, false) => "run",
            (Self::Periodic, _) => "periodic",
            (Self::Watermark, _) => "watermark",
            (Self::SoftLimit, _) => "soft limit",
        }
    }
}

/// One gpair's scan as `gpair status` shows it: the running one, else the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStatus {
    pub gpair: String,
    pub trigger: &'static str,
    pub started_ms: i64,
    /// 0 while it runs.
    pub finished_ms: i64,
    pub dirs: u64,
    pub files: u64,
    pub candidates: u64,
    pub candidate_bytes: u64,
}

/// Per gpair: its last scan, with the live counters while it runs.
type Scans = BTreeMap<String, (ScanStatus, Option<Arc<Progress>>)>;

/// Scans running and done, per gpair.
#[derive(Debug, Default)]
pub struct ScanBoard {
    scans: Mutex<Scans>,
}

impl ScanBoard {
    fn map(&self) -> std::sync::MutexGuard<'_, Scans> {
        self.scans
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start(&self, gpair: &str, trigger: &'static str) -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        let st = ScanStatus {
            gpair: gpair.to_owned(),
            trigger,
            started_ms: now_ms(),
            finished_ms: 0,
            dirs: 0,
            files: 0,
            candidates: 0,
            candidate_bytes: 0,
        };
        self.map()
            .insert(gpair.to_owned(), (st, Some(Arc::clone(&progress))));
        progress
    }

    fn finish(&self, gpair: &str, progress: &Arc<Progress>) {
        if let Some((st, live)) = self.map().get_mut(gpair) {
            if live.as_ref().is_some_and(|p| Arc::ptr_eq(p, progress)) {
                *st = snapshot(st, progress);
                st.finished_ms = now_ms().max(st.started_ms);
                *live = None;
            }
        }
    }

    /// Every gpair's scan, live counters read now; those of gpairs not in `bound` are
    /// forgotten.
    pub fn list(&self, bound: &[String]) -> Vec<ScanStatus> {
        let mut m = self.map();
        m.retain(|g, _| bound.contains(g));
        m.values()
            .map(|(st, live)| {
                live.as_ref()
                    .map_or_else(|| st.clone(), |p| snapshot(st, p))
            })
            .collect()
    }
}

fn snapshot(st: &ScanStatus, p: &Progress) -> ScanStatus {
    ScanStatus {
        dirs: p.dirs.load(Ordering::Relaxed),
        files: p.files.load(Ordering::Relaxed),
        candidates: p.candidates.load(Ordering::Relaxed),
        candidate_bytes: p.candidate_bytes.load(Ordering::Relaxed),
        ..st.clone()
    }
}

/// Whether the catalog's record of `rel` (gpair `gpair`) is as current as the file whose
/// metadata is `md`: west has seen its size and mtime.
pub fn synced(tier: &Tiering, gpair: &str, rel: &[u8], md: &std::fs::Metadata) -> bool {
    let mtime_ns = md.mtime().saturating_mul(1_000_000_000) + md.mtime_nsec();
    matches!(
        tier.engine.catalog.get::<EntryRecord>(CF_ENTRIES, &gpair_key(gpair, rel)),
        Ok(Some(e)) if e.meta.size == md.size() && e.meta.mtime_ns == mtime_ns
    )
}

/// Whether `path` is open for writing: a mount session holds a write cap on it, or a local
/// process has it open for writing (a read lease is refused; not probed while a job has the
/// file: the probe would break that job's write lease, and the job checks anyway).
pub fn open_for_write(tier: &Tiering, gpair: &str, path: &Path, md: &std::fs::Metadata) -> bool {
    let file = crate::caps::FileId {
        gpair: gpair.to_owned(),
        ino: md.ino(),
    };
    if tier.sessions.get().is_some_and(|s| s.has_writers(&file)) {
        return true;
    }
    !tier.in_job(path) && super::explain::open_for_write(path) == Some(true)
}

/// The checks a candidate gets beyond the rules: open for writing ([`open_for_write`]),
/// not synced yet, dirty.
fn safety(
    tier: &Tiering,
    gpair: &str,
    path: &Path,
    rel: &[u8],
    md: &std::fs::Metadata,
) -> Option<Keep> {
    if open_for_write(tier, gpair, path, md) {
        return Some(Keep::OpenForWrite);
    }
    if !synced(tier, gpair, rel, md) {
        return Some(Keep::Unsynced);
    }
    if tier.state(path).state == TierState::Dirty {
        return Some(Keep::Dirty);
    }
    None
}

/// What a run did.
pub struct Run {
    pub plan: Plan,
    /// (used, total) bytes of the share's filesystem before the run.
    pub usage: Option<(u64, u64)>,
    /// The migrate job started (0: dry run, or nothing to move).
    pub job: u64,
    pub scan_ms: u64,
}

/// Which candidates a run moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// Every one (`policy run`, periodic runs).
    All,
    /// The coldest, until their offload frees this many bytes of east space (watermarks).
    Free(u64),
    /// The coldest, until the share's local data is under this many bytes (soft limit).
    LocalUnder(u64),
}

/// Runs `rec`'s policy, moving the candidates `select` picks.
pub async fn run(
    tier: &Arc<Tiering>,
    rec: &GpairRecord,
    dry_run: bool,
    select: Select,
    trigger: Trigger,
) -> Result<Run, TierError> {
    let Some(rules) = rec.policy.clone() else {
        return Err(TierError::Precondition(format!(
            "gpair {} has no policy (set one with `gpair policy set {}`)",
            rec.name, rec.name
        )));
    };
    let compiled = rules.compile().map_err(TierError::Internal)?;
    let root = rec.local_path.clone();
    let attr = tier.config.stub_xattr.clone();
    let started = Instant::now();
    let progress = tier.scans.start(&rec.name, trigger.name(dry_run));
    let (t, name, p) = (Arc::clone(tier), rec.name.clone(), Arc::clone(&progress));
    let scanned = tokio::task::spawn_blocking(move || {
        let check =
            |path: &Path, rel: &[u8], md: &std::fs::Metadata| safety(&t, &name, path, rel, md);
        let opts = scan::Options {
            progress: Some(&p),
            check: Some(&check),
            ..scan::Options::default()
        };
        let plan = scan::scan_with(&root, &compiled, &attr, now_ms() / 1000, &opts);
        (plan, scan::usage(&root))
    })
    .await;
    tier.scans.finish(&rec.name, &progress);
    let (plan, usage) = scanned.map_err(|e| TierError::Internal(e.to_string()))?;
    let mut plan = plan;
    let free = match select {
        Select::All => None,
        Select::Free(n) => Some(n),
        Select::LocalUnder(limit) => Some(plan.local_bytes.saturating_sub(limit)),
    };
    if let Some(need) = free {
        let mut freed = 0u64;
        let keep = plan
            .candidates
            .iter()
            .take_while(|c| {
                let more = freed < need;
                freed += c.frees;
                more
            })
            .count();
        plan.candidates.truncate(keep);
        plan.candidate_bytes = plan.candidates.iter().map(|c| c.size).sum();
    }
    let scan_ms = started.elapsed().as_millis() as u64;
    let mut job = 0;
    if !dry_run && !plan.candidates.is_empty() {
        let paths = plan.candidates.iter().map(|c| c.path.clone()).collect();
        job = tier
            .create_background_job(JobKind::Migrate, paths, false)
            .await?
            .id();
    }
    // A soft-limit check that found nothing to do is not news.
    let quiet = job == 0 && matches!(select, Select::LocalUnder(_));
    if quiet {
        tracing::debug!(
            gpair = rec.name,
            local = plan.local_bytes,
            scan_ms,
            "soft limit checked"
        );
    } else {
        tracing::info!(
            gpair = rec.name,
            ?select,
            dry_run,
            scanned = plan.scanned_files,
            candidates = plan.candidates.len(),
            bytes = plan.candidate_bytes,
            job,
            scan_ms,
            "policy run"
        );
    }
    Ok(Run {
        plan,
        usage,
        job,
        scan_ms,
    })
}

/// When a new soft limit is first checked, and how often after that.
const SOFT_LIMIT_FIRST_CHECK: Duration = Duration::from_secs(2);
const SOFT_LIMIT_CHECKS: Duration = Duration::from_secs(30);

/// How much east space must be freed to bring the share's filesystem from above `high` percent
/// to `low` percent, if it is above.
pub fn over_high(used: u64, total: u64, high: u8, low: u8) -> Option<u64> {
    if total == 0 || u128::from(used) * 100 <= u128::from(total) * u128::from(high) {
        return None;
    }
    let target = (u128::from(total) * u128::from(low) / 100) as u64;
    Some(used.saturating_sub(target))
}

/// Runs every policy that has an interval, that often (the first run one interval after the
/// policy is seen), and every policy with watermarks whenever its share's filesystem is above
/// `high` (the coldest candidates, until usage would be under `low`); a gpair whose previous
/// run's job is still going is skipped.
pub fn start_periodic(tier: Arc<Tiering>) {
    tokio::spawn(async move {
        // gpair → (when its last run started, the job it started)
        let mut last: HashMap<String, (Instant, u64)> = HashMap::new();
        // gpair → when its soft limit is next checked (a scan: not every second)
        let mut soft_due: HashMap<String, Instant> = HashMap::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = tier.cancel.cancelled() => return,
            }
            let records = tier.engine.gpair_records();
            last.retain(|name, _| records.iter().any(|(r, _)| &r.name == name));
            soft_due.retain(|name, _| records.iter().any(|(r, _)| &r.name == name));
            for (rec, _) in records {
                let Some(policy) = rec.policy.clone() else {
                    last.remove(&rec.name);
                    continue;
                };
                let (since, job) = *last.entry(rec.name.clone()).or_insert((Instant::now(), 0));
                if job > 0 && tier.job(job).is_some_and(|j| !j.record().state.finished()) {
                    continue;
                }
                let free = match (policy.high_percent, policy.low_percent) {
                    (Some(high), Some(low)) => {
                        let root = rec.local_path.clone();
                        let usage = tokio::task::spawn_blocking(move || scan::usage(&root))
                            .await
                            .ok()
                            .flatten();
                        usage.and_then(|(used, total)| over_high(used, total, high, low))
                    }
                    _ => None,
                };
                let periodic_due = policy
                    .interval_secs
                    .is_some_and(|every| since.elapsed() >= Duration::from_secs(every));
                let soft = policy.east_soft_limit.filter(|_| {
                    let due = soft_due
                        .entry(rec.name.clone())
                        .or_insert_with(|| Instant::now() + SOFT_LIMIT_FIRST_CHECK);
                    if Instant::now() < *due {
                        return false;
                    }
                    *due = Instant::now() + SOFT_LIMIT_CHECKS;
                    true
                });
                // A periodic run moves every candidate; a watermark or soft-limit run what
                // it must (the soft limit is found out by the run's own scan).
                let (select, trigger) = match (periodic_due, free, soft) {
                    (true, ..) => (Select::All, Trigger::Periodic),
                    (false, Some(need), _) => {
                        tracing::info!(
                            gpair = rec.name,
                            need,
                            "east usage above the high watermark"
                        );
                        (Select::Free(need), Trigger::Watermark)
                    }
                    (false, None, Some(limit)) => (Select::LocalUnder(limit), Trigger::SoftLimit),
                    (false, None, None) => continue,
                };
                let started = Instant::now();
                let job = match run(&tier, &rec, false, select, trigger).await {
                    Ok(r) => r.job,
                    Err(e) => {
                        tracing::warn!(gpair = rec.name, "periodic policy run failed: {e}");
                        0
                    }
                };
                last.insert(rec.name.clone(), (started, job));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::over_high;

    #[test]
    fn watermarks() {
        assert_eq!(over_high(79, 100, 80, 50), None);
        assert_eq!(over_high(80, 100, 80, 50), None, "at high is not above it");
        assert_eq!(over_high(81, 100, 80, 50), Some(31));
        assert_eq!(over_high(900, 1000, 80, 50), Some(400));
        assert_eq!(over_high(5, 0, 80, 50), None);
    }
}
