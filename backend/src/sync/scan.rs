//! Scans of a share: a parallel directory walk (a few threads sharing a queue of
//! directories; no thread per file, no round trip per entry) whose results are compared
//! with the catalog in batches. New or changed entries become `Put` records, catalog
//! entries the walk did not see become `Delete` records. The first scan of a gpair is its
//! initial sync; later ones are reconciliation scans that catch anything the watcher and
//! mount clients missed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use gpair_proto::now_ms;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{differs, join_rel, lock, Engine, EntryRecord, GpairStats, Op, SyncError};
use crate::catalog::{gpair_key, split_gpair_key, CF_ENTRIES, CF_REGISTRY};
use crate::entry::{EntryKind, EntryMeta};
use crate::registry::{GpairRecord, GpairState, GPAIR_PREFIX};

/// Entries compared with the catalog per batch (one catalog write per batch).
const BATCH: usize = 2048;

/// Result of one scan.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanStats {
    pub seen: u64,
    pub queued_puts: u64,
    pub queued_deletes: u64,
    pub errors: u64,
}

struct WalkQueue {
    dirs: Vec<Vec<u8>>,
    busy: usize,
    done: bool,
}

/// Walks `root` with `threads` threads, sending batches of (relative path, metadata).
/// Unreadable directories and entries that vanish mid-walk are counted, not fatal.
pub fn walk(
    root: &Path,
    start: &[u8],
    threads: usize,
    cancel: &CancellationToken,
    out: mpsc::SyncSender<Vec<(Vec<u8>, EntryMeta)>>,
) -> u64 {
    let queue = Arc::new((
        Mutex::new(WalkQueue {
            dirs: vec![start.to_vec()],
            busy: 0,
            done: false,
        }),
        Condvar::new(),
    ));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..threads {
            let queue = Arc::clone(&queue);
            let out = out.clone();
            let errors = Arc::clone(&errors);
            s.spawn(move || loop {
                let dir = {
                    let (m, cv) = &*queue;
                    let mut q = lock(m);
                    loop {
                        if q.done || cancel.is_cancelled() {
                            return;
                        }
                        if let Some(d) = q.dirs.pop() {
                            q.busy += 1;
                            break d;
                        }
                        if q.busy == 0 {
                            q.done = true;
                            cv.notify_all();
                            return;
                        }
                        q = cv.wait(q).unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                };
                let mut batch = Vec::new();
                let mut subdirs = Vec::new();
                match std::fs::read_dir(join_rel(root, &dir)) {
                    Ok(rd) => {
                        for entry in rd.flatten() {
                            let name = std::os::unix::ffi::OsStrExt::as_bytes(entry.file_name().as_os_str()).to_vec();
                            let mut rel = dir.clone();
                            if !rel.is_empty() {
                                rel.push(b'/');
                            }
                            rel.extend_from_slice(&name);
                            match EntryMeta::read(&entry.path()) {
                                Ok(meta) => {
                                    if meta.kind == EntryKind::Dir {
                                        subdirs.push(rel.clone());
                                    }
                                    batch.push((rel, meta));
                                    if batch.len() >= BATCH {
                                        let _ = out.send(std::mem::take(&mut batch));
                                    }
                                }
                                Err(_) => {
                                    errors.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(dir = %join_rel(root, &dir).display(), error = %e, "cannot read directory during scan");
                    }
                }
                if !batch.is_empty() {
                    let _ = out.send(batch);
                }
                let (m, cv) = &*queue;
                let mut q = lock(m);
                q.dirs.extend(subdirs);
                q.busy -= 1;
                cv.notify_all();
            });
        }
    });
    errors.load(Ordering::Relaxed)
}

/// One full scan of a gpair's share. Blocking.
pub fn scan_share(
    engine: &Arc<Engine>,
    rec: &GpairRecord,
    cancel: &CancellationToken,
) -> Result<ScanStats, SyncError> {
    let (tx, rx) = mpsc::sync_channel::<Vec<(Vec<u8>, EntryMeta)>>(8);
    let root = rec.local_path.clone();
    let threads = engine.config.walk_threads;
    let mut stats = ScanStats::default();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let errors = std::thread::scope(|s| -> Result<u64, SyncError> {
        let walker = s.spawn(move || walk(&root, b"", threads, cancel, tx));
        for batch in rx {
            let mut puts = Vec::new();
            for (path, meta) in batch {
                let known: Option<EntryRecord> = engine
                    .catalog
                    .get(CF_ENTRIES, &gpair_key(&rec.name, &path))?;
                if known.is_none_or(|k| differs(&k.meta, &meta)) {
                    puts.push((path.clone(), Op::Put));
                }
                seen.insert(path);
            }
            stats.queued_puts += puts.len() as u64;
            if !puts.is_empty() {
                engine.enqueue_batch(&rec.name, puts, 0)?;
            }
        }
        Ok(walker.join().unwrap_or(1))
    })?;
    stats.seen = seen.len() as u64;
    stats.errors = errors;
    if cancel.is_cancelled() {
        return Ok(stats);
    }
    // Entries the catalog knows but the walk did not see are gone from east. A walk with
    // unreadable directories cannot prove absence, so deletes wait for a clean walk.
    if errors == 0 {
        let mut deletes = Vec::new();
        engine
            .catalog
            .for_each_raw(CF_ENTRIES, &gpair_key(&rec.name, b""), |k, v| {
                if let Some((_, path)) = split_gpair_key(k) {
                    if !seen.contains(path) {
                        let is_dir = crate::catalog::decode::<EntryRecord>(CF_ENTRIES, k, v)
                            .map(|r| r.meta.kind == EntryKind::Dir)
                            .unwrap_or(false);
                        deletes.push((path.to_vec(), Op::Delete { is_dir }));
                    }
                }
                true
            })?;
        stats.queued_deletes = deletes.len() as u64;
        for chunk in deletes.chunks(BATCH) {
            engine.enqueue_batch(&rec.name, chunk.to_vec(), 0)?;
        }
    }
    Ok(stats)
}

/// Queues a `Put` for `path` and everything under it (a directory that appeared by
/// creation or rename). Blocking.
pub fn enqueue_subtree(engine: &Engine, rec: &GpairRecord, path: &[u8]) -> Result<(), SyncError> {
    engine.enqueue(&rec.name, path, Op::Put, super::SETTLE_MS)?;
    let (tx, rx) = mpsc::sync_channel(8);
    let root = rec.local_path.clone();
    let cancel = CancellationToken::new();
    std::thread::scope(|s| -> Result<(), SyncError> {
        s.spawn(|| walk(&root, path, 1, &cancel, tx));
        for batch in rx {
            let items: Vec<(Vec<u8>, Op)> = batch.into_iter().map(|(p, _)| (p, Op::Put)).collect();
            engine.enqueue_batch(&rec.name, items, super::SETTLE_MS)?;
        }
        Ok(())
    })
}

/// Runs the initial scan, then a reconciliation scan every interval or when asked.
pub async fn scan_loop(
    engine: Arc<Engine>,
    rec: GpairRecord,
    cancel: CancellationToken,
    stats: Arc<GpairStats>,
    rescan: Arc<Notify>,
) {
    loop {
        stats.scan_running.store(true, Ordering::Relaxed);
        stats
            .last_scan_started_ms
            .store(now_ms(), Ordering::Relaxed);
        let started = Instant::now();
        let (e, r, c) = (Arc::clone(&engine), rec.clone(), cancel.clone());
        let result = tokio::task::spawn_blocking(move || scan_share(&e, &r, &c)).await;
        stats.scan_running.store(false, Ordering::Relaxed);
        match result {
            Ok(Ok(s)) => {
                stats
                    .last_scan_finished_ms
                    .store(now_ms(), Ordering::Relaxed);
                stats.last_scan_entries.store(s.seen, Ordering::Relaxed);
                tracing::info!(
                    gpair = rec.name,
                    seen = s.seen,
                    puts = s.queued_puts,
                    deletes = s.queued_deletes,
                    errors = s.errors,
                    ms = started.elapsed().as_millis() as u64,
                    "scan finished"
                );
                if !cancel.is_cancelled() {
                    mark_active(&engine, &rec.name);
                }
            }
            Ok(Err(e)) => tracing::error!(gpair = rec.name, error = %e, "scan failed"),
            Err(e) => tracing::error!(gpair = rec.name, error = %e, "scan task failed"),
        }
        let interval = engine.config.reconcile_interval;
        tokio::select! {
            () = cancel.cancelled() => return,
            () = rescan.notified() => {}
            () = async {
                match interval {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }
}

/// The first scan finished: the gpair moves from initial sync to active.
fn mark_active(engine: &Engine, name: &str) {
    let Some((mut rec, _)) = engine.gpair(name) else {
        return;
    };
    if rec.state != GpairState::InitialSync {
        return;
    }
    rec.state = GpairState::Active;
    let mut key = GPAIR_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    if let Err(e) = engine.catalog.put(CF_REGISTRY, &key, &rec) {
        tracing::error!(error = %e, "cannot record the end of the initial sync");
        return;
    }
    engine.set_gpair_record(rec);
}
