//! Policy runs: `gpair policy run` and the periodic trigger. A run scans the share
//! (`scan::scan`) and, unless dry, starts an ordinary migrate job for the candidates, coldest
//! first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gpair_proto::now_ms;

use super::scan::{self, Plan};
use crate::registry::GpairRecord;
use crate::tier::job::JobKind;
use crate::tier::{TierError, Tiering};

/// What a run did.
pub struct Run {
    pub plan: Plan,
    /// (used, total) bytes of the share's filesystem before the run.
    pub usage: Option<(u64, u64)>,
    /// The migrate job started (0: dry run, or nothing to move).
    pub job: u64,
    pub scan_ms: u64,
}

/// Runs `rec`'s policy.
pub async fn run(tier: &Arc<Tiering>, rec: &GpairRecord, dry_run: bool) -> Result<Run, TierError> {
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
    let (plan, usage) = tokio::task::spawn_blocking(move || {
        let plan = scan::scan(&root, &compiled, &attr, now_ms() / 1000);
        (plan, scan::usage(&root))
    })
    .await
    .map_err(|e| TierError::Internal(e.to_string()))?;
    let scan_ms = started.elapsed().as_millis() as u64;
    let mut job = 0;
    if !dry_run && !plan.candidates.is_empty() {
        let paths = plan.candidates.iter().map(|c| c.path.clone()).collect();
        job = tier.create_job(JobKind::Migrate, paths, false).await?.id();
    }
    tracing::info!(
        gpair = rec.name,
        dry_run,
        scanned = plan.scanned_files,
        candidates = plan.candidates.len(),
        bytes = plan.candidate_bytes,
        job,
        scan_ms,
        "policy run"
    );
    Ok(Run {
        plan,
        usage,
        job,
        scan_ms,
    })
}

/// Runs every policy that has an interval, that often (the first run one interval after the
/// policy is seen), skipping a gpair whose previous run's job is still going.
pub fn start_periodic(tier: Arc<Tiering>) {
    tokio::spawn(async move {
        // gpair → (when its last run started, the job it started)
        let mut last: HashMap<String, (Instant, u64)> = HashMap::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = tier.cancel.cancelled() => return,
            }
            let records = tier.engine.gpair_records();
            last.retain(|name, _| records.iter().any(|(r, _)| &r.name == name));
            for (rec, _) in records {
                let Some(every) = rec.policy.as_ref().and_then(|p| p.interval_secs) else {
                    last.remove(&rec.name);
                    continue;
                };
                let (since, job) = *last.entry(rec.name.clone()).or_insert((Instant::now(), 0));
                if since.elapsed() < Duration::from_secs(every) {
                    continue;
                }
                if job > 0 && tier.job(job).is_some_and(|j| !j.record().state.finished()) {
                    continue;
                }
                let started = Instant::now();
                let job = match run(&tier, &rec, false).await {
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
