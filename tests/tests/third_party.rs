//! The real `s3fs-gateway` binary driven by S3 clients nobody in this project wrote: boto3, the
//! AWS CLI, rclone and s3fs-fuse. Each test starts its own gateway on loopback and checks the
//! bytes, the metadata and, where the gateway promises it, the west file itself.
//!
//! The clients are installed by `scripts/test.sh`; a missing client is a test failure, not a
//! skip. Only the s3fs-fuse test skips, and only when the machine has no `/dev/fuse`.
#![allow(clippy::unwrap_used)] // a failed unwrap here is a failed test

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use gpair_tests::{have_fuse, is_mounted, mount_s3fs, test_bytes, Gateway, Key};
use md5::{Digest, Md5};

const MIB: usize = 1024 * 1024;
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Running external programs

/// What a finished external command left behind.
struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Output {
    fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// The last lines of the gateway's log, for failure messages.
fn log_tail(gw: &Gateway) -> String {
    let log = gw.log();
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(80);
    lines[start..].join("\n")
}

/// Runs `cmd` with a deadline and captures its output. A program that is not installed is a
/// test failure that says how to get it.
fn capture(cmd: &mut Command, timeout: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = match cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` is not installed (or not on PATH); scripts/test.sh installs rclone, \
             s3fs, the AWS CLI and boto3 where missing"
        ),
        Err(err) => panic!("cannot run {shown}: {err}"),
    };
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    let Some(status) = status else {
        panic!(
            "timed out after {timeout:?}: {shown}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
            String::from_utf8_lossy(&stdout)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Runs `cmd` and fails the test, with everything needed to see why, unless it exits 0.
fn run(gw: &Gateway, cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = capture(cmd, CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "{shown} failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- gateway log (tail) ---\n{}",
        out.status,
        out.stdout_str(),
        out.stderr,
        log_tail(gw)
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Files and trees

fn write_file(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(UNIX_EPOCH + Duration::new(secs, nanos))
        .unwrap();
}

/// (seconds, nanoseconds) of a file's mtime.
fn mtime(path: &Path) -> (i64, i64) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.mtime(), meta.mtime_nsec())
}

/// Every regular file under `root`, by `/`-separated relative path.
fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn describe(data: &[u8]) -> String {
    format!(
        "{} bytes, md5 {}",
        data.len(),
        hex::encode(Md5::digest(data))
    )
}

fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let first = actual
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(actual.len().min(expected.len()));
        panic!(
            "{what}: expected {}, got {} (first difference at byte {first})",
            describe(expected),
            describe(actual)
        );
    }
}

fn assert_same_tree(actual: &Path, expected: &Path, what: &str) {
    let actual = read_tree(actual);
    let expected = read_tree(expected);
    let names = |t: &BTreeMap<String, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&actual),
        names(&expected),
        "{what}: file names differ"
    );
    for (name, data) in &expected {
        assert_same_bytes(&actual[name], data, &format!("{what}: {name}"));
    }
}

/// The ETag S3 gives a multipart upload of `data` in parts of `part_size`.
fn multipart_etag(data: &[u8], part_size: usize) -> String {
    let mut digests = Vec::new();
    let mut parts = 0;
    for chunk in data.chunks(part_size) {
        digests.extend_from_slice(&Md5::digest(chunk));
        parts += 1;
    }
    format!("\"{}-{parts}\"", hex::encode(Md5::digest(&digests)))
}

/// `YYYY-MM-DD HH:MM:SS.nnnnnnnnn` in UTC, the way `rclone lsl` prints times with `TZ=UTC`.
fn utc_string(secs: i64, nanos: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{nanos:09}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[test]
fn utc_string_matches_known_dates() {
    assert_eq!(utc_string(0, 0), "1970-01-01 00:00:00.000000000");
    assert_eq!(
        utc_string(1_600_000_000, 123_456_789),
        "2020-09-13 12:26:40.123456789"
    );
    assert_eq!(utc_string(951_782_400, 5), "2000-02-29 00:00:00.000000005");
    assert_eq!(
        utc_string(1_709_251_199, 0),
        "2024-02-29 23:59:59.000000000"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn create_bucket(gw: &Gateway, bucket: &str) {
    let s3 = gw.client(&gw.backend);
    runtime().block_on(async {
        s3.create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "CreateBucket {bucket}: {}\n--- gateway log (tail) ---\n{}",
                    aws_sdk_s3::error::DisplayErrorContext(&e),
                    log_tail(gw)
                )
            });
    });
}

/// Keeps a client's view of the world to itself: no ~/.aws files, no instance metadata.
fn isolate_aws_env(cmd: &mut Command, key: &Key, scratch: &Path) {
    cmd.env("AWS_ACCESS_KEY_ID", &key.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &key.secret_key)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", scratch.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            scratch.join("no-aws-credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL")
        // The endpoint is plain http; a CA bundle from the environment only gets in the way
        // (rclone's AWS SDK refuses to start with one).
        .env_remove("AWS_CA_BUNDLE");
}

// ---------------------------------------------------------------------------------------------
// boto3

/// `tests/clients/boto3_gateway.py`: the everyday boto3 calls, checked step by step.
#[test]
fn boto3_client() {
    let gw = Gateway::start();
    let scratch = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/boto3_gateway.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .env("GW_ENDPOINT", gw.endpoint())
        .env("GW_ACCESS_KEY", &gw.backend.access_key)
        .env("GW_SECRET_KEY", &gw.backend.secret_key)
        .env("GW_READER_ACCESS_KEY", &gw.reader.access_key)
        .env("GW_READER_SECRET_KEY", &gw.reader.secret_key)
        .env("GW_BUCKET", "boto3-client-test")
        .env("GW_WORKDIR", scratch.path())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    isolate_aws_env(&mut cmd, &gw.backend, scratch.path());
    let out = capture(&mut cmd, Duration::from_secs(120));
    println!("{}", out.stdout_str());
    assert!(
        out.status.success(),
        "boto3 script failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- gateway log (tail) ---\n{}",
        out.status,
        out.stdout_str(),
        out.stderr,
        log_tail(&gw)
    );
}

/// botocore sends `Expect: 100-continue` even for an empty body, takes the final answer that
/// comes instead of `100 Continue` as an "early response", and keeps its status line on the
/// pooled connection (boto/botocore#3755). Unless the gateway closes that connection, the next
/// PUT on it loses its headers (no ETag, no length) and stalls until the read timeout: the
/// rare `aws s3 sync` stall of `aws_cli` (an empty file, then a 1 MiB one on the same
/// connection). One pooled connection makes the order certain here.
#[test]
fn boto3_put_after_empty_put_on_one_connection() {
    const SCRIPT: &str = r#"
import hashlib, io, os
import boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=os.environ["GW_ENDPOINT"],
    config=Config(max_pool_connections=1, read_timeout=10, retries={"total_max_attempts": 1}))
s3.create_bucket(Bucket="expect-continue")
for i in range(3):
    for body in (b"", b"x" * 1000 + bytes([i])):
        r = s3.put_object(Bucket="expect-continue", Key=f"k{i}-{len(body)}", Body=io.BytesIO(body))
        want = '"%s"' % hashlib.md5(body).hexdigest()
        assert r.get("ETag") == want, f"PUT {i} of {len(body)} bytes: ETag {r.get('ETag')!r}, want {want}"
print("ok")
"#;
    let gw = Gateway::start();
    let scratch = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(SCRIPT)
        .env("GW_ENDPOINT", gw.endpoint())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    isolate_aws_env(&mut cmd, &gw.backend, scratch.path());
    let out = run(&gw, &mut cmd);
    assert_eq!(out.stdout_str().trim(), "ok", "stderr:\n{}", out.stderr);
}

// ---------------------------------------------------------------------------------------------
// AWS CLI

fn aws(gw: &Gateway, scratch: &Path) -> Command {
    let mut cmd = Command::new("aws");
    cmd.arg("--endpoint-url").arg(gw.endpoint());
    isolate_aws_env(&mut cmd, &gw.backend, scratch);
    cmd
}

#[test]
fn aws_cli() {
    let gw = Gateway::start();
    let bucket = "awscli-test";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s3url = |key: &str| format!("s3://{bucket}/{key}");

    run(&gw, aws(&gw, d).args(["s3", "mb", &s3url("")]));

    // A file over the CLI's 8 MiB threshold goes up and down in parts.
    let big = test_bytes(20 * MIB + 12_345, 11);
    write_file(&d.join("up/big.bin"), &big);
    let small = b"small file from the aws cli\n".to_vec();
    write_file(&d.join("up/small.txt"), &small);
    run(
        &gw,
        aws(&gw, d)
            .args(["s3", "cp"])
            .arg(d.join("up/big.bin"))
            .arg(s3url("big.bin")),
    );
    run(
        &gw,
        aws(&gw, d)
            .args(["s3", "cp"])
            .arg(d.join("up/small.txt"))
            .arg(s3url("small.txt")),
    );
    run(
        &gw,
        aws(&gw, d)
            .args(["s3", "cp", &s3url("big.bin")])
            .arg(d.join("down/big.bin")),
    );
    run(
        &gw,
        aws(&gw, d)
            .args(["s3", "cp", &s3url("small.txt")])
            .arg(d.join("down/small.txt")),
    );
    assert_same_bytes(
        &std::fs::read(d.join("down/big.bin")).unwrap(),
        &big,
        "big.bin downloaded",
    );
    assert_same_bytes(
        &std::fs::read(d.join("down/small.txt")).unwrap(),
        &small,
        "small.txt",
    );
    // Every object is a real file on west.
    assert_same_bytes(
        &std::fs::read(gw.root.join(bucket).join("big.bin")).unwrap(),
        &big,
        "the west file behind big.bin",
    );

    let head = run(
        &gw,
        aws(&gw, d).args([
            "s3api",
            "head-object",
            "--bucket",
            bucket,
            "--key",
            "big.bin",
        ]),
    );
    let head: serde_json::Value = serde_json::from_slice(&head.stdout).unwrap();
    assert_eq!(
        head["ContentLength"].as_u64(),
        Some(big.len() as u64),
        "head-object: {head}"
    );
    assert_eq!(
        head["ETag"].as_str(),
        Some(multipart_etag(&big, 8 * MIB).as_str()),
        "head-object ETag of a 3-part upload with the CLI's 8 MiB parts: {head}"
    );
    let head = run(
        &gw,
        aws(&gw, d).args([
            "s3api",
            "head-object",
            "--bucket",
            bucket,
            "--key",
            "small.txt",
        ]),
    );
    let head: serde_json::Value = serde_json::from_slice(&head.stdout).unwrap();
    let small_etag = format!("\"{}\"", hex::encode(Md5::digest(&small)));
    assert_eq!(
        head["ETag"].as_str(),
        Some(small_etag.as_str()),
        "head-object: {head}"
    );
    assert_eq!(
        head["ContentLength"].as_u64(),
        Some(small.len() as u64),
        "head-object: {head}"
    );

    // sync a small tree up and back.
    let tree = d.join("tree");
    write_file(&tree.join("a.txt"), b"alpha\n");
    write_file(&tree.join("with space.txt"), b"a key with a space\n");
    write_file(&tree.join("sub/b.txt"), b"bravo\n");
    write_file(&tree.join("sub/deeper/c.bin"), &test_bytes(MIB + 7, 12));
    write_file(&tree.join("sub/deeper/empty"), b"");
    // Old mtimes, so the second sync below sees every object as newer than its source.
    for name in [
        "a.txt",
        "with space.txt",
        "sub/b.txt",
        "sub/deeper/c.bin",
        "sub/deeper/empty",
    ] {
        set_mtime(&tree.join(name), 1_600_000_000, 0);
    }
    let up = run(
        &gw,
        aws(&gw, d)
            .args(["s3", "sync"])
            .arg(&tree)
            .arg(s3url("tree")),
    );
    assert_eq!(
        up.stdout_str().matches("upload:").count(),
        5,
        "sync up:\n{}",
        up.stdout_str()
    );
    run(
        &gw,
        aws(&gw, d)
            .args(["s3", "sync", &s3url("tree")])
            .arg(d.join("back")),
    );
    assert_same_tree(&d.join("back"), &tree, "aws s3 sync round trip");
    // Nothing changed, so a second sync transfers nothing.
    let again = run(
        &gw,
        aws(&gw, d)
            .args(["s3", "sync"])
            .arg(&tree)
            .arg(s3url("tree")),
    );
    assert_eq!(
        again.stdout_str().trim(),
        "",
        "a second sync should upload nothing"
    );

    let ls = run(&gw, aws(&gw, d).args(["s3", "ls", &s3url("")])).stdout_str();
    assert!(
        ls.lines().any(|l| l.trim() == "PRE tree/"),
        "aws s3 ls:\n{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.ends_with(&format!(" {} big.bin", big.len()))),
        "aws s3 ls should show big.bin with its size:\n{ls}"
    );
    let ls = run(
        &gw,
        aws(&gw, d).args(["s3", "ls", "--recursive", &s3url("tree/")]),
    )
    .stdout_str();
    let mut keys: Vec<&str> = ls
        .lines()
        .filter_map(|l| l.split_once("tree/").map(|x| x.1))
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "a.txt",
            "sub/b.txt",
            "sub/deeper/c.bin",
            "sub/deeper/empty",
            "with space.txt"
        ],
        "aws s3 ls --recursive:\n{ls}"
    );

    // rb --force empties the bucket with DeleteObjects, then deletes it.
    run(&gw, aws(&gw, d).args(["s3", "rb", "--force", &s3url("")]));
    assert!(
        !gw.root.join(bucket).exists(),
        "the bucket directory is still on west after rb"
    );
    let ls = run(&gw, aws(&gw, d).args(["s3", "ls"])).stdout_str();
    assert!(
        !ls.contains(bucket),
        "the bucket is still listed after rb:\n{ls}"
    );
}

// ---------------------------------------------------------------------------------------------
// rclone

fn rclone(gw: &Gateway, scratch: &Path) -> Command {
    let mut cmd = Command::new("rclone");
    cmd.env_remove("AWS_CA_BUNDLE")
        .env("RCLONE_CONFIG", scratch.join("no-rclone.conf"))
        .env("RCLONE_CONFIG_WEST_TYPE", "s3")
        .env("RCLONE_CONFIG_WEST_PROVIDER", "Other")
        .env("RCLONE_CONFIG_WEST_ENV_AUTH", "false")
        .env("RCLONE_CONFIG_WEST_ACCESS_KEY_ID", &gw.backend.access_key)
        .env(
            "RCLONE_CONFIG_WEST_SECRET_ACCESS_KEY",
            &gw.backend.secret_key,
        )
        .env("RCLONE_CONFIG_WEST_ENDPOINT", gw.endpoint())
        .env("RCLONE_CONFIG_WEST_REGION", "us-east-1")
        .env("RCLONE_CONFIG_WEST_FORCE_PATH_STYLE", "true")
        .env("TZ", "UTC")
        // Multipart for files over 4 MiB, in 5 MiB parts; no retries hiding a bad answer.
        .args(["--s3-upload-cutoff", "4M", "--s3-chunk-size", "5M"])
        .args(["--retries", "1", "--low-level-retries", "1"]);
    cmd
}

#[test]
fn rclone_copy_check_and_modtimes() {
    let gw = Gateway::start();
    let bucket = "rclone-test";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("src");
    // (path, size, mtime seconds, mtime nanoseconds)
    let files: [(&str, usize, u64, u32); 7] = [
        ("a.txt", 6, 1_600_000_000, 123_456_789),
        ("empty.txt", 0, 1_600_000_001, 0),
        ("dir1/b.bin", 3 * MIB + 17, 1_600_100_000, 500_000_000),
        ("dir1/dir2/c.bin", 6 * MIB + 5, 1_500_000_000, 1),
        ("dir1/dir2/d.bin", 11 * MIB, 1_400_000_000, 999_999_999),
        ("dir3/notes.md", 300, 1_650_000_000, 42),
        ("dir 4/spaced ü name.txt", 20, 1_700_000_000, 0),
    ];
    for (i, (name, size, secs, nanos)) in files.iter().enumerate() {
        let path = src.join(name);
        write_file(&path, &test_bytes(*size, 100 + i as u64));
        set_mtime(&path, *secs, *nanos);
    }
    let remote = format!("west:{bucket}/tree");

    run(
        &gw,
        rclone(&gw, d).args(["mkdir", &format!("west:{bucket}")]),
    );
    run(&gw, rclone(&gw, d).arg("copy").arg(&src).arg(&remote));

    let check = run(&gw, rclone(&gw, d).arg("check").arg(&src).arg(&remote));
    assert!(
        check.stderr.contains("0 differences found"),
        "rclone check should find 0 differences:\n{}",
        check.stderr
    );
    assert!(
        check
            .stderr
            .contains(&format!("{} matching files", files.len())),
        "rclone check should match all {} files:\n{}",
        files.len(),
        check.stderr
    );

    let lsf = run(&gw, rclone(&gw, d).args(["lsf", "-R", &remote])).stdout_str();
    let mut listed: Vec<&str> = lsf.lines().collect();
    listed.sort_unstable();
    let mut expected: Vec<String> = files.iter().map(|f| f.0.to_string()).collect();
    for f in &files {
        let mut parent = Path::new(f.0).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            expected.push(format!("{}/", p.display()));
            parent = p.parent();
        }
    }
    expected.sort_unstable();
    expected.dedup();
    assert_eq!(listed, expected, "rclone lsf -R");

    // rclone keeps the source mtime in x-amz-meta-mtime: lsl shows it to the nanosecond.
    let lsl = run(&gw, rclone(&gw, d).args(["lsl", &remote])).stdout_str();
    for (name, size, secs, nanos) in &files {
        let line = lsl
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("rclone lsl does not list {name}:\n{lsl}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            fields[0],
            size.to_string(),
            "size in rclone lsl line {line:?}"
        );
        assert_eq!(
            format!("{} {}", fields[1], fields[2]),
            utc_string(*secs as i64, i64::from(*nanos)),
            "modtime in rclone lsl line {line:?}"
        );
    }

    // The gateway applies x-amz-meta-mtime to the west file as well.
    for (name, _, secs, nanos) in &files {
        let west = gw.root.join(bucket).join("tree").join(name);
        let (s, n) = mtime(&west);
        let diff = (s - *secs as i64) * 1_000_000_000 + (n - i64::from(*nanos));
        assert!(
            diff.abs() < 1_000_000,
            "mtime of the west file {}: expected {secs}.{nanos:09}, got {s}.{n:09}",
            west.display()
        );
    }

    let back = d.join("back");
    run(&gw, rclone(&gw, d).arg("copy").arg(&remote).arg(&back));
    assert_same_tree(&back, &src, "rclone copy round trip");
    for (name, ..) in &files {
        assert_eq!(
            mtime(&back.join(name)),
            mtime(&src.join(name)),
            "mtime of {name} after a round trip through west"
        );
    }

    // Server-side copy (CopyObject) keeps bytes and modtime; moveto is copy + delete.
    let west_bucket = gw.root.join(bucket);
    run(
        &gw,
        rclone(&gw, d).args([
            "copyto",
            &format!("{remote}/dir1/dir2/d.bin"),
            &format!("west:{bucket}/copied/d.bin"),
        ]),
    );
    run(
        &gw,
        rclone(&gw, d).args([
            "moveto",
            &format!("{remote}/a.txt"),
            &format!("west:{bucket}/moved/a.txt"),
        ]),
    );
    let lsl = run(&gw, rclone(&gw, d).args(["lsl", &format!("west:{bucket}")])).stdout_str();
    for (name, src_name) in [
        ("copied/d.bin", "dir1/dir2/d.bin"),
        ("moved/a.txt", "a.txt"),
    ] {
        let (secs, nanos) = mtime(&src.join(src_name));
        let line = lsl
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("rclone lsl does not list {name}:\n{lsl}"));
        assert!(
            line.contains(&utc_string(secs, nanos)),
            "{name} should keep the modtime of {src_name}: {line:?}"
        );
        assert_same_bytes(
            &std::fs::read(west_bucket.join(name)).unwrap(),
            &std::fs::read(src.join(src_name)).unwrap(),
            &format!("west file {name}"),
        );
    }
    assert!(
        !lsl.lines().any(|l| l.ends_with(" tree/a.txt")),
        "tree/a.txt is still listed after moveto:\n{lsl}"
    );
    assert!(
        !west_bucket.join("tree/a.txt").exists(),
        "tree/a.txt is still on west after moveto"
    );

    // purge deletes every object; the implicit directories go with the last key in them.
    run(&gw, rclone(&gw, d).args(["purge", &remote]));
    let lsf = run(
        &gw,
        rclone(&gw, d).args(["lsf", "-R", &format!("west:{bucket}")]),
    )
    .stdout_str();
    let mut left: Vec<&str> = lsf.lines().collect();
    left.sort_unstable();
    assert_eq!(
        left,
        ["copied/", "copied/d.bin", "moved/", "moved/a.txt"],
        "after purge"
    );
    assert!(
        !west_bucket.join("tree").exists(),
        "{} is still on west after every key under it was deleted",
        west_bucket.join("tree").display()
    );
}

// ---------------------------------------------------------------------------------------------
// s3fs-fuse

/// `stat -c '%a %u %g %Y %s'`: permission bits, owner, group, mtime, size.
fn stat(gw: &Gateway, path: &Path) -> String {
    run(
        gw,
        Command::new("stat")
            .args(["-c", "%a %u %g %Y %s"])
            .arg(path),
    )
    .stdout_str()
    .trim()
    .to_string()
}

#[test]
fn s3fs_fuse_mount() {
    if !have_fuse() {
        eprintln!("SKIP: s3fs_fuse_mount: /dev/fuse is missing, so nothing can be mounted here");
        return;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let is_root = unsafe { libc::geteuid() } == 0;
    let gw = Gateway::start();
    let bucket = "s3fs-fuse-test";
    create_bucket(&gw, bucket);

    // Objects carrying the POSIX headers s3fs-fuse reads and writes.
    struct Obj {
        key: &'static str,
        body: Vec<u8>,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: u64,
    }
    let obj = |key, body, mode, uid, gid, mtime| Obj {
        key,
        body,
        mode,
        uid,
        gid,
        mtime,
    };
    let objects = [
        obj(
            "dir/hello.txt",
            b"hello from west\n".to_vec(),
            0o100644,
            1234,
            5678,
            1_600_000_000,
        ),
        obj(
            "dir/secret.txt",
            b"top secret\n".to_vec(),
            0o100600,
            1234,
            5678,
            1_600_000_100,
        ),
        obj(
            "big.bin",
            test_bytes(3 * MIB + 3, 21),
            0o100755,
            4321,
            8765,
            1_500_000_000,
        ),
    ];
    let s3 = gw.client(&gw.backend);
    let rt = runtime();
    for Obj {
        key,
        body,
        mode,
        uid,
        gid,
        mtime,
    } in &objects
    {
        rt.block_on(
            s3.put_object()
                .bucket(bucket)
                .key(*key)
                .body(body.clone().into())
                .metadata("mode", mode.to_string())
                .metadata("uid", uid.to_string())
                .metadata("gid", gid.to_string())
                .metadata("mtime", mtime.to_string())
                .send(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "PutObject {key}: {}\n{}",
                aws_sdk_s3::error::DisplayErrorContext(&e),
                log_tail(&gw)
            )
        });
    }
    let expect_stat = |mode: u32, uid: u32, gid: u32, mtime: u64, size: usize| {
        format!("{:o} {uid} {gid} {mtime} {size}", mode & 0o7777)
    };

    // The gateway applies the headers to the west file (chown only as root).
    for Obj {
        key,
        body,
        mode,
        uid,
        gid,
        mtime,
    } in &objects
    {
        let west = stat(&gw, &gw.root.join(bucket).join(key));
        if is_root {
            assert_eq!(
                west,
                expect_stat(*mode, *uid, *gid, *mtime, body.len()),
                "west file {key}"
            );
        } else {
            let fields: Vec<&str> = west.split(' ').collect();
            assert_eq!(
                (fields[0], fields[3], fields[4]),
                (
                    format!("{:o}", mode & 0o7777).as_str(),
                    mtime.to_string().as_str(),
                    body.len().to_string().as_str()
                ),
                "west file {key} (not root: owner not checked)"
            );
        }
    }

    let scratch = tempfile::tempdir().unwrap();
    let mut mount = mount_s3fs(&gw, &gw.backend, bucket, scratch.path(), &[], || {
        format!("--- gateway log (tail) ---\n{}", log_tail(&gw))
    });
    let mnt = mount.mnt.clone();

    // Reads: names, modes, owners, mtimes and bytes through the mount.
    let ls = run(&gw, Command::new("ls").arg("-ln").arg(mnt.join("dir"))).stdout_str();
    println!("ls -ln {}:\n{ls}", mnt.join("dir").display());
    for (name, perms) in [("hello.txt", "-rw-r--r--"), ("secret.txt", "-rw-------")] {
        let line = ls
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("ls -ln of the mount does not show {name}:\n{ls}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (fields[0], fields[2], fields[3]),
            (perms, "1234", "5678"),
            "ls -ln line {line:?}"
        );
    }
    let top = run(&gw, Command::new("ls").arg("-1").arg(&mnt)).stdout_str();
    assert_eq!(
        top.lines().collect::<Vec<_>>(),
        ["big.bin", "dir"],
        "ls of the mount root"
    );
    for Obj {
        key,
        body,
        mode,
        uid,
        gid,
        mtime,
    } in &objects
    {
        let path = mnt.join(key);
        assert_eq!(
            stat(&gw, &path),
            expect_stat(*mode, *uid, *gid, *mtime, body.len()),
            "stat through s3fs of {key}\n--- s3fs log ---\n{}",
            mount.log()
        );
        let cat = run(&gw, Command::new("cat").arg(&path));
        assert_same_bytes(&cat.stdout, body, &format!("cat through s3fs of {key}"));
    }

    // Writes: s3fs sends the POSIX headers on PUT, and chmod/touch/mv as copies.
    let new_file = mnt.join("dir/new.txt");
    let new_body = b"written through s3fs\n";
    run(
        &gw,
        Command::new("sh")
            .arg("-c")
            .arg("printf 'written through s3fs\\n' > \"$1\"")
            .arg("sh")
            .arg(&new_file),
    );
    run(&gw, Command::new("chmod").arg("640").arg(&new_file));
    // Both times: s3fs 1.90 ignores the mtime of a `touch -m` (atime UTIME_OMIT).
    run(
        &gw,
        Command::new("touch")
            .args(["-d", "@1700000000"])
            .arg(&new_file),
    );
    let (my_uid, my_gid) = {
        let meta = std::fs::metadata(scratch.path()).unwrap();
        (meta.uid(), meta.gid())
    };
    let expected_new = expect_stat(0o640, my_uid, my_gid, 1_700_000_000, new_body.len());
    assert_eq!(
        stat(&gw, &new_file),
        expected_new,
        "stat through s3fs of the new file"
    );
    let renamed = mnt.join("dir/renamed.txt");
    run(&gw, Command::new("mv").arg(&new_file).arg(&renamed));
    assert_eq!(
        stat(&gw, &renamed),
        expected_new,
        "stat through s3fs after mv"
    );
    run(&gw, Command::new("rm").arg(mnt.join("dir/secret.txt")));
    run(&gw, Command::new("mkdir").arg(mnt.join("newdir")));
    // A file large enough for s3fs to upload it in parts.
    let large = test_bytes(25 * MIB + 1, 22);
    let large_src = scratch.path().join("large.bin");
    std::fs::write(&large_src, &large).unwrap();
    run(
        &gw,
        Command::new("cp")
            .arg(&large_src)
            .arg(mnt.join("dir/large.bin")),
    );
    mount.unmount();
    assert!(
        !is_mounted(&mnt),
        "s3fs is still mounted after fusermount3 -u"
    );

    let west = gw.root.join(bucket);
    let head = rt
        .block_on(
            s3.head_object()
                .bucket(bucket)
                .key("dir/renamed.txt")
                .send(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "HeadObject dir/renamed.txt: {}\n--- s3fs log ---\n{}\n{}",
                aws_sdk_s3::error::DisplayErrorContext(&e),
                mount.log(),
                log_tail(&gw)
            )
        });
    let meta = head.metadata().cloned().unwrap_or_default();
    assert_eq!(
        (
            meta.get("mode").map(String::as_str),
            meta.get("mtime").map(String::as_str)
        ),
        (Some("33184"), Some("1700000000")),
        "x-amz-meta-mode and -mtime of the file s3fs wrote, chmod-ed, touched and moved: {meta:?}"
    );
    let west_renamed = west.join("dir/renamed.txt");
    assert_same_bytes(
        &std::fs::read(&west_renamed).unwrap(),
        new_body,
        "west file s3fs wrote",
    );
    assert_eq!(
        stat(&gw, &west_renamed),
        expected_new,
        "west file s3fs wrote, after chmod, touch and mv"
    );
    assert!(
        !west.join("dir/new.txt").exists(),
        "dir/new.txt is still on west after mv"
    );
    assert!(
        !west.join("dir/secret.txt").exists(),
        "dir/secret.txt is still on west after rm"
    );
    assert_same_bytes(
        &std::fs::read(west.join("dir/large.bin")).unwrap(),
        &large,
        "west file of the 25 MiB file s3fs wrote",
    );
    assert!(
        west.join("newdir").is_dir(),
        "mkdir through s3fs: no west directory"
    );
    rt.block_on(s3.head_object().bucket(bucket).key("newdir/").send())
        .unwrap_or_else(|e| {
            panic!(
                "HeadObject newdir/ (the marker s3fs's mkdir creates): {}\n{}",
                aws_sdk_s3::error::DisplayErrorContext(&e),
                log_tail(&gw)
            )
        });
}
