//! Migration end to end: the real `s3fs-gateway`, the real `gpair-backend` (built with the
//! `failpoints` feature by scripts/test.sh; inert unless FAILPOINTS is set) and the real `gpair`
//! CLI. Offload, state, recall, quotas, deletes, a gpeer outage mid-job; then the crash matrix
//! (SIGKILL at every failpoint of DESIGN 5.2/5.3, restart, check the invariants) and a
//! randomized kill loop.
//!
//! Invariants checked after every crash (DESIGN 7):
//! - every file's bytes are readable on east or come back by recall (compared by checksum);
//! - the stub record, the catalog's view (`gpair state`) and west agree: a local file has a
//!   west placeholder (gpair-name set, no data), a remote file's west object holds its bytes
//!   with gpair-name NULL;
//! - quota usage equals the count and bytes of remote files, nothing reserved;
//! - no multipart upload is left on west; no file is left offloading or recalling.
#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use gpair_tests::world::{job_id, world, world_bind, World, BUCKET, WAIT};
use gpair_tests::{crc32c, poll_until, test_bytes};
use serde_json::Value;

/// Backend settings for these tests: small parts so multipart runs on small files.
const TIER: &str = "\n[tier]\nmultipart_threshold_mib = 5\npart_size_mib = 5\ntransfers = 4\n";

#[test]
fn migrate_state_and_recall_round_trip() {
    let w = world(TIER);
    let small = test_bytes(70_000, 1);
    let big = test_bytes(12 << 20, 2); // three 5 MiB parts
    let a = w.write("d/small.txt", &small);
    let b = w.write("d/sub/big.bin", &big);
    let mtime = std::fs::metadata(&b).unwrap().mtime();
    w.synced();

    let job = w.ok(&[
        "migrate",
        "--recursive",
        "--wait",
        w.share.join("d").to_str().unwrap(),
    ]);
    assert_eq!(job["state"], "done", "{job:#}");
    assert_eq!(job["files_done"], 2);
    assert_eq!(job["bytes_done"], (small.len() + big.len()) as u64);
    let started = job["started_at_ms"].as_i64().unwrap();
    let finished = job["finished_at_ms"].as_i64().unwrap();
    assert!(started > 0 && finished >= started, "report times: {job:#}");

    for (p, rel, data) in [(&a, "d/small.txt", &small), (&b, "d/sub/big.bin", &big)] {
        let st = w.state(p);
        assert_eq!(st["state"], "remote", "{st:#}");
        assert_eq!(st["size"], data.len() as u64);
        assert_eq!(st["checksum"], format!("crc32c:{:08x}", crc32c(data)));
        assert_eq!(st["west_key"], format!("{BUCKET}/east/{rel}"));
        // East keeps size and mtime, releases the blocks.
        let md = std::fs::metadata(p).unwrap();
        assert_eq!(md.len(), data.len() as u64);
        assert!(
            md.blocks() * 512 < data.len() as u64 / 4,
            "{rel}: {} blocks",
            md.blocks()
        );
        // West holds the bytes and owns them.
        assert_eq!(w.west(rel), Some((data.len() as u64, None)));
        assert_eq!(&w.west_bytes(rel), data);
    }
    assert_eq!(std::fs::metadata(&b).unwrap().mtime(), mtime);
    let q = w.quota();
    assert_eq!(
        (q["used_files"].as_u64(), q["used_bytes"].as_u64()),
        (Some(2), Some((small.len() + big.len()) as u64))
    );

    // Again: a no-op, reported as such.
    let again = w.ok(&["migrate", "--wait", a.to_str().unwrap()]);
    assert_eq!(again["files_noop"], 1, "{again:#}");

    // Recall: same bytes, same inode, west back to a placeholder, quota freed.
    let ino = std::fs::metadata(&b).unwrap().ino();
    let back = w.ok(&["recall", "--wait", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(back["state"], "done", "{back:#}");
    assert_eq!(std::fs::read(&a).unwrap(), small);
    assert_eq!(std::fs::read(&b).unwrap(), big);
    assert_eq!(std::fs::metadata(&b).unwrap().ino(), ino);
    assert_eq!(std::fs::metadata(&b).unwrap().mtime(), mtime);
    assert_eq!(w.state(&b)["state"], "local");
    let placeholder = poll_until(WAIT, || {
        matches!(w.west("d/sub/big.bin"), Some((0, Some(_))))
    });
    assert!(placeholder, "west: {:?}", w.west("d/sub/big.bin"));
    assert_eq!(w.quota()["used_files"], 0);
    assert_eq!(w.uploads(), 0);

    // `job ls` lists all three, newest first.
    let ls = w.ok(&["job", "ls"]);
    assert_eq!(ls.as_array().unwrap().len(), 3, "{ls:#}");
    assert!(job_id(&ls[0]) > job_id(&ls[2]));
}

#[test]
fn quota_refusals_are_reported_as_skipped() {
    let w = world(TIER);
    let files: Vec<PathBuf> = (0..3)
        .map(|i| w.write(&format!("q/f{i}"), &test_bytes(10_000, 10 + i)))
        .collect();
    w.synced();
    w.ok(&["quota", "set", "p", "--max-files", "1"]);
    let job = w.ok(&[
        "migrate",
        "-r",
        "--wait",
        w.share.join("q").to_str().unwrap(),
    ]);
    assert_eq!(job["state"], "done", "skips are not failures: {job:#}");
    assert_eq!(
        (job["files_done"].as_u64(), job["files_skipped"].as_u64()),
        (Some(1), Some(2))
    );
    let reasons: Vec<&str> = job["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons.iter().all(|r| r.starts_with("quota:")),
        "{reasons:?}"
    );
    let q = w.quota();
    assert_eq!(
        (q["used_files"].as_u64(), q["max_files"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(q["used_bytes"], 10_000);
    drop(files);
}

#[test]
fn deleting_a_stub_deletes_its_west_data_and_frees_quota() {
    let w = world(TIER);
    let f = w.write("gone.bin", &test_bytes(50_000, 3));
    w.synced();
    w.ok(&["migrate", "--wait", f.to_str().unwrap()]);
    assert_eq!(w.west("gone.bin"), Some((50_000, None)));
    std::fs::remove_file(&f).unwrap();
    let ok = poll_until(WAIT, || {
        w.west("gone.bin").is_none() && w.quota()["used_files"] == 0
    });
    assert!(
        ok,
        "west: {:?}, quota {:#}\n{}",
        w.west("gone.bin"),
        w.quota(),
        w.diagnostics()
    );
}

#[test]
fn with_retention_a_deleted_stub_keeps_its_west_data_in_the_trash() {
    let w = world_bind(TIER, &["--retain-deleted-days", "7"]);
    assert_eq!(w.ok(&["show", "p"])["retain_deleted_days"], 7);
    let data = test_bytes(40_000, 4);
    let f = w.write("kept.bin", &data);
    w.synced();
    w.ok(&["migrate", "--wait", f.to_str().unwrap()]);
    std::fs::remove_file(&f).unwrap();
    let mut trash = Vec::new();
    let ok = poll_until(WAIT, || {
        let r = w.gw.signed(
            &w.gw.backend,
            "GET",
            &format!("/{BUCKET}?list-type=2&prefix=.gpair-trash/p/"),
            &[],
            b"",
        );
        trash = r
            .body_str()
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next().map(str::to_owned))
            .collect();
        w.west("kept.bin").is_none() && trash.len() == 1
    });
    assert!(
        ok,
        "west {:?}, trash {trash:?}\n{}",
        w.west("kept.bin"),
        w.diagnostics()
    );
    assert!(trash[0].ends_with("/east/kept.bin"), "{trash:?}");
    let r = w.gw.get_raw(BUCKET, &trash[0], &[]);
    assert_eq!(r.body, data, "the retained copy holds the file's bytes");
    assert_eq!(w.quota()["used_files"], 0);
}

#[test]
fn a_job_waits_for_an_unreachable_gpeer_and_finishes_when_it_returns() {
    let mut w = world(TIER);
    let files: Vec<PathBuf> = (0..5)
        .map(|i| w.write(&format!("w/f{i}"), &test_bytes(20_000, 20 + i)))
        .collect();
    w.synced();
    w.gw.kill();
    let job = w.ok(&["migrate", "-r", w.share.join("w").to_str().unwrap()]);
    let id = job_id(&job);
    let mut seen = Value::Null;
    let waiting = poll_until(WAIT, || {
        seen = w.job(id);
        seen["state"] == "waiting"
    });
    assert!(waiting, "job never showed it was waiting: {seen:#}");
    assert!(
        seen["waiting_for"].as_str().unwrap().contains("west"),
        "{seen:#}"
    );
    w.gw.restart();
    let done = w.wait_job(id);
    assert_eq!(done["state"], "done", "{done:#}");
    assert_eq!(done["files_done"], 5);
    for (i, f) in files.iter().enumerate() {
        assert_eq!(w.state(f)["state"], "remote");
        assert_eq!(
            w.west_bytes(&format!("w/f{i}")),
            test_bytes(20_000, 20 + i as u64)
        );
    }
}

#[test]
fn a_cancelled_job_stops_and_leaves_every_file_whole() {
    let w = world(TIER);
    let corpus = Corpus::create(&w, "c", 12, 500);
    w.synced();
    let job = w.ok(&["migrate", "-r", w.share.join("c").to_str().unwrap()]);
    let id = job_id(&job);
    let cancelled = w.ok(&["job", "cancel", &id.to_string()]);
    assert_eq!(job_id(&cancelled), id);
    let done = w.wait_job(id);
    assert_eq!(done["state"], "cancelled", "{done:#}");
    assert_eq!(
        done["cancel_requested"], false,
        "finished: no longer pending"
    );
    let c = &done;
    let total = [
        "files_done",
        "files_cancelled",
        "files_noop",
        "files_skipped",
    ]
    .iter()
    .map(|k| c[k].as_u64().unwrap())
    .sum::<u64>();
    assert_eq!(total, 12, "every file accounted for: {done:#}");
    assert!(done["files_cancelled"].as_u64().unwrap() > 0, "{done:#}");
    corpus.check_invariants(&w);
}

#[test]
fn bad_input_gets_clear_errors() {
    let w = world(TIER);
    let outside = tempfile::tempdir().unwrap();
    let dir = w.share.join("dir");
    std::fs::create_dir_all(&dir).unwrap();
    for (args, needle) in [
        (vec!["migrate", dir.to_str().unwrap()], "--recursive"),
        (
            vec!["migrate", w.share.join("missing").to_str().unwrap()],
            "missing",
        ),
        (
            vec!["recall", outside.path().to_str().unwrap(), "-r"],
            "not under the share",
        ),
        (vec!["job", "show", "999"], "999"),
        (vec!["quota", "set", "nope", "--max-files", "1"], "nope"),
    ] {
        let out = w.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Crash safety

/// The files of a crash scenario and their bytes.
struct Corpus {
    files: Vec<(String, Vec<u8>)>,
}

impl Corpus {
    fn create(w: &World, dir: &str, n: usize, seed: u64) -> Corpus {
        let files = (0..n)
            .map(|i| {
                // Mostly small, every fourth multipart.
                let len = if i % 4 == 3 {
                    (11 << 20) + i * 977
                } else {
                    3000 + i * 4099
                };
                let rel = format!("{dir}/f{i:03}");
                let data = test_bytes(len, seed + i as u64);
                w.write(&rel, &data);
                (rel, data)
            })
            .collect();
        Corpus { files }
    }

    /// DESIGN 7 after a crash and restart: everything converges; every byte is there.
    fn check_invariants(&self, w: &World) {
        // No migration left in flight, for every file.
        let paths: Vec<String> = self
            .files
            .iter()
            .map(|(rel, _)| w.share.join(rel).to_str().unwrap().to_owned())
            .collect();
        let mut states = Value::Null;
        let settled = poll_until(WAIT, || {
            let mut args = vec!["state"];
            args.extend(paths.iter().map(String::as_str));
            states = w.ok(&args);
            states
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["state"] == "local" || s["state"] == "remote")
        });
        assert!(
            settled,
            "files left in flight: {states:#}\n{}",
            w.diagnostics()
        );
        let mut remote_files = 0u64;
        let mut remote_bytes = 0u64;
        for ((rel, data), st) in self.files.iter().zip(states.as_array().unwrap()) {
            let path = w.share.join(rel);
            match st["state"].as_str().unwrap() {
                "local" => {
                    assert_eq!(&std::fs::read(&path).unwrap(), data, "{rel}: local bytes");
                    // West converges to a placeholder (rtl through the outbox).
                    let ok = poll_until(WAIT, || matches!(w.west(rel), Some((0, Some(_)))));
                    assert!(
                        ok,
                        "{rel}: west is {:?}, want a placeholder\n{}",
                        w.west(rel),
                        w.diagnostics()
                    );
                }
                _ => {
                    remote_files += 1;
                    remote_bytes += data.len() as u64;
                    assert_eq!(
                        st["checksum"],
                        format!("crc32c:{:08x}", crc32c(data)),
                        "{rel}"
                    );
                    assert_eq!(
                        w.west(rel),
                        Some((data.len() as u64, None)),
                        "{rel}: west owns the data"
                    );
                    assert_eq!(&w.west_bytes(rel), data, "{rel}: west bytes");
                    let md = std::fs::metadata(&path).unwrap();
                    assert!(
                        md.blocks() * 512 < data.len() as u64 / 2 + 8192,
                        "{rel}: stub holds data"
                    );
                }
            }
        }
        let q = w.quota();
        assert_eq!(
            (
                q["used_files"].as_u64(),
                q["used_bytes"].as_u64(),
                q["reserved_files"].as_u64()
            ),
            (Some(remote_files), Some(remote_bytes), Some(0)),
            "quota {q:#}"
        );
        let no_uploads = poll_until(WAIT, || w.uploads() == 0);
        assert!(
            no_uploads,
            "orphaned multipart uploads: {}\n{}",
            w.uploads_listing(),
            w.diagnostics()
        );
        // Everything recalls with the right bytes.
        let back = w.ok(&[
            "recall",
            "-r",
            "--wait",
            w.share.join(self.dir()).to_str().unwrap(),
        ]);
        assert_eq!(back["files_failed"], 0, "{back:#}\n{}", w.diagnostics());
        for (rel, data) in &self.files {
            assert_eq!(
                &std::fs::read(w.share.join(rel)).unwrap(),
                data,
                "{rel} after recall"
            );
        }
        assert_eq!(w.quota()["used_files"], 0);
    }

    fn dir(&self) -> &str {
        self.files[0].0.split('/').next().unwrap()
    }
}

/// Kills the daemon where a failpoint stops it, restarts it without failpoints.
fn crash_at(w: &mut World, failpoint: &str, start: impl FnOnce(&World)) {
    w.b.env = vec![("FAILPOINTS".into(), format!("{failpoint}=return"))];
    w.b.restart();
    start(w);
    let reached =
        w.b.wait_log(&format!("FAILPOINT {failpoint} reached"), WAIT);
    assert!(
        reached,
        "failpoint {failpoint} never reached\n{}",
        w.diagnostics()
    );
    let resolved_before =
        w.b.log()
            .matches("resolved an interrupted migration")
            .count();
    w.b.kill();
    w.b.env.clear();
    w.b.start_again();
    // The crash left an intent (the failpoints are all inside one): recovery resolved it.
    let resolved = w.b.wait_log_count(
        "resolved an interrupted migration",
        resolved_before + 1,
        WAIT,
    );
    assert!(
        resolved,
        "no intent resolved after the crash at {failpoint}\n{}",
        w.diagnostics()
    );
}

#[test]
fn crash_matrix_every_failpoint_then_invariants() {
    if !failpoints_built() {
        eprintln!("SKIP: gpair-backend was built without the `failpoints` feature (scripts/test.sh builds it with it)");
        return;
    }
    let mut w = world(TIER);
    let offload_points = [
        "offload-after-upload",
        "offload-after-setattr",
        "offload-after-stub",
        "offload-after-punch",
    ];
    let recall_points = [
        "recall-mid-stream",
        "recall-after-sync",
        "recall-before-rtl",
    ];
    for (i, fp) in offload_points
        .iter()
        .chain(recall_points.iter())
        .enumerate()
    {
        let dir = format!("m{i}");
        let corpus = Corpus::create(&w, &dir, 4, 100 * i as u64);
        w.synced();
        let target = w.share.join(&dir);
        let target = target.to_str().unwrap().to_owned();
        if fp.starts_with("recall") {
            let job = w.ok(&["migrate", "-r", "--wait", &target]);
            assert_eq!(job["files_done"], 4, "{job:#}");
            crash_at(&mut w, fp, |w| {
                w.ok(&["recall", "-r", &target]);
            });
        } else {
            crash_at(&mut w, fp, |w| {
                w.ok(&["migrate", "-r", &target]);
            });
        }
        // The interrupted job resumes and finishes after the restart.
        let last = w.ok(&["job", "ls"])[0].clone();
        let done = w.wait_job(job_id(&last));
        assert!(done["finished_at_ms"].as_i64().unwrap() > 0, "{done:#}");
        corpus.check_invariants(&w);
    }
}

/// SIGKILL at random moments of a mixed offload/recall workload, N times
/// (`GPAIR_KILL_LOOP_N`, default 3 here; bench/stress-migrate.sh runs many more).
#[test]
fn randomized_kill_loop() {
    let n: usize = std::env::var("GPAIR_KILL_LOOP_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let files: usize = std::env::var("GPAIR_KILL_LOOP_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut w = world(TIER);
    let corpus = Corpus::create(&w, "r", files, 7000);
    w.synced();
    let target = w.share.join("r").to_str().unwrap().to_owned();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..n {
        // Offload half, recall the rest, in whatever state the last crash left them.
        let verb = if round % 2 == 0 { "migrate" } else { "recall" };
        w.ok(&[verb, "-r", &target]);
        std::thread::sleep(Duration::from_millis(50 + next() % 1500));
        w.b.kill();
        w.b.start_again();
    }
    // Let whatever was resumed finish.
    let ok = poll_until(WAIT, || {
        w.ok(&["job", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .all(|j| matches!(j["state"].as_str(), Some("done" | "failed" | "cancelled")))
    });
    assert!(
        ok,
        "jobs did not finish after the kills\n{}",
        w.diagnostics()
    );
    corpus.check_invariants(&w);
}

/// Whether the daemon under test has failpoints compiled in (`gpair-backend --features`).
fn failpoints_built() -> bool {
    let out = std::process::Command::new(gpair_tests::bin_path("gpair-backend"))
        .arg("--features")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("failpoints")
}
