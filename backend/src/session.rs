//! Mount sessions and their caps (DESIGN 6): each `gpair-mount` opens a session, keeps it
//! alive with heartbeats and closes it at unmount; per file it holds caps
//! ([`crate::caps`]). This module owns the live table (one mutex over the sessions and the
//! [`CapTable`]), its persistence in the catalog (`sessions` CF), the delivery of revokes to
//! mounts, leases and eviction, the reconnect window after a restart, and the wait of an
//! offload for the exclusive cap.
//!
//! What it must never do: grant the exclusive cap while a write cap is held (the table
//! refuses), hold a caller's lock across an await, or forget a write cap silently — a cap
//! dropped without its client giving it back (eviction) marks the file dirty.
//!
//! Lifecycle of a session:
//! - `Active`: opened by `OpenSession`, renewed by heartbeats. Not heard from for its lease →
//!   evicted: its caps are dropped, files it had open for writing are marked dirty (an
//!   offload in flight on them aborts; the next one starts afresh), its revoke stream ends,
//!   and its next heartbeat answers `known = false`: the mount opens a new session and
//!   takes its caps again for files it still has open.
//! - `Reclaiming`: loaded from the catalog at start. Its caps stay in force (an offload
//!   cannot release a file one of them protects) until the reconnect window closes. Its
//!   heartbeat answers `reclaim = true` and the mount sends `ReclaimCaps` (its caps now),
//!   which makes it `Active` again with those caps. Not back by the end of the window →
//!   evicted.
//!
//! Persisted records (each a version byte + JSON, see [`crate::catalog`]):
//! `s\0ID` a session, `c\0ID\0GPAIR\0INO\0KIND` a cap, `x\0GPAIR\0INO` an exclusive cap of
//! this backend (removed when released, all removed at shutdown, and any left by a crash are
//! purged at start: the request that held it died with the process). Tolerated
//! inconsistency: a heartbeat's time reaches the catalog without an fsync (the group commit
//! syncs it), so after a power loss `session ls` may show an older heartbeat; the reconnect
//! window decides a session's fate, not that time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use gpair_proto::now_ms;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::caps::{Cap, CapKind, CapState, CapTable, ExclusiveStep, FileId, TakeRefused};
use crate::catalog::{Catalog, CF_SESSIONS};

/// Most sessions at once (each mount holds one).
const MAX_SESSIONS: usize = 10_000;
/// Most caps one session may hold (a mount with this many files open for writing).
const MAX_CAPS_PER_SESSION: usize = 1_000_000;
/// Evicted write caps remembered for offloads in flight (see [`EvictedWrite`]), and for how
/// long at least.
const MAX_EVICTED_WRITES: usize = 100_000;
const EVICTED_WRITES_KEPT_MS: i64 = 24 * 3600 * 1000;
/// Revokes queued to one mount; beyond this new ones are dropped (those still asked for are
/// sent again when the mount reconnects its stream, and an offload that waited in vain
/// defers its file).
const REVOKES_QUEUED: usize = 4096;

/// Leases and waits (the backend config's `[sessions]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// How often mounts heartbeat.
    pub heartbeat: Duration,
    /// A session not heard from for this long is evicted.
    pub lease: Duration,
    /// After a start, how long sessions loaded from the catalog have to come back.
    pub reconnect_window: Duration,
    /// How long an offload waits for write caps to be given back before it defers the file.
    pub revoke_wait: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            reconnect_window: Duration::from_secs(45),
            revoke_wait: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    /// Heard from since this backend started.
    Active,
    /// Loaded from the catalog at start, not heard from yet (see the module docs).
    Reclaiming,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub client: String,
    pub share: PathBuf,
    pub mountpoint: PathBuf,
    pub opened_ms: i64,
    pub last_heartbeat_ms: i64,
    pub state: SessionState,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("too many mount sessions ({MAX_SESSIONS}); close some mounts")]
    TooMany,
    #[error("mount session {0:?} is not open (expired, evicted, or the backend restarted); open a new one")]
    Unknown(String),
    #[error("{path}: {why}")]
    Refused { path: String, why: TakeRefused },
    #[error("mount session {0:?} holds too many caps ({MAX_CAPS_PER_SESSION})")]
    TooManyCaps(String),
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    pub known: bool,
    /// Send your caps (`ReclaimCaps`).
    pub reclaim: bool,
}

/// Why an offload did not get the exclusive cap: the file is deferred, not failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Deferred(pub String);

/// A write cap dropped by an eviction, remembered so an offload in flight on the file
/// aborts (its writer may still be alive, partitioned).
#[derive(Debug, Clone)]
struct EvictedWrite {
    at_ms: i64,
    session: String,
    client: String,
    mountpoint: PathBuf,
    /// The writer may still be alive (its lease ran out, and it is not a process of this
    /// host known to be gone): no offload may release the file until its client is back
    /// (a session from the same host and mount point) or an administrator lifts the fence
    /// (`gpair session evict ID` with the evicted session's id).
    fenced: bool,
}

/// Whether the mount `client` ("HOST:PID", as mounts name themselves) is known to be gone:
/// a process of this host that no longer exists. A client of another host is never known
/// gone (it may be partitioned, still writing to a cluster filesystem).
fn client_gone(client: &str) -> bool {
    let Some((host, pid)) = client.rsplit_once(':') else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    let here = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    host == here.trim() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Why a fenced file is deferred, and how to lift the fence.
fn fence_text(e: &EvictedWrite) -> String {
    format!(
        "deferred: its writer (session {} on client {}, mount point {}) was evicted {} s ago \
         and has not come back: it may still be writing. If that client is gone, lift the \
         fence with `gpair session evict {}`",
        e.session,
        e.client,
        e.mountpoint.display(),
        (now_ms() - e.at_ms).max(0) / 1000,
        e.session
    )
}

/// The host part of a client name.
fn client_host(client: &str) -> &str {
    client.rsplit_once(':').map_or(client, |(h, _)| h)
}

#[derive(Default)]
struct State {
    sessions: HashMap<String, Session>,
    caps: CapTable,
    revokes: HashMap<String, mpsc::Sender<(FileId, Cap)>>,
    evicted_writes: HashMap<FileId, EvictedWrite>,
    /// When the reconnect window closes (ms since the epoch); 0 when there is none.
    window_ends_ms: i64,
    /// When this backend loaded the sessions.
    started_ms: i64,
    next_token: u64,
}

/// Every session cap and every exclusive cap of the backend, at one moment.
pub type CapsNow = (Vec<(FileId, Cap)>, Vec<(FileId, crate::caps::Exclusive)>);

/// Called with a write cap dropped by an eviction: mark its file dirty.
pub type OnEvictedWrite = Box<dyn Fn(&FileId, &Path, &str) + Send + Sync>;

/// The live sessions and caps.
pub struct Sessions {
    state: Mutex<State>,
    config: SessionConfig,
    catalog: Option<Arc<Catalog>>,
    /// Woken at every change of a cap (release, eviction, busy answer, exclusive released).
    changed: Notify,
    on_evicted_write: OnceLock<OnEvictedWrite>,
    /// The backend is stopping: revoke streams end, nobody is evicted any more.
    closing: CancellationToken,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::in_memory(SessionConfig::default())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SessionRecord {
    id: String,
    client: String,
    share: Vec<u8>,
    mountpoint: Vec<u8>,
    opened_ms: i64,
    last_heartbeat_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct CapRecord {
    session: String,
    gpair: String,
    ino: u64,
    kind: CapKind,
    path: Vec<u8>,
    since_ms: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ExclusiveRecord {
    gpair: String,
    ino: u64,
    path: Vec<u8>,
    since_ms: i64,
    reason: String,
}

fn bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

fn path_of(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

fn session_key(id: &str) -> Vec<u8> {
    let mut k = b"s\0".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn cap_prefix(session: &str) -> Vec<u8> {
    let mut k = b"c\0".to_vec();
    k.extend_from_slice(session.as_bytes());
    k.push(0);
    k
}

fn cap_key(session: &str, file: &FileId, kind: CapKind) -> Vec<u8> {
    let mut k = cap_prefix(session);
    k.extend_from_slice(file.gpair.as_bytes());
    k.push(0);
    k.extend_from_slice(&file.ino.to_be_bytes());
    k.push(0);
    k.push(kind as u8);
    k
}

fn exclusive_key(file: &FileId) -> Vec<u8> {
    let mut k = b"x\0".to_vec();
    k.extend_from_slice(file.gpair.as_bytes());
    k.push(0);
    k.extend_from_slice(&file.ino.to_be_bytes());
    k
}

/// Milliseconds of a duration, saturating.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Sessions {
    /// Sessions kept in memory only (tests).
    pub fn in_memory(config: SessionConfig) -> Self {
        Self {
            state: Mutex::new(State::default()),
            config,
            catalog: None,
            changed: Notify::new(),
            on_evicted_write: OnceLock::new(),
            closing: CancellationToken::new(),
        }
    }

    /// Loads the sessions and caps of the previous run from the catalog (they become
    /// `Reclaiming` until the reconnect window closes at `now + reconnect_window`) and
    /// purges exclusive caps left behind by a crash.
    pub fn load(
        catalog: Arc<Catalog>,
        config: SessionConfig,
        now: i64,
    ) -> Result<Self, crate::catalog::CatalogError> {
        let mut st = State {
            window_ends_ms: now.saturating_add(ms(config.reconnect_window)),
            started_ms: now,
            ..State::default()
        };
        let corrupt = |e| tracing::error!(error = %e, "skipping a corrupt session record");
        let sessions: Vec<(Vec<u8>, SessionRecord)> = catalog.scan(CF_SESSIONS, b"s\0", corrupt)?;
        for (_, r) in sessions {
            st.sessions.insert(
                r.id.clone(),
                Session {
                    id: r.id,
                    client: r.client,
                    share: path_of(&r.share),
                    mountpoint: path_of(&r.mountpoint),
                    opened_ms: r.opened_ms,
                    last_heartbeat_ms: r.last_heartbeat_ms,
                    state: SessionState::Reclaiming,
                },
            );
        }
        let caps: Vec<(Vec<u8>, CapRecord)> = catalog.scan(CF_SESSIONS, b"c\0", corrupt)?;
        let mut orphans = 0;
        for (key, c) in caps {
            if !st.sessions.contains_key(&c.session) {
                orphans += 1;
                catalog.delete(CF_SESSIONS, &key)?;
                continue;
            }
            st.caps.restore(
                FileId {
                    gpair: c.gpair,
                    ino: c.ino,
                },
                Cap {
                    session: c.session,
                    kind: c.kind,
                    path: path_of(&c.path),
                    state: CapState::Granted {
                        since_ms: c.since_ms,
                    },
                },
            );
        }
        let stale: Vec<(Vec<u8>, ExclusiveRecord)> = catalog.scan(CF_SESSIONS, b"x\0", corrupt)?;
        for (key, x) in &stale {
            tracing::warn!(gpair = x.gpair, ino = x.ino, path = %path_of(&x.path).display(), reason = x.reason, "purged a stale exclusive cap left by an earlier run of the backend");
            catalog.delete(CF_SESSIONS, key)?;
        }
        if orphans > 0 {
            tracing::warn!(orphans, "dropped caps of sessions that no longer exist");
        }
        let n = st.sessions.len();
        let c = st.caps.caps().count();
        if n > 0 {
            tracing::info!(
                sessions = n,
                caps = c,
                window = ?config.reconnect_window,
                "mount sessions loaded; they reclaim their caps within the reconnect window"
            );
        }
        Ok(Self {
            state: Mutex::new(st),
            config,
            catalog: Some(catalog),
            changed: Notify::new(),
            on_evicted_write: OnceLock::new(),
            closing: CancellationToken::new(),
        })
    }

    pub fn config(&self) -> SessionConfig {
        self.config
    }

    /// The backend is stopping: revoke streams end (the gRPC server waits for open streams
    /// before it stops) and no session is evicted any more (mounts cannot heartbeat a backend
    /// that stopped serving; the next start's reconnect window decides).
    pub fn closing(&self) {
        self.closing.cancel();
    }

    /// Fires when the backend starts stopping.
    pub fn closing_token(&self) -> CancellationToken {
        self.closing.clone()
    }

    /// Sets what marks a file dirty when an eviction drops a write cap on it.
    pub fn on_evicted_write(&self, f: OnEvictedWrite) {
        let _ = self.on_evicted_write.set(f);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ---- persistence (best effort: a failed write is logged; the live table decides) ----

    fn persist(&self, what: &str, f: impl FnOnce(&Catalog) -> crate::catalog::Result<()>) {
        if let Some(c) = &self.catalog {
            if let Err(e) = f(c) {
                tracing::error!(error = %e, "catalog: cannot record {what}");
            }
        }
    }

    fn persist_session(&self, s: &Session) {
        self.persist("a mount session", |c| {
            c.put(
                CF_SESSIONS,
                &session_key(&s.id),
                &SessionRecord {
                    id: s.id.clone(),
                    client: s.client.clone(),
                    share: bytes(&s.share),
                    mountpoint: bytes(&s.mountpoint),
                    opened_ms: s.opened_ms,
                    last_heartbeat_ms: s.last_heartbeat_ms,
                },
            )
        });
    }

    fn persist_cap(&self, file: &FileId, cap: &Cap) {
        self.persist("a cap", |c| {
            c.put(
                CF_SESSIONS,
                &cap_key(&cap.session, file, cap.kind),
                &CapRecord {
                    session: cap.session.clone(),
                    gpair: file.gpair.clone(),
                    ino: file.ino,
                    kind: cap.kind,
                    path: bytes(&cap.path),
                    since_ms: cap.state.since_ms(),
                },
            )
        });
    }

    fn unpersist_cap(&self, file: &FileId, session: &str, kind: CapKind) {
        self.persist("a released cap", |c| {
            c.delete(CF_SESSIONS, &cap_key(session, file, kind))
        });
    }

    fn unpersist_session(&self, id: &str) {
        self.persist("a closed session", |c| {
            c.delete_prefix(CF_SESSIONS, &cap_prefix(id))?;
            c.delete(CF_SESSIONS, &session_key(id))
        });
    }

    // ---- sessions ------------------------------------------------------------------

    pub fn open(
        &self,
        client: String,
        share: PathBuf,
        mountpoint: PathBuf,
        now: i64,
    ) -> Result<Session, SessionError> {
        self.expire(now);
        let mut st = self.state();
        if st.sessions.len() >= MAX_SESSIONS {
            return Err(SessionError::TooMany);
        }
        let id = loop {
            let id = format!("{:016x}", rand::random::<u64>());
            if !st.sessions.contains_key(&id) {
                break id;
            }
        };
        let s = Session {
            id: id.clone(),
            client,
            share,
            mountpoint,
            opened_ms: now,
            last_heartbeat_ms: now,
            state: SessionState::Active,
        };
        // The same mount back (a new session from its host and mount point): the writes of
        // its evicted sessions are accounted for now (it reclaims the files it still has
        // open), so their fences go.
        let mut lifted = 0;
        for e in st.evicted_writes.values_mut() {
            if e.fenced
                && e.mountpoint == s.mountpoint
                && client_host(&e.client) == client_host(&s.client)
            {
                e.fenced = false;
                lifted += 1;
            }
        }
        if lifted > 0 {
            tracing::info!(
                client = s.client,
                files = lifted,
                "an evicted mount is back; its write fences are lifted"
            );
        }
        st.sessions.insert(id, s.clone());
        // The catalog write is made outside the table's lock (a slow disk must not hold up
        // every other session call).
        drop(st);
        self.persist_session(&s);
        Ok(s)
    }

    /// Renews a session.
    pub fn heartbeat(&self, id: &str, now: i64) -> Beat {
        self.expire(now);
        let mut st = self.state();
        match st.sessions.get_mut(id) {
            Some(s) => {
                s.last_heartbeat_ms = now;
                let s = s.clone();
                drop(st);
                self.persist_session(&s);
                // Closed or evicted meanwhile: its record must not outlive it.
                if !self.state().sessions.contains_key(id) {
                    self.unpersist_session(id);
                }
                Beat {
                    known: true,
                    reclaim: s.state == SessionState::Reclaiming,
                }
            }
            None => Beat {
                known: false,
                reclaim: false,
            },
        }
    }

    /// Closes a session cleanly: its caps are given back (no dirty marks).
    pub fn close(&self, id: &str) -> bool {
        let mut st = self.state();
        let Some(_) = st.sessions.remove(id) else {
            return false;
        };
        st.caps.release_all(id);
        st.revokes.remove(id);
        drop(st);
        self.unpersist_session(id);
        self.changed.notify_waiters();
        true
    }

    pub fn is_open(&self, id: &str, now: i64) -> bool {
        self.expire(now);
        self.state().sessions.contains_key(id)
    }

    /// Sessions with the number of caps each holds, oldest first.
    pub fn list(&self, now: i64) -> Vec<(Session, usize)> {
        self.expire(now);
        let st = self.state();
        let mut v: Vec<(Session, usize)> = st
            .sessions
            .values()
            .map(|s| (s.clone(), st.caps.count_of(&s.id)))
            .collect();
        v.sort_by(|a, b| a.0.opened_ms.cmp(&b.0.opened_ms).then(a.0.id.cmp(&b.0.id)));
        v
    }

    /// How long the reconnect window stays open.
    pub fn window_left(&self, now: i64) -> Duration {
        let end = self.state().window_ends_ms;
        Duration::from_millis(u64::try_from(end.saturating_sub(now)).unwrap_or(0))
    }

    /// Session caps and the backend's exclusive caps.
    pub fn caps(&self) -> CapsNow {
        let st = self.state();
        (
            st.caps
                .caps()
                .map(|(f, c)| (f.clone(), c.clone()))
                .collect(),
            st.caps
                .exclusives()
                .map(|(f, x)| (f.clone(), x.clone()))
                .collect(),
        )
    }

    pub fn session(&self, id: &str) -> Option<Session> {
        self.state().sessions.get(id).cloned()
    }

    /// Evicts the session `id` (an admin's `gpair session evict`, an expired lease, or the
    /// end of the reconnect window): returns it and the number of write caps dropped.
    pub fn evict(&self, id: &str, why: &str, now: i64) -> Option<(Session, usize)> {
        self.evict_as(id, why, now, false)
    }

    /// [`Sessions::evict`] by an administrator: the client is taken to be gone, its files
    /// are not fenced.
    pub fn evict_by_admin(&self, id: &str, now: i64) -> Option<(Session, usize)> {
        self.evict_as(id, "evicted by an administrator", now, true)
    }

    /// Lifts the fences left by the eviction of session `id` (the administrator says its
    /// client is gone); how many files were fenced.
    pub fn lift_fences(&self, id: &str) -> usize {
        let mut st = self.state();
        let mut n = 0;
        for e in st.evicted_writes.values_mut() {
            if e.session == id && e.fenced {
                e.fenced = false;
                n += 1;
            }
        }
        drop(st);
        if n > 0 {
            tracing::warn!(
                session = id,
                files = n,
                "write fences of an evicted session lifted by an administrator"
            );
            self.changed.notify_waiters();
        }
        n
    }

    /// Why `file` must not be released: a writer of it was evicted but may still be alive.
    pub fn fenced(&self, file: &FileId) -> Option<String> {
        let st = self.state();
        st.evicted_writes
            .get(file)
            .filter(|e| e.fenced)
            .map(fence_text)
    }

    fn evict_as(&self, id: &str, why: &str, now: i64, by_admin: bool) -> Option<(Session, usize)> {
        let mut st = self.state();
        let s = st.sessions.remove(id)?;
        let dropped = st.caps.evict(id);
        st.revokes.remove(id);
        let writes: Vec<(FileId, Cap)> = dropped
            .into_iter()
            .filter(|(_, c)| c.kind == CapKind::Write)
            .collect();
        if st.evicted_writes.len() >= MAX_EVICTED_WRITES {
            // Only offloads in flight at an eviction need these; a day is far longer.
            st.evicted_writes
                .retain(|_, e| now - e.at_ms < EVICTED_WRITES_KEPT_MS);
        }
        // An administrator's eviction says the client is gone; an expired lease says only
        // that it went quiet.
        let fenced = !by_admin && !writes.is_empty() && !client_gone(&s.client);
        for (file, _) in &writes {
            if st.evicted_writes.len() >= MAX_EVICTED_WRITES {
                break;
            }
            st.evicted_writes.insert(
                file.clone(),
                EvictedWrite {
                    at_ms: now,
                    session: s.id.clone(),
                    client: s.client.clone(),
                    mountpoint: s.mountpoint.clone(),
                    fenced,
                },
            );
        }
        drop(st);
        self.unpersist_session(id);
        tracing::warn!(
            session = s.id,
            client = s.client,
            mountpoint = %s.mountpoint.display(),
            write_caps = writes.len(),
            "mount session evicted: {why}"
        );
        if let Some(mark) = self.on_evicted_write.get() {
            let reason = format!(
                "open for writing by session {} on client {} when it was evicted ({why}); the next offload checks it afresh",
                s.id, s.client
            );
            for (file, cap) in &writes {
                mark(file, &cap.path, &reason);
            }
        }
        self.changed.notify_waiters();
        Some((s, writes.len()))
    }

    /// Evicts sessions whose lease ran out, and at the end of the reconnect window those
    /// that did not come back. Cheap when nothing expires; called by every session call
    /// and by [`Sessions::start_reaper`].
    pub fn expire(&self, now: i64) {
        if self.closing.is_cancelled() {
            return;
        }
        let lease = ms(self.config.lease);
        let doomed: Vec<(String, &'static str)> = {
            let mut st = self.state();
            let window_open = now < st.window_ends_ms;
            if !window_open && st.window_ends_ms != 0 {
                st.window_ends_ms = 0;
                // Sessions heard from since the start (whose mount did not send its caps)
                // are back, with the caps the catalog had.
                let started = st.started_ms;
                for s in st.sessions.values_mut() {
                    if s.state == SessionState::Reclaiming && s.last_heartbeat_ms >= started {
                        s.state = SessionState::Active;
                    }
                }
            }
            st.sessions
                .values()
                .filter_map(|s| match s.state {
                    SessionState::Active if now - s.last_heartbeat_ms > lease => {
                        Some((s.id.clone(), "its lease expired"))
                    }
                    SessionState::Reclaiming if !window_open => Some((
                        s.id.clone(),
                        "it did not come back within the reconnect window after a backend restart",
                    )),
                    _ => None,
                })
                .collect()
        };
        for (id, why) in doomed {
            self.evict(&id, why, now);
        }
    }

    /// Runs [`Sessions::expire`] every quarter lease until `cancel`.
    pub fn start_reaper(self: &Arc<Self>, cancel: CancellationToken) {
        let me = Arc::clone(self);
        let every = (self.config.lease / 4).max(Duration::from_millis(100));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(every) => me.expire(now_ms()),
                }
            }
        });
    }

    // ---- caps of sessions -------------------------------------------------------------

    fn known(st: &State, session: &str) -> Result<(), SessionError> {
        if st.sessions.contains_key(session) {
            Ok(())
        } else {
            Err(SessionError::Unknown(session.to_string()))
        }
    }

    /// `session` takes `kind` on `file`; a write cap waits (up to the revoke wait) while
    /// the backend holds the file's exclusive cap.
    pub async fn take(
        &self,
        session: &str,
        file: &FileId,
        path: &Path,
        kind: CapKind,
    ) -> Result<(), SessionError> {
        let deadline = tokio::time::Instant::now() + self.config.revoke_wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut st = self.state();
                Self::known(&st, session)?;
                match st
                    .caps
                    .take(session, file, path.to_path_buf(), kind, now_ms())
                {
                    Ok(()) => {
                        let cap = st.caps.get(session, file, kind).cloned();
                        drop(st);
                        if let Some(cap) = cap {
                            self.persist_cap(file, &cap);
                        }
                        return Ok(());
                    }
                    Err(why) if tokio::time::Instant::now() >= deadline => {
                        return Err(SessionError::Refused {
                            path: path.display().to_string(),
                            why,
                        })
                    }
                    Err(_) => {}
                }
            }
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }

    /// `session` gives `kind` on `file` back.
    pub fn release(
        &self,
        session: &str,
        file: &FileId,
        kind: CapKind,
    ) -> Result<bool, SessionError> {
        let mut st = self.state();
        Self::known(&st, session)?;
        let had = st.caps.release(session, file, kind).is_some();
        drop(st);
        if had {
            self.unpersist_cap(file, session, kind);
            self.changed.notify_waiters();
        }
        Ok(had)
    }

    /// `session` answered a revoke: a writer still has the file open.
    pub fn busy(&self, session: &str, file: &FileId) -> Result<(), SessionError> {
        let mut st = self.state();
        Self::known(&st, session)?;
        if st.caps.busy(session, file) {
            drop(st);
            self.changed.notify_waiters();
        }
        Ok(())
    }

    /// The caps `session` holds now (after a backend restart or a new session): they
    /// replace what the table had for it. Returns (granted, refused); a write cap is
    /// refused while the backend holds the file's exclusive cap (the mount asks again).
    pub fn reclaim(
        &self,
        session: &str,
        caps: Vec<(FileId, PathBuf, CapKind)>,
        now: i64,
    ) -> Result<(u32, u32), SessionError> {
        let mut st = self.state();
        Self::known(&st, session)?;
        if caps.len() > MAX_CAPS_PER_SESSION {
            return Err(SessionError::TooManyCaps(session.to_string()));
        }
        // Additive: the listed caps are taken (a cap still held keeps the time it was first
        // taken), and none is dropped. The list is a snapshot the mount made before sending
        // it; a take or release of the mount handled meanwhile must not be undone by it. A
        // cap the mount gave back while the backend was away is released at its next revoke
        // (the mount answers that it has no writer).
        let (mut granted, mut refused) = (0u32, 0u32);
        for (file, path, kind) in caps {
            match st.caps.take(session, &file, path, kind, now) {
                Ok(()) => granted += 1,
                Err(_) => refused += 1,
            }
        }
        if let Some(s) = st.sessions.get_mut(session) {
            s.state = SessionState::Active;
            s.last_heartbeat_ms = now;
        }
        let held: Vec<(FileId, Cap)> = st
            .caps
            .caps()
            .filter(|(_, c)| c.session == session)
            .map(|(f, c)| (f.clone(), c.clone()))
            .collect();
        drop(st);
        self.persist("reclaimed caps", |c| {
            c.delete_prefix(CF_SESSIONS, &cap_prefix(session))
        });
        for (file, cap) in &held {
            self.persist_cap(file, cap);
        }
        tracing::info!(
            session,
            granted,
            refused,
            "mount session reclaimed its caps"
        );
        self.changed.notify_waiters();
        Ok((granted, refused))
    }

    /// Where the backend's revokes for `session` go (one stream per session; a new one
    /// replaces the old). Revokes already asked for are sent again at once.
    pub fn watch_revokes(
        &self,
        session: &str,
    ) -> Result<mpsc::Receiver<(FileId, Cap)>, SessionError> {
        let (tx, rx) = mpsc::channel(REVOKES_QUEUED);
        let mut st = self.state();
        Self::known(&st, session)?;
        for (file, cap) in st.caps.caps() {
            if cap.session == session && matches!(cap.state, CapState::RevokeRequested { .. }) {
                let _ = tx.try_send((file.clone(), cap.clone()));
            }
        }
        st.revokes.insert(session.to_string(), tx);
        Ok(rx)
    }

    // ---- the backend's exclusive cap -------------------------------------------------

    /// Takes the exclusive cap on `file` for an offload: write caps of sessions are revoked
    /// and waited for, up to the revoke wait. A file still held open for writing (every
    /// holder answered busy, or the wait ran out) is [`Deferred`] with a reason naming the
    /// session and client.
    pub async fn exclusive(
        self: &Arc<Self>,
        file: &FileId,
        path: &Path,
        reason: &str,
        cancel: &CancellationToken,
    ) -> Result<ExclusiveGuard, Deferred> {
        let token = {
            let mut st = self.state();
            // A grace period after a restart: a mount that opened files for writing while
            // the backend was down holds caps the catalog does not know yet. Nothing is
            // released until every session loaded from the catalog is back or evicted.
            let now = now_ms();
            let waiting = st
                .sessions
                .values()
                .filter(|s| s.state == SessionState::Reclaiming)
                .count();
            if let Some(e) = st.evicted_writes.get(file).filter(|e| e.fenced) {
                return Err(Deferred(fence_text(e)));
            }
            if now < st.window_ends_ms && waiting > 0 {
                return Err(Deferred(format!(
                    "deferred: the backend restarted and {waiting} mount session(s) have {}s \
                     left to reclaim their write caps",
                    (st.window_ends_ms - now + 999) / 1000
                )));
            }
            st.next_token += 1;
            st.next_token
        };
        let deadline = tokio::time::Instant::now() + self.config.revoke_wait;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = now_ms();
            let (step, senders, who) = {
                let mut st = self.state();
                let step = st
                    .caps
                    .request_exclusive(file, path.to_path_buf(), token, reason, now);
                let mut senders = Vec::new();
                let mut who = String::new();
                if let ExclusiveStep::Wait {
                    revoke, holders, ..
                } = &step
                {
                    for cap in revoke {
                        if let Some(tx) = st.revokes.get(&cap.session) {
                            senders.push((tx.clone(), (file.clone(), cap.clone())));
                        }
                    }
                    who = Self::holders_text(&st, holders);
                }
                (step, senders, who)
            };
            for (tx, cap) in senders {
                if tx.try_send(cap).is_err() {
                    tracing::debug!("a mount's revoke queue is full or closed");
                }
            }
            match step {
                ExclusiveStep::Granted => {
                    self.persist("an exclusive cap", |c| {
                        c.put(
                            CF_SESSIONS,
                            &exclusive_key(file),
                            &ExclusiveRecord {
                                gpair: file.gpair.clone(),
                                ino: file.ino,
                                path: bytes(path),
                                since_ms: now,
                                reason: reason.to_string(),
                            },
                        )
                    });
                    return Ok(ExclusiveGuard {
                        sessions: Arc::clone(self),
                        file: file.clone(),
                        token,
                    });
                }
                ExclusiveStep::Wait { all_busy: true, .. } => {
                    self.abandon(file);
                    return Err(Deferred(format!("deferred: held open for write by {who}")));
                }
                ExclusiveStep::HeldByOther(other) if tokio::time::Instant::now() >= deadline => {
                    return Err(Deferred(format!(
                        "deferred: the backend holds the file exclusive ({other})"
                    )));
                }
                ExclusiveStep::Wait { .. } if tokio::time::Instant::now() >= deadline => {
                    self.abandon(file);
                    return Err(Deferred(format!(
                        "deferred: held open for write by {who} (no answer to the revoke within {:?})",
                        self.config.revoke_wait
                    )));
                }
                _ => {}
            }
            tokio::select! {
                _ = tokio::time::timeout_at(deadline, changed) => {}
                () = cancel.cancelled() => {
                    self.abandon(file);
                    return Err(Deferred("deferred: cancelled while waiting for write caps".into()));
                }
            }
        }
    }

    fn holders_text(st: &State, holders: &[Cap]) -> String {
        let mut parts: Vec<String> = holders
            .iter()
            .map(|c| {
                let client = st
                    .sessions
                    .get(&c.session)
                    .map_or("?", |s| s.client.as_str());
                format!("session {} on client {}", c.session, client)
            })
            .collect();
        parts.sort();
        parts.dedup();
        parts.join(", ")
    }

    fn abandon(&self, file: &FileId) {
        self.state().caps.abandon_exclusive(file);
    }

    /// The session whose write cap on `file` was dropped by an eviction after `since_ms`.
    pub fn evicted_writer_since(&self, file: &FileId, since_ms: i64) -> Option<String> {
        let st = self.state();
        let e = st.evicted_writes.get(file)?;
        (e.at_ms >= since_ms).then(|| format!("session {} on client {}", e.session, e.client))
    }

    /// The write caps held on `file` (for a quick look before an offload uploads).
    pub fn has_writers(&self, file: &FileId) -> bool {
        !self.state().caps.writers(file).is_empty()
    }

    /// Shutdown: the backend gives back every exclusive cap it holds.
    pub fn shutdown(&self) {
        let gone = self.state().caps.clear_exclusive();
        for (file, _) in &gone {
            self.persist("a released exclusive cap", |c| {
                c.delete(CF_SESSIONS, &exclusive_key(file))
            });
        }
        if !gone.is_empty() {
            tracing::info!(caps = gone.len(), "released the backend's exclusive caps");
        }
        self.changed.notify_waiters();
    }
}

/// The daemon's part: loads the sessions of the previous run (purging stale exclusive
/// caps), hands them to the migration engine, marks files dirty on evictions, and starts
/// the lease reaper.
pub fn start(
    catalog: &Arc<Catalog>,
    config: &crate::config::Config,
    tiering: &Arc<crate::tier::Tiering>,
    cancel: CancellationToken,
) -> Result<Arc<Sessions>, crate::catalog::CatalogError> {
    let sessions = Arc::new(tokio::task::block_in_place(|| {
        Sessions::load(Arc::clone(catalog), config.sessions, now_ms())
    })?);
    let t = Arc::downgrade(tiering);
    sessions.on_evicted_write(Box::new(move |_, path, why| {
        if let Some(t) = t.upgrade() {
            t.mark_dirty_abs(path, why);
        }
    }));
    let _ = tiering.sessions.set(Arc::clone(&sessions));
    sessions.start_reaper(cancel);
    Ok(sessions)
}

/// The backend's exclusive cap on a file, given back on drop.
pub struct ExclusiveGuard {
    sessions: Arc<Sessions>,
    file: FileId,
    token: u64,
}

impl Drop for ExclusiveGuard {
    fn drop(&mut self) {
        let released = self
            .sessions
            .state()
            .caps
            .release_exclusive(&self.file, self.token);
        if released {
            self.sessions.persist("a released exclusive cap", |c| {
                c.delete(CF_SESSIONS, &exclusive_key(&self.file))
            });
        }
        self.sessions.changed.notify_waiters();
    }
}

/// The gRPC side of sessions and caps (Mount caps RPCs and the admin listing), kept here
/// so `grpc.rs` only delegates.
pub mod rpc {
    use std::os::unix::ffi::OsStrExt;
    use std::path::PathBuf;
    use std::pin::Pin;
    use std::sync::Arc;

    use gpair_proto::{now_ms, pb};
    use tonic::Status;

    use super::{SessionError, SessionState, Sessions};
    use crate::caps::{CapKind, FileId};
    use crate::tier::Tiering;

    pub type RevokeStream =
        Pin<Box<dyn futures::Stream<Item = Result<pb::CapRevoke, Status>> + Send + 'static>>;

    fn status(e: SessionError) -> Status {
        match e {
            SessionError::Unknown(_) => Status::not_found(e.to_string()),
            SessionError::TooMany | SessionError::TooManyCaps(_) => {
                Status::resource_exhausted(e.to_string())
            }
            // A conflict the mount retries later, not a bad request.
            SessionError::Refused { .. } => Status::aborted(e.to_string()),
        }
    }

    fn kind_pb(k: CapKind) -> pb::CapKind {
        match k {
            CapKind::Read => pb::CapKind::Read,
            CapKind::Write => pb::CapKind::Write,
            CapKind::Exclusive => pb::CapKind::Exclusive,
        }
    }

    fn kind_of(raw: i32) -> Result<CapKind, Status> {
        match pb::CapKind::try_from(raw) {
            Ok(pb::CapKind::Read) => Ok(CapKind::Read),
            Ok(pb::CapKind::Write) => Ok(CapKind::Write),
            Ok(pb::CapKind::Exclusive) => Err(Status::invalid_argument(
                "kind: the exclusive cap is the backend's own; mounts take read or write",
            )),
            _ => Err(Status::invalid_argument(format!(
                "kind {raw}: not a cap kind (read = 1, write = 2)"
            ))),
        }
    }

    fn abs(field: &str, raw: &[u8]) -> Result<PathBuf, Status> {
        if raw.is_empty() || raw[0] != b'/' || raw.contains(&0) || raw.len() > 4096 {
            return Err(Status::invalid_argument(format!(
                "{field}: an absolute path without NUL bytes, at most 4096 bytes"
            )));
        }
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(raw)))
    }

    fn file_of(tiering: &Tiering, path: &[u8], ino: u64) -> Result<(FileId, PathBuf), Status> {
        let p = abs("path", path)?;
        if ino == 0 {
            return Err(Status::invalid_argument(
                "ino: the file's east inode number",
            ));
        }
        let (rec, _) = tiering
            .locate_abs(&p)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok((
            FileId {
                gpair: rec.name,
                ino,
            },
            p,
        ))
    }

    pub async fn take_cap(
        sessions: &Sessions,
        tiering: &Tiering,
        r: pb::CapRequest,
    ) -> Result<pb::CapReply, Status> {
        let kind = kind_of(r.kind)?;
        let (file, path) = file_of(tiering, &r.path, r.ino)?;
        match sessions.take(&r.session, &file, &path, kind).await {
            Ok(()) => Ok(pb::CapReply { known: true }),
            Err(SessionError::Unknown(_)) => Ok(pb::CapReply { known: false }),
            Err(e) => Err(status(e)),
        }
    }

    pub fn release_cap(
        sessions: &Sessions,
        tiering: &Tiering,
        r: pb::CapRequest,
    ) -> Result<pb::CapReply, Status> {
        let kind = kind_of(r.kind)?;
        let (file, _) = file_of(tiering, &r.path, r.ino)?;
        match sessions.release(&r.session, &file, kind) {
            Ok(_) => Ok(pb::CapReply { known: true }),
            Err(SessionError::Unknown(_)) => Ok(pb::CapReply { known: false }),
            Err(e) => Err(status(e)),
        }
    }

    pub fn answer_revoke(
        sessions: &Sessions,
        tiering: &Tiering,
        r: pb::RevokeAnswer,
    ) -> Result<pb::CapReply, Status> {
        let (file, _) = file_of(tiering, &r.path, r.ino)?;
        match sessions.busy(&r.session, &file) {
            Ok(()) => Ok(pb::CapReply { known: true }),
            Err(SessionError::Unknown(_)) => Ok(pb::CapReply { known: false }),
            Err(e) => Err(status(e)),
        }
    }

    pub fn reclaim_caps(
        sessions: &Sessions,
        tiering: &Tiering,
        r: pb::ReclaimCapsRequest,
    ) -> Result<pb::ReclaimCapsReply, Status> {
        let mut caps = Vec::with_capacity(r.caps.len());
        for c in &r.caps {
            let kind = kind_of(c.kind)?;
            match file_of(tiering, &c.path, c.ino) {
                Ok((file, path)) => caps.push((file, path, kind)),
                // A file whose share was unbound meanwhile: nothing to protect.
                Err(e) if e.code() == tonic::Code::FailedPrecondition => {}
                Err(e) => return Err(e),
            }
        }
        match sessions.reclaim(&r.session, caps, now_ms()) {
            Ok((granted, refused)) => Ok(pb::ReclaimCapsReply {
                known: true,
                granted,
                refused,
            }),
            Err(SessionError::Unknown(_)) => Ok(pb::ReclaimCapsReply {
                known: false,
                ..Default::default()
            }),
            Err(e) => Err(status(e)),
        }
    }

    pub fn watch_revokes(sessions: &Sessions, r: pb::SessionRef) -> Result<RevokeStream, Status> {
        let rx = sessions.watch_revokes(&r.id).map_err(status)?;
        let stream = futures::StreamExt::take_until(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            sessions.closing_token().cancelled_owned(),
        );
        Ok(Box::pin(futures::StreamExt::map(stream, |(file, cap)| {
            Ok(pb::CapRevoke {
                path: cap.path.as_os_str().as_bytes().to_vec(),
                ino: file.ino,
                kind: kind_pb(cap.kind) as i32,
                reason: "the backend needs the file exclusive (offload)".into(),
            })
        })))
    }

    fn sessions_of(tiering: &Tiering) -> Result<&Arc<Sessions>, Status> {
        tiering
            .sessions
            .get()
            .ok_or_else(|| Status::unavailable("mount sessions are not set up in this backend"))
    }

    fn session_pb(s: &super::Session, caps: usize, lease_ms: u64) -> pb::SessionInfo {
        pb::SessionInfo {
            id: s.id.clone(),
            client: s.client.clone(),
            share: s.share.as_os_str().as_bytes().to_vec(),
            mountpoint: s.mountpoint.as_os_str().as_bytes().to_vec(),
            opened_ms: s.opened_ms,
            last_heartbeat_ms: s.last_heartbeat_ms,
            caps: u32::try_from(caps).unwrap_or(u32::MAX),
            state: match s.state {
                SessionState::Active => "active",
                SessionState::Reclaiming => "reclaiming",
            }
            .into(),
            lease_ms,
        }
    }

    pub fn list_caps(
        tiering: &Tiering,
        r: pb::ListCapsRequest,
    ) -> Result<pb::ListCapsResponse, Status> {
        let sessions = sessions_of(tiering)?;
        let filter = if r.path.is_empty() {
            None
        } else {
            Some(abs("path", &r.path)?)
        };
        let under = |p: &std::path::Path| filter.as_ref().is_none_or(|f| p.starts_with(f));
        let (caps, exclusives) = sessions.caps();
        let mut out = Vec::new();
        for (file, cap) in caps {
            if !under(&cap.path) {
                continue;
            }
            let client = sessions
                .session(&cap.session)
                .map(|s| s.client)
                .unwrap_or_default();
            let requested = match cap.state {
                crate::caps::CapState::RevokeRequested { requested_ms, .. } => requested_ms,
                _ => 0,
            };
            out.push(pb::CapInfo {
                session: cap.session.clone(),
                client,
                path: cap.path.as_os_str().as_bytes().to_vec(),
                ino: file.ino,
                gpair: file.gpair.clone(),
                kind: kind_pb(cap.kind) as i32,
                state: cap.state.label().into(),
                since_ms: cap.state.since_ms(),
                revoke_requested_ms: requested,
            });
        }
        for (file, x) in exclusives {
            if !under(&x.path) {
                continue;
            }
            out.push(pb::CapInfo {
                session: String::new(),
                client: "backend".into(),
                path: x.path.as_os_str().as_bytes().to_vec(),
                ino: file.ino,
                gpair: file.gpair.clone(),
                kind: pb::CapKind::Exclusive as i32,
                state: "granted".into(),
                since_ms: x.since_ms,
                revoke_requested_ms: 0,
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path).then(a.session.cmp(&b.session)));
        Ok(pb::ListCapsResponse { caps: out })
    }

    pub fn list_sessions(tiering: &Tiering) -> Result<pb::ListSessionsResponse, Status> {
        let sessions = sessions_of(tiering)?;
        let now = now_ms();
        let lease_ms = u64::try_from(sessions.config().lease.as_millis()).unwrap_or(u64::MAX);
        Ok(pb::ListSessionsResponse {
            sessions: sessions
                .list(now)
                .iter()
                .map(|(s, n)| session_pb(s, *n, lease_ms))
                .collect(),
            reconnect_window_left_ms: u64::try_from(sessions.window_left(now).as_millis())
                .unwrap_or(u64::MAX),
        })
    }

    pub fn evict_session(
        tiering: &Tiering,
        r: pb::EvictSessionRequest,
    ) -> Result<pb::EvictSessionResponse, Status> {
        let sessions = sessions_of(tiering)?;
        if r.id.is_empty() || r.id.len() > 64 {
            return Err(Status::invalid_argument(
                "id: a session id as `gpair session ls` shows it",
            ));
        }
        let lease_ms = u64::try_from(sessions.config().lease.as_millis()).unwrap_or(u64::MAX);
        if let Some((s, dropped)) = sessions.evict_by_admin(&r.id, now_ms()) {
            return Ok(pb::EvictSessionResponse {
                session: Some(session_pb(&s, 0, lease_ms)),
                caps_dropped: u32::try_from(dropped).unwrap_or(u32::MAX),
                fences_cleared: 0,
            });
        }
        // An evicted session whose files are fenced: the administrator says it is gone.
        match sessions.lift_fences(&r.id) {
            0 => Err(Status::not_found(format!(
                "no mount session {:?}, and no evicted session of that id fences files (see `gpair session ls`)",
                r.id
            ))),
            n => Ok(pb::EvictSessionResponse {
                session: None,
                caps_dropped: 0,
                fences_cleared: u32::try_from(n).unwrap_or(u32::MAX),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ino: u64) -> FileId {
        FileId {
            gpair: "p1".into(),
            ino,
        }
    }

    #[test]
    fn sessions_live_while_heartbeating() {
        let s = Sessions::default();
        let a = s
            .open("h:1".into(), "/s".into(), "/m".into(), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        let lease = ms(s.config.lease);
        assert!(s.heartbeat(&a.id, lease).known);
        assert!(s.is_open(&a.id, 2 * lease));
        // Silent past its lease: gone, and the heartbeat says so.
        assert!(!s.heartbeat(&a.id, 2 * lease + 1 + lease).known);
        assert!(s.list(0).is_empty());
        let b = s
            .open("h:2".into(), "/s".into(), "/m".into(), 0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.close(&b.id));
        assert!(!s.close(&b.id));
    }

    fn config() -> SessionConfig {
        SessionConfig {
            heartbeat: Duration::from_millis(100),
            lease: Duration::from_secs(1),
            reconnect_window: Duration::from_secs(2),
            revoke_wait: Duration::from_millis(500),
        }
    }

    #[tokio::test]
    async fn offload_defers_a_busy_writer_and_gets_the_file_after_close() {
        let s = Arc::new(Sessions::in_memory(config()));
        let a = s
            .open("host:1".into(), "/s".into(), "/m".into(), now_ms())
            .unwrap_or_else(|e| panic!("{e}"));
        s.take(&a.id, &file(1), Path::new("/s/x"), CapKind::Write)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut revokes = s.watch_revokes(&a.id).unwrap_or_else(|e| panic!("{e}"));
        let cancel = CancellationToken::new();
        let s2 = Arc::clone(&s);
        let c2 = cancel.clone();
        let want = tokio::spawn(async move {
            s2.exclusive(&file(1), Path::new("/s/x"), "offload", &c2)
                .await
                .map(|_| ())
        });
        // The mount gets the revoke and answers busy: deferred at once, naming it.
        let (f, rev) = revokes.recv().await.unwrap_or_else(|| panic!("no revoke"));
        assert_eq!(f, file(1));
        assert_eq!(rev.path, Path::new("/s/x"));
        s.busy(&a.id, &file(1)).unwrap_or_else(|e| panic!("{e}"));
        let got = want.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got,
            Err(Deferred(format!(
                "deferred: held open for write by session {} on client host:1",
                a.id
            )))
        );
        // Closed: the next offload gets the file, and a new writer waits for it.
        assert_eq!(s.release(&a.id, &file(1), CapKind::Write), Ok(true));
        let guard = s
            .exclusive(&file(1), Path::new("/s/x"), "offload", &cancel)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let s3 = Arc::clone(&s);
        let id = a.id.clone();
        let writer = tokio::spawn(async move {
            s3.take(&id, &file(1), Path::new("/s/x"), CapKind::Write)
                .await
        });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished());
        drop(guard);
        assert_eq!(writer.await.ok(), Some(Ok(())));
    }

    #[tokio::test]
    async fn an_unanswered_revoke_defers_after_the_wait() {
        let s = Arc::new(Sessions::in_memory(config()));
        let a = s
            .open("host:1".into(), "/s".into(), "/m".into(), now_ms())
            .unwrap_or_else(|e| panic!("{e}"));
        s.take(&a.id, &file(1), Path::new("/s/x"), CapKind::Write)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let got = s
            .exclusive(
                &file(1),
                Path::new("/s/x"),
                "offload",
                &CancellationToken::new(),
            )
            .await
            .map(|_| ());
        let Err(Deferred(why)) = got else {
            panic!("{got:?}")
        };
        assert!(why.contains("no answer to the revoke"), "{why}");
        // The revoke is withdrawn.
        let (caps, _) = s.caps();
        assert_eq!(caps[0].1.state.label(), "granted");
    }

    #[tokio::test]
    async fn eviction_drops_caps_marks_dirty_and_aborts_offloads_in_flight() {
        let s = Arc::new(Sessions::in_memory(config()));
        let marked = Arc::new(Mutex::new(Vec::new()));
        let m2 = Arc::clone(&marked);
        s.on_evicted_write(Box::new(move |f, p, why| {
            m2.lock().unwrap_or_else(PoisonError::into_inner).push((
                f.clone(),
                p.to_path_buf(),
                why.to_string(),
            ));
        }));
        let t0 = now_ms();
        let a = s
            .open("host:1".into(), "/s".into(), "/m".into(), t0)
            .unwrap_or_else(|e| panic!("{e}"));
        s.take(&a.id, &file(1), Path::new("/s/x"), CapKind::Write)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        s.expire(t0 + ms(s.config.lease) + 1);
        assert!(s.list(t0).is_empty());
        let m = marked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(m.len(), 1);
        assert!(m[0].2.contains("evicted"), "{}", m[0].2);
        assert!(s.evicted_writer_since(&file(1), t0).is_some());
        assert!(s
            .evicted_writer_since(&file(1), t0 + ms(s.config.lease) + 2)
            .is_none());
        assert!(!s.heartbeat(&a.id, t0).known);
    }

    /// A writer evicted for going quiet may be alive (partitioned): its file is fenced until
    /// its mount is back or an administrator lifts the fence. One of this host known to be
    /// gone, or one an administrator evicted, fences nothing.
    #[tokio::test]
    async fn evicted_live_writers_fence_their_files_until_they_are_back() {
        let s = Arc::new(Sessions::in_memory(config()));
        let t0 = now_ms();
        let take = |id: String, ino: u64| {
            let s = Arc::clone(&s);
            async move {
                s.take(&id, &file(ino), Path::new("/s/x"), CapKind::Write)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        };
        let try_exclusive = |ino: u64| {
            let s = Arc::clone(&s);
            async move {
                s.exclusive(
                    &file(ino),
                    Path::new("/s/x"),
                    "offload",
                    &CancellationToken::new(),
                )
                .await
                .map(|_| ())
            }
        };
        // Another host (maybe partitioned), this host's live process, this host's gone one.
        let here = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let far = s
            .open("far-host:7".into(), "/s".into(), "/m1".into(), t0)
            .unwrap_or_else(|e| panic!("{e}"));
        let alive = format!("{}:{}", here.trim(), std::process::id());
        let near = s
            .open(alive, "/s".into(), "/m2".into(), t0)
            .unwrap_or_else(|e| panic!("{e}"));
        let gone = format!("{}:{}", here.trim(), u32::MAX - 1);
        let dead = s
            .open(gone, "/s".into(), "/m3".into(), t0)
            .unwrap_or_else(|e| panic!("{e}"));
        take(far.id.clone(), 1).await;
        take(near.id.clone(), 2).await;
        take(dead.id.clone(), 3).await;
        s.expire(t0 + ms(s.config.lease) + 1);
        assert!(s.list(t0).is_empty());
        for ino in [1, 2] {
            let got = try_exclusive(ino).await;
            assert!(
                matches!(&got, Err(Deferred(why)) if why.contains("may still be writing")),
                "{got:?}"
            );
            assert!(s.fenced(&file(ino)).is_some());
        }
        assert!(
            try_exclusive(3).await.is_ok(),
            "a writer known gone fences nothing"
        );
        // The administrator lifts the far one's fence.
        assert_eq!(s.lift_fences(&far.id), 1);
        assert_eq!(s.lift_fences(&far.id), 0);
        assert!(try_exclusive(1).await.is_ok());
        // The near mount comes back (same host, same mount point, a new session).
        let back = format!("{}:{}", here.trim(), std::process::id());
        s.open(back, "/s".into(), "/m2".into(), now_ms())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.fenced(&file(2)).is_none());
        assert!(try_exclusive(2).await.is_ok());
        // An administrator's eviction fences nothing.
        let t1 = now_ms();
        let other = s
            .open("far-host:8".into(), "/s".into(), "/m4".into(), t1)
            .unwrap_or_else(|e| panic!("{e}"));
        take(other.id.clone(), 4).await;
        assert!(s.evict_by_admin(&other.id, t1).is_some());
        assert!(s.fenced(&file(4)).is_none());
    }

    #[test]
    fn restart_reclaims_and_evicts_sessions_that_do_not_come_back() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let catalog = Arc::new(Catalog::open(dir.path()).unwrap_or_else(|e| panic!("{e}")));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let t0 = now_ms();
        let (a, b) = {
            let s = Arc::new(
                Sessions::load(Arc::clone(&catalog), config(), t0)
                    .unwrap_or_else(|e| panic!("{e}")),
            );
            let a = s
                .open("h:1".into(), "/s".into(), "/m1".into(), t0)
                .unwrap_or_else(|e| panic!("{e}"));
            let b = s
                .open("h:2".into(), "/s".into(), "/m2".into(), t0)
                .unwrap_or_else(|e| panic!("{e}"));
            rt.block_on(async {
                s.take(&a.id, &file(1), Path::new("/s/x"), CapKind::Write)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                s.take(&b.id, &file(2), Path::new("/s/y"), CapKind::Write)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                // A crash while holding an exclusive cap leaves its record.
                let g = s
                    .exclusive(
                        &file(3),
                        Path::new("/s/z"),
                        "offload",
                        &CancellationToken::new(),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                std::mem::forget(g);
            });
            (a, b)
        };
        let t1 = t0 + 10;
        // A lease longer than the window: only the window decides here.
        let long = SessionConfig {
            lease: Duration::from_secs(10),
            ..config()
        };
        let s = Sessions::load(Arc::clone(&catalog), long, t1).unwrap_or_else(|e| panic!("{e}"));
        // The stale exclusive cap is gone; both sessions are back, reclaiming, caps in force.
        let (caps, exclusives) = s.caps();
        assert!(exclusives.is_empty());
        assert_eq!(caps.len(), 2);
        assert!(catalog
            .scan::<serde_json::Value>(CF_SESSIONS, b"x\0", |_| {})
            .unwrap_or_default()
            .is_empty());
        let beat = s.heartbeat(&a.id, t1 + 1);
        assert_eq!(
            beat,
            Beat {
                known: true,
                reclaim: true
            }
        );
        assert_eq!(
            s.reclaim(
                &a.id,
                vec![(file(1), "/s/x".into(), CapKind::Write)],
                t1 + 2
            ),
            Ok((1, 0))
        );
        // Past the window: b never came back and is evicted; a stays, with its cap.
        s.expire(t1 + ms(config().reconnect_window) + 1);
        let left: Vec<String> = s.list(t1 + 3).into_iter().map(|(x, _)| x.id).collect();
        assert_eq!(left, vec![a.id.clone()]);
        assert!(!s.heartbeat(&b.id, t1 + 4).known);
        let (caps, _) = s.caps();
        assert_eq!(caps.len(), 1);
        assert_eq!(caps[0].1.session, a.id);
    }
}
