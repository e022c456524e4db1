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
//!
//! Tiering: `migrate` queues job 17 and `recall` job 18, unless a path names a scenario —
//! `done` (job 21), `fail` (22), `cancel` (23), `waits` (20) — or is a directory (`…/dir`)
//! without `--recursive` (INVALID_ARGUMENT). Watching job 20 shows it waiting for a gpeer,
//! then done; 21 ends DONE, 22 FAILED, 23 CANCELLED; 24's watch ends while it is running, 25's
//! never ends, 26's breaks with UNAVAILABLE; other ids are NOT_FOUND. Quotas exist for `p1`
//! and `p2`.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    Migrate(pb::MigrateRequest),
    Recall(pb::MigrateRequest),
    State(pb::StateRequest),
    ListJobs(u32),
    GetJob(pb::GetJobRequest),
    WatchJob(u64),
    CancelJob(u64),
    SetQuota(pb::SetQuotaRequest),
    GetQuotas(String),
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
            ..Default::default()
        }),
        created_at_ms: T0 - 86_400_000,
        gpairs: 1,
        ..Default::default()
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
        retain_deleted_days: 0,
        read_policy: pb::ReadPolicy::Stream as i32,
        recall_after_reads: 0,
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

const MIB: u64 = 1 << 20;

/// A job of the fake, as first queued.
fn job(id: u64, kind: pb::JobKind, paths: Vec<Vec<u8>>, recursive: bool) -> pb::Job {
    pb::Job {
        id,
        kind: kind as i32,
        state: pb::JobState::Queued as i32,
        paths,
        recursive,
        created_at_ms: T0,
        gpairs: vec!["p1".into()],
        ..Default::default()
    }
}

/// Job `id` of a watch scenario, `files_done` of 3 files (1 MiB each) through, in `state`.
fn scenario_job(id: u64, state: pb::JobState, files_done: u64) -> pb::Job {
    let mut j = job(
        id,
        pb::JobKind::Migrate,
        vec![format!("/srv/share/job{id}").into_bytes()],
        true,
    );
    j.state = state as i32;
    j.started_at_ms = T0 + 1_000;
    j.files_total = 3;
    j.bytes_total = 3 * MIB;
    j.files_done = files_done;
    j.bytes_done = files_done * MIB;
    j.backlog = 3 - files_done;
    j.bytes_per_sec = MIB;
    j
}

/// The states a scenario's watch goes through; `None` for ids the fake does not know.
fn scenario(id: u64) -> Option<Vec<pb::Job>> {
    use pb::JobState as S;
    let running = scenario_job(id, S::Running, 1);
    let finished = |state: S| {
        let mut j = scenario_job(id, state, 1);
        j.backlog = 0;
        j.bytes_per_sec = 0;
        j.finished_at_ms = T0 + 61_000;
        j
    };
    Some(match id {
        20 => {
            let mut waiting = scenario_job(id, S::Waiting, 1);
            waiting.bytes_per_sec = 0;
            waiting.waiting_for = "gpeer west1: connect: connection refused".into();
            let mut done = finished(S::Done);
            done.files_done = 3;
            done.bytes_done = 3 * MIB;
            vec![running, waiting, done]
        }
        21 => {
            let mut done = finished(S::Done);
            done.files_done = 2;
            done.bytes_done = 2 * MIB;
            done.files_noop = 1;
            vec![running, done]
        }
        22 => {
            let mut failed = finished(S::Failed);
            failed.files_failed = 1;
            failed.files_skipped = 1;
            vec![running, failed]
        }
        23 => {
            let mut cancelled = finished(S::Cancelled);
            cancelled.files_cancelled = 2;
            vec![running, cancelled]
        }
        24..=26 => vec![running],
        _ => return None,
    })
}

/// What GetJob answers for a scenario: its last state, with the files it lists.
fn scenario_report(id: u64) -> Option<pb::Job> {
    let mut j = scenario(id)?.pop()?;
    if id == 22 {
        j.files = vec![
            pb::JobFile {
                path: b"/srv/share/job22/b.bin".to_vec(),
                outcome: pb::FileOutcome::Failed as i32,
                reason: "west: 403 AccessDenied".into(),
                bytes: MIB,
                at_ms: T0 + 30_000,
            },
            pb::JobFile {
                path: b"/srv/share/job22/c\xff".to_vec(),
                outcome: pb::FileOutcome::Skipped as i32,
                reason: "quota: gpair p1 is full".into(),
                bytes: MIB,
                at_ms: T0 + 31_000,
            },
        ];
    }
    Some(j)
}

fn quota(name: &str) -> Option<pb::Quota> {
    match name {
        "p1" => Some(pb::Quota {
            name: "p1".into(),
            max_bytes: 10 << 30,
            max_files: 0,
            used_bytes: 3 * MIB,
            used_files: 3,
            reserved_bytes: MIB,
            reserved_files: 1,
        }),
        "p2" => Some(pb::Quota {
            name: "p2".into(),
            max_files: 5000,
            ..Default::default()
        }),
        _ => None,
    }
}

fn job_not_found(id: u64) -> Status {
    Status::not_found(format!("job {id} does not exist (see `gpair job ls`)"))
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
            ..Default::default()
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
            scans: vec![],
        }))
    }

    async fn migrate(&self, r: Request<pb::MigrateRequest>) -> Result<Response<pb::Job>, Status> {
        let r = r.into_inner();
        self.record(Call::Migrate(r.clone()));
        queue(pb::JobKind::Migrate, r)
    }

    async fn recall(&self, r: Request<pb::MigrateRequest>) -> Result<Response<pb::Job>, Status> {
        let r = r.into_inner();
        self.record(Call::Recall(r.clone()));
        queue(pb::JobKind::Recall, r)
    }

    async fn state(
        &self,
        r: Request<pb::StateRequest>,
    ) -> Result<Response<pb::StateResponse>, Status> {
        let r = r.into_inner();
        self.record(Call::State(r.clone()));
        let files = r
            .paths
            .into_iter()
            .map(|path| {
                if !path.starts_with(b"/srv/share/") {
                    pb::FileState {
                        path,
                        state: pb::TierState::Unmanaged as i32,
                        detail: "not under any bound share".into(),
                        ..Default::default()
                    }
                } else if path.ends_with(b".bin") {
                    let key = String::from_utf8_lossy(&path["/srv/share/".len()..]).into_owned();
                    pb::FileState {
                        path,
                        state: pb::TierState::Remote as i32,
                        gpair: "p1".into(),
                        west_key: format!("cold/east/{key}"),
                        size: 3 * MIB,
                        checksum: "crc32c:1a2b3c4d".into(),
                        offloaded_at_ms: T0,
                        ..Default::default()
                    }
                } else {
                    pb::FileState {
                        path,
                        state: pb::TierState::Local as i32,
                        gpair: "p1".into(),
                        size: 2048,
                        blocks: 4096,
                        ..Default::default()
                    }
                }
            })
            .collect();
        Ok(Response::new(pb::StateResponse { files }))
    }

    async fn list_jobs(
        &self,
        r: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        self.record(Call::ListJobs(r.into_inner().limit));
        let jobs = [22, 21]
            .into_iter()
            .filter_map(scenario_report)
            .map(|mut j| {
                j.files.clear();
                j
            })
            .collect();
        Ok(Response::new(pb::ListJobsResponse { jobs }))
    }

    async fn get_job(&self, r: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let r = r.into_inner();
        self.record(Call::GetJob(r));
        let mut j = scenario_report(r.id).ok_or_else(|| job_not_found(r.id))?;
        if r.files_limit != 0 && j.files.len() > r.files_limit as usize {
            j.files.truncate(r.files_limit as usize);
            j.files_truncated = true;
        }
        Ok(Response::new(j))
    }

    type WatchJobStream =
        Pin<Box<dyn futures::Stream<Item = Result<pb::Job, Status>> + Send + 'static>>;

    async fn watch_job(
        &self,
        r: Request<pb::GetJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = r.into_inner().id;
        self.record(Call::WatchJob(id));
        let states = scenario(id).ok_or_else(|| job_not_found(id))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for (i, j) in states.into_iter().enumerate() {
                // Job 20 goes quiet while it waits for its gpeer, longer than the CLI's 2 s
                // between plain progress lines.
                if id == 20 && i == 2 {
                    tokio::time::sleep(Duration::from_millis(2_500)).await;
                }
                if tx.send(Ok(j)).await.is_err() {
                    return;
                }
            }
            match id {
                25 => tx.closed().await,
                26 => {
                    let _ = tx
                        .send(Err(Status::unavailable("the backend is shutting down")))
                        .await;
                }
                _ => {}
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_job(&self, r: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let id = r.into_inner().id;
        self.record(Call::CancelJob(id));
        match id {
            // Still running: cancellation is under way.
            25 => Ok(Response::new(scenario_job(25, pb::JobState::Running, 1))),
            _ => scenario_report(id)
                .map(|mut j| {
                    j.files.clear();
                    Response::new(j)
                })
                .ok_or_else(|| job_not_found(id)),
        }
    }

    async fn set_quota(
        &self,
        r: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        let r = r.into_inner();
        self.record(Call::SetQuota(r.clone()));
        let mut q = quota(&r.name).ok_or_else(|| not_found("gpair", &r.name))?;
        if let Some(b) = r.max_bytes {
            q.max_bytes = b;
        }
        if let Some(f) = r.max_files {
            q.max_files = f;
        }
        Ok(Response::new(q))
    }

    async fn get_quotas(
        &self,
        r: Request<pb::GetQuotasRequest>,
    ) -> Result<Response<pb::GetQuotasResponse>, Status> {
        let name = r.into_inner().name;
        self.record(Call::GetQuotas(name.clone()));
        let quotas = match name.as_str() {
            "" => ["p1", "p2"].into_iter().filter_map(quota).collect(),
            n => vec![quota(n).ok_or_else(|| not_found("gpair", n))?],
        };
        Ok(Response::new(pb::GetQuotasResponse { quotas }))
    }

    async fn set_policy(
        &self,
        _: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn get_policy(
        &self,
        _: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn explain(
        &self,
        _: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::Explanation>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn pin(&self, _: Request<pb::PinRequest>) -> Result<Response<pb::PinResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn run_policy(
        &self,
        _: Request<pb::RunPolicyRequest>,
    ) -> Result<Response<pb::PolicyRun>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn fsck(
        &self,
        _: Request<pb::FsckRequest>,
    ) -> Result<Response<pb::FsckResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_caps(
        &self,
        _: Request<pb::ListCapsRequest>,
    ) -> Result<Response<pb::ListCapsResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn list_sessions(
        &self,
        _: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    async fn evict_session(
        &self,
        _: Request<pb::EvictSessionRequest>,
    ) -> Result<Response<pb::EvictSessionResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}

/// Migrate and Recall: refuse a directory without `--recursive`, else queue the job the
/// paths name.
fn queue(kind: pb::JobKind, r: pb::MigrateRequest) -> Result<Response<pb::Job>, Status> {
    if let Some(dir) = r.paths.iter().find(|p| p.ends_with(b"/dir")) {
        if !r.recursive {
            return Err(Status::invalid_argument(format!(
                "{} is a directory: pass --recursive",
                String::from_utf8_lossy(dir)
            )));
        }
    }
    let named = |word: &str| {
        r.paths
            .iter()
            .any(|p| String::from_utf8_lossy(p).contains(word))
    };
    let id = match kind {
        _ if named("waits") => 20,
        _ if named("done") => 21,
        _ if named("fail") => 22,
        _ if named("cancel") => 23,
        pb::JobKind::Recall => 18,
        _ => 17,
    };
    Ok(Response::new(job(id, kind, r.paths, r.recursive)))
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
    gpair_os(args.iter().map(OsStr::new))
}

/// Like [`gpair`], with arguments that need not be UTF-8.
fn gpair_os<'a>(args: impl IntoIterator<Item = &'a OsStr>) -> Cmd {
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
         since:                -\n\
         consecutive failures: 2\n\
         last error:           connect to 127.0.0.1:9000: connection refused\n\
         last error at:        2024-05-01T12:00:00Z\n\
         next retry at:        2024-05-01T12:00:04Z\n\
         last success at:      2024-05-01T11:59:00Z\n\
         queued outbox:        0\n\
         queued migration:     0 file(s)\n"
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
            "since_ms": 0,
            "last_error_class": "",
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
            retain_deleted_days: 0,
            read_policy: pb::ReadPolicy::Stream as i32,
            recall_after_reads: 0,
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
            "retain_deleted_days": 0,
            "read_policy": "stream",
            "recall_after_reads": 0,
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
         offloaded:   3\n\
         retention:   none (deleted files' west data goes at once)\n\
         stub reads:  stream\n"
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
            "scans": [],
        })
    );
    assert_eq!(fake.calls(), vec![Call::Status, Call::Status]);
}

// ---------------------------------------------------------------- migrate, recall, state

#[tokio::test]
async fn migrate_sends_paths_made_absolute_against_cwd() {
    let fake = Fake::start().await;
    let cwd = fake.dir.path().join("work");
    std::fs::create_dir(&cwd).expect("mkdir");
    // A symlink in the way is not resolved: the backend resolves paths on east.
    std::os::unix::fs::symlink("/elsewhere", cwd.join("link")).expect("symlink");
    let sock = fake.socket.to_str().expect("utf-8");
    let run = gpair(&[
        "--backend",
        sock,
        "migrate",
        "a.bin",
        "./sub/../b.bin",
        "link/c",
        "/srv/share//d/.",
        "-r",
    ])
    .env_clear_gpair()
    .cwd(&cwd)
    .run()
    .await;
    run.assert_ok();
    let cwd_s = cwd.to_str().expect("utf-8");
    let want = vec![
        format!("{cwd_s}/a.bin").into_bytes(),
        format!("{cwd_s}/sub/../b.bin").into_bytes(),
        format!("{cwd_s}/link/c").into_bytes(),
        b"/srv/share/d".to_vec(),
    ];
    assert_eq!(
        fake.calls(),
        vec![Call::Migrate(pb::MigrateRequest {
            paths: want,
            recursive: true,
            background: false,
        })]
    );
    assert_eq!(
        run.stdout,
        format!(
            "queued migrate job 17 (follow it with `gpair job watch 17`)\n\
             job:       17\n\
             kind:      migrate\n\
             priority:  interactive\n\
             state:     queued\n\
             selection: {cwd_s}/a.bin, {cwd_s}/sub/../b.bin, {cwd_s}/link/c, /srv/share/d (recursive)\n\
             gpairs:    p1\n\
             created:   2024-05-01T12:00:00Z\n"
        )
    );
}

#[tokio::test]
async fn migrate_and_recall_json() {
    let fake = Fake::start().await;
    let run = fake
        .gpair(&["--output", "json", "recall", "/srv/share/x", "/srv/share/y"])
        .await;
    run.assert_ok();
    let j = run.json();
    assert_eq!(j["id"], 18);
    assert_eq!(j["kind"], "recall");
    assert_eq!(j["state"], "queued");
    assert_eq!(j["recursive"], false);
    assert_eq!(j["paths"], json!(["/srv/share/x", "/srv/share/y"]));
    assert_eq!(
        j["paths_b64"],
        json!(["L3Nydi9zaGFyZS94", "L3Nydi9zaGFyZS95"])
    );
    assert_eq!(j["files"], json!([]));
    assert_eq!(j["created_at_ms"], T0);

    let run = fake
        .gpair(&["migrate", "/srv/share/q", "--output", "json"])
        .await;
    run.assert_ok();
    assert_eq!(run.json()["kind"], "migrate");
    assert_eq!(run.json()["id"], 17);
}

#[tokio::test]
async fn recall_of_a_directory_needs_recursive() {
    let fake = Fake::start().await;
    fake.gpair(&["recall", "/srv/share/dir"])
        .await
        .assert_error(1, "gpair: /srv/share/dir is a directory: pass --recursive");
    let run = fake
        .gpair(&["recall", "--recursive", "/srv/share/dir/"])
        .await;
    run.assert_ok();
    assert!(
        run.stdout
            .starts_with("queued recall job 18 (follow it with `gpair job watch 18`)\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\nselection: /srv/share/dir/ (recursive)\n"),
        "{}",
        run.stdout
    );
    assert_eq!(
        fake.calls(),
        vec![
            Call::Recall(pb::MigrateRequest {
                paths: vec![b"/srv/share/dir".to_vec()],
                recursive: false,
                background: false,
            }),
            // The trailing `/` travels: on east it means "the directory", symlink or not.
            Call::Recall(pb::MigrateRequest {
                paths: vec![b"/srv/share/dir/".to_vec()],
                recursive: true,
                background: false,
            }),
        ]
    );
}

#[tokio::test]
async fn a_prefetch_list_is_one_background_recall() {
    let fake = Fake::start().await;
    let list = fake.dir.path().join("prefetch.txt");
    std::fs::write(
        &list,
        "# for the 02:00 render\n/srv/share/a\n\n/srv/share/b\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let list = list.to_str().unwrap_or_default();
    fake.gpair(&["recall", "--prefetch-list", list, "/srv/share/c"])
        .await
        .assert_ok();
    assert_eq!(
        fake.calls(),
        vec![Call::Recall(pb::MigrateRequest {
            paths: vec![
                b"/srv/share/c".to_vec(),
                b"/srv/share/a".to_vec(),
                b"/srv/share/b".to_vec(),
            ],
            recursive: false,
            background: true,
        })]
    );
    // Without a list or a path there is nothing to recall.
    let run = fake.gpair(&["recall"]).await;
    assert_ne!(run.code, 0);
}

#[tokio::test]
async fn state_table_and_json_with_a_non_utf8_name() {
    let fake = Fake::start().await;
    let cwd = fake.dir.path().join("share");
    std::fs::create_dir(&cwd).expect("mkdir");
    let sock = fake.socket.as_os_str();
    let run = gpair_os([
        OsStr::new("--backend"),
        sock,
        OsStr::new("state"),
        OsStr::new("/srv/share/big.bin"),
        OsStr::new("/srv/share/notes.txt"),
        OsStr::from_bytes(b"r\xe9sum\xe9"),
    ])
    .env_clear_gpair()
    .cwd(&cwd)
    .run()
    .await;
    run.assert_ok();
    let cwd_s = cwd.to_str().expect("utf-8");
    let mut raw = format!("{cwd_s}/").into_bytes();
    raw.extend_from_slice(b"r\xe9sum\xe9");
    assert_eq!(
        fake.calls(),
        vec![Call::State(pb::StateRequest {
            paths: vec![
                b"/srv/share/big.bin".to_vec(),
                b"/srv/share/notes.txt".to_vec(),
                raw.clone(),
            ],
        })]
    );
    let odd = format!("{cwd_s}/r\\xe9sum\\xe9");
    let w = odd.len();
    assert_eq!(
        run.stdout,
        format!(
            "{:w$}  STATE      GPAIR     SIZE  ON-EAST  CHECKSUM         WEST-KEY           DETAIL\n\
             {:w$}  remote     p1     3.0 MiB      0 B  crc32c:1a2b3c4d  cold/east/big.bin  offloaded 2024-05-01T12:00:00Z\n\
             {:w$}  local      p1     2.0 KiB  4.0 KiB  -                -                  -\n\
             {odd}  unmanaged  -          0 B      0 B  -                -                  not under any bound share\n",
            "PATH", "/srv/share/big.bin", "/srv/share/notes.txt"
        )
    );

    let run = gpair_os([
        OsStr::new("--backend"),
        sock,
        OsStr::new("--output"),
        OsStr::new("json"),
        OsStr::new("state"),
        OsStr::new("/srv/share/big.bin"),
        OsStr::from_bytes(b"/tmp/\xff"),
    ])
    .env_clear_gpair()
    .run()
    .await;
    run.assert_ok();
    assert_eq!(
        run.json(),
        json!([
            {
                "path": "/srv/share/big.bin",
                "path_b64": "L3Nydi9zaGFyZS9iaWcuYmlu",
                "state": "remote",
                "gpair": "p1",
                "west_key": "cold/east/big.bin",
                "size": 3 * MIB,
                "checksum": "crc32c:1a2b3c4d",
                "detail": "",
                "offloaded_at_ms": T0,
                "job_id": 0,
                "blocks": 0,
            },
            {
                "path": "/tmp/\u{fffd}",
                "path_b64": "L3RtcC//",
                "state": "unmanaged",
                "gpair": "",
                "west_key": "",
                "size": 0,
                "checksum": "",
                "detail": "not under any bound share",
                "offloaded_at_ms": 0,
                "job_id": 0,
                "blocks": 0,
            },
        ])
    );
}

#[tokio::test]
async fn bad_paths_and_ids_exit_2_without_contacting_the_backend() {
    let fake = Fake::start().await;
    fake.gpair(&["migrate", ""])
        .await
        .assert_error(2, "gpair: PATH: path number 1 is empty");
    fake.gpair(&["recall", "/srv/a", "", "-r"])
        .await
        .assert_error(2, "gpair: PATH: path number 2 is empty");
    fake.gpair(&["state", "/srv/a", ""])
        .await
        .assert_error(2, "gpair: PATH: path number 2 is empty");
    for args in [
        &["migrate"][..],
        &["recall", "--wait"],
        &["state"],
        &["job", "show"],
        &["job", "ls", "--limit", "0"],
        &["job", "show", "3", "--files-limit", "x"],
        &["migrate", "/srv/a", "--bogus"],
    ] {
        let run = fake.gpair(args).await;
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert_eq!(run.stdout, "", "{args:?}");
        assert!(run.stderr.starts_with("error: "), "{args:?}: {run:#?}");
    }
    fake.gpair(&["job", "show", "abc"]).await.assert_error(
        2,
        "gpair: ID: \"abc\" is not a job id (a number, as `gpair job ls` shows)",
    );
    fake.gpair(&["job", "watch", "0"])
        .await
        .assert_error(2, "gpair: ID: job ids start at 1");
    fake.gpair(&["job", "cancel", "--", "-4"])
        .await
        .assert_error(
            2,
            "gpair: ID: \"-4\" is not a job id (a number, as `gpair job ls` shows)",
        );
    assert_eq!(fake.calls(), vec![]);
}

// ---------------------------------------------------------------- waiting for jobs

const REPORT_21: &str = "\
job:         21
kind:        migrate
priority:    interactive
state:       done
selection:   /srv/share/job21 (recursive)
gpairs:      p1
created:     2024-05-01T12:00:00Z
started:     2024-05-01T12:00:01Z (after 1s queued)
finished:    2024-05-01T12:01:01Z (ran 1m 0s)
files:       3 (3.0 MiB)
done:        2 (2.0 MiB)
failed:      0
skipped:     0
no-op:       1
dirty:       0
cancelled:   0
backlog:     0
rate:        34.1 KiB/s average
waiting for: -
";

/// Every stderr line is a plain progress line of job `id` (stderr is not a terminal here),
/// the first one showing it running; `error` is the last line, if any.
fn assert_plain_progress(run: &Run, id: u64, error: Option<&str>) {
    let mut lines: Vec<&str> = run.stderr.lines().collect();
    if let Some(e) = error {
        assert_eq!(lines.pop(), Some(e), "{run:#?}");
    }
    assert_eq!(
        lines.first().copied(),
        Some(
            format!("job {id}: running, 1/3 files, 0 failed, 1.0/3.0 MiB, ETA 2s, 1.0 MiB/s")
                .as_str()
        ),
        "{run:#?}"
    );
    let prefix = format!("job {id}: ");
    assert!(lines.iter().all(|l| l.starts_with(&prefix)), "{run:#?}");
    assert!(!run.stderr.contains('\r'), "{run:#?}");
}

#[tokio::test]
async fn migrate_wait_done_exits_0_with_the_report() {
    let fake = Fake::start().await;
    let run = fake
        .gpair(&["migrate", "--wait", "-r", "/srv/share/done"])
        .await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert_eq!(run.stdout, REPORT_21);
    assert_plain_progress(&run, 21, None);
    assert_eq!(
        fake.calls(),
        vec![
            Call::Migrate(pb::MigrateRequest {
                paths: vec![b"/srv/share/done".to_vec()],
                recursive: true,
                background: false,
            }),
            Call::WatchJob(21),
            Call::GetJob(pb::GetJobRequest {
                id: 21,
                files_limit: 0
            }),
        ]
    );
}

#[tokio::test]
async fn wait_json_is_the_finished_job() {
    let fake = Fake::start().await;
    let run = fake
        .gpair(&[
            "--output",
            "json",
            "recall",
            "--wait",
            "/srv/share/done.bin",
        ])
        .await;
    assert_eq!(run.code, 0, "{run:#?}");
    let j = run.json();
    assert_eq!(j["id"], 21);
    assert_eq!(j["state"], "done");
    assert_eq!(j["files_done"], 2);
    assert_eq!(j["files_noop"], 1);
    assert_eq!(j["finished_at_ms"], T0 + 61_000);
    assert_plain_progress(&run, 21, None);
}

#[tokio::test]
async fn wait_for_a_failed_job_prints_the_report_then_exits_5() {
    let fake = Fake::start().await;
    let run = fake
        .gpair(&["migrate", "--wait", "/srv/share/fail.bin"])
        .await;
    assert_eq!(run.code, 5, "{run:#?}");
    assert_eq!(
        run.stdout,
        "job:         22\n\
         kind:        migrate\n\
         priority:    interactive\n\
         state:       failed\n\
         selection:   /srv/share/job22 (recursive)\n\
         gpairs:      p1\n\
         created:     2024-05-01T12:00:00Z\n\
         started:     2024-05-01T12:00:01Z (after 1s queued)\n\
         finished:    2024-05-01T12:01:01Z (ran 1m 0s)\n\
         files:       3 (3.0 MiB)\n\
         done:        1 (1.0 MiB)\n\
         failed:      1\n\
         skipped:     1\n\
         no-op:       0\n\
         dirty:       0\n\
         cancelled:   0\n\
         backlog:     0\n\
         rate:        17.1 KiB/s average\n\
         waiting for: -\n\
         \n\
         files (2):\n\
         PATH                    OUTCOME     SIZE  REASON\n\
         /srv/share/job22/b.bin  failed   1.0 MiB  west: 403 AccessDenied\n\
         /srv/share/job22/c\\xff  skipped  1.0 MiB  quota: gpair p1 is full\n"
    );
    assert_plain_progress(
        &run,
        22,
        Some("gpair: job 22 failed: 1 of 3 file(s) failed (see the reasons with `gpair job show 22`)"),
    );

    let run = fake
        .gpair(&["--output", "json", "job", "watch", "22"])
        .await;
    assert_eq!(run.code, 5, "{run:#?}");
    assert_eq!(run.json()["state"], "failed");
    assert_eq!(
        run.json()["files"][1]["path_b64"],
        "L3Nydi9zaGFyZS9qb2IyMi9j/w=="
    );
}

#[tokio::test]
async fn wait_for_a_cancelled_job_exits_6() {
    let fake = Fake::start().await;
    let run = fake
        .gpair(&["recall", "--wait", "/srv/share/cancel.bin"])
        .await;
    assert_eq!(run.code, 6, "{run:#?}");
    assert!(
        run.stdout.contains("\nstate:       cancelled\n"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("\ncancelled:   2\n"), "{run:#?}");
    assert_plain_progress(
        &run,
        23,
        Some("gpair: job 23 was cancelled (2 file(s) left as they were)"),
    );
    let run = fake.gpair(&["job", "watch", "23"]).await;
    assert_eq!(run.code, 6, "{run:#?}");
}

#[tokio::test]
async fn watch_shows_what_a_waiting_job_waits_for() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["job", "watch", "20"]).await;
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stdout.contains("\nstate:       done\n"), "{run:#?}");
    assert_plain_progress(&run, 20, None);
    // The job went quiet while waiting; its state still showed once 2 s had passed.
    assert!(
        run.stderr.contains(
            "\njob 20: waiting for gpeer west1: connect: connection refused, \
             1/3 files, 0 failed, 1.0/3.0 MiB\n"
        ),
        "{run:#?}"
    );
    assert_eq!(
        fake.calls(),
        vec![
            Call::WatchJob(20),
            Call::GetJob(pb::GetJobRequest {
                id: 20,
                files_limit: 0
            }),
        ]
    );
}

#[tokio::test]
async fn a_watch_that_ends_early_prints_the_report_and_exits_4() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["job", "watch", "24"]).await;
    assert_eq!(run.code, 4, "{run:#?}");
    assert!(run.stdout.contains("\nstate:       running\n"), "{run:#?}");
    assert_plain_progress(
        &run,
        24,
        Some(
            "gpair: the backend stopped reporting on job 24 while it was running \
             (follow it again with `gpair job watch 24`)",
        ),
    );
}

#[tokio::test]
async fn a_broken_watch_exits_3_and_says_the_job_goes_on() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["job", "watch", "26"]).await;
    assert_eq!(run.code, 3, "{run:#?}");
    assert_eq!(run.stdout, "");
    assert_plain_progress(
        &run,
        26,
        Some(
            "gpair: the backend is shutting down (job 26 was not stopped by this; \
             follow it again with `gpair job watch 26`)",
        ),
    );
    fake.gpair(&["job", "watch", "404"])
        .await
        .assert_error(1, "gpair: job 404 does not exist (see `gpair job ls`)");
}

#[tokio::test]
async fn ctrl_c_stops_waiting_not_the_job() {
    let fake = Fake::start().await;
    let child = gpair(&[
        "--backend",
        fake.socket.to_str().expect("utf-8"),
        "job",
        "watch",
        "25",
    ])
    .env_clear_gpair()
    .cmd
    .spawn()
    .expect("start gpair");
    let pid = child.id().expect("pid").to_string();
    // The CLI takes SIGINT over before it opens the watch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !fake.calls().contains(&Call::WatchJob(25)) {
        assert!(tokio::time::Instant::now() < deadline, "no WatchJob call");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("gpair stops within 30s")
        .expect("gpair output");
    assert_eq!(out.status.code(), Some(130), "{out:#?}");
    assert_eq!(out.stdout, b"");
    let stderr = String::from_utf8(out.stderr).expect("utf-8");
    assert!(
        stderr.ends_with(
            "gpair: stopped waiting for job 25; it goes on in the backend \
             (follow it with `gpair job watch 25`, stop it with `gpair job cancel 25`)\n"
        ),
        "{stderr}"
    );
    assert!(!fake.calls().contains(&Call::CancelJob(25)));
}

// ---------------------------------------------------------------- jobs

#[tokio::test]
async fn job_ls_table_and_json() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["job", "ls"]).await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "ID  KIND     STATE   CREATED               FILES            BYTES  FAILED\n\
         22  migrate  failed  2024-05-01T12:00:00Z    3/3  1.0 MiB/3.0 MiB       1\n\
         21  migrate  done    2024-05-01T12:00:00Z    3/3  2.0 MiB/3.0 MiB       0\n"
    );
    let run = fake
        .gpair(&["job", "ls", "--limit", "5", "--output", "json"])
        .await;
    run.assert_ok();
    let j = run.json();
    assert_eq!(j.as_array().map(Vec::len), Some(2));
    assert_eq!(j[0]["id"], 22);
    assert_eq!(j[0]["state"], "failed");
    assert_eq!(j[1]["files_noop"], 1);
    assert_eq!(fake.calls(), vec![Call::ListJobs(0), Call::ListJobs(5)]);
}

#[tokio::test]
async fn job_show_lists_files_and_says_when_cut_short() {
    let fake = Fake::start().await;
    let run = fake
        .gpair(&["job", "show", "22", "--files-limit", "1"])
        .await;
    run.assert_ok();
    assert!(
        run.stdout.ends_with(
            "\nfiles (showing 1 of 2; raise --files-limit to see more):\n\
             PATH                    OUTCOME     SIZE  REASON\n\
             /srv/share/job22/b.bin  failed   1.0 MiB  west: 403 AccessDenied\n"
        ),
        "{}",
        run.stdout
    );
    let run = fake.gpair(&["job", "show", "21"]).await;
    run.assert_ok();
    assert_eq!(run.stdout, REPORT_21);
    let run = fake.gpair(&["--output", "json", "job", "show", "22"]).await;
    run.assert_ok();
    assert_eq!(
        run.json()["files"][0],
        json!({
            "path": "/srv/share/job22/b.bin",
            "path_b64": "L3Nydi9zaGFyZS9qb2IyMi9iLmJpbg==",
            "outcome": "failed",
            "reason": "west: 403 AccessDenied",
            "bytes": MIB,
            "at_ms": T0 + 30_000,
        })
    );
    assert_eq!(run.json()["files_truncated"], false);
    fake.gpair(&["job", "show", "99"])
        .await
        .assert_error(1, "gpair: job 99 does not exist (see `gpair job ls`)");
    assert_eq!(
        fake.calls(),
        vec![
            Call::GetJob(pb::GetJobRequest {
                id: 22,
                files_limit: 1
            }),
            Call::GetJob(pb::GetJobRequest {
                id: 21,
                files_limit: 0
            }),
            Call::GetJob(pb::GetJobRequest {
                id: 22,
                files_limit: 0
            }),
            Call::GetJob(pb::GetJobRequest {
                id: 99,
                files_limit: 0
            }),
        ]
    );
}

#[tokio::test]
async fn job_cancel() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["job", "cancel", "25"]).await;
    run.assert_ok();
    assert!(
        run.stdout.starts_with(
            "cancelling job 25: files in flight finish or roll back first \
             (follow it with `gpair job watch 25`)\njob:         25\n"
        ),
        "{}",
        run.stdout
    );
    let run = fake.gpair(&["job", "cancel", "23"]).await;
    run.assert_ok();
    assert!(
        run.stdout.starts_with("cancelled job 23\n"),
        "{}",
        run.stdout
    );
    let run = fake.gpair(&["job", "cancel", "21"]).await;
    run.assert_ok();
    assert!(
        run.stdout
            .starts_with("job 21 had already finished (done); nothing to cancel\n"),
        "{}",
        run.stdout
    );
    let run = fake
        .gpair(&["--output", "json", "job", "cancel", "23"])
        .await;
    run.assert_ok();
    assert_eq!(run.json()["state"], "cancelled");
    fake.gpair(&["job", "cancel", "7"])
        .await
        .assert_error(1, "gpair: job 7 does not exist (see `gpair job ls`)");
    assert_eq!(
        fake.calls(),
        vec![
            Call::CancelJob(25),
            Call::CancelJob(23),
            Call::CancelJob(21),
            Call::CancelJob(23),
            Call::CancelJob(7),
        ]
    );
}

// ---------------------------------------------------------------- quotas

#[tokio::test]
async fn quota_set_sends_only_the_limits_given() {
    let fake = Fake::start().await;
    let run = fake
        .gpair(&["quota", "set", "p1", "--max-bytes", "20G"])
        .await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "set the quota of gpair \"p1\"\n\
         NAME    USED-BYTES/MAX  USED-FILES/MAX  RESERVED\n\
         p1    3.0 MiB/20.0 GiB          3/none  1.0 MiB in 1 file(s)\n"
    );
    let run = fake
        .gpair(&[
            "--output",
            "json",
            "quota",
            "set",
            "p1",
            "--max-files",
            "1000",
            "--max-bytes",
            "none",
        ])
        .await;
    run.assert_ok();
    assert_eq!(
        run.json(),
        json!({
            "name": "p1",
            "max_bytes": 0,
            "max_files": 1000,
            "used_bytes": 3 * MIB,
            "used_files": 3,
            "reserved_bytes": MIB,
            "reserved_files": 1,
        })
    );
    fake.gpair(&[
        "quota",
        "set",
        "p1",
        "--max-bytes",
        "512KiB",
        "--max-files",
        "0",
    ])
    .await
    .assert_ok();
    fake.gpair(&["quota", "set", "nope", "--max-files", "1"])
        .await
        .assert_error(1, "gpair: gpair \"nope\" does not exist (see `gpair ls`)");
    assert_eq!(
        fake.calls(),
        vec![
            Call::SetQuota(pb::SetQuotaRequest {
                name: "p1".into(),
                max_bytes: Some(20 << 30),
                max_files: None,
            }),
            Call::SetQuota(pb::SetQuotaRequest {
                name: "p1".into(),
                max_bytes: Some(0),
                max_files: Some(1000),
            }),
            Call::SetQuota(pb::SetQuotaRequest {
                name: "p1".into(),
                max_bytes: Some(512 << 10),
                max_files: Some(0),
            }),
            Call::SetQuota(pb::SetQuotaRequest {
                name: "nope".into(),
                max_bytes: None,
                max_files: Some(1),
            }),
        ]
    );
}

#[tokio::test]
async fn quota_set_refuses_bad_values() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["quota", "set", "p1"]).await;
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("--max-bytes"), "{run:#?}");
    fake.gpair(&["quota", "set", "p1", "--max-bytes", "1.5G"])
        .await
        .assert_error(
            2,
            "gpair: --max-bytes: \"1.5G\": use a whole number, e.g. 1536M rather than 1.5G",
        );
    fake.gpair(&["quota", "set", "p1", "--max-bytes", "10GB"])
        .await
        .assert_error(
            2,
            "gpair: --max-bytes: \"10GB\": sizes are powers of 1024; write 10G or 10GiB",
        );
    fake.gpair(&["quota", "set", "p1", "--max-bytes", "lots"])
        .await
        .assert_error(
            2,
            "gpair: --max-bytes: \"lots\" is not a size (use bytes or a whole number with K, M, G, T (or KiB, MiB, GiB, TiB), or none for no limit)",
        );
    fake.gpair(&["quota", "set", "p1", "--max-bytes", "99999999T"])
        .await
        .assert_error(
            2,
            "gpair: --max-bytes: \"99999999T\" is too large (at most 16 EiB)",
        );
    fake.gpair(&["quota", "set", "p1", "--max-bytes", "1G", "--max-files=-1"])
        .await
        .assert_error(
            2,
            "gpair: --max-files: \"-1\" is not a number of files (a whole number, or none for no limit)",
        );
    fake.gpair(&["quota", "set", "p/1", "--max-files", "1"])
        .await
        .assert_error(
            2,
            "gpair: NAME: '/' is not allowed in \"p/1\" (use letters, digits, '_', '.', '-')",
        );
    assert_eq!(fake.calls(), vec![]);
}

#[tokio::test]
async fn quota_show_one_and_all() {
    let fake = Fake::start().await;
    let run = fake.gpair(&["quota", "show"]).await;
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "NAME    USED-BYTES/MAX  USED-FILES/MAX  RESERVED\n\
         p1    3.0 MiB/10.0 GiB          3/none  1.0 MiB in 1 file(s)\n\
         p2            0 B/none          0/5000  -\n"
    );
    let run = fake
        .gpair(&["quota", "show", "p2", "--output", "json"])
        .await;
    run.assert_ok();
    assert_eq!(
        run.json(),
        json!([{
            "name": "p2",
            "max_bytes": 0,
            "max_files": 5000,
            "used_bytes": 0,
            "used_files": 0,
            "reserved_bytes": 0,
            "reserved_files": 0,
        }])
    );
    fake.gpair(&["quota", "show", "nope"])
        .await
        .assert_error(1, "gpair: gpair \"nope\" does not exist (see `gpair ls`)");
    assert_eq!(
        fake.calls(),
        vec![
            Call::GetQuotas(String::new()),
            Call::GetQuotas("p2".into()),
            Call::GetQuotas("nope".into()),
        ]
    );
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
    assert!(run.stdout.contains("5  a job waited for"), "{}", run.stdout);
    assert!(run.stdout.contains("GPAIR_BACKEND"));
    let run = gpair(&["gpeer", "add", "--help"])
        .env_clear_gpair()
        .run()
        .await;
    run.assert_ok();
    assert!(run.stdout.contains("--secret-key-file"));
}
