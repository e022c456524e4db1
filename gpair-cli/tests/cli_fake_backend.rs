//! Runs the real `gpair` binary against a fake Admin gRPC server on a Unix socket.
//!
//! The fake implements the generated `Admin` trait with canned answers and records every
//! request, so these tests check what the CLI sends (validated, normalised), what it prints
//! (tables, `key: value` lines, JSON) and how it exits (0–4) — without the real daemon. The
//! end-to-end tests against `gpair-backend` live in the workspace's `tests/` crate.
//!
//! Canned behaviour, by name: gpeer `west1` exists, `flaky` is UNAVAILABLE, `badauth` fails
//! its check at the auth stage, `dup` already exists, `old` can be removed; gpair `p1` exists
//! with 3 offloaded files, `boom` is an INTERNAL error; everything else is NOT_FOUND.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use gpair_proto::pb::admin_server::{Admin, AdminServer};
use gpair_proto::pb::{self};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status};

// ---------------------------------------------------------------- the fake backend

/// A request the fake received.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    AddGpeer(pb::AddGpeerRequest),
    ListGpeers,
    GetGpeer(String),
    CheckGpeer(String),
    RemoveGpeer(String),
    Bind(pb::BindRequest),
    ListGpairs,
    GetGpair(String),
    Unbind(pb::UnbindRequest),
    SyncStatus(String),
    Status,
}

#[derive(Clone, Default)]
struct FakeAdmin {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl FakeAdmin {
    fn record(&self, c: Call) {
        self.calls.lock().expect("calls lock").push(c);
    }
}

const T0: i64 = 1_714_564_800_000; // 2024-05-01T12:00:00Z

fn west1() -> pb::Gpeer {
    pb::Gpeer {
        name: "west1".into(),
        cluster_id: "LC_222".into(),
        endpoint: "http://127.0.0.1:9000".into(),
        access_key: "AKWEST".into(),
        region: "us-east-1".into(),
        dialect: pb::Dialect::Gateway as i32,
        health: Some(pb::Health {
            state: pb::HealthState::Retrying as i32,
            consecutive_failures: 2,
            last_error: "connect to 127.0.0.1:9000: connection refused".into(),
            last_error_at_ms: T0,
            next_retry_at_ms: T0 + 4_000,
            last_success_at_ms: T0 - 60_000,
        }),
        created_at_ms: T0 - 86_400_000,
        gpairs: 1,
    }
}

fn p1() -> pb::Gpair {
    pb::Gpair {
        name: "p1".into(),
        gpeer: "west1".into(),
        local_path: "/srv/share".into(),
        remote_bucket: "cold".into(),
        remote_prefix: "east".into(),
        gpair_value: "LC_111,/srv/share,LC_222,cold/east".into(),
        state: pb::GpairState::Active as i32,
        created_at_ms: T0,
        entries: 1200,
        pending: 4,
        failing: 1,
        offloaded: 3,
    }
}

fn p1_sync() -> pb::GpairSync {
    pb::GpairSync {
        name: "p1".into(),
        state: pb::GpairState::Active as i32,
        entries: 1200,
        pending: 4,
        failing: 1,
        applied: 5000,
        last_scan_started_at_ms: T0,
        last_scan_finished_at_ms: T0 + 30_000,
        last_scan_entries: 1199,
        failures: vec![pb::FailingEntry {
            path: "docs/big report.pdf".into(),
            error: "503 SlowDown".into(),
            attempts: 5,
            next_retry_at_ms: T0 + 60_000,
            op: "put".into(),
        }],
        initial_sync_done: true,
        watcher_active: true,
        gpeer_health: "healthy".into(),
    }
}

fn not_found(kind: &str, name: &str) -> Status {
    let list = if kind == "gpeer" {
        "gpair gpeer ls"
    } else {
        "gpair ls"
    };
    Status::not_found(format!("{kind} \"{name}\" does not exist (see `{list}`)"))
}

#[tonic::async_trait]
impl Admin for FakeAdmin {
    async fn add_gpeer(
        &self,
        r: Request<pb::AddGpeerRequest>,
    ) -> Result<Response<pb::Gpeer>, Status> {
        let r = r.into_inner();
        self.record(Call::AddGpeer(r.clone()));
        if r.name == "dup" {
            return Err(Status::already_exists("gpeer \"dup\" already exists"));
        }
        Ok(Response::new(pb::Gpeer {
            name: r.name,
            cluster_id: r.cluster_id,
            endpoint: r.endpoint,
            access_key: r.access_key,
            region: if r.region.is_empty() {
                "us-east-1".into()
            } else {
                r.region
            },
            dialect: r.dialect,
            health: Some(pb::Health {
                state: pb::HealthState::Healthy as i32,
                last_success_at_ms: T0,
                ..Default::default()
            }),
            created_at_ms: T0,
            gpairs: 0,
        }))
    }

    async fn list_gpeers(
        &self,
        _: Request<pb::ListGpeersRequest>,
    ) -> Result<Response<pb::ListGpeersResponse>, Status> {
        self.record(Call::ListGpeers);
        Ok(Response::new(pb::ListGpeersResponse {
            gpeers: vec![west1()],
        }))
    }

    async fn get_gpeer(
        &self,
        r: Request<pb::GetGpeerRequest>,
    ) -> Result<Response<pb::Gpeer>, Status> {
        let name = r.into_inner().name;
        self.record(Call::GetGpeer(name.clone()));
        match name.as_str() {
            "west1" => Ok(Response::new(west1())),
            "flaky" => Err(Status::unavailable("the catalog is reopening, try again")),
            _ => Err(not_found("gpeer", &name)),
        }
    }

    async fn check_gpeer(
        &self,
        r: Request<pb::GetGpeerRequest>,
    ) -> Result<Response<pb::CheckGpeerResponse>, Status> {
        let name = r.into_inner().name;
        self.record(Call::CheckGpeer(name.clone()));
        match name.as_str() {
            "west1" => Ok(Response::new(pb::CheckGpeerResponse {
                stage: pb::CheckStage::Ok as i32,
                message: "bucket listing ok".into(),
                latency_us: 2_500,
            })),
            "badauth" => Ok(Response::new(pb::CheckGpeerResponse {
                stage: pb::CheckStage::Auth as i32,
                message: "403 SignatureDoesNotMatch: check the secret key".into(),
                latency_us: 900,
            })),
            _ => Err(not_found("gpeer", &name)),
        }
    }

    async fn remove_gpeer(
        &self,
        r: Request<pb::RemoveGpeerRequest>,
    ) -> Result<Response<pb::RemoveGpeerResponse>, Status> {
        let name = r.into_inner().name;
        self.record(Call::RemoveGpeer(name.clone()));
        match name.as_str() {
            "west1" => Err(Status::failed_precondition(
                "gpeer \"west1\" is used by gpair(s) p1; unbind them first",
            )),
            "old" => Ok(Response::new(pb::RemoveGpeerResponse {})),
            _ => Err(not_found("gpeer", &name)),
        }
    }

    async fn bind(&self, r: Request<pb::BindRequest>) -> Result<Response<pb::Gpair>, Status> {
        let r = r.into_inner();
        self.record(Call::Bind(r.clone()));
        if r.gpeer != "west1" {
            return Err(not_found("gpeer", &r.gpeer));
        }
        let (bucket, prefix) = r.remote.split_once('/').unwrap_or((&r.remote, ""));
        Ok(Response::new(pb::Gpair {
            name: r.name.clone(),
            gpeer: r.gpeer.clone(),
            local_path: r.local_path.clone(),
            remote_bucket: bucket.into(),
            remote_prefix: prefix.into(),
            gpair_value: format!("LC_111,{},LC_222,{}", r.local_path, r.remote),
            state: pb::GpairState::InitialSync as i32,
            created_at_ms: T0,
            ..Default::default()
        }))
    }

    async fn list_gpairs(
        &self,
        _: Request<pb::ListGpairsRequest>,
    ) -> Result<Response<pb::ListGpairsResponse>, Status> {
        self.record(Call::ListGpairs);
        Ok(Response::new(pb::ListGpairsResponse { gpairs: vec![p1()] }))
    }

    async fn get_gpair(
        &self,
        r: Request<pb::GetGpairRequest>,
    ) -> Result<Response<pb::Gpair>, Status> {
        let name = r.into_inner().name;
        self.record(Call::GetGpair(name.clone()));
        match name.as_str() {
            "p1" => Ok(Response::new(p1())),
            "boom" => Err(Status::internal("catalog read failed: IO error")),
            _ => Err(not_found("gpair", &name)),
        }
    }

    async fn unbind(
        &self,
        r: Request<pb::UnbindRequest>,
    ) -> Result<Response<pb::UnbindResponse>, Status> {
        let r = r.into_inner();
        self.record(Call::Unbind(r.clone()));
        match (r.name.as_str(), r.force) {
            ("p1", false) => Err(Status::failed_precondition(
                "gpair \"p1\" still has 3 offloaded file(s) whose data lives on west; recall them first, or pass --force to unbind and leave their data on west",
            )),
            ("p1", true) => Ok(Response::new(pb::UnbindResponse { offloaded_left_on_west: 3 })),
            _ => Err(not_found("gpair", &r.name)),
        }
    }

    async fn sync_status(
        &self,
        r: Request<pb::SyncStatusRequest>,
    ) -> Result<Response<pb::SyncStatusResponse>, Status> {
        let name = r.into_inner().name;
        self.record(Call::SyncStatus(name.clone()));
        let mut p2 = p1_sync();
        p2.name = "p2".into();
        p2.state = pb::GpairState::InitialSync as i32;
        p2.failures.clear();
        p2.failing = 0;
        p2.initial_sync_done = false;
        p2.last_scan_finished_at_ms = 0;
        let gpairs = match name.as_str() {
            "" => vec![p1_sync(), p2],
            "p1" => vec![p1_sync()],
            _ => return Err(not_found("gpair", &name)),
        };
        Ok(Response::new(pb::SyncStatusResponse { gpairs }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.record(Call::Status);
        Ok(Response::new(pb::StatusResponse {
            version: "0.1.0".into(),
            uptime_secs: 3_725,
            cluster_id: "LC_111".into(),
            gpeers: 1,
            gpairs: 1,
            outbox_pending: 4,
            outbox_failing: 1,
            catalog_path: "/var/lib/gpair/catalog".into(),
        }))
    }
}

/// A running fake backend; stops when dropped.
struct Fake {
    dir: tempfile::TempDir,
    socket: PathBuf,
    calls: Arc<Mutex<Vec<Call>>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Fake {
    async fn start() -> Fake {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("backend.sock");
        let listener = tokio::net::UnixListener::bind(&socket).expect("bind the fake socket");
        let incoming = futures::stream::unfold(listener, |l| async move {
            let conn = l.accept().await.map(|(stream, _)| stream);
            Some((conn, l))
        });
        let admin = FakeAdmin::default();
        let calls = admin.calls.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(AdminServer::new(admin))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .expect("fake backend serves");
        });
        Fake {
            dir,
            socket,
            calls,
            _stop: stop,
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// Runs `gpair --backend SOCKET args...`.
    async fn gpair(&self, args: &[&str]) -> Run {
        let mut full = vec!["--backend", self.socket.to_str().expect("utf-8 temp path")];
        full.extend_from_slice(args);
        gpair(&full).env_clear_gpair().run().await
    }
}

// ---------------------------------------------------------------- running the binary

#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// Exit `code`, nothing on stdout, exactly this one line on stderr.
    fn assert_error(&self, code: i32, line: &str) {
        assert_eq!(self.code, code, "{self:#?}");
        assert_eq!(self.stdout, "", "{self:#?}");
        assert_eq!(self.stderr, format!("{line}\n"), "{self:#?}");
    }

    fn assert_ok(&self) {
        assert_eq!(self.code, 0, "{self:#?}");
        assert_eq!(self.stderr, "", "{self:#?}");
    }
}

struct Cmd {
    cmd: tokio::process::Command,
    stdin: Option<String>,
}

fn gpair(args: &[&str]) -> Cmd {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gpair"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    Cmd { cmd, stdin: None }
}

impl Cmd {
    fn env_clear_gpair(mut self) -> Self {
        self.cmd
            .env_remove("GPAIR_BACKEND")
            .env_remove("GPAIR_SECRET_KEY");
        self
    }

    fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(k, v);
        self
    }

    fn cwd(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    fn stdin(mut self, s: &str) -> Self {
        self.cmd.stdin(Stdio::piped());
        self.stdin = Some(s.to_string());
        self
    }

    async fn run(mut self) -> Run {
        let mut child = self.cmd.spawn().expect("start gpair");
        if let Some(input) = self.stdin.take() {
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin
                .write_all(input.as_bytes())
                .await
                .expect("write stdin");
        }
        let out =
            tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
                .await
                .expect("gpair finishes within 60s")
                .expect("gpair output");
        Run {
            code: out.status.code().expect("exit code, not a signal"),
            stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
        }
    }
}

/// Runs gpair with the fake socket given through `GPAIR_BACKEND` instead of `--backend`.
async fn gpair_via_env(fake: &Fake, args: &[&str]) -> Run {
    gpair(args)
        .env_clear_gpair()
        .env("GPAIR_BACKEND", &fake.socket)
        .run()
        .await
}

// ---------------------------------------------------------------- gpeer

#[tokio::test]
async fn gpeer_add_sends_the_validated_request() {
    let fake = Fake::start().await;
    let key_file = fake.dir.path().join("secret");
    std::fs::write(&key_file, "s3cr3t/KEY+x\n").expect("write key file");
    let run = fake
        .gpair(&[
            "gpeer",
            "add",
            "west2",
            "--endpoint",
            "HTTPS://minio.example:9000/",
            "--cluster-id",
            "LC_333",
            "--access-key",
            "AK2",
            "--secret-key-file",
            key_file.to_str().expect("utf-8"),
            "--dialect",
            "s3",
            "--region",
            "eu-west-1",
            "--no-check",
        ])
        .await;
    run.assert_ok();
    assert!(
        run.stdout.starts_with("added gpeer \"west2\"\nname:"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\nendpoint:             https://minio.example:9000\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\ndialect:              s3\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\nhealth:               healthy\n"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("s3cr3t"));
    assert_eq!(
        fake.calls(),
        vec![Call::AddGpeer(pb::AddGpeerRequest {
            name: "west2".into(),
            endpoint: "https://minio.example:9000".into(),
            cluster_id: "LC_333".into(),
            access_key: "AK2".into(),
            secret_key: "s3cr3t/KEY+x".into(),
            region: "eu-west-1".into(),
            dialect: pb::Dialect::S3 as i32,
            no_check: true,
        })]
    );
}

#[tokio::test]
async fn gpeer_add_takes_the_secret_from_env_or_stdin() {
    let fake = Fake::start().await;
    let base = [
        "--backend",
        fake.socket.to_str().expect("utf-8"),
        "--output",
        "json",
        "gpeer",
        "add",
        "west2",
        "--endpoint",
        "http://127.0.0.1:9000",
        "--cluster-id",
        "LC_333",
        "--access-key",
        "AK2",
    ];
    let run = gpair(&base)
        .env_clear_gpair()
        .env("GPAIR_SECRET_KEY", "from-env")
        .run()
        .await;
    run.assert_ok();
    let j = run.json();
    assert_eq!(j["name"], "west2");
    assert_eq!(j["dialect"], "gateway");
    assert_eq!(j["health"]["state"], "healthy");
    assert!(j.get("secret_key").is_none());

    let mut args = base.to_vec();
    args.extend(["--secret-key-file", "-"]);
    let run = gpair(&args)
        .env_clear_gpair()
        .env("GPAIR_SECRET_KEY", "ignored")
        .stdin("from-stdin\n")
        .run()
        .await;
    run.assert_ok();

    let secrets: Vec<(String, i32, bool)> = fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::AddGpeer(r) => Some((r.secret_key, r.dialect, r.no_check)),
            _ => None,
        })
        .collect();
    assert_eq!(
        secrets,
        vec![
            ("from-env".to_string(), pb::Dialect::Gateway as i32, false),
            ("from-stdin".to_string(), pb::Dialect::Gateway as i32, false),
        ]
    );
}

#[tokio::test]
async fn gpeer_add_usage_errors_send_nothing() {
    let fake = Fake::start().await;
    fn add<'a>(extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            "gpeer",
            "add",
            "west2",
            "--cluster-id",
            "LC_333",
            "--access-key",
            "AK2",
        ];
        a.extend_from_slice(extra);
        a
    }
    let run = fake.gpair(&add(&["--endpoint", "http://x:9000"])).await;
    run.assert_error(
        2,
        "gpair: --secret-key: missing: give --secret-key, --secret-key-file FILE or set GPAIR_SECRET_KEY",
    );
    let run = fake
        .gpair(&add(&["--endpoint", "minio:9000", "--secret-key", "s"]))
        .await;
    run.assert_error(
        2,
        "gpair: --endpoint: \"minio:9000\" must look like http(s)://host[:port]",
    );
    let run = fake
        .gpair(&add(&[
            "--endpoint",
            "http://x/bucket",
            "--secret-key",
            "s",
        ]))
        .await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .starts_with("gpair: --endpoint: \"http://x/bucket\" has a path"),
        "{run:#?}"
    );
    assert_eq!(run.stderr.lines().count(), 1);
    let run = fake
        .gpair(&[
            "gpeer",
            "add",
            "bad name",
            "--endpoint",
            "http://x",
            "--cluster-id",
            "C",
            "--access-key",
            "a",
            "--secret-key",
            "s",
        ])
        .await;
    run.assert_error(
        2,
        "gpair: NAME: character ' ' is not allowed in \"bad name\" (use letters, digits, '_', '.', '-')",
    );
    let missing = fake.dir.path().join("no-such-key");
    let run = fake
        .gpair(&add(&[
            "--endpoint",
            "http://x",
            "--secret-key-file",
            missing.to_str().expect("utf-8"),
        ]))
        .await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(
        run.stderr
            .starts_with("gpair: --secret-key-file: cannot read "),
        "{run:#?}"
    );
    assert_eq!(fake.calls(), vec![]);
}

#[tokio::test]
async fn gpeer_add_that_exists_is_refused() {
    let fake = Fake::start().await;
    let run = fake
        .gpair(&[
            "gpeer",
            "add",
            "dup",
            "--endpoint",
            "http://x",
            "--cluster-id",
            "C",
            "--access-key",
            "a",
            "--secret-key",
            "s",
        ])
        .await;
    run.assert_error(1, "gpair: gpeer \"dup\" already exists");
}

#[tokio::test]
async fn gpeer_ls_table_and_json() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["gpeer", "ls"]).await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "NAME   CLUSTER  ENDPOINT               DIALECT  REGION     HEALTH    GPAIRS\n\
         west1  LC_222   http://127.0.0.1:9000  gateway  us-east-1  retrying       1\n"
    );
    let run = fake.gpair(&["gpeer", "ls", "--output", "json"]).await;
    run.assert_ok();
    let j = run.json();
    assert!(j.is_array());
    assert_eq!(j[0]["name"], "west1");
    assert_eq!(j[0]["cluster_id"], "LC_222");
    assert_eq!(j[0]["health"]["state"], "retrying");
    assert_eq!(j[0]["health"]["consecutive_failures"], 2);
}

#[tokio::test]
async fn gpeer_show_includes_health_and_last_error() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["gpeer", "show", "west1"]).await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "name:                 west1\n\
         cluster id:           LC_222\n\
         endpoint:             http://127.0.0.1:9000\n\
         dialect:              gateway\n\
         region:               us-east-1\n\
         access key:           AKWEST\n\
         gpairs:               1\n\
         created:              2024-04-30T12:00:00Z\n\
         health:               retrying\n\
         consecutive failures: 2\n\
         last error:           connect to 127.0.0.1:9000: connection refused\n\
         last error at:        2024-05-01T12:00:00Z\n\
         next retry at:        2024-05-01T12:00:04Z\n\
         last success at:      2024-05-01T11:59:00Z\n"
    );
    let run = fake
        .gpair(&["--output", "json", "gpeer", "show", "west1"])
        .await;
    run.assert_ok();
    assert_eq!(
        run.json()["health"],
        json!({
            "state": "retrying",
            "consecutive_failures": 2,
            "last_error": "connect to 127.0.0.1:9000: connection refused",
            "last_error_at_ms": T0,
            "next_retry_at_ms": T0 + 4_000,
            "last_success_at_ms": T0 - 60_000,
        })
    );
}

#[tokio::test]
async fn gpeer_show_maps_server_errors() {
    let fake = Fake::start().await;
    fake.gpair(&["gpeer", "show", "nope"]).await.assert_error(
        1,
        "gpair: gpeer \"nope\" does not exist (see `gpair gpeer ls`)",
    );
    fake.gpair(&["gpeer", "show", "flaky"])
        .await
        .assert_error(3, "gpair: the catalog is reopening, try again");
    // JSON output does not change where errors go.
    fake.gpair(&["--output", "json", "gpeer", "show", "nope"])
        .await
        .assert_error(
            1,
            "gpair: gpeer \"nope\" does not exist (see `gpair gpeer ls`)",
        );
}

#[tokio::test]
async fn gpeer_check_passes_and_fails() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["gpeer", "check", "west1"]).await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "gpeer:   west1\nresult:  ok\nstage:   ok\nmessage: bucket listing ok\nlatency: 2.5 ms\n"
    );

    let run = fake.gpair(&["gpeer", "check", "badauth"]).await;
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout.contains("result:  failed\nstage:   auth\n"),
        "{run:#?}"
    );
    assert_eq!(
        run.stderr,
        "gpair: gpeer \"badauth\" check failed at stage auth: 403 SignatureDoesNotMatch: check the secret key\n"
    );

    let run = fake
        .gpair(&["--output", "json", "gpeer", "check", "badauth"])
        .await;
    assert_eq!(run.code, 1);
    assert_eq!(
        run.json(),
        json!({
            "name": "badauth",
            "ok": false,
            "stage": "auth",
            "message": "403 SignatureDoesNotMatch: check the secret key",
            "latency_us": 900,
        })
    );
}

#[tokio::test]
async fn gpeer_rm() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["gpeer", "rm", "old"]).await;
    run.assert_ok();
    assert_eq!(run.stdout, "removed gpeer \"old\"\n");
    fake.gpair(&["gpeer", "rm", "west1"]).await.assert_error(
        1,
        "gpair: gpeer \"west1\" is used by gpair(s) p1; unbind them first",
    );
    let run = fake
        .gpair(&["gpeer", "rm", "old", "--output", "json"])
        .await;
    run.assert_ok();
    assert_eq!(run.json(), json!({"name": "old", "removed": true}));
}

// ---------------------------------------------------------------- gpairs

#[tokio::test]
async fn bind_resolves_local_against_cwd() {
    let fake = Fake::start().await;
    let cwd = fake.dir.path().join("work");
    std::fs::create_dir(&cwd).expect("mkdir");
    let sock = fake.socket.to_str().expect("utf-8");
    let run = gpair(&[
        "--backend",
        sock,
        "bind",
        "p2",
        "--gpeer",
        "west1",
        "--local",
        "./share/",
        "--remote",
        "cold/team/a/",
        "--create-bucket",
    ])
    .env_clear_gpair()
    .cwd(&cwd)
    .run()
    .await;
    run.assert_ok();
    let local = cwd.join("share").to_str().expect("utf-8").to_string();
    assert!(
        run.stdout.starts_with(
            "bound gpair \"p2\" (initial sync started; watch it with `gpair sync status`)\n"
        ),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("\nlocal:       {local}\n")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\nremote:      cold/team/a\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("\nstate:       initial_sync\n"),
        "{}",
        run.stdout
    );
    assert_eq!(
        fake.calls(),
        vec![Call::Bind(pb::BindRequest {
            name: "p2".into(),
            gpeer: "west1".into(),
            local_path: local,
            remote: "cold/team/a".into(),
            create_bucket: true,
        })]
    );

    let run = fake
        .gpair(&[
            "--output", "json", "bind", "p3", "--gpeer", "west1", "--local", "/srv/x", "--remote",
            "cold",
        ])
        .await;
    run.assert_ok();
    let j = run.json();
    assert_eq!(j["state"], "initial_sync");
    assert_eq!(j["remote_bucket"], "cold");
    assert_eq!(j["remote_prefix"], "");
}

#[tokio::test]
async fn bind_errors() {
    let fake = Fake::start().await;
    fake.gpair(&["bind", "p2", "--gpeer", "west1", "--local", "/srv/x", "--remote", "Cold_Bucket"])
        .await
        .assert_error(
            2,
            "gpair: --remote: bucket \"Cold_Bucket\" may only contain lowercase letters, digits, '.' and '-'",
        );
    fake.gpair(&[
        "bind",
        "p2",
        "--gpeer",
        "west1",
        "--local",
        "/srv/x",
        "--remote",
        "cold/a/../b",
    ])
    .await
    .assert_error(2, "gpair: --remote: prefix \"a/../b\" has a \"..\" segment");
    assert_eq!(fake.calls(), vec![]);
    fake.gpair(&[
        "bind", "p2", "--gpeer", "nope", "--local", "/srv/x", "--remote", "cold",
    ])
    .await
    .assert_error(
        1,
        "gpair: gpeer \"nope\" does not exist (see `gpair gpeer ls`)",
    );
}

#[tokio::test]
async fn ls_and_show() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["ls"]).await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "NAME  GPEER  LOCAL       REMOTE     STATE   ENTRIES  PENDING  FAILING  OFFLOADED\n\
         p1    west1  /srv/share  cold/east  active     1200        4        1          3\n"
    );
    let run = fake.gpair(&["ls", "--output", "json"]).await;
    run.assert_ok();
    assert_eq!(
        run.json(),
        json!([{
            "name": "p1",
            "gpeer": "west1",
            "local_path": "/srv/share",
            "remote_bucket": "cold",
            "remote_prefix": "east",
            "gpair_value": "LC_111,/srv/share,LC_222,cold/east",
            "state": "active",
            "created_at_ms": T0,
            "entries": 1200,
            "pending": 4,
            "failing": 1,
            "offloaded": 3,
        }])
    );

    let run = fake.gpair(&["show", "p1"]).await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "name:        p1\n\
         gpeer:       west1\n\
         local:       /srv/share\n\
         remote:      cold/east\n\
         gpair value: LC_111,/srv/share,LC_222,cold/east\n\
         state:       active\n\
         created:     2024-05-01T12:00:00Z\n\
         entries:     1200\n\
         pending:     4\n\
         failing:     1\n\
         offloaded:   3\n"
    );
    fake.gpair(&["show", "nope"])
        .await
        .assert_error(1, "gpair: gpair \"nope\" does not exist (see `gpair ls`)");
    fake.gpair(&["show", "boom"]).await.assert_error(
        4,
        "gpair: backend error (internal): catalog read failed: IO error",
    );
}

#[tokio::test]
async fn unbind_refused_with_offloaded_files_then_forced() {
    let fake = Fake::start().await;
    fake.gpair(&["unbind", "p1"]).await.assert_error(
        1,
        "gpair: gpair \"p1\" still has 3 offloaded file(s) whose data lives on west; recall them first, or pass --force to unbind and leave their data on west",
    );
    let run = fake.gpair(&["unbind", "p1", "--force"]).await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "unbound gpair \"p1\"\n3 offloaded file(s) keep their data on west\n"
    );
    let run = fake
        .gpair(&["--output", "json", "unbind", "--force", "p1"])
        .await;
    run.assert_ok();
    assert_eq!(
        run.json(),
        json!({"name": "p1", "offloaded_left_on_west": 3})
    );
    assert_eq!(
        fake.calls(),
        vec![
            Call::Unbind(pb::UnbindRequest {
                name: "p1".into(),
                force: false
            }),
            Call::Unbind(pb::UnbindRequest {
                name: "p1".into(),
                force: true
            }),
            Call::Unbind(pb::UnbindRequest {
                name: "p1".into(),
                force: true
            }),
        ]
    );
}

// ---------------------------------------------------------------- sync, status

#[tokio::test]
async fn sync_status_one_and_all() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["sync", "status", "p1"]).await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "gpair:              p1\n\
         state:              active\n\
         gpeer health:       healthy\n\
         initial sync done:  yes\n\
         watcher:            active\n\
         entries:            1200\n\
         pending:            4\n\
         failing:            1\n\
         applied:            5000\n\
         last scan started:  2024-05-01T12:00:00Z\n\
         last scan finished: 2024-05-01T12:00:30Z\n\
         last scan entries:  1199\n\
         \n\
         failing entries (1):\n\
         PATH                 OP   ATTEMPTS  NEXT RETRY            ERROR\n\
         docs/big report.pdf  put         5  2024-05-01T12:01:00Z  503 SlowDown\n"
    );

    let run = fake.gpair(&["sync", "status"]).await;
    run.assert_ok();
    assert!(
        run.stdout
            .contains("\n\ngpair:              p2\nstate:              initial_sync\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("last scan finished: running\n"),
        "{}",
        run.stdout
    );

    let run = fake.gpair(&["sync", "status", "--output", "json"]).await;
    run.assert_ok();
    let j = run.json();
    assert_eq!(j.as_array().map(Vec::len), Some(2));
    assert_eq!(j[0]["failures"][0]["path"], "docs/big report.pdf");
    assert_eq!(j[0]["failures"][0]["next_retry_at_ms"], T0 + 60_000);
    assert_eq!(j[1]["state"], "initial_sync");
    assert_eq!(j[1]["failures"], json!([]));

    fake.gpair(&["sync", "status", "nope"])
        .await
        .assert_error(1, "gpair: gpair \"nope\" does not exist (see `gpair ls`)");
    assert_eq!(
        fake.calls(),
        vec![
            Call::SyncStatus("p1".into()),
            Call::SyncStatus(String::new()),
            Call::SyncStatus(String::new()),
            Call::SyncStatus("nope".into()),
        ]
    );
}

#[tokio::test]
async fn status_table_json_and_env_socket() {
    let fake = Fake::start().await;
    let run = gpair_via_env(&fake, &["status"]).await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        format!(
            "backend:        {}\n\
             version:        0.1.0\n\
             uptime:         1h 2m\n\
             cluster id:     LC_111\n\
             gpeers:         1\n\
             gpairs:         1\n\
             outbox pending: 4\n\
             outbox failing: 1\n\
             catalog:        /var/lib/gpair/catalog\n",
            fake.socket.display()
        )
    );
    let run = fake.gpair(&["status", "--output", "json"]).await;
    run.assert_ok();
    assert_eq!(
        run.json(),
        json!({
            "version": "0.1.0",
            "uptime_secs": 3725,
            "cluster_id": "LC_111",
            "gpeers": 1,
            "gpairs": 1,
            "outbox_pending": 4,
            "outbox_failing": 1,
            "catalog_path": "/var/lib/gpair/catalog",
        })
    );
    assert_eq!(fake.calls(), vec![Call::Status, Call::Status]);
}

// ---------------------------------------------------------------- no backend, bad flags

#[tokio::test]
async fn missing_socket_exits_3() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("absent.sock");
    let sock = sock.to_str().expect("utf-8");
    gpair(&["--backend", sock, "status"])
        .env_clear_gpair()
        .run()
        .await
        .assert_error(
            3,
            &format!(
                "gpair: cannot reach the backend at {sock}: no such socket \
             (is gpair-backend running? set --backend or GPAIR_BACKEND)"
            ),
        );
    // JSON output changes nothing about errors.
    let run = gpair(&["--backend", sock, "--output", "json", "gpeer", "ls"])
        .env_clear_gpair()
        .run()
        .await;
    assert_eq!(run.code, 3);
    assert_eq!(run.stdout, "");
}

#[tokio::test]
async fn refused_socket_exits_3() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dead.sock");
    // A socket file nobody listens on any more: connect() gets ECONNREFUSED.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let sock = path.to_str().expect("utf-8");
    gpair(&["--backend", sock, "ls"]).env_clear_gpair().run().await.assert_error(
        3,
        &format!(
            "gpair: cannot reach the backend at {sock}: connection refused (no process is listening) \
             (is gpair-backend running? set --backend or GPAIR_BACKEND)"
        ),
    );
}

#[tokio::test]
async fn a_peer_that_is_not_grpc_exits_3() {
    // Something listens, but it closes every connection at once.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("mute.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            drop(conn);
        }
    });
    let run = gpair(&["--backend", path.to_str().expect("utf-8"), "status"])
        .env_clear_gpair()
        .run()
        .await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:#?}");
    assert!(run.stderr.starts_with("gpair: "), "{run:#?}");
}

#[tokio::test]
async fn a_backend_that_never_answers_times_out_with_exit_4() {
    // Accepts connections and holds them open without a word.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("stuck.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    let sock = path.to_str().expect("utf-8");
    gpair(&["--backend", sock, "--timeout", "1", "status"])
        .env_clear_gpair()
        .run()
        .await
        .assert_error(
            4,
            &format!(
                "gpair: the backend at {sock} did not answer within 1s \
                 (is it overloaded or stuck? raise --timeout to wait longer)"
            ),
        );
}

#[tokio::test]
async fn bad_flags_exit_2_without_contacting_the_backend() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["gpeer", "ls", "--bogus"]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("--bogus"), "{run:#?}");
    let run = fake.gpair(&["--output", "xml", "ls"]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    let run = fake.gpair(&["show"]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    let run = fake.gpair(&["frobnicate"]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    fake.gpair(&["show", "../etc"]).await.assert_error(
        2,
        "gpair: NAME: '/' is not allowed in \"../etc\" (use letters, digits, '_', '.', '-')",
    );
    fake.gpair(&["unbind", &"x".repeat(65)])
        .await
        .assert_error(2, "gpair: NAME: 65 characters is too long (at most 64)");
    assert_eq!(fake.calls(), vec![]);
}

#[tokio::test]
async fn help_documents_exit_codes() {
    let run = gpair(&["--help"]).env_clear_gpair().run().await;
    run.assert_ok();
    assert!(run.stdout.contains("Exit codes:"), "{}", run.stdout);
    assert!(
        run.stdout.contains("3  the backend cannot be reached"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("GPAIR_BACKEND"));
    let run = gpair(&["gpeer", "add", "--help"])
        .env_clear_gpair()
        .run()
        .await;
    run.assert_ok();
    assert!(run.stdout.contains("--secret-key-file"));
}
