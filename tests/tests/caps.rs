//! Caps and mount sessions end to end (DESIGN 6, SCENARIOS C1-C3): the real gateway,
//! backend, CLI and FUSE mounts. Skipped, with a message, where `/dev/fuse` is missing.
//!
//! What must hold: an offload never releases a file a mount has open for writing (it is
//! deferred, with a reason naming the session and client, not failed); a killed mount is
//! evicted after its lease and its files become migratable; a backend restart keeps the
//! sessions (same ids) and the protection of files held open; the backend's own exclusive
//! cap does not outlive a crash.
#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test

use std::io::Write;
use std::path::Path;

use gpair_tests::world::{job_id, world, World, WAIT};
use gpair_tests::{have_fuse, poll_until, test_bytes};
use serde_json::Value;

/// Short leases so the tests see evictions and windows in seconds.
const SESSIONS: &str = "\n[sessions]\nheartbeat_secs = 1\nlease_secs = 3\nreconnect_window_secs = 8\nrevoke_wait_secs = 3\n";

fn skip() -> bool {
    if !have_fuse() {
        eprintln!("SKIP: /dev/fuse is missing; caps through gpair-mount cannot be tested here");
        return true;
    }
    false
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sessions(w: &World) -> Vec<Value> {
    w.ok(&["session", "ls"])["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn caps(w: &World, p: &Path) -> Vec<Value> {
    w.ok(&["caps", "ls", s(p)])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Starts an offload of `p` and waits for its job; returns the job's report.
fn migrate(w: &World, p: &Path) -> Value {
    let id = job_id(&w.ok(&["migrate", s(p)]));
    w.wait_job(id)
}

/// The one file's (outcome, reason) in a finished job (a report lists only the files that
/// did not move).
fn file_result(job: &Value) -> (String, String) {
    if job["files_done"] == 1 {
        return ("done".into(), String::new());
    }
    let f = &job["files"][0];
    (
        f["outcome"].as_str().unwrap_or_default().to_string(),
        f["reason"].as_str().unwrap_or_default().to_string(),
    )
}

fn wait_for(w: &World, what: &str, f: impl FnMut() -> bool) {
    assert!(poll_until(WAIT, f), "{what}\n{}", w.diagnostics());
}

/// C1: a writer holding a file open through the mount blocks its offload — deferred with a
/// reason naming the session and client — until it closes; then the offload succeeds and
/// the writer's bytes are what west has.
#[test]
fn an_open_writer_defers_the_offload_until_it_closes() {
    if skip() {
        return;
    }
    let w = world(SESSIONS);
    let east = w.write("held.bin", &test_bytes(100_000, 1));
    w.synced();
    let m = w.mount(&[]);
    let mut writer = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("held.bin"))
        .unwrap();
    writer.write_all(b"appended while open").unwrap();
    writer.flush().unwrap();

    let sess = sessions(&w);
    assert_eq!(sess.len(), 1, "{sess:#?}");
    let id = sess[0]["id"].as_str().unwrap().to_string();
    let client = sess[0]["client"].as_str().unwrap().to_string();
    let held = caps(&w, &east);
    assert_eq!(held.len(), 1, "{held:#?}");
    assert_eq!(held[0]["kind"], "write");
    assert_eq!(held[0]["session"], id.as_str());

    let job = migrate(&w, &east);
    let (outcome, reason) = file_result(&job);
    assert_eq!(
        outcome,
        "skipped",
        "{job:#}\n{}\n--- mount log ---\n{}",
        w.diagnostics(),
        m.log()
    );
    assert!(
        reason.contains(&format!(
            "held open for write by session {id} on client {client}"
        )),
        "{reason}"
    );
    assert_eq!(job["files_failed"], 0, "{job:#}");
    assert_eq!(w.state(&east)["state"], "local");

    // Closed: the cap goes back (in the background) and the offload goes through.
    drop(writer);
    wait_for(&w, "the write cap was not given back after close", || {
        caps(&w, &east).is_empty()
    });
    let job = migrate(&w, &east);
    assert_eq!(file_result(&job).0, "done", "{job:#}");
    assert_eq!(w.state(&east)["state"], "remote");
    let mut want = test_bytes(100_000, 1);
    want.extend_from_slice(b"appended while open");
    assert_eq!(std::fs::read(m.path("held.bin")).unwrap(), want);
}

/// C2: a SIGKILLed mount is evicted after its (short) lease: its caps go, the file it had
/// open for writing is marked dirty, and the file becomes migratable.
#[test]
fn a_killed_mount_is_evicted_after_its_lease() {
    if skip() {
        return;
    }
    let w = world(SESSIONS);
    let east = w.write("orphan.bin", &test_bytes(50_000, 2));
    w.synced();
    let mut m = w.mount(&[]);
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("orphan.bin"))
        .unwrap();
    assert_eq!(caps(&w, &east).len(), 1);
    assert_eq!(sessions(&w).len(), 1);
    m.kill();
    drop(writer);
    // The dead mount point is detached (as the next mount on it, or an operator's
    // `fusermount3 -u`, would): the kernel may hold the files it passed through open until
    // then.
    drop(m);

    wait_for(&w, "the killed mount's session was not evicted", || {
        sessions(&w).is_empty()
    });
    assert!(caps(&w, &east).is_empty());
    assert!(w
        .b
        .log()
        .contains("mount session evicted: its lease expired"));
    let st = w.state(&east);
    assert_eq!(st["state"], "dirty", "{st:#}");
    assert!(
        st["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("evicted"),
        "{st:#}"
    );
    let job = migrate(&w, &east);
    assert_eq!(file_result(&job).0, "done", "{job:#}");
    assert_eq!(w.state(&east)["state"], "remote");
}

/// C3: a backend restart with live mounts: the sessions come back with the same ids and
/// reclaim their caps; a file held open for writing stays protected across the restart.
#[test]
fn a_backend_restart_keeps_sessions_and_their_caps() {
    if skip() {
        return;
    }
    let mut w = world(SESSIONS);
    let east = w.write("kept.bin", &test_bytes(80_000, 3));
    let other = w.write("free.bin", &test_bytes(80_000, 4));
    w.synced();
    let m1 = w.mount(&[]);
    let m2 = w.mount(&[]);
    let mut writer = std::fs::OpenOptions::new()
        .append(true)
        .open(m1.path("kept.bin"))
        .unwrap();
    let mut before: Vec<String> = sessions(&w)
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    before.sort();
    assert_eq!(before.len(), 2);

    w.b.restart();
    // Loaded from the catalog at once (reclaiming), active again once the mounts heartbeat
    // and send their caps.
    wait_for(
        &w,
        "the sessions did not come back after the restart",
        || {
            let now = sessions(&w);
            let mut ids: Vec<String> = now
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids == before && now.iter().all(|s| s["state"] == "active")
        },
    );
    let held = caps(&w, &east);
    assert_eq!(held.len(), 1, "{held:#?}");
    // The writer's mount sent its cap (not only kept by the end of the window).
    wait_for(&w, "the mount did not reclaim its write cap", || {
        m1.log().contains("write caps reclaimed")
    });
    // Still protected: deferred, not released.
    let job = migrate(&w, &east);
    let (outcome, reason) = file_result(&job);
    assert_eq!(outcome, "skipped", "{job:#}");
    assert!(
        reason.contains("held open for write by session"),
        "{reason}"
    );
    assert_eq!(w.state(&east)["state"], "local");
    // The other file is not held by anyone.
    let job = migrate(&w, &other);
    assert_eq!(file_result(&job).0, "done", "{job:#}");
    // Past the reconnect window the sessions are still the same (nobody was evicted).
    wait_for(&w, "the reconnect window did not close", || {
        w.ok(&["session", "ls"])["reconnect_window_left_ms"] == 0
    });
    assert!(!w
        .b
        .log()
        .contains("did not come back within the reconnect window"));
    let mut after: Vec<String> = sessions(&w)
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    after.sort();
    assert_eq!(after, before);

    writer.write_all(b"more").unwrap();
    drop(writer);
    wait_for(&w, "the write cap was not given back after close", || {
        caps(&w, &east).is_empty()
    });
    let job = migrate(&w, &east);
    assert_eq!(file_result(&job).0, "done", "{job:#}");
    drop(m2);
}

/// After a restart nothing is released while a mount of the previous run may still come back
/// to reclaim caps it took while the backend was down: offloads are deferred until every
/// such session is back or the reconnect window closes.
#[test]
fn offloads_wait_for_the_reconnect_window_of_a_mount_that_does_not_come_back() {
    if skip() {
        return;
    }
    let mut w = world(SESSIONS);
    let f = w.write("grace.bin", &test_bytes(60_000, 9));
    w.synced();
    let mut m = w.mount(&[]);
    wait_for(&w, "the mount opened no session", || {
        sessions(&w).len() == 1
    });
    m.kill();
    w.b.restart();
    let job = migrate(&w, &f);
    let (outcome, reason) = file_result(&job);
    assert_eq!(outcome, "skipped", "{job:#}");
    assert!(
        reason.contains("the backend restarted and 1 mount session(s) have"),
        "{reason}"
    );
    assert_eq!(w.state(&f)["state"], "local");
    wait_for(&w, "the reconnect window did not close", || {
        w.ok(&["session", "ls"])["reconnect_window_left_ms"] == 0
    });
    let job = migrate(&w, &f);
    assert_eq!(file_result(&job).0, "done", "{job:#}");
}

/// The CLI's view: `caps ls`, `session ls` and `session evict` as tables and JSON; an
/// evicted mount opens a new session and takes its caps again.
#[test]
fn caps_and_session_commands() {
    if skip() {
        return;
    }
    let w = world(SESSIONS);
    let east = w.write("dir/a.txt", b"hello");
    w.synced();
    let m = w.mount(&[]);
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .open(m.path("dir/a.txt"))
        .unwrap();

    let out = w.b.gpair(&["caps", "ls"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.starts_with("PATH "), "{table}");
    assert!(
        table.contains(s(&east)) && table.contains("write"),
        "{table}"
    );
    // Filtered by a directory, and by a path with nothing held.
    assert_eq!(caps(&w, &w.share.join("dir")).len(), 1);
    assert!(caps(&w, &w.share.join("elsewhere")).is_empty());

    let out = w.b.gpair(&["session", "ls"]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(table.starts_with("ID "), "{table}");
    assert!(table.contains(s(&m.dir)), "{table}");
    let sess = sessions(&w);
    assert_eq!(sess[0]["caps"], 1);
    assert_eq!(sess[0]["mountpoint"], s(&m.dir));
    let id = sess[0]["id"].as_str().unwrap().to_string();

    let evicted = w.ok(&["session", "evict", &id]);
    assert_eq!(evicted["session"]["id"], id.as_str());
    assert_eq!(evicted["caps_dropped"], 1);
    assert_eq!(w.state(&east)["state"], "dirty");
    // The mount notices at its next heartbeat, opens a new session and takes the cap of
    // the file it still has open again.
    wait_for(
        &w,
        "the evicted mount did not come back with its cap",
        || {
            let now = sessions(&w);
            now.len() == 1 && now[0]["id"] != id.as_str() && caps(&w, &east).len() == 1
        },
    );
    let out = w.b.gpair(&["session", "evict", &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no mount session"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = w.b.gpair(&["session", "evict", "../x"]);
    assert!(!out.status.success());
    drop(writer);
    wait_for(&w, "the write cap was not given back after close", || {
        caps(&w, &east).is_empty()
    });
}

/// The field report: a backend killed while it held its exclusive cap (mid-release) must
/// not leave the cap held: it is purged at start, the offload is finished by recovery, and
/// writers through the mount are not refused.
#[test]
fn a_crash_leaves_no_exclusive_cap_behind() {
    if skip() {
        return;
    }
    let mut w = world(SESSIONS);
    let east = w.write("crash.bin", &test_bytes(60_000, 5));
    w.synced();
    w.b.env = vec![("FAILPOINTS".into(), "offload-after-stub=return".into())];
    w.b.restart();
    let _ = w.ok(&["migrate", s(&east)]);
    assert!(
        w.b.wait_log("FAILPOINT offload-after-stub reached", WAIT),
        "{}",
        w.diagnostics()
    );
    let held = w.ok(&["caps", "ls"]);
    assert_eq!(held[0]["kind"], "exclusive", "{held:#}");
    w.b.kill();
    w.b.env.clear();
    w.b.start_again();
    assert!(w.b.log().contains("purged a stale exclusive cap"));
    assert!(w.ok(&["caps", "ls"]).as_array().unwrap().is_empty());
    wait_for(&w, "recovery did not finish the offload", || {
        w.state(&east)["state"] == "remote"
    });
    // A writer through a mount is served (the write recalls the file first).
    let m = w.mount(&[]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.path("crash.bin"))
        .unwrap();
    f.write_all(b"!").unwrap();
    drop(f);
    let mut want = test_bytes(60_000, 5);
    want.push(b'!');
    assert_eq!(std::fs::read(m.path("crash.bin")).unwrap(), want);
}
