//! The gRPC surface: the admin API (`gpair` CLI) and change notifications (mount clients).
//! Every request is validated into domain values on receipt; a bad field gets
//! INVALID_ARGUMENT naming it. Errors map to `tonic::Status` here and nowhere else.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use gpair_proto::{now_ms, pb};
use tonic::{Request, Response, Status};

use crate::catalog::CF_REGISTRY;
use crate::registry::{
    self, GpairRecord, GpairState, GpeerRecord, ReadPolicy, GPAIR_PREFIX, GPEER_PREFIX,
};
use crate::sync::{AttrOp, Engine, GpairStats, Op, SETTLE_MS};
use crate::tier::job::{JobKind, JobRt, JobState, Outcome};
use crate::tier::{FileState, JobFiles, TierError, TierState, Tiering};
use crate::west::{CheckStage, Dialect, GpeerConn};

pub struct AdminService {
    pub engine: Arc<Engine>,
    pub tiering: Arc<Tiering>,
    pub cluster_id: String,
    pub started: Instant,
    /// Serializes registry changes (add/remove/bind/unbind).
    pub registry_lock: tokio::sync::Mutex<()>,
}

fn invalid(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal(e.to_string())
}

fn registry_key(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

fn dialect_pb(d: Dialect) -> i32 {
    match d {
        Dialect::Gateway => pb::Dialect::Gateway as i32,
        Dialect::S3 => pb::Dialect::S3 as i32,
    }
}

fn stage_pb(s: CheckStage) -> pb::CheckStage {
    match s {
        CheckStage::Dns => pb::CheckStage::Dns,
        CheckStage::Connect => pb::CheckStage::Connect,
        CheckStage::Auth => pb::CheckStage::Auth,
        CheckStage::Bucket => pb::CheckStage::Bucket,
        CheckStage::Protocol => pb::CheckStage::Protocol,
    }
}

fn state_pb(s: GpairState) -> i32 {
    match s {
        GpairState::InitialSync => pb::GpairState::InitialSync as i32,
        GpairState::Active => pb::GpairState::Active as i32,
        GpairState::Unbinding => pb::GpairState::Unbinding as i32,
    }
}

impl AdminService {
    fn gpeer_pb(&self, rec: &GpeerRecord) -> pb::Gpeer {
        let h = self.engine.gpeer_health(&rec.name).unwrap_or_default();
        let gpairs = self
            .engine
            .gpair_records()
            .iter()
            .filter(|(g, _)| g.gpeer == rec.name)
            .count() as u32;
        let (outbox_pending, migration_pending) = self.gpeer_queued(&rec.name);
        pb::Gpeer {
            name: rec.name.clone(),
            cluster_id: rec.cluster_id.clone(),
            endpoint: rec.conn.endpoint.clone(),
            access_key: rec.conn.access_key.clone(),
            region: rec.conn.region.clone(),
            dialect: dialect_pb(rec.conn.dialect),
            outbox_pending,
            migration_pending,
            health: Some(pb::Health {
                state: if h.is_down() {
                    pb::HealthState::Down as i32
                } else if h.is_retrying() {
                    pb::HealthState::Retrying as i32
                } else {
                    pb::HealthState::Healthy as i32
                },
                since_ms: h.since_ms,
                last_error_class: h.last_error_class.to_owned(),
                consecutive_failures: h.consecutive_failures,
                last_error: h.last_error.clone(),
                last_error_at_ms: h.last_error_at_ms,
                next_retry_at_ms: if h.is_retrying() {
                    h.paused_until_ms
                } else {
                    0
                },
                last_success_at_ms: h.last_success_at_ms,
            }),
            created_at_ms: rec.created_at_ms,
            gpairs,
        }
    }

    /// Work queued for a gpeer: (outbox records of its gpairs, files still pending in
    /// unfinished jobs that touch its gpairs).
    fn gpeer_queued(&self, gpeer: &str) -> (u64, u64) {
        let gpairs: Vec<String> = self
            .engine
            .gpair_records()
            .into_iter()
            .filter(|(g, _)| g.gpeer == gpeer)
            .map(|(g, _)| g.name)
            .collect();
        let outbox = gpairs.iter().map(|g| self.engine.queue_counts(g).0).sum();
        let migration = self
            .tiering
            .jobs(usize::MAX)
            .iter()
            .filter_map(|rt| {
                let rec = rt.record();
                if rec.state.finished() || !rec.gpairs.iter().any(|g| gpairs.contains(g)) {
                    return None;
                }
                Some(
                    rec.files_total
                        .saturating_sub(rt.counters().finished_files()),
                )
            })
            .sum();
        (outbox, migration)
    }

    fn gpair_pb(&self, rec: &GpairRecord, stats: &GpairStats) -> pb::Gpair {
        let (pending, failing) = self.engine.queue_counts(&rec.name);
        pb::Gpair {
            name: rec.name.clone(),
            gpeer: rec.gpeer.clone(),
            local_path: rec.local_path.display().to_string(),
            remote_bucket: rec.bucket.clone(),
            remote_prefix: rec.prefix.clone(),
            gpair_value: rec.gpair_value.clone(),
            state: state_pb(rec.state),
            created_at_ms: rec.created_at_ms,
            entries: stats.entries.load(Ordering::Relaxed),
            pending,
            failing,
            offloaded: self.engine.quotas.usage(&rec.name).used_files,
            retain_deleted_days: rec.retain_deleted_days,
            read_policy: read_policy_pb(rec.read_policy) as i32,
            recall_after_reads: rec.recall_after_reads,
        }
    }

    fn find_gpeer(&self, name: &str) -> Result<GpeerRecord, Status> {
        self.engine
            .gpeer_records()
            .into_iter()
            .find(|g| g.name == name)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "gpeer {name:?} does not exist (see `gpair gpeer ls`)"
                ))
            })
    }

    fn find_gpair(&self, name: &str) -> Result<(GpairRecord, Arc<GpairStats>), Status> {
        // A missing or malformed name is the caller's mistake, not an unknown gpair.
        registry::check_name("gpair name", name).map_err(invalid)?;
        self.engine.gpair(name).ok_or_else(|| {
            Status::not_found(format!("gpair {name:?} does not exist (see `gpair ls`)"))
        })
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    #[tracing::instrument(skip_all, fields(name = %req.get_ref().name))]
    async fn add_gpeer(
        &self,
        req: Request<pb::AddGpeerRequest>,
    ) -> Result<Response<pb::Gpeer>, Status> {
        let r = req.into_inner();
        registry::check_name("gpeer name", &r.name).map_err(invalid)?;
        registry::check_endpoint(&r.endpoint).map_err(invalid)?;
        registry::check_name("cluster id", &r.cluster_id).map_err(invalid)?;
        if r.access_key.is_empty() || r.access_key.len() > 256 {
            return Err(invalid("access key must be 1-256 characters"));
        }
        if r.secret_key.is_empty() || r.secret_key.len() > 256 {
            return Err(invalid("secret key must be 1-256 characters"));
        }
        let region = if r.region.is_empty() {
            "us-east-1".to_string()
        } else {
            r.region
        };
        if !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
            || region.len() > 64
        {
            return Err(invalid(format!(
                "region {region:?} must be letters, digits and '-'"
            )));
        }
        let dialect = match pb::Dialect::try_from(r.dialect) {
            Ok(pb::Dialect::Unspecified | pb::Dialect::Gateway) => Dialect::Gateway,
            Ok(pb::Dialect::S3) => Dialect::S3,
            Err(_) => {
                return Err(invalid(format!(
                    "dialect {} is not gateway or s3",
                    r.dialect
                )))
            }
        };
        let conn = GpeerConn {
            endpoint: r.endpoint.trim_end_matches('/').into(),
            access_key: r.access_key,
            secret_key: r.secret_key,
            region,
            dialect,
        };
        let _guard = self.registry_lock.lock().await;
        if self.engine.gpeer_records().iter().any(|g| g.name == r.name) {
            return Err(Status::already_exists(format!(
                "gpeer {:?} already exists",
                r.name
            )));
        }
        if !r.no_check {
            let store = self.engine.connect(&conn);
            if let Err(f) = store.check(None).await {
                return Err(Status::failed_precondition(format!(
                    "gpeer {:?}: check of {} failed at the {:?} step: {} (fix it, or pass --no-check to save it anyway)",
                    r.name, conn.endpoint, f.stage, f.message
                )));
            }
        }
        let rec = GpeerRecord {
            name: r.name.clone(),
            cluster_id: r.cluster_id,
            conn,
            created_at_ms: now_ms(),
        };
        self.engine
            .catalog
            .put(CF_REGISTRY, &registry_key(GPEER_PREFIX, &rec.name), &rec)
            .map_err(internal)?;
        self.engine.add_gpeer(rec.clone());
        tracing::info!(
            gpeer = rec.name,
            endpoint = rec.conn.endpoint,
            "gpeer added"
        );
        Ok(Response::new(self.gpeer_pb(&rec)))
    }

    async fn list_gpeers(
        &self,
        _req: Request<pb::ListGpeersRequest>,
    ) -> Result<Response<pb::ListGpeersResponse>, Status> {
        let gpeers = self
            .engine
            .gpeer_records()
            .iter()
            .map(|g| self.gpeer_pb(g))
            .collect();
        Ok(Response::new(pb::ListGpeersResponse { gpeers }))
    }

    async fn get_gpeer(
        &self,
        req: Request<pb::GetGpeerRequest>,
    ) -> Result<Response<pb::Gpeer>, Status> {
        let rec = self.find_gpeer(&req.into_inner().name)?;
        Ok(Response::new(self.gpeer_pb(&rec)))
    }

    async fn check_gpeer(
        &self,
        req: Request<pb::GetGpeerRequest>,
    ) -> Result<Response<pb::CheckGpeerResponse>, Status> {
        let rec = self.find_gpeer(&req.into_inner().name)?;
        let store = self.engine.connect(&rec.conn);
        let started = Instant::now();
        let result = store.check(None).await;
        let latency_us = started.elapsed().as_micros() as u64;
        Ok(Response::new(match result {
            Ok(()) => pb::CheckGpeerResponse {
                stage: pb::CheckStage::Ok as i32,
                message: "ok".into(),
                latency_us,
            },
            Err(f) => pb::CheckGpeerResponse {
                stage: stage_pb(f.stage) as i32,
                message: f.message,
                latency_us,
            },
        }))
    }

    async fn remove_gpeer(
        &self,
        req: Request<pb::RemoveGpeerRequest>,
    ) -> Result<Response<pb::RemoveGpeerResponse>, Status> {
        let name = req.into_inner().name;
        let _guard = self.registry_lock.lock().await;
        self.find_gpeer(&name)?;
        let bound: Vec<String> = self
            .engine
            .gpair_records()
            .into_iter()
            .filter(|(g, _)| g.gpeer == name)
            .map(|(g, _)| g.name)
            .collect();
        if !bound.is_empty() {
            return Err(Status::failed_precondition(format!(
                "gpeer {name:?} is used by gpair(s) {}; unbind them first",
                bound.join(", ")
            )));
        }
        self.engine
            .catalog
            .delete(CF_REGISTRY, &registry_key(GPEER_PREFIX, &name))
            .map_err(internal)?;
        self.engine.remove_gpeer(&name);
        Ok(Response::new(pb::RemoveGpeerResponse {}))
    }

    #[tracing::instrument(skip_all, fields(name = %req.get_ref().name))]
    async fn bind(&self, req: Request<pb::BindRequest>) -> Result<Response<pb::Gpair>, Status> {
        let r = req.into_inner();
        registry::check_name("gpair name", &r.name).map_err(invalid)?;
        let (bucket, prefix) = registry::parse_remote(&r.remote).map_err(invalid)?;
        if r.retain_deleted_days > MAX_RETAIN_DAYS {
            return Err(invalid(format!(
                "retain_deleted_days {} is more than {MAX_RETAIN_DAYS}",
                r.retain_deleted_days
            )));
        }
        let read_policy = match pb::ReadPolicy::try_from(r.read_policy) {
            Ok(pb::ReadPolicy::Unspecified | pb::ReadPolicy::Stream) => ReadPolicy::Stream,
            Ok(pb::ReadPolicy::Recall) => ReadPolicy::Recall,
            Err(_) => return Err(invalid(format!("read_policy {} is unknown", r.read_policy))),
        };
        if r.local_path.is_empty() {
            return Err(invalid("local path is empty"));
        }
        let local = PathBuf::from(&r.local_path);
        if !local.is_absolute() {
            return Err(invalid(format!(
                "local path {} must be absolute",
                local.display()
            )));
        }
        let _guard = self.registry_lock.lock().await;
        if self.engine.gpair(&r.name).is_some() {
            return Err(Status::already_exists(format!(
                "gpair {:?} already exists",
                r.name
            )));
        }
        let gpeer = self.find_gpeer(&r.gpeer)?;
        let canonical = match std::fs::canonicalize(&local) {
            Ok(p) if p.is_dir() => p,
            Ok(_) => {
                return Err(Status::failed_precondition(format!(
                    "gpair {:?}: local share path {} is not a directory",
                    r.name,
                    local.display()
                )))
            }
            Err(e) => {
                return Err(Status::failed_precondition(format!(
                    "gpair {:?}: local share path {} does not exist ({e})",
                    r.name,
                    local.display()
                )))
            }
        };
        if canonical.to_str().is_none() {
            return Err(invalid(format!(
                "local share path {} is not UTF-8",
                canonical.display()
            )));
        }
        let bound = self.engine.gpair_records();
        registry::check_no_overlap(
            &canonical,
            bound
                .iter()
                .map(|(g, _)| (g.name.as_str(), g.local_path.as_path())),
        )
        .map_err(|e| Status::failed_precondition(format!("gpair {:?}: {e}", r.name)))?;
        let west = self.engine.connect(&gpeer.conn);
        let exists = west.bucket_exists(&bucket).await.map_err(|e| {
            Status::unavailable(format!(
                "gpair {:?}: cannot reach gpeer {:?} to check bucket {bucket}: {e}",
                r.name, gpeer.name
            ))
        })?;
        if !exists {
            if r.create_bucket {
                west.create_bucket(&bucket).await.map_err(|e| {
                    Status::failed_precondition(format!(
                        "gpair {:?}: cannot create bucket {bucket}: {e}",
                        r.name
                    ))
                })?;
            } else {
                return Err(Status::failed_precondition(format!(
                    "gpair {:?}: bucket {bucket} does not exist on gpeer {:?} (create it, or pass --create-bucket)",
                    r.name, gpeer.name
                )));
            }
        }
        let rec = GpairRecord {
            gpair_value: GpairRecord::value_for(
                &self.cluster_id,
                &canonical,
                &gpeer.cluster_id,
                &bucket,
                &prefix,
            ),
            name: r.name.clone(),
            gpeer: gpeer.name.clone(),
            local_path: canonical,
            bucket,
            prefix,
            state: GpairState::InitialSync,
            created_at_ms: now_ms(),
            quota: Default::default(),
            retain_deleted_days: r.retain_deleted_days,
            read_policy,
            recall_after_reads: r.recall_after_reads,
            policy: None,
        };
        self.engine
            .catalog
            .put(CF_REGISTRY, &registry_key(GPAIR_PREFIX, &rec.name), &rec)
            .map_err(internal)?;
        self.engine.start_gpair(rec.clone());
        tracing::info!(gpair = rec.name, value = rec.gpair_value, "gpair bound");
        let (rec, stats) = self.find_gpair(&rec.name)?;
        Ok(Response::new(self.gpair_pb(&rec, &stats)))
    }

    async fn list_gpairs(
        &self,
        _req: Request<pb::ListGpairsRequest>,
    ) -> Result<Response<pb::ListGpairsResponse>, Status> {
        let gpairs = self
            .engine
            .gpair_records()
            .iter()
            .map(|(r, s)| self.gpair_pb(r, s))
            .collect();
        Ok(Response::new(pb::ListGpairsResponse { gpairs }))
    }

    async fn get_gpair(
        &self,
        req: Request<pb::GetGpairRequest>,
    ) -> Result<Response<pb::Gpair>, Status> {
        let (rec, stats) = self.find_gpair(&req.into_inner().name)?;
        Ok(Response::new(self.gpair_pb(&rec, &stats)))
    }

    #[tracing::instrument(skip_all, fields(name = %req.get_ref().name))]
    async fn unbind(
        &self,
        req: Request<pb::UnbindRequest>,
    ) -> Result<Response<pb::UnbindResponse>, Status> {
        let r = req.into_inner();
        let _guard = self.registry_lock.lock().await;
        let (mut rec, _) = self.find_gpair(&r.name)?;
        let offloaded = self.engine.quotas.usage(&rec.name).used_files;
        if offloaded > 0 && !r.force {
            return Err(Status::failed_precondition(format!(
                "gpair {:?} still has {} offloaded file(s) whose data lives on west; recall them first, \
                 or pass --force to unbind and leave their data on west",
                r.name, offloaded
            )));
        }
        rec.state = GpairState::Unbinding;
        let key = registry_key(GPAIR_PREFIX, &rec.name);
        self.engine
            .catalog
            .put(CF_REGISTRY, &key, &rec)
            .map_err(internal)?;
        // Stops the watcher and the scan and drops queued work, without waiting for west.
        self.engine.stop_gpair(&rec.name).await.map_err(internal)?;
        self.engine
            .catalog
            .delete(CF_REGISTRY, &key)
            .map_err(internal)?;
        tracing::info!(gpair = rec.name, "gpair unbound");
        Ok(Response::new(pb::UnbindResponse {
            offloaded_left_on_west: offloaded,
        }))
    }

    async fn sync_status(
        &self,
        req: Request<pb::SyncStatusRequest>,
    ) -> Result<Response<pb::SyncStatusResponse>, Status> {
        let name = req.into_inner().name;
        let all = if name.is_empty() {
            self.engine.gpair_records()
        } else {
            vec![self.find_gpair(&name)?]
        };
        let gpairs = all
            .iter()
            .map(|(rec, stats)| {
                let (pending, failing) = self.engine.queue_counts(&rec.name);
                let failures = self
                    .engine
                    .failures(&rec.name, 100)
                    .into_iter()
                    .map(|(path, r)| pb::FailingEntry {
                        path: String::from_utf8_lossy(&path).into_owned(),
                        error: r.last_error.unwrap_or_default(),
                        attempts: r.attempts,
                        next_retry_at_ms: r.next_due_ms,
                        op: match r.op {
                            Op::Put => "put".into(),
                            Op::Delete { .. } => "delete".into(),
                            Op::Rename { .. } => "rename".into(),
                            Op::SetAttr { attr: AttrOp::Ltr } => "setattr-ltr".into(),
                            Op::SetAttr { attr: AttrOp::Rtl } => "setattr-rtl".into(),
                        },
                    })
                    .collect();
                let health = self.engine.gpeer_health(&rec.gpeer).unwrap_or_default();
                pb::GpairSync {
                    name: rec.name.clone(),
                    state: state_pb(rec.state),
                    entries: stats.entries.load(Ordering::Relaxed),
                    pending,
                    failing,
                    applied: stats.applied.load(Ordering::Relaxed),
                    last_scan_started_at_ms: stats.last_scan_started_ms.load(Ordering::Relaxed),
                    last_scan_finished_at_ms: stats.last_scan_finished_ms.load(Ordering::Relaxed),
                    last_scan_entries: stats.last_scan_entries.load(Ordering::Relaxed),
                    failures,
                    initial_sync_done: rec.state != GpairState::InitialSync,
                    watcher_active: stats.watcher_active.load(Ordering::Relaxed),
                    gpeer_health: if health.is_retrying() {
                        format!("retrying: {}", health.last_error)
                    } else {
                        "healthy".into()
                    },
                }
            })
            .collect();
        Ok(Response::new(pb::SyncStatusResponse { gpairs }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let (pending, failing) = self.engine.total_counts();
        Ok(Response::new(pb::StatusResponse {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: self.started.elapsed().as_secs(),
            cluster_id: self.cluster_id.clone(),
            gpeers: self.engine.gpeer_records().len() as u32,
            gpairs: self.engine.gpair_records().len() as u32,
            outbox_pending: pending,
            outbox_failing: failing,
            catalog_path: self.engine.catalog.path().display().to_string(),
            scans: self
                .tiering
                .scans
                .list(
                    &self
                        .engine
                        .gpair_records()
                        .into_iter()
                        .map(|(r, _)| r.name)
                        .collect::<Vec<_>>(),
                )
                .into_iter()
                .map(|s| pb::PolicyScan {
                    gpair: s.gpair,
                    running: s.finished_ms == 0,
                    started_at_ms: s.started_ms,
                    finished_at_ms: s.finished_ms,
                    dirs: s.dirs,
                    files: s.files,
                    candidates: s.candidates,
                    candidate_bytes: s.candidate_bytes,
                    trigger: s.trigger.to_owned(),
                })
                .collect(),
        }))
    }

    async fn migrate(&self, req: Request<pb::MigrateRequest>) -> Result<Response<pb::Job>, Status> {
        self.start_job(JobKind::Migrate, req.into_inner()).await
    }

    async fn recall(&self, req: Request<pb::MigrateRequest>) -> Result<Response<pb::Job>, Status> {
        self.start_job(JobKind::Recall, req.into_inner()).await
    }

    async fn state(
        &self,
        req: Request<pb::StateRequest>,
    ) -> Result<Response<pb::StateResponse>, Status> {
        let r = req.into_inner();
        if r.paths.len() > MAX_PATHS {
            return Err(invalid(format!(
                "{} paths in one request; the limit is {MAX_PATHS}",
                r.paths.len()
            )));
        }
        let paths = r
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| abs_path_field(&format!("paths[{i}]"), p))
            .collect::<Result<Vec<_>, _>>()?;
        let tiering = Arc::clone(&self.tiering);
        let states = tokio::task::spawn_blocking(move || {
            paths.iter().map(|p| tiering.state(p)).collect::<Vec<_>>()
        })
        .await
        .map_err(internal)?;
        Ok(Response::new(pb::StateResponse {
            files: states.into_iter().map(file_state_pb).collect(),
        }))
    }

    async fn list_jobs(
        &self,
        req: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let limit = match req.into_inner().limit {
            0 => 50,
            n => n as usize,
        };
        Ok(Response::new(pb::ListJobsResponse {
            jobs: self
                .tiering
                .jobs(limit)
                .iter()
                .map(|j| job_pb(j, None))
                .collect(),
        }))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let r = req.into_inner();
        let rt = self.find_job(r.id)?;
        let limit = match r.files_limit {
            0 => 1000,
            n => n as usize,
        };
        let files = self.tiering.job_files(r.id, limit);
        Ok(Response::new(job_pb(&rt, Some(files))))
    }

    type WatchJobStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::Job, Status>> + Send + 'static>>;

    async fn watch_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let r = req.into_inner();
        let rt = self.find_job(r.id)?;
        let tiering = Arc::clone(&self.tiering);
        let mut changed = rt.changed.subscribe();
        let stream = async_stream::stream! {
            loop {
                let finished = rt.record().state.finished();
                if finished {
                    let files = tiering.job_files(r.id, 1000);
                    yield Ok(job_pb(&rt, Some(files)));
                    break;
                }
                yield Ok(job_pb(&rt, None));
                // At most a few messages per second, and one at least every 2 s.
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), changed.changed()).await;
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_job(
        &self,
        req: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let id = req.into_inner().id;
        let rt = self
            .tiering
            .cancel_job(id)
            .ok_or_else(|| Status::not_found(format!("no job {id}")))?;
        Ok(Response::new(job_pb(&rt, None)))
    }

    async fn set_quota(
        &self,
        req: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::Quota>, Status> {
        let r = req.into_inner();
        if r.max_bytes.is_none() && r.max_files.is_none() {
            return Err(invalid("give max_bytes and/or max_files (0 = no limit)"));
        }
        let _guard = self.registry_lock.lock().await;
        let (mut rec, _) = self.find_gpair(&r.name)?;
        if let Some(b) = r.max_bytes {
            rec.quota.max_bytes = b;
        }
        if let Some(f) = r.max_files {
            rec.quota.max_files = f;
        }
        self.engine
            .catalog
            .put(CF_REGISTRY, &registry_key(GPAIR_PREFIX, &rec.name), &rec)
            .map_err(internal)?;
        self.engine.set_gpair_record(rec.clone());
        tracing::info!(
            gpair = rec.name,
            max_bytes = rec.quota.max_bytes,
            max_files = rec.quota.max_files,
            "quota set"
        );
        Ok(Response::new(self.quota_pb(&rec)))
    }

    async fn get_quotas(
        &self,
        req: Request<pb::GetQuotasRequest>,
    ) -> Result<Response<pb::GetQuotasResponse>, Status> {
        let name = req.into_inner().name;
        let quotas = if name.is_empty() {
            self.engine
                .gpair_records()
                .iter()
                .map(|(rec, _)| self.quota_pb(rec))
                .collect()
        } else {
            let (rec, _) = self.find_gpair(&name)?;
            vec![self.quota_pb(&rec)]
        };
        Ok(Response::new(pb::GetQuotasResponse { quotas }))
    }

    async fn set_policy(
        &self,
        req: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let r = req.into_inner();
        let rules = if r.clear {
            None
        } else {
            let rules = rules_from_pb(r.rules.unwrap_or_default());
            rules.compile().map_err(invalid)?;
            Some(rules)
        };
        let _guard = self.registry_lock.lock().await;
        let (mut rec, _) = self.find_gpair(&r.name)?;
        rec.policy = rules;
        self.engine
            .catalog
            .put(CF_REGISTRY, &registry_key(GPAIR_PREFIX, &rec.name), &rec)
            .map_err(internal)?;
        self.engine.set_gpair_record(rec.clone());
        tracing::info!(gpair = rec.name, policy = ?rec.policy, "policy set");
        Ok(Response::new(policy_pb(&rec)))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::Policy>, Status> {
        let (rec, _) = self.find_gpair(&req.get_ref().name)?;
        Ok(Response::new(policy_pb(&rec)))
    }

    async fn explain(
        &self,
        req: Request<pb::ExplainRequest>,
    ) -> Result<Response<pb::Explanation>, Status> {
        let r = req.into_inner();
        let path = abs_path_field("path", &r.path)?;
        let e = crate::policy::explain::explain(&self.tiering, &path)
            .await
            .map_err(tier_status)?;
        Ok(Response::new(pb::Explanation {
            path: r.path,
            gpair: e.gpair,
            state: e.state.into(),
            verdict: e.verdict.into(),
            reason: e.reason,
            pinned_by: e
                .pinned_by
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            noatime: e.noatime,
            reads: e.reads,
            last_recall_at_ms: e.last_recall_ms,
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %req.get_ref().name))]
    async fn fsck(
        &self,
        req: Request<pb::FsckRequest>,
    ) -> Result<Response<pb::FsckResponse>, Status> {
        crate::fsck::serve(self, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_caps(
        &self,
        req: Request<pb::ListCapsRequest>,
    ) -> Result<Response<pb::ListCapsResponse>, Status> {
        crate::session::rpc::list_caps(&self.tiering, req.into_inner()).map(Response::new)
    }

    async fn list_sessions(
        &self,
        _: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        crate::session::rpc::list_sessions(&self.tiering).map(Response::new)
    }

    async fn evict_session(
        &self,
        req: Request<pb::EvictSessionRequest>,
    ) -> Result<Response<pb::EvictSessionResponse>, Status> {
        crate::session::rpc::evict_session(&self.tiering, req.into_inner()).map(Response::new)
    }

    async fn run_policy(
        &self,
        req: Request<pb::RunPolicyRequest>,
    ) -> Result<Response<pb::PolicyRun>, Status> {
        let r = req.into_inner();
        let (rec, _) = self.find_gpair(&r.name)?;
        let crate::policy::run::Run {
            plan,
            usage,
            job,
            scan_ms,
        } = crate::policy::run::run(
            &self.tiering,
            &rec,
            r.dry_run,
            crate::policy::run::Select::All,
            crate::policy::run::Trigger::Admin,
        )
        .await
        .map_err(tier_status)?;
        let (used, total) = usage.unwrap_or((0, 0));
        let show = if r.show == 0 { 20 } else { r.show as usize };
        Ok(Response::new(pb::PolicyRun {
            name: rec.name.clone(),
            dry_run: r.dry_run,
            scanned_files: plan.scanned_files,
            scanned_dirs: plan.scanned_dirs,
            candidate_files: plan.candidates.len() as u64,
            candidate_bytes: plan.candidate_bytes,
            candidates: plan
                .candidates
                .iter()
                .take(show)
                .map(|c| pb::PolicyCandidate {
                    path: std::os::unix::ffi::OsStrExt::as_bytes(c.path.as_os_str()).to_vec(),
                    size: c.size,
                    idle_secs: c.idle,
                    why: c.why.clone(),
                })
                .collect(),
            kept: plan
                .kept
                .iter()
                .map(|(reason, (files, bytes))| pb::KeptCount {
                    reason: reason.clone(),
                    files: *files,
                    bytes: *bytes,
                })
                .collect(),
            east_used_bytes: used,
            east_total_bytes: total,
            east_used_after_bytes: used.saturating_sub(plan.candidate_bytes),
            noatime: plan.noatime,
            job,
            scan_ms,
        }))
    }

    async fn pin(&self, req: Request<pb::PinRequest>) -> Result<Response<pb::PinResponse>, Status> {
        let r = req.into_inner();
        let path = abs_path_field("path", &r.path)?;
        let changed = crate::policy::explain::pin(&self.tiering, &path, r.unpin)
            .await
            .map_err(tier_status)?;
        Ok(Response::new(pb::PinResponse { changed }))
    }
}

/// Longest retention of deleted offloaded data (ten years).
const MAX_RETAIN_DAYS: u32 = 3650;

/// Most paths one request may name.
const MAX_PATHS: usize = 100_000;

/// An absolute east path from raw bytes, or INVALID_ARGUMENT naming the field.
fn abs_path_field(field: &str, raw: &[u8]) -> Result<PathBuf, Status> {
    abs_path(raw).map_err(|m| invalid(format!("{field} {m}")))
}

fn tier_status(e: TierError) -> Status {
    match e {
        TierError::Invalid(m) => Status::invalid_argument(m),
        TierError::NotFound(m) => Status::not_found(m),
        TierError::Precondition(m) => Status::failed_precondition(m),
        TierError::Unavailable(m) => Status::unavailable(m),
        e => internal(e),
    }
}

fn job_pb(rt: &JobRt, files: Option<JobFiles>) -> pb::Job {
    let r = rt.record();
    let c = rt.counters();
    let waiting = rt.waiting();
    let state = match r.state {
        JobState::Queued => pb::JobState::Queued,
        JobState::Running if !waiting.is_empty() => pb::JobState::Waiting,
        JobState::Running => pb::JobState::Running,
        JobState::Done => pb::JobState::Done,
        JobState::Failed => pb::JobState::Failed,
        JobState::Cancelled => pb::JobState::Cancelled,
    };
    let (files, truncated) = files.unwrap_or_default();
    pb::Job {
        id: r.id,
        kind: match r.kind {
            JobKind::Migrate => pb::JobKind::Migrate,
            JobKind::Recall => pb::JobKind::Recall,
        } as i32,
        state: state as i32,
        paths: r.paths.clone(),
        recursive: r.recursive,
        created_at_ms: r.created_ms,
        started_at_ms: r.started_ms,
        finished_at_ms: r.finished_ms,
        files_total: r.files_total,
        bytes_total: r.bytes_total,
        files_done: c.files_done,
        bytes_done: c.bytes_done,
        files_failed: c.failed,
        files_skipped: c.skipped,
        files_noop: c.noop,
        files_dirty: c.dirty,
        files_cancelled: c.cancelled,
        backlog: r.files_total.saturating_sub(c.finished_files()),
        bytes_per_sec: if r.state.finished() {
            let secs = (r.finished_ms - r.started_ms).max(1) as f64 / 1000.0;
            (c.bytes_done as f64 / secs) as u64
        } else {
            rt.rate()
        },
        waiting_for: waiting,
        files: files
            .into_iter()
            .map(|(path, f)| pb::JobFile {
                path,
                outcome: match f.outcome {
                    Outcome::Pending => pb::FileOutcome::Unspecified,
                    Outcome::Done => pb::FileOutcome::Done,
                    Outcome::Failed => pb::FileOutcome::Failed,
                    Outcome::Skipped => pb::FileOutcome::Skipped,
                    Outcome::Noop => pb::FileOutcome::Noop,
                    Outcome::Dirty => pb::FileOutcome::Dirty,
                    Outcome::Cancelled => pb::FileOutcome::Cancelled,
                } as i32,
                reason: f.reason,
                bytes: f.bytes,
                at_ms: f.at_ms,
            })
            .collect(),
        files_truncated: truncated,
        gpairs: r.gpairs.clone(),
        background: r.background,
        cancel_requested: rt.cancel.is_cancelled() && !r.state.finished(),
    }
}

fn file_state_pb(s: FileState) -> pb::FileState {
    pb::FileState {
        path: std::os::unix::ffi::OsStrExt::as_bytes(s.path.as_os_str()).to_vec(),
        state: match s.state {
            TierState::Local => pb::TierState::Local,
            TierState::Offloading => pb::TierState::Offloading,
            TierState::Remote => pb::TierState::Remote,
            TierState::Recalling => pb::TierState::Recalling,
            TierState::Dirty => pb::TierState::Dirty,
            TierState::Conflict => pb::TierState::Conflict,
            TierState::Unmanaged => pb::TierState::Unmanaged,
            TierState::Lost => pb::TierState::Lost,
        } as i32,
        gpair: s.gpair,
        west_key: s.west_key,
        size: s.size,
        checksum: s.checksum,
        detail: s.detail,
        offloaded_at_ms: s.offloaded_at_ms,
        job_id: s.job,
        blocks: s.blocks_bytes,
    }
}

impl AdminService {
    async fn start_job(
        &self,
        kind: JobKind,
        r: pb::MigrateRequest,
    ) -> Result<Response<pb::Job>, Status> {
        if r.paths.is_empty() {
            return Err(invalid("paths: give at least one path"));
        }
        if r.paths.len() > MAX_PATHS {
            return Err(invalid(format!(
                "{} paths in one request; the limit is {MAX_PATHS}",
                r.paths.len()
            )));
        }
        let paths = r
            .paths
            .iter()
            .enumerate()
            .map(|(i, p)| abs_path_field(&format!("paths[{i}]"), p))
            .collect::<Result<Vec<_>, _>>()?;
        let rt = if r.background {
            self.tiering
                .create_background_job(kind, paths, r.recursive)
                .await
        } else {
            self.tiering.create_job(kind, paths, r.recursive).await
        }
        .map_err(tier_status)?;
        let rec = rt.record();
        tracing::info!(
            job = rec.id,
            kind = kind.verb(),
            files = rec.files_total,
            bytes = rec.bytes_total,
            "job created"
        );
        Ok(Response::new(job_pb(&rt, None)))
    }

    fn find_job(&self, id: u64) -> Result<Arc<JobRt>, Status> {
        self.tiering
            .job(id)
            .ok_or_else(|| Status::not_found(format!("no job {id}")))
    }

    fn quota_pb(&self, rec: &GpairRecord) -> pb::Quota {
        let u = self.engine.quotas.usage(&rec.name);
        pb::Quota {
            name: rec.name.clone(),
            max_bytes: rec.quota.max_bytes,
            max_files: rec.quota.max_files,
            used_bytes: u.used_bytes,
            used_files: u.used_files,
            reserved_bytes: u.reserved_bytes,
            reserved_files: u.reserved_files,
        }
    }
}

pub struct ChangesService {
    pub engine: Arc<Engine>,
}

/// Most changes one notification may carry.
const MAX_CHANGES: usize = 10_000;

#[tonic::async_trait]
impl pb::changes_server::Changes for ChangesService {
    async fn notify(
        &self,
        req: Request<pb::NotifyRequest>,
    ) -> Result<Response<pb::NotifyResponse>, Status> {
        let r = req.into_inner();
        if r.changes.len() > MAX_CHANGES {
            return Err(invalid(format!(
                "{} changes in one notification; the limit is {MAX_CHANGES}",
                r.changes.len()
            )));
        }
        let mut changes = Vec::with_capacity(r.changes.len());
        for (i, c) in r.changes.iter().enumerate() {
            let kind = pb::ChangeKind::try_from(c.kind)
                .map_err(|_| invalid(format!("changes[{i}].kind {} is unknown", c.kind)))?;
            let path = abs_path(&c.path).map_err(|m| invalid(format!("changes[{i}].path {m}")))?;
            let new_path = if matches!(kind, pb::ChangeKind::Rename | pb::ChangeKind::Exchange) {
                Some(
                    abs_path(&c.new_path)
                        .map_err(|m| invalid(format!("changes[{i}].new_path {m}")))?,
                )
            } else {
                None
            };
            if kind == pb::ChangeKind::Unspecified {
                return Err(invalid(format!("changes[{i}].kind is missing")));
            }
            changes.push((kind, path, new_path));
        }
        let engine = Arc::clone(&self.engine);
        let (accepted, ignored) = tokio::task::spawn_blocking(move || {
            let (mut accepted, mut ignored) = (0u32, 0u32);
            for (kind, path, new_path) in changes {
                let queued = match (kind, new_path) {
                    (pb::ChangeKind::Rename, Some(to)) => {
                        match (engine.resolve(&path), engine.resolve(&to)) {
                            (Some((g1, from)), Some((g2, to_rel))) if g1 == g2 => {
                                let is_dir =
                                    std::fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir());
                                engine
                                    .enqueue(&g2, &to_rel, Op::Rename { from, is_dir }, SETTLE_MS)
                                    .is_ok()
                            }
                            (from, to_r) => {
                                let mut any = false;
                                if let Some((g, rel)) = from {
                                    any |= engine
                                        .enqueue(&g, &rel, Op::Delete { is_dir: false }, SETTLE_MS)
                                        .is_ok();
                                }
                                if let Some((g, rel)) = to_r {
                                    any |= engine.enqueue(&g, &rel, Op::Put, SETTLE_MS).is_ok();
                                }
                                any
                            }
                        }
                    }
                    // Both entries changed; their subtrees (when directories) converge at
                    // the next reconciliation scan (docs/mount.md).
                    (pb::ChangeKind::Exchange, Some(other)) => {
                        let mut any = false;
                        for p in [&path, &other] {
                            if let Some((g, rel)) = engine.resolve(p) {
                                any |= engine.enqueue(&g, &rel, Op::Put, SETTLE_MS).is_ok();
                            }
                        }
                        any
                    }
                    (pb::ChangeKind::Delete, _) => match engine.resolve(&path) {
                        Some((g, rel)) => engine
                            .enqueue(&g, &rel, Op::Delete { is_dir: false }, SETTLE_MS)
                            .is_ok(),
                        None => false,
                    },
                    _ => match engine.resolve(&path) {
                        Some((g, rel)) => engine.enqueue(&g, &rel, Op::Put, SETTLE_MS).is_ok(),
                        None => false,
                    },
                };
                if queued {
                    accepted += 1;
                } else {
                    ignored += 1;
                }
            }
            (accepted, ignored)
        })
        .await
        .map_err(internal)?;
        Ok(Response::new(pb::NotifyResponse { accepted, ignored }))
    }
}

/// The API of `gpair-mount` clients: sessions and read grants.
pub struct MountService {
    pub tiering: Arc<Tiering>,
    pub sessions: Arc<crate::session::Sessions>,
}

impl MountService {
    fn known(&self, id: &str) -> Result<(), Status> {
        if self.sessions.is_open(id, now_ms()) {
            Ok(())
        } else {
            Err(Status::not_found(format!(
                "mount session {id:?} is not open (expired, or the backend restarted); open a new one"
            )))
        }
    }
}

#[tonic::async_trait]
impl pb::mount_server::Mount for MountService {
    async fn open_session(
        &self,
        req: Request<pb::OpenSessionRequest>,
    ) -> Result<Response<pb::MountSession>, Status> {
        let r = req.into_inner();
        if r.client.is_empty() || r.client.len() > 256 {
            return Err(invalid("client must be 1..=256 bytes"));
        }
        let share = abs_path_field("share", &r.share)?;
        let mountpoint = abs_path_field("mountpoint", &r.mountpoint)?;
        let s = self
            .sessions
            .open(r.client, share, mountpoint, now_ms())
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        tracing::info!(session = s.id, client = s.client, share = %s.share.display(), mountpoint = %s.mountpoint.display(), "mount session opened");
        Ok(Response::new(pb::MountSession {
            id: s.id,
            heartbeat_ms: self.sessions.config().heartbeat.as_millis() as u64,
            lease_ms: self.sessions.config().lease.as_millis() as u64,
            stub_attr: self.tiering.config.stub_xattr.clone(),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::SessionRef>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let beat = self.sessions.heartbeat(&req.get_ref().id, now_ms());
        Ok(Response::new(pb::HeartbeatResponse {
            known: beat.known,
            reclaim: beat.reclaim,
        }))
    }

    async fn close_session(
        &self,
        req: Request<pb::SessionRef>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let known = self.sessions.close(&req.get_ref().id);
        if known {
            tracing::info!(session = req.get_ref().id, "mount session closed");
        }
        Ok(Response::new(pb::HeartbeatResponse {
            known,
            reclaim: false,
        }))
    }

    async fn read_grant(
        &self,
        req: Request<pb::ReadGrantRequest>,
    ) -> Result<Response<pb::ReadGrant>, Status> {
        let r = req.into_inner();
        self.known(&r.session)?;
        let path = abs_path_field("path", &r.path)?;
        let g = self
            .tiering
            .read_grant(
                &path,
                r.new_read,
                r.verify,
                (!r.etag.is_empty()).then_some((r.etag.as_str(), r.offloaded_at_ms)),
            )
            .await
            .map_err(tier_status)?;
        Ok(Response::new(pb::ReadGrant {
            url: g.url,
            expires_in_ms: g.expires_in.as_millis() as u64,
            size: g.size,
            recalling: g.recalling,
        }))
    }

    async fn discard(
        &self,
        req: Request<pb::DiscardRequest>,
    ) -> Result<Response<pb::DiscardResponse>, Status> {
        let r = req.into_inner();
        self.known(&r.session)?;
        let path = abs_path_field("path", &r.path)?;
        // In a task of its own: it holds the file's claim, which a dropped request (client
        // gone, deadline) must not leave behind.
        let tiering = Arc::clone(&self.tiering);
        let was_stub = tokio::spawn(async move { tiering.discard(&path).await })
            .await
            .map_err(internal)?
            .map_err(tier_status)?;
        Ok(Response::new(pb::DiscardResponse { was_stub }))
    }

    async fn take_cap(
        &self,
        req: Request<pb::CapRequest>,
    ) -> Result<Response<pb::CapReply>, Status> {
        crate::session::rpc::take_cap(&self.sessions, &self.tiering, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn release_cap(
        &self,
        req: Request<pb::CapRequest>,
    ) -> Result<Response<pb::CapReply>, Status> {
        crate::session::rpc::release_cap(&self.sessions, &self.tiering, req.into_inner())
            .map(Response::new)
    }

    type WatchRevokesStream = crate::session::rpc::RevokeStream;

    async fn watch_revokes(
        &self,
        req: Request<pb::SessionRef>,
    ) -> Result<Response<Self::WatchRevokesStream>, Status> {
        crate::session::rpc::watch_revokes(&self.sessions, req.into_inner()).map(Response::new)
    }

    async fn answer_revoke(
        &self,
        req: Request<pb::RevokeAnswer>,
    ) -> Result<Response<pb::CapReply>, Status> {
        crate::session::rpc::answer_revoke(&self.sessions, &self.tiering, req.into_inner())
            .map(Response::new)
    }

    async fn reclaim_caps(
        &self,
        req: Request<pb::ReclaimCapsRequest>,
    ) -> Result<Response<pb::ReclaimCapsReply>, Status> {
        crate::session::rpc::reclaim_caps(&self.sessions, &self.tiering, req.into_inner())
            .map(Response::new)
    }
}

fn abs_path(bytes: &[u8]) -> Result<PathBuf, String> {
    if bytes.is_empty() {
        return Err("is empty".into());
    }
    if bytes.len() > 4096 {
        return Err(format!("is {} bytes; the limit is 4096", bytes.len()));
    }
    if bytes.contains(&0) {
        return Err("contains NUL".into());
    }
    let p = Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(bytes));
    if !p.is_absolute() {
        return Err("must be absolute".into());
    }
    if p.components().any(|c| {
        matches!(
            c,
            std::path::Component::ParentDir | std::path::Component::CurDir
        )
    }) {
        return Err("must not contain '.' or '..'".into());
    }
    Ok(p.to_path_buf())
}

fn read_policy_pb(p: ReadPolicy) -> pb::ReadPolicy {
    match p {
        ReadPolicy::Stream => pb::ReadPolicy::Stream,
        ReadPolicy::Recall => pb::ReadPolicy::Recall,
    }
}

fn rules_from_pb(r: pb::PolicyRules) -> crate::policy::rules::Rules {
    crate::policy::rules::Rules {
        idle_secs: r.idle_secs,
        unmodified_secs: r.unmodified_secs,
        min_size: r.min_size,
        max_size: r.max_size,
        include: r.include,
        exclude: r.exclude,
        owners: r.owners,
        min_age_secs: r
            .min_age_secs
            .unwrap_or(crate::policy::rules::DEFAULT_MIN_AGE_SECS),
        interval_secs: r.interval_secs,
        high_percent: r.high_percent.map(|p| p.min(255) as u8),
        low_percent: r.low_percent.map(|p| p.min(255) as u8),
        east_soft_limit: r.east_soft_limit,
        max_files_per_sec: r.max_files_per_sec,
        max_bytes_per_sec: r.max_bytes_per_sec,
    }
}

fn policy_pb(rec: &GpairRecord) -> pb::Policy {
    pb::Policy {
        name: rec.name.clone(),
        set: rec.policy.is_some(),
        rules: rec.policy.as_ref().map(|r| pb::PolicyRules {
            idle_secs: r.idle_secs,
            unmodified_secs: r.unmodified_secs,
            min_size: r.min_size,
            max_size: r.max_size,
            include: r.include.clone(),
            exclude: r.exclude.clone(),
            owners: r.owners.clone(),
            min_age_secs: Some(r.min_age_secs),
            interval_secs: r.interval_secs,
            high_percent: r.high_percent.map(u32::from),
            low_percent: r.low_percent.map(u32::from),
            east_soft_limit: r.east_soft_limit,
            max_files_per_sec: r.max_files_per_sec,
            max_bytes_per_sec: r.max_bytes_per_sec,
        }),
    }
}
