//! The policy engine end to end (issue 6, the parts built so far): `gpair policy set|show|
//! clear`, `gpair explain` for each reason a file stays or would go, and pins — with the real
//! gateway, backend and CLI on a share whose file times are set with utimensat.
#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test

use std::path::Path;
use std::time::{Duration, SystemTime};

use gpair_tests::test_bytes;
use gpair_tests::world::{world, World};
use serde_json::Value;

const DAY: Duration = Duration::from_secs(86_400);

/// Writes `rel` with `len` bytes, accessed and modified `age` ago.
fn aged(w: &World, rel: &str, len: usize, age: Duration) -> std::path::PathBuf {
    let p = w.write(rel, &test_bytes(len, len as u64));
    let t = SystemTime::now() - age;
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
        .unwrap();
    p
}

/// The candidate paths of a `policy run` answer, in its order.
fn candidates(run: &Value) -> Vec<&str> {
    run["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect()
}

/// The (reason, files) kept of a `policy run` answer.
fn kept(run: &Value) -> Vec<(&str, u64)> {
    run["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["reason"].as_str().unwrap(), k["files"].as_u64().unwrap()))
        .collect()
}

fn explain(w: &World, p: &Path) -> Value {
    w.ok(&["explain", p.to_str().unwrap()])[0].clone()
}

fn verdict(w: &World, p: &Path) -> (String, String) {
    let e = explain(w, p);
    (
        e["verdict"].as_str().unwrap().to_owned(),
        e["reason"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn explain_gives_each_reason_and_pins_keep_files_on_east() {
    let w = world("");
    let old = aged(&w, "data/old.bin", 10_000, 40 * DAY);
    let young = aged(&w, "data/young.bin", 10_000, Duration::from_secs(60));
    let db = aged(&w, "data/cache.db", 10_000, 40 * DAY);
    let ads = aged(&w, "ads/banner.bin", 10_000, 40 * DAY);
    let small = aged(&w, "data/small.txt", 100, 40 * DAY);
    let kept = aged(&w, "keep/f.bin", 10_000, 40 * DAY);
    w.synced();

    // No policy yet: said so.
    assert_eq!(verdict(&w, &old).0, "none");

    let p = w.ok(&[
        "policy",
        "set",
        "p",
        "--idle-days",
        "30",
        "--min-size",
        "4K",
        "--exclude",
        "*.db",
        "--exclude",
        "ads/",
    ]);
    assert_eq!(p["set"], true, "{p:#}");
    let shown = w.ok(&["policy", "show", "p"]);
    assert_eq!(shown["rules"]["idle_secs"], 30 * 86_400);
    assert_eq!(shown["rules"]["min_size"], 4096);
    assert_eq!(
        shown["rules"]["min_age_secs"], 3600,
        "the default minimum age"
    );

    assert_eq!(
        w.ok(&["pin", w.share.join("keep").to_str().unwrap()])[0]["changed"],
        true
    );
    assert_eq!(
        w.ok(&["pin", w.share.join("keep").to_str().unwrap()])[0]["changed"],
        false
    );

    let (v, why) = verdict(&w, &old);
    assert_eq!(v, "offload", "{why}");
    assert!(
        why.contains("for 40d") && why.contains("rule: 30d"),
        "{why}"
    );
    let (v, why) = verdict(&w, &young);
    assert_eq!(v, "keep");
    assert!(why.starts_with("too young: modified"), "{why}");
    assert_eq!(
        verdict(&w, &db),
        ("keep".into(), "excluded by glob \"*.db\"".into())
    );
    assert_eq!(
        verdict(&w, &ads),
        ("keep".into(), "excluded by glob \"ads/\"".into())
    );
    assert_eq!(
        verdict(&w, &small),
        ("keep".into(), "too small: 100 bytes, min 4096".into())
    );
    let e = explain(&w, &kept);
    assert_eq!(e["verdict"], "keep");
    assert!(
        e["reason"].as_str().unwrap().starts_with("pinned ("),
        "{e:#}"
    );
    assert_eq!(e["pinned_by"], w.share.join("keep").to_str().unwrap());

    // Offloaded: said so, with the state.
    let job = w.ok(&["migrate", "--wait", old.to_str().unwrap()]);
    assert_eq!(job["state"], "done", "{job:#}");
    assert_eq!(
        verdict(&w, &old),
        ("keep".into(), "already offloaded (remote)".into())
    );

    // Unpinned, the file is judged like the others.
    assert_eq!(
        w.ok(&["unpin", w.share.join("keep").to_str().unwrap()])[0]["changed"],
        true
    );
    assert_eq!(verdict(&w, &kept).0, "offload");

    // Cleared: no policy again.
    assert_eq!(w.ok(&["policy", "clear", "p"])["set"], false);
    assert_eq!(verdict(&w, &kept).0, "none");
}

#[test]
fn bad_policy_input_gets_clear_errors() {
    let w = world("");
    let outside = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (
            vec!["policy", "set", "p", "--min-size", "4K"],
            "--unmodified-days",
        ),
        (vec!["policy", "set", "nope", "--idle-days", "3"], "nope"),
        (
            vec![
                "policy",
                "set",
                "p",
                "--idle-days",
                "3",
                "--min-size",
                "8K",
                "--max-size",
                "4K",
            ],
            "min size",
        ),
        (
            vec!["policy", "set", "p", "--idle-days", "3", "--exclude", "/"],
            "exclude",
        ),
        (
            vec!["policy", "set", "p", "--idle-days", "3", "--every", "0s"],
            "--every",
        ),
        (
            vec!["explain", outside.path().to_str().unwrap()],
            "not under the share",
        ),
        (
            vec!["pin", w.share.join("missing").to_str().unwrap()],
            "missing",
        ),
    ] {
        let out = w.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_policy_run_offloads_exactly_the_selected_files_and_a_dry_run_nothing() {
    let w = world("");
    let cold = [
        aged(&w, "t/a/cold1.bin", 20_000, 100 * DAY),
        aged(&w, "t/a/cold2.bin", 50_000, 60 * DAY),
        aged(&w, "t/b/deep/cold3.bin", 8_000, 45 * DAY),
    ];
    let stay = [
        aged(&w, "t/a/warm.bin", 20_000, 5 * DAY),
        aged(&w, "t/b/tiny.txt", 10, 100 * DAY),
        aged(&w, "t/b/keep.db", 20_000, 100 * DAY),
        aged(&w, "t/pinned/old.bin", 20_000, 100 * DAY),
    ];
    w.synced();
    w.ok(&[
        "policy",
        "set",
        "p",
        "--idle-days",
        "30",
        "--min-size",
        "1K",
        "--exclude",
        "*.db",
    ]);
    w.ok(&["pin", w.share.join("t/pinned").to_str().unwrap()]);

    let dry = w.ok(&["policy", "run", "p", "--dry-run"]);
    let listed = candidates(&dry);
    let want: Vec<String> = cold
        .iter()
        .map(|p| p.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, want, "coldest first: {dry:#}");
    assert_eq!(dry["candidate_bytes"], 78_000);
    assert_eq!(dry["job"], 0);
    assert_eq!(dry["scanned_files"], 7);
    let kept = kept(&dry);
    assert_eq!(
        kept,
        vec![
            ("excluded by \"*.db\"", 1),
            ("pinned", 1),
            ("too small", 1),
            ("used recently", 1)
        ],
        "{dry:#}"
    );
    for p in cold.iter().chain(stay.iter()) {
        assert_eq!(
            w.state(p)["state"],
            "local",
            "a dry run moved {}",
            p.display()
        );
    }

    let run = w.ok(&["policy", "run", "p"]);
    let id = run["job"].as_u64().unwrap();
    assert!(id > 0, "{run:#}");
    let done = w.wait_job(id);
    assert_eq!(done["state"], "done", "{done:#}");
    assert_eq!(done["files_done"], 3, "{done:#}");
    for p in &cold {
        assert_eq!(w.state(p)["state"], "remote", "{}", p.display());
    }
    for p in &stay {
        assert_eq!(w.state(p)["state"], "local", "{}", p.display());
    }
    // A second run finds nothing left to move.
    let again = w.ok(&["policy", "run", "p"]);
    assert_eq!(again["candidate_files"], 0, "{again:#}");
    assert_eq!(again["job"], 0);
}

#[test]
fn a_policy_with_an_interval_runs_on_its_own() {
    let w = world("");
    let cold = aged(&w, "p/cold.bin", 20_000, 90 * DAY);
    let warm = aged(&w, "p/warm.bin", 20_000, 2 * DAY);
    w.synced();
    let set = w.ok(&["policy", "set", "p", "--idle-days", "30", "--every", "2s"]);
    assert_eq!(set["rules"]["interval_secs"], 2, "{set:#}");
    assert!(
        gpair_tests::poll_until(gpair_tests::world::WAIT, || w.state(&cold)["state"]
            == "remote"),
        "the periodic run did not offload the cold file\n{}",
        w.diagnostics()
    );
    assert_eq!(w.state(&warm)["state"], "local");
    assert!(w.b.log().contains("policy run"), "{}", w.diagnostics());
}

/// A size-limited tmpfs mounted by the test, unmounted when dropped.
struct SmallFs(std::path::PathBuf);

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn above_the_high_watermark_the_coldest_files_go_until_usage_is_under_low() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let mounted = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=32m,mode=0755",
            "gpair-test",
            share.to_str().unwrap(),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIP: cannot mount a tmpfs here (needs root); the watermark test needs a small filesystem");
        return;
    }
    let _fs = SmallFs(share.clone());
    let w = gpair_tests::world::world_in(dir, &share, "", &[]);
    // 24 MiB of 32: 75% full, the oldest first in age.
    let files: Vec<_> = (0..12)
        .map(|i| aged(&w, &format!("f{i:02}.bin"), 2 << 20, (100 + 10 * i) * DAY))
        .collect();
    w.synced();
    let used_pct = || {
        let out = std::process::Command::new("df")
            .args(["--output=pcent", share.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().trim_end_matches('%').parse::<u32>().ok())
            .unwrap()
    };
    assert!(
        used_pct() >= 70,
        "the fill did not reach 70%: {}%",
        used_pct()
    );
    w.ok(&[
        "policy",
        "set",
        "p",
        "--idle-days",
        "30",
        "--high",
        "60",
        "--low",
        "30",
    ]);
    assert!(
        gpair_tests::poll_until(gpair_tests::world::WAIT, || used_pct() < 30),
        "usage stayed at {}%\n{}",
        used_pct(),
        w.diagnostics()
    );
    // The coldest went, and only as many as needed: the youngest files stay local.
    let remote: Vec<bool> = files
        .iter()
        .map(|f| w.state(f)["state"] == "remote")
        .collect();
    assert!(
        remote[11] && remote[10],
        "the coldest must go first: {remote:?}"
    );
    assert!(!remote[0], "more than needed went: {remote:?}");
    assert!(
        remote.windows(2).all(|p| !p[0] || p[1]),
        "offloaded out of coldness order: {remote:?}"
    );
    drop(w);
}

#[test]
fn over_the_east_soft_limit_the_coldest_files_go_until_it_is_under() {
    let w = world("");
    // Ten 1 MiB files, f00 the youngest (100 days), f09 the oldest.
    let files: Vec<_> = (0..10)
        .map(|i| aged(&w, &format!("s/f{i:02}.bin"), 1 << 20, (100 + 10 * i) * DAY))
        .collect();
    w.synced();
    w.ok(&[
        "policy",
        "set",
        "p",
        "--idle-days",
        "30",
        "--east-soft-limit",
        "4M",
    ]);
    let remote = |f: &std::path::PathBuf| w.state(f)["state"] == "remote";
    assert!(
        gpair_tests::poll_until(gpair_tests::world::WAIT, || files
            .iter()
            .filter(|f| remote(f))
            .count()
            >= 6),
        "the soft limit did not move the files\n{}",
        w.diagnostics()
    );
    // Exactly the six coldest went: 4 MiB of local data is left.
    std::thread::sleep(Duration::from_secs(1));
    let states: Vec<bool> = files.iter().map(remote).collect();
    assert_eq!(
        states,
        vec![false, false, false, false, true, true, true, true, true, true],
        "{}",
        w.diagnostics()
    );
}

/// Rate limits make a policy's job background work that waits its turn (and says so), an
/// admin's recall meanwhile is interactive, and `gpair status` shows the scan.
#[test]
fn policy_jobs_are_background_work_within_the_rate_limits() {
    let w = world("");
    let files: Vec<_> = (0..6)
        .map(|i| aged(&w, &format!("r/f{i}.bin"), 5_000, 90 * DAY))
        .collect();
    let other = aged(&w, "other/x.bin", 5_000, 1 * DAY);
    w.synced();
    w.ok(&["migrate", other.to_str().unwrap(), "--wait"]);
    let shown = w.ok(&[
        "policy",
        "set",
        "p",
        "--idle-days",
        "30",
        "--max-files-per-sec",
        "1",
        "--max-bytes-per-sec",
        "10M",
    ]);
    assert_eq!(shown["rules"]["max_files_per_sec"], 1, "{shown:#}");
    assert_eq!(shown["rules"]["max_bytes_per_sec"], 10 << 20, "{shown:#}");

    let run = w.ok(&["policy", "run", "p"]);
    let id = run["job"].as_u64().unwrap();
    let job = w.job(id);
    assert_eq!(job["background"], true, "{job:#}");
    // One file a second: the job waits on the limit, and says whose.
    let mut seen = Value::Null;
    let waited = gpair_tests::poll_until(Duration::from_secs(60), || {
        seen = w.job(id);
        seen["waiting_for"]
            .as_str()
            .is_some_and(|s| s.contains("rate limit of gpair p (1 files/s, 10.0 MiB/s)"))
            || seen["state"] == "done"
    });
    assert!(waited, "{seen:#}");
    assert_eq!(seen["state"], "waiting", "the job never waited: {seen:#}");
    // Interactive work goes on meanwhile.
    let recall = w.ok(&["recall", other.to_str().unwrap(), "--wait"]);
    assert_eq!(recall["state"], "done", "{recall:#}");
    assert_eq!(recall["background"], false, "{recall:#}");

    let done = w.wait_job(id);
    assert_eq!(done["state"], "done", "{done:#}");
    assert_eq!(done["files_done"], 6, "{done:#}");
    assert_eq!(done["waiting_for"], "", "{done:#}");
    for p in &files {
        assert_eq!(w.state(p)["state"], "remote", "{}", p.display());
    }
    let status = w.ok(&["status"]);
    let scan = &status["scans"][0];
    assert_eq!(scan["gpair"], "p", "{status:#}");
    assert_eq!(scan["running"], false, "{status:#}");
    assert_eq!(scan["trigger"], "run", "{status:#}");
    assert_eq!(scan["files"], 7, "{status:#}");
    assert_eq!(scan["candidates"], 6, "{status:#}");
}

/// `gpair recall --prefetch-list FILE` recalls exactly the listed files, as background work.
#[test]
fn a_prefetch_list_recalls_the_listed_files_in_the_background() {
    let w = world("");
    let f: Vec<_> = (0..3)
        .map(|i| w.write(&format!("pf/f{i}.bin"), &test_bytes(30_000, i)))
        .collect();
    w.synced();
    let all: Vec<&str> = f.iter().map(|p| p.to_str().unwrap()).collect();
    let mut args = vec!["migrate", "--wait"];
    args.extend(&all);
    w.ok(&args);
    let list = w.share.parent().unwrap().join("prefetch.txt");
    std::fs::write(
        &list,
        format!("# needed by tonight's job\n{}\n\n{}\n", all[0], all[2]),
    )
    .unwrap();
    let done = w.ok(&[
        "recall",
        "--prefetch-list",
        list.to_str().unwrap(),
        "--wait",
    ]);
    assert_eq!(done["state"], "done", "{done:#}");
    assert_eq!(done["background"], true, "{done:#}");
    assert_eq!(done["files_done"], 2, "{done:#}");
    assert_eq!(w.state(&f[0])["state"], "local");
    assert_eq!(w.state(&f[1])["state"], "remote");
    assert_eq!(w.state(&f[2])["state"], "local");
    let e = explain(&w, &f[0]);
    assert!(e["last_recall_at_ms"].as_i64().unwrap() > 0, "{e:#}");
    assert_eq!(explain(&w, &f[1])["last_recall_at_ms"], 0);
    for i in [0, 2] {
        let same = std::fs::read(&f[i]).unwrap() == test_bytes(30_000, i as u64);
        assert!(same, "{} came back with other bytes", f[i].display());
    }

    // A list naming a missing file starts nothing and says which.
    std::fs::write(
        &list,
        format!("{}\n{}/nope.bin\n", all[1], w.share.display()),
    )
    .unwrap();
    let out = w.cli(&["recall", "--prefetch-list", list.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope.bin"), "{err}");
    assert_eq!(w.state(&f[1])["state"], "remote");
    // An empty list is refused.
    std::fs::write(&list, "# nothing\n").unwrap();
    let out = w.cli(&["recall", "--prefetch-list", list.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lists no paths"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A file open for writing is never a candidate, and `explain` says so.
#[test]
fn a_file_open_for_writing_is_kept_and_explained() {
    let w = world("");
    let busy = aged(&w, "ow/busy.bin", 10_000, 90 * DAY);
    let idle = aged(&w, "ow/idle.bin", 10_000, 90 * DAY);
    w.synced();
    w.ok(&["policy", "set", "p", "--idle-days", "30"]);
    let writer = std::fs::File::options().append(true).open(&busy).unwrap();
    let dry = w.ok(&["policy", "run", "p", "--dry-run"]);
    let listed = candidates(&dry);
    assert_eq!(listed, vec![idle.to_str().unwrap()], "{dry:#}");
    let kept: Vec<&str> = kept(&dry).into_iter().map(|(r, _)| r).collect();
    assert_eq!(kept, vec!["open for writing"], "{dry:#}");
    let (v, why) = verdict(&w, &busy);
    assert_eq!(v, "keep");
    assert!(why.contains("open for writ"), "{why}");
    drop(writer);
    let dry = w.ok(&["policy", "run", "p", "--dry-run"]);
    assert_eq!(dry["candidate_files"], 2, "{dry:#}");
    assert_eq!(verdict(&w, &busy).0, "offload");
    // A west quota without room for it keeps it too, and explain says so.
    w.ok(&["quota", "set", "p", "--max-bytes", "5000"]);
    let (v, why) = verdict(&w, &busy);
    assert_eq!(v, "keep");
    assert!(
        why.contains("quota is full: 0 of 5000 bytes on west, this file needs 10000"),
        "{why}"
    );
}
