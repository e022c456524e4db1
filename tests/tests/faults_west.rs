//! The west fault suite (issue 7, scenarios 1–3; DESIGN 6 "Reconnection", SCENARIOS M11, M12,
//! R2): real binaries, a gateway that dies, a network that degrades and partitions, and a
//! gateway that hangs or answers garbage. Every scenario ends with the invariant check of
//! DESIGN 7 (I1–I5): every file's bytes by checksum through east (recalling the stubs) and on
//! west for stubs, stub/catalog/west agreement through `gpair state`, exact quota, no orphan
//! multipart uploads, every metadata update applied.
//!
//! Sizes are CI-sized by default; `bench/stress-faults.sh` runs the same scenarios larger
//! through these variables:
//! - `GPAIR_FAULTS_FILES` (files per scenario, default 12),
//! - `GPAIR_FAULTS_KILLS` (gateway SIGKILLs in scenario 1, default 3),
//! - `GPAIR_FAULTS_STOP_SECS` (how long the gateway stays stopped in scenario 1, default 3),
//! - `GPAIR_FAULTS_PARTITION_SECS` (the partition of scenario 2, default 6),
//! - `GPAIR_FAULTS_HANG_SECS` (how long the proxy hangs or answers garbage, default 5).
#![allow(clippy::unwrap_used)]

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use gpair_proto::pb;
use gpair_tests::fault_proxy::{FaultMode, FaultProxy};
use gpair_tests::{crc32c, poll_until, test_bytes, Backend, Gateway, GatewayOptions};
use rand::Rng;
use serde_json::Value;

const BUCKET: &str = "cold";
const WAIT: Duration = Duration::from_secs(240);
const TIER: &str = "\n[tier]\nmultipart_threshold_mib = 5\npart_size_mib = 5\ntransfers = 4\n";
/// The west call bound the suite gives the daemon (`GPAIR_WEST_TIMEOUT_MS`): a hanging or
/// partitioned gateway is noticed in seconds rather than the production 30 s.
const WEST_TIMEOUT_MS: &str = "3000";
const MIB: usize = 1 << 20;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn files_n() -> usize {
    env_num("GPAIR_FAULTS_FILES", 12).max(4) as usize
}

// ---------------------------------------------------------------------------------------------
// The rig: a gateway (maybe in a namespace, maybe behind the fault proxy), a backend, one
// gpair `p` bound to `cold/east`.

struct Rig {
    gw: Gateway,
    proxy: Option<FaultProxy>,
    b: Backend,
    share: PathBuf,
    _share_dir: tempfile::TempDir,
}

struct RigOptions {
    gateway: GatewayOptions,
    /// The backend reaches the gateway through a fault proxy.
    proxy: bool,
    /// `GPAIR_WEST_TIMEOUT_MS` for the daemon (None: production bounds).
    west_timeout_ms: Option<String>,
}

impl Default for RigOptions {
    fn default() -> Self {
        RigOptions {
            gateway: GatewayOptions::default(),
            proxy: false,
            west_timeout_ms: Some(WEST_TIMEOUT_MS.into()),
        }
    }
}

fn rig(opts: RigOptions) -> Rig {
    let gw = Gateway::start_with(opts.gateway);
    let proxy = opts.proxy.then(|| FaultProxy::start(gw.addr));
    let mut b = Backend::start("LC_111", TIER);
    if let Some(t) = opts.west_timeout_ms {
        b.env.push(("GPAIR_WEST_TIMEOUT_MS".into(), t));
        b.restart();
    }
    let share_dir = tempfile::tempdir().unwrap();
    let share = share_dir.path().canonicalize().unwrap();
    let r = Rig {
        gw,
        proxy,
        b,
        share,
        _share_dir: share_dir,
    };
    let endpoint = match &r.proxy {
        Some(p) => p.endpoint(),
        None => r.gw.endpoint(),
    };
    r.ok(&[
        "gpeer",
        "add",
        "west",
        "--endpoint",
        &endpoint,
        "--cluster-id",
        "LC_222",
        "--access-key",
        &r.gw.backend.access_key,
        "--secret-key",
        &r.gw.backend.secret_key,
    ]);
    let remote = format!("{BUCKET}/east");
    r.ok(&[
        "bind",
        "p",
        "--gpeer",
        "west",
        "--local",
        r.share.to_str().unwrap(),
        "--remote",
        &remote,
        "--create-bucket",
    ]);
    r
}

impl Rig {
    fn cli(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        self.b.gpair(&all)
    }

    fn diagnostics(&self) -> String {
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        };
        format!(
            "--- backend log ---\n{}\n--- gateway log ---\n{}\n--- proxy ---\n{:?}",
            tail(self.b.log()),
            tail(self.gw.log()),
            self.proxy.as_ref().map(|p| (p.mode(), p.stats()))
        )
    }

    fn ok(&self, args: &[&str]) -> Value {
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

    fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.share.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        p
    }

    fn path(&self, rel: &str) -> String {
        self.share.join(rel).to_str().unwrap().to_owned()
    }

    fn synced(&self) {
        let mut v = Value::Null;
        let ok = poll_until(WAIT, || {
            v = self.ok(&["sync", "status", "p"]);
            v[0]["initial_sync_done"] == true && v[0]["pending"] == 0
        });
        assert!(ok, "sync did not settle: {v:#}\n{}", self.diagnostics());
    }

    fn job(&self, id: u64) -> Value {
        self.ok(&["job", "show", &id.to_string()])
    }

    fn wait_job(&self, id: u64) -> Value {
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

    fn gpeer(&self) -> Value {
        self.ok(&["gpeer", "show", "west"])
    }

    /// Waits until the gpeer shows it lost west: retrying or down, with a transient last error.
    fn wait_unhealthy(&self) -> Value {
        let mut g = Value::Null;
        let ok = poll_until(WAIT, || {
            g = self.gpeer();
            matches!(g["health"]["state"].as_str(), Some("retrying" | "down"))
                && !g["health"]["last_error"].as_str().unwrap_or("").is_empty()
        });
        assert!(
            ok,
            "the gpeer never showed the outage: {g:#}\n{}",
            self.diagnostics()
        );
        assert_eq!(g["health"]["last_error_class"], "transient", "{g:#}");
        assert!(g["health"]["since_ms"].as_i64().unwrap() > 0, "{g:#}");
        g
    }

    fn wait_healthy(&self) {
        let mut g = Value::Null;
        let ok = poll_until(WAIT, || {
            g = self.gpeer();
            g["health"]["state"] == "healthy"
        });
        assert!(
            ok,
            "the gpeer stayed unhealthy: {g:#}\n{}",
            self.diagnostics()
        );
    }

    fn west_key(&self, rel: &str) -> String {
        format!("east/{rel}")
    }

    /// (data length, gpair-name) of a west object, asked of the gateway directly.
    fn west(&self, rel: &str) -> Option<(u64, Option<String>)> {
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

    fn west_bytes(&self, rel: &str) -> Vec<u8> {
        let r = self.gw.get_raw(BUCKET, &self.west_key(rel), &[]);
        assert_eq!(r.status, 200, "GET {rel}");
        r.body
    }

    fn uploads_listing(&self) -> String {
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

    fn uploads(&self) -> usize {
        self.uploads_listing().matches("<Upload>").count()
    }

    fn rebuilt_count(&self) -> usize {
        self.b
            .log()
            .matches("rebuilt the west client before resuming")
            .count()
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus and the invariants

/// Files of a scenario and their expected bytes; every fourth one multipart.
struct Corpus {
    files: Vec<(String, Vec<u8>)>,
}

impl Corpus {
    fn create(r: &Rig, dir: &str, n: usize, seed: u64) -> Corpus {
        let files = (0..n)
            .map(|i| {
                let len = if i % 4 == 3 {
                    6 * MIB + i * 977
                } else {
                    3000 + i * 4099
                };
                let rel = format!("{dir}/f{i:03}");
                let data = test_bytes(len, seed + i as u64);
                r.write(&rel, &data);
                (rel, data)
            })
            .collect();
        Corpus { files }
    }

    fn add(&mut self, r: &Rig, rel: &str, data: Vec<u8>) {
        r.write(rel, &data);
        match self.files.iter_mut().find(|(p, _)| p == rel) {
            Some(f) => f.1 = data,
            None => self.files.push((rel.to_owned(), data)),
        }
    }

    fn paths(&self, r: &Rig) -> Vec<String> {
        self.files.iter().map(|(rel, _)| r.path(rel)).collect()
    }

    /// The settled tier state of every file (no migration in flight).
    fn settled_states(&self, r: &Rig) -> Vec<String> {
        let paths = self.paths(r);
        let mut states = Value::Null;
        let settled = poll_until(WAIT, || {
            let mut args = vec!["state"];
            args.extend(paths.iter().map(String::as_str));
            states = r.ok(&args);
            states
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["state"] == "local" || s["state"] == "remote")
        });
        assert!(
            settled,
            "files left in flight: {states:#}\n{}",
            r.diagnostics()
        );
        states
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["state"].as_str().unwrap().to_owned())
            .collect()
    }

    /// DESIGN 7, I1–I5, after the faults are over.
    fn check_invariants(&self, r: &Rig) {
        // I5: every queued metadata update applied.
        r.synced();
        let states = self.settled_states(r);
        let (mut remote_files, mut remote_bytes) = (0u64, 0u64);
        for ((rel, data), st) in self.files.iter().zip(&states) {
            let path = r.share.join(rel);
            if st == "local" {
                // I1 through east; west holds the placeholder.
                assert_eq!(&std::fs::read(&path).unwrap(), data, "{rel}: local bytes");
                let ok = poll_until(WAIT, || matches!(r.west(rel), Some((0, Some(_)))));
                assert!(
                    ok,
                    "{rel}: west is {:?}, want a placeholder\n{}",
                    r.west(rel),
                    r.diagnostics()
                );
            } else {
                // A stub: west owns a verified copy with the same bytes; east holds no data.
                remote_files += 1;
                remote_bytes += data.len() as u64;
                let s = &r.ok(&["state", &r.path(rel)])[0];
                assert_eq!(
                    s["checksum"],
                    format!("crc32c:{:08x}", crc32c(data)),
                    "{rel}"
                );
                assert_eq!(
                    r.west(rel),
                    Some((data.len() as u64, None)),
                    "{rel}: west owns the data"
                );
                assert_eq!(&r.west_bytes(rel), data, "{rel}: west bytes");
                let md = std::fs::metadata(&path).unwrap();
                assert!(
                    md.blocks() * 512 < data.len() as u64 / 2 + 8192,
                    "{rel}: the stub still holds data"
                );
            }
        }
        // Exact quota.
        let q = r.ok(&["quota", "show", "p"])[0].clone();
        assert_eq!(
            (
                q["used_files"].as_u64(),
                q["used_bytes"].as_u64(),
                q["reserved_files"].as_u64()
            ),
            (Some(remote_files), Some(remote_bytes), Some(0)),
            "quota {q:#}\n{}",
            r.diagnostics()
        );
        // No orphan multipart uploads.
        let none = poll_until(WAIT, || r.uploads() == 0);
        assert!(
            none,
            "orphaned multipart uploads: {}\n{}",
            r.uploads_listing(),
            r.diagnostics()
        );
        // I1 for the stubs: recall everything, every byte back through east.
        let mut args = vec!["recall", "--wait"];
        let paths = self.paths(r);
        args.extend(paths.iter().map(String::as_str));
        let back = r.ok(&args);
        assert_eq!(back["files_failed"], 0, "{back:#}\n{}", r.diagnostics());
        for (rel, data) in &self.files {
            assert_eq!(
                &std::fs::read(r.share.join(rel)).unwrap(),
                data,
                "{rel} after recall"
            );
        }
        assert_eq!(r.ok(&["quota", "show", "p"])[0]["used_files"], 0);
    }
}

fn job_id(v: &Value) -> u64 {
    v["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no job id in {v:#}"))
}

/// Asserts a finished job moved every file and failed none (transient faults never fail a
/// file).
fn assert_all_done(r: &Rig, job: &Value, files: usize) {
    assert_eq!(job["state"], "done", "{job:#}\n{}", r.diagnostics());
    assert_eq!(job["files_failed"], 0, "{job:#}\n{}", r.diagnostics());
    let moved = job["files_done"].as_u64().unwrap() + job["files_noop"].as_u64().unwrap_or(0);
    assert_eq!(moved, files as u64, "{job:#}\n{}", r.diagnostics());
}

/// Starts the mixed workload: offload `b`, recall `a` (offloaded beforehand), new and changed
/// files for sync. Returns (migrate job, recall job).
fn mixed_workload(
    r: &Rig,
    corpus: &mut Corpus,
    a: &[usize],
    b: &[usize],
    round: u64,
) -> (u64, u64) {
    let pick = |idx: &[usize]| -> Vec<String> {
        idx.iter().map(|&i| r.path(&corpus.files[i].0)).collect()
    };
    let (pa, pb) = (pick(a), pick(b));
    let mut m = vec!["migrate"];
    m.extend(pb.iter().map(String::as_str));
    let mut c = vec!["recall"];
    c.extend(pa.iter().map(String::as_str));
    let mj = job_id(&r.ok(&m));
    let cj = job_id(&r.ok(&c));
    // Sync: new files and a changed one (never one a job moves).
    for k in 0..3 {
        corpus.add(
            r,
            &format!("s{round}/n{k}"),
            test_bytes(1000 + k * 333, 900 + round * 10 + k as u64),
        );
    }
    (mj, cj)
}

fn split(n: usize) -> (Vec<usize>, Vec<usize>) {
    (
        (0..n).filter(|i| i % 2 == 0).collect(),
        (0..n).filter(|i| i % 2 == 1).collect(),
    )
}

// ---------------------------------------------------------------------------------------------
// 1. The gateway SIGKILLed at random points, and stopped for a while, during mixed work.

#[test]
fn gateway_killed_and_stopped_during_mixed_offload_recall_and_sync() {
    let mut r = rig(RigOptions::default());
    let mut corpus = Corpus::create(&r, "c", files_n(), 100);
    r.synced();
    let (a, b) = split(corpus.files.len());
    // Group a offloaded beforehand, so that it can be recalled under fire.
    let mut pre = vec!["migrate", "--wait"];
    let pa: Vec<String> = a.iter().map(|&i| r.path(&corpus.files[i].0)).collect();
    pre.extend(pa.iter().map(String::as_str));
    let done = r.ok(&pre);
    assert_all_done(&r, &done, a.len());

    // Round 1: SIGKILLs at random points.
    let (mj, cj) = mixed_workload(&r, &mut corpus, &a, &b, 1);
    let mut rng = rand::thread_rng();
    for _ in 0..env_num("GPAIR_FAULTS_KILLS", 3) {
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..1200)));
        r.gw.kill();
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..1500)));
        r.gw.restart();
    }
    let m = r.wait_job(mj);
    let c = r.wait_job(cj);
    assert_all_done(&r, &m, b.len());
    assert_all_done(&r, &c, a.len());

    // Round 2: the gateway stopped for a while mid-job (the other way round: offload a,
    // recall b).
    let (mj, cj) = mixed_workload(&r, &mut corpus, &b, &a, 2);
    r.gw.kill();
    let g = r.wait_unhealthy();
    eprintln!("gpeer during the stop: {g:#}");
    std::thread::sleep(Duration::from_secs(env_num("GPAIR_FAULTS_STOP_SECS", 3)));
    let waiting = r.job(mj);
    assert_eq!(waiting["files_failed"], 0, "{waiting:#}");
    r.gw.restart();
    let m = r.wait_job(mj);
    let c = r.wait_job(cj);
    assert_all_done(&r, &m, a.len());
    assert_all_done(&r, &c, b.len());
    r.wait_healthy();
    assert!(r.rebuilt_count() >= 1, "{}", r.diagnostics());

    let states = corpus.settled_states(&r);
    for (i, st) in states.iter().enumerate().take(a.len() + b.len()) {
        let want = if i % 2 == 0 { "remote" } else { "local" };
        assert_eq!(st, want, "{}: {states:?}", corpus.files[i].0);
    }
    corpus.check_invariants(&r);
}

// ---------------------------------------------------------------------------------------------
// 3. A gateway that hangs (accepts, never answers) and one that answers garbage, through the
//    fault proxy.

#[test]
fn a_hanging_then_garbage_answering_gateway_pauses_work_and_loses_nothing() {
    let r = rig(RigOptions {
        proxy: true,
        ..Default::default()
    });
    let proxy = r.proxy.as_ref().unwrap();
    let hold = Duration::from_secs(env_num("GPAIR_FAULTS_HANG_SECS", 5));
    let mut corpus = Corpus::create(&r, "h", files_n(), 300);
    r.synced();
    let paths = corpus.paths(&r);

    for (round, mode) in [(1u64, FaultMode::Hang), (2, FaultMode::Garbage)] {
        let rebuilt_before = r.rebuilt_count();
        let t0 = std::time::Instant::now();
        proxy.set_mode(mode);
        // Offload everything in round 1, recall everything in round 2.
        let mut args = vec![if round == 1 { "migrate" } else { "recall" }];
        args.extend(paths.iter().map(String::as_str));
        let id = job_id(&r.ok(&args));
        corpus.add(&r, &format!("s{round}/new"), test_bytes(4321, 700 + round));
        let g = r.wait_unhealthy();
        eprintln!("gpeer while the proxy is in {mode:?}: {g:#}");
        // The job waits for its gpeer; nothing fails.
        let mut j = Value::Null;
        let waiting = poll_until(WAIT, || {
            j = r.job(id);
            j["state"] == "waiting"
        });
        assert!(waiting, "the job never waited: {j:#}\n{}", r.diagnostics());
        assert!(j["waiting_for"].as_str().unwrap().contains("west"), "{j:#}");
        assert_eq!(j["files_failed"], 0, "{j:#}");
        let g = r.gpeer();
        assert!(
            g["queued"]["migration_files"].as_u64().unwrap() > 0,
            "queued work shows: {g:#}"
        );
        // Failure after failure, the gpeer counts as down (every call bounded: no worker
        // stays stuck on the silent or garbled connection).
        let mut g = Value::Null;
        let down = poll_until(WAIT, || {
            g = r.gpeer();
            g["health"]["state"] == "down"
        });
        assert!(down, "never down: {g:#}\n{}", r.diagnostics());
        let log = r.b.log();
        eprintln!(
            "{mode:?}: down after {:?}; {} pauses, {} recoveries so far",
            t0.elapsed(),
            log.matches("pausing its work").count(),
            log.matches("healthy again").count()
        );
        assert!(
            g["health"]["consecutive_failures"].as_u64().unwrap() >= 3,
            "{g:#}"
        );
        std::thread::sleep(hold);
        assert_eq!(r.job(id)["files_failed"], 0);

        proxy.set_mode(FaultMode::Pass);
        let done = r.wait_job(id);
        assert_all_done(&r, &done, paths.len());
        r.wait_healthy();
        assert!(
            r.rebuilt_count() > rebuilt_before,
            "the client was not rebuilt after {mode:?}\n{}",
            r.diagnostics()
        );
    }
    let st = proxy.stats();
    assert!(st.hung > 0 && st.garbage > 0, "{st:?}");
    corpus.check_invariants(&r);
}

/// A multipart upload cut by an outage resumes with the parts west already holds, after a
/// transient failure and after a backend restart; no orphan uploads remain.
#[test]
fn an_interrupted_multipart_upload_resumes_its_parts() {
    let mut r = rig(RigOptions {
        proxy: true,
        ..Default::default()
    });
    let data = test_bytes(26 * MIB + 12345, 77);
    let mut corpus = Corpus { files: Vec::new() };
    corpus.add(&r, "m/big", data.clone());
    corpus.add(&r, "m/big2", test_bytes(21 * MIB + 7, 78));
    r.synced();
    let proxy = r.proxy.as_ref().unwrap();
    let key = r.west_key("m/big");

    // Slow enough that the cut lands mid-upload.
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(15)));
    let id = job_id(&r.ok(&["migrate", &r.path("m/big")]));
    let parts_seen = poll_until(WAIT, || uploaded_parts(&r, &key) >= 2);
    assert!(parts_seen, "no parts appeared\n{}", r.diagnostics());
    proxy.set_mode(FaultMode::Close);
    r.wait_unhealthy();
    assert!(r.uploads() >= 1, "the upload is kept while west is away");
    proxy.set_mode(FaultMode::Pass);
    let done = r.wait_job(id);
    assert_all_done(&r, &done, 1);
    assert!(
        r.b.log()
            .contains("resuming an interrupted multipart upload"),
        "{}",
        r.diagnostics()
    );
    assert!(
        !r.b.log().contains("reused=0"),
        "parts were not reused\n{}",
        r.diagnostics()
    );

    // A backend restart mid-upload: recovery keeps the upload for the resumed job.
    let key2 = r.west_key("m/big2");
    proxy.set_mode(FaultMode::Delay(Duration::from_millis(15)));
    let id2 = job_id(&r.ok(&["migrate", &r.path("m/big2")]));
    let parts_seen = poll_until(WAIT, || uploaded_parts(&r, &key2) >= 2);
    assert!(parts_seen, "no parts appeared\n{}", r.diagnostics());
    r.b.kill();
    proxy.set_mode(FaultMode::Pass);
    let resumes_before =
        r.b.log()
            .matches("resuming an interrupted multipart upload")
            .count();
    r.b.start_again();
    let done = r.wait_job(id2);
    assert_all_done(&r, &done, 1);
    let resumes =
        r.b.log()
            .matches("resuming an interrupted multipart upload")
            .count();
    assert!(resumes > resumes_before, "{}", r.diagnostics());
    corpus.check_invariants(&r);
}

/// Read grants (the mounts' direct west reads, DESIGN 5.4) go through the same health and
/// client rebuild as the workers: a grant during an outage is refused as unavailable and marks
/// the gpeer, the next one after it rebuilds the client, and its URL reads the stub's bytes.
#[test]
fn read_grants_count_against_health_and_rebuild_the_client() {
    let r = rig(RigOptions {
        proxy: true,
        ..Default::default()
    });
    let proxy = r.proxy.as_ref().unwrap();
    let data = test_bytes(300_000, 901);
    let mut corpus = Corpus { files: Vec::new() };
    corpus.add(&r, "g/one", data.clone());
    r.synced();
    let done = r.ok(&["migrate", "--wait", &r.path("g/one")]);
    assert_all_done(&r, &done, 1);
    let mnt = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut mount, session) = rt.block_on(async {
        let mut m = pb::mount_client::MountClient::new(channel(&r.b.socket).await);
        let s = m
            .open_session(pb::OpenSessionRequest {
                client: "faults-west".into(),
                share: r.share.as_os_str().as_bytes().to_vec(),
                mountpoint: mnt.path().as_os_str().as_bytes().to_vec(),
            })
            .await
            .unwrap()
            .into_inner();
        (m, s.id)
    });
    let req = pb::ReadGrantRequest {
        session: session.clone(),
        path: r.share.join("g/one").as_os_str().as_bytes().to_vec(),
        new_read: false,
        verify: true,
        ..Default::default()
    };

    proxy.set_mode(FaultMode::Close);
    let err = rt
        .block_on(mount.read_grant(req.clone()))
        .expect_err("a grant while west is away");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    r.wait_unhealthy();

    let before = r.rebuilt_count();
    proxy.set_mode(FaultMode::Pass);
    let mut grant = None;
    let ok = poll_until(WAIT, || {
        grant = rt.block_on(mount.read_grant(req.clone())).ok();
        grant.is_some()
    });
    assert!(
        ok,
        "no grant after the outage
{}",
        r.diagnostics()
    );
    assert!(r.rebuilt_count() > before, "{}", r.diagnostics());
    // A west read through the grant: the stub's bytes.
    let url = grant.unwrap().into_inner().url;
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path_q) = rest.split_at(rest.find('/').unwrap());
    let head = gpair_tests::request_head(
        "GET",
        path_q,
        &[
            ("host".into(), authority.into()),
            ("range".into(), "bytes=1000-200999".into()),
        ],
    );
    let resp = gpair_tests::raw_exchange(authority.parse().unwrap(), &head, b"");
    assert_eq!(resp.status, 206, "{}", resp.body_str());
    let want = &data[1000..201_000];
    assert!(
        resp.body.as_slice() == want,
        "grant read: {} bytes (crc32c {:08x}), want {} (crc32c {:08x}); headers {:?}",
        resp.body.len(),
        crc32c(&resp.body),
        want.len(),
        crc32c(want),
        resp.headers
    );
    let _ = rt.block_on(mount.close_session(pb::SessionRef { id: session }));
    r.wait_healthy();
    corpus.check_invariants(&r);
}

async fn channel(socket: &std::path::Path) -> tonic::transport::Channel {
    let path = socket.to_path_buf();
    tonic::transport::Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap()
}

/// Parts west holds for the (single) upload in progress of `key`.
fn uploaded_parts(r: &Rig, key: &str) -> usize {
    let listing = r.uploads_listing();
    let Some(id) = listing
        .split("<Upload>")
        .skip(1)
        .find(|u| u.contains(&format!("<Key>{key}</Key>")))
        .and_then(|u| u.split("<UploadId>").nth(1))
        .and_then(|u| u.split("</UploadId>").next())
    else {
        return 0;
    };
    let resp = r.gw.signed(
        &r.gw.backend,
        "GET",
        &format!("/{BUCKET}/{key}?uploadId={id}"),
        &[],
        b"",
    );
    resp.body_str().matches("<Part>").count()
}

// ---------------------------------------------------------------------------------------------
// 2. Network faults: the gateway in a network namespace of its own, joined to the root
//    namespace by a veth pair; netem delay and loss, then a full partition, then repair.

/// A namespace and veth pair made by the test; removed on drop, even when the test fails.
struct Netns {
    ns: String,
    host_if: String,
    ns_if: String,
    gw_ip: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn tc(ns: Option<&str>, args: &[&str]) -> Result<(), String> {
    let mut cmd = match ns {
        Some(n) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", n, "tc"]);
            c
        }
        None => Command::new("tc"),
    };
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("tc {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn create() -> Result<Netns, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let id = std::process::id() % 100_000;
        let n = Netns {
            ns: format!("gpft{id}"),
            host_if: format!("gpfh{id}"),
            ns_if: format!("gpfn{id}"),
            gw_ip: format!("10.213.{}.1", id % 250),
        };
        let host_ip = format!("10.213.{}.2/30", id % 250);
        ip(&["netns", "add", &n.ns])?;
        // From here on, Drop cleans up whatever was made.
        ip(&[
            "link", "add", &n.host_if, "type", "veth", "peer", "name", &n.ns_if,
        ])?;
        ip(&["link", "set", &n.ns_if, "netns", &n.ns])?;
        ip(&["addr", "add", &host_ip, "dev", &n.host_if])?;
        ip(&["link", "set", &n.host_if, "up"])?;
        let gw_cidr = format!("{}/30", n.gw_ip);
        ip(&["-n", &n.ns, "addr", "add", &gw_cidr, "dev", &n.ns_if])?;
        ip(&["-n", &n.ns, "link", "set", &n.ns_if, "up"])?;
        ip(&["-n", &n.ns, "link", "set", "lo", "up"])?;
        Ok(n)
    }

    /// Applies a root qdisc on both ends of the link (both directions).
    fn qdisc(&self, spec: &[&str]) -> Result<(), String> {
        let mut a = vec!["qdisc", "replace", "dev", &self.host_if, "root"];
        a.extend_from_slice(spec);
        tc(None, &a)?;
        let mut a = vec!["qdisc", "replace", "dev", &self.ns_if, "root"];
        a.extend_from_slice(spec);
        tc(Some(&self.ns), &a)
    }

    fn clear_qdisc(&self) {
        let _ = tc(None, &["qdisc", "del", "dev", &self.host_if, "root"]);
        let _ = tc(
            Some(&self.ns),
            &["qdisc", "del", "dev", &self.ns_if, "root"],
        );
    }

    /// A full partition: every packet dropped, silently, both ways. netem `loss 100%` where
    /// the kernel has netem, else a token bucket too small to pass any packet.
    fn partition(&self, netem: bool) -> Result<(), String> {
        if netem {
            self.qdisc(&["netem", "loss", "100%"])
        } else {
            self.qdisc(&["tbf", "rate", "8bit", "burst", "1", "limit", "1"])
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

#[test]
fn network_delay_loss_and_a_partition_between_backend_and_gateway() {
    let net = match Netns::create() {
        Ok(n) => n,
        Err(why) => {
            eprintln!(
                "SKIPPED network_delay_loss_and_a_partition_between_backend_and_gateway: \
                 cannot create a network namespace ({why}); run as root with iproute2"
            );
            return;
        }
    };
    // netem is a kernel module some kernels lack: then the delay/loss phase is skipped and
    // the partition uses a token bucket instead.
    let netem = match net.qdisc(&["netem", "delay", "40ms", "loss", "5%"]) {
        Ok(()) => true,
        Err(e) => {
            eprintln!(
                "netem unavailable ({e}): the 40 ms delay / 5% loss phase is SKIPPED; \
                 the partition uses a tbf blackhole"
            );
            false
        }
    };
    let gw_ip = net.gw_ip.clone();
    let mut r = rig(RigOptions {
        gateway: GatewayOptions {
            command_prefix: vec!["ip".into(), "netns".into(), "exec".into(), net.ns.clone()],
            listen: Some(format!("{gw_ip}:0")),
            ..Default::default()
        },
        proxy: false,
        // Over a lossy 40 ms link a 5 MiB part takes a while: production-like bounds there.
        west_timeout_ms: Some(if netem { "20000" } else { WEST_TIMEOUT_MS }.into()),
    });
    let mut corpus = Corpus::create(&r, "n", files_n(), 500);
    r.synced();
    let (a, b) = split(corpus.files.len());

    // Phase 1: offload half over the link (slow and lossy where netem exists): everything
    // completes.
    let mut args = vec!["migrate", "--wait"];
    let pa: Vec<String> = a.iter().map(|&i| r.path(&corpus.files[i].0)).collect();
    args.extend(pa.iter().map(String::as_str));
    let done = r.ok(&args);
    assert_all_done(&r, &done, a.len());
    if netem {
        net.clear_qdisc();
    }

    // Phase 2: a full partition mid-job, then repair.
    let (mj, cj) = mixed_workload(&r, &mut corpus, &a, &b, 1);
    net.partition(netem).unwrap();
    let g = r.wait_unhealthy();
    eprintln!("gpeer during the partition: {g:#}");
    std::thread::sleep(Duration::from_secs(env_num(
        "GPAIR_FAULTS_PARTITION_SECS",
        6,
    )));
    assert_eq!(r.job(mj)["files_failed"], 0);
    net.clear_qdisc();
    let m = r.wait_job(mj);
    let c = r.wait_job(cj);
    assert_all_done(&r, &m, b.len());
    assert_all_done(&r, &c, a.len());
    r.wait_healthy();
    assert!(r.rebuilt_count() >= 1, "{}", r.diagnostics());
    corpus.check_invariants(&r);
    // The gateway dies with the rig, before the namespace it runs in.
    r.gw.kill();
    drop(r);
    drop(net);
}
