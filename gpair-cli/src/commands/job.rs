//! `gpair job ls | show | watch | cancel`, and waiting for a job (`--wait` of `migrate` and
//! `recall` ends up here too).

use std::time::Instant;

use gpair_proto::pb;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::{Context, Outcome};
use crate::backend::BackendClient;
use crate::cli::JobCommand;
use crate::error::{CliError, Exit};
use crate::progress::Progress;
use crate::validate;
use crate::view;

pub(super) async fn execute(cmd: JobCommand, ctx: &Context) -> Result<Outcome, CliError> {
    match cmd {
        JobCommand::Ls { limit } => {
            let resp = ctx
                .backend
                .connect()
                .await?
                .list_jobs(pb::ListJobsRequest {
                    limit: limit.unwrap_or(0),
                })
                .await?;
            Ok(view::job::list(&resp.jobs).into())
        }
        JobCommand::Show { id, files_limit } => {
            let id = validate::job_id(&id)?;
            let j = ctx
                .backend
                .connect()
                .await?
                .get_job(pb::GetJobRequest {
                    id,
                    files_limit: files_limit.unwrap_or(0),
                })
                .await?;
            Ok(view::job::report(&j, gpair_proto::now_ms()).into())
        }
        JobCommand::Watch { id } => {
            let id = validate::job_id(&id)?;
            let mut client = ctx.backend.connect().await?;
            wait(&mut client, id).await
        }
        JobCommand::Cancel { id } => {
            let id = validate::job_id(&id)?;
            let j = ctx
                .backend
                .connect()
                .await?
                .cancel_job(pb::GetJobRequest { id, files_limit: 0 })
                .await?;
            Ok(view::job::cancelled(&j, gpair_proto::now_ms()).into())
        }
    }
}

/// Follows job `id` until it finishes, showing progress on stderr, then prints its report
/// (as `job show`). The process then fails if the job did not end DONE: exit 5 for FAILED,
/// 6 for CANCELLED, 4 if the backend ended the watch of a job still running.
pub(super) async fn wait(client: &mut BackendClient, id: u64) -> Result<Outcome, CliError> {
    let mut progress = Progress::stderr();
    let followed = follow(client, id, &mut progress).await;
    progress.finish();
    followed?;
    // The watch carries counters only; the report lists the files with their reasons.
    let j = client
        .get_job(pb::GetJobRequest { id, files_limit: 0 })
        .await?;
    Ok(Outcome {
        rendered: view::job::report(&j, gpair_proto::now_ms()),
        failure: ending_failure(&j),
    })
}

/// How a job that was waited for makes the process fail, if it does.
pub fn ending_failure(j: &pb::Job) -> Option<CliError> {
    match pb::JobState::try_from(j.state) {
        Ok(pb::JobState::Done) => None,
        Ok(pb::JobState::Failed) => Some(CliError::JobFailed {
            id: j.id,
            failed: j.files_failed,
            total: j.files_total,
        }),
        Ok(pb::JobState::Cancelled) => Some(CliError::JobCancelled {
            id: j.id,
            unprocessed: j.files_cancelled,
        }),
        _ => Some(CliError::WatchEnded {
            id: j.id,
            state: crate::format::job_state(j.state),
        }),
    }
}

/// Reads the job's watch until it shows the job finished, or the backend ends it. Ctrl-C
/// stops the waiting, not the job.
async fn follow<W: std::io::Write>(
    client: &mut BackendClient,
    id: u64,
    progress: &mut Progress<W>,
) -> Result<(), CliError> {
    // Registered before the watch opens, so a Ctrl-C from the first progress line on is ours.
    // Without a handler Ctrl-C keeps its default and ends the process.
    let mut ctrl_c = signal(SignalKind::interrupt()).ok();
    let mut watch = client
        .watch_job(pb::GetJobRequest { id, files_limit: 0 })
        .await?;
    progress.start(id);
    loop {
        let due = progress.next_due();
        tokio::select! {
            next = watch.next() => match next {
                Ok(Some(j)) => {
                    progress.update(&j, Instant::now());
                    if view::job::is_finished(j.state) {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                // The connection went (or the backend is going away): the job is not affected.
                Err(e) if e.exit_code() == Exit::Unreachable => {
                    return Err(CliError::WatchLost { id, cause: Box::new(e) })
                }
                Err(e) => return Err(e),
            },
            () = sleep_until(due) => progress.tick(Instant::now()),
            Some(()) = interrupted(&mut ctrl_c) => return Err(CliError::Interrupted { id }),
        }
    }
}

/// The next Ctrl-C; never without a handler.
async fn interrupted(ctrl_c: &mut Option<Signal>) -> Option<()> {
    match ctrl_c {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `due`, or forever without one.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endings() {
        let mut j = pb::Job {
            id: 4,
            state: pb::JobState::Done as i32,
            files_total: 10,
            files_failed: 0,
            files_cancelled: 6,
            ..Default::default()
        };
        assert!(ending_failure(&j).is_none());
        j.state = pb::JobState::Failed as i32;
        j.files_failed = 2;
        assert!(matches!(
            ending_failure(&j),
            Some(CliError::JobFailed {
                id: 4,
                failed: 2,
                total: 10
            })
        ));
        j.state = pb::JobState::Cancelled as i32;
        assert!(matches!(
            ending_failure(&j),
            Some(CliError::JobCancelled {
                id: 4,
                unprocessed: 6
            })
        ));
        j.state = pb::JobState::Running as i32;
        assert!(matches!(
            ending_failure(&j),
            Some(CliError::WatchEnded { id: 4, .. })
        ));
    }
}
