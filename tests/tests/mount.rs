//! `gpair-mount` end to end: the real gateway, backend, CLI and a real FUSE mount, driven by
//! programs nobody here wrote (vim, cp, tar, rsync, find + md5sum, git, python's mmap).
//! Skipped, with a message, where `/dev/fuse` is missing.
//!
//! What must hold (DESIGN 5.4, 7 I1): through the mount an offloaded file reads exactly as
//! before, `stat` shows the same size, mtime and mode, writes recall it first, and nothing a
//! reader or writer does (in parallel, killed, during an outage) leaves wrong bytes or state.
#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use gpair_tests::world::{job_id, world, world_bind, World, WAIT};
use gpair_tests::{have_fuse, md5_hex, poll_until, test_bytes};

fn skip() -> bool {
    if !have_fuse() {
        eprintln!("SKIP: /dev/fuse is missing; gpair-mount cannot be tested here");
        return true;
    }
    false
}

/// Runs a program that must succeed; returns its stdout.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Offloads `paths` (absolute east paths) and waits for the job; every file must go.
fn offload(w: &World, paths: &[&Path]) {
    let mut args = vec!["migrate", "-r"];
    args.extend(paths.iter().map(|p| s(p)));
    let id = job_id(&w.ok(&args));
    let done = w.wait_job(id);
    assert_eq!(done["state"], "done", "{done:#}\n{}", w.diagnostics());
}

fn is_remote(w: &World, p: &Path) -> bool {
    w.state(p)["state"] == "remote"
}

/// Data on east and settled: not a stub, no migration in flight (`dirty`: local, written
/// during an offload that stopped because of it).
fn is_local(w: &World, p: &Path) -> bool {
    matches!(w.state(p)["state"].as_str(), Some("local" | "dirty"))
}

/// vim in silent ex mode, no vimrc: prints the file.
fn vim_view(p: &Path) -> String {
    run(Command::new("vim")
        .args([
            "-es", "-u", "NONE", "-i", "NONE", "-c", "%print", "-c", "q!",
        ])
        .arg(p))
}

/// vim in silent ex mode appends a line and writes the file (`extra` are more `-c` commands
/// run first, e.g. `set backupcopy=yes`).
fn vim_append(p: &Path, line: &str, extra: &[&str]) {
    let mut cmd = Command::new("vim");
    cmd.args(["-es", "-u", "NONE", "-i", "NONE"]);
    for e in extra {
        cmd.args(["-c", e]);
    }
    cmd.args(["-c", &format!("normal Go{line}"), "-c", "wq"])
        .arg(p);
    run(&mut cmd);
}

/// The stat fields an offload must not change.
fn visible(p: &Path) -> (u64, i64, i64, u32, u32, u32) {
    let m = std::fs::metadata(p).unwrap();
    (
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.mode(),
        m.uid(),
        m.gid(),
    )
}

/// West holds a placeholder for `rel` (no data, gpair-name set): east owns the data.
fn west_is_placeholder(w: &World, rel: &str) -> bool {
    matches!(w.west(rel), Some((0, Some(_))))
}

#[test]
fn vim_views_and_edits_a_file_before_and_after_offload() {
    if skip() {
        return;
    }
    let w = world("");
    let m = w.mount(&[]);
    std::fs::create_dir(m.path("notes")).unwrap();
    let f = m.path("notes/todo.txt");
    std::fs::write(&f, "line one\nline two\n").unwrap();
    let east = w.share.join("notes/todo.txt");
    // Metadata sync sees the file created through the mount.
    assert!(
        poll_until(WAIT, || west_is_placeholder(&w, "notes/todo.txt")),
        "sync did not put the new file's placeholder\n{}",
        w.diagnostics()
    );
    w.synced();
    assert_eq!(vim_view(&f), "line one\nline two\n");
    let before = visible(&f);

    offload(&w, &[&east]);
    assert!(is_remote(&w, &east));
    assert_eq!(w.west_bytes("notes/todo.txt"), b"line one\nline two\n");
    // The seeds' failure: vim could not open the file once it was offloaded.
    assert_eq!(vim_view(&f), "line one\nline two\n");
    assert_eq!(visible(&f), before, "stat changed by the offload");
    assert!(is_remote(&w, &east), "viewing must not recall");

    // Edit it in place (vim's default: it may write a new file and rename it over): the edit
    // is kept and west goes back to a placeholder.
    vim_append(&f, "line three", &[]);
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "line one\nline two\nline three\n"
    );
    assert!(poll_until(WAIT, || is_local(&w, &east)));
    assert!(
        poll_until(WAIT, || west_is_placeholder(&w, "notes/todo.txt")),
        "west still holds data after the edit\n{}",
        w.diagnostics()
    );

    // Again, with vim writing into the same inode: that is the recall path.
    w.synced();
    offload(&w, &[&east]);
    vim_append(&f, "line four", &["set backupcopy=yes"]);
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "line one\nline two\nline three\nline four\n"
    );
    assert_eq!(std::fs::read(&east).unwrap(), std::fs::read(&f).unwrap());
    assert!(is_local(&w, &east), "written through the mount: recalled");
    assert!(
        poll_until(WAIT, || west_is_placeholder(&w, "notes/todo.txt")),
        "west still holds data after the recall\n{}",
        w.diagnostics()
    );
}

/// A small tree of files with known bytes, written on east directly.
fn tree(w: &World, dir: &str) -> BTreeMap<String, Vec<u8>> {
    let files: BTreeMap<String, Vec<u8>> = [
        ("a.txt", test_bytes(70_000, 1)),
        ("sub/b.bin", test_bytes(9 << 20, 2)),
        ("sub/deep/c.txt", b"a small text file\n".to_vec()),
        ("sub/deep/d.bin", test_bytes(4097, 3)),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{dir}/{k}"), v))
    .collect();
    for (rel, data) in &files {
        w.write(rel, data);
    }
    files
}

/// Every file of `files` (relative to some root) under `root` has its bytes.
fn same_files(root: &Path, files: &BTreeMap<String, Vec<u8>>, what: &str) {
    for (rel, data) in files {
        let got = std::fs::read(root.join(rel)).unwrap_or_else(|e| panic!("{what}: {rel}: {e}"));
        assert!(
            got == *data,
            "{what}: {rel} differs ({} bytes, want {})",
            got.len(),
            data.len()
        );
    }
}

#[test]
fn everyday_tools_read_offloaded_files_byte_for_byte() {
    if skip() {
        return;
    }
    let w = world("");
    let files = tree(&w, "t");
    w.synced();
    offload(&w, &[&w.share.join("t")]);
    for rel in files.keys() {
        assert!(is_remote(&w, &w.share.join(rel)), "{rel} not offloaded");
    }
    let m = w.mount(&[]);
    let out = tempfile::tempdir().unwrap();
    let o = out.path();

    run(Command::new("cp")
        .arg("-r")
        .arg(m.path("t"))
        .arg(o.join("cp")));
    same_files(&o.join("cp"), &strip(&files, "t/"), "cp -r");

    run(Command::new("tar")
        .arg("-C")
        .arg(&m.dir)
        .arg("-cf")
        .arg(o.join("t.tar"))
        .arg("t"));
    std::fs::create_dir(o.join("tx")).unwrap();
    run(Command::new("tar")
        .arg("-C")
        .arg(o.join("tx"))
        .arg("-xf")
        .arg(o.join("t.tar")));
    same_files(&o.join("tx"), &files, "tar c | tar x");

    run(Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", s(&m.path("t"))))
        .arg(o.join("rs")));
    same_files(&o.join("rs"), &strip(&files, "t/"), "rsync -a");

    let sums = run(Command::new("find")
        .arg(m.path("t"))
        .args(["-type", "f", "-exec", "md5sum", "{}", "+"]));
    let mut got: BTreeMap<String, String> = BTreeMap::new();
    for line in sums.lines() {
        let (sum, path) = line.split_once("  ").unwrap();
        let rel = Path::new(path).strip_prefix(&m.dir).unwrap();
        got.insert(rel.to_str().unwrap().to_owned(), sum.to_owned());
    }
    let want: BTreeMap<String, String> =
        files.iter().map(|(k, v)| (k.clone(), md5_hex(v))).collect();
    assert_eq!(got, want, "find -exec md5sum");

    let mmap_md5 = run(Command::new("python3").args([
        "-c",
        "import hashlib, mmap, sys\nwith open(sys.argv[1], 'rb') as f:\n    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)\n    print(hashlib.md5(m).hexdigest())",
        s(&m.path("t/sub/b.bin")),
    ]));
    assert_eq!(mmap_md5.trim(), md5_hex(&files["t/sub/b.bin"]), "mmap read");

    // Reading is not recalling (read policy `stream`).
    for rel in files.keys() {
        assert!(
            is_remote(&w, &w.share.join(rel)),
            "{rel} recalled by a read"
        );
    }
}

#[test]
fn offloaded_programs_and_scripts_run_through_the_mount() {
    if skip() {
        return;
    }
    let w = world("");
    let echo = w.write("bin/echo", &std::fs::read("/bin/echo").unwrap());
    let script = w.write("bin/hello.sh", b"#!/bin/sh\necho \"hello from $0\"\n");
    for p in [&echo, &script] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    w.synced();
    offload(&w, &[&echo, &script]);
    let m = w.mount(&[]);
    assert_eq!(
        run(Command::new(m.path("bin/echo")).arg("exec works")),
        "exec works\n"
    );
    let out = run(&mut Command::new(m.path("bin/hello.sh")));
    assert!(out.starts_with("hello from "), "{out}");
    assert!(
        is_remote(&w, &echo) && is_remote(&w, &script),
        "exec recalled"
    );
}

fn strip(files: &BTreeMap<String, Vec<u8>>, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(k, v)| (k.strip_prefix(prefix).unwrap().to_owned(), v.clone()))
        .collect()
}

#[test]
fn git_works_inside_the_mount() {
    if skip() {
        return;
    }
    let w = world("");
    let m = w.mount(&[]);
    let repo = m.path("repo");
    let git = |args: &[&str]| {
        run(Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args))
    };
    std::fs::create_dir(&repo).unwrap();
    git(&["init", "-q"]);
    std::fs::write(repo.join("README"), "first\n").unwrap();
    std::fs::create_dir(repo.join("src")).unwrap();
    std::fs::write(repo.join("src/main.c"), "int main(void) { return 0; }\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "first"]);
    std::fs::write(repo.join("README"), "second\n").unwrap();
    git(&["commit", "-q", "-am", "second"]);
    assert_eq!(git(&["log", "--format=%s"]), "second\nfirst\n");
    assert_eq!(git(&["status", "--porcelain"]), "");
    git(&["fsck", "--strict"]);
    assert_eq!(git(&["show", "HEAD~1:README"]), "first\n");
    // The repository is on east as written.
    assert_eq!(
        std::fs::read_to_string(w.share.join("repo/README")).unwrap(),
        "second\n"
    );
}

#[test]
fn parallel_readers_of_one_stub_share_its_fetches() {
    if skip() {
        return;
    }
    let w = world("");
    let data = test_bytes(20 << 20, 7);
    let east = w.write("big.bin", &data);
    w.synced();
    offload(&w, &[&east]);
    let mut m = w.mount(&[]);
    let path = m.path("big.bin");
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let p = path.clone();
            std::thread::spawn(move || std::fs::read(p).unwrap())
        })
        .collect();
    for r in readers {
        assert!(
            r.join().unwrap() == data,
            "a parallel reader got other bytes"
        );
    }
    assert!(is_remote(&w, &east));
    m.unmount().unwrap();
    let log = m.log();
    let bytes: u64 = log
        .lines()
        .find_map(|l| l.split(" ranged GETs, ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no read statistics in the mount's log:\n{log}"));
    // Every byte fetched from west once, whatever the number of readers.
    assert_eq!(
        bytes,
        data.len() as u64,
        "bytes fetched for one 20 MiB file read by 8 readers"
    );
}

#[test]
fn a_write_through_the_mount_during_an_offload_keeps_the_file_local_and_whole() {
    if skip() {
        return;
    }
    let w = world("");
    let data = test_bytes(48 << 20, 11);
    let east = w.write("grow.bin", &data);
    w.synced();
    let m = w.mount(&[]);
    let id = job_id(&w.ok(&["migrate", s(&east)]));
    // Append while the job uploads (or, if it already finished, to the stub: a recall).
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(m.path("grow.bin"))
            .unwrap();
        f.write_all(b"appended").unwrap();
    }
    let done = w.wait_job(id);
    let mut want = data.clone();
    want.extend_from_slice(b"appended");
    assert!(
        std::fs::read(m.path("grow.bin")).unwrap() == want,
        "{done:#}"
    );
    assert!(std::fs::read(&east).unwrap() == want);
    assert!(poll_until(WAIT, || is_local(&w, &east)), "{done:#}");
    assert!(
        poll_until(WAIT, || west_is_placeholder(&w, "grow.bin")),
        "west owns data of a file east changed\n{}",
        w.diagnostics()
    );
}

#[test]
fn unlink_rename_over_and_truncate_of_stubs_during_their_recall() {
    if skip() {
        return;
    }
    let w = world("");
    let a = w.write("r/a.bin", &test_bytes(24 << 20, 21));
    let b = w.write("r/b.bin", &test_bytes(24 << 20, 22));
    let c = w.write("r/c.bin", &test_bytes(24 << 20, 23));
    w.synced();
    offload(&w, &[&a, &b, &c]);
    let m = w.mount(&[]);
    std::fs::write(m.path("r/new.txt"), "the replacement\n").unwrap();
    let id = job_id(&w.ok(&["recall", "-r", s(&w.share.join("r"))]));
    std::fs::remove_file(m.path("r/a.bin")).unwrap();
    std::fs::rename(m.path("r/new.txt"), m.path("r/b.bin")).unwrap();
    run(Command::new("truncate")
        .args(["-s", "0"])
        .arg(m.path("r/c.bin")));
    let done = w.wait_job(id);
    assert!(!m.path("r/a.bin").exists(), "{done:#}");
    assert_eq!(
        std::fs::read_to_string(m.path("r/b.bin")).unwrap(),
        "the replacement\n"
    );
    assert_eq!(std::fs::read(m.path("r/c.bin")).unwrap(), b"", "{done:#}");
    assert_eq!(std::fs::read(&c).unwrap(), b"");
    for p in [&b, &c] {
        assert!(is_local(&w, p), "{} still a stub: {done:#}", p.display());
    }
    // Nothing left offloaded: quota usage back to zero once sync caught up.
    assert!(
        poll_until(WAIT, || {
            let q = w.quota();
            q["used_files"] == 0 && q["used_bytes"] == 0 && q["reserved_files"] == 0
        }),
        "quota not returned: {:#}\n{}",
        w.quota(),
        w.diagnostics()
    );
}

#[test]
fn reads_of_stubs_fail_with_eio_while_west_is_down_and_local_files_keep_working() {
    if skip() {
        return;
    }
    let mut w = world("");
    let data = test_bytes(3 << 20, 31);
    let stub = w.write("cold.bin", &data);
    w.write("hot.txt", b"local data\n");
    w.synced();
    offload(&w, &[&stub]);
    let m = w.mount(&["--west-wait", "3"]);
    w.gw.kill();
    // A reader waiting on west, killed: nothing is left behind.
    let mut waiting = Command::new("cat")
        .arg(m.path("cold.bin"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    waiting.kill().unwrap();
    waiting.wait().unwrap();
    // Reads wait a bounded time, then fail: never zeros.
    let t = std::time::Instant::now();
    let err = std::fs::read(m.path("cold.bin")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(t.elapsed() < Duration::from_secs(60));
    assert_eq!(std::fs::read(m.path("hot.txt")).unwrap(), b"local data\n");
    std::fs::write(m.path("hot2.txt"), b"written during the outage\n").unwrap();
    w.gw.start_again();
    assert!(std::fs::read(m.path("cold.bin")).unwrap() == data);
}

#[test]
fn a_writer_killed_while_its_recall_waits_leaves_the_file_whole() {
    if skip() {
        return;
    }
    let mut w = world("");
    let data = test_bytes(2 << 20, 41);
    let stub = w.write("w.bin", &data);
    w.synced();
    offload(&w, &[&stub]);
    let m = w.mount(&[]);
    w.gw.kill();
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!("printf x >> '{}'", s(&m.path("w.bin"))))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    writer.kill().unwrap();
    writer.wait().unwrap();
    w.gw.start_again();
    // The recall the writer started completes on its own; the write never happened.
    assert!(
        poll_until(WAIT, || is_local(&w, &stub)),
        "{}",
        w.diagnostics()
    );
    let got = std::fs::read(m.path("w.bin")).unwrap();
    assert!(
        got == data || got == [data.as_slice(), b"x"].concat(),
        "{} bytes",
        got.len()
    );
}

#[test]
fn the_mount_session_reports_changes_and_survives_a_crashed_mount() {
    if skip() {
        return;
    }
    // The backend's own watcher off: only the mount's change reports can tell sync.
    let w = world("watch = false\n");
    let mut m = w.mount(&[]);
    assert!(w.b.wait_log("mount session opened", WAIT));
    std::fs::create_dir_all(m.path("x/y")).unwrap();
    std::fs::write(m.path("x/y/f.txt"), b"f").unwrap();
    std::fs::rename(m.path("x/y/f.txt"), m.path("x/g.txt")).unwrap();
    std::fs::set_permissions(m.path("x/g.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        poll_until(WAIT, || west_is_placeholder(&w, "x/g.txt")
            && w.west("x/y/f.txt").is_none()),
        "{}",
        w.diagnostics()
    );
    m.kill();
    // The dead mount point is taken over by the next mount.
    let dir = m.dir.clone();
    let mut m2 = w.mount_at(&dir);
    assert_eq!(std::fs::read(m2.path("x/g.txt")).unwrap(), b"f");
    // `fusermount3 -u` unmounts it, and the process ends cleanly.
    run(Command::new("fusermount3").arg("-u").arg(&dir));
    assert!(
        poll_until(Duration::from_secs(20), || m2.has_exited()),
        "gpair-mount did not exit after fusermount3 -u"
    );
    assert_eq!(m2.unmount().and_then(|s| s.code()), Some(0));
    drop(m2);
    drop(m);
    assert!(!mounted(&dir));
}

fn mounted(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == dir.to_str())
}

#[test]
fn posix_conformance_script_matches_a_plain_directory() {
    if skip() {
        return;
    }
    let w = world("");
    let m = w.mount(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("posix/conformance.py");
    let plain = tempfile::tempdir().unwrap();
    std::fs::create_dir(m.path("conformance")).unwrap();
    let on_plain = run(Command::new("python3").arg(&script).arg(plain.path()));
    let on_mount = run(Command::new("python3")
        .arg(&script)
        .arg(m.path("conformance")));
    assert!(
        on_plain.lines().count() > 100,
        "the script ran too few checks:\n{on_plain}"
    );
    let diff: Vec<String> = on_plain
        .lines()
        .zip(on_mount.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("plain: {a}\nmount: {b}"))
        .collect();
    assert!(
        diff.is_empty() && on_plain.lines().count() == on_mount.lines().count(),
        "the mount differs from a plain directory:\n{}",
        diff.join("\n")
    );
}

#[test]
fn read_policies_recall_stubs_that_are_read() {
    if skip() {
        return;
    }
    // `recall`: the first read recalls the file in the background.
    let w = world_bind("", &["--read-policy", "recall"]);
    let data = test_bytes(1 << 20, 51);
    let f = w.write("hot.bin", &data);
    w.synced();
    offload(&w, &[&f]);
    let m = w.mount(&[]);
    assert!(std::fs::read(m.path("hot.bin")).unwrap() == data);
    assert!(poll_until(WAIT, || is_local(&w, &f)), "{}", w.diagnostics());
    assert!(std::fs::read(&f).unwrap() == data);
    drop(m);

    // `stream` with recall_after_reads = 3: two reads leave it offloaded, the third recalls.
    let w = world_bind("", &["--recall-after-reads", "3"]);
    let f = w.write("warm.bin", &data);
    w.synced();
    offload(&w, &[&f]);
    let m = w.mount(&[]);
    for _ in 0..2 {
        assert!(std::fs::read(m.path("warm.bin")).unwrap() == data);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(is_remote(&w, &f), "recalled before its third read");
    assert!(std::fs::read(m.path("warm.bin")).unwrap() == data);
    assert!(poll_until(WAIT, || is_local(&w, &f)), "{}", w.diagnostics());
    let shown = w.ok(&["show", "p"]);
    assert_eq!(shown["recall_after_reads"], 3, "{shown:#}");
    assert_eq!(shown["read_policy"], "stream", "{shown:#}");
}

#[test]
fn a_file_open_for_writing_through_the_mount_is_not_released_until_closed() {
    if skip() {
        return;
    }
    let w = world("");
    let data = test_bytes(300_000, 61);
    let f = w.write("open.bin", &data);
    w.synced();
    let m = w.mount(&[]);
    let held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("open.bin"))
        .unwrap();
    let id = job_id(&w.ok(&["migrate", s(&f)]));
    let done = w.wait_job(id);
    assert_eq!(
        done["files_done"], 0,
        "released while open for writing: {done:#}"
    );
    assert!(is_local(&w, &f));
    assert!(std::fs::read(&f).unwrap() == data, "east data touched");
    drop(held);
    offload(&w, &[&f]);
    assert!(is_remote(&w, &f));
    assert!(std::fs::read(m.path("open.bin")).unwrap() == data);
}

#[test]
fn local_files_keep_working_while_many_readers_wait_on_west() {
    if skip() {
        return;
    }
    let mut w = world("");
    // More waiting readers than the mount has worker threads (16), each on a file of its own
    // (readers of one file would wait on one page in the kernel, not on the mount).
    let data: Vec<Vec<u8>> = (0..24).map(|i| test_bytes(65_536, 71 + i)).collect();
    for (i, d) in data.iter().enumerate() {
        w.write(&format!("cold/{i}.bin"), d);
    }
    w.write("hot.txt", b"local data\n");
    w.synced();
    offload(&w, &[&w.share.join("cold")]);
    let m = w.mount(&["--west-wait", "120"]);
    w.gw.kill();
    let mut readers: Vec<std::process::Child> = (0..24)
        .map(|i| {
            Command::new("cat")
                .arg(m.path(&format!("cold/{i}.bin")))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Local work goes on while every reader still waits for west.
    assert_eq!(std::fs::read(m.path("hot.txt")).unwrap(), b"local data\n");
    std::fs::write(m.path("new.txt"), b"written meanwhile\n").unwrap();
    std::fs::rename(m.path("new.txt"), m.path("renamed.txt")).unwrap();
    assert!(std::fs::read_dir(&m.dir).unwrap().count() >= 3);
    let still_waiting = readers
        .iter_mut()
        .map(|r| r.try_wait().unwrap())
        .filter(Option::is_none)
        .count();
    assert_eq!(
        still_waiting, 24,
        "the readers were answered before west came back"
    );
    for r in &mut readers {
        r.kill().unwrap();
        r.wait().unwrap();
    }
    w.gw.start_again();
    for (i, d) in data.iter().enumerate() {
        assert!(std::fs::read(m.path(&format!("cold/{i}.bin"))).unwrap() == *d);
    }
}
