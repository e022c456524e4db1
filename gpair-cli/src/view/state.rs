//! How tier states look: `gpair state PATH...`, one row per file, like `lfs hsm_state`.

use gpair_proto::pb;
use serde_json::{json, Value};

use crate::format::{self, Rendered, Table};

/// One file's state as JSON: proto field names, the state as a lowercase word, the path as
/// `path` (UTF-8, U+FFFD for bytes that are not) and `path_b64` (its exact bytes).
pub fn file_state_json(f: &pb::FileState) -> Value {
    json!({
        "path": format::path_lossy(&f.path),
        "path_b64": format::base64(&f.path),
        "state": format::tier_state(f.state),
        "gpair": f.gpair,
        "west_key": f.west_key,
        "size": f.size,
        "checksum": f.checksum,
        "detail": f.detail,
        "offloaded_at_ms": f.offloaded_at_ms,
        "job_id": f.job_id,
        "blocks": f.blocks,
    })
}

/// The DETAIL column: the backend's detail, the job moving the file, when it was offloaded.
fn detail(f: &pb::FileState) -> String {
    let mut parts = Vec::new();
    if !f.detail.is_empty() {
        parts.push(f.detail.clone());
    }
    if f.job_id != 0 {
        parts.push(format!("job {}", f.job_id));
    }
    if f.offloaded_at_ms != 0 {
        parts.push(format!(
            "offloaded {}",
            format::timestamp(f.offloaded_at_ms)
        ));
    }
    format::or_dash(&parts.join("; "))
}

/// `gpair state PATH...`: the rows in the order the paths were given.
pub fn states(files: &[pb::FileState]) -> Rendered {
    let mut t = Table::new(&[
        "PATH", "STATE", "GPAIR", "SIZE", "ON-EAST", "CHECKSUM", "WEST-KEY", "DETAIL",
    ])
    .right_align(&[3, 4]);
    for f in files {
        t.row([
            format::path(&f.path),
            format::tier_state(f.state),
            format::or_dash(&f.gpair),
            format::bytes(f.size),
            format::bytes(f.blocks),
            format::or_dash(&f.checksum),
            format::or_dash(&f.west_key),
            detail(f),
        ]);
    }
    Rendered {
        human: t.render(),
        json: Value::Array(files.iter().map(file_state_json).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_714_564_800_000; // 2024-05-01T12:00:00Z

    fn remote() -> pb::FileState {
        pb::FileState {
            path: b"/srv/share/big.bin".to_vec(),
            state: pb::TierState::Remote as i32,
            gpair: "p1".into(),
            west_key: "cold/east/big.bin".into(),
            size: 3 << 30,
            checksum: "crc32c:1a2b3c4d".into(),
            detail: String::new(),
            offloaded_at_ms: T0,
            job_id: 0,
            blocks: 0,
        }
    }

    #[test]
    fn table_rows() {
        let recalling = pb::FileState {
            path: b"/srv/share/r\xff.dat".to_vec(),
            state: pb::TierState::Recalling as i32,
            size: 2048,
            blocks: 1024,
            job_id: 18,
            ..remote()
        };
        let outside = pb::FileState {
            path: b"/tmp/x".to_vec(),
            state: pb::TierState::Unmanaged as i32,
            detail: "not under any bound share".into(),
            ..Default::default()
        };
        let r = states(&[remote(), recalling, outside]);
        assert_eq!(
            r.human,
            "PATH                  STATE      GPAIR     SIZE  ON-EAST  CHECKSUM         WEST-KEY           DETAIL\n\
             /srv/share/big.bin    remote     p1     3.0 GiB      0 B  crc32c:1a2b3c4d  cold/east/big.bin  offloaded 2024-05-01T12:00:00Z\n\
             /srv/share/r\\xff.dat  recalling  p1     2.0 KiB  1.0 KiB  crc32c:1a2b3c4d  cold/east/big.bin  job 18; offloaded 2024-05-01T12:00:00Z\n\
             /tmp/x                unmanaged  -          0 B      0 B  -                -                  not under any bound share\n"
        );
    }

    #[test]
    fn json_rows() {
        let mut f = remote();
        f.path = b"/srv/\xff".to_vec();
        let r = states(&[f]);
        assert_eq!(
            r.json,
            json!([{
                "path": "/srv/\u{fffd}",
                "path_b64": "L3Nydi//",
                "state": "remote",
                "gpair": "p1",
                "west_key": "cold/east/big.bin",
                "size": 3_u64 << 30,
                "checksum": "crc32c:1a2b3c4d",
                "detail": "",
                "offloaded_at_ms": T0,
                "job_id": 0,
                "blocks": 0,
            }])
        );
    }
}
