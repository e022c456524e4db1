//! How `gpair fsck` looks: per gpair a summary block, then one row per issue (kind, path,
//! what is wrong, what repair did or why it left it). JSON is always an array of reports.

use gpair_proto::pb;
use serde_json::{json, Value};

use crate::format::{self, Rendered, Table};

fn issue_json(i: &pb::FsckIssue) -> Value {
    json!({
        "kind": i.kind,
        "path": format::path_lossy(&i.path),
        "path_b64": format::base64(&i.path),
        "detail": i.detail,
        "repaired": i.repaired,
        "action": i.action,
    })
}

/// One gpair's report as JSON: proto field names.
pub fn report_json(r: &pb::FsckReport) -> Value {
    json!({
        "gpair": r.gpair,
        "repair": r.repair,
        "rebuild": r.rebuild,
        "east_files": r.east_files,
        "stubs": r.stubs,
        "stub_bytes": r.stub_bytes,
        "west_objects": r.west_objects,
        "catalog_entries": r.catalog_entries,
        "quota_used_bytes": r.quota_used_bytes,
        "quota_used_files": r.quota_used_files,
        "issues": r.issues.iter().map(issue_json).collect::<Vec<_>>(),
        "repaired": r.repaired,
        "took_ms": r.took_ms,
    })
}

fn human(r: &pb::FsckReport) -> String {
    let mode = match (r.rebuild, r.repair) {
        (true, _) => "rebuild",
        (false, true) => "repair",
        _ => "check",
    };
    let mut out = format!(
        "gpair \"{}\" ({mode}): {} east file(s), {} stub(s) holding {}, {} west object(s), {} catalog entries; quota used {} in {} file(s)\n",
        format::printable(&r.gpair),
        r.east_files,
        r.stubs,
        format::bytes(r.stub_bytes),
        r.west_objects,
        r.catalog_entries,
        format::bytes(r.quota_used_bytes),
        r.quota_used_files,
    );
    if r.issues.is_empty() {
        out.push_str("no issues\n");
        return out;
    }
    let mut t = Table::new(&["KIND", "PATH", "REPAIRED", "DETAIL", "ACTION"]);
    for i in &r.issues {
        t.row([
            i.kind.clone(),
            format::or_dash(&format::path(&i.path)),
            format::yes_no(i.repaired),
            i.detail.clone(),
            format::or_dash(&i.action),
        ]);
    }
    out.push_str(&t.render());
    out.push_str(&format!(
        "{} issue(s), {} repaired\n",
        r.issues.len(),
        r.repaired
    ));
    out
}

/// `gpair fsck`: every gpair's report.
pub fn reports(reports: &[pb::FsckReport]) -> Rendered {
    let human = if reports.is_empty() {
        "no gpairs (bind one with `gpair bind`)\n".to_string()
    } else {
        reports.iter().map(human).collect::<Vec<_>>().join("\n")
    };
    Rendered {
        human,
        json: Value::Array(reports.iter().map(report_json).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_show_as_rows_and_json_keeps_exact_paths() {
        let r = pb::FsckReport {
            gpair: "p".into(),
            repair: true,
            stubs: 2,
            stub_bytes: 2048,
            issues: vec![
                pb::FsckIssue {
                    kind: "lost".into(),
                    path: b"d/f\xff".to_vec(),
                    detail: "west copy missing".into(),
                    repaired: false,
                    action: "marked lost".into(),
                },
                pb::FsckIssue {
                    kind: "quota_drift".into(),
                    path: Vec::new(),
                    detail: "used 0".into(),
                    repaired: true,
                    action: "recomputed".into(),
                },
            ],
            repaired: 1,
            ..Default::default()
        };
        let out = reports(std::slice::from_ref(&r));
        assert!(out.human.contains("gpair \"p\" (repair)"), "{}", out.human);
        assert!(out.human.contains("d/f\\xff"), "{}", out.human);
        assert!(
            out.human.contains("2 issue(s), 1 repaired"),
            "{}",
            out.human
        );
        assert_eq!(out.json[0]["issues"][0]["kind"], "lost");
        assert_eq!(out.json[0]["issues"][0]["path_b64"], "ZC9m/w==");
        assert_eq!(out.json[0]["issues"][1]["repaired"], true);
        let clean = pb::FsckReport {
            gpair: "q".into(),
            ..Default::default()
        };
        assert!(reports(&[clean]).human.contains("no issues"));
    }
}
