//! A policy run's scan: a parallel walk of the share (one `statx` per entry, relative to its
//! directory), judging every regular file (`rules::Compiled::judge`) and gathering the
//! candidates coldest first with totals per reason kept. Reads only metadata and extended
//! attributes; writes nothing and makes no catalog transaction per entry. Candidates alone
//! get the checks that cost more (open for writing, dirty, not synced), through a [`Check`]
//! the caller gives.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use super::explain::{noatime, pin_attr};
use super::rules::{Compiled, Facts, Keep, Verdict};
use crate::tier::stub;

/// One file the policy would offload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    pub size: u64,
    /// The east space its offload frees (its allocated blocks).
    pub frees: u64,
    pub idle: i64,
    pub why: String,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct Plan {
    /// Coldest first (most idle; ties: larger first).
    pub candidates: Vec<Candidate>,
    pub candidate_bytes: u64,
    pub scanned_files: u64,
    pub scanned_dirs: u64,
    /// Files kept, by reason: (files, bytes).
    pub kept: BTreeMap<String, (u64, u64)>,
    pub noatime: bool,
    /// East space held by regular files that are not offloaded (their allocated blocks).
    pub local_bytes: u64,
}

impl Plan {
    fn merge(&mut self, other: Plan) {
        self.candidates.extend(other.candidates);
        self.candidate_bytes += other.candidate_bytes;
        self.scanned_files += other.scanned_files;
        self.scanned_dirs += other.scanned_dirs;
        self.local_bytes += other.local_bytes;
        for (k, (n, b)) in other.kept {
            let e = self.kept.entry(k).or_default();
            e.0 += n;
            e.1 += b;
        }
    }
}

/// Live counters of a running scan (`gpair status`).
#[derive(Debug, Default)]
pub struct Progress {
    pub dirs: AtomicU64,
    pub files: AtomicU64,
    pub candidates: AtomicU64,
    pub candidate_bytes: AtomicU64,
}

/// The checks made on a candidate only: the file's absolute path, its path relative to the
/// share, and its metadata in; what keeps it on east, if anything, out.
pub type Check<'a> = dyn Fn(&Path, &[u8], &std::fs::Metadata) -> Option<Keep> + Sync + 'a;

/// How a scan runs.
pub struct Options<'a> {
    /// Walker threads (at least one).
    pub threads: usize,
    pub progress: Option<&'a Progress>,
    pub check: Option<&'a Check<'a>>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            threads: default_threads(),
            progress: None,
            check: None,
        }
    }
}

/// Walker threads: metadata reads block on the disk when the cache is cold, so twice the
/// cores, between 2 and 16.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get() * 2)
        .clamp(2, 16)
}

/// Scans the share `root` with `rules` at `now` (seconds since the epoch). `stub_attr` names
/// the stub record attribute (pins are `STUB_ATTR.pin`). Unreadable entries are counted
/// under "unreadable" and skipped; the walk never follows symlinks.
pub fn scan(root: &Path, rules: &Compiled, stub_attr: &str, now: i64) -> Plan {
    scan_with(root, rules, stub_attr, now, &Options::default())
}

/// Directories waiting to be read, and how many walkers are reading one (the walk is over
/// when both are zero).
struct Queue {
    dirs: Vec<(PathBuf, Option<String>)>,
    busy: usize,
}

/// [`scan`] with its options.
pub fn scan_with(
    root: &Path,
    rules: &Compiled,
    stub_attr: &str,
    now: i64,
    opts: &Options<'_>,
) -> Plan {
    let walk = Walk {
        root,
        rules,
        stub_attr,
        pin: pin_attr(stub_attr),
        now,
        noatime: noatime(root),
        opts,
        queue: Mutex::new(Queue {
            dirs: vec![(root.to_path_buf(), None)],
            busy: 0,
        }),
        changed: Condvar::new(),
    };
    let threads = opts.threads.max(1);
    let mut plan = Plan {
        noatime: walk.noatime,
        ..Plan::default()
    };
    let parts: Vec<Plan> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| walk.worker())).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for p in parts {
        plan.merge(p);
    }
    plan.candidates.sort_by(|a, b| {
        b.idle
            .cmp(&a.idle)
            .then(b.size.cmp(&a.size))
            .then(a.path.cmp(&b.path))
    });
    plan
}

struct Walk<'a> {
    root: &'a Path,
    rules: &'a Compiled,
    stub_attr: &'a str,
    pin: String,
    now: i64,
    noatime: bool,
    opts: &'a Options<'a>,
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Walk<'_> {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes directories off the queue until the walk is over; what this walker found.
    fn worker(&self) -> Plan {
        let mut plan = Plan::default();
        let mut found = Vec::new();
        let mut reading = false;
        loop {
            let next = {
                let mut q = self.queue();
                q.dirs.append(&mut found);
                if reading {
                    q.busy -= 1;
                }
                loop {
                    if let Some(d) = q.dirs.pop() {
                        q.busy += 1;
                        break Some(d);
                    }
                    if q.busy == 0 {
                        break None;
                    }
                    q = self
                        .changed
                        .wait(q)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            self.changed.notify_all();
            let Some((dir, pinned_above)) = next else {
                return plan;
            };
            reading = true;
            self.read_dir(&dir, pinned_above, &mut plan, &mut found);
        }
    }

    /// Judges the entries of one directory; its subdirectories go to `found`.
    fn read_dir(
        &self,
        dir: &Path,
        pinned_above: Option<String>,
        plan: &mut Plan,
        found: &mut Vec<(PathBuf, Option<String>)>,
    ) {
        plan.scanned_dirs += 1;
        let (files0, cands0, bytes0) = (
            plan.scanned_files,
            plan.candidates.len() as u64,
            plan.candidate_bytes,
        );
        let pinned_here =
            pinned_above.or_else(|| has_xattr(dir, &self.pin).then(|| dir.display().to_string()));
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    self.entry(&entry, &pinned_here, plan, found);
                }
            }
            Err(_) => count(&mut plan.kept, "unreadable", 0),
        }
        if let Some(p) = self.opts.progress {
            p.dirs.fetch_add(1, Ordering::Relaxed);
            p.files
                .fetch_add(plan.scanned_files - files0, Ordering::Relaxed);
            p.candidates
                .fetch_add(plan.candidates.len() as u64 - cands0, Ordering::Relaxed);
            p.candidate_bytes
                .fetch_add(plan.candidate_bytes - bytes0, Ordering::Relaxed);
        }
    }

    fn entry(
        &self,
        entry: &std::fs::DirEntry,
        pinned_here: &Option<String>,
        plan: &mut Plan,
        found: &mut Vec<(PathBuf, Option<String>)>,
    ) {
        let path = entry.path();
        // `statx` relative to the directory, not following symlinks.
        let Ok(md) = entry.metadata() else {
            count(&mut plan.kept, "unreadable", 0);
            return;
        };
        if md.is_dir() {
            found.push((path, pinned_here.clone()));
            return;
        }
        plan.scanned_files += 1;
        let rel = path.strip_prefix(self.root).unwrap_or(&path);
        let regular = md.is_file();
        // The record is read only where the blocks look released (as the mount does).
        let released = regular && md.blocks().saturating_mul(512) < md.size();
        let offloaded = released && matches!(stub::read_path(&path, self.stub_attr), Ok(Some(_)));
        let pinned = pinned_here.clone().or_else(|| {
            (regular && has_xattr(&path, &self.pin)).then(|| path.display().to_string())
        });
        let facts = Facts {
            rel: rel.as_os_str().as_bytes(),
            regular,
            size: md.size(),
            atime: md.atime(),
            mtime: md.mtime(),
            uid: md.uid(),
            offloaded,
            pinned,
            open_for_write: false,
            dirty: false,
            unsynced: false,
            noatime: self.noatime,
        };
        if regular && !offloaded {
            plan.local_bytes += md.blocks().saturating_mul(512);
        }
        let mut verdict = self.rules.judge(&facts, self.now);
        if let (Verdict::Offload { .. }, Some(check)) = (&verdict, self.opts.check) {
            if let Some(keep) = check(&path, facts.rel, &md) {
                verdict = Verdict::Keep(keep);
            }
        }
        match verdict {
            Verdict::Offload { idle, why } => {
                plan.candidate_bytes += md.size();
                plan.candidates.push(Candidate {
                    path,
                    size: md.size(),
                    frees: md.blocks().saturating_mul(512),
                    idle,
                    why,
                });
            }
            Verdict::Keep(k) => count(&mut plan.kept, &category(&k), md.size()),
        }
    }
}

fn count(kept: &mut BTreeMap<String, (u64, u64)>, reason: &str, bytes: u64) {
    let e = kept.entry(reason.to_owned()).or_default();
    e.0 += 1;
    e.1 += bytes;
}

/// The reason a file is kept, without its particulars (so that files add up).
fn category(k: &Keep) -> String {
    match k {
        Keep::Offloaded => "already offloaded".into(),
        Keep::NotRegular => "not a regular file".into(),
        Keep::Pinned(_) => "pinned".into(),
        Keep::OpenForWrite => "open for writing".into(),
        Keep::Dirty => "dirty".into(),
        Keep::Unsynced => "not synced yet".into(),
        Keep::TooYoung { .. } => "too young".into(),
        Keep::Excluded(g) => format!("excluded by {g:?}"),
        Keep::NotIncluded => "matches no include glob".into(),
        Keep::TooSmall { .. } => "too small".into(),
        Keep::TooLarge { .. } => "too large".into(),
        Keep::Owner(_) => "owner not selected".into(),
        Keep::RecentlyUsed { .. } => "used recently".into(),
        Keep::RecentlyModified { .. } => "modified recently".into(),
    }
}

fn has_xattr(path: &Path, attr: &str) -> bool {
    super::explain::xattr_present(path, attr)
}

/// (used, total) bytes of the filesystem holding `path`.
pub fn usage(path: &Path) -> Option<(u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `c` is NUL-terminated; `st` is written by the call.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let total = st.f_blocks.saturating_mul(st.f_frsize);
    let free = st.f_bfree.saturating_mul(st.f_frsize);
    Some((total.saturating_sub(free), total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rules::Rules;

    #[test]
    fn scan_finds_the_cold_files_coldest_first() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = tmp.path();
        let now = std::time::SystemTime::now();
        let write = |rel: &str, len: usize, days: u64| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap_or(root)).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&p, vec![7u8; len]).unwrap_or_else(|e| panic!("{e}"));
            let t = now - std::time::Duration::from_secs(days * 86_400);
            let f = std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap_or_else(|e| panic!("{e}"));
            f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
                .unwrap_or_else(|e| panic!("{e}"));
        };
        write("a/cold.bin", 5000, 90);
        write("a/colder.bin", 5000, 200);
        write("b/warm.bin", 5000, 2);
        write("b/x.db", 5000, 300);
        let rules = Rules {
            idle_secs: Some(30 * 86_400),
            exclude: vec!["*.db".into()],
            ..Rules::default()
        }
        .compile()
        .unwrap_or_else(|e| panic!("{e}"));
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let plan = scan(root, &rules, "user.gpair", secs);
        let names: Vec<_> = plan
            .candidates
            .iter()
            .map(|c| {
                c.path
                    .strip_prefix(root)
                    .unwrap_or(&c.path)
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, vec!["a/colder.bin", "a/cold.bin"]);
        assert_eq!(plan.candidate_bytes, 10_000);
        assert_eq!(plan.scanned_files, 4);
        assert_eq!(plan.scanned_dirs, 3);
        assert_eq!(plan.kept.get("used recently"), Some(&(1, 5000)));
        assert_eq!(plan.kept.get("excluded by \"*.db\""), Some(&(1, 5000)));
        assert!(plan.local_bytes >= 20_000, "{}", plan.local_bytes);
    }

    #[test]
    fn a_parallel_walk_counts_every_entry_once_and_checks_only_candidates() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = tmp.path();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(90 * 86_400);
        // 3 levels of 4 directories (84 directories with the root), 3 files in each leaf.
        let mut files = 0u64;
        for a in 0..4 {
            for b in 0..4 {
                for c in 0..4 {
                    let d = root.join(format!("{a}/{b}/{c}"));
                    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
                    for f in 0..3 {
                        let p = d.join(format!("f{f}"));
                        std::fs::write(&p, [1u8; 100]).unwrap_or_else(|e| panic!("{e}"));
                        let h = std::fs::File::options()
                            .write(true)
                            .open(&p)
                            .unwrap_or_else(|e| panic!("{e}"));
                        h.set_times(
                            std::fs::FileTimes::new()
                                .set_accessed(old)
                                .set_modified(old),
                        )
                        .unwrap_or_else(|e| panic!("{e}"));
                        files += 1;
                    }
                }
            }
        }
        let rules = Rules {
            idle_secs: Some(30 * 86_400),
            ..Rules::default()
        }
        .compile()
        .unwrap_or_else(|e| panic!("{e}"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let checked = AtomicU64::new(0);
        // Every f0 is "open for writing".
        let check = |path: &Path, _: &[u8], _: &std::fs::Metadata| {
            checked.fetch_add(1, Ordering::Relaxed);
            (path.file_name() == Some(std::ffi::OsStr::new("f0"))).then_some(Keep::OpenForWrite)
        };
        let progress = Progress::default();
        for threads in [1, 4] {
            checked.store(0, Ordering::Relaxed);
            let opts = Options {
                threads,
                progress: Some(&progress),
                check: Some(&check),
            };
            let plan = scan_with(root, &rules, "user.gpair", now, &opts);
            assert_eq!(plan.scanned_dirs, 1 + 4 + 16 + 64, "{threads} threads");
            assert_eq!(plan.scanned_files, files, "{threads} threads");
            assert_eq!(
                plan.candidates.len() as u64,
                files / 3 * 2,
                "{threads} threads"
            );
            assert_eq!(
                plan.kept.get("open for writing"),
                Some(&(files / 3, files / 3 * 100))
            );
            assert_eq!(
                checked.load(Ordering::Relaxed),
                files,
                "only candidates are checked"
            );
            let mut paths: Vec<_> = plan.candidates.iter().map(|c| c.path.clone()).collect();
            paths.sort();
            paths.dedup();
            assert_eq!(paths.len(), plan.candidates.len(), "no file twice");
        }
        // The live counters add up to both scans.
        assert_eq!(progress.dirs.load(Ordering::Relaxed), 2 * 85);
        assert_eq!(progress.files.load(Ordering::Relaxed), 2 * files);
        assert_eq!(
            progress.candidates.load(Ordering::Relaxed),
            2 * (files / 3 * 2)
        );
    }
}
