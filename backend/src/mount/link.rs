//! The mount's connection to the backend (DESIGN 3): its session (opened at mount, renewed by
//! heartbeat, reopened when the backend forgot it), its write caps (DESIGN 6), change reports
//! batched into `Notify`, recalls started and waited for, and read grants.
//!
//! Write caps: the first open for writing of a file takes a write cap (`TakeCap`, one call;
//! later opens of a file already capped only count), the last close gives it back
//! (`ReleaseCap`, sent in the background). Revokes arrive on a server stream
//! (`WatchRevokes`, reconnected whenever it breaks): a file no writer has open any more is
//! given back at once (the mount buffers no written data — every write went to east before
//! it was acknowledged — so there is nothing to flush), one still open is answered busy
//! (`AnswerRevoke`). When the backend restarted (`reclaim` at heartbeat) or forgot the
//! session (a new one is opened), the mount sends every cap it holds (`ReclaimCaps`).
//! A backend that cannot be reached never fails an open: the cap is kept here and reclaimed
//! once the backend answers.
//!
//! The FUSE worker threads are plain threads: they call in here and block on the runtime
//! handle; nothing here runs on a FUSE thread for longer than the call it serves.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gpair_proto::pb;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;

use super::{ChangeKind, Changes, Errno, Recall, WriteCaps};

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
    /// Write caps held: east inode → the file's absolute path and its open writers.
    held: Mutex<HashMap<u64, Held>>,
    /// Caps must be sent again (`ReclaimCaps` failed or was refused in part).
    reclaim_pending: AtomicBool,
    /// This link, for the background release of a cap at a close.
    me: std::sync::OnceLock<std::sync::Weak<Link>>,
    /// Inodes whose cap is being given back: a new first open waits for that call, so the
    /// backend never sees its take before the release.
    releasing: Mutex<std::collections::HashSet<u64>>,
    released: std::sync::Condvar,
    /// Woken when a take of a write cap is answered (with `held`).
    taken: std::sync::Condvar,
}

#[derive(Debug, Clone)]
struct Held {
    path: PathBuf,
    writers: u32,
    take: Take,
}

/// Where the take of a write cap stands. Only the first opener asks the backend; the others
/// wait for its answer and share it, so no open for writing goes ahead before the cap is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// The first opener is asking the backend.
    Asking,
    /// Held (or kept here to be reclaimed, the backend being unreachable).
    Held,
    /// The backend refused it: every opener waiting fails.
    Refused,
    /// No cap is needed (the share is not bound): nothing to give back at close.
    NotNeeded,
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
            held: Mutex::new(HashMap::new()),
            reclaim_pending: AtomicBool::new(false),
            me: std::sync::OnceLock::new(),
            releasing: Mutex::new(std::collections::HashSet::new()),
            released: std::sync::Condvar::new(),
            taken: std::sync::Condvar::new(),
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
        let _ = link.me.set(Arc::downgrade(&link));
        tracing::info!(session = opened.id, "mount session opened");
        rt.spawn(Arc::clone(&link).heartbeats(cancel.clone()));
        rt.spawn(Arc::clone(&link).revokes(cancel.clone()));
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
        {
            let mut cur = self.session.lock().unwrap_or_else(PoisonError::into_inner);
            cur.id = s.id.clone();
        }
        // Take the caps of the files still open for writing again.
        self.reclaim().await;
        Ok(s.id)
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Held>> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends every cap held (after a backend restart, or with a new session).
    async fn reclaim(&self) {
        let caps: Vec<pb::HeldCap> = self
            .held()
            .iter()
            .filter(|(_, h)| matches!(h.take, Take::Held | Take::Asking))
            .map(|(ino, h)| pb::HeldCap {
                path: h.path.as_os_str().as_bytes().to_vec(),
                ino: *ino,
                kind: pb::CapKind::Write as i32,
            })
            .collect();
        let n = caps.len();
        let mut req = tonic::Request::new(pb::ReclaimCapsRequest {
            session: self.session().id,
            caps,
        });
        req.set_timeout(CALL_TIMEOUT);
        match self.mount_client().reclaim_caps(req).await {
            Ok(r) if r.get_ref().known && r.get_ref().refused == 0 => {
                self.reclaim_pending.store(false, Ordering::Relaxed);
                if n > 0 {
                    tracing::info!(caps = n, "write caps reclaimed");
                }
            }
            Ok(r) => {
                tracing::info!(
                    refused = r.get_ref().refused,
                    "some write caps not reclaimed yet (files being released); asking again"
                );
                self.reclaim_pending.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!("reclaiming write caps failed: {}", e.message());
                self.reclaim_pending.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Takes the write cap of `abs`. `Ok(false)`: the backend refused it (the file is being
    /// released and stayed so for the backend's revoke wait).
    async fn take_cap(&self, abs: &Path, ino: u64) -> Result<bool, tonic::Status> {
        let mut reopened = false;
        loop {
            let mut req = tonic::Request::new(pb::CapRequest {
                session: self.session().id,
                path: abs.as_os_str().as_bytes().to_vec(),
                ino,
                kind: pb::CapKind::Write as i32,
            });
            req.set_timeout(CALL_TIMEOUT);
            match self.mount_client().take_cap(req).await {
                Ok(r) if r.get_ref().known => return Ok(true),
                // The session is gone: open a new one (which reclaims every held cap) and
                // take this one under it.
                Ok(_) if !reopened => {
                    self.reopen().await?;
                    reopened = true;
                }
                Ok(_) => return Err(tonic::Status::unavailable("no mount session")),
                Err(e) if e.code() == Code::Aborted => {
                    tracing::warn!(path = %abs.display(), "write cap refused: {}", e.message());
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Gives a write cap back.
    async fn release_cap(&self, abs: PathBuf, ino: u64) {
        let mut req = tonic::Request::new(pb::CapRequest {
            session: self.session().id,
            path: abs.as_os_str().as_bytes().to_vec(),
            ino,
            kind: pb::CapKind::Write as i32,
        });
        req.set_timeout(CALL_TIMEOUT);
        if let Err(e) = self.mount_client().release_cap(req).await {
            // The backend learns at the next reclaim, or evicts the session.
            tracing::debug!(path = %abs.display(), "releasing a write cap failed: {}", e.message());
        }
    }

    /// Answers the backend's revokes, for as long as the mount runs.
    async fn revokes(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let id = self.session().id;
            let mut client = self.mount_client();
            let watch = client.watch_revokes(pb::SessionRef { id: id.clone() });
            let started = tokio::select! {
                () = cancel.cancelled() => return,
                r = tokio::time::timeout(CALL_TIMEOUT, watch) => r,
            };
            if let Ok(Ok(stream)) = started {
                let mut stream = stream.into_inner();
                loop {
                    let next = tokio::select! {
                        () = cancel.cancelled() => return,
                        m = stream.message() => m,
                    };
                    match next {
                        Ok(Some(rev)) => self.answer_revoke(rev).await,
                        // Ended: session evicted or closed, or the backend went away.
                        _ => break,
                    }
                }
            }
            // Reconnect after a pause (a heartbeat's time at most).
            let pause = self.session().heartbeat.min(Duration::from_secs(1));
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn answer_revoke(&self, rev: pb::CapRevoke) {
        let writers = self.held().get(&rev.ino).map_or(0, |h| h.writers);
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&rev.path));
        if writers == 0 {
            tracing::debug!(path = %path.display(), "revoke: no writer left; giving the cap back");
            self.release_cap(path, rev.ino).await;
            return;
        }
        tracing::info!(path = %path.display(), writers, "revoke: the file is still open for writing; answering busy");
        let mut req = tonic::Request::new(pb::RevokeAnswer {
            session: self.session().id,
            ino: rev.ino,
            path: rev.path,
            writers,
        });
        req.set_timeout(CALL_TIMEOUT);
        let _ = self.mount_client().answer_revoke(req).await;
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
                Ok(r) if r.get_ref().known => {
                    if r.get_ref().reclaim || self.reclaim_pending.load(Ordering::Relaxed) {
                        self.reclaim().await;
                    }
                    Ok(())
                }
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
            background: false,
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
                    // East full: the writer hears ENOSPC (or EDQUOT), not EIO (SCENARIOS D2).
                    let full = |word: &str| next.files.iter().any(|f| f.reason.contains(word));
                    if full("ENOSPC:") {
                        return Err(Errno(libc::ENOSPC));
                    }
                    if full("EDQUOT:") {
                        return Err(Errno(libc::EDQUOT));
                    }
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

impl WriteCaps for Link {
    fn opening(&self, rel_path: &Path, ino: u64) -> Result<(), Errno> {
        let abs = self.abs(rel_path);
        {
            let mut held = self.held();
            if let Some(h) = held.get_mut(&ino) {
                // Already capped: no call (the hot path of files opened again and again).
                // While the first opener is still asking, wait for its answer.
                h.writers = h.writers.saturating_add(1);
                h.path = abs;
                let deadline = Instant::now() + 2 * CALL_TIMEOUT;
                loop {
                    let take = held.get(&ino).map(|h| h.take);
                    match take {
                        Some(Take::Held | Take::NotNeeded) => return Ok(()),
                        Some(Take::Asking) if Instant::now() < deadline => {
                            let left = deadline.saturating_duration_since(Instant::now());
                            held = self
                                .taken
                                .wait_timeout(held, left)
                                .unwrap_or_else(PoisonError::into_inner)
                                .0;
                        }
                        _ => {
                            drop(held);
                            self.forget_writer(ino);
                            return Err(Errno(libc::EAGAIN));
                        }
                    }
                }
            }
            held.insert(
                ino,
                Held {
                    path: abs.clone(),
                    writers: 1,
                    take: Take::Asking,
                },
            );
        }
        self.wait_released(ino);
        let (take, answer) = match self.rt.block_on(self.take_cap(&abs, ino)) {
            Ok(true) => (Take::Held, Ok(())),
            Ok(false) => (Take::Refused, Err(Errno(libc::EAGAIN))),
            // Not under a bound share (nothing to protect): no cap.
            Err(e) if e.code() == Code::FailedPrecondition => (Take::NotNeeded, Ok(())),
            Err(e) => {
                // The backend is unreachable: the open goes on; the cap stays here and is
                // reclaimed when the backend answers again (a restarted backend releases
                // nothing until its sessions are back, docs/operations.md).
                tracing::debug!(path = %abs.display(), "write cap not confirmed: {}", e.message());
                self.reclaim_pending.store(true, Ordering::Relaxed);
                (Take::Held, Ok(()))
            }
        };
        if let Some(h) = self.held().get_mut(&ino) {
            h.take = take;
        }
        self.taken.notify_all();
        if take == Take::Refused {
            self.forget_writer(ino);
        }
        answer
    }

    fn closed(&self, ino: u64) {
        let not_needed = self
            .held()
            .get(&ino)
            .is_some_and(|h| h.take == Take::NotNeeded);
        if not_needed {
            self.forget_writer(ino);
            return;
        }
        if let Some(path) = self.forget_writer(ino) {
            self.releasing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(ino);
            let me = self.held_release_handle();
            self.rt.spawn(async move {
                if let Some(link) = me.upgrade() {
                    link.release_cap(path, ino).await;
                    link.releasing
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&ino);
                    link.released.notify_all();
                }
            });
        }
    }
}

impl Link {
    /// Waits (bounded) until no release of `ino`'s cap is in flight.
    fn wait_released(&self, ino: u64) {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut r = self
            .releasing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while r.contains(&ino) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            r = self
                .released
                .wait_timeout(r, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// One writer of `ino` fewer; the file's path when that was the last.
    fn forget_writer(&self, ino: u64) -> Option<PathBuf> {
        let mut held = self.held();
        let h = held.get_mut(&ino)?;
        h.writers = h.writers.saturating_sub(1);
        if h.writers == 0 {
            held.remove(&ino).map(|h| h.path)
        } else {
            None
        }
    }

    fn held_release_handle(&self) -> std::sync::Weak<Link> {
        self.me.get().cloned().unwrap_or_default()
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
