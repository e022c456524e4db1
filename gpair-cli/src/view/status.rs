//! How the backend's status looks: `gpair status`.

use gpair_proto::pb;
use serde_json::{json, Value};

use crate::format::{self, kv, Rendered, Table};

/// The status as JSON, proto field names.
pub fn status_json(s: &pb::StatusResponse) -> Value {
    json!({
        "version": s.version,
        "uptime_secs": s.uptime_secs,
        "cluster_id": s.cluster_id,
        "gpeers": s.gpeers,
        "gpairs": s.gpairs,
        "outbox_pending": s.outbox_pending,
        "outbox_failing": s.outbox_failing,
        "catalog_path": s.catalog_path,
        "scans": s.scans.iter().map(|p| json!({
            "gpair": p.gpair,
            "running": p.running,
            "trigger": p.trigger,
            "started_at_ms": p.started_at_ms,
            "finished_at_ms": p.finished_at_ms,
            "dirs": p.dirs,
            "files": p.files,
            "candidates": p.candidates,
            "candidate_bytes": p.candidate_bytes,
        })).collect::<Vec<_>>(),
    })
}

/// The policy scans: running ones with their progress so far, else the last one.
fn scans(s: &pb::StatusResponse) -> String {
    if s.scans.is_empty() {
        return String::new();
    }
    let mut t = Table::new(&[
        "GPAIR",
        "SCAN",
        "TRIGGER",
        "STARTED",
        "DIRS",
        "FILES",
        "CANDIDATES",
    ])
    .right_align(&[4, 5, 6]);
    for p in &s.scans {
        t.row([
            p.gpair.clone(),
            if p.running { "running" } else { "done" }.to_string(),
            p.trigger.clone(),
            format::timestamp_or(p.started_at_ms, "-"),
            p.dirs.to_string(),
            p.files.to_string(),
            format!("{} ({})", p.candidates, format::bytes(p.candidate_bytes)),
        ]);
    }
    format!("\npolicy scans:\n{}", t.render())
}

/// `gpair status`. `socket` is where the CLI reached the backend; it is shown to people only,
/// the JSON stays the backend's answer.
pub fn status(s: &pb::StatusResponse, socket: &str) -> Rendered {
    Rendered {
        human: kv(&[
            ("backend", socket.to_string()),
            ("version", format::or_dash(&s.version)),
            ("uptime", format::duration_secs(s.uptime_secs)),
            ("cluster id", format::or_dash(&s.cluster_id)),
            ("gpeers", s.gpeers.to_string()),
            ("gpairs", s.gpairs.to_string()),
            ("outbox pending", s.outbox_pending.to_string()),
            ("outbox failing", s.outbox_failing.to_string()),
            ("catalog", format::or_dash(&s.catalog_path)),
        ]) + &scans(s),
        json: status_json(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_json() {
        let s = pb::StatusResponse {
            version: "0.1.0".into(),
            uptime_secs: 3 * 3600 + 25 * 60,
            cluster_id: "LC_111".into(),
            gpeers: 1,
            gpairs: 2,
            outbox_pending: 5,
            outbox_failing: 1,
            catalog_path: "/var/lib/gpair/catalog".into(),
            scans: vec![],
        };
        let r = status(&s, "/run/gpair/backend.sock");
        assert_eq!(
            r.human,
            "backend:        /run/gpair/backend.sock\n\
             version:        0.1.0\n\
             uptime:         3h 25m\n\
             cluster id:     LC_111\n\
             gpeers:         1\n\
             gpairs:         2\n\
             outbox pending: 5\n\
             outbox failing: 1\n\
             catalog:        /var/lib/gpair/catalog\n"
        );
        assert_eq!(r.json["uptime_secs"], 3 * 3600 + 25 * 60);
        assert_eq!(r.json["catalog_path"], "/var/lib/gpair/catalog");
        assert_eq!(r.json.as_object().map(|o| o.len()), Some(9));
    }

    #[test]
    fn running_scans_are_listed() {
        let s = pb::StatusResponse {
            scans: vec![pb::PolicyScan {
                gpair: "p1".into(),
                running: true,
                started_at_ms: 1_700_000_000_000,
                finished_at_ms: 0,
                dirs: 12,
                files: 3400,
                candidates: 7,
                candidate_bytes: 7 << 20,
                trigger: "periodic".into(),
            }],
            ..pb::StatusResponse::default()
        };
        let r = status(&s, "sock");
        assert!(r.human.contains("policy scans:"), "{}", r.human);
        let row = r
            .human
            .lines()
            .find(|l| l.starts_with("p1"))
            .unwrap_or_default();
        assert!(
            row.contains("running") && row.contains("periodic") && row.contains("3400"),
            "{row}"
        );
        assert_eq!(r.json["scans"][0]["files"], 3400);
        assert_eq!(r.json["scans"][0]["running"], true);
    }
}
