//! How quotas look: `gpair quota show [NAME]` and `gpair quota set`.

use gpair_proto::pb;
use serde_json::{json, Value};

use crate::format::{self, Rendered, Table};

/// A quota as JSON, proto field names (`0` = no limit).
pub fn quota_json(q: &pb::Quota) -> Value {
    json!({
        "name": q.name,
        "max_bytes": q.max_bytes,
        "max_files": q.max_files,
        "used_bytes": q.used_bytes,
        "used_files": q.used_files,
        "reserved_bytes": q.reserved_bytes,
        "reserved_files": q.reserved_files,
    })
}

/// The quota table: used out of the limit (`none` = no limit), and what in-flight offloads
/// have reserved.
fn table(quotas: &[pb::Quota]) -> String {
    let mut t =
        Table::new(&["NAME", "USED-BYTES/MAX", "USED-FILES/MAX", "RESERVED"]).right_align(&[1, 2]);
    for q in quotas {
        t.row([
            q.name.clone(),
            format!(
                "{}/{}",
                format::bytes(q.used_bytes),
                format::limit(q.max_bytes, format::bytes)
            ),
            format!(
                "{}/{}",
                q.used_files,
                format::limit(q.max_files, |n| n.to_string())
            ),
            if q.reserved_bytes == 0 && q.reserved_files == 0 {
                "-".to_string()
            } else {
                format!(
                    "{} in {} file(s)",
                    format::bytes(q.reserved_bytes),
                    q.reserved_files
                )
            },
        ]);
    }
    t.render()
}

/// `gpair quota show [NAME]`. JSON is always an array, also for one NAME.
pub fn show(quotas: &[pb::Quota]) -> Rendered {
    let human = if quotas.is_empty() {
        "no gpairs (bind one with `gpair bind`)\n".to_string()
    } else {
        table(quotas)
    };
    Rendered {
        human,
        json: Value::Array(quotas.iter().map(quota_json).collect()),
    }
}

/// `gpair quota set`: a confirmation line, then the quota as the backend stored it.
pub fn set(q: &pb::Quota) -> Rendered {
    Rendered {
        human: format!(
            "set the quota of gpair \"{}\"\n{}",
            format::printable(&q.name),
            table(std::slice::from_ref(q))
        ),
        json: quota_json(q),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p1() -> pb::Quota {
        pb::Quota {
            name: "p1".into(),
            max_bytes: 10 << 30,
            max_files: 0,
            used_bytes: 1_288_490_189, // 1.2 GiB
            used_files: 1200,
            reserved_bytes: 512 << 20,
            reserved_files: 3,
        }
    }

    #[test]
    fn table_and_json() {
        let p2 = pb::Quota {
            name: "p2".into(),
            max_files: 5000,
            ..Default::default()
        };
        let r = show(&[p1(), p2]);
        assert_eq!(
            r.human,
            "NAME    USED-BYTES/MAX  USED-FILES/MAX  RESERVED\n\
             p1    1.2 GiB/10.0 GiB       1200/none  512.0 MiB in 3 file(s)\n\
             p2            0 B/none          0/5000  -\n"
        );
        assert_eq!(r.json[0], quota_json(&p1()));
        assert_eq!(r.json[1]["max_files"], 5000);
        assert_eq!(show(&[]).json, json!([]));
        assert!(show(&[]).human.starts_with("no gpairs"));
    }

    #[test]
    fn set_confirms() {
        let r = set(&p1());
        assert!(
            r.human.starts_with("set the quota of gpair \"p1\"\nNAME "),
            "{}",
            r.human
        );
        assert_eq!(r.json["max_bytes"], 10_u64 << 30);
    }
}
