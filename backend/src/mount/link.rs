//! The mount's connection to the backend (DESIGN 3): its session (opened at mount, renewed by
//! heartbeat, reopened when the backend forgot it), change reports batched into `Notify`,
//! recalls started and waited for, and read grants.
//!
//! The FUSE worker threads are plain threads: they call in here and block on the runtime
//! handle; nothing here runs on a FUSE thread for longer than the call it serves.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gpair_proto::pb;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;

use super::{ChangeKind, Changes, Errno, Recall};

/// Changes waiting to be sent; beyond this they are dropped (the backend's own watcher of
/// the share still sees them, only later).
const CHANGES_QUEUED: usize = 65_536;
/// Most changes in one Notify.
const CHANGES_PER_CALL: usize = 1_000;
/// How long a change may wait for others to join its Notify.
const CHANGES_LINGER: Duration = Duration::from_millis(20);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot reach the backend at {socket}: {reason}")]
    Unreachable { socket: String, reason: String },
    #[error("the backend refused the mount session: {0}")]
    Refused(String),
}

/// Timeouts of the calls that wait on west.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    /// How long a read of a stub, or a recall, may wait while west is unreachable before it
    /// fails with EIO.
    pub west: Duration,
    /// How long a recall before a write may take in all.
    pub recall: Duration,
}

pub struct Link {
    rt: tokio::runtime::Handle,
    channel: Channel,
    share: PathBuf,
    mountpoint: PathBuf,
    client: String,
    session: Mutex<Session>,
    changes: mpsc::Sender<pb::Change>,
    waits: Waits,
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    heartbeat: Duration,
}

/// What opening the session told the mount.
pub struct Opened {
    pub link: Arc<Link>,
    /// The stub record attribute on the backend's shares.
    pub stub_attr: String,
}

impl Link {
    /// Connects to the backend's socket and opens a session; starts the heartbeat and the
    /// change sender, which stop with `cancel`.
    pub fn open(
        rt: &tokio::runtime::Handle,
        socket: &Path,
        share: &Path,
        mountpoint: &Path,
        waits: Waits,
        cancel: CancellationToken,
    ) -> Result<Opened, LinkError> {
        let _in_runtime = rt.enter();
        let path = socket.to_path_buf();
        let channel = Endpoint::from_static("http://localhost")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }));
        let client = format!(
            "{}:{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into()),
            std::process::id()
        );
        let (tx, rx) = mpsc::channel(CHANGES_QUEUED);
        let mut link = Link {
            rt: rt.clone(),
            channel,
            share: share.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            client,
            session: Mutex::new(Session {
                id: String::new(),
                heartbeat: Duration::from_secs(5),
            }),
            changes: tx,
            waits,
        };
        let opened = rt
            .block_on(link.open_session())
            .map_err(|s| match s.code() {
                Code::Unavailable | Code::Unknown | Code::DeadlineExceeded => {
                    LinkError::Unreachable {
                        socket: socket.display().to_string(),
                        reason: s.message().to_string(),
                    }
                }
                _ => LinkError::Refused(s.message().to_string()),
            })?;
        link.session = Mutex::new(Session {
            id: opened.id.clone(),
            heartbeat: Duration::from_millis(opened.heartbeat_ms.clamp(100, 60_000)),
        });
        let link = Arc::new(link);
        tracing::info!(session = opened.id, "mount session opened");
        rt.spawn(Arc::clone(&link).heartbeats(cancel.clone()));
        rt.spawn(Arc::clone(&link).send_changes(rx, cancel));
        Ok(Opened {
            link,
            stub_attr: opened.stub_attr,
        })
    }

    fn mount_client(&self) -> pb::mount_client::MountClient<Channel> {
        pb::mount_client::MountClient::new(self.channel.clone())
    }

    fn session(&self) -> Session {
        self.session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn open_session(&self) -> Result<pb::MountSession, tonic::Status> {
        let mut req = tonic::Request::new(pb::OpenSessionRequest {
            client: self.client.clone(),
            share: self.share.as_os_str().as_bytes().to_vec(),
            mountpoint: self.mountpoint.as_os_str().as_bytes().to_vec(),
        });
        req.set_timeout(CALL_TIMEOUT);
        Ok(self.mount_client().open_session(req).await?.into_inner())
    }

    /// Opens a new session after the backend forgot ours (restart, expired lease).
    async fn reopen(&self) -> Result<String, tonic::Status> {
        let s = self.open_session().await?;
        tracing::warn!(
            session = s.id,
            "the backend did not know our session; opened a new one"
        );
        let mut cur = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        cur.id = s.id.clone();
        Ok(s.id)
    }

    async fn heartbeats(self: Arc<Self>, cancel: CancellationToken) {
        let mut failing_since: Option<Instant> = None;
        loop {
            let s = self.session();
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(s.heartbeat) => {}
            }
            let mut req = tonic::Request::new(pb::SessionRef { id: s.id.clone() });
            req.set_timeout(CALL_TIMEOUT);
            let r = match self.mount_client().heartbeat(req).await {
                Ok(r) if r.get_ref().known => Ok(()),
                Ok(_) => self.reopen().await.map(|_| ()),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    if let Some(t) = failing_since.take() {
                        tracing::info!(after = ?t.elapsed(), "backend reachable again");
                    }
                }
                Err(e) => {
                    if failing_since.is_none() {
                        tracing::warn!("heartbeat to the backend failed: {}", e.message());
                        failing_since = Some(Instant::now());
                    }
                }
            }
        }
        let id = self.session().id;
        let mut req = tonic::Request::new(pb::SessionRef { id });
        req.set_timeout(Duration::from_secs(2));
        let _ = self.mount_client().close_session(req).await;
    }

    async fn send_changes(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<pb::Change>,
        cancel: CancellationToken,
    ) {
        let mut client = pb::changes_client::ChangesClient::new(self.channel.clone());
        loop {
            let first = tokio::select! {
                c = rx.recv() => c,
                () = cancel.cancelled() => None,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            let linger = tokio::time::sleep(CHANGES_LINGER);
            tokio::pin!(linger);
            while batch.len() < CHANGES_PER_CALL {
                tokio::select! {
                    c = rx.recv() => match c {
                        Some(c) => batch.push(c),
                        None => break,
                    },
                    () = &mut linger => break,
                }
            }
            // A failed notification is retried a few times; after that the backend's watcher
            // of the share is what reports these changes.
            for attempt in 0..3u32 {
                let mut req = tonic::Request::new(pb::NotifyRequest {
                    client_id: self.session().id,
                    changes: batch.clone(),
                });
                req.set_timeout(CALL_TIMEOUT);
                match client.notify(req).await {
                    Ok(_) => break,
                    Err(e) if attempt == 2 => {
                        tracing::warn!(
                            changes = batch.len(),
                            "change notification dropped: {}",
                            e.message()
                        );
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200 << attempt)).await,
                }
            }
        }
    }

    /// The absolute east path of a path relative to the share.
    pub fn abs(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.share.clone()
        } else {
            self.share.join(rel)
        }
    }

    /// A read grant for the stub at `rel`.
    pub async fn grant(
        &self,
        rel: &Path,
        new_read: bool,
        verify: bool,
        expect: (&str, i64),
    ) -> Result<pb::ReadGrant, tonic::Status> {
        let path = self.abs(rel).as_os_str().as_bytes().to_vec();
        for attempt in 0..2 {
            let mut req = tonic::Request::new(pb::ReadGrantRequest {
                session: self.session().id,
                path: path.clone(),
                new_read,
                verify,
                etag: expect.0.to_owned(),
                offloaded_at_ms: expect.1,
            });
            req.set_timeout(CALL_TIMEOUT);
            match self.mount_client().read_grant(req).await {
                Err(e)
                    if e.code() == Code::NotFound
                        && e.message().starts_with("mount session")
                        && attempt == 0 =>
                {
                    self.reopen().await?;
                }
                r => return r.map(tonic::Response::into_inner),
            }
        }
        Err(tonic::Status::unavailable("no mount session"))
    }

    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// Starts a recall of `abs` and waits for its job to finish.
    async fn recall_and_wait(&self, abs: &Path) -> Result<(), Errno> {
        let mut admin = pb::admin_client::AdminClient::new(self.channel.clone());
        let mut req = tonic::Request::new(pb::MigrateRequest {
            paths: vec![abs.as_os_str().as_bytes().to_vec()],
            recursive: false,
        });
        req.set_timeout(CALL_TIMEOUT);
        let job = admin
            .recall(req)
            .await
            .map_err(|e| {
                tracing::warn!(path = %abs.display(), "recall refused: {}", e.message());
                Errno::EIO
            })?
            .into_inner();
        let started = Instant::now();
        let mut waiting_since: Option<Instant> = None;
        // The watch itself runs as long as the recall; only getting it started is bounded.
        let watch = admin.watch_job(pb::GetJobRequest {
            id: job.id,
            files_limit: 0,
        });
        let mut stream = match tokio::time::timeout(CALL_TIMEOUT, watch).await {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(e)) => {
                tracing::warn!(job = job.id, "watching the recall failed: {}", e.message());
                return Err(Errno::EIO);
            }
            Err(_) => {
                tracing::warn!(
                    job = job.id,
                    "the backend did not start the recall's progress stream"
                );
                return Err(Errno::EIO);
            }
        };
        loop {
            let left = self.waits.recall.saturating_sub(started.elapsed());
            let next = match tokio::time::timeout(left.min(self.waits.west), stream.message()).await
            {
                Ok(Ok(Some(j))) => j,
                Ok(Ok(None)) | Ok(Err(_)) => {
                    tracing::warn!(job = job.id, "lost the recall's progress stream");
                    return Err(Errno::EIO);
                }
                Err(_) if started.elapsed() >= self.waits.recall => {
                    tracing::warn!(job = job.id, path = %abs.display(), "recall took longer than {:?}", self.waits.recall);
                    return Err(Errno::EIO);
                }
                Err(_) => continue,
            };
            match pb::JobState::try_from(next.state).unwrap_or(pb::JobState::Unspecified) {
                pb::JobState::Done => return Ok(()),
                pb::JobState::Failed | pb::JobState::Cancelled => {
                    tracing::warn!(job = job.id, path = %abs.display(), "recall failed (see `gpair job show {}`)", job.id);
                    return Err(Errno::EIO);
                }
                pb::JobState::Waiting => {
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.waits.west {
                        tracing::warn!(job = job.id, path = %abs.display(), "west unreachable for {:?} during a recall: {}", self.waits.west, next.waiting_for);
                        return Err(Errno::EIO);
                    }
                }
                _ => waiting_since = None,
            }
        }
    }
}

impl Recall for Link {
    fn recall(&self, rel_path: &Path) -> Result<(), Errno> {
        let abs = self.abs(rel_path);
        self.rt.block_on(self.recall_and_wait(&abs))
    }

    fn discard(&self, rel_path: &Path) -> Result<(), Errno> {
        let abs = self.abs(rel_path);
        self.rt.block_on(async {
            for attempt in 0..2 {
                let mut req = tonic::Request::new(pb::DiscardRequest {
                    session: self.session().id,
                    path: abs.as_os_str().as_bytes().to_vec(),
                });
                req.set_timeout(self.waits.recall);
                match self.mount_client().discard(req).await {
                    Ok(_) => return Ok(()),
                    Err(e) if e.code() == Code::NotFound && attempt == 0 => {
                        let _ = self.reopen().await;
                    }
                    Err(e) => {
                        tracing::warn!(path = %abs.display(), "truncating a stub failed: {}", e.message());
                        return Err(Errno::EIO);
                    }
                }
            }
            Err(Errno::EIO)
        })
    }
}

impl Changes for Link {
    fn changed(&self, kind: ChangeKind, path: &Path, new_path: Option<&Path>) {
        let kind = match kind {
            ChangeKind::Create => pb::ChangeKind::Create,
            ChangeKind::Modify => pb::ChangeKind::Modify,
            ChangeKind::Delete => pb::ChangeKind::Delete,
            ChangeKind::Rename => pb::ChangeKind::Rename,
            ChangeKind::Exchange => pb::ChangeKind::Exchange,
        };
        let change = pb::Change {
            kind: kind as i32,
            path: self.abs(path).as_os_str().as_bytes().to_vec(),
            new_path: new_path
                .map(|p| self.abs(p).as_os_str().as_bytes().to_vec())
                .unwrap_or_default(),
        };
        if self.changes.try_send(change).is_err() {
            tracing::debug!("change queue full; the backend's watcher will report it");
        }
    }
}
