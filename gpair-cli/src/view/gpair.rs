//! How gpairs look: `bind`, `ls`, `show`, `unbind`.

use gpair_proto::pb;
use serde_json::{json, Value};

use crate::format::{self, kv, Rendered, Table};

/// A gpair as JSON: proto field names, the state as a lowercase word.
pub fn gpair_json(g: &pb::Gpair) -> Value {
    json!({
        "name": g.name,
        "gpeer": g.gpeer,
        "local_path": g.local_path,
        "remote_bucket": g.remote_bucket,
        "remote_prefix": g.remote_prefix,
        "gpair_value": g.gpair_value,
        "state": format::gpair_state(g.state),
        "created_at_ms": g.created_at_ms,
        "entries": g.entries,
        "pending": g.pending,
        "failing": g.failing,
        "offloaded": g.offloaded,
        "retain_deleted_days": g.retain_deleted_days,
        "read_policy": read_policy(g.read_policy),
        "recall_after_reads": g.recall_after_reads,
    })
}

/// `gpair ls`.
pub fn list(gpairs: &[pb::Gpair]) -> Rendered {
    let human = if gpairs.is_empty() {
        "no gpairs (bind one with `gpair bind`)\n".to_string()
    } else {
        let mut t = Table::new(&[
            "NAME",
            "GPEER",
            "LOCAL",
            "REMOTE",
            "STATE",
            "ENTRIES",
            "PENDING",
            "FAILING",
            "OFFLOADED",
        ])
        .right_align(&[5, 6, 7, 8]);
        for g in gpairs {
            t.row([
                g.name.clone(),
                g.gpeer.clone(),
                g.local_path.clone(),
                format::remote(&g.remote_bucket, &g.remote_prefix),
                format::gpair_state(g.state),
                g.entries.to_string(),
                g.pending.to_string(),
                g.failing.to_string(),
                g.offloaded.to_string(),
            ]);
        }
        t.render()
    };
    Rendered {
        human,
        json: Value::Array(gpairs.iter().map(gpair_json).collect()),
    }
}

fn details(g: &pb::Gpair) -> String {
    kv(&[
        ("name", g.name.clone()),
        ("gpeer", g.gpeer.clone()),
        ("local", g.local_path.clone()),
        ("remote", format::remote(&g.remote_bucket, &g.remote_prefix)),
        ("gpair value", g.gpair_value.clone()),
        ("state", format::gpair_state(g.state)),
        ("created", format::timestamp_or(g.created_at_ms, "-")),
        ("entries", g.entries.to_string()),
        ("pending", g.pending.to_string()),
        ("failing", g.failing.to_string()),
        ("offloaded", g.offloaded.to_string()),
        (
            "retention",
            match g.retain_deleted_days {
                0 => "none (deleted files' west data goes at once)".to_string(),
                d => format!("deleted files' west data kept {d} day(s)"),
            },
        ),
        (
            "stub reads",
            match (read_policy(g.read_policy), g.recall_after_reads) {
                ("recall", _) => "read through, recalled at the first read".to_string(),
                (p, 0) => p.to_string(),
                (p, n) => format!("{p}, recalled after {n} reads within an hour"),
            },
        ),
    ])
}

/// `gpair show NAME`.
pub fn show(g: &pb::Gpair) -> Rendered {
    Rendered {
        human: details(g),
        json: gpair_json(g),
    }
}

/// `gpair bind`: a confirmation line, then the gpair as the backend stored it.
pub fn bound(g: &pb::Gpair) -> Rendered {
    let next = if g.state == pb::GpairState::InitialSync as i32 {
        " (initial sync started; watch it with `gpair sync status`)"
    } else {
        ""
    };
    Rendered {
        human: format!(
            "bound gpair \"{}\"{next}\n{}",
            format::printable(&g.name),
            details(g)
        ),
        json: gpair_json(g),
    }
}

/// `gpair unbind NAME`.
pub fn unbound(name: &str, r: &pb::UnbindResponse) -> Rendered {
    let mut human = format!("unbound gpair \"{name}\"\n");
    if r.offloaded_left_on_west > 0 {
        human.push_str(&format!(
            "{} offloaded file(s) keep their data on west\n",
            r.offloaded_left_on_west
        ));
    }
    Rendered {
        human,
        json: json!({
            "name": name,
            "offloaded_left_on_west": r.offloaded_left_on_west,
        }),
    }
}

fn read_policy(p: i32) -> &'static str {
    match pb::ReadPolicy::try_from(p) {
        Ok(pb::ReadPolicy::Recall) => "recall",
        Ok(_) => "stream",
        Err(_) => "unknown",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn p1() -> pb::Gpair {
        pb::Gpair {
            name: "p1".into(),
            gpeer: "west1".into(),
            local_path: "/srv/share".into(),
            remote_bucket: "cold".into(),
            remote_prefix: "east/share".into(),
            gpair_value: "LC_111,/srv/share,LC_222,cold/east/share".into(),
            state: pb::GpairState::Active as i32,
            created_at_ms: 1_714_564_800_000,
            entries: 12_345,
            pending: 7,
            failing: 1,
            offloaded: 300,
            retain_deleted_days: 7,
            read_policy: pb::ReadPolicy::Stream as i32,
            recall_after_reads: 3,
        }
    }

    #[test]
    fn list_table_and_json() {
        let mut p2 = p1();
        p2.name = "p2".into();
        p2.remote_prefix = String::new();
        p2.state = pb::GpairState::InitialSync as i32;
        p2.entries = 3;
        let r = list(&[p1(), p2]);
        assert_eq!(
            r.human,
            "NAME  GPEER  LOCAL       REMOTE           STATE         ENTRIES  PENDING  FAILING  OFFLOADED\n\
             p1    west1  /srv/share  cold/east/share  active          12345        7        1        300\n\
             p2    west1  /srv/share  cold             initial_sync        3        7        1        300\n"
        );
        assert_eq!(r.json[1]["state"], "initial_sync");
        assert_eq!(r.json[0]["remote_prefix"], "east/share");
    }

    #[test]
    fn show_lines() {
        assert_eq!(
            show(&p1()).human,
            "name:        p1\n\
             gpeer:       west1\n\
             local:       /srv/share\n\
             remote:      cold/east/share\n\
             gpair value: LC_111,/srv/share,LC_222,cold/east/share\n\
             state:       active\n\
             created:     2024-05-01T12:00:00Z\n\
             entries:     12345\n\
             pending:     7\n\
             failing:     1\n\
             offloaded:   300\n\
             retention:   deleted files' west data kept 7 day(s)\n\
             stub reads:  stream, recalled after 3 reads within an hour\n"
        );
    }

    #[test]
    fn json_shape() {
        assert_eq!(
            gpair_json(&p1()),
            json!({
                "name": "p1",
                "gpeer": "west1",
                "local_path": "/srv/share",
                "remote_bucket": "cold",
                "remote_prefix": "east/share",
                "gpair_value": "LC_111,/srv/share,LC_222,cold/east/share",
                "state": "active",
                "retain_deleted_days": 7,
                "read_policy": "stream",
                "recall_after_reads": 3,
                "created_at_ms": 1_714_564_800_000_i64,
                "entries": 12345,
                "pending": 7,
                "failing": 1,
                "offloaded": 300,
            })
        );
    }

    #[test]
    fn bind_and_unbind_messages() {
        let mut g = p1();
        g.state = pb::GpairState::InitialSync as i32;
        assert!(bound(&g)
            .human
            .starts_with("bound gpair \"p1\" (initial sync started;"));
        let r = unbound(
            "p1",
            &pb::UnbindResponse {
                offloaded_left_on_west: 0,
            },
        );
        assert_eq!(r.human, "unbound gpair \"p1\"\n");
        let r = unbound(
            "p1",
            &pb::UnbindResponse {
                offloaded_left_on_west: 3,
            },
        );
        assert!(r
            .human
            .contains("\n3 offloaded file(s) keep their data on west"));
        assert_eq!(r.json, json!({"name": "p1", "offloaded_left_on_west": 3}));
    }
}
