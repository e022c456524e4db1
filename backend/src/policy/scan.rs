//! A policy run's scan: walk the share, judge every regular file (`rules::Compiled::judge`),
//! and gather the candidates coldest first with totals per reason kept. Reads only metadata
//! and extended attributes; writes nothing, touches no catalog entry per file.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// Scans the share `root` with `rules` at `now` (seconds since the epoch). `stub_attr` names
/// the stub record attribute (pins are `STUB_ATTR.pin`). Unreadable entries are counted
/// under "unreadable" and skipped; the walk never follows symlinks.
pub fn scan(root: &Path, rules: &Compiled, stub_attr: &str, now: i64) -> Plan {
    let pin = pin_attr(stub_attr);
    let mut plan = Plan {
        noatime: noatime(root),
        ..Plan::default()
    };
    // (directory, the pinned path above it if any)
    let mut stack: Vec<(PathBuf, Option<String>)> = vec![(root.to_path_buf(), None)];
    while let Some((dir, pinned_above)) = stack.pop() {
        plan.scanned_dirs += 1;
        let pinned_here =
            pinned_above.or_else(|| has_xattr(&dir, &pin).then(|| dir.display().to_string()));
        let Ok(entries) = std::fs::read_dir(&dir) else {
            count(&mut plan.kept, "unreadable", 0);
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                count(&mut plan.kept, "unreadable", 0);
                continue;
            };
            if md.is_dir() {
                stack.push((path, pinned_here.clone()));
                continue;
            }
            plan.scanned_files += 1;
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let regular = md.is_file();
            // The record is read only where the blocks look released (as the mount does).
            let released = regular && md.blocks().saturating_mul(512) < md.size();
            let offloaded = released && matches!(stub::read_path(&path, stub_attr), Ok(Some(_)));
            let pinned = pinned_here.clone().or_else(|| {
                (regular && has_xattr(&path, &pin)).then(|| path.display().to_string())
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
                noatime: plan.noatime,
            };
            if regular && !offloaded {
                plan.local_bytes += md.blocks().saturating_mul(512);
            }
            match rules.judge(&facts, now) {
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
    plan.candidates.sort_by(|a, b| {
        b.idle
            .cmp(&a.idle)
            .then(b.size.cmp(&a.size))
            .then(a.path.cmp(&b.path))
    });
    plan
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
}
