//! How metadata sync looks: `gpair sync status [NAME]`.

use gpair_proto::pb;
use serde_json::{json, Value};

use crate::format::{self, kv, Rendered, Table};

/// One failing outbox entry as JSON.
pub fn failing_json(f: &pb::FailingEntry) -> Value {
    json!({
        "path": f.path,
        "op": f.op,
        "attempts": f.attempts,
        "error": f.error,
        "next_retry_at_ms": f.next_retry_at_ms,
    })
}

/// A gpair's sync state as JSON.
pub fn gpair_sync_json(s: &pb::GpairSync) -> Value {
    json!({
        "name": s.name,
        "state": format::gpair_state(s.state),
        "entries": s.entries,
        "pending": s.pending,
        "failing": s.failing,
        "applied": s.applied,
        "last_scan_started_at_ms": s.last_scan_started_at_ms,
        "last_scan_finished_at_ms": s.last_scan_finished_at_ms,
        "last_scan_entries": s.last_scan_entries,
        "failures": s.failures.iter().map(failing_json).collect::<Vec<_>>(),
        "initial_sync_done": s.initial_sync_done,
        "watcher_active": s.watcher_active,
        "gpeer_health": s.gpeer_health,
    })
}

/// A scan that started after the last one finished is still running.
fn scan_finished(s: &pb::GpairSync) -> String {
    if s.last_scan_started_at_ms > s.last_scan_finished_at_ms {
        "running".to_string()
    } else {
        format::timestamp(s.last_scan_finished_at_ms)
    }
}

fn block(s: &pb::GpairSync) -> String {
    let mut out = kv(&[
        ("gpair", s.name.clone()),
        ("state", format::gpair_state(s.state)),
        ("gpeer health", format::or_dash(&s.gpeer_health)),
        ("initial sync done", format::yes_no(s.initial_sync_done)),
        (
            "watcher",
            if s.watcher_active {
                "active"
            } else {
                "inactive (periodic scans only)"
            }
            .to_string(),
        ),
        ("entries", s.entries.to_string()),
        ("pending", s.pending.to_string()),
        ("failing", s.failing.to_string()),
        ("applied", s.applied.to_string()),
        (
            "last scan started",
            format::timestamp(s.last_scan_started_at_ms),
        ),
        ("last scan finished", scan_finished(s)),
        ("last scan entries", s.last_scan_entries.to_string()),
    ]);
    if !s.failures.is_empty() {
        let shown = s.failures.len() as u64;
        if shown < s.failing {
            out.push_str(&format!(
                "\nfailing entries (showing {shown} of {}):\n",
                s.failing
            ));
        } else {
            out.push_str(&format!("\nfailing entries ({shown}):\n"));
        }
        let mut t =
            Table::new(&["PATH", "OP", "ATTEMPTS", "NEXT RETRY", "ERROR"]).right_align(&[2]);
        for f in &s.failures {
            t.row([
                f.path.clone(),
                format::or_dash(&f.op),
                f.attempts.to_string(),
                format::timestamp_or(f.next_retry_at_ms, "-"),
                f.error.clone(),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

/// `gpair sync status [NAME]`: one block per gpair, blank lines between; JSON is always an
/// array, also for a single NAME, so scripts need one shape.
pub fn status(resp: &pb::SyncStatusResponse) -> Rendered {
    let human = if resp.gpairs.is_empty() {
        "no gpairs (bind one with `gpair bind`)\n".to_string()
    } else {
        resp.gpairs.iter().map(block).collect::<Vec<_>>().join("\n")
    };
    Rendered {
        human,
        json: Value::Array(resp.gpairs.iter().map(gpair_sync_json).collect()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn p1_sync() -> pb::GpairSync {
        pb::GpairSync {
            name: "p1".into(),
            state: pb::GpairState::Active as i32,
            entries: 12_345,
            pending: 7,
            failing: 3,
            applied: 99_000,
            last_scan_started_at_ms: 1_714_564_800_000,
            last_scan_finished_at_ms: 1_714_564_860_000,
            last_scan_entries: 12_340,
            failures: vec![
                pb::FailingEntry {
                    path: "docs/report.pdf".into(),
                    error: "503 SlowDown".into(),
                    attempts: 4,
                    next_retry_at_ms: 1_714_564_900_000,
                    op: "put".into(),
                },
                pb::FailingEntry {
                    path: "a\nb".into(),
                    error: "403 AccessDenied".into(),
                    attempts: 12,
                    next_retry_at_ms: 0,
                    op: "delete".into(),
                },
            ],
            initial_sync_done: true,
            watcher_active: true,
            gpeer_health: "healthy".into(),
        }
    }

    #[test]
    fn block_with_failures() {
        let r = status(&pb::SyncStatusResponse {
            gpairs: vec![p1_sync()],
        });
        assert_eq!(
            r.human,
            "gpair:              p1\n\
             state:              active\n\
             gpeer health:       healthy\n\
             initial sync done:  yes\n\
             watcher:            active\n\
             entries:            12345\n\
             pending:            7\n\
             failing:            3\n\
             applied:            99000\n\
             last scan started:  2024-05-01T12:00:00Z\n\
             last scan finished: 2024-05-01T12:01:00Z\n\
             last scan entries:  12340\n\
             \n\
             failing entries (showing 2 of 3):\n\
             PATH             OP      ATTEMPTS  NEXT RETRY            ERROR\n\
             docs/report.pdf  put            4  2024-05-01T12:01:40Z  503 SlowDown\n\
             a\\nb             delete        12  -                     403 AccessDenied\n"
        );
    }

    #[test]
    fn running_scan_no_failures_and_several_gpairs() {
        let mut a = p1_sync();
        a.failures.clear();
        a.failing = 0;
        a.last_scan_finished_at_ms = 0;
        a.watcher_active = false;
        let mut b = a.clone();
        b.name = "p2".into();
        let r = status(&pb::SyncStatusResponse { gpairs: vec![a, b] });
        assert!(
            r.human.contains("last scan finished: running\n"),
            "{}",
            r.human
        );
        assert!(r
            .human
            .contains("watcher:            inactive (periodic scans only)\n"));
        assert!(!r.human.contains("failing entries"));
        assert!(
            r.human.contains("12340\n\ngpair:              p2\n"),
            "{}",
            r.human
        );
    }

    #[test]
    fn json_is_an_array_with_failures() {
        let r = status(&pb::SyncStatusResponse {
            gpairs: vec![p1_sync()],
        });
        assert_eq!(
            r.json[0]["failures"][0],
            json!({
                "path": "docs/report.pdf",
                "op": "put",
                "attempts": 4,
                "error": "503 SlowDown",
                "next_retry_at_ms": 1_714_564_900_000_i64,
            })
        );
        assert_eq!(r.json[0]["state"], "active");
        assert_eq!(r.json[0]["initial_sync_done"], true);
        assert_eq!(status(&pb::SyncStatusResponse::default()).json, json!([]));
    }
}
