//! Policy rules (issue 6): which files of a gpair go west on their own, and why each file
//! is where it is. Pure logic: facts about one file in, a verdict with its reason out — the
//! same function answers a policy run, its dry run and `gpair explain`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::glob::Glob;

/// The default minimum age: a file modified within the last hour is never offloaded.
pub const DEFAULT_MIN_AGE_SECS: u64 = 3600;

/// A gpair's policy as stored in the catalog (`gpair policy set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rules {
    /// Offload files not accessed for this long (atime; mtime on a filesystem mounted
    /// `noatime`).
    pub idle_secs: Option<u64>,
    /// Offload files not modified for this long.
    pub unmodified_secs: Option<u64>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    /// Only paths matching one of these (empty: every path).
    pub include: Vec<String>,
    /// Never paths matching one of these.
    pub exclude: Vec<String>,
    /// Only files of these owners (empty: every owner).
    pub owners: Vec<u32>,
    /// Never a file modified more recently than this, whatever the other rules say.
    pub min_age_secs: u64,
    /// Run the policy on its own this often (none: only `gpair policy run`).
    pub interval_secs: Option<u64>,
    /// East usage watermarks, percent of the share's filesystem: above `high`, the coldest
    /// candidates go until usage is under `low`.
    pub high_percent: Option<u8>,
    pub low_percent: Option<u8>,
    /// East soft limit of the share's local data (bytes of files not offloaded): above it,
    /// the coldest candidates go until it is under.
    pub east_soft_limit: Option<u64>,
    /// Rate limits of this gpair's background work (policy runs, prefetch lists): files and
    /// bytes started per second. Interactive work (admin commands, mounts) is never limited.
    pub max_files_per_sec: Option<u64>,
    pub max_bytes_per_sec: Option<u64>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            idle_secs: None,
            unmodified_secs: None,
            min_size: None,
            max_size: None,
            include: Vec::new(),
            exclude: Vec::new(),
            owners: Vec::new(),
            min_age_secs: DEFAULT_MIN_AGE_SECS,
            interval_secs: None,
            high_percent: None,
            low_percent: None,
            east_soft_limit: None,
            max_files_per_sec: None,
            max_bytes_per_sec: None,
        }
    }
}

/// [`Rules`] with their globs parsed.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub rules: Rules,
    include: Vec<Glob>,
    exclude: Vec<Glob>,
}

impl Rules {
    /// Checks the rules and parses their globs; the error names the bad field.
    pub fn compile(&self) -> Result<Compiled, String> {
        if self.idle_secs.is_none() && self.unmodified_secs.is_none() {
            return Err(
                "a policy needs an age rule: not accessed for (idle) and/or not modified for"
                    .into(),
            );
        }
        match (self.high_percent, self.low_percent) {
            (None, None) => {}
            (Some(high), Some(low)) if low < high && high <= 100 => {}
            (Some(high), Some(low)) => {
                return Err(format!(
                "watermarks low {low}% and high {high}%: low must be under high, high at most 100"
            ))
            }
            _ => return Err("give both watermarks, high and low".into()),
        }
        if self.east_soft_limit == Some(0) {
            return Err(
                "an east soft limit of 0 bytes would offload everything; give a size".into(),
            );
        }
        if self.max_files_per_sec == Some(0) || self.max_bytes_per_sec == Some(0) {
            return Err(
                "a rate limit of 0 would stop background work for good; give a rate, or none"
                    .into(),
            );
        }
        if self.interval_secs == Some(0) {
            return Err("the interval of periodic runs must be at least one second".into());
        }
        if let (Some(lo), Some(hi)) = (self.min_size, self.max_size) {
            if lo > hi {
                return Err(format!("min size {lo} is more than max size {hi}"));
            }
        }
        let parse = |field: &str, list: &[String]| {
            list.iter()
                .map(|g| Glob::parse(g).map_err(|e| format!("{field}: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Compiled {
            include: parse("include", &self.include)?,
            exclude: parse("exclude", &self.exclude)?,
            rules: self.clone(),
        })
    }
}

/// What is known of one file when it is judged.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Path relative to the share, raw bytes.
    pub rel: &'a [u8],
    pub regular: bool,
    pub size: u64,
    /// Seconds since the epoch.
    pub atime: i64,
    pub mtime: i64,
    pub uid: u32,
    /// Already a stub.
    pub offloaded: bool,
    /// Pinned, and by what (the file itself or a directory above it).
    pub pinned: Option<String>,
    pub open_for_write: bool,
    /// Written during an offload that stopped because of it, not yet settled.
    pub dirty: bool,
    /// Metadata sync has not put its entry on west yet.
    pub unsynced: bool,
    /// The filesystem does not keep access times (`noatime`): idleness is judged by mtime.
    pub noatime: bool,
}

/// Why a file stays where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keep {
    Offloaded,
    NotRegular,
    Pinned(String),
    OpenForWrite,
    Dirty,
    Unsynced,
    /// Modified `age` seconds ago, under the minimum age.
    TooYoung {
        age: i64,
        min: u64,
    },
    Excluded(String),
    NotIncluded,
    TooSmall {
        size: u64,
        min: u64,
    },
    TooLarge {
        size: u64,
        max: u64,
    },
    Owner(u32),
    /// Accessed (or, with `noatime`, modified) `idle` seconds ago, under the rule's.
    RecentlyUsed {
        idle: i64,
        need: u64,
        by_mtime: bool,
    },
    RecentlyModified {
        age: i64,
        need: u64,
    },
}

/// The verdict on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A candidate: `idle` seconds unused (how cold it is: the coldest go first).
    Offload {
        idle: i64,
        why: String,
    },
    Keep(Keep),
}

impl Compiled {
    /// Judges one file at `now` (seconds since the epoch). The checks run in a fixed order,
    /// safety first, so the reason given is the first that holds.
    pub fn judge(&self, f: &Facts<'_>, now: i64) -> Verdict {
        let r = &self.rules;
        let keep = Verdict::Keep;
        if f.offloaded {
            return keep(Keep::Offloaded);
        }
        if !f.regular {
            return keep(Keep::NotRegular);
        }
        if let Some(by) = &f.pinned {
            return keep(Keep::Pinned(by.clone()));
        }
        if f.open_for_write {
            return keep(Keep::OpenForWrite);
        }
        if f.dirty {
            return keep(Keep::Dirty);
        }
        if f.unsynced {
            return keep(Keep::Unsynced);
        }
        let age = now.saturating_sub(f.mtime);
        if age < secs(r.min_age_secs) {
            return keep(Keep::TooYoung {
                age,
                min: r.min_age_secs,
            });
        }
        if let Some(g) = self.exclude.iter().find(|g| g.matches(f.rel)) {
            return keep(Keep::Excluded(g.as_str().to_owned()));
        }
        if !self.include.is_empty() && !self.include.iter().any(|g| g.matches(f.rel)) {
            return keep(Keep::NotIncluded);
        }
        if let Some(min) = r.min_size.filter(|m| f.size < *m) {
            return keep(Keep::TooSmall { size: f.size, min });
        }
        if let Some(max) = r.max_size.filter(|m| f.size > *m) {
            return keep(Keep::TooLarge { size: f.size, max });
        }
        if !r.owners.is_empty() && !r.owners.contains(&f.uid) {
            return keep(Keep::Owner(f.uid));
        }
        // With noatime the access time says nothing: modification stands in for it.
        let used = if f.noatime {
            f.mtime
        } else {
            f.atime.max(f.mtime)
        };
        let idle = now.saturating_sub(used);
        let mut why = Vec::new();
        if let Some(need) = r.idle_secs {
            if idle < secs(need) {
                return keep(Keep::RecentlyUsed {
                    idle,
                    need,
                    by_mtime: f.noatime,
                });
            }
            why.push(format!(
                "not {} for {} (rule: {})",
                if f.noatime {
                    "modified (noatime)"
                } else {
                    "accessed"
                },
                human_secs(idle),
                human_secs(secs(need))
            ));
        }
        if let Some(need) = r.unmodified_secs {
            if age < secs(need) {
                return keep(Keep::RecentlyModified { age, need });
            }
            why.push(format!(
                "not modified for {} (rule: {})",
                human_secs(age),
                human_secs(secs(need))
            ));
        }
        Verdict::Offload {
            idle,
            why: why.join("; "),
        }
    }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// `3d 4h`, `2h 5m`, `45s`: the two largest units.
pub fn human_secs(s: i64) -> String {
    let s = s.max(0);
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let mut parts = Vec::new();
    let mut rest = s;
    for (n, u) in units {
        if rest >= n && parts.len() < 2 {
            parts.push(format!("{}{u}", rest / n));
            rest %= n;
        } else if !parts.is_empty() {
            break;
        }
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

impl fmt::Display for Keep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Keep::Offloaded => write!(f, "already offloaded"),
            Keep::NotRegular => write!(f, "not a regular file"),
            Keep::Pinned(by) => write!(f, "pinned ({by})"),
            Keep::OpenForWrite => write!(f, "open for writing"),
            Keep::Dirty => write!(
                f,
                "written during its last offload; retried at the next run"
            ),
            Keep::Unsynced => write!(f, "not synced to west yet"),
            Keep::TooYoung { age, min } => write!(
                f,
                "too young: modified {} ago, the minimum age is {}",
                human_secs(*age),
                human_secs(secs(*min))
            ),
            Keep::Excluded(g) => write!(f, "excluded by glob {g:?}"),
            Keep::NotIncluded => write!(f, "matches no include glob"),
            Keep::TooSmall { size, min } => write!(f, "too small: {size} bytes, min {min}"),
            Keep::TooLarge { size, max } => write!(f, "too large: {size} bytes, max {max}"),
            Keep::Owner(uid) => write!(f, "owner uid {uid} is not selected"),
            Keep::RecentlyUsed {
                idle,
                need,
                by_mtime,
            } => write!(
                f,
                "{} {} ago, the rule wants {}",
                if *by_mtime {
                    "modified (the filesystem keeps no access times)"
                } else {
                    "accessed"
                },
                human_secs(*idle),
                human_secs(secs(*need))
            ),
            Keep::RecentlyModified { age, need } => write!(
                f,
                "modified {} ago, the rule wants {}",
                human_secs(*age),
                human_secs(secs(*need))
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn facts(rel: &'static str) -> Facts<'static> {
        Facts {
            rel: rel.as_bytes(),
            regular: true,
            size: 10_000,
            atime: NOW - 40 * DAY,
            mtime: NOW - 60 * DAY,
            uid: 1000,
            offloaded: false,
            pinned: None,
            open_for_write: false,
            dirty: false,
            unsynced: false,
            noatime: false,
        }
    }

    fn rules() -> Rules {
        Rules {
            idle_secs: Some(30 * DAY as u64),
            unmodified_secs: None,
            min_size: Some(4096),
            max_size: Some(1 << 30),
            include: vec![],
            exclude: vec!["*.db".into(), "ads/".into()],
            owners: vec![],
            min_age_secs: DEFAULT_MIN_AGE_SECS,
            interval_secs: None,
            high_percent: None,
            low_percent: None,
            east_soft_limit: None,
            max_files_per_sec: None,
            max_bytes_per_sec: None,
        }
    }

    fn keep(r: &Rules, f: &Facts<'_>) -> Option<Keep> {
        match r.compile().unwrap_or_else(|e| panic!("{e}")).judge(f, NOW) {
            Verdict::Keep(k) => Some(k),
            Verdict::Offload { .. } => None,
        }
    }

    #[test]
    fn each_rule_keeps_what_it_should_and_nothing_else() {
        type Tweak = fn(&mut Rules, &mut Facts<'static>);
        let cases: &[(&str, Tweak, Option<Keep>)] = &[
            ("a cold file goes", |_, _| {}, None),
            (
                "already a stub",
                |_, f| f.offloaded = true,
                Some(Keep::Offloaded),
            ),
            (
                "a symlink",
                |_, f| f.regular = false,
                Some(Keep::NotRegular),
            ),
            (
                "pinned beats everything after it",
                |_, f| {
                    f.pinned = Some("dir x".into());
                    f.open_for_write = true;
                },
                Some(Keep::Pinned("dir x".into())),
            ),
            (
                "open for write",
                |_, f| f.open_for_write = true,
                Some(Keep::OpenForWrite),
            ),
            ("dirty", |_, f| f.dirty = true, Some(Keep::Dirty)),
            ("not synced", |_, f| f.unsynced = true, Some(Keep::Unsynced)),
            (
                "modified 59 min ago: too young",
                |_, f| {
                    f.mtime = NOW - 3599;
                    f.atime = NOW - 3599;
                },
                Some(Keep::TooYoung {
                    age: 3599,
                    min: 3600,
                }),
            ),
            (
                "excluded by name anywhere",
                |_, f| f.rel = b"x/y/z.db",
                Some(Keep::Excluded("*.db".into())),
            ),
            (
                "excluded directory",
                |_, f| f.rel = b"ads/q/r.bin",
                Some(Keep::Excluded("ads/".into())),
            ),
            (
                "not included",
                |r, _| r.include = vec!["logs/".into()],
                Some(Keep::NotIncluded),
            ),
            (
                "included",
                |r, f| {
                    r.include = vec!["logs/".into()];
                    f.rel = b"logs/a.log";
                },
                None,
            ),
            (
                "one byte under min size",
                |_, f| f.size = 4095,
                Some(Keep::TooSmall {
                    size: 4095,
                    min: 4096,
                }),
            ),
            ("exactly min size", |_, f| f.size = 4096, None),
            ("exactly max size", |_, f| f.size = 1 << 30, None),
            (
                "one over max size",
                |_, f| f.size = (1 << 30) + 1,
                Some(Keep::TooLarge {
                    size: (1 << 30) + 1,
                    max: 1 << 30,
                }),
            ),
            (
                "owner not selected",
                |r, _| r.owners = vec![0],
                Some(Keep::Owner(1000)),
            ),
            ("owner selected", |r, _| r.owners = vec![0, 1000], None),
            (
                "accessed a second too recently",
                |_, f| f.atime = NOW - 30 * DAY + 1,
                Some(Keep::RecentlyUsed {
                    idle: 30 * DAY - 1,
                    need: 30 * DAY as u64,
                    by_mtime: false,
                }),
            ),
            (
                "idle exactly the rule",
                |_, f| f.atime = NOW - 30 * DAY,
                None,
            ),
            (
                "noatime: mtime decides, however old atime is",
                |_, f| {
                    f.noatime = true;
                    f.atime = NOW - 400 * DAY;
                    f.mtime = NOW - 2 * DAY;
                },
                Some(Keep::RecentlyUsed {
                    idle: 2 * DAY,
                    need: 30 * DAY as u64,
                    by_mtime: true,
                }),
            ),
            (
                "noatime: an old mtime is enough",
                |_, f| {
                    f.noatime = true;
                    f.atime = NOW;
                },
                None,
            ),
            (
                "an atime older than mtime counts from mtime",
                |_, f| {
                    f.atime = NOW - 100 * DAY;
                    f.mtime = NOW - 10 * DAY;
                },
                Some(Keep::RecentlyUsed {
                    idle: 10 * DAY,
                    need: 30 * DAY as u64,
                    by_mtime: false,
                }),
            ),
            (
                "unmodified rule",
                |r, f| {
                    r.unmodified_secs = Some(90 * DAY as u64);
                    f.mtime = NOW - 89 * DAY;
                },
                Some(Keep::RecentlyModified {
                    age: 89 * DAY,
                    need: 90 * DAY as u64,
                }),
            ),
        ];
        for (name, tweak, want) in cases {
            let mut r = rules();
            let mut f = facts("data/file.bin");
            tweak(&mut r, &mut f);
            assert_eq!(keep(&r, &f), *want, "{name}");
        }
    }

    #[test]
    fn a_candidate_says_why_and_how_cold() {
        let c = rules().compile().unwrap_or_else(|e| panic!("{e}"));
        match c.judge(&facts("a"), NOW) {
            Verdict::Offload { idle, why } => {
                assert_eq!(idle, 40 * DAY);
                assert_eq!(why, "not accessed for 40d (rule: 30d)");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn bad_rules_are_refused_with_the_field() {
        let mut r = rules();
        r.idle_secs = None;
        assert!(r.compile().unwrap_err().contains("age rule"));
        let mut r = rules();
        r.min_size = Some(10);
        r.max_size = Some(5);
        assert!(r.compile().unwrap_err().contains("min size"));
        let mut r = rules();
        r.exclude = vec!["".into()];
        assert!(r.compile().unwrap_err().starts_with("exclude: "));
        let mut r = rules();
        r.high_percent = Some(80);
        assert!(r.compile().unwrap_err().contains("both watermarks"));
        r.low_percent = Some(80);
        assert!(r.compile().unwrap_err().contains("low must be under high"));
        r.low_percent = Some(60);
        assert!(r.compile().is_ok());
        let mut r = rules();
        r.max_files_per_sec = Some(0);
        assert!(r.compile().unwrap_err().contains("rate limit of 0"));
        r.max_files_per_sec = Some(1);
        r.max_bytes_per_sec = Some(0);
        assert!(r.compile().unwrap_err().contains("rate limit of 0"));
        r.max_bytes_per_sec = Some(1);
        assert!(r.compile().is_ok());
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(human_secs(0), "0s");
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(human_secs(7200 + 300), "2h 5m");
        assert_eq!(
            Keep::TooYoung {
                age: 120,
                min: 3600
            }
            .to_string(),
            "too young: modified 2m ago, the minimum age is 1h"
        );
        assert_eq!(
            Keep::Excluded("*.db".into()).to_string(),
            "excluded by glob \"*.db\""
        );
    }
}
