//! The fault suite's data scenarios (issue 7: 4, 5, 6, plus bad stub records), with the real
//! binaries: east full during a recall, the catalog lost, west copies corrupted or deleted
//! behind our back, garbage in a stub record — and `gpair fsck` finding (and, where safe,
//! repairing) what each leaves behind. Every scenario ends with the files' bytes checked
//! against what was written, stubs intact where the data could not come back, and quota
//! equal to the sum of the offloaded sizes. The east-full scenario mounts a small tmpfs and
//! needs root (skipped with a message otherwise); mount reads need /dev/fuse.
#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use gpair_tests::world::{job_id, world, world_in, World, BUCKET, WAIT};
use gpair_tests::{crc32c, have_fuse, poll_until, test_bytes};
use serde_json::Value;

const TIER: &str = "\n[tier]\nmultipart_threshold_mib = 5\npart_size_mib = 5\ntransfers = 4\n";

/// Runs `gpair --output json ARGS` and returns (exit code, JSON stdout) whatever the exit.
fn run(w: &World, args: &[&str]) -> (i32, Value) {
    let out = w.cli(args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "gpair {}: no JSON ({e}): {}{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            w.diagnostics()
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// `gpair fsck p ARGS`: (exit code, the report of gpair p).
fn fsck(w: &World, flags: &[&str]) -> (i32, Value) {
    let mut args = vec!["fsck", "p"];
    args.extend_from_slice(flags);
    let (code, v) = run(w, &args);
    assert_eq!(v[0]["gpair"], "p", "{v:#}");
    (code, v[0].clone())
}

/// The issues of a report whose kind is `kind`, as (path, issue).
fn issues<'a>(report: &'a Value, kind: &str) -> Vec<(&'a str, &'a Value)> {
    report["issues"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == kind)
        .map(|i| (i["path"].as_str().unwrap(), i))
        .collect()
}

/// I3: stub records, catalog and west agree (fsck finds nothing once sync has settled) and
/// no multipart upload is left over.
fn converged(w: &World) {
    w.synced();
    let mut last = Value::Null;
    let clean = poll_until(WAIT, || {
        let (code, r) = fsck(w, &[]);
        last = r;
        code == 0
    });
    assert!(
        clean,
        "fsck never came back clean: {last:#}\n{}",
        w.diagnostics()
    );
    assert_eq!(w.uploads(), 0, "{}", w.uploads_listing());
}

/// Polls until fsck reports exactly `expected` (kind, path), sorted.
fn reports_exactly(w: &World, expected: &[(&str, &str)]) -> Value {
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(k, p)| (k.to_string(), p.to_string()))
        .collect();
    want.sort();
    let mut last = Value::Null;
    let ok = poll_until(WAIT, || {
        let (_, r) = fsck(w, &[]);
        let mut got: Vec<(String, String)> = r["issues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["kind"].as_str().unwrap().to_owned(),
                    i["path"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        got.sort();
        last = r;
        got == want
    });
    assert!(ok, "expected {want:?}: {last:#}");
    last
}

fn stub_xattr(p: &Path) -> Option<Vec<u8>> {
    let out = Command::new("getfattr")
        .args(["--only-values", "-n", "user.gpair"])
        .arg(p)
        .output()
        .expect("getfattr (attr package)");
    out.status.success().then_some(out.stdout)
}

fn set_xattr(p: &Path, value: &[u8]) {
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new("user.gpair").unwrap();
    // SAFETY: NUL-terminated strings; the value slice lives for the call.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {}", p.display());
}

/// Offloads `paths` and waits; the job must be done.
fn migrate(w: &World, paths: &[&Path]) {
    let mut args = vec!["migrate", "--wait"];
    args.extend(paths.iter().map(|p| p.to_str().unwrap()));
    let job = w.ok(&args);
    assert_eq!(job["state"], "done", "{job:#}\n{}", w.diagnostics());
}

/// Recalls `paths` and waits, whatever the job's end: its report.
fn recall(w: &World, paths: &[&Path]) -> Value {
    let mut args = vec!["recall", "--wait"];
    args.extend(paths.iter().map(|p| p.to_str().unwrap()));
    let (_, v) = run(w, &args);
    w.wait_job(job_id(&v))
}

fn state(w: &World, p: &Path) -> Value {
    w.state(p)
}

fn quota(w: &World) -> (u64, u64) {
    let q = w.quota();
    (
        q["used_files"].as_u64().unwrap(),
        q["used_bytes"].as_u64().unwrap(),
    )
}

/// Files of a scenario: relative path and contents.
fn corpus(w: &World, n: usize, seed: u64) -> Vec<(PathBuf, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let data = test_bytes(1000 + i * 70_001, seed + i as u64);
            let p = w.write(&format!("d{}/f{i}.bin", i % 2), &data);
            (p, data)
        })
        .collect()
}

/// Scenario 5 (D1): the RocksDB directory is deleted with stubs present. The registry comes
/// back from its backup next to the catalog at start; `fsck` shows what the catalog lost;
/// `fsck --rebuild` re-derives it from the stub records and the west listing; every file
/// recalls with its bytes, and quota is exact throughout.
#[test]
fn catalog_lost_then_rebuilt_every_file_readable_and_quota_exact() {
    let mut w = world(TIER);
    let files = corpus(&w, 6, 10);
    let local = w.write("local.txt", b"never offloaded");
    w.synced();
    let paths: Vec<&Path> = files.iter().map(|(p, _)| p.as_path()).collect();
    migrate(&w, &paths);
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(quota(&w), (6, total));
    let (code, clean) = fsck(&w, &[]);
    assert_eq!(code, 0, "{clean:#}");
    assert_eq!(clean["issues"].as_array().unwrap().len(), 0, "{clean:#}");
    assert_eq!(clean["stubs"], 6);

    w.b.terminate();
    let backup = PathBuf::from(format!("{}.registry.json", w.b.catalog.display()));
    assert!(
        backup.exists(),
        "no registry backup at {}",
        backup.display()
    );
    std::fs::remove_dir_all(&w.b.catalog).unwrap();
    w.b.start_again();
    assert!(
        w.b.log().contains("restored from the registry backup"),
        "{}",
        w.diagnostics()
    );
    let ls = w.ok(&["ls"]);
    assert_eq!(ls[0]["name"], "p", "{ls:#}");

    // What a lost catalog looks like: stubs quota does not count.
    let (code, lost) = fsck(&w, &[]);
    assert_eq!(code, 1, "{lost:#}");
    assert_eq!(issues(&lost, "missing_remote_record").len(), 6, "{lost:#}");
    assert_eq!(issues(&lost, "quota_drift").len(), 1, "{lost:#}");
    assert!(issues(&lost, "lost").is_empty(), "{lost:#}");
    assert_eq!(quota(&w), (0, 0));
    for (p, d) in &files {
        let st = state(&w, p);
        assert_eq!(st["state"], "remote", "{st:#}");
        assert_eq!(st["size"], d.len() as u64);
    }

    let (code, rebuilt) = fsck(&w, &["--rebuild"]);
    assert_eq!(code, 0, "{rebuilt:#}");
    assert_eq!(rebuilt["quota_used_bytes"], total, "{rebuilt:#}");
    assert_eq!(quota(&w), (6, total));
    w.synced();
    let settled = poll_until(WAIT, || fsck(&w, &[]).0 == 0);
    assert!(settled, "{:#}", fsck(&w, &[]).1);

    // Every file comes back with its bytes; quota drops to zero.
    let job = recall(&w, &paths);
    assert_eq!(job["state"], "done", "{job:#}");
    for (p, d) in &files {
        assert_eq!(
            crc32c(&std::fs::read(p).unwrap()),
            crc32c(d),
            "{}",
            p.display()
        );
    }
    assert_eq!(std::fs::read(&local).unwrap(), b"never offloaded");
    assert_eq!(quota(&w), (0, 0));
    converged(&w);
}

/// The same loss repaired with `--repair` alone: missing remote records are written from the
/// stub records and usage recomputed — quota drift, found and fixed.
#[test]
fn quota_drift_after_catalog_loss_is_reported_then_repaired() {
    let mut w = world(TIER);
    let files = corpus(&w, 3, 40);
    w.synced();
    let paths: Vec<&Path> = files.iter().map(|(p, _)| p.as_path()).collect();
    migrate(&w, &paths);
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    w.b.terminate();
    std::fs::remove_dir_all(&w.b.catalog).unwrap();
    w.b.start_again();

    let (code, r) = fsck(&w, &[]);
    assert_eq!(code, 1);
    let drift = issues(&r, "quota_drift");
    assert_eq!(drift.len(), 1, "{r:#}");
    assert_eq!(drift[0].1["repaired"], false);
    assert!(
        drift[0].1["detail"]
            .as_str()
            .unwrap()
            .contains(&total.to_string()),
        "{r:#}"
    );
    // A report changes nothing.
    assert_eq!(quota(&w), (0, 0));

    let (code, fixed) = fsck(&w, &["--repair"]);
    assert_eq!(code, 0, "{fixed:#}");
    assert!(
        fixed["issues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["repaired"] == true),
        "{fixed:#}"
    );
    assert_eq!(quota(&w), (3, total));
    converged(&w);
}

/// Scenario 6 (R4): one west copy corrupted in place (same size), another deleted, in the
/// gateway's root directory. Recall refuses both, the stubs stay, the files show `conflict`
/// and `lost` with the reason, fsck reports them, and a read through a mount is EIO.
#[test]
fn corrupted_or_deleted_west_copies_are_refused_and_reported() {
    let w = world(TIER);
    let a_data = test_bytes(2 << 20, 61);
    let b_data = test_bytes(300_000, 62);
    let c_data = test_bytes(50_000, 63);
    let a = w.write("a.bin", &a_data);
    let b = w.write("sub/b.bin", &b_data);
    let c = w.write("c.bin", &c_data);
    w.synced();
    migrate(&w, &[&a, &b, &c]);
    let a_stub = stub_xattr(&a).expect("a is a stub");
    let b_stub = stub_xattr(&b).expect("b is a stub");

    // Behind our back: flip bytes in the middle of a's copy, delete b's.
    let west_a = w.gw.root.join(BUCKET).join(w.west_key("a.bin"));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&west_a)
        .unwrap();
    f.write_all_at(b"CORRUPTION", 1 << 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    std::fs::remove_file(w.gw.root.join(BUCKET).join(w.west_key("sub/b.bin"))).unwrap();

    // fsck sees the loss from the listing, the corruption when it reads the data.
    let (code, r) = fsck(&w, &[]);
    assert_eq!(code, 1, "{r:#}");
    let lost = issues(&r, "lost");
    assert_eq!(lost.len(), 1, "{r:#}");
    assert_eq!(lost[0].0, "sub/b.bin");
    let (_, deep) = fsck(&w, &["--verify-data"]);
    let conflict = issues(&deep, "conflict");
    assert_eq!(conflict.len(), 1, "{deep:#}");
    assert_eq!(conflict[0].0, "a.bin");
    assert!(
        conflict[0].1["detail"]
            .as_str()
            .unwrap()
            .contains("checksum"),
        "{deep:#}"
    );

    // Recall refuses both, with the reason per file; c comes back.
    let job = recall(&w, &[&a, &b, &c]);
    assert_eq!(job["state"], "failed", "{job:#}");
    assert_eq!(job["files_failed"], 2, "{job:#}");
    let text = job.to_string();
    assert!(text.contains("corrupt") && text.contains("lost"), "{job:#}");
    assert_eq!(std::fs::read(&c).unwrap(), c_data);

    // Stubs intact: record unchanged, size kept, nothing written into them.
    for (p, rec, len) in [(&a, &a_stub, a_data.len()), (&b, &b_stub, b_data.len())] {
        assert_eq!(stub_xattr(p).as_ref(), Some(rec), "{}", p.display());
        let md = std::fs::metadata(p).unwrap();
        assert_eq!(md.len(), len as u64);
        assert!(gpair_tests::has_no_data(p), "{} holds data", p.display());
    }
    let sa = state(&w, &a);
    assert_eq!(sa["state"], "conflict", "{sa:#}");
    assert!(
        sa["detail"].as_str().unwrap().contains("checksum"),
        "{sa:#}"
    );
    let sb = state(&w, &b);
    assert_eq!(sb["state"], "lost", "{sb:#}");
    assert!(sb["detail"].as_str().unwrap().contains("lost"), "{sb:#}");

    // fsck --repair keeps both stubs and says what to do.
    let (code, rep) = fsck(&w, &["--repair"]);
    assert_eq!(code, 1, "{rep:#}");
    assert_eq!(issues(&rep, "lost").len(), 1, "{rep:#}");
    assert_eq!(issues(&rep, "conflict").len(), 1, "{rep:#}");
    assert_eq!(stub_xattr(&a).as_ref(), Some(&a_stub));
    assert_eq!(stub_xattr(&b).as_ref(), Some(&b_stub));
    // Nothing else disagrees.
    reports_exactly(&w, &[("conflict", "a.bin"), ("lost", "sub/b.bin")]);
    assert_eq!(w.uploads(), 0);
    // Quota still counts both offloaded files: their stubs stand for them.
    assert_eq!(
        quota(&w),
        (2, (a_data.len() + b_data.len()) as u64),
        "{rep:#}"
    );

    // Read through a mount: EIO, never zeros or the corrupt bytes.
    if have_fuse() {
        let m = w.mount(&[]);
        for rel in ["a.bin", "sub/b.bin"] {
            let err = std::fs::read(m.path(rel)).expect_err(rel);
            assert_eq!(err.raw_os_error(), Some(libc::EIO), "{rel}: {err}");
        }
        assert_eq!(std::fs::read(m.path("c.bin")).unwrap(), c_data);
    } else {
        eprintln!("SKIP mount reads: /dev/fuse is not usable here");
    }
}

/// S7: garbage in a stub record, on an offloaded file and on a local one: reported by
/// `state` and fsck, refused by recall, left untouched by `fsck --repair`, never served as
/// zeros.
#[test]
fn garbage_stub_records_are_reported_never_destroyed_nor_served_as_zeros() {
    let w = world(TIER);
    let off_data = test_bytes(200_000, 71);
    let off = w.write("off.bin", &off_data);
    let local_data = test_bytes(9_000, 72);
    let local = w.write("local.bin", &local_data);
    w.synced();
    migrate(&w, &[&off]);
    set_xattr(&off, b"\x01{\"gpair\":\"p\",garbage");
    set_xattr(&local, b"\xffnot a record");

    for p in [&off, &local] {
        let st = state(&w, p);
        assert_eq!(st["state"], "conflict", "{st:#}");
        assert!(st["detail"].as_str().unwrap().contains("corrupt"), "{st:#}");
    }
    let job = recall(&w, &[&off]);
    assert_eq!(job["state"], "failed", "{job:#}");
    assert!(job.to_string().contains("corrupt"), "{job:#}");

    for flags in [&[][..], &["--repair"][..]] {
        let (code, r) = fsck(&w, flags);
        assert_eq!(code, 1, "{r:#}");
        let bad = issues(&r, "corrupt_stub");
        let mut paths: Vec<&str> = bad.iter().map(|(p, _)| *p).collect();
        paths.sort();
        assert_eq!(paths, ["local.bin", "off.bin"], "{r:#}");
        assert!(bad.iter().all(|(_, i)| i["repaired"] == false), "{r:#}");
    }
    // Nothing destroyed: records as written, sizes kept, local data intact.
    assert_eq!(
        stub_xattr(&off).unwrap(),
        b"\x01{\"gpair\":\"p\",garbage".to_vec()
    );
    assert_eq!(stub_xattr(&local).unwrap(), b"\xffnot a record".to_vec());
    assert_eq!(
        std::fs::metadata(&off).unwrap().len(),
        off_data.len() as u64
    );
    assert_eq!(std::fs::read(&local).unwrap(), local_data);
    // West still holds the offloaded data; nothing else disagrees.
    assert_eq!(w.west("off.bin"), Some((off_data.len() as u64, None)));
    reports_exactly(
        &w,
        &[("corrupt_stub", "local.bin"), ("corrupt_stub", "off.bin")],
    );

    if have_fuse() {
        let m = w.mount(&[]);
        let err = std::fs::read(m.path("off.bin")).expect_err("corrupt stub read");
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    } else {
        eprintln!("SKIP mount reads: /dev/fuse is not usable here");
    }
}

/// Orphans on west: data no east file stands for is reported, then moved to the trash by
/// `--repair`; a second run is clean.
#[test]
fn orphan_west_data_is_reported_then_removed() {
    let w = world(TIER);
    let keep = w.write("keep.bin", &test_bytes(10_000, 81));
    w.synced();
    migrate(&w, &[&keep]);
    let r = w.gw.put_raw(
        BUCKET,
        &w.west_key("nobody/orphan.bin"),
        &[],
        b"orphan data",
    );
    assert_eq!(r.status, 200, "{}", r.body_str());

    let (code, rep) = fsck(&w, &[]);
    assert_eq!(code, 1, "{rep:#}");
    let orphans = issues(&rep, "orphan_west");
    assert_eq!(orphans.len(), 1, "{rep:#}");
    assert_eq!(orphans[0].0, "nobody/orphan.bin");
    assert!(w.west("nobody/orphan.bin").is_some());

    let (code, fixed) = fsck(&w, &["--repair"]);
    assert_eq!(code, 0, "{fixed:#}");
    assert!(
        issues(&fixed, "orphan_west")[0].1["action"]
            .as_str()
            .unwrap()
            .contains(".gpair-trash/"),
        "{fixed:#}"
    );
    assert!(w.west("nobody/orphan.bin").is_none());
    converged(&w);
    // The stub's copy was never touched.
    assert_eq!(w.west("keep.bin"), Some((10_000, None)));
    assert_eq!(state(&w, &keep)["state"], "remote");
}

/// A tmpfs mounted by the test (root only), unmounted when dropped.
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    fn mount(dir: &Path, size: &str) -> Option<SmallFs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallFs { dir: dir.into() })
    }

    fn avail(&self) -> u64 {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a zeroed statvfs is a valid out-parameter; c is NUL-terminated.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        st.f_bavail * st.f_frsize
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Scenario 4 (D2): east fills up during a recall. The recall fails naming ENOSPC, the stub
/// stays (record present, data still on west), nothing half-written is left in it (no data
/// blocks); with space freed, the recall works.
#[test]
fn east_full_during_recall_keeps_the_stub_and_leaves_nothing_half_written() {
    let top = tempfile::tempdir().unwrap();
    let mnt = top.path().join("small");
    let Some(fs) = SmallFs::mount(&mnt, "8m") else {
        eprintln!("SKIP east-full scenario: needs root to mount a size-limited tmpfs");
        return;
    };
    // The world (and its daemons) goes before the filesystem is unmounted.
    let w = world_in(tempfile::tempdir().unwrap(), &fs.dir, TIER, &[]);
    let big_data = test_bytes(5 << 20, 91);
    let big = w.write("big.bin", &big_data);
    w.synced();
    migrate(&w, &[&big]);
    let rec = stub_xattr(&big).expect("big is a stub");

    // Fill east so that only ~1 MiB of the 5 MiB can come back.
    let filler = fs.dir.join("filler");
    let room = fs.avail().saturating_sub(1 << 20);
    std::fs::write(&filler, vec![0x5a; room as usize]).unwrap();
    let job = recall(&w, &[&big]);
    assert_eq!(job["state"], "failed", "{job:#}");
    let text = job.to_string();
    assert!(text.contains("ENOSPC"), "{job:#}");
    assert_eq!(stub_xattr(&big).as_ref(), Some(&rec));
    let md = std::fs::metadata(&big).unwrap();
    assert_eq!(md.len(), big_data.len() as u64);
    assert_eq!(md.blocks(), 0, "half-written data left in the stub");
    assert_eq!(state(&w, &big)["state"], "remote");
    assert_eq!(w.west("big.bin"), Some((big_data.len() as u64, None)));

    // A write through a mount recalls first: the writer hears ENOSPC, the stub stays.
    if have_fuse() {
        let m = w.mount(&[]);
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(m.path("big.bin"))
            .and_then(|f| f.write_all_at(b"x", 0))
            .expect_err("write into a stub with east full");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}\n{}", m.log());
        assert_eq!(stub_xattr(&big).as_ref(), Some(&rec));
        assert_eq!(std::fs::metadata(&big).unwrap().blocks(), 0);
    } else {
        eprintln!("SKIP write through a mount: /dev/fuse is not usable here");
    }

    // Space freed: the recall works.
    std::fs::remove_file(&filler).unwrap();
    let job = recall(&w, &[&big]);
    assert_eq!(job["state"], "done", "{job:#}");
    assert_eq!(std::fs::read(&big).unwrap(), big_data);
    assert_eq!(quota(&w), (0, 0));
    converged(&w);
    drop(w);
}

/// Catalog and registry backup both lost: the operator adds the gpeer and binds the gpair
/// again by hand, then rebuilds; binding does not touch the stubs and every file comes back.
#[test]
fn without_a_registry_backup_binding_again_then_rebuilding_works() {
    let mut w = world(TIER);
    let files = corpus(&w, 3, 50);
    w.synced();
    let paths: Vec<&Path> = files.iter().map(|(p, _)| p.as_path()).collect();
    migrate(&w, &paths);
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    w.b.terminate();
    std::fs::remove_dir_all(&w.b.catalog).unwrap();
    std::fs::remove_file(format!("{}.registry.json", w.b.catalog.display())).unwrap();
    w.b.start_again();
    assert_eq!(w.ok(&["ls"]).as_array().unwrap().len(), 0);
    w.ok(&[
        "gpeer",
        "add",
        "west",
        "--endpoint",
        &w.gw.endpoint(),
        "--cluster-id",
        "LC_222",
        "--access-key",
        &w.gw.backend.access_key,
        "--secret-key",
        &w.gw.backend.secret_key,
    ]);
    let remote = format!("{BUCKET}/east");
    w.ok(&[
        "bind",
        "p",
        "--gpeer",
        "west",
        "--local",
        w.share.to_str().unwrap(),
        "--remote",
        &remote,
    ]);
    w.synced();
    for (p, d) in &files {
        let st = state(&w, p);
        assert_eq!(st["state"], "remote", "{st:#}");
        assert_eq!(
            w.west(&p.strip_prefix(&w.share).unwrap().to_string_lossy()),
            Some((d.len() as u64, None))
        );
    }
    let (code, r) = fsck(&w, &["--rebuild"]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(quota(&w), (3, total));
    let job = recall(&w, &paths);
    assert_eq!(job["state"], "done", "{job:#}");
    for (p, d) in &files {
        assert_eq!(std::fs::read(p).unwrap(), *d, "{}", p.display());
    }
    assert_eq!(quota(&w), (0, 0));
    converged(&w);
}
