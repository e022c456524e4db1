//! How gpeers look: the `gpeer` commands' tables, `key: value` blocks and JSON.

use gpair_proto::pb;
use serde_json::{json, Value};

use crate::format::{self, kv, Rendered, Table};

/// A gpeer as JSON: proto field names, enums as lowercase words. The secret key is never
/// part of a `Gpeer`, so it cannot leak here.
pub fn gpeer_json(g: &pb::Gpeer) -> Value {
    json!({
        "name": g.name,
        "cluster_id": g.cluster_id,
        "endpoint": g.endpoint,
        "access_key": g.access_key,
        "region": g.region,
        "dialect": format::dialect(g.dialect),
        "health": g.health.as_ref().map(health_json),
        "created_at_ms": g.created_at_ms,
        "gpairs": g.gpairs,
        "queued": {
            "outbox": g.outbox_pending,
            "migration_files": g.migration_pending,
        },
    })
}

/// A gpeer's health as JSON.
pub fn health_json(h: &pb::Health) -> Value {
    json!({
        "state": format::health_state(h.state),
        "consecutive_failures": h.consecutive_failures,
        "last_error": h.last_error,
        "last_error_at_ms": h.last_error_at_ms,
        "next_retry_at_ms": h.next_retry_at_ms,
        "last_success_at_ms": h.last_success_at_ms,
        "since_ms": h.since_ms,
        "last_error_class": h.last_error_class,
    })
}

/// The one-word health for tables; `unknown` when the backend sent none.
fn health_word(g: &pb::Gpeer) -> String {
    g.health
        .as_ref()
        .map_or_else(|| "unknown".to_string(), |h| format::health_state(h.state))
}

/// `gpair gpeer ls`.
pub fn list(gpeers: &[pb::Gpeer]) -> Rendered {
    let human = if gpeers.is_empty() {
        "no gpeers (add one with `gpair gpeer add`)\n".to_string()
    } else {
        let mut t = Table::new(&[
            "NAME", "CLUSTER", "ENDPOINT", "DIALECT", "REGION", "HEALTH", "GPAIRS",
        ])
        .right_align(&[6]);
        for g in gpeers {
            t.row([
                g.name.clone(),
                g.cluster_id.clone(),
                g.endpoint.clone(),
                format::dialect(g.dialect),
                format::or_dash(&g.region),
                health_word(g),
                g.gpairs.to_string(),
            ]);
        }
        t.render()
    };
    Rendered {
        human,
        json: Value::Array(gpeers.iter().map(gpeer_json).collect()),
    }
}

/// The `key: value` lines of one gpeer.
fn details(g: &pb::Gpeer) -> String {
    let mut lines = vec![
        ("name", g.name.clone()),
        ("cluster id", g.cluster_id.clone()),
        ("endpoint", g.endpoint.clone()),
        ("dialect", format::dialect(g.dialect)),
        ("region", format::or_dash(&g.region)),
        ("access key", g.access_key.clone()),
        ("gpairs", g.gpairs.to_string()),
        ("created", format::timestamp_or(g.created_at_ms, "-")),
        ("health", health_word(g)),
    ];
    if let Some(h) = &g.health {
        let last_error = if h.last_error.is_empty() || h.last_error_class.is_empty() {
            format::or_dash(&h.last_error)
        } else {
            format!("[{}] {}", h.last_error_class, h.last_error)
        };
        lines.extend([
            ("since", format::timestamp_or(h.since_ms, "-")),
            ("consecutive failures", h.consecutive_failures.to_string()),
            ("last error", last_error),
            ("last error at", format::timestamp(h.last_error_at_ms)),
            (
                "next retry at",
                format::timestamp_or(h.next_retry_at_ms, "-"),
            ),
            ("last success at", format::timestamp(h.last_success_at_ms)),
        ]);
    }
    lines.extend([
        ("queued outbox", g.outbox_pending.to_string()),
        (
            "queued migration",
            format!("{} file(s)", g.migration_pending),
        ),
    ]);
    kv(&lines)
}

/// `gpair gpeer show NAME`.
pub fn show(g: &pb::Gpeer) -> Rendered {
    Rendered {
        human: details(g),
        json: gpeer_json(g),
    }
}

/// `gpair gpeer add`: a confirmation line, then the gpeer as the backend stored it.
pub fn added(g: &pb::Gpeer) -> Rendered {
    Rendered {
        human: format!(
            "added gpeer \"{}\"\n{}",
            format::printable(&g.name),
            details(g)
        ),
        json: gpeer_json(g),
    }
}

/// `gpair gpeer check NAME`.
pub fn check(name: &str, r: &pb::CheckGpeerResponse) -> Rendered {
    let stage = format::check_stage(r.stage);
    let passed = r.stage == pb::CheckStage::Ok as i32;
    Rendered {
        human: kv(&[
            ("gpeer", name.to_string()),
            ("result", if passed { "ok" } else { "failed" }.to_string()),
            ("stage", stage.clone()),
            ("message", format::or_dash(&r.message)),
            ("latency", format::latency_us(r.latency_us)),
        ]),
        json: json!({
            "name": name,
            "ok": passed,
            "stage": stage,
            "message": r.message,
            "latency_us": r.latency_us,
        }),
    }
}

/// `gpair gpeer rm NAME`.
pub fn removed(name: &str) -> Rendered {
    Rendered {
        human: format!("removed gpeer \"{name}\"\n"),
        json: json!({ "name": name, "removed": true }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn west1() -> pb::Gpeer {
        pb::Gpeer {
            name: "west1".into(),
            cluster_id: "LC_222".into(),
            endpoint: "http://127.0.0.1:9000".into(),
            access_key: "AKIAWEST".into(),
            region: "us-east-1".into(),
            dialect: pb::Dialect::Gateway as i32,
            health: Some(pb::Health {
                state: pb::HealthState::Retrying as i32,
                consecutive_failures: 3,
                last_error: "connect: connection refused".into(),
                last_error_at_ms: 1_714_564_800_000,
                next_retry_at_ms: 1_714_564_830_000,
                last_success_at_ms: 1_714_564_000_000,
                since_ms: 1_714_564_790_000,
                last_error_class: "transient".into(),
            }),
            created_at_ms: 1_714_000_000_000,
            gpairs: 2,
            outbox_pending: 12,
            migration_pending: 3,
        }
    }

    #[test]
    fn list_table() {
        let mut s3 = west1();
        s3.name = "aws".into();
        s3.dialect = pb::Dialect::S3 as i32;
        s3.endpoint = "https://s3.amazonaws.com".into();
        s3.region = String::new();
        s3.health = None;
        s3.gpairs = 0;
        let r = list(&[west1(), s3]);
        assert_eq!(
            r.human,
            "NAME   CLUSTER  ENDPOINT                  DIALECT  REGION     HEALTH    GPAIRS\n\
             west1  LC_222   http://127.0.0.1:9000     gateway  us-east-1  retrying       2\n\
             aws    LC_222   https://s3.amazonaws.com  s3       -          unknown        0\n"
        );
        let arr = r.json.as_array().map(Vec::len);
        assert_eq!(arr, Some(2));
        assert_eq!(r.json[1]["dialect"], "s3");
        assert_eq!(r.json[1]["health"], Value::Null);
    }

    #[test]
    fn down_shows_in_list_and_show() {
        let mut g = west1();
        if let Some(h) = g.health.as_mut() {
            h.state = pb::HealthState::Down as i32;
        }
        assert!(list(&[g.clone()]).human.contains("  down  "));
        let r = show(&g);
        assert!(
            r.human.contains("\nhealth:               down\n"),
            "{}",
            r.human
        );
        assert_eq!(r.json["health"]["state"], "down");
        assert_eq!(r.json["queued"]["outbox"], 12);
    }

    #[test]
    fn empty_list() {
        let r = list(&[]);
        assert!(r.human.starts_with("no gpeers"));
        assert_eq!(r.json, json!([]));
    }

    #[test]
    fn show_has_health_and_last_error() {
        let r = show(&west1());
        assert_eq!(
            r.human,
            "name:                 west1\n\
             cluster id:           LC_222\n\
             endpoint:             http://127.0.0.1:9000\n\
             dialect:              gateway\n\
             region:               us-east-1\n\
             access key:           AKIAWEST\n\
             gpairs:               2\n\
             created:              2024-04-24T23:06:40Z\n\
             health:               retrying\n\
             since:                2024-05-01T11:59:50Z\n\
             consecutive failures: 3\n\
             last error:           [transient] connect: connection refused\n\
             last error at:        2024-05-01T12:00:00Z\n\
             next retry at:        2024-05-01T12:00:30Z\n\
             last success at:      2024-05-01T11:46:40Z\n\
             queued outbox:        12\n\
             queued migration:     3 file(s)\n"
        );
    }

    #[test]
    fn json_shape() {
        assert_eq!(
            gpeer_json(&west1()),
            json!({
                "name": "west1",
                "cluster_id": "LC_222",
                "endpoint": "http://127.0.0.1:9000",
                "access_key": "AKIAWEST",
                "region": "us-east-1",
                "dialect": "gateway",
                "health": {
                    "state": "retrying",
                    "consecutive_failures": 3,
                    "last_error": "connect: connection refused",
                    "last_error_at_ms": 1_714_564_800_000_i64,
                    "next_retry_at_ms": 1_714_564_830_000_i64,
                    "last_success_at_ms": 1_714_564_000_000_i64,
                    "since_ms": 1_714_564_790_000_i64,
                    "last_error_class": "transient",
                },
                "created_at_ms": 1_714_000_000_000_i64,
                "gpairs": 2,
                "queued": {"outbox": 12, "migration_files": 3},
            })
        );
    }

    #[test]
    fn check_results() {
        let ok = check(
            "west1",
            &pb::CheckGpeerResponse {
                stage: pb::CheckStage::Ok as i32,
                message: String::new(),
                latency_us: 1234,
            },
        );
        assert_eq!(
            ok.human,
            "gpeer:   west1\nresult:  ok\nstage:   ok\nmessage: -\nlatency: 1.2 ms\n"
        );
        assert_eq!(ok.json["ok"], true);
        let bad = check(
            "west1",
            &pb::CheckGpeerResponse {
                stage: pb::CheckStage::Auth as i32,
                message: "403 InvalidAccessKeyId".into(),
                latency_us: 10,
            },
        );
        assert!(
            bad.human.contains("result:  failed\nstage:   auth\n"),
            "{}",
            bad.human
        );
        assert_eq!(bad.json["stage"], "auth");
        assert_eq!(bad.json["ok"], false);
    }

    #[test]
    fn added_and_removed() {
        assert!(added(&west1())
            .human
            .starts_with("added gpeer \"west1\"\nname:"));
        assert_eq!(removed("west1").human, "removed gpeer \"west1\"\n");
        assert_eq!(
            removed("west1").json,
            json!({"name": "west1", "removed": true})
        );
    }
}
