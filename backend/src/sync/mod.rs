//! Metadata sync east → west (DESIGN 5.1).
//!
//! Change sources — the initial and periodic scans ([`scan`]), the inotify watcher
//! ([`watch`]) and mount clients' notifications — all end in [`Engine::enqueue`], which
//! writes a durable outbox record keyed by path (so ten changes to one file before a worker
//! gets to it are one update) and schedules it. A bounded pool of workers applies records to
//! west. Every apply re-reads east first, so a record only says "look at this path", never
//! "this is what it was": stale or duplicated records are harmless. One record that keeps
//! failing backs off on its own and never blocks the others; a gpeer that answers with
//! transient errors is paused with capped, jittered backoff and its client is rebuilt before
//! work resumes.

mod batch;
pub mod queue;
pub mod scan;
pub mod watch;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gpair_proto::now_ms;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::{gpair_key, split_gpair_key, Catalog, CatalogError, CF_ENTRIES, CF_OUTBOX};
use crate::config::SyncConfig;
use crate::entry::{EntryKind, EntryMeta};
use crate::registry::{GpairRecord, GpeerRecord};
use crate::west::batch::BatchClient;
use crate::west::{keys::west_key, GpeerConn, WestError, WestStore};

use queue::{ItemKey, Queue};

/// Delay before applying a change seen by the watcher or a mount client, so a burst of
/// writes to one file becomes one west update.
pub const SETTLE_MS: i64 = 200;

/// What the outbox should make true on west for one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Make west's entry match east's current state (creates, updates, or deletes if gone).
    Put,
    /// Remove west's entry (if east still has the path at apply time, this becomes a Put).
    Delete { is_dir: bool },
    /// Move west's entry (or subtree) from `from` to this path.
    Rename { from: Vec<u8>, is_dir: bool },
    /// SetAttrObj on the file's west object (DESIGN 4.4). Kept under its own key
    /// ([`attr_key`]) so it never coalesces with the path's metadata update; a later SetAttr
    /// of the same file replaces an earlier one not yet applied (the last decision wins).
    SetAttr { attr: AttrOp },
}

/// The two SetAttrObj calls, as stored in the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttrOp {
    /// `ltr_local_to_remote`: west owns the data.
    Ltr,
    /// `rtl_remote_to_local`: east owns the data; west keeps a placeholder.
    Rtl,
}

impl AttrOp {
    pub fn west(self) -> crate::west::SetAttr {
        match self {
            Self::Ltr => crate::west::SetAttr::LocalToRemote,
            Self::Rtl => crate::west::SetAttr::RemoteToLocal,
        }
    }
}

/// Suffix that makes a SetAttr record's outbox key (a path never holds a NUL byte).
pub(crate) const ATTR_SUFFIX: &[u8] = b"\0setattr";

/// The outbox key of a file's SetAttr record: `gpair ‖ 0 ‖ path ‖ 0 ‖ "setattr"`.
pub fn attr_key(gpair: &str, path: &[u8]) -> Vec<u8> {
    let mut k = gpair_key(gpair, path);
    k.extend_from_slice(ATTR_SUFFIX);
    k
}

/// The file path of an outbox key's path part, and whether it is a SetAttr record.
pub fn outbox_path(path: &[u8]) -> (&[u8], bool) {
    match path.strip_suffix(ATTR_SUFFIX) {
        Some(p) => (p, true),
        None => (path, false),
    }
}

/// What a waiter of a SetAttr record learns: applied, or the permanent error of an attempt.
pub type AttrOutcome = Result<(), String>;

/// Someone waiting for a SetAttr record of `attr` to be applied.
type AttrWaiter = (AttrOp, tokio::sync::oneshot::Sender<AttrOutcome>);

/// A durable outbox record (catalog `outbox` CF, key `gpair ‖ 0 ‖ path`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub op: Op,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub next_due_ms: i64,
    pub enqueued_ms: i64,
}

/// What the catalog remembers of an entry: the metadata last written to west.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EntryRecord {
    pub meta: EntryMeta,
    pub synced_at_ms: i64,
}

/// Whether two metadata snapshots differ in anything west records.
pub fn differs(a: &EntryMeta, b: &EntryMeta) -> bool {
    a.kind != b.kind
        || a.size != b.size
        || a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.mtime_ns != b.mtime_ns
        || a.symlink_target != b.symlink_target
        || a.rdev != b.rdev
}

/// Creates west clients; the daemon passes the real one, tests an in-memory one.
pub type WestFactory = Arc<dyn Fn(&GpeerConn) -> Arc<dyn WestStore> + Send + Sync>;

/// Health of a gpeer as seen by the workers.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub consecutive_failures: u32,
    pub last_error: String,
    pub last_error_at_ms: i64,
    pub paused_until_ms: i64,
    pub last_success_at_ms: i64,
    /// When the current state began: the first failure of an outage, or its end.
    pub since_ms: i64,
    /// Class of `last_error` (`transient`…), empty when there is none.
    pub last_error_class: &'static str,
    needs_rebuild: bool,
    /// West answers counted when the last failure was recorded: a success without a newer
    /// answer (an item that needed no west call) is no evidence that west is back.
    answers_at_failure: u64,
}

/// Consecutive transient failures after which a gpeer counts as down rather than retrying.
pub const DOWN_AFTER_FAILURES: u32 = 3;

impl Health {
    pub fn is_retrying(&self) -> bool {
        self.consecutive_failures > 0
    }

    /// Several transient failures in a row: west is down (work waits, nothing fails).
    pub fn is_down(&self) -> bool {
        self.consecutive_failures >= DOWN_AFTER_FAILURES
    }
}

pub struct GpeerRt {
    pub rec: GpeerRecord,
    store: Arc<dyn WestStore>,
    /// Calls west answered through `store` (see [`crate::west::observed`]).
    answers: Arc<AtomicU64>,
    /// Batched metadata updates (gateway dialect over http).
    batch: Option<Arc<BatchClient>>,
    pub health: Health,
}

fn batch_client(conn: &GpeerConn) -> Option<Arc<BatchClient>> {
    (conn.dialect == crate::west::Dialect::Gateway && conn.endpoint.starts_with("http://"))
        .then(|| Arc::new(BatchClient::new(conn)))
}

/// Counters of one gpair, shown by `sync status`.
#[derive(Debug, Default)]
pub struct GpairStats {
    pub entries: AtomicU64,
    pub applied: AtomicU64,
    pub last_scan_started_ms: AtomicI64,
    pub last_scan_finished_ms: AtomicI64,
    pub last_scan_entries: AtomicU64,
    pub watcher_active: AtomicBool,
    pub scan_running: AtomicBool,
}

pub struct GpairRt {
    pub rec: GpairRecord,
    pub cancel: CancellationToken,
    pub stats: Arc<GpairStats>,
    /// Asks the gpair's scan loop for a reconciliation scan now (watcher overflow etc.).
    pub rescan: Arc<Notify>,
}

#[derive(Default)]
struct State {
    gpeers: HashMap<String, GpeerRt>,
    gpairs: HashMap<String, GpairRt>,
}

pub struct Engine {
    pub catalog: Arc<Catalog>,
    /// West usage per gpair (offloaded files and reservations).
    pub quotas: crate::tier::quota::Quotas,
    /// How long the west data of any deleted offloaded file is kept in the trash at least
    /// (`tier.deleted_grace_hours`, set by the migration engine): a deletion seen by sync may
    /// be half of a rename it missed.
    pub deleted_grace_ms: AtomicI64,
    /// The stub record's attribute name (set by the migration engine at start).
    pub stub_xattr: std::sync::OnceLock<String>,
    /// Waiters of SetAttr records, by outbox key.
    attr_waiters: Mutex<HashMap<ItemKey, Vec<AttrWaiter>>>,
    pub config: SyncConfig,
    west_factory: WestFactory,
    state: Mutex<State>,
    queue: Mutex<Queue>,
    wake: Notify,
    pub cancel: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("west: {0}")]
    West(#[from] WestError),
    #[error("east {path}: {source}")]
    East {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is being offloaded or recalled: its metadata update waits (a concurrent
    /// one could undo the migration's SetAttrObj on west).
    #[error("a migration of this file is in flight")]
    Busy,
}

/// How long a metadata update waits for a migration of its file before looking again.
const BUSY_RETRY_MS: i64 = 300;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent between statements, so a panic
    // elsewhere does not make it unusable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Engine {
    pub fn new(
        catalog: Arc<Catalog>,
        config: SyncConfig,
        west_factory: WestFactory,
        cancel: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            catalog,
            quotas: crate::tier::quota::Quotas::default(),
            stub_xattr: std::sync::OnceLock::new(),
            deleted_grace_ms: AtomicI64::new(0),
            attr_waiters: Mutex::new(HashMap::new()),
            config,
            west_factory,
            state: Mutex::new(State::default()),
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            cancel,
        })
    }

    // ------------------------------------------------------------ registry runtime

    pub fn add_gpeer(&self, rec: GpeerRecord) {
        let answers = Arc::new(AtomicU64::new(0));
        let store = crate::west::observed::AnsweredWest::wrap(
            (self.west_factory)(&rec.conn),
            Arc::clone(&answers),
        );
        let batch = if self.config.batch {
            batch_client(&rec.conn)
        } else {
            None
        };
        lock(&self.state).gpeers.insert(
            rec.name.clone(),
            GpeerRt {
                rec,
                store,
                answers,
                batch,
                health: Health::default(),
            },
        );
    }

    pub fn remove_gpeer(&self, name: &str) {
        lock(&self.state).gpeers.remove(name);
    }

    pub fn west_for(&self, gpeer: &str) -> Option<Arc<dyn WestStore>> {
        lock(&self.state)
            .gpeers
            .get(gpeer)
            .map(|g| Arc::clone(&g.store))
    }

    /// A fresh client for a gpeer record (used by checks before the gpeer is registered).
    pub fn connect(&self, conn: &GpeerConn) -> Arc<dyn WestStore> {
        (self.west_factory)(conn)
    }

    pub fn gpeer_health(&self, name: &str) -> Option<Health> {
        lock(&self.state).gpeers.get(name).map(|g| g.health.clone())
    }

    pub fn gpeer_records(&self) -> Vec<GpeerRecord> {
        let mut v: Vec<_> = lock(&self.state)
            .gpeers
            .values()
            .map(|g| g.rec.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn gpair_records(&self) -> Vec<(GpairRecord, Arc<GpairStats>)> {
        let mut v: Vec<_> = lock(&self.state)
            .gpairs
            .values()
            .map(|g| (g.rec.clone(), Arc::clone(&g.stats)))
            .collect();
        v.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        v
    }

    pub fn gpair(&self, name: &str) -> Option<(GpairRecord, Arc<GpairStats>)> {
        lock(&self.state)
            .gpairs
            .get(name)
            .map(|g| (g.rec.clone(), Arc::clone(&g.stats)))
    }

    pub fn set_gpair_record(&self, rec: GpairRecord) {
        if let Some(g) = lock(&self.state).gpairs.get_mut(&rec.name) {
            g.rec = rec;
        }
    }

    /// Registers a gpair and starts its watcher and scan loop.
    pub fn start_gpair(self: &Arc<Self>, rec: GpairRecord) {
        let stats = Arc::new(GpairStats::default());
        let prefix = gpair_key(&rec.name, b"");
        let mut entries = 0u64;
        let _ = self.catalog.for_each_raw(CF_ENTRIES, &prefix, |_, _| {
            entries += 1;
            true
        });
        stats.entries.store(entries, Ordering::Relaxed);
        let cancel = self.cancel.child_token();
        let rescan = Arc::new(Notify::new());
        let rt = GpairRt {
            rec: rec.clone(),
            cancel: cancel.clone(),
            stats: Arc::clone(&stats),
            rescan: Arc::clone(&rescan),
        };
        lock(&self.state).gpairs.insert(rec.name.clone(), rt);
        if self.config.watch {
            watch::start(
                Arc::clone(self),
                rec.clone(),
                cancel.clone(),
                Arc::clone(&stats),
                Arc::clone(&rescan),
            );
        }
        tokio::spawn(scan::scan_loop(
            Arc::clone(self),
            rec,
            cancel,
            stats,
            rescan,
        ));
    }

    /// Stops a gpair's work and forgets its records (unbind).
    pub async fn stop_gpair(&self, name: &str) -> Result<(), SyncError> {
        let prefix = gpair_key(name, b"");
        // Under the queue lock: an enqueue or an operation's catalog write for this binding
        // either happens before (and is deleted below) or sees it gone (see `while_bound`).
        let rt = {
            let mut q = lock(&self.queue);
            let rt = lock(&self.state).gpairs.remove(name);
            q.remove_prefix(&prefix);
            rt
        };
        if let Some(rt) = rt {
            rt.cancel.cancel();
        }
        self.fail_attr_waiters(&prefix, "the gpair was unbound");
        self.quotas.forget_gpair(name);
        let catalog = Arc::clone(&self.catalog);
        tokio::task::spawn_blocking(move || {
            catalog.delete_prefix(CF_OUTBOX, &prefix)?;
            catalog.delete_prefix(crate::catalog::CF_QUOTA, &prefix)?;
            catalog.delete_prefix(CF_ENTRIES, &prefix)
        })
        .await
        .map_err(|e| SyncError::East {
            path: PathBuf::from(name),
            source: std::io::Error::other(e),
        })??;
        Ok(())
    }

    /// Runs `f` under the queue lock, only if `gpair` is still the binding whose stats are
    /// `stats`: the results of an operation that was in flight when its gpair was unbound
    /// (and perhaps bound again, to another share) are dropped, never written under the
    /// name. `f` must not take the queue lock.
    pub(crate) fn while_bound<T>(
        &self,
        gpair: &str,
        stats: &GpairStats,
        f: impl FnOnce() -> T,
    ) -> Option<T> {
        let _q = lock(&self.queue);
        let bound = lock(&self.state)
            .gpairs
            .get(gpair)
            .is_some_and(|g| std::ptr::eq(Arc::as_ptr(&g.stats), stats));
        bound.then(f)
    }

    fn gpeer_of(&self, gpair: &str) -> Option<String> {
        lock(&self.state)
            .gpairs
            .get(gpair)
            .map(|g| g.rec.gpeer.clone())
    }

    // ------------------------------------------------------------ enqueueing

    /// Records that `path` of `gpair` needs `op` on west, coalescing with what is already
    /// queued for the path, and schedules it `delay_ms` from now. Blocking (catalog write).
    pub fn enqueue(
        &self,
        gpair: &str,
        path: &[u8],
        op: Op,
        delay_ms: i64,
    ) -> Result<(), SyncError> {
        self.enqueue_batch(gpair, vec![(path.to_vec(), op)], delay_ms)
    }

    pub fn enqueue_batch(
        &self,
        gpair: &str,
        items: Vec<(Vec<u8>, Op)>,
        delay_ms: i64,
    ) -> Result<(), SyncError> {
        let now = now_ms();
        let due = now + delay_ms;
        let mut q = lock(&self.queue);
        // Checked under the queue lock: an unbind (`stop_gpair`) is before or after it all.
        let Some(gpeer) = self.gpeer_of(gpair) else {
            return Ok(());
        };
        let mut batch = self.catalog.batch();
        let mut scheduled: Vec<(ItemKey, Option<ItemKey>)> = Vec::with_capacity(items.len());
        let mut extra: Vec<(Vec<u8>, Op)> = Vec::new();
        for (path, op) in items {
            let key = gpair_key(gpair, &path);
            let existing: Option<OutboxRecord> = self.catalog.get(CF_OUTBOX, &key).unwrap_or(None);
            let op = match (existing.as_ref().map(|r| &r.op), op) {
                // A rename not yet applied stays; its apply refreshes the destination.
                (Some(Op::Rename { .. }), Op::Put) => continue,
                // The destination of a pending rename went away: west still has the source.
                (Some(Op::Rename { from, is_dir }), Op::Delete { .. }) => {
                    extra.push((from.clone(), Op::Delete { is_dir: *is_dir }));
                    Op::Delete { is_dir: *is_dir }
                }
                (_, op) => op,
            };
            let from = rename_source(gpair, &op);
            let rec = OutboxRecord {
                op,
                attempts: 0,
                last_error: None,
                next_due_ms: due,
                enqueued_ms: now,
            };
            batch.put(CF_OUTBOX, &key, &rec);
            q.set_failing(&key, false);
            scheduled.push((key, from));
        }
        for (path, op) in extra {
            let key = gpair_key(gpair, &path);
            batch.put(
                CF_OUTBOX,
                &key,
                &OutboxRecord {
                    op,
                    attempts: 0,
                    last_error: None,
                    next_due_ms: due,
                    enqueued_ms: now,
                },
            );
            scheduled.push((key, None));
        }
        batch.commit()?;
        for (key, from) in scheduled {
            q.schedule(&gpeer, key, due, from);
        }
        drop(q);
        self.wake.notify_waiters();
        Ok(())
    }

    /// Loads every outbox record into the schedule (daemon start).
    pub fn load_outbox(&self) -> Result<usize, SyncError> {
        let records: Vec<(Vec<u8>, OutboxRecord)> = self.catalog.scan(
            CF_OUTBOX,
            b"",
            |e| tracing::error!(error = %e, "skipping corrupt outbox record"),
        )?;
        let mut q = lock(&self.queue);
        let mut n = 0;
        for (key, rec) in records {
            let Some((gpair, _)) = split_gpair_key(&key) else {
                continue;
            };
            let Some(gpeer) = self.gpeer_of(gpair) else {
                continue;
            };
            if rec.attempts > 0 {
                q.set_failing(&key, true);
            }
            let from = rename_source(gpair, &rec.op);
            q.schedule(&gpeer, key, rec.next_due_ms, from);
            n += 1;
        }
        Ok(n)
    }

    pub fn queue_counts(&self, gpair: &str) -> (u64, u64) {
        lock(&self.queue).counts(&gpair_key(gpair, b""))
    }

    pub fn total_counts(&self) -> (u64, u64) {
        lock(&self.queue).counts(b"")
    }

    /// The failing records of a gpair: (path, record).
    pub fn failures(&self, gpair: &str, limit: usize) -> Vec<(Vec<u8>, OutboxRecord)> {
        let keys = lock(&self.queue).failing_keys(&gpair_key(gpair, b""), limit);
        keys.into_iter()
            .filter_map(|k| {
                let rec: OutboxRecord = self.catalog.get(CF_OUTBOX, &k).ok().flatten()?;
                Some((outbox_path(split_gpair_key(&k)?.1).0.to_vec(), rec))
            })
            .collect()
    }

    // ------------------------------------------------------------ workers

    /// Runs the worker pool until cancelled.
    pub fn start_workers(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let mut handles: Vec<_> = (0..self.config.workers)
            .map(|_| tokio::spawn(Arc::clone(self).worker()))
            .collect();
        // Group commit: one WAL fsync per tick covers every update since the last one.
        let me = Arc::clone(self);
        handles.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = me.cancel.cancelled() => break,
                }
                let c = Arc::clone(&me.catalog);
                let _ = tokio::task::spawn_blocking(move || c.sync_wal()).await;
            }
        }));
        handles
    }

    async fn worker(self: Arc<Self>) {
        loop {
            let key = tokio::select! {
                () = self.cancel.cancelled() => return,
                key = self.next_item() => key,
            };
            let batch = split_gpair_key(&key)
                .and_then(|(g, _)| self.gpeer_of(g).map(|p| (g.to_owned(), p)))
                .and_then(|(g, p)| {
                    let client = lock(&self.state)
                        .gpeers
                        .get(&p)
                        .and_then(|r| r.batch.clone())?;
                    Some((g, p, client))
                });
            match batch {
                Some((gpair, gpeer, client)) => {
                    let mut keys = vec![key];
                    keys.extend(lock(&self.queue).pop_more(
                        &gpeer,
                        &gpair_key(&gpair, b""),
                        now_ms(),
                        batch::MAX_BATCH - 1,
                    ));
                    self.apply_many(&gpair, &gpeer, client, keys).await;
                }
                None => self.apply(key).await,
            }
        }
    }

    fn paused_gpeers(&self, now: i64) -> HashSet<String> {
        lock(&self.state)
            .gpeers
            .values()
            .filter(|g| g.health.paused_until_ms > now)
            .map(|g| g.rec.name.clone())
            .collect()
    }

    async fn next_item(&self) -> ItemKey {
        loop {
            let woken = self.wake.notified();
            let now = now_ms();
            let paused = self.paused_gpeers(now);
            let next = match lock(&self.queue).pop_ready(now, &paused) {
                Ok(key) => return key,
                Err(next) => next,
            };
            let paused_until = lock(&self.state)
                .gpeers
                .values()
                .map(|g| g.health.paused_until_ms)
                .filter(|&t| t > now)
                .min();
            let wake_at = [next, paused_until].into_iter().flatten().min();
            let wait = wake_at.map_or(1000, |t| (t - now).clamp(1, 1000)) as u64;
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(Duration::from_millis(wait)) => {}
            }
        }
    }

    /// The store of a gpeer, rebuilt first if a transient failure asked for it.
    fn store_for(&self, gpeer: &str) -> Option<Arc<dyn WestStore>> {
        let mut st = lock(&self.state);
        let g = st.gpeers.get_mut(gpeer)?;
        if g.health.needs_rebuild {
            // New client: new DNS lookup, new connections.
            g.store = crate::west::observed::AnsweredWest::wrap(
                (self.west_factory)(&g.rec.conn),
                Arc::clone(&g.answers),
            );
            if g.batch.is_some() {
                g.batch = batch_client(&g.rec.conn);
            }
            g.health.needs_rebuild = false;
            tracing::info!(gpeer, "rebuilt the west client before resuming");
        }
        Some(Arc::clone(&g.store))
    }

    /// A work item succeeded: the gpeer is healthy again if west answered a call since the
    /// last failure (an item that needed no west call proves nothing).
    fn record_item_success(&self, gpeer: &str) {
        let answered = lock(&self.state)
            .gpeers
            .get(gpeer)
            .is_some_and(|g| g.answers.load(Ordering::Relaxed) > g.health.answers_at_failure);
        if answered {
            self.record_success(gpeer);
        }
    }

    /// West answered.
    fn record_success(&self, gpeer: &str) {
        if let Some(g) = lock(&self.state).gpeers.get_mut(gpeer) {
            if g.health.consecutive_failures > 0 {
                tracing::info!(gpeer, "gpeer is healthy again");
                g.health.since_ms = now_ms();
            }
            g.health.consecutive_failures = 0;
            g.health.paused_until_ms = 0;
            g.health.last_success_at_ms = now_ms();
        }
    }

    fn record_transient(&self, gpeer: &str, err: &WestError) {
        let max = self.config.gpeer_backoff_max.as_millis() as i64;
        if let Some(g) = lock(&self.state).gpeers.get_mut(gpeer) {
            let answers = g.answers.load(Ordering::Relaxed);
            let h = &mut g.health;
            h.answers_at_failure = answers;
            let now = now_ms();
            if h.paused_until_ms > now {
                // Other workers' calls that were in flight when the gpeer went away: one
                // outage, not several; keep the pause already chosen.
                h.last_error = err.message.clone();
                h.last_error_class = err.class();
                return;
            }
            if h.consecutive_failures == 0 {
                h.since_ms = now;
            }
            h.consecutive_failures = h.consecutive_failures.saturating_add(1);
            let exp = 100i64
                .saturating_mul(1i64 << h.consecutive_failures.min(16))
                .min(max);
            let jittered = rand::thread_rng().gen_range(exp / 2..=exp.max(1));
            h.paused_until_ms = now_ms() + jittered;
            h.last_error = err.message.clone();
            h.last_error_class = err.class();
            h.last_error_at_ms = now_ms();
            h.needs_rebuild = true;
            tracing::warn!(gpeer, error = %err, retry_in_ms = jittered, "gpeer unreachable; pausing its work");
        }
    }

    fn backoff_ms(&self, attempts: u32) -> i64 {
        let base = self.config.retry_base.as_millis() as i64;
        let max = self.config.retry_max.as_millis() as i64;
        let exp = base.saturating_mul(1i64 << attempts.min(20)).min(max);
        rand::thread_rng().gen_range(exp / 2..=exp.max(1))
    }

    async fn apply(self: &Arc<Self>, key: ItemKey) {
        let Some((gpair, path)) = split_gpair_key(&key).map(|(g, p)| (g.to_owned(), p.to_vec()))
        else {
            lock(&self.queue).finish(&key);
            return;
        };
        let rt = lock(&self.state)
            .gpairs
            .get(&gpair)
            .map(|g| (g.rec.clone(), Arc::clone(&g.stats)));
        let record: Option<OutboxRecord> = self.catalog.get(CF_OUTBOX, &key).unwrap_or(None);
        let (Some((rec, stats)), Some(record)) = (rt, record) else {
            lock(&self.queue).finish(&key);
            return;
        };
        let Some(store) = self.store_for(&rec.gpeer) else {
            lock(&self.queue).finish(&key);
            return;
        };
        let (file_path, is_attr) = outbox_path(&path);
        let result = match &record.op {
            Op::SetAttr { attr } if is_attr => {
                self.apply_setattr(&rec, store.as_ref(), file_path, *attr)
                    .await
            }
            op => {
                self.apply_op(&rec, &stats, store.as_ref(), file_path, op)
                    .await
            }
        };
        let gpeer = rec.gpeer.clone();
        if let (true, Op::SetAttr { attr }) = (is_attr, &record.op) {
            match &result {
                Ok(()) => self.notify_attr(&key, *attr, Ok(())),
                Err(SyncError::West(e)) if !e.is_permanent() => {}
                Err(e) => self.notify_attr(&key, *attr, Err(e.to_string())),
            }
        }
        match result {
            Ok(()) => {
                self.record_item_success(&gpeer);
                stats.applied.fetch_add(1, Ordering::Relaxed);
                let mut q = lock(&self.queue);
                q.set_failing(&key, false);
                if q.finish(&key) {
                    // Re-enqueued while we worked: its newer record stays and runs again.
                    q.schedule(&gpeer, key, now_ms(), None);
                } else if let Err(e) = self.catalog.delete(CF_OUTBOX, &key) {
                    tracing::error!(error = %e, "cannot remove an applied outbox record");
                }
            }
            Err(SyncError::West(e)) if !e.is_permanent() => {
                self.record_transient(&gpeer, &e);
                let mut q = lock(&self.queue);
                q.finish(&key);
                // Not the entry's fault: it keeps its attempts and waits for the gpeer.
                q.schedule(&gpeer, key, now_ms(), rename_source(&gpair, &record.op));
            }
            Err(SyncError::Busy) => {
                let mut q = lock(&self.queue);
                q.finish(&key);
                q.schedule(
                    &gpeer,
                    key,
                    now_ms() + BUSY_RETRY_MS,
                    rename_source(&gpair, &record.op),
                );
            }
            Err(e) => {
                let attempts = record.attempts + 1;
                let delay = self.backoff_ms(attempts);
                tracing::warn!(gpair, path = %String::from_utf8_lossy(&path), error = %e, attempts, "sync of an entry failed");
                let mut q = lock(&self.queue);
                let redo = q.finish(&key);
                if redo {
                    q.schedule(&gpeer, key, now_ms(), None);
                } else {
                    let failed = OutboxRecord {
                        attempts,
                        last_error: Some(e.to_string()),
                        next_due_ms: now_ms() + delay,
                        ..record.clone()
                    };
                    if let Err(err) = self.catalog.put(CF_OUTBOX, &key, &failed) {
                        tracing::error!(error = %err, "cannot record an outbox failure");
                    }
                    q.set_failing(&key, true);
                    q.schedule(
                        &gpeer,
                        key,
                        failed.next_due_ms,
                        rename_source(&gpair, &record.op),
                    );
                }
            }
        }
    }

    async fn apply_op(
        self: &Arc<Self>,
        rec: &GpairRecord,
        stats: &GpairStats,
        west: &dyn WestStore,
        path: &[u8],
        op: &Op,
    ) -> Result<(), SyncError> {
        if path.is_empty() {
            return Ok(()); // the share root maps to the prefix itself
        }
        let abs = join_rel(&rec.local_path, path);
        let east = read_meta(abs.clone()).await?;
        let key = gpair_key(&rec.name, path);
        match (op, east) {
            // A rename is replayed on west even when its destination has since moved on
            // east (a file moved into a directory that then moved): the later rename,
            // applied after this one, carries it to where it is now.
            (Op::Rename { from, is_dir }, east) => {
                let (from_key, to_key) = (west_key(&rec.prefix, from), west_key(&rec.prefix, path));
                match west.rename(&rec.bucket, &from_key, &to_key, *is_dir).await {
                    Ok(()) => {
                        self.move_entries(&rec.name, from, path, *is_dir)?;
                        self.quotas
                            .move_path(&self.catalog, &rec.name, from, path, *is_dir)?;
                        self.move_attr_records(&rec.name, from, path, *is_dir)?;
                        match east {
                            Some(meta) => self.put_entry(rec, stats, west, path, &meta).await,
                            None => Ok(()),
                        }
                    }
                    Err(e) if !e.is_permanent() => Err(e.into()),
                    Err(e) => {
                        // Source gone or destination taken on west: sync the new path
                        // afresh and remove the old one.
                        tracing::info!(gpair = rec.name, error = %e, "native rename not possible; resyncing both paths");
                        self.delete_subtree(rec, from, *is_dir)?;
                        if let Some(meta) = east {
                            self.put_entry(rec, stats, west, path, &meta).await?;
                            if *is_dir {
                                scan::enqueue_subtree(self, rec, path)?;
                            }
                        }
                        Ok(())
                    }
                }
            }
            (Op::Put, Some(meta)) if self.unchanged(&key, &meta) => Ok(()),
            (Op::Put, Some(meta))
                if meta.kind == EntryKind::File && self.migrating(&rec.name, path) =>
            {
                Err(SyncError::Busy)
            }
            (_, Some(meta)) => self.put_entry(rec, stats, west, path, &meta).await,
            (op, None) => {
                let known: Option<EntryRecord> = self.catalog.get(CF_ENTRIES, &key)?;
                let is_dir = match (op, &known) {
                    (_, Some(r)) => r.meta.kind == EntryKind::Dir,
                    (Op::Delete { is_dir } | Op::Rename { is_dir, .. }, None) => *is_dir,
                    (Op::Put | Op::SetAttr { .. }, None) => return Ok(()), // never synced, already gone
                };
                let wkey = west_key(&rec.prefix, path);
                if !is_dir && self.retains(rec, path) {
                    self.retain_deleted(rec, west, &wkey).await?;
                } else {
                    west.delete_entry(&rec.bucket, &wkey, is_dir).await?;
                }
                if known.is_some() {
                    let gone = self.while_bound(&rec.name, stats, || {
                        self.catalog.delete(CF_ENTRIES, &key)?;
                        stats.entries.fetch_sub(1, Ordering::Relaxed);
                        Ok::<(), SyncError>(())
                    });
                    gone.transpose()?;
                }
                // An offloaded file's west data went with it: its quota is free.
                self.quotas
                    .forget_path(&self.catalog, &rec.name, path, is_dir)?;
                if is_dir {
                    // Whatever west still has under it goes too.
                    self.delete_subtree_children(rec, path)?;
                }
                Ok(())
            }
        }
    }

    /// Whether an offload or recall of the file is in flight (it has an intent).
    pub(crate) fn migrating(&self, gpair: &str, path: &[u8]) -> bool {
        self.catalog
            .get_raw(crate::catalog::CF_INTENTS, &gpair_key(gpair, path))
            .ok()
            .flatten()
            .is_some()
    }

    /// Whether west already has exactly this metadata for the entry (the catalog records what
    /// was last written): a change west does not show — a stub's xattr, a punch, ctime —
    /// needs no request.
    fn unchanged(&self, key: &[u8], meta: &EntryMeta) -> bool {
        self.catalog
            .get::<EntryRecord>(CF_ENTRIES, key)
            .ok()
            .flatten()
            .is_some_and(|r| !differs(&r.meta, meta) && r.meta.ino == meta.ino)
    }

    /// The stub record's attribute name.
    pub fn stub_attr(&self) -> &str {
        self.stub_xattr.get().map_or("user.gpair", String::as_str)
    }

    /// Whether deleting `path` on west must keep its data for the gpair's retention: an
    /// offloaded file (a remote record) of a gpair with `retain_deleted_days`.
    pub(crate) fn retains(&self, rec: &GpairRecord, path: &[u8]) -> bool {
        (rec.retain_deleted_days > 0 || self.deleted_grace_ms.load(Ordering::Relaxed) > 0)
            && self
                .catalog
                .get_raw(crate::catalog::CF_QUOTA, &gpair_key(&rec.name, path))
                .ok()
                .flatten()
                .is_some()
    }

    /// Moves a deleted offloaded file's west object to `.gpair-trash/GPAIR/MS/KEY`, where the
    /// purge finds it once the retention has passed. A key that cannot move (gone, or too
    /// long with the trash prefix) is deleted instead, with a warning.
    async fn retain_deleted(
        &self,
        rec: &GpairRecord,
        west: &dyn WestStore,
        key: &crate::west::WestKey,
    ) -> Result<(), SyncError> {
        let trash = crate::west::WestKey {
            key: format!(
                "{}/{}",
                crate::tier::trash_prefix(&rec.name, now_ms()),
                key.object_key(false)
            ),
            long_path: None,
        };
        match west.rename(&rec.bucket, key, &trash, false).await {
            Ok(()) => {
                tracing::info!(
                    gpair = rec.name,
                    key = key.key,
                    trash = trash.key,
                    "kept a deleted file's west data for its retention"
                );
                Ok(())
            }
            Err(e) if !e.is_permanent() => Err(e.into()),
            Err(e) => {
                tracing::warn!(gpair = rec.name, key = key.key, error = %e, "cannot keep a deleted file's west data; deleting it");
                west.delete_entry(&rec.bucket, key, false).await?;
                Ok(())
            }
        }
    }

    /// SetAttrObj for one file. A released (rtl) object that is gone needs nothing more.
    async fn apply_setattr(
        &self,
        rec: &GpairRecord,
        west: &dyn WestStore,
        path: &[u8],
        attr: AttrOp,
    ) -> Result<(), SyncError> {
        let key = west_key(&rec.prefix, path);
        if attr == AttrOp::Rtl {
            // rtl means "east holds the data": if the file at this path is a stub now (another
            // offloaded file renamed over it since this was queued), releasing the object at
            // the key would drop that stub's only copy. Such an rtl is stale.
            let abs = join_rel(&rec.local_path, path);
            let attr_name = self.stub_attr().to_owned();
            let a2 = abs.clone();
            let is_stub = tokio::task::spawn_blocking(move || {
                // No file there: nothing east could lose.
                crate::tier::stub::read_path_if_present(&a2, &attr_name).map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| SyncError::East {
                path: abs.clone(),
                source: std::io::Error::other(e),
            })?;
            match is_stub {
                Ok(Some(_)) => {
                    tracing::info!(gpair = rec.name, path = %abs.display(), "stale rtl skipped: the file at this path is a stub");
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(SyncError::East {
                        path: abs,
                        source: std::io::Error::other(e),
                    })
                }
            }
        }
        match west
            .set_attr(&rec.bucket, &key, attr.west(), &rec.gpair_value)
            .await
        {
            Err(e) if e.is_permanent() && attr == AttrOp::Rtl => {
                match west.head(&rec.bucket, &key, false).await? {
                    None => Ok(()),
                    Some(_) => Err(e.into()),
                }
            }
            r => Ok(r?),
        }
    }

    /// Tells the waiters of `key` for `attr` how it went; waiters for the other attr keep
    /// waiting (their own record replaced this one, or will).
    fn notify_attr(&self, key: &[u8], attr: AttrOp, outcome: AttrOutcome) {
        let mut all = lock(&self.attr_waiters);
        let Some(waiters) = all.remove(key) else {
            return;
        };
        let (mine, others): (Vec<_>, Vec<_>) = waiters.into_iter().partition(|(a, _)| *a == attr);
        if !others.is_empty() {
            all.insert(key.to_vec(), others);
        }
        drop(all);
        for (_, w) in mine {
            let _ = w.send(outcome.clone());
        }
    }

    /// Fails every waiter whose key starts with `prefix` (its records are gone).
    fn fail_attr_waiters(&self, prefix: &[u8], why: &str) {
        let gone: Vec<AttrWaiter> = {
            let mut all = lock(&self.attr_waiters);
            let keys: Vec<ItemKey> = all
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| all.remove(&k))
                .flatten()
                .collect()
        };
        for (_, w) in gone {
            let _ = w.send(Err(why.to_owned()));
        }
    }

    /// Queues SetAttrObj for a file (durable, retried until applied) without waiting.
    pub fn enqueue_setattr(&self, gpair: &str, path: &[u8], attr: AttrOp) -> Result<(), SyncError> {
        let key = attr_key(gpair, path);
        self.enqueue_key(gpair, key, Op::SetAttr { attr }, 0)
    }

    /// Queues SetAttrObj for a file and waits for the outcome of its first completed
    /// attempt: applied, or a permanent error. Transient failures are retried by the outbox
    /// while this waits (the gpeer's health shows why).
    pub async fn setattr_and_wait(
        &self,
        gpair: &str,
        path: &[u8],
        attr: AttrOp,
        cancel: &CancellationToken,
    ) -> Result<AttrOutcome, SyncError> {
        let key = attr_key(gpair, path);
        let (tx, rx) = tokio::sync::oneshot::channel();
        lock(&self.attr_waiters)
            .entry(key.clone())
            .or_default()
            .push((attr, tx));
        if let Err(e) = self.enqueue_key(gpair, key.clone(), Op::SetAttr { attr }, 0) {
            lock(&self.attr_waiters).remove(&key);
            return Err(e);
        }
        tokio::select! {
            r = rx => Ok(r.unwrap_or_else(|_| Err("the outbox dropped the update (gpair unbound?)".into()))),
            () = cancel.cancelled() => Ok(Err("cancelled".into())),
        }
    }

    /// Writes one outbox record under an explicit key and schedules it. A SetAttr replaces
    /// any earlier one of the file: waiters for the other attr learn it was superseded.
    fn enqueue_key(
        &self,
        gpair: &str,
        key: ItemKey,
        op: Op,
        delay_ms: i64,
    ) -> Result<(), SyncError> {
        if let Op::SetAttr { attr } = &op {
            let superseded: Vec<AttrWaiter> = {
                let mut all = lock(&self.attr_waiters);
                match all.get_mut(&key) {
                    Some(ws) => {
                        let (keep, gone) =
                            std::mem::take(ws).into_iter().partition(|(a, _)| a == attr);
                        *ws = keep;
                        gone
                    }
                    None => Vec::new(),
                }
            };
            for (_, w) in superseded {
                let _ = w.send(Err(
                    "superseded by a later SetAttrObj of the same file".into()
                ));
            }
        }
        let Some(gpeer) = self.gpeer_of(gpair) else {
            return Err(SyncError::West(WestError::permanent(format!(
                "gpair {gpair} is not bound"
            ))));
        };
        let now = now_ms();
        let rec = OutboxRecord {
            op,
            attempts: 0,
            last_error: None,
            next_due_ms: now + delay_ms,
            enqueued_ms: now,
        };
        let mut q = lock(&self.queue);
        self.catalog.put(CF_OUTBOX, &key, &rec)?;
        q.set_failing(&key, false);
        q.schedule(&gpeer, key, rec.next_due_ms, None);
        drop(q);
        self.wake.notify_waiters();
        Ok(())
    }

    /// Whether a SetAttr record of the file is still queued.
    pub fn setattr_pending(&self, gpair: &str, path: &[u8]) -> bool {
        self.catalog
            .get_raw(CF_OUTBOX, &attr_key(gpair, path))
            .ok()
            .flatten()
            .is_some()
    }

    // ------------------------------------------------------------ gpeer health, for migration

    /// Until when a gpeer's work is paused after transient failures (0 = not paused).
    pub fn paused_until(&self, gpeer: &str) -> i64 {
        lock(&self.state)
            .gpeers
            .get(gpeer)
            .map_or(0, |g| g.health.paused_until_ms)
    }

    /// The gpeer's store (rebuilt first after a transient failure).
    pub fn store(&self, gpeer: &str) -> Option<Arc<dyn WestStore>> {
        self.store_for(gpeer)
    }

    pub fn report_transient(&self, gpeer: &str, err: &WestError) {
        self.record_transient(gpeer, err);
    }

    /// A migration step or a grant succeeded (counts only if west answered meanwhile).
    pub fn report_success(&self, gpeer: &str) {
        self.record_item_success(gpeer);
    }

    async fn put_entry(
        &self,
        rec: &GpairRecord,
        stats: &GpairStats,
        west: &dyn WestStore,
        path: &[u8],
        meta: &EntryMeta,
    ) -> Result<(), SyncError> {
        let wkey = west_key(&rec.prefix, path);
        match west
            .put_entry(&rec.bucket, &wkey, meta, &rec.gpair_value)
            .await
        {
            Ok(()) => {}
            Err(e) if e.kind == crate::west::ErrorKind::OwnedData => {
                let abs = join_rel(&rec.local_path, path);
                let attr = self.stub_attr().to_owned();
                let is_stub = tokio::task::spawn_blocking(move || {
                    matches!(crate::tier::stub::read_path(&abs, &attr), Ok(Some(_)))
                })
                .await
                .unwrap_or(true);
                if is_stub {
                    // Written on east behind a stub's back: a conflict for an operator; west
                    // keeps the offloaded copy.
                    return Err(e.into());
                }
                // West's data belongs to an earlier file at this path (or to a recalled one
                // whose rtl is still queued): kept in the trash, never overwritten.
                self.retain_deleted(rec, west, &wkey).await?;
                west.put_entry(&rec.bucket, &wkey, meta, &rec.gpair_value)
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
        self.quotas.forget_if_replaced(
            &self.catalog,
            &rec.name,
            path,
            &join_rel(&rec.local_path, path),
            meta,
            self.stub_attr(),
        )?;
        let key = gpair_key(&rec.name, path);
        let put = self.while_bound(&rec.name, stats, || {
            let existed = self.catalog.get_raw(CF_ENTRIES, &key)?.is_some();
            self.catalog.put(
                CF_ENTRIES,
                &key,
                &EntryRecord {
                    meta: meta.clone(),
                    synced_at_ms: now_ms(),
                },
            )?;
            if !existed {
                stats.entries.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), SyncError>(())
        });
        put.transpose()?;
        Ok(())
    }

    /// After a native rename: the catalog records under `from` move to `to`.
    fn move_entries(
        &self,
        gpair: &str,
        from: &[u8],
        to: &[u8],
        is_dir: bool,
    ) -> Result<(), SyncError> {
        let mut batch = self.catalog.batch();
        let old = gpair_key(gpair, from);
        if let Some(v) = self.catalog.get::<EntryRecord>(CF_ENTRIES, &old)? {
            batch.delete(CF_ENTRIES, &old);
            batch.put(CF_ENTRIES, &gpair_key(gpair, to), &v);
        }
        if is_dir {
            let mut under = old.clone();
            under.push(b'/');
            let records: Vec<(Vec<u8>, EntryRecord)> =
                self.catalog.scan(CF_ENTRIES, &under, |_| {})?;
            for (k, v) in records {
                let mut new_path = to.to_vec();
                new_path.extend_from_slice(&k[old.len()..]);
                batch.delete(CF_ENTRIES, &k);
                batch.put(CF_ENTRIES, &gpair_key(gpair, &new_path), &v);
            }
        }
        batch.commit()?;
        Ok(())
    }

    /// After a rename on west: queued SetAttr records of files under `from` follow them to
    /// `to` (applied at the old key they would miss the object, or hit another one).
    fn move_attr_records(
        &self,
        gpair: &str,
        from: &[u8],
        to: &[u8],
        is_dir: bool,
    ) -> Result<(), SyncError> {
        let mut found: Vec<(Vec<u8>, OutboxRecord)> = Vec::new();
        let exact = attr_key(gpair, from);
        if let Some(r) = self.catalog.get::<OutboxRecord>(CF_OUTBOX, &exact)? {
            found.push((exact, r));
        }
        if is_dir {
            let mut under = gpair_key(gpair, from);
            under.push(b'/');
            found.extend(
                self.catalog
                    .scan::<OutboxRecord>(CF_OUTBOX, &under, |_| {})?
                    .into_iter()
                    .filter(|(k, _)| k.ends_with(ATTR_SUFFIX)),
            );
        }
        let old_len = gpair_key(gpair, from).len();
        for (old_key, r) in found {
            let mut new_path = to.to_vec();
            new_path.extend_from_slice(&old_key[old_len..old_key.len() - ATTR_SUFFIX.len()]);
            self.catalog.delete(CF_OUTBOX, &old_key)?;
            lock(&self.queue).remove_prefix(&old_key);
            self.fail_attr_waiters(&old_key, "the file was renamed");
            self.enqueue_key(gpair, attr_key(gpair, &new_path), r.op, 0)?;
        }
        Ok(())
    }

    /// Queues deletes for `path` and every catalog entry under it.
    fn delete_subtree(
        &self,
        rec: &GpairRecord,
        path: &[u8],
        is_dir: bool,
    ) -> Result<(), SyncError> {
        self.enqueue(&rec.name, path, Op::Delete { is_dir }, 0)?;
        if is_dir {
            self.delete_subtree_children(rec, path)?;
        }
        Ok(())
    }

    fn delete_subtree_children(&self, rec: &GpairRecord, path: &[u8]) -> Result<(), SyncError> {
        let mut under = gpair_key(&rec.name, path);
        under.push(b'/');
        let records: Vec<(Vec<u8>, EntryRecord)> = self.catalog.scan(CF_ENTRIES, &under, |_| {})?;
        let items: Vec<(Vec<u8>, Op)> = records
            .into_iter()
            .filter_map(|(k, r)| {
                let p = split_gpair_key(&k)?.1.to_vec();
                Some((
                    p,
                    Op::Delete {
                        is_dir: r.meta.kind == EntryKind::Dir,
                    },
                ))
            })
            .collect();
        if !items.is_empty() {
            self.enqueue_batch(&rec.name, items, 0)?;
        }
        Ok(())
    }

    /// Maps an absolute east path to (gpair, relative path) by the longest bound share.
    pub fn resolve(&self, abs: &Path) -> Option<(String, Vec<u8>)> {
        let st = lock(&self.state);
        let mut best: Option<(&GpairRt, usize)> = None;
        for g in st.gpairs.values() {
            if abs.starts_with(&g.rec.local_path) {
                let depth = g.rec.local_path.components().count();
                if best.is_none_or(|(_, d)| depth > d) {
                    best = Some((g, depth));
                }
            }
        }
        let (g, _) = best?;
        let rel = abs.strip_prefix(&g.rec.local_path).ok()?;
        Some((
            g.rec.name.clone(),
            std::os::unix::ffi::OsStrExt::as_bytes(rel.as_os_str()).to_vec(),
        ))
    }
}

/// The outbox key of a rename's source, for the schedule.
fn rename_source(gpair: &str, op: &Op) -> Option<ItemKey> {
    match op {
        Op::Rename { from, .. } => Some(gpair_key(gpair, from)),
        _ => None,
    }
}

/// `base/rel` for a relative path given as bytes.
pub fn join_rel(base: &Path, rel: &[u8]) -> PathBuf {
    base.join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(rel))
}

async fn read_meta(abs: PathBuf) -> Result<Option<EntryMeta>, SyncError> {
    let p = abs.clone();
    let r = tokio::task::spawn_blocking(move || EntryMeta::read(&p))
        .await
        .map_err(|e| SyncError::East {
            path: abs.clone(),
            source: std::io::Error::other(e),
        })?;
    match r {
        Ok(m) => Ok(Some(m)),
        Err(e) if crate::tier::stub::is_gone(&e) => Ok(None),
        Err(source) => Err(SyncError::East { path: abs, source }),
    }
}
