//! `gpair fsck`: checks one gpair's three views of the same files against each other — the
//! east stub records (the authority on what is offloaded, DESIGN 4.1), the catalog's records
//! (entries, remote records that make up the quota, tier marks, intents) and a west listing
//! of the gpair's prefix — and lists every disagreement by kind.
//!
//! `--repair` fixes what is safe: catalog records are corrected from the stub records, quota
//! usage is recomputed, orphan west data is moved to the trash (purged after the gpair's
//! retention), missing placeholders are queued, leftover intents are resolved as at start.
//! It never removes a stub record, never writes east data, and never drops west data a stub
//! record points at. `--rebuild` re-derives the gpair's remote records and tier marks from
//! scratch (after the catalog was lost) and queues every east path for metadata sync.
//!
//! The registry (gpeers, gpairs) cannot be derived from east or west: every change of it is
//! copied to a backup file next to the catalog ([`write_registry_backup`]), which the daemon
//! loads into an empty catalog at start ([`restore_registry`]).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gpair_proto::{now_ms, pb};
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::catalog::{
    gpair_key, split_gpair_key, Catalog, CatalogError, CF_ENTRIES, CF_INTENTS, CF_QUOTA,
    CF_REGISTRY, CF_TIERS,
};
use crate::grpc::AdminService;
use crate::registry::GpairRecord;
use crate::sync::{AttrOp, Op};
use crate::tier::quota::RemoteRecord;
use crate::tier::stub::{self, StubRecord};
use crate::tier::{Intent, MarkState, TierMark, Tiering, TRASH_DIR};
use crate::west::{WestEntry, WestKey, WestStore};

// ------------------------------------------------------------------ registry backup

/// Format of the registry backup file.
const BACKUP_FORMAT: u8 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct RegistryBackup {
    format: u8,
    written_at_ms: i64,
    records: Vec<BackupRecord>,
}

/// One registry record: its key and its catalog value (record version, JSON).
#[derive(Debug, Serialize, Deserialize)]
struct BackupRecord {
    key: String,
    version: u8,
    value: serde_json::Value,
}

/// Where the registry backup of the catalog at `catalog` lives: next to it, outside the
/// RocksDB directory, so losing that directory does not lose the backup
/// (`/var/lib/gpair/catalog` → `/var/lib/gpair/catalog.registry.json`).
pub fn registry_backup_path(catalog: &Path) -> PathBuf {
    let clean: PathBuf = catalog.components().collect();
    let mut name = clean.into_os_string();
    name.push(".registry.json");
    PathBuf::from(name)
}

/// Writes every registry record to `path` (mode 0600: it holds gpeer secrets, as the
/// catalog does): temp file, fsync, rename, fsync the directory.
pub fn write_registry_backup(catalog: &Catalog, path: &Path) -> std::io::Result<()> {
    let mut records = Vec::new();
    catalog
        .for_each_raw(CF_REGISTRY, b"", |k, v| {
            let Ok(key) = std::str::from_utf8(k) else {
                return true;
            };
            if let Some((&version, rest)) = v.split_first() {
                if let Ok(value) = serde_json::from_slice(rest) {
                    records.push(BackupRecord {
                        key: key.to_owned(),
                        version,
                        value,
                    });
                }
            }
            true
        })
        .map_err(std::io::Error::other)?;
    let body = serde_json::to_vec_pretty(&RegistryBackup {
        format: BACKUP_FORMAT,
        written_at_ms: now_ms(),
        records,
    })
    .map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// Loads the registry backup at `path` into a catalog whose registry is empty (a catalog
/// that was lost and created afresh). Returns how many records were restored; 0 when the
/// registry is not empty or there is no backup. A backup that does not parse is an error:
/// the daemon refuses to start rather than run without its gpairs.
pub fn restore_registry(catalog: &Catalog, path: &Path) -> Result<usize, CatalogError> {
    let mut empty = true;
    catalog.for_each_raw(CF_REGISTRY, b"", |_, _| {
        empty = false;
        false
    })?;
    if !empty {
        return Ok(0);
    }
    let bad = |message: String| CatalogError::Open {
        path: path.to_path_buf(),
        message,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(bad(format!("registry backup: {e}"))),
    };
    let backup: RegistryBackup = serde_json::from_slice(&bytes)
        .map_err(|e| bad(format!("registry backup does not parse: {e}")))?;
    if backup.format != BACKUP_FORMAT {
        return Err(bad(format!(
            "registry backup format {} is not supported (this build knows {BACKUP_FORMAT})",
            backup.format
        )));
    }
    let mut n = 0;
    for r in &backup.records {
        let mut value = vec![r.version];
        value.extend(serde_json::to_vec(&r.value).unwrap_or_default());
        catalog.put_raw(CF_REGISTRY, r.key.as_bytes(), &value)?;
        n += 1;
    }
    catalog.sync_wal()?;
    Ok(n)
}

// ------------------------------------------------------------------ the report

/// What disagrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IssueKind {
    /// A stub whose west copy is gone (not at its key, its recorded key, nor in the trash).
    Lost,
    /// A stub whose west copy disagrees with its record (size, checksum), or a stub that
    /// changed on east or names another gpair.
    Conflict,
    /// A stub record that does not decode.
    CorruptStub,
    /// A catalog entry (or a corrupt catalog record) with no east file behind it.
    StaleEntry,
    /// A stub without its remote record: quota does not count it.
    MissingRemoteRecord,
    /// A remote record with no stub behind it: quota counts a file west does not hold.
    OrphanRemoteRecord,
    /// Quota usage differs from the sum of the offloaded sizes.
    QuotaDrift,
    /// West data or metadata no east file stands for.
    OrphanWest,
    /// West owns data of a file that is local on east (its rtl was lost).
    WestOwnsLocal,
    /// A local file with no west entry.
    MissingPlaceholder,
    /// A migration intent no job is running.
    IntentLeft,
    /// A tier mark (conflict, lost) that no longer holds.
    TierMark,
    /// A catalog record of the gpair that does not decode.
    CorruptRecord,
    /// An east directory fsck could not read: the files under it were not checked.
    Unreadable,
}

impl IssueKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Lost => "lost",
            Self::Conflict => "conflict",
            Self::CorruptStub => "corrupt_stub",
            Self::StaleEntry => "stale_entry",
            Self::MissingRemoteRecord => "missing_remote_record",
            Self::OrphanRemoteRecord => "orphan_remote_record",
            Self::QuotaDrift => "quota_drift",
            Self::OrphanWest => "orphan_west",
            Self::WestOwnsLocal => "west_owns_local",
            Self::MissingPlaceholder => "missing_placeholder",
            Self::IntentLeft => "intent_left",
            Self::TierMark => "tier_mark",
            Self::CorruptRecord => "corrupt_record",
            Self::Unreadable => "unreadable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Issue {
    pub kind: IssueKind,
    /// Relative to the share; empty for gpair-wide issues.
    pub path: Vec<u8>,
    pub detail: String,
    pub repaired: bool,
    /// What repair did, or why it left the issue.
    pub action: String,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub repair: bool,
    pub rebuild: bool,
    pub verify_data: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub gpair: String,
    pub repair: bool,
    pub rebuild: bool,
    pub east_files: u64,
    pub stubs: u64,
    pub stub_bytes: u64,
    pub west_objects: u64,
    pub catalog_entries: u64,
    pub quota_used_bytes: u64,
    pub quota_used_files: u64,
    pub issues: Vec<Issue>,
    pub took_ms: i64,
}

impl Report {
    fn add(&mut self, kind: IssueKind, path: &[u8], detail: impl Into<String>) -> &mut Issue {
        self.issues.push(Issue {
            kind,
            path: path.to_vec(),
            detail: detail.into(),
            repaired: false,
            action: String::new(),
        });
        let last = self.issues.len() - 1;
        &mut self.issues[last]
    }
}

impl Issue {
    fn done(&mut self, action: impl Into<String>) {
        self.repaired = true;
        self.action = action.into();
    }

    fn left(&mut self, why: impl Into<String>) {
        self.repaired = false;
        self.action = why.into();
    }
}

// ------------------------------------------------------------------ east

/// One regular file of the share.
#[derive(Debug)]
struct EastFile {
    size: u64,
    ino: u64,
    /// Its stub record: none, one, or why it does not decode.
    stub: Result<Option<StubRecord>, String>,
}

#[derive(Debug, Default)]
struct EastScan {
    files: BTreeMap<Vec<u8>, EastFile>,
    /// Every path of the share (files, directories, symlinks, others).
    paths: HashSet<Vec<u8>>,
    unreadable: Vec<String>,
}

fn rel_join(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(std::ffi::OsStr::from_bytes(rel))
    }
}

/// Walks the share (not following symlinks) and reads every regular file's stub record.
fn walk_east(root: &Path, attr: &str) -> EastScan {
    let mut scan = EastScan::default();
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(rel_join(root, &dir)) {
            Ok(rd) => rd,
            Err(e) => {
                scan.unreadable
                    .push(format!("{}: {e}", String::from_utf8_lossy(&dir)));
                continue;
            }
        };
        for ent in rd.flatten() {
            let mut rel = dir.clone();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(ent.file_name().as_bytes());
            let Ok(md) = std::fs::symlink_metadata(ent.path()) else {
                continue;
            };
            scan.paths.insert(rel.clone());
            if md.is_dir() {
                stack.push(rel);
            } else if md.is_file() {
                let stub = stub::read_path(&ent.path(), attr).map_err(|e| e.to_string());
                scan.files.insert(
                    rel,
                    EastFile {
                        size: md.size(),
                        ino: md.ino(),
                        stub,
                    },
                );
            }
        }
    }
    scan
}

/// CRC32C of an east file's data, or `None` if it cannot be read.
fn east_crc(path: &Path) -> Option<(u32, bool)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut crc = 0u32;
    let mut buf = vec![0u8; 1 << 20];
    let mut any_nonzero = false;
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        any_nonzero |= buf[..n].iter().any(|&b| b != 0);
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
    Some((crc, any_nonzero))
}

// ------------------------------------------------------------------ the check

struct Ctx<'a> {
    tiering: &'a Arc<Tiering>,
    rec: &'a GpairRecord,
    west: Arc<dyn WestStore>,
    opts: Options,
}

impl Ctx<'_> {
    fn catalog(&self) -> &Catalog {
        &self.tiering.engine.catalog
    }

    fn key(&self, rel: &[u8]) -> Vec<u8> {
        gpair_key(&self.rec.name, rel)
    }

    fn put_mark(&self, rel: &[u8], state: MarkState, reason: &str) -> Result<(), CatalogError> {
        self.catalog().put(
            CF_TIERS,
            &self.key(rel),
            &TierMark {
                state,
                reason: reason.to_owned(),
                at_ms: now_ms(),
            },
        )
    }
}

fn west_err(e: crate::west::WestError) -> Status {
    if e.is_permanent() {
        Status::failed_precondition(format!("west: {e}"))
    } else {
        Status::unavailable(format!("west: {e}"))
    }
}

fn cat_err(e: CatalogError) -> Status {
    Status::internal(e.to_string())
}

/// What a stub's west copy looks like.
enum Copy {
    Fine,
    Bad(String),
    Gone,
}

/// Checks one gpair. See the module documentation for what each option does.
pub async fn check(
    tiering: &Arc<Tiering>,
    rec: &GpairRecord,
    opts: Options,
) -> Result<Report, Status> {
    let started = now_ms();
    let opts = Options {
        repair: opts.repair || opts.rebuild,
        ..opts
    };
    let west = tiering.engine.store(&rec.gpeer).ok_or_else(|| {
        Status::failed_precondition(format!(
            "gpeer {} of gpair {} is not registered",
            rec.gpeer, rec.name
        ))
    })?;
    let cx = Ctx {
        tiering,
        rec,
        west,
        opts,
    };
    let mut report = Report {
        gpair: rec.name.clone(),
        repair: opts.repair,
        rebuild: opts.rebuild,
        ..Report::default()
    };
    let prefix = gpair_key(&rec.name, b"");

    // Catalog records that do not decode, by column family.
    let mut corrupt: Vec<(&'static str, String)> = Vec::new();
    // Intents: a job in flight makes the gpair's records move under us.
    let intents: Vec<(Vec<u8>, Intent)> = cx
        .catalog()
        .scan(CF_INTENTS, &prefix, |e| {
            corrupt.push((CF_INTENTS, e.to_string()))
        })
        .map_err(cat_err)?;
    let live = |i: &Intent| {
        tiering
            .job(i.job)
            .is_some_and(|j| !j.record().state.finished())
    };
    if opts.rebuild && intents.iter().any(|(_, i)| live(i)) {
        return Err(Status::failed_precondition(format!(
            "gpair {}: migrations are in flight; wait for its jobs to finish (or cancel them) before --rebuild",
            rec.name
        )));
    }

    // Whether sync had work queued before this run added any.
    let sync_pending = tiering.engine.queue_counts(&rec.name).0 > 0;

    // East.
    let root = rec.local_path.clone();
    let attr = tiering.config.stub_xattr.clone();
    let east = tokio::task::spawn_blocking(move || walk_east(&root, &attr))
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    report.east_files = east.files.len() as u64;
    for u in &east.unreadable {
        report.add(
            IssueKind::Unreadable,
            b"",
            format!("east directory unreadable: {u}; files under it were not checked"),
        );
    }

    // West.
    let list_prefix = if rec.prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", rec.prefix)
    };
    let listing = cx
        .west
        .list(&rec.bucket, &list_prefix)
        .await
        .map_err(west_err)?;
    let mut west_files: BTreeMap<Vec<u8>, WestEntry> = BTreeMap::new();
    for e in listing {
        if e.is_dir || e.key.starts_with(&format!("{TRASH_DIR}/")) {
            continue;
        }
        west_files.insert(e.rel_path.clone(), e);
    }
    report.west_objects = west_files.len() as u64;

    // Catalog.
    let mut entries: Vec<Vec<u8>> = Vec::new();
    cx.catalog()
        .for_each_raw(CF_ENTRIES, &prefix, |k, _| {
            if let Some((_, p)) = split_gpair_key(k) {
                entries.push(p.to_vec());
            }
            true
        })
        .map_err(cat_err)?;
    report.catalog_entries = entries.len() as u64;
    let records: BTreeMap<Vec<u8>, RemoteRecord> = cx
        .catalog()
        .scan::<RemoteRecord>(CF_QUOTA, &prefix, |e| {
            corrupt.push((CF_QUOTA, e.to_string()))
        })
        .map_err(cat_err)?
        .into_iter()
        .filter_map(|(k, r)| split_gpair_key(&k).map(|(_, p)| (p.to_vec(), r)))
        .collect();
    let marks: BTreeMap<Vec<u8>, TierMark> = cx
        .catalog()
        .scan::<TierMark>(CF_TIERS, &prefix, |e| {
            corrupt.push((CF_TIERS, e.to_string()))
        })
        .map_err(cat_err)?
        .into_iter()
        .filter_map(|(k, r)| split_gpair_key(&k).map(|(_, p)| (p.to_vec(), r)))
        .collect();
    for (cf, e) in corrupt {
        let issue = report.add(
            IssueKind::CorruptRecord,
            b"",
            format!("corrupt catalog record in {cf}: {e}"),
        );
        if cf == CF_INTENTS {
            issue.left("an intent that does not decode is never guessed at; restart the daemon (recovery logs it), or rebuild the catalog");
        } else if opts.rebuild {
            issue.done("dropped: the rebuild writes the gpair's records afresh");
        } else {
            issue.left("gpair fsck --rebuild replaces the gpair's records");
        }
    }
    let busy: HashSet<Vec<u8>> = intents
        .iter()
        .filter(|(_, i)| live(i))
        .filter_map(|(k, _)| split_gpair_key(k).map(|(_, p)| p.to_vec()))
        .collect();

    if opts.rebuild {
        // Start from nothing: the stub records and west say what is offloaded.
        let c = cx.catalog();
        c.delete_prefix(CF_QUOTA, &prefix).map_err(cat_err)?;
        c.delete_prefix(CF_TIERS, &prefix).map_err(cat_err)?;
    }
    let records = if opts.rebuild {
        BTreeMap::new()
    } else {
        records
    };
    let marks = if opts.rebuild { BTreeMap::new() } else { marks };

    // Stubs against west and the remote records.
    let mut recorded_keys: HashSet<String> = HashSet::new();
    // (size, CRC32C) of every stub: west data matching one is a stub's copy sync has not
    // moved yet (renamed twice), never an orphan.
    let mut stub_sums: HashSet<(u64, u32)> = HashSet::new();
    let mut counted: BTreeSet<Vec<u8>> = BTreeSet::new();
    for (rel, f) in &east.files {
        if busy.contains(rel) {
            continue;
        }
        let s = match &f.stub {
            Ok(None) => continue,
            Err(why) => {
                let i = report.add(IssueKind::CorruptStub, rel, why.clone());
                i.left("never touched: the record may be all that says where the data is; inspect it (getfattr -d -m user.gpair) and restore it, or restore the file from a backup");
                counted.insert(rel.clone());
                continue;
            }
            Ok(Some(s)) => s,
        };
        report.stubs += 1;
        report.stub_bytes += s.size;
        recorded_keys.insert(s.key.clone());
        stub_sums.insert((s.size, s.crc32c));
        counted.insert(rel.clone());
        if let Err(why) = Tiering::stub_belongs(rec, s) {
            report.add(IssueKind::Conflict, rel, why).left("left as is");
            continue;
        }
        let mut conflict = None;
        if f.size != s.size {
            conflict = Some(format!(
                "the file changed on east after it was offloaded (size {} now, {} offloaded)",
                f.size, s.size
            ));
        }
        let copy = if conflict.is_some() {
            Copy::Fine
        } else {
            stub_copy(&cx, rel, s, west_files.get(rel)).await?
        };
        match (&copy, conflict.as_ref()) {
            (_, Some(why)) | (Copy::Bad(why), None) => {
                let why = why.clone();
                let i = report.add(IssueKind::Conflict, rel, why.clone());
                if opts.repair {
                    cx.put_mark(rel, MarkState::Conflict, &why)
                        .map_err(cat_err)?;
                    i.left("marked conflict; stub kept: restore west's copy (or the file) and run fsck --repair again");
                }
            }
            (Copy::Gone, None) => {
                let why = format!(
                    "west copy missing: no object of {} bytes owned by west at {}/{} (nor renamed, nor in the trash)",
                    s.size, s.bucket, s.key
                );
                let i = report.add(IssueKind::Lost, rel, why.clone());
                if opts.repair {
                    cx.put_mark(rel, MarkState::Lost, &why).map_err(cat_err)?;
                    i.left(
                        "marked lost; stub kept: restore the object on west, or delete the file",
                    );
                }
            }
            (Copy::Fine, None) => match marks.get(rel) {
                // A copy once found corrupt looks fine by its metadata (same size and
                // recorded checksum): only reading it can clear the mark.
                Some(m) if m.state == MarkState::Conflict && !opts.verify_data => {
                    let i = report.add(IssueKind::Conflict, rel, m.reason.clone());
                    i.left("stub kept; once west's copy is restored, run fsck --repair --verify-data to re-check it");
                }
                Some(m) if m.state != MarkState::Dirty => {
                    let i = report.add(
                        IssueKind::TierMark,
                        rel,
                        format!(
                            "marked {:?} ({}) but west's copy matches the stub now",
                            m.state, m.reason
                        ),
                    );
                    if opts.repair {
                        cx.catalog()
                            .delete(CF_TIERS, &cx.key(rel))
                            .map_err(cat_err)?;
                        i.done("mark cleared");
                    }
                }
                _ => {}
            },
        }
        if !records.contains_key(rel) {
            let i = report.add(
                IssueKind::MissingRemoteRecord,
                rel,
                format!("offloaded ({} bytes) but quota does not count it", s.size),
            );
            if opts.repair {
                let r = RemoteRecord {
                    size: s.size,
                    crc32c: s.crc32c,
                    offloaded_at_ms: s.offloaded_at_ms,
                    job: 0,
                    ino: f.ino,
                };
                cx.catalog()
                    .put(CF_QUOTA, &cx.key(rel), &r)
                    .map_err(cat_err)?;
                i.done("remote record written from the stub record");
            }
        }
    }

    // Remote records with no stub behind them.
    for (rel, r) in &records {
        if counted.contains(rel) || busy.contains(rel) {
            continue;
        }
        let i = report.add(
            IssueKind::OrphanRemoteRecord,
            rel,
            format!(
                "quota counts {} bytes for a file that is not offloaded",
                r.size
            ),
        );
        if opts.repair {
            tiering
                .engine
                .quotas
                .remove_record(cx.catalog(), &rec.name, rel)
                .map_err(cat_err)?;
            i.done("remote record removed");
        }
    }

    // Local files against west.
    for (rel, f) in &east.files {
        if !matches!(f.stub, Ok(None)) || busy.contains(rel) {
            continue;
        }
        let Some(w) = west_files.get(rel) else {
            let i = report.add(
                IssueKind::MissingPlaceholder,
                rel,
                "west has no entry for this local file",
            );
            if opts.repair {
                match tiering.engine.enqueue(&rec.name, rel, Op::Put, 0) {
                    Ok(()) => i.done("queued for metadata sync"),
                    Err(e) => i.left(format!("cannot queue it: {e}")),
                }
            }
            continue;
        };
        if w.gpair_name.is_some() || w.data_len == 0 {
            continue;
        }
        let i = report.add(
            IssueKind::WestOwnsLocal,
            rel,
            format!(
                "west owns {} bytes of data at {}/{} but the file is local on east",
                w.data_len, rec.bucket, w.key
            ),
        );
        if !opts.repair {
            continue;
        }
        let abs = rel_join(&rec.local_path, rel);
        let read = tokio::task::spawn_blocking(move || east_crc(&abs))
            .await
            .ok()
            .flatten();
        match read {
            Some((crc, _)) if w.data_len == f.size && w.crc32c == Some(crc) => {
                match tiering.engine.enqueue_setattr(&rec.name, rel, AttrOp::Rtl) {
                    Ok(()) => i.done("east holds the same data: SetAttrObj rtl queued (west back to a placeholder)"),
                    Err(e) => i.left(format!("cannot queue SetAttrObj rtl: {e}")),
                }
            }
            Some((_, false)) if f.size > 0 => i.left(
                "the east file reads as zeros only: its stub record may have been removed behind our back; west keeps its copy — restore the stub record or copy the data back from west",
            ),
            _ => i.left("east and west hold different data; metadata sync moves west's copy to the trash when it next writes this path"),
        }
    }

    // West entries with no east path.
    for (rel, w) in &west_files {
        if east.paths.contains(rel) || busy.contains(rel) {
            continue;
        }
        if w.gpair_name.is_none() && w.data_len > 0 {
            if recorded_keys.contains(&w.key)
                || w.crc32c
                    .is_some_and(|c| stub_sums.contains(&(w.data_len, c)))
            {
                continue; // a renamed stub's copy, not yet moved by sync
            }
            let i = report.add(
                IssueKind::OrphanWest,
                rel,
                format!(
                    "west holds {} bytes at {}/{} that no east file stands for",
                    w.data_len, rec.bucket, w.key
                ),
            );
            if opts.repair && sync_pending {
                i.left("metadata sync has work queued (it may be moving this very object): run fsck --repair again once `gpair sync status` shows nothing pending");
            } else if opts.repair {
                let from = WestKey {
                    key: w.key.clone(),
                    long_path: None,
                };
                let to = WestKey {
                    key: format!(
                        "{}/{}",
                        crate::tier::trash_prefix(&rec.name, now_ms()),
                        w.key
                    ),
                    long_path: None,
                };
                match cx.west.rename(&rec.bucket, &from, &to, false).await {
                    Ok(()) => i.done(format!(
                        "moved to {}/{} (purged after the gpair's retention)",
                        rec.bucket, to.key
                    )),
                    Err(e) => i.left(format!("cannot move it to the trash: {e}")),
                }
            }
        } else {
            let i = report.add(
                IssueKind::OrphanWest,
                rel,
                format!(
                    "west has an entry at {}/{} for a path east does not have",
                    rec.bucket, w.key
                ),
            );
            if opts.repair {
                match tiering.engine.enqueue(&rec.name, rel, Op::Put, 0) {
                    Ok(()) => i.done("queued for metadata sync (which deletes it)"),
                    Err(e) => i.left(format!("cannot queue it: {e}")),
                }
            }
        }
    }

    // Catalog entries with no east path.
    for rel in &entries {
        if east.paths.contains(rel) || busy.contains(rel) {
            continue;
        }
        if std::fs::symlink_metadata(rel_join(&rec.local_path, rel)).is_ok() {
            continue; // created since the walk
        }
        let i = report.add(
            IssueKind::StaleEntry,
            rel,
            "catalog entry for a path east does not have",
        );
        if opts.repair {
            match tiering.engine.enqueue(&rec.name, rel, Op::Put, 0) {
                Ok(()) => i.done("queued for metadata sync (which removes it here and on west)"),
                Err(e) => i.left(format!("cannot queue it: {e}")),
            }
        }
    }

    // Intents no job runs.
    let left: Vec<&(Vec<u8>, Intent)> = intents.iter().filter(|(_, i)| !live(i)).collect();
    let any_running = tiering
        .jobs(usize::MAX)
        .iter()
        .any(|j| !j.record().state.finished());
    let mut resolve = false;
    for (k, intent) in &left {
        let rel = split_gpair_key(k)
            .map(|(_, p)| p.to_vec())
            .unwrap_or_default();
        let i = report.add(
            IssueKind::IntentLeft,
            &rel,
            format!(
                "{:?} intent of job {} left since {} ms",
                intent.kind, intent.job, intent.started_ms
            ),
        );
        if opts.repair {
            if any_running {
                i.left("jobs are running; restart the daemon (or run fsck --repair when they are done) to resolve it");
            } else {
                resolve = true;
                i.done("resolved as at start (finished or rolled back from the stub record)");
            }
        }
    }
    if resolve {
        let t = Arc::clone(tiering);
        tokio::task::spawn_blocking(move || t.recover())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(cat_err)?;
    }

    // Quota: usage must equal the sum of the remote records, one per offloaded file.
    let (mut rec_bytes, mut rec_files) = (0u64, 0u64);
    cx.catalog()
        .for_each_raw(CF_QUOTA, &prefix, |k, v| {
            if let Ok(r) = crate::catalog::decode::<RemoteRecord>(CF_QUOTA, k, v) {
                rec_bytes += r.size;
                rec_files += 1;
            }
            true
        })
        .map_err(cat_err)?;
    let usage = tiering.engine.quotas.usage(&rec.name);
    // Stubs whose record does not decode keep whatever remote record they have.
    let (bad_bytes, bad_files) = records
        .iter()
        .filter(|(rel, _)| east.files.get(*rel).is_some_and(|f| f.stub.is_err()))
        .fold((0u64, 0u64), |(b, n), (_, r)| (b + r.size, n + 1));
    let (want_bytes, want_files) = if opts.repair {
        (rec_bytes, rec_files)
    } else {
        (report.stub_bytes + bad_bytes, report.stubs + bad_files)
    };
    if usage.used_bytes != want_bytes || usage.used_files != want_files {
        let i = report.add(
            IssueKind::QuotaDrift,
            b"",
            format!(
                "quota used {} bytes in {} files; the offloaded files sum to {} bytes in {} files",
                usage.used_bytes, usage.used_files, report.stub_bytes, report.stubs
            ),
        );
        if opts.repair {
            tiering
                .engine
                .quotas
                .set_used(&rec.name, rec_bytes, rec_files);
            i.done(format!(
                "usage recomputed from the remote records: {rec_bytes} bytes in {rec_files} files"
            ));
        }
    }
    if opts.repair {
        if opts.rebuild {
            let (engine, r) = (Arc::clone(&tiering.engine), rec.clone());
            tokio::task::spawn_blocking(move || {
                crate::sync::scan::enqueue_subtree(&engine, &r, b"")
            })
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| {
                Status::internal(format!("cannot queue the share for metadata sync: {e}"))
            })?;
        }
        cx.catalog().sync_wal().map_err(cat_err)?;
    }
    let usage = tiering.engine.quotas.usage(&rec.name);
    report.quota_used_bytes = usage.used_bytes;
    report.quota_used_files = usage.used_files;
    report
        .issues
        .sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));
    report.took_ms = now_ms() - started;
    tracing::info!(
        gpair = rec.name,
        issues = report.issues.len(),
        repaired = report.issues.iter().filter(|i| i.repaired).count(),
        repair = opts.repair,
        rebuild = opts.rebuild,
        "fsck finished"
    );
    Ok(report)
}

/// Finds and checks a stub's west copy: where recall would look; with `verify_data`, its
/// data's CRC32C too.
async fn stub_copy(
    cx: &Ctx<'_>,
    rel: &[u8],
    s: &StubRecord,
    listed: Option<&WestEntry>,
) -> Result<Copy, Status> {
    // West owns data at the file's key, of another size or checksum: a conflict, not a loss.
    if let Some(w) = listed {
        if w.gpair_name.is_none() && w.data_len > 0 && w.data_len != s.size {
            return Ok(Copy::Bad(format!(
                "west copy at {}/{} holds {} bytes but the stub says {}",
                s.bucket, w.key, w.data_len, s.size
            )));
        }
    }
    let found = cx
        .tiering
        .find_copy(cx.west.as_ref(), cx.rec, rel, s)
        .await
        .map_err(west_err)?;
    let Some((key, entry)) = found else {
        return Ok(Copy::Gone);
    };
    if let Some(c) = entry.crc32c {
        if c != s.crc32c {
            return Ok(Copy::Bad(format!(
                "west copy at {}/{} has checksum {} but the stub says {}",
                s.bucket,
                key.object_key(false),
                stub::format_crc(c),
                s.checksum()
            )));
        }
    }
    if cx.opts.verify_data {
        let part = cx.tiering.config.part_size.max(1);
        let mut crc = 0u32;
        let mut off = 0u64;
        while off < s.size {
            let len = part.min(s.size - off);
            let data = cx
                .west
                .read_range(&s.bucket, &key, off, len)
                .await
                .map_err(west_err)?;
            if data.len() as u64 != len {
                return Ok(Copy::Bad(format!(
                    "west copy at {}/{} is short: {} bytes at offset {off}, {len} expected",
                    s.bucket,
                    key.object_key(false),
                    data.len()
                )));
            }
            crc = crc32c::crc32c_append(crc, &data);
            off += len;
        }
        if crc != s.crc32c {
            return Ok(Copy::Bad(format!(
                "west copy is corrupt: its data has checksum {} but the stub says {}",
                stub::format_crc(crc),
                s.checksum()
            )));
        }
    }
    Ok(Copy::Fine)
}

// ------------------------------------------------------------------ gRPC

fn issue_pb(i: &Issue) -> pb::FsckIssue {
    pb::FsckIssue {
        kind: i.kind.name().to_owned(),
        path: i.path.clone(),
        detail: i.detail.clone(),
        repaired: i.repaired,
        action: i.action.clone(),
    }
}

pub fn report_pb(r: &Report) -> pb::FsckReport {
    pb::FsckReport {
        gpair: r.gpair.clone(),
        repair: r.repair,
        rebuild: r.rebuild,
        east_files: r.east_files,
        stubs: r.stubs,
        stub_bytes: r.stub_bytes,
        west_objects: r.west_objects,
        catalog_entries: r.catalog_entries,
        quota_used_bytes: r.quota_used_bytes,
        quota_used_files: r.quota_used_files,
        issues: r.issues.iter().map(issue_pb).collect(),
        repaired: r.issues.iter().filter(|i| i.repaired).count() as u64,
        took_ms: r.took_ms,
    }
}

/// One fsck at a time: two repairs racing would double their fixes.
static RUNNING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The `Fsck` RPC: one gpair, or every gpair when the name is empty.
pub async fn serve(admin: &AdminService, r: pb::FsckRequest) -> Result<pb::FsckResponse, Status> {
    let opts = Options {
        repair: r.repair,
        rebuild: r.rebuild,
        verify_data: r.verify_data,
    };
    let gpairs: Vec<GpairRecord> = if r.name.is_empty() {
        admin
            .engine
            .gpair_records()
            .into_iter()
            .map(|(g, _)| g)
            .collect()
    } else {
        crate::registry::check_name("gpair name", &r.name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (g, _) = admin
            .engine
            .gpair(&r.name)
            .ok_or_else(|| Status::not_found(format!("no gpair {:?}", r.name)))?;
        vec![g]
    };
    let _one = RUNNING.lock().await;
    let mut out = Vec::new();
    for g in gpairs {
        if g.state == crate::registry::GpairState::Unbinding {
            continue;
        }
        let report = check(&admin.tiering, &g, opts).await?;
        out.push(report_pb(&report));
    }
    Ok(pb::FsckResponse { gpairs: out })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn registry_backup_round_trips_into_an_empty_catalog_only() {
        let dir = tempfile::tempdir().unwrap();
        let backup = registry_backup_path(&dir.path().join("catalog/"));
        assert_eq!(backup, dir.path().join("catalog.registry.json"));
        {
            let c = Catalog::open(&dir.path().join("catalog")).unwrap();
            c.set_registry_backup(backup.clone());
            c.put(
                CF_REGISTRY,
                b"gpeer/west",
                &serde_json::json!({"name": "west"}),
            )
            .unwrap();
            c.put(CF_REGISTRY, b"gpair/p", &serde_json::json!({"name": "p"}))
                .unwrap();
            c.delete(CF_REGISTRY, b"gpeer/west").unwrap();
            c.put(CF_REGISTRY, b"gpeer/w2", &serde_json::json!({"name": "w2"}))
                .unwrap();
        }
        let md = std::fs::metadata(&backup).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        std::fs::remove_dir_all(dir.path().join("catalog")).unwrap();
        let c = Catalog::open(&dir.path().join("catalog")).unwrap();
        assert_eq!(restore_registry(&c, &backup).unwrap(), 2);
        let p: Option<serde_json::Value> = c.get(CF_REGISTRY, b"gpair/p").unwrap();
        assert_eq!(p.unwrap()["name"], "p");
        assert!(c
            .get::<serde_json::Value>(CF_REGISTRY, b"gpeer/west")
            .unwrap()
            .is_none());
        // A registry that is not empty is never overwritten.
        assert_eq!(restore_registry(&c, &backup).unwrap(), 0);
        // Garbage is refused with the file named, not guessed at.
        std::fs::write(&backup, b"{not json").unwrap();
        let other = tempfile::tempdir().unwrap();
        let c2 = Catalog::open(other.path()).unwrap();
        let err = restore_registry(&c2, &backup).unwrap_err().to_string();
        assert!(
            err.contains("registry.json") && err.contains("parse"),
            "{err}"
        );
        // No backup: nothing restored.
        assert_eq!(
            restore_registry(&c2, &other.path().join("none")).unwrap(),
            0
        );
    }

    #[test]
    fn the_east_walk_reads_stub_records_and_names_garbage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/local"), b"x").unwrap();
        std::fs::write(dir.path().join("junk"), b"yy").unwrap();
        std::os::unix::fs::symlink("a", dir.path().join("link")).unwrap();
        let junk = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("junk"))
            .unwrap();
        let a = std::ffi::CString::new("user.gpair").unwrap();
        // SAFETY: valid fd and NUL-terminated name; the value slice lives for the call.
        unsafe {
            libc::fsetxattr(
                std::os::fd::AsRawFd::as_raw_fd(&junk),
                a.as_ptr(),
                b"\x01{garbage".as_ptr().cast(),
                9,
                0,
            )
        };
        let scan = walk_east(dir.path(), "user.gpair");
        assert_eq!(scan.files.len(), 2);
        assert!(matches!(scan.files[&b"a/b/local".to_vec()].stub, Ok(None)));
        let err = scan.files[&b"junk".to_vec()].stub.as_ref().unwrap_err();
        assert!(err.contains("corrupt") && err.contains("junk"), "{err}");
        for p in ["a", "a/b", "a/b/local", "junk", "link"] {
            assert!(scan.paths.contains(p.as_bytes()), "{p}");
        }
        assert!(scan.unreadable.is_empty());
        let (crc, nonzero) = east_crc(&dir.path().join("junk")).unwrap();
        assert_eq!(crc, crc32c::crc32c(b"yy"));
        assert!(nonzero);
    }

    #[test]
    fn issue_kinds_have_stable_names() {
        assert_eq!(IssueKind::Lost.name(), "lost");
        assert_eq!(IssueKind::CorruptStub.name(), "corrupt_stub");
        assert_eq!(IssueKind::QuotaDrift.name(), "quota_drift");
        assert_eq!(IssueKind::OrphanWest.name(), "orphan_west");
    }
}
