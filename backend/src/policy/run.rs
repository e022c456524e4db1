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

/// Runs `rec`'s policy. With `free`, only the coldest candidates whose offload frees that
/// many bytes of east space go (a watermark run).
pub async fn run(
    tier: &Arc<Tiering>,
    rec: &GpairRecord,
    dry_run: bool,
    free: Option<u64>,
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
    let (plan, usage) = tokio::task::spawn_blocking(move || {
        let plan = scan::scan(&root, &compiled, &attr, now_ms() / 1000);
        (plan, scan::usage(&root))
    })
    .await
    .map_err(|e| TierError::Internal(e.to_string()))?;
    let mut plan = plan;
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
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = tier.cancel.cancelled() => return,
            }
            let records = tier.engine.gpair_records();
            last.retain(|name, _| records.iter().any(|(r, _)| &r.name == name));
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
                if free.is_none() && !periodic_due {
                    continue;
                }
                if let Some(need) = free {
                    tracing::info!(
                        gpair = rec.name,
                        need,
                        "east usage above the high watermark"
                    );
                }
                let started = Instant::now();
                // A watermark run frees what it must; a periodic one moves every candidate.
                let need = if periodic_due { None } else { free };
                let job = match run(&tier, &rec, false, need).await {
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
