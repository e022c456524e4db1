//! The inode table: the numbers the kernel knows entries by, and where each entry is.
//!
//! A node stands for one inode of the share (identified by device, inode number and file
//! type) and holds the names it is known by, each as (parent node, name) — a directory has
//! exactly one, a file one per hard link the kernel has looked up. A node's paths are
//! computed by walking up its parents, so renaming a directory moves its whole subtree
//! without touching the descendants, and a node keeps its number across any rename.
//!
//! A node lives while the kernel holds lookups on it (each reply carrying an entry counts
//! one, `forget` gives them back) or while a child in the table needs it for its path. The
//! root is number 1 and never goes.
//!
//! Numbers: a node gets its inode's own number where that is free (so readdir's `d_ino`
//! agrees with `stat`), else one from a spare range above 2^63 (a second device under the
//! share, an inode number reused while the kernel still remembers the old file).
//!
//! The table never touches the filesystem: the core resolves a path, checks that what it
//! found is still the node's inode, and reports each namespace change here after making it.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use super::Errno;

/// The kernel's number for the share root.
pub const ROOT_INO: u64 = 1;
const FIRST_SPARE: u64 = 1 << 63;
/// Deeper than this is a cycle left by changes made behind the mount's back.
const MAX_DEPTH: usize = 4096;

/// What identifies an inode of the share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub dev: u64,
    pub ino: u64,
    /// `st_mode & S_IFMT`.
    pub fmt: u32,
}

impl Key {
    pub fn of(st: &libc::stat) -> Self {
        Self {
            dev: st.st_dev,
            ino: st.st_ino,
            fmt: st.st_mode & libc::S_IFMT,
        }
    }

    fn is_dir(&self) -> bool {
        self.fmt == libc::S_IFDIR
    }
}

type Dentry = (u64, OsString);

#[derive(Debug)]
struct Node {
    key: Key,
    /// Lookups the kernel holds.
    lookups: u64,
    /// Names in the table, first = the one paths are built from.
    names: Vec<Dentry>,
    /// Names in the table whose parent is this node.
    children: u64,
}

#[derive(Debug)]
pub(crate) struct Table {
    nodes: HashMap<u64, Node>,
    /// Nodes that still have a name, by inode.
    by_key: HashMap<Key, u64>,
    by_name: HashMap<Dentry, u64>,
    root_dev: u64,
    next_spare: u64,
    /// Bumped by every change of names, so a resolution that raced one can retry.
    generation: u64,
}

impl Table {
    pub fn new(root: Key) -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT_INO,
            Node {
                key: root,
                lookups: 1,
                names: Vec::new(),
                children: 0,
            },
        );
        Self {
            nodes,
            by_key: HashMap::new(),
            by_name: HashMap::new(),
            root_dev: root.dev,
            next_spare: FIRST_SPARE,
            generation: 0,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn key(&self, ino: u64) -> Option<Key> {
        self.nodes.get(&ino).map(|n| n.key)
    }

    /// The node at `parent/name`, if the table knows one.
    pub fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        self.by_name.get(&(parent, name.to_os_string())).copied()
    }

    /// The parent of a directory (root for the root and for what has no name left).
    pub fn parent(&self, ino: u64) -> u64 {
        self.nodes
            .get(&ino)
            .and_then(|n| n.names.first())
            .map_or(ROOT_INO, |d| d.0)
    }

    /// Every path the node is known by, the preferred first; empty once it has no name.
    pub fn paths(&self, ino: u64) -> Vec<PathBuf> {
        if ino == ROOT_INO {
            return vec![PathBuf::new()];
        }
        let Some(n) = self.nodes.get(&ino) else {
            return Vec::new();
        };
        n.names
            .iter()
            .filter_map(|(p, name)| self.dir_path(*p).map(|d| d.join(name)))
            .collect()
    }

    pub fn path(&self, ino: u64) -> Option<PathBuf> {
        self.paths(ino).into_iter().next()
    }

    fn dir_path(&self, mut ino: u64) -> Option<PathBuf> {
        let mut parts: Vec<&OsStr> = Vec::new();
        for _ in 0..MAX_DEPTH {
            if ino == ROOT_INO {
                return Some(parts.iter().rev().collect());
            }
            let (parent, name) = self.nodes.get(&ino)?.names.first()?;
            parts.push(name);
            ino = *parent;
        }
        None
    }

    /// The kernel got an entry for `parent/name`, an inode with `key`: one more lookup on
    /// its node (created if new), and the name recorded. ENOENT if `parent` is gone.
    pub fn remember(&mut self, parent: u64, name: &OsStr, key: Key) -> Result<u64, Errno> {
        if !self.nodes.contains_key(&parent) {
            return Err(Errno::ENOENT);
        }
        self.generation += 1;
        let d: Dentry = (parent, name.to_os_string());
        if let Some(&old) = self.by_name.get(&d) {
            if let Some(n) = self.nodes.get_mut(&old) {
                if n.key == key {
                    n.lookups += 1;
                    return Ok(old);
                }
            }
            // The name now holds another inode (changed behind the mount's back).
            self.hold(parent);
            let gone = self.take(&d);
            self.settle(gone);
            self.release(parent);
        }
        let ino = match self.by_key.get(&key) {
            Some(&ino) => ino,
            None => {
                let ino = self.spare_or(key);
                self.nodes.insert(
                    ino,
                    Node {
                        key,
                        lookups: 0,
                        names: Vec::new(),
                        children: 0,
                    },
                );
                ino
            }
        };
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.lookups += 1;
        }
        if key.is_dir() {
            // A directory has one name: if it had another, it was moved behind our back.
            let old: Vec<Dentry> = self
                .nodes
                .get(&ino)
                .map(|n| n.names.clone())
                .unwrap_or_default();
            for o in old {
                self.take(&o);
                self.settle(Some(o.0));
            }
        }
        self.put(d, ino);
        Ok(ino)
    }

    /// The kernel gave back `n` lookups.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
        }
        self.settle(Some(ino));
    }

    /// `parent/name` was removed.
    pub fn unlinked(&mut self, parent: u64, name: &OsStr) {
        self.generation += 1;
        let gone = self.take(&(parent, name.to_os_string()));
        self.settle(gone);
        self.settle(Some(parent));
    }

    /// `parent/name` was renamed to `new_parent/new_name`, replacing what was there.
    pub fn renamed(&mut self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr) {
        let from: Dentry = (parent, name.to_os_string());
        let to: Dentry = (new_parent, new_name.to_os_string());
        if from == to {
            return;
        }
        self.generation += 1;
        self.hold(parent);
        self.hold(new_parent);
        let replaced = self.take(&to);
        let moved = self.take(&from);
        if let Some(m) = moved {
            self.put(to, m);
        }
        self.settle(replaced);
        self.release(parent);
        self.release(new_parent);
    }

    /// `parent/name` and `new_parent/new_name` swapped (RENAME_EXCHANGE).
    pub fn exchanged(&mut self, parent: u64, name: &OsStr, new_parent: u64, new_name: &OsStr) {
        let a: Dentry = (parent, name.to_os_string());
        let b: Dentry = (new_parent, new_name.to_os_string());
        if a == b {
            return;
        }
        self.generation += 1;
        self.hold(parent);
        self.hold(new_parent);
        let at_a = self.take(&a);
        let at_b = self.take(&b);
        if let Some(x) = at_a {
            self.put(b, x);
        }
        if let Some(y) = at_b {
            self.put(a, y);
        }
        self.release(parent);
        self.release(new_parent);
    }

    /// Removes a name from the table (the node stays until [`Self::settle`]).
    fn take(&mut self, d: &Dentry) -> Option<u64> {
        let ino = self.by_name.remove(d)?;
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.names.retain(|x| x != d);
            if n.names.is_empty() && self.by_key.get(&n.key) == Some(&ino) {
                self.by_key.remove(&n.key);
            }
        }
        if let Some(p) = self.nodes.get_mut(&d.0) {
            p.children = p.children.saturating_sub(1);
        }
        Some(ino)
    }

    fn put(&mut self, d: Dentry, ino: u64) {
        let Some(key) = self.nodes.get(&ino).map(|n| n.key) else {
            return;
        };
        if !self.nodes.contains_key(&d.0) {
            return;
        }
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.names.push(d.clone());
        }
        if let Some(p) = self.nodes.get_mut(&d.0) {
            p.children += 1;
        }
        self.by_key.entry(key).or_insert(ino);
        self.by_name.insert(d, ino);
    }

    /// Keeps a node alive across a change that may leave it briefly without children.
    fn hold(&mut self, ino: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.lookups += 1;
        }
    }

    fn release(&mut self, ino: u64) {
        self.forget(ino, 1);
    }

    /// Drops the node if nothing keeps it (no lookups, no children), then its parents.
    fn settle(&mut self, ino: Option<u64>) {
        let mut work: Vec<u64> = ino.into_iter().collect();
        while let Some(ino) = work.pop() {
            if ino == ROOT_INO {
                continue;
            }
            let idle = self
                .nodes
                .get(&ino)
                .is_some_and(|n| n.lookups == 0 && n.children == 0);
            if !idle {
                continue;
            }
            let Some(n) = self.nodes.remove(&ino) else {
                continue;
            };
            if self.by_key.get(&n.key) == Some(&ino) {
                self.by_key.remove(&n.key);
            }
            for d in n.names {
                if self.by_name.get(&d) == Some(&ino) {
                    self.by_name.remove(&d);
                }
                if let Some(p) = self.nodes.get_mut(&d.0) {
                    p.children = p.children.saturating_sub(1);
                }
                work.push(d.0);
            }
        }
    }

    /// The inode's own number if it is free, else a spare one.
    fn spare_or(&mut self, key: Key) -> u64 {
        if key.dev == self.root_dev && key.ino > ROOT_INO && !self.nodes.contains_key(&key.ino) {
            return key.ino;
        }
        loop {
            let n = self.next_spare;
            self.next_spare = self.next_spare.checked_add(1).unwrap_or(FIRST_SPARE);
            if !self.nodes.contains_key(&n) {
                return n;
            }
        }
    }

    #[cfg(test)]
    pub fn lookups(&self, ino: u64) -> Option<u64> {
        self.nodes.get(&ino).map(|n| n.lookups)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;

    fn key(ino: u64, dir: bool) -> Key {
        Key {
            dev: 7,
            ino,
            fmt: if dir { libc::S_IFDIR } else { libc::S_IFREG },
        }
    }

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn renaming_a_directory_moves_its_subtree_and_keeps_numbers() {
        let mut t = Table::new(key(2, true));
        let d = t.remember(ROOT_INO, os("d"), key(10, true)).unwrap();
        let e = t.remember(d, os("e"), key(11, true)).unwrap();
        let f = t.remember(e, os("f"), key(12, false)).unwrap();
        assert_eq!((d, e, f), (10, 11, 12), "own inode numbers where free");
        assert_eq!(t.path(f).unwrap(), Path::new("d/e/f"));
        t.renamed(ROOT_INO, os("d"), ROOT_INO, os("x"));
        assert_eq!(t.path(f).unwrap(), Path::new("x/e/f"));
        assert_eq!(t.child(ROOT_INO, os("x")), Some(d));
        assert_eq!(t.child(ROOT_INO, os("d")), None);
        // Moving a file over another: the replaced one loses its name, and goes once the
        // kernel forgets it.
        let g = t.remember(ROOT_INO, os("g"), key(13, false)).unwrap();
        t.renamed(e, os("f"), ROOT_INO, os("g"));
        assert_eq!(t.path(f).unwrap(), Path::new("g"));
        assert!(t.paths(g).is_empty());
        t.forget(g, 1);
        assert_eq!(t.key(g), None);
        // Exchange swaps names.
        t.exchanged(ROOT_INO, os("g"), ROOT_INO, os("x"));
        assert_eq!(t.path(f).unwrap(), Path::new("x"));
        assert_eq!(t.path(e).unwrap(), Path::new("g/e"));
    }

    #[test]
    fn nodes_live_while_looked_up_or_needed_by_a_child() {
        let mut t = Table::new(key(2, true));
        let d = t.remember(ROOT_INO, os("d"), key(10, true)).unwrap();
        let f = t.remember(d, os("f"), key(11, false)).unwrap();
        t.forget(d, 1);
        assert!(
            t.key(d).is_some(),
            "the child still needs its parent's path"
        );
        assert_eq!(t.path(f).unwrap(), Path::new("d/f"));
        t.forget(f, 1);
        assert_eq!(t.len(), 1, "only the root is left");
        t.forget(ROOT_INO, 99);
        assert!(t.key(ROOT_INO).is_some());
    }

    #[test]
    fn hard_links_share_a_node_and_names_go_one_by_one() {
        let mut t = Table::new(key(2, true));
        let a = t.remember(ROOT_INO, os("a"), key(10, false)).unwrap();
        let b = t.remember(ROOT_INO, os("b"), key(10, false)).unwrap();
        assert_eq!(a, b);
        assert_eq!(t.lookups(a), Some(2));
        assert_eq!(t.paths(a).len(), 2);
        t.unlinked(ROOT_INO, os("a"));
        assert_eq!(t.path(a).unwrap(), Path::new("b"));
        t.unlinked(ROOT_INO, os("b"));
        assert!(t.paths(a).is_empty());
        // The inode number comes back for a new file while the kernel still holds the old
        // node: the new one gets a spare number.
        let c = t.remember(ROOT_INO, os("c"), key(10, false)).unwrap();
        assert_ne!(c, a);
        assert!(c >= FIRST_SPARE);
    }

    #[test]
    fn a_name_that_now_holds_another_inode_is_repointed() {
        let mut t = Table::new(key(2, true));
        let a = t.remember(ROOT_INO, os("a"), key(10, false)).unwrap();
        let a2 = t.remember(ROOT_INO, os("a"), key(20, false)).unwrap();
        assert_ne!(a, a2);
        assert!(t.paths(a).is_empty());
        assert_eq!(t.path(a2).unwrap(), Path::new("a"));
        // A directory seen under a new name was moved: it keeps one name.
        let d = t.remember(ROOT_INO, os("d"), key(30, true)).unwrap();
        let d2 = t.remember(a2, os("d"), key(30, true));
        // (a2 is a file; the table does not judge, the filesystem would have refused.)
        assert_eq!(d2.unwrap(), d);
        assert_eq!(t.paths(d).len(), 1);
        // The root's own inode number is never handed to another node.
        let other_dev = Key {
            dev: 8,
            ..key(1, false)
        };
        assert!(t.remember(ROOT_INO, os("z"), other_dev).unwrap() >= FIRST_SPARE);
        assert_eq!(
            t.remember(ROOT_INO, os("gone"), key(5, false)).ok(),
            Some(5)
        );
        assert_eq!(t.remember(999, os("x"), key(6, false)), Err(Errno::ENOENT));
    }
}
