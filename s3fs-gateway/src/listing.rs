//! Listing a bucket in key order by walking its directory tree.
//!
//! Keys sort byte-wise, and a directory `d` holds exactly the keys that start with `d/`, so
//! visiting each directory's entries sorted by name — a directory sorting as `name/` — yields
//! keys in S3 order. The walk starts at the deepest directory the prefix names, skips whole
//! subtrees that lie before the marker, and with the `/` delimiter reports a subdirectory as
//! one common prefix without reading it. It never follows symlinks.

use std::io;
use std::path::Path;

use crate::meta::ObjectMeta;

/// What to list.
#[derive(Debug, Clone, Default)]
pub struct ListParams<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Return only keys after this one (marker, start-after, continuation token).
    pub after: Option<&'a str>,
    pub max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Object(String),
    Prefix(String),
}

impl Item {
    pub fn key(&self) -> &str {
        match self {
            Item::Object(k) | Item::Prefix(k) => k,
        }
    }
}

#[derive(Debug, Default)]
pub struct Listing {
    pub items: Vec<Item>,
    pub truncated: bool,
}

struct Walk<'a> {
    p: &'a ListParams<'a>,
    /// `after` names a common prefix already returned: skip everything under it.
    after_is_prefix: bool,
    out: Listing,
    last_prefix: Option<String>,
}

impl Walk<'_> {
    fn full(&self) -> bool {
        self.out.truncated
    }

    /// Whether `key` comes after the marker.
    fn is_past(&self, key: &str) -> bool {
        match self.p.after {
            None => true,
            Some(a) => key > a && !(self.after_is_prefix && key.starts_with(a)),
        }
    }

    /// Whether every key under the directory key `dkey` lies at or before the marker.
    fn subtree_is_before(&self, dkey: &str) -> bool {
        match self.p.after {
            None => false,
            Some(a) => {
                (a > dkey && !a.starts_with(dkey)) || (self.after_is_prefix && dkey.starts_with(a))
            }
        }
    }

    fn push(&mut self, item: Item) {
        if self.out.items.len() >= self.p.max {
            self.out.truncated = true;
            return;
        }
        if let Item::Prefix(p) = &item {
            if self.last_prefix.as_deref() == Some(p) {
                return;
            }
            self.last_prefix = Some(p.clone());
        }
        self.out.items.push(item);
    }

    /// The common prefix `key` rolls up into, if any.
    fn common_prefix(&self, key: &str) -> Option<String> {
        let d = self.p.delimiter.filter(|d| !d.is_empty())?;
        let rest = key.get(self.p.prefix.len()..)?;
        let i = rest.find(d)?;
        Some(format!("{}{}", self.p.prefix, &rest[..i + d.len()]))
    }

    fn walk(&mut self, dir: &Path, dir_key: &str, name_filter: &str) -> io::Result<()> {
        let mut entries = Vec::new();
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        for entry in rd {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                tracing::warn!(dir = %dir.display(), "skipping a file whose name is not UTF-8");
                continue;
            };
            if !name.starts_with(name_filter) {
                continue;
            }
            let ft = entry.file_type()?;
            if ft.is_dir() {
                entries.push((format!("{name}/"), true));
            } else if ft.is_file() {
                entries.push((name, false));
            }
        }
        entries.sort_unstable();
        for (sort_name, is_dir) in entries {
            if self.full() {
                return Ok(());
            }
            let key = format!("{dir_key}{sort_name}");
            if is_dir {
                if self.subtree_is_before(&key) {
                    continue;
                }
                if let Some(cp) = self.common_prefix(&key) {
                    if key.starts_with(&cp) {
                        // The whole subtree rolls up into one common prefix; report it
                        // without reading the directory.
                        let wanted = match self.p.after {
                            None => true,
                            Some(a) => {
                                cp.as_str() > a || (!self.after_is_prefix && a.starts_with(&cp))
                            }
                        };
                        if wanted {
                            self.push(Item::Prefix(cp));
                        }
                        continue;
                    }
                }
                let path = dir.join(&sort_name[..sort_name.len() - 1]);
                if self.is_past(&key)
                    && matches!(ObjectMeta::load(&path), Ok(Some(m)) if m.dir_marker)
                {
                    self.push(Item::Object(key.clone()));
                }
                self.walk(&path, &key, "")?;
            } else {
                if !self.is_past(&key) {
                    continue;
                }
                match self.common_prefix(&key) {
                    Some(cp) => self.push(Item::Prefix(cp)),
                    None => self.push(Item::Object(key)),
                }
            }
        }
        Ok(())
    }
}

/// Lists `bucket_dir` per `p`. A prefix whose directory part is not a valid path cannot
/// match any key, so it lists nothing.
pub fn list(bucket_dir: &Path, p: &ListParams<'_>) -> io::Result<Listing> {
    if p.max == 0 {
        return Ok(Listing::default());
    }
    let (dir_key, name_filter) = match p.prefix.rfind('/') {
        Some(i) => (&p.prefix[..=i], &p.prefix[i + 1..]),
        None => ("", p.prefix),
    };
    let mut dir = bucket_dir.to_path_buf();
    if !dir_key.is_empty() {
        if crate::keys::ObjectKey::parse(dir_key).is_err() {
            return Ok(Listing::default());
        }
        for c in dir_key.trim_end_matches('/').split('/') {
            dir.push(c);
            match std::fs::symlink_metadata(&dir) {
                Ok(md) if md.is_dir() => {}
                _ => return Ok(Listing::default()),
            }
        }
    }
    let after_is_prefix = match (p.after, p.delimiter) {
        (Some(a), Some(d)) if !d.is_empty() => a.ends_with(d) && a.starts_with(p.prefix),
        _ => false,
    };
    let mut w = Walk {
        p,
        after_is_prefix,
        out: Listing::default(),
        last_prefix: None,
    };
    if after_is_prefix {
        w.last_prefix = p.after.map(str::to_owned);
    }
    if !dir_key.is_empty() && name_filter.is_empty() && w.is_past(dir_key) {
        // The prefix names a directory: its own `dir/` marker is the first key under it.
        if matches!(ObjectMeta::load(&dir), Ok(Some(m)) if m.dir_marker) {
            w.push(Item::Object(dir_key.to_owned()));
        }
    }
    w.walk(&dir, dir_key, name_filter)?;
    Ok(w.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(keys: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for k in keys {
            let p = dir.path().join(k);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        dir
    }

    fn keys(l: &Listing) -> Vec<String> {
        l.items
            .iter()
            .map(|i| match i {
                Item::Object(k) => k.clone(),
                Item::Prefix(p) => format!("P:{p}"),
            })
            .collect()
    }

    const KEYS: &[&str] = &[
        "a-b", "a/b", "a/c/d", "a0", "a.b", "A", "é", "a/b0", "b/x/y/z",
    ];

    #[test]
    fn full_listing_is_in_byte_order() {
        let t = tree(KEYS);
        let l = list(
            t.path(),
            &ListParams {
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
        let mut want: Vec<String> = KEYS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(keys(&l), want);
        assert!(!l.truncated);
    }

    #[test]
    fn pages_resume_after_the_marker() {
        let t = tree(KEYS);
        let mut want: Vec<String> = KEYS.iter().map(|s| s.to_string()).collect();
        want.sort();
        for page in 1..4 {
            let mut got = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let l = list(
                    t.path(),
                    &ListParams {
                        max: page,
                        after: after.as_deref(),
                        ..Default::default()
                    },
                )
                .unwrap();
                got.extend(keys(&l));
                if !l.truncated {
                    break;
                }
                after = Some(l.items.last().unwrap().key().to_string());
            }
            assert_eq!(got, want, "page size {page}");
        }
    }

    #[test]
    fn delimiter_and_prefix() {
        let t = tree(KEYS);
        let l = list(
            t.path(),
            &ListParams {
                delimiter: Some("/"),
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(&l), ["A", "a-b", "a.b", "P:a/", "a0", "P:b/", "é"]);
        let l = list(
            t.path(),
            &ListParams {
                prefix: "a/",
                delimiter: Some("/"),
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(&l), ["a/b", "a/b0", "P:a/c/"]);
        let l = list(
            t.path(),
            &ListParams {
                prefix: "a/b",
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(&l), ["a/b", "a/b0"]);
        let l = list(
            t.path(),
            &ListParams {
                prefix: "b/x/",
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(&l), ["b/x/y/z"]);
        let l = list(
            t.path(),
            &ListParams {
                prefix: "../",
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(l.items.is_empty());
        // Resuming after a common prefix skips everything under it.
        let l = list(
            t.path(),
            &ListParams {
                delimiter: Some("/"),
                after: Some("a/"),
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(&l), ["a0", "P:b/", "é"]);
    }

    #[test]
    fn a_prefix_lists_its_own_marker_first() {
        let t = tree(&["d/a"]);
        let meta = ObjectMeta {
            dir_marker: true,
            ..ObjectMeta::new("e".into(), 0)
        };
        meta.store(&t.path().join("d")).unwrap();
        let l = list(
            t.path(),
            &ListParams {
                prefix: "d/",
                max: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(&l), ["d/", "d/a"]);
        let l = list(
            t.path(),
            &ListParams {
                prefix: "d/",
                delimiter: Some("/"),
                max: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(&l), ["d/", "d/a"]);
        let l = list(
            t.path(),
            &ListParams {
                prefix: "d/",
                after: Some("d/"),
                max: 10,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(&l), ["d/a"]);
    }

    #[test]
    fn other_delimiters_roll_up_across_levels() {
        let t = tree(&["x-1/a", "x-1/b", "x-2", "y"]);
        let l = list(
            t.path(),
            &ListParams {
                delimiter: Some("-"),
                max: 1000,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(keys(&l), ["P:x-", "y"]);
    }
}
