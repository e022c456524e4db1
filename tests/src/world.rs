//! A gateway, a backend and one bound gpair `p` (share in a temporary directory, west at
//! `cold/east`) with helpers to drive them through the real `gpair` CLI: the world of the
//! migration and mount end-to-end tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::{poll_until, Backend, Gateway};

pub const BUCKET: &str = "cold";
pub const WAIT: Duration = Duration::from_secs(180);

pub struct World {
    pub gw: Gateway,
    pub b: Backend,
    pub share: PathBuf,
    _share_dir: tempfile::TempDir,
}

pub fn world(tier: &str) -> World {
    world_bind(tier, &[])
}

/// A world whose gpair is bound with extra `bind` flags.
pub fn world_bind(tier: &str, bind_flags: &[&str]) -> World {
    let share_dir = tempfile::tempdir().unwrap();
    let share = share_dir.path().to_path_buf();
    world_in(share_dir, &share, tier, bind_flags)
}

/// A world whose share is `share` (inside `share_dir`, which lives as long as the world):
/// e.g. a small filesystem the test mounted there.
pub fn world_in(
    share_dir: tempfile::TempDir,
    share: &std::path::Path,
    tier: &str,
    bind_flags: &[&str],
) -> World {
    let gw = Gateway::start();
    let b = Backend::start("LC_111", tier);
    let share = share.canonicalize().unwrap();
    let w = World {
        gw,
        b,
        share,
        _share_dir: share_dir,
    };
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
    let mut bind = vec![
        "bind",
        "p",
        "--gpeer",
        "west",
        "--local",
        w.share.to_str().unwrap(),
        "--remote",
        &remote,
        "--create-bucket",
    ];
    bind.extend_from_slice(bind_flags);
    w.ok(&bind);
    w
}

impl World {
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        self.b.gpair(&all)
    }

    pub fn diagnostics(&self) -> String {
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        };
        format!(
            "--- backend log ---\n{}\n--- gateway log ---\n{}",
            tail(self.b.log()),
            tail(self.gw.log())
        )
    }

    /// Runs a command that must succeed; returns its JSON.
    pub fn ok(&self, args: &[&str]) -> Value {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "gpair {} failed: {}{}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.diagnostics()
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "gpair {}: no JSON ({e}): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    pub fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.share.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }

    pub fn synced(&self) {
        let ok = poll_until(WAIT, || {
            let v = self.ok(&["sync", "status", "p"]);
            let st = &v[0];
            st["initial_sync_done"] == true && st["pending"] == 0
        });
        assert!(ok, "sync did not settle\n{}", self.diagnostics());
    }

    pub fn state(&self, p: &Path) -> Value {
        self.ok(&["state", p.to_str().unwrap()])[0].clone()
    }

    pub fn job(&self, id: u64) -> Value {
        self.ok(&["job", "show", &id.to_string()])
    }

    pub fn wait_job(&self, id: u64) -> Value {
        let mut last = Value::Null;
        let ok = poll_until(WAIT, || {
            last = self.job(id);
            matches!(
                last["state"].as_str(),
                Some("done" | "failed" | "cancelled")
            )
        });
        assert!(
            ok,
            "job {id} did not finish: {last:#}\n{}",
            self.diagnostics()
        );
        last
    }

    pub fn west_key(&self, rel: &str) -> String {
        format!("east/{rel}")
    }

    /// (data length, gpair-name) of a west object, as the gateway serves it.
    pub fn west(&self, rel: &str) -> Option<(u64, Option<String>)> {
        let r = self.gw.head_raw(BUCKET, &self.west_key(rel));
        if r.status == 404 {
            return None;
        }
        assert_eq!(r.status, 200, "HEAD {rel}: {}", r.body_str());
        Some((
            r.header("content-length").unwrap().parse().unwrap(),
            r.header("x-gpair-name").map(str::to_owned),
        ))
    }

    pub fn west_bytes(&self, rel: &str) -> Vec<u8> {
        let r = self.gw.get_raw(BUCKET, &self.west_key(rel), &[]);
        assert_eq!(r.status, 200);
        r.body
    }

    pub fn quota(&self) -> Value {
        self.ok(&["quota", "show", "p"])[0].clone()
    }

    /// Multipart uploads in progress on the bucket.
    pub fn uploads(&self) -> usize {
        self.uploads_listing().matches("<Upload>").count()
    }

    /// The gateway's ListMultipartUploads answer for the bucket.
    pub fn uploads_listing(&self) -> String {
        let r = self.gw.signed(
            &self.gw.backend,
            "GET",
            &format!("/{BUCKET}?uploads"),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.body_str());
        r.body_str()
    }
}

pub fn job_id(v: &Value) -> u64 {
    v["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no job id in {v:#}"))
}

/// A running `gpair-mount` of a world's share on a temporary mount point.
pub struct Mount {
    child: Option<std::process::Child>,
    /// The mount point.
    pub dir: PathBuf,
    log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl World {
    /// Mounts the share with `gpair-mount` (extra flags appended) on a new directory and
    /// waits until it serves.
    pub fn mount(&self, extra: &[&str]) -> Mount {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        self.mount_with(&dir, extra, tmp)
    }

    /// Mounts the share on `dir` (e.g. the dead mount point a killed mount left).
    pub fn mount_at(&self, dir: &std::path::Path) -> Mount {
        self.mount_with(dir, &[], tempfile::tempdir().unwrap())
    }

    fn mount_with(&self, dir: &std::path::Path, extra: &[&str], tmp: tempfile::TempDir) -> Mount {
        let dir = dir.to_path_buf();
        let log = tmp.path().join("mount.log");
        let (child, _) = crate::spawn_until_listening(
            std::process::Command::new(crate::bin_path("gpair-mount"))
                .arg(&self.share)
                .arg(&dir)
                .arg("--backend")
                .arg(&self.b.socket)
                .args(extra),
            &log,
            "gpair-mount: ",
            Duration::from_secs(30),
            "gpair-mount",
        );
        Mount {
            child: Some(child),
            dir,
            log,
            _tmp: tmp,
        }
    }
}

impl Mount {
    /// `rel` below the mount point.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// SIGKILL, as a crash: the mount point is left dead ("Transport endpoint is not
    /// connected") until the next mount detaches it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a clean unmount. Returns the exit status.
    pub fn unmount(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if std::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process has ended (its status stays for [`Mount::unmount`]).
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => {
                // SAFETY: waitid with WNOWAIT only peeks at our own child's state.
                let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                let r = unsafe {
                    libc::waitid(
                        libc::P_PID,
                        c.id(),
                        &mut info,
                        libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                    )
                };
                // SAFETY: si_pid is valid to read after a successful waitid.
                r == 0 && unsafe { info.si_pid() } != 0
            }
            None => true,
        }
    }

    /// Whether the mount point is (still) a mount.
    pub fn is_mounted(&self) -> bool {
        std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
            let me = self.dir.to_string_lossy();
            m.lines().any(|l| l.split(' ').nth(1) == Some(&*me))
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.unmount().is_none() && self.is_mounted() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
        if self.is_mounted() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.dir)
                .status();
        }
    }
}
