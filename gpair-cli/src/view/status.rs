//! How the backend's status looks: `gpair status`.

use gpair_proto::pb;
use serde_json::{json, Value};

use crate::format::{self, kv, Rendered};

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
    })
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
        ]),
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
        assert_eq!(r.json.as_object().map(|o| o.len()), Some(8));
    }
}
