//! How caps and mount sessions look: `gpair caps ls`, `gpair session ls`,
//! `gpair session evict`.

use gpair_proto::pb;
use serde_json::{json, Value};

use crate::format::{self, Rendered, Table};

/// A cap kind as a lowercase word.
pub fn cap_kind(raw: i32) -> String {
    match pb::CapKind::try_from(raw) {
        Ok(pb::CapKind::Read) => "read".into(),
        Ok(pb::CapKind::Write) => "write".into(),
        Ok(pb::CapKind::Exclusive) => "exclusive".into(),
        _ => format!("unknown ({raw})"),
    }
}

pub fn cap_json(c: &pb::CapInfo) -> Value {
    json!({
        "session": c.session,
        "client": c.client,
        "path": format::path_lossy(&c.path),
        "path_b64": format::base64(&c.path),
        "ino": c.ino,
        "gpair": c.gpair,
        "kind": cap_kind(c.kind),
        "state": c.state,
        "since_ms": c.since_ms,
        "revoke_requested_ms": c.revoke_requested_ms,
    })
}

/// `gpair caps ls [PATH]`: one row per cap, by path. JSON is always an array.
pub fn caps(caps: &[pb::CapInfo]) -> Rendered {
    let human = if caps.is_empty() {
        "no caps held\n".to_string()
    } else {
        let mut t = Table::new(&[
            "PATH", "KIND", "STATE", "SESSION", "CLIENT", "GPAIR", "INODE", "SINCE",
        ])
        .right_align(&[6]);
        for c in caps {
            t.row([
                format::path(&c.path),
                cap_kind(c.kind),
                c.state.clone(),
                format::or_dash(&c.session),
                format::or_dash(&c.client),
                format::or_dash(&c.gpair),
                c.ino.to_string(),
                format::timestamp(c.since_ms),
            ]);
        }
        t.render()
    };
    Rendered {
        human,
        json: Value::Array(caps.iter().map(cap_json).collect()),
    }
}

pub fn session_json(s: &pb::SessionInfo) -> Value {
    json!({
        "id": s.id,
        "client": s.client,
        "share": format::path_lossy(&s.share),
        "mountpoint": format::path_lossy(&s.mountpoint),
        "mountpoint_b64": format::base64(&s.mountpoint),
        "state": s.state,
        "opened_ms": s.opened_ms,
        "last_heartbeat_ms": s.last_heartbeat_ms,
        "lease_ms": s.lease_ms,
        "caps": s.caps,
    })
}

/// `gpair session ls`. JSON: `{"sessions": [...], "reconnect_window_left_ms": N}`.
pub fn sessions(r: &pb::ListSessionsResponse) -> Rendered {
    let mut human = if r.sessions.is_empty() {
        "no mount sessions\n".to_string()
    } else {
        let mut t = Table::new(&[
            "ID",
            "CLIENT",
            "MOUNTPOINT",
            "STATE",
            "LAST-HEARTBEAT",
            "CAPS",
        ])
        .right_align(&[5]);
        for s in &r.sessions {
            t.row([
                s.id.clone(),
                format::printable(&s.client),
                format::path(&s.mountpoint),
                s.state.clone(),
                format::timestamp(s.last_heartbeat_ms),
                s.caps.to_string(),
            ]);
        }
        t.render()
    };
    if r.reconnect_window_left_ms > 0 {
        human.push_str(&format!(
            "reconnect window open for {} more: sessions of the previous run that do not come back by then are evicted\n",
            format::duration_secs(r.reconnect_window_left_ms.div_ceil(1000))
        ));
    }
    Rendered {
        human,
        json: json!({
            "sessions": r.sessions.iter().map(session_json).collect::<Vec<_>>(),
            "reconnect_window_left_ms": r.reconnect_window_left_ms,
        }),
    }
}

/// `gpair session evict ID`: what was evicted and how many write caps went with it.
pub fn evicted(r: &pb::EvictSessionResponse) -> Rendered {
    let Some(s) = r.session.clone() else {
        return Rendered {
            human: format!(
                "lifted the write fences of an evicted session: {} file(s) may be offloaded again\n",
                r.fences_cleared
            ),
            json: json!({ "session": null, "caps_dropped": 0, "fences_cleared": r.fences_cleared }),
        };
    };
    Rendered {
        human: format!(
            "evicted session {} (client {}, mount point {}); {} write cap(s) dropped, their files marked dirty\n",
            s.id,
            format::printable(&s.client),
            format::path(&s.mountpoint),
            r.caps_dropped
        ),
        json: json!({
            "session": session_json(&s),
            "caps_dropped": r.caps_dropped,
            "fences_cleared": r.fences_cleared,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_table_and_json() {
        let c = pb::CapInfo {
            session: "00ab12cd34ef5678".into(),
            client: "host:42".into(),
            path: b"/east/a.bin".to_vec(),
            ino: 1234,
            gpair: "p1".into(),
            kind: pb::CapKind::Write as i32,
            state: "granted".into(),
            since_ms: 1_700_000_000_000,
            revoke_requested_ms: 0,
        };
        let r = caps(std::slice::from_ref(&c));
        assert_eq!(
            r.human,
            "PATH         KIND   STATE    SESSION           CLIENT   GPAIR  INODE  SINCE\n\
             /east/a.bin  write  granted  00ab12cd34ef5678  host:42  p1      1234  2023-11-14T22:13:20Z\n"
        );
        assert_eq!(r.json[0]["kind"], "write");
        assert_eq!(r.json[0]["path"], "/east/a.bin");
        assert_eq!(caps(&[]).json, json!([]));
    }

    #[test]
    fn sessions_show_the_window() {
        let r = sessions(&pb::ListSessionsResponse {
            sessions: vec![pb::SessionInfo {
                id: "s1".into(),
                client: "h:1".into(),
                mountpoint: b"/mnt".to_vec(),
                state: "reclaiming".into(),
                caps: 2,
                ..Default::default()
            }],
            reconnect_window_left_ms: 4500,
        });
        assert!(r.human.contains("reclaiming"), "{}", r.human);
        assert!(r.human.contains("reconnect window open"), "{}", r.human);
        assert_eq!(r.json["sessions"][0]["caps"], 2);
    }
}
