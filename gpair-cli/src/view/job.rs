//! How jobs look: `migrate`/`recall` (the job just queued), `job ls`, `job show` (the report
//! that `--wait` and `job watch` also end with), `job cancel`, and the progress lines shown
//! while waiting. Pure functions: the clock comes in as `now_ms`, the terminal width as a
//! number; [`crate::progress`] decides when and where progress lines are written.

use gpair_proto::pb;
use serde_json::{json, Value};

use crate::format::{self, kv, Rendered, Table};

/// How many selected paths the human forms list before "and N more" (JSON has them all).
const SELECTION_SHOWN: usize = 5;

/// Cells of the live progress bar.
const BAR_CELLS: usize = 10;

/// Whether a job has finished: done, failed or cancelled. Unknown states (a newer backend)
/// count as not finished.
pub fn is_finished(state: i32) -> bool {
    matches!(
        pb::JobState::try_from(state),
        Ok(pb::JobState::Done | pb::JobState::Failed | pb::JobState::Cancelled)
    )
}

/// The state for people: `cancelling` while a requested cancel is still stopping files.
fn state_word(j: &pb::Job) -> String {
    if j.cancel_requested && !is_finished(j.state) {
        "cancelling".to_string()
    } else {
        format::job_state(j.state)
    }
}

/// Files the job has dealt with, whatever the outcome.
pub fn files_processed(j: &pb::Job) -> u64 {
    [
        j.files_done,
        j.files_failed,
        j.files_skipped,
        j.files_noop,
        j.files_dirty,
        j.files_cancelled,
    ]
    .iter()
    .fold(0, |a, &b| a.saturating_add(b))
}

/// Files a job lists with a reason: every outcome but done.
fn files_with_reason(j: &pb::Job) -> u64 {
    files_processed(j).saturating_sub(j.files_done)
}

/// One listed file as JSON. `path` is the name as UTF-8 (U+FFFD for bytes that are not),
/// `path_b64` its exact bytes.
pub fn job_file_json(f: &pb::JobFile) -> Value {
    json!({
        "path": format::path_lossy(&f.path),
        "path_b64": format::base64(&f.path),
        "outcome": format::file_outcome(f.outcome),
        "reason": f.reason,
        "bytes": f.bytes,
        "at_ms": f.at_ms,
    })
}

/// A job as JSON: proto field names, enums as lowercase words, byte paths as `paths` (UTF-8,
/// lossy) and `paths_b64` (exact), in the same order.
pub fn job_json(j: &pb::Job) -> Value {
    json!({
        "id": j.id,
        "kind": format::job_kind(j.kind),
        "state": format::job_state(j.state),
        "paths": j.paths.iter().map(|p| format::path_lossy(p)).collect::<Vec<_>>(),
        "paths_b64": j.paths.iter().map(|p| format::base64(p)).collect::<Vec<_>>(),
        "recursive": j.recursive,
        "created_at_ms": j.created_at_ms,
        "started_at_ms": j.started_at_ms,
        "finished_at_ms": j.finished_at_ms,
        "files_total": j.files_total,
        "bytes_total": j.bytes_total,
        "files_done": j.files_done,
        "bytes_done": j.bytes_done,
        "files_failed": j.files_failed,
        "files_skipped": j.files_skipped,
        "files_noop": j.files_noop,
        "files_dirty": j.files_dirty,
        "files_cancelled": j.files_cancelled,
        "backlog": j.backlog,
        "bytes_per_sec": j.bytes_per_sec,
        "waiting_for": j.waiting_for,
        "files": j.files.iter().map(job_file_json).collect::<Vec<_>>(),
        "files_truncated": j.files_truncated,
        "gpairs": j.gpairs,
        "cancel_requested": j.cancel_requested,
        "background": j.background,
    })
}

/// "background" (policy runs, prefetch lists: after interactive work, within rate limits) or
/// "interactive".
fn priority(j: &pb::Job) -> &'static str {
    if j.background {
        "background"
    } else {
        "interactive"
    }
}

/// The selection for people: the first paths, `and N more`, `(recursive)`.
fn selection(j: &pb::Job) -> String {
    let mut s = j
        .paths
        .iter()
        .take(SELECTION_SHOWN)
        .map(|p| format::path(p))
        .collect::<Vec<_>>()
        .join(", ");
    if s.is_empty() {
        s.push('-');
    }
    if j.paths.len() > SELECTION_SHOWN {
        s.push_str(&format!(" and {} more", j.paths.len() - SELECTION_SHOWN));
    }
    if j.recursive {
        s.push_str(" (recursive)");
    }
    s
}

fn gpairs(j: &pb::Job) -> String {
    format::or_dash(&j.gpairs.join(", "))
}

/// `N (SIZE)`.
fn files_and_bytes(files: u64, bytes: u64) -> String {
    format!("{files} ({})", format::bytes(bytes))
}

/// The `started:` line: when, and how long it waited in the queue.
fn started(j: &pb::Job) -> String {
    if j.started_at_ms == 0 {
        return "not yet".to_string();
    }
    format!(
        "{} (after {} queued)",
        format::timestamp(j.started_at_ms),
        format::span_ms(j.created_at_ms, j.started_at_ms)
    )
}

/// The `finished:` line: when, and how long it ran; while running, for how long so far.
fn finished(j: &pb::Job, now_ms: i64) -> String {
    match (j.started_at_ms, j.finished_at_ms) {
        (_, f) if f != 0 => {
            let from = if j.started_at_ms != 0 {
                j.started_at_ms
            } else {
                j.created_at_ms
            };
            format!(
                "{} (ran {})",
                format::timestamp(f),
                format::span_ms(from, f)
            )
        }
        (0, _) => "-".to_string(),
        (s, _) => format!("- (running for {})", format::span_ms(s, now_ms)),
    }
}

/// The `rate:` line: while running, the backend's recent rate; once finished, the average.
fn rate(j: &pb::Job) -> String {
    if is_finished(j.state) {
        let ms = j.finished_at_ms.saturating_sub(j.started_at_ms);
        match u64::try_from(ms) {
            Ok(ms) if ms > 0 && j.started_at_ms != 0 => {
                let per_sec = u128::from(j.bytes_done) * 1000 / u128::from(ms);
                format!(
                    "{} average",
                    format::rate(u64::try_from(per_sec).unwrap_or(u64::MAX))
                )
            }
            _ => "-".to_string(),
        }
    } else {
        format::rate(j.bytes_per_sec)
    }
}

/// The `key: value` lines of a job.
fn details(j: &pb::Job, now_ms: i64) -> String {
    kv(&[
        ("job", j.id.to_string()),
        ("kind", format::job_kind(j.kind)),
        ("priority", priority(j).into()),
        ("state", state_word(j)),
        ("selection", selection(j)),
        ("gpairs", gpairs(j)),
        ("created", format::timestamp_or(j.created_at_ms, "-")),
        ("started", started(j)),
        ("finished", finished(j, now_ms)),
        ("files", files_and_bytes(j.files_total, j.bytes_total)),
        ("done", files_and_bytes(j.files_done, j.bytes_done)),
        ("failed", j.files_failed.to_string()),
        ("skipped", j.files_skipped.to_string()),
        ("no-op", j.files_noop.to_string()),
        ("dirty", j.files_dirty.to_string()),
        ("cancelled", j.files_cancelled.to_string()),
        ("backlog", j.backlog.to_string()),
        ("rate", rate(j)),
        ("waiting for", format::or_dash(&j.waiting_for)),
    ])
}

/// The table of listed files, with a heading that says when the list is cut short.
fn files_table(j: &pb::Job) -> String {
    if j.files.is_empty() {
        return String::new();
    }
    let shown = j.files.len() as u64;
    let heading = if j.files_truncated {
        let of = files_with_reason(j);
        if of > shown {
            format!("files (showing {shown} of {of}; raise --files-limit to see more):")
        } else {
            format!("files (showing the first {shown}; raise --files-limit to see more):")
        }
    } else {
        format!("files ({shown}):")
    };
    let mut t = Table::new(&["PATH", "OUTCOME", "SIZE", "REASON"]).right_align(&[2]);
    for f in &j.files {
        t.row([
            format::path(&f.path),
            format::file_outcome(f.outcome),
            format::bytes(f.bytes),
            format::or_dash(&f.reason),
        ]);
    }
    format!("\n{heading}\n{}", t.render())
}

/// `gpair job show ID`, and the end of `--wait` and `job watch`: the job's counters and
/// times, then the files it lists (failed, skipped, dirty, no-op, cancelled) with reasons.
pub fn report(j: &pb::Job, now_ms: i64) -> Rendered {
    Rendered {
        human: format!("{}{}", details(j, now_ms), files_table(j)),
        json: job_json(j),
    }
}

/// `gpair migrate` / `gpair recall` without `--wait`: the job id and what was queued.
pub fn queued(j: &pb::Job) -> Rendered {
    let mut lines = vec![
        ("job", j.id.to_string()),
        ("kind", format::job_kind(j.kind)),
        ("priority", priority(j).into()),
        ("state", state_word(j)),
        ("selection", selection(j)),
        ("gpairs", gpairs(j)),
    ];
    if j.files_total > 0 {
        lines.push(("files", files_and_bytes(j.files_total, j.bytes_total)));
    }
    lines.push(("created", format::timestamp_or(j.created_at_ms, "-")));
    Rendered {
        human: format!(
            "queued {} job {} (follow it with `gpair job watch {}`)\n{}",
            format::job_kind(j.kind),
            j.id,
            j.id,
            kv(&lines)
        ),
        json: job_json(j),
    }
}

/// Several jobs queued at once (a long prefetch list).
pub fn queued_all(jobs: &[pb::Job]) -> Rendered {
    match jobs {
        [one] => queued(one),
        _ => Rendered {
            human: jobs
                .iter()
                .map(|j| queued(j).human)
                .collect::<Vec<_>>()
                .join("\n"),
            json: Value::Array(jobs.iter().map(job_json).collect()),
        },
    }
}

/// `gpair job ls`.
pub fn list(jobs: &[pb::Job]) -> Rendered {
    let human = if jobs.is_empty() {
        "no jobs (start one with `gpair migrate` or `gpair recall`)\n".to_string()
    } else {
        let mut t = Table::new(&["ID", "KIND", "STATE", "CREATED", "FILES", "BYTES", "FAILED"])
            .right_align(&[0, 4, 5, 6]);
        for j in jobs {
            t.row([
                j.id.to_string(),
                format::job_kind(j.kind),
                state_word(j),
                format::timestamp_or(j.created_at_ms, "-"),
                format!("{}/{}", files_processed(j), j.files_total),
                format!(
                    "{}/{}",
                    format::bytes(j.bytes_done),
                    format::bytes(j.bytes_total)
                ),
                j.files_failed.to_string(),
            ]);
        }
        t.render()
    };
    Rendered {
        human,
        json: Value::Array(jobs.iter().map(job_json).collect()),
    }
}

/// `gpair job cancel ID`: what the cancellation did, then the job.
pub fn cancelled(j: &pb::Job, now_ms: i64) -> Rendered {
    let id = j.id;
    let first = match pb::JobState::try_from(j.state) {
        Ok(pb::JobState::Cancelled) => format!("cancelled job {id}"),
        _ if is_finished(j.state) => format!(
            "job {id} had already finished ({}); nothing to cancel",
            state_word(j)
        ),
        _ => format!(
            "cancelling job {id}: files in flight finish or roll back first \
             (follow it with `gpair job watch {id}`)"
        ),
    };
    Rendered {
        human: format!("{first}\n{}{}", details(j, now_ms), files_table(j)),
        json: job_json(j),
    }
}

/// What a progress line starts with: the state, or while waiting, what for (the news that
/// matters most, so it comes before anything a narrow terminal could cut off).
fn progress_head(j: &pb::Job) -> String {
    if j.state == pb::JobState::Waiting as i32 {
        format!(
            "waiting for {}",
            format::printable(if j.waiting_for.is_empty() {
                "a gpeer"
            } else {
                &j.waiting_for
            })
        )
    } else {
        state_word(j)
    }
}

/// `done/total` sizes, the unit once when both share it: `1.2/3.0 GiB`, `512 B/3.0 GiB`.
fn bytes_pair(done: u64, total: u64) -> String {
    let (d, t) = (format::bytes(done), format::bytes(total));
    match (d.split_once(' '), t.split_once(' ')) {
        (Some((dn, du)), Some((_, tu))) if du == tu => format!("{dn}/{t}"),
        _ => format!("{d}/{t}"),
    }
}

/// The counters of a progress line: `45/100 files, 2 failed, 1.2/3.0 GiB`, then the ETA and
/// the rate while running (last, as the first to go on a narrow terminal).
fn progress_counters(j: &pb::Job) -> String {
    let mut parts = vec![
        format!("{}/{} files", files_processed(j), j.files_total),
        format!("{} failed", j.files_failed),
        bytes_pair(j.bytes_done, j.bytes_total),
    ];
    if j.state == pb::JobState::Running as i32 && j.bytes_per_sec > 0 {
        if j.bytes_total > j.bytes_done {
            let left = (j.bytes_total - j.bytes_done).div_ceil(j.bytes_per_sec);
            parts.push(format!("ETA {}", format::duration_secs(left)));
        }
        parts.push(format::rate(j.bytes_per_sec));
    }
    parts.join(", ")
}

/// How many of `cells` the job has filled: by bytes when known, else by files.
fn filled_cells(j: &pb::Job, cells: usize) -> usize {
    let (done, total) = if j.bytes_total > 0 {
        (j.bytes_done, j.bytes_total)
    } else if j.files_total > 0 {
        (files_processed(j), j.files_total)
    } else if is_finished(j.state) {
        (1, 1)
    } else {
        (0, 1)
    };
    let filled = u128::from(done.min(total)) * cells as u128 / u128::from(total);
    usize::try_from(filled).unwrap_or(cells).min(cells)
}

/// The live progress line for a terminal, redrawn in place:
/// `[####------] 45/100 files, 2 failed, 1.2/3.0 GiB, ETA 52s, 35.0 MiB/s`.
/// At most `width - 1` characters (cut with `…`), so it never wraps and `\r` can redraw it.
pub fn progress_bar(j: &pb::Job, width: usize) -> String {
    let filled = filled_cells(j, BAR_CELLS);
    let bar = format!(
        "[{}{}] {}",
        "#".repeat(filled),
        "-".repeat(BAR_CELLS - filled),
        progress_counters(j)
    );
    // A moving bar says "running"; every other state is named.
    let line = if j.state == pb::JobState::Running as i32 {
        bar
    } else {
        format!("{} {bar}", progress_head(j))
    };
    fit(&line, width.saturating_sub(1).max(1))
}

/// A progress line for logs (stderr is not a terminal):
/// `job 17: running, 45/100 files, 2 failed, 1.2/3.0 GiB, ETA 52s, 35.0 MiB/s`.
pub fn progress_plain(j: &pb::Job) -> String {
    format!(
        "job {}: {}, {}",
        j.id,
        progress_head(j),
        progress_counters(j)
    )
}

/// The text cut to `max` characters, the last one `…` when something was cut.
fn fit(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const T0: i64 = 1_714_564_800_000; // 2024-05-01T12:00:00Z
    const GIB: u64 = 1 << 30;

    pub fn failed_job() -> pb::Job {
        pb::Job {
            id: 17,
            kind: pb::JobKind::Migrate as i32,
            state: pb::JobState::Failed as i32,
            paths: vec![b"/srv/share/a".to_vec(), b"/srv/share/b\xff".to_vec()],
            recursive: true,
            created_at_ms: T0,
            started_at_ms: T0 + 2_000,
            finished_at_ms: T0 + 302_000,
            files_total: 100,
            bytes_total: 3 * GIB,
            files_done: 90,
            bytes_done: 3 * GIB - 100 * (1 << 20),
            files_failed: 2,
            files_skipped: 5,
            files_noop: 3,
            files_dirty: 0,
            files_cancelled: 0,
            backlog: 0,
            bytes_per_sec: 0,
            waiting_for: String::new(),
            files: vec![
                pb::JobFile {
                    path: b"/srv/share/a/big.bin".to_vec(),
                    outcome: pb::FileOutcome::Failed as i32,
                    reason: "west: 403 AccessDenied".into(),
                    bytes: 50 << 20,
                    at_ms: T0 + 100_000,
                },
                pb::JobFile {
                    path: b"/srv/share/a/new\nline".to_vec(),
                    outcome: pb::FileOutcome::Skipped as i32,
                    reason: "quota: gpair p1 is full".into(),
                    bytes: 10,
                    at_ms: T0 + 101_000,
                },
            ],
            files_truncated: true,
            gpairs: vec!["p1".into()],
            cancel_requested: false,
            background: false,
        }
    }

    pub fn running_job() -> pb::Job {
        pb::Job {
            id: 18,
            kind: pb::JobKind::Recall as i32,
            state: pb::JobState::Running as i32,
            paths: vec![b"/srv/share/c".to_vec()],
            recursive: false,
            created_at_ms: T0,
            started_at_ms: T0 + 1_000,
            files_total: 100,
            bytes_total: 3 * GIB,
            files_done: 40,
            bytes_done: GIB + GIB / 5,
            files_failed: 2,
            files_skipped: 3,
            backlog: 55,
            bytes_per_sec: 35 << 20,
            gpairs: vec!["p1".into(), "p2".into()],
            ..Default::default()
        }
    }

    #[test]
    fn report_of_a_finished_job() {
        let r = report(&failed_job(), T0 + 999_999);
        assert_eq!(
            r.human,
            "job:         17\n\
             kind:        migrate\n\
             priority:    interactive\n\
             state:       failed\n\
             selection:   /srv/share/a, /srv/share/b\\xff (recursive)\n\
             gpairs:      p1\n\
             created:     2024-05-01T12:00:00Z\n\
             started:     2024-05-01T12:00:02Z (after 2s queued)\n\
             finished:    2024-05-01T12:05:02Z (ran 5m 0s)\n\
             files:       100 (3.0 GiB)\n\
             done:        90 (2.9 GiB)\n\
             failed:      2\n\
             skipped:     5\n\
             no-op:       3\n\
             dirty:       0\n\
             cancelled:   0\n\
             backlog:     0\n\
             rate:        9.9 MiB/s average\n\
             waiting for: -\n\
             \n\
             files (showing 2 of 10; raise --files-limit to see more):\n\
             PATH                    OUTCOME      SIZE  REASON\n\
             /srv/share/a/big.bin    failed   50.0 MiB  west: 403 AccessDenied\n\
             /srv/share/a/new\\nline  skipped      10 B  quota: gpair p1 is full\n"
        );
    }

    #[test]
    fn report_while_running_and_before_start() {
        let r = report(&running_job(), T0 + 61_000);
        assert!(
            r.human.contains("\nfinished:    - (running for 1m 0s)\n"),
            "{}",
            r.human
        );
        assert!(
            r.human.contains("\nrate:        35.0 MiB/s\n"),
            "{}",
            r.human
        );
        assert!(r.human.contains("\ngpairs:      p1, p2\n"), "{}", r.human);
        assert!(
            r.human.contains("\nselection:   /srv/share/c\n"),
            "{}",
            r.human
        );
        assert!(!r.human.contains("\nfiles ("), "{}", r.human);

        let mut q = running_job();
        q.state = pb::JobState::Queued as i32;
        q.started_at_ms = 0;
        q.bytes_per_sec = 0;
        let r = report(&q, T0);
        assert!(r.human.contains("\nstarted:     not yet\n"), "{}", r.human);
        assert!(r.human.contains("\nfinished:    -\n"), "{}", r.human);
        assert!(r.human.contains("\nrate:        -\n"), "{}", r.human);
    }

    #[test]
    fn listed_files_heading() {
        let mut j = failed_job();
        j.files_truncated = false;
        assert!(report(&j, 0).human.contains("\nfiles (2):\n"));
        j.files_truncated = true;
        j.files_failed = 0;
        j.files_skipped = 0;
        j.files_noop = 0;
        assert!(report(&j, 0)
            .human
            .contains("\nfiles (showing the first 2; raise --files-limit to see more):\n"));
    }

    #[test]
    fn json_keeps_exact_path_bytes() {
        let j = job_json(&failed_job());
        assert_eq!(j["paths"], json!(["/srv/share/a", "/srv/share/b\u{fffd}"]));
        assert_eq!(
            j["paths_b64"],
            json!(["L3Nydi9zaGFyZS9h", "L3Nydi9zaGFyZS9i/w=="])
        );
        assert_eq!(j["kind"], "migrate");
        assert_eq!(j["state"], "failed");
        assert_eq!(
            j["files"][1],
            json!({
                "path": "/srv/share/a/new\nline",
                "path_b64": "L3Nydi9zaGFyZS9hL25ldwpsaW5l",
                "outcome": "skipped",
                "reason": "quota: gpair p1 is full",
                "bytes": 10,
                "at_ms": T0 + 101_000,
            })
        );
        assert_eq!(j["files_truncated"], true);
        assert_eq!(j["gpairs"], json!(["p1"]));
        assert_eq!(j["cancel_requested"], false);
        assert_eq!(j["background"], false);
        assert_eq!(j.as_object().map(|o| o.len()), Some(26));
    }

    #[test]
    fn a_requested_cancel_shows_as_cancelling_until_the_job_ends() {
        let mut j = running_job();
        j.cancel_requested = true;
        assert_eq!(state_word(&j), "cancelling");
        assert_eq!(job_json(&j)["state"], "running");
        assert_eq!(job_json(&j)["cancel_requested"], true);
        j.state = pb::JobState::Cancelled as i32;
        assert_eq!(state_word(&j), "cancelled");
    }

    #[test]
    fn queued_says_what_and_how_to_follow() {
        let mut j = running_job();
        j.state = pb::JobState::Queued as i32;
        j.files_total = 0;
        let r = queued(&j);
        assert_eq!(
            r.human,
            "queued recall job 18 (follow it with `gpair job watch 18`)\n\
             job:       18\n\
             kind:      recall\n\
             priority:  interactive\n\
             state:     queued\n\
             selection: /srv/share/c\n\
             gpairs:    p1, p2\n\
             created:   2024-05-01T12:00:00Z\n"
        );
        assert_eq!(r.json["id"], 18);
        j.background = true;
        assert!(queued(&j).human.contains("\npriority:  background\n"));
        assert_eq!(queued(&j).json["background"], true);
    }

    #[test]
    fn list_table() {
        let r = list(&[running_job(), failed_job()]);
        assert_eq!(
            r.human,
            "ID  KIND     STATE    CREATED                 FILES            BYTES  FAILED\n\
             18  recall   running  2024-05-01T12:00:00Z   45/100  1.2 GiB/3.0 GiB       2\n\
             17  migrate  failed   2024-05-01T12:00:00Z  100/100  2.9 GiB/3.0 GiB       2\n"
        );
        assert!(list(&[]).human.starts_with("no jobs"));
        assert_eq!(list(&[]).json, json!([]));
    }

    #[test]
    fn cancel_messages() {
        let mut j = running_job();
        assert!(cancelled(&j, T0)
            .human
            .starts_with("cancelling job 18: files in flight finish or roll back first"));
        j.state = pb::JobState::Cancelled as i32;
        assert!(cancelled(&j, T0)
            .human
            .starts_with("cancelled job 18\njob:"));
        j.state = pb::JobState::Done as i32;
        assert!(cancelled(&j, T0)
            .human
            .starts_with("job 18 had already finished (done); nothing to cancel\n"));
    }

    #[test]
    fn progress_lines() {
        let j = running_job();
        assert_eq!(
            progress_bar(&j, 200),
            "[###-------] 45/100 files, 2 failed, 1.2/3.0 GiB, ETA 53s, 35.0 MiB/s"
        );
        assert_eq!(
            progress_plain(&j),
            "job 18: running, 45/100 files, 2 failed, 1.2/3.0 GiB, ETA 53s, 35.0 MiB/s"
        );
        let short = progress_bar(&j, 30);
        assert_eq!(short.chars().count(), 29);
        assert!(short.ends_with('…'), "{short}");

        let mut w = j.clone();
        w.state = pb::JobState::Waiting as i32;
        w.waiting_for = "gpeer west1: connect: connection refused\n".into();
        assert_eq!(
            progress_plain(&w),
            "job 18: waiting for gpeer west1: connect: connection refused\\n, \
             45/100 files, 2 failed, 1.2/3.0 GiB"
        );
        assert_eq!(
            progress_bar(&w, 60),
            "waiting for gpeer west1: connect: connection refused\\n [##…"
        );
        w.waiting_for.clear();
        assert!(progress_bar(&w, 200).starts_with("waiting for a gpeer [###-------] 45/100"));

        let mut q = pb::Job {
            id: 1,
            state: pb::JobState::Queued as i32,
            ..Default::default()
        };
        assert_eq!(
            progress_bar(&q, 80),
            "queued [----------] 0/0 files, 0 failed, 0/0 B"
        );
        assert_eq!(bytes_pair(512, 3 << 30), "512 B/3.0 GiB");
        assert_eq!(bytes_pair(1 << 20, 3 << 30), "1.0 MiB/3.0 GiB");
        assert_eq!(bytes_pair(1 << 30, 3 << 30), "1.0/3.0 GiB");
        q.state = pb::JobState::Done as i32;
        assert!(progress_bar(&q, 80).starts_with("done [##########]"));
        assert_eq!(progress_bar(&q, 0), "…");
    }

    #[test]
    fn finished_states() {
        for s in [
            pb::JobState::Done,
            pb::JobState::Failed,
            pb::JobState::Cancelled,
        ] {
            assert!(is_finished(s as i32));
        }
        for s in [
            pb::JobState::Queued,
            pb::JobState::Running,
            pb::JobState::Waiting,
            pb::JobState::Unspecified,
        ] {
            assert!(!is_finished(s as i32));
        }
        assert!(!is_finished(99));
    }
}
