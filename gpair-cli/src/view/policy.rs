//! `gpair policy`, `gpair explain`, `gpair pin | unpin`.

use gpair_proto::pb;
use serde_json::{json, Value};

use crate::format::{self, Rendered};

const DAY: u64 = 86_400;

fn days(secs: u64) -> String {
    if secs % DAY == 0 {
        format!("{} day(s)", secs / DAY)
    } else {
        format::duration_secs(secs)
    }
}

fn rules_lines(r: &pb::PolicyRules) -> Vec<(&'static str, String)> {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(" ")
        }
    };
    vec![
        (
            "idle",
            r.idle_secs
                .map_or("-".into(), |s| format!("not accessed for {}", days(s))),
        ),
        (
            "unmodified",
            r.unmodified_secs
                .map_or("-".into(), |s| format!("not modified for {}", days(s))),
        ),
        ("min size", r.min_size.map_or("-".into(), format::bytes)),
        ("max size", r.max_size.map_or("-".into(), format::bytes)),
        ("include", list(&r.include)),
        ("exclude", list(&r.exclude)),
        (
            "owners",
            if r.owners.is_empty() {
                "any".into()
            } else {
                r.owners
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        ),
        (
            "runs",
            r.interval_secs
                .map_or("only with `gpair policy run`".into(), |s| {
                    format!("every {}", format::duration_secs(s))
                }),
        ),
        (
            "watermarks",
            match (r.high_percent, r.low_percent) {
                (Some(h), Some(l)) => format!("above {h}% full, offload down to {l}%"),
                _ => "-".into(),
            },
        ),
        (
            "soft limit",
            r.east_soft_limit.map_or("-".into(), |b| {
                format!("local data over {} goes, coldest first", format::bytes(b))
            }),
        ),
        (
            "rate limit",
            match (r.max_files_per_sec, r.max_bytes_per_sec) {
                (None, None) => "-".into(),
                (f, b) => {
                    let mut parts = Vec::new();
                    if let Some(f) = f {
                        parts.push(format!("{f} files/s"));
                    }
                    if let Some(b) = b {
                        parts.push(format!("{}/s", format::bytes(b)));
                    }
                    format!("{} for background work", parts.join(", "))
                }
            },
        ),
        (
            "min age",
            r.min_age_secs.map_or("-".into(), |s| {
                format!("modified over {} ago", format::duration_secs(s))
            }),
        ),
    ]
}

fn policy_json(p: &pb::Policy) -> Value {
    json!({
        "name": p.name,
        "set": p.set,
        "rules": p.rules.as_ref().map(|r| json!({
            "idle_secs": r.idle_secs,
            "unmodified_secs": r.unmodified_secs,
            "min_size": r.min_size,
            "max_size": r.max_size,
            "include": r.include,
            "exclude": r.exclude,
            "owners": r.owners,
            "min_age_secs": r.min_age_secs,
            "interval_secs": r.interval_secs,
            "high_percent": r.high_percent,
            "low_percent": r.low_percent,
            "east_soft_limit": r.east_soft_limit,
            "max_files_per_sec": r.max_files_per_sec,
            "max_bytes_per_sec": r.max_bytes_per_sec,
        })),
    })
}

/// `gpair policy show NAME`.
pub fn show(p: &pb::Policy) -> Rendered {
    let human = match (&p.rules, p.set) {
        (Some(r), true) => {
            let mut lines = vec![("gpair", format::printable(&p.name))];
            lines.extend(rules_lines(r));
            format::kv(&lines)
        }
        _ => format!(
            "gpair \"{}\" has no policy: nothing moves on its own (set one with `gpair policy set`)\n",
            format::printable(&p.name)
        ),
    };
    Rendered {
        human,
        json: policy_json(p),
    }
}

/// `gpair policy set | clear`: a confirmation line, then the policy as stored.
pub fn set(p: &pb::Policy) -> Rendered {
    let mut r = show(p);
    if p.set {
        r.human = format!(
            "set the policy of gpair \"{}\"\n{}",
            format::printable(&p.name),
            r.human
        );
    }
    r
}

/// `gpair policy run NAME [--dry-run]`.
pub fn run(r: &pb::PolicyRun) -> Rendered {
    let mut human = String::new();
    let head = if r.dry_run {
        "dry run: nothing moved"
    } else if r.job > 0 {
        "started"
    } else {
        "nothing to move"
    };
    human.push_str(&format!(
        "policy run of gpair \"{}\": {head}\n",
        format::printable(&r.name)
    ));
    let mut lines = vec![
        (
            "scanned",
            format!(
                "{} files in {} directories ({} ms)",
                r.scanned_files, r.scanned_dirs, r.scan_ms
            ),
        ),
        (
            "to offload",
            format!(
                "{} files, {}",
                r.candidate_files,
                format::bytes(r.candidate_bytes)
            ),
        ),
        (
            "east usage",
            format!(
                "{} of {} now, about {} after",
                format::bytes(r.east_used_bytes),
                format::bytes(r.east_total_bytes),
                format::bytes(r.east_used_after_bytes)
            ),
        ),
    ];
    if r.noatime {
        lines.push((
            "access times",
            "not kept (noatime): idleness judged by mtime".into(),
        ));
    }
    if r.job > 0 {
        lines.push(("job", format!("{} (gpair job watch {})", r.job, r.job)));
    }
    human.push_str(&format::kv(&lines));
    if !r.kept.is_empty() {
        human.push_str("kept on east:\n");
        for k in &r.kept {
            human.push_str(&format!(
                "  {:>8} files  {:>10}  {}\n",
                k.files,
                format::bytes(k.bytes),
                k.reason
            ));
        }
    }
    if !r.candidates.is_empty() {
        human.push_str("coldest candidates:\n");
        for c in &r.candidates {
            human.push_str(&format!(
                "  {:>10}  {}  ({})\n",
                format::bytes(c.size),
                format::path(&c.path),
                c.why
            ));
        }
    }
    let json = json!({
        "name": r.name,
        "dry_run": r.dry_run,
        "scanned_files": r.scanned_files,
        "scanned_dirs": r.scanned_dirs,
        "candidate_files": r.candidate_files,
        "candidate_bytes": r.candidate_bytes,
        "candidates": r.candidates.iter().map(|c| json!({
            "path": format::path_lossy(&c.path),
            "path_b64": format::base64(&c.path),
            "size": c.size,
            "idle_secs": c.idle_secs,
            "why": c.why,
        })).collect::<Vec<_>>(),
        "kept": r.kept.iter().map(|k| json!({
            "reason": k.reason, "files": k.files, "bytes": k.bytes,
        })).collect::<Vec<_>>(),
        "east_used_bytes": r.east_used_bytes,
        "east_total_bytes": r.east_total_bytes,
        "east_used_after_bytes": r.east_used_after_bytes,
        "noatime": r.noatime,
        "job": r.job,
        "scan_ms": r.scan_ms,
    });
    Rendered { human, json }
}

/// `gpair explain PATH...`.
pub fn explanations(list: &[pb::Explanation]) -> Rendered {
    let mut human = String::new();
    for e in list {
        let mut lines = vec![
            ("path", format::path(&e.path)),
            ("gpair", format::printable(&e.gpair)),
            ("state", e.state.clone()),
            (
                "policy",
                match e.verdict.as_str() {
                    "offload" => format!("would offload it: {}", e.reason),
                    "keep" => format!("keeps it on east: {}", e.reason),
                    _ => e.reason.clone(),
                },
            ),
        ];
        if !e.pinned_by.is_empty() {
            lines.push(("pinned by", format::printable(&e.pinned_by)));
        }
        lines.push((
            "access times",
            if e.noatime {
                "not kept (noatime): idleness is judged by mtime".into()
            } else {
                "kept".into()
            },
        ));
        lines.push(("mount reads", format!("{} in the last hour", e.reads)));
        lines.push((
            "last recall",
            format::timestamp_or(e.last_recall_at_ms, "none since the backend started"),
        ));
        if !human.is_empty() {
            human.push('\n');
        }
        human.push_str(&format::kv(&lines));
    }
    let json = Value::Array(
        list.iter()
            .map(|e| {
                json!({
                    "path": format::path_lossy(&e.path),
                    "path_b64": format::base64(&e.path),
                    "gpair": e.gpair,
                    "state": e.state,
                    "verdict": e.verdict,
                    "reason": e.reason,
                    "pinned_by": e.pinned_by,
                    "noatime": e.noatime,
                    "reads": e.reads,
                    "last_recall_at_ms": e.last_recall_at_ms,
                })
            })
            .collect(),
    );
    Rendered { human, json }
}

/// `gpair pin | unpin PATH...`.
pub fn pinned(list: &[(Vec<u8>, bool)], unpin: bool) -> Rendered {
    let verb = if unpin { "unpinned" } else { "pinned" };
    let human = list
        .iter()
        .map(|(p, changed)| {
            if *changed {
                format!("{verb} {}\n", format::path(p))
            } else {
                format!("{} was already {verb}\n", format::path(p))
            }
        })
        .collect();
    let json = Value::Array(
        list.iter()
            .map(|(p, changed)| {
                json!({
                    "path": format::path_lossy(p),
                    "path_b64": format::base64(p),
                    "changed": changed,
                })
            })
            .collect(),
    );
    Rendered { human, json }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> pb::Policy {
        pb::Policy {
            name: "p1".into(),
            set: true,
            rules: Some(pb::PolicyRules {
                idle_secs: Some(30 * DAY),
                unmodified_secs: None,
                min_size: Some(4096),
                max_size: None,
                include: vec![],
                exclude: vec!["*.db".into(), "ads/".into()],
                owners: vec![],
                min_age_secs: Some(3600),
                interval_secs: None,
                high_percent: None,
                low_percent: None,
                east_soft_limit: None,
                max_files_per_sec: Some(10),
                max_bytes_per_sec: None,
            }),
        }
    }

    #[test]
    fn show_lines_and_json() {
        let r = show(&policy());
        assert!(r.human.contains("idle:"), "{}", r.human);
        assert!(
            r.human.contains("not accessed for 30 day(s)"),
            "{}",
            r.human
        );
        assert!(r.human.contains("*.db ads/"), "{}", r.human);
        assert_eq!(r.json["rules"]["idle_secs"], 30 * DAY);
        assert_eq!(r.json["rules"]["exclude"][1], "ads/");
        let none = show(&pb::Policy {
            name: "p2".into(),
            set: false,
            rules: None,
        });
        assert!(none.human.contains("has no policy"));
        assert_eq!(none.json["set"], false);
    }

    #[test]
    fn explanations_say_why() {
        let e = pb::Explanation {
            path: b"/srv/share/a.db".to_vec(),
            gpair: "p1".into(),
            state: "local".into(),
            verdict: "keep".into(),
            reason: "excluded by glob \"*.db\"".into(),
            pinned_by: String::new(),
            noatime: false,
            reads: 0,
            last_recall_at_ms: 0,
        };
        let r = explanations(&[e]);
        assert!(
            r.human
                .contains("keeps it on east: excluded by glob \"*.db\""),
            "{}",
            r.human
        );
        assert_eq!(r.json[0]["verdict"], "keep");
        assert_eq!(r.json[0]["path"], "/srv/share/a.db");
    }
}
