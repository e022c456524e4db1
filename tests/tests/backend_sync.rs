//! Metadata sync end to end: the real `s3fs-gateway`, the real `gpair-backend` and the real
//! `gpair` CLI, checked with clients nobody here wrote (aws-sdk-s3, s3fs-fuse) and with `stat`
//! of the west tree.
//!
//! Every test starts its own gateway and daemon. Waiting for work is always a poll of
//! `gpair --output json sync status NAME` (and of the west listing) against a deadline, never a
//! fixed sleep: a share has converged when its initial sync is done, nothing is pending, and
//! the west listing is exactly the east tree (per docs/west-keys.md).
#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CString, OsStr};
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gpair_tests::{
    bin_path, have_fuse, mount_s3fs, sdk_err, sha256_hex, Backend, Gateway, GatewayOptions,
};
use serde_json::Value;

/// How long one CLI command may take before the test fails (generous: this is not a timing
/// assertion, it only keeps a hung command from hanging the suite).
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for small shares to converge.
const CONVERGE: Duration = Duration::from_secs(120);
/// Deadline for shares of thousands of entries (2 shared cores, fsync on every west write).
const CONVERGE_BIG: Duration = Duration::from_secs(600);
/// Between two polls of `sync status`.
const POLL: Duration = Duration::from_millis(200);

const EAST_CLUSTER: &str = "LC_111";
const WEST_CLUSTER: &str = "LC_222";

// ---------------------------------------------------------------------------------------------
// Running the CLI

/// What one `gpair` command left behind.
#[derive(Debug)]
struct CliOut {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `gpair --backend SOCKET ARGS` with [`CLI_TIMEOUT`]; a command that does not finish in
/// time is killed and fails the test.
fn run_cli(socket: &Path, args: &[&str]) -> CliOut {
    let mut child = Command::new(bin_path("gpair"))
        .arg("--backend")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + CLI_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`gpair {}` did not finish within {CLI_TIMEOUT:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    CliOut {
        code: status.code(),
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
    }
}

/// The last `n` lines of a log.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// East trees

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// `rel` (raw bytes) below `root`.
fn join(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn mkdirs(path: &Path) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
}

/// Sets the modification time (not following symlinks); the access time is left alone.
fn set_mtime(path: &Path, secs: i64, nsec: i64) {
    let c = cstr(path);
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: nsec as _,
        },
    ];
    // SAFETY: a valid NUL-terminated path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        r,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
}

fn mkfifo(path: &Path) {
    let c = cstr(path);
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(
        r,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// `mknod c MAJOR MINOR`; the error when it is not permitted here.
fn mknod_char(path: &Path, major: u32, minor: u32) -> Result<(), std::io::Error> {
    let c = cstr(path);
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe {
        libc::mknod(
            c.as_ptr(),
            libc::S_IFCHR | 0o644,
            libc::makedev(major, minor),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Every entry below `root` (not `root` itself), by raw relative path, with its `lstat`.
fn east_tree(root: &Path) -> BTreeMap<Vec<u8>, std::fs::Metadata> {
    fn walk(root: &Path, rel: &[u8], out: &mut BTreeMap<Vec<u8>, std::fs::Metadata>) {
        let dir = join(root, rel);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in rd.flatten() {
            let mut p = rel.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(e.file_name().as_bytes());
            let Ok(md) = std::fs::symlink_metadata(e.path()) else {
                continue; // vanished meanwhile
            };
            let is_dir = md.is_dir();
            out.insert(p.clone(), md);
            if is_dir {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, b"", &mut out);
    out
}

fn kind_of(md: &std::fs::Metadata) -> &'static str {
    let ft = md.file_type();
    if ft.is_dir() {
        "dir"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "chardev"
    } else if ft.is_block_device() {
        "blockdev"
    } else {
        "file"
    }
}

fn show(rel: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(rel))
}

/// `secs.nanos` with nine decimals, signed (docs/west-keys.md, `mtime` / `gpair-mtime`).
fn fmt_ns(ns: i128) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    format!("{sign}{}.{:09}", abs / 1_000_000_000, abs % 1_000_000_000)
}

fn mtime_ns(md: &std::fs::Metadata) -> i128 {
    i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec())
}

// ---------------------------------------------------------------------------------------------
// West keys, written from docs/west-keys.md (not from the backend's code)

fn b64url(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

fn unb64url(v: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .ok()
}

fn escape_component(c: &[u8], out: &mut String) {
    match c {
        b"" => return out.push_str("%2F"),
        b"." => return out.push_str("%2E"),
        b".." => return out.push_str("%2E%2E"),
        b".gpair-long" => return out.push_str("%2Egpair-long"),
        _ => {}
    }
    for chunk in c.utf8_chunks() {
        for ch in chunk.valid().chars() {
            if ch == '%' || ch == '\\' || ch.is_control() || ch == '\u{FFFE}' || ch == '\u{FFFF}' {
                let mut buf = [0u8; 4];
                for b in ch.encode_utf8(&mut buf).bytes() {
                    write!(out, "%{b:02X}").unwrap();
                }
            } else {
                out.push(ch);
            }
        }
        for b in chunk.invalid() {
            write!(out, "%{b:02X}").unwrap();
        }
    }
}

fn escape_path(full: &[u8]) -> String {
    let mut out = String::new();
    if full.is_empty() {
        return out;
    }
    for (i, c) in full.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        escape_component(c, &mut out);
    }
    out
}

/// `%XX` → byte (the inverse of the escaping, for the keys we expect).
fn unescape(key: &str) -> Vec<u8> {
    let b = key.as_bytes();
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// `prefix/rel` (just `rel` for an empty prefix).
fn full_path(prefix: &str, rel: &[u8]) -> Vec<u8> {
    let mut v = prefix.as_bytes().to_vec();
    if !v.is_empty() && !rel.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(rel);
    v
}

/// The object key of an east entry: its escaped full path, or `.gpair-long/<sha256>` when the
/// escaped key exceeds 1023 bytes or a component 255; `/` appended for directories. The second
/// value is the full path recorded in `x-amz-meta-gpair-path` for long keys.
fn object_key(prefix: &str, rel: &[u8], is_dir: bool) -> (String, Option<Vec<u8>>) {
    let full = full_path(prefix, rel);
    let escaped = escape_path(&full);
    let fits = escaped.len() <= 1023 && escaped.split('/').all(|c| c.len() <= 255);
    let (key, long) = if fits {
        (escaped, None)
    } else {
        (format!(".gpair-long/{}", sha256_hex(&full)), Some(full))
    };
    (if is_dir { format!("{key}/") } else { key }, long)
}

// ---------------------------------------------------------------------------------------------
// The test environment

/// A share as bound: gpair name, local directory, bucket and prefix.
#[derive(Clone)]
struct Share {
    name: String,
    local: PathBuf,
    bucket: String,
    prefix: String,
}

impl Share {
    fn new(name: &str, local: &Path, bucket: &str, prefix: &str) -> Share {
        Share {
            name: name.into(),
            local: local.to_path_buf(),
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    fn remote(&self) -> String {
        if self.prefix.is_empty() {
            self.bucket.clone()
        } else {
            format!("{}/{}", self.bucket, self.prefix)
        }
    }

    /// The listing prefix of the share's plain keys.
    fn key_prefix(&self) -> String {
        if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", escape_path(self.prefix.as_bytes()))
        }
    }
}

/// What a converged share looks like on west.
struct Expect {
    /// Compare every entry's metadata (one HEAD per object), not just the keys.
    full: bool,
    /// The bucket holds nothing but this share: any other key is a problem.
    exclusive: bool,
    /// East paths (with everything below them) whose west update is expected to keep failing.
    failing: Vec<Vec<u8>>,
    /// Keys someone else put where the share's entries live; not entries, not problems.
    foreign: Vec<String>,
}

impl Expect {
    fn keys() -> Expect {
        Expect {
            full: false,
            exclusive: true,
            failing: vec![],
            foreign: vec![],
        }
    }

    fn full() -> Expect {
        Expect {
            full: true,
            ..Expect::keys()
        }
    }

    fn is_failing(&self, rel: &[u8]) -> bool {
        self.failing
            .iter()
            .any(|f| rel == f.as_slice() || (rel.starts_with(f) && rel.get(f.len()) == Some(&b'/')))
    }
}

/// What a HEAD says about one object.
#[derive(Debug)]
struct Head {
    len: i64,
    meta: HashMap<String, String>,
    /// `x-gpair-name`, percent-decoded.
    gpair_name: Option<String>,
}

/// Keeps the `x-gpair-name` response header, which aws-sdk-s3 does not model.
#[derive(Debug)]
struct CaptureGpairName(Arc<Mutex<Option<String>>>);

impl aws_sdk_s3::config::Intercept for CaptureGpairName {
    fn name(&self) -> &'static str {
        "capture-x-gpair-name"
    }

    fn read_before_deserialization(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::BeforeDeserializationInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        *self.0.lock().unwrap() = context
            .response()
            .headers()
            .get("x-gpair-name")
            .map(str::to_string);
        Ok(())
    }
}

struct Ctx {
    gw: Gateway,
    b: Backend,
    rt: tokio::runtime::Runtime,
    /// aws-sdk-s3 with the gateway's read-only key: how the tests look at west.
    s3: aws_sdk_s3::Client,
    /// aws-sdk-s3 with the backend key, for the few writes a test makes on west itself.
    s3_admin: aws_sdk_s3::Client,
    east: tempfile::TempDir,
}

impl Ctx {
    fn start(opts: GatewayOptions) -> Ctx {
        Self::start_with(opts, "")
    }

    /// `extra_sync` is appended to the daemon's `[sync]` table.
    fn start_with(opts: GatewayOptions, extra_sync: &str) -> Ctx {
        let gw = Gateway::start_with(opts);
        let b = Backend::start(EAST_CLUSTER, extra_sync);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let s3 = gw.client(&gw.reader);
        let s3_admin = gw.client(&gw.backend);
        Ctx {
            gw,
            b,
            rt,
            s3,
            s3_admin,
            east: tempfile::tempdir().unwrap(),
        }
    }

    /// A new directory in the east temp dir.
    fn dir(&self, name: &str) -> PathBuf {
        let p = self.east.path().join(name);
        mkdirs(&p);
        p
    }

    fn cli(&self, args: &[&str]) -> CliOut {
        run_cli(&self.b.socket, args)
    }

    /// `gpair --output json ARGS`, which must succeed.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        assert_eq!(
            out.code,
            Some(0),
            "gpair {} failed: {}{}\n{}",
            all.join(" "),
            out.stdout,
            out.stderr,
            self.diagnostics()
        );
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "gpair {} printed no JSON ({e}): {}",
                all.join(" "),
                out.stdout
            )
        })
    }

    fn diagnostics(&self) -> String {
        format!(
            "--- backend log (tail) ---\n{}\n--- gateway log (tail) ---\n{}",
            tail(&self.b.log(), 60),
            tail(&self.gw.log(), 30)
        )
    }

    fn add_gpeer(&self, name: &str) -> Value {
        self.json(&[
            "gpeer",
            "add",
            name,
            "--endpoint",
            &self.gw.endpoint(),
            "--cluster-id",
            WEST_CLUSTER,
            "--access-key",
            &self.gw.backend.access_key,
            "--secret-key",
            &self.gw.backend.secret_key,
        ])
    }

    fn bind(&self, share: &Share, gpeer: &str, create_bucket: bool) -> Value {
        let remote = share.remote();
        let mut args = vec![
            "bind",
            &share.name,
            "--gpeer",
            gpeer,
            "--local",
            share.local.to_str().unwrap(),
            "--remote",
            &remote,
        ];
        if create_bucket {
            args.push("--create-bucket");
        }
        self.json(&args)
    }

    fn sync_status(&self, name: &str) -> Value {
        let v = self.json(&["sync", "status", name]);
        let arr = v
            .as_array()
            .unwrap_or_else(|| panic!("sync status is not an array: {v}"));
        assert_eq!(arr.len(), 1, "sync status {name}: {v}");
        arr[0].clone()
    }

    fn gpair_value(&self, name: &str) -> String {
        let v = self.json(&["show", name]);
        v["gpair_value"].as_str().unwrap().to_string()
    }

    /// Every key of `bucket` with its size (aws-sdk-s3 ListObjectsV2, all pages).
    fn list(&self, bucket: &str) -> Result<Vec<(String, i64)>, String> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let r = self
                .rt
                .block_on(
                    self.s3
                        .list_objects_v2()
                        .bucket(bucket)
                        .set_continuation_token(token.clone())
                        .send(),
                )
                .map_err(|e| {
                    format!(
                        "ListObjectsV2 {bucket}: {}",
                        aws_sdk_s3::error::DisplayErrorContext(&e)
                    )
                })?;
            for o in r.contents() {
                out.push((
                    o.key().unwrap_or_default().to_string(),
                    o.size().unwrap_or(-1),
                ));
            }
            match r.next_continuation_token() {
                Some(t) if r.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// HeadObject (aws-sdk-s3, reader key); `None` when the object does not exist.
    fn head(&self, bucket: &str, key: &str) -> Result<Option<Head>, String> {
        let captured: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let r = self.rt.block_on(
            self.s3
                .head_object()
                .bucket(bucket)
                .key(key)
                .customize()
                .interceptor(CaptureGpairName(Arc::clone(&captured)))
                .send(),
        );
        match r {
            Ok(o) => Ok(Some(Head {
                len: o.content_length().unwrap_or(-1),
                meta: o.metadata().cloned().unwrap_or_default(),
                gpair_name: captured.lock().unwrap().as_deref().map(|v| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                }),
            })),
            Err(e) if sdk_err(&e).0 == 404 => Ok(None),
            Err(e) => Err(format!(
                "HeadObject {bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(&e)
            )),
        }
    }

    /// Compares west with the east tree of `share`. `Ok(n)`: the n expected entries are on
    /// west, each exactly once, nothing else is (and, with `full`, every entry's metadata is
    /// east's). `Err`: every difference found.
    fn check_mirror(&self, share: &Share, exp: &Expect) -> Result<usize, String> {
        let east = east_tree(&share.local);
        // object key -> (east path, long recorded path)
        let mut expected: BTreeMap<String, (Vec<u8>, Option<Vec<u8>>)> = BTreeMap::new();
        for (rel, md) in &east {
            if exp.is_failing(rel) {
                continue;
            }
            let (key, long) = object_key(&share.prefix, rel, md.is_dir());
            if let Some((other, _)) = expected.insert(key.clone(), (rel.clone(), long)) {
                return Err(format!(
                    "test bug: {} and {} map to the same key {key:?}",
                    show(&other),
                    show(rel)
                ));
            }
        }
        let key_prefix = share.key_prefix();
        let mut problems: Vec<String> = Vec::new();
        let mut seen = BTreeSet::new();
        for (key, size) in self.list(&share.bucket)? {
            if key.starts_with(".gpair-long/") {
                let Some(h) = self.head(&share.bucket, &key)? else {
                    problems.push(format!("{key:?} listed but gone at HEAD"));
                    continue;
                };
                let Some(full) = h.meta.get("gpair-path").and_then(|p| unb64url(p)) else {
                    problems.push(format!("{key:?} has no valid x-amz-meta-gpair-path"));
                    continue;
                };
                let mine = share.prefix.is_empty()
                    || full.starts_with(format!("{}/", share.prefix).as_bytes());
                if !mine {
                    if exp.exclusive {
                        problems.push(format!(
                            "{key:?} records path {} outside the share",
                            show(&full)
                        ));
                    }
                    continue;
                }
                let want = format!(".gpair-long/{}", sha256_hex(&full));
                if key.trim_end_matches('/') != want {
                    problems.push(format!(
                        "{key:?}: recorded path {} hashes to {want:?}",
                        show(&full)
                    ));
                }
                match expected.get(&key) {
                    Some((_, Some(long))) if *long == full => {
                        seen.insert(key.clone());
                    }
                    Some((rel, _)) => problems.push(format!(
                        "{key:?} records {} but stands for east {}",
                        show(&full),
                        show(rel)
                    )),
                    None => problems.push(format!(
                        "west has {key:?} (recorded path {}), which is no east entry",
                        show(&full)
                    )),
                }
                if size != 0 {
                    problems.push(format!("{key:?} holds {size} bytes (a placeholder has 0)"));
                }
                continue;
            }
            if !key.starts_with(&key_prefix) {
                if exp.exclusive {
                    problems.push(format!("{key:?} is outside the share's prefix"));
                }
                continue;
            }
            if key == key_prefix || exp.foreign.contains(&key) {
                continue; // the share root's own marker (optional), or a test's own object
            }
            if size != 0 {
                problems.push(format!("{key:?} holds {size} bytes (a placeholder has 0)"));
            }
            match expected.get(&key) {
                Some((rel, _)) => {
                    // Map the key back to the east path (docs/west-keys.md).
                    let back = unescape(key.trim_end_matches('/'));
                    let want = full_path(&share.prefix, rel);
                    if back != want {
                        problems.push(format!(
                            "{key:?} decodes to {}, not east {}",
                            show(&back),
                            show(&want)
                        ));
                    }
                    seen.insert(key.clone());
                }
                None => problems.push(format!(
                    "west has {key:?} (path {}), which is no east entry",
                    show(&unescape(key.trim_end_matches('/')))
                )),
            }
        }
        for (key, (rel, _)) in &expected {
            if !seen.contains(key) {
                problems.push(format!("east {} has no west entry {key:?}", show(rel)));
            }
        }
        if problems.is_empty() && exp.full {
            let gpair_value = self.gpair_value(&share.name);
            for (key, (rel, long)) in &expected {
                let md = &east[rel];
                match self.head(&share.bucket, key)? {
                    None => problems.push(format!("{key:?} vanished")),
                    Some(h) => compare_meta(
                        &join(&share.local, rel),
                        rel,
                        md,
                        &h,
                        long.as_deref(),
                        &gpair_value,
                        &mut problems,
                    ),
                }
            }
        }
        if problems.is_empty() {
            Ok(expected.len())
        } else {
            let n = problems.len();
            problems.truncate(40);
            Err(format!(
                "{n} difference(s) between east {} and west {}/{}:\n  {}",
                share.local.display(),
                share.bucket,
                share.prefix,
                problems.join("\n  ")
            ))
        }
    }

    /// Polls `sync status` until the share's initial sync is done, nothing is pending (but
    /// the expected failures), the catalog counts every synced entry, and west mirrors east
    /// as `exp` says. Returns the last status.
    fn wait_converged(&self, share: &Share, exp: &Expect, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            let st = self.sync_status(&share.name);
            let pending = st["pending"].as_u64().unwrap();
            let failing = st["failing"].as_u64().unwrap();
            let done = st["initial_sync_done"].as_bool().unwrap();
            let settled = if exp.failing.is_empty() {
                pending == 0 && failing == 0
            } else {
                failing > 0 && pending == failing
            };
            if !done {
                last = "initial sync not done".into();
            } else if !settled {
                last = format!("pending {pending}, failing {failing}");
            } else {
                match self.check_mirror(share, exp) {
                    Ok(n) => {
                        let entries = st["entries"].as_u64().unwrap();
                        if entries == n as u64 {
                            return st;
                        }
                        last = format!(
                            "west mirrors east ({n} entries) but the catalog counts {entries}"
                        );
                    }
                    Err(e) => last = e,
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "gpair {} did not converge within {timeout:?}: {last}\nlast sync status: {st:#}\n{}",
                    share.name,
                    self.diagnostics()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Compares one west entry with east's `lstat` (docs/backend.md and docs/west-keys.md).
fn compare_meta(
    path: &Path,
    rel: &[u8],
    md: &std::fs::Metadata,
    h: &Head,
    long: Option<&[u8]>,
    gpair_value: &str,
    problems: &mut Vec<String>,
) {
    let what = show(rel);
    let mut expect = |name: &str, want: Option<String>| {
        let got = h.meta.get(name).cloned();
        if got != want {
            problems.push(format!(
                "{what}: x-amz-meta-{name} is {got:?}, east says {want:?}"
            ));
        }
    };
    let kind = kind_of(md);
    expect("mode", Some(md.mode().to_string()));
    expect("uid", Some(md.uid().to_string()));
    expect("gid", Some(md.gid().to_string()));
    let ns = mtime_ns(md);
    if ns >= 0 {
        expect("mtime", Some(fmt_ns(ns)));
        expect("gpair-mtime", None);
    } else {
        expect("mtime", None);
        expect("gpair-mtime", Some(fmt_ns(ns)));
    }
    expect("gpair-kind", Some(kind.to_string()));
    let size = match kind {
        "file" | "symlink" => md.len(),
        _ => 0,
    };
    expect("gpair-size", Some(size.to_string()));
    expect("gpair-ino", Some(md.ino().to_string()));
    let target = (kind == "symlink")
        .then(|| b64url(std::fs::read_link(path).unwrap().as_os_str().as_bytes()));
    expect("gpair-symlink", target);
    let rdev = matches!(kind, "chardev" | "blockdev").then(|| md.rdev().to_string());
    expect("gpair-rdev", rdev);
    expect("gpair-path", long.map(b64url));
    if h.len != 0 {
        problems.push(format!(
            "{what}: Content-Length {} (metadata sync writes zero-length objects)",
            h.len
        ));
    }
    if kind == "file" && h.gpair_name.as_deref() != Some(gpair_value) {
        problems.push(format!(
            "{what}: x-gpair-name is {:?}, want the gpair value {gpair_value:?} (a placeholder)",
            h.gpair_name
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Every entry type

/// 200-byte directory name number `i`.
fn long_name(i: usize) -> String {
    format!("{i}{}", "n".repeat(199))
}

/// Batched west updates (`?gpair-batch`, the default on the gateway dialect).
#[test]
fn every_entry_type_is_mirrored_with_its_metadata() {
    every_entry_type("");
}

/// The same with one request per entry (`sync.batch = false`): both paths must write the
/// same west entries.
#[test]
fn every_entry_type_is_mirrored_with_its_metadata_unbatched() {
    every_entry_type("batch = false\n");
}

fn every_entry_type(extra_sync: &str) {
    let ctx = Ctx::start_with(GatewayOptions::default(), extra_sync);
    let root = ctx.dir("share");
    let p = |rel: &str| root.join(rel);

    // Regular files, empty included.
    write(&p("file.txt"), b"hello world\n");
    write(&p("empty"), b"");
    write(&p("exec.sh"), b"#!/bin/sh\necho hi\n");
    // Empty directories.
    mkdirs(&p("empty_dir"));
    mkdirs(&p("nested_empty/inner_empty"));
    // A tree 10 levels deep.
    let deep: String = (1..=10).map(|i| format!("l{i:02}/")).collect();
    let deep_leaf = format!("deep/{deep}leaf.txt");
    write(&p(&deep_leaf), b"at the bottom\n");
    // Symlinks: to a file, to a directory, dangling, absolute.
    mkdirs(&p("links"));
    std::os::unix::fs::symlink("../file.txt", p("links/to_file")).unwrap();
    std::os::unix::fs::symlink("../deep", p("links/to_dir")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", p("links/dangling")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", p("links/absolute")).unwrap();
    // Hard links.
    write(&p("hard_a"), b"one inode, two names\n");
    std::fs::hard_link(p("hard_a"), p("hard_b")).unwrap();
    // Special files.
    mkdirs(&p("special"));
    mkfifo(&p("special/fifo"));
    let _listener = std::os::unix::net::UnixListener::bind(p("special/sock")).unwrap();
    match mknod_char(&p("special/null_dev"), 1, 3) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            eprintln!("SKIP (one entry): cannot mknod a char device here ({e}); the rest runs")
        }
        Err(e) => panic!("mknod: {e}"),
    }
    // Names: not UTF-8, control characters, %, +, spaces, backslash, reserved, Unicode.
    let names = root.join("names");
    mkdirs(&names);
    let odd: Vec<&[u8]> = vec![
        b"bad\xff",
        b"\xe9t\xe9 latin1",
        b"new\nline",
        b"tab\there",
        b"100% sure",
        b"%41 not an escape",
        b"a+b=c&d#e?f",
        b"with  spaces ",
        b"back\\slash",
        "ünïcödé 🚀".as_bytes(),
        "c1\u{85}control".as_bytes(),
        b"..dots..",
        b"'quoted\"",
    ];
    for n in &odd {
        write(&join(&names, n), n);
    }
    let odd_dir = join(&names, b"dir\xfe\xfd");
    mkdirs(&odd_dir);
    write(
        &odd_dir.join("inner.txt"),
        b"inside a non-UTF-8 directory\n",
    );
    mkdirs(&names.join(".gpair-long"));
    write(&names.join(".gpair-long/f"), b"not really long\n");
    // A path whose key exceeds 1024 bytes: 6 nested 200-byte names; at depth 5 one short name
    // that still fits and one that does not.
    let mut long = root.join("long");
    for i in 1..=6 {
        long = long.join(long_name(i));
        if i == 5 {
            write(&long.join("f"), b"fits\n");
            write(&long.join("twenty-bytes-name.tx"), b"does not fit\n");
        }
    }
    write(&long.join("file.txt"), b"far down\n");
    // Before 1970 (docs: gpair-mtime instead of mtime).
    write(&p("pre1970.txt"), b"old\n");

    // Modes, owners and times (nanoseconds) that differ from the defaults.
    chmod(&p("file.txt"), 0o640);
    chown(&p("file.txt"), 1234, 5678);
    set_mtime(&p("file.txt"), 1_600_000_000, 123_456_789);
    chmod(&p("empty"), 0o600);
    set_mtime(&p("empty"), 1_500_000_000, 500_000_000);
    chmod(&p("exec.sh"), 0o755);
    chmod(&p("empty_dir"), 0o750);
    chown(&p("empty_dir"), 4321, 8765);
    set_mtime(&p("empty_dir"), 1_400_000_000, 1);
    set_mtime(&p(&deep_leaf), 1_300_000_000, 999_999_999);
    chown(&p("links/absolute"), 1111, 2222);
    set_mtime(&p("links/absolute"), 1_234_567_890, 42);
    chmod(&p("special/fifo"), 0o600);
    chown(&p("special/fifo"), 7, 8);
    set_mtime(&p("pre1970.txt"), -2, 500_000_000);

    ctx.add_gpeer("west");
    let share = Share::new("p1", &root, "mirror", "east");
    let bound = ctx.bind(&share, "west", true);
    assert_eq!(bound["name"], "p1", "bind output: {bound:#}");
    let st = ctx.wait_converged(&share, &Expect::full(), CONVERGE);
    let east = east_tree(&root);
    assert_eq!(st["entries"].as_u64(), Some(east.len() as u64), "{st:#}");
    assert_eq!(st["failing"].as_u64(), Some(0), "{st:#}");

    // Spot checks beyond the generic comparison.
    let gv = ctx.gpair_value("p1");
    assert!(
        gv.starts_with(&format!("{EAST_CLUSTER},"))
            && gv.ends_with(&format!(",{WEST_CLUSTER},/mirror/east")),
        "gpair value {gv:?}"
    );
    let head = |rel: &[u8], is_dir: bool| {
        let (key, _) = object_key("east", rel, is_dir);
        ctx.head("mirror", &key)
            .unwrap()
            .unwrap_or_else(|| panic!("no west object {key:?}"))
    };
    let h = head(b"file.txt", false);
    assert_eq!(h.meta.get("gpair-size").map(String::as_str), Some("12"));
    assert_eq!(h.gpair_name.as_deref(), Some(gv.as_str()));
    assert_eq!(
        h.meta.get("mtime").map(String::as_str),
        Some("1600000000.123456789")
    );
    let h = head(b"links/absolute", false);
    assert_eq!(
        h.meta.get("gpair-symlink").and_then(|v| unb64url(v)),
        Some(b"/etc/hostname".to_vec()),
        "{h:?}"
    );
    assert_eq!(
        h.meta.get("gpair-kind").map(String::as_str),
        Some("symlink")
    );
    let (a, b) = (head(b"hard_a", false), head(b"hard_b", false));
    assert_eq!(
        a.meta.get("gpair-ino"),
        b.meta.get("gpair-ino"),
        "hard links record one inode"
    );
    assert_eq!(
        a.meta.get("gpair-ino").cloned(),
        Some(std::fs::metadata(p("hard_a")).unwrap().ino().to_string())
    );
    let h = head(b"special/sock", false);
    assert_eq!(h.meta.get("gpair-kind").map(String::as_str), Some("socket"));
    assert_eq!(h.meta.get("gpair-mtime").map(String::as_str), None, "{h:?}");
    let h = head(b"pre1970.txt", false);
    assert_eq!(
        h.meta.get("gpair-mtime").map(String::as_str),
        Some("-1.500000000"),
        "{h:?}"
    );
    // The long entries are under .gpair-long/ with their path recorded.
    let long_rel = long.strip_prefix(&root).unwrap().join("file.txt");
    let (key, recorded) = object_key("east", long_rel.as_os_str().as_bytes(), false);
    assert!(key.starts_with(".gpair-long/"), "{key}");
    assert!(recorded.as_ref().unwrap().len() > 1024);
    let h = ctx
        .head("mirror", &key)
        .unwrap()
        .expect("long entry on west");
    assert_eq!(h.meta.get("gpair-path").and_then(|v| unb64url(v)), recorded);

    // The gateway applies mode, owner and mtime to the west files themselves (directories
    // with children: see west_tree_directories_keep_east_mtime).
    let problems = west_stat_problems(
        &ctx,
        &root,
        "mirror/east",
        &[
            "file.txt",
            "empty",
            "exec.sh",
            "empty_dir",
            "nested_empty/inner_empty",
            &deep_leaf,
        ],
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `stat` of west files under the gateway root (`<root>/<bucket_and_prefix>/<rel>`) against
/// east: permission bits, owner, mtime with nanoseconds, and a file's size.
fn west_stat_problems(ctx: &Ctx, east_root: &Path, west_dir: &str, rels: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for rel in rels {
        let e = std::fs::symlink_metadata(east_root.join(rel)).unwrap();
        let path = ctx.gw.root.join(west_dir).join(rel);
        let w = match std::fs::symlink_metadata(&path) {
            Ok(w) => w,
            Err(err) => {
                problems.push(format!("west file {}: {err}", path.display()));
                continue;
            }
        };
        let got = (
            w.is_dir(),
            w.mode() & 0o7777,
            w.uid(),
            w.gid(),
            w.mtime(),
            w.mtime_nsec(),
        );
        let want = (
            e.is_dir(),
            e.mode() & 0o7777,
            e.uid(),
            e.gid(),
            e.mtime(),
            e.mtime_nsec(),
        );
        if got != want {
            problems.push(format!(
                "stat of west {rel}: (dir, mode, uid, gid, mtime, nsec) = {got:?}, east {want:?}"
            ));
        }
        if !e.is_dir() && w.len() != e.len() {
            problems.push(format!(
                "west placeholder {rel} has size {}, east {}",
                w.len(),
                e.len()
            ));
        }
    }
    problems
}

/// docs/backend.md: "`ls -l` on the west tree shows east's owners, modes and times" — also
/// for directories whose children reach west after the directory's own marker (creating a
/// child on the west filesystem changes the directory's mtime there).
#[test]
fn west_tree_directories_keep_east_mtime() {
    let ctx = Ctx::start(GatewayOptions::default());
    let root = ctx.dir("share");
    for i in 0..30 {
        write(&root.join(format!("top/s{i:02}/f")), b"f");
        set_mtime(&root.join(format!("top/s{i:02}")), 1_400_000_000 + i, 7);
    }
    set_mtime(&root.join("top"), 1_500_000_000, 123_456_789);
    ctx.add_gpeer("west");
    let share = Share::new("p1", &root, "wdirs", "east");
    ctx.bind(&share, "west", true);
    ctx.wait_converged(&share, &Expect::full(), CONVERGE);
    let mut rels: Vec<String> = (0..30).map(|i| format!("top/s{i:02}")).collect();
    rels.push("top".into());
    let rels: Vec<&str> = rels.iter().map(String::as_str).collect();
    let problems = west_stat_problems(&ctx, &root, "wdirs/east", &rels);
    assert!(
        problems.is_empty(),
        "{} of {} west directories differ from east (their x-amz-meta-* are right):\n{}",
        problems.len(),
        rels.len(),
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. s3fs-fuse on the west bucket shows east's owners, modes and times

#[test]
fn s3fs_fuse_shows_east_owners_modes_and_times() {
    if !have_fuse() {
        eprintln!(
            "SKIP: s3fs_fuse_shows_east_owners_modes_and_times: /dev/fuse is missing, so \
             nothing can be mounted here"
        );
        return;
    }
    let ctx = Ctx::start(GatewayOptions::default());
    let root = ctx.dir("share");
    let p = |rel: &str| root.join(rel);
    // (path, is_dir, mode, uid, gid, mtime secs, nsec)
    let entries: &[(&str, bool, u32, u32, u32, i64, i64)] = &[
        ("sub/deeper/x.bin", false, 0o644, 0, 0, 1_100_000_000, 0),
        (
            "sub/inner.txt",
            false,
            0o640,
            1234,
            5678,
            1_200_000_000,
            700_000_000,
        ),
        (
            "a.txt",
            false,
            0o644,
            1234,
            5678,
            1_600_000_000,
            123_456_789,
        ),
        ("secret", false, 0o600, 0, 0, 1_500_000_000, 500_000_000),
        ("run.sh", false, 0o755, 42, 43, 1_450_000_000, 0),
        (
            "sub/deeper",
            true,
            0o700,
            99,
            98,
            1_300_000_000,
            250_000_000,
        ),
        ("sub", true, 0o750, 4321, 8765, 1_400_000_000, 1),
        ("emptydir", true, 0o755, 0, 0, 1_000_000_000, 999_999_999),
    ];
    for &(rel, is_dir, ..) in entries {
        if is_dir {
            mkdirs(&p(rel));
        } else {
            write(&p(rel), format!("content of {rel}\n").as_bytes());
        }
    }
    for &(rel, _, mode, uid, gid, secs, nsec) in entries {
        chmod(&p(rel), mode);
        chown(&p(rel), uid, gid);
        set_mtime(&p(rel), secs, nsec);
    }
    ctx.add_gpeer("west");
    let share = Share::new("p1", &root, "fusebkt", "east");
    ctx.bind(&share, "west", true);
    ctx.wait_converged(&share, &Expect::full(), CONVERGE);

    let scratch = tempfile::tempdir().unwrap();
    // Read-only, with the gateway's read-only key.
    let mount = mount_s3fs(
        &ctx.gw,
        &ctx.gw.reader,
        "fusebkt",
        scratch.path(),
        &["ro"],
        || ctx.diagnostics(),
    );
    let mut problems = Vec::new();
    for (rel, e) in east_tree(&root) {
        let path = join(&mount.mnt.join("east"), &rel);
        let w = match std::fs::symlink_metadata(&path) {
            Ok(w) => w,
            Err(err) => {
                problems.push(format!("stat {} through s3fs: {err}", path.display()));
                continue;
            }
        };
        let got = (w.mode(), w.uid(), w.gid(), w.mtime());
        let want = (e.mode(), e.uid(), e.gid(), e.mtime());
        if got != want {
            problems.push(format!(
                "{}: s3fs shows (mode {:o}, uid {}, gid {}, mtime {}), east has (mode {:o}, uid {}, gid {}, mtime {})",
                show(&rel),
                got.0,
                got.1,
                got.2,
                got.3,
                want.0,
                want.1,
                want.2,
                want.3
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "s3fs-fuse view of the west bucket differs from east:\n  {}\n--- s3fs log ---\n{}",
        problems.join("\n  "),
        mount.log()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Incremental changes

#[test]
fn incremental_changes_converge() {
    let ctx = Ctx::start(GatewayOptions::default());
    let root = ctx.dir("share");
    let p = |rel: &str| root.join(rel);
    for f in ["keep.txt", "mod.txt", "chmod.txt", "ren_a.txt", "del.txt"] {
        write(&p(f), f.as_bytes());
    }
    write(&p("deldir/a"), b"a");
    write(&p("deldir/sub/b"), b"b");
    // A directory with 200 entries (196 files, a subdirectory and 3 files in it).
    for i in 0..196 {
        write(&p(&format!("bigdir/f{i:03}")), format!("{i}").as_bytes());
    }
    for f in ["x", "y", "z"] {
        write(&p(&format!("bigdir/sub/{f}")), f.as_bytes());
    }
    assert_eq!(east_tree(&p("bigdir")).len(), 200);

    ctx.add_gpeer("west");
    let share = Share::new("p1", &root, "inc", "east");
    ctx.bind(&share, "west", true);
    ctx.wait_converged(&share, &Expect::full(), CONVERGE);

    // Create, modify, chmod/chown, rename (file and directory), delete.
    write(&p("new.txt"), b"new file\n");
    write(&p("newdir/sub/deep.txt"), b"new tree\n");
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(p("mod.txt"))
            .unwrap();
        f.write_all(b" and more bytes").unwrap();
    }
    chmod(&p("chmod.txt"), 0o600);
    chown(&p("chmod.txt"), 1111, 2222);
    std::fs::rename(p("ren_a.txt"), p("ren_b.txt")).unwrap();
    std::fs::rename(p("bigdir"), p("bigdir_moved")).unwrap();
    std::fs::remove_file(p("del.txt")).unwrap();
    std::fs::remove_dir_all(p("deldir")).unwrap();

    ctx.wait_converged(&share, &Expect::full(), CONVERGE);
    let keys: Vec<String> = ctx
        .list("inc")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let under = |prefix: &str| keys.iter().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(
        under("east/bigdir/"),
        0,
        "nothing left under the old name: {keys:?}"
    );
    assert_eq!(
        under("east/bigdir_moved/"),
        201,
        "the marker and the 200 entries under the new name"
    );
    assert!(keys.contains(&"east/ren_b.txt".to_string()));
    assert!(!keys.contains(&"east/ren_a.txt".to_string()));
    assert!(!keys.contains(&"east/del.txt".to_string()));
    assert_eq!(under("east/deldir"), 0, "{keys:?}");
    let h = ctx.head("inc", "east/mod.txt").unwrap().unwrap();
    assert_eq!(
        h.meta.get("gpair-size").cloned(),
        Some(std::fs::metadata(p("mod.txt")).unwrap().len().to_string())
    );

    // Changes inside the renamed directory reach the entries under the new name (the
    // catalog moved with the directory).
    chmod(&p("bigdir_moved/f000"), 0o611);
    chown(&p("bigdir_moved/sub/x"), 3333, 4444);
    set_mtime(&p("bigdir_moved/f003"), 1_000_000_000, 3);
    ctx.wait_converged(&share, &Expect::full(), CONVERGE);
}

/// Creating or deleting an entry changes its directory's mtime; west's marker must follow
/// (DESIGN 5.1: every directory's mtime is mirrored and kept current).
#[test]
fn directory_mtime_follows_entries_created_and_deleted_inside() {
    let ctx = Ctx::start(GatewayOptions::default());
    let root = ctx.dir("share");
    let p = |rel: &str| root.join(rel);
    write(&p("d/old"), b"old");
    write(&p("e/sub/keep"), b"keep");
    set_mtime(&p("d"), 1_500_000_000, 0);
    set_mtime(&p("e/sub"), 1_500_000_000, 0);
    ctx.add_gpeer("west");
    let share = Share::new("p1", &root, "dirmtime", "east");
    ctx.bind(&share, "west", true);
    ctx.wait_converged(&share, &Expect::full(), CONVERGE);

    write(&p("d/new"), b"new"); // d's mtime changes
    std::fs::remove_file(p("d/old")).unwrap();
    write(&p("e/sub/another"), b"another"); // e/sub's mtime changes
    ctx.wait_converged(&share, &Expect::full(), CONVERGE);
}

/// `mv dir/f dir/sub/; mv dir/sub elsewhere` in quick succession (before the first rename
/// reached west): the file must end up under the directory's final name.
#[test]
fn rename_into_a_directory_then_rename_the_directory() {
    let ctx = Ctx::start(GatewayOptions::default());
    let root = ctx.dir("share");
    let p = |rel: &str| root.join(rel);
    for i in 0..20 {
        write(&p(&format!("dir/f{i:02}")), b"f");
    }
    write(&p("dir/sub/x"), b"x");
    mkdirs(&p("elsewhere"));
    ctx.add_gpeer("west");
    let share = Share::new("p1", &root, "chain", "east");
    ctx.bind(&share, "west", true);
    ctx.wait_converged(&share, &Expect::full(), CONVERGE);

    std::fs::rename(p("dir/f01"), p("dir/sub/f01")).unwrap();
    std::fs::rename(p("dir/sub"), p("elsewhere/moved_sub")).unwrap();
    ctx.wait_converged(&share, &Expect::full(), CONVERGE);

    // And the other way round: the directory first, then a file into it.
    std::fs::rename(p("elsewhere/moved_sub"), p("dir/sub2")).unwrap();
    std::fs::rename(p("dir/f02"), p("dir/sub2/f02")).unwrap();
    ctx.wait_converged(&share, &Expect::full(), CONVERGE);
}

// ---------------------------------------------------------------------------------------------
// 4. Faults: the gateway dies, the daemon dies

/// `dirs` directories of `per_dir` small files under `root/top`.
fn make_many(root: &Path, top: &str, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let dir = root.join(top).join(format!("d{d:03}"));
        mkdirs(&dir);
        for f in 0..per_dir {
            std::fs::write(dir.join(format!("f{f:04}")), format!("{d}/{f}")).unwrap();
        }
    }
}

#[test]
fn gateway_killed_during_sync_then_restarted() {
    let mut ctx = Ctx::start(GatewayOptions::default());
    let root = ctx.dir("share");
    make_many(&root, "before", 2, 5);
    ctx.add_gpeer("west");
    let share = Share::new("p1", &root, "faults", "east");
    ctx.bind(&share, "west", true);
    let st = ctx.wait_converged(&share, &Expect::keys(), CONVERGE);
    let applied_before = st["applied"].as_u64().unwrap();

    // ~2000 new files; kill the gateway once their sync is under way.
    make_many(&root, "burst", 20, 100);
    let deadline = Instant::now() + CONVERGE;
    let mid_sync = loop {
        let st = ctx.sync_status("p1");
        let applied = st["applied"].as_u64().unwrap();
        let pending = st["pending"].as_u64().unwrap();
        if applied > applied_before && pending > 0 {
            break true;
        }
        if applied >= applied_before + 2000 && pending == 0 {
            break false;
        }
        assert!(
            Instant::now() < deadline,
            "the sync of 2000 new files never started: {st:#}\n{}",
            ctx.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    ctx.gw.kill();
    if !mid_sync {
        eprintln!("note: the 2000 files were synced before the kill landed; the files created next meet the dead gateway");
    }
    // More work while the gateway is down, so the outage is met whatever the race above did.
    make_many(&root, "during", 1, 50);

    // The gpeer reports the outage.
    let deadline = Instant::now() + CONVERGE;
    loop {
        let g = ctx.json(&["gpeer", "show", "west"]);
        let h = &g["health"];
        if h["state"] == "retrying"
            && h["consecutive_failures"].as_u64().unwrap_or(0) >= 1
            && !h["last_error"].as_str().unwrap_or("").is_empty()
            && h["last_error_at_ms"].as_i64().unwrap_or(0) > 0
        {
            let st = ctx.sync_status("p1");
            assert!(
                st["gpeer_health"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("retrying"),
                "sync status while the gateway is down: {st:#}"
            );
            assert!(st["pending"].as_u64().unwrap() > 0, "{st:#}");
            // Transient errors do not count against entries.
            assert_eq!(st["failing"].as_u64(), Some(0), "{st:#}");
            println!("gpeer while the gateway is down: {g:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gpeer never reported the dead gateway: {g:#}\n{}",
            ctx.diagnostics()
        );
        std::thread::sleep(POLL);
    }
    let table = ctx.cli(&["gpeer", "show", "west"]);
    assert!(
        table.stdout.contains("retrying"),
        "gpeer show (table): {}",
        table.stdout
    );

    ctx.gw.restart();
    let st = ctx.wait_converged(&share, &Expect::keys(), CONVERGE_BIG);
    assert_eq!(st["gpeer_health"], "healthy", "{st:#}");
    let g = ctx.json(&["gpeer", "show", "west"]);
    assert_eq!(g["health"]["state"], "healthy", "{g:#}");
    assert_eq!(
        st["entries"].as_u64(),
        Some(east_tree(&root).len() as u64),
        "{st:#}"
    );
}

#[test]
fn backend_killed_during_initial_sync_then_restarted() {
    let mut ctx = Ctx::start(GatewayOptions::default());
    let root = ctx.dir("share");
    make_many(&root, "t", 50, 99); // 50 + 50 * 99 + 1 = 5001 entries
    let total = east_tree(&root).len();
    assert_eq!(total, 5001);
    ctx.add_gpeer("west");
    let share = Share::new("p1", &root, "crash", "east");
    ctx.bind(&share, "west", true);

    // Kill -9 once a part of the initial sync reached west.
    let deadline = Instant::now() + CONVERGE;
    let st = loop {
        let st = ctx.sync_status("p1");
        let applied = st["applied"].as_u64().unwrap();
        let pending = st["pending"].as_u64().unwrap();
        if applied >= 100 && pending > 0 {
            break st;
        }
        assert!(
            !(st["initial_sync_done"] == true && pending == 0),
            "the initial sync of {total} entries finished before the kill could land: {st:#}"
        );
        assert!(
            Instant::now() < deadline,
            "the initial sync never got going: {st:#}\n{}",
            ctx.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    ctx.b.kill();
    let on_west = ctx.list("crash").unwrap().len();
    println!(
        "killed the daemon with {} applied, {} pending; {on_west} objects on west",
        st["applied"], st["pending"]
    );
    assert!(
        on_west < total,
        "everything was on west already; nothing left to resume"
    );

    ctx.b.restart();
    let st = ctx.wait_converged(&share, &Expect::keys(), CONVERGE_BIG);
    assert_eq!(st["entries"].as_u64(), Some(total as u64), "{st:#}");
    assert_eq!(st["state"], "active", "{st:#}");
    // Exactly one object per entry, nothing else in the bucket.
    let keys = ctx.list("crash").unwrap();
    assert_eq!(keys.len(), total, "west holds {} objects", keys.len());
}

// ---------------------------------------------------------------------------------------------
// 5. One entry that keeps failing never blocks the others

#[test]
fn a_permanently_failing_entry_never_blocks_the_others() {
    let ctx = Ctx::start(GatewayOptions::default());
    let root = ctx.dir("share");
    write(
        &root.join("x/child"),
        b"cannot go west while an object named x exists\n",
    );
    write(&root.join("x/other"), b"neither can this\n");
    write(&root.join("a.txt"), b"a\n");
    make_many(&root, "ok", 3, 100);

    // West already has an object at the key of the east directory `x`: `east/x/...` cannot
    // be created there (409 KeyConflict).
    ctx.gw.create_bucket("fail");
    ctx.rt
        .block_on(
            ctx.s3_admin
                .put_object()
                .bucket("fail")
                .key("east/x")
                .body(b"foreign".to_vec().into())
                .send(),
        )
        .unwrap();

    ctx.add_gpeer("west");
    let share = Share::new("p1", &root, "fail", "east");
    ctx.bind(&share, "west", false);
    let exp = Expect {
        failing: vec![b"x".to_vec()],
        foreign: vec!["east/x".into()],
        ..Expect::keys()
    };
    let st = ctx.wait_converged(&share, &exp, CONVERGE);
    assert_eq!(st["gpeer_health"], "healthy", "a 409 is no outage: {st:#}");

    // sync status names the failing path with its error, attempts and next retry; the
    // attempts keep growing (it is retried with backoff).
    let deadline = Instant::now() + CONVERGE;
    loop {
        let st = ctx.sync_status("p1");
        let failures = st["failures"].as_array().unwrap();
        let child = failures.iter().find(|f| f["path"] == "x/child");
        if let Some(f) = child {
            let err = f["error"].as_str().unwrap();
            assert!(
                err.contains("409") || err.contains("KeyConflict"),
                "error of x/child: {f:#}"
            );
            assert_eq!(f["op"], "put", "{f:#}");
            assert!(f["next_retry_at_ms"].as_i64().unwrap() > 0, "{f:#}");
            assert!(f["attempts"].as_u64().unwrap() >= 1, "{f:#}");
            for f in failures {
                let path = f["path"].as_str().unwrap();
                assert!(
                    path == "x" || path.starts_with("x/"),
                    "only x and what is below it fail: {st:#}"
                );
            }
            assert_eq!(
                st["failing"].as_u64(),
                Some(failures.len() as u64),
                "{st:#}"
            );
            if f["attempts"].as_u64().unwrap() >= 2 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "sync status never showed x/child retried: {st:#}\n{}",
            ctx.diagnostics()
        );
        std::thread::sleep(POLL);
    }
    let table = ctx.cli(&["sync", "status", "p1"]);
    assert!(
        table.stdout.contains("failing entries") && table.stdout.contains("x/child"),
        "sync status (table):\n{}",
        table.stdout
    );
    let ls = ctx.json(&["ls"]);
    assert!(ls[0]["failing"].as_u64().unwrap() >= 1, "{ls:#}");

    // New work keeps flowing past the failing entry.
    write(&root.join("late.txt"), b"created while x fails\n");
    make_many(&root, "late", 1, 20);
    ctx.wait_converged(&share, &exp, CONVERGE);

    // Once west is fixed, the failing entries go through at their next retry.
    ctx.rt
        .block_on(
            ctx.s3_admin
                .delete_object()
                .bucket("fail")
                .key("east/x")
                .send(),
        )
        .unwrap();
    ctx.wait_converged(&share, &Expect::keys(), CONVERGE);
}

// ---------------------------------------------------------------------------------------------
// 6. Unbind while a sync is running

#[test]
fn unbind_during_a_large_initial_sync() {
    let ctx = Ctx::start(GatewayOptions::default());
    let first = ctx.dir("first");
    make_many(&first, "t", 100, 199); // 20 001 entries
    ctx.add_gpeer("west");
    let share1 = Share::new("p1", &first, "unbind", "first");
    ctx.bind(&share1, "west", true);

    let started = Instant::now();
    let out = ctx.cli(&["--output", "json", "unbind", "p1"]);
    println!("unbind took {:?}", started.elapsed());
    assert_eq!(
        out.code,
        Some(0),
        "unbind during the initial sync: {}{}\n{}",
        out.stdout,
        out.stderr,
        ctx.diagnostics()
    );
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["name"], "p1", "{v:#}");

    let ls = ctx.json(&["ls"]);
    assert_eq!(ls, serde_json::json!([]), "gpair ls after unbind");
    let all = ctx.json(&["sync", "status"]);
    assert_eq!(all, serde_json::json!([]), "sync status after unbind");
    let show = ctx.cli(&["show", "p1"]);
    assert_eq!(show.code, Some(1), "show p1 after unbind: {show:?}");
    let g = ctx.json(&["gpeer", "show", "west"]);
    assert_eq!(g["gpairs"], 0, "{g:#}");

    // The daemon keeps working: the same name binds another share, which syncs, and none of
    // the first share's queued work is left.
    let second = ctx.dir("second");
    make_many(&second, "s", 3, 10);
    let share2 = Share::new("p1", &second, "unbind", "second");
    ctx.bind(&share2, "west", false);
    let exp = Expect {
        exclusive: false,
        ..Expect::full()
    };
    let st = ctx.wait_converged(&share2, &exp, CONVERGE);
    assert_eq!(st["entries"].as_u64(), Some(34), "{st:#}");
    let deadline = Instant::now() + CONVERGE;
    loop {
        let s = ctx.json(&["status"]);
        if s["outbox_pending"] == 0 && s["outbox_failing"] == 0 {
            assert_eq!(s["gpairs"], 1, "{s:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unbound gpair's work is still queued: {s:#}\n{}",
            ctx.diagnostics()
        );
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// 7. Bad input through the CLI against the real daemon

/// What `gpair ls` and `gpair gpeer ls` say, minus counters and health that change by
/// themselves.
fn registry(ctx: &Ctx) -> (Vec<Value>, Vec<Value>) {
    let gpairs = ctx
        .json(&["ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            serde_json::json!({
                "name": g["name"], "gpeer": g["gpeer"], "local_path": g["local_path"],
                "remote_bucket": g["remote_bucket"], "remote_prefix": g["remote_prefix"],
                "gpair_value": g["gpair_value"], "created_at_ms": g["created_at_ms"],
            })
        })
        .collect();
    let gpeers = ctx
        .json(&["gpeer", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            serde_json::json!({
                "name": g["name"], "cluster_id": g["cluster_id"], "endpoint": g["endpoint"],
                "access_key": g["access_key"], "dialect": g["dialect"], "region": g["region"],
                "created_at_ms": g["created_at_ms"], "gpairs": g["gpairs"],
            })
        })
        .collect();
    (gpairs, gpeers)
}

/// Runs a command that must be refused: exit `code`, nothing on stdout, one stderr line
/// starting with `gpair: ` that contains every needle (case-insensitive).
fn expect_refused(ctx: &Ctx, args: &[&str], code: i32, needles: &[&str]) -> String {
    let out = ctx.cli(args);
    let line = out.stderr.trim_end();
    assert_eq!(
        out.code,
        Some(code),
        "gpair {}: exit {:?}, want {code}\nstdout: {}\nstderr: {}",
        args.join(" "),
        out.code,
        out.stdout,
        out.stderr
    );
    assert!(
        out.stdout.is_empty(),
        "gpair {}: a refused command prints nothing on stdout, got {:?}",
        args.join(" "),
        out.stdout
    );
    assert!(
        line.starts_with("gpair: ") && line.lines().count() == 1,
        "gpair {}: want one stderr line starting with `gpair: `, got {:?}",
        args.join(" "),
        out.stderr
    );
    for n in needles {
        assert!(
            line.to_lowercase().contains(&n.to_lowercase()),
            "gpair {}: stderr {line:?} does not mention {n:?}",
            args.join(" ")
        );
    }
    println!("gpair {} -> {line}", args.join(" "));
    line.to_string()
}

#[test]
fn cli_bad_input_is_refused_cleanly() {
    let ctx = Ctx::start(GatewayOptions::default());
    let share = ctx.dir("share");
    write(&share.join("sub/file"), b"x");
    ctx.add_gpeer("west");
    let s1 = Share::new("p1", &share, "good", "p1");
    ctx.bind(&s1, "west", true);
    let before = registry(&ctx);
    let unchanged = |what: &str| {
        assert_eq!(registry(&ctx), before, "{what} changed gpair ls / gpeer ls");
    };
    let bucket_exists = |bucket: &str| {
        ctx.rt
            .block_on(ctx.s3_admin.head_bucket().bucket(bucket).send())
            .is_ok()
    };
    let other = ctx.dir("other");
    let file = ctx.east.path().join("plain-file");
    write(&file, b"not a directory");
    let missing = ctx.east.path().join("does-not-exist");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (share_s, other_s, file_s, missing_s) = (s(&share), s(&other), s(&file), s(&missing));
    let inside = s(&share.join("sub"));
    let parent = s(ctx.east.path());
    let bind = |name: &'static str, local: &str, remote: &str| {
        vec![
            "bind".to_string(),
            name.to_string(),
            "--gpeer".into(),
            "west".into(),
            "--local".into(),
            local.to_string(),
            "--remote".into(),
            remote.to_string(),
        ]
    };
    let refuse = |args: Vec<String>, code: i32, needles: &[&str]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        expect_refused(&ctx, &a, code, needles);
        unchanged(&a.join(" "));
    };

    refuse(bind("p2", &missing_s, "good/p2"), 1, &[&missing_s]);
    refuse(
        bind("p2", &file_s, "good/p2"),
        1,
        &[&file_s, "not a directory"],
    );
    refuse(bind("p2", &inside, "good/p2"), 1, &["overlap", "p1"]);
    refuse(bind("p2", &parent, "good/p2"), 1, &["overlap", "p1"]);
    refuse(bind("p2", &share_s, "good/p2"), 1, &["overlap", "p1"]);
    refuse(
        bind("p1", &other_s, "good/p2"),
        1,
        &["p1", "already exists"],
    );
    {
        let mut a = bind("p2", &other_s, "good/p2");
        a[3] = "nope".into();
        refuse(a, 1, &["nope"]);
    }
    refuse(
        bind("p2", &other_s, "missing-bucket/p2"),
        1,
        &["missing-bucket", "--create-bucket"],
    );
    assert!(
        !bucket_exists("missing-bucket"),
        "a refused bind created the bucket"
    );
    refuse(bind("p2", &other_s, "Bad_Bucket/p2"), 2, &["bucket"]);
    refuse(bind("p2", &other_s, "ab/p2"), 2, &["bucket"]);

    // gpeer add: wrong port (connect stage), wrong secret (auth stage), duplicate name.
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gpeer_add = |name: &str, endpoint: &str, secret: &str| {
        vec![
            "gpeer".to_string(),
            "add".into(),
            name.into(),
            "--endpoint".into(),
            endpoint.into(),
            "--cluster-id".into(),
            WEST_CLUSTER.into(),
            "--access-key".into(),
            ctx.gw.backend.access_key.clone(),
            "--secret-key".into(),
            secret.into(),
        ]
    };
    let endpoint = ctx.gw.endpoint();
    let secret = ctx.gw.backend.secret_key.clone();
    refuse(
        gpeer_add("w2", &format!("http://127.0.0.1:{closed_port}"), &secret),
        1,
        &["w2", "connect"],
    );
    refuse(
        gpeer_add("w2", &endpoint, "not-the-right-secret-key"),
        1,
        &["w2", "auth"],
    );
    refuse(
        gpeer_add("west", &endpoint, &secret),
        1,
        &["west", "already exists"],
    );
    // gpeer rm while a gpair uses it.
    refuse(
        vec!["gpeer".into(), "rm".into(), "west".into()],
        1,
        &["west", "p1"],
    );

    // --create-bucket does create the missing bucket, and the share syncs there.
    assert!(!bucket_exists("created-bucket"));
    let s2 = Share::new("p2", &other, "created-bucket", "p2");
    write(&other.join("hello"), b"hello\n");
    let v = ctx.bind(&s2, "west", true);
    assert_eq!(v["remote_bucket"], "created-bucket", "{v:#}");
    assert!(bucket_exists("created-bucket"));
    ctx.wait_converged(&s2, &Expect::full(), CONVERGE);
    let (gpairs, _) = registry(&ctx);
    assert_eq!(gpairs.len(), 2, "{gpairs:#?}");
}
