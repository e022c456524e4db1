//! The local watcher: inotify on every directory of a share, turned into outbox records.
//!
//! inotify is per directory, so the watcher keeps a map from watch descriptor to relative
//! path, adds watches for directories as they appear and rewrites the map when a directory
//! is renamed. Renames are paired by cookie within one read; an unpaired `MOVED_FROM` is a
//! delete (moved out of the share) and an unpaired `MOVED_TO` a create (moved in). If the
//! kernel queue overflows, or a watch cannot be added (watch limit), the watcher asks for a
//! reconciliation scan instead of guessing. Runs on its own thread; stops when cancelled.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{join_rel, scan, Engine, GpairStats, Op, SETTLE_MS};
use crate::entry::{EntryKind, EntryMeta};
use crate::registry::GpairRecord;

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MODIFY
        | WatchMask::ATTRIB
        | WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DONT_FOLLOW
        | WatchMask::ONLYDIR
}

/// One inotify event, detached from the read buffer: (watch, mask, cookie, name).
type RawEvent = (Option<WatchDescriptor>, EventMask, u32, Option<Vec<u8>>);

struct Watcher {
    engine: Arc<Engine>,
    rec: GpairRecord,
    inotify: Inotify,
    dirs: HashMap<WatchDescriptor, Vec<u8>>,
    rescan: Arc<Notify>,
}

pub fn start(
    engine: Arc<Engine>,
    rec: GpairRecord,
    cancel: CancellationToken,
    stats: Arc<GpairStats>,
    rescan: Arc<Notify>,
) {
    let name = rec.name.clone();
    let spawned = std::thread::Builder::new().name(format!("watch-{name}")).spawn(move || {
        let inotify = match Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(gpair = rec.name, error = %e, "inotify unavailable; relying on scans and mount notifications");
                return;
            }
        };
        let mut w = Watcher { engine, rec, inotify, dirs: HashMap::new(), rescan };
        w.add_tree(b"");
        stats.watcher_active.store(true, Ordering::Relaxed);
        w.run(&cancel);
        stats.watcher_active.store(false, Ordering::Relaxed);
    });
    if let Err(e) = spawned {
        tracing::warn!(gpair = name, error = %e, "cannot start the watcher thread");
    }
}

impl Watcher {
    /// Watches `rel` and every directory under it.
    fn add_tree(&mut self, rel: &[u8]) {
        let mut stack = vec![rel.to_vec()];
        while let Some(dir) = stack.pop() {
            let abs = join_rel(&self.rec.local_path, &dir);
            match self.inotify.watches().add(&abs, mask()) {
                Ok(wd) => {
                    self.dirs.insert(wd, dir.clone());
                }
                Err(e) => {
                    tracing::warn!(dir = %abs.display(), error = %e, "cannot watch directory; the next scan will catch its changes");
                    self.rescan.notify_one();
                    continue;
                }
            }
            if let Ok(rd) = std::fs::read_dir(&abs) {
                for entry in rd.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        let mut child = dir.clone();
                        if !child.is_empty() {
                            child.push(b'/');
                        }
                        child.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(
                            entry.file_name().as_os_str(),
                        ));
                        stack.push(child);
                    }
                }
            }
        }
    }

    fn run(&mut self, cancel: &CancellationToken) {
        let mut buf = vec![0u8; 64 * 1024];
        let fd = self.inotify.as_raw_fd();
        while !cancel.is_cancelled() {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, 500) };
            if r <= 0 {
                continue;
            }
            let events: Vec<RawEvent> = match self.inotify.read_events(&mut buf) {
                Ok(evs) => evs
                    .map(|e| {
                        let name = e
                            .name
                            .map(|n| std::os::unix::ffi::OsStrExt::as_bytes(n).to_vec());
                        (Some(e.wd), e.mask, e.cookie, name)
                    })
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::warn!(gpair = self.rec.name, error = %e, "inotify read failed; stopping the watcher");
                    self.rescan.notify_one();
                    return;
                }
            };
            self.handle(events);
        }
    }

    fn path_of(&self, wd: &WatchDescriptor, name: &[u8]) -> Option<Vec<u8>> {
        let dir = self.dirs.get(wd)?;
        let mut p = dir.clone();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name);
        Some(p)
    }

    fn handle(&mut self, events: Vec<RawEvent>) {
        let mut moved_from: HashMap<u32, (Vec<u8>, bool)> = HashMap::new();
        let mut puts: Vec<(Vec<u8>, Op)> = Vec::new();
        let name = self.rec.name.clone();
        for (wd, mask, cookie, fname) in events {
            if mask.contains(EventMask::Q_OVERFLOW) {
                tracing::warn!(
                    gpair = name,
                    "inotify queue overflowed; scheduling a reconciliation scan"
                );
                self.rescan.notify_one();
                continue;
            }
            if mask.contains(EventMask::IGNORED) {
                if let Some(wd) = wd {
                    self.dirs.remove(&wd);
                }
                continue;
            }
            let (Some(wd), Some(fname)) = (wd, fname) else {
                continue;
            };
            let Some(path) = self.path_of(&wd, &fname) else {
                continue;
            };
            let is_dir = mask.contains(EventMask::ISDIR);
            if mask.intersects(
                EventMask::CREATE | EventMask::DELETE | EventMask::MOVED_FROM | EventMask::MOVED_TO,
            ) {
                // The directory's own mtime changed too; inotify only reports the child.
                if let Some(dir) = self.dirs.get(&wd).filter(|d| !d.is_empty()) {
                    puts.push((dir.clone(), Op::Put));
                }
            }
            if mask.contains(EventMask::MOVED_FROM) {
                moved_from.insert(cookie, (path, is_dir));
            } else if mask.contains(EventMask::MOVED_TO) {
                match moved_from.remove(&cookie) {
                    Some((from, from_dir)) => {
                        if from_dir {
                            self.rename_dirs(&from, &path);
                        }
                        self.flush(&mut puts);
                        if let Err(e) = self.engine.enqueue(
                            &name,
                            &path,
                            Op::Rename {
                                from,
                                is_dir: from_dir,
                            },
                            SETTLE_MS,
                        ) {
                            tracing::error!(error = %e, "cannot queue a rename");
                        }
                    }
                    None => self.appeared(&path, is_dir, &mut puts),
                }
            } else if mask.contains(EventMask::DELETE) {
                puts.push((path, Op::Delete { is_dir }));
            } else if mask.contains(EventMask::CREATE) && is_dir {
                self.appeared(&path, true, &mut puts);
            } else {
                puts.push((path, Op::Put));
            }
        }
        // Moved out of the share: gone, as far as this gpair is concerned.
        for (_, (path, is_dir)) in moved_from {
            if is_dir {
                let mut under = path.clone();
                under.push(b'/');
                self.dirs
                    .retain(|_, p| *p != path && !p.starts_with(&under));
            }
            puts.push((path, Op::Delete { is_dir }));
        }
        self.flush(&mut puts);
    }

    /// A directory (or file) appeared by creation or by a move into the share: watch it
    /// and queue everything under it (entries created before the watch existed).
    fn appeared(&mut self, path: &[u8], is_dir: bool, puts: &mut Vec<(Vec<u8>, Op)>) {
        let dir = is_dir
            || EntryMeta::read(&join_rel(&self.rec.local_path, path))
                .is_ok_and(|m| m.kind == EntryKind::Dir);
        if !dir {
            puts.push((path.to_vec(), Op::Put));
            return;
        }
        self.flush(puts);
        self.add_tree(path);
        if let Err(e) = scan::enqueue_subtree(&self.engine, &self.rec, path) {
            tracing::error!(error = %e, "cannot queue a new directory");
        }
    }

    /// A watched directory moved: the descriptors under it now name new paths.
    fn rename_dirs(&mut self, from: &[u8], to: &[u8]) {
        let mut under = from.to_vec();
        under.push(b'/');
        for p in self.dirs.values_mut() {
            if p.as_slice() == from {
                *p = to.to_vec();
            } else if p.starts_with(&under) {
                let mut n = to.to_vec();
                n.extend_from_slice(&p[from.len()..]);
                *p = n;
            }
        }
    }

    fn flush(&self, puts: &mut Vec<(Vec<u8>, Op)>) {
        if puts.is_empty() {
            return;
        }
        if let Err(e) = self
            .engine
            .enqueue_batch(&self.rec.name, std::mem::take(puts), SETTLE_MS)
        {
            tracing::error!(error = %e, "cannot queue watcher changes");
        }
    }
}
